/* engine.c - the scheduler's tick, runs and completions (see engine.h).
 *
 * A job's life inside one process: claimed by the store (running, leased
 * to this node) -> queued in a heap -> started as a task when a worker is
 * free -> finished (ok, error, timeout) -> a completion (next run, retry,
 * failed, completed, or delete) queued and flushed to the store in one
 * batch, each a CAS on claimed_by so a job recovered by another node is
 * never overwritten. Completed one-shot jobs (keep_completed) are deleted
 * by a pass of their own once their retention is over. */
#include "engine.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "json.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "time.h"
#include "trigger.h"
#include "tz.h"

enum { MF_NONE, MF_SKIP, MF_RUN_ONCE, MF_RUN_ALL };
/* How a run ended, inside the engine. */
enum { END_OK, END_ERROR, END_TIMEOUT, END_NO_HANDLER, END_SHUTDOWN, END_SKIPPED, END_EXIT,
       END_LEASE, END_BAD_RECORD,
       END_SNOOZED,   /* the handler asked to run again later (chronis.snooze) */
       END_CANCELLED, /* the handler ended the job (chronis.cancel) */
       /* A job with max_instances > 1 (docs/engine.md, "Overlap"): its slot
        * became an instance job that runs on its own (END_SPAWNED), or
        * max_instances of them were going on (END_BUSY: overlap decides). */
       END_SPAWNED, END_BUSY };

#define MAX_RETRY_DELAY_S 3600
/* Backoff of failing store requests: from the poll interval, doubling,
 * up to this (or the poll interval when it is longer). */
#define MAX_BACKOFF_US (30 * CHR_USEC)

const char *const chr_sched_op_names[CHR_SOP__COUNT] = {
    "claiming due jobs", "writing completions", "recovering expired leases",
    "extending leases", "asking for the next due time", "deleting completed jobs"};

struct chr_run {
  chr_sched_t *s;
  chr_job_t *job;    /* the claimed record, owned */
  int64_t scheduled; /* its next_run_time when claimed */
  /* The slot of the trigger's grid the run is for: `scheduled`, except for
   * a retry, whose time is off the grid (retry_slot). Next times are
   * counted from it, so an interval job keeps its phase. */
  int64_t slot;
  int misfire;
  int64_t started;
  int64_t started_mono; /* for its duration in the log, 0 = not started */
  void *data;        /* the host's, while the handler runs */
  uv_timer_t *timer; /* the run's timeout */
  int stop_why;      /* CHR_STOP_* once the engine asked the host to stop it */
  unsigned active : 1; /* the host runs it: chr_run_done is still to come */
  double timeout;    /* seconds, 0 = none */
  /* The handler's own end of the run (chr_run_request): CHR_RUN_* or 0,
   * with its code, message (owned), and time (snooze). */
  int req, req_code;
  char *req_msg;
  int64_t req_when;
  unsigned no_retry : 1; /* a failure the handler asked not to retry */
  int qi;            /* its place in opts.queues, -1 for none */
  chr_run_t *prev, *next;
};

#define CHR_TRIGGER_SLOTS 64

typedef struct chr_trigger_slot {
  int type;
  char *zone, *args; /* NULL: empty */
  char *job_id;      /* the job a cron spec with H was hashed for, else NULL */
  chr_trigger_t t;
} chr_trigger_slot_t;

struct chr_sched {
  chr_store_t *store;
  chr_lock_t *lock;
  chr_sched_opts_t opts;
  /* The jobs this scheduler claims and recovers (opts.scope, copied;
   * `scoped` when it has a condition): every other job is another's. */
  chr_filter_t scope;
  int scoped;
  const chr_sched_hooks_t *hooks;
  void *host;
  char node_id[48];
  int state;
  uv_timer_t *poll_timer, *lease_timer, *flush_timer, *grace_timer;
  int64_t armed_at; /* wall time the poll timer targets, CHR_TIME_NONE */
  /* Claimed jobs not started yet: a heap, highest priority then earliest
   * (heap_ent_t). */
  struct heap_ent *heap;
  size_t nheap, heapcap;
  uint64_t heap_seq; /* runs queued so far: the heap's last tie-break */
  chr_run_t *running; /* list of started runs */
  int nrunning;
  chr_completion_t *pend; /* completions waiting for the next flush */
  size_t npend, pendcap;
  unsigned claim_busy : 1, flush_busy : 1, due_busy : 1, recover_busy : 1, extend_busy : 1,
      dispatching : 1, starved : 1, closed : 1, grace_over : 1, reclaim : 1, due_valid : 1;
  int64_t last_recover;
  /* Stores whose hints cover every write (CHR_STORE_CAP_HINTS): the
   * earliest time a job of this scheduler may be due (CHR_TIME_NONE:
   * none), from the last next_due_time and every hint heard since; valid
   * (due_valid) from that answer, which came at monotonic time due_read,
   * for at most recheck_us. due_heard: the hints heard while a
   * next_due_time is in flight, which its answer may predate. */
  int64_t due_known, due_heard, due_read;
  /* The retention pass over completed jobs (keep_completed): the jobs its
   * query found, deleted one after the other, and when it last began. */
  struct {
    unsigned busy : 1, full : 1;
    chr_job_t **jobs;
    size_t n, next, deleted;
    int64_t last;
  } expiry;
  int64_t claimed_at; /* the time the last answered claim looked at */
  int refs; /* the owner's, pending requests, timers and runs */
  /* Next run times this node wrote (a min-heap): for stores that cannot
   * say when the next job is due, the timer is armed at the earliest. */
  int64_t *hints;
  size_t nhints, hintcap;
  chr_store_watch_t watch;
  /* Failure streaks per request kind, and the monotonic times before
   * which claims and flushes wait (backoff). */
  struct {
    int fails;
    int64_t since;
  } health[CHR_SOP__COUNT];
  int64_t claim_after, flush_after;
  int empty_claims; /* claims that found nothing while a job looked due */
  chr_trigger_slot_t triggers[CHR_TRIGGER_SLOTS];
  chr_sched_stats_t stats, stop_base;
  chr_sched_t *next_live; /* list of schedulers (host signals) */
  uint64_t run_seq; /* runs recorded: the tail of their run_id */
  chr_msched_t *metrics; /* runs by handler and outcome, claims, lateness */
  /* Named queues (opts.queues, copied with their names): per queue its
   * jobs held in the heap and running here, the queues of the claim in
   * flight (their free places), and where the next claim's list starts
   * (turning, so that a total limit does not always favour the first). */
  struct {
    chr_claim_queue_t *q, *claim;
    int *held, *running;
    size_t n, turn;
  } queues;
};

static chr_sched_t *live_list;

static void schedule_tick(chr_sched_t *s, int64_t delay_us);
static void arm_timer(chr_sched_t *s);
static void dispatch(chr_sched_t *s);
static void flush(chr_sched_t *s);
static void drop_stale_completions(chr_sched_t *s, chr_job_t *const *jobs, size_t n);
static void flush_soon(chr_sched_t *s);
static void check_stopped(chr_sched_t *s);
static void wake_cb(void *data, int64_t when, const chr_job_t *job);
static void hint_push(chr_sched_t *s, int64_t t);
static int nothing_due(chr_sched_t *s);
static void flush_timer_cb(uv_timer_t *t);
static void reboot_scan(chr_sched_t *s);

/* ---- small helpers ---- */

static void sched_ref(chr_sched_t *s) {
  s->refs++;
}

/* The scope of the engine's claims, recoveries and next due times. */
static chr_filter_t *scope_of(chr_sched_t *s) {
  return s->scoped ? &s->scope : NULL;
}

static void sched_free(chr_sched_t *s) {
  if (s->hooks->freed) s->hooks->freed(s->host);
  for (int i = 0; i < CHR_TRIGGER_SLOTS; i++) {
    if (!s->triggers[i].args) continue;
    chr_trigger_free(&s->triggers[i].t);
    free(s->triggers[i].zone);
    free(s->triggers[i].args);
    free(s->triggers[i].job_id);
  }
  chr_store_release(s->store);
  if (s->lock) chr_lock_release(s->lock);
  chr_filter_free(&s->scope);
  for (size_t i = 0; i < s->queues.n; i++) free((char *)s->queues.q[i].name);
  free(s->queues.q);
  free(s->queues.claim);
  free(s->queues.held);
  free(s->queues.running);
  chr_msched_free(s->metrics);
  free(s->hints);
  free(s->heap);
  free(s->pend);
  free(s);
}

static void sched_unref(chr_sched_t *s) {
  if (--s->refs == 0 && s->closed) sched_free(s);
}

static void timer_close_cb(uv_handle_t *h) {
  chr_sched_t *s = h->data;
  free(h);
  sched_unref(s);
}

static uv_timer_t *timer_new(chr_sched_t *s) {
  uv_timer_t *t = chr_malloc(sizeof *t);
  uv_timer_init(chr_loop(), t);
  t->data = s;
  sched_ref(s);
  return t;
}

static void timer_close(uv_timer_t **t) {
  if (*t) {
    uv_close((uv_handle_t *)*t, timer_close_cb);
    *t = NULL;
  }
}

/* Whether a line of this level goes anywhere: the engine logs a debug
 * line at each start and end of a run, and formatting one costs more than
 * a no-op handler's run. */
static int log_wanted(const chr_sched_t *s, int level) {
  if (s->hooks->log == NULL) return level >= chr_log_get_level();
  return s->hooks->log_enabled == NULL || s->hooks->log_enabled(s->host, level);
}

static void sched_emit(chr_sched_t *s, int level, const char *msg, const chr_log_field_t *f,
                       size_t n) {
  if (s->hooks->log) s->hooks->log(s->host, level, msg, f, n);
  else chr_log_fields(level, msg, f, n);
}

/* Every line a scheduler logs names its node: several schedulers may
 * share a process, and several processes a store. */
void chr_sched_log(chr_sched_t *s, int level, const char *job_id, const char *fmt, ...) {
  char msg[1024];
  if (!log_wanted(s, level)) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  chr_log_field_t f[2] = {{"job_id", job_id, 0}, {"node", s->node_id, 0}};
  sched_emit(s, level, msg, job_id ? f : f + 1, job_id ? 2 : 1);
}

/* A line about run r, with the fields that say which run it is: the job,
 * its handler, this run's attempt, the outcome, the error code (when
 * code != 0) and the duration (once started), and the node. */
static void run_log(chr_sched_t *s, const chr_run_t *r, int level, const char *outcome, int code,
                    const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void run_log(chr_sched_t *s, const chr_run_t *r, int level, const char *outcome, int code,
                    const char *fmt, ...) {
  char msg[1024], attempt[16], duration[32];
  if (!log_wanted(s, level)) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const chr_job_t *j = r->job;
  snprintf(attempt, sizeof attempt, "%d", (int)chr_job_int(j, CHR_F_ATTEMPT, 0) + 1);
  chr_log_field_t f[7];
  size_t n = 0;
  f[n++] = (chr_log_field_t){"job_id", j->job_id, 0};
  if (j->func_name) f[n++] = (chr_log_field_t){"handler", j->func_name, 0};
  f[n++] = (chr_log_field_t){"attempt", attempt, 1};
  if (outcome) f[n++] = (chr_log_field_t){"outcome", outcome, 0};
  if (code) f[n++] = (chr_log_field_t){"code", chr_strerror(code), 0};
  if (r->started_mono) {
    snprintf(duration, sizeof duration, "%.3f", (double)(chr_time_mono() - r->started_mono) / 1e6);
    f[n++] = (chr_log_field_t){"duration", duration, 1};
  }
  f[n++] = (chr_log_field_t){"node", s->node_id, 0};
  sched_emit(s, level, msg, f, n);
}

int64_t chr_sched_now(chr_sched_t *s) {
  return s->hooks->now ? s->hooks->now(s->host) : chr_time_now();
}

chr_sched_t *chr_sched_first_live(void) {
  return live_list;
}

static void live_remove(chr_sched_t *s) {
  for (chr_sched_t **p = &live_list; *p; p = &(*p)->next_live) {
    if (*p == s) {
      *p = s->next_live;
      s->next_live = NULL;
      return;
    }
  }
}

/* ---- the queue of claimed jobs ---- */

/* A queued run with the keys of its order, so that the heap compares
 * without reading the runs: the job's priority, its scheduled time and
 * the order it was queued in (FIFO among runs of one priority and time). */
typedef struct heap_ent {
  int64_t scheduled;
  uint64_t seq;
  int prio;
  chr_run_t *run;
} heap_ent_t;

/* Highest priority, then earliest, then first queued. A claim answers in
 * claim order (priority, next_run_time, job_id), so among the runs of one
 * claim with equal priority and time, queue order is job_id order; a burst
 * of jobs that share both then costs no string comparison. */
static int run_before(const heap_ent_t *a, const heap_ent_t *b) {
  if (a->prio != b->prio) return a->prio > b->prio;
  if (a->scheduled != b->scheduled) return a->scheduled < b->scheduled;
  return a->seq < b->seq;
}

static void heap_push(chr_sched_t *s, chr_run_t *r) {
  if (r->qi >= 0) s->queues.held[r->qi]++;
  heap_ent_t e = {r->scheduled, ++s->heap_seq, chr_job_priority(r->job), r};
  if (s->nheap == s->heapcap) {
    s->heapcap = s->heapcap ? s->heapcap * 2 : 64;
    s->heap = chr_realloc(s->heap, s->heapcap * sizeof *s->heap);
  }
  size_t i = s->nheap++;
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!run_before(&e, &s->heap[parent])) break;
    s->heap[i] = s->heap[parent];
    i = parent;
  }
  s->heap[i] = e;
}

static chr_run_t *heap_pop(chr_sched_t *s) {
  chr_run_t *top = s->heap[0].run;
  heap_ent_t last = s->heap[--s->nheap];
  size_t i = 0, n = s->nheap;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && run_before(&s->heap[c + 1], &s->heap[c])) c++;
    if (!run_before(&s->heap[c], &last)) break;
    s->heap[i] = s->heap[c];
    i = c;
  }
  if (n) s->heap[i] = last;
  if (top->qi >= 0) s->queues.held[top->qi]--;
  return top;
}

