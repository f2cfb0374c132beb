/* test_cuda.c - the CUDA backend: device selection and its messages (also
 * where no GPU is), then on a GPU, for float32, float16 and int8_float16:
 * teacher-forced logits against the reference, the KV cache step by step,
 * long-form transcription of longform.wav token for token, two contexts
 * side by side, and the move to the CPU when the GPU fails (injected with
 * SHRUTI_CUDA_FAULT) with the transcript unchanged.
 *
 * Tolerances on teacher-forced logits (whose values span about +-20):
 * float32 1e-2 as on the CPU; float16 rounds weights and GEMM inputs to
 * 11 bits (relative 5e-4), which through 4 layers of sums moves logits by
 * a few 1e-2 (0.03 seen), so 0.15; int8_float16 adds per-32 int8 weights
 * (relative 4e-3; 0.9 seen on mini), 1.5. The argmax must agree at every
 * position for float32 and float16 and at 90% of them for int8_float16. */
#include "decode/logit_filters.h"
#include "device.h"
#include "shruti.h"
#include "test_util.h"
#include "tools/random_model.h"

static shruti_model *load(const char *file, const char *compute, const char *device,
                          shruti_error *err) {
    shruti_model_params mp = shruti_model_default_params();
    mp.compute_type = compute;
    mp.device = device;
    return shruti_model_load_with_params(t_path("models/%s", file), &mp, err);
}

/* Selection without a usable GPU: auto says why it chose the CPU, cuda is
 * an error that says why, a bad name is refused. */
static void check_selection_without_gpu(const char *why) {
    shruti_error err;
    shruti_model *m = load("ggml-mini.bin", "auto", "auto", &err);
    CHECK(m && strcmp(shruti_model_device(m), "cpu") == 0, "auto without a GPU must be the CPU");
    if (m) {
        CHECK(*shruti_model_device_note(m) != '\0', "auto must say why it chose the CPU");
        printf("auto: %s (%s)\n", shruti_model_device(m), shruti_model_device_note(m));
    }
    shruti_model_free(m);
    m = load("ggml-mini.bin", "auto", "cuda", &err);
    CHECK(!m && err.code == SHRUTI_ERR_DEVICE && strstr(err.message, "CUDA"),
          "cuda without a GPU must be a clear error: %s", m ? "loaded" : err.message);
    printf("cuda: %s\n", err.message);
    shruti_model_free(m);
    (void)why;
}

static void check_bad_names(void) {
    shruti_error err;
    shruti_model *m = load("ggml-mini.bin", "auto", "tpu", &err);
    CHECK(!m && err.code == SHRUTI_ERR_INVALID_ARG, "device 'tpu' must be refused");
    shruti_model_free(m);
    m = load("ggml-mini.bin", "auto", "cpu", &err);
    CHECK(m && strcmp(shruti_model_device(m), "cpu") == 0, "cpu must be the CPU");
    shruti_model_free(m);
}

/* The greedy choice made on the GPU (mask, timestamp rule, argmax,
 * log-softmax there) against the CPU's choice from the same logits, for
 * every teacher-forced row under masks that take each branch. One-row
 * choices of float16 models go through the logit screen: the same tokens,
 * their log-probabilities' normalizer from int8 values of the unlikely
 * tokens (held to 3e-3 here: the mini models' 64-wide rows are the
 * screen's loosest); everything else to 1e-4. */
static void check_greedy(sh_run *rt, const float *logits, int n_rows) {
    const shruti_model *m = rt->m;
    int n_vocab = m->hp.n_vocab, ts = m->sp.timestamp_begin, eot = m->sp.eot, same = 0, total = 0;
    double worst = 0, worst_one = 0;
    long screened0 = rt->gpu_api->screened(rt->gpu);
    float *row = malloc((size_t)n_vocab * sizeof *row);
    int32_t ids[51];
    for (int i = 0; i < n_rows; i++) {
        const float *want = logits + (size_t)i * n_vocab;
        for (int k = 0; k < 50; k++) ids[k] = k;
        ids[50] = t_argmax(want, n_vocab);
        sh_logit_mask masks[5] = {
            {.ts_begin = -1},
            {.ids = ids, .n_ids = 51, .ts_begin = -1},
            {.n_ranges = 1, .ranges = {{m->sp.no_timestamps, m->sp.no_timestamps + 1}}, .ts_begin = ts},
            {.n_ranges = 1, .ranges = {{0, eot}}, .ts_begin = ts},
            {.ids = ids, .n_ids = 51, .n_ranges = 2, .ranges = {{ts, n_vocab}, {eot, eot + 1}}, .ts_begin = ts},
        };
        for (int k = 0; k < 5; k++) {
            int tok_gpu = -1, tok_cpu = -2;
            double lp_gpu = 0, lp_cpu = 0;
            memcpy(row, want, (size_t)n_vocab * sizeof *row);
            sh_pick_greedy(&masks[k], row, n_vocab, &tok_cpu, &lp_cpu);
            CHECK(sh_decoder_greedy(rt, i, 1, &masks[k], &tok_gpu, &lp_gpu) == 0, "greedy: %s", rt->note);
            total++;
            same += tok_gpu == tok_cpu;
            double d = fabs(lp_gpu - lp_cpu);
            if (d > worst_one) worst_one = d;
        }
    }
    long screened = rt->gpu_api->screened(rt->gpu) - screened0;
    /* every row at once, each under its own mask (as batched windows) */
    sh_logit_mask all[64] = {{0}};
    int toks[64], n_all = n_rows < 64 ? n_rows : 64;
    double lps[64];
    for (int i = 0; i < n_all; i++)
        all[i] = (sh_logit_mask){.ids = ids, .n_ids = 50, .n_ranges = i % 2,
                                 .ranges = {{ts, n_vocab}}, .ts_begin = i % 3 ? ts : -1};
    CHECK(sh_decoder_greedy(rt, 0, n_all, all, toks, lps) == 0, "greedy rows: %s", rt->note);
    for (int i = 0; i < n_all; i++) {
        int tok_cpu;
        double lp_cpu;
        memcpy(row, logits + (size_t)i * n_vocab, (size_t)n_vocab * sizeof *row);
        sh_pick_greedy(&all[i], row, n_vocab, &tok_cpu, &lp_cpu);
        total++;
        same += toks[i] == tok_cpu;
        if (fabs(lps[i] - lp_cpu) > worst) worst = fabs(lps[i] - lp_cpu);
    }
    /* beam search's top k, one row at a time and all rows at once */
    int tg[64 * 33], tc[33], top_same = 0, top_total = 0;
    double lg[64 * 33], lc[33];
    for (int i = 0; i < n_all; i++) {
        const int k = 1 + i % 33;
        CHECK(sh_decoder_topk(rt, i, 1, &all[i], k, tg, lg) == 0, "top k: %s", rt->note);
        memcpy(row, logits + (size_t)i * n_vocab, (size_t)n_vocab * sizeof *row);
        sh_pick_top(&all[i], row, n_vocab, k, tc, lc);
        top_total++;
        top_same += memcmp(tg, tc, sizeof(int) * (size_t)k) == 0;
        for (int c = 0; c < k; c++)
            if (fabs(lg[c] - lc[c]) > worst) worst = fabs(lg[c] - lc[c]);
    }
    CHECK(sh_decoder_topk(rt, 0, n_all, all, 6, tg, lg) == 0, "top k rows: %s", rt->note);
    for (int i = 0; i < n_all; i++) {
        memcpy(row, logits + (size_t)i * n_vocab, (size_t)n_vocab * sizeof *row);
        sh_pick_top(&all[i], row, n_vocab, 6, tc, lc);
        top_total++;
        top_same += memcmp(tg + i * 6, tc, sizeof(int) * 6) == 0;
    }
    printf("top k on the GPU: %d/%d lists as the CPU's\n", top_same, top_total);
    CHECK(top_same == top_total, "top-k lists differ: %d/%d", top_same, top_total);
    printf("greedy on the GPU: %d/%d choices as the CPU's, log-probability max diff %.2g (one row "
           "%.2g, %ld screened)\n", same, total, worst, worst_one, screened);
    CHECK(same == total, "greedy choices differ: %d/%d", same, total);
    CHECK(worst < 1e-4, "greedy log-probabilities differ by %g", worst);
    CHECK(worst_one < (screened ? 3e-3 : 1e-4), "one-row greedy log-probabilities differ by %g",
          worst_one);
    free(row);
}

