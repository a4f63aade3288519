/* store.h - the storage adapter contract (docs/design.md) in C: the table
 * of its operations (CHR_STORE_OPS), one request type for every operation,
 * checked by chr_store_submit and then submitted to an adapter's vtable and
 * answered through its callback exactly once (or refused by a non-zero
 * return, and then never called back). The rules a request follows, filters
 * and their matching, and the orders of results live here too, so every
 * adapter shares one definition of each. */
#ifndef CHR_STORE_H
#define CHR_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "filter.h"
#include "history.h"
#include "job.h"
#include "lock.h"
#include "url.h"

typedef struct chr_store chr_store_t;
typedef struct chr_store_req chr_store_req_t;
typedef void (*chr_store_cb)(chr_store_req_t *req);

/* What a request carries (chr_store_op_desc_t.in): chr_store_submit checks
 * and normalises it, once, before any adapter sees the request, so that an
 * adapter implements storage, not rules. A request refused here is
 * answered `invalid` through its callback; one with nothing to do (an
 * empty list, a limit of 0) is answered at once with an empty result. */
enum {
  CHR_IN_ID = 1,         /* id: required */
  CHR_IN_RECORD = 2,     /* job: a whole record, with job_id and a status
                            (chr_store_record_check) */
  CHR_IN_UPDATES = 4,    /* job: a partial record (NULL: none) that keeps
                            job_id and status (chr_store_updates_check) */
  CHR_IN_EXPECTED = 8,   /* expected: a partial record (NULL: any job) */
  CHR_IN_IDS = 16,       /* ids, nids: none answers at once */
  CHR_IN_FILTER = 32,    /* filter (NULL: all); an empty job_id_in answers
                            at once */
  CHR_IN_LIMIT = 64,     /* limit: < 0 is none; 0 answers at once */
  CHR_IN_OFFSET = 128,   /* offset: < 0 is 0 */
  CHR_IN_OWNER = 256,    /* owner: required */
  CHR_IN_NOW = 512,      /* now: CHR_TIME_NONE is the time of submission */
  CHR_IN_LEASE = 1024,   /* lease_us: < 0 is 0 */
  CHR_IN_ITEMS = 2048,   /* items: each with job_id, owner and updates that
                            pass chr_store_updates_check; none answers at
                            once */
  CHR_IN_RUNS = 4096,    /* runs, nruns: run records; none answers at once */
  CHR_IN_RUN_FILTER = 8192, /* run_filter (NULL: all); an empty job_id_in
                               answers at once */
  /* filter: the scope of a claim, a recovery or a next due time (a
   * tenant-scoped scheduler's): metadata conditions and the store's own
   * keys only; one without conditions becomes NULL (every job). */
  CHR_IN_SCOPE = 16384,
  /* creates, ncreates: whole records (chr_store_record_check), all checked
   * before any is written; none answers at once */
  CHR_IN_CREATES = 32768
};

