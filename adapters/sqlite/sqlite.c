/* sqlite.c - the embedded, persistent store ("sqlite:PATH"): every request
 * is answered synchronously, inside submit, on one connection per store
 * (sqlite_schema.c opens it).
 *
 * A job is one row: typed columns for what SQL filters and orders on, and
 * `record`, the whole job as JSON (chr_job_to_json), which every read
 * decodes. Writes keep the two in step: a read-modify-write (update, CAS,
 * completion with updates) decodes the record, applies the partial record
 * in C (chr_job_apply, the memory store's semantics), and rewrites every
 * column; the engine's bulk writes (claim, recovery, lease extension)
 * change columns and record together in one UPDATE, the record through
 * chronis_patch (below). Runs (history.h) are rows of their own table,
 * written in the transaction of the completion they end.
 *
 * Several processes may share the file. SQLite serializes writers, and
 * every read-modify-write runs in one BEGIN IMMEDIATE transaction (the
 * write lock is taken before the read), so a CAS compares and writes with
 * no other writer in between, a claim's candidates cannot be claimed by
 * another process before its UPDATE, and updates are never lost.
 *
 * A claim with queues (core/store.h) runs in the same transaction: per
 * queue, its running jobs counted (global concurrency), its rate window
 * read from queue_rates and written back, and one UPDATE of its due jobs,
 * so no other process claims between the counts and the claim.
 *
 * A connection holds the file it opened, not its path: a file removed or
 * replaced under it would be used on, unseen by every other process. The
 * store checks at most once a second and reopens the path (below). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/job.h"
#include "core/json.h"
#include "core/log.h"
#include "sqlite_store.h"
#include "core/store.h"
#include "core/time.h"

/* The engine's statements name their index (INDEXED BY): each has one
 * right plan, and statistics gathered later (PRAGMA optimize) must not
 * trade it for a scan. A plan that cannot be had fails at prepare. */
static const char *const sql_text[SQ__COUNT] = {
    [SQ_BEGIN] = "BEGIN IMMEDIATE",
    [SQ_COMMIT] = "COMMIT",
    [SQ_ROLLBACK] = "ROLLBACK",
    [SQ_GET] = "SELECT " SQ_ROW_COLS " FROM jobs WHERE job_id = ?1",
    [SQ_GET_BATCH] =
        "SELECT " SQ_ROW_COLS " FROM jobs WHERE job_id IN (SELECT value FROM json_each(?1))",
    [SQ_INSERT] = "INSERT INTO jobs (job_id, status, next_run_time, priority, updated_at, "
                  "claimed_by, lease_until, trigger_type, record) "
                  "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (job_id) DO NOTHING",
    [SQ_REWRITE] = "UPDATE jobs SET status = ?2, next_run_time = ?3, priority = ?4, "
                   "updated_at = ?5, claimed_by = ?6, lease_until = ?7, trigger_type = ?8, "
                   "record = ?9 WHERE job_id = ?1",
    [SQ_DELETE] = "DELETE FROM jobs WHERE job_id = ?1",
    [SQ_DELETE_OWNED] = "DELETE FROM jobs WHERE job_id = ?1 AND claimed_by = ?2",
    /* The next lower priority that has scheduled jobs: claim walks the
     * levels from the top, so each level is one bounded range of jobs_due
     * and a level whose earliest job is not due costs one seek. */
    [SQ_LEVEL] = "SELECT max(priority) FROM jobs INDEXED BY jobs_due "
                 "WHERE status = 'scheduled' AND priority < ?1",
    /* One level's due jobs, by rowid: jobs_due holds it, so the UPDATE
     * goes straight to the rows. RETURNING's row order is unspecified: the
     * caller sorts each level. */
    [SQ_CLAIM] = "UPDATE jobs SET status = 'running', claimed_by = ?1, lease_until = ?2, "
                 "updated_at = ?3, record = chronis_patch(record, 'status', 'running', "
                 "'updated_at', ?5, 'claimed_by', ?1, 'lease_until', ?4) "
                 "WHERE rowid IN (SELECT rowid FROM jobs INDEXED BY jobs_due "
                 "WHERE status = 'scheduled' AND priority = ?6 AND next_run_time <= ?7 "
                 "ORDER BY next_run_time, job_id LIMIT ?8) RETURNING " SQ_ROW_COLS,
    [SQ_RECOVER] = "UPDATE jobs INDEXED BY jobs_lease SET status = 'scheduled', "
                   "claimed_by = NULL, lease_until = NULL, updated_at = ?1, "
                   "record = chronis_patch(record, 'status', 'scheduled', 'updated_at', ?2, "
                   "'claimed_by', NULL, 'lease_until', NULL, "
                   "'retry_count', coalesce(json_extract(record, '$.retry_count'), 0) + 1, "
                   "'attempt', coalesce(json_extract(record, '$.attempt'), 0) + 1) "
                   "WHERE status = 'running' AND lease_until < ?3 RETURNING next_run_time",
    [SQ_EXTEND] = "UPDATE jobs SET lease_until = ?1, updated_at = ?2, "
                  "record = chronis_patch(record, 'updated_at', ?4, 'lease_until', ?3) "
                  "WHERE job_id IN (SELECT value FROM json_each(?5)) AND status = 'running' "
                  "AND claimed_by = ?6",
    [SQ_NEXT_DUE] = "SELECT min(next_run_time) FROM jobs INDEXED BY jobs_next "
                    "WHERE status = 'scheduled'",
    [SQ_RUN_INSERT] = "INSERT INTO runs (" SQ_RUN_COLS ") "
                      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    /* The newest of a job's runs past its keep count: a walk down
     * runs_job from the job's newest run, reading the index only, that
     * ends at once when the job has fewer (then nothing is deleted). */
    [SQ_RUN_KEEP] = "SELECT started_at, run_id FROM runs INDEXED BY runs_job WHERE job_id = ?1 "
                    "ORDER BY started_at DESC, run_id DESC LIMIT 1 OFFSET ?2",
    /* That run and the job's older ones, one range of runs_job. */
    [SQ_RUN_TRIM] = "DELETE FROM runs INDEXED BY runs_job WHERE job_id = ?1 "
                    "AND (started_at, run_id) <= (?2, ?3)",
    [SQ_RUN_EXPIRE] = "DELETE FROM runs INDEXED BY runs_started WHERE started_at < ?1",
    /* A queue's running jobs, for its global concurrency: a walk of the
     * running jobs, which jobs_lease holds apart. */
    [SQ_QUEUE_RUNNING] = "SELECT count(*) FROM jobs INDEXED BY jobs_lease "
                         "WHERE status = 'running' AND " SQ_QUEUE_EXPR " = ?1",
    [SQ_RATE_GET] = "SELECT window_start, used FROM queue_rates WHERE queue = ?1",
    /* Never back to an older window: a claimer whose clock is behind
     * another's must not reset the count of the newer one. */
    [SQ_RATE_PUT] = "INSERT INTO queue_rates (queue, window_start, used) VALUES (?1, ?2, ?3) "
                    "ON CONFLICT (queue) DO UPDATE SET window_start = ?2, used = ?3 "
                    "WHERE ?2 >= window_start",
};

