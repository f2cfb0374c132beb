/* test_cli_errors.c - the CLI facing bad input: unknown options and bad
 * values, missing, corrupt and truncated models, non-audio, empty and
 * missing inputs. Each exits non-zero with a message on standard error
 * and no sanitizer report; good runs (stdin, output files, every format)
 * work. */
#include <unistd.h>

#include "cli/cli_util.h"
#include "test_util.h"

static char tmp[64];

static void expect_failure(const char *args, int code, const char *needle) {
    char cmd[9000];
    snprintf(cmd, sizeof cmd, "%s %s", SHRUTI_CLI, args);
    run_result r = t_run(cmd, 1);
    CHECK(r.status == code, "'%s' exited %d, expected %d: %s", args, r.status, code, r.out);
    CHECK(strstr(r.out, needle) != NULL, "'%s': message lacks '%s': %s", args, needle, r.out);
    CHECK(strstr(r.out, "Sanitizer") == NULL, "'%s': sanitizer report: %s", args, r.out);
    free(r.out);
}

static run_result run_ok(const char *args) {
    char cmd[9000];
    snprintf(cmd, sizeof cmd, "%s %s", SHRUTI_CLI, args);
    run_result r = t_run(cmd, 0);
    CHECK(r.status == 0, "'%s' exited %d", args, r.status);
    return r;
}

static void write_bytes(const char *name, const void *data, size_t n) {
    char path[128];
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
}