enum {
  CHR_STORE_CAP_CLAIM = 1,    /* claim_due_jobs in one round trip */
  CHR_STORE_CAP_COMPLETE = 2, /* complete_jobs in one round trip */
  CHR_STORE_CAP_RECOVER = 4,  /* recover_expired_leases */
  CHR_STORE_CAP_EXTEND = 8,   /* extend_leases */
  CHR_STORE_CAP_BATCH = 16,   /* get_jobs_batch */
  CHR_STORE_CAP_COUNT = 32,   /* count_jobs (else query + #) */
  CHR_STORE_CAP_NEXT_DUE = 64,/* next_due_time */
  CHR_STORE_CAP_LOCAL = 128,  /* in-process store: the engine arms a timer
                                 at the earliest next_run_time */
  /* Run history (history.h): record_runs and query_runs, and the run
   * attached to a completion item is written with it, in the same step.
   * Without it runs are not kept (record_runs keeps none) and query_runs
   * is `unsupported`: history is data, it cannot be emulated. */
  CHR_STORE_CAP_HISTORY = 256,
  /* claim_due_jobs, recover_expired_leases and next_due_time apply their
   * scope (req->filter) themselves. Without it, a scoped request is
   * emulated (store_fallback.c) over query_jobs and CAS, which apply it. */
  CHR_STORE_CAP_SCOPE = 512,
  /* claim_due_jobs applies req->queues itself, including their global
   * concurrency and rate limits, atomically with the claim (across every
   * process on the store). Without it, queue selection and the per-queue
   * limits of one claim are emulated (store_fallback.c); a claim that asks
   * for a global or rate limit is refused CHR_ENOTSUP, naming the queue. */
  CHR_STORE_CAP_QUEUES = 1024,
  /* create_jobs: a batch of records in one statement, script or pipeline.
   * Without it the emulation creates them one by one. */
  CHR_STORE_CAP_CREATE_MANY = 2048,
  /* Its wake-up hints (chr_store_wake) cover every write that can make a
   * job due earlier, from every process on the store: creations (batch
   * ones included), reschedules, completions and lease recoveries,
   * announced to the watchers of every handle (pub/sub, NOTIFY), and a
   * wake at the current time when the channel (re)connects, as hints may
   * have been lost meanwhile. With it and CHR_STORE_CAP_NEXT_DUE, the engine trusts
   * next_due_time plus the hints heard since, and a poll while nothing
   * can be due makes no claim (docs/engine.md, Wake-ups). Writes made
   * around the store (raw SQL, raw commands) are not announced: the
   * engine reads next_due_time again at a bounded interval for them. */
  CHR_STORE_CAP_HINTS = 4096
};

/* A named queue a claim takes jobs from (docs/queues.md). A job's queue is
 * its `queue` member (chr_job_queue); a job without one is in "default". */
typedef struct chr_claim_queue {
  const char *name;
  /* At most this many of the queue's jobs in this claim (>= 1): the free
   * places of the queue in the claiming process. */
  int64_t limit;
  /* > 0: at most this many of the queue's jobs running at once in the
   * whole store, those this claim takes included (0: no such limit). */
  int64_t global_limit;
  /* > 0: at most rate_limit claims of the queue's jobs per window of
   * rate_period_us, in the whole store; a window is
   * [floor(now / period) * period, + period). Every job a claim takes
   * counts once, when it is claimed. 0: no rate limit. */
  int64_t rate_limit;
  int64_t rate_period_us;
} chr_claim_queue_t;

/* Checks the queues of a claim on store s: names, limits >= 1, a rate's
 * period. Returns 0, CHR_EINVAL, or CHR_ENOTSUP for a global or rate
 * limit on a store without CHR_STORE_CAP_QUEUES, with err naming the
 * queue (and the store's kind). chr_store_submit applies it to claims; a
 * scheduler calls it when it starts. */
int chr_store_check_queues(const struct chr_store *s, const chr_claim_queue_t *q, size_t n,
                           char *err, size_t errlen);

/* The storage contract, once (docs/adapters.md): every operation with its
 * constant (CHR_OP_<ID>), its method name (in Lua, for stores written in
 * Lua, and in docs/adapters.md), the capability with which an adapter says
 * it does an optional operation itself (0: required of every adapter;
 * without the capability chr_store_submit emulates the operation over the
 * required ones, store_fallback.c), what its request carries (CHR_IN_*),
 * and the parameters of its Lua method, self included. Results are in
 * struct chr_store_req. */
