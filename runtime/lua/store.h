/* store.h - storage and lock adapters as Lua objects (chronis.storage,
 * chronis.lock): the contract methods of docs/adapters.md, waiting by the rule
 * of task.h, with structured errors; filters to and from Lua tables. */
#ifndef CHR_LUA_STORE_H
#define CHR_LUA_STORE_H

#include <lua.h>

#include "core/lock.h"
#include "core/store.h"

/* stack: +1 store object owning s */
void chr_lua_pushstore(lua_State *L, chr_store_t *s);
chr_store_t *chr_lua_checkstore(lua_State *L, int idx);
/* Detaches the store from its Lua object (which becomes closed) and
 * returns it: the caller owns it now. */
chr_store_t *chr_lua_takestore(lua_State *L, int idx);
/* stack: +1 lock object owning l */
void chr_lua_pushlock(lua_State *L, chr_lock_t *l);
chr_lock_t *chr_lua_checklock(lua_State *L, int idx);

/* Reads a filter table (nil = none); raises an `invalid` error naming an
 * unknown key or a bad value. */
void chr_lua_checkfilter(lua_State *L, int idx, chr_filter_t *f);
/* The same, also accepting the keys of own (NULL-terminated; NULL for
 * none): a store's own filter keys. */
void chr_lua_checkfilter_own(lua_State *L, int idx, chr_filter_t *f, char *const *own);
/* A metadata condition (docs/api.md, Filters) for path (after
 * "metadata.") from the value at v: a value (equal), chronis.json.null
 * (absent), or {["$eq" | "$ne" | "$in" | "$exists"] = ...}. Returns 0, or
 * CHR_EINVAL with err (m untouched); never raises. */
int chr_lua_meta_cond(lua_State *L, int v, const char *path, chr_meta_filter_t *m, char *err,
                      size_t errlen);
/* stack: +2 a metadata condition's key and value, as chr_lua_meta_cond
 * reads them. */
void chr_lua_push_meta_cond(lua_State *L, const chr_meta_filter_t *m);
/* Creates job (taken over) in s and returns the stored job to Lua, waiting
 * by the rule of task.h: a lua_CFunction's tail. */
int chr_lua_store_create(lua_State *L, chr_store_t *s, chr_job_t *job);
/* Prepares each job description of the array at idx (chr_job_prepare at
 * `now`; raises `invalid` naming the item) and creates them in one
 * create_jobs request; returns to Lua (ids, failed): the job ids in the
 * array's order, then nil or {[i] = error} for the records not created
 * (duplicates). A lua_CFunction's tail, as chr_lua_store_create. */
int chr_lua_store_create_many(lua_State *L, chr_store_t *s, int idx, int64_t now);
/* stack: +1 the filter as the table a Lua adapter receives (nil for NULL) */
void chr_filter_push(lua_State *L, const chr_filter_t *f);

/* stack: +1 an array of ids[0..n), each once, in first-occurrence order
 * (the ids() of job and run filter objects). */
void chr_lua_push_unique_ids(lua_State *L, char *const *ids, size_t n);

/* Run records and run filters (runtime/lua/history.c). */
/* stack: +1 the run as a table (times ISO, duration in seconds) */
void chr_runrec_push(lua_State *L, const chr_runrec_t *r);
/* A run from the table at idx (chr_runrec_free); raises `invalid`
 * naming the field, prefixed by what. */
chr_runrec_t *chr_lua_checkrun(lua_State *L, int idx, const char *what);
/* A run filter from a table or a job id (nil = none); raises `invalid`
 * naming the key, with f freed. */
void chr_lua_check_run_filter(lua_State *L, int idx, chr_run_filter_t *f);
/* stack: +1 the filter as a store written in Lua receives it */
void chr_run_filter_push(lua_State *L, const chr_run_filter_t *f);
/* Adds to the module table at -1 the history functions of stores written
 * in Lua: check_run, run_filter, sort_runs, history_options and
 * history_option_names (chronis.adapter_kit calls them). */
void chr_lua_run_kit(lua_State *L);

/* The options of open(url_or_options [, options]) and of kind(...) (the
 * arguments at 1 and 2) into o, which the caller frees: a URL (for kind,
 * also without its scheme: schemes[0] is put first), a table of options
 * (its `scheme` one of schemes; required for open, schemes NULL), or nil
 * for kind; then a table at 2 adds options. Every value a string, a
 * number or a boolean; an option given twice, in the URL or the tables,
 * raises `invalid` naming it. lock: a lock's options. */
void chr_lua_checkopts(lua_State *L, const char *const *schemes, int lock, chr_opts_t *o);

/* stack: +1 module tables */
int luaopen_chronis_storage(lua_State *L);
int luaopen_chronis_lock(lua_State *L);

#endif
