/* job.c - a job record to and from a Lua table: the checks of every value
 * a Lua table may hand a store, typed fields read with their types, the
 * rest as canonical JSON; and the table handed out, with the derived
 * next_run_time_local. */
#include "job.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/time.h"
#include "core/tz.h"
#include "json.h"

#define STRP(j, d) ((char **)CHR__FIELD_PTR(j, d))
#define TIMEP(j, d) ((int64_t *)CHR__FIELD_PTR(j, d))
#define INTP(j, d) ((int32_t *)CHR__FIELD_PTR(j, d))
#define ENUMP(j, d) ((uint8_t *)CHR__FIELD_PTR(j, d))


/* stack: the job table; sets next_run_time_local when it can. */
static void set_local_time(lua_State *L, const chr_job_t *j) {
  if (!chr_job_has(j, CHR_F_TIMEZONE) || !chr_job_has(j, CHR_F_NEXT_RUN_TIME) ||
      j->next_run_time == CHR_TIME_NONE)
    return;
  char err[8], buf[CHR_TIME_BUFSZ];
  const chr_tz_t *tz = chr_tz_get(j->timezone, err, sizeof err);
  if (tz == NULL) return;
  chr_time_format_offset(j->next_run_time, chr_tz_offset(tz, j->next_run_time), buf);
  lua_pushstring(L, buf);
  lua_setfield(L, -2, CHR_JOB_DERIVED_LOCAL);
}

static int is_null(lua_State *L, int idx) {
  return lua_islightuserdata(L, idx) && lua_touserdata(L, idx) == NULL;
}

/* The path of the culprit ("kwargs.amount", "args[2]") is only written
 * when a check fails: the keys down to the value being checked are on the
 * Lua stack, and keys[] remembers where. */
typedef struct vcheck {
  lua_State *L;
  chr_buf_t *path;
  char *err;
  size_t errlen;
  int depth, nkeys;
  int keys[128];
} vcheck_t;

static void add_key(vcheck_t *c, int k) {
  lua_State *L = c->L;
  if (lua_type(L, k) == LUA_TSTRING) {
    size_t n;
    const char *s = lua_tolstring(L, k, &n);
    if (c->path->len > 0) chr_buf_addc(c->path, '.');
    chr_job_add_shown(c->path, s, n);
  } else if (lua_isinteger(L, k)) {
    chr_buf_printf(c->path, "[%lld]", (long long)lua_tointeger(L, k));
  } else if (lua_type(L, k) == LUA_TNUMBER) {
    chr_buf_printf(c->path, "[%.17g]", lua_tonumber(L, k));
  }
}

static int vfail(vcheck_t *c, const char *what) {
  snprintf(c->err, c->errlen, "%s", what);
  for (int i = 0; i < c->nkeys; i++) add_key(c, c->keys[i]);
  return CHR_EINVAL;
}

static int check_value(vcheck_t *c, int idx);

/* Checks the key at k and the value at v. */
static int check_member(vcheck_t *c, int k, int v) {
  lua_State *L = c->L;
  char msg[80];
  int rc;
  c->keys[c->nkeys++] = k; /* depth is bounded by 100 below */
  if (lua_type(L, k) == LUA_TSTRING) {
    size_t n;
    const char *s = lua_tolstring(L, k, &n);
    const char *bad = chr_job_string_problem(s, n, msg, sizeof msg);
    rc = bad ? vfail(c, bad) : check_value(c, v);
  } else if (lua_type(L, k) == LUA_TNUMBER) {
    rc = check_value(c, v);
  } else {
    c->nkeys--; /* the key cannot be shown in the path */
    snprintf(msg, sizeof msg, "a key of type %s cannot be stored", luaL_typename(L, k));
    return vfail(c, msg);
  }
  c->nkeys--;
  return rc;
}

