/* postgres.c - the PostgreSQL store ("postgres://..."): a small pool of
 * non-blocking connections (pg_conn.c), each with one statement in flight,
 * fed from one FIFO queue; the schema checked or migrated on the first
 * connection before any request runs (pg_migrate.c); wake-up hints sent with
 * NOTIFY and received on a LISTEN connection of their own.
 *
 * Failures. A request in flight on a connection that breaks fails with
 * CHR_EUNAVAIL, except completions: they are queued again and sent first
 * on the next connection, before anything else (a completion that was
 * applied already finds the job gone or no longer claimed by its owner,
 * which is harmless; one that is lost would run its job again once the
 * lease expired). While no connection can be made, new requests fail at
 * once with CHR_EUNAVAIL, completions wait, and connection attempts go on
 * with capped exponential backoff. */
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/loop.h"
#include "core/metrics.h"
#include "pg.h"
#include "core/time.h"

enum { ROLE_POOL, ROLE_MIGRATE, ROLE_LISTEN };

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define NOTIFY_DELAY_MS 5 /* hints written in one burst go out as one NOTIFY */
#define MAX_RETRIES 5
/* Completions are sent in two parts from twice this many items. */
#define SPLIT_MIN 100
/* A first contact that takes longer than this is logged, and then again
 * every PROGRESS_EVERY_US while requests wait for it. */
#define PROGRESS_AFTER_MS 1000
#define PROGRESS_EVERY_US 5000000

typedef struct pg_store {
  chr_store_t base;
  pg_opts_t o;
  pg_sql_t sql;
  pg_conn_t *conns[PG_MAX_POOL];
  int nconns;
  pg_conn_t *listener;
  pg_migrator_t *mig;
  pg_op_t *head, *tail; /* not sent yet */
  int queued;
  int ready;     /* the schema is known to be current */
  int checked;   /* a schema check was started at least once */
  int down;      /* the last attempt failed and no connection is up */
  int failures;  /* consecutive failed connection attempts */
  int listen_failures;
  char lasterr[400];
  uv_timer_t *retry_timer, *notify_timer, *listen_timer, *progress_timer;
  /* The first contact: when requests started waiting for it, when its
   * progress is logged next (0: not yet), and whether a connection was
   * ever made. */
  int64_t contact_since, contact_next;
  int ever_up;
  int lost; /* pool connections lost while up and not made again yet */
  int64_t notify_min;
  char token[24]; /* tells our own NOTIFYs from other processes' */
  int64_t age_pruned; /* chr_time_mono() of the last completion that pruned runs by age */
  int handles;
  int dispatching, closing;
} pg_store_t;

static void dispatch(pg_store_t *st);
static void on_event(pg_conn_t *c, int ev, const char *relname, const char *payload);

/* ---- queue ---- */

static void enqueue(pg_store_t *st, pg_op_t *op, int front) {
  op->next = NULL;
  if (front) {
    op->next = st->head;
    st->head = op;
    if (st->tail == NULL) st->tail = op;
  } else {
    if (st->tail) st->tail->next = op;
    else st->head = op;
    st->tail = op;
  }
  st->queued++;
}

static void unlink_op(pg_store_t *st, pg_op_t *op) {
  pg_op_t **p = &st->head, *prev = NULL;
  while (*p && *p != op) {
    prev = *p;
    p = &(*p)->next;
  }
  if (*p == NULL) return;
  *p = op->next;
  if (st->tail == op) st->tail = prev;
  op->next = NULL;
  st->queued--;
}

/* ---- wake-up hints ---- */

static void notify_cb(uv_timer_t *t) {
  pg_store_t *st = t->data;
  if (st->closing || st->notify_min == CHR_TIME_NONE) return;
  int64_t when = st->notify_min;
  st->notify_min = CHR_TIME_NONE;
  if (st->down) return;
  pg_op_t *op = chr_pg_op_new(NULL);
  op->stmt = PG_S_NOTIFY;
  chr_pg_param(op, st->o.channel);
  chr_pg_param_take(op, chr_sprintf("%lld %s", (long long)when, st->token));
  enqueue(st, op, 0);
  dispatch(st);
}

