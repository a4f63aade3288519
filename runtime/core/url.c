/* url.c - the option list stores and locks open from, and the one parser
 * of their URL form (see url.h). */
#include "url.h"

#include "suggest.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void chr_opts_init(chr_opts_t *o) {
  memset(o, 0, sizeof *o);
}

void chr_opts_free(chr_opts_t *o) {
  for (size_t i = 0; i < o->n; i++) {
    free(o->v[i].key);
    free(o->v[i].val);
  }
  free(o->v);
  free(o->scheme);
  free(o->desc);
  memset(o, 0, sizeof *o);
}

const char *chr_opts_get(const chr_opts_t *o, const char *key) {
  for (size_t i = 0; i < o->n; i++)
    if (strcmp(o->v[i].key, key) == 0) return o->v[i].val;
  return NULL;
}

int chr_opts_fail(const chr_opts_t *o, char *err, size_t errlen, const char *fmt, ...) {
  chr_buf_t b;
  va_list ap;
  chr_buf_init(&b);
  chr_buf_printf(&b, "invalid %s: ", o->desc ? o->desc : "options");
  va_start(ap, fmt);
  chr_buf_vprintf(&b, fmt, ap);
  va_end(ap);
  chr_errf(err, errlen, "%s", b.p);
  chr_buf_free(&b);
  return CHR_EINVAL;
}

int chr_opts_add(chr_opts_t *o, const char *key, const char *val, char *err, size_t errlen) {
  if (chr_opts_get(o, key) != NULL)
    return chr_opts_fail(o, err, errlen, "option '%s' is given more than once", key);
  if (o->n == o->cap) {
    o->cap = o->cap ? o->cap * 2 : 8;
    o->v = chr_realloc(o->v, o->cap * sizeof *o->v);
  }
  o->v[o->n].key = chr_strdup(key);
  o->v[o->n].val = chr_strdup(val);
  o->n++;
  return 0;
}

static int in_list(const char *k, const char *const *list) {
  for (; list && *list; list++)
    if (strcmp(k, *list) == 0) return 1;
  return 0;
}

int chr_opts_check_keys(const chr_opts_t *o, const char *const *known, const char *const *more,
                        const char *expected, char *err, size_t errlen) {
  chr_unknown_t u;
  chr_unknown_init(&u);
  for (size_t i = 0; i < o->n; i++)
    if (!in_list(o->v[i].key, known) && !in_list(o->v[i].key, more))
      chr_unknown_add(&u, o->v[i].key, strlen(o->v[i].key));
  if (u.n == 0) return 0;
  /* One list of candidates: known, then more. */
  size_t nk = 0, nm = 0;
  while (known && known[nk]) nk++;
  while (more && more[nm]) nm++;
  const char **all = chr_malloc((nk + nm + 1) * sizeof *all);
  for (size_t i = 0; i < nk; i++) all[i] = known[i];
  for (size_t i = 0; i < nm; i++) all[nk + i] = more[i];
  all[nk + nm] = NULL;
  chr_buf_t b;
  chr_buf_init(&b);
  if (expected == NULL) {
    for (size_t i = 0; i < nk; i++) chr_buf_printf(&b, "%s%s", i ? ", " : "", known[i]);
  }
  char *list = chr_buf_steal(&b);
  chr_unknown_format(&u, "option", all, expected ? expected : list, &b);
  int rc = chr_opts_fail(o, err, errlen, "%s", b.p);
  chr_buf_free(&b);
  free(list);
  free(all);
  chr_unknown_free(&u);
  return rc;
}

