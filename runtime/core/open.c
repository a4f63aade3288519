/* open.c - opening stores and locks from options or a URL: the tables of
 * schemes, their adapters, and where each part of a scheme's URL goes in
 * its options. Apart from store.c and lock.c so that a program that
 * creates its stores directly (the core's C tests) links no adapter it
 * does not use. */
#include "lock.h"
#include "store.h"
#include "url.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "suggest.h"

/* A scheme's URL form: where its authority may stand, which option the
 * path fills (after an authority, without its leading '/'), and the form
 * as messages describe it. */
typedef struct url_form {
  int authority;
  const char *path_key; /* NULL: the URL has no path */
  const char *usage;
} url_form_t;

static const url_form_t memory_form = {CHR_URL_NO_AUTHORITY, NULL, "memory:"};
static const url_form_t sqlite_form = {CHR_URL_NO_AUTHORITY, "path",
                                       "sqlite:PATH?option=value&..."};
static const url_form_t lua_form = {CHR_URL_NO_AUTHORITY, "script",
                                    "lua:SCRIPT?option=value&..."};
static const url_form_t file_form = {CHR_URL_NO_AUTHORITY, "path", "file:PATH?option=value&..."};
static const url_form_t pg_form = {CHR_URL_AUTHORITY, "dbname",
                                   "postgres://user:password@host:port/database?option=value&... "
                                   "or postgres:?key=value&..."};
static const url_form_t redis_form = {CHR_URL_AUTHORITY_ALWAYS, "db",
                                      "redis://user:password@host:port/db?option=value&..."};

/* Fills o from url, parsed with form: the query's options, then the
 * authority's parts (user, password, host, port) and the path as options
 * of their own, so that one given twice is refused like any option. */
static int url_opts(const char *url, const url_form_t *form, const char *what, chr_opts_t *o,
                    char *err, size_t errlen) {
  chr_url_t u;
  int rc = chr_url_parse(url, form->authority, what, &u, err, errlen);
  if (rc != 0) return rc;
  *o = u.query;
  chr_opts_init(&u.query);
  const char *path = u.path;
  if (u.has_authority && *path == '/') path++;
  if (*path != '\0' && (form->path_key == NULL ||
                        (form->authority == CHR_URL_AUTHORITY && !u.has_authority)))
    rc = chr_opts_fail(o, err, errlen, "expected %s", form->usage);
  const char *keys[] = {"user", "password", "host", "port", form->path_key};
  const char *vals[] = {u.user, u.password, u.host, u.port, *path ? path : NULL};
  for (size_t i = 0; rc == 0 && i < sizeof keys / sizeof *keys; i++)
    if (vals[i] != NULL) rc = chr_opts_add(o, keys[i], vals[i], err, errlen);
  chr_url_free(&u);
  if (rc != 0) chr_opts_free(o);
  return rc;
}

/* memory: takes no option: every one given is named. */
static int no_options(const chr_opts_t *o, char *err, size_t errlen) {
  if (o->n == 0) return 0;
  chr_buf_t b;
  chr_buf_init(&b);
  for (size_t i = 0; i < o->n; i++)
    chr_buf_printf(&b, "%s'%s'", i == 0 ? "" : i + 1 == o->n ? " and " : ", ", o->v[i].key);
  int rc = chr_opts_fail(o, err, errlen, "unknown option%s %s (memory: has none)",
                         o->n > 1 ? "s" : "", b.p);
  chr_buf_free(&b);
  return rc;
}

static int open_memory(const chr_opts_t *o, chr_store_t **out, char *err, size_t errlen) {
  static const char *const known[] = {"history", "history_days", "index_metadata", NULL};
  if (chr_opts_check_keys(o, known, NULL, NULL, err, errlen) != 0) return CHR_EINVAL;
  chr_history_opts_t h = {CHR_HISTORY_DEFAULT, CHR_HISTORY_DAYS_DEFAULT};
  char **index = NULL;
  for (size_t i = 0; i < o->n; i++) {
    const char *k = o->v[i].key, *v = o->v[i].val;
    if (strcmp(k, "index_metadata") == 0) {
      char why[256];
      if (chr_meta_index_parse(v, &index, why, sizeof why) != 0)
        return chr_opts_fail(o, err, errlen, "%s", why);
      continue;
    }
    int rc = chr_history_opt(o, k, v, &h, err, errlen);
    if (rc < 0) {
      chr_meta_index_free(index);
      return rc;
    }
  }
  *out = chr_memory_store_new_opts(&h, index);
  return 0;
}

static int open_memory_lock(const chr_opts_t *o, chr_lock_t **out, char *err, size_t errlen) {
  if (no_options(o, err, errlen) != 0) return CHR_EINVAL;
  *out = chr_memory_lock_new();
  return 0;
}

/* Schemes and their adapters (NULL: no such adapter). An adapter's open
 * function reads its options and reports bad input naming the option
 * (chr_opts_fail). */
