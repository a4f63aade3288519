/* httpd.c - the HTTP/1.1 server on the loop (httpd.h).
 *
 * A connection reads into libhttp-parser, which calls back with the
 * request's pieces; they are gathered into a chr_httpd_req_t under the
 * size limits. When a request is whole the parser is paused, the rest of
 * what was read is kept, and the request goes to the server's callback.
 * Its answer is written; once written, the connection goes on with what it
 * kept (pipelined requests) or reads again. So a connection has at most
 * one request in flight, and a client that sends faster than it is
 * answered is held back by its own buffer limit.
 *
 * Ownership: the server owns its connections; a connection owns the
 * request it is gathering, and points to the one in flight, which the
 * callback's side owns until it answers. When a connection closes first,
 * the request in flight is cut loose (conn = NULL) and its answer only
 * frees it. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <http_parser.h>
#include <uv.h>

#include "core/common.h"
#include "core/loop.h"
#include "core/time.h"
#include "net/httpd.h"

typedef struct conn conn_t;

/* A client address's token bucket. */
typedef struct bucket {
  char addr[48];
  double tokens;
  int64_t at; /* chr_time_mono() of the last refill */
} bucket_t;

#define NBUCKETS 256

struct chr_httpd {
  uv_tcp_t listener;
  chr_httpd_opts_t o;
  char host[48];
  int port;
  chr_httpd_cb cb;
  void *data;
  conn_t *conns;
  int nconns;
  int closing;
  int listener_open;
  chr_httpd_t *prev, *next; /* every server of the process */
  bucket_t buckets[NBUCKETS];
};

typedef struct header {
  char *name, *value;
} header_t;

struct chr_httpd_req {
  conn_t *conn; /* NULL once the connection is gone */
  char method[16];
  chr_buf_t target;
  header_t *headers;
  size_t nheaders, cap;
  chr_buf_t field, value; /* the header being read */
  int in_value;
  chr_buf_t body;
  char remote[48];
  int keep_alive;
  int head; /* HEAD: the answer has no body */
};

/* Why a request cannot be gathered: answered by the server itself. */
enum { BAD_NONE, BAD_HEAD, BAD_BODY };

struct conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  chr_httpd_t *srv;
  conn_t *prev, *next;
  http_parser parser;
  chr_httpd_req_t *cur;     /* being gathered */
  chr_httpd_req_t *flight;  /* handed to the callback, not yet answered */
  chr_buf_t kept;           /* read while a request was in flight */
  size_t head_bytes;
  int bad;                  /* BAD_*: why the parser was stopped */
  int open_handles;
  unsigned closing : 1, eof : 1, reading : 1, writing : 1, close_after : 1;
  char remote[48];
};

typedef struct wreq {
  uv_write_t w;
  conn_t *c;
  char *buf;
} wreq_t;

static chr_httpd_t *servers;
static size_t npending;

static const http_parser_settings settings;

void chr_httpd_opts_init(chr_httpd_opts_t *o) {
  memset(o, 0, sizeof *o);
  o->host = "127.0.0.1";
  o->max_body = 1 << 20;
  o->max_head = 16 << 10;
  o->max_conns = 256;
  o->rate = 50;
  o->burst = 100;
  o->timeout_ms = 10000;
}

/* ---- requests ---- */

static chr_httpd_req_t *req_new(conn_t *c) {
  chr_httpd_req_t *r = chr_calloc(1, sizeof *r);
  r->conn = c;
  chr_buf_init(&r->target);
  chr_buf_init(&r->field);
  chr_buf_init(&r->value);
  chr_buf_init(&r->body);
  memcpy(r->remote, c->remote, sizeof r->remote);
  return r;
}

static void req_free(chr_httpd_req_t *r) {
  for (size_t i = 0; i < r->nheaders; i++) {
    free(r->headers[i].name);
    free(r->headers[i].value);
  }
  free(r->headers);
  chr_buf_free(&r->target);
  chr_buf_free(&r->field);
  chr_buf_free(&r->value);
  chr_buf_free(&r->body);
  free(r);
}

