/* bench_model.c - speed and memory of full-size Whisper models on the CPU
 * or a CUDA GPU.
 *
 * Builds full-size models with random weights from the header-only files
 * in ../shared/testdata/model-headers (real hparams, filters, vocabulary;
 * tensors appended in whisper.cpp's layout, f16 like the published files),
 * then reports, as medians of several runs: model load time, encoder time
 * per 30 s window, decoder time per token for 1 row with its logits copied
 * out (dec), as a greedy step (greedy: the logit filters and the choice
 * where the logits are, as transcribe() decodes) and as a 5-beam step
 * (each beam's 6 best tokens chosen the same way), the
 * end-to-end time of 60 s of audio (two windows of 150 greedy tokens:
 * encoder, prompt, steps) and peak RSS. Greedy steps feed each choice back
 * in, as the greedy decoder does (whatever token the random weights
 * choose: a step costs the same for any token); on the GPU that lets the
 * next step run ahead of the host (SHRUTI_CUDA_SPECULATE=0: not).
 *
 * With --throughput: batched windows (as `--batch-size`): 32 windows of
 * 150 tokens each, decoded 1, 2, 8 and 32 at a time, in audio seconds per
 * wall second; and 60 s with its two windows decoded as one batch.
 * With --screen-ab (float16): on the CPU greedy and 5-beam steps with the
 * logit screen off and on, alternating in one process; on the GPU greedy
 * steps and 60 s so. With --speculate-ab (GPU): greedy steps and 60 s
 * with the speculated step off and on. With --ab VAR (GPU): the same with
 * any switch VAR at 0 and unset (a window's prompt timed too).
 *
 * usage: bench_model [--device cpu|cuda] [--threads N] [--runs N] [--tokens N]
 *                    [--compute-type T] [--host-pick] [--throughput] [--screen-ab]
 *                    [--speculate-ab] [--ab VAR]
 *                    [size ...]
 *        (sizes: tiny base small medium large; default tiny base small) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bench_util.h"
#include "common/clock.h"
#include "decode/logit_filters.h"
#include "decode/text.h"
#include "device.h"
#include "shruti.h"
#include "tools/random_model.h"



/* Audio seconds per wall second: n_windows windows of 150 tokens each,
 * batch of them at a time, each row choosing its token on the host. */
static double throughput(sh_run *rt, const float *mel, int batch, int n_windows,
                         const sh_logit_mask *mk) {
    int prompt[4] = {50258, 50259, 50359, 50364};
    int rows[4 * 64], toks[64], best[64];
    double lps[64];
    sh_logit_mask masks[64];
    for (int b = 0; b < 64; b++) masks[b] = *mk;
    double t0 = sh_now_s();
    for (int w0 = 0; w0 < n_windows; w0 += batch) {
        int nb = n_windows - w0 < batch ? n_windows - w0 : batch;
        if (sh_windows_reserve(rt, nb) < nb) return 0;
        for (int b = 0; b < nb; b++) sh_encode_window(rt, mel, b);
        sh_bind_windows(rt, nb > 1);
        sh_decoder_reserve(rt, nb);
        for (int b = 0; b < nb; b++) memcpy(rows + 4 * b, prompt, sizeof prompt);
        sh_decoder_forward(rt, rows, nb, 4, 0);
        for (int b = 0; b < nb; b++) sh_decoder_greedy(rt, 4 * b + 3, 1, mk, &best[b], &lps[b]);
        for (int s = 0; s < 150; s++) {
            for (int b = 0; b < nb; b++) toks[b] = best[b];   /* each row's own choice, as greedy */
            sh_decoder_forward(rt, toks, nb, 1, 4 + s);
            sh_decoder_greedy(rt, 0, nb, masks, best, lps);
        }
        sh_bind_windows(rt, false);
    }
    return n_windows * 30.0 / (sh_now_s() - t0);
}

/* The benchmark must run where it was asked to. */
static int r_device_check(const shruti_model *m, const char *device) {
    if (strcmp(device, "cpu") != 0 && strcmp(shruti_model_device(m), "cuda") != 0) {
        fprintf(stderr, "not on the GPU: %s\n", shruti_model_device_note(m));
        return -1;
    }
    return 0;
}

