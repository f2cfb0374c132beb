/* test_api.c - the public API as a library user meets it: two contexts
 * working side by side in two threads, callbacks (progress, new segments,
 * abort), reproducible sampling with best-of and temperature fallback,
 * parameter validation, boundary lengths of audio, and batched windows. */
#include <math.h>
#include <pthread.h>

#include "shruti.h"
#include "test_util.h"

typedef struct {
    shruti_model *model;
    const float *pcm;
    size_t n;
    char text[4096];
    int status;
} worker_job;

static void *transcribe_worker(void *arg) {
    worker_job *j = arg;
    shruti_error err;
    shruti_context *ctx = shruti_context_new(j->model, 1, &err);
    shruti_params p = shruti_default_params();
    p.language = "en";
    j->status = ctx ? shruti_transcribe(ctx, j->pcm, j->n, &p) : -1;
    if (ctx) snprintf(j->text, sizeof j->text, "%s", shruti_full_text(ctx));
    shruti_context_free(ctx);
    return NULL;
}

static void check_two_contexts(shruti_model *a, shruti_model *b, const float *pcm, size_t n) {
    worker_job solo = {a, pcm, n, "", 0};
    transcribe_worker(&solo);
    worker_job jobs[3] = {{a, pcm, n, "", 0}, {a, pcm, n, "", 0}, {b, pcm, n, "", 0}};
    pthread_t t[3];
    for (int i = 0; i < 3; i++) pthread_create(&t[i], NULL, transcribe_worker, &jobs[i]);
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < 2; i++) {
        CHECK(jobs[i].status == 0, "thread %d failed", i);
        CHECK(strcmp(jobs[i].text, solo.text) == 0, "thread %d: '%s' vs '%s'", i, jobs[i].text,
              solo.text);
    }
    CHECK(jobs[2].status == 0, "second model in parallel");
}

typedef struct {
    int n_progress, last_percent, n_segments, monotonic;
} callback_log;

static void on_progress(shruti_context *ctx, int percent, void *user) {
    (void)ctx;
    callback_log *l = user;
    l->monotonic &= percent >= l->last_percent;
    l->last_percent = percent;
    l->n_progress++;
}

static void on_segment(shruti_context *ctx, int first, int n, void *user) {
    callback_log *l = user;
    CHECK(first == l->n_segments, "segments arrive in order");
    CHECK(shruti_get_segment(ctx, first + n - 1) != NULL, "new segments readable");
    l->n_segments += n;
}

static int n_abort_polls;
static bool abort_after_10(void *user) {
    (void)user;
    return ++n_abort_polls > 10;
}

static void check_callbacks(shruti_context *ctx, const float *pcm, size_t n) {
    callback_log log = {0, 0, 0, 1};
    shruti_params p = shruti_default_params();
    p.language = "en";
    p.progress_callback = on_progress;
    p.progress_user_data = &log;
    p.segment_callback = on_segment;
    p.segment_user_data = &log;
    CHECK(shruti_transcribe(ctx, pcm, n, &p) == 0, "%s", shruti_context_error(ctx));
    CHECK(log.n_progress > 1 && log.last_percent == 100 && log.monotonic, "progress %d calls, %d%%",
          log.n_progress, log.last_percent);
    CHECK(log.n_segments == shruti_n_segments(ctx), "segment callback saw %d of %d",
          log.n_segments, shruti_n_segments(ctx));
    CHECK(fabs(shruti_full_duration(ctx) - n / 16000.0) < 0.01, "duration %g",
          shruti_full_duration(ctx));
    p.abort_callback = abort_after_10;
    CHECK(shruti_transcribe(ctx, pcm, n, &p) == SHRUTI_ERR_ABORTED, "abort");
    CHECK(shruti_context_error(ctx)[0] != '\0', "abort has a message");
}

static char *transcript(shruti_context *ctx, const float *pcm, size_t n, shruti_params *p) {
    int r = shruti_transcribe(ctx, pcm, n, p);
    CHECK(r == 0, "%s", shruti_context_error(ctx));
    return strdup(r == 0 ? shruti_full_text(ctx) : "");
}

static void check_sampling(shruti_context *ctx, const float *pcm, size_t n) {
    shruti_params p = shruti_default_params();
    p.language = "en";
    p.temperatures[0] = 0.7f;
    p.n_temperatures = 1;
    p.best_of = 3;
    p.seed = 7;
    char *a = transcript(ctx, pcm, n, &p), *b = transcript(ctx, pcm, n, &p);
    CHECK(strcmp(a, b) == 0, "same seed, same text");
    int temps_seen = 0;
    /* the fallback runs: with an impossible log-prob threshold every window
     * ends at the last temperature */
    shruti_params f = shruti_default_params();
    f.language = "en";
    f.logprob_threshold = 0.5f;
    f.no_speech_threshold = NAN;
    char *c = transcript(ctx, pcm, n, &f);
    for (int i = 0; i < shruti_n_segments(ctx); i++)
        temps_seen += shruti_get_segment(ctx, i)->temperature == 1.0f;
    CHECK(shruti_n_segments(ctx) > 0 && temps_seen == shruti_n_segments(ctx),
          "fallback reached T=1 on %d of %d segments", temps_seen, shruti_n_segments(ctx));
    free(a), free(b), free(c);
}

