/* memhist.c - the memory store's run history (memhist.h). A run is one
 * allocation: its links, then its record (chr_runrec_copy_after). It is in
 * its job's list, newest first, and in the store-wide list of writes;
 * pruning unlinks it from both. Job entries live in the table itself, so
 * a run of a new job costs one allocation. */
#include "memhist.h"

#include <stdlib.h>
#include <string.h>

#include "core/time.h"

struct mhrun {
  mhrun_t *older_in_job; /* its job's list, newest first */
  mhrun_t *prev, *next;  /* the list of writes: prev is older */
  uint32_t hash;         /* of its job id */
};

#define REC(m) ((chr_runrec_t *)((m) + 1))

static uint32_t hash_id(const chr_memhist_t *h, const char *s) {
  uint64_t x = 1469598103934665603ULL ^ h->seed;
  for (; *s; s++) x = (x ^ (unsigned char)*s) * 1099511628211ULL;
  x ^= x >> 29;
  x *= 0xbf58476d1ce4e5b9ULL;
  return (uint32_t)(x ^ (x >> 32));
}

void chr_memhist_init(chr_memhist_t *h, int32_t keep, int32_t days) {
  memset(h, 0, sizeof *h);
  h->keep = keep;
  h->max_age = (int64_t)days * 86400 * CHR_USEC;
  h->seed = (uint64_t)(uintptr_t)h * 0x9e3779b97f4a7c15ULL;
}

static mhjob_t *find_slot(const chr_memhist_t *h, const char *id, uint32_t hash) {
  if (h->cap == 0) return NULL;
  for (size_t i = hash & (h->cap - 1);; i = (i + 1) & (h->cap - 1)) {
    mhjob_t *j = &h->slots[i];
    if (j->id == NULL) return NULL;
    if (j->hash == hash && strcmp(j->id, id) == 0) return j;
  }
}

static mhjob_t *empty_slot(chr_memhist_t *h, uint32_t hash) {
  size_t i = hash & (h->cap - 1);
  while (h->slots[i].id != NULL) i = (i + 1) & (h->cap - 1);
  return &h->slots[i];
}

static void grow(chr_memhist_t *h) {
  mhjob_t *old = h->slots;
  size_t oldcap = h->cap;
  h->cap = oldcap ? oldcap * 2 : 64;
  h->slots = chr_calloc(h->cap, sizeof *h->slots);
  for (size_t i = 0; i < oldcap; i++)
    if (old[i].id != NULL) *empty_slot(h, old[i].hash) = old[i];
  free(old);
}

/* Backward-shift deletion keeps probe chains whole without tombstones. */
static void remove_slot(chr_memhist_t *h, mhjob_t *slot) {
  size_t i = (size_t)(slot - h->slots), mask = h->cap - 1;
  h->slots[i].id = NULL;
  h->njobs--;
  for (size_t j = (i + 1) & mask; h->slots[j].id != NULL; j = (j + 1) & mask) {
    size_t home = h->slots[j].hash & mask;
    /* Move j back into the hole when its home is not in (i, j]. */
    if (((j - home) & mask) >= ((j - i) & mask)) {
      h->slots[i] = h->slots[j];
      h->slots[j].id = NULL;
      i = j;
    }
  }
}

static void unlink_write(chr_memhist_t *h, mhrun_t *m) {
  if (m->prev) m->prev->next = m->next;
  else h->oldest = m->next;
  if (m->next) m->next->prev = m->prev;
  else h->newest = m->prev;
  h->nruns--;
}

/* Drops the oldest run of job j (the tail of its list); the job's entry
 * goes with its last run. */
static void drop_oldest(chr_memhist_t *h, mhjob_t *j) {
  mhrun_t **pp = &j->newest;
  while ((*pp)->older_in_job != NULL) pp = &(*pp)->older_in_job;
  mhrun_t *m = *pp;
  *pp = NULL;
  unlink_write(h, m);
  free(m);
  if (--j->count == 0) remove_slot(h, j);
}

