/* cron.c - cron expressions: parsing into per-field bitmasks, and the next
 * fire time.
 *
 * The search runs on wall-clock seconds ("walls": local time counted as if
 * it were UTC) and moves field by field with bit scans, so a far match costs
 * a few steps, never a step per minute. Walls become instants through the
 * zone's stretches of constant UTC offset (see next_instant), which is where
 * the DST rules of docs/time.md live. Nothing here allocates after parsing. */
#include "cron.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common.h"
#include "time.h"

const char *const chr_cron_field_names[CHR_CRON_NFIELDS] = {
    "year", "month", "day", "week", "day_of_week", "hour", "minute", "second"};

static const int field_min[CHR_CRON_NFIELDS] = {1970, 1, 1, 1, 0, 0, 0, 0};
static const int field_max[CHR_CRON_NFIELDS] = {9999, 12, 31, 53, 6, 23, 59, 59};

#define YEAR_MIN 1970
#define YEAR_MAX 9999
#define YEAR_WORDS ((YEAR_MAX - YEAR_MIN + 1 + 63) / 64)
#define NTH_LAST 6 /* bit of chr_cron.nth[] for "last <weekday>" */
/* Year types: weekday of Jan 1 (7) x leap (2) x previous year leap (2). The
 * last part only matters to ISO weeks (does the year open in week 52 or
 * 53?), so specs without a week field use types 0..13 only. */
#define YEAR_TYPES 28
#define SECS_PER_DAY 86400LL
#define NONE CHR_TIME_NONE
/* Bound on |UTC offset| (RFC 8536 allows less than 26 h), hence on how far
 * a wall time and its instant can be apart, and on a gap or fold's length. */
#define MAXOFF (26 * 3600LL)
#define LOOKBACK (2 * MAXOFF)

struct chr_cron {
  uint64_t second, minute; /* bit n: value n */
  uint32_t hour;
  uint32_t dom;            /* bits 1..31: plain day numbers */
  uint64_t week;           /* bits 1..53, ISO weeks */
  uint16_t month;          /* bits 1..12 */
  uint8_t dow;             /* bits 0..6, 0 = Monday */
  uint8_t nth[7];          /* per weekday: bit n = "nth", NTH_LAST = "last" */
  uint64_t dow_pattern;    /* bit k set when weekday k % 7 is in dow */
  unsigned last_day : 1;   /* "last" in the day field */
  unsigned nth_any : 1;
  unsigned day_any : 1;    /* the day field matches every day */
  unsigned dow_any : 1;
  unsigned week_any : 1;
  unsigned year_any : 1;
  unsigned dom_or_dow : 1; /* crontab: both restricted, either may match */
  unsigned hour_star : 1;  /* hour starts with '*': fires in both passes */
  unsigned never : 1;      /* no date can ever match */
  uint16_t month_ok[YEAR_TYPES]; /* months holding a matching day */
  uint64_t year[YEAR_WORDS];     /* bit y - YEAR_MIN */
};

/* Parsing. */

typedef struct {
  const char *field; /* name for messages */
  int min, max;
  int names;         /* 0 none, 1 months, 2 weekdays from mon, 3 from sun */
  int day_terms;     /* "last", "2nd fri", "last sun" */
  uint64_t *bits;    /* bit (v - base) */
  int base;
  chr_cron_t *c;
  char *err;
  size_t errlen;
} field_parse_t;

static const char *const month_names[12] = {"jan", "feb", "mar", "apr",
                                            "may", "jun", "jul", "aug",
                                            "sep", "oct", "nov", "dec"};
static const char *const wday_names[7] = {"mon", "tue", "wed", "thu",
                                          "fri", "sat", "sun"};
static const char *const cron_wday_names[7] = {"sun", "mon", "tue", "wed",
                                               "thu", "fri", "sat"};

#define ERR_PARSE -1
#define NOT_DAY_TERM 1

