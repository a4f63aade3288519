/* url.c - fuzzes the parser of store and lock URLs (chr_url_parse, in its
 * three authority modes), the masked form messages show
 * (chr_url_shown), the mapping of a URL to options (chr_store_url_opts,
 * chr_lock_url_opts) and the option readers of the Redis and PostgreSQL
 * adapters (chr_redis_opts_parse, chr_pg_opts_parse).
 *
 * Input: one byte choosing the authority mode, then the URL.
 * Invariants: the masked form and the message of a parsed URL never hold
 * its password; the parts of a URL, %-encoded again into a URL of the same
 * mode, parse to the same parts; an option list is refused or read, never
 * more. */
#include <stdint.h>

#include "core/lock.h"
#include "core/store.h"
#include "core/url.h"
#include "fuzz.h"
#include "postgres/pg.h"
#include "redis/redis_conn.h"


static size_t count(const char *hay, const char *needle) {
  size_t n = 0, len = strlen(needle);
  for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += 1) n++;
  return len ? n : 0;
}

/* Appends s %-encoded, leaving unreserved bytes and those of `keep`. */
static void enc(chr_buf_t *b, const char *s, const char *keep) {
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
        strchr("-._~", c) || (keep && strchr(keep, c)))
      chr_buf_addc(b, (char)c);
    else
      chr_buf_printf(b, "%%%02X", c);
  }
}

static int same(const char *a, const char *b) {
  return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

static void check_reencoded(const chr_url_t *u, int mode) {
  if ((u->host && strchr(u->host, ',')) || (u->port && strchr(u->port, ','))) return;
  chr_buf_t b;
  chr_buf_init(&b);
  chr_buf_adds(&b, u->scheme);
  chr_buf_adds(&b, ":");
  /* "//" starts the authority; where there is none, a leading "//" is
   * dropped (sqlite:///abs), which keeps any path as it is; but where "//"
   * would start an authority, the path must not start with it. */
  if (u->has_authority || mode == CHR_URL_NO_AUTHORITY) chr_buf_adds(&b, "//");
  const char *path = u->path;
  if (!u->has_authority && mode != CHR_URL_NO_AUTHORITY && path[0] == '/') {
    chr_buf_adds(&b, "%2F");
    path++;
  }
  if (u->has_authority) {
    if (u->user) enc(&b, u->user, NULL);
    if (u->password) chr_buf_addc(&b, ':'), enc(&b, u->password, NULL);
    if (u->user || u->password) chr_buf_addc(&b, '@');
    if (u->host && strchr(u->host, ':')) {
      chr_buf_addc(&b, '[');
      enc(&b, u->host, ":");
      chr_buf_addc(&b, ']');
    } else if (u->host) {
      enc(&b, u->host, NULL);
    }
    if (u->port) chr_buf_printf(&b, ":%s", u->port);
  }
  enc(&b, path, "/");
  for (size_t i = 0; i < u->query.n; i++) {
    chr_buf_addc(&b, i ? '&' : '?');
    enc(&b, u->query.v[i].key, NULL);
    chr_buf_addc(&b, '=');
    enc(&b, u->query.v[i].val, NULL);
  }
  chr_url_t v;
  char err[512];
  int rc = chr_url_parse(b.p, mode, "storage", &v, err, sizeof err);
  FUZZ_CHECK(rc == 0, "'%s' does not parse again: %s", b.p, err);
  FUZZ_CHECK(same(u->scheme, v.scheme) && same(u->user, v.user) &&
                 same(u->password, v.password) && same(u->host, v.host) &&
                 same(u->port, v.port) && same(u->path, v.path) &&
                 u->has_authority == v.has_authority && u->query.n == v.query.n,
             "'%s' parses to other parts", b.p);
  for (size_t i = 0; i < u->query.n; i++)
    FUZZ_CHECK(same(u->query.v[i].key, v.query.v[i].key) &&
                   same(u->query.v[i].val, v.query.v[i].val),
               "'%s': option %zu differs", b.p, i);
  chr_url_free(&v);
  chr_buf_free(&b);
}

/* The password as the URL writes it (still %-encoded), as the parser
 * finds it: between the first ':' and the last '@' of the authority. */
static char *raw_password(const char *url, int mode) {
  const char *a = strchr(url, ':');
  if (a == NULL || mode == CHR_URL_NO_AUTHORITY) return NULL;
  if (strncmp(a + 1, "//", 2) == 0) a += 3;
  else if (mode == CHR_URL_AUTHORITY_ALWAYS) a += 1;
  else return NULL;
  size_t n = strcspn(a, "?");
  const char *slash = memchr(a, '/', n), *at = NULL;
  if (slash) n = (size_t)(slash - a);
  for (size_t i = 0; i < n; i++)
    if (a[i] == '@') at = a + i;
  const char *colon = at ? memchr(a, ':', (size_t)(at - a)) : NULL;
  return colon ? chr_strndup(colon + 1, (size_t)(at - colon - 1)) : NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int mode = fuzz_byte(&data, &size) % 3;
  char *url = fuzz_str(data, size), err[512];
  chr_url_t u;
  if (chr_url_parse(url, mode, "storage", &u, err, sizeof err) == 0) {
    /* The password as written must not show. */
    char *raw = raw_password(url, mode);
    if (u.password && raw && strlen(raw) >= 4) {
      char *shown = chr_url_shown(url, mode);
      FUZZ_CHECK(count(shown, raw) < count(url, raw), "'%s' shows the password", shown);
      FUZZ_CHECK(count(u.query.desc, raw) < count(url, raw), "'%s' shows the password",
                 u.query.desc);
      free(shown);
    }
    free(raw);
    check_reencoded(&u, mode);
    chr_url_free(&u);
  } else {
    FUZZ_CHECK(err[0] != '\0', "refused without a message");
  }

  chr_opts_t o;
  if (chr_store_url_opts(url, &o, err, sizeof err) == 0) {
    if (strcmp(o.scheme, "redis") == 0) {
      chr_redis_url_t r;
      memset(&r, 0, sizeof r);
      if (chr_redis_opts_parse(&o, &r, 0, err, sizeof err) == 0) {
        FUZZ_CHECK(r.port >= 1 && r.port <= 65535, "port %d", r.port);
        FUZZ_CHECK(r.db >= 0, "db %d", r.db);
      }
      chr_redis_url_free(&r);
    } else if (strncmp(o.scheme, "postgres", 8) == 0) {
      pg_opts_t p;
      memset(&p, 0, sizeof p);
      chr_pg_opts_parse(&o, &p, err, sizeof err);
      chr_pg_opts_free(&p);
    }
    chr_opts_free(&o);
  }
  if (chr_lock_url_opts(url, &o, err, sizeof err) == 0) chr_opts_free(&o);
  free(url);
  return 0;
}
