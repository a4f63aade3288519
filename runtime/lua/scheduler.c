/* lengine.c - the scheduler as a Lua object (chronis.core.engine): options,
 * start/stop/tick, handlers, queue status, and job preparation (validation,
 * defaults, first run time) for the Lua API in lua/chronis/init.lua. */
#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/engine.h"
#include "core/json.h"
#include "core/log.h"
#include "core/loop.h"
#include "store.h"
#include "util.h"
#include "core/time.h"
#include "core/trigger.h"
#include "core/tz.h"
#include "job.h"

#define SCHED_MT "chronis.scheduler"

typedef struct stopper stopper_t;

typedef struct lsched {
  chr_sched_t *s;
  int self_ref; /* anchors the object while it runs */
  stopper_t *stoppers; /* stop() calls waiting for the stop to end */
} lsched_t;

static void stopped_cb(chr_sched_t *s, void *data);

static lsched_t *check_lsched(lua_State *L, int idx) {
  lsched_t *ls = luaL_checkudata(L, idx, SCHED_MT);
  if (ls->s == NULL) luaL_error(L, "attempt to use a closed scheduler");
  return ls;
}

static double opt_number(lua_State *L, int t, const char *k, double def, double lo, double hi) {
  lua_getfield(L, t, k);
  double v = def;
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TNUMBER)
      chr_lua_error(L, CHR_EINVAL, "invalid option '%s': expected a number, got %s", k,
                    luaL_typename(L, -1));
    v = lua_tonumber(L, -1);
    if (!(v >= lo && v <= hi))
      chr_lua_error(L, CHR_EINVAL, "invalid option '%s': %g is out of range %g-%g", k, v, lo, hi);
  }
  lua_pop(L, 1);
  return v;
}

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

static const char *const known_opts[] = {
    "storage",        "lock",      "polling_interval", "max_workers", "max_queue_size",
    "lease_seconds",  "clock",     "on_success",       "on_failure",  "logger",
    "shutdown_grace", "node_id",   "default_timeout", NULL};

/* engine.new{storage=, lock=, polling_interval=, max_workers=, ...} */
static int l_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    lua_pop(L, 1);
    const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?";
    int i = 0;
    while (known_opts[i] && strcmp(known_opts[i], k) != 0) i++;
    if (!known_opts[i]) return chr_lua_error(L, CHR_EINVAL, "unknown scheduler option '%s'", k);
  }
  chr_sched_opts_t o;
  o.polling_interval = opt_number(L, 1, "polling_interval", 1, 0.1, 3600);
  o.max_workers = (int)opt_number(L, 1, "max_workers", 20, 1, 1e6);
  o.max_queue_size = (int)opt_number(L, 1, "max_queue_size", o.max_workers * 5.0, 1, 1e7);
  o.lease_seconds = opt_number(L, 1, "lease_seconds", 30, 0.01, 86400);
  o.shutdown_grace = opt_number(L, 1, "shutdown_grace", 30, 0, 86400);
  o.default_timeout = opt_number(L, 1, "default_timeout", 0, 0, 86400 * 365);
  lua_getfield(L, 1, "storage");
  chr_store_t *store = chr_lua_checkstore(L, -1);
  int store_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_getfield(L, 1, "lock");
  if (!lua_isnil(L, -1)) store->claim_lock = chr_lua_checklock(L, -1);
  lua_pop(L, 1);
  int lock_ref = opt_ref(L, 1, "lock", LUA_TUSERDATA);
  lsched_t *ls = lua_newuserdatauv(L, sizeof *ls, 0);
  ls->self_ref = LUA_NOREF;
  ls->s = NULL;
  ls->stoppers = NULL;
  luaL_setmetatable(L, SCHED_MT);
  chr_sched_t *s = chr_sched_new(L, store, &o);
  ls->s = s;
  chr_sched_set_stopped_cb(s, stopped_cb, ls);
  s->store_ref = store_ref;
  s->lock_ref = lock_ref;
  s->clock_ref = opt_ref(L, 1, "clock", LUA_TFUNCTION);
  s->on_success_ref = opt_ref(L, 1, "on_success", LUA_TFUNCTION);
  s->on_failure_ref = opt_ref(L, 1, "on_failure", LUA_TFUNCTION);
  s->logger_ref = opt_ref(L, 1, "logger", LUA_TFUNCTION);
  lua_getfield(L, 1, "node_id");
  if (lua_type(L, -1) == LUA_TSTRING) {
    const char *id = lua_tostring(L, -1);
    if (strlen(id) == 0 || strlen(id) >= sizeof s->node_id)
      return chr_lua_error(L, CHR_EINVAL, "invalid option 'node_id': 1 to %zu bytes",
                           sizeof s->node_id - 1);
    strcpy(s->node_id, id);
  }
  lua_pop(L, 1);
  lua_newtable(L);
  s->handlers_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  s->callbacks_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 1;
}

