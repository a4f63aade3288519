/* log.h - the process log: levels, text or JSON-lines format, on stderr.
 * A line is a message and optional fields (job_id, handler, attempt, ...):
 * JSON lines carry them as members, text lines as key=value after the
 * message. Schedulers with their own Lua logger route around it
 * (engine.c, runtime/lua/scheduler.c). */
#ifndef CHR_LOG_H
#define CHR_LOG_H

#include <stddef.h>

enum { CHR_LOG_DEBUG, CHR_LOG_INFO, CHR_LOG_WARN, CHR_LOG_ERROR };

extern const char *const chr_log_level_names[4];

/* One field of a log line: a string value, or with `raw` set a JSON
 * literal (a number, true, false, an object or an array) written as it
 * is in both formats. */
typedef struct chr_log_field {
  const char *key;
  const char *value;
  int raw;
} chr_log_field_t;

void chr_log_set_level(int level);
int chr_log_get_level(void);
void chr_log_set_json(int json);
/* job_id may be NULL. */
void chr_log(int level, const char *job_id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void chr_log_write(int level, const char *job_id, const char *msg);
/* A line with n fields. In text lines, control characters of the message
 * and of the values are escaped (a newline shows as \n), so a line stays
 * one line; a field named ts, level or msg is written as _ts, _level,
 * _msg in JSON lines, which use those names themselves. */
void chr_log_fields(int level, const char *msg, const chr_log_field_t *fields, size_t n);
int chr_log_parse_level(const char *s);

#endif
