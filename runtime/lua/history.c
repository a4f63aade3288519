/* history.c - run records and run filters (core/history.h) to and from
 * Lua tables: what query_runs returns, what record_runs and stores written
 * in Lua take; and the run checks, filter, order and options that stores
 * written in Lua share with the C stores (chronis.adapter_kit). */
#include <lauxlib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/history.h"
#include "core/json.h"
#include "core/store.h"
#include "core/time.h"
#include "core/url.h"
#include "json.h"
#include "store.h"
#include "util.h"

static void set_str(lua_State *L, const char *k, const char *v) {
  if (v == NULL) return;
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

static void set_time(lua_State *L, const char *k, int64_t us) {
  if (us == CHR_TIME_NONE) return;
  chr_lua_pushtime(L, us);
  lua_setfield(L, -2, k);
}

void chr_runrec_push(lua_State *L, const chr_runrec_t *r) {
  char err[64];
  lua_createtable(L, 0, 14);
  set_str(L, "run_id", r->run_id);
  set_str(L, "job_id", r->job_id);
  set_str(L, "name", r->name);
  set_str(L, "func_name", r->func_name);
  set_str(L, "node", r->node);
  set_str(L, "outcome", r->outcome > 0 && r->outcome < CHR_OUT__COUNT
                            ? chr_outcome_names[r->outcome] : NULL);
  set_str(L, "error_code", r->error_code);
  set_str(L, "error_message", r->error_message);
  set_time(L, "scheduled_at", r->scheduled_at);
  set_time(L, "started_at", r->started_at);
  set_time(L, "ended_at", r->ended_at);
  if (r->started_at != CHR_TIME_NONE && r->ended_at != CHR_TIME_NONE) {
    lua_pushnumber(L, (double)(r->ended_at - r->started_at) / 1e6);
    lua_setfield(L, -2, "duration");
  }
  if (r->attempt > 0) {
    lua_pushinteger(L, r->attempt);
    lua_setfield(L, -2, "attempt");
  }
  if (r->metadata != NULL &&
      chr_json_decode(L, r->metadata, strlen(r->metadata), err, sizeof err) == 0)
    lua_setfield(L, -2, "metadata");
}

/* A string member, or NULL; raises when it is there but not a string. */
static const char *opt_string(lua_State *L, int t, const char *k, const char *what) {
  if (lua_getfield(L, t, k) == LUA_TNIL) return NULL;
  size_t n;
  char msg[80];
  if (lua_type(L, -1) != LUA_TSTRING)
    chr_lua_error(L, CHR_EINVAL, "%s: invalid field '%s': expected a string, got %s", what, k,
                  luaL_typename(L, -1));
  const char *s = lua_tolstring(L, -1, &n);
  const char *bad = chr_job_string_problem(s, n, msg, sizeof msg);
  if (bad) chr_lua_error(L, CHR_EINVAL, "%s: invalid field '%s': %s", what, k, bad);
  return s; /* anchored in the stack until the caller's settop */
}

static int64_t opt_time(lua_State *L, int t, const char *k, const char *what) {
  char msg[96];
  if (lua_getfield(L, t, k) == LUA_TNIL) {
    lua_pop(L, 1);
    return CHR_TIME_NONE;
  }
  snprintf(msg, sizeof msg, "%s: invalid field '%s'", what, k);
  int64_t us = chr_lua_checktime(L, -1, NULL, msg);
  lua_pop(L, 1);
  if (us < CHR_TIME_MIN || us > CHR_TIME_MAX)
    chr_lua_error(L, CHR_EINVAL, "%s: out of range (times are " CHR_TIME_RANGE ")", msg);
  return us;
}

chr_runrec_t *chr_lua_checkrun(lua_State *L, int idx, const char *what) {
  chr_runrec_t r;
  int top = lua_gettop(L);
  idx = lua_absindex(L, idx);
  if (!lua_istable(L, idx))
    chr_lua_error(L, CHR_EINVAL, "%s: a run must be a table, got %s", what, luaL_typename(L, idx));
  chr_runrec_init(&r);
  r.run_id = opt_string(L, idx, "run_id", what);
  r.job_id = opt_string(L, idx, "job_id", what);
  r.name = opt_string(L, idx, "name", what);
  r.func_name = opt_string(L, idx, "func_name", what);
  r.node = opt_string(L, idx, "node", what);
  r.error_code = opt_string(L, idx, "error_code", what);
  r.error_message = opt_string(L, idx, "error_message", what);
  const char *outcome = opt_string(L, idx, "outcome", what);
  if (r.run_id == NULL || r.run_id[0] == '\0')
    chr_lua_error(L, CHR_EINVAL, "%s: field 'run_id' is required (a non-empty string)", what);
  if (r.job_id == NULL || r.job_id[0] == '\0')
    chr_lua_error(L, CHR_EINVAL, "%s: run '%s': field 'job_id' is required (a non-empty string)",
                  what, r.run_id);
  r.outcome = outcome ? chr_enum_parse(chr_outcome_names, CHR_OUT__COUNT, outcome) : 0;
  if (r.outcome <= 0)
    chr_lua_error(L, CHR_EINVAL, "%s: run '%s': invalid field 'outcome': expected "
                  CHR_OUTCOME_LIST, what, r.run_id);
  r.scheduled_at = opt_time(L, idx, "scheduled_at", what);
  r.started_at = opt_time(L, idx, "started_at", what);
  r.ended_at = opt_time(L, idx, "ended_at", what);
  if (r.started_at == CHR_TIME_NONE)
    chr_lua_error(L, CHR_EINVAL, "%s: run '%s': field 'started_at' is required (a time)", what,
                  r.run_id);
  if (lua_getfield(L, idx, "attempt") != LUA_TNIL) {
    if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0 || lua_tointeger(L, -1) > INT32_MAX)
      chr_lua_error(L, CHR_EINVAL, "%s: run '%s': invalid field 'attempt': expected an integer "
                    ">= 0", what, r.run_id);
    r.attempt = (int32_t)lua_tointeger(L, -1);
  }
  if (lua_getfield(L, idx, "keep") != LUA_TNIL) {
    if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0 || lua_tointeger(L, -1) > INT32_MAX)
      chr_lua_error(L, CHR_EINVAL, "%s: run '%s': invalid field 'keep': expected an integer >= 0",
                    what, r.run_id);
    r.keep = (int32_t)lua_tointeger(L, -1);
  }
  /* Last: the text is the one allocation that a raise would leak. */
  chr_buf_t meta;
  chr_buf_init(&meta);
  if (lua_getfield(L, idx, "metadata") != LUA_TNIL) {
    char err[200];
    if (!lua_istable(L, -1) || chr_json_encode(L, lua_gettop(L), &meta, err, sizeof err) != 0 ||
        meta.p[0] != '{') {
      chr_buf_free(&meta);
      chr_lua_error(L, CHR_EINVAL, "%s: run '%s': invalid field 'metadata': expected a table "
                    "of JSON values", what, r.run_id);
    }
    if (strcmp(meta.p, "{}") != 0) r.metadata = meta.p;
  }
  chr_runrec_t *out = chr_runrec_copy(&r);
  chr_buf_free(&meta);
  lua_settop(L, top);
  return out;
}