static const struct scheme {
  const char *name; /* without the colon */
  const url_form_t *form;
  int (*store)(const chr_opts_t *o, chr_store_t **out, char *err, size_t errlen);
  int (*lock)(const chr_opts_t *o, chr_lock_t **out, char *err, size_t errlen);
} schemes[] = {
    {"memory", &memory_form, open_memory, open_memory_lock},
    {"sqlite", &sqlite_form, chr_sqlite_store_open, NULL},
    {"lua", &lua_form, chr_lua_store_open, NULL},
    {"file", &file_form, chr_file_store_open, NULL},
    {"postgres", &pg_form, chr_postgres_open, NULL},
    {"postgresql", &pg_form, chr_postgres_open, NULL},
    {"redis", &redis_form, chr_redis_store_open, chr_redis_lock_open},
};

#define NSCHEMES (sizeof schemes / sizeof *schemes)

static int ends_with(const char *s, size_t n, const char *tail) {
  size_t t = strlen(tail);
  return n >= t && strncasecmp(s + n - t, tail, t) == 0;
}

/* The URL a store URL without a scheme most likely meant, for a path
 * given alone (--storage /tmp/jobs.db): a SQLite file for a .db, .sqlite
 * or .sqlite3 name or a file that exists, a JSON file store for .json;
 * NULL otherwise. malloc'ed. */
static char *url_of_path(const char *url) {
  size_t n = strlen(url);
  struct stat st;
  if (ends_with(url, n, ".json")) return chr_sprintf("file:%s", url);
  if (ends_with(url, n, ".db") || ends_with(url, n, ".sqlite") || ends_with(url, n, ".sqlite3") ||
      (stat(url, &st) == 0 && S_ISREG(st.st_mode)))
    return chr_sprintf("sqlite:%s", url);
  return NULL;
}

/* The scheme name[0..n) with a store (or lock) adapter; NULL, and an
 * error listing the known ones, when there is none: with the URL meant
 * when the name is a file path (no ':' at all), or the closest scheme. */
static const struct scheme *find_scheme(const char *name, size_t n, int lock, const char *desc,
                                        char *err, size_t errlen) {
  for (size_t i = 0; i < NSCHEMES; i++)
    if ((lock ? schemes[i].lock != NULL : schemes[i].store != NULL) &&
        strlen(schemes[i].name) == n && strncmp(name, schemes[i].name, n) == 0)
      return &schemes[i];
  char *path_url = !lock && name[n] == '\0' ? url_of_path(name) : NULL;
  if (path_url != NULL) {
    chr_errf(err, errlen, "invalid %s: no scheme; did you mean '%s'?", desc, path_url);
    free(path_url);
    return NULL;
  }
  chr_buf_t known;
  chr_buf_init(&known);
  const char *names[NSCHEMES + 1];
  size_t k = 0;
  for (size_t i = 0; i < NSCHEMES; i++)
    if (lock ? schemes[i].lock != NULL : schemes[i].store != NULL) {
      chr_buf_printf(&known, "%s%s:", known.len ? ", " : "", schemes[i].name);
      names[k++] = schemes[i].name;
    }
  names[k] = NULL;
  char *word = chr_strndup(name, n);
  const char *close = chr_suggest(word, names);
  free(word);
  if (close)
    chr_errf(err, errlen, "invalid %s: unknown scheme '%.*s'; did you mean '%s:'?", desc, (int)n,
             name, close);
  else
    chr_errf(err, errlen, "invalid %s: unknown scheme '%.*s' (expected %s)", desc, (int)n, name,
             known.p);
  chr_buf_free(&known);
  return NULL;
}

static int opts_of_url(const char *url, int lock, chr_opts_t *o, char *err, size_t errlen) {
  chr_opts_init(o); /* left empty on failure */
  const char *what = lock ? "lock" : "storage";
  const char *colon = strchr(url, ':');
  size_t n = colon ? (size_t)(colon - url) : strlen(url);
  char *shown = chr_url_shown(url, CHR_URL_AUTHORITY);
  char *desc = chr_sprintf("%s URL '%s'", what, shown);
  const struct scheme *s = find_scheme(url, n, lock, desc, err, errlen);
  free(shown);
  free(desc);
  if (s == NULL) return CHR_EINVAL;
  return url_opts(url, s->form, what, o, err, errlen);
}

/* ---- how logs name a store ---- */

/* Appends s %-encoding what would not read back the same in a URL part
 * (keep: the punctuation the part may hold as it is). */
static void add_encoded(chr_buf_t *b, const char *s, size_t n, const char *keep) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
        strchr("-._~", c) || (c != '\0' && strchr(keep, c)))
      chr_buf_addc(b, (char)c);
    else
      chr_buf_printf(b, "%%%02X", c);
  }
}

