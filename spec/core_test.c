/* core_test.c - the C core exercised without Lua: red-black tree
 * invariants, time and zones, cron, JSON scanning, the URL parser of store
 * and lock options, the storage contract on
 * the memory store, and the engine driving runs through hooks written in
 * C. Linked against the core and the memory store only (no Lua library),
 * which is itself the check that the core does not need Lua. Prints one
 * line per failure and ends with "N passed, N failed". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <uv.h>

#include "core/cron.h"
#include "core/engine.h"
#include "core/job.h"
#include "core/json.h"
#include "core/filter.h"
#include "core/loop.h"
#include "core/store.h"
#include "core/time.h"
#include "core/tz.h"
#include "core/url.h"
#include "memory/rbtree.h"

/* Cases pass when every CHECK in them holds; the counts are of cases. */
static int passed, failed, case_failed;
static const char *current;

static void end_case(void) {
  if (current == NULL) return;
  if (case_failed) failed++;
  else passed++;
  case_failed = 0;
}

static void test_case(const char *name) {
  end_case();
  current = name;
}

#define CHECK(cond)                                                                     \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      case_failed = 1;                                                                  \
      printf("FAILED %s: %s:%d: %s\n", current, __FILE__, __LINE__, #cond);             \
    }                                                                                   \
  } while (0)

static int64_t iso(const char *s) {
  int64_t us = CHR_TIME_NONE;
  char err[128];
  if (chr_time_parse(s, strlen(s), NULL, &us, err, sizeof err) != 0) {
    printf("bad time in test: %s: %s\n", s, err);
    exit(2);
  }
  return us;
}

/* ---- rbtree ---- */

typedef struct item {
  int key;
  chr_rb_node_t node;
} item_t;

static int item_cmp(const chr_rb_node_t *a, const chr_rb_node_t *b) {
  int x = CHR_CONTAINER_OF(a, item_t, node)->key, y = CHR_CONTAINER_OF(b, item_t, node)->key;
  return (x > y) - (x < y);
}

static void test_rbtree(void) {
  test_case("rbtree keeps its invariants and its order through inserts and removals");
  enum { N = 2000 };
  static item_t items[N];
  chr_rb_tree_t t;
  chr_rb_init(&t, item_cmp);
  unsigned x = 12345;
  for (int i = 0; i < N; i++) {
    x = x * 1103515245u + 12345u;
    items[i].key = (int)(x >> 8) % 100000 * N + i; /* distinct */
    CHECK(chr_rb_insert(&t, &items[i].node) == NULL);
  }
  CHECK(t.count == N);
  CHECK(chr_rb_check(&t) > 0);
  for (int i = 0; i < N; i += 2) chr_rb_remove(&t, &items[i].node);
  CHECK(t.count == N / 2);
  CHECK(chr_rb_check(&t) > 0);
  int prev = -1, n = 0, ordered = 1;
  for (chr_rb_node_t *p = chr_rb_first(&t); p; p = chr_rb_next(p), n++) {
    int k = CHR_CONTAINER_OF(p, item_t, node)->key;
    if (k <= prev) ordered = 0;
    prev = k;
  }
  CHECK(ordered);
  CHECK(n == N / 2);
  CHECK(chr_rb_insert(&t, &items[1].node) == &items[1].node); /* duplicate refused */
}

/* ---- time, zones, cron ---- */

/* Writes bytes to dir/name (dir/<first part> made first). */
static int write_file(const char *dir, const char *name, const char *p, size_t n) {
  char path[512];
  snprintf(path, sizeof path, "%s/%.*s", dir, (int)strcspn(name, "/"), name);
  mkdir(path, 0700);
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  if (f == NULL) return -1;
  size_t w = fwrite(p, 1, n, f);
  return fclose(f) == 0 && w == n ? 0 : -1;
}

/* Zone files that break the rules of RFC 8536 are refused; read from a
 * folder of this test's own through $TZDIR. */
static void test_zone_files(void) {
  test_case("a TZif file whose footer disagrees with its last transition is refused");
  char dir[] = "/tmp/chronis-core-test.XXXXXX", err[128];
  FILE *f = fopen("/usr/share/zoneinfo/Asia/Kolkata", "rb");
  static char buf[1 << 16];
  size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
  if (f) fclose(f);
  char *footer = n > 10 ? memmem(buf, n, "\nIST-5:30\n", 10) : NULL;
  CHECK(footer != NULL && mkdtemp(dir) != NULL);
  if (footer == NULL) return;
  const char *old = getenv("TZDIR");
  char *saved = old ? strdup(old) : NULL;
  setenv("TZDIR", dir, 1);
  CHECK(write_file(dir, "Test/Kolkata", buf, n) == 0);
  footer[5] = '4'; /* IST-4:30: an hour off the table's last type, +05:30 */
  CHECK(write_file(dir, "Test/Footer", buf, n) == 0);
  const chr_tz_t *good = chr_tz_get("Test/Kolkata", err, sizeof err);
  CHECK(good != NULL && chr_tz_offset(good, iso("2100-01-01T00:00:00Z")) == 19800);
  CHECK(chr_tz_get("Test/Footer", err, sizeof err) == NULL);
  CHECK(strcmp(err, "invalid timezone 'Test/Footer'") == 0);
  if (saved) setenv("TZDIR", saved, 1);
  else unsetenv("TZDIR");
  free(saved);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  CHECK(system(cmd) == 0);
}

