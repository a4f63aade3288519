/* pg_sql.c - the SQL of every store operation on PostgreSQL: statement
 * texts and the parameters built from each request (pg_rows.c decodes the
 * results). Every value travels as a parameter; the only text spliced into
 * statements is the validated, quoted table name and column names chosen
 * here. Times go in as ISO-8601 text with 'Z' and come back as binary
 * timestamptz (µs since 2000-01-01, pg_rows.c), so neither the session
 * TimeZone nor float rounding can touch them.
 *
 * A row keeps the fields the scheduler searches on in real columns
 * (status, trigger_type, next_run_time, priority, claimed_by, lease_until,
 * updated_at) and every other field in `record` (JSONB), so claims, lease
 * heartbeats and recovery rewrite columns only, never the document.
 *
 * Runs (history.h) live in a table of their own beside the jobs ({R}). A
 * completion writes the runs of the items that applied in its own
 * statement, and record_runs in one statement too: both end in RUNS_WRITE,
 * which inserts, prunes each job to its keep count and, when asked, prunes
 * by age. */
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "pg.h"
#include "core/time.h"

#define COLS                                                                                 \
  "t.job_id, t.status, t.trigger_type, t.next_run_time, t.priority, t.claimed_by, "          \
  "t.lease_until, t.updated_at, t.record"
/* Strictly later than the row's previous write, so a compare-and-swap on
 * updated_at never mistakes two writes in one microsecond for none. */
#define STAMP "GREATEST(statement_timestamp(), t.updated_at + interval '1 microsecond')"
/* A lease ($L) granted by a request that waited more than a second since
 * it was issued ($I: queued, or the server was paused) starts when the
 * statement executes, on the server's clock. */
#define LEASE(L, I)                                                                    \
  "(" L "::timestamptz + CASE WHEN statement_timestamp() - " I "::timestamptz > interval " \
  "'1 second' THEN statement_timestamp() - " I "::timestamptz ELSE interval '0' END)"

/* The members of a run as json_to_recordset reads them (run_members). */
#define RUN_FIELDS                                                                          \
  "rid text, rjob text, rname text, rfunc text, rnode text, rmeta jsonb, rcode text, "      \
  "rmsg text, rsch timestamptz, rsta timestamptz, rend timestamptz, ratt integer, "         \
  "rout text, rkeep integer"
/* Writes the runs of CTE `rw` (RUN_FIELDS, rkeep >= 1). A job keeps its
 * rkeep newest runs (the smallest rkeep of its runs in this write): `cand`
 * ranks its k newest stored runs (an index probe, which finds nothing for
 * a new job) together with the runs written, so that a run written here
 * but already outranked is not inserted, and the stored runs ranked below
 * the k-th are deleted. A statement does not see its own inserts, hence
 * the ranking over both. The same run written twice (same primary key) is
 * kept once. $2, when not NULL, prunes by age: the oldest 1,000 runs that
 * started before it, found on the started_at index and deleted by their
 * row addresses (no scan of the table however many are due), skipping
 * rows another transaction holds. */
#define RUNS_WRITE                                                                          \
  ", jk AS (SELECT rw.rjob, min(rw.rkeep) AS k FROM rw GROUP BY rw.rjob"                    \
  "), cand AS ("                                                                            \
  " SELECT c.rjob, c.sa, c.id, c.b, min(c.k) OVER (PARTITION BY c.rjob) AS k,"              \
  "  row_number() OVER (PARTITION BY c.rjob"                                                \
  "   ORDER BY c.sa DESC, c.id COLLATE \"C\" DESC) AS n"                                    \
  " FROM (SELECT s.*, jk.k FROM jk CROSS JOIN LATERAL ("                                    \
  "   SELECT h.job_id AS rjob, h.started_at AS sa, h.run_id AS id, false AS b FROM {R} h"   \
  "   WHERE h.job_id = jk.rjob ORDER BY h.started_at DESC, h.run_id DESC LIMIT jk.k) s"     \
  "  UNION ALL SELECT rw.rjob, rw.rsta, rw.rid, true, rw.rkeep FROM rw) c"                  \
  "), ins AS ("                                                                             \
  " INSERT INTO {R} (run_id, job_id, started_at, ended_at, scheduled_at, attempt, outcome," \
  "  name, func_name, node, error_code, error_message, metadata)"                           \
  " SELECT rw.rid, rw.rjob, rw.rsta, rw.rend, rw.rsch, rw.ratt, rw.rout, rw.rname,"         \
  "  rw.rfunc, rw.rnode, rw.rcode, rw.rmsg, rw.rmeta"                                       \
  " FROM rw JOIN cand ON cand.b AND cand.rjob = rw.rjob AND cand.id = rw.rid"               \
  " WHERE cand.n <= cand.k ON CONFLICT DO NOTHING"                                         \
  "), pj AS ("                                                                              \
  " DELETE FROM {R} h USING cand WHERE cand.n = cand.k AND h.job_id = cand.rjob"            \
  "  AND (h.started_at, h.run_id) < (cand.sa, cand.id COLLATE \"C\")"                       \
  "), pa AS ("                                                                              \
  " DELETE FROM {R} h WHERE h.ctid = ANY (ARRAY(SELECT a.ctid FROM {R} a"                  \
  "  WHERE a.started_at < $2::timestamptz ORDER BY a.started_at LIMIT 1000"                 \
  "  FOR UPDATE SKIP LOCKED)))"
#define RUN_COLS                                                                            \
  "h.run_id, h.job_id, h.name, h.func_name, h.node, h.metadata, h.error_code, "             \
  "h.error_message, h.scheduled_at, h.started_at, h.ended_at, h.attempt, h.outcome"

const char *const chr_pg_stmt_names[PG_S__COUNT] = {
    "chronis_get",      "chronis_batch",    "chronis_create",  "chronis_delete",
    "chronis_claim",    "chronis_complete", "chronis_recover", "chronis_extend",
    "chronis_next_due", "chronis_notify",   "chronis_record_runs", "chronis_claim_queues",
    "chronis_create_many"};

