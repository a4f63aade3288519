/* redis_conn.c - connections to one Redis server (see redis_conn.h).
 *
 * Each hiredis context lives in an rctx, reference counted: one reference
 * for hiredis (dropped when hiredis says the context is gone: the
 * disconnect callback, a failed connect, or our own free of a context that
 * never connected) and one per command in flight on it, so a reply
 * callback always finds its rctx. A link (command or pub/sub) points to its
 * current rctx and reopens after a loss with capped exponential backoff.
 *
 * Commands go out only on a ready link: connected, authenticated, database
 * selected and a PING answered (so a server still loading its data answers
 * LOADING to the probe, not to our commands, and is retried later). Until
 * then they wait, each with a deadline (queue_timeout). When a link is lost
 * with commands in flight, the idempotent ones wait again, ahead of
 * commands never sent and in their original order; the others are answered
 * CHR_EUNAVAIL, since they may or may not have been applied.
 *
 * Scripts go out as EVALSHA with the SHA1 computed here; a NOSCRIPT reply
 * (server restarted, SCRIPT FLUSH) sends the same command again as EVAL,
 * which also puts the script back in the server's cache.
 *
 * Replies are read into arenas that the readers own (chr_reply_arena_t): each
 * reply's objects in one block or a few, freed with the reply. */
#include "redis_conn.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>
#include <hiredis/adapters/libuv.h>
#include <openssl/evp.h>
#include <uv.h>

#include "core/log.h"
#include "core/loop.h"
#include "core/metrics.h"
#include "core/time.h"

enum { LINK_CMD, LINK_SUB, NLINKS };

/* Headroom before a command's arguments for the header written at send. */
#define HEADROOM 128
#define CHECK_MS 100
#define BACKOFF_MIN_US 50000
/* A first contact that takes longer than this is logged, and then again
 * every PROGRESS_EVERY_US while commands wait for it. */
#define PROGRESS_AFTER_US 1000000
#define PROGRESS_EVERY_US 5000000

/* Replies are built in arenas (chr_reply_arena_t, redis_conn.h): each
 * reply's objects, its strings inline, in one block (or a few for a large
 * one), freed at once. hiredis' default gives every element two
 * allocations (the object and its string) and frees them one by one; a
 * claimed job's record is some 30 elements, read once per job. */
typedef struct reply_block {
  struct reply_block *next;
  size_t used, cap;
} reply_block_t;

typedef struct rctx {
  chr_rconn_t *rc;
  chr_reply_arena_t arena; /* its reader's */
  redisAsyncContext *ac; /* NULL once hiredis has let it go */
  int kind;
  int refs;
  unsigned connected : 1, ready : 1, dead : 1;
} rctx_t;

typedef struct rlink {
  rctx_t *x;         /* current context, NULL while down */
  uv_timer_t retry;  /* reconnect after backoff */
  uv_timer_t guard;  /* connect timeout */
  uv_getaddrinfo_t *gai;
  int attempts;      /* failed attempts since the last ready */
  int was_up;        /* for log messages on transitions */
  int lost;          /* it was up, went down, and is not up again yet */
} rlink_t;

struct chr_rconn {
  chr_redis_url_t url;
  char *name;
  struct {
    const char *body;
    size_t len;
    char sha[41];
  } *scripts;
  int nscripts;
  rlink_t link[NLINKS];
  uv_timer_t check; /* queue deadlines and the reply watchdog */
  chr_rcmd_t *wait_head, *wait_tail, *retry_last; /* commands not sent */
  chr_rcmd_t *fly_head, *fly_tail;                /* commands in flight */
  char *channel;
  chr_rconn_msg_cb msg_cb;
  void *msg_data;
  char lasterr[200];
  void (*on_free)(void *);
  void *data;
  int handles; /* uv handles and requests not yet closed / finished */
  int nctx;    /* rctx alive */
  int depth;   /* our callbacks on the stack */
  int closing;
  /* The first contact: when commands started waiting for it (0: not
   * yet), when progress is logged next (0: not logged yet), and whether
   * the command link has ever been ready. */
  int64_t contact_since, contact_next;
  int ever_up;
};

static void link_open(chr_rconn_t *rc, int kind);
static void link_kill(rctx_t *x, const char *why);
static void flush_wait(chr_rconn_t *rc);
static void check_arm(chr_rconn_t *rc);

/* ---- commands */

static void resp_bulk(chr_buf_t *b, const char *s, size_t n) {
  chr_buf_printf(b, "$%zu\r\n", n);
  chr_buf_add(b, s, n);
  chr_buf_add(b, "\r\n", 2);
}

