/* log.h - structured (JSON lines) logging of the service on stderr. */
#ifndef SHRUTI_SERVER_LOG_H
#define SHRUTI_SERVER_LOG_H

/* Writes one line: {"ts":"...", <the formatted fields without braces>}.
 * fmt must produce a JSON object ("{...}"). */
void sv_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