static const struct {
  int nparams;
  const char *sql;
} stmts[PG_S__COUNT] = {
    [PG_S_GET] = {1, "SELECT " COLS " FROM {T} t WHERE t.job_id = $1"},
    [PG_S_BATCH] = {1, "SELECT " COLS " FROM {T} t WHERE t.job_id = ANY($1::text[])"},
    [PG_S_CREATE] = {8, "INSERT INTO {T} AS t (job_id, status, trigger_type, next_run_time, "
                        "priority, claimed_by, lease_until, updated_at, record) VALUES ($1, $2, "
                        "$3, $4::timestamptz, $5::integer, $6, $7::timestamptz, "
                        "statement_timestamp(), $8::jsonb) ON CONFLICT (job_id) DO NOTHING "
                        "RETURNING " COLS},
    [PG_S_DELETE] = {1, "DELETE FROM {T} t WHERE t.job_id = $1"},
    /* Priority levels are walked from the top (a loose index scan), and
     * each level yields its due jobs in time order from the partial index:
     * the cost is levels + rows claimed, however many jobs wait in the
     * future at a higher priority. {S}: a scope's conditions on `d`
     * (scoped requests are built as dynamic SQL, scope_sql). */
    [PG_S_CLAIM] = {5, "WITH RECURSIVE lv(p) AS ("
                       " SELECT max(COALESCE(d.priority, 5)) FROM {T} d"
                       " WHERE d.status = 'scheduled'{S}"
                       " UNION ALL"
                       " SELECT (SELECT max(COALESCE(d.priority, 5)) FROM {T} d"
                       "  WHERE d.status = 'scheduled'{S} AND COALESCE(d.priority, 5) < lv.p)"
                       " FROM lv WHERE lv.p IS NOT NULL"
                       "), pick AS ("
                       " SELECT c.job_id FROM lv CROSS JOIN LATERAL ("
                       "  SELECT d.job_id, d.next_run_time FROM {T} d"
                       "  WHERE d.status = 'scheduled' AND COALESCE(d.priority, 5) = lv.p"
                       "   AND d.next_run_time <= $1::timestamptz{S}"
                       "  ORDER BY d.next_run_time, d.job_id LIMIT $2::bigint"
                       "  FOR UPDATE SKIP LOCKED) c"
                       " ORDER BY lv.p DESC, c.next_run_time, c.job_id LIMIT $2::bigint"
                       "), upd AS ("
                       " UPDATE {T} t SET status = 'running', claimed_by = $3,"
                       "  lease_until = " LEASE("$4", "$5") ", updated_at = " STAMP
                       " FROM pick WHERE t.job_id = pick.job_id RETURNING " COLS
                       ") SELECT * FROM upd t"
                       " ORDER BY COALESCE(t.priority, 5) DESC, t.next_run_time, t.job_id"},
    /* One statement for the whole batch: each item applies only while the
     * row is still claimed by the item's owner, and the run of each item
     * that applied is written with it. The final SELECT sees the table as
     * it was before the statement, which tells a missing job from one
     * claimed by someone else; it looks only for the items that did not
     * apply (the planner may otherwise hash the whole table for them). The items are read as json, not jsonb:
     * json_to_recordset reads each object as it goes, where a jsonb value
     * of thousands of items is first built whole, which costs several
     * times as much on the server. */
    [PG_S_COMPLETE] = {2, "WITH x AS (SELECT * FROM json_to_recordset($1::json) AS x(i "
                          "integer, id text, owner text, del boolean, m integer, st text, tt "
                          "text, nrt timestamptz, pr integer, cb text, lu timestamptz, rs "
                          "jsonb, rd text[], " RUN_FIELDS ")"
                          "), d AS ("
                          " DELETE FROM {T} t USING x"
                          " WHERE x.del AND t.job_id = x.id AND t.claimed_by = x.owner"
                          " RETURNING x.i"
                          "), u AS ("
                          " UPDATE {T} t SET"
                          "  status = CASE WHEN x.m & 1 <> 0 THEN x.st ELSE t.status END,"
                          "  trigger_type = CASE WHEN x.m & 2 <> 0 THEN x.tt"
                          "   ELSE t.trigger_type END,"
                          "  next_run_time = CASE WHEN x.m & 4 <> 0 THEN x.nrt"
                          "   ELSE t.next_run_time END,"
                          "  priority = CASE WHEN x.m & 8 <> 0 THEN x.pr ELSE t.priority END,"
                          "  claimed_by = CASE WHEN x.m & 16 <> 0 THEN x.cb ELSE t.claimed_by END,"
                          "  lease_until = CASE WHEN x.m & 32 <> 0 THEN x.lu"
                          "   ELSE t.lease_until END,"
                          "  record = CASE WHEN x.rs IS NULL AND x.rd IS NULL THEN t.record"
                          "   ELSE (t.record || COALESCE(x.rs, '{}'::jsonb))"
                          "    - COALESCE(x.rd, '{}'::text[]) END,"
                          "  updated_at = " STAMP " FROM x"
                          " WHERE NOT x.del AND t.job_id = x.id AND t.claimed_by = x.owner"
                          " RETURNING x.i, t.status, t.next_run_time"
                          "), rw AS (SELECT x.* FROM x WHERE x.rid IS NOT NULL"
                          " AND (x.i IN (SELECT d.i FROM d) OR x.i IN (SELECT u.i FROM u))"
                          ")" RUNS_WRITE
                          " SELECT x.i, d.i IS NOT NULL OR u.i IS NOT NULL,"
                          " CASE WHEN d.i IS NULL AND u.i IS NULL"
                          "  THEN EXISTS (SELECT 1 FROM {T} e WHERE e.job_id = x.id) END,"
                          " CASE WHEN u.status = 'scheduled' THEN u.next_run_time END"
                          " FROM x LEFT JOIN d ON d.i = x.i LEFT JOIN u ON u.i = x.i"},
    [PG_S_RECOVER] = {1, "WITH r AS (UPDATE {T} t SET status = 'scheduled', claimed_by = NULL,"
                         " lease_until = NULL, updated_at = " STAMP ","
                         /* The run that was cut short counts (engine.c). */
                         " record = t.record || jsonb_build_object("
                         "'retry_count', COALESCE((t.record->>'retry_count')::bigint, 0) + 1,"
                         " 'attempt', COALESCE((t.record->>'attempt')::bigint, 0) + 1)"
                         " WHERE t.status = 'running' AND t.lease_until < $1::timestamptz{S}"
                         " RETURNING t.next_run_time) SELECT count(*), min(next_run_time) FROM r"},
    [PG_S_EXTEND] = {4, "UPDATE {T} t SET lease_until = " LEASE("$3", "$4") ", updated_at = " STAMP
                        " WHERE t.job_id = ANY($1::text[]) AND t.status = 'running'"
                        " AND t.claimed_by = $2"},
    /* The engine asks after every poll: the first job of each priority
     * level, from the due index, instead of a scan of every scheduled job. */
    [PG_S_NEXT_DUE] = {0, "WITH RECURSIVE lv(p) AS ("
                          " SELECT max(COALESCE(priority, 5)) FROM {T} WHERE status = 'scheduled'"
                          " UNION ALL"
                          " SELECT (SELECT max(COALESCE(priority, 5)) FROM {T}"
                          "  WHERE status = 'scheduled' AND COALESCE(priority, 5) < lv.p)"
                          " FROM lv WHERE lv.p IS NOT NULL"
                          ") SELECT min(f.t) FROM lv CROSS JOIN LATERAL ("
                          " SELECT d.next_run_time AS t FROM {T} d"
                          " WHERE d.status = 'scheduled' AND COALESCE(d.priority, 5) = lv.p"
                          "  AND d.next_run_time IS NOT NULL"
                          " ORDER BY d.next_run_time LIMIT 1) f"},
    [PG_S_NOTIFY] = {2, "SELECT pg_notify($1, $2)"},
    [PG_S_RECORD_RUNS] = {2, "WITH rw AS (SELECT * FROM json_to_recordset($1::json) AS r("
                             RUN_FIELDS "))" RUNS_WRITE " SELECT count(*) FROM rw"},
    /* A claim with queues ($6 names, $7 limits, $8 global limits, $9 rate
     * limits, $10 rate windows, $11 periods in µs): {F} (migration 7)
     * serialises it with the other claims of its limited queues and gives
     * each queue's room; then, per queue with room, its priority levels
     * are walked as PG_S_CLAIM walks them, on the index of due jobs by
     * queue, each level yielding at most the room; the queues' picks go
     * together in claim order up to $2, and the claims of queues with a
     * rate limit are added to their window's count, in this statement
     * (a row locked by ON CONFLICT on its newest version, which {F}'s lock
     * leaves to one claim at a time). */
    [PG_S_QCLAIM] = {11, "WITH RECURSIVE room AS MATERIALIZED ("
                         " SELECT r.q_name AS q, r.q_room AS n FROM {F}($6::text[], $7::bigint[],"
                         "  $8::bigint[], $9::bigint[], $10::timestamptz[], $11::bigint[]) r"
                         "), lv(q, p) AS ("
                         " SELECT room.q, (SELECT max(COALESCE(d.priority, 5)) FROM {T} d"
                         "  WHERE d.status = 'scheduled'"
                         "   AND COALESCE(d.record ->> 'queue', 'default') = room.q{S})"
                         " FROM room WHERE room.n > 0"
                         " UNION ALL"
                         " SELECT lv.q, (SELECT max(COALESCE(d.priority, 5)) FROM {T} d"
                         "  WHERE d.status = 'scheduled'"
                         "   AND COALESCE(d.record ->> 'queue', 'default') = lv.q"
                         "   AND COALESCE(d.priority, 5) < lv.p{S})"
                         " FROM lv WHERE lv.p IS NOT NULL"
                         "), cand AS ("
                         " SELECT c.job_id, lv.p, c.next_run_time, room.n,"
                         "  row_number() OVER (PARTITION BY lv.q"
                         "   ORDER BY lv.p DESC, c.next_run_time, c.job_id) AS k"
                         " FROM lv JOIN room ON room.q = lv.q CROSS JOIN LATERAL ("
                         "  SELECT d.job_id, d.next_run_time FROM {T} d"
                         "  WHERE d.status = 'scheduled'"
                         "   AND COALESCE(d.record ->> 'queue', 'default') = lv.q"
                         "   AND COALESCE(d.priority, 5) = lv.p"
                         "   AND d.next_run_time <= $1::timestamptz{S}"
                         "  ORDER BY d.next_run_time, d.job_id LIMIT room.n"
                         "  FOR UPDATE SKIP LOCKED) c"
                         "), pick AS ("
                         " SELECT cand.job_id FROM cand WHERE cand.k <= cand.n"
                         " ORDER BY cand.p DESC, cand.next_run_time, cand.job_id LIMIT $2::bigint"
                         "), upd AS ("
                         " UPDATE {T} t SET status = 'running', claimed_by = $3,"
                         "  lease_until = " LEASE("$4", "$5") ", updated_at = " STAMP
                         " FROM pick WHERE t.job_id = pick.job_id RETURNING " COLS
                         "), used AS ("
                         " INSERT INTO {Q} AS w (queue, window_start, used)"
                         " SELECT x.q, x.win, count(*) FROM upd"
                         " JOIN unnest($6::text[], $9::bigint[], $10::timestamptz[]) AS x(q, r, win)"
                         "  ON x.q = COALESCE(upd.record ->> 'queue', 'default')"
                         " WHERE x.r > 0 GROUP BY x.q, x.win"
                         " ON CONFLICT (queue, window_start) DO UPDATE SET used = w.used + excluded.used"
                         ") SELECT * FROM upd t"
                         " ORDER BY COALESCE(t.priority, 5) DESC, t.next_run_time, t.job_id"},
    /* create_jobs: the records as json (read row by row, as completions
     * are), each with the columns PG_S_CREATE writes; a row whose job_id
     * is stored already is skipped, and the ids written come back. Two
     * records of one batch with the same id never reach it: the adapter
     * sends the first only (build_create_many). */
    [PG_S_CREATE_MANY] = {1, "INSERT INTO {T} AS t (job_id, status, trigger_type, next_run_time,"
                             " priority, claimed_by, lease_until, updated_at, record)"
                             " SELECT x.id, x.st, x.tt, x.nrt, x.pr, x.cb, x.lu,"
                             " statement_timestamp(), x.rec"
                             " FROM json_to_recordset($1::json) AS x(id text, st text, tt text,"
                             " nrt timestamptz, pr integer, cb text, lu timestamptz, rec jsonb)"
                             " ON CONFLICT (job_id) DO NOTHING RETURNING t.job_id"},
};

