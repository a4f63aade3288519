/* redis_url.c - the options of the Redis store and lock adapters (see
 * redis_conn.h), from a redis:// URL or a table: host, port, database,
 * credentials and the adapter's own settings. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/filter.h"
#include "redis_conn.h"

static int parse_seconds(const char *v, int64_t *out) {
  char *end;
  double d = strtod(v, &end);
  if (*v == '\0' || *end != '\0' || !(d >= 0) || d > 1e7) return -1;
  *out = (int64_t)(d * 1e6);
  return 0;
}

/* A whole decimal number lo..hi; -1 when v is anything else. */
static long parse_int(const char *v, long lo, long hi) {
  char *end;
  long x = strtol(v, &end, 10);
  return *v != '\0' && *end == '\0' && x >= lo && x <= hi ? x : -1;
}

static int parse_option(chr_redis_url_t *u, const chr_opts_t *opts, const char *k, const char *v,
                        int lock, char *err, size_t errlen) {
  long x;
  int h = chr_history_opt(opts, k, v, &u->hist, err, errlen);
  if (h < 0) return h;
  if (h > 0 && lock) return chr_opts_fail(opts, err, errlen, "%s is a storage option", k);
  if (h > 0) return 0;
  if (strcmp(k, "host") == 0) {
    free(u->host);
    u->host = chr_strdup(v);
  } else if (strcmp(k, "port") == 0) {
    if ((x = parse_int(v, 1, 65535)) < 0)
      return chr_opts_fail(opts, err, errlen, "the port '%s' must be a number 1-65535", v);
    u->port = (int)x;
  } else if (strcmp(k, "db") == 0) {
    if ((x = parse_int(v, 0, 1000000)) < 0)
      return chr_opts_fail(opts, err, errlen, "the database '%s' must be a number "
                           "(redis://host:port/0, or db=0)", v);
    u->db = (int)x;
  } else if (strcmp(k, "user") == 0) {
    u->user = chr_strdup(v);
  } else if (strcmp(k, "password") == 0) {
    u->password = chr_strdup(v);
  } else if (strcmp(k, "prefix") == 0) {
    if (*v == '\0') return chr_opts_fail(opts, err, errlen, "prefix must not be empty");
    free(u->prefix);
    u->prefix = chr_strdup(v);
  } else if (strcmp(k, "index_metadata") == 0 && !lock) {
    /* The one parser every store uses: the same paths are valid on each. */
    char **paths, msg[256];
    if (chr_meta_index_parse(v, &paths, msg, sizeof msg) != 0)
      return chr_opts_fail(opts, err, errlen, "%s", msg);
    for (size_t i = 0; paths[i]; i++) {
      u->index_paths = chr_realloc(u->index_paths, (u->nindex + 1) * sizeof *u->index_paths);
      u->index_paths[u->nindex++] = paths[i];
    }
    free(paths); /* the strings moved to u */
  } else if (strcmp(k, "index_metadata") == 0) {
    return chr_opts_fail(opts, err, errlen, "index_metadata is a storage option");
  } else if (strcmp(k, "queue_timeout") == 0 || strcmp(k, "timeout") == 0 ||
             strcmp(k, "connect_timeout") == 0 || strcmp(k, "reconnect_max") == 0) {
    int64_t *dst = k[0] == 'q'   ? &u->queue_us
                   : k[0] == 't' ? &u->timeout_us
                   : k[0] == 'c' ? &u->connect_us
                                 : &u->backoff_max_us;
    if (parse_seconds(v, dst) != 0)
      return chr_opts_fail(opts, err, errlen, "option '%s' must be a number of seconds, got '%s'",
                           k, v);
  }
  return 0; /* an unknown option was refused before (chr_redis_opts_parse) */
}

int chr_redis_opts_parse(const chr_opts_t *opts, chr_redis_url_t *u, int lock, char *err,
                         size_t errlen) {
  memset(u, 0, sizeof *u);
  u->port = 6379;
  u->queue_us = 10 * CHR_USEC;
  u->timeout_us = 30 * CHR_USEC;
  u->connect_us = 5 * CHR_USEC;
  u->backoff_max_us = 2 * CHR_USEC;
  u->hist.keep = CHR_HISTORY_DEFAULT;
  u->hist.days = CHR_HISTORY_DAYS_DEFAULT;
  /* index_metadata and the history options included: a lock refuses them
   * below, saying why. */
  static const char *const keys[] = {
      "host",          "port",         "db",      "user",          "password",      "prefix",
      "index_metadata", "queue_timeout", "timeout", "connect_timeout", "reconnect_max",
      "history",       "history_days", NULL};
  if (chr_opts_check_keys(opts, keys, NULL, NULL, err, errlen) != 0) return CHR_EINVAL;
  for (size_t i = 0; i < opts->n; i++) {
    int rc = parse_option(u, opts, opts->v[i].key, opts->v[i].val, lock, err, errlen);
    if (rc != 0) {
      chr_redis_url_free(u);
      return rc;
    }
  }
  /* redis://secret@host: a user without a password is the password (AUTH
   * password), as before Redis 6 had users. */
  if (u->user != NULL && u->password == NULL) {
    u->password = u->user;
    u->user = NULL;
  }
  if (u->host == NULL || *u->host == '\0') {
    free(u->host);
    u->host = chr_strdup("127.0.0.1");
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
