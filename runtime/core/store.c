/* store.c - the generic side of the storage contract: the table of its
 * operations, the checks and normalisation of every request before an
 * adapter sees it, the request lifecycle, the rules, filter matching and
 * orders shared by every adapter, and opening an adapter from a URL. */
#include "store.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "metrics.h"
#include "time.h"


const chr_store_op_desc_t chr_store_ops[CHR_OP__COUNT + 1] = {
#define DESC(id, name, cap, in, nparams) [CHR_OP_##id] = {name, (cap) == 0, cap, in, nparams},
    CHR_STORE_OPS(DESC)
#undef DESC
    [CHR_STORE_CLOSE] = {"close", 0, 0, 0, 1},
};

const char *const chr_store_op_names[CHR_OP__COUNT] = {
#define NAME(id, name, cap, in, nparams) [CHR_OP_##id] = name,
    CHR_STORE_OPS(NAME)
#undef NAME
};

void chr_store_req_init(chr_store_req_t *req, chr_store_op_t op) {
  memset(req, 0, sizeof *req);
  req->op = op;
  req->limit = -1;
  req->now = CHR_TIME_NONE;
}

void chr_store_req_reset(chr_store_req_t *req) {
  for (size_t i = 0; i < req->njobs; i++) chr_job_free(req->jobs[i]);
  free(req->jobs);
  for (size_t i = 0; i < req->nhistory; i++) chr_runrec_free(req->history[i]);
  free(req->history);
  free(req->errmsg);
  req->jobs = NULL;
  req->njobs = 0;
  req->history = NULL;
  req->nhistory = 0;
  req->errmsg = NULL;
  req->status = 0;
  req->count = 0;
  req->ok = 0;
}

void chr_store_req_fail(chr_store_req_t *req, int code, const char *fmt, ...) {
  va_list ap;
  char buf[512];
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  free(req->errmsg);
  req->errmsg = chr_strdup(buf);
  req->status = code;
}

void chr_store_req_push_job(chr_store_req_t *req, chr_job_t *job) {
  /* Grow by doubling; the capacity is implied by powers of two. */
  size_t n = req->njobs;
  if ((n & (n - 1)) == 0) req->jobs = chr_realloc(req->jobs, (n ? n * 2 : 1) * sizeof *req->jobs);
  req->jobs[req->njobs++] = job;
}

void chr_store_req_push_run(chr_store_req_t *req, chr_runrec_t *run) {
  size_t n = req->nhistory;
  if ((n & (n - 1)) == 0)
    req->history = chr_realloc(req->history, (n ? n * 2 : 1) * sizeof *req->history);
  req->history[req->nhistory++] = run;
}

int chr_store_record_check(const chr_job_t *j, const char *where, char *err, size_t errlen) {
  if (j == NULL || !chr_job_has(j, CHR_F_JOB_ID) || (j->nullmask & CHR_BIT(CHR_F_JOB_ID)) ||
      j->job_id == NULL || j->job_id[0] == '\0')
    return chr_errf(err, errlen, "%s: field 'job_id' is required (a non-empty string)", where);
  if (!chr_job_has(j, CHR_F_STATUS) || (j->nullmask & CHR_BIT(CHR_F_STATUS)))
    return chr_errf(err, errlen, "job '%s': field 'status' is required", j->job_id);
  if (j->status <= CHR_ST_NONE || j->status >= CHR_ST__COUNT)
    return chr_errf(err, errlen, "job '%s': invalid field 'status': expected " CHR_STATUS_LIST,
                    j->job_id);
  return 0;
}

int chr_store_updates_check(const char *id, const chr_job_t *u, char *err, size_t errlen) {
  if (u == NULL) return 0;
  uint32_t given = u->mask | u->nullmask;
  if ((given & CHR_BIT(CHR_F_JOB_ID)) &&
      ((u->nullmask & CHR_BIT(CHR_F_JOB_ID)) || u->job_id == NULL || strcmp(u->job_id, id) != 0))
    return chr_errf(err, errlen, "job '%s': job_id cannot be changed", id);
  if (u->nullmask & CHR_BIT(CHR_F_STATUS))
    return chr_errf(err, errlen, "job '%s': status cannot be removed", id);
  if ((given & CHR_BIT(CHR_F_STATUS)) && (u->status <= CHR_ST_NONE || u->status >= CHR_ST__COUNT))
    return chr_errf(err, errlen, "job '%s': invalid field 'status': expected " CHR_STATUS_LIST,
                    id);
  return 0;
}