static void test_time_tz_cron(void) {
  test_case("ISO times round-trip");
  char buf[CHR_TIME_BUFSZ];
  int64_t t = iso("2025-01-15T10:00:00.000250Z");
  chr_time_format(t, buf);
  CHECK(strcmp(buf, "2025-01-15T10:00:00.000250Z") == 0);
  CHECK(iso("2025-01-15T11:00:00+01:00") == iso("2025-01-15T10:00:00Z"));

  test_case("zones give their offsets, DST included");
  char err[128];
  const chr_tz_t *paris = chr_tz_get("Europe/Paris", err, sizeof err);
  CHECK(paris != NULL);
  if (paris) {
    CHECK(chr_tz_offset(paris, iso("2025-01-15T12:00:00Z")) == 3600);
    CHECK(chr_tz_offset(paris, iso("2025-07-15T12:00:00Z")) == 7200);
  }
  CHECK(chr_tz_get("Nowhere/Atlantis", err, sizeof err) == NULL);

  test_case("cron: next fire times, and DST gaps fire after the gap");
  chr_cron_t *c = chr_cron_parse_crontab("30 2 * * *", err, sizeof err);
  CHECK(c != NULL);
  if (c && paris) {
    /* 2025-03-30: 02:00-03:00 does not exist in Paris; 02:30 fires at 03:30. */
    int64_t next = chr_cron_next(c, iso("2025-03-29T12:00:00Z"), paris);
    CHECK(next == iso("2025-03-30T03:30:00+02:00"));
    next = chr_cron_next(c, next, paris);
    CHECK(next == iso("2025-03-31T02:30:00+02:00"));
  }
  chr_cron_free(c);
  c = chr_cron_parse_crontab("*/15 9-17 * * mon-fri", err, sizeof err);
  CHECK(c != NULL);
  if (c) {
    /* Friday 17:45 UTC -> Monday 09:00. */
    CHECK(chr_cron_next(c, iso("2025-01-17T17:45:00Z"), chr_tz_utc()) ==
          iso("2025-01-20T09:00:00Z"));
  }
  chr_cron_free(c);
  CHECK(chr_cron_parse_crontab("0 0 30 2 *", err, sizeof err) == NULL);
  CHECK(strstr(err, "never") != NULL);
  CHECK(chr_cron_parse_crontab("61 * * * *", err, sizeof err) == NULL);

  test_case("cron: dialects, H, TZ= and describe, without Lua");
  char msg[512], text[128];
  chr_cron_opts_t quartz = {CHR_CRON_QUARTZ, NULL}, hashed = {CHR_CRON_STANDARD, "report"};
  c = chr_cron_parse_crontab_opts("0 15 10 ? * 6L", &quartz, msg, sizeof msg);
  CHECK(c != NULL); /* the last Friday */
  if (c) CHECK(chr_cron_next(c, iso("2025-06-01T00:00:00Z"), NULL) == iso("2025-06-27T10:15:00Z"));
  chr_cron_free(c);
  CHECK(chr_cron_parse_crontab("0 9 * * MON-FRI 2025", msg, sizeof msg) == NULL);
  CHECK(strstr(msg, "with dialect = 'year_last'") != NULL);
  CHECK(chr_cron_parse_crontab("H * * * *", msg, sizeof msg) == NULL);
  c = chr_cron_parse_crontab_opts("H * * * *", &hashed, msg, sizeof msg);
  CHECK(c != NULL && chr_cron_hashed(c));
  chr_cron_free(c);
  c = chr_cron_parse_crontab("TZ=Europe/Paris 0 9 * * mon-fri", msg, sizeof msg);
  CHECK(c != NULL && chr_cron_zone(c) == paris);
  if (c) {
    /* The prefix wins over the zone given. */
    CHECK(chr_cron_next(c, iso("2025-06-01T00:00:00Z"), chr_tz_utc()) ==
          iso("2025-06-02T09:00:00+02:00"));
    chr_cron_describe(c, text, sizeof text);
    CHECK(strcmp(text, "at 09:00 on Monday through Friday (Europe/Paris)") == 0);
    /* A short buffer is cut, and the length needed returned. */
    CHECK(chr_cron_describe(c, text, 8) == strlen("at 09:00 on Monday through Friday (Europe/Paris)"));
    CHECK(strcmp(text, "at 09:0") == 0);
  }
  chr_cron_free(c);
}

