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

void chr_lock_init(chr_lock_t *l, const chr_lock_vtable_t *vt) {
  l->vt = vt;
  l->closed = 0;
  l->refs = 1;
}

void chr_lock_retain(chr_lock_t *l) {
  l->refs++;
}

void chr_lock_release(chr_lock_t *l) {
  if (--l->refs == 0) l->vt->close(l);
}

void chr_lock_close(chr_lock_t *l) {
  if (l == NULL || l->closed) return;
  l->closed = 1;
  chr_lock_release(l);
}
