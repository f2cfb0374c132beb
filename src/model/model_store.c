/* model_store.c - models by name. The published whisper.cpp ggml files,
 * a cache folder, and a libcurl downloader that writes to NAME.part,
 * resumes it with a Range request, checks the size and SHA-256 when the
 * server states them, and renames into place only when complete. An
 * exclusive lock on NAME.lock makes concurrent downloads of one model by
 * several processes safe: the later ones wait, then find the file. */
#include "model/model_store.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <nettle/sha2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"

#define MiB (1024ull * 1024ull)

static const struct {
    const char *name;
    uint64_t bytes;
} KNOWN[] = {
    {"tiny", 75 * MiB},           {"tiny.en", 75 * MiB},
    {"base", 142 * MiB},          {"base.en", 142 * MiB},
    {"small", 466 * MiB},         {"small.en", 466 * MiB},
    {"medium", 1462 * MiB},       {"medium.en", 1462 * MiB},
    {"large-v1", 2951 * MiB},     {"large-v2", 2951 * MiB},
    {"large-v3", 2952 * MiB},     {"large-v3-turbo", 1549 * MiB},
    {"tiny-q5_1", 31 * MiB},      {"tiny.en-q5_1", 31 * MiB},
    {"tiny-q8_0", 42 * MiB},      {"base-q5_1", 57 * MiB},
    {"base.en-q5_1", 57 * MiB},   {"base-q8_0", 78 * MiB},
    {"small-q5_1", 181 * MiB},    {"small.en-q5_1", 181 * MiB},
    {"small-q8_0", 252 * MiB},    {"medium-q5_0", 514 * MiB},
    {"medium.en-q5_0", 514 * MiB}, {"medium-q8_0", 785 * MiB},
    {"large-v2-q5_0", 1080 * MiB}, {"large-v2-q8_0", 1500 * MiB},
    {"large-v3-q5_0", 1080 * MiB}, {"large-v3-turbo-q5_0", 547 * MiB},
    {"large-v3-turbo-q8_0", 834 * MiB},
};
#define N_KNOWN (int)(sizeof KNOWN / sizeof KNOWN[0])

const char *shruti_known_model(int i, uint64_t *approx_bytes) {
    if (i < 0 || i >= N_KNOWN) return NULL;
    if (approx_bytes) *approx_bytes = KNOWN[i].bytes;
    return KNOWN[i].name;
}

static int is_known(const char *name) {
    for (int i = 0; i < N_KNOWN; i++)
        if (strcmp(KNOWN[i].name, name) == 0) return 1;
    return 0;
}

/* Only plain names reach a URL or a cache path: letters, digits, '.',
 * '-', '_', not starting with '.', so nothing can climb out of the cache. */
static int valid_name(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 64 || s[0] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '_'))
            return 0;
    }
    return 1;
}

bool shruti_is_model_name(const char *s) {
    struct stat st;
    size_t n = s ? strlen(s) : 0;
    if (!s || strchr(s, '/') || (n > 4 && strcmp(s + n - 4, ".bin") == 0)) return false;
    if (stat(s, &st) == 0) return false;
    return valid_name(s);
}

static const char *base_url(void) {
    const char *u = getenv("SHRUTI_MODEL_BASE_URL");
    return u && *u ? u : SHRUTI_DEFAULT_MODEL_BASE_URL;
}

int shruti_model_cache_dir(char *buf, size_t size, shruti_error *err) {
    const char *c = getenv("SHRUTI_CACHE"), *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
    int n;
    if (c && *c) n = snprintf(buf, size, "%s", c);
    else if (x && *x) n = snprintf(buf, size, "%s/shruti", x);
    else if (h && *h) n = snprintf(buf, size, "%s/.cache/shruti", h);
    else return sh_error(err, SHRUTI_ERR_IO, "no cache folder: set SHRUTI_CACHE or HOME");
    if (n < 0 || (size_t)n >= size) return sh_error(err, SHRUTI_ERR_IO, "cache path too long");
    return 0;
}

static int check_name(const char *name, shruti_error *err) {
    if (!name || !valid_name(name))
        return sh_error(err, SHRUTI_ERR_INVALID_ARG,
                        "'%s' is not a model name (letters, digits, '.', '-', '_')",
                        name ? name : "");
    /* A mirror may serve other files; the default server only these. */
    if (!is_known(name) && !getenv("SHRUTI_MODEL_BASE_URL"))
        return sh_error(err, SHRUTI_ERR_INVALID_ARG,
                        "unknown model '%s' (see 'shruti models list'; pass a file path to use "
                        "a local ggml file)", name);
    return 0;
}

int shruti_model_cached_path(const char *name, char *path, size_t size, shruti_error *err) {
    char dir[4096];
    int r = check_name(name, err);
    if (r == 0) r = shruti_model_cache_dir(dir, sizeof dir, err);
    if (r < 0) return r;
    int n = snprintf(path, size, "%s/ggml-%s.bin", dir, name);
    if (n < 0 || (size_t)n >= size) return sh_error(err, SHRUTI_ERR_IO, "cache path too long");
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) ? 1 : 0;
}

