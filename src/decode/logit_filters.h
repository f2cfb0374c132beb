/* logit_filters.h - the reference's logit filters, applied in order:
 * SuppressBlank, SuppressTokens, ApplyTimestampRules. */
#ifndef SHRUTI_DECODE_LOGIT_FILTERS_H
#define SHRUTI_DECODE_LOGIT_FILTERS_H

#include <stdbool.h>
#include <stdint.h>

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

#endif