/* ---- JSON ---- */

static void test_json(void) {
  test_case("JSON: members, dotted lookups, strings and numbers");
  const char *doc = "{\"a\":{\"b\":[1,2]},\"s\":\"x\\u00e9\\n\",\"n\":1e2}";
  chr_json_span_t v;
  CHECK(chr_json_lookup(doc, strlen(doc), "a.b", &v) == 1 && v.n == 5 &&
        memcmp(v.p, "[1,2]", 5) == 0);
  CHECK(chr_json_lookup(doc, strlen(doc), "a.c", &v) == 0);
  CHECK(chr_json_lookup(doc, strlen(doc), "s", &v) == 1);
  char *s = chr_json_unescape(v.p, v.n);
  CHECK(s && strcmp(s, "x\xc3\xa9\n") == 0);
  free(s);
  const char *it = doc, *end = doc + strlen(doc);
  chr_json_span_t k;
  int members = 0;
  while (chr_json_next_member(&it, end, &k, &v) == 1) members++;
  CHECK(members == 3);
  chr_buf_t b;
  chr_buf_init(&b);
  CHECK(chr_json_canon_number("1e2", 3, &b) == 0 && strcmp(b.p, "100") == 0);
  chr_buf_free(&b);
  chr_buf_init(&b);
  CHECK(chr_json_canon_number("1.5", 3, &b) == 0 && strcmp(b.p, "1.5") == 0);
  chr_buf_free(&b);
  CHECK(chr_json_skip("{\"a\":", doc + 5) == NULL);
}

/* ---- the storage contract on the memory store ---- */

static chr_store_req_t last;
static int answered;

static void sync_cb(chr_store_req_t *req) {
  (void)req;
  answered++;
}

/* Submits req to s and expects the memory store to answer at once. */
static int submit(chr_store_t *s, chr_store_req_t *req) {
  req->cb = sync_cb;
  int before = answered;
  int rc = chr_store_submit(s, req);
  if (rc != 0) return rc;
  if (answered != before + 1) {
    printf("FAILED %s: the memory store did not answer at once\n", current);
    case_failed = 1;
  }
  return req->status;
}

static chr_job_t *job(const char *id, int64_t next) {
  chr_job_t *j = chr_job_new();
  chr_job_set_str(j, CHR_F_JOB_ID, id);
  chr_job_set_int(j, CHR_F_STATUS, CHR_ST_SCHEDULED);
  chr_job_set_time(j, CHR_F_NEXT_RUN_TIME, next);
  return j;
}

static void create(chr_store_t *s, chr_job_t *j) {
  chr_store_req_init(&last, CHR_OP_CREATE);
  last.job = j;
  CHECK(submit(s, &last) == 0);
  chr_store_req_reset(&last);
  chr_job_free(j);
}

static void test_packed_job(void) {
  test_case("a packed copy reads like the record, and writes to it leave both whole");
  chr_job_t *src = job("packed-1", iso("2025-01-15T10:00:00Z"));
  chr_job_set_str(src, CHR_F_FUNC_NAME, "send");
  chr_job_set_str(src, CHR_F_CLAIMED_BY, "node-1");
  src->extra = chr_strdup("{\"args\":[1]}");
  chr_job_t *p = chr_job_dup_packed(src);
  CHECK(p->packed && strcmp(p->job_id, "packed-1") == 0 && strcmp(p->func_name, "send") == 0);
  CHECK(strcmp(p->claimed_by, "node-1") == 0 && strcmp(p->extra, "{\"args\":[1]}") == 0);
  CHECK(p->name == NULL && p->job_id != src->job_id);
  chr_job_t *d = chr_job_dup(p); /* a copy of a packed one is not */
  CHECK(!d->packed && strcmp(d->func_name, "send") == 0);
  chr_job_set_str(p, CHR_F_CLAIMED_BY, "node-2");
  CHECK(!p->packed && strcmp(p->claimed_by, "node-2") == 0 && strcmp(p->job_id, "packed-1") == 0);
  chr_job_t *u = chr_job_new();
  u->nullmask |= CHR_BIT(CHR_F_FUNC_NAME);
  chr_job_t *q = chr_job_dup_packed(src);
  chr_job_apply(q, u);
  CHECK(!q->packed && q->func_name == NULL && strcmp(q->extra, "{\"args\":[1]}") == 0);
  chr_job_free(u);
  chr_job_free(q);
  chr_job_free(d);
  chr_job_free(p);
  chr_job_free(src);
}

