/* lua_store.c - a store implemented by a Lua table (chronis.storage.lua,
 * lua:path URLs). Each request calls the table's method in a task of its
 * own, so the method may wait (HTTP, sleep, other stores); its results are
 * checked and converted, its errors attributed to the adapter and method,
 * and a call that does not return within adapter_timeout fails with
 * `timeout`. Closing the store stops the calls still pending and answers
 * each `unavailable`. Optional methods the table lacks are emulated by the
 * generic store layer (store_fallback.c). Script adapters are hot-reloaded:
 * calls that start after a reload use the new instance. */
#include <lauxlib.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge.h"
#include "core/json.h"
#include "core/loop.h"
#include "lua/store.h"
#include "lua/util.h"
#include "core/store.h"
#include "lua/task.h"
#include "core/time.h"
#include "lua/job.h"

#define HANDLE_MT "chronis.lua_store_handle"

typedef struct lua_store {
  chr_store_t base;
  chr_bridge_t br; /* the adapter instance, its calls */
  int handle_ref;  /* the reload handle, when loaded from a script */
} lua_store_t;

typedef struct handle {
  lua_store_t *ls;
} handle_t;

typedef chr_bridge_call_t lcall_t;

static lua_store_t *store_of(chr_bridge_t *b) {
  return (lua_store_t *)((char *)b - offsetof(lua_store_t, br));
}

static void free_keys(char **keys);

static void free_store(lua_store_t *ls) {
  free_keys(ls->base.filter_keys);
  luaL_unref(ls->br.L, LUA_REGISTRYINDEX, ls->handle_ref);
  chr_bridge_free(&ls->br);
  free(ls);
}

/* Checks an adapter table (stack: idx) against the contract's table of
 * operations (chr_store_ops) and returns its capabilities: those of the
 * optional methods it has. Raises naming the required methods it lacks. */
static unsigned adapter_caps(lua_State *L, int idx, const char *name) {
  unsigned caps = 0;
  chr_buf_t missing;
  chr_buf_init(&missing);
  if (!lua_istable(L, idx))
    chr_lua_error(L, CHR_EINVAL, "lua adapter '%s': expected a table of methods, got %s", name,
                  luaL_typename(L, idx));
  for (int op = 0; op < CHR_OP__COUNT; op++) {
    const chr_store_op_desc_t *d = &chr_store_ops[op];
    lua_getfield(L, idx, d->name);
    if (lua_isfunction(L, -1)) caps |= d->cap;
    else if (d->required) chr_buf_printf(&missing, "%s%s", missing.len ? ", " : "", d->name);
    lua_pop(L, 1);
  }
  if (missing.len) {
    lua_pushstring(L, missing.p);
    chr_buf_free(&missing);
    chr_lua_error(L, CHR_EINVAL, "lua adapter '%s' lacks required method(s): %s", name,
                  lua_tostring(L, -1));
  }
  lua_getfield(L, idx, "is_local");
  if (lua_toboolean(L, -1)) caps |= CHR_STORE_CAP_LOCAL;
  lua_pop(L, 1);
  /* It applies the `filters` of claim_due_jobs, recover_expired_leases
   * and next_due_time: else scoped calls are emulated over query_jobs. */
  lua_getfield(L, idx, "scoped_claims");
  if (lua_toboolean(L, -1)) caps |= CHR_STORE_CAP_SCOPE;
  lua_pop(L, 1);
  return caps;
}

static void free_keys(char **keys) {
  for (size_t i = 0; keys && keys[i]; i++) free(keys[i]);
  free(keys);
}

/* The adapter's `filter_keys`: a list of the filter keys it interprets
 * itself (NULL-terminated, NULL for none). Raises `invalid` for one that
 * is not a string or that the contract already defines. */
