/* scheduler.c - the scheduler as a Lua object (chronis.core.engine): the
 * engine's host. It keeps the Lua side of a scheduler (handlers, clock,
 * logger, the finish callback, stop() calls waiting) and implements the
 * engine's hooks: a run is a task (runtime/lua/task.c) calling the
 * handler with the job table; its outcome goes back with chr_run_done.
 * Also job preparation (validation, defaults, first run time) for the
 * Lua API in lua/chronis/init.lua. */
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/engine.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/suggest.h"
#include "core/time.h"
#include "core/trigger.h"
#include "core/tz.h"
#include "job.h"
#include "json.h"
#include "store.h"
#include "task.h"
#include "util.h"

#define SCHED_MT "chronis.scheduler"

typedef struct stopper stopper_t;

/* What the engine's host keeps for one scheduler. Freed by the engine's
 * freed hook, so it outlives the Lua object while runs are still ending. */
typedef struct lhost {
  lua_State *L; /* the main thread: tasks come and go */
  chr_sched_t *s;
  int store_ref, lock_ref, handlers_ref, clock_ref, logger_ref, finish_ref;
  int self_ref;        /* anchors the Lua object while the scheduler runs */
  int finish_wanted;   /* call finish_ref after final outcomes */
  stopper_t *stoppers; /* stop() calls waiting for the stop to end */
  struct lhost *next_host; /* every scheduler not yet freed (stop signals) */
  unsigned interrupt_seen;  /* the last stop signal that looked at it */
} lhost_t;

static lhost_t *hosts;

typedef struct lsched {
  chr_sched_t *s; /* NULL once closed */
  lhost_t *h;
} lsched_t;

struct chr_sched *chr_lua_tosched(lua_State *L, int idx) {
  lsched_t *ls = luaL_testudata(L, idx, SCHED_MT);
  return ls ? ls->s : NULL;
}

static lsched_t *check_lsched(lua_State *L, int idx) {
  lsched_t *ls = luaL_checkudata(L, idx, SCHED_MT);
  if (ls->s == NULL) luaL_error(L, "attempt to use a closed scheduler");
  return ls;
}

/* ---- hooks: logging and the clock ---- */

typedef struct logcall {
  lhost_t *h;
  int level;
  const char *msg;
  const chr_log_field_t *f;
  size_t n;
} logcall_t;

/* logger(level, msg, fields): every field of the line, numbers as
 * numbers. Runs under chr_lua_cpcall. stack: unchanged */
static int call_logger(lua_State *L) {
  logcall_t *c = lua_touserdata(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->h->logger_ref);
  lua_pushstring(L, chr_log_level_names[c->level]);
  lua_pushstring(L, c->msg);
  lua_createtable(L, 0, (int)c->n);
  for (size_t i = 0; i < c->n; i++) {
    if (!c->f[i].raw || lua_stringtonumber(L, c->f[i].value) == 0)
      lua_pushstring(L, c->f[i].value);
    lua_setfield(L, -2, c->f[i].key);
  }
  lua_call(L, 3, 0);
  return 0;
}

static void hook_log(void *host, int level, const char *msg, const chr_log_field_t *f, size_t n) {
  lhost_t *h = host;
  if (h->logger_ref == LUA_NOREF) {
    chr_log_fields(level, msg, f, n);
    return;
  }
  logcall_t c = {h, level, msg, f, n};
  char err[512];
  if (chr_lua_cpcall(h->L, call_logger, &c, err, sizeof err) != LUA_OK) {
    const char *job_id = NULL;
    for (size_t i = 0; i < n; i++)
      if (strcmp(f[i].key, "job_id") == 0) job_id = f[i].value;
    chr_log(CHR_LOG_ERROR, job_id, "logger failed: %s (message was: %s)", err, msg);
  }
}

/* A logger gets every line; the process log only those of its level. */
static int hook_log_enabled(void *host, int level) {
  const lhost_t *h = host;
  return h->logger_ref != LUA_NOREF || level >= chr_log_get_level();
}

static int64_t hook_now(void *host) {
  lhost_t *h = host;
  if (h->clock_ref == LUA_NOREF) return chr_time_now();
  lua_State *L = h->L;
  int64_t now = chr_time_now();
  lua_rawgeti(L, LUA_REGISTRYINDEX, h->clock_ref);
  if (lua_pcall(L, 0, 1, 0) != LUA_OK) {
    chr_sched_log(h->s, CHR_LOG_ERROR, NULL, "clock function failed: %s",
                  lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "(not a string)");
  } else if (lua_isinteger(L, -1)) {
    now = lua_tointeger(L, -1);
  } else if (lua_type(L, -1) == LUA_TSTRING) {
    size_t n;
    const char *str = lua_tolstring(L, -1, &n);
    char err[200];
    if (chr_time_parse(str, n, NULL, &now, err, sizeof err) != 0)
      chr_sched_log(h->s, CHR_LOG_ERROR, NULL, "clock returned a bad time: %s", err);
  } else {
    chr_sched_log(h->s, CHR_LOG_ERROR, NULL, "clock must return integer microseconds");
  }
  lua_pop(L, 1);
  return now;
}

/* ---- hooks: runs ---- */

/* Pushes the string s as a Lua string. lua_pushstring and lua_getfield
 * look a C string up in Lua's cache of API strings first, a strcmp per
 * call; with its length given, Lua hashes it straight into its table of
 * short strings. stack: +1 */
static void push_str(lua_State *L, const char *s) {
  lua_pushlstring(L, s, strlen(s));
}

/* stack: +1 the handler function, or nothing when absent (returns 0). A
 * handler of this scheduler wins over a process-wide one. */
static int push_handler(lhost_t *h, const char *name) {
  lua_State *L = h->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, h->handlers_ref);
  push_str(L, name);
  lua_gettable(L, -2);
  lua_remove(L, -2);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, "chronis.handlers"); /* process-wide */
    if (lua_istable(L, -1)) {
      push_str(L, name);
      lua_gettable(L, -2);
    } else {
      lua_pushnil(L);
    }
    lua_remove(L, -2);
  }
  if (lua_istable(L, -1)) { /* a handler script's table: { run = fn, ... } */
    lua_getfield(L, -1, "run");
    lua_remove(L, -2);
  }
  if (lua_isfunction(L, -1)) return 1;
  lua_pop(L, 1);
  return 0;
}

/* The keys of the job table, made once per Lua state and kept in the
 * registry: setting a field by a Lua string already made costs no lookup
 * of the key's C text (see push_str), and every run sets all of them. */
enum { JK_JOB_ID = 1, JK_NAME, JK_FUNC_NAME, JK_TIMEZONE, JK_SCHEDULED_TIME, JK_ATTEMPT,
       JK_RETRY_COUNT, JK__COUNT };
static const char *const job_keys[JK__COUNT] = {
    NULL, "job_id", "name", "func_name", "timezone", "scheduled_time", "attempt", "retry_count"};
