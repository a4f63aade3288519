/* json.c - JSON text <-> Lua values, and a span scanner for the C side.
 * Written for the job record's free-form fields: small documents, so a
 * direct recursive encoder/decoder without an intermediate tree. */
#include "json.h"

#include <lauxlib.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 100

/* ---- encoding ---- */

typedef struct enc {
  lua_State *L;
  chr_buf_t *out;
  char *err;
  size_t errlen;
  int depth;
} enc_t;

void chr_json_add_string(chr_buf_t *out, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  chr_buf_reserve(out, n + 2);
  chr_buf_addc(out, '"');
  size_t run = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    chr_buf_add(out, s + run, i - run);
    run = i + 1;
    switch (c) {
    case '"': chr_buf_add(out, "\\\"", 2); break;
    case '\\': chr_buf_add(out, "\\\\", 2); break;
    case '\n': chr_buf_add(out, "\\n", 2); break;
    case '\r': chr_buf_add(out, "\\r", 2); break;
    case '\t': chr_buf_add(out, "\\t", 2); break;
    default: {
      char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
      chr_buf_add(out, u, 6);
    }
    }
  }
  chr_buf_add(out, s + run, n - run);
  chr_buf_addc(out, '"');
}

/* A float, written so that reading it back gives the same value on every
 * store, PostgreSQL included, whose jsonb prints numbers in plain decimal
 * (1e100 as 1 and 100 zeros, 1.5e-07 as 0.00000015):
 * - an integral float below 1e19 in magnitude in full digits, as an integer
 *   ("%.0f" is exact there): 1.0 and 1 encode alike, and one that fits 64
 *   bits reads back as the integer of the same value (2^63 does not fit and
 *   reads back as a float); -0.0 as 0;
 * - any other float with 17 significant digits: it reads back as the same
 *   double in whatever form a store rewrote it, since a fraction keeps a
 *   decimal point and an integral float of 1e19 or more is too large for
 *   an integer. */
static void add_double(chr_buf_t *out, double d) {
  if (d == 0) {
    chr_buf_addc(out, '0');
    return;
  }
  if (d == floor(d) && fabs(d) < 1e19) {
    chr_buf_printf(out, "%.0f", d);
    return;
  }
  char tmp[32];
  snprintf(tmp, sizeof tmp, "%.17g", d);
  chr_buf_adds(out, tmp);
}

static void add_number(chr_buf_t *out, lua_State *L, int idx) {
  if (lua_isinteger(L, idx)) chr_buf_printf(out, "%lld", (long long)lua_tointeger(L, idx));
  else add_double(out, lua_tonumber(L, idx));
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
  const char *s;
  size_t n;
  lua_Integer slot; /* the original key is keys[slot] */
} key_ent_t;

static int key_cmp(const void *a, const void *b) {
  const key_ent_t *x = a, *y = b;
  size_t n = x->n < y->n ? x->n : y->n;
  int c = memcmp(x->s, y->s, n);
  return c ? c : (x->n > y->n) - (x->n < y->n);
}

