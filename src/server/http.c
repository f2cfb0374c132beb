/* http.c - the HTTP front of `shruti serve` on libmicrohttpd: routing,
 * multipart uploads (bounded), OpenAI-style JSON errors, response formats,
 * health, readiness, metrics, async jobs, the web page, access logs and a
 * clean shutdown on SIGTERM.
 *
 * One thread per connection: a transcription request blocks its thread
 * while a worker runs it, so the engine's bounded queue (429 when full)
 * and the connection limit bound memory and threads. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "output/output_formats.h"
#include "server/engine.h"
#include "server/jobs.h"
#include "server/log.h"
#include "server/request_fields.h"
#include "server/server.h"
#include "server/web_page.h"

#define MAX_FIELD_BYTES 16384
#define N_STATUS_CODES 12

typedef struct {
    sv_config cfg;
    sv_engine *engine;
    sv_jobs *jobs;
    atomic_size_t upload_bytes;   /* bodies being received now, all connections */
    pthread_mutex_t mu;
    int codes[N_STATUS_CODES];
    uint64_t by_code[N_STATUS_CODES];
} server;

static const int TRACKED_CODES[N_STATUS_CODES] = {200, 202, 400, 404, 405, 413, 415,
                                                   429, 499, 500, 503, 504};

typedef struct {
    char method[8];
    char path[256];
    struct MHD_PostProcessor *pp;
    sv_fields fields;
    char *file;
    size_t file_len, file_cap, received;
    int error_status;            /* set while reading: answered at the end */
    char error_msg[256];
    const char *error_param, *error_code;
    int status;                  /* what was answered, for the access log */
    size_t counted;              /* this request's share of upload_bytes */
    double t0;
} req_state;


/* ------------------------------------------------------------ responses */

static enum MHD_Result send_body(struct MHD_Connection *c, req_state *r, int status,
                                 const char *content_type, const char *body, size_t len,
                                 const char *retry_after) {
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", content_type);
    if (retry_after) MHD_add_response_header(resp, "Retry-After", retry_after);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    if (r) r->status = status;
    return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *c, req_state *r, int status, cJSON *o) {
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    enum MHD_Result ret = send_body(c, r, status, "application/json", s ? s : "{}",
                                    s ? strlen(s) : 2, NULL);
    free(s);
    return ret;
}

/* {"error":{"message","type","param","code"}} as OpenAI answers. */
static enum MHD_Result send_error(struct MHD_Connection *c, req_state *r, int status,
                                  const char *message, const char *param, const char *code) {
    cJSON *o = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "message", message);
    cJSON_AddStringToObject(e, "type", status >= 500 ? "server_error" : "invalid_request_error");
    if (param) cJSON_AddStringToObject(e, "param", param);
    else cJSON_AddNullToObject(e, "param");
    if (code) cJSON_AddStringToObject(e, "code", code);
    else cJSON_AddNullToObject(e, "code");
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    enum MHD_Result ret = send_body(c, r, status, "application/json", s ? s : "{}",
                                    s ? strlen(s) : 2, status == 429 || status == 503 ? "5" : NULL);
    free(s);
    return ret;
}

/* ------------------------------------------------------------- uploads */

static int append(char **buf, size_t *len, size_t *cap, const char *data, size_t n) {
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 65536;
        while (c < *len + n + 1) c *= 2;
        char *p = realloc(*buf, c);
        if (!p) return -1;
        *buf = p;
        *cap = c;
    }
    memcpy(*buf + *len, data, n);
    *len += n;
    (*buf)[*len] = '\0';
    return 0;
}

static void fail_upload(req_state *r, int status, const char *msg, const char *param,
                        const char *code) {
    if (r->error_status) return;
    r->error_status = status;
    snprintf(r->error_msg, sizeof r->error_msg, "%s", msg);
    r->error_param = param;
    r->error_code = code;
}

