/* memory.c - the in-process store ("memory:"): every request is answered
 * synchronously, inside submit.
 *
 * Each job is one allocation, a record that embeds the chr_job_t and two
 * red-black nodes (rbtree.h), plus the job's own strings:
 *  - a hash table (open addressing, linear probing, backward-shift delete)
 *    maps job_id to the record;
 *  - by_status[s] orders the jobs of status s by (next_run_time, nil last,
 *    job_id), the order of query results, so a query with a status filter
 *    walks only that status, from a lower-bound seek when next_run_time_gte
 *    is given, and stops at next_run_time_lte. A query without a status
 *    filter merges the five per-status orders (at most five cursors, one
 *    comparison each per result) instead of keeping a sixth, global order:
 *    that would cost three more words on every job for a rarer query;
 *  - the aux node is in `due` while the job is scheduled with a
 *    next_run_time, ordered by (priority desc, next_run_time, job_id), and
 *    in `lease` while it is running with a lease_until, ordered by
 *    (lease_until, seq). A job is never in both, so one node serves.
 * Ties by job_id compare the ids' first 8 bytes, kept in the record
 * (idkey), before the strings: the jobs of a burst share their times, so
 * every comparison on the way down a tree reached the ids, each in an
 * allocation of its own. Recovery order among equal leases is nobody's
 * contract, so the lease order ends with the record's creation number
 * instead, which needs no id at all.
 * Claim walks `due` from the front, takes due jobs of the highest priority
 * and seeks past a priority whose earliest job is not due yet: O(log n) per
 * job claimed and per priority level skipped. Recover walks `lease` from
 * the front. Next-due is the front of by_status[scheduled]. Per-status
 * counts are the trees' counts.
 *
 * A claim with queues (store.h) takes only their jobs, each queue within
 * its limits: its running jobs are counted over by_status[running], and
 * its rate window is one entry of `rates`, all inside the one call that
 * claims, so every scheduler on the store sees the same counts.
 *
 * With index_metadata, the record also has one link per indexed path into
 * memindex.h's per-value trees, kept by the same steps.
 *
 * Index keys are read from the record itself, so every write takes the
 * record out of its trees, changes it, and puts it back. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "intern.h"
#include "memhist.h"
#include "memindex.h"
#include "core/job.h"
#include "rbtree.h"
#include "core/store.h"
#include "core/time.h"

enum { AUX_NONE = CHR_MEMIDX_AUX_NONE, AUX_DUE = CHR_MEMIDX_AUX_DUE,
       AUX_LEASE = CHR_MEMIDX_AUX_LEASE };

typedef struct mrec {
  chr_job_t job;
  chr_rb_node_t by_status;
  chr_rb_node_t aux;
  uint64_t idkey; /* the first 8 bytes of job_id, big-endian, 0-padded */
  uint64_t seq;   /* the store's count of records made when this one was */
  uint32_t hash;
  uint8_t aux_in; /* AUX_* */
  uint8_t mark;   /* scratch: de-duplicates id lists */
  /* With index_metadata, one chr_memidx_link_t per indexed path follows
   * in the same allocation (rec_links): nothing is spent without one. */
} mrec_t;

typedef struct mem_store {
  chr_store_t base;
  mrec_t **slots;
  uint32_t *hashes;
  size_t cap, count; /* cap is a power of two, or 0 */
  uint64_t seed;
  int64_t last_stamp;
  uint64_t nmade; /* records made: their seq */
  chr_rb_tree_t by_status[CHR_ST__COUNT];
  chr_rb_tree_t due, lease;
  chr_intern_t strings; /* shared copies of the fields in interned[] */
  chr_memhist_t hist;
  chr_memindex_t ix;
  /* Per queue with a rate limit: the window its claims are counted in
   * (the start of [start, start + period)) and how many it took. */
  struct mrate {
    char *queue;
    int64_t start, used;
  } *rates;
  size_t nrates;
} mem_store_t;

/* A search key for the trees; id NULL sorts before every id. */
typedef struct mkey {
  int64_t prio, t;
  const char *id;
} mkey_t;

#define REC_OF(node, member) CHR_CONTAINER_OF(node, mrec_t, member)

static int64_t rec_nrt(const mrec_t *r) {
  return chr_memidx_nrt(&r->job);
}

/* The first 8 bytes of id as a number whose order is strcmp's. */
static uint64_t id_key(const char *id) {
  uint64_t k = 0;
  int i = 0;
  for (; i < 8 && id[i]; i++) k = k << 8 | (unsigned char)id[i];
  return i ? k << (8 * (8 - i)) : 0; /* a shift by 64 would be undefined */
}

/* strcmp's order of the job ids, from idkey first. Equal keys whose last
 * byte is 0 hold the whole of both ids: the ids are equal. */
static int rec_id_cmp(const mrec_t *a, const mrec_t *b) {
  if (a->idkey != b->idkey) return a->idkey < b->idkey ? -1 : 1;
  if ((a->idkey & 0xff) == 0) return 0;
  return strcmp(a->job.job_id + 8, b->job.job_id + 8);
}

/* The orders are memindex.h's (the index's trees agree with these), with
 * job_id compared by rec_id_cmp. */
static int rec_cmp_query(const mrec_t *a, const mrec_t *b) {
  int c = chr_memidx_cmp_nrt(rec_nrt(a), rec_nrt(b));
  return c ? c : rec_id_cmp(a, b);
}

