/* tz.c - IANA zones from TZif files (RFC 8536) and their POSIX-TZ footers.
 *
 * A zone is its transition table (64-bit data block) plus, for instants
 * after the last transition, the footer rule ("EST5EDT,M3.2.0,M11.1.0").
 * Lookups (chr_tz_offset, chr_tz_resolve) sit on the cron hot path, so they
 * are a binary search over the table or a constant amount of calendar
 * arithmetic for the footer, and never allocate. Zones are loaded once per
 * name and cached for the life of the process; like the rest of the
 * runtime, the cache belongs to the loop thread and takes no lock. */
#include "tz.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "time.h"

#ifndef CHR_TZDIR
#define CHR_TZDIR "/usr/share/zoneinfo"
#endif

#define NAME_MAX_LEN 255
#define FILE_MAX_LEN (1 << 20)
/* Resolve looks for transitions this far either side of a wall time; UTC
 * offsets are bounded by 26 hours (RFC 8536 §3.2), so two days is ample. */
#define RESOLVE_WINDOW (2 * 86400LL)
/* Transition times in footer rules: RFC 8536 §3.3.1 allows -167..167 h. */
#define RULE_HOURS_MAX 167

/* A footer rule date: Jn (1..365, Feb 29 never counted), n (0..365, Feb 29
 * counted) or Mm.w.d (day d of week w of month m; w = 5 is "last"). */
typedef struct {
  char kind; /* 'J', 'N' or 'M' */
  int n, m, w, d;
  int32_t secs; /* local time of day of the change, may be < 0 or > 24 h */
} rule_date_t;

typedef struct {
  chr_tz_info_t std, dst;
  int has_dst;
  rule_date_t start, end; /* start: std -> dst; end: dst -> std */
} posix_tz_t;

struct chr_tz {
  char *name;
  int64_t *trans; /* seconds, strictly ascending */
  uint8_t *idx;   /* type of each transition */
  int32_t ntrans;
  chr_tz_info_t *types; /* at least one; types[0] rules before trans[0] */
  int has_footer;
  posix_tz_t footer;
  struct chr_tz *next; /* cache bucket chain */
};

static char utc_name[] = "UTC";
static chr_tz_info_t utc_type = {0, 0, "UTC"};
static chr_tz_t utc_zone = {.name = utc_name, .types = &utc_type};

#define CACHE_BUCKETS 64
static chr_tz_t *cache[CACHE_BUCKETS];

static int64_t floordiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
  return q;
}

/* Seconds back to µs, saturating instead of overflowing at the far ends of
 * the range (year ±292,000), and never yielding CHR_TIME_NONE. */
static int64_t secs_to_us(int64_t secs, int64_t frac) {
  if (secs > INT64_MAX / CHR_USEC - 1) return INT64_MAX;
  if (secs < INT64_MIN / CHR_USEC + 1) return INT64_MIN + 1;
  return secs * CHR_USEC + frac;
}

/* Footer rules. */

static int64_t rule_day(int year, const rule_date_t *r) {
  int64_t jan1 = chr_days_from_civil(year, 1, 1);
  if (r->kind == 'J') return jan1 + r->n - 1 + (chr_is_leap(year) && r->n >= 60);
  if (r->kind == 'N') return jan1 + r->n;
  int64_t first = chr_days_from_civil(year, r->m, 1);
  int wd = (chr_weekday(first) + 1) % 7; /* POSIX counts from Sunday = 0 */
  int64_t day = first + (r->d - wd + 7) % 7 + 7 * (r->w - 1);
  while (day >= first + chr_days_in_month(year, r->m)) day -= 7;
  return day;
}

typedef struct {
  int64_t t;
  int dst;
} rule_event_t;

/* The two changes of `year` as UTC seconds; 0 if the year has none. A
 * change is given in the local time in force just before it: standard time
 * for the start of DST, DST for its end. As in the reference tzcode, a year
 * whose DST would last a whole year or more has no changes; a rule with no
 * changes at all is DST all year (RFC 8536 §3.3.1: "EST5EDT,0/0,J365/25"). */
