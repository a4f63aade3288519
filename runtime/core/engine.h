/* engine.h - the scheduler engine of docs/engine.md: the tick (lease
 * recovery, claim up to free capacity, drain, misfire classification,
 * dispatch), handler runs as tasks with timeouts, retries, batched
 * completions, lease heartbeats, wake-up timers and graceful stop. */
#ifndef CHR_ENGINE_H
#define CHR_ENGINE_H

#include <stdint.h>

#include <lua.h>
#include <uv.h>

#include "store.h"
#include "lua/task.h"

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
} chr_sched_opts_t;

typedef struct chr_sched_stats {
  uint64_t claimed, succeeded, failed, retried, skipped, returned, killed;
  uint64_t store_errors; /* failed store requests of the engine */
} chr_sched_stats_t;

/* The engine's store requests, each with its own failure streak: a failing
 * kind is logged once when it starts failing and once when it recovers,
 * and retried with backoff in between. */
enum { CHR_SOP_CLAIM, CHR_SOP_COMPLETE, CHR_SOP_RECOVER, CHR_SOP_EXTEND, CHR_SOP_NEXT_DUE,
       CHR_SOP__COUNT };

typedef void (*chr_sched_stopped_cb)(chr_sched_t *s, void *data);

struct chr_sched {
  lua_State *L;
  chr_store_t *store;
  chr_sched_opts_t opts;
  char node_id[48];
  int state;
  /* Lua anchors (LUA_NOREF when unset). */
  int store_ref, lock_ref, handlers_ref, callbacks_ref, clock_ref, on_success_ref,
      on_failure_ref, logger_ref;
  uv_timer_t *poll_timer, *lease_timer, *flush_timer, *grace_timer;
  int64_t armed_at; /* wall time the poll timer targets, CHR_TIME_NONE */
  /* Claimed jobs not started yet: a heap, highest priority then earliest. */
  chr_run_t **heap;
  size_t nheap, heapcap;
  chr_run_t *running; /* list of started runs */
  int nrunning;
  chr_completion_t *pend; /* completions waiting for the next flush */
  size_t npend, pendcap;
  unsigned claim_busy : 1, flush_busy : 1, due_busy : 1, recover_busy : 1, extend_busy : 1,
      dispatching : 1, starved : 1, closed : 1, grace_over : 1;
  int64_t last_recover;
  int refs; /* pending requests, timers and runs holding s */
  int njob_callbacks; /* jobs with callbacks of their own */
  /* Next run times this node wrote (a min-heap): for stores that cannot
   * say when the next job is due, the timer is armed at the earliest. */
  int64_t *hints;
  size_t nhints, hintcap;
  chr_store_watch_t watch;
  chr_sched_stopped_cb stopped_cb;
  void *stopped_data;
  /* Failure streaks per request kind, and the monotonic times before
   * which claims and flushes wait (backoff). */
  struct {
    int fails;
    int64_t since;
  } health[CHR_SOP__COUNT];
  int64_t claim_after, flush_after;
  int empty_claims; /* claims that found nothing while a job looked due */
  chr_sched_stats_t stats, stop_base;
  chr_sched_t *next_live; /* list of schedulers (host signals) */
};

chr_sched_t *chr_sched_new(lua_State *L, chr_store_t *store, const chr_sched_opts_t *opts);
int chr_sched_start(chr_sched_t *s);
/* Stops gracefully, and is idempotent: stops claiming, hands back
 * claimed jobs that have not started, lets running handlers finish for up
 * to `grace` seconds (then kills them), writes every completion, and then
 * enters CHR_SCHED_STOPPED on its own and calls the stopped callback. A
 * second call while stopping only shortens the grace period. */
void chr_sched_stop(chr_sched_t *s, double grace);
/* Called once each time the scheduler has stopped. */
void chr_sched_set_stopped_cb(chr_sched_t *s, chr_sched_stopped_cb cb, void *data);
/* 1 when t is the task of one of s's runs (a handler of s calling in). */
int chr_sched_runs_task(const chr_sched_t *s, const chr_task_t *t);
/* stack: +1 array of the job ids of started runs */
void chr_sched_push_running_ids(lua_State *L, chr_sched_t *s);
/* Runs one tick now. */
void chr_sched_tick(chr_sched_t *s);
/* Ends the scheduler: a running one is stopped at once (running handlers
 * killed, their jobs handed back); frees s once nothing pending refers to
 * it. */
void chr_sched_close(chr_sched_t *s);
int64_t chr_sched_now(chr_sched_t *s);
void chr_sched_log(chr_sched_t *s, int level, const char *job_id, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* 1 when the store request kind k is failing (its last attempt failed). */
int chr_sched_failing(const chr_sched_t *s, int k);
extern const char *const chr_sched_op_names[CHR_SOP__COUNT];

/* Every scheduler of the process that is running (for the host's signal
 * handling). */
chr_sched_t *chr_sched_first_live(void);

int luaopen_chronis_engine(lua_State *L);

#endif
