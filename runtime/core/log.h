/* log.h - the process log: levels, text or JSON-lines format, on stderr.
 * Schedulers with their own Lua logger route around it (engine.c). */
#ifndef CHR_LOG_H
#define CHR_LOG_H

enum { CHR_LOG_DEBUG, CHR_LOG_INFO, CHR_LOG_WARN, CHR_LOG_ERROR };

extern const char *const chr_log_level_names[4];

void chr_log_set_level(int level);
int chr_log_get_level(void);
void chr_log_set_json(int json);
/* job_id may be NULL. */
void chr_log(int level, const char *job_id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void chr_log_write(int level, const char *job_id, const char *msg);
int chr_log_parse_level(const char *s);

#endif
