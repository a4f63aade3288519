/* module.c - the chronis.core module: assembles the C-backed areas
 * (time, tz, cron, json, storage, lock, scheduler) and the loop-level
 * functions (spawn, sleep, run, run_until, stop). Sets no globals. */
#include <lauxlib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/engine.h"
#include "net/http.h"
#include "core/json.h"
#include "core/log.h"
#include "core/loop.h"
#include "store.h"
#include "util.h"
#include "task.h"
#include "core/time.h"
#include "json.h"

int luaopen_chronis_lua_store(lua_State *L);
int luaopen_chronis_lua_lock(lua_State *L);
int luaopen_chronis_crypto(lua_State *L);

/* ---- json ---- */

static int l_json_encode(lua_State *L) {
  chr_buf_t b;
  char err[200];
  luaL_checkany(L, 1);
  chr_buf_init(&b);
  if (chr_json_encode(L, 1, &b, err, sizeof err) != 0) {
    chr_buf_free(&b);
    return chr_lua_error(L, CHR_EINVAL, "json encode: %s", err);
  }
  lua_pushlstring(L, b.p, b.len);
  chr_buf_free(&b);
  return 1;
}

static int l_json_decode(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  char err[200];
  if (chr_json_decode(L, s, n, err, sizeof err) != 0)
    return chr_lua_error(L, CHR_EINVAL, "json decode: %s", err);
  return 1;
}

/* ---- sleep ---- */

typedef struct sleeper {
  chr_waiter_t w;
  uv_timer_t timer;
} sleeper_t;

static void sleeper_close_cb(uv_handle_t *h) {
  free(h->data);
}

static int sleeper_finish(lua_State *L, chr_waiter_t *w) {
  (void)L;
  sleeper_t *s = (sleeper_t *)w;
  uv_close((uv_handle_t *)&s->timer, sleeper_close_cb);
  return 0;
}

static void sleeper_release(chr_waiter_t *w) {
  sleeper_t *s = (sleeper_t *)w;
  uv_close((uv_handle_t *)&s->timer, sleeper_close_cb);
}

static void sleeper_cancel(chr_waiter_t *w) {
  sleeper_t *s = (sleeper_t *)w;
  uv_timer_stop(&s->timer);
  uv_close((uv_handle_t *)&s->timer, sleeper_close_cb);
}

static void sleeper_cb(uv_timer_t *t) {
  chr_waiter_done(&((sleeper_t *)t->data)->w);
}

static int l_sleep(lua_State *L) {
  lua_Number secs = luaL_checknumber(L, 1);
  if (!(secs >= 0)) return chr_lua_error(L, CHR_EINVAL, "sleep: seconds must be >= 0");
  sleeper_t *s = chr_calloc(1, sizeof *s);
  s->w.finish = sleeper_finish;
  s->w.release = sleeper_release;
  s->w.cancel = sleeper_cancel;
  s->w.what = "chronis.sleep";
  uv_timer_init(chr_loop(), &s->timer);
  s->timer.data = s;
  /* The loop's clock stands still between its iterations: after Lua has
   * run for a while it is behind, and a timer counted from it would end
   * the sleep early. */
  uv_update_time(chr_loop());
  uv_timer_start(&s->timer, sleeper_cb, (uint64_t)(secs * 1000 + 0.5), 0);
  return chr_wait(L, &s->w);
}

/* ---- spawn ---- */

#define TASK_MT "chronis.task"

typedef struct spawned {
  chr_task_t *task;
  int done, status, joined;
  chr_waiter_t *joiner;
  int self_ref; /* anchors the object while the task runs */
} spawned_t;

typedef struct joiner {
  chr_waiter_t w;
  spawned_t *sp;
} joiner_t;

static lua_State *main_L;

static void spawned_done(chr_task_t *t, int status) {
  spawned_t *sp = t->data;
  sp->done = 1;
  sp->status = status;
  luaL_unref(main_L, LUA_REGISTRYINDEX, sp->self_ref);
  sp->self_ref = LUA_NOREF;
  if (sp->joiner) {
    chr_waiter_t *w = sp->joiner;
    sp->joiner = NULL;
    chr_waiter_done(w);
  }
}

