/* sqlite_query.c - query_jobs, count_jobs and query_runs on the SQLite
 * store: SQL built from the shape of a filter (chr_filter_t,
 * chr_run_filter_t) with every value a parameter, the statements kept by
 * SQL text. A metadata key SQL cannot name plainly is matched in C with
 * chr_filter_match / chr_run_filter_match instead, so every filter means
 * here what it means in the memory store. */
#include <stdlib.h>
#include <string.h>

#include "core/history.h"
#include "core/job.h"
#include "sqlite_store.h"
#include "core/store.h"

/* Filter queries by SQL text, least recently used out first. */
static sqlite3_stmt *dyn_stmt(sq_store_t *s, const char *sql) {
  sq_dyn_t *slot = &s->dyn[0];
  for (int i = 0; i < SQ_DYN_MAX; i++) {
    sq_dyn_t *d = &s->dyn[i];
    if (d->sql != NULL && strcmp(d->sql, sql) == 0) {
      d->used = ++s->dyn_clock;
      return d->stmt;
    }
    if (d->used < slot->used) slot = d;
  }
  sqlite3_finalize(slot->stmt);
  free(slot->sql);
  slot->sql = NULL;
  slot->used = 0;
  if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &slot->stmt, NULL) !=
      SQLITE_OK) {
    slot->stmt = NULL;
    return NULL;
  }
  slot->sql = chr_strdup(sql);
  slot->used = ++s->dyn_clock;
  return slot->stmt;
}

typedef struct qparam {
  int is_text;
  int64_t i;
  const char *t;
} qparam_t;

typedef struct sq_query {
  chr_buf_t sql;
  qparam_t *p;
  size_t np;
  /* Parameters ?1..?nfixed are the caller's, bound by it: p starts at
   * ?nfixed + 1. */
  size_t nfixed;
  char **owned; /* strings the parameters point into */
  size_t nowned;
  int residual; /* a filter SQL does not express: chr_filter_match in C */
} qbuild_t;

static void q_int(qbuild_t *q, int64_t v) {
  q->p[q->np].is_text = 0;
  q->p[q->np++].i = v;
  chr_buf_printf(&q->sql, "?%zu", q->nfixed + q->np);
}

static void q_text(qbuild_t *q, const char *t) {
  q->p[q->np].is_text = 1;
  q->p[q->np++].t = t;
  chr_buf_printf(&q->sql, "?%zu", q->nfixed + q->np);
}

static const char *q_own(qbuild_t *q, char *s) {
  q->owned[q->nowned++] = s;
  return s;
}

static void q_cond(qbuild_t *q, const char *col, const char *op, int64_t v) {
  if (v == CHR_TIME_NONE) return;
  chr_buf_printf(&q->sql, " AND %s %s ", col, op);
  q_int(q, v);
}

/* $in lists up to this long are a list of parameters, which the planner
 * reads as so many equalities on an index; longer ones one json_each()
 * parameter, which it does not. */
#define SQ_IN_LIST_MAX 64

/* Room for the parameters of nmeta metadata conditions (each at most
 * SQ_IN_LIST_MAX) and the fixed ones of any query. */
static void q_alloc(qbuild_t *q, size_t nmeta) {
  size_t cap = 16 + CHR_OUT__COUNT + CHR_ST__COUNT + SQ_IN_LIST_MAX * nmeta;
  q->p = chr_malloc(cap * sizeof *q->p);
  q->owned = chr_malloc(cap * sizeof *q->owned);
}

void chr__sqlite_meta_expr(chr_buf_t *b, const char *path) {
  /* A plain path has no quote of either kind: each key goes between
   * double quotes as it is, which SQLite's JSON path takes for any key. */
  chr_buf_adds(b, "record -> '$.metadata.\"");
  for (const char *p = path; *p; p++) {
    if (*p == '.') chr_buf_adds(b, "\".\"");
    else chr_buf_addc(b, *p);
  }
  chr_buf_adds(b, "\"'");
}

void chr__sqlite_meta_index(chr_buf_t *b, const char *path) {
  chr_buf_printf(b, "\"jobs_meta_%s\"", path);
}

/* Whether SQL expresses condition m: any operator on a plain path. The
 * record holds canonical JSON text, and `->` gives a value's text as the
 * record has it, so comparing texts is comparing by value, as
 * chr_filter_match does (1 and "1" differ). `->` gives SQL NULL for an
 * absent key and 'null' for a JSON null, which filters treat alike. */
static int meta_sql(const chr_meta_filter_t *m) {
  return chr_meta_path_is_plain(m->path);
}

