/* shruti.c - the public context API: lifecycle, parameters, one-window
 * decoding and language detection, result getters. */
#include <cblas.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "context.h"
#include "decode/text.h"
#include "mel/log_mel.h"

int sh_set_ctx_error(shruti_context *ctx, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->error, sizeof ctx->error, fmt, ap);
    va_end(ap);
    return code;
}

shruti_params shruti_default_params(void) {
    shruti_params p;
    memset(&p, 0, sizeof p);
    p.task = SHRUTI_TASK_TRANSCRIBE;
    p.language = NULL;
    const float temps[] = {0.0f, 0.2f, 0.4f, 0.6f, 0.8f, 1.0f};
    memcpy(p.temperatures, temps, sizeof temps);
    p.n_temperatures = 6;
    p.beam_size = 1;
    p.patience = 1.0f;
    p.length_penalty = -1.0f;
    p.best_of = 1;
    p.sample_len = 0;
    p.suppress_tokens = "-1";
    p.suppress_blank = true;
    p.without_timestamps = false;
    p.max_initial_timestamp = 1.0f;
    p.initial_prompt = NULL;
    p.condition_on_previous_text = true;
    p.compression_ratio_threshold = 2.4f;
    p.logprob_threshold = -1.0f;
    p.no_speech_threshold = 0.6f;
    p.clip_timestamps = NULL;
    p.seed = 0;
    return p;
}

shruti_context *shruti_context_new(const shruti_model *model, int n_threads, shruti_error *err) {
    sh_error_clear(err);
    if (!model) {
        sh_error(err, SHRUTI_ERR_INVALID_ARG, "no model given");
        return NULL;
    }
    if (n_threads <= 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = cores > 0 ? (int)cores : 1;
    }
    if (n_threads > 256) n_threads = 256;
    shruti_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        sh_error(err, SHRUTI_ERR_NOMEM, "out of memory");
        return NULL;
    }
    ctx->model = model;
    if (sh_run_init(&ctx->rt, model, n_threads) < 0) {
        free(ctx);
        sh_error(err, SHRUTI_ERR_NOMEM, "out of memory for the run state");
        return NULL;
    }
    /* OpenBLAS's thread count is process-wide; the last context sets it. */
    openblas_set_num_threads(n_threads);
    return ctx;
}

void sh_results_clear(shruti_context *ctx) {
    for (int i = 0; i < ctx->segments.n; i++) {
        free((char *)ctx->segments.v[i].text);
        free((int32_t *)ctx->segments.v[i].tokens);
    }
    free(ctx->segments.v);
    memset(&ctx->segments, 0, sizeof ctx->segments);
    free(ctx->full_text);
    ctx->full_text = NULL;
    ctx->language[0] = '\0';
    ctx->duration = 0;
}

void shruti_context_free(shruti_context *ctx) {
    if (!ctx) return;
    sh_results_clear(ctx);
    sh_decode_result_free(&ctx->last_decode);
    sh_run_free(&ctx->rt);
    free(ctx);
}

const char *shruti_context_error(const shruti_context *ctx) { return ctx ? ctx->error : ""; }
const char *shruti_context_device(const shruti_context *ctx) { return sh_run_device(&ctx->rt); }
const char *shruti_context_device_note(const shruti_context *ctx) { return ctx->rt.note; }

/* ------------------------------------------------------------ options */

static int resolve_language(shruti_context *ctx, const char *language) {
    if (!language || !*language || strcmp(language, "auto") == 0) return -1;
    int i = shruti_language_index(ctx->model, language);
    if (i < 0) return sh_set_ctx_error(ctx, SHRUTI_ERR_INVALID_ARG, "unknown language '%s'%s",
                                       language,
                                       shruti_model_is_multilingual(ctx->model)
                                           ? "" : " (this model is English-only)");
    return i;
}