static int status_cmp(const chr_rb_node_t *a, const chr_rb_node_t *b) {
  return rec_cmp_query(REC_OF(a, by_status), REC_OF(b, by_status));
}

static int status_keycmp(const void *key, const chr_rb_node_t *n) {
  const mkey_t *k = key;
  const mrec_t *r = REC_OF(n, by_status);
  int c = chr_memidx_cmp_nrt(k->t, rec_nrt(r));
  if (c) return c;
  return k->id ? strcmp(k->id, r->job.job_id) : -1;
}

static int due_cmp(const chr_rb_node_t *a, const chr_rb_node_t *b) {
  const mrec_t *x = REC_OF(a, aux), *y = REC_OF(b, aux);
  int c = chr_memidx_cmp_i64(chr_job_priority(&y->job), chr_job_priority(&x->job));
  if (c) return c;
  c = chr_memidx_cmp_i64(x->job.next_run_time, y->job.next_run_time);
  return c ? c : rec_id_cmp(x, y);
}

/* Jobs in `due` always have a time, so plain comparison; key.t INT64_MIN
 * sorts first within a priority. */
static int due_keycmp(const void *key, const chr_rb_node_t *n) {
  const mkey_t *k = key;
  const mrec_t *r = REC_OF(n, aux);
  int c = chr_memidx_cmp_i64(chr_job_priority(&r->job), k->prio);
  if (c) return c;
  c = chr_memidx_cmp_i64(k->t, r->job.next_run_time);
  if (c) return c;
  return k->id ? strcmp(k->id, r->job.job_id) : -1;
}

static int lease_cmp(const chr_rb_node_t *a, const chr_rb_node_t *b) {
  const mrec_t *x = REC_OF(a, aux), *y = REC_OF(b, aux);
  int c = chr_memidx_cmp_i64(x->job.lease_until, y->job.lease_until);
  return c ? c : chr_memidx_cmp_i64((int64_t)x->seq, (int64_t)y->seq);
}

static chr_memidx_link_t *rec_links(const mem_store_t *ms, mrec_t *r) {
  return ms->ix.npaths ? (chr_memidx_link_t *)(void *)(r + 1) : NULL;
}

static void rec_index(mem_store_t *ms, mrec_t *r) {
  int st = r->job.status;
  chr_rb_insert(&ms->by_status[st], &r->by_status);
  r->aux_in = (uint8_t)chr_memidx_aux_of(&r->job);
  if (r->aux_in == AUX_DUE) chr_rb_insert(&ms->due, &r->aux);
  else if (r->aux_in == AUX_LEASE) chr_rb_insert(&ms->lease, &r->aux);
  if (ms->ix.npaths) chr_memindex_add(&ms->ix, rec_links(ms, r));
}

static void rec_unindex(mem_store_t *ms, mrec_t *r) {
  if (ms->ix.npaths) chr_memindex_remove(&ms->ix, rec_links(ms, r));
  chr_rb_remove(&ms->by_status[r->job.status], &r->by_status);
  if (r->aux_in == AUX_DUE)
    chr_rb_remove(&ms->due, &r->aux);
  else if (r->aux_in == AUX_LEASE)
    chr_rb_remove(&ms->lease, &r->aux);
  r->aux_in = AUX_NONE;
}

/* ---- job_id -> record */

static uint64_t hash_id(const mem_store_t *ms, const char *s) {
  uint64_t h = 0xcbf29ce484222325ULL ^ ms->seed;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
  /* FNV alone leaves the low bits weak for similar keys; finish with the
   * splitmix64 mixer since the table indexes by the low bits. */
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  h ^= h >> 31;
  return h;
}

/* Hashes live beside the slots, not only in the records, so a probe reads
 * two contiguous arrays and touches a record only when its hash matches:
 * 4 more bytes per slot, but no cache miss per probe. */
static mrec_t **map_slot(const mem_store_t *ms, const char *id) {
  uint32_t h;
  size_t i, mask = ms->cap - 1;
  if (ms->cap == 0 || id == NULL) return NULL;
  h = (uint32_t)hash_id(ms, id);
  for (i = h & mask; ms->slots[i] != NULL; i = (i + 1) & mask)
    if (ms->hashes[i] == h && strcmp(ms->slots[i]->job.job_id, id) == 0) return &ms->slots[i];
  return NULL;
}

static mrec_t *map_get(const mem_store_t *ms, const char *id) {
  mrec_t **slot = map_slot(ms, id);
  return slot ? *slot : NULL;
}

static void map_place(mrec_t **slots, uint32_t *hashes, size_t cap, mrec_t *r) {
  size_t i, mask = cap - 1;
  for (i = r->hash & mask; slots[i] != NULL; i = (i + 1) & mask) {}
  slots[i] = r;
  hashes[i] = r->hash;
}

/* Load factor at most 3/4: 16-32 bytes of table per job. */
static void map_add(mem_store_t *ms, mrec_t *r) {
  if ((ms->count + 1) * 4 > ms->cap * 3) {
    size_t i, ncap = ms->cap ? ms->cap * 2 : 64;
    mrec_t **ns = chr_calloc(ncap, sizeof *ns);
    uint32_t *nh = chr_malloc(ncap * sizeof *nh);
    for (i = 0; i < ms->cap; i++)
      if (ms->slots[i] != NULL) map_place(ns, nh, ncap, ms->slots[i]);
    free(ms->slots);
    free(ms->hashes);
    ms->slots = ns;
    ms->hashes = nh;
    ms->cap = ncap;
  }
  map_place(ms->slots, ms->hashes, ms->cap, r);
  ms->count++;
}