static double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
}

/* The prompt's work done before a timed loop begins (on the GPU it is
 * only enqueued, its graph in one launch: its ~1 ms had fallen into the
 * first timed steps). */
static void settle(sh_run *rt, float *scratch) { sh_decoder_logits(rt, 0, 1, scratch); }

/* ms per decoder step for n_rows rows, over n_tokens steps after a
 * 4-token prompt */
static double decoder_ms_per_token(sh_run *rt, int n_rows, int n_tokens, float *logits) {
    int prompt[4] = {50258, 50259, 50359, 50364};
    sh_decoder_reserve(rt, n_rows);
    sh_decoder_forward(rt, prompt, 1, 4, 0);
    sh_decoder_broadcast(rt, n_rows, 4);
    settle(rt, logits);
    int toks[8];
    for (int i = 0; i < n_rows; i++) toks[i] = 400 + i;
    double t0 = sh_now_s();
    for (int s = 0; s < n_tokens; s++) {
        sh_decoder_forward(rt, toks, n_rows, 1, 4 + s);
        sh_decoder_logits(rt, 0, n_rows, logits);
    }
    return (sh_now_s() - t0) * 1000.0 / n_tokens;
}

/* The mask of a greedy step as transcribe() builds it: the non-speech
 * tokens suppressed and the timestamp rule on. */
static sh_logit_mask greedy_mask(const shruti_model *m, const int32_t *suppress, int n_suppress) {
    sh_logit_mask mk = {.ids = suppress, .n_ids = n_suppress, .n_ranges = 1,
                        .ts_begin = m->sp.timestamp_begin};
    mk.ranges[0][0] = m->sp.no_timestamps, mk.ranges[0][1] = m->sp.no_timestamps + 1;
    return mk;
}

/* --host-pick: the logits come to the host and the choice is made there
 * (the way before the GPU chose), for comparison. */
static int g_host_pick;
static float *g_pick_row;

static void pick(sh_run *rt, int row, const sh_logit_mask *mk, int *tok, double *lp) {
    if (!g_host_pick) {
        sh_decoder_greedy(rt, row, 1, mk, tok, lp);
        return;
    }
    sh_decoder_logits(rt, row, 1, g_pick_row);
    sh_pick_greedy(mk, g_pick_row, rt->m->hp.n_vocab, tok, lp);
}

/* ms per greedy step (forward, then the token chosen where the logits
 * are: on the GPU only the token comes back). */
static double greedy_ms_per_token(sh_run *rt, int n_tokens, const sh_logit_mask *mk) {
    int prompt[4] = {50258, 50259, 50359, 50364}, tok = 400, lp_tok;
    double lp;
    sh_decoder_reserve(rt, 1);
    sh_decoder_forward(rt, prompt, 1, 4, 0);
    settle(rt, g_pick_row);
    double t0 = sh_now_s();
    for (int s = 0; s < n_tokens; s++) {
        sh_decoder_forward(rt, &tok, 1, 1, 4 + s);
        pick(rt, 0, mk, &lp_tok, &lp);
        tok = lp_tok;   /* the choice goes back in, as the greedy decoder does */
    }
    return (sh_now_s() - t0) * 1000.0 / n_tokens;
}

/* ms per beam-search step of 5 beams: the forward, then each beam's 6
 * best tokens under the mask, where the logits are (--host-pick: on the
 * host, from their logits). */
