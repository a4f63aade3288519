/* job.c - the job record: field table, copies, partial records (apply and
 * match), JSON conversion, the values a job may hold, and scheduler-level
 * validation. Its conversion to and from Lua tables is in
 * runtime/lua/job.c. */
#include "job.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "time.h"
#include "trigger.h"
#include "tz.h"

const char *const chr_status_names[CHR_ST__COUNT] = {
    NULL, "pending", "scheduled", "running", "paused", "failed", "completed"};
const char *const chr_trigger_type_names[CHR_TT__COUNT] = {NULL, "interval", "cron",
                                                           "date"};
const char *const chr_if_missed_names[CHR_MISS__COUNT] = {NULL, "skip", "run_once",
                                                          "run_all"};

#define OFF(m) offsetof(chr_job_t, m)
#define STR(n, m) {n, CHR_FT_STR, OFF(m), NULL, 0}
#define TIME(n, m) {n, CHR_FT_TIME, OFF(m), NULL, 0}
#define INT(n, m) {n, CHR_FT_INT, OFF(m), NULL, 0}
#define ENUM(n, m, names) {n, CHR_FT_ENUM, OFF(m), names, (int)(sizeof names / sizeof *names)}

const chr_field_desc_t chr_job_fields[CHR_F__COUNT] = {
    [CHR_F_JOB_ID] = STR("job_id", job_id),
    [CHR_F_NAME] = STR("name", name),
    [CHR_F_TRIGGER_TYPE] = ENUM("trigger_type", trigger_type, chr_trigger_type_names),
    [CHR_F_TRIGGER_ARGS] = {"trigger_args", CHR_FT_JSON, OFF(trigger_args), NULL, 0},
    [CHR_F_TIMEZONE] = STR("timezone", timezone),
    [CHR_F_FUNC_NAME] = STR("func_name", func_name),
    [CHR_F_STATUS] = ENUM("status", status, chr_status_names),
    [CHR_F_NEXT_RUN_TIME] = TIME("next_run_time", next_run_time),
    [CHR_F_CREATED_AT] = TIME("created_at", created_at),
    [CHR_F_UPDATED_AT] = TIME("updated_at", updated_at),
    [CHR_F_MAX_RETRIES] = INT("max_retries", max_retries),
    [CHR_F_RETRY_DELAY] = INT("retry_delay_seconds", retry_delay),
    [CHR_F_RETRY_COUNT] = INT("retry_count", retry_count),
    [CHR_F_TIMEOUT] = INT("timeout_seconds", timeout),
    [CHR_F_PRIORITY] = INT("priority", priority),
    [CHR_F_IF_MISSED] = ENUM("if_missed", if_missed, chr_if_missed_names),
    [CHR_F_MISFIRE_THRESHOLD] = INT("misfire_threshold_seconds", misfire_threshold),
    [CHR_F_LAST_RUN_TIME] = TIME("last_run_time", last_run_time),
    [CHR_F_LAST_SCHEDULED_TIME] = TIME("last_scheduled_time", last_scheduled_time),
    [CHR_F_CLAIMED_BY] = STR("claimed_by", claimed_by),
    [CHR_F_LEASE_UNTIL] = TIME("lease_until", lease_until),
    [CHR_F_ATTEMPT] = INT("attempt", attempt),
};

#define FIELD_PTR(j, d) ((char *)(j) + (d)->offset)
#define STRP(j, d) ((char **)FIELD_PTR(j, d))
#define TIMEP(j, d) ((int64_t *)FIELD_PTR(j, d))
#define INTP(j, d) ((int32_t *)FIELD_PTR(j, d))
#define ENUMP(j, d) ((uint8_t *)FIELD_PTR(j, d))

int chr_job_field_index(const char *name, size_t len) {
  for (int i = 0; i < CHR_F__COUNT; i++) {
    const char *n = chr_job_fields[i].name;
    if (strlen(n) == len && memcmp(n, name, len) == 0) return i;
  }
  return -1;
}

int chr_enum_parse(const char *const *names, int count, const char *s) {
  for (int i = 1; i < count; i++)
    if (strcmp(names[i], s) == 0) return i;
  return 0;
}

/* An empty record: no field, no string, times none. */
static void job_init(chr_job_t *j) {
  memset(j, 0, sizeof *j);
  j->next_run_time = j->created_at = j->updated_at = CHR_TIME_NONE;
  j->last_run_time = j->last_scheduled_time = j->lease_until = CHR_TIME_NONE;
}

chr_job_t *chr_job_new(void) {
  chr_job_t *j = chr_malloc(sizeof *j);
  job_init(j);
  return j;
}

/* A packed record's strings, given allocations of their own, so that a
 * writer can replace or free one; the old copies stay in the record's
 * allocation, unused, until it is freed. */
static void unpack(chr_job_t *j) {
  if (!j->packed) return;
  for (int i = 0; i < CHR_F__COUNT; i++) {
    const chr_field_desc_t *d = &chr_job_fields[i];
    if (d->type == CHR_FT_STR || d->type == CHR_FT_JSON) *STRP(j, d) = chr_strdup(*STRP(j, d));
  }
  j->extra = chr_strdup(j->extra);
  j->unreadable = chr_strdup(j->unreadable);
  j->packed = 0;
}