#define RUN_FILTER_KEYS \
  "job_id, job_id_in, outcome, started_at_gte/lte, func_name, metadata.<key>"

static char **add_id(chr_run_filter_t *f, const char *id) {
  f->ids = chr_realloc(f->ids, (f->nids + 1) * sizeof *f->ids);
  f->ids[f->nids++] = chr_strdup(id);
  f->has_ids = 1;
  return f->ids;
}

static int outcome_bit(lua_State *L, int v) {
  int o = lua_type(L, v) == LUA_TSTRING
              ? chr_enum_parse(chr_outcome_names, CHR_OUT__COUNT, lua_tostring(L, v)) : 0;
  if (o <= 0)
    chr_lua_error(L, CHR_EINVAL, "invalid filter 'outcome': expected " CHR_OUTCOME_LIST);
  return o;
}

/* Reads the filter table (argument 2) into f (argument 1, a light
 * userdata); raises on a bad key, leaving in f what it had converted. */
static int parse_run_filter(lua_State *L) {
  chr_run_filter_t *f = lua_touserdata(L, 1);
  lua_pushnil(L);
  while (lua_next(L, 2)) {
    int v = lua_gettop(L);
    if (lua_type(L, -2) != LUA_TSTRING)
      chr_lua_error(L, CHR_EINVAL, "invalid run filter key of type %s (expected " RUN_FILTER_KEYS
                    ")", luaL_typename(L, -2));
    const char *k = lua_tostring(L, -2);
    if (strcmp(k, "job_id") == 0) {
      if (lua_type(L, v) != LUA_TSTRING)
        chr_lua_error(L, CHR_EINVAL, "invalid filter 'job_id': expected a string");
      add_id(f, lua_tostring(L, v));
    } else if (strcmp(k, "job_id_in") == 0) {
      if (!lua_istable(L, v))
        chr_lua_error(L, CHR_EINVAL, "invalid filter 'job_id_in': expected a list of job ids");
      f->has_ids = 1;
      for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, v); i++) {
        if (lua_rawgeti(L, v, i) != LUA_TSTRING)
          chr_lua_error(L, CHR_EINVAL, "invalid filter 'job_id_in': item %d is not a string",
                        (int)i);
        add_id(f, lua_tostring(L, -1));
        lua_pop(L, 1);
      }
    } else if (strcmp(k, "outcome") == 0) {
      if (lua_istable(L, v)) {
        for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, v); i++) {
          lua_rawgeti(L, v, i);
          f->outcome_mask |= 1u << outcome_bit(L, lua_gettop(L));
          lua_pop(L, 1);
        }
        if (f->outcome_mask == 0)
          chr_lua_error(L, CHR_EINVAL, "invalid filter 'outcome': an empty list");
      } else {
        f->outcome_mask |= 1u << outcome_bit(L, v);
      }
    } else if (strcmp(k, "started_at_gte") == 0 || strcmp(k, "started_at_lte") == 0) {
      char what[64];
      snprintf(what, sizeof what, "invalid filter '%s'", k);
      int64_t t = chr_lua_checktime(L, v, NULL, what);
      if (k[11] == 'g') f->started_gte = t;
      else f->started_lte = t;
    } else if (strcmp(k, "func_name") == 0) {
      if (lua_type(L, v) != LUA_TSTRING)
        chr_lua_error(L, CHR_EINVAL, "invalid filter 'func_name': expected a string");
      free(f->func_name);
      f->func_name = chr_strdup(lua_tostring(L, v));
    } else if (strncmp(k, "metadata.", 9) == 0 && k[9] != '\0') {
      char err[200];
      f->meta = chr_realloc(f->meta, (f->nmeta + 1) * sizeof *f->meta);
      if (chr_lua_meta_cond(L, v, k + 9, &f->meta[f->nmeta], err, sizeof err) != 0)
        chr_lua_error(L, CHR_EINVAL, "invalid filter '%s': %s", k, err);
      f->nmeta++;
    } else {
      chr_lua_error(L, CHR_EINVAL, "invalid run filter '%s': unknown key (expected "
                    RUN_FILTER_KEYS ")", k);
    }
    lua_settop(L, v - 1);
  }
  return 0;
}