/* ---- statements and errors */

/* Fails req with the connection's last error; call before resetting the
 * statement that failed. */
void chr__sqlite_fail(sq_store_t *s, chr_store_req_t *req, const char *doing) {
  int code = sqlite3_extended_errcode(s->db) & 0xff;
  if (code == SQLITE_BUSY || code == SQLITE_LOCKED)
    chr_store_req_fail(req, CHR_EUNAVAIL, "sqlite '%s': %s: the database is still locked by "
                       "another connection after %d ms (busy_timeout)", s->path, doing,
                       s->busy_ms);
  else
    chr_store_req_fail(req, code == SQLITE_TOOBIG ? CHR_EINVAL : CHR_EUNAVAIL,
                       "sqlite '%s': %s: %s", s->path, doing, sqlite3_errmsg(s->db));
}

static sqlite3_stmt *stmt(sq_store_t *s, sq_stmt_id_t id) {
  if (s->stmt[id] == NULL &&
      sqlite3_prepare_v3(s->db, sql_text[id], -1, SQLITE_PREPARE_PERSISTENT, &s->stmt[id],
                         NULL) != SQLITE_OK)
    return NULL;
  return s->stmt[id];
}

/* Runs a statement that returns no rows and resets it. */
static int run(sq_store_t *s, chr_store_req_t *req, sqlite3_stmt *st, const char *doing) {
  int rc = st ? sqlite3_step(st) : SQLITE_ERROR;
  if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
    chr__sqlite_fail(s, req, doing);
    if (st) sqlite3_reset(st);
    return -1;
  }
  sqlite3_reset(st);
  return 0;
}

static int begin(sq_store_t *s, chr_store_req_t *req) {
  return run(s, req, stmt(s, SQ_BEGIN), "starting a write transaction");
}

/* Ends a transaction without writing, or undoes one after an error (the
 * request's error is already set and stays). */
static void rollback(sq_store_t *s) {
  sqlite3_stmt *st = stmt(s, SQ_ROLLBACK);
  if (st == NULL || sqlite3_get_autocommit(s->db)) return;
  sqlite3_step(st);
  sqlite3_reset(st);
}

/* A failed COMMIT leaves the transaction open: it is rolled back. */
static int commit(sq_store_t *s, chr_store_req_t *req) {
  if (run(s, req, stmt(s, SQ_COMMIT), "committing") == 0) return 0;
  rollback(s);
  return -1;
}

/* ---- rows */

static void bind_time(sqlite3_stmt *st, int i, const chr_job_t *j, chr_field_t f, int64_t v) {
  if (chr_job_has(j, f) && v != CHR_TIME_NONE) sqlite3_bind_int64(st, i, v);
  else sqlite3_bind_null(st, i);
}

/* Binds ?1..?9 of SQ_INSERT / SQ_REWRITE: the columns of j and its record
 * text (borrowed until the statement is reset). */
static void bind_row(sqlite3_stmt *st, const chr_job_t *j, const chr_buf_t *rec) {
  sqlite3_bind_text(st, 1, j->job_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, chr_status_names[j->status], -1, SQLITE_STATIC);
  bind_time(st, 3, j, CHR_F_NEXT_RUN_TIME, j->next_run_time);
  sqlite3_bind_int64(st, 4, chr_job_priority(j));
  bind_time(st, 5, j, CHR_F_UPDATED_AT, j->updated_at);
  if (chr_job_has(j, CHR_F_CLAIMED_BY) && j->claimed_by != NULL)
    sqlite3_bind_text(st, 6, j->claimed_by, -1, SQLITE_STATIC);
  else sqlite3_bind_null(st, 6);
  bind_time(st, 7, j, CHR_F_LEASE_UNTIL, j->lease_until);
  if (chr_job_has(j, CHR_F_TRIGGER_TYPE) && j->trigger_type > CHR_TT_NONE &&
      j->trigger_type < CHR_TT__COUNT)
    sqlite3_bind_text(st, 8, chr_trigger_type_names[j->trigger_type], -1, SQLITE_STATIC);
  else sqlite3_bind_null(st, 8);
  sqlite3_bind_text(st, 9, rec->p, (int)rec->len, SQLITE_STATIC);
}

/* Decodes the record in column col of the current row (the columns of
 * SQ_ROW_COLS from col on). A record that cannot be read (edited or
 * corrupted behind chronis' back) does not fail the request, which would
 * keep every other job from being read or claimed: its job comes back as
 * a stand-in made of the row's columns, with j->unreadable naming what is
 * wrong (the engine fails such a job). NULL (and req failed) only when the
 * row has no job id. */
chr_job_t *chr__sqlite_row_job(sq_store_t *s, chr_store_req_t *req, sqlite3_stmt *st,
                               int col) {
  const char *text = (const char *)sqlite3_column_text(st, col);
  size_t n = (size_t)sqlite3_column_bytes(st, col);
  chr_job_t *j = chr_job_new();
  char err[200] = "it holds no job_id";
  if (text != NULL && chr_job_from_json(j, text, n, err, sizeof err) == 0 &&
      chr_job_has(j, CHR_F_JOB_ID))
    return j;
  chr_job_clear(j);
  const char *id = (const char *)sqlite3_column_text(st, col + 1);
  if (id == NULL) {
    chr_store_req_fail(req, CHR_EUNAVAIL, "sqlite '%s': a stored job has no job_id", s->path);
    chr_job_free(j);
    return NULL;
  }
  chr_job_set_str(j, CHR_F_JOB_ID, id);
  const char *st_name = (const char *)sqlite3_column_text(st, col + 2);
  int status = st_name ? chr_enum_parse(chr_status_names, CHR_ST__COUNT, st_name) : 0;
  if (status) chr_job_set_int(j, CHR_F_STATUS, status);
  if (sqlite3_column_type(st, col + 3) == SQLITE_TEXT)
    chr_job_set_str(j, CHR_F_CLAIMED_BY, (const char *)sqlite3_column_text(st, col + 3));
  static const chr_field_t times[] = {CHR_F_LEASE_UNTIL, CHR_F_NEXT_RUN_TIME};
  for (int i = 0; i < 2; i++)
    if (sqlite3_column_type(st, col + 4 + i) == SQLITE_INTEGER)
      chr_job_set_time(j, times[i], sqlite3_column_int64(st, col + 4 + i));
  if (sqlite3_column_type(st, col + 6) == SQLITE_INTEGER)
    chr_job_set_int(j, CHR_F_PRIORITY, (int32_t)sqlite3_column_int64(st, col + 6));
  if (sqlite3_column_type(st, col + 7) == SQLITE_INTEGER)
    chr_job_set_time(j, CHR_F_UPDATED_AT, sqlite3_column_int64(st, col + 7));
  chr_job_set_unreadable(j, "the stored record is unreadable (%s)",
                         text == NULL ? "no record" : err);
  return j;
}