/* A job may be due at `when`, earlier than anyone planned: schedulers of
 * this process hear it now, other processes through one NOTIFY per burst. */
static void hint(pg_store_t *st, int64_t when) {
  chr_store_wake(&st->base, when);
  if (!st->o.notify || st->closing) return;
  if (st->notify_min == CHR_TIME_NONE || when < st->notify_min) st->notify_min = when;
  if (!uv_is_active((uv_handle_t *)st->notify_timer))
    uv_timer_start(st->notify_timer, notify_cb, NOTIFY_DELAY_MS, 0);
}

/* ---- answering requests ---- */

/* The parts of a completion sent on several connections at once: how many
 * are still out, the first failure among them, the earliest time written. */
typedef struct pg_split {
  int pending;
  int status;
  char *msg;
  int64_t wake;
} pg_split_t;

static void op_finish(pg_store_t *st, pg_op_t *op) {
  chr_store_req_t *req = op->req;
  int64_t wake = op->wake;
  pg_split_t *sp = op->split;
  chr_pg_op_free(op);
  if (req == NULL) return;
  if (sp) {
    sp->wake = chr_time_earlier(sp->wake, wake);
    if (--sp->pending > 0) return;
    wake = sp->wake;
    if (sp->status) chr_store_req_fail(req, sp->status, "%s", sp->msg);
    free(sp->msg);
    free(sp);
  }
  if (req->status == 0 && wake != CHR_TIME_NONE) hint(st, wake);
  if (req->cb) req->cb(req);
}

static void op_fail(pg_store_t *st, pg_op_t *op, int code, const char *msg) {
  if (op->split) { /* the request fails once, when its last part ends */
    if (op->split->status == 0) {
      op->split->status = code;
      op->split->msg = chr_strdup(msg);
    }
  } else if (op->req) {
    chr_store_req_fail(op->req, code, "%s", msg);
  }
  op->wake = CHR_TIME_NONE;
  op_finish(st, op);
}

static void down_message(pg_store_t *st, char *msg, size_t n) {
  double in = uv_is_active((uv_handle_t *)st->retry_timer)
                  ? (double)uv_timer_get_due_in(st->retry_timer) / 1000
                  : 0;
  snprintf(msg, n, "postgres unavailable: %s (%s; next attempt in %.1f s)", st->lasterr,
           st->o.desc, in);
}

/* Fails queued requests; `keep_held` keeps completions waiting. */
static void fail_queue(pg_store_t *st, int code, const char *msg, int keep_held) {
  pg_op_t *list = st->head, *failed = NULL, **ft = &failed;
  st->head = st->tail = NULL;
  st->queued = 0;
  /* Split first: the callbacks below may queue new requests. */
  for (pg_op_t *op = list, *next; op; op = next) {
    next = op->next;
    op->next = NULL;
    if (keep_held && op->hold) {
      enqueue(st, op, 0);
    } else {
      *ft = op;
      ft = &op->next;
    }
  }
  for (pg_op_t *op = failed, *next; op; op = next) {
    next = op->next;
    op_fail(st, op, code, msg);
  }
}

/* ---- first contact ---- */

/* Requests wait for the first connection (and the schema check): after a
 * second, say so, then every few seconds where it is, so that an app
 * waiting for a server that does not answer is not silent until the
 * connect timeout. */
