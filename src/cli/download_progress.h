/* download_progress.h - a download progress bar on standard error. */
#ifndef SHRUTI_CLI_DOWNLOAD_PROGRESS_H
#define SHRUTI_CLI_DOWNLOAD_PROGRESS_H

#include <stdint.h>

/* A shruti_download_callback: draws the bar when stderr is a terminal. */
void cli_download_progress(uint64_t done, uint64_t total, void *user_data);

/* Resolves a model name or path, downloading with a progress bar; prints
 * the error and returns -1 on failure. */
int cli_resolve_model(const char *name_or_path, char *path, unsigned long size);

#endif