/* Drops the jobs gathered so far by a request that then failed. */
void chr__sqlite_drop_jobs(chr_store_req_t *req) {
  for (size_t i = 0; i < req->njobs; i++) chr_job_free(req->jobs[i]);
  req->njobs = 0;
}

/* updated_at for a write: the wall clock, but strictly increasing on this
 * connection, and past the row's previous value (another process may have
 * written it in the same microsecond), so a CAS on updated_at never takes
 * a changed job for an unchanged one. */
static int64_t next_stamp(sq_store_t *s, const chr_job_t *old) {
  int64_t now = chr_time_now();
  s->last_stamp = now > s->last_stamp ? now : s->last_stamp + 1;
  if (old != NULL && chr_job_has(old, CHR_F_UPDATED_AT) && old->updated_at >= s->last_stamp)
    s->last_stamp = old->updated_at + 1;
  return s->last_stamp;
}

/* Reads job id inside the current transaction: 1 and *out, 0 when
 * missing, -1 on error (req failed). */
static int load(sq_store_t *s, chr_store_req_t *req, const char *id, chr_job_t **out) {
  sqlite3_stmt *st = stmt(s, SQ_GET);
  int rc;
  *out = NULL;
  if (st == NULL) {
    chr__sqlite_fail(s, req, "reading a job");
    return -1;
  }
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    *out = chr__sqlite_row_job(s, req, st, 0);
    rc = *out ? 1 : -1;
  } else if (rc == SQLITE_DONE) {
    rc = 0;
  } else {
    chr__sqlite_fail(s, req, "reading a job");
    rc = -1;
  }
  sqlite3_reset(st);
  return rc;
}

/* Applies u to j (loaded in this transaction), stamps it and writes the
 * row back. */
static int rewrite(sq_store_t *s, chr_store_req_t *req, chr_job_t *j, const chr_job_t *u) {
  sqlite3_stmt *st = stmt(s, SQ_REWRITE);
  chr_buf_t rec;
  int rc;
  if (u != NULL) chr_job_apply(j, u);
  chr_job_set_time(j, CHR_F_UPDATED_AT, next_stamp(s, j));
  if (st == NULL) {
    chr__sqlite_fail(s, req, "writing a job");
    return -1;
  }
  chr_buf_init(&rec);
  chr_job_to_json(j, &rec);
  bind_row(st, j, &rec);
  rc = run(s, req, st, "writing a job");
  chr_buf_free(&rec);
  return rc;
}

/* ---- requests */

static void op_create(sq_store_t *s, chr_store_req_t *req) {
  const chr_job_t *src = req->job;
  sqlite3_stmt *st;
  chr_job_t *j;
  chr_buf_t rec;
  int rc;
  if ((st = stmt(s, SQ_INSERT)) == NULL) {
    chr__sqlite_fail(s, req, "creating a job");
    return;
  }
  j = chr_job_dup(src);
  /* Null means absent in a stored record. */
  j->mask &= ~j->nullmask;
  j->nullmask = 0;
  chr_job_set_time(j, CHR_F_UPDATED_AT, next_stamp(s, NULL));
  chr_buf_init(&rec);
  chr_job_to_json(j, &rec);
  bind_row(st, j, &rec);
  rc = sqlite3_step(st);
  if (rc != SQLITE_DONE) chr__sqlite_fail(s, req, "creating a job");
  else if (sqlite3_changes(s->db) == 0)
    chr_store_req_fail(req, CHR_EDUP, "job '%s' already exists", j->job_id);
  sqlite3_reset(st);
  chr_buf_free(&rec);
  if (req->status != 0) {
    chr_job_free(j);
    return;
  }
  chr_store_req_push_job(req, j);
  chr_store_wake_job(&s->base, j);
}

/* create_jobs: every record written as op_create writes it, in one
 * transaction (one commit, one sync, for the batch) with the insert
 * statement bound and stepped once per record. ON CONFLICT DO NOTHING
 * makes a stored id, or one inserted earlier in this batch, a row not
 * changed: that record is a duplicate and the first one stays. The
 * records are borrowed, so each is written from a shallow copy (its
 * strings shared) carrying the stamp and without its nulls. The engines
 * hear of the batch once, at its earliest time. */
static void op_create_many(sq_store_t *s, chr_store_req_t *req) {
  sqlite3_stmt *st = stmt(s, SQ_INSERT);
  int64_t stamp, when = CHR_TIME_NONE;
  chr_buf_t rec;
  req->count = 0;
  if (st == NULL) {
    chr__sqlite_fail(s, req, "creating jobs");
    return;
  }
  if (req->ncreates == 0 || begin(s, req) != 0) return;
  stamp = next_stamp(s, NULL);
  chr_buf_init(&rec);
  for (size_t i = 0; i < req->ncreates; i++) {
    chr_job_t j = *req->creates[i].job;
    j.mask &= ~j.nullmask; /* null means absent in a stored record */
    j.nullmask = 0;
    j.mask |= CHR_BIT(CHR_F_UPDATED_AT);
    j.updated_at = stamp;
    rec.len = 0;
    chr_job_to_json(&j, &rec);
    bind_row(st, &j, &rec);
    if (sqlite3_step(st) != SQLITE_DONE) {
      chr__sqlite_fail(s, req, "creating jobs");
      sqlite3_reset(st);
      break;
    }
    if (sqlite3_changes(s->db) == 0) {
      req->creates[i].result = CHR_EDUP;
    } else {
      req->creates[i].result = 0;
      req->count++;
      when = chr_time_earlier(when, chr_job_wake_time(&j));
    }
    sqlite3_reset(st);
  }
  chr_buf_free(&rec);
  if (req->status != 0 || commit(s, req) != 0) {
    rollback(s);
    req->count = 0;
    return;
  }
  if (when != CHR_TIME_NONE) chr_store_wake(&s->base, when);
}

static void op_get(sq_store_t *s, chr_store_req_t *req) {
  chr_job_t *j;
  if (load(s, req, req->id, &j) == 1) chr_store_req_push_job(req, j);
}

