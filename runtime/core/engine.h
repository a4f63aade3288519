/* engine.h - the scheduler engine (docs/engine.md): the tick (lease
 * recovery, claim up to free capacity, drain, misfire classification,
 * dispatch), runs with timeouts, retries, batched completions, lease
 * heartbeats, wake-up timers, backoff on a failing store, graceful stop,
 * and the retention of completed one-shot jobs (keep_completed).
 *
 * The engine knows nothing of Lua. Its host (runtime/lua/scheduler.c, or a
 * C program) runs handlers and hears about outcomes through the hooks
 * below; the engine owns the store requests, the queue and the timers. */
#ifndef CHR_ENGINE_H
#define CHR_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "job.h"
#include "lock.h"
#include "log.h"
#include "store.h"

typedef struct chr_sched chr_sched_t;
typedef struct chr_run chr_run_t;

typedef enum { CHR_SCHED_STOPPED, CHR_SCHED_RUNNING, CHR_SCHED_STOPPING } chr_sched_state_t;

typedef struct chr_sched_opts {
  double polling_interval; /* seconds, 0.1..3600 */
  int max_workers;
  int max_queue_size;
  double lease_seconds;
  double shutdown_grace;
  double default_timeout; /* seconds, for jobs without a timeout; 0 = none */
  /* Claim and recover only the jobs this filter matches (a tenant's):
   * metadata conditions and the store's own keys (chr_filter_is_scope);
   * NULL for every job. Copied by chr_sched_new. */
  const chr_filter_t *scope;
  /* Seconds a one-shot job that succeeded is kept, status completed, before
   * the engine deletes it; 0 = deleted at once. */
  double keep_completed;
  /* if_missed = run_all: at most this many missed slots of a job run after
   * a downtime, the newest; older ones are skipped (0 = 100). */
  int max_catch_up;
  /* The named queues it serves (docs/queues.md), copied by chr_sched_new;
   * nqueues 0: every job, whatever its queue. Each queue's `limit` is its
   * concurrency in this process; its global and rate limits go to the
   * store with every claim. */
  const chr_claim_queue_t *queues;
  size_t nqueues;
} chr_sched_opts_t;

typedef struct chr_sched_stats {
  uint64_t claimed, succeeded, failed, retried, skipped, returned, killed;
  uint64_t store_errors; /* failed store requests of the engine */
  uint64_t unwritten;    /* completions given up at a stop: the store kept failing */
  uint64_t expired;      /* completed jobs deleted once keep_completed passed */
} chr_sched_stats_t;

/* The engine's store requests, each with its own failure streak: a failing
 * kind is logged once when it starts failing and once when it recovers,
 * and retried with backoff in between. */
enum { CHR_SOP_CLAIM, CHR_SOP_COMPLETE, CHR_SOP_RECOVER, CHR_SOP_EXTEND, CHR_SOP_NEXT_DUE,
       CHR_SOP_EXPIRE, CHR_SOP__COUNT };
extern const char *const chr_sched_op_names[CHR_SOP__COUNT];

/* How a started run ended, as its host reports it (chr_run_done). */
typedef enum {
  CHR_RUN_OK,     /* the handler returned */
  CHR_RUN_ERROR,  /* it raised: code and message say what */
  CHR_RUN_KILLED, /* stopped after the engine asked (stop_run): a timeout or a stop */
  CHR_RUN_EXIT,   /* the handler asked the process to exit (os.exit) */
  /* The handler ended its run itself (docs/engine.md, "Handler control"): */
  CHR_RUN_SNOOZED,   /* not a failure: the job runs again at the time chr_run_request gave */
  CHR_RUN_CANCELLED, /* the job ends (deleted, or kept completed): msg is the reason or NULL */
  CHR_RUN_FAILED     /* a failure (code, msg) that is not retried */
} chr_run_outcome_t;

/* Why the engine asks its host to stop a run. */
enum { CHR_STOP_TIMEOUT = 1, CHR_STOP_SHUTDOWN };

typedef struct chr_sched_hooks {
  /* Starts the handler of r. Returns 0 when it runs (the host then calls
   * chr_run_done exactly once, possibly before start_run returns), or an
   * error code (CHR_ENOHANDLER, ...) with a message in err: the run fails
   * with it. */
  int (*start_run)(void *host, chr_run_t *r, char *err, size_t errlen);
  /* Stops a started run: its timeout passed (CHR_STOP_TIMEOUT) or its
   * scheduler stops (CHR_STOP_SHUTDOWN). chr_run_done follows with
   * CHR_RUN_KILLED, now or once the handler reaches its next instruction. */
  void (*stop_run)(void *host, chr_run_t *r, int why);
  /* Optional: a log line with its fields (job_id, handler, attempt, code,
   * duration, node; NULL: the process log), the clock (NULL:
   * chr_time_now), a run's final outcome (success with code 0, or a
   * failure that will not be retried), and the end of a stop. */
  void (*log)(void *host, int level, const char *msg, const chr_log_field_t *fields, size_t n);
  int64_t (*now)(void *host);
  void (*finished)(void *host, const chr_job_t *job, int code, const char *msg);
  void (*stopped)(void *host);
  /* Called once, right before the scheduler frees itself: the host frees
   * what it keeps for it. */
  void (*freed)(void *host);
  /* Optional: whether log() would do anything with a line of this level
   * (CHR_LOG_*), asked before the line is formatted. NULL: log() gets
   * every line; without log(), the process log's level decides. */
  int (*log_enabled)(void *host, int level);
} chr_sched_hooks_t;

