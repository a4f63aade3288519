/* pg_conn.c - one libpq connection driven by the loop: PQconnectStartParams
 * and PQconnectPoll with the socket watched by a uv_poll (re-read after each
 * step: libpq may close it and open another while it tries addresses), then
 * non-blocking queries, one at a time, with results collected as the socket
 * becomes readable. Never a blocking libpq call.
 *
 * libpq closes the socket itself when it sees the connection end (in
 * PQconsumeInput, PQflush, even a failed PQsend*), so after every call that
 * may read or write, the poll handle is dropped at once if the socket went
 * away: later, another connection may own the same number, and stopping
 * the stale handle (epoll_ctl DEL by number) would silently unregister it. */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/loop.h"
#include "pg.h"

static void poll_cb(uv_poll_t *h, int status, int events);

static void handle_close_cb(uv_handle_t *h) {
  pg_conn_t *c = h->data;
  free(h);
  if (--c->handles == 0 && c->closing) free(c);
}

/* libpq's messages span lines ("...failed: ...\n\tIs the server running"):
 * one line, for logs. */
static void set_err(pg_conn_t *c, const char *msg) {
  char *o = c->errmsg, *end = c->errmsg + sizeof c->errmsg - 1;
  if (msg == NULL || *msg == '\0') msg = "connection lost";
  for (const char *p = msg; *p && o < end; p++) {
    if (*p == '\n' || *p == '\t' || *p == '\r') {
      if (o > c->errmsg && o[-1] != ' ') *o++ = ' ';
    } else {
      *o++ = *p;
    }
  }
  while (o > c->errmsg && o[-1] == ' ') o--;
  *o = '\0';
}

static void apply_ref(pg_conn_t *c) {
  uv_handle_t *hs[2] = {(uv_handle_t *)c->poll, (uv_handle_t *)c->timer};
  for (int i = 0; i < 2; i++) {
    if (hs[i] == NULL) continue;
    if (c->refd) uv_ref(hs[i]);
    else uv_unref(hs[i]);
  }
}

void chr_pg_conn_ref(pg_conn_t *c, int on) {
  if (c->closing || c->refd == !!on) return;
  c->refd = !!on;
  apply_ref(c);
}

static void drop_poll(pg_conn_t *c) {
  if (c->poll == NULL) return;
  uv_close((uv_handle_t *)c->poll, handle_close_cb);
  c->poll = NULL;
  c->fd = -1;
}

/* The socket is gone (libpq closed it): forget our watch on its number. */
static void check_socket(pg_conn_t *c) {
  if (c->poll != NULL && (c->pg == NULL || PQsocket(c->pg) != c->fd)) drop_poll(c);
}

static int watch(pg_conn_t *c, int events) {
  int fd = PQsocket(c->pg);
  if (fd < 0) return -1;
  if (c->poll != NULL && fd != c->fd) drop_poll(c);
  if (c->poll == NULL) {
    c->poll = chr_malloc(sizeof *c->poll);
    if (uv_poll_init(chr_loop(), c->poll, fd) != 0) {
      free(c->poll);
      c->poll = NULL;
      return -1;
    }
    c->poll->data = c;
    c->handles++;
    c->fd = fd;
    apply_ref(c);
  }
  c->events = events;
  return uv_poll_start(c->poll, events, poll_cb) == 0 ? 0 : -1;
}

/* The connection failed or ended: the query in flight learns it first. */
static void broken(pg_conn_t *c, const char *msg) {
  if (c->state == PG_C_DEAD || c->closing) return;
  if (msg != c->errmsg) set_err(c, msg);
  c->state = PG_C_DEAD;
  if (c->poll) uv_poll_stop(c->poll);
  uv_timer_stop(c->timer);
  if (c->res) {
    PQclear(c->res);
    c->res = NULL;
  }
  if (c->cb) {
    pg_result_cb cb = c->cb;
    c->cb = NULL;
    cb(c, NULL, c->cb_arg);
  }
  if (!c->closing) c->on_event(c, PG_EV_BROKEN, NULL, NULL);
}