/* Backward-shift deletion: later members of the probe run move up into the
 * hole unless their home slot lies cyclically in (hole, their slot]. */
static void map_del(mem_store_t *ms, mrec_t **slot) {
  size_t mask = ms->cap - 1, i = (size_t)(slot - ms->slots), j = i, home;
  ms->slots[i] = NULL;
  for (;;) {
    j = (j + 1) & mask;
    if (ms->slots[j] == NULL) break;
    home = ms->hashes[j] & mask;
    if (i <= j ? (i < home && home <= j) : (i < home || home <= j)) continue;
    ms->slots[i] = ms->slots[j];
    ms->hashes[i] = ms->hashes[j];
    ms->slots[j] = NULL;
    i = j;
  }
  ms->count--;
}

/* ---- records */

/* Fields most jobs share, kept once per distinct value: claimed_by is
 * the node id of every job a scheduler holds. */
static const chr_field_t interned[] = {CHR_F_NAME, CHR_F_FUNC_NAME, CHR_F_TIMEZONE,
                                       CHR_F_CLAIMED_BY};
#define NINTERNED (sizeof interned / sizeof *interned)

static char **field_str(chr_job_t *j, chr_field_t f) {
  return (char **)((char *)j + chr_job_fields[f].offset);
}

/* Replaces the record's own copies of the interned fields by shared ones. */
static void rec_intern(mem_store_t *ms, mrec_t *r) {
  for (size_t i = 0; i < NINTERNED; i++) {
    char **p = field_str(&r->job, interned[i]);
    if (*p == NULL) continue;
    char *own = *p;
    *p = (char *)chr_intern_get(&ms->strings, own);
    free(own);
  }
}

/* Takes the shared fields out (so job.c never frees them), keeping them in
 * saved[]. */
static void rec_unshare(mrec_t *r, char *saved[NINTERNED]) {
  for (size_t i = 0; i < NINTERNED; i++) {
    char **p = field_str(&r->job, interned[i]);
    saved[i] = *p;
    *p = NULL;
  }
}

/* After an update: untouched fields get their shared copy back, changed
 * ones drop it and intern the new value. */
static void rec_reshare(mem_store_t *ms, mrec_t *r, char *saved[NINTERNED], const chr_job_t *u) {
  uint32_t touched = u ? (u->mask | u->nullmask) : 0;
  for (size_t i = 0; i < NINTERNED; i++) {
    char **p = field_str(&r->job, interned[i]);
    if (!(touched & CHR_BIT(interned[i]))) {
      *p = saved[i];
      continue;
    }
    if (saved[i]) chr_intern_put(&ms->strings, saved[i]);
    if (*p) {
      char *own = *p;
      *p = (char *)chr_intern_get(&ms->strings, own);
      free(own);
    }
  }
}

static mrec_t *rec_new(mem_store_t *ms, const chr_job_t *src) {
  mrec_t *r = chr_calloc(1, sizeof *r + ms->ix.npaths * sizeof(chr_memidx_link_t));
  chr_job_t *copy = chr_job_dup(src);
  /* Take over the copy's fields and drop its shell: the record embeds the
   * job, one allocation instead of two. */
  r->job = *copy;
  free(copy);
  /* Null means absent in a stored record. */
  r->job.mask &= ~r->job.nullmask;
  r->job.nullmask = 0;
  r->hash = (uint32_t)hash_id(ms, r->job.job_id);
  r->idkey = id_key(r->job.job_id);
  r->seq = ++ms->nmade;
  chr_memindex_links_init(&ms->ix, rec_links(ms, r), &r->job);
  rec_intern(ms, r);
  return r;
}

static void rec_free(mem_store_t *ms, mrec_t *r) {
  char *saved[NINTERNED];
  rec_unshare(r, saved);
  for (size_t i = 0; i < NINTERNED; i++)
    if (saved[i]) chr_intern_put(&ms->strings, saved[i]);
  chr_job_clear(&r->job);
  free(r);
}

/* updated_at for a write: the wall clock, but strictly increasing within
 * the store, so two writes in one microsecond (or across a clock step
 * back) never leave the same updated_at, which a CAS on updated_at
 * (optimistic concurrency) would take for "unchanged". */
static int64_t next_stamp(mem_store_t *ms) {
  int64_t now = chr_time_now();
  ms->last_stamp = now > ms->last_stamp ? now : ms->last_stamp + 1;
  return ms->last_stamp;
}

static void touch(mem_store_t *ms, mrec_t *r) {
  chr_job_set_time(&r->job, CHR_F_UPDATED_AT, next_stamp(ms));
}

static void wake_if_due(mem_store_t *ms, const mrec_t *r) {
  chr_store_wake_job(&ms->base, &r->job);
}

/* Sets claimed_by (an interned field) to owner, or clears it (NULL). */
static void set_owner(mem_store_t *ms, chr_job_t *j, const char *owner) {
  const char *old = j->claimed_by;
  j->claimed_by = owner ? (char *)chr_intern_get(&ms->strings, owner) : NULL;
  if (old) chr_intern_put(&ms->strings, old);
  if (owner) j->mask |= CHR_BIT(CHR_F_CLAIMED_BY);
  else j->mask &= ~CHR_BIT(CHR_F_CLAIMED_BY);
}

