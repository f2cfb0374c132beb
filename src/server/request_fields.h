/* request_fields.h - the fields of an OpenAI-style transcription request
 * (multipart form) turned into an sv_request. */
#ifndef SHRUTI_SERVER_REQUEST_FIELDS_H
#define SHRUTI_SERVER_REQUEST_FIELDS_H

#include "server/engine.h"

#define SV_MAX_FIELDS 24

typedef struct {
    char name[64];
    char *value;      /* NUL-terminated, malloc'd */
    size_t len;
} sv_field;

typedef struct {
    sv_field v[SV_MAX_FIELDS];
    int n;
} sv_fields;

const char *sv_field_get(const sv_fields *f, const char *name);
void sv_fields_free(sv_fields *f);

/* Validates the fields into req (no audio yet) and the response format.
 * Returns 0, or fills message/param and returns -1. translate forces the
 * translate task (/v1/audio/translations). */
int sv_fields_to_request(const sv_fields *f, bool translate, sv_request *req,
                         char *response_format, size_t rf_size, char *message, size_t msg_size,
                         const char **param);

/* The fields as a JSON object (for jobs); and back. */
char *sv_fields_to_json(const sv_fields *f);
int sv_fields_from_json(const char *json, sv_fields *f);

#endif
