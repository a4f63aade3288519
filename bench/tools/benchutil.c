/* benchutil.c - the Lua module `benchutil` for bench/ scripts: the
 * monotonic clock, this process's CPU time and its resident memory, read
 * from the OS (chronis itself exposes only the wall clock to Lua). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>

/* mono() -> integer nanoseconds on CLOCK_MONOTONIC (the clock of
 * Python's time.monotonic_ns and Node's process.hrtime). */
static int l_mono(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushinteger(L, (lua_Integer)ts.tv_sec * 1000000000 + ts.tv_nsec);
  return 1;
}

/* cpu() -> user + system seconds of this process (getrusage). */
static int l_cpu(lua_State *L) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  lua_pushnumber(L, ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
                        ru.ru_stime.tv_usec / 1e6);
  return 1;
}

/* rss() -> current VmRSS and peak VmHWM in kB, from /proc/self/status. */
static int l_rss(lua_State *L) {
  char line[256];
  long rss = -1, hwm = -1;
  FILE *f = fopen("/proc/self/status", "r");
  if (f) {
    while (fgets(line, sizeof line, f)) {
      if (strncmp(line, "VmRSS:", 6) == 0) sscanf(line + 6, "%ld", &rss);
      else if (strncmp(line, "VmHWM:", 6) == 0) sscanf(line + 6, "%ld", &hwm);
    }
    fclose(f);
  }
  lua_pushinteger(L, rss);
  lua_pushinteger(L, hwm);
  return 2;
}

int luaopen_benchutil(lua_State *L) {
  static const luaL_Reg fns[] = {{"mono", l_mono}, {"cpu", l_cpu}, {"rss", l_rss}, {NULL, NULL}};
  luaL_newlib(L, fns);
  return 1;
}
