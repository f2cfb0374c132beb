/* engine.c - models, routing and the worker pool of the service.
 *
 * Each worker owns one context per loaded model; models are loaded once
 * and shared. Tasks wait in two bounded queues: short requests first, and
 * long work (long audio, async jobs) only while fewer than workers - 1
 * workers are busy with long work, so a short request always finds a
 * worker soon even when 10-minute files are being transcribed. */
#include "common/clock.h"
#include "server/engine.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "output/output_formats.h"
#include "server/log.h"

struct sv_task {
    sv_request req;
    bool long_work;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    int refs;                    /* the submitter and the engine */
    atomic_int cancel;
    char *json;
    char error[512];
    int http_status;
    void (*on_progress)(void *user, double fraction);
    void *user;
    sv_task *next;
};

struct sv_engine {
    sv_config cfg;
    shruti_model *models[N_SLOTS];
    char slot_name[N_SLOTS][512];
    pthread_t *threads;
    int n_threads_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    sv_task *queue_head[2], *queue_tail[2];   /* [0] short, [1] long */
    int queued, running, running_long;
    double queued_audio_s;       /* waiting audio: bounded, as its PCM is in memory */
    bool stopping;
    uint64_t ok, failed;
    double audio_s, busy_s;
    uint64_t device_fallbacks;   /* contexts moved from the GPU to the CPU */
    char fallback_note[800];
};


/* ---------------------------------------------------------------- tasks */

static void task_unref(sv_task *t) {
    pthread_mutex_lock(&t->mu);
    int left = --t->refs;
    pthread_mutex_unlock(&t->mu);
    if (left > 0) return;
    free(t->req.pcm);
    free(t->json);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t);
}

static void task_finish(sv_task *t, int http_status, const char *error, char *json) {
    pthread_mutex_lock(&t->mu);
    t->http_status = http_status;
    if (error) snprintf(t->error, sizeof t->error, "%s", error);
    t->json = json;
    t->done = 1;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

bool sv_task_wait(sv_task *t, double timeout_s) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    double end = deadline.tv_sec + deadline.tv_nsec * 1e-9 + timeout_s;
    deadline.tv_sec = (time_t)end;
    deadline.tv_nsec = (long)((end - (double)deadline.tv_sec) * 1e9);
    pthread_mutex_lock(&t->mu);
    int r = 0;
    while (!t->done && r != ETIMEDOUT) r = pthread_cond_timedwait(&t->cv, &t->mu, &deadline);
    bool done = t->done;
    pthread_mutex_unlock(&t->mu);
    return done;
}

void sv_task_cancel(sv_task *t) { atomic_store(&t->cancel, 1); }

int sv_task_result(sv_task *t, const char **json, const char **error, int *http_status) {
    *json = t->json;
    *error = t->error;
    *http_status = t->http_status;
    return t->json ? 0 : -1;
}

void sv_task_release(sv_task *t) {
    if (t) task_unref(t);
}

/* -------------------------------------------------------------- routing */

typedef struct {
    sv_slot slot;
    char language[16];
    char reason[160];
    double language_prob;
} route;

static bool loaded(const sv_engine *e, sv_slot s) { return e->models[s] != NULL; }

/* Decides which model hears the audio. An English-only model never
 * receives non-English audio: without a language, the multilingual model
 * detects it on the first window with speech. */