#define CHR_STORE_OPS(X)                                                                  \
  /* job -> jobs[0]; CHR_EDUP */                                                         \
  X(CREATE, "create_job", 0, CHR_IN_RECORD, 2)                                           \
  /* creates -> creates[i].result (0 or CHR_EDUP), count created */                     \
  X(CREATE_MANY, "create_jobs", CHR_STORE_CAP_CREATE_MANY, CHR_IN_CREATES, 2)            \
  /* id -> jobs[0] or njobs 0 */                                                         \
  X(GET, "get_job", 0, CHR_IN_ID, 2)                                                     \
  /* ids -> jobs found */                                                                \
  X(GET_BATCH, "get_jobs_batch", CHR_STORE_CAP_BATCH, CHR_IN_IDS, 2)                     \
  /* id, job (partial) -> jobs[0]; CHR_ENOTFOUND */                                      \
  X(UPDATE, "update_job", 0, CHR_IN_ID | CHR_IN_UPDATES, 3)                              \
  /* id, expected, job (partial) -> ok, jobs[0]; CHR_ENOTFOUND */                        \
  X(CAS, "compare_and_swap_job", 0, CHR_IN_ID | CHR_IN_EXPECTED | CHR_IN_UPDATES, 4)     \
  /* id -> ok */                                                                         \
  X(DELETE, "delete_job", 0, CHR_IN_ID, 2)                                               \
  /* filter, limit, offset -> jobs, in query order (chr_job_cmp_query) */                \
  X(QUERY, "query_jobs", 0, CHR_IN_FILTER | CHR_IN_LIMIT | CHR_IN_OFFSET, 4)             \
  /* filter -> count */                                                                  \
  X(COUNT, "count_jobs", CHR_STORE_CAP_COUNT, CHR_IN_FILTER, 2)                          \
  /* now, limit, owner, lease_us, scope, queues -> jobs (running), in claim order */     \
  X(CLAIM, "claim_due_jobs", CHR_STORE_CAP_CLAIM,                                        \
    CHR_IN_NOW | CHR_IN_LIMIT | CHR_IN_OWNER | CHR_IN_LEASE | CHR_IN_SCOPE, 2)           \
  /* items -> items[i].result (chr_store_completion_result) */                           \
  X(COMPLETE, "complete_jobs", CHR_STORE_CAP_COMPLETE, CHR_IN_ITEMS, 2)                  \
  /* now, scope -> count of running jobs with lease_until < now moved back               \
   * to scheduled (lease cleared, retry_count and attempt + 1) */                        \
  X(RECOVER, "recover_expired_leases", CHR_STORE_CAP_RECOVER, CHR_IN_NOW | CHR_IN_SCOPE, 3)\
  /* owner, ids, now + lease_us -> count extended */                                     \
  X(EXTEND, "extend_leases", CHR_STORE_CAP_EXTEND,                                       \
    CHR_IN_NOW | CHR_IN_OWNER | CHR_IN_IDS | CHR_IN_LEASE, 2)                            \
  /* scope -> count = earliest next_run_time of a scheduled job,                         \
   * CHR_TIME_NONE when none */                                                          \
  X(NEXT_DUE, "next_due_time", CHR_STORE_CAP_NEXT_DUE, CHR_IN_SCOPE, 2)                \
  /* runs -> count written; each job's runs pruned to its keep count and                 \
   * the store's age limit (docs/history.md) */                                          \
  X(RECORD_RUNS, "record_runs", CHR_STORE_CAP_HISTORY, CHR_IN_RUNS, 2)                   \
  /* run_filter, limit, offset -> history, newest first (chr_runrec_cmp) */              \
  X(QUERY_RUNS, "query_runs", CHR_STORE_CAP_HISTORY,                                     \
    CHR_IN_RUN_FILTER | CHR_IN_LIMIT | CHR_IN_OFFSET, 4)

typedef enum {
#define CHR__OP_ENUM(id, name, cap, in, nparams) CHR_OP_##id,
  CHR_STORE_OPS(CHR__OP_ENUM)
#undef CHR__OP_ENUM
  CHR_OP__COUNT
} chr_store_op_t;

typedef struct chr_store_op_desc {
  const char *name;
  int required; /* every adapter has it; else optional */
  unsigned cap; /* CHR_STORE_CAP_*: the adapter does it itself */
  unsigned in;  /* CHR_IN_* */
  int nparams;  /* of the Lua method, self included */
} chr_store_op_desc_t;

