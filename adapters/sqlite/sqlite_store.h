/* sqlite_store.h - internals shared by the parts of the SQLite store
 * ("sqlite:PATH"): sqlite_schema.c opens the file (options, checks,
 * pragmas, versioned schema), sqlite.c answers requests, sqlite_query.c
 * turns filters into SQL. Not a public header: the store is reached
 * through chr_sqlite_store_open (store.h). */
#ifndef CHR_SQLITE_STORE_H
#define CHR_SQLITE_STORE_H

#include <stdint.h>

#include <sqlite3.h>

#include "core/store.h"

/* The schema version this build writes; see the migrations in
 * sqlite_schema.c and docs/sqlite.md. */
#define SQ_SCHEMA_VERSION 4

/* Fixed statements, prepared on first use and kept for the connection. */
typedef enum {
  SQ_BEGIN,
  SQ_COMMIT,
  SQ_ROLLBACK,
  SQ_GET,
  SQ_GET_BATCH,
  SQ_INSERT,
  SQ_REWRITE,
  SQ_DELETE,
  SQ_DELETE_OWNED,
  SQ_LEVEL,
  SQ_CLAIM,
  SQ_RECOVER,
  SQ_EXTEND,
  SQ_NEXT_DUE,
  SQ_RUN_INSERT,
  SQ_RUN_KEEP,
  SQ_RUN_TRIM,
  SQ_RUN_EXPIRE,
  SQ_QUEUE_RUNNING,
  SQ_RATE_GET,
  SQ_RATE_PUT,
  SQ__COUNT
} sq_stmt_id_t;

/* Filter queries vary in shape; the latest few are kept by SQL text. */
#define SQ_DYN_MAX 16

typedef struct sq_dyn {
  char *sql;
  sqlite3_stmt *stmt;
  uint64_t used; /* LRU clock */
} sq_dyn_t;

/* The owners a connection claimed for, kept to name the jobs it loses
 * when its file is removed (sqlite.c); the oldest is dropped past this. */
#define SQ_OWNERS_MAX 32

/* The options of the store (docs/sqlite.md), kept to reopen the file. */
typedef struct sq_opts {
  int busy_ms;
  const char *sync; /* PRAGMA synchronous value */
  long cache_kib;
  long wal_pages;
  int quick_check;
  chr_history_opts_t hist; /* history, history_days */
  /* index_metadata: the metadata paths given an expression index
   * (NULL-terminated, chr_meta_index_parse; NULL for none). Owned by the
   * store once it is open. */
  char **index_paths;
} sq_opts_t;

typedef struct sq_store {
  chr_store_t base;
  sqlite3 *db; /* NULL while the file is gone and reopening it fails */
  sq_opts_t opts; /* to reopen the path with the same options */
  char *path;  /* as given, for messages */
  int memory;  /* sqlite::memory:, no file to watch */
  sqlite3_stmt *stmt[SQ__COUNT];
  sq_dyn_t dyn[SQ_DYN_MAX];
  uint64_t dyn_clock;
  int64_t last_stamp;
  int busy_ms;
  /* Watching the file (sqlite.c): when it was last checked (monotonic
   * µs), why reopening it failed (malloc'ed, NULL when it did not), the
   * claimants, and the jobs they held in a file that was removed. */
  int64_t file_checked;
  char *reopen_error;
  char *owners[SQ_OWNERS_MAX];
  size_t nowners;
  char **lost;
  size_t nlost;
  /* When runs past history_days were last pruned (monotonic µs). */
  int64_t runs_expired;
} sq_store_t;

/* sqlite_schema.c: reads the store's options (path, busy_timeout, ...)
 * into *path (malloc'ed) and *o, or returns CHR_EINVAL naming the bad one. */
int chr__sqlite_opts(const chr_opts_t *opts, char **path, sq_opts_t *o, char *err,
                     size_t errlen);
/* Opens and checks the database at path, brings its schema to
 * SQ_SCHEMA_VERSION and registers chronis_patch. Returns 0 and fills
 * s->db, s->opts, s->path and s->memory, or CHR_EINVAL with a message
 * naming the path (and then nothing has been written). */
int chr__sqlite_open(sq_store_t *s, const char *path, const sq_opts_t *o, char *err,
                     size_t errlen);
