/* cron.c - the chronis.cron Lua module: parse(spec) and
 * next(spec, after, zone) over cron.c. A spec is a crontab string, a table
 * of fields ({hour = 9, minute = "*\/15"}) or {cron = "<crontab>"}. */
#include <stdio.h>
#include <string.h>

#include "core/cron.h"
#include "util.h"
#include "core/time.h"
#include "core/tz.h"

#define ERRLEN 256

typedef struct {
  const char *fields[CHR_CRON_NFIELDS];
  char num[CHR_CRON_NFIELDS][32]; /* integer values, as text */
  const char *crontab;
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
  c = a.crontab ? chr_cron_parse_crontab(a.crontab, err, sizeof err)
                : chr_cron_parse_fields(a.fields, err, sizeof err);
  if (c == NULL) chr_lua_error(L, CHR_EINVAL, "%s", err);
  return c;
}

/* cron.parse(spec) -> true */
static int cron_parse(lua_State *L) {
  chr_cron_free(check_spec(L, 1));
  lua_pushboolean(L, 1);
  return 1;
}

/* cron.next(spec, after [, zone = "UTC"]) -> ISO string or nil. `after`
 * is an ISO string (naive = in `zone`) or integer µs; nil means now. */
static int cron_next(lua_State *L) {
  char err[ERRLEN];
  const chr_tz_t *z = chr_tz_utc();
  int64_t after, next;
  chr_cron_t *c;
  if (!lua_isnoneornil(L, 3)) {
    size_t len;
    const char *name = chr_lua_checklstring(L, 3, &len);
    if (strlen(name) != len)
      return chr_lua_error(L, CHR_EINVAL, "invalid timezone '%.64s'", name);
    if ((z = chr_tz_get(name, err, sizeof err)) == NULL)
      return chr_lua_error(L, CHR_EINVAL, "%s", err);
  }
  after = lua_isnoneornil(L, 2) ? chr_time_now()
                                : chr_lua_checktime(L, 2, z, "after");
  c = check_spec(L, 1);
  next = chr_cron_next(c, after, z);
  chr_cron_free(c);
  chr_lua_pushtime(L, next); /* stack: +1 time or nil */
  return 1;
}

static const luaL_Reg cron_funcs[] = {
    {"parse", cron_parse},
    {"next", cron_next},
    {NULL, NULL},
};

int luaopen_chronis_cron(lua_State *L) {
  luaL_newlib(L, cron_funcs); /* stack: +1 module */
  return 1;
}
