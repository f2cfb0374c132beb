/* context.h - what a shruti_context holds: the run state, the results of
 * the last call and its error message. */
#ifndef SHRUTI_CONTEXT_H
#define SHRUTI_CONTEXT_H

#include "device.h"
#include "decode/decode.h"
#include "shruti.h"

typedef struct {
    shruti_segment *v;
    int n, cap;
} segment_list;

struct shruti_context {
    const shruti_model *model;
    sh_run rt;
    char error[512];
    uint64_t rng;

    /* results of the last transcription */
    segment_list segments;
    char *full_text;
    char language[8];
    double duration;

    /* result of the last decode_mel */
    sh_decode_result last_decode;
};

/* The reference transcribe() over a whole log-mel spectrogram (already
 * holding the 30 s of padding frames at the end). */
int sh_transcribe(shruti_context *ctx, const float *mel, int n_frames,
                  const shruti_params *params);

/* Translates public params to decode options for one temperature. */
int sh_decode_options_from_params(shruti_context *ctx, const shruti_params *p, float temperature,
                                  int language, sh_decode_options *o, int32_t **suppress);

void sh_results_clear(shruti_context *ctx);
int sh_set_ctx_error(shruti_context *ctx, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