void chr_job_clear(chr_job_t *j) {
  for (int i = 0; i < CHR_F__COUNT && !j->packed; i++) {
    const chr_field_desc_t *d = &chr_job_fields[i];
    if (d->type == CHR_FT_STR || d->type == CHR_FT_JSON) {
      free(*STRP(j, d));
      *STRP(j, d) = NULL;
    }
  }
  if (!j->packed) {
    free(j->extra);
    free(j->unreadable);
  }
  job_init(j);
}

void chr_job_free(chr_job_t *j) {
  if (j == NULL) return;
  chr_job_clear(j);
  free(j);
}

chr_job_t *chr_job_dup(const chr_job_t *src) {
  chr_job_t *j = chr_malloc(sizeof *j);
  memcpy(j, src, sizeof *j);
  for (int i = 0; i < CHR_F__COUNT; i++) {
    const chr_field_desc_t *d = &chr_job_fields[i];
    if (d->type == CHR_FT_STR || d->type == CHR_FT_JSON) *STRP(j, d) = chr_strdup(*STRP(src, d));
  }
  j->extra = chr_strdup(src->extra);
  j->unreadable = chr_strdup(src->unreadable);
  j->packed = 0;
  return j;
}

/* Copies s (or NULL) to *p, and returns the place after it. */
static char *pack_str(char **dst, const char *s, char *p) {
  if (s == NULL) {
    *dst = NULL;
    return p;
  }
  size_t n = strlen(s) + 1;
  memcpy(p, s, n);
  *dst = p;
  return p + n;
}

chr_job_t *chr_job_dup_packed(const chr_job_t *src) {
  size_t len = sizeof *src;
  for (int i = 0; i < CHR_F__COUNT; i++) {
    const chr_field_desc_t *d = &chr_job_fields[i];
    if ((d->type == CHR_FT_STR || d->type == CHR_FT_JSON) && *STRP(src, d))
      len += strlen(*STRP(src, d)) + 1;
  }
  if (src->extra) len += strlen(src->extra) + 1;
  if (src->unreadable) len += strlen(src->unreadable) + 1;
  chr_job_t *j = chr_malloc(len);
  memcpy(j, src, sizeof *j);
  char *p = (char *)(j + 1);
  for (int i = 0; i < CHR_F__COUNT; i++) {
    const chr_field_desc_t *d = &chr_job_fields[i];
    if (d->type == CHR_FT_STR || d->type == CHR_FT_JSON) p = pack_str(STRP(j, d), *STRP(src, d), p);
  }
  p = pack_str(&j->extra, src->extra, p);
  pack_str(&j->unreadable, src->unreadable, p);
  j->packed = 1;
  return j;
}

void chr_job_set_unreadable(chr_job_t *j, const char *fmt, ...) {
  if (j->unreadable != NULL) return;
  unpack(j);
  va_list ap;
  va_start(ap, fmt);
  chr_buf_t b;
  chr_buf_init(&b);
  chr_buf_vprintf(&b, fmt, ap);
  va_end(ap);
  j->unreadable = chr_buf_steal(&b);
}

void chr_job_set_str(chr_job_t *j, chr_field_t f, const char *s) {
  const chr_field_desc_t *d = &chr_job_fields[f];
  unpack(j);
  free(*STRP(j, d));
  *STRP(j, d) = chr_strdup(s);
  if (s) j->mask |= CHR_BIT(f);
  else j->mask &= ~CHR_BIT(f);
}

void chr_job_set_time(chr_job_t *j, chr_field_t f, int64_t us) {
  *TIMEP(j, &chr_job_fields[f]) = us;
  if (us != CHR_TIME_NONE) j->mask |= CHR_BIT(f);
  else j->mask &= ~CHR_BIT(f);
}

void chr_job_set_int(chr_job_t *j, chr_field_t f, int32_t v) {
  const chr_field_desc_t *d = &chr_job_fields[f];
  if (d->type == CHR_FT_ENUM) *ENUMP(j, d) = (uint8_t)v;
  else *INTP(j, d) = v;
  j->mask |= CHR_BIT(f);
}

int32_t chr_job_int(const chr_job_t *j, chr_field_t f, int32_t def) {
  const chr_field_desc_t *d = &chr_job_fields[f];
  if (!chr_job_has(j, f)) return def;
  return d->type == CHR_FT_ENUM ? *ENUMP(j, d) : *INTP(j, d);
}

void chr__job_clear_field(chr_job_t *j, int f) {
  const chr_field_desc_t *d = &chr_job_fields[f];
  unpack(j);
  switch (d->type) {
  case CHR_FT_STR:
  case CHR_FT_JSON:
    free(*STRP(j, d));
    *STRP(j, d) = NULL;
    break;
  case CHR_FT_TIME: *TIMEP(j, d) = CHR_TIME_NONE; break;
  case CHR_FT_INT: *INTP(j, d) = 0; break;
  case CHR_FT_ENUM: *ENUMP(j, d) = 0; break;
  }
  j->mask &= ~CHR_BIT(f);
}

