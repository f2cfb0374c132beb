/* test_model_load.c - loading ggml files: hyperparameters and special
 * tokens for all three vocabulary kinds as the manifests list them; f16
 * and f32 files of one model decode alike; and every kind of damaged file
 * (missing, empty, truncated anywhere, corrupted header fields, random
 * byte flips, header-only) is a clean error, never a crash. */
#include <stdint.h>
#include <unistd.h>

#include "model/model.h"
#include "shruti.h"
#include "test_util.h"

static void check_specials(const char *name, const char *file) {
    cJSON *man = t_manifest(name);
    const cJSON *entry = t_model_entry(man, name);
    const cJSON *st = cJSON_GetObjectItem(entry, "special_tokens");
    shruti_error err;
    shruti_model *m = shruti_model_load(t_path("models/%s", file), &err);
    CHECK(m != NULL, "%s: %s", file, err.message);
    if (!m) return;
    const struct { const char *key; int got; } ids[] = {
        {"sot", m->sp.sot}, {"eot", m->sp.eot}, {"translate", m->sp.translate},
        {"transcribe", m->sp.transcribe}, {"sot_lm", m->sp.sot_lm}, {"sot_prev", m->sp.sot_prev},
        {"no_speech", m->sp.no_speech}, {"no_timestamps", m->sp.no_timestamps},
        {"timestamp_begin", m->sp.timestamp_begin}};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        CHECK(cJSON_GetObjectItem(st, ids[i].key)->valueint == ids[i].got, "%s %s: %d vs %d", name,
              ids[i].key, cJSON_GetObjectItem(st, ids[i].key)->valueint, ids[i].got);
    const cJSON *langs = cJSON_GetObjectItem(st, "language_tokens"), *l;
    CHECK(cJSON_GetArraySize(langs) == shruti_model_n_languages(m), "%s language count", name);
    cJSON_ArrayForEach(l, langs) {
        int i = shruti_language_index(m, l->string);
        CHECK(i >= 0 && m->sp.first_language + i == l->valueint, "%s language %s", name, l->string);
        CHECK(i >= 0 && strcmp(shruti_language_code(m, i), l->string) == 0, "code %s", l->string);
    }
    const cJSON *dims = cJSON_GetObjectItem(entry, "dims");
    CHECK(cJSON_GetObjectItem(dims, "n_vocab")->valueint == shruti_model_n_vocab(m), "n_vocab");
    CHECK(cJSON_GetObjectItem(dims, "n_mels")->valueint == shruti_model_n_mels(m), "n_mels");
    CHECK(shruti_language_index(m, "hindi") == (shruti_model_is_multilingual(m) ? 17 : -1),
          "language by name");
    shruti_model_free(m);
    cJSON_Delete(man);
}