void chr_lua_check_run_filter(lua_State *L, int idx, chr_run_filter_t *f) {
  chr_run_filter_init(f);
  if (lua_isnoneornil(L, idx)) return;
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) == LUA_TSTRING) { /* a job id */
    add_id(f, lua_tostring(L, idx));
    return;
  }
  if (!lua_istable(L, idx))
    chr_lua_error(L, CHR_EINVAL, "run filters must be a table or a job id, got %s",
                  luaL_typename(L, idx));
  lua_pushcfunction(L, parse_run_filter);
  lua_pushlightuserdata(L, f);
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    chr_run_filter_free(f);
    lua_error(L);
  }
}

/* stack: +1 the names of the outcomes in mask, in their order */
static void push_outcomes(lua_State *L, uint32_t mask) {
  lua_createtable(L, CHR_OUT__COUNT, 0);
  for (int o = 1, i = 0; o < CHR_OUT__COUNT; o++) {
    if (!(mask & (1u << o))) continue;
    lua_pushstring(L, chr_outcome_names[o]);
    lua_rawseti(L, -2, ++i);
  }
}

void chr_run_filter_push(lua_State *L, const chr_run_filter_t *f) {
  if (f == NULL) {
    lua_pushnil(L);
    return;
  }
  lua_createtable(L, 0, 4);
  if (f->has_ids) {
    lua_createtable(L, (int)f->nids, 0);
    for (size_t i = 0; i < f->nids; i++) {
      lua_pushstring(L, f->ids[i]);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "job_id_in");
  }
  if (f->outcome_mask) {
    push_outcomes(L, f->outcome_mask);
    lua_setfield(L, -2, "outcome");
  }
  set_time(L, "started_at_gte", f->started_gte);
  set_time(L, "started_at_lte", f->started_lte);
  set_str(L, "func_name", f->func_name);
  for (size_t i = 0; i < f->nmeta; i++) {
    chr_lua_push_meta_cond(L, &f->meta[i]);
    lua_rawset(L, -3);
  }
}