/* Replaces {T} with the quoted table name, {R}, {Q} and {F} with those of
 * its runs table, queue rate table and room function, and {S} with
 * `scope` (NULL: nothing). */
static char *expand(const char *tmpl, const pg_opts_t *o, const char *scope) {
  chr_buf_t b;
  chr_buf_init(&b);
  for (const char *p = tmpl; *p; p++) {
    if (strncmp(p, "{T}", 3) == 0 || strncmp(p, "{R}", 3) == 0 || strncmp(p, "{Q}", 3) == 0 ||
        strncmp(p, "{F}", 3) == 0) {
      chr_buf_adds(&b, p[1] == 'T'   ? o->qtable
                       : p[1] == 'R' ? o->qruns
                       : p[1] == 'Q' ? o->qrates
                                     : o->qroom);
      p += 2;
    } else if (strncmp(p, "{S}", 3) == 0) {
      if (scope) chr_buf_adds(&b, scope);
      p += 2;
    } else {
      chr_buf_addc(&b, *p);
    }
  }
  return chr_buf_steal(&b);
}

void chr_pg_sql_init(pg_sql_t *q, const pg_opts_t *o) {
  for (int i = 0; i < PG_S__COUNT; i++) {
    q->text[i] = expand(stmts[i].sql, o, NULL);
    q->nparams[i] = stmts[i].nparams;
  }
}

void chr_pg_sql_free(pg_sql_t *q) {
  for (int i = 0; i < PG_S__COUNT; i++) free(q->text[i]);
  memset(q, 0, sizeof *q);
}

/* ---- operations and parameters ---- */

pg_op_t *chr_pg_op_new(chr_store_req_t *req) {
  pg_op_t *op = chr_calloc(1, sizeof *op);
  op->req = req;
  op->stmt = -1;
  op->wake = CHR_TIME_NONE;
  op->prune_before = CHR_TIME_NONE;
  return op;
}

void chr_pg_op_free(pg_op_t *op) {
  if (op == NULL) return;
  for (int i = 0; i < op->nparams; i++) free(op->params[i]);
  free(op->params);
  free(op->sql);
  free(op);
}

void chr_pg_param_take(pg_op_t *op, char *s) {
  if (op->nparams == op->cap) {
    op->cap = op->cap ? op->cap * 2 : 8;
    op->params = chr_realloc(op->params, (size_t)op->cap * sizeof *op->params);
  }
  op->params[op->nparams++] = s;
}

void chr_pg_param(pg_op_t *op, const char *s) {
  chr_pg_param_take(op, s ? chr_strdup(s) : NULL);
}

void chr_pg_param_time(pg_op_t *op, int64_t us) {
  char buf[CHR_TIME_BUFSZ];
  if (us == CHR_TIME_NONE) {
    chr_pg_param_take(op, NULL);
    return;
  }
  chr_time_format(us, buf);
  chr_pg_param(op, buf);
}

void chr_pg_param_int(pg_op_t *op, int64_t v) {
  chr_pg_param_take(op, chr_sprintf("%lld", (long long)v));
}

/* A text[] literal: {"a","b\"c"}. */
static char *array_literal(char *const *items, size_t n) {
  chr_buf_t b;
  chr_buf_init(&b);
  chr_buf_addc(&b, '{');
  for (size_t i = 0; i < n; i++) {
    if (i) chr_buf_addc(&b, ',');
    chr_buf_addc(&b, '"');
    for (const char *s = items[i]; *s; s++) {
      if (*s == '"' || *s == '\\') chr_buf_addc(&b, '\\');
      chr_buf_addc(&b, *s);
    }
    chr_buf_addc(&b, '"');
  }
  chr_buf_addc(&b, '}');
  return chr_buf_steal(&b);
}

/* $n of the parameter about to be added. */
static int next_param(const pg_op_t *op) {
  return op->nparams + 1;
}

/* ---- fields: columns or record members ---- */

#define FIELD_PTR(j, d) ((const char *)(j) + (d)->offset)

static int is_column(int f) {
  switch (f) {
  case CHR_F_JOB_ID:
  case CHR_F_STATUS:
  case CHR_F_TRIGGER_TYPE:
  case CHR_F_NEXT_RUN_TIME:
  case CHR_F_PRIORITY:
  case CHR_F_CLAIMED_BY:
  case CHR_F_LEASE_UNTIL:
  case CHR_F_UPDATED_AT: return 1;
  default: return 0;
  }
}

