/* test_quantized.c - quantized ggml files (q8_0, q5_1, q5_0, q4_1, q4_0),
 * written by `shruti quantize` from mini's f32 file, load by widening the
 * blocks; q8_0 keeps every teacher-forced argmax and the jfk tokens of the
 * reference; the coarser kinds stay close. Also block round trips and
 * damaged quantized files. */
#include <unistd.h>

#include "cli/cli_util.h"
#include "device.h"
#include "model/quant.h"
#include "shruti.h"
#include "test_util.h"

static void check_round_trip(void) {
    float x[64], y[64];
    uint8_t q[64 * 2];
    for (int i = 0; i < 64; i++) x[i] = sinf(i * 0.37f) * (i % 7 == 0 ? 3.0f : 0.5f);
    const int types[] = {SH_GGML_Q8_0, SH_GGML_Q5_1, SH_GGML_Q5_0, SH_GGML_Q4_1, SH_GGML_Q4_0};
    /* half a step for the kinds with a minimum; a step for the symmetric
     * ones, whose most negative level is clamped (amax is 3 here) */
    const double bound[] = {0.015, 0.1, 3.0 / 16, 0.2, 3.0 / 8};
    for (int t = 0; t < 5; t++) {
        size_t n = sh_quantize(types[t], x, q, 64);
        int bb;
        sh_ggml_type_size(types[t], NULL, &bb);
        CHECK(n == (size_t)(2 * bb), "type %d size", types[t]);
        sh_dequantize(types[t], q, y, 64);
        double worst = 0;
        for (int i = 0; i < 64; i++) worst = fmax(worst, fabs(x[i] - y[i]));
        CHECK(worst < bound[t], "type %d round trip error %g", types[t], worst);
    }
}

static void check_model(const char *type_name, int must_match) {
    char path[128], cmd[9000];
    snprintf(path, sizeof path, "/tmp/shruti-q-%s-%d.bin", type_name, (int)getpid());
    snprintf(cmd, sizeof cmd, "%s quantize %s %s %s", SHRUTI_CLI,
             t_path("models/%s", "ggml-mini-f32.bin"), path, type_name);
    run_result r = t_run(cmd, 1);
    CHECK(r.status == 0, "quantize %s: %s", type_name, r.out);
    free(r.out);
    shruti_error err;
    shruti_model *m = shruti_model_load(path, &err);
    CHECK(m != NULL, "%s: %s", type_name, err.message);
    if (!m) return;
    cJSON *man = t_manifest("mini");
    cJSON *entry = t_model_entry(man, "mini");
    size_t n;
    float *mel = t_read_f32(cJSON_GetObjectItem(cJSON_GetObjectItem(man, "audio"), "jfk_mel80"), &n);
    sh_run rt;
    sh_run_init(&rt, m, 2);
    sh_encode(&rt, mel);
    cJSON *tf = cJSON_GetObjectItem(entry, "jfk_teacher_forced");
    int n_tok;
    int *tokens = t_int_array(cJSON_GetObjectItem(tf, "tokens"), &n_tok);
    size_t n_logits;
    float *golden = t_read_f32(tf, &n_logits);
    float *logits = malloc(n_logits * sizeof *logits);
    sh_decoder_forward(&rt, tokens, 1, n_tok, 0);
    sh_decoder_logits(&rt, 0, n_tok, logits);
    int same = t_same_argmax(logits, golden, n_tok, m->hp.n_vocab);
    double diff = t_max_abs_diff(logits, golden, n_logits);
    shruti_context *ctx = shruti_context_new(m, 2, &err);
    shruti_params p = shruti_default_params();
    p.language = "en";
    p.n_temperatures = 1;
    shruti_decoding d;
    CHECK(shruti_decode_mel(ctx, mel, &p, &d) == 0, "%s decode", type_name);
    int nw;
    int *want = t_int_array(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(entry,
                            "jfk_decode"), "greedy_timestamps"), "tokens"), &nw);
    int tokens_same = t_same_tokens(want, nw, d.tokens, d.n_tokens);
    printf("%s: logits max diff %.3f, argmax %d/%d, jfk tokens %s\n", type_name, diff, same, n_tok,
           tokens_same ? "identical" : "differ");
    if (must_match) {
        CHECK(same == n_tok, "%s argmax %d/%d", type_name, same, n_tok);
        CHECK(tokens_same, "%s jfk tokens differ", type_name);
    } else {
        CHECK(same >= n_tok / 2, "%s argmax %d/%d", type_name, same, n_tok);
    }
    free(want), free(logits), free(golden), free(tokens), free(mel);
    shruti_context_free(ctx);
    sh_run_free(&rt);
    shruti_model_free(m);
    cJSON_Delete(man);

    /* truncated quantized files fail cleanly */
    size_t size;
    char *bytes = t_read_file(path, &size);
    FILE *f = fopen(path, "wb");
    fwrite(bytes, 1, size - 100, f);
    fclose(f);
    CHECK(shruti_model_load(path, &err) == NULL, "%s truncated loads", type_name);
    free(bytes);
    unlink(path);
}

int main(void) {
    t_require_testdata();
    check_round_trip();
    check_model("q8_0", 1);
    check_model("q5_1", 0);
    check_model("q5_0", 0);
    check_model("q4_1", 0);
    check_model("q4_0", 0);
    return t_finish("test_quantized");
}