static enum MHD_Result on_post_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *filename, const char *content_type,
                                     const char *transfer_encoding, const char *data,
                                     uint64_t off, size_t size) {
    (void)kind, (void)filename, (void)content_type, (void)transfer_encoding, (void)off;
    req_state *r = cls;
    if (r->error_status) return MHD_YES;
    if (strcmp(key, "file") == 0) {
        if (append(&r->file, &r->file_len, &r->file_cap, data, size) < 0)
            fail_upload(r, 413, "the upload is too large for this server's memory", "file",
                        "upload_too_large");
        if (r->file_len == 0 && size == 0 && r->file == NULL)
            append(&r->file, &r->file_len, &r->file_cap, "", 0);   /* an empty file part */
        return MHD_YES;
    }
    sv_field *f = NULL;
    for (int i = 0; i < r->fields.n; i++)
        if (strcmp(r->fields.v[i].name, key) == 0) f = &r->fields.v[i];
    if (!f) {
        if (r->fields.n == SV_MAX_FIELDS || strlen(key) >= sizeof f->name) {
            fail_upload(r, 400, "too many form fields", key, NULL);
            return MHD_YES;
        }
        f = &r->fields.v[r->fields.n++];
        memset(f, 0, sizeof *f);
        snprintf(f->name, sizeof f->name, "%s", key);
    }
    size_t cap = f->value ? f->len + 1 : 0;
    if (f->len + size > MAX_FIELD_BYTES) fail_upload(r, 400, "a form field is too long", key, NULL);
    else if (append(&f->value, &f->len, &cap, data, size) < 0)
        fail_upload(r, 500, "out of memory", NULL, NULL);
    return MHD_YES;
}

/* ------------------------------------------------------ transcriptions */

static enum MHD_Result format_result(struct MHD_Connection *c, req_state *r, const char *json,
                                     const char *format) {
    if (strcmp(format, "verbose_json") == 0)
        return send_body(c, r, 200, "application/json", json, strlen(json), NULL);
    cJSON *o = cJSON_Parse(json);
    if (!o) return send_error(c, r, 500, "bad result", NULL, NULL);
    const char *text = cJSON_GetObjectItem(o, "text")->valuestring;
    enum MHD_Result ret;
    if (strcmp(format, "json") == 0) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "text", text);
        ret = send_json(c, r, 200, j);
    } else if (strcmp(format, "text") == 0) {
        char *t = malloc(strlen(text) + 2);
        sprintf(t, "%s\n", text);
        ret = send_body(c, r, 200, "text/plain; charset=utf-8", t, strlen(t), NULL);
        free(t);
    } else {   /* srt, vtt: the CLI's writers over the segments */
        const cJSON *segs = cJSON_GetObjectItem(o, "segments"), *g;
        int n = cJSON_GetArraySize(segs), i = 0;
        shruti_segment *v = calloc((size_t)(n ? n : 1), sizeof *v);
        cJSON_ArrayForEach(g, segs) {
            v[i].id = i;
            v[i].start = cJSON_GetObjectItem(g, "start")->valuedouble;
            v[i].end = cJSON_GetObjectItem(g, "end")->valuedouble;
            v[i].text = cJSON_GetObjectItem(g, "text")->valuestring;
            i++;
        }
        output_result res = {v, n, text, "", 0};
        char *buf = NULL;
        size_t len = 0;
        FILE *mem = open_memstream(&buf, &len);
        output_write_result(mem, strcmp(format, "srt") == 0 ? OUT_SRT : OUT_VTT, &res);
        fclose(mem);
        ret = send_body(c, r, 200, strcmp(format, "srt") == 0 ? "application/x-subrip"
                                                              : "text/vtt", buf, len, NULL);
        free(buf);
        free(v);
    }
    cJSON_Delete(o);
    return ret;
}

/* Checks the fields and decodes the audio; on failure answers and
 * returns -1 (with *ret set). */