/* Jobs due at one time whose ids share their first 8 bytes, or end
 * within them: the memory store's trees compare that prefix as a number
 * first, and must still claim and list them in strcmp order. */
static void test_store_id_order(void) {
  static const char *const ids[] = {"job100001", "job10000", "job1", "job100000", "jobA",
                                    "job10000a", "job1000",  "job10001", "j", "job100000\x7f"};
  static const char *const sorted[] = {"j",        "job1",      "job1000",  "job10000",
                                       "job100000", "job100000\x7f", "job100001", "job10000a",
                                       "job10001",  "jobA"};
  enum { N = sizeof ids / sizeof *ids };
  chr_store_t *s = chr_memory_store_new();
  int64_t t0 = iso("2025-01-15T10:00:00Z");
  test_case("store: equal times go by job_id in queries and claims, whatever the ids' prefixes");
  for (int i = 0; i < N; i++) create(s, job(ids[i], t0));
  chr_store_req_init(&last, CHR_OP_QUERY);
  CHECK(submit(s, &last) == 0 && last.njobs == N);
  for (size_t i = 0; i < last.njobs && i < N; i++) CHECK(strcmp(last.jobs[i]->job_id, sorted[i]) == 0);
  chr_store_req_reset(&last);
  chr_store_req_init(&last, CHR_OP_CLAIM);
  last.now = t0;
  last.limit = 100;
  last.owner = "node-1";
  last.lease_us = 30 * CHR_USEC;
  CHECK(submit(s, &last) == 0 && last.njobs == N);
  for (size_t i = 0; i < last.njobs && i < N; i++) CHECK(strcmp(last.jobs[i]->job_id, sorted[i]) == 0);
  chr_store_req_reset(&last);
  chr_filter_t f;
  chr_filter_init(&f);
  f.status_mask = 1u << CHR_ST_RUNNING;
  chr_store_req_init(&last, CHR_OP_QUERY);
  last.filter = &f;
  CHECK(submit(s, &last) == 0 && last.njobs == N);
  for (size_t i = 0; i < last.njobs && i < N; i++) CHECK(strcmp(last.jobs[i]->job_id, sorted[i]) == 0);
  chr_store_req_reset(&last);
  chr_filter_free(&f);
  chr_store_close(s);
}

static void test_store(void) {
  chr_store_t *s = chr_memory_store_new();
  int64_t t0 = iso("2025-01-15T10:00:00Z");

  test_case("store: create, get, and a duplicate refused");
  create(s, job("a", t0));
  create(s, job("b", t0 + CHR_USEC));
  chr_store_req_init(&last, CHR_OP_CREATE);
  chr_job_t *dup = job("a", t0);
  last.job = dup;
  CHECK(submit(s, &last) == CHR_EDUP);
  chr_store_req_reset(&last);
  chr_job_free(dup);
  chr_store_req_init(&last, CHR_OP_GET);
  last.id = "a";
  CHECK(submit(s, &last) == 0 && last.njobs == 1 && strcmp(last.jobs[0]->job_id, "a") == 0);
  chr_store_req_reset(&last);

  test_case("store: compare-and-swap applies only on a match");
  chr_job_t *exp = chr_job_new(), *upd = chr_job_new();
  chr_job_set_int(exp, CHR_F_STATUS, CHR_ST_PAUSED);
  chr_job_set_int(upd, CHR_F_PRIORITY, 9);
  chr_store_req_init(&last, CHR_OP_CAS);
  last.id = "a";
  last.expected = exp;
  last.job = upd;
  CHECK(submit(s, &last) == 0 && last.ok == 0);
  chr_store_req_reset(&last);
  chr_job_set_int(exp, CHR_F_STATUS, CHR_ST_SCHEDULED);
  chr_store_req_init(&last, CHR_OP_CAS);
  last.id = "a";
  last.expected = exp;
  last.job = upd;
  CHECK(submit(s, &last) == 0 && last.ok == 1 && chr_job_priority(last.jobs[0]) == 9);
  chr_store_req_reset(&last);
  chr_job_free(exp);
  chr_job_free(upd);

  test_case("store: claim takes due jobs, highest priority first, with a lease");
  chr_store_req_init(&last, CHR_OP_CLAIM);
  last.now = t0 + 10 * CHR_USEC;
  last.limit = 1;
  last.owner = "node-1";
  last.lease_us = 30 * CHR_USEC;
  CHECK(submit(s, &last) == 0 && last.njobs == 1);
  if (last.njobs == 1) {
    CHECK(strcmp(last.jobs[0]->job_id, "a") == 0); /* priority 9 */
    CHECK(last.jobs[0]->status == CHR_ST_RUNNING);
    CHECK(last.jobs[0]->lease_until == t0 + 40 * CHR_USEC);
  }
  chr_store_req_reset(&last);

  test_case("store: recovery counts the run that was cut short");
  chr_store_req_init(&last, CHR_OP_RECOVER);
  last.now = t0 + 41 * CHR_USEC;
  CHECK(submit(s, &last) == 0 && last.count == 1);
  chr_store_req_reset(&last);
  chr_store_req_init(&last, CHR_OP_GET);
  last.id = "a";
  CHECK(submit(s, &last) == 0 && last.njobs == 1 &&
        chr_job_int(last.jobs[0], CHR_F_RETRY_COUNT, 0) == 1 &&
        last.jobs[0]->status == CHR_ST_SCHEDULED);
  chr_store_req_reset(&last);

  test_case("store: query orders by next_run_time; next_due; delete");
  chr_filter_t f;
  chr_filter_init(&f);
  f.status_mask = 1u << CHR_ST_SCHEDULED;
  chr_store_req_init(&last, CHR_OP_QUERY);
  last.filter = &f;
  CHECK(submit(s, &last) == 0 && last.njobs == 2 && strcmp(last.jobs[0]->job_id, "a") == 0);
  chr_store_req_reset(&last);
  chr_filter_free(&f);
  chr_store_req_init(&last, CHR_OP_NEXT_DUE);
  CHECK(submit(s, &last) == 0 && last.count == t0);
  chr_store_req_reset(&last);
  chr_store_req_init(&last, CHR_OP_DELETE);
  last.id = "b";
  CHECK(submit(s, &last) == 0 && last.ok == 1);
  chr_store_req_reset(&last);
  chr_store_req_init(&last, CHR_OP_COUNT);
  CHECK(submit(s, &last) == 0 && last.count == 1);
  chr_store_req_reset(&last);
  chr_store_close(s);
}