static const char job_keys_key = 0;

/* stack: +1 the array of job_keys as Lua strings */
static void push_job_keys(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &job_keys_key) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_createtable(L, JK__COUNT - 1, 0);
  for (int i = 1; i < JK__COUNT; i++) {
    lua_pushstring(L, job_keys[i]);
    lua_rawseti(L, -2, i);
  }
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &job_keys_key);
}

/* Sets the key k of the table at -3 (keys at -2) to the value on top.
 * stack: -1 */
static void set_job_key(lua_State *L, int k) {
  lua_rawgeti(L, -2, k);
  lua_insert(L, -2);
  lua_rawset(L, -4);
}

/* The table a handler receives. Its typed fields are set at once; the
 * members of extra (args, kwargs, metadata, unknown fields) are decoded
 * only when the handler first touches the table beyond them (chr_lua_job_
 * materialize): a handler that never reads them costs no JSON decoding.
 * stack: +1 */
static void push_job_arg(lua_State *L, const chr_run_t *r) {
  const chr_job_t *j = chr_run_job(r);
  char tb[CHR_TIME_BUFSZ];
  lua_createtable(L, 0, 12);
  push_job_keys(L);
  push_str(L, j->job_id);
  set_job_key(L, JK_JOB_ID);
  if (j->name) {
    push_str(L, j->name);
    set_job_key(L, JK_NAME);
  }
  if (j->func_name) {
    push_str(L, j->func_name);
    set_job_key(L, JK_FUNC_NAME);
  }
  if (j->timezone) {
    push_str(L, j->timezone);
    set_job_key(L, JK_TIMEZONE);
  }
  size_t n = (size_t)chr_time_format(chr_run_scheduled(r), tb);
  lua_pushlstring(L, tb, n);
  set_job_key(L, JK_SCHEDULED_TIME);
  lua_pushinteger(L, chr_job_int(j, CHR_F_ATTEMPT, 0) + 1);
  set_job_key(L, JK_ATTEMPT);
  lua_pushinteger(L, chr_job_int(j, CHR_F_RETRY_COUNT, 0));
  set_job_key(L, JK_RETRY_COUNT);
  lua_pop(L, 1);
  chr_lua_job_lazy(L, j->extra);
}

typedef struct errdesc {
  lua_State *co; /* the failed coroutine, its error value on top */
  int code;
  chr_buf_t msg;
} errdesc_t;

/* Runs under chr_lua_cpcall. stack: unchanged */
static int describe_error(lua_State *L) {
  errdesc_t *d = lua_touserdata(L, 1);
  lua_xmove(d->co, L, 1); /* stack: ud err */
  if (lua_istable(L, 2)) {
    if (lua_getfield(L, 2, "code") == LUA_TSTRING && strcmp(lua_tostring(L, -1), "memory") == 0)
      d->code = CHR_ENOMEM;
    lua_pop(L, 1);
  }
  chr_lua_describe(L, 2, &d->msg);
  return 0;
}

/* The error value of a failed handler (on top of co) as a message: a
 * string, a value's __tostring, or a table by its fields
 * (chr_lua_describe), so error({code = 42}) says "code=42" rather than an
 * address. Runs on the main thread in protected mode, since a __tostring
 * may raise, return a non-string or wait. Returns a malloc'ed message.
 * stack: co -1 */
static char *error_message(lhost_t *h, lua_State *co, int *code) {
  errdesc_t d = {co, CHR_EHANDLER, {0}};
  const char *type = luaL_typename(co, -1);
  char err[256];
  chr_buf_init(&d.msg);
  int rc = chr_lua_cpcall(h->L, describe_error, &d, err, sizeof err);
  *code = d.code;
  if (rc == LUA_OK) return chr_buf_steal(&d.msg);
  chr_buf_free(&d.msg);
  return chr_sprintf("(a %s error value that cannot be shown: its __tostring failed: %s)", type,
                     err);
}

static void task_done(chr_task_t *t, int status) {
  chr_run_t *r = t->data;
  lhost_t *h = chr_sched_host(chr_run_sched(r));
  if (status == LUA_OK) {
    chr_task_release(t);
    chr_run_done(r, CHR_RUN_OK, 0, NULL);
  } else if (status == CHR_TASK_KILLED) {
    int exited = t->exited, exit_code = t->exit_code;
    chr_task_release(t);
    if (exited) {
      char msg[128];
      snprintf(msg, sizeof msg, "the handler called os.exit(%d): the process stops", exit_code);
      chr_run_done(r, CHR_RUN_EXIT, CHR_EHANDLER, msg);
    } else {
      chr_run_done(r, CHR_RUN_KILLED, 0, NULL);
    }
  } else {
    int code;
    char *msg = error_message(h, t->co, &code);
    if (status == LUA_ERRMEM) code = CHR_ENOMEM;
    chr_task_release(t);
    chr_run_done(r, CHR_RUN_ERROR, code, msg);
    free(msg);
  }
}

typedef struct startcall {
  lhost_t *h;
  chr_run_t *r;
  chr_task_t *task;
} startcall_t;

/* The handler and the job table moved onto a new task; no task when there
 * is no handler. Runs under chr_lua_cpcall. stack: unchanged */
static int prepare_task(lua_State *L) {
  startcall_t *c = lua_touserdata(L, 1);
  const chr_job_t *j = chr_run_job(c->r);
  if (!push_handler(c->h, j->func_name ? j->func_name : "")) return 0;
  push_job_arg(L, c->r);
  /* The task last: nothing can fail between its creation and its start. */
  c->task = chr_task_new(L, task_done, c->r);
  lua_xmove(L, c->task->co, 2);
  return 0;
}

static int hook_start_run(void *host, chr_run_t *r, char *err, size_t errlen) {
  lhost_t *h = host;
  startcall_t c = {h, r, NULL};
  if (chr_lua_cpcall(h->L, prepare_task, &c, err, errlen) != LUA_OK) return CHR_ENOMEM;
  if (c.task == NULL) {
    const chr_job_t *j = chr_run_job(r);
    snprintf(err, errlen, "no handler named '%s'", j->func_name ? j->func_name : "");
    return CHR_ENOHANDLER;
  }
  chr_run_set_data(r, c.task);
  c.task->preemptible = 1; /* handlers only: see task.h */
  if (chr_run_timeout(r) > 0)
    chr_task_set_deadline(c.task, chr_time_mono() + (int64_t)(chr_run_timeout(r) * 1e6));
  chr_task_start(c.task, 1); /* may end the run (and free r) before it returns */
  return 0;
}

static void hook_stop_run(void *host, chr_run_t *r, int why) {
  (void)host;
  chr_task_t *t = chr_run_data(r);
  if (t) chr_task_kill(t, why == CHR_STOP_TIMEOUT ? "timeout" : "scheduler stopped");
}

