/* transcribe.c - the reference transcribe(): a whole file as a sequence of
 * 30 s windows, seeking by the last timestamp, conditioning on previous
 * text, temperature fallback, no-speech skipping and clip_timestamps. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/grow.h"
#include "context.h"
#include "decode/text.h"

#define TIME_PRECISION (2.0 * SH_HOP / SHRUTI_SAMPLE_RATE)   /* 0.02 s per position */

typedef struct {
    int32_t *v;
    int n, cap;
} i32_list;

static int i32_push(i32_list *l, const int32_t *t, int n) {
    if (sh_grow((void **)&l->v, &l->cap, l->n + n, sizeof *l->v, 256) < 0) return SHRUTI_ERR_NOMEM;
    if (n) memcpy(l->v + l->n, t, (size_t)n * sizeof *t);
    l->n += n;
    return 0;
}

/* "start,end,..." seconds -> frame pairs; an odd count ends at content. */
static int parse_clips(const char *spec, int content_frames, int **out) {
    int cap = 8, n = 0;
    int *v = malloc((size_t)(cap + 2) * sizeof *v);
    if (!v) return SHRUTI_ERR_NOMEM;
    const char *p = spec ? spec : "";
    while (*p) {
        char *end;
        double t = strtod(p, &end);
        if (end == p || (*end && *end != ',') || !isfinite(t) || t < 0 || t > 1e7) {
            free(v);
            return SHRUTI_ERR_INVALID_ARG;
        }
        if (n == cap) {
            int *nv = realloc(v, (size_t)(cap * 2 + 2) * sizeof *v);
            if (!nv) {
                free(v);
                return SHRUTI_ERR_NOMEM;
            }
            v = nv;
            cap *= 2;
        }
        v[n++] = (int)nearbyint(t * 100.0);   /* Python round(): half to even */
        p = *end ? end + 1 : end;
    }
    if (n == 0) v[n++] = 0;
    if (n % 2 == 1) v[n++] = content_frames;
    *out = v;
    return n / 2;
}

static int add_segment(shruti_context *ctx, int seek, double start, double end,
                       const int32_t *tokens, int n, const sh_decode_result *res) {
    segment_list *l = &ctx->segments;
    if (sh_grow((void **)&l->v, &l->cap, l->n + 1, sizeof *l->v, 32) < 0) return SHRUTI_ERR_NOMEM;
    /* the segment's text: its tokens below eot */
    int32_t *copy = malloc(((size_t)n + 1) * sizeof *copy);
    int32_t *text_tokens = malloc(((size_t)n + 1) * sizeof *text_tokens);
    int n_text = 0;
    if (!copy || !text_tokens) {
        free(copy), free(text_tokens);
        return SHRUTI_ERR_NOMEM;
    }
    for (int i = 0; i < n; i++) {
        copy[i] = tokens[i];
        if (tokens[i] < ctx->model->sp.eot) text_tokens[n_text++] = tokens[i];
    }
    char *text = sh_tokens_to_text(ctx->model, text_tokens, n_text);
    free(text_tokens);
    if (!text) {
        free(copy);
        return SHRUTI_ERR_NOMEM;
    }
    /* an instantaneous or blank segment keeps its times, not its text */
    char *stripped = sh_strip(text);
    if (!stripped || start == end || stripped[0] == '\0') {
        text[0] = '\0';
        n = 0;
    }
    free(stripped);
    l->v[l->n] = (shruti_segment){.id = l->n, .seek = seek, .start = start, .end = end,
                                  .text = text, .tokens = copy, .n_tokens = n,
                                  .temperature = res->temperature,
                                  .avg_logprob = res->avg_logprob,
                                  .compression_ratio = res->compression_ratio,
                                  .no_speech_prob = res->no_speech_prob};
    l->n++;
    return 0;
}

