/* download_progress.c - the CLI's model download bar and model lookup. */
#include "common/clock.h"
#include "cli/download_progress.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "shruti.h"

typedef struct {
    int tty;
    double last_draw;
    int drawn;
} bar_state;


void cli_download_progress(uint64_t done, uint64_t total, void *user_data) {
    bar_state *s = user_data;
    if (!s->tty) return;
    double t = sh_now_s();
    if (t - s->last_draw < 0.1 && (total == 0 || done < total)) return;
    s->last_draw = t;
    s->drawn = 1;
    if (total > 0) {
        int pct = (int)(done * 100 / total), filled = pct / 5;
        fprintf(stderr, "\rdownloading [%.*s%*s] %3d%% %6.1f / %.1f MB", filled,
                "####################", 20 - filled, "", pct, done / 1e6, total / 1e6);
    } else {
        fprintf(stderr, "\rdownloading %.1f MB", done / 1e6);
    }
    fflush(stderr);
}

int cli_resolve_model(const char *arg, char *path, unsigned long size) {
    bar_state bar = {isatty(STDERR_FILENO), 0, 0};
    shruti_error err;
    if (shruti_is_model_name(arg)) {
        int cached = shruti_model_cached_path(arg, path, size, &err);
        if (cached == 0 && bar.tty) fprintf(stderr, "shruti: fetching model '%s'\n", arg);
    }
    int r = shruti_model_resolve(arg, path, size, cli_download_progress, &bar, &err);
    if (bar.drawn) fputc('\n', stderr);
    if (r < 0) {
        fprintf(stderr, "shruti: %s\n", err.message);
        return -1;
    }
    return 0;
}