chr_rcmd_t *chr_rcmd_new(chr_rconn_t *rc, int script, chr_rcmd_cb cb, void *data, int flags) {
  chr_rcmd_t *c = chr_calloc(1, sizeof *c);
  c->rc = rc;
  c->cb = cb;
  c->data = data;
  c->flags = flags;
  c->script = script;
  chr_buf_init(&c->tail);
  chr_buf_reserve(&c->tail, HEADROOM + 256);
  c->tail.len = HEADROOM;
  return c;
}

/* Writes v in decimal at buf (room for 20 digits); returns the length. */
static size_t put_u64(char *buf, uint64_t v) {
  char tmp[21];
  size_t n = 0;
  do tmp[n++] = (char)('0' + v % 10); while ((v /= 10) != 0);
  for (size_t i = 0; i < n; i++) buf[i] = tmp[n - 1 - i];
  return n;
}

void chr_rcmd_arg(chr_rcmd_t *c, const char *p, size_t n) {
  chr_buf_reserve(&c->tail, n + 26);
  char *o = c->tail.p + c->tail.len;
  *o++ = '$';
  o += put_u64(o, n);
  *o++ = '\r';
  *o++ = '\n';
  c->tail.len = (size_t)(o - c->tail.p);
  if (n) memcpy(c->tail.p + c->tail.len, p, n);
  c->tail.len += n;
  c->tail.p[c->tail.len++] = '\r';
  c->tail.p[c->tail.len++] = '\n';
  c->tail.p[c->tail.len] = '\0';
  c->nargs++;
}

void chr_rcmd_args(chr_rcmd_t *c, const char *s) {
  chr_rcmd_arg(c, s, strlen(s));
}

void chr_rcmd_argi(chr_rcmd_t *c, long long v) {
  char num[32];
  size_t k = 0;
  if (v < 0) num[k++] = '-';
  k += put_u64(num + k, v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v);
  chr_rcmd_arg(c, num, k);
}

static void cmd_free(chr_rcmd_t *c) {
  chr_buf_free(&c->tail);
  free(c);
}

/* Answers c and frees it. */
static void cmd_finish(chr_rcmd_t *c, redisReply *reply, int status, const char *msg) {
  chr_rconn_t *rc = c->rc;
  rc->depth++;
  c->cb(c, reply, status, msg);
  rc->depth--;
  cmd_free(c);
}

static void fly_unlink(chr_rconn_t *rc, chr_rcmd_t *c) {
  if (c->prev) c->prev->next = c->next;
  else rc->fly_head = c->next;
  if (c->next) c->next->prev = c->prev;
  else rc->fly_tail = c->prev;
  c->prev = c->next = NULL;
}

static void wait_unlink(chr_rconn_t *rc, chr_rcmd_t *c) {
  if (rc->retry_last == c) rc->retry_last = c->prev;
  if (c->prev) c->prev->next = c->next;
  else rc->wait_head = c->next;
  if (c->next) c->next->prev = c->prev;
  else rc->wait_tail = c->prev;
  c->prev = c->next = NULL;
}

static void insert_after(chr_rconn_t *rc, chr_rcmd_t *at, chr_rcmd_t *c) {
  c->prev = at;
  c->next = at ? at->next : rc->wait_head;
  if (c->next) c->next->prev = c;
  else rc->wait_tail = c;
  if (at) at->next = c;
  else rc->wait_head = c;
}

/* Waits for a ready link; a command sent once before (retry) goes ahead of
 * those never sent. */
static void wait_add(chr_rconn_t *rc, chr_rcmd_t *c, int retry) {
  c->deadline = chr_time_mono() + rc->url.queue_us;
  if (retry) {
    insert_after(rc, rc->retry_last, c);
    rc->retry_last = c;
  } else {
    insert_after(rc, rc->wait_tail, c);
  }
  check_arm(rc);
}

static const char *unavail_msg(chr_rconn_t *rc, char *buf, size_t n, const char *what) {
  snprintf(buf, n, "redis %s:%d %s%s%s%s", rc->url.host, rc->url.port, what,
           rc->lasterr[0] ? " (" : "", rc->lasterr, rc->lasterr[0] ? ")" : "");
  return buf;
}

static void reply_cb(redisAsyncContext *ac, void *r, void *priv);

static void ctx_release(rctx_t *x);

