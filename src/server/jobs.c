/* jobs.c - async jobs in SQLite. A job row holds the uploaded file, the
 * request's fields, its status (queued, running, done, failed, cancelled),
 * progress and result. One runner thread takes the oldest queued job,
 * hands it to the engine as long work and records the outcome. A job found
 * 'running' at start-up was interrupted (crash, kill -9) and is queued
 * again, so no accepted job is lost. */
#include "server/jobs.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "server/log.h"
#include "server/request_fields.h"

struct sv_jobs {
    sqlite3 *db;
    sv_engine *engine;
    pthread_t runner;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop, started;
    char current_id[37];
    sv_task *current;
    double progress;
};

static const char SCHEMA[] =
    "PRAGMA journal_mode=WAL;"
    "CREATE TABLE IF NOT EXISTS jobs ("
    " id TEXT PRIMARY KEY, status TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL,"
    " params TEXT NOT NULL, audio BLOB, progress REAL NOT NULL DEFAULT 0,"
    " result TEXT, error TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX IF NOT EXISTS jobs_queue ON jobs(status, created);";

static double wall_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int exec_sql(sqlite3 *db, const char *sql) {
    char *msg = NULL;
    int r = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (r != SQLITE_OK) sv_log("{\"event\":\"sqlite_error\",\"error\":\"%s\"}", msg ? msg : "?");
    sqlite3_free(msg);
    return r == SQLITE_OK ? 0 : -1;
}

static void set_status(sv_jobs *j, const char *id, const char *status, const char *result,
                       const char *error) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(j->db, "UPDATE jobs SET status=?, updated=?, result=?, error=?, "
                           "progress=CASE WHEN ?='done' THEN 1 ELSE progress END, "
                           "audio=CASE WHEN ? IN ('done','failed','cancelled') THEN NULL "
                           "ELSE audio END WHERE id=?", -1, &st, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_text(st, 1, status, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 2, wall_s());
    if (result) sqlite3_bind_text(st, 3, result, -1, SQLITE_STATIC);
    if (error) sqlite3_bind_text(st, 4, error, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, status, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, status, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, id, -1, SQLITE_STATIC);
    sqlite3_step(st);
    sqlite3_finalize(st);
}

static void on_job_progress(void *user, double fraction) {
    sv_jobs *j = user;
    pthread_mutex_lock(&j->mu);
    j->progress = fraction;
    pthread_mutex_unlock(&j->mu);
}

/* Takes the oldest queued job: its id, audio and params (malloc'd). */
static int take_queued(sv_jobs *j, char id[37], void **audio, size_t *size, char **params) {
    sqlite3_stmt *st;
    int found = 0;
    if (sqlite3_prepare_v2(j->db, "SELECT id, audio, params FROM jobs WHERE status='queued' "
                           "ORDER BY created LIMIT 1", -1, &st, NULL) != SQLITE_OK)
        return 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        snprintf(id, 37, "%s", (const char *)sqlite3_column_text(st, 0));
        *size = (size_t)sqlite3_column_bytes(st, 1);
        *audio = malloc(*size ? *size : 1);
        if (*audio && *size) memcpy(*audio, sqlite3_column_blob(st, 1), *size);
        *params = strdup((const char *)sqlite3_column_text(st, 2));
        found = *audio && *params;
    }
    sqlite3_finalize(st);
    if (!found) return 0;
    /* claim it only if still queued: a cancel may have come in between */
    if (sqlite3_prepare_v2(j->db, "UPDATE jobs SET status='running', updated=? WHERE id=? AND "
                           "status='queued'", -1, &st, NULL) != SQLITE_OK)
        return 0;
    sqlite3_bind_double(st, 1, wall_s());
    sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
    int claimed = sqlite3_step(st) == SQLITE_DONE && sqlite3_changes(j->db) == 1;
    sqlite3_finalize(st);
    if (!claimed) {
        free(*audio), free(*params);
        *audio = NULL, *params = NULL;
    }
    return claimed;
}

static bool cancel_requested(sv_jobs *j, const char *id) {
    sqlite3_stmt *st;
    bool yes = false;
    if (sqlite3_prepare_v2(j->db, "SELECT cancel_requested FROM jobs WHERE id=?", -1, &st, NULL) ==
        SQLITE_OK) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        yes = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) != 0;
        sqlite3_finalize(st);
    }
    return yes;
}

