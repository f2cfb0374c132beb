/* error.h - filling a shruti_error with a formatted message. */
#ifndef SHRUTI_COMMON_ERROR_H
#define SHRUTI_COMMON_ERROR_H

#include "shruti.h"

/* Sets err (may be NULL) to code and a printf-style message; returns code,
 * so a failing function can end with `return sh_error(err, ...)`. */
int sh_error(shruti_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Clears err to SHRUTI_OK with an empty message. */
void sh_error_clear(shruti_error *err);

#endif