/* ---- hooks: final outcomes, stop, free ---- */

static void finish_task_done(chr_task_t *t, int status) {
  if (status != LUA_OK && status != CHR_TASK_KILLED)
    chr_log(CHR_LOG_ERROR, NULL, "the finish callback failed: %s",
            lua_type(t->co, -1) == LUA_TSTRING ? lua_tostring(t->co, -1) : "(not a string)");
  chr_task_release(t);
}

typedef struct finishcall {
  lhost_t *h;
  const chr_job_t *job;
  int code;
  const char *msg;
} finishcall_t;

/* finish(ok, job_id, err | nil, job) in a task of its own, so callbacks
 * may wait (store calls, sleep). Runs under chr_lua_cpcall. */
static int start_finish(lua_State *L) {
  finishcall_t *c = lua_touserdata(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->h->finish_ref);
  lua_pushboolean(L, c->code == 0);
  lua_pushstring(L, c->job->job_id);
  if (c->code == 0) lua_pushnil(L);
  else chr_lua_pusherror(L, c->code, c->msg);
  chr_job_push(L, c->job);
  chr_task_t *t = chr_task_new(L, finish_task_done, NULL);
  lua_xmove(L, t->co, 5);
  chr_task_start(t, 4);
  return 0;
}

static void hook_finished(void *host, const chr_job_t *job, int code, const char *msg) {
  lhost_t *h = host;
  if (!h->finish_wanted || h->finish_ref == LUA_NOREF) return;
  finishcall_t c = {h, job, code, msg};
  char err[300];
  if (chr_lua_cpcall(h->L, start_finish, &c, err, sizeof err) != LUA_OK)
    chr_sched_log(h->s, CHR_LOG_ERROR, job->job_id, "cannot call the callbacks: %s", err);
}

struct stopper {
  chr_waiter_t w;
  lhost_t *h;
  stopper_t *next;
};

static void unanchor(lhost_t *h) {
  if (h->self_ref != LUA_NOREF) {
    luaL_unref(h->L, LUA_REGISTRYINDEX, h->self_ref);
    h->self_ref = LUA_NOREF;
  }
}

/* Completions given up by the stops of every scheduler of the process. */
static uint64_t unwritten;

uint64_t chr_lua_sched_unwritten(void);
uint64_t chr_lua_sched_unwritten(void) {
  return unwritten;
}

/* The engine has stopped: every stop() waiting returns. */
static void hook_stopped(void *host) {
  lhost_t *h = host;
  unwritten += chr_sched_stop_stats(h->s).unwritten;
  unanchor(h);
  while (h->stoppers) {
    stopper_t *st = h->stoppers;
    h->stoppers = st->next;
    chr_waiter_done(&st->w);
  }
}

static void hook_freed(void *host) {
  lhost_t *h = host;
  for (lhost_t **p = &hosts; *p; p = &(*p)->next_host) {
    if (*p == h) {
      *p = h->next_host;
      break;
    }
  }
  int refs[] = {h->store_ref, h->lock_ref,  h->handlers_ref, h->clock_ref,
                h->logger_ref, h->finish_ref, h->self_ref};
  for (size_t i = 0; i < sizeof refs / sizeof *refs; i++) luaL_unref(h->L, LUA_REGISTRYINDEX, refs[i]);
  free(h);
}

static const chr_sched_hooks_t hooks = {hook_start_run, hook_stop_run, hook_log,
                                        hook_now,       hook_finished, hook_stopped,
                                        hook_freed,     hook_log_enabled};

/* ---- the Lua object ---- */

static int opt_ref(lua_State *L, int t, const char *k, int type) {
  lua_getfield(L, t, k);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return LUA_NOREF;
  }
  if (lua_type(L, -1) != type)
    chr_lua_error(L, CHR_EINVAL, "invalid option '%s': expected a %s, got %s", k,
                  lua_typename(L, type), luaL_typename(L, -1));
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* The options of chronis.scheduler{}: on_success and on_failure are
 * taken out by lua/chronis/init.lua, which passes its own on_finish;
 * strict_handlers, undeclared and app are its own too (named here for the
 * check of unknown options). */
static const char *const known_opts[] = {
    "storage",        "lock",    "polling_interval", "max_workers",     "max_queue_size",
    "lease_seconds",  "clock",   "logger",           "shutdown_grace",  "node_id",
    "default_timeout", "on_success", "on_failure", "strict_handlers", "keep_completed",
    "filters",        "undeclared", "app",        "max_catch_up",    "misfire_threshold",
    "queues",         NULL};

/* A whole-number option k in lo..hi (def when absent), named when not. */
static int opt_int(lua_State *L, int t, const char *k, int def, int lo, int hi) {
  double v = chr_lua_optnumber(L, t, k, def, lo, hi);
  if (v != (double)(int)v)
    chr_lua_error(L, CHR_EINVAL, "invalid option '%s': expected a whole number, got %g", k, v);
  return (int)v;
}

/* Raises `invalid option 'queues': queue 'q': unknown key ...` for the keys
 * of the table at idx that are not in known (with the usual suggestion). */
static void queue_keys(lua_State *L, int idx, const char *queue, const char *const *known) {
  chr_unknown_t u;
  chr_unknown_init(&u);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    size_t n;
    const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
    int ok = 0;
    for (const char *const *c = known; k && *c && !ok; c++) ok = strcmp(*c, k) == 0;
    if (!ok) {
      if (k == NULL) k = luaL_typename(L, -1), n = strlen(k);
      chr_unknown_add(&u, k, n);
    }
  }
  if (u.n == 0) return;
  chr_buf_t b;
  chr_buf_init(&b);
  chr_unknown_format(&u, "key", known, NULL, &b);
  chr_unknown_free(&u);
  lua_pushlstring(L, b.p, b.len);
  chr_buf_free(&b);
  chr_lua_error(L, CHR_EINVAL, "invalid option 'queues': queue '%s': %s", queue,
                lua_tostring(L, -1));
}

/* An integer >= 1 at the top of the stack (popped), or def when nil. */
static int64_t queue_int(lua_State *L, const char *queue, const char *key, int64_t def) {
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return def;
  }
  int isint = 0;
  lua_Integer v = lua_tointegerx(L, -1, &isint);
  if (!isint || v < 1 || v > 1000000000) {
    lua_pushvalue(L, -1);
    chr_lua_error(L, CHR_EINVAL, "invalid option 'queues': queue '%s': %s must be an integer "
                  "from 1 to 1000000000, got %s", queue, key, luaL_tolstring(L, -1, NULL));
  }
  lua_pop(L, 1);
  return (int64_t)v;
}

/* The option queues = { name = concurrency | { concurrency =,
 * global_concurrency =, rate = { limit =, period = } } } as an array in a
 * userdata (pushed; the names are the table's keys, which the options
 * keep). Concurrency defaults to max_workers. stack: +1 */