/* Writes c on ready context x (eval: the script body instead of its sha). */
static void cmd_write(rctx_t *x, chr_rcmd_t *c, int eval) {
  chr_rconn_t *rc = x->rc;
  char hdr[HEADROOM];
  int n;
  const char *p;
  size_t len;
  chr_buf_t big;
  chr_buf_init(&big);
  if (c->script < 0) {
    n = snprintf(hdr, sizeof hdr, "*%d\r\n", c->nargs);
  } else if (!eval) {
    n = snprintf(hdr, sizeof hdr, "*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n", c->nargs + 2,
                 rc->scripts[c->script].sha);
  } else {
    n = -1;
    chr_buf_printf(&big, "*%d\r\n$4\r\nEVAL\r\n", c->nargs + 2);
    resp_bulk(&big, rc->scripts[c->script].body, rc->scripts[c->script].len);
    chr_buf_add(&big, c->tail.p + HEADROOM, c->tail.len - HEADROOM);
  }
  if (n >= 0) {
    memcpy(c->tail.p + HEADROOM - n, hdr, (size_t)n);
    p = c->tail.p + HEADROOM - n;
    len = c->tail.len - HEADROOM + (size_t)n;
  } else {
    p = big.p;
    len = big.len;
  }
  if (redisAsyncFormattedCommand(x->ac, reply_cb, c, p, len) != REDIS_OK) {
    /* The context is going away: wait for the next one, and send nothing
     * more on this one. */
    x->ready = 0;
    chr_buf_free(&big);
    wait_add(rc, c, c->sent_at != 0);
    return;
  }
  chr_buf_free(&big);
  c->sent_at = chr_time_mono();
  c->ctx = x;
  x->refs++;
  c->prev = rc->fly_tail;
  c->next = NULL;
  if (rc->fly_tail) rc->fly_tail->next = c;
  else rc->fly_head = c;
  rc->fly_tail = c;
  check_arm(rc);
}

void chr_rconn_send(chr_rcmd_t *c) {
  chr_rconn_t *rc = c->rc;
  rctx_t *x = rc->link[LINK_CMD].x;
  char buf[300];
  if (rc->closing) {
    cmd_finish(c, NULL, CHR_EUNAVAIL, unavail_msg(rc, buf, sizeof buf, "connection closed"));
    return;
  }
  if (x != NULL && x->ready && rc->wait_head == NULL) {
    cmd_write(x, c, 0);
    return;
  }
  wait_add(rc, c, 0);
  if (x == NULL && !uv_is_active((uv_handle_t *)&rc->link[LINK_CMD].retry) &&
      rc->link[LINK_CMD].gai == NULL)
    link_open(rc, LINK_CMD);
}

static void reply_cb(redisAsyncContext *ac, void *r, void *priv) {
  chr_rcmd_t *c = priv;
  rctx_t *x = c->ctx;
  chr_rconn_t *rc = x->rc;
  redisReply *reply = r;
  char buf[300];
  (void)ac;
  fly_unlink(rc, c);
  rc->depth++;
  if (reply == NULL) {
    x->ready = 0; /* the context is going away: send nothing more on it */
    if (rc->closing)
      cmd_finish(c, NULL, CHR_EUNAVAIL, unavail_msg(rc, buf, sizeof buf, "connection closed"));
    else if (c->flags & CHR_RCMD_IDEMPOTENT)
      wait_add(rc, c, 1);
    else
      cmd_finish(c, NULL, CHR_EUNAVAIL,
                 unavail_msg(rc, buf, sizeof buf,
                             "connection lost before the reply: the request may or may not "
                             "have been applied"));
  } else if (reply->type == REDIS_REPLY_ERROR && c->script >= 0 &&
             chr_reply_is_error(reply, "NOSCRIPT")) {
    if (x->ready && !x->dead) cmd_write(x, c, 1);
    else wait_add(rc, c, 1);
  } else {
    cmd_finish(c, reply, 0, NULL);
  }
  rc->depth--;
  ctx_release(x);
}

int chr_reply_is_error(const redisReply *r, const char *prefix) {
  size_t n = strlen(prefix);
  return r != NULL && r->type == REDIS_REPLY_ERROR && r->len >= n &&
         memcmp(r->str, prefix, n) == 0;
}

/* ---- replies (chr_reply_arena_t) */

#define ALIGNED(n) (((n) + 15) & ~(size_t)15)
#define BLOCK_HEAD ALIGNED(sizeof(reply_block_t))
#define BLOCK_FIRST 4096
#define BLOCK_MORE 32768

static reply_block_t *block_new(size_t need, size_t size) {
  size_t cap = need > size ? need : size;
  reply_block_t *b = chr_malloc(BLOCK_HEAD + cap);
  b->next = NULL;
  b->used = 0;
  b->cap = cap;
  return b;
}

/* An object of n bytes for task: the root of a reply starts a block of
 * its own, at its start (reply_free finds the block from it); the others
 * go after it, in further blocks linked to it when it is full. */
