/* trigger.c - compiling trigger_args and computing fire times. */
#include "trigger.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cron.h"
#include "json.h"
#include "suggest.h"
#include "time.h"

static int key_is(chr_json_span_t k, const char *s) {
  return strlen(s) == k.n && memcmp(k.p, s, k.n) == 0;
}

/* Refuses, all in one message, every key of the JSON object args that
 * known (NULL-terminated) lacks; `what` names one ("interval key"). A
 * malformed object is left to the caller's own walk. */
static int check_keys(const char *args, const char *what, const char *const *known, char *err,
                      size_t errlen) {
  const char *it = args, *end = args + strlen(args);
  chr_json_span_t k, v;
  chr_unknown_t u;
  chr_unknown_init(&u);
  while (chr_json_next_member(&it, end, &k, &v) == 1) {
    int found = 0;
    for (const char *const *n = known; *n && !found; n++) found = key_is(k, *n);
    if (!found) chr_unknown_add(&u, k.p, k.n);
  }
  int rc = 0;
  if (u.n > 0) {
    chr_buf_t b;
    chr_buf_init(&b);
    chr_unknown_format(&u, what, known, NULL, &b);
    rc = chr_errf(err, errlen, "invalid trigger_args: %s", b.p);
    chr_buf_free(&b);
  }
  chr_unknown_free(&u);
  return rc;
}

/* A number value (JSON number, or a string holding one). */
static int span_number(chr_json_span_t v, double *out) {
  char tmp[64], *e;
  const char *p = v.p;
  size_t n = v.n;
  if (n >= 2 && p[0] == '"') {
    p++;
    n -= 2;
  }
  if (n == 0 || n >= sizeof tmp) return -1;
  memcpy(tmp, p, n);
  tmp[n] = '\0';
  *out = strtod(tmp, &e);
  return *e == '\0' && isfinite(*out) ? 0 : -1;
}

/* A JSON integer, exactly (a double holds µs exactly only up to 2255):
 * 0 and *out, or -1 when v is not one or does not fit in int64. */
static int span_integer(chr_json_span_t v, int64_t *out) {
  char tmp[32], *e;
  long long x;
  if (v.n == 0 || v.n >= sizeof tmp || memchr(v.p, '"', v.n)) return -1;
  memcpy(tmp, v.p, v.n);
  tmp[v.n] = '\0';
  errno = 0;
  x = strtoll(tmp, &e, 10);
  if (*e != '\0' || errno != 0) return -1;
  *out = x;
  return 0;
}

static int span_time(chr_json_span_t v, const chr_tz_t *tz, int64_t *out, char *msg,
                     size_t msglen) {
  char *s = chr_json_unescape(v.p, v.n);
  if (s == NULL) {
    int64_t i;
    double d;
    int in_range;
    if (span_integer(v, &i) == 0) {
      in_range = i >= CHR_TIME_MIN && i <= CHR_TIME_MAX;
    } else if (span_number(v, &d) == 0) {
      /* Checked as a double, before the conversion: outside int64 it is
       * undefined, and INT64_MIN would read as no time at all. */
      in_range = d >= (double)CHR_TIME_MIN && d < (double)(CHR_TIME_MAX + 1);
      if (in_range) i = (int64_t)d;
    } else {
      snprintf(msg, msglen, "expected an ISO-8601 time");
      return CHR_EINVAL;
    }
    if (!in_range) {
      snprintf(msg, msglen, "%.*s microseconds is out of range (times are " CHR_TIME_RANGE ")",
               (int)(v.n < 40 ? v.n : 40), v.p);
      return CHR_EINVAL;
    }
    *out = i;
    return 0;
  }
  int rc = chr_time_parse(s, strlen(s), tz, out, msg, msglen);
  free(s);
  return rc;
}

