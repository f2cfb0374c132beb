/* log.c - one JSON object per line on stderr, with a UTC timestamp. */
#include "server/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

const char *sv_safe_text(char *dst, size_t size, const char *src) {
    size_t k = 0;
    for (; src && *src && k + 1 < size; src++) {
        unsigned char c = (unsigned char)*src;
        dst[k++] = c == '"' ? '\'' : c == '\\' ? '/' : c < 0x20 || c == 0x7f ? ' ' : (char)c;
    }
    if (size) dst[k] = '\0';
    return dst;
}

void sv_log(const char *fmt, ...) {
    char body[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    /* body is "{...}": splice the timestamp in as the first field */
    const char *rest = body[0] == '{' ? body + 1 : body;
    fprintf(stderr, "{\"ts\":\"%s.%03ldZ\"%s%s\n", when, ts.tv_nsec / 1000000,
            strcmp(rest, "}") == 0 ? "" : ",", rest);
}
