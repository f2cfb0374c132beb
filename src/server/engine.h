/* engine.h - the service's transcription engine: the two model slots
 * (English and multilingual), language routing, and a bounded worker
 * pool that runs short requests ahead of long work. */
#ifndef SHRUTI_SERVER_ENGINE_H
#define SHRUTI_SERVER_ENGINE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "server/server.h"

typedef enum { SLOT_EN = 0, SLOT_MULTI = 1, N_SLOTS = 2 } sv_slot;

/* What a request asks for, already validated. */
typedef struct {
    shruti_params params;        /* language NULL = detect; strings point into the storage below */
    char language[16];
    char prompt[4096];
    char model[64];              /* "" = route; else a slot's configured name or "en"/"multi" */
    float *pcm;                  /* owned by the task */
    size_t n_samples;
} sv_request;

/* The outcome: a verbose_json-like cJSON document built by the worker. */
typedef struct sv_task sv_task;

typedef struct sv_engine sv_engine;

/* Loads the models (names are downloaded on first use) and starts the
 * workers. NULL after printing the reason. */
sv_engine *sv_engine_start(const sv_config *c);
void sv_engine_stop(sv_engine *e);   /* finishes running tasks */

/* Submits a request (the engine takes pcm). long_work tasks use at most
 * workers - 1 workers so that short ones always find one. Returns NULL
 * when the queue is full: queue_size tasks, or twice max_audio_seconds of
 * waiting audio (its PCM is held in memory). */
sv_task *sv_engine_submit(sv_engine *e, sv_request *req, bool long_work,
                          void (*on_progress)(void *user, double fraction), void *user);

/* Waits up to timeout_s for the task; true when finished. */
bool sv_task_wait(sv_task *t, double timeout_s);
/* Asks a queued or running task to stop. */
void sv_task_cancel(sv_task *t);
/* After completion: 0 and a JSON result (owned by the task), or an HTTP
 * status and message. */
int sv_task_result(sv_task *t, const char **json, const char **error, int *http_status);
/* Drops the caller's reference (the task is freed when the worker is done too). */
void sv_task_release(sv_task *t);

/* Status for /health, /ready, /v1/models and /metrics. */
typedef struct {
    bool ready;
    int queued, running, workers;
    char device[16], compute_type[24], device_reason[800];
    uint64_t device_fallbacks;   /* transcriptions moved from the GPU to the CPU */
    char slot_model[N_SLOTS][512];
    bool slot_loaded[N_SLOTS];
    char slot_device[N_SLOTS][8];            /* each slot's model: cuda or cpu */
    char slot_device_note[N_SLOTS][800];
    uint64_t requests_ok, requests_failed;
    double audio_seconds, processing_seconds;
} sv_engine_status;

void sv_engine_get_status(sv_engine *e, sv_engine_status *s);

/* The multilingual slot decides which model hears the audio; names the
 * slot chosen and why in route (for logs and verbose_json). */
#endif
