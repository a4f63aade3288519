/* cron.c - the chronis.cron Lua module: parse(spec), next(spec, after,
 * zone) and describe(spec, after, zone, count) over cron.c. A spec is a
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

/* cron.describe(spec [, after [, zone [, count = 5]]]) ->
 * {text = "at 09:00 on Monday through Friday", zone = "UTC",
 *  next = {ISO, ...}}: the English reading and the next `count` fires. */
static int cron_describe(lua_State *L) {
  char text[ERRLEN];
  const chr_tz_t *z;
  int64_t after, t;
  lua_Integer count = luaL_optinteger(L, 4, 5);
  chr_cron_t *c;
  if (count < 0 || count > 1000)
    return chr_lua_error(L, CHR_EINVAL, "describe: count %lld is out of range 0-1000",
                         (long long)count);
  c = spec_and_after(L, &z, &after);
  chr_cron_describe(c, text, sizeof text);
  lua_createtable(L, 0, 3); /* stack: +1 result */
  lua_pushstring(L, text);
  lua_setfield(L, -2, "text");
  lua_pushstring(L, chr_tz_name(chr_cron_zone(c) ? chr_cron_zone(c) : z));
  lua_setfield(L, -2, "zone");
  lua_createtable(L, (int)count, 0); /* stack: +2 next list */
  t = after;
  for (lua_Integer i = 1; i <= count; i++) {
    if ((t = chr_cron_next(c, t, z)) == CHR_TIME_NONE) break;
    chr_lua_pushtime(L, t);
    lua_rawseti(L, -2, i);
  }
  lua_setfield(L, -2, "next"); /* stack: +1 result */
  chr_cron_free(c);
  return 1;
}

static const luaL_Reg cron_funcs[] = {
    {"parse", cron_parse},
    {"next", cron_next},
    {"describe", cron_describe},
    {NULL, NULL},
};

int luaopen_chronis_cron(lua_State *L) {
  luaL_newlib(L, cron_funcs); /* stack: +1 module */
  return 1;
}
