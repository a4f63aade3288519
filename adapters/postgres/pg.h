/* pg.h - internals of the PostgreSQL store, shared by its units: its
 * options (pg_url.c), one non-blocking libpq connection on the loop
 * (pg_conn.c), the SQL of every operation and the decoding of its rows
 * (pg_sql.c), versioned migrations (pg_migrate.c) and the store itself:
 * pool, queue, failures, wake-up hints (postgres.c). */
#ifndef CHR_PG_H
#define CHR_PG_H

#include <stdint.h>
#include <stdio.h>

#include <libpq-fe.h>
#include <uv.h>

#include "core/common.h"
#include "core/store.h"

/* ---- options (pg_url.c) ---- */

#define PG_MAX_POOL 64
#define PG_IDENT_MAX 63 /* NAMEDATALEN - 1 */

typedef struct pg_opts {
  char table[PG_IDENT_MAX + 1], schema[PG_IDENT_MAX + 1];
  char qtable[2 * PG_IDENT_MAX + 8];   /* "schema"."table", quoted */
  char qruns[2 * PG_IDENT_MAX + 8];    /* "schema"."table_runs": run history */
  /* Named queues: "schema"."table_queue_rates", claims per queue and rate
   * window, and "schema"."table_queue_room", the function that serialises
   * the claims of a queue with limits and says how many each may take. */
  char qrates[2 * PG_IDENT_MAX + 8], qroom[2 * PG_IDENT_MAX + 8];
  char channel[PG_IDENT_MAX + 1];      /* LISTEN/NOTIFY channel */
  /* index_metadata: the metadata paths with an expression index each
   * (NULL-terminated, plain paths; never NULL once parsed). */
  char **index_paths;
  int pool, auto_migrate, notify;
  double timeout, connect_timeout;     /* seconds; timeout 0 = none */
  chr_history_opts_t hist;             /* history, history_days */
  /* libpq keywords and values, NULL-terminated, for PQconnectStartParams
   * (values taken as they are: no dbname expansion). */
  const char **keys, **vals;
  char *desc; /* postgres://user@host:port/dbname, for messages */
  /* libpq looks host names up with a blocking getaddrinfo unless hostaddr
   * is given: when `resolve` is set, the connection looks the names in
   * `host` (comma-separated, as libpq takes it) up with uv_getaddrinfo
   * first and passes the addresses as hostaddr. `port` is the port list. */
  char *host, *port;
  int resolve;
} pg_opts_t;

/* Reads the store's options (from a postgres:// URL or a table: host,
 * port, user, password, dbname, table, ...). Returns 0, or CHR_EINVAL with
 * a message naming the bad option. */
int chr_pg_opts_parse(const chr_opts_t *opts, pg_opts_t *o, char *err, size_t errlen);
void chr_pg_opts_free(pg_opts_t *o);
/* 1 when s is an identifier we accept unquoted-safe: [A-Za-z_][A-Za-z0-9_]*,
 * 1..63 characters. */
int chr_pg_ident_ok(const char *s);
/* Writes the name `base` + `suffix` as a quoted identifier, shortened with a
 * hash when it would pass 63 characters (PostgreSQL would truncate it
 * silently, and two long names could then collide). */
void chr_pg_derived_name(const char *base, const char *suffix, char *out, size_t outlen);
uint64_t chr_pg_fnv1a(const void *p, size_t n, uint64_t h);
/* The quoted name of the index_metadata index of `path` on table `table`:
 * <table>_meta_<path>, shortened with hashes when it would pass 63
 * characters. */
void chr_pg_meta_index_name(const char *table, const char *path, char *out, size_t outlen);
/* The expression an index_metadata index is built on and a query names,
 * literally, so that the planner matches the two: "<rec> -> 'metadata'
 * -> 'k1' -> ..." for a plain path (rec: "record", "t.record"). Each key
 * is an object member, as chr_meta_filter_match steps. */
void chr_pg_meta_expr(chr_buf_t *b, const char *rec, const char *path);
#define PG_FNV_SEED 0xcbf29ce484222325ULL

/* ---- one connection (pg_conn.c) ---- */

typedef struct pg_conn pg_conn_t;