static double beam_ms_per_token(sh_run *rt, int n_tokens, const sh_logit_mask *mk) {
    int prompt[4] = {50258, 50259, 50359, 50364}, toks[5], top[5 * 6];
    double lps[5 * 6];
    sh_logit_mask masks[5] = {*mk, *mk, *mk, *mk, *mk};
    sh_decoder_reserve(rt, 5);
    sh_decoder_forward(rt, prompt, 1, 4, 0);
    sh_decoder_broadcast(rt, 5, 4);
    settle(rt, g_pick_row);
    for (int b = 0; b < 5; b++) toks[b] = 400 + b;
    double t0 = sh_now_s();
    for (int s = 0; s < n_tokens; s++) {
        sh_decoder_forward(rt, toks, 5, 1, 4 + s);
        if (g_host_pick) {
            for (int b = 0; b < 5; b++) {
                sh_decoder_logits(rt, b, 1, g_pick_row);
                sh_pick_top(mk, g_pick_row, rt->m->hp.n_vocab, 6, top + 6 * b, lps + 6 * b);
            }
        } else {
            sh_decoder_topk(rt, 0, 5, masks, 6, top, lps);
        }
        for (int b = 0; b < 5; b++) toks[b] = 400 + (top[6 * b] + s + b) % 1000;
    }
    return (sh_now_s() - t0) * 1000.0 / n_tokens;
}

/* The CPU's logit screen (cpu/logit_screen.c) off and on, alternating
 * run by run in this one process so that the machine's drift hits both:
 * greedy and 5-beam steps. */
static void screen_ab(sh_run *rt, shruti_model *m, int runs, int tokens, const sh_logit_mask *mk,
                      const char *size) {
    struct sh_logit_screen *screen = m->logit_screen;
    double g[2][64], b[2][64];
    for (int r = 0; r < runs; r++)
        for (int on = 0; on < 2; on++) {
            m->logit_screen = on ? screen : NULL;
            g[on][r] = greedy_ms_per_token(rt, tokens, mk);
            b[on][r] = beam_ms_per_token(rt, tokens, mk);
        }
    m->logit_screen = screen;
    printf("  %s logit screen off / on, alternating: greedy %.3f / %.3f ms, 5 beams %.3f / %.3f ms\n",
           size, bench_median(g[0], runs), bench_median(g[1], runs), bench_median(b[0], runs),
           bench_median(b[1], runs));
}

/* 60 s of audio as transcribe() spends it: per window the encoder, the
 * 4-token prompt, then 150 greedy steps, the last choice the end of text
 * (as a window's is: forced by the mask, whatever the random weights
 * prefer; the GPU then runs no step after it). */
static double minute_ms(sh_run *rt, const float *mel, const sh_logit_mask *mk) {
    int prompt[4] = {50258, 50259, 50359, 50364}, eot = rt->m->sp.eot;
    sh_logit_mask end = {.n_ranges = 2, .ts_begin = -1,
                         .ranges = {{0, eot}, {eot + 1, rt->m->hp.n_vocab}}};
    double t0 = sh_now_s();
    for (int w = 0; w < 2; w++) {
        sh_encode(rt, mel);
        sh_decoder_reserve(rt, 1);
        sh_decoder_forward(rt, prompt, 1, 4, 0);
        int best = 0;
        double lp;
        pick(rt, 3, mk, &best, &lp);
        for (int s = 0; s < 150; s++) {
            int tok = best;   /* the choice goes back in, as the greedy decoder does */
            sh_decoder_forward(rt, &tok, 1, 1, 4 + s);
            pick(rt, 0, s == 149 ? &end : mk, &best, &lp);
        }
    }
    return (sh_now_s() - t0) * 1000.0;
}

/* A window's 4-token prompt and the pick after it, ms (median of 9:
 * the encoder's window already in place). */
static double prompt_ms(sh_run *rt, const sh_logit_mask *mk) {
    int prompt[4] = {50258, 50259, 50359, 50364}, best;
    double lp, t[9];
    for (int r = 0; r < 9; r++) {
        double t0 = sh_now_s();
        sh_decoder_reserve(rt, 1);
        sh_decoder_forward(rt, prompt, 1, 4, 0);
        pick(rt, 3, mk, &best, &lp);
        t[r] = (sh_now_s() - t0) * 1000.0;
    }
    return bench_median(t, 9);
}

/* A GPU feature off and on (GPU): a second run state made with the
 * variable env at 0 (--speculate-ab: SHRUTI_CUDA_SPECULATE, no step run
 * ahead of the host; --screen-ab: SHRUTI_LOGIT_SCREEN, every logit of a
 * greedy pick from the half weights; --ab VAR: any other), the prompt,
 * greedy steps and 60 s of audio alternating between the two run by run. */