static void progress_cb(uv_timer_t *t) {
  pg_store_t *st = t->data;
  if (st->closing || st->ever_up || st->queued == 0) {
    uv_timer_stop(t);
    return;
  }
  int64_t now = chr_time_mono();
  if (st->contact_next && now < st->contact_next) return;
  if (st->contact_next == 0) {
    chr_log(CHR_LOG_INFO, NULL, "connecting to %s ...", st->o.desc);
  } else {
    int connecting = 0;
    for (int i = 0; i < st->nconns; i++) connecting += st->conns[i]->state == PG_C_CONNECTING;
    const char *state = st->mig           ? "checking the schema"
                        : connecting      ? "connecting"
                        : st->nconns == 0 ? "waiting to try again"
                                          : "waiting for a connection";
    chr_log(CHR_LOG_WARN, NULL, "still connecting to %s after %.0fs: attempt %d, %s; last error: %s",
            st->o.desc, (double)(now - st->contact_since) / 1e6, st->failures + 1, state,
            st->lasterr[0] ? st->lasterr : "none yet");
  }
  st->contact_next = now + PROGRESS_EVERY_US;
}

static void progress_watch(pg_store_t *st) {
  if (st->ever_up || st->closing || uv_is_active((uv_handle_t *)st->progress_timer)) return;
  if (st->contact_since == 0) st->contact_since = chr_time_mono();
  uv_timer_start(st->progress_timer, progress_cb, PROGRESS_AFTER_MS, PROGRESS_AFTER_MS);
}

/* ---- connections ---- */

static int conn_index(pg_store_t *st, pg_conn_t *c) {
  for (int i = 0; i < st->nconns; i++)
    if (st->conns[i] == c) return i;
  return -1;
}

static void conn_drop(pg_store_t *st, pg_conn_t *c) {
  if (c->up) st->lost++; /* its replacement is a reconnect */
  int i = conn_index(st, c);
  if (i >= 0) st->conns[i] = st->conns[--st->nconns];
  chr_pg_conn_close(c);
}

static void conn_open(pg_store_t *st) {
  pg_conn_t *c = chr_pg_conn_start(&st->o, on_event, st);
  c->role = ROLE_POOL;
  chr_pg_conn_ref(c, 0);
  st->conns[st->nconns++] = c;
}

static void retry_cb(uv_timer_t *t) {
  pg_store_t *st = t->data;
  if (st->closing) return;
  for (int i = 0; i < st->nconns; i++)
    if (st->conns[i]->state == PG_C_CONNECTING) return;
  if (st->nconns < st->o.pool) conn_open(st);
}

static void schedule_retry(pg_store_t *st) {
  int shift = st->failures > 6 ? 6 : st->failures - 1;
  uint64_t ms = (uint64_t)BACKOFF_MIN_MS << (shift > 0 ? shift : 0);
  if (ms > BACKOFF_MAX_MS) ms = BACKOFF_MAX_MS;
  ms = ms * (80 + (uint64_t)(chr_time_mono() % 41)) / 100; /* jitter: processes spread out */
  uv_timer_start(st->retry_timer, retry_cb, ms, 0);
}

/* Handles keep the loop alive only while a request waits on them. */
static void update_refs(pg_store_t *st) {
  for (int i = 0; i < st->nconns; i++) {
    pg_conn_t *c = st->conns[i];
    int wanted = c->state == PG_C_BUSY || (c->state == PG_C_CONNECTING && st->queued > 0);
    chr_pg_conn_ref(c, wanted);
  }
  if (st->queued > 0) uv_ref((uv_handle_t *)st->retry_timer);
  else uv_unref((uv_handle_t *)st->retry_timer);
}

static void result_cb(pg_conn_t *c, PGresult *res, void *arg);

static void prepared_cb(pg_conn_t *c, PGresult *res, void *arg) {
  pg_op_t *op = arg;
  if (res != NULL && PQresultStatus(res) == PGRES_COMMAND_OK) {
    c->prepared |= 1u << op->stmt;
    chr_pg_conn_exec(c, chr_pg_stmt_names[op->stmt], op->nparams,
                     (const char *const *)op->params, 1, result_cb, op);
    return;
  }
  result_cb(c, res, arg);
}