/* Teacher-forced logits and the incremental steps. */
static void check_logits(const char *name, const char *file, const char *compute, double tol,
                         double min_argmax) {
    cJSON *man = t_manifest(name);
    cJSON *entry = t_model_entry(man, name);
    shruti_error err;
    shruti_model *m = load(file, compute, "cuda", &err);
    CHECK(m != NULL, "%s %s: %s", file, compute, err.message);
    if (!m) {
        cJSON_Delete(man);
        return;
    }
    size_t n_mel;
    float *mel = t_read_f32(cJSON_GetObjectItem(cJSON_GetObjectItem(man, "audio"),
                                                shruti_model_n_mels(m) == 128 ? "jfk_mel128" : "jfk_mel80"),
                            &n_mel);
    sh_run rt;
    CHECK(sh_run_init(&rt, m, 2) == 0 && rt.gpu, "GPU run state: %s", rt.note);
    CHECK(sh_encode(&rt, mel) == 0, "encode");
    cJSON *tf = cJSON_GetObjectItem(entry, "jfk_teacher_forced");
    int n_tok, n_vocab = shruti_model_n_vocab(m);
    int *tokens = t_int_array(cJSON_GetObjectItem(tf, "tokens"), &n_tok);
    size_t n_logits;
    float *golden = t_read_f32(tf, &n_logits);
    float *logits = malloc(n_logits * sizeof *logits);
    CHECK(sh_decoder_forward(&rt, tokens, 1, n_tok, 0) == 0, "forward");
    CHECK(sh_decoder_logits(&rt, 0, n_tok, logits) == 0, "logits");
    double diff = t_max_abs_diff(logits, golden, n_logits);
    int same = t_same_argmax(logits, golden, n_tok, n_vocab);
    check_greedy(&rt, logits, n_tok);
    /* the cache, one token at a time, gives the last row again */
    for (int i = 0; i < n_tok; i++) CHECK(sh_decoder_forward(&rt, tokens + i, 1, 1, i) == 0, "step");
    CHECK(sh_decoder_logits(&rt, 0, 1, logits) == 0, "logits");
    double step = t_max_abs_diff(logits, golden + (size_t)(n_tok - 1) * n_vocab, (size_t)n_vocab);
    printf("%s %s: logits max diff %.3g (step by step %.3g), argmax %d/%d\n", file, compute, diff,
           step, same, n_tok);
    CHECK(diff <= tol && step <= tol, "%s %s: logits diff %g / %g > %g", file, compute, diff, step, tol);
    CHECK(same >= min_argmax * n_tok, "%s %s: argmax %d/%d", file, compute, same, n_tok);
    free(logits), free(golden), free(tokens), free(mel);
    sh_run_free(&rt);
    shruti_model_free(m);
    cJSON_Delete(man);
}

/* longform.wav through shruti_transcribe, segment tokens and times. */
static int same_segments(shruti_context *ctx, const cJSON *want, const char *what) {
    const cJSON *ws = cJSON_GetObjectItem(want, "segments");
    int n = shruti_n_segments(ctx), ok = n == cJSON_GetArraySize(ws);
    for (int i = 0; ok && i < n; i++) {
        const shruti_segment *g = shruti_get_segment(ctx, i);
        const cJSON *w = cJSON_GetArrayItem(ws, i);
        int nw;
        int *tw = t_int_array(cJSON_GetObjectItem(w, "tokens"), &nw);
        ok = t_same_tokens(tw, nw, g->tokens, g->n_tokens) &&
             fabs(g->start - cJSON_GetObjectItem(w, "start")->valuedouble) < 1e-6 &&
             fabs(g->end - cJSON_GetObjectItem(w, "end")->valuedouble) < 1e-6;
        free(tw);
    }
    printf("%s: %d segments, %s\n", what, n, ok ? "identical" : "DIFFER");
    return ok;
}

static void check_longform(const char *name, const char *file, const char *compute) {
    cJSON *man = t_manifest(name);
    const cJSON *lt = cJSON_GetObjectItem(t_model_entry(man, name), "longform_transcribe");
    size_t n;
    float *pcm = t_read_wav(t_path("audio/%s", "longform.wav"), &n);
    shruti_error err;
    shruti_model *m = load(file, compute, "cuda", &err);
    shruti_context *ctx = m ? shruti_context_new(m, 2, &err) : NULL;
    CHECK(ctx && pcm, "%s: %s", file, err.message);
    for (int th = 0; ctx && pcm && th < 2; th++) {
        shruti_params p = shruti_default_params();
        p.language = "en";
        p.n_temperatures = 1;
        p.temperatures[0] = 0;
        if (th == 1) p.compression_ratio_threshold = p.logprob_threshold = p.no_speech_threshold = NAN;
        CHECK(shruti_transcribe(ctx, pcm, n, &p) == 0, "transcribe: %s", shruti_context_error(ctx));
        char what[128];
        snprintf(what, sizeof what, "%s %s longform %s", file, compute, th ? "no_thresholds" : "default");
        int ok = same_segments(ctx, cJSON_GetObjectItem(lt, th ? "no_thresholds" : "default_thresholds"), what);
        if (strcmp(compute, "int8_float16") != 0) CHECK(ok, "%s differs", what);
    }
    free(pcm);
    shruti_context_free(ctx);
    shruti_model_free(m);
    cJSON_Delete(man);
}

/* Transcribes pcm with batched windows on ctx; the segments' tokens and
 * times as one flat list for comparing (caller frees). */
static int *batched_tokens(shruti_context *ctx, const float *pcm, size_t n, int batch, int *count) {
    shruti_params p = shruti_default_params();
    p.language = "en";
    p.n_temperatures = 1;
    p.temperatures[0] = 0;
    p.batch_size = batch;
    *count = 0;
    if (shruti_transcribe(ctx, pcm, n, &p) != 0) return NULL;
    int total = 0;
    for (int i = 0; i < shruti_n_segments(ctx); i++) total += shruti_get_segment(ctx, i)->n_tokens + 2;
    int *v = malloc(sizeof(int) * (size_t)(total + 1));
    for (int i = 0; i < shruti_n_segments(ctx); i++) {
        const shruti_segment *g = shruti_get_segment(ctx, i);
        v[(*count)++] = (int)(g->start * 100 + 0.5);
        v[(*count)++] = (int)(g->end * 100 + 0.5);
        for (int k = 0; k < g->n_tokens; k++) v[(*count)++] = g->tokens[k];
    }
    return v;
}

/* Row k of a batch of bound windows is that window decoded alone: two
 * windows (jfk's mel and the same scaled down, so the two differ), the
 * prompt for both in one forward, then three steps of both at once. */
static void check_bound_rows(void) {
    cJSON *man = t_manifest("mini.en");
    shruti_error err;
    shruti_model *m = load("ggml-mini.en.bin", "float32", "cuda", &err);
    CHECK(m != NULL, "bound rows: %s", err.message);
    if (!m) {
        cJSON_Delete(man);
        return;
    }
    size_t n_mel;
    float *mel = t_read_f32(cJSON_GetObjectItem(cJSON_GetObjectItem(man, "audio"), "jfk_mel80"), &n_mel);
    float *mel2 = malloc(n_mel * sizeof *mel2);
    for (size_t i = 0; i < n_mel; i++) mel2[i] = mel[i] * 0.5f - 0.3f;
    const float *mels[2] = {mel, mel2};
    int n_vocab = shruti_model_n_vocab(m), prompt[3] = {50257, 50362, 50363}, steps[3] = {440, 1222, 13};
    float *alone = malloc((size_t)2 * 4 * n_vocab * sizeof *alone);
    float *both = malloc((size_t)8 * n_vocab * sizeof *both);
    sh_run rt;
    CHECK(sh_run_init(&rt, m, 2) == 0 && rt.gpu, "GPU run state: %s", rt.note);
    /* each window alone: prompt, then the steps; the last row's logits each time */
    for (int w = 0; w < 2; w++) {
        CHECK(sh_encode(&rt, mels[w]) == 0 && sh_decoder_reserve(&rt, 1) == 0, "encode");
        CHECK(sh_decoder_forward(&rt, prompt, 1, 3, 0) == 0, "prompt");
        CHECK(sh_decoder_logits(&rt, 2, 1, alone + (size_t)(w * 4) * n_vocab) == 0, "logits");
        for (int i = 0; i < 3; i++) {
            CHECK(sh_decoder_forward(&rt, &steps[i], 1, 1, 3 + i) == 0, "step");
            CHECK(sh_decoder_logits(&rt, 0, 1, alone + (size_t)(w * 4 + 1 + i) * n_vocab) == 0, "logits");
        }
    }
    /* both at once */
    int rows[6] = {prompt[0], prompt[1], prompt[2], prompt[0], prompt[1], prompt[2]};
    CHECK(sh_windows_reserve(&rt, 2) == 2, "two windows");
    for (int w = 0; w < 2; w++) CHECK(sh_encode_window(&rt, mels[w], w) == 0, "encode window");
    CHECK(sh_bind_windows(&rt, true) == 0 && sh_decoder_reserve(&rt, 2) == 0, "bind");
    CHECK(sh_decoder_forward(&rt, rows, 2, 3, 0) == 0, "prompt of both");
    CHECK(sh_decoder_logits(&rt, 2, 1, both) == 0 && sh_decoder_logits(&rt, 5, 1, both + (size_t)4 * n_vocab) == 0, "logits");
    for (int i = 0; i < 3; i++) {
        int two[2] = {steps[i], steps[i]};
        CHECK(sh_decoder_forward(&rt, two, 2, 1, 3 + i) == 0, "step of both");
        float *pair = malloc((size_t)2 * n_vocab * sizeof *pair);
        CHECK(sh_decoder_logits(&rt, 0, 2, pair) == 0, "logits");
        memcpy(both + (size_t)(1 + i) * n_vocab, pair, (size_t)n_vocab * sizeof *pair);
        memcpy(both + (size_t)(5 + i) * n_vocab, pair + n_vocab, (size_t)n_vocab * sizeof *pair);
        free(pair);
    }
    sh_bind_windows(&rt, false);
    double worst = 0, apart = t_max_abs_diff(alone, alone + (size_t)4 * n_vocab, (size_t)n_vocab);
    for (int k = 0; k < 8; k++) {
        double dk = t_max_abs_diff(both + (size_t)k * n_vocab, alone + (size_t)k * n_vocab, (size_t)n_vocab);
        printf("  bound rows: window %d, step %d: max diff %.3g\n", k / 4, k % 4, dk);
        if (dk > worst) worst = dk;
    }
    printf("bound windows: rows of a batch vs each window alone: max diff %.3g (the windows "
           "differ by %.3g)\n", worst, apart);
    CHECK(worst < 1e-3 && apart > 0.1, "bound rows differ from windows alone: %g", worst);
    sh_run_free(&rt);
    free(alone), free(both), free(mel), free(mel2);
    shruti_model_free(m);
    cJSON_Delete(man);
}

