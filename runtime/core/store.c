/* store.c - the generic side of the storage contract: request lifecycle,
 * filter matching and query order shared by every adapter, and opening an
 * adapter from a URL. */
#include "store.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "time.h"


const char *const chr_store_op_names[CHR_OP__COUNT] = {
    "create_job", "get_job",      "get_jobs_batch",         "update_job",
    "compare_and_swap_job", "delete_job", "query_jobs",     "count_jobs",
    "claim_due_jobs",       "complete_jobs", "recover_expired_leases", "extend_leases",
    "next_due_time"};

void chr_store_req_init(chr_store_req_t *req, chr_store_op_t op) {
  memset(req, 0, sizeof *req);
  req->op = op;
  req->limit = -1;
  req->now = CHR_TIME_NONE;
}

void chr_store_req_reset(chr_store_req_t *req) {
  for (size_t i = 0; i < req->njobs; i++) chr_job_free(req->jobs[i]);
  free(req->jobs);
  free(req->errmsg);
  req->jobs = NULL;
  req->njobs = 0;
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

void chr_filter_init(chr_filter_t *f) {
  memset(f, 0, sizeof *f);
  f->nrt_lte = f->nrt_gte = f->upd_lte = f->upd_gte = CHR_TIME_NONE;
}

void chr_filter_free(chr_filter_t *f) {
  for (size_t i = 0; i < f->nmeta; i++) {
    free(f->meta[i].path);
    free(f->meta[i].value);
  }
  free(f->meta);
  for (size_t i = 0; i < f->nids; i++) free(f->ids[i]);
  free(f->ids);
  chr_filter_init(f);
}

static int in_range(int64_t v, int64_t lte, int64_t gte) {
  if (lte == CHR_TIME_NONE && gte == CHR_TIME_NONE) return 1;
  if (v == CHR_TIME_NONE) return 0; /* nil never satisfies a bound */
  return (lte == CHR_TIME_NONE || v <= lte) && (gte == CHR_TIME_NONE || v >= gte);
}

int chr_filter_match(const chr_filter_t *f, const chr_job_t *j) {
  if (f == NULL) return 1;
  if (f->status_mask && !(f->status_mask & (1u << j->status))) return 0;
  if (f->trigger_type && (!chr_job_has(j, CHR_F_TRIGGER_TYPE) || j->trigger_type != f->trigger_type))
    return 0;
  int64_t nrt = chr_job_has(j, CHR_F_NEXT_RUN_TIME) ? j->next_run_time : CHR_TIME_NONE;
  int64_t upd = chr_job_has(j, CHR_F_UPDATED_AT) ? j->updated_at : CHR_TIME_NONE;
  if (!in_range(nrt, f->nrt_lte, f->nrt_gte)) return 0;
  if (!in_range(upd, f->upd_lte, f->upd_gte)) return 0;
  if (f->has_ids) {
    size_t i;
    for (i = 0; i < f->nids; i++)
      if (strcmp(f->ids[i], j->job_id) == 0) break;
    if (i == f->nids) return 0;
  }
  for (size_t i = 0; i < f->nmeta; i++) {
    chr_json_span_t meta, v;
    if (j->extra == NULL || !chr_json_lookup(j->extra, strlen(j->extra), "metadata", &meta))
      return 0;
    if (!chr_json_lookup(meta.p, meta.n, f->meta[i].path, &v)) return 0;
    if (strlen(f->meta[i].value) != v.n || memcmp(f->meta[i].value, v.p, v.n) != 0) return 0;
  }
  return 1;
}


const char *chr_store_updates_error(const char *id, const chr_job_t *u) {
  if (u == NULL) return NULL;
  uint32_t given = u->mask | u->nullmask;
  if ((given & CHR_BIT(CHR_F_JOB_ID)) &&
      ((u->nullmask & CHR_BIT(CHR_F_JOB_ID)) || u->job_id == NULL || strcmp(u->job_id, id) != 0))
    return "job_id cannot be changed";
  if ((given & CHR_BIT(CHR_F_STATUS)) &&
      ((u->nullmask & CHR_BIT(CHR_F_STATUS)) || u->status <= CHR_ST_NONE ||
       u->status >= CHR_ST__COUNT))
    return "status must be pending, scheduled, running, paused or failed";
  return NULL;
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

void chr_store_init(chr_store_t *s, const chr_store_vtable_t *vt, unsigned caps) {
  memset(s, 0, sizeof *s);
  s->vt = vt;
  s->caps = caps;
  s->refs = 1;
}

int chr_store_submit(chr_store_t *s, chr_store_req_t *req) {
  if (s->closed) return CHR_EUNAVAIL;
  req->store = s;
  req->issued = chr_time_now();
  unsigned need = chr__store_op_cap(req->op);
  if (need && !(s->caps & need)) return chr__store_emulate(s, req);
  return s->vt->submit(s, req);
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

void chr_store_wake(chr_store_t *s, int64_t when) {
  for (chr_store_watch_t *w = s->watchers, *next; w; w = next) {
    next = w->next; /* a watcher may unlink itself */
    w->cb(w->data, when);
  }
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