static chr_claim_queue_t *check_queues(lua_State *L, int opts, int max_workers, size_t *nq) {
  static const char *const keys[] = {"concurrency", "global_concurrency", "rate", NULL};
  static const char *const rate_keys[] = {"limit", "period", NULL};
  *nq = 0;
  lua_getfield(L, opts, "queues");
  int t = lua_gettop(L);
  if (lua_isnil(L, t)) {
    lua_pop(L, 1);
    lua_pushnil(L);
    return NULL;
  }
  if (!lua_istable(L, t))
    chr_lua_error(L, CHR_EINVAL, "invalid option 'queues': expected a table of queue names "
                  "(each a concurrency or a table of limits), got %s", luaL_typename(L, t));
  size_t n = 0;
  lua_pushnil(L);
  while (lua_next(L, t)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING)
      chr_lua_error(L, CHR_EINVAL, "invalid option 'queues': queue names are strings, got %s",
                    luaL_typename(L, -1));
    n++;
  }
  if (n == 0) chr_lua_error(L, CHR_EINVAL, "invalid option 'queues': no queue given");
  chr_claim_queue_t *q = lua_newuserdatauv(L, n * sizeof *q, 0);
  lua_replace(L, t); /* the options still hold the table */
  lua_getfield(L, opts, "queues");
  int qt = lua_gettop(L);
  size_t i = 0;
  lua_pushnil(L);
  while (lua_next(L, qt)) {
    size_t len;
    const char *name = lua_tolstring(L, -2, &len);
    const char *bad = chr_queue_name_problem(name, len);
    if (bad || strlen(name) != len)
      chr_lua_error(L, CHR_EINVAL, "invalid option 'queues': queue '%s': %s", name,
                    bad ? bad : "a queue name cannot hold NUL bytes");
    memset(&q[i], 0, sizeof q[i]);
    q[i].name = name;
    if (lua_type(L, -1) == LUA_TNUMBER) {
      q[i].limit = queue_int(L, name, "concurrency", 0); /* pops the value */
    } else if (lua_istable(L, -1)) {
      int v = lua_gettop(L);
      queue_keys(L, v, name, keys);
      lua_getfield(L, v, "concurrency");
      q[i].limit = queue_int(L, name, "concurrency", max_workers);
      lua_getfield(L, v, "global_concurrency");
      q[i].global_limit = queue_int(L, name, "global_concurrency", 0);
      if (lua_getfield(L, v, "rate") != LUA_TNIL) {
        int r = lua_gettop(L);
        if (!lua_istable(L, r))
          chr_lua_error(L, CHR_EINVAL, "invalid option 'queues': queue '%s': rate must be a table "
                        "{limit = runs, period = seconds}, got %s", name, luaL_typename(L, r));
        queue_keys(L, r, name, rate_keys);
        lua_getfield(L, r, "limit");
        if (lua_isnil(L, -1))
          chr_lua_error(L, CHR_EINVAL, "invalid option 'queues': queue '%s': rate.limit is "
                        "missing", name);
        q[i].rate_limit = queue_int(L, name, "rate.limit", 0);
        lua_getfield(L, r, "period");
        double period = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : 0;
        if (!(period > 0 && period <= 86400.0 * 366))
          chr_lua_error(L, CHR_EINVAL, "invalid option 'queues': queue '%s': rate.period must be "
                        "a number of seconds > 0 (at most a year), got %s", name,
                        luaL_tolstring(L, -1, NULL));
        q[i].rate_period_us = (int64_t)(period * 1e6);
        if (q[i].rate_period_us < 1) q[i].rate_period_us = 1;
        lua_pop(L, 1);
      }
      lua_pop(L, 2); /* rate (or nil), the value */
    } else {
      chr_lua_error(L, CHR_EINVAL, "invalid option 'queues': queue '%s': expected a concurrency "
                    "(an integer) or a table of limits, got %s", name, luaL_typename(L, -1));
    }
    i++;
  }
  lua_pop(L, 1); /* the table; the array stays */
  *nq = n;
  return q;
}

static int is_on_finish(const char *k) {
  return strcmp(k, "on_finish") == 0;
}

/* engine.new{storage=, lock=, polling_interval=, max_workers=, ...} */
static int l_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  chr_lua_checkkeys(L, 1, "scheduler option", known_opts, is_on_finish, NULL);
  chr_sched_opts_t o;
  o.polling_interval = chr_lua_optnumber(L, 1, "polling_interval", 1, 0.1, 3600);
  o.max_workers = (int)chr_lua_optnumber(L, 1, "max_workers", 20, 1, 1e6);
  o.max_queue_size = (int)chr_lua_optnumber(L, 1, "max_queue_size", o.max_workers * 5.0, 1, 1e7);
  o.lease_seconds = chr_lua_optnumber(L, 1, "lease_seconds", 30, 0.01, 86400);
  o.shutdown_grace = chr_lua_optnumber(L, 1, "shutdown_grace", 30, 0, 86400);
  o.default_timeout = chr_lua_optnumber(L, 1, "default_timeout", 0, 0, 86400 * 365);
  o.keep_completed = chr_lua_optnumber(L, 1, "keep_completed", 0, 0, 86400 * 3660);
  o.max_catch_up = opt_int(L, 1, "max_catch_up", 100, 1, 10000);
  /* The default misfire_threshold_seconds of the jobs this scheduler
   * creates: lua/chronis/init.lua gives it to them; checked here with the
   * other options. */
  opt_int(L, 1, "misfire_threshold", 60, 0, INT32_MAX);
  /* Its array stays on the stack until the engine has copied it. */
  o.queues = check_queues(L, 1, o.max_workers, &o.nqueues);
  lua_getfield(L, 1, "node_id");
  const char *node_id = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  if (node_id && (strlen(node_id) == 0 || lua_rawlen(L, -1) > 47))
    return chr_lua_error(L, CHR_EINVAL, "invalid option 'node_id': 1 to 47 bytes");
  if (node_id) {
    /* The node id is the owner of every claim: one a store refuses would
     * make every claim fail while the scheduler looks alive. */
    char buf[80];
    const char *bad = chr_job_string_problem(node_id, lua_rawlen(L, -1), buf, sizeof buf);
    if (bad) return chr_lua_error(L, CHR_EINVAL, "invalid option 'node_id': %s", bad);
  }
  lua_pop(L, 1);
  if (lua_getfield(L, 1, "storage") != LUA_TUSERDATA)
    return chr_lua_error(L, CHR_EINVAL, "invalid option 'storage': expected a store, a URL or a "
                         "table of options, got %s", luaL_typename(L, -1));
  chr_store_t *store = chr_lua_checkstore(L, -1);
  lua_pop(L, 1);
  chr_lock_t *lock = NULL;
  if (lua_getfield(L, 1, "lock") != LUA_TNIL) lock = chr_lua_checklock(L, -1);
  lua_pop(L, 1);
  /* Every check that can raise comes before anything is allocated. */
  int clock_ref = opt_ref(L, 1, "clock", LUA_TFUNCTION);
  int logger_ref = opt_ref(L, 1, "logger", LUA_TFUNCTION);
  int finish_ref = opt_ref(L, 1, "on_finish", LUA_TFUNCTION);
  /* The scope: read last of the checks, freed once the engine copied it. */
  chr_filter_t scope;
  lua_getfield(L, 1, "filters");
  chr_lua_checkfilter_own(L, -1, &scope, store->filter_keys);
  lua_pop(L, 1);
  const char *bad = chr_filter_scope_offender(&scope);
  if (bad != NULL) {
    chr_filter_free(&scope);
    luaL_unref(L, LUA_REGISTRYINDEX, clock_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, logger_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, finish_ref);
    return chr_lua_error(L, CHR_EINVAL, "invalid option 'filters': a scheduler's scope may hold "
                         "metadata.<key> conditions (and the store's own filter keys) only, not "
                         "'%s'", bad);
  }
  o.scope = &scope;
  lsched_t *ls = lua_newuserdatauv(L, sizeof *ls, 0);
  ls->s = NULL;
  ls->h = NULL;
  luaL_setmetatable(L, SCHED_MT);
  lhost_t *h = chr_calloc(1, sizeof *h);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  h->L = lua_tothread(L, -1);
  lua_pop(L, 1);
  h->clock_ref = clock_ref;
  h->logger_ref = logger_ref;
  h->finish_ref = finish_ref;
  h->self_ref = LUA_NOREF;
  lua_getfield(L, 1, "storage");
  h->store_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_getfield(L, 1, "lock");
  h->lock_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* LUA_REFNIL for nil */
  lua_newtable(L);
  h->handlers_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  h->s = chr_sched_new(store, lock, &o, &hooks, h);
  chr_filter_free(&scope);
  h->next_host = hosts;
  hosts = h;
  if (node_id) chr_sched_set_node_id(h->s, node_id);
  ls->s = h->s;
  ls->h = h;
  return 1;
}

