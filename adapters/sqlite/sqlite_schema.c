/* sqlite_schema.c - opening the SQLite store's file: its options, checks
 * that refuse a bad path or a file that is not ours before anything is
 * written, the connection's pragmas and SQL function
 * (chronis_patch), and the versioned schema (PRAGMA user_version) with its
 * forward migrations. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/job.h"
#include "core/json.h"
#include "sqlite_store.h"

/* Migration i takes the schema from version i to i + 1; a new database
 * runs them all. Append only: a released step never changes, since files
 * written by it exist. */
static const char *const migrations[SQ_SCHEMA_VERSION] = {
    /* 0 -> 1: the jobs table. The typed columns hold what SQL filters and
     * orders on; `record` is the whole job as JSON (chr_job_to_json), the
     * source of every read. Times are µs since the epoch, UTC; priority is
     * the effective one (absent = 5). */
    "CREATE TABLE jobs ("
    " job_id TEXT PRIMARY KEY NOT NULL,"
    " status TEXT NOT NULL,"
    " next_run_time INTEGER,"
    " priority INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL,"
    " claimed_by TEXT,"
    " lease_until INTEGER,"
    " trigger_type TEXT,"
    " record TEXT NOT NULL);"
    /* Claim: one priority level at a time, due jobs in time order. */
    "CREATE INDEX jobs_due ON jobs(status, priority, next_run_time, job_id) "
    "WHERE status = 'scheduled';"
    /* Recovery: running jobs by lease end. */
    "CREATE INDEX jobs_lease ON jobs(status, lease_until) WHERE status = 'running';",
    /* 1 -> 2: the earliest next_run_time of a status in one seek (the
     * engine asks after every claim), and status queries in result order
     * without a sort. */
    "CREATE INDEX jobs_next ON jobs(status, next_run_time, job_id);",
    /* 2 -> 3: run history (core/history.h), one row per run, kept apart
     * from its job, which it outlives. Every field has its column (no
     * JSON to encode or decode on the completion path); metadata is the
     * job's metadata as JSON text, filtered with `->`. Times are µs. No
     * foreign key, no uniqueness: the engine's run ids are unique, and a
     * write is one insert. runs_job serves a job's history and its
     * pruning to the keep count, runs_started the history of every job
     * and pruning by age; both hold their runs in the order of results
     * (run_id breaks ties), so neither needs a sort. */
    "CREATE TABLE runs ("
    " run_id TEXT NOT NULL,"
    " job_id TEXT NOT NULL,"
    " started_at INTEGER NOT NULL,"
    " outcome TEXT NOT NULL,"
    " name TEXT,"
    " func_name TEXT,"
    " node TEXT,"
    " scheduled_at INTEGER,"
    " ended_at INTEGER,"
    " attempt INTEGER,"
    " error_code TEXT,"
    " error_message TEXT,"
    " metadata TEXT);"
    "CREATE INDEX runs_job ON runs(job_id, started_at, run_id);"
    "CREATE INDEX runs_started ON runs(started_at, run_id);",
    /* 3 -> 4: named queues (docs/queues.md). jobs_queue holds the
     * scheduled jobs by queue (the record's `queue`, "default" without
     * one), so a claim reads its queues' due jobs only, whatever the
     * backlog of others; queue_rates, per queue, the start of its current
     * rate window (µs) and the jobs claimed in it, read and written in the
     * claim's transaction. */
    "CREATE INDEX jobs_queue ON jobs(coalesce(json_extract(record, '$.queue'), 'default'), "
    "priority, next_run_time, job_id) WHERE status = 'scheduled';"
    "CREATE TABLE queue_rates ("
    " queue TEXT PRIMARY KEY NOT NULL,"
    " window_start INTEGER NOT NULL,"
    " used INTEGER NOT NULL) WITHOUT ROWID;",
};

static int parse_long(const char *v, long lo, long hi, long *out) {
  char *end;
  long x;
  errno = 0;
  x = strtol(v, &end, 10);
  if (*v == '\0' || *end != '\0' || errno != 0 || x < lo || x > hi) return -1;
  *out = x;
  return 0;
}