static void clear_claim(mem_store_t *ms, chr_job_t *j) {
  set_owner(ms, j, NULL);
  j->lease_until = CHR_TIME_NONE;
  j->mask &= ~(CHR_BIT(CHR_F_CLAIMED_BY) | CHR_BIT(CHR_F_LEASE_UNTIL));
}

static void rec_update(mem_store_t *ms, mrec_t *r, const chr_job_t *u) {
  rec_unindex(ms, r);
  if (u != NULL) {
    char *saved[NINTERNED];
    rec_unshare(r, saved);
    chr_job_apply(&r->job, u);
    rec_reshare(ms, r, saved, u);
  }
  touch(ms, r);
  rec_index(ms, r);
  wake_if_due(ms, r);
}

static void rec_delete(mem_store_t *ms, mrec_t **slot) {
  mrec_t *r = *slot;
  map_del(ms, slot);
  rec_unindex(ms, r);
  rec_free(ms, r);
}

static void push_copy(chr_store_req_t *req, const mrec_t *r) {
  chr_store_req_push_job(req, chr_job_dup(&r->job));
}

/* ---- queries */

/* Merges the per-status orders of the filter's statuses, from next_run_time
 * >= gte up to <= lte. */
typedef struct qcur {
  chr_rb_node_t *at[CHR_ST__COUNT];
  int64_t lte;
  int bounded; /* a next_run_time bound is given */
} qcur_t;

static chr_rb_node_t *qcur_bound(const qcur_t *c, chr_rb_node_t *n) {
  /* Nil sorts last and never satisfies a bound (chr_filter_match), so a
   * bounded walk ends at the first nil. */
  if (n != NULL && c->bounded) {
    int64_t t = rec_nrt(REC_OF(n, by_status));
    if (t == CHR_TIME_NONE || (c->lte != CHR_TIME_NONE && t > c->lte)) return NULL;
  }
  return n;
}

static void qcur_init(qcur_t *c, const mem_store_t *ms, const chr_filter_t *f) {
  int s;
  uint32_t statuses = f ? f->status_mask : 0;
  mkey_t key = {0, CHR_TIME_NONE, NULL};
  c->lte = f ? f->nrt_lte : CHR_TIME_NONE;
  if (f != NULL) key.t = f->nrt_gte;
  c->bounded = c->lte != CHR_TIME_NONE || key.t != CHR_TIME_NONE;
  for (s = 0; s < CHR_ST__COUNT; s++) {
    chr_rb_node_t *n = NULL;
    if (s != CHR_ST_NONE && (statuses == 0 || (statuses & (1u << s)))) {
      if (key.t != CHR_TIME_NONE)
        n = chr_rb_lower_bound(&ms->by_status[s], &key, status_keycmp);
      else
        n = chr_rb_first(&ms->by_status[s]);
    }
    c->at[s] = qcur_bound(c, n);
  }
}

static mrec_t *qcur_next(qcur_t *c) {
  int s, best = -1;
  mrec_t *r = NULL;
  for (s = 0; s < CHR_ST__COUNT; s++) {
    mrec_t *x;
    if (c->at[s] == NULL) continue;
    x = REC_OF(c->at[s], by_status);
    if (r == NULL || rec_cmp_query(x, r) < 0) {
      r = x;
      best = s;
    }
  }
  if (r != NULL) c->at[best] = qcur_bound(c, chr_rb_next(c->at[best]));
  return r;
}

static int filter_only_status(const chr_filter_t *f) {
  return f->trigger_type == 0 && f->nrt_lte == CHR_TIME_NONE &&
         f->nrt_gte == CHR_TIME_NONE && f->upd_lte == CHR_TIME_NONE &&
         f->upd_gte == CHR_TIME_NONE && f->nmeta == 0 && !f->has_ids;
}

static int rec_ptr_cmp(const void *a, const void *b) {
  return rec_cmp_query(*(mrec_t *const *)a, *(mrec_t *const *)b);
}

/* job_id_in: look the ids up instead of scanning; returns the matching
 * records in query order (malloc'ed, *n of them). */
static mrec_t **ids_collect(const mem_store_t *ms, const chr_filter_t *f, size_t *n) {
  size_t i, k = 0;
  mrec_t **out = chr_malloc((f->nids ? f->nids : 1) * sizeof *out);
  for (i = 0; i < f->nids; i++) {
    mrec_t *r = map_get(ms, f->ids[i]);
    if (r == NULL || r->mark) continue;
    r->mark = 1;
    if (chr_filter_match(f, &r->job)) out[k++] = r;
    else r->mark = 0;
  }
  for (i = 0; i < k; i++) out[i]->mark = 0;
  qsort(out, k, sizeof *out, rec_ptr_cmp);
  *n = k;
  return out;
}

/* Whether f is one metadata condition and statuses, nothing else: the
 * jobs an index walk of it finds all match, and a count of it reads the
 * index's counts. */
static int filter_only_meta(const chr_filter_t *f) {
  return f->trigger_type == 0 && f->nrt_lte == CHR_TIME_NONE &&
         f->nrt_gte == CHR_TIME_NONE && f->upd_lte == CHR_TIME_NONE &&
         f->upd_gte == CHR_TIME_NONE && f->nmeta == 1 && !f->has_ids;
}