static int prepare(server *s, struct MHD_Connection *c, req_state *r, bool translate,
                   sv_request *req, char *format, size_t format_size, enum MHD_Result *ret) {
    char msg[640];
    const char *param = NULL;
    if (!r->file) {
        *ret = send_error(c, r, 400, "the 'file' field is missing", "file", "missing_file");
        return -1;
    }
    if (sv_fields_to_request(&r->fields, translate, req, format, format_size, msg, sizeof msg,
                             &param) < 0) {
        *ret = send_error(c, r, 400, msg, param, "invalid_value");
        return -1;
    }
    if (req->model[0]) {
        sv_engine_status st;
        sv_engine_get_status(s->engine, &st);
        bool known = strcmp(req->model, "en") == 0 || strcmp(req->model, "multi") == 0;
        for (int i = 0; i < N_SLOTS; i++)
            known |= st.slot_loaded[i] && strcmp(req->model, st.slot_model[i]) == 0;
        if (!known) {
            snprintf(msg, sizeof msg, "model '%s' is not served here (see /v1/models)", req->model);
            *ret = send_error(c, r, 404, msg, "model", "model_not_found");
            return -1;
        }
    }
    shruti_error err;
    if (r->file_len == 0) {
        *ret = send_error(c, r, 400, "the uploaded file is empty", "file", "invalid_audio");
        return -1;
    }
    if (shruti_audio_load_memory(r->file, r->file_len, &req->pcm, &req->n_samples, &err) < 0) {
        snprintf(msg, sizeof msg, "the file is not audio that can be decoded: %s", err.message);
        *ret = send_error(c, r, 400, msg, "file", "invalid_audio");
        return -1;
    }
    double seconds = req->n_samples / 16000.0;
    if (seconds > s->cfg.max_audio_seconds) {
        snprintf(msg, sizeof msg, "the audio is %.0f s long; this server takes at most %.0f s",
                 seconds, s->cfg.max_audio_seconds);
        free(req->pcm);
        req->pcm = NULL;
        *ret = send_error(c, r, 413, msg, "file", "audio_too_long");
        return -1;
    }
    return 0;
}

static enum MHD_Result handle_transcription(server *s, struct MHD_Connection *c, req_state *r,
                                            bool translate) {
    sv_request req;
    char format[16];
    enum MHD_Result ret;
    if (prepare(s, c, r, translate, &req, format, sizeof format, &ret) < 0) return ret;
    bool long_work = req.n_samples / 16000.0 > s->cfg.long_audio_seconds;
    sv_task *t = sv_engine_submit(s->engine, &req, long_work, NULL, NULL);
    if (!t) {
        free(req.pcm);
        return send_error(c, r, 429, "the server is busy: too many requests are waiting; retry "
                          "later", NULL, "rate_limit_exceeded");
    }
    if (!sv_task_wait(t, s->cfg.request_timeout_s)) {
        sv_task_cancel(t);
        sv_task_release(t);
        return send_error(c, r, 504, "the transcription took longer than the request timeout; "
                          "use /v1/jobs for long files", NULL, "timeout");
    }
    const char *json, *error;
    int status;
    if (sv_task_result(t, &json, &error, &status) == 0) ret = format_result(c, r, json, format);
    else ret = send_error(c, r, status == 499 ? 503 : status, error, NULL, NULL);
    sv_task_release(t);
    return ret;
}

static enum MHD_Result handle_job_create(server *s, struct MHD_Connection *c, req_state *r) {
    sv_request req;
    char format[16];
    enum MHD_Result ret;
    if (prepare(s, c, r, false, &req, format, sizeof format, &ret) < 0) return ret;
    free(req.pcm);   /* checked now; the job decodes it again when it runs */
    char *params = sv_fields_to_json(&r->fields);
    char id[37];
    if (!params || sv_jobs_create(s->jobs, r->file, r->file_len, params, id) < 0) {
        free(params);
        return send_error(c, r, 500, "cannot store the job", NULL, NULL);
    }
    free(params);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object", "transcription.job");
    cJSON_AddStringToObject(o, "status", "queued");
    return send_json(c, r, 202, o);
}

static enum MHD_Result handle_job(server *s, struct MHD_Connection *c, req_state *r,
                                  const char *id, bool del) {
    if (strlen(id) != 36) return send_error(c, r, 404, "no such job", "id", "job_not_found");
    if (del) {
        int k = sv_jobs_cancel(s->jobs, id);
        if (k == 0) return send_error(c, r, 404, "no such job", "id", "job_not_found");
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", id);
        cJSON_AddStringToObject(o, "status", k == 1 ? "cancelled" : "finished");
        return send_json(c, r, 200, o);
    }
    char *json = sv_jobs_get(s->jobs, id);
    if (!json) return send_error(c, r, 404, "no such job", "id", "job_not_found");
    enum MHD_Result ret = send_body(c, r, 200, "application/json", json, strlen(json), NULL);
    free(json);
    return ret;
}

