/* pg_url.c - the PostgreSQL store's options: chronis' own (table,
 * schema, pool, ...) are taken out, everything else (host, port, user,
 * password, dbname from the URL, sslmode, ...) goes to libpq as keywords,
 * each value as it was given. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pg.h"

uint64_t chr_pg_fnv1a(const void *p, size_t n, uint64_t h) {
  const unsigned char *s = p;
  for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ULL;
  return h;
}

int chr_pg_ident_ok(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > PG_IDENT_MAX) return 0;
  if (!(isalpha((unsigned char)s[0]) || s[0] == '_')) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!(c < 0x80 && (isalnum(c) || c == '_'))) return 0;
  }
  return 1;
}

void chr_pg_derived_name(const char *base, const char *suffix, char *out, size_t outlen) {
  size_t bn = strlen(base), sn = strlen(suffix);
  if (bn + sn <= PG_IDENT_MAX) {
    snprintf(out, outlen, "\"%s%s\"", base, suffix);
    return;
  }
  uint32_t h = (uint32_t)chr_pg_fnv1a(base, bn, PG_FNV_SEED);
  int keep = (int)(PG_IDENT_MAX - sn - 9);
  snprintf(out, outlen, "\"%.*s_%08x%s\"", keep, base, (unsigned)h, suffix);
}

void chr_pg_meta_index_name(const char *table, const char *path, char *out, size_t outlen) {
  char suffix[48];
  size_t n = strlen(path);
  /* The path is kept whole while it fits; a long one keeps its start and
   * a hash of the whole, so that two long paths never share a name. */
  if (n <= 32) snprintf(suffix, sizeof suffix, "_meta_%s", path);
  else snprintf(suffix, sizeof suffix, "_meta_%.23s_%08x", path,
                (unsigned)(uint32_t)chr_pg_fnv1a(path, n, PG_FNV_SEED));
  chr_pg_derived_name(table, suffix, out, outlen);
}

void chr_pg_meta_expr(chr_buf_t *b, const char *rec, const char *path) {
  /* A plain path holds no quote or backslash: each key is a literal as
   * it is. */
  chr_buf_printf(b, "(%s -> 'metadata'", rec);
  for (const char *p = path; *p;) {
    size_t n = strcspn(p, ".");
    chr_buf_printf(b, " -> '%.*s'", (int)n, p);
    p += n + (p[n] == '.');
  }
  chr_buf_addc(b, ')');
}

int chr_pg_path_indexed(const pg_opts_t *o, const char *path) {
  for (char **p = o->index_paths; p && *p; p++)
    if (strcmp(*p, path) == 0) return 1;
  return 0;
}

static int parse_bool(const char *v, int *out) {
  static const char *const yes[] = {"true", "1", "yes", "on"}, *const no[] = {"false", "0", "no",
                                                                                 "off"};
  for (int i = 0; i < 4; i++) {
    if (strcasecmp(v, yes[i]) == 0) return *out = 1, 0;
    if (strcasecmp(v, no[i]) == 0) return *out = 0, 0;
  }
  return -1;
}

static int parse_num(const char *v, double lo, double hi, double *out) {
  char *e;
  errno = 0;
  double d = strtod(v, &e);
  if (e == v || *e != '\0' || errno != 0 || !(d >= lo && d <= hi)) return -1;
  *out = d;
  return 0;
}

/* libpq's connection keywords (so a typo fails at open, not at the first
 * connection), NULL-terminated; NULL when libpq cannot say. Read once. */
static const char *const *libpq_keywords(void) {
  static PQconninfoOption *defs;
  static const char **names;
  if (names != NULL) return names;
  if (defs == NULL) defs = PQconndefaults();
  if (defs == NULL) return NULL;
  size_t n = 0;
  while (defs[n].keyword) n++;
  names = chr_malloc((n + 1) * sizeof *names);
  for (size_t i = 0; i < n; i++) names[i] = defs[i].keyword;
  names[n] = NULL;
  return names;
}

/* libpq's options string splits on spaces; a backslash escapes. */
static void add_option_value(chr_buf_t *b, const char *v) {
  for (; *v; v++) {
    if (*v == ' ' || *v == '\\') chr_buf_addc(b, '\\');
    chr_buf_addc(b, *v);
  }
}

typedef struct kv {
  const char **keys, **vals;
  size_t n, cap;
} kv_t;

static void kv_add(kv_t *kv, const char *k, const char *v) {
  if (kv->n + 2 > kv->cap) {
    kv->cap = kv->cap ? kv->cap * 2 : 16;
    kv->keys = chr_realloc(kv->keys, kv->cap * sizeof *kv->keys);
    kv->vals = chr_realloc(kv->vals, kv->cap * sizeof *kv->vals);
  }
  kv->keys[kv->n] = chr_strdup(k);
  kv->vals[kv->n] = chr_strdup(v);
  kv->n++;
  kv->keys[kv->n] = kv->vals[kv->n] = NULL;
}