static int fail(field_parse_t *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int fail(field_parse_t *p, const char *fmt, ...) {
  char msg[160];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (p->err && p->errlen)
    snprintf(p->err, p->errlen, "invalid cron field '%s': %s", p->field, msg);
  return ERR_PARSE;
}

static int is_space(int ch) { return ch == ' ' || ch == '\t'; }

static int word_is(const char *s, size_t n, const char *w) {
  return strlen(w) == n && strncasecmp(s, w, n) == 0;
}

/* Index of s in a name table, or -1. */
static int name_index(const char *const *tab, int n, const char *s, size_t len) {
  for (int i = 0; i < n; i++)
    if (word_is(s, len, tab[i])) return i;
  return -1;
}

static int weekday_name(const char *s, size_t n) {
  return name_index(wday_names, 7, s, n);
}

/* One value: a number (a leading sign is read so that "-1" is reported as
 * out of range, not as gibberish) or a name of this field. `end_of_range`
 * lets "sun" close a crontab range as 7, so "fri-sun" means 5-7. */
static int parse_value(field_parse_t *p, const char **sp, const char *e,
                       const char *term, size_t tlen, int end_of_range,
                       int *out) {
  const char *s = *sp, *start = s;
  if (s < e && (isdigit((unsigned char)*s) ||
                ((*s == '-' || *s == '+') && s + 1 < e &&
                 isdigit((unsigned char)s[1])))) {
    long long v = 0;
    int neg = *s == '-';
    if (*s == '-' || *s == '+') s++;
    while (s < e && isdigit((unsigned char)*s)) {
      if (v < 1000000000) v = v * 10 + (*s - '0');
      s++;
    }
    if (neg) v = -v;
    if (v < p->min || v > p->max)
      return fail(p, "%.*s is out of range %d-%d", (int)(s - start), start,
                  p->min, p->max);
    *out = (int)v;
    *sp = s;
    return 0;
  }
  while (s < e && isalpha((unsigned char)*s)) s++;
  if (s > start && p->names) {
    int i = -1;
    if (p->names == 1) {
      i = name_index(month_names, 12, start, (size_t)(s - start));
      if (i >= 0) i += 1;
    } else if (p->names == 2) {
      i = name_index(wday_names, 7, start, (size_t)(s - start));
    } else {
      i = name_index(cron_wday_names, 7, start, (size_t)(s - start));
      if (i == 0 && end_of_range) i = 7;
    }
    if (i >= 0) {
      *out = i;
      *sp = s;
      return 0;
    }
  }
  return fail(p, "unknown value '%.*s'", (int)tlen, term);
}

/* Sets values lo, lo+step, ... hi. Plain ranges fill whole words: the year
 * field's '*' alone is 8030 values. */
static void set_range(field_parse_t *p, int lo, int hi, int step) {
  int b = lo - p->base, e = hi - p->base;
  if (step > 1) {
    for (; b <= e; b += step) p->bits[b / 64] |= (uint64_t)1 << (b % 64);
    return;
  }
  while (b <= e) {
    int n = 64 - b % 64 < e - b + 1 ? 64 - b % 64 : e - b + 1;
    uint64_t run = n == 64 ? ~(uint64_t)0 : ((uint64_t)1 << n) - 1;
    p->bits[b / 64] |= run << (b % 64);
    b += n;
  }
}

/* "1st".."5th" (also "6th" and up, to report them as out of range): the
 * ordinal, or 0 when the word is not an ordinal. */
static int ordinal(const char *s, size_t n) {
  size_t i = 0;
  int v = 0;
  while (i < n && isdigit((unsigned char)s[i]) && v < 1000)
    v = v * 10 + (s[i++] - '0');
  if (i == 0 || n - i != 2) return 0;
  return word_is(s + i, 2, "st") || word_is(s + i, 2, "nd") ||
                 word_is(s + i, 2, "rd") || word_is(s + i, 2, "th")
             ? v
             : 0;
}

/* The day field's own terms. Returns NOT_DAY_TERM for anything else, which
 * the generic term parser then reads (and rejects, if it is gibberish). */
static int parse_day_term(field_parse_t *p, const char *s, size_t n) {
  size_t w1 = 0, rest;
  int nth, wd;
  while (w1 < n && !is_space((unsigned char)s[w1])) w1++;
  if (w1 == n) {
    if (word_is(s, n, "last")) {
      p->c->last_day = 1;
      return 0;
    }
    if (ordinal(s, n))
      return fail(p, "'%.*s' needs a weekday after it, as in '%.*s fri'",
                  (int)n, s, (int)n, s);
    return NOT_DAY_TERM;
  }
  if (word_is(s, w1, "last")) {
    nth = NTH_LAST;
  } else if ((nth = ordinal(s, w1)) == 0) {
    return NOT_DAY_TERM;
  } else if (nth > 5) {
    return fail(p, "'%.*s': only 1st..5th or last may come before a weekday",
                (int)n, s);
  }
  rest = w1;
  while (rest < n && is_space((unsigned char)s[rest])) rest++;
  wd = weekday_name(s + rest, n - rest);
  if (wd < 0)
    return fail(p, "'%.*s': expected a weekday name (mon..sun) after '%.*s'",
                (int)n, s, (int)w1, s);
  p->c->nth[wd] |= (uint8_t)(1u << nth);
  p->c->nth_any = 1;
  return 0;
}

/* step after '/': a positive integer. */
static int parse_step(field_parse_t *p, const char **sp, const char *e,
                      const char *term, size_t tlen, int *step) {
  const char *s = *sp;
  long v = 0;
  if (s == e || !isdigit((unsigned char)*s))
    return fail(p, "step must be a positive integer in '%.*s'", (int)tlen,
                term);
  while (s < e && isdigit((unsigned char)*s)) {
    if (v < 1000000) v = v * 10 + (*s - '0');
    s++;
  }
  if (v == 0)
    return fail(p, "step must be a positive integer in '%.*s'", (int)tlen,
                term);
  *step = (int)v;
  *sp = s;
  return 0;
}

/* `*`, `*\/n`, `a`, `a-b`, `a-b/n`, `a/n` (a, a+n, ... up to the field's
 * maximum), or a day term. */
static int parse_term(field_parse_t *p, const char *s, size_t n) {
  const char *q = s, *e = s + n;
  int lo, hi, step = 1, r;
  if (p->day_terms && (r = parse_day_term(p, s, n)) != NOT_DAY_TERM) return r;
  if (*q == '*') {
    q++;
    lo = p->min;
    hi = p->max;
    if (q < e && *q == '/' && (++q, parse_step(p, &q, e, s, n, &step)))
      return ERR_PARSE;
  } else {
    if (parse_value(p, &q, e, s, n, 0, &lo)) return ERR_PARSE;
    hi = lo;
    if (q < e && *q == '-') {
      int named = ++q < e && isalpha((unsigned char)*q);
      if (parse_value(p, &q, e, s, n, 1, &hi)) return ERR_PARSE;
      if (named && lo == 0 && hi == 7) hi = 0; /* "sun-sun" */
      if (lo > hi)
        return fail(p, "range %.*s is reversed", (int)(q - s), s);
      if (q < e && *q == '/' && (++q, parse_step(p, &q, e, s, n, &step)))
        return ERR_PARSE;
    } else if (q < e && *q == '/') {
      q++;
      if (parse_step(p, &q, e, s, n, &step)) return ERR_PARSE;
      hi = p->max;
    }
  }
  if (q != e) return fail(p, "unknown value '%.*s'", (int)n, s);
  set_range(p, lo, hi, step);
  return 0;
}

/* A comma list of terms; blanks around terms are allowed. */
static int parse_expr(field_parse_t *p, const char *expr) {
  const char *s = expr;
  size_t len = strlen(expr);
  while (len && is_space((unsigned char)*s)) s++, len--;
  while (len && is_space((unsigned char)s[len - 1])) len--;
  if (len == 0) return fail(p, "empty expression");
  for (const char *e = s + len;;) {
    const char *comma = memchr(s, ',', (size_t)(e - s));
    const char *te = comma ? comma : e, *ts = s;
    while (ts < te && is_space((unsigned char)*ts)) ts++;
    while (te > ts && is_space((unsigned char)te[-1])) te--;
    if (ts == te)
      return fail(p, "empty item in '%.*s'", (int)len, e - len);
    if (parse_term(p, ts, (size_t)(te - ts))) return ERR_PARSE;
    if (!comma) return 0;
    s = comma + 1;
  }
}

/* Compilation. */

static uint32_t month_days_all(int dim) {
  return (uint32_t)((((uint64_t)1 << dim) - 1) << 1);
}

/* Days of a month matched by the day field alone, given the weekday of
 * its 1st (0 = Monday) and its length. */
static uint32_t dom_mask(const chr_cron_t *c, int wd1, int dim) {
  uint32_t all = month_days_all(dim), r;
  if (c->day_any) return all;
  r = c->dom & all;
  if (c->last_day) r |= 1u << dim;
  if (c->nth_any)
    for (int w = 0; w < 7; w++) {
      int first;
      if (!c->nth[w]) continue;
      first = 1 + (w - wd1 + 7) % 7;
      for (int k = 1; k <= 5; k++)
        if ((c->nth[w] >> k & 1) && first + 7 * (k - 1) <= dim)
          r |= 1u << (first + 7 * (k - 1));
      if (c->nth[w] >> NTH_LAST & 1) r |= 1u << (first + 7 * ((dim - first) / 7));
    }
  return r;
}

static int iso_weeks_in_year(int y) {
  int jan1 = chr_weekday(chr_days_from_civil(y, 1, 1));
  return jan1 == 3 || (jan1 == 2 && chr_is_leap(y)) ? 53 : 52;
}

/* ISO week of the day with ordinal doy (1-based) and weekday wd in year y. */
static int iso_week(int y, int doy, int wd) {
  int w = (doy - wd + 9) / 7;
  if (w < 1) return iso_weeks_in_year(y - 1);
  if (w == 53 && iso_weeks_in_year(y) == 52) return 1;
  return w;
}

/* Days of a month of year y in the week field: one ISO week per Monday-started
 * run of days, so at most six lookups. */
static uint32_t week_mask(const chr_cron_t *c, int y, int64_t d1, int wd1,
                          int dim) {
  int doy1 = (int)(d1 - chr_days_from_civil(y, 1, 1)) + 1;
  uint32_t r = 0;
  for (int d = 1; d <= dim;) {
    int wd = (wd1 + d - 1) % 7, end = d + 6 - wd;
    if (end > dim) end = dim;
    if (c->week >> iso_week(y, doy1 + d - 1, wd) & 1)
      r |= (uint32_t)((((uint64_t)1 << (end - d + 1)) - 1) << d);
    d = end + 1;
  }
  return r;
}

/* Days of a month matched by day and day_of_week, given the weekday of
 * its 1st and its length. */
static uint32_t dom_dow_mask(const chr_cron_t *c, int wd1, int dim) {
  uint32_t all = month_days_all(dim);
  uint32_t dom = dom_mask(c, wd1, dim);
  uint32_t dow = c->dow_any ? all : (uint32_t)((c->dow_pattern >> wd1) << 1) & all;
  return c->dom_or_dow ? dom | dow : dom & dow;
}

/* Days of a month of year y that match every day-level field. d1 is the
 * day count of the 1st. */
static uint32_t day_mask(const chr_cron_t *c, int y, int64_t d1, int dim) {
  int wd1 = chr_weekday(d1);
  uint32_t r = dom_dow_mask(c, wd1, dim);
  if (!c->week_any && r) r &= week_mask(c, y, d1, wd1, dim);
  return r;
}

static int year_type(const chr_cron_t *c, int y) {
  int t = chr_weekday(chr_days_from_civil(y, 1, 1)) + 7 * chr_is_leap(y);
  if (!c->week_any) t += 14 * chr_is_leap(y - 1);
  return t;
}

/* A year of each type, found once: the calendar repeats every 400 years. */
static const int *year_type_samples(void) {
  static int sample[YEAR_TYPES];
  static int done;
  if (!done) {
    for (int y = 2001; y <= 2400; y++) {
      int t = chr_weekday(chr_days_from_civil(y, 1, 1)) + 7 * chr_is_leap(y) +
              14 * chr_is_leap(y - 1);
      if (!sample[t]) sample[t] = y;
    }
    done = 1;
  }
  return sample;
}

/* Which months of each year type hold a matching day. With it the search
 * never scans a month or a year in vain, and a spec that can never match
 * ({day = 30, month = 2}, {week = 1, month = 6}) is known as such up front.
 * Without a week field a month's days depend only on the weekday of its 1st
 * and its length, which the year type gives; ISO weeks need a real year of
 * the type. */
static void compile_month_ok(chr_cron_t *c) {
  static const int cum[12] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
  static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const int *sample;
  uint16_t any = 0;
  if (c->day_any && c->dow_any && c->week_any) {
    for (int t = 0; t < YEAR_TYPES; t++) c->month_ok[t] = c->month;
    return;
  }
  if (c->week_any) {
    /* has[wd1][len - 28]: a month whose 1st is weekday wd1 holds a match */
    uint8_t has[7][4];
    for (int w = 0; w < 7; w++)
      for (int n = 28; n <= 31; n++) has[w][n - 28] = dom_dow_mask(c, w, n) != 0;
    for (int t = 0; t < 14; t++) {
      int jan1 = t % 7, leap = t / 7;
      c->month_ok[t] = 0;
      for (uint32_t ms = c->month; ms; ms &= ms - 1) {
        int m = __builtin_ctz(ms);
        int wd1 = (jan1 + cum[m - 1] + (leap && m > 2)) % 7;
        if (has[wd1][dim[m - 1] + (leap && m == 2) - 28])
          c->month_ok[t] |= (uint16_t)(1u << m);
      }
      any |= c->month_ok[t];
    }
    c->never = any == 0;
    return;
  }
  sample = year_type_samples();
  for (int t = 0; t < YEAR_TYPES; t++) {
    int y = sample[t];
    c->month_ok[t] = 0;
    if (!y) continue;
    for (int m = 1; m <= 12; m++) {
      if (!(c->month >> m & 1)) continue;
      if (day_mask(c, y, chr_days_from_civil(y, m, 1), chr_days_in_month(y, m)))
        c->month_ok[t] |= (uint16_t)(1u << m);
    }
    any |= c->month_ok[t];
  }
  c->never = any == 0;
}

enum { MODE_FIELDS, MODE_CRONTAB };

/* Whether some year of the year field has a type with a matching month:
 * {year = "2033-2040", month = 2, day = 29, day_of_week = "sun"} has
 * none. One lookup per year given, stopping at the first that fits. */
static int years_can_match(const chr_cron_t *c) {
  for (int w = 0; w < YEAR_WORDS; w++)
    for (uint64_t b = c->year[w]; b; b &= b - 1) {
      int y = YEAR_MIN + w * 64 + __builtin_ctzll(b);
      if (c->month_ok[year_type(c, y)]) return 1;
    }
  return 0;
}

/* The message for a spec no date can match, naming the date fields it
 * restricts: "day '30' and month '2' never match a date". */
static void never_error(const chr_cron_t *c, const char *const expr[CHR_CRON_NFIELDS],
                        const char *crontab, char *err, size_t errlen) {
  static const int order[] = {CHR_CRON_DAY, CHR_CRON_DAY_OF_WEEK, CHR_CRON_WEEK,
                              CHR_CRON_MONTH, CHR_CRON_YEAR};
  int restricted[5], n = 0;
  char list[200] = "";
  size_t len = 0;
  if (err == NULL || errlen == 0) return;
  for (int i = 0; i < 5; i++) {
    int f = order[i], any = 0;
    switch (f) {
    case CHR_CRON_DAY: any = c->day_any; break;
    case CHR_CRON_DAY_OF_WEEK: any = c->dow_any; break;
    case CHR_CRON_WEEK: any = c->week_any; break;
    case CHR_CRON_MONTH: any = c->month == 0x1ffe; break;
    case CHR_CRON_YEAR: any = c->year_any; break;
    }
    if (!any) restricted[n++] = f;
  }
  for (int i = 0; i < n && len < sizeof list; i++) {
    const char *e = expr[restricted[i]];
    while (is_space((unsigned char)*e)) e++;
    len += (size_t)snprintf(list + len, sizeof list - len, "%s%s '%.40s'",
                            i == 0 ? "" : i == n - 1 ? " and " : ", ",
                            chr_cron_field_names[restricted[i]], e);
  }
  if (crontab)
    snprintf(err, errlen, "invalid cron expression '%.64s': %s never match a date", crontab, list);
  else
    snprintf(err, errlen, "invalid cron spec: %s never match a date", list);
}

static int starts_with_star(const char *s) {
  while (is_space((unsigned char)*s)) s++;
  return *s == '*';
}

/* Builds a spec from one expression per field (all present); crontab is
 * the string they came from, for messages. A spec that no date can ever
 * match is refused, naming its date fields. */
static chr_cron_t *compile(const char *const expr[CHR_CRON_NFIELDS], int mode,
                           const char *crontab, char *err, size_t errlen) {
  chr_cron_t *c = chr_calloc(1, sizeof *c);
  for (int i = 0; i < CHR_CRON_NFIELDS; i++) {
    uint64_t one = 0;
    field_parse_t p = {chr_cron_field_names[i], field_min[i], field_max[i], 0,
                       i == CHR_CRON_DAY, &one, 0, c, err, errlen};
    if (i == CHR_CRON_YEAR) {
      /* The common case, without filling 8030 bits. */
      if (strcmp(expr[i], "*") == 0) {
        c->year_any = 1;
        continue;
      }
      p.bits = c->year;
      p.base = YEAR_MIN;
    }
    if (i == CHR_CRON_MONTH) p.names = 1;
    if (i == CHR_CRON_DAY_OF_WEEK) {
      p.names = mode == MODE_CRONTAB ? 3 : 2;
      if (mode == MODE_CRONTAB) p.max = 7;
    }
    if (parse_expr(&p, expr[i])) {
      free(c);
      return NULL;
    }
    switch (i) {
    case CHR_CRON_MONTH: c->month = (uint16_t)one; break;
    case CHR_CRON_DAY: c->dom = (uint32_t)one; break;
    case CHR_CRON_WEEK: c->week = one; break;
    case CHR_CRON_DAY_OF_WEEK:
      if (mode == MODE_CRONTAB) /* 0 and 7 = Sunday, 1 = Monday */
        one = (one >> 1 & 0x3f) | ((one & 1) | (one >> 7 & 1)) << 6;
      c->dow = (uint8_t)one;
      break;
    case CHR_CRON_HOUR: c->hour = (uint32_t)one; break;
    case CHR_CRON_MINUTE: c->minute = one; break;
    case CHR_CRON_SECOND: c->second = one; break;
    }
  }
  c->hour_star = starts_with_star(expr[CHR_CRON_HOUR]) != 0;
  c->day_any = c->dom == 0xfffffffeu && !c->last_day && !c->nth_any;
  c->dow_any = c->dow == 0x7f;
  c->week_any = c->week == (((uint64_t)1 << 54) - 2);
  if (!c->year_any) {
    c->year_any = 1;
    for (int i = 0; i < YEAR_WORDS; i++) {
      int bits = i < YEAR_WORDS - 1 ? 64 : (YEAR_MAX - YEAR_MIN + 1) % 64;
      uint64_t full = bits == 64 ? ~(uint64_t)0 : ((uint64_t)1 << bits) - 1;
      if (c->year[i] != full) c->year_any = 0;
    }
  }
  for (int k = 0; k < 64; k += 7) c->dow_pattern |= (uint64_t)c->dow << k;
  /* Vixie cron: a day field starting with '*' counts as unrestricted, and
   * only when both are restricted does either one match. */
  c->dom_or_dow = mode == MODE_CRONTAB && !starts_with_star(expr[CHR_CRON_DAY]) &&
                  !starts_with_star(expr[CHR_CRON_DAY_OF_WEEK]);
  compile_month_ok(c);
  if (!c->never && !c->year_any) c->never = !years_can_match(c);
  if (c->never) {
    never_error(c, expr, crontab, err, errlen);
    free(c);
    return NULL;
  }
  return c;
}

/* Defaults follow APScheduler's CronTrigger: a field more significant than
 * the least significant given one is '*', a less significant one its
 * minimum; week and day_of_week count as given when given but default to
 * '*' themselves. So {hour = 9} is 09:00:00 daily, {minute = 30} is :30:00
 * every hour, {day_of_week = "mon"} is Mondays at midnight. An empty spec is
 * refused rather than read as "every second". */
chr_cron_t *chr_cron_parse_fields(const char *const fields[CHR_CRON_NFIELDS],
                                  char *err, size_t errlen) {
  static const char *const minimum[CHR_CRON_NFIELDS] = {"*", "1", "1", "*",
                                                        "*", "0", "0", "0"};
  const char *expr[CHR_CRON_NFIELDS];
  int least = -1;
  for (int i = 0; i < CHR_CRON_NFIELDS; i++)
    if (fields[i]) least = i;
  if (least < 0) {
    if (err && errlen) snprintf(err, errlen, "invalid cron spec: no fields given");
    return NULL;
  }
  for (int i = 0; i < CHR_CRON_NFIELDS; i++)
    expr[i] = fields[i] ? fields[i] : i > least ? minimum[i] : "*";
  return compile(expr, MODE_FIELDS, NULL, err, errlen);
}

static const struct {
  const char *name, *expr;
} macros[] = {
    {"@yearly", "0 0 1 1 *"},  {"@annually", "0 0 1 1 *"},
    {"@monthly", "0 0 1 * *"}, {"@weekly", "0 0 * * 0"},
    {"@daily", "0 0 * * *"},   {"@midnight", "0 0 * * *"},
    {"@hourly", "0 * * * *"},
};

static void expr_error(const char *s, const char *what, char *err, size_t errlen) {
  if (err && errlen) snprintf(err, errlen, "invalid cron expression '%.64s': %s", s, what);
}

chr_cron_t *chr_cron_parse_crontab(const char *s, char *err, size_t errlen) {
  enum { MAXF = 8, MAXLEN = 256 };
  char buf[MAXLEN];
  const char *expr[CHR_CRON_NFIELDS], *part[MAXF];
  const char *src = s;
  size_t len;
  int n = 0;
  while (is_space((unsigned char)*src)) src++;
  len = strlen(src);
  while (len && is_space((unsigned char)src[len - 1])) len--;
  if (len && src[0] == '@') {
    for (size_t i = 0; i < sizeof macros / sizeof macros[0]; i++)
      if (word_is(src, len, macros[i].name))
        return chr_cron_parse_crontab(macros[i].expr, err, errlen);
    expr_error(s, "unknown macro", err, errlen);
    return NULL;
  }
  if (len >= MAXLEN) {
    expr_error(s, "too long", err, errlen);
    return NULL;
  }
  memcpy(buf, src, len);
  buf[len] = '\0';
  for (char *q = buf; *q;) {
    while (is_space((unsigned char)*q)) *q++ = '\0';
    if (!*q) break;
    if (n < MAXF) part[n] = q;
    n++;
    while (*q && !is_space((unsigned char)*q)) q++;
  }
  if (n != 5 && n != 6) {
    char what[64];
    snprintf(what, sizeof what, "expected 5 or 6 fields, got %d", n);
    expr_error(s, what, err, errlen);
    return NULL;
  }
  expr[CHR_CRON_YEAR] = "*";
  expr[CHR_CRON_WEEK] = "*";
  expr[CHR_CRON_SECOND] = n == 6 ? part[0] : "0";
  expr[CHR_CRON_MINUTE] = part[n - 5];
  expr[CHR_CRON_HOUR] = part[n - 4];
  expr[CHR_CRON_DAY] = part[n - 3];
  expr[CHR_CRON_MONTH] = part[n - 2];
  expr[CHR_CRON_DAY_OF_WEEK] = part[n - 1];
  return compile(expr, MODE_CRONTAB, s, err, errlen);
}

void chr_cron_free(chr_cron_t *c) { free(c); }

int chr_cron_hour_star(const chr_cron_t *c) { return c->hour_star; }

/* Search on walls. */

static int64_t floordiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
  return q;
}