/* A present field whose value is the "none" value acts as a null. */
static int field_is_null(const chr_job_t *j, int f) {
  const chr_field_desc_t *d = &chr_job_fields[f];
  if (j->nullmask & CHR_BIT(f)) return 1;
  if (d->type == CHR_FT_STR || d->type == CHR_FT_JSON) return *STRP(j, d) == NULL;
  if (d->type == CHR_FT_TIME) return *TIMEP(j, d) == CHR_TIME_NONE;
  return 0;
}

/* ---- extra members ---- */

static int find_member(const char *text, const char *key, size_t klen, chr_json_span_t *val) {
  if (text == NULL) return 0;
  const char *it = text, *end = text + strlen(text);
  chr_json_span_t k, v;
  while (chr_json_next_member(&it, end, &k, &v) == 1) {
    if (k.n == klen && memcmp(k.p, key, klen) == 0) {
      *val = v;
      return 1;
    }
  }
  return 0;
}

static int span_cmp(chr_json_span_t a, chr_json_span_t b) {
  size_t n = a.n < b.n ? a.n : b.n;
  int c = memcmp(a.p, b.p, n);
  return c ? c : (a.n > b.n) - (a.n < b.n);
}

static void add_member(chr_buf_t *b, chr_json_span_t k, chr_json_span_t v) {
  if (b->len > 1) chr_buf_addc(b, ','); /* b holds "{" and members */
  chr_buf_addc(b, '"');
  chr_buf_add(b, k.p, k.n);
  chr_buf_add(b, "\":", 2);
  chr_buf_add(b, v.p, v.n);
}

/* Merges two sorted member lists; u's members win, null removes. */
static char *merge_extra(const char *base, const char *u) {
  chr_buf_t b;
  chr_buf_init(&b);
  chr_buf_addc(&b, '{');
  const char *ia = base ? base : "{}", *ea = ia + strlen(ia);
  const char *ib = u, *eb = u + strlen(u);
  chr_json_span_t ka, va, kb, vb;
  int ra = chr_json_next_member(&ia, ea, &ka, &va);
  int rb = chr_json_next_member(&ib, eb, &kb, &vb);
  while (ra == 1 || rb == 1) {
    int c = ra != 1 ? 1 : rb != 1 ? -1 : span_cmp(ka, kb);
    if (c < 0) {
      add_member(&b, ka, va);
      ra = chr_json_next_member(&ia, ea, &ka, &va);
    } else {
      if (!chr_json_is_null(vb)) add_member(&b, kb, vb);
      if (c == 0) ra = chr_json_next_member(&ia, ea, &ka, &va);
      rb = chr_json_next_member(&ib, eb, &kb, &vb);
    }
  }
  if (b.len == 1) {
    chr_buf_free(&b);
    return NULL;
  }
  chr_buf_addc(&b, '}');
  return chr_buf_steal(&b);
}

void chr_job_apply(chr_job_t *j, const chr_job_t *u) {
  unpack(j);
  for (int f = 0; f < CHR_F__COUNT; f++) {
    if (!((u->mask | u->nullmask) & CHR_BIT(f))) continue;
    const chr_field_desc_t *d = &chr_job_fields[f];
    if (field_is_null(u, f)) {
      chr__job_clear_field(j, f);
      continue;
    }
    switch (d->type) {
    case CHR_FT_STR:
    case CHR_FT_JSON:
      free(*STRP(j, d));
      *STRP(j, d) = chr_strdup(*STRP(u, d));
      break;
    case CHR_FT_TIME: *TIMEP(j, d) = *TIMEP(u, d); break;
    case CHR_FT_INT: *INTP(j, d) = *INTP(u, d); break;
    case CHR_FT_ENUM: *ENUMP(j, d) = *ENUMP(u, d); break;
    }
    j->mask |= CHR_BIT(f);
  }
  if (u->extra) {
    char *m = merge_extra(j->extra, u->extra);
    free(j->extra);
    j->extra = m;
  }
}

int chr_job_matches(const chr_job_t *j, const chr_job_t *e) {
  for (int f = 0; f < CHR_F__COUNT; f++) {
    if (!((e->mask | e->nullmask) & CHR_BIT(f))) continue;
    const chr_field_desc_t *d = &chr_job_fields[f];
    int jnull = !chr_job_has(j, f) || field_is_null(j, f);
    if (field_is_null(e, f)) {
      if (!jnull) return 0;
      continue;
    }
    if (jnull) return 0;
    switch (d->type) {
    case CHR_FT_STR:
    case CHR_FT_JSON:
      if (strcmp(*STRP(j, d), *STRP(e, d)) != 0) return 0;
      break;
    case CHR_FT_TIME:
      if (*TIMEP(j, d) != *TIMEP(e, d)) return 0;
      break;
    case CHR_FT_INT:
      if (*INTP(j, d) != *INTP(e, d)) return 0;
      break;
    case CHR_FT_ENUM:
      if (*ENUMP(j, d) != *ENUMP(e, d)) return 0;
      break;
    }
  }
  if (e->extra) {
    const char *it = e->extra, *end = it + strlen(it);
    chr_json_span_t k, v, have;
    while (chr_json_next_member(&it, end, &k, &v) == 1) {
      int found = find_member(j->extra, k.p, k.n, &have);
      if (chr_json_is_null(v)) {
        if (found) return 0;
      } else if (!found || have.n != v.n || memcmp(have.p, v.p, v.n) != 0) {
        return 0;
      }
    }
  }
  return 1;
}