/* Batched windows on the GPU (rows bound to their own windows, through
 * the GEMV up to 8 rows and cuBLAS beyond) give the CPU's results, which
 * decodes the same windows one at a time: 11 windows, each an English
 * clip padded with silence to 30 s. */
static void check_batched(void) {
    const char *clips[] = {"clips/00_en.wav", "clips/01_en.wav", "clips/02_en.wav",
                           "clips/03_en.wav", "clips/04_en.wav", "clips/05_en.wav",
                           "clips/06_en.wav", "clips/07_en.wav", "jfk.wav",
                           "clips/00_en.wav", "clips/01_en.wav"};
    const size_t win = 30 * 16000;
    size_t n = 11 * win;
    float *pcm = calloc(n, sizeof *pcm);
    for (int k = 0; k < 11; k++) {
        size_t len;
        float *clip = t_read_wav(t_path("audio/%s", clips[k]), &len);
        CHECK(clip && len <= win, "%s", clips[k]);
        if (clip && len <= win) memcpy(pcm + k * win, clip, len * sizeof *pcm);
        free(clip);
    }
    shruti_error err;
    shruti_model *gm = load("ggml-mini.en.bin", "float32", "cuda", &err);
    shruti_model *cm = load("ggml-mini.en.bin", "float32", "cpu", &err);
    shruti_context *g = gm ? shruti_context_new(gm, 2, &err) : NULL;
    shruti_context *c = cm ? shruti_context_new(cm, 2, &err) : NULL;
    CHECK(g && c, "batched: %s", err.message);
    int nc = 0, counts[3] = {0};
    int *cpu = c ? batched_tokens(c, pcm, n, 16, &nc) : NULL;
    const int batches[3] = {2, 4, 16};
    CHECK(cpu && nc > 100, "CPU batched transcription");
    for (int k = 0; k < 3 && cpu && g; k++) {
        int *got = batched_tokens(g, pcm, n, batches[k], &counts[k]);
        int first = 0;
        while (got && first < counts[k] && first < nc && got[first] == cpu[first]) first++;
        int same = got && counts[k] == nc && first == nc;
        printf("batched windows (11) on the GPU, batch %d: %s the CPU's (%d vs %d values, "
               "first difference at %d)\n", batches[k], same ? "identical to" : "DIFFER from",
               counts[k], nc, first);
        CHECK(same, "batch %d differs", batches[k]);
        free(got);
    }
    /* no GPU memory for 16 windows (injected above 5): fewer at once, still on the GPU */
    setenv("SHRUTI_CUDA_FAULT", "windows:5", 1);
    shruti_context *g2 = gm ? shruti_context_new(gm, 2, &err) : NULL;
    int n2 = 0, *got = g2 && cpu ? batched_tokens(g2, pcm, n, 16, &n2) : NULL;
    CHECK(got && n2 == nc && memcmp(got, cpu, sizeof(int) * (size_t)nc) == 0 &&
              strcmp(shruti_context_device(g2), "cuda") == 0,
          "batch 16 with room for 4 windows: %s", g2 ? shruti_context_device_note(g2) : err.message);
    printf("batched windows, no GPU memory for 16: %s on %s\n",
           got && n2 == nc && memcmp(got, cpu, sizeof(int) * (size_t)nc) == 0 ? "identical" : "DIFFER",
           g2 ? shruti_context_device(g2) : "-");
    unsetenv("SHRUTI_CUDA_FAULT");
    free(got);
    shruti_context_free(g2);
    free(cpu), free(pcm);
    shruti_context_free(g), shruti_context_free(c);
    shruti_model_free(gm), shruti_model_free(cm);
}

/* jfk greedy with timestamps on ctx; 1 when the tokens are the reference's. */
static int jfk_ok(shruti_context *ctx, const cJSON *entry, const float *mel) {
    shruti_params p = shruti_default_params();
    p.language = "en";
    p.n_temperatures = 1;
    p.temperatures[0] = 0;
    shruti_decoding d;
    if (shruti_decode_mel(ctx, mel, &p, &d) != 0) return 0;
    int nw;
    int *want = t_int_array(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(entry,
                            "jfk_decode"), "greedy_timestamps"), "tokens"), &nw);
    int ok = t_same_tokens(want, nw, d.tokens, d.n_tokens);
    free(want);
    return ok;
}

/* Two contexts on one GPU model, interleaved; then injected faults. */
static void check_contexts_and_faults(void) {
    cJSON *man = t_manifest("mini");
    cJSON *entry = t_model_entry(man, "mini");
    size_t n_mel;
    float *mel = t_read_f32(cJSON_GetObjectItem(cJSON_GetObjectItem(man, "audio"), "jfk_mel80"), &n_mel);
    shruti_error err;
    shruti_model *m = load("ggml-mini.bin", "float16", "cuda", &err);
    CHECK(m != NULL, "%s", err.message);
    if (!m) return;
    shruti_context *a = shruti_context_new(m, 2, &err), *b = shruti_context_new(m, 2, &err);
    for (int i = 0; i < 2; i++) {
        CHECK(jfk_ok(a, entry, mel), "context a, round %d", i);
        CHECK(jfk_ok(b, entry, mel), "context b, round %d", i);
    }
    CHECK(strcmp(shruti_context_device(a), "cuda") == 0, "contexts stay on the GPU");
    shruti_context_free(a), shruti_context_free(b);

    /* a kernel failing mid-window: the window is redone on the CPU */
    setenv("SHRUTI_CUDA_FAULT", "forward:5", 1);
    shruti_context *c = shruti_context_new(m, 2, &err);
    CHECK(jfk_ok(c, entry, mel), "after a GPU failure the tokens must not change");
    CHECK(strcmp(shruti_context_device(c), "cpu") == 0 &&
          strstr(shruti_context_device_note(c), "injected"), "the move to the CPU must be told: %s",
          shruti_context_device_note(c));
    printf("fault mid-window: %s, %s\n", shruti_context_device(c), shruti_context_device_note(c));
    CHECK(jfk_ok(c, entry, mel), "and the next window runs on the CPU");
    shruti_context_free(c);
    /* no GPU memory for a context's run state: that context uses the CPU */
    setenv("SHRUTI_CUDA_FAULT", "state", 1);
    c = shruti_context_new(m, 2, &err);
    CHECK(c && strcmp(shruti_context_device(c), "cpu") == 0, "state fault: CPU context");
    CHECK(c && jfk_ok(c, entry, mel), "state fault: tokens");
    shruti_context_free(c);
    shruti_model_free(m);
    /* no GPU memory for the weights: auto falls back, cuda fails */
    setenv("SHRUTI_CUDA_FAULT", "upload", 1);
    m = load("ggml-mini.bin", "float16", "auto", &err);
    CHECK(m && strcmp(shruti_model_device(m), "cpu") == 0 &&
          strstr(shruti_model_device_note(m), "out of memory"), "upload fault with auto: %s",
          m ? shruti_model_device_note(m) : err.message);
    shruti_model_free(m);
    m = load("ggml-mini.bin", "float16", "cuda", &err);
    CHECK(!m && err.code == SHRUTI_ERR_DEVICE, "upload fault with cuda must fail");
    shruti_model_free(m);
    unsetenv("SHRUTI_CUDA_FAULT");
    free(mel);
    cJSON_Delete(man);
}

