/* lock.h - the lock adapter contract (docs/design.md, Locks): owner-checked,
 * TTL-bounded locks with acquire / release / extend / reset, answered
 * asynchronously like store requests. A blocking acquire waits on the loop,
 * never by blocking it. */
#ifndef CHR_LOCK_H
#define CHR_LOCK_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "url.h"

typedef struct chr_lock chr_lock_t;
typedef struct chr_lock_req chr_lock_req_t;
typedef void (*chr_lock_cb)(chr_lock_req_t *req);

typedef enum {
  CHR_LOCK_ACQUIRE, /* key, owner, ttl_us, blocking, timeout_us -> ok */
  CHR_LOCK_RELEASE, /* key, owner -> ok (1 when owner held it) */
  CHR_LOCK_EXTEND,  /* key, owner, ttl_us -> ok (1 when owner holds it) */
  CHR_LOCK_RESET    /* key -> ok (1 when a lock was removed) */
} chr_lock_op_t;

struct chr_lock_req {
  chr_lock_op_t op;
  chr_lock_t *lock;
  chr_lock_cb cb;
  void *data;
  const char *key, *owner; /* borrowed until the callback */
  int64_t ttl_us;
  int blocking;
  int64_t timeout_us; /* blocking acquire: give up after this (<= 0: wait
                         until the lock is free, however long) */
  int status;         /* 0 or CHR_E* */
  char *errmsg;
  int ok;
  void *priv; /* adapter's use while pending */
};

typedef struct chr_lock_vtable {
  const char *kind;
  int (*submit)(chr_lock_t *l, chr_lock_req_t *req);
  void (*close)(chr_lock_t *l);
} chr_lock_vtable_t;

/* Adapters embed this as the first member of their own struct, and set it
 * up with chr_lock_init. */
struct chr_lock {
  const chr_lock_vtable_t *vt;
  int closed;
  int refs; /* the owner's plus chr_lock_retain's; the adapter closes at zero */
};

void chr_lock_init(chr_lock_t *l, const chr_lock_vtable_t *vt);
void chr_lock_req_init(chr_lock_req_t *req, chr_lock_op_t op);
void chr_lock_req_reset(chr_lock_req_t *req);
int chr_lock_submit(chr_lock_t *l, chr_lock_req_t *req);
/* Closing refuses new requests at once (CHR_EUNAVAIL); the adapter is
 * closed (its pending requests answered) when the last holder, e.g. a
 * scheduler that uses it for emulated claims, releases it too. */
void chr_lock_close(chr_lock_t *l);
void chr_lock_retain(chr_lock_t *l);
void chr_lock_release(chr_lock_t *l);

/* Opening a lock from a URL ("memory:", "redis://...") or from options,
 * as chr_store_open and chr_store_open_opts do (store.h). */
int chr_lock_open(const char *url, chr_lock_t **out, char *err, size_t errlen);
int chr_lock_url_opts(const char *url, chr_opts_t *o, char *err, size_t errlen);
int chr_lock_open_opts(const chr_opts_t *o, chr_lock_t **out, char *err, size_t errlen);

chr_lock_t *chr_memory_lock_new(void);
int chr_redis_lock_open(const chr_opts_t *o, chr_lock_t **out, char *err, size_t errlen);

#endif