static int compile_interval(chr_trigger_t *t, const char *args, char *err, size_t errlen) {
  static const struct {
    const char *name;
    double us;
  } units[] = {{"seconds", 1e6}, {"minutes", 60e6}, {"hours", 3600e6}};
  const char *it = args, *end = args + strlen(args);
  chr_json_span_t k, v;
  double elapsed = 0, days = 0;
  char msg[160];
  int r;
  static const char *const keys[] = {"weeks", "days", "hours", "minutes", "seconds", "start_date",
                                     NULL};
  if (check_keys(args, "interval key", keys, err, errlen) != 0) return CHR_EINVAL;
  while ((r = chr_json_next_member(&it, end, &k, &v)) == 1) {
    double d;
    if (key_is(k, "start_date")) {
      if (span_time(v, t->tz, &t->start, msg, sizeof msg))
        return chr_errf(err, errlen, "invalid trigger_args 'start_date': %s", msg);
      continue;
    }
    int unit = -1, wall = 0;
    for (int i = 0; i < 3; i++)
      if (key_is(k, units[i].name)) unit = i;
    if (key_is(k, "days")) wall = 1;
    if (key_is(k, "weeks")) wall = 7;
    if (unit < 0 && !wall) continue; /* not reached: check_keys refused it */
    if (span_number(v, &d) != 0)
      return chr_errf(err, errlen, "invalid trigger_args '%.*s': %.*s is not a number", (int)k.n,
                  k.p, (int)v.n, v.p);
    if (d < 0)
      return chr_errf(err, errlen, "invalid trigger_args '%.*s': %g must not be negative",
                  (int)k.n, k.p, d);
    if (wall) days += d * wall;
    else elapsed += d * units[unit].us;
  }
  if (r < 0) return chr_errf(err, errlen, "invalid trigger_args: malformed");
  /* Fractional days become elapsed time; whole days stay on the wall clock. */
  double whole = floor(days);
  elapsed += (days - whole) * 86400e6;
  if (whole > 1e6 || elapsed > 1e17)
    return chr_errf(err, errlen, "invalid trigger_args: interval is too long");
  t->wall_days = (int32_t)whole;
  t->elapsed_us = (int64_t)llround(elapsed);
  if (t->wall_days == 0 && t->elapsed_us <= 0)
    return chr_errf(err, errlen, "invalid trigger_args: interval must be greater than 0");
  return 0;
}

static int compile_cron(const chr_job_t *j, chr_trigger_t *t, const char *args, char *err,
                        size_t errlen) {
  const char *fields[CHR_CRON_NFIELDS] = {0};
  char *owned[CHR_CRON_NFIELDS + 1] = {0};
  char *crontab = NULL, *dialect = NULL;
  chr_cron_opts_t opts = {CHR_CRON_STANDARD, NULL};
  const char *it = args, *end = args + strlen(args);
  chr_json_span_t k, v;
  int r, rc = 0, nfields = 0;
  static const char *const keys[] = {"year",   "month",  "day",  "week",    "day_of_week", "hour",
                                     "minute", "second", "cron", "dialect", NULL};
  if (check_keys(args, "cron field", keys, err, errlen) != 0) return CHR_EINVAL;
  while (rc == 0 && (r = chr_json_next_member(&it, end, &k, &v)) == 1) {
    char *val = chr_json_unescape(v.p, v.n);
    if (val == NULL) val = chr_strndup(v.p, v.n); /* numbers */
    if (key_is(k, "cron")) {
      free(crontab);
      crontab = val;
      continue;
    }
    if (key_is(k, "dialect")) {
      free(dialect);
      dialect = val;
      continue;
    }
    int f = -1;
    for (int i = 0; i < CHR_CRON_NFIELDS; i++)
      if (key_is(k, chr_cron_field_names[i])) f = i;
    if (f < 0) {
      rc = chr_errf(err, errlen, "invalid cron field '%.*s': unknown field", (int)k.n, k.p);
      free(val);
      break;
    }
    free(owned[f]);
    owned[f] = val;
    fields[f] = val;
    nfields++;
  }
  if (rc == 0 && r < 0) rc = chr_errf(err, errlen, "invalid trigger_args: malformed");
  if (rc == 0 && crontab && nfields)
    rc = chr_errf(err, errlen, "invalid trigger_args: give either 'cron' or cron fields, not both");
  if (rc == 0 && !crontab && !nfields)
    rc = chr_errf(err, errlen, "invalid trigger_args: a cron trigger needs fields or 'cron'");
  if (rc == 0 && dialect && !crontab)
    rc = chr_errf(err, errlen, "invalid trigger_args: 'dialect' applies to a 'cron' string");
  if (rc == 0 && dialect && chr_cron_dialect_of(dialect) < 0)
    rc = chr_errf(err, errlen, "invalid trigger_args 'dialect': unknown dialect '%.40s' "
                  "(expected standard, vixie, quartz or year_last)", dialect);
  if (rc == 0) {
    /* 'H' spreads jobs by their id. */
    if (dialect) opts.dialect = (chr_cron_dialect_t)chr_cron_dialect_of(dialect);
    opts.hash_key = chr_job_has(j, CHR_F_JOB_ID) ? j->job_id : NULL;
    t->cron = crontab ? chr_cron_parse_crontab_opts(crontab, &opts, err, errlen)
                      : chr_cron_parse_fields_opts(fields, &opts, err, errlen);
    if (t->cron == NULL) rc = CHR_EINVAL;
  }
  free(crontab);
  free(dialect);
  for (int i = 0; i < CHR_CRON_NFIELDS; i++) free(owned[i]);
  return rc;
}