enum { PG_EV_READY, PG_EV_BROKEN, PG_EV_NOTIFY };
/* READY: connected. BROKEN: the connection failed or was lost (c->errmsg);
 * the owner must chr_pg_conn_close it. NOTIFY: relname/payload of one
 * notification. */
typedef void (*pg_event_cb)(pg_conn_t *c, int ev, const char *relname, const char *payload);
/* The result of one query: res is the first error result, else the last
 * result; NULL when the connection broke first (c->errmsg says why). res is
 * cleared by the caller after the callback. */
typedef void (*pg_result_cb)(pg_conn_t *c, PGresult *res, void *arg);

enum { PG_C_CONNECTING, PG_C_IDLE, PG_C_BUSY, PG_C_DEAD };

struct pg_conn {
  PGconn *pg;
  const pg_opts_t *o;
  uv_getaddrinfo_t *gai; /* a host name lookup in flight */
  int resolved, nentries; /* host entries looked up; entries in the lists */
  chr_buf_t hosts, addrs, ports; /* lists built for libpq from the lookups */
  uv_poll_t *poll;
  uv_timer_t *timer; /* connect timeout, query timeout, deferred failure */
  int fd, events, state, refd, handles, closing, timed_out;
  double timeout; /* seconds for each query, 0 = none */
  pg_event_cb on_event;
  pg_result_cb cb;
  void *cb_arg;
  PGresult *res; /* being collected */
  void *data;    /* the owner's */
  uint32_t prepared; /* owner's bookkeeping: statements prepared here */
  int role, up;      /* owner's: its use, and whether it ever connected */
  char errmsg[400];
};

pg_conn_t *chr_pg_conn_start(const pg_opts_t *o, pg_event_cb on_event, void *data);
/* Sends one query; the result comes to cb exactly once (also when the
 * connection breaks). nparams < 0: a simple query string that may hold
 * several statements and no parameters. */
void chr_pg_conn_query(pg_conn_t *c, const char *sql, int nparams, const char *const *values,
                       int binary, pg_result_cb cb, void *arg);
void chr_pg_conn_prepare(pg_conn_t *c, const char *name, const char *sql, int nparams,
                         pg_result_cb cb, void *arg);
void chr_pg_conn_exec(pg_conn_t *c, const char *name, int nparams, const char *const *values,
                      int binary, pg_result_cb cb, void *arg);
/* Whether the connection's handles keep the loop alive. */
void chr_pg_conn_ref(pg_conn_t *c, int on);
/* Ends the connection (PQfinish) and frees it once its handles closed. No
 * callback runs after this, not even a pending query's. */
void chr_pg_conn_close(pg_conn_t *c);

/* The error of a result or of the connection, as a store error code and a
 * message "postgres: ..." (SQLSTATE mapped: connection classes and server
 * shutdown -> CHR_EUNAVAIL, statement and lock timeouts -> CHR_ETIMEOUT,
 * data errors -> CHR_EINVAL, ...). Returns 0 for a successful result. */
int chr_pg_result_error(pg_conn_t *c, const PGresult *res, char *msg, size_t msglen);
/* 1 when the SQLSTATE of res says the transaction was rolled back by a
 * deadlock or serialization failure: the statement may simply be retried. */
int chr_pg_result_retryable(const PGresult *res);

/* ---- statements and rows (pg_sql.c) ---- */

enum {
  PG_S_GET,
  PG_S_BATCH,
  PG_S_CREATE,
  PG_S_DELETE,
  PG_S_CLAIM,
  PG_S_COMPLETE,
  PG_S_RECOVER,
  PG_S_EXTEND,
  PG_S_NEXT_DUE,
  PG_S_NOTIFY,
  PG_S_RECORD_RUNS,
  PG_S_QCLAIM,
  PG_S_CREATE_MANY,
  PG_S__COUNT
};

typedef struct pg_sql {
  char *text[PG_S__COUNT];
  int nparams[PG_S__COUNT];
} pg_sql_t;

void chr_pg_sql_init(pg_sql_t *q, const pg_opts_t *o);
void chr_pg_sql_free(pg_sql_t *q);
extern const char *const chr_pg_stmt_names[PG_S__COUNT];

/* One request on its way through the queue: a prepared statement (stmt >= 0)
 * or dynamic SQL text whose only variable parts are column names chosen by
 * the adapter; every value is a parameter. */
