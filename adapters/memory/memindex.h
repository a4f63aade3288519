/* memindex.h - the memory store's metadata index (index_metadata): for
 * each indexed path, a map from a value (its canonical JSON text) to the
 * jobs that hold it, in the store's own orders, so that a tenant's query,
 * count, scoped claim, recovery or next due time reads only that tenant's
 * jobs. It also holds the job orders both it and memory.c use. */
#ifndef CHR_MEMINDEX_H
#define CHR_MEMINDEX_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/filter.h"
#include "core/job.h"
#include "core/time.h"
#include "rbtree.h"

/* ---- the store's orders, over jobs */

static inline int64_t chr_memidx_nrt(const chr_job_t *j) {
  return chr_job_has(j, CHR_F_NEXT_RUN_TIME) ? j->next_run_time : CHR_TIME_NONE;
}

/* next_run_time order: nil (CHR_TIME_NONE) after every time. */
static inline int chr_memidx_cmp_nrt(int64_t a, int64_t b) {
  if (a == b) return 0;
  if (a == CHR_TIME_NONE) return 1;
  if (b == CHR_TIME_NONE) return -1;
  return a < b ? -1 : 1;
}

static inline int chr_memidx_cmp_i64(int64_t a, int64_t b) {
  return (a > b) - (a < b);
}

/* Query order within a status: next_run_time (nil last), job_id. */
static inline int chr_memidx_cmp_query(const chr_job_t *a, const chr_job_t *b) {
  int c = chr_memidx_cmp_nrt(chr_memidx_nrt(a), chr_memidx_nrt(b));
  return c ? c : strcmp(a->job_id, b->job_id);
}

/* Claim order of scheduled jobs that have a next_run_time: priority
 * descending, next_run_time, job_id. */
static inline int chr_memidx_cmp_due(const chr_job_t *a, const chr_job_t *b) {
  int c = chr_memidx_cmp_i64(chr_job_priority(b), chr_job_priority(a));
  if (c) return c;
  c = chr_memidx_cmp_i64(a->next_run_time, b->next_run_time);
  return c ? c : strcmp(a->job_id, b->job_id);
}

/* Recovery order of running jobs that have a lease: lease_until, job_id. */
static inline int chr_memidx_cmp_lease(const chr_job_t *a, const chr_job_t *b) {
  int c = chr_memidx_cmp_i64(a->lease_until, b->lease_until);
  return c ? c : strcmp(a->job_id, b->job_id);
}

/* Which of the due and lease orders a job belongs in (CHR_MEMIDX_AUX_*). */
enum { CHR_MEMIDX_AUX_NONE, CHR_MEMIDX_AUX_DUE, CHR_MEMIDX_AUX_LEASE };
static inline int chr_memidx_aux_of(const chr_job_t *j) {
  if (j->status == CHR_ST_SCHEDULED && chr_job_has(j, CHR_F_NEXT_RUN_TIME))
    return CHR_MEMIDX_AUX_DUE;
  if (j->status == CHR_ST_RUNNING && chr_job_has(j, CHR_F_LEASE_UNTIL))
    return CHR_MEMIDX_AUX_LEASE;
  return CHR_MEMIDX_AUX_NONE;
}

/* ---- the index */

typedef struct chr_memidx_group chr_memidx_group_t;

/* One job's place under one path; group is NULL while the job has no
 * value there (absent or null), and then it is in no tree. */
typedef struct chr_memidx_link {
  chr_rb_node_t by_status, aux;
  chr_memidx_group_t *group;
  chr_job_t *job;
  uint8_t aux_in; /* CHR_MEMIDX_AUX_* */
} chr_memidx_link_t;

typedef struct chr_memidx_path {
  char *path;
  char **keys;
  size_t nkeys;
  chr_rb_tree_t groups; /* by value text */
} chr_memidx_path_t;

typedef struct chr_memindex {
  chr_memidx_path_t *paths;
  size_t npaths;
} chr_memindex_t;

/* paths: NULL-terminated plain paths (chr_meta_index_parse), taken over;
 * NULL or none: no index, and every other call does nothing. */
void chr_memindex_init(chr_memindex_t *ix, char **paths);
void chr_memindex_free(chr_memindex_t *ix);
/* Readies a job's links (one per path, at a stable address, zeroed) for
 * the job, unlinked. */
void chr_memindex_links_init(const chr_memindex_t *ix, chr_memidx_link_t *links, chr_job_t *job);
/* Links the job in under its current status, times and metadata, or takes
 * it out: the store does one before and the other after each write. */
void chr_memindex_add(chr_memindex_t *ix, chr_memidx_link_t *links);
void chr_memindex_remove(chr_memindex_t *ix, chr_memidx_link_t *links);

/* The groups that hold every job an indexed $eq or $in condition of f
 * selects: of the conditions on an indexed path, the one with the fewest
 * jobs of the statuses in status_mask (0: any). */
typedef struct chr_memidx_sel {
  chr_memidx_group_t **groups; /* distinct */
  size_t n;
  const chr_meta_filter_t *cond;
} chr_memidx_sel_t;

/* 1 and sel filled (free with chr_memidx_sel_free; n may be 0: nothing
 * matches), or 0 when no condition of f is on an indexed path. */
int chr_memindex_select(const chr_memindex_t *ix, const chr_filter_t *f, uint32_t status_mask,
                        chr_memidx_sel_t *sel);
void chr_memidx_sel_free(chr_memidx_sel_t *sel);
/* The jobs of the selection with a status in status_mask (0: any). */
int64_t chr_memidx_sel_count(const chr_memidx_sel_t *sel, uint32_t status_mask);

/* The selection's jobs of f's statuses in query order (next_run_time,
 * nil last, job_id), from f's next_run_time bounds; f's other conditions
 * are the caller's to check. A linear merge of one cursor per group and
 * status: a few per query for $eq, more for a long $in. */
typedef struct chr_memidx_qcur {
  chr_rb_node_t **at;
  size_t n;
  int64_t lte;
  int bounded;
} chr_memidx_qcur_t;

void chr_memidx_qcur_init(chr_memidx_qcur_t *c, const chr_memidx_sel_t *sel,
                          const chr_filter_t *f);
chr_job_t *chr_memidx_qcur_next(chr_memidx_qcur_t *c);
void chr_memidx_qcur_free(chr_memidx_qcur_t *c);

/* Up to limit (< 0: no limit) scheduled jobs of the selection due at now
 * and matched by scope, in claim order (priority descending,
 * next_run_time, job_id). Returns a malloc'ed array of *n jobs; the
 * caller changes them afterwards. */
chr_job_t **chr_memidx_due(const chr_memidx_sel_t *sel, const chr_filter_t *scope, int64_t now,
                           int64_t limit, size_t *n);
/* The running jobs of the selection whose lease_until < now, matched by
 * scope (malloc'ed, *n of them). */
chr_job_t **chr_memidx_expired(const chr_memidx_sel_t *sel, const chr_filter_t *scope,
                               int64_t now, size_t *n);
/* The earliest next_run_time of a scheduled job of the selection matched
 * by scope, CHR_TIME_NONE when none (or when that job has none). */
int64_t chr_memidx_next_due(const chr_memidx_sel_t *sel, const chr_filter_t *scope);

#endif