static void send_op(pg_store_t *st, pg_conn_t *c, pg_op_t *op) {
  unlink_op(st, op);
  if (op->stmt < 0) {
    chr_pg_conn_query(c, op->sql, op->nparams, (const char *const *)op->params, 1, result_cb, op);
  } else if (!(c->prepared & (1u << op->stmt))) {
    chr_pg_conn_prepare(c, chr_pg_stmt_names[op->stmt], st->sql.text[op->stmt],
                        st->sql.nparams[op->stmt], prepared_cb, op);
  } else {
    chr_pg_conn_exec(c, chr_pg_stmt_names[op->stmt], op->nparams,
                     (const char *const *)op->params, 1, result_cb, op);
  }
}

/* Whether the statement's connection is gone, so its outcome is unknown. */
static int conn_lost(pg_conn_t *c, const PGresult *res) {
  if (res == NULL || c->pg == NULL || PQstatus(c->pg) != CONNECTION_OK) return 1;
  const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
  return state && (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0);
}

static void result_cb(pg_conn_t *c, PGresult *res, void *arg) {
  pg_store_t *st = c->data;
  pg_op_t *op = arg;
  char msg[600];
  int rc = chr_pg_result_error(c, res, msg, sizeof msg);
  if (rc != 0 && conn_lost(c, res)) {
    conn_drop(st, c);
    if (op->hold && op->attempts < MAX_RETRIES) {
      op->attempts++;
      op->retry = 1;
      enqueue(st, op, 1);
    } else {
      op_fail(st, op, CHR_EUNAVAIL, msg);
    }
  } else if (rc != 0 && chr_pg_result_retryable(res) && op->attempts < MAX_RETRIES) {
    /* Deadlock or serialization failure: rolled back, so simply again. */
    op->attempts++;
    enqueue(st, op, 1);
  } else if (rc != 0) {
    op_fail(st, op, rc, msg);
  } else {
    if (op->req) chr_pg_decode(op, res);
    op_finish(st, op);
  }
  if (!st->closing) dispatch(st);
}

static void migrated_cb(void *data, int status, const char *msg) {
  pg_conn_t *c = data;
  pg_store_t *st = c->data;
  st->mig = NULL;
  c->role = ROLE_POOL;
  if (status == 0) {
    st->ready = 1;
  } else if (c->state != PG_C_DEAD) {
    /* The schema is wrong or cannot be made right: every waiting request
     * learns why; the next request checks again. (A lost connection is
     * reported next and the check runs again on a new one.) */
    fail_queue(st, status, msg, 0);
  }
  if (!st->closing) dispatch(st);
}

static void listen_open(pg_store_t *st);

static void listen_retry_cb(uv_timer_t *t) {
  listen_open(t->data);
}

static void listen_lost(pg_store_t *st, pg_conn_t *c) {
  chr_pg_conn_close(c);
  if (st->listener == c) st->listener = NULL;
  if (st->closing) return;
  int shift = st->listen_failures > 6 ? 6 : st->listen_failures;
  st->listen_failures++;
  uint64_t ms = (uint64_t)BACKOFF_MIN_MS << shift;
  uv_timer_start(st->listen_timer, listen_retry_cb, ms > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ms, 0);
}

static void listened_cb(pg_conn_t *c, PGresult *res, void *arg) {
  pg_store_t *st = arg;
  if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {
    if (res) listen_lost(st, c); /* a broken connection reports BROKEN next */
    return;
  }
  st->listen_failures = 0;
  /* Listening (again): what other processes announced before now was not
   * heard, so a job may be due now (CHR_STORE_CAP_HINTS). */
  if (!st->closing) chr_store_wake(&st->base, chr_time_now());
}

static void listen_open(pg_store_t *st) {
  if (st->closing || st->listener || !st->o.notify) return;
  st->listener = chr_pg_conn_start(&st->o, on_event, st);
  st->listener->role = ROLE_LISTEN;
  st->listener->timeout = 0; /* it waits for notifications forever */
  chr_pg_conn_ref(st->listener, 0);
}

static void on_notify(pg_store_t *st, const char *payload) {
  char *end;
  long long when = strtoll(payload, &end, 10);
  if (end == payload) return;
  while (*end == ' ') end++;
  if (strcmp(end, st->token) == 0) return; /* ours: already told locally */
  chr_store_wake(&st->base, (int64_t)when);
}

