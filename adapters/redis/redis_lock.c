/* redis_lock.c - the Redis lock adapter ("redis://host:port/db?prefix=
 * chronis"): the lock `key` is the string <prefix>:lock:<key> holding its
 * owner, taken with SET NX PX; acquire-again, release and extend are
 * owner-checked scripts, reset a DEL. Semantics as memlock.c: the owner may
 * acquire again (the TTL restarts), ttl <= 0 means no expiry, an expired
 * lock is free for every operation.
 *
 * A blocking acquire waits on the loop, never by blocking it: release and
 * reset PUBLISH the key on <prefix>:lock:released, which a subscription
 * (redis_conn.c's second connection) turns into a new attempt by every
 * waiter for that key; a failed attempt also returns the holder's PTTL,
 * and a uv timer at that moment tries again when the lock expires by TTL
 * (expiry publishes nothing). The waiter's own timeout ends the wait. When
 * the subscription (re)starts, every waiter tries again: a release may have
 * been published while nobody listened. Waiters of one process race like
 * waiters of different processes: exactly one wins each release. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "core/lock.h"
#include "core/loop.h"
#include "redis_conn.h"
#include "core/time.h"

enum { LS_ACQUIRE, LS_RELEASE, LS_EXTEND, LS_RESET, LS__COUNT };

/* KEYS[1] the lock; ARGV owner, ttl in ms ('0': none), channel, key. */
static const char *const lock_scripts[LS__COUNT + 1] = {
    /* LS_ACQUIRE -> 1, or {0, PTTL of the holder} */
    "local v = redis.call('GET', KEYS[1])\n"
    "if not v then\n"
    "  if ARGV[2] == '0' then redis.call('SET', KEYS[1], ARGV[1], 'NX')\n"
    "  else redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) end\n"
    "  return 1\n"
    "elseif v == ARGV[1] then\n"
    "  if ARGV[2] == '0' then redis.call('PERSIST', KEYS[1])\n"
    "  else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end\n"
    "  return 1\n"
    "end\n"
    "return { 0, redis.call('PTTL', KEYS[1]) }\n",
    /* LS_RELEASE -> 1 | 0 */
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  redis.call('DEL', KEYS[1])\n"
    "  redis.call('PUBLISH', ARGV[3], ARGV[4])\n"
    "  return 1\n"
    "end\n"
    "return 0\n",
    /* LS_EXTEND -> 1 | 0 */
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  if ARGV[2] == '0' then redis.call('PERSIST', KEYS[1])\n"
    "  else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end\n"
    "  return 1\n"
    "end\n"
    "return 0\n",
    /* LS_RESET -> 1 | 0 */
    "if redis.call('DEL', KEYS[1]) == 1 then\n"
    "  redis.call('PUBLISH', ARGV[3], ARGV[4])\n"
    "  return 1\n"
    "end\n"
    "return 0\n",
    NULL};

/* A waiter whose lock has no TTL and hears nothing tries again this often
 * (a lost message, a lock reset by hand with DEL). */
#define IDLE_RETRY_MS 1000
/* After a failed attempt (server unavailable). */
#define ERROR_RETRY_MS 100

typedef struct rlock rlock_t;

typedef struct lwaiter {
  rlock_t *lk;
  chr_lock_req_t *req;
  uv_timer_t timer;
  int64_t deadline; /* mono µs, CHR_TIME_NONE: none */
  int busy;         /* an attempt is in flight: it holds w */
  int closed;       /* the timer has closed: freed when not busy */
  int again;        /* try again when it returns */
  int last_status;  /* of the last attempt */
  char *lasterr;
  struct lwaiter *prev, *next;
} lwaiter_t;

struct rlock {
  chr_lock_t base;
  chr_rconn_t *rc;
  char *keyprefix; /* "<prefix>:lock:" */
  char *channel;
  lwaiter_t *waiters;
  int handles;   /* waiter timers not closed */
  int rc_gone;   /* the connection has ended */
  int depth;
  int dead;
};

static void maybe_free(rlock_t *lk) {
  if (!lk->dead || !lk->rc_gone || lk->handles || lk->depth) return;
  free(lk->keyprefix);
  free(lk->channel);
  free(lk);
}

static void rc_freed(void *data) {
  rlock_t *lk = data;
  lk->rc_gone = 1;
  maybe_free(lk);
}

static void answer(rlock_t *lk, chr_lock_req_t *req, int status, int ok, const char *msg) {
  req->status = status;
  req->ok = ok;
  req->priv = NULL;
  if (msg) {
    free(req->errmsg);
    req->errmsg = chr_strdup(msg);
  }
  if (req->cb == NULL) return;
  lk->depth++;
  req->cb(req);
  lk->depth--;
}

