/* logit_filters.c - which tokens may come next, as the reference decides:
 * no blank at the start, the suppress list, and the timestamp grammar
 * (timestamps come in pairs, never decrease, the first is <= 1 s, and a
 * timestamp is forced when timestamps together outweigh any text token).
 *
 * The filters first become a mask (tokens and ranges to remove, and
 * whether the last rule applies), so the CPU and a GPU apply the same
 * decisions: the GPU gets the mask and returns only the chosen token. */
#include "decode/logit_filters.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cpu/vmath.h"

static void add_range(sh_logit_mask *mk, int begin, int end) {
    if (begin < end && mk->n_ranges < SH_MASK_RANGES) {
        mk->ranges[mk->n_ranges][0] = begin;
        mk->ranges[mk->n_ranges][1] = end;
        mk->n_ranges++;
    }
}

static void timestamp_ranges(const sh_logit_filters *f, const int32_t *tokens, int n,
                             sh_logit_mask *mk) {
    const sh_special *sp = &f->m->sp;
    int n_vocab = f->m->hp.n_vocab, ts = sp->timestamp_begin;
    const int32_t *seq = tokens + f->sample_begin;
    int n_seq = n - f->sample_begin;

    add_range(mk, sp->no_timestamps, sp->no_timestamps + 1);
    bool last_ts = n_seq >= 1 && seq[n_seq - 1] >= ts;
    bool penultimate_ts = n_seq < 2 || seq[n_seq - 2] >= ts;
    if (last_ts) {
        if (penultimate_ts) add_range(mk, ts, n_vocab);   /* has to be text */
        else add_range(mk, 0, sp->eot);                   /* cannot be text */
    }
    /* timestamps never decrease, and a segment is never empty */
    int last_timestamp = -1;
    for (int i = n_seq - 1; i >= 0; i--)
        if (seq[i] >= ts) {
            last_timestamp = seq[i];
            break;
        }
    if (last_timestamp >= 0) {
        int bound = (last_ts && !penultimate_ts) ? last_timestamp : last_timestamp + 1;
        add_range(mk, ts, bound);
    }
    if (n_seq == 0) {
        add_range(mk, 0, ts);   /* begin with a timestamp */
        if (f->max_initial_timestamp_index >= 0)
            add_range(mk, ts + f->max_initial_timestamp_index + 1, n_vocab);
    }
    mk->ts_begin = ts;   /* then: timestamps likelier than any text token win */
}

void sh_logit_mask_for(const sh_logit_filters *f, const int32_t *tokens, int n,
                       sh_logit_mask *out) {
    *out = (sh_logit_mask){.ids = f->suppress, .n_ids = f->n_suppress, .ts_begin = -1};
    if (f->suppress_blank && n == f->sample_begin) {
        if (f->blank_token >= 0) add_range(out, f->blank_token, f->blank_token + 1);
        add_range(out, f->m->sp.eot, f->m->sp.eot + 1);
    }
    if (f->timestamps) timestamp_ranges(f, tokens, n, out);
}

static void mask_range(float *logits, int begin, int end) {
    for (int i = begin; i < end; i++) logits[i] = -INFINITY;
}

/* The largest of n floats (-inf for none), eight lanes at a time. */
SH_CLONES static float max_of(const float *x, int n) {
    vf8 m = vf8_splat(-INFINITY);
    int i = 0;
    for (; i + 8 <= n; i += 8) m = vf8_max(m, vf8_load(x + i));
    float best = -INFINITY;
    for (int k = 0; k < 8; k++) best = m[k] > best ? m[k] : best;
    for (; i < n; i++) best = x[i] > best ? x[i] : best;
    return best;
}

/* sum(exp(x - max)) in float lanes added up in double (a lane of -inf
 * adds exactly 0), as the reference's float32 logsumexp. */
SH_CLONES static double sum_exp(const float *x, int n, float max) {
    vf8 vmax = vf8_splat(max), acc = vf8_splat(0.0f);
    int i = 0;
    for (; i + 8 <= n; i += 8) acc += vf8_exp(vf8_load(x + i) - vmax);
    double s = 0;
    for (int k = 0; k < 8; k++) s += acc[k];
    for (; i < n; i++) s += expf(x[i] - max);
    return s;
}