/* Objects are written with sorted keys: the text is canonical. */
static int enc_object(enc_t *e, int idx) {
  lua_State *L = e->L;
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
    ents[i].s = lua_tolstring(L, -1, &ents[i].n);
    ents[i].slot = (lua_Integer)(2 * i + 2);
    lua_pop(L, 1); /* still anchored in keys */
  }
  qsort(ents, count, sizeof *ents, key_cmp);
  int rc = 0;
  chr_buf_addc(e->out, '{');
  for (size_t i = 0; i < count && rc == 0; i++) {
    if (i) chr_buf_addc(e->out, ',');
    chr_json_add_string(e->out, ents[i].s, ents[i].n);
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
    if (++e->depth > MAX_DEPTH) {
      snprintf(e->err, e->errlen, "cannot encode a table nested deeper than %d levels "
               "(a cycle?)", MAX_DEPTH);
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

/* ---- scanning ---- */

static const char *ws(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
  return p;
}

static int is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* The scanner accepts exactly what the decoder decodes (escapes, number
 * and literal syntax), so that text a store reads with the scanner never
 * fails to decode later. */
static const char *skip_string(const char *p, const char *end) {
  /* p at the opening quote */
  for (p++; p < end; p++) {
    if (*p == '\\') {
      if (++p >= end) return NULL;
      if (*p == 'u') {
        if (end - p < 5 || !is_hex(p[1]) || !is_hex(p[2]) || !is_hex(p[3]) || !is_hex(p[4]))
          return NULL;
        p += 4;
      } else if (!strchr("\"\\/bfnrt", *p) || *p == '\0') {
        return NULL;
      }
      continue;
    }
    if (*p == '"') return p + 1;
  }
  return NULL;
}

static const char *skip_digits(const char *p, const char *end) {
  while (p < end && *p >= '0' && *p <= '9') p++;
  return p;
}

/* The end of the number at p (JSON's grammar: -?(0|[1-9]d*)(.d+)?([eE][+-]?d+)?),
 * or NULL; *isfloat when it has a fraction or an exponent. */
static const char *skip_number(const char *p, const char *end, int *isfloat) {
  *isfloat = 0;
  if (p < end && *p == '-') p++;
  if (p >= end || *p < '0' || *p > '9') return NULL;
  p = *p == '0' ? p + 1 : skip_digits(p, end);
  if (p < end && *p == '.') {
    const char *q = skip_digits(p + 1, end);
    if (q == p + 1) return NULL;
    p = q;
    *isfloat = 1;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < end && (*p == '+' || *p == '-')) p++;
    const char *q = skip_digits(p, end);
    if (q == p) return NULL;
    p = q;
    *isfloat = 1;
  }
  return p;
}

static const char *skip_literal(const char *p, const char *end) {
  static const char *const lits[] = {"true", "false", "null"};
  for (int i = 0; i < 3; i++) {
    size_t n = strlen(lits[i]);
    if ((size_t)(end - p) >= n && memcmp(p, lits[i], n) == 0) return p + n;
  }
  return NULL;
}

static const char *skip_depth(const char *p, const char *end, int depth) {
  p = ws(p, end);
  if (p >= end || depth > MAX_DEPTH) return NULL;
  switch (*p) {
  case '"': return skip_string(p, end);
  case '{':
  case '[': {
    char close = *p == '{' ? '}' : ']';
    int obj = *p == '{';
    p = ws(p + 1, end);
    if (p < end && *p == close) return p + 1;
    for (;;) {
      if (obj) {
        p = ws(p, end);
        if (p >= end || *p != '"' || !(p = skip_string(p, end))) return NULL;
        p = ws(p, end);
        if (p >= end || *p != ':') return NULL;
        p++;
      }
      if (!(p = skip_depth(p, end, depth + 1))) return NULL;
      p = ws(p, end);
      if (p >= end) return NULL;
      if (*p == close) return p + 1;
      if (*p != ',') return NULL;
      p++;
    }
  }
  case 't':
  case 'f':
  case 'n': return skip_literal(p, end);
  default: {
    int isfloat;
    return skip_number(p, end, &isfloat);
  }
  }
}

const char *chr_json_skip(const char *p, const char *end) {
  return skip_depth(p, end, 0);
}

int chr_json_next_member(const char **it, const char *end, chr_json_span_t *key,
                         chr_json_span_t *val) {
  const char *p = ws(*it, end);
  if (p < end && (*p == '{' || *p == ',')) p = ws(p + 1, end);
  if (p < end && *p == '}') {
    *it = p + 1;
    return 0;
  }
  if (p >= end) return 0;
  if (*p != '"') return -1;
  const char *k = p;
  if (!(p = skip_string(p, end))) return -1;
  key->p = k + 1;
  key->n = (size_t)(p - k - 2);
  p = ws(p, end);
  if (p >= end || *p != ':') return -1;
  p = ws(p + 1, end);
  const char *v = p;
  if (!(p = chr_json_skip(p, end))) return -1;
  val->p = v;
  val->n = (size_t)(p - v);
  p = ws(p, end);
  if (p < end && *p != ',' && *p != '}') return -1;
  *it = p;
  return 1;
}

int chr_json_lookup(const char *s, size_t len, const char *path, chr_json_span_t *val) {
  const char *end = s + len;
  chr_json_span_t cur = {s, len};
  while (*path) {
    const char *dot = strchr(path, '.');
    size_t plen = dot ? (size_t)(dot - path) : strlen(path);
    const char *p = ws(cur.p, cur.p + cur.n);
    if (p >= end || *p != '{') return 0;
    const char *it = p;
    chr_json_span_t k, v;
    int found = 0, r;
    while ((r = chr_json_next_member(&it, cur.p + cur.n, &k, &v)) == 1) {
      /* keys written by our encoder only escape what JSON requires */
      if (k.n == plen && memcmp(k.p, path, plen) == 0) {
        found = 1;
        break;
      }
    }
    if (!found) return 0;
    cur = v;
    path += plen;
    if (*path == '.') path++;
  }
  *val = cur;
  return 1;
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

static int hexval(const char *p, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
    else return -1;
  }
  *out = v;
  return 0;
}

static void add_utf8(chr_buf_t *b, unsigned cp) {
  char u[4];
  if (cp < 0x80) {
    chr_buf_addc(b, (char)cp);
  } else if (cp < 0x800) {
    u[0] = (char)(0xC0 | (cp >> 6));
    u[1] = (char)(0x80 | (cp & 0x3F));
    chr_buf_add(b, u, 2);
  } else if (cp < 0x10000) {
    u[0] = (char)(0xE0 | (cp >> 12));
    u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    u[2] = (char)(0x80 | (cp & 0x3F));
    chr_buf_add(b, u, 3);
  } else {
    u[0] = (char)(0xF0 | (cp >> 18));
    u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    u[3] = (char)(0x80 | (cp & 0x3F));
    chr_buf_add(b, u, 4);
  }
}

/* Pushes the string at d->p (opening quote). Fast path without escapes. */
static int dec_string(dec_t *d) {
  const char *s = d->p + 1, *p = s;
  while (p < d->end && *p != '"' && *p != '\\') p++;
  if (p < d->end && *p == '"') {
    lua_pushlstring(d->L, s, (size_t)(p - s));
    d->p = p + 1;
    return 0;
  }
  chr_buf_t b;
  chr_buf_init(&b);
  chr_buf_add(&b, s, (size_t)(p - s));
  while (p < d->end && *p != '"') {
    if (*p != '\\') {
      chr_buf_addc(&b, *p++);
      continue;
    }
    if (++p >= d->end) break;
    char c = *p++;
    switch (c) {
    case 'n': chr_buf_addc(&b, '\n'); break;
    case 't': chr_buf_addc(&b, '\t'); break;
    case 'r': chr_buf_addc(&b, '\r'); break;
    case 'b': chr_buf_addc(&b, '\b'); break;
    case 'f': chr_buf_addc(&b, '\f'); break;
    case '/': chr_buf_addc(&b, '/'); break;
    case '\\': chr_buf_addc(&b, '\\'); break;
    case '"': chr_buf_addc(&b, '"'); break;
    case 'u': {
      unsigned cp, lo;
      if (d->end - p < 4 || hexval(p, &cp)) goto bad;
      p += 4;
      if (cp >= 0xD800 && cp < 0xDC00 && d->end - p >= 6 && p[0] == '\\' && p[1] == 'u' &&
          hexval(p + 2, &lo) == 0 && lo >= 0xDC00 && lo < 0xE000) {
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        p += 6;
      }
      add_utf8(&b, cp);
      break;
    }
    default: goto bad;
    }
  }
  if (p >= d->end) goto bad;
  lua_pushlstring(d->L, b.p ? b.p : "", b.len);
  chr_buf_free(&b);
  d->p = p + 1;
  return 0;
bad:
  chr_buf_free(&b);
  return dec_fail(d, "bad string");
}

static int dec_value(dec_t *d);

/* Reads a container's members into the table on top of the stack. */
static int dec_members(dec_t *d, int obj);

static int dec_container(dec_t *d, int obj) {
  if (++d->depth > MAX_DEPTH) return dec_fail(d, "nested too deep");
  luaL_checkstack(d->L, 6, "json decode");
  lua_newtable(d->L);
  return dec_members(d, obj);
}

static int dec_members(dec_t *d, int obj) {
  lua_State *L = d->L;
  d->p = ws(d->p + 1, d->end);
  char close = obj ? '}' : ']';
  lua_Integer i = 0;
  if (d->p < d->end && *d->p == close) {
    d->p++;
    d->depth--;
    return 0;
  }
  for (;;) {
    if (obj) {
      d->p = ws(d->p, d->end);
      if (d->p >= d->end || *d->p != '"') return dec_fail(d, "expected a key");
      if (dec_string(d)) return CHR_EINVAL;
      d->p = ws(d->p, d->end);
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
    d->p = ws(d->p, d->end);
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

/* The value of the number text s (JSON's grammar, already checked):
 * returns 1 and *i when it has neither fraction nor exponent and fits 64
 * bits, else 0 and *f, the nearest double: integers too large for 64 bits,
 * and numbers a store printed in full (PostgreSQL's 1e100 in 101 digits),
 * of any length. */
static int number_value(const char *s, size_t n, int isfloat, long long *i, double *f) {
  char stack[64], *tmp = n < sizeof stack ? stack : chr_malloc(n + 1);
  memcpy(tmp, s, n);
  tmp[n] = '\0';
  if (!isfloat) {
    errno = 0;
    *i = strtoll(tmp, NULL, 10);
    if (errno != 0) isfloat = 1;
  }
  if (isfloat) *f = strtod(tmp, NULL);
  if (tmp != stack) free(tmp);
  return !isfloat;
}

int chr_json_canon_number(const char *p, size_t n, chr_buf_t *out) {
  int isfloat;
  long long i;
  double f;
  if (skip_number(p, p + n, &isfloat) != p + n) return -1;
  if (number_value(p, n, isfloat, &i, &f)) chr_buf_printf(out, "%lld", i);
  else add_double(out, f);
  return 0;
}

static int dec_value(dec_t *d) {
  lua_State *L = d->L;
  d->p = ws(d->p, d->end);
  if (d->p >= d->end) return dec_fail(d, "unexpected end");
  switch (*d->p) {
  case '"': return dec_string(d);
  case '{': return dec_container(d, 1);
  case '[': return dec_container(d, 0);
  case 't':
    if (d->end - d->p >= 4 && memcmp(d->p, "true", 4) == 0) {
      lua_pushboolean(L, 1);
      d->p += 4;
      return 0;
    }
    break;
  case 'f':
    if (d->end - d->p >= 5 && memcmp(d->p, "false", 5) == 0) {
      lua_pushboolean(L, 0);
      d->p += 5;
      return 0;
    }
    break;
  case 'n':
    if (d->end - d->p >= 4 && memcmp(d->p, "null", 4) == 0) {
      lua_pushlightuserdata(L, NULL);
      d->p += 4;
      return 0;
    }
    break;
  default: {
    int isfloat;
    const char *s = d->p, *e = skip_number(s, d->end, &isfloat);
    if (e == NULL) break;
    long long i;
    double f;
    if (number_value(s, (size_t)(e - s), isfloat, &i, &f)) lua_pushinteger(L, (lua_Integer)i);
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
  d.p = ws(d.p, d.end);
  if (d.p >= d.end || *d.p != '{') return dec_fail(&d, "expected an object");
  lua_pushvalue(L, idx);
  int rc = dec_members(&d, 1);
  lua_settop(L, top);
  if (rc == 0) {
    d.p = ws(d.p, d.end);
    if (d.p != d.end) rc = dec_fail(&d, "trailing characters");
  }
  return rc;
}

int chr_json_decode(lua_State *L, const char *s, size_t len, char *err, size_t errlen) {
  dec_t d = {L, s, s + len, err, errlen, 0};
  int top = lua_gettop(L);
  if (dec_value(&d) == 0) {
    d.p = ws(d.p, d.end);
    if (d.p == d.end) return 0;
    dec_fail(&d, "trailing characters");
  }
  lua_settop(L, top);
  return CHR_EINVAL;
}

char *chr_json_unescape(const char *p, size_t n) {
  if (n < 2 || p[0] != '"') return NULL;
  /* Reuse the decoder through a scratch Lua-free path: the escapes are few,
   * so a second small loop is simpler than threading a buffer mode through
   * dec_string. */
  chr_buf_t b;
  chr_buf_init(&b);
  const char *end = p + n - 1, *q = p + 1;
  chr_buf_reserve(&b, n);
  while (q < end) {
    if (*q != '\\') { /* copy the run up to the next escape at once */
      const char *r = q;
      while (r < end && *r != '\\') r++;
      chr_buf_add(&b, q, (size_t)(r - q));
      q = r;
      continue;
    }
    if (++q >= end) break;
    char c = *q++;
    unsigned cp, lo;
    switch (c) {
    case 'n': chr_buf_addc(&b, '\n'); break;
    case 't': chr_buf_addc(&b, '\t'); break;
    case 'r': chr_buf_addc(&b, '\r'); break;
    case 'b': chr_buf_addc(&b, '\b'); break;
    case 'f': chr_buf_addc(&b, '\f'); break;
    case 'u':
      if (end - q < 4 || hexval(q, &cp)) goto bad;
      q += 4;
      if (cp >= 0xD800 && cp < 0xDC00 && end - q >= 6 && q[0] == '\\' && q[1] == 'u' &&
          hexval(q + 2, &lo) == 0 && lo >= 0xDC00 && lo < 0xE000) {
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        q += 6;
      }
      add_utf8(&b, cp);
      break;
    default: chr_buf_addc(&b, c); break; /* \" \\ \/ */
    }
  }
  return chr_buf_steal(&b);
bad:
  chr_buf_free(&b);
  return NULL;
}
