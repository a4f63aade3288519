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
  /* What the search reads, first and together. */
  uint64_t second, minute; /* bit n: value n */
  uint32_t hour;
  uint32_t dom;            /* bits 1..31: plain day numbers */
  uint64_t week;           /* bits 1..53, ISO weeks */
  uint16_t month;          /* bits 1..12 */
  uint8_t dow;             /* bits 0..6, 0 = Monday */
  uint8_t nth[7];          /* per weekday: bit n = "nth", NTH_LAST = "last" */
  uint64_t dow_pattern;    /* bit k set when weekday k % 7 is in dow */
  unsigned nth_any : 1;
  unsigned dom_extra : 1;  /* any of nth, last_off, near_wd, last_wd */
  unsigned dnth_any : 1;
  unsigned special : 1;    /* any of reboot, every, tz */
  unsigned day_any : 1;    /* the day field matches every day */
  unsigned dow_any : 1;
  unsigned week_any : 1;
  unsigned year_any : 1;
  unsigned dom_or_dow : 1; /* crontab: both restricted, either may match */
  unsigned hour_star : 1;  /* hour starts with '*': fires in both passes */
  unsigned never : 1;      /* no date can ever match */
  unsigned last_wd : 1;    /* "LW": the last weekday of the month */
  unsigned reboot : 1;
  unsigned hashed : 1;     /* uses H: depends on the job id */
  uint16_t month_ok[YEAR_TYPES]; /* months holding a matching day */
  /* The rarer forms. */
  uint8_t dnth[7];         /* as nth, written in day_of_week ("fri#3") */
  uint32_t last_off;       /* bit k: "L-k" in the day field, "L" = bit 0 */
  uint32_t near_wd;        /* bit n: "nW", the weekday nearest day n */
  int64_t every;           /* @every: seconds; 0 otherwise */
  const chr_tz_t *tz;      /* TZ= prefix, or NULL */
  uint64_t year[YEAR_WORDS];     /* bit y - YEAR_MIN */
};

/* Parsing. */

/* How numbers and names read: field tables count weekdays 0-6 from Monday,
 * crontab strings 0-7 from Sunday (7 = Sunday again), Quartz 1-7 from
 * Sunday. */
enum { MODE_FIELDS, MODE_CRONTAB, MODE_QUARTZ };