static int l_start(lua_State *L) {
  lsched_t *ls = check_lsched(L, 1);
  char err[256];
  int rc = chr_sched_check_queues(ls->s, err, sizeof err);
  if (rc != 0) return chr_lua_error(L, rc, "cannot start: %s", err);
  rc = chr_sched_start(ls->s);
  if (rc != 0) return chr_lua_error(L, rc, "cannot start: the scheduler is stopping");
  if (ls->h->self_ref == LUA_NOREF) {
    lua_pushvalue(L, 1);
    ls->h->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  return 0;
}

static void push_summary(lua_State *L, chr_sched_t *s) {
  chr_sched_stats_t d = chr_sched_stop_stats(s);
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, (lua_Integer)d.returned);
  lua_setfield(L, -2, "returned");
  lua_pushinteger(L, (lua_Integer)d.killed);
  lua_setfield(L, -2, "killed");
  lua_pushinteger(L, (lua_Integer)(d.succeeded + d.failed));
  lua_setfield(L, -2, "finished");
  if (d.unwritten) { /* completions given up: their jobs run again once their leases expire */
    lua_pushinteger(L, (lua_Integer)d.unwritten);
    lua_setfield(L, -2, "unwritten");
  }
  if (chr_sched_state(s) != CHR_SCHED_STOPPED) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "stopping");
  }
}

static int stopper_finish(lua_State *L, chr_waiter_t *w) {
  stopper_t *st = (stopper_t *)w;
  chr_sched_t *s = st->h->s;
  free(st);
  push_summary(L, s);
  return 1;
}

static void stopper_release(chr_waiter_t *w) {
  free(w);
}

/* stop([grace_seconds]) -> summary. Waits until the scheduler has stopped
 * (joining a stop already under way). From one of the scheduler's own
 * handlers it cannot wait for itself: the stop begins and stop() returns
 * at once, with `stopping = true`; the scheduler stops when that handler
 * returns. */
static int l_stop(lua_State *L) {
  lsched_t *ls = check_lsched(L, 1);
  chr_sched_t *s = ls->s;
  double grace = luaL_optnumber(L, 2, chr_sched_opts(s)->shutdown_grace);
  if (chr_sched_state(s) == CHR_SCHED_STOPPED) {
    push_summary(L, s);
    return 1;
  }
  chr_sched_stop(s, grace);
  chr_task_t *self = chr_task_current(L);
  if (chr_sched_state(s) == CHR_SCHED_STOPPED || (self && chr_sched_find_run(s, self))) {
    push_summary(L, s);
    return 1;
  }
  stopper_t *st = chr_calloc(1, sizeof *st);
  st->h = ls->h;
  st->w.uninterruptible = 1; /* what a stop signal asks for is this very stop */
  st->w.finish = stopper_finish;
  st->w.release = stopper_release;
  st->next = ls->h->stoppers;
  ls->h->stoppers = st;
  return chr_wait(L, &st->w);
}

static int l_tick(lua_State *L) {
  chr_sched_tick(check_lsched(L, 1)->s);
  return 0;
}

static int l_handler(lua_State *L) {
  lsched_t *ls = check_lsched(L, 1);
  luaL_checkstring(L, 2);
  if (!lua_isfunction(L, 3) && !lua_istable(L, 3) && !lua_isnil(L, 3))
    return luaL_typeerror(L, 3, "function");
  lua_rawgeti(L, LUA_REGISTRYINDEX, ls->h->handlers_ref);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_rawset(L, -3);
  return 0;
}

static int l_handlers(lua_State *L) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, check_lsched(L, 1)->h->handlers_ref);
  return 1;
}

/* want_finish(bool): whether final outcomes call on_finish (the Lua API
 * turns it on while any callback exists, so runs without callbacks cost
 * no task). */
static int l_want_finish(lua_State *L) {
  check_lsched(L, 1)->h->finish_wanted = lua_toboolean(L, 2);
  return 0;
}

