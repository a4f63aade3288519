/* http.c - chronis.http (see http.h). libcurl's multi interface on the
 * libuv loop: curl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION
 * -> one uv_poll_t per socket) and when to call it back
 * (CURLMOPT_TIMERFUNCTION -> one uv timer); we hand socket events and
 * timeouts to curl_multi_socket_action and collect finished transfers.
 *
 * A request is a waiter (task.h). When its task is killed while it waits
 * (handler timeout), the waiter's cancel removes the transfer from the
 * multi handle and frees it at once. A waiter orphaned otherwise (a wait
 * refused inside a running loop) is reaped by a timer that runs while
 * requests are in flight, so no transfer outlives its caller for long. */
#include "http.h"

#include <ctype.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "core/loop.h"
#include "core/suggest.h"
#include "lua/util.h"
#include "lua/task.h"

#define DEFAULT_TIMEOUT 30.0
#define DEFAULT_MAX_BODY ((lua_Integer)64 << 20)
#define EASY_POOL_MAX 16
#define REAP_MS 100

typedef struct http_req http_req_t;

struct http_req {
  chr_waiter_t w; /* first: a request is its waiter */
  CURL *easy;
  struct curl_slist *headers;
  char *method, *url, *body;
  size_t body_len;
  chr_buf_t resp;  /* response body */
  chr_buf_t hlines; /* header lines of the last response (after redirects, 1xx) */
  size_t max_body;
  double timeout;
  long status;
  CURLcode rc;
  int too_large;
  char errbuf[CURL_ERROR_SIZE];
  http_req_t *prev, *next; /* in flight */
};

typedef struct sock_ctx sock_ctx_t;
struct sock_ctx {
  uv_poll_t poll;
  curl_socket_t fd;
  sock_ctx_t *prev, *next;
};

static struct {
  CURLM *multi;
  uv_timer_t *timer;  /* curl's timeout */
  uv_timer_t *reaper; /* frees orphaned requests */
  http_req_t *inflight;
  size_t ninflight;
  sock_ctx_t *socks;
  CURL *pool[EASY_POOL_MAX];
  size_t npool;
} H;

static void drain(void);

size_t chr_http_inflight(void) {
  return H.ninflight;
}

/* ---- requests ---- */

static void link_req(http_req_t *r) {
  r->prev = NULL;
  r->next = H.inflight;
  if (H.inflight) H.inflight->prev = r;
  H.inflight = r;
  H.ninflight++;
}

static void unlink_req(http_req_t *r) {
  if (r->prev) r->prev->next = r->next;
  else H.inflight = r->next;
  if (r->next) r->next->prev = r->prev;
  r->prev = r->next = NULL;
  H.ninflight--;
}

static void free_req(http_req_t *r) {
  if (r->easy) {
    if (H.npool < EASY_POOL_MAX) {
      curl_easy_reset(r->easy);
      H.pool[H.npool++] = r->easy;
    } else {
      curl_easy_cleanup(r->easy);
    }
  }
  curl_slist_free_all(r->headers);
  free(r->method);
  free(r->url);
  free(r->body);
  chr_buf_free(&r->resp);
  chr_buf_free(&r->hlines);
  free(r);
}

static void idle_check(void) {
  if (H.ninflight > 0) return;
  if (H.timer) uv_timer_stop(H.timer);
  if (H.reaper) uv_timer_stop(H.reaper);
}

/* Removes a transfer nobody waits for any more. */
static void cancel_req(http_req_t *r) {
  curl_multi_remove_handle(H.multi, r->easy);
  unlink_req(r);
  free_req(r);
}

static void reaper_cb(uv_timer_t *t) {
  (void)t;
  http_req_t *r = H.inflight;
  while (r) {
    http_req_t *next = r->next;
    if (r->w.orphaned) cancel_req(r);
    r = next;
  }
  idle_check();
}

/* ---- curl <-> libuv ---- */

static void sock_close_cb(uv_handle_t *h) {
  free(h->data);
}

static void sock_release(sock_ctx_t *c) {
  if (c->prev) c->prev->next = c->next;
  else H.socks = c->next;
  if (c->next) c->next->prev = c->prev;
  uv_poll_stop(&c->poll);
  uv_close((uv_handle_t *)&c->poll, sock_close_cb);
}

static void poll_cb(uv_poll_t *h, int status, int events) {
  sock_ctx_t *c = h->data;
  int flags = 0, running = 0;
  if (status < 0) flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  /* c may be released inside this call (CURL_POLL_REMOVE): not used after. */
  curl_multi_socket_action(H.multi, c->fd, flags, &running);
  drain();
}

