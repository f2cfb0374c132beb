/* text.c - token ids to UTF-8 text, BPE encoding of prompts (the
 * reference's pre-tokenizer regex through PCRE2, then pairwise merges by
 * rank, where a token's rank is its id), Python-compatible strip, the
 * non-speech suppress list, and the zlib compression ratio. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "decode/text.h"

#include "common/grow.h"

#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* ------------------------------------------------------- growable bytes */

typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} bytes_buf;

static void buf_put(bytes_buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

/* ------------------------------------------------------- UTF-8 decoding */

/* Length of the valid prefix of a sequence starting at s (1..4 bytes),
 * *complete set when it is a whole valid character. Follows the Unicode
 * "maximal subpart" rule that Python's decoder uses. */
static size_t utf8_valid_prefix(const uint8_t *s, size_t avail, int *complete) {
    uint8_t b = s[0];
    int need;
    uint8_t lo = 0x80, hi = 0xbf;
    *complete = 0;
    if (b < 0x80) {
        *complete = 1;
        return 1;
    } else if (b >= 0xc2 && b <= 0xdf) {
        need = 1;
    } else if (b >= 0xe0 && b <= 0xef) {
        need = 2;
        if (b == 0xe0) lo = 0xa0;
        if (b == 0xed) hi = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
        need = 3;
        if (b == 0xf0) lo = 0x90;
        if (b == 0xf4) hi = 0x8f;
    } else {
        return 1;   /* not a lead byte */
    }
    size_t i = 1;
    for (int k = 0; k < need; k++, i++) {
        if (i >= avail) return i;
        uint8_t c = s[i];
        uint8_t l = k == 0 ? lo : 0x80, h = k == 0 ? hi : 0xbf;
        if (c < l || c > h) return i;
    }
    *complete = 1;
    return i;
}

static void append_utf8_replacing(bytes_buf *out, const uint8_t *s, size_t n) {
    static const char replacement[] = "\xef\xbf\xbd";
    size_t i = 0;
    while (i < n) {
        int complete;
        size_t len = utf8_valid_prefix(s + i, n - i, &complete);
        if (complete) buf_put(out, (const char *)s + i, len);
        else buf_put(out, replacement, 3);
        i += len;
    }
}

char *sh_tokens_to_text(const shruti_model *m, const int32_t *tokens, int n) {
    bytes_buf raw = {0}, out = {0};
    char scratch[32];
    buf_put(&raw, "", 0);
    for (int i = 0; i < n; i++) {
        if (tokens[i] >= m->sp.timestamp_begin) continue;
        size_t len;
        const char *b = sh_token_bytes(m, tokens[i], &len, scratch, sizeof scratch);
        if (b) buf_put(&raw, b, len);
    }
    buf_put(&out, "", 0);
    if (!raw.oom) append_utf8_replacing(&out, (const uint8_t *)raw.p, raw.n);
    free(raw.p);
    if (raw.oom || out.oom) {
        free(out.p);
        return NULL;
    }
    return out.p;
}

/* ---------------------------------------------------------------- strip */

/* Byte length of the Unicode whitespace character at s (Python's
 * str.isspace), or 0. */
static size_t space_len(const uint8_t *s, size_t avail) {
    if (avail >= 1 && ((s[0] >= 0x09 && s[0] <= 0x0d) || (s[0] >= 0x1c && s[0] <= 0x20)))
        return 1;
    if (avail >= 2 && s[0] == 0xc2 && (s[1] == 0x85 || s[1] == 0xa0)) return 2;
    if (avail >= 3) {
        unsigned cp = ((unsigned)(s[0] & 0x0f) << 12) | ((unsigned)(s[1] & 0x3f) << 6) |
                      (s[2] & 0x3f);
        if ((s[0] & 0xf0) == 0xe0 &&
            (cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 ||
             cp == 0x202f || cp == 0x205f || cp == 0x3000))
            return 3;
    }
    return 0;
}

char *sh_strip(const char *str) {
    const uint8_t *s = (const uint8_t *)str;
    size_t n = strlen(str), begin = 0, end = n, k;
    while (begin < n && (k = space_len(s + begin, n - begin)) > 0) begin += k;
    /* Trailing: step back over characters, testing each start. */
    while (end > begin) {
        size_t start = end - 1;
        while (start > begin && (s[start] & 0xc0) == 0x80) start--;
        if (space_len(s + start, end - start) != end - start) break;
        end = start;
    }
    char *r = malloc(end - begin + 1);
    if (!r) return NULL;
    memcpy(r, s + begin, end - begin);
    r[end - begin] = '\0';
    return r;
}

/* ------------------------------------------------------------------ BPE */

static const char PRETOKENIZE[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

typedef struct {
    int32_t *v;
    int n, cap, oom;
} token_list;

static void list_push(token_list *l, int32_t t) {
    if (l->oom) return;
    if (sh_grow((void **)&l->v, &l->cap, l->n + 1, sizeof *l->v, 64) < 0) {
        l->oom = 1;
        return;
    }
    l->v[l->n++] = t;
}

/* Merges one pre-token piece: parts start as single bytes; the adjacent
 * pair whose concatenation has the lowest rank merges first. */
static int bpe_piece(const sh_vocab *v, const char *s, size_t n, token_list *out) {
    int whole = sh_vocab_lookup(v, s, n);
    if (whole >= 0) {
        list_push(out, whole);
        return 0;
    }
    size_t *start = malloc((n + 1) * sizeof *start);
    if (!start) return SHRUTI_ERR_NOMEM;
    size_t n_parts = n;
    for (size_t i = 0; i <= n; i++) start[i] = i;   /* part i is [start[i], start[i+1]) */
    while (n_parts > 1) {
        int best = -1;
        size_t best_i = 0;
        for (size_t i = 0; i + 1 < n_parts; i++) {
            int r = sh_vocab_lookup(v, s + start[i], start[i + 2] - start[i]);
            if (r >= 0 && (best < 0 || r < best)) {
                best = r;
                best_i = i;
            }
        }
        if (best < 0) break;
        memmove(&start[best_i + 1], &start[best_i + 2], (n_parts - best_i - 1) * sizeof *start);
        n_parts--;
    }
    int r = 0;
    for (size_t i = 0; i < n_parts; i++) {
        int t = sh_vocab_lookup(v, s + start[i], start[i + 1] - start[i]);
        if (t >= 0) {
            list_push(out, t);
            continue;
        }
        /* a part the vocabulary lacks: its single bytes (always present) */
        for (size_t k = start[i]; k < start[i + 1]; k++) {
            int b = sh_vocab_lookup(v, s + k, 1);
            if (b < 0) r = SHRUTI_ERR_MODEL;
            else list_push(out, b);
        }
    }
    free(start);
    return r;
}

int sh_text_to_tokens(const shruti_model *m, const char *text, int32_t **out) {
    int errcode;
    PCRE2_SIZE erroff;
    *out = NULL;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)PRETOKENIZE, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &errcode,
                                   &erroff, NULL);
    if (!re) return SHRUTI_ERR_NOMEM;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    token_list l = {0};
    int r = md ? 0 : SHRUTI_ERR_NOMEM;
    size_t len = strlen(text), pos = 0;
    while (r == 0 && pos < len) {
        int rc = pcre2_match(re, (PCRE2_SPTR)text, len, pos, 0, md, NULL);
        if (rc < 0) break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        if (ov[1] == ov[0]) { /* cannot happen with this pattern; avoid a loop */
            pos++;
            continue;
        }
        r = bpe_piece(&m->vocab, text + ov[0], ov[1] - ov[0], &l);
        pos = ov[1];
    }
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    if (r == 0 && l.oom) r = SHRUTI_ERR_NOMEM;
    if (r < 0) {
        free(l.v);
        return r;
    }
    *out = l.v;
    return l.n;
}

