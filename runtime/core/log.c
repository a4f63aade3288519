/* log.c - the process log (see log.h). */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "json.h"
#include "time.h"

const char *const chr_log_level_names[4] = {"debug", "info", "warn", "error"};

static int min_level = CHR_LOG_INFO;
static int as_json;

void chr_log_set_level(int level) {
  min_level = level;
}

int chr_log_get_level(void) {
  return min_level;
}

void chr_log_set_json(int json) {
  as_json = json;
}

int chr_log_parse_level(const char *s) {
  for (int i = 0; i < 4; i++)
    if (strcmp(s, chr_log_level_names[i]) == 0) return i;
  return -1;
}

void chr_log_write(int level, const char *job_id, const char *msg) {
  if (level < min_level) return;
  char ts[CHR_TIME_BUFSZ];
  chr_time_format(chr_time_now(), ts);
  chr_buf_t b;
  chr_buf_init(&b);
  if (as_json) {
    chr_buf_printf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":", ts, chr_log_level_names[level]);
    chr_json_add_string(&b, msg, strlen(msg));
    if (job_id) {
      chr_buf_adds(&b, ",\"job_id\":");
      chr_json_add_string(&b, job_id, strlen(job_id));
    }
    chr_buf_adds(&b, "}\n");
  } else {
    chr_buf_printf(&b, "%s %-5s %s%s%s\n", ts, chr_log_level_names[level], msg,
                   job_id ? " job_id=" : "", job_id ? job_id : "");
  }
  fwrite(b.p, 1, b.len, stderr);
  fflush(stderr);
  chr_buf_free(&b);
}

void chr_log(int level, const char *job_id, const char *fmt, ...) {
  if (level < min_level) return;
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  chr_log_write(level, job_id, msg);
}