static int choose_route(sv_engine *e, shruti_context *ctx[N_SLOTS], sv_task *t, route *r,
                        char *err, size_t err_size) {
    const sv_request *q = &t->req;
    memset(r, 0, sizeof *r);
    r->language_prob = NAN;
    if (q->model[0]) {
        bool en = strcmp(q->model, "en") == 0 || strcmp(q->model, e->slot_name[SLOT_EN]) == 0;
        r->slot = en && loaded(e, SLOT_EN) ? SLOT_EN : SLOT_MULTI;
        snprintf(r->reason, sizeof r->reason, "model '%s' requested", q->model);
        snprintf(r->language, sizeof r->language, "%s", q->language[0] ? q->language : "");
        if (r->slot == SLOT_EN && q->language[0] && strcmp(q->language, "en") != 0) {
            snprintf(err, err_size, "model '%s' is English-only; language '%s' needs the "
                     "multilingual model", q->model, q->language);
            return 400;
        }
        if (r->slot == SLOT_MULTI && !loaded(e, SLOT_MULTI)) r->slot = SLOT_EN;
        return 0;
    }
    if (q->language[0]) {
        bool en = strcmp(q->language, "en") == 0;
        r->slot = en && loaded(e, SLOT_EN) ? SLOT_EN : SLOT_MULTI;
        snprintf(r->language, sizeof r->language, "%s", q->language);
        snprintf(r->reason, sizeof r->reason, "language '%s' given", q->language);
        if (r->slot == SLOT_MULTI && !loaded(e, SLOT_MULTI)) {
            snprintf(err, err_size, "no multilingual model is configured for language '%s'",
                     q->language);
            return 400;
        }
        return 0;
    }
    if (!loaded(e, SLOT_MULTI)) {
        r->slot = SLOT_EN;
        snprintf(r->language, sizeof r->language, "en");
        snprintf(r->reason, sizeof r->reason, "no multilingual model: assumed English");
        return 0;
    }
    float probs[128];
    double at = 0;
    int lang = shruti_detect_language_speech(ctx[SLOT_MULTI], q->pcm, q->n_samples, 0.6f, probs,
                                             &at);
    if (lang < 0) {
        snprintf(err, err_size, "language detection failed: %s",
                 shruti_context_error(ctx[SLOT_MULTI]));
        return 500;
    }
    const char *code = shruti_language_code(e->models[SLOT_MULTI], lang);
    snprintf(r->language, sizeof r->language, "%s", code);
    r->language_prob = probs[lang];
    r->slot = strcmp(code, "en") == 0 && loaded(e, SLOT_EN) ? SLOT_EN : SLOT_MULTI;
    snprintf(r->reason, sizeof r->reason, "detected '%s' (p=%.3f) at %.0f s by the multilingual "
             "model", code, probs[lang], at);
    return 0;
}

/* ------------------------------------------------------------- results */

static cJSON *result_json(sv_engine *e, shruti_context *ctx, const route *r, const sv_task *t) {
    cJSON *o = output_context_json(ctx);
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "task", t->req.params.task == SHRUTI_TASK_TRANSLATE ? "translate"
                                                                                   : "transcribe");
    cJSON_AddStringToObject(o, "model", e->slot_name[r->slot]);
    cJSON *rt = cJSON_AddObjectToObject(o, "routing");
    cJSON_AddStringToObject(rt, "slot", r->slot == SLOT_EN ? "en" : "multi");
    cJSON_AddStringToObject(rt, "model", e->slot_name[r->slot]);
    cJSON_AddStringToObject(rt, "reason", r->reason);
    if (!isnan(r->language_prob)) cJSON_AddNumberToObject(rt, "language_probability", r->language_prob);
    return o;
}

/* ------------------------------------------------------------- workers */

typedef struct {
    sv_engine *e;
    int index;
} worker_arg;

static void on_progress(shruti_context *ctx, int percent, void *user) {
    (void)ctx;
    sv_task *t = user;
    if (t->on_progress) t->on_progress(t->user, percent / 100.0);
}

static bool on_abort(void *user) { return atomic_load(&((sv_task *)user)->cancel) != 0; }

/* A context whose GPU failed now runs on the CPU: counted and told, once
 * per context, never silent. */