/* Two run states fed the same tokens, one through the path under test:
 * how far apart their logits came (the largest difference, the largest
 * logit) and how often their argmax agreed. */
typedef struct {
    double diff, range;
    int same, total;
} agreement;

static void agreement_add(agreement *a, const float *tested, const float *base, int rows,
                          int n_vocab) {
    size_t n = (size_t)rows * n_vocab;
    a->diff = fmax(a->diff, t_max_abs_diff(tested, base, n));
    for (size_t v = 0; v < n; v++) a->range = fmax(a->range, fabs(base[v]));
    a->same += t_same_argmax(tested, base, rows, n_vocab);
    a->total += rows;
}

/* The verdict: logits within tol of their range and the same argmax but
 * for at most 1 row in 100; identical logits where the path should have
 * run mean it did not. Sums in another order move a logit by ~1e-4 here,
 * which flips a row's argmax where its two best are that close: among
 * ~900 rows of 51865 random logits, once in a while (base int8_float16,
 * two rows: 895 / 896 on an H200 with the weights drawn when the whole
 * suite built its models in order; the draw depends on which random
 * models a run finds already in TMPDIR). A real error flips many. */
static void check_agreement(const char *what, const char *setup, const agreement *a, double tol,
                            int should_run) {
    printf("%s (%s): max diff %.3g of logits up to %.3g, argmax %d/%d\n", what, setup, a->diff,
           a->range, a->same, a->total);
    CHECK(a->diff <= tol * a->range, "%s: logits differ by %g (range %g)", what, a->diff, a->range);
    CHECK((a->total - a->same) * 100 <= a->total, "%s: argmax %d/%d", what, a->same, a->total);
    if (should_run) CHECK(a->diff > 0, "%s did not run (identical logits)", what);
}

/* A model of size's shape with random weights (built once into TMPDIR)
 * on the GPU in compute_type, and a random mel window for it; NULL (and a
 * failed check) when either cannot be made. */
static shruti_model *random_model_of(const char *size, int clustered, const char *compute_type,
                                     float **mel) {
    char path[600], header[64];
    const char *tmp = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/shruti-test-%s-random%s.bin", tmp ? tmp : "/tmp", size,
             clustered ? "-clustered" : "");
    snprintf(header, sizeof header, "for-tests-ggml-%s.bin", size);
    const char *from = t_path("model-headers/%s", header);
    if ((clustered ? sh_random_model_build_clustered(from, path) : sh_random_model_build(from, path)) < 0) {
        CHECK(0, "cannot build %s", path);
        return NULL;
    }
    shruti_model_params mp = shruti_model_default_params();
    mp.compute_type = compute_type;
    mp.device = "cuda";
    shruti_error err;
    shruti_model *m = shruti_model_load_with_params(path, &mp, &err);
    CHECK(m != NULL, "%s: %s", path, err.message);
    if (!m) return NULL;
    int n_mel = shruti_model_n_mels(m) * 3000;
    *mel = malloc(sizeof(float) * (size_t)n_mel);
    char seed[96];   /* the mel from the model's name alone, as its weights */
    snprintf(seed, sizeof seed, "%s mel", header);
    sh_rand_seed(seed);
    for (int i = 0; i < n_mel; i++) (*mel)[i] = sh_rand_normalish() * 10;
    return m;
}

static shruti_model *random_model(const char *size, const char *compute_type, float **mel) {
    return random_model_of(size, 0, compute_type, mel);
}

/* The greedy pick through the token embedding's int8 screen (float16,
 * kernels.cu's k_screen_pick) on its hardest case: a tiny-shaped model
 * whose embedding is 5 rows repeated, exactly and a last bit apart
 * (thousands of rows inside each other's bound, exact ties among them).
 * Every row of a 32-token prompt under masks that take each branch,
 * against a state that computes every logit from the half weights
 * (SHRUTI_LOGIT_SCREEN=0) and against the CPU's choice from the exact
 * logits: the same tokens (ties to the lower id); the log-probabilities
 * within 1e-2 (their normalizer takes the int8 values of rows outside the
 * bound: 5 clusters of ~10000 rows, each cluster's error the same, the
 * worst case for it); and the screen must have made the choices. */
static void check_screen(void) {
    float *mel = NULL;
    shruti_model *m = random_model_of("tiny", 1, "float16", &mel);
    if (!m) return;
    sh_run rt[2];   /* [0] without the screen, [1] with it */
    setenv("SHRUTI_LOGIT_SCREEN", "0", 1);
    int r0 = sh_run_init(&rt[0], m, 2);
    unsetenv("SHRUTI_LOGIT_SCREEN");
    int r1 = sh_run_init(&rt[1], m, 2);
    CHECK(r0 == 0 && r1 == 0 && rt[0].gpu && rt[1].gpu, "GPU run states");
    int n_vocab = shruti_model_n_vocab(m), ts = m->sp.timestamp_begin, eot = m->sp.eot;
    enum { N = 32 };
    int tokens[N], same = 0, total = 0;
    for (int i = 0; i < N; i++) tokens[i] = i < 4 ? (int[]){50258, 50259, 50359, 50364}[i] : (i * 1543) % eot;
    for (int k = 0; k < 2; k++) {
        CHECK(sh_encode(&rt[k], mel) == 0, "encode");
        CHECK(sh_decoder_forward(&rt[k], tokens, 1, N, 0) == 0, "prompt");
    }
    float *logits = malloc((size_t)N * n_vocab * sizeof *logits);
    float *row = malloc((size_t)n_vocab * sizeof *row);   /* the CPU's pick's copy */
    CHECK(sh_decoder_logits(&rt[0], 0, N, logits) == 0, "logits");
    int32_t ids[3] = {0, 1, 2};
    double worst = 0;
    for (int i = 0; i < N; i++) {
        int top = t_argmax(logits + (size_t)i * n_vocab, n_vocab);
        ids[2] = top;   /* the best suppressed: the next cluster's rows win */
        sh_logit_mask masks[4] = {
            {.ts_begin = -1},
            {.ids = ids, .n_ids = 3, .n_ranges = 1, .ranges = {{top - top % 5, top + 1}}, .ts_begin = -1},
            {.n_ranges = 1, .ranges = {{m->sp.no_timestamps, m->sp.no_timestamps + 1}}, .ts_begin = ts},
            {.n_ranges = 1, .ranges = {{0, eot}}, .ts_begin = ts},
        };
        for (int k = 0; k < 4; k++) {
            int tok[2], tok_cpu;
            double lp[2], lp_cpu;
            for (int s = 0; s < 2; s++)
                CHECK(sh_decoder_greedy(&rt[s], i, 1, &masks[k], &tok[s], &lp[s]) == 0, "greedy: %s",
                      rt[s].note);
            memcpy(row, logits + (size_t)i * n_vocab, (size_t)n_vocab * sizeof *row);
            sh_pick_greedy(&masks[k], row, n_vocab, &tok_cpu, &lp_cpu);
            total++;
            same += tok[0] == tok[1] && tok[1] == tok_cpu;
            if (fabs(lp[1] - lp[0]) > worst) worst = fabs(lp[1] - lp[0]);
        }
    }
    long screened[2] = {rt[0].gpu_api->screened(rt[0].gpu), rt[1].gpu_api->screened(rt[1].gpu)};
    printf("logit screen, clustered embedding: %d/%d choices as every logit's, log-probability "
           "max diff %.2g, %ld / %ld picks screened\n", same, total, worst, screened[0], screened[1]);
    CHECK(same == total, "the screen's choices differ: %d/%d", same, total);
    CHECK(worst < 1e-2, "the screen's log-probabilities differ by %g", worst);
    CHECK(screened[0] == 0 && screened[1] == total, "picks screened %ld / %ld", screened[0],
          screened[1]);
    free(logits), free(row), free(mel);
    sh_run_free(&rt[0]), sh_run_free(&rt[1]);
    shruti_model_free(m);
}