static int check_value(vcheck_t *c, int idx) {
  lua_State *L = c->L;
  char msg[80];
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
  case LUA_TBOOLEAN: return 0;
  case LUA_TNUMBER: {
    if (lua_isinteger(L, idx)) return 0;
    double d = lua_tonumber(L, idx);
    if (isnan(d)) return vfail(c, "NaN cannot be stored (numbers must be finite)");
    if (isinf(d)) return vfail(c, "infinity cannot be stored (numbers must be finite)");
    return 0;
  }
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    const char *bad = chr_job_string_problem(s, n, msg, sizeof msg);
    return bad ? vfail(c, bad) : 0;
  }
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, idx) == NULL) return 0; /* chronis.json.null */
    break;
  case LUA_TTABLE: {
    if (++c->depth > 100)
      return vfail(c, "nested deeper than 100 levels (a cycle?) cannot be stored");
    luaL_checkstack(L, 4, "job");
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      int rc = check_member(c, lua_gettop(L) - 1, lua_gettop(L));
      if (rc != 0) {
        lua_pop(L, 2);
        return rc;
      }
      lua_pop(L, 1);
    }
    c->depth--;
    return 0;
  }
  default: break;
  }
  snprintf(msg, sizeof msg, "a value of type %s cannot be stored", luaL_typename(L, idx));
  return vfail(c, msg);
}

int chr_job_check_value(lua_State *L, int idx, chr_buf_t *path, char *err, size_t errlen) {
  vcheck_t c = {L, path, err, errlen, 0, 0, {0}};
  if (path->p == NULL) chr_buf_adds(path, ""); /* p is never NULL below */
  return check_value(&c, lua_absindex(L, idx));
}

int chr_job_check_fields(lua_State *L, int idx, char *err, size_t errlen) {
  idx = lua_absindex(L, idx);
  if (!lua_istable(L, idx))
    return chr_errf(err, errlen, "a job must be a table, got %s", luaL_typename(L, idx));
  luaL_checkstack(L, 4, "job");
  chr_buf_t path;
  char msg[80];
  vcheck_t c = {L, &path, msg, sizeof msg, 1, 0, {0}}; /* the job is the first level */
  int rc = 0;
  chr_buf_init(&path);
  chr_buf_adds(&path, "");
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t n = 0;
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &n) : NULL;
    if ((k == NULL || !chr_job_is_derived(k, n)) &&
        (rc = check_member(&c, lua_gettop(L) - 1, lua_gettop(L))) != 0) {
      lua_pop(L, 2);
      chr_errf(err, errlen, "invalid field '%s': %s", path.p, msg);
      break;
    }
    lua_pop(L, 1);
  }
  chr_buf_free(&path);
  return rc;
}

/* Reads one typed field from the value at idx. Returns 1 when the value
 * does not fit the typed slot and belongs in extra instead. */