/* Pushes the jobs the filter matches among those walked (all of them when
 * `all`), in their order, past offset and up to limit. Returns 1 when the
 * limit stopped it. */
static int query_push(chr_store_req_t *req, const chr_job_t *j, int all, int64_t *skip) {
  if (!all && req->filter != NULL && !chr_filter_match(req->filter, j)) return 0;
  if (*skip > 0) {
    (*skip)--;
    return 0;
  }
  chr_store_req_push_job(req, chr_job_dup(j));
  return req->limit >= 0 && (int64_t)req->njobs >= req->limit;
}

static void op_query(mem_store_t *ms, chr_store_req_t *req) {
  const chr_filter_t *f = req->filter;
  int64_t skip = req->offset, limit = req->limit;
  chr_memidx_sel_t sel;
  if (f != NULL && f->has_ids) {
    size_t i, n;
    mrec_t **recs = ids_collect(ms, f, &n);
    for (i = (size_t)skip; i < n; i++) {
      if (limit >= 0 && (int64_t)req->njobs >= limit) break;
      push_copy(req, recs[i]);
    }
    free(recs);
  } else if (chr_memindex_select(&ms->ix, f, f ? f->status_mask : 0, &sel)) {
    chr_memidx_qcur_t c;
    chr_job_t *j;
    int all = filter_only_meta(f);
    chr_memidx_qcur_init(&c, &sel, f);
    while ((j = chr_memidx_qcur_next(&c)) != NULL && !query_push(req, j, all, &skip)) {}
    chr_memidx_qcur_free(&c);
    chr_memidx_sel_free(&sel);
  } else {
    qcur_t c;
    mrec_t *r;
    qcur_init(&c, ms, f);
    while ((r = qcur_next(&c)) != NULL && !query_push(req, &r->job, 0, &skip)) {}
  }
}

static void op_count(mem_store_t *ms, chr_store_req_t *req) {
  const chr_filter_t *f = req->filter;
  int64_t n = 0;
  chr_memidx_sel_t sel;
  if (f == NULL) {
    n = (int64_t)ms->count;
  } else if (filter_only_status(f)) {
    int s;
    for (s = 1; s < CHR_ST__COUNT; s++)
      if (f->status_mask == 0 || (f->status_mask & (1u << s)))
        n += (int64_t)ms->by_status[s].count;
  } else if (f->has_ids) {
    size_t k;
    free(ids_collect(ms, f, &k));
    n = (int64_t)k;
  } else if (chr_memindex_select(&ms->ix, f, f->status_mask, &sel)) {
    if (filter_only_meta(f)) {
      n = chr_memidx_sel_count(&sel, f->status_mask);
    } else {
      chr_memidx_qcur_t c;
      chr_job_t *j;
      chr_memidx_qcur_init(&c, &sel, f);
      while ((j = chr_memidx_qcur_next(&c)) != NULL)
        if (chr_filter_match(f, j)) n++;
      chr_memidx_qcur_free(&c);
    }
    chr_memidx_sel_free(&sel);
  } else {
    qcur_t c;
    mrec_t *r;
    qcur_init(&c, ms, f);
    while ((r = qcur_next(&c)) != NULL)
      if (chr_filter_match(f, &r->job)) n++;
  }
  req->count = n;
}

/* ---- the engine's operations */

#define REC_OF_JOB(j) CHR_CONTAINER_OF(j, mrec_t, job)

static void claim_rec(mem_store_t *ms, chr_store_req_t *req, mrec_t *r, int64_t stamp) {
  rec_unindex(ms, r);
  r->job.status = CHR_ST_RUNNING;
  set_owner(ms, &r->job, req->owner);
  chr_job_set_time(&r->job, CHR_F_LEASE_UNTIL, req->now + req->lease_us);
  chr_job_set_time(&r->job, CHR_F_UPDATED_AT, stamp);
  rec_index(ms, r);
  /* One allocation instead of one per string: the claimer reads the job
   * while it runs and frees it. */
  chr_store_req_push_job(req, chr_job_dup_packed(&r->job));
}

/* ---- claims with queues */

/* The place in ms->rates of queue q's rate window at now, made on first
 * use (a place, not a pointer: making one may move the others). */
static long rate_of(mem_store_t *ms, const chr_claim_queue_t *q, int64_t now) {
  int64_t p = q->rate_period_us, start = now / p * p;
  if (start > now) start -= p; /* floor for times before 1970 */
  size_t i = 0;
  while (i < ms->nrates && strcmp(ms->rates[i].queue, q->name) != 0) i++;
  if (i == ms->nrates) {
    ms->rates = chr_realloc(ms->rates, (ms->nrates + 1) * sizeof *ms->rates);
    ms->rates[i].queue = chr_strdup(q->name);
    ms->rates[i].start = start;
    ms->rates[i].used = 0;
    ms->nrates++;
  }
  if (ms->rates[i].start != start) {
    ms->rates[i].start = start;
    ms->rates[i].used = 0;
  }
  return (long)i;
}

/* What the claim may take of each queue: its per-claim limit, less what
 * its global concurrency and its rate window leave. */