/* Present with a value (not absent, not given as null). */
static int has_value(const chr_job_t *j, int f) {
  const chr_field_desc_t *d = &chr_job_fields[f];
  if (!chr_job_has(j, f) || (j->nullmask & CHR_BIT(f))) return 0;
  if (d->type == CHR_FT_STR || d->type == CHR_FT_JSON) return *(char *const *)FIELD_PTR(j, d) != NULL;
  if (d->type == CHR_FT_TIME) return *(const int64_t *)FIELD_PTR(j, d) != CHR_TIME_NONE;
  return 1;
}

/* Given as null in a partial record. */
static int given_null(const chr_job_t *j, int f) {
  return ((j->mask | j->nullmask) & CHR_BIT(f)) && !has_value(j, f);
}

/* The field's value as JSON text (it has one). */
static void field_json(const chr_job_t *j, int f, chr_buf_t *out) {
  const chr_field_desc_t *d = &chr_job_fields[f];
  const void *p = FIELD_PTR(j, d);
  char tb[CHR_TIME_BUFSZ];
  switch (d->type) {
  case CHR_FT_STR: {
    const char *s = *(char *const *)p;
    chr_json_add_string(out, s, strlen(s));
    break;
  }
  case CHR_FT_JSON: chr_buf_adds(out, *(char *const *)p); break;
  case CHR_FT_TIME:
    chr_time_format(*(const int64_t *)p, tb);
    chr_json_add_string(out, tb, strlen(tb));
    break;
  case CHR_FT_INT: chr_buf_printf(out, "%d", (int)*(const int32_t *)p); break;
  case CHR_FT_ENUM: chr_buf_printf(out, "\"%s\"", d->enum_names[*(const uint8_t *)p]); break;
  }
}

/* A column's value as a parameter (it has one). */
static void column_param(pg_op_t *op, const chr_job_t *j, int f) {
  switch (f) {
  case CHR_F_JOB_ID: chr_pg_param(op, j->job_id); break;
  case CHR_F_STATUS: chr_pg_param(op, chr_status_names[j->status]); break;
  case CHR_F_TRIGGER_TYPE: chr_pg_param(op, chr_trigger_type_names[j->trigger_type]); break;
  case CHR_F_NEXT_RUN_TIME: chr_pg_param_time(op, j->next_run_time); break;
  case CHR_F_PRIORITY: chr_pg_param_int(op, j->priority); break;
  case CHR_F_CLAIMED_BY: chr_pg_param(op, j->claimed_by); break;
  case CHR_F_LEASE_UNTIL: chr_pg_param_time(op, j->lease_until); break;
  case CHR_F_UPDATED_AT: chr_pg_param_time(op, j->updated_at); break;
  }
}

static const char *column_cast(int f) {
  switch (f) {
  case CHR_F_NEXT_RUN_TIME:
  case CHR_F_LEASE_UNTIL:
  case CHR_F_UPDATED_AT: return "::timestamptz";
  case CHR_F_PRIORITY: return "::integer";
  default: return "";
  }
}

static void member_add(chr_buf_t *b, const char *key, size_t klen, const char *val, size_t vlen) {
  chr_buf_addc(b, b->len == 0 ? '{' : ',');
  chr_buf_add(b, key, klen);
  chr_buf_addc(b, ':');
  chr_buf_add(b, val, vlen);
}

/* The record members of j: set = members with a value, as a JSON object
 * (empty buffer: none); dels = keys given as null (malloc'ed). */
static void record_parts(const chr_job_t *j, chr_buf_t *set, char ***dels, size_t *ndel) {
  chr_buf_t v;
  chr_buf_init(&v);
  for (int f = 0; f < CHR_F__COUNT; f++) {
    if (is_column(f)) continue;
    const char *name = chr_job_fields[f].name;
    if (has_value(j, f)) {
      char key[64];
      int kn = snprintf(key, sizeof key, "\"%s\"", name);
      v.len = 0;
      field_json(j, f, &v);
      member_add(set, key, (size_t)kn, v.p, v.len);
    } else if (dels && given_null(j, f)) {
      *dels = chr_realloc(*dels, (*ndel + 1) * sizeof **dels);
      (*dels)[(*ndel)++] = chr_strdup(name);
    }
  }
  chr_buf_free(&v);
  if (j->extra) {
    const char *it = j->extra, *end = it + strlen(it);
    chr_json_span_t k, val;
    while (chr_json_next_member(&it, end, &k, &val) == 1) {
      if (val.n == 4 && memcmp(val.p, "null", 4) == 0) {
        if (dels) {
          *dels = chr_realloc(*dels, (*ndel + 1) * sizeof **dels);
          (*dels)[(*ndel)++] = chr_json_unescape(k.p - 1, k.n + 2);
        }
      } else {
        member_add(set, k.p - 1, k.n + 2, val.p, val.n);
      }
    }
  }
  if (set->len > 0) chr_buf_addc(set, '}');
}

static void free_list(char **l, size_t n) {
  for (size_t i = 0; i < n; i++) free(l[i]);
  free(l);
}

/* ", col = $n, ..., record = ..., updated_at = STAMP" for partial u. */
static void set_clause(chr_buf_t *sql, pg_op_t *op, const chr_job_t *u) {
  chr_buf_adds(sql, " SET ");
  for (int f = 0; u && f < CHR_F__COUNT; f++) {
    if (!is_column(f) || f == CHR_F_JOB_ID || f == CHR_F_UPDATED_AT) continue;
    if (has_value(u, f)) {
      chr_buf_printf(sql, "%s = $%d%s, ", chr_job_fields[f].name, next_param(op), column_cast(f));
      column_param(op, u, f);
    } else if (given_null(u, f)) {
      chr_buf_printf(sql, "%s = NULL, ", chr_job_fields[f].name);
    }
  }
  chr_buf_t set;
  char **dels = NULL;
  size_t ndel = 0;
  chr_buf_init(&set);
  if (u) record_parts(u, &set, &dels, &ndel);
  if (set.len > 0 || ndel > 0) {
    chr_buf_printf(sql, "record = (t.record || $%d::jsonb) - $%d::text[], ", next_param(op),
                   next_param(op) + 1);
    chr_pg_param(op, set.len ? set.p : "{}");
    chr_pg_param_take(op, array_literal(dels, ndel));
  }
  chr_buf_free(&set);
  free_list(dels, ndel);
  chr_buf_adds(sql, "updated_at = " STAMP);
}

/* " AND cond" for every expected field: columns compare as typed columns,
 * other fields and unknown members as JSONB values. */
static void cas_conds(chr_buf_t *sql, pg_op_t *op, const chr_job_t *e) {
  chr_buf_t v;
  chr_buf_init(&v);
  for (int f = 0; f < CHR_F__COUNT; f++) {
    const char *name = chr_job_fields[f].name;
    if (has_value(e, f)) {
      if (is_column(f)) {
        chr_buf_printf(sql, " AND t.%s = $%d%s", name, next_param(op), column_cast(f));
        column_param(op, e, f);
      } else {
        v.len = 0;
        field_json(e, f, &v);
        chr_buf_printf(sql, " AND t.record -> '%s' = $%d::jsonb", name, next_param(op));
        chr_pg_param(op, v.p);
      }
    } else if (given_null(e, f)) {
      if (is_column(f)) chr_buf_printf(sql, " AND t.%s IS NULL", name);
      else chr_buf_printf(sql, " AND NOT (t.record ? '%s')", name);
    }
  }
  chr_buf_free(&v);
  if (e->extra) {
    const char *it = e->extra, *end = it + strlen(it);
    chr_json_span_t k, val;
    while (chr_json_next_member(&it, end, &k, &val) == 1) {
      char *key = chr_json_unescape(k.p - 1, k.n + 2);
      if (val.n == 4 && memcmp(val.p, "null", 4) == 0) {
        chr_buf_printf(sql, " AND NOT (t.record ? $%d)", next_param(op));
        chr_pg_param_take(op, key);
      } else {
        chr_buf_printf(sql, " AND t.record -> $%d = $%d::jsonb", next_param(op), next_param(op) + 1);
        chr_pg_param_take(op, key);
        chr_pg_param_take(op, chr_strndup(val.p, val.n));
      }
    }
  }
}