static chr_rcmd_t *lock_cmd(rlock_t *lk, int which, chr_lock_req_t *req, chr_rcmd_cb cb,
                            void *data, int flags) {
  chr_rcmd_t *c = chr_rcmd_new(lk->rc, which, cb, data, flags);
  chr_buf_t key;
  int64_t ms = req->ttl_us > 0 ? (req->ttl_us + 999) / 1000 : 0;
  chr_buf_init(&key);
  chr_buf_adds(&key, lk->keyprefix);
  chr_buf_adds(&key, req->key);
  chr_rcmd_args(c, "1");
  chr_rcmd_arg(c, key.p, key.len);
  chr_rcmd_args(c, req->owner ? req->owner : "");
  chr_rcmd_argi(c, which == LS_ACQUIRE || which == LS_EXTEND ? ms : 0);
  chr_rcmd_args(c, lk->channel);
  chr_rcmd_args(c, req->key);
  chr_buf_free(&key);
  return c;
}

/* ---- blocking acquire */

static void waiter_free(lwaiter_t *w) {
  rlock_t *lk = w->lk;
  free(w->lasterr);
  free(w);
  lk->handles--;
  maybe_free(lk);
}

static void waiter_closed(uv_handle_t *h) {
  lwaiter_t *w = h->data;
  w->closed = 1;
  if (!w->busy) waiter_free(w);
}

static chr_lock_req_t *waiter_finish(lwaiter_t *w) {
  rlock_t *lk = w->lk;
  chr_lock_req_t *req = w->req;
  if (w->prev) w->prev->next = w->next;
  else lk->waiters = w->next;
  if (w->next) w->next->prev = w->prev;
  w->req = NULL;
  uv_timer_stop(&w->timer);
  uv_close((uv_handle_t *)&w->timer, waiter_closed);
  return req;
}

static void attempt(lwaiter_t *w);

static void waiter_timer_cb(uv_timer_t *t) {
  lwaiter_t *w = t->data;
  if (w->req == NULL || w->busy) return; /* the attempt's answer re-arms */
  if (w->deadline != CHR_TIME_NONE && chr_time_mono() >= w->deadline) {
    rlock_t *lk = w->lk;
    int status = w->last_status;
    char *msg = w->lasterr ? chr_strdup(w->lasterr) : NULL;
    chr_lock_req_t *req = waiter_finish(w);
    lk->depth++;
    answer(lk, req, status, 0, msg);
    lk->depth--;
    free(msg);
    maybe_free(lk);
    return;
  }
  attempt(w);
}

/* Waits until the next attempt: in `ms`, or at the deadline if sooner. */
static void waiter_arm(lwaiter_t *w, int64_t ms) {
  int64_t now = chr_time_mono();
  if (w->deadline != CHR_TIME_NONE) {
    int64_t left = w->deadline > now ? (w->deadline - now + 999) / 1000 : 0;
    if (ms < 0 || left < ms) ms = left;
  }
  if (ms < 0) ms = IDLE_RETRY_MS;
  uv_update_time(chr_loop());
  uv_timer_start(&w->timer, waiter_timer_cb, (uint64_t)ms, 0);
}

static void attempt_cb(chr_rcmd_t *c, redisReply *r, int status, const char *msg) {
  lwaiter_t *w = c->data;
  rlock_t *lk = w->lk;
  int64_t wait_ms = -1;
  w->busy = 0;
  if (w->closed) {
    waiter_free(w);
    return;
  }
  if (w->req == NULL) return; /* answered meanwhile (lock closed) */
  lk->depth++;
  free(w->lasterr);
  w->lasterr = NULL;
  w->last_status = 0;
  if (status != 0 || r == NULL || r->type == REDIS_REPLY_ERROR) {
    w->last_status = CHR_EUNAVAIL;
    w->lasterr = chr_strdup(status ? msg : r ? r->str : "no reply");
    wait_ms = ERROR_RETRY_MS;
  } else if (r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
    answer(lk, waiter_finish(w), 0, 1, NULL);
    lk->depth--;
    maybe_free(lk);
    return;
  } else if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
             r->element[1]->type == REDIS_REPLY_INTEGER) {
    long long pttl = r->element[1]->integer;
    /* -2: expired between GET and PTTL; -1: no TTL, wait for a message. */
    wait_ms = pttl == -2 ? 0 : pttl == -1 ? -1 : pttl + 1;
  }
  if (w->again) {
    w->again = 0;
    wait_ms = 0;
  }
  waiter_arm(w, wait_ms);
  lk->depth--;
  maybe_free(lk);
}

