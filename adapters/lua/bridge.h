/* bridge.h - what the bridges for adapters written in Lua share (stores:
 * lua_store.c; locks: lua_lock.c). Each request calls one method of the
 * adapter table in a task of its own, so the method may wait; a call that
 * does not return within the timeout is killed; closing kills the calls
 * still pending, and each is answered once, through its `done`. */
#ifndef CHR_ADAPTERS_LUA_BRIDGE_H
#define CHR_ADAPTERS_LUA_BRIDGE_H

#include <lua.h>
#include <stdint.h>
#include <uv.h>

#include "lua/task.h"

typedef struct chr_bridge_call chr_bridge_call_t;

typedef struct chr_bridge {
  lua_State *L;
  int adapter_ref; /* the adapter table */
  char *name;
  const char *kind; /* "lua adapter", "lua lock": starts messages */
  const char *what; /* "store", "lock": what closing closes */
  uint64_t timeout_ms; /* 0: none */
  chr_bridge_call_t *calls; /* the pending ones */
  int pending;
  int closing; /* 1 from close on; 2 while close answers the calls */
} chr_bridge_t;

/* Called once per call with the task's status (LUA_OK: the results are on
 * co from index 1; otherwise see chr_bridge_failure), before the call is
 * freed by chr_bridge_end. */
typedef void (*chr_bridge_done_cb)(chr_bridge_call_t *c, lua_State *co, int status);

struct chr_bridge_call {
  chr_bridge_t *b;
  void *req; /* the caller's request */
  const char *method;
  chr_bridge_done_cb done;
  chr_task_t *task;
  uv_timer_t *timer;
  int cancelled; /* killed by close */
  chr_bridge_call_t *prev, *next;
};

void chr_bridge_init(chr_bridge_t *b, lua_State *L, int adapter_idx, const char *name,
                     const char *kind, const char *what, double timeout_s);
/* Releases the adapter and the name (the bridge itself is the caller's). */
void chr_bridge_free(chr_bridge_t *b);
/* Pushes the adapter's method and the adapter (fn self) on b->L; returns
 * 0, CHR_EUNAVAIL when closing, CHR_EINVAL when there is no such method. */
int chr_bridge_method(chr_bridge_t *b, const char *method);
/* Starts the call of the function, self and nargs arguments on b->L;
 * extra_ms lengthens this call's timeout. */
void chr_bridge_call(chr_bridge_t *b, const char *method, void *req, int nargs,
                     uint64_t extra_ms, chr_bridge_done_cb done);
/* Unlinks and frees c; returns 1 when the bridge is closed and has no
 * call left, so its owner frees it. */
int chr_bridge_end(chr_bridge_call_t *c);
/* Kills every pending call (answered with CHR_TASK_KILLED, `cancelled`). */
void chr_bridge_cancel(chr_bridge_t *b);
/* The error of a call that did not end with LUA_OK: its code and message
 * written into msg. An error raised as {code, message} keeps its code and
 * words; any other is attributed to the adapter and method. */
int chr_bridge_failure(chr_bridge_call_t *c, lua_State *co, int status, char *msg, size_t len);

#endif
