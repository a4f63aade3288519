/* httpd.c - the HTTP server (net/httpd.h) in Lua: core.httpd.listen(opts,
 * fn) listens and runs fn(req) as a task for every request; what fn
 * returns (status, headers, body) is the answer. A task may wait (store
 * calls), so a slow request never holds up the loop; a request still
 * running after `request_timeout` seconds is stopped and answered 503.
 * Routing, authentication and the pages live in Lua
 * (lua/chronis/http_server.lua). */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "core/common.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/time.h"
#include "lua/task.h"
#include "lua/util.h"
#include "net/httpd.h"

#define SERVER_MT "chronis.httpd"

typedef struct lserver {
  chr_httpd_t *s;   /* NULL once closed */
  lua_State *L;     /* the main thread */
  int fn_ref;       /* the request function */
  int self_ref;     /* anchors the object while it listens */
  int64_t timeout;  /* µs a request may take */
} lserver_t;

/* Answers given, over every server of the process. */
static uint64_t served;

/* A request's task and the timer that stops it when it takes too long. */
typedef struct inflight {
  uv_timer_t timer;
  chr_httpd_req_t *r;
  chr_task_t *t;
  int timer_on;
} inflight_t;

static void inflight_free(uv_handle_t *h) {
  free(h->data);
}

static void request_timeout_cb(uv_timer_t *h) {
  inflight_t *f = h->data;
  chr_task_kill(f->t, "the request took too long");
}

/* The answer read off a finished task. */
typedef struct answer {
  lua_State *co;
  int status;
  chr_buf_t hdrs; /* name\0value\0... */
  size_t nh;
  const char *body;
  size_t len;
} answer_t;

static int bad_header_text(const char *s) {
  return strpbrk(s, "\r\n") != NULL || *s == '\0';
}

/* Reads status, headers and body from the task's stack (protected: a
 * table walk may run out of memory). */
static int read_answer(lua_State *L) {
  answer_t *a = lua_touserdata(L, 1);
  lua_State *co = a->co;
  int top = lua_gettop(co);
  if (top < 1 || !lua_isinteger(co, 1))
    return luaL_error(L, "the request function must return an integer status first");
  lua_Integer st = lua_tointeger(co, 1);
  if (st < 100 || st > 599) return luaL_error(L, "status %d is not an HTTP status", (int)st);
  a->status = (int)st;
  if (top >= 2 && lua_type(co, 2) == LUA_TTABLE) {
    lua_pushnil(co);
    while (lua_next(co, 2) != 0) {
      if (lua_type(co, -2) != LUA_TSTRING || lua_type(co, -1) != LUA_TSTRING)
        return luaL_error(L, "response headers must be strings");
      const char *n = lua_tostring(co, -2), *v = lua_tostring(co, -1);
      if (bad_header_text(n) || strpbrk(v, "\r\n"))
        return luaL_error(L, "response header '%s' holds a line break or is empty", n);
      chr_buf_add(&a->hdrs, n, strlen(n) + 1);
      chr_buf_add(&a->hdrs, v, strlen(v) + 1);
      a->nh++;
      lua_pop(co, 1);
    }
  }
  if (top >= 3 && lua_type(co, 3) == LUA_TSTRING) a->body = lua_tolstring(co, 3, &a->len);
  return 0;
}

static void answer_error(chr_httpd_req_t *r, int status, const char *code, const char *msg) {
  chr_buf_t b;
  chr_buf_init(&b);
  /* msg is ours or a Lua error text: escaped as a JSON string. */
  chr_buf_printf(&b, "{\"error\":{\"code\":\"%s\",\"message\":\"", code);
  for (const char *p = msg; *p; p++) {
    unsigned char ch = (unsigned char)*p;
    if (ch == '"' || ch == '\\') chr_buf_printf(&b, "\\%c", ch);
    else if (ch < 0x20) chr_buf_printf(&b, "\\u%04x", ch);
    else chr_buf_addc(&b, (char)ch);
  }
  chr_buf_adds(&b, "\"}}");
  const char *hdrs[] = {"Content-Type", "application/json; charset=utf-8", "Cache-Control",
                        "no-store"};
  chr_httpd_respond(r, status, hdrs, 2, b.p, b.len);
  chr_buf_free(&b);
}