static int has_null(const chr_meta_filter_t *m) {
  for (size_t i = 0; i < m->nvalues; i++)
    if (strcmp(m->values[i], "null") == 0) return 1;
  return 0;
}

int chr__sqlite_scope_sql(const chr_filter_t *f) {
  if (f == NULL) return 1;
  if (f->nown) return 0;
  for (size_t i = 0; i < f->nmeta; i++)
    if (!meta_sql(&f->meta[i])) return 0;
  return 1;
}

/* The metadata conditions of f as SQL terms, the path as the literal
 * expression an index on it has (chr__sqlite_meta_expr), so that the
 * store's index_metadata indexes, or one a user made on the same text,
 * serve them; the others are left to C (q->residual). */
static void q_meta(qbuild_t *q, const chr_filter_t *f) {
  for (size_t i = 0; i < f->nmeta; i++) {
    const chr_meta_filter_t *m = &f->meta[i];
    if (!meta_sql(m)) {
      q->residual = 1;
      continue;
    }
    chr_buf_adds(&q->sql, " AND ");
    /* Where absent and null must read alike (a null value, $ne, $exists),
     * the value's text with 'null' for absent: no index serves those. An
     * equality or $in without null names the expression alone, as the
     * index does. */
    int absent_alike = m->op == CHR_MF_NE || m->op == CHR_MF_ABSENT ||
                       m->op == CHR_MF_PRESENT || has_null(m);
    if (absent_alike) chr_buf_adds(&q->sql, "IFNULL(");
    chr__sqlite_meta_expr(&q->sql, m->path);
    if (absent_alike) chr_buf_adds(&q->sql, ", 'null')");
    if (m->op == CHR_MF_ABSENT || m->op == CHR_MF_PRESENT) {
      chr_buf_adds(&q->sql, m->op == CHR_MF_ABSENT ? " = 'null'" : " <> 'null'");
    } else if (m->op == CHR_MF_NE) {
      chr_buf_adds(&q->sql, " <> ");
      q_text(q, m->value);
    } else if (m->op == CHR_MF_EQ) {
      chr_buf_adds(&q->sql, " = ");
      q_text(q, m->value);
    } else if (m->nvalues <= SQ_IN_LIST_MAX) {
      chr_buf_adds(&q->sql, " IN (");
      for (size_t k = 0; k < m->nvalues; k++) {
        if (k) chr_buf_addc(&q->sql, ',');
        q_text(q, m->values[k]);
      }
      chr_buf_addc(&q->sql, ')');
    } else {
      chr_buf_adds(&q->sql, " IN (SELECT value FROM json_each(");
      q_text(q, q_own(q, chr__sqlite_ids_json(m->values, m->nvalues)));
      chr_buf_adds(&q->sql, "))");
    }
  }
}

static int is_indexed(const sq_store_t *s, const char *path) {
  for (char **p = s->opts.index_paths; p && *p; p++)
    if (strcmp(*p, path) == 0) return 1;
  return 0;
}

/* The index_metadata path of the first condition of f that an index on
 * it serves (an equality or $in without null, see q_meta), or NULL. */
static const char *indexed_path(const sq_store_t *s, const chr_filter_t *f) {
  for (size_t i = 0; f && i < f->nmeta; i++) {
    const chr_meta_filter_t *m = &f->meta[i];
    if ((m->op == CHR_MF_EQ || m->op == CHR_MF_IN) && !has_null(m) && meta_sql(m) &&
        is_indexed(s, m->path))
      return m->path;
  }
  return NULL;
}

static void q_where(qbuild_t *q, const chr_filter_t *f) {
  q_alloc(q, f ? f->nmeta : 0);
  chr_buf_adds(&q->sql, " WHERE 1");
  if (f == NULL) return;
  if (f->status_mask) {
    int first = 1;
    chr_buf_adds(&q->sql, " AND status IN (");
    for (int st = 1; st < CHR_ST__COUNT; st++) {
      if (!(f->status_mask & (1u << st))) continue;
      if (!first) chr_buf_addc(&q->sql, ',');
      first = 0;
      q_text(q, chr_status_names[st]);
    }
    chr_buf_addc(&q->sql, ')');
  }
  if (f->trigger_type > CHR_TT_NONE && f->trigger_type < CHR_TT__COUNT) {
    chr_buf_adds(&q->sql, " AND trigger_type = ");
    q_text(q, chr_trigger_type_names[f->trigger_type]);
  }
  q_cond(q, "next_run_time", "<=", f->nrt_lte);
  q_cond(q, "next_run_time", ">=", f->nrt_gte);
  q_cond(q, "updated_at", "<=", f->upd_lte);
  q_cond(q, "updated_at", ">=", f->upd_gte);
  q_meta(q, f);
  if (f->has_ids) {
    chr_buf_adds(&q->sql, " AND job_id IN (SELECT value FROM json_each(");
    q_text(q, q_own(q, chr__sqlite_ids_json(f->ids, f->nids)));
    chr_buf_adds(&q->sql, "))");
  }
}