int chr__sqlite_opts(const chr_opts_t *opts, char **path, sq_opts_t *o, char *err,
                     size_t errlen) {
  int rc = 0;
  o->busy_ms = 5000;
  o->sync = "NORMAL";
  o->cache_kib = 65536;
  o->wal_pages = 4000;
  o->quick_check = 0;
  o->hist.keep = CHR_HISTORY_DEFAULT;
  o->hist.days = CHR_HISTORY_DAYS_DEFAULT;
  o->index_paths = NULL;
  *path = NULL;
  static const char *const known[] = {"path",        "busy_timeout",       "cache_size",
                                      "synchronous", "wal_autocheckpoint", "check",
                                      "history",     "history_days",       "index_metadata",
                                      NULL};
  if (chr_opts_check_keys(opts, known, NULL, NULL, err, errlen) != 0) return CHR_EINVAL;
  for (size_t i = 0; i < opts->n && rc == 0; i++) {
    const char *k = opts->v[i].key, *v = opts->v[i].val;
    long x;
    int h;
    if (strcmp(k, "path") == 0) {
      if (*v != '\0') *path = chr_strdup(v);
    } else if (strcmp(k, "busy_timeout") == 0) {
      if (parse_long(v, 0, 3600000, &x) != 0)
        rc = chr_opts_fail(opts, err, errlen, "busy_timeout must be 0..3600000 ms, got '%s'", v);
      else o->busy_ms = (int)x;
    } else if (strcmp(k, "cache_size") == 0) {
      if (parse_long(v, 64, 1L << 30, &x) != 0)
        rc = chr_opts_fail(opts, err, errlen, "cache_size must be 64.. KiB, got '%s'", v);
      else o->cache_kib = x;
    } else if (strcmp(k, "wal_autocheckpoint") == 0) {
      if (parse_long(v, 0, 1L << 30, &x) != 0)
        rc = chr_opts_fail(opts, err, errlen, "wal_autocheckpoint must be a number of pages >= 0, "
                           "got '%s'", v);
      else o->wal_pages = x;
    } else if (strcmp(k, "synchronous") == 0) {
      static const char *const modes[] = {"off", "normal", "full", "extra"};
      static const char *const upper[] = {"OFF", "NORMAL", "FULL", "EXTRA"};
      size_t m;
      for (m = 0; m < 4 && strcasecmp(v, modes[m]) != 0; m++) {}
      if (m == 4)
        rc = chr_opts_fail(opts, err, errlen, "synchronous must be off, normal, full or extra, got "
                           "'%s'", v);
      else o->sync = upper[m];
    } else if (strcmp(k, "check") == 0) {
      if (strcmp(v, "quick") == 0) o->quick_check = 1;
      else if (strcmp(v, "none") == 0) o->quick_check = 0;
      else rc = chr_opts_fail(opts, err, errlen, "check must be quick or none, got '%s'", v);
    } else if (strcmp(k, "index_metadata") == 0) {
      char why[256];
      if (chr_meta_index_parse(v, &o->index_paths, why, sizeof why) != 0)
        rc = chr_opts_fail(opts, err, errlen, "option %s", why);
    } else if ((h = chr_history_opt(opts, k, v, &o->hist, err, errlen)) != 0) {
      if (h < 0) rc = h;
    }
  }
  if (rc == 0 && *path == NULL)
    rc = chr_opts_fail(opts, err, errlen, "a file path is required (sqlite:PATH, e.g. "
                       "sqlite:chronis.db, or sqlite::memory:; path= in options)");
  if (rc != 0) {
    free(*path);
    *path = NULL;
    chr_meta_index_free(o->index_paths);
    o->index_paths = NULL;
  }
  return rc;
}

/* Refuses paths SQLite would fail on with a vaguer message, before any
 * file is created. *existed tells whether the file was there. */