int sh_decode_options_from_params(shruti_context *ctx, const shruti_params *p, float temperature,
                                  int language, sh_decode_options *o, int32_t **suppress) {
    memset(o, 0, sizeof *o);
    int n = sh_build_suppress_list(ctx->model, p->suppress_tokens, suppress);
    if (n < 0)
        return sh_set_ctx_error(ctx, n, "bad suppress_tokens '%s': expected comma-separated ids",
                                p->suppress_tokens ? p->suppress_tokens : "");
    if (p->beam_size > 32 || p->best_of > 32 || p->beam_size < 0 || p->best_of < 0)
        return sh_set_ctx_error(ctx, SHRUTI_ERR_INVALID_ARG,
                                "beam_size and best_of must be between 1 and 32");
    if (!(p->patience > 0) || !(temperature >= 0) || p->sample_len < 0)
        return sh_set_ctx_error(ctx, SHRUTI_ERR_INVALID_ARG,
                                "patience must be > 0, temperature >= 0, sample_len >= 0");
    o->task = p->task;
    o->language = language;
    o->temperature = temperature;
    o->beam_size = p->beam_size;
    o->patience = p->patience;
    o->length_penalty = p->length_penalty;
    o->best_of = p->best_of;
    o->sample_len = p->sample_len;
    o->suppress = *suppress;
    o->n_suppress = n;
    o->suppress_blank = p->suppress_blank;
    o->without_timestamps = p->without_timestamps;
    o->max_initial_timestamp = p->max_initial_timestamp;
    o->rng = &ctx->rng;
    o->abort_callback = p->abort_callback;
    o->abort_user_data = p->abort_user_data;
    return 0;
}

/* ------------------------------------------------------- one window */

int shruti_decode_mel(shruti_context *ctx, const float *mel, const shruti_params *p,
                      shruti_decoding *out) {
    ctx->error[0] = '\0';
    if (!mel || !p || !out)
        return sh_set_ctx_error(ctx, SHRUTI_ERR_INVALID_ARG, "NULL argument");
    int language = resolve_language(ctx, p->language);
    if (language < -1) return language;
    sh_decode_options o;
    int32_t *suppress = NULL, *prompt = NULL;
    int r = sh_decode_options_from_params(ctx, p, p->n_temperatures > 0 ? p->temperatures[0] : 0,
                                          language, &o, &suppress);
    if (r == 0 && p->initial_prompt) {
        char *stripped = sh_strip(p->initial_prompt);
        size_t n = stripped ? strlen(stripped) : 0;
        char *spaced = stripped ? malloc(n + 2) : NULL;
        if (spaced) {
            spaced[0] = ' ';
            memcpy(spaced + 1, stripped, n + 1);
            r = sh_text_to_tokens(ctx->model, spaced, &prompt);
            if (r >= 0) {
                o.prompt = prompt;
                o.n_prompt = r;
                r = 0;
            }
        } else {
            r = SHRUTI_ERR_NOMEM;
        }
        free(stripped);
        free(spaced);
    }
    ctx->rng = p->seed;
    sh_decode_result_free(&ctx->last_decode);
    if (r == 0) r = sh_decode_window(&ctx->rt, mel, true, &o, &ctx->last_decode);
    free(suppress);
    free(prompt);
    if (r < 0) {
        if (!ctx->error[0]) sh_set_ctx_error(ctx, r, "decoding failed: %s", shruti_status_string(r));
        return r;
    }
    const sh_decode_result *d = &ctx->last_decode;
    out->tokens = d->tokens;
    out->n_tokens = d->n_tokens;
    out->text = d->text;
    out->language = sh_language_code(d->language);
    out->language_prob = d->language_prob;
    out->avg_logprob = d->avg_logprob;
    out->no_speech_prob = d->no_speech_prob;
    out->compression_ratio = d->compression_ratio;
    out->temperature = d->temperature;
    return 0;
}

int shruti_detect_language_mel(shruti_context *ctx, const float *mel, float *probs) {
    ctx->error[0] = '\0';
    if (!shruti_model_is_multilingual(ctx->model))
        return sh_set_ctx_error(ctx, SHRUTI_ERR_INVALID_ARG,
                                "language detection needs a multilingual model");
    int r = sh_encode(&ctx->rt, mel);
    if (r == 0) r = sh_detect_language(&ctx->rt, probs, NULL);
    return r;
}