static int l_start(lua_State *L) {
  lsched_t *ls = check_lsched(L, 1);
  int rc = chr_sched_start(ls->s);
  if (rc != 0) return chr_lua_error(L, rc, "cannot start: the scheduler is stopping");
  if (ls->self_ref == LUA_NOREF) {
    lua_pushvalue(L, 1);
    ls->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  return 0;
}

/* ---- stop ---- */

struct stopper {
  chr_waiter_t w;
  chr_sched_t *s;
  stopper_t *next;
};

static void push_summary(lua_State *L, chr_sched_t *s) {
  const chr_sched_stats_t *now = &s->stats, *base = &s->stop_base;
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, (lua_Integer)(now->returned - base->returned));
  lua_setfield(L, -2, "returned");
  lua_pushinteger(L, (lua_Integer)(now->killed - base->killed));
  lua_setfield(L, -2, "killed");
  lua_pushinteger(L, (lua_Integer)(now->succeeded + now->failed - base->succeeded - base->failed));
  lua_setfield(L, -2, "finished");
  if (s->state != CHR_SCHED_STOPPED) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "stopping");
  }
}

static void unanchor(lua_State *L, lsched_t *ls) {
  if (ls->self_ref != LUA_NOREF) {
    luaL_unref(L, LUA_REGISTRYINDEX, ls->self_ref);
    ls->self_ref = LUA_NOREF;
  }
}

static int stopper_finish(lua_State *L, chr_waiter_t *w) {
  stopper_t *st = (stopper_t *)w;
  chr_sched_t *s = st->s;
  free(st);
  push_summary(L, s);
  return 1;
}

static void stopper_release(chr_waiter_t *w) {
  free(w);
}

/* The engine has stopped: every stop() waiting returns. */
static void stopped_cb(chr_sched_t *s, void *data) {
  lsched_t *ls = data;
  (void)s;
  unanchor(chr_task_main(), ls);
  while (ls->stoppers) {
    stopper_t *st = ls->stoppers;
    ls->stoppers = st->next;
    chr_waiter_done(&st->w);
  }
}

/* stop([grace_seconds]) -> summary. Waits until the scheduler has stopped
 * (joining a stop already under way). From one of the scheduler's own
 * handlers it cannot wait for itself: the stop begins and stop() returns
 * at once, with `stopping = true`; the scheduler stops when that handler
 * returns. */
static int l_stop(lua_State *L) {
  lsched_t *ls = check_lsched(L, 1);
  chr_sched_t *s = ls->s;
  double grace = luaL_optnumber(L, 2, s->opts.shutdown_grace);
  if (s->state == CHR_SCHED_STOPPED) {
    push_summary(L, s);
    return 1;
  }
  chr_sched_stop(s, grace);
  chr_task_t *self = chr_task_current(L);
  if (s->state == CHR_SCHED_STOPPED || (self && chr_sched_runs_task(s, self))) {
    push_summary(L, s);
    return 1;
  }
  stopper_t *st = chr_calloc(1, sizeof *st);
  st->s = s;
  st->w.finish = stopper_finish;
  st->w.release = stopper_release;
  st->next = ls->stoppers;
  ls->stoppers = st;
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
  lua_rawgeti(L, LUA_REGISTRYINDEX, ls->s->handlers_ref);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_rawset(L, -3);
  return 0;
}

static int l_handlers(lua_State *L) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, check_lsched(L, 1)->s->handlers_ref);
  return 1;
}

