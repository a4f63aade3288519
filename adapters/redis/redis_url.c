/* redis_url.c - redis:// URLs of the Redis store and lock adapters (see
 * redis_conn.h): host, port, database, credentials and the options. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_conn.h"

static int parse_seconds(const char *v, int64_t *out) {
  char *end;
  double d = strtod(v, &end);
  if (*v == '\0' || *end != '\0' || !(d >= 0) || d > 1e7) return -1;
  *out = (int64_t)(d * 1e6);
  return 0;
}

/* Messages show the URL with its password blanked out. */
static int url_fail(char *err, size_t errlen, const char *what, const char *url,
                    const char *why) {
  const char *auth = strstr(url, "//"), *at, *colon;
  auth = auth ? auth + 2 : url + strlen("redis:");
  at = memchr(auth, '@', strcspn(auth, "/?"));
  colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
  if (colon != NULL)
    snprintf(err, errlen, "invalid %s URL '%.*s:***%s': %s", what, (int)(colon - url), url, at,
             why);
  else if (at != NULL)
    snprintf(err, errlen, "invalid %s URL '%.*s***%s': %s", what, (int)(auth - url), url, at, why);
  else
    snprintf(err, errlen, "invalid %s URL '%s': %s", what, url, why);
  return CHR_EINVAL;
}

static char *pct_decode(const char *p, size_t n) {
  char *s = chr_malloc(n + 1), *o = s;
  for (size_t i = 0; i < n; i++) {
    if (p[i] == '%' && i + 2 < n) {
      char hex[3] = {p[i + 1], p[i + 2], 0};
      char *end;
      long v = strtol(hex, &end, 16);
      if (*end == '\0') {
        *o++ = (char)v;
        i += 2;
        continue;
      }
    }
    *o++ = p[i];
  }
  *o = '\0';
  return s;
}

static int parse_option(chr_redis_url_t *u, const char *k, size_t kn, const char *v,
                        const char *url, const char *what, char *err, size_t errlen) {
  char msg[160];
#define IS(name) (kn == strlen(name) && memcmp(k, name, kn) == 0)
  if (IS("prefix")) {
    if (*v == '\0') return url_fail(err, errlen, what, url, "prefix must not be empty");
    free(u->prefix);
    u->prefix = chr_strdup(v);
  } else if (IS("index_metadata")) {
    const char *p = v;
    while (*p) {
      const char *comma = strchr(p, ',');
      size_t n = comma ? (size_t)(comma - p) : strlen(p);
      if (n > 0) {
        u->index_paths = chr_realloc(u->index_paths, (u->nindex + 1) * sizeof *u->index_paths);
        u->index_paths[u->nindex++] = chr_strndup(p, n);
      }
      p += n + (comma != NULL);
    }
  } else if (IS("queue_timeout") || IS("timeout") || IS("connect_timeout") ||
             IS("reconnect_max")) {
    int64_t *dst = IS("queue_timeout") ? &u->queue_us
                   : IS("timeout")     ? &u->timeout_us
                   : IS("connect_timeout") ? &u->connect_us
                                           : &u->backoff_max_us;
    if (parse_seconds(v, dst) != 0) {
      snprintf(msg, sizeof msg, "option '%.*s' must be a number of seconds, got '%s'", (int)kn,
               k, v);
      return url_fail(err, errlen, what, url, msg);
    }
  } else {
    snprintf(msg, sizeof msg,
             "unknown option '%.*s' (expected prefix, index_metadata, queue_timeout, timeout, "
             "connect_timeout, reconnect_max)",
             (int)kn, k);
    return url_fail(err, errlen, what, url, msg);
  }
#undef IS
  return 0;
}

/* Whether the option key k (kn bytes) is one of the keys of the query
 * options from q up to (not including) upto. */
static int given_before(const char *q, const char *upto, const char *k, size_t kn) {
  while (q < upto) {
    size_t n = strcspn(q, "&"), kl = strcspn(q, "=&");
    if (kl == kn && memcmp(q, k, kn) == 0) return 1;
    q += n + (q[n] == '&');
  }
  return 0;
}