static redisReply *reply_obj(const redisReadTask *task, int type, size_t n) {
  chr_reply_arena_t *a = task->privdata;
  reply_block_t *b;
  n = ALIGNED(n);
  if (task->parent == NULL) {
    b = a->cur = block_new(n, BLOCK_FIRST);
  } else {
    b = a->cur;
    if (b->used + n > b->cap) {
      reply_block_t *more = block_new(n, BLOCK_MORE);
      more->next = b->next;
      b->next = more;
      b = a->cur = more;
    }
  }
  redisReply *r = (redisReply *)((char *)b + BLOCK_HEAD + b->used);
  b->used += n;
  memset(r, 0, sizeof *r);
  r->type = type;
  if (task->parent != NULL) {
    redisReply *parent = task->parent->obj;
    parent->element[task->idx] = r;
  }
  return r;
}

static void *reply_string(const redisReadTask *task, char *str, size_t len) {
  redisReply *r = reply_obj(task, task->type, sizeof *r + len + 1);
  r->str = (char *)(r + 1);
  memcpy(r->str, str, len);
  r->str[len] = '\0';
  r->len = len;
  return r;
}

static void *reply_array(const redisReadTask *task, int elements) {
  size_t n = elements > 0 ? (size_t)elements : 0;
  redisReply *r = reply_obj(task, REDIS_REPLY_ARRAY, sizeof *r + n * sizeof(redisReply *));
  if (n > 0) {
    r->element = (redisReply **)(r + 1);
    memset(r->element, 0, n * sizeof *r->element);
  }
  r->elements = n;
  return r;
}

static void *reply_integer(const redisReadTask *task, long long value) {
  redisReply *r = reply_obj(task, REDIS_REPLY_INTEGER, sizeof *r);
  r->integer = value;
  return r;
}

static void *reply_nil(const redisReadTask *task) {
  return reply_obj(task, REDIS_REPLY_NIL, sizeof(redisReply));
}

/* hiredis frees only whole replies (their roots). */
static void reply_free(void *root) {
  reply_block_t *b = (reply_block_t *)((char *)root - BLOCK_HEAD);
  while (b != NULL) {
    reply_block_t *next = b->next;
    free(b);
    b = next;
  }
}

redisReplyObjectFunctions chr_reply_fns = {reply_string, reply_array, reply_integer, reply_nil,
                                           reply_free};

/* ---- contexts and links */

static void maybe_free(chr_rconn_t *rc) {
  if (!rc->closing || rc->handles || rc->nctx || rc->depth) return;
  void (*on_free)(void *) = rc->on_free;
  void *data = rc->data;
  chr_redis_url_free(&rc->url);
  free(rc->scripts);
  free(rc->name);
  free(rc->channel);
  free(rc);
  if (on_free) on_free(data);
}

static void ctx_release(rctx_t *x) {
  chr_rconn_t *rc = x->rc;
  if (--x->refs > 0) return;
  free(x);
  rc->nctx--;
  maybe_free(rc);
}

static int64_t backoff_us(chr_rconn_t *rc, rlink_t *l) {
  int64_t d;
  if (l->attempts <= 1) return l->attempts == 0 ? 0 : BACKOFF_MIN_US;
  d = BACKOFF_MIN_US << (l->attempts - 1 > 20 ? 20 : l->attempts - 1);
  return d > rc->url.backoff_max_us ? rc->url.backoff_max_us : d;
}

static void retry_cb(uv_timer_t *t) {
  chr_rconn_t *rc = t->data;
  int kind = t == &rc->link[LINK_CMD].retry ? LINK_CMD : LINK_SUB;
  if (kind == LINK_CMD && rc->wait_head == NULL && rc->fly_head == NULL && !rc->link[kind].was_up)
    return; /* nobody is waiting: the next command reconnects */
  link_open(rc, kind);
}

/* The context of link `kind` is gone or failed: reconnect after backoff. */
static void link_down(chr_rconn_t *rc, rctx_t *x, const char *why) {
  rlink_t *l = &rc->link[x->kind];
  if (l->x != x) return;
  l->x = NULL;
  uv_timer_stop(&l->guard);
  if (why && *why) snprintf(rc->lasterr, sizeof rc->lasterr, "%s", why);
  if (rc->closing) return;
  if (l->was_up) l->lost = 1;
  if (l->was_up && x->kind == LINK_CMD)
    chr_log(CHR_LOG_WARN, NULL, "redis %s:%d: connection lost (%s); reconnecting", rc->url.host,
            rc->url.port, rc->lasterr);
  l->was_up = 0;
  l->attempts++;
  /* The subscription is always wanted; the command link only when
   * commands wait (else the next command opens it). */
  uv_timer_start(&l->retry, retry_cb, (uint64_t)(backoff_us(rc, l) / 1000), 0);
}