/* "(doc -> $k1 -> $k2 ...)": the value at m's path, or NULL. `->` with a
 * text key steps into objects only and is NULL on an array or a scalar,
 * as chr_json_lookup_keys is; #> would take an array's element by
 * position for a key such as "0". */
static void meta_walk(chr_buf_t *sql, pg_op_t *op, const char *doc_expr,
                      const chr_meta_filter_t *m) {
  chr_buf_printf(sql, "(%s", doc_expr);
  for (size_t k = 0; k < m->nkeys; k++) {
    chr_buf_printf(sql, " -> $%d::text", next_param(op));
    chr_pg_param(op, m->keys[k]);
  }
  chr_buf_addc(sql, ')');
}

/* " AND ..." for each metadata condition of a filter (filter.h), on the
 * metadata object `doc`. For equality, containment lets a GIN index find
 * candidates and says that each step of the path is an object member (#>
 * would also step into an array by position, chr_json_lookup does not);
 * the path equality makes the match exact ({"a":[1]} contains {"a":[]}).
 * The other operators walk the path (meta_walk). A JSON null counts as
 * absent, as in chr_meta_filter_match. */
static void meta_conds(chr_buf_t *sql, pg_op_t *op, const char *doc_expr,
                       const chr_meta_filter_t *meta, size_t nmeta) {
  for (size_t i = 0; i < nmeta; i++) {
    const chr_meta_filter_t *m = &meta[i];
    int p = next_param(op);
    if (m->op == CHR_MF_EQ) {
      chr_buf_t doc;
      chr_buf_init(&doc);
      for (size_t k = 0; k < m->nkeys; k++) {
        chr_buf_addc(&doc, '{');
        chr_json_add_string(&doc, m->keys[k], strlen(m->keys[k]));
        chr_buf_addc(&doc, ':');
      }
      chr_buf_adds(&doc, m->value);
      for (size_t k = 0; k < m->nkeys; k++) chr_buf_addc(&doc, '}');
      chr_buf_printf(sql, " AND %s @> $%d::jsonb AND %s #> $%d::text[] = $%d::jsonb", doc_expr, p,
                     doc_expr, p + 1, p + 2);
      chr_pg_param_take(op, chr_buf_steal(&doc));
      chr_pg_param_take(op, array_literal(m->keys, m->nkeys));
      chr_pg_param(op, m->value);
      continue;
    }
    if (m->op == CHR_MF_IN && m->nvalues == 0) {
      chr_buf_adds(sql, " AND false");
      continue;
    }
    switch (m->op) {
    case CHR_MF_NE:
      chr_buf_adds(sql, " AND NOT coalesce(");
      meta_walk(sql, op, doc_expr, m);
      chr_buf_printf(sql, " = $%d::jsonb, false)", next_param(op));
      chr_pg_param(op, m->value);
      break;
    case CHR_MF_IN:
      chr_buf_adds(sql, " AND ");
      meta_walk(sql, op, doc_expr, m);
      chr_buf_printf(sql, " = ANY($%d::jsonb[])", next_param(op));
      chr_pg_param_take(op, array_literal(m->values, m->nvalues));
      break;
    default: /* ABSENT, PRESENT */
      chr_buf_adds(sql, " AND coalesce(");
      meta_walk(sql, op, doc_expr, m);
      chr_buf_printf(sql, ", 'null') %s 'null'", m->op == CHR_MF_ABSENT ? "=" : "<>");
      break;
    }
  }
}

/* " AND ..." for an $eq or $in on an index_metadata path, on the row of
 * alias `rec` ("t.record"): the indexed expression named literally (a
 * path given as a parameter would not match the index), the values as
 * parameters. Returns 0, writing nothing, for any other condition, and
 * for a JSON null among the values, which means absent
 * (chr_meta_filter_match): meta_conds says that. */
static int indexed_cond(chr_buf_t *sql, pg_op_t *op, const pg_opts_t *o, const char *rec,
                        const chr_meta_filter_t *m) {
  if ((m->op != CHR_MF_EQ && m->op != CHR_MF_IN) || !chr_pg_path_indexed(o, m->path)) return 0;
  for (size_t i = 0; i < m->nvalues; i++)
    if (strcmp(m->values[i], "null") == 0) return 0;
  if (m->nvalues == 0) {
    chr_buf_adds(sql, " AND false");
    return 1;
  }
  chr_buf_adds(sql, " AND ");
  chr_pg_meta_expr(sql, rec, m->path);
  if (m->op == CHR_MF_EQ) {
    chr_buf_printf(sql, " = $%d::jsonb", next_param(op));
    chr_pg_param(op, m->value);
  } else {
    chr_buf_printf(sql, " = ANY($%d::jsonb[])", next_param(op));
    chr_pg_param_take(op, array_literal(m->values, m->nvalues));
  }
  return 1;
}

/* " AND ..." for the metadata conditions of jobs on the row of `alias`
 * but `skip` (written by the caller): those on an indexed path by
 * indexed_cond, the others by meta_conds. */
static void job_meta_conds(chr_buf_t *sql, pg_op_t *op, const pg_opts_t *o, const char *alias,
                           const chr_meta_filter_t *meta, size_t nmeta,
                           const chr_meta_filter_t *skip) {
  char rec[32], doc[64];
  snprintf(rec, sizeof rec, "%s.record", alias);
  snprintf(doc, sizeof doc, "(%s.record -> 'metadata')", alias);
  chr_meta_filter_t *rest = chr_malloc((nmeta ? nmeta : 1) * sizeof *rest);
  size_t nrest = 0;
  for (size_t i = 0; i < nmeta; i++)
    if (&meta[i] != skip && !indexed_cond(sql, op, o, rec, &meta[i]))
      rest[nrest++] = meta[i]; /* borrowed */
  meta_conds(sql, op, doc, rest, nrest);
  free(rest);
}

/* The condition of a query's filter that an index_metadata index reads in
 * query order: a single-value $eq (not null) on an indexed path, when the
 * filter asks for scheduled jobs only. NULL when there is none.
 * Scheduled only: it is the status of most of a tenant's jobs, the one
 * whose page needs the index order, and the last status in the index
 * ('scheduled' sorts after the others), so that the scan of
 * ordered_cond ends with the tenant's last scheduled entry. For another
 * status it would also step over the entries of the tenant's jobs of
 * later statuses (the scheduled ones among them: nbtree stops a scan on
 * the first column of a row comparison only), where the equalities find
 * the few jobs of that status by bitmap and sort them. */
static const chr_meta_filter_t *ordered_key(const pg_opts_t *o, const chr_filter_t *f) {
  if (f == NULL || f->status_mask != 1u << CHR_ST_SCHEDULED) return NULL;
  for (size_t i = 0; i < f->nmeta; i++) {
    const chr_meta_filter_t *m = &f->meta[i];
    if (m->op == CHR_MF_EQ && strcmp(m->value, "null") != 0 && chr_pg_path_indexed(o, m->path))
      return m;
  }
  return NULL;
}

/* " AND ..." for `key` (ordered_key) and status scheduled: the pair
 * (path value, status) between itself and itself, which is the two
 * equalities. Written as row comparisons because the planner estimates
 * each at a third of the table when the table has no statistics (jobs
 * loaded after the last ANALYZE), where two equalities come to 1/40,000
 * of it: a handful of rows, for which it reads all of the tenant's rows
 * of that status by bitmap and sorts them. With the estimate above the
 * limit, the only cheap plan is the index in query order, stopped at the
 * limit, with statistics or without. */
