/* metrics.c - the metrics registry in Lua (chronis.core.metrics): the
 * exposition text of a list of schedulers, and the counts that Lua code
 * keeps (script reloads). lua/chronis/metrics.lua adds what needs the
 * store (jobs per status) and serves /metrics. */
#include <lauxlib.h>
#include <stdlib.h>

#include "core/engine.h"
#include "core/metrics.h"
#include "util.h"

/* render(items, memory_bytes) -> text. items: {{engine =, scheduler =
 * label, jobs = {status = count} or nil}, ...}; closed schedulers are
 * left out. stack: +1 */
static int l_render(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer memory = luaL_optinteger(L, 2, -1);
  size_t n = (size_t)lua_rawlen(L, 1), nv = 0;
  chr_metrics_view_t *v = chr_calloc(n ? n : 1, sizeof *v);
  for (size_t i = 0; i < n; i++) {
    lua_rawgeti(L, 1, (lua_Integer)i + 1);
    if (!lua_istable(L, -1)) {
      free(v);
      return luaL_error(L, "metrics.render: item %d is not a table", (int)i + 1);
    }
    lua_getfield(L, -1, "engine");
    chr_sched_t *s = chr_lua_tosched(L, -1);
    lua_pop(L, 1);
    if (s == NULL) {
      lua_pop(L, 1);
      continue;
    }
    chr_metrics_view_t *e = &v[nv++];
    /* The label strings stay referenced by the items table (argument 1)
     * until the text is made. */
    lua_getfield(L, -1, "scheduler");
    e->scheduler = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : chr_sched_node_id(s);
    lua_pop(L, 1);
    e->store = chr_sched_store(s)->vt->kind;
    e->m = chr_sched_metrics(s);
    e->running = chr_sched_running(s);
    e->queued = (int64_t)chr_sched_queued(s);
    lua_getfield(L, -1, "jobs");
    for (int st = 0; st < CHR_ST__COUNT; st++) {
      e->jobs[st] = -1;
      if (st == CHR_ST_NONE || !lua_istable(L, -1)) continue;
      lua_getfield(L, -1, chr_status_names[st]);
      if (lua_isinteger(L, -1)) e->jobs[st] = (int64_t)lua_tointeger(L, -1);
      lua_pop(L, 1);
    }
    lua_pop(L, 2);
  }
  chr_buf_t b;
  chr_buf_init(&b);
  chr_metrics_render(&b, v, nv, memory);
  free(v);
  lua_pushlstring(L, b.p, b.len);
  chr_buf_free(&b);
  return 1;
}

/* script_reload(ok): a handler or adapter script was reloaded, or failed
 * to (lua/chronis/scripts.lua). */
static int l_script_reload(lua_State *L) {
  if (lua_toboolean(L, 1)) chr_metrics_process.script_reloads++;
  else chr_metrics_process.script_reload_failures++;
  return 0;
}

int luaopen_chronis_metrics(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"render", l_render}, {"script_reload", l_script_reload}, {NULL, NULL}};
  chr_metrics_init(); /* the process start, as near to it as the core sees */
  luaL_newlib(L, fns);
  return 1;
}