static void commit_header(chr_httpd_req_t *r) {
  if (!r->in_value) return;
  if (r->nheaders == r->cap) {
    r->cap = r->cap ? r->cap * 2 : 16;
    r->headers = chr_realloc(r->headers, r->cap * sizeof *r->headers);
  }
  char *name = chr_strndup(r->field.p ? r->field.p : "", r->field.len);
  for (char *p = name; *p; p++)
    if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
  r->headers[r->nheaders].name = name;
  r->headers[r->nheaders].value = chr_strndup(r->value.p ? r->value.p : "", r->value.len);
  r->nheaders++;
  r->field.len = r->value.len = 0;
  r->in_value = 0;
}

const char *chr_httpd_method(const chr_httpd_req_t *r) { return r->method; }
const char *chr_httpd_target(const chr_httpd_req_t *r) { return r->target.p ? r->target.p : ""; }
const char *chr_httpd_remote(const chr_httpd_req_t *r) { return r->remote; }
size_t chr_httpd_nheaders(const chr_httpd_req_t *r) { return r->nheaders; }
const char *chr_httpd_header_name(const chr_httpd_req_t *r, size_t i) { return r->headers[i].name; }
const char *chr_httpd_header_value(const chr_httpd_req_t *r, size_t i) {
  return r->headers[i].value;
}
const char *chr_httpd_body(const chr_httpd_req_t *r, size_t *len) {
  *len = r->body.len;
  return r->body.p ? r->body.p : "";
}
int chr_httpd_gone(const chr_httpd_req_t *r) { return r->conn == NULL; }
size_t chr_httpd_pending(void) { return npending; }

/* ---- connections ---- */

static void srv_maybe_free(chr_httpd_t *s) {
  if (!s->closing || s->listener_open || s->conns) return;
  free(s);
}

static void conn_handle_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  if (--c->open_handles > 0) return;
  chr_httpd_t *s = c->srv;
  if (c->prev) c->prev->next = c->next;
  else s->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  s->nconns--;
  chr_buf_free(&c->kept);
  free(c);
  srv_maybe_free(s);
}