static void on_event(pg_conn_t *c, int ev, const char *relname, const char *payload) {
  pg_store_t *st = c->data;
  (void)relname;
  if (c->role == ROLE_LISTEN) {
    if (ev == PG_EV_READY) {
      char sql[128];
      snprintf(sql, sizeof sql, "LISTEN \"%s\"", st->o.channel);
      chr_pg_conn_query(c, sql, 0, NULL, 0, listened_cb, st);
    } else if (ev == PG_EV_NOTIFY) {
      on_notify(st, payload);
    } else {
      listen_lost(st, c);
    }
    return;
  }
  if (ev == PG_EV_READY) {
    if (!st->ever_up && st->contact_next)
      chr_log(CHR_LOG_INFO, NULL, "connected to %s after %.1fs (attempt %d)", st->o.desc,
              (double)(chr_time_mono() - st->contact_since) / 1e6, st->failures + 1);
    st->ever_up = 1;
    if (st->lost > 0) { /* replaces a lost one: a reconnect */
      st->lost--;
      chr_metrics_reconnect("postgres");
    }
    c->up = 1;
    st->failures = 0;
    st->down = 0;
    uv_timer_stop(st->retry_timer);
    dispatch(st);
    return;
  }
  if (ev != PG_EV_BROKEN) return;
  int was_up = c->up;
  snprintf(st->lasterr, sizeof st->lasterr, "%s", c->errmsg);
  conn_drop(st, c);
  if (!was_up) {
    int live = 0;
    for (int i = 0; i < st->nconns; i++) live += st->conns[i]->up;
    st->failures++;
    if (live == 0) {
      char msg[600];
      st->down = 1;
      schedule_retry(st);
      down_message(st, msg, sizeof msg);
      fail_queue(st, CHR_EUNAVAIL, msg, 1);
    }
  }
  if (!st->closing) dispatch(st);
}

/* ---- dispatch ---- */

static int retry_in_flight(pg_store_t *st) {
  for (int i = 0; i < st->nconns; i++) {
    pg_conn_t *c = st->conns[i];
    if (c->state == PG_C_BUSY && c->role == ROLE_POOL && ((pg_op_t *)c->cb_arg)->retry) return 1;
  }
  return 0;
}

/* The next request to send: in queue order, except that completions sent
 * once on a lost connection go first, alone, so that no claim or lease
 * recovery overtakes a completion that may have been applied. */
static pg_op_t *next_op(pg_store_t *st) {
  for (pg_op_t *op = st->head; op; op = op->next)
    if (op->retry) return op;
  return retry_in_flight(st) ? NULL : st->head;
}

static void dispatch(pg_store_t *st) {
  if (st->dispatching || st->closing) return;
  st->dispatching = 1;
  for (;;) {
    pg_conn_t *idle = NULL;
    int connecting = 0;
    for (int i = 0; i < st->nconns; i++) {
      pg_conn_t *c = st->conns[i];
      if (c->state == PG_C_IDLE && c->role == ROLE_POOL && idle == NULL) idle = c;
      connecting += c->state == PG_C_CONNECTING;
    }
    if (!st->ready) {
      /* The first check runs at open; after a failed one, only a request
       * brings another. */
      int wanted = st->head != NULL || !st->checked;
      if (idle && st->mig == NULL && wanted) {
        st->checked = 1;
        idle->role = ROLE_MIGRATE;
        st->mig = chr_pg_migrate_run(idle, &st->o,
                                     st->o.auto_migrate ? PG_MIG_MIGRATE : PG_MIG_CHECK, NULL,
                                     migrated_cb, idle);
        continue;
      }
      if (st->nconns == 0 && !st->down && wanted) conn_open(st);
      break;
    }
    if (st->head == NULL) break;
    if (idle == NULL) {
      if (!st->down && connecting < st->queued && st->nconns < st->o.pool) {
        conn_open(st);
        continue;
      }
      break;
    }
    pg_op_t *op = next_op(st);
    if (op == NULL) break;
    send_op(st, idle, op);
  }
  update_refs(st);
  st->dispatching = 0;
}

