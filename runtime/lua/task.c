/* task.c - coroutines resumed by the loop, their preemption, and waiting
 * (see task.h).
 *
 * Preemption and deadlines cost nothing while code behaves: no hook is
 * installed on a running coroutine. A watchdog thread looks every few
 * milliseconds at how long the executing task has run; past its time
 * slice (or its deadline) it signals the loop's thread, whose signal
 * handler installs a count hook on that coroutine with lua_sethook, the
 * one Lua call documented as safe from a signal handler (lua.c stops
 * scripts on Ctrl-C the same way). The hook then runs on the loop's
 * thread at the next instruction and yields the coroutine out: preempted
 * (queued to resume later) or killed. Yielding from a hook cannot be
 * caught by pcall, so a handler cannot escape its timeout; debug.sethook
 * in a handler cannot either, since the watchdog installs the hook again
 * on every tick past the deadline. */
#include "task.h"

#include <errno.h>
#include <lauxlib.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "core/common.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/time.h"
#include "util.h"

#define POOL_MAX 512
/* While a hook cannot yield (inside a C call that is not yieldable), it
 * tries again every HOOK_COUNT instructions. */
#define HOOK_COUNT 1000
#define WATCH_TICK_NS 5000000L
/* Go's runtime preempts goroutines with SIGURG for the same reasons:
 * nothing else uses it and its default action is to do nothing. */
#define PREEMPT_SIGNAL SIGURG

static lua_State *mainL;
static chr_task_t *current;   /* the task whose coroutine is executing */
static chr_task_t *free_list; /* reusable tasks with an idle coroutine */
static size_t nfree, nlive;
static int loop_depth;

/* Preempted tasks, resumed in order from an idle handle. */
static chr_task_t *rq_head, *rq_tail;
static size_t rq_len;
static uv_idle_t rq_idle;
static int rq_ready;

/* What the watchdog and the signal handler see of the executing task. */
static lua_State *volatile exec_co;
static _Atomic int64_t wd_since;    /* mono µs of the current resume, 0 = none */
static _Atomic int64_t wd_deadline; /* its deadline, 0 = none */
static _Atomic int wd_preempt;      /* it may be preempted */
static pthread_t loop_thread;
static int wd_started;

static void finish(chr_task_t *t, int status);
static void resume(chr_task_t *t, int nargs);

void chr_task_init(lua_State *L) {
  mainL = L;
}

lua_State *chr_task_main(void) {
  return mainL;
}

size_t chr_task_live(void) {
  return nlive;
}

int chr_loop_running(void) {
  return loop_depth > 0;
}

/* ---- hooks: preemption and deadlines ---- */

static void count_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  chr_task_t *t = current;
  if (t == NULL || t->co != L) { /* a late signal for a task that moved on */
    lua_sethook(L, NULL, 0, 0);
    return;
  }
  int64_t now = chr_time_mono();
  if (t->killed || (t->deadline && now >= t->deadline)) {
    t->killed = 1;
    if (lua_isyieldable(L)) {
      lua_yield(L, 0);
      return;
    }
    /* Raised again on every count event until it escapes. */
    lua_sethook(L, count_hook, LUA_MASKCOUNT, HOOK_COUNT);
    luaL_error(L, "%s", t->kill_reason ? t->kill_reason : "timeout");
    return;
  }
  if (t->preemptible && now - t->slice_start >= CHR_TASK_SLICE_US) {
    if (lua_isyieldable(L)) {
      lua_sethook(L, NULL, 0, 0);
      t->preempted = 1;
      lua_yield(L, 0);
      return;
    }
    lua_sethook(L, count_hook, LUA_MASKCOUNT, HOOK_COUNT);
    return;
  }
  lua_sethook(L, NULL, 0, 0);
}

static void preempt_signal_cb(int sig) {
  (void)sig;
  int saved = errno;
  lua_State *co = exec_co;
  if (co) lua_sethook(co, count_hook, LUA_MASKCOUNT, 1);
  errno = saved;
}