static int join_results(lua_State *L, spawned_t *sp) {
  lua_State *co = sp->task->co;
  sp->joined = 1;
  if (sp->status == CHR_TASK_KILLED) return luaL_error(L, "task was killed");
  if (sp->status != LUA_OK) {
    lua_pushvalue(co, -1);
    lua_xmove(co, L, 1);
    return lua_error(L);
  }
  int n = lua_gettop(co);
  luaL_checkstack(L, n, "join");
  for (int i = 1; i <= n; i++) lua_pushvalue(co, i);
  lua_xmove(co, L, n);
  return n;
}

static int joiner_finish(lua_State *L, chr_waiter_t *w) {
  spawned_t *sp = ((joiner_t *)w)->sp;
  free(w);
  return join_results(L, sp);
}

static void joiner_release(chr_waiter_t *w) {
  free(w);
}

static int l_task_join(lua_State *L) {
  spawned_t *sp = luaL_checkudata(L, 1, TASK_MT);
  if (sp->done) return join_results(L, sp);
  if (sp->joiner) return luaL_error(L, "task is already being joined");
  joiner_t *j = chr_calloc(1, sizeof *j);
  j->sp = sp;
  j->w.finish = joiner_finish;
  j->w.release = joiner_release;
  sp->joiner = &j->w;
  lua_pushvalue(L, 1); /* keep sp alive while waiting */
  lua_setiuservalue(L, 1, 1);
  return chr_wait(L, &j->w);
}

static int l_task_done(lua_State *L) {
  spawned_t *sp = luaL_checkudata(L, 1, TASK_MT);
  lua_pushboolean(L, sp->done);
  return 1;
}

static int l_task_gc(lua_State *L) {
  spawned_t *sp = luaL_checkudata(L, 1, TASK_MT);
  if (sp->task && sp->done) {
    if (sp->status != LUA_OK && sp->status != CHR_TASK_KILLED && !sp->joined)
      fprintf(stderr, "chronis: a spawned task failed and was never joined: %s\n",
              luaL_tolstring(sp->task->co, -1, NULL));
    chr_task_release(sp->task);
    sp->task = NULL;
  }
  return 0;
}

static int l_spawn(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  int nargs = lua_gettop(L) - 1;
  spawned_t *sp = lua_newuserdatauv(L, sizeof *sp, 1);
  memset(sp, 0, sizeof *sp);
  static const luaL_Reg meta[] = {{"__gc", l_task_gc}, {NULL, NULL}};
  static const luaL_Reg methods[] = {{"join", l_task_join}, {"done", l_task_done}, {NULL, NULL}};
  chr_lua_classmeta(L, TASK_MT, meta, methods);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  sp->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  sp->task = chr_task_new(L, spawned_done, sp);
  lua_State *co = sp->task->co;
  lua_pushvalue(L, 1);
  for (int i = 2; i <= nargs + 1; i++) lua_pushvalue(L, i);
  lua_xmove(L, co, nargs + 1);
  chr_task_start(sp->task, nargs);
  return 1; /* the task object */
}

/* ---- running the loop ---- */

static int stop_requested;
static int exit_requested, exit_code;

static void wake_cb(uv_timer_t *t) {
  (void)t;
}

static void free_handle_cb(uv_handle_t *h) {
  free(h);
}

/* Makes run() return (the host's signal path). */
void chr_core_request_stop(void);
void chr_core_request_stop(void) {
  stop_requested = 1;
  uv_stop(chr_loop());
}

/* The code a handler passed to os.exit, or -1: the host exits with it
 * once every scheduler has stopped. */
int chr_core_exit_code(void);
int chr_core_exit_code(void) {
  return exit_requested ? exit_code : -1;
}

/* os.exit, as chronis installs it: outside a chronis task it is Lua's
 * own. A handler that calls it does not take the process down under the
 * other handlers: its run ends there (a failed run, logged), and the
 * process stops gracefully and then exits with that code (the host, or
 * chronis.run under plain lua5.4). */