static void connect_cb(const redisAsyncContext *ac, int status) {
  rctx_t *x = ac->data;
  chr_rconn_t *rc = x->rc;
  if (status != REDIS_OK) {
    /* hiredis frees the context after this callback, answering the setup
     * commands with NULL: they find no rctx. */
    link_down(rc, x, ac->errstr[0] ? ac->errstr : "connection failed");
    ((redisAsyncContext *)ac)->data = NULL;
    x->ac = NULL;
    x->dead = 1;
    ctx_release(x);
    return;
  }
  x->connected = 1;
  /* Notices a peer gone without a word (no FIN), on the subscription too. */
  redisEnableKeepAlive(&((redisAsyncContext *)ac)->c);
}

static void disconnect_cb(const redisAsyncContext *ac, int status) {
  rctx_t *x = ac->data;
  chr_rconn_t *rc = x->rc;
  (void)status;
  link_down(rc, x, ac->err ? ac->errstr : "connection closed");
  ((redisAsyncContext *)ac)->data = NULL;
  x->ac = NULL;
  x->dead = 1;
  ctx_release(x);
}

/* Drops context x (kept alive until hiredis lets it go). */
static void link_kill(rctx_t *x, const char *why) {
  chr_rconn_t *rc = x->rc;
  if (x->dead || x->ac == NULL) return;
  x->dead = 1;
  link_down(rc, x, why);
  if (x->connected) {
    redisAsyncFree(x->ac); /* disconnect_cb releases x, now or after the callback */
  } else {
    redisAsyncContext *ac = x->ac;
    x->refs++;
    redisAsyncFree(ac); /* never connected: freed here, no disconnect callback */
    x->ac = NULL;
    x->refs--;
    ctx_release(x);
  }
}

/* The server as a URL without credentials, for log lines. */
static void server_url(const chr_rconn_t *rc, char *buf, size_t n) {
  int v6 = strchr(rc->url.host, ':') != NULL;
  snprintf(buf, n, "redis://%s%s%s:%d", v6 ? "[" : "", rc->url.host, v6 ? "]" : "", rc->url.port);
}

/* Commands wait for the first contact with the server: after a second,
 * say so, then every few seconds where it is (an app waiting on a server
 * that is down or does not answer is otherwise silent until its commands
 * time out). Called from check_cb while commands wait. */
static void contact_progress(chr_rconn_t *rc, int64_t now) {
  if (rc->ever_up || rc->wait_head == NULL) return;
  if (rc->contact_since == 0) rc->contact_since = now;
  int64_t waited = now - rc->contact_since;
  if (waited < PROGRESS_AFTER_US || (rc->contact_next && now < rc->contact_next)) return;
  char url[300];
  server_url(rc, url, sizeof url);
  const rlink_t *l = &rc->link[LINK_CMD];
  if (rc->contact_next == 0) {
    chr_log(CHR_LOG_INFO, NULL, "connecting to %s ...", url);
  } else {
    const char *state = l->x == NULL          ? "waiting to try again"
                        : !l->x->connected   ? "connecting"
                                             : "connected, waiting for the server to answer";
    chr_log(CHR_LOG_WARN, NULL, "still connecting to %s after %.0fs: attempt %d, %s; last error: %s",
            url, (double)waited / 1e6, l->attempts + 1, state,
            rc->lasterr[0] ? rc->lasterr : "none yet");
  }
  rc->contact_next = now + PROGRESS_EVERY_US;
}

static void became_ready(rctx_t *x) {
  chr_rconn_t *rc = x->rc;
  rlink_t *l = &rc->link[x->kind];
  x->ready = 1;
  uv_timer_stop(&l->guard);
  if (x->kind == LINK_CMD && !rc->ever_up && rc->contact_next) {
    char url[300];
    server_url(rc, url, sizeof url);
    chr_log(CHR_LOG_INFO, NULL, "connected to %s after %.1fs (attempt %d)", url,
            (double)(chr_time_mono() - rc->contact_since) / 1e6, l->attempts + 1);
  } else if (l->attempts > 0 && x->kind == LINK_CMD) {
    chr_log(CHR_LOG_INFO, NULL, "redis %s:%d: connected", rc->url.host, rc->url.port);
  }
  if (x->kind == LINK_CMD) rc->ever_up = 1;
  if (l->lost) {
    l->lost = 0;
    chr_metrics_reconnect("redis");
  }
  l->attempts = 0;
  l->was_up = 1;
  rc->lasterr[0] = '\0';
  if (x->kind == LINK_CMD) flush_wait(rc);
}

