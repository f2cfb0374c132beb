/* cli_util.h - running the shruti binary from tests and reading what it
 * printed and its exit status. */
#ifndef SHRUTI_TEST_CLI_UTIL_H
#define SHRUTI_TEST_CLI_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct {
    char *out;       /* standard output (and standard error when merged) */
    int status;      /* exit code, or 128 + signal */
} run_result;

/* Runs a shell command line; captures stdout (stderr too when merge). */
static inline run_result t_run(const char *cmd, int merge) {
    run_result r = {NULL, -1};
    char full[16384];
    snprintf(full, sizeof full, "%s%s", cmd, merge ? " 2>&1" : "");
    FILE *p = popen(full, "r");
    if (!p) return r;
    size_t cap = 1 << 16, n = 0;
    r.out = malloc(cap);
    size_t got;
    while ((got = fread(r.out + n, 1, cap - n - 1, p)) > 0) {
        n += got;
        if (n + 1 == cap) r.out = realloc(r.out, cap *= 2);
    }
    r.out[n] = '\0';
    int st = pclose(p);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    return r;
}

/* Starts `sh -c cmd` in the background; returns its pid. */
static inline pid_t t_spawn(const char *cmd) {
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return pid;
}

#endif