static const char *tmp_model(const void *data, size_t n) {
    static char path[64];
    snprintf(path, sizeof path, "/tmp/shruti-test-model-%d.bin", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (n) fwrite(data, 1, n, f);
    fclose(f);
    return path;
}

static int load_fails(const void *data, size_t n, const char *what) {
    shruti_error err;
    shruti_model *m = shruti_model_load(tmp_model(data, n), &err);
    int failed = m == NULL;
    CHECK(failed, "%s: loaded a damaged file", what);
    CHECK(!failed || (err.code < 0 && err.message[0]), "%s: no error message", what);
    shruti_model_free(m);
    return failed;
}

static void put_i32(uint8_t *p, int32_t v) { memcpy(p, &v, 4); }

static void check_damaged_files(void) {
    size_t n;
    uint8_t *orig = t_read_file(t_path("models/%s", "ggml-mini.bin"), &n);
    uint8_t *buf = malloc(n);
    shruti_error err;
    CHECK(shruti_model_load("/nonexistent/model.bin", &err) == NULL && err.code == SHRUTI_ERR_IO,
          "missing file");
    CHECK(shruti_model_load("/tmp", &err) == NULL, "a directory");
    CHECK(shruti_model_load(NULL, &err) == NULL, "NULL path");
    load_fails("", 0, "empty file");

    /* truncated: every length up to the tensors, then a spread beyond */
    int n_trunc = 0;
    for (size_t len = 0; len < n; len = len < 70000 ? len + 97 : len + n / 150) {
        n_trunc += load_fails(orig, len, "truncated");
    }
    load_fails(orig, n - 1, "one byte short");
    printf("truncated copies rejected: %d\n", n_trunc);

    /* header fields with bad values */
    const struct { size_t off; int32_t v; const char *what; } fields[] = {
        {0, 0x12345678, "magic"}, {4, -1, "n_vocab"}, {4, 60000, "n_vocab"},
        {8, 1499, "n_audio_ctx"}, {12, 0, "n_audio_state"}, {16, 3, "heads not dividing"},
        {20, 100000, "layers"}, {24, -5, "n_text_ctx"}, {40, 81, "n_mels"},
        {48, 80000, "mel filter rows"}, {52, 200, "mel filter columns"}};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        memcpy(buf, orig, n);
        put_i32(buf + fields[i].off, fields[i].v);
        load_fails(buf, n, fields[i].what);
    }
    size_t vocab_off = 56 + 80 * 201 * 4;
    memcpy(buf, orig, n);
    put_i32(buf + vocab_off, 0x7fffffff);
    load_fails(buf, n, "vocabulary count");
    memcpy(buf, orig, n);
    put_i32(buf + vocab_off + 4, -3);
    load_fails(buf, n, "token length");
    memcpy(buf, orig, n);
    put_i32(buf + vocab_off + 4, 1 << 30);
    load_fails(buf, n, "token length huge");

    /* the first tensor header: after the vocabulary */
    size_t off = vocab_off + 4;
    int32_t count;
    memcpy(&count, orig + vocab_off, 4);
    for (int i = 0; i < count; i++) {
        int32_t len;
        memcpy(&len, orig + off, 4);
        off += 4 + (size_t)len;
    }
    const struct { size_t rel; int32_t v; const char *what; } tensor_fields[] = {
        {0, 5, "n_dims"}, {0, 0, "n_dims zero"}, {4, 100000, "name length"}, {4, 0, "name empty"},
        {8, 99, "tensor type"}, {8, 2, "quantized type"}, {12, 65, "shape"}, {12, -1, "shape"}};
    for (size_t i = 0; i < sizeof tensor_fields / sizeof tensor_fields[0]; i++) {
        memcpy(buf, orig, n);
        put_i32(buf + off + tensor_fields[i].rel, tensor_fields[i].v);
        load_fails(buf, n, tensor_fields[i].what);
    }
    memcpy(buf, orig, n);
    buf[off + 12 + 8] ^= 0x20;   /* a letter of the first tensor's name */
    load_fails(buf, n, "unknown tensor name");
    /* the whole file twice: every tensor appears twice */
    uint8_t *twice = malloc(2 * n - off);
    memcpy(twice, orig, n);
    memcpy(twice + n, orig + off, n - off);
    load_fails(twice, 2 * n - off, "duplicate tensors");
    free(twice);

    /* random byte flips in the headers: load or fail, never crash */
    uint64_t seed = 12345;
    int loaded = 0;
    for (int i = 0; i < 300; i++) {
        memcpy(buf, orig, n);
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        size_t pos = (seed >> 33) % (off + 4000);
        buf[pos] ^= (uint8_t)(1u << ((seed >> 20) % 8));
        shruti_model *m = shruti_model_load(tmp_model(buf, n), &err);
        loaded += m != NULL;
        shruti_model_free(m);
    }
    printf("random flips: %d of 300 still loadable (vocabulary text, filter values)\n", loaded);

    /* header-only files of the real sizes: a clear "missing tensor" error */
    const char *headers[] = {"tiny", "tiny.en", "base", "large"};
    for (int i = 0; i < 4; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "model-headers/for-tests-ggml-%s.bin", headers[i]);
        shruti_model *m = shruti_model_load(t_path("%s", rel), &err);
        CHECK(m == NULL && strstr(err.message, "missing tensor"), "%s: %s", rel, err.message);
    }
    unlink(tmp_model("", 0));
    free(buf);
    free(orig);
}

