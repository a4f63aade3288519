/* json.c - Lua values to and from JSON text: a direct recursive encoder
 * and decoder (the job record's free-form fields are small documents, so
 * no intermediate tree), over the scanner of core/json.c. */
#include "json.h"

#include "job.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct enc {
  lua_State *L;
  chr_buf_t *out;
  char *err;
  size_t errlen;
  int depth;
} enc_t;



static void add_number(chr_buf_t *out, lua_State *L, int idx) {
  if (lua_isinteger(L, idx)) chr_buf_printf(out, "%lld", (long long)lua_tointeger(L, idx));
  else chr__json_add_double(out, lua_tonumber(L, idx));
}

static int enc_value(enc_t *e, int idx);

/* Array when the keys are exactly 1..n with n >= 1. */
static lua_Integer array_length(lua_State *L, int idx) {
  lua_Integer n = 0, max = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1) {
      lua_pop(L, 1);
      return -1;
    }
    lua_Integer k = lua_tointeger(L, -1);
    if (k > max) max = k;
    n++;
  }
  return n > 0 && n == max ? n : -1;
}

typedef struct key_ent {
  chr_json_span_t key;  /* first: chr_json_key_cmp */
  lua_Integer slot; /* the original key is keys[slot] */
} key_ent_t;

/* An object of up to 16 string keys, the common case (trigger_args,
 * metadata), sorted in place: a string key stays alive in the table being
 * encoded, so no table of keys is needed. Returns 1 when the object is
 * not of that kind (nothing written). */
#define ENC_FEW 16
static int enc_few_keys(enc_t *e, int idx, int *rc) {
  lua_State *L = e->L;
  chr_json_span_t keys[ENC_FEW];
  size_t count = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING || count == ENC_FEW) {
      lua_pop(L, 1);
      return 1;
    }
    keys[count].p = lua_tolstring(L, -1, &keys[count].n);
    count++;
  }
  qsort(keys, count, sizeof *keys, chr_json_key_cmp);
  *rc = 0;
  chr_buf_addc(e->out, '{');
  for (size_t i = 0; i < count && *rc == 0; i++) {
    if (i) chr_buf_addc(e->out, ',');
    chr_json_add_string(e->out, keys[i].p, keys[i].n);
    chr_buf_addc(e->out, ':');
    lua_pushlstring(L, keys[i].p, keys[i].n);
    lua_rawget(L, idx);
    *rc = enc_value(e, lua_gettop(L));
    lua_pop(L, 1);
  }
  chr_buf_addc(e->out, '}');
  return 0;
}

/* Objects are written with sorted keys: the text is canonical. */
static int enc_object(enc_t *e, int idx) {
  lua_State *L = e->L;
  int few_rc;
  if (enc_few_keys(e, idx, &few_rc) == 0) return few_rc;
  lua_newtable(L); /* stack: keys = {str1, key1, str2, key2, ...} */
  int keys = lua_gettop(L);
  lua_Integer n = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    int kt = lua_type(L, -1);
    if (kt != LUA_TSTRING && kt != LUA_TNUMBER) {
      snprintf(e->err, e->errlen, "cannot encode a table key of type %s",
               luaL_typename(L, -1));
      lua_pop(L, 2);
      return CHR_EINVAL;
    }
    lua_pushvalue(L, -1);
    lua_tolstring(L, -1, NULL); /* converts the copy only */
    lua_rawseti(L, keys, ++n);
    lua_pushvalue(L, -1);
    lua_rawseti(L, keys, ++n);
  }
  size_t count = (size_t)n / 2;
  key_ent_t stackents[16];
  key_ent_t *ents = count <= 16 ? stackents : chr_malloc(count * sizeof *ents);
  for (size_t i = 0; i < count; i++) {
    lua_rawgeti(L, keys, (lua_Integer)(2 * i + 1));
    ents[i].key.p = lua_tolstring(L, -1, &ents[i].key.n);
    ents[i].slot = (lua_Integer)(2 * i + 2);
    lua_pop(L, 1); /* still anchored in keys */
  }
  qsort(ents, count, sizeof *ents, chr_json_key_cmp);
  int rc = 0;
  chr_buf_addc(e->out, '{');
  for (size_t i = 0; i < count && rc == 0; i++) {
    if (i) chr_buf_addc(e->out, ',');
    chr_json_add_string(e->out, ents[i].key.p, ents[i].key.n);
    chr_buf_addc(e->out, ':');
    lua_rawgeti(L, keys, ents[i].slot);
    lua_rawget(L, idx);
    rc = enc_value(e, lua_gettop(L));
    lua_pop(L, 1);
  }
  chr_buf_addc(e->out, '}');
  if (ents != stackents) free(ents);
  lua_pop(L, 1); /* keys */
  return rc;
}