static void request_done(chr_task_t *t, int status) {
  inflight_t *f = t->data;
  chr_httpd_req_t *r = f->r;
  served++;
  if (f->timer_on) {
    uv_timer_stop(&f->timer);
    uv_close((uv_handle_t *)&f->timer, inflight_free);
  } else {
    free(f);
  }
  if (status == CHR_TASK_KILLED) {
    answer_error(r, 503, "timeout", "the request took too long and was stopped");
  } else if (status != LUA_OK) {
    const char *msg = NULL;
    chr_buf_t b;
    chr_buf_init(&b);
    chr_lua_describe(t->co, -1, &b);
    msg = b.p ? b.p : "error";
    chr_log(CHR_LOG_ERROR, NULL, "http: %s %s failed: %s", chr_httpd_method(r),
            chr_httpd_target(r), msg);
    answer_error(r, 500, "error", "the request failed; the server log has the details");
    chr_buf_free(&b);
  } else {
    answer_t a = {.co = t->co};
    chr_buf_init(&a.hdrs);
    char err[256];
    if (chr_lua_cpcall(chr_task_main(), read_answer, &a, err, sizeof err) != LUA_OK) {
      chr_log(CHR_LOG_ERROR, NULL, "http: %s %s: %s", chr_httpd_method(r), chr_httpd_target(r),
              err);
      answer_error(r, 500, "error", "the request failed; the server log has the details");
    } else {
      const char **hv = chr_malloc((2 * a.nh + 1) * sizeof *hv);
      const char *p = a.hdrs.p;
      for (size_t i = 0; i < 2 * a.nh; i++) {
        hv[i] = p;
        p += strlen(p) + 1;
      }
      chr_httpd_respond(r, a.status, hv, a.nh, a.body, a.len);
      free(hv);
    }
    chr_buf_free(&a.hdrs);
  }
  chr_task_release(t);
}

/* The request as a table: method, target, headers (lower-case names;
 * repeated ones joined with ", "), body, remote. */
static int push_request(lua_State *L) {
  chr_httpd_req_t *r = lua_touserdata(L, 1);
  lua_createtable(L, 0, 5);
  lua_pushstring(L, chr_httpd_method(r));
  lua_setfield(L, -2, "method");
  lua_pushstring(L, chr_httpd_target(r));
  lua_setfield(L, -2, "target");
  lua_pushstring(L, chr_httpd_remote(r));
  lua_setfield(L, -2, "remote");
  size_t len;
  const char *body = chr_httpd_body(r, &len);
  lua_pushlstring(L, body, len);
  lua_setfield(L, -2, "body");
  size_t nh = chr_httpd_nheaders(r);
  lua_createtable(L, 0, (int)nh);
  for (size_t i = 0; i < nh; i++) {
    const char *n = chr_httpd_header_name(r, i);
    if (lua_getfield(L, -1, n) == LUA_TSTRING) {
      lua_pushstring(L, ", ");
      lua_pushstring(L, chr_httpd_header_value(r, i));
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushstring(L, chr_httpd_header_value(r, i));
    }
    lua_setfield(L, -2, n);
  }
  lua_setfield(L, -2, "headers");
  return 1;
}

static void on_request(chr_httpd_req_t *r, void *data) {
  lserver_t *ls = data;
  lua_State *L = ls->L;
  inflight_t *f = chr_calloc(1, sizeof *f);
  f->r = r;
  chr_task_t *t = chr_task_new(L, request_done, f);
  f->t = t;
  lua_State *co = t->co;
  lua_rawgeti(co, LUA_REGISTRYINDEX, ls->fn_ref);
  lua_pushcfunction(co, push_request);
  lua_pushlightuserdata(co, r);
  if (lua_pcall(co, 1, 1, 0) != LUA_OK) { /* out of memory under the cap */
    lua_settop(co, 0);
    chr_task_release(t);
    free(f);
    answer_error(r, 503, "memory", "out of memory");
    return;
  }
  if (ls->timeout > 0) {
    /* Lua code that computes is stopped at the deadline; one that waits,
     * by the timer. */
    chr_task_set_deadline(t, chr_time_mono() + ls->timeout);
    uv_timer_init(chr_loop(), &f->timer);
    f->timer.data = f;
    f->timer_on = 1;
    uv_timer_start(&f->timer, request_timeout_cb, (uint64_t)(ls->timeout / 1000), 0);
  }
  chr_task_start(t, 1);
}