typedef struct pg_op pg_op_t;
struct pg_op {
  chr_store_req_t *req; /* NULL for the adapter's own statements (NOTIFY) */
  pg_op_t *next;
  int stmt;  /* PG_S_*, or -1 with sql */
  char *sql;
  int nparams, cap;
  char **params;
  int attempts;
  unsigned hold : 1;  /* kept while the server is down, retried after a lost
                         connection (completions: applying one twice is
                         harmless, losing one runs a job again) */
  unsigned retry : 1; /* sent once on a connection that broke */
  int64_t wake;       /* earliest next_run_time written, for hints */
  /* Runs that started before this are pruned by the statement (record_runs,
   * completions): CHR_TIME_NONE for no age pruning this time. Set before
   * chr_pg_build. */
  int64_t prune_before;
  /* Completions: this op carries the items whose job_id falls in part
   * `part` of `nparts` (chr_pg_item_part); nparts 0 is all of them. The
   * parts of one request share `split` and run on several connections at
   * once; the request is answered when the last one ends. Set before
   * chr_pg_build. */
  int part, nparts;
  struct pg_split *split;
};

/* The part (of nparts) that the completion item for job `id` goes to:
 * every item of one job in the same part, so that its runs are ranked
 * and pruned in one statement. */
int chr_pg_item_part(const char *id, int nparts);

pg_op_t *chr_pg_op_new(chr_store_req_t *req);
void chr_pg_op_free(pg_op_t *op);
void chr_pg_param(pg_op_t *op, const char *s);   /* NULL = SQL NULL; copied */
void chr_pg_param_take(pg_op_t *op, char *s);    /* takes a malloc'ed string */
void chr_pg_param_time(pg_op_t *op, int64_t us); /* CHR_TIME_NONE = NULL */
void chr_pg_param_int(pg_op_t *op, int64_t v);

/* Fills op from its request (statement, parameters); the request has
 * passed chr_store_submit's checks. */
void chr_pg_build(const pg_opts_t *o, pg_op_t *op);
/* Whether path is one of o's index_metadata paths. */
int chr_pg_path_indexed(const pg_opts_t *o, const char *path);
/* Turns a successful result into the request's outputs; returns 0 or a
 * CHR_E* code with the request failed. Sets op->wake. */
int chr_pg_decode(pg_op_t *op, const PGresult *res);

/* create_jobs: the records of req by job_id, then by their place in the
 * batch (the first of each id first); malloc'ed, req->ncreates long. */
typedef struct pg_create_ref {
  const char *id;
  size_t i;
} pg_create_ref_t;
pg_create_ref_t *chr_pg_create_refs(const chr_store_req_t *req);

/* A job from the 9 columns of a row starting at col (binary format). */
chr_job_t *chr_pg_row_job(const PGresult *res, int row, int col, char *err, size_t errlen);
/* Rewrites the JSON text PostgreSQL prints (jsonb: spaced, keys ordered by
 * length) into chronis' canonical form (keys sorted bytewise, no spaces,
 * numbers as the Lua encoder writes them). Returns 0 or -1 when malformed. */
int chr_pg_json_canon(const char *s, size_t n, chr_buf_t *out);

/* ---- migrations (pg_migrate.c) ---- */

enum { PG_MIG_CHECK, PG_MIG_MIGRATE, PG_MIG_STATUS };
typedef struct pg_migrator pg_migrator_t;
/* status 0, or CHR_EUNAVAIL (connection), CHR_EINVAL (schema: checksum
 * mismatch, pending migrations in CHECK mode, failed DDL) with msg. */
typedef void (*pg_migrate_cb)(void *data, int status, const char *msg);
/* Runs on c, which must be idle, and leaves it idle (or broken). CHECK
 * reads the history only; MIGRATE applies pending migrations under an
 * advisory lock; STATUS prints the history to out. */
pg_migrator_t *chr_pg_migrate_run(pg_conn_t *c, const pg_opts_t *o, int mode, FILE *out,
                                  pg_migrate_cb cb, void *data);
/* Frees a runner whose connection is being closed (no callback). */
void chr_pg_migrate_abort(pg_migrator_t *m);
/* The newest version this build knows. */
int chr_pg_migrate_latest(void);

#endif