typedef struct {
  const char *field; /* name for messages */
  int index;         /* CHR_CRON_* */
  int min, max;
  int cycle_max;     /* where a wrap-around range ("fri-mon") turns back to min */
  int names;         /* 0 none, 1 months, 2 weekdays from mon, 3 from sun = 0,
                        4 from sun = 1 */
  int mode;
  uint64_t *bits;    /* bit (v - base) */
  int base;
  const char *hash_key;
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

/* A weekday number as written in this field's mode, 0 = Monday. */
static int dow_mon0(const field_parse_t *p, int v) {
  switch (p->mode) {
  case MODE_CRONTAB: return (v + 6) % 7;
  case MODE_QUARTZ: return (v + 5) % 7;
  default: return v;
  }
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
      if (i >= 0 && p->names == 4) i += 1;
      else if (i == 0 && end_of_range) i = 7;
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
static inline __attribute__((always_inline)) void set_range(field_parse_t *p, int lo, int hi,
                                                             int step) {
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

/* A wrap-around range, lo > hi: lo to the end of the cycle, then on from
 * its start to hi, the step counting across the turn ("thu-tue/2" is
 * thu, sat, mon). */
static void set_wrap(field_parse_t *p, int lo, int hi, int step) {
  int span = p->cycle_max - p->min + 1, count = hi - lo + span + 1;
  for (int k = 0; k < count; k += step) {
    int b = p->min + (lo - p->min + k) % span - p->base;
    p->bits[b / 64] |= (uint64_t)1 << (b % 64);
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

static int is_letter(char ch, char upper) { return ch == upper || ch == upper + 32; }

/* The digits of s[0..n) as a number, or -1 when there are none or
 * anything else. */
static int digits_only(const char *s, size_t n) {
  int v = 0;
  if (n == 0 || n > 4) return -1;
  for (size_t i = 0; i < n; i++) {
    if (!isdigit((unsigned char)s[i])) return -1;
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

/* The Quartz letters of the day field: L, L-n, LW, nW. */
static int parse_day_letters(field_parse_t *p, const char *s, size_t n) {
  int v;
  if (is_letter(s[0], 'L') && n == 1) {
    p->c->last_off |= 1;
    return 0;
  }
  if (is_letter(s[0], 'L') && n == 2 && is_letter(s[1], 'W')) {
    p->c->last_wd = 1;
    return 0;
  }
  if (is_letter(s[0], 'L') && n >= 2 && s[1] == '-') {
    if ((v = digits_only(s + 2, n - 2)) < 0 || v > 30)
      return fail(p, "'%.*s': expected L-0 .. L-30 (days before the last)", (int)n, s);
    p->c->last_off |= 1u << v;
    return 0;
  }
  if (n >= 2 && is_letter(s[n - 1], 'W') && (v = digits_only(s, n - 1)) >= 0) {
    if (v < 1 || v > 31) return fail(p, "%.*s is out of range 1-31", (int)(n - 1), s);
    p->c->near_wd |= 1u << v;
    return 0;
  }
  return NOT_DAY_TERM;
}

/* The day field's own terms. Returns NOT_DAY_TERM for anything else, which
 * the generic term parser then reads (and rejects, if it is gibberish). */
static int parse_day_term(field_parse_t *p, const char *s, size_t n) {
  size_t w1 = 0, rest;
  int nth, wd, r;
  if ((r = parse_day_letters(p, s, n)) != NOT_DAY_TERM) return r;
  while (w1 < n && !is_space((unsigned char)s[w1])) w1++;
  if (w1 == n) {
    if (word_is(s, n, "last")) {
      p->c->last_off |= 1;
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

/* The day_of_week field's own terms: "5L" or "FRIL" (the last Friday),
 * "6#3", "MON#1", "FRI#L". NOT_DAY_TERM for anything else. */
static int parse_dow_term(field_parse_t *p, const char *s, size_t n) {
  const char *hash = memchr(s, '#', n), *q = s;
  size_t vlen;
  int nth, v;
  if (hash) {
    const char *a = hash + 1;
    size_t alen = n - (size_t)(a - s);
    if (alen == 1 && is_letter(*a, 'L')) nth = NTH_LAST;
    else if (alen == 1 && *a >= '1' && *a <= '5') nth = *a - '0';
    else return fail(p, "'%.*s': expected 1..5 or L after '#'", (int)n, s);
    vlen = (size_t)(hash - s);
  } else if (n >= 2 && is_letter(s[n - 1], 'L')) {
    nth = NTH_LAST;
    vlen = n - 1;
  } else if (n == 1 && is_letter(*s, 'L')) {
    return fail(p, "'L' needs a weekday before it, as in '5L' or 'FRIL' (the last Friday)");
  } else {
    return NOT_DAY_TERM;
  }
  if (vlen == 0) return fail(p, "'%.*s' needs a weekday before '%c'", (int)n, s, s[vlen]);
  if (parse_value(p, &q, s + vlen, s, n, 0, &v)) return ERR_PARSE;
  if (q != s + vlen) return fail(p, "unknown value '%.*s'", (int)n, s);
  p->c->dnth[dow_mon0(p, v)] |= (uint8_t)(1u << nth);
  p->c->dnth_any = 1;
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

/* The seed of 'H' for one field: FNV-1a (64 bit) over "<job id>/<field>",
 * then a finalizer, since FNV's low bits are weak and the value is used
 * modulo small numbers. It depends on nothing but those two strings, so a
 * job keeps its minute across processes, hosts and restarts. */
static uint64_t hash_of(const char *key, const char *field) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (const char *k = key; *k; k++) h = (h ^ (unsigned char)*k) * 0x100000001b3ULL;
  h = (h ^ '/') * 0x100000001b3ULL;
  for (const char *k = field; *k; k++) h = (h ^ (unsigned char)*k) * 0x100000001b3ULL;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  return h;
}

/* Jenkins' hashed values: H (one value of the field), H/n (every n from a
 * hashed start below n), H(a-b) and H(a-b)/n. In the day field H stays in
 * 1-28, which every month has. */
static int parse_hash(field_parse_t *p, const char *s, size_t n) {
  const char *q = s + 1, *e = s + n;
  int lo = p->min, hi = p->index == CHR_CRON_DAY ? 28 : p->cycle_max, step = 0, span;
  uint64_t h;
  if (p->index == CHR_CRON_YEAR) return fail(p, "'H' is not allowed in this field");
  if (q < e && *q == '(') {
    q++;
    if (parse_value(p, &q, e, s, n, 0, &lo)) return ERR_PARSE;
    if (q == e || *q != '-') return fail(p, "expected H(a-b) in '%.*s'", (int)n, s);
    q++;
    if (parse_value(p, &q, e, s, n, 1, &hi)) return ERR_PARSE;
    if (q == e || *q != ')') return fail(p, "expected H(a-b) in '%.*s'", (int)n, s);
    q++;
    if (lo > hi) return fail(p, "range in '%.*s' is reversed", (int)n, s);
  }
  if (q < e && *q == '/' && (++q, parse_step(p, &q, e, s, n, &step))) return ERR_PARSE;
  if (q != e) return fail(p, "unknown value '%.*s'", (int)n, s);
  if (p->hash_key == NULL)
    return fail(p, "'%.*s' needs a job id to hash (create the job with a job_id, or give "
                   "job_id to chronis.cron)", (int)n, s);
  h = hash_of(p->hash_key, p->field);
  p->c->hashed = 1;
  span = hi - lo + 1;
  if (step) {
    set_range(p, lo + (int)(h % (uint64_t)(step < span ? step : span)), hi, step);
  } else {
    int v = lo + (int)(h % (uint64_t)span);
    set_range(p, v, v, 1);
  }
  return 0;
}

/* `*`, `*\/n`, `/n`, `?` (day fields), `a`, `a-b` (wrapping around when
 * a > b), `a-b/n`, `a/n` (a, a+n, ... up to the field's maximum), H forms,
 * or a day term. */
static int parse_term(field_parse_t *p, const char *s, size_t n) {
  const char *q = s, *e = s + n;
  int lo, hi, step = 1, r;
  if (p->index == CHR_CRON_DAY && (r = parse_day_term(p, s, n)) != NOT_DAY_TERM) return r;
  if (p->index == CHR_CRON_DAY_OF_WEEK && (r = parse_dow_term(p, s, n)) != NOT_DAY_TERM)
    return r;
  if (is_letter(*q, 'H') && (n == 1 || q[1] == '(' || q[1] == '/')) return parse_hash(p, s, n);
  if (*q == '?') {
    if (p->index != CHR_CRON_DAY && p->index != CHR_CRON_DAY_OF_WEEK)
      return fail(p, "'?' is only allowed in day and day_of_week");
    if (n != 1) return fail(p, "unknown value '%.*s'", (int)n, s);
  }
  if (*q == '*' || *q == '?' || *q == '/') {
    if (*q != '/') q++; /* "/n" is "*\/n" (croner) */
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
      if (lo > hi && lo > p->cycle_max) lo = p->min; /* crontab "7-mon": 7 is 0 */
      if (lo > hi && p->index == CHR_CRON_YEAR)
        return fail(p, "range %.*s is reversed", (int)(q - s), s);
      if (q < e && *q == '/' && (++q, parse_step(p, &q, e, s, n, &step)))
        return ERR_PARSE;
      if (lo > hi) {
        if (q != e) return fail(p, "unknown value '%.*s'", (int)n, s);
        set_wrap(p, lo, hi, step);
        return 0;
      }
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

/* Days of a month holding the nth (bit n) or last (NTH_LAST) weekday w
 * of nth[w], given the weekday of its 1st and its length. */
static uint32_t nth_days(const uint8_t nth[7], int wd1, int dim) {
  uint32_t r = 0;
  for (int w = 0; w < 7; w++) {
    int first;
    if (!nth[w]) continue;
    first = 1 + (w - wd1 + 7) % 7;
    for (int k = 1; k <= 5; k++)
      if ((nth[w] >> k & 1) && first + 7 * (k - 1) <= dim)
        r |= 1u << (first + 7 * (k - 1));
    if (nth[w] >> NTH_LAST & 1) r |= 1u << (first + 7 * ((dim - first) / 7));
  }
  return r;
}

/* The weekday nearest day d, within its month (Quartz's "W"): a Saturday
 * moves to the Friday before, a Sunday to the Monday after, unless that
 * leaves the month. */
static int near_weekday(int d, int wd1, int dim) {
  int wd = (wd1 + d - 1) % 7;
  if (wd == 5) return d > 1 ? d - 1 : d + 2;
  if (wd == 6) return d < dim ? d + 1 : d - 2;
  return d;
}

/* Days of a month matched by the day field alone, given the weekday of
 * its 1st (0 = Monday) and its length. */
static uint32_t dom_mask(const chr_cron_t *c, int wd1, int dim) {
  uint32_t all = month_days_all(dim), r;
  if (c->day_any) return all;
  r = c->dom & all;
  if (c->dom_extra) {
    if (c->nth_any) r |= nth_days(c->nth, wd1, dim);
    for (uint32_t b = c->last_off; b; b &= b - 1)
      if (dim - __builtin_ctz(b) >= 1) r |= 1u << (dim - __builtin_ctz(b));
    for (uint32_t b = c->near_wd & all; b; b &= b - 1)
      r |= 1u << near_weekday(__builtin_ctz(b), wd1, dim);
    if (c->last_wd) r |= 1u << near_weekday(dim, wd1, dim);
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
  uint32_t dow = all;
  if (!c->dow_any) {
    dow &= (uint32_t)((c->dow_pattern >> wd1) << 1);
    if (c->dnth_any) dow |= nth_days(c->dnth, wd1, dim);
  }
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
    uint8_t has[7][4], every = 1;
    for (int w = 0; w < 7; w++)
      for (int n = 28; n <= 31; n++) every &= has[w][n - 28] = dom_dow_mask(c, w, n) != 0;
    if (every) { /* "mon-fri", "1,15", "L": every month holds a match */
      for (int t = 0; t < 14; t++) c->month_ok[t] = c->month;
      return;
    }
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

/* '*' or '?': the field is unrestricted, for Vixie's day rule. */
static int starts_with_star(const char *s) {
  while (is_space((unsigned char)*s)) s++;
  return *s == '*' || *s == '?';
}

/* Builds a spec from one expression per field (all present); crontab is
 * the string they came from, for messages. A spec that no date can ever
 * match is refused, naming its date fields. */
static chr_cron_t *compile(const char *const expr[CHR_CRON_NFIELDS], int mode,
                           const char *hash_key, const char *crontab, char *err,
                           size_t errlen) {
  chr_cron_t *c = chr_calloc(1, sizeof *c);
  for (int i = 0; i < CHR_CRON_NFIELDS; i++) {
    uint64_t one = 0;
    field_parse_t p = {chr_cron_field_names[i], i, field_min[i], field_max[i], field_max[i],
                       0, mode, &one, 0, hash_key, c, err, errlen};
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
      p.names = 2;
      if (mode == MODE_CRONTAB) {
        p.names = 3;
        p.max = 7;
        p.cycle_max = 6;
      } else if (mode == MODE_QUARTZ) {
        p.names = 4;
        p.min = 1;
        p.max = p.cycle_max = 7;
      }
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
      else if (mode == MODE_QUARTZ) /* 1 = Sunday, 2 = Monday */
        one = (one >> 2 & 0x3f) | (one >> 1 & 1) << 6;
      c->dow = (uint8_t)one;
      break;
    case CHR_CRON_HOUR: c->hour = (uint32_t)one; break;
    case CHR_CRON_MINUTE: c->minute = one; break;
    case CHR_CRON_SECOND: c->second = one; break;
    }
  }
  c->hour_star = starts_with_star(expr[CHR_CRON_HOUR]) != 0;
  c->dom_extra = c->nth_any || c->last_off || c->near_wd || c->last_wd;
  c->day_any = c->dom == 0xfffffffeu && !c->dom_extra;
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
   * only when both are restricted does either one match. Quartz has no
   * such rule (one of them is meant to be '?'). */
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
chr_cron_t *chr_cron_parse_fields_opts(const char *const fields[CHR_CRON_NFIELDS],
                                       const chr_cron_opts_t *o, char *err, size_t errlen) {
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
  return compile(expr, MODE_FIELDS, o ? o->hash_key : NULL, NULL, err, errlen);
}

chr_cron_t *chr_cron_parse_fields(const char *const fields[CHR_CRON_NFIELDS],
                                  char *err, size_t errlen) {
  return chr_cron_parse_fields_opts(fields, NULL, err, errlen);
}

const char *const chr_cron_dialect_names[CHR_CRON_NDIALECTS] = {"standard", "vixie", "quartz",
                                                                "year_last"};

int chr_cron_dialect_of(const char *name) {
  for (int i = 0; i < CHR_CRON_NDIALECTS; i++)
    if (strcmp(name, chr_cron_dialect_names[i]) == 0) return i;
  return -1;
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

/* The fields of an n-field crontab string in a dialect, or NULL when the
 * dialect takes no n fields. */
static const int *layout(int dialect, int n) {
  static const int f5[] = {CHR_CRON_MINUTE, CHR_CRON_HOUR, CHR_CRON_DAY, CHR_CRON_MONTH,
                           CHR_CRON_DAY_OF_WEEK};
  static const int f6[] = {CHR_CRON_SECOND, CHR_CRON_MINUTE, CHR_CRON_HOUR, CHR_CRON_DAY,
                           CHR_CRON_MONTH, CHR_CRON_DAY_OF_WEEK};
  static const int f7[] = {CHR_CRON_SECOND, CHR_CRON_MINUTE, CHR_CRON_HOUR, CHR_CRON_DAY,
                           CHR_CRON_MONTH, CHR_CRON_DAY_OF_WEEK, CHR_CRON_YEAR};
  static const int f6y[] = {CHR_CRON_MINUTE, CHR_CRON_HOUR, CHR_CRON_DAY, CHR_CRON_MONTH,
                            CHR_CRON_DAY_OF_WEEK, CHR_CRON_YEAR};
  switch (dialect) {
  case CHR_CRON_STANDARD: return n == 5 ? f5 : n == 6 ? f6 : n == 7 ? f7 : NULL;
  case CHR_CRON_VIXIE: return n == 5 ? f5 : NULL;
  case CHR_CRON_QUARTZ: return n == 6 ? f6 : n == 7 ? f7 : NULL;
  case CHR_CRON_YEAR_LAST: return n == 5 ? f5 : n == 6 ? f6y : NULL;
  }
  return NULL;
}

/* "second minute hour day month day_of_week" */
static void layout_names(const int *f, int n, char *out, size_t len) {
  size_t k = 0;
  out[0] = '\0';
  for (int i = 0; i < n && k < len; i++)
    k += (size_t)snprintf(out + k, len - k, "%s%s", i ? " " : "", chr_cron_field_names[f[i]]);
}

/* Compiles n split fields in a dialect (layout(dialect, n) is not NULL). */
static chr_cron_t *compile_parts(const char *const *part, int n, int dialect,
                                 const char *hash_key, const char *shown, char *err,
                                 size_t errlen) {
  const char *expr[CHR_CRON_NFIELDS];
  const int *f = layout(dialect, n);
  expr[CHR_CRON_YEAR] = "*";
  expr[CHR_CRON_WEEK] = "*";
  expr[CHR_CRON_SECOND] = "0";
  for (int i = 0; i < n; i++) expr[f[i]] = part[i];
  return compile(expr, dialect == CHR_CRON_QUARTZ ? MODE_QUARTZ : MODE_CRONTAB, hash_key, shown,
                 err, errlen);
}

/* After an error in an expression that another dialect reads: how the
 * fields were read, and the first dialect that reads the expression, with
 * what it would mean. Nothing when no dialect reads it. */
static void dialect_hint(const char *const *part, int n, int dialect, const char *hash_key,
                         char *err, size_t errlen) {
  char names[96], alt[96], desc[200];
  size_t len = strlen(err);
  for (int d = 0; d < CHR_CRON_NDIALECTS; d++) {
    chr_cron_t *c;
    if (d == dialect || layout(d, n) == NULL) continue;
    if ((c = compile_parts(part, n, d, hash_key, NULL, NULL, 0)) == NULL) continue;
    chr_cron_describe(c, desc, sizeof desc);
    chr_cron_free(c);
    layout_names(layout(dialect, n), n, names, sizeof names);
    layout_names(layout(d, n), n, alt, sizeof alt);
    if (len < errlen)
      snprintf(err + len, errlen - len,
               " (%d fields read as %s, dialect '%s'; with dialect = '%s' (%s) it means: %s)",
               n, names, chr_cron_dialect_names[dialect], chr_cron_dialect_names[d], alt, desc);
    return;
  }
}

/* "@every 1h30m": Go's duration syntax, units h, m and s, decimals allowed;
 * whole seconds, at least one. Returns seconds, or -1. */
static int64_t parse_every(const char *s, size_t n) {
  int64_t total = 0; /* µs */
  size_t i = 0;
  if (n == 0) return -1;
  while (i < n) {
    int64_t whole = 0, frac = 0, scale = 1000000, unit;
    int digits = 0;
    while (i < n && isdigit((unsigned char)s[i]) && whole < 10000000) {
      whole = whole * 10 + (s[i++] - '0');
      digits++;
    }
    if (i < n && s[i] == '.') {
      i++;
      while (i < n && isdigit((unsigned char)s[i])) {
        if (scale > 1) frac = frac * 10 + (s[i] - '0'), scale /= 10;
        i++;
        digits++;
      }
    }
    if (digits == 0 || i == n) return -1;
    switch (s[i++]) {
    case 'h': unit = 3600; break;
    case 'm': unit = 60; break;
    case 's': unit = 1; break;
    default: return -1;
    }
    if (i < n && isalpha((unsigned char)s[i])) return -1; /* "ms", "us" */
    total += whole * unit * 1000000 + frac * scale * unit;
    if (total > 100LL * 366 * 86400 * 1000000) return -1;
  }
  if (total < 1000000 || total % 1000000) return -1;
  return total / 1000000;
}

/* The text after a TZ= or CRON_TZ= prefix and its zone; 0 when there is
 * no prefix, -1 on a bad zone (with the message in err). */
static int zone_prefix(const char *shown, const char **src, const chr_tz_t **tz, char *err,
                       size_t errlen) {
  const char *s = *src, *z, *ze;
  char name[128], msg[200];
  if (strncmp(s, "TZ=", 3) == 0) z = s + 3;
  else if (strncmp(s, "CRON_TZ=", 8) == 0) z = s + 8;
  else return 0;
  for (ze = z; *ze && !is_space((unsigned char)*ze); ze++) {}
  if (ze == z || (size_t)(ze - z) >= sizeof name) {
    expr_error(shown, "expected a zone name after TZ=, as in 'TZ=Europe/Paris 0 9 * * *'", err,
               errlen);
    return -1;
  }
  memcpy(name, z, (size_t)(ze - z));
  name[ze - z] = '\0';
  if ((*tz = chr_tz_get(name, msg, sizeof msg)) == NULL) {
    expr_error(shown, msg, err, errlen);
    return -1;
  }
  while (is_space((unsigned char)*ze)) ze++;
  *src = ze;
  return 1;
}

chr_cron_t *chr_cron_parse_crontab_opts(const char *s, const chr_cron_opts_t *o, char *err,
                                        size_t errlen) {
  enum { MAXF = 8, MAXLEN = 256 };
  static const char *const counts[CHR_CRON_NDIALECTS] = {"5, 6 or 7", "5", "6 or 7",
                                                         "5 or 6"};
  char buf[MAXLEN];
  const char *part[MAXF];
  const char *src = s, *hash_key = o ? o->hash_key : NULL;
  const chr_tz_t *tz = NULL;
  int dialect = o ? (int)o->dialect : CHR_CRON_STANDARD;
  chr_cron_t *c;
  size_t len;
  int n = 0;
  if (dialect < 0 || dialect >= CHR_CRON_NDIALECTS) dialect = CHR_CRON_STANDARD;
  while (is_space((unsigned char)*src)) src++;
  if (zone_prefix(s, &src, &tz, err, errlen) < 0) return NULL;
  len = strlen(src);
  while (len && is_space((unsigned char)src[len - 1])) len--;
  if (len && src[0] == '@') {
    size_t w = 0;
    while (w < len && !is_space((unsigned char)src[w])) w++;
    c = NULL;
    for (size_t i = 0; i < sizeof macros / sizeof macros[0] && !c; i++)
      if (word_is(src, len, macros[i].name))
        c = chr_cron_parse_crontab_opts(macros[i].expr, NULL, err, errlen);
    if (!c && word_is(src, len, "@reboot")) {
      c = chr_calloc(1, sizeof *c);
      c->reboot = 1;
    }
    if (!c && word_is(src, w, "@every")) {
      size_t a = w;
      int64_t every;
      while (a < len && is_space((unsigned char)src[a])) a++;
      if ((every = parse_every(src + a, len - a)) < 0) {
        expr_error(s, "@every takes a duration of whole seconds, at least 1s, as in "
                      "'@every 1h30m' or '@every 90s' (units h, m, s)", err, errlen);
        return NULL;
      }
      c = chr_calloc(1, sizeof *c);
      c->every = every;
    }
    if (!c) {
      expr_error(s, "unknown macro", err, errlen);
      return NULL;
    }
    c->tz = tz;
    c->special = c->reboot || c->every || tz;
    return c;
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
  if (n > MAXF || layout(dialect, n) == NULL) {
    char what[96];
    if (dialect == CHR_CRON_STANDARD)
      snprintf(what, sizeof what, "expected %s fields, got %d", counts[dialect], n);
    else
      snprintf(what, sizeof what, "expected %s fields in dialect '%s', got %d", counts[dialect],
               chr_cron_dialect_names[dialect], n);
    expr_error(s, what, err, errlen);
    return NULL;
  }
  c = compile_parts(part, n, dialect, hash_key, s, err, errlen);
  if (c == NULL && err && errlen)
    dialect_hint(part, n, dialect, hash_key, err, errlen);
  if (c && tz) {
    c->tz = tz;
    c->special = 1;
  }
  return c;
}

chr_cron_t *chr_cron_parse_crontab(const char *s, char *err, size_t errlen) {
  return chr_cron_parse_crontab_opts(s, NULL, err, errlen);
}

void chr_cron_free(chr_cron_t *c) { free(c); }

int chr_cron_hour_star(const chr_cron_t *c) { return c->hour_star; }

const chr_tz_t *chr_cron_zone(const chr_cron_t *c) { return c->tz; }

int chr_cron_reboot(const chr_cron_t *c) { return c->reboot; }

int chr_cron_hashed(const chr_cron_t *c) { return c->hashed; }

int64_t chr_cron_every(const chr_cron_t *c) { return c->every; }


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
  if (c->special) {
    if (c->reboot) return NONE;
    if (c->every) /* elapsed time, whole seconds as robfig/cron */
      return a + c->every > last ? NONE : (a + c->every) * CHR_USEC;
    if (c->tz) z = c->tz;
  }
  if (z == NULL || z == chr_tz_utc())
    r = next_wall(c, a + 1);
  else
    r = next_instant(c, z, a);
  return r == NONE || r > last ? NONE : r * CHR_USEC;
}

/* Description. */

typedef struct {
  char *buf;
  size_t len, n; /* n: length written, or needed */
} out_t;

static void put(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(out_t *o, const char *fmt, ...) {
  va_list ap;
  int k;
  va_start(ap, fmt);
  k = vsnprintf(o->n < o->len ? o->buf + o->n : NULL, o->n < o->len ? o->len - o->n : 0, fmt, ap);
  va_end(ap);
  if (k > 0) o->n += (size_t)k;
}

typedef struct {
  const uint64_t *w;
  int base;
} set_t;

static int set_has(const set_t *s, int v) {
  int b = v - s->base;
  return (int)(s->w[b / 64] >> (b % 64) & 1);
}

static int set_count(const set_t *s, int lo, int hi) {
  int n = 0;
  for (int v = lo; v <= hi; v++) n += set_has(s, v);
  return n;
}

/* The step of a set {lo, lo+d, lo+2d, ...} that runs to the end of
 * [lo, hi], with d > 1; 0 for any other set. */
static int set_step(const set_t *s, int lo, int hi) {
  int d = 0, prev = -1, n = 0;
  for (int v = lo; v <= hi; v++) {
    if (!set_has(s, v)) continue;
    if (n == 0 && v != lo) return 0;
    if (n == 1) d = v - prev;
    else if (n > 1 && v - prev != d) return 0;
    prev = v;
    n++;
  }
  return n >= 2 && d > 1 && prev + d > hi ? d : 0;
}

static const char *const month_long[12] = {
    "January", "February", "March",     "April",   "May",      "June",
    "July",    "August",   "September", "October", "November", "December"};
static const char *const wday_long[7] = {"Monday", "Tuesday",  "Wednesday", "Thursday",
                                         "Friday", "Saturday", "Sunday"};

static void put_value(out_t *o, int v, const char *const *names, int name_base) {
  if (names) put(o, "%s", names[v - name_base]);
  else put(o, "%d", v);
}

/* "9", "9 and 17", "1, 15 and 20 through 25", "Monday through Friday". */
static void put_set(out_t *o, const set_t *s, int lo, int hi, const char *const *names,
                    int name_base) {
  int items[32][2], n = 0, more = 0;
  for (int v = lo; v <= hi; v++) {
    if (!set_has(s, v)) continue;
    if (n && items[n - 1][1] == v - 1 && (items[n - 1][1] > items[n - 1][0] ||
                                          (v + 1 <= hi && set_has(s, v + 1)))) {
      items[n - 1][1] = v;
      continue;
    }
    if (n == 32) { /* "2026-9999/2": the first ones, then "and more" */
      more = 1;
      break;
    }
    items[n][0] = items[n][1] = v;
    n++;
  }
  for (int i = 0; i < n; i++) {
    put(o, "%s", i == 0 ? "" : i == n - 1 && !more ? " and " : ", ");
    put_value(o, items[i][0], names, name_base);
    if (items[i][1] > items[i][0]) {
      put(o, " through ");
      put_value(o, items[i][1], names, name_base);
    }
  }
  if (more) put(o, " and more");
}

static const char *ordinal_suffix(int n) {
  return n == 1 ? "st" : n == 2 ? "nd" : n == 3 ? "rd" : "th";
}

/* "the 2nd Sunday", "the last Friday", joined by sep; returns items put. */
static int put_nth(out_t *o, const uint8_t nth[7], int count) {
  for (int w = 0; w < 7; w++)
    for (int k = 1; k <= NTH_LAST; k++) {
      if (!(nth[w] >> k & 1)) continue;
      put(o, "%s", count++ ? " or " : "");
      if (k == NTH_LAST) put(o, "the last %s", wday_long[w]);
      else put(o, "the %d%s %s", k, ordinal_suffix(k), wday_long[w]);
    }
  return count;
}

static void put_time(out_t *o, const chr_cron_t *c) {
  set_t sec = {&c->second, 0}, min = {&c->minute, 0};
  uint64_t hour64 = c->hour;
  set_t hour = {&hour64, 0};
  int ns = set_count(&sec, 0, 59), nm = set_count(&min, 0, 59), nh = set_count(&hour, 0, 23);
  int step, any = 0;
  if (ns == 1 && nm == 1 && nh <= 4) {
    int s = __builtin_ctzll(c->second), m = __builtin_ctzll(c->minute), k = 0;
    put(o, "at ");
    for (int h = 0; h < 24; h++) {
      if (!(c->hour >> h & 1)) continue;
      put(o, "%s%02d:%02d", k == 0 ? "" : k == nh - 1 ? " and " : ", ", h, m);
      if (s) put(o, ":%02d", s);
      k++;
    }
    return;
  }
  if (ns == 60) put(o, "every second"), any = 1;
  else if ((step = set_step(&sec, 0, 59))) put(o, "every %d seconds", step), any = 1;
  else if (!(ns == 1 && c->second == 1))
    put(o, "at second%s ", ns > 1 ? "s" : ""), put_set(o, &sec, 0, 59, NULL, 0), any = 1;
  if (nm == 60) {
    if (!any) put(o, "every minute"), any = 1;
  } else {
    put(o, "%s", any ? ", " : "");
    if ((step = set_step(&min, 0, 59))) put(o, "every %d minutes", step);
    else put(o, "at minute%s ", nm > 1 ? "s" : ""), put_set(o, &min, 0, 59, NULL, 0);
    any = 1;
  }
  if (nh < 24) {
    put(o, ", ");
    if ((step = set_step(&hour, 0, 23))) put(o, "every %d hours", step);
    else put(o, "during hour%s ", nh > 1 ? "s" : ""), put_set(o, &hour, 0, 23, NULL, 0);
  }
}

/* The day field alone: "day 1 and 15 of the month or the last day of the
 * month". */
static void put_days(out_t *o, const chr_cron_t *c) {
  uint64_t dom64 = c->dom;
  set_t dom = {&dom64, 0};
  int k = 0;
  if (c->dom) {
    put(o, "day%s ", set_count(&dom, 1, 31) > 1 ? "s" : "");
    put_set(o, &dom, 1, 31, NULL, 0);
    put(o, " of the month");
    k++;
  }
  for (int i = 0; i <= 30; i++) {
    if (!(c->last_off >> i & 1)) continue;
    put(o, "%s", k++ ? " or " : "");
    if (i == 0) put(o, "the last day of the month");
    else put(o, "the last day of the month minus %d day%s", i, i > 1 ? "s" : "");
  }
  for (int i = 1; i <= 31; i++)
    if (c->near_wd >> i & 1) put(o, "%sthe weekday nearest day %d", k++ ? " or " : "", i);
  if (c->last_wd) put(o, "%sthe last weekday of the month", k++ ? " or " : "");
  put_nth(o, c->nth, k);
}

static void put_weekdays(out_t *o, const chr_cron_t *c) {
  uint64_t dow64 = c->dow;
  set_t dow = {&dow64, 0};
  int k = 0;
  if (c->dow) put_set(o, &dow, 0, 6, wday_long, 0), k++;
  put_nth(o, c->dnth, k);
}

size_t chr_cron_describe(const chr_cron_t *c, char *buf, size_t len) {
  out_t o = {buf, len, 0};
  if (len) buf[0] = '\0';
  if (c->reboot) {
    put(&o, "once each time a scheduler starts");
  } else if (c->every) {
    int64_t h = c->every / 3600, m = c->every / 60 % 60, s = c->every % 60;
    put(&o, "every ");
    if (h) put(&o, "%lldh", (long long)h);
    if (m) put(&o, "%lldm", (long long)m);
    if (s) put(&o, "%llds", (long long)s);
    put(&o, " (elapsed time)");
  } else {
    put_time(&o, c);
    if (!c->day_any && !c->dow_any) {
      put(&o, " on ");
      put_days(&o, c);
      put(&o, c->dom_or_dow ? " or on " : " when it is ");
      put_weekdays(&o, c);
    } else if (!c->day_any) {
      put(&o, " on ");
      put_days(&o, c);
    } else if (!c->dow_any) {
      put(&o, " on ");
      put_weekdays(&o, c);
    }
    if (!c->week_any) {
      set_t week = {&c->week, 0};
      put(&o, " in ISO week%s ", set_count(&week, 1, 53) > 1 ? "s" : "");
      put_set(&o, &week, 1, 53, NULL, 0);
    }
    if (c->month != 0x1ffe) {
      uint64_t m64 = c->month;
      set_t month = {&m64, 0};
      put(&o, " in ");
      put_set(&o, &month, 1, 12, month_long, 1);
    }
    if (!c->year_any) {
      set_t year = {c->year, YEAR_MIN};
      put(&o, " in ");
      put_set(&o, &year, YEAR_MIN, YEAR_MAX, NULL, 0);
    }
  }
  if (c->tz) put(&o, " (%s)", chr_tz_name(c->tz));
  return o.n;
}