static int l_os_exit(lua_State *L) {
  if (chr_task_current(L) == NULL) {
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 0);
    return 0;
  }
  int code = lua_isboolean(L, 1) ? (lua_toboolean(L, 1) ? 0 : 1) : (int)luaL_optinteger(L, 1, 0);
  chr_log(CHR_LOG_WARN, NULL, "os.exit(%d) called from a chronis task: stopping gracefully, then "
                              "exiting with %d", code, code);
  if (!exit_requested) {
    exit_requested = 1;
    exit_code = code;
  }
  chr_core_request_stop();
  return chr_task_exit(L, code);
}

static int l_exit_code(lua_State *L) {
  if (!exit_requested) return 0;
  lua_pushinteger(L, exit_code);
  return 1;
}

static void install_os_exit(lua_State *L) {
  if (lua_getglobal(L, "os") != LUA_TTABLE) {
    lua_pop(L, 1);
    return;
  }
  lua_getfield(L, -1, "exit");
  if (lua_tocfunction(L, -1) == l_os_exit || !lua_isfunction(L, -1)) {
    lua_pop(L, 2);
    return;
  }
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, "chronis.os_exit"); /* Lua's own, for chronis.run */
  lua_pushcclosure(L, l_os_exit, 1);
  lua_setfield(L, -2, "exit");
  lua_pop(L, 1);
}

static int l_real_exit(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, "chronis.os_exit");
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 0);
  return 0;
}

static int l_stop_loop(lua_State *L) {
  (void)L;
  chr_core_request_stop();
  return 0;
}

/* ---- stop signals ----
 * SIGINT and SIGTERM stop the process gracefully, in every form an app
 * takes: under the host (which watches them while it runs), and in
 * chronis.run() under plain lua5.4 (which watches them while it runs).
 * The first signal begins the stop of every scheduler, each with its own
 * shutdown_grace, makes run() return, and ends any wait in the main chunk
 * (an app still waiting for its store); a second one ends the grace
 * periods at once (the running handlers are stopped, their completions
 * written); a third exits at once. */

static uv_signal_t sig_handles[2];
static const int sig_nums[2] = {SIGINT, SIGTERM};
static struct sigaction sig_saved[2];
static int sig_users, sig_ready, signals_seen, signal_first;

void chr_lua_sched_interrupt(int now);

static const char *signal_name(int signum) {
  return signum == SIGINT ? "SIGINT" : signum == SIGTERM ? "SIGTERM" : "a signal";
}

static void signal_cb(uv_signal_t *h, int signum) {
  (void)h;
  const char *name = signal_name(signum);
  if (++signals_seen == 1) {
    signal_first = signum;
    chr_log(CHR_LOG_INFO, NULL, "received %s: stopping every scheduler gracefully (send it again "
                                "to stop the running handlers at once)", name);
    chr_task_interrupt_waits(signum);
    chr_lua_sched_interrupt(0);
    chr_core_request_stop();
  } else if (signals_seen == 2) {
    chr_log(CHR_LOG_WARN, NULL, "received %s, a second stop signal: ending the shutdown grace "
                                "period now (a third exits at once)", name);
    chr_lua_sched_interrupt(1);
  } else {
    chr_log(CHR_LOG_ERROR, NULL, "received %s a third time: exiting at once, without waiting for "
                                 "what is still running or unwritten", name);
    exit(1);
  }
}

/* Watches SIGINT and SIGTERM (on: 1) until as many calls with 0; the
 * handlers found before are put back afterwards. The watchers alone do
 * not keep the loop alive. */
void chr_core_catch_signals(int on);
void chr_core_catch_signals(int on) {
  if (on) {
    if (sig_users++ > 0) return;
    for (int i = 0; i < 2; i++) {
      if (!sig_ready) uv_signal_init(chr_loop(), &sig_handles[i]);
      sigaction(sig_nums[i], NULL, &sig_saved[i]);
      uv_signal_start(&sig_handles[i], signal_cb, sig_nums[i]);
      uv_unref((uv_handle_t *)&sig_handles[i]);
    }
    sig_ready = 1;
    return;
  }
  if (sig_users == 0 || --sig_users > 0) return;
  for (int i = 0; i < 2; i++) {
    uv_signal_stop(&sig_handles[i]);
    sigaction(sig_nums[i], &sig_saved[i], NULL);
  }
}

/* The first stop signal received (SIGINT, SIGTERM), or 0. */
int chr_core_signalled(void);
int chr_core_signalled(void) {
  return signal_first;
}

