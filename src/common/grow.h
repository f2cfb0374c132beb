/* grow.h - one way to grow a dynamic array. */
#ifndef SHRUTI_COMMON_GROW_H
#define SHRUTI_COMMON_GROW_H

#include <stddef.h>
#include <stdlib.h>

/* Makes *items (of *cap elements of elem_size bytes) hold at least need
 * elements, doubling from first_cap. Returns 0, or -1 with *items
 * unchanged when memory runs out or the size would overflow. */
static inline int sh_grow(void **items, int *cap, int need, size_t elem_size, int first_cap) {
    if (need <= *cap) return 0;
    long c = *cap > 0 ? *cap : first_cap;
    while (c < need) c *= 2;
    if (c > (long)(((size_t)-1 / 2) / elem_size) || c > 0x7fffffff) return -1;
    void *p = realloc(*items, (size_t)c * elem_size);
    if (!p) return -1;
    *items = p;
    *cap = (int)c;
    return 0;
}

#endif
