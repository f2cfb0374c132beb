/* test_audio_decode.c - audio input through FFmpeg's libraries: samples
 * identical to `ffmpeg -ac 1 -ar 16000 -f s16le` for every format (wav,
 * mp3, flac, ogg, opus, m4a, webm, mp4 with video, stereo 44.1 kHz), from
 * a file and from memory; and clean errors for missing, empty, non-audio,
 * garbage and truncated input. */
#include <unistd.h>

#include "cli/cli_util.h"
#include "shruti.h"
#include "test_util.h"

static char tmpdir[64];

static int have_ffmpeg(void) {
    run_result r = t_run("ffmpeg -version >/dev/null", 1);
    free(r.out);
    return r.status == 0;
}

/* The reference's samples: the ffmpeg tool's s16le output / 32768. */
static float *reference_pcm(const char *path, size_t *n) {
    char cmd[8400], out[128];
    snprintf(out, sizeof out, "%s/ref.s16", tmpdir);
    snprintf(cmd, sizeof cmd, "ffmpeg -nostdin -v error -threads 0 -i '%s' -f s16le -ac 1 "
             "-acodec pcm_s16le -ar 16000 -y %s", path, out);
    run_result r = t_run(cmd, 1);
    CHECK(r.status == 0, "ffmpeg failed on %s: %s", path, r.out);
    free(r.out);
    size_t size = 0;
    int16_t *s = t_read_file(out, &size);
    *n = size / 2;
    float *f = malloc(sizeof(float) * (*n + 1));
    for (size_t i = 0; i < *n; i++) f[i] = s[i] / 32768.0f;
    free(s);
    return f;
}

static void check_identical(const char *path, const char *label) {
    size_t n_ref, n;
    float *ref = reference_pcm(path, &n_ref), *pcm;
    shruti_error err;
    int r = shruti_audio_load(path, &pcm, &n, &err);
    CHECK(r == 0, "%s: %s", label, err.message);
    if (r == 0) {
        CHECK(n == n_ref, "%s: %zu samples vs ffmpeg's %zu", label, n, n_ref);
        size_t differ = 0;
        for (size_t i = 0; i < n && i < n_ref; i++) differ += pcm[i] != ref[i];
        CHECK(differ == 0, "%s: %zu samples differ from ffmpeg's", label, differ);
        printf("%-28s %8zu samples, identical to ffmpeg: %s\n", label, n,
               n == n_ref && differ == 0 ? "yes" : "NO");
        /* the same bytes from memory */
        size_t size = 0;
        void *data = t_read_file(path, &size);
        float *pcm2;
        size_t n2;
        CHECK(shruti_audio_load_memory(data, size, &pcm2, &n2, &err) == 0, "%s from memory: %s",
              label, err.message);
        CHECK(n2 == n && memcmp(pcm, pcm2, n * sizeof(float)) == 0, "%s: memory differs", label);
        free(pcm2);
        free(data);
        free(pcm);
    }
    free(ref);
}

static void make_and_check(const char *src, const char *args, const char *name) {
    char out[128], cmd[9000];
    snprintf(out, sizeof out, "%s/%s", tmpdir, name);
    snprintf(cmd, sizeof cmd, "ffmpeg -nostdin -v error -i '%s' %s -y %s", src, args, out);
    run_result r = t_run(cmd, 1);
    if (r.status != 0) {
        printf("%-28s skipped: this ffmpeg cannot write it\n", name);
    } else {
        check_identical(out, name);
    }
    free(r.out);
}