int chr_redis_url_parse(const char *url, chr_redis_url_t *u, const char *what, char *err,
                        size_t errlen) {
  const char *p = url, *end;
  memset(u, 0, sizeof *u);
  u->port = 6379;
  u->queue_us = 10 * CHR_USEC;
  u->timeout_us = 30 * CHR_USEC;
  u->connect_us = 5 * CHR_USEC;
  u->backoff_max_us = 2 * CHR_USEC;
  if (strncmp(p, "redis:", 6) != 0) return url_fail(err, errlen, what, url, "expected redis://");
  p += 6;
  if (strncmp(p, "//", 2) == 0) p += 2;
  /* userinfo */
  end = p + strcspn(p, "/?");
  const char *at = memchr(p, '@', (size_t)(end - p));
  if (at != NULL) {
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (colon != NULL) {
      if (colon > p) u->user = pct_decode(p, (size_t)(colon - p));
      u->password = pct_decode(colon + 1, (size_t)(at - colon - 1));
    } else {
      u->password = pct_decode(p, (size_t)(at - p));
    }
    p = at + 1;
  }
  /* host[:port], [v6]:port */
  const char *hs = p, *he, *port = NULL;
  if (*p == '[') {
    const char *rb = memchr(p, ']', (size_t)(end - p));
    if (rb == NULL) {
      chr_redis_url_free(u);
      return url_fail(err, errlen, what, url, "unclosed '[' in the host");
    }
    hs = p + 1;
    he = rb;
    if (rb + 1 < end && rb[1] == ':') port = rb + 2;
  } else {
    const char *colon = memchr(p, ':', (size_t)(end - p));
    he = colon ? colon : end;
    if (colon) port = colon + 1;
  }
  u->host = he > hs ? chr_strndup(hs, (size_t)(he - hs)) : chr_strdup("127.0.0.1");
  if (port != NULL) {
    char *pe;
    long v = strtol(port, &pe, 10);
    if (pe != end || v <= 0 || v > 65535) {
      chr_redis_url_free(u);
      return url_fail(err, errlen, what, url, "the port must be a number 1-65535");
    }
    u->port = (int)v;
  }
  p = end;
  if (*p == '/') {
    p++;
    if (*p != '\0' && *p != '?') {
      char *pe;
      long v = strtol(p, &pe, 10);
      if ((*pe != '\0' && *pe != '?') || v < 0 || v > 1000000) {
        chr_redis_url_free(u);
        return url_fail(err, errlen, what, url, "the database must be a number (redis://host:port/0)");
      }
      u->db = (int)v;
      p = pe;
    }
  }
  if (*p == '?') {
    const char *query = ++p;
    while (*p) {
      size_t n = strcspn(p, "&");
      const char *eq = memchr(p, '=', n);
      if (eq == NULL) {
        chr_redis_url_free(u);
        return url_fail(err, errlen, what, url, "options are key=value pairs joined by '&'");
      }
      if (given_before(query, p, p, (size_t)(eq - p))) {
        /* A second value would silently win over (or add to) the first. */
        char msg[160];
        snprintf(msg, sizeof msg, "option '%.*s' is given more than once", (int)(eq - p), p);
        chr_redis_url_free(u);
        return url_fail(err, errlen, what, url, msg);
      }
      char *v = pct_decode(eq + 1, n - (size_t)(eq + 1 - p));
      int rc = parse_option(u, p, (size_t)(eq - p), v, url, what, err, errlen);
      free(v);
      if (rc != 0) {
        chr_redis_url_free(u);
        return rc;
      }
      p += n + (p[n] == '&');
    }
  }
  if (u->prefix == NULL) u->prefix = chr_strdup("chronis");
  return 0;
}

void chr_redis_url_free(chr_redis_url_t *u) {
  free(u->host);
  free(u->user);
  free(u->password);
  free(u->prefix);
  for (size_t i = 0; i < u->nindex; i++) free(u->index_paths[i]);
  free(u->index_paths);
  memset(u, 0, sizeof *u);
}