int chr_store_update_only_check(const char *id, const chr_job_t *u, char *err, size_t errlen) {
  static const int leased[] = {CHR_F_CLAIMED_BY, CHR_F_LEASE_UNTIL, CHR_F_ATTEMPT};
  if (u == NULL) return 0;
  uint32_t given = u->mask | u->nullmask;
  if ((u->mask & CHR_BIT(CHR_F_STATUS)) && u->status == CHR_ST_RUNNING)
    return chr_errf(err, errlen, "job '%s': update_job cannot set field 'status' to running: "
                    "a claim does (use compare_and_swap_job)", id);
  for (size_t i = 0; i < sizeof leased / sizeof leased[0]; i++)
    if (given & CHR_BIT(leased[i]))
      return chr_errf(err, errlen, "job '%s': update_job cannot change field '%s': claims, "
                      "completions and lease recovery own it (use compare_and_swap_job)", id,
                      chr_job_fields[leased[i]].name);
  if ((u->mask & CHR_BIT(CHR_F_STATUS)) && u->status == CHR_ST_SCHEDULED &&
      (u->nullmask & CHR_BIT(CHR_F_NEXT_RUN_TIME)))
    return chr_errf(err, errlen, "job '%s': update_job cannot remove field 'next_run_time' of "
                    "a job it makes scheduled (a scheduled job needs a next run time)", id);
  return 0;
}

int chr_store_completion_result(const chr_completion_t *c, const chr_job_t *j) {
  if (j == NULL) return CHR_ENOTFOUND;
  if (!chr_job_has(j, CHR_F_CLAIMED_BY) || j->claimed_by == NULL ||
      strcmp(j->claimed_by, c->owner) != 0)
    return CHR_ECONFLICT;
  return 0;
}

int chr_job_cmp_query(const void *a, const void *b) {
  const chr_job_t *x = *(const chr_job_t *const *)a, *y = *(const chr_job_t *const *)b;
  int64_t tx = chr_job_has(x, CHR_F_NEXT_RUN_TIME) ? x->next_run_time : CHR_TIME_NONE;
  int64_t ty = chr_job_has(y, CHR_F_NEXT_RUN_TIME) ? y->next_run_time : CHR_TIME_NONE;
  if (tx != ty) {
    if (tx == CHR_TIME_NONE) return 1;
    if (ty == CHR_TIME_NONE) return -1;
    return tx < ty ? -1 : 1;
  }
  return strcmp(x->job_id, y->job_id);
}

int chr_job_cmp_claim(const void *a, const void *b) {
  const chr_job_t *x = *(const chr_job_t *const *)a, *y = *(const chr_job_t *const *)b;
  int px = chr_job_priority(x), py = chr_job_priority(y);
  if (px != py) return px > py ? -1 : 1;
  return chr_job_cmp_query(a, b);
}

void chr_store_init(chr_store_t *s, const chr_store_vtable_t *vt, unsigned caps) {
  memset(s, 0, sizeof *s);
  s->vt = vt;
  s->caps = caps;
  s->refs = 1;
}

int chr_store_check_queues(const chr_store_t *s, const chr_claim_queue_t *q, size_t n, char *err,
                           size_t errlen) {
  for (size_t i = 0; i < n; i++) {
    if (q[i].name == NULL) return chr_errf(err, errlen, "queue %zu has no name", i + 1);
    const char *bad = chr_queue_name_problem(q[i].name, strlen(q[i].name));
    if (bad) return chr_errf(err, errlen, "queue '%s': %s", q[i].name, bad);
    for (size_t k = 0; k < i; k++)
      if (strcmp(q[k].name, q[i].name) == 0)
        return chr_errf(err, errlen, "queue '%s' is given twice", q[i].name);
    if (q[i].limit < 1)
      return chr_errf(err, errlen, "queue '%s': its limit must be at least 1, got %lld",
                      q[i].name, (long long)q[i].limit);
    if (q[i].global_limit < 0 || q[i].rate_limit < 0)
      return chr_errf(err, errlen, "queue '%s': a global or rate limit cannot be negative",
                      q[i].name);
    if (q[i].rate_limit > 0 && q[i].rate_period_us <= 0)
      return chr_errf(err, errlen, "queue '%s': a rate limit needs a period > 0", q[i].name);
    /* Limits that only the store can hold for every process: emulated,
     * each process would count only its own claims. */
    const char *what = q[i].global_limit > 0 ? "global_concurrency"
                       : q[i].rate_limit > 0  ? "rate"
                                              : NULL;
    if (what && !(s->caps & CHR_STORE_CAP_QUEUES)) {
      chr_errf(err, errlen, "queue '%s': %s needs a store that enforces it atomically (memory, "
               "sqlite, postgres or redis); %s cannot", q[i].name, what, s->vt->kind);
      return CHR_ENOTSUP;
    }
  }
  return 0;
}

/* The checks of CHR_IN_*, in order. Returns 0 to go on, or 1 when req is
 * answered already: failed (status set), or with nothing to do. */