/* ---- run history for stores written in Lua ----
 *
 * chronis.adapter_kit gives stores written in Lua the run checks, the
 * run filter and the run order of the C stores by calling these (through
 * chronis.core.storage): one definition of each for every store. */

#define RUN_FILTER_MT "chronis.run_filter"

/* Pushes the table of r, which it frees, also when the push raises
 * (memory exhausted under the cap). */
static int push_run_protected(lua_State *L) {
  chr_runrec_push(L, lua_touserdata(L, 1));
  return 1;
}

static void push_owned_run(lua_State *L, chr_runrec_t *r) {
  lua_pushcfunction(L, push_run_protected);
  lua_pushlightuserdata(L, r);
  int rc = lua_pcall(L, 1, 1, 0);
  chr_runrec_free(r);
  if (rc != LUA_OK) lua_error(L);
}

/* check_run(run, where) -> the run as a store keeps it (its known fields
 * only, times canonical, duration derived), and its keep or nil; raises
 * `invalid` "<where>: ..." naming the field. */
static int l_check_run(lua_State *L) {
  const char *where = luaL_checkstring(L, 2);
  chr_runrec_t *r = chr_lua_checkrun(L, 1, where);
  int32_t keep = r->keep;
  push_owned_run(L, r);
  if (keep >= 0) lua_pushinteger(L, keep);
  else lua_pushnil(L);
  return 2;
}

typedef struct lrun_filter {
  chr_run_filter_t f;
} lrun_filter_t;

/* run_filter(filters) -> a compiled run filter (a table or a job id; nil
 * matches every run); raises as query_runs does. */
static int l_run_filter(lua_State *L) {
  lua_settop(L, 1);
  lrun_filter_t *u = lua_newuserdatauv(L, sizeof *u, 0);
  chr_run_filter_init(&u->f);
  luaL_setmetatable(L, RUN_FILTER_MT); /* collected, and freed, if a check raises */
  chr_lua_check_run_filter(L, 1, &u->f);
  return 1;
}

