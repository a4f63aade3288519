/* main.c - the chronis host executable: loads an app script that
 * configures schedulers, runs the loop until SIGINT/SIGTERM, then stops
 * every scheduler gracefully and exits 0 (1 when something failed: the
 * app, the stop, a completion that could not be written). */
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>
#include <uv.h>

#include "core/common.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/store.h"

int luaopen_chronis_core(lua_State *L);
int chr_core_exit_code(void);
void chr_core_catch_signals(int on);
int chr_core_signalled(void);
uint64_t chr_lua_sched_unwritten(void);

static const char usage[] =
    "usage: chronis <command> [options]\n"
    "\n"
    "commands:\n"
    "  run [APP.lua]        load the app (default scripts/app.lua) and run its\n"
    "                       schedulers until SIGINT or SIGTERM\n"
    "  migrate              apply pending schema migrations to the --storage\n"
    "                       PostgreSQL store (--status: list them, change nothing)\n"
    "  check FILE.lua       load a handler or adapter script and report what it\n"
    "                       provides and what is missing (exit 0 when usable);\n"
    "                       --as adapter|handler when the folder does not tell\n"
    "  check 'CRON'         describe a crontab string and its next fire times\n"
    "\n"
    "options:\n"
    "  --scripts DIR        handler scripts folder (default: handlers/ beside the\n"
    "                       app, then scripts/handlers), reloaded on change\n"
    "  --storage URL        default store for schedulers created without one\n"
    "                       (also CHRONIS_STORAGE; default sqlite:chronis.db)\n"
    "  --log-level LEVEL    debug, info (default), warn or error\n"
    "  --log-format FORMAT  text (default) or json (one JSON object a line)\n"
    "  --help               show this help\n"
    "  --version            show the version\n";

/* The chunk name of the app file while it runs ("@app.lua"), or NULL. */
static const char *app_chunk;

/* A chronis error ({code=, message=}) raised in the app file says what
 * was wrong itself: shown with the app's line that raised it, not with a
 * traceback into the library. stack: +1 the text, or nothing (returns 0). */
static int app_error(lua_State *L) {
  if (app_chunk == NULL || lua_type(L, 1) != LUA_TTABLE ||
      luaL_getmetafield(L, 1, "__name") != LUA_TSTRING)
    return 0;
  int ours = strcmp(lua_tostring(L, -1), "chronis.error") == 0;
  lua_pop(L, 1);
  if (!ours) return 0;
  const char *text = luaL_tolstring(L, 1, NULL);
  lua_Debug ar;
  for (int level = 1; lua_getstack(L, level, &ar); level++) {
    if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0 && strcmp(ar.source, app_chunk) == 0) {
      lua_pushfstring(L, "%s:%d: %s", ar.short_src, ar.currentline, text);
      return 1;
    }
  }
  return 1;
}

/* Message handler: adds a traceback to string errors. */
static int traceback(lua_State *L) {
  if (app_error(L)) return 1;
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) msg = luaL_tolstring(L, 1, NULL);
  luaL_traceback(L, L, msg, 1);
  return 1;
}

static int pcall_tb(lua_State *L, int nargs, int nres) {
  int base = lua_gettop(L) - nargs;
  lua_pushcfunction(L, traceback);
  lua_insert(L, base);
  int rc = lua_pcall(L, nargs, nres, base);
  lua_remove(L, base);
  return rc;
}

/* package.path: the library beside the executable (build tree: ../lua),
 * then the installed prefix (../share/chronis/lua). */
static void set_paths(lua_State *L) {
  char exe[PATH_MAX];
  size_t n = sizeof exe;
  char dir[PATH_MAX] = ".";
  if (uv_exepath(exe, &n) == 0) {
    char *slash = strrchr(exe, '/');
    if (slash) {
      *slash = '\0';
      snprintf(dir, sizeof dir, "%s", exe);
    }
  }
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_pushfstring(L,
                  "%s/../lua/?.lua;%s/../lua/?/init.lua;"
                  "%s/../share/chronis/lua/?.lua;%s/../share/chronis/lua/?/init.lua;%s",
                  dir, dir, dir, dir, lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 1);
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_chronis_core);
  lua_setfield(L, -2, "chronis.core");
  lua_pop(L, 2);
}

