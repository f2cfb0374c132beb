/* config.c - the service's settings: defaults, then environment variables,
 * then command-line flags (flags win). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/server.h"

static void usage(FILE *out) {
    fprintf(out,
        "usage: shruti serve [options]\n\n"
        "  --host H             listen address (SHRUTI_HOST, default 127.0.0.1)\n"
        "  --port P             TCP port (SHRUTI_PORT, default 8080)\n"
        "  --model-en M         model for English, name or path (SHRUTI_MODEL_EN, default tiny.en)\n"
        "  --model-multi M      model for other languages (SHRUTI_MODEL_MULTI, default medium)\n"
        "  --db PATH            SQLite file for async jobs (SHRUTI_DB, default ./shruti.db)\n"
        "  --workers N          transcriptions at once (SHRUTI_WORKERS, default 2)\n"
        "  --queue N            waiting requests before 429 (SHRUTI_QUEUE, default 64)\n"
        "  --max-upload-mb N    largest upload (SHRUTI_MAX_UPLOAD_MB, default 200)\n"
        "  --max-audio-s N      longest audio (SHRUTI_MAX_AUDIO_SECONDS, default 14400)\n"
        "  --timeout-s N        synchronous request timeout (SHRUTI_TIMEOUT_SECONDS, default 600)\n"
        "  --threads N          CPU threads per worker (SHRUTI_THREADS, default cores/workers)\n"
        "  --device D           auto|cpu|cuda (DEVICE, default auto: CUDA when usable)\n"
        "  --device-index N     which CUDA device (DEVICE_INDEX, default 0)\n"
        "  --compute-type T     auto|float32|float16|int8|int8_float16 (COMPUTE_TYPE)\n");
}

static int set_int(const char *name, const char *v, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "shruti serve: %s expects an integer from %d to %d, got '%s'\n", name, lo,
                hi, v);
        return -1;
    }
    *out = (int)x;
    return 0;
}

static int set_str(char *dst, size_t size, const char *v) {
    if (strlen(v) >= size) {
        fprintf(stderr, "shruti serve: value too long: '%.40s...'\n", v);
        return -1;
    }
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

/* One setting by its flag name (also used for the environment). */
static int apply(sv_config *c, const char *key, const char *v) {
    int x, r = 0;
    if (strcmp(key, "host") == 0) r = set_str(c->host, sizeof c->host, v);
    else if (strcmp(key, "port") == 0) r = set_int("port", v, 0, 65535, &c->port);
    else if (strcmp(key, "model-en") == 0) r = set_str(c->model_en, sizeof c->model_en, v);
    else if (strcmp(key, "model-multi") == 0) r = set_str(c->model_multi, sizeof c->model_multi, v);
    else if (strcmp(key, "db") == 0) r = set_str(c->db_path, sizeof c->db_path, v);
    else if (strcmp(key, "workers") == 0) r = set_int("workers", v, 1, 256, &c->workers);
    else if (strcmp(key, "queue") == 0) r = set_int("queue", v, 1, 100000, &c->queue_size);
    else if (strcmp(key, "max-upload-mb") == 0) {
        if ((r = set_int("max-upload-mb", v, 1, 1 << 20, &x)) == 0)
            c->max_upload_bytes = (size_t)x << 20;
    } else if (strcmp(key, "max-audio-s") == 0) {
        if ((r = set_int("max-audio-s", v, 1, 1 << 24, &x)) == 0) c->max_audio_seconds = x;
    } else if (strcmp(key, "timeout-s") == 0) {
        if ((r = set_int("timeout-s", v, 1, 1 << 24, &x)) == 0) c->request_timeout_s = x;
    } else if (strcmp(key, "threads") == 0) r = set_int("threads", v, 1, 256, &c->threads_per_worker);
    else if (strcmp(key, "device") == 0) {
        if (strcmp(v, "auto") && strcmp(v, "cpu") && strcmp(v, "cuda")) {
            fprintf(stderr, "shruti serve: DEVICE must be auto, cpu or cuda\n");
            return -1;
        }
        r = set_str(c->device, sizeof c->device, v);
    } else if (strcmp(key, "device-index") == 0) {
        r = set_int("device-index", v, 0, 64, &c->device_index);
    } else if (strcmp(key, "compute-type") == 0) {
        const char *ok[] = {"auto", "default", "float32", "float16", "int8", "int8_float16",
                            "int8_float32", "int8_bfloat16", "bfloat16"};   /* faster-whisper's */
        int found = 0;
        for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) found |= strcmp(v, ok[i]) == 0;
        if (!found) {
            fprintf(stderr, "shruti serve: unknown COMPUTE_TYPE '%s'\n", v);
            return -1;
        }
        r = set_str(c->compute_type, sizeof c->compute_type, v);
    }
    return r;
}