int main(void) {
    t_require_testdata();
    snprintf(tmp, sizeof tmp, "/tmp/shruti-cli-test-%d", (int)getpid());
    char cmd[9000], model[4300], jfk[4300];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", tmp);
    free(t_run(cmd, 1).out);
    snprintf(model, sizeof model, "%s", t_path("models/%s", "ggml-mini.en.bin"));
    snprintf(jfk, sizeof jfk, "%s", t_path("audio/%s", "jfk.wav"));

    size_t n;
    char *bytes = t_read_file(model, &n);
    write_bytes("truncated.bin", bytes, n / 2);
    bytes[60] ^= 0x7f;
    bytes[4] = 0x7f;   /* n_vocab */
    write_bytes("corrupt.bin", bytes, n);
    free(bytes);
    write_bytes("empty.wav", "", 0);
    write_bytes("notes.txt", "hello, not audio\n", 17);

    char a[9000];
    expect_failure("", 2, "usage");
    expect_failure("frobnicate", 2, "unknown command");
    expect_failure("transcribe --no-such-option x.wav", 2, "unknown option");
    snprintf(a, sizeof a, "transcribe --model %s", model);
    expect_failure(a, 2, "no input files");
    /* no model given: the default name, not downloadable here (port 9 refuses) */
    snprintf(cmd, sizeof cmd, "SHRUTI_MODEL= SHRUTI_CACHE=%s/cache SHRUTI_MODEL_BASE_URL="
             "http://127.0.0.1:9 %s transcribe %s", tmp, SHRUTI_CLI, jfk);
    run_result nm = t_run(cmd, 1);
    CHECK(nm.status == 1 && strstr(nm.out, "--model /path/to"), "default model offline: %s",
          nm.out);
    free(nm.out);
    snprintf(a, sizeof a, "transcribe --model %s --beam-size 0 %s", model, jfk);
    expect_failure(a, 2, "--beam-size");
    snprintf(a, sizeof a, "transcribe --model %s --temperature 0,x %s", model, jfk);
    expect_failure(a, 2, "--temperature");
    snprintf(a, sizeof a, "transcribe --model %s --output-format docx %s", model, jfk);
    expect_failure(a, 2, "--output-format");
    snprintf(a, sizeof a, "transcribe --model %s --task dance %s", model, jfk);
    expect_failure(a, 2, "--task");
    snprintf(a, sizeof a, "transcribe --model %s --language hi %s", model, jfk);
    expect_failure(a, 2, "English-only");
    snprintf(a, sizeof a, "transcribe --model %s/models/ggml-mini.bin --language xx %s",
             t_testdata(), jfk);
    expect_failure(a, 2, "unknown language");
    snprintf(a, sizeof a, "transcribe --model %s --device tpu %s", model, jfk);
    expect_failure(a, 2, "unknown device");
    /* --device cuda: an error that says why where no GPU is usable; where
     * one is, the device line on stderr says cuda */
    snprintf(a, sizeof a, "%s transcribe --model %s --device cuda %s", SHRUTI_CLI, model, jfk);
    run_result rc = t_run(a, 1);
    CHECK(rc.status == 0 ? strstr(rc.out, "device cuda") != NULL
                         : rc.status == 1 && strstr(rc.out, "CUDA requested but not usable"),
          "--device cuda: exit %d: %s", rc.status, rc.out);
    free(rc.out);
    snprintf(a, sizeof a, "%s transcribe --model %s --device auto %s", SHRUTI_CLI, model, jfk);
    rc = t_run(a, 1);
    CHECK(rc.status == 0 && strstr(rc.out, "shruti: device "), "--device auto must say where: %s",
          rc.out);
    free(rc.out);
    snprintf(a, sizeof a, "%s devices", SHRUTI_CLI);
    rc = t_run(a, 1);
    CHECK(rc.status == 0 && strstr(rc.out, "backends: cpu") && strstr(rc.out, "cuda"),
          "shruti devices: %s", rc.out);
    free(rc.out);
    snprintf(a, sizeof a, "transcribe --model %s --suppress-tokens 1,abc %s", model, jfk);
    expect_failure(a, 1, "suppress_tokens");
    snprintf(a, sizeof a, "transcribe --model /nonexistent.bin %s", jfk);
    expect_failure(a, 1, "cannot open model");
    snprintf(a, sizeof a, "transcribe --model %s/truncated.bin %s", tmp, jfk);
    expect_failure(a, 1, "truncated");
    snprintf(a, sizeof a, "transcribe --model %s/corrupt.bin %s", tmp, jfk);
    expect_failure(a, 1, "n_vocab");
    snprintf(a, sizeof a, "transcribe --model %s %s/empty.wav", model, tmp);
    expect_failure(a, 1, "empty");
    snprintf(a, sizeof a, "transcribe --model %s %s/notes.txt", model, tmp);
    expect_failure(a, 1, "not a readable audio");
    snprintf(a, sizeof a, "transcribe --model %s %s/missing.wav", model, tmp);
    expect_failure(a, 1, "No such file");
    snprintf(a, sizeof a, "transcribe --model %s - < %s/notes.txt", model, tmp);
    expect_failure(a, 1, "not a readable audio");
    /* one bad file among good ones: the good ones are still written */
    snprintf(a, sizeof a, "transcribe --model %s --temperature 0 %s %s/notes.txt", model, jfk, tmp);
    expect_failure(a, 1, "notes.txt");

    /* standard input gives the same text as the file */
    snprintf(a, sizeof a, "transcribe --model %s --temperature 0 %s", model, jfk);
    run_result from_file = run_ok(a);
    snprintf(a, sizeof a, "transcribe --model %s --temperature 0 - < %s", model, jfk);
    run_result from_stdin = run_ok(a);
    CHECK(strcmp(from_file.out, from_stdin.out) == 0 && strlen(from_file.out) > 10,
          "stdin differs: '%s' vs '%s'", from_file.out, from_stdin.out);
    free(from_file.out);
    free(from_stdin.out);

    /* every format into a directory */
    snprintf(a, sizeof a, "transcribe --model %s --temperature 0 --output-format all "
             "--output-dir %s/out %s", model, tmp, jfk);
    free(run_ok(a).out);
    const char *ext[] = {"txt", "json", "srt", "vtt", "tsv"};
    for (int i = 0; i < 5; i++) {
        char path[256];
        snprintf(path, sizeof path, "%s/out/jfk.%s", tmp, ext[i]);
        char *text = t_read_file(path, &n);
        CHECK(text && n > 10, "%s written", path);
        if (text && i == 2) CHECK(strncmp(text, "1\n00:00:00,000 --> 00:00:", 25) == 0, "srt: %s", text);
        if (text && i == 3) CHECK(strncmp(text, "WEBVTT\n\n00:00.000 --> 00:", 25) == 0, "vtt: %s", text);
        if (text && i == 4) CHECK(strncmp(text, "start\tend\ttext\n0\t", 17) == 0, "tsv: %s", text);
        free(text);
    }
    free(run_ok("transcribe --help").out);
    free(run_ok("version").out);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    free(t_run(cmd, 1).out);
    return t_finish("test_cli_errors");
}
