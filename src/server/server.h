/* server.h - `shruti serve`: an OpenAI-compatible transcription service.
 * Configuration, the shared state of a running server, and the entry
 * point. */
#ifndef SHRUTI_SERVER_H
#define SHRUTI_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "shruti.h"

typedef struct {
    char host[128];
    int port;
    char model_en[512];          /* name or path; "" disables the slot */
    char model_multi[512];
    char db_path[1024];
    int workers;
    int queue_size;              /* tasks waiting, beyond which: 429 */
    size_t max_upload_bytes;     /* beyond which: 413 */
    double max_audio_seconds;    /* beyond which: 413 (sync and jobs) */
    double request_timeout_s;    /* a synchronous request waits at most this */
    double long_audio_seconds;   /* longer audio counts as long work */
    int threads_per_worker;
    char device[16];             /* auto | cpu | cuda */
    int device_index;            /* which CUDA device */
    char compute_type[24];
} sv_config;

/* Defaults, then SHRUTI_* environment, then argv flags. Returns 0, or -1
 * after printing a message (-2: --help printed). */
int sv_config_load(sv_config *c, int argc, char **argv);

int sv_serve(const sv_config *c);

#endif
