/* metrics.c - counters, histograms and their exposition text (see
 * metrics.h). A scrape writes every line of the text: numbers are
 * formatted by hand and handler names escaped once, when first seen, so
 * that a scrape of many schedulers and handlers stays well under a
 * millisecond. */
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "time.h"

static const double bounds_run[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,   2.5,
                                    5,     10,   30,    60,   120, 300,  600, 1800, 3600};
static const double bounds_late[] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1,
                                     2.5,   5,     10,   30,   60,  300,  900, 3600};
static const double bounds_store[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                      0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                      1,      2.5,     5,      10};
static const double bounds_batch[] = {0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000};

#define NB(a) (int)(sizeof a / sizeof a[0])
static const struct {
  const double *bounds;
  int n;
} hist_sets[CHR_HB__COUNT] = {
    [CHR_HB_RUN] = {bounds_run, NB(bounds_run)},
    [CHR_HB_LATE] = {bounds_late, NB(bounds_late)},
    [CHR_HB_STORE] = {bounds_store, NB(bounds_store)},
    [CHR_HB_BATCH] = {bounds_batch, NB(bounds_batch)},
};

const char *const chr_metrics_outcome_names[CHR_MO__COUNT] = {
    "ok",      "error",             "timeout", "interrupted", "skipped",
    "handler_not_found", "exit",    "lease_expired", "invalid",
    "snoozed", "cancelled"};

chr_mprocess_t chr_metrics_process;

static void le_init(void);

void chr_metrics_init(void) {
  if (chr_metrics_process.started_at != 0) return;
  chr_metrics_process.started_at = chr_time_now();
  le_init();
}

void chr_hist_observe(chr_hist_t *h, chr_hist_kind_t kind, double v) {
  const double *bounds = hist_sets[kind].bounds;
  int n = hist_sets[kind].n, i = 0;
  if (v < 0) v = 0; /* a clock step: lateness and durations are never negative */
  while (i < n && v > bounds[i]) i++;
  h->b[i < n ? i : CHR_HIST_MAX]++;
  h->count++;
  h->sum += v;
}

/* ---- label values ---- */

/* Label values come as valid UTF-8: handler names and node ids are
 * checked for it on their way in (chr_job_string_problem). */
void chr_metrics_escape(chr_buf_t *b, const char *s, size_t n) {
  const char *end = s + n;
  while (s < end) {
    const char *run = s;
    while (s < end && *s != '\\' && *s != '"' && *s != '\n') s++;
    if (s > run) chr_buf_add(b, run, (size_t)(s - run));
    if (s == end) break;
    chr_buf_add(b, *s == '\\' ? "\\\\" : *s == '"' ? "\\\"" : "\\n", 2);
    s++;
  }
}

/* ---- handlers ---- */

static uint64_t hash_name(const char *s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
  return h;
}

static chr_mhandler_t *handler_new(const char *name) {
  chr_mhandler_t *e = chr_calloc(1, sizeof *e);
  chr_buf_t b;
  chr_buf_init(&b);
  chr_metrics_escape(&b, name, strlen(name));
  e->name = chr_strdup(name);
  e->label_len = b.len;
  e->label = chr_buf_steal(&b);
  return e;
}

chr_msched_t *chr_msched_new(void) {
  chr_msched_t *m = chr_calloc(1, sizeof *m);
  m->nslots = 16;
  m->slots = chr_calloc(m->nslots, sizeof *m->slots);
  return m;
}

void chr_msched_free(chr_msched_t *m) {
  if (m == NULL) return;
  for (chr_mhandler_t *e = m->first, *next; e; e = next) {
    next = e->next;
    free(e->name);
    free(e->label);
    free(e);
  }
  free(m->slots);
  free(m);
}

static void link_handler(chr_msched_t *m, chr_mhandler_t *e) {
  if (m->last) m->last->next = e;
  else m->first = e;
  m->last = e;
}

static void grow(chr_msched_t *m) {
  size_t n = m->nslots * 2;
  chr_mhandler_t **slots = chr_calloc(n, sizeof *slots);
  for (size_t i = 0; i < m->nslots; i++) {
    chr_mhandler_t *e = m->slots[i];
    if (e == NULL) continue;
    size_t j = (size_t)hash_name(e->name) & (n - 1);
    while (slots[j]) j = (j + 1) & (n - 1);
    slots[j] = e;
  }
  free(m->slots);
  m->slots = slots;
  m->nslots = n;
}