static char **adapter_filter_keys(lua_State *L, int idx, const char *name) {
  static const char *const builtin[] = {"status", "trigger_type", "next_run_time_lte",
                                        "next_run_time_gte", "updated_at_lte",
                                        "updated_at_gte", "job_id_in", NULL};
  if (lua_getfield(L, idx, "filter_keys") == LUA_TNIL) {
    lua_pop(L, 1);
    return NULL;
  }
  if (!lua_istable(L, -1))
    chr_lua_error(L, CHR_EINVAL, "lua adapter '%s': 'filter_keys' must be a list of strings",
                  name);
  size_t n = lua_rawlen(L, -1);
  for (size_t i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, (lua_Integer)i);
    const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    int taken = k == NULL || *k == '\0' || strncmp(k, "metadata.", 9) == 0;
    for (int b = 0; k && !taken && builtin[b]; b++) taken = strcmp(k, builtin[b]) == 0;
    if (taken)
      chr_lua_error(L, CHR_EINVAL, "lua adapter '%s': filter_keys[%zu] must be a non-empty "
                    "string that is not a filter key of the contract", name, i);
    lua_pop(L, 1);
  }
  char **keys = chr_calloc(n + 1, sizeof *keys);
  for (size_t i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, (lua_Integer)i);
    keys[i - 1] = chr_strdup(lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return keys;
}

/* ---- results ---- */

static int bad_type(lcall_t *c, const char *want, lua_State *co, int idx) {
  chr_store_req_fail(c->req, CHR_EINVAL, "lua adapter '%s': %s returned %s, expected %s",
                     c->b->name, c->method, luaL_typename(co, idx), want);
  return -1;
}

static int take_job(lcall_t *c, lua_State *co, int idx) {
  char err[300];
  chr_job_t *j = chr_job_new();
  if (chr_job_from_lua(co, idx, j, 0, err, sizeof err) != 0) {
    chr_job_free(j);
    chr_store_req_fail(c->req, CHR_EINVAL, "lua adapter '%s': %s returned a bad job: %s",
                       c->b->name, c->method, err);
    return -1;
  }
  chr_store_req_push_job(c->req, j);
  return 0;
}

static int take_jobs(lcall_t *c, lua_State *co, int idx) {
  if (!lua_istable(co, idx)) return bad_type(c, "an array of jobs", co, idx);
  lua_Integer n = (lua_Integer)lua_rawlen(co, idx);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(co, idx, i);
    int rc = lua_istable(co, -1) ? take_job(c, co, lua_gettop(co))
                                 : bad_type(c, "an array of jobs", co, lua_gettop(co));
    lua_pop(co, 1);
    if (rc) return rc;
  }
  return 0;
}

static int check_run(lua_State *L) {
  lua_pushlightuserdata(L, chr_lua_checkrun(L, 1, "run"));
  return 1;
}

/* The runs of query_runs, in the order given (the method sorts them). */
static int take_runs(lcall_t *c, lua_State *co, int idx) {
  if (!lua_istable(co, idx)) return bad_type(c, "an array of runs", co, idx);
  lua_Integer n = (lua_Integer)lua_rawlen(co, idx);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_pushcfunction(co, check_run);
    lua_rawgeti(co, idx, i);
    if (lua_pcall(co, 1, 1, 0) != LUA_OK) {
      const char *msg = "?";
      chr_lua_errvalue(co, -1, &msg);
      chr_store_req_fail(c->req, CHR_EINVAL, "lua adapter '%s': %s returned a bad run: %s",
                         c->b->name, c->method, msg);
      lua_pop(co, 2);
      return -1;
    }
    chr_store_req_push_run(c->req, lua_touserdata(co, -1));
    lua_pop(co, 1);
  }
  return 0;
}

/* The result of one item of create_jobs or complete_jobs (top of co):
 * {ok = true} or true is 0; else the code `code` names, or `fallback`. */
static int item_result(lua_State *co, int fallback) {
  int result = fallback;
  if (lua_istable(co, -1)) {
    lua_getfield(co, -1, "ok");
    lua_getfield(co, -2, "code");
    if (lua_toboolean(co, -2)) result = 0;
    else if (lua_type(co, -1) == LUA_TSTRING && chr_errcode(lua_tostring(co, -1)))
      result = chr_errcode(lua_tostring(co, -1));
    lua_pop(co, 2);
  } else if (lua_isboolean(co, -1) && lua_toboolean(co, -1)) {
    result = 0;
  }
  return result;
}