static void write_file(const char *name, const void *data, size_t n, char *path) {
    snprintf(path, 128, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
}

static void expect_error(const char *path, int code, const char *label) {
    float *pcm = (float *)1;
    size_t n = 99;
    shruti_error err;
    int r = shruti_audio_load(path, &pcm, &n, &err);
    CHECK(r == code, "%s: status %d, expected %d (%s)", label, r, code, err.message);
    CHECK(r == 0 || (pcm == NULL && n == 0 && err.message[0]), "%s: outputs not cleared", label);
    printf("%-28s -> %s\n", label, r < 0 ? err.message : "ok");
}

static void check_errors(void) {
    char path[128];
    expect_error("/nonexistent/audio.wav", SHRUTI_ERR_IO, "missing file");
    write_file("empty.wav", "", 0, path);
    expect_error(path, SHRUTI_ERR_AUDIO, "empty file");
    const char text[] = "this is a text file, not audio\n";
    write_file("notes.txt", text, sizeof text - 1, path);
    expect_error(path, SHRUTI_ERR_AUDIO, "text file");
    uint8_t garbage[4096];
    uint64_t s = 99;
    for (size_t i = 0; i < sizeof garbage; i++) {
        s = s * 6364136223846793005ull + 1;
        garbage[i] = (uint8_t)(s >> 56);
    }
    write_file("garbage.mp3", garbage, sizeof garbage, path);
    expect_error(path, SHRUTI_ERR_AUDIO, "random bytes");
    /* a WAV header with no samples */
    size_t n;
    uint8_t *wav = t_read_file(t_path("audio/%s", "jfk.wav"), &n);
    write_file("header-only.wav", wav, 44, path);
    expect_error(path, SHRUTI_ERR_AUDIO, "header-only wav");
    /* truncated files decode what is there or fail cleanly */
    for (size_t len = 10; len < n; len += n / 7) {
        write_file("cut.wav", wav, len, path);
        float *pcm;
        size_t ns;
        shruti_error err;
        int r = shruti_audio_load(path, &pcm, &ns, &err);
        CHECK(r == 0 || r == SHRUTI_ERR_AUDIO, "truncated wav %zu: %d", len, r);
        if (r == 0) free(pcm);
    }
    free(wav);
    shruti_error err;
    float *pcm;
    CHECK(shruti_audio_load_memory("", 0, &pcm, &n, &err) == SHRUTI_ERR_AUDIO, "empty memory");
    CHECK(shruti_audio_load_memory(text, sizeof text, &pcm, &n, &err) == SHRUTI_ERR_AUDIO,
          "text in memory");
    CHECK(shruti_audio_load(NULL, &pcm, &n, &err) == SHRUTI_ERR_INVALID_ARG, "NULL path");
}

int main(void) {
    t_require_testdata();
    snprintf(tmpdir, sizeof tmpdir, "/tmp/shruti-audio-test-%d", (int)getpid());
    char cmd[256];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", tmpdir);
    free(t_run(cmd, 1).out);
    check_errors();
    if (!have_ffmpeg()) {
        printf("ffmpeg tool not found: format comparisons skipped\n");
    } else {
        const char *given[] = {"jfk.wav", "jfk.mp3", "jfk.flac", "multilingual.mp3",
                               "hotwords.mp3", "stereo_diarization.wav", "clips/08_hi.wav"};
        for (size_t i = 0; i < sizeof given / sizeof given[0]; i++)
            check_identical(t_path("audio/%s", given[i]), given[i]);
        const char *src = t_path("audio/%s", "stereo_diarization.wav");
        make_and_check(src, "-c:a libvorbis", "stereo.ogg");
        make_and_check(src, "-c:a libopus", "stereo.opus");
        make_and_check(src, "-c:a aac", "stereo.m4a");
        make_and_check(src, "-c:a libopus", "stereo.webm");
        make_and_check(src, "-ar 44100 -ac 2", "stereo44k.wav");
        make_and_check(src, "-ar 8000 -ac 1 -c:a pcm_u8", "mono8k_u8.wav");
        make_and_check(src, "-ar 48000 -ac 6 -c:a pcm_f32le", "six_channels.wav");
        char args[8400];
        snprintf(args, sizeof args, "-f lavfi -i color=c=blue:s=64x64:d=10 -shortest -c:v "
                 "mpeg4 -c:a aac");
        make_and_check(src, args, "video.mp4");
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    free(t_run(cmd, 1).out);
    return t_finish("test_audio_decode");
}
