/* main.c - the chronis host executable: its commands (run, check,
 * migrate, env, help), one table entry each with its own usage text, and
 * the argument parsing they share. `run` loads an app script that
 * configures schedulers, runs the loop until SIGINT/SIGTERM, then stops
 * every scheduler gracefully. Exit status: 0 success, 1 failure (the app,
 * the stop, a completion that could not be written), 2 usage error. */
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
#include "core/suggest.h"

int luaopen_chronis_core(lua_State *L);
int chr_core_exit_code(void);
void chr_core_catch_signals(int on);
int chr_core_signalled(void);
uint64_t chr_lua_sched_unwritten(void);

/* Exit statuses, as every usage text says. */
enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

/* ---- where the Lua library is ---- */

/* Compiled in by the Makefile: the install prefix, and the source and
 * build folders this executable was built from (absolute), so that a copy
 * of it elsewhere on the same machine still finds its library. */
#ifndef CHR_PREFIX
#define CHR_PREFIX ""
#endif
#ifndef CHR_SRCDIR
#define CHR_SRCDIR ""
#endif
#ifndef CHR_BUILDDIR
#define CHR_BUILDDIR ""
#endif

/* The Lua library (chronis/init.lua, ...) and the folder of the C module
 * plain lua5.4 loads (chronis/core.so), as found. */
static char lib_dir[PATH_MAX], cmod_dir[PATH_MAX];

static int has_file(const char *dir, const char *name) {
  char path[PATH_MAX];
  return snprintf(path, sizeof path, "%s/%s", dir, name) < (int)sizeof path &&
         access(path, R_OK) == 0;
}

/* Finds the library: beside the executable (a build tree: build/../lua and
 * build/lua; an install: bin/../share/chronis/lua and bin/../lib/lua/5.4),
 * then at the install prefix, then in the source tree. Returns 0, or -1
 * with the places looked at in `looked`. */
static int find_library(char *looked, size_t looked_len) {
  char exe[PATH_MAX], dir[PATH_MAX] = ".";
  size_t n = sizeof exe;
  if (uv_exepath(exe, &n) == 0) {
    char *slash = strrchr(exe, '/');
    if (slash) {
      *slash = '\0';
      snprintf(dir, sizeof dir, "%s", exe);
    }
  }
  char cand[4][2][PATH_MAX];
  int nc = 0;
  snprintf(cand[nc][0], PATH_MAX, "%s/../lua", dir);
  snprintf(cand[nc++][1], PATH_MAX, "%s/lua", dir);
  snprintf(cand[nc][0], PATH_MAX, "%s/../share/chronis/lua", dir);
  snprintf(cand[nc++][1], PATH_MAX, "%s/../lib/lua/5.4", dir);
  if (*CHR_PREFIX) {
    snprintf(cand[nc][0], PATH_MAX, "%s/share/chronis/lua", CHR_PREFIX);
    snprintf(cand[nc++][1], PATH_MAX, "%s/lib/lua/5.4", CHR_PREFIX);
  }
  if (*CHR_SRCDIR) {
    snprintf(cand[nc][0], PATH_MAX, "%s/lua", CHR_SRCDIR);
    snprintf(cand[nc++][1], PATH_MAX, "%s/lua", CHR_BUILDDIR);
  }
  size_t used = 0;
  for (int i = 0; i < nc; i++) {
    if (has_file(cand[i][0], "chronis/init.lua")) {
      if (realpath(cand[i][0], lib_dir) == NULL) snprintf(lib_dir, sizeof lib_dir, "%s", cand[i][0]);
      if (realpath(cand[i][1], cmod_dir) == NULL) snprintf(cmod_dir, sizeof cmod_dir, "%s", cand[i][1]);
      return 0;
    }
    int w = snprintf(looked + used, looked_len - used, "%s%s", i ? ", " : "", cand[i][0]);
    if (w > 0 && (size_t)w < looked_len - used) used += (size_t)w;
  }
  return -1;
}

/* package.path: the library found; chronis.core is built in. */
static void set_paths(lua_State *L) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", lib_dir, lib_dir, lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 1);
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_chronis_core);
  lua_setfield(L, -2, "chronis.core");
  lua_pop(L, 2);
}

/* ---- errors of the app, shown as the user's ---- */

/* Whether a chunk's source (its "@path") is a file of the library: an
 * error is reported where the user's code called into it. */
static int in_library(const char *source) {
  size_t n = strlen(lib_dir);
  return source[0] == '@' && n > 0 && strncmp(source + 1, lib_dir, n) == 0 &&
         source[1 + n] == '/';
}

