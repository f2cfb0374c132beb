/* test_forward.c - encoder output and teacher-forced logits against the
 * reference for every model (and the f32 file of mini), within the
 * README's tolerances: 1e-3 and 1e-2 absolute, argmax identical. */
#include "cpu/runtime.h"
#include "shruti.h"
#include "test_util.h"

/* Beam b's cache rows equal beam src[b]'s before a reorder: sources that
 * are overwritten (a cycle), shared, and beams that keep their own. */
static void check_reorder(sh_runtime *rt, const char *file) {
    const sh_hparams *hp = &rt->m->hp;
    enum { B = 5, N_POS = 3 };
    int tokens[B * N_POS];
    for (int i = 0; i < B * N_POS; i++) tokens[i] = 220 + 7 * i;
    CHECK(sh_cpu_decoder_reserve(rt, B) == 0, "reserve");
    CHECK(sh_cpu_decoder_forward(rt, tokens, B, N_POS, 0) == 0, "forward beams");
    size_t ctx = (size_t)hp->n_text_ctx * hp->n_text_state, beam_floats = ctx;
    int nb = rt->n_beams;
    size_t all = (size_t)hp->n_text_layer * nb * ctx;
    float *k0 = malloc(all * sizeof *k0), *v0 = malloc(all * sizeof *v0);
    memcpy(k0, rt->self_k, all * sizeof *k0);
    memcpy(v0, rt->self_v, all * sizeof *v0);
    const int src[B] = {2, 0, 1, 3, 1};
    CHECK(sh_cpu_decoder_reorder(rt, src, B, N_POS) == 0, "reorder");
    size_t row = (size_t)N_POS * hp->n_text_state;
    for (int l = 0; l < hp->n_text_layer; l++)
        for (int b = 0; b < B; b++) {
            size_t to = ((size_t)l * nb + b) * beam_floats, from = ((size_t)l * nb + src[b]) * beam_floats;
            CHECK(memcmp(rt->self_k + to, k0 + from, row * sizeof(float)) == 0 &&
                      memcmp(rt->self_v + to, v0 + from, row * sizeof(float)) == 0,
                  "%s layer %d beam %d after reorder", file, l, b);
        }
    const int bad[B] = {0, 1, 2, 3, nb};
    CHECK(sh_cpu_decoder_reorder(rt, bad, B, N_POS) == SHRUTI_ERR_INVALID_ARG, "source out of range");
    free(k0), free(v0);
}

static void check_model(const char *name, const char *file, int threads) {
    cJSON *man = t_manifest(name);
    cJSON *entry = t_model_entry(man, name);
    cJSON *audio = cJSON_GetObjectItem(man, "audio");
    shruti_error err;
    shruti_model_params mp = shruti_model_default_params();
    mp.device = "cpu";   /* this test reads the CPU run state; test_cuda covers the GPU */
    shruti_model *m = shruti_model_load_with_params(t_path("models/%s", file), &mp, &err);
    CHECK(m != NULL, "%s", err.message);
    if (!m) return;
    size_t n_mel;
    float *mel = t_read_f32(cJSON_GetObjectItem(audio, m->hp.n_mels == 128 ? "jfk_mel128"
                                                                              : "jfk_mel80"),
                            &n_mel);
    sh_runtime rt;
    CHECK(sh_cpu_runtime_init(&rt, m, threads) == 0, "runtime");
    CHECK(sh_cpu_encode(&rt, mel) == 0, "encode");
    size_t n_enc;
    float *enc = t_read_f32(cJSON_GetObjectItem(entry, "jfk_encoder_out"), &n_enc);
    CHECK(n_enc == (size_t)1500 * m->hp.n_audio_state, "encoder size");
    double d_enc = t_max_abs_diff(rt.enc_x, enc, n_enc);
    CHECK(d_enc <= 1e-3, "%s encoder max diff %g", file, d_enc);

    cJSON *tf = cJSON_GetObjectItem(entry, "jfk_teacher_forced");
    int n_tok;
    int *tokens = t_int_array(cJSON_GetObjectItem(tf, "tokens"), &n_tok);
    size_t n_logits;
    float *golden = t_read_f32(tf, &n_logits);
    int n_vocab = m->hp.n_vocab;
    CHECK(n_logits == (size_t)n_tok * n_vocab, "logits size");
    CHECK(sh_cpu_decoder_forward(&rt, tokens, 1, n_tok, 0) == 0, "decoder forward");
    float *logits = malloc(n_logits * sizeof *logits);
    sh_cpu_decoder_logits(&rt, rt.dec_x, n_tok, logits);
    double d_log = t_max_abs_diff(logits, golden, n_logits);
    CHECK(d_log <= 1e-2, "%s logits max diff %g", file, d_log);
    for (int i = 0; i < n_tok; i++) {
        int a = 0, b = 0;
        for (int v = 1; v < n_vocab; v++) {
            if (logits[(size_t)i * n_vocab + v] > logits[(size_t)i * n_vocab + a]) a = v;
            if (golden[(size_t)i * n_vocab + v] > golden[(size_t)i * n_vocab + b]) b = v;
        }
        CHECK(a == b, "%s position %d argmax %d vs %d", file, i, a, b);
    }
    /* the KV cache gives the same logits one token at a time */
    for (int i = 0; i < n_tok; i++) CHECK(sh_cpu_decoder_forward(&rt, tokens + i, 1, 1, i) == 0, "step");
    sh_cpu_decoder_logits(&rt, rt.dec_x, 1, logits);
    double d_step = t_max_abs_diff(logits, golden + (size_t)(n_tok - 1) * n_vocab, (size_t)n_vocab);
    CHECK(d_step <= 1e-2, "%s incremental logits diff %g", file, d_step);
    check_reorder(&rt, file);
    printf("%s (%d threads): encoder %.2g, logits %.2g, incremental %.2g\n", file, threads, d_enc,
           d_log, d_step);
    free(logits), free(golden), free(tokens), free(enc), free(mel);
    sh_cpu_runtime_free(&rt);
    shruti_model_free(m);
    cJSON_Delete(man);
}

int main(void) {
    t_require_testdata();
    check_model("mini", "ggml-mini.bin", 2);
    check_model("mini", "ggml-mini-f32.bin", 1);
    check_model("mini.en", "ggml-mini.en.bin", 2);
    check_model("mini-v3", "ggml-mini-v3.bin", 3);
    return t_finish("test_forward");
}
