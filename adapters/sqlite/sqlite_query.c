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

typedef struct qbuild {
  chr_buf_t sql;
  qparam_t *p;
  size_t np;
  char **owned; /* strings the parameters point into */
  size_t nowned;
  int residual; /* a filter SQL does not express: chr_filter_match in C */
} qbuild_t;

static void q_int(qbuild_t *q, int64_t v) {
  q->p[q->np].is_text = 0;
  q->p[q->np++].i = v;
  chr_buf_printf(&q->sql, "?%zu", q->np);
}

static void q_text(qbuild_t *q, const char *t) {
  q->p[q->np].is_text = 1;
  q->p[q->np++].t = t;
  chr_buf_printf(&q->sql, "?%zu", q->np);
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

static void q_where(qbuild_t *q, const chr_filter_t *f) {
  size_t cap = 16 + 2 * (f ? f->nmeta : 0);
  q->p = chr_malloc(cap * sizeof *q->p);
  q->owned = chr_malloc(cap * sizeof *q->owned);
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
  for (size_t i = 0; i < f->nmeta; i++) {
    /* record -> path is the member's JSON text (SQL NULL when missing);
     * records keep the canonical text of chr_json_encode, so text equality
     * is value equality, as in chr_filter_match: 1 and "1" differ. */
    if (!chr_meta_filter_is_plain_eq(&f->meta[i])) {
      q->residual = 1;
      continue;
    }
    chr_buf_adds(&q->sql, " AND record -> ");
    q_text(q, q_own(q, chr_sprintf("$.metadata.%s", f->meta[i].path)));
    chr_buf_adds(&q->sql, " = ");
    q_text(q, f->meta[i].value);
  }
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
    if (q->p[i].is_text) sqlite3_bind_text(st, (int)i + 1, q->p[i].t, -1, SQLITE_STATIC);
    else sqlite3_bind_int64(st, (int)i + 1, q->p[i].i);
  }
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
  size_t cap = 16 + CHR_OUT__COUNT + 2 * (f ? f->nmeta : 0);
  q->p = chr_malloc(cap * sizeof *q->p);
  q->owned = chr_malloc(cap * sizeof *q->owned);
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
