/* test_server.c - `shruti serve` on loopback driven by curl: every
 * endpoint and response format; the transcript equals the CLI's; routing
 * (mini.en for English, mini for the Indian-language clips); bad input
 * (415, 400, 404, 405, 413, 429) answered with OpenAI-style JSON errors;
 * a short request answered while long ones run; async jobs, cancel, and a
 * job that survives kill -9; concurrent clients with zero errors; SIGTERM
 * shuts down cleanly. SHRUTI_SOAK_SECONDS sets the concurrent run (default
 * 60). */
#include <pthread.h>
#include <strings.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli_util.h"
#include "test_util.h"

static char work[128], model_en[4300], model_multi[4300], jfk[4300];
static pid_t server_pid;
static int port;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void start_server(const char *extra) {
    char log[256], cmd[12000];
    snprintf(log, sizeof log, "%s/server.log", work);
    unlink(log);
    snprintf(cmd, sizeof cmd, "exec %s serve --port 0 --model-en %s --model-multi %s "
             "--db %s/jobs.db --threads 1 %s 2>%s", SHRUTI_CLI, model_en, model_multi, work, extra,
             log);
    server_pid = t_spawn(cmd);
    for (int i = 0; i < 600; i++) {   /* up to 60 s (model load under ASan) */
        char *text = t_read_file(log, NULL);
        char *p = text ? strstr(text, "\"event\":\"listening\"") : NULL;
        if (p && (p = strstr(p, "\"port\":"))) {
            port = atoi(p + 7);
            free(text);
            return;
        }
        free(text);
        int st;
        if (waitpid(server_pid, &st, WNOHANG) == server_pid) break;
        usleep(100000);
    }
    fprintf(stderr, "the server did not start\n");
    exit(1);
}