/* Replies to the connection's own setup commands; priv is the step name. */
static void setup_cb(redisAsyncContext *ac, void *r, void *priv) {
  rctx_t *x = ac->data;
  redisReply *reply = r;
  const char *step = priv;
  char why[200];
  if (reply == NULL || x == NULL || x->dead) return;
  if (reply->type == REDIS_REPLY_ERROR) {
    snprintf(why, sizeof why, "%s failed: %.*s", step, (int)reply->len, reply->str);
    link_kill(x, why);
    return;
  }
  if (strcmp(step, "PING") == 0) became_ready(x);
}

static void sub_cb(redisAsyncContext *ac, void *r, void *priv) {
  rctx_t *x = ac->data;
  redisReply *reply = r;
  char why[200];
  (void)priv;
  if (reply == NULL || x == NULL || x->dead) return;
  chr_rconn_t *rc = x->rc;
  if (reply->type == REDIS_REPLY_ERROR) {
    snprintf(why, sizeof why, "SUBSCRIBE failed: %.*s", (int)reply->len, reply->str);
    link_kill(x, why);
    return;
  }
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
      reply->element[0]->type != REDIS_REPLY_STRING)
    return;
  rc->depth++;
  if (strcmp(reply->element[0]->str, "subscribe") == 0) {
    became_ready(x);
    if (rc->msg_cb) rc->msg_cb(rc->msg_data, NULL, 0);
  } else if (strcmp(reply->element[0]->str, "message") == 0 &&
             reply->element[2]->type == REDIS_REPLY_STRING) {
    if (rc->msg_cb) rc->msg_cb(rc->msg_data, reply->element[2]->str, reply->element[2]->len);
  }
  rc->depth--;
}

static void guard_cb(uv_timer_t *t) {
  chr_rconn_t *rc = t->data;
  int kind = t == &rc->link[LINK_CMD].guard ? LINK_CMD : LINK_SUB;
  rctx_t *x = rc->link[kind].x;
  if (x != NULL && !x->ready) link_kill(x, "connect timeout");
}

/* hiredis 0.14's libuv adapter drops the callbacks libuv makes with an
 * error status (POLLERR: a refused connect, a reset connection, as after
 * kill -9 of a server that had unread input): hiredis then waits forever.
 * These wrappers keep the adapter's bookkeeping and handle, and route an
 * error to hiredis, which reads the socket's error and disconnects, as
 * later hiredis releases do. */
static void poll_cb(uv_poll_t *handle, int status, int events) {
  redisLibuvEvents *p = handle->data;
  if (status == 0) {
    redisLibuvPoll(handle, status, events);
    return;
  }
  if (p->context != NULL && (p->events & UV_READABLE)) redisAsyncHandleRead(p->context);
  if (p->context != NULL && (p->events & UV_WRITABLE)) redisAsyncHandleWrite(p->context);
}

/* hiredis asks for the events it already watches on every command it
 * queues and after every read. uv_poll_start stops the handle first,
 * which on Linux is an epoll_ctl DEL, and the next loop iteration adds it
 * back: two system calls per command for nothing. So only a change
 * reaches libuv, once, with the wrapper above as the callback. */
static void ev_set(void *privdata, int events) {
  redisLibuvEvents *p = privdata;
  if (events == p->events) return;
  p->events = events;
  if (events) uv_poll_start(&p->handle, events, poll_cb);
  else uv_poll_stop(&p->handle);
}

static void ev_add_read(void *privdata) {
  ev_set(privdata, ((redisLibuvEvents *)privdata)->events | UV_READABLE);
}

static void ev_del_read(void *privdata) {
  ev_set(privdata, ((redisLibuvEvents *)privdata)->events & ~UV_READABLE);
}

static void ev_add_write(void *privdata) {
  ev_set(privdata, ((redisLibuvEvents *)privdata)->events | UV_WRITABLE);
}

static void ev_del_write(void *privdata) {
  ev_set(privdata, ((redisLibuvEvents *)privdata)->events & ~UV_WRITABLE);
}

