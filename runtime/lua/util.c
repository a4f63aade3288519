/* util.c - structured errors, unknown keys and time values at the Lua
 * boundary. */
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/suggest.h"
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

/* Pushes the key under which table t (an absolute index) holds the value
 * on top, "prefix" + key; returns 0 (nothing pushed) when it does not. */
static int key_of(lua_State *L, int t, const char *prefix) {
  int f = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, t)) {
    if (lua_rawequal(L, -1, f) && lua_type(L, -2) == LUA_TSTRING) {
      lua_pushfstring(L, "%s%s", prefix, lua_tostring(L, -2));
      lua_replace(L, f + 1);
      lua_settop(L, f + 1);
      return 1;
    }
    lua_pop(L, 1);
  }
  return 0;
}

/* The name of the running C function, for an argument error: the call's
 * own when Lua knows it, else the method of argument 1's type or the
 * field of a chronis.core table that holds it (called through pcall, a
 * function has no name). *method: argument 1 is self. stack: +1 */
static const char *func_name(lua_State *L, int *method) {
  lua_Debug ar;
  *method = 0;
  if (!lua_getstack(L, 0, &ar)) {
    lua_pushliteral(L, "?");
    return lua_tostring(L, -1);
  }
  lua_getinfo(L, "nf", &ar); /* +1: the function */
  int f = lua_gettop(L);
  if (ar.name != NULL) {
    *method = ar.namewhat != NULL && strcmp(ar.namewhat, "method") == 0;
    lua_pushstring(L, ar.name);
  } else if (lua_type(L, 1) == LUA_TUSERDATA &&
             luaL_getmetafield(L, 1, "__index") != LUA_TNIL) { /* self, a chronis object */
    lua_pushvalue(L, f);
    if (lua_istable(L, -2) && key_of(L, lua_gettop(L) - 1, "")) *method = 1;
    else lua_pushliteral(L, "?");
  } else {
    lua_pushliteral(L, "?");
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    if (lua_getfield(L, -1, "chronis.core") == LUA_TTABLE) {
      int core = lua_gettop(L);
      lua_pushnil(L);
      while (lua_next(L, core)) {
        if (lua_istable(L, -1) && lua_type(L, -2) == LUA_TSTRING) {
          lua_pushfstring(L, "chronis.%s.", lua_tostring(L, -2));
          lua_pushvalue(L, f);
          if (key_of(L, lua_gettop(L) - 2, lua_tostring(L, -2))) {
            lua_replace(L, f + 1);
            break;
          }
          lua_pop(L, 2);
        }
        lua_pop(L, 1);
      }
    }
    lua_settop(L, f + 1); /* the name found, or "?" */
  }
  lua_replace(L, f);
  lua_settop(L, f);
  return lua_tostring(L, -1);
}

int chr_lua_argerror(lua_State *L, int arg, const char *extramsg) {
  int method;
  const char *name = func_name(L, &method);
  if (method && --arg == 0) /* self does not count */
    return chr_lua_error(L, CHR_EINVAL, "calling '%s' on bad self (%s)", name, extramsg);
  return chr_lua_error(L, CHR_EINVAL, "bad argument #%d to '%s' (%s)", arg, name, extramsg);
}

int chr_lua_typeerror(lua_State *L, int arg, const char *tname) {
  const char *got;
  if (luaL_getmetafield(L, arg, "__name") == LUA_TSTRING) got = lua_tostring(L, -1);
  else if (lua_type(L, arg) == LUA_TLIGHTUSERDATA) got = "light userdata";
  else got = luaL_typename(L, arg);
  return chr_lua_argerror(L, arg, lua_pushfstring(L, "%s expected, got %s", tname, got));
}

void chr_lua_checktype(lua_State *L, int arg, int t) {
  if (lua_type(L, arg) != t) chr_lua_typeerror(L, arg, lua_typename(L, t));
}

const char *chr_lua_checklstring(lua_State *L, int arg, size_t *len) {
  const char *s = lua_tolstring(L, arg, len);
  if (s == NULL) chr_lua_typeerror(L, arg, "string");
  return s;
}

const char *chr_lua_optstring(lua_State *L, int arg, const char *def) {
  return lua_isnoneornil(L, arg) ? def : chr_lua_checkstring(L, arg);
}

lua_Number chr_lua_checknumber(lua_State *L, int arg) {
  int isnum;
  lua_Number n = lua_tonumberx(L, arg, &isnum);
  if (!isnum) chr_lua_typeerror(L, arg, "number");
  return n;
}