/* ---- the URL form ---- */

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Percent-decodes s[0..n) into *out (malloc'ed). Returns 0, or -1 with
 * *bad at a malformed escape, or -2 at a %00 (a NUL would cut the value). */
static int decode(const char *s, size_t n, char **out, const char **bad) {
  char *d = chr_malloc(n + 1), *o = d;
  for (size_t i = 0; i < n; i++) {
    if (s[i] != '%') {
      *o++ = s[i];
      continue;
    }
    int a = i + 1 < n ? hexval((unsigned char)s[i + 1]) : -1;
    int b = a >= 0 && i + 2 < n ? hexval((unsigned char)s[i + 2]) : -1;
    if (a < 0 || b < 0 || a * 16 + b == 0) {
      free(d);
      *bad = s + i;
      return a < 0 || b < 0 ? -1 : -2;
    }
    *o++ = (char)(a * 16 + b);
    i += 2;
  }
  *o = '\0';
  *out = d;
  return 0;
}

/* Where the authority starts, or NULL when the URL has none. */
static const char *authority_start(const char *url, int authority) {
  const char *colon = strchr(url, ':');
  if (colon == NULL || authority == CHR_URL_NO_AUTHORITY) return NULL;
  if (strncmp(colon + 1, "//", 2) == 0) return colon + 3;
  return authority == CHR_URL_AUTHORITY_ALWAYS ? colon + 1 : NULL;
}

/* URLs longer than this are shown cut, with "...": the message must still
 * say what is wrong after the URL (messages go through fixed buffers). */
#define SHOWN_MAX 200

static char *shown_whole(const char *url, int authority);

char *chr_url_shown(const char *url, int authority) {
  char *s = shown_whole(url, authority);
  size_t n = strlen(s);
  /* Cut only what is longer than the cut form ("..." after SHOWN_MAX
   * bytes at most): then the buffer holds the 4 bytes written below. */
  if (n <= SHOWN_MAX + 3) return s;
  n = SHOWN_MAX;
  while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--; /* not inside a UTF-8 sequence */
  memcpy(s + n, "...", 4);
  return s;
}

static char *shown_whole(const char *url, int authority) {
  const char *auth = authority_start(url, authority);
  if (auth == NULL) return chr_strdup(url);
  /* Up to the path: a raw '?' or '@' in a password must not end it early.
   * Hiding too much beats showing a piece of the password. */
  const char *end = auth + strcspn(auth, "/"), *at = NULL;
  for (const char *p = auth; p < end; p++)
    if (*p == '@') at = p;
  if (at == NULL) return chr_strdup(url);
  const char *colon = memchr(auth, ':', (size_t)(at - auth));
  const char *from = colon ? colon + 1 : auth; /* no ':': all of it may be a secret */
  return chr_sprintf("%.*s***%s", (int)(from - url), url, at);
}

typedef struct parse {
  chr_url_t *u;
  char *err;
  size_t errlen;
} parse_t;

/* Decodes the part s[0..n) named `part` ("the password") into *out. */
static int part(parse_t *ps, const char *s, size_t n, const char *part, int secret, char **out) {
  const char *bad;
  int rc = decode(s, n, out, &bad);
  if (rc == -2)
    return chr_opts_fail(&ps->u->query, ps->err, ps->errlen,
                         "%%00 (a NUL byte) is not allowed in %s", part);
  if (rc != 0 && secret)
    return chr_opts_fail(&ps->u->query, ps->err, ps->errlen,
                         "malformed %%-escape in %s (expected %% and two hex digits)", part);
  if (rc != 0)
    return chr_opts_fail(&ps->u->query, ps->err, ps->errlen,
                         "malformed %%-escape '%.*s' in %s (expected %% and two hex digits)",
                         (int)(s + n - bad < 3 ? s + n - bad : 3), bad, part);
  return 0;
}

/* One host[:port] or [v6]:port entry of the authority. */
static int host_entry(parse_t *ps, const char *s, size_t n, chr_buf_t *hosts, chr_buf_t *ports) {
  const char *end = s + n, *he, *port = NULL, *hs = s;
  if (n > 0 && *s == '[') {
    const char *rb = memchr(s, ']', n);
    if (rb == NULL)
      return chr_opts_fail(&ps->u->query, ps->err, ps->errlen, "unclosed '[' in the host");
    hs = s + 1;
    he = rb;
    if (rb + 1 < end && rb[1] != ':')
      return chr_opts_fail(&ps->u->query, ps->err, ps->errlen,
                           "expected ':port' after the host '%.*s'", (int)(rb + 1 - s), s);
    if (rb + 1 < end) port = rb + 2;
  } else {
    const char *colon = memchr(s, ':', n);
    he = colon ? colon : end;
    if (colon) port = colon + 1;
  }
  char *host;
  if (part(ps, hs, (size_t)(he - hs), "the host", 0, &host) != 0) return CHR_EINVAL;
  if (hosts->len || ports->len) chr_buf_addc(hosts, ',');
  chr_buf_adds(hosts, host);
  free(host);
  if (port != NULL) {
    size_t pn = (size_t)(end - port), digits = strspn(port, "0123456789");
    long v = digits == pn && pn > 0 && pn <= 5 ? strtol(port, NULL, 10) : 0;
    if (v < 1 || v > 65535)
      return chr_opts_fail(&ps->u->query, ps->err, ps->errlen,
                           "the port '%.*s' must be a number 1-65535", (int)pn, port);
    chr_buf_add(ports, port, pn);
  }
  chr_buf_addc(ports, ',');
  return 0;
}

static int authority(parse_t *ps, const char *s, size_t n) {
  chr_url_t *u = ps->u;
  const char *end = s + n, *at = NULL;
  for (const char *p = s; p < end; p++)
    if (*p == '@') at = p;
  if (at != NULL) {
    const char *colon = memchr(s, ':', (size_t)(at - s));
    const char *ue = colon ? colon : at;
    if (ue > s && part(ps, s, (size_t)(ue - s), "the user", 0, &u->user) != 0) return CHR_EINVAL;
    if (colon && at > colon + 1 &&
        part(ps, colon + 1, (size_t)(at - colon - 1), "the password", 1, &u->password) != 0)
      return CHR_EINVAL;
    s = at + 1;
  }
  /* host[:port], or a comma list of them (libpq's multi-host form) */
  chr_buf_t hosts, ports;
  chr_buf_init(&hosts);
  chr_buf_init(&ports);
  int rc = 0, nhosts = 0, nports = 0;
  for (const char *p = s; rc == 0;) {
    const char *e = p;
    while (e < end && *e != ',') {
      if (*e == '[') { /* an IPv6 address holds ':' and no ',' */
        const char *rb = memchr(e, ']', (size_t)(end - e));
        e = rb ? rb : end - 1;
      }
      e++;
    }
    size_t before = ports.len;
    rc = host_entry(ps, p, (size_t)(e - p), &hosts, &ports);
    nhosts++;
    if (ports.len > before + 1) nports++;
    if (e >= end) break;
    p = e + 1;
  }
  if (rc == 0) {
    if (ports.len) ports.p[--ports.len] = '\0'; /* the last entry's ',' */
    if (hosts.len || nhosts > 1) u->host = chr_strdup(hosts.p);
    if (nports > 0) u->port = chr_strdup(ports.p);
  }
  chr_buf_free(&hosts);
  chr_buf_free(&ports);
  return rc;
}

static int query(parse_t *ps, const char *q) {
  chr_url_t *u = ps->u;
  while (*q) {
    size_t n = strcspn(q, "&");
    const char *eq = memchr(q, '=', n);
    char *k = NULL, *v = NULL;
    int rc = 0;
    if (n == 0) { /* "a=1&&b=2", a trailing '&' */
      q++;
      continue;
    }
    if (eq == q)
      return chr_opts_fail(&u->query, ps->err, ps->errlen, "an option has no name ('%.*s')", (int)n,
                           q);
    rc = part(ps, q, eq ? (size_t)(eq - q) : n, "an option name", 0, &k);
    if (rc == 0 && eq == NULL)
      rc = chr_opts_fail(&u->query, ps->err, ps->errlen, "option '%s' has no value (key=value)", k);
    if (rc == 0) {
      char *what = chr_sprintf("option '%s'", k);
      rc = part(ps, eq + 1, n - (size_t)(eq + 1 - q), what, 0, &v);
      free(what);
    }
    if (rc == 0) rc = chr_opts_add(&u->query, k, v, ps->err, ps->errlen);
    free(k);
    free(v);
    if (rc != 0) return rc;
    q += n + (q[n] == '&');
  }
  return 0;
}

int chr_url_parse(const char *url, int auth_mode, const char *what, chr_url_t *u, char *err,
                  size_t errlen) {
  parse_t ps = {u, err, errlen};
  memset(u, 0, sizeof *u);
  chr_opts_init(&u->query);
  char *shown = chr_url_shown(url, auth_mode);
  u->query.desc = chr_sprintf("%s URL '%s'", what, shown);
  free(shown);
  size_t sn = strspn(url, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-");
  if (sn == 0 || url[sn] != ':') {
    chr_opts_fail(&u->query, err, errlen, "expected scheme:... (e.g. sqlite:jobs.db)");
    chr_url_free(u);
    return CHR_EINVAL;
  }
  u->scheme = chr_strndup(url, sn);
  u->query.scheme = chr_strdup(u->scheme);
  const char *rest = url + sn + 1;
  const char *a = authority_start(url, auth_mode);
  if (a == NULL && strncmp(rest, "//", 2) == 0) rest += 2; /* sqlite:///abs/path */
  if (a != NULL) rest = a;
  const char *q = strchr(rest, '?');
  const char *body_end = q ? q : rest + strlen(rest);
  int rc = 0;
  if (a != NULL) {
    u->has_authority = 1;
    const char *ae = memchr(rest, '/', (size_t)(body_end - rest));
    if (ae == NULL) ae = body_end;
    rc = authority(&ps, rest, (size_t)(ae - rest));
    rest = ae;
  }
  if (rc == 0) rc = part(&ps, rest, (size_t)(body_end - rest), "the path", 0, &u->path);
  if (rc == 0 && q != NULL) rc = query(&ps, q + 1);
  if (rc != 0) chr_url_free(u);
  return rc;
}

void chr_url_free(chr_url_t *u) {
  free(u->scheme);
  free(u->user);
  free(u->password);
  free(u->host);
  free(u->port);
  free(u->path);
  chr_opts_free(&u->query);
  memset(u, 0, sizeof *u);
}
