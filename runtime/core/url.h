/* url.h - what stores and locks open from: an option list (chr_opts_t),
 * and the one parser of their URL form (chr_url_parse). A Lua option
 * table fills the list directly; a URL fills it through the parser and
 * the scheme's mapping in open.c. Adapters read the list and never see
 * URL syntax, so any value (with &, =, %, spaces, unicode) reaches them
 * as it was given. */
#ifndef CHR_URL_H
#define CHR_URL_H

#include <stddef.h>

#include "common.h"

typedef struct chr_opt {
  char *key, *val;
} chr_opt_t;

/* The scheme and its options, in the order given; a key appears once. */
typedef struct chr_opts {
  char *scheme;
  /* How messages name the options: "storage URL 'redis://:***@h/0'" (the
   * password hidden) or "sqlite storage options". */
  char *desc;
  chr_opt_t *v;
  size_t n, cap;
} chr_opts_t;

void chr_opts_init(chr_opts_t *o);
void chr_opts_free(chr_opts_t *o);
/* Adds key=val (both copied). A key given before is refused, naming it:
 * a second value would silently win over the first. */
int chr_opts_add(chr_opts_t *o, const char *key, const char *val, char *err, size_t errlen);
/* The value of key, NULL when absent. */
const char *chr_opts_get(const chr_opts_t *o, const char *key);
/* Writes "invalid <desc>: <message>" and returns CHR_EINVAL. */
int chr_opts_fail(const chr_opts_t *o, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Refuses, in one message, every option of o that neither known nor more
 * (NULL-terminated lists; more may be NULL) holds, each with the closest
 * of them when one is close (suggest.h): "invalid storage URL '...':
 * unknown option 'busy_timout'; did you mean 'busy_timeout'?". `expected`
 * is the list shown for an option without a suggestion (NULL: known). */
int chr_opts_check_keys(const chr_opts_t *o, const char *const *known, const char *const *more,
                        const char *expected, char *err, size_t errlen);

/* Where the authority (//user:password@host:port) may stand. */
enum {
  CHR_URL_NO_AUTHORITY, /* none: a leading "//" is dropped (sqlite:///abs/path) */
  CHR_URL_AUTHORITY,    /* after "//" only (postgres://...) */
  CHR_URL_AUTHORITY_ALWAYS /* right after the scheme, "//" optional (redis:host:6379) */
};

/* scheme:[//][user[:password]@]host[:port][,host[:port]...][/path][?key=value&...]
 * Every part is %-decoded; a malformed escape (%zz, a cut %4) or %00 is
 * refused naming the part. */
typedef struct chr_url {
  char *scheme;
  int has_authority;
  char *user, *password; /* NULL when absent */
  char *host, *port;     /* NULL when absent; several hosts: comma lists,
                            with an empty port entry where none was given */
  char *path;            /* "" when empty; after an authority it starts with '/' */
  chr_opts_t query;      /* the options, refused when given twice */
} chr_url_t;

/* Parses url. `what` ("storage", "lock") names the URL in messages:
 * "invalid storage URL '<url, password hidden>': bad %-escape '%zz' in
 * the password". Returns 0, or CHR_EINVAL with u left empty. */
int chr_url_parse(const char *url, int authority, const char *what, chr_url_t *u, char *err,
                  size_t errlen);
void chr_url_free(chr_url_t *u);
/* The URL as messages show it: the password replaced by ***. */
char *chr_url_shown(const char *url, int authority);

#endif