static int check_path(const char *path, int *existed, char *err, size_t errlen) {
  struct stat st;
  char *dir, *slash;
  int rc = 0;
  *existed = 0;
  if (stat(path, &st) == 0) {
    if (S_ISDIR(st.st_mode))
      return chr_errf(err, errlen, "sqlite: cannot open '%s': it is a folder, not a file", path);
    *existed = 1;
    return 0;
  }
  if (errno != ENOENT && errno != ENOTDIR)
    return chr_errf(err, errlen, "sqlite: cannot open '%s': %s", path, strerror(errno));
  dir = chr_strdup(path);
  slash = strrchr(dir, '/');
  if (slash == NULL) {
    free(dir);
    dir = chr_strdup(".");
  } else if (slash == dir) {
    dir[1] = '\0';
  } else {
    *slash = '\0';
  }
  if (stat(dir, &st) != 0)
    rc = chr_errf(err, errlen, "sqlite: cannot create '%s': folder '%s' %s", path, dir,
               errno == ENOENT ? "does not exist" : strerror(errno));
  else if (!S_ISDIR(st.st_mode))
    rc = chr_errf(err, errlen, "sqlite: cannot create '%s': '%s' is not a folder", path, dir);
  else if (access(dir, W_OK) != 0)
    rc = chr_errf(err, errlen, "sqlite: cannot create '%s': folder '%s' is not writable (%s)", path,
               dir, strerror(errno));
  free(dir);
  return rc;
}

/* The message for a failed call on the database at path. */
static int db_fail(sqlite3 *db, const char *path, const char *doing, char *err, size_t errlen) {
  int code = sqlite3_extended_errcode(db) & 0xff;
  const char *msg = sqlite3_errmsg(db);
  switch (code) {
  case SQLITE_NOTADB:
    return chr_errf(err, errlen, "sqlite: '%s' is not a SQLite database (%s)", path, msg);
  case SQLITE_CORRUPT:
    return chr_errf(err, errlen, "sqlite: '%s' is a corrupt SQLite database (%s)", path, msg);
  case SQLITE_BUSY:
  case SQLITE_LOCKED:
    return chr_errf(err, errlen, "sqlite: '%s' is locked by another connection while %s (%s)", path,
                 doing, msg);
  case SQLITE_READONLY:
    return chr_errf(err, errlen, "sqlite: '%s' is read-only (%s)", path, msg);
  case SQLITE_CANTOPEN: {
    int e = sqlite3_system_errno(db);
    if (e != 0)
      return chr_errf(err, errlen, "sqlite: cannot open '%s': %s (%s)", path, msg, strerror(e));
    return chr_errf(err, errlen, "sqlite: cannot open '%s': %s", path, msg);
  }
  default:
    return chr_errf(err, errlen, "sqlite: '%s': %s failed: %s", path, doing, msg);
  }
}

/* Runs one statement that returns at most one row; *out gets the first
 * column as an integer (0 when no row). */
static int query_int(sqlite3 *db, const char *sql, int64_t *out) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  if (rc != SQLITE_OK) return rc;
  rc = sqlite3_step(st);
  *out = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
  if (rc == SQLITE_ROW || rc == SQLITE_DONE) rc = SQLITE_OK;
  if (rc == SQLITE_OK) rc = sqlite3_reset(st);
  else sqlite3_reset(st);
  sqlite3_finalize(st);
  return rc;
}

/* Reads the file (only reads: a refused file is left exactly as it was)
 * and tells whether it is a chronis database this build can use. */
static int check_schema(sqlite3 *db, const char *path, int64_t *version, char *err,
                        size_t errlen) {
  int64_t ntables, has_jobs;
  if (query_int(db, "SELECT count(*) FROM sqlite_schema", &ntables) != SQLITE_OK)
    return db_fail(db, path, "reading the schema", err, errlen);
  if (query_int(db, "PRAGMA user_version", version) != SQLITE_OK)
    return db_fail(db, path, "reading user_version", err, errlen);
  if (query_int(db, "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE "
                    "'sqlite\\_%' ESCAPE '\\'", &ntables) != SQLITE_OK ||
      query_int(db, "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'jobs'",
                &has_jobs) != SQLITE_OK)
    return db_fail(db, path, "reading the schema", err, errlen);
  if (*version > SQ_SCHEMA_VERSION)
    return chr_errf(err, errlen, "sqlite: '%s' has schema version %lld, newer than version %d that "
                 "this chronis supports: upgrade chronis, or use another file", path,
                 (long long)*version, SQ_SCHEMA_VERSION);
  if (*version < 0)
    return chr_errf(err, errlen, "sqlite: '%s' is not a chronis database (user_version %lld)", path,
                 (long long)*version);
  if (*version == 0 && ntables > 0)
    return chr_errf(err, errlen, "sqlite: '%s' is not a chronis database: it holds %lld table(s) "
                 "but no chronis schema version (user_version 0)", path, (long long)ntables);
  if (*version > 0 && !has_jobs)
    return chr_errf(err, errlen, "sqlite: '%s' is not a chronis database: schema version %lld but "
                 "no jobs table", path, (long long)*version);
  return 0;
}

