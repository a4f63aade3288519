/* util.h - helpers shared by the Lua bindings: structured errors
 * ({code=, message=} with __tostring "code: message"), time values at the
 * Lua boundary (ISO strings out; ISO strings or integer µs in), and the
 * module assembly of chronis.core. */
#ifndef CHR_LUTIL_H
#define CHR_LUTIL_H

#include <lua.h>
#include <lauxlib.h>

#include "core/common.h"
#include "core/tz.h"

/* stack: +1 error table */
void chr_lua_pusherror(lua_State *L, int code, const char *msg);
/* Raises a structured error; never returns. */
int chr_lua_error(lua_State *L, int code, const char *fmt, ...);

/* Argument checks for the functions chronis gives Lua. They work as the
 * luaL_check* functions of lauxlib and word their messages the same way
 * ("bad argument #2 to 'get_job' (string expected, got nil)"), but raise
 * `invalid` errors: every error a chronis function raises is a
 * {code, message} table (docs/api.md, "Errors"). */
int chr_lua_argerror(lua_State *L, int arg, const char *extramsg);
int chr_lua_typeerror(lua_State *L, int arg, const char *tname);
void chr_lua_checktype(lua_State *L, int arg, int t);
const char *chr_lua_checklstring(lua_State *L, int arg, size_t *len);
#define chr_lua_checkstring(L, arg) chr_lua_checklstring(L, (arg), NULL)
const char *chr_lua_optstring(lua_State *L, int arg, const char *def);
lua_Number chr_lua_checknumber(lua_State *L, int arg);
lua_Integer chr_lua_checkinteger(lua_State *L, int arg);
/* The number option k of the option table at t (def when absent), in
 * lo..hi; raises `invalid` naming k. stack: unchanged */
double chr_lua_optnumber(lua_State *L, int t, const char *k, double def, double lo, double hi);
void *chr_lua_checkudata(lua_State *L, int arg, const char *tname);

/* Pushes the metatable registered under tname, made on first use from the
 * metamethods in meta and the methods in methods (its __index); either may
 * be NULL. stack: +1 */
void chr_lua_classmeta(lua_State *L, const char *tname, const luaL_Reg *meta,
                       const luaL_Reg *methods);

/* Reads the error value at idx that Lua code raised: its code when it is
 * a {code=, message=} table with a known code, else 0 (a string, another
 * value); *msg is its message, or the value as text (owned by L until the
 * value it pushes is popped). stack: +1 */
int chr_lua_errvalue(lua_State *L, int idx, const char **msg);

/* Appends the value at idx as one piece of text, for a log line or the
 * message of a handler's error: a string as it is; a number, boolean or
 * nil as tostring writes it; a value with __tostring as that gives; a
 * table by its fields, "code=42 reason=boom" (keys sorted, strings quoted
 * when they hold spaces or separators, nested tables compact:
 * "{1,2,k=v}"), its string `message` first when it has one ("bad input
 * (code=E_INPUT)"); other userdata, functions and threads by their type
 * (or __name). Bounded in depth and length. A __tostring may raise: call
 * it in protected mode, with `out` owned by the caller. stack: unchanged */
void chr_lua_describe(lua_State *L, int idx, chr_buf_t *out);

/* Calls f with ud as its only argument (a light userdata) in protected
 * mode: for C code that runs from loop callbacks and touches Lua, where an
 * error (a failing metamethod, memory exhausted under the cap) must end
 * in the caller, not unwind through libuv. Returns LUA_OK, or the error
 * status with its message (or the error value's type) copied to err.
 * stack: unchanged */
int chr_lua_cpcall(lua_State *L, lua_CFunction f, void *ud, char *err, size_t errlen);

/* Raises `invalid` naming every key of the table at idx that is neither in
 * known (NULL-terminated) nor accepted by accept (may be NULL), each with
 * the closest known name when one is close (core/suggest.h); `what` names
 * one key ("scheduler option"). Keys that are not strings are shown as
 * text. stack: unchanged */
void chr_lua_checkkeys(lua_State *L, int idx, const char *what, const char *const *known,
                       int (*accept)(const char *key), const char *expected);

/* Sets suggest and unknown_keys (the Lua face of core/suggest.h) in the
 * table on top. stack: unchanged */
void chr_lua_suggest_fns(lua_State *L);

/* Reads a time argument: an integer (µs since the epoch) or an ISO string
 * (naive strings read in zone `naive`, NULL = UTC). Raises an `invalid`
 * error naming `what` (a field or argument name) on bad input. */
int64_t chr_lua_checktime(lua_State *L, int idx, const chr_tz_t *naive,
                          const char *what);
/* stack: +1 ISO string, or nil for CHR_TIME_NONE */
void chr_lua_pushtime(lua_State *L, int64_t us);

/* Each returns its module table. stack: +1 */
int luaopen_chronis_time(lua_State *L);
int luaopen_chronis_tz(lua_State *L);
int luaopen_chronis_cron(lua_State *L);
int luaopen_chronis_fs(lua_State *L);
int luaopen_chronis_engine(lua_State *L);
int luaopen_chronis_httpd(lua_State *L);
int luaopen_chronis_metrics(lua_State *L);

/* The engine of the scheduler object at idx (chronis.core.engine), or NULL
 * when it is not one or is closed (runtime/lua/scheduler.c). */
struct chr_sched *chr_lua_tosched(lua_State *L, int idx);

#endif
