/* pg_rows.c - results of the PostgreSQL store's statements (pg_sql.c)
 * turned into the request's outputs: rows in binary format (timestamptz as
 * µs since 2000-01-01, exact whatever the session TimeZone), and the JSONB
 * text of `record` rewritten into chronis' canonical JSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "pg.h"
#include "core/time.h"

#define PG_EPOCH_US 946684800000000LL /* 2000-01-01 in µs since 1970 */

/* ---- rows ---- */

static int64_t be64(const char *p) {
  const unsigned char *u = (const unsigned char *)p;
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | u[i];
  return (int64_t)v;
}

static int32_t be32(const char *p) {
  const unsigned char *u = (const unsigned char *)p;
  return (int32_t)((uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3]);
}

static int64_t get_time(const PGresult *r, int row, int col) {
  if (PQgetisnull(r, row, col) || PQgetlength(r, row, col) != 8) return CHR_TIME_NONE;
  return be64(PQgetvalue(r, row, col)) + PG_EPOCH_US;
}

static int64_t get_int(const PGresult *r, int row, int col) {
  if (PQgetisnull(r, row, col)) return 0;
  int n = PQgetlength(r, row, col);
  const char *v = PQgetvalue(r, row, col);
  return n == 8 ? be64(v) : n == 4 ? be32(v) : n == 1 ? (unsigned char)v[0] : 0;
}

