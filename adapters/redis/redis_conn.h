/* redis_conn.h - one Redis server as the Redis store and lock adapters see
 * it: its options (redis_url.c), a command connection and a pub/sub connection
 * (hiredis async on the process's libuv loop), reconnection with capped
 * exponential backoff, a wait queue for commands made while disconnected,
 * and server-side scripts sent with EVALSHA and reloaded on NOSCRIPT
 * (redis_conn.c). */
#ifndef CHR_REDIS_CONN_H
#define CHR_REDIS_CONN_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "core/common.h"
#include "core/history.h"
#include "core/url.h"

typedef struct chr_rconn chr_rconn_t;
typedef struct chr_rcmd chr_rcmd_t;

/* Settings from a redis:// URL or an option table. */
typedef struct chr_redis_url {
  char *host, *user, *password, *prefix;
  int port, db;
  char **index_paths; /* index_metadata=a,b.c */
  size_t nindex;
  int64_t queue_us;     /* queue_timeout: commands made while disconnected wait this long */
  int64_t timeout_us;   /* timeout: no reply for this long drops the connection */
  int64_t connect_us;   /* connect_timeout */
  int64_t backoff_max_us; /* reconnect_max: cap of the reconnect backoff */
  chr_history_opts_t hist; /* history, history_days (store only) */
} chr_redis_url_t;

/* Reads the options (host, port, db, user, password, prefix, ...; lock:
 * those of the lock adapter, without index_metadata and the history
 * options). Returns 0 or
 * CHR_EINVAL with a message naming the bad option. */
int chr_redis_opts_parse(const chr_opts_t *opts, chr_redis_url_t *u, int lock, char *err,
                         size_t errlen);
void chr_redis_url_free(chr_redis_url_t *u);

/* A command's answer: status 0 with the reply (valid only during the
 * callback; may be an error reply), or CHR_EUNAVAIL with reply NULL and a
 * message. Called exactly once. */
typedef void (*chr_rcmd_cb)(chr_rcmd_t *cmd, redisReply *reply, int status, const char *msg);

enum {
  /* Safe to send again when the connection is lost before the reply:
   * reads, and writes whose repetition changes nothing (an owner-checked
   * completion that already applied answers conflict/not_found). */
  CHR_RCMD_IDEMPOTENT = 1
};

struct chr_rcmd {
  chr_rconn_t *rc;
  chr_rcmd_cb cb;
  void *data;
  void *ctx_data; /* the caller's, besides data */
  int flags;
  int script;      /* index in the connection's scripts, or -1 */
  int nargs;       /* arguments in `tail` */
  chr_buf_t tail;  /* RESP of the arguments after the command (or after
                      the script's sha and before nothing: see send) */
  int64_t deadline; /* mono µs: waiting commands fail after this */
  int64_t sent_at;  /* mono µs */
  void *ctx;        /* the connection it went out on */
  chr_rcmd_t *prev, *next;
};

/* A command: chr_rcmd_new, then chr_rcmd_arg* for every argument, then
 * chr_rconn_send. script >= 0 sends EVALSHA <sha> + the arguments (which
 * start with numkeys); -1 sends the arguments as a plain command. */
chr_rcmd_t *chr_rcmd_new(chr_rconn_t *rc, int script, chr_rcmd_cb cb, void *data, int flags);
void chr_rcmd_arg(chr_rcmd_t *c, const char *p, size_t n);
void chr_rcmd_args(chr_rcmd_t *c, const char *s);
void chr_rcmd_argi(chr_rcmd_t *c, long long v);
/* Sends (or queues while disconnected). The callback may run before this
 * returns (on a closed connection). */
void chr_rconn_send(chr_rcmd_t *c);

/* Pub/sub: payload NULL means "(re)subscribed": messages may have been
 * missed while the subscription was down. */
typedef void (*chr_rconn_msg_cb)(void *data, const char *payload, size_t len);

typedef struct chr_rconn_opts {
  const chr_redis_url_t *url;
  const char *name;           /* CLIENT SETNAME, and log messages */
  const char *const *scripts; /* Lua sources, NULL-terminated; borrowed */
  void (*on_free)(void *data); /* the connection has ended for good */
  void *data;
} chr_rconn_opts_t;

chr_rconn_t *chr_rconn_new(const chr_rconn_opts_t *o);
/* Subscribes to one channel on a second connection (idempotent). */
void chr_rconn_subscribe(chr_rconn_t *rc, const char *channel, chr_rconn_msg_cb cb, void *data);
/* Answers every pending and waiting command CHR_EUNAVAIL, closes both
 * connections; on_free runs once everything has closed (maybe later). */
void chr_rconn_close(chr_rconn_t *rc);
int chr_rconn_closed(const chr_rconn_t *rc);

/* The reply objects of the connections' readers: a reply's objects and
 * their strings in one block or a few, freed with the reply (its root) by
 * chr_reply_fns.freeObject. A reader using them needs privdata pointing
 * at a chr_reply_arena_t of its own, which it keeps while it reads. */
typedef struct chr_reply_arena {
  struct reply_block *cur; /* where the reply being read allocates */
} chr_reply_arena_t;
extern redisReplyObjectFunctions chr_reply_fns;

/* Reply helpers. */
int chr_reply_is_error(const redisReply *r, const char *prefix);

#endif
