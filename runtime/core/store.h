/* store.h - the storage adapter contract (docs/design.md) in C: one request
 * type for every operation, submitted to an adapter's vtable and answered
 * through its callback exactly once (or refused by a non-zero return, and
 * then never called back). Filters and their matching live here too, so
 * scanning adapters share one definition of each filter's meaning. */
#ifndef CHR_STORE_H
#define CHR_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "job.h"
#include "lock.h"
#include "url.h"

typedef struct chr_store chr_store_t;
typedef struct chr_store_req chr_store_req_t;
typedef void (*chr_store_cb)(chr_store_req_t *req);

typedef enum {
  CHR_OP_CREATE,     /* job -> jobs[0] */
  CHR_OP_GET,        /* id -> jobs[0] or njobs 0 */
  CHR_OP_GET_BATCH,  /* ids -> jobs found */
  CHR_OP_UPDATE,     /* id, job (partial) -> jobs[0]; CHR_ENOTFOUND */
  CHR_OP_CAS,        /* id, expected, job (partial) -> ok, jobs[0] */
  CHR_OP_DELETE,     /* id -> ok */
  CHR_OP_QUERY,      /* filter, limit (-1 = none), offset -> jobs */
  CHR_OP_COUNT,      /* filter -> count */
  CHR_OP_CLAIM,      /* now, limit, owner, lease_us -> jobs (running) */
  CHR_OP_COMPLETE,   /* items -> items[i].result */
  CHR_OP_RECOVER,    /* now -> count of running jobs with lease_until < now
                        moved back to scheduled (lease cleared) */
  CHR_OP_EXTEND,     /* owner, ids, now + lease_us -> count extended */
  CHR_OP_NEXT_DUE,   /* -> count = earliest next_run_time of a scheduled
                        job, CHR_TIME_NONE when none */
  CHR_OP__COUNT
} chr_store_op_t;

extern const char *const chr_store_op_names[CHR_OP__COUNT];

typedef struct chr_meta_filter {
  char *path;  /* "tenant_id" or "a.b" (below metadata) */
  char *value; /* canonical JSON text of the wanted value */
} chr_meta_filter_t;

typedef struct chr_filter {
  uint32_t status_mask; /* 1 << chr_status_t; 0 = any */
  int trigger_type;     /* 0 = any */
  int64_t nrt_lte, nrt_gte, upd_lte, upd_gte; /* CHR_TIME_NONE = unset */
  chr_meta_filter_t *meta;
  size_t nmeta;
  char **ids; /* job_id_in; has_ids with nids 0 matches nothing */
  size_t nids;
  int has_ids;
} chr_filter_t;

void chr_filter_init(chr_filter_t *f);
void chr_filter_free(chr_filter_t *f);
int chr_filter_match(const chr_filter_t *f, const chr_job_t *j);

/* Why the partial record u may not be applied to the job `id`: it would
 * rename the job or leave it without a valid status. NULL when it may.
 * The one rule every adapter applies to updates, CAS and completions. */
const char *chr_store_updates_error(const char *id, const chr_job_t *u);

/* Orders jobs as query results: next_run_time ascending, nil last, then
 * job_id. qsort comparator over chr_job_t pointers. */
int chr_job_cmp_query(const void *a, const void *b);

typedef struct chr_completion {
  char *job_id;
  char *owner;      /* applied only while claimed_by == owner */
  int remove;       /* delete the job, else apply updates */
  chr_job_t *updates;
  int result;       /* out: 0, CHR_ECONFLICT or CHR_ENOTFOUND */
} chr_completion_t;

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
  /* Wall time of submission (set by chr_store_submit). A store whose
   * requests can wait (in a queue, on a paused server) adds the wait to
   * the leases it grants, measured on its own clock when the request
   * executes, so that a lease never starts out expired. */
  int64_t issued;
  /* CHR_OP_CLAIM on a store without claim_due_jobs: the lock taken per job
   * around its CAS (borrowed, NULL for none). */
  chr_lock_t *lock;
  /* Outputs, owned by the caller after the callback (chr_store_req_reset). */
  int status;   /* 0 or CHR_E* */
  char *errmsg; /* malloc'ed, with status != 0 */
  chr_job_t **jobs;
  size_t njobs;
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

enum {
  CHR_STORE_CAP_CLAIM = 1,    /* claim_due_jobs in one round trip */
  CHR_STORE_CAP_COMPLETE = 2, /* complete_jobs in one round trip */
  CHR_STORE_CAP_RECOVER = 4,  /* CHR_OP_RECOVER */
  CHR_STORE_CAP_EXTEND = 8,   /* CHR_OP_EXTEND */
  CHR_STORE_CAP_BATCH = 16,   /* get_jobs_batch */
  CHR_STORE_CAP_COUNT = 32,   /* count_jobs (else query + #) */
  CHR_STORE_CAP_NEXT_DUE = 64,/* CHR_OP_NEXT_DUE */
  CHR_STORE_CAP_LOCAL = 128   /* in-process store: the engine arms a timer
                                 at the earliest next_run_time */
};

typedef struct chr_store_vtable {
  const char *kind; /* "memory", "sqlite", ... */
  /* Answers req through req->cb exactly once and returns 0, or returns a
   * CHR_E* code without calling back. An adapter may call back before
   * submit returns. */
  int (*submit)(chr_store_t *s, chr_store_req_t *req);
  /* Ends the store: pending requests are answered (CHR_EUNAVAIL), then the
   * adapter frees s (possibly later, once its handles have closed). */
  void (*close)(chr_store_t *s);
} chr_store_vtable_t;

/* Adapters embed this as the first member of their own struct. */
struct chr_store {
  const chr_store_vtable_t *vt;
  unsigned caps;
  char *url;
  /* Wake-up hints: listeners called when a job may be due earlier than
   * before (creation, reschedule, recovery), with its next_run_time. The
   * engine of every scheduler on this store listens. */
  struct chr_store_watch *watchers;
  int closed;
  int refs; /* the owner's plus chr_store_retain's; freed at zero */
};

typedef void (*chr_store_wake_cb)(void *data, int64_t when);
typedef struct chr_store_watch {
  chr_store_wake_cb cb;
  void *data;
  struct chr_store_watch *next;
} chr_store_watch_t;

void chr_store_init(chr_store_t *s, const chr_store_vtable_t *vt, unsigned caps);
/* Internal: the optional operations emulated over the required ones
 * (store_fallback.c), used by chr_store_submit when caps lack them. */
unsigned chr__store_op_cap(chr_store_op_t op);
int chr__store_emulate(chr_store_t *s, chr_store_req_t *req);
int chr_store_submit(chr_store_t *s, chr_store_req_t *req);
/* Closing refuses new requests at once (CHR_EUNAVAIL); the adapter is
 * closed when the last holder (e.g. a scheduler) releases it too. */
void chr_store_close(chr_store_t *s);
void chr_store_retain(chr_store_t *s);
void chr_store_release(chr_store_t *s);
/* Called by adapters; tells every watcher. */
void chr_store_wake(chr_store_t *s, int64_t when);
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

/* Adapters, opened from their options (docs/<store>.md lists them). */
chr_store_t *chr_memory_store_new(void);
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