/* The value of option k, NULL when absent or empty. */
static const char *pass_option(const kv_t *pass, const char *k) {
  const char *v = NULL;
  for (size_t i = 0; i < pass->n; i++)
    if (strcmp(pass->keys[i], k) == 0) v = pass->vals[i];
  return v && *v ? v : NULL;
}

/* The server as messages name it: postgres://user@host:port/dbname, no
 * password, no options. */
static char *describe(const kv_t *pass) {
  const char *user = pass_option(pass, "user"), *host = pass_option(pass, "host");
  const char *port = pass_option(pass, "port"), *db = pass_option(pass, "dbname");
  return chr_sprintf("postgres://%s%s%s%s%s/%s", user ? user : "", user ? "@" : "",
                     host ? host : "", port ? ":" : "", port ? port : "", db ? db : "");
}

static void kv_free(kv_t *kv) {
  for (size_t i = 0; i < kv->n; i++) {
    free((char *)kv->keys[i]);
    free((char *)kv->vals[i]);
  }
  free(kv->keys);
  free(kv->vals);
  memset(kv, 0, sizeof *kv);
}

static const char *env_option(const char *name) {
  const char *v = getenv(name);
  return v && *v ? v : NULL;
}

/* Whether a host entry is a name to look up (not a socket folder, not a
 * numeric address, not empty: libpq's default socket). */
static int needs_lookup(const char *h, size_t n) {
  char buf[256];
  unsigned char addr[16];
  if (n == 0 || h[0] == '/' || h[0] == '@' || n >= sizeof buf) return 0;
  memcpy(buf, h, n);
  buf[n] = '\0';
  return inet_pton(AF_INET, buf, addr) != 1 && inet_pton(AF_INET6, buf, addr) != 1;
}

/* The host and port libpq will use, and whether a name must be looked up
 * before it can connect without blocking. */
static void effective_host(pg_opts_t *o, const kv_t *pass) {
  const char *host = pass_option(pass, "host"), *port = pass_option(pass, "port");
  const char *hostaddr = pass_option(pass, "hostaddr"), *service = pass_option(pass, "service");
  if (!host) host = env_option("PGHOST");
  if (!port) port = env_option("PGPORT");
  if (!hostaddr) hostaddr = env_option("PGHOSTADDR");
  if (!service) service = env_option("PGSERVICE");
  o->host = host ? chr_strdup(host) : NULL;
  o->port = port ? chr_strdup(port) : NULL;
  o->resolve = 0;
  if (host == NULL || hostaddr != NULL || service != NULL) return;
  for (const char *h = host;;) {
    const char *comma = strchr(h, ',');
    size_t n = comma ? (size_t)(comma - h) : strlen(h);
    if (needs_lookup(h, n)) o->resolve = 1;
    if (!comma) break;
    h = comma + 1;
  }
}

void chr_pg_opts_free(pg_opts_t *o) {
  kv_t kv = {o->keys, o->vals, 0, 0};
  while (kv.keys && kv.keys[kv.n]) kv.n++;
  kv_free(&kv);
  free(o->desc);
  free(o->host);
  free(o->port);
  chr_meta_index_free(o->index_paths);
  memset(o, 0, sizeof *o);
}

