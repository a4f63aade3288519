/* json.c - fuzzes JSON: the decoder and the canonical encoder of
 * runtime/lua/json.c (chr_json_decode, chr_json_encode), and the scanner
 * of runtime/core/json.c that stores read records with (chr_json_skip,
 * chr_json_next_member, chr_json_lookup, chr_json_canon_number).
 *
 * Input: JSON text (not NUL-terminated).
 * Invariants: the scanner accepts exactly what the decoder decodes (below
 * the nesting bound, where each refuses on its own count); a value that
 * decodes and encodes gives canonical text, which decodes and encodes to
 * the same text again; the members the scanner finds in it are the ones
 * lookup finds; a number's canonical text decodes to the same value. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>

#include "core/json.h"
#include "fuzz.h"
#include "lua/json.h"

static lua_State *L;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  L = luaL_newstate();
  return L ? 0 : -1;
}

static int opens(const uint8_t *p, size_t n) {
  int k = 0;
  for (size_t i = 0; i < n; i++) k += p[i] == '[' || p[i] == '{';
  return k;
}

/* Every member the scanner yields is found by lookup under its key (when
 * the key is plain: lookup takes a dotted path). */
static void check_members(const char *s, size_t n) {
  const char *it = s, *end = s + n;
  chr_json_span_t k, v, found;
  int r;
  while ((r = chr_json_next_member(&it, end, &k, &v)) == 1) {
    char key[64];
    if (k.n == 0 || k.n >= sizeof key || memchr(k.p, '.', k.n) || memchr(k.p, '\\', k.n) ||
        memchr(k.p, '\0', k.n))
      continue;
    memcpy(key, k.p, k.n);
    key[k.n] = '\0';
    FUZZ_CHECK(chr_json_lookup(s, n, key, &found) == 1, "lookup misses '%s'", key);
    FUZZ_CHECK(found.p == v.p && found.n == v.n, "lookup of '%s' finds another span", key);
  }
  FUZZ_CHECK(r == 0, "canonical text '%.*s' scans as malformed", (int)n, s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *s = fuzz_copy(data, size), err[256];
  const char *end = s + size;
  int top = lua_gettop(L);
  int dec = chr_json_decode(L, s, size, err, sizeof err) == 0;
  const char *skipped = chr_json_skip(s, end);
  int scan = skipped != NULL && chr__json_ws(skipped, end) == end;
  if (opens(data, size) < CHR_JSON_MAX_DEPTH - 2)
    FUZZ_CHECK(dec == scan, "decoder %s, scanner %s", dec ? "accepts" : err,
               scan ? "accepts" : "refuses");
  if (!dec) {
    FUZZ_CHECK(lua_gettop(L) == top, "a refused text left values on the stack");
    lua_gc(L, LUA_GCCOLLECT);
    free(s);
    return 0;
  }

  chr_buf_t a, b;
  chr_buf_init(&a);
  chr_buf_init(&b);
  if (chr_json_encode(L, -1, &a, err, sizeof err) == 0) {
    FUZZ_CHECK(chr_json_decode(L, a.p, a.len, err, sizeof err) == 0, "'%s' does not decode: %s",
               a.p, err);
    FUZZ_CHECK(chr_json_encode(L, -1, &b, err, sizeof err) == 0, "'%s' does not encode again",
               a.p);
    FUZZ_CHECK(a.len == b.len && memcmp(a.p, b.p, a.len) == 0, "'%s' re-encodes as '%s'", a.p,
               b.p);
    if (a.len && a.p[0] == '{') check_members(a.p, a.len);
  }
  /* A number: its canonical text has its value. */
  int isfloat;
  const char *ws = chr__json_ws(s, end);
  const char *ne = chr__json_skip_number(ws, end, &isfloat);
  if (ne && chr__json_ws(ne, end) == end && lua_type(L, top + 1) == LUA_TNUMBER) {
    chr_buf_t c;
    chr_buf_init(&c);
    FUZZ_CHECK(chr_json_canon_number(ws, (size_t)(ne - ws), &c) == 0, "canon refuses a number");
    FUZZ_CHECK(chr_json_decode(L, c.p, c.len, err, sizeof err) == 0, "canon '%s': %s", c.p, err);
    FUZZ_CHECK(lua_rawequal(L, top + 1, -1), "canon '%s' has another value", c.p);
    chr_buf_free(&c);
  }
  chr_buf_free(&a);
  chr_buf_free(&b);
  lua_settop(L, top);
  /* Garbage left for later would look like a leak of this input to
   * libFuzzer, whose leak check would then run after every input. */
  lua_gc(L, LUA_GCCOLLECT);
  free(s);
  return 0;
}
