/* pg_migrate.c - versioned migrations of the PostgreSQL store's schema.
 *
 * Each jobs table has a history table beside it (<table>_migrations:
 * version, description, checksum, applied_at). A migration is SQL text
 * with the table's names left as placeholders; its checksum is taken over
 * that text, so it does not depend on the table's name. Applying: read the
 * history without a lock (the common case, everything applied, costs two
 * reads); if something is pending, take pg_advisory_lock on a key derived
 * from the table, read again (another process may have just done it), then
 * apply each pending migration in its own transaction with its history
 * row, and unlock. A history row whose checksum differs from this build's
 * is an error: the schema is not the one this code expects.
 *
 * The runner is a chain of asynchronous steps on one connection, used by
 * the store before its first request and by `chronis migrate`
 * (chr_postgres_migrate, which drives the loop itself). */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/loop.h"
#include "pg.h"
#include "core/time.h"

static const struct {
  int version;
  const char *description, *sql;
} migrations[] = {
    {1, "create the jobs table",
     "CREATE TABLE {T} (\n"
     "  job_id text COLLATE \"C\" PRIMARY KEY,\n"
     "  status text NOT NULL\n"
     "    CHECK (status IN ('pending', 'scheduled', 'running', 'paused', 'failed')),\n"
     "  trigger_type text CHECK (trigger_type IN ('interval', 'cron', 'date')),\n"
     "  next_run_time timestamptz,\n"
     "  priority integer,\n"
     "  claimed_by text,\n"
     "  lease_until timestamptz,\n"
     "  updated_at timestamptz NOT NULL,\n"
     "  record jsonb NOT NULL DEFAULT '{}'\n"
     ")"},
    {2, "indexes for claims, lease recovery and metadata filters",
     "CREATE INDEX {N:_due} ON {T}\n"
     "  ((COALESCE(priority, 5)) DESC, next_run_time, job_id) WHERE status = 'scheduled';\n"
     "CREATE INDEX {N:_lease} ON {T} (lease_until) WHERE status = 'running';\n"
     "CREATE INDEX {N:_metadata} ON {T} USING gin ((record -> 'metadata') jsonb_path_ops)"},
    /* Run history, written with every completion, so with two indexes
     * only: the primary key gives a job's runs newest first (queries and
     * pruning per job), the second runs by age (age pruning and queries
     * across jobs). run_id is unique by construction ("<node>/<sequence>");
     * a key of its own would cost a third index on every write. */
    {3, "the run history table",
     "CREATE TABLE {R} (\n"
     "  job_id text COLLATE \"C\" NOT NULL,\n"
     "  started_at timestamptz NOT NULL,\n"
     "  run_id text COLLATE \"C\" NOT NULL,\n"
     "  ended_at timestamptz,\n"
     "  scheduled_at timestamptz,\n"
     "  attempt integer,\n"
     "  outcome text NOT NULL\n"
     "    CHECK (outcome IN ('ok', 'error', 'timeout', 'skipped', 'interrupted')),\n"
     "  name text,\n"
     "  func_name text,\n"
     "  node text,\n"
     "  error_code text,\n"
     "  error_message text,\n"
     "  metadata jsonb,\n"
     "  PRIMARY KEY (job_id, started_at, run_id)\n"
     ");\n"
     "CREATE INDEX {N:_runs_started} ON {R} (started_at, run_id)"},
    /* A one-shot job kept after its success (keep_completed) is completed:
     * the status check of migration 1 (named by the server) is replaced.
     * Every row passed the old check, so the wider one needs no scan of the
     * table (NOT VALID: it holds for every write from now on). The index
     * serves the engine's retention pass: completed jobs by updated_at. */
    {4, "status completed, and an index of completed jobs",
     "DO $$\n"
     "DECLARE c name;\n"
     "BEGIN\n"
     "  FOR c IN SELECT conname FROM pg_constraint WHERE conrelid = '{T}'::regclass\n"
     "      AND contype = 'c' AND conkey = ARRAY[(SELECT attnum FROM pg_attribute\n"
     "        WHERE attrelid = '{T}'::regclass AND attname = 'status')] LOOP\n"
     "    EXECUTE format('ALTER TABLE {T} DROP CONSTRAINT %I', c);\n"
     "  END LOOP;\n"
     "END $$;\n"
     "ALTER TABLE {T} ADD CONSTRAINT {N:_status_check} CHECK (status IN\n"
     "  ('pending', 'scheduled', 'running', 'paused', 'failed', 'completed')) NOT VALID;\n"
     "CREATE INDEX {N:_completed} ON {T} (updated_at) WHERE status = 'completed'"},
    /* query_jobs by one status (failed, completed, paused) in query order,
     * next_run_time ascending with nulls last, then job_id: a page reads
     * its `limit` rows from the index instead of sorting every job of
     * that status. */
    {5, "an index of jobs by status in query order",
     "CREATE INDEX {N:_status} ON {T} (status, next_run_time, job_id)"},
    /* Runs a handler ended itself (chronis.snooze, chronis.cancel): the
     * outcome check of migration 3 is replaced the way migration 4
     * replaced the status check. */
    {6, "run outcomes snoozed and cancelled",
     "DO $$\n"
     "DECLARE c name;\n"
     "BEGIN\n"
     "  FOR c IN SELECT conname FROM pg_constraint WHERE conrelid = '{R}'::regclass\n"
     "      AND contype = 'c' AND conkey = ARRAY[(SELECT attnum FROM pg_attribute\n"
     "        WHERE attrelid = '{R}'::regclass AND attname = 'outcome')] LOOP\n"
     "    EXECUTE format('ALTER TABLE {R} DROP CONSTRAINT %I', c);\n"
     "  END LOOP;\n"
     "END $$;\n"
     "ALTER TABLE {R} ADD CONSTRAINT {N:_outcome_check} CHECK (outcome IN\n"
     "  ('ok', 'error', 'timeout', 'skipped', 'interrupted', 'snoozed', 'cancelled')) NOT VALID"},
    /* Named queues (docs/queues.md): a job's queue is its record's member
     * `queue`, 'default' without one. The index holds the scheduled jobs
     * of each queue in claim order, so a claim with queues reads its
     * queues' due jobs only (it is kept by writes that make jobs
     * scheduled, not by claims). Claims per queue and rate window are
     * counted in {Q}. {F}, called by a claim with queues, takes an
     * advisory lock per queue with a global or rate limit (held to the end
     * of the claim's transaction, in name order so that claims never wait
     * on each other in a cycle), then, each statement with a snapshot of
     * its own (a volatile function), counts what the claims committed
     * before it did: the room of each queue. */
    {7, "named queues: due jobs by queue, rate windows, the room of a claim",
     "CREATE INDEX {N:_queue_due} ON {T}\n"
     "  ((COALESCE(record ->> 'queue', 'default')), (COALESCE(priority, 5)) DESC, next_run_time,\n"
     "   job_id) WHERE status = 'scheduled';\n"
     "CREATE TABLE {Q} (\n"
     "  queue text COLLATE \"C\" NOT NULL,\n"
     "  window_start timestamptz NOT NULL,\n"
     "  used bigint NOT NULL,\n"
     "  PRIMARY KEY (queue, window_start)\n"
     ");\n"
     "CREATE FUNCTION {F}(qs text[], lims bigint[], globs bigint[], rates bigint[],\n"
     "    wins timestamptz[], periods bigint[])\n"
     "  RETURNS TABLE (q_name text, q_room bigint) LANGUAGE plpgsql VOLATILE AS $$\n"
     "DECLARE\n"
     "  n bigint;\n"
     "BEGIN\n"
     "  PERFORM pg_advisory_xact_lock(hashtext('{T}'), hashtext(x.q))\n"
     "    FROM unnest(qs, globs, rates) AS x(q, g, r) WHERE x.g > 0 OR x.r > 0\n"
     "    ORDER BY x.q COLLATE \"C\";\n"
     "  FOR i IN 1 .. COALESCE(array_length(qs, 1), 0) LOOP\n"
     "    q_name := qs[i];\n"
     "    q_room := lims[i];\n"
     "    IF globs[i] > 0 THEN\n"
     "      SELECT count(*) INTO n FROM {T} t\n"
     "        WHERE t.status = 'running' AND COALESCE(t.record ->> 'queue', 'default') = qs[i];\n"
     "      q_room := LEAST(q_room, globs[i] - n);\n"
     "    END IF;\n"
     "    IF rates[i] > 0 THEN\n"
     "      SELECT w.used INTO n FROM {Q} w WHERE w.queue = qs[i] AND w.window_start = wins[i];\n"
     "      q_room := LEAST(q_room, rates[i] - COALESCE(n, 0));\n"
     "      -- Windows that ended a minute or more before this one began: a\n"
     "      -- claimer whose clock is a little behind still finds its count.\n"
     "      DELETE FROM {Q} w WHERE w.queue = qs[i]\n"
     "        AND w.window_start < wins[i] - periods[i] * interval '1 microsecond'\n"
     "          - interval '1 minute';\n"
     "    END IF;\n"
     "    q_room := GREATEST(q_room, 0);\n"
     "    RETURN NEXT;\n"
     "  END LOOP;\n"
     "END $$"},
};
#define NMIG ((int)(sizeof migrations / sizeof *migrations))
#define MAX_APPLIED 64