/* Reads the pages SQLite only touches lazily, so that a damaged table is
 * reported at open rather than by the first claim; the full walk
 * (PRAGMA quick_check, O(size)) only when asked with check=quick. */
static int check_pages(sqlite3 *db, const char *path, int64_t version, int quick, char *err,
                       size_t errlen) {
  static const struct {
    int64_t since; /* the schema version that made what the probe reads */
    const char *sql;
  } probes[] = {
      {1, "SELECT count(*) FROM (SELECT record FROM jobs LIMIT 1)"},
      {1, "SELECT count(*) FROM (SELECT job_id FROM jobs ORDER BY job_id LIMIT 1)"},
      {1, "SELECT count(*) FROM (SELECT 1 FROM jobs INDEXED BY jobs_due "
          "WHERE status = 'scheduled' LIMIT 1)"},
      {1, "SELECT count(*) FROM (SELECT 1 FROM jobs INDEXED BY jobs_lease "
          "WHERE status = 'running' LIMIT 1)"},
      {2, "SELECT count(*) FROM (SELECT 1 FROM jobs INDEXED BY jobs_next LIMIT 1)"},
      {3, "SELECT count(*) FROM (SELECT run_id FROM runs LIMIT 1)"},
      {3, "SELECT count(*) FROM (SELECT 1 FROM runs INDEXED BY runs_job LIMIT 1)"},
      {3, "SELECT count(*) FROM (SELECT 1 FROM runs INDEXED BY runs_started LIMIT 1)"},
  };
  int64_t n;
  for (size_t i = 0; i < sizeof probes / sizeof *probes; i++)
    if (version >= probes[i].since && query_int(db, probes[i].sql, &n) != SQLITE_OK)
      return db_fail(db, path, probes[i].since < 3 ? "reading the jobs table"
                                                   : "reading the runs table", err, errlen);
  if (quick) {
    sqlite3_stmt *st;
    const unsigned char *r = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA quick_check(1)", -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) r = sqlite3_column_text(st, 0);
    if (rc != SQLITE_ROW) {
      sqlite3_finalize(st);
      return db_fail(db, path, "checking the file", err, errlen);
    }
    if (r == NULL || strcmp((const char *)r, "ok") != 0) {
      chr_errf(err, errlen, "sqlite: '%s' is a corrupt SQLite database (quick_check: %s)", path,
            r ? (const char *)r : "no answer");
      sqlite3_finalize(st);
      return CHR_EINVAL;
    }
    sqlite3_finalize(st);
  }
  return 0;
}