void sh_apply_logit_mask(const sh_logit_mask *mk, float *logits, int n_vocab) {
    for (int i = 0; i < mk->n_ids; i++) logits[mk->ids[i]] = -INFINITY;
    for (int i = 0; i < mk->n_ranges; i++) mask_range(logits, mk->ranges[i][0], mk->ranges[i][1]);
    int ts = mk->ts_begin;
    if (ts < 0) return;
    /* the timestamps' log-sum-exp against the likeliest text token */
    float max_text = max_of(logits, ts), max_ts = max_of(logits + ts, n_vocab - ts);
    float max_all = max_text > max_ts ? max_text : max_ts;
    if (max_all == -INFINITY) return;
    double ts_logsumexp = log(sum_exp(logits + ts, n_vocab - ts, max_all)) + max_all;
    if (ts_logsumexp > max_text) mask_range(logits, 0, ts);
}

void sh_apply_logit_filters(const sh_logit_filters *f, float *logits, const int32_t *tokens,
                            int n) {
    sh_logit_mask mk;
    sh_logit_mask_for(f, tokens, n, &mk);
    sh_apply_logit_mask(&mk, logits, f->m->hp.n_vocab);
}

/* log(sum(exp(x))) around a known maximum (-inf when all are -inf). */
static double lse_around(const float *x, int n, float max) {
    return max == -INFINITY ? -INFINITY : log(sum_exp(x, n, max)) + max;
}

double sh_log_sum_exp(const float *x, int n) { return lse_around(x, n, max_of(x, n)); }

/* The first index holding v (v is in x), eight lanes at a time. */
SH_CLONES static int first_index_of(const float *x, int n, float v) {
    vf8 vv = vf8_splat(v);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        vi8 eq = vf8_load(x + i) == vv;
        if (!vi8_any(eq)) continue;
        for (int k = 0; k < 8; k++)
            if (eq[k]) return i + k;
    }
    for (; i < n; i++)
        if (x[i] == v) return i;
    return 0;
}

int sh_argmax(const float *x, int n) {
    float max = max_of(x, n);
    return max == -INFINITY ? 0 : first_index_of(x, n, max);
}

void sh_pick_greedy(const sh_logit_mask *mk, float *logits, int n_vocab, int *token,
                    double *logprob) {
    sh_apply_logit_mask(mk, logits, n_vocab);
    /* one pass for the maximum serves the argmax and the log-sum-exp */
    float max = max_of(logits, n_vocab);
    *token = max == -INFINITY ? 0 : first_index_of(logits, n_vocab, max);
    *logprob = logits[*token] - lse_around(logits, n_vocab, max);
}

/* Token t into the n_found (< k, or k: the last drops out) best so far,
 * ties to the lower id; returns the new count. */
static inline __attribute__((always_inline)) int top_insert(const float *logits, int k,
                                                            int *tokens, int n_found, int t) {
    int p = n_found < k ? n_found++ : k - 1;
    while (p > 0 && logits[tokens[p - 1]] < logits[t]) {
        tokens[p] = tokens[p - 1];
        p--;
    }
    tokens[p] = t;
    return n_found;
}

/* The k best tokens of a row, best first; eight at a time once k are
 * found, skipping the (many) groups that do not beat the k-th. */
SH_CLONES static int top_scan(const float *logits, int n_vocab, int k, int *tokens) {
    int n_found = 0, t = 0;
    for (; t < n_vocab && n_found < k; t++) n_found = top_insert(logits, k, tokens, n_found, t);
    for (; t + 8 <= n_vocab; t += 8) {
        if (!vi8_any(vf8_load(logits + t) > vf8_splat(logits[tokens[k - 1]]))) continue;
        for (int i = t; i < t + 8; i++)
            if (logits[i] > logits[tokens[k - 1]]) n_found = top_insert(logits, k, tokens, n_found, i);
    }
    for (; t < n_vocab; t++)
        if (logits[t] > logits[tokens[k - 1]]) n_found = top_insert(logits, k, tokens, n_found, t);
    return n_found;
}

void sh_pick_top(const sh_logit_mask *mk, float *logits, int n_vocab, int k, int *tokens,
                 double *logprobs) {
    sh_apply_logit_mask(mk, logits, n_vocab);
    double lse = sh_log_sum_exp(logits, n_vocab);
    int n_found = top_scan(logits, n_vocab, k, tokens);
    for (int c = 0; c < n_found; c++) logprobs[c] = logits[tokens[c]] - lse;
}