static int check_request(chr_store_req_t *req) {
  const char *name = chr_store_ops[req->op].name;
  unsigned in = chr_store_ops[req->op].in;
  char err[512];
  if ((in & CHR_IN_ID) && req->id == NULL) {
    chr_store_req_fail(req, CHR_EINVAL, "%s: job id is required", name);
    return 1;
  }
  if ((in & CHR_IN_OWNER) && req->owner == NULL) {
    chr_store_req_fail(req, CHR_EINVAL, "%s: owner is required", name);
    return 1;
  }
  if (((in & CHR_IN_RECORD) && chr_store_record_check(req->job, name, err, sizeof err) != 0) ||
      ((in & CHR_IN_UPDATES) && chr_store_updates_check(req->id, req->job, err, sizeof err) != 0) ||
      (req->op == CHR_OP_UPDATE &&
       chr_store_update_only_check(req->id, req->job, err, sizeof err) != 0)) {
    chr_store_req_fail(req, CHR_EINVAL, "%s", err);
    return 1;
  }
  if (in & CHR_IN_CREATES) {
    for (size_t i = 0; i < req->ncreates; i++) {
      char where[48];
      snprintf(where, sizeof where, "%s: item %zu", name, i + 1);
      /* As with completions: one bad record fails the call before any is
       * written. */
      if (chr_store_record_check(req->creates[i].job, where, err, sizeof err) != 0) {
        chr_store_req_fail(req, CHR_EINVAL, "%s", err);
        return 1;
      }
      req->creates[i].result = 0;
    }
    if (req->ncreates == 0) return 1;
  }
  if (in & CHR_IN_ITEMS) {
    for (size_t i = 0; i < req->nitems; i++) {
      const chr_completion_t *c = &req->items[i];
      if (c->job_id == NULL || c->owner == NULL) {
        chr_store_req_fail(req, CHR_EINVAL, "%s: item %zu needs job_id and owner", name, i + 1);
        return 1;
      }
      /* All items are checked before any is applied: one that is wrong
       * fails the whole call, as a bad argument does. */
      if (!c->remove && chr_store_updates_check(c->job_id, c->updates, err, sizeof err) != 0) {
        chr_store_req_fail(req, CHR_EINVAL, "%s: item %zu: %s", name, i + 1, err);
        return 1;
      }
    }
    if (req->nitems == 0) return 1;
  }
  if ((in & CHR_IN_NOW) && req->now == CHR_TIME_NONE) req->now = req->issued;
  if ((in & CHR_IN_LEASE) && req->lease_us < 0) req->lease_us = 0;
  /* Adapters compute now + lease: both bounded, it cannot overflow, and a
   * lease ends at a time an ISO string carries. */
  if ((in & CHR_IN_NOW) && (req->now < CHR_TIME_MIN || req->now > CHR_TIME_MAX)) {
    chr_store_req_fail(req, CHR_EINVAL, "%s: 'now' %lld is out of range (times are %s)", name,
                       (long long)req->now, CHR_TIME_RANGE);
    return 1;
  }
  if ((in & CHR_IN_LEASE) && req->lease_us > CHR_TIME_MAX - req->now) {
    chr_store_req_fail(req, CHR_EINVAL, "%s: a lease of %lld µs from 'now' ends past %s", name,
                       (long long)req->lease_us, "9999-12-31T23:59:59.999999Z");
    return 1;
  }
  if (req->op == CHR_OP_CLAIM && req->nqueues > 0) {
    int rc = chr_store_check_queues(req->store, req->queues, req->nqueues, err, sizeof err);
    if (rc != 0) {
      chr_store_req_fail(req, rc, "%s: %s", name, err);
      return 1;
    }
  }
  if ((in & CHR_IN_OFFSET) && req->offset < 0) req->offset = 0;
  if (in & CHR_IN_LIMIT) {
    if (req->limit < 0) req->limit = -1;
    if (req->limit == 0) return 1;
  }
  if ((in & CHR_IN_IDS) && req->nids == 0) return 1;
  if (in & CHR_IN_RUNS) {
    for (size_t i = 0; i < req->nruns; i++) {
      const chr_runrec_t *r = req->runs[i];
      if (r == NULL || r->run_id == NULL || r->job_id == NULL ||
          r->outcome <= CHR_OUT_NONE || r->outcome >= CHR_OUT__COUNT) {
        chr_store_req_fail(req, CHR_EINVAL, "%s: run %zu needs run_id, job_id and an outcome",
                           name, i + 1);
        return 1;
      }
    }
    if (req->nruns == 0) return 1;
  }
  if ((in & CHR_IN_RUN_FILTER) && req->run_filter != NULL && req->run_filter->has_ids &&
      req->run_filter->nids == 0)
    return 1;
  if ((in & CHR_IN_FILTER) && req->filter != NULL && req->filter->has_ids &&
      req->filter->nids == 0)
    return 1; /* an empty job_id_in matches nothing */
  if (in & CHR_IN_SCOPE) {
    if (!chr_filter_is_scope(req->filter)) {
      chr_store_req_fail(req, CHR_EINVAL, "%s: a scope holds metadata conditions and the "
                         "store's own filter keys only", name);
      return 1;
    }
    if (chr_filter_is_empty(req->filter)) req->filter = NULL;
  }
  if ((in & (CHR_IN_FILTER | CHR_IN_SCOPE)) && req->filter != NULL && req->filter->nown) {
    for (size_t i = 0; i < req->filter->nown; i++) {
      const char *k = req->filter->own[i].key;
      char **d = req->store->filter_keys;
      while (d && *d && strcmp(*d, k) != 0) d++;
      if (d == NULL || *d == NULL) {
        chr_store_req_fail(req, CHR_EINVAL, "%s: unknown filter key '%s' (the %s store has no "
                           "filter keys of its own by that name)", name, k,
                           req->store->vt->kind);
        return 1;
      }
    }
  }
  return 0;
}