/* core.httpd.listen{host=, port=, max_body=, max_head=, max_conns=, rate=,
 * burst=, timeout=, request_timeout=}, fn -> server */
static int l_listen(lua_State *L) {
  chr_lua_checktype(L, 1, LUA_TTABLE);
  chr_lua_checktype(L, 2, LUA_TFUNCTION);
  static const char *const known[] = {"host", "port", "max_body", "max_head", "max_conns", "rate",
                                      "burst", "timeout", "request_timeout", NULL};
  chr_lua_checkkeys(L, 1, "http server option", known, NULL, NULL);
  chr_httpd_opts_t o;
  chr_httpd_opts_init(&o);
  lua_getfield(L, 1, "host");
  if (!lua_isnil(L, -1)) o.host = luaL_checkstring(L, -1);
  o.port = (int)chr_lua_optnumber(L, 1, "port", 0, 0, 65535);
  o.max_body = (size_t)chr_lua_optnumber(L, 1, "max_body", (double)o.max_body, 0, 1 << 30);
  o.max_head = (size_t)chr_lua_optnumber(L, 1, "max_head", (double)o.max_head, 1024, 1 << 20);
  o.max_conns = (int)chr_lua_optnumber(L, 1, "max_conns", o.max_conns, 1, 100000);
  o.rate = chr_lua_optnumber(L, 1, "rate", o.rate, 0, 1e9);
  o.burst = chr_lua_optnumber(L, 1, "burst", o.burst, 1, 1e9);
  o.timeout_ms = (int)(chr_lua_optnumber(L, 1, "timeout", o.timeout_ms / 1000.0, 0.001, 86400) * 1000);
  double req_timeout = chr_lua_optnumber(L, 1, "request_timeout", 30, 0, 86400);
  lserver_t *ls = lua_newuserdatauv(L, sizeof *ls, 0);
  memset(ls, 0, sizeof *ls);
  ls->fn_ref = LUA_NOREF;
  ls->self_ref = LUA_NOREF;
  luaL_setmetatable(L, SERVER_MT);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  ls->L = lua_tothread(L, -1);
  lua_pop(L, 1);
  ls->timeout = (int64_t)(req_timeout * 1e6);
  char err[256];
  int rc = chr_httpd_start(&o, on_request, ls, &ls->s, err, sizeof err);
  if (rc != 0) return chr_lua_error(L, rc, "%s", err);
  lua_pushvalue(L, 2);
  ls->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, -1);
  ls->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 1;
}

static void server_close(lua_State *L, lserver_t *ls) {
  if (ls->s == NULL) return;
  chr_httpd_close(ls->s);
  ls->s = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, ls->fn_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, ls->self_ref);
  ls->fn_ref = ls->self_ref = LUA_NOREF;
}

static lserver_t *check_server(lua_State *L) {
  return chr_lua_checkudata(L, 1, SERVER_MT);
}

static int l_close(lua_State *L) {
  server_close(L, check_server(L));
  return 0;
}

static int l_port(lua_State *L) {
  lserver_t *ls = check_server(L);
  if (ls->s == NULL) return chr_lua_error(L, CHR_ESTATE, "the http server is closed");
  lua_pushinteger(L, chr_httpd_port(ls->s));
  return 1;
}


static int l_gc(lua_State *L) {
  lserver_t *ls = lua_touserdata(L, 1);
  /* Anchored while open: collected only at the state's end. */
  if (ls->s) chr_httpd_close(ls->s);
  ls->s = NULL;
  return 0;
}

/* Requests in flight, and answers given, over every server. */
static int l_pending(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)chr_httpd_pending());
  lua_pushinteger(L, (lua_Integer)served);
  return 2;
}

int luaopen_chronis_httpd(lua_State *L) {
  static const luaL_Reg meta[] = {{"__gc", l_gc}, {NULL, NULL}};
  static const luaL_Reg methods[] = {
      {"close", l_close}, {"port", l_port}, {NULL, NULL}};
  chr_lua_classmeta(L, SERVER_MT, meta, methods);
  lua_pop(L, 1);
  static const luaL_Reg fns[] = {{"listen", l_listen}, {"pending", l_pending}, {NULL, NULL}};
  luaL_newlib(L, fns);
  return 1;
}