static bool needs_fallback(const shruti_params *p, const sh_decode_result *r) {
    bool fallback = false;
    if (!isnan(p->compression_ratio_threshold) &&
        r->compression_ratio > p->compression_ratio_threshold)
        fallback = true;   /* too repetitive */
    if (!isnan(p->logprob_threshold) && r->avg_logprob < p->logprob_threshold)
        fallback = true;   /* too unlikely */
    if (!isnan(p->no_speech_threshold) && r->no_speech_prob > p->no_speech_threshold &&
        !isnan(p->logprob_threshold) && r->avg_logprob < p->logprob_threshold)
        fallback = false;  /* silence */
    return fallback;
}

typedef struct {
    int language;
    const int32_t *prompt;
    int n_prompt;
} window_input;

/* decode_with_fallback(): the window is encoded once, then decoded at each
 * temperature until a result passes the thresholds. */
static int decode_with_fallback(shruti_context *ctx, const float *mel, const shruti_params *p,
                                const window_input *in, sh_decode_result *res) {
    int r = sh_encode(&ctx->rt, mel);
    if (r < 0) return r;
    int n_temps = p->n_temperatures > 0 ? p->n_temperatures : 1;
    memset(res, 0, sizeof *res);
    for (int i = 0; i < n_temps; i++) {
        float t = p->n_temperatures > 0 ? p->temperatures[i] : 0.0f;
        sh_decode_options o;
        int32_t *suppress = NULL;
        r = sh_decode_options_from_params(ctx, p, t, in->language, &o, &suppress);
        if (r < 0) {
            free(suppress);
            return r;
        }
        o.prompt = in->prompt;
        o.n_prompt = in->n_prompt;
        sh_decode_result_free(res);
        r = sh_decode_window(&ctx->rt, mel, false, &o, res);
        free(suppress);
        if (r < 0) return r;
        if (!needs_fallback(p, res)) break;
    }
    return 0;
}

static int encode_initial_prompt(shruti_context *ctx, const char *prompt, i32_list *all) {
    char *stripped = sh_strip(prompt);
    if (!stripped) return SHRUTI_ERR_NOMEM;
    size_t n = strlen(stripped);
    char *spaced = malloc(n + 2);
    int r = SHRUTI_ERR_NOMEM;
    if (spaced) {
        spaced[0] = ' ';
        memcpy(spaced + 1, stripped, n + 1);
        int32_t *t;
        r = sh_text_to_tokens(ctx->model, spaced, &t);
        if (r >= 0) {
            int count = r;
            r = i32_push(all, t, count);
            free(t);
            if (r == 0) r = count;
        }
    }
    free(stripped);
    free(spaced);
    return r;
}

/* Splits a window's tokens into segments; returns the seek advance in
 * frames or a negative status. */
static int segments_from_tokens(shruti_context *ctx, const sh_decode_result *res, int seek,
                                int segment_size, i32_list *all) {
    const int32_t *tok = res->tokens;
    int n = res->n_tokens, ts = ctx->model->sp.timestamp_begin, first = ctx->segments.n, r = 0;
    double time_offset = (double)seek * SH_HOP / SHRUTI_SAMPLE_RATE;
    bool single_timestamp_ending = n >= 2 && tok[n - 2] < ts && tok[n - 1] >= ts;
    int advance;
    int n_consecutive = 0;
    for (int i = 0; i + 1 < n; i++) n_consecutive += tok[i] >= ts && tok[i + 1] >= ts;
    if (n_consecutive > 0) {
        int last_slice = 0;
        for (int i = 1; i <= n && r == 0; i++) {
            bool cut = (i < n && tok[i - 1] >= ts && tok[i] >= ts) ||
                       (i == n && single_timestamp_ending);
            if (!cut) continue;
            const int32_t *s = tok + last_slice;
            int len = i - last_slice;
            r = add_segment(ctx, seek, time_offset + (s[0] - ts) * TIME_PRECISION,
                            time_offset + (s[len - 1] - ts) * TIME_PRECISION, s, len, res);
            last_slice = i;
        }
        if (single_timestamp_ending) advance = segment_size;
        else advance = (tok[last_slice - 1] - ts) * 2;   /* seek to the last timestamp */
    } else {
        double duration = (double)segment_size * SH_HOP / SHRUTI_SAMPLE_RATE;
        int last_ts = -1;
        for (int i = 0; i < n; i++)
            if (tok[i] >= ts) last_ts = tok[i];
        if (last_ts >= 0 && last_ts != ts) duration = (last_ts - ts) * TIME_PRECISION;
        r = add_segment(ctx, seek, time_offset, time_offset + duration, tok, n, res);
        advance = segment_size;
    }
    for (int i = first; i < ctx->segments.n && r == 0; i++)
        r = i32_push(all, ctx->segments.v[i].tokens, ctx->segments.v[i].n_tokens);
    return r < 0 ? r : advance;
}