/* ---- the store ---- */

/* The longest job_id kept (bytes): under the B-tree's entry limit (2704
 * bytes with the default 8 kB pages) with room for the tuple header. */
#define PG_MAX_ID 2048

/* The primary key's B-tree holds at most about a third of a page per
 * entry: a longer id would be refused by the server as an index row size
 * error (SQLSTATE 54000). Said before sending, naming the field (and for
 * create_jobs the item: one bad record fails the batch before anything
 * is written). Returns 1 with msg for such an id. */
static int id_too_long(const chr_store_req_t *req, char *msg, size_t msglen) {
  size_t n = req->op == CHR_OP_CREATE ? 1 : req->op == CHR_OP_CREATE_MANY ? req->ncreates : 0;
  for (size_t i = 0; i < n; i++) {
    const char *id = req->op == CHR_OP_CREATE ? req->job->job_id : req->creates[i].job->job_id;
    if (strlen(id) <= PG_MAX_ID) continue;
    char item[48] = "";
    if (req->op == CHR_OP_CREATE_MANY) snprintf(item, sizeof item, "create_jobs: item %zu: ", i + 1);
    snprintf(msg, msglen, "postgres: %sinvalid field 'job_id': %zu bytes is longer than the %d "
             "this store keeps", item, strlen(id), PG_MAX_ID);
    return 1;
  }
  return 0;
}

static int pg_submit(chr_store_t *s, chr_store_req_t *req) {
  pg_store_t *st = (pg_store_t *)s;
  pg_op_t *op = chr_pg_op_new(req);
  char msg[600];
  if (id_too_long(req, msg, sizeof msg)) {
    op_fail(st, op, CHR_EINVAL, msg);
    return 0;
  }
  /* Runs older than history_days go as runs are written: on every
   * record_runs, and with at most one completion a second, so that the
   * hot path does not search for them each time. */
  int64_t mono = chr_time_mono();
  if (req->op == CHR_OP_RECORD_RUNS ||
      (req->op == CHR_OP_COMPLETE && mono - st->age_pruned >= CHR_USEC)) {
    op->prune_before = req->issued - (int64_t)st->o.hist.days * 86400 * CHR_USEC;
    if (req->op == CHR_OP_COMPLETE) st->age_pruned = mono;
  }
  /* Engines claim, or watch the store (a scoped one's claims are
   * emulated over query_jobs); other users need no wake-up hints. */
  if ((req->op == CHR_OP_CLAIM || st->base.watchers != NULL) && st->listener == NULL &&
      !uv_is_active((uv_handle_t *)st->listen_timer))
    listen_open(st);
  if (st->down && req->op != CHR_OP_COMPLETE) {
    down_message(st, msg, sizeof msg);
    op_fail(st, op, CHR_EUNAVAIL, msg);
    return 0;
  }
  /* A large batch of completions goes as two statements, each on a
   * connection of its own, so that the server works on both halves at
   * once (and beside the claim that follows); a pool of one or two
   * connections keeps one. The split is by job, so the runs of one job
   * are still ranked in one statement. */
  int nparts = req->op == CHR_OP_COMPLETE && req->nitems >= 2 * SPLIT_MIN && st->o.pool >= 3 ? 2 : 1;
  pg_split_t *sp = NULL;
  if (nparts > 1) {
    sp = chr_calloc(1, sizeof *sp);
    sp->pending = nparts;
    sp->wake = CHR_TIME_NONE;
  }
  for (int part = 0; part < nparts; part++) {
    pg_op_t *p = part == 0 ? op : chr_pg_op_new(req);
    p->part = part;
    p->nparts = nparts;
    p->split = sp;
    chr_pg_build(&st->o, p);
    p->hold = req->op == CHR_OP_COMPLETE;
    enqueue(st, p, 0);
  }
  if (!st->ever_up) progress_watch(st);
  dispatch(st);
  return 0;
}

