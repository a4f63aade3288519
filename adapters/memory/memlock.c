/* memlock.c - the in-process lock adapter ("memory:"): owner-checked,
 * TTL-bounded locks on the process's loop.
 *
 * Decisions the contract leaves open:
 *  - acquire by the owner that already holds the lock succeeds (ok = 1) and
 *    restarts its TTL, blocking or not;
 *  - ttl_us <= 0 means no expiry: held until released or reset;
 *  - a lock whose TTL has passed counts as free for every operation
 *    (release and extend by its old owner answer ok = 0, reset too);
 *  - blocked acquirers are served in arrival order: a lock freed by
 *    release, reset or expiry goes to the first waiter before any new
 *    acquire is looked at.
 *
 * Each blocked acquire owns a uv timer, armed at its own timeout and, for
 * the first waiter, at the holder's expiry; a waiter with neither keeps a
 * long timer running so that the loop stays alive while it waits. Every
 * timer fire re-checks the whole key ("pump"), so early or late fires are
 * harmless. Callbacks may call back into the lock, even close it: entries
 * in use are pinned (busy) and the lock is freed only once no callback is
 * running and every timer has closed. */
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "core/lock.h"
#include "core/loop.h"
#include "core/time.h"

/* A waiter with no deadline re-checks at this interval. */
#define IDLE_RECHECK_MS (3600 * 1000)

typedef struct mwaiter mwaiter_t;
typedef struct memlock memlock_t;

typedef struct mentry {
  struct mentry *next; /* hash chain */
  char *key;
  char *owner;       /* NULL when free */
  int64_t expires;   /* chr_time_mono µs; CHR_TIME_NONE: no expiry */
  mwaiter_t *head, *tail;
  int busy;          /* pinned by a running operation */
} mentry_t;

struct mwaiter {
  uv_timer_t timer;
  memlock_t *lk;
  mentry_t *e;
  chr_lock_req_t *req;
  mwaiter_t *next, *prev;
  int64_t deadline; /* mono µs; CHR_TIME_NONE: wait however long */
};

struct memlock {
  chr_lock_t base;
  mentry_t **buckets;
  size_t nbuckets, count, sweep_at;
  size_t handles; /* waiter timers not yet closed */
  int depth;      /* callbacks running */
  int dead;       /* closed: freed once handles and depth are 0 */
};

static uint64_t hash_key(const char *s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
  return h ^ (h >> 29);
}

static mentry_t **entry_link(memlock_t *lk, const char *key) {
  mentry_t **p = &lk->buckets[hash_key(key) & (lk->nbuckets - 1)];
  while (*p != NULL && strcmp((*p)->key, key) != 0) p = &(*p)->next;
  return p;
}

static mentry_t *entry_get(memlock_t *lk, const char *key) {
  return *entry_link(lk, key);
}

static void entry_free(mentry_t *e) {
  free(e->key);
  free(e->owner);
  free(e);
}

static void expire(mentry_t *e, int64_t now) {
  if (e->owner != NULL && e->expires != CHR_TIME_NONE && now >= e->expires) {
    free(e->owner);
    e->owner = NULL;
  }
}

static int idle(const mentry_t *e) {
  return e->owner == NULL && e->head == NULL && e->busy == 0;
}

/* Drops entries that hold nothing: those an operation just freed, and
 * (in an occasional sweep, amortised O(1)) those whose TTL ran out
 * unnoticed. */
static void entry_maybe_free(memlock_t *lk, mentry_t *e) {
  mentry_t **p;
  if (lk->dead) return;
  expire(e, chr_time_mono());
  if (!idle(e)) return;
  p = entry_link(lk, e->key);
  *p = e->next;
  entry_free(e);
  lk->count--;
}

static void sweep(memlock_t *lk) {
  int64_t now = chr_time_mono();
  size_t i;
  for (i = 0; i < lk->nbuckets; i++) {
    mentry_t **p = &lk->buckets[i];
    while (*p != NULL) {
      mentry_t *e = *p;
      expire(e, now);
      if (idle(e)) {
        *p = e->next;
        entry_free(e);
        lk->count--;
      } else {
        p = &e->next;
      }
    }
  }
  lk->sweep_at = lk->count * 2 > 64 ? lk->count * 2 : 64;
}

