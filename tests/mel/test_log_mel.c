/* test_log_mel.c - the log-mel spectrogram against the reference's
 * (jfk 80 and 128 bins, first window; longform all frames), within 1e-3. */
#include "shruti.h"
#include "test_util.h"

static void check_mel(const char *model_file, const char *audio, const cJSON *desc,
                      int first_frames_only) {
    shruti_error err;
    shruti_model *m = shruti_model_load(t_path("models/%s", model_file), &err);
    CHECK(m != NULL, "%s", err.message);
    float *pcm;
    size_t n;
    CHECK(shruti_audio_load(t_path("audio/%s", audio), &pcm, &n, &err) == 0, "%s", err.message);
    float *mel;
    int n_frames;
    CHECK(shruti_log_mel(m, pcm, n, 480000, &mel, &n_frames, &err) == 0, "%s", err.message);
    const cJSON *shape = cJSON_GetObjectItem(desc, "shape");
    int n_mels = cJSON_GetArrayItem(shape, 0)->valueint;
    int g_frames = cJSON_GetArrayItem(shape, 1)->valueint;
    size_t g_n;
    float *golden = t_read_f32(desc, &g_n);
    CHECK(n_mels == shruti_model_n_mels(m), "bins %d", n_mels);
    if (!first_frames_only) CHECK(n_frames == g_frames, "frames %d vs %d", n_frames, g_frames);
    double worst = 0;
    for (int b = 0; b < n_mels; b++)
        for (int f = 0; f < g_frames && f < n_frames; f++) {
            double d = fabs(mel[(size_t)b * n_frames + f] - golden[(size_t)b * g_frames + f]);
            if (d > worst) worst = d;
        }
    CHECK(worst <= 1e-3, "%s: max |mel - golden| = %g", audio, worst);
    printf("%s %d bins: max abs diff %.2g\n", audio, n_mels, worst);
    free(golden);
    free(mel);
    free(pcm);
    shruti_model_free(m);
}

int main(void) {
    t_require_testdata();
    cJSON *man = t_manifest("mini");
    cJSON *audio = cJSON_GetObjectItem(man, "audio");
    check_mel("ggml-mini.bin", "jfk.wav", cJSON_GetObjectItem(audio, "jfk_mel80"), 1);
    check_mel("ggml-mini-v3.bin", "jfk.wav", cJSON_GetObjectItem(audio, "jfk_mel128"), 1);
    check_mel("ggml-mini.bin", "longform.wav", cJSON_GetObjectItem(audio, "longform_mel80"), 0);

    /* boundary sizes: one sample, exactly 30 s, 30 s + 1 sample */
    shruti_error err;
    shruti_model *m = shruti_model_load(t_path("models/%s", "ggml-mini.bin"), &err);
    size_t sizes[] = {1, 160, 480000, 480001};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        float *pcm = calloc(sizes[i], sizeof *pcm), *mel;
        int n_frames;
        CHECK(shruti_log_mel(m, pcm, sizes[i], 480000, &mel, &n_frames, &err) == 0, "%zu", sizes[i]);
        CHECK(n_frames == (int)((sizes[i] + 480000) / 160), "frames for %zu", sizes[i]);
        free(mel);
        free(pcm);
    }
    float one = 0.5f, *mel;
    int n_frames;
    CHECK(shruti_log_mel(m, &one, 1, 0, &mel, &n_frames, &err) < 0, "1 sample, no padding: no frame");
    shruti_model_free(m);
    cJSON_Delete(man);
    return t_finish("test_log_mel");
}