int chr_job_extra_lookup(const chr_job_t *j, const char *path, const char **val,
                         size_t *len) {
  chr_json_span_t v;
  if (j->extra == NULL || !chr_json_lookup(j->extra, strlen(j->extra), path, &v)) return 0;
  *val = v.p;
  *len = v.n;
  return 1;
}

int chr_job_max_instances(const chr_job_t *j) {
  const char *v;
  size_t n;
  long long i;
  double d;
  int isf = 1;
  if (!chr_job_extra_lookup(j, "max_instances", &v, &n) ||
      chr__json_skip_number(v, v + n, &isf) != v + n || isf || !chr__json_number(v, n, 0, &i, &d) ||
      i < 1 || i > CHR_MAX_INSTANCES)
    return 1;
  return (int)i;
}

int chr_job_overlap_skip(const chr_job_t *j) {
  const char *v;
  size_t n;
  return chr_job_extra_lookup(j, "overlap", &v, &n) && n == 6 && memcmp(v, "\"skip\"", 6) == 0;
}

const char *chr_job_queue(const chr_job_t *j, size_t *len) {
  const char *v;
  size_t n;
  if (chr_job_extra_lookup(j, "queue", &v, &n) && n >= 2 && v[0] == '"' && v[n - 1] == '"') {
    *len = n - 2;
    return v + 1;
  }
  *len = sizeof CHR_QUEUE_DEFAULT - 1;
  return CHR_QUEUE_DEFAULT;
}

int chr_job_queue_is(const chr_job_t *j, const char *name) {
  size_t n;
  const char *q = chr_job_queue(j, &n);
  return strlen(name) == n && memcmp(q, name, n) == 0;
}

const char *chr_queue_name_problem(const char *s, size_t n) {
  if (n == 0) return "a queue name cannot be empty";
  if (n > 64) return "a queue name is at most 64 bytes";
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '_' || c == '.' || c == ':' || c == '-'))
      return "a queue name holds only letters, digits, '_', '.', ':' and '-'";
  }
  return NULL;
}

int chr_job_is_derived(const char *k, size_t n) {
  return n == sizeof CHR_JOB_DERIVED_LOCAL - 1 && memcmp(k, CHR_JOB_DERIVED_LOCAL, n) == 0;
}

/* ---- the values a job may hold ---- */

/* The length of the UTF-8 sequence at s (1 to 4 bytes), or 0 when it is
 * not valid UTF-8: truncated, overlong, a surrogate or past U+10FFFF, all
 * of which JSON text and PostgreSQL refuse. */