static int mkdir_p(const char *dir) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(tmp, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/* ------------------------------------------------------------ download */

typedef struct {
    FILE *out;
    uint64_t offset;             /* bytes already in the .part file */
    uint64_t expected_total;     /* from Content-Range / Content-Length / X-Linked-Size */
    char sha256[65];             /* expected hex digest, "" if unknown */
    long status;
    shruti_download_callback progress;
    void *user_data;
} transfer;

static int hex64(const char *s) {
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

static size_t on_header(char *buf, size_t size, size_t n, void *user) {
    transfer *t = user;
    size_t len = size * n;
    char line[512];
    size_t l = len < sizeof line - 1 ? len : sizeof line - 1;
    memcpy(line, buf, l);
    line[l] = '\0';
    unsigned long long a, b, total;
    if (strncmp(line, "HTTP/", 5) == 0) {
        t->expected_total = 0;   /* a new response (after a redirect) */
    } else if (strncasecmp(line, "content-range:", 14) == 0 &&
               sscanf(line + 14, " bytes %llu-%llu/%llu", &a, &b, &total) == 3) {
        t->expected_total = total;
    } else if (strncasecmp(line, "content-length:", 15) == 0 && t->expected_total == 0 &&
               sscanf(line + 15, " %llu", &total) == 1) {
        t->expected_total = t->offset + total;   /* corrected below if the range was ignored */
    } else if (strncasecmp(line, "x-linked-etag:", 14) == 0) {
        const char *v = line + 14;
        while (*v == ' ' || *v == '"') v++;
        if (strlen(v) >= 64 && hex64(v)) memcpy(t->sha256, v, 64), t->sha256[64] = '\0';
    }
    return len;
}

static size_t on_body(char *buf, size_t size, size_t n, void *user) {
    transfer *t = user;
    return fwrite(buf, size, n, t->out) == n ? size * n : 0;
}

static int on_progress(void *user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow) {
    (void)ultotal, (void)ulnow;
    transfer *t = user;
    if (t->progress)
        t->progress(t->offset + (uint64_t)dlnow, dltotal > 0 ? t->offset + (uint64_t)dltotal : 0,
                    t->user_data);
    return 0;
}

static int sha256_file(const char *path, char hex[65]) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    struct sha256_ctx ctx;
    sha256_init(&ctx);
    static const size_t chunk = 1 << 20;
    uint8_t *buf = malloc(chunk);
    size_t n;
    while (buf && (n = fread(buf, 1, chunk, f)) > 0) sha256_update(&ctx, n, buf);
    int bad = !buf || ferror(f);
    fclose(f);
    free(buf);
    uint8_t digest[SHA256_DIGEST_SIZE];
    sha256_digest(&ctx, sizeof digest, digest);
    for (int i = 0; i < SHA256_DIGEST_SIZE; i++) sprintf(hex + 2 * i, "%02x", digest[i]);
    return bad ? -1 : 0;
}

/* A sidecar NAME.sha256 on the server, if there is one ("<hex>  file"). */
static void fetch_sidecar_sha256(const char *url, char out[65]) {
    char sidecar[2100], body[256] = "";
    snprintf(sidecar, sizeof sidecar, "%s.sha256", url);
    FILE *mem = fmemopen(body, sizeof body - 1, "w");
    if (!mem) return;
    CURL *c = curl_easy_init();
    if (!c) {
        fclose(mem);
        return;
    }
    curl_easy_setopt(c, CURLOPT_URL, sidecar);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 15L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_MAXFILESIZE, 200L);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, mem);
    CURLcode r = curl_easy_perform(c);
    curl_easy_cleanup(c);
    fclose(mem);
    if (r == CURLE_OK && strlen(body) >= 64 && hex64(body)) {
        memcpy(out, body, 64);
        out[64] = '\0';
    }
}

static int fail_download(shruti_error *err, int code, const char *url, const char *why,
                         const char *name) {
    return sh_error(err, code,
                    "cannot download model '%s' from %s: %s. Without internet, download the "
                    "file elsewhere and pass its path: --model /path/to/ggml-%s.bin (or set "
                    "SHRUTI_MODEL_BASE_URL to a mirror)",
                    name, url, why, name);
}

