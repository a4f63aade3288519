/* metrics.h - the process's counters and histograms for the Prometheus
 * exposition (docs/http.md#metrics), kept where things happen: runs and
 * claims in the engine, store requests where the core submits them and
 * hears their answer (chr_store_submit), reconnects in the PostgreSQL and
 * Redis adapters. Knows nothing of Lua.
 *
 * Everything is fixed-size so that counting is an increment: histograms
 * have fixed buckets, store kinds a fixed table, and a scheduler's handler
 * table allocates only the first time it sees a handler name. The handler
 * table holds at most CHR_METRICS_HANDLERS names; runs of any other handler
 * are counted under "other", so that a label value taken from user input
 * cannot grow the exposition without bound. */
#ifndef CHR_METRICS_H
#define CHR_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "store.h"

#define CHR_METRICS_HANDLERS 1000
#define CHR_METRICS_STORES 16
#define CHR_HIST_MAX 18 /* finite buckets; one more counts +Inf */

/* The bucket sets (upper bounds, ascending). */
typedef enum {
  CHR_HB_RUN,     /* run durations, seconds */
  CHR_HB_LATE,    /* lateness of a run's start, seconds */
  CHR_HB_STORE,   /* store request latency, seconds */
  CHR_HB_BATCH,   /* jobs per claim */
  CHR_HB__COUNT
} chr_hist_kind_t;

/* Non-cumulative counts per bucket (b[CHR_HIST_MAX] is +Inf, past the
 * last bound of its set); rendering adds them up. */
typedef struct chr_hist {
  uint64_t b[CHR_HIST_MAX + 1];
  uint64_t count;
  double sum;
} chr_hist_t;

void chr_hist_observe(chr_hist_t *h, chr_hist_kind_t kind, double v);

/* How runs end, as the outcome label says it. */
typedef enum {
  CHR_MO_OK,
  CHR_MO_ERROR,
  CHR_MO_TIMEOUT,
  CHR_MO_INTERRUPTED, /* stopped by a shutdown; the job runs again */
  CHR_MO_SKIPPED,     /* a missed run skipped (if_missed = skip) */
  CHR_MO_NO_HANDLER,  /* handler_not_found */
  CHR_MO_EXIT,        /* the handler called os.exit */
  CHR_MO_LEASE,       /* lease_expired: its runs kept being cut short */
  CHR_MO_INVALID,     /* the stored record cannot run */
  CHR_MO_SNOOZED,     /* the handler snoozed the job (chronis.snooze) */
  CHR_MO_CANCELLED,   /* the handler cancelled the job (chronis.cancel) */
  CHR_MO__COUNT
} chr_metrics_outcome_t;

extern const char *const chr_metrics_outcome_names[CHR_MO__COUNT];

/* One handler of one scheduler. */
typedef struct chr_mhandler {
  char *name;
  char *label; /* the name, escaped for a label value */
  size_t label_len;
  uint64_t runs[CHR_MO__COUNT];
  uint64_t retries;  /* failed runs that will be retried */
  uint64_t failures; /* failed runs after which the job is failed */
  chr_hist_t duration; /* runs that started a handler */
  struct chr_mhandler *next; /* in order of first appearance */
} chr_mhandler_t;

/* A scheduler's counts (the engine owns one per scheduler). */
typedef struct chr_msched {
  chr_mhandler_t **slots; /* open addressing on the name's hash */
  size_t nslots, n;
  chr_mhandler_t *first, *last, *other;
  uint64_t claims;     /* claim requests answered */
  chr_hist_t batch;    /* jobs per answered claim */
  chr_hist_t lateness; /* start minus the slot it runs for */
} chr_msched_t;

chr_msched_t *chr_msched_new(void);
void chr_msched_free(chr_msched_t *m);
/* The handler's entry: found, added (the first time only), or "other"
 * once CHR_METRICS_HANDLERS names are known. NULL name: "". */
chr_mhandler_t *chr_msched_handler(chr_msched_t *m, const char *name);

/* One kind of store ("memory", "sqlite", ...): stores of one kind in a
 * process share it. */
typedef struct chr_mstore {
  char kind[24];
  uint64_t errors[CHR_OP__COUNT];
  chr_hist_t op[CHR_OP__COUNT];
  uint64_t reconnects;
} chr_mstore_t;

/* The entry of a store kind, added on first use; never NULL (past
 * CHR_METRICS_STORES kinds, the last entry serves as "other"). */
chr_mstore_t *chr_metrics_store(const char *kind);
/* A connection of a store of this kind was made again after one was lost. */
void chr_metrics_reconnect(const char *kind);
/* A request answered by a store (status 0 or CHR_E*), after seconds. */
void chr_metrics_store_op(chr_mstore_t *m, chr_store_op_t op, int status, double seconds);
/* 1 when a store's answer is a failure of the store (unavailable, timeout,
 * ...) rather than an answer about the request (invalid, not_found,
 * duplicate, conflict, unsupported). */
int chr_metrics_store_failure(int status);

/* Process-wide counts. */
typedef struct chr_mprocess {
  int64_t started_at; /* µs, wall clock, when chr_metrics_init ran */
  uint64_t script_reloads, script_reload_failures;
} chr_mprocess_t;

extern chr_mprocess_t chr_metrics_process;
void chr_metrics_init(void);

/* What the exposition says of one scheduler: its counts and what is read
 * at scrape time. */
typedef struct chr_metrics_view {
  const char *scheduler; /* its label value (raw: escaped when written) */
  const char *store;     /* its store's kind */
  const chr_msched_t *m;
  int64_t running, queued;
  /* jobs per status (chr_status_t), -1 for a status not counted */
  int64_t jobs[CHR_ST__COUNT];
} chr_metrics_view_t;

/* Appends the exposition text (format 0.0.4) of the schedulers, every
 * store kind and the process; memory_bytes (the Lua state's) is a gauge
 * when >= 0. */
void chr_metrics_render(chr_buf_t *b, const chr_metrics_view_t *v, size_t n, int64_t memory_bytes);

/* Appends s escaped for a label value (\\, \", \n). */
void chr_metrics_escape(chr_buf_t *b, const char *s, size_t n);

#endif
