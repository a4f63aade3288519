/* history.c - run records (history.h): built from the engine's fields or
 * read from their JSON text, matched against query_runs filters, ordered
 * newest first. */
#include "history.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "store.h"
#include "time.h"
#include "url.h"

const char *const chr_outcome_names[CHR_OUT__COUNT] = {
    [CHR_OUT_NONE] = NULL,         [CHR_OUT_OK] = "ok",
    [CHR_OUT_ERROR] = "error",     [CHR_OUT_TIMEOUT] = "timeout",
    [CHR_OUT_SKIPPED] = "skipped", [CHR_OUT_INTERRUPTED] = "interrupted",
    [CHR_OUT_SNOOZED] = "snoozed", [CHR_OUT_CANCELLED] = "cancelled",
};

int chr_history_opt(const chr_opts_t *o, const char *key, const char *val,
                    chr_history_opts_t *h, char *err, size_t errlen) {
  int is_keep = strcmp(key, "history") == 0;
  if (!is_keep && strcmp(key, "history_days") != 0) return 0;
  char *end;
  long v = strtol(val, &end, 10);
  long max = is_keep ? 100000 : 36500;
  if (*val == '\0' || *end != '\0' || v < (is_keep ? 0 : 1) || v > max)
    return chr_opts_fail(o, err, errlen, "option '%s' must be an integer %d..%ld, got '%s'", key,
                         is_keep ? 0 : 1, max, val);
  if (is_keep) h->keep = (int32_t)v;
  else h->days = (int32_t)v;
  return 1;
}

void chr_runrec_init(chr_runrec_t *r) {
  memset(r, 0, sizeof *r);
  r->scheduled_at = r->started_at = r->ended_at = CHR_TIME_NONE;
  r->keep = -1;
}

#define RUNREC_STRINGS(X) \
  X(run_id) X(job_id) X(name) X(func_name) X(node) X(metadata) X(error_code) X(error_message)

chr_runrec_t *chr_runrec_copy(const chr_runrec_t *src) {
  return chr_runrec_copy_after(src, 0);
}

chr_runrec_t *chr_runrec_copy_after(const chr_runrec_t *src, size_t prefix) {
  size_t len = prefix + sizeof *src;
#define LEN(f) if (src->f) len += strlen(src->f) + 1;
  RUNREC_STRINGS(LEN)
#undef LEN
  chr_runrec_t *r = (chr_runrec_t *)((char *)chr_malloc(len) + prefix);
  *r = *src;
  char *p = (char *)(r + 1);
#define COPY(f)                        \
  if (src->f) {                        \
    size_t n = strlen(src->f) + 1;     \
    memcpy(p, src->f, n);              \
    r->f = p;                          \
    p += n;                            \
  }
  RUNREC_STRINGS(COPY)
#undef COPY
  return r;
}

void chr_runrec_free(chr_runrec_t *r) {
  free(r);
}

static void add_key(chr_buf_t *b, const char *k, int *first) {
  chr_buf_addc(b, *first ? '{' : ',');
  *first = 0;
  chr_json_add_string(b, k, strlen(k));
  chr_buf_addc(b, ':');
}

static void add_str(chr_buf_t *b, const char *k, const char *v, int *first) {
  if (v == NULL) return;
  add_key(b, k, first);
  chr_json_add_string(b, v, strlen(v));
}

static void add_time(chr_buf_t *b, const char *k, int64_t us, int *first) {
  char iso[CHR_TIME_BUFSZ];
  if (us == CHR_TIME_NONE) return;
  chr_time_format(us, iso);
  add_str(b, k, iso, first);
}

/* Members in canonical (sorted) order, so equal runs give equal text. */
void chr_runrec_to_json(const chr_runrec_t *r, chr_buf_t *b) {
  int first = 1;
  if (r->attempt > 0) {
    add_key(b, "attempt", &first);
    chr_buf_printf(b, "%d", (int)r->attempt);
  }
  if (r->started_at != CHR_TIME_NONE && r->ended_at != CHR_TIME_NONE) {
    add_key(b, "duration", &first);
    chr__json_add_double(b, (double)(r->ended_at - r->started_at) / 1e6);
  }
  add_time(b, "ended_at", r->ended_at, &first);
  add_str(b, "error_code", r->error_code, &first);
  add_str(b, "error_message", r->error_message, &first);
  add_str(b, "func_name", r->func_name, &first);
  add_str(b, "job_id", r->job_id, &first);
  if (r->metadata != NULL) {
    add_key(b, "metadata", &first);
    chr_buf_adds(b, r->metadata);
  }
  add_str(b, "name", r->name, &first);
  add_str(b, "node", r->node, &first);
  add_str(b, "outcome", r->outcome > 0 && r->outcome < CHR_OUT__COUNT
                            ? chr_outcome_names[r->outcome] : NULL, &first);
  add_str(b, "run_id", r->run_id, &first);
  add_time(b, "scheduled_at", r->scheduled_at, &first);
  add_time(b, "started_at", r->started_at, &first);
  if (first) chr_buf_addc(b, '{');
  chr_buf_addc(b, '}');
}