static void *watchdog(void *arg) {
  (void)arg;
  for (;;) {
    struct timespec ts = {0, WATCH_TICK_NS};
    nanosleep(&ts, NULL);
    int64_t since = atomic_load_explicit(&wd_since, memory_order_relaxed);
    if (since == 0) continue;
    int64_t now = chr_time_mono();
    int64_t dl = atomic_load_explicit(&wd_deadline, memory_order_relaxed);
    int preempt = atomic_load_explicit(&wd_preempt, memory_order_relaxed);
    if ((preempt && now - since >= CHR_TASK_SLICE_US) || (dl && now >= dl))
      pthread_kill(loop_thread, PREEMPT_SIGNAL);
  }
  return NULL;
}

static void watchdog_start(void) {
  if (wd_started) return;
  wd_started = 1;
  loop_thread = pthread_self();
  struct sigaction sa;
  sa.sa_handler = preempt_signal_cb;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(PREEMPT_SIGNAL, &sa, NULL);
  /* The watchdog must not receive the signal itself. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  pthread_t th;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  if (pthread_create(&th, &attr, watchdog, NULL) != 0)
    chr_log(CHR_LOG_ERROR, NULL, "cannot start the task watchdog: CPU-bound handlers will not be "
                                 "preempted and their timeouts wait for them to yield");
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
}

void chr_task_set_deadline(chr_task_t *t, int64_t deadline) {
  t->deadline = deadline;
}

/* ---- the run queue of preempted tasks ---- */

static void rq_remove(chr_task_t *t) {
  if (!t->queued) return;
  if (t->rq_prev) t->rq_prev->rq_next = t->rq_next;
  else rq_head = t->rq_next;
  if (t->rq_next) t->rq_next->rq_prev = t->rq_prev;
  else rq_tail = t->rq_prev;
  t->rq_prev = t->rq_next = NULL;
  t->queued = 0;
  rq_len--;
  if (rq_len == 0 && rq_ready) uv_idle_stop(&rq_idle);
}

/* Resumes the tasks queued before this pass, so a task preempted again
 * waits for the next iteration: I/O and timers are served in between. */
static void rq_cb(uv_idle_t *h) {
  (void)h;
  for (size_t n = rq_len; n > 0 && rq_head; n--) {
    chr_task_t *t = rq_head;
    rq_remove(t);
    t->preempted = 0;
    resume(t, 0);
  }
}

static void rq_push(chr_task_t *t) {
  if (!rq_ready) {
    uv_idle_init(chr_loop(), &rq_idle);
    rq_ready = 1;
  }
  t->rq_next = NULL;
  t->rq_prev = rq_tail;
  if (rq_tail) rq_tail->rq_next = t;
  else rq_head = t;
  rq_tail = t;
  t->queued = 1;
  if (rq_len++ == 0) uv_idle_start(&rq_idle, rq_cb);
}

/* ---- the loop ---- */

static int run_once(lua_State *L) {
  int *alive = lua_touserdata(L, 1);
  *alive = uv_run(chr_loop(), UV_RUN_ONCE);
  return 0;
}

/* One loop iteration inside a protected call: loop callbacks catch their
 * own Lua errors, but should one escape (a defect, or memory exhausted in
 * C code between two protected calls), it ends there, is logged, and the
 * loop's bookkeeping stays right. Returns uv_run's "alive". */
static int loop_once(lua_State *L) {
  int alive = 1;
  luaL_checkstack(L, 3, "event loop");
  loop_depth++;
  lua_pushcfunction(L, run_once);
  lua_pushlightuserdata(L, &alive);
  int rc = lua_pcall(L, 1, 0, 0);
  loop_depth--;
  if (rc != LUA_OK) {
    const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : luaL_typename(L, -1);
    chr_log(CHR_LOG_ERROR, NULL, "internal error: a Lua error escaped an event loop callback "
                                 "and was stopped there: %s", msg);
    lua_pop(L, 1);
  }
  return alive;
}

void chr_loop_step(lua_State *L) {
  if (loop_depth > 0)
    luaL_error(L, "cannot wait here: the event loop is already running (wait from a "
                  "chronis task, i.e. a handler or chronis.spawn, or from the main chunk)");
  loop_once(L);
}

/* ---- tasks ---- */

chr_task_t *chr_task_current(lua_State *L) {
  return current && current->co == L ? current : NULL;
}

chr_task_t *chr_task_running(void) {
  return current;
}

chr_task_t *chr_task_new(lua_State *L, chr_task_done_cb cb, void *data) {
  (void)L;
  watchdog_start();
  chr_task_t *t = free_list;
  if (t) {
    free_list = t->next_free;
    nfree--;
  } else {
    t = chr_calloc(1, sizeof *t);
    t->co = lua_newthread(mainL);
    t->ref = luaL_ref(mainL, LUA_REGISTRYINDEX);
  }
  t->done_cb = cb;
  t->data = data;
  t->waiting = NULL;
  t->deadline = 0;
  t->running = t->finished = t->killed = t->preempted = t->queued = t->exited = 0;
  t->preemptible = 0;
  t->exit_code = 0;
  t->reusable = 1;
  t->kill_reason = NULL;
  t->next_free = NULL;
  t->rq_prev = t->rq_next = NULL;
  nlive++;
  return t;
}

static void resume(chr_task_t *t, int nargs) {
  chr_task_t *saved = current;
  lua_State *saved_co = exec_co;
  int64_t saved_since = atomic_load_explicit(&wd_since, memory_order_relaxed);
  int64_t saved_dl = atomic_load_explicit(&wd_deadline, memory_order_relaxed);
  int saved_preempt = atomic_load_explicit(&wd_preempt, memory_order_relaxed);
  int nres = 0;
  current = t;
  t->running = 1;
  t->slice_start = chr_time_mono();
  exec_co = t->co;
  atomic_store_explicit(&wd_deadline, t->deadline, memory_order_relaxed);
  atomic_store_explicit(&wd_preempt, t->preemptible, memory_order_relaxed);
  atomic_store_explicit(&wd_since, t->slice_start, memory_order_relaxed);
  int status = lua_resume(t->co, NULL, nargs, &nres);
  atomic_store_explicit(&wd_since, saved_since, memory_order_relaxed);
  atomic_store_explicit(&wd_deadline, saved_dl, memory_order_relaxed);
  atomic_store_explicit(&wd_preempt, saved_preempt, memory_order_relaxed);
  exec_co = saved_co;
  t->running = 0;
  current = saved;
  if (status == LUA_YIELD) {
    if (t->killed) {
      lua_settop(t->co, 0);
      finish(t, CHR_TASK_KILLED);
    } else if (t->preempted) {
      /* Nothing to clear: a yield from a hook leaves the interrupted
       * function's registers on the stack, to be resumed as they are. */
      rq_push(t);
    } else if (t->waiting == NULL) {
      lua_settop(t->co, 0);
      lua_pushliteral(t->co, "a chronis task yielded outside a chronis wait "
                             "(coroutine.yield at the top level of a handler?)");
      finish(t, LUA_ERRRUN);
    }
    return;
  }
  if (status != LUA_OK && t->killed) {
    lua_settop(t->co, 0);
    status = CHR_TASK_KILLED;
  }
  finish(t, status);
}

static void finish(chr_task_t *t, int status) {
  t->finished = 1;
  if (status != LUA_OK) t->reusable = 0;
  lua_sethook(t->co, NULL, 0, 0);
  t->deadline = 0;
  if (t->done_cb) t->done_cb(t, status);
}

void chr_task_start(chr_task_t *t, int nargs) {
  resume(t, nargs);
}

void chr_task_kill(chr_task_t *t, const char *reason) {
  if (t->finished) return;
  t->kill_reason = reason;
  t->killed = 1;
  if (t->running) { /* ends at its next instruction */
    lua_sethook(t->co, count_hook, LUA_MASKCOUNT, 1);
    return;
  }
  rq_remove(t);
  if (t->waiting) {
    chr_waiter_t *w = t->waiting;
    t->waiting = NULL;
    w->task = NULL;
    if (w->cancel) {
      w->cancel(w);
    } else {
      w->orphaned = 1;
    }
  }
  lua_settop(t->co, 0);
  finish(t, CHR_TASK_KILLED);
}

int chr_task_end(lua_State *L, const char *reason) {
  chr_task_t *t = chr_task_current(L);
  t->killed = 1;
  t->kill_reason = reason;
  if (lua_isyieldable(L)) return lua_yield(L, 0);
  lua_sethook(L, count_hook, LUA_MASKCOUNT, 1);
  return luaL_error(L, "%s", reason);
}

int chr_task_exit(lua_State *L, int code) {
  chr_task_t *t = chr_task_current(L);
  t->exited = 1;
  t->exit_code = code;
  if (lua_isyieldable(L)) return chr_task_end(L, "os.exit");
  t->killed = 1;
  t->kill_reason = "os.exit";
  lua_sethook(L, count_hook, LUA_MASKCOUNT, 1);
  return luaL_error(L, "os.exit(%d) called from a chronis task: the task ends here", code);
}

void chr_task_release(chr_task_t *t) {
  nlive--;
  rq_remove(t);
  if (!t->reusable) {
#if LUA_VERSION_RELEASE_NUM >= 50406
    lua_closethread(t->co, mainL);
#else
    lua_resetthread(t->co);
#endif
  }
  lua_settop(t->co, 0);
  if (nfree >= POOL_MAX) {
    luaL_unref(mainL, LUA_REGISTRYINDEX, t->ref);
    free(t);
    return;
  }
  t->done_cb = NULL;
  t->data = NULL;
  t->next_free = free_list;
  free_list = t;
  nfree++;
}

/* ---- waiting ---- */

static int wait_k(lua_State *L, int status, lua_KContext ctx) {
  chr_waiter_t *w = (chr_waiter_t *)ctx;
  (void)status;
  return w->finish(L, w);
}

static int interrupt_signum;

void chr_task_interrupt_waits(int signum) {
  interrupt_signum = signum;
}

/* Gives up waiting for w: the operation is cancelled when it can be, else
 * left to finish on its own (orphaned). */
static int interrupted(lua_State *L, chr_waiter_t *w) {
  int signum = interrupt_signum;
  char what[128] = "";
  if (w->what) snprintf(what, sizeof what, " for %s", w->what);
  if (w->cancel) w->cancel(w);
  else w->orphaned = 1;
  return chr_lua_error(L, CHR_EINTR, "%s received while waiting%s",
                       signum == SIGINT ? "SIGINT" : signum == SIGTERM ? "SIGTERM" : "a signal", what);
}

int chr_wait(lua_State *L, chr_waiter_t *w) {
  if (w->done) return w->finish(L, w);
  chr_task_t *t = chr_task_current(L);
  if (t && lua_isyieldable(L)) {
    w->task = t;
    t->waiting = w;
    return lua_yieldk(L, 0, (lua_KContext)w, wait_k);
  }
  if (loop_depth > 0) {
    w->orphaned = 1;
    return luaL_error(L, "cannot wait here: called from a coroutine chronis does not manage, "
                         "inside a running loop (wait from the handler's own coroutine)");
  }
  while (!w->done) {
    if (interrupt_signum && !w->uninterruptible) return interrupted(L, w);
    if (!loop_once(L) && !w->done) {
      w->orphaned = 1;
      return luaL_error(L, "wait cannot complete: nothing left on the event loop");
    }
  }
  return w->finish(L, w);
}

void chr_waiter_done(chr_waiter_t *w) {
  w->done = 1;
  if (w->orphaned) {
    w->release(w);
    return;
  }
  chr_task_t *t = w->task;
  if (t) {
    w->task = NULL;
    t->waiting = NULL;
    resume(t, 0);
  }
}
