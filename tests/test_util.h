/* test_util.h - a tiny test harness: checks that count failures, the
 * location of ../shared/testdata, and readers for its manifests and raw
 * float32 arrays. A test that needs the fixtures exits 77 (ctest: skipped)
 * with a message when they are absent. */
#ifndef SHRUTI_TEST_UTIL_H
#define SHRUTI_TEST_UTIL_H

#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int t_failures = 0;
static int t_checks = 0;

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        t_checks++;                                                        \
        if (!(cond)) {                                                     \
            t_failures++;                                                  \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                  \
            fprintf(stderr, "\n");                                         \
        }                                                                  \
    } while (0)

static inline int t_finish(const char *name) {
    printf("%s: %d checks, %d failed\n", name, t_checks, t_failures);
    return t_failures ? 1 : 0;
}

#define SKIP_CODE 77

/* The fixture folder: $SHRUTI_TESTDATA, else ../shared/testdata beside the
 * source tree. */
static inline const char *t_testdata(void) {
    static char path[4096];
    const char *env = getenv("SHRUTI_TESTDATA");
    if (env && *env) snprintf(path, sizeof path, "%s", env);
    else snprintf(path, sizeof path, "%s/../shared/testdata", SHRUTI_SOURCE_DIR);
    return path;
}

static inline void t_require_testdata(void) {
    char probe[4200];
    struct stat st;
    snprintf(probe, sizeof probe, "%s/golden/manifest-mini.json", t_testdata());
    if (stat(probe, &st) != 0) {
        printf("SKIP: test fixtures not found at %s (set SHRUTI_TESTDATA)\n", t_testdata());
        exit(SKIP_CODE);
    }
}

static inline char *t_path(const char *fmt, const char *a) {
    static _Thread_local char buf[4][8192];
    static _Thread_local int i = 0;
    char rel[1024];
    snprintf(rel, sizeof rel, fmt, a);
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s/%s", t_testdata(), rel);
    return buf[i];
}

static inline void *t_read_file(const char *path, size_t *size) {
    if (size) *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (buf) buf[n] = '\0';
    fclose(f);
    if (size) *size = (size_t)n;
    return buf;
}

/* manifest-<model>.json, parsed (caller deletes). */
static inline cJSON *t_manifest(const char *model) {
    char *text = t_read_file(t_path("golden/manifest-%s.json", model), NULL);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    free(text);
    if (!j) {
        fprintf(stderr, "cannot read manifest for %s\n", model);
        exit(1);
    }
    return j;
}

/* manifest["models"][model] */
static inline cJSON *t_model_entry(cJSON *manifest, const char *model) {
    return cJSON_GetObjectItem(cJSON_GetObjectItem(manifest, "models"), model);
}

/* A golden float32 array named by {"file": ...}; *n set to its length. */
static inline float *t_read_f32(const cJSON *desc, size_t *n) {
    const char *file = cJSON_GetObjectItem(desc, "file")->valuestring;
    size_t size;
    float *v = t_read_file(t_path("golden/%s", file), &size);
    if (!v) {
        fprintf(stderr, "cannot read %s\n", file);
        exit(1);
    }
    *n = size / sizeof(float);
    return v;
}

/* A JSON int array -> malloc'd ints; *n its length. */
static inline int *t_int_array(const cJSON *a, int *n) {
    *n = cJSON_GetArraySize(a);
    int *v = malloc(sizeof(int) * (size_t)(*n + 1));
    for (int i = 0; i < *n; i++) v[i] = cJSON_GetArrayItem(a, i)->valueint;
    return v;
}

static inline int t_same_tokens(const int *a, int na, const int32_t *b, int nb) {
    if (na != nb) return 0;
    for (int i = 0; i < na; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

static inline double t_max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > m || isnan(d)) m = isnan(d) ? INFINITY : d;
    }
    return m;
}

static const char *const T_MODELS[] = {"mini", "mini.en", "mini-v3"};

/* The first index of the largest of n floats. */
static inline int t_argmax(const float *x, int n) {
    int best = 0;
    for (int v = 1; v < n; v++)
        if (x[v] > x[best]) best = v;
    return best;
}

/* Rows (of n_vocab logits) whose argmax is the golden's. */
static inline int t_same_argmax(const float *logits, const float *golden, int rows, int n_vocab) {
    int same = 0;
    for (int i = 0; i < rows; i++) {
        const float *x = logits + (size_t)i * n_vocab, *g = golden + (size_t)i * n_vocab;
        same += t_argmax(x, n_vocab) == t_argmax(g, n_vocab);
    }
    return same;
}

/* 16 kHz mono 16-bit PCM WAV (the test clips) as floats, s16 / 32768: the
 * same samples FFmpeg gives for these files, so that the decoding tests
 * also run where FFmpeg's libraries are absent (a GPU box). NULL when the
 * file is another format. */
static inline float *t_read_wav(const char *path, size_t *n_samples) {
    size_t size;
    unsigned char *b = t_read_file(path, &size);
    float *pcm = NULL;
    *n_samples = 0;
    if (!b || size < 12 || memcmp(b, "RIFF", 4) != 0 || memcmp(b + 8, "WAVE", 4) != 0) {
        free(b);
        return NULL;
    }
    int fmt_ok = 0;
    for (size_t at = 12; at + 8 <= size;) {
        uint32_t len = b[at + 4] | b[at + 5] << 8 | b[at + 6] << 16 | (uint32_t)b[at + 7] << 24;
        const unsigned char *c = b + at + 8;
        if (len > size - at - 8) break;
        if (memcmp(b + at, "fmt ", 4) == 0 && len >= 16)
            fmt_ok = (c[0] | c[1] << 8) == 1 && (c[2] | c[3] << 8) == 1 &&
                     (c[4] | c[5] << 8 | c[6] << 16) == 16000 && (c[14] | c[15] << 8) == 16;
        if (memcmp(b + at, "data", 4) == 0 && fmt_ok) {
            size_t n = len / 2;
            pcm = malloc((n ? n : 1) * sizeof *pcm);
            for (size_t i = 0; pcm && i < n; i++)
                pcm[i] = (int16_t)(c[2 * i] | c[2 * i + 1] << 8) / 32768.0f;
            *n_samples = n;
            break;
        }
        at += 8 + len + (len & 1);
    }
    free(b);
    return pcm;
}

/* The device the decoding tests run on: $SHRUTI_TEST_DEVICE, else cpu. */
static inline const char *t_device(void) {
    const char *d = getenv("SHRUTI_TEST_DEVICE");
    return d && *d ? d : "cpu";
}

#endif