/* ---- the engine, with hooks written in C ---- */

typedef struct host {
  int runs, fails, finished, stopped, freed;
} host_t;

static int c_start_run(void *host, chr_run_t *r, char *err, size_t errlen) {
  host_t *h = host;
  (void)err;
  (void)errlen;
  h->runs++;
  const chr_job_t *j = chr_run_job(r);
  if (j->func_name && strcmp(j->func_name, "fail") == 0) {
    h->fails++;
    chr_run_done(r, CHR_RUN_ERROR, CHR_EHANDLER, "refused");
  } else {
    chr_run_done(r, CHR_RUN_OK, 0, NULL);
  }
  return 0;
}

static void c_stop_run(void *host, chr_run_t *r, int why) {
  (void)host;
  (void)r;
  (void)why;
}

static void c_log(void *host, int level, const char *msg, const chr_log_field_t *fields,
                  size_t n) {
  (void)host;
  (void)level;
  (void)msg;
  (void)fields;
  (void)n;
}

static void c_finished(void *host, const chr_job_t *job, int code, const char *msg) {
  (void)job;
  (void)code;
  (void)msg;
  ((host_t *)host)->finished++;
}

static void c_stopped(void *host) {
  ((host_t *)host)->stopped++;
}

static void c_freed(void *host) {
  ((host_t *)host)->freed++;
}

static const chr_sched_hooks_t c_hooks = {c_start_run, c_stop_run, c_log, NULL,
                                          c_finished, c_stopped, c_freed};

static int count_jobs(chr_store_t *s, chr_status_t st) {
  chr_filter_t f;
  chr_filter_init(&f);
  f.status_mask = 1u << st;
  chr_store_req_init(&last, CHR_OP_COUNT);
  last.filter = &f;
  int n = submit(s, &last) == 0 ? (int)last.count : -1;
  chr_store_req_reset(&last);
  chr_filter_free(&f);
  return n;
}

