/* loop.c - the process's one libuv loop. */
#include "loop.h"

uv_loop_t *chr_loop(void) {
  return uv_default_loop();
}
