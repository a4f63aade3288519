/* crypto.c - chronis.crypto: the digests that request signing needs
 * (AWS Signature Version 4, webhook signatures), from OpenSSL 3's EVP and
 * one-shot HMAC APIs. Every function takes and returns Lua strings of
 * bytes; the *_hex variants return lower-case hex. */
#include <lauxlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "lua/util.h"

int luaopen_chronis_crypto(lua_State *L);

static void push_hex(lua_State *L, const unsigned char *p, size_t n) {
  static const char digits[] = "0123456789abcdef";
  luaL_Buffer b;
  char *out = luaL_buffinitsize(L, &b, n * 2);
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 15];
  }
  luaL_pushresultsize(&b, n * 2);
}

static int digest(lua_State *L, const EVP_MD *md, int hex) {
  size_t n;
  const char *s = chr_lua_checklstring(L, 1, &n);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(s, n, out, &len, md, NULL) != 1) return chr_lua_error(L, CHR_EUNAVAIL, "digest failed (OpenSSL)");
  if (hex) push_hex(L, out, len);
  else lua_pushlstring(L, (const char *)out, len);
  return 1;
}

static int hmac(lua_State *L, const EVP_MD *md, int hex) {
  size_t klen, n;
  const char *key = chr_lua_checklstring(L, 1, &klen);
  const char *s = chr_lua_checklstring(L, 2, &n);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  /* HMAC() with a NULL key pointer means "no key": give it a valid one. */
  if (HMAC(md, klen ? key : "", (int)klen, (const unsigned char *)s, n, out, &len) == NULL)
    return chr_lua_error(L, CHR_EUNAVAIL, "hmac failed (OpenSSL)");
  if (hex) push_hex(L, out, len);
  else lua_pushlstring(L, (const char *)out, len);
  return 1;
}

static int l_sha256(lua_State *L) {
  return digest(L, EVP_sha256(), 0);
}

static int l_sha256_hex(lua_State *L) {
  return digest(L, EVP_sha256(), 1);
}

static int l_hmac_sha256(lua_State *L) {
  return hmac(L, EVP_sha256(), 0);
}

static int l_hmac_sha256_hex(lua_State *L) {
  return hmac(L, EVP_sha256(), 1);
}

static int l_hex(lua_State *L) {
  size_t n;
  const char *s = chr_lua_checklstring(L, 1, &n);
  push_hex(L, (const unsigned char *)s, n);
  return 1;
}

static int l_random_bytes(lua_State *L) {
  lua_Integer n = chr_lua_checkinteger(L, 1);
  if (n < 0 || n > 65536) chr_lua_argerror(L, 1, "expected 0..65536 bytes");
  luaL_Buffer b;
  unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &b, (size_t)n);
  if (n > 0 && RAND_bytes(out, (int)n) != 1) return chr_lua_error(L, CHR_EUNAVAIL, "random_bytes: no entropy");
  luaL_pushresultsize(&b, (size_t)n);
  return 1;
}

/* Compares two strings in time that depends on their lengths only, for
 * checking signatures a peer sent. */
static int l_equal(lua_State *L) {
  size_t na, nb;
  const unsigned char *a = (const unsigned char *)chr_lua_checklstring(L, 1, &na);
  const unsigned char *b = (const unsigned char *)chr_lua_checklstring(L, 2, &nb);
  unsigned char diff = na != nb;
  size_t n = na < nb ? na : nb;
  for (size_t i = 0; i < n; i++) diff |= a[i] ^ b[i];
  lua_pushboolean(L, diff == 0);
  return 1;
}

/* stack: +1 the module table */
int luaopen_chronis_crypto(lua_State *L) {
  static const luaL_Reg fns[] = {{"sha256", l_sha256},
                                 {"sha256_hex", l_sha256_hex},
                                 {"hmac_sha256", l_hmac_sha256},
                                 {"hmac_sha256_hex", l_hmac_sha256_hex},
                                 {"hex", l_hex},
                                 {"random_bytes", l_random_bytes},
                                 {"equal", l_equal},
                                 {NULL, NULL}};
  luaL_newlib(L, fns);
  return 1;
}