static void note_device_move(sv_engine *e, const shruti_context *ctx, const shruti_model *m) {
    if (strcmp(shruti_context_device(ctx), shruti_model_device(m)) == 0) return;
    pthread_mutex_lock(&e->mu);
    bool first = strcmp(e->fallback_note, shruti_context_device_note(ctx)) != 0;
    if (first) {
        e->device_fallbacks++;
        snprintf(e->fallback_note, sizeof e->fallback_note, "%s", shruti_context_device_note(ctx));
    }
    pthread_mutex_unlock(&e->mu);
    char safe[800];
    if (first)
        sv_log("{\"event\":\"device_fallback\",\"reason\":\"%s\"}",
               sv_safe_text(safe, sizeof safe, shruti_context_device_note(ctx)));
}

static void run_task(sv_engine *e, shruti_context *ctx[N_SLOTS], sv_task *t) {
    char err[512] = "";
    route r;
    if (atomic_load(&t->cancel)) {
        task_finish(t, 499, "cancelled", NULL);
        return;
    }
    int status = choose_route(e, ctx, t, &r, err, sizeof err);
    if (status) {
        task_finish(t, status, err, NULL);
        return;
    }
    shruti_params p = t->req.params;
    p.language = r.language[0] ? r.language : NULL;
    p.progress_callback = on_progress;
    p.progress_user_data = t;
    p.abort_callback = on_abort;
    p.abort_user_data = t;
    double t0 = sh_now_s();
    int rc = shruti_transcribe(ctx[r.slot], t->req.pcm, t->req.n_samples, &p);
    double busy = sh_now_s() - t0;
    note_device_move(e, ctx[r.slot], e->models[r.slot]);
    if (rc < 0) {
        int code = rc == SHRUTI_ERR_ABORTED ? 499 : rc == SHRUTI_ERR_INVALID_ARG ? 400 : 500;
        char safe[512];
        sv_log("{\"event\":\"transcription_failed\",\"slot\":\"%s\",\"error\":\"%s\"}",
               r.slot == SLOT_EN ? "en" : "multi",
               sv_safe_text(safe, sizeof safe, shruti_context_error(ctx[r.slot])));
        task_finish(t, code, shruti_context_error(ctx[r.slot]), NULL);
        return;
    }
    cJSON *o = result_json(e, ctx[r.slot], &r, t);
    char *json = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    sv_log("{\"event\":\"routed\",\"slot\":\"%s\",\"model\":\"%s\",\"reason\":\"%s\","
           "\"audio_s\":%.2f,\"rtf\":%.3f}", r.slot == SLOT_EN ? "en" : "multi",
           e->slot_name[r.slot], r.reason, t->req.n_samples / 16000.0,
           busy / (t->req.n_samples / 16000.0 + 1e-9));
    pthread_mutex_lock(&e->mu);
    e->audio_s += t->req.n_samples / 16000.0;
    e->busy_s += busy;
    pthread_mutex_unlock(&e->mu);
    task_finish(t, json ? 200 : 500, json ? NULL : "out of memory", json);
}

static sv_task *next_task(sv_engine *e) {
    int long_limit = e->cfg.workers > 1 ? e->cfg.workers - 1 : 1;
    for (;;) {
        if (e->queue_head[0]) {
            sv_task *t = e->queue_head[0];
            e->queue_head[0] = t->next;
            if (!e->queue_head[0]) e->queue_tail[0] = NULL;
            return t;
        }
        if (e->queue_head[1] && e->running_long < long_limit) {
            sv_task *t = e->queue_head[1];
            e->queue_head[1] = t->next;
            if (!e->queue_head[1]) e->queue_tail[1] = NULL;
            return t;
        }
        if (e->stopping) return NULL;
        pthread_cond_wait(&e->cv, &e->mu);
    }
}