static void q_free(qbuild_t *q) {
  for (size_t i = 0; i < q->nowned; i++) free(q->owned[i]);
  free(q->owned);
  free(q->p);
  chr_buf_free(&q->sql);
}

static sqlite3_stmt *q_prepare(sq_store_t *s, chr_store_req_t *req, qbuild_t *q,
                               const char *doing) {
  sqlite3_stmt *st = dyn_stmt(s, q->sql.p);
  if (st == NULL) {
    chr__sqlite_fail(s, req, doing);
    return NULL;
  }
  for (size_t i = 0; i < q->np; i++) {
    int at = (int)(q->nfixed + i) + 1;
    if (q->p[i].is_text) sqlite3_bind_text(st, at, q->p[i].t, -1, SQLITE_STATIC);
    else sqlite3_bind_int64(st, at, q->p[i].i);
  }
  return st;
}

/* The scoped engine statements, around the terms of the scope. A scope
 * with a condition on an index_metadata path names that index: each
 * statement has one right plan, as the unscoped ones do (sqlite.c), and
 * statistics gathered later must not trade it for jobs_due, which holds
 * every tenant's jobs. */
static const struct {
  size_t nfixed;
  const char *head, *where, *tail;
} scoped_sql[] = {
    [SQ_SCOPED_CLAIM] =
        {7,
         "UPDATE jobs SET status = 'running', claimed_by = ?1, lease_until = ?2, "
         "updated_at = ?3, record = chronis_patch(record, 'status', 'running', "
         "'updated_at', ?5, 'claimed_by', ?1, 'lease_until', ?4) "
         "WHERE rowid IN (SELECT rowid FROM jobs",
         " WHERE status = 'scheduled' AND next_run_time <= ?6",
         " ORDER BY priority DESC, next_run_time, job_id LIMIT ?7) RETURNING " SQ_ROW_COLS},
    [SQ_SCOPED_RECOVER] =
        {3,
         "UPDATE jobs INDEXED BY jobs_lease SET status = 'scheduled', "
         "claimed_by = NULL, lease_until = NULL, updated_at = ?1, "
         "record = chronis_patch(record, 'status', 'scheduled', 'updated_at', ?2, "
         "'claimed_by', NULL, 'lease_until', NULL, "
         "'retry_count', coalesce(json_extract(record, '$.retry_count'), 0) + 1, "
         "'attempt', coalesce(json_extract(record, '$.attempt'), 0) + 1)",
         " WHERE status = 'running' AND lease_until < ?3", " RETURNING next_run_time"},
    /* A queue's due jobs: its name is the record's `queue`, "default" when
     * it has none (core/job.h). */
    [SQ_SCOPED_QUEUE_CLAIM] =
        {8,
         "UPDATE jobs SET status = 'running', claimed_by = ?1, lease_until = ?2, "
         "updated_at = ?3, record = chronis_patch(record, 'status', 'running', "
         "'updated_at', ?5, 'claimed_by', ?1, 'lease_until', ?4) "
         "WHERE rowid IN (SELECT rowid FROM jobs",
         " WHERE status = 'scheduled' AND next_run_time <= ?6 "
         "AND coalesce(json_extract(record, '$.queue'), 'default') = ?8",
         " ORDER BY priority DESC, next_run_time, job_id LIMIT ?7) RETURNING " SQ_ROW_COLS},
    [SQ_SCOPED_NEXT_DUE] = {0, "SELECT next_run_time FROM jobs",
                            " WHERE status = 'scheduled' AND next_run_time IS NOT NULL",
                            " ORDER BY next_run_time LIMIT 1"},
};

void chr__sqlite_query_free(qbuild_t *q) {
  if (q == NULL) return;
  q_free(q);
  free(q);
}