static void queue_allowance(mem_store_t *ms, const chr_store_req_t *req, int64_t *allow,
                            long *rates) {
  size_t n = req->nqueues;
  int64_t *running = chr_calloc(n, sizeof *running);
  for (size_t k = 0; k < n; k++) {
    if (req->queues[k].global_limit <= 0) continue;
    for (chr_rb_node_t *x = chr_rb_first(&ms->by_status[CHR_ST_RUNNING]); x; x = chr_rb_next(x))
      if (chr_job_queue_is(&REC_OF(x, by_status)->job, req->queues[k].name)) running[k]++;
  }
  for (size_t k = 0; k < n; k++) {
    const chr_claim_queue_t *q = &req->queues[k];
    allow[k] = q->limit;
    if (q->global_limit > 0 && q->global_limit - running[k] < allow[k])
      allow[k] = q->global_limit - running[k];
    rates[k] = q->rate_limit > 0 ? rate_of(ms, q, req->now) : -1;
    if (rates[k] >= 0 && q->rate_limit - ms->rates[rates[k]].used < allow[k])
      allow[k] = q->rate_limit - ms->rates[rates[k]].used;
  }
  free(running);
}

/* The place of j's queue in req->queues if the claim may take it, else -1. */
static long queue_take(const chr_store_req_t *req, const chr_job_t *j, const int64_t *allow) {
  for (size_t k = 0; k < req->nqueues; k++)
    if (chr_job_queue_is(j, req->queues[k].name)) return allow[k] > 0 ? (long)k : -1;
  return -1;
}

/* Claims due job r when its queue allows it; returns how many were taken. */
static int claim_queued(mem_store_t *ms, chr_store_req_t *req, mrec_t *r, int64_t stamp,
                        int64_t *allow, const long *rates) {
  long k = queue_take(req, &r->job, allow);
  if (k < 0) return 0;
  claim_rec(ms, req, r, stamp);
  allow[k]--;
  if (rates[k] >= 0) ms->rates[rates[k]].used++;
  return 1;
}

/* A scope (req->filter) with an indexed $eq or $in reads the due jobs of
 * its values only; any other scope walks every due job, skipping those it
 * does not match. Either way in claim order. */
static void op_claim(mem_store_t *ms, chr_store_req_t *req) {
  const chr_filter_t *scope = req->filter;
  int64_t now = req->now, limit = req->limit, stamp = next_stamp(ms);
  /* With queues, what each may still take; `left` in all of them. */
  size_t nq = req->nqueues;
  int64_t *allow = NULL, left = INT64_MAX;
  long *rates = NULL;
  if (nq) {
    allow = chr_malloc(nq * sizeof *allow);
    rates = chr_malloc(nq * sizeof *rates);
    queue_allowance(ms, req, allow, rates);
    left = 0;
    for (size_t k = 0; k < nq; k++) left += allow[k] > 0 ? allow[k] : 0;
  }
  chr_memidx_sel_t sel;
  if (chr_memindex_select(&ms->ix, scope, 1u << CHR_ST_SCHEDULED, &sel)) {
    size_t n;
    /* Other queues' jobs are passed over: the limit cannot cut the list. */
    chr_job_t **due = chr_memidx_due(&sel, scope, now, nq ? -1 : limit, &n);
    for (size_t i = 0; i < n && left > 0 && (limit < 0 || (int64_t)req->njobs < limit); i++) {
      if (nq) left -= claim_queued(ms, req, REC_OF_JOB(due[i]), stamp, allow, rates);
      else claim_rec(ms, req, REC_OF_JOB(due[i]), stamp);
    }
    free(due);
    chr_memidx_sel_free(&sel);
    free(allow);
    free(rates);
    return;
  }
  chr_rb_node_t *n = chr_rb_first(&ms->due);
  while (n != NULL && left > 0 && (limit < 0 || (int64_t)req->njobs < limit)) {
    mrec_t *r = REC_OF(n, aux);
    chr_rb_node_t *next;
    if (r->job.next_run_time > now) {
      /* The earliest job of this priority is not due: none of it is. */
      mkey_t key = {(int64_t)chr_job_priority(&r->job) - 1, INT64_MIN, NULL};
      n = chr_rb_lower_bound(&ms->due, &key, due_keycmp);
      continue;
    }
    next = chr_rb_next(n);
    if (chr_filter_match(scope, &r->job)) {
      if (nq) left -= claim_queued(ms, req, r, stamp, allow, rates);
      else claim_rec(ms, req, r, stamp);
    }
    n = next;
  }
  free(allow);
  free(rates);
}

static void op_complete(mem_store_t *ms, chr_store_req_t *req) {
  size_t i;
  for (i = 0; i < req->nitems; i++) {
    chr_completion_t *it = &req->items[i];
    mrec_t **slot = map_slot(ms, it->job_id);
    it->result = chr_store_completion_result(it, slot ? &(*slot)->job : NULL);
    if (it->result != 0) continue;
    if (it->remove) rec_delete(ms, slot);
    else rec_update(ms, *slot, it->updates);
    if (it->run) chr_memhist_add(&ms->hist, it->run, req->issued);
  }
}

static void op_record_runs(mem_store_t *ms, chr_store_req_t *req) {
  req->count = 0;
  for (size_t i = 0; i < req->nruns; i++)
    req->count += chr_memhist_add(&ms->hist, req->runs[i], req->issued);
}

static void op_query_runs(mem_store_t *ms, chr_store_req_t *req) {
  chr_memhist_query(&ms->hist, req);
}

