/* memhist.h - the memory store's run history: the runs of each job,
 * newest first, found by job id through a hash table, and every run in
 * one list in the order written, so pruning by age takes from its head.
 * Used by memory.c, which answers record_runs and query_runs with it. */
#ifndef CHR_MEMHIST_H
#define CHR_MEMHIST_H

#include <stddef.h>
#include <stdint.h>

#include "core/history.h"
#include "core/store.h"

typedef struct mhrun mhrun_t;

/* A job's entry, in the table itself (no allocation of its own). */
typedef struct mhjob {
  const char *id; /* the newest run's job_id; NULL: an empty slot */
  uint32_t hash;
  int32_t count;
  mhrun_t *newest;
} mhjob_t;

typedef struct chr_memhist {
  int32_t keep;    /* runs kept per job by default (store option `history`) */
  int64_t max_age; /* µs; runs that started longer ago are pruned */
  mhjob_t *slots;  /* open addressing by job id, at most half full */
  size_t cap, njobs;
  mhrun_t *oldest, *newest; /* every run, in the order written */
  size_t nruns;
  uint64_t seed;
} chr_memhist_t;

void chr_memhist_init(chr_memhist_t *h, int32_t keep, int32_t days);
void chr_memhist_free(chr_memhist_t *h);
/* Adds a copy of run (unless its job keeps none), then prunes its job to
 * its keep count and the history to its age limit as of now. Returns 1
 * when the run was kept. */
int chr_memhist_add(chr_memhist_t *h, const chr_runrec_t *run, int64_t now);
/* Answers query_runs: copies of the matching runs, newest first. */
void chr_memhist_query(chr_memhist_t *h, chr_store_req_t *req);

#endif