/* The pick made by the step after it (fused_step.cu's pick_first) on the
 * screen's hardest case, as check_screen's but in base's shape (the
 * smallest whose one-row step leaves the logits to the pick): an
 * embedding of 5 rows repeated, exactly and a last bit apart, so that
 * thousands of rows tie within their bounds across every block. 120
 * greedy steps fed back, the masks taking each branch in turn, against a
 * state whose choices the pick's kernel makes (SHRUTI_CUDA_PICK_IN_STEP=0;
 * check_screen holds it to every logit's): the same tokens, ties to the
 * lower id, but for rows whose logits tie within float rounding (the two
 * picks' layer norms sum in different orders: a choice may differ where
 * both tokens' log-probabilities agree within 1e-5, as one of 120 does
 * with these weights); log-probabilities within 1e-2
 * (check_screen's bound: the normalizer takes int8 values of rows outside
 * the bound); and the choices made in the step. */
static void check_step_pick_ties(void) {
    float *mel = NULL;
    shruti_model *m = random_model_of("base", 1, "float16", &mel);
    if (!m) return;
    sh_run rt[2];
    for (int k = 0; k < 2; k++) {
        setenv("SHRUTI_CUDA_PICK_IN_STEP", k ? "1" : "0", 1);
        CHECK(sh_run_init(&rt[k], m, 2) == 0 && rt[k].gpu, "GPU run state: %s", rt[k].note);
    }
    unsetenv("SHRUTI_CUDA_PICK_IN_STEP");
    int ts = m->sp.timestamp_begin, eot = m->sp.eot, no_ts = m->sp.no_timestamps;
    int32_t ids[3] = {0, 1, 2};
    sh_logit_mask masks[4] = {
        {.ts_begin = -1},
        {.ids = ids, .n_ids = 3, .n_ranges = 1, .ranges = {{100, 5000}}, .ts_begin = -1},
        {.n_ranges = 1, .ranges = {{no_ts, no_ts + 1}}, .ts_begin = ts},
        {.n_ranges = 1, .ranges = {{0, eot}}, .ts_begin = ts},
    };
    int prompt[4] = {50258, 50259, 50359, 50364}, tok[2] = {0, 0}, same = 0, ties = 0, total = 0;
    double lp[2], worst = 0;
    for (int k = 0; k < 2 && rt[0].gpu && rt[1].gpu; k++) {
        CHECK(sh_encode(&rt[k], mel) == 0, "encode");
        CHECK(sh_decoder_forward(&rt[k], prompt, 1, 4, 0) == 0, "prompt");
        CHECK(sh_decoder_greedy(&rt[k], 3, 1, &masks[0], &tok[k], &lp[k]) == 0, "greedy");
    }
    for (int pos = 4; pos < 124 && rt[0].gpu && rt[1].gpu; pos++) {
        int next = tok[0];
        for (int k = 0; k < 2; k++) {
            CHECK(sh_decoder_forward(&rt[k], &next, 1, 1, pos) == 0, "step at %d", pos);
            CHECK(sh_decoder_greedy(&rt[k], 0, 1, &masks[pos % 4], &tok[k], &lp[k]) == 0,
                  "greedy: %s", rt[k].note);
        }
        total++;
        same += tok[0] == tok[1];
        ties += tok[0] != tok[1] && fabs(lp[1] - lp[0]) < 1e-5;
        if (fabs(lp[1] - lp[0]) > worst) worst = fabs(lp[1] - lp[0]);
    }
    long made[2] = {rt[0].gpu ? rt[0].gpu_api->step_picks(rt[0].gpu) : 0,
                    rt[1].gpu ? rt[1].gpu_api->step_picks(rt[1].gpu) : 0};
    printf("pick in the step, clustered embedding (base shape): %d/%d choices as the pick "
           "kernel's (%d others tied within float rounding), log-probability max diff %.2g, "
           "%ld / %ld made in the step\n", same, total, ties, worst, made[0], made[1]);
    CHECK(same + ties == total && ties * 20 <= total, "the step's choices differ: %d/%d (%d ties)",
          same, total, ties);
    CHECK(worst < 1e-2, "the step's log-probabilities differ by %g", worst);
    /* every choice of the loop (the prompt's is before the one-row step's
     * graph, with nothing run ahead of it) */
    CHECK(made[0] == 0 && made[1] == total, "choices made in the step: %ld / %ld", made[0],
          made[1]);
    free(mel);
    sh_run_free(&rt[0]), sh_run_free(&rt[1]);
    shruti_model_free(m);
}

/* The fused step (fused_step.cu: compute 9.0 and later, heads 64 wide;
 * the mini models' heads are 16 wide, so a model of a real size's shape
 * with random weights: tiny for float16, base and tiny for int8_float16,
 * base's rows one by one, tiny's in pairs to keep their scales on 16
 * bytes) against the separate kernels, as two run states side by side fed
 * the same tokens: logits at every position of the text context
 * (self-attention splits over 1 to 5 blocks as it grows). Only the order
 * of the float sums differs, so the logits agree to ~1e-5 of their range
 * (tolerance 1e-3 of it) and in argmax; identical logits would mean the
 * fused step never ran, a failure where it should. grid > 0 runs it on
 * that many blocks, as on a part with that many SMs. rows 2: the step of
 * two rows (ROWS 2), each fed its own tokens, as batched windows
 * (windows 2: each row its own window, bound) or as two beams (windows
 * 1: both rows over one window, each its own caches). */
static void check_fused_step(int cc_major, const char *size, const char *compute_type, int grid,
                             int rows, int windows) {
    float *mel;
    shruti_model *m = random_model(size, compute_type, &mel);
    if (!m) return;
    int n_vocab = shruti_model_n_vocab(m), n_mel = shruti_model_n_mels(m) * 3000;
    float *mel2 = malloc(sizeof(float) * (size_t)n_mel);
    for (int i = 0; i < n_mel; i++) mel2[i] = mel[i] * 0.5f - 0.3f;
    float *logits[2] = {malloc(sizeof(float) * rows * n_vocab),
                        malloc(sizeof(float) * rows * n_vocab)};
    sh_run rt[2];
    agreement agree = {0};
    int steps = 448, tok[2] = {50258, 50259};
    for (int fused = 0; fused < 2; fused++) {
        /* read when a state captures its first step */
        setenv("SHRUTI_CUDA_FUSED", fused ? "1" : "0", 1);
        char blocks[16];
        snprintf(blocks, sizeof blocks, "%d", grid);
        setenv("SHRUTI_CUDA_FUSED_GRID", blocks, 1);
        CHECK(sh_run_init(&rt[fused], m, 2) == 0 && rt[fused].gpu, "GPU run state: %s",
              rt[fused].note);
        if (windows == 2) {
            CHECK(sh_windows_reserve(&rt[fused], 2) == 2, "two windows");
            CHECK(sh_encode_window(&rt[fused], mel, 0) == 0 &&
                  sh_encode_window(&rt[fused], mel2, 1) == 0, "encode windows");
            CHECK(sh_bind_windows(&rt[fused], true) == 0, "bind");
        } else {
            CHECK(sh_encode(&rt[fused], mel) == 0, "encode");
        }
        if (rows > 1) CHECK(sh_decoder_reserve(&rt[fused], rows) == 0, "%d rows", rows);
        CHECK(sh_decoder_forward(&rt[fused], tok, rows, 1, 0) == 0, "first step");
    }
    unsetenv("SHRUTI_CUDA_FUSED");
    unsetenv("SHRUTI_CUDA_FUSED_GRID");
    for (int i = 0; i < steps; i++) {
        for (int k = 0; k < 2; k++) {
            if (i > 0) CHECK(sh_decoder_forward(&rt[k], tok, rows, 1, i) == 0, "step %d", i);
            CHECK(sh_decoder_logits(&rt[k], 0, rows, logits[k]) == 0, "logits");
        }
        agreement_add(&agree, logits[1], logits[0], rows, n_vocab);
        /* text tokens, the same for both states */
        tok[0] = 400 + (i * 37) % 1000, tok[1] = 900 + (i * 53) % 1000;
    }
    /* only the order of float sums differs: within 1e-3 */
    char setup[128];
    if (rows == 1)
        snprintf(setup, sizeof setup, "%s, %s shape, random weights, 448 steps, %d blocks",
                 compute_type, size, grid);
    else
        snprintf(setup, sizeof setup, "%s, %s shape, random weights, 2 rows x 448 steps, %s",
                 compute_type, size, windows == 2 ? "a window each" : "one window (beams)");
    check_agreement(rows == 1 ? "fused step vs kernels" : "fused step of two rows vs kernels",
                    setup, &agree, 1e-3, cc_major >= 9);
    /* a trapped kernel would have moved the run to the CPU, not failed it */
    for (int k = 0; k < 2; k++) CHECK(rt[k].gpu != NULL, "the run left the GPU: %s", rt[k].note);
    sh_run_free(&rt[0]), sh_run_free(&rt[1]);
    free(mel), free(mel2), free(logits[0]), free(logits[1]);
    shruti_model_free(m);
}

