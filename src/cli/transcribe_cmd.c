/* transcribe_cmd.c - `shruti transcribe`: the reference CLI's options,
 * one model load, then each file decoded, transcribed and written. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/download_progress.h"
#include "output/output_formats.h"
#include "shruti.h"

typedef struct {
    const char *model_path;
    const char *compute_type;
    const char *device;
    int device_index;
    const char *output_dir;
    int formats[OUT_COUNT];   /* which formats to write */
    int threads;
    int verbose;
    shruti_params params;
} options;

static void transcribe_usage(FILE *out) {
    fprintf(out,
        "usage: shruti transcribe [options] FILE...\n\n"
        "  --model NAME|PATH             model name (tiny.en, base, medium...; downloaded on first\n"
        "                                use) or ggml file (default $SHRUTI_MODEL, else base)\n"
        "  --language CODE|auto          spoken language (default: auto = detect)\n"
        "  --task transcribe|translate   translate = to English (default transcribe)\n"
        "  --temperature T[,T...]        fallback temperatures (default 0,0.2,0.4,0.6,0.8,1.0)\n"
        "  --beam-size N                 beams at temperature 0 (default 5; 1 = greedy)\n"
        "  --batch-size N                decode N 30 s windows at once (GPU), each on its own,\n"
        "                                greedily, as faster-whisper's batched pipeline (default 1)\n"
        "  --best-of N                   samples at temperature > 0 (default 5)\n"
        "  --patience P                  beam search patience (default 1.0)\n"
        "  --length-penalty A            rank by ((5+len)/6)^A (default: by length)\n"
        "  --suppress-tokens LIST        ids to suppress; -1 = non-speech (default -1)\n"
        "  --initial-prompt TEXT         text to condition the first window on\n"
        "  --no-condition-on-previous-text\n"
        "  --compression-ratio-threshold X   (default 2.4; 'none' disables)\n"
        "  --logprob-threshold X             (default -1.0; 'none' disables)\n"
        "  --no-speech-threshold X           (default 0.6; 'none' disables)\n"
        "  --without-timestamps          decode without timestamp tokens\n"
        "  --clip-timestamps LIST        start,end,... seconds to transcribe\n"
        "  --threads N                   CPU threads (default: all cores)\n"
        "  --compute-type T              auto|float32|float16|int8|int8_float16 (default auto)\n"
        "  --device D                    auto|cuda|cpu (default auto: CUDA when usable)\n"
        "  --device-index N              which CUDA device (default 0)\n"
        "  --seed N                      seed for sampling (default 0)\n"
        "  --output-format F             txt|json|srt|vtt|tsv|all (default txt)\n"
        "  --output-dir DIR              write FILE.<format> there (default: stdout)\n"
        "  --verbose                     print each segment on stderr as it is decoded\n");
}

enum {
    OPT_MODEL = 256, OPT_LANGUAGE, OPT_TASK, OPT_TEMPERATURE, OPT_BEAM, OPT_BATCH, OPT_BEST_OF,
    OPT_PATIENCE, OPT_LENGTH_PENALTY, OPT_SUPPRESS, OPT_PROMPT, OPT_NO_CONDITION, OPT_CRT,
    OPT_LPT, OPT_NST, OPT_NO_TS, OPT_CLIPS, OPT_THREADS, OPT_SEED, OPT_FORMAT, OPT_DIR,
    OPT_VERBOSE, OPT_HELP, OPT_COMPUTE, OPT_DEVICE, OPT_DEVICE_INDEX
};

