/* job.c - the job record: field table, copies, partial records (apply and
 * match), Lua and JSON conversion, and scheduler-level validation. */
#include "job.h"

#include <lauxlib.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "time.h"
#include "trigger.h"
#include "tz.h"

const char *const chr_status_names[CHR_ST__COUNT] = {
    NULL, "pending", "scheduled", "running", "paused", "failed"};
const char *const chr_trigger_type_names[CHR_TT__COUNT] = {NULL, "interval", "cron",
                                                           "date"};
const char *const chr_if_missed_names[CHR_MISS__COUNT] = {NULL, "skip", "run_once",
                                                          "run_all"};

#define OFF(m) offsetof(chr_job_t, m)
#define STR(n, m) {n, CHR_FT_STR, OFF(m), NULL, 0}
#define TIME(n, m) {n, CHR_FT_TIME, OFF(m), NULL, 0}
#define INT(n, m) {n, CHR_FT_INT, OFF(m), NULL, 0}
#define ENUM(n, m, names) {n, CHR_FT_ENUM, OFF(m), names, (int)(sizeof names / sizeof *names)}

const chr_field_desc_t chr_job_fields[CHR_F__COUNT] = {
    [CHR_F_JOB_ID] = STR("job_id", job_id),
    [CHR_F_NAME] = STR("name", name),
    [CHR_F_TRIGGER_TYPE] = ENUM("trigger_type", trigger_type, chr_trigger_type_names),
    [CHR_F_TRIGGER_ARGS] = {"trigger_args", CHR_FT_JSON, OFF(trigger_args), NULL, 0},
    [CHR_F_TIMEZONE] = STR("timezone", timezone),
    [CHR_F_FUNC_NAME] = STR("func_name", func_name),
    [CHR_F_STATUS] = ENUM("status", status, chr_status_names),
    [CHR_F_NEXT_RUN_TIME] = TIME("next_run_time", next_run_time),
    [CHR_F_CREATED_AT] = TIME("created_at", created_at),
    [CHR_F_UPDATED_AT] = TIME("updated_at", updated_at),
    [CHR_F_MAX_RETRIES] = INT("max_retries", max_retries),
    [CHR_F_RETRY_DELAY] = INT("retry_delay_seconds", retry_delay),
    [CHR_F_RETRY_COUNT] = INT("retry_count", retry_count),
    [CHR_F_TIMEOUT] = INT("timeout_seconds", timeout),
    [CHR_F_PRIORITY] = INT("priority", priority),
    [CHR_F_IF_MISSED] = ENUM("if_missed", if_missed, chr_if_missed_names),
    [CHR_F_MISFIRE_THRESHOLD] = INT("misfire_threshold_seconds", misfire_threshold),
    [CHR_F_LAST_RUN_TIME] = TIME("last_run_time", last_run_time),
    [CHR_F_LAST_SCHEDULED_TIME] = TIME("last_scheduled_time", last_scheduled_time),
    [CHR_F_CLAIMED_BY] = STR("claimed_by", claimed_by),
    [CHR_F_LEASE_UNTIL] = TIME("lease_until", lease_until),
    [CHR_F_ATTEMPT] = INT("attempt", attempt),
};

#define FIELD_PTR(j, d) ((char *)(j) + (d)->offset)
#define STRP(j, d) ((char **)FIELD_PTR(j, d))
#define TIMEP(j, d) ((int64_t *)FIELD_PTR(j, d))
#define INTP(j, d) ((int32_t *)FIELD_PTR(j, d))
#define ENUMP(j, d) ((uint8_t *)FIELD_PTR(j, d))

static int errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int errf(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return CHR_EINVAL;
}

int chr_job_field_index(const char *name, size_t len) {
  for (int i = 0; i < CHR_F__COUNT; i++) {
    const char *n = chr_job_fields[i].name;
    if (strlen(n) == len && memcmp(n, name, len) == 0) return i;
  }
  return -1;
}

int chr_enum_parse(const char *const *names, int count, const char *s) {
  for (int i = 1; i < count; i++)
    if (strcmp(names[i], s) == 0) return i;
  return 0;
}

chr_job_t *chr_job_new(void) {
  chr_job_t *j = chr_calloc(1, sizeof *j);
  chr_job_clear(j);
  return j;
}

