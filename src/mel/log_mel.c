/* log_mel.c - log-mel spectrogram exactly as the reference computes it:
 * periodic Hann window of 400, hop 160, centred frames with reflect
 * padding, |STFT|^2 without the last frame, mel filters, log10 clamped at
 * 1e-10, floored at (global max - 8), then (x + 4) / 4. The FFT is a small
 * mixed-radix one in double precision (400 = 2^4 * 5^2). */
#include "mel/log_mel.h"

#include <cblas.h>
#include <complex.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"

typedef struct {
    double complex twiddle[SH_N_FFT];   /* exp(-2 pi i k / N) */
    double window[SH_N_FFT];
} fft_tables;

static void tables_init(fft_tables *t) {
    for (int k = 0; k < SH_N_FFT; k++) {
        double a = -2.0 * M_PI * k / SH_N_FFT;
        t->twiddle[k] = cos(a) + I * sin(a);
        t->window[k] = 0.5 - 0.5 * cos(2.0 * M_PI * k / SH_N_FFT);   /* periodic Hann */
    }
}

static int smallest_factor(int n) {
    if (n % 4 == 0) return 4;
    for (int p = 2; p * p <= n; p++)
        if (n % p == 0) return p;
    return n;
}

/* Decimation in time: out[0..n) = DFT of in[0], in[stride], ... */
static void fft(const fft_tables *t, const double complex *in, int stride, double complex *out,
                int n) {
    if (n == 1) {
        out[0] = in[0];
        return;
    }
    int p = smallest_factor(n), m = n / p, step = SH_N_FFT / n;
    for (int r = 0; r < p; r++) fft(t, in + r * stride, stride * p, out + r * m, m);
    double complex tmp[8];
    for (int k = 0; k < m; k++) {
        for (int q = 0; q < p; q++) {
            double complex s = 0;
            for (int r = 0; r < p; r++) {
                int e = (r * (k + q * m)) % n;
                s += out[r * m + k] * t->twiddle[e * step];
            }
            tmp[q] = s;
        }
        for (int q = 0; q < p; q++) out[k + q * m] = tmp[q];
    }
}

/* Sample i of the signal pcm ++ zeros(padding), reflected at both ends
 * as torch.stft(center=True, pad_mode="reflect") does. */
static float sample_at(const float *pcm, size_t n_pcm, size_t n_total, long i) {
    long n = (long)n_total;
    if (n == 1) return n_pcm ? pcm[0] : 0.0f;
    while (i < 0 || i >= n) i = i < 0 ? -i : 2 * (n - 1) - i;
    return (size_t)i < n_pcm ? pcm[i] : 0.0f;
}

int sh_log_mel(const float *pcm, size_t n_samples, size_t padding, const float *filters,
               int n_mels, float **out, int *n_frames_out) {
    size_t n_total = n_samples + padding;
    if (n_total == 0 || n_total / SH_HOP > 100000000) return SHRUTI_ERR_INVALID_ARG;
    int n_frames = (int)(n_total / SH_HOP);   /* 1 + n/hop frames, minus the last */
    if (n_frames == 0) return SHRUTI_ERR_INVALID_ARG;
    fft_tables *t = malloc(sizeof *t);
    float *power = malloc((size_t)n_frames * SH_N_FREQ * sizeof(float));
    float *mel = malloc((size_t)n_frames * (size_t)n_mels * sizeof(float));
    if (!t || !power || !mel) {
        free(t), free(power), free(mel);
        return SHRUTI_ERR_NOMEM;
    }
    tables_init(t);
    double complex frame[SH_N_FFT], spec[SH_N_FFT];
    for (int f = 0; f < n_frames; f++) {
        long start = (long)f * SH_HOP - SH_N_FFT / 2;
        /* Frames entirely inside the zero padding have zero power. */
        if (start >= (long)n_samples && start + SH_N_FFT <= (long)n_total) {
            memset(power + (size_t)f * SH_N_FREQ, 0, SH_N_FREQ * sizeof(float));
            continue;
        }
        for (int k = 0; k < SH_N_FFT; k++)
            frame[k] = t->window[k] * sample_at(pcm, n_samples, n_total, start + k);
        fft(t, frame, 1, spec, SH_N_FFT);
        for (int k = 0; k < SH_N_FREQ; k++) {
            double re = creal(spec[k]), im = cimag(spec[k]);
            power[(size_t)f * SH_N_FREQ + k] = (float)(re * re + im * im);
        }
    }
    /* mel (n_mels x n_frames) = filters (n_mels x 201) @ power^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n_mels, n_frames, SH_N_FREQ, 1.0f,
                filters, SH_N_FREQ, power, SH_N_FREQ, 0.0f, mel, n_frames);
    size_t n = (size_t)n_frames * (size_t)n_mels;
    float max = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        mel[i] = log10f(fmaxf(mel[i], 1e-10f));
        if (mel[i] > max) max = mel[i];
    }
    for (size_t i = 0; i < n; i++) mel[i] = (fmaxf(mel[i], max - 8.0f) + 4.0f) / 4.0f;
    free(t);
    free(power);
    *out = mel;
    *n_frames_out = n_frames;
    return 0;
}