static void ordered_cond(chr_buf_t *sql, pg_op_t *op, const chr_meta_filter_t *key) {
  int p = next_param(op);
  for (int i = 0; i < 2; i++) {
    chr_buf_adds(sql, " AND ROW(");
    chr_pg_meta_expr(sql, "t.record", key->path);
    chr_buf_printf(sql, ", t.status) %s ROW($%d::jsonb, $%d::text)", i ? "<=" : ">=", p, p + 1);
  }
  chr_pg_param(op, key->value);
  chr_pg_param(op, chr_status_names[CHR_ST_SCHEDULED]);
}

/* " WHERE ..." for a filter (docs/adapters.md, Filters); `key`, when not
 * NULL, is its ordered_key. */
static void where_filter(chr_buf_t *sql, pg_op_t *op, const pg_opts_t *o, const chr_filter_t *f,
                         const chr_meta_filter_t *key) {
  chr_buf_adds(sql, " WHERE true");
  if (f == NULL) return;
  if (key) {
    ordered_cond(sql, op, key);
  } else if (f->status_mask) {
    char *names[CHR_ST__COUNT];
    size_t n = 0;
    for (int s = 1; s < CHR_ST__COUNT; s++)
      if (f->status_mask & (1u << s)) names[n++] = (char *)chr_status_names[s];
    /* One status as an equality: the status index then also gives the
     * query order, and a page stops after `limit` rows. */
    if (n == 1) {
      chr_buf_printf(sql, " AND t.status = $%d", next_param(op));
      chr_pg_param(op, names[0]);
    } else {
      chr_buf_printf(sql, " AND t.status = ANY($%d::text[])", next_param(op));
      chr_pg_param_take(op, array_literal(names, n));
    }
  }
  if (f->trigger_type) {
    chr_buf_printf(sql, " AND t.trigger_type = $%d", next_param(op));
    chr_pg_param(op, chr_trigger_type_names[f->trigger_type]);
  }
  static const char *const bounds[4] = {"next_run_time <=", "next_run_time >=", "updated_at <=",
                                        "updated_at >="};
  const int64_t vals[4] = {f->nrt_lte, f->nrt_gte, f->upd_lte, f->upd_gte};
  for (int i = 0; i < 4; i++) {
    if (vals[i] == CHR_TIME_NONE) continue;
    chr_buf_printf(sql, " AND t.%s $%d::timestamptz", bounds[i], next_param(op));
    chr_pg_param_time(op, vals[i]);
  }
  job_meta_conds(sql, op, o, "t", f->meta, f->nmeta, key);
  if (f->has_ids) {
    chr_buf_printf(sql, " AND t.job_id = ANY($%d::text[])", next_param(op));
    chr_pg_param_take(op, array_literal(f->ids, f->nids));
  }
}

static void build_create(pg_op_t *op) {
  const chr_job_t *j = op->req->job;
  op->stmt = PG_S_CREATE;
  static const int cols[] = {CHR_F_JOB_ID,  CHR_F_STATUS,     CHR_F_TRIGGER_TYPE,
                             CHR_F_NEXT_RUN_TIME, CHR_F_PRIORITY, CHR_F_CLAIMED_BY,
                             CHR_F_LEASE_UNTIL};
  for (size_t i = 0; i < sizeof cols / sizeof *cols; i++) {
    if (has_value(j, cols[i])) column_param(op, j, cols[i]);
    else chr_pg_param(op, NULL);
  }
  chr_buf_t rec;
  chr_buf_init(&rec);
  record_parts(j, &rec, NULL, NULL);
  chr_pg_param(op, rec.len ? rec.p : "{}");
  chr_buf_free(&rec);
}

static int create_ref_cmp(const void *a, const void *b) {
  const pg_create_ref_t *x = a, *y = b;
  int c = strcmp(x->id, y->id);
  return c ? c : (x->i > y->i) - (x->i < y->i);
}

pg_create_ref_t *chr_pg_create_refs(const chr_store_req_t *req) {
  pg_create_ref_t *refs = chr_malloc(req->ncreates * sizeof *refs);
  for (size_t i = 0; i < req->ncreates; i++) {
    refs[i].id = req->creates[i].job->job_id;
    refs[i].i = i;
  }
  qsort(refs, req->ncreates, sizeof *refs, create_ref_cmp);
  return refs;
}

/* create_jobs: the columns of each record as PG_S_CREATE_MANY reads them
 * (the values build_create sends, as JSON members), in one json array.
 * Every record starts as a duplicate; the decoder clears those the
 * statement wrote. A later record with the id of an earlier one is not
 * sent, so the first of the batch wins whatever order the server takes
 * the rows in. */
static void build_create_many(pg_op_t *op) {
  chr_store_req_t *req = op->req;
  static const struct {
    int f;
    const char *key;
  } cols[] = {{CHR_F_JOB_ID, "id"},        {CHR_F_STATUS, "st"},   {CHR_F_TRIGGER_TYPE, "tt"},
              {CHR_F_NEXT_RUN_TIME, "nrt"}, {CHR_F_PRIORITY, "pr"}, {CHR_F_CLAIMED_BY, "cb"},
              {CHR_F_LEASE_UNTIL, "lu"}};
  pg_create_ref_t *refs = chr_pg_create_refs(req);
  char *skip = chr_calloc(req->ncreates ? req->ncreates : 1, 1);
  for (size_t k = 1; k < req->ncreates; k++)
    if (strcmp(refs[k].id, refs[k - 1].id) == 0) skip[refs[k].i] = 1;
  free(refs);
  chr_buf_t b, rec;
  chr_buf_init(&b);
  chr_buf_init(&rec);
  chr_buf_addc(&b, '[');
  for (size_t i = 0; i < req->ncreates; i++) {
    const chr_job_t *j = req->creates[i].job;
    req->creates[i].result = CHR_EDUP;
    if (skip[i]) continue;
    chr_buf_adds(&b, b.len > 1 ? ",{" : "{");
    for (size_t c = 0; c < sizeof cols / sizeof *cols; c++) {
      if (!has_value(j, cols[c].f)) continue;
      chr_buf_printf(&b, "\"%s\":", cols[c].key);
      field_json(j, cols[c].f, &b);
      chr_buf_addc(&b, ',');
    }
    rec.len = 0;
    record_parts(j, &rec, NULL, NULL);
    chr_buf_adds(&b, "\"rec\":");
    if (rec.len) chr_buf_add(&b, rec.p, rec.len);
    else chr_buf_adds(&b, "{}");
    chr_buf_addc(&b, '}');
  }
  chr_buf_addc(&b, ']');
  chr_buf_free(&rec);
  free(skip);
  op->stmt = PG_S_CREATE_MANY;
  chr_pg_param_take(op, chr_buf_steal(&b));
}

/* The keep count of run r in this store, 0 when it is not written. A run
 * without a start cannot be placed in history: it is not written either. */
static int32_t run_keep(const pg_opts_t *o, const chr_runrec_t *r) {
  if (r == NULL || r->started_at == CHR_TIME_NONE) return 0;
  return chr_runrec_keep(r, o->hist.keep);
}

static void run_str(chr_buf_t *b, const char *key, const char *v) {
  if (v == NULL) return;
  chr_buf_printf(b, ",\"%s\":", key);
  chr_json_add_string(b, v, strlen(v));
}

static void run_time(chr_buf_t *b, const char *key, int64_t us) {
  char iso[CHR_TIME_BUFSZ];
  if (us == CHR_TIME_NONE) return;
  chr_time_format(us, iso);
  chr_buf_printf(b, ",\"%s\":\"%s\"", key, iso);
}