/* require "chronis" with a traceback; stack: +1 the module, or prints. */
static int require_chronis(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "chronis");
  if (pcall_tb(L, 1, 1) != LUA_OK) {
    fprintf(stderr, "chronis: cannot load the chronis library: %s\n", lua_tostring(L, -1));
    return -1;
  }
  return 0;
}

/* Calls chronis.scripts[fn](a, b) (b may be NULL: nil), printing what
 * fails. Returns 0 with the module and nresults results pushed, or 1. */
static int call_scripts(lua_State *L, const char *fn, const char *a, const char *b,
                        int nresults) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "chronis.scripts");
  if (pcall_tb(L, 1, 1) == LUA_OK) {
    lua_getfield(L, -1, fn);
    lua_pushstring(L, a);
    if (b) lua_pushstring(L, b);
    else lua_pushnil(L);
    if (pcall_tb(L, 2, nresults) == LUA_OK) return 0;
  }
  fprintf(stderr, "chronis: %s\n", lua_tostring(L, -1));
  return 1;
}

/* Calls chronis[fn](), printing its error after `what`. Returns 0, or 1
 * when it failed. */
static int call_chronis(lua_State *L, int chronis, const char *fn, const char *what) {
  lua_getfield(L, chronis, fn);
  if (pcall_tb(L, 0, 0) == LUA_OK) return 0;
  fprintf(stderr, "chronis: %s%s\n", what, lua_tostring(L, -1));
  lua_pop(L, 1);
  return 1;
}