static void test_engine(void) {
  test_case("engine: runs every due job once through C hooks, retries and fails");
  chr_store_t *s = chr_memory_store_new();
  int64_t now = chr_time_now();
  char id[32];
  for (int i = 0; i < 50; i++) {
    snprintf(id, sizeof id, "ok-%02d", i);
    chr_job_t *j = job(id, now - CHR_USEC);
    chr_job_set_int(j, CHR_F_TRIGGER_TYPE, CHR_TT_DATE);
    chr_job_set_str(j, CHR_F_FUNC_NAME, "ok");
    create(s, j);
  }
  chr_job_t *bad = job("bad", now - CHR_USEC);
  chr_job_set_int(bad, CHR_F_TRIGGER_TYPE, CHR_TT_DATE);
  chr_job_set_str(bad, CHR_F_FUNC_NAME, "fail");
  create(s, bad);
  host_t h = {0};
  chr_sched_opts_t o = {0.1, 8, 16, 30, 5, 0};
  chr_sched_t *sc = chr_sched_new(s, NULL, &o, &c_hooks, &h);
  CHECK(chr_sched_start(sc) == 0);
  for (int turns = 0; turns < 2000 && count_jobs(s, CHR_ST_SCHEDULED) + count_jobs(s, CHR_ST_RUNNING) > 0;
       turns++)
    uv_run(chr_loop(), UV_RUN_ONCE);
  CHECK(h.runs == 51);
  CHECK(h.fails == 1);
  CHECK(h.finished == 51); /* 50 successes and a failure without retries */
  CHECK(count_jobs(s, CHR_ST_FAILED) == 1);
  CHECK(count_jobs(s, CHR_ST_SCHEDULED) == 0);
  const chr_sched_stats_t *st = chr_sched_stats(sc);
  CHECK(st->succeeded == 50 && st->failed == 1 && st->claimed == 51);

  test_case("engine: stops on its own, then frees its host's state once closed");
  chr_sched_stop(sc, 1);
  for (int turns = 0; turns < 100 && chr_sched_state(sc) != CHR_SCHED_STOPPED; turns++)
    uv_run(chr_loop(), UV_RUN_ONCE);
  CHECK(chr_sched_state(sc) == CHR_SCHED_STOPPED);
  CHECK(h.stopped == 1);
  chr_sched_close(sc);
  uv_run(chr_loop(), UV_RUN_NOWAIT); /* the timers' close callbacks */
  CHECK(h.freed == 1);
  chr_store_close(s);
}

/* ---- named queues ---- */

/* A date job of queue q (NULL: none) due at `due`, handler "ok". */
static chr_job_t *queued_job(const char *id, const char *q, int64_t due) {
  chr_job_t *j = job(id, due);
  chr_job_set_int(j, CHR_F_TRIGGER_TYPE, CHR_TT_DATE);
  chr_job_set_str(j, CHR_F_FUNC_NAME, "ok");
  if (q) {
    char extra[96];
    snprintf(extra, sizeof extra, "{\"queue\":\"%s\"}", q);
    free(j->extra);
    j->extra = chr_strdup(extra);
  }
  return j;
}

/* Claims with queues at now; returns how many jobs, or -1 on an error
 * (its code in *code when given). */
static int claim_queues(chr_store_t *s, int64_t now, const chr_claim_queue_t *q, size_t n,
                        int *code) {
  chr_store_req_init(&last, CHR_OP_CLAIM);
  last.now = now;
  last.limit = 100;
  last.owner = "node-q";
  last.lease_us = 30 * CHR_USEC;
  last.queues = q;
  last.nqueues = n;
  int rc = submit(s, &last);
  int got = rc == 0 ? (int)last.njobs : -1;
  for (size_t i = 0; rc == 0 && i < last.njobs; i++) CHECK(chr_job_queue_is(last.jobs[i], q[0].name));
  if (code) *code = rc;
  chr_store_req_reset(&last);
  return got;
}