/* Opens s->path again after chr__sqlite_disconnect, with s->opts, as
 * chr__sqlite_open does (a missing file is created with the schema).
 * Returns 0 and sets s->db, or CHR_EINVAL with a message. */
int chr__sqlite_reopen(sq_store_t *s, char *err, size_t errlen);
/* Finalizes every statement and closes the connection (s->db NULL);
 * optimize runs PRAGMA optimize first, for a file that is still ours. */
void chr__sqlite_disconnect(sq_store_t *s, int optimize);
/* chr__sqlite_disconnect, then frees the path. */
void chr__sqlite_close(sq_store_t *s);

/* sqlite.c, for the queries: fails req with the connection's last error
 * (call before resetting the statement that failed); decodes the record
 * in column col (NULL and req failed when it is not a job); drops the jobs
 * gathered by a request that then failed; a JSON array of strings, for
 * json_each() (malloc'ed). */
void chr__sqlite_fail(sq_store_t *s, chr_store_req_t *req, const char *doing);
/* What every read selects: the record, then the columns a stand-in is made
 * of when the record cannot be read (chr__sqlite_row_job). */
#define SQ_ROW_COLS "record, job_id, status, claimed_by, lease_until, next_run_time, priority, updated_at"
chr_job_t *chr__sqlite_row_job(sq_store_t *s, chr_store_req_t *req, sqlite3_stmt *st, int col);
void chr__sqlite_drop_jobs(chr_store_req_t *req);
char *chr__sqlite_ids_json(char **ids, size_t n);

/* The columns of a run (table runs), in the order SQ_RUN_INSERT binds
 * them and query_runs reads them. */
#define SQ_RUN_COLS "run_id, job_id, started_at, outcome, name, func_name, node, scheduled_at, " \
                    "ended_at, attempt, error_code, error_message, metadata"

/* sqlite_query.c: the SQL that names metadata path `path` (plain,
 * chr_meta_path_is_plain), appended to b: the expression of its index,
 * record -> '$.metadata."k1"."k2"', and the index's name,
 * "jobs_meta_<path>" (quoted). A query names the path with the very
 * text of the index, a literal, or SQLite would not match the two. */
void chr__sqlite_meta_expr(chr_buf_t *b, const char *path);
void chr__sqlite_meta_index(chr_buf_t *b, const char *path);
/* Whether SQL expresses scope f whole (a metadata $eq or $in on a plain
 * path, values other than null), as the scoped engine statements need:
 * the store emulates a claim, a recovery or a next due time whose scope
 * it does not (store_fallback.c). */
int chr__sqlite_scope_sql(const chr_filter_t *f);

/* The scoped forms of the engine's statements (docs/sqlite.md): the
 * statement with the terms of scope req->filter added, their parameters
 * bound, prepared; the caller binds the fixed ones (SQ_SCOPED_*), steps,
 * resets the statement and then frees *q. NULL (req failed, *q freed)
 * when it cannot be prepared. */
typedef enum {
  SQ_SCOPED_CLAIM,    /* ?1 owner, ?2 lease, ?3 stamp, ?4 lease and ?5 stamp as
                         text, ?6 now, ?7 limit; RETURNING SQ_ROW_COLS */
  SQ_SCOPED_RECOVER,  /* as SQ_RECOVER */
  SQ_SCOPED_NEXT_DUE, /* no fixed parameter; one row, next_run_time */
  SQ_SCOPED_QUEUE_CLAIM /* as SQ_SCOPED_CLAIM, of one queue: ?8 its name */
} sq_scoped_t;

typedef struct sq_query sq_query_t;
sqlite3_stmt *chr__sqlite_scoped(sq_store_t *s, chr_store_req_t *req, sq_scoped_t which,
                                 sq_query_t **q);
void chr__sqlite_query_free(sq_query_t *q);

/* sqlite_query.c: CHR_OP_QUERY, CHR_OP_COUNT and CHR_OP_QUERY_RUNS. */
void chr__sqlite_query(sq_store_t *s, chr_store_req_t *req);
void chr__sqlite_count(sq_store_t *s, chr_store_req_t *req);
void chr__sqlite_query_runs(sq_store_t *s, chr_store_req_t *req);

#endif