static int l_catch_signals(lua_State *L) {
  chr_core_catch_signals(lua_toboolean(L, 1));
  return 0;
}

/* interrupted() -> "SIGINT" / "SIGTERM" once a stop signal came, or nil. */
static int l_interrupted(lua_State *L) {
  if (!signal_first) return 0;
  lua_pushstring(L, signal_name(signal_first));
  return 1;
}

/* run() drives the loop until stop() or nothing is left to do. After a
 * stop signal it returns at once: the host calls it again after an app
 * that called it itself, and must not start the loop anew. */
static int l_run(lua_State *L) {
  if (chr_loop_running()) return luaL_error(L, "chronis.run: the loop is already running");
  stop_requested = 0;
  while (!stop_requested && !signal_first) {
    chr_loop_step(L);
    if (!uv_loop_alive(chr_loop())) break;
  }
  /* The signal has reached the code that acts on it: waits in the main
   * chunk (the app's code after run(), the stops that follow) go on. */
  if (signal_first) chr_task_interrupt_waits(0);
  return 0;
}

/* run_until(seconds) or run_until(predicate [, timeout_seconds]): drives
 * the loop; returns true once the predicate holds, false on timeout. */
static int l_run_until(lua_State *L) {
  if (chr_loop_running())
    return luaL_error(L, "chronis.run_until cannot run inside the event loop (from a handler, "
                         "a callback or a task): use chronis.sleep to wait there");
  int is_fn = lua_isfunction(L, 1);
  double limit = is_fn ? luaL_optnumber(L, 2, 30) : luaL_checknumber(L, 1);
  int64_t deadline = chr_time_mono() + (int64_t)(limit * 1e6);
  uv_timer_t *tick = chr_malloc(sizeof *tick);
  uv_timer_init(chr_loop(), tick);
  /* A short tick re-checks the predicate even when nothing else happens. */
  uv_timer_start(tick, wake_cb, 5, 5);
  int ok = 0;
  stop_requested = 0;
  for (;;) {
    if (is_fn) {
      lua_pushvalue(L, 1);
      if (lua_pcall(L, 0, 1, 0) != LUA_OK) {
        uv_close((uv_handle_t *)tick, free_handle_cb);
        return lua_error(L);
      }
      ok = lua_toboolean(L, -1);
      lua_pop(L, 1);
      if (ok) break;
    }
    if (chr_time_mono() >= deadline || stop_requested) break;
    chr_loop_step(L);
  }
  uv_close((uv_handle_t *)tick, free_handle_cb);
  lua_pushboolean(L, is_fn ? ok : 1);
  return 1;
}

/* error(code, message) -> a structured error object (not raised). */
static int l_error(lua_State *L) {
  const char *code = luaL_checkstring(L, 1);
  chr_lua_pusherror(L, CHR_EINVAL, luaL_checkstring(L, 2));
  lua_pushstring(L, code);
  lua_setfield(L, -2, "code");
  return 1;
}

static int l_live_tasks(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)chr_task_live());
  return 1;
}

/* in_task() -> whether the caller runs in a chronis task (a handler, a
 * callback, a spawned function) rather than in a script's main chunk: a
 * job created there is made at run time, not declared by the app. */
static int l_in_task(lua_State *L) {
  lua_pushboolean(L, chr_task_current(L) != NULL);
  return 1;
}

/* queue_name_problem(s) -> what is wrong with s as a queue name
 * (chr_queue_name_problem), or nil: one rule for the core and the command
 * line, which words its own error around it. */
static int l_queue_name_problem(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  const char *bad = chr_queue_name_problem(s, n);
  if (bad == NULL && strlen(s) != n) bad = "a queue name cannot hold NUL bytes";
  if (bad) lua_pushstring(L, bad);
  else lua_pushnil(L);
  return 1;
}

static void walk_cb(uv_handle_t *h, void *arg) {
  if (!uv_is_closing(h) && uv_is_active(h)) (*(int *)arg)++;
}

static int l_active_handles(lua_State *L) {
  int n = 0;
  uv_walk(chr_loop(), walk_cb, &n);
  lua_pushinteger(L, n);
  return 1;
}

