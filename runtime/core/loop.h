/* loop.h - the process's one libuv loop, and the rule of docs/design.md for
 * functions that wait: inside a chronis task (a coroutine the runtime
 * resumes) they yield; anywhere else they drive the loop until their own
 * result is ready. */
#ifndef CHR_LOOP_H
#define CHR_LOOP_H

#include <uv.h>

uv_loop_t *chr_loop(void);

#endif
