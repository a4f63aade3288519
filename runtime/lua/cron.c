/* cron.c - the chronis.cron Lua module: parse(spec), next(spec, after,
 * zone), describe(spec, after, zone, count) and compile(spec, zone) (a
 * spec parsed once, for many next times) over cron.c. A spec is a
 * crontab string, a table of fields ({hour = 9, minute = "*\/15"}) or
 * {cron = "<crontab>", dialect = "quartz"}; either table may carry job_id,
 * the seed of 'H'. */
#include <stdio.h>
#include <string.h>

#include "core/cron.h"
#include "util.h"
#include "core/time.h"
#include "core/tz.h"

#define ERRLEN 512

typedef struct {
  const char *fields[CHR_CRON_NFIELDS];
  char num[CHR_CRON_NFIELDS][32]; /* integer values, as text */
  const char *crontab;
  const char *dialect;
  chr_cron_opts_t opts;
  int nfields;
} spec_args_t;

static int field_index(const char *name) {
  for (int i = 0; i < CHR_CRON_NFIELDS; i++)
    if (strcmp(name, chr_cron_field_names[i]) == 0) return i;
  return -1;
}

/* One field value: a string as given, or an integer written out, so both
 * go through the same parser and the same messages.
 * stack: unchanged */
static void read_field(lua_State *L, int vidx, int f, spec_args_t *a) {
  const char *name = chr_cron_field_names[f];
  switch (lua_type(L, vidx)) {
  case LUA_TSTRING:
    a->fields[f] = lua_tostring(L, vidx);
    break;
  case LUA_TNUMBER: {
    int ok;
    lua_Integer v = lua_tointegerx(L, vidx, &ok);
    if (!ok)
      chr_lua_error(L, CHR_EINVAL, "invalid cron field '%s': %s is not an integer",
                    name, lua_tostring(L, vidx));
    snprintf(a->num[f], sizeof a->num[f], "%lld", (long long)v);
    a->fields[f] = a->num[f];
    break;
  }
  default:
    chr_lua_error(L, CHR_EINVAL,
                  "invalid cron field '%s': expected an integer or a string, got %s",
                  name, luaL_typename(L, vidx));
  }
  a->nfields++;
}

/* Walks a spec table; raises on an unknown key or a bad value. String
 * values stay owned by the table, which is on the stack throughout. */
static void read_table(lua_State *L, int idx, spec_args_t *a) {
  static const char *const keys[] = {"year",   "month",  "day",  "week",    "day_of_week", "hour",
                                     "minute", "second", "cron", "dialect", "job_id",      NULL};
  chr_lua_checkkeys(L, idx, "cron field", keys, NULL, NULL);
  lua_pushnil(L);
  while (lua_next(L, idx)) { /* stack: key value */
    int f;
    if (lua_type(L, -2) != LUA_TSTRING) {
      lua_pushvalue(L, -2);
      chr_lua_error(L, CHR_EINVAL, "invalid cron field '%s': unknown field",
                    luaL_tolstring(L, -1, NULL));
    }
    const char *key = lua_tostring(L, -2);
    if (strcmp(key, "cron") == 0) {
      if (lua_type(L, -1) != LUA_TSTRING)
        chr_lua_error(L, CHR_EINVAL, "invalid cron spec: 'cron' must be a string, got %s",
                      luaL_typename(L, -1));
      a->crontab = lua_tostring(L, -1);
    } else if (strcmp(key, "dialect") == 0 || strcmp(key, "job_id") == 0) {
      if (lua_type(L, -1) != LUA_TSTRING)
        chr_lua_error(L, CHR_EINVAL, "invalid cron spec: '%s' must be a string, got %s", key,
                      luaL_typename(L, -1));
      if (key[0] == 'd') a->dialect = lua_tostring(L, -1);
      else a->opts.hash_key = lua_tostring(L, -1);
    } else if ((f = field_index(key)) >= 0) {
      read_field(L, lua_gettop(L), f, a);
    } else {
      chr_lua_error(L, CHR_EINVAL, "invalid cron field '%s': unknown field", key);
    }
    lua_pop(L, 1);
  }
  if (a->crontab && a->nfields)
    chr_lua_error(L, CHR_EINVAL,
                  "invalid cron spec: give either 'cron' or cron fields, not both");
  if (a->dialect && !a->crontab)
    chr_lua_error(L, CHR_EINVAL, "invalid cron spec: 'dialect' applies to a 'cron' string");
  if (a->dialect) {
    int d = chr_cron_dialect_of(a->dialect);
    if (d < 0)
      chr_lua_error(L, CHR_EINVAL,
                    "invalid cron spec: unknown dialect '%.40s' (expected standard, vixie, "
                    "quartz or year_last)", a->dialect);
    a->opts.dialect = (chr_cron_dialect_t)d;
  }
}

/* Compiles the spec at idx. Raises on error, so the caller owns the result
 * only once this returns and must raise nothing before freeing it. */