/* Server notices (and the FATAL a server sends an idle connection as it
 * shuts down) go to the debug log, not straight to stderr. */
static void notice_cb(void *arg, const char *msg) {
  (void)arg;
  size_t n = strlen(msg);
  while (n > 0 && msg[n - 1] == '\n') n--;
  chr_log(CHR_LOG_DEBUG, NULL, "postgres: %.*s", (int)n, msg);
}

static void deferred_cb(uv_timer_t *t) {
  pg_conn_t *c = t->data;
  broken(c, c->errmsg);
}

/* Fails from a timer callback, so that the caller never gets a callback
 * before its call returns. */
static void defer_broken(pg_conn_t *c, const char *msg) {
  set_err(c, msg);
  check_socket(c);
  if (c->poll) uv_poll_stop(c->poll);
  uv_timer_start(c->timer, deferred_cb, 0, 0);
}

static void connect_timeout_cb(uv_timer_t *t) {
  pg_conn_t *c = t->data;
  broken(c, "timed out while connecting");
}

static void query_timeout_cb(uv_timer_t *t) {
  pg_conn_t *c = t->data;
  char msg[96];
  snprintf(msg, sizeof msg, "no answer from the server in %g s", c->timeout);
  c->timed_out = 1;
  broken(c, msg);
}

static void connect_step(pg_conn_t *c) {
  /* PQconnectPoll may close this socket and open another under the same
   * number: stop watching first, so the new one is registered afresh. */
  if (c->poll) uv_poll_stop(c->poll);
  PostgresPollingStatusType st = PQconnectPoll(c->pg);
  check_socket(c);
  switch (st) {
  case PGRES_POLLING_READING:
  case PGRES_POLLING_WRITING:
    if (watch(c, st == PGRES_POLLING_READING ? UV_READABLE : UV_WRITABLE) != 0)
      broken(c, "cannot watch the connection's socket");
    return;
  case PGRES_POLLING_OK:
    uv_timer_stop(c->timer);
    if (PQsetnonblocking(c->pg, 1) != 0 || watch(c, UV_READABLE) != 0) {
      broken(c, PQerrorMessage(c->pg));
      return;
    }
    c->state = PG_C_IDLE;
    c->on_event(c, PG_EV_READY, NULL, NULL);
    return;
  default:
    broken(c, PQerrorMessage(c->pg));
    return;
  }
}

/* Starts libpq on the addresses found (when there was a lookup). */
static void begin_connect(pg_conn_t *c) {
  const pg_opts_t *o = c->o;
  size_t n = 0;
  while (o->keys[n]) n++;
  const char **keys = chr_malloc((n + 4) * sizeof *keys), **vals = chr_malloc((n + 4) * sizeof *vals);
  memcpy(keys, o->keys, n * sizeof *keys);
  memcpy(vals, o->vals, n * sizeof *vals);
  if (o->resolve) { /* last: they override what the options said */
    keys[n] = "host";
    vals[n++] = c->hosts.p ? c->hosts.p : "";
    keys[n] = "hostaddr";
    vals[n++] = c->addrs.p ? c->addrs.p : "";
    if (c->ports.len) {
      keys[n] = "port";
      vals[n++] = c->ports.p;
    }
  }
  keys[n] = vals[n] = NULL;
  /* No dbname expansion: a database name with '=' stays a name. */
  c->pg = PQconnectStartParams(keys, vals, 0);
  free(keys);
  free(vals);
  if (c->pg == NULL) {
    defer_broken(c, "out of memory");
    return;
  }
  if (PQstatus(c->pg) == CONNECTION_BAD) {
    defer_broken(c, PQerrorMessage(c->pg));
    return;
  }
  PQsetNoticeProcessor(c->pg, notice_cb, NULL);
  /* Before the first PQconnectPoll libpq waits to write. */
  if (watch(c, UV_WRITABLE) != 0) defer_broken(c, "cannot watch the connection's socket");
}

