/* memhist.c - the memory store's run history (memhist.h). A job's entry
 * keeps its runs as a list, newest first, and its count: the runs past
 * its keep count are the tail. A run is in its job's list and in the
 * store-wide list of writes; pruning unlinks it from both. */
#include "memhist.h"

#include <stdlib.h>
#include <string.h>

#include "core/time.h"

struct mhrun {
  chr_runrec_t *r;
  mhjob_t *job;
  mhrun_t *older_in_job; /* its job's list, newest first */
  mhrun_t *prev, *next;  /* the list of writes: prev is older */
};

struct mhjob {
  const char *id; /* the newest run's job_id */
  uint32_t hash;
  int32_t count;
  mhrun_t *newest;
};

static uint32_t hash_id(const chr_memhist_t *h, const char *s) {
  uint64_t x = 1469598103934665603ULL ^ h->seed;
  for (; *s; s++) x = (x ^ (unsigned char)*s) * 1099511628211ULL;
  return (uint32_t)(x ^ (x >> 32));
}

void chr_memhist_init(chr_memhist_t *h, int32_t keep, int32_t days) {
  memset(h, 0, sizeof *h);
  h->keep = keep;
  h->max_age = (int64_t)days * 86400 * CHR_USEC;
  h->seed = (uint64_t)(uintptr_t)h * 0x9e3779b97f4a7c15ULL;
}

static mhjob_t **find_slot(const chr_memhist_t *h, const char *id, uint32_t hash) {
  if (h->cap == 0) return NULL;
  for (size_t i = hash & (h->cap - 1);; i = (i + 1) & (h->cap - 1)) {
    mhjob_t *j = h->slots[i];
    if (j == NULL) return NULL;
    if (j->hash == hash && strcmp(j->id, id) == 0) return &h->slots[i];
  }
}

static void put(chr_memhist_t *h, mhjob_t *j) {
  size_t i = j->hash & (h->cap - 1);
  while (h->slots[i] != NULL) i = (i + 1) & (h->cap - 1);
  h->slots[i] = j;
}

static void grow(chr_memhist_t *h) {
  mhjob_t **old = h->slots;
  size_t oldcap = h->cap;
  h->cap = oldcap ? oldcap * 2 : 64;
  h->slots = chr_calloc(h->cap, sizeof *h->slots);
  for (size_t i = 0; i < oldcap; i++)
    if (old[i] != NULL) put(h, old[i]);
  free(old);
}

/* Backward-shift deletion keeps probe chains whole without tombstones. */
static void remove_slot(chr_memhist_t *h, mhjob_t **slot) {
  size_t i = (size_t)(slot - h->slots), mask = h->cap - 1;
  free(h->slots[i]);
  h->slots[i] = NULL;
  h->njobs--;
  for (size_t j = (i + 1) & mask; h->slots[j] != NULL; j = (j + 1) & mask) {
    size_t home = h->slots[j]->hash & mask;
    /* Move j back into the hole when its home is not in (i, j]. */
    if (((j - home) & mask) >= ((j - i) & mask)) {
      h->slots[i] = h->slots[j];
      h->slots[j] = NULL;
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

/* Drops the oldest run of job j (the tail of its list). */
static void drop_oldest(chr_memhist_t *h, mhjob_t *j) {
  mhrun_t **pp = &j->newest;
  while ((*pp)->older_in_job != NULL) pp = &(*pp)->older_in_job;
  mhrun_t *m = *pp;
  *pp = NULL;
  j->count--;
  unlink_write(h, m);
  /* The job's last run: its key, j->id, is that run's job_id, so the
   * slot goes before the run is freed. */
  if (j->count == 0) remove_slot(h, find_slot(h, j->id, j->hash));
  chr_runrec_free(m->r);
  free(m);
}

void chr_memhist_add(chr_memhist_t *h, chr_runrec_t **run, int64_t now) {
  chr_runrec_t *r = *run;
  int32_t keep = chr_runrec_keep(r, h->keep);
  *run = NULL;
  if (keep <= 0) {
    chr_runrec_free(r);
    return;
  }
  uint32_t hash = hash_id(h, r->job_id);
  mhjob_t **slot = find_slot(h, r->job_id, hash), *j;
  if (slot != NULL) {
    j = *slot;
  } else {
    if ((h->njobs + 1) * 4 > h->cap * 3) grow(h);
    j = chr_calloc(1, sizeof *j);
    j->hash = hash;
    j->id = r->job_id;
    put(h, j);
    h->njobs++;
  }
  mhrun_t *m = chr_malloc(sizeof *m);
  m->r = r;
  m->job = j;
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
   * the order they started for pruning, which only bounds the size. */
  int64_t cutoff = now - h->max_age;
  while (h->oldest != NULL && h->oldest != m && h->oldest->r->started_at < cutoff) {
    mhjob_t *oj = h->oldest->job;
    /* The oldest write of its job is its job's oldest run as a rule;
     * should a job's runs have been written out of order, the job's tail
     * goes, which is older still. */
    drop_oldest(h, oj);
  }
}

void chr_memhist_free(chr_memhist_t *h) {
  for (mhrun_t *m = h->oldest, *next; m; m = next) {
    next = m->next;
    chr_runrec_free(m->r);
    free(m);
  }
  for (size_t i = 0; i < h->cap; i++) free(h->slots[i]);
  free(h->slots);
  memset(h, 0, sizeof *h);
}

static void consider(chr_runrec_t ***found, size_t *n, size_t *cap, const chr_run_filter_t *f,
                     chr_runrec_t *r) {
  if (!chr_run_filter_match(f, r)) return;
  if (*n == *cap) {
    *cap = *cap ? *cap * 2 : 64;
    *found = chr_realloc(*found, *cap * sizeof **found);
  }
  (*found)[(*n)++] = r;
}

void chr_memhist_query(chr_memhist_t *h, chr_store_req_t *req) {
  const chr_run_filter_t *f = req->run_filter;
  chr_runrec_t **found = NULL;
  size_t n = 0, cap = 0;
  if (f != NULL && f->has_ids) {
    for (size_t i = 0; i < f->nids; i++) {
      /* An id listed twice is one job. */
      size_t k;
      for (k = 0; k < i; k++)
        if (strcmp(f->ids[k], f->ids[i]) == 0) break;
      if (k < i) continue;
      mhjob_t **slot = find_slot(h, f->ids[i], hash_id(h, f->ids[i]));
      if (slot == NULL) continue;
      for (mhrun_t *m = (*slot)->newest; m; m = m->older_in_job)
        consider(&found, &n, &cap, f, m->r);
    }
  } else {
    for (mhrun_t *m = h->newest; m; m = m->prev) consider(&found, &n, &cap, f, m->r);
  }
  if (n > 1) qsort(found, n, sizeof *found, chr_runrec_cmp);
  size_t from = (size_t)req->offset < n ? (size_t)req->offset : n;
  size_t to = req->limit >= 0 && (uint64_t)req->limit < n - from ? from + (size_t)req->limit : n;
  for (size_t i = from; i < to; i++) chr_store_req_push_run(req, chr_runrec_copy(found[i]));
  free(found);
}