static mentry_t *entry_get_or_add(memlock_t *lk, const char *key) {
  mentry_t **p = entry_link(lk, key), *e;
  if (*p != NULL) return *p;
  if (lk->count + 1 > lk->sweep_at) sweep(lk);
  if (lk->count + 1 > lk->nbuckets) {
    size_t i, n = lk->nbuckets * 2;
    mentry_t **nb = chr_calloc(n, sizeof *nb);
    for (i = 0; i < lk->nbuckets; i++) {
      while ((e = lk->buckets[i]) != NULL) {
        mentry_t **b = &nb[hash_key(e->key) & (n - 1)];
        lk->buckets[i] = e->next;
        e->next = *b;
        *b = e;
      }
    }
    free(lk->buckets);
    lk->buckets = nb;
    lk->nbuckets = n;
  }
  e = chr_calloc(1, sizeof *e);
  e->key = chr_strdup(key);
  e->expires = CHR_TIME_NONE;
  p = &lk->buckets[hash_key(key) & (lk->nbuckets - 1)];
  e->next = *p;
  *p = e;
  lk->count++;
  return e;
}

static void free_lock(memlock_t *lk) {
  size_t i;
  for (i = 0; i < lk->nbuckets; i++) {
    mentry_t *e = lk->buckets[i], *next;
    for (; e != NULL; e = next) {
      next = e->next;
      entry_free(e);
    }
  }
  free(lk->buckets);
  free(lk);
}

static void maybe_free_lock(memlock_t *lk) {
  if (lk->dead && lk->handles == 0 && lk->depth == 0) free_lock(lk);
}

/* Answers req through its callback; req is not touched afterwards. */
static void answer(memlock_t *lk, chr_lock_req_t *req, int status, int ok, const char *msg) {
  req->status = status;
  req->ok = ok;
  req->priv = NULL;
  if (msg != NULL) {
    free(req->errmsg);
    req->errmsg = chr_strdup(msg);
  }
  if (req->cb == NULL) return;
  lk->depth++;
  req->cb(req);
  lk->depth--;
}

static int64_t ttl_deadline(int64_t now, int64_t ttl_us) {
  return ttl_us > 0 ? now + ttl_us : CHR_TIME_NONE;
}

static void waiter_close_cb(uv_handle_t *h) {
  mwaiter_t *w = h->data;
  memlock_t *lk = w->lk;
  free(w);
  lk->handles--;
  maybe_free_lock(lk);
}

/* Takes w off its queue and closes its timer; returns its request. */
static chr_lock_req_t *waiter_finish(mwaiter_t *w) {
  mentry_t *e = w->e;
  chr_lock_req_t *req = w->req;
  if (w->prev != NULL) w->prev->next = w->next;
  else e->head = w->next;
  if (w->next != NULL) w->next->prev = w->prev;
  else e->tail = w->prev;
  w->req = NULL;
  uv_timer_stop(&w->timer);
  uv_close((uv_handle_t *)&w->timer, waiter_close_cb);
  return req;
}

static void timer_cb(uv_timer_t *t);

static void rearm(memlock_t *lk, mentry_t *e) {
  int64_t now;
  mwaiter_t *w;
  if (lk->dead || e->head == NULL) return;
  uv_update_time(chr_loop());
  now = chr_time_mono();
  for (w = e->head; w != NULL; w = w->next) {
    int64_t due = w->deadline;
    uint64_t ms;
    if (w == e->head && e->owner != NULL && e->expires != CHR_TIME_NONE &&
        (due == CHR_TIME_NONE || e->expires < due))
      due = e->expires;
    if (due == CHR_TIME_NONE)
      ms = IDLE_RECHECK_MS;
    else
      ms = due <= now ? 0 : (uint64_t)(due - now + 999) / 1000;
    uv_timer_start(&w->timer, timer_cb, ms, 0);
  }
}

/* Settles key e: drops an expired holder, hands a free lock to the first
 * waiter, times out waiters whose deadline passed. One step at a time, as
 * each callback may change e. */
static void pump(memlock_t *lk, mentry_t *e) {
  for (;;) {
    int64_t now;
    mwaiter_t *w = NULL;
    chr_lock_req_t *req;
    int ok = 0;
    if (lk->dead) return;
    now = chr_time_mono();
    expire(e, now);
    if (e->owner == NULL && e->head != NULL) {
      w = e->head;
      e->owner = chr_strdup(w->req->owner);
      e->expires = ttl_deadline(now, w->req->ttl_us);
      ok = 1;
    } else {
      for (w = e->head; w != NULL; w = w->next)
        if (w->deadline != CHR_TIME_NONE && now >= w->deadline) break;
    }
    if (w == NULL) break;
    req = waiter_finish(w);
    answer(lk, req, 0, ok, NULL);
  }
  rearm(lk, e);
}

static void timer_cb(uv_timer_t *t) {
  mwaiter_t *w = t->data;
  memlock_t *lk = w->lk;
  mentry_t *e = w->e;
  e->busy++;
  lk->depth++;
  pump(lk, e);
  lk->depth--;
  e->busy--;
  entry_maybe_free(lk, e);
  maybe_free_lock(lk);
}