static void link_connect(chr_rconn_t *rc, int kind, const char *ip) {
  rlink_t *l = &rc->link[kind];
  redisAsyncContext *ac = redisAsyncConnect(ip, rc->url.port);
  if (ac == NULL || ac->err) {
    snprintf(rc->lasterr, sizeof rc->lasterr, "%s", ac ? ac->errstr : "out of memory");
    if (ac) redisAsyncFree(ac);
    l->attempts++;
    uv_timer_start(&l->retry, retry_cb, (uint64_t)(backoff_us(rc, l) / 1000), 0);
    return;
  }
  rctx_t *x = chr_calloc(1, sizeof *x);
  x->rc = rc;
  x->ac = ac;
  x->kind = kind;
  x->refs = 1;
  rc->nctx++;
  ac->data = x;
  ac->c.reader->fn = &chr_reply_fns;
  ac->c.reader->privdata = &x->arena;
  if (redisLibuvAttach(ac, chr_loop()) != REDIS_OK) {
    snprintf(rc->lasterr, sizeof rc->lasterr, "cannot watch the socket");
    redisAsyncFree(ac);
    x->ac = NULL;
    ctx_release(x);
    l->attempts++;
    uv_timer_start(&l->retry, retry_cb, (uint64_t)(backoff_us(rc, l) / 1000), 0);
    return;
  }
  ac->ev.addRead = ev_add_read;
  ac->ev.delRead = ev_del_read;
  ac->ev.addWrite = ev_add_write;
  ac->ev.delWrite = ev_del_write;
  redisAsyncSetConnectCallback(ac, connect_cb);
  redisAsyncSetDisconnectCallback(ac, disconnect_cb);
  l->x = x;
  uv_timer_start(&l->guard, guard_cb, (uint64_t)(rc->url.connect_us / 1000) + 1, 0);
  /* Setup, pipelined; the PING answer makes the link ready. */
  if (rc->url.password) {
    if (rc->url.user)
      redisAsyncCommand(ac, setup_cb, (void *)"AUTH", "AUTH %s %s", rc->url.user,
                        rc->url.password);
    else
      redisAsyncCommand(ac, setup_cb, (void *)"AUTH", "AUTH %s", rc->url.password);
  }
  if (kind == LINK_CMD) {
    if (rc->url.db != 0) redisAsyncCommand(ac, setup_cb, (void *)"SELECT", "SELECT %d", rc->url.db);
    redisAsyncCommand(ac, setup_cb, (void *)"CLIENT SETNAME", "CLIENT SETNAME %s", rc->name);
    redisAsyncCommand(ac, setup_cb, (void *)"PING", "PING");
  } else {
    redisAsyncCommand(ac, sub_cb, NULL, "SUBSCRIBE %s", rc->channel);
  }
}

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  chr_rconn_t *rc = req->data;
  int kind = req == rc->link[LINK_CMD].gai ? LINK_CMD : LINK_SUB;
  char ip[INET6_ADDRSTRLEN] = "";
  rc->link[kind].gai = NULL;
  rc->handles--;
  free(req);
  if (status == 0 && res != NULL) {
    if (res->ai_family == AF_INET6)
      uv_ip6_name((struct sockaddr_in6 *)res->ai_addr, ip, sizeof ip);
    else
      uv_ip4_name((struct sockaddr_in *)res->ai_addr, ip, sizeof ip);
  }
  if (res) uv_freeaddrinfo(res);
  if (rc->closing) {
    maybe_free(rc);
    return;
  }
  if (ip[0] == '\0') {
    snprintf(rc->lasterr, sizeof rc->lasterr, "cannot resolve '%s': %s", rc->url.host,
             status ? uv_strerror(status) : "no address");
    rc->link[kind].attempts++;
    uv_timer_start(&rc->link[kind].retry, retry_cb,
                   (uint64_t)(backoff_us(rc, &rc->link[kind]) / 1000), 0);
    return;
  }
  link_connect(rc, kind, ip);
}

static void link_open(chr_rconn_t *rc, int kind) {
  rlink_t *l = &rc->link[kind];
  unsigned char tmp[sizeof(struct in6_addr)];
  if (rc->closing || l->x != NULL || l->gai != NULL) return;
  uv_timer_stop(&l->retry);
  if (inet_pton(AF_INET, rc->url.host, tmp) == 1 || inet_pton(AF_INET6, rc->url.host, tmp) == 1) {
    link_connect(rc, kind, rc->url.host);
    return;
  }
  /* A name: resolve off the loop thread (hiredis would block in
   * getaddrinfo). */
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  l->gai = chr_malloc(sizeof *l->gai);
  l->gai->data = rc;
  if (uv_getaddrinfo(chr_loop(), l->gai, gai_cb, rc->url.host, NULL, &hints) != 0) {
    free(l->gai);
    l->gai = NULL;
    link_connect(rc, kind, rc->url.host);
    return;
  }
  rc->handles++;
}

static void flush_wait(chr_rconn_t *rc) {
  rctx_t *x = rc->link[LINK_CMD].x;
  rc->retry_last = NULL;
  while (rc->wait_head != NULL && x != NULL && x->ready && !x->dead &&
         rc->link[LINK_CMD].x == x) {
    chr_rcmd_t *c = rc->wait_head;
    wait_unlink(rc, c);
    cmd_write(x, c, 0);
  }
}

/* ---- deadlines */