/* The answer of a request the adapter (or the emulation) took: counted,
 * then handed to the caller. The caller's callback is back in place
 * first, so that it may submit the request again. */
static void answered(chr_store_req_t *req) {
  req->cb = req->caller_cb;
  chr_metrics_store_op(req->metrics, req->op, req->status,
                       (double)(chr_time_mono() - req->sent_mono) / 1e6);
  if (req->cb) req->cb(req);
}

/* Every request of the core, the engine's and the Lua methods' alike,
 * passes here: the one place where store operations are timed and their
 * failures counted, whatever the adapter. */
int chr_store_submit(chr_store_t *s, chr_store_req_t *req) {
  if (s->metrics == NULL) s->metrics = chr_metrics_store(s->vt->kind);
  if ((unsigned)req->op >= CHR_OP__COUNT) return CHR_EINVAL;
  if (s->closed) {
    s->metrics->errors[req->op]++;
    return CHR_EUNAVAIL;
  }
  req->store = s;
  req->issued = chr_time_now();
  if (check_request(req)) {
    if (req->cb) req->cb(req);
    return 0;
  }
  unsigned need = chr_store_ops[req->op].cap;
  if ((chr_store_ops[req->op].in & CHR_IN_SCOPE) && req->filter != NULL)
    need |= CHR_STORE_CAP_SCOPE;
  /* Queues the store cannot select itself: the emulation does, with the
   * per-claim limits (global and rate limits were refused above). */
  if (req->op == CHR_OP_CLAIM && req->nqueues > 0) need |= CHR_STORE_CAP_QUEUES;
  req->caller_cb = req->cb;
  req->cb = answered;
  req->metrics = s->metrics;
  req->sent_mono = chr_time_mono();
  int rc = need && (s->caps & need) != need ? chr__store_emulate(s, req) : s->vt->submit(s, req);
  if (rc != 0) { /* refused: the adapter never calls back */
    req->cb = req->caller_cb;
    s->metrics->errors[req->op]++;
  }
  return rc;
}

void chr_store_retain(chr_store_t *s) {
  s->refs++;
}

void chr_store_release(chr_store_t *s) {
  if (--s->refs > 0) return;
  free(s->url);
  s->url = NULL;
  s->vt->close(s);
}

void chr_store_close(chr_store_t *s) {
  if (s == NULL || s->closed) return;
  s->closed = 1;
  chr_store_release(s);
}

int64_t chr_job_wake_time(const chr_job_t *j) {
  if (j != NULL && j->status == CHR_ST_SCHEDULED && chr_job_has(j, CHR_F_NEXT_RUN_TIME))
    return j->next_run_time;
  return CHR_TIME_NONE;
}

static void wake(chr_store_t *s, int64_t when, const chr_job_t *j) {
  for (chr_store_watch_t *w = s->watchers, *next; w; w = next) {
    next = w->next; /* a watcher may unlink itself */
    w->cb(w->data, when, j);
  }
}

void chr_store_wake(chr_store_t *s, int64_t when) {
  wake(s, when, NULL);
}

void chr_store_wake_job(chr_store_t *s, const chr_job_t *j) {
  int64_t when = chr_job_wake_time(j);
  if (when != CHR_TIME_NONE) wake(s, when, j);
}

void chr_store_watch(chr_store_t *s, chr_store_watch_t *w) {
  w->next = s->watchers;
  s->watchers = w;
}

void chr_store_unwatch(chr_store_t *s, chr_store_watch_t *w) {
  for (chr_store_watch_t **p = &s->watchers; *p; p = &(*p)->next) {
    if (*p == w) {
      *p = w->next;
      return;
    }
  }
}