/* A JSON array of strings, for json_each(): id lists as one parameter. */
char *chr__sqlite_ids_json(char **ids, size_t n) {
  chr_buf_t b;
  chr_buf_init(&b);
  chr_buf_addc(&b, '[');
  for (size_t i = 0; i < n; i++) {
    if (i) chr_buf_addc(&b, ',');
    chr_json_add_string(&b, ids[i], strlen(ids[i]));
  }
  chr_buf_addc(&b, ']');
  return chr_buf_steal(&b);
}

static void op_get_batch(sq_store_t *s, chr_store_req_t *req) {
  sqlite3_stmt *st = stmt(s, SQ_GET_BATCH);
  char *ids;
  int rc;
  if (st == NULL) {
    chr__sqlite_fail(s, req, "reading jobs");
    return;
  }
  ids = chr__sqlite_ids_json(req->ids, req->nids);
  sqlite3_bind_text(st, 1, ids, -1, SQLITE_STATIC);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    chr_job_t *j = chr__sqlite_row_job(s, req, st, 0);
    if (j == NULL) break;
    chr_store_req_push_job(req, j);
  }
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) chr__sqlite_fail(s, req, "reading jobs");
  if (req->status != 0) chr__sqlite_drop_jobs(req);
  sqlite3_reset(st);
  free(ids);
}

/* update_job, and compare_and_swap_job when expected is given: read,
 * compare, apply and write under the write lock BEGIN IMMEDIATE takes
 * before the read. SQLite has one writer at a time, so no other
 * connection, in this process or another, can change the row between the
 * comparison (in C: chr_job_matches, every expected field, the memory
 * store's rules) and the write. */
static void op_write(sq_store_t *s, chr_store_req_t *req, const chr_job_t *expected) {
  chr_job_t *j;
  req->ok = 0;
  if (begin(s, req) != 0) return;
  switch (load(s, req, req->id, &j)) {
  case -1: rollback(s); return;
  case 0:
    rollback(s);
    chr_store_req_fail(req, CHR_ENOTFOUND, "job '%s' not found", req->id);
    return;
  }
  if (j->unreadable != NULL) { /* rewriting it would drop what could not be read */
    rollback(s);
    chr_store_req_fail(req, CHR_EINVAL, "sqlite '%s': job '%s': %s (fix the row, or delete the "
                       "job)", s->path, req->id, j->unreadable);
    chr_job_free(j);
    return;
  }
  if (expected != NULL && !chr_job_matches(j, expected)) {
    rollback(s);
    chr_job_free(j);
    return;
  }
  if (rewrite(s, req, j, req->job) != 0 || commit(s, req) != 0) {
    rollback(s);
    chr_job_free(j);
    return;
  }
  req->ok = 1;
  chr_store_req_push_job(req, j);
  chr_store_wake_job(&s->base, j);
}

static void op_update(sq_store_t *s, chr_store_req_t *req) {
  op_write(s, req, NULL);
}

static void op_cas(sq_store_t *s, chr_store_req_t *req) {
  op_write(s, req, req->expected);
}

static void op_delete(sq_store_t *s, chr_store_req_t *req) {
  sqlite3_stmt *st = stmt(s, SQ_DELETE);
  if (st != NULL) sqlite3_bind_text(st, 1, req->id, -1, SQLITE_STATIC);
  if (run(s, req, st, "deleting a job") == 0) req->ok = sqlite3_changes(s->db) > 0;
}

/* ---- the file under the connection
 *
 * SQLITE_FCNTL_HAS_MOVED compares the open file with what its path names
 * now (one stat). When they differ, the connection is closed (without a
 * checkpoint or optimize: SQLite leaves the path's -wal and -shm alone
 * for a moved file) and the path opened again as at first, a missing file
 * created with the schema. Jobs this connection's claimants held in the
 * old file are gone with it: their completions find nothing, and the
 * store names each one as it comes back. */

#define SQ_FILE_CHECK_US 1000000

static void note_owner(sq_store_t *s, const char *owner) {
  for (size_t i = s->nowners; i-- > 0;)
    if (strcmp(s->owners[i], owner) == 0) return;
  if (s->nowners == SQ_OWNERS_MAX) {
    free(s->owners[0]);
    memmove(s->owners, s->owners + 1, (SQ_OWNERS_MAX - 1) * sizeof *s->owners);
    s->nowners--;
  }
  s->owners[s->nowners++] = chr_strdup(owner);
}

/* Adds to s->lost the jobs running in the (old) file under one of this
 * connection's claimants; returns how many. */
static size_t remember_lost(sq_store_t *s) {
  sqlite3_stmt *st;
  char *owners;
  size_t n = 0;
  if (s->nowners == 0 ||
      sqlite3_prepare_v2(s->db, "SELECT job_id FROM jobs WHERE status = 'running' AND "
                         "claimed_by IN (SELECT value FROM json_each(?1))", -1, &st,
                         NULL) != SQLITE_OK)
    return 0;
  owners = chr__sqlite_ids_json(s->owners, s->nowners);
  sqlite3_bind_text(st, 1, owners, -1, SQLITE_STATIC);
  while (sqlite3_step(st) == SQLITE_ROW) {
    const char *id = (const char *)sqlite3_column_text(st, 0);
    if (id == NULL) continue;
    s->lost = chr_realloc(s->lost, (s->nlost + 1) * sizeof *s->lost);
    s->lost[s->nlost++] = chr_strdup(id);
    n++;
  }
  sqlite3_finalize(st);
  free(owners);
  return n;
}

/* Names the completions of jobs claimed from a removed file. */
static void report_lost(sq_store_t *s, chr_store_req_t *req) {
  for (size_t i = 0; i < req->nitems; i++) {
    chr_completion_t *it = &req->items[i];
    size_t k;
    for (k = 0; k < s->nlost && strcmp(s->lost[k], it->job_id) != 0; k++) {}
    if (k == s->nlost) continue;
    if (it->result != 0)
      chr_log(CHR_LOG_ERROR, it->job_id, "sqlite '%s': job '%s' was claimed from a database "
              "file that has since been removed or replaced; its completion finds no claim of "
              "it in the file now at that path (%s): its result is lost", s->path, it->job_id,
              chr_strerror(it->result));
    free(s->lost[k]);
    s->lost[k] = s->lost[--s->nlost];
  }
}