static int field_from_lua(lua_State *L, int idx, chr_job_t *j, int f, int partial, char *err,
                          size_t errlen, int *rc) {
  const chr_field_desc_t *d = &chr_job_fields[f];
  *rc = 0;
  if (is_null(L, idx)) {
    if (!partial) return 0; /* a null in a full record is just absent */
    chr__job_clear_field(j, f);
    j->nullmask |= CHR_BIT(f);
    return 0;
  }
  switch (d->type) {
  case CHR_FT_STR: {
    if (lua_type(L, idx) != LUA_TSTRING) {
      *rc = chr_errf(err, errlen, "invalid field '%s': expected a string, got %s", d->name,
                 luaL_typename(L, idx));
      return 0;
    }
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    free(*STRP(j, d));
    *STRP(j, d) = chr_strndup(s, n);
    break;
  }
  case CHR_FT_TIME: {
    int64_t us;
    if (lua_isinteger(L, idx)) {
      us = lua_tointeger(L, idx);
      /* math.mininteger would otherwise read as no time at all. */
      if (us < CHR_TIME_MIN || us > CHR_TIME_MAX) {
        *rc = chr_errf(err, errlen, "invalid field '%s': %lld microseconds is out of range (times "
                   "are " CHR_TIME_RANGE ")", d->name, (long long)us);
        return 0;
      }
    } else if (lua_type(L, idx) == LUA_TSTRING) {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      char msg[256];
      if (chr_time_parse(s, n, NULL, &us, msg, sizeof msg) != 0) {
        *rc = chr_errf(err, errlen, "invalid field '%s': %s", d->name, msg);
        return 0;
      }
    } else {
      *rc = chr_errf(err, errlen, "invalid field '%s': expected an ISO-8601 time, got %s",
                 d->name, luaL_typename(L, idx));
      return 0;
    }
    *TIMEP(j, d) = us;
    break;
  }
  case CHR_FT_INT: {
    if (lua_type(L, idx) != LUA_TNUMBER) {
      *rc = chr_errf(err, errlen, "invalid field '%s': expected an integer, got %s", d->name,
                 luaL_typename(L, idx));
      return 0;
    }
    lua_Integer v;
    if (!lua_isinteger(L, idx)) {
      /* A fraction, or a float past 64 bits: keep as given. */
      if (!lua_numbertointeger(lua_tonumber(L, idx), &v) || (lua_Number)v != lua_tonumber(L, idx))
        return 1;
    } else {
      v = lua_tointeger(L, idx);
    }
    if (v < INT32_MIN || v > INT32_MAX) return 1;
    *INTP(j, d) = (int32_t)v;
    break;
  }
  case CHR_FT_ENUM: {
    const char *s = lua_type(L, idx) == LUA_TSTRING ? lua_tostring(L, idx) : NULL;
    int v = s ? chr_enum_parse(d->enum_names, d->enum_count, s) : 0;
    if (v == 0) {
      chr_buf_t b;
      chr_buf_init(&b);
      for (int i = 1; i < d->enum_count; i++)
        chr_buf_printf(&b, "%s%s", i > 1 ? ", " : "", d->enum_names[i]);
      if (s) *rc = chr_errf(err, errlen, "invalid field '%s': unknown value '%s' (expected one of %s)",
                        d->name, s, b.p);
      else *rc = chr_errf(err, errlen, "invalid field '%s': expected one of %s, got %s", d->name,
                      b.p, luaL_typename(L, idx));
      chr_buf_free(&b);
      return 0;
    }
    *ENUMP(j, d) = (uint8_t)v;
    break;
  }
  case CHR_FT_JSON: {
    if (!lua_istable(L, idx)) {
      *rc = chr_errf(err, errlen, "invalid field '%s': expected a table, got %s", d->name,
                 luaL_typename(L, idx));
      return 0;
    }
    chr_buf_t b;
    char msg[200];
    chr_buf_init(&b);
    if (chr_json_encode(L, idx, &b, msg, sizeof msg) != 0) {
      chr_buf_free(&b);
      *rc = chr_errf(err, errlen, "invalid field '%s': %s", d->name, msg);
      return 0;
    }
    free(*STRP(j, d));
    *STRP(j, d) = chr_buf_steal(&b);
    break;
  }
  }
  j->mask |= CHR_BIT(f);
  return 0;
}