static int stop_server(int sig) {
    int st = -1;
    kill(server_pid, sig);
    waitpid(server_pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* curl with -w appending "\n<status>"; returns the status, body in *body */
static int http(const char *args, char **body) {
    char cmd[12000];
    snprintf(cmd, sizeof cmd, "curl -s -S --max-time 300 -w '\\n%%{http_code}' %s", args);
    run_result r = t_run(cmd, 0);
    char *nl = strrchr(r.out, '\n');
    int status = nl ? atoi(nl + 1) : -1;
    if (nl) *nl = '\0';
    if (body) *body = r.out;
    else free(r.out);
    return status;
}

/* Per thread: the soak's clients build URLs at the same time. */
static char *url(const char *path) {
    static _Thread_local char buf[8][512];
    static _Thread_local int i;
    i = (i + 1) % 8;
    snprintf(buf[i], sizeof buf[i], "http://127.0.0.1:%d%s", port, path);
    return buf[i];
}

static int post_file(const char *path, const char *file, const char *fields, char **body) {
    char args[9000];
    snprintf(args, sizeof args, "-F 'file=@%s' %s %s", file, fields, url(path));
    return http(args, body);
}

static void expect_error(int status, const char *body, int want, const char *what) {
    CHECK(status == want, "%s: status %d, expected %d: %s", what, status, want, body);
    cJSON *o = cJSON_Parse(body);
    const cJSON *e = o ? cJSON_GetObjectItem(o, "error") : NULL;
    CHECK(e && cJSON_IsString(cJSON_GetObjectItem(e, "message")) &&
              cJSON_GetObjectItem(e, "type") && cJSON_GetObjectItem(e, "param") &&
              cJSON_GetObjectItem(e, "code"), "%s: not an OpenAI error body: %s", what, body);
    cJSON_Delete(o);
}

static void check_endpoints(void) {
    char *body;
    CHECK(http(url("/health"), &body) == 200 && strstr(body, "\"device\"") &&
              strstr(body, "\"device_reason\"") && strstr(body, "\"device_fallbacks\"") &&
              strstr(body, "\"slots\":{\"en\":{"),
          "health: %s", body);
    free(body);
    CHECK(http(url("/ready"), &body) == 200, "ready: %s", body);
    free(body);
    CHECK(http(url("/v1/models"), &body) == 200 && strstr(body, "ggml-mini.en.bin") &&
              strstr(body, "\"slot\":\"multi\""), "models: %s", body);
    free(body);
    CHECK(http(url("/"), &body) == 200 && strstr(body, "<form"), "page");
    free(body);
    CHECK(http(url("/metrics"), &body) == 200 && strstr(body, "shruti_requests_total") &&
              strstr(body, "shruti_queue_depth") && strstr(body, "shruti_real_time_factor") &&
              strstr(body, "shruti_device{") && strstr(body, "shruti_device_fallbacks_total") &&
              strstr(body, "shruti_device_info{"), "metrics: %s", body);
    free(body);
}

/* Text from outside (here a request path with a quote, a backslash and a
 * newline) stays inside its JSON string: every log line still parses. */
static void check_log_lines_parse(void) {
    char args[600], *body, logp[300];
    snprintf(args, sizeof args, "'%s'", url("/no%22such%5Cpath%0Aend"));
    CHECK(http(args, &body) == 404, "odd path: %s", body);
    free(body);
    usleep(300000);   /* the access line is written when the connection completes */
    snprintf(logp, sizeof logp, "%s/server.log", work);
    char *text = t_read_file(logp, NULL), *line = text;
    int n_json = 0, bad = 0, found = 0;
    while (line && *line) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        if (strncmp(line, "{\"ts\"", 5) == 0) {
            cJSON *o = cJSON_Parse(line);
            n_json++;
            bad += o == NULL;
            if (!o) fprintf(stderr, "  not JSON: %s\n", line);
            found += o && strstr(line, "no'such/path end") != NULL;
            cJSON_Delete(o);
        }
        line = nl ? nl + 1 : NULL;
    }
    CHECK(n_json > 0 && bad == 0 && found == 1, "log lines: %d, not JSON: %d, odd path seen: %d",
          n_json, bad, found);
    free(text);
}

/* DEVICE=cuda where no GPU is usable: the service refuses to start and
 * says why (where one is, it starts: not checked here). */
static void check_device_cuda_refused(void) {
    char cmd[9000];
    snprintf(cmd, sizeof cmd, "%s devices", SHRUTI_CLI);
    run_result d = t_run(cmd, 1);
    int gpu = strstr(d.out, "usable\n") != NULL;
    free(d.out);
    if (gpu) return;
    snprintf(cmd, sizeof cmd, "DEVICE=cuda %s serve --port 0 --model-en %s --model-multi '' "
             "--db /tmp/shruti-device-test.db", SHRUTI_CLI, model_en);
    run_result r = t_run(cmd, 1);
    CHECK(r.status != 0 && strstr(r.out, "CUDA requested but not usable"),
          "DEVICE=cuda without a GPU: exit %d: %s", r.status, r.out);
    free(r.out);
    unlink("/tmp/shruti-device-test.db");
}

static void check_formats_and_cli(void) {
    char *body, cmd[9000];
    /* the CLI with the server's defaults: greedy, the fallback temperatures */
    snprintf(cmd, sizeof cmd, "%s transcribe --model %s --beam-size 1 --best-of 1 "
             "--output-format json %s", SHRUTI_CLI, model_en, jfk);
    run_result cli = t_run(cmd, 0);
    cJSON *cj = cJSON_Parse(cli.out);
    CHECK(post_file("/v1/audio/transcriptions", jfk, "-F language=en", &body) == 200, "json");
    cJSON *sj = cJSON_Parse(body);
    CHECK(cj && sj && strcmp(cJSON_GetObjectItem(cj, "text")->valuestring,
                             cJSON_GetObjectItem(sj, "text")->valuestring) == 0,
          "server text differs from the CLI's: %s vs %s", body, cli.out);
    cJSON_Delete(cj), cJSON_Delete(sj), free(body), free(cli.out);

    /* batched windows: one window here, decoded greedily, without fallback */
    CHECK(post_file("/v1/audio/transcriptions", jfk,
                    "-F language=en -F temperature_increment_on_fallback=none", &body) == 200, "json");
    char *plain = body;
    CHECK(post_file("/v1/audio/transcriptions", jfk, "-F language=en -F batch_size=8", &body) == 200 &&
              strcmp(body, plain) == 0, "batch_size=8: %s vs %s", body, plain);
    free(body), free(plain);

    CHECK(post_file("/v1/audio/transcriptions", jfk, "-F language=en -F response_format=text",
                    &body) == 200 && body[0] != '{', "text: %s", body);
    free(body);
    CHECK(post_file("/v1/audio/transcriptions", jfk, "-F language=en -F response_format=srt",
                    &body) == 200 && strncmp(body, "1\n00:00:00,000 --> ", 19) == 0, "srt: %s", body);
    free(body);
    CHECK(post_file("/v1/audio/transcriptions", jfk, "-F language=en -F response_format=vtt",
                    &body) == 200 && strncmp(body, "WEBVTT", 6) == 0, "vtt: %s", body);
    free(body);
    CHECK(post_file("/v1/audio/transcriptions", jfk, "-F language=en -F response_format=verbose_json "
                    "-F 'timestamp_granularities[]=segment'", &body) == 200 &&
              strstr(body, "\"segments\"") && strstr(body, "\"duration\"") &&
              strstr(body, "\"routing\""), "verbose_json: %s", body);
    free(body);
    CHECK(post_file("/v1/audio/translations", jfk, "-F model=multi -F response_format=verbose_json",
                    &body) == 200 && strstr(body, "\"task\":\"translate\""), "translations: %s", body);
    free(body);
}

static void check_routing(void) {
    const char *clips[] = {"00_en.wav", "08_hi.wav", "10_ta.wav", "12_bn.wav", "16_gu.wav"};
    for (int i = 0; i < 5; i++) {
        char *body, file[4400];
        snprintf(file, sizeof file, "%s", t_path("audio/clips/%s", clips[i]));
        int st = post_file("/v1/audio/transcriptions", file, "-F response_format=verbose_json", &body);
        cJSON *o = cJSON_Parse(body);
        const cJSON *rt = o ? cJSON_GetObjectItem(o, "routing") : NULL;
        const char *slot = rt ? cJSON_GetObjectItem(rt, "slot")->valuestring : "?";
        const char *want = i == 0 ? "en" : "multi";
        CHECK(st == 200 && strcmp(slot, want) == 0, "%s routed to %s: %s", clips[i], slot, body);
        cJSON_Delete(o);
        free(body);
    }
}

/* 31 s of silence, then Hindi: the language comes from the window with
 * speech, so the multilingual model gets it. */
static void check_detection_skips_silence(void) {
    char file[256], cmd[9000], *body;
    snprintf(file, sizeof file, "%s/silence_then_hi.wav", work);
    snprintf(cmd, sizeof cmd, "ffmpeg -nostdin -v error -f lavfi -t 31 -i anullsrc=r=16000:cl=mono "
             "-i %s -filter_complex '[0:a][1:a]concat=n=2:v=0:a=1' -ar 16000 -ac 1 -y %s",
             t_path("audio/clips/%s", "08_hi.wav"), file);
    run_result mk = t_run(cmd, 1);
    CHECK(mk.status == 0, "cannot make %s: %s", file, mk.out);
    free(mk.out);
    int st = post_file("/v1/audio/transcriptions", file, "-F response_format=verbose_json", &body);
    /* the toy model's language on an offset clip varies; the window does not */
    CHECK(st == 200 && strstr(body, "\"slot\":\"multi\"") && strstr(body, "at 30 s") &&
              !strstr(body, "detected 'en'"), "leading silence: %s", body);
    free(body);
}

static void check_bad_input(void) {
    char *body, args[9000], path[300];
    int st;
    snprintf(args, sizeof args, "-H 'Content-Type: application/json' -d '{\"a\":1}' %s",
             url("/v1/audio/transcriptions"));
    { int st_ = http(args, &body); expect_error(st_, body, 415, "json body"); }
    free(body);
    snprintf(args, sizeof args, "-F language=en %s", url("/v1/audio/transcriptions"));
    { int st_ = http(args, &body); expect_error(st_, body, 400, "missing file"); }
    free(body);
    snprintf(path, sizeof path, "%s/notes.txt", work);
    FILE *f = fopen(path, "w");
    fputs("not audio at all\n", f);
    fclose(f);
    { int st_ = post_file("/v1/audio/transcriptions", path, "", &body); expect_error(st_, body, 400, "non-audio"); }
    free(body);
    snprintf(path, sizeof path, "%s/empty.wav", work);
    fclose(fopen(path, "w"));
    { int st_ = post_file("/v1/audio/transcriptions", path, "", &body); expect_error(st_, body, 400, "empty file"); }
    free(body);
    snprintf(path, sizeof path, "%s/cut.wav", work);
    snprintf(args, sizeof args, "head -c 2000 %s > %s", jfk, path);
    free(t_run(args, 1).out);
    st = post_file("/v1/audio/transcriptions", path, "-F language=en", &body);
    CHECK(st == 200 || st == 400, "truncated wav: %d %s", st, body);
    free(body);
    { int st_ = post_file("/v1/audio/transcriptions", jfk, "-F model=large-v9", &body); expect_error(st_, body, 404,
                 "unknown model"); }
    free(body);
    { int st_ = post_file("/v1/audio/transcriptions", jfk, "-F response_format=docx", &body); expect_error(st_, body,
                 400, "bad format"); }
    free(body);
    { int st_ = post_file("/v1/audio/transcriptions", jfk, "-F temperature=7", &body); expect_error(st_, body, 400,
                 "bad temperature"); }
    free(body);
    { int st_ = post_file("/v1/audio/transcriptions", jfk, "-F batch_size=65", &body); expect_error(st_, body, 400,
                 "batch_size too large"); }
    free(body);
    { int st_ = post_file("/v1/audio/transcriptions", jfk, "-F batch_size=2 -F temperature=0.5", &body);
      expect_error(st_, body, 400, "batch_size with a temperature"); }
    free(body);
    { int st_ = post_file("/v1/audio/transcriptions", jfk, "-F language=xx -F model=multi", &body); expect_error(st_,
                 body, 400, "unknown language"); }
    free(body);
    { int st_ = post_file("/v1/audio/transcriptions", jfk, "-F language=hi -F model=en", &body); expect_error(st_,
                 body, 400, "English-only model, other language"); }
    free(body);
    { int st_ = http(url("/v1/audio/transcriptions"), &body); expect_error(st_, body, 405, "GET on POST route"); }
    free(body);
    { int st_ = http(url("/nope/../../etc/passwd"), &body); expect_error(st_, body, 404, "unknown path"); }
    free(body);
    snprintf(args, sizeof args, "-X DELETE %s", url("/v1/jobs/00000000-0000-4000-8000-000000000000"));
    { int st_ = http(args, &body); expect_error(st_, body, 404, "unknown job"); }
    free(body);
    /* malformed HTTP on a raw socket: the server answers or hangs up, and lives */
    snprintf(args, sizeof args, "printf 'BLAH / HTTP/9.9\\r\\nContent-Length: -5\\r\\n\\r\\n' | "
             "timeout 5 bash -c 'cat > /dev/tcp/127.0.0.1/%d' 2>/dev/null", port);
    free(t_run(args, 1).out);
    CHECK(http(url("/health"), NULL) == 200, "alive after malformed HTTP");
}

/* -------------------------------------------------------- concurrency */

typedef struct {
    const char *file, *fields;
    int status;
    double done_at;
    char *body;
} call;

static void *call_thread(void *arg) {
    call *c = arg;
    c->status = post_file("/v1/audio/transcriptions", c->file, c->fields, &c->body);
    c->done_at = now_s();
    return NULL;
}

static void check_short_not_waiting(const char *long_file) {
    call longs[2] = {{long_file, "-F language=en", 0, 0, NULL}, {long_file, "-F language=en", 0, 0, NULL}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, call_thread, &longs[i]);
    usleep(1500000);   /* the long ones are queued or running */
    double t0 = now_s();
    call shortc = {jfk, "-F language=en", 0, 0, NULL};
    call_thread(&shortc);
    double short_s = shortc.done_at - t0;
    int long_running = longs[0].done_at == 0 || longs[1].done_at == 0;
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    CHECK(shortc.status == 200, "short during long: %d", shortc.status);
    CHECK(long_running, "the short request finished only after the long ones");
    printf("short request answered in %.2f s while long ones ran (long: %.1f s, %.1f s)\n",
           short_s, longs[0].done_at - t0, longs[1].done_at - t0);
    for (int i = 0; i < 2; i++) {
        CHECK(longs[i].status == 200, "long %d: %d", i, longs[i].status);
        free(longs[i].body);
    }
    free(shortc.body);
}

typedef struct {
    double until;
    int ok, errors;
    char last_error[256];
} soak_client;

static void *soak_thread(void *arg) {
    soak_client *c = arg;
    while (now_s() < c->until) {
        char *body;
        int st = post_file("/v1/audio/transcriptions", jfk, "-F language=en -F temperature=0.0",
                           &body);
        if (st == 200) c->ok++;
        else {
            c->errors++;
            snprintf(c->last_error, sizeof c->last_error, "%d %.200s", st, body);
        }
        free(body);
    }
    return NULL;
}

static void check_soak(int seconds) {
    enum { N = 32 };
    soak_client c[N];
    pthread_t t[N];
    double until = now_s() + seconds;
    for (int i = 0; i < N; i++) {
        memset(&c[i], 0, sizeof c[i]);
        c[i].until = until;
        pthread_create(&t[i], NULL, soak_thread, &c[i]);
    }
    int ok = 0, errors = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        ok += c[i].ok;
        errors += c[i].errors;
        if (c[i].errors) fprintf(stderr, "client %d: %s\n", i, c[i].last_error);
    }
    printf("%d clients for %d s: %d answered, %d errors\n", N, seconds, ok, errors);
    CHECK(errors == 0 && ok >= N, "soak: %d ok, %d errors", ok, errors);
}

