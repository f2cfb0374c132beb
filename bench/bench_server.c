/* bench_server.c - throughput and latency of `shruti serve`.
 *
 * Starts the server (the shruti binary next to this program) with the
 * given models, posts an audio file from 1, 4 and 16 concurrent clients
 * (libcurl, multipart like OpenAI clients) and reports requests per
 * second and p50/p99 latency; then the same transcription in-process
 * through the library, so the server's overhead shows.
 *
 * usage: bench_server --model-en PATH [--model-multi PATH] [--audio FILE]
 *                     [--requests N] [--workers N] [--threads N] */
#include <curl/curl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "common/clock.h"
#include "shruti.h"



static size_t discard(char *p, size_t s, size_t n, void *u) {
    (void)p, (void)u;
    return s * n;
}

typedef struct {
    const char *url, *audio;
    int n;
    double *lat;
    int errors;
} client;

static void *client_main(void *arg) {
    client *c = arg;
    CURL *h = curl_easy_init();
    for (int i = 0; i < c->n; i++) {
        curl_mime *mime = curl_mime_init(h);
        curl_mimepart *part = curl_mime_addpart(mime);
        curl_mime_name(part, "file");
        curl_mime_filedata(part, c->audio);
        part = curl_mime_addpart(mime);
        curl_mime_name(part, "language");
        curl_mime_data(part, "en", CURL_ZERO_TERMINATED);
        part = curl_mime_addpart(mime);   /* one decode per window: fixed work */
        curl_mime_name(part, "temperature_increment_on_fallback");
        curl_mime_data(part, "none", CURL_ZERO_TERMINATED);
        curl_easy_setopt(h, CURLOPT_URL, c->url);
        curl_easy_setopt(h, CURLOPT_MIMEPOST, mime);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
        double t0 = sh_now_s();
        CURLcode r = curl_easy_perform(h);
        long status = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        c->lat[i] = sh_now_s() - t0;
        if (r != CURLE_OK || status != 200) c->errors++;
        curl_mime_free(mime);
    }
    curl_easy_cleanup(h);
    return NULL;
}

static pid_t start_server(const char *exe, const char *args, int *port) {
    char log[64], cmd[9000];
    snprintf(log, sizeof log, "/tmp/shruti-bench-server-%d.log", (int)getpid());
    unlink(log);
    pid_t pid = fork();
    if (pid == 0) {
        snprintf(cmd, sizeof cmd, "exec %s serve --port 0 --db /tmp/shruti-bench-%d.db %s 2>%s",
                 exe, (int)getppid(), args, log);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 600; i++) {
        FILE *f = fopen(log, "r");
        char line[1024];
        while (f && fgets(line, sizeof line, f)) {
            char *p = strstr(line, "\"event\":\"listening\"");
            if (p && (p = strstr(p, "\"port\":"))) {
                *port = atoi(p + 7);
                fclose(f);
                return pid;
            }
        }
        if (f) fclose(f);
        usleep(100000);
    }
    kill(pid, SIGKILL);
    return -1;
}

int main(int argc, char **argv) {
    const char *model_en = NULL, *model_multi = "", *audio = "../shared/testdata/audio/jfk.wav";
    int requests = 32, workers = 2, threads = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--model-en") == 0) model_en = argv[i + 1];
        else if (strcmp(argv[i], "--model-multi") == 0) model_multi = argv[i + 1];
        else if (strcmp(argv[i], "--audio") == 0) audio = argv[i + 1];
        else if (strcmp(argv[i], "--requests") == 0) requests = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--workers") == 0) workers = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--threads") == 0) threads = atoi(argv[i + 1]);
    }
    if (!model_en || requests < 1) {
        fprintf(stderr, "usage: bench_server --model-en PATH [--model-multi PATH] [--audio FILE] "
                        "[--requests N] [--workers N] [--threads N]\n");
        return 2;
    }
    char exe[4096];
    snprintf(exe, sizeof exe, "%s", argv[0]);
    char *slash = strrchr(exe, '/');
    snprintf(slash ? slash + 1 : exe, sizeof exe - (size_t)(slash ? slash + 1 - exe : 0), "shruti");
    char args[4096];
    snprintf(args, sizeof args, "--model-en %s --model-multi '%s' --workers %d --threads %d "
             "--queue 1000", model_en, model_multi, workers, threads);
    int port;
    pid_t pid = start_server(exe, args, &port);
    if (pid < 0) {
        fprintf(stderr, "the server did not start\n");
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/audio/transcriptions", port);
    printf("server: %d workers x %d threads; %d requests of %s per run\n", workers, threads,
           requests, audio);
    printf("%8s %10s %10s %10s %8s\n", "clients", "req/s", "p50_ms", "p99_ms", "errors");
    double p50_one = 0;
    int levels[3] = {1, 4, 16};
    for (int l = 0; l < 3; l++) {
        int n_clients = levels[l], per = (requests + n_clients - 1) / n_clients;
        client *c = calloc((size_t)n_clients, sizeof *c);
        pthread_t *t = calloc((size_t)n_clients, sizeof *t);
        double t0 = sh_now_s();
        for (int i = 0; i < n_clients; i++) {
            c[i] = (client){url, audio, per, calloc((size_t)per, sizeof(double)), 0};
            pthread_create(&t[i], NULL, client_main, &c[i]);
        }
        int total = n_clients * per, errors = 0, k = 0;
        double *all = calloc((size_t)total, sizeof *all);
        for (int i = 0; i < n_clients; i++) {
            pthread_join(t[i], NULL);
            errors += c[i].errors;
            for (int j = 0; j < per; j++) all[k++] = c[i].lat[j];
            free(c[i].lat);
        }
        double wall = sh_now_s() - t0;
        qsort(all, (size_t)total, sizeof *all, bench_cmp_double);
        double p50 = all[total / 2], p99 = all[(int)(total * 0.99) < total ? (int)(total * 0.99) : total - 1];
        if (l == 0) p50_one = p50;
        printf("%8d %10.2f %10.1f %10.1f %8d\n", n_clients, total / wall, p50 * 1e3, p99 * 1e3,
               errors);
        free(all), free(c), free(t);
    }
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);

    /* the same work in-process: decode the file, transcribe, as a worker does */
    shruti_error err;
    shruti_model *m = shruti_model_load(model_en, &err);
    shruti_context *ctx = m ? shruti_context_new(m, threads, &err) : NULL;
    if (!ctx) {
        fprintf(stderr, "%s\n", err.message);
        return 1;
    }
    double runs[16];
    int n_runs = 9;
    for (int r = 0; r < n_runs; r++) {
        double t0 = sh_now_s();
        float *pcm;
        size_t n;
        shruti_audio_load(audio, &pcm, &n, &err);
        shruti_params p = shruti_default_params();
        p.language = "en";
        p.n_temperatures = 1;
        shruti_transcribe(ctx, pcm, n, &p);
        free(pcm);
        runs[r] = sh_now_s() - t0;
    }
    double lib = bench_median(runs, n_runs);
    printf("in-process (library) median %.1f ms; server overhead at 1 client: %.1f ms (%.0f%%)\n",
           lib * 1e3, (p50_one - lib) * 1e3, 100.0 * (p50_one - lib) / lib);
    shruti_context_free(ctx);
    shruti_model_free(m);
    curl_global_cleanup();
    return 0;
}