static chr_cron_t *check_spec(lua_State *L, int idx) {
  char err[ERRLEN];
  spec_args_t a;
  chr_cron_t *c;
  memset(&a, 0, sizeof a);
  switch (lua_type(L, idx)) {
  case LUA_TSTRING:
    a.crontab = lua_tostring(L, idx);
    break;
  case LUA_TTABLE:
    read_table(L, idx, &a);
    break;
  default:
    chr_lua_typeerror(L, idx, "table or string");
  }
  c = a.crontab ? chr_cron_parse_crontab_opts(a.crontab, &a.opts, err, sizeof err)
                : chr_cron_parse_fields_opts(a.fields, &a.opts, err, sizeof err);
  if (c == NULL) chr_lua_error(L, CHR_EINVAL, "%s", err);
  return c;
}

/* cron.parse(spec) -> true */
static int cron_parse(lua_State *L) {
  chr_cron_free(check_spec(L, 1));
  lua_pushboolean(L, 1);
  return 1;
}

/* The zone argument at idx, or NULL when it is absent. */
static const chr_tz_t *opt_zone(lua_State *L, int idx) {
  char err[ERRLEN];
  const chr_tz_t *z;
  size_t len;
  const char *name;
  if (lua_isnoneornil(L, idx)) return NULL;
  name = chr_lua_checklstring(L, idx, &len);
  if (strlen(name) != len) chr_lua_error(L, CHR_EINVAL, "invalid timezone '%.64s'", name);
  if ((z = chr_tz_get(name, err, sizeof err)) == NULL) chr_lua_error(L, CHR_EINVAL, "%s", err);
  return z;
}

/* Compiles the spec at 1 and reads `after` at 2 (nil: now) in the zone at
 * 3, else the spec's TZ= zone, else UTC. Raises before it returns a spec:
 * a naive `after` string is read once the spec's zone is known, with the
 * spec freed first when it is malformed. */
static chr_cron_t *spec_and_after(lua_State *L, const chr_tz_t **zp, int64_t *after) {
  char err[ERRLEN];
  const chr_tz_t *z = opt_zone(L, 3);
  chr_cron_t *c;
  int str = lua_type(L, 2) == LUA_TSTRING;
  if (lua_isnoneornil(L, 2)) *after = chr_time_now();
  else if (!str) *after = chr_lua_checktime(L, 2, NULL, "after");
  c = check_spec(L, 1);
  if (z == NULL) z = chr_cron_zone(c) ? chr_cron_zone(c) : chr_tz_utc();
  if (str) {
    size_t len;
    const char *s = lua_tolstring(L, 2, &len);
    if (chr_time_parse(s, len, z, after, err, sizeof err) != 0) {
      chr_cron_free(c);
      chr_lua_error(L, CHR_EINVAL, "after: %s", err);
    }
  }
  *zp = z;
  return c;
}

/* cron.next(spec, after [, zone = "UTC"]) -> ISO string or nil. `after`
 * is an ISO string (naive = in `zone`) or integer µs; nil means now. */
static int cron_next(lua_State *L) {
  const chr_tz_t *z;
  int64_t after, next;
  chr_cron_t *c = spec_and_after(L, &z, &after);
  next = chr_cron_next(c, after, z);
  chr_cron_free(c);
  chr_lua_pushtime(L, next); /* stack: +1 time or nil */
  return 1;
}

/* The count at idx for describe: 0-1000, default 5. */
static lua_Integer describe_count(lua_State *L, int idx) {
  lua_Integer count = luaL_optinteger(L, idx, 5);
  if (count < 0 || count > 1000)
    chr_lua_error(L, CHR_EINVAL, "describe: count %lld is out of range 0-1000", (long long)count);
  return count;
}

/* {text, zone, next = {ISO, ...}} of c from `after` in z.
 * stack: +1 the table */
static void push_description(lua_State *L, const chr_cron_t *c, const chr_tz_t *z, int64_t after,
                             lua_Integer count) {
  char text[ERRLEN];
  int64_t t = after;
  chr_cron_describe(c, text, sizeof text);
  lua_createtable(L, 0, 3);
  lua_pushstring(L, text);
  lua_setfield(L, -2, "text");
  lua_pushstring(L, chr_tz_name(chr_cron_zone(c) ? chr_cron_zone(c) : z));
  lua_setfield(L, -2, "zone");
  lua_createtable(L, (int)count, 0);
  for (lua_Integer i = 1; i <= count; i++) {
    if ((t = chr_cron_next(c, t, z)) == CHR_TIME_NONE) break;
    chr_lua_pushtime(L, t);
    lua_rawseti(L, -2, i);
  }
  lua_setfield(L, -2, "next");
}

/* cron.describe(spec [, after [, zone [, count = 5]]]) ->
 * {text = "at 09:00 on Monday through Friday", zone = "UTC",
 *  next = {ISO, ...}}: the English reading and the next `count` fires. */