int chr_memhist_add(chr_memhist_t *h, const chr_runrec_t *run, int64_t now) {
  int32_t keep = chr_runrec_keep(run, h->keep);
  if (keep <= 0) return 0;
  uint32_t hash = hash_id(h, run->job_id);
  mhjob_t *j = find_slot(h, run->job_id, hash);
  if (j == NULL) {
    if ((h->njobs + 1) * 2 > h->cap) grow(h);
    j = empty_slot(h, hash);
    j->hash = hash;
    j->count = 0;
    j->newest = NULL;
    h->njobs++;
  }
  chr_runrec_t *r = chr_runrec_copy_after(run, sizeof(mhrun_t));
  mhrun_t *m = (mhrun_t *)r - 1;
  m->hash = hash;
  m->older_in_job = j->newest;
  j->newest = m;
  j->id = r->job_id; /* the key lives as long as the newest run */
  j->count++;
  m->next = NULL;
  m->prev = h->newest;
  if (h->newest) h->newest->next = m;
  else h->oldest = m;
  h->newest = m;
  h->nruns++;
  while (j->count > keep) drop_oldest(h, j); /* keep >= 1: j stays */
  /* Age: the list of writes is in the order runs ended, close enough to
   * the order they started for pruning, which only bounds the size. The
   * oldest write of its job is its job's oldest run as a rule; should a
   * job's runs have been written out of order, the job's tail goes, which
   * is older still. */
  int64_t cutoff = now - h->max_age;
  while (h->oldest != NULL && h->oldest != m && REC(h->oldest)->started_at < cutoff) {
    mhrun_t *o = h->oldest;
    drop_oldest(h, find_slot(h, REC(o)->job_id, o->hash));
  }
  return 1;
}

void chr_memhist_free(chr_memhist_t *h) {
  for (mhrun_t *m = h->oldest, *next; m; m = next) {
    next = m->next;
    free(m);
  }
  free(h->slots);
  memset(h, 0, sizeof *h);
}

/* The runs a query keeps: with `want` set, only the first `want` in query
 * order (chr_runrec_cmp), in a heap whose root is the last of them, so a
 * page of a long history costs n log(want) rather than a sort of every
 * run; with want 0, every match. */
typedef struct pick {
  chr_runrec_t **v;
  size_t n, cap, want;
} pick_t;

static int after(const chr_runrec_t *a, const chr_runrec_t *b) {
  return chr_runrec_cmp(&a, &b) > 0;
}

static void swap(chr_runrec_t **v, size_t i, size_t j) {
  chr_runrec_t *t = v[i];
  v[i] = v[j];
  v[j] = t;
}

static void consider(pick_t *p, const chr_run_filter_t *f, chr_runrec_t *r) {
  if (!chr_run_filter_match(f, r)) return;
  if (p->want == 0 || p->n < p->want) {
    if (p->n == p->cap) {
      p->cap = p->cap ? p->cap * 2 : 64;
      p->v = chr_realloc(p->v, p->cap * sizeof *p->v);
    }
    size_t i = p->n++;
    p->v[i] = r;
    if (p->want == 0) return;
    while (i > 0 && after(p->v[i], p->v[(i - 1) / 2])) { /* the latest rises to the root */
      swap(p->v, i, (i - 1) / 2);
      i = (i - 1) / 2;
    }
    return;
  }
  if (!after(p->v[0], r)) return; /* comes after every run kept */
  p->v[0] = r;
  for (size_t i = 0;;) {
    size_t l = 2 * i + 1, m = i;
    if (l < p->n && after(p->v[l], p->v[m])) m = l;
    if (l + 1 < p->n && after(p->v[l + 1], p->v[m])) m = l + 1;
    if (m == i) break;
    swap(p->v, i, m);
    i = m;
  }
}

void chr_memhist_query(chr_memhist_t *h, chr_store_req_t *req) {
  const chr_run_filter_t *f = req->run_filter;
  pick_t p = {0};
  if (req->limit >= 0 && (uint64_t)req->limit < SIZE_MAX / 2 && (uint64_t)req->offset < SIZE_MAX / 2)
    p.want = (size_t)req->offset + (size_t)req->limit;
  if (req->limit == 0) return;
  if (f != NULL && f->has_ids) {
    for (size_t i = 0; i < f->nids; i++) {
      /* An id listed twice is one job. */
      size_t k;
      for (k = 0; k < i; k++)
        if (strcmp(f->ids[k], f->ids[i]) == 0) break;
      if (k < i) continue;
      mhjob_t *j = find_slot(h, f->ids[i], hash_id(h, f->ids[i]));
      if (j == NULL) continue;
      for (mhrun_t *m = j->newest; m; m = m->older_in_job) consider(&p, f, REC(m));
    }
  } else {
    for (mhrun_t *m = h->newest; m; m = m->prev) consider(&p, f, REC(m));
  }
  chr_runrec_t **found = p.v;
  size_t n = p.n;
  if (n > 1) qsort(found, n, sizeof *found, chr_runrec_cmp);
  size_t from = (size_t)req->offset < n ? (size_t)req->offset : n;
  size_t to = req->limit >= 0 && (uint64_t)req->limit < n - from ? from + (size_t)req->limit : n;
  for (size_t i = from; i < to; i++) chr_store_req_push_run(req, chr_runrec_copy(found[i]));
  free(found);
}