/* ---------------------------------------------------------------- jobs */

static char *job_status(const char *id, char **body) {
    char path[128];
    snprintf(path, sizeof path, "/v1/jobs/%s", id);
    http(url(path), body);
    cJSON *o = cJSON_Parse(*body);
    const cJSON *s = o ? cJSON_GetObjectItem(o, "status") : NULL;
    char *status = strdup(s && cJSON_IsString(s) ? s->valuestring : "?");
    cJSON_Delete(o);
    return status;
}

static char *create_job(const char *file) {
    char *body;
    int st = post_file("/v1/jobs", file, "-F language=en", &body);
    cJSON *o = cJSON_Parse(body);
    const cJSON *id = o ? cJSON_GetObjectItem(o, "id") : NULL;
    char *r = id ? strdup(id->valuestring) : NULL;
    CHECK(st == 202 && r, "job create: %d %s", st, body);
    cJSON_Delete(o);
    free(body);
    return r;
}

static char *wait_job(const char *id, const char *until_status, double timeout) {
    double end = now_s() + timeout;
    char *status = NULL, *body = NULL;
    while (now_s() < end) {
        free(status), free(body);
        status = job_status(id, &body);
        if (strcmp(status, until_status) == 0 || strcmp(status, "failed") == 0) break;
        usleep(200000);
    }
    free(body);
    return status;
}