static int exec(sqlite3 *db, const char *sql) {
  return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

/* index_metadata: an index per path on the expression queries name it
 * with (chr__sqlite_meta_expr), then status and next_run_time, so that a
 * tenant's jobs of one status come in query order (job_id breaks ties),
 * a tenant-scoped claim or next due time reads one range of it, and a
 * tenant query without a status one range, then sorts. Kept outside the
 * versioned schema: each process adds the ones its options name, and
 * none is ever dropped by chronis. */
static int create_indexes(sqlite3 *db, const char *path, char **paths, char *err,
                          size_t errlen) {
  for (char **p = paths; p && *p; p++) {
    chr_buf_t sql;
    int rc;
    chr_buf_init(&sql);
    chr_buf_adds(&sql, "CREATE INDEX IF NOT EXISTS ");
    chr__sqlite_meta_index(&sql, *p);
    chr_buf_adds(&sql, " ON jobs(");
    chr__sqlite_meta_expr(&sql, *p);
    chr_buf_adds(&sql, ", status, next_run_time, job_id)");
    rc = exec(db, sql.p);
    chr_buf_free(&sql);
    if (rc != SQLITE_OK) {
      char doing[300];
      snprintf(doing, sizeof doing, "creating the index of index_metadata path '%s'", *p);
      return db_fail(db, path, doing, err, errlen);
    }
  }
  return 0;
}

/* Applies the missing migrations in one write transaction. The version is
 * read again inside it: another process may have migrated meanwhile. */
static int migrate(sqlite3 *db, const char *path, char *err, size_t errlen) {
  int64_t v;
  char sql[64];
  if (exec(db, "BEGIN IMMEDIATE") != SQLITE_OK)
    return db_fail(db, path, "starting the schema upgrade", err, errlen);
  if (query_int(db, "PRAGMA user_version", &v) != SQLITE_OK) goto fail;
  if (v > SQ_SCHEMA_VERSION) {
    exec(db, "ROLLBACK");
    return chr_errf(err, errlen, "sqlite: '%s' has schema version %lld, newer than version %d that "
                 "this chronis supports: upgrade chronis, or use another file", path,
                 (long long)v, SQ_SCHEMA_VERSION);
  }
  if (v == SQ_SCHEMA_VERSION) {
    exec(db, "ROLLBACK");
    return 0;
  }
  for (; v < SQ_SCHEMA_VERSION; v++)
    if (exec(db, migrations[v]) != SQLITE_OK) goto fail;
  snprintf(sql, sizeof sql, "PRAGMA user_version = %d", SQ_SCHEMA_VERSION);
  if (exec(db, sql) != SQLITE_OK || exec(db, "COMMIT") != SQLITE_OK) goto fail;
  return 0;
fail:
  chr_errf(err, errlen, "sqlite: '%s': upgrading the schema to version %lld failed: %s", path,
        (long long)v + 1, sqlite3_errmsg(db));
  exec(db, "ROLLBACK");
  return CHR_EINVAL;
}

/* ---- chronis_patch(record, key, value, ...)
 *
 * The engine's bulk writes (claim, recovery, lease extension) change a few
 * typed fields of many records in one UPDATE. json_set would do, but it
 * parses every record into a tree and renders it again, a quarter of a
 * claim's cost; this walks the members once and copies the others as they
 * are. Each key is a typed field; a string value replaces or adds the
 * member (as a JSON string), NULL removes it. The members come out in
 * chr_job_to_json's order, so the record stays byte for byte what writing
 * the job again would give. Registered on the connection only: nothing in
 * the schema uses it, so any SQLite tool can still read the file. */

#define PATCH_MAX 8

typedef struct patch_pair {
  const char *key, *val; /* val NULL: remove */
  size_t klen, vlen;
  int field;
  int quote; /* a string value; an integer one is written as a number */
} patch_pair_t;

/* Field numbers as auxdata pointers: a key argument is a literal, so its
 * lookup is done once per statement, not once per row. */
static const int field_numbers[CHR_F__COUNT] = {
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21};

static int patch_field(sqlite3_context *ctx, sqlite3_value **argv, int i, const char *key,
                       size_t klen) {
  const int *cached = sqlite3_get_auxdata(ctx, i);
  int f;
  if (cached != NULL) return *cached;
  f = key ? chr_job_field_index(key, klen) : -1;
  if (f >= 0 && sqlite3_value_type(argv[i]) == SQLITE_TEXT)
    sqlite3_set_auxdata(ctx, i, (void *)&field_numbers[f], NULL);
  return f;
}

static void add_member(chr_buf_t *b, const char *k, size_t kn, const char *v, size_t vn,
                       int quote) {
  if (b->len > 1) chr_buf_addc(b, ',');
  chr_buf_addc(b, '"');
  chr_buf_add(b, k, kn);
  chr_buf_add(b, "\":", 2);
  if (quote) chr_json_add_string(b, v, vn);
  else chr_buf_add(b, v, vn);
}

static void fn_patch(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  patch_pair_t p[PATCH_MAX];
  const char *rec = (const char *)sqlite3_value_text(argv[0]), *it, *end;
  int n = (argc - 1) / 2, next = 0, cursor = 0, r;
  chr_json_span_t k, v;
  chr_buf_t b;
  if (rec == NULL) {
    sqlite3_result_null(ctx);
    return;
  }
  if (argc % 2 != 1 || n > PATCH_MAX) {
    sqlite3_result_error(ctx, "chronis_patch: expected a record and key/value pairs", -1);
    return;
  }
  for (int i = 0; i < n; i++) {
    patch_pair_t t;
    int j;
    t.key = (const char *)sqlite3_value_text(argv[1 + 2 * i]);
    t.klen = (size_t)sqlite3_value_bytes(argv[1 + 2 * i]);
    t.val = (const char *)sqlite3_value_text(argv[2 + 2 * i]);
    t.vlen = (size_t)sqlite3_value_bytes(argv[2 + 2 * i]);
    t.field = patch_field(ctx, argv, 1 + 2 * i, t.key, t.klen);
    t.quote = sqlite3_value_type(argv[2 + 2 * i]) != SQLITE_INTEGER;
    if (t.field < 0) {
      sqlite3_result_error(ctx, "chronis_patch: keys must be typed job fields", -1);
      return;
    }
    for (j = i; j > 0 && p[j - 1].field > t.field; j--) p[j] = p[j - 1];
    p[j] = t;
  }
  end = rec + sqlite3_value_bytes(argv[0]);
  chr_buf_init(&b);
  chr_buf_reserve(&b, (size_t)(end - rec) + 256);
  chr_buf_addc(&b, '{');
  for (it = rec; (r = chr_json_next_member(&it, end, &k, &v)) == 1;) {
    int rank = CHR_F__COUNT, i;
    /* Typed members come first, in field order: look from where the last
     * one was found. Anything else (extra members) ranks after them. */
    for (i = cursor; i < CHR_F__COUNT; i++) {
      const char *name = chr_job_fields[i].name;
      if (name[0] == k.p[0] && strncmp(name, k.p, k.n) == 0 && name[k.n] == '\0') {
        rank = cursor = i;
        break;
      }
    }
    /* Pairs up to this member's place go first; one for this very key
     * takes the member's place. */
    for (; next < n && p[next].field <= rank; next++)
      if (p[next].val != NULL)
        add_member(&b, p[next].key, p[next].klen, p[next].val, p[next].vlen, p[next].quote);
    if (rank < CHR_F__COUNT) {
      for (i = 0; i < n; i++)
        if (p[i].field == rank) break;
      if (i < n) continue;
    }
    add_member(&b, k.p, k.n, v.p, v.n, 0);
  }
  if (r < 0) {
    /* Not written by chronis: left as it is (the columns carry the claim
     * or lease), for the reader to report (chr__sqlite_row_job). Failing
     * here would fail the whole claim, for every job. */
    chr_buf_free(&b);
    sqlite3_result_value(ctx, argv[0]);
    return;
  }
  for (; next < n; next++)
    if (p[next].val != NULL)
      add_member(&b, p[next].key, p[next].klen, p[next].val, p[next].vlen, p[next].quote);
  chr_buf_addc(&b, '}');
  sqlite3_result_text(ctx, b.p, (int)b.len, free);
}

static int setup(sqlite3 *db, const char *path, int memory, const sq_opts_t *o, char *err,
                 size_t errlen) {
  char sql[160];
  if (!memory) {
    sqlite3_stmt *st;
    const unsigned char *mode = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
    if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) mode = sqlite3_column_text(st, 0);
    if (mode == NULL || strcmp((const char *)mode, "wal") != 0) {
      if (mode != NULL)
        chr_errf(err, errlen, "sqlite: cannot use WAL mode on '%s' (journal mode stays '%s'; WAL "
              "needs a local file system)", path, (const char *)mode);
      else db_fail(db, path, "enabling WAL mode", err, errlen);
      sqlite3_finalize(st);
      return CHR_EINVAL;
    }
    sqlite3_finalize(st);
  }
  snprintf(sql, sizeof sql, "PRAGMA synchronous = %s; PRAGMA cache_size = -%ld; "
           "PRAGMA wal_autocheckpoint = %ld;", o->sync, o->cache_kib, o->wal_pages);
  if (exec(db, sql) != SQLITE_OK || exec(db, "PRAGMA temp_store = MEMORY") != SQLITE_OK)
    return db_fail(db, path, "setting pragmas", err, errlen);
  return 0;
}

