/* output_formats.h - writing a transcription as txt, json, srt, vtt, tsv. */
#ifndef SHRUTI_OUTPUT_FORMATS_H
#define SHRUTI_OUTPUT_FORMATS_H

#include <cjson/cJSON.h>
#include <stdio.h>

#include "shruti.h"

typedef enum { OUT_TXT, OUT_JSON, OUT_SRT, OUT_VTT, OUT_TSV, OUT_COUNT } output_format;

/* "txt" ... -> format; -1 if unknown. */
int output_format_parse(const char *name);
const char *output_format_extension(output_format f);

/* A transcription to write: the segments and the whole-file fields. */
typedef struct {
    const shruti_segment *segments;
    int n_segments;
    const char *text, *language;
    double duration;
} output_result;

/* Writes a result to out. Returns 0 or -1 on a write error. */
int output_write_result(FILE *out, output_format f, const output_result *r);

/* Writes ctx's last result to out. Returns 0 or -1 on a write error. */
int output_write(FILE *out, output_format f, shruti_context *ctx);

/* The reference's result dictionary ({text, language, duration,
 * segments}) as JSON, from a result or from ctx's last one; NULL on OOM. */
cJSON *output_result_json(const output_result *r);
cJSON *output_context_json(shruti_context *ctx);

/* The reference's timestamp text: [HH:]MM:SS<marker>mmm. */
void output_format_timestamp(char *buf, size_t size, double seconds, int always_hours,
                             char decimal_marker);

#endif
