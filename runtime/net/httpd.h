/* httpd.h - an HTTP/1.1 server on the process's loop, for the API, the
 * metrics and the dashboard (docs/http.md). libhttp-parser reads the
 * requests; this file owns the sockets, the limits (connections, head and
 * body sizes, a request rate per client address, slow clients) and the
 * responses. It knows nothing of Lua: a request is handed to a callback,
 * which answers it with chr_httpd_respond, at once or later from another
 * callback. One request per connection is in flight at a time; pipelined
 * requests wait, buffered, until the one before is answered. */
#ifndef CHR_HTTPD_H
#define CHR_HTTPD_H

#include <stddef.h>

typedef struct chr_httpd chr_httpd_t;
typedef struct chr_httpd_req chr_httpd_req_t;

typedef struct chr_httpd_opts {
  const char *host; /* a numeric IPv4 or IPv6 address */
  int port;         /* 0: a free port (chr_httpd_port says which) */
  size_t max_body;  /* bytes of a request body; larger: 413 */
  size_t max_head;  /* bytes of the request line and headers; larger: 431 */
  int max_conns;    /* open connections; past it a new one gets 503 */
  double rate;      /* requests per second per client address (0: no limit); past it 429 */
  double burst;     /* requests a client may send at once before the rate applies */
  int timeout_ms;   /* a request must arrive whole within this, an idle connection is closed after it */
} chr_httpd_opts_t;

/* Sets the defaults: 1 MiB bodies, 16 KiB heads, 256 connections, 50
 * requests/s with bursts of 100, 10 s. */
void chr_httpd_opts_init(chr_httpd_opts_t *o);

/* A request arrived whole. The callback must answer it exactly once
 * (chr_httpd_respond), now or later. */
typedef void (*chr_httpd_cb)(chr_httpd_req_t *r, void *data);

/* Listens on o->host:o->port. Returns 0 and the server in *out, or an
 * error code with a message ("cannot listen on 127.0.0.1:8080: address
 * already in use"). */
int chr_httpd_start(const chr_httpd_opts_t *o, chr_httpd_cb cb, void *data, chr_httpd_t **out,
                    char *err, size_t errlen);
/* The port it listens on. */
int chr_httpd_port(const chr_httpd_t *s);
/* Stops listening and closes every connection; requests still waiting
 * for their answer are answered into the void (chr_httpd_respond only
 * frees them). The server frees itself once its handles have closed. */
void chr_httpd_close(chr_httpd_t *s);
/* Closes every server of the process (at its end). */
void chr_httpd_shutdown(void);
/* Requests handed to callbacks and not yet answered, over all servers. */
size_t chr_httpd_pending(void);

/* The request. Strings are NUL-terminated; they live until it is
 * answered. */
const char *chr_httpd_method(const chr_httpd_req_t *r);
const char *chr_httpd_target(const chr_httpd_req_t *r); /* path and query, as sent */
const char *chr_httpd_remote(const chr_httpd_req_t *r); /* the client's address */
size_t chr_httpd_nheaders(const chr_httpd_req_t *r);
/* Header i: its name in lower case, and its value. */
const char *chr_httpd_header_name(const chr_httpd_req_t *r, size_t i);
const char *chr_httpd_header_value(const chr_httpd_req_t *r, size_t i);
const char *chr_httpd_body(const chr_httpd_req_t *r, size_t *len);
/* 1 when the connection has gone away: the answer will not be sent. */
int chr_httpd_gone(const chr_httpd_req_t *r);

/* Answers r and frees it. hdrs holds nh name/value pairs (2 * nh
 * strings; names and values without CR or LF, which the caller checks);
 * Content-Length and Connection are added here. */
void chr_httpd_respond(chr_httpd_req_t *r, int status, const char *const *hdrs, size_t nh,
                       const char *body, size_t len);

#endif
