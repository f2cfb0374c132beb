/* shruti.h - the whole public API of the shruti Whisper engine.
 *
 * Usage:
 *
 *   shruti_error err;
 *   shruti_model *model = shruti_model_load("ggml-tiny.en.bin", &err);
 *   if (!model) { fprintf(stderr, "%s\n", err.message); return 1; }
 *   shruti_context *ctx = shruti_context_new(model, 0, &err);
 *   shruti_params p = shruti_default_params();
 *   float *pcm; size_t n;
 *   if (shruti_audio_load("audio.mp3", &pcm, &n, &err) == 0 &&
 *       shruti_transcribe(ctx, pcm, n, &p) == 0)
 *       for (int i = 0; i < shruti_n_segments(ctx); i++)
 *           printf("%s\n", shruti_get_segment(ctx, i)->text);
 *   free(pcm); shruti_context_free(ctx); shruti_model_free(model);
 *
 * Thread safety: a model is read-only after loading and may be shared by
 * any number of contexts in any threads. A context is used by one thread at
 * a time. The library keeps no global mutable state of its own (OpenBLAS's
 * thread count is process-wide; see shruti_context_new). On a GPU the
 * weights are uploaded once per model and each context has its own CUDA
 * stream, cuBLAS handle and buffers.
 *
 * Devices: shruti_model_load picks CUDA when a usable GPU is there ("auto",
 * the default; see shruti_model_params.device), else the CPU, and says why
 * in shruti_model_device_note(); the binary needs no GPU or driver.
 *
 * Errors: functions return 0 / a pointer on success and a negative
 * shruti_status / NULL on failure, with a message in the shruti_error or
 * in shruti_context_error(). The library never exits or aborts.
 */
#ifndef SHRUTI_H
#define SHRUTI_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#if defined(__GNUC__)
#define SHRUTI_API __attribute__((visibility("default")))
#else
#define SHRUTI_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- errors */

typedef enum {
    SHRUTI_OK = 0,
    SHRUTI_ERR_INVALID_ARG = -1,   /* a parameter is out of range */
    SHRUTI_ERR_IO = -2,            /* a file could not be opened or read */
    SHRUTI_ERR_MODEL = -3,         /* the model file is corrupt or unsupported */
    SHRUTI_ERR_AUDIO = -4,         /* the input is not decodable audio */
    SHRUTI_ERR_NOMEM = -5,         /* an allocation failed */
    SHRUTI_ERR_ABORTED = -6,       /* a callback asked to stop */
    SHRUTI_ERR_UNSUPPORTED = -7,   /* valid, but not implemented here */
    SHRUTI_ERR_DEVICE = -8,        /* the GPU (or its driver) failed */
} shruti_status;

typedef struct {
    int code;            /* a shruti_status */
    char message[512];   /* human-readable, never empty when code != 0 */
} shruti_error;

/* A short constant name for a status code ("invalid argument"...). */
SHRUTI_API const char *shruti_status_string(int code);

/* ------------------------------------------------------------------ audio */

#define SHRUTI_SAMPLE_RATE 16000

/* Decodes any file FFmpeg reads ("-" = standard input) to 16 kHz mono
 * float PCM, exactly as `ffmpeg -ac 1 -ar 16000 -f s16le` then /32768.
 * On success *pcm (malloc'd, caller frees) and *n_samples are set and 0 is
 * returned; on failure a negative status, *pcm NULL. Empty audio is an error. */
SHRUTI_API int shruti_audio_load(const char *path, float **pcm, size_t *n_samples,
                                 shruti_error *err);

/* Same, from a memory buffer holding a whole file. */
SHRUTI_API int shruti_audio_load_memory(const void *data, size_t size, float **pcm,
                                        size_t *n_samples, shruti_error *err);

/* ------------------------------------------------------------------ model */

typedef struct shruti_model shruti_model;
typedef struct shruti_context shruti_context;

/* Loads a whisper.cpp ggml file (f32, f16, q4_0, q4_1, q5_0, q5_1 or q8_0
 * tensors). Every size, name and shape is validated. Returns NULL on
 * failure with err filled in. Compute type "auto". */
SHRUTI_API shruti_model *shruti_model_load(const char *path, shruti_error *err);

