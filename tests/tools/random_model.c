/* random_model.c - full-size Whisper models with random weights, for the
 * benchmarks and the GPU tests: the header-only files of
 * ../shared/testdata/model-headers (real hparams, filters, vocabulary)
 * with every tensor appended in whisper.cpp's layout, f16 like the
 * published files. */
#include "tools/random_model.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/f16.h"

static uint64_t rng = 88172645463325252ull;

void sh_rand_seed(const char *name) {
    uint64_t h = 1469598103934665603ull;   /* FNV-1a */
    for (const char *c = name; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ull;
    rng = h ? h : 88172645463325252ull;   /* xorshift's state must not be 0 */
}

float sh_rand_normalish(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return ((float)(rng >> 40) / (float)(1 << 24) - 0.5f) * 0.08f;
}

/* A tensor's ggml header (dims, name length, type, sizes innermost
 * first, name); its element count. */
static size_t write_header(FILE *f, const char *name, int n_dims, const int *shape_outer_first,
                           int f16) {
    int32_t header[3] = {n_dims, (int32_t)strlen(name), f16 ? 1 : 0};
    fwrite(header, 4, 3, f);
    size_t count = 1;
    for (int i = n_dims - 1; i >= 0; i--) {   /* innermost first */
        int32_t ne = shape_outer_first[i];
        fwrite(&ne, 4, 1, f);
        count *= (size_t)ne;
    }
    fwrite(name, 1, strlen(name), f);
    return count;
}

static void write_tensor(FILE *f, const char *name, int n_dims, const int *shape_outer_first,
                         int f16, float fill) {
    size_t count = write_header(f, name, n_dims, shape_outer_first, f16);
    if (f16) {
        uint16_t *buf = malloc(count * 2);
        for (size_t i = 0; i < count; i++) buf[i] = sh_f32_to_f16(sh_rand_normalish());
        fwrite(buf, 2, count, f);
        free(buf);
    } else {
        float *buf = malloc(count * 4);
        for (size_t i = 0; i < count; i++) buf[i] = isnan(fill) ? sh_rand_normalish() : fill;
        fwrite(buf, 4, count, f);
        free(buf);
    }
}

/* A token embedding of a few rows repeated: row t is row t % CLUSTER_ROWS,
 * exactly or with one weight a half's last bit up or down, so that
 * thousands of logits lie within any int8 copy's error of each other and
 * many tie exactly (the logit screen's hardest case). */
#define CLUSTER_ROWS 5
static void write_clustered_rows(FILE *f, const char *name, int n_rows, int d) {
    int shape[2] = {n_rows, d};
    write_header(f, name, 2, shape, 1);
    uint16_t *base = malloc((size_t)CLUSTER_ROWS * d * 2), *row = malloc((size_t)d * 2);
    for (int i = 0; i < CLUSTER_ROWS * d; i++) base[i] = sh_f32_to_f16(sh_rand_normalish());
    for (int t = 0; t < n_rows; t++) {
        memcpy(row, base + (size_t)(t % CLUSTER_ROWS) * d, (size_t)d * 2);
        int j = (int)((t * 7919L) % d);
        if (t >= CLUSTER_ROWS && t % 3 == 1) row[j]++;
        if (t >= CLUSTER_ROWS && t % 3 == 2) row[j]--;
        fwrite(row, 2, (size_t)d, f);
    }
    free(base), free(row);
}

static void write_block(FILE *f, const char *prefix, int d, int cross) {
    char nm[128];
    int dd[2] = {d, d}, up[2] = {4 * d, d}, down[2] = {d, 4 * d}, v1[1] = {d}, v4[1] = {4 * d};
    const char *attns[2] = {"attn", "cross_attn"};
    for (int a = 0; a <= cross; a++) {
        const char *at = attns[a];
        snprintf(nm, sizeof nm, "%s.%s.query.weight", prefix, at); write_tensor(f, nm, 2, dd, 1, NAN);
        snprintf(nm, sizeof nm, "%s.%s.query.bias", prefix, at); write_tensor(f, nm, 1, v1, 0, 0);
        snprintf(nm, sizeof nm, "%s.%s.key.weight", prefix, at); write_tensor(f, nm, 2, dd, 1, NAN);
        snprintf(nm, sizeof nm, "%s.%s.value.weight", prefix, at); write_tensor(f, nm, 2, dd, 1, NAN);
        snprintf(nm, sizeof nm, "%s.%s.value.bias", prefix, at); write_tensor(f, nm, 1, v1, 0, 0);
        snprintf(nm, sizeof nm, "%s.%s.out.weight", prefix, at); write_tensor(f, nm, 2, dd, 1, NAN);
        snprintf(nm, sizeof nm, "%s.%s.out.bias", prefix, at); write_tensor(f, nm, 1, v1, 0, 0);
        snprintf(nm, sizeof nm, "%s.%s_ln.weight", prefix, at); write_tensor(f, nm, 1, v1, 0, 1);
        snprintf(nm, sizeof nm, "%s.%s_ln.bias", prefix, at); write_tensor(f, nm, 1, v1, 0, 0);
    }
    snprintf(nm, sizeof nm, "%s.mlp.0.weight", prefix); write_tensor(f, nm, 2, up, 1, NAN);
    snprintf(nm, sizeof nm, "%s.mlp.0.bias", prefix); write_tensor(f, nm, 1, v4, 0, 0);
    snprintf(nm, sizeof nm, "%s.mlp.2.weight", prefix); write_tensor(f, nm, 2, down, 1, NAN);
    snprintf(nm, sizeof nm, "%s.mlp.2.bias", prefix); write_tensor(f, nm, 1, v1, 0, 0);
    snprintf(nm, sizeof nm, "%s.mlp_ln.weight", prefix); write_tensor(f, nm, 1, v1, 0, 1);
    snprintf(nm, sizeof nm, "%s.mlp_ln.bias", prefix); write_tensor(f, nm, 1, v1, 0, 0);
}

static int build(const char *header_path, const char *out, int clustered) {
    struct stat st;
    if (stat(out, &st) == 0) return 0;
    FILE *in = fopen(header_path, "rb");
    if (!in) return -1;
    char tmp[640];   /* out (< 600) + ".tmp" */
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    FILE *f = fopen(tmp, "wb");
    int32_t hp[12];
    if (!f || fread(hp, 4, 12, in) != 12) {
        if (f) fclose(f);
        fclose(in);
        return -1;
    }
    char buf[65536];
    size_t n;
    fwrite(hp, 4, 12, f);
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, n, f);
    fclose(in);
    /* the weights from the header's name alone: the same file whichever
     * models a process built before (a test's once depended on it) */
    const char *base = strrchr(header_path, '/');
    char seed[300];
    snprintf(seed, sizeof seed, "%s%s", base ? base + 1 : header_path, clustered ? "+clustered" : "");
    sh_rand_seed(seed);
    int n_vocab = hp[1], d = hp[3], n_audio_layer = hp[5], n_text_ctx = hp[6];
    int n_text_layer = hp[9], n_mels = hp[10];
    int pos_a[2] = {1500, d}, c1[3] = {d, n_mels, 3}, c2[3] = {d, d, 3}, cb[2] = {d, 1}, v1[1] = {d};
    int emb[2] = {n_vocab, d}, pos_t[2] = {n_text_ctx, d};
    write_tensor(f, "encoder.positional_embedding", 2, pos_a, 0, NAN);
    write_tensor(f, "encoder.conv1.weight", 3, c1, 1, NAN);
    write_tensor(f, "encoder.conv1.bias", 2, cb, 0, 0);
    write_tensor(f, "encoder.conv2.weight", 3, c2, 1, NAN);
    write_tensor(f, "encoder.conv2.bias", 2, cb, 0, 0);
    char prefix[64];
    for (int i = 0; i < n_audio_layer; i++) {
        snprintf(prefix, sizeof prefix, "encoder.blocks.%d", i);
        write_block(f, prefix, d, 0);
    }
    write_tensor(f, "encoder.ln_post.weight", 1, v1, 0, 1);
    write_tensor(f, "encoder.ln_post.bias", 1, v1, 0, 0);
    write_tensor(f, "decoder.positional_embedding", 2, pos_t, 0, NAN);
    if (clustered) write_clustered_rows(f, "decoder.token_embedding.weight", n_vocab, d);
    else write_tensor(f, "decoder.token_embedding.weight", 2, emb, 1, NAN);
    for (int i = 0; i < n_text_layer; i++) {
        snprintf(prefix, sizeof prefix, "decoder.blocks.%d", i);
        write_block(f, prefix, d, 1);
    }
    write_tensor(f, "decoder.ln.weight", 1, v1, 0, 1);
    write_tensor(f, "decoder.ln.bias", 1, v1, 0, 0);
    fclose(f);
    return rename(tmp, out);
}

int sh_random_model_build(const char *header_path, const char *out) {
    return build(header_path, out, 0);
}

int sh_random_model_build_clustered(const char *header_path, const char *out) {
    return build(header_path, out, 1);
}