static void test_queues(void) {
  int64_t t0 = iso("2025-01-15T10:00:00Z");
  char id[32];
  for (int emulated = 0; emulated < 2; emulated++) {
    chr_store_t *s = chr_memory_store_new();
    /* Without the capability, the claim is emulated over query and CAS. */
    if (emulated) s->caps &= ~(unsigned)CHR_STORE_CAP_QUEUES;
    for (int i = 0; i < 6; i++) {
      snprintf(id, sizeof id, "a%d", i);
      create(s, queued_job(id, "a", t0 - CHR_USEC));
      snprintf(id, sizeof id, "b%d", i);
      create(s, queued_job(id, "b", t0 - CHR_USEC));
    }
    test_case(emulated ? "queues (emulated): a claim takes its queue's jobs, up to its limit"
                       : "queues: a claim takes its queue's jobs, up to its limit");
    chr_claim_queue_t qa = {"a", 2, 0, 0, 0};
    CHECK(claim_queues(s, t0, &qa, 1, NULL) == 2);
    test_case(emulated ? "queues (emulated): global and rate limits are refused"
                       : "queues: global and rate limits hold in the claim");
    chr_claim_queue_t g = {"a", 5, 3, 0, 0}, r = {"a", 5, 0, 1, 60 * CHR_USEC};
    int code = 0;
    if (emulated) {
      CHECK(claim_queues(s, t0, &g, 1, &code) == -1 && code == CHR_ENOTSUP);
      CHECK(claim_queues(s, t0, &r, 1, &code) == -1 && code == CHR_ENOTSUP);
    } else {
      CHECK(claim_queues(s, t0, &g, 1, NULL) == 1); /* 2 running: 1 more */
      CHECK(claim_queues(s, t0, &g, 1, NULL) == 0);
      CHECK(claim_queues(s, t0, &r, 1, NULL) == 1);
      CHECK(claim_queues(s, t0 + 59 * CHR_USEC, &r, 1, NULL) == 0);
      CHECK(claim_queues(s, t0 + 60 * CHR_USEC, &r, 1, NULL) == 1);
    }
    test_case(emulated ? "queues (emulated): a bad queue is refused"
                       : "queues: a bad queue is refused");
    chr_claim_queue_t bad = {"a b", 1, 0, 0, 0}, zero = {"a", 0, 0, 0, 0};
    CHECK(claim_queues(s, t0, &bad, 1, &code) == -1 && code == CHR_EINVAL);
    CHECK(claim_queues(s, t0, &zero, 1, &code) == -1 && code == CHR_EINVAL);

    test_case(emulated ? "queues (emulated): the engine runs only the queues it serves"
                       : "queues: the engine runs only the queues it serves");
    chr_sched_opts_t o = {0.1, 8, 16, 30, 5, 0};
    chr_claim_queue_t serve = {"b", 2, 0, 0, 0};
    o.queues = &serve;
    o.nqueues = 1;
    host_t h = {0};
    chr_sched_t *sc = chr_sched_new(s, NULL, &o, &c_hooks, &h);
    CHECK(chr_sched_start(sc) == 0);
    for (int turns = 0; turns < 2000 && h.runs < 6; turns++) uv_run(chr_loop(), UV_RUN_ONCE);
    CHECK(h.runs == 6);
    /* a's six jobs, all scheduled again: the claims above were leased on
     * 2025's clock, expired on the engine's, and recovered. */
    CHECK(count_jobs(s, CHR_ST_SCHEDULED) == 6);
    chr_sched_stop(sc, 1);
    for (int turns = 0; turns < 100 && chr_sched_state(sc) != CHR_SCHED_STOPPED; turns++)
      uv_run(chr_loop(), UV_RUN_ONCE);
    chr_sched_close(sc);
    uv_run(chr_loop(), UV_RUN_NOWAIT);
    CHECK(h.freed == 1);

    test_case(emulated ? "queues (emulated): a scheduler with a global limit does not start"
                       : "queues: a scheduler with a global limit starts");
    o.queues = &g;
    host_t h2 = {0};
    sc = chr_sched_new(s, NULL, &o, &c_hooks, &h2);
    CHECK(chr_sched_start(sc) == (emulated ? CHR_ENOTSUP : 0));
    chr_sched_close(sc);
    for (int turns = 0; turns < 100 && !h2.freed; turns++) uv_run(chr_loop(), UV_RUN_NOWAIT);
    CHECK(h2.freed == 1);
    chr_store_close(s);
  }
}

/* ---- URLs ---- */

static int has(const char *s, const char *part) {
  return s != NULL && strstr(s, part) != NULL;
}