typedef struct {
    /* faster-whisper's names: "auto" (the file's precision: float32 for f32
     * files, int8 for q8_0 files, else float16), "float32", "float16",
     * "int8" (also "int8_float32", "int8_float16"). The encoder computes in
     * float32; the type sets how the decoder's weights are held and read:
     * float16 halves the bytes of float32 with the same products for f16
     * files, int8 (q8_0 blocks, per-32 scales) halves them again. */
    const char *compute_type;
    /* "auto" (CUDA when a usable GPU is there and the model fits, else the
     * CPU), "cuda" (an error without a usable GPU) or "cpu". On CUDA,
     * float32 computes without TF32, float16 on tensor cores, int8 holds
     * the decoder in int8 (per-32 scales) with half activations. */
    const char *device;
    int device_index;
} shruti_model_params;

SHRUTI_API shruti_model_params shruti_model_default_params(void);
SHRUTI_API shruti_model *shruti_model_load_with_params(const char *path,
                                                       const shruti_model_params *params,
                                                       shruti_error *err);
/* The compute type in effect ("float32", "float16" or "int8"). */
SHRUTI_API const char *shruti_model_compute_type(const shruti_model *model);
SHRUTI_API void shruti_model_free(shruti_model *model);   /* NULL is fine */
/* Where the model runs ("cuda" or "cpu") and why, in one line (the GPU's
 * name, or the reason the CPU was chosen). Strings live with the model. */
SHRUTI_API const char *shruti_model_device(const shruti_model *model);
SHRUTI_API const char *shruti_model_device_note(const shruti_model *model);

/* ---------------------------------------------------------------- devices */

/* The backends compiled in: "cpu" or "cpu cuda". */
SHRUTI_API const char *shruti_backends(void);

typedef struct {
    int index;
    char name[128];
    int cc_major, cc_minor;          /* compute capability */
    uint64_t total_bytes, free_bytes;
    bool usable;                     /* passed the probe: a kernel and a GEMM */
    char note[256];                  /* why not usable */
} shruti_device_info;

/* Lists CUDA devices, probing each (a real kernel launch and a small
 * cuBLAS GEMM). Returns the number of devices (0 .. max filled) or a
 * negative status with err saying why CUDA cannot be used at all (no
 * backend module, no driver...). versions (may be NULL) gets the runtime
 * and driver versions. */
SHRUTI_API int shruti_cuda_devices(shruti_device_info *out, int max, char *versions,
                                   size_t versions_size, shruti_error *err);

SHRUTI_API bool shruti_model_is_multilingual(const shruti_model *model);
SHRUTI_API int shruti_model_n_vocab(const shruti_model *model);
SHRUTI_API int shruti_model_n_mels(const shruti_model *model);
/* "tiny", "base", ... guessed from the dimensions; "custom" otherwise. */
SHRUTI_API const char *shruti_model_type(const shruti_model *model);

/* Language codes known to the model, in token order ("en", "zh", ...). */
SHRUTI_API int shruti_model_n_languages(const shruti_model *model);
SHRUTI_API const char *shruti_language_code(const shruti_model *model, int i);
/* Index of a code ("hi") or English name ("hindi"); -1 if unknown. */
SHRUTI_API int shruti_language_index(const shruti_model *model, const char *code_or_name);

/* ------------------------------------------------------ models by name */

/* Names ("tiny.en", "medium", "large-v3-turbo", "base-q5_1"...) resolve to
 * whisper.cpp's published ggml files, downloaded on first use into the
 * cache: $SHRUTI_CACHE, else $XDG_CACHE_HOME/shruti, else ~/.cache/shruti.
 * $SHRUTI_MODEL_BASE_URL points downloads at a mirror. */

/* Download progress; total is 0 when unknown. */
typedef void (*shruti_download_callback)(uint64_t done, uint64_t total, void *user_data);

/* The i-th published name and its approximate size in bytes; NULL past
 * the end. */
SHRUTI_API const char *shruti_known_model(int i, uint64_t *approx_bytes);

/* True when s names a model rather than a file (no '/', not an existing
 * file, not ending in .bin). */
SHRUTI_API bool shruti_is_model_name(const char *s);

/* The cache folder into buf. Returns 0 or a negative status. */
SHRUTI_API int shruti_model_cache_dir(char *buf, size_t size, shruti_error *err);

/* Where NAME lives in the cache, into path. Returns 1 when it is there,
 * 0 when not (yet), negative for a bad name. */
SHRUTI_API int shruti_model_cached_path(const char *name, char *path, size_t size,
                                        shruti_error *err);