/* ------------------------------------------------------ non-speech list */

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

int sh_non_speech_tokens(const shruti_model *m, int32_t **out) {
    static const char *const symbols[] = {
        "\"", "#", "(", ")", "*", "+", "/", ":", ";", "<", "=", ">", "@", "[", "\\", "]", "^",
        "_", "`", "{", "|", "}", "~", "\xe3\x80\x8c", "\xe3\x80\x8d", "\xe3\x80\x8e",
        "\xe3\x80\x8f", "<<", ">>", "<<<", ">>>", "--", "---", "-(", "-[", "('", "(\"", "((",
        "))", "(((", ")))", "[[", "]]", "{{", "}}", "\xe2\x99\xaa\xe2\x99\xaa",
        "\xe2\x99\xaa\xe2\x99\xaa\xe2\x99\xaa"};
    /* musical symbols U+2669..U+266F: their first token is suppressed even
     * when they take several */
    static const char *const misc[] = {"\xe2\x99\xa9", "\xe2\x99\xaa", "\xe2\x99\xab",
                                       "\xe2\x99\xac", "\xe2\x99\xad", "\xe2\x99\xae",
                                       "\xe2\x99\xaf"};
    token_list l = {0};
    const char *firsts[] = {" -", " '"};
    int r = 0;
    for (int i = 0; i < 2 && r == 0; i++) {
        int32_t *t;
        int n = sh_text_to_tokens(m, firsts[i], &t);
        if (n < 0) r = n;
        else if (n > 0) list_push(&l, t[0]);
        if (n >= 0) free(t);
    }
    size_t n_sym = sizeof symbols / sizeof symbols[0], n_misc = sizeof misc / sizeof misc[0];
    for (size_t i = 0; i < n_sym + n_misc && r == 0; i++) {
        int is_misc = i >= n_sym;
        const char *sym = is_misc ? misc[i - n_sym] : symbols[i];
        char spaced[32];
        snprintf(spaced, sizeof spaced, " %s", sym);
        const char *variants[2] = {sym, spaced};
        for (int k = 0; k < 2 && r == 0; k++) {
            int32_t *t;
            int n = sh_text_to_tokens(m, variants[k], &t);
            if (n < 0) {
                r = n;
                break;
            }
            if (n == 1 || (is_misc && n > 0)) list_push(&l, t[0]);
            free(t);
        }
    }
    if (r == 0 && l.oom) r = SHRUTI_ERR_NOMEM;
    if (r < 0) {
        free(l.v);
        return r;
    }
    qsort(l.v, (size_t)l.n, sizeof *l.v, cmp_i32);
    int n = 0;
    for (int i = 0; i < l.n; i++)
        if (n == 0 || l.v[n - 1] != l.v[i]) l.v[n++] = l.v[i];
    *out = l.v;
    return n;
}

/* ---------------------------------------------------- compression ratio */

double sh_compression_ratio(const char *text) {
    size_t n = strlen(text);
    if (n == 0) return 0.0;
    uLongf cap = compressBound((uLong)n);
    Bytef *z = malloc(cap);
    if (!z) return 0.0;
    double ratio = 0.0;
    if (compress2(z, &cap, (const Bytef *)text, (uLong)n, Z_DEFAULT_COMPRESSION) == Z_OK)
        ratio = (double)n / (double)cap;
    free(z);
    return ratio;
}

/* ------------------------------------------------------------ public API */

int shruti_tokenize(const shruti_model *m, const char *text, int32_t *tokens, int max) {
    if (!m || !text || max < 0) return SHRUTI_ERR_INVALID_ARG;
    int32_t *t;
    int n = sh_text_to_tokens(m, text, &t);
    if (n < 0) return n;
    memcpy(tokens, t, (size_t)(n < max ? n : max) * sizeof *t);
    free(t);
    return n;
}