static void report_progress(shruti_context *ctx, const shruti_params *p, int seek,
                            int content_frames) {
    if (!p->progress_callback) return;
    int done = seek < content_frames ? seek : content_frames;
    int percent = content_frames > 0 ? (int)((long)done * 100 / content_frames) : 100;
    p->progress_callback(ctx, percent, p->progress_user_data);
}

/* Frames of content in the window at seek (a whole window but the last). */
static int window_frames(int content, int seek) {
    return content - seek < SH_CHUNK_FRAMES ? content - seek : SH_CHUNK_FRAMES;
}

/* mel[:, seek : seek + size] zero-padded to a 3000-frame window. */
static void slice_window(float *window, const float *mel, int n_mels, int n_frames, int seek,
                         int size) {
    for (int b = 0; b < n_mels; b++) {
        float *dst = window + (size_t)b * SH_CHUNK_FRAMES;
        memcpy(dst, mel + (size_t)b * n_frames + seek, (size_t)size * sizeof *dst);
        memset(dst + size, 0, (size_t)(SH_CHUNK_FRAMES - size) * sizeof *dst);
    }
}

/* The reference's no-speech rule: silent unless the decode was confident. */
static bool is_silence(const shruti_params *p, const sh_decode_result *res) {
    if (isnan(p->no_speech_threshold) || res->no_speech_prob <= p->no_speech_threshold) return false;
    return isnan(p->logprob_threshold) || res->avg_logprob <= p->logprob_threshold;
}

/* Windows w0 .. w0 + n - 1 decoded as one batch (n > 1: bound on the GPU)
 * or one by one, results into res[]. */
static int decode_group(shruti_context *ctx, const float *mel, int n_frames, int w0, int n,
                        const sh_decode_options *o, float *windows, sh_decode_result *res) {
    const shruti_model *m = ctx->model;
    int n_mels = m->hp.n_mels, content = n_frames - SH_CHUNK_FRAMES, r = 0;
    size_t win = (size_t)n_mels * SH_CHUNK_FRAMES;
    for (int b = 0; b < n; b++) {
        int seek = (w0 + b) * SH_CHUNK_FRAMES;
        int size = window_frames(content, seek);
        slice_window(windows + (n > 1 ? b : 0) * win, mel, n_mels, n_frames, seek, size);
        if (n > 1) {
            if ((r = sh_encode_window(&ctx->rt, windows + b * win, b)) < 0) return r;
            continue;
        }
        sh_decode_options one = *o;
        one.n_windows = 0;
        if ((r = sh_decode_window(&ctx->rt, windows, true, &one, &res[b])) < 0) return r;
    }
    if (n == 1) return 0;
    sh_decode_options many = *o;
    many.n_windows = n;
    if ((r = sh_bind_windows(&ctx->rt, true)) < 0) return r;
    r = sh_decode_window(&ctx->rt, NULL, false, &many, res);
    int u = sh_bind_windows(&ctx->rt, false);
    return r < 0 ? r : u;
}