static void enqueue(memlock_t *lk, mentry_t *e, chr_lock_req_t *req, int64_t now) {
  mwaiter_t *w = chr_calloc(1, sizeof *w);
  w->lk = lk;
  w->e = e;
  w->req = req;
  w->deadline = req->timeout_us > 0 ? now + req->timeout_us : CHR_TIME_NONE;
  uv_timer_init(chr_loop(), &w->timer);
  w->timer.data = w;
  lk->handles++;
  w->prev = e->tail;
  if (e->tail != NULL) e->tail->next = w;
  else e->head = w;
  e->tail = w;
  req->priv = w;
  rearm(lk, e);
}

static void op_acquire(memlock_t *lk, mentry_t *e, chr_lock_req_t *req) {
  int64_t now;
  /* Waiters first: a lock that expired unnoticed goes to them. */
  if (e->head != NULL) pump(lk, e);
  if (lk->dead) {
    answer(lk, req, CHR_EUNAVAIL, 0, "lock closed");
    return;
  }
  now = chr_time_mono();
  expire(e, now);
  if (e->owner == NULL || strcmp(e->owner, req->owner) == 0) {
    if (e->owner == NULL) e->owner = chr_strdup(req->owner);
    e->expires = ttl_deadline(now, req->ttl_us);
    rearm(lk, e);
    answer(lk, req, 0, 1, NULL);
  } else if (!req->blocking) {
    answer(lk, req, 0, 0, NULL);
  } else {
    enqueue(lk, e, req, now);
  }
}

/* Held (unexpired) by owner, or by anyone when owner is NULL. */
static int held_by(mentry_t *e, const char *owner) {
  expire(e, chr_time_mono());
  return e->owner != NULL && (owner == NULL || strcmp(e->owner, owner) == 0);
}

static int ml_submit(chr_lock_t *l, chr_lock_req_t *req) {
  memlock_t *lk = (memlock_t *)l;
  mentry_t *e;
  int ok = 0;
  if (lk->dead) return CHR_EUNAVAIL;
  req->lock = l;
  req->status = 0;
  req->ok = 0;
  if (req->key == NULL ||
      (req->op != CHR_LOCK_RESET && req->owner == NULL) || req->op > CHR_LOCK_RESET)
    return CHR_EINVAL;
  lk->depth++;
  e = req->op == CHR_LOCK_ACQUIRE ? entry_get_or_add(lk, req->key) : entry_get(lk, req->key);
  if (e != NULL) e->busy++;
  switch (req->op) {
  case CHR_LOCK_ACQUIRE:
    op_acquire(lk, e, req);
    break;
  case CHR_LOCK_RELEASE:
  case CHR_LOCK_RESET:
    if (e != NULL && held_by(e, req->op == CHR_LOCK_RESET ? NULL : req->owner)) {
      free(e->owner);
      e->owner = NULL;
      ok = 1;
    }
    answer(lk, req, 0, ok, NULL);
    if (e != NULL) pump(lk, e);
    break;
  case CHR_LOCK_EXTEND:
    if (e != NULL && held_by(e, req->owner)) {
      e->expires = ttl_deadline(chr_time_mono(), req->ttl_us);
      ok = 1;
      rearm(lk, e);
    }
    answer(lk, req, 0, ok, NULL);
    break;
  }
  if (e != NULL) {
    e->busy--;
    entry_maybe_free(lk, e);
  }
  lk->depth--;
  maybe_free_lock(lk);
  return 0;
}

static void ml_close(chr_lock_t *l) {
  memlock_t *lk = (memlock_t *)l;
  size_t i;
  if (lk->dead) return;
  lk->dead = 1;
  lk->depth++;
  for (i = 0; i < lk->nbuckets; i++) {
    mentry_t *e;
    for (e = lk->buckets[i]; e != NULL; e = e->next) {
      while (e->head != NULL) {
        chr_lock_req_t *req = waiter_finish(e->head);
        answer(lk, req, CHR_EUNAVAIL, 0, "lock closed");
      }
    }
  }
  lk->depth--;
  maybe_free_lock(lk);
}

static const chr_lock_vtable_t ml_vtable = {"memory", ml_submit, ml_close};

chr_lock_t *chr_memory_lock_new(void) {
  memlock_t *lk = chr_calloc(1, sizeof *lk);
  chr_lock_init(&lk->base, &ml_vtable);
  lk->nbuckets = 16;
  lk->buckets = chr_calloc(lk->nbuckets, sizeof *lk->buckets);
  lk->sweep_at = 64;
  return &lk->base;
}
