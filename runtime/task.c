/* task.c - coroutines resumed by the loop, and waiting (see task.h). */
#include "task.h"

#include <lauxlib.h>
#include <stdlib.h>

#include "common.h"
#include "loop.h"
#include "time.h"

#define POOL_MAX 512
#define HOOK_COUNT 1000

static lua_State *mainL;
static chr_task_t *current;   /* the task whose coroutine is executing */
static chr_task_t *free_list; /* reusable tasks with an idle coroutine */
static size_t nfree, nlive;
static int loop_depth;

static void finish(chr_task_t *t, int status);

void chr_task_init(lua_State *L) {
  mainL = L;
}

lua_State *chr_task_main(void) {
  return mainL;
}

size_t chr_task_live(void) {
  return nlive;
}

int chr_loop_running(void) {
  return loop_depth > 0;
}

void chr_loop_step(lua_State *L) {
  if (loop_depth > 0)
    luaL_error(L, "cannot wait here: the event loop is already running (wait from a "
                  "chronis task, i.e. a handler or chronis.spawn, or from the main chunk)");
  loop_depth++;
  int alive = uv_run(chr_loop(), UV_RUN_ONCE);
  loop_depth--;
  (void)alive;
}

chr_task_t *chr_task_current(lua_State *L) {
  return current && current->co == L ? current : NULL;
}

chr_task_t *chr_task_new(lua_State *L, chr_task_done_cb cb, void *data) {
  (void)L;
  chr_task_t *t = free_list;
  if (t) {
    free_list = t->next_free;
    nfree--;
  } else {
    t = chr_calloc(1, sizeof *t);
    t->co = lua_newthread(mainL);
    t->ref = luaL_ref(mainL, LUA_REGISTRYINDEX);
  }
  t->done_cb = cb;
  t->data = data;
  t->waiting = NULL;
  t->deadline = 0;
  t->running = t->finished = t->killed = 0;
  t->reusable = 1;
  t->kill_reason = NULL;
  t->next_free = NULL;
  nlive++;
  return t;
}

/* Ends CPU-bound code past its deadline. Yielding from the hook cannot be
 * caught by pcall (pcall is yieldable in 5.4), so the handler stops here
 * and is never resumed. Where yielding is impossible (inside a C call that
 * is not yieldable) an error is raised instead, and raised again on every
 * count event until it escapes. */
static void count_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  chr_task_t *t = current;
  if (t == NULL || t->deadline == 0 || chr_time_mono() < t->deadline) return;
  t->killed = 1;
  if (lua_isyieldable(L)) {
    lua_yield(L, 0);
    return;
  }
  luaL_error(L, "%s", t->kill_reason ? t->kill_reason : "timeout");
}

void chr_task_set_deadline(chr_task_t *t, int64_t deadline) {
  t->deadline = deadline;
  if (deadline && !t->hooked) {
    lua_sethook(t->co, count_hook, LUA_MASKCOUNT, HOOK_COUNT);
    t->hooked = 1;
  }
}

static void resume(chr_task_t *t, int nargs) {
  chr_task_t *saved = current;
  int nres = 0;
  current = t;
  t->running = 1;
  int status = lua_resume(t->co, NULL, nargs, &nres);
  t->running = 0;
  current = saved;
  if (status == LUA_YIELD) {
    if (t->killed) {
      lua_settop(t->co, 0);
      finish(t, CHR_TASK_KILLED);
    } else if (t->waiting == NULL) {
      lua_settop(t->co, 0);
      lua_pushliteral(t->co, "a chronis task yielded outside a chronis wait "
                             "(coroutine.yield at the top level of a handler?)");
      finish(t, LUA_ERRRUN);
    }
    return;
  }
  if (status != LUA_OK && t->killed) {
    lua_settop(t->co, 0);
    status = CHR_TASK_KILLED;
  }
  finish(t, status);
}

static void finish(chr_task_t *t, int status) {
  t->finished = 1;
  if (status != LUA_OK) t->reusable = 0;
  if (t->hooked) {
    lua_sethook(t->co, NULL, 0, 0);
    t->hooked = 0;
  }
  t->deadline = 0;
  if (t->done_cb) t->done_cb(t, status);
}

void chr_task_start(chr_task_t *t, int nargs) {
  resume(t, nargs);
}

void chr_task_kill(chr_task_t *t, const char *reason) {
  if (t->finished) return;
  t->kill_reason = reason;
  t->killed = 1;
  if (t->running) { /* ends at the next count event */
    chr_task_set_deadline(t, 1);
    return;
  }
  if (t->waiting) {
    chr_waiter_t *w = t->waiting;
    t->waiting = NULL;
    w->task = NULL;
    if (w->cancel) {
      w->cancel(w);
    } else {
      w->orphaned = 1;
    }
  }
  lua_settop(t->co, 0);
  finish(t, CHR_TASK_KILLED);
}

void chr_task_release(chr_task_t *t) {
  nlive--;
  if (!t->reusable) {
#if LUA_VERSION_RELEASE_NUM >= 50406
    lua_closethread(t->co, mainL);
#else
    lua_resetthread(t->co);
#endif
  }
  lua_settop(t->co, 0);
  if (nfree >= POOL_MAX) {
    luaL_unref(mainL, LUA_REGISTRYINDEX, t->ref);
    free(t);
    return;
  }
  t->done_cb = NULL;
  t->data = NULL;
  t->next_free = free_list;
  free_list = t;
  nfree++;
}

static int wait_k(lua_State *L, int status, lua_KContext ctx) {
  chr_waiter_t *w = (chr_waiter_t *)ctx;
  (void)status;
  return w->finish(L, w);
}

int chr_wait(lua_State *L, chr_waiter_t *w) {
  if (w->done) return w->finish(L, w);
  chr_task_t *t = chr_task_current(L);
  if (t && lua_isyieldable(L)) {
    w->task = t;
    t->waiting = w;
    return lua_yieldk(L, 0, (lua_KContext)w, wait_k);
  }
  if (loop_depth > 0) {
    w->orphaned = 1;
    return luaL_error(L, "cannot wait here: called from a coroutine chronis does not manage, "
                         "inside a running loop (wait from the handler's own coroutine)");
  }
  while (!w->done) {
    loop_depth++;
    int alive = uv_run(chr_loop(), UV_RUN_ONCE);
    loop_depth--;
    if (!alive && !w->done) {
      w->orphaned = 1;
      return luaL_error(L, "wait cannot complete: nothing left on the event loop");
    }
  }
  return w->finish(L, w);
}

void chr_waiter_done(chr_waiter_t *w) {
  w->done = 1;
  if (w->orphaned) {
    w->release(w);
    return;
  }
  chr_task_t *t = w->task;
  if (t) {
    w->task = NULL;
    t->waiting = NULL;
    resume(t, 0);
  }
}