static void run_job(sv_jobs *j, const char *id, void *audio, size_t size, const char *params) {
    sv_fields fields;
    sv_request req;
    char rf[16], msg[512];
    const char *param = NULL;
    if (sv_fields_from_json(params, &fields) < 0 ||
        sv_fields_to_request(&fields, false, &req, rf, sizeof rf, msg, sizeof msg, &param) < 0) {
        sv_fields_free(&fields);
        set_status(j, id, "failed", NULL, "bad job parameters");
        return;
    }
    sv_fields_free(&fields);
    shruti_error err;
    if (shruti_audio_load_memory(audio, size, &req.pcm, &req.n_samples, &err) < 0) {
        set_status(j, id, "failed", NULL, err.message);
        return;
    }
    sv_task *t = NULL;
    if (cancel_requested(j, id)) {
        free(req.pcm);
        set_status(j, id, "cancelled", NULL, NULL);
        return;
    }
    while (!(t = sv_engine_submit(j->engine, &req, true, on_job_progress, j))) {
        pthread_mutex_lock(&j->mu);
        bool stop = j->stop;
        pthread_mutex_unlock(&j->mu);
        if (stop) {
            free(req.pcm);
            return;
        }
        usleep(200000);   /* the queue is full: wait for room */
    }
    pthread_mutex_lock(&j->mu);
    j->current = t;
    snprintf(j->current_id, sizeof j->current_id, "%s", id);
    j->progress = 0;
    pthread_mutex_unlock(&j->mu);
    while (!sv_task_wait(t, 0.5)) {
        pthread_mutex_lock(&j->mu);
        double progress = j->progress;
        pthread_mutex_unlock(&j->mu);
        if (cancel_requested(j, id)) sv_task_cancel(t);
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(j->db, "UPDATE jobs SET progress=? WHERE id=?", -1, &st, NULL) ==
            SQLITE_OK) {
            sqlite3_bind_double(st, 1, progress);
            sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
            sqlite3_step(st);
            sqlite3_finalize(st);
        }
    }
    const char *json, *error;
    int status;
    sv_task_result(t, &json, &error, &status);
    pthread_mutex_lock(&j->mu);
    bool stopping = j->stop;
    j->current = NULL;
    j->current_id[0] = '\0';
    pthread_mutex_unlock(&j->mu);
    if (status == 200) set_status(j, id, "done", json, NULL);
    else if (status == 499 && stopping) set_status(j, id, "queued", NULL, NULL);   /* rerun */
    else if (status == 499) set_status(j, id, "cancelled", NULL, NULL);
    else set_status(j, id, "failed", NULL, error);
    sv_log("{\"event\":\"job_finished\",\"id\":\"%s\",\"status\":%d}", id, status);
    sv_task_release(t);
}

static void *runner_main(void *raw) {
    sv_jobs *j = raw;
    for (;;) {
        pthread_mutex_lock(&j->mu);
        bool stop = j->stop;
        pthread_mutex_unlock(&j->mu);
        if (stop) break;
        char id[37];
        void *audio = NULL;
        size_t size = 0;
        char *params = NULL;
        if (take_queued(j, id, &audio, &size, &params)) {
            run_job(j, id, audio, size, params);
        } else {
            struct timespec deadline;
            clock_gettime(CLOCK_REALTIME, &deadline);
            deadline.tv_sec += 1;
            pthread_mutex_lock(&j->mu);
            if (!j->stop) pthread_cond_timedwait(&j->cv, &j->mu, &deadline);
            pthread_mutex_unlock(&j->mu);
        }
        free(audio);
        free(params);
    }
    return NULL;
}