static int year_has(const chr_cron_t *c, int y) {
  int b = y - YEAR_MIN;
  return c->year_any || (c->year[b / 64] >> (b % 64) & 1);
}

/* The first year >= y in the year field, or -1. */
static int next_year(const chr_cron_t *c, int y) {
  int b = y - YEAR_MIN;
  if (y > YEAR_MAX) return -1;
  if (c->year_any) return y;
  for (int w = b / 64; w < YEAR_WORDS; w++) {
    uint64_t bits = c->year[w];
    if (w == b / 64) bits &= ~(uint64_t)0 << (b % 64);
    if (bits) return YEAR_MIN + w * 64 + __builtin_ctzll(bits);
  }
  return -1;
}

/* The first matching wall at or after `lo` (seconds), or NONE. Each pass of
 * the loop either returns or moves one field to its next candidate and
 * resets the less significant ones; month_ok bounds the passes that find
 * nothing to two per year, and years without a matching month are skipped
 * a whole year at a time. */
static int64_t next_wall(const chr_cron_t *c, int64_t lo) {
  int64_t days = floordiv(lo, SECS_PER_DAY), d1;
  int sod = (int)(lo - days * SECS_PER_DAY);
  int y, m, d, h = sod / 3600, mi = sod / 60 % 60, s = sod % 60, dim;
  uint32_t bits;
  uint64_t bits64;
  chr_civil_from_days(days, &y, &m, &d);
  if (y < YEAR_MIN) {
    y = YEAR_MIN;
    m = d = 1;
    h = mi = s = 0;
  }
  for (;;) {
    if (y > YEAR_MAX) return NONE;
    if (!year_has(c, y)) {
      if ((y = next_year(c, y)) < 0) return NONE;
      m = d = 1;
      h = mi = s = 0;
    }
    bits = c->month & c->month_ok[year_type(c, y)] & ~((1u << m) - 1);
    if (!bits) goto next_year;
    if (__builtin_ctz(bits) != m) {
      m = __builtin_ctz(bits);
      d = 1;
      h = mi = s = 0;
    }
    d1 = chr_days_from_civil(y, m, 1);
    dim = chr_days_in_month(y, m);
    bits = day_mask(c, y, d1, dim) & ~((1u << d) - 1);
    if (!bits) goto next_month;
    if (__builtin_ctz(bits) != d) {
      d = __builtin_ctz(bits);
      h = mi = s = 0;
    }
    bits = c->hour & ~((1u << h) - 1);
    if (!bits) goto next_day;
    if (__builtin_ctz(bits) != h) {
      h = __builtin_ctz(bits);
      mi = s = 0;
    }
    bits64 = c->minute & (~(uint64_t)0 << mi);
    if (!bits64) goto next_hour;
    if (__builtin_ctzll(bits64) != mi) {
      mi = __builtin_ctzll(bits64);
      s = 0;
    }
    bits64 = c->second & (~(uint64_t)0 << s);
    if (!bits64) goto next_minute;
    s = __builtin_ctzll(bits64);
    return (d1 + d - 1) * SECS_PER_DAY + h * 3600 + mi * 60 + s;

    /* Carries: each label moves its unit on and clears the smaller ones. */
  next_minute:
    s = 0;
    if (++mi < 60) continue;
  next_hour:
    mi = s = 0;
    if (++h < 24) continue;
  next_day:
    h = mi = s = 0;
    if (++d <= dim) continue;
  next_month:
    d = 1;
    h = mi = s = 0;
    if (++m <= 12) continue;
  next_year:
    m = d = 1;
    h = mi = s = 0;
    y++;
  }
}