static const char *get_str(const PGresult *r, int row, int col) {
  return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

/* The record as PostgreSQL printed it, read without rewriting it first:
 * the decoder skips the spaces, takes the members in any order, and
 * unescapes strings and reads numbers as it would from the canonical form.
 * What it keeps as JSON text must be canonical, though: trigger_args is
 * rewritten on its own (a small object), and a record with members the
 * decoder keeps as they are (extra: metadata, unknown keys, a value a
 * field does not take, which the canonical form might turn into one it
 * does) is left to the whole rewrite. Returns 0 when j is the record,
 * else -1 and j is to be cleared. */
static int record_direct(chr_job_t *j, const char *v, size_t n) {
  char err[8];
  if (n == 0 || v[0] != '{' || chr_job_from_json(j, v, n, err, sizeof err) != 0 || j->extra)
    return -1;
  if (j->trigger_args) {
    chr_buf_t b;
    chr_buf_init(&b);
    int rc = chr_pg_json_canon(j->trigger_args, strlen(j->trigger_args), &b);
    if (rc == 0) {
      free(j->trigger_args);
      j->trigger_args = chr_buf_steal(&b);
    }
    chr_buf_free(&b);
    if (rc != 0) return -1;
  }
  return 0;
}

chr_job_t *chr_pg_row_job(const PGresult *r, int row, int col, char *err, size_t errlen) {
  chr_job_t *j = chr_job_new();
  if (!PQgetisnull(r, row, col + 8)) {
    const char *v = PQgetvalue(r, row, col + 8);
    int n = PQgetlength(r, row, col + 8);
    int rc = 0;
    /* jsonb in binary is a version byte (1) and the text. */
    if (n < 1 || v[0] != 1) {
      rc = -1;
      snprintf(err, errlen, "unexpected jsonb format");
    } else if (record_direct(j, v + 1, (size_t)n - 1) != 0) {
      chr_buf_t b;
      chr_buf_init(&b);
      chr_job_clear(j);
      rc = chr_pg_json_canon(v + 1, (size_t)n - 1, &b);
      if (rc != 0) snprintf(err, errlen, "the record is not JSON chronis reads");
      else if (b.len == 0 || b.p[0] != '{') rc = -1, snprintf(err, errlen, "not a JSON object");
      else rc = chr_job_from_json(j, b.p, b.len, err, errlen);
      chr_buf_free(&b);
    }
    /* A record edited behind chronis' back: the job is what the columns
     * say, marked (the engine fails it), rather than an error that would
     * keep every other job of the request from being read or claimed. */
    if (rc != 0) {
      chr_job_clear(j);
      chr_job_set_unreadable(j, "the stored record is unreadable (%s)", err);
    }
  }
  chr_job_set_str(j, CHR_F_JOB_ID, get_str(r, row, col));
  const char *s = get_str(r, row, col + 1);
  int st = s ? chr_enum_parse(chr_status_names, CHR_ST__COUNT, s) : 0;
  if (st) chr_job_set_int(j, CHR_F_STATUS, st);
  s = get_str(r, row, col + 2);
  int tt = s ? chr_enum_parse(chr_trigger_type_names, CHR_TT__COUNT, s) : 0;
  if (tt) chr_job_set_int(j, CHR_F_TRIGGER_TYPE, tt);
  chr_job_set_time(j, CHR_F_NEXT_RUN_TIME, get_time(r, row, col + 3));
  if (!PQgetisnull(r, row, col + 4)) chr_job_set_int(j, CHR_F_PRIORITY, (int32_t)get_int(r, row, col + 4));
  chr_job_set_str(j, CHR_F_CLAIMED_BY, get_str(r, row, col + 5));
  chr_job_set_time(j, CHR_F_LEASE_UNTIL, get_time(r, row, col + 6));
  chr_job_set_time(j, CHR_F_UPDATED_AT, get_time(r, row, col + 7));
  return j;
}

/* A run from a row of RUN_COLS (pg_sql.c), or NULL with err (an outcome
 * chronis does not know). */
static chr_runrec_t *row_run(const PGresult *r, int row, char *err, size_t errlen) {
  chr_runrec_t rec;
  chr_buf_t meta;
  chr_runrec_init(&rec);
  chr_buf_init(&meta);
  rec.run_id = get_str(r, row, 0);
  rec.job_id = get_str(r, row, 1);
  rec.name = get_str(r, row, 2);
  rec.func_name = get_str(r, row, 3);
  rec.node = get_str(r, row, 4);
  if (!PQgetisnull(r, row, 5)) {
    const char *v = PQgetvalue(r, row, 5);
    int n = PQgetlength(r, row, 5);
    /* Metadata that is no object (written by hand) is left out: the run
     * is still worth reading. */
    if (n >= 1 && v[0] == 1 && chr_pg_json_canon(v + 1, (size_t)n - 1, &meta) == 0 &&
        meta.len > 0 && meta.p[0] == '{')
      rec.metadata = meta.p;
  }
  rec.error_code = get_str(r, row, 6);
  rec.error_message = get_str(r, row, 7);
  rec.scheduled_at = get_time(r, row, 8);
  rec.started_at = get_time(r, row, 9);
  rec.ended_at = get_time(r, row, 10);
  rec.attempt = (int32_t)get_int(r, row, 11);
  const char *out = get_str(r, row, 12);
  rec.outcome = out ? chr_enum_parse(chr_outcome_names, CHR_OUT__COUNT, out) : 0;
  chr_runrec_t *run = NULL;
  if (rec.outcome <= 0) snprintf(err, errlen, "unknown outcome '%s'", out ? out : "");
  else run = chr_runrec_copy(&rec);
  chr_buf_free(&meta);
  return run;
}

static int push_rows(chr_store_req_t *req, const PGresult *r, int col) {
  char err[200];
  for (int i = 0; i < PQntuples(r); i++) {
    chr_job_t *j = chr_pg_row_job(r, i, col, err, sizeof err);
    if (j == NULL) {
      chr_store_req_fail(req, CHR_EINVAL, "postgres: cannot read job '%s': %s",
                         PQgetvalue(r, i, col), err);
      return CHR_EINVAL;
    }
    chr_store_req_push_job(req, j);
  }
  return 0;
}

static void wake_from(pg_op_t *op, const chr_job_t *j) {
  if (chr_job_wake_time(j) != CHR_TIME_NONE) op->wake = j->next_run_time;
}

/* create_jobs: the rows are the ids written; each is the first record
 * of the batch with that id (build_create_many sent no other). */
static void decode_create_many(pg_op_t *op, const PGresult *r) {
  chr_store_req_t *req = op->req;
  pg_create_ref_t *refs = chr_pg_create_refs(req);
  for (int row = 0; r && row < PQntuples(r); row++) {
    const char *id = PQgetvalue(r, row, 0);
    size_t lo = 0, hi = req->ncreates; /* the first ref with id >= this one */
    while (lo < hi) {
      size_t mid = lo + (hi - lo) / 2;
      if (strcmp(refs[mid].id, id) < 0) lo = mid + 1;
      else hi = mid;
    }
    if (lo == req->ncreates || strcmp(refs[lo].id, id) != 0) continue;
    chr_create_item_t *it = &req->creates[refs[lo].i];
    if (it->result == 0) continue;
    it->result = 0;
    req->count++;
    op->wake = chr_time_earlier(op->wake, chr_job_wake_time(it->job));
  }
  free(refs);
}

int chr_pg_decode(pg_op_t *op, const PGresult *r) {
  chr_store_req_t *req = op->req;
  int rc = 0;
  switch (req->op) {
  case CHR_OP_CREATE:
    if (r == NULL || PQntuples(r) == 0) {
      chr_store_req_fail(req, CHR_EDUP, "job '%s' already exists", req->job->job_id);
      return CHR_EDUP;
    }
    if ((rc = push_rows(req, r, 0)) == 0) wake_from(op, req->jobs[0]);
    return rc;
  case CHR_OP_CREATE_MANY: decode_create_many(op, r); return 0;
  case CHR_OP_UPDATE:
    if (PQntuples(r) == 0) {
      chr_store_req_fail(req, CHR_ENOTFOUND, "job '%s' not found", req->id);
      return CHR_ENOTFOUND;
    }
    if ((rc = push_rows(req, r, 0)) == 0) wake_from(op, req->jobs[0]);
    return rc;
  case CHR_OP_CAS:
    req->ok = 0;
    if (PQntuples(r) != 1 || !get_int(r, 0, 0)) {
      chr_store_req_fail(req, CHR_ENOTFOUND, "job '%s' not found", req->id);
      return CHR_ENOTFOUND;
    }
    if (PQgetisnull(r, 0, 1)) return 0;
    if ((rc = push_rows(req, r, 1)) == 0) {
      req->ok = 1;
      wake_from(op, req->jobs[0]);
    }
    return rc;
  case CHR_OP_GET:
  case CHR_OP_GET_BATCH:
  case CHR_OP_QUERY:
  case CHR_OP_CLAIM: return r ? push_rows(req, r, 0) : 0;
  case CHR_OP_DELETE: req->ok = atoi(PQcmdTuples((PGresult *)r)) > 0; return 0;
  case CHR_OP_EXTEND: req->count = r ? atoll(PQcmdTuples((PGresult *)r)) : 0; return 0;
  case CHR_OP_COUNT: req->count = get_int(r, 0, 0); return 0;
  case CHR_OP_NEXT_DUE: req->count = get_time(r, 0, 0); return 0;
  case CHR_OP_RECOVER:
    req->count = get_int(r, 0, 0);
    op->wake = get_time(r, 0, 1);
    return 0;
  case CHR_OP_RECORD_RUNS: req->count = get_int(r, 0, 0); return 0;
  case CHR_OP_QUERY_RUNS:
    for (int i = 0; i < PQntuples(r); i++) {
      char err[120];
      chr_runrec_t *run = row_run(r, i, err, sizeof err);
      if (run == NULL) {
        chr_store_req_fail(req, CHR_EINVAL, "postgres: cannot read run '%s': %s",
                           PQgetvalue(r, i, 0), err);
        return CHR_EINVAL;
      }
      chr_store_req_push_run(req, run);
    }
    return 0;
  case CHR_OP_COMPLETE:
    for (int i = 0; r && i < PQntuples(r); i++) {
      int64_t k = get_int(r, i, 0);
      if (k < 0 || (size_t)k >= req->nitems) continue;
      req->items[k].result = get_int(r, i, 1) ? 0 : get_int(r, i, 2) ? CHR_ECONFLICT : CHR_ENOTFOUND;
      if (get_int(r, i, 1)) op->wake = chr_time_earlier(op->wake, get_time(r, i, 3));
    }
    return 0;
  default: return 0;
  }
}

/* ---- canonical JSON ---- */

/* Members are sorted by their keys as spans of the source text, and each
 * value is then rewritten straight into the output: no copy of any value.
 * A key or string without a backslash needs no unescaping (PostgreSQL
 * escapes every character that chronis' encoder escapes), the common case. */
typedef struct member {
  chr_json_span_t key; /* unescaped bytes, into the source or `owned`;
                          first: chr_json_key_cmp */
  char *owned;
  const char *val, *vend;
} member_t;

static const char *skip_ws(const char *p, const char *e) {
  while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
  return p;
}

/* The end of the string literal at p (just past its closing quote), and
 * whether it holds an escape. */
static const char *string_end(const char *p, const char *e, int *escaped) {
  *escaped = 0;
  for (const char *q = p + 1; q < e; q++) {
    if (*q == '\\') {
      *escaped = 1;
      q++;
    } else if (*q == '"') {
      return q + 1;
    }
  }
  return NULL;
}

static const char *canon(const char *p, const char *e, chr_buf_t *out, int depth);

static const char *canon_object(const char *p, const char *e, chr_buf_t *out, int depth) {
  member_t stack[16], *ms = stack;
  size_t n = 0, cap = 16;
  int ok = 1;
  p = skip_ws(p + 1, e);
  if (p < e && *p == '}') {
    p++;
  } else {
    for (;;) {
      int esc;
      const char *q = p < e && *p == '"' ? string_end(p, e, &esc) : NULL;
      if (q == NULL) {
        ok = 0;
        break;
      }
      if (n == cap) {
        member_t *bigger = chr_malloc(2 * cap * sizeof *bigger);
        memcpy(bigger, ms, n * sizeof *ms);
        if (ms != stack) free(ms);
        ms = bigger;
        cap *= 2;
      }
      member_t *m = &ms[n++];
      m->owned = NULL;
      if (esc) {
        m->owned = chr_json_unescape(p, (size_t)(q - p));
        if (m->owned == NULL) {
          ok = 0;
          break;
        }
        m->key.p = m->owned;
        m->key.n = strlen(m->owned);
      } else {
        m->key.p = p + 1;
        m->key.n = (size_t)(q - p - 2);
      }
      p = skip_ws(q, e);
      if (p >= e || *p != ':') {
        ok = 0;
        break;
      }
      m->val = skip_ws(p + 1, e);
      m->vend = chr_json_skip(m->val, e);
      if (m->vend == NULL) {
        ok = 0;
        break;
      }
      p = skip_ws(m->vend, e);
      if (p < e && *p == ',') {
        p = skip_ws(p + 1, e);
        continue;
      }
      if (p < e && *p == '}') {
        p++;
        break;
      }
      ok = 0;
      break;
    }
  }
  if (ok) {
    qsort(ms, n, sizeof *ms, chr_json_key_cmp);
    chr_buf_addc(out, '{');
    for (size_t i = 0; ok && i < n; i++) {
      if (i) chr_buf_addc(out, ',');
      chr_json_add_string(out, ms[i].key.p, ms[i].key.n);
      chr_buf_addc(out, ':');
      ok = canon(ms[i].val, ms[i].vend, out, depth + 1) != NULL;
    }
    chr_buf_addc(out, '}');
  }
  for (size_t i = 0; i < n; i++) free(ms[i].owned);
  if (ms != stack) free(ms);
  return ok ? p : NULL;
}

static const char *canon(const char *p, const char *e, chr_buf_t *out, int depth) {
  p = skip_ws(p, e);
  if (p >= e || depth > 200) return NULL;
  switch (*p) {
  case '{': return canon_object(p, e, out, depth);
  case '[':
    chr_buf_addc(out, '[');
    p = skip_ws(p + 1, e);
    if (p < e && *p == ']') {
      chr_buf_addc(out, ']');
      return p + 1;
    }
    for (int first = 1;; first = 0) {
      if (!first) chr_buf_addc(out, ',');
      p = canon(p, e, out, depth + 1);
      if (p == NULL) return NULL;
      p = skip_ws(p, e);
      if (p < e && *p == ',') {
        p++;
        continue;
      }
      if (p < e && *p == ']') {
        chr_buf_addc(out, ']');
        return p + 1;
      }
      return NULL;
    }
  case '"': {
    int esc;
    const char *q = string_end(p, e, &esc);
    if (q == NULL) return NULL;
    if (!esc) {
      chr_buf_add(out, p, (size_t)(q - p));
      return q;
    }
    char *s = chr_json_unescape(p, (size_t)(q - p));
    if (s == NULL) return NULL;
    chr_json_add_string(out, s, strlen(s));
    free(s);
    return q;
  }
  case 't':
  case 'f':
  case 'n': {
    const char *q = chr_json_skip(p, e);
    if (q == NULL) return NULL;
    chr_buf_add(out, p, (size_t)(q - p));
    return q;
  }
  default: {
    /* As the encoder writes numbers: PostgreSQL prints numeric in plain
     * decimal, 1.5e-07 as 0.00000015 and 1e100 as 1 and 100 zeros. */
    const char *q = p;
    while (q < e && (strchr("+-.eE", *q) || (*q >= '0' && *q <= '9'))) q++;
    if (q == p || chr_json_canon_number(p, (size_t)(q - p), out) != 0) return NULL;
    return q;
  }
  }
}

int chr_pg_json_canon(const char *s, size_t n, chr_buf_t *out) {
  const char *e = s + n, *p = canon(s, e, out, 0);
  return p != NULL && skip_ws(p, e) == e ? 0 : -1;
}