static int cron_describe(lua_State *L) {
  const chr_tz_t *z;
  int64_t after;
  lua_Integer count = describe_count(L, 4);
  chr_cron_t *c = spec_and_after(L, &z, &after);
  /* Pushing only allocates; a memory error there would leak c, which a
   * compiled spec (below) avoids for callers that care. */
  push_description(L, c, z, after, count);
  chr_cron_free(c);
  return 1;
}

/* ---- compiled specs: cron.compile(spec [, zone]) ---- */

#define COMPILED_MT "chronis.cron.compiled"

typedef struct compiled {
  chr_cron_t *c;
  const chr_tz_t *zone; /* compile's zone, else the spec's TZ=, else UTC */
} compiled_t;

static compiled_t *check_compiled(lua_State *L) {
  return chr_lua_checkudata(L, 1, COMPILED_MT);
}

/* The zone of a call: its own argument at idx, else the compiled one. */
static const chr_tz_t *call_zone(lua_State *L, compiled_t *k, int idx) {
  const chr_tz_t *z = opt_zone(L, idx);
  return z ? z : k->zone;
}

/* compiled:next(after [, zone]) -> the first fire time after `after`, or
 * nil. An integer `after` (µs) gives an integer: the fast path, no text
 * on either side. An ISO string (naive = in the zone) or nil (now) gives
 * an ISO string, as cron.next does. */
static int compiled_next(lua_State *L) {
  compiled_t *k = check_compiled(L);
  if (lua_isinteger(L, 2) && lua_isnoneornil(L, 3)) {
    int64_t t = chr_cron_next(k->c, (int64_t)lua_tointeger(L, 2), k->zone);
    if (t == CHR_TIME_NONE) lua_pushnil(L);
    else lua_pushinteger(L, (lua_Integer)t);
    return 1;
  }
  const chr_tz_t *z = call_zone(L, k, 3);
  int64_t after;
  if (lua_isnoneornil(L, 2)) {
    after = chr_time_now();
  } else if (lua_isinteger(L, 2)) {
    int64_t t = chr_cron_next(k->c, (int64_t)lua_tointeger(L, 2), z);
    if (t == CHR_TIME_NONE) lua_pushnil(L);
    else lua_pushinteger(L, (lua_Integer)t);
    return 1;
  } else {
    after = chr_lua_checktime(L, 2, z, "after");
  }
  chr_lua_pushtime(L, chr_cron_next(k->c, after, z));
  return 1;
}

/* compiled:describe([after [, zone [, count = 5]]]), as cron.describe. */
static int compiled_describe(lua_State *L) {
  compiled_t *k = check_compiled(L);
  const chr_tz_t *z = call_zone(L, k, 3);
  lua_Integer count = describe_count(L, 4);
  int64_t after = lua_isnoneornil(L, 2) ? chr_time_now() : chr_lua_checktime(L, 2, z, "after");
  push_description(L, k->c, z, after, count);
  return 1;
}

static int compiled_tostring(lua_State *L) {
  char text[ERRLEN];
  compiled_t *k = check_compiled(L);
  chr_cron_describe(k->c, text, sizeof text);
  lua_pushfstring(L, "chronis.cron(%s, %s)", text, chr_tz_name(k->zone));
  return 1;
}

static int compiled_gc(lua_State *L) {
  compiled_t *k = lua_touserdata(L, 1);
  if (k->c) chr_cron_free(k->c);
  k->c = NULL;
  return 0;
}

/* cron.compile(spec [, zone]) -> a compiled spec, for many next times:
 * the spec is parsed once, and its zone looked up once. */
static int cron_compile(lua_State *L) {
  const chr_tz_t *z = opt_zone(L, 2);
  compiled_t *k = lua_newuserdatauv(L, sizeof *k, 0);
  k->c = NULL;
  static const luaL_Reg meta[] = {{"__gc", compiled_gc}, {"__tostring", compiled_tostring},
                                  {NULL, NULL}};
  static const luaL_Reg methods[] = {{"next", compiled_next}, {"describe", compiled_describe},
                                     {NULL, NULL}};
  chr_lua_classmeta(L, COMPILED_MT, meta, methods);
  lua_setmetatable(L, -2);
  /* The object exists before the spec is compiled: an error from here on
   * leaves nothing to free. */
  k->c = check_spec(L, 1);
  k->zone = z ? z : chr_cron_zone(k->c) ? chr_cron_zone(k->c) : chr_tz_utc();
  return 1;
}

static const luaL_Reg cron_funcs[] = {
    {"parse", cron_parse},
    {"next", cron_next},
    {"describe", cron_describe},
    {"compile", cron_compile},
    {NULL, NULL},
};

int luaopen_chronis_cron(lua_State *L) {
  luaL_newlib(L, cron_funcs); /* stack: +1 module */
  return 1;
}