/* Walls to instants. */

static int64_t tz_next(const chr_tz_t *z, int64_t t) {
  int64_t r = chr_tz_next_transition(z, t * CHR_USEC);
  return r == NONE ? NONE : floordiv(r, CHR_USEC);
}

static int32_t tz_off(const chr_tz_t *z, int64_t t) {
  return chr_tz_offset(z, t * CHR_USEC);
}

/* The first wall of the stretch that begins with a change from offset
 * `before` to `after` at instant t. After a fall-back the repeated walls
 * belong to the new stretch only when the hour field starts with '*'; a
 * fixed hour keeps its first pass alone. */
static int64_t stretch_start(const chr_cron_t *c, int64_t t, int32_t before,
                             int32_t after) {
  if (after < before && !c->hour_star) return t + before;
  return t + after;
}

/* The zone's time line is a run of stretches of constant offset o, each
 * [t0, t1) holding the walls [t0 + o, t1 + o) at instants wall - o. Two
 * amendments give DST its rules: a stretch followed by a spring-forward
 * keeps its offset through the gap, so a wall in the gap fires shifted
 * forward by the gap's length (02:30 -> 03:30 new time); a stretch after a
 * fall-back starts after the repeated walls unless the hour field starts
 * with '*' (stretch_start). The answer is the smallest instant > a over all
 * stretches; within one stretch instants grow with walls, so each stretch
 * costs one next_wall. Walking stops once the best candidate lies before the
 * next stretch (a shifted gap wall may be beaten by a real wall after the
 * gap), and jumps ahead when the next match is far, since all instants of a
 * wall lie within MAXOFF of it. All in seconds: fires are whole seconds. */