/* f16 and f32 files of mini give the same tokens on the jfk window. */
static void check_f16_f32(void) {
    cJSON *man = t_manifest("mini");
    size_t n;
    float *mel = t_read_f32(cJSON_GetObjectItem(cJSON_GetObjectItem(man, "audio"), "jfk_mel80"), &n);
    const char *files[2] = {"ggml-mini.bin", "ggml-mini-f32.bin"};
    int32_t tokens[2][512];
    int n_tokens[2];
    for (int i = 0; i < 2; i++) {
        shruti_error err;
        shruti_model *m = shruti_model_load(t_path("models/%s", files[i]), &err);
        shruti_context *ctx = shruti_context_new(m, 2, &err);
        shruti_params p = shruti_default_params();
        p.n_temperatures = 1;
        p.beam_size = 5;
        shruti_decoding d;
        CHECK(shruti_decode_mel(ctx, mel, &p, &d) == 0, "%s decode", files[i]);
        n_tokens[i] = d.n_tokens;
        memcpy(tokens[i], d.tokens, sizeof(int32_t) * (size_t)d.n_tokens);
        shruti_context_free(ctx);
        shruti_model_free(m);
    }
    CHECK(n_tokens[0] == n_tokens[1] &&
              memcmp(tokens[0], tokens[1], sizeof(int32_t) * (size_t)n_tokens[0]) == 0,
          "f16 and f32 decode differently");
    free(mel);
    cJSON_Delete(man);
}

static int in_map(const shruti_model *m, const void *p) {
    const char *a = m->map, *q = p;
    return q >= a && q < a + m->map_size;
}

/* Matrices already in their compute type are read where they lie in the
 * mapped file (not copied); halves at odd addresses included. */
static void check_in_place(void) {
    shruti_model_params mp = shruti_model_default_params();
    mp.device = "cpu";
    mp.compute_type = "float16";
    shruti_error err;
    shruti_model *m = shruti_model_load_with_params(t_path("models/%s", "ggml-mini.bin"), &mp, &err);
    CHECK(m != NULL, "load: %s", err.message);
    if (!m) return;
    const sh_hparams *hp = &m->hp;
    int mapped = in_map(m, m->w.tok_emb.data), odd = 0, n = 1;
    for (int l = 0; l < hp->n_text_layer; l++) {
        const sh_block *b = &m->w.dec[l];
        const sh_mat *mats[] = {&b->q_w, &b->k_w, &b->v_w, &b->o_w, &b->cq_w, &b->ck_w,
                                &b->cv_w, &b->co_w, &b->fc1_w, &b->fc2_w};
        for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++, n++) {
            mapped += in_map(m, mats[i]->data);
            odd += (uintptr_t)mats[i]->data % 2;
        }
    }
    CHECK(mapped == n, "decoder matrices in place: %d of %d", mapped, n);
    /* the encoder's half matrices too (widened in bands for OpenBLAS) */
    CHECK(in_map(m, m->w.enc[0].q_w.data) && in_map(m, m->w.enc[hp->n_audio_layer - 1].fc2_w.data),
          "the encoder's matrices in place");
    /* what is left for the arena: vectors (biases, norms, positions) */
    CHECK(m->arena_floats * 4 < m->map_size / 4, "arena %zu bytes, file %zu",
          m->arena_floats * 4, m->map_size);
    printf("mini float16: %d decoder matrices in place (%d at odd addresses), arena %.1f MB, "
           "file %.1f MB\n", mapped, odd, m->arena_floats * 4 / 1e6, m->map_size / 1e6);
    shruti_model_free(m);
}

int main(void) {
    t_require_testdata();
    check_specials("mini", "ggml-mini.bin");
    check_specials("mini", "ggml-mini-f32.bin");
    check_specials("mini.en", "ggml-mini.en.bin");
    check_specials("mini-v3", "ggml-mini-v3.bin");
    check_f16_f32();
    check_in_place();
    check_damaged_files();
    return t_finish("test_model_load");
}