int sv_config_load(sv_config *c, int argc, char **argv) {
    memset(c, 0, sizeof *c);
    snprintf(c->host, sizeof c->host, "127.0.0.1");
    c->port = 8080;
    snprintf(c->model_en, sizeof c->model_en, "tiny.en");
    snprintf(c->model_multi, sizeof c->model_multi, "medium");
    snprintf(c->db_path, sizeof c->db_path, "./shruti.db");
    c->workers = 2;
    c->queue_size = 64;
    c->max_upload_bytes = (size_t)200 << 20;
    c->max_audio_seconds = 4 * 3600;
    c->request_timeout_s = 600;
    c->long_audio_seconds = 60;
    snprintf(c->device, sizeof c->device, "auto");
    snprintf(c->compute_type, sizeof c->compute_type, "auto");
    static const char *const env[][2] = {
        {"SHRUTI_HOST", "host"}, {"SHRUTI_PORT", "port"}, {"SHRUTI_MODEL_EN", "model-en"},
        {"SHRUTI_MODEL_MULTI", "model-multi"}, {"SHRUTI_DB", "db"},
        {"SHRUTI_WORKERS", "workers"}, {"SHRUTI_QUEUE", "queue"},
        {"SHRUTI_MAX_UPLOAD_MB", "max-upload-mb"}, {"SHRUTI_MAX_AUDIO_SECONDS", "max-audio-s"},
        {"SHRUTI_TIMEOUT_SECONDS", "timeout-s"}, {"SHRUTI_THREADS", "threads"},
        {"DEVICE", "device"}, {"DEVICE_INDEX", "device-index"}, {"COMPUTE_TYPE", "compute-type"}};
    for (size_t i = 0; i < sizeof env / sizeof env[0]; i++) {
        const char *v = getenv(env[i][0]);
        if (v && *v && apply(c, env[i][1], v) < 0) return -1;
    }
    static const struct option opts[] = {
        {"host", required_argument, 0, 0}, {"port", required_argument, 0, 0},
        {"model-en", required_argument, 0, 0}, {"model-multi", required_argument, 0, 0},
        {"db", required_argument, 0, 0}, {"workers", required_argument, 0, 0},
        {"queue", required_argument, 0, 0}, {"max-upload-mb", required_argument, 0, 0},
        {"max-audio-s", required_argument, 0, 0}, {"timeout-s", required_argument, 0, 0},
        {"threads", required_argument, 0, 0}, {"device", required_argument, 0, 0},
        {"device-index", required_argument, 0, 0}, {"compute-type", required_argument, 0, 0}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    optind = 1;
    opterr = 0;
    int ch, idx;
    while ((ch = getopt_long(argc, argv, "", opts, &idx)) != -1) {
        if (ch == 'h') {
            usage(stdout);
            return -2;
        }
        if (ch != 0) {
            fprintf(stderr, "shruti serve: unknown or incomplete option '%s'\n", argv[optind - 1]);
            usage(stderr);
            return -1;
        }
        if (apply(c, opts[idx].name, optarg) < 0) return -1;
    }
    if (optind < argc) {
        fprintf(stderr, "shruti serve: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (!c->model_en[0] && !c->model_multi[0]) {
        fprintf(stderr, "shruti serve: at least one of --model-en and --model-multi is needed\n");
        return -1;
    }
    if (c->threads_per_worker <= 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        c->threads_per_worker = cores > c->workers ? (int)(cores / c->workers) : 1;
    }
    return 0;
}