static void *worker_main(void *raw) {
    worker_arg *wa = raw;
    sv_engine *e = wa->e;
    free(wa);
    shruti_context *ctx[N_SLOTS] = {NULL, NULL};
    for (int s = 0; s < N_SLOTS; s++) {
        shruti_error err;
        char safe[512];
        if (e->models[s] && !(ctx[s] = shruti_context_new(e->models[s], e->cfg.threads_per_worker, &err)))
            sv_log("{\"event\":\"context_failed\",\"error\":\"%s\"}",
                   sv_safe_text(safe, sizeof safe, err.message));
    }
    pthread_mutex_lock(&e->mu);
    for (;;) {
        sv_task *t = next_task(e);
        if (!t) break;
        e->queued--;
        e->queued_audio_s -= t->req.n_samples / 16000.0;
        e->running++;
        e->running_long += t->long_work;
        pthread_mutex_unlock(&e->mu);
        run_task(e, ctx, t);
        pthread_mutex_lock(&e->mu);
        e->running--;
        e->running_long -= t->long_work;
        if (t->http_status == 200) e->ok++;
        else e->failed++;
        pthread_cond_broadcast(&e->cv);   /* a long slot may have opened */
        pthread_mutex_unlock(&e->mu);
        task_unref(t);
        pthread_mutex_lock(&e->mu);
    }
    pthread_mutex_unlock(&e->mu);
    for (int s = 0; s < N_SLOTS; s++) shruti_context_free(ctx[s]);
    return NULL;
}

/* ------------------------------------------------------------ lifecycle */

static int load_slot(sv_engine *e, sv_slot s, const char *name) {
    if (!name[0]) return 0;
    char path[4300];
    shruti_error err;
    snprintf(e->slot_name[s], sizeof e->slot_name[s], "%s", name);
    if (shruti_model_resolve(name, path, sizeof path, NULL, NULL, &err) < 0) {
        fprintf(stderr, "shruti serve: %s\nshruti serve: for the service, pass local files with "
                        "--%s PATH (or %s=PATH)\n", err.message,
                s == SLOT_EN ? "model-en" : "model-multi",
                s == SLOT_EN ? "SHRUTI_MODEL_EN" : "SHRUTI_MODEL_MULTI");
        return -1;
    }
    double t0 = sh_now_s();
    char safe[800];
    shruti_model_params mp = shruti_model_default_params();
    mp.compute_type = e->cfg.compute_type;
    mp.device = e->cfg.device;
    mp.device_index = e->cfg.device_index;
    if (!(e->models[s] = shruti_model_load_with_params(path, &mp, &err))) {
        fprintf(stderr, "shruti serve: cannot load model '%s': %s\n", name, err.message);
        return -1;
    }
    if (s == SLOT_MULTI && !shruti_model_is_multilingual(e->models[s]))
        fprintf(stderr, "shruti serve: warning: the multilingual slot holds an English-only "
                        "model (%s)\n", name);
    sv_log("{\"event\":\"model_loaded\",\"slot\":\"%s\",\"model\":\"%s\",\"path\":\"%s\","
           "\"load_ms\":%.0f,\"device\":\"%s\",\"compute_type\":\"%s\",\"device_reason\":\"%s\"}",
           s == SLOT_EN ? "en" : "multi", name, path, (sh_now_s() - t0) * 1e3,
           shruti_model_device(e->models[s]), shruti_model_compute_type(e->models[s]),
           sv_safe_text(safe, sizeof safe, shruti_model_device_note(e->models[s])));
    return 0;
}

sv_engine *sv_engine_start(const sv_config *c) {
    sv_engine *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->cfg = *c;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    if (load_slot(e, SLOT_EN, c->model_en) < 0 || load_slot(e, SLOT_MULTI, c->model_multi) < 0) {
        sv_engine_stop(e);
        return NULL;
    }
    e->threads = calloc((size_t)c->workers, sizeof *e->threads);
    for (int i = 0; e->threads && i < c->workers; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa) break;
        wa->e = e;
        wa->index = i;
        if (pthread_create(&e->threads[i], NULL, worker_main, wa) != 0) {
            free(wa);
            break;
        }
        e->n_threads_started++;
    }
    if (e->n_threads_started != c->workers) {
        fprintf(stderr, "shruti serve: cannot start the workers\n");
        sv_engine_stop(e);
        return NULL;
    }
    return e;
}