sqlite3_stmt *chr__sqlite_scoped(sq_store_t *s, chr_store_req_t *req, sq_scoped_t which,
                                 qbuild_t **out) {
  static const char *const doing[] = {"claiming jobs", "recovering expired leases",
                                      "reading the next due time", "claiming jobs"};
  qbuild_t *q = chr_calloc(1, sizeof *q);
  const char *path = which == SQ_SCOPED_RECOVER ? NULL : indexed_path(s, req->filter);
  sqlite3_stmt *st;
  chr_buf_init(&q->sql);
  q_alloc(q, req->filter ? req->filter->nmeta : 0);
  q->nfixed = scoped_sql[which].nfixed;
  chr_buf_adds(&q->sql, scoped_sql[which].head);
  if (path != NULL) {
    chr_buf_adds(&q->sql, " INDEXED BY ");
    chr__sqlite_meta_index(&q->sql, path);
  } else if (which == SQ_SCOPED_QUEUE_CLAIM) {
    chr_buf_adds(&q->sql, " INDEXED BY jobs_queue");
  }
  chr_buf_adds(&q->sql, scoped_sql[which].where);
  if (req->filter != NULL) q_meta(q, req->filter);
  chr_buf_adds(&q->sql, scoped_sql[which].tail);
  if ((st = q_prepare(s, req, q, doing[which])) == NULL) {
    chr__sqlite_query_free(q);
    q = NULL;
  }
  *out = q;
  return st;
}

void chr__sqlite_query(sq_store_t *s, chr_store_req_t *req) {
  const chr_filter_t *f = req->filter;
  int64_t skip = req->offset, limit = req->limit;
  qbuild_t q = {0};
  sqlite3_stmt *st;
  int rc;
  chr_buf_init(&q.sql);
  chr_buf_adds(&q.sql, "SELECT " SQ_ROW_COLS " FROM jobs");
  q_where(&q, f);
  /* NULLS LAST: nil next_run_time after every time, as in every store. */
  chr_buf_adds(&q.sql, " ORDER BY next_run_time NULLS LAST, job_id LIMIT ");
  q_int(&q, q.residual ? -1 : limit);
  chr_buf_adds(&q.sql, " OFFSET ");
  q_int(&q, q.residual ? 0 : skip);
  if ((st = q_prepare(s, req, &q, "querying jobs")) == NULL) {
    q_free(&q);
    return;
  }
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    chr_job_t *j = chr__sqlite_row_job(s, req, st, 0);
    if (j == NULL) break;
    if (q.residual) {
      if (!chr_filter_match(f, j) || skip-- > 0) {
        chr_job_free(j);
        continue;
      }
    }
    chr_store_req_push_job(req, j);
    if (q.residual && limit >= 0 && (int64_t)req->njobs >= limit) break;
  }
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) chr__sqlite_fail(s, req, "querying jobs");
  if (req->status != 0) chr__sqlite_drop_jobs(req);
  sqlite3_reset(st);
  q_free(&q);
}

void chr__sqlite_count(sq_store_t *s, chr_store_req_t *req) {
  qbuild_t q = {0};
  sqlite3_stmt *st;
  int rc;
  req->count = 0;
  chr_buf_init(&q.sql);
  chr_buf_adds(&q.sql, "SELECT count(*) FROM jobs");
  q_where(&q, req->filter);
  if (q.residual) {
    /* Rebuilt to fetch the records the C filter needs. */
    q_free(&q);
    memset(&q, 0, sizeof q);
    chr_buf_init(&q.sql);
    chr_buf_adds(&q.sql, "SELECT " SQ_ROW_COLS " FROM jobs");
    q_where(&q, req->filter);
  }
  if ((st = q_prepare(s, req, &q, "counting jobs")) == NULL) {
    q_free(&q);
    return;
  }
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    chr_job_t *j;
    if (!q.residual) {
      req->count = sqlite3_column_int64(st, 0);
      continue;
    }
    if ((j = chr__sqlite_row_job(s, req, st, 0)) == NULL) break;
    if (chr_filter_match(req->filter, j)) req->count++;
    chr_job_free(j);
  }
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) chr__sqlite_fail(s, req, "counting jobs");
  if (req->status != 0) req->count = 0;
  sqlite3_reset(st);
  q_free(&q);
}

/* ---- run history */