/* ---- memory cap ----
 * A wrapper around the state's allocator counts Lua's bytes; past the cap
 * an allocation fails, Lua runs an emergency collection and, if that does
 * not help, raises a memory error in the code that asked: a handler that
 * allocates without bound fails (code "memory") and the host goes on. */

typedef struct memcap {
  lua_Alloc inner;
  void *ud;
  size_t used, limit;
} memcap_t;

static memcap_t memcap = {NULL, NULL, 0, (size_t)1 << 30};

static void *capped_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  memcap_t *m = ud;
  size_t old = ptr ? osize : 0;
  if (nsize > old && m->used - old + nsize > m->limit) return NULL;
  void *p = m->inner(m->ud, ptr, osize, nsize);
  if (p != NULL || nsize == 0) m->used = m->used - old + nsize;
  return p;
}

static int l_set_memory_limit(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  if (n < (1 << 20)) return chr_lua_error(L, CHR_EINVAL, "memory limit must be at least 1 MiB");
  memcap.limit = (size_t)n;
  return 0;
}

static int l_memory_used(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)memcap.used);
  lua_pushinteger(L, (lua_Integer)memcap.limit);
  return 2;
}

static void install_memcap(lua_State *L) {
  void *ud;
  lua_Alloc f = lua_getallocf(L, &ud);
  if (f == capped_alloc) return;
  memcap.inner = f;
  memcap.ud = ud;
  /* What was allocated before the wrapper is not counted: start from the
   * collector's own count. */
  memcap.used = (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
  lua_setallocf(L, capped_alloc, &memcap);
}

int luaopen_chronis_core(lua_State *L) {
  static const luaL_Reg fns[] = {{"spawn", l_spawn},
                                 {"sleep", l_sleep},
                                 {"run", l_run},
                                 {"run_until", l_run_until},
                                 {"stop_loop", l_stop_loop},
                                 {"live_tasks", l_live_tasks},
                                 {"in_task", l_in_task},
                                 {"queue_name_problem", l_queue_name_problem},
                                 {"error", l_error},
                                 {"set_memory_limit", l_set_memory_limit},
                                 {"memory_used", l_memory_used},
                                 {"active_handles", l_active_handles},
                                 {"exit_code", l_exit_code},
                                 {"catch_signals", l_catch_signals},
                                 {"interrupted", l_interrupted},
                                 {"real_exit", l_real_exit},
                                 {NULL, NULL}};
  /* Tasks hang off the main thread, whichever coroutine required us. */
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  main_L = lua_tothread(L, -1);
  lua_pop(L, 1);
  chr_task_init(main_L);
  install_memcap(L);
  install_os_exit(L);
  /* Each submodule's opener pushes its table: core.<name>. */
  static const luaL_Reg submodules[] = {
      {"time", luaopen_chronis_time},         {"tz", luaopen_chronis_tz},
      {"cron", luaopen_chronis_cron},         {"fs", luaopen_chronis_fs},
      {"storage", luaopen_chronis_storage},   {"lua_store", luaopen_chronis_lua_store},
      {"lua_lock", luaopen_chronis_lua_lock}, {"lock", luaopen_chronis_lock},
      {"engine", luaopen_chronis_engine},     {"http", luaopen_chronis_http},
      {"crypto", luaopen_chronis_crypto},     {"httpd", luaopen_chronis_httpd},
      {"metrics", luaopen_chronis_metrics},
      {NULL, NULL}};
  static const luaL_Reg json[] = {{"encode", l_json_encode}, {"decode", l_json_decode}, {NULL, NULL}};
  luaL_newlib(L, fns);
  chr_lua_suggest_fns(L);
  /* The typed fields of a job (docs/design.md), for the checks of the
   * Lua API: a misspelt field is told from a field of one's own. */
  lua_createtable(L, CHR_F__COUNT, 0);
  for (int f = 0; f < CHR_F__COUNT; f++) {
    lua_pushstring(L, chr_job_fields[f].name);
    lua_rawseti(L, -2, f + 1);
  }
  lua_setfield(L, -2, "job_fields");
  for (const luaL_Reg *m = submodules; m->name != NULL; m++) {
    m->func(L);
    lua_setfield(L, -2, m->name);
  }
  luaL_newlib(L, json);
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  lua_setfield(L, -2, "json");
  return 1;
}
