/* logit_filters.c - which tokens may come next, as the reference decides:
 * no blank at the start, the suppress list, and the timestamp grammar
 * (timestamps come in pairs, never decrease, the first is <= 1 s, and a
 * timestamp is forced when timestamps together outweigh any text token). */
#include "decode/logit_filters.h"

#include <math.h>

static void mask_range(float *logits, int begin, int end) {
    for (int i = begin; i < end; i++) logits[i] = -INFINITY;
}

static void apply_timestamp_rules(const sh_logit_filters *f, float *logits,
                                  const int32_t *tokens, int n) {
    const sh_special *sp = &f->m->sp;
    int n_vocab = f->m->hp.n_vocab, ts = sp->timestamp_begin;
    const int32_t *seq = tokens + f->sample_begin;
    int n_seq = n - f->sample_begin;

    logits[sp->no_timestamps] = -INFINITY;
    bool last_ts = n_seq >= 1 && seq[n_seq - 1] >= ts;
    bool penultimate_ts = n_seq < 2 || seq[n_seq - 2] >= ts;
    if (last_ts) {
        if (penultimate_ts) mask_range(logits, ts, n_vocab);   /* has to be text */
        else mask_range(logits, 0, sp->eot);                   /* cannot be text */
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
        mask_range(logits, ts, bound);
    }
    if (n_seq == 0) {
        mask_range(logits, 0, ts);   /* begin with a timestamp */
        if (f->max_initial_timestamp_index >= 0)
            mask_range(logits, ts + f->max_initial_timestamp_index + 1, n_vocab);
    }
    /* if the timestamps together are likelier than any text token, take one */
    double max_all = -INFINITY;
    for (int i = 0; i < n_vocab; i++) max_all = logits[i] > max_all ? logits[i] : max_all;
    if (max_all == -INFINITY) return;
    double sum_ts = 0, max_text = -INFINITY;
    for (int i = ts; i < n_vocab; i++) sum_ts += exp(logits[i] - max_all);
    for (int i = 0; i < ts; i++) max_text = logits[i] > max_text ? logits[i] : max_text;
    double ts_logsumexp = log(sum_ts) + max_all;
    if (ts_logsumexp > max_text) mask_range(logits, 0, ts);
}

void sh_apply_logit_filters(const sh_logit_filters *f, float *logits, const int32_t *tokens,
                            int n) {
    if (f->suppress_blank && n == f->sample_begin) {
        if (f->blank_token >= 0) logits[f->blank_token] = -INFINITY;
        logits[f->m->sp.eot] = -INFINITY;
    }
    for (int i = 0; i < f->n_suppress; i++) logits[f->suppress[i]] = -INFINITY;
    if (f->timestamps) apply_timestamp_rules(f, logits, tokens, n);
}