/* Takes back the file a failed open created, while it is still empty and
 * has no WAL: then no other process has written to it. */
static void remove_created(const char *path) {
  struct stat st;
  char *wal = chr_sprintf("%s-wal", path);
  if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0 && access(wal, F_OK) != 0)
    unlink(path);
  free(wal);
}

int chr__sqlite_open(sq_store_t *s, const char *path_in, const sq_opts_t *o, char *err,
                     size_t errlen) {
  char *path = chr_strdup(path_in);
  sqlite3 *db = NULL;
  int existed = 1, memory, rc;
  int64_t version;
  if (sqlite3_libversion_number() < 3038000) {
    free(path);
    return chr_errf(err, errlen, "sqlite: the SQLite library is %s; chronis needs 3.38 or newer "
                 "(RETURNING, the -> operator)", sqlite3_libversion());
  }
  memory = strcmp(path, ":memory:") == 0;
  if (!memory && (rc = check_path(path, &existed, err, errlen)) != 0) goto fail;
  if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                      SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE, NULL) != SQLITE_OK) {
    int e = db ? sqlite3_system_errno(db) : ENOMEM;
    if (db == NULL || (sqlite3_errcode(db) & 0xff) != SQLITE_CANTOPEN)
      rc = db ? db_fail(db, path, "opening", err, errlen)
              : chr_errf(err, errlen, "sqlite: cannot open '%s': out of memory", path);
    else if (existed)
      rc = chr_errf(err, errlen, "sqlite: cannot open '%s': %s", path,
                 e ? strerror(e) : sqlite3_errmsg(db));
    else
      rc = chr_errf(err, errlen, "sqlite: cannot create '%s': its folder refuses new files (%s)",
                 path, e ? strerror(e) : sqlite3_errmsg(db));
    goto fail;
  }
  sqlite3_busy_timeout(db, o->busy_ms);
  if ((rc = check_schema(db, path, &version, err, errlen)) != 0) goto fail;
  if (sqlite3_db_readonly(db, "main") == 1) {
    rc = chr_errf(err, errlen, "sqlite: cannot open '%s' for writing: the file is read-only", path);
    goto fail;
  }
  if (version > 0 && (rc = check_pages(db, path, version, o->quick_check, err, errlen)) != 0) goto fail;
  if ((rc = setup(db, path, memory, o, err, errlen)) != 0) goto fail;
  if (version < SQ_SCHEMA_VERSION && (rc = migrate(db, path, err, errlen)) != 0) goto fail;
  if ((rc = create_indexes(db, path, o->index_paths, err, errlen)) != 0) goto fail;
  if (sqlite3_create_function_v2(db, "chronis_patch", -1,
                                 SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS, NULL,
                                 fn_patch, NULL, NULL, NULL) != SQLITE_OK) {
    rc = db_fail(db, path, "registering chronis_patch", err, errlen);
    goto fail;
  }
  s->db = db;
  s->opts = *o;
  s->path = path;
  s->memory = memory;
  s->busy_ms = o->busy_ms;
  return 0;
