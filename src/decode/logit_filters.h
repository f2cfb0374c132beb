/* logit_filters.h - the reference's logit filters, applied in order:
 * SuppressBlank, SuppressTokens, ApplyTimestampRules. */
#ifndef SHRUTI_DECODE_LOGIT_FILTERS_H
#define SHRUTI_DECODE_LOGIT_FILTERS_H

#include <stdbool.h>
#include <stdint.h>

#include "gpu/gpu_api.h"
#include "model/model.h"

typedef struct {
    const shruti_model *m;
    int sample_begin;            /* tokens before this index are the prompt */
    bool suppress_blank;
    int blank_token;             /* encode(" ")[0] */
    const int32_t *suppress;
    int n_suppress;
    bool timestamps;             /* apply the timestamp rules */
    int max_initial_timestamp_index;   /* < 0: none */
} sh_logit_filters;

/* Filters one row of logits (n_vocab) for the sequence tokens[0..n). */
void sh_apply_logit_filters(const sh_logit_filters *f, float *logits, const int32_t *tokens,
                            int n);

/* The same filters as a mask (ids and ranges, then the timestamp rule),
 * which a GPU applies to its own logits. */
void sh_logit_mask_for(const sh_logit_filters *f, const int32_t *tokens, int n,
                       sh_logit_mask *out);
/* Applies a mask to one row of n_vocab logits. */
void sh_apply_logit_mask(const sh_logit_mask *mk, float *logits, int n_vocab);

/* log(sum(exp(x))) of n floats (-inf when all are -inf). */
double sh_log_sum_exp(const float *x, int n);
/* The first index of the largest of n floats. */
int sh_argmax(const float *x, int n);
/* The k likeliest tokens of a masked row (k <= n_vocab), best first, ties
 * to the lower id, and their log-probabilities (beam search). */
void sh_pick_top(const sh_logit_mask *mk, float *logits, int n_vocab, int k, int *tokens,
                 double *logprobs);
/* The greedy choice from a masked row: the token and its log-probability. */
void sh_pick_greedy(const sh_logit_mask *mk, float *logits, int n_vocab, int *token,
                    double *logprob);

#endif
