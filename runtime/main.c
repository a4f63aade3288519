/* main.c - the chronis host executable: loads an app script that
 * configures schedulers, runs the loop until SIGINT/SIGTERM, then stops
 * every scheduler gracefully and exits 0. */
#include <limits.h>
#include <signal.h>
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
void chr_core_request_stop(void);
int chr_core_exit_code(void);

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

static int signals_seen;

static void signal_cb(uv_signal_t *h, int signum) {
  (void)h;
  signals_seen++;
  chr_log(CHR_LOG_INFO, NULL, "received %s: stopping", signum == SIGINT ? "SIGINT" : "SIGTERM");
  if (signals_seen > 1) {
    chr_log(CHR_LOG_WARN, NULL, "second signal: exiting at once");
    exit(1);
  }
  chr_core_request_stop();
}

/* Message handler: adds a traceback to string errors. */
static int traceback(lua_State *L) {
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

  uv_signal_t sigint, sigterm;
  uv_signal_init(chr_loop(), &sigint);
  uv_signal_init(chr_loop(), &sigterm);
  uv_signal_start(&sigint, signal_cb, SIGINT);
  uv_signal_start(&sigterm, signal_cb, SIGTERM);
  /* Signal watchers alone must not keep the loop alive. */
  uv_unref((uv_handle_t *)&sigint);
  uv_unref((uv_handle_t *)&sigterm);

  chr_log(CHR_LOG_INFO, NULL, "chronis %s running %s; default storage %s%s", CHR_VERSION, app,
          storage, storage_is_default ? " (embedded default; --storage URL or CHRONIS_STORAGE "
                                        "to change)" : "");
  if (call_scripts(L, "host_setup", app, scripts, 0) != 0) return 1;
  lua_pop(L, 1);
  if (luaL_loadfilex(L, app, "t") != LUA_OK || pcall_tb(L, 0, 0) != LUA_OK) {
    fprintf(stderr, "chronis: %s\n", lua_tostring(L, -1));
    return 1;
  }
  int rc = call_chronis(L, chronis, "run", "");
  if (call_chronis(L, chronis, "shutdown", "shutdown: ") != 0) rc = 1;
  call_chronis(L, chronis, "close_all", "close: ");
  uv_close((uv_handle_t *)&sigint, NULL);
  uv_close((uv_handle_t *)&sigterm, NULL);
  /* Stopped: what is left is bounded cleanup. A late copy of the stop
   * signal (`timeout` and process managers also signal the process group)
   * must not kill the process now that libuv restored the default. */
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

/* `chronis jobs ...` and `chronis stats`: lua/chronis/cli.lua parses its
 * own arguments (argv[1..]) and returns the exit code. */
static int run_cli(int argc, char **argv) {
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    fputs("chronis: cannot create a Lua state\n", stderr);
    return 1;
  }
  luaL_openlibs(L);
  set_paths(L);
  int rc = 1;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "chronis.cli");
  if (pcall_tb(L, 1, 1) == LUA_OK) {
    lua_getfield(L, -1, "main");
    lua_createtable(L, argc, 0);
    for (int i = 0; i < argc; i++) {
      lua_pushstring(L, argv[i]);
      lua_rawseti(L, -2, i + 1);
    }
    if (pcall_tb(L, 1, 1) == LUA_OK) rc = (int)luaL_optinteger(L, -1, 1);
    else fprintf(stderr, "chronis: %s\n", lua_tostring(L, -1));
  } else {
    fprintf(stderr, "chronis: cannot load the chronis library: %s\n", lua_tostring(L, -1));
  }
  lua_close(L);
  return rc;
}

int main(int argc, char **argv) {
  if (argc > 1 && (strcmp(argv[1], "jobs") == 0 || strcmp(argv[1], "stats") == 0))
    return run_cli(argc - 1, argv + 1);
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