static int l_queue_status(lua_State *L) {
  chr_sched_t *s = check_lsched(L, 1)->s;
  const chr_sched_opts_t *o = chr_sched_opts(s);
  int queued = (int)chr_sched_queued(s), running = chr_sched_running(s);
  int used = queued + running;
  lua_createtable(L, 0, 7);
  lua_pushinteger(L, queued);
  lua_setfield(L, -2, "pending");
  lua_pushinteger(L, running);
  lua_setfield(L, -2, "in_flight");
  lua_pushinteger(L, o->max_queue_size);
  lua_setfield(L, -2, "max_queue_size");
  lua_pushinteger(L, o->max_workers);
  lua_setfield(L, -2, "max_workers");
  lua_pushinteger(L, used >= o->max_queue_size ? 0 : o->max_queue_size - used);
  lua_setfield(L, -2, "available_slots");
  lua_pushnumber(L, (double)used / o->max_queue_size);
  lua_setfield(L, -2, "utilization");
  lua_createtable(L, running, 0);
  lua_Integer i = 0;
  for (chr_run_t *r = chr_sched_first_run(s); r; r = chr_run_next(r)) {
    lua_pushstring(L, chr_run_job(r)->job_id);
    lua_rawseti(L, -2, ++i);
  }
  lua_setfield(L, -2, "in_flight_job_ids");
  if (o->nqueues) { /* queues = { name = { held, running, concurrency } } */
    lua_createtable(L, 0, (int)o->nqueues);
    for (size_t k = 0; k < o->nqueues; k++) {
      int held, run;
      chr_sched_queue_counts(s, k, &held, &run);
      lua_createtable(L, 0, 3);
      lua_pushinteger(L, held);
      lua_setfield(L, -2, "held");
      lua_pushinteger(L, run);
      lua_setfield(L, -2, "running");
      lua_pushinteger(L, (lua_Integer)o->queues[k].limit);
      lua_setfield(L, -2, "concurrency");
      lua_setfield(L, -2, o->queues[k].name);
    }
    lua_setfield(L, -2, "queues");
  }
  return 1;
}

static int l_state(lua_State *L) {
  static const char *const names[] = {"stopped", "running", "stopping"};
  lua_pushstring(L, names[chr_sched_state(check_lsched(L, 1)->s)]);
  return 1;
}

static int l_node_id(lua_State *L) {
  lua_pushstring(L, chr_sched_node_id(check_lsched(L, 1)->s));
  return 1;
}

static int l_store(lua_State *L) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, check_lsched(L, 1)->h->store_ref);
  return 1;
}

static int l_lock(lua_State *L) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, check_lsched(L, 1)->h->lock_ref);
  return 1;
}

static int l_now(lua_State *L) {
  lua_pushinteger(L, chr_sched_now(check_lsched(L, 1)->s));
  return 1;
}

static int l_stats(lua_State *L) {
  chr_sched_t *s = check_lsched(L, 1)->s;
  const chr_sched_stats_t *st = chr_sched_stats(s);
  lua_createtable(L, 0, 11);
#define STAT(n)                                   \
  lua_pushinteger(L, (lua_Integer)st->n);         \
  lua_setfield(L, -2, #n)
  STAT(claimed);
  STAT(succeeded);
  STAT(failed);
  STAT(retried);
  STAT(skipped);
  STAT(returned);
  STAT(killed);
  STAT(store_errors);
  STAT(expired);
#undef STAT
  /* What fails now, by request kind; empty when the store answers. */
  lua_createtable(L, 0, 0);
  for (int k = 0; k < CHR_SOP__COUNT; k++) {
    if (!chr_sched_failing(s, k)) continue;
    lua_pushstring(L, chr_sched_op_names[k]);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  }
  lua_setfield(L, -2, "failing");
  lua_pushnumber(L, (double)chr_sched_claim_backoff(s) / 1e6);
  lua_setfield(L, -2, "claim_backoff");
  lua_pushinteger(L, (lua_Integer)chr_sched_pending_completions(s));
  lua_setfield(L, -2, "pending_completions");
  return 1;
}

static int l_close(lua_State *L) {
  lsched_t *ls = luaL_checkudata(L, 1, SCHED_MT);
  if (ls->s) {
    chr_sched_t *s = ls->s;
    ls->s = NULL;
    ls->h = NULL;
    /* Stops it (which wakes every stop() waiting); the host's state goes
     * with the engine's, once the last run has ended. */
    chr_sched_close(s);
  }
  return 0;
}

static int l_tostring(lua_State *L) {
  lsched_t *ls = luaL_checkudata(L, 1, SCHED_MT);
  lua_pushfstring(L, "chronis.scheduler(%s)", ls->s ? chr_sched_node_id(ls->s) : "closed");
  return 1;
}

/* ---- job preparation ---- */

/* prepare_job(fields [, now]) -> a validated job table with defaults, a
 * job_id, created_at, status and its first next_run_time. A given
 * next_run_time is kept. Raises `invalid` naming the field. */
/* The job the table at idx describes, prepared for creation (see
 * chr_job_prepare); raises `invalid` naming the field. */
static chr_job_t *check_prepared(lua_State *L, int idx, int64_t now) {
  luaL_checktype(L, idx, LUA_TTABLE);
  char err[400];
  chr_job_t *j = chr_job_new();
  if (chr_job_from_lua(L, idx, j, 1, err, sizeof err) != 0 ||
      chr_job_prepare(j, now, err, sizeof err) != 0) {
    chr_job_free(j);
    chr_lua_error(L, CHR_EINVAL, "%s", err);
  }
  return j;
}

static int l_prepare_job(lua_State *L) {
  int64_t now = lua_isnoneornil(L, 2) ? chr_time_now() : chr_lua_checktime(L, 2, NULL, "now");
  chr_job_t *j = check_prepared(L, 1, now);
  chr_job_push(L, j); /* with next_run_time_local, derived */
  chr_job_free(j);
  return 1;
}

/* create(store, fields, now) -> the stored job: prepared and created
 * without a round trip through a Lua table in between. */
static int l_create(lua_State *L) {
  chr_store_t *s = chr_lua_checkstore(L, 1);
  int64_t now = chr_lua_checktime(L, 3, NULL, "now");
  return chr_lua_store_create(L, s, check_prepared(L, 2, now));
}

/* create_many(store, list, now) -> ids, failed: create for a batch, in
 * one store request (sched:create_jobs cuts the list into batches). */
static int l_create_many(lua_State *L) {
  chr_store_t *s = chr_lua_checkstore(L, 1);
  int64_t now = chr_lua_checktime(L, 3, NULL, "now");
  return chr_lua_store_create_many(L, s, 2, now);
}

/* next_run_time(job, after) -> the trigger's first time strictly after
 * `after` (ISO) or nil. */
static int l_next_run_time(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  int64_t after = chr_lua_checktime(L, 2, NULL, "after");
  char err[400];
  chr_job_t *j = chr_job_new();
  chr_trigger_t t;
  if (chr_job_from_lua(L, 1, j, 1, err, sizeof err) != 0 ||
      chr_trigger_compile(j, &t, err, sizeof err) != 0) {
    chr_job_free(j);
    return chr_lua_error(L, CHR_EINVAL, "%s", err);
  }
  chr_lua_pushtime(L, chr_trigger_next(&t, after));
  chr_trigger_free(&t);
  chr_job_free(j);
  return 1;
}

static int l_global_handlers(lua_State *L) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, "chronis.handlers") != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, "chronis.handlers");
  }
  return 1;
}

