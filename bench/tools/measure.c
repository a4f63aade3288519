/* measure.c - runs one command and reports what the OS measured of it:
 * wall time on the monotonic clock, user and system CPU seconds and peak
 * RSS (wait4's rusage, which covers the child and every descendant it
 * waited for), and how it ended. The benchmark harness wraps every
 * scenario process in it, so no figure comes from the program measured.
 *
 *   measure [--timeout S] [--out FILE] [--log FILE] -- cmd args...
 *   measure --freeport      prints a free TCP port on 127.0.0.1
 *
 * The result is one JSON object, written to --out (or stdout). The command
 * runs in its own process group, killed whole on timeout and at the end,
 * so no stray child outlives its measurement. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t timed_out;
static volatile sig_atomic_t stop_sig;

static void on_alarm(int sig) {
  (void)sig;
  timed_out = 1;
}

static void on_term(int sig) { stop_sig = sig; }

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int freeport(void) {
  struct sockaddr_in a;
  socklen_t len = sizeof a;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 1;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
      getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
    perror("measure: freeport");
    return 1;
  }
  printf("%d\n", ntohs(a.sin_port));
  close(fd);
  return 0;
}

static void usage(void) {
  fprintf(stderr, "usage: measure [--timeout S] [--out FILE] [--log FILE] -- cmd args...\n"
                  "       measure --freeport\n");
  exit(2);
}

int main(int argc, char **argv) {
  double timeout = 0;
  const char *out = NULL, *log = NULL;
  int i;
  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--freeport") == 0) return freeport();
    if (strcmp(argv[i], "--") == 0) {
      i++;
      break;
    }
    if (i + 1 >= argc) usage();
    if (strcmp(argv[i], "--timeout") == 0) timeout = atof(argv[++i]);
    else if (strcmp(argv[i], "--out") == 0) out = argv[++i];
    else if (strcmp(argv[i], "--log") == 0) log = argv[++i];
    else usage();
  }
  if (i >= argc) usage();

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm; /* no SA_RESTART: wait4 must return EINTR */
  sigaction(SIGALRM, &sa, NULL);
  sa.sa_handler = on_term;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  double t0 = mono();
  pid_t pid = fork();
  if (pid < 0) {
    perror("measure: fork");
    return 1;
  }
  if (pid == 0) {
    setpgid(0, 0);
    if (log) {
      int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd < 0) {
        perror(log);
        _exit(127);
      }
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    execvp(argv[i], argv + i);
    fprintf(stderr, "measure: cannot run %s: %s\n", argv[i], strerror(errno));
    _exit(127);
  }
  setpgid(pid, pid);
  if (timeout > 0) {
    struct itimerval it;
    memset(&it, 0, sizeof it);
    it.it_value.tv_sec = (time_t)timeout;
    it.it_value.tv_usec = (suseconds_t)((timeout - (double)(time_t)timeout) * 1e6);
    setitimer(ITIMER_REAL, &it, NULL);
  }
  int status = 0;
  struct rusage ru;
  memset(&ru, 0, sizeof ru);
  for (;;) {
    pid_t r = wait4(pid, &status, 0, &ru);
    if (r == pid) break;
    if (r < 0 && errno == EINTR) {
      if (timed_out || stop_sig) kill(-pid, SIGKILL);
      continue;
    }
    perror("measure: wait4");
    return 1;
  }
  double wall = mono() - t0;
  kill(-pid, SIGKILL); /* leftovers of the group, if any */

  FILE *f = out ? fopen(out, "w") : stdout;
  if (f == NULL) {
    perror(out);
    return 1;
  }
  fprintf(f,
          "{\"wall_s\":%.6f,\"user_s\":%.6f,\"sys_s\":%.6f,\"cpu_s\":%.6f,"
          "\"maxrss_kb\":%ld,\"exit\":%d,\"signal\":%d,\"timeout\":%s}\n",
          wall, ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
          ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6,
          ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
              ru.ru_stime.tv_usec / 1e6,
          ru.ru_maxrss, WIFEXITED(status) ? WEXITSTATUS(status) : -1,
          WIFSIGNALED(status) ? WTERMSIG(status) : 0, timed_out ? "true" : "false");
  if (out) fclose(f);
  if (stop_sig) return 128 + stop_sig;
  return 0;
}