static void attempt(lwaiter_t *w) {
  if (w->busy) {
    w->again = 1;
    return;
  }
  w->busy = 1;
  uv_timer_stop(&w->timer);
  chr_rconn_send(lock_cmd(w->lk, LS_ACQUIRE, w->req, attempt_cb, w, CHR_RCMD_IDEMPOTENT));
}

static void released_msg(void *data, const char *payload, size_t len) {
  rlock_t *lk = data;
  lwaiter_t *w, *next;
  lk->depth++;
  for (w = lk->waiters; w != NULL; w = next) {
    next = w->next;
    if (payload == NULL || (strlen(w->req->key) == len && memcmp(w->req->key, payload, len) == 0))
      attempt(w);
  }
  lk->depth--;
  maybe_free(lk);
}

static void wait_for(rlock_t *lk, chr_lock_req_t *req) {
  lwaiter_t *w = chr_calloc(1, sizeof *w);
  w->lk = lk;
  w->req = req;
  w->deadline = req->timeout_us > 0 ? chr_time_mono() + req->timeout_us : CHR_TIME_NONE;
  uv_timer_init(chr_loop(), &w->timer);
  w->timer.data = w;
  lk->handles++;
  w->next = lk->waiters;
  if (lk->waiters) lk->waiters->prev = w;
  lk->waiters = w;
  req->priv = w;
  chr_rconn_subscribe(lk->rc, lk->channel, released_msg, lk);
  attempt(w);
}

/* ---- single operations */

static void op_cb(chr_rcmd_t *c, redisReply *r, int status, const char *msg) {
  chr_lock_req_t *req = c->data;
  rlock_t *lk = (rlock_t *)req->lock;
  char buf[300];
  lk->depth++;
  if (status != 0) {
    answer(lk, req, status, 0, msg);
  } else if (r->type == REDIS_REPLY_ERROR) {
    snprintf(buf, sizeof buf, "redis: %.*s", (int)r->len, r->str);
    answer(lk, req, CHR_EUNAVAIL, 0, buf);
  } else {
    answer(lk, req, 0, r->type == REDIS_REPLY_INTEGER && r->integer == 1, NULL);
  }
  lk->depth--;
  maybe_free(lk);
}

static int rl_submit(chr_lock_t *l, chr_lock_req_t *req) {
  rlock_t *lk = (rlock_t *)l;
  if (lk->dead) return CHR_EUNAVAIL;
  req->lock = l;
  req->status = 0;
  req->ok = 0;
  if (req->key == NULL || (req->op != CHR_LOCK_RESET && req->owner == NULL) ||
      req->op > CHR_LOCK_RESET)
    return CHR_EINVAL;
  if (req->op == CHR_LOCK_ACQUIRE && req->blocking) {
    wait_for(lk, req);
    return 0;
  }
  static const int which[] = {LS_ACQUIRE, LS_RELEASE, LS_EXTEND, LS_RESET};
  /* Acquire and extend by an owner give the same answer when repeated. */
  int flags = req->op == CHR_LOCK_ACQUIRE || req->op == CHR_LOCK_EXTEND ? CHR_RCMD_IDEMPOTENT : 0;
  chr_rconn_send(lock_cmd(lk, which[req->op], req, op_cb, req, flags));
  return 0;
}

static void rl_close(chr_lock_t *l) {
  rlock_t *lk = (rlock_t *)l;
  if (lk->dead) return;
  lk->dead = 1;
  lk->depth++;
  while (lk->waiters != NULL) answer(lk, waiter_finish(lk->waiters), CHR_EUNAVAIL, 0, "lock closed");
  chr_rconn_close(lk->rc);
  lk->depth--;
  maybe_free(lk);
}

static const chr_lock_vtable_t rl_vtable = {"redis", rl_submit, rl_close};

int chr_redis_lock_open(const chr_opts_t *opts, chr_lock_t **out, char *err, size_t errlen) {
  chr_redis_url_t u;
  int rc = chr_redis_opts_parse(opts, &u, 1, err, errlen);
  if (rc != 0) return rc;
  rlock_t *lk = chr_calloc(1, sizeof *lk);
  chr_lock_init(&lk->base, &rl_vtable);
  lk->keyprefix = chr_sprintf("%s:lock:", u.prefix);
  lk->channel = chr_sprintf("%s:lock:released", u.prefix);
  chr_rconn_opts_t o = {&u, "chronis-lock", lock_scripts, rc_freed, lk};
  lk->rc = chr_rconn_new(&o);
  chr_redis_url_free(&u);
  *out = &lk->base;
  return 0;
}
