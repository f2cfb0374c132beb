/* test_model_download.c - models by name against a real HTTP server on
 * loopback (tests/tools/model_server.py over the fixture models under
 * their published file names), through SHRUTI_MODEL_BASE_URL: a pull then
 * a transcription by name; a download cut off by the server dying, then
 * resumed with a Range request; a corrupt download rejected by its
 * SHA-256; 404 and connection refused; two processes pulling one name at
 * once; `models list|path|rm`. */
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli_util.h"
#include "test_util.h"

static char work[128], serve_dir[256], cache[256], log_path[256];

static pid_t server_pid;
static int server_port;

static void start_server(const char *extra) {
    char port_file[300], cmd[2048];
    snprintf(port_file, sizeof port_file, "%s/port", work);
    unlink(port_file);
    snprintf(cmd, sizeof cmd, "exec python3 %s/tests/tools/model_server.py --dir %s "
             "--port-file %s --log %s %s", SHRUTI_SOURCE_DIR, serve_dir, port_file, log_path,
             extra);
    server_pid = t_spawn(cmd);
    for (int i = 0; i < 200; i++) {   /* up to 10 s */
        char *p = t_read_file(port_file, NULL);
        if (p) {
            server_port = atoi(p);
            free(p);
            return;
        }
        usleep(50000);
    }
    fprintf(stderr, "model server did not start\n");
    exit(1);
}

static void stop_server(void) {
    if (server_pid > 0) {
        kill(server_pid, SIGKILL);
        waitpid(server_pid, NULL, 0);
    }
    server_pid = 0;
}

static run_result shruti(const char *args) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "SHRUTI_CACHE=%s SHRUTI_MODEL_BASE_URL=http://127.0.0.1:%d %s %s",
             cache, server_port, SHRUTI_CLI, args);
    return t_run(cmd, 1);
}

static int same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = t_read_file(a, &na), *y = t_read_file(b, &nb);
    int same = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x), free(y);
    return same;
}

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

