/* json.h - JSON text to and from Lua values, and a scanner over JSON text
 * for the C side (spans of object members, no tree). Encoding is canonical
 * (object keys sorted, integral floats below 1e19 written as integers) so
 * that equal Lua values give equal text; stores compare values by their
 * text. Every finite number reads back with its value, whichever store
 * kept the text (see add_double in json.c). */
#ifndef CHR_JSON_H
#define CHR_JSON_H

#include <stddef.h>

#include <lua.h>

#include "common.h"

/* Encodes the value at idx. Tables with keys 1..n (n >= 1) are arrays, other
 * tables objects with string keys (integer keys are written as strings);
 * an empty table is {}. chronis.json.null (lightuserdata NULL) is null.
 * Returns 0, or CHR_EINVAL with a message in err (functions, cycles, NaN,
 * keys that are neither strings nor numbers). */
int chr_json_encode(lua_State *L, int idx, chr_buf_t *out, char *err, size_t errlen);

/* Decodes text; pushes the value (stack: +1) and returns 0, or returns
 * CHR_EINVAL with a message and pushes nothing. null decodes to nil inside
 * objects (member dropped) and to chronis.json.null inside arrays. */
int chr_json_decode(lua_State *L, const char *s, size_t len, char *err, size_t errlen);

/* Decodes an object text's members into the table at idx (existing keys
 * are overwritten). stack: unchanged. Returns 0 or CHR_EINVAL. */
int chr_json_decode_into(lua_State *L, int idx, const char *s, size_t len, char *err,
                         size_t errlen);

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

/* Finds the member at a dotted path ("a.b.c") inside an object text.
 * Returns 1 and the value's span, or 0. */
int chr_json_lookup(const char *s, size_t len, const char *path, chr_json_span_t *val);

/* The string value of a JSON string literal span (quotes included),
 * unescaped and malloc'ed; NULL when the span is not a string. */
char *chr_json_unescape(const char *p, size_t n);

/* Writes the number text p[0..n) as the encoder writes its value, so that
 * text a store rewrote (PostgreSQL prints 1e100 in 101 digits) is
 * canonical again. Returns 0, or -1 when the text is not a JSON number. */
int chr_json_canon_number(const char *p, size_t n, chr_buf_t *out);

/* Writes s as a JSON string literal. */
void chr_json_add_string(chr_buf_t *out, const char *s, size_t n);

#endif