static size_t utf8_len(const unsigned char *s, size_t n) {
  unsigned c = s[0], cp, min;
  size_t len;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F, min = 0x80;
  else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F, min = 0x800;
  else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07, min = 0x10000;
  else return 0;
  if (n < len) return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    cp = cp << 6 | (s[i] & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

const char *chr_job_string_problem(const char *s, size_t n, char *buf, size_t buflen) {
  const unsigned char *u = (const unsigned char *)s;
  for (size_t i = 0; i < n;) {
    if (u[i] >= 0x01 && u[i] < 0x80) { /* the common case */
      i++;
      continue;
    }
    if (u[i] == 0) {
      snprintf(buf, buflen, "a NUL byte (byte %zu) cannot be stored", i + 1);
      return buf;
    }
    size_t k = utf8_len(u + i, n - i);
    if (k == 0) {
      snprintf(buf, buflen, "not valid UTF-8 (byte %zu)", i + 1);
      return buf;
    }
    i += k;
  }
  return NULL;
}

/* Appends s to a path as a reader can see it: bytes that are not printable
 * UTF-8 as \0 or \xNN, so that the message itself is valid text. */
static void add_shown(chr_buf_t *b, const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  for (size_t i = 0; i < n;) {
    size_t k = u[i] >= 0x20 && u[i] != 0x7F ? utf8_len(u + i, n - i) : 0;
    if (k > 0) {
      chr_buf_add(b, s + i, k);
      i += k;
    } else {
      if (u[i] == 0) chr_buf_add(b, "\\0", 2);
      else chr_buf_printf(b, "\\x%02x", u[i]);
      i++;
    }
  }
}

void chr_job_add_shown(chr_buf_t *b, const char *s, size_t n) {
  add_shown(b, s, n);
}

/* ---- JSON ---- */

/* Appends v in decimal, as "%d" would. */
static void add_int(chr_buf_t *out, int32_t v) {
  char buf[12], *p = buf + sizeof buf;
  uint32_t u = v < 0 ? 0u - (uint32_t)v : (uint32_t)v;
  do *--p = (char)('0' + u % 10);
  while ((u /= 10) != 0);
  if (v < 0) *--p = '-';
  chr_buf_add(out, p, (size_t)(buf + sizeof buf - p));
}

void chr_job_to_json(const chr_job_t *j, chr_buf_t *out) {
  char tb[CHR_TIME_BUFSZ];
  int first = 1;
  chr_buf_addc(out, '{');
  for (int f = 0; f < CHR_F__COUNT; f++) {
    if (!chr_job_has(j, f)) continue;
    const chr_field_desc_t *d = &chr_job_fields[f];
    if (d->type == CHR_FT_TIME && *TIMEP(j, d) == CHR_TIME_NONE) continue;
    if ((d->type == CHR_FT_STR || d->type == CHR_FT_JSON) && *STRP(j, d) == NULL) continue;
    if (!first) chr_buf_addc(out, ',');
    first = 0;
    /* No printf: every store writes each record through here. */
    chr_buf_addc(out, '"');
    chr_buf_adds(out, d->name);
    chr_buf_add(out, "\":", 2);
    switch (d->type) {
    case CHR_FT_STR: chr_json_add_string(out, *STRP(j, d), strlen(*STRP(j, d))); break;
    case CHR_FT_JSON: chr_buf_adds(out, *STRP(j, d)); break;
    case CHR_FT_TIME:
      chr_time_format(*TIMEP(j, d), tb);
      chr_json_add_string(out, tb, strlen(tb));
      break;
    case CHR_FT_INT: add_int(out, *INTP(j, d)); break;
    case CHR_FT_ENUM:
      chr_buf_addc(out, '"');
      chr_buf_adds(out, d->enum_names[*ENUMP(j, d)]);
      chr_buf_addc(out, '"');
      break;
    }
  }
  if (j->extra) {
    const char *it = j->extra, *end = it + strlen(it);
    chr_json_span_t k, v;
    while (chr_json_next_member(&it, end, &k, &v) == 1) {
      if (!first) chr_buf_addc(out, ',');
      first = 0;
      chr_buf_addc(out, '"');
      chr_buf_add(out, k.p, k.n);
      chr_buf_add(out, "\":", 2);
      chr_buf_add(out, v.p, v.n);
    }
  }
  chr_buf_addc(out, '}');
}

/* Reads one typed field from JSON text; returns 1 when it belongs in extra. */
static int field_from_json(chr_job_t *j, int f, chr_json_span_t v, char *err, size_t errlen,
                           int *rc) {
  const chr_field_desc_t *d = &chr_job_fields[f];
  *rc = 0;
  if (chr_json_is_null(v)) return 0;
  switch (d->type) {
  case CHR_FT_JSON:
    if (v.p[0] != '{') return 1;
    free(*STRP(j, d));
    *STRP(j, d) = chr_strndup(v.p, v.n);
    break;
  case CHR_FT_INT: {
    char tmp[32];
    if (v.n >= sizeof tmp) return 1;
    memcpy(tmp, v.p, v.n);
    tmp[v.n] = '\0';
    char *e;
    long long x = strtoll(tmp, &e, 10);
    if (*e != '\0' || x < INT32_MIN || x > INT32_MAX) return 1;
    *INTP(j, d) = (int32_t)x;
    break;
  }
  default: {
    char *s = chr_json_unescape(v.p, v.n);
    if (s == NULL) {
      if (d->type == CHR_FT_TIME && v.p[0] != '"') { /* integer µs */
        /* Only an integer within the years an ISO string carries: one
         * past them could not be written back, and anything else (true,
         * 1.5, [1]) is not a time. */
        int isfloat;
        long long x = 0;
        double fl;
        if (chr__json_skip_number(v.p, v.p + v.n, &isfloat) != v.p + v.n || isfloat ||
            !chr__json_number(v.p, v.n, 0, &x, &fl) || x < CHR_TIME_MIN || x > CHR_TIME_MAX) {
          *rc = chr_errf(err, errlen,
                         "invalid field '%s': %.*s%s is not a time (an ISO string, or integer "
                         "microseconds from %s)",
                         d->name, (int)(v.n < 40 ? v.n : 40), v.p, v.n < 40 ? "" : "...",
                         CHR_TIME_RANGE);
          return 0;
        }
        *TIMEP(j, d) = x;
        break;
      }
      *rc = chr_errf(err, errlen, "invalid field '%s': expected a string", d->name);
      return 0;
    }
    if (d->type == CHR_FT_STR) {
      free(*STRP(j, d));
      *STRP(j, d) = s;
    } else if (d->type == CHR_FT_TIME) {
      char msg[200];
      if (chr_time_parse(s, strlen(s), NULL, TIMEP(j, d), msg, sizeof msg) != 0)
        *rc = chr_errf(err, errlen, "invalid field '%s': %s", d->name, msg);
      free(s);
      if (*rc) return 0;
    } else {
      int e = chr_enum_parse(d->enum_names, d->enum_count, s);
      if (e == 0) *rc = chr_errf(err, errlen, "invalid field '%s': unknown value '%s'", d->name, s);
      free(s);
      if (*rc) return 0;
      *ENUMP(j, d) = (uint8_t)e;
    }
  }
  }
  j->mask |= CHR_BIT(f);
  return 0;
}

/* The error for a record that is not JSON chronis reads, naming the job
 * (read already, or found by its key: this is only for the message) and
 * the member where reading stopped. */
static int malformed(const chr_job_t *j, const char *s, size_t len, chr_json_span_t k,
                     char *err, size_t errlen) {
  chr_buf_t b;
  chr_buf_init(&b);
  chr_buf_adds(&b, "invalid job record");
  const char *id = chr_job_has(j, CHR_F_JOB_ID) ? j->job_id : NULL;
  size_t idn = id ? strlen(id) : 0;
  if (id == NULL) {
    static const char key[] = "\"job_id\":\"";
    const char *at = memmem(s, len, key, sizeof key - 1);
    if (at) {
      id = at + sizeof key - 1;
      const char *q = memchr(id, '"', (size_t)(s + len - id));
      idn = q ? (size_t)(q - id) : 0;
    }
  }
  if (idn > 0) {
    chr_buf_adds(&b, " of job '");
    chr_job_add_shown(&b, id, idn);
    chr_buf_addc(&b, '\'');
  }
  if (k.p) {
    chr_buf_adds(&b, ": member '");
    chr_job_add_shown(&b, k.p, k.n);
    chr_buf_adds(&b, "' is not valid JSON");
  } else {
    chr_buf_adds(&b, ": malformed JSON");
  }
  chr_errf(err, errlen, "%s", b.p);
  chr_buf_free(&b);
  return CHR_EINVAL;
}

int chr_job_from_json(chr_job_t *j, const char *s, size_t len, char *err, size_t errlen) {
  unpack(j);
  const char *it = s, *end = s + len;
  chr_json_span_t k, v;
  chr_buf_t extra;
  int r, rc = 0;
  while (it < end && *it != '{') it++;
  chr_buf_init(&extra);
  chr_buf_addc(&extra, '{');
  for (;;) {
    k.p = NULL; /* set by next_member once it has read a key */
    if (rc != 0 || (r = chr_json_next_member(&it, end, &k, &v)) != 1) break;
    if (chr_job_is_derived(k.p, k.n)) continue;
    int f = chr_job_field_index(k.p, k.n);
    if (f < 0 || field_from_json(j, f, v, err, errlen, &rc)) {
      if (rc == 0 && !chr_json_is_null(v)) add_member(&extra, k, v);
    }
  }
  /* The scanner accepts exactly what the decoder decodes: a record read
   * here never loses a member later, when its fields are decoded. */
  if (rc == 0 && r < 0) rc = malformed(j, s, len, k, err, errlen);
  free(j->extra);
  j->extra = NULL;
  if (rc == 0 && extra.len > 1) {
    chr_buf_addc(&extra, '}');
    j->extra = chr_buf_steal(&extra);
  }
  chr_buf_free(&extra);
  return rc;
}

/* ---- validation ---- */

static int check_id(const char *id, char *err, size_t errlen) {
  size_t n = strlen(id);
  if (n == 0) return chr_errf(err, errlen, "invalid field 'job_id': must not be empty");
  if (n > 255)
    return chr_errf(err, errlen, "invalid field 'job_id': %zu bytes is longer than 255", n);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)id[i];
    if (c < 0x20 || c == 0x7f)
      return chr_errf(err, errlen, "invalid field 'job_id': control character at byte %zu",
                  i + 1);
  }
  return 0;
}