lua_Integer chr_lua_checkinteger(lua_State *L, int arg) {
  int isnum;
  lua_Integer n = lua_tointegerx(L, arg, &isnum);
  if (!isnum) {
    if (lua_isnumber(L, arg)) chr_lua_argerror(L, arg, "number has no integer representation");
    else chr_lua_typeerror(L, arg, "number");
  }
  return n;
}

void *chr_lua_checkudata(lua_State *L, int arg, const char *tname) {
  void *p = luaL_testudata(L, arg, tname);
  if (p == NULL) chr_lua_typeerror(L, arg, tname);
  return p;
}

void chr_lua_classmeta(lua_State *L, const char *tname, const luaL_Reg *meta,
                       const luaL_Reg *methods) {
  if (!luaL_newmetatable(L, tname)) return;
  if (meta) luaL_setfuncs(L, meta, 0);
  if (methods) {
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
  }
}

/* ---- values as text ---- */

#define DESCRIBE_DEPTH 3    /* nested tables shown; deeper ones are {...} */
#define DESCRIBE_ITEMS 32   /* fields shown per table */
#define DESCRIBE_KEYS 1024  /* keys looked at per table */
#define DESCRIBE_MAX 2000   /* bytes, roughly: the rest is ... */

typedef struct dkey {
  int kind; /* 0 integer, 1 float, 2 string, 3 boolean */
  lua_Integer i;
  lua_Number n;
  const char *s; /* anchored by the table */
  size_t len;
} dkey_t;

static int dkey_cmp(const void *pa, const void *pb) {
  const dkey_t *a = pa, *b = pb;
  if (a->kind != b->kind) return a->kind - b->kind;
  switch (a->kind) {
  case 0: return a->i < b->i ? -1 : a->i > b->i;
  case 1: return a->n < b->n ? -1 : a->n > b->n;
  case 2: {
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->s, b->s, n);
    return c ? c : (a->len < b->len ? -1 : a->len > b->len);
  }
  default: return a->i - b->i;
  }
}

/* A string as a word of "k=v k=v": bare when it reads back as one. */
static void describe_word(chr_buf_t *out, const char *s, size_t n) {
  int bare = n > 0;
  for (size_t i = 0; i < n && bare; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c <= ' ' || c == 0x7f || strchr("\"=,{}\\", c)) bare = 0;
  }
  if (bare) {
    chr_buf_add(out, s, n);
    return;
  }
  chr_buf_addc(out, '"');
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (c == '"' || c == '\\') chr_buf_addc(out, '\\');
    chr_buf_addc(out, c);
  }
  chr_buf_addc(out, '"');
}

static void describe_value(lua_State *L, int idx, chr_buf_t *out, int depth, int top);

/* The table at idx as "k=v k=v" (top) or "{1,2,k=v}" (nested). skip:
 * a string key left out (the message, shown already), or NULL. */