static void test_url(void) {
  chr_url_t u;
  char err[300];
  test_case("URL: every part is %-decoded; the authority, the path and the options");
  CHECK(chr_url_parse("postgres://a%40b:p%26w%3Dd%25%20%C3%A9@db.local:6543/my%20db?"
                      "table=t&options=-c%20x%3D1&&e=%3F%23",
                      CHR_URL_AUTHORITY, "storage", &u, err, sizeof err) == 0);
  CHECK(strcmp(u.scheme, "postgres") == 0 && u.has_authority);
  CHECK(u.user && strcmp(u.user, "a@b") == 0);
  CHECK(u.password && strcmp(u.password, "p&w=d% \xc3\xa9") == 0);
  CHECK(u.host && strcmp(u.host, "db.local") == 0 && u.port && strcmp(u.port, "6543") == 0);
  CHECK(strcmp(u.path, "/my db") == 0);
  CHECK(u.query.n == 3 && strcmp(chr_opts_get(&u.query, "options"), "-c x=1") == 0);
  CHECK(strcmp(chr_opts_get(&u.query, "e"), "?#") == 0);
  chr_url_free(&u);
  CHECK(chr_url_parse("redis:[::1]:7000,h2/3", CHR_URL_AUTHORITY_ALWAYS, "lock", &u, err,
                      sizeof err) == 0);
  CHECK(u.host && strcmp(u.host, "::1,h2") == 0 && u.port && strcmp(u.port, "7000,") == 0);
  CHECK(strcmp(u.path, "/3") == 0 && u.user == NULL && u.password == NULL);
  chr_url_free(&u);
  CHECK(chr_url_parse("sqlite:///tmp/a%3Fb.db", CHR_URL_NO_AUTHORITY, "storage", &u, err,
                      sizeof err) == 0);
  CHECK(!u.has_authority && strcmp(u.path, "/tmp/a?b.db") == 0 && u.host == NULL);
  chr_url_free(&u);
  CHECK(chr_url_parse("sqlite::memory:", CHR_URL_NO_AUTHORITY, "storage", &u, err, sizeof err) == 0);
  CHECK(strcmp(u.path, ":memory:") == 0);
  chr_url_free(&u);

  test_case("URL: malformed escapes, %00, bad ports and repeated options refused, naming the part");
  static const struct {
    const char *url, *part;
  } bad[] = {
      {"redis://:se%zzcret@h/0", "in the password"},
      {"redis://u%4@h/0", "'%4' in the user"},
      {"redis://h%G0/0", "in the host"},
      {"redis://h:99999/0", "the port '99999'"},
      {"redis://h:6379/%00", "%00 (a NUL byte) is not allowed in the path"},
      {"redis://h/0?prefix=%2", "in option 'prefix'"},
      {"redis://h/0?pre%zfix=1", "in an option name"},
      {"redis://h/0?prefix", "option 'prefix' has no value"},
      {"redis://h/0?prefix=a&prefix=b", "option 'prefix' is given more than once"},
      {"redis://[::1/0", "unclosed '['"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    int rc = chr_url_parse(bad[i].url, CHR_URL_AUTHORITY_ALWAYS, "storage", &u, err, sizeof err);
    CHECK(rc == CHR_EINVAL);
    if (rc == CHR_EINVAL && !has(err, bad[i].part)) printf("  %s -> %s\n", bad[i].url, err);
    CHECK(rc != CHR_EINVAL || has(err, bad[i].part));
    CHECK(rc != CHR_EINVAL || has(err, "invalid storage URL"));
    CHECK(!has(err, "cret"));
  }

  test_case("URL: messages hide the password");
  char *shown = chr_url_shown("redis://u:s3cret@h:1/0?x=1", CHR_URL_AUTHORITY_ALWAYS);
  CHECK(strcmp(shown, "redis://u:***@h:1/0?x=1") == 0);
  free(shown);
  shown = chr_url_shown("redis://s3c?ret@h:1/0", CHR_URL_AUTHORITY_ALWAYS);
  CHECK(!has(shown, "s3c"));
  free(shown);
  shown = chr_url_shown("sqlite:/tmp/a@b:c.db", CHR_URL_NO_AUTHORITY);
  CHECK(strcmp(shown, "sqlite:/tmp/a@b:c.db") == 0);
  free(shown);

  test_case("options: a key given twice is refused, naming it");
  chr_opts_t o;
  chr_opts_init(&o);
  o.desc = chr_strdup("sqlite storage options");
  CHECK(chr_opts_add(&o, "path", "a&b=c", err, sizeof err) == 0);
  CHECK(chr_opts_add(&o, "path", "x", err, sizeof err) == CHR_EINVAL);
  CHECK(has(err, "invalid sqlite storage options: option 'path' is given more than once"));
  CHECK(strcmp(chr_opts_get(&o, "path"), "a&b=c") == 0 && chr_opts_get(&o, "x") == NULL);
  chr_opts_free(&o);
}

/* ---- index_metadata ---- */

static void test_meta_index(void) {
  char err[300];
  char **paths = NULL;
  test_case("index_metadata: comma-separated plain paths, in order");
  CHECK(chr_meta_index_parse("tenant_id,org.id,a-b", &paths, err, sizeof err) == 0);
  CHECK(paths && strcmp(paths[0], "tenant_id") == 0 && strcmp(paths[1], "org.id") == 0 &&
        strcmp(paths[2], "a-b") == 0 && paths[3] == NULL);
  chr_meta_index_free(paths);

  test_case("index_metadata: empty paths, repeats and other characters refused, naming them");
  static const struct {
    const char *val, *said;
  } bad[] = {
      {"", "an empty path"},          {"tenant_id,", "an empty path (in 'tenant_id,')"},
      {"a,,b", "an empty path"},      {",a", "an empty path"},
      {"a,a", "'a' is named twice"},  {"a.", "'a.' is not a metadata path"},
      {"a b", "'a b' is not a metadata path"}, {"a\\.b", "is not a metadata path"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    paths = NULL;
    int rc = chr_meta_index_parse(bad[i].val, &paths, err, sizeof err);
    CHECK(rc == CHR_EINVAL && paths == NULL);
    if (rc != CHR_EINVAL || !has(err, bad[i].said)) printf("  '%s' -> %s\n", bad[i].val, err);
    CHECK(rc != CHR_EINVAL || (has(err, bad[i].said) && has(err, "index_metadata")));
    if (rc == 0) chr_meta_index_free(paths);
  }
}

int main(void) {
  test_rbtree();
  test_time_tz_cron();
  test_zone_files();
  test_json();
  test_url();
  test_meta_index();
  test_packed_job();
  test_store();
  test_store_id_order();
  test_engine();
  test_queues();
  chr_tz_cache_clear();
  uv_loop_close(chr_loop());
  end_case();
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
