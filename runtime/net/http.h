/* http.h - chronis.http: an HTTP/HTTPS client on the process's loop.
 * libcurl's multi interface driven by libuv (one multi handle per process,
 * so connections are reused across requests); a request waits by the rule
 * of loop.h (yields inside a task, drives the loop elsewhere). */
#ifndef CHR_HTTP_H
#define CHR_HTTP_H

#include <stddef.h>

#include <lua.h>

/* stack: +1 the module table (request). */
int luaopen_chronis_http(lua_State *L);

/* Requests in flight (including orphaned ones not yet reaped). */
size_t chr_http_inflight(void);

/* Cancels every request (their waiters are never answered: only for the
 * end of the process), frees the multi handle and closes the handles. */
void chr_http_shutdown(void);

#endif