int chr_pg_migrate_latest(void) {
  return migrations[NMIG - 1].version;
}

enum {
  ST_PROBE,
  ST_READ,
  ST_LOCK,
  ST_SCHEMA,
  ST_HISTORY,
  ST_BEGIN,
  ST_DDL,
  ST_RECORD,
  ST_COMMIT,
  ST_ROLLBACK,
  ST_UNLOCK,
  ST_IDX_PROBE,
  ST_IDX_CREATE
};

typedef struct applied {
  int version;
  char checksum[40], description[160], at[40];
} applied_t;

struct pg_migrator {
  pg_conn_t *c;
  const pg_opts_t *o;
  int mode, step, locked, have_schema, cur, status;
  double saved_timeout;
  FILE *out;
  pg_migrate_cb cb;
  void *data;
  char hist[2 * PG_IDENT_MAX + 16], qschema[PG_IDENT_MAX + 3], key[24];
  applied_t applied[MAX_APPLIED];
  int napplied;
  int64_t started;
  char *idx_missing; /* per index_metadata path: 1 when its index is missing */
  char msg[600];
};

static void step_cb(pg_conn_t *c, PGresult *res, void *arg);

static void checksum(int i, char *out) {
  const char *s = migrations[i].sql;
  snprintf(out, 20, "%016llx",
           (unsigned long long)chr_pg_fnv1a(s, strlen(s), PG_FNV_SEED));
}