/* Batched windows (params.batch_size > 1, see shruti.h). */
static int transcribe_batched(shruti_context *ctx, const float *mel, int n_frames,
                              const shruti_params *p, int language, const int32_t *prompt,
                              int n_prompt, i32_list *all) {
    const shruti_model *m = ctx->model;
    int content = n_frames - SH_CHUNK_FRAMES, batch = p->batch_size > 64 ? 64 : p->batch_size;
    int n_windows = (content + SH_CHUNK_FRAMES - 1) / SH_CHUNK_FRAMES, r = 0;
    sh_decode_options o;
    int32_t *suppress = NULL;
    float t = p->n_temperatures > 0 ? p->temperatures[0] : 0.0f;
    if ((r = sh_decode_options_from_params(ctx, p, 0.0f, language, &o, &suppress)) < 0) return r;
    if (t != 0.0f)
        r = sh_set_ctx_error(ctx, SHRUTI_ERR_INVALID_ARG, "batched windows decode greedily: the "
                             "first temperature must be 0");
    o.prompt = prompt;
    o.n_prompt = n_prompt;
    float *windows = malloc((size_t)batch * m->hp.n_mels * SH_CHUNK_FRAMES * sizeof *windows);
    sh_decode_result *res = calloc((size_t)batch, sizeof *res);
    if (r == 0 && (!windows || !res)) r = sh_set_ctx_error(ctx, SHRUTI_ERR_NOMEM, "out of memory");
    for (int w0 = 0; r == 0 && w0 < n_windows; w0 += batch) {
        int n = n_windows - w0 < batch ? n_windows - w0 : batch;
        int cap = sh_windows_reserve(&ctx->rt, n);
        if (cap < 0) {
            r = sh_set_ctx_error(ctx, cap, "out of memory for the windows");
            break;
        }
        /* cap <= n: the GPU may hold fewer at once, and the batch shrinks */
        bool batched = cap > 1;
        if (batched) n = batch = cap;
        if (batched) r = decode_group(ctx, mel, n_frames, w0, n, &o, windows, res);
        /* one window at a time: on the CPU, or after the GPU failed mid-batch
         * (the run state is on the CPU now) */
        if (!batched || r == SHRUTI_ERR_DEVICE) {
            for (int b = 0; b < n; b++) {
                sh_decode_result_free(&res[b]);
                if ((r = decode_group(ctx, mel, n_frames, w0 + b, 1, &o, windows, &res[b])) < 0)
                    break;
            }
        }
        for (int b = 0; b < n && r == 0; b++) {
            int seek = (w0 + b) * SH_CHUNK_FRAMES, first_new = ctx->segments.n;
            int size = window_frames(content, seek);
            if (!is_silence(p, &res[b]) && (r = segments_from_tokens(ctx, &res[b], seek, size, all)) > 0)
                r = 0;
            if (r == 0 && p->segment_callback && ctx->segments.n > first_new)
                p->segment_callback(ctx, first_new, ctx->segments.n - first_new, p->segment_user_data);
            report_progress(ctx, p, seek + size, content);
        }
        for (int b = 0; b < n; b++) sh_decode_result_free(&res[b]);
        if (r < 0 && !ctx->error[0])
            sh_set_ctx_error(ctx, r, "decoding failed: %s", shruti_status_string(r));
    }
    free(windows);
    free(res);
    free(suppress);
    return r;
}

