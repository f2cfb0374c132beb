/* decode.h - decode(): one 30 s window to tokens, as the reference does
 * it (greedy, sampling with best-of, beam search; the logit filters). */
#ifndef SHRUTI_DECODE_DECODE_H
#define SHRUTI_DECODE_DECODE_H

#include <stdbool.h>
#include <stdint.h>

#include "device.h"

typedef struct {
    int task;                    /* shruti_task */
    int language;                /* language index, -1 = detect */
    float temperature;
    int beam_size;               /* > 1: beam search (temperature 0 only) */
    float patience;
    float length_penalty;        /* < 0: none */
    int best_of;                 /* samples at temperature > 0 */
    int sample_len;
    const int32_t *suppress;     /* sorted ids to suppress (specials included) */
    int n_suppress;
    bool suppress_blank;
    bool without_timestamps;
    float max_initial_timestamp; /* seconds, < 0: none */
    const int32_t *prompt;       /* previous-text tokens, or NULL */
    int n_prompt;
    uint64_t *rng;               /* sampling state */
    bool (*abort_callback)(void *);
    void *abort_user_data;
    int n_windows;               /* > 1: greedy over that many windows bound on the
                                  * device (sh_bind_windows), one result each */
} sh_decode_options;

typedef struct {
    int32_t *tokens;             /* sampled tokens, cut at eot (malloc'd) */
    int n_tokens;
    char *text;                  /* decoded and stripped (malloc'd) */
    int language;                /* index used */
    float language_prob;         /* of the detected language, NAN if given */
    double sum_logprob, avg_logprob, no_speech_prob, compression_ratio;
    float temperature;
} sh_decode_result;

/* Runs the encoder on mel (n_mels x 3000) when encode is set (else reuses
 * the run state's current window), then decodes. Returns 0 or a negative
 * status; res is filled on success and must be released with
 * sh_decode_result_free. With o->n_windows > 1, res is an array of that
 * many results, the windows already encoded and bound. */
int sh_decode_window(sh_run *rt, const float *mel, bool encode, const sh_decode_options *o,
                     sh_decode_result *res);
void sh_decode_result_free(sh_decode_result *res);

/* Language detection over the current window's encoder output:
 * probs[n_languages] and the no-speech probability (either may be NULL);
 * returns the best index or < 0. */
int sh_detect_language(sh_run *rt, float *probs, double *no_speech);

/* The decode() suppress list for a "-1,..."-style string: *out malloc'd,
 * sorted, with the reference's specials added. Returns the count or a
 * negative status (bad ids). */
int sh_build_suppress_list(const shruti_model *m, const char *spec, int32_t **out);

/* softmax(logits)[index], computed stably. */
double sh_softmax_prob(const float *logits, int n, int index);

/* Sampling RNG (splitmix64): uniform in [0, 1). */
double sh_rng_uniform(uint64_t *state);

#endif
