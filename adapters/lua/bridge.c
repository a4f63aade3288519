/* bridge.c - calls of adapters written in Lua (see bridge.h). */
#include "bridge.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/common.h"
#include "core/loop.h"
#include "lua/util.h"

void chr_bridge_init(chr_bridge_t *b, lua_State *L, int adapter_idx, const char *name,
                     const char *kind, const char *what, double timeout_s) {
  b->L = chr_task_main();
  lua_pushvalue(L, adapter_idx);
  b->adapter_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  b->name = chr_strdup(name);
  b->kind = kind;
  b->what = what;
  b->timeout_ms = timeout_s > 0 ? (uint64_t)(timeout_s * 1000) : 0;
  b->calls = NULL;
  b->pending = 0;
  b->closing = 0;
}

void chr_bridge_free(chr_bridge_t *b) {
  luaL_unref(b->L, LUA_REGISTRYINDEX, b->adapter_ref);
  free(b->name);
}

int chr_bridge_method(chr_bridge_t *b, const char *method) {
  lua_State *L = b->L;
  if (b->closing) return CHR_EUNAVAIL; /* e.g. a sub-request of an emulation */
  lua_rawgeti(L, LUA_REGISTRYINDEX, b->adapter_ref);
  if (lua_getfield(L, -1, method) != LUA_TFUNCTION) {
    lua_pop(L, 2);
    return CHR_EINVAL;
  }
  lua_insert(L, -2); /* fn self */
  return 0;
}

static void task_done(chr_task_t *t, int status) {
  chr_bridge_call_t *c = t->data;
  c->task = NULL;
  c->done(c, t->co, status);
  chr_task_release(t);
}

static void timeout_cb(uv_timer_t *h) {
  chr_bridge_call_t *c = h->data;
  if (c->task) chr_task_kill(c->task, "adapter timeout");
}

void chr_bridge_call(chr_bridge_t *b, const char *method, void *req, int nargs,
                     uint64_t extra_ms, chr_bridge_done_cb done) {
  chr_bridge_call_t *c = chr_calloc(1, sizeof *c);
  c->b = b;
  c->req = req;
  c->method = method;
  c->done = done;
  c->next = b->calls;
  if (b->calls) b->calls->prev = c;
  b->calls = c;
  b->pending++;
  chr_task_t *t = chr_task_new(b->L, task_done, c);
  c->task = t;
  lua_xmove(b->L, t->co, nargs + 1);
  if (b->timeout_ms) {
    c->timer = chr_malloc(sizeof *c->timer);
    uv_timer_init(chr_loop(), c->timer);
    c->timer->data = c;
    /* From now, not from the loop's cached time, which is old when the
     * caller ran a while without returning to the loop. */
    uv_update_time(chr_loop());
    uv_timer_start(c->timer, timeout_cb, b->timeout_ms + extra_ms, 0);
  }
  chr_task_start(t, nargs);
}

static void timer_close_cb(uv_handle_t *h) {
  free(h);
}

int chr_bridge_end(chr_bridge_call_t *c) {
  chr_bridge_t *b = c->b;
  if (c->timer) uv_close((uv_handle_t *)c->timer, timer_close_cb);
  if (c->prev) c->prev->next = c->next;
  else b->calls = c->next;
  if (c->next) c->next->prev = c->prev;
  free(c);
  return --b->pending == 0 && b->closing == 1;
}

void chr_bridge_cancel(chr_bridge_t *b) {
  b->closing = 2;
  for (;;) {
    /* From the head each time: an answer runs its caller's code. */
    chr_bridge_call_t *c = b->calls;
    while (c && c->cancelled) c = c->next;
    if (c == NULL) break;
    c->cancelled = 1;
    chr_task_kill(c->task, b->what);
  }
  b->closing = 1;
}

int chr_bridge_failure(chr_bridge_call_t *c, lua_State *co, int status, char *msg, size_t len) {
  chr_bridge_t *b = c->b;
  if (status == CHR_TASK_KILLED && c->cancelled) {
    snprintf(msg, len, "%s '%s': %s: the %s was closed", b->kind, b->name, c->method, b->what);
    return CHR_EUNAVAIL;
  }
  if (status == CHR_TASK_KILLED) {
    snprintf(msg, len, "%s '%s': %s did not return within %gs", b->kind, b->name, c->method,
             (double)b->timeout_ms / 1000);
    return CHR_ETIMEOUT;
  }
  const char *m;
  int code = chr_lua_errvalue(co, -1, &m);
  if (lua_istable(co, -2)) {
    snprintf(msg, len, "%s", m);
    return code ? code : CHR_EINVAL;
  }
  snprintf(msg, len, "%s '%s': %s failed: %s", b->kind, b->name, c->method, m);
  return CHR_EINVAL;
}