/* -------------------------------------------------- status endpoints */

static enum MHD_Result handle_health(server *s, struct MHD_Connection *c, req_state *r,
                                     bool ready_check) {
    sv_engine_status st;
    sv_engine_get_status(s->engine, &st);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", "ok");
    cJSON_AddBoolToObject(o, "ready", st.ready);
    cJSON_AddStringToObject(o, "device", st.device);
    cJSON_AddStringToObject(o, "device_requested", s->cfg.device);
    cJSON_AddStringToObject(o, "device_reason", st.device_reason);
    cJSON_AddNumberToObject(o, "device_fallbacks", (double)st.device_fallbacks);
    /* each slot's own device: one model may fit the GPU and the other not */
    cJSON *slots = cJSON_AddObjectToObject(o, "slots");
    for (int i = 0; i < N_SLOTS; i++) {
        if (!st.slot_loaded[i]) continue;
        cJSON *sl = cJSON_AddObjectToObject(slots, i == SLOT_EN ? "en" : "multi");
        cJSON_AddStringToObject(sl, "model", st.slot_model[i]);
        cJSON_AddStringToObject(sl, "device", st.slot_device[i]);
        cJSON_AddStringToObject(sl, "device_reason", st.slot_device_note[i]);
    }
    cJSON_AddStringToObject(o, "compute_type", st.compute_type);
    cJSON_AddStringToObject(o, "compute_type_requested", s->cfg.compute_type);
    cJSON_AddNumberToObject(o, "workers", st.workers);
    cJSON_AddNumberToObject(o, "queued", st.queued);
    cJSON_AddNumberToObject(o, "running", st.running);
    cJSON_AddStringToObject(o, "version", shruti_version());
    return send_json(c, r, ready_check && !st.ready ? 503 : 200, o);
}

static enum MHD_Result handle_models(server *s, struct MHD_Connection *c, req_state *r) {
    sv_engine_status st;
    sv_engine_get_status(s->engine, &st);
    cJSON *o = cJSON_CreateObject(), *data;
    cJSON_AddStringToObject(o, "object", "list");
    data = cJSON_AddArrayToObject(o, "data");
    const char *slots[N_SLOTS] = {"en", "multi"};
    for (int i = 0; i < N_SLOTS; i++) {
        if (!st.slot_model[i][0]) continue;
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "id", st.slot_model[i]);
        cJSON_AddStringToObject(m, "object", "model");
        cJSON_AddStringToObject(m, "owned_by", "shruti");
        cJSON_AddStringToObject(m, "slot", slots[i]);
        cJSON_AddBoolToObject(m, "loaded", st.slot_loaded[i]);
        cJSON_AddItemToArray(data, m);
    }
    return send_json(c, r, 200, o);
}

static enum MHD_Result handle_metrics(server *s, struct MHD_Connection *c, req_state *r) {
    sv_engine_status st;
    sv_engine_get_status(s->engine, &st);
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    fprintf(m, "# HELP shruti_requests_total HTTP requests by status code.\n"
               "# TYPE shruti_requests_total counter\n");
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < N_STATUS_CODES; i++)
        fprintf(m, "shruti_requests_total{code=\"%d\"} %llu\n", TRACKED_CODES[i],
                (unsigned long long)s->by_code[i]);
    pthread_mutex_unlock(&s->mu);
    fprintf(m, "# HELP shruti_audio_seconds_total Seconds of audio transcribed.\n"
               "# TYPE shruti_audio_seconds_total counter\nshruti_audio_seconds_total %.3f\n",
            st.audio_seconds);
    fprintf(m, "# HELP shruti_processing_seconds_total Seconds spent transcribing.\n"
               "# TYPE shruti_processing_seconds_total counter\n"
               "shruti_processing_seconds_total %.3f\n", st.processing_seconds);
    fprintf(m, "# HELP shruti_real_time_factor Processing time over audio time so far.\n"
               "# TYPE shruti_real_time_factor gauge\nshruti_real_time_factor %.4f\n",
            st.audio_seconds > 0 ? st.processing_seconds / st.audio_seconds : 0.0);
    fprintf(m, "# HELP shruti_queue_depth Requests waiting for a worker.\n"
               "# TYPE shruti_queue_depth gauge\nshruti_queue_depth %d\n", st.queued);
    fprintf(m, "# HELP shruti_running Transcriptions running.\n"
               "# TYPE shruti_running gauge\nshruti_running %d\n", st.running);
    char reason[sizeof st.device_reason];   /* a label value */
    sv_safe_text(reason, sizeof reason, st.device_reason);
    fprintf(m, "# HELP shruti_device The device in use (1) and why.\n# TYPE shruti_device gauge\n"
               "shruti_device{device=\"%s\",compute_type=\"%s\",requested=\"%s\"} 1\n",
            st.device, st.compute_type, s->cfg.device);
    fprintf(m, "# HELP shruti_device_info Where the models run and why.\n# TYPE shruti_device_info gauge\n"
               "shruti_device_info{device=\"%s\",reason=\"%s\"} 1\n", st.device, reason);
    fprintf(m, "# HELP shruti_device_fallbacks_total Run states moved from the GPU to the CPU.\n"
               "# TYPE shruti_device_fallbacks_total counter\nshruti_device_fallbacks_total %llu\n",
            (unsigned long long)st.device_fallbacks);
    fclose(m);
    enum MHD_Result ret = send_body(c, r, 200, "text/plain; version=0.0.4", buf, len, NULL);
    free(buf);
    return ret;
}