static int check_script(lua_State *L, const char *path, const char *as) {
  if (require_chronis(L) != 0) return 1;
  if (call_scripts(L, "check", path, as, 2) != 0) return 1;
  int ok = lua_toboolean(L, -2);
  for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, -1); i++) {
    lua_rawgeti(L, -1, i);
    printf("%s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  return ok ? 0 : 1;
}

/* Schedulers created without a store use this one. SQLite keeps jobs
 * across restarts without any server. */
#define DEFAULT_STORAGE "sqlite:chronis.db"

static int run_app(lua_State *L, const char *app, const char *storage, const char *scripts) {
  int storage_is_default = storage == NULL;
  if (storage == NULL) storage = DEFAULT_STORAGE;
  lua_createtable(L, 0, 2);
  if (storage) {
    lua_pushstring(L, storage);
    lua_setfield(L, -2, "storage");
  }
  lua_pushstring(L, app);
  lua_setfield(L, -2, "app");
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "loaded");
  lua_pushvalue(L, -3);
  lua_setfield(L, -2, "chronis.host");
  lua_pop(L, 3);

  if (require_chronis(L) != 0) return 1;
  int chronis = lua_gettop(L);

  /* From here on SIGINT and SIGTERM stop the app gracefully, whether it
   * is still loading (waiting for its store, say), running, or stopping
   * (chronis.core: a second signal ends the grace period). */
  chr_core_catch_signals(1);
  chr_log(CHR_LOG_INFO, NULL, "chronis %s running %s; default storage %s%s", CHR_VERSION, app,
          storage, storage_is_default ? " (embedded default; --storage URL or CHRONIS_STORAGE "
                                        "to change)" : "");
  if (call_scripts(L, "host_setup", app, scripts, 0) != 0) return 1;
  lua_pop(L, 1);
  int rc = 0;
  if (luaL_loadfilex(L, app, "t") != LUA_OK) {
    fprintf(stderr, "chronis: %s\n", lua_tostring(L, -1));
    return 1;
  }
  char *chunk = chr_sprintf("@%s", app);
  app_chunk = chunk;
  if (pcall_tb(L, 0, 0) != LUA_OK) {
    /* Schedulers it started before failing still stop gracefully. */
    if (chr_core_signalled())
      fprintf(stderr, "chronis: %s did not finish loading: %s\n", app, lua_tostring(L, -1));
    else
      fprintf(stderr, "chronis: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
    rc = 1;
  } else {
    rc = call_chronis(L, chronis, "run", "");
  }
  app_chunk = NULL;
  free(chunk);
  if (call_chronis(L, chronis, "shutdown", "shutdown: ") != 0) rc = 1;
  call_chronis(L, chronis, "close_all", "close: ");
  /* A completion given up at a stop (the store kept failing) leaves its
   * job to run again once its lease expires: worth a non-zero status. */
  if (chr_lua_sched_unwritten() > 0) rc = 1;
  chr_core_catch_signals(0);
  /* Stopped: what is left is bounded cleanup. A late copy of the stop
   * signal (`timeout` and process managers also signal the process group)
   * must not kill the process now that its watchers are gone. */
  signal(SIGINT, SIG_IGN);
  signal(SIGTERM, SIG_IGN);
  /* Let every closing handle finish, so schedulers free themselves and
   * release their stores while the Lua state still exists. */
  uv_run(chr_loop(), UV_RUN_NOWAIT);
  uv_run(chr_loop(), UV_RUN_NOWAIT);
  chr_log(CHR_LOG_INFO, NULL, "chronis stopped");
  /* A handler called os.exit(code): everything stopped gracefully first. */
  if (chr_core_exit_code() >= 0) rc = chr_core_exit_code();
  return rc;
}

int main(int argc, char **argv) {
  const char *cmd = NULL, *app = NULL, *storage = getenv("CHRONIS_STORAGE"), *scripts = NULL,
             *as = NULL;
  int status_only = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      fputs(usage, stdout);
      return 0;
    } else if (strcmp(a, "--version") == 0 || strcmp(a, "-v") == 0) {
      printf("chronis %s (%s, libuv %s)\n", CHR_VERSION, LUA_RELEASE, uv_version_string());
      return 0;
    } else if (strcmp(a, "--log-level") == 0 && i + 1 < argc) {
      int lvl = chr_log_parse_level(argv[++i]);
      if (lvl < 0) {
        fprintf(stderr, "chronis: invalid --log-level '%s' (debug, info, warn, error)\n", argv[i]);
        return 2;
      }
      chr_log_set_level(lvl);
    } else if (strcmp(a, "--log-format") == 0 && i + 1 < argc) {
      const char *f = argv[++i];
      if (strcmp(f, "json") != 0 && strcmp(f, "text") != 0) {
        fprintf(stderr, "chronis: invalid --log-format '%s' (text or json)\n", f);
        return 2;
      }
      chr_log_set_json(strcmp(f, "json") == 0);
    } else if (strcmp(a, "--storage") == 0 && i + 1 < argc) {
      storage = argv[++i];
    } else if (strcmp(a, "--status") == 0) {
      status_only = 1;
    } else if (strcmp(a, "--as") == 0 && i + 1 < argc) {
      as = argv[++i];
      if (strcmp(as, "adapter") != 0 && strcmp(as, "handler") != 0) {
        fprintf(stderr, "chronis: --as takes adapter or handler\n");
        return 2;
      }
    } else if (strcmp(a, "--scripts") == 0 && i + 1 < argc) {
      scripts = argv[++i];
    } else if (a[0] == '-') {
      fprintf(stderr, "chronis: unknown option '%s'\n%s", a, usage);
      return 2;
    } else if (cmd == NULL) {
      cmd = a;
    } else if (app == NULL) {
      app = a;
    } else {
      fprintf(stderr, "chronis: unexpected argument '%s'\n", a);
      return 2;
    }
  }
  if (cmd == NULL) {
    fputs(usage, stderr);
    return 2;
  }
  if (strcmp(cmd, "migrate") == 0) {
    if (storage == NULL || (strncmp(storage, "postgres:", 9) != 0 &&
                            strncmp(storage, "postgresql:", 11) != 0)) {
      fprintf(stderr, "chronis: migrate needs --storage postgres://... (or CHRONIS_STORAGE); "
                      "SQLite migrates itself when opened\n");
      return 2;
    }
    return chr_postgres_migrate(storage, status_only, stdout);
  }
  if (strcmp(cmd, "run") != 0 && strcmp(cmd, "check") != 0) {
    fprintf(stderr, "chronis: unknown command '%s'\n%s", cmd, usage);
    return 2;
  }
  if (strcmp(cmd, "check") == 0 && app == NULL) {
    fprintf(stderr, "chronis: check needs a script path\n");
    return 2;
  }
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    fputs("chronis: cannot create a Lua state\n", stderr);
    return 1;
  }
  luaL_openlibs(L);
  set_paths(L);
  int rc = strcmp(cmd, "check") == 0 ? check_script(L, app, as)
                                      : run_app(L, app ? app : "scripts/app.lua", storage, scripts);
  lua_close(L);
  return rc;
}
