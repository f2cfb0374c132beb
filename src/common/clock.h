/* clock.h - monotonic seconds, for timing and timeouts. */
#ifndef SHRUTI_COMMON_CLOCK_H
#define SHRUTI_COMMON_CLOCK_H

#include <time.h>

static inline double sh_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

#endif