/* {T} -> the quoted table; {R} -> its run history table; {Q}, {F} -> its
 * queue rate table and room function; {N:suffix} -> a quoted name derived
 * from the table's. */
static char *expand(const pg_migrator_t *m, const char *tmpl) {
  chr_buf_t b;
  chr_buf_init(&b);
  for (const char *p = tmpl; *p; p++) {
    if (strncmp(p, "{T}", 3) == 0 || strncmp(p, "{R}", 3) == 0 || strncmp(p, "{Q}", 3) == 0 ||
        strncmp(p, "{F}", 3) == 0) {
      chr_buf_adds(&b, p[1] == 'T'   ? m->o->qtable
                       : p[1] == 'R' ? m->o->qruns
                       : p[1] == 'Q' ? m->o->qrates
                                     : m->o->qroom);
      p += 2;
    } else if (strncmp(p, "{N:", 3) == 0 && strchr(p, '}')) {
      const char *end = strchr(p, '}');
      char suffix[32], name[PG_IDENT_MAX + 3];
      snprintf(suffix, sizeof suffix, "%.*s", (int)(end - p - 3), p + 3);
      chr_pg_derived_name(m->o->table, suffix, name, sizeof name);
      chr_buf_adds(&b, name);
      p = end;
    } else {
      chr_buf_addc(&b, *p);
    }
  }
  return chr_buf_steal(&b);
}

static void query(pg_migrator_t *m, int step, const char *sql, int nparams,
                  const char *const *params) {
  m->step = step;
  chr_pg_conn_query(m->c, sql, nparams, params, 0, step_cb, m);
}

static void finish(pg_migrator_t *m) {
  m->c->timeout = m->saved_timeout;
  free(m->idx_missing);
  pg_migrate_cb cb = m->cb;
  void *data = m->data;
  int status = m->status;
  char msg[sizeof m->msg];
  memcpy(msg, m->msg, sizeof msg);
  free(m);
  cb(data, status, msg);
}

/* Ends the run: unlocks first when the lock is held. */
static void done(pg_migrator_t *m, int status) {
  if (m->status == 0) m->status = status;
  if (m->locked) {
    const char *p[] = {m->key};
    m->locked = 0;
    query(m, ST_UNLOCK, "SELECT pg_advisory_unlock($1::bigint)", 1, p);
    return;
  }
  finish(m);
}