void chr_job_clear(chr_job_t *j) {
  for (int i = 0; i < CHR_F__COUNT; i++) {
    const chr_field_desc_t *d = &chr_job_fields[i];
    if (d->type == CHR_FT_STR || d->type == CHR_FT_JSON) {
      free(*STRP(j, d));
      *STRP(j, d) = NULL;
    }
  }
  free(j->extra);
  memset(j, 0, sizeof *j);
  j->next_run_time = j->created_at = j->updated_at = CHR_TIME_NONE;
  j->last_run_time = j->last_scheduled_time = j->lease_until = CHR_TIME_NONE;
}

void chr_job_free(chr_job_t *j) {
  if (j == NULL) return;
  chr_job_clear(j);
  free(j);
}

chr_job_t *chr_job_dup(const chr_job_t *src) {
  chr_job_t *j = chr_malloc(sizeof *j);
  memcpy(j, src, sizeof *j);
  for (int i = 0; i < CHR_F__COUNT; i++) {
    const chr_field_desc_t *d = &chr_job_fields[i];
    if (d->type == CHR_FT_STR || d->type == CHR_FT_JSON) *STRP(j, d) = chr_strdup(*STRP(src, d));
  }
  j->extra = chr_strdup(src->extra);
  return j;
}

void chr_job_set_str(chr_job_t *j, chr_field_t f, const char *s) {
  const chr_field_desc_t *d = &chr_job_fields[f];
  free(*STRP(j, d));
  *STRP(j, d) = chr_strdup(s);
  if (s) j->mask |= CHR_BIT(f);
  else j->mask &= ~CHR_BIT(f);
}

void chr_job_set_time(chr_job_t *j, chr_field_t f, int64_t us) {
  *TIMEP(j, &chr_job_fields[f]) = us;
  if (us != CHR_TIME_NONE) j->mask |= CHR_BIT(f);
  else j->mask &= ~CHR_BIT(f);
}

void chr_job_set_int(chr_job_t *j, chr_field_t f, int32_t v) {
  const chr_field_desc_t *d = &chr_job_fields[f];
  if (d->type == CHR_FT_ENUM) *ENUMP(j, d) = (uint8_t)v;
  else *INTP(j, d) = v;
  j->mask |= CHR_BIT(f);
}

int32_t chr_job_int(const chr_job_t *j, chr_field_t f, int32_t def) {
  const chr_field_desc_t *d = &chr_job_fields[f];
  if (!chr_job_has(j, f)) return def;
  return d->type == CHR_FT_ENUM ? *ENUMP(j, d) : *INTP(j, d);
}

static void clear_field(chr_job_t *j, int f) {
  const chr_field_desc_t *d = &chr_job_fields[f];
  switch (d->type) {
  case CHR_FT_STR:
  case CHR_FT_JSON:
    free(*STRP(j, d));
    *STRP(j, d) = NULL;
    break;
  case CHR_FT_TIME: *TIMEP(j, d) = CHR_TIME_NONE; break;
  case CHR_FT_INT: *INTP(j, d) = 0; break;
  case CHR_FT_ENUM: *ENUMP(j, d) = 0; break;
  }
  j->mask &= ~CHR_BIT(f);
}

/* A present field whose value is the "none" value acts as a null. */
static int field_is_null(const chr_job_t *j, int f) {
  const chr_field_desc_t *d = &chr_job_fields[f];
  if (j->nullmask & CHR_BIT(f)) return 1;
  if (d->type == CHR_FT_STR || d->type == CHR_FT_JSON) return *STRP(j, d) == NULL;
  if (d->type == CHR_FT_TIME) return *TIMEP(j, d) == CHR_TIME_NONE;
  return 0;
}

/* ---- extra members ---- */

static int span_is_null(chr_json_span_t v) {
  return v.n == 4 && memcmp(v.p, "null", 4) == 0;
}

static int find_member(const char *text, const char *key, size_t klen, chr_json_span_t *val) {
  if (text == NULL) return 0;
  const char *it = text, *end = text + strlen(text);
  chr_json_span_t k, v;
  while (chr_json_next_member(&it, end, &k, &v) == 1) {
    if (k.n == klen && memcmp(k.p, key, klen) == 0) {
      *val = v;
      return 1;
    }
  }
  return 0;
}

static int span_cmp(chr_json_span_t a, chr_json_span_t b) {
  size_t n = a.n < b.n ? a.n : b.n;
  int c = memcmp(a.p, b.p, n);
  return c ? c : (a.n > b.n) - (a.n < b.n);
}

static void add_member(chr_buf_t *b, chr_json_span_t k, chr_json_span_t v) {
  if (b->len > 1) chr_buf_addc(b, ','); /* b holds "{" and members */
  chr_buf_addc(b, '"');
  chr_buf_add(b, k.p, k.n);
  chr_buf_add(b, "\":", 2);
  chr_buf_add(b, v.p, v.n);
}