/* Returns the job's next_run_time, for the wake-up. */
static int64_t recover_rec(mem_store_t *ms, mrec_t *r, int64_t stamp) {
  rec_unindex(ms, r);
  r->job.status = CHR_ST_SCHEDULED;
  clear_claim(ms, &r->job);
  /* The run that was cut short counts (see engine.c, lease_exhausted). */
  chr_job_set_int(&r->job, CHR_F_RETRY_COUNT, chr_job_int(&r->job, CHR_F_RETRY_COUNT, 0) + 1);
  chr_job_set_int(&r->job, CHR_F_ATTEMPT, chr_job_int(&r->job, CHR_F_ATTEMPT, 0) + 1);
  chr_job_set_time(&r->job, CHR_F_UPDATED_AT, stamp);
  rec_index(ms, r);
  return rec_nrt(r);
}

/* Scoped like op_claim: the index's leases of the scope's values, or every
 * expired lease, skipping the jobs the scope does not match. */
static void op_recover(mem_store_t *ms, chr_store_req_t *req) {
  const chr_filter_t *scope = req->filter;
  int64_t now = req->now, stamp = next_stamp(ms), earliest = CHR_TIME_NONE;
  chr_memidx_sel_t sel;
  req->count = 0;
  if (chr_memindex_select(&ms->ix, scope, 1u << CHR_ST_RUNNING, &sel)) {
    size_t n;
    chr_job_t **expired = chr_memidx_expired(&sel, scope, now, &n);
    for (size_t i = 0; i < n; i++)
      earliest = chr_time_earlier(earliest, recover_rec(ms, REC_OF_JOB(expired[i]), stamp));
    req->count = (int64_t)n;
    free(expired);
    chr_memidx_sel_free(&sel);
  } else {
    chr_rb_node_t *n = chr_rb_first(&ms->lease), *next;
    /* A recovered job leaves `lease`; next was taken before. */
    for (; n != NULL && REC_OF(n, aux)->job.lease_until < now; n = next) {
      next = chr_rb_next(n);
      if (!chr_filter_match(scope, &REC_OF(n, aux)->job)) continue;
      earliest = chr_time_earlier(earliest, recover_rec(ms, REC_OF(n, aux), stamp));
      req->count++;
    }
  }
  if (earliest != CHR_TIME_NONE) chr_store_wake(&ms->base, earliest);
}

static int owned_by(const mrec_t *r, const char *owner) {
  return chr_job_has(&r->job, CHR_F_CLAIMED_BY) && r->job.claimed_by != NULL &&
         strcmp(r->job.claimed_by, owner) == 0;
}

static void op_extend(mem_store_t *ms, chr_store_req_t *req) {
  int64_t stamp = next_stamp(ms);
  size_t i;
  req->count = 0;
  for (i = 0; i < req->nids; i++) {
    mrec_t *r = map_get(ms, req->ids[i]);
    if (r == NULL || r->job.status != CHR_ST_RUNNING || !owned_by(r, req->owner)) continue;
    rec_unindex(ms, r);
    chr_job_set_time(&r->job, CHR_F_LEASE_UNTIL, req->now + req->lease_us);
    chr_job_set_time(&r->job, CHR_F_UPDATED_AT, stamp);
    rec_index(ms, r);
    req->count++;
  }
}

/* ---- requests */

static void op_create(mem_store_t *ms, chr_store_req_t *req) {
  const chr_job_t *j = req->job;
  mrec_t *r;
  if (map_get(ms, j->job_id) != NULL) {
    chr_store_req_fail(req, CHR_EDUP, "job '%s' already exists", j->job_id);
    return;
  }
  r = rec_new(ms, j);
  touch(ms, r);
  map_add(ms, r);
  rec_index(ms, r);
  push_copy(req, r);
  wake_if_due(ms, r);
}

/* create_jobs: each record as op_create stores it, without the copy back;
 * the engines hear of the batch once, at its earliest time. */
static void op_create_many(mem_store_t *ms, chr_store_req_t *req) {
  int64_t when = CHR_TIME_NONE;
  for (size_t i = 0; i < req->ncreates; i++) {
    const chr_job_t *j = req->creates[i].job;
    if (map_get(ms, j->job_id) != NULL) {
      req->creates[i].result = CHR_EDUP;
      continue;
    }
    mrec_t *r = rec_new(ms, j);
    touch(ms, r);
    map_add(ms, r);
    rec_index(ms, r);
    req->count++;
    when = chr_time_earlier(when, chr_job_wake_time(&r->job));
  }
  if (when != CHR_TIME_NONE) chr_store_wake(&ms->base, when);
}

static void op_update(mem_store_t *ms, chr_store_req_t *req) {
  mrec_t *r = map_get(ms, req->id);
  if (r == NULL) {
    chr_store_req_fail(req, CHR_ENOTFOUND, "job '%s' not found", req->id);
    return;
  }
  rec_update(ms, r, req->job);
  push_copy(req, r);
}

static void op_cas(mem_store_t *ms, chr_store_req_t *req) {
  mrec_t *r = map_get(ms, req->id);
  req->ok = 0;
  if (r == NULL) {
    chr_store_req_fail(req, CHR_ENOTFOUND, "job '%s' not found", req->id);
    return;
  }
  if (req->expected != NULL && !chr_job_matches(&r->job, req->expected)) return;
  rec_update(ms, r, req->job);
  req->ok = 1;
  push_copy(req, r);
}