/* The two run states of check_speculation, fed alike. */
typedef struct {
    sh_run rt[2];               /* [0] waits for the host, [1] runs ahead */
    sh_logit_mask mk;
    int n_vocab, tok[2];
    double lp[2];
    double lp_tol;              /* how far their log-probabilities may differ */
    int steps, differ;
} spec_pair;

static void spec_greedy(spec_pair *p, int row) {
    for (int k = 0; k < 2; k++)
        CHECK(sh_decoder_greedy(&p->rt[k], row, 1, &p->mk, &p->tok[k], &p->lp[k]) == 0,
              "greedy: %s", p->rt[k].note);
    p->differ += p->tok[0] != p->tok[1] || fabs(p->lp[0] - p->lp[1]) > p->lp_tol;
    p->steps++;
}

static void spec_forward(spec_pair *p, int tok, int pos) {
    for (int k = 0; k < 2; k++)
        CHECK(sh_decoder_forward(&p->rt[k], &tok, 1, 1, pos) == 0, "step at %d", pos);
}

/* A window: its encoding, a 4-token prompt, the first choice. */
static void spec_window(spec_pair *p, const float *mel) {
    int prompt[4] = {50258, 50259, 50359, 50364};
    for (int k = 0; k < 2; k++) {
        CHECK(sh_encode(&p->rt[k], mel) == 0, "encode");
        CHECK(sh_decoder_forward(&p->rt[k], prompt, 1, 4, 0) == 0, "prompt");
    }
    spec_greedy(p, 3);
}

/* The step run ahead of the host after a one-row greedy choice (on the
 * chosen token, SHRUTI_CUDA_SPECULATE unset) against a run state that
 * waits for the host (=0), both fed the same: the choices fed back as the
 * greedy decoder does, up to the end of the text context, and every way
 * the host can leave a speculated step unused: another token, another
 * position, the step's own logits read, a second choice from them, a new
 * window. The same kernels on the same inputs: choices, log-probabilities
 * and logits identical; the steps taken and wasted as many as made so.
 * With env SHRUTI_CUDA_PICK_IN_STEP instead, both states run ahead, one
 * with each choice made by the step run ahead itself (a fused step that
 * begins with the pick: base's shape and up, float16): the same choices
 * and logits, the log-probabilities within the screen's tolerance (its
 * normalizer sums the int8 values of other rows than the pick's kernel's),
 * and every choice with a step after it made so. eot_stops: where the
 * steps run ahead are fused kernels launched alone (float16 and
 * int8_float16 from base's shape up), none runs on the end of text. */
static void check_speculation(shruti_model *m, const float *mel, const char *what,
                              const char *env, int eot_stops) {
    const int pick = strcmp(env, "SHRUTI_CUDA_PICK_IN_STEP") == 0;
    spec_pair p = {.n_vocab = shruti_model_n_vocab(m), .lp_tol = pick ? 3e-3 : 0.0};
    p.mk = (sh_logit_mask){.n_ranges = 1, .ts_begin = m->sp.timestamp_begin,
                           .ranges = {{m->sp.no_timestamps, m->sp.no_timestamps + 1}}};
    for (int k = 0; k < 2; k++) {
        setenv(env, k ? "1" : "0", 1);
        CHECK(sh_run_init(&p.rt[k], m, 2) == 0 && p.rt[k].gpu, "GPU run state: %s", p.rt[k].note);
    }
    unsetenv(env);
    if (!p.rt[0].gpu || !p.rt[1].gpu) return;
    int n_ctx = m->hp.n_text_ctx, wasted = 0, taken = 0;
    float *logits[2] = {malloc(sizeof(float) * p.n_vocab), malloc(sizeof(float) * p.n_vocab)};
    spec_window(&p, mel);
    /* the first step captures the one-row graph: nothing runs ahead of it */
    for (int pos = 4; pos < n_ctx; pos++) {
        taken += pos > 4;
        spec_forward(&p, p.tok[0], pos);
        spec_greedy(&p, 0);
    }
    /* the last choice had no room after it; another token, then another
     * position (the step before again) */
    spec_forward(&p, 400, 40);
    spec_greedy(&p, 0);
    spec_forward(&p, (p.tok[0] + 1) % p.n_vocab, 41), wasted++;
    spec_greedy(&p, 0);
    spec_forward(&p, p.tok[0], 41), wasted++;
    spec_greedy(&p, 0);
    /* the step's own logits, then a second choice from them */
    for (int k = 0; k < 2; k++) CHECK(sh_decoder_logits(&p.rt[k], 0, 1, logits[k]) == 0, "logits");
    wasted++;
    CHECK(memcmp(logits[0], logits[1], sizeof(float) * p.n_vocab) == 0,
          "%s: the logits read after a speculated step differ", what);
    spec_greedy(&p, 0);   /* runs ahead again, and a second choice takes it back */
    p.mk.n_ranges = 0;
    spec_greedy(&p, 0), wasted++;
    spec_forward(&p, p.tok[0], 42), taken++;
    spec_greedy(&p, 0);
    /* a new window while a step runs ahead */
    spec_window(&p, mel), wasted++;
    spec_forward(&p, p.tok[0], 4);
    spec_greedy(&p, 0), taken++;
    long got[2][2];
    for (int k = 0; k < 2; k++) p.rt[k].gpu_api->speculated(p.rt[k].gpu, &got[k][0], &got[k][1]);
    printf("%s: %d choices, %d differ; steps run ahead: %ld taken, %ld wasted (%d / %d expected)\n",
           what, p.steps, p.differ, got[1][0], got[1][1], taken, wasted + 1);
    CHECK(p.differ == 0, "%s: %d choices differ with the step run ahead", what, p.differ);
    /* the last choice's step is still ahead, unused */
    CHECK(got[1][0] == taken && got[1][1] == wasted + 1, "%s: steps run ahead %ld / %ld", what,
          got[1][0], got[1][1]);
    if (!pick) {
        CHECK(got[0][0] == 0 && got[0][1] == 0, "%s: SHRUTI_CUDA_SPECULATE=0 ran ahead", what);
    } else {
        long made[2] = {p.rt[0].gpu_api->step_picks(p.rt[0].gpu),
                        p.rt[1].gpu_api->step_picks(p.rt[1].gpu)};
        printf("%s: choices made by the step after them: %ld (%ld with %s=0)\n", what, made[1],
               made[0], env);
        CHECK(made[0] == 0 && made[1] == taken + wasted + 1, "%s: %ld / %ld choices in the step",
              what, made[0], made[1]);
    }
    if (eot_stops) {
        /* the end of text (forced by the mask): decoding stops at it, so
         * no state runs a step on it ahead (the step that chose it stops
         * there, or the step behind the pick's kernel runs nothing); that
         * token's step then runs as any other, the same logits in both */
        spec_forward(&p, p.tok[0], 5);   /* takes the step ahead of the last choice */
        const int eot = m->sp.eot;
        p.mk = (sh_logit_mask){.n_ranges = 2, .ts_begin = -1,
                               .ranges = {{0, eot}, {eot + 1, p.n_vocab}}};
        spec_greedy(&p, 0);
        CHECK(p.tok[0] == eot && p.tok[1] == eot, "%s: the end of text not chosen: %d, %d", what,
              p.tok[0], p.tok[1]);
        spec_forward(&p, eot, 6);
        for (int k = 0; k < 2; k++) CHECK(sh_decoder_logits(&p.rt[k], 0, 1, logits[k]) == 0, "logits");
        CHECK(memcmp(logits[0], logits[1], sizeof(float) * p.n_vocab) == 0,
              "%s: the logits of the end of text's step differ", what);
        long end[2][2];
        for (int k = 0; k < 2; k++) p.rt[k].gpu_api->speculated(p.rt[k].gpu, &end[k][0], &end[k][1]);
        printf("%s: after the end of text, steps run ahead taken %ld -> %ld (the other state %ld -> "
               "%ld)\n", what, got[1][0], end[1][0], got[0][0], end[0][0]);
        /* the states that run ahead took one step more (the one ahead of
         * the last choice, which got's wasted had counted) and none on
         * the end of text */
        for (int k = 0; k < 2; k++) {
            int ahead = pick || k == 1;
            CHECK(end[k][0] == got[k][0] + ahead && end[k][1] == got[k][1] - ahead,
                  "%s: state %d's steps run ahead after the end of text: %ld / %ld", what, k,
                  end[k][0], end[k][1]);
        }
    }
    free(logits[0]), free(logits[1]);
    sh_run_free(&p.rt[0]), sh_run_free(&p.rt[1]);
}