static int enc_value(enc_t *e, int idx) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
  case LUA_TNIL: chr_buf_adds(e->out, "null"); return 0;
  case LUA_TBOOLEAN:
    chr_buf_adds(e->out, lua_toboolean(L, idx) ? "true" : "false");
    return 0;
  case LUA_TNUMBER: {
    if (!lua_isinteger(L, idx)) {
      double d = lua_tonumber(L, idx);
      if (isnan(d) || isinf(d)) {
        snprintf(e->err, e->errlen, "cannot encode %s", isnan(d) ? "NaN" : "infinity");
        return CHR_EINVAL;
      }
    }
    add_number(e->out, L, idx);
    return 0;
  }
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    chr_json_add_string(e->out, s, n);
    return 0;
  }
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, idx) == NULL) {
      chr_buf_adds(e->out, "null");
      return 0;
    }
    break;
  case LUA_TTABLE: {
    chr_lua_job_materialize(L, idx); /* a handler's job table holds all its fields */
    if (++e->depth > CHR_JSON_MAX_DEPTH) {
      snprintf(e->err, e->errlen, "cannot encode a table nested deeper than %d levels "
               "(a cycle?)", CHR_JSON_MAX_DEPTH);
      return CHR_EINVAL;
    }
    luaL_checkstack(L, 8, "json encode");
    lua_Integer n = array_length(L, idx);
    int rc = 0;
    if (n > 0) {
      chr_buf_addc(e->out, '[');
      for (lua_Integer i = 1; i <= n && rc == 0; i++) {
        if (i > 1) chr_buf_addc(e->out, ',');
        lua_rawgeti(L, idx, i);
        rc = enc_value(e, lua_gettop(L));
        lua_pop(L, 1);
      }
      chr_buf_addc(e->out, ']');
    } else {
      rc = enc_object(e, idx);
    }
    e->depth--;
    return rc;
  }
  default: break;
  }
  snprintf(e->err, e->errlen, "cannot encode a value of type %s", luaL_typename(L, idx));
  return CHR_EINVAL;
}

int chr_json_encode(lua_State *L, int idx, chr_buf_t *out, char *err, size_t errlen) {
  enc_t e = {L, out, err, errlen, 0};
  return enc_value(&e, lua_absindex(L, idx));
}

/* ---- decoding ---- */

typedef struct dec {
  lua_State *L;
  const char *p, *end;
  char *err;
  size_t errlen;
  int depth;
} dec_t;

static int dec_fail(dec_t *d, const char *what) {
  snprintf(d->err, d->errlen, "invalid JSON: %s", what);
  return CHR_EINVAL;
}



/* Pushes the string at d->p (opening quote). Fast path without escapes. */
static int dec_string(dec_t *d) {
  const char *s = d->p + 1, *p = s;
  while (p < d->end && *p != '"' && *p != '\\' && *p != '\0') p++;
  if (p < d->end && *p == '"') {
    lua_pushlstring(d->L, s, (size_t)(p - s));
    d->p = p + 1;
    return 0;
  }
  chr_buf_t b;
  chr_buf_init(&b);
  if (chr__json_string(d->p, d->end, &b, &d->p) != 0) {
    chr_buf_free(&b);
    return dec_fail(d, "bad string");
  }
  lua_pushlstring(d->L, b.p ? b.p : "", b.len);
  chr_buf_free(&b);
  return 0;
}

static int dec_value(dec_t *d);

/* Reads a container's members into the table on top of the stack. */
static int dec_members(dec_t *d, int obj);

static int dec_container(dec_t *d, int obj) {
  if (++d->depth > CHR_JSON_MAX_DEPTH) return dec_fail(d, "nested too deep");
  luaL_checkstack(d->L, 6, "json decode");
  lua_newtable(d->L);
  return dec_members(d, obj);
}