int chr_job_from_lua(lua_State *L, int idx, chr_job_t *j, int partial, char *err,
                     size_t errlen) {
  idx = lua_absindex(L, idx);
  if (!lua_istable(L, idx)) return chr_errf(err, errlen, "a job must be a table, got %s",
                                        luaL_typename(L, idx));
  /* Every store goes through here: one rule for the values they keep. */
  int rc = chr_job_check_fields(L, idx, err, errlen);
  if (rc != 0) return rc;
  luaL_checkstack(L, 6, "job");
  /* The table of the other members is made at the first one: most jobs
   * created in bulk have none. */
  int base = lua_gettop(L), extra = 0, nextra = 0;
  lua_pushnil(L);
  while (rc == 0 && lua_next(L, idx)) {
    /* stack: [extra] key value */
    int f = -1;
    if (lua_type(L, -2) == LUA_TSTRING) {
      size_t n;
      const char *k = lua_tolstring(L, -2, &n);
      if (chr_job_is_derived(k, n)) {
        lua_pop(L, 1);
        continue;
      }
      f = chr_job_field_index(k, n);
    }
    if (f < 0 || field_from_lua(L, lua_gettop(L), j, f, partial, err, errlen, &rc)) {
      if (is_null(L, -1) && !partial) {
        lua_pop(L, 1);
        continue;
      }
      if (extra == 0) {
        lua_newtable(L);
        lua_insert(L, -3);
        extra = base + 1;
      }
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, extra);
      nextra++;
    } else {
      lua_pop(L, 1);
    }
  }
  if (rc != 0) {
    lua_settop(L, base);
    return rc;
  }
  free(j->extra);
  j->extra = NULL;
  if (nextra > 0) {
    chr_buf_t b;
    char msg[200];
    chr_buf_init(&b);
    if (chr_json_encode(L, extra, &b, msg, sizeof msg) != 0) {
      chr_buf_free(&b);
      lua_settop(L, base);
      return chr_errf(err, errlen, "invalid job: %s", msg);
    }
    j->extra = chr_buf_steal(&b);
  }
  lua_settop(L, base);
  if (!partial) {
    if (!chr_job_has(j, CHR_F_JOB_ID))
      return chr_errf(err, errlen, "invalid job: field 'job_id' is required");
    if (!chr_job_has(j, CHR_F_STATUS))
      return chr_errf(err, errlen, "invalid job: field 'status' is required");
  }
  return 0;
}

int chr_job_from_lua_fields(lua_State *L, int idx, chr_job_t *j, uint32_t fields,
                            const char *member, char *err, size_t errlen) {
  int rc = 0;
  idx = lua_absindex(L, idx);
  if (!lua_istable(L, idx)) return chr_errf(err, errlen, "a job must be a table, got %s",
                                        luaL_typename(L, idx));
  for (int f = 0; rc == 0 && f < CHR_F__COUNT; f++) {
    if (!(fields & CHR_BIT(f))) continue;
    if (lua_getfield(L, idx, chr_job_fields[f].name) != LUA_TNIL)
      field_from_lua(L, lua_gettop(L), j, f, 1, err, errlen, &rc);
    lua_pop(L, 1);
  }
  if (rc != 0 || member == NULL) return rc;
  if (lua_getfield(L, idx, member) != LUA_TNIL) {
    chr_buf_t b;
    char msg[200];
    chr_buf_init(&b);
    chr_buf_addc(&b, '{');
    chr_json_add_string(&b, member, strlen(member));
    chr_buf_addc(&b, ':');
    if (chr_json_encode(L, lua_gettop(L), &b, msg, sizeof msg) != 0) {
      rc = chr_errf(err, errlen, "invalid field '%s': %s", member, msg);
      chr_buf_free(&b);
    } else {
      chr_buf_addc(&b, '}');
      free(j->extra);
      j->extra = chr_buf_steal(&b);
    }
  }
  lua_pop(L, 1);
  return rc;
}

static void push_time(lua_State *L, int64_t us) {
  char buf[CHR_TIME_BUFSZ];
  int n = chr_time_format(us, buf);
  lua_pushlstring(L, buf, (size_t)n);
}