/* Opens the path again; logs a failure once per distinct reason. */
static void reopen(sq_store_t *s) {
  char err[512];
  if (chr__sqlite_reopen(s, err, sizeof err) == 0) {
    chr_log(CHR_LOG_INFO, NULL, "sqlite '%s': reopened the database at its path", s->path);
    free(s->reopen_error);
    s->reopen_error = NULL;
    return;
  }
  if (s->reopen_error == NULL || strcmp(s->reopen_error, err) != 0)
    chr_log(CHR_LOG_ERROR, NULL, "sqlite '%s': reopening the database failed: %s; requests "
            "fail (unavailable) until it succeeds, tried again every second", s->path, err);
  free(s->reopen_error);
  s->reopen_error = chr_strdup(err);
}

/* At most once a second: whether the file is still at the path (else it
 * is reopened), and, while reopening fails, another try. 0 when s->db can
 * be used, else req is failed. */
static int check_file(sq_store_t *s, chr_store_req_t *req) {
  int64_t t = chr_time_mono();
  if (t - s->file_checked >= SQ_FILE_CHECK_US) {
    int moved = 0;
    s->file_checked = t;
    if (s->db != NULL &&
        sqlite3_file_control(s->db, "main", SQLITE_FCNTL_HAS_MOVED, &moved) == SQLITE_OK &&
        moved) {
      size_t n = remember_lost(s);
      char held[160] = "";
      if (n > 0)
        snprintf(held, sizeof held, "; %zu job(s) running here were claimed from the old file: "
                 "their completions will find nothing and their results are lost", n);
      chr_log(CHR_LOG_ERROR, NULL, "sqlite '%s': the database file was removed or replaced "
              "while open; reopening the path (a new database if no file is there)%s", s->path,
              held);
      chr__sqlite_disconnect(s, 0);
    }
    if (s->db == NULL) reopen(s);
  }
  if (s->db != NULL) return 0;
  chr_store_req_fail(req, CHR_EUNAVAIL, "sqlite '%s': the database file was removed or replaced, "
                     "and reopening it failed: %s", s->path, s->reopen_error);
  return -1;
}

/* ---- run history
 *
 * A run is one row of `runs`, written in the transaction of the
 * completion it ends (or of record_runs), and followed in the same
 * transaction by the pruning of its job to its keep count. Runs that
 * started more than history_days ago are pruned on every record_runs, and
 * by completions at most once a second: one range delete on runs_started,
 * usually of nothing, that need not follow every batch. */

#define SQ_EXPIRE_EVERY_US 1000000

static void bind_text_or_null(sqlite3_stmt *st, int i, const char *v) {
  if (v != NULL) sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
  else sqlite3_bind_null(st, i);
}

static void bind_time_or_null(sqlite3_stmt *st, int i, int64_t us) {
  if (us != CHR_TIME_NONE) sqlite3_bind_int64(st, i, us);
  else sqlite3_bind_null(st, i);
}

/* Prunes job id to its keep newest runs, in the open transaction: 0, or
 * -1 with req failed. A DELETE ... WHERE rowid IN (SELECT ... OFFSET)
 * would do it in one statement, but builds a temporary table on every
 * call, which cost as much as writing the run; this reads one index
 * entry past the keep count, and deletes only when there is one. */
static int trim_runs(sq_store_t *s, chr_store_req_t *req, const char *id, int32_t keep) {
  sqlite3_stmt *edge = stmt(s, SQ_RUN_KEEP), *del = stmt(s, SQ_RUN_TRIM);
  int rc;
  if (edge == NULL || del == NULL) {
    chr__sqlite_fail(s, req, "pruning a job's runs");
    return -1;
  }
  sqlite3_bind_text(edge, 1, id, -1, SQLITE_STATIC);
  sqlite3_bind_int(edge, 2, keep);
  rc = sqlite3_step(edge);
  if (rc == SQLITE_DONE) {
    sqlite3_reset(edge);
    return 0;
  }
  if (rc != SQLITE_ROW) {
    chr__sqlite_fail(s, req, "pruning a job's runs");
    sqlite3_reset(edge);
    return -1;
  }
  sqlite3_bind_text(del, 1, id, -1, SQLITE_STATIC);
  sqlite3_bind_value(del, 2, sqlite3_column_value(edge, 0));
  sqlite3_bind_value(del, 3, sqlite3_column_value(edge, 1));
  rc = run(s, req, del, "pruning a job's runs");
  sqlite3_reset(edge);
  return rc;
}

/* Writes run r, then prunes its job to its keep count, in the open
 * transaction. 1 when written, 0 when its keep count is 0 (not written),
 * -1 with req failed. */
