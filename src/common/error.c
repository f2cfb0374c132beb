/* error.c - error codes, their names, and formatted error messages. */
#include "common/error.h"

#include <stdarg.h>
#include <stdio.h>

int sh_error(shruti_error *err, int code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

void sh_error_clear(shruti_error *err) {
    if (err) {
        err->code = SHRUTI_OK;
        err->message[0] = '\0';
    }
}

const char *shruti_status_string(int code) {
    switch (code) {
    case SHRUTI_OK: return "ok";
    case SHRUTI_ERR_INVALID_ARG: return "invalid argument";
    case SHRUTI_ERR_IO: return "i/o error";
    case SHRUTI_ERR_MODEL: return "bad model file";
    case SHRUTI_ERR_AUDIO: return "bad audio";
    case SHRUTI_ERR_NOMEM: return "out of memory";
    case SHRUTI_ERR_ABORTED: return "aborted";
    case SHRUTI_ERR_UNSUPPORTED: return "unsupported";
    case SHRUTI_ERR_DEVICE: return "device error";
    default: return "unknown error";
    }
}

const char *shruti_version(void) { return "0.1.0"; }
