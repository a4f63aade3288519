/* trigger.h - a job's trigger compiled from trigger_type / trigger_args /
 * timezone, and its fire times: interval (elapsed time, except days and
 * weeks, which keep the wall-clock time across DST), cron, and date. */
#ifndef CHR_TRIGGER_H
#define CHR_TRIGGER_H

#include <stdint.h>

#include "cron.h"
#include "job.h"
#include "tz.h"

typedef struct chr_trigger {
  int type; /* chr_trigger_type_t */
  const chr_tz_t *tz;
  int64_t elapsed_us; /* interval: weeks/days excluded */
  int32_t wall_days;  /* interval: days + 7 * weeks */
  int64_t start;      /* interval: start_date, CHR_TIME_NONE when absent */
  chr_cron_t *cron;
  int64_t run_date;
} chr_trigger_t;

/* Compiles and validates; errors name the field ("invalid trigger_args:
 * interval key 'secs' is unknown"). */
int chr_trigger_compile(const chr_job_t *j, chr_trigger_t *t, char *err, size_t errlen);
void chr_trigger_free(chr_trigger_t *t);

/* The first fire time of a job created at `now`; CHR_TIME_NONE when none. */
int64_t chr_trigger_first(const chr_trigger_t *t, int64_t now);
/* The first fire time strictly after `prev`; CHR_TIME_NONE when none. */
int64_t chr_trigger_next(const chr_trigger_t *t, int64_t prev);

#endif
