/* test_cli_goldens.c - `shruti transcribe --output-format json` against
 * the reference transcribe(): every clip (greedy, beam 5, greedy without
 * timestamps), longform.wav with and without thresholds, and the
 * long-form variants (initial prompt, no conditioning, beam 5, without
 * timestamps, clip_timestamps, translate), token for token. */
#include "cli/cli_util.h"
#include "test_util.h"

static const char *model_file(const char *name) {
    return strcmp(name, "mini") == 0 ? "ggml-mini.bin"
           : strcmp(name, "mini.en") == 0 ? "ggml-mini.en.bin" : "ggml-mini-v3.bin";
}

/* Compares one transcription (the CLI's JSON object) with a golden result. */
static int compare(const char *what, const cJSON *got, const cJSON *want) {
    int before = t_failures;
    const char *gl = cJSON_GetObjectItem(got, "language")->valuestring;
    const cJSON *wl = cJSON_GetObjectItem(want, "language");   /* variants omit it */
    if (wl) CHECK(strcmp(gl, wl->valuestring) == 0, "%s: language %s vs %s", what, gl,
                  wl->valuestring);
    const cJSON *gs = cJSON_GetObjectItem(got, "segments"), *ws = cJSON_GetObjectItem(want, "segments");
    CHECK(cJSON_GetArraySize(gs) == cJSON_GetArraySize(ws), "%s: %d segments vs %d", what,
          cJSON_GetArraySize(gs), cJSON_GetArraySize(ws));
    for (int i = 0; i < cJSON_GetArraySize(gs) && i < cJSON_GetArraySize(ws); i++) {
        const cJSON *g = cJSON_GetArrayItem(gs, i), *w = cJSON_GetArrayItem(ws, i);
        int ng, nw;
        int *tg = t_int_array(cJSON_GetObjectItem(g, "tokens"), &ng);
        int *tw = t_int_array(cJSON_GetObjectItem(w, "tokens"), &nw);
        int32_t *tg32 = malloc(sizeof(int32_t) * (size_t)(ng + 1));
        for (int k = 0; k < ng; k++) tg32[k] = tg[k];
        CHECK(t_same_tokens(tw, nw, tg32, ng), "%s: segment %d tokens differ", what, i);
        double ds = fabs(cJSON_GetObjectItem(g, "start")->valuedouble -
                         cJSON_GetObjectItem(w, "start")->valuedouble);
        double de = fabs(cJSON_GetObjectItem(g, "end")->valuedouble -
                         cJSON_GetObjectItem(w, "end")->valuedouble);
        CHECK(ds < 1e-6 && de < 1e-6, "%s: segment %d times differ", what, i);
        CHECK(strcmp(cJSON_GetObjectItem(g, "text")->valuestring,
                     cJSON_GetObjectItem(w, "text")->valuestring) == 0,
              "%s: segment %d text differs", what, i);
        const cJSON *seek = cJSON_GetObjectItem(w, "seek");
        if (seek) CHECK(seek->valueint == cJSON_GetObjectItem(g, "seek")->valueint,
                        "%s: segment %d seek", what, i);
        free(tg), free(tw), free(tg32);
        if (t_failures > before + 3) break;   /* one broken file says enough */
    }
    CHECK(strcmp(cJSON_GetObjectItem(got, "text")->valuestring,
                 cJSON_GetObjectItem(want, "text")->valuestring) == 0, "%s: text differs", what);
    return t_failures == before;
}

/* Runs the CLI over files, returning one parsed JSON object per file. */
static cJSON **run_cli(const char *model, const char *opts, const char *files, int n_files) {
    char cmd[12000];
    /* the device is pinned ($SHRUTI_TEST_DEVICE, else cpu): these are exact goldens */
    snprintf(cmd, sizeof cmd, "%s transcribe --threads 2 --device %s --model %s/models/%s "
             "--output-format json %s %s", SHRUTI_CLI, t_device(), t_testdata(), model, opts,
             files);
    run_result r = t_run(cmd, 0);
    CHECK(r.status == 0, "exit %d for: %s", r.status, cmd);
    cJSON **objs = calloc((size_t)n_files, sizeof *objs);
    char *line = r.out;
    for (int i = 0; i < n_files && line && *line; i++) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        objs[i] = cJSON_Parse(line);
        CHECK(objs[i] != NULL, "bad JSON line %d", i);
        line = nl ? nl + 1 : NULL;
    }
    free(r.out);
    return objs;
}