/* Converts the method's results (stack of co, from 1). */
static void take_results(lcall_t *c, lua_State *co) {
  chr_store_req_t *req = c->req;
  lua_settop(co, 2);
  switch (req->op) {
  case CHR_OP_CREATE:
  case CHR_OP_UPDATE:
    if (!lua_istable(co, 1)) bad_type(c, "the stored job", co, 1);
    else take_job(c, co, 1);
    break;
  case CHR_OP_GET:
    if (lua_istable(co, 1)) take_job(c, co, 1);
    else if (!lua_isnil(co, 1)) bad_type(c, "a job or nil", co, 1);
    break;
  case CHR_OP_GET_BATCH:
    if (!lua_istable(co, 1)) {
      bad_type(c, "a table of jobs by id", co, 1);
      break;
    }
    lua_pushnil(co);
    while (lua_next(co, 1)) {
      int rc = lua_istable(co, -1) ? take_job(c, co, lua_gettop(co))
                                   : bad_type(c, "a table of jobs by id", co, lua_gettop(co));
      lua_pop(co, 1);
      if (rc) {
        lua_pop(co, 1);
        break;
      }
    }
    break;
  case CHR_OP_CAS:
    if (!lua_isboolean(co, 1)) {
      bad_type(c, "a boolean", co, 1);
      break;
    }
    req->ok = lua_toboolean(co, 1);
    if (req->ok && lua_istable(co, 2)) take_job(c, co, 2);
    break;
  case CHR_OP_DELETE:
    if (!lua_isboolean(co, 1)) bad_type(c, "a boolean", co, 1);
    else req->ok = lua_toboolean(co, 1);
    break;
  case CHR_OP_QUERY:
  case CHR_OP_CLAIM: take_jobs(c, co, 1); break;
  case CHR_OP_QUERY_RUNS: take_runs(c, co, 1); break;
  case CHR_OP_COUNT:
  case CHR_OP_RECOVER:
  case CHR_OP_RECORD_RUNS:
  case CHR_OP_EXTEND:
    if (!lua_isinteger(co, 1)) bad_type(c, "an integer", co, 1);
    else req->count = lua_tointeger(co, 1);
    break;
  case CHR_OP_NEXT_DUE: {
    char err[200];
    req->count = CHR_TIME_NONE;
    if (lua_isinteger(co, 1)) {
      req->count = lua_tointeger(co, 1);
    } else if (lua_type(co, 1) == LUA_TSTRING) {
      size_t n;
      const char *s = lua_tolstring(co, 1, &n);
      if (chr_time_parse(s, n, NULL, &req->count, err, sizeof err) != 0)
        chr_store_req_fail(req, CHR_EINVAL, "lua adapter '%s': next_due_time: %s", c->b->name, err);
    } else if (!lua_isnil(co, 1)) {
      bad_type(c, "a time or nil", co, 1);
    }
    break;
  }
  case CHR_OP_CREATE_MANY:
    /* An item without a code that is not ok is a duplicate. */
    if (!lua_istable(co, 1)) {
      bad_type(c, "an array of results", co, 1);
      break;
    }
    for (size_t i = 0; i < req->ncreates; i++) {
      lua_rawgeti(co, 1, (lua_Integer)i + 1);
      int result = item_result(co, CHR_EDUP);
      req->creates[i].result = result;
      if (result == 0) req->count++;
      lua_pop(co, 1);
    }
    break;
  case CHR_OP_COMPLETE:
    if (!lua_istable(co, 1)) {
      bad_type(c, "an array of results", co, 1);
      break;
    }
    for (size_t i = 0; i < req->nitems; i++) {
      lua_rawgeti(co, 1, (lua_Integer)i + 1);
      int result = item_result(co, CHR_ECONFLICT);
      req->items[i].result = result;
      lua_pop(co, 1);
    }
    break;
  default: break;
  }
}

/* ---- calls ---- */

/* A script cannot tell the engines that a write made a job due sooner than
 * they expect; the binding does it for every script from the answer, as the
 * C adapters do in their write paths. A completion's updates and a
 * recovery's count name no tenant: those wake with a time only. */
static void wake_after(lua_store_t *ls, chr_store_req_t *req) {
  int64_t when = CHR_TIME_NONE;
  if (req->status != 0 || ls->base.closed) return;
  switch (req->op) {
  case CHR_OP_CREATE:
  case CHR_OP_UPDATE:
  case CHR_OP_CAS:
    /* The stored job, whole: a scoped engine ignores another tenant's. */
    for (size_t i = 0; i < req->njobs; i++) chr_store_wake_job(&ls->base, req->jobs[i]);
    return;
  case CHR_OP_CREATE_MANY:
    /* One hint for the batch, without a job: a scoped engine takes it as
     * a time only (at worst one claim that finds nothing of its own). */
    for (size_t i = 0; i < req->ncreates; i++)
      if (req->creates[i].result == 0)
        when = chr_time_earlier(when, chr_job_wake_time(req->creates[i].job));
    break;
  case CHR_OP_COMPLETE:
    for (size_t i = 0; i < req->nitems; i++)
      if (req->items[i].result == 0 && !req->items[i].remove)
        when = chr_time_earlier(when, chr_job_wake_time(req->items[i].updates));
    break;
  case CHR_OP_RECOVER:
    if (req->count > 0) when = req->now != CHR_TIME_NONE ? req->now : chr_time_now();
    break;
  default: break;
  }
  if (when != CHR_TIME_NONE) chr_store_wake(&ls->base, when);
}


