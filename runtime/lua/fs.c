/* fs.c - chronis.fs: the few file-system operations scripts and Lua
 * adapters need and plain Lua lacks: atomic replacement of a file (temp
 * file, fsync, rename, fsync of the folder), mkdir -p, folder listing, file
 * stats, and watching folders on the loop (uv_fs_event) for hot reload. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/common.h"
#include "core/loop.h"
#include "util.h"
#include "task.h"

static int fail_errno(lua_State *L, const char *what, const char *path) {
  return chr_lua_error(L, CHR_EINVAL, "%s '%s': %s", what, path, strerror(errno));
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* write_atomic(path, data): readers see the old file or the new one, never
 * a part, even if the process dies mid-write. */
static int l_write_atomic(lua_State *L) {
  const char *path = chr_lua_checkstring(L, 1);
  size_t n;
  const char *data = chr_lua_checklstring(L, 2, &n);
  char *tmp = chr_sprintf("%s.tmp.%d", path, (int)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    lua_pushstring(L, tmp);
    free(tmp);
    return fail_errno(L, "cannot create", lua_tostring(L, -1));
  }
  if (write_all(fd, data, n) != 0 || fsync(fd) != 0) {
    int e = errno;
    close(fd);
    unlink(tmp);
    free(tmp);
    errno = e;
    return fail_errno(L, "cannot write", path);
  }
  close(fd);
  if (rename(tmp, path) != 0) {
    int e = errno;
    unlink(tmp);
    free(tmp);
    errno = e;
    return fail_errno(L, "cannot replace", path);
  }
  free(tmp);
  /* The rename is durable once the folder's entry is on disk. */
  char *dir = chr_strdup(path);
  char *slash = strrchr(dir, '/');
  if (slash == dir) slash[1] = '\0';
  else if (slash) *slash = '\0';
  else strcpy(dir, ".");
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  free(dir);
  return 0;
}

static int l_mkdir_p(lua_State *L) {
  const char *path = chr_lua_checkstring(L, 1);
  char *p = chr_strdup(path);
  for (char *s = p + 1; *s; s++) {
    if (*s != '/') continue;
    *s = '\0';
    if (mkdir(p, 0755) != 0 && errno != EEXIST) {
      lua_pushstring(L, p);
      free(p);
      return fail_errno(L, "cannot create folder", lua_tostring(L, -1));
    }
    *s = '/';
  }
  if (mkdir(p, 0755) != 0 && errno != EEXIST) {
    free(p);
    return fail_errno(L, "cannot create folder", path);
  }
  free(p);
  return 0;
}

/* list(dir) -> array of {name=, type="file"|"dir"|"other"}, sorted by name */
static int l_list(lua_State *L) {
  const char *path = chr_lua_checkstring(L, 1);
  DIR *d = opendir(path);
  if (d == NULL) return fail_errno(L, "cannot open folder", path);
  lua_newtable(L);
  lua_Integer i = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    char *full = chr_sprintf("%s/%s", path, e->d_name);
    struct stat st;
    const char *type = "other";
    if (stat(full, &st) == 0) type = S_ISDIR(st.st_mode) ? "dir" : S_ISREG(st.st_mode) ? "file" : "other";
    free(full);
    lua_createtable(L, 0, 2);
    lua_pushstring(L, e->d_name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, type);
    lua_setfield(L, -2, "type");
    lua_rawseti(L, -2, ++i);
  }
  closedir(d);
  return 1;
}

/* stat(path) -> {type=, size=, mtime=} or nil */
static int l_stat(lua_State *L) {
  struct stat st;
  if (stat(chr_lua_checkstring(L, 1), &st) != 0) {
    lua_pushnil(L);
    return 1;
  }
  lua_createtable(L, 0, 3);
  lua_pushstring(L, S_ISDIR(st.st_mode) ? "dir" : S_ISREG(st.st_mode) ? "file" : "other");
  lua_setfield(L, -2, "type");
  lua_pushinteger(L, (lua_Integer)st.st_size);
  lua_setfield(L, -2, "size");
  lua_pushnumber(L, (double)st.st_mtim.tv_sec + st.st_mtim.tv_nsec / 1e9);
  lua_setfield(L, -2, "mtime");
  return 1;
}

/* ---- watching ---- */

#define WATCH_MT "chronis.watch"

typedef struct watch {
  uv_fs_event_t *ev;
  int cb_ref;
  lua_State *L; /* main thread */
} watch_t;

static void watch_close_cb(uv_handle_t *h) {
  free(h);
}

static void watch_done(chr_task_t *t, int status) {
  if (status != LUA_OK && status != CHR_TASK_KILLED)
    fprintf(stderr, "chronis: watch callback failed: %s\n", lua_tostring(t->co, -1));
  chr_task_release(t);
}

/* Calls the Lua callback(filename, "change"|"rename") in a task of its own. */
static void watch_cb(uv_fs_event_t *h, const char *filename, int events, int status) {
  watch_t *w = h->data;
  if (w == NULL || status < 0) return;
  lua_State *L = w->L;
  chr_task_t *t = chr_task_new(L, watch_done, NULL);
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->cb_ref);
  lua_pushstring(L, filename ? filename : "");
  lua_pushstring(L, (events & UV_RENAME) ? "rename" : "change");
  lua_xmove(L, t->co, 3);
  chr_task_start(t, 2);
}

static int l_watch_close(lua_State *L) {
  watch_t *w = chr_lua_checkudata(L, 1, WATCH_MT);
  if (w->ev) {
    w->ev->data = NULL;
    uv_fs_event_stop(w->ev);
    uv_close((uv_handle_t *)w->ev, watch_close_cb);
    w->ev = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, w->cb_ref);
    w->cb_ref = LUA_NOREF;
  }
  return 0;
}

/* watch(path, fn(filename, event)) -> watcher with :close(). The watcher
 * does not keep the loop alive by itself. */
static int l_watch(lua_State *L) {
  const char *path = chr_lua_checkstring(L, 1);
  chr_lua_checktype(L, 2, LUA_TFUNCTION);
  watch_t *w = lua_newuserdatauv(L, sizeof *w, 0);
  w->ev = NULL;
  w->cb_ref = LUA_NOREF;
  if (luaL_newmetatable(L, WATCH_MT)) {
    static const luaL_Reg m[] = {{"close", l_watch_close}, {NULL, NULL}};
    lua_pushcfunction(L, l_watch_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_watch_close);
    lua_setfield(L, -2, "__close");
    luaL_newlib(L, m);
    lua_setfield(L, -2, "__index");
  }
  lua_setmetatable(L, -2);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  w->L = lua_tothread(L, -1);
  lua_pop(L, 1);
  w->ev = chr_malloc(sizeof *w->ev);
  uv_fs_event_init(chr_loop(), w->ev);
  int rc = uv_fs_event_start(w->ev, watch_cb, path, 0);
  if (rc != 0) {
    uv_close((uv_handle_t *)w->ev, watch_close_cb);
    w->ev = NULL;
    return chr_lua_error(L, CHR_EINVAL, "cannot watch '%s': %s", path, uv_strerror(rc));
  }
  w->ev->data = w;
  uv_unref((uv_handle_t *)w->ev);
  lua_pushvalue(L, 2);
  w->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 1;
}

int luaopen_chronis_fs(lua_State *L) {
  static const luaL_Reg fns[] = {{"write_atomic", l_write_atomic},
                                 {"mkdir_p", l_mkdir_p},
                                 {"list", l_list},
                                 {"stat", l_stat},
                                 {"watch", l_watch},
                                 {NULL, NULL}};
  luaL_newlib(L, fns);
  return 1;
}