/* The operations by chr_store_op_t, then, at CHR_STORE_CLOSE, the one
 * method that is no request: close (optional for a store written in Lua:
 * called once, when present, as the store ends). */
#define CHR_STORE_CLOSE CHR_OP__COUNT
extern const chr_store_op_desc_t chr_store_ops[CHR_OP__COUNT + 1];
/* chr_store_ops[op].name, by operation. */
extern const char *const chr_store_op_names[CHR_OP__COUNT];


/* The rules of the contract, checked by chr_store_submit before any
 * adapter sees a request, and by the Lua adapter kit for stores called
 * directly. Each returns 0, or CHR_EINVAL with the reason in err.
 * chr_store_record_check: what create_job stores, a whole record with a
 * non-empty job_id and a status ("<where>: field 'job_id' is required ...",
 * "job '<id>': field 'status' is required").
 * chr_store_updates_check: a partial record (updates of update_job, CAS and
 * completions; NULL is none) that would neither rename job `id` nor leave
 * it without a valid status ("job '<id>': job_id cannot be changed"). */
int chr_store_record_check(const chr_job_t *j, const char *where, char *err, size_t errlen);
int chr_store_updates_check(const char *id, const chr_job_t *u, char *err, size_t errlen);
/* chr_store_update_only_check: the rules of update_job alone, on top of
 * chr_store_updates_check (compare_and_swap_job and completions, which
 * claims and completions are made of, may do all this): updates u of job
 * `id` that neither set nor remove claimed_by, lease_until or attempt, do
 * not set status running, and do not make the job scheduled while removing
 * its next_run_time ("job '<id>': update_job cannot set field
 * 'claimed_by': ..."). A job updated by hand is then never running
 * without a lease that recovery can see expire. */
int chr_store_update_only_check(const char *id, const chr_job_t *u, char *err, size_t errlen);

/* Orders jobs as query results: next_run_time ascending, nil last, then
 * job_id. qsort comparator over chr_job_t pointers. */
int chr_job_cmp_query(const void *a, const void *b);
/* Orders jobs as claim_due_jobs takes them: priority descending (missing
 * = 5), then in query order. */
int chr_job_cmp_claim(const void *a, const void *b);

typedef struct chr_completion {
  char *job_id;
  char *owner;      /* applied only while claimed_by == owner */
  int remove;       /* delete the job, else apply updates */
  chr_job_t *updates;
  /* The run this completion ends, or NULL: a store with the history
   * capability writes it with the completion when the item applies. */
  chr_runrec_t *run;
  int result;       /* out: 0, CHR_ECONFLICT or CHR_ENOTFOUND */
} chr_completion_t;

/* The result of completion c given the stored job j (NULL when there is
 * none): CHR_ENOTFOUND, CHR_ECONFLICT when j is not claimed by c's owner
 * (its lease was recovered, it may have another owner now), else 0 and
 * the caller applies c. */
int chr_store_completion_result(const chr_completion_t *c, const chr_job_t *j);

/* One record of create_jobs. A record whose job_id is stored already, or
 * taken by an earlier record of the same batch, is not written and gets
 * CHR_EDUP; the others are created as create_job would. */
typedef struct chr_create_item {
  chr_job_t *job; /* a whole record (borrowed) */
  int result;     /* out: 0 or CHR_EDUP */
} chr_create_item_t;