int chr_pg_opts_parse(const chr_opts_t *opts, pg_opts_t *o, char *err, size_t errlen) {
  memset(o, 0, sizeof *o);
  strcpy(o->table, "chronis_jobs");
  strcpy(o->schema, "public");
  o->pool = 4;
  o->auto_migrate = 1;
  o->notify = 1;
  o->timeout = 30;
  o->connect_timeout = 10;
  o->hist.keep = CHR_HISTORY_DEFAULT;
  o->hist.days = CHR_HISTORY_DAYS_DEFAULT;

  kv_t pass = {0}, kv = {0};
  chr_buf_t options;
  chr_buf_init(&options);
  chr_buf_adds(&options, "-c jit=off"); /* JIT costs more than it saves on short queries */
  const char *user_options = NULL, *timezone = NULL;
  static const char *const chronis_keys[] = {"table",   "schema",          "pool",     "auto_migrate",
                                             "notify",  "timeout",         "connect_timeout",
                                             "timezone", "options", "history", "history_days",
                                             "index_metadata", NULL};
  const char *const *libpq = libpq_keywords();
  int rc = libpq == NULL ? 0
                         : chr_opts_check_keys(opts, chronis_keys, libpq,
                                               "chronis: table, schema, pool, auto_migrate, "
                                               "notify, timeout, connect_timeout, timezone, "
                                               "index_metadata, "
                                               CHR_HISTORY_OPTION_NAMES "; or a "
                                               "libpq connection keyword",
                                               err, errlen);
  for (size_t i = 0; i < opts->n && rc == 0; i++) {
    const char *k = opts->v[i].key, *v = opts->v[i].val;
    double d;
    int h = chr_history_opt(opts, k, v, &o->hist, err, errlen);
    if (h != 0) {
      if (h < 0) rc = h;
    } else if (strcmp(k, "table") == 0 || strcmp(k, "schema") == 0) {
      if (!chr_pg_ident_ok(v))
        rc = chr_opts_fail(opts, err, errlen, "%s '%s' is not a valid identifier (1-63 "
                           "characters: a letter or _, then letters, digits or _)", k, v);
      else strcpy(k[0] == 't' ? o->table : o->schema, v);
    } else if (strcmp(k, "pool") == 0) {
      if (parse_num(v, 1, PG_MAX_POOL, &d) != 0 || d != (int)d)
        rc = chr_opts_fail(opts, err, errlen, "pool '%s' must be an integer 1-%d", v, PG_MAX_POOL);
      else o->pool = (int)d;
    } else if (strcmp(k, "auto_migrate") == 0 || strcmp(k, "notify") == 0) {
      if (parse_bool(v, k[0] == 'a' ? &o->auto_migrate : &o->notify) != 0)
        rc = chr_opts_fail(opts, err, errlen, "%s '%s' must be true or false", k, v);
    } else if (strcmp(k, "timeout") == 0 || strcmp(k, "connect_timeout") == 0) {
      if (parse_num(v, 0, 86400, &d) != 0)
        rc = chr_opts_fail(opts, err, errlen, "%s '%s' must be a number of seconds", k, v);
      else if (k[0] == 't') o->timeout = d;
      else o->connect_timeout = d;
    } else if (strcmp(k, "index_metadata") == 0) {
      char why[300];
      chr_meta_index_free(o->index_paths);
      o->index_paths = NULL;
      if (chr_meta_index_parse(v, &o->index_paths, why, sizeof why) != 0)
        rc = chr_opts_fail(opts, err, errlen, "option %s", why);
    } else if (strcmp(k, "timezone") == 0) {
      timezone = v;
    } else if (strcmp(k, "options") == 0) {
      user_options = v;
    } else {
      kv_add(&pass, k, v);
    }
  }
  if (rc == 0 && o->index_paths == NULL) o->index_paths = chr_calloc(1, sizeof *o->index_paths);
  if (rc == 0) {
    effective_host(o, &pass);
    /* Defaults first so the options override them; keepalives notice a
     * peer that vanished without closing (a network cut) in about 20 s. */
    kv_add(&kv, "keepalives_idle", "10");
    kv_add(&kv, "keepalives_interval", "5");
    kv_add(&kv, "keepalives_count", "3");
    kv_add(&kv, "fallback_application_name", "chronis");
    for (size_t i = 0; i < pass.n; i++) kv_add(&kv, pass.keys[i], pass.vals[i]);
    kv_add(&kv, "client_encoding", "UTF8");
    if (user_options) chr_buf_printf(&options, " %s", user_options);
    if (timezone) {
      chr_buf_adds(&options, " -c TimeZone=");
      add_option_value(&options, timezone);
    }
    kv_add(&kv, "options", options.p);
    o->keys = kv.keys;
    o->vals = kv.vals;
    o->desc = describe(&pass);
    snprintf(o->qtable, sizeof o->qtable, "\"%s\".\"%s\"", o->schema, o->table);
    char runs[PG_IDENT_MAX + 3];
    chr_pg_derived_name(o->table, "_runs", runs, sizeof runs);
    snprintf(o->qruns, sizeof o->qruns, "\"%s\".%s", o->schema, runs);
    chr_pg_derived_name(o->table, "_queue_rates", runs, sizeof runs);
    snprintf(o->qrates, sizeof o->qrates, "\"%s\".%s", o->schema, runs);
    chr_pg_derived_name(o->table, "_queue_room", runs, sizeof runs);
    snprintf(o->qroom, sizeof o->qroom, "\"%s\".%s", o->schema, runs);
    /* A channel per table; identifiers are ASCII, so cutting is safe. */
    snprintf(o->channel, sizeof o->channel, "chronis:%s.%s", o->schema, o->table);
  }
  if (rc != 0) {
    chr_meta_index_free(o->index_paths);
    o->index_paths = NULL;
  }
  kv_free(&pass);
  chr_buf_free(&options);
  return rc;
}
