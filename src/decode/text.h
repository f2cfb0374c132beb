/* text.h - tokens <-> text: byte-level BPE encoding (prompts) and decoding
 * of token ids to UTF-8 with the reference's replacement of bad bytes. */
#ifndef SHRUTI_DECODE_TEXT_H
#define SHRUTI_DECODE_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

/* Decodes tokens below timestamp_begin (specials by name) into a malloc'd,
 * NUL-terminated UTF-8 string; invalid byte sequences become U+FFFD as
 * Python's bytes.decode("utf-8", "replace") does. NULL on OOM. */
char *sh_tokens_to_text(const shruti_model *m, const int32_t *tokens, int n);

/* Encodes UTF-8 text with the model's BPE; *out malloc'd. Returns the
 * token count or a negative status. */
int sh_text_to_tokens(const shruti_model *m, const char *text, int32_t **out);

/* Python's str.strip(): a malloc'd copy without leading/trailing Unicode
 * whitespace. */
char *sh_strip(const char *s);

/* The reference's non-speech suppress list, sorted; *out malloc'd.
 * Returns the count or a negative status. */
int sh_non_speech_tokens(const shruti_model *m, int32_t **out);

/* len(utf8) / len(zlib.compress(utf8)); 0 for empty text. */
double sh_compression_ratio(const char *text);

#endif