/* filter:match(run) -> whether the run passes every filter
 * (chr_run_filter_match). */
static int l_run_filter_match(lua_State *L) {
  lrun_filter_t *u = luaL_checkudata(L, 1, RUN_FILTER_MT);
  chr_runrec_t *r = chr_lua_checkrun(L, 2, "run filter");
  int ok = chr_run_filter_match(&u->f, r);
  chr_runrec_free(r);
  lua_pushboolean(L, ok);
  return 1;
}

/* filter:ids() -> the job ids of job_id / job_id_in, first occurrences in
 * order, or nil when the filter names no job: a store can look them up
 * rather than scan. */
static int l_run_filter_ids(lua_State *L) {
  lrun_filter_t *u = luaL_checkudata(L, 1, RUN_FILTER_MT);
  if (!u->f.has_ids) return 0;
  chr_lua_push_unique_ids(L, u->f.ids, u->f.nids);
  return 1;
}

/* filter:narrow() -> what a backend may narrow its reads by before
 * matching: {started_at_gte =, started_at_lte = (µs), outcomes = {...},
 * func_name =}, each absent when the filter has none. */
static int l_run_filter_narrow(lua_State *L) {
  lrun_filter_t *u = luaL_checkudata(L, 1, RUN_FILTER_MT);
  const chr_run_filter_t *f = &u->f;
  lua_createtable(L, 0, 4);
  if (f->started_gte != CHR_TIME_NONE) {
    lua_pushinteger(L, f->started_gte);
    lua_setfield(L, -2, "started_at_gte");
  }
  if (f->started_lte != CHR_TIME_NONE) {
    lua_pushinteger(L, f->started_lte);
    lua_setfield(L, -2, "started_at_lte");
  }
  if (f->outcome_mask) {
    push_outcomes(L, f->outcome_mask);
    lua_setfield(L, -2, "outcomes");
  }
  set_str(L, "func_name", f->func_name);
  return 1;
}

static int l_run_filter_gc(lua_State *L) {
  chr_run_filter_free(&((lrun_filter_t *)luaL_checkudata(L, 1, RUN_FILTER_MT))->f);
  return 0;
}

/* A sort key: the fields of the run order, and where the element was. */
typedef struct rkey {
  chr_runrec_t run;
  lua_Integer pos;
} rkey_t;

/* Reads the run_id and started_at of the run at idx into k (run_id is
 * the Lua string's, anchored by the caller). Returns 0, or CHR_EINVAL. */
static int read_run_key(lua_State *L, int idx, rkey_t *k, char *err, size_t errlen) {
  chr_runrec_init(&k->run);
  if (!lua_istable(L, idx)) return chr_errf(err, errlen, "a run must be a table");
  int t = lua_getfield(L, idx, "run_id");
  k->run.run_id = t == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  lua_pop(L, 1); /* the string stays: it is a field of the record */
  if (k->run.run_id == NULL) return chr_errf(err, errlen, "a run without run_id");
  t = lua_getfield(L, idx, "started_at");
  int rc = 0;
  if (t == LUA_TSTRING) {
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    rc = chr_time_parse(s, n, NULL, &k->run.started_at, err, errlen);
  } else if (lua_isinteger(L, -1)) {
    k->run.started_at = lua_tointeger(L, -1);
  } else {
    rc = chr_errf(err, errlen, "run '%s': started_at must be a time", k->run.run_id);
  }
  lua_pop(L, 1);
  return rc;
}

static int cmp_rkey(const void *a, const void *b) {
  const chr_runrec_t *x = &(*(const rkey_t *const *)a)->run;
  const chr_runrec_t *y = &(*(const rkey_t *const *)b)->run;
  return chr_runrec_cmp(&x, &y);
}

/* sort_runs(list [, rec_of]) -> list, sorted in place by chr_runrec_cmp
 * (newest first: started_at descending, then run_id descending); rec_of
 * (element) gives the run of an element when the list holds something
 * else. */