/* Every run holds a reference to its scheduler, dropped here: a handler
 * still running when its scheduler is closed never sees it freed. */
static void run_free(chr_run_t *r) {
  chr_sched_t *s = r->s;
  free(r->req_msg);
  chr_job_free(r->job);
  free(r);
  sched_unref(s);
}

static chr_run_t *run_new(chr_sched_t *s, chr_job_t *job) {
  chr_run_t *r = chr_calloc(1, sizeof *r);
  r->s = s;
  r->job = job;
  r->qi = -1;
  for (size_t i = 0; i < s->queues.n; i++) {
    if (chr_job_queue_is(job, s->queues.q[i].name)) {
      r->qi = (int)i;
      break;
    }
  }
  sched_ref(s);
  return r;
}

/* ---- completions ---- */

/* Takes job_id (malloc'ed); the owner is borrowed from s, which every
 * pending request holds a reference to. */
static chr_completion_t *pend_add(chr_sched_t *s, char *job_id) {
  if (s->npend == s->pendcap) {
    s->pendcap = s->pendcap ? s->pendcap * 2 : 64;
    s->pend = chr_realloc(s->pend, s->pendcap * sizeof *s->pend);
  }
  chr_completion_t *c = &s->pend[s->npend++];
  memset(c, 0, sizeof *c);
  c->job_id = job_id;
  c->owner = s->node_id;
  return c;
}

/* Updates that hand a job back to the scheduled pool (lease cleared). */
static chr_job_t *release_updates(void) {
  chr_job_t *u = chr_job_new();
  chr_job_set_int(u, CHR_F_STATUS, CHR_ST_SCHEDULED);
  u->nullmask |= CHR_BIT(CHR_F_CLAIMED_BY) | CHR_BIT(CHR_F_LEASE_UNTIL);
  return u;
}

static void set_next(chr_job_t *u, int64_t next) {
  chr_job_set_time(u, CHR_F_NEXT_RUN_TIME, next);
}

/* A one-shot job that succeeded, kept for keep_completed instead of
 * deleted: completed, without a next run (its lease is cleared with the
 * other release updates); its last-run fields say how it ended. */
static void set_completed(chr_job_t *u) {
  chr_job_set_int(u, CHR_F_STATUS, CHR_ST_COMPLETED);
  u->nullmask |= CHR_BIT(CHR_F_NEXT_RUN_TIME);
}

/* An integer member of the job's extra, or def. */
static int64_t extra_int(const chr_job_t *j, const char *key, int64_t def) {
  const char *v;
  size_t n;
  long long i;
  double d;
  int isf = 1;
  if (j->extra == NULL || !chr_job_extra_lookup(j, key, &v, &n)) return def;
  if (chr__json_skip_number(v, v + n, &isf) != v + n || isf || !chr__json_number(v, n, 0, &i, &d))
    return def;
  return i;
}

/* 1 when the job's extra has the string member key equal to value. */
static int extra_is(const chr_job_t *j, const char *key, const char *value) {
  const char *v;
  size_t n, len = strlen(value);
  return j->extra != NULL && chr_job_extra_lookup(j, key, &v, &n) && n == len + 2 &&
         v[0] == '"' && memcmp(v + 1, value, len) == 0 && v[n - 1] == '"';
}

/* A time member of the job's extra (an ISO string), or CHR_TIME_NONE. */
static int64_t extra_time(const chr_job_t *j, const char *key) {
  const char *v;
  size_t n;
  int64_t t;
  char err[120];
  if (j->extra == NULL || !chr_job_extra_lookup(j, key, &v, &n) || n < 2 || v[0] != '"' ||
      chr_time_parse(v + 1, n - 2, NULL, &t, err, sizeof err) != 0)
    return CHR_TIME_NONE;
  return t;
}

/* The member of extra that keeps, while a recurring job's failed run is
 * retried, the slot that run was for: the retries run off the grid, and
 * the runs after them go back to it. */
#define RETRY_SLOT "retry_slot"

/* The step between two slots of t when it is fixed (elapsed-time
 * intervals, @every), else 0. */
static int64_t fixed_step(const chr_trigger_t *t) {
  if (t->type == CHR_TT_INTERVAL && t->wall_days == 0) return t->elapsed_us;
  if (t->type == CHR_TT_CRON && chr_cron_every(t->cron)) return chr_cron_every(t->cron) * CHR_USEC;
  return 0;
}

/* The first fire time strictly after `after`, skipping every slot up to
 * `now` (for the skip policy and for interval jobs that fell behind). */
static int64_t next_after(const chr_trigger_t *t, int64_t after, int64_t now) {
  int64_t next = chr_trigger_next(t, after), step = fixed_step(t);
  if (step > 0 && next != CHR_TIME_NONE && next <= now) return next + ((now - next) / step + 1) * step;
  for (int guard = 0; next != CHR_TIME_NONE && next <= now && guard < 100000; guard++)
    next = chr_trigger_next(t, next);
  return next;
}

/* The compiled trigger of a recurring job, from a small cache by its text:
 * every completion needs its job's next fire time, and jobs that share a
 * schedule share one compilation. NULL with err when it does not compile. */