static const struct option LONG_OPTIONS[] = {
    {"model", required_argument, 0, OPT_MODEL},
    {"language", required_argument, 0, OPT_LANGUAGE},
    {"task", required_argument, 0, OPT_TASK},
    {"temperature", required_argument, 0, OPT_TEMPERATURE},
    {"beam-size", required_argument, 0, OPT_BEAM},
    {"batch-size", required_argument, 0, OPT_BATCH},
    {"best-of", required_argument, 0, OPT_BEST_OF},
    {"patience", required_argument, 0, OPT_PATIENCE},
    {"length-penalty", required_argument, 0, OPT_LENGTH_PENALTY},
    {"suppress-tokens", required_argument, 0, OPT_SUPPRESS},
    {"initial-prompt", required_argument, 0, OPT_PROMPT},
    {"no-condition-on-previous-text", no_argument, 0, OPT_NO_CONDITION},
    {"compression-ratio-threshold", required_argument, 0, OPT_CRT},
    {"logprob-threshold", required_argument, 0, OPT_LPT},
    {"no-speech-threshold", required_argument, 0, OPT_NST},
    {"without-timestamps", no_argument, 0, OPT_NO_TS},
    {"clip-timestamps", required_argument, 0, OPT_CLIPS},
    {"threads", required_argument, 0, OPT_THREADS},
    {"seed", required_argument, 0, OPT_SEED},
    {"output-format", required_argument, 0, OPT_FORMAT},
    {"output-dir", required_argument, 0, OPT_DIR},
    {"verbose", no_argument, 0, OPT_VERBOSE},
    {"compute-type", required_argument, 0, OPT_COMPUTE},
    {"device", required_argument, 0, OPT_DEVICE},
    {"device-index", required_argument, 0, OPT_DEVICE_INDEX},
    {"help", no_argument, 0, OPT_HELP},
    {0, 0, 0, 0}};

static int parse_int(const char *name, const char *s, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "shruti: --%s expects an integer from %d to %d, got '%s'\n", name, lo, hi,
                s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* A float, or NAN for "none" when allow_none. */
static int parse_float(const char *name, const char *s, int allow_none, float *out) {
    if (allow_none && strcmp(s, "none") == 0) {
        *out = NAN;
        return 0;
    }
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) {
        fprintf(stderr, "shruti: --%s expects a number%s, got '%s'\n", name,
                allow_none ? " or 'none'" : "", s);
        return -1;
    }
    *out = (float)v;
    return 0;
}

static int parse_temperatures(const char *s, shruti_params *p) {
    int n = 0;
    const char *q = s;
    while (*q) {
        char *end;
        errno = 0;
        double v = strtod(q, &end);
        if (errno || end == q || (*end && *end != ',') || !(v >= 0) || v > 100 ||
            n == SHRUTI_MAX_TEMPERATURES) {
            fprintf(stderr, "shruti: --temperature expects up to %d numbers >= 0 separated by "
                            "commas, got '%s'\n", SHRUTI_MAX_TEMPERATURES, s);
            return -1;
        }
        p->temperatures[n++] = (float)v;
        q = *end ? end + 1 : end;
    }
    if (n == 0) {
        fprintf(stderr, "shruti: --temperature is empty\n");
        return -1;
    }
    p->n_temperatures = n;
    return 0;
}

static int parse_format(const char *s, options *o) {
    memset(o->formats, 0, sizeof o->formats);
    if (strcmp(s, "all") == 0) {
        for (int i = 0; i < OUT_COUNT; i++) o->formats[i] = 1;
        return 0;
    }
    int f = output_format_parse(s);
    if (f < 0) {
        fprintf(stderr, "shruti: --output-format must be txt, json, srt, vtt, tsv or all\n");
        return -1;
    }
    o->formats[f] = 1;
    return 0;
}