/* set_callbacks(job_id, on_success, on_failure) */
static int l_set_callbacks(lua_State *L) {
  lsched_t *ls = check_lsched(L, 1);
  luaL_checkstring(L, 2);
  lua_rawgeti(L, LUA_REGISTRYINDEX, ls->s->callbacks_ref);
  lua_pushvalue(L, 2);
  int had = lua_rawget(L, -2) != LUA_TNIL;
  lua_pop(L, 1);
  lua_pushvalue(L, 2);
  int has = !(lua_isnil(L, 3) && lua_isnil(L, 4));
  ls->s->njob_callbacks += has - had;
  if (!has) {
    lua_pushnil(L);
  } else {
    lua_createtable(L, 0, 2);
    lua_pushvalue(L, 3);
    lua_setfield(L, -2, "on_success");
    lua_pushvalue(L, 4);
    lua_setfield(L, -2, "on_failure");
  }
  lua_rawset(L, -3);
  return 0;
}

static int l_queue_status(lua_State *L) {
  chr_sched_t *s = check_lsched(L, 1)->s;
  int used = (int)s->nheap + s->nrunning;
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, (lua_Integer)s->nheap);
  lua_setfield(L, -2, "pending");
  lua_pushinteger(L, s->nrunning);
  lua_setfield(L, -2, "in_flight");
  lua_pushinteger(L, s->opts.max_queue_size);
  lua_setfield(L, -2, "max_queue_size");
  lua_pushinteger(L, s->opts.max_workers);
  lua_setfield(L, -2, "max_workers");
  lua_pushinteger(L, used >= s->opts.max_queue_size ? 0 : s->opts.max_queue_size - used);
  lua_setfield(L, -2, "available_slots");
  lua_pushnumber(L, (double)used / s->opts.max_queue_size);
  lua_setfield(L, -2, "utilization");
  chr_sched_push_running_ids(L, s);
  lua_setfield(L, -2, "in_flight_job_ids");
  return 1;
}

static int l_state(lua_State *L) {
  static const char *const names[] = {"stopped", "running", "stopping"};
  lua_pushstring(L, names[check_lsched(L, 1)->s->state]);
  return 1;
}

static int l_node_id(lua_State *L) {
  lua_pushstring(L, check_lsched(L, 1)->s->node_id);
  return 1;
}

static int l_store(lua_State *L) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, check_lsched(L, 1)->s->store_ref);
  return 1;
}

static int l_lock(lua_State *L) {
  chr_sched_t *s = check_lsched(L, 1)->s;
  if (s->lock_ref == LUA_NOREF) lua_pushnil(L);
  else lua_rawgeti(L, LUA_REGISTRYINDEX, s->lock_ref);
  return 1;
}

static int l_now(lua_State *L) {
  lua_pushinteger(L, chr_sched_now(check_lsched(L, 1)->s));
  return 1;
}

