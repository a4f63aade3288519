/* lutil.c - structured errors and time values at the Lua boundary. */
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/time.h"

/* Registry key of the metatable shared by every structured error. */
static char error_mt_key;

/* __tostring: "code: message". Tolerates a table whose fields a user has
 * overwritten, since it runs while an error is being reported. */
static int error_tostring(lua_State *L) {
  const char *code, *msg;
  lua_getfield(L, 1, "code");
  lua_getfield(L, 1, "message");
  code = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "error";
  msg = luaL_tolstring(L, -1, NULL);
  lua_pushfstring(L, "%s: %s", code, msg);
  return 1;
}

/* stack: +1 the metatable */
static void push_error_mt(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &error_mt_key) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_createtable(L, 0, 2);
  lua_pushcfunction(L, error_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "chronis.error");
  lua_setfield(L, -2, "__name");
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &error_mt_key);
}

void chr_lua_pusherror(lua_State *L, int code, const char *msg) {
  lua_createtable(L, 0, 2);
  lua_pushstring(L, chr_strerror(code));
  lua_setfield(L, -2, "code");
  lua_pushstring(L, msg ? msg : "");
  lua_setfield(L, -2, "message");
  push_error_mt(L);
  lua_setmetatable(L, -2);
}

/* Formats with the C library's printf (lua_pushfstring knows only a few
 * conversions). A long message goes into a Lua-owned userdata, so nothing
 * leaks when lua_error jumps away. */
int chr_lua_error(lua_State *L, int code, const char *fmt, ...) {
  char small[512];
  va_list ap;
  int n;
  va_start(ap, fmt);
  n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0) {
    chr_lua_pusherror(L, code, fmt);
  } else if ((size_t)n < sizeof small) {
    chr_lua_pusherror(L, code, small);
  } else {
    char *big = lua_newuserdatauv(L, (size_t)n + 1, 0);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    chr_lua_pusherror(L, code, big);
  }
  return lua_error(L);
}

int chr_lua_errvalue(lua_State *L, int idx, const char **msg) {
  int code = 0;
  idx = lua_absindex(L, idx);
  if (lua_istable(L, idx)) {
    lua_getfield(L, idx, "code");
    if (lua_type(L, -1) == LUA_TSTRING) code = chr_errcode(lua_tostring(L, -1));
    lua_pop(L, 1);
    lua_getfield(L, idx, "message");
    if (lua_type(L, -1) == LUA_TSTRING) {
      *msg = lua_tostring(L, -1);
      return code;
    }
    lua_pop(L, 1);
  }
  *msg = luaL_tolstring(L, idx, NULL);
  return code;
}

int chr_lua_cpcall(lua_State *L, lua_CFunction f, void *ud, char *err, size_t errlen) {
  if (!lua_checkstack(L, 2)) {
    snprintf(err, errlen, "Lua stack overflow");
    return LUA_ERRMEM;
  }
  lua_pushcfunction(L, f);
  lua_pushlightuserdata(L, ud);
  int rc = lua_pcall(L, 1, 0, 0);
  if (rc != LUA_OK) {
    if (err && errlen) {
      /* Only a string is read: converting another value could fail again. */
      if (lua_type(L, -1) == LUA_TSTRING) snprintf(err, errlen, "%s", lua_tostring(L, -1));
      else snprintf(err, errlen, "(a %s error value)", luaL_typename(L, -1));
    }
    lua_pop(L, 1);
  }
  return rc;
}

int64_t chr_lua_checktime(lua_State *L, int idx, const chr_tz_t *naive,
                          const char *what) {
  const char *pre = what ? what : "", *sep = what ? ": " : "";
  char err[256];
  int64_t us;
  size_t len;
  const char *s;
  switch (lua_type(L, idx)) {
  case LUA_TNUMBER: {
    int ok;
    lua_Integer v = lua_tointegerx(L, idx, &ok);
    if (!ok)
      chr_lua_error(L, CHR_EINVAL,
                    "%s%sinvalid time %s: expected integer microseconds", pre,
                    sep, lua_tostring(L, idx));
    return (int64_t)v;
  }
  case LUA_TSTRING:
    s = lua_tolstring(L, idx, &len);
    if (chr_time_parse(s, len, naive, &us, err, sizeof err) != 0)
      chr_lua_error(L, CHR_EINVAL, "%s%s%s", pre, sep, err);
    return us;
  default:
    return chr_lua_error(L, CHR_EINVAL,
                         "%s%sexpected a time (ISO-8601 string or integer "
                         "microseconds), got %s",
                         pre, sep, luaL_typename(L, idx));
  }
}

void chr_lua_pushtime(lua_State *L, int64_t us) {
  char buf[CHR_TIME_BUFSZ];
  if (us == CHR_TIME_NONE) {
    lua_pushnil(L);
    return;
  }
  lua_pushlstring(L, buf, (size_t)chr_time_format(us, buf));
}
