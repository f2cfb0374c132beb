/* decode_window.c - decode() of one 30 s window: initial tokens, language
 * detection, the sampling loop with greedy / sampling / beam-search
 * updates, and ranking of the finished candidates, as the reference. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/grow.h"
#include "cpu/vmath.h"
#include "decode/decode.h"
#include "decode/logit_filters.h"
#include "decode/text.h"

/* ------------------------------------------------------------------ rng */

double sh_rng_uniform(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

/* ------------------------------------------------------------- helpers */

double sh_softmax_prob(const float *logits, int n, int index) {
    return exp(logits[index] - sh_log_sum_exp(logits, n));
}

/* A sample from softmax(logits / T): one pass for the total, a second
 * that stops at the drawn token. */
static int sample_token(const float *logits, int n, float temperature, uint64_t *rng) {
    float max = -INFINITY;
    for (int i = 0; i < n; i++) max = logits[i] > max ? logits[i] : max;
    float inv_t = 1.0f / temperature;
    double total = 0;
    for (int i = 0; i < n; i++) {
        float d = (logits[i] - max) * inv_t;
        if (d > -88.0f) total += expf(d);
    }
    double r = sh_rng_uniform(rng) * total, acc = 0;
    int last_valid = sh_argmax(logits, n);
    for (int i = 0; i < n; i++) {
        float d = (logits[i] - max) * inv_t;
        if (d <= -88.0f) continue;
        acc += expf(d);
        last_valid = i;
        if (acc > r) return i;
    }
    return last_valid;
}

/* ---------------------------------------------------------- the state */

typedef struct {
    int32_t *tokens;             /* (n_group, cap) */
    int cap, len;                /* every sequence has the same length */
    double *sum_logprob;         /* (n_group) */
    int n_group;
} sequences;

typedef struct {
    int32_t *tokens;
    int n;
    double score;                /* cumulative logprob */
} candidate;

typedef struct {
    candidate *v;
    int n, cap;
} candidate_list;

static int cand_push(candidate_list *l, const int32_t *tokens, int n, double score) {
    if (sh_grow((void **)&l->v, &l->cap, l->n + 1, sizeof *l->v, 16) < 0) return SHRUTI_ERR_NOMEM;
    int32_t *t = malloc(((size_t)n + 1) * sizeof *t);
    if (!t) return SHRUTI_ERR_NOMEM;
    memcpy(t, tokens, (size_t)n * sizeof *t);
    l->v[l->n++] = (candidate){t, n, score};
    return 0;
}

static void cand_free(candidate_list *l) {
    for (int i = 0; i < l->n; i++) free(l->v[i].tokens);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* ------------------------------------------------------ initial tokens */

static int initial_tokens(const shruti_model *m, const sh_decode_options *o, int language,
                          int32_t *out, int *sot_index) {
    const sh_special *sp = &m->sp;
    int n = 0;
    if (o->n_prompt > 0) {
        int keep = m->hp.n_text_ctx / 2 - 1;
        int first = o->n_prompt > keep ? o->n_prompt - keep : 0;
        out[n++] = sp->sot_prev;
        for (int i = first; i < o->n_prompt; i++) out[n++] = o->prompt[i];
    }
    *sot_index = n;
    out[n++] = sp->sot;
    if (sp->n_languages > 0) {
        out[n++] = sp->first_language + (language >= 0 ? language : 0);
        out[n++] = o->task == SHRUTI_TASK_TRANSLATE ? sp->translate : sp->transcribe;
    }
    if (o->without_timestamps) out[n++] = sp->no_timestamps;
    return n;
}

int sh_detect_language(sh_run *rt, float *probs, double *no_speech) {
    const shruti_model *m = rt->m;
    const sh_special *sp = &m->sp;
    if (sp->n_languages == 0) return SHRUTI_ERR_INVALID_ARG;
    int r, sot = sp->sot;
    float *logits = malloc((size_t)m->hp.n_vocab * sizeof *logits);
    if (!logits) return SHRUTI_ERR_NOMEM;
    /* a GPU failure moves the window to the CPU: redo it there, once */
    for (int attempt = 0; attempt < 2; attempt++) {
        r = sh_decoder_forward(rt, &sot, 1, 1, 0);
        if (r == 0) r = sh_decoder_logits(rt, 0, 1, logits);
        if (r != SHRUTI_ERR_DEVICE) break;
    }
    if (r < 0) {
        free(logits);
        return r;
    }
    if (no_speech) *no_speech = sh_softmax_prob(logits, m->hp.n_vocab, sp->no_speech);
    /* only language tokens compete */
    const float *lang = logits + sp->first_language;
    int best = sh_argmax(lang, sp->n_languages);
    if (probs) {
        double lse = sh_log_sum_exp(lang, sp->n_languages);
        for (int i = 0; i < sp->n_languages; i++) probs[i] = (float)exp(lang[i] - lse);
    }
    free(logits);
    return best;
}

/* --------------------------------------------------------- updates */

/* Sequence k takes next (eot again once it has ended); returns whether
 * it has ended. */
static int append_token(sequences *s, int k, int next, double logprob, int eot) {
    int32_t *seq = s->tokens + (size_t)k * s->cap;
    int ended = seq[s->len - 1] == eot;
    if (!ended) s->sum_logprob[k] += logprob;
    if (ended) next = eot;
    seq[s->len] = next;
    return next == eot;
}

/* Greedy or sampled next token for each sequence. Returns 1 when every
 * sequence has ended. */
static int update_sampling(sequences *s, const float *logits, int n_vocab, float temperature,
                           int eot, uint64_t *rng) {
    int all_ended = 1;
    for (int k = 0; k < s->n_group; k++) {
        const float *row = logits + (size_t)k * n_vocab;
        int next = temperature == 0.0f ? sh_argmax(row, n_vocab)
                                       : sample_token(row, n_vocab, temperature, rng);
        int ended = s->tokens[(size_t)k * s->cap + s->len - 1] == eot;
        double logprob = ended ? 0.0 : row[next] - sh_log_sum_exp(row, n_vocab);
        all_ended &= append_token(s, k, next, logprob, eot);
    }
    s->len++;
    return all_ended;
}

/* One greedy step of every sequence (rows row0 ...): the filters go to the
 * device as masks and only the tokens and their log-probabilities come
 * back. Returns 1 when every sequence has ended. */
static int update_greedy(sh_run *rt, sequences *s, const sh_logit_filters *f, int row0, int eot) {
    sh_logit_mask masks[64];
    int next[64];
    double logprob[64];
    for (int k = 0; k < s->n_group; k++)
        sh_logit_mask_for(f, s->tokens + (size_t)k * s->cap, s->len, &masks[k]);
    int r = sh_decoder_greedy(rt, row0, s->n_group, masks, next, logprob);
    if (r < 0) return r;
    int all_ended = 1;
    for (int k = 0; k < s->n_group; k++) all_ended &= append_token(s, k, next[k], logprob[k], eot);
    s->len++;
    return all_ended;
}

typedef struct {
    int source;
    int token;
    double score;
    int order;                   /* insertion order, for stable sorting */
} beam_cand;

static int cmp_beam_cand(const void *a, const void *b) {
    const beam_cand *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->order - y->order;
}

/* One beam-search step. Each beam's B + 1 likeliest next tokens come
 * from where the logits are (the filters go there as masks; on the first
 * step every beam is the prompt, one row). New live beams go to s (KV
 * caches reordered); newly finished sequences are appended to finished
 * while it has fewer than max_candidates. Returns 1 when finished is
 * full, < 0 on error. */
static int update_beams(sh_run *rt, sequences *s, const sh_logit_filters *f, int row0,
                        bool first, int eot, candidate_list *finished, int max_candidates) {
    int B = s->n_group, n_top = B + 1, n = 0;
    sh_logit_mask masks[32];
    int tops[32 * 33];
    double lps[32 * 33];
    int n_rows = first ? 1 : B;
    for (int j = 0; j < n_rows; j++)
        sh_logit_mask_for(f, s->tokens + (size_t)j * s->cap, s->len, &masks[j]);
    int r = sh_decoder_topk(rt, row0, n_rows, masks, n_top, tops, lps);
    if (r < 0) return r;
    for (int j = n_rows; j < B; j++) {   /* the first step: every beam the same */
        memcpy(tops + j * n_top, tops, (size_t)n_top * sizeof *tops);
        memcpy(lps + j * n_top, lps, (size_t)n_top * sizeof *lps);
    }
    beam_cand *cands = malloc((size_t)B * n_top * sizeof *cands);
    int *same_as = malloc((size_t)B * sizeof *same_as);
    int32_t *old = malloc((size_t)B * s->cap * sizeof *old);
    int *src = malloc((size_t)B * sizeof *src);
    if (!cands || !same_as || !old || !src) {
        free(cands), free(same_as), free(old), free(src);
        return SHRUTI_ERR_NOMEM;
    }
    /* beams with identical prefixes propose identical sequences; the
     * reference keys candidates by sequence, so they collapse */
    for (int j = 0; j < B; j++) {
        same_as[j] = j;
        for (int i = 0; i < j; i++)
            if (memcmp(s->tokens + (size_t)i * s->cap, s->tokens + (size_t)j * s->cap,
                       (size_t)s->len * sizeof(int32_t)) == 0) {
                same_as[j] = i;
                break;
            }
    }
    for (int j = 0; j < B; j++) {
        const int *top = tops + j * n_top;
        for (int c = 0; c < n_top; c++) {
            double score = s->sum_logprob[j] + lps[j * n_top + c];
            int existing = -1;
            for (int e = 0; e < n; e++)
                if (same_as[cands[e].source] == same_as[j] && cands[e].token == top[c]) existing = e;
            if (existing >= 0) {   /* dict update: new value and source, old position */
                cands[existing].score = score;
                cands[existing].source = j;
            } else {
                cands[n] = (beam_cand){j, top[c], score, n};
                n++;
            }
        }
    }
    qsort(cands, (size_t)n, sizeof *cands, cmp_beam_cand);
    memcpy(old, s->tokens, (size_t)B * s->cap * sizeof *old);
    int saved = 0;
    for (int c = 0; c < n && saved < B; c++) {
        const int32_t *prefix = old + (size_t)cands[c].source * s->cap;
        if (cands[c].token == eot) {
            if (finished->n < max_candidates) {
                /* newly finished, best first, until the list is full */
                if ((r = cand_push(finished, prefix, s->len, cands[c].score)) < 0) break;
                finished->v[finished->n - 1].tokens[s->len] = eot;
                finished->v[finished->n - 1].n = s->len + 1;
            }
        } else {
            int32_t *dst = s->tokens + (size_t)saved * s->cap;
            memcpy(dst, prefix, (size_t)s->len * sizeof *dst);
            dst[s->len] = cands[c].token;
            s->sum_logprob[saved] = cands[c].score;
            src[saved] = cands[c].source;
            saved++;
        }
    }
    if (r == 0) {
        s->len++;
        r = sh_decoder_reorder(rt, src, saved, s->len - 1);
    }
    free(cands), free(same_as), free(old), free(src);
    if (r < 0) return r;
    return finished->n >= max_candidates;
}

/* ---------------------------------------------------------- ranking */

/* Cuts a candidate at its first eot after sample_begin (a sequence that
 * ended early carries eot to the end of the group's longest); returns its
 * length after sample_begin. */
static int cut_at_eot(candidate *c, int sample_begin, int eot) {
    int end = sample_begin;
    while (end < c->n && c->tokens[end] != eot) end++;
    c->n = end;   /* keep [0, end): the caller skips sample_begin */
    return end - sample_begin;
}

/* Cuts each candidate at its first eot after sample_begin and picks the
 * best by sum_logprob / length (or the length penalty). */
static int rank_candidates(candidate_list *c, int sample_begin, int eot, float length_penalty) {
    int best = -1;
    double best_score = -INFINITY;
    for (int i = 0; i < c->n; i++) {
        int length = cut_at_eot(&c->v[i], sample_begin, eot);
        double penalty = length_penalty < 0 ? (double)length
                                            : pow((5.0 + length) / 6.0, length_penalty);
        double score = c->v[i].score / penalty;
        if (best < 0 || score > best_score) {
            best = i;
            best_score = score;
        }
    }
    return best;
}

/* ------------------------------------------------------------ decode() */

static int fill_result(const shruti_model *m, const candidate *c, int sample_begin,
                       sh_decode_result *res) {
    int n = c->n - sample_begin;
    res->tokens = malloc(((size_t)n + 1) * sizeof *res->tokens);
    if (!res->tokens) return SHRUTI_ERR_NOMEM;
    memcpy(res->tokens, c->tokens + sample_begin, (size_t)n * sizeof *res->tokens);
    res->n_tokens = n;
    char *raw = sh_tokens_to_text(m, res->tokens, n);
    res->text = raw ? sh_strip(raw) : NULL;
    free(raw);
    if (!res->text) return SHRUTI_ERR_NOMEM;
    res->sum_logprob = c->score;
    res->avg_logprob = c->score / (n + 1);
    res->compression_ratio = sh_compression_ratio(res->text);
    return 0;
}

static int check_abort(const sh_decode_options *o) {
    return o->abort_callback && o->abort_callback(o->abort_user_data);
}

static int decode_window_once(sh_run *rt, const float *mel, bool encode,
                              const sh_decode_options *o, sh_decode_result *res) {
    const shruti_model *m = rt->m;
    const sh_special *sp = &m->sp;
    int n_vocab = m->hp.n_vocab, n_ctx = m->hp.n_text_ctx, eot = sp->eot, r = 0;
    int n_windows = o->n_windows > 1 ? o->n_windows : 1;
    memset(res, 0, sizeof *res * n_windows);
    res->language_prob = NAN;
    res->temperature = o->temperature;
    bool beam = o->temperature == 0.0f && o->beam_size > 1;
    int n_group = beam ? o->beam_size : (o->temperature > 0.0f && o->best_of > 1 ? o->best_of : 1);
    if (n_windows > 1) {   /* independent windows, greedy, one row each */
        if (o->temperature != 0.0f || o->language < 0 || encode) return SHRUTI_ERR_INVALID_ARG;
        beam = false;
        n_group = n_windows;
    }
    if (n_group > (n_windows > 1 ? 64 : 32)) return SHRUTI_ERR_INVALID_ARG;
    if (encode && (r = sh_encode(rt, mel)) < 0) return r;

    int language = o->language;
    if (sp->n_languages == 0) {
        language = 0;   /* English-only: "en" */
    } else if (language < 0) {
        float probs[SH_MAX_LANGUAGES];
        if ((language = sh_detect_language(rt, probs, NULL)) < 0) return language;
        res->language_prob = probs[language];
    }
    res->language = language;

    int sample_len = o->sample_len > 0 ? o->sample_len : n_ctx / 2;
    sequences s = {0};
    s.n_group = n_group;
    s.cap = n_ctx + 2;
    s.tokens = malloc((size_t)n_group * s.cap * sizeof *s.tokens);
    s.sum_logprob = calloc((size_t)n_group, sizeof *s.sum_logprob);
    float *logits = malloc((size_t)n_group * n_vocab * sizeof *logits);
    double *no_speech = calloc((size_t)n_group, sizeof *no_speech);
    candidate_list finished = {0};
    if (!s.tokens || !s.sum_logprob || !logits || !no_speech) {
        r = SHRUTI_ERR_NOMEM;
        goto done;
    }
    int sot_index;
    int32_t init[512];
    int n_init = initial_tokens(m, o, language, init, &sot_index);
    if (n_init >= n_ctx) {
        r = SHRUTI_ERR_INVALID_ARG;
        goto done;
    }
    for (int k = 0; k < n_group; k++) memcpy(s.tokens + (size_t)k * s.cap, init, n_init * 4);
    s.len = n_init;

    sh_logit_filters filters = {
        .m = m, .sample_begin = n_init, .suppress_blank = o->suppress_blank,
        .blank_token = sh_vocab_lookup(&m->vocab, " ", 1), .suppress = o->suppress,
        .n_suppress = o->n_suppress, .timestamps = !o->without_timestamps,
        .max_initial_timestamp_index =
            o->max_initial_timestamp < 0 ? -1 : (int)nearbyint(o->max_initial_timestamp / 0.02)};

    if ((r = sh_decoder_reserve(rt, n_group)) < 0) goto done;
    /* greedy (one sequence, or one per batched window): the tokens are
     * chosen where the logits are (the first step of batched windows, whose
     * rows are apart, on the host) */
    bool greedy = !beam && o->temperature == 0.0f;
    if (n_windows > 1) {
        /* each window's initial tokens over its own encoder output */
        int *rows = malloc((size_t)n_windows * n_init * sizeof *rows);
        if (!rows) {
            r = SHRUTI_ERR_NOMEM;
            goto done;
        }
        for (int k = 0; k < n_windows; k++)
            for (int i = 0; i < n_init; i++) rows[k * n_init + i] = init[i];
        r = sh_decoder_forward(rt, rows, n_windows, n_init, 0);
        free(rows);
        for (int k = 0; k < n_windows && r == 0; k++) {
            float *row = logits + (size_t)k * n_vocab;
            if ((r = sh_decoder_logits(rt, k * n_init + sot_index, 1, row)) < 0) break;
            no_speech[k] = sh_softmax_prob(row, n_vocab, sp->no_speech);
            r = sh_decoder_logits(rt, k * n_init + n_init - 1, 1, row);
        }
        if (r < 0) goto done;
    } else {
        /* the initial tokens once, then copied to every beam's cache */
        int *init_int = (int *)init;
        if ((r = sh_decoder_forward(rt, init_int, 1, n_init, 0)) < 0 ||
            (r = sh_decoder_broadcast(rt, n_group, n_init)) < 0)
            goto done;
        /* no_speech_prob = softmax(logits at sot)[no_speech] */
        if ((r = sh_decoder_logits(rt, sot_index, 1, logits)) < 0) goto done;
        no_speech[0] = sh_softmax_prob(logits, n_vocab, sp->no_speech);
    }
    /* sampling: the logits come to the host (greedy and beams choose where
     * the logits are) */
    bool host_logits = !greedy && !beam;
    if (host_logits && n_windows == 1) {
        if ((r = sh_decoder_logits(rt, n_init - 1, 1, logits)) < 0) goto done;
        for (int k = 1; k < n_group; k++)
            memcpy(logits + (size_t)k * n_vocab, logits, (size_t)n_vocab * sizeof *logits);
    }
    res->no_speech_prob = no_speech[0];

    int max_candidates = beam ? (int)nearbyint(o->beam_size * o->patience) : 0;
    if (beam && max_candidates < 1) max_candidates = 1;
    int *step_tokens = malloc((size_t)n_group * sizeof *step_tokens);
    if (!step_tokens) {
        r = SHRUTI_ERR_NOMEM;
        goto done;
    }
    for (int i = 0; i < sample_len; i++) {
        if (i > 0) {
            if (check_abort(o)) {
                r = SHRUTI_ERR_ABORTED;
                break;
            }
            for (int k = 0; k < n_group; k++) step_tokens[k] = s.tokens[(size_t)k * s.cap + s.len - 1];
            if ((r = sh_decoder_forward(rt, step_tokens, n_group, 1, s.len - 1)) < 0 ||
                (host_logits && (r = sh_decoder_logits(rt, 0, n_group, logits)) < 0))
                break;
        }
        if (greedy && (i > 0 || n_windows == 1)) {
            int completed = update_greedy(rt, &s, &filters, i == 0 ? n_init - 1 : 0, eot);
            if (completed < 0) {
                r = completed;
                break;
            }
            if (completed || s.len > n_ctx) break;
            continue;
        }
        if (!beam)
            for (int k = 0; k < n_group; k++)
                sh_apply_logit_filters(&filters, logits + (size_t)k * n_vocab,
                                       s.tokens + (size_t)k * s.cap, s.len);
        int completed = beam ? update_beams(rt, &s, &filters, i == 0 ? n_init - 1 : 0, i == 0, eot,
                                            &finished, max_candidates)
                             : update_sampling(&s, logits, n_vocab, o->temperature, eot, o->rng);
        if (completed < 0) {
            r = completed;
            break;
        }
        if (completed || s.len > n_ctx) break;
    }
    free(step_tokens);
    if (r < 0) goto done;

    if (beam) {
        /* not enough finished: the live beams count as ended, best first */
        if (finished.n < n_group) {
            int order[64];
            for (int k = 0; k < n_group; k++) order[k] = k;
            for (int a = 1; a < n_group; a++) /* stable ascending, then reversed */
                for (int b = a; b > 0 && s.sum_logprob[order[b - 1]] > s.sum_logprob[order[b]]; b--) {
                    int t = order[b];
                    order[b] = order[b - 1];
                    order[b - 1] = t;
                }
            for (int k = n_group - 1; k >= 0 && finished.n < n_group; k--) {
                int j = order[k];
                if ((r = cand_push(&finished, s.tokens + (size_t)j * s.cap, s.len,
                                   s.sum_logprob[j])) < 0)
                    goto done;
                finished.v[finished.n - 1].tokens[s.len] = eot;
                finished.v[finished.n - 1].n = s.len + 1;
            }
        }
    } else {
        for (int k = 0; k < n_group; k++) {
            if ((r = cand_push(&finished, s.tokens + (size_t)k * s.cap, s.len, s.sum_logprob[k])) < 0)
                goto done;
            finished.v[finished.n - 1].tokens[s.len] = eot;   /* the reference pads with eot */
            finished.v[finished.n - 1].n = s.len + 1;
        }
    }
    if (n_windows > 1) {
        /* one result per window, each as a greedy decode() of it alone */
        for (int k = 0; k < n_windows && r == 0; k++) {
            cut_at_eot(&finished.v[k], n_init, eot);
            r = fill_result(m, &finished.v[k], n_init, &res[k]);
            res[k].language = language;
            res[k].language_prob = NAN;
            res[k].temperature = o->temperature;
            res[k].no_speech_prob = no_speech[k];
        }
        for (int k = 0; r < 0 && k < n_windows; k++) sh_decode_result_free(&res[k]);
        goto done;
    }
    int best = rank_candidates(&finished, n_init, eot, o->length_penalty);
    r = fill_result(m, &finished.v[best], n_init, res);
done:
    free(no_speech);
    cand_free(&finished);
    free(s.tokens);
    free(s.sum_logprob);
    free(logits);
    if (r < 0) sh_decode_result_free(res);
    return r;
}

int sh_decode_window(sh_run *rt, const float *mel, bool encode, const sh_decode_options *o,
                     sh_decode_result *res) {
    int r = decode_window_once(rt, mel, encode, o, res);
    /* the GPU failed and the window now sits encoded on the CPU: redo it
     * (batched windows are redone by the caller, one at a time) */
    if (r == SHRUTI_ERR_DEVICE && o->n_windows <= 1) r = decode_window_once(rt, mel, false, o, res);
    return r;
}

void sh_decode_result_free(sh_decode_result *res) {
    free(res->tokens);
    free(res->text);
    res->tokens = NULL;
    res->text = NULL;
    res->n_tokens = 0;
}

/* ------------------------------------------------------ suppress list */

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

int sh_build_suppress_list(const shruti_model *m, const char *spec, int32_t **out) {
    const sh_special *sp = &m->sp;
    int32_t *ns = NULL;
    int n_ns = 0, cap = 16, n = 0;
    *out = NULL;
    size_t len = spec ? strlen(spec) : 0;
    int32_t *v = malloc(((size_t)cap + len) * sizeof *v);
    if (!v) return SHRUTI_ERR_NOMEM;
    const char *p = spec ? spec : "";
    while (*p) {
        char *end;
        long t = strtol(p, &end, 10);
        if (end == p || (*end && *end != ',')) {
            free(v);
            return SHRUTI_ERR_INVALID_ARG;
        }
        if (t == -1) {
            if (!ns && (n_ns = sh_non_speech_tokens(m, &ns)) < 0) {
                free(v);
                return n_ns;
            }
        } else if (t < 0 || t >= m->hp.n_vocab) {
            free(v);
            free(ns);
            return SHRUTI_ERR_INVALID_ARG;
        } else {
            v[n++] = (int32_t)t;
        }
        p = *end ? end + 1 : end;
    }
    int32_t *all = malloc(((size_t)n + n_ns + 6) * sizeof *all);
    if (!all) {
        free(v);
        free(ns);
        return SHRUTI_ERR_NOMEM;
    }
    memcpy(all, v, (size_t)n * sizeof *all);
    if (n_ns) memcpy(all + n, ns, (size_t)n_ns * sizeof *all);
    n += n_ns;
    const int specials[] = {sp->transcribe, sp->translate, sp->sot, sp->sot_prev, sp->sot_lm,
                            sp->no_speech};
    for (int i = 0; i < 6; i++) all[n++] = specials[i];
    qsort(all, (size_t)n, sizeof *all, cmp_i32);
    int u = 0;
    for (int i = 0; i < n; i++)
        if (u == 0 || all[u - 1] != all[i]) all[u++] = all[i];
    free(v);
    free(ns);
    *out = all;
    return u;
}