/* ------------------------------------------------------------ dispatch */

static bool is_upload_route(const char *method, const char *url) {
    return strcmp(method, "POST") == 0 &&
           (strcmp(url, "/v1/audio/transcriptions") == 0 ||
            strcmp(url, "/v1/audio/translations") == 0 || strcmp(url, "/v1/jobs") == 0);
}

static enum MHD_Result dispatch(server *s, struct MHD_Connection *c, req_state *r,
                                const char *method, const char *url) {
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    if (r->error_status)
        return send_error(c, r, r->error_status, r->error_msg, r->error_param, r->error_code);
    if (strcmp(url, "/v1/audio/transcriptions") == 0 || strcmp(url, "/v1/audio/translations") == 0) {
        if (strcmp(method, "POST") != 0) return send_error(c, r, 405, "use POST", NULL, NULL);
        return handle_transcription(s, c, r, strstr(url, "translations") != NULL);
    }
    if (strcmp(url, "/v1/jobs") == 0) {
        if (strcmp(method, "POST") != 0) return send_error(c, r, 405, "use POST", NULL, NULL);
        return handle_job_create(s, c, r);
    }
    if (strncmp(url, "/v1/jobs/", 9) == 0) {
        bool del = strcmp(method, "DELETE") == 0;
        if (!get && !del) return send_error(c, r, 405, "use GET or DELETE", NULL, NULL);
        return handle_job(s, c, r, url + 9, del);
    }
    if (!get) return send_error(c, r, 405, "method not allowed here", NULL, NULL);
    if (strcmp(url, "/") == 0)
        return send_body(c, r, 200, "text/html; charset=utf-8", SV_WEB_PAGE,
                         strlen(SV_WEB_PAGE), NULL);
    if (strcmp(url, "/health") == 0) return handle_health(s, c, r, false);
    if (strcmp(url, "/ready") == 0) return handle_health(s, c, r, true);
    if (strcmp(url, "/v1/models") == 0) return handle_models(s, c, r);
    if (strcmp(url, "/metrics") == 0) return handle_metrics(s, c, r);
    return send_error(c, r, 404, "no such endpoint", NULL, "not_found");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls) {
    (void)version;
    server *s = cls;
    req_state *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        *con_cls = r;
        r->t0 = sh_now_s();
        snprintf(r->method, sizeof r->method, "%s", method);
        snprintf(r->path, sizeof r->path, "%s", url);
        if (is_upload_route(method, url)) {
            const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
            if (cl && strtoull(cl, NULL, 10) > s->cfg.max_upload_bytes)
                return send_error(c, r, 413, "the upload is larger than this server accepts",
                                  "file", "upload_too_large");
            r->pp = MHD_create_post_processor(c, 65536, on_post_field, r);
            if (!r->pp)
                return send_error(c, r, 415, "expected a multipart/form-data body with a "
                                  "'file' field", NULL, "unsupported_media_type");
        }
        return MHD_YES;
    }
    if (*upload_size) {
        r->received += *upload_size;
        /* all uploads together stay under four times the single limit */
        size_t total = atomic_fetch_add(&s->upload_bytes, *upload_size) + *upload_size;
        r->counted += *upload_size;
        if (total > 4 * s->cfg.max_upload_bytes)
            fail_upload(r, 429, "the server is receiving too many uploads; retry later", NULL,
                        "rate_limit_exceeded");
        else if (r->received > s->cfg.max_upload_bytes)
            fail_upload(r, 413, "the upload is larger than this server accepts", "file",
                        "upload_too_large");
        else if (r->pp && !r->error_status &&
                 MHD_post_process(r->pp, upload_data, *upload_size) != MHD_YES)
            fail_upload(r, 400, "the multipart body is malformed", NULL, "bad_multipart");
        *upload_size = 0;
        return MHD_YES;
    }
    return dispatch(s, c, r, method, url);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)c;
    server *s = cls;
    req_state *r = *con_cls;
    if (!r) return;
    char path[201], method[sizeof r->method];   /* the client's: made safe for the log line */
    sv_log("{\"event\":\"access\",\"method\":\"%s\",\"path\":\"%s\",\"status\":%d,"
           "\"ms\":%.1f,\"bytes_in\":%zu%s}", sv_safe_text(method, sizeof method, r->method),
           sv_safe_text(path, sizeof path, r->path),
           r->status,
           (sh_now_s() - r->t0) * 1e3, r->received,
           toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : ",\"aborted\":true");
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < N_STATUS_CODES; i++)
        if (TRACKED_CODES[i] == r->status) s->by_code[i]++;
    pthread_mutex_unlock(&s->mu);
    atomic_fetch_sub(&s->upload_bytes, r->counted);
    if (r->pp) MHD_destroy_post_processor(r->pp);
    sv_fields_free(&r->fields);
    free(r->file);
    free(r);
    *con_cls = NULL;
}

