/* task.h - chronis tasks: Lua coroutines that the runtime resumes from the
 * loop (handlers, spawned functions, Lua adapter calls), and waiters, the
 * one mechanism by which a C function waits for an asynchronous result:
 * inside a task it yields and is resumed by the result; anywhere else it
 * drives the loop until its own result is ready (docs/design.md, "Process
 * model").
 *
 * Handler tasks are preempted: one that runs Lua code for longer than a
 * time slice without waiting is suspended at the next instruction and
 * resumed on a later loop iteration, so timers (lease heartbeats,
 * timeouts), I/O and other tasks are served while a handler computes.
 * Other tasks (Lua adapter calls, callbacks, spawned functions) keep
 * plain coroutine semantics: code between two waits runs as one piece,
 * which Lua-written stores rely on for their atomicity. */
#ifndef CHR_TASK_H
#define CHR_TASK_H

#include <stdint.h>

#include <lua.h>
#include <uv.h>

typedef struct chr_task chr_task_t;
typedef struct chr_waiter chr_waiter_t;

/* Called once when the task ends: status LUA_OK (results on t->co's stack)
 * or an error status (error value on top of t->co), or CHR_TASK_KILLED
 * when it was stopped by chr_task_kill or by os.exit (nothing on the
 * stack). */
typedef void (*chr_task_done_cb)(chr_task_t *t, int status);
#define CHR_TASK_KILLED (-100)

/* A time slice: Lua code that runs this long without waiting is
 * suspended and resumed on the next loop iteration. */
#define CHR_TASK_SLICE_US 20000

struct chr_task {
  lua_State *co;
  int ref; /* registry ref anchoring co */
  chr_task_done_cb done_cb;
  void *data;
  chr_waiter_t *waiting; /* the waiter it is suspended on, if any */
  int64_t deadline;      /* chr_time_mono() deadline for CPU-bound code, 0 = none */
  int64_t slice_start;   /* chr_time_mono() of the current resume */
  unsigned running : 1, finished : 1, killed : 1, reusable : 1, preempted : 1, queued : 1,
      exited : 1, preemptible : 1;
  int exit_code;         /* with exited: the code given to os.exit */
  const char *kill_reason;
  chr_task_t *next_free;
  chr_task_t *rq_prev, *rq_next; /* the queue of preempted tasks */
};

struct chr_waiter {
  chr_task_t *task; /* set while a task is suspended on it */
  int done;
  int orphaned; /* the task went away: finish() will never be called */
  /* Pushes the results onto L (or raises) and frees the waiter. */
  int (*finish)(lua_State *L, chr_waiter_t *w);
  /* Frees an orphaned waiter once its operation completes. */
  void (*release)(chr_waiter_t *w);
  /* Optional: stops the operation at once when its task is killed, and
   * frees the waiter; chr_waiter_done is then never called. Without it
   * the waiter is orphaned until the operation completes. */
  void (*cancel)(chr_waiter_t *w);
  /* Set by waits that a stop signal must not end (a scheduler's stop). */
  int uninterruptible;
  /* What it waits for, in messages ("get_job on the redis store"), or NULL. */
  const char *what;
};

/* Creates a task whose coroutine is ready for a function and its
 * arguments to be pushed (then chr_task_start). Tasks come from a pool;
 * stack: L unchanged. */
chr_task_t *chr_task_new(lua_State *L, chr_task_done_cb cb, void *data);
/* Runs the function on t->co (pushed with nargs arguments) until it ends,
 * waits or is preempted. */
void chr_task_start(chr_task_t *t, int nargs);
/* Stops a task wherever it is; its done callback runs with CHR_TASK_KILLED
 * (at once when it is suspended, or at its next instruction when it is
 * executing). */
void chr_task_kill(chr_task_t *t, const char *reason);
/* Arms the CPU-bound deadline (monotonic µs): Lua code still running past
 * it is ended like chr_task_kill, whether or not it waits. */
void chr_task_set_deadline(chr_task_t *t, int64_t deadline);
/* Returns the task to the pool (after its done callback). */
void chr_task_release(chr_task_t *t);
/* The task running on L, or NULL. */
chr_task_t *chr_task_current(lua_State *L);
/* The innermost task executing now (whichever coroutine), or NULL. */
chr_task_t *chr_task_running(void);
/* Ends the task executing on L because its code called os.exit(code):
 * marks it exited and yields it out (never returns to the caller's Lua
 * code). Only valid when chr_task_current(L) is a task. */
int chr_task_exit(lua_State *L, int code);

/* Ends the task executing on L at its own request (chronis.snooze,
 * cancel, fail): yields it out the way a timeout does, so no pcall in its
 * code can catch it; it finishes as CHR_TASK_KILLED. Where the task cannot
 * yield (inside a C call such as a table.sort comparator) it raises
 * `reason` and yields at its next instruction that can. Only valid when
 * chr_task_current(L) is a task. */
int chr_task_end(lua_State *L, const char *reason);

/* Waits for w: returns w->finish's results (a lua_CFunction tail). */
int chr_wait(lua_State *L, chr_waiter_t *w);
/* Called by the operation when its result is ready. */
void chr_waiter_done(chr_waiter_t *w);

/* A stop signal (SIGINT, SIGTERM) arrived, or with 0 has been dealt with:
 * until then, every wait outside a task (the main chunk driving the loop)
 * raises an `interrupted` error at once instead of waiting on, so that an
 * app waiting for a store that does not answer can be stopped. Waits
 * inside tasks go on: their scheduler's stop decides. */
void chr_task_interrupt_waits(int signum);

/* Drives the loop once (blocking for events); refuses re-entry from a
 * callback with a Lua error. A Lua error that escapes a loop callback is
 * logged and the loop goes on. */
void chr_loop_step(lua_State *L);
int chr_loop_running(void);

void chr_task_init(lua_State *L);
/* The main thread of the state tasks run on. */
lua_State *chr_task_main(void);
size_t chr_task_live(void);

#endif