static int download(const char *name, const char *url, const char *dest,
                    shruti_download_callback progress, void *user_data, shruti_error *err) {
    char part[4200];
    snprintf(part, sizeof part, "%s.part", dest);
    transfer t;
    memset(&t, 0, sizeof t);
    t.progress = progress;
    t.user_data = user_data;
    fetch_sidecar_sha256(url, t.sha256);
    struct stat st;
    if (stat(part, &st) == 0) t.offset = (uint64_t)st.st_size;
    t.out = fopen(part, t.offset ? "ab" : "wb");
    if (!t.out) return sh_error(err, SHRUTI_ERR_IO, "cannot write %s: %s", part, strerror(errno));
    CURL *c = curl_easy_init();
    if (!c) {
        fclose(t.out);
        return sh_error(err, SHRUTI_ERR_NOMEM, "cannot start libcurl");
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "shruti/" "0.1");
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 20L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);     /* a stalled transfer ends */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &t);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    if (t.offset > 0) curl_easy_setopt(c, CURLOPT_RESUME_FROM_LARGE, (curl_off_t)t.offset);
    CURLcode r = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    int closed = fclose(t.out);
    if (r == CURLE_RANGE_ERROR || (r == CURLE_HTTP_RETURNED_ERROR && status == 416)) {
        unlink(part);   /* the partial file does not fit the server's: start over */
        return fail_download(err, SHRUTI_ERR_IO, url, "the server refused to resume; the "
                             "partial file was removed, run again", name);
    }
    if (r != CURLE_OK) {
        char why[512];
        if (r == CURLE_HTTP_RETURNED_ERROR)
            snprintf(why, sizeof why, "HTTP %ld%s", status, status == 404 ? " (not found)" : "");
        else
            snprintf(why, sizeof why, "%s%s", errbuf[0] ? errbuf : curl_easy_strerror(r),
                     stat(part, &st) == 0 && st.st_size > 0
                         ? " (the partial download is kept; run again to resume)" : "");
        if (stat(part, &st) == 0 && st.st_size == 0) unlink(part);
        return fail_download(err, SHRUTI_ERR_IO, url, why, name);
    }
    if (closed != 0) return sh_error(err, SHRUTI_ERR_IO, "cannot write %s", part);
    if (stat(part, &st) != 0) return sh_error(err, SHRUTI_ERR_IO, "lost %s", part);
    if (t.expected_total && (uint64_t)st.st_size != t.expected_total) {
        unlink(part);
        return fail_download(err, SHRUTI_ERR_IO, url, "the file has the wrong size; the "
                             "download was removed, run again", name);
    }
    if (t.sha256[0]) {
        char got[65];
        if (sha256_file(part, got) < 0) return sh_error(err, SHRUTI_ERR_IO, "cannot read %s", part);
        if (strcmp(got, t.sha256) != 0) {
            unlink(part);
            char why[256];
            snprintf(why, sizeof why, "SHA-256 mismatch (expected %.16s..., got %.16s...); the "
                     "corrupt download was removed", t.sha256, got);
            return fail_download(err, SHRUTI_ERR_IO, url, why, name);
        }
    }
    if (rename(part, dest) != 0)
        return sh_error(err, SHRUTI_ERR_IO, "cannot move %s into place: %s", part,
                        strerror(errno));
    return 0;
}

int shruti_model_resolve(const char *arg, char *path, size_t size,
                         shruti_download_callback progress, void *user_data, shruti_error *err) {
    sh_error_clear(err);
    if (!arg || !*arg) return sh_error(err, SHRUTI_ERR_INVALID_ARG, "no model given");
    if (!shruti_is_model_name(arg)) {
        if ((size_t)snprintf(path, size, "%s", arg) >= size)
            return sh_error(err, SHRUTI_ERR_INVALID_ARG, "model path too long");
        return 0;
    }
    int r = shruti_model_cached_path(arg, path, size, err);
    if (r != 0) return r < 0 ? r : 0;
    char dir[4096], lock_path[4300], url[2048];
    if ((r = shruti_model_cache_dir(dir, sizeof dir, err)) < 0) return r;
    if (mkdir_p(dir) < 0)
        return sh_error(err, SHRUTI_ERR_IO, "cannot create the cache folder %s: %s", dir,
                        strerror(errno));
    snprintf(lock_path, sizeof lock_path, "%s.lock", path);
    int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || flock(fd, LOCK_EX) != 0) {
        if (fd >= 0) close(fd);
        return sh_error(err, SHRUTI_ERR_IO, "cannot lock %s: %s", lock_path, strerror(errno));
    }
    /* another process may have finished while we waited */
    struct stat st;
    if (stat(path, &st) == 0) {
        close(fd);
        return 0;
    }
    snprintf(url, sizeof url, "%s/ggml-%s.bin", base_url(), arg);
    r = download(arg, url, path, progress, user_data, err);
    unlink(lock_path);
    close(fd);
    return r;
}

int shruti_model_remove(const char *name, shruti_error *err) {
    char path[4200], part[4300];
    int r = shruti_model_cached_path(name, path, sizeof path, err);
    if (r < 0) return r;
    snprintf(part, sizeof part, "%s.part", path);
    int removed = 0;
    if (unlink(path) == 0) removed = 1;
    else if (errno != ENOENT)
        return sh_error(err, SHRUTI_ERR_IO, "cannot remove %s: %s", path, strerror(errno));
    if (unlink(part) == 0) removed = 1;
    return removed;
}