static int check_range(const chr_job_t *j, chr_field_t f, int32_t lo, int32_t hi, char *err,
                       size_t errlen) {
  if (!chr_job_has(j, f)) return 0;
  int32_t v = *INTP(j, &chr_job_fields[f]);
  if (v < lo || v > hi) {
    if (hi == INT32_MAX)
      return chr_errf(err, errlen, "invalid field '%s': %d must be >= %d", chr_job_fields[f].name,
                  (int)v, (int)lo);
    return chr_errf(err, errlen, "invalid field '%s': %d is out of range %d-%d",
                chr_job_fields[f].name, (int)v, (int)lo, (int)hi);
  }
  return 0;
}

/* Integer fields a job may carry in extra only when they did not fit: at
 * the scheduler level that is an error naming the field. */
static int check_extra_ints(const chr_job_t *j, char *err, size_t errlen) {
  static const chr_field_t ints[] = {CHR_F_MAX_RETRIES, CHR_F_RETRY_DELAY, CHR_F_TIMEOUT,
                                     CHR_F_PRIORITY, CHR_F_MISFIRE_THRESHOLD};
  chr_json_span_t v;
  for (size_t i = 0; i < sizeof ints / sizeof *ints; i++) {
    const char *n = chr_job_fields[ints[i]].name;
    if (find_member(j->extra, n, strlen(n), &v))
      return chr_errf(err, errlen, "invalid field '%s': %.*s is not a 32-bit integer", n,
                  (int)v.n, v.p);
  }
  return 0;
}