static void check_validation(shruti_context *ctx, const float *pcm, size_t n) {
    shruti_params p = shruti_default_params();
    p.language = "klingon";
    CHECK(shruti_transcribe(ctx, pcm, n, &p) == SHRUTI_ERR_INVALID_ARG, "unknown language");
    CHECK(strstr(shruti_context_error(ctx), "klingon") != NULL, "message names it");
    p = shruti_default_params();
    p.suppress_tokens = "1,x";
    CHECK(shruti_transcribe(ctx, pcm, n, &p) == SHRUTI_ERR_INVALID_ARG, "bad suppress list");
    p = shruti_default_params();
    p.suppress_tokens = "999999";
    CHECK(shruti_transcribe(ctx, pcm, n, &p) == SHRUTI_ERR_INVALID_ARG, "suppress id range");
    p = shruti_default_params();
    p.clip_timestamps = "5,abc";
    CHECK(shruti_transcribe(ctx, pcm, n, &p) == SHRUTI_ERR_INVALID_ARG, "bad clips");
    p = shruti_default_params();
    p.beam_size = 100;
    CHECK(shruti_transcribe(ctx, pcm, n, &p) == SHRUTI_ERR_INVALID_ARG, "beam too large");
    CHECK(shruti_transcribe(ctx, NULL, n, &p) == SHRUTI_ERR_INVALID_ARG, "NULL pcm");
    float mel[10];
    CHECK(shruti_transcribe_mel(ctx, mel, 80, 10, &p) == SHRUTI_ERR_INVALID_ARG, "short mel");
}

static void check_lengths(shruti_context *ctx) {
    /* one sample, exactly 30 s, 30 s + 1 sample, silence */
    size_t sizes[] = {1, 480000, 480001};
    for (size_t i = 0; i < 3; i++) {
        float *pcm = calloc(sizes[i], sizeof *pcm);
        for (size_t k = 0; k < sizes[i]; k++) pcm[k] = 0.01f * (float)((k * 7919) % 13) / 13.0f;
        shruti_params p = shruti_default_params();
        p.language = "en";
        CHECK(shruti_transcribe(ctx, pcm, sizes[i], &p) == 0, "%zu samples: %s", sizes[i],
              shruti_context_error(ctx));
        free(pcm);
    }
}

/* Batched windows (batch_size > 1) on the CPU, one window at a time: three
 * 30 s windows holding the same 12 s of speech decode to the same tokens,
 * each window's times offset by its start; a first temperature above 0 is
 * refused; the progress reaches 100. */
static void check_batched_windows(shruti_context *ctx, const float *speech) {
    const size_t win = 30 * 16000, len = 12 * 16000;
    float *pcm = calloc(3 * win, sizeof *pcm);
    for (int w = 0; w < 3; w++) memcpy(pcm + w * win, speech, len * sizeof *pcm);
    shruti_params p = shruti_default_params();
    p.language = "en";
    p.batch_size = 8;
    p.n_temperatures = 1;
    p.temperatures[0] = 0.0f;
    CHECK(shruti_transcribe(ctx, pcm, 3 * win, &p) == 0, "batched: %s", shruti_context_error(ctx));
    int n = shruti_n_segments(ctx), per = n / 3;
    CHECK(n > 0 && n % 3 == 0, "batched: %d segments, not a multiple of 3 windows", n);
    for (int i = 0; i < per && n % 3 == 0; i++)
        for (int w = 1; w < 3; w++) {
            const shruti_segment *a = shruti_get_segment(ctx, i), *b = shruti_get_segment(ctx, w * per + i);
            CHECK(a->n_tokens == b->n_tokens &&
                      memcmp(a->tokens, b->tokens, sizeof *a->tokens * (size_t)a->n_tokens) == 0,
                  "batched: window %d segment %d differs from window 0's", w, i);
            CHECK(fabs(b->start - a->start - 30.0 * w) < 1e-6, "batched: window %d starts at %g", w,
                  b->start);
        }
    printf("batched windows on the CPU: 3 windows, %d segments each, identical\n", per);
    p.temperatures[0] = 0.2f;
    CHECK(shruti_transcribe(ctx, pcm, 3 * win, &p) == SHRUTI_ERR_INVALID_ARG,
          "batched windows need a first temperature of 0");
    free(pcm);
}

int main(void) {
    t_require_testdata();
    shruti_error err;
    shruti_model *m = shruti_model_load(t_path("models/%s", "ggml-mini.bin"), &err);
    shruti_model *en = shruti_model_load(t_path("models/%s", "ggml-mini.en.bin"), &err);
    float *pcm;
    size_t n;
    CHECK(shruti_audio_load(t_path("audio/%s", "longform.wav"), &pcm, &n, &err) == 0, "audio");
    shruti_context *ctx = shruti_context_new(m, 2, &err);
    check_two_contexts(m, en, pcm, n);
    check_callbacks(ctx, pcm, n);
    check_sampling(ctx, pcm, 16000 * 12);   /* 12 s keeps the fallback quick */
    check_validation(ctx, pcm, n);
    check_lengths(ctx);
    check_batched_windows(ctx, pcm);
    CHECK(strcmp(shruti_model_type(m), "custom") == 0, "type name");
    shruti_context_free(ctx);
    shruti_context_free(NULL);
    shruti_model_free(NULL);
    free(pcm);
    shruti_model_free(m);
    shruti_model_free(en);
    return t_finish("test_api");
}