static void describe_fields(lua_State *L, int idx, chr_buf_t *out, int depth, int top,
                            const char *skip) {
  if (depth >= DESCRIBE_DEPTH) {
    chr_buf_adds(out, top ? "..." : "{...}");
    return;
  }
  luaL_checkstack(L, 6, "describing a value");
  lua_Integer seq = 0; /* nested: the items 1..seq are shown bare, in order */
  while (!top && seq < DESCRIBE_ITEMS) {
    int nil = lua_rawgeti(L, idx, seq + 1) == LUA_TNIL;
    lua_pop(L, 1);
    if (nil) break;
    seq++;
  }
  /* The other keys, sorted, in a userdata: Lua frees it whatever a
   * __tostring below does. */
  size_t nkeys = 0, cap = 16, shown = 0;
  int more = 0;
  dkey_t *keys = lua_newuserdatauv(L, cap * sizeof *keys, 0);
  int ud = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    dkey_t k = {0, 0, 0, NULL, 0};
    int t = lua_type(L, -1);
    if (lua_isinteger(L, -1)) {
      k.i = lua_tointeger(L, -1);
      if (k.i >= 1 && k.i <= seq) continue;
    } else if (t == LUA_TNUMBER) {
      k.kind = 1;
      k.n = lua_tonumber(L, -1);
    } else if (t == LUA_TSTRING) {
      k.kind = 2;
      k.s = lua_tolstring(L, -1, &k.len);
      if (skip && strcmp(k.s, skip) == 0) continue;
    } else if (t == LUA_TBOOLEAN) {
      k.kind = 3;
      k.i = lua_toboolean(L, -1);
    } else {
      more = 1; /* a table or a function as a key: not shown */
      continue;
    }
    if (nkeys == DESCRIBE_KEYS) {
      more = 1;
      lua_pop(L, 1);
      break;
    }
    if (nkeys == cap) {
      dkey_t *bigger = lua_newuserdatauv(L, 2 * cap * sizeof *keys, 0);
      memcpy(bigger, keys, cap * sizeof *keys);
      lua_replace(L, ud); /* the key stays on top */
      keys = bigger;
      cap *= 2;
    }
    keys[nkeys++] = k;
  }
  qsort(keys, nkeys, sizeof *keys, dkey_cmp);
  if (!top) chr_buf_addc(out, '{');
  for (lua_Integer i = 1; i <= seq; i++) {
    if (shown++) chr_buf_addc(out, ',');
    lua_rawgeti(L, idx, i);
    describe_value(L, lua_gettop(L), out, depth + 1, 0);
    lua_pop(L, 1);
  }
  for (size_t i = 0; i < nkeys; i++) {
    if (shown >= DESCRIBE_ITEMS || out->len > DESCRIBE_MAX) {
      more = 1;
      break;
    }
    if (shown++) chr_buf_addc(out, top ? ' ' : ',');
    const dkey_t *k = &keys[i];
    switch (k->kind) {
    case 0:
      chr_buf_printf(out, "%lld", (long long)k->i);
      lua_pushinteger(L, k->i);
      break;
    case 1:
      chr_buf_printf(out, "%.14g", (double)k->n);
      lua_pushnumber(L, k->n);
      break;
    case 2:
      describe_word(out, k->s, k->len);
      lua_pushlstring(L, k->s, k->len);
      break;
    default:
      chr_buf_adds(out, k->i ? "true" : "false");
      lua_pushboolean(L, (int)k->i);
      break;
    }
    chr_buf_addc(out, '=');
    lua_rawget(L, idx);
    describe_value(L, lua_gettop(L), out, depth + 1, 0);
    lua_pop(L, 1);
  }
  lua_settop(L, ud - 1);
  if (more) chr_buf_adds(out, shown ? (top ? " ..." : ",...") : "...");
  if (!top) chr_buf_addc(out, '}');
}

static void describe_value(lua_State *L, int idx, chr_buf_t *out, int depth, int top) {
  int t = lua_type(L, idx);
  size_t n;
  const char *s;
  if (t == LUA_TSTRING) {
    s = lua_tolstring(L, idx, &n);
    if (top) chr_buf_add(out, s, n);
    else describe_word(out, s, n);
    return;
  }
  if (luaL_getmetafield(L, idx, "__tostring") != LUA_TNIL) {
    lua_pop(L, 1);
    s = luaL_tolstring(L, idx, &n);
    if (top) chr_buf_add(out, s, n);
    else describe_word(out, s, n);
    lua_pop(L, 1);
    return;
  }
  if (t == LUA_TTABLE) {
    if (top) {
      lua_pushliteral(L, "message");
      if (lua_rawget(L, idx) == LUA_TSTRING) { /* the message, then what else it holds */
        s = lua_tolstring(L, -1, &n);
        chr_buf_add(out, s, n);
        size_t before = out->len;
        chr_buf_adds(out, " (");
        describe_fields(L, idx, out, depth, 1, "message");
        if (out->len == before + 2) out->p[out->len = before] = '\0';
        else chr_buf_addc(out, ')');
        lua_pop(L, 1);
        return;
      }
      lua_pop(L, 1);
      lua_pushnil(L);
      if (lua_next(L, idx) == 0) {
        chr_buf_adds(out, "{}");
        return;
      }
      lua_pop(L, 2);
    }
    describe_fields(L, idx, out, depth, top, NULL);
    return;
  }
  if (t == LUA_TUSERDATA || t == LUA_TLIGHTUSERDATA || t == LUA_TFUNCTION || t == LUA_TTHREAD) {
    if (luaL_getmetafield(L, idx, "__name") == LUA_TSTRING) {
      chr_buf_adds(out, lua_tostring(L, -1));
      lua_pop(L, 1);
    } else {
      chr_buf_adds(out, lua_typename(L, t));
    }
    return;
  }
  s = luaL_tolstring(L, idx, &n); /* a number, boolean or nil */
  chr_buf_add(out, s, n);
  lua_pop(L, 1);
}