/* The n-th entry of a comma-separated list. */
static int list_item(const char *list, int n, const char **p, size_t *len) {
  const char *s = list;
  for (int i = 0; s && i < n; i++) {
    s = strchr(s, ',');
    if (s) s++;
  }
  if (s == NULL) return 0;
  const char *comma = strchr(s, ',');
  *p = s;
  *len = comma ? (size_t)(comma - s) : strlen(s);
  return 1;
}

static int list_count(const char *list) {
  int n = list ? 1 : 0;
  for (const char *s = list; s && (s = strchr(s, ',')); s++) n++;
  return n;
}

static void list_add(chr_buf_t *b, int first, const char *s, size_t n) {
  if (!first) chr_buf_addc(b, ',');
  chr_buf_add(b, s, n);
}

/* Whether a comma-separated list holds s as one of its items. */
static int list_has(const char *list, const char *s) {
  size_t n = strlen(s);
  for (const char *p = list; p && *p;) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    if (len == n && memcmp(p, s, n) == 0) return 1;
    p = comma ? comma + 1 : NULL;
  }
  return 0;
}

static void resolve_next(pg_conn_t *c);

/* Adds host entry i (looked up or not) to the lists given to libpq. */
static void add_entry(pg_conn_t *c, int i, const char *addr) {
  const char *h, *port;
  size_t hn, pn;
  int first = c->nentries++ == 0;
  list_item(c->o->host, i, &h, &hn);
  list_add(&c->hosts, first, h, hn);
  list_add(&c->addrs, first, addr, strlen(addr));
  if (list_count(c->o->port) > 1 && list_item(c->o->port, i, &port, &pn))
    list_add(&c->ports, first, port, pn);
}

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  pg_conn_t *c = req->data;
  free(req);
  c->gai = NULL;
  c->handles--;
  if (c->closing) {
    uv_freeaddrinfo(res);
    if (c->handles == 0) free(c);
    return;
  }
  const char *h;
  size_t hn;
  list_item(c->o->host, c->resolved, &h, &hn);
  if (status != 0 || res == NULL) {
    char msg[300];
    snprintf(msg, sizeof msg, "could not translate host name \"%.*s\" to address: %s", (int)hn, h,
             uv_strerror(status));
    uv_freeaddrinfo(res);
    broken(c, msg);
    return;
  }
  size_t mark = c->addrs.len;
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    char ip[64] = "";
    if (ai->ai_family == AF_INET) uv_ip4_name((struct sockaddr_in *)ai->ai_addr, ip, sizeof ip);
    else if (ai->ai_family == AF_INET6) uv_ip6_name((struct sockaddr_in6 *)ai->ai_addr, ip, sizeof ip);
    /* One entry per address, as libpq itself tries each in turn. */
    if (ip[0] == '\0' || (c->addrs.p && list_has(c->addrs.p + mark, ip))) continue;
    add_entry(c, c->resolved, ip);
  }
  uv_freeaddrinfo(res);
  c->resolved++;
  resolve_next(c);
}

/* Looks up the host names one after the other, then connects. */
static void resolve_next(pg_conn_t *c) {
  const char *h;
  size_t hn;
  while (list_item(c->o->host, c->resolved, &h, &hn)) {
    char name[256];
    unsigned char bin[16];
    snprintf(name, sizeof name, "%.*s", (int)hn, h);
    int lookup = hn > 0 && h[0] != '/' && h[0] != '@' && inet_pton(AF_INET, name, bin) != 1 &&
                 inet_pton(AF_INET6, name, bin) != 1;
    if (!lookup) {
      add_entry(c, c->resolved++, "");
      continue;
    }
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    c->gai = chr_malloc(sizeof *c->gai);
    c->gai->data = c;
    if (uv_getaddrinfo(chr_loop(), c->gai, gai_cb, name, NULL, &hints) != 0) {
      free(c->gai);
      c->gai = NULL;
      defer_broken(c, "cannot start a host name lookup");
      return;
    }
    c->handles++;
    return;
  }
  begin_connect(c);
}

