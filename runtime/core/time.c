/* time.c - instants, the civil calendar, ISO-8601 text and the clocks.
 *
 * Instants are int64 µs since the epoch. Everything that splits them into
 * days or seconds uses floor division, so instants before 1970 land on the
 * right calendar day instead of rounding towards zero. */
#include "time.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "tz.h"

#define SECS_PER_DAY 86400LL

static int64_t floordiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
  return q;
}

/* Computed from the remainder, not as a - floordiv(a, b) * b, which
 * overflows for a near INT64_MIN. */
static int64_t floormod(int64_t a, int64_t b) {
  int64_t r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}

int chr_is_leap(int y) {
  return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int chr_days_in_month(int y, int m) {
  static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (m < 1 || m > 12) return 0;
  return m == 2 && chr_is_leap(y) ? 29 : dim[m - 1];
}

/* Howard Hinnant's days_from_civil: exact for the whole proleptic Gregorian
 * calendar, no tables, no loops. Eras are 400-year cycles starting March 1
 * so the leap day is the last day of an era's year. */
int64_t chr_days_from_civil(int64_t y, int m, int d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  int64_t yoe = y - era * 400;
  int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

void chr_civil_from_days(int64_t days, int *y, int *m, int *d) {
  int64_t z = days + 719468;
  int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  int64_t doe = z - era * 146097;
  int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  int64_t mp = (5 * doy + 2) / 153;
  int mm = (int)(mp < 10 ? mp + 3 : mp - 9);
  *d = (int)(doy - (153 * mp + 2) / 5 + 1);
  *m = mm;
  *y = (int)(yoe + era * 400 + (mm <= 2));
}

int chr_weekday(int64_t days) {
  /* 1970-01-01 was a Thursday (3 when Monday is 0). */
  return (int)floormod(days + 3, 7);
}

int64_t chr_civil_to_us(const chr_civil_t *c) {
  int64_t days = chr_days_from_civil(c->year, c->month, c->day);
  int64_t secs = days * SECS_PER_DAY + c->hour * 3600LL + c->minute * 60LL +
                 c->second;
  return secs * CHR_USEC + c->usec;
}

static void secs_to_civil(int64_t secs, chr_civil_t *c) {
  int64_t days = floordiv(secs, SECS_PER_DAY);
  int sod = (int)(secs - days * SECS_PER_DAY);
  chr_civil_from_days(days, &c->year, &c->month, &c->day);
  c->hour = sod / 3600;
  c->minute = sod / 60 % 60;
  c->second = sod % 60;
}

void chr_us_to_civil(int64_t us, chr_civil_t *c) {
  int64_t secs = floordiv(us, CHR_USEC);
  secs_to_civil(secs, c);
  c->usec = (int)floormod(us, CHR_USEC);
}

/* Parsing. A cursor over the input, so each step can report what it
 * expected without juggling indexes. */
typedef struct {
  const char *s;
  size_t len, pos;
  char *err;
  size_t errlen;
} cursor_t;

/* Copies up to `max` bytes of s for quoting in a message: control bytes
 * become '?' and a cut is marked "...", so a hostile string cannot flood a
 * log line or a terminal. dst holds max + 4 bytes. */
static void quote(char *dst, const char *s, size_t len, size_t max) {
  size_t n = len < max ? len : max;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    dst[i] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
  }
  if (len > n) memcpy(dst + n, "...", 3), n += 3;
  dst[n] = '\0';
}

/* Writes "invalid time '<input>': <problem>". */
static int fail(cursor_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int fail(cursor_t *c, const char *fmt, ...) {
  char shown[64 + 4];
  va_list ap;
  int w;
  if (c->err == NULL || c->errlen == 0) return CHR_EINVAL;
  quote(shown, c->s, c->len, 64);
  w = snprintf(c->err, c->errlen, "invalid time '%s': ", shown);
  if (w >= 0 && (size_t)w < c->errlen) {
    va_start(ap, fmt);
    vsnprintf(c->err + w, c->errlen - (size_t)w, fmt, ap);
    va_end(ap);
  }
  return CHR_EINVAL;
}

static int at_end(const cursor_t *c) { return c->pos >= c->len; }

static int peek(const cursor_t *c) {
  return at_end(c) ? -1 : (unsigned char)c->s[c->pos];
}

static int is_digit(int ch) { return ch >= '0' && ch <= '9'; }

/* Reads exactly n digits; 0 on success, -1 (cursor unmoved) otherwise. */
static int digits(cursor_t *c, int n, int *out) {
  int v = 0, i;
  if (c->len - c->pos < (size_t)n) return -1;
  for (i = 0; i < n; i++) {
    if (!is_digit((unsigned char)c->s[c->pos + i])) return -1;
    v = v * 10 + (c->s[c->pos + i] - '0');
  }
  c->pos += (size_t)n;
  *out = v;
  return 0;
}

static int expect(cursor_t *c, char ch) {
  if (peek(c) != (unsigned char)ch) return -1;
  c->pos++;
  return 0;
}

/* A year of more than 4 digits or with a sign, as formatting writes for
 * instants past the range ("294247-01-10T..."): its length, else 0. */
static size_t long_year(const cursor_t *c) {
  size_t i = c->pos, n = 0;
  if (i < c->len && (c->s[i] == '-' || c->s[i] == '+')) i++;
  while (i + n < c->len && is_digit((unsigned char)c->s[i + n])) n++;
  if (n == 0 || (n <= 4 && i == c->pos) || i + n >= c->len || c->s[i + n] != '-') return 0;
  return i + n - c->pos;
}

static int parse_date(cursor_t *c, chr_civil_t *t) {
  size_t n = long_year(c);
  if (n > 0)
    return fail(c, "year %.*s is out of range 0001-9999", (int)(n < 24 ? n : 24),
                c->s + c->pos);
  if (digits(c, 4, &t->year) || expect(c, '-') || digits(c, 2, &t->month) ||
      expect(c, '-') || digits(c, 2, &t->day))
    return fail(c, "expected a date YYYY-MM-DD");
  if (t->year < 1)
    return fail(c, "year %04d is out of range 0001-9999", t->year);
  if (t->month < 1 || t->month > 12)
    return fail(c, "month %02d is out of range 01-12", t->month);
  if (t->day < 1 || t->day > chr_days_in_month(t->year, t->month))
    return fail(c, "day %02d is out of range for %04d-%02d", t->day, t->year,
                t->month);
  return 0;
}

static int parse_fraction(cursor_t *c, int *usec) {
  int n = 0, v = 0;
  c->pos++; /* '.' */
  while (is_digit(peek(c))) {
    if (++n > 6) return fail(c, "fraction has more than 6 digits");
    v = v * 10 + (c->s[c->pos++] - '0');
  }
  if (n == 0) return fail(c, "expected digits after '.'");
  while (n++ < 6) v *= 10;
  *usec = v;
  return 0;
}

static int parse_clock(cursor_t *c, chr_civil_t *t) {
  int sep = peek(c);
  if (sep == -1)
    return fail(c, "missing time (expected 'THH:MM:SS' after the date)");
  if (sep != 'T' && sep != 't' && sep != ' ')
    return fail(c, "expected 'T' or ' ' between date and time");
  c->pos++;
  if (digits(c, 2, &t->hour) || expect(c, ':') || digits(c, 2, &t->minute))
    return fail(c, "expected a time HH:MM:SS");
  if (peek(c) != ':') return fail(c, "missing seconds (expected HH:MM:SS)");
  c->pos++;
  if (digits(c, 2, &t->second)) return fail(c, "expected a time HH:MM:SS");
  if (t->hour > 23) return fail(c, "hour %02d is out of range 00-23", t->hour);
  if (t->minute > 59)
    return fail(c, "minute %02d is out of range 00-59", t->minute);
  if (t->second > 59)
    return fail(c, "second %02d is out of range 00-59", t->second);
  t->usec = 0;
  if (peek(c) == '.') return parse_fraction(c, &t->usec);
  return 0;
}

/* [Z|±HH:MM] or nothing; *offset is CHR_TIME_NOOFFSET for nothing. */
static int parse_offset(cursor_t *c, int32_t *offset) {
  int ch = peek(c), hh, mm;
  *offset = CHR_TIME_NOOFFSET;
  if (ch == 'Z' || ch == 'z') {
    c->pos++;
    *offset = 0;
  } else if (ch == '+' || ch == '-') {
    c->pos++;
    if (digits(c, 2, &hh) || expect(c, ':') || digits(c, 2, &mm))
      return fail(c, "expected an offset Z or +HH:MM");
    if (hh > 23 || mm > 59)
      return fail(c, "offset %c%02d:%02d is out of range -23:59..+23:59", ch,
                  hh, mm);
    *offset = (ch == '-' ? -1 : 1) * (hh * 3600 + mm * 60);
  }
  if (!at_end(c)) {
    char rest[16 + 4];
    quote(rest, c->s + c->pos, c->len - c->pos, 16);
    return fail(c, "unexpected characters '%s' after the time", rest);
  }
  return 0;
}

int chr_time_parse_wall(const char *s, size_t len, int64_t *wall_us,
                        int32_t *offset, char *err, size_t errlen) {
  cursor_t c = {s, len, 0, err, errlen};
  chr_civil_t t = {0};
  int rc;
  if (len == 0) return fail(&c, "empty string");
  if ((rc = parse_date(&c, &t)) || (rc = parse_clock(&c, &t)) ||
      (rc = parse_offset(&c, offset)))
    return rc;
  *wall_us = chr_civil_to_us(&t);
  return 0;
}

int chr_time_parse(const char *s, size_t len, const struct chr_tz *naive,
                   int64_t *out, char *err, size_t errlen) {
  int64_t wall = 0;
  int32_t offset = CHR_TIME_NOOFFSET;
  int64_t us;
  int rc = chr_time_parse_wall(s, len, &wall, &offset, err, errlen);
  if (rc) return rc;
  if (offset != CHR_TIME_NOOFFSET)
    us = wall - (int64_t)offset * CHR_USEC;
  else
    us = naive ? chr_tz_to_utc(naive, wall) : wall;
  /* An offset (or a zone) can carry a time at either end of the years
   * past them, where it would print as a year that reads back as none. */
  if (us < CHR_TIME_MIN || us > CHR_TIME_MAX) {
    cursor_t c = {s, len, 0, err, errlen};
    return fail(&c, "out of range once in UTC (times are " CHR_TIME_RANGE ")");
  }
  *out = us;
  return 0;
}

/* Formatting works on whole seconds plus µs, so adding an offset cannot
 * overflow even at the ends of the int64 range. Years outside 0001..9999
 * still print (with more digits or a sign): any instant has a readable form,
 * even if it cannot be read back. */
static char *put2(char *p, int v) {
  p[0] = (char)('0' + v / 10);
  p[1] = (char)('0' + v % 10);
  return p + 2;
}

/* Writes digits by hand: formatting times is on the engine's hot path
 * (every run and every job handed to Lua), where snprintf cost more than
 * the rest of the work. Years are 0001..9999 (parse refuses others). */
static int format_civil(int64_t secs, int usec, char *buf, size_t cap) {
  chr_civil_t t;
  (void)cap; /* CHR_TIME_BUFSZ always fits the longest form */
  secs_to_civil(secs, &t);
  char *p = buf;
  if (t.year < 0 || t.year > 9999) {
    p += sprintf(p, "%04d", t.year);
  } else {
    p = put2(p, t.year / 100);
    p = put2(p, t.year % 100);
  }
  *p++ = '-';
  p = put2(p, t.month);
  *p++ = '-';
  p = put2(p, t.day);
  *p++ = 'T';
  p = put2(p, t.hour);
  *p++ = ':';
  p = put2(p, t.minute);
  *p++ = ':';
  p = put2(p, t.second);
  if (usec != 0) {
    *p++ = '.';
    p = put2(p, usec / 10000);
    p = put2(p, usec / 100 % 100);
    p = put2(p, usec % 100);
  }
  *p = '\0';
  return (int)(p - buf);
}

int chr_time_format(int64_t us, char *buf) {
  /* floormod, not us - secs * CHR_USEC: that product overflows for the
   * earliest instants (INT64_MIN). */
  int n = format_civil(floordiv(us, CHR_USEC), (int)floormod(us, CHR_USEC), buf,
                       CHR_TIME_BUFSZ);
  buf[n++] = 'Z';
  buf[n] = '\0';
  return n;
}

/* The offset prints as ±HH:MM, and as ±HH:MM:SS for the odd historical
 * offset with seconds (local mean time before 1900), like Python's
 * isoformat(), rather than silently rounding it. */
int chr_time_format_offset(int64_t us, int offset_seconds, char *buf) {
  int64_t secs = floordiv(us, CHR_USEC);
  int a = offset_seconds < 0 ? -offset_seconds : offset_seconds;
  char sign = offset_seconds < 0 ? '-' : '+';
  int n = format_civil(secs + offset_seconds, (int)floormod(us, CHR_USEC),
                       buf, CHR_TIME_BUFSZ);
  size_t rest = CHR_TIME_BUFSZ - (size_t)n;
  if (a % 60)
    return n + snprintf(buf + n, rest, "%c%02d:%02d:%02d", sign, a / 3600,
                        a / 60 % 60, a % 60);
  return n + snprintf(buf + n, rest, "%c%02d:%02d", sign, a / 3600,
                      a / 60 % 60);
}

/* The clocks come from libuv rather than <time.h>, so this unit builds
 * however an embedder spells include paths: with -Iruntime (not -iquote),
 * <time.h> would name this unit's own header. */
int64_t chr_time_now(void) {
  uv_timeval64_t tv;
  if (uv_gettimeofday(&tv) != 0) return 0;
  return tv.tv_sec * CHR_USEC + tv.tv_usec;
}

int64_t chr_time_mono(void) { return (int64_t)(uv_hrtime() / 1000); }