/* Merges two sorted member lists; u's members win, null removes. */
static char *merge_extra(const char *base, const char *u) {
  chr_buf_t b;
  chr_buf_init(&b);
  chr_buf_addc(&b, '{');
  const char *ia = base ? base : "{}", *ea = ia + strlen(ia);
  const char *ib = u, *eb = u + strlen(u);
  chr_json_span_t ka, va, kb, vb;
  int ra = chr_json_next_member(&ia, ea, &ka, &va);
  int rb = chr_json_next_member(&ib, eb, &kb, &vb);
  while (ra == 1 || rb == 1) {
    int c = ra != 1 ? 1 : rb != 1 ? -1 : span_cmp(ka, kb);
    if (c < 0) {
      add_member(&b, ka, va);
      ra = chr_json_next_member(&ia, ea, &ka, &va);
    } else {
      if (!span_is_null(vb)) add_member(&b, kb, vb);
      if (c == 0) ra = chr_json_next_member(&ia, ea, &ka, &va);
      rb = chr_json_next_member(&ib, eb, &kb, &vb);
    }
  }
  if (b.len == 1) {
    chr_buf_free(&b);
    return NULL;
  }
  chr_buf_addc(&b, '}');
  return chr_buf_steal(&b);
}

void chr_job_apply(chr_job_t *j, const chr_job_t *u) {
  for (int f = 0; f < CHR_F__COUNT; f++) {
    if (!((u->mask | u->nullmask) & CHR_BIT(f))) continue;
    const chr_field_desc_t *d = &chr_job_fields[f];
    if (field_is_null(u, f)) {
      clear_field(j, f);
      continue;
    }
    switch (d->type) {
    case CHR_FT_STR:
    case CHR_FT_JSON:
      free(*STRP(j, d));
      *STRP(j, d) = chr_strdup(*STRP(u, d));
      break;
    case CHR_FT_TIME: *TIMEP(j, d) = *TIMEP(u, d); break;
    case CHR_FT_INT: *INTP(j, d) = *INTP(u, d); break;
    case CHR_FT_ENUM: *ENUMP(j, d) = *ENUMP(u, d); break;
    }
    j->mask |= CHR_BIT(f);
  }
  if (u->extra) {
    char *m = merge_extra(j->extra, u->extra);
    free(j->extra);
    j->extra = m;
  }
}

int chr_job_matches(const chr_job_t *j, const chr_job_t *e) {
  for (int f = 0; f < CHR_F__COUNT; f++) {
    if (!((e->mask | e->nullmask) & CHR_BIT(f))) continue;
    const chr_field_desc_t *d = &chr_job_fields[f];
    int jnull = !chr_job_has(j, f) || field_is_null(j, f);
    if (field_is_null(e, f)) {
      if (!jnull) return 0;
      continue;
    }
    if (jnull) return 0;
    switch (d->type) {
    case CHR_FT_STR:
    case CHR_FT_JSON:
      if (strcmp(*STRP(j, d), *STRP(e, d)) != 0) return 0;
      break;
    case CHR_FT_TIME:
      if (*TIMEP(j, d) != *TIMEP(e, d)) return 0;
      break;
    case CHR_FT_INT:
      if (*INTP(j, d) != *INTP(e, d)) return 0;
      break;
    case CHR_FT_ENUM:
      if (*ENUMP(j, d) != *ENUMP(e, d)) return 0;
      break;
    }
  }
  if (e->extra) {
    const char *it = e->extra, *end = it + strlen(it);
    chr_json_span_t k, v, have;
    while (chr_json_next_member(&it, end, &k, &v) == 1) {
      int found = find_member(j->extra, k.p, k.n, &have);
      if (span_is_null(v)) {
        if (found) return 0;
      } else if (!found || have.n != v.n || memcmp(have.p, v.p, v.n) != 0) {
        return 0;
      }
    }
  }
  return 1;
}

int chr_job_extra_lookup(const chr_job_t *j, const char *path, const char **val,
                         size_t *len) {
  chr_json_span_t v;
  if (j->extra == NULL || !chr_json_lookup(j->extra, strlen(j->extra), path, &v)) return 0;
  *val = v.p;
  *len = v.n;
  return 1;
}

/* ---- Lua ---- */

/* next_run_time_local is derived from next_run_time and timezone: never
 * stored (it would go stale), computed whenever a job is handed out. */
#define DERIVED_LOCAL "next_run_time_local"