static void conn_close(conn_t *c) {
  if (c->closing) return;
  c->closing = 1;
  if (c->cur) req_free(c->cur);
  c->cur = NULL;
  if (c->flight) c->flight->conn = NULL; /* its answer only frees it */
  c->flight = NULL;
  uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
  uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

static void timeout_cb(uv_timer_t *t) { conn_close(t->data); }

static void arm_timer(conn_t *c) {
  uv_timer_start(&c->timer, timeout_cb, (uint64_t)c->srv->o.timeout_ms, 0);
}

static const char *reason(int status) {
  switch (status) {
  case 200: return "OK";
  case 201: return "Created";
  case 204: return "No Content";
  case 301: return "Moved Permanently";
  case 304: return "Not Modified";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 409: return "Conflict";
  case 413: return "Content Too Large";
  case 415: return "Unsupported Media Type";
  case 422: return "Unprocessable Content";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  default: return status < 400 ? "OK" : status < 500 ? "Client Error" : "Server Error";
  }
}

static void feed(conn_t *c, const char *data, size_t len);

static void write_cb(uv_write_t *w, int status) {
  wreq_t *wr = (wreq_t *)w;
  conn_t *c = wr->c;
  free(wr->buf);
  free(wr);
  c->writing = 0;
  if (c->closing) return;
  if (status < 0 || c->close_after || c->eof) {
    conn_close(c);
    return;
  }
  /* Go on with what arrived meanwhile, then read again. */
  http_parser_pause(&c->parser, 0);
  arm_timer(c);
  if (c->kept.len) {
    chr_buf_t kept = c->kept;
    chr_buf_init(&c->kept);
    feed(c, kept.p, kept.len);
    chr_buf_free(&kept);
  }
}

/* Writes one whole answer; the connection closes after it when asked. */
static void send_answer(conn_t *c, int status, const char *const *hdrs, size_t nh, const char *body,
                        size_t len, int keep_alive, int head) {
  chr_buf_t b;
  chr_buf_init(&b);
  chr_buf_printf(&b, "HTTP/1.1 %d %s\r\n", status, reason(status));
  for (size_t i = 0; i < nh; i++)
    chr_buf_printf(&b, "%s: %s\r\n", hdrs[2 * i], hdrs[2 * i + 1]);
  chr_buf_printf(&b, "Content-Length: %zu\r\nConnection: %s\r\n\r\n", len,
                 keep_alive ? "keep-alive" : "close");
  if (!head && len) chr_buf_add(&b, body, len);
  if (!keep_alive) c->close_after = 1;
  wreq_t *wr = chr_malloc(sizeof *wr);
  wr->c = c;
  size_t n = b.len;
  wr->buf = chr_buf_steal(&b);
  uv_buf_t ub = uv_buf_init(wr->buf, (unsigned)n);
  c->writing = 1;
  uv_timer_stop(&c->timer);
  int rc = uv_write(&wr->w, (uv_stream_t *)&c->tcp, &ub, 1, write_cb);
  if (rc < 0) {
    free(wr->buf);
    free(wr);
    c->writing = 0;
    conn_close(c);
  }
}

/* An answer the server gives itself: a JSON error. */
static void send_error(conn_t *c, int status, const char *code, const char *msg, int keep_alive) {
  char body[512];
  int n = snprintf(body, sizeof body, "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}", code, msg);
  const char *hdrs[] = {"Content-Type", "application/json; charset=utf-8", "Retry-After", "1"};
  send_answer(c, status, hdrs, status == 429 || status == 503 ? 2 : 1, body, (size_t)n, keep_alive,
              0);
}

void chr_httpd_respond(chr_httpd_req_t *r, int status, const char *const *hdrs, size_t nh,
                       const char *body, size_t len) {
  conn_t *c = r->conn;
  npending--;
  if (c) {
    c->flight = NULL;
    send_answer(c, status, hdrs, nh, body, len, r->keep_alive && !c->srv->closing, r->head);
  }
  req_free(r);
}

/* Takes one token from the client's bucket; 0 when it has none. */
static int take_token(chr_httpd_t *s, const char *addr) {
  if (s->o.rate <= 0) return 1;
  int64_t now = chr_time_mono();
  bucket_t *b = NULL, *oldest = &s->buckets[0];
  for (int i = 0; i < NBUCKETS; i++) {
    bucket_t *x = &s->buckets[i];
    if (x->at != 0 && strcmp(x->addr, addr) == 0) {
      b = x;
      break;
    }
    if (x->at < oldest->at) oldest = x;
  }
  if (b == NULL) { /* a new client, in place of the longest silent one */
    b = oldest;
    snprintf(b->addr, sizeof b->addr, "%s", addr);
    b->tokens = s->o.burst;
    b->at = now;
  }
  b->tokens += (double)(now - b->at) / 1e6 * s->o.rate;
  if (b->tokens > s->o.burst) b->tokens = s->o.burst;
  b->at = now;
  if (b->tokens < 1) return 0;
  b->tokens -= 1;
  return 1;
}

/* The request is whole: the server's callback answers it. */
static void dispatch(conn_t *c) {
  chr_httpd_req_t *r = c->cur;
  c->cur = NULL;
  if (!take_token(c->srv, c->remote)) {
    int keep = r->keep_alive;
    req_free(r);
    send_error(c, 429, "rate_limited", "too many requests from this address; retry later", keep);
    return;
  }
  c->flight = r;
  npending++;
  c->srv->cb(r, c->srv->data);
}

static void feed(conn_t *c, const char *data, size_t len) {
  size_t n = http_parser_execute(&c->parser, &settings, data, len);
  enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
  if (e == HPE_PAUSED) {
    /* A request is whole: keep what follows it for later. */
    if (n < len) chr_buf_add(&c->kept, data + n, len - n);
    dispatch(c);
    return;
  }
  if (e == HPE_OK) return;
  char msg[160];
  if (c->bad == BAD_BODY) {
    snprintf(msg, sizeof msg, "request body larger than %zu bytes", c->srv->o.max_body);
    send_error(c, 413, "too_large", msg, 0);
  } else if (c->bad == BAD_HEAD) {
    snprintf(msg, sizeof msg, "request line and headers larger than %zu bytes",
             c->srv->o.max_head);
    send_error(c, 431, "too_large", msg, 0);
  } else {
    snprintf(msg, sizeof msg, "malformed HTTP request (%s)", http_errno_description(e));
    send_error(c, 400, "invalid", msg, 0);
  }
  if (c->cur) req_free(c->cur);
  c->cur = NULL;
  uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = 0;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  buf->base = chr_malloc(suggested);
  buf->len = suggested;
}

static void read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = st->data;
  if (nread < 0) {
    free(buf->base);
    /* The client finished sending: answer what is in flight, then close. */
    if (nread == UV_EOF && (c->flight || c->writing)) {
      c->eof = 1;
      uv_read_stop(st);
      c->reading = 0;
    } else {
      conn_close(c);
    }
    return;
  }
  if (nread == 0) {
    free(buf->base);
    return;
  }
  if (c->flight || c->writing || c->parser.http_errno == HPE_PAUSED) {
    /* Pipelined: kept, within what one more request may take. */
    chr_buf_add(&c->kept, buf->base, (size_t)nread);
    free(buf->base);
    if (c->kept.len > c->srv->o.max_head + c->srv->o.max_body) conn_close(c);
    return;
  }
  feed(c, buf->base, (size_t)nread);
  free(buf->base);
}