/* A name or path to a local file: a path is returned as is (it must
 * exist); a name is downloaded into the cache unless already there (safe
 * against concurrent downloads; resumes a partial one; checks size and
 * SHA-256 when the server gives them). Returns 0 or a negative status
 * with a message that names the URL and how to pass a local file. */
SHRUTI_API int shruti_model_resolve(const char *name_or_path, char *path, size_t size,
                                    shruti_download_callback progress, void *user_data,
                                    shruti_error *err);

/* Removes NAME (and any partial download) from the cache. Returns 1 if
 * something was removed, 0 if nothing was there, negative on error. */
SHRUTI_API int shruti_model_remove(const char *name, shruti_error *err);

/* A context holds the run state (activations, KV caches, results).
 * n_threads <= 0 means one per core. */
SHRUTI_API shruti_context *shruti_context_new(const shruti_model *model, int n_threads,
                                              shruti_error *err);
SHRUTI_API void shruti_context_free(shruti_context *ctx);   /* NULL is fine */
/* Where this context runs: the model's device, or "cpu" once an error on
 * the GPU (out of memory for its run state, a failed kernel) moved its
 * work to the CPU; the note says why. The work is redone there, never
 * lost. Strings live with the context. */
SHRUTI_API const char *shruti_context_device(const shruti_context *ctx);
SHRUTI_API const char *shruti_context_device_note(const shruti_context *ctx);
/* The message of the last failed call on ctx ("" if none). */
SHRUTI_API const char *shruti_context_error(const shruti_context *ctx);

/* ------------------------------------------------------------- parameters */

typedef enum { SHRUTI_TASK_TRANSCRIBE = 0, SHRUTI_TASK_TRANSLATE = 1 } shruti_task;

typedef struct shruti_segment shruti_segment;

/* Progress in percent (0..100) of the file's frames. */
typedef void (*shruti_progress_callback)(shruti_context *ctx, int percent, void *user_data);
/* Called once per window with the segments it added: [i_first, i_first + n_new). */
typedef void (*shruti_segment_callback)(shruti_context *ctx, int i_first, int n_new,
                                        void *user_data);
/* Polled between decoding steps; returning true aborts with SHRUTI_ERR_ABORTED. */
typedef bool (*shruti_abort_callback)(void *user_data);

#define SHRUTI_MAX_TEMPERATURES 16

typedef struct {
    shruti_task task;
    const char *language;        /* NULL or "auto": detect (English-only models: en) */

    /* Temperature fallback list: decode at temperatures[0], retry at the next
     * one while the result fails the thresholds below. */
    float temperatures[SHRUTI_MAX_TEMPERATURES];
    int n_temperatures;

    int beam_size;               /* <= 1: greedy; used at temperature 0 only */
    float patience;              /* beam search: stop after round(beam*patience) */
    float length_penalty;        /* < 0: none (rank by sum_logprob / length) */
    int best_of;                 /* samples per window at temperature > 0 (<= 1: one) */
    int sample_len;              /* max tokens per window; 0 = n_text_ctx / 2 */

    const char *suppress_tokens; /* comma-separated ids; "-1" = non-speech list; "" none */
    bool suppress_blank;
    bool without_timestamps;
    float max_initial_timestamp; /* seconds; < 0: no limit */

    const char *initial_prompt;  /* text prompt for the first window, or NULL */
    bool condition_on_previous_text;

    /* Thresholds; NAN disables each. */
    float compression_ratio_threshold;
    float logprob_threshold;
    float no_speech_threshold;

    const char *clip_timestamps; /* "start,end,..." seconds; NULL or "0" = whole file */

    uint64_t seed;               /* sampling at temperature > 0 is reproducible */
    /* > 1: batched windows, as faster-whisper's batched pipeline: the audio
     * is cut into consecutive 30 s windows, each decoded on its own (the
     * first temperature, which must be 0, greedy whatever beam_size says,
     * no previous-text conditioning, the
     * initial prompt on every window), up to batch_size (at most 64) of
     * them at once on the GPU; one at a time on the CPU, with the same
     * results. 0 or 1: the reference's sequential long-form transcription. */
    int batch_size;

    shruti_progress_callback progress_callback;
    void *progress_user_data;
    shruti_segment_callback segment_callback;
    void *segment_user_data;
    shruti_abort_callback abort_callback;
    void *abort_user_data;
} shruti_params;

