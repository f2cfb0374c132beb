/* output_formats.c - the reference CLI's writers (txt, srt, vtt, tsv) and
 * its result dictionary as JSON, with the file's duration added. */
#include "output/output_formats.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "decode/text.h"

static const char *const NAMES[OUT_COUNT] = {"txt", "json", "srt", "vtt", "tsv"};

int output_format_parse(const char *name) {
    for (int i = 0; i < OUT_COUNT; i++)
        if (strcmp(name, NAMES[i]) == 0) return i;
    return -1;
}

const char *output_format_extension(output_format f) { return NAMES[f]; }

void output_format_timestamp(char *buf, size_t size, double seconds, int always_hours,
                             char decimal_marker) {
    long long ms = seconds > 0 ? llround(seconds * 1000.0) : 0;
    long long hours = ms / 3600000;
    ms -= hours * 3600000;
    long long minutes = ms / 60000;
    ms -= minutes * 60000;
    long long secs = ms / 1000;
    ms -= secs * 1000;
    if (always_hours || hours > 0)
        snprintf(buf, size, "%02lld:%02lld:%02lld%c%03lld", hours, minutes, secs, decimal_marker,
                 ms);
    else
        snprintf(buf, size, "%02lld:%02lld%c%03lld", minutes, secs, decimal_marker, ms);
}

/* Segment text stripped, with "-->" made harmless for subtitle files and
 * tabs for TSV. Caller frees. */
static char *clean_text(const char *text, const char *from, const char *to) {
    char *s = sh_strip(text);
    if (!s || !from) return s;
    size_t n_from = strlen(from), n_to = strlen(to), count = 0;
    for (const char *p = strstr(s, from); p; p = strstr(p + n_from, from)) count++;
    if (count == 0) return s;
    char *r = malloc(strlen(s) + count * n_to + 1), *w = r;
    if (!r) {
        free(s);
        return NULL;
    }
    for (const char *p = s; *p;) {
        if (strncmp(p, from, n_from) == 0) {
            memcpy(w, to, n_to);
            w += n_to;
            p += n_from;
        } else {
            *w++ = *p++;
        }
    }
    *w = '\0';
    free(s);
    return r;
}

static int write_subtitles(FILE *out, const output_result *res, int srt) {
    if (!srt) fprintf(out, "WEBVTT\n\n");
    for (int i = 0; i < res->n_segments; i++) {
        const shruti_segment *s = (&res->segments[i]);
        char a[32], b[32];
        output_format_timestamp(a, sizeof a, s->start, srt, srt ? ',' : '.');
        output_format_timestamp(b, sizeof b, s->end, srt, srt ? ',' : '.');
        char *text = clean_text(s->text, "-->", "->");
        if (!text) return -1;
        if (srt) fprintf(out, "%d\n", i + 1);
        fprintf(out, "%s --> %s\n%s\n\n", a, b, text);
        free(text);
    }
    return 0;
}

static int write_txt(FILE *out, const output_result *res) {
    for (int i = 0; i < res->n_segments; i++) {
        char *text = clean_text((&res->segments[i])->text, NULL, NULL);
        if (!text) return -1;
        fprintf(out, "%s\n", text);
        free(text);
    }
    return 0;
}

static int write_tsv(FILE *out, const output_result *res) {
    fprintf(out, "start\tend\ttext\n");
    for (int i = 0; i < res->n_segments; i++) {
        const shruti_segment *s = (&res->segments[i]);
        char *text = clean_text(s->text, "\t", " ");
        if (!text) return -1;
        fprintf(out, "%.0f\t%.0f\t%s\n", nearbyint(1000 * s->start), nearbyint(1000 * s->end),
                text);
        free(text);
    }
    return 0;
}

static cJSON *segment_json(const shruti_segment *s) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddNumberToObject(o, "id", s->id);
    cJSON_AddNumberToObject(o, "seek", s->seek);
    cJSON_AddNumberToObject(o, "start", s->start);
    cJSON_AddNumberToObject(o, "end", s->end);
    cJSON_AddStringToObject(o, "text", s->text);
    cJSON *tokens = cJSON_AddArrayToObject(o, "tokens");
    for (int i = 0; tokens && i < s->n_tokens; i++)
        cJSON_AddItemToArray(tokens, cJSON_CreateNumber(s->tokens[i]));
    cJSON_AddNumberToObject(o, "temperature", s->temperature);
    cJSON_AddNumberToObject(o, "avg_logprob", s->avg_logprob);
    cJSON_AddNumberToObject(o, "compression_ratio", s->compression_ratio);
    cJSON_AddNumberToObject(o, "no_speech_prob", s->no_speech_prob);
    return o;
}

cJSON *output_result_json(const output_result *res) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    cJSON_AddStringToObject(root, "text", res->text);
    cJSON_AddStringToObject(root, "language", res->language);
    cJSON_AddNumberToObject(root, "duration", res->duration);
    cJSON *segs = cJSON_AddArrayToObject(root, "segments");
    for (int i = 0; segs && i < res->n_segments; i++)
        cJSON_AddItemToArray(segs, segment_json(&res->segments[i]));
    return root;
}

static int write_json(FILE *out, const output_result *res) {
    cJSON *root = output_result_json(res);
    char *s = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!s) return -1;
    fprintf(out, "%s\n", s);
    free(s);
    return 0;
}

int output_write_result(FILE *out, output_format f, const output_result *res) {
    int r;
    switch (f) {
    case OUT_TXT: r = write_txt(out, res); break;
    case OUT_JSON: r = write_json(out, res); break;
    case OUT_SRT: r = write_subtitles(out, res, 1); break;
    case OUT_VTT: r = write_subtitles(out, res, 0); break;
    case OUT_TSV: r = write_tsv(out, res); break;
    default: r = -1;
    }
    if (fflush(out) != 0 || ferror(out)) r = -1;
    return r;
}

/* ctx's last result as an output_result; *segs (caller frees) holds it. */
static int result_of(shruti_context *ctx, output_result *r, shruti_segment **segs) {
    int n = shruti_n_segments(ctx);
    *segs = malloc(sizeof **segs * (size_t)(n ? n : 1));
    if (!*segs) return -1;
    for (int i = 0; i < n; i++) (*segs)[i] = *shruti_get_segment(ctx, i);
    *r = (output_result){*segs, n, shruti_full_text(ctx), shruti_full_language(ctx),
                         shruti_full_duration(ctx)};
    return 0;
}

int output_write(FILE *out, output_format f, shruti_context *ctx) {
    output_result r;
    shruti_segment *segs;
    if (result_of(ctx, &r, &segs) < 0) return -1;
    int rc = output_write_result(out, f, &r);
    free(segs);
    return rc;
}

cJSON *output_context_json(shruti_context *ctx) {
    output_result r;
    shruti_segment *segs;
    if (result_of(ctx, &r, &segs) < 0) return NULL;
    cJSON *o = output_result_json(&r);
    free(segs);
    return o;
}