void chr_job_push(lua_State *L, const chr_job_t *j) {
  char msg[64];
  luaL_checkstack(L, 8, "job");
  lua_createtable(L, 0, 24);
  if (j->extra) {
    chr_json_decode_into(L, lua_gettop(L), j->extra, strlen(j->extra), msg, sizeof msg);
    /* A partial record's null members (removals) show as chronis.json.null. */
    if (strstr(j->extra, "null")) {
      const char *it = j->extra, *end = it + strlen(it);
      chr_json_span_t k, v;
      while (chr_json_next_member(&it, end, &k, &v) == 1) {
        if (!chr_json_is_null(v)) continue;
        lua_pushlstring(L, k.p, k.n);
        lua_pushlightuserdata(L, NULL);
        lua_rawset(L, -3);
      }
    }
  }
  if (j->unreadable != NULL) { /* see chr_job_t */
    lua_pushstring(L, j->unreadable);
    lua_setfield(L, -2, "unreadable");
  }
  for (int f = 0; f < CHR_F__COUNT; f++) {
    if (j->nullmask & CHR_BIT(f)) {
      lua_pushlightuserdata(L, NULL);
      lua_setfield(L, -2, chr_job_fields[f].name);
      continue;
    }
    if (!chr_job_has(j, f)) continue;
    const chr_field_desc_t *d = &chr_job_fields[f];
    switch (d->type) {
    case CHR_FT_STR: lua_pushstring(L, *STRP(j, d)); break;
    case CHR_FT_TIME:
      if (*TIMEP(j, d) == CHR_TIME_NONE) continue;
      push_time(L, *TIMEP(j, d));
      break;
    case CHR_FT_INT: lua_pushinteger(L, *INTP(j, d)); break;
    case CHR_FT_ENUM: lua_pushstring(L, d->enum_names[*ENUMP(j, d)]); break;
    case CHR_FT_JSON: {
      const char *s = *STRP(j, d);
      if (s == NULL || chr_json_decode(L, s, strlen(s), msg, sizeof msg) != 0) continue;
      break;
    }
    }
    lua_setfield(L, -2, d->name);
  }
  set_local_time(L, j);
}

/* ---- the handler's job table, decoded on first use ---- */

static char lazy_mt_key, lazy_text_key;

void chr_lua_job_materialize(lua_State *L, int idx) {
  int t = lua_absindex(L, idx);
  if (!lua_getmetatable(L, t)) return;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &lazy_mt_key);
  int ours = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  if (!ours) return;
  luaL_checkstack(L, 8, "job");
  lua_pushnil(L);
  lua_setmetatable(L, t);
  if (lua_rawgetp(L, t, &lazy_text_key) == LUA_TSTRING) {
    size_t n;
    const char *text = lua_tolstring(L, -1, &n);
    char msg[64];
    lua_newtable(L);
    int tmp = lua_gettop(L);
    if (chr_json_decode_into(L, tmp, text, n, msg, sizeof msg) == 0) {
      lua_pushnil(L); /* stack: text tmp nil */
      while (lua_next(L, tmp)) {
        lua_pushvalue(L, -2);
        if (lua_rawget(L, t) == LUA_TNIL) { /* what the handler set first stays */
          lua_pop(L, 1);
          lua_pushvalue(L, -2);
          lua_insert(L, -2);
          lua_rawset(L, t);
        } else {
          lua_pop(L, 2);
        }
      }
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_pushnil(L);
  lua_rawsetp(L, t, &lazy_text_key);
  static const char *const empties[] = {"args", "kwargs", "metadata"};
  for (int i = 0; i < 3; i++) {
    if (lua_getfield(L, t, empties[i]) == LUA_TNIL) {
      lua_newtable(L);
      lua_setfield(L, t, empties[i]);
    }
    lua_pop(L, 1);
  }
}

static int lazy_index(lua_State *L) {
  chr_lua_job_materialize(L, 1);
  lua_settop(L, 2);
  lua_rawget(L, 1);
  return 1;
}

static int lazy_newindex(lua_State *L) {
  chr_lua_job_materialize(L, 1);
  lua_settop(L, 3);
  lua_rawset(L, 1);
  return 0;
}

static int lazy_pairs(lua_State *L) {
  chr_lua_job_materialize(L, 1);
  lua_getglobal(L, "next");
  lua_pushvalue(L, 1);
  lua_pushnil(L);
  return 3;
}

void chr_lua_job_lazy(lua_State *L, const char *extra) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &lazy_mt_key) == LUA_TNIL) {
    lua_pop(L, 1);
    static const luaL_Reg meta[] = {
        {"__index", lazy_index}, {"__newindex", lazy_newindex}, {"__pairs", lazy_pairs}, {NULL, NULL}};
    luaL_newlib(L, meta);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &lazy_mt_key);
  }
  if (extra) {
    lua_pushstring(L, extra);
    lua_rawsetp(L, -3, &lazy_text_key);
  }
  lua_setmetatable(L, -2);
}