sv_jobs *sv_jobs_start(const char *path, sv_engine *engine) {
    sv_jobs *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->engine = engine;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    if (sqlite3_open_v2(path, &j->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                          SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK) {
        fprintf(stderr, "shruti serve: cannot open the job database %s: %s\n", path,
                j->db ? sqlite3_errmsg(j->db) : "out of memory");
        sv_jobs_stop(j);
        return NULL;
    }
    sqlite3_busy_timeout(j->db, 5000);
    if (exec_sql(j->db, SCHEMA) == 0) /* databases from before the column; fails when present */
        sqlite3_exec(j->db, "ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL "
                     "DEFAULT 0", NULL, NULL, NULL);
    if (exec_sql(j->db, SCHEMA) < 0 ||
        exec_sql(j->db, "UPDATE jobs SET status='queued' WHERE status='running'") < 0) {
        fprintf(stderr, "shruti serve: cannot use the job database %s: %s\n", path,
                sqlite3_errmsg(j->db));
        sv_jobs_stop(j);
        return NULL;
    }
    if (pthread_create(&j->runner, NULL, runner_main, j) != 0) {
        sv_jobs_stop(j);
        return NULL;
    }
    j->started = true;
    return j;
}

void sv_jobs_stop(sv_jobs *j) {
    if (!j) return;
    pthread_mutex_lock(&j->mu);
    j->stop = true;
    if (j->current) sv_task_cancel(j->current);   /* requeued by run_job */
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    if (j->started) pthread_join(j->runner, NULL);
    if (j->db) sqlite3_close(j->db);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
}

static void new_id(char id[37]) {
    uint8_t b[16];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, b, sizeof b) != (ssize_t)sizeof b) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        for (int i = 0; i < 16; i++) b[i] = (uint8_t)((ts.tv_nsec >> (i % 8)) ^ (i * 37));
    }
    if (fd >= 0) close(fd);
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);   /* UUID version 4 */
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(id, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
             b[13], b[14], b[15]);
}

int sv_jobs_create(sv_jobs *j, const void *audio, size_t size, const char *params, char id[37]) {
    new_id(id);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(j->db, "INSERT INTO jobs(id, status, created, updated, params, audio) "
                           "VALUES (?, 'queued', ?, ?, ?, ?)", -1, &st, NULL) != SQLITE_OK)
        return -1;
    double now = wall_s();
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 2, now);
    sqlite3_bind_double(st, 3, now);
    sqlite3_bind_text(st, 4, params, -1, SQLITE_STATIC);
    sqlite3_bind_blob64(st, 5, audio, size, SQLITE_STATIC);
    int r = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
    sqlite3_finalize(st);
    pthread_mutex_lock(&j->mu);
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
    return r;
}

char *sv_jobs_get(sv_jobs *j, const char *id) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(j->db, "SELECT status, progress, result, error, created, updated "
                           "FROM jobs WHERE id=?", -1, &st, NULL) != SQLITE_OK)
        return NULL;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    char *out = NULL;
    if (sqlite3_step(st) == SQLITE_ROW) {
        cJSON *o = cJSON_CreateObject();
        const char *status = (const char *)sqlite3_column_text(st, 0);
        cJSON_AddStringToObject(o, "id", id);
        cJSON_AddStringToObject(o, "object", "transcription.job");
        cJSON_AddStringToObject(o, "status", status);
        double progress = sqlite3_column_double(st, 1);
        pthread_mutex_lock(&j->mu);
        if (strcmp(j->current_id, id) == 0) progress = j->progress;
        pthread_mutex_unlock(&j->mu);
        cJSON_AddNumberToObject(o, "progress", progress);
        cJSON_AddNumberToObject(o, "created_at", sqlite3_column_double(st, 4));
        cJSON_AddNumberToObject(o, "updated_at", sqlite3_column_double(st, 5));
        if (sqlite3_column_type(st, 2) != SQLITE_NULL) {
            cJSON *r = cJSON_Parse((const char *)sqlite3_column_text(st, 2));
            if (r) cJSON_AddItemToObject(o, "result", r);
        }
        if (sqlite3_column_type(st, 3) != SQLITE_NULL)
            cJSON_AddStringToObject(o, "error", (const char *)sqlite3_column_text(st, 3));
        out = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
    }
    sqlite3_finalize(st);
    return out;
}

int sv_jobs_cancel(sv_jobs *j, const char *id) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(j->db, "SELECT status FROM jobs WHERE id=?", -1, &st, NULL) != SQLITE_OK)
        return 0;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int r = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        const char *status = (const char *)sqlite3_column_text(st, 0);
        r = strcmp(status, "queued") == 0 || strcmp(status, "running") == 0 ? 1 : -1;
    }
    sqlite3_finalize(st);
    if (r != 1) return r;
    /* a queued job is cancelled here; a running one by its runner, which
     * polls the flag while it waits */
    exec_sql(j->db, "BEGIN IMMEDIATE");
    if (sqlite3_prepare_v2(j->db, "UPDATE jobs SET cancel_requested=1, status=CASE WHEN "
                           "status='queued' THEN 'cancelled' ELSE status END, updated=? "
                           "WHERE id=?", -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_double(st, 1, wall_s());
        sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
        sqlite3_step(st);
        sqlite3_finalize(st);
    }
    exec_sql(j->db, "COMMIT");
    return 1;
}