chr_mhandler_t *chr_msched_handler(chr_msched_t *m, const char *name) {
  if (name == NULL) name = "";
  size_t mask = m->nslots - 1, i = (size_t)hash_name(name) & mask;
  for (chr_mhandler_t *e; (e = m->slots[i]) != NULL; i = (i + 1) & mask)
    if (strcmp(e->name, name) == 0) return e;
  if (m->n >= CHR_METRICS_HANDLERS) {
    if (m->other == NULL) {
      /* A handler really named "other" shares its entry with the rest:
       * two series with the same labels would make the text invalid. */
      size_t j = (size_t)hash_name("other") & mask;
      while (m->slots[j] && strcmp(m->slots[j]->name, "other") != 0) j = (j + 1) & mask;
      m->other = m->slots[j];
      if (m->other == NULL) {
        m->other = handler_new("other");
        link_handler(m, m->other);
      }
    }
    return m->other;
  }
  chr_mhandler_t *e = handler_new(name);
  m->slots[i] = e;
  m->n++;
  link_handler(m, e);
  if (m->n * 2 >= m->nslots) grow(m);
  return e;
}

/* ---- store kinds ---- */

static chr_mstore_t stores[CHR_METRICS_STORES];
static int nstores;

chr_mstore_t *chr_metrics_store(const char *kind) {
  for (int i = 0; i < nstores; i++)
    if (strcmp(stores[i].kind, kind) == 0) return &stores[i];
  if (nstores == CHR_METRICS_STORES) return &stores[CHR_METRICS_STORES - 1];
  chr_mstore_t *m = &stores[nstores++];
  snprintf(m->kind, sizeof m->kind, "%s", nstores == CHR_METRICS_STORES ? "other" : kind);
  return m;
}

void chr_metrics_reconnect(const char *kind) {
  chr_metrics_store(kind)->reconnects++;
}

int chr_metrics_store_failure(int status) {
  switch (status) {
  case 0:
  case CHR_EINVAL:
  case CHR_EDUP:
  case CHR_ENOTFOUND:
  case CHR_ECONFLICT:
  case CHR_ENOTSUP: return 0;
  default: return 1;
  }
}

void chr_metrics_store_op(chr_mstore_t *m, chr_store_op_t op, int status, double seconds) {
  chr_hist_observe(&m->op[op], CHR_HB_STORE, seconds);
  if (chr_metrics_store_failure(status)) m->errors[op]++;
}

/* ---- the exposition ---- */

/* Writes v at p, returns the end: the writers below reserve room once
 * per line or series and fill it without further checks. */
static char *fmt_u64(char *p, uint64_t v) {
  char d[20];
  int n = 0;
  do d[n++] = (char)('0' + v % 10); while ((v /= 10) != 0);
  while (n) *p++ = d[--n];
  return p;
}

static char *put(char *p, const char *s, size_t n) {
  memcpy(p, s, n);
  return p + n;
}

static void put_u64(chr_buf_t *b, uint64_t v) {
  chr_buf_reserve(b, 20);
  b->len = (size_t)(fmt_u64(b->p + b->len, v) - b->p);
  b->p[b->len] = '\0';
}

static void put_i64(chr_buf_t *b, int64_t v) {
  if (v < 0) {
    chr_buf_addc(b, '-');
    put_u64(b, (uint64_t)0 - (uint64_t)v);
  } else {
    put_u64(b, (uint64_t)v);
  }
}

/* Sums: seconds to the nanosecond (and whole jobs) without printf, which
 * costs more than the rest of a line; others through printf. */