/* The reference transcribe()'s defaults: greedy, temperatures 0,0.2..1.0,
 * thresholds 2.4 / -1.0 / 0.6, suppress "-1", timestamps on. */
SHRUTI_API shruti_params shruti_default_params(void);

/* ---------------------------------------------------------- transcription */

/* Transcribes a whole recording (16 kHz mono float). Results replace the
 * context's previous ones. Returns 0 or a negative status. */
SHRUTI_API int shruti_transcribe(shruti_context *ctx, const float *pcm, size_t n_samples,
                                 const shruti_params *params);

/* Same from a log-mel spectrogram (n_mels x n_frames, row-major, already
 * including the reference's 30 s of padding frames at the end). */
SHRUTI_API int shruti_transcribe_mel(shruti_context *ctx, const float *mel, int n_mels,
                                     int n_frames, const shruti_params *params);

/* Results of the last transcription; valid until the next one or free. */
struct shruti_segment {
    int id;
    int seek;                  /* window start, in 10 ms mel frames */
    double start, end;         /* seconds */
    const char *text;          /* UTF-8 */
    const int32_t *tokens;     /* including timestamp tokens */
    int n_tokens;
    float temperature;
    double avg_logprob;
    double compression_ratio;
    double no_speech_prob;
};

SHRUTI_API int shruti_n_segments(const shruti_context *ctx);
SHRUTI_API const shruti_segment *shruti_get_segment(const shruti_context *ctx, int i);
/* The whole text (all segments' tokens decoded together). */
SHRUTI_API const char *shruti_full_text(const shruti_context *ctx);
/* The language used ("en"...). */
SHRUTI_API const char *shruti_full_language(const shruti_context *ctx);
/* Seconds of audio content in the last transcription. */
SHRUTI_API double shruti_full_duration(const shruti_context *ctx);

/* --------------------------------------------------- one window: decode() */

/* The reference decode() of one 30 s window (n_mels x 3000 log-mel):
 * tokens exclude the initial ones; text is stripped. */
typedef struct {
    const int32_t *tokens;
    int n_tokens;
    const char *text;
    const char *language;
    double language_prob;      /* probability of language (detected) or NAN */
    double avg_logprob;
    double no_speech_prob;
    double compression_ratio;
    float temperature;
} shruti_decoding;

/* Uses params' task, language, beam_size, patience, length_penalty,
 * best_of, sample_len, suppress settings, timestamps, temperatures[0] and
 * initial_prompt (as decode()'s prompt). The result lives until the next
 * call on ctx. Returns 0 or a negative status. */
SHRUTI_API int shruti_decode_mel(shruti_context *ctx, const float *mel_window,
                                 const shruti_params *params, shruti_decoding *out);

/* Language detection on one window: fills probs[n_languages] (may be NULL)
 * and returns the index of the most likely language, or a negative status. */
SHRUTI_API int shruti_detect_language_mel(shruti_context *ctx, const float *mel_window,
                                          float *probs);

/* Language of a recording, detected on the first 30 s window that holds
 * speech (no_speech probability at most no_speech_threshold) rather than
 * on leading silence; the first window when none does. Fills probs
 * [n_languages] (may be NULL) and *window_start_s (may be NULL); returns
 * the language index or a negative status. Multilingual models only. */
SHRUTI_API int shruti_detect_language_speech(shruti_context *ctx, const float *pcm,
                                             size_t n_samples, float no_speech_threshold,
                                             float *probs, double *window_start_s);

/* ----------------------------------------------------------------- tokens */

/* The bytes of one text token (not necessarily UTF-8 on their own), NULL
 * when out of range; special and timestamp tokens give "". The pointer
 * lives as long as the model. */
SHRUTI_API const char *shruti_token_text(const shruti_model *model, int token, size_t *len);

/* Encodes text with the model's byte-level BPE. Writes at most max tokens;
 * returns the number needed (may exceed max) or a negative status. */
SHRUTI_API int shruti_tokenize(const shruti_model *model, const char *text, int32_t *tokens,
                               int max);

/* Log-mel spectrogram of PCM as the reference computes it with the given
 * padding in samples: *mel (malloc'd, n_mels x *n_frames) on success. */
SHRUTI_API int shruti_log_mel(const shruti_model *model, const float *pcm, size_t n_samples,
                              size_t padding, float **mel, int *n_frames, shruti_error *err);

SHRUTI_API const char *shruti_version(void);

#ifdef __cplusplus
}
#endif

#endif /* SHRUTI_H */