static void gpu_ab(sh_run *rt, const shruti_model *m, int threads, int runs, int tokens,
                   const float *mel, const sh_logit_mask *mk, const char *size, const char *env,
                   const char *what) {
    sh_run off;
    setenv(env, "0", 1);
    int r0 = sh_run_init(&off, m, threads);
    unsetenv(env);
    if (r0 < 0 || !off.gpu) {
        fprintf(stderr, "no second GPU run state\n");
        if (r0 == 0) sh_run_free(&off);
        return;
    }
    sh_run *states[2] = {&off, rt};
    double g[2][64], minute[2][64], pr[2][64];
    for (int on = 0; on < 2; on++) minute_ms(states[on], mel, mk);   /* warm-up */
    for (int r = 0; r < runs; r++)
        for (int on = 0; on < 2; on++) {
            g[on][r] = greedy_ms_per_token(states[on], tokens, mk);
            minute[on][r] = minute_ms(states[on], mel, mk);
            pr[on][r] = prompt_ms(states[on], mk);
        }
    printf("  %s %s off / on, alternating: prompt %.3f / %.3f ms, greedy %.3f / %.3f ms, "
           "60 s %.1f / %.1f ms\n", size, what, bench_median(pr[0], runs), bench_median(pr[1], runs),
           bench_median(g[0], runs), bench_median(g[1], runs), bench_median(minute[0], runs),
           bench_median(minute[1], runs));
    sh_run_free(&off);
}