/* host[:port] entries of comma lists hosts and ports, zipped. */
static void add_hosts(chr_buf_t *b, const char *hosts, const char *ports) {
  const char *h = hosts ? hosts : "", *p = ports;
  for (int first = 1;; first = 0) {
    size_t hn = strcspn(h, ","), pn = p ? strcspn(p, ",") : 0;
    if (!first) chr_buf_addc(b, ',');
    int v6 = memchr(h, ':', hn) != NULL;
    if (v6) chr_buf_addc(b, '[');
    add_encoded(b, h, hn, v6 ? ":" : "");
    if (v6) chr_buf_addc(b, ']');
    if (pn) {
      chr_buf_addc(b, ':');
      chr_buf_add(b, p, pn);
    }
    if (h[hn] != ',') break;
    h += hn + 1;
    if (p) p = p[pn] == ',' ? p + pn + 1 : NULL;
  }
}

/* A store's options in the URL form of its scheme, the password hidden:
 * "postgres://app:***@db:5432/jobs?table=t", "sqlite:jobs.db". */
static char *opts_shown(const chr_opts_t *o, const url_form_t *form) {
  const char *user = chr_opts_get(o, "user"), *password = chr_opts_get(o, "password");
  const char *host = chr_opts_get(o, "host"), *port = chr_opts_get(o, "port");
  const char *path = form->path_key ? chr_opts_get(o, form->path_key) : NULL;
  int authority = form->authority != CHR_URL_NO_AUTHORITY && (host || user || port);
  chr_buf_t b;
  chr_buf_init(&b);
  chr_buf_printf(&b, "%s:", o->scheme ? o->scheme : "");
  if (authority) {
    chr_buf_adds(&b, "//");
    if (user || password) {
      if (user) add_encoded(&b, user, strlen(user), "");
      if (password) chr_buf_adds(&b, ":***");
      chr_buf_addc(&b, '@');
    }
    add_hosts(&b, host, port);
  }
  if (path) {
    if (authority) chr_buf_addc(&b, '/');
    add_encoded(&b, path, strlen(path), "/:");
  }
  int first = 1;
  for (size_t i = 0; i < o->n; i++) {
    const char *k = o->v[i].key, *v = o->v[i].val;
    int in_authority = authority && (strcmp(k, "user") == 0 || strcmp(k, "password") == 0 ||
                                     strcmp(k, "host") == 0 || strcmp(k, "port") == 0);
    if (in_authority || (path && strcmp(k, form->path_key) == 0)) continue;
    chr_buf_addc(&b, first ? '?' : '&');
    first = 0;
    add_encoded(&b, k, strlen(k), "");
    chr_buf_addc(&b, '=');
    if (strcmp(k, "password") == 0) chr_buf_adds(&b, "***");
    else add_encoded(&b, v, strlen(v), "/:,");
  }
  return chr_buf_steal(&b);
}

char *chr_store_url_shown(const char *url) {
  const char *colon = strchr(url, ':');
  size_t n = colon ? (size_t)(colon - url) : 0;
  for (size_t i = 0; i < NSCHEMES; i++)
    if (colon && strlen(schemes[i].name) == n && strncmp(url, schemes[i].name, n) == 0)
      return chr_url_shown(url, schemes[i].form->authority);
  return chr_url_shown(url, CHR_URL_AUTHORITY);
}

int chr_store_url_opts(const char *url, chr_opts_t *o, char *err, size_t errlen) {
  return opts_of_url(url, 0, o, err, errlen);
}

int chr_lock_url_opts(const char *url, chr_opts_t *o, char *err, size_t errlen) {
  return opts_of_url(url, 1, o, err, errlen);
}

int chr_store_open_opts(const chr_opts_t *o, chr_store_t **out, char *err, size_t errlen) {
  const char *name = o->scheme ? o->scheme : "";
  const struct scheme *s = find_scheme(name, strlen(name), 0,
                                       o->desc ? o->desc : "storage options", err, errlen);
  int rc = s ? s->store(o, out, err, errlen) : CHR_EINVAL;
  if (rc == 0 && (*out)->url == NULL) (*out)->url = opts_shown(o, s->form);
  return rc;
}

int chr_lock_open_opts(const chr_opts_t *o, chr_lock_t **out, char *err, size_t errlen) {
  const char *name = o->scheme ? o->scheme : "";
  const struct scheme *s = find_scheme(name, strlen(name), 1,
                                       o->desc ? o->desc : "lock options", err, errlen);
  return s ? s->lock(o, out, err, errlen) : CHR_EINVAL;
}

int chr_store_open(const char *url, chr_store_t **out, char *err, size_t errlen) {
  chr_opts_t o;
  int rc = chr_store_url_opts(url, &o, err, errlen);
  if (rc != 0) return rc;
  rc = chr_store_open_opts(&o, out, err, errlen);
  chr_opts_free(&o);
  return rc;
}

int chr_lock_open(const char *url, chr_lock_t **out, char *err, size_t errlen) {
  chr_opts_t o;
  int rc = chr_lock_url_opts(url, &o, err, errlen);
  if (rc != 0) return rc;
  rc = chr_lock_open_opts(&o, out, err, errlen);
  chr_opts_free(&o);
  return rc;
}