int sh_transcribe(shruti_context *ctx, const float *mel, int n_frames, const shruti_params *p) {
    const shruti_model *m = ctx->model;
    int n_mels = m->hp.n_mels;
    int content_frames = n_frames - SH_CHUNK_FRAMES;
    sh_results_clear(ctx);
    ctx->rng = p->seed;
    ctx->duration = (double)content_frames * SH_HOP / SHRUTI_SAMPLE_RATE;
    float *window = malloc((size_t)n_mels * SH_CHUNK_FRAMES * sizeof *window);
    i32_list all = {0};
    int *clips = NULL, r = 0;
    if (!window) return sh_set_ctx_error(ctx, SHRUTI_ERR_NOMEM, "out of memory");

    /* language: given, English-only, or detected on the first 30 s */
    int language = 0;
    if (shruti_model_is_multilingual(m)) {
        if (p->language && *p->language && strcmp(p->language, "auto") != 0) {
            language = shruti_language_index(m, p->language);
            if (language < 0) {
                r = sh_set_ctx_error(ctx, SHRUTI_ERR_INVALID_ARG, "unknown language '%s'",
                                     p->language);
                goto done;
            }
        } else {
            for (int b = 0; b < n_mels; b++)
                memcpy(window + (size_t)b * SH_CHUNK_FRAMES, mel + (size_t)b * n_frames,
                       SH_CHUNK_FRAMES * sizeof *window);
            if ((r = sh_encode(&ctx->rt, window)) < 0 ||
                (language = sh_detect_language(&ctx->rt, NULL, NULL)) < 0) {
                r = sh_set_ctx_error(ctx, r < 0 ? r : language, "language detection failed");
                goto done;
            }
        }
    } else if (p->language && *p->language && strcmp(p->language, "auto") != 0 &&
               shruti_language_index(m, p->language) != 0) {
        r = sh_set_ctx_error(ctx, SHRUTI_ERR_INVALID_ARG,
                             "this model is English-only; language '%s' is not available",
                             p->language);
        goto done;
    }
    snprintf(ctx->language, sizeof ctx->language, "%s", sh_language_code(language));

    int n_initial_prompt = 0;
    if (p->initial_prompt && (n_initial_prompt = encode_initial_prompt(ctx, p->initial_prompt,
                                                                       &all)) < 0) {
        r = sh_set_ctx_error(ctx, n_initial_prompt, "cannot encode the initial prompt");
        goto done;
    }
    if (p->batch_size > 1) {
        int32_t *prompt = n_initial_prompt ? malloc((size_t)n_initial_prompt * sizeof *prompt) : NULL;
        if (prompt) memcpy(prompt, all.v, (size_t)n_initial_prompt * sizeof *prompt);
        r = n_initial_prompt && !prompt
                ? sh_set_ctx_error(ctx, SHRUTI_ERR_NOMEM, "out of memory")
                : transcribe_batched(ctx, mel, n_frames, p, language, prompt, n_initial_prompt, &all);
        free(prompt);
        if (r < 0) goto done;
        goto finish;
    }
    int n_clips = parse_clips(p->clip_timestamps, content_frames, &clips);
    if (n_clips < 0) {
        r = sh_set_ctx_error(ctx, n_clips, "bad clip_timestamps '%s': expected seconds "
                             "\"start,end,...\"", p->clip_timestamps);
        goto done;
    }
    int clip = 0, seek = clips[0], prompt_reset_since = 0;
    while (clip < n_clips) {
        int clip_start = clips[2 * clip], clip_end = clips[2 * clip + 1];
        if (seek < clip_start) seek = clip_start;
        if (seek >= clip_end) {
            clip++;
            if (clip < n_clips) seek = clips[2 * clip];
            continue;
        }
        int segment_size = SH_CHUNK_FRAMES;
        if (content_frames - seek < segment_size) segment_size = content_frames - seek;
        if (clip_end - seek < segment_size) segment_size = clip_end - seek;
        slice_window(window, mel, n_mels, n_frames, seek, segment_size);
        window_input in = {language, all.v + prompt_reset_since, all.n - prompt_reset_since};
        sh_decode_result res;
        if ((r = decode_with_fallback(ctx, window, p, &in, &res)) < 0) {
            if (!ctx->error[0])
                sh_set_ctx_error(ctx, r, "decoding failed: %s", shruti_status_string(r));
            goto done;
        }
        bool skip = is_silence(p, &res);
        int first_new = ctx->segments.n;
        if (skip) {
            seek += segment_size;
        } else {
            int advance = segments_from_tokens(ctx, &res, seek, segment_size, &all);
            if (advance < 0) {
                sh_decode_result_free(&res);
                r = sh_set_ctx_error(ctx, advance, "out of memory");
                goto done;
            }
            seek += advance;
            if (!p->condition_on_previous_text || res.temperature > 0.5f)
                prompt_reset_since = all.n;
        }
        sh_decode_result_free(&res);
        if (p->segment_callback && ctx->segments.n > first_new)
            p->segment_callback(ctx, first_new, ctx->segments.n - first_new, p->segment_user_data);
        report_progress(ctx, p, seek, content_frames);
    }
finish:
    ctx->full_text = sh_tokens_to_text(m, all.v + n_initial_prompt, all.n - n_initial_prompt);
    if (!ctx->full_text) r = sh_set_ctx_error(ctx, SHRUTI_ERR_NOMEM, "out of memory");
done:
    free(window);
    free(all.v);
    free(clips);
    return r;
}