static int l_sort_runs(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  int rec_of = !lua_isnoneornil(L, 2);
  lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
  lua_settop(L, 2);
  /* Elements and their runs first: rec_of may raise, and nothing is held
   * in C yet. */
  lua_createtable(L, (int)n, 0); /* 3: elements */
  lua_createtable(L, (int)n, 0); /* 4: runs */
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, i);
    lua_pushvalue(L, -1);
    lua_rawseti(L, 3, i);
    if (rec_of) {
      lua_pushvalue(L, 2);
      lua_insert(L, -2);
      lua_call(L, 1, 1);
    }
    lua_rawseti(L, 4, i);
  }
  rkey_t *keys = chr_calloc(n ? (size_t)n : 1, sizeof *keys);
  rkey_t **order = chr_malloc((n ? (size_t)n : 1) * sizeof *order);
  for (lua_Integer i = 0; i < n; i++) {
    char err[200];
    keys[i].pos = i + 1;
    order[i] = &keys[i];
    lua_rawgeti(L, 4, i + 1);
    int rc = read_run_key(L, -1, &keys[i], err, sizeof err);
    lua_pop(L, 1);
    if (rc != 0) {
      free(keys);
      free(order);
      return chr_lua_error(L, CHR_EINVAL, "sort_runs: item %lld: %s", (long long)i + 1, err);
    }
  }
  qsort(order, (size_t)n, sizeof *order, cmp_rkey);
  for (lua_Integer i = 0; i < n; i++) {
    lua_rawgeti(L, 3, order[i]->pos);
    lua_rawseti(L, 1, i + 1);
  }
  free(keys);
  free(order);
  lua_settop(L, 1);
  return 1;
}

/* history_options(opts, what) -> keep, days: the store options `history`
 * and `history_days` of the table opts (strings, as from a URL, or
 * integers), with their defaults, read by chr_history_opt; raises
 * `invalid` naming the option ("invalid <what>: option 'history' ..."). */
static int l_history_options(lua_State *L) {
  static const char *const keys[] = {"history", "history_days"};
  const char *what = luaL_checkstring(L, 2);
  chr_history_opts_t h = {CHR_HISTORY_DEFAULT, CHR_HISTORY_DAYS_DEFAULT};
  if (!lua_isnil(L, 1)) luaL_checktype(L, 1, LUA_TTABLE);
  for (int i = 0; i < 2 && !lua_isnil(L, 1); i++) {
    char err[300];
    lua_getfield(L, 1, keys[i]);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      continue;
    }
    const char *val = luaL_tolstring(L, -1, NULL);
    chr_opts_t o = {.desc = (char *)what};
    if (chr_history_opt(&o, keys[i], val, &h, err, sizeof err) < 0)
      return chr_lua_error(L, CHR_EINVAL, "%s", err);
    lua_pop(L, 2);
  }
  lua_pushinteger(L, h.keep);
  lua_pushinteger(L, h.days);
  return 2;
}

void chr_lua_run_kit(lua_State *L) {
  static const luaL_Reg fns[] = {{"check_run", l_check_run},
                                 {"run_filter", l_run_filter},
                                 {"sort_runs", l_sort_runs},
                                 {"history_options", l_history_options},
                                 {NULL, NULL}};
  static const luaL_Reg methods[] = {{"match", l_run_filter_match},
                                     {"ids", l_run_filter_ids},
                                     {"narrow", l_run_filter_narrow},
                                     {NULL, NULL}};
  if (luaL_newmetatable(L, RUN_FILTER_MT)) {
    lua_pushcfunction(L, l_run_filter_gc);
    lua_setfield(L, -2, "__gc");
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, fns, 0);
  lua_pushliteral(L, CHR_HISTORY_OPTION_NAMES);
  lua_setfield(L, -2, "history_option_names");
}