struct chr_store_req {
  chr_store_op_t op;
  chr_store_t *store;
  chr_store_cb cb;
  void *data;
  /* Inputs, borrowed: the caller keeps them alive until the callback. */
  const char *id;
  chr_job_t *job;
  chr_job_t *expected;
  char **ids;
  size_t nids;
  chr_filter_t *filter;
  int64_t limit, offset;
  int64_t now, lease_us;
  const char *owner;
  chr_completion_t *items;
  size_t nitems;
  chr_create_item_t *creates;
  size_t ncreates;
  chr_runrec_t **runs;
  size_t nruns;
  chr_run_filter_t *run_filter;
  /* Wall time of submission (set by chr_store_submit). A store whose
   * requests can wait (in a queue, on a paused server) adds the wait to
   * the leases it grants, measured on its own clock when the request
   * executes, so that a lease never starts out expired. */
  int64_t issued;
  /* CHR_OP_CLAIM: the queues to take jobs from (borrowed; nqueues 0: every
   * job, whatever its queue, as before queues existed). With queues, the
   * claim takes only jobs of those queues, in claim order within each
   * (priority stays within a queue), at most queues[i].limit of each and
   * req->limit in all, within each queue's global and rate limits. */
  const chr_claim_queue_t *queues;
  size_t nqueues;
  /* CHR_OP_CLAIM on a store without claim_due_jobs: the lock taken per job
   * around its CAS (borrowed, NULL for none). */
  chr_lock_t *lock;
  /* Set by chr_store_submit, which answers in the adapter's place to
   * count the request (runtime/core/metrics.h): the caller's callback,
   * the monotonic time of submission, and the counts of the store's kind
   * (kept here: a closing store may answer as it frees itself). */
  chr_store_cb caller_cb;
  int64_t sent_mono;
  struct chr_mstore *metrics;
  /* Outputs, owned by the caller after the callback (chr_store_req_reset). */
  int status;   /* 0 or CHR_E* */
  char *errmsg; /* malloc'ed, with status != 0 */
  chr_job_t **jobs;
  size_t njobs;
  chr_runrec_t **history; /* query_runs */
  size_t nhistory;
  int64_t count;
  int ok;
};