/* ---- the parser's callbacks ---- */

static int on_message_begin(http_parser *p) {
  conn_t *c = p->data;
  c->cur = req_new(c);
  c->head_bytes = 0;
  c->bad = BAD_NONE;
  arm_timer(c); /* the whole request within the timeout, however slowly it trickles */
  return 0;
}

static int count_head(conn_t *c, size_t n) {
  c->head_bytes += n;
  if (c->head_bytes <= c->srv->o.max_head) return 0;
  c->bad = BAD_HEAD;
  return -1;
}

static int on_url(http_parser *p, const char *at, size_t n) {
  conn_t *c = p->data;
  if (count_head(c, n)) return -1;
  chr_buf_add(&c->cur->target, at, n);
  return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n) {
  conn_t *c = p->data;
  if (count_head(c, n)) return -1;
  commit_header(c->cur);
  chr_buf_add(&c->cur->field, at, n);
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n) {
  conn_t *c = p->data;
  if (count_head(c, n)) return -1;
  c->cur->in_value = 1;
  chr_buf_add(&c->cur->value, at, n);
  return 0;
}

static int on_headers_complete(http_parser *p) {
  conn_t *c = p->data;
  chr_httpd_req_t *r = c->cur;
  commit_header(r);
  snprintf(r->method, sizeof r->method, "%s", http_method_str((enum http_method)p->method));
  r->head = p->method == HTTP_HEAD;
  r->keep_alive = http_should_keep_alive(p);
  if (r->target.len == 0) chr_buf_adds(&r->target, "/");
  if (p->content_length != ULLONG_MAX && p->content_length > c->srv->o.max_body) {
    c->bad = BAD_BODY;
    return -1;
  }
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
  conn_t *c = p->data;
  if (c->cur->body.len + n > c->srv->o.max_body) {
    c->bad = BAD_BODY;
    return -1;
  }
  chr_buf_add(&c->cur->body, at, n);
  return 0;
}