static int socket_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp) {
  sock_ctx_t *c = socketp;
  (void)e;
  (void)userp;
  if (what == CURL_POLL_REMOVE) {
    if (c) {
      curl_multi_assign(H.multi, s, NULL);
      sock_release(c);
    }
    return 0;
  }
  if (c == NULL) {
    c = chr_calloc(1, sizeof *c);
    if (uv_poll_init_socket(chr_loop(), &c->poll, s) != 0) {
      free(c);
      return -1;
    }
    c->fd = s;
    c->poll.data = c;
    c->next = H.socks;
    if (H.socks) H.socks->prev = c;
    H.socks = c;
    curl_multi_assign(H.multi, s, c);
  }
  int events = 0;
  if (what & CURL_POLL_IN) events |= UV_READABLE;
  if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
  uv_poll_start(&c->poll, events, poll_cb);
  return 0;
}

static void timer_cb(uv_timer_t *t) {
  int running = 0;
  (void)t;
  curl_multi_socket_action(H.multi, CURL_SOCKET_TIMEOUT, 0, &running);
  drain();
}

static int timer_func(CURLM *m, long timeout_ms, void *userp) {
  (void)m;
  (void)userp;
  if (timeout_ms < 0) uv_timer_stop(H.timer);
  else uv_timer_start(H.timer, timer_cb, (uint64_t)timeout_ms, 0);
  return 0;
}

/* Answers every finished transfer. Answering may resume a task that
 * starts new requests: that only adds handles, which is allowed here. */
static void drain(void) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(H.multi, &left)) != NULL) {
    if (msg->msg != CURLMSG_DONE) continue;
    CURL *e = msg->easy_handle;
    CURLcode rc = msg->data.result;
    char *priv = NULL;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
    http_req_t *r = (http_req_t *)(void *)priv;
    curl_multi_remove_handle(H.multi, e);
    r->rc = rc;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r->status);
    unlink_req(r);
    chr_waiter_done(&r->w); /* frees r when orphaned */
  }
  idle_check();
}

static void handle_close_cb(uv_handle_t *h) {
  free(h);
}

static void ensure_multi(void) {
  if (H.multi) return;
  curl_global_init(CURL_GLOBAL_DEFAULT);
  H.multi = curl_multi_init();
  if (H.multi == NULL) abort();
  curl_multi_setopt(H.multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
  curl_multi_setopt(H.multi, CURLMOPT_TIMERFUNCTION, timer_func);
  H.timer = chr_malloc(sizeof *H.timer);
  uv_timer_init(chr_loop(), H.timer);
  H.reaper = chr_malloc(sizeof *H.reaper);
  uv_timer_init(chr_loop(), H.reaper);
  /* The reaper alone must not keep the loop alive. */
  uv_unref((uv_handle_t *)H.reaper);
}

void chr_http_shutdown(void) {
  if (H.multi == NULL) return;
  while (H.inflight) cancel_req(H.inflight);
  while (H.socks) sock_release(H.socks);
  /* Sockets are closed by curl below; their poll handles are already
   * closing, so curl's REMOVE calls find nothing to do. */
  curl_multi_setopt(H.multi, CURLMOPT_SOCKETFUNCTION, NULL);
  curl_multi_setopt(H.multi, CURLMOPT_TIMERFUNCTION, NULL);
  curl_multi_cleanup(H.multi);
  H.multi = NULL;
  while (H.npool) curl_easy_cleanup(H.pool[--H.npool]);
  uv_close((uv_handle_t *)H.timer, handle_close_cb);
  uv_close((uv_handle_t *)H.reaper, handle_close_cb);
  H.timer = H.reaper = NULL;
}

/* ---- the transfer's callbacks ---- */

static size_t write_cb(char *p, size_t size, size_t n, void *ud) {
  http_req_t *r = ud;
  size_t len = size * n;
  if (r->resp.len + len > r->max_body) {
    r->too_large = 1;
    return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
  }
  chr_buf_add(&r->resp, p, len);
  return len;
}

static size_t header_cb(char *p, size_t size, size_t n, void *ud) {
  http_req_t *r = ud;
  size_t len = size * n;
  /* A status line starts a new response (a redirect, 100 Continue): only
   * the last response's headers are kept. */
  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) r->hlines.len = 0;
  else chr_buf_add(&r->hlines, p, len);
  return len;
}

/* ---- Lua ---- */

static int is_token(const char *s) {
  if (*s == '\0') return 0;
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c <= 32 || c >= 127 || strchr("\"(),/:;<=>?@[\\]{}", c)) return 0;
  }
  return 1;
}