/* A decoder path for several rows against the one it replaces: a model of
 * size's shape with random weights, two run states side by side (env at
 * off and on, read when a state is made), 1 to 8 rows a step (beams of one
 * window), a 4-token prompt (its rows too), every row's logits compared
 * within tol of their range.
 * - SHRUTI_CUDA_MMA: the tensor-core GEMV (half or int8 weights, x as
 *   hi + lo halves), =all, against the float GEMV, =0.
 * - SHRUTI_CUDA_ATT_ROWS: the cross-attention of rows that share the
 *   window in blocks of two (k_attention_rows), =1 whatever the grid,
 *   against a block a row, =0 (the same sums in another order). */
static void check_rows_switch(int cc_major, const char *size, const char *compute_type,
                              const char *env, const char *off, const char *on, const char *what,
                              double tol) {
    float *mel;
    shruti_model *m = random_model(size, compute_type, &mel);
    if (!m) return;
    int n_vocab = shruti_model_n_vocab(m);
    float *logits[2] = {malloc(sizeof(float) * 8 * n_vocab), malloc(sizeof(float) * 8 * n_vocab)};
    sh_run rt[2];
    for (int k = 0; k < 2; k++) {
        setenv(env, k ? on : off, 1);
        CHECK(sh_run_init(&rt[k], m, 8) == 0 && rt[k].gpu, "GPU run state: %s", rt[k].note);
        CHECK(sh_encode(&rt[k], mel) == 0, "encode");
    }
    unsetenv(env);
    const int prompt[4] = {50258, 50259, 50359, 50364}, widths[] = {1, 2, 3, 5, 8};
    agreement agree = {0};
    for (int wi = 0; wi < 5; wi++) {
        int rows = widths[wi], toks[8];
        for (int k = 0; k < 2; k++) {
            CHECK(sh_decoder_reserve(&rt[k], rows) == 0, "reserve %d", rows);
            CHECK(sh_decoder_forward(&rt[k], prompt, 1, 4, 0) == 0, "prompt");
            CHECK(sh_decoder_logits(&rt[k], 0, 4, logits[k]) == 0, "prompt logits");
            CHECK(sh_decoder_broadcast(&rt[k], rows, 4) == 0, "broadcast");
        }
        for (int step = 0; step <= 12; step++) {
            int n = step ? rows : 4;   /* step 0: the prompt's rows */
            for (int r = 0; r < rows; r++) toks[r] = 400 + (step * 37 + r * 101) % 1000;
            for (int k = 0; k < 2 && step; k++) {
                CHECK(sh_decoder_forward(&rt[k], toks, rows, 1, 3 + step) == 0, "step");
                CHECK(sh_decoder_logits(&rt[k], 0, rows, logits[k]) == 0, "logits");
            }
            agreement_add(&agree, logits[1], logits[0], n, n_vocab);
        }
    }
    char setup[96];
    snprintf(setup, sizeof setup, "%s, %s shape, random weights, 1-8 rows", compute_type, size);
    check_agreement(what, setup, &agree, tol, cc_major >= 8);
    sh_run_free(&rt[0]), sh_run_free(&rt[1]);
    free(mel), free(logits[0]), free(logits[1]);
    shruti_model_free(m);
}

/* An encoder path against the one it replaces: two run states (env at
 * 0 and unset, read when a state is made) encode the same random window
 * of a tiny-shaped float16 model, then decode a 4-token prompt and 12
 * steps, and their logits must agree within tol.
 * - SHRUTI_CUDA_FLASH: the encoder's attention in one kernel
 *   (encoder_attention.cu; 64-wide heads, the mini models' 16-wide ones
 *   keep cuBLAS) against cuBLAS and the softmax kernel. Both round the
 *   probabilities to half, at different points (before and after the
 *   normalisation), so the logits differ by a few half ulps of the
 *   encoder output carried through the decoder, not the 1e-5 of a
 *   reordered sum.
 * - SHRUTI_CUDA_CROSS_BATCH: the cross keys and values as two batched
 *   GEMMs against one GEMM a layer (other kernels, other summation
 *   orders: a half ulp of a key here and there).
 * - SHRUTI_CUDA_ENCODER_GRAPH: the encoder replayed from its captured
 *   graph against its kernels launched one by one (identical).
 * - SHRUTI_CUDA_ENCODER_WGMMA: that attention on warpgroup MMAs (compute
 *   9.0) against its mma.sync form: the same products and softmax in the
 *   same order (the same bits on the H200; a reordered sum allowed). */
static void check_encoder_switch(shruti_model *m, const float *mel, const char *env,
                                 const char *what, double tol, int must_differ) {
    int n_vocab = shruti_model_n_vocab(m);
    float *logits[2] = {malloc(sizeof(float) * 4 * n_vocab), malloc(sizeof(float) * 4 * n_vocab)};
    sh_run rt[2];
    for (int k = 0; k < 2; k++) {
        if (k == 0) setenv(env, "0", 1);
        CHECK(sh_run_init(&rt[k], m, 8) == 0 && rt[k].gpu, "GPU run state: %s", rt[k].note);
        unsetenv(env);
        CHECK(sh_encode(&rt[k], mel) == 0 && sh_decoder_reserve(&rt[k], 1) == 0, "encode");
    }
    const int prompt[4] = {50258, 50259, 50359, 50364};
    agreement agree = {0};
    for (int step = 0; step <= 12; step++) {
        int n = step ? 1 : 4, tok = 400 + step * 37;
        for (int k = 0; k < 2; k++) {
            CHECK((step ? sh_decoder_forward(&rt[k], &tok, 1, 1, 3 + step)
                        : sh_decoder_forward(&rt[k], prompt, 1, 4, 0)) == 0, "forward");
            CHECK(sh_decoder_logits(&rt[k], 0, n, logits[k]) == 0, "logits");
        }
        agreement_add(&agree, logits[1], logits[0], n, n_vocab);
    }
    check_agreement(what, "tiny shape, random weights, float16", &agree, tol, must_differ);
    sh_run_free(&rt[0]), sh_run_free(&rt[1]);
    free(logits[0]), free(logits[1]);
}

/* A window's prompt replayed from its graph (SHRUTI_CUDA_PROMPT_GRAPH)
 * against the same prompt launched kernel by kernel: the same bits for
 * every row of prompts of 4 and 3 tokens, over three windows (the graph
 * captured at the first, replayed on the next windows' cross keys), and
 * the one-token step after each. */
static void check_prompt_graph(shruti_model *m, const float *mel) {
    int n_vocab = shruti_model_n_vocab(m), n_mel = shruti_model_n_mels(m) * 3000;
    float *logits[2] = {malloc(sizeof(float) * 4 * n_vocab), malloc(sizeof(float) * 4 * n_vocab)};
    float *window = malloc(sizeof(float) * (size_t)n_mel);
    sh_run rt[2];
    for (int k = 0; k < 2; k++) {
        if (k == 0) setenv("SHRUTI_CUDA_PROMPT_GRAPH", "0", 1);
        CHECK(sh_run_init(&rt[k], m, 8) == 0 && rt[k].gpu, "GPU run state: %s", rt[k].note);
        unsetenv("SHRUTI_CUDA_PROMPT_GRAPH");
    }
    const int prompt[4] = {50258, 50259, 50359, 50364};
    agreement agree = {0};
    for (int w = 0; w < 6; w++) {
        int n = w % 2 ? 3 : 4, tok = 400 + 37 * w;
        for (int i = 0; i < n_mel; i++) window[i] = mel[(i + 997 * (w / 2)) % n_mel];
        for (int k = 0; k < 2; k++) {
            CHECK(sh_encode(&rt[k], window) == 0 && sh_decoder_reserve(&rt[k], 1) == 0, "encode");
            CHECK(sh_decoder_forward(&rt[k], prompt, 1, n, 0) == 0, "prompt");
            CHECK(sh_decoder_logits(&rt[k], 0, n, logits[k]) == 0, "logits");
        }
        agreement_add(&agree, logits[1], logits[0], n, n_vocab);
        for (int k = 0; k < 2; k++) {
            CHECK(sh_decoder_forward(&rt[k], &tok, 1, 1, n) == 0, "step");
            CHECK(sh_decoder_logits(&rt[k], 0, 1, logits[k]) == 0, "logits");
        }
        agreement_add(&agree, logits[1], logits[0], 1, n_vocab);
    }
    check_agreement("prompt as a graph vs launched one by one", "tiny shape, random weights, float16",
                    &agree, 0.0, 0);
    sh_run_free(&rt[0]), sh_run_free(&rt[1]);
    free(logits[0]), free(logits[1]), free(window);
}