/* The members of run r (RUN_FIELDS), rkeep first, the others each after a
 * comma. */
static void run_members(chr_buf_t *b, const chr_runrec_t *r, int32_t keep) {
  chr_buf_printf(b, "\"rkeep\":%d", (int)keep);
  run_str(b, "rid", r->run_id);
  run_str(b, "rjob", r->job_id);
  run_str(b, "rname", r->name);
  run_str(b, "rfunc", r->func_name);
  run_str(b, "rnode", r->node);
  if (r->metadata) chr_buf_printf(b, ",\"rmeta\":%s", r->metadata);
  run_str(b, "rcode", r->error_code);
  run_str(b, "rmsg", r->error_message);
  run_time(b, "rsch", r->scheduled_at);
  run_time(b, "rsta", r->started_at);
  run_time(b, "rend", r->ended_at);
  if (r->attempt > 0) chr_buf_printf(b, ",\"ratt\":%d", (int)r->attempt);
  run_str(b, "rout", chr_outcome_names[r->outcome]);
}

static void build_record_runs(const pg_opts_t *o, pg_op_t *op) {
  chr_store_req_t *req = op->req;
  chr_buf_t b;
  chr_buf_init(&b);
  chr_buf_addc(&b, '[');
  for (size_t i = 0; i < req->nruns; i++) {
    int32_t keep = run_keep(o, req->runs[i]);
    if (keep <= 0) continue;
    chr_buf_adds(&b, b.len > 1 ? ",{" : "{");
    run_members(&b, req->runs[i], keep);
    chr_buf_addc(&b, '}');
  }
  chr_buf_addc(&b, ']');
  op->stmt = PG_S_RECORD_RUNS;
  chr_pg_param_take(op, chr_buf_steal(&b));
  chr_pg_param_time(op, op->prune_before);
}

int chr_pg_item_part(const char *id, int nparts) {
  return (int)(chr_pg_fnv1a(id, strlen(id), PG_FNV_SEED) % (uint64_t)nparts);
}

static void build_complete(const pg_opts_t *o, pg_op_t *op) {
  chr_store_req_t *req = op->req;
  chr_buf_t b, set;
  chr_buf_init(&b);
  chr_buf_init(&set);
  chr_buf_addc(&b, '[');
  for (size_t i = 0; i < req->nitems; i++) {
    chr_completion_t *it = &req->items[i];
    if (op->nparts > 1 && chr_pg_item_part(it->job_id, op->nparts) != op->part) continue;
    it->result = CHR_ENOTFOUND;
    if (b.len > 1) chr_buf_addc(&b, ',');
    chr_buf_printf(&b, "{\"i\":%zu,\"id\":", i);
    chr_json_add_string(&b, it->job_id, strlen(it->job_id));
    chr_buf_adds(&b, ",\"owner\":");
    chr_json_add_string(&b, it->owner, strlen(it->owner));
    chr_buf_printf(&b, ",\"del\":%s", it->remove ? "true" : "false");
    const chr_job_t *u = it->updates;
    if (!it->remove && u != NULL) {
      static const struct {
        int f, bit;
        const char *key;
      } cols[] = {{CHR_F_STATUS, 1, "st"},     {CHR_F_TRIGGER_TYPE, 2, "tt"},
                  {CHR_F_NEXT_RUN_TIME, 4, "nrt"}, {CHR_F_PRIORITY, 8, "pr"},
                  {CHR_F_CLAIMED_BY, 16, "cb"},  {CHR_F_LEASE_UNTIL, 32, "lu"}};
      int m = 0;
      for (size_t c = 0; c < sizeof cols / sizeof *cols; c++) {
        if (has_value(u, cols[c].f)) {
          m |= cols[c].bit;
          chr_buf_printf(&b, ",\"%s\":", cols[c].key);
          field_json(u, cols[c].f, &b);
        } else if (given_null(u, cols[c].f)) {
          m |= cols[c].bit;
        }
      }
      chr_buf_printf(&b, ",\"m\":%d", m);
      char **dels = NULL;
      size_t ndel = 0;
      set.len = 0;
      record_parts(u, &set, &dels, &ndel);
      if (set.len) {
        chr_buf_adds(&b, ",\"rs\":");
        chr_buf_add(&b, set.p, set.len);
      }
      if (ndel) {
        chr_buf_adds(&b, ",\"rd\":[");
        for (size_t k = 0; k < ndel; k++) {
          if (k) chr_buf_addc(&b, ',');
          chr_json_add_string(&b, dels[k], strlen(dels[k]));
        }
        chr_buf_addc(&b, ']');
      }
      free_list(dels, ndel);
    } else {
      chr_buf_adds(&b, ",\"m\":0");
    }
    int32_t keep = run_keep(o, it->run);
    if (keep > 0) {
      chr_buf_addc(&b, ',');
      run_members(&b, it->run, keep);
    }
    chr_buf_addc(&b, '}');
  }
  chr_buf_addc(&b, ']');
  chr_buf_free(&set);
  op->stmt = PG_S_COMPLETE;
  chr_pg_param_take(op, chr_buf_steal(&b));
  chr_pg_param_time(op, op->prune_before);
}

/* query_runs: the filter as WHERE clauses that mean what
 * chr_run_filter_match means, newest first (chr_runrec_cmp). */
static char *build_query_runs(const pg_opts_t *o, pg_op_t *op) {
  const chr_store_req_t *req = op->req;
  const chr_run_filter_t *f = req->run_filter;
  chr_buf_t sql;
  chr_buf_init(&sql);
  chr_buf_printf(&sql, "SELECT " RUN_COLS " FROM %s h WHERE true", o->qruns);
  if (f && f->has_ids) {
    chr_buf_printf(&sql, " AND h.job_id = ANY($%d::text[])", next_param(op));
    chr_pg_param_take(op, array_literal(f->ids, f->nids));
  }
  if (f && f->outcome_mask) {
    char *names[CHR_OUT__COUNT];
    size_t n = 0;
    for (int k = 1; k < CHR_OUT__COUNT; k++)
      if (f->outcome_mask & (1u << k)) names[n++] = (char *)chr_outcome_names[k];
    chr_buf_printf(&sql, " AND h.outcome = ANY($%d::text[])", next_param(op));
    chr_pg_param_take(op, array_literal(names, n));
  }
  if (f && f->started_gte != CHR_TIME_NONE) {
    chr_buf_printf(&sql, " AND h.started_at >= $%d::timestamptz", next_param(op));
    chr_pg_param_time(op, f->started_gte);
  }
  if (f && f->started_lte != CHR_TIME_NONE) {
    chr_buf_printf(&sql, " AND h.started_at <= $%d::timestamptz", next_param(op));
    chr_pg_param_time(op, f->started_lte);
  }
  if (f && f->func_name) {
    chr_buf_printf(&sql, " AND h.func_name = $%d", next_param(op));
    chr_pg_param(op, f->func_name);
  }
  if (f) meta_conds(&sql, op, "h.metadata", f->meta, f->nmeta);
  chr_buf_printf(&sql, " ORDER BY h.started_at DESC, h.run_id DESC LIMIT $%d::bigint OFFSET "
                 "$%d::bigint", next_param(op), next_param(op) + 1);
  if (req->limit >= 0) chr_pg_param_int(op, req->limit);
  else chr_pg_param(op, NULL);
  chr_pg_param_int(op, req->offset);
  return chr_buf_steal(&sql);
}

/* The lease a claim or an extension grants: until now + lease_us, and when
 * the request was issued (see LEASE). */
static void lease_params(pg_op_t *op, const chr_store_req_t *req) {
  chr_pg_param_time(op, req->now + req->lease_us);
  chr_pg_param_time(op, req->issued);
}

