/* history.h - run history (docs/history.md): the record a run leaves, the
 * filter of query_runs and its matching, the order of results, and the
 * rule of how many runs a store keeps per job. Stores keep run records
 * beside their jobs (the `history` capability of the storage contract,
 * store.h); the engine writes one with each completion. */
#ifndef CHR_HISTORY_H
#define CHR_HISTORY_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

/* How a run ended. */
typedef enum {
  CHR_OUT_NONE = 0,
  CHR_OUT_OK,          /* the handler returned */
  CHR_OUT_ERROR,       /* it raised, or could not start (no handler, bad record) */
  CHR_OUT_TIMEOUT,     /* stopped at its timeout */
  CHR_OUT_SKIPPED,     /* a missed run skipped (if_missed = skip) */
  CHR_OUT_INTERRUPTED, /* stopped by a shutdown; the job runs again */
  CHR_OUT_SNOOZED,     /* the handler asked to run again later (chronis.snooze) */
  CHR_OUT_CANCELLED,   /* the handler ended the job (chronis.cancel) */
  CHR_OUT__COUNT
} chr_outcome_t;
extern const char *const chr_outcome_names[CHR_OUT__COUNT];
/* The outcomes as a message lists them: "ok, error, ... or cancelled". */
#define CHR_OUTCOME_LIST "ok, error, timeout, skipped, interrupted, snoozed or cancelled"

/* Runs kept per job when neither the store's `history` option nor the
 * job's `history_limit` says otherwise. */
#define CHR_HISTORY_DEFAULT 20
/* Runs older than this many days are pruned as stores write (the store's
 * `history_days` option). */
#define CHR_HISTORY_DAYS_DEFAULT 7
/* The names of the history options, for the messages that list a store's
 * options. */
#define CHR_HISTORY_OPTION_NAMES "history, history_days"

/* How much history a store keeps: its options `history` (runs kept per
 * job, 0 keeps none) and `history_days` (runs that started longer ago are
 * pruned as the store writes). */
typedef struct chr_history_opts {
  int32_t keep, days;
} chr_history_opts_t;

struct chr_opts;
/* Reads option key=val into h when it is one of the history options:
 * returns 1 when it was, 0 when the key is another option, or CHR_EINVAL
 * with err naming the option and the range. */
int chr_history_opt(const struct chr_opts *o, const char *key, const char *val,
                    chr_history_opts_t *h, char *err, size_t errlen);

/* A run record: typed fields, kept in one allocation (chr_runrec_copy
 * packs the strings after the struct), so a store keeps a run for the
 * price of one malloc. JSON (chr_runrec_to_json) is its form in stores
 * that keep text and its form in docs/history.md; Lua sees a table. */
typedef struct chr_runrec {
  const char *run_id; /* unique in the store: "<node>/<sequence>" */
  const char *job_id;
  const char *name, *func_name, *node; /* NULL when unknown */
  const char *metadata;                /* JSON object text of the job's metadata, or NULL */
  const char *error_code, *error_message; /* NULL on success */
  int64_t scheduled_at, started_at, ended_at; /* µs; CHR_TIME_NONE when unknown */
  int32_t attempt;                            /* 0 when unknown */
  int outcome;                                /* chr_outcome_t */
  /* Runs of this job to keep, this one included: < 0 is the store's
   * default, 0 keeps none (the run is not written). Not stored. */
  int32_t keep;
} chr_runrec_t;

/* A copy of src in one allocation (free with chr_runrec_free). */
chr_runrec_t *chr_runrec_copy(const chr_runrec_t *src);
/* The same after `prefix` bytes that are the caller's (a multiple of 8: a
 * store's links), in the same allocation: free() the returned pointer
 * minus prefix, not the record. */
chr_runrec_t *chr_runrec_copy_after(const chr_runrec_t *src, size_t prefix);
void chr_runrec_free(chr_runrec_t *r);
/* An empty record: times CHR_TIME_NONE, keep -1. */
void chr_runrec_init(chr_runrec_t *r);
/* Appends r as a canonical JSON object (times ISO, duration in seconds). */
void chr_runrec_to_json(const chr_runrec_t *r, chr_buf_t *out);
/* Reads a record from JSON text: checks what the contract relies on,
 * run_id, job_id, started_at and outcome. Returns 0 and a new record
 * (chr_runrec_free), or CHR_EINVAL with err naming the field. */
int chr_runrec_from_json(const char *s, size_t len, chr_runrec_t **out, char *err, size_t errlen);
/* The keep count of r in a store whose default is store_keep. */
static inline int32_t chr_runrec_keep(const chr_runrec_t *r, int32_t store_keep) {
  return r->keep >= 0 ? r->keep : store_keep;
}

/* The filter of query_runs (ANDed; unset members match every run). */
typedef struct chr_run_filter {
  char **ids; /* job_id or job_id_in; has_ids with nids 0 matches nothing */
  size_t nids;
  int has_ids;
  uint32_t outcome_mask;            /* 1 << chr_outcome_t; 0 = any */
  int64_t started_gte, started_lte; /* CHR_TIME_NONE = unset */
  char *func_name;
  struct chr_meta_filter *meta; /* metadata.<path> = canonical JSON value */
  size_t nmeta;
} chr_run_filter_t;

void chr_run_filter_init(chr_run_filter_t *f);
void chr_run_filter_free(chr_run_filter_t *f);
int chr_run_filter_match(const chr_run_filter_t *f, const chr_runrec_t *r);

/* Orders runs as query_runs returns them: newest first (started_at
 * descending), then run_id descending. qsort comparator over pointers. */
int chr_runrec_cmp(const void *a, const void *b);

#endif
