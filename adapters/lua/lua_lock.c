/* lua_lock.c - a lock implemented by a Lua table (chronis.lock.lua): its
 * acquire / release / extend / reset methods run in tasks, may wait, and
 * are bounded by the adapter timeout; their errors and closing follow
 * lua_store.c's store methods. */
#include <lauxlib.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge.h"
#include "core/lock.h"
#include "core/loop.h"
#include "lua/store.h"
#include "lua/util.h"
#include "lua/task.h"

typedef struct lua_lock {
  chr_lock_t base;
  chr_bridge_t br; /* the adapter, its calls */
} lua_lock_t;

static const char *const methods[] = {"acquire", "release", "extend", "reset"};

static lua_lock_t *lock_of(chr_bridge_t *b) {
  return (lua_lock_t *)((char *)b - offsetof(lua_lock_t, br));
}

static void free_lock(lua_lock_t *ll) {
  chr_bridge_free(&ll->br);
  free(ll);
}

static void fail(chr_lock_req_t *req, int code, const char *msg) {
  free(req->errmsg);
  req->errmsg = chr_strdup(msg);
  req->status = code;
}

static void call_done(chr_bridge_call_t *c, lua_State *co, int status) {
  lua_lock_t *ll = lock_of(c->b);
  chr_lock_req_t *req = c->req;
  char msg[512];
  if (status == LUA_OK) {
    if (lua_isboolean(co, 1)) {
      req->ok = lua_toboolean(co, 1);
    } else {
      snprintf(msg, sizeof msg, "lua lock '%s': %s returned %s, expected a boolean", ll->br.name,
               c->method, luaL_typename(co, 1));
      fail(req, CHR_EINVAL, msg);
    }
  } else {
    int code = chr_bridge_failure(c, co, status, msg, sizeof msg);
    fail(req, code, msg);
  }
  if (chr_bridge_end(c)) free_lock(ll);
  req->cb(req);
}

static int ll_submit(chr_lock_t *l, chr_lock_req_t *req) {
  lua_lock_t *ll = (lua_lock_t *)l;
  lua_State *L = ll->br.L;
  const char *method = methods[req->op];
  int rc = chr_bridge_method(&ll->br, method);
  if (rc != 0) return rc;
  lua_pushstring(L, req->key);
  int nargs = 2;
  switch (req->op) {
  case CHR_LOCK_ACQUIRE:
    lua_pushnumber(L, (double)req->ttl_us / 1e6);
    lua_createtable(L, 0, 3);
    lua_pushstring(L, req->owner);
    lua_setfield(L, -2, "owner");
    lua_pushboolean(L, req->blocking);
    lua_setfield(L, -2, "blocking");
    if (req->timeout_us > 0) {
      lua_pushnumber(L, (double)req->timeout_us / 1e6);
      lua_setfield(L, -2, "timeout");
    }
    nargs += 2;
    break;
  case CHR_LOCK_RELEASE:
    lua_pushstring(L, req->owner);
    nargs++;
    break;
  case CHR_LOCK_EXTEND:
    lua_pushnumber(L, (double)req->ttl_us / 1e6);
    lua_pushstring(L, req->owner);
    nargs += 2;
    break;
  case CHR_LOCK_RESET: break;
  }
  /* A blocking acquire may legitimately wait its own timeout first. */
  uint64_t extra = 0;
  if (req->op == CHR_LOCK_ACQUIRE && req->blocking) extra = (uint64_t)(req->timeout_us / 1000);
  chr_bridge_call(&ll->br, method, req, nargs, extra, call_done);
  return 0;
}

/* Pending calls are stopped and answered `unavailable`, each once, as a
 * store's are (lua_store.c). */
static void ll_close(chr_lock_t *l) {
  lua_lock_t *ll = (lua_lock_t *)l;
  chr_bridge_cancel(&ll->br);
  if (ll->br.pending == 0) free_lock(ll);
}

static const chr_lock_vtable_t lua_lock_vt = {"lua", ll_submit, ll_close};

/* from_table(adapter, {name=, timeout=}) -> lock */
static int l_from_table(lua_State *L) {
  chr_lua_checktype(L, 1, LUA_TTABLE);
  const char *name = "lua";
  double timeout = 30;
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "name");
    if (lua_isstring(L, -1)) name = lua_tostring(L, -1);
    lua_getfield(L, 2, "timeout");
    if (lua_isnumber(L, -1)) timeout = lua_tonumber(L, -1);
    lua_pop(L, 2);
  }
  for (size_t i = 0; i < sizeof methods / sizeof *methods; i++) {
    lua_getfield(L, 1, methods[i]);
    if (!lua_isfunction(L, -1))
      return chr_lua_error(L, CHR_EINVAL, "lua lock '%s' lacks method '%s'", name, methods[i]);
    lua_pop(L, 1);
  }
  lua_lock_t *ll = chr_calloc(1, sizeof *ll);
  chr_lock_init(&ll->base, &lua_lock_vt);
  chr_bridge_init(&ll->br, L, 1, name, "lua lock", "lock", timeout);
  chr_lua_pushlock(L, &ll->base);
  return 1;
}

int luaopen_chronis_lua_lock(lua_State *L);
int luaopen_chronis_lua_lock(lua_State *L) {
  static const luaL_Reg fns[] = {{"from_table", l_from_table}, {NULL, NULL}};
  luaL_newlib(L, fns);
  return 1;
}