static int is_derived(const char *k, size_t n) {
  return n == sizeof DERIVED_LOCAL - 1 && memcmp(k, DERIVED_LOCAL, n) == 0;
}

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
  lua_setfield(L, -2, DERIVED_LOCAL);
}

static int is_null(lua_State *L, int idx) {
  return lua_islightuserdata(L, idx) && lua_touserdata(L, idx) == NULL;
}

/* ---- the values a job may hold ---- */

/* The length of the UTF-8 sequence at s (1 to 4 bytes), or 0 when it is
 * not valid UTF-8: truncated, overlong, a surrogate or past U+10FFFF, all
 * of which JSON text and PostgreSQL refuse. */
static size_t utf8_len(const unsigned char *s, size_t n) {
  unsigned c = s[0], cp, min;
  size_t len;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F, min = 0x80;
  else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F, min = 0x800;
  else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07, min = 0x10000;
  else return 0;
  if (n < len) return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    cp = cp << 6 | (s[i] & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

const char *chr_job_string_problem(const char *s, size_t n, char *buf, size_t buflen) {
  const unsigned char *u = (const unsigned char *)s;
  for (size_t i = 0; i < n;) {
    if (u[i] >= 0x01 && u[i] < 0x80) { /* the common case */
      i++;
      continue;
    }
    if (u[i] == 0) {
      snprintf(buf, buflen, "a NUL byte (byte %zu) cannot be stored", i + 1);
      return buf;
    }
    size_t k = utf8_len(u + i, n - i);
    if (k == 0) {
      snprintf(buf, buflen, "not valid UTF-8 (byte %zu)", i + 1);
      return buf;
    }
    i += k;
  }
  return NULL;
}

/* Appends s to a path as a reader can see it: bytes that are not printable
 * UTF-8 as \0 or \xNN, so that the message itself is valid text. */
static void add_shown(chr_buf_t *b, const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  for (size_t i = 0; i < n;) {
    size_t k = u[i] >= 0x20 && u[i] != 0x7F ? utf8_len(u + i, n - i) : 0;
    if (k > 0) {
      chr_buf_add(b, s + i, k);
      i += k;
    } else {
      if (u[i] == 0) chr_buf_add(b, "\\0", 2);
      else chr_buf_printf(b, "\\x%02x", u[i]);
      i++;
    }
  }
}

void chr_job_add_shown(chr_buf_t *b, const char *s, size_t n) {
  add_shown(b, s, n);
}

typedef struct vcheck {
  lua_State *L;
  chr_buf_t *path;
  char *err;
  size_t errlen;
  int depth;
} vcheck_t;

static int vfail(vcheck_t *c, const char *what) {
  snprintf(c->err, c->errlen, "%s", what);
  return CHR_EINVAL;
}

static int check_value(vcheck_t *c, int idx);

/* Checks the key at k and the value at v; the path grows by the key (and
 * keeps it when the check fails, to name the culprit). */
static int check_member(vcheck_t *c, int k, int v) {
  lua_State *L = c->L;
  char msg[80];
  if (lua_type(L, k) == LUA_TSTRING) {
    size_t n;
    const char *s = lua_tolstring(L, k, &n);
    if (c->path->len > 0) chr_buf_addc(c->path, '.');
    add_shown(c->path, s, n);
    const char *bad = chr_job_string_problem(s, n, msg, sizeof msg);
    if (bad) return vfail(c, bad);
  } else if (lua_isinteger(L, k)) {
    chr_buf_printf(c->path, "[%lld]", (long long)lua_tointeger(L, k));
  } else if (lua_type(L, k) == LUA_TNUMBER) {
    chr_buf_printf(c->path, "[%.17g]", lua_tonumber(L, k));
  } else {
    snprintf(msg, sizeof msg, "a key of type %s cannot be stored", luaL_typename(L, k));
    return vfail(c, msg);
  }
  return check_value(c, v);
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
    size_t at = c->path->len;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      int rc = check_member(c, lua_gettop(L) - 1, lua_gettop(L));
      if (rc != 0) {
        lua_pop(L, 2);
        return rc;
      }
      lua_pop(L, 1);
      c->path->len = at;
      c->path->p[at] = '\0';
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
  vcheck_t c = {L, path, err, errlen, 0};
  if (path->p == NULL) chr_buf_adds(path, ""); /* p is never NULL below */
  return check_value(&c, lua_absindex(L, idx));
}

int chr_job_check_fields(lua_State *L, int idx, char *err, size_t errlen) {
  idx = lua_absindex(L, idx);
  if (!lua_istable(L, idx))
    return errf(err, errlen, "a job must be a table, got %s", luaL_typename(L, idx));
  luaL_checkstack(L, 4, "job");
  chr_buf_t path;
  char msg[80];
  vcheck_t c = {L, &path, msg, sizeof msg, 1}; /* the job is the first level */
  int rc = 0;
  chr_buf_init(&path);
  chr_buf_adds(&path, "");
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t n = 0;
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &n) : NULL;
    if ((k == NULL || !is_derived(k, n)) &&
        (rc = check_member(&c, lua_gettop(L) - 1, lua_gettop(L))) != 0) {
      lua_pop(L, 2);
      errf(err, errlen, "invalid field '%s': %s", path.p, msg);
      break;
    }
    lua_pop(L, 1);
    path.len = 0;
    path.p[0] = '\0';
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
    clear_field(j, f);
    j->nullmask |= CHR_BIT(f);
    return 0;
  }
  switch (d->type) {
  case CHR_FT_STR: {
    if (lua_type(L, idx) != LUA_TSTRING) {
      *rc = errf(err, errlen, "invalid field '%s': expected a string, got %s", d->name,
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
        *rc = errf(err, errlen, "invalid field '%s': %lld microseconds is out of range (times "
                   "are " CHR_TIME_RANGE ")", d->name, (long long)us);
        return 0;
      }
    } else if (lua_type(L, idx) == LUA_TSTRING) {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      char msg[256];
      if (chr_time_parse(s, n, NULL, &us, msg, sizeof msg) != 0) {
        *rc = errf(err, errlen, "invalid field '%s': %s", d->name, msg);
        return 0;
      }
    } else {
      *rc = errf(err, errlen, "invalid field '%s': expected an ISO-8601 time, got %s",
                 d->name, luaL_typename(L, idx));
      return 0;
    }
    *TIMEP(j, d) = us;
    break;
  }
  case CHR_FT_INT: {
    if (lua_type(L, idx) != LUA_TNUMBER) {
      *rc = errf(err, errlen, "invalid field '%s': expected an integer, got %s", d->name,
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
      if (s) *rc = errf(err, errlen, "invalid field '%s': unknown value '%s' (expected one of %s)",
                        d->name, s, b.p);
      else *rc = errf(err, errlen, "invalid field '%s': expected one of %s, got %s", d->name,
                      b.p, luaL_typename(L, idx));
      chr_buf_free(&b);
      return 0;
    }
    *ENUMP(j, d) = (uint8_t)v;
    break;
  }
  case CHR_FT_JSON: {
    if (!lua_istable(L, idx)) {
      *rc = errf(err, errlen, "invalid field '%s': expected a table, got %s", d->name,
                 luaL_typename(L, idx));
      return 0;
    }
    chr_buf_t b;
    char msg[200];
    chr_buf_init(&b);
    if (chr_json_encode(L, idx, &b, msg, sizeof msg) != 0) {
      chr_buf_free(&b);
      *rc = errf(err, errlen, "invalid field '%s': %s", d->name, msg);
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
  if (!lua_istable(L, idx)) return errf(err, errlen, "a job must be a table, got %s",
                                        luaL_typename(L, idx));
  /* Every store goes through here: one rule for the values they keep. */
  int rc = chr_job_check_fields(L, idx, err, errlen);
  if (rc != 0) return rc;
  luaL_checkstack(L, 6, "job");
  lua_newtable(L); /* stack: extra */
  int extra = lua_gettop(L), nextra = 0;
  lua_pushnil(L);
  while (rc == 0 && lua_next(L, idx)) {
    /* stack: extra key value */
    int f = -1;
    if (lua_type(L, -2) == LUA_TSTRING) {
      size_t n;
      const char *k = lua_tolstring(L, -2, &n);
      if (is_derived(k, n)) {
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
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, extra);
      nextra++;
    } else {
      lua_pop(L, 1);
    }
  }
  if (rc != 0) {
    lua_settop(L, extra - 1);
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
      lua_settop(L, extra - 1);
      return errf(err, errlen, "invalid job: %s", msg);
    }
    j->extra = chr_buf_steal(&b);
  }
  lua_settop(L, extra - 1);
  if (!partial) {
    if (!chr_job_has(j, CHR_F_JOB_ID))
      return errf(err, errlen, "invalid job: field 'job_id' is required");
    if (!chr_job_has(j, CHR_F_STATUS))
      return errf(err, errlen, "invalid job: field 'status' is required");
  }
  return 0;
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
        if (!span_is_null(v)) continue;
        lua_pushlstring(L, k.p, k.n);
        lua_pushlightuserdata(L, NULL);
        lua_rawset(L, -3);
      }
    }
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

/* ---- JSON ---- */

void chr_job_to_json(const chr_job_t *j, chr_buf_t *out) {
  char tb[CHR_TIME_BUFSZ];
  int first = 1;
  chr_buf_addc(out, '{');
  for (int f = 0; f < CHR_F__COUNT; f++) {
    if (!chr_job_has(j, f)) continue;
    const chr_field_desc_t *d = &chr_job_fields[f];
    if (d->type == CHR_FT_TIME && *TIMEP(j, d) == CHR_TIME_NONE) continue;
    if ((d->type == CHR_FT_STR || d->type == CHR_FT_JSON) && *STRP(j, d) == NULL) continue;
    if (!first) chr_buf_addc(out, ',');
    first = 0;
    chr_buf_printf(out, "\"%s\":", d->name);
    switch (d->type) {
    case CHR_FT_STR: chr_json_add_string(out, *STRP(j, d), strlen(*STRP(j, d))); break;
    case CHR_FT_JSON: chr_buf_adds(out, *STRP(j, d)); break;
    case CHR_FT_TIME:
      chr_time_format(*TIMEP(j, d), tb);
      chr_json_add_string(out, tb, strlen(tb));
      break;
    case CHR_FT_INT: chr_buf_printf(out, "%d", (int)*INTP(j, d)); break;
    case CHR_FT_ENUM:
      chr_buf_printf(out, "\"%s\"", d->enum_names[*ENUMP(j, d)]);
      break;
    }
  }
  if (j->extra) {
    const char *it = j->extra, *end = it + strlen(it);
    chr_json_span_t k, v;
    while (chr_json_next_member(&it, end, &k, &v) == 1) {
      if (!first) chr_buf_addc(out, ',');
      first = 0;
      chr_buf_addc(out, '"');
      chr_buf_add(out, k.p, k.n);
      chr_buf_add(out, "\":", 2);
      chr_buf_add(out, v.p, v.n);
    }
  }
  chr_buf_addc(out, '}');
}

/* Reads one typed field from JSON text; returns 1 when it belongs in extra. */
static int field_from_json(chr_job_t *j, int f, chr_json_span_t v, char *err, size_t errlen,
                           int *rc) {
  const chr_field_desc_t *d = &chr_job_fields[f];
  *rc = 0;
  if (span_is_null(v)) return 0;
  switch (d->type) {
  case CHR_FT_JSON:
    if (v.p[0] != '{') return 1;
    free(*STRP(j, d));
    *STRP(j, d) = chr_strndup(v.p, v.n);
    break;
  case CHR_FT_INT: {
    char tmp[32];
    if (v.n >= sizeof tmp) return 1;
    memcpy(tmp, v.p, v.n);
    tmp[v.n] = '\0';
    char *e;
    long long x = strtoll(tmp, &e, 10);
    if (*e != '\0' || x < INT32_MIN || x > INT32_MAX) return 1;
    *INTP(j, d) = (int32_t)x;
    break;
  }
  default: {
    char *s = chr_json_unescape(v.p, v.n);
    if (s == NULL) {
      if (d->type == CHR_FT_TIME && v.p[0] != '"') { /* integer µs */
        *TIMEP(j, d) = strtoll(v.p, NULL, 10);
        break;
      }
      *rc = errf(err, errlen, "invalid field '%s': expected a string", d->name);
      return 0;
    }
    if (d->type == CHR_FT_STR) {
      free(*STRP(j, d));
      *STRP(j, d) = s;
    } else if (d->type == CHR_FT_TIME) {
      char msg[200];
      if (chr_time_parse(s, strlen(s), NULL, TIMEP(j, d), msg, sizeof msg) != 0)
        *rc = errf(err, errlen, "invalid field '%s': %s", d->name, msg);
      free(s);
      if (*rc) return 0;
    } else {
      int e = chr_enum_parse(d->enum_names, d->enum_count, s);
      if (e == 0) *rc = errf(err, errlen, "invalid field '%s': unknown value '%s'", d->name, s);
      free(s);
      if (*rc) return 0;
      *ENUMP(j, d) = (uint8_t)e;
    }
  }
  }
  j->mask |= CHR_BIT(f);
  return 0;
}

/* The error for a record that is not JSON chronis reads, naming the job
 * (read already, or found by its key: this is only for the message) and
 * the member where reading stopped. */
static int malformed(const chr_job_t *j, const char *s, size_t len, chr_json_span_t k,
                     char *err, size_t errlen) {
  chr_buf_t b;
  chr_buf_init(&b);
  chr_buf_adds(&b, "invalid job record");
  const char *id = chr_job_has(j, CHR_F_JOB_ID) ? j->job_id : NULL;
  size_t idn = id ? strlen(id) : 0;
  if (id == NULL) {
    static const char key[] = "\"job_id\":\"";
    const char *at = memmem(s, len, key, sizeof key - 1);
    if (at) {
      id = at + sizeof key - 1;
      const char *q = memchr(id, '"', (size_t)(s + len - id));
      idn = q ? (size_t)(q - id) : 0;
    }
  }
  if (idn > 0) {
    chr_buf_adds(&b, " of job '");
    chr_job_add_shown(&b, id, idn);
    chr_buf_addc(&b, '\'');
  }
  if (k.p) {
    chr_buf_adds(&b, ": member '");
    chr_job_add_shown(&b, k.p, k.n);
    chr_buf_adds(&b, "' is not valid JSON");
  } else {
    chr_buf_adds(&b, ": malformed JSON");
  }
  errf(err, errlen, "%s", b.p);
  chr_buf_free(&b);
  return CHR_EINVAL;
}

int chr_job_from_json(chr_job_t *j, const char *s, size_t len, char *err, size_t errlen) {
  const char *it = s, *end = s + len;
  chr_json_span_t k, v;
  chr_buf_t extra;
  int r, rc = 0;
  while (it < end && *it != '{') it++;
  chr_buf_init(&extra);
  chr_buf_addc(&extra, '{');
  for (;;) {
    k.p = NULL; /* set by next_member once it has read a key */
    if (rc != 0 || (r = chr_json_next_member(&it, end, &k, &v)) != 1) break;
    if (is_derived(k.p, k.n)) continue;
    int f = chr_job_field_index(k.p, k.n);
    if (f < 0 || field_from_json(j, f, v, err, errlen, &rc)) {
      if (rc == 0 && !span_is_null(v)) add_member(&extra, k, v);
    }
  }
  /* The scanner accepts exactly what the decoder decodes: a record read
   * here never loses a member later, when its fields are decoded. */
  if (rc == 0 && r < 0) rc = malformed(j, s, len, k, err, errlen);
  free(j->extra);
  j->extra = NULL;
  if (rc == 0 && extra.len > 1) {
    chr_buf_addc(&extra, '}');
    j->extra = chr_buf_steal(&extra);
  }
  chr_buf_free(&extra);
  return rc;
}

/* ---- validation ---- */

static int check_id(const char *id, char *err, size_t errlen) {
  size_t n = strlen(id);
  if (n == 0) return errf(err, errlen, "invalid field 'job_id': must not be empty");
  if (n > 255)
    return errf(err, errlen, "invalid field 'job_id': %zu bytes is longer than 255", n);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)id[i];
    if (c < 0x20 || c == 0x7f)
      return errf(err, errlen, "invalid field 'job_id': control character at byte %zu",
                  i + 1);
  }
  return 0;
}

