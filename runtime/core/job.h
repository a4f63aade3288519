/* job.h - the job record (docs/design.md): typed fields with a presence
 * mask, free-form fields (args, kwargs, metadata, unknown keys) kept as one
 * canonical JSON object text, conversion to and from JSON, partial records
 * for updates and CAS, and scheduler-level validation. Lua tables:
 * runtime/lua/job.h. */
#ifndef CHR_JOB_H
#define CHR_JOB_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef enum {
  CHR_ST_NONE = 0,
  CHR_ST_PENDING,
  CHR_ST_SCHEDULED,
  CHR_ST_RUNNING,
  CHR_ST_PAUSED,
  CHR_ST_FAILED,
  /* A one-shot job kept after its success (the scheduler's keep_completed):
   * last, so that the values before it keep their numbers. */
  CHR_ST_COMPLETED,
  CHR_ST__COUNT
} chr_status_t;

/* The statuses, for messages. */
#define CHR_STATUS_LIST "pending, scheduled, running, paused, failed or completed"

typedef enum {
  CHR_TT_NONE = 0,
  CHR_TT_INTERVAL,
  CHR_TT_CRON,
  CHR_TT_DATE,
  CHR_TT__COUNT
} chr_trigger_type_t;

typedef enum {
  CHR_MISS_NONE = 0,
  CHR_MISS_SKIP,
  CHR_MISS_RUN_ONCE,
  CHR_MISS_RUN_ALL,
  CHR_MISS__COUNT
} chr_if_missed_t;

/* Typed fields; the enum value is the field's bit in chr_job_t.mask. */
typedef enum {
  CHR_F_JOB_ID,
  CHR_F_NAME,
  CHR_F_TRIGGER_TYPE,
  CHR_F_TRIGGER_ARGS,
  CHR_F_TIMEZONE,
  CHR_F_FUNC_NAME,
  CHR_F_STATUS,
  CHR_F_NEXT_RUN_TIME,
  CHR_F_CREATED_AT,
  CHR_F_UPDATED_AT,
  CHR_F_MAX_RETRIES,
  CHR_F_RETRY_DELAY,
  CHR_F_RETRY_COUNT,
  CHR_F_TIMEOUT,
  CHR_F_PRIORITY,
  CHR_F_IF_MISSED,
  CHR_F_MISFIRE_THRESHOLD,
  CHR_F_LAST_RUN_TIME,
  CHR_F_LAST_SCHEDULED_TIME,
  CHR_F_CLAIMED_BY,
  CHR_F_LEASE_UNTIL,
  CHR_F_ATTEMPT,
  CHR_F__COUNT
} chr_field_t;

#define CHR_BIT(f) (1u << (f))

typedef struct chr_job {
  uint32_t mask; /* CHR_BIT(field) set when the field is present */
  /* Partial records only: fields given as null (chronis.json.null), which
   * clear the field when applied and expect it absent in a CAS. */
  uint32_t nullmask;
  uint8_t status, trigger_type, if_missed;
  /* Set by chr_job_dup_packed: the strings live in the record's own
   * allocation, after it. The chr_job_* writers unpack it first. */
  uint8_t packed;
  char *job_id, *name, *timezone, *func_name, *claimed_by;
  char *trigger_args; /* JSON object text */
  /* JSON object text of every other field (args, kwargs, metadata,
   * next_run_time_local, unknown keys), canonical; NULL when empty. A
   * partial record (updates) may hold members whose value is null: they
   * remove the member when applied. */
  char *extra;
  /* Set by a store that read this record but could not read all of it
   * (a record edited or corrupted in the backend): what was wrong, naming
   * the field; the field is left out. The engine fails such a job rather
   * than run it without the field. NULL normally. */
  char *unreadable;
  int64_t next_run_time, created_at, updated_at, last_run_time,
      last_scheduled_time, lease_until; /* µs, CHR_TIME_NONE when nil */
  int32_t max_retries, retry_delay, retry_count, timeout, priority,
      misfire_threshold, attempt;
} chr_job_t;

typedef enum { CHR_FT_STR, CHR_FT_TIME, CHR_FT_INT, CHR_FT_ENUM, CHR_FT_JSON } chr_ftype_t;

typedef struct chr_field_desc {
  const char *name;
  chr_ftype_t type;
  size_t offset;
  const char *const *enum_names; /* CHR_FT_ENUM: names by value, [0] unused */
  int enum_count;
} chr_field_desc_t;

extern const chr_field_desc_t chr_job_fields[CHR_F__COUNT];
extern const char *const chr_status_names[CHR_ST__COUNT];
extern const char *const chr_trigger_type_names[CHR_TT__COUNT];
extern const char *const chr_if_missed_names[CHR_MISS__COUNT];

/* Field lookup by name (-1 when not a typed field). */
int chr_job_field_index(const char *name, size_t len);
int chr_enum_parse(const char *const *names, int count, const char *s);