static const chr_trigger_t *trigger_of(chr_sched_t *s, const chr_job_t *j, char *err,
                                       size_t errlen) {
  const char *zone = chr_job_has(j, CHR_F_TIMEZONE) ? j->timezone : "UTC";
  const char *args = chr_job_has(j, CHR_F_TRIGGER_ARGS) && j->trigger_args ? j->trigger_args : "{}";
  uint64_t h = 1469598103934665603ULL ^ j->trigger_type;
  for (const char *p = zone; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ULL;
  for (const char *p = args; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ULL;
  chr_trigger_slot_t *slot = &s->triggers[h % CHR_TRIGGER_SLOTS];
  if (slot->args && slot->type == j->trigger_type && strcmp(slot->zone, zone) == 0 &&
      strcmp(slot->args, args) == 0 &&
      (!slot->job_id || (j->job_id && strcmp(slot->job_id, j->job_id) == 0)))
    return &slot->t;
  chr_trigger_t t;
  if (chr_trigger_compile(j, &t, err, errlen) != 0) return NULL;
  if (slot->args) {
    chr_trigger_free(&slot->t);
    free(slot->zone);
    free(slot->args);
    free(slot->job_id);
  }
  slot->type = j->trigger_type;
  slot->zone = chr_strdup(zone);
  slot->args = chr_strdup(args);
  /* H makes the schedule the job's own: the text alone does not name it. */
  slot->job_id = t.cron && chr_cron_hashed(t.cron) ? chr_strdup(j->job_id) : NULL;
  slot->t = t;
  return &slot->t;
}

/* When the job's trigger has a further time: computes it per the misfire
 * decision (docs/engine.md, "Catch-up"). Returns CHR_TIME_NONE when the
 * job is done for good.
 * - skip, missed: the first slot after now;
 * - run_once, and skip within the threshold: the first slot after the
 *   run's start, so one run stands for every slot that came due before it
 *   started (a cron job that ran late does not run its late slots again);
 * - run_all: the slot after this one. */
static int64_t compute_next(const chr_run_t *r, const chr_trigger_t *t, int64_t now) {
  switch (r->misfire) {
  case MF_SKIP: return next_after(t, r->slot, now);
  case MF_RUN_ALL: return chr_trigger_next(t, r->slot);
  default: return next_after(t, r->slot, r->started ? r->started : now);
  }
}

/* Slots walked at most to count a catch-up's skipped slots (a cron job
 * firing every second, down for weeks): past it they are "more than". */
#define CATCH_UP_WALK 100000

/* The number of slots of t in (after, now], counting up to cap. */
static int count_slots(const chr_trigger_t *t, int64_t after, int64_t now, int cap) {
  int n = 0;
  for (int64_t x = chr_trigger_next(t, after); x != CHR_TIME_NONE && x <= now && n < cap;
       x = chr_trigger_next(t, x))
    n++;
  return n;
}

/* run_all after a downtime: of the slots from `slot` (due) up to now, only
 * the newest `keep` run. Returns the oldest of those, and in *skipped the
 * number of older slots left out (0 when there are at most `keep`; -1 when
 * more than CATCH_UP_WALK). */
static int64_t catch_up_start(const chr_trigger_t *t, int64_t slot, int64_t now, int keep,
                              int64_t *skipped) {
  *skipped = 0;
  int64_t step = fixed_step(t);
  if (step > 0) {
    int64_t due = (now - slot) / step + 1;
    if (due <= keep) return slot;
    *skipped = due - keep;
    return slot + *skipped * step;
  }
  if (count_slots(t, slot, now, keep) < keep) return slot; /* slot and fewer than keep after */
  int64_t start;
  if (t->type == CHR_TT_CRON) {
    /* A cron schedule's slots are absolute: the `keep`-th newest is found
     * by bisecting the time line, whatever the downtime. Invariant: at
     * least keep slots in (lo, now], fewer in (hi, now]. */
    int64_t lo = slot, hi = now;
    while (hi - lo > 1) {
      int64_t mid = lo + (hi - lo) / 2;
      if (count_slots(t, mid, now, keep) >= keep) lo = mid;
      else hi = mid;
    }
    start = chr_trigger_next(t, lo);
  } else {
    /* Intervals of days and weeks, a slot a day at least: walked, the last
     * `keep` slots held in a ring. */
    int64_t *ring = chr_malloc((size_t)keep * sizeof *ring), n = 0;
    for (int64_t x = slot; x != CHR_TIME_NONE && x <= now; x = chr_trigger_next(t, x))
      ring[n++ % keep] = x;
    start = ring[n % keep];
    free(ring);
  }
  int64_t n = 0;
  for (int64_t x = slot; x < start && n <= CATCH_UP_WALK; x = chr_trigger_next(t, x)) n++;
  *skipped = n > CATCH_UP_WALK ? -1 : n;
  return start;
}

/* Overlap (docs/engine.md): the next time of a job whose run just ended
 * at `now`, when `next` (the trigger's) is a slot that fell due while the
 * run went on (after its start). overlap = skip: those slots are skipped,
 * the next is the first slot after now; queue (the default): one run right
 * after, for the latest of them, however many passed. Slots missed before
 * the run started are the catch-up policy's (compute_next). */
static int64_t overlap_next(const chr_run_t *r, const chr_trigger_t *t, int64_t next, int64_t now) {
  if (next == CHR_TIME_NONE || next > now || next <= r->started) return next;
  if (chr_job_overlap_skip(r->job)) return next_after(t, next, now);
  /* if_missed = run_all asks for every slot: those that fell due during
   * the run are run one after another too (bounded by max_catch_up). */
  if (r->misfire == MF_RUN_ALL) return next;
  if (t->type == CHR_TT_INTERVAL && t->wall_days == 0)
    return next + (now - next) / t->elapsed_us * t->elapsed_us;
  for (int guard = 0; guard < 100000; guard++) {
    int64_t n = chr_trigger_next(t, next);
    if (n == CHR_TIME_NONE || n > now) break;
    next = n;
  }
  return next;
}

/* ---- run history ---- */

static int outcome_of(int end) {
  switch (end) {
  case END_OK: return CHR_OUT_OK;
  case END_SKIPPED: return CHR_OUT_SKIPPED;
  case END_SHUTDOWN: return CHR_OUT_INTERRUPTED;
  case END_TIMEOUT: return CHR_OUT_TIMEOUT;
  case END_SNOOZED: return CHR_OUT_SNOOZED;
  case END_CANCELLED: return CHR_OUT_CANCELLED;
  case END_BUSY: return CHR_OUT_SKIPPED;
  default: return CHR_OUT_ERROR;
  }
}

/* The run record of r, attached to its completion: "<node>/<sequence>"
 * names it, unique as long as node ids are. */
static void attach_run(chr_sched_t *s, chr_run_t *r, chr_completion_t *c, int outcome,
                       int code, const char *msg, int64_t now) {
  const chr_job_t *job = r->job;
  char id[sizeof s->node_id + 20], *p;
  size_t nlen = strlen(s->node_id);
  memcpy(id, s->node_id, nlen);
  p = id + nlen;
  *p++ = '/';
  uint64_t seq = ++s->run_seq;
  char digits[17];
  int nd = 0;
  do digits[nd++] = "0123456789abcdef"[seq & 15]; while ((seq >>= 4) != 0);
  while (nd) *p++ = digits[--nd];
  *p = '\0';

  chr_runrec_t rec;
  chr_runrec_init(&rec);
  rec.run_id = id;
  rec.job_id = job->job_id;
  rec.name = chr_job_has(job, CHR_F_NAME) ? job->name : NULL;
  rec.func_name = chr_job_has(job, CHR_F_FUNC_NAME) ? job->func_name : NULL;
  rec.node = s->node_id;
  rec.scheduled_at = r->scheduled;
  rec.started_at = r->started ? r->started : now;
  rec.ended_at = now;
  rec.outcome = outcome;
  rec.attempt = chr_job_int(job, CHR_F_ATTEMPT, 0) + 1;
  if (outcome == CHR_OUT_ERROR || outcome == CHR_OUT_TIMEOUT) {
    rec.error_code = chr_strerror(code);
    rec.error_message = msg;
  }
  char *meta = NULL;
  if (job->extra != NULL) {
    const char *v;
    size_t n;
    if (chr_job_extra_lookup(job, "metadata", &v, &n) && n > 2 && v[0] == '{') {
      meta = chr_malloc(n + 1);
      memcpy(meta, v, n);
      meta[n] = '\0';
      rec.metadata = meta;
    }
    int64_t keep = extra_int(job, "history_limit", -1);
    if (keep >= 0 && keep <= INT32_MAX) rec.keep = (int32_t)keep;
  }
  c->run = chr_runrec_copy(&rec);
  free(meta);
}

/* The job's record of its last run (docs/history.md): last_run_at,
 * last_outcome, the failure counters and last_error, as members of extra
 * in the updates u, in canonical order; and retry_slot, the slot a
 * recurring job's retries are for (CHR_TIME_NONE: none). */
static void set_last_run(const chr_job_t *job, chr_job_t *u, const chr_runrec_t *rec,
                         int64_t retry_slot) {
  char iso[CHR_TIME_BUFSZ];
  int failed = rec->outcome == CHR_OUT_ERROR || rec->outcome == CHR_OUT_TIMEOUT;
  int64_t fails = extra_int(job, "failure_count", 0), streak = extra_int(job, "consecutive_failures", 0);
  chr_buf_t b;
  chr_buf_init(&b);
  if (failed) fails++, streak++;
  else if (rec->outcome == CHR_OUT_OK) streak = 0;
  chr_buf_printf(&b, "{\"consecutive_failures\":%lld,\"failure_count\":%lld", (long long)streak,
                 (long long)fails);
  if (failed) {
    chr_time_format(rec->ended_at, iso);
    chr_buf_printf(&b, ",\"last_error\":{\"at\":\"%s\",\"attempt\":%d,\"code\":", iso,
                   (int)rec->attempt);
    chr_json_add_string(&b, rec->error_code, strlen(rec->error_code));
    chr_buf_adds(&b, ",\"message\":");
    const char *m = rec->error_message ? rec->error_message : "";
    chr_json_add_string(&b, m, strlen(m));
    chr_buf_addc(&b, '}');
  }
  chr_time_format(rec->started_at, iso);
  chr_buf_printf(&b, ",\"last_outcome\":\"%s\",\"last_run_at\":\"%s\"",
                 chr_outcome_names[rec->outcome], iso);
  /* Progress tells where a run is: once it ended, it tells nothing. The
   * handler may have written it after the claim, so it is always cleared. */
  chr_buf_adds(&b, ",\"progress\":null");
  if (retry_slot != CHR_TIME_NONE) {
    chr_time_format(retry_slot, iso);
    chr_buf_printf(&b, ",\"" RETRY_SLOT "\":\"%s\"", iso);
  } else if ((chr_job_int(u, CHR_F_RETRY_COUNT, -1) == 0 ||
              chr_job_int(u, CHR_F_STATUS, 0) == CHR_ST_FAILED) &&
             extra_time(job, RETRY_SLOT) != CHR_TIME_NONE) {
    /* The retries are over (a skipped slot or a stop leave them on). */
    chr_buf_adds(&b, ",\"" RETRY_SLOT "\":null");
  }
  chr_buf_addc(&b, '}');
  free(u->extra);
  u->extra = chr_buf_steal(&b);
}

/* A job with max_instances > 1 that waited for a free instance keeps the
 * slot it waits for in the member queued_slot (ISO); any end of its run
 * removes it: a null member for it goes into u->extra, in the key order
 * of canonical text (u->extra is canonical, or NULL). */
static void drop_queued_slot(const chr_job_t *job, chr_job_t *u) {
  static const char key[] = "queued_slot";
  const char *v;
  size_t n;
  if (!chr_job_extra_lookup(job, key, &v, &n)) return;
  chr_buf_t b;
  chr_buf_init(&b);
  chr_buf_addc(&b, '{');
  const char *p = u->extra ? u->extra : "{}", *e = p + strlen(p);
  chr_json_span_t k, val;
  int added = 0;
  while (chr_json_next_member(&p, e, &k, &val) == 1) {
    chr_json_span_t ks = {key, sizeof key - 1};
    if (!added && chr_json_key_cmp(&k, &ks) > 0) {
      chr_buf_printf(&b, "%s\"%s\":null", b.len > 1 ? "," : "", key);
      added = 1;
    }
    chr_buf_printf(&b, "%s\"%.*s\":%.*s", b.len > 1 ? "," : "", (int)k.n, k.p, (int)val.n, val.p);
  }
  if (!added) chr_buf_printf(&b, "%s\"%s\":null", b.len > 1 ? "," : "", key);
  chr_buf_addc(&b, '}');
  free(u->extra);
  u->extra = chr_buf_steal(&b);
}

/* The end of a run of a job with max_instances > 1 that ran no handler
 * here: its slot became an instance job (END_SPAWNED: the job moves to
 * its next slot), or it waits for an instance to end (END_BUSY with
 * overlap=queue: the slot is kept in queued_slot and the job is asked
 * again after a poll interval). Neither is a run of the job: no attempt,
 * no history, no callbacks; the instance has its own. */
static void complete_spawner(chr_sched_t *s, chr_run_t *r, int end, int64_t now) {
  chr_job_t *job = r->job;
  chr_completion_t *c = pend_add(s, chr_strdup(job->job_id));
  chr_job_t *u = release_updates();
  c->updates = u;
  /* A spawn that failed before was retried: the slot is handled now, so
   * the retry state goes (it would hold the job on the retried slot). */
  int retried = extra_time(job, RETRY_SLOT) != CHR_TIME_NONE;
  if (chr_job_int(job, CHR_F_RETRY_COUNT, 0) != 0) chr_job_set_int(u, CHR_F_RETRY_COUNT, 0);
  if (end == END_BUSY) {
    char iso[CHR_TIME_BUFSZ];
    chr_buf_t b;
    chr_time_format(r->slot, iso);
    chr_buf_init(&b);
    chr_buf_printf(&b, "{\"queued_slot\":\"%s\"%s}", iso,
                   retried ? ",\"" RETRY_SLOT "\":null" : "");
    u->extra = chr_buf_steal(&b);
    set_next(u, now + (int64_t)(s->opts.polling_interval * 1e6));
    run_log(s, r, CHR_LOG_DEBUG, NULL, 0, "%d instance(s) running, max_instances reached: the run "
            "for %s waits for one to end (overlap=queue)", chr_job_max_instances(job), iso);
    return;
  }
  char err[256];
  const chr_trigger_t *t = trigger_of(s, job, err, sizeof err);
  int64_t next = t ? compute_next(r, t, now) : CHR_TIME_NONE;
  if (t && t->cron && chr_cron_reboot(t->cron)) {
    chr_job_set_int(u, CHR_F_STATUS, CHR_ST_PENDING);
    u->nullmask |= CHR_BIT(CHR_F_NEXT_RUN_TIME);
  } else if (next == CHR_TIME_NONE) {
    c->remove = 1;
    return;
  } else {
    set_next(u, next);
  }
  if (retried) u->extra = chr_strdup("{\"" RETRY_SLOT "\":null}");
  drop_queued_slot(job, u);
}

static void fire_finished(chr_sched_t *s, chr_run_t *r, int code, const char *msg) {
  if (s->hooks->finished) s->hooks->finished(s->host, r->job, code, msg);
}

/* The outcome label of an end (END_*). */
static const chr_metrics_outcome_t metric_outcomes[] = {
    [END_OK] = CHR_MO_OK,           [END_ERROR] = CHR_MO_ERROR,
    [END_TIMEOUT] = CHR_MO_TIMEOUT, [END_NO_HANDLER] = CHR_MO_NO_HANDLER,
    [END_SHUTDOWN] = CHR_MO_INTERRUPTED, [END_SKIPPED] = CHR_MO_SKIPPED,
    [END_EXIT] = CHR_MO_EXIT,       [END_LEASE] = CHR_MO_LEASE,
    [END_BAD_RECORD] = CHR_MO_INVALID, [END_SNOOZED] = CHR_MO_SNOOZED,
    [END_CANCELLED] = CHR_MO_CANCELLED, [END_BUSY] = CHR_MO_SKIPPED};

/* The updates u of a run that failed with no retry left, or of a job
 * whose runs keep being cut short (docs/engine.md, "Failure policy"). A
 * recurring job follows its on_exhausted: next (the default) records the
 * failure and goes on with the first slot of its grid after now; pause
 * does the same but pauses the job there; fail ends it. A one-shot job, a
 * record that cannot run as stored, and a trigger with no further slot
 * fail. */
static void exhausted(chr_sched_t *s, chr_run_t *r, chr_job_t *u, int end, int code,
                      const char *msg, int32_t max, int64_t now) {
  const chr_job_t *job = r->job;
  const char *spent = max ? "; retries exhausted" : "";
  int pause = extra_is(job, "on_exhausted", "pause");
  if (job->trigger_type != CHR_TT_DATE && end != END_BAD_RECORD &&
      !extra_is(job, "on_exhausted", "fail")) {
    char err[256], iso[CHR_TIME_BUFSZ];
    const chr_trigger_t *t = trigger_of(s, job, err, sizeof err);
    int64_t next = t ? next_after(t, r->slot, now) : CHR_TIME_NONE;
    if (next != CHR_TIME_NONE) {
      chr_job_set_int(u, CHR_F_RETRY_COUNT, 0);
      set_next(u, next);
      chr_time_format(next, iso);
      if (pause) chr_job_set_int(u, CHR_F_STATUS, CHR_ST_PAUSED);
      run_log(s, r, CHR_LOG_ERROR, NULL, code, pause ? "run failed (%s: %s)%s; job paused "
              "(on_exhausted=pause), its next run at %s once resumed" : "run failed (%s: %s)%s; "
              "next run at %s", chr_strerror(code), msg, spent, iso);
      return;
    }
    if (t && t->cron && chr_cron_reboot(t->cron)) {
      /* @reboot: its next run is at the next start, as after a success. */
      chr_job_set_int(u, CHR_F_RETRY_COUNT, 0);
      chr_job_set_int(u, CHR_F_STATUS, pause ? CHR_ST_PAUSED : CHR_ST_PENDING);
      u->nullmask |= CHR_BIT(CHR_F_NEXT_RUN_TIME);
      run_log(s, r, CHR_LOG_ERROR, NULL, code, "run failed (%s: %s)%s; %s", chr_strerror(code),
              msg, spent, pause ? "job paused (on_exhausted=pause)" : "next run at the next start");
      return;
    }
  }
  chr_job_set_int(u, CHR_F_STATUS, CHR_ST_FAILED);
  u->nullmask |= CHR_BIT(CHR_F_NEXT_RUN_TIME);
  run_log(s, r, CHR_LOG_ERROR, NULL, code, "run failed (%s: %s)%s", chr_strerror(code), msg,
          spent);
}

/* Turns a finished run into its completion. */
static void complete_run(chr_sched_t *s, chr_run_t *r, int end, int code, const char *msg) {
  chr_job_t *job = r->job;
  int64_t now = chr_sched_now(s);
  chr_mhandler_t *mh =
      chr_msched_handler(s->metrics, chr_job_has(job, CHR_F_FUNC_NAME) ? job->func_name : NULL);
  if (end == END_SPAWNED || (end == END_BUSY && !chr_job_overlap_skip(job))) {
    complete_spawner(s, r, end, now);
    return;
  }
  mh->runs[metric_outcomes[end]]++;
  if (r->started_mono)
    chr_hist_observe(&mh->duration, CHR_HB_RUN, (double)(chr_time_mono() - r->started_mono) / 1e6);
  chr_completion_t *c = pend_add(s, chr_strdup(job->job_id));
  chr_job_t *u = release_updates();
  c->updates = u;
  int64_t retry_slot = CHR_TIME_NONE; /* while a recurring job's retries run */
  int32_t attempt = chr_job_int(job, CHR_F_ATTEMPT, 0);
  if (end != END_SKIPPED && end != END_SHUTDOWN && end != END_LEASE && end != END_BUSY)
    chr_job_set_int(u, CHR_F_ATTEMPT, attempt + 1);

  if (end == END_SHUTDOWN) {
    /* counted in stats.killed by chr_sched_kill_running */
  } else if (end == END_OK || end == END_SKIPPED || end == END_BUSY) {
    int64_t next = CHR_TIME_NONE;
    int reboot = 0;
    char err[256];
    if (job->trigger_type != CHR_TT_DATE) {
      const chr_trigger_t *t = trigger_of(s, job, err, sizeof err);
      if (t) next = compute_next(r, t, now);
      else chr_sched_log(s, CHR_LOG_ERROR, job->job_id, "cannot compute the next run: %s", err);
      reboot = t && t->cron && chr_cron_reboot(t->cron);
      if (t && end == END_OK) next = overlap_next(r, t, next, now);
    }
    if (reboot) {
      /* @reboot: kept, pending, for the next scheduler start (reboot_scan). */
      chr_job_set_int(u, CHR_F_STATUS, CHR_ST_PENDING);
      u->nullmask |= CHR_BIT(CHR_F_NEXT_RUN_TIME);
    } else if (next == CHR_TIME_NONE) {
      if (end == END_OK && job->trigger_type == CHR_TT_DATE && s->opts.keep_completed > 0)
        set_completed(u);
      else
        c->remove = 1;
    } else {
      set_next(u, next);
    }
    if (end == END_OK) {
      chr_job_set_int(u, CHR_F_RETRY_COUNT, 0);
      chr_job_set_time(u, CHR_F_LAST_RUN_TIME, r->started);
      chr_job_set_time(u, CHR_F_LAST_SCHEDULED_TIME, r->scheduled);
      s->stats.succeeded++;
      fire_finished(s, r, 0, NULL);
    } else if (end == END_BUSY) {
      s->stats.skipped++;
      run_log(s, r, CHR_LOG_INFO, NULL, 0, "skipped a run: %d instance(s) running, max_instances "
              "reached (overlap=skip)", chr_job_max_instances(job));
    } else {
      s->stats.skipped++;
      run_log(s, r, CHR_LOG_INFO, NULL, 0, "skipped a missed run (if_missed=skip)");
    }
  } else if (end == END_SNOOZED) {
    /* Not a failure: retry_count stays, the job waits for the time asked. */
    char iso[CHR_TIME_BUFSZ];
    set_next(u, r->req_when);
    chr_time_format(r->req_when, iso);
    run_log(s, r, CHR_LOG_INFO, NULL, 0, "snoozed by its handler until %s", iso);
  } else if (end == END_CANCELLED) {
    /* Cancelled: no further run, whatever its trigger; kept as completed
     * for keep_completed, like a one-shot job that ended. */
    if (s->opts.keep_completed > 0) set_completed(u);
    else c->remove = 1;
    run_log(s, r, CHR_LOG_INFO, NULL, 0, "cancelled by its handler%s%s", msg ? ": " : "",
            msg ? msg : "");
  } else {
    int32_t n = chr_job_int(job, CHR_F_RETRY_COUNT, 0) + 1;
    /* A record that cannot be run as stored fails at once: retrying it
     * gives the same answer until someone fixes it. */
    int32_t max = end == END_BAD_RECORD || r->no_retry ? 0 : chr_job_int(job, CHR_F_MAX_RETRIES, 0);
    if (n <= max) {
      double delay = chr_job_int(job, CHR_F_RETRY_DELAY, 60) * ldexp(1.0, n - 1);
      if (delay > MAX_RETRY_DELAY_S) delay = MAX_RETRY_DELAY_S;
      set_next(u, now + (int64_t)(delay * 1e6));
      chr_job_set_int(u, CHR_F_RETRY_COUNT, n);
      s->stats.retried++;
      mh->retries++;
      run_log(s, r, CHR_LOG_WARN, NULL, code, "run failed (%s: %s); retry %d of %d in %gs",
              chr_strerror(code), msg, (int)n, (int)max, delay);
      if (job->trigger_type != CHR_TT_DATE) retry_slot = r->slot;
    } else {
      s->stats.failed++;
      mh->failures++;
      exhausted(s, r, u, end, code, msg, max, now);
      fire_finished(s, r, code, msg);
    }
  }
  attach_run(s, r, c, outcome_of(end), code, msg, now);
  if (!c->remove) set_last_run(job, u, c->run, retry_slot);
  if (!c->remove) drop_queued_slot(job, u);
}

/* ---- runs ---- */

static void run_unlink(chr_sched_t *s, chr_run_t *r) {
  if (r->prev) r->prev->next = r->next;
  else s->running = r->next;
  if (r->next) r->next->prev = r->prev;
  s->nrunning--;
  if (r->qi >= 0) s->queues.running[r->qi]--;
}

static void run_timer_close_cb(uv_handle_t *h) {
  free(h);
}

/* How a run ended, as its end line says it (END_*). */
static const char *const end_names[] = {"ok",      "error",   "timeout", "handler_not_found",
                                        "killed",  "skipped", "exit",    "lease_expired",
                                        "invalid", "snoozed", "cancelled", "spawned", "busy"};

static void run_end(chr_sched_t *s, chr_run_t *r, int end, int code, const char *msg) {
  sched_ref(s);
  if (end == END_OK) run_log(s, r, CHR_LOG_DEBUG, end_names[end], 0, "run ended: ok");
  else if (end == END_SHUTDOWN)
    run_log(s, r, CHR_LOG_DEBUG, end_names[end], 0, "run ended: stopped by the shutdown (the job "
            "goes back to scheduled)");
  else if (end == END_SKIPPED || msg == NULL)
    run_log(s, r, CHR_LOG_DEBUG, end_names[end], 0, "run ended: %s", end_names[end]);
  else run_log(s, r, CHR_LOG_DEBUG, end_names[end], code, "run ended: %s: %s", end_names[end],
               msg ? msg : "");
  if (r->timer) {
    uv_close((uv_handle_t *)r->timer, run_timer_close_cb);
    r->timer = NULL;
  }
  run_unlink(s, r);
  complete_run(s, r, end, code, msg);
  run_free(r);
  if (!s->dispatching) {
    dispatch(s);
    if (s->state == CHR_SCHED_RUNNING) flush_soon(s);
    else flush(s);
  }
  check_stopped(s);
  sched_unref(s);
}

static void timeout_cb(uv_timer_t *h) {
  chr_run_t *r = h->data;
  if (r->active && !r->stop_why) {
    r->stop_why = CHR_STOP_TIMEOUT;
    r->s->hooks->stop_run(r->s->host, r, CHR_STOP_TIMEOUT);
  }
}

void chr_run_request(chr_run_t *r, chr_run_outcome_t outcome, int code, const char *msg,
                     int64_t when) {
  if (r->req) return;
  r->req = outcome;
  r->req_code = code;
  r->req_msg = msg ? chr_strdup(msg) : NULL;
  r->req_when = when;
}

void chr_run_done(chr_run_t *r, chr_run_outcome_t outcome, int code, const char *msg) {
  chr_sched_t *s = r->s;
  char buf[128];
  r->active = 0;
  r->data = NULL;
  /* What the handler asked for wins over how its task ended (stopped to
   * honour the request, or the request's error caught and swallowed). */
  if (r->req) {
    outcome = r->req;
    code = r->req_code;
    msg = r->req_msg;
  }
  switch (outcome) {
  case CHR_RUN_SNOOZED:
    if (r->req_when == 0) r->req_when = chr_sched_now(s);
    run_end(s, r, END_SNOOZED, 0, NULL);
    break;
  case CHR_RUN_CANCELLED: run_end(s, r, END_CANCELLED, 0, msg); break;
  case CHR_RUN_FAILED:
    r->no_retry = 1;
    run_end(s, r, END_ERROR, code ? code : CHR_EHANDLER, msg);
    break;
  case CHR_RUN_OK: run_end(s, r, END_OK, 0, NULL); break;
  case CHR_RUN_ERROR: run_end(s, r, END_ERROR, code ? code : CHR_EHANDLER, msg); break;
  case CHR_RUN_EXIT: run_end(s, r, END_EXIT, CHR_EHANDLER, msg); break;
  case CHR_RUN_KILLED:
    if (r->stop_why == CHR_STOP_SHUTDOWN) {
      run_end(s, r, END_SHUTDOWN, 0, NULL);
    } else {
      snprintf(buf, sizeof buf, "handler timed out after %gs", r->timeout);
      run_end(s, r, END_TIMEOUT, CHR_ETIMEOUT, buf);
    }
    break;
  }
}

static int spawns_instances(const chr_job_t *j);
static void spawn_instance(chr_sched_t *s, chr_run_t *r);

static void start_run(chr_sched_t *s, chr_run_t *r) {
  r->started = chr_sched_now(s);
  /* Link first: a handler that finishes without waiting ends inside
   * start_run. */
  r->prev = NULL;
  r->next = s->running;
  if (s->running) s->running->prev = r;
  s->running = r;
  s->nrunning++;
  if (r->qi >= 0) s->queues.running[r->qi]++;
  /* A recurring job whose stored trigger cannot be read (a record edited
   * by hand or corrupted) would run once, then have no next time and be
   * deleted: it fails instead, without running, naming what is wrong. */
  char err[300];
  const chr_job_t *j = r->job;
  const char *bad = j->unreadable; /* see chr_job_t: it would run without a field */
  if (bad == NULL &&
      (j->trigger_type == CHR_TT_INTERVAL || j->trigger_type == CHR_TT_CRON ||
       (j->trigger_type == CHR_TT_NONE && chr_job_has(j, CHR_F_TRIGGER_ARGS))) &&
      trigger_of(s, j, err, sizeof err) == NULL)
    bad = err;
  if (bad != NULL) {
    char msg[400];
    snprintf(msg, sizeof msg, "job '%s' cannot run as stored: %s", j->job_id, bad);
    run_end(s, r, END_BAD_RECORD, CHR_EINVAL, msg);
    return;
  }
  if (r->misfire == MF_SKIP) {
    run_end(s, r, END_SKIPPED, 0, NULL);
    return;
  }
  if (spawns_instances(j)) {
    spawn_instance(s, r);
    return;
  }
  int32_t timeout = chr_job_int(r->job, CHR_F_TIMEOUT, 0);
  r->timeout = timeout > 0 ? timeout : s->opts.default_timeout;
  if (r->timeout > 0) {
    uint64_t ms = (uint64_t)(r->timeout * 1000 + 0.5);
    r->timer = chr_malloc(sizeof *r->timer);
    uv_timer_init(chr_loop(), r->timer);
    r->timer->data = r;
    uv_timer_start(r->timer, timeout_cb, ms ? ms : 1, 0);
  }
  r->active = 1;
  run_log(s, r, CHR_LOG_DEBUG, NULL, 0, "run started");
  chr_hist_observe(&s->metrics->lateness, CHR_HB_LATE, (double)(r->started - r->scheduled) / 1e6);
  r->started_mono = chr_time_mono();
  int rc = s->hooks->start_run(s->host, r, err, sizeof err);
  if (rc != 0) {
    r->active = 0;
    run_end(s, r, rc == CHR_ENOHANDLER ? END_NO_HANDLER : END_ERROR, rc, err);
  }
}

/* Free places of queue i in this process: its concurrency less its jobs
 * held and running here. */
static int64_t queue_free(const chr_sched_t *s, size_t i) {
  return s->queues.q[i].limit - s->queues.held[i] - s->queues.running[i];
}

/* Whether a claim could take anything: without queues, always. */
static int queue_room(const chr_sched_t *s) {
  for (size_t i = 0; i < s->queues.n; i++)
    if (queue_free(s, i) > 0) return 1;
  return s->queues.n == 0;
}

static void dispatch(chr_sched_t *s) {
  if (s->dispatching) return;
  s->dispatching = 1;
  while (s->state != CHR_SCHED_STOPPED && s->nheap > 0 && s->nrunning < s->opts.max_workers)
    start_run(s, heap_pop(s));
  s->dispatching = 0;
  /* Capacity came back while claims were held off: claim again. */
  if (s->starved && s->state == CHR_SCHED_RUNNING &&
      (int)(s->nheap + (size_t)s->nrunning) < s->opts.max_queue_size && queue_room(s)) {
    s->starved = 0;
    schedule_tick(s, 0);
  }
}

/* ---- store calls ---- */

typedef struct sreq {
  chr_store_req_t req;
  chr_store_cb done;
  chr_sched_t *s;
  chr_completion_t *items;
  size_t nitems;
  char **ids;
  size_t nids;
  chr_job_t *expected, *updates; /* CAS inputs, owned */
  chr_filter_t *filter;          /* query input, owned */
  chr_run_t *run;                /* the run an instance is spawned for */
} sreq_t;

/* Runs a request's callback holding a reference to the scheduler: the
 * callback frees the request (and its reference) and may still use s. */
static void sreq_dispatch(chr_store_req_t *req) {
  sreq_t *q = req->data;
  chr_sched_t *s = q->s;
  sched_ref(s);
  q->done(req);
  sched_unref(s);
}

static sreq_t *sreq_new(chr_sched_t *s, chr_store_op_t op, chr_store_cb cb) {
  sreq_t *q = chr_calloc(1, sizeof *q);
  chr_store_req_init(&q->req, op);
  q->done = cb;
  q->req.cb = sreq_dispatch;
  q->req.data = q;
  q->s = s;
  sched_ref(s);
  return q;
}

static void sreq_free(sreq_t *q) {
  chr_sched_t *s = q->s;
  chr_store_req_reset(&q->req);
  for (size_t i = 0; i < q->nitems; i++) {
    free(q->items[i].job_id);
    chr_job_free(q->items[i].updates);
    chr_runrec_free(q->items[i].run);
  }
  free(q->items);
  for (size_t i = 0; i < q->nids; i++) free(q->ids[i]);
  free(q->ids);
  if (q->expected) chr_job_free(q->expected);
  if (q->updates) chr_job_free(q->updates);
  if (q->filter) {
    chr_filter_free(q->filter);
    free(q->filter);
  }
  free(q);
  sched_unref(s);
}

/* Submits q; a refusal is answered like a failed request. */
static void sreq_submit(sreq_t *q) {
  int rc = chr_store_submit(q->s->store, &q->req);
  if (rc != 0) {
    chr_store_req_fail(&q->req, rc, "%s refused", chr_store_op_names[q->req.op]);
    q->req.cb(&q->req);
  }
}

/* ---- failing stores ---- */

/* The delay before the next attempt after `fails` failures in a row: the
 * poll interval doubling per failure, capped, with ±10% jitter so that
 * processes sharing a store do not retry in step. */
static int64_t backoff_us(const chr_sched_t *s, int fails) {
  int64_t base = (int64_t)(s->opts.polling_interval * 1e6);
  int64_t cap = base > MAX_BACKOFF_US ? base : MAX_BACKOFF_US;
  int64_t d = base;
  for (int i = 1; i < fails && d < cap; i++) d *= 2;
  if (d > cap) d = cap;
  static uint64_t seed = 0x9e3779b97f4a7c15ULL;
  seed ^= seed << 13;
  seed ^= seed >> 7;
  seed ^= seed << 17;
  return d - d / 10 + (int64_t)(seed % (uint64_t)(d / 5 + 1));
}

/* A store request of kind k failed: logged when the kind starts failing,
 * then only at debug level until it works again. Returns the streak. */
static int op_failed(chr_sched_t *s, int k, const chr_store_req_t *req) {
  s->stats.store_errors++;
  int n = ++s->health[k].fails;
  const char *code = chr_strerror(req->status), *msg = req->errmsg ? req->errmsg : "";
  if (n == 1) {
    s->health[k].since = chr_time_mono();
    chr_sched_log(s, CHR_LOG_ERROR, NULL, "%s failed: %s: %s; retrying with backoff (logged "
                  "again when it works)", chr_sched_op_names[k], code, msg);
  } else {
    chr_sched_log(s, CHR_LOG_DEBUG, NULL, "%s failed again (%d in a row): %s: %s",
                  chr_sched_op_names[k], n, code, msg);
  }
  return n;
}

static void op_ok(chr_sched_t *s, int k) {
  if (s->health[k].fails == 0) return;
  chr_sched_log(s, CHR_LOG_INFO, NULL, "%s works again after %d failed attempt(s) over %.1fs",
                chr_sched_op_names[k], s->health[k].fails,
                (double)(chr_time_mono() - s->health[k].since) / 1e6);
  s->health[k].fails = 0;
}

int chr_sched_failing(const chr_sched_t *s, int k) {
  return s->health[k].fails > 0;
}

/* ---- instances: max_instances > 1 (docs/engine.md, "Overlap") ----
 *
 * A claimed slot of such a job does not run here: it becomes a one-shot
 * instance job, `<job_id>@<slot>`, that any scheduler claims and runs as
 * it runs every job. The instances that exist (scheduled or running,
 * found by their metadata.instance_of) are counted first; with fewer than
 * max_instances the instance is created and the job moves to its next
 * slot, else overlap decides (skip: the slot is skipped; queue: the job
 * waits for one to end). The job is `running`, claimed by this node, from
 * the count to the creation, so no other node counts at the same time:
 * counting and spawning are serialised across processes. One slot gives
 * one instance whoever spawns it (the id), also after a lease recovery. */

static int spawns_instances(const chr_job_t *j) {
  return j->trigger_type != CHR_TT_DATE && chr_job_max_instances(j) > 1;
}

/* The slot a waiting job kept (queued_slot), or CHR_TIME_NONE. */
static int64_t queued_slot(const chr_job_t *j) {
  const char *v;
  size_t n;
  int64_t t;
  char err[100];
  if (!chr_job_extra_lookup(j, "queued_slot", &v, &n) || n < 2 || v[0] != '"') return CHR_TIME_NONE;
  if (chr_time_parse(v + 1, n - 2, NULL, &t, err, sizeof err) != 0) return CHR_TIME_NONE;
  return t;
}

/* Whether the (escaped) key span sorts before `name` in canonical order:
 * bytes, then length. */
static int key_before(chr_json_span_t k, const char *name) {
  size_t n = strlen(name), m = k.n < n ? k.n : n;
  int c = memcmp(k.p, name, m);
  return c < 0 || (c == 0 && k.n < n);
}

/* The parent's extra for its instance: its own data (args, kwargs, the
 * user's members) without what is the parent's alone (overlap settings,
 * its last-run record and failure counters), and its metadata with
 * instance_of = the parent's id. Canonical: members in key order. */
static char *instance_extra(const chr_job_t *p) {
  static const char *const drop[] = {"max_instances", "overlap", "queued_slot", "failure_count",
                                     "consecutive_failures", "last_error", "last_outcome",
                                     "last_run_at", "progress", "metadata", "on_exhausted",
                                     RETRY_SLOT, "unique_key", "unique_until", "declared", NULL};
  chr_buf_t b;
  chr_buf_init(&b);
  chr_buf_addc(&b, '{');
  int first = 1, meta_done = 0;
  const char *meta = NULL;
  size_t meta_n = 0;
  chr_job_extra_lookup(p, "metadata", &meta, &meta_n);
  const char *text = p->extra ? p->extra : "{}", *it = text, *end = text + strlen(text);
  chr_json_span_t k, v;
  for (;;) {
    int more = chr_json_next_member(&it, end, &k, &v) == 1;
    if (!meta_done && (!more || !key_before(k, "metadata"))) {
      meta_done = 1;
      chr_buf_adds(&b, first ? "\"metadata\":{" : ",\"metadata\":{");
      first = 0;
      int inner_first = 1, own_done = 0;
      const char *mit = meta && meta_n > 1 && meta[0] == '{' ? meta : "{}";
      const char *mend = mit == meta ? meta + meta_n : mit + 2;
      chr_json_span_t mk, mv;
      for (;;) {
        int mmore = chr_json_next_member(&mit, mend, &mk, &mv) == 1;
        if (!own_done && (!mmore || !key_before(mk, "instance_of"))) {
          own_done = 1;
          chr_buf_adds(&b, inner_first ? "\"instance_of\":" : ",\"instance_of\":");
          chr_json_add_string(&b, p->job_id, strlen(p->job_id));
          inner_first = 0;
        }
        if (!mmore) break;
        if (mk.n == 11 && memcmp(mk.p, "instance_of", 11) == 0) continue;
        chr_buf_printf(&b, "%s\"%.*s\":%.*s", inner_first ? "" : ",", (int)mk.n, mk.p, (int)mv.n,
                       mv.p);
        inner_first = 0;
      }
      chr_buf_addc(&b, '}');
    }
    if (!more) break;
    int skip = 0;
    for (size_t i = 0; drop[i]; i++)
      if (k.n == strlen(drop[i]) && memcmp(k.p, drop[i], k.n) == 0) skip = 1;
    if (skip) continue;
    chr_buf_printf(&b, "%s\"%.*s\":%.*s", first ? "" : ",", (int)k.n, k.p, (int)v.n, v.p);
    first = 0;
  }
  chr_buf_addc(&b, '}');
  return chr_buf_steal(&b);
}

/* The instance job of r's slot: a one-shot job due at the slot that runs
 * the parent's handler with its arguments, options and metadata. Named
 * after the slot (not the time of this claim, which is a retry's when the
 * spawn is retried), so that one slot gives one instance. */
static chr_job_t *instance_job(const chr_run_t *r, int64_t now) {
  const chr_job_t *p = r->job;
  char iso[CHR_TIME_BUFSZ];
  chr_time_format(r->slot, iso);
  chr_job_t *j = chr_job_dup(p);
  char *id = chr_sprintf("%s@%s", p->job_id, iso);
  chr_job_set_str(j, CHR_F_JOB_ID, id);
  free(id);
  char *args = chr_sprintf("{\"run_date\":\"%s\"}", iso);
  chr_job_set_int(j, CHR_F_TRIGGER_TYPE, CHR_TT_DATE);
  chr_job_set_str(j, CHR_F_TRIGGER_ARGS, args);
  free(args);
  chr_job_set_int(j, CHR_F_STATUS, CHR_ST_SCHEDULED);
  chr_job_set_time(j, CHR_F_NEXT_RUN_TIME, r->slot);
  chr_job_set_time(j, CHR_F_CREATED_AT, now);
  chr_job_set_time(j, CHR_F_UPDATED_AT, now);
  chr_job_set_time(j, CHR_F_LAST_RUN_TIME, CHR_TIME_NONE);
  chr_job_set_time(j, CHR_F_LAST_SCHEDULED_TIME, CHR_TIME_NONE);
  chr_job_set_time(j, CHR_F_LEASE_UNTIL, CHR_TIME_NONE);
  chr_job_set_str(j, CHR_F_CLAIMED_BY, NULL);
  chr_job_set_int(j, CHR_F_RETRY_COUNT, 0);
  chr_job_set_int(j, CHR_F_ATTEMPT, 0);
  /* The parent decided that the slot runs: the instance runs even when it
   * waits long for a worker (a cron job's default would skip it). */
  chr_job_set_int(j, CHR_F_IF_MISSED, CHR_MISS_RUN_ONCE);
  free(j->extra);
  j->extra = instance_extra(p);
  return j;
}

/* A store request of the spawn failed: the run fails with it (retries
 * apply), as a run whose handler could not start. */
static void spawn_failed(chr_sched_t *s, chr_run_t *r, const chr_store_req_t *req,
                         const char *what) {
  char msg[400];
  snprintf(msg, sizeof msg, "cannot %s: %s", what,
           req->errmsg ? req->errmsg : chr_strerror(req->status));
  run_end(s, r, END_ERROR, req->status, msg);
}

static void spawn_create_cb(chr_store_req_t *req) {
  sreq_t *q = req->data;
  chr_sched_t *s = q->s;
  chr_run_t *r = q->run;
  /* A duplicate: this slot's instance exists (spawned before a lease
   * recovery): the slot is taken care of. */
  if (req->status != 0 && req->status != CHR_EDUP)
    spawn_failed(s, r, req, "create the instance job");
  else
    run_end(s, r, END_SPAWNED, 0, NULL);
  sreq_free(q);
}

static void spawn_count_cb(chr_store_req_t *req) {
  sreq_t *q = req->data;
  chr_sched_t *s = q->s;
  chr_run_t *r = q->run;
  if (req->status != 0) {
    spawn_failed(s, r, req, "count the running instances");
  } else if (req->count >= chr_job_max_instances(r->job)) {
    run_end(s, r, END_BUSY, 0, NULL);
  } else {
    sreq_t *c = sreq_new(s, CHR_OP_CREATE, spawn_create_cb);
    c->run = r;
    c->updates = instance_job(r, chr_sched_now(s));
    c->req.job = c->updates;
    run_log(s, r, CHR_LOG_DEBUG, NULL, 0, "run handed to the instance job '%s' (%lld of at most "
            "%d)", c->updates->job_id, (long long)req->count + 1, chr_job_max_instances(r->job));
    sreq_submit(c);
  }
  sreq_free(q);
}

static void spawn_instance(chr_sched_t *s, chr_run_t *r) {
  int64_t slot = queued_slot(r->job);
  if (slot != CHR_TIME_NONE) r->scheduled = r->slot = slot; /* the slot it waited for */
  sreq_t *q = sreq_new(s, CHR_OP_COUNT, spawn_count_cb);
  q->run = r;
  q->filter = chr_calloc(1, sizeof *q->filter);
  chr_filter_init(q->filter);
  q->filter->status_mask = 1u << CHR_ST_SCHEDULED | 1u << CHR_ST_RUNNING;
  q->filter->meta = chr_calloc(1, sizeof *q->filter->meta);
  chr_buf_t b;
  chr_buf_init(&b);
  chr_json_add_string(&b, r->job->job_id, strlen(r->job->job_id));
  char *value = chr_buf_steal(&b), err[200];
  if (chr_meta_filter_set(q->filter->meta, "instance_of", CHR_MF_EQ, &value, 1, err,
                          sizeof err) == 0)
    q->filter->nmeta = 1;
  free(value);
  q->req.filter = q->filter;
  sreq_submit(q);
}

/* ---- claims ---- */

/* A job whose runs kept being cut short (its lease expired before the
 * run completed: the process died, or stopped answering) more often than
 * its retries allow. Lease recovery counts those in retry_count; a job
 * without retries still gets one run after such a loss. */
static int lease_exhausted(const chr_job_t *j) {
  int32_t max = chr_job_int(j, CHR_F_MAX_RETRIES, 0);
  return chr_job_int(j, CHR_F_RETRY_COUNT, 0) > (max > 0 ? max : 1);
}

/* Misfire classification of a claimed run (docs/engine.md, "Catch-up"):
 * its slot is late once past due, missed once later than the job's
 * misfire_threshold_seconds. skip drops a missed slot; run_once runs once
 * for every slot due by its start; run_all runs each slot (bounded by
 * bound_catch_up). */
static void classify(chr_run_t *r, int64_t now) {
  const chr_job_t *j = r->job;
  r->scheduled = chr_job_has(j, CHR_F_NEXT_RUN_TIME) ? j->next_run_time : now;
  r->slot = r->scheduled;
  if (chr_job_int(j, CHR_F_RETRY_COUNT, 0) > 0) {
    int64_t slot = extra_time(j, RETRY_SLOT);
    if (slot != CHR_TIME_NONE) r->slot = slot;
  }
  int policy = chr_job_int(j, CHR_F_IF_MISSED, 0);
  if (policy == 0) policy = j->trigger_type == CHR_TT_CRON ? CHR_MISS_SKIP : CHR_MISS_RUN_ONCE;
  int64_t threshold = (int64_t)chr_job_int(j, CHR_F_MISFIRE_THRESHOLD, 60) * CHR_USEC;
  if (policy == CHR_MISS_SKIP) {
    if (r->scheduled + threshold < now) r->misfire = MF_SKIP;
    return;
  }
  if (policy != CHR_MISS_RUN_ALL) {
    r->misfire = MF_RUN_ONCE;
    return;
  }
  r->misfire = MF_RUN_ALL;
}

/* run_all after a downtime: the newest max_catch_up due slots run, the
 * older ones are skipped, with a warning that counts them. */
static void bound_catch_up(chr_sched_t *s, chr_run_t *r, int64_t now) {
  const chr_job_t *j = r->job;
  if (r->misfire != MF_RUN_ALL || j->trigger_type == CHR_TT_DATE || r->slot >= now) return;
  char err[256];
  const chr_trigger_t *t = trigger_of(s, j, err, sizeof err);
  if (t == NULL) return; /* the run fails on it (start_run) */
  int64_t skipped;
  int64_t start = catch_up_start(t, r->slot, now, s->opts.max_catch_up, &skipped);
  if (skipped == 0) return;
  char iso[CHR_TIME_BUFSZ];
  chr_time_format(start, iso);
  if (skipped < 0)
    chr_sched_log(s, CHR_LOG_WARN, j->job_id, "skipped more than %d missed run(s) "
                  "(if_missed=run_all runs the last max_catch_up=%d): catching up from %s",
                  CATCH_UP_WALK, s->opts.max_catch_up, iso);
  else
    chr_sched_log(s, CHR_LOG_WARN, j->job_id, "skipped %lld missed run(s) (if_missed=run_all "
                  "runs the last max_catch_up=%d): catching up from %s", (long long)skipped,
                  s->opts.max_catch_up, iso);
  r->scheduled = r->slot = start;
}

static void claim_cb(chr_store_req_t *req) {
  sreq_t *q = req->data;
  chr_sched_t *s = q->s;
  s->claim_busy = 0;
  if (req->status != 0) {
    int n = op_failed(s, CHR_SOP_CLAIM, req);
    int64_t d = backoff_us(s, n);
    s->claim_after = chr_time_mono() + d;
    sreq_free(q);
    if (s->state == CHR_SCHED_RUNNING) schedule_tick(s, d);
    else check_stopped(s);
    return;
  }
  op_ok(s, CHR_SOP_CLAIM);
  s->metrics->claims++;
  chr_hist_observe(&s->metrics->batch, CHR_HB_BATCH, (double)req->njobs);
  s->claim_after = 0;
  s->claimed_at = req->now;
  int full = req->limit > 0 && (int64_t)req->njobs >= req->limit;
  s->empty_claims = req->njobs == 0 ? s->empty_claims + 1 : 0;
  int64_t now = req->now;
  if (s->npend && req->njobs) drop_stale_completions(s, req->jobs, req->njobs);
  for (size_t i = 0; i < req->njobs; i++) {
    chr_job_t *j = req->jobs[i];
    req->jobs[i] = NULL;
    chr_run_t *r = run_new(s, j);
    classify(r, now);
    s->stats.claimed++;
    if (s->state != CHR_SCHED_RUNNING) { /* stopped meanwhile: give it back */
      chr_completion_t *c = pend_add(s, chr_strdup(j->job_id));
      c->updates = release_updates();
      s->stats.returned++;
      run_free(r);
      continue;
    }
    if (lease_exhausted(j)) {
      char msg[200];
      snprintf(msg, sizeof msg, "its runs were cut short %d time(s) (the lease expired before "
               "the run completed: the process running it died or stopped answering)",
               (int)chr_job_int(j, CHR_F_RETRY_COUNT, 0));
      complete_run(s, r, END_LEASE, CHR_ELEASE, msg);
      run_free(r);
      continue;
    }
    bound_catch_up(s, r, now);
    heap_push(s, r);
  }
  req->njobs = 0;
  sreq_free(q);
  dispatch(s);
  flush(s);
  if (s->state != CHR_SCHED_RUNNING) {
    check_stopped(s);
    return;
  }
  if (full || s->reclaim) schedule_tick(s, 0); /* drain, or a tick came meanwhile */
  else arm_timer(s);
  s->reclaim = 0;
}

static void claim(chr_sched_t *s) {
  if (s->state != CHR_SCHED_RUNNING) return;
  if (s->claim_busy) { /* claim again when it answers: it may predate a new job */
    s->reclaim = 1;
    return;
  }
  int64_t wait = s->claim_after - chr_time_mono();
  if (s->claim_after && wait > 0) { /* backing off a failing store */
    schedule_tick(s, wait);
    return;
  }
  if (nothing_due(s)) return;
  int64_t cap = (int64_t)s->opts.max_queue_size - (int64_t)s->nheap - s->nrunning;
  if (cap <= 0) { /* backpressure: claim again when a run ends */
    s->starved = 1;
    return;
  }
  /* With queues: each queue that has free places here, as many as it
   * has; every queue full holds claims off until a run ends. */
  size_t nq = 0;
  if (s->queues.n) {
    int64_t room = 0;
    for (size_t k = 0; k < s->queues.n; k++) {
      size_t i = (s->queues.turn + k) % s->queues.n;
      int64_t free_places = queue_free(s, i);
      if (free_places <= 0) continue;
      s->queues.claim[nq] = s->queues.q[i];
      s->queues.claim[nq++].limit = free_places;
      room += free_places;
    }
    s->queues.turn = (s->queues.turn + 1) % s->queues.n;
    if (nq == 0) {
      s->starved = 1;
      return;
    }
    if (room < cap) cap = room;
  }
  sreq_t *q = sreq_new(s, CHR_OP_CLAIM, claim_cb);
  q->req.now = chr_sched_now(s);
  q->req.limit = cap;
  q->req.queues = nq ? s->queues.claim : NULL;
  q->req.nqueues = nq;
  q->req.owner = s->node_id;
  q->req.lease_us = (int64_t)(s->opts.lease_seconds * 1e6);
  q->req.lock = s->lock;
  q->req.filter = scope_of(s);
  s->claim_busy = 1;
  sreq_submit(q);
}

static void recover_cb(chr_store_req_t *req) {
  sreq_t *q = req->data;
  chr_sched_t *s = q->s;
  s->recover_busy = 0;
  if (req->status != 0) {
    op_failed(s, CHR_SOP_RECOVER, req);
  } else {
    op_ok(s, CHR_SOP_RECOVER);
    if (req->count > 0)
      chr_sched_log(s, CHR_LOG_WARN, NULL, "recovered %lld job(s) whose lease expired",
                    (long long)req->count);
  }
  sreq_free(q);
}

static void recover(chr_sched_t *s, int64_t now) {
  if (s->recover_busy) return;
  int64_t every = (int64_t)(fmin(s->opts.polling_interval, s->opts.lease_seconds / 2) * 1e6);
  if (s->health[CHR_SOP_RECOVER].fails)
    every = backoff_us(s, s->health[CHR_SOP_RECOVER].fails);
  if (s->last_recover != CHR_TIME_NONE && now - s->last_recover < every &&
      now >= s->last_recover)
    return;
  s->last_recover = now;
  sreq_t *q = sreq_new(s, CHR_OP_RECOVER, recover_cb);
  q->req.now = now;
  q->req.filter = scope_of(s);
  s->recover_busy = 1;
  sreq_submit(q);
}

/* ---- retention of completed jobs ---- */

/* Completed jobs deleted per pass at most; a full page makes the next tick
 * begin another pass, so a backlog drains a page per poll. */
#define EXPIRE_PAGE 100

/* The pause between passes: a tenth of keep_completed, from 1 s to an
 * hour, so a completed job outlives its retention by that much at most,
 * and a long retention costs one query an hour. */
static int64_t expire_every(const chr_sched_t *s) {
  double every = s->opts.keep_completed / 10;
  if (every < 1) every = 1;
  if (every > 3600) every = 3600;
  return (int64_t)(every * 1e6);
}

static void expire_next(chr_sched_t *s);

static void expire_end(chr_sched_t *s) {
  if (s->expiry.deleted)
    chr_sched_log(s, CHR_LOG_INFO, NULL, "deleted %zu completed job(s) kept longer than "
                  "keep_completed (%gs)", s->expiry.deleted, s->opts.keep_completed);
  for (size_t i = 0; i < s->expiry.n; i++) chr_job_free(s->expiry.jobs[i]);
  free(s->expiry.jobs);
  s->expiry.jobs = NULL;
  s->expiry.n = s->expiry.next = s->expiry.deleted = 0;
  s->expiry.busy = 0;
  if (s->expiry.full) s->expiry.last = CHR_TIME_NONE;
  s->expiry.full = 0;
}

/* A failed request ends the pass; the next waits for the backoff. */
static void expire_failed(chr_sched_t *s, sreq_t *q) {
  op_failed(s, CHR_SOP_EXPIRE, &q->req);
  s->expiry.full = 0;
  sreq_free(q);
  expire_end(s);
}

static void expire_delete_cb(chr_store_req_t *req) {
  sreq_t *q = req->data;
  chr_sched_t *s = q->s;
  if (req->status != 0) {
    expire_failed(s, q);
    return;
  }
  op_ok(s, CHR_SOP_EXPIRE);
  if (req->ok) {
    s->stats.expired++;
    s->expiry.deleted++;
  }
  sreq_free(q);
  expire_next(s);
}

/* The job is marked (claimed_by this node) unless it changed since the
 * query read it: then it is left alone. The mark makes the delete safe:
 * run_job_now refuses a marked job, and changes an unmarked one, which
 * the CAS then sees. */
static void expire_mark_cb(chr_store_req_t *req) {
  sreq_t *q = req->data;
  chr_sched_t *s = q->s;
  if (req->status != 0 && req->status != CHR_ENOTFOUND) {
    expire_failed(s, q);
    return;
  }
  op_ok(s, CHR_SOP_EXPIRE);
  /* Marked, it is deleted even by a scheduler stopping meanwhile: left
   * marked, its fresh updated_at would keep it another retention. */
  if (req->status != 0 || !req->ok) {
    sreq_free(q);
    expire_next(s);
    return;
  }
  sreq_t *d = sreq_new(s, CHR_OP_DELETE, expire_delete_cb);
  d->ids = q->ids;
  d->nids = q->nids;
  q->ids = NULL;
  q->nids = 0;
  d->req.id = d->ids[0];
  sreq_free(q);
  sreq_submit(d);
}

static void expire_next(chr_sched_t *s) {
  if (s->state != CHR_SCHED_RUNNING || s->expiry.next >= s->expiry.n) {
    expire_end(s);
    return;
  }
  const chr_job_t *j = s->expiry.jobs[s->expiry.next++];
  sreq_t *q = sreq_new(s, CHR_OP_CAS, expire_mark_cb);
  q->ids = chr_calloc(1, sizeof *q->ids);
  q->ids[0] = chr_strdup(j->job_id);
  q->nids = 1;
  q->expected = chr_job_new();
  chr_job_set_int(q->expected, CHR_F_STATUS, CHR_ST_COMPLETED);
  chr_job_set_time(q->expected, CHR_F_UPDATED_AT, j->updated_at);
  q->updates = chr_job_new();
  chr_job_set_str(q->updates, CHR_F_CLAIMED_BY, s->node_id);
  q->req.id = q->ids[0];
  q->req.expected = q->expected;
  q->req.job = q->updates;
  sreq_submit(q);
}

static void expire_query_cb(chr_store_req_t *req) {
  sreq_t *q = req->data;
  chr_sched_t *s = q->s;
  if (req->status != 0) {
    expire_failed(s, q);
    return;
  }
  op_ok(s, CHR_SOP_EXPIRE);
  s->expiry.full = req->njobs >= EXPIRE_PAGE;
  s->expiry.jobs = req->jobs;
  s->expiry.n = req->njobs;
  s->expiry.next = 0;
  req->jobs = NULL;
  req->njobs = 0;
  sreq_free(q);
  expire_next(s);
}

/* Deletes the completed jobs whose last write (updated_at, on the store's
 * clock) is keep_completed or more before now: a query of completed jobs
 * (a status most stores index) at most every expire_every, then one job
 * at a time, so the pass never holds many requests. Off when
 * keep_completed is 0. */
static void expire_completed(chr_sched_t *s, int64_t now) {
  if (s->opts.keep_completed <= 0 || s->expiry.busy) return;
  int64_t every = expire_every(s);
  int fails = s->health[CHR_SOP_EXPIRE].fails;
  if (fails && backoff_us(s, fails) > every) every = backoff_us(s, fails);
  if (s->expiry.last != CHR_TIME_NONE && now - s->expiry.last < every && now >= s->expiry.last)
    return;
  s->expiry.last = now;
  sreq_t *q = sreq_new(s, CHR_OP_QUERY, expire_query_cb);
  q->filter = chr_calloc(1, sizeof *q->filter);
  chr_filter_init(q->filter);
  q->filter->status_mask = 1u << CHR_ST_COMPLETED;
  q->filter->upd_lte = now - (int64_t)(s->opts.keep_completed * 1e6);
  chr_filter_add_scope(q->filter, scope_of(s)); /* a tenant's scheduler keeps to its jobs */
  q->req.filter = q->filter;
  q->req.limit = EXPIRE_PAGE;
  s->expiry.busy = 1;
  sreq_submit(q);
}

void chr_sched_tick(chr_sched_t *s) {
  if (s->state != CHR_SCHED_RUNNING) return;
  recover(s, chr_sched_now(s));
  expire_completed(s, chr_sched_now(s));
  claim(s);
}

/* ---- completions ---- */

/* A failed batch goes back to the front of the pending list, to be
 * written again after a backoff: a completion that is dropped leaves its
 * job running until its lease expires, and then it runs again. Only a
 * stop whose grace period is over gives up on them. */
static void flush_failed(chr_sched_t *s, sreq_t *q) {
  int n = op_failed(s, CHR_SOP_COMPLETE, &q->req);
  if (s->state == CHR_SCHED_STOPPED || s->closed ||
      (s->state == CHR_SCHED_STOPPING && s->grace_over)) {
    chr_sched_log(s, CHR_LOG_ERROR, NULL, "stopping: %zu completion(s) could not be written; "
                  "those jobs run again once their leases expire", q->nitems);
    s->stats.unwritten += q->nitems;
    return;
  }
  size_t need = s->npend + q->nitems;
  if (need > s->pendcap) {
    s->pendcap = need;
    s->pend = chr_realloc(s->pend, s->pendcap * sizeof *s->pend);
  }
  memmove(s->pend + q->nitems, s->pend, s->npend * sizeof *s->pend);
  memcpy(s->pend, q->items, q->nitems * sizeof *s->pend);
  s->npend = need;
  free(q->items);
  q->items = NULL;
  q->nitems = 0;
  int64_t d = backoff_us(s, n);
  s->flush_after = chr_time_mono() + d;
  if (s->flush_timer) uv_timer_start(s->flush_timer, flush_timer_cb, (uint64_t)(d / 1000) + 1, 0);
}

/* A claim just gave this node jobs again: any completion of one of them
 * still waiting here (one that failed to write and waits for its retry)
 * belongs to an earlier claim whose lease expired and was recovered.
 * Written now, it would pass the owner check of the new claim (the owner
 * is the same node) and end that claim's run while it runs: the job would
 * be claimed again at the next slot with this run still going, and every
 * later slot would run twice. It is dropped, as the store would refuse it.
 * One pass over the pending completions per claim, against a hash set of
 * the claimed ids: with thousands of runs ending between flushes, a scan
 * per claimed job made each claim quadratic. */
static uint32_t id_hash(const char *s) {
  uint32_t h = 2166136261u; /* FNV-1a */
  while (*s) h = (h ^ (unsigned char)*s++) * 16777619u;
  return h;
}

static void drop_stale_completions(chr_sched_t *s, chr_job_t *const *jobs, size_t n) {
  size_t cap = 16;
  while (cap < 2 * n) cap *= 2;
  const char **set = chr_calloc(cap, sizeof *set);
  for (size_t i = 0; i < n; i++) {
    size_t k = id_hash(jobs[i]->job_id) & (cap - 1);
    while (set[k]) k = (k + 1) & (cap - 1);
    set[k] = jobs[i]->job_id;
  }
  size_t kept = 0;
  for (size_t i = 0; i < s->npend; i++) {
    chr_completion_t *c = &s->pend[i];
    size_t k = id_hash(c->job_id) & (cap - 1);
    while (set[k] && strcmp(set[k], c->job_id) != 0) k = (k + 1) & (cap - 1);
    if (set[k]) {
      chr_sched_log(s, CHR_LOG_WARN, c->job_id, "completion not applied (%s): its lease expired and the "
                    "job was recovered (it may run again, or already has)", chr_strerror(CHR_ECONFLICT));
      free(c->job_id);
      chr_job_free(c->updates);
      chr_runrec_free(c->run);
      continue;
    }
    s->pend[kept++] = *c;
  }
  s->npend = kept;
  free(set);
}

static void flush_cb(chr_store_req_t *req) {
  sreq_t *q = req->data;
  chr_sched_t *s = q->s;
  s->flush_busy = 0;
  if (req->status != 0) {
    flush_failed(s, q);
    sreq_free(q);
    check_stopped(s);
    return;
  }
  op_ok(s, CHR_SOP_COMPLETE);
  s->flush_after = 0;
  /* The next runs this node just wrote are wake-up hints of its own: a
   * store that cannot tell us (no local timer, no pub/sub echo) would
   * otherwise leave them to the next poll. */
  int64_t earliest = CHR_TIME_NONE;
  for (size_t i = 0; i < q->nitems; i++) {
    chr_completion_t *c = &q->items[i];
    if (c->result != 0) {
      chr_sched_log(s, CHR_LOG_WARN, c->job_id, "completion not applied (%s): %s",
                    chr_strerror(c->result),
                    c->result == CHR_ENOTFOUND ? "the job no longer exists in the store"
                    : c->result == CHR_ECONFLICT ? "its lease expired and the job was recovered "
                                                   "(it may run again, or already has)"
                                                 : "the store refused it");
    } else if (!c->remove && c->updates && chr_job_has(c->updates, CHR_F_NEXT_RUN_TIME) &&
               c->updates->status == CHR_ST_SCHEDULED) {
      int64_t t = c->updates->next_run_time;
      if (!(s->store->caps & CHR_STORE_CAP_LOCAL)) hint_push(s, t);
      if (earliest == CHR_TIME_NONE || t < earliest) earliest = t;
    }
  }
  if (earliest != CHR_TIME_NONE) wake_cb(s, earliest, NULL);
  sreq_free(q);
  if (s->npend) flush(s);
  check_stopped(s);
}

static void flush(chr_sched_t *s) {
  if (s->flush_busy || s->npend == 0) return;
  int64_t wait = s->flush_after - chr_time_mono();
  if (s->flush_after && wait > 0 && !(s->state == CHR_SCHED_STOPPING && s->grace_over)) {
    if (s->flush_timer && !uv_is_active((uv_handle_t *)s->flush_timer))
      uv_timer_start(s->flush_timer, flush_timer_cb, (uint64_t)(wait / 1000) + 1, 0);
    return;
  }
  sreq_t *q = sreq_new(s, CHR_OP_COMPLETE, flush_cb);
  q->items = s->pend;
  q->nitems = s->npend;
  s->pend = NULL;
  s->npend = s->pendcap = 0;
  q->req.items = q->items;
  q->req.nitems = q->nitems;
  s->flush_busy = 1;
  sreq_submit(q);
}

static void flush_timer_cb(uv_timer_t *t) {
  flush(t->data);
}

/* Batches completions that arrive in the same loop iteration. */
static void flush_soon(chr_sched_t *s) {
  if (s->npend == 0 || s->flush_timer == NULL || uv_is_active((uv_handle_t *)s->flush_timer))
    return;
  uv_timer_start(s->flush_timer, flush_timer_cb, 0, 0);
}

/* ---- next-run hints ---- */

#define MAX_HINTS 65536

static void hint_push(chr_sched_t *s, int64_t t) {
  if (s->nhints >= MAX_HINTS) return; /* polling covers the rest */
  if (s->nhints == s->hintcap) {
    s->hintcap = s->hintcap ? s->hintcap * 2 : 64;
    s->hints = chr_realloc(s->hints, s->hintcap * sizeof *s->hints);
  }
  size_t i = s->nhints++;
  while (i > 0 && s->hints[(i - 1) / 2] > t) {
    s->hints[i] = s->hints[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  s->hints[i] = t;
}

static void hint_pop(chr_sched_t *s) {
  int64_t last = s->hints[--s->nhints];
  size_t i = 0, n = s->nhints;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && s->hints[c + 1] < s->hints[c]) c++;
    if (s->hints[c] >= last) break;
    s->hints[i] = s->hints[c];
    i = c;
  }
  if (n) s->hints[i] = last;
}

/* The earliest hint a claim has not covered yet, dropping the others. A
 * hint is covered once a claim looked at a time at or after it: one that
 * fell due while a claim was in flight (or a timer fired a little early)
 * stays, and the next tick comes at once. */
static int64_t hint_next(chr_sched_t *s) {
  while (s->nhints && s->claimed_at != CHR_TIME_NONE && s->hints[0] <= s->claimed_at) hint_pop(s);
  return s->nhints ? s->hints[0] : CHR_TIME_NONE;
}

/* ---- timers ---- */

static void poll_cb(uv_timer_t *t) {
  chr_sched_t *s = t->data;
  s->armed_at = CHR_TIME_NONE;
  chr_sched_tick(s);
}

/* Arms the poll timer delay_us from now; never before the end of a claim
 * backoff, whatever asked (a store hint, a drain, a freed worker). */
static void schedule_tick(chr_sched_t *s, int64_t delay_us) {
  if (s->state != CHR_SCHED_RUNNING || s->poll_timer == NULL) return;
  if (s->claim_after) {
    int64_t wait = s->claim_after - chr_time_mono();
    if (wait > delay_us) delay_us = wait;
  }
  /* libuv counts whole milliseconds from a truncated loop time, so a
   * timer may fire up to 1 ms before the exact delay: one more keeps a
   * tick aimed at a due time from claiming a moment too soon. */
  uint64_t ms = delay_us <= 0 ? 0 : (uint64_t)((delay_us + 999) / 1000) + 1;
  s->armed_at = chr_time_now() + (int64_t)ms * 1000;
  uv_update_time(chr_loop());
  uv_timer_start(s->poll_timer, poll_cb, ms, 0);
}

/* Arms the poll timer delay_us from now unless a sooner tick is armed
 * already. An answer or hint may predate what armed that tick (a job
 * created meanwhile): it may bring the tick forward, never push it back. */
static void tick_within(chr_sched_t *s, int64_t delay_us) {
  if (s->armed_at != CHR_TIME_NONE && uv_is_active((uv_handle_t *)s->poll_timer) &&
      s->armed_at <= chr_time_now() + delay_us)
    return;
  schedule_tick(s, delay_us);
}

static void due_cb(chr_store_req_t *req) {
  sreq_t *q = req->data;
  chr_sched_t *s = q->s;
  s->due_busy = 0;
  int64_t poll = (int64_t)(s->opts.polling_interval * 1e6);
  int64_t delay = poll, now = chr_sched_now(s), hint = hint_next(s);
  if (req->status != 0) {
    op_failed(s, CHR_SOP_NEXT_DUE, req);
    s->due_valid = 0; /* claim at every poll until it answers again */
  } else {
    op_ok(s, CHR_SOP_NEXT_DUE);
    s->due_known = chr_time_earlier(req->count, s->due_heard);
    s->due_read = chr_time_mono();
    s->due_valid = 1;
    if (req->count != CHR_TIME_NONE) {
      int64_t d = req->count - now;
      if (d < delay) delay = d < 0 ? 0 : d;
    }
  }
  if (hint != CHR_TIME_NONE && hint - now < delay) delay = hint - now;
  /* A job that looks due but that the last claims did not get (another
   * node holds it, or it does not match this scheduler): wait a little,
   * more each time, instead of asking again at once. Only a job due by
   * the time the last claim looked at counts: one that fell due since
   * (while the claim was in flight, with jobs due every few ms) is
   * claimed at once, else each empty claim would cost the next jobs 10 ms
   * or more of lateness. */
  int64_t stuck = req->status == 0 ? req->count : CHR_TIME_NONE;
  if (delay <= 0 && s->empty_claims > 0 && stuck != CHR_TIME_NONE &&
      s->claimed_at != CHR_TIME_NONE && stuck <= s->claimed_at) {
    int64_t d = 10000;
    for (int i = 1; i < s->empty_claims && d < poll; i++) d *= 2;
    delay = d < poll ? d : poll;
  }
  sreq_free(q);
  if (s->state == CHR_SCHED_RUNNING && !s->claim_busy) tick_within(s, delay);
}

/* Arms the poll timer: the poll interval, or sooner for local stores when
 * a job is due earlier. */
static void arm_timer(chr_sched_t *s) {
  if (s->state != CHR_SCHED_RUNNING) return;
  /* Every store that can tell its next due time is asked after each poll
   * that did not drain (one round trip for networked ones); the others
   * rely on the hints of this node's own completions. */
  if (!(s->store->caps & (CHR_STORE_CAP_LOCAL | CHR_STORE_CAP_NEXT_DUE))) {
    int64_t poll = (int64_t)(s->opts.polling_interval * 1e6);
    int64_t now = chr_sched_now(s), next = hint_next(s);
    if (next != CHR_TIME_NONE && next - now < poll) poll = next - now;
    tick_within(s, poll);
    return;
  }
  /* The poll interval first: a store that is slow to answer (or down)
   * must not leave the engine without a timer. */
  tick_within(s, (int64_t)(s->opts.polling_interval * 1e6));
  if (s->due_busy) return;
  sreq_t *q = sreq_new(s, CHR_OP_NEXT_DUE, due_cb);
  q->req.filter = scope_of(s);
  s->due_busy = 1;
  s->due_heard = CHR_TIME_NONE;
  sreq_submit(q);
}

/* Stores whose hints cover every write, and that can say their next due
 * time: a poll trusts what they said and skips its claim while nothing
 * can be due. */
static int hinted(const chr_sched_t *s) {
  unsigned both = CHR_STORE_CAP_HINTS | CHR_STORE_CAP_NEXT_DUE;
  return (s->store->caps & both) == both && !(s->store->caps & CHR_STORE_CAP_LOCAL);
}

/* How long a next_due_time answer is trusted: a write the store did not
 * announce (made around chronis, or a hint lost on its way) is found by
 * the next read, so it starts at most this late. Ten polls, within
 * [polling_interval, 60 s]. */
static int64_t recheck_us(const chr_sched_t *s) {
  double poll = s->opts.polling_interval, every = 10 * poll;
  if (every > 60) every = 60;
  if (every < poll) every = poll;
  return (int64_t)(every * 1e6);
}

/* A poll on a hinted store while nothing of this scheduler can be due
 * yet: no claim (no round trip); the timer is armed for the earliest
 * known time or the next poll. Once the last next_due_time is older than
 * recheck_us, it is read again instead (its answer arms the timer). */
static int nothing_due(chr_sched_t *s) {
  if (!hinted(s) || !s->due_valid || s->reclaim) return 0;
  int64_t now = chr_sched_now(s), poll = (int64_t)(s->opts.polling_interval * 1e6);
  if (s->due_known != CHR_TIME_NONE && s->due_known <= now) return 0;
  if (chr_time_mono() - s->due_read >= recheck_us(s)) {
    arm_timer(s);
    return 1;
  }
  if (s->due_known != CHR_TIME_NONE && s->due_known - now < poll) poll = s->due_known - now;
  tick_within(s, poll);
  return 1;
}

/* Store hint: a job may be due before the armed timer. */
static void wake_cb(void *data, int64_t when, const chr_job_t *job) {
  chr_sched_t *s = data;
  if (s->state != CHR_SCHED_RUNNING || when == CHR_TIME_NONE) return;
  if (job != NULL && s->scoped && !chr_filter_match(&s->scope, job)) return; /* another's */
  if (job != NULL && s->queues.n) { /* a queue this scheduler does not serve: another's */
    size_t i = 0;
    while (i < s->queues.n && !chr_job_queue_is(job, s->queues.q[i].name)) i++;
    if (i == s->queues.n) return;
  }
  /* Kept as a hint too where the store cannot say its next due time: a
   * timer that fires a little early then re-arms for it, not for a poll. */
  if (!(s->store->caps & (CHR_STORE_CAP_LOCAL | CHR_STORE_CAP_NEXT_DUE))) hint_push(s, when);
  /* What a poll trusts (nothing_due); an answer in flight may predate it. */
  s->due_known = chr_time_earlier(s->due_known, when);
  if (s->due_busy) s->due_heard = chr_time_earlier(s->due_heard, when);
  /* `when` is on the scheduler's clock (which a test may set), armed_at
   * on the wall clock: tick_within compares delays. */
  tick_within(s, when - chr_sched_now(s));
}

static void extend_cb(chr_store_req_t *req) {
  sreq_t *q = req->data;
  chr_sched_t *s = q->s;
  s->extend_busy = 0;
  if (req->status != 0) op_failed(s, CHR_SOP_EXTEND, req);
  else op_ok(s, CHR_SOP_EXTEND);
  sreq_free(q);
}

/* Heartbeat: extends the leases of every job this node holds, including
 * completions not written yet (a failing store must not cost them their
 * lease while they wait to be written). */
static void lease_cb(uv_timer_t *t) {
  chr_sched_t *s = t->data;
  size_t n = s->nheap + (size_t)s->nrunning + s->npend;
  if (n == 0 || s->extend_busy) return;
  sreq_t *q = sreq_new(s, CHR_OP_EXTEND, extend_cb);
  q->ids = chr_malloc(n * sizeof *q->ids);
  for (size_t i = 0; i < s->nheap; i++) q->ids[q->nids++] = chr_strdup(s->heap[i].run->job->job_id);
  for (chr_run_t *r = s->running; r; r = r->next) q->ids[q->nids++] = chr_strdup(r->job->job_id);
  for (size_t i = 0; i < s->npend; i++) q->ids[q->nids++] = chr_strdup(s->pend[i].job_id);
  q->req.ids = q->ids;
  q->req.nids = q->nids;
  q->req.owner = s->node_id;
  q->req.now = chr_sched_now(s);
  q->req.lease_us = (int64_t)(s->opts.lease_seconds * 1e6);
  s->extend_busy = 1;
  sreq_submit(q);
}

/* ---- lifecycle ---- */

static void make_node_id(char *out, size_t n) {
  static unsigned counter;
  uint64_t x = (uint64_t)chr_time_now() ^ ((uint64_t)chr_time_mono() << 21) ^
               (uint64_t)uv_os_getpid() << 40 ^ ++counter;
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  char host[32] = "node";
  size_t hl = sizeof host;
  if (uv_os_gethostname(host, &hl) != 0) strcpy(host, "node");
  host[16] = '\0';
  snprintf(out, n, "%s-%d-%08x", host, (int)uv_os_getpid(), (unsigned)x);
}

chr_sched_t *chr_sched_new(chr_store_t *store, chr_lock_t *lock, const chr_sched_opts_t *opts,
                           const chr_sched_hooks_t *hooks, void *host) {
  chr_sched_t *s = chr_calloc(1, sizeof *s);
  s->store = store;
  chr_store_retain(store);
  if (lock) {
    s->lock = lock;
    chr_lock_retain(lock);
  }
  s->opts = *opts;
  if (s->opts.max_catch_up <= 0) s->opts.max_catch_up = 100;
  chr_filter_copy(&s->scope, opts->scope);
  s->scoped = !chr_filter_is_empty(&s->scope);
  s->opts.scope = &s->scope;
  if (opts->nqueues) {
    size_t n = opts->nqueues;
    s->queues.n = n;
    s->queues.q = chr_malloc(n * sizeof *s->queues.q);
    s->queues.claim = chr_malloc(n * sizeof *s->queues.claim);
    s->queues.held = chr_calloc(n, sizeof *s->queues.held);
    s->queues.running = chr_calloc(n, sizeof *s->queues.running);
    for (size_t i = 0; i < n; i++) {
      s->queues.q[i] = opts->queues[i];
      s->queues.q[i].name = chr_strdup(opts->queues[i].name);
    }
  }
  s->opts.queues = s->queues.q;
  s->opts.nqueues = s->queues.n;
  s->hooks = hooks;
  s->host = host;
  s->armed_at = s->last_recover = s->claimed_at = s->expiry.last = CHR_TIME_NONE;
  s->due_known = s->due_heard = CHR_TIME_NONE;
  make_node_id(s->node_id, sizeof s->node_id);
  s->refs = 1; /* the owner's, dropped by chr_sched_close */
  s->watch.cb = wake_cb;
  s->watch.data = s;
  s->metrics = chr_msched_new();
  return s;
}

int chr_sched_check_queues(const chr_sched_t *s, char *err, size_t errlen) {
  return chr_store_check_queues(s->store, s->queues.q, s->queues.n, err, errlen);
}

int chr_sched_start(chr_sched_t *s) {
  if (s->state == CHR_SCHED_RUNNING) return 0;
  if (s->state == CHR_SCHED_STOPPING) return CHR_ESTATE;
  char err[256];
  int rc = chr_sched_check_queues(s, err, sizeof err);
  if (rc != 0) return rc;
  s->state = CHR_SCHED_RUNNING;
  s->grace_over = 0;
  s->claim_after = s->flush_after = 0;
  s->due_valid = 0; /* hints were not heard while stopped */
  s->poll_timer = timer_new(s);
  s->lease_timer = timer_new(s);
  s->flush_timer = timer_new(s);
  uint64_t beat = (uint64_t)(s->opts.lease_seconds * 1000 / 3);
  uv_timer_start(s->lease_timer, lease_cb, beat ? beat : 1, beat ? beat : 1);
  chr_store_watch(s->store, &s->watch);
  s->next_live = live_list;
  live_list = s;
  /* Names the store actually used: an app may give each scheduler its own. */
  if (s->store->url)
    chr_sched_log(s, CHR_LOG_INFO, NULL, "scheduler %s on %s (%d workers)", s->node_id,
                  s->store->url, s->opts.max_workers);
  else
    chr_sched_log(s, CHR_LOG_INFO, NULL, "scheduler %s on a %s store (%d workers)", s->node_id,
                  s->store->vt->kind, s->opts.max_workers);
  schedule_tick(s, 0);
  /* Submitted now, it is answered before the first claim's completions
   * are written, which it would otherwise hold up on a serial store. */
  reboot_scan(s);
  return 0;
}

/* ---- @reboot ---- */

/* At most this many pending cron jobs are looked at per start. */
#define REBOOT_SCAN_LIMIT 10000

static void reboot_cas_cb(chr_store_req_t *req) {
  sreq_t *q = req->data;
  chr_sched_t *s = q->s;
  if (req->status != 0)
    chr_sched_log(s, CHR_LOG_ERROR, q->ids[0], "cannot schedule the @reboot run: %s",
                  req->errmsg ? req->errmsg : chr_strerror(req->status));
  else if (req->ok && s->state == CHR_SCHED_RUNNING)
    schedule_tick(s, 0);
  sreq_free(q);
}

/* Makes one @reboot job due now, unless another start did so first: the
 * CAS expects it pending, so schedulers starting together run it once. */
static void reboot_arm(chr_sched_t *s, const chr_job_t *j, int64_t now) {
  sreq_t *q = sreq_new(s, CHR_OP_CAS, reboot_cas_cb);
  q->ids = chr_calloc(1, sizeof *q->ids);
  q->ids[0] = chr_strdup(j->job_id);
  q->nids = 1;
  q->expected = chr_job_new();
  chr_job_set_int(q->expected, CHR_F_STATUS, CHR_ST_PENDING);
  q->updates = chr_job_new();
  chr_job_set_int(q->updates, CHR_F_STATUS, CHR_ST_SCHEDULED);
  chr_job_set_time(q->updates, CHR_F_NEXT_RUN_TIME, now);
  q->req.id = q->ids[0];
  q->req.expected = q->expected;
  q->req.job = q->updates;
  sreq_submit(q);
}

static void reboot_query_cb(chr_store_req_t *req) {
  sreq_t *q = req->data;
  chr_sched_t *s = q->s;
  char err[256];
  if (req->status != 0) {
    chr_sched_log(s, CHR_LOG_ERROR, NULL, "cannot look for @reboot jobs: %s",
                  req->errmsg ? req->errmsg : chr_strerror(req->status));
  } else {
    int64_t now = chr_sched_now(s);
    for (size_t i = 0; i < req->njobs; i++) {
      const chr_job_t *j = req->jobs[i];
      const chr_trigger_t *t = trigger_of(s, j, err, sizeof err);
      if (t && t->cron && chr_cron_reboot(t->cron)) reboot_arm(s, j, now);
    }
    if (req->njobs >= REBOOT_SCAN_LIMIT)
      chr_sched_log(s, CHR_LOG_WARN, NULL, "more than %d pending cron jobs: @reboot jobs past "
                    "them do not run at this start", REBOOT_SCAN_LIMIT);
  }
  sreq_free(q);
}

/* @reboot jobs wait pending, with no next run; each start makes them due.
 * Only pending cron jobs are read: with few of them, the scan is cheap. */
static void reboot_scan(chr_sched_t *s) {
  sreq_t *q = sreq_new(s, CHR_OP_QUERY, reboot_query_cb);
  q->filter = chr_calloc(1, sizeof *q->filter);
  chr_filter_init(q->filter);
  q->filter->status_mask = 1u << CHR_ST_PENDING;
  q->filter->trigger_type = CHR_TT_CRON;
  chr_filter_add_scope(q->filter, scope_of(s));
  q->req.filter = q->filter;
  q->req.limit = REBOOT_SCAN_LIMIT;
  sreq_submit(q);
}

/* Stops claiming and hands back the claimed jobs that have not started. */
static void begin_stop(chr_sched_t *s) {
  s->state = CHR_SCHED_STOPPING;
  s->stop_base = s->stats;
  chr_store_unwatch(s->store, &s->watch);
  live_remove(s);
  if (s->poll_timer) uv_timer_stop(s->poll_timer);
  s->armed_at = CHR_TIME_NONE;
  while (s->nheap) {
    chr_run_t *r = heap_pop(s);
    chr_completion_t *c = pend_add(s, chr_strdup(r->job->job_id));
    c->updates = release_updates();
    s->stats.returned++;
    run_free(r);
  }
  flush(s);
}

/* The running handlers as "job (handler), ...", for the stop's log lines:
 * which runs a stop waits for, and which it stopped. */
static void running_list(const chr_sched_t *s, chr_buf_t *b) {
  int n = 0;
  for (const chr_run_t *r = s->running; r; r = r->next) {
    if (++n > 20) {
      chr_buf_printf(b, ", and %d more", s->nrunning - 20);
      break;
    }
    chr_buf_printf(b, "%s%s (%s)", n > 1 ? ", " : "", r->job->job_id,
                   r->job->func_name ? r->job->func_name : "?");
  }
}

/* Ends handlers still running; their jobs go back to the pool (the run
 * did not complete, so it will run again). */
static void kill_running(chr_sched_t *s) {
  for (chr_run_t *r = s->running, *next; r; r = next) {
    next = r->next;
    if (r->active && r->stop_why != CHR_STOP_SHUTDOWN) {
      r->stop_why = CHR_STOP_SHUTDOWN;
      s->stats.killed++;
      s->hooks->stop_run(s->host, r, CHR_STOP_SHUTDOWN);
    }
  }
}

static void grace_cb(uv_timer_t *t) {
  chr_sched_t *s = t->data;
  s->grace_over = 1;
  if (s->nrunning) {
    chr_buf_t b;
    chr_buf_init(&b);
    running_list(s, &b);
    chr_sched_log(s, CHR_LOG_WARN, NULL, "shutdown grace period over: stopping %d running "
                  "handler(s): %s; their jobs go back to scheduled", s->nrunning, b.p);
    chr_buf_free(&b);
  }
  sched_ref(s);
  kill_running(s);
  check_stopped(s);
  sched_unref(s);
}

static int idle(const chr_sched_t *s) {
  return s->nrunning == 0 && s->npend == 0 && !s->flush_busy && !s->claim_busy;
}

static void finish_stop(chr_sched_t *s) {
  timer_close(&s->poll_timer);
  timer_close(&s->lease_timer);
  timer_close(&s->flush_timer);
  timer_close(&s->grace_timer);
  s->state = CHR_SCHED_STOPPED;
  chr_sched_stats_t d = chr_sched_stop_stats(s);
  if (d.killed || d.returned || d.unwritten || d.succeeded + d.failed + d.retried)
    chr_sched_log(s, CHR_LOG_INFO, NULL, "scheduler %s stopped: %llu run(s) finished while "
                  "stopping, %llu stopped, %llu claimed job(s) handed back%s", s->node_id,
                  (unsigned long long)(d.succeeded + d.failed + d.retried),
                  (unsigned long long)d.killed, (unsigned long long)d.returned,
                  d.unwritten ? "; some completions could not be written" : "");
  else
    chr_sched_log(s, CHR_LOG_DEBUG, NULL, "scheduler %s stopped", s->node_id);
  if (s->hooks->stopped) s->hooks->stopped(s->host);
}

static void check_stopped(chr_sched_t *s) {
  if (s->state != CHR_SCHED_STOPPING) return;
  if (s->npend && !s->flush_busy) flush(s);
  if (idle(s)) finish_stop(s);
}

void chr_sched_stop(chr_sched_t *s, double grace) {
  if (s->state == CHR_SCHED_STOPPED) return;
  if (grace < 0) grace = 0;
  uint64_t ms = (uint64_t)(grace * 1000 + 0.5);
  if (s->state == CHR_SCHED_RUNNING) {
    begin_stop(s);
    s->grace_timer = timer_new(s);
    if (s->nrunning) {
      chr_buf_t b;
      chr_buf_init(&b);
      running_list(s, &b);
      chr_sched_log(s, CHR_LOG_INFO, NULL, "stopping: waiting up to %gs for %d running "
                    "handler(s): %s", grace, s->nrunning, b.p);
      chr_buf_free(&b);
    }
  } else if (s->grace_over || (s->grace_timer && uv_timer_get_due_in(s->grace_timer) <= ms)) {
    return; /* already stopping, at least as soon */
  }
  if (s->grace_timer) uv_timer_start(s->grace_timer, grace_cb, ms, 0);
  sched_ref(s);
  check_stopped(s);
  sched_unref(s);
}

void chr_sched_close(chr_sched_t *s) {
  if (s->closed) return;
  sched_ref(s);
  if (s->state == CHR_SCHED_RUNNING) begin_stop(s);
  if (s->state == CHR_SCHED_STOPPING) {
    s->grace_over = 1;
    kill_running(s);
    finish_stop(s);
  }
  chr_store_unwatch(s->store, &s->watch);
  live_remove(s);
  s->closed = 1;
  sched_unref(s);
  sched_unref(s);
}

/* ---- accessors ---- */

int chr_sched_state(const chr_sched_t *s) {
  return s->state;
}

const char *chr_sched_node_id(const chr_sched_t *s) {
  return s->node_id;
}

int chr_sched_set_node_id(chr_sched_t *s, const char *id) {
  size_t n = strlen(id);
  if (n == 0 || n >= sizeof s->node_id) return CHR_EINVAL;
  memcpy(s->node_id, id, n + 1);
  return 0;
}

const chr_sched_opts_t *chr_sched_opts(const chr_sched_t *s) {
  return &s->opts;
}

chr_store_t *chr_sched_store(const chr_sched_t *s) {
  return s->store;
}

void *chr_sched_host(const chr_sched_t *s) {
  return s->host;
}

const chr_sched_stats_t *chr_sched_stats(const chr_sched_t *s) {
  return &s->stats;
}

chr_sched_stats_t chr_sched_stop_stats(const chr_sched_t *s) {
  chr_sched_stats_t d = s->stats;
  const chr_sched_stats_t *b = &s->stop_base;
  d.claimed -= b->claimed;
  d.succeeded -= b->succeeded;
  d.failed -= b->failed;
  d.retried -= b->retried;
  d.skipped -= b->skipped;
  d.returned -= b->returned;
  d.killed -= b->killed;
  d.store_errors -= b->store_errors;
  d.unwritten -= b->unwritten;
  d.expired -= b->expired;
  return d;
}

void chr_sched_queue_counts(const chr_sched_t *s, size_t i, int *held, int *running) {
  *held = i < s->queues.n ? s->queues.held[i] : 0;
  *running = i < s->queues.n ? s->queues.running[i] : 0;
}

size_t chr_sched_queued(const chr_sched_t *s) {
  return s->nheap;
}

int chr_sched_running(const chr_sched_t *s) {
  return s->nrunning;
}

size_t chr_sched_pending_completions(const chr_sched_t *s) {
  return s->npend;
}

int64_t chr_sched_claim_backoff(const chr_sched_t *s) {
  int64_t wait = s->claim_after - chr_time_mono();
  return s->claim_after && wait > 0 ? wait : 0;
}

const chr_msched_t *chr_sched_metrics(const chr_sched_t *s) {
  return s->metrics;
}

chr_run_t *chr_sched_first_run(const chr_sched_t *s) {
  return s->running;
}

chr_run_t *chr_run_next(const chr_run_t *r) {
  return r->next;
}

chr_run_t *chr_sched_find_run(const chr_sched_t *s, const void *data) {
  for (chr_run_t *r = s->running; r; r = r->next)
    if (r->data == data && data != NULL) return r;
  return NULL;
}

const chr_job_t *chr_run_job(const chr_run_t *r) {
  return r->job;
}

chr_sched_t *chr_run_sched(const chr_run_t *r) {
  return r->s;
}

int64_t chr_run_scheduled(const chr_run_t *r) {
  return r->scheduled;
}

double chr_run_timeout(const chr_run_t *r) {
  return r->timeout;
}

void chr_run_set_data(chr_run_t *r, void *data) {
  r->data = data;
}

void *chr_run_data(const chr_run_t *r) {
  return r->data;
}
