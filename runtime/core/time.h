/* time.h - instants (int64 µs since the epoch, UTC), ISO-8601 parsing and
 * formatting, civil calendar arithmetic and the process clocks. Zone rules
 * live in tz.h; this unit only consults a zone to resolve naive strings. */
#ifndef CHR_TIME_H
#define CHR_TIME_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

struct chr_tz;

/* A broken-down wall-clock time, no zone attached. */
typedef struct chr_civil {
  int year, month, day;      /* month 1..12, day 1..31 */
  int hour, minute, second;  /* 0..23, 0..59, 0..59 */
  int usec;                  /* 0..999999 */
} chr_civil_t;

/* Proleptic Gregorian calendar; days are counted from 1970-01-01. */
int64_t chr_days_from_civil(int64_t y, int m, int d);
void chr_civil_from_days(int64_t days, int *y, int *m, int *d);
int chr_days_in_month(int y, int m);
int chr_is_leap(int y);
/* 0 = Monday .. 6 = Sunday, for a day count from 1970-01-01. */
int chr_weekday(int64_t days);

/* Treats c as UTC. */
int64_t chr_civil_to_us(const chr_civil_t *c);
void chr_us_to_civil(int64_t us, chr_civil_t *c);

/* The instants that have an ISO-8601 form chronis reads back: years
 * 0001..9999. Job times and trigger times outside it are refused. */
#define CHR_TIME_MIN (-62135596800LL * CHR_USEC)      /* 0001-01-01T00:00:00Z */
#define CHR_TIME_MAX (253402300800LL * CHR_USEC - 1)  /* 9999-12-31T23:59:59.999999Z */
#define CHR_TIME_RANGE "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z"

/* Parses YYYY-MM-DD[T ]HH:MM:SS[.f{1,6}][Z|±HH:MM]. A naive string (no
 * offset) is read in zone `naive` (NULL = UTC), with the gap/fold rules of
 * chr_tz_resolve. On error returns CHR_EINVAL and writes a message naming the
 * input and the problem into err. */
int chr_time_parse(const char *s, size_t len, const struct chr_tz *naive,
                   int64_t *out, char *err, size_t errlen);

/* The parser under chr_time_parse, for callers that must tell naive strings
 * from ones with an offset: writes the wall-clock time counted as if it were
 * UTC, and the explicit offset in seconds east of UTC, or CHR_TIME_NOOFFSET
 * when the string has none. Same errors as chr_time_parse. */
#define CHR_TIME_NOOFFSET INT32_MIN
int chr_time_parse_wall(const char *s, size_t len, int64_t *wall_us,
                        int32_t *offset, char *err, size_t errlen);

#define CHR_TIME_BUFSZ 40
/* "2025-01-15T10:00:00Z", ".ffffff" only when µs != 0. Returns length. */
int chr_time_format(int64_t us, char *buf);
/* The same instant as wall time at a UTC offset: "2025-03-09T03:30:00-04:00". */
int chr_time_format_offset(int64_t us, int offset_seconds, char *buf);

/* Wall clock (CLOCK_REALTIME) and monotonic clock, both in µs. */
int64_t chr_time_now(void);
int64_t chr_time_mono(void);

#endif
