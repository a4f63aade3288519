/* lua_lock.c - a lock implemented by a Lua table (chronis.lock.lua): its
 * acquire / release / extend / reset methods run in tasks, may wait, and
 * are bounded by the adapter timeout; their errors and closing follow
 * lua_store.c's store methods. */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "core/lock.h"
#include "core/loop.h"
#include "lua/store.h"
#include "lua/util.h"
#include "lua/task.h"

typedef struct lua_lock {
  chr_lock_t base;
  lua_State *L;
  int adapter_ref;
  char *name;
  uint64_t timeout_ms;
  struct lcall *calls; /* the pending ones */
  int pending;
  int closing; /* 1 from close on; 2 while close answers the calls */
} lua_lock_t;

typedef struct lcall {
  lua_lock_t *ll;
  chr_lock_req_t *req;
  chr_task_t *task;
  uv_timer_t *timer;
  const char *method;
  int cancelled; /* killed by close: answered `unavailable` */
  struct lcall *prev, *next;
} lcall_t;

static const char *const methods[] = {"acquire", "release", "extend", "reset"};

static void free_lock(lua_lock_t *ll) {
  luaL_unref(ll->L, LUA_REGISTRYINDEX, ll->adapter_ref);
  free(ll->name);
  free(ll);
}

static void timer_close_cb(uv_handle_t *h) {
  free(h);
}

static void fail(chr_lock_req_t *req, int code, const char *msg) {
  free(req->errmsg);
  req->errmsg = chr_strdup(msg);
  req->status = code;
}

static void call_done(chr_task_t *t, int status) {
  lcall_t *c = t->data;
  lua_lock_t *ll = c->ll;
  chr_lock_req_t *req = c->req;
  lua_State *co = t->co;
  char msg[512];
  if (status == LUA_OK) {
    if (lua_isboolean(co, 1)) {
      req->ok = lua_toboolean(co, 1);
    } else {
      snprintf(msg, sizeof msg, "lua lock '%s': %s returned %s, expected a boolean", ll->name,
               c->method, luaL_typename(co, 1));
      fail(req, CHR_EINVAL, msg);
    }
  } else if (status == CHR_TASK_KILLED && c->cancelled) {
    snprintf(msg, sizeof msg, "lua lock '%s': %s: the lock was closed", ll->name, c->method);
    fail(req, CHR_EUNAVAIL, msg);
  } else if (status == CHR_TASK_KILLED) {
    snprintf(msg, sizeof msg, "lua lock '%s': %s did not return within %gs", ll->name, c->method,
             (double)ll->timeout_ms / 1000);
    fail(req, CHR_ETIMEOUT, msg);
  } else {
    const char *m;
    int code = chr_lua_errvalue(co, -1, &m);
    /* As lua_store.c: an error raised as {code, message} keeps its code
     * and words; anything else is attributed to the adapter and method. */
    if (lua_istable(co, -2)) {
      fail(req, code ? code : CHR_EINVAL, m);
    } else {
      snprintf(msg, sizeof msg, "lua lock '%s': %s failed: %s", ll->name, c->method, m);
      fail(req, CHR_EINVAL, msg);
    }
  }
  chr_task_release(t);
  if (c->timer) uv_close((uv_handle_t *)c->timer, timer_close_cb);
  if (c->prev) c->prev->next = c->next;
  else ll->calls = c->next;
  if (c->next) c->next->prev = c->prev;
  free(c);
  if (--ll->pending == 0 && ll->closing == 1) free_lock(ll);
  req->cb(req);
}

static void timeout_cb(uv_timer_t *h) {
  lcall_t *c = h->data;
  if (c->task) chr_task_kill(c->task, "lock adapter timeout");
}

static int ll_submit(chr_lock_t *l, chr_lock_req_t *req) {
  lua_lock_t *ll = (lua_lock_t *)l;
  lua_State *L = ll->L;
  const char *method = methods[req->op];
  if (ll->closing) return CHR_EUNAVAIL;
  lua_rawgeti(L, LUA_REGISTRYINDEX, ll->adapter_ref);
  lua_getfield(L, -1, method);
  if (!lua_isfunction(L, -1)) {
    lua_pop(L, 2);
    return CHR_EINVAL;
  }
  lua_insert(L, -2); /* fn self */
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
  lcall_t *c = chr_calloc(1, sizeof *c);
  c->ll = ll;
  c->req = req;
  c->method = method;
  c->next = ll->calls;
  if (ll->calls) ll->calls->prev = c;
  ll->calls = c;
  ll->pending++;
  chr_task_t *t = chr_task_new(L, call_done, c);
  c->task = t;
  lua_xmove(L, t->co, nargs + 1);
  /* A blocking acquire may legitimately wait its own timeout first. */
  uint64_t ms = ll->timeout_ms;
  if (ms && req->op == CHR_LOCK_ACQUIRE && req->blocking) ms += (uint64_t)(req->timeout_us / 1000);
  if (ms) {
    c->timer = chr_malloc(sizeof *c->timer);
    uv_timer_init(chr_loop(), c->timer);
    c->timer->data = c;
    /* From now, not from the loop's cached time, which is old when the
     * caller ran a while without returning to the loop. */
    uv_update_time(chr_loop());
    uv_timer_start(c->timer, timeout_cb, ms, 0);
  }
  chr_task_start(t, nargs);
  return 0;
}

/* Pending calls are stopped and answered `unavailable`, each once, as a
 * store's are (lua_store.c). */
static void ll_close(chr_lock_t *l) {
  lua_lock_t *ll = (lua_lock_t *)l;
  ll->closing = 2;
  for (;;) {
    /* From the head each time: an answer runs its caller's code. */
    lcall_t *c = ll->calls;
    while (c && c->cancelled) c = c->next;
    if (c == NULL) break;
    c->cancelled = 1;
    chr_task_kill(c->task, "lock closed");
  }
  ll->closing = 1;
  if (ll->pending == 0) free_lock(ll);
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
  ll->L = chr_task_main();
  ll->name = chr_strdup(name);
  ll->timeout_ms = timeout > 0 ? (uint64_t)(timeout * 1000) : 0;
  lua_pushvalue(L, 1);
  ll->adapter_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  chr_lua_pushlock(L, &ll->base);
  return 1;
}

int luaopen_chronis_lua_lock(lua_State *L);
int luaopen_chronis_lua_lock(lua_State *L) {
  static const luaL_Reg fns[] = {{"from_table", l_from_table}, {NULL, NULL}};
  luaL_newlib(L, fns);
  return 1;
}
