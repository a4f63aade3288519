/* open.c - opening stores and locks by URL: the tables of schemes and
 * their adapters. Apart from store.c and lock.c so that a program that
 * creates its stores directly (the core's C tests) links no adapter it
 * does not use. */
#include "lock.h"
#include "store.h"

#include <stdio.h>
#include <string.h>

static int open_memory(const char *url, chr_store_t **out, char *err, size_t errlen) {
  (void)url;
  (void)err;
  (void)errlen;
  *out = chr_memory_store_new();
  return 0;
}

/* URL schemes and their adapters. An adapter's open function parses the
 * rest of the URL and reports bad input naming the URL part. */
static const struct {
  const char *scheme; /* without the colon */
  int (*open)(const char *url, chr_store_t **out, char *err, size_t errlen);
} schemes[] = {
    {"memory", open_memory},
    {"sqlite", chr_sqlite_store_open},
    {"lua", chr_lua_store_open},
    {"file", chr_file_store_open},
    {"postgres", chr_postgres_open},
    {"postgresql", chr_postgres_open},
    {"redis", chr_redis_store_open},
};

int chr_store_open(const char *url, chr_store_t **out, char *err, size_t errlen) {
  const char *colon = strchr(url, ':');
  size_t n = colon ? (size_t)(colon - url) : strlen(url);
  chr_buf_t known;
  chr_buf_init(&known);
  for (size_t i = 0; i < sizeof schemes / sizeof *schemes; i++) {
    if (strlen(schemes[i].scheme) == n && strncmp(url, schemes[i].scheme, n) == 0) {
      chr_buf_free(&known);
      chr_store_t *s = NULL;
      int rc = schemes[i].open(url, &s, err, errlen);
      if (rc != 0) return rc;
      s->url = chr_strdup(url);
      *out = s;
      return 0;
    }
    chr_buf_printf(&known, "%s%s:", i ? ", " : "", schemes[i].scheme);
  }
  snprintf(err, errlen, "invalid storage URL '%s': unknown scheme '%.*s' (expected %s)", url,
           (int)n, url, known.p);
  chr_buf_free(&known);
  return CHR_EINVAL;
}

static int open_memory_lock(const char *url, chr_lock_t **out, char *err, size_t errlen) {
  (void)url;
  (void)err;
  (void)errlen;
  *out = chr_memory_lock_new();
  return 0;
}

static const struct {
  const char *scheme;
  int (*open)(const char *url, chr_lock_t **out, char *err, size_t errlen);
} lock_schemes[] = {
    {"memory", open_memory_lock},
    {"redis", chr_redis_lock_open},
};

int chr_lock_open(const char *url, chr_lock_t **out, char *err, size_t errlen) {
  const char *colon = strchr(url, ':');
  size_t n = colon ? (size_t)(colon - url) : strlen(url);
  for (size_t i = 0; i < sizeof lock_schemes / sizeof *lock_schemes; i++)
    if (strlen(lock_schemes[i].scheme) == n && strncmp(url, lock_schemes[i].scheme, n) == 0)
      return lock_schemes[i].open(url, out, err, errlen);
  snprintf(err, errlen, "invalid lock URL '%s': unknown scheme '%.*s'", url, (int)n, url);
  return CHR_EINVAL;
}