static void check_clips(const char *name, const cJSON *entry) {
    const cJSON *clips = cJSON_GetObjectItem(cJSON_GetObjectItem(entry, "transcribe_clips"), "clips");
    int n = cJSON_GetArraySize(clips);
    char files[8192] = "";
    for (int i = 0; i < n; i++) {
        const char *f = cJSON_GetObjectItem(cJSON_GetArrayItem(clips, i), "file")->valuestring;
        size_t len = strlen(files);
        snprintf(files + len, sizeof files - len, " %s/audio/%s%s", t_testdata(),
                 strcmp(f, "jfk.wav") == 0 ? "" : "clips/", f);
    }
    const char *modes[] = {"greedy", "beam5", "greedy_notimestamps"};
    const char *opts[] = {"--temperature 0 --beam-size 1", "--temperature 0 --beam-size 5",
                          "--temperature 0 --beam-size 1 --without-timestamps"};
    for (int mo = 0; mo < 3; mo++) {
        cJSON **got = run_cli(model_file(name), opts[mo], files, n);
        int ok = 0;
        for (int i = 0; i < n; i++) {
            const cJSON *c = cJSON_GetArrayItem(clips, i);
            char what[256];
            snprintf(what, sizeof what, "%s %s %s", name, modes[mo],
                     cJSON_GetObjectItem(c, "file")->valuestring);
            if (got[i]) ok += compare(what, got[i], cJSON_GetObjectItem(c, modes[mo]));
            cJSON_Delete(got[i]);
        }
        printf("%s transcribe_clips %s: %d/%d identical\n", name, modes[mo], ok, n);
        free(got);
    }
}

static void check_one(const char *name, const char *what, const char *opts, const cJSON *want) {
    char files[4200];
    snprintf(files, sizeof files, "%s/audio/longform.wav", t_testdata());
    cJSON **got = run_cli(model_file(name), opts, files, 1);
    char label[256];
    snprintf(label, sizeof label, "%s longform %s", name, what);
    if (got[0]) printf("%s: %s\n", label, compare(label, got[0], want) ? "identical" : "DIFFERS");
    cJSON_Delete(got[0]);
    free(got);
}

static void check_longform(const char *name, const cJSON *entry) {
    const cJSON *lt = cJSON_GetObjectItem(entry, "longform_transcribe");
    const char *base = "--language en --temperature 0 --beam-size 1";
    char opts[512];
    check_one(name, "default_thresholds", base, cJSON_GetObjectItem(lt, "default_thresholds"));
    snprintf(opts, sizeof opts, "%s --compression-ratio-threshold none --logprob-threshold none "
             "--no-speech-threshold none", base);
    check_one(name, "no_thresholds", opts, cJSON_GetObjectItem(lt, "no_thresholds"));
    const cJSON *lv = cJSON_GetObjectItem(entry, "longform_variants");
    const struct { const char *key, *opts; } variants[] = {
        {"initial_prompt", "--initial-prompt ' Speech recognition test.'"},
        {"no_condition", "--no-condition-on-previous-text"},
        {"beam5", "--beam-size 5"},
        {"without_timestamps", "--without-timestamps"},
        {"clip_5_25", "--clip-timestamps 5,25"},
        {"translate", "--task translate"}};
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        const cJSON *v = cJSON_GetObjectItem(lv, variants[i].key);
        if (!v) continue;
        /* the variant's own options, read from the manifest, must be the
         * ones this test passes */
        const cJSON *vo = cJSON_GetObjectItem(v, "options");
        const cJSON *prompt = cJSON_GetObjectItem(vo, "initial_prompt");
        if (prompt) CHECK(strcmp(prompt->valuestring, " Speech recognition test.") == 0, "prompt");
        snprintf(opts, sizeof opts, "%s %s", base, variants[i].opts);
        check_one(name, variants[i].key, opts, v);
    }
}

/* argv[1] picks one model (ctest runs the three in parallel); none: all */
int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    t_require_testdata();
    for (int i = 0; i < 3; i++) {
        if (argc > 1 && strcmp(argv[1], T_MODELS[i]) != 0) continue;
        cJSON *man = t_manifest(T_MODELS[i]);
        const cJSON *entry = t_model_entry(man, T_MODELS[i]);
        check_clips(T_MODELS[i], entry);
        check_longform(T_MODELS[i], entry);
        cJSON_Delete(man);
    }
    return t_finish("test_cli_goldens");
}