void chr_store_req_init(chr_store_req_t *req, chr_store_op_t op);
/* Frees outputs (jobs, errmsg); inputs are the caller's. */
void chr_store_req_reset(chr_store_req_t *req);
/* Adapter helpers to answer a request. */
void chr_store_req_fail(chr_store_req_t *req, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void chr_store_req_push_job(chr_store_req_t *req, chr_job_t *job);
void chr_store_req_push_run(chr_store_req_t *req, chr_runrec_t *run);


typedef struct chr_store_vtable {
  const char *kind; /* "memory", "sqlite", ... */
  /* Answers req through req->cb exactly once and returns 0, or returns a
   * CHR_E* code without calling back. An adapter may call back before
   * submit returns. req has passed chr_store_submit's checks. */
  int (*submit)(chr_store_t *s, chr_store_req_t *req);
  /* Ends the store: pending requests are answered (CHR_EUNAVAIL), then the
   * adapter frees s (possibly later, once its handles have closed). */
  void (*close)(chr_store_t *s);
} chr_store_vtable_t;

/* Adapters embed this as the first member of their own struct. */
struct chr_store {
  const chr_store_vtable_t *vt;
  unsigned caps;
  /* How logs name the store: its options in the URL form of its scheme,
   * the password hidden (set when opened from a URL or options; NULL for
   * a store made directly). */
  char *url;
  /* Wake-up hints: listeners called when a job may be due earlier than
   * before (creation, reschedule, recovery), with its next_run_time. The
   * engine of every scheduler on this store listens. */
  struct chr_store_watch *watchers;
  /* Filter keys of its own (a store written in Lua declares them):
   * NULL-terminated, owned by the adapter; NULL for none. */
  char **filter_keys;
  int closed;
  int refs; /* the owner's plus chr_store_retain's; freed at zero */
  struct chr_mstore *metrics; /* the counts of its kind, found on first use */
};

/* job: the job whose write woke (borrowed), NULL when unknown (a hint
 * from another process). */
typedef void (*chr_store_wake_cb)(void *data, int64_t when, const chr_job_t *job);
typedef struct chr_store_watch {
  chr_store_wake_cb cb;
  void *data;
  struct chr_store_watch *next;
} chr_store_watch_t;

void chr_store_init(chr_store_t *s, const chr_store_vtable_t *vt, unsigned caps);
/* Internal: the optional operations emulated over the required ones
 * (store_fallback.c), used by chr_store_submit when caps lack them. */
int chr__store_emulate(chr_store_t *s, chr_store_req_t *req);
/* Checks and normalises req (CHR_IN_*), then hands it to the adapter, or
 * to the emulation of an optional operation the adapter lacks. Returns 0
 * and answers through req->cb exactly once (a bad request is answered
 * CHR_EINVAL, before submit returns), or returns CHR_EUNAVAIL (closed) or
 * CHR_EINVAL (no such operation) without calling back. */
int chr_store_submit(chr_store_t *s, chr_store_req_t *req);
/* Closing refuses new requests at once (CHR_EUNAVAIL); the adapter is
 * closed when the last holder (e.g. a scheduler) releases it too. */
void chr_store_close(chr_store_t *s);
void chr_store_retain(chr_store_t *s);
void chr_store_release(chr_store_t *s);
/* Called by adapters; tells every watcher. */
void chr_store_wake(chr_store_t *s, int64_t when);
/* The same for a job just written: at chr_job_wake_time(j), when it has
 * one, with the job, so that a scoped engine ignores other jobs. */
void chr_store_wake_job(chr_store_t *s, const chr_job_t *j);
/* What a write of j tells the engines: its next_run_time while it is
 * scheduled, else CHR_TIME_NONE. */
int64_t chr_job_wake_time(const chr_job_t *j);
/* The earlier of two times, either of which may be CHR_TIME_NONE. */
static inline int64_t chr_time_earlier(int64_t a, int64_t b) {
  if (a == CHR_TIME_NONE) return b;
  if (b == CHR_TIME_NONE) return a;
  return a < b ? a : b;
}
/* w is the caller's, linked in until chr_store_unwatch. */
void chr_store_watch(chr_store_t *s, chr_store_watch_t *w);
void chr_store_unwatch(chr_store_t *s, chr_store_watch_t *w);

/* Opening a store from a URL ("sqlite:jobs.db", "postgres://...") or from
 * options (url.h: the scheme and key/value pairs, e.g. from a Lua table).
 * chr_store_url_opts turns a URL into the options it stands for (one
 * parser, every part %-decoded). Each returns 0 and fills its output, or
 * CHR_EINVAL with a message naming the bad part or option. */
int chr_store_open(const char *url, chr_store_t **out, char *err, size_t errlen);
int chr_store_url_opts(const char *url, chr_opts_t *o, char *err, size_t errlen);
int chr_store_open_opts(const chr_opts_t *o, chr_store_t **out, char *err, size_t errlen);
/* A store URL as logs and messages show it: the password hidden, the way
 * the scheme's URL form reads (malloc'ed). */
char *chr_store_url_shown(const char *url);

/* Adapters, opened from their options (docs/<store>.md lists them). */
chr_store_t *chr_memory_store_new(void);
/* index_paths: index_metadata (chr_meta_index_parse), taken over; NULL: none. */
chr_store_t *chr_memory_store_new_opts(const chr_history_opts_t *hist, char **index_paths);
int chr_sqlite_store_open(const chr_opts_t *o, chr_store_t **out, char *err, size_t errlen);
int chr_lua_store_open(const chr_opts_t *o, chr_store_t **out, char *err, size_t errlen);
int chr_file_store_open(const chr_opts_t *o, chr_store_t **out, char *err, size_t errlen);
/* host, port, user, password, dbname, table, schema, pool, ... and libpq
 * keywords (adapters/postgres; schemes postgres: and postgresql:). */
int chr_postgres_open(const chr_opts_t *o, chr_store_t **out, char *err, size_t errlen);
/* `chronis migrate --storage URL [--status]`: applies pending migrations to
 * the PostgreSQL store at url (or, with status_only, prints its history) and
 * reports to out; runs the loop itself until done. Returns 0, 1 on failure
 * (message on stderr), 2 for a bad URL. */
int chr_postgres_migrate(const char *url, int status_only, FILE *out);
int chr_redis_store_open(const chr_opts_t *o, chr_store_t **out, char *err, size_t errlen);

#endif