static int put_run(sq_store_t *s, chr_store_req_t *req, const chr_runrec_t *r) {
  int32_t keep = chr_runrec_keep(r, s->opts.hist.keep);
  sqlite3_stmt *ins;
  if (keep <= 0) return 0;
  if ((ins = stmt(s, SQ_RUN_INSERT)) == NULL) {
    chr__sqlite_fail(s, req, "writing a run");
    return -1;
  }
  sqlite3_bind_text(ins, 1, r->run_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(ins, 2, r->job_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(ins, 3, r->started_at);
  sqlite3_bind_text(ins, 4, chr_outcome_names[r->outcome], -1, SQLITE_STATIC);
  bind_text_or_null(ins, 5, r->name);
  bind_text_or_null(ins, 6, r->func_name);
  bind_text_or_null(ins, 7, r->node);
  bind_time_or_null(ins, 8, r->scheduled_at);
  bind_time_or_null(ins, 9, r->ended_at);
  if (r->attempt > 0) sqlite3_bind_int(ins, 10, r->attempt);
  else sqlite3_bind_null(ins, 10);
  bind_text_or_null(ins, 11, r->error_code);
  bind_text_or_null(ins, 12, r->error_message);
  bind_text_or_null(ins, 13, r->metadata);
  if (run(s, req, ins, "writing a run") != 0 || trim_runs(s, req, r->job_id, keep) != 0)
    return -1;
  return 1;
}

/* Deletes the runs that started more than history_days before now, in
 * the open transaction. 0, or -1 with req failed. */
static int expire_runs(sq_store_t *s, chr_store_req_t *req, int64_t now) {
  sqlite3_stmt *st = stmt(s, SQ_RUN_EXPIRE);
  if (st != NULL)
    sqlite3_bind_int64(st, 1, now - (int64_t)s->opts.hist.days * 86400 * CHR_USEC);
  if (run(s, req, st, "pruning old runs") != 0) return -1;
  s->runs_expired = chr_time_mono();
  return 0;
}

/* One transaction: the runs, each job pruned after its run, then by age. */
static void op_record_runs(sq_store_t *s, chr_store_req_t *req) {
  int64_t written = 0;
  int rc = 0;
  req->count = 0;
  if (begin(s, req) != 0) return;
  for (size_t i = 0; i < req->nruns && rc >= 0; i++)
    if ((rc = put_run(s, req, req->runs[i])) > 0) written++;
  if (req->status == 0) expire_runs(s, req, req->issued);
  if (req->status != 0 || commit(s, req) != 0) {
    rollback(s);
    return;
  }
  req->count = written;
}

/* ---- the engine's operations */

/* Binds the claimer's parameters, ?1-?5 of every claim statement. */
static void bind_claimer(sqlite3_stmt *up, const chr_store_req_t *req, int64_t lease,
                         int64_t stamp, const char *lease_iso, const char *stamp_iso) {
  sqlite3_bind_text(up, 1, req->owner, -1, SQLITE_STATIC);
  sqlite3_bind_int64(up, 2, lease);
  sqlite3_bind_int64(up, 3, stamp);
  sqlite3_bind_text(up, 4, lease_iso, -1, SQLITE_STATIC);
  sqlite3_bind_text(up, 5, stamp_iso, -1, SQLITE_STATIC);
}

/* Steps a claim statement, adding the jobs it returns to req, then resets it. */
static void take_claimed(sq_store_t *s, chr_store_req_t *req, sqlite3_stmt *up) {
  int rc;
  while ((rc = sqlite3_step(up)) == SQLITE_ROW) {
    chr_job_t *j = chr__sqlite_row_job(s, req, up, 0);
    if (j == NULL) break;
    chr_store_req_push_job(req, j);
  }
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) chr__sqlite_fail(s, req, "claiming jobs");
  sqlite3_reset(up);
}

/* A scoped claim: one UPDATE takes the scope's due jobs in claim order,
 * from a range of the scope's index_metadata index when it has one: the
 * due jobs of every priority, sorted, where the unscoped claim walks
 * jobs_due one level at a time (that index holds every tenant's jobs). */
static void claim_scoped(sq_store_t *s, chr_store_req_t *req, int64_t lease, int64_t stamp,
                         const char *lease_iso, const char *stamp_iso) {
  sq_query_t *q;
  sqlite3_stmt *up = chr__sqlite_scoped(s, req, SQ_SCOPED_CLAIM, &q);
  if (up == NULL) return;
  bind_claimer(up, req, lease, stamp, lease_iso, stamp_iso);
  sqlite3_bind_int64(up, 6, req->now);
  sqlite3_bind_int64(up, 7, req->limit < 0 ? -1 : req->limit);
  take_claimed(s, req, up);
  chr__sqlite_query_free(q);
  /* RETURNING's row order is unspecified. */
  if (req->status == 0 && req->njobs > 1)
    qsort(req->jobs, req->njobs, sizeof *req->jobs, chr_job_cmp_claim);
}

/* Unscoped: for each priority level from the highest, one UPDATE ...
 * RETURNING takes that level's due jobs in time order, up to what the
 * limit leaves. */
static void claim_levels(sq_store_t *s, chr_store_req_t *req, int64_t lease, int64_t stamp,
                         const char *lease_iso, const char *stamp_iso) {
  sqlite3_stmt *lv = stmt(s, SQ_LEVEL), *up = stmt(s, SQ_CLAIM);
  int64_t level = INT64_MAX;
  int rc;
  if (lv == NULL || up == NULL) {
    chr__sqlite_fail(s, req, "claiming jobs");
    return;
  }
  for (;;) {
    size_t first = req->njobs;
    sqlite3_bind_int64(lv, 1, level);
    rc = sqlite3_step(lv);
    if (rc != SQLITE_ROW) {
      chr__sqlite_fail(s, req, "claiming jobs");
      sqlite3_reset(lv);
      break;
    }
    if (sqlite3_column_type(lv, 0) == SQLITE_NULL) {
      sqlite3_reset(lv);
      break;
    }
    level = sqlite3_column_int64(lv, 0);
    sqlite3_reset(lv);
    bind_claimer(up, req, lease, stamp, lease_iso, stamp_iso);
    sqlite3_bind_int64(up, 6, level);
    sqlite3_bind_int64(up, 7, req->now);
    sqlite3_bind_int64(up, 8, req->limit < 0 ? -1 : req->limit - (int64_t)req->njobs);
    take_claimed(s, req, up);
    if (req->status != 0) break;
    /* Nothing claimed yet may mean no array at all, which qsort must not
     * be given. */
    if (req->njobs - first > 1)
      qsort(req->jobs + first, req->njobs - first, sizeof *req->jobs, chr_job_cmp_claim);
    if (req->limit >= 0 && (int64_t)req->njobs >= req->limit) break;
  }
}

/* One integer of a one-row statement with ?1 = text (reset after). -1
 * with req failed. */
static int64_t count_of(sq_store_t *s, chr_store_req_t *req, sq_stmt_id_t id, const char *text) {
  sqlite3_stmt *st = stmt(s, id);
  int64_t n = -1;
  if (st == NULL) {
    chr__sqlite_fail(s, req, "claiming jobs");
    return -1;
  }
  sqlite3_bind_text(st, 1, text, -1, SQLITE_STATIC);
  if (sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int64(st, 0);
  else chr__sqlite_fail(s, req, "claiming jobs");
  sqlite3_reset(st);
  return n;
}

/* Queue q's rate window at now: *start and the jobs claimed in it. One
 * row per queue holds the newest window any claimer counted: a claimer
 * whose clock is still in an older one (clock skew between processes)
 * finds no room until its clock gets there, rather than a fresh count
 * that would let both windows' claims through. -1 with req failed. */
static int64_t rate_used(sq_store_t *s, chr_store_req_t *req, const chr_claim_queue_t *q,
                         int64_t *start) {
  int64_t p = q->rate_period_us, ws = req->now / p * p, used = 0;
  if (ws > req->now) ws -= p; /* floor for times before 1970 */
  *start = ws;
  sqlite3_stmt *st = stmt(s, SQ_RATE_GET);
  if (st == NULL) {
    chr__sqlite_fail(s, req, "claiming jobs");
    return -1;
  }
  sqlite3_bind_text(st, 1, q->name, -1, SQLITE_STATIC);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW && sqlite3_column_int64(st, 0) == ws) used = sqlite3_column_int64(st, 1);
  else if (rc == SQLITE_ROW && sqlite3_column_int64(st, 0) > ws) used = q->rate_limit;
  else if (rc != SQLITE_ROW && rc != SQLITE_DONE) used = -1;
  if (used < 0) chr__sqlite_fail(s, req, "claiming jobs");
  sqlite3_reset(st);
  return used;
}

/* With queues: each queue in turn, what its limits leave, then one UPDATE
 * of its due jobs (scoped too), its rate window written back. */
static void claim_queues(sq_store_t *s, chr_store_req_t *req, int64_t lease, int64_t stamp,
                         const char *lease_iso, const char *stamp_iso) {
  for (size_t k = 0; k < req->nqueues && req->status == 0; k++) {
    const chr_claim_queue_t *q = &req->queues[k];
    int64_t allow = q->limit, used = 0, ws = 0;
    if (req->limit >= 0 && req->limit - (int64_t)req->njobs < allow)
      allow = req->limit - (int64_t)req->njobs;
    if (allow <= 0) break;
    if (q->global_limit > 0) {
      int64_t running = count_of(s, req, SQ_QUEUE_RUNNING, q->name);
      if (running < 0) return;
      if (q->global_limit - running < allow) allow = q->global_limit - running;
    }
    if (q->rate_limit > 0) {
      if ((used = rate_used(s, req, q, &ws)) < 0) return;
      if (q->rate_limit - used < allow) allow = q->rate_limit - used;
    }
    if (allow <= 0) continue;
    sq_query_t *qb;
    sqlite3_stmt *up = chr__sqlite_scoped(s, req, SQ_SCOPED_QUEUE_CLAIM, &qb);
    if (up == NULL) return;
    size_t first = req->njobs;
    bind_claimer(up, req, lease, stamp, lease_iso, stamp_iso);
    sqlite3_bind_int64(up, 6, req->now);
    sqlite3_bind_int64(up, 7, allow);
    sqlite3_bind_text(up, 8, q->name, -1, SQLITE_STATIC);
    take_claimed(s, req, up);
    chr__sqlite_query_free(qb);
    if (req->status != 0) return;
    size_t got = req->njobs - first;
    /* RETURNING's row order is unspecified. */
    if (got > 1) qsort(req->jobs + first, got, sizeof *req->jobs, chr_job_cmp_claim);
    if (q->rate_limit > 0 && got > 0) {
      sqlite3_stmt *put = stmt(s, SQ_RATE_PUT);
      if (put != NULL) {
        sqlite3_bind_text(put, 1, q->name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(put, 2, ws);
        sqlite3_bind_int64(put, 3, used + (int64_t)got);
      }
      if (run(s, req, put, "claiming jobs") != 0) return;
    }
  }
}

/* One BEGIN IMMEDIATE transaction, scoped or not: no other connection
 * writes between choosing the due jobs and claiming them. */
static void op_claim(sq_store_t *s, chr_store_req_t *req) {
  int64_t lease = req->now + req->lease_us, stamp;
  char lease_iso[CHR_TIME_BUFSZ], stamp_iso[CHR_TIME_BUFSZ];
  note_owner(s, req->owner);
  if (begin(s, req) != 0) return;
  /* Stamped once the lock is ours: after any write it waited for. */
  stamp = next_stamp(s, NULL);
  chr_time_format(lease, lease_iso);
  chr_time_format(stamp, stamp_iso);
  if (req->nqueues > 0) claim_queues(s, req, lease, stamp, lease_iso, stamp_iso);
  else if (req->filter != NULL) claim_scoped(s, req, lease, stamp, lease_iso, stamp_iso);
  else claim_levels(s, req, lease, stamp, lease_iso, stamp_iso);
  if (req->status != 0 || commit(s, req) != 0) {
    rollback(s);
    chr__sqlite_drop_jobs(req);
  }
}

/* The result of a completion that found nothing to delete: another
 * owner's job, or none. -1 with req failed. */
static int completion_miss(sq_store_t *s, chr_store_req_t *req, const char *id) {
  chr_job_t *j;
  int rc = load(s, req, id, &j);
  chr_job_free(j);
  return rc < 0 ? -1 : rc == 1 ? CHR_ECONFLICT : CHR_ENOTFOUND;
}

/* A completion with updates: the job read in this transaction, decided by
 * chr_store_completion_result, then the partial record applied as
 * update_job does. Returns the item's result, or -1 with req failed. */
static int complete_update(sq_store_t *s, chr_store_req_t *req, chr_completion_t *it,
                           chr_job_t **woken) {
  chr_job_t *j;
  int result;
  if (load(s, req, it->job_id, &j) < 0) return -1;
  result = chr_store_completion_result(it, j);
  if (result != 0) {
    chr_job_free(j);
    return result;
  }
  result = rewrite(s, req, j, it->updates);
  if (result == 0 && chr_job_wake_time(j) != CHR_TIME_NONE) *woken = j;
  else chr_job_free(j);
  return result;
}

/* The whole batch in one transaction; one DELETE per one-shot job. The
 * run of each item that applies is written with it (history outlives a
 * deleted job). */
static void op_complete(sq_store_t *s, chr_store_req_t *req) {
  sqlite3_stmt *del = stmt(s, SQ_DELETE_OWNED);
  /* The jobs rescheduled, to wake the engines with once committed (a
   * scoped engine ignores the other tenants' jobs). */
  chr_job_t **woken;
  size_t nwoken = 0;
  int wrote_runs = 0;
  if (del == NULL) {
    chr__sqlite_fail(s, req, "completing jobs");
    return;
  }
  if (begin(s, req) != 0) return;
  woken = chr_malloc(req->nitems * sizeof *woken);
  for (size_t i = 0; i < req->nitems && req->status == 0; i++) {
    chr_completion_t *it = &req->items[i];
    if (it->remove) {
      sqlite3_bind_text(del, 1, it->job_id, -1, SQLITE_STATIC);
      sqlite3_bind_text(del, 2, it->owner, -1, SQLITE_STATIC);
      if (run(s, req, del, "completing jobs") != 0) break;
      it->result = sqlite3_changes(s->db) > 0 ? 0 : completion_miss(s, req, it->job_id);
    } else {
      chr_job_t *j = NULL;
      it->result = complete_update(s, req, it, &j);
      if (j != NULL) woken[nwoken++] = j;
    }
    if (req->status == 0 && it->result == 0 && it->run != NULL &&
        put_run(s, req, it->run) > 0)
      wrote_runs = 1;
  }
  if (req->status == 0 && wrote_runs &&
      chr_time_mono() - s->runs_expired >= SQ_EXPIRE_EVERY_US)
    expire_runs(s, req, req->issued);
  int done = req->status == 0 && commit(s, req) == 0;
  if (!done) rollback(s);
  else if (s->nlost > 0) report_lost(s, req);
  for (size_t i = 0; i < nwoken; i++) {
    if (done) chr_store_wake_job(&s->base, woken[i]);
    chr_job_free(woken[i]);
  }
  free(woken);
}

/* One UPDATE on jobs_lease, the scope's terms added when scoped: the
 * running jobs are few, and their expired leases fewer. */
static void op_recover(sq_store_t *s, chr_store_req_t *req) {
  int64_t now = req->now, stamp = next_stamp(s, NULL), wake = CHR_TIME_NONE;
  sq_query_t *q = NULL;
  sqlite3_stmt *st;
  char stamp_iso[CHR_TIME_BUFSZ];
  int rc;
  req->count = 0;
  if (req->filter != NULL) {
    if ((st = chr__sqlite_scoped(s, req, SQ_SCOPED_RECOVER, &q)) == NULL) return;
  } else if ((st = stmt(s, SQ_RECOVER)) == NULL) {
    chr__sqlite_fail(s, req, "recovering expired leases");
    return;
  }
  chr_time_format(stamp, stamp_iso);
  sqlite3_bind_int64(st, 1, stamp);
  sqlite3_bind_text(st, 2, stamp_iso, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 3, now);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    req->count++;
    if (sqlite3_column_type(st, 0) != SQLITE_NULL)
      wake = chr_time_earlier(wake, sqlite3_column_int64(st, 0));
  }
  if (rc != SQLITE_DONE) {
    chr__sqlite_fail(s, req, "recovering expired leases");
    req->count = 0;
  }
  sqlite3_reset(st);
  chr__sqlite_query_free(q);
  if (req->status == 0 && wake != CHR_TIME_NONE) chr_store_wake(&s->base, wake);
}

static void op_extend(sq_store_t *s, chr_store_req_t *req) {
  int64_t lease = req->now + req->lease_us, stamp = next_stamp(s, NULL);
  sqlite3_stmt *st = stmt(s, SQ_EXTEND);
  char lease_iso[CHR_TIME_BUFSZ], stamp_iso[CHR_TIME_BUFSZ];
  char *ids;
  req->count = 0;
  if (st == NULL) {
    chr__sqlite_fail(s, req, "extending leases");
    return;
  }
  chr_time_format(lease, lease_iso);
  chr_time_format(stamp, stamp_iso);
  ids = chr__sqlite_ids_json(req->ids, req->nids);
  sqlite3_bind_int64(st, 1, lease);
  sqlite3_bind_int64(st, 2, stamp);
  sqlite3_bind_text(st, 3, lease_iso, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 4, stamp_iso, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 5, ids, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 6, req->owner, -1, SQLITE_STATIC);
  if (run(s, req, st, "extending leases") == 0) req->count = sqlite3_changes(s->db);
  free(ids);
}

/* Unscoped, one seek of jobs_next; scoped, the first entry of a range
 * of the scope's index (no row: no due time). */
static void op_next_due(sq_store_t *s, chr_store_req_t *req) {
  sq_query_t *q = NULL;
  sqlite3_stmt *st;
  int rc;
  req->count = CHR_TIME_NONE;
  if (req->filter != NULL) {
    if ((st = chr__sqlite_scoped(s, req, SQ_SCOPED_NEXT_DUE, &q)) == NULL) return;
  } else {
    st = stmt(s, SQ_NEXT_DUE);
  }
  rc = st ? sqlite3_step(st) : SQLITE_ERROR;
  if (rc == SQLITE_ROW) {
    if (sqlite3_column_type(st, 0) != SQLITE_NULL) req->count = sqlite3_column_int64(st, 0);
  } else if (rc != SQLITE_DONE || q == NULL) {
    chr__sqlite_fail(s, req, "reading the next due time");
  }
  if (st) sqlite3_reset(st);
  chr__sqlite_query_free(q);
}

/* ---- the store */

static void (*const sq_ops[CHR_OP__COUNT])(sq_store_t *, chr_store_req_t *) = {
    [CHR_OP_CREATE] = op_create,  [CHR_OP_GET] = op_get,     [CHR_OP_GET_BATCH] = op_get_batch,
    [CHR_OP_CREATE_MANY] = op_create_many,
    [CHR_OP_UPDATE] = op_update,  [CHR_OP_CAS] = op_cas,     [CHR_OP_DELETE] = op_delete,
    [CHR_OP_QUERY] = chr__sqlite_query, [CHR_OP_COUNT] = chr__sqlite_count,
    [CHR_OP_CLAIM] = op_claim,    [CHR_OP_COMPLETE] = op_complete,
    [CHR_OP_RECOVER] = op_recover, [CHR_OP_EXTEND] = op_extend, [CHR_OP_NEXT_DUE] = op_next_due,
    [CHR_OP_RECORD_RUNS] = op_record_runs, [CHR_OP_QUERY_RUNS] = chr__sqlite_query_runs};

/* Requests come checked (chr_store_submit) and are answered here, at once,
 * on a connection to the file now at the path. */
static int sq_submit(chr_store_t *base, chr_store_req_t *req) {
  sq_store_t *s = (sq_store_t *)base;
  /* A scope SQL cannot express whole: query and CAS, which match it in C. */
  if ((chr_store_ops[req->op].in & CHR_IN_SCOPE) && !chr__sqlite_scope_sql(req->filter))
    return chr__store_emulate(base, req);
  if (s->memory || check_file(s, req) == 0) sq_ops[req->op](s, req);
  if (req->cb != NULL) req->cb(req);
  return 0;
}

static void sq_close(chr_store_t *base) {
  sq_store_t *s = (sq_store_t *)base;
  chr__sqlite_close(s);
  chr_meta_index_free(s->opts.index_paths);
  free(s->reopen_error);
  for (size_t i = 0; i < s->nowners; i++) free(s->owners[i]);
  for (size_t i = 0; i < s->nlost; i++) free(s->lost[i]);
  free(s->lost);
  free(s);
}

static const chr_store_vtable_t sq_vtable = {"sqlite", sq_submit, sq_close};

int chr_sqlite_store_open(const chr_opts_t *opts, chr_store_t **out, char *err, size_t errlen) {
  sq_opts_t o;
  char *path;
  int rc = chr__sqlite_opts(opts, &path, &o, err, errlen);
  if (rc != 0) return rc;
  sq_store_t *s = chr_calloc(1, sizeof *s);
  rc = chr__sqlite_open(s, path, &o, err, errlen);
  free(path);
  if (rc != 0) {
    chr_meta_index_free(o.index_paths);
    free(s);
    return rc;
  }
  s->file_checked = chr_time_mono();
  chr_store_init(&s->base, &sq_vtable,
                 CHR_STORE_CAP_CLAIM | CHR_STORE_CAP_COMPLETE | CHR_STORE_CAP_RECOVER |
                     CHR_STORE_CAP_EXTEND | CHR_STORE_CAP_BATCH | CHR_STORE_CAP_COUNT |
                     CHR_STORE_CAP_NEXT_DUE | CHR_STORE_CAP_LOCAL | CHR_STORE_CAP_HISTORY |
                     CHR_STORE_CAP_SCOPE | CHR_STORE_CAP_QUEUES | CHR_STORE_CAP_CREATE_MANY);
  *out = &s->base;
  return 0;
}