static void check_encoder_switches(int cc_major) {
    float *mel;
    shruti_model *m = random_model("tiny", "float16", &mel);
    if (!m) return;
    check_encoder_switch(m, mel, "SHRUTI_CUDA_FLASH", "encoder attention in one kernel vs cuBLAS",
                         1e-2, cc_major >= 8);
    /* (the same kernels and sums may well give the same bits: not
     * required to differ) */
    check_encoder_switch(m, mel, "SHRUTI_CUDA_CROSS_BATCH",
                         "cross keys and values batched vs a GEMM a layer", 1e-2, 0);
    check_encoder_switch(m, mel, "SHRUTI_CUDA_ENCODER_WGMMA",
                         "encoder attention on warpgroup MMAs vs mma.sync", 1e-4, 0);
    /* the same kernels replayed from a graph: the same bits */
    check_encoder_switch(m, mel, "SHRUTI_CUDA_ENCODER_GRAPH",
                         "encoder as a graph vs launched one by one", 0.0, 0);
    check_prompt_graph(m, mel);
    free(mel);
    shruti_model_free(m);
}

/* Speculation over the kernels (mini, float32: heads 16 wide) and over
 * the fused step where it runs (tiny's shape, float16). */
static void check_speculation_models(void) {
    cJSON *man = t_manifest("mini");
    size_t n_mel;
    float *mel = t_read_f32(cJSON_GetObjectItem(cJSON_GetObjectItem(man, "audio"), "jfk_mel80"), &n_mel);
    shruti_error err;
    shruti_model *m = load("ggml-mini.bin", "float32", "cuda", &err);
    CHECK(m != NULL, "%s", err.message);
    if (m) check_speculation(m, mel, "speculation, mini float32", "SHRUTI_CUDA_SPECULATE", 0);
    shruti_model_free(m);
    free(mel);
    cJSON_Delete(man);
    m = random_model("tiny", "float16", &mel);
    if (m) check_speculation(m, mel, "speculation, tiny shape float16", "SHRUTI_CUDA_SPECULATE", 0);
    shruti_model_free(m);
    free(mel);
    /* base's shape, int8: the pick's own kernel, the fused step behind it */
    m = random_model("base", "int8_float16", &mel);
    if (m)
        check_speculation(m, mel, "speculation, base shape int8_float16", "SHRUTI_CUDA_SPECULATE",
                          1);
    shruti_model_free(m);
    free(mel);
    /* base's shape: the step begins with the pick of the step before */
    m = random_model("base", "float16", &mel);
    if (m)
        check_speculation(m, mel, "pick in the step, base shape float16",
                          "SHRUTI_CUDA_PICK_IN_STEP", 1);
    shruti_model_free(m);
    free(mel);
}

/* test_cuda [fused|speculation|screen|flash]: with an argument, only those
 * checks (a quick run while working on that part). */
int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int only_fused = argc > 1 && strcmp(argv[1], "fused") == 0;
    int only_speculation = argc > 1 && strcmp(argv[1], "speculation") == 0;
    int only_screen = argc > 1 && strcmp(argv[1], "screen") == 0;
    int only_flash = argc > 1 && strcmp(argv[1], "flash") == 0;
    int only_rows = argc > 1 && strcmp(argv[1], "rows") == 0;
    t_require_testdata();
    printf("backends: %s\n", shruti_backends());
    check_bad_names();
    shruti_device_info devs[8];
    char versions[128];
    shruti_error err;
    int n = shruti_cuda_devices(devs, 8, versions, sizeof versions, &err), usable = 0;
    if (n < 0) printf("CUDA: %s\n", err.message);
    for (int i = 0; i < n && i < 8; i++) {
        printf("device %d: %s, compute %d.%d, %s\n", i, devs[i].name, devs[i].cc_major,
               devs[i].cc_minor, devs[i].note);
        usable += devs[i].usable;
    }
    if (n >= 0) printf("%s\n", versions);
    if (!usable) {
        check_selection_without_gpu(n < 0 ? err.message : "no usable device");
        if (t_failures) return t_finish("test_cuda");
        printf("SKIP: no usable CUDA device; the GPU checks need one\n");
        return SKIP_CODE;
    }
    if (only_fused) goto fused;
    if (only_rows) goto rows;
    if (only_screen || only_flash) {
        if (only_screen) check_screen(), check_step_pick_ties();
        else check_encoder_switches(devs[0].cc_major);
        return t_finish("test_cuda");
    }
    if (only_speculation) {
        check_speculation_models();
        return t_finish("test_cuda");
    }
    const char *computes[] = {"float32", "float16", "int8_float16"};
    const double tols[] = {1e-2, 0.15, 1.5}, argmax[] = {1.0, 1.0, 0.9};
    const char *files[] = {"ggml-mini.bin", "ggml-mini.en.bin", "ggml-mini-v3.bin"};
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < 3; i++) check_logits(T_MODELS[i], files[i], computes[c], tols[c], argmax[c]);
    struct stat st;
    if (stat(t_path("models/%s", "ggml-mini-f32.bin"), &st) == 0)
        check_logits("mini", "ggml-mini-f32.bin", "float32", 1e-2, 1.0);
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < 3; i++) check_longform(T_MODELS[i], files[i], computes[c]);
    check_bound_rows();
    check_batched();
    check_speculation_models();
    check_contexts_and_faults();
fused:
    check_fused_step(devs[0].cc_major, "tiny", "float16", 0, 1, 1);
    check_fused_step(devs[0].cc_major, "base", "int8_float16", 0, 1, 1);
    /* tiny int8: rows in pairs (24 bytes of scales a row of 384) */
    check_fused_step(devs[0].cc_major, "tiny", "int8_float16", 0, 1, 1);
    /* 22 blocks: tiny's slices where skipping to the ring's start used to
     * leave too little room for ever (a hang before the fix) */
    check_fused_step(devs[0].cc_major, "tiny", "float16", 22, 1, 1);
    /* two rows: batched windows, and two beams over one window */
    check_fused_step(devs[0].cc_major, "tiny", "float16", 0, 2, 2);
    check_fused_step(devs[0].cc_major, "base", "int8_float16", 0, 2, 1);
    check_fused_step(devs[0].cc_major, "tiny", "int8_float16", 0, 2, 2);
    /* fc1 and fc2 on the tensor cores (their copies swizzled, as medium's
     * on 123-132 SMs: sh_fused_mma_ffn), forced for tiny's and base's
     * rows: one row, two (batched windows; two beams), and tiny on 48
     * blocks (32 rows a block: both of mma_gemv's tiles) */
    setenv("SHRUTI_CUDA_FFN_MMA", "1", 1);
    check_fused_step(devs[0].cc_major, "tiny", "float16", 0, 1, 1);
    check_fused_step(devs[0].cc_major, "base", "float16", 0, 1, 1);
    check_fused_step(devs[0].cc_major, "tiny", "float16", 48, 1, 1);
    check_fused_step(devs[0].cc_major, "tiny", "float16", 0, 2, 2);
    check_fused_step(devs[0].cc_major, "base", "float16", 0, 2, 1);
    unsetenv("SHRUTI_CUDA_FFN_MMA");
    if (only_fused) return t_finish("test_cuda");
rows:;
    const char *mma = "tensor-core GEMV vs float GEMV";
    check_rows_switch(devs[0].cc_major, "tiny", "float16", "SHRUTI_CUDA_MMA", "0", "all", mma, 1e-3);
    check_rows_switch(devs[0].cc_major, "tiny", "int8_float16", "SHRUTI_CUDA_MMA", "0", "all", mma,
                      1e-3);
    /* base's fc2 (2048 inputs) takes the GEMV's 16-warp form */
    check_rows_switch(devs[0].cc_major, "base", "float16", "SHRUTI_CUDA_MMA", "0", "all", mma, 1e-3);
    check_rows_switch(devs[0].cc_major, "base", "int8_float16", "SHRUTI_CUDA_MMA", "0", "all", mma,
                      1e-3);
    check_rows_switch(devs[0].cc_major, "base", "float16", "SHRUTI_CUDA_ATT_ROWS", "0", "1",
                      "cross-attention rows together vs one by one", 1e-3);
    check_rows_switch(devs[0].cc_major, "tiny", "int8_float16", "SHRUTI_CUDA_ATT_ROWS", "0", "1",
                      "cross-attention rows together vs one by one", 1e-3);
    if (only_rows) return t_finish("test_cuda");
    check_encoder_switches(devs[0].cc_major);
    check_screen();
    check_step_pick_ties();
    return t_finish("test_cuda");
}