/* The WHERE clause of a run filter, in q; as q_where does for jobs. */
static void q_run_where(qbuild_t *q, const chr_run_filter_t *f) {
  q_alloc(q, f ? f->nmeta : 0);
  chr_buf_adds(&q->sql, " WHERE 1");
  if (f == NULL) return;
  if (f->has_ids && f->nids == 1) {
    /* One job: an equality, which runs_job answers in result order. */
    chr_buf_adds(&q->sql, " AND job_id = ");
    q_text(q, f->ids[0]);
  } else if (f->has_ids) {
    chr_buf_adds(&q->sql, " AND job_id IN (SELECT value FROM json_each(");
    q_text(q, q_own(q, chr__sqlite_ids_json(f->ids, f->nids)));
    chr_buf_adds(&q->sql, "))");
  }
  if (f->outcome_mask) {
    int first = 1;
    chr_buf_adds(&q->sql, " AND outcome IN (");
    for (int o = 1; o < CHR_OUT__COUNT; o++) {
      if (!(f->outcome_mask & (1u << o))) continue;
      if (!first) chr_buf_addc(&q->sql, ',');
      first = 0;
      q_text(q, chr_outcome_names[o]);
    }
    chr_buf_addc(&q->sql, ')');
  }
  q_cond(q, "started_at", ">=", f->started_gte);
  q_cond(q, "started_at", "<=", f->started_lte);
  if (f->func_name != NULL) {
    chr_buf_adds(&q->sql, " AND func_name = ");
    q_text(q, f->func_name);
  }
  for (size_t i = 0; i < f->nmeta; i++) {
    /* As for jobs: the member's JSON text against the canonical text of
     * the value; a run's metadata is its job's, written canonical. */
    if (!chr_meta_filter_is_plain_eq(&f->meta[i])) {
      q->residual = 1;
      continue;
    }
    chr_buf_adds(&q->sql, " AND metadata -> ");
    q_text(q, q_own(q, chr_sprintf("$.%s", f->meta[i].path)));
    chr_buf_adds(&q->sql, " = ");
    q_text(q, f->meta[i].value);
  }
}

static const char *col_text(sqlite3_stmt *st, int col) {
  return (const char *)sqlite3_column_text(st, col);
}

static int64_t col_time(sqlite3_stmt *st, int col) {
  return sqlite3_column_type(st, col) == SQLITE_NULL ? CHR_TIME_NONE
                                                     : sqlite3_column_int64(st, col);
}

/* The run in the current row (the columns of SQ_RUN_COLS). A value the
 * store did not write (an outcome edited by hand) reads as unknown. */
static chr_runrec_t *row_run(sqlite3_stmt *st) {
  chr_runrec_t r;
  const char *outcome = col_text(st, 3);
  int64_t attempt = sqlite3_column_int64(st, 9);
  chr_runrec_init(&r);
  r.run_id = col_text(st, 0);
  r.job_id = col_text(st, 1);
  if (r.run_id == NULL) r.run_id = "";
  if (r.job_id == NULL) r.job_id = "";
  r.started_at = col_time(st, 2);
  r.outcome = outcome ? chr_enum_parse(chr_outcome_names, CHR_OUT__COUNT, outcome) : 0;
  r.name = col_text(st, 4);
  r.func_name = col_text(st, 5);
  r.node = col_text(st, 6);
  r.scheduled_at = col_time(st, 7);
  r.ended_at = col_time(st, 8);
  r.attempt = attempt > 0 && attempt <= INT32_MAX ? (int32_t)attempt : 0;
  r.error_code = col_text(st, 10);
  r.error_message = col_text(st, 11);
  r.metadata = col_text(st, 12);
  return chr_runrec_copy(&r);
}

static void drop_runs(chr_store_req_t *req) {
  for (size_t i = 0; i < req->nhistory; i++) chr_runrec_free(req->history[i]);
  req->nhistory = 0;
}

void chr__sqlite_query_runs(sq_store_t *s, chr_store_req_t *req) {
  const chr_run_filter_t *f = req->run_filter;
  int64_t skip = req->offset, limit = req->limit;
  qbuild_t q = {0};
  sqlite3_stmt *st;
  int rc;
  chr_buf_init(&q.sql);
  chr_buf_adds(&q.sql, "SELECT " SQ_RUN_COLS " FROM runs");
  q_run_where(&q, f);
  /* chr_runrec_cmp's order; BINARY collation compares run ids as strcmp. */
  chr_buf_adds(&q.sql, " ORDER BY started_at DESC, run_id DESC LIMIT ");
  q_int(&q, q.residual ? -1 : limit);
  chr_buf_adds(&q.sql, " OFFSET ");
  q_int(&q, q.residual ? 0 : skip);
  if ((st = q_prepare(s, req, &q, "querying runs")) == NULL) {
    q_free(&q);
    return;
  }
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    chr_runrec_t *r = row_run(st);
    if (q.residual && (!chr_run_filter_match(f, r) || skip-- > 0)) {
      chr_runrec_free(r);
      continue;
    }
    chr_store_req_push_run(req, r);
    if (q.residual && limit >= 0 && (int64_t)req->nhistory >= limit) break;
  }
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) chr__sqlite_fail(s, req, "querying runs");
  if (req->status != 0) drop_runs(req);
  sqlite3_reset(st);
  q_free(&q);
}