/* The queues of a claim as PG_S_QCLAIM's arrays: names, limits, global
 * limits, rate limits, and the window of req->now for each rate limit,
 * [floor(now / period) * period, + period), with its period. */
static void queue_params(pg_op_t *op, const chr_store_req_t *req) {
  chr_buf_t a[6];
  char tb[CHR_TIME_BUFSZ];
  for (int k = 0; k < 6; k++) {
    chr_buf_init(&a[k]);
    chr_buf_addc(&a[k], '{');
  }
  for (size_t i = 0; i < req->nqueues; i++) {
    const chr_claim_queue_t *q = &req->queues[i];
    int64_t period = q->rate_limit > 0 && q->rate_period_us > 0 ? q->rate_period_us : 0;
    int64_t start = period ? req->now - ((req->now % period) + period) % period : 0;
    const char *sep = i ? "," : "";
    chr_time_format(start, tb);
    /* Names are [A-Za-z0-9_.:-] (chr_queue_name_problem): quoted, they
     * need no escapes. */
    chr_buf_printf(&a[0], "%s\"%s\"", sep, q->name);
    chr_buf_printf(&a[1], "%s%lld", sep, (long long)q->limit);
    chr_buf_printf(&a[2], "%s%lld", sep, (long long)q->global_limit);
    chr_buf_printf(&a[3], "%s%lld", sep, (long long)(period ? q->rate_limit : 0));
    chr_buf_printf(&a[4], "%s\"%s\"", sep, tb);
    chr_buf_printf(&a[5], "%s%lld", sep, (long long)period);
  }
  for (int k = 0; k < 6; k++) {
    chr_buf_addc(&a[k], '}');
    chr_pg_param_take(op, chr_buf_steal(&a[k]));
  }
}

/* The next due time of a scope: the earliest scheduled job's time, which
 * an index_metadata index on the scope's path gives in one probe (it
 * holds the tenant's jobs by status, then time); the walk over priority
 * levels of PG_S_NEXT_DUE serves the due index, which has priority
 * first. */
static const char NEXT_DUE_SCOPED[] =
    "SELECT min(d.next_run_time) FROM {T} d WHERE d.status = 'scheduled'"
    " AND d.next_run_time IS NOT NULL{S}";

/* A claim, recovery or next due time with a scope (CHR_STORE_CAP_SCOPE):
 * its statement's text with the scope's conditions on the row of `alias`
 * in place of {S}, sent as dynamic SQL after the statement's own
 * parameters. Locking and updating are the unscoped statement's, so a
 * scoped claim is exactly-once as an unscoped one is. A scoped claim
 * walks the priority levels of due jobs only: on an index of the tenant's
 * jobs by status and time, that reads the tenant's due jobs, not all of
 * its scheduled ones (a claim takes only due jobs anyway). */
static void scope_sql(const pg_opts_t *o, pg_op_t *op, const char *alias) {
  const chr_filter_t *scope = op->req->filter;
  if (scope == NULL || scope->nmeta == 0) return;
  chr_buf_t cond;
  chr_buf_init(&cond);
  if (op->stmt == PG_S_CLAIM || op->stmt == PG_S_QCLAIM)
    chr_buf_adds(&cond, " AND d.next_run_time <= $1::timestamptz");
  job_meta_conds(&cond, op, o, alias, scope->meta, scope->nmeta, NULL);
  op->sql = expand(op->stmt == PG_S_NEXT_DUE ? NEXT_DUE_SCOPED : stmts[op->stmt].sql, o, cond.p);
  op->stmt = -1;
  chr_buf_free(&cond);
}

void chr_pg_build(const pg_opts_t *o, pg_op_t *op) {
  chr_store_req_t *req = op->req;
  const chr_meta_filter_t *key;
  chr_buf_t sql;
  switch (req->op) {
  case CHR_OP_CREATE: build_create(op); break;
  case CHR_OP_CREATE_MANY: build_create_many(op); break;
  case CHR_OP_GET:
    op->stmt = PG_S_GET;
    chr_pg_param(op, req->id);
    break;
  case CHR_OP_GET_BATCH:
    op->stmt = PG_S_BATCH;
    chr_pg_param_take(op, array_literal(req->ids, req->nids));
    break;
  case CHR_OP_DELETE:
    op->stmt = PG_S_DELETE;
    chr_pg_param(op, req->id);
    break;
  case CHR_OP_UPDATE:
  case CHR_OP_CAS:
    chr_buf_init(&sql);
    chr_pg_param(op, req->id);
    chr_buf_printf(&sql, "%sUPDATE %s t", req->op == CHR_OP_CAS ? "WITH u AS (" : "", o->qtable);
    set_clause(&sql, op, req->job);
    chr_buf_adds(&sql, " WHERE t.job_id = $1");
    if (req->op == CHR_OP_CAS) {
      if (req->expected) cas_conds(&sql, op, req->expected);
      chr_buf_printf(&sql, " RETURNING " COLS ") SELECT EXISTS (SELECT 1 FROM %s e WHERE "
                     "e.job_id = $1), u.* FROM (SELECT 1) one LEFT JOIN u ON true", o->qtable);
    } else {
      chr_buf_adds(&sql, " RETURNING " COLS);
    }
    op->sql = chr_buf_steal(&sql);
    break;
  case CHR_OP_QUERY:
  case CHR_OP_COUNT:
    chr_buf_init(&sql);
    chr_buf_printf(&sql, "SELECT %s FROM %s t", req->op == CHR_OP_COUNT ? "count(*)" : COLS,
                   o->qtable);
    /* A count reads every match: the plain equalities serve it. */
    key = req->op == CHR_OP_QUERY ? ordered_key(o, req->filter) : NULL;
    where_filter(&sql, op, o, req->filter, key);
    if (req->op == CHR_OP_QUERY) {
      /* With `key`, the order of its index, which is query order since
       * both of its first columns hold one value. */
      chr_buf_adds(&sql, " ORDER BY ");
      if (key) {
        chr_pg_meta_expr(&sql, "t.record", key->path);
        chr_buf_adds(&sql, ", t.status, ");
      }
      chr_buf_printf(&sql, "t.next_run_time, t.job_id LIMIT $%d::bigint OFFSET $%d::bigint",
                     next_param(op), next_param(op) + 1);
      if (req->limit >= 0) chr_pg_param_int(op, req->limit);
      else chr_pg_param(op, NULL);
      chr_pg_param_int(op, req->offset);
    }
    op->sql = chr_buf_steal(&sql);
    break;
  case CHR_OP_CLAIM:
    op->stmt = req->nqueues > 0 ? PG_S_QCLAIM : PG_S_CLAIM;
    chr_pg_param_time(op, req->now);
    if (req->limit >= 0) chr_pg_param_int(op, req->limit);
    else chr_pg_param(op, NULL);
    chr_pg_param(op, req->owner);
    lease_params(op, req);
    if (req->nqueues > 0) queue_params(op, req);
    scope_sql(o, op, "d");
    break;
  case CHR_OP_COMPLETE: build_complete(o, op); break;
  case CHR_OP_RECORD_RUNS: build_record_runs(o, op); break;
  case CHR_OP_QUERY_RUNS: op->sql = build_query_runs(o, op); break;
  case CHR_OP_RECOVER:
    op->stmt = PG_S_RECOVER;
    chr_pg_param_time(op, req->now);
    scope_sql(o, op, "t");
    break;
  case CHR_OP_EXTEND:
    op->stmt = PG_S_EXTEND;
    chr_pg_param_take(op, array_literal(req->ids, req->nids));
    chr_pg_param(op, req->owner);
    lease_params(op, req);
    break;
  case CHR_OP_NEXT_DUE:
    op->stmt = PG_S_NEXT_DUE;
    scope_sql(o, op, "d");
    break;
  default: break;
  }
}