static void call_done(lcall_t *c, lua_State *co, int status) {
  lua_store_t *ls = store_of(c->b);
  chr_store_req_t *req = c->req;
  if (status == LUA_OK) {
    take_results(c, co);
  } else {
    char msg[1024];
    int code = chr_bridge_failure(c, co, status, msg, sizeof msg);
    chr_store_req_fail(req, code, "%s", msg);
  }
  wake_after(ls, req);
  if (chr_bridge_end(c)) free_store(ls);
  req->cb(req);
}

static void push_time(lua_State *L, int64_t us) {
  char buf[CHR_TIME_BUFSZ];
  chr_time_format(us, buf);
  lua_pushstring(L, buf);
}

static void push_ids(lua_State *L, const chr_store_req_t *req) {
  lua_createtable(L, (int)req->nids, 0);
  for (size_t i = 0; i < req->nids; i++) {
    lua_pushstring(L, req->ids[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
}

/* stack: +1 the options of claim_due_jobs and extend_leases: owner, now,
 * lease_seconds. */
static void push_lease_options(lua_State *L, const chr_store_req_t *req) {
  lua_createtable(L, 0, 4);
  lua_pushstring(L, req->owner);
  lua_setfield(L, -2, "owner");
  push_time(L, req->now);
  lua_setfield(L, -2, "now");
  lua_pushnumber(L, (double)req->lease_us / 1e6);
  lua_setfield(L, -2, "lease_seconds");
}

/* stack: +1 the run as a store written in Lua receives it: with `keep`
 * when the job says how many of its runs to keep. */
static void push_run(lua_State *L, const chr_runrec_t *r) {
  chr_runrec_push(L, r);
  if (r->keep >= 0) {
    lua_pushinteger(L, r->keep);
    lua_setfield(L, -2, "keep");
  }
}

/* Pushes the method's arguments; returns their count. */
static int push_args(lua_State *L, chr_store_req_t *req) {
  switch (req->op) {
  case CHR_OP_CREATE: chr_job_push(L, req->job); return 1;
  case CHR_OP_CREATE_MANY:
    lua_createtable(L, (int)req->ncreates, 0);
    for (size_t i = 0; i < req->ncreates; i++) {
      chr_job_push(L, req->creates[i].job);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
  case CHR_OP_GET:
  case CHR_OP_DELETE: lua_pushstring(L, req->id); return 1;
  case CHR_OP_UPDATE:
    lua_pushstring(L, req->id);
    chr_job_push(L, req->job);
    return 2;
  case CHR_OP_CAS:
    lua_pushstring(L, req->id);
    chr_job_push(L, req->expected);
    chr_job_push(L, req->job);
    return 3;
  case CHR_OP_GET_BATCH: push_ids(L, req); return 1;
  case CHR_OP_QUERY:
    chr_filter_push(L, req->filter);
    if (req->limit >= 0) lua_pushinteger(L, req->limit);
    else lua_pushnil(L);
    lua_pushinteger(L, req->offset);
    return 3;
  case CHR_OP_COUNT: chr_filter_push(L, req->filter); return 1;
  case CHR_OP_CLAIM:
    push_lease_options(L, req);
    lua_pushinteger(L, req->limit >= 0 ? req->limit : LUA_MAXINTEGER); /* < 0: none */
    lua_setfield(L, -2, "limit");
    if (req->filter) {
      chr_filter_push(L, req->filter);
      lua_setfield(L, -2, "filters");
    }
    return 1;
  case CHR_OP_COMPLETE:
    lua_createtable(L, (int)req->nitems, 0);
    for (size_t i = 0; i < req->nitems; i++) {
      chr_completion_t *c = &req->items[i];
      lua_createtable(L, 0, 3);
      lua_pushstring(L, c->job_id);
      lua_setfield(L, -2, "job_id");
      lua_pushstring(L, c->owner);
      lua_setfield(L, -2, "owner");
      if (c->remove) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "delete");
      } else if (c->updates) {
        chr_job_push(L, c->updates);
        lua_setfield(L, -2, "updates");
      }
      if (c->run) {
        push_run(L, c->run);
        lua_setfield(L, -2, "run");
      }
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
  case CHR_OP_RECOVER:
    push_time(L, req->now);
    chr_filter_push(L, req->filter);
    return 2;
  case CHR_OP_NEXT_DUE: chr_filter_push(L, req->filter); return 1;
  case CHR_OP_RECORD_RUNS:
    lua_createtable(L, (int)req->nruns, 0);
    for (size_t i = 0; i < req->nruns; i++) {
      push_run(L, req->runs[i]);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
  case CHR_OP_QUERY_RUNS:
    chr_run_filter_push(L, req->run_filter);
    if (req->limit >= 0) lua_pushinteger(L, req->limit);
    else lua_pushnil(L);
    lua_pushinteger(L, req->offset);
    return 3;
  case CHR_OP_EXTEND:
    push_lease_options(L, req);
    push_ids(L, req);
    lua_setfield(L, -2, "ids");
    return 1;
  default: return 0;
  }
}

static int ls_submit(chr_store_t *s, chr_store_req_t *req) {
  lua_store_t *ls = (lua_store_t *)s;
  const char *method = chr_store_ops[req->op].name;
  int rc = chr_bridge_method(&ls->br, method);
  if (rc != 0) return rc;
  int nargs = 1 + push_args(ls->br.L, req);
  chr_bridge_call(&ls->br, method, req, nargs, 0, call_done);
  return 0;
}

static void ls_close(chr_store_t *s) {
  lua_store_t *ls = (lua_store_t *)s;
  lua_State *L = ls->br.L;
  /* Pending calls are stopped first and answered `unavailable`, each once
   * (store.h). One that is executing right now (it closed its own store)
   * ends at its next instruction; the store is freed after its answer. */
  chr_bridge_cancel(&ls->br);
  lua_rawgeti(L, LUA_REGISTRYINDEX, ls->handle_ref);
  if (lua_isuserdata(L, -1)) {
    ((handle_t *)lua_touserdata(L, -1))->ls = NULL;
    /* The script's file watcher ends with the store. */
    int top = lua_gettop(L);
    if (lua_getiuservalue(L, -1, 1) != LUA_TNIL && lua_getfield(L, -1, "close") == LUA_TFUNCTION) {
      lua_insert(L, -2); /* stack: handle close watcher */
      if (lua_pcall(L, 1, 0, 0) != LUA_OK) lua_pop(L, 1);
    }
    lua_settop(L, top);
  }
  lua_pop(L, 1);
  /* The adapter's own close(), when it has one, runs once, unwaited. */
  lua_rawgeti(L, LUA_REGISTRYINDEX, ls->br.adapter_ref);
  if (lua_getfield(L, -1, chr_store_ops[CHR_STORE_CLOSE].name) == LUA_TFUNCTION) {
    lua_insert(L, -2);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) lua_pop(L, 1);
  } else {
    lua_pop(L, 2);
  }
  if (ls->br.pending == 0) free_store(ls);
}

static const chr_store_vtable_t lua_store_vt = {"lua", ls_submit, ls_close};

/* from_table(adapter, {name=, timeout=, reloadable=}) -> store [, handle] */
static int l_from_table(lua_State *L) {
  const char *name = "lua";
  double timeout = 30;
  int reloadable = 0;
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "name");
    if (lua_isstring(L, -1)) name = lua_tostring(L, -1);
    lua_getfield(L, 2, "timeout");
    if (lua_isnumber(L, -1)) timeout = lua_tonumber(L, -1);
    lua_getfield(L, 2, "reloadable");
    reloadable = lua_toboolean(L, -1);
    lua_pop(L, 3);
  }
  unsigned caps = adapter_caps(L, 1, name);
  char **keys = adapter_filter_keys(L, 1, name);
  lua_store_t *ls = chr_calloc(1, sizeof *ls);
  chr_store_init(&ls->base, &lua_store_vt, caps);
  ls->base.filter_keys = keys;
  chr_bridge_init(&ls->br, L, 1, name, "lua adapter", "store", timeout);
  ls->handle_ref = LUA_NOREF;
  chr_lua_pushstore(L, &ls->base);
  if (!reloadable) return 1;
  handle_t *h = lua_newuserdatauv(L, sizeof *h, 1);
  h->ls = ls;
  luaL_setmetatable(L, HANDLE_MT);
  lua_pushvalue(L, -1);
  ls->handle_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 2;
}

/* swap(handle, new_adapter): calls that start from now on use it. */
static int l_swap(lua_State *L) {
  handle_t *h = chr_lua_checkudata(L, 1, HANDLE_MT);
  if (h->ls == NULL) {
    lua_pushboolean(L, 0);
    return 1;
  }
  unsigned caps = adapter_caps(L, 2, h->ls->br.name);
  char **keys = adapter_filter_keys(L, 2, h->ls->br.name);
  h->ls->base.caps = caps;
  free_keys(h->ls->base.filter_keys);
  h->ls->base.filter_keys = keys;
  lua_pushvalue(L, 2);
  lua_rawseti(L, LUA_REGISTRYINDEX, h->ls->br.adapter_ref);
  lua_pushboolean(L, 1);
  return 1;
}

/* Opens a store written in Lua from its options (lua:SCRIPT?k=v or
 * file:PATH): the Lua side loads the script (fixed_path, or the option
 * `script`) and calls its constructor with the other options. */
static int open_lua_opts(const chr_opts_t *o, chr_store_t **out, char *err, size_t errlen,
                         const char *fixed_path) {
  lua_State *L = chr_task_main();
  if (L == NULL) {
    snprintf(err, errlen, "lua adapters need the chronis Lua module loaded");
    return CHR_EINVAL;
  }
  int top = lua_gettop(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "chronis.scripts");
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    snprintf(err, errlen, "%s", lua_tostring(L, -1));
    lua_settop(L, top);
    return CHR_EINVAL;
  }
  lua_getfield(L, -1, "open_adapter_options");
  const char *script = fixed_path;
  lua_createtable(L, 0, (int)o->n);
  for (size_t i = 0; i < o->n; i++) {
    if (fixed_path == NULL && strcmp(o->v[i].key, "script") == 0) {
      script = o->v[i].val;
      continue;
    }
    lua_pushstring(L, o->v[i].val);
    lua_setfield(L, -2, o->v[i].key);
  }
  if (script == NULL || *script == '\0') {
    chr_opts_fail(o, err, errlen, "no script path (lua:SCRIPT?option=value, or script= in "
                  "options)");
    lua_settop(L, top);
    return CHR_EINVAL;
  }
  lua_pushstring(L, script);
  lua_insert(L, -2);
  if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
    const char *m = lua_tostring(L, -1);
    if (m == NULL && lua_istable(L, -1)) {
      lua_getfield(L, -1, "message");
      m = lua_tostring(L, -1);
    }
    snprintf(err, errlen, "%s", m ? m : "cannot open the lua adapter");
    lua_settop(L, top);
    return CHR_EINVAL;
  }
  chr_store_t *s = chr_lua_takestore(L, -1);
  lua_settop(L, top);
  *out = s;
  return 0;
}

int chr_lua_store_open(const chr_opts_t *o, chr_store_t **out, char *err, size_t errlen) {
  return open_lua_opts(o, out, err, errlen, NULL);
}

/* file:PATH is the JSON file store, adapters/file.lua (PATH: its option
 * `path`). */
int chr_file_store_open(const chr_opts_t *o, chr_store_t **out, char *err, size_t errlen) {
  return open_lua_opts(o, out, err, errlen, "adapters/file.lua");
}

/* set_watcher(handle, watcher): closed together with the store. */
static int l_set_watcher(lua_State *L) {
  chr_lua_checkudata(L, 1, HANDLE_MT);
  lua_settop(L, 2);
  lua_setiuservalue(L, 1, 1);
  return 0;
}

int luaopen_chronis_lua_store(lua_State *L);
int luaopen_chronis_lua_store(lua_State *L) {
  static const luaL_Reg fns[] = {{"from_table", l_from_table},
                                 {"swap", l_swap},
                                 {"set_watcher", l_set_watcher},
                                 {NULL, NULL}};
  luaL_newmetatable(L, HANDLE_MT);
  lua_pop(L, 1);
  luaL_newlib(L, fns);
  return 1;
}