int main(int argc, char **argv) {
    int threads = 2, runs = 5, tokens = 64;
    const char *compute_type = "auto", *device = "cpu";
    int do_throughput = 0, do_screen_ab = 0, do_speculate_ab = 0;
    const char *ab_var = NULL;
    const char *sizes[16];
    int n_sizes = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) runs = atoi(argv[++i]);
        else if (strcmp(argv[i], "--tokens") == 0 && i + 1 < argc) tokens = atoi(argv[++i]);
        else if (strcmp(argv[i], "--compute-type") == 0 && i + 1 < argc) compute_type = argv[++i];
        else if (strcmp(argv[i], "--device") == 0 && i + 1 < argc) device = argv[++i];
        else if (strcmp(argv[i], "--host-pick") == 0) g_host_pick = 1;
        else if (strcmp(argv[i], "--throughput") == 0) do_throughput = 1;
        else if (strcmp(argv[i], "--screen-ab") == 0) do_screen_ab = 1;
        else if (strcmp(argv[i], "--speculate-ab") == 0) do_speculate_ab = 1;
        else if (strcmp(argv[i], "--ab") == 0 && i + 1 < argc) ab_var = argv[++i];
        else if (n_sizes < 16) sizes[n_sizes++] = argv[i];
    }
    if (n_sizes == 0) {
        sizes[0] = "tiny", sizes[1] = "base", sizes[2] = "small";
        n_sizes = 3;
    }
    if (runs > 64) runs = 64;
    const char *td = getenv("SHRUTI_TESTDATA");
    char testdata[512];
    snprintf(testdata, sizeof testdata, "%s", td ? td : "../shared/testdata");
    printf("device %s, threads %d, compute type %s, %d runs each (medians), %d decoder steps "
           "per run\n", device, threads, compute_type, runs, tokens);
    printf("%-7s %-13s %9s %12s %12s %12s %12s %12s %10s\n", "model", "compute", "load_ms",
           "encoder_ms", "dec_ms/tok", "greedy_ms/tok", "beam5_ms/tok", "60s_audio_ms", "rss_MB");
    for (int s = 0; s < n_sizes; s++) {
        char header[800], path[600];
        snprintf(header, sizeof header, "%s/model-headers/for-tests-ggml-%s.bin", testdata,
                 sizes[s]);
        snprintf(path, sizeof path, "/tmp/shruti-bench-%s.bin", sizes[s]);
        if (sh_random_model_build(header, path) < 0) {
            fprintf(stderr, "cannot build %s from %s\n", path, header);
            return 1;
        }
        double load[64], enc[64], dec[64], greedy[64], beam[64], minute[64];
        shruti_model *m = NULL;
        for (int r = 0; r < runs; r++) {
            shruti_model_free(m);
            shruti_error err;
            double t0 = sh_now_s();
            shruti_model_params mp = shruti_model_default_params();
            mp.compute_type = compute_type;
            mp.device = device;
            m = shruti_model_load_with_params(path, &mp, &err);
            load[r] = (sh_now_s() - t0) * 1000;
            if (!m) {
                fprintf(stderr, "%s\n", err.message);
                return 1;
            }
        }
        if (r_device_check(m, device) < 0) return 1;
        sh_run rt;
        if (sh_run_init(&rt, m, threads) < 0) {
            fprintf(stderr, "no memory for the run state\n");
            return 1;
        }
        float *mel = malloc(sizeof(float) * (size_t)m->hp.n_mels * 3000);
        for (int i = 0; i < m->hp.n_mels * 3000; i++) mel[i] = sh_rand_normalish() * 10;
        float *logits = malloc(sizeof(float) * (size_t)m->hp.n_vocab * 64);
        g_pick_row = logits;
        sh_encode(&rt, mel);   /* warm-up */
        for (int r = 0; r < runs; r++) {
            double t0 = sh_now_s();
            sh_encode(&rt, mel);
            enc[r] = (sh_now_s() - t0) * 1000;
        }
        decoder_ms_per_token(&rt, 1, 8, logits);   /* warm-up */
        for (int r = 0; r < runs; r++) dec[r] = decoder_ms_per_token(&rt, 1, tokens, logits);
        int32_t *suppress = NULL;
        int n_suppress = sh_non_speech_tokens(m, &suppress);
        sh_logit_mask mk = greedy_mask(m, suppress, n_suppress < 0 ? 0 : n_suppress);
        for (int r = 0; r < runs; r++) greedy[r] = greedy_ms_per_token(&rt, tokens, &mk);
        for (int r = 0; r < runs; r++) beam[r] = beam_ms_per_token(&rt, tokens, &mk);
        for (int r = 0; r < runs; r++) minute[r] = minute_ms(&rt, mel, &mk);
        printf("%-7s %-13s %9.1f %12.2f %12.3f %13.3f %12.3f %12.1f %10.0f\n", sizes[s],
               shruti_model_compute_type(m), bench_median(load, runs), bench_median(enc, runs),
               bench_median(dec, runs), bench_median(greedy, runs), bench_median(beam, runs),
               bench_median(minute, runs), peak_rss_mb());
        if (do_screen_ab && m->logit_screen) screen_ab(&rt, m, runs, tokens, &mk, sizes[s]);
        if (do_screen_ab && rt.gpu)
            gpu_ab(&rt, m, threads, runs, tokens, mel, &mk, sizes[s], "SHRUTI_LOGIT_SCREEN",
                   "logit screen");
        if (do_speculate_ab && rt.gpu)
            gpu_ab(&rt, m, threads, runs, tokens, mel, &mk, sizes[s], "SHRUTI_CUDA_SPECULATE",
                   "speculated steps");
        if (ab_var && rt.gpu) gpu_ab(&rt, m, threads, runs, tokens, mel, &mk, sizes[s], ab_var, ab_var);
        if (do_throughput) {
            const int batches[] = {1, 2, 8, 32};
            for (int b = 0; b < 4; b++)
                printf("  %s batched windows: batch %2d: %.1f audio s per s\n", sizes[s], batches[b],
                       throughput(&rt, mel, batches[b], 32, &mk));
            double two[64];
            for (int r = 0; r < runs; r++) two[r] = 60000.0 / throughput(&rt, mel, 2, 2, &mk);
            printf("  %s 60 s as one batch of its 2 windows: %.1f ms\n", sizes[s], bench_median(two, runs));
        }
        free(suppress);
        fflush(stdout);
        free(mel), free(logits);
        sh_run_free(&rt);
        shruti_model_free(m);
    }
    return 0;
}