static int rule_events(const posix_tz_t *p, int year, rule_event_t ev[2]) {
  int64_t yearsecs = (chr_is_leap(year) ? 366 : 365) * 86400LL;
  ev[0].t = rule_day(year, &p->start) * 86400 + p->start.secs - p->std.offset;
  ev[0].dst = 1;
  ev[1].t = rule_day(year, &p->end) * 86400 + p->end.secs - p->dst.offset;
  ev[1].dst = 0;
  return ev[1].t < ev[0].t ||
         (ev[0].t < ev[1].t && ev[1].t - ev[0].t < yearsecs);
}

static int year_of(int64_t secs) {
  int y, m, d;
  chr_civil_from_days(floordiv(secs, 86400), &y, &m, &d);
  return y;
}

/* The footer's type at UTC second t: whichever change of the years around t
 * came last. */
static const chr_tz_info_t *footer_type(const posix_tz_t *p, int64_t t) {
  int64_t best = INT64_MIN;
  int dst = -1, y;
  if (!p->has_dst) return &p->std;
  y = year_of(t + p->std.offset);
  for (int yy = y - 1; yy <= y + 1; yy++) {
    rule_event_t ev[2];
    if (!rule_events(p, yy, ev)) continue;
    for (int i = 0; i < 2; i++)
      if (ev[i].t <= t && ev[i].t >= best) {
        best = ev[i].t;
        dst = ev[i].dst;
      }
  }
  if (dst < 0) { /* no change in reach: DST all year, or before the first */
    rule_event_t ev[2];
    dst = !rule_events(p, y, ev);
  }
  return dst ? &p->dst : &p->std;
}

/* The first footer change strictly after t that moves the offset away from
 * `cur`, or CHR_TIME_NONE. Events of four years are enough to pass at least
 * one full year after t. */
static int64_t footer_next(const posix_tz_t *p, int64_t t, int32_t cur) {
  rule_event_t ev[8];
  int n = 0, y;
  if (!p->has_dst) return CHR_TIME_NONE;
  y = year_of(t + p->std.offset);
  for (int yy = y - 1; yy <= y + 2; yy++)
    if (rule_events(p, yy, ev + n)) n += 2;
  for (int i = 1; i < n; i++) /* insertion sort: at most eight items */
    for (int j = i; j > 0 && ev[j].t < ev[j - 1].t; j--) {
      rule_event_t tmp = ev[j];
      ev[j] = ev[j - 1];
      ev[j - 1] = tmp;
    }
  for (int i = 0; i < n; i++)
    if (ev[i].t > t && footer_type(p, ev[i].t)->offset != cur) return ev[i].t;
  return CHR_TIME_NONE;
}

/* Lookups. */