static void check_cb(uv_timer_t *t) {
  chr_rconn_t *rc = t->data;
  int64_t now = chr_time_mono();
  char buf[300];
  chr_rcmd_t *expired = NULL, *c, *next;
  rc->depth++;
  contact_progress(rc, now);
  /* Unlink first: the callbacks may send (or close). */
  for (c = rc->wait_head; c != NULL; c = next) {
    next = c->next;
    if (c->deadline > now) continue;
    wait_unlink(rc, c);
    c->next = expired;
    expired = c;
  }
  unavail_msg(rc, buf, sizeof buf, "unavailable");
  for (c = expired; c != NULL; c = next) {
    next = c->next;
    c->next = NULL;
    cmd_finish(c, NULL, CHR_EUNAVAIL, buf);
  }
  if (!rc->closing && rc->fly_head != NULL && rc->url.timeout_us > 0 &&
      now - rc->fly_head->sent_at > rc->url.timeout_us) {
    rctx_t *x = rc->link[LINK_CMD].x;
    snprintf(buf, sizeof buf, "no reply within %gs", (double)rc->url.timeout_us / 1e6);
    if (x != NULL) link_kill(x, buf);
  }
  rc->depth--;
  if (!rc->closing && rc->wait_head == NULL && rc->fly_head == NULL) uv_timer_stop(t);
  maybe_free(rc);
}

static void check_arm(chr_rconn_t *rc) {
  if (!rc->closing && !uv_is_active((uv_handle_t *)&rc->check))
    uv_timer_start(&rc->check, check_cb, CHECK_MS, CHECK_MS);
}

/* ---- lifecycle */

static void handle_closed(uv_handle_t *h) {
  chr_rconn_t *rc = h->data;
  rc->handles--;
  maybe_free(rc);
}

static void timer_init(chr_rconn_t *rc, uv_timer_t *t) {
  uv_timer_init(chr_loop(), t);
  t->data = rc;
  rc->handles++;
}

chr_rconn_t *chr_rconn_new(const chr_rconn_opts_t *o) {
  chr_rconn_t *rc = chr_calloc(1, sizeof *rc);
  const chr_redis_url_t *u = o->url;
  rc->url = *u;
  rc->url.host = chr_strdup(u->host);
  rc->url.user = chr_strdup(u->user);
  rc->url.password = chr_strdup(u->password);
  rc->url.prefix = chr_strdup(u->prefix);
  rc->url.index_paths = NULL;
  rc->url.nindex = 0;
  rc->name = chr_strdup(o->name);
  rc->on_free = o->on_free;
  rc->data = o->data;
  while (o->scripts && o->scripts[rc->nscripts]) rc->nscripts++;
  rc->scripts = chr_calloc((size_t)rc->nscripts + 1, sizeof *rc->scripts);
  for (int i = 0; i < rc->nscripts; i++) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    rc->scripts[i].body = o->scripts[i];
    rc->scripts[i].len = strlen(o->scripts[i]);
    EVP_Digest(rc->scripts[i].body, rc->scripts[i].len, md, &mdlen, EVP_sha1(), NULL);
    for (unsigned k = 0; k < mdlen && k < 20; k++)
      snprintf(rc->scripts[i].sha + 2 * k, 3, "%02x", md[k]);
  }
  timer_init(rc, &rc->check);
  for (int k = 0; k < NLINKS; k++) {
    timer_init(rc, &rc->link[k].retry);
    timer_init(rc, &rc->link[k].guard);
  }
  link_open(rc, LINK_CMD);
  return rc;
}

void chr_rconn_subscribe(chr_rconn_t *rc, const char *channel, chr_rconn_msg_cb cb, void *data) {
  if (rc->closing || rc->channel != NULL) return;
  rc->channel = chr_strdup(channel);
  rc->msg_cb = cb;
  rc->msg_data = data;
  link_open(rc, LINK_SUB);
}

int chr_rconn_closed(const chr_rconn_t *rc) {
  return rc->closing;
}

void chr_rconn_close(chr_rconn_t *rc) {
  char buf[300];
  if (rc->closing) return;
  rc->closing = 1;
  rc->depth++;
  unavail_msg(rc, buf, sizeof buf, "connection closed");
  while (rc->wait_head != NULL) {
    chr_rcmd_t *c = rc->wait_head;
    wait_unlink(rc, c);
    cmd_finish(c, NULL, CHR_EUNAVAIL, buf);
  }
  for (int k = 0; k < NLINKS; k++) {
    rlink_t *l = &rc->link[k];
    if (l->gai != NULL) uv_cancel((uv_req_t *)l->gai);
    if (l->x != NULL) link_kill(l->x, "");
    uv_close((uv_handle_t *)&l->retry, handle_closed);
    uv_close((uv_handle_t *)&l->guard, handle_closed);
  }
  uv_close((uv_handle_t *)&rc->check, handle_closed);
  rc->depth--;
  maybe_free(rc);
}