static int compile_date(chr_trigger_t *t, const char *args, char *err, size_t errlen) {
  const char *it = args, *end = args + strlen(args);
  chr_json_span_t k, v;
  char msg[160];
  int r;
  static const char *const keys[] = {"run_date", NULL};
  if (check_keys(args, "date key", keys, err, errlen) != 0) return CHR_EINVAL;
  while ((r = chr_json_next_member(&it, end, &k, &v)) == 1) {
    if (span_time(v, t->tz, &t->run_date, msg, sizeof msg))
      return chr_errf(err, errlen, "invalid trigger_args 'run_date': %s", msg);
  }
  if (r < 0) return chr_errf(err, errlen, "invalid trigger_args: malformed");
  if (t->run_date == CHR_TIME_NONE)
    return chr_errf(err, errlen, "invalid trigger_args: a date trigger needs 'run_date'");
  return 0;
}

int chr_trigger_compile(const chr_job_t *j, chr_trigger_t *t, char *err, size_t errlen) {
  memset(t, 0, sizeof *t);
  t->start = t->run_date = CHR_TIME_NONE;
  t->type = j->trigger_type;
  const char *zone = chr_job_has(j, CHR_F_TIMEZONE) ? j->timezone : "UTC";
  char msg[160];
  if ((t->tz = chr_tz_get(zone, msg, sizeof msg)) == NULL)
    return chr_errf(err, errlen, "invalid field 'timezone': %s", msg);
  const char *args = chr_job_has(j, CHR_F_TRIGGER_ARGS) ? j->trigger_args : "{}";
  int rc;
  switch (t->type) {
  case CHR_TT_INTERVAL: rc = compile_interval(t, args, err, errlen); break;
  case CHR_TT_CRON: rc = compile_cron(j, t, args, err, errlen); break;
  case CHR_TT_DATE: rc = compile_date(t, args, err, errlen); break;
  default: return chr_errf(err, errlen, "invalid field 'trigger_type': missing");
  }
  if (rc) chr_trigger_free(t);
  return rc;
}

void chr_trigger_free(chr_trigger_t *t) {
  if (t->cron) chr_cron_free(t->cron);
  t->cron = NULL;
}

static int64_t interval_step(const chr_trigger_t *t, int64_t prev) {
  int64_t next = prev;
  if (t->wall_days) {
    int64_t local = prev + (int64_t)chr_tz_offset(t->tz, prev) * CHR_USEC;
    next = chr_tz_to_utc(t->tz, local + (int64_t)t->wall_days * 86400 * CHR_USEC);
  }
  return next + t->elapsed_us;
}

int64_t chr_trigger_first(const chr_trigger_t *t, int64_t now) {
  switch (t->type) {
  case CHR_TT_INTERVAL: return t->start != CHR_TIME_NONE ? t->start : interval_step(t, now);
  case CHR_TT_CRON: return chr_cron_next(t->cron, now, t->tz);
  case CHR_TT_DATE: return t->run_date;
  }
  return CHR_TIME_NONE;
}

int64_t chr_trigger_next(const chr_trigger_t *t, int64_t prev) {
  switch (t->type) {
  case CHR_TT_INTERVAL: return interval_step(t, prev);
  case CHR_TT_CRON: return chr_cron_next(t->cron, prev, t->tz);
  case CHR_TT_DATE: return prev < t->run_date ? t->run_date : CHR_TIME_NONE;
  }
  return CHR_TIME_NONE;
}