/* Index of the last transition at or before t, or -1. */
static int32_t find_trans(const chr_tz_t *z, int64_t t) {
  int32_t lo = 0, hi = z->ntrans - 1, ans = -1;
  while (lo <= hi) {
    int32_t mid = lo + (hi - lo) / 2;
    if (z->trans[mid] <= t) {
      ans = mid;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  return ans;
}

/* RFC 8536: type 0 before the first transition, the footer after the last
 * one (when there is a footer; else the last type stays in force). */
static const chr_tz_info_t *type_at(const chr_tz_t *z, int64_t t) {
  if (z->ntrans == 0 || t > z->trans[z->ntrans - 1]) {
    if (z->has_footer) return footer_type(&z->footer, t);
    return z->ntrans ? &z->types[z->idx[z->ntrans - 1]] : &z->types[0];
  }
  int32_t i = find_trans(z, t);
  return &z->types[i < 0 ? 0 : z->idx[i]];
}

/* The next change of UTC offset strictly after t (seconds), with the
 * offsets either side. Table entries that only rename the abbreviation or
 * flip isdst are not changes here: a wall clock does not move at them. */
static int64_t next_change(const chr_tz_t *z, int64_t t, int32_t *before,
                           int32_t *after) {
  int32_t cur = type_at(z, t)->offset;
  int64_t from = t;
  *before = cur;
  if (z->ntrans > 0 && t < z->trans[z->ntrans - 1]) {
    for (int32_t i = find_trans(z, t) + 1; i < z->ntrans; i++) {
      int32_t off = z->types[z->idx[i]].offset;
      if (off != cur) {
        *after = off;
        return z->trans[i];
      }
    }
    from = z->trans[z->ntrans - 1];
  }
  if (!z->has_footer) return CHR_TIME_NONE;
  int64_t e = footer_next(&z->footer, from, cur);
  if (e != CHR_TIME_NONE) *after = footer_type(&z->footer, e)->offset;
  return e;
}

void chr_tz_info(const chr_tz_t *z, int64_t utc_us, chr_tz_info_t *out) {
  *out = *type_at(z, floordiv(utc_us, CHR_USEC));
}

int32_t chr_tz_offset(const chr_tz_t *z, int64_t utc_us) {
  return type_at(z, floordiv(utc_us, CHR_USEC))->offset;
}

int64_t chr_tz_next_transition(const chr_tz_t *z, int64_t utc_us) {
  int32_t before, after;
  int64_t e = next_change(z, floordiv(utc_us, CHR_USEC), &before, &after);
  if (e == CHR_TIME_NONE || e > INT64_MAX / CHR_USEC) return CHR_TIME_NONE;
  return e * CHR_USEC;
}

/* A wall time w has one solution u = w - off per stretch of constant offset
 * `off` that contains u. So: list the offset changes within a window around
 * w, test each stretch, and if none holds w it lies in a gap, which is then
 * the change whose wall clock jumped over it. All in seconds (the µs part
 * rides along unchanged), so table times near ±2^59 cannot overflow. */
int chr_tz_resolve(const chr_tz_t *z, int64_t local_us, int64_t out[2]) {
  enum { MAXCH = 8 };
  int64_t ws = floordiv(local_us, CHR_USEC), frac = local_us % CHR_USEC;
  int64_t tr[MAXCH], t = ws - RESOLVE_WINDOW;
  int32_t off[MAXCH + 1], before, after;
  int k = 0, n = 0;

  if (frac < 0) frac += CHR_USEC;
  off[0] = type_at(z, t)->offset;
  while (k < MAXCH) {
    int64_t e = next_change(z, t, &before, &after);
    if (e == CHR_TIME_NONE || e > ws + RESOLVE_WINDOW) break;
    tr[k++] = e;
    off[k] = after;
    t = e;
  }
  for (int i = 0; i <= k; i++) {
    int64_t u = ws - off[i];
    if ((i > 0 && u < tr[i - 1]) || (i < k && u >= tr[i])) continue;
    if (n < 2) out[n] = secs_to_us(u, frac);
    n++;
  }
  if (n > 0) return n > 2 ? 2 : n;
  /* The gap: the clock jumped from tr + off[i] to tr + off[i+1] > w. Keeping
   * the old offset moves w forward by the length of the gap. */
  out[0] = secs_to_us(ws - off[0], frac);
  for (int i = 0; i < k; i++)
    if (tr[i] + off[i] <= ws && ws < tr[i] + off[i + 1]) {
      out[0] = secs_to_us(ws - off[i], frac);
      break;
    }
  return 0;
}

int64_t chr_tz_to_utc(const chr_tz_t *z, int64_t local_us) {
  int64_t out[2];
  chr_tz_resolve(z, local_us, out);
  return out[0];
}

/* POSIX TZ strings (the footer), RFC 8536 §3.3 with its extensions: quoted
 * names "<+03>", hours up to 167 in rule times, negative rule times. */

typedef struct {
  const char *s;
  size_t pos, len;
} tzparse_t;

static int tp_peek(const tzparse_t *p) {
  return p->pos < p->len ? (unsigned char)p->s[p->pos] : -1;
}

static int tp_isalpha(int c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static int tp_isdigit(int c) { return c >= '0' && c <= '9'; }

static int tp_name(tzparse_t *p, char abbr[16]) {
  size_t start, n;
  if (tp_peek(p) == '<') {
    start = ++p->pos;
    while (tp_isalpha(tp_peek(p)) || tp_isdigit(tp_peek(p)) ||
           tp_peek(p) == '+' || tp_peek(p) == '-')
      p->pos++;
    n = p->pos - start;
    if (tp_peek(p) != '>') return -1;
    p->pos++;
  } else {
    start = p->pos;
    while (tp_isalpha(tp_peek(p))) p->pos++;
    n = p->pos - start;
  }
  if (n < 1 || n > 15) return -1;
  memcpy(abbr, p->s + start, n);
  abbr[n] = '\0';
  return 0;
}

static int tp_num(tzparse_t *p, int max, int *out) {
  int v = 0, digits = 0;
  while (tp_isdigit(tp_peek(p))) {
    v = v * 10 + (p->s[p->pos++] - '0');
    if (++digits > 3 || v > max) return -1;
  }
  if (digits == 0) return -1;
  *out = v;
  return 0;
}

/* [+-]hh[:mm[:ss]] in seconds; hh up to max_hours. */
static int tp_hms(tzparse_t *p, int max_hours, int32_t *out) {
  int sign = 1, h, m = 0, s = 0;
  if (tp_peek(p) == '+' || tp_peek(p) == '-')
    sign = p->s[p->pos++] == '-' ? -1 : 1;
  if (tp_num(p, max_hours, &h)) return -1;
  if (tp_peek(p) == ':') {
    p->pos++;
    if (tp_num(p, 59, &m)) return -1;
    if (tp_peek(p) == ':') {
      p->pos++;
      if (tp_num(p, 59, &s)) return -1;
    }
  }
  *out = sign * (h * 3600 + m * 60 + s);
  return 0;
}

static int tp_date(tzparse_t *p, rule_date_t *r) {
  int c = tp_peek(p);
  memset(r, 0, sizeof *r);
  if (c == 'J') {
    p->pos++;
    r->kind = 'J';
    if (tp_num(p, 365, &r->n) || r->n < 1) return -1;
  } else if (c == 'M') {
    p->pos++;
    r->kind = 'M';
    if (tp_num(p, 12, &r->m) || r->m < 1 || tp_peek(p) != '.') return -1;
    p->pos++;
    if (tp_num(p, 5, &r->w) || r->w < 1 || tp_peek(p) != '.') return -1;
    p->pos++;
    if (tp_num(p, 6, &r->d)) return -1;
  } else {
    r->kind = 'N';
    if (tp_num(p, 365, &r->n)) return -1;
  }
  r->secs = 2 * 3600;
  if (tp_peek(p) == '/') {
    p->pos++;
    return tp_hms(p, RULE_HOURS_MAX, &r->secs);
  }
  return 0;
}

/* Parses a whole POSIX TZ string into *out; -1 if it is not one. */
static int posix_tz_parse(const char *s, size_t len, posix_tz_t *out) {
  tzparse_t p = {s, 0, len};
  int32_t v;
  memset(out, 0, sizeof *out);
  if (tp_name(&p, out->std.abbr) || tp_hms(&p, 24, &v)) return -1;
  out->std.offset = -v; /* POSIX offsets count west of Greenwich */
  if (p.pos == len) return 0;
  if (tp_name(&p, out->dst.abbr)) return -1;
  out->has_dst = out->dst.dst = 1;
  out->dst.offset = out->std.offset + 3600;
  if (p.pos < len && p.s[p.pos] != ',') {
    if (tp_hms(&p, 24, &v)) return -1;
    out->dst.offset = -v;
  }
  if (p.pos == len) {
    /* No rule given: POSIX leaves it to the implementation; use the US
     * rule, as glibc's "posixrules" default does. */
    static const char us[] = ",M3.2.0,M11.1.0";
    p.s = us;
    p.pos = 0;
    p.len = len = sizeof us - 1;
  }
  if (tp_peek(&p) != ',' || (p.pos++, tp_date(&p, &out->start)) ||
      tp_peek(&p) != ',' || (p.pos++, tp_date(&p, &out->end)))
    return -1;
  return p.pos == len ? 0 : -1;
}

/* TZif. */

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         p[3];
}

static int64_t be64(const unsigned char *p) {
  return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

typedef struct {
  uint32_t isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt;
} tzif_counts_t;

/* Reads a 44-byte header; returns the size of the data block that follows
 * (times of `tsize` bytes), or 0 if the header is not TZif or is absurd. */
static uint64_t tzif_header(const unsigned char *p, size_t avail, int tsize,
                            tzif_counts_t *c) {
  if (avail < 44 || memcmp(p, "TZif", 4) != 0) return 0;
  c->isutcnt = be32(p + 20);
  c->isstdcnt = be32(p + 24);
  c->leapcnt = be32(p + 28);
  c->timecnt = be32(p + 32);
  c->typecnt = be32(p + 36);
  c->charcnt = be32(p + 40);
  if (c->typecnt > 256 || c->timecnt > FILE_MAX_LEN || c->charcnt > 256 ||
      c->leapcnt > FILE_MAX_LEN || c->isutcnt > 256 || c->isstdcnt > 256)
    return 0;
  return (uint64_t)c->timecnt * (tsize + 1) + c->typecnt * 6ULL + c->charcnt +
         c->leapcnt * (tsize + 4ULL) + c->isstdcnt + c->isutcnt;
}

static int load_types(chr_tz_t *z, const unsigned char *p,
                      const tzif_counts_t *c, const unsigned char *chars) {
  z->types = chr_calloc(c->typecnt, sizeof *z->types);
  for (uint32_t i = 0; i < c->typecnt; i++, p += 6) {
    chr_tz_info_t *t = &z->types[i];
    int32_t off = (int32_t)be32(p);
    const unsigned char *a;
    size_t n;
    if (off < -89999 || off > 93599 || p[4] > 1 || p[5] >= c->charcnt)
      return -1;
    a = chars + p[5];
    n = strnlen((const char *)a, c->charcnt - p[5]);
    if (n == c->charcnt - p[5] || n >= sizeof t->abbr) return -1;
    t->offset = off;
    t->dst = p[4];
    memcpy(t->abbr, a, n);
    t->abbr[n] = '\0';
  }
  return 0;
}

/* Fills z from one data block. Leap-second zones ("right/...") count TAI-
 * like seconds, not the POSIX time our instants are, so they are refused
 * rather than being 27 seconds off. */
static int load_block(chr_tz_t *z, const unsigned char *p,
                      const tzif_counts_t *c, int tsize) {
  const unsigned char *idx = p + (size_t)c->timecnt * tsize;
  const unsigned char *types = idx + c->timecnt;
  const unsigned char *chars = types + c->typecnt * 6;
  if (c->typecnt == 0 || c->charcnt == 0 || c->leapcnt != 0 ||
      (c->isstdcnt && c->isstdcnt != c->typecnt) ||
      (c->isutcnt && c->isutcnt != c->typecnt))
    return -1;
  z->ntrans = (int32_t)c->timecnt;
  z->trans = chr_malloc(c->timecnt * sizeof *z->trans);
  z->idx = chr_malloc(c->timecnt);
  for (uint32_t i = 0; i < c->timecnt; i++) {
    z->trans[i] = tsize == 8 ? be64(p + 8 * i) : (int32_t)be32(p + 4 * i);
    z->idx[i] = idx[i];
    if (idx[i] >= c->typecnt || (i > 0 && z->trans[i] <= z->trans[i - 1]))
      return -1;
  }
  return load_types(z, types, c, chars);
}

static int tzif_parse(chr_tz_t *z, const unsigned char *buf, size_t len) {
  tzif_counts_t c;
  uint64_t size = tzif_header(buf, len, 4, &c);
  if (size == 0 || size > len - 44) return -1;
  if (buf[4] == '\0') return load_block(z, buf + 44, &c, 4);
  /* v2+: skip the 32-bit block, read the 64-bit one and the footer. */
  const unsigned char *p = buf + 44 + size;
  size_t left = len - 44 - (size_t)size;
  size = tzif_header(p, left, 8, &c);
  if (size == 0 || size > left - 44) return -1;
  if (load_block(z, p + 44, &c, 8)) return -1;
  p += 44 + size;
  left -= 44 + (size_t)size;
  if (left < 2 || p[0] != '\n') return -1;
  const unsigned char *nl = memchr(p + 1, '\n', left - 1);
  if (nl == NULL) return -1;
  size_t flen = (size_t)(nl - p - 1);
  if (flen == 0) return 0; /* an empty footer: the last type stays */
  z->has_footer = 1;
  if (posix_tz_parse((const char *)p + 1, flen, &z->footer)) return -1;
  /* RFC 8536 §3.3: the footer agrees with the last transition's type. A
   * file where they differ would change its offset right after its last
   * transition, where no transition is listed: lookups and resolve, which
   * trust the table to list every change, would disagree. */
  if (z->ntrans > 0 && footer_type(&z->footer, z->trans[z->ntrans - 1])->offset !=
                           z->types[z->idx[z->ntrans - 1]].offset)
    return -1;
  return 0;
}

/* Names and files. */

static int valid_name(const char *name) {
  size_t n = strlen(name);
  if (n == 0 || n > NAME_MAX_LEN || name[0] == '/' || name[n - 1] == '/')
    return 0;
  for (size_t i = 0; i < n; i++) {
    char c = name[i];
    /* No '.' at all, so no ".." and no "zone.tab"-like data files. */
    if (!(tp_isalpha((unsigned char)c) || tp_isdigit((unsigned char)c) ||
          c == '_' || c == '+' || c == '-' || c == '/'))
      return 0;
    if (c == '/' && name[i + 1] == '/') return 0;
  }
  return 1;
}

static void name_error(const char *name, char *err, size_t errlen) {
  char shown[72];
  size_t n = 0;
  if (err == NULL || errlen == 0) return;
  for (; name && name[n] && n < 64; n++) {
    unsigned char ch = (unsigned char)name[n];
    shown[n] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
  }
  if (name && name[n]) memcpy(shown + n, "...", 3), n += 3;
  shown[n] = '\0';
  snprintf(err, errlen, "invalid timezone '%s'", shown);
}

static const char *tzdir(void) {
  const char *d = getenv("TZDIR");
  return d && d[0] == '/' ? d : CHR_TZDIR;
}

/* Reads the zone file, following symlinks only while they stay inside the
 * zoneinfo folder (GMT -> Etc/GMT is fine, localtime -> /etc/... is not). */
static unsigned char *read_zone_file(const char *name, size_t *len) {
  char path[PATH_MAX], dir[PATH_MAX], real[PATH_MAX];
  unsigned char *buf = NULL;
  struct stat st;
  size_t dlen, got = 0;
  int fd;

  if (realpath(tzdir(), dir) == NULL) return NULL;
  if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
    return NULL;
  if (realpath(path, real) == NULL) return NULL;
  dlen = strlen(dir);
  if (strncmp(real, dir, dlen) != 0 || real[dlen] != '/') return NULL;
  fd = open(real, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return NULL;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 44 ||
      st.st_size > FILE_MAX_LEN)
    goto fail;
  buf = chr_malloc((size_t)st.st_size);
  while (got < (size_t)st.st_size) {
    ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) goto fail;
    got += (size_t)r;
  }
  close(fd);
  *len = got;
  return buf;
fail:
  free(buf);
  close(fd);
  return NULL;
}

static void zone_free(chr_tz_t *z) {
  if (z == NULL || z == &utc_zone) return;
  free(z->name);
  free(z->trans);
  free(z->idx);
  free(z->types);
  free(z);
}

static chr_tz_t *zone_load(const char *name) {
  size_t len;
  unsigned char *buf = read_zone_file(name, &len);
  chr_tz_t *z;
  if (buf == NULL) return NULL;
  z = chr_calloc(1, sizeof *z);
  if (tzif_parse(z, buf, len) != 0) {
    zone_free(z);
    z = NULL;
  } else {
    z->name = chr_strdup(name);
  }
  free(buf);
  return z;
}

static uint32_t name_hash(const char *s) {
  uint32_t h = 2166136261u; /* FNV-1a */
  while (*s) h = (h ^ (unsigned char)*s++) * 16777619u;
  return h;
}

const chr_tz_t *chr_tz_get(const char *name, char *err, size_t errlen) {
  uint32_t b;
  chr_tz_t *z;
  /* UTC is built in, so it works even without tzdata installed. */
  if (name && strcmp(name, "UTC") == 0) return &utc_zone;
  if (name == NULL || !valid_name(name)) goto invalid;
  b = name_hash(name) % CACHE_BUCKETS;
  for (z = cache[b]; z; z = z->next)
    if (strcmp(z->name, name) == 0) return z;
  if ((z = zone_load(name)) == NULL) goto invalid;
  z->next = cache[b];
  cache[b] = z;
  return z;
invalid:
  name_error(name, err, errlen);
  return NULL;
}

const chr_tz_t *chr_tz_utc(void) { return &utc_zone; }

const char *chr_tz_name(const chr_tz_t *z) { return z->name; }

void chr_tz_cache_clear(void) {
  for (int i = 0; i < CACHE_BUCKETS; i++) {
    chr_tz_t *z = cache[i];
    while (z) {
      chr_tz_t *next = z->next;
      zone_free(z);
      z = next;
    }
    cache[i] = NULL;
  }
}