static int check_range(const chr_job_t *j, chr_field_t f, int32_t lo, int32_t hi, char *err,
                       size_t errlen) {
  if (!chr_job_has(j, f)) return 0;
  int32_t v = *INTP(j, &chr_job_fields[f]);
  if (v < lo || v > hi) {
    if (hi == INT32_MAX)
      return errf(err, errlen, "invalid field '%s': %d must be >= %d", chr_job_fields[f].name,
                  (int)v, (int)lo);
    return errf(err, errlen, "invalid field '%s': %d is out of range %d-%d",
                chr_job_fields[f].name, (int)v, (int)lo, (int)hi);
  }
  return 0;
}

/* Integer fields a job may carry in extra only when they did not fit: at
 * the scheduler level that is an error naming the field. */
static int check_extra_ints(const chr_job_t *j, char *err, size_t errlen) {
  static const chr_field_t ints[] = {CHR_F_MAX_RETRIES, CHR_F_RETRY_DELAY, CHR_F_TIMEOUT,
                                     CHR_F_PRIORITY, CHR_F_MISFIRE_THRESHOLD};
  chr_json_span_t v;
  for (size_t i = 0; i < sizeof ints / sizeof *ints; i++) {
    const char *n = chr_job_fields[ints[i]].name;
    if (find_member(j->extra, n, strlen(n), &v))
      return errf(err, errlen, "invalid field '%s': %.*s is not a 32-bit integer", n,
                  (int)v.n, v.p);
  }
  return 0;
}