static int has_crlf(const char *s, size_t n) {
  return memchr(s, '\r', n) != NULL || memchr(s, '\n', n) != NULL || memchr(s, '\0', n) != NULL;
}

/* stack: +1 the headers table of the response */
static void push_headers(lua_State *L, http_req_t *r) {
  lua_newtable(L);
  const char *p = r->hlines.p ? r->hlines.p : "", *end = p + r->hlines.len;
  char name[256];
  size_t nlen = 0;
  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    const char *next = eol ? eol + 1 : end;
    const char *e = eol ? eol : end;
    if (e > p && e[-1] == '\r') e--;
    if (e == p) {
      p = next;
      continue;
    }
    const char *colon = memchr(p, ':', (size_t)(e - p));
    const char *v;
    int folded = 0;
    if ((*p == ' ' || *p == '\t') && nlen > 0) {
      v = p; /* an obsolete folded line continues the previous value */
      folded = 1;
    } else if (colon && colon > p && (size_t)(colon - p) < sizeof name) {
      nlen = (size_t)(colon - p);
      for (size_t i = 0; i < nlen; i++) name[i] = (char)tolower((unsigned char)p[i]);
      v = colon + 1;
    } else {
      p = next;
      continue;
    }
    while (v < e && (*v == ' ' || *v == '\t')) v++;
    const char *ve = e;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
    lua_pushlstring(L, name, nlen);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TSTRING) {
      /* Repeated fields are joined with ", " (RFC 9110 §5.3). */
      lua_pushstring(L, folded ? " " : ", ");
      lua_pushlstring(L, v, (size_t)(ve - v));
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushlstring(L, v, (size_t)(ve - v));
    }
    lua_rawset(L, -3);
    p = next;
  }
}

static int req_finish(lua_State *L, chr_waiter_t *w) {
  http_req_t *r = (http_req_t *)w;
  if (r->rc != CURLE_OK) {
    int code;
    if (r->rc == CURLE_OPERATION_TIMEDOUT) code = CHR_ETIMEOUT;
    else if (r->too_large || r->rc == CURLE_URL_MALFORMAT || r->rc == CURLE_UNSUPPORTED_PROTOCOL)
      code = CHR_EINVAL;
    else code = CHR_EUNAVAIL;
    if (r->rc == CURLE_OPERATION_TIMEDOUT)
      lua_pushfstring(L, "http %s %s: no response within %fs", r->method, r->url, r->timeout);
    else if (r->too_large)
      lua_pushfstring(L, "http %s %s: response body larger than max_body (%I bytes)", r->method,
                      r->url, (lua_Integer)r->max_body);
    else
      lua_pushfstring(L, "http %s %s: %s", r->method, r->url,
                      r->errbuf[0] ? r->errbuf : curl_easy_strerror(r->rc));
    free_req(r);
    return chr_lua_error(L, code, "%s", lua_tostring(L, -1));
  }
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, r->status);
  lua_setfield(L, -2, "status");
  push_headers(L, r);
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, r->resp.p ? r->resp.p : "", r->resp.len);
  lua_setfield(L, -2, "body");
  free_req(r);
  return 1;
}

static void req_release(chr_waiter_t *w) {
  free_req((http_req_t *)w);
}

/* The task waiting on the request was killed: stop the transfer now. */
static void req_cancel(chr_waiter_t *w) {
  cancel_req((http_req_t *)w);
  idle_check();
}

