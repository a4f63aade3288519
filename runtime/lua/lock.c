/* lock.c - the Lua face of lock adapters (chronis.lock). */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "util.h"
#include "task.h"

#define LOCK_MT "chronis.lock"

typedef struct llock {
  chr_lock_t *lock;
} llock_t;

typedef struct lock_op {
  chr_waiter_t w;
  chr_lock_req_t req;
  char *key, *owner;
} lock_op_t;

static void op_free(lock_op_t *op) {
  chr_lock_req_reset(&op->req);
  free(op->key);
  free(op->owner);
  free(op);
}

static void op_release(chr_waiter_t *w) {
  op_free((lock_op_t *)w);
}

static int op_finish(lua_State *L, chr_waiter_t *w) {
  lock_op_t *op = (lock_op_t *)w;
  if (op->req.status != 0) {
    int code = op->req.status;
    lua_pushstring(L, op->req.errmsg ? op->req.errmsg : chr_strerror(code));
    op_free(op);
    chr_lua_pusherror(L, code, lua_tostring(L, -1));
    return lua_error(L);
  }
  lua_pushboolean(L, op->req.ok);
  op_free(op);
  return 1;
}

static void op_cb(chr_lock_req_t *req) {
  chr_waiter_done(&((lock_op_t *)req->data)->w);
}

chr_lock_t *chr_lua_checklock(lua_State *L, int idx) {
  llock_t *l = chr_lua_checkudata(L, idx, LOCK_MT);
  if (l->lock == NULL) chr_lua_error(L, CHR_EUNAVAIL, "the lock is closed");
  return l->lock;
}

static lock_op_t *op_new(lua_State *L, chr_lock_op_t kind) {
  lock_op_t *op = chr_calloc(1, sizeof *op);
  chr_lock_req_init(&op->req, kind);
  op->req.cb = op_cb;
  op->req.data = op;
  op->w.finish = op_finish;
  op->w.release = op_release;
  op->key = chr_strdup(chr_lua_checkstring(L, 2));
  op->req.key = op->key;
  return op;
}

static int op_run(lua_State *L, chr_lock_t *l, lock_op_t *op) {
  int rc = chr_lock_submit(l, &op->req);
  if (rc != 0) {
    op_free(op);
    return chr_lua_error(L, rc, "lock %s refused", l->vt->kind);
  }
  return chr_wait(L, &op->w);
}

static int64_t check_ttl(lua_State *L, int idx) {
  lua_Number n = chr_lua_checknumber(L, idx);
  if (!(n > 0)) chr_lua_error(L, CHR_EINVAL, "lock ttl must be a positive number of seconds");
  return (int64_t)(n * 1e6);
}

/* acquire(key, ttl, {owner=, blocking=, timeout=}) */
static int l_acquire(lua_State *L) {
  chr_lock_t *l = chr_lua_checklock(L, 1);
  chr_lua_checkstring(L, 2);
  int64_t ttl = check_ttl(L, 3);
  const char *owner = NULL;
  int blocking = 0;
  double timeout = 0;
  if (lua_istable(L, 4)) {
    lua_getfield(L, 4, "owner");
    lua_getfield(L, 4, "blocking");
    lua_getfield(L, 4, "timeout");
    owner = lua_tostring(L, -3);
    blocking = lua_toboolean(L, -2);
    if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TNUMBER)
      return chr_lua_error(L, CHR_EINVAL, "lock acquire: option 'timeout' must be a number");
    timeout = lua_isnil(L, -1) ? 0 : lua_tonumber(L, -1);
  } else if (lua_type(L, 4) == LUA_TSTRING) {
    owner = lua_tostring(L, 4);
  }
  if (owner == NULL) return chr_lua_error(L, CHR_EINVAL, "lock acquire needs an owner");
  lock_op_t *op = op_new(L, CHR_LOCK_ACQUIRE);
  op->owner = chr_strdup(owner);
  op->req.owner = op->owner;
  op->req.ttl_us = ttl;
  op->req.blocking = blocking;
  op->req.timeout_us = (int64_t)(timeout * 1e6);
  return op_run(L, l, op);
}

static int l_release(lua_State *L) {
  chr_lock_t *l = chr_lua_checklock(L, 1);
  chr_lua_checkstring(L, 2);
  const char *owner = chr_lua_checkstring(L, 3);
  lock_op_t *op = op_new(L, CHR_LOCK_RELEASE);
  op->req.owner = op->owner = chr_strdup(owner);
  return op_run(L, l, op);
}

static int l_extend(lua_State *L) {
  chr_lock_t *l = chr_lua_checklock(L, 1);
  chr_lua_checkstring(L, 2);
  int64_t ttl = check_ttl(L, 3);
  const char *owner = chr_lua_checkstring(L, 4);
  lock_op_t *op = op_new(L, CHR_LOCK_EXTEND);
  op->req.owner = op->owner = chr_strdup(owner);
  op->req.ttl_us = ttl;
  return op_run(L, l, op);
}

static int l_reset(lua_State *L) {
  chr_lock_t *l = chr_lua_checklock(L, 1);
  chr_lua_checkstring(L, 2);
  return op_run(L, l, op_new(L, CHR_LOCK_RESET));
}

static int l_close(lua_State *L) {
  llock_t *l = chr_lua_checkudata(L, 1, LOCK_MT);
  if (l->lock) {
    chr_lock_close(l->lock);
    l->lock = NULL;
  }
  return 0;
}

static int l_tostring(lua_State *L) {
  llock_t *l = chr_lua_checkudata(L, 1, LOCK_MT);
  lua_pushfstring(L, "chronis.lock(%s)", l->lock ? l->lock->vt->kind : "closed");
  return 1;
}

void chr_lua_pushlock(lua_State *L, chr_lock_t *lk) {
  static const luaL_Reg methods[] = {{"acquire", l_acquire}, {"release", l_release},
                                     {"extend", l_extend},   {"reset", l_reset},
                                     {"close", l_close},     {NULL, NULL}};
  static const luaL_Reg meta[] = {
      {"__gc", l_close}, {"__close", l_close}, {"__tostring", l_tostring}, {NULL, NULL}};
  llock_t *l = lua_newuserdatauv(L, sizeof *l, 0);
  l->lock = lk;
  if (luaL_newmetatable(L, LOCK_MT)) {
    luaL_setfuncs(L, meta, 0);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
  }
  lua_setmetatable(L, -2);
}

static int l_memory(lua_State *L) {
  chr_lua_pushlock(L, chr_memory_lock_new());
  return 1;
}

/* open(url_or_options [, options]), redis(url_or_options [, options]):
 * as chronis.storage.open and .redis (chr_lua_checkopts). */
static int open_lock(lua_State *L, const char *const *schemes) {
  chr_opts_t o;
  char err[400];
  chr_lock_t *l;
  chr_lua_checkopts(L, schemes, 1, &o);
  int rc = chr_lock_open_opts(&o, &l, err, sizeof err);
  chr_opts_free(&o);
  if (rc != 0) return chr_lua_error(L, rc, "%s", err);
  chr_lua_pushlock(L, l);
  return 1;
}

static int l_open(lua_State *L) {
  return open_lock(L, NULL);
}

static int l_redis(lua_State *L) {
  static const char *const names[] = {"redis", NULL};
  return open_lock(L, names);
}

int luaopen_chronis_lock(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"memory", l_memory}, {"open", l_open}, {"redis", l_redis}, {NULL, NULL}};
  luaL_newlib(L, fns);
  return 1;
}