chr_job_t *chr_job_new(void);
void chr_job_free(chr_job_t *j);
chr_job_t *chr_job_dup(const chr_job_t *j);
/* The same copy in one allocation (see chr_job_t.packed), for a record
 * that is mostly read and then freed: a claimed job. */
chr_job_t *chr_job_dup_packed(const chr_job_t *j);
/* Frees the fields' storage and leaves an empty record (mask 0). */
void chr_job_clear(chr_job_t *j);

/* Sets a string field (copies s; NULL clears it). */
void chr_job_set_str(chr_job_t *j, chr_field_t f, const char *s);
/* Records the first reason why a stored record could not be read in full
 * (j->unreadable). */
void chr_job_set_unreadable(chr_job_t *j, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void chr_job_set_time(chr_job_t *j, chr_field_t f, int64_t us);
void chr_job_set_int(chr_job_t *j, chr_field_t f, int32_t v);
/* Value of an int field, or def when absent. */
int32_t chr_job_int(const chr_job_t *j, chr_field_t f, int32_t def);
static inline int chr_job_has(const chr_job_t *j, chr_field_t f) {
  return (j->mask & CHR_BIT(f)) != 0;
}
static inline int chr_job_priority(const chr_job_t *j) {
  return chr_job_has(j, CHR_F_PRIORITY) ? j->priority : 5;
}

/* Applies a partial record: every present field of u replaces j's; extra
 * members are merged by key (a null value removes the member). */
void chr_job_apply(chr_job_t *j, const chr_job_t *u);
/* 1 when every field present in `expected` has the same value in j
 * (absent in j counts as different; extra members compared by text). */
int chr_job_matches(const chr_job_t *j, const chr_job_t *expected);
/* The canonical JSON text of a member of extra (by dotted path), or 0. */
int chr_job_extra_lookup(const chr_job_t *j, const char *path, const char **val,
                         size_t *len);

/* Overlap (docs/engine.md, "Overlap"): how many runs of a recurring job
 * may go on at once (the member `max_instances`, 1..1000, default 1), and
 * what becomes of the slots that fall due while they do (`overlap`:
 * "queue", the default, or "skip"). */
#define CHR_MAX_INSTANCES 1000
int chr_job_max_instances(const chr_job_t *j);
int chr_job_overlap_skip(const chr_job_t *j);

/* Named queues (docs/queues.md): a job's queue is the string member
 * `queue` of its extra, "default" when it has none. Names are 1-64 bytes
 * of [A-Za-z0-9_.:-], so their JSON text is the name in quotes.
 * chr_job_queue_is: whether j is in queue `name`. */
#define CHR_QUEUE_DEFAULT "default"
int chr_job_queue_is(const chr_job_t *j, const char *name);
/* The queue's name (a pointer into j->extra, or CHR_QUEUE_DEFAULT) and its
 * length. */
const char *chr_job_queue(const chr_job_t *j, size_t *len);
/* What is wrong with a queue name, or NULL. */
const char *chr_queue_name_problem(const char *s, size_t n);

/* What is wrong with a string by the rule for the values a job holds
 * (valid UTF-8 without NUL bytes; runtime/lua/job.h), written into buf, or
 * NULL when nothing is. */
const char *chr_job_string_problem(const char *s, size_t n, char *buf, size_t buflen);
/* Appends s for a message: bytes that are not printable UTF-8 as \0 or
 * \xNN. */
void chr_job_add_shown(chr_buf_t *b, const char *s, size_t n);

/* next_run_time_local is derived from next_run_time and timezone: never
 * stored (it would go stale), computed whenever a job is handed out. */
#define CHR_JOB_DERIVED_LOCAL "next_run_time_local"
int chr_job_is_derived(const char *key, size_t len);

/* Internal, shared with runtime/lua/job.c. */
#define CHR__FIELD_PTR(j, d) ((char *)(j) + (d)->offset)
void chr__job_clear_field(chr_job_t *j, int f);

/* Full-record JSON: typed fields (times as ISO strings) and extra members in
 * one object. */
void chr_job_to_json(const chr_job_t *j, chr_buf_t *out);
int chr_job_from_json(chr_job_t *j, const char *s, size_t len, char *err, size_t errlen);

/* Scheduler-level validation and defaults (docs/design.md): fills defaults,
 * checks every field, names the field in err. Does not compute
 * next_run_time (see trigger.h). */
int chr_job_validate(chr_job_t *j, char *err, size_t errlen);
/* A new job as the scheduler creates it: an id made from its handler when
 * it has none, validation and defaults (chr_job_validate), its first
 * next_run_time from its trigger (when not given), its status (scheduled,
 * or pending without a next time) and created_at. Returns 0, or
 * CHR_EINVAL with a message naming the field. */
int chr_job_prepare(chr_job_t *j, int64_t now, char *err, size_t errlen);
/* "<func>_<YYYYmmdd_HHMMSS>_<8 hex>" */
char *chr_job_make_id(const char *func_name, int64_t now);
/* "send_email" -> "Send Email" */
char *chr_job_make_name(const char *func_name);

#endif
