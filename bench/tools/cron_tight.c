/* cron_tight.c - B4 without the Lua boundary: each expression is compiled
 * once and chr_cron_next runs in a tight C loop over the workload of
 * bench/data/cron_mix.txt. Links build/libchronis.a.
 *
 *   cron_tight MIX_FILE RESULTS_FILE MIN_SECONDS
 *
 * Writes the first round's fire times (epoch seconds, one a line, -1 for
 * none) to RESULTS_FILE and prints "BENCH {json}" with the rate. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cron.h"
#include "time.h"
#include "tz.h"

#define MAXN 64

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static char *trim(char *s) {
  size_t n = strlen(s);
  while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ')) s[--n] = '\0';
  return s;
}

int main(int argc, char **argv) {
  char line[512], err[256];
  char *exprs[MAXN], *zones[MAXN];
  long long starts[MAXN];
  int ne = 0, nz = 0, ns = 0, chain = 5;
  if (argc != 4) {
    fprintf(stderr, "usage: cron_tight MIX_FILE RESULTS_FILE MIN_SECONDS\n");
    return 2;
  }
  FILE *f = fopen(argv[1], "r");
  if (!f) {
    perror(argv[1]);
    return 1;
  }
  while (fgets(line, sizeof line, f)) {
    trim(line);
    if (strncmp(line, "expr ", 5) == 0 && ne < MAXN) exprs[ne++] = strdup(line + 5);
    else if (strncmp(line, "zone ", 5) == 0 && nz < MAXN) zones[nz++] = strdup(line + 5);
    else if (strncmp(line, "start ", 6) == 0 && ns < MAXN) starts[ns++] = atoll(line + 6);
    else if (strncmp(line, "chain ", 6) == 0) chain = atoi(line + 6);
  }
  fclose(f);
  double min_s = atof(argv[3]);

  chr_cron_t **cr = calloc((size_t)ne, sizeof *cr);
  const chr_tz_t **tz = calloc((size_t)nz, sizeof *tz);
  for (int e = 0; e < ne; e++)
    if (!(cr[e] = chr_cron_parse_crontab(exprs[e], err, sizeof err))) {
      fprintf(stderr, "%s\n", err);
      return 1;
    }
  for (int z = 0; z < nz; z++)
    if (!(tz[z] = chr_tz_get(zones[z], err, sizeof err))) {
      fprintf(stderr, "%s\n", err);
      return 1;
    }

  FILE *out = fopen(argv[2], "w");
  if (!out) {
    perror(argv[2]);
    return 1;
  }
  long long calls = 0, rounds = 0;
  int64_t sink = 0;
  double t0 = mono(), el;
  do {
    for (int e = 0; e < ne; e++)
      for (int z = 0; z < nz; z++)
        for (int s = 0; s < ns; s++) {
          int64_t t = (int64_t)starts[s] * 1000000;
          for (int k = 0; k < chain; k++) {
            if (t != CHR_TIME_NONE) t = chr_cron_next(cr[e], t, tz[z]);
            calls++;
            if (rounds == 0) fprintf(out, "%lld\n", t == CHR_TIME_NONE ? -1LL : (long long)(t / 1000000));
          }
          sink += t;
        }
    rounds++;
    el = mono() - t0;
  } while (el < min_s);
  fclose(out);
  printf("BENCH {\"impl\":\"chronis-c\",\"calls\":%lld,\"rounds\":%lld,\"seconds\":%.6f,"
         "\"per_s\":%.1f,\"sink\":%lld}\n",
         calls, rounds, el, calls / el, (long long)(sink & 1));
  return 0;
}