static int fail(pg_migrator_t *m, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(pg_migrator_t *m, int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(m->msg, sizeof m->msg, fmt, ap);
  va_end(ap);
  m->status = status;
  return status;
}

static const applied_t *find_applied(const pg_migrator_t *m, int version) {
  for (int i = 0; i < m->napplied; i++)
    if (m->applied[i].version == version) return &m->applied[i];
  return NULL;
}

static void print_status(pg_migrator_t *m) {
  FILE *out = m->out;
  int current = 0, pending = 0;
  for (int i = 0; i < NMIG; i++) {
    if (find_applied(m, migrations[i].version)) current = migrations[i].version;
    else pending++;
  }
  fprintf(out, "table %s.%s on %s: %d of %d migration(s) applied%s\n", m->o->schema,
          m->o->table, m->o->desc, NMIG - pending, NMIG, pending ? "" : ", up to date");
  fprintf(out, "  %-8s %-22s %-17s %s\n", "version", "applied at", "checksum", "description");
  for (int i = 0; i < NMIG; i++) {
    const applied_t *a = find_applied(m, migrations[i].version);
    char sum[20];
    checksum(i, sum);
    fprintf(out, "  %-8d %-22s %-17s %s\n", migrations[i].version, a ? a->at : "pending", sum,
            migrations[i].description);
  }
  for (int i = 0; i < m->napplied; i++) {
    int known = 0;
    for (int k = 0; k < NMIG; k++) known |= migrations[k].version == m->applied[i].version;
    if (!known)
      fprintf(out, "  %-8d %-22s %-17s %s (applied by a newer chronis)\n", m->applied[i].version,
              m->applied[i].at, m->applied[i].checksum, m->applied[i].description);
  }
  (void)current;
}

/* ---- index_metadata ---- */

static size_t index_count(const pg_migrator_t *m) {
  size_t n = 0;
  while (m->o->index_paths && m->o->index_paths[n]) n++;
  return n;
}

/* After the migrations: which index_metadata indexes exist. MIGRATE makes
 * the missing ones, STATUS lists them, CHECK leaves them to `chronis
 * migrate` (queries are the same with or without them, only slower). */
static void indexes(pg_migrator_t *m) {
  size_t n = index_count(m);
  if (n == 0 || m->mode == PG_MIG_CHECK) {
    done(m, 0);
    return;
  }
  char **names = chr_malloc(n * sizeof *names);
  for (size_t i = 0; i < n; i++) {
    char name[PG_IDENT_MAX + 3];
    chr_pg_meta_index_name(m->o->table, m->o->index_paths[i], name, sizeof name);
    names[i] = chr_sprintf("\"%s\".%s", m->o->schema, name);
  }
  chr_buf_t arr;
  chr_buf_init(&arr);
  chr_buf_addc(&arr, '{');
  for (size_t i = 0; i < n; i++) {
    if (i) chr_buf_addc(&arr, ',');
    chr_buf_addc(&arr, '"');
    for (const char *p = names[i]; *p; p++) {
      if (*p == '"' || *p == '\\') chr_buf_addc(&arr, '\\');
      chr_buf_addc(&arr, *p);
    }
    chr_buf_addc(&arr, '"');
    free(names[i]);
  }
  chr_buf_addc(&arr, '}');
  free(names);
  const char *p[] = {arr.p};
  query(m, ST_IDX_PROBE, "SELECT to_regclass(u.n) IS NULL FROM unnest($1::text[]) WITH ORDINALITY "
        "AS u(n, i) ORDER BY u.i", 1, p);
  chr_buf_free(&arr);
}

/* One expression index per path, then status, next_run_time and job_id:
 * a tenant's jobs of one status in query order (a page of a tenant query
 * by status stops at its limit), and its due jobs in time order for a
 * scoped claim or next due time. Created under the migration lock, so two
 * processes opening at once do not race on the name, then ANALYZE, which
 * gathers the statistics of the new expression for the planner. */
static void create_indexes(pg_migrator_t *m, const PGresult *res) {
  size_t n = index_count(m);
  chr_buf_t sql;
  chr_buf_init(&sql);
  m->idx_missing = chr_calloc(n ? n : 1, 1);
  for (size_t i = 0; i < n && (int)i < PQntuples(res); i++)
    m->idx_missing[i] = PQgetvalue(res, (int)i, 0)[0] == 't';
  if (m->mode == PG_MIG_STATUS) {
    for (size_t i = 0; i < n; i++) {
      char name[PG_IDENT_MAX + 3];
      chr_pg_meta_index_name(m->o->table, m->o->index_paths[i], name, sizeof name);
      fprintf(m->out, "  index %.*s on metadata.%s: %s\n", (int)strlen(name) - 2, name + 1,
              m->o->index_paths[i],
              m->idx_missing[i] ? "missing" : "present");
    }
    done(m, 0);
    return;
  }
  chr_buf_printf(&sql, "SELECT pg_advisory_xact_lock(%s)", m->key);
  int todo = 0;
  for (size_t i = 0; i < n; i++) {
    char name[PG_IDENT_MAX + 3];
    if (!m->idx_missing[i]) continue;
    chr_pg_meta_index_name(m->o->table, m->o->index_paths[i], name, sizeof name);
    chr_buf_printf(&sql, "; CREATE INDEX IF NOT EXISTS %s ON %s (", name, m->o->qtable);
    chr_pg_meta_expr(&sql, "record", m->o->index_paths[i]);
    chr_buf_adds(&sql, ", status, next_run_time, job_id)");
    todo = 1;
  }
  if (!todo) {
    chr_buf_free(&sql);
    done(m, 0);
    return;
  }
  /* One implicit transaction: on an error nothing stays half made. */
  chr_buf_printf(&sql, "; ANALYZE %s", m->o->qtable);
  m->started = chr_time_mono();
  query(m, ST_IDX_CREATE, sql.p, -1, NULL);
  chr_buf_free(&sql);
}

static void indexes_created(pg_migrator_t *m) {
  for (size_t i = 0, n = index_count(m); m->out && i < n; i++) {
    char name[PG_IDENT_MAX + 3];
    if (!m->idx_missing[i]) continue;
    chr_pg_meta_index_name(m->o->table, m->o->index_paths[i], name, sizeof name);
    fprintf(m->out, "created index %.*s on metadata.%s of %s.%s (%.0f ms)\n",
            (int)strlen(name) - 2, name + 1,
            m->o->index_paths[i], m->o->schema, m->o->table,
            (double)(chr_time_mono() - m->started) / 1000);
  }
  done(m, 0);
}

/* The next migration to apply after index `from`, or -1. */
static int next_pending(const pg_migrator_t *m, int from) {
  for (int i = from; i < NMIG; i++)
    if (!find_applied(m, migrations[i].version)) return i;
  return -1;
}

static void apply_next(pg_migrator_t *m, int from) {
  m->cur = next_pending(m, from);
  if (m->cur < 0) {
    indexes(m);
    return;
  }
  m->started = chr_time_mono();
  query(m, ST_BEGIN, "BEGIN", 0, NULL);
}

/* The history is read: decide. */
static void evaluate(pg_migrator_t *m) {
  for (int i = 0; i < NMIG; i++) {
    const applied_t *a = find_applied(m, migrations[i].version);
    char sum[20];
    checksum(i, sum);
    if (a && strcmp(a->checksum, sum) != 0) {
      fail(m, CHR_EINVAL, "postgres: migration %d (%s) of table %s.%s was applied with checksum "
           "%s, but this chronis has %s for it: the schema is not the one this version "
           "expects (was the history edited, or the migration changed?)", migrations[i].version,
           migrations[i].description, m->o->schema, m->o->table, a->checksum, sum);
      done(m, CHR_EINVAL);
      return;
    }
  }
  if (m->mode == PG_MIG_STATUS) {
    print_status(m);
    indexes(m);
    return;
  }
  int first = next_pending(m, 0);
  if (first < 0) {
    if (m->out && m->mode == PG_MIG_MIGRATE)
      fprintf(m->out, "table %s.%s is up to date (version %d)\n", m->o->schema, m->o->table,
              chr_pg_migrate_latest());
    indexes(m);
    return;
  }
  if (m->mode == PG_MIG_CHECK) {
    fail(m, CHR_EINVAL, "postgres: table %s.%s needs migration %d (%s) and auto_migrate is "
         "off: run `chronis migrate --storage URL`", m->o->schema, m->o->table,
         migrations[first].version, migrations[first].description);
    done(m, CHR_EINVAL);
    return;
  }
  if (!m->locked) {
    const char *p[] = {m->key};
    query(m, ST_LOCK, "SELECT pg_advisory_lock($1::bigint)", 1, p);
    return;
  }
  apply_next(m, 0);
}

static void read_history(pg_migrator_t *m) {
  char sql[400];
  snprintf(sql, sizeof sql,
           "SELECT version, checksum, description, to_char(applied_at AT TIME ZONE 'UTC', "
           "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM %s ORDER BY version", m->hist);
  query(m, ST_READ, sql, 0, NULL);
}

static void step_cb(pg_conn_t *c, PGresult *res, void *arg) {
  pg_migrator_t *m = arg;
  (void)c;
  char msg[600];
  int rc = chr_pg_result_error(m->c, res, msg, sizeof msg);
  if (res == NULL) { /* the connection is gone, and the lock with it */
    m->locked = 0;
    fail(m, CHR_EUNAVAIL, "%s", msg);
    finish(m);
    return;
  }
  if (rc != 0) {
    if (m->step == ST_UNLOCK) {
      finish(m);
      return;
    }
    /* A server that is away or slow stays what it is; anything else
     * means the schema cannot be checked or made as it should be. */
    fail(m, rc == CHR_EUNAVAIL || rc == CHR_ETIMEOUT ? rc : CHR_EINVAL, "%s%s%s%s", msg,
         m->step == ST_DDL || m->step == ST_RECORD ? " (while applying migration " : "",
         m->step == ST_DDL || m->step == ST_RECORD ? migrations[m->cur].description : "",
         m->step == ST_IDX_CREATE ? " (while creating the index_metadata indexes)" : "");
    if (m->step == ST_DDL || m->step == ST_RECORD) {
      strncat(m->msg, ")", sizeof m->msg - strlen(m->msg) - 1);
      query(m, ST_ROLLBACK, "ROLLBACK", 0, NULL);
      return;
    }
    done(m, m->status);
    return;
  }
  switch (m->step) {
  case ST_PROBE:
    m->have_schema = PQgetvalue(res, 0, 1)[0] == 't';
    if (PQgetvalue(res, 0, 0)[0] == 't') {
      read_history(m);
    } else {
      m->napplied = 0;
      evaluate(m);
    }
    return;
  case ST_READ:
    m->napplied = 0;
    for (int i = 0; i < PQntuples(res) && m->napplied < MAX_APPLIED; i++) {
      applied_t *a = &m->applied[m->napplied++];
      a->version = atoi(PQgetvalue(res, i, 0));
      snprintf(a->checksum, sizeof a->checksum, "%s", PQgetvalue(res, i, 1));
      snprintf(a->description, sizeof a->description, "%s", PQgetvalue(res, i, 2));
      snprintf(a->at, sizeof a->at, "%s", PQgetvalue(res, i, 3));
    }
    evaluate(m);
    return;
  case ST_LOCK:
    m->locked = 1;
    if (!m->have_schema) {
      char sql[120];
      snprintf(sql, sizeof sql, "CREATE SCHEMA IF NOT EXISTS %s", m->qschema);
      query(m, ST_SCHEMA, sql, 0, NULL);
      return;
    }
    /* fall through */
  case ST_SCHEMA: {
    char sql[400];
    snprintf(sql, sizeof sql,
             "CREATE TABLE IF NOT EXISTS %s (version integer PRIMARY KEY, description text NOT "
             "NULL, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
             m->hist);
    query(m, ST_HISTORY, sql, 0, NULL);
    return;
  }
  case ST_HISTORY: read_history(m); return;
  case ST_BEGIN: {
    char *sql = expand(m, migrations[m->cur].sql);
    query(m, ST_DDL, sql, -1, NULL);
    free(sql);
    return;
  }
  case ST_DDL: {
    char sql[300], version[16], sum[20];
    snprintf(sql, sizeof sql, "INSERT INTO %s (version, description, checksum) VALUES ($1, $2, $3)",
             m->hist);
    snprintf(version, sizeof version, "%d", migrations[m->cur].version);
    checksum(m->cur, sum);
    const char *p[] = {version, migrations[m->cur].description, sum};
    query(m, ST_RECORD, sql, 3, p);
    return;
  }
  case ST_RECORD: query(m, ST_COMMIT, "COMMIT", 0, NULL); return;
  case ST_COMMIT:
    if (m->out)
      fprintf(m->out, "applied migration %d to %s.%s: %s (%.0f ms)\n", migrations[m->cur].version,
              m->o->schema, m->o->table, migrations[m->cur].description,
              (double)(chr_time_mono() - m->started) / 1000);
    apply_next(m, m->cur + 1);
    return;
  case ST_ROLLBACK: done(m, m->status); return;
  case ST_UNLOCK: finish(m); return;
  case ST_IDX_PROBE: create_indexes(m, res); return;
  case ST_IDX_CREATE: indexes_created(m); return;
  }
}

pg_migrator_t *chr_pg_migrate_run(pg_conn_t *c, const pg_opts_t *o, int mode, FILE *out,
                                  pg_migrate_cb cb, void *data) {
  pg_migrator_t *m = chr_calloc(1, sizeof *m);
  char hname[PG_IDENT_MAX + 3], regclass[sizeof m->hist];
  m->c = c;
  m->o = o;
  m->mode = mode;
  m->out = out;
  m->cb = cb;
  m->data = data;
  /* A migration may wait for the lock or build an index for long. */
  m->saved_timeout = c->timeout;
  c->timeout = 0;
  chr_pg_derived_name(o->table, "_migrations", hname, sizeof hname);
  snprintf(m->hist, sizeof m->hist, "\"%s\".%s", o->schema, hname);
  snprintf(m->qschema, sizeof m->qschema, "\"%s\"", o->schema);
  snprintf(regclass, sizeof regclass, "%s", m->hist);
  char lock[2 * PG_IDENT_MAX + 32];
  int n = snprintf(lock, sizeof lock, "chronis migrate %s.%s", o->schema, o->table);
  snprintf(m->key, sizeof m->key, "%lld", (long long)chr_pg_fnv1a(lock, (size_t)n, PG_FNV_SEED));
  const char *p[] = {regclass, m->qschema};
  query(m, ST_PROBE, "SELECT to_regclass($1) IS NOT NULL, to_regnamespace($2) IS NOT NULL", 2, p);
  return m;
}

void chr_pg_migrate_abort(pg_migrator_t *m) {
  free(m->idx_missing);
  free(m);
}

/* ---- chronis migrate ---- */

typedef struct cli {
  const pg_opts_t *o;
  int mode, done, status;
  FILE *out;
  char msg[600];
} cli_t;

static void cli_done(void *data, int status, const char *msg) {
  cli_t *cl = data;
  cl->done = 1;
  cl->status = status;
  snprintf(cl->msg, sizeof cl->msg, "%s", msg);
}

static void cli_event(pg_conn_t *c, int ev, const char *relname, const char *payload) {
  cli_t *cl = c->data;
  (void)relname;
  (void)payload;
  if (ev == PG_EV_READY) {
    chr_pg_migrate_run(c, cl->o, cl->mode, cl->out, cli_done, cl);
  } else if (ev == PG_EV_BROKEN && !cl->done) {
    cl->done = 1;
    cl->status = CHR_EUNAVAIL;
    snprintf(cl->msg, sizeof cl->msg, "cannot connect to %s: %s", cl->o->desc, c->errmsg);
  }
}

int chr_postgres_migrate(const char *url, int status_only, FILE *out) {
  pg_opts_t o;
  chr_opts_t opts;
  char err[400];
  int rc = chr_store_url_opts(url, &opts, err, sizeof err);
  if (rc == 0) rc = chr_pg_opts_parse(&opts, &o, err, sizeof err);
  chr_opts_free(&opts);
  if (rc != 0) {
    fprintf(stderr, "chronis migrate: %s\n", err);
    return 2;
  }
  cli_t cl = {&o, status_only ? PG_MIG_STATUS : PG_MIG_MIGRATE, 0, 0, out, ""};
  pg_conn_t *c = chr_pg_conn_start(&o, cli_event, &cl);
  c->timeout = 0;
  while (!cl.done) uv_run(chr_loop(), UV_RUN_ONCE);
  chr_pg_conn_close(c);
  uv_run(chr_loop(), UV_RUN_NOWAIT); /* lets the connection's handles close */
  chr_pg_opts_free(&o);
  if (cl.status != 0) {
    fprintf(stderr, "chronis migrate: %s\n", cl.msg);
    return 1;
  }
  return 0;
}