/* history_limit: how many of its runs the store keeps (docs/history.md). */
static int check_history_limit(const chr_job_t *j, char *err, size_t errlen) {
  chr_json_span_t v;
  if (!find_member(j->extra, "history_limit", 13, &v)) return 0;
  long long n = -1;
  double d;
  int isf = 1;
  const char *end = chr__json_skip_number(v.p, v.p + v.n, &isf);
  if (end != v.p + v.n || isf || !chr__json_number(v.p, v.n, 0, &n, &d) || n < 0 || n > 100000)
    return chr_errf(err, errlen, "invalid field 'history_limit': expected an integer 0..100000 "
                    "(runs kept), got %.*s", (int)(v.n > 40 ? 40 : v.n), v.p);
  return 0;
}

/* max_instances and overlap: members of extra, for recurring jobs (a
 * one-shot job has one run, which nothing can overlap). */
static int check_overlap(const chr_job_t *j, char *err, size_t errlen) {
  chr_json_span_t v;
  int recurring = j->trigger_type != CHR_TT_DATE;
  if (find_member(j->extra, "max_instances", 13, &v)) {
    long long n = 0;
    double d;
    int isf = 1;
    const char *end = chr__json_skip_number(v.p, v.p + v.n, &isf);
    if (end != v.p + v.n || isf || !chr__json_number(v.p, v.n, 0, &n, &d) || n < 1 ||
        n > CHR_MAX_INSTANCES)
      return chr_errf(err, errlen, "invalid field 'max_instances': expected an integer 1..%d, got "
                      "%.*s", CHR_MAX_INSTANCES, (int)(v.n > 40 ? 40 : v.n), v.p);
    if (!recurring && n != 1)
      return chr_errf(err, errlen, "invalid field 'max_instances': applies to interval and cron "
                      "jobs");
  }
  if (find_member(j->extra, "overlap", 7, &v)) {
    if (!(v.n == 7 && memcmp(v.p, "\"queue\"", 7) == 0) &&
        !(v.n == 6 && memcmp(v.p, "\"skip\"", 6) == 0))
      return chr_errf(err, errlen, "invalid field 'overlap': expected queue or skip, got %.*s",
                      (int)(v.n > 40 ? 40 : v.n), v.p);
    if (!recurring)
      return chr_errf(err, errlen, "invalid field 'overlap': applies to interval and cron jobs");
  }
  return 0;
}

/* on_exhausted: what a recurring job does once a run failed with no retry
 * left (docs/engine.md, "Failure policy"); absent means next. */
static int check_on_exhausted(const chr_job_t *j, char *err, size_t errlen) {
  static const char *const names[] = {"next", "fail", "pause"};
  chr_json_span_t v;
  if (!find_member(j->extra, "on_exhausted", 12, &v) || chr_json_is_null(v)) return 0;
  int ok = 0;
  for (size_t i = 0; i < sizeof names / sizeof *names && !ok; i++)
    ok = v.n == strlen(names[i]) + 2 && v.p[0] == '"' && memcmp(v.p + 1, names[i], v.n - 2) == 0;
  if (!ok)
    return chr_errf(err, errlen, "invalid field 'on_exhausted': expected next, fail or pause, "
                    "got %.*s", (int)(v.n > 40 ? 40 : v.n), v.p);
  if (j->trigger_type != CHR_TT_INTERVAL && j->trigger_type != CHR_TT_CRON)
    return chr_errf(err, errlen, "invalid field 'on_exhausted': applies to interval and cron "
                    "jobs");
  return 0;
}

/* queue: a name (chr_queue_name_problem); absent means "default". A name
 * has no character JSON escapes, so the text between the quotes is it. */
static int check_queue(const chr_job_t *j, char *err, size_t errlen) {
  chr_json_span_t v;
  if (!find_member(j->extra, "queue", 5, &v) || (v.n == 4 && memcmp(v.p, "null", 4) == 0))
    return 0;
  if (v.n < 2 || v.p[0] != '"')
    return chr_errf(err, errlen, "invalid field 'queue': expected a string (a queue name), got "
                    "%.*s", (int)(v.n > 40 ? 40 : v.n), v.p);
  const char *bad = chr_queue_name_problem(v.p + 1, v.n - 2);
  if (bad) return chr_errf(err, errlen, "invalid field 'queue': %s, got %.*s", bad,
                           (int)(v.n > 70 ? 70 : v.n), v.p);
  return 0;
}