static int64_t next_instant(const chr_cron_t *c, const chr_tz_t *z, int64_t a) {
  int64_t tp, tn, start, best, lo, hi, w, wlo;
  int32_t o, on;
restart:
  tp = NONE;
  start = INT64_MIN;
  best = NONE;
  w = NONE;
  wlo = INT64_MAX;
  tn = tz_next(z, a - LOOKBACK);
  while (tn != NONE && tn <= a) {
    tp = tn;
    tn = tz_next(z, tn);
  }
  o = tz_off(z, a);
  if (tp != NONE) {
    int32_t op = tz_off(z, tp - 1);
    start = stretch_start(c, tp, op, o);
    /* `a` may sit where the previous stretch's gap walls still fire. */
    if (op < o) {
      int64_t gw = next_wall(c, a + op + 1 > tp + op ? a + op + 1 : tp + op);
      if (gw != NONE && gw < tp + o) best = gw - op;
    }
  }
  for (;;) {
    on = tn == NONE ? o : tz_off(z, tn);
    hi = tn == NONE ? INT64_MAX : tn + (on > o ? on : o);
    lo = a + o + 1 > start ? a + o + 1 : start;
    if (lo < wlo || (w != NONE && w < lo)) {
      w = next_wall(c, lo);
      wlo = lo;
    }
    if (w != NONE && w < hi && (best == NONE || w - o < best)) best = w - o;
    if (tn == NONE || (best != NONE && best < tn)) return best;
    /* Past the reach of folds, walls >= wlo are all that can still fire. */
    if (best == NONE && wlo <= tn - MAXOFF) {
      if (w == NONE) return NONE;
      if (w - MAXOFF - 1 > tn + LOOKBACK) {
        a = w - MAXOFF - 1;
        goto restart;
      }
    }
    start = stretch_start(c, tn, o, on);
    o = on;
    tn = tz_next(z, tn);
  }
}

int64_t chr_cron_next(const chr_cron_t *c, int64_t after, const chr_tz_t *z) {
  /* Fires lie in 1970..9999; clamping keeps the arithmetic far from
   * overflow for any `after`. */
  static const int64_t a_min = -4000000000LL;
  /* 9999-12-31T23:59:59Z: a wall late on the last day in a zone west of
   * UTC would fall in the year 10000, which ISO strings cannot carry. */
  static const int64_t last = 253402300799LL;
  int64_t a, r;
  if (c->never || after == NONE) return NONE;
  a = floordiv(after, CHR_USEC);
  if (a >= last) return NONE;
  if (a < a_min) a = a_min;
  if (z == NULL || z == chr_tz_utc())
    r = next_wall(c, a + 1);
  else
    r = next_instant(c, z, a);
  return r == NONE || r > last ? NONE : r * CHR_USEC;
}