void sv_engine_stop(sv_engine *e) {
    if (!e) return;
    pthread_mutex_lock(&e->mu);
    e->stopping = true;
    /* waiting tasks are answered 503; running ones finish */
    for (int q = 0; q < 2; q++) {
        while (e->queue_head[q]) {
            sv_task *t = e->queue_head[q];
            e->queue_head[q] = t->next;
            task_finish(t, 503, "the server is shutting down", NULL);
            task_unref(t);
        }
        e->queue_tail[q] = NULL;
    }
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    for (int i = 0; i < e->n_threads_started; i++) pthread_join(e->threads[i], NULL);
    free(e->threads);
    for (int s = 0; s < N_SLOTS; s++) shruti_model_free(e->models[s]);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    free(e);
}

sv_task *sv_engine_submit(sv_engine *e, sv_request *req, bool long_work,
                          void (*progress)(void *user, double fraction), void *user) {
    pthread_mutex_lock(&e->mu);
    double seconds = req->n_samples / 16000.0;
    if (e->stopping || e->queued >= e->cfg.queue_size ||
        (e->queued > 0 && e->queued_audio_s + seconds > 2 * e->cfg.max_audio_seconds)) {
        pthread_mutex_unlock(&e->mu);
        return NULL;
    }
    sv_task *t = calloc(1, sizeof *t);
    if (!t) {
        pthread_mutex_unlock(&e->mu);
        return NULL;
    }
    t->req = *req;
    /* params' strings point into the request's own storage */
    t->req.params.language = NULL;
    t->req.params.initial_prompt = req->prompt[0] ? t->req.prompt : NULL;
    req->pcm = NULL;   /* the task owns the audio now */
    t->long_work = long_work;
    t->refs = 2;
    t->on_progress = progress;
    t->user = user;
    atomic_init(&t->cancel, 0);
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    int q = long_work ? 1 : 0;
    if (e->queue_tail[q]) e->queue_tail[q]->next = t;
    else e->queue_head[q] = t;
    e->queue_tail[q] = t;
    e->queued++;
    e->queued_audio_s += seconds;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return t;
}

void sv_engine_get_status(sv_engine *e, sv_engine_status *s) {
    memset(s, 0, sizeof *s);
    pthread_mutex_lock(&e->mu);
    s->queued = e->queued;
    s->running = e->running;
    s->workers = e->cfg.workers;
    s->requests_ok = e->ok;
    s->requests_failed = e->failed;
    s->audio_seconds = e->audio_s;
    s->processing_seconds = e->busy_s;
    pthread_mutex_unlock(&e->mu);
    s->ready = true;
    for (int i = 0; i < N_SLOTS; i++) {
        snprintf(s->slot_model[i], sizeof s->slot_model[i], "%s", e->slot_name[i]);
        s->slot_loaded[i] = e->models[i] != NULL;
        snprintf(s->slot_device[i], sizeof s->slot_device[i], "%s",
                 e->models[i] ? shruti_model_device(e->models[i]) : "");
        snprintf(s->slot_device_note[i], sizeof s->slot_device_note[i], "%s",
                 e->models[i] ? shruti_model_device_note(e->models[i]) : "");
    }
    /* the multilingual slot's model speaks for the service (both load alike) */
    const shruti_model *any = e->models[SLOT_MULTI] ? e->models[SLOT_MULTI] : e->models[SLOT_EN];
    snprintf(s->device, sizeof s->device, "%s", any ? shruti_model_device(any) : "cpu");
    snprintf(s->compute_type, sizeof s->compute_type, "%s",
             any ? shruti_model_compute_type(any) : "float32");
    pthread_mutex_lock(&e->mu);
    s->device_fallbacks = e->device_fallbacks;
    snprintf(s->device_reason, sizeof s->device_reason, "%s",
             e->device_fallbacks ? e->fallback_note : any ? shruti_model_device_note(any) : "");
    pthread_mutex_unlock(&e->mu);
}
