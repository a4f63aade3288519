/* json.h - Lua values to and from JSON text (chronis.json, the job
 * record's free-form fields). Encoding is canonical: object keys sorted,
 * so equal values give equal text. */
#ifndef CHR_LUA_JSON_H
#define CHR_LUA_JSON_H

#include <lua.h>

#include "core/json.h"

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

#endif