static int l_set_log(lua_State *L) {
  static const char *const keys[] = {"level", "format", NULL};
  luaL_checktype(L, 1, LUA_TTABLE);
  chr_lua_checkkeys(L, 1, "log option", keys, NULL, NULL);
  if (lua_getfield(L, 1, "level") == LUA_TSTRING) {
    int lvl = chr_log_parse_level(lua_tostring(L, -1));
    if (lvl < 0)
      return chr_lua_error(L, CHR_EINVAL, "invalid log level '%s' (debug, info, warn, error)",
                           lua_tostring(L, -1));
    chr_log_set_level(lvl);
  }
  if (lua_getfield(L, 1, "format") == LUA_TSTRING) {
    const char *f = lua_tostring(L, -1);
    if (strcmp(f, "json") != 0 && strcmp(f, "text") != 0)
      return chr_lua_error(L, CHR_EINVAL, "invalid log format '%s' (text or json)", f);
    chr_log_set_json(strcmp(f, "json") == 0);
  }
  return 0;
}

/* The fields of a chronis.log call, rendered: keys and values one after
 * the other in `text` (each NUL-terminated), and in `index` per field the
 * offsets of its key and value and whether the value is a JSON literal.
 * Everything is written straight into them, so that nothing is lost when
 * a value's __tostring raises: the caller frees both. */
typedef struct logfield {
  size_t key, value;
  int raw;
} logfield_t;

typedef struct logfields {
  chr_buf_t text, index;
} logfields_t;

/* render(fields, lf): each field as a string, or as a JSON literal when it
 * is a number, a boolean, chronis.json.null or a table JSON can hold
 * (another table as chr_lua_describe writes it). Runs under lua_pcall. */
static int render_fields(lua_State *L) {
  logfields_t *lf = lua_touserdata(L, 2);
  chr_buf_t *out = &lf->text;
  char err[128];
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    int kt = lua_type(L, -2);
    if (kt != LUA_TSTRING && kt != LUA_TNUMBER) { /* a key no log line can name */
      lua_pop(L, 1);
      continue;
    }
    logfield_t f = {out->len, 0, 0};
    if (kt == LUA_TSTRING) {
      size_t klen;
      const char *k = lua_tolstring(L, -2, &klen);
      chr_buf_add(out, k, klen);
    } else if (lua_isinteger(L, -2)) {
      chr_buf_printf(out, "%lld", (long long)lua_tointeger(L, -2));
    } else {
      chr_buf_printf(out, "%.14g", (double)lua_tonumber(L, -2));
    }
    chr_buf_addc(out, '\0');
    f.value = out->len;
    int t = lua_type(L, -1);
    if (t == LUA_TSTRING) {
      size_t vlen;
      const char *v = lua_tolstring(L, -1, &vlen);
      chr_buf_add(out, v, vlen);
    } else if (lua_isinteger(L, -1)) {
      chr_buf_printf(out, "%lld", (long long)lua_tointeger(L, -1));
      f.raw = 1;
    } else if (t == LUA_TNUMBER) {
      double d = lua_tonumber(L, -1);
      chr_buf_printf(out, "%.14g", d);
      f.raw = isfinite(d); /* JSON has no inf or nan: those stay text */
    } else if (t == LUA_TBOOLEAN) {
      chr_buf_adds(out, lua_toboolean(L, -1) ? "true" : "false");
      f.raw = 1;
    } else if (t == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == NULL) {
      chr_buf_adds(out, "null"); /* chronis.json.null */
      f.raw = 1;
    } else if (t == LUA_TTABLE && chr_json_encode(L, lua_gettop(L), out, err, sizeof err) == 0) {
      f.raw = 1;
    } else {
      out->p[out->len = f.value] = '\0'; /* what a failed encoding left */
      chr_lua_describe(L, -1, out);
    }
    chr_buf_addc(out, '\0');
    chr_buf_add(&lf->index, (const char *)&f, sizeof f);
    lua_pop(L, 1);
  }
  return 0;
}

static int field_cmp(const void *a, const void *b) {
  return strcmp(((const chr_log_field_t *)a)->key, ((const chr_log_field_t *)b)->key);
}

/* chronis.log(level, msg [, fields]): a line of the process log with every
 * field given, sorted by name (docs/api.md, "Logging"). */
static int l_log(lua_State *L) {
  int lvl = chr_log_parse_level(luaL_checkstring(L, 1));
  if (lvl < 0) return luaL_argerror(L, 1, "debug, info, warn or error");
  const char *msg = luaL_checkstring(L, 2);
  if (lvl < chr_log_get_level()) return 0;
  if (!lua_istable(L, 3)) {
    chr_log_fields(lvl, msg, NULL, 0);
    return 0;
  }
  logfields_t lf;
  chr_buf_init(&lf.text);
  chr_buf_init(&lf.index);
  chr_buf_reserve(&lf.text, 64);
  lua_pushcfunction(L, render_fields);
  lua_pushvalue(L, 3);
  lua_pushlightuserdata(L, &lf);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    chr_buf_free(&lf.text);
    chr_buf_free(&lf.index);
    return lua_error(L);
  }
  size_t n = lf.index.len / sizeof(logfield_t);
  chr_log_field_t *f = chr_malloc((n ? n : 1) * sizeof *f);
  for (size_t i = 0; i < n; i++) {
    logfield_t item;
    memcpy(&item, lf.index.p + i * sizeof item, sizeof item);
    f[i] = (chr_log_field_t){lf.text.p + item.key, lf.text.p + item.value, item.raw};
  }
  qsort(f, n, sizeof *f, field_cmp);
  chr_log_fields(lvl, msg, f, n);
  free(f);
  chr_buf_free(&lf.text);
  chr_buf_free(&lf.index);
  return 0;
}

/* A stop signal: every running scheduler begins its graceful stop, with
 * its own shutdown_grace; with `now` (a second signal), every scheduler
 * still stopping ends its grace period at once. */
void chr_lua_sched_interrupt(int now);
void chr_lua_sched_interrupt(int now) {
  static unsigned signals;
  unsigned seen = ++signals;
  /* A stop can end at once and wake code that closes (and so frees) other
   * schedulers: the list is read again from its head after each one. */
again:
  for (lhost_t *h = hosts; h; h = h->next_host) {
    if (h->interrupt_seen == seen) continue;
    h->interrupt_seen = seen;
    int st = chr_sched_state(h->s);
    if (st == CHR_SCHED_RUNNING || (now && st == CHR_SCHED_STOPPING)) {
      chr_sched_stop(h->s, now ? 0 : chr_sched_opts(h->s)->shutdown_grace);
      goto again;
    }
  }
}

static int l_stop_all(lua_State *L) {
  /* Stops every running scheduler gracefully (the host's signal path);
   * each stops on its own, and stop() on it waits for that. */
  lua_Integer n = 0;
  while (chr_sched_first_live()) {
    chr_sched_t *s = chr_sched_first_live();
    chr_sched_stop(s, chr_sched_opts(s)->shutdown_grace);
    n++;
  }
  lua_pushinteger(L, n);
  return 1;
}

