/* json.h - a scanner over JSON text for the C side (spans of object
 * members, no tree), string literals and canonical numbers; runtime/lua/
 * json.h converts Lua values to and from JSON text. Encoding is canonical
 * (object keys sorted, integral floats below 1e19 written as integers) so
 * that equal Lua values give equal text; stores compare values by their
 * text. Every finite number reads back with its value, whichever store
 * kept the text (see add_double in json.c). */
#ifndef CHR_JSON_H
#define CHR_JSON_H

#include <stddef.h>

#include "common.h"

/* Scanner. chr_json_skip returns a pointer just past the value starting at
 * p (after leading white space), or NULL when malformed. It accepts what
 * chr_json_decode decodes, no more (nesting aside, bounded alike). */
const char *chr_json_skip(const char *p, const char *end);

/* Iterates the members of an object: *it starts at the text's first byte.
 * Returns 1 and fills key/value spans (key without quotes, still escaped),
 * 0 at the end, -1 on malformed text. */
typedef struct chr_json_span {
  const char *p;
  size_t n;
} chr_json_span_t;
int chr_json_next_member(const char **it, const char *end, chr_json_span_t *key,
                         chr_json_span_t *val);

/* Orders object keys as canonical text does (bytes, then length): a qsort
 * comparator over structs whose first member is the key's span. */
int chr_json_key_cmp(const void *a, const void *b);

/* Finds the member at a dotted path ("a.b.c") inside an object text.
 * Returns 1 and the value's span, or 0. */
int chr_json_lookup(const char *s, size_t len, const char *path, chr_json_span_t *val);
/* The same along keys[0..nkeys), each a whole (unescaped) key: for keys
 * that hold dots. */
int chr_json_lookup_keys(const char *s, size_t len, char *const *keys, size_t nkeys,
                         chr_json_span_t *val);

/* The string value of a JSON string literal span (quotes included),
 * unescaped and malloc'ed; NULL when the span is not a string. */
char *chr_json_unescape(const char *p, size_t n);

/* Writes the number text p[0..n) as the encoder writes its value, so that
 * text a store rewrote (PostgreSQL prints 1e100 in 101 digits) is
 * canonical again. Returns 0, or -1 when the text is not a JSON number. */
int chr_json_canon_number(const char *p, size_t n, chr_buf_t *out);

/* Writes s as a JSON string literal. */
void chr_json_add_string(chr_buf_t *out, const char *s, size_t n);

static inline int chr_json_is_null(chr_json_span_t v) {
  return v.n == 4 && v.p[0] == 'n' && v.p[1] == 'u' && v.p[2] == 'l' && v.p[3] == 'l';
}

/* Internal, shared with runtime/lua/json.c: the scanner's pieces. */
#define CHR_JSON_MAX_DEPTH 100
const char *chr__json_ws(const char *p, const char *end);
/* The end of the number at p, or NULL (not a number, or one beyond the
 * range of a double); *isfloat when it has a fraction or an exponent. */
const char *chr__json_skip_number(const char *p, const char *end, int *isfloat);
/* The value of a number's text: 1 and *i when it is an integer that fits
 * 64 bits, else 0 and *f. */
int chr__json_number(const char *s, size_t n, int isfloat, long long *i, double *f);
/* Writes a double as the encoder does (see json.c). */
void chr__json_add_double(chr_buf_t *out, double d);
/* Appends the unescaped bytes of the string literal at p (its opening
 * quote) to out; returns 0 and sets *next past the closing quote, or -1. */
int chr__json_string(const char *p, const char *end, chr_buf_t *out, const char **next);

#endif
