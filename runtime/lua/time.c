/* time.c - the chronis.time and chronis.tz Lua modules: ISO-8601 times
 * as integer µs, and IANA zone lookups, over time.c and tz.c. */
#include <stdio.h>
#include <string.h>

#include "util.h"
#include "core/time.h"
#include "core/tz.h"

/* A zone name argument; raises `invalid timezone '<name>'`. */
static const chr_tz_t *check_zone(lua_State *L, int idx) {
  char err[128];
  size_t len;
  const char *name = chr_lua_checklstring(L, idx, &len);
  const chr_tz_t *z = NULL;
  if (strlen(name) == len) z = chr_tz_get(name, err, sizeof err);
  else snprintf(err, sizeof err, "invalid timezone '%.64s'", name);
  if (z == NULL) chr_lua_error(L, CHR_EINVAL, "%s", err);
  return z;
}

/* A wall-clock time argument for to_utc/resolve: a naive ISO string, or an
 * integer counting the wall time's µs as if it were UTC. A string with an
 * offset already names an instant, so it is refused rather than guessed. */
static int64_t check_local(lua_State *L, int idx) {
  char err[256];
  int64_t wall;
  int32_t offset;
  size_t len;
  const char *s;
  if (lua_type(L, idx) == LUA_TNUMBER) return chr_lua_checkinteger(L, idx);
  s = chr_lua_checklstring(L, idx, &len);
  if (chr_time_parse_wall(s, len, &wall, &offset, err, sizeof err) != 0)
    chr_lua_error(L, CHR_EINVAL, "%s", err);
  if (offset != CHR_TIME_NOOFFSET)
    chr_lua_error(L, CHR_EINVAL,
                  "invalid time '%.64s': expected a local time without "
                  "offset",
                  s);
  return wall;
}

/* time.parse(s [, zone]) -> µs; naive strings are read in zone (UTC). */
static int time_parse(lua_State *L) {
  char err[256];
  size_t len;
  const char *s = chr_lua_checklstring(L, 1, &len);
  const chr_tz_t *z = lua_isnoneornil(L, 2) ? NULL : check_zone(L, 2);
  int64_t us;
  if (chr_time_parse(s, len, z, &us, err, sizeof err) != 0)
    return chr_lua_error(L, CHR_EINVAL, "%s", err);
  lua_pushinteger(L, us);
  return 1;
}

static int time_format(lua_State *L) {
  char buf[CHR_TIME_BUFSZ];
  int64_t us = chr_lua_checkinteger(L, 1);
  lua_pushlstring(L, buf, (size_t)chr_time_format(us, buf));
  return 1;
}

static int time_now(lua_State *L) {
  lua_pushinteger(L, chr_time_now());
  return 1;
}

static const luaL_Reg time_funcs[] = {
    {"parse", time_parse},
    {"format", time_format},
    {"now", time_now},
    {NULL, NULL},
};

int luaopen_chronis_time(lua_State *L) {
  luaL_newlib(L, time_funcs);
  return 1;
}

/* tz.info(zone, t) -> {offset = s, abbr = "EDT", dst = true}. t is µs or an
 * ISO string (naive strings read in the zone itself). */
static int tz_info(lua_State *L) {
  const chr_tz_t *z = check_zone(L, 1);
  int64_t us = chr_lua_checktime(L, 2, z, NULL);
  chr_tz_info_t info;
  chr_tz_info(z, us, &info);
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, info.offset);
  lua_setfield(L, -2, "offset");
  lua_pushstring(L, info.abbr);
  lua_setfield(L, -2, "abbr");
  lua_pushboolean(L, info.dst);
  lua_setfield(L, -2, "dst");
  return 1;
}

/* tz.to_utc(local, zone) -> µs: gap shifted forward, fold first pass. */
static int tz_to_utc(lua_State *L) {
  const chr_tz_t *z = check_zone(L, 2);
  lua_pushinteger(L, chr_tz_to_utc(z, check_local(L, 1)));
  return 1;
}

/* tz.format_local(t, zone) -> "2025-03-09T03:30:00-04:00" */
static int tz_format_local(lua_State *L) {
  char buf[CHR_TIME_BUFSZ];
  const chr_tz_t *z = check_zone(L, 2);
  int64_t us = chr_lua_checktime(L, 1, z, NULL);
  int n = chr_time_format_offset(us, chr_tz_offset(z, us), buf);
  lua_pushlstring(L, buf, (size_t)n);
  return 1;
}

/* tz.resolve(local, zone) -> {instants...}, with gap = true in a gap (the
 * one instant is then the wall time shifted forward by the gap). */
static int tz_resolve(lua_State *L) {
  const chr_tz_t *z = check_zone(L, 2);
  int64_t out[2];
  int n = chr_tz_resolve(z, check_local(L, 1), out);
  lua_createtable(L, n ? n : 1, n ? 0 : 1);
  for (int i = 0; i < (n ? n : 1); i++) {
    lua_pushinteger(L, out[i]);
    lua_rawseti(L, -2, i + 1);
  }
  if (n == 0) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "gap");
  }
  return 1;
}

/* tz.next_transition(zone, t) -> µs of the next offset change, or nil. */
static int tz_next_transition(lua_State *L) {
  const chr_tz_t *z = check_zone(L, 1);
  int64_t next = chr_tz_next_transition(z, chr_lua_checktime(L, 2, z, NULL));
  if (next == CHR_TIME_NONE) lua_pushnil(L);
  else lua_pushinteger(L, next);
  return 1;
}

static const luaL_Reg tz_funcs[] = {
    {"info", tz_info},
    {"to_utc", tz_to_utc},
    {"format_local", tz_format_local},
    {"resolve", tz_resolve},
    {"next_transition", tz_next_transition},
    {NULL, NULL},
};

int luaopen_chronis_tz(lua_State *L) {
  luaL_newlib(L, tz_funcs);
  return 1;
}