static void op_get(mem_store_t *ms, chr_store_req_t *req) {
  mrec_t *r = map_get(ms, req->id);
  if (r != NULL) push_copy(req, r);
}

static void op_get_batch(mem_store_t *ms, chr_store_req_t *req) {
  size_t i;
  for (i = 0; i < req->nids; i++) {
    mrec_t *r = map_get(ms, req->ids[i]);
    if (r != NULL && !r->mark) {
      r->mark = 1;
      push_copy(req, r);
    }
  }
  for (i = 0; i < req->njobs; i++) map_get(ms, req->jobs[i]->job_id)->mark = 0;
}

static void op_delete(mem_store_t *ms, chr_store_req_t *req) {
  mrec_t **slot = map_slot(ms, req->id);
  req->ok = slot != NULL;
  if (slot != NULL) rec_delete(ms, slot);
}

static void op_next_due(mem_store_t *ms, chr_store_req_t *req) {
  const chr_filter_t *scope = req->filter;
  chr_memidx_sel_t sel;
  if (chr_memindex_select(&ms->ix, scope, 1u << CHR_ST_SCHEDULED, &sel)) {
    req->count = chr_memidx_next_due(&sel, scope);
    chr_memidx_sel_free(&sel);
    return;
  }
  /* The first scheduled job the scope matches, in query order. */
  chr_rb_node_t *n = chr_rb_first(&ms->by_status[CHR_ST_SCHEDULED]);
  while (n != NULL && !chr_filter_match(scope, &REC_OF(n, by_status)->job)) n = chr_rb_next(n);
  req->count = n ? rec_nrt(REC_OF(n, by_status)) : CHR_TIME_NONE;
}

static void (*const mem_ops[CHR_OP__COUNT])(mem_store_t *, chr_store_req_t *) = {
    [CHR_OP_CREATE] = op_create, [CHR_OP_GET] = op_get,       [CHR_OP_GET_BATCH] = op_get_batch,
    [CHR_OP_CREATE_MANY] = op_create_many,
    [CHR_OP_UPDATE] = op_update, [CHR_OP_CAS] = op_cas,       [CHR_OP_DELETE] = op_delete,
    [CHR_OP_QUERY] = op_query,   [CHR_OP_COUNT] = op_count,   [CHR_OP_CLAIM] = op_claim,
    [CHR_OP_COMPLETE] = op_complete, [CHR_OP_RECOVER] = op_recover,
    [CHR_OP_EXTEND] = op_extend, [CHR_OP_NEXT_DUE] = op_next_due,
    [CHR_OP_RECORD_RUNS] = op_record_runs, [CHR_OP_QUERY_RUNS] = op_query_runs};

/* Requests come checked (chr_store_submit) and are answered here, at once. */
static int mem_submit(chr_store_t *s, chr_store_req_t *req) {
  mem_ops[req->op]((mem_store_t *)s, req);
  if (req->cb != NULL) req->cb(req);
  return 0;
}

static void mem_close(chr_store_t *s) {
  mem_store_t *ms = (mem_store_t *)s;
  size_t i;
  for (i = 0; i < ms->cap; i++)
    if (ms->slots[i] != NULL) rec_free(ms, ms->slots[i]);
  chr_intern_free(&ms->strings);
  chr_memhist_free(&ms->hist);
  chr_memindex_free(&ms->ix);
  for (size_t k = 0; k < ms->nrates; k++) free(ms->rates[k].queue);
  free(ms->rates);
  free(ms->slots);
  free(ms->hashes);
  free(ms);
}

static const chr_store_vtable_t mem_vtable = {"memory", mem_submit, mem_close};

chr_store_t *chr_memory_store_new(void) {
  chr_history_opts_t h = {CHR_HISTORY_DEFAULT, CHR_HISTORY_DAYS_DEFAULT};
  return chr_memory_store_new_opts(&h, NULL);
}

chr_store_t *chr_memory_store_new_opts(const chr_history_opts_t *hist, char **index_paths) {
  mem_store_t *ms = chr_calloc(1, sizeof *ms);
  int s;
  chr_store_init(&ms->base, &mem_vtable,
                 CHR_STORE_CAP_CLAIM | CHR_STORE_CAP_COMPLETE | CHR_STORE_CAP_RECOVER |
                     CHR_STORE_CAP_EXTEND | CHR_STORE_CAP_BATCH | CHR_STORE_CAP_COUNT |
                     CHR_STORE_CAP_NEXT_DUE | CHR_STORE_CAP_LOCAL | CHR_STORE_CAP_HISTORY |
                     CHR_STORE_CAP_SCOPE | CHR_STORE_CAP_QUEUES | CHR_STORE_CAP_CREATE_MANY);
  chr_memhist_init(&ms->hist, hist->keep, hist->days);
  chr_memindex_init(&ms->ix, index_paths);
  /* A per-store seed keeps ids chosen against one run's hash from
   * clustering in another's. */
  ms->seed = (uint64_t)(uintptr_t)ms ^ (uint64_t)chr_time_mono() * 0x9e3779b97f4a7c15ULL;
  for (s = 0; s < CHR_ST__COUNT; s++) chr_rb_init(&ms->by_status[s], status_cmp);
  chr_rb_init(&ms->due, due_cmp);
  chr_rb_init(&ms->lease, lease_cmp);
  return &ms->base;
}