int main(void) {
    t_require_testdata();
    run_result py = t_run("python3 --version", 1);
    free(py.out);
    if (py.status != 0) {
        printf("SKIP: python3 not found (scripts/setup.sh installs it)\n");
        return SKIP_CODE;
    }
    snprintf(work, sizeof work, "/tmp/shruti-dl-test-%d", (int)getpid());
    snprintf(serve_dir, sizeof serve_dir, "%s/served", work);
    snprintf(cache, sizeof cache, "%s/cache", work);
    snprintf(log_path, sizeof log_path, "%s/server.log", work);
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "mkdir -p %s && cp %s/models/ggml-mini.bin %s/models/ggml-mini.en.bin "
             "%s/", serve_dir, t_testdata(), t_testdata(), serve_dir);
    free(t_run(cmd, 1).out);
    char original[4300], cached[512], part[600];
    snprintf(original, sizeof original, "%s", t_path("models/%s", "ggml-mini.en.bin"));
    snprintf(cached, sizeof cached, "%s/ggml-mini.en.bin", cache);
    snprintf(part, sizeof part, "%s.part", cached);

    /* 1. pull by name, then transcribe by name: same text as by path */
    start_server("");
    run_result r = shruti("models pull mini.en");
    CHECK(r.status == 0, "pull: %s", r.out);
    CHECK(same_file(cached, original), "pulled file differs");
    free(r.out);
    char args[8192];
    snprintf(args, sizeof args, "transcribe --model mini.en --temperature 0 %s/audio/jfk.wav",
             t_testdata());
    run_result by_name = shruti(args);
    snprintf(args, sizeof args, "transcribe --model %s --temperature 0 %s/audio/jfk.wav",
             original, t_testdata());
    run_result by_path = shruti(args);
    CHECK(by_name.status == 0 && strcmp(by_name.out, by_path.out) == 0, "by name: %s vs %s",
          by_name.out, by_path.out);
    free(by_name.out), free(by_path.out);
    r = shruti("models path mini.en");
    CHECK(r.status == 0 && strstr(r.out, cached), "path: %s", r.out);
    free(r.out);
    r = shruti("models list");
    CHECK(r.status == 0 && strstr(r.out, "large-v3-turbo") && strstr(r.out, "tiny.en"), "list");
    free(r.out);
    r = shruti("models rm mini.en");
    CHECK(r.status == 0 && !exists(cached), "rm: %s", r.out);
    free(r.out);
    r = shruti("models path mini.en");
    CHECK(r.status == 1, "path of a removed model exits 1");
    free(r.out);
    stop_server();

    /* 2. the server dies mid-download; the next pull resumes */
    start_server("--die-after 3000000");
    r = shruti("models pull mini.en");
    CHECK(r.status != 0 && strstr(r.out, "resume"), "interrupted: %d %s", r.status, r.out);
    free(r.out);
    CHECK(!exists(cached), "no final file after an interrupted download");
    struct stat st;
    CHECK(stat(part, &st) == 0 && st.st_size > 0 && st.st_size <= 3000000, "partial kept");
    stop_server();
    unlink(log_path);
    start_server("");
    r = shruti("models pull mini.en");
    CHECK(r.status == 0, "resume: %s", r.out);
    free(r.out);
    CHECK(same_file(cached, original), "resumed file differs");
    CHECK(!exists(part), "part file gone");
    char *log = t_read_file(log_path, NULL);
    CHECK(log && strstr(log, "range=bytes="), "the second pull asked for a range: %s", log);
    free(log);
    stop_server();
    free(shruti("models rm mini.en").out);

    /* 3. corrupt bytes: rejected by the checksum, nothing left behind */
    start_server("--corrupt");
    r = shruti("models pull mini.en");
    CHECK(r.status != 0 && strstr(r.out, "SHA-256"), "corrupt: %s", r.out);
    free(r.out);
    CHECK(!exists(cached) && !exists(part), "corrupt download removed");
    stop_server();

    /* 4. 404 and connection refused name the URL and the way out */
    start_server("");
    r = shruti("models pull nosuchmodel");
    CHECK(r.status == 1 && strstr(r.out, "404") && strstr(r.out, "ggml-nosuchmodel.bin") &&
              strstr(r.out, "--model /path/to"), "404: %s", r.out);
    free(r.out);
    int port = server_port;
    stop_server();
    server_port = port;   /* nothing listens there now */
    r = shruti("models pull mini.en");
    CHECK(r.status == 1 && strstr(r.out, "127.0.0.1") && strstr(r.out, "--model /path/to"),
          "refused: %s", r.out);
    free(r.out);
    snprintf(args, sizeof args, "transcribe --model mini.en %s/audio/jfk.wav", t_testdata());
    r = shruti(args);
    CHECK(r.status == 1 && strstr(r.out, "--model /path/to"), "transcribe offline: %s", r.out);
    free(r.out);
    r = shruti("models pull ../etc/passwd");
    CHECK(r.status == 2, "a path is not a name: %s", r.out);
    free(r.out);

    /* 5. two processes pull the same name at once: one good file */
    unlink(log_path);
    start_server("--slow");
    snprintf(cmd, sizeof cmd,
             "export SHRUTI_CACHE=%s SHRUTI_MODEL_BASE_URL=http://127.0.0.1:%d; "
             "%s models pull mini.en > %s/a.out 2>&1 & %s models pull mini.en > %s/b.out 2>&1 & "
             "wait %%1; a=$?; wait %%2; b=$?; exit $((a + b))",
             cache, server_port, SHRUTI_CLI, work, SHRUTI_CLI, work);
    r = t_run(cmd, 1);
    CHECK(r.status == 0, "concurrent pulls: %d %s", r.status, r.out);
    free(r.out);
    CHECK(same_file(cached, original), "concurrent result differs");
    log = t_read_file(log_path, NULL);
    int gets = 0;
    for (const char *p = log; p && (p = strstr(p, "GET /ggml-mini.en.bin ")); p++) gets++;
    CHECK(gets == 1, "the model was downloaded %d times", gets);
    free(log);
    stop_server();

    snprintf(cmd, sizeof cmd, "rm -rf %s", work);
    free(t_run(cmd, 1).out);
    return t_finish("test_model_download");
}