/* Returns the index of the first file argument, or -1 (error) / -2 (help). */
static int parse_options(int argc, char **argv, options *o) {
    shruti_params *p = &o->params;
    *p = shruti_default_params();
    p->beam_size = 5;   /* the reference CLI's defaults */
    p->best_of = 5;
    o->model_path = getenv("SHRUTI_MODEL");
    if (!o->model_path || !*o->model_path) o->model_path = "base";
    o->formats[OUT_TXT] = 1;
    int c, r = 0;
    optind = 1;
    opterr = 0;
    while (r == 0 && (c = getopt_long(argc, argv, "", LONG_OPTIONS, NULL)) != -1) {
        switch (c) {
        case OPT_MODEL: o->model_path = optarg; break;
        case OPT_LANGUAGE: p->language = optarg; break;
        case OPT_TASK:
            if (strcmp(optarg, "transcribe") == 0) p->task = SHRUTI_TASK_TRANSCRIBE;
            else if (strcmp(optarg, "translate") == 0) p->task = SHRUTI_TASK_TRANSLATE;
            else {
                fprintf(stderr, "shruti: --task must be transcribe or translate\n");
                r = -1;
            }
            break;
        case OPT_TEMPERATURE: r = parse_temperatures(optarg, p); break;
        case OPT_BEAM: r = parse_int("beam-size", optarg, 1, 32, &p->beam_size); break;
        case OPT_BATCH: r = parse_int("batch-size", optarg, 1, 64, &p->batch_size); break;
        case OPT_BEST_OF: r = parse_int("best-of", optarg, 1, 32, &p->best_of); break;
        case OPT_PATIENCE:
            r = parse_float("patience", optarg, 0, &p->patience);
            if (r == 0 && !(p->patience > 0)) {
                fprintf(stderr, "shruti: --patience must be > 0\n");
                r = -1;
            }
            break;
        case OPT_LENGTH_PENALTY:
            r = parse_float("length-penalty", optarg, 0, &p->length_penalty);
            if (r == 0 && (p->length_penalty < 0 || p->length_penalty > 1)) {
                fprintf(stderr, "shruti: --length-penalty must be between 0 and 1\n");
                r = -1;
            }
            break;
        case OPT_SUPPRESS: p->suppress_tokens = optarg; break;
        case OPT_PROMPT: p->initial_prompt = optarg; break;
        case OPT_NO_CONDITION: p->condition_on_previous_text = false; break;
        case OPT_CRT: r = parse_float("compression-ratio-threshold", optarg, 1,
                                      &p->compression_ratio_threshold); break;
        case OPT_LPT: r = parse_float("logprob-threshold", optarg, 1, &p->logprob_threshold); break;
        case OPT_NST: r = parse_float("no-speech-threshold", optarg, 1, &p->no_speech_threshold);
            break;
        case OPT_NO_TS: p->without_timestamps = true; break;
        case OPT_CLIPS: p->clip_timestamps = optarg; break;
        case OPT_THREADS: r = parse_int("threads", optarg, 1, 256, &o->threads); break;
        case OPT_SEED: {
            int seed;
            r = parse_int("seed", optarg, 0, INT_MAX, &seed);
            p->seed = (uint64_t)seed;
            break;
        }
        case OPT_FORMAT: r = parse_format(optarg, o); break;
        case OPT_DIR: o->output_dir = optarg; break;
        case OPT_VERBOSE: o->verbose = 1; break;
        case OPT_COMPUTE: o->compute_type = optarg; break;
        case OPT_DEVICE: o->device = optarg; break;
        case OPT_DEVICE_INDEX: r = parse_int("device-index", optarg, 0, 64, &o->device_index); break;
        case OPT_HELP: return -2;
        case ':':
            fprintf(stderr, "shruti: option '%s' needs a value\n", argv[optind - 1]);
            r = -1;
            break;
        default:
            fprintf(stderr, "shruti: unknown option '%s'\n", argv[optind - 1]);
            r = -1;
        }
    }
    if (r < 0) return -1;
    if (optind >= argc) {
        fprintf(stderr, "shruti: no input files (try 'shruti transcribe --help')\n");
        return -1;
    }
    int n_formats = 0;
    for (int i = 0; i < OUT_COUNT; i++) n_formats += o->formats[i];
    if (n_formats > 1 && !o->output_dir) o->output_dir = ".";
    return optind;
}

/* ------------------------------------------------------------ progress */

typedef struct {
    int tty;
    int last;
} progress_state;

static void on_progress(shruti_context *ctx, int percent, void *user) {
    (void)ctx;
    progress_state *s = user;
    if (!s->tty || percent == s->last) return;
    s->last = percent;
    int filled = percent / 5;
    fprintf(stderr, "\r[%.*s%*s] %3d%%", filled, "####################", 20 - filled, "",
            percent);
    if (percent >= 100) fputc('\n', stderr);
    fflush(stderr);
}

static void on_segment(shruti_context *ctx, int first, int n, void *user) {
    (void)user;
    for (int i = first; i < first + n; i++) {
        const shruti_segment *s = shruti_get_segment(ctx, i);
        char a[32], b[32];
        output_format_timestamp(a, sizeof a, s->start, 0, '.');
        output_format_timestamp(b, sizeof b, s->end, 0, '.');
        fprintf(stderr, "[%s --> %s] %s\n", a, b, s->text);
    }
}

/* ---------------------------------------------------------------- output */