static int on_message_complete(http_parser *p) {
  conn_t *c = p->data;
  if (c->cur) c->cur->keep_alive = http_should_keep_alive(p);
  http_parser_pause(p, 1);
  return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- listening ---- */

static void peer_name(uv_tcp_t *t, char *out, size_t len) {
  struct sockaddr_storage ss;
  int n = sizeof ss;
  snprintf(out, len, "unknown");
  if (uv_tcp_getpeername(t, (struct sockaddr *)&ss, &n) != 0) return;
  if (ss.ss_family == AF_INET)
    uv_ip4_name((struct sockaddr_in *)&ss, out, len);
  else if (ss.ss_family == AF_INET6)
    uv_ip6_name((struct sockaddr_in6 *)&ss, out, len);
}

static void on_connection(uv_stream_t *ls, int status) {
  chr_httpd_t *s = ls->data;
  if (status < 0 || s->closing) return;
  conn_t *c = chr_calloc(1, sizeof *c);
  c->srv = s;
  uv_tcp_init(chr_loop(), &c->tcp);
  uv_timer_init(chr_loop(), &c->timer);
  c->tcp.data = c->timer.data = c;
  c->open_handles = 2;
  chr_buf_init(&c->kept);
  c->next = s->conns;
  if (s->conns) s->conns->prev = c;
  s->conns = c;
  s->nconns++;
  if (uv_accept(ls, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  peer_name(&c->tcp, c->remote, sizeof c->remote);
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  if (s->nconns > s->o.max_conns) {
    send_error(c, 503, "unavailable", "too many connections; retry later", 0);
    return;
  }
  arm_timer(c);
  c->reading = 1;
  uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
}

int chr_httpd_start(const chr_httpd_opts_t *o, chr_httpd_cb cb, void *data, chr_httpd_t **out,
                    char *err, size_t errlen) {
  struct sockaddr_storage ss;
  int v6 = strchr(o->host, ':') != NULL;
  int rc = v6 ? uv_ip6_addr(o->host, o->port, (struct sockaddr_in6 *)&ss)
              : uv_ip4_addr(o->host, o->port, (struct sockaddr_in *)&ss);
  if (rc != 0)
    return chr_errf(err, errlen, "cannot listen on '%s': not a numeric IPv4 or IPv6 address",
                    o->host);
  chr_httpd_t *s = chr_calloc(1, sizeof *s);
  s->o = *o;
  snprintf(s->host, sizeof s->host, "%s", o->host);
  s->o.host = s->host;
  s->cb = cb;
  s->data = data;
  uv_tcp_init(chr_loop(), &s->listener);
  s->listener.data = s;
  s->listener_open = 1;
  rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&ss, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&s->listener, 128, on_connection);
  if (rc != 0) {
    chr_errf(err, errlen, v6 ? "cannot listen on [%s]:%d: %s" : "cannot listen on %s:%d: %s",
             o->host, o->port, uv_strerror(rc));
    s->closing = 1;
    chr_httpd_close(s);
    return CHR_EUNAVAIL;
  }
  struct sockaddr_storage bound;
  int n = sizeof bound;
  uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &n);
  s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                              : ((struct sockaddr_in *)&bound)->sin_port);
  s->next = servers;
  if (servers) servers->prev = s;
  servers = s;
  *out = s;
  return 0;
}

int chr_httpd_port(const chr_httpd_t *s) { return s->port; }

static void listener_closed(uv_handle_t *h) {
  chr_httpd_t *s = h->data;
  s->listener_open = 0;
  srv_maybe_free(s);
}

void chr_httpd_close(chr_httpd_t *s) {
  int listed = s->prev || servers == s;
  if (listed) {
    if (s->prev) s->prev->next = s->next;
    else servers = s->next;
    if (s->next) s->next->prev = s->prev;
  }
  s->prev = s->next = NULL;
  s->closing = 1;
  /* Closing a connection may free the server once the last handle is
   * gone: the listener is closed first, so that cannot happen here. */
  uv_close((uv_handle_t *)&s->listener, listener_closed);
  for (conn_t *c = s->conns; c; c = c->next) conn_close(c);
}

void chr_httpd_shutdown(void) {
  while (servers) chr_httpd_close(servers);
}