pg_conn_t *chr_pg_conn_start(const pg_opts_t *o, pg_event_cb on_event, void *data) {
  pg_conn_t *c = chr_calloc(1, sizeof *c);
  c->o = o;
  c->fd = -1;
  c->on_event = on_event;
  c->data = data;
  c->timeout = o->timeout;
  c->refd = 1;
  c->timer = chr_malloc(sizeof *c->timer);
  uv_timer_init(chr_loop(), c->timer);
  c->timer->data = c;
  c->handles = 1;
  c->state = PG_C_CONNECTING;
  if (o->connect_timeout > 0)
    uv_timer_start(c->timer, connect_timeout_cb, (uint64_t)(o->connect_timeout * 1000), 0);
  if (o->resolve) resolve_next(c);
  else begin_connect(c);
  return c;
}

static void deliver(pg_conn_t *c) {
  PGresult *r = c->res;
  pg_result_cb cb = c->cb;
  void *arg = c->cb_arg;
  c->res = NULL;
  c->cb = NULL;
  c->state = PG_C_IDLE;
  uv_timer_stop(c->timer);
  if (cb) cb(c, r, arg);
  PQclear(r);
}

static void collect(pg_conn_t *c) {
  while (c->state == PG_C_BUSY && !PQisBusy(c->pg)) {
    PGresult *r = PQgetResult(c->pg);
    if (r == NULL) {
      deliver(c);
      return;
    }
    ExecStatusType st = PQresultStatus(r);
    int err = st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE;
    int had_err = c->res && (PQresultStatus(c->res) == PGRES_FATAL_ERROR ||
                             PQresultStatus(c->res) == PGRES_BAD_RESPONSE);
    if (had_err && !err) {
      PQclear(r);
    } else if (!had_err) {
      PQclear(c->res);
      c->res = r;
    } else {
      PQclear(r);
    }
  }
}

static void poll_cb(uv_poll_t *h, int status, int events) {
  pg_conn_t *c = h->data;
  if (c->closing || c->poll != h) return;
  if (c->state == PG_C_CONNECTING) {
    connect_step(c);
    return;
  }
  if (c->state == PG_C_DEAD) return;
  int ok = 1, flush = 0;
  if (status < 0) {
    ok = 0;
  } else {
    if (events & UV_READABLE) ok = PQconsumeInput(c->pg);
    if (ok && (c->events & UV_WRITABLE)) {
      flush = PQflush(c->pg);
      if (flush < 0) ok = 0;
    }
  }
  check_socket(c);
  if (!ok) {
    broken(c, PQerrorMessage(c->pg));
    return;
  }
  if (flush == 0 && (c->events & UV_WRITABLE) && c->poll) {
    c->events = UV_READABLE; /* all sent: stop waiting to write */
    uv_poll_start(c->poll, UV_READABLE, poll_cb);
  }
  PGnotify *n;
  while (!c->closing && c->state != PG_C_DEAD && (n = PQnotifies(c->pg)) != NULL) {
    c->on_event(c, PG_EV_NOTIFY, n->relname, n->extra);
    PQfreemem(n);
  }
  if (c->closing || c->state == PG_C_DEAD) return;
  if (c->state == PG_C_BUSY) collect(c);
  if (!c->closing && c->state == PG_C_IDLE && PQstatus(c->pg) == CONNECTION_BAD)
    broken(c, PQerrorMessage(c->pg));
}

static void sent(pg_conn_t *c, int ok, pg_result_cb cb, void *arg) {
  c->cb = cb;
  c->cb_arg = arg;
  c->state = PG_C_BUSY;
  c->timed_out = 0;
  /* A failed send may have read EOF and closed the socket: forget its
   * number now, before the deferred failure or anyone else runs. */
  int r = ok ? PQflush(c->pg) : -1;
  check_socket(c);
  if (r < 0 || c->poll == NULL) {
    defer_broken(c, PQerrorMessage(c->pg));
    return;
  }
  c->events = UV_READABLE | (r ? UV_WRITABLE : 0);
  uv_poll_start(c->poll, c->events, poll_cb);
  if (c->timeout > 0) uv_timer_start(c->timer, query_timeout_cb, (uint64_t)(c->timeout * 1000), 0);
}

