/* models_cmd.c - `shruti models list|pull|rm|path`: the model cache. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/commands.h"
#include "cli/download_progress.h"
#include "shruti.h"

static void models_usage(FILE *out) {
    fprintf(out, "usage: shruti models list            known names, sizes, which are cached\n"
                 "       shruti models pull NAME       download NAME into the cache\n"
                 "       shruti models rm NAME         remove NAME from the cache\n"
                 "       shruti models path NAME       print where NAME is cached\n");
}

static int list_models(void) {
    char dir[4096];
    shruti_error err;
    if (shruti_model_cache_dir(dir, sizeof dir, &err) < 0) {
        fprintf(stderr, "shruti: %s\n", err.message);
        return 1;
    }
    printf("cache: %s\n%-22s %10s  %s\n", dir, "NAME", "SIZE", "CACHED");
    uint64_t bytes;
    const char *name;
    for (int i = 0; (name = shruti_known_model(i, &bytes)) != NULL; i++) {
        char path[4300];
        int cached = shruti_model_cached_path(name, path, sizeof path, &err) == 1;
        printf("%-22s %8.0f MB  %s\n", name, bytes / 1e6, cached ? "yes" : "");
    }
    return 0;
}

int cmd_models(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        models_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "list") == 0) return list_models();
    if (argc != 3) {
        models_usage(stderr);
        return 2;
    }
    const char *name = argv[2];
    char path[4300];
    shruti_error err;
    if (strcmp(sub, "pull") == 0) {
        if (!shruti_is_model_name(name)) {
            fprintf(stderr, "shruti: '%s' is not a model name\n", name);
            return 2;
        }
        if (cli_resolve_model(name, path, sizeof path) < 0) return 1;
        printf("%s\n", path);
        return 0;
    }
    if (strcmp(sub, "rm") == 0) {
        int r = shruti_model_remove(name, &err);
        if (r < 0) {
            fprintf(stderr, "shruti: %s\n", err.message);
            return 2;
        }
        printf(r ? "removed %s\n" : "%s was not cached\n", name);
        return 0;
    }
    if (strcmp(sub, "path") == 0) {
        int r = shruti_model_cached_path(name, path, sizeof path, &err);
        if (r < 0) {
            fprintf(stderr, "shruti: %s\n", err.message);
            return 2;
        }
        printf("%s\n", path);
        return r == 1 ? 0 : 1;   /* 1: not downloaded yet */
    }
    fprintf(stderr, "shruti: unknown models command '%s'\n", sub);
    models_usage(stderr);
    return 2;
}
