/* json.c - the C side of JSON: a span scanner (members, dotted lookups,
 * skipping values), string literals and canonical numbers. Conversion to
 * and from Lua values is in runtime/lua/json.c. */
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* ---- encoding ---- */

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
void chr__json_add_double(chr_buf_t *out, double d) {
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

/* ---- scanning ---- */

const char *chr__json_ws(const char *p, const char *end) {
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
    if (*p == '\0') return NULL; /* see chr__json_string */
  }
  return NULL;
}

static const char *skip_digits(const char *p, const char *end) {
  while (p < end && *p >= '0' && *p <= '9') p++;
  return p;
}

/* The end of the number at p (JSON's grammar: -?(0|[1-9]d*)(.d+)?([eE][+-]?d+)?),
 * or NULL; *isfloat when it has a fraction or an exponent. */
const char *chr__json_skip_number(const char *p, const char *end, int *isfloat) {
  const char *start = p;
  int exp = 0;
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
    exp = 1;
  }
  /* A number beyond a double's range (1e400) would read as an infinity,
   * which no JSON text can hold: refused, by the scanner and the decoder
   * alike. Only an exponent or more than 308 digits can get there. */
  if (exp || p - start > 308) {
    long long i;
    double f;
    if (!chr__json_number(start, (size_t)(p - start), *isfloat, &i, &f) && isinf(f)) return NULL;
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
  p = chr__json_ws(p, end);
  if (p >= end || depth > CHR_JSON_MAX_DEPTH) return NULL;
  switch (*p) {
  case '"': return skip_string(p, end);
  case '{':
  case '[': {
    char close = *p == '{' ? '}' : ']';
    int obj = *p == '{';
    p = chr__json_ws(p + 1, end);
    if (p < end && *p == close) return p + 1;
    for (;;) {
      if (obj) {
        p = chr__json_ws(p, end);
        if (p >= end || *p != '"' || !(p = skip_string(p, end))) return NULL;
        p = chr__json_ws(p, end);
        if (p >= end || *p != ':') return NULL;
        p++;
      }
      if (!(p = skip_depth(p, end, depth + 1))) return NULL;
      p = chr__json_ws(p, end);
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
    return chr__json_skip_number(p, end, &isfloat);
  }
  }
}

const char *chr_json_skip(const char *p, const char *end) {
  return skip_depth(p, end, 0);
}

int chr_json_next_member(const char **it, const char *end, chr_json_span_t *key,
                         chr_json_span_t *val) {
  const char *p = chr__json_ws(*it, end);
  if (p < end && (*p == '{' || *p == ',')) p = chr__json_ws(p + 1, end);
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
  p = chr__json_ws(p, end);
  if (p >= end || *p != ':') return -1;
  p = chr__json_ws(p + 1, end);
  const char *v = p;
  if (!(p = chr_json_skip(p, end))) return -1;
  val->p = v;
  val->n = (size_t)(p - v);
  p = chr__json_ws(p, end);
  if (p < end && *p != ',' && *p != '}') return -1;
  *it = p;
  return 1;
}

int chr_json_key_cmp(const void *a, const void *b) {
  const chr_json_span_t *x = a, *y = b;
  size_t n = x->n < y->n ? x->n : y->n;
  int c = memcmp(x->p, y->p, n);
  return c ? c : (x->n > y->n) - (x->n < y->n);
}

/* Whether the key span k (still escaped, as chr_json_next_member gives it)
 * is the raw name[0..n): a key holding a quote, a backslash or a control
 * character is escaped in the text, so it is compared unescaped. */
static int key_equals(chr_json_span_t k, const char *name, size_t n) {
  if (memchr(k.p, '\\', k.n) == NULL) return k.n == n && memcmp(k.p, name, n) == 0;
  chr_buf_t raw = {0};
  const char *next;
  int eq = chr__json_string(k.p - 1, k.p + k.n + 1, &raw, &next) == 0 && raw.len == n &&
           (n == 0 || memcmp(raw.p, name, n) == 0);
  chr_buf_free(&raw);
  return eq;
}

/* The member named name[0..n) of the object at cur, or 0. */
static int member(chr_json_span_t cur, const char *name, size_t n, chr_json_span_t *val) {
  const char *end = cur.p + cur.n;
  const char *p = chr__json_ws(cur.p, end);
  if (p >= end || *p != '{') return 0;
  const char *it = p;
  chr_json_span_t k, v;
  while (chr_json_next_member(&it, end, &k, &v) == 1) {
    if (key_equals(k, name, n)) {
      *val = v;
      return 1;
    }
  }
  return 0;
}

int chr_json_lookup(const char *s, size_t len, const char *path, chr_json_span_t *val) {
  chr_json_span_t cur = {s, len};
  while (*path) {
    const char *dot = strchr(path, '.');
    size_t plen = dot ? (size_t)(dot - path) : strlen(path);
    if (!member(cur, path, plen, &cur)) return 0;
    path += plen;
    if (*path == '.') path++;
  }
  *val = cur;
  return 1;
}

int chr_json_lookup_keys(const char *s, size_t len, char *const *keys, size_t nkeys,
                         chr_json_span_t *val) {
  chr_json_span_t cur = {s, len};
  for (size_t i = 0; i < nkeys; i++)
    if (!member(cur, keys[i], strlen(keys[i]), &cur)) return 0;
  *val = cur;
  return 1;
}

/* ---- decoding helpers ---- */

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

/* The value of the number text s (JSON's grammar, already checked):
 * returns 1 and *i when it has neither fraction nor exponent and fits 64
 * bits, else 0 and *f, the nearest double: integers too large for 64 bits,
 * and numbers a store printed in full (PostgreSQL's 1e100 in 101 digits),
 * of any length. */
int chr__json_number(const char *s, size_t n, int isfloat, long long *i, double *f) {
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
  if (chr__json_skip_number(p, p + n, &isfloat) != p + n) return -1;
  if (chr__json_number(p, n, isfloat, &i, &f)) chr_buf_printf(out, "%lld", i);
  else chr__json_add_double(out, f);
  return 0;
}

/* Appends the unescaped bytes of the string literal at p (its opening
 * quote) to out; returns 0 and sets *next past the closing quote, or -1. */
int chr__json_string(const char *p, const char *end, chr_buf_t *out, const char **next) {
  const char *q = p + 1;
  while (q < end && *q != '"') {
    /* JSON texts are C strings everywhere in chronis (trigger_args, the
     * extra members): a raw NUL byte, which RFC 8259 does not allow in a
     * string anyway, would cut one short. \u0000 is the escaped form. */
    if (*q == '\0') return -1;
    if (*q != '\\') { /* copy the run up to the next escape or quote at once */
      const char *r = q;
      while (r < end && *r != '\\' && *r != '"' && *r != '\0') r++;
      chr_buf_add(out, q, (size_t)(r - q));
      q = r;
      continue;
    }
    if (++q >= end) return -1;
    char c = *q++;
    unsigned cp, lo;
    switch (c) {
    case 'n': chr_buf_addc(out, '\n'); break;
    case 't': chr_buf_addc(out, '\t'); break;
    case 'r': chr_buf_addc(out, '\r'); break;
    case 'b': chr_buf_addc(out, '\b'); break;
    case 'f': chr_buf_addc(out, '\f'); break;
    case '/': case '\\': case '"': chr_buf_addc(out, c); break;
    case 'u':
      if (end - q < 4 || hexval(q, &cp)) return -1;
      q += 4;
      if (cp >= 0xD800 && cp < 0xDC00 && end - q >= 6 && q[0] == '\\' && q[1] == 'u' &&
          hexval(q + 2, &lo) == 0 && lo >= 0xDC00 && lo < 0xE000) {
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        q += 6;
      }
      add_utf8(out, cp);
      break;
    default: return -1;
    }
  }
  if (q >= end) return -1;
  *next = q + 1;
  return 0;
}

char *chr_json_unescape(const char *p, size_t n) {
  if (n < 2 || p[0] != '"') return NULL;
  chr_buf_t b;
  const char *next;
  chr_buf_init(&b);
  chr_buf_reserve(&b, n);
  if (chr__json_string(p, p + n, &b, &next) != 0 || next != p + n) {
    chr_buf_free(&b);
    return NULL;
  }
  return chr_buf_steal(&b);
}