static void put_double(chr_buf_t *b, double v) {
  if (!(v >= 0 && v < 1e9)) {
    chr_buf_printf(b, "%.15g", v);
    return;
  }
  uint64_t whole = (uint64_t)v, frac = (uint64_t)((v - (double)whole) * 1e9 + 0.5);
  if (frac >= 1000000000) whole++, frac -= 1000000000;
  chr_buf_reserve(b, 32);
  char *p = fmt_u64(b->p + b->len, whole);
  if (frac) {
    int digits = 9;
    while (frac % 10 == 0) frac /= 10, digits--;
    *p++ = '.';
    for (int i = digits - 1; i >= 0; i--, frac /= 10) p[i] = (char)('0' + frac % 10);
    p += digits;
  }
  b->len = (size_t)(p - b->p);
  b->p[b->len] = '\0';
}

static void family(chr_buf_t *b, const char *name, const char *type, const char *help) {
  chr_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The labels of a series, built once and written on each of its lines:
 * `k1="v1",k2="v2"` with the values escaped. */
typedef struct labels {
  chr_buf_t b;
} labels_t;

static void label_addn(labels_t *l, const char *key, const char *value, size_t n) {
  if (l->b.len) chr_buf_addc(&l->b, ',');
  chr_buf_adds(&l->b, key);
  chr_buf_add(&l->b, "=\"", 2);
  chr_metrics_escape(&l->b, value, n);
  chr_buf_addc(&l->b, '"');
}

static void label_add(labels_t *l, const char *key, const char *value) {
  label_addn(l, key, value, strlen(value));
}

/* A handler label: escaped already. */
static void lab_handler(labels_t *l, const chr_mhandler_t *e) {
  chr_buf_add(&l->b, ",handler=\"", 10);
  chr_buf_add(&l->b, e->label, e->label_len);
  chr_buf_addc(&l->b, '"');
}

static void sample_start(chr_buf_t *b, const char *name, const labels_t *l) {
  chr_buf_adds(b, name);
  if (l && l->b.len) {
    chr_buf_addc(b, '{');
    chr_buf_add(b, l->b.p, l->b.len);
    chr_buf_addc(b, '}');
  }
  chr_buf_addc(b, ' ');
}

static void sample_u64(chr_buf_t *b, const char *name, const labels_t *l, uint64_t v) {
  sample_start(b, name, l);
  put_u64(b, v);
  chr_buf_addc(b, '\n');
}

static void sample_i64(chr_buf_t *b, const char *name, const labels_t *l, int64_t v) {
  sample_start(b, name, l);
  put_i64(b, v);
  chr_buf_addc(b, '\n');
}

/* The lines of one histogram series: cumulative buckets, +Inf, sum,
 * count. name is the family's base name. */
/* The end of each bucket line before its count: `,le="0.005"} `, made
 * once per bound (%g writes each bound above exactly). */
typedef struct le_text {
  char s[24];
  size_t n;
} le_text_t;

static le_text_t le_texts[CHR_HB__COUNT][CHR_HIST_MAX + 1];

static void le_init(void) {
  for (int k = 0; k < CHR_HB__COUNT; k++) {
    for (int i = 0; i <= hist_sets[k].n; i++) {
      le_text_t *t = &le_texts[k][i];
      int len = i < hist_sets[k].n
                    ? snprintf(t->s, sizeof t->s, ",le=\"%g\"} ", hist_sets[k].bounds[i])
                    : snprintf(t->s, sizeof t->s, ",le=\"+Inf\"} ");
      t->n = (size_t)len;
    }
  }
}

static void hist_lines(chr_buf_t *b, const char *name, const labels_t *l, const chr_hist_t *h,
                       chr_hist_kind_t kind) {
  size_t nl = strlen(name), ll = l->b.len;
  uint64_t cum = 0;
  int n = hist_sets[kind].n;
  /* Each bucket line: name, _bucket{, labels, the le text (24 at most),
   * at most 20 digits, newline. */
  chr_buf_reserve(b, (size_t)(n + 1) * (nl + ll + 53));
  char *p = b->p + b->len;
  for (int i = 0; i <= n; i++) {
    cum += h->b[i < n ? i : CHR_HIST_MAX];
    const le_text_t *le = &le_texts[kind][i];
    p = put(p, name, nl);
    p = put(p, "_bucket{", 8);
    p = put(p, l->b.p, ll);
    p = put(p, le->s, le->n);
    p = fmt_u64(p, cum);
    *p++ = '\n';
  }
  b->len = (size_t)(p - b->p);
  b->p[b->len] = '\0';
  chr_buf_add(b, name, nl);
  chr_buf_add(b, "_sum{", 5);
  chr_buf_add(b, l->b.p, ll);
  chr_buf_add(b, "} ", 2);
  put_double(b, h->sum);
  chr_buf_addc(b, '\n');
  chr_buf_add(b, name, nl);
  chr_buf_add(b, "_count{", 7);
  chr_buf_add(b, l->b.p, ll);
  chr_buf_add(b, "} ", 2);
  put_u64(b, h->count);
  chr_buf_addc(b, '\n');
}

/* l := scheduler="..."[,store="..."] */
static void sched_labels(labels_t *l, const chr_metrics_view_t *v, int with_store) {
  l->b.len = 0;
  label_add(l, "scheduler", v->scheduler);
  if (with_store) label_add(l, "store", v->store);
}

void chr_metrics_render(chr_buf_t *b, const chr_metrics_view_t *v, size_t n, int64_t memory_bytes) {
  /* Room for about what the last scrape wrote: the text grows in one step. */
  static size_t last_len;
  labels_t l;
  chr_buf_init(&l.b);
  chr_metrics_init();
  chr_buf_reserve(b, last_len + last_len / 8);
  size_t start_len = b->len;

  family(b, "chronis_runs_total", "counter",
         "Runs ended, by handler and outcome (handler names past the cap count as \"other\").");
  for (size_t i = 0; i < n; i++) {
    sched_labels(&l, &v[i], 1);
    size_t base = l.b.len;
    for (const chr_mhandler_t *e = v[i].m->first; e; e = e->next) {
      for (int o = 0; o < CHR_MO__COUNT; o++) {
        if (e->runs[o] == 0) continue;
        l.b.len = base;
        lab_handler(&l, e);
        label_add(&l, "outcome", chr_metrics_outcome_names[o]);
        sample_u64(b, "chronis_runs_total", &l, e->runs[o]);
      }
    }
  }
  family(b, "chronis_run_retries_total", "counter",
         "Failed runs (error, timeout) whose job will be retried.");
  for (size_t i = 0; i < n; i++) {
    sched_labels(&l, &v[i], 1);
    size_t base = l.b.len;
    for (const chr_mhandler_t *e = v[i].m->first; e; e = e->next) {
      l.b.len = base;
      lab_handler(&l, e);
      sample_u64(b, "chronis_run_retries_total", &l, e->retries);
    }
  }
  family(b, "chronis_run_failures_total", "counter",
         "Failed runs after which the job is failed (no retry left).");
  for (size_t i = 0; i < n; i++) {
    sched_labels(&l, &v[i], 1);
    size_t base = l.b.len;
    for (const chr_mhandler_t *e = v[i].m->first; e; e = e->next) {
      l.b.len = base;
      lab_handler(&l, e);
      sample_u64(b, "chronis_run_failures_total", &l, e->failures);
    }
  }
  family(b, "chronis_run_duration_seconds", "histogram",
         "Time from a handler's start to its end.");
  for (size_t i = 0; i < n; i++) {
    sched_labels(&l, &v[i], 0);
    size_t base = l.b.len;
    for (const chr_mhandler_t *e = v[i].m->first; e; e = e->next) {
      if (e->duration.count == 0) continue;
      l.b.len = base;
      lab_handler(&l, e);
      hist_lines(b, "chronis_run_duration_seconds", &l, &e->duration, CHR_HB_RUN);
    }
  }
  family(b, "chronis_run_lateness_seconds", "histogram",
         "Start of a handler minus the time it was due (the slot it runs for).");
  for (size_t i = 0; i < n; i++) {
    sched_labels(&l, &v[i], 0);
    hist_lines(b, "chronis_run_lateness_seconds", &l, &v[i].m->lateness, CHR_HB_LATE);
  }
  family(b, "chronis_claims_total", "counter", "Claim requests the store answered.");
  for (size_t i = 0; i < n; i++) {
    sched_labels(&l, &v[i], 1);
    sample_u64(b, "chronis_claims_total", &l, v[i].m->claims);
  }
  family(b, "chronis_claim_batch_size", "histogram", "Jobs per answered claim.");
  for (size_t i = 0; i < n; i++) {
    sched_labels(&l, &v[i], 1);
    hist_lines(b, "chronis_claim_batch_size", &l, &v[i].m->batch, CHR_HB_BATCH);
  }
  family(b, "chronis_handlers_running", "gauge", "Handlers running now.");
  for (size_t i = 0; i < n; i++) {
    sched_labels(&l, &v[i], 0);
    sample_i64(b, "chronis_handlers_running", &l, v[i].running);
  }
  family(b, "chronis_jobs_queued", "gauge", "Jobs claimed and waiting for a free worker.");
  for (size_t i = 0; i < n; i++) {
    sched_labels(&l, &v[i], 0);
    sample_i64(b, "chronis_jobs_queued", &l, v[i].queued);
  }
  family(b, "chronis_jobs", "gauge",
         "Jobs in the scheduler's store (its scope) by status; counted at most every few seconds.");
  for (size_t i = 0; i < n; i++) {
    sched_labels(&l, &v[i], 1);
    size_t base = l.b.len;
    for (int st = CHR_ST_NONE + 1; st < CHR_ST__COUNT; st++) {
      if (v[i].jobs[st] < 0) continue;
      l.b.len = base;
      label_add(&l, "status", chr_status_names[st]);
      sample_i64(b, "chronis_jobs", &l, v[i].jobs[st]);
    }
  }

  family(b, "chronis_store_operation_duration_seconds", "histogram",
         "Time from the submission of a store request to its answer, by operation.");
  for (int k = 0; k < nstores; k++) {
    for (int op = 0; op < CHR_OP__COUNT; op++) {
      if (stores[k].op[op].count == 0) continue;
      l.b.len = 0;
      label_add(&l, "store", stores[k].kind);
      label_add(&l, "op", chr_store_op_names[op]);
      hist_lines(b, "chronis_store_operation_duration_seconds", &l, &stores[k].op[op], CHR_HB_STORE);
    }
  }
  family(b, "chronis_store_errors_total", "counter",
         "Store requests that failed (unavailable, timeout, ...), by operation.");
  for (int k = 0; k < nstores; k++) {
    for (int op = 0; op < CHR_OP__COUNT; op++) {
      if (stores[k].op[op].count == 0 && stores[k].errors[op] == 0) continue;
      l.b.len = 0;
      label_add(&l, "store", stores[k].kind);
      label_add(&l, "op", chr_store_op_names[op]);
      sample_u64(b, "chronis_store_errors_total", &l, stores[k].errors[op]);
    }
  }
  family(b, "chronis_store_reconnects_total", "counter",
         "Connections to the store made again after one was lost (PostgreSQL, Redis).");
  for (int k = 0; k < nstores; k++) {
    l.b.len = 0;
    label_add(&l, "store", stores[k].kind);
    sample_u64(b, "chronis_store_reconnects_total", &l, stores[k].reconnects);
  }

  family(b, "chronis_script_reloads_total", "counter",
         "Handler and adapter scripts reloaded after a change of their file.");
  sample_u64(b, "chronis_script_reloads_total", NULL, chr_metrics_process.script_reloads);
  family(b, "chronis_script_reload_failures_total", "counter",
         "Script reloads that failed (the previous version stays).");
  sample_u64(b, "chronis_script_reload_failures_total", NULL,
             chr_metrics_process.script_reload_failures);
  if (memory_bytes >= 0) {
    family(b, "chronis_lua_memory_bytes", "gauge", "Memory the Lua state uses.");
    sample_i64(b, "chronis_lua_memory_bytes", NULL, memory_bytes);
  }
  int64_t now = chr_time_now(), start = chr_metrics_process.started_at;
  family(b, "chronis_process_start_time_seconds", "gauge",
         "Start of the process, seconds since the Unix epoch.");
  sample_start(b, "chronis_process_start_time_seconds", NULL);
  chr_buf_printf(b, "%.6f\n", (double)start / 1e6);
  family(b, "chronis_uptime_seconds", "gauge", "Seconds since the process started.");
  sample_start(b, "chronis_uptime_seconds", NULL);
  chr_buf_printf(b, "%.6f\n", (double)(now - start) / 1e6);
  chr_buf_free(&l.b);
  last_len = b->len - start_len;
}