static void store_handle_close_cb(uv_handle_t *h) {
  pg_store_t *st = h->data;
  free(h);
  if (--st->handles == 0) {
    chr_pg_sql_free(&st->sql);
    chr_pg_opts_free(&st->o);
    free(st);
  }
}

static void pg_close(chr_store_t *s) {
  pg_store_t *st = (pg_store_t *)s;
  st->closing = 1;
  /* Take every pending request out first: their callbacks may run code
   * that touches the store, which must find it closed and empty. */
  pg_op_t *list = st->head, **tail = &list;
  while (*tail) tail = &(*tail)->next;
  st->head = st->tail = NULL;
  st->queued = 0;
  if (st->mig) {
    chr_pg_migrate_abort(st->mig);
    st->mig = NULL;
  }
  for (int i = 0; i < st->nconns; i++) {
    pg_conn_t *c = st->conns[i];
    if (c->state == PG_C_BUSY && c->role == ROLE_POOL && c->cb_arg) {
      pg_op_t *op = c->cb_arg;
      op->next = NULL;
      *tail = op;
      tail = &op->next;
    }
    chr_pg_conn_close(c);
  }
  st->nconns = 0;
  chr_pg_conn_close(st->listener);
  st->listener = NULL;
  uv_timer_t *timers[] = {st->retry_timer, st->notify_timer, st->listen_timer, st->progress_timer};
  for (int i = 0; i < 4; i++) uv_close((uv_handle_t *)timers[i], store_handle_close_cb);
  for (pg_op_t *op = list, *next; op; op = next) {
    next = op->next;
    op_fail(st, op, CHR_EUNAVAIL, "postgres store closed");
  }
}

static const chr_store_vtable_t pg_vtable = {"postgres", pg_submit, pg_close};

int chr_postgres_open(const chr_opts_t *opts, chr_store_t **out, char *err, size_t errlen) {
  pg_store_t *st = chr_calloc(1, sizeof *st);
  if (chr_pg_opts_parse(opts, &st->o, err, errlen) != 0) {
    free(st);
    return CHR_EINVAL;
  }
  chr_store_init(&st->base, &pg_vtable,
                 CHR_STORE_CAP_CLAIM | CHR_STORE_CAP_COMPLETE | CHR_STORE_CAP_RECOVER |
                     CHR_STORE_CAP_EXTEND | CHR_STORE_CAP_BATCH | CHR_STORE_CAP_COUNT |
                     CHR_STORE_CAP_NEXT_DUE | CHR_STORE_CAP_HISTORY | CHR_STORE_CAP_SCOPE |
                     CHR_STORE_CAP_QUEUES | CHR_STORE_CAP_CREATE_MANY |
                     /* Other processes' writes reach us only by NOTIFY. */
                     (st->o.notify ? CHR_STORE_CAP_HINTS : 0));
  chr_pg_sql_init(&st->sql, &st->o);
  st->notify_min = CHR_TIME_NONE;
  uv_timer_t **timers[] = {&st->retry_timer, &st->notify_timer, &st->listen_timer,
                           &st->progress_timer};
  for (int i = 0; i < 4; i++) {
    *timers[i] = chr_malloc(sizeof **timers[i]);
    uv_timer_init(chr_loop(), *timers[i]);
    (*timers[i])->data = st;
    uv_unref((uv_handle_t *)*timers[i]);
    st->handles++;
  }
  uint64_t r = (uint64_t)chr_time_now() ^ (uint64_t)chr_time_mono() << 20 ^ (uint64_t)(uintptr_t)st ^
               (uint64_t)uv_os_getpid() << 44;
  snprintf(st->token, sizeof st->token, "%016llx", (unsigned long long)(r * 0x9e3779b97f4a7c15ULL));
  /* Connect (and check the schema) now, so the first request finds a
   * connection ready; an idle store does not keep the loop alive. */
  conn_open(st);
  *out = &st->base;
  return 0;
}
