/* lock.c - the generic side of the lock contract. */
#include "lock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void chr_lock_req_init(chr_lock_req_t *req, chr_lock_op_t op) {
  memset(req, 0, sizeof *req);
  req->op = op;
}

void chr_lock_req_reset(chr_lock_req_t *req) {
  free(req->errmsg);
  req->errmsg = NULL;
  req->status = 0;
  req->ok = 0;
}

int chr_lock_submit(chr_lock_t *l, chr_lock_req_t *req) {
  if (l->closed) return CHR_EUNAVAIL;
  req->lock = l;
  return l->vt->submit(l, req);
}

void chr_lock_close(chr_lock_t *l) {
  if (l == NULL || l->closed) return;
  l->closed = 1;
  l->vt->close(l);
}

static int open_memory(const char *url, chr_lock_t **out, char *err, size_t errlen) {
  (void)url;
  (void)err;
  (void)errlen;
  *out = chr_memory_lock_new();
  return 0;
}

static const struct {
  const char *scheme;
  int (*open)(const char *url, chr_lock_t **out, char *err, size_t errlen);
} schemes[] = {
    {"memory", open_memory},
    {"redis", chr_redis_lock_open},
};

int chr_lock_open(const char *url, chr_lock_t **out, char *err, size_t errlen) {
  const char *colon = strchr(url, ':');
  size_t n = colon ? (size_t)(colon - url) : strlen(url);
  for (size_t i = 0; i < sizeof schemes / sizeof *schemes; i++)
    if (strlen(schemes[i].scheme) == n && strncmp(url, schemes[i].scheme, n) == 0)
      return schemes[i].open(url, out, err, errlen);
  snprintf(err, errlen, "invalid lock URL '%s': unknown scheme '%.*s'", url, (int)n, url);
  return CHR_EINVAL;
}