/* current_run() -> {job_id=, node=, store=} of the run whose handler is
 * the calling task, or nil (outside a handler; in a task it spawned). */
static int l_current_run(lua_State *L) {
  chr_task_t *t = chr_task_current(L);
  /* A handler's task: started by hook_start_run, its data is the run,
   * which lives while the task does (also while its scheduler stops). */
  if (t == NULL || t->done_cb != task_done || t->finished || t->data == NULL) return 0;
  {
    chr_run_t *r = t->data;
    chr_sched_t *s = chr_run_sched(r);
    lhost_t *h = chr_sched_host(s);
    lua_createtable(L, 0, 3);
    lua_pushstring(L, chr_run_job(r)->job_id);
    lua_setfield(L, -2, "job_id");
    lua_pushstring(L, chr_sched_node_id(s));
    lua_setfield(L, -2, "node");
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->store_ref);
    lua_setfield(L, -2, "store");
    return 1;
  }
}

/* The run whose handler is the task running on L, or NULL. */
static chr_run_t *handler_run(lua_State *L) {
  chr_task_t *t = chr_task_current(L);
  if (t == NULL || t->done_cb != task_done || t->finished || t->killed || t->data == NULL)
    return NULL;
  return t->data;
}

static chr_run_t *check_handler_run(lua_State *L, const char *fn) {
  chr_run_t *r = handler_run(L);
  if (r == NULL)
    chr_lua_error(L, CHR_ESTATE, "chronis.%s: called outside a running handler (only the "
                  "handler's own code can end its run, not a task it spawned)", fn);
  return r;
}

/* chronis.snooze(seconds | time): the run ends, not as a failure, and the
 * job runs again `seconds` from now (the scheduler's clock) or at `time`
 * (ISO-8601). The handler is yielded out, so a pcall around the call
 * cannot keep it running (docs/handlers.md, "Ending a run early"). */
static int l_snooze(lua_State *L) {
  chr_run_t *r = check_handler_run(L, "snooze");
  int64_t when;
  if (lua_type(L, 1) == LUA_TNUMBER) {
    double sec = lua_tonumber(L, 1);
    if (!(sec >= 0 && sec <= 86400.0 * 366 * 100))
      return chr_lua_error(L, CHR_EINVAL, "chronis.snooze: seconds must be 0 or more, got %s",
                           lua_tostring(L, 1));
    when = chr_sched_now(chr_run_sched(r)) + (int64_t)(sec * 1e6);
  } else if (lua_type(L, 1) == LUA_TSTRING) {
    size_t n;
    const char *str = lua_tolstring(L, 1, &n);
    char err[200];
    if (chr_time_parse(str, n, NULL, &when, err, sizeof err) != 0)
      return chr_lua_error(L, CHR_EINVAL, "chronis.snooze: %s", err);
  } else {
    return chr_lua_error(L, CHR_EINVAL, "chronis.snooze: expected seconds (a number) or a time "
                         "(an ISO-8601 string), got %s", luaL_typename(L, 1));
  }
  chr_run_request(r, CHR_RUN_SNOOZED, 0, NULL, when);
  return chr_task_end(L, "chronis.snooze");
}

/* chronis.cancel([reason]): the run ends and so does the job: no further
 * run (deleted, or kept completed with keep_completed). */
static int l_cancel(lua_State *L) {
  chr_run_t *r = check_handler_run(L, "cancel");
  if (!lua_isnoneornil(L, 1) && lua_type(L, 1) != LUA_TSTRING)
    return chr_lua_error(L, CHR_EINVAL, "chronis.cancel: the reason must be a string, got %s",
                         luaL_typename(L, 1));
  chr_run_request(r, CHR_RUN_CANCELLED, 0, lua_tostring(L, 1), 0);
  return chr_task_end(L, "chronis.cancel");
}

/* chronis.fail(message [, {retry = false}]): the run fails with message;
 * with retry = false no retry is made. */
static int l_fail(lua_State *L) {
  static const char *const keys[] = {"retry", NULL};
  chr_run_t *r = check_handler_run(L, "fail");
  if (lua_type(L, 1) != LUA_TSTRING)
    return chr_lua_error(L, CHR_EINVAL, "chronis.fail: the message must be a string, got %s",
                         luaL_typename(L, 1));
  int retry = 1;
  if (!lua_isnoneornil(L, 2)) {
    if (!lua_istable(L, 2))
      return chr_lua_error(L, CHR_EINVAL, "chronis.fail: options must be a table such as "
                           "{retry = false}, got %s", luaL_typename(L, 2));
    chr_lua_checkkeys(L, 2, "chronis.fail option", keys, NULL, NULL);
    lua_getfield(L, 2, "retry");
    if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
      return chr_lua_error(L, CHR_EINVAL, "chronis.fail: option 'retry' must be a boolean, got %s",
                           luaL_typename(L, -1));
    retry = lua_isnil(L, -1) || lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  chr_run_request(r, retry ? CHR_RUN_ERROR : CHR_RUN_FAILED, CHR_EHANDLER, lua_tostring(L, 1), 0);
  return chr_task_end(L, "chronis.fail");
}

int luaopen_chronis_engine(lua_State *L) {
  static const luaL_Reg methods[] = {{"start", l_start},
                                     {"stop", l_stop},
                                     {"tick", l_tick},
                                     {"handler", l_handler},
                                     {"handlers", l_handlers},
                                     {"want_finish", l_want_finish},
                                     {"get_queue_status", l_queue_status},
                                     {"state", l_state},
                                     {"node_id", l_node_id},
                                     {"store", l_store},
                                     {"lock", l_lock},
                                     {"now", l_now},
                                     {"stats", l_stats},
                                     {"close", l_close},
                                     {NULL, NULL}};
  static const luaL_Reg meta[] = {
      {"__gc", l_close}, {"__close", l_close}, {"__tostring", l_tostring}, {NULL, NULL}};
  static const luaL_Reg fns[] = {{"new", l_new},
                                 {"prepare_job", l_prepare_job},
                                 {"create", l_create},
                                 {"create_many", l_create_many},
                                 {"next_run_time", l_next_run_time},
                                 {"global_handlers", l_global_handlers},
                                 {"set_log", l_set_log},
                                 {"log", l_log},
                                 {"current_run", l_current_run},
                                 {"snooze", l_snooze},
                                 {"cancel", l_cancel},
                                 {"fail", l_fail},
                                 {"stop_all", l_stop_all},
                                 {NULL, NULL}};
  chr_lua_classmeta(L, SCHED_MT, meta, methods);
  lua_pop(L, 1);
  /* Process-wide handlers (handler scripts register here). */
  l_global_handlers(L);
  lua_pop(L, 1);
  luaL_newlib(L, fns);
  return 1;
}