/* One member of a run's text, by key. Returns 0, or CHR_EINVAL. */
static int read_member(chr_runrec_t *r, char **strs, chr_json_span_t k, chr_json_span_t v,
                       char *err, size_t errlen) {
  static const char *const str_keys[] = {"run_id", "job_id", "name", "func_name", "node",
                                         "metadata", "error_code", "error_message"};
  static const char *const time_keys[] = {"scheduled_at", "started_at", "ended_at"};
  char key[32];
  if (k.n >= sizeof key || chr_json_is_null(v)) return 0;
  memcpy(key, k.p, k.n);
  key[k.n] = '\0';
  for (int i = 0; i < 8; i++) {
    if (strcmp(key, str_keys[i]) != 0) continue;
    if (i == 5) { /* metadata: kept as its JSON text */
      if (v.p[0] != '{') return chr_errf(err, errlen, "run: invalid field 'metadata': expected an object");
      strs[i] = chr_malloc(v.n + 1);
      memcpy(strs[i], v.p, v.n);
      strs[i][v.n] = '\0';
      return 0;
    }
    strs[i] = chr_json_unescape(v.p, v.n);
    if (strs[i] == NULL) return chr_errf(err, errlen, "run: invalid field '%s': expected a string", key);
    return 0;
  }
  for (int i = 0; i < 3; i++) {
    if (strcmp(key, time_keys[i]) != 0) continue;
    char *t = chr_json_unescape(v.p, v.n);
    int64_t us;
    int rc = t ? chr_time_parse(t, strlen(t), NULL, &us, NULL, 0) : CHR_EINVAL;
    free(t);
    if (rc != 0) return chr_errf(err, errlen, "run: invalid field '%s': expected an ISO time", key);
    if (i == 0) r->scheduled_at = us;
    else if (i == 1) r->started_at = us;
    else r->ended_at = us;
    return 0;
  }
  if (strcmp(key, "attempt") == 0) {
    long long n;
    double d;
    int isf = 0;
    const char *e = chr__json_skip_number(v.p, v.p + v.n, &isf);
    if (e == NULL || isf || !chr__json_number(v.p, v.n, 0, &n, &d) || n < 0 || n > INT32_MAX)
      return chr_errf(err, errlen, "run: invalid field 'attempt': expected an integer >= 0");
    r->attempt = (int32_t)n;
  } else if (strcmp(key, "outcome") == 0) {
    char *o = chr_json_unescape(v.p, v.n);
    r->outcome = o ? chr_enum_parse(chr_outcome_names, CHR_OUT__COUNT, o) : -1;
    free(o);
  }
  return 0; /* duration is derived; other keys are not kept */
}

int chr_runrec_from_json(const char *s, size_t len, chr_runrec_t **out, char *err, size_t errlen) {
  const char *end = s + len, *it = chr__json_ws(s, end);
  chr_json_span_t k, v;
  chr_runrec_t r;
  char *strs[8] = {0};
  int rc = 0, m;
  *out = NULL;
  chr_runrec_init(&r);
  if (it == end || *it != '{' || chr_json_skip(s, end) == NULL)
    return chr_errf(err, errlen, "run: expected a JSON object");
  while (rc == 0 && (m = chr_json_next_member(&it, end, &k, &v)) == 1)
    rc = read_member(&r, strs, k, v, err, errlen);
  if (rc == 0 && (strs[0] == NULL || strs[0][0] == '\0'))
    rc = chr_errf(err, errlen, "run: field 'run_id' is required (a non-empty string)");
  else if (rc == 0 && (strs[1] == NULL || strs[1][0] == '\0'))
    rc = chr_errf(err, errlen, "run '%s': field 'job_id' is required (a non-empty string)", strs[0]);
  else if (rc == 0 && r.started_at == CHR_TIME_NONE)
    rc = chr_errf(err, errlen, "run '%s': field 'started_at' is required (an ISO time)", strs[0]);
  else if (rc == 0 && r.outcome <= 0)
    rc = chr_errf(err, errlen, "run '%s': invalid field 'outcome': expected "
                  CHR_OUTCOME_LIST, strs[0]);
  if (rc == 0) {
    r.run_id = strs[0], r.job_id = strs[1], r.name = strs[2], r.func_name = strs[3];
    r.node = strs[4], r.metadata = strs[5], r.error_code = strs[6], r.error_message = strs[7];
    *out = chr_runrec_copy(&r);
  }
  for (int i = 0; i < 8; i++) free(strs[i]);
  return rc;
}

void chr_run_filter_init(chr_run_filter_t *f) {
  memset(f, 0, sizeof *f);
  f->started_gte = f->started_lte = CHR_TIME_NONE;
}

void chr_run_filter_free(chr_run_filter_t *f) {
  for (size_t i = 0; i < f->nids; i++) free(f->ids[i]);
  free(f->ids);
  for (size_t i = 0; i < f->nmeta; i++) chr_meta_filter_free(&f->meta[i]);
  free(f->meta);
  free(f->func_name);
  chr_run_filter_init(f);
}

int chr_run_filter_match(const chr_run_filter_t *f, const chr_runrec_t *r) {
  if (f == NULL) return 1;
  if (f->outcome_mask && !(f->outcome_mask & (1u << r->outcome))) return 0;
  if (f->started_gte != CHR_TIME_NONE && r->started_at < f->started_gte) return 0;
  if (f->started_lte != CHR_TIME_NONE && r->started_at > f->started_lte) return 0;
  if (f->func_name && (r->func_name == NULL || strcmp(f->func_name, r->func_name) != 0)) return 0;
  if (f->has_ids) {
    size_t i;
    for (i = 0; i < f->nids; i++)
      if (strcmp(f->ids[i], r->job_id) == 0) break;
    if (i == f->nids) return 0;
  }
  for (size_t i = 0; i < f->nmeta; i++)
    if (!chr_meta_filter_match(&f->meta[i], r->metadata, r->metadata ? strlen(r->metadata) : 0))
      return 0;
  return 1;
}

int chr_runrec_cmp(const void *a, const void *b) {
  const chr_runrec_t *x = *(const chr_runrec_t *const *)a, *y = *(const chr_runrec_t *const *)b;
  if (x->started_at != y->started_at) return x->started_at > y->started_at ? -1 : 1;
  return -strcmp(x->run_id, y->run_id);
}