/* A scheduler on store (retained until it is freed), with an optional lock
 * (retained too) passed with each emulated claim of a store that cannot
 * claim in one request. hooks must outlive it. */
chr_sched_t *chr_sched_new(chr_store_t *store, chr_lock_t *lock, const chr_sched_opts_t *opts,
                           const chr_sched_hooks_t *hooks, void *host);
/* 0, or CHR_ESTATE while it is stopping, or the code of
 * chr_store_check_queues when its queues ask for limits the store cannot
 * hold (chr_sched_check_queues says why). */
int chr_sched_start(chr_sched_t *s);
/* Whether the store can serve its queues (chr_store_check_queues). */
int chr_sched_check_queues(const chr_sched_t *s, char *err, size_t errlen);
/* Stops gracefully, and is idempotent: stops claiming, hands back
 * claimed jobs that have not started, lets running handlers finish for up
 * to `grace` seconds (then stops them), writes every completion, and then
 * enters CHR_SCHED_STOPPED on its own and calls the stopped hook. A second
 * call while stopping only shortens the grace period. */
void chr_sched_stop(chr_sched_t *s, double grace);
/* Runs one tick now. */
void chr_sched_tick(chr_sched_t *s);
/* Ends the scheduler: a running one is stopped at once (running handlers
 * stopped, their jobs handed back); it frees itself (freed hook) once
 * nothing pending refers to it. Idempotent. */
void chr_sched_close(chr_sched_t *s);

int chr_sched_state(const chr_sched_t *s);
const char *chr_sched_node_id(const chr_sched_t *s);
/* 0, or CHR_EINVAL when id is empty or too long (47 bytes at most). */
int chr_sched_set_node_id(chr_sched_t *s, const char *id);
const chr_sched_opts_t *chr_sched_opts(const chr_sched_t *s);
chr_store_t *chr_sched_store(const chr_sched_t *s);
void *chr_sched_host(const chr_sched_t *s);
const chr_sched_stats_t *chr_sched_stats(const chr_sched_t *s);
/* The counters since the last stop began (what that stop did). */
chr_sched_stats_t chr_sched_stop_stats(const chr_sched_t *s);
/* Queue i of opts.queues (i < opts.nqueues): its jobs claimed and not
 * started (held) and started (running) in this scheduler. */
void chr_sched_queue_counts(const chr_sched_t *s, size_t i, int *held, int *running);
/* Claimed jobs waiting for a worker, and runs started. */
size_t chr_sched_queued(const chr_sched_t *s);
int chr_sched_running(const chr_sched_t *s);
size_t chr_sched_pending_completions(const chr_sched_t *s);
/* µs until the next claim while the store fails (0 when not backing off). */
int64_t chr_sched_claim_backoff(const chr_sched_t *s);
/* 1 when the store request kind k is failing (its last attempt failed). */
int chr_sched_failing(const chr_sched_t *s, int k);
int64_t chr_sched_now(chr_sched_t *s);
void chr_sched_log(chr_sched_t *s, int level, const char *job_id, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Its counts for the metrics exposition (runtime/core/metrics.h). */
const struct chr_msched *chr_sched_metrics(const chr_sched_t *s);

/* Started runs: chr_sched_first_run, then chr_run_next until NULL. */
chr_run_t *chr_sched_first_run(const chr_sched_t *s);
chr_run_t *chr_run_next(const chr_run_t *r);
/* The run whose host data is data, or NULL. */
chr_run_t *chr_sched_find_run(const chr_sched_t *s, const void *data);

/* A run, seen by its host. */
const chr_job_t *chr_run_job(const chr_run_t *r);
chr_sched_t *chr_run_sched(const chr_run_t *r);
int64_t chr_run_scheduled(const chr_run_t *r); /* the slot it runs for */
double chr_run_timeout(const chr_run_t *r);     /* seconds, 0 = none */
void chr_run_set_data(chr_run_t *r, void *data);
void *chr_run_data(const chr_run_t *r);
/* The host reports how a started run ended (exactly once). */
void chr_run_done(chr_run_t *r, chr_run_outcome_t outcome, int code, const char *msg);
/* The handler asked to end its run its own way (chronis.snooze, cancel,
 * fail): CHR_RUN_SNOOZED (again at `when`), CHR_RUN_CANCELLED (msg: the
 * reason, or NULL), CHR_RUN_FAILED (code, msg) or CHR_RUN_ERROR (code,
 * msg: retries apply). Recorded on the run while the host stops the
 * handler; the chr_run_done that follows (CHR_RUN_KILLED, or any outcome:
 * a pcall in the handler cannot undo the request) ends the run as asked.
 * The first request of a run wins. */
void chr_run_request(chr_run_t *r, chr_run_outcome_t outcome, int code, const char *msg,
                     int64_t when);

/* Every scheduler of the process that is running (for the host's signal
 * handling). */
chr_sched_t *chr_sched_first_live(void);

#endif
