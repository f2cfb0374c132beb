/* log.h - structured (JSON lines) logging of the service on stderr. */
#ifndef SHRUTI_SERVER_LOG_H
#define SHRUTI_SERVER_LOG_H

#include <stddef.h>

/* Writes one line: {"ts":"...", <the formatted fields without braces>}.
 * fmt must produce a JSON object ("{...}"). */
void sv_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* src made safe inside a JSON string of a log line or a Prometheus label
 * value (text from outside: request paths, error messages, device notes):
 * quotes become ', backslashes /, control characters spaces; cut to fit
 * size. Returns dst. */
const char *sv_safe_text(char *dst, size_t size, const char *src);

#endif