int shruti_detect_language_speech(shruti_context *ctx, const float *pcm, size_t n_samples,
                                  float no_speech_threshold, float *probs, double *start_s) {
    ctx->error[0] = '\0';
    const shruti_model *m = ctx->model;
    if (!shruti_model_is_multilingual(m))
        return sh_set_ctx_error(ctx, SHRUTI_ERR_INVALID_ARG,
                                "language detection needs a multilingual model");
    if (!pcm) return sh_set_ctx_error(ctx, SHRUTI_ERR_INVALID_ARG, "NULL argument");
    float *mel, *window = malloc((size_t)m->hp.n_mels * SH_CHUNK_FRAMES * sizeof(float));
    int n_frames, r = window ? sh_log_mel(pcm, n_samples, SH_CHUNK_SAMPLES, m->mel_filters,
                                          m->hp.n_mels, &mel, &n_frames) : SHRUTI_ERR_NOMEM;
    if (r < 0) {
        free(window);
        return sh_set_ctx_error(ctx, r, "cannot compute the log-mel spectrogram");
    }
    int content = n_frames - SH_CHUNK_FRAMES, best = -1;
    for (int seek = 0; r == 0 && (seek == 0 || seek < content); seek += SH_CHUNK_FRAMES) {
        for (int b = 0; b < m->hp.n_mels; b++)
            memcpy(window + (size_t)b * SH_CHUNK_FRAMES, mel + (size_t)b * n_frames + seek,
                   SH_CHUNK_FRAMES * sizeof(float));
        float window_probs[SH_MAX_LANGUAGES];
        if ((r = sh_encode(&ctx->rt, window)) < 0) break;
        double no_speech;
        int lang = sh_detect_language(&ctx->rt, window_probs, &no_speech);
        if (lang < 0) {
            r = lang;
            break;
        }
        if (best < 0 || no_speech <= no_speech_threshold) {
            best = lang;
            if (probs) memcpy(probs, window_probs, sizeof(float) * (size_t)m->sp.n_languages);
            if (start_s) *start_s = seek / 100.0;
        }
        if (no_speech <= no_speech_threshold) break;
    }
    free(window);
    free(mel);
    if (r < 0) return sh_set_ctx_error(ctx, r, "language detection failed");
    return best;
}

/* -------------------------------------------------------- whole files */

int shruti_log_mel(const shruti_model *m, const float *pcm, size_t n_samples, size_t padding,
                   float **mel, int *n_frames, shruti_error *err) {
    sh_error_clear(err);
    int r = sh_log_mel(pcm, n_samples, padding, m->mel_filters, m->hp.n_mels, mel, n_frames);
    if (r < 0) return sh_error(err, r, "cannot compute the log-mel spectrogram: %s",
                               shruti_status_string(r));
    return 0;
}

int shruti_transcribe_mel(shruti_context *ctx, const float *mel, int n_mels, int n_frames,
                          const shruti_params *p) {
    ctx->error[0] = '\0';
    if (!mel || !p || n_mels != ctx->model->hp.n_mels || n_frames < SH_CHUNK_FRAMES)
        return sh_set_ctx_error(ctx, SHRUTI_ERR_INVALID_ARG,
                                "expected a %d-bin log-mel with at least %d frames",
                                ctx->model->hp.n_mels, SH_CHUNK_FRAMES);
    return sh_transcribe(ctx, mel, n_frames, p);
}

int shruti_transcribe(shruti_context *ctx, const float *pcm, size_t n_samples,
                      const shruti_params *p) {
    ctx->error[0] = '\0';
    if (!pcm || !p) return sh_set_ctx_error(ctx, SHRUTI_ERR_INVALID_ARG, "NULL argument");
    float *mel;
    int n_frames;
    int r = sh_log_mel(pcm, n_samples, SH_CHUNK_SAMPLES, ctx->model->mel_filters,
                       ctx->model->hp.n_mels, &mel, &n_frames);
    if (r < 0) return sh_set_ctx_error(ctx, r, "cannot compute the log-mel spectrogram");
    r = sh_transcribe(ctx, mel, n_frames, p);
    free(mel);
    return r;
}

int shruti_n_segments(const shruti_context *ctx) { return ctx->segments.n; }

const shruti_segment *shruti_get_segment(const shruti_context *ctx, int i) {
    return (i >= 0 && i < ctx->segments.n) ? &ctx->segments.v[i] : NULL;
}

const char *shruti_full_text(const shruti_context *ctx) {
    return ctx->full_text ? ctx->full_text : "";
}

const char *shruti_full_language(const shruti_context *ctx) { return ctx->language; }
double shruti_full_duration(const shruti_context *ctx) { return ctx->duration; }