fail:
  sqlite3_close_v2(db);
  if (!existed) remove_created(path);
  free(path);
  return rc;
}

int chr__sqlite_reopen(sq_store_t *s, char *err, size_t errlen) {
  sq_store_t fresh;
  int rc;
  memset(&fresh, 0, sizeof fresh);
  if ((rc = chr__sqlite_open(&fresh, s->path, &s->opts, err, errlen)) != 0) return rc;
  s->db = fresh.db;
  fresh.db = NULL;
  chr__sqlite_close(&fresh);
  return 0;
}

void chr__sqlite_disconnect(sq_store_t *s, int optimize) {
  for (int i = 0; i < SQ__COUNT; i++) {
    sqlite3_finalize(s->stmt[i]);
    s->stmt[i] = NULL;
  }
  for (int i = 0; i < SQ_DYN_MAX; i++) {
    sqlite3_finalize(s->dyn[i].stmt);
    free(s->dyn[i].sql);
    s->dyn[i].stmt = NULL;
    s->dyn[i].sql = NULL;
    s->dyn[i].used = 0;
  }
  if (s->db != NULL) {
    /* Keeps the planner's statistics fresh for the filter queries, on a
     * sample; skipped rather than waited for when another process holds
     * the lock. */
    if (optimize) {
      sqlite3_busy_timeout(s->db, 0);
      sqlite3_exec(s->db, "PRAGMA analysis_limit = 400; PRAGMA optimize", NULL, NULL, NULL);
    }
    sqlite3_close_v2(s->db);
  }
  s->db = NULL;
}

void chr__sqlite_close(sq_store_t *s) {
  chr__sqlite_disconnect(s, 1);
  free(s->path);
  s->path = NULL;
}
