/* jobs.h - async transcription jobs kept in SQLite: they survive a
 * restart (also kill -9); unfinished jobs run again. */
#ifndef SHRUTI_SERVER_JOBS_H
#define SHRUTI_SERVER_JOBS_H

#include "server/engine.h"

typedef struct sv_jobs sv_jobs;

/* Opens (creating) the database, requeues jobs left running, and starts
 * the runner that feeds queued jobs to the engine as long work. */
sv_jobs *sv_jobs_start(const char *db_path, sv_engine *engine);
void sv_jobs_stop(sv_jobs *j);   /* a running job goes back to queued */

/* Stores a new job; *id (37 bytes) gets its id. Returns 0 or -1. The
 * audio is the uploaded file as is; params_json the request's fields. */
int sv_jobs_create(sv_jobs *j, const void *audio, size_t size, const char *params_json,
                   char id[37]);

/* The job as a JSON document (malloc'd) or NULL if unknown. */
char *sv_jobs_get(sv_jobs *j, const char *id);

/* Cancels a job: 1 cancelled, 0 unknown, -1 already finished. */
int sv_jobs_cancel(sv_jobs *j, const char *id);

#endif