/* Whether msg starts with a place, "file:line: ". */
static int has_place(const char *msg) {
  const char *colon = strchr(msg, ':');
  if (colon == NULL || colon == msg || memchr(msg, '\n', (size_t)(colon - msg))) return 0;
  size_t digits = strspn(colon + 1, "0123456789");
  return digits > 0 && colon[1 + digits] == ':';
}

/* Message handler: one line for a user error, "app.lua:3: message", where
 * app.lua:3 is the innermost line of the user's own code (not of the
 * library) and message that of a structured error ({code=, message=}; a
 * code other than `invalid` goes before it). With --log-level debug the
 * traceback follows. */
static int error_handler(lua_State *L) {
  const char *msg = NULL, *code = NULL;
  if (lua_istable(L, 1)) {
    lua_getfield(L, 1, "message");
    lua_getfield(L, 1, "code");
    msg = lua_tostring(L, -2);
    code = lua_tostring(L, -1);
    if (code && strcmp(code, "invalid") == 0) code = NULL;
  }
  if (msg == NULL) msg = luaL_tolstring(L, 1, NULL);
  /* Where: the first frame with a line that is not the library's. */
  lua_Debug ar;
  char where[LUA_IDSIZE + 32] = "";
  for (int level = 1; lua_getstack(L, level, &ar); level++) {
    lua_getinfo(L, "Sl", &ar);
    if (ar.currentline > 0 && !in_library(ar.source)) {
      snprintf(where, sizeof where, "%s:%d: ", ar.short_src, ar.currentline);
      break;
    }
  }
  /* A string error raised inside the library carries the library's
   * file:line: the user's line replaces it. One with a place of its own
   * keeps it. */
  size_t n = strlen(lib_dir);
  if (n > 0 && strncmp(msg, lib_dir, n) == 0 && msg[n] == '/') {
    const char *rest = strstr(msg, ": ");
    if (rest) msg = rest + 2;
  } else if (!lua_istable(L, 1) && has_place(msg)) {
    where[0] = '\0';
  }
  lua_pushfstring(L, "%s%s%s%s", where, code ? code : "", code ? ": " : "", msg);
  if (chr_log_get_level() == CHR_LOG_DEBUG) luaL_traceback(L, L, lua_tostring(L, -1), 1);
  return 1;
}

static int pcall_tb(lua_State *L, int nargs, int nres) {
  int base = lua_gettop(L) - nargs;
  lua_pushcfunction(L, error_handler);
  lua_insert(L, base);
  int rc = lua_pcall(L, nargs, nres, base);
  lua_remove(L, base);
  return rc;
}

/* require "chronis"; stack: +1 the module, or prints and returns -1. */
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

/* Schedulers created without a store use this one. SQLite keeps jobs
 * across restarts without any server. */
#define DEFAULT_STORAGE "sqlite:chronis.db"

/* Starts chronis.http_server{listen = addr, token = token} with the
 * schedulers of the process (all of them, as they come and go). Returns
 * 0, or 1 after printing why it could not. */
static int start_http(lua_State *L, int chronis, const char *addr, const char *token) {
  lua_getfield(L, chronis, "http_server");
  lua_createtable(L, 0, 2);
  lua_pushstring(L, addr);
  lua_setfield(L, -2, "listen");
  if (token) {
    lua_pushstring(L, token);
    lua_setfield(L, -2, "token");
  }
  if (pcall_tb(L, 1, 0) == LUA_OK) return 0;
  fprintf(stderr, "chronis: --http: %s\n", lua_tostring(L, -1));
  lua_pop(L, 1);
  return 1;
}

/* chronis serve: one scheduler on the store, never started, for the API
 * and the page to read and change its jobs; the server holds it. */
static const char serve_chunk[] =
    "local chronis, listen, token = ...\n"
    "local s = chronis.scheduler{}\n"
    "s._remote = true -- handlers live in the processes that run jobs: no warning\n"
    "local ok, err = pcall(chronis.http_server, {listen = listen, token = token, schedulers = {s}})\n"
    "if not ok then return '--http: ' .. tostring(type(err) == 'table' and err.message or err) end\n";