/* Reads field k of the options table (stack: 1) as an optional number. */
static double opt_number(lua_State *L, const char *k, double def) {
  double v = def;
  int t = lua_getfield(L, 1, k);
  if (t != LUA_TNIL) {
    if (!lua_isnumber(L, -1)) chr_lua_error(L, CHR_EINVAL, "http.request: option '%s' must be a number", k);
    v = lua_tonumber(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

static int opt_bool(lua_State *L, const char *k, int def) {
  int t = lua_getfield(L, 1, k);
  int v = t == LUA_TNIL ? def : lua_toboolean(L, -1);
  if (t != LUA_TNIL && t != LUA_TBOOLEAN) chr_lua_error(L, CHR_EINVAL, "http.request: option '%s' must be a boolean", k);
  lua_pop(L, 1);
  return v;
}

static const char *const known_opts[] = {"method", "url", "headers", "body", "timeout",
                                         "follow_redirects", "verify", "ca_file", "max_body",
                                         NULL};

/* Checks the headers table (stack: idx); returns whether it names k
 * (case-insensitively). */
static int check_headers(lua_State *L, int idx, const char *k, int *has_k2, const char *k2) {
  int found = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t vn;
    if (lua_type(L, -2) != LUA_TSTRING || !is_token(lua_tostring(L, -2)))
      chr_lua_error(L, CHR_EINVAL, "http.request: option 'headers': header names must be strings of token characters");
    if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
      chr_lua_error(L, CHR_EINVAL, "http.request: option 'headers': header '%s' must be a string or a number", lua_tostring(L, -2));
    const char *v = lua_tolstring(L, -1, &vn); /* converts a number in place: fine for next */
    if (has_crlf(v, vn))
      chr_lua_error(L, CHR_EINVAL, "http.request: option 'headers': header '%s' contains CR, LF or NUL", lua_tostring(L, -2));
    if (strcasecmp(lua_tostring(L, -2), k) == 0) found = 1;
    if (strcasecmp(lua_tostring(L, -2), k2) == 0) *has_k2 = 1;
    lua_pop(L, 1);
  }
  return found;
}

/* request{method=, url=, headers=, body=, timeout=, follow_redirects=,
 * verify=, ca_file=, max_body=} or request(url) -> {status, headers, body} */
static int l_request(lua_State *L) {
  if (lua_type(L, 1) == LUA_TSTRING) {
    lua_createtable(L, 0, 1);
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "url");
    lua_replace(L, 1);
  }
  chr_lua_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  /* Every unknown option at once, with the closest known one. */
  chr_unknown_t unknown;
  chr_unknown_init(&unknown);
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    int ok = 0;
    if (lua_type(L, -2) == LUA_TSTRING)
      for (int i = 0; known_opts[i]; i++) ok |= strcmp(lua_tostring(L, -2), known_opts[i]) == 0;
    lua_pop(L, 1);
    if (!ok) {
      size_t n;
      lua_pushvalue(L, -1);
      const char *k = luaL_tolstring(L, -1, &n); /* a key: no __tostring can raise */
      chr_unknown_add(&unknown, k, n);
      lua_pop(L, 2);
    }
  }
  if (unknown.n > 0) {
    chr_buf_t b;
    chr_buf_init(&b);
    chr_unknown_format(&unknown, "option", known_opts, NULL, &b);
    chr_unknown_free(&unknown);
    lua_pushstring(L, b.p);
    chr_buf_free(&b);
    return chr_lua_error(L, CHR_EINVAL, "http.request: %s", lua_tostring(L, -1));
  }
  /* Every check comes before anything is allocated: an error leaks nothing. */
  lua_getfield(L, 1, "url"); /* 2 */
  size_t url_len;
  const char *url = lua_tolstring(L, 2, &url_len);
  if (url == NULL || url_len == 0) return chr_lua_error(L, CHR_EINVAL, "http.request: option 'url' is required (a string)");
  if (has_crlf(url, url_len)) return chr_lua_error(L, CHR_EINVAL, "http.request: option 'url' contains CR, LF or NUL");
  lua_getfield(L, 1, "method"); /* 3 */
  if (lua_isnil(L, 3)) {
    lua_pushliteral(L, "GET");
    lua_replace(L, 3);
  }
  if (lua_type(L, 3) != LUA_TSTRING) return chr_lua_error(L, CHR_EINVAL, "http.request: option 'method' must be a string");
  char method[32];
  {
    size_t mn;
    const char *m = lua_tolstring(L, 3, &mn);
    if (mn == 0 || mn >= sizeof method || !is_token(m))
      return chr_lua_error(L, CHR_EINVAL, "http.request: option 'method': invalid method '%s'", m);
    for (size_t i = 0; i <= mn; i++) method[i] = (char)toupper((unsigned char)m[i]);
  }
  lua_getfield(L, 1, "body"); /* 4 */
  size_t body_len = 0;
  const char *body = NULL;
  if (!lua_isnil(L, 4)) {
    if (lua_type(L, 4) != LUA_TSTRING) return chr_lua_error(L, CHR_EINVAL, "http.request: option 'body' must be a string");
    body = lua_tolstring(L, 4, &body_len);
  }
  lua_getfield(L, 1, "headers"); /* 5 */
  int has_ct = 0, has_ua = 0;
  if (!lua_isnil(L, 5)) {
    if (!lua_istable(L, 5)) return chr_lua_error(L, CHR_EINVAL, "http.request: option 'headers' must be a table");
    has_ct = check_headers(L, 5, "content-type", &has_ua, "user-agent");
  }
  double timeout = opt_number(L, "timeout", DEFAULT_TIMEOUT);
  if (!(timeout >= 0)) return chr_lua_error(L, CHR_EINVAL, "http.request: option 'timeout' must be >= 0 (0 = none)");
  lua_Integer max_body = (lua_Integer)opt_number(L, "max_body", (double)DEFAULT_MAX_BODY);
  if (max_body < 0) return chr_lua_error(L, CHR_EINVAL, "http.request: option 'max_body' must be >= 0");
  int follow = opt_bool(L, "follow_redirects", 0);
  int verify = opt_bool(L, "verify", 1);
  lua_getfield(L, 1, "ca_file"); /* 6 */
  if (!lua_isnil(L, 6) && lua_type(L, 6) != LUA_TSTRING)
    return chr_lua_error(L, CHR_EINVAL, "http.request: option 'ca_file' must be a string");
  const char *ca_file = lua_tostring(L, 6);

  ensure_multi();
  http_req_t *r = chr_calloc(1, sizeof *r);
  r->w.finish = req_finish;
  r->w.release = req_release;
  r->w.cancel = req_cancel;
  r->method = chr_strdup(method);
  r->url = chr_strndup(url, url_len);
  r->timeout = timeout;
  r->max_body = (size_t)max_body;
  chr_buf_init(&r->resp);
  chr_buf_init(&r->hlines);
  r->easy = H.npool ? H.pool[--H.npool] : curl_easy_init();
  if (r->easy == NULL) {
    free_req(r);
    return chr_lua_error(L, CHR_ENOMEM, "http.request: cannot create a transfer");
  }
  CURL *e = r->easy;
  curl_easy_setopt(e, CURLOPT_URL, r->url);
  curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)(void *)r);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000 + 0.5));
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, (long)follow);
  curl_easy_setopt(e, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, (long)verify);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, verify ? 2L : 0L);
  if (ca_file) curl_easy_setopt(e, CURLOPT_CAINFO, ca_file);
  if (strcmp(method, "GET") == 0 && body == NULL) {
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  } else if (strcmp(method, "HEAD") == 0) {
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  } else {
    if (body || strcmp(method, "POST") == 0) {
      r->body = chr_malloc(body_len + 1);
      if (body_len) memcpy(r->body, body, body_len);
      r->body_len = body_len;
      curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    if (strcmp(method, "POST") != 0) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
  }
  /* No "Expect: 100-continue" round trip, and no form content type that
   * the caller did not ask for. */
  r->headers = curl_slist_append(r->headers, "Expect:");
  if (r->body && !has_ct) r->headers = curl_slist_append(r->headers, "Content-Type:");
  if (!has_ua) r->headers = curl_slist_append(r->headers, "User-Agent: chronis/" CHR_VERSION);
  if (lua_istable(L, 5)) {
    lua_pushnil(L);
    while (lua_next(L, 5)) {
      size_t vn;
      const char *v = lua_tolstring(L, -1, &vn);
      char *line = vn ? chr_sprintf("%s: %s", lua_tostring(L, -2), v)
                      : chr_sprintf("%s;", lua_tostring(L, -2)); /* curl's "empty value" form */
      r->headers = curl_slist_append(r->headers, line);
      free(line);
      lua_pop(L, 1);
    }
  }
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
  link_req(r);
  CURLMcode mc = curl_multi_add_handle(H.multi, e);
  if (mc != CURLM_OK) {
    unlink_req(r);
    r->rc = CURLE_FAILED_INIT;
    snprintf(r->errbuf, sizeof r->errbuf, "%s", curl_multi_strerror(mc));
    r->w.done = 1;
  } else if (!uv_is_active((uv_handle_t *)H.reaper)) {
    uv_timer_start(H.reaper, reaper_cb, REAP_MS, REAP_MS);
  }
  return chr_wait(L, &r->w);
}

static int l_inflight(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)H.ninflight);
  return 1;
}

static int l_version(lua_State *L) {
  lua_pushstring(L, curl_version());
  return 1;
}

/* The process's state ends with the Lua state that loaded the module. */
static int sentinel_gc(lua_State *L) {
  (void)L;
  chr_http_shutdown();
  return 0;
}

static char sentinel_key;

int luaopen_chronis_http(lua_State *L) {
  static const luaL_Reg fns[] = {{"request", l_request},
                                 {"inflight", l_inflight},
                                 {"version", l_version},
                                 {NULL, NULL}};
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &sentinel_key) == LUA_TNIL) {
    lua_newuserdatauv(L, 1, 0);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, sentinel_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &sentinel_key);
  }
  lua_pop(L, 1);
  luaL_newlib(L, fns);
  return 1;
}