static void check_jobs(const char *long_file) {
    char *id = create_job(jfk), *status = wait_job(id, "done", 120), *body;
    CHECK(strcmp(status, "done") == 0, "job: %s", status);
    free(status);
    status = job_status(id, &body);
    CHECK(strstr(body, "\"result\"") && strstr(body, "\"progress\":1"), "job result: %s", body);
    free(status), free(body), free(id);

    /* cancel a queued or running job */
    id = create_job(long_file);
    char args[256];
    snprintf(args, sizeof args, "-X DELETE %s/v1/jobs/%s", url(""), id);
    CHECK(http(args, NULL) == 200, "cancel");
    status = wait_job(id, "cancelled", 60);
    CHECK(strcmp(status, "cancelled") == 0, "cancelled: %s", status);
    free(status), free(id);
}

static void check_job_survives_kill(const char *long_file) {
    char *id = create_job(long_file), *status = wait_job(id, "running", 60);
    CHECK(strcmp(status, "running") == 0, "running before kill: %s", status);
    free(status);
    stop_server(SIGKILL);
    start_server("");
    status = wait_job(id, "done", 600);
    CHECK(strcmp(status, "done") == 0, "the job after kill -9 and restart: %s", status);
    free(status), free(id);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    t_require_testdata();
    run_result probe = t_run("curl --version >/dev/null", 1);
    free(probe.out);
    if (probe.status != 0) {
        printf("SKIP: curl not found (scripts/setup.sh installs it)\n");
        return SKIP_CODE;
    }
    snprintf(work, sizeof work, "/tmp/shruti-server-test-%d", (int)getpid());
    snprintf(model_en, sizeof model_en, "%s", t_path("models/%s", "ggml-mini.en.bin"));
    snprintf(model_multi, sizeof model_multi, "%s", t_path("models/%s", "ggml-mini.bin"));
    snprintf(jfk, sizeof jfk, "%s", t_path("audio/%s", "jfk.wav"));
    char cmd[9000], long_file[256];
    snprintf(long_file, sizeof long_file, "%s/long.wav", work);
    snprintf(cmd, sizeof cmd, "mkdir -p %s && ffmpeg -nostdin -v error -stream_loop 3 -i %s "
             "-c copy -y %s", work, t_path("audio/%s", "longform.wav"), long_file);
    run_result mk = t_run(cmd, 1);
    CHECK(mk.status == 0, "cannot make the long file: %s", mk.out);
    free(mk.out);

    start_server("--workers 2");
    check_endpoints();
    check_device_cuda_refused();
    check_log_lines_parse();
    check_formats_and_cli();
    check_routing();
    check_detection_skips_silence();
    check_bad_input();
    check_short_not_waiting(long_file);
    check_jobs(long_file);
    const char *soak = getenv("SHRUTI_SOAK_SECONDS");
    check_soak(soak ? atoi(soak) : 60);
    check_job_survives_kill(long_file);
    CHECK(stop_server(SIGTERM) == 0, "SIGTERM: clean exit");

    /* limits: 413 for big uploads, 429 when the queue is full */
    start_server("--workers 1 --queue 1 --max-upload-mb 1");
    char *body;
    { int st_ = post_file("/v1/audio/transcriptions", long_file, "", &body); expect_error(st_, body, 413, "upload"); }
    free(body);
    call calls[6];
    pthread_t t[6];
    for (int i = 0; i < 6; i++) {
        calls[i] = (call){jfk, "-F language=en", 0, 0, NULL};
        pthread_create(&t[i], NULL, call_thread, &calls[i]);
    }
    int n429 = 0, n200 = 0;
    for (int i = 0; i < 6; i++) {
        pthread_join(t[i], NULL);
        if (calls[i].status == 429) {
            n429++;
            expect_error(429, calls[i].body, 429, "queue full");
        }
        n200 += calls[i].status == 200;
        free(calls[i].body);
    }
    CHECK(n429 > 0 && n200 > 0, "6 at once with queue 1: %d answered, %d refused", n200, n429);

    /* uploads in flight together stay under 4 x the limit: six slow 0.9 MB
     * uploads at once against 1 MB: some are refused with 429 */
    char mid[256];
    snprintf(mid, sizeof mid, "%s/mid.wav", work);
    snprintf(cmd, sizeof cmd, "ffmpeg -nostdin -v error -i %s -t 28 -y %s",
             t_path("audio/%s", "longform.wav"), mid);
    free(t_run(cmd, 1).out);
    for (int i = 0; i < 6; i++) {
        calls[i] = (call){mid, "--limit-rate 200k -F language=en", 0, 0, NULL};
        pthread_create(&t[i], NULL, call_thread, &calls[i]);
    }
    int busy = 0;
    for (int i = 0; i < 6; i++) {
        pthread_join(t[i], NULL);
        busy += calls[i].status == 429 && strstr(calls[i].body, "too many uploads");
        free(calls[i].body);
    }
    CHECK(busy > 0, "no upload refused for the in-flight budget");
    /* a 429 carries Retry-After */
    for (int i = 0; i < 6; i++) {
        calls[i] = (call){jfk, "-F language=en", 0, 0, NULL};
        pthread_create(&t[i], NULL, call_thread, &calls[i]);
    }
    usleep(100000);
    snprintf(cmd, sizeof cmd, "curl -s -D - -o /dev/null -F file=@%s %s", jfk,
             url("/v1/audio/transcriptions"));
    run_result hdr = t_run(cmd, 1);
    CHECK(!strstr(hdr.out, " 429") || strcasestr(hdr.out, "retry-after: "), "Retry-After: %s",
          hdr.out);
    free(hdr.out);
    for (int i = 0; i < 6; i++) {
        pthread_join(t[i], NULL);
        free(calls[i].body);
    }
    CHECK(stop_server(SIGTERM) == 0, "SIGTERM: clean exit");

    /* audio longer than allowed: 413; a request past its timeout: 504 */
    start_server("--max-audio-s 200 --timeout-s 1");
    { int st_ = post_file("/v1/audio/transcriptions", long_file, "", &body);
      expect_error(st_, body, 413, "audio too long"); }
    free(body);
    { int st_ = post_file("/v1/audio/transcriptions", t_path("audio/%s", "longform.wav"),
                          "-F language=en", &body);
      expect_error(st_, body, 504, "timeout"); }
    free(body);
    CHECK(http(url("/health"), NULL) == 200, "alive after a timeout");
    CHECK(stop_server(SIGTERM) == 0, "SIGTERM: clean exit");
    snprintf(cmd, sizeof cmd, "grep -c Sanitizer %s/server.log", work);
    run_result san = t_run(cmd, 1);
    CHECK(atoi(san.out) == 0, "sanitizer reports in the server log");
    free(san.out);
    snprintf(cmd, sizeof cmd, "rm -rf %s", work);
    free(t_run(cmd, 1).out);
    return t_finish("test_server");
}