static int dec_members(dec_t *d, int obj) {
  lua_State *L = d->L;
  d->p = chr__json_ws(d->p + 1, d->end);
  char close = obj ? '}' : ']';
  lua_Integer i = 0;
  if (d->p < d->end && *d->p == close) {
    d->p++;
    d->depth--;
    return 0;
  }
  for (;;) {
    if (obj) {
      d->p = chr__json_ws(d->p, d->end);
      if (d->p >= d->end || *d->p != '"') return dec_fail(d, "expected a key");
      if (dec_string(d)) return CHR_EINVAL;
      d->p = chr__json_ws(d->p, d->end);
      if (d->p >= d->end || *d->p != ':') return dec_fail(d, "expected ':'");
      d->p++;
    }
    if (dec_value(d)) return CHR_EINVAL;
    if (obj) {
      if (lua_isnil(L, -1) || (lua_islightuserdata(L, -1) && !lua_touserdata(L, -1)))
        lua_pop(L, 2); /* null members are dropped */
      else
        lua_rawset(L, -3);
    } else {
      lua_rawseti(L, -2, ++i);
    }
    d->p = chr__json_ws(d->p, d->end);
    if (d->p >= d->end) return dec_fail(d, "unexpected end");
    if (*d->p == close) {
      d->p++;
      break;
    }
    if (*d->p != ',') return dec_fail(d, "expected ',' or a closing bracket");
    d->p++;
  }
  d->depth--;
  return 0;
}



/* Steps over the literal w when the input starts with it. */
static int dec_word(dec_t *d, const char *w) {
  size_t n = strlen(w);
  if ((size_t)(d->end - d->p) < n || memcmp(d->p, w, n) != 0) return 0;
  d->p += n;
  return 1;
}

static int dec_value(dec_t *d) {
  lua_State *L = d->L;
  d->p = chr__json_ws(d->p, d->end);
  if (d->p >= d->end) return dec_fail(d, "unexpected end");
  switch (*d->p) {
  case '"': return dec_string(d);
  case '{': return dec_container(d, 1);
  case '[': return dec_container(d, 0);
  case 't':
  case 'f':
  case 'n':
    if (dec_word(d, "true")) lua_pushboolean(L, 1);
    else if (dec_word(d, "false")) lua_pushboolean(L, 0);
    else if (dec_word(d, "null")) lua_pushlightuserdata(L, NULL);
    else break;
    return 0;
  default: {
    int isfloat;
    const char *s = d->p, *e = chr__json_skip_number(s, d->end, &isfloat);
    if (e == NULL) {
      if (*s == '-' || (*s >= '0' && *s <= '9'))
        return dec_fail(d, "bad number (malformed, or beyond the range of a double)");
      break;
    }
    long long i;
    double f;
    if (chr__json_number(s, (size_t)(e - s), isfloat, &i, &f)) lua_pushinteger(L, (lua_Integer)i);
    else lua_pushnumber(L, f);
    d->p = e;
    return 0;
  }
  }
  return dec_fail(d, "unexpected character");
}

int chr_json_decode_into(lua_State *L, int idx, const char *s, size_t len, char *err,
                         size_t errlen) {
  dec_t d = {L, s, s + len, err, errlen, 1};
  int top = lua_gettop(L);
  d.p = chr__json_ws(d.p, d.end);
  if (d.p >= d.end || *d.p != '{') return dec_fail(&d, "expected an object");
  lua_pushvalue(L, idx);
  int rc = dec_members(&d, 1);
  lua_settop(L, top);
  if (rc == 0) {
    d.p = chr__json_ws(d.p, d.end);
    if (d.p != d.end) rc = dec_fail(&d, "trailing characters");
  }
  return rc;
}

int chr_json_decode(lua_State *L, const char *s, size_t len, char *err, size_t errlen) {
  dec_t d = {L, s, s + len, err, errlen, 0};
  int top = lua_gettop(L);
  if (dec_value(&d) == 0) {
    d.p = chr__json_ws(d.p, d.end);
    if (d.p == d.end) return 0;
    dec_fail(&d, "trailing characters");
  }
  lua_settop(L, top);
  return CHR_EINVAL;
}