/* app NULL: chronis serve. */
static int run_app(lua_State *L, const char *app, const char *storage, const char *scripts,
                   const char *http, const char *http_token) {
  int storage_is_default = storage == NULL;
  if (storage == NULL) storage = DEFAULT_STORAGE;
  lua_createtable(L, 0, 2);
  if (storage) {
    lua_pushstring(L, storage);
    lua_setfield(L, -2, "storage");
  }
  lua_pushstring(L, app ? app : "serve");
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

  /* Only the default: each scheduler logs the store it runs on when it
   * starts (an app may give each its own). */
  char *shown = chr_store_url_shown(storage);
  if (app)
    chr_log(CHR_LOG_INFO, NULL, "chronis %s running %s; default storage %s, for schedulers created "
            "without one%s", CHR_VERSION, app, shown, storage_is_default ?
            " (the embedded default; --storage URL or CHRONIS_STORAGE to change)" : "");
  else
    chr_log(CHR_LOG_INFO, NULL, "chronis %s serving the jobs of %s%s", CHR_VERSION, shown,
            storage_is_default ? " (the default; --storage URL or CHRONIS_STORAGE to change)" : "");
  free(shown);
  if (app) {
    if (call_scripts(L, "host_setup", app, scripts, 0) != 0) return 1;
    lua_pop(L, 1);
  }
  int rc = 0;
  if (app ? luaL_loadfilex(L, app, "t") != LUA_OK
          : luaL_loadbufferx(L, serve_chunk, sizeof serve_chunk - 1, "=serve", "t") != LUA_OK) {
    fprintf(stderr, "chronis: %s\n", lua_tostring(L, -1));
    return 1;
  }
  if (!app) {
    lua_pushvalue(L, chronis);
    lua_pushstring(L, http);
    if (http_token) lua_pushstring(L, http_token);
    else lua_pushnil(L);
  }
  if (pcall_tb(L, app ? 0 : 3, app ? 0 : 1) != LUA_OK) {
    /* Schedulers it started before failing still stop gracefully. */
    if (chr_core_signalled())
      fprintf(stderr, "chronis: %s did not finish loading: %s\n", app ? app : "serve",
              lua_tostring(L, -1));
    else
      fprintf(stderr, "chronis: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
    rc = 1;
  } else if (!app && lua_isstring(L, -1)) { /* serve could not start its server */
    fprintf(stderr, "chronis: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
    rc = 1;
  } else if (app && http && start_http(L, chronis, http, http_token) != 0) {
    rc = 1;
  } else {
    if (!app) lua_pop(L, 1);
    rc = call_chronis(L, chronis, "run", "");
  }
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

/* ---- the commands ---- */

typedef struct cli cli_t;

typedef struct command {
  const char *name;
  const char *synopsis; /* the command's line in the general usage */
  const char *summary;
  const char *usage;    /* its own help: chronis help NAME, chronis NAME --help */
  int max_args;         /* positional arguments after the name */
  /* The command reads its own options: the host parses only the options
   * of every command, and hands the rest of the arguments over as they
   * are, in order. */
  int own_options;
  int (*run)(cli_t *c);
} command_t;

#define MAX_ARGS 64

struct cli {
  const command_t *cmd;
  const char *storage; /* --storage, else CHRONIS_STORAGE */
  const char *storage_from; /* which of the two, for messages */
  const char *scripts; /* --scripts */
  const char *as;      /* --as */
  int status_only;     /* --status */
  const char *http;    /* --http ADDR: serve the API, metrics and dashboard */
  const char *http_token; /* --http-token, else CHRONIS_HTTP_TOKEN (read in Lua) */
  int nargs;
  const char *args[MAX_ARGS];
};

static const char general_usage[] =
    "usage: chronis [options] <command> [arguments]\n"
    "\n"
    "commands:\n"
    "%s"
    "\n"
    "options of every command:\n"
    "  --storage URL        the store: the default of run's schedulers, migrate's\n"
    "                       target (also CHRONIS_STORAGE)\n"
    "  --log-level LEVEL    debug, info (default), warn or error; debug adds the\n"
    "                       traceback to an error\n"
    "  --log-format FORMAT  text (default) or json (one JSON object a line)\n"
    "  -h, --help           show this help, or after a command its own\n"
    "  -v, --version        show the version\n"
    "\n"
    "A command's options and examples: chronis help COMMAND, or chronis COMMAND --help.\n"
    "\n"
    "exit status: 0 success; 1 failure (the app did not load, a check or a\n"
    "migration failed); 2 usage error (unknown command or option, a bad value)\n";

static const char run_usage[] =
    "usage: chronis run [options] [APP.lua]\n"
    "\n"
    "Loads APP.lua (default scripts/app.lua), which creates schedulers, adds jobs\n"
    "and starts them, and runs them until SIGINT or SIGTERM: then every scheduler\n"
    "stops gracefully (a second signal exits at once). Handler scripts are loaded\n"
    "from --scripts DIR, else handlers/ beside the app, else scripts/handlers, and\n"
    "reloaded when they change. Each scheduler logs the store it runs on.\n"
    "\n"
    "options:\n"
    "  --storage URL        store of the schedulers created without one (default\n"
    "                       sqlite:chronis.db; also CHRONIS_STORAGE)\n"
    "  --scripts DIR        handler scripts folder\n"
    "  --http ADDR          also serve the HTTP API, metrics, health checks and the\n"
    "                       dashboard there (127.0.0.1:8080; docs/http.md)\n"
    "  --http-token TOKEN   the token that allows changes through it (also\n"
    "                       CHRONIS_HTTP_TOKEN); without one it is read-only\n"
    "  --log-level LEVEL    debug, info (default), warn or error; debug adds the\n"
    "                       traceback to an error of the app\n"
    "  --log-format FORMAT  text (default) or json\n"
    "\n"
    "examples:\n"
    "  chronis run app.lua\n"
    "  chronis run --storage memory: app.lua\n"
    "  chronis run --http 127.0.0.1:8080 app.lua\n"
    "  chronis run --storage 'postgres://chronis@db.internal/jobs' --log-format json app.lua\n"
    "\n"
    "exit status: 0 once stopped by a signal (or the code a handler passed to\n"
    "os.exit); 1 when the app fails to load or to stop; 2 on a usage error\n";

static const char serve_usage[] =
    "usage: chronis serve [--storage URL] [--http ADDR] [--http-token TOKEN]\n"
    "\n"
    "Serves the HTTP API, the Prometheus metrics, the health checks and the web\n"
    "dashboard of a store's jobs (docs/http.md), running none of them: a scheduler\n"
    "is opened on the store and never started. Runs until SIGINT or SIGTERM.\n"
    "\n"
    "options:\n"
    "  --storage URL        the store (default sqlite:chronis.db; also CHRONIS_STORAGE)\n"
    "  --http ADDR          where to listen (default 127.0.0.1:8080); an address\n"
    "                       beyond loopback needs a token\n"
    "  --http-token TOKEN   the token that allows changes (also CHRONIS_HTTP_TOKEN);\n"
    "                       without one the server is read-only\n"
    "\n"
    "examples:\n"
    "  chronis serve --storage sqlite:jobs.db\n"
    "  CHRONIS_HTTP_TOKEN=$(cat token) chronis serve --storage redis://127.0.0.1 --http 0.0.0.0:8080\n"
    "\n"
    "exit status: 0 once stopped by a signal; 1 when it cannot listen or open the\n"
    "store; 2 on a usage error\n";

static const char check_usage[] =
    "usage: chronis check [--as handler|adapter|app] TARGET\n"
    "\n"
    "Checks TARGET and reports what it provides and what is missing. It never\n"
    "runs an app. TARGET is one of:\n"
    "  FILE.lua   a script that returns a value is loaded in its own environment,\n"
    "             as chronis run loads it (nothing else of it runs): a handler\n"
    "             (a function, or a table with run) has its defaults listed; an\n"
    "             adapter (in an adapters/ folder, or returning store methods)\n"
    "             is opened without options and its methods are listed.\n"
    "             A script that returns nothing is an app: its syntax is checked,\n"
    "             and it is not run.\n"
    "  lua:SCRIPT?option=value&...  or  file:PATH\n"
    "             the adapter opened with these options, as --storage would open\n"
    "             it, then its methods listed\n"
    "  'CRON'     a crontab string: what it means and its next fire times\n"
    "\n"
    "options:\n"
    "  --as KIND  handler, adapter or app, when the file does not tell\n"
    "\n"
    "examples:\n"
    "  chronis check scripts/handlers/greet.lua\n"
    "  chronis check 'lua:adapters/file.lua?path=/tmp/jobs.json'\n"
    "  chronis check --as app scripts/app.lua\n"
    "  chronis check 'TZ=Europe/Paris 0 9 * * mon-fri'\n"
    "\n"
    "exit status: 0 when TARGET is usable; 1 when it is not (the report says\n"
    "why); 2 on a usage error\n";

static const char migrate_usage[] =
    "usage: chronis migrate --storage postgres://... [--status]\n"
    "\n"
    "Applies the pending schema migrations to the PostgreSQL store of --storage\n"
    "(or CHRONIS_STORAGE). A store opened with auto_migrate=true (the default)\n"
    "does this itself; SQLite migrates itself when opened.\n"
    "\n"
    "options:\n"
    "  --storage URL  the PostgreSQL store: postgres://user@host:port/db?table=...\n"
    "  --status       list the migrations, applied and pending; change nothing\n"
    "\n"
    "examples:\n"
    "  chronis migrate --storage postgres://chronis@127.0.0.1/jobs\n"
    "  chronis migrate --status --storage 'postgres://chronis@127.0.0.1/jobs?table=billing'\n"
    "\n"
    "exit status: 0 when the schema is current; 1 when a migration or the\n"
    "connection failed; 2 on a usage error\n";

static const char env_usage[] =
    "usage: chronis env\n"
    "\n"
    "Prints the shell lines that point LUA_PATH and LUA_CPATH at the chronis Lua\n"
    "library and C module this chronis uses, so that plain lua5.4 can\n"
    "require \"chronis\" (an app run that way calls chronis.run() itself):\n"
    "\n"
    "  eval \"$(chronis env)\"\n"
    "  lua5.4 app.lua\n"
    "\n"
    "exit status: 0; 1 when the library cannot be found\n";

static const char help_usage[] =
    "usage: chronis help [COMMAND]\n"
    "\n"
    "Shows the general usage, or COMMAND's own: its options and examples.\n"
    "\n"
    "exit status: 0; 2 for an unknown command\n";

static int cmd_run(cli_t *c);
static int cmd_serve(cli_t *c);
static int cmd_check(cli_t *c);
static int cmd_migrate(cli_t *c);
static int cmd_env(cli_t *c);
static int cmd_help(cli_t *c);
static int cmd_jobs(cli_t *c);
static int cmd_stats(cli_t *c);

static const char jobs_usage[] =
    "usage: chronis jobs COMMAND [options]\n"
    "\n"
    "Reads and changes the jobs of a store without running them: list, show, add,\n"
    "pause, resume, run, retry, delete, history. Each command has its own --help\n"
    "(chronis jobs help COMMAND); --json on every command; --storage URL, else\n"
    "CHRONIS_STORAGE, else sqlite:chronis.db. docs/cli.md has the details.\n"
    "\n"
    "exit status: 0 done; 1 failure; 2 usage error\n";

static const char stats_usage[] =
    "usage: chronis stats [--storage URL] [--json]\n"
    "\n"
    "Counts the store's jobs by status, its runs and failures over the last hour,\n"
    "and names the oldest due job. chronis stats --help has the details.\n";

/* Adding a command is one entry here (and its handler). */
static const command_t commands[] = {
    {"run", "run [APP.lua]", "run an app's schedulers until SIGINT or SIGTERM", run_usage, 1, 0,
     cmd_run},
    {"serve", "serve", "serve the HTTP API, metrics and dashboard of a store, running no jobs",
     serve_usage, 0, 0, cmd_serve},
    {"check", "check TARGET", "check a script, a lua:/file: URL or a crontab string", check_usage, 1, 0, cmd_check},
    {"migrate", "migrate", "apply pending schema migrations to a PostgreSQL store", migrate_usage,
     0, 0, cmd_migrate},
    {"env", "env", "print LUA_PATH and LUA_CPATH for plain lua5.4", env_usage, 0,
     0, cmd_env},
    {"jobs", "jobs COMMAND", "list, show, add, pause, resume, run, retry, delete jobs", jobs_usage,
     MAX_ARGS, 1, cmd_jobs},
    {"stats", "stats", "the store's jobs by status, runs and failures of the last hour", stats_usage,
     MAX_ARGS, 1, cmd_stats},
    {"help", "help [COMMAND]", "show this help, or a command's", help_usage, 1, 0, cmd_help},
};

#define NCOMMANDS (sizeof commands / sizeof *commands)

static const command_t *find_command(const char *name) {
  for (size_t i = 0; i < NCOMMANDS; i++)
    if (strcmp(commands[i].name, name) == 0) return &commands[i];
  return NULL;
}

static void print_usage(FILE *f) {
  chr_buf_t list;
  chr_buf_init(&list);
  for (size_t i = 0; i < NCOMMANDS; i++)
    chr_buf_printf(&list, "  %-20s %s\n", commands[i].synopsis, commands[i].summary);
  fprintf(f, general_usage, list.p);
  chr_buf_free(&list);
}

/* "unknown command 'chek'; did you mean 'check'?", exit status 2. */
static int unknown_command(const char *name) {
  const char *names[NCOMMANDS + 1];
  for (size_t i = 0; i < NCOMMANDS; i++) names[i] = commands[i].name;
  names[NCOMMANDS] = NULL;
  chr_unknown_t u;
  chr_unknown_init(&u);
  chr_unknown_add(&u, name, strlen(name));
  chr_buf_t b;
  chr_buf_init(&b);
  chr_unknown_format(&u, "command", names, NULL, &b);
  fprintf(stderr, "chronis: %s\n(chronis help: the commands)\n", b.p);
  chr_buf_free(&b);
  chr_unknown_free(&u);
  return CLI_USAGE;
}

/* The options. Those of one command are refused elsewhere, naming it. */
typedef struct option {
  const char *name;
  const char *arg;     /* the value's name in messages; NULL: takes none */
  const char *command; /* the commands it belongs to, space-separated; NULL: every command */
} option_t;

/* 1 when o is an option of the command name. */
static int option_of_command(const option_t *o, const char *name) {
  size_t n = strlen(name);
  for (const char *p = o->command; (p = strstr(p, name)) != NULL; p += n)
    if ((p == o->command || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0')) return 1;
  return 0;
}

static const option_t options[] = {
    {"--storage", "URL", NULL},       {"--log-level", "LEVEL", NULL},
    {"--log-format", "FORMAT", NULL}, {"--help", NULL, NULL},
    {"-h", NULL, NULL},               {"--version", NULL, NULL},
    {"-v", NULL, NULL},               {"--scripts", "DIR", "run"},
    {"--as", "KIND", "check"},        {"--status", NULL, "migrate"},
    {"--http", "ADDR", "run serve"},  {"--http-token", "TOKEN", "run serve"},
};

#define NOPTIONS (sizeof options / sizeof *options)

static const option_t *find_option(const char *name, size_t n) {
  for (size_t i = 0; i < NOPTIONS; i++)
    if (strlen(options[i].name) == n && strncmp(options[i].name, name, n) == 0) return &options[i];
  return NULL;
}

static int unknown_option(const char *arg, size_t n) {
  const char *names[NOPTIONS + 1];
  for (size_t i = 0; i < NOPTIONS; i++) names[i] = options[i].name;
  names[NOPTIONS] = NULL;
  chr_unknown_t u;
  chr_unknown_init(&u);
  chr_unknown_add(&u, arg, n);
  chr_buf_t b;
  chr_buf_init(&b);
  chr_unknown_format(&u, "option", names, "", &b);
  fprintf(stderr, "chronis: %s\n(chronis help: the options)\n", b.p);
  chr_buf_free(&b);
  chr_unknown_free(&u);
  return CLI_USAGE;
}

/* Applies one option and its value; returns 0 or an exit status. */
static int apply_option(cli_t *c, const option_t *o, const char *v) {
  if (strcmp(o->name, "--log-level") == 0) {
    int lvl = chr_log_parse_level(v);
    if (lvl < 0) {
      fprintf(stderr, "chronis: invalid --log-level '%s' (debug, info, warn or error)\n", v);
      return CLI_USAGE;
    }
    chr_log_set_level(lvl);
  } else if (strcmp(o->name, "--log-format") == 0) {
    if (strcmp(v, "json") != 0 && strcmp(v, "text") != 0) {
      fprintf(stderr, "chronis: invalid --log-format '%s' (text or json)\n", v);
      return CLI_USAGE;
    }
    chr_log_set_json(strcmp(v, "json") == 0);
  } else if (strcmp(o->name, "--storage") == 0) {
    c->storage = v;
    c->storage_from = "--storage";
  } else if (strcmp(o->name, "--scripts") == 0) {
    c->scripts = v;
  } else if (strcmp(o->name, "--as") == 0) {
    if (strcmp(v, "adapter") != 0 && strcmp(v, "handler") != 0 && strcmp(v, "app") != 0) {
      fprintf(stderr, "chronis: invalid --as '%s' (handler, adapter or app)\n", v);
      return CLI_USAGE;
    }
    c->as = v;
  } else if (strcmp(o->name, "--status") == 0) {
    c->status_only = 1;
  } else if (strcmp(o->name, "--http") == 0) {
    c->http = v;
  } else if (strcmp(o->name, "--http-token") == 0) {
    c->http_token = v;
  }
  return 0;
}

/* A store URL given on the command line, read (not opened) before
 * anything runs, so that a path without its scheme or a misspelt option
 * name is a usage error: the message suggests the URL meant. */
static int check_storage(const char *url, const char *from) {
  chr_opts_t o;
  char err[600];
  if (chr_store_url_opts(url, &o, err, sizeof err) != 0) {
    fprintf(stderr, "chronis: %s: %s\n", from, err);
    return CLI_USAGE;
  }
  chr_opts_free(&o);
  return 0;
}

/* ---- the handlers ---- */

static lua_State *new_state(void) {
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    fputs("chronis: cannot create a Lua state\n", stderr);
    return NULL;
  }
  luaL_openlibs(L);
  set_paths(L);
  return L;
}

static int cmd_run(cli_t *c) {
  if (c->storage && check_storage(c->storage, c->storage_from) != 0) return CLI_USAGE;
  lua_State *L = new_state();
  if (L == NULL) return CLI_FAIL;
  int rc = run_app(L, c->nargs ? c->args[0] : "scripts/app.lua", c->storage, c->scripts, c->http,
                   c->http_token);
  lua_close(L);
  return rc;
}

static int cmd_serve(cli_t *c) {
  if (c->storage && check_storage(c->storage, c->storage_from) != 0) return CLI_USAGE;
  lua_State *L = new_state();
  if (L == NULL) return CLI_FAIL;
  int rc = run_app(L, NULL, c->storage, NULL, c->http ? c->http : "127.0.0.1:8080",
                   c->http_token);
  lua_close(L);
  return rc;
}

static int cmd_check(cli_t *c) {
  if (c->nargs == 0) {
    fprintf(stderr, "chronis: check needs a TARGET: a script, a lua: or file: URL, or a crontab "
                    "string (chronis help check)\n");
    return CLI_USAGE;
  }
  lua_State *L = new_state();
  if (L == NULL) return CLI_FAIL;
  int rc = CLI_FAIL;
  if (require_chronis(L) == 0 && call_scripts(L, "check", c->args[0], c->as, 2) == 0) {
    int ok = lua_toboolean(L, -2);
    for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, -1); i++) {
      lua_rawgeti(L, -1, i);
      printf("%s\n", lua_tostring(L, -1));
      lua_pop(L, 1);
    }
    rc = ok ? CLI_OK : CLI_FAIL;
  }
  lua_close(L);
  return rc;
}

static int cmd_migrate(cli_t *c) {
  const char *s = c->storage;
  if (s == NULL || (strncmp(s, "postgres:", 9) != 0 && strncmp(s, "postgresql:", 11) != 0)) {
    fprintf(stderr, "chronis: migrate needs --storage postgres://... (or CHRONIS_STORAGE); "
                    "SQLite migrates itself when opened (chronis help migrate)\n");
    return CLI_USAGE;
  }
  return chr_postgres_migrate(s, c->status_only, stdout);
}

/* s in double quotes for a shell: \ " $ ` escaped. */
static void print_quoted_path(const char *s) {
  for (; *s; s++) {
    if (strchr("\\\"$`", *s)) putchar('\\');
    putchar(*s);
  }
}

static int cmd_env(cli_t *c) {
  (void)c;
  if (!has_file(cmod_dir, "chronis/core.so")) {
    fprintf(stderr, "chronis: no chronis/core.so in %s: build it with make\n", cmod_dir);
    return CLI_FAIL;
  }
  /* An empty LUA_PATH entry (;;) stands for Lua's default path. */
  fputs("export LUA_PATH=\"", stdout);
  print_quoted_path(lib_dir);
  fputs("/?.lua;", stdout);
  print_quoted_path(lib_dir);
  fputs("/?/init.lua;${LUA_PATH:-;}\"\nexport LUA_CPATH=\"", stdout);
  print_quoted_path(cmod_dir);
  fputs("/?.so;${LUA_CPATH:-;}\"\n", stdout);
  return CLI_OK;
}

static int cmd_help(cli_t *c) {
  if (c->nargs == 0) {
    print_usage(stdout);
    return CLI_OK;
  }
  const command_t *cmd = find_command(c->args[0]);
  if (cmd == NULL) return unknown_command(c->args[0]);
  fputs(cmd->usage, stdout);
  return CLI_OK;
}

/* `chronis jobs ...` and `chronis stats`: lua/chronis/cli.lua reads its
 * own arguments (argv[1..]) and returns the exit status. */
static int run_cli(int argc, char **argv) {
  char looked[4 * PATH_MAX];
  looked[0] = '\0';
  if (find_library(looked, sizeof looked) != 0) {
    fprintf(stderr, "chronis: cannot find the chronis Lua library (chronis/init.lua); looked in "
                    "%s. Run chronis from its build tree, or install it with make install.\n",
            looked);
    return CLI_FAIL;
  }
  lua_State *L = new_state();
  if (L == NULL) return CLI_FAIL;
  int rc = CLI_FAIL;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "chronis.cli");
  if (pcall_tb(L, 1, 1) == LUA_OK) {
    lua_getfield(L, -1, "main");
    lua_createtable(L, argc, 0);
    for (int i = 0; i < argc; i++) {
      lua_pushstring(L, argv[i]);
      lua_rawseti(L, -2, i + 1);
    }
    if (pcall_tb(L, 1, 1) == LUA_OK) rc = (int)luaL_optinteger(L, -1, CLI_FAIL);
    else fprintf(stderr, "chronis: %s\n", lua_tostring(L, -1));
  } else {
    fprintf(stderr, "chronis: cannot load the chronis library: %s\n", lua_tostring(L, -1));
  }
  lua_close(L);
  return rc;
}

/* `chronis [options] jobs ...` or `... stats`, reached through the
 * command table (`chronis jobs ...` goes to run_cli straight from main):
 * the options the host read before the command go along. */
static int cli_from_table(cli_t *c, const char *name) {
  char *argv[MAX_ARGS + 4];
  int argc = 0, i = 0;
  argv[argc++] = (char *)name;
  /* `jobs` reads its command first, then the options. */
  if (strcmp(name, "jobs") == 0 && c->nargs > 0 && c->args[0][0] != '-')
    argv[argc++] = (char *)c->args[i++];
  if (c->storage && strcmp(c->storage_from, "--storage") == 0) {
    argv[argc++] = (char *)"--storage";
    argv[argc++] = (char *)c->storage;
  }
  for (; i < c->nargs; i++) argv[argc++] = (char *)c->args[i];
  return run_cli(argc, argv);
}

static int cmd_jobs(cli_t *c) {
  return cli_from_table(c, "jobs");
}

static int cmd_stats(cli_t *c) {
  return cli_from_table(c, "stats");
}

/* The option arg names ("--storage" or "--storage=URL"); NULL when none. */
static const option_t *option_of(const char *arg) {
  const char *eq = strncmp(arg, "--", 2) == 0 ? strchr(arg, '=') : NULL;
  return find_option(arg, eq ? (size_t)(eq - arg) : strlen(arg));
}

int main(int argc, char **argv) {
  if (argc > 1 && (strcmp(argv[1], "jobs") == 0 || strcmp(argv[1], "stats") == 0))
    return run_cli(argc - 1, argv + 1);
  cli_t c;
  memset(&c, 0, sizeof c);
  c.storage = getenv("CHRONIS_STORAGE");
  c.storage_from = "CHRONIS_STORAGE";
  const char *cmd_name = NULL;
  const option_t *given[NOPTIONS]; /* the options of one command, to check against it */
  size_t ngiven = 0;
  int help = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const option_t *o = a[0] == '-' && a[1] != '\0' ? option_of(a) : NULL;
    if (c.cmd && c.cmd->own_options && !(o && o->command == NULL)) {
      if (c.nargs == MAX_ARGS) {
        fprintf(stderr, "chronis: too many arguments\n");
        return CLI_USAGE;
      }
      c.args[c.nargs++] = a;
      continue;
    }
    if (a[0] == '-' && a[1] != '\0') {
      /* --name value, or --name=value */
      const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
      if (o == NULL) return unknown_option(a, eq ? (size_t)(eq - a) : strlen(a));
      const char *v = NULL;
      if (o->arg) {
        if (eq) v = eq + 1;
        else if (i + 1 < argc) v = argv[++i];
        else {
          fprintf(stderr, "chronis: option %s needs a value (%s %s)\n", o->name, o->name, o->arg);
          return CLI_USAGE;
        }
      } else if (eq) {
        fprintf(stderr, "chronis: option %s takes no value\n", o->name);
        return CLI_USAGE;
      }
      if (strcmp(o->name, "--version") == 0 || strcmp(o->name, "-v") == 0) {
        printf("chronis %s (%s, libuv %s)\n", CHR_VERSION, LUA_RELEASE, uv_version_string());
        return CLI_OK;
      }
      if (strcmp(o->name, "--help") == 0 || strcmp(o->name, "-h") == 0) {
        help = 1;
        continue;
      }
      if (o->command && ngiven < NOPTIONS) given[ngiven++] = o;
      int rc = apply_option(&c, o, v);
      if (rc != 0) return rc;
    } else if (cmd_name == NULL) {
      cmd_name = a;
      c.cmd = find_command(a);
      if (c.cmd == NULL) return unknown_command(a);
    } else if (c.nargs < MAX_ARGS) {
      c.args[c.nargs++] = a;
    }
  }
  if (help) {
    /* chronis --help, chronis run --help, chronis --help run */
    if (c.cmd == NULL) print_usage(stdout);
    else fputs(c.cmd->usage, stdout);
    return CLI_OK;
  }
  if (c.cmd == NULL) {
    print_usage(stderr);
    return CLI_USAGE;
  }
  for (size_t i = 0; i < ngiven; i++) {
    if (!option_of_command(given[i], c.cmd->name)) {
      char cmds[64];
      snprintf(cmds, sizeof cmds, "%s", given[i]->command);
      char *sp = strchr(cmds, ' ');
      if (sp) *sp = '/';
      fprintf(stderr, "chronis: %s is an option of %s, not of %s (chronis help %s)\n",
              given[i]->name, cmds, c.cmd->name, c.cmd->name);
      return CLI_USAGE;
    }
  }
  if (c.nargs > c.cmd->max_args && !c.cmd->own_options) {
    fprintf(stderr, "chronis: unexpected argument '%s' (usage: chronis %s)\n",
            c.args[c.cmd->max_args], c.cmd->synopsis);
    return CLI_USAGE;
  }
  /* Commands that do not load the library (migrate, help) run without it. */
  char looked[4 * PATH_MAX];
  looked[0] = '\0';
  if (c.cmd->run != cmd_migrate && c.cmd->run != cmd_help &&
      find_library(looked, sizeof looked) != 0) {
    fprintf(stderr, "chronis: cannot find the chronis Lua library (chronis/init.lua); looked in "
                    "%s. Run chronis from its build tree, or install it with make install.\n",
            looked);
    return CLI_FAIL;
  }
  return c.cmd->run(&c);
}