int chr_job_validate(chr_job_t *j, char *err, size_t errlen) {
  int rc;
  if (!chr_job_has(j, CHR_F_FUNC_NAME) || j->func_name[0] == '\0')
    return errf(err, errlen, "invalid field 'func_name': a handler name is required");
  if (!chr_job_has(j, CHR_F_JOB_ID))
    return errf(err, errlen, "invalid field 'job_id': missing");
  if ((rc = check_id(j->job_id, err, errlen))) return rc;
  if ((rc = check_extra_ints(j, err, errlen))) return rc;
  if (!chr_job_has(j, CHR_F_NAME)) {
    char *n = chr_job_make_name(j->func_name);
    chr_job_set_str(j, CHR_F_NAME, n);
    free(n);
  }
  if (!chr_job_has(j, CHR_F_TIMEZONE)) chr_job_set_str(j, CHR_F_TIMEZONE, "UTC");
  char msg[200];
  if (chr_tz_get(j->timezone, msg, sizeof msg) == NULL)
    return errf(err, errlen, "invalid field 'timezone': %s", msg);
  if (!chr_job_has(j, CHR_F_TRIGGER_TYPE))
    return errf(err, errlen, "invalid field 'trigger_type': missing (interval, cron or date)");
  chr_trigger_t t;
  if ((rc = chr_trigger_compile(j, &t, err, errlen))) return rc;
  chr_trigger_free(&t);
  if ((rc = check_range(j, CHR_F_PRIORITY, 0, 10, err, errlen))) return rc;
  if ((rc = check_range(j, CHR_F_MAX_RETRIES, 0, INT32_MAX, err, errlen))) return rc;
  if ((rc = check_range(j, CHR_F_RETRY_DELAY, 0, INT32_MAX, err, errlen))) return rc;
  if ((rc = check_range(j, CHR_F_RETRY_COUNT, 0, INT32_MAX, err, errlen))) return rc;
  if ((rc = check_range(j, CHR_F_TIMEOUT, 0, INT32_MAX, err, errlen))) return rc;
  if ((rc = check_range(j, CHR_F_MISFIRE_THRESHOLD, 0, INT32_MAX, err, errlen))) return rc;
  if (!chr_job_has(j, CHR_F_PRIORITY)) chr_job_set_int(j, CHR_F_PRIORITY, 5);
  if (!chr_job_has(j, CHR_F_MAX_RETRIES)) chr_job_set_int(j, CHR_F_MAX_RETRIES, 0);
  if (!chr_job_has(j, CHR_F_RETRY_DELAY)) chr_job_set_int(j, CHR_F_RETRY_DELAY, 60);
  if (!chr_job_has(j, CHR_F_RETRY_COUNT)) chr_job_set_int(j, CHR_F_RETRY_COUNT, 0);
  if (!chr_job_has(j, CHR_F_MISFIRE_THRESHOLD)) chr_job_set_int(j, CHR_F_MISFIRE_THRESHOLD, 60);
  if (!chr_job_has(j, CHR_F_IF_MISSED))
    chr_job_set_int(j, CHR_F_IF_MISSED,
                    j->trigger_type == CHR_TT_CRON ? CHR_MISS_SKIP : CHR_MISS_RUN_ONCE);
  return 0;
}

char *chr_job_make_id(const char *func_name, int64_t now) {
  static uint64_t state;
  chr_civil_t c;
  if (state == 0) state = (uint64_t)chr_time_now() ^ (uint64_t)chr_time_mono() << 17 ^
                          (uint64_t)(uintptr_t)&state;
  /* xorshift64*: ids only need to be unlikely to collide, not secret. */
  state ^= state >> 12;
  state ^= state << 25;
  state ^= state >> 27;
  uint32_t r = (uint32_t)((state * 2685821657736338717ULL) >> 32);
  chr_us_to_civil(now, &c);
  return chr_sprintf("%s_%04d%02d%02d_%02d%02d%02d_%08x", func_name, c.year, c.month, c.day,
                     c.hour, c.minute, c.second, r);
}

char *chr_job_make_name(const char *func_name) {
  char *n = chr_strdup(func_name);
  int start = 1;
  for (char *p = n; *p; p++) {
    if (*p == '_' || *p == '.' || *p == '-') {
      *p = ' ';
      start = 1;
    } else if (start) {
      if (*p >= 'a' && *p <= 'z') *p = (char)(*p - 'a' + 'A');
      start = 0;
    }
  }
  return n;
}