void chr_pg_conn_query(pg_conn_t *c, const char *sql, int nparams, const char *const *values,
                       int binary, pg_result_cb cb, void *arg) {
  int ok = nparams < 0 ? PQsendQuery(c->pg, sql)
                       : PQsendQueryParams(c->pg, sql, nparams, NULL, values, NULL, NULL, binary);
  sent(c, ok, cb, arg);
}

void chr_pg_conn_prepare(pg_conn_t *c, const char *name, const char *sql, int nparams,
                         pg_result_cb cb, void *arg) {
  sent(c, PQsendPrepare(c->pg, name, sql, nparams, NULL), cb, arg);
}

void chr_pg_conn_exec(pg_conn_t *c, const char *name, int nparams, const char *const *values,
                      int binary, pg_result_cb cb, void *arg) {
  sent(c, PQsendQueryPrepared(c->pg, name, nparams, values, NULL, NULL, binary), cb, arg);
}

void chr_pg_conn_close(pg_conn_t *c) {
  if (c == NULL || c->closing) return;
  c->closing = 1;
  c->cb = NULL;
  c->state = PG_C_DEAD;
  if (c->res) {
    PQclear(c->res);
    c->res = NULL;
  }
  /* Closing the poll handle takes the socket out of epoll while it is
   * still open; PQfinish closes it after. */
  drop_poll(c);
  uv_close((uv_handle_t *)c->timer, handle_close_cb);
  c->timer = NULL;
  if (c->pg) {
    PQfinish(c->pg);
    c->pg = NULL;
  }
  if (c->gai) uv_cancel((uv_req_t *)c->gai); /* its callback frees it */
  chr_buf_free(&c->hosts);
  chr_buf_free(&c->addrs);
  chr_buf_free(&c->ports);
}

static int sqlstate_is(const char *st, const char *prefix) {
  return st && strncmp(st, prefix, strlen(prefix)) == 0;
}

int chr_pg_result_retryable(const PGresult *res) {
  const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
  return sqlstate_is(st, "40001") || sqlstate_is(st, "40P01");
}

int chr_pg_result_error(pg_conn_t *c, const PGresult *res, char *msg, size_t msglen) {
  if (res == NULL) {
    snprintf(msg, msglen, "postgres unavailable: %s", c->errmsg);
    return CHR_EUNAVAIL;
  }
  ExecStatusType st = PQresultStatus(res);
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return 0;
  const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
  const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
  const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
  char text[sizeof c->errmsg];
  set_err(c, primary ? primary : PQresultErrorMessage(res));
  snprintf(text, sizeof text, "%s", c->errmsg);
  int code;
  /* 57014 is query_canceled: statement_timeout (or a cancel request);
   * 55P03 is lock_not_available: lock_timeout. */
  if (state == NULL || sqlstate_is(state, "08") || sqlstate_is(state, "57P") ||
      sqlstate_is(state, "53"))
    code = CHR_EUNAVAIL;
  else if (sqlstate_is(state, "57014") || sqlstate_is(state, "55P03"))
    code = CHR_ETIMEOUT;
  else if (sqlstate_is(state, "23505"))
    code = CHR_EDUP;
  else if (sqlstate_is(state, "22") || sqlstate_is(state, "23") || sqlstate_is(state, "42"))
    code = CHR_EINVAL;
  else if (sqlstate_is(state, "40"))
    code = CHR_ECONFLICT;
  else
    code = CHR_EUNAVAIL;
  snprintf(msg, msglen, "postgres%s: %s%s%s%s%s%s", code == CHR_EUNAVAIL ? " unavailable" : "",
           text, detail ? " (" : "", detail ? detail : "", detail ? ")" : "",
           state ? " [SQLSTATE " : "", state ? state : "");
  if (state) strncat(msg, "]", msglen - strlen(msg) - 1);
  return code;
}
