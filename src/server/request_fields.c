/* request_fields.c - OpenAI audio API fields -> transcription options.
 * Every value is checked: unknown response formats, languages,
 * temperatures out of range and bad numbers are 400s with the field
 * named. */
#include "server/request_fields.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *sv_field_get(const sv_fields *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->v[i].name, name) == 0) return f->v[i].value;
    return NULL;
}

void sv_fields_free(sv_fields *f) {
    for (int i = 0; i < f->n; i++) free(f->v[i].value);
    f->n = 0;
}

static int parse_number(const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

#define FAIL(p, ...)                                   \
    do {                                               \
        snprintf(message, msg_size, __VA_ARGS__);      \
        *param = p;                                    \
        return -1;                                     \
    } while (0)

int sv_fields_to_request(const sv_fields *f, bool translate, sv_request *req,
                         char *response_format, size_t rf_size, char *message, size_t msg_size,
                         const char **param) {
    memset(req, 0, sizeof *req);
    shruti_params *p = &req->params;
    *p = shruti_default_params();
    const char *v;
    double x;
    snprintf(response_format, rf_size, "json");
    if ((v = sv_field_get(f, "response_format"))) {
        const char *ok[] = {"json", "text", "srt", "vtt", "verbose_json"};
        int found = 0;
        for (int i = 0; i < 5; i++) found |= strcmp(v, ok[i]) == 0;
        if (!found) FAIL("response_format", "response_format must be json, text, srt, vtt or "
                         "verbose_json");
        snprintf(response_format, rf_size, "%s", v);
    }
    if ((v = sv_field_get(f, "language")) && *v) {
        if (strlen(v) >= sizeof req->language) FAIL("language", "unknown language '%.20s'", v);
        for (size_t i = 0; v[i]; i++)
            if (!((v[i] >= 'a' && v[i] <= 'z') || (v[i] >= 'A' && v[i] <= 'Z')))
                FAIL("language", "unknown language '%.20s'", v);
        snprintf(req->language, sizeof req->language, "%s", v);
        for (char *c = req->language; *c; c++) *c = (char)(*c | 0x20);
    }
    if ((v = sv_field_get(f, "prompt"))) {
        if (strlen(v) >= sizeof req->prompt) FAIL("prompt", "prompt is too long");
        snprintf(req->prompt, sizeof req->prompt, "%s", v);
    }
    if ((v = sv_field_get(f, "model")) && *v && strcmp(v, "whisper-1") != 0) {
        if (strlen(v) >= sizeof req->model) FAIL("model", "unknown model '%.40s'", v);
        snprintf(req->model, sizeof req->model, "%s", v);
    }
    if ((v = sv_field_get(f, "temperature"))) {
        if (parse_number(v, 0, 1, &x) < 0) FAIL("temperature", "temperature must be 0 to 1");
        /* OpenAI: a fixed temperature; 0 keeps the fallback list */
        if (x > 0) {
            p->temperatures[0] = (float)x;
            p->n_temperatures = 1;
        }
    }
    /* as the reference CLI's option: 0 (or none) keeps just the one temperature */
    if ((v = sv_field_get(f, "temperature_increment_on_fallback"))) {
        if (strcmp(v, "none") == 0) x = 0;
        else if (parse_number(v, 0, 1, &x) < 0)
            FAIL("temperature_increment_on_fallback", "must be 0 to 1 or none");
        float t0 = p->n_temperatures == 1 ? p->temperatures[0] : 0.0f;
        p->n_temperatures = 0;
        for (double t = t0; t <= 1.0 + 1e-6 && p->n_temperatures < SHRUTI_MAX_TEMPERATURES;
             t += x) {
            p->temperatures[p->n_temperatures++] = (float)t;
            if (x <= 0) break;
        }
    }
    if ((v = sv_field_get(f, "beam_size"))) {
        if (parse_number(v, 1, 16, &x) < 0 || x != floor(x))
            FAIL("beam_size", "beam_size must be an integer from 1 to 16");
        p->beam_size = (int)x;
    }
    if ((v = sv_field_get(f, "best_of"))) {
        if (parse_number(v, 1, 16, &x) < 0 || x != floor(x))
            FAIL("best_of", "best_of must be an integer from 1 to 16");
        p->best_of = (int)x;
    }
    /* batched windows (as faster-whisper's batched pipeline): greedy, so
     * the temperature must start at 0 */
    if ((v = sv_field_get(f, "batch_size"))) {
        if (parse_number(v, 1, 64, &x) < 0 || x != floor(x))
            FAIL("batch_size", "batch_size must be an integer from 1 to 64");
        p->batch_size = (int)x;
        if (p->batch_size > 1 && p->n_temperatures > 0 && p->temperatures[0] != 0.0f)
            FAIL("batch_size", "batched windows decode greedily: temperature must be 0");
    }
    if ((v = sv_field_get(f, "task"))) {
        if (strcmp(v, "transcribe") == 0) p->task = SHRUTI_TASK_TRANSCRIBE;
        else if (strcmp(v, "translate") == 0) p->task = SHRUTI_TASK_TRANSLATE;
        else FAIL("task", "task must be transcribe or translate");
    }
    if (translate) p->task = SHRUTI_TASK_TRANSLATE;
    if ((v = sv_field_get(f, "timestamp_granularities[]")) && strcmp(v, "segment") != 0)
        FAIL("timestamp_granularities[]", "only segment timestamps are supported");
    return 0;
}

char *sv_fields_to_json(const sv_fields *f) {
    cJSON *o = cJSON_CreateObject();
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->v[i].name, "file") != 0) cJSON_AddStringToObject(o, f->v[i].name, f->v[i].value);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

int sv_fields_from_json(const char *json, sv_fields *f) {
    memset(f, 0, sizeof *f);
    cJSON *o = cJSON_Parse(json), *it;
    if (!o) return -1;
    cJSON_ArrayForEach(it, o) {
        if (!cJSON_IsString(it) || f->n == SV_MAX_FIELDS) continue;
        sv_field *d = &f->v[f->n];
        snprintf(d->name, sizeof d->name, "%s", it->string);
        d->value = strdup(it->valuestring);
        d->len = strlen(it->valuestring);
        if (d->value) f->n++;
    }
    cJSON_Delete(o);
    return 0;
}