static int l_stats(lua_State *L) {
  chr_sched_t *s = check_lsched(L, 1)->s;
  lua_createtable(L, 0, 7);
#define STAT(n)                                   \
  lua_pushinteger(L, (lua_Integer)s->stats.n);    \
  lua_setfield(L, -2, #n)
  STAT(claimed);
  STAT(succeeded);
  STAT(failed);
  STAT(retried);
  STAT(skipped);
  STAT(returned);
  STAT(killed);
  STAT(store_errors);
#undef STAT
  /* What fails now, by request kind; empty when the store answers. */
  lua_createtable(L, 0, 0);
  for (int k = 0; k < CHR_SOP__COUNT; k++) {
    if (!chr_sched_failing(s, k)) continue;
    lua_pushstring(L, chr_sched_op_names[k]);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  }
  lua_setfield(L, -2, "failing");
  int64_t wait = s->claim_after - chr_time_mono();
  lua_pushnumber(L, s->claim_after && wait > 0 ? (double)wait / 1e6 : 0);
  lua_setfield(L, -2, "claim_backoff");
  lua_pushinteger(L, (lua_Integer)s->npend);
  lua_setfield(L, -2, "pending_completions");
  return 1;
}

static int l_close(lua_State *L) {
  lsched_t *ls = luaL_checkudata(L, 1, SCHED_MT);
  if (ls->s) {
    chr_sched_t *s = ls->s;
    ls->s = NULL;
    chr_sched_close(s); /* stops it, which wakes every stop() waiting */
  }
  unanchor(L, ls);
  return 0;
}

static int l_tostring(lua_State *L) {
  lsched_t *ls = luaL_checkudata(L, 1, SCHED_MT);
  lua_pushfstring(L, "chronis.scheduler(%s)", ls->s ? ls->s->node_id : "closed");
  return 1;
}

/* ---- job preparation ---- */

/* prepare_job(fields [, now]) -> a validated job table with defaults, a
 * job_id, created_at, status and its first next_run_time. A given
 * next_run_time is kept. Raises `invalid` naming the field. */
static int l_prepare_job(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  int64_t now = lua_isnoneornil(L, 2) ? chr_time_now() : chr_lua_checktime(L, 2, NULL, "now");
  char err[400];
  chr_job_t *j = chr_job_new();
  if (chr_job_from_lua(L, 1, j, 1, err, sizeof err) != 0) {
    chr_job_free(j);
    return chr_lua_error(L, CHR_EINVAL, "%s", err);
  }
  if (!chr_job_has(j, CHR_F_JOB_ID) && chr_job_has(j, CHR_F_FUNC_NAME) && j->func_name[0]) {
    char *id = chr_job_make_id(j->func_name, now);
    chr_job_set_str(j, CHR_F_JOB_ID, id);
    free(id);
  }
  chr_trigger_t t;
  if (chr_job_validate(j, err, sizeof err) != 0 || chr_trigger_compile(j, &t, err, sizeof err) != 0) {
    chr_job_free(j);
    return chr_lua_error(L, CHR_EINVAL, "%s", err);
  }
  if (!chr_job_has(j, CHR_F_NEXT_RUN_TIME))
    chr_job_set_time(j, CHR_F_NEXT_RUN_TIME, chr_trigger_first(&t, now));
  if (!chr_job_has(j, CHR_F_STATUS))
    chr_job_set_int(j, CHR_F_STATUS,
                    chr_job_has(j, CHR_F_NEXT_RUN_TIME) ? CHR_ST_SCHEDULED : CHR_ST_PENDING);
  if (!chr_job_has(j, CHR_F_CREATED_AT)) chr_job_set_time(j, CHR_F_CREATED_AT, now);
  chr_job_push(L, j); /* with next_run_time_local, derived */
  chr_trigger_free(&t);
  chr_job_free(j);
  return 1;
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
  luaL_checktype(L, 1, LUA_TTABLE);
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

static int l_log(lua_State *L) {
  int lvl = chr_log_parse_level(luaL_checkstring(L, 1));
  if (lvl < 0) return luaL_argerror(L, 1, "debug, info, warn or error");
  const char *job_id = NULL;
  if (lua_istable(L, 3) && lua_getfield(L, 3, "job_id") == LUA_TSTRING) job_id = lua_tostring(L, -1);
  chr_log_write(lvl, job_id, luaL_checkstring(L, 2));
  return 0;
}

static int l_stop_all(lua_State *L) {
  /* Stops every running scheduler gracefully (the host's signal path);
   * each stops on its own, and stop() on it waits for that. */
  lua_Integer n = 0;
  while (chr_sched_first_live()) {
    chr_sched_t *s = chr_sched_first_live();
    chr_sched_stop(s, s->opts.shutdown_grace);
    n++;
  }
  lua_pushinteger(L, n);
  return 1;
}

int luaopen_chronis_engine(lua_State *L) {
  static const luaL_Reg methods[] = {{"start", l_start},
                                     {"stop", l_stop},
                                     {"tick", l_tick},
                                     {"handler", l_handler},
                                     {"handlers", l_handlers},
                                     {"set_callbacks", l_set_callbacks},
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
                                 {"next_run_time", l_next_run_time},
                                 {"global_handlers", l_global_handlers},
                                 {"set_log", l_set_log},
                                 {"log", l_log},
                                 {"stop_all", l_stop_all},
                                 {NULL, NULL}};
  if (luaL_newmetatable(L, SCHED_MT)) {
    luaL_setfuncs(L, meta, 0);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_newlib(L, fns);
  return 1;
}
