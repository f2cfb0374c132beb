/* log_mel.h - the reference's log-mel spectrogram. */
#ifndef SHRUTI_MEL_LOG_MEL_H
#define SHRUTI_MEL_LOG_MEL_H

#include <stddef.h>

/* Computes the log-mel spectrogram of pcm followed by `padding` zero
 * samples: *out (malloc'd, n_mels x *n_frames, row-major). filters is
 * (n_mels x 201). Returns 0 or a negative shruti_status. */
int sh_log_mel(const float *pcm, size_t n_samples, size_t padding, const float *filters,
               int n_mels, float **out, int *n_frames);

#endif