int chr_job_validate(chr_job_t *j, char *err, size_t errlen) {
  int rc;
  if (!chr_job_has(j, CHR_F_FUNC_NAME) || j->func_name[0] == '\0')
    return chr_errf(err, errlen, "invalid field 'func_name': a handler name is required");
  if (!chr_job_has(j, CHR_F_JOB_ID))
    return chr_errf(err, errlen, "invalid field 'job_id': missing");
  if ((rc = check_id(j->job_id, err, errlen))) return rc;
  if ((rc = check_extra_ints(j, err, errlen))) return rc;
  if ((rc = check_history_limit(j, err, errlen))) return rc;
  if ((rc = check_queue(j, err, errlen))) return rc;
  if (!chr_job_has(j, CHR_F_NAME)) {
    char *n = chr_job_make_name(j->func_name);
    chr_job_set_str(j, CHR_F_NAME, n);
    free(n);
  }
  if (!chr_job_has(j, CHR_F_TIMEZONE)) chr_job_set_str(j, CHR_F_TIMEZONE, "UTC");
  char msg[200];
  if (chr_tz_get(j->timezone, msg, sizeof msg) == NULL)
    return chr_errf(err, errlen, "invalid field 'timezone': %s", msg);
  if (!chr_job_has(j, CHR_F_TRIGGER_TYPE))
    return chr_errf(err, errlen, "invalid field 'trigger_type': missing (interval, cron or date)");
  chr_trigger_t t;
  if ((rc = chr_trigger_compile(j, &t, err, errlen))) return rc;
  chr_trigger_free(&t);
  if ((rc = check_overlap(j, err, errlen))) return rc;
  if ((rc = check_on_exhausted(j, err, errlen))) return rc;
  if ((rc = check_range(j, CHR_F_PRIORITY, 0, 10, err, errlen))) return rc;
  if ((rc = check_range(j, CHR_F_MAX_RETRIES, 0, INT32_MAX, err, errlen))) return rc;
  if ((rc = check_range(j, CHR_F_RETRY_DELAY, 0, INT32_MAX, err, errlen))) return rc;
  if ((rc = check_range(j, CHR_F_RETRY_COUNT, 0, INT32_MAX, err, errlen))) return rc;
  if ((rc = check_range(j, CHR_F_TIMEOUT, 0, INT32_MAX, err, errlen))) return rc;
  if ((rc = check_range(j, CHR_F_MISFIRE_THRESHOLD, 0, INT32_MAX, err, errlen))) return rc;
  if (!chr_job_has(j, CHR_F_PRIORITY)) chr_job_set_int(j, CHR_F_PRIORITY, 5);
  if (!chr_job_has(j, CHR_F_MAX_RETRIES)) chr_job_set_int(j, CHR_F_MAX_RETRIES, 0);
  if (!chr_job_has(j, CHR_F_RETRY_DELAY)) chr_job_set_int(j, CHR_F_RETRY_DELAY, 60);
  if (!chr_job_has(j, CHR_F_RETRY_COUNT)) chr_job_set_int(j, CHR_F_RETRY_COUNT, 0);
  if (!chr_job_has(j, CHR_F_MISFIRE_THRESHOLD)) chr_job_set_int(j, CHR_F_MISFIRE_THRESHOLD, 60);
  if (!chr_job_has(j, CHR_F_IF_MISSED))
    chr_job_set_int(j, CHR_F_IF_MISSED,
                    j->trigger_type == CHR_TT_CRON ? CHR_MISS_SKIP : CHR_MISS_RUN_ONCE);
  return 0;
}

char *chr_job_make_id(const char *func_name, int64_t now) {
  static uint64_t state;
  chr_civil_t c;
  if (state == 0) state = (uint64_t)chr_time_now() ^ (uint64_t)chr_time_mono() << 17 ^
                          (uint64_t)(uintptr_t)&state;
  /* xorshift64*: ids only need to be unlikely to collide, not secret. */
  state ^= state >> 12;
  state ^= state << 25;
  state ^= state >> 27;
  uint32_t r = (uint32_t)((state * 2685821657736338717ULL) >> 32);
  chr_us_to_civil(now, &c);
  return chr_sprintf("%s_%04d%02d%02d_%02d%02d%02d_%08x", func_name, c.year, c.month, c.day,
                     c.hour, c.minute, c.second, r);
}

char *chr_job_make_name(const char *func_name) {
  char *n = chr_strdup(func_name);
  int start = 1;
  for (char *p = n; *p; p++) {
    if (*p == '_' || *p == '.' || *p == '-') {
      *p = ' ';
      start = 1;
    } else if (start) {
      if (*p >= 'a' && *p <= 'z') *p = (char)(*p - 'a' + 'A');
      start = 0;
    }
  }
  return n;
}

int chr_job_prepare(chr_job_t *j, int64_t now, char *err, size_t errlen) {
  if (!chr_job_has(j, CHR_F_JOB_ID) && chr_job_has(j, CHR_F_FUNC_NAME) && j->func_name[0]) {
    char *id = chr_job_make_id(j->func_name, now);
    chr_job_set_str(j, CHR_F_JOB_ID, id);
    free(id);
  }
  chr_trigger_t t;
  if (chr_job_validate(j, err, errlen) != 0 || chr_trigger_compile(j, &t, err, errlen) != 0)
    return CHR_EINVAL;
  if (!chr_job_has(j, CHR_F_NEXT_RUN_TIME))
    chr_job_set_time(j, CHR_F_NEXT_RUN_TIME, chr_trigger_first(&t, now));
  if (!chr_job_has(j, CHR_F_STATUS))
    chr_job_set_int(j, CHR_F_STATUS,
                    chr_job_has(j, CHR_F_NEXT_RUN_TIME) ? CHR_ST_SCHEDULED : CHR_ST_PENDING);
  if (!chr_job_has(j, CHR_F_CREATED_AT)) chr_job_set_time(j, CHR_F_CREATED_AT, now);
  chr_trigger_free(&t);
  return 0;
}