/* --------------------------------------------------------------- serve */

static volatile sig_atomic_t stop_requested = 0;
static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

int sv_serve(const sv_config *cfg) {
    server s;
    memset(&s, 0, sizeof s);
    s.cfg = *cfg;
    pthread_mutex_init(&s.mu, NULL);
    atomic_init(&s.upload_bytes, 0);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (!(s.engine = sv_engine_start(cfg))) return 1;
    if (!(s.jobs = sv_jobs_start(cfg->db_path, s.engine))) {
        sv_engine_stop(s.engine);
        return 1;
    }
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)cfg->port);
    if (inet_pton(AF_INET, cfg->host, &addr.sin_addr) != 1) {
        fprintf(stderr, "shruti serve: --host must be an IPv4 address, got '%s'\n", cfg->host);
        sv_jobs_stop(s.jobs);
        sv_engine_stop(s.engine);
        return 1;
    }
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG,
        (uint16_t)cfg->port, NULL, NULL, on_request, &s, MHD_OPTION_SOCK_ADDR, &addr,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, &s, MHD_OPTION_CONNECTION_LIMIT, 512u,
        MHD_OPTION_CONNECTION_TIMEOUT, 120u, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "shruti serve: cannot listen on %s:%d\n", cfg->host, cfg->port);
        sv_jobs_stop(s.jobs);
        sv_engine_stop(s.engine);
        return 1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    sv_log("{\"event\":\"listening\",\"host\":\"%s\",\"port\":%u,\"workers\":%d,"
           "\"device_requested\":\"%s\"}", cfg->host, info ? info->port : (unsigned)cfg->port,
           cfg->workers, cfg->device);
    while (!stop_requested) usleep(100000);
    sv_log("{\"event\":\"stopping\"}");
    MHD_quiesce_daemon(d);          /* no new connections */
    sv_jobs_stop(s.jobs);           /* a running job goes back to the queue */
    sv_engine_stop(s.engine);       /* running requests finish, waiting ones get 503 */
    MHD_stop_daemon(d);
    pthread_mutex_destroy(&s.mu);
    sv_log("{\"event\":\"stopped\"}");
    return 0;
}