static int write_outputs(const options *o, const char *input, shruti_context *ctx) {
    for (int f = 0; f < OUT_COUNT; f++) {
        if (!o->formats[f]) continue;
        if (!o->output_dir) {
            if (output_write(stdout, (output_format)f, ctx) < 0) {
                fprintf(stderr, "shruti: cannot write to standard output\n");
                return -1;
            }
            continue;
        }
        /* DIR/<basename without extension>.<format> */
        const char *base = strrchr(input, '/');
        base = base ? base + 1 : input;
        if (strcmp(input, "-") == 0) base = "stdin";
        const char *dot = strrchr(base, '.');
        int stem = dot && dot != base ? (int)(dot - base) : (int)strlen(base);
        char path[PATH_MAX];
        int n = snprintf(path, sizeof path, "%s/%.*s.%s", o->output_dir, stem, base,
                         output_format_extension((output_format)f));
        if (n < 0 || (size_t)n >= sizeof path) {
            fprintf(stderr, "shruti: output path too long\n");
            return -1;
        }
        FILE *out = fopen(path, "w");
        if (!out) {
            fprintf(stderr, "shruti: cannot write '%s': %s\n", path, strerror(errno));
            return -1;
        }
        int r = output_write(out, (output_format)f, ctx);
        if (fclose(out) != 0 || r < 0) {
            fprintf(stderr, "shruti: cannot write '%s'\n", path);
            return -1;
        }
    }
    return 0;
}

static int ensure_dir(const char *dir) {
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (S_ISDIR(st.st_mode)) return 0;
        fprintf(stderr, "shruti: '%s' is not a directory\n", dir);
        return -1;
    }
    if (mkdir(dir, 0777) != 0) {
        fprintf(stderr, "shruti: cannot create '%s': %s\n", dir, strerror(errno));
        return -1;
    }
    return 0;
}

static int transcribe_file(const options *o, shruti_context *ctx, const char *path) {
    shruti_error err;
    float *pcm;
    size_t n;
    if (shruti_audio_load(path, &pcm, &n, &err) < 0) {
        fprintf(stderr, "shruti: %s: %s\n", path, err.message);
        return -1;
    }
    progress_state ps = {isatty(STDERR_FILENO) && n > (size_t)SHRUTI_SAMPLE_RATE * 60, -1};
    shruti_params p = o->params;
    p.progress_callback = on_progress;
    p.progress_user_data = &ps;
    if (o->verbose) p.segment_callback = on_segment;
    int r = shruti_transcribe(ctx, pcm, n, &p);
    free(pcm);
    if (r < 0) {
        fprintf(stderr, "shruti: %s: %s\n", path, shruti_context_error(ctx));
        return -1;
    }
    return write_outputs(o, path, ctx);
}

int cmd_transcribe(int argc, char **argv) {
    options o;
    memset(&o, 0, sizeof o);
    int first = parse_options(argc, argv, &o);
    if (first == -2) {
        transcribe_usage(stdout);
        return 0;
    }
    if (first < 0) return 2;
    if (o.output_dir && ensure_dir(o.output_dir) < 0) return 1;
    shruti_error err;
    char model_file[4300];
    if (cli_resolve_model(o.model_path, model_file, sizeof model_file) < 0) return 1;
    shruti_model_params mp = shruti_model_default_params();
    if (o.compute_type) mp.compute_type = o.compute_type;
    if (o.device) mp.device = o.device;
    mp.device_index = o.device_index;
    shruti_model *model = shruti_model_load_with_params(model_file, &mp, &err);
    if (!model) {
        fprintf(stderr, "shruti: cannot load model: %s\n", err.message);
        return err.code == SHRUTI_ERR_INVALID_ARG ? 2 : 1;
    }
    /* never silent about where it runs: one line on standard error */
    fprintf(stderr, "shruti: device %s, %s (%s)\n", shruti_model_device(model),
            shruti_model_compute_type(model), shruti_model_device_note(model));
    if (o.params.language && strcmp(o.params.language, "auto") != 0 &&
        shruti_language_index(model, o.params.language) < 0) {
        fprintf(stderr, "shruti: unknown language '%s'%s\n", o.params.language,
                shruti_model_is_multilingual(model) ? "" : " (this model is English-only)");
        shruti_model_free(model);
        return 2;
    }
    shruti_context *ctx = shruti_context_new(model, o.threads, &err);
    if (!ctx) {
        fprintf(stderr, "shruti: %s\n", err.message);
        shruti_model_free(model);
        return 1;
    }
    int failures = 0;
    for (int i = first; i < argc; i++) failures += transcribe_file(&o, ctx, argv[i]) < 0;
    if (strcmp(shruti_context_device(ctx), shruti_model_device(model)) != 0)
        fprintf(stderr, "shruti: warning: %s\n", shruti_context_device_note(ctx));
    shruti_context_free(ctx);
    shruti_model_free(model);
    return failures ? 1 : 0;
}