void chr_lua_describe(lua_State *L, int idx, chr_buf_t *out) {
  describe_value(L, lua_absindex(L, idx), out, 0, 1);
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

static int is_known(const char *k, const char *const *known) {
  for (; known && *known; known++)
    if (strcmp(k, *known) == 0) return 1;
  return 0;
}

void chr_lua_checkkeys(lua_State *L, int idx, const char *what, const char *const *known,
                       int (*accept)(const char *key), const char *expected) {
  chr_unknown_t u;
  chr_unknown_init(&u);
  idx = lua_absindex(L, idx);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TSTRING) {
      size_t n;
      const char *k = lua_tolstring(L, -1, &n);
      if (strlen(k) == n && (is_known(k, known) || (accept && accept(k)))) continue;
      chr_unknown_add(&u, k, n);
    } else {
      /* luaL_tolstring cannot raise for a key (no __tostring on numbers,
       * booleans); it pushes one value, removed at once. */
      lua_pushvalue(L, -1);
      size_t n;
      const char *k = luaL_tolstring(L, -1, &n);
      chr_unknown_add(&u, k, n);
      lua_pop(L, 2);
    }
  }
  if (u.n == 0) return;
  chr_buf_t b;
  chr_buf_init(&b);
  chr_unknown_format(&u, what, known, expected, &b);
  chr_unknown_free(&u);
  lua_pushlstring(L, b.p, b.len);
  chr_buf_free(&b);
  chr_lua_error(L, CHR_EINVAL, "%s", lua_tostring(L, -1));
}

/* An array of strings at idx as a NULL-terminated list in a userdata
 * (pushed: its strings are those of the array, which the caller keeps on
 * the stack). Raises on a value that is not a string. stack: +1 */
static const char **string_list(lua_State *L, int idx, const char *what) {
  chr_lua_checktype(L, idx, LUA_TTABLE);
  size_t n = lua_rawlen(L, idx);
  const char **list = lua_newuserdatauv(L, (n + 1) * sizeof *list, 0);
  for (size_t i = 0; i < n; i++) {
    lua_rawgeti(L, idx, (lua_Integer)i + 1);
    if (lua_type(L, -1) != LUA_TSTRING)
      chr_lua_error(L, CHR_EINVAL, "%s: item %d must be a string, got %s", what, (int)i + 1,
                    luaL_typename(L, -1));
    list[i] = lua_tostring(L, -1); /* held by the array at idx */
    lua_pop(L, 1);
  }
  list[n] = NULL;
  return list;
}

/* suggest(word, candidates) -> the closest candidate, or nil when none is
 * close (core/suggest.h). */
static int l_suggest(lua_State *L) {
  lua_settop(L, 2); /* string_list pushes above the arguments */
  const char *word = chr_lua_checkstring(L, 1);
  const char **list = string_list(L, 2, "suggest");
  const char *s = chr_suggest(word, list);
  if (s) lua_pushstring(L, s);
  else lua_pushnil(L);
  return 1;
}

/* unknown_keys(what, keys, candidates [, expected]) -> the message that
 * names every key of the array keys (core/suggest.h), or nil when it is
 * empty. */
static int l_unknown_keys(lua_State *L) {
  lua_settop(L, 4);
  const char *what = chr_lua_checkstring(L, 1);
  chr_lua_checktype(L, 2, LUA_TTABLE);
  const char **list = string_list(L, 3, "unknown_keys");
  const char *expected = lua_isnoneornil(L, 4) ? NULL : chr_lua_checkstring(L, 4);
  chr_unknown_t u;
  chr_unknown_init(&u);
  for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, 2); i++) {
    lua_rawgeti(L, 2, i);
    size_t n;
    const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
    if (k) chr_unknown_add(&u, k, n);
    lua_pop(L, 1);
  }
  chr_buf_t b;
  chr_buf_init(&b);
  if (chr_unknown_format(&u, what, list, expected, &b)) lua_pushlstring(L, b.p, b.len);
  else lua_pushnil(L);
  chr_unknown_free(&u);
  chr_buf_free(&b);
  return 1;
}

void chr_lua_suggest_fns(lua_State *L) {
  lua_pushcfunction(L, l_suggest);
  lua_setfield(L, -2, "suggest");
  lua_pushcfunction(L, l_unknown_keys);
  lua_setfield(L, -2, "unknown_keys");
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

/* The number option k of the table at t, def when absent; raises
 * `invalid` naming k when it is not a number in lo..hi. */
double chr_lua_optnumber(lua_State *L, int t, const char *k, double def, double lo, double hi) {
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
