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

/* Text with its control characters escaped: one log line stays one line
 * whatever a message holds (a multi-line error, a stray escape sequence).
 * In quotes, quotes and backslashes are escaped too. */
static void add_escaped(chr_buf_t *b, const char *s, int quoted) {
  static const char hex[] = "0123456789abcdef";
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    unsigned char c = *p;
    if (c == '\n') chr_buf_add(b, "\\n", 2);
    else if (c == '\r') chr_buf_add(b, "\\r", 2);
    else if (c == '\t') chr_buf_add(b, "\\t", 2);
    else if (c < 0x20 || c == 0x7f) {
      char x[4] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
      chr_buf_add(b, x, 4);
    } else if (quoted && (c == '"' || c == '\\')) {
      chr_buf_addc(b, '\\');
      chr_buf_addc(b, (char)c);
    } else {
      chr_buf_addc(b, (char)c);
    }
  }
}

/* A string value in a text line: bare when it reads back as one word. */
static void add_text_value(chr_buf_t *b, const char *v) {
  int bare = *v != '\0';
  for (const unsigned char *p = (const unsigned char *)v; *p && bare; p++)
    if (*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p == 0x7f) bare = 0;
  if (bare) {
    chr_buf_adds(b, v);
    return;
  }
  chr_buf_addc(b, '"');
  add_escaped(b, v, 1);
  chr_buf_addc(b, '"');
}

static int reserved(const char *key) {
  return strcmp(key, "ts") == 0 || strcmp(key, "level") == 0 || strcmp(key, "msg") == 0;
}

void chr_log_fields(int level, const char *msg, const chr_log_field_t *f, size_t n) {
  if (level < min_level) return;
  char ts[CHR_TIME_BUFSZ];
  chr_time_format(chr_time_now(), ts);
  chr_buf_t b;
  chr_buf_init(&b);
  if (as_json) {
    chr_buf_printf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":", ts, chr_log_level_names[level]);
    chr_json_add_string(&b, msg, strlen(msg));
    for (size_t i = 0; i < n; i++) {
      if (f[i].key == NULL || f[i].value == NULL) continue;
      chr_buf_addc(&b, ',');
      if (reserved(f[i].key)) {
        char k[16];
        snprintf(k, sizeof k, "_%s", f[i].key);
        chr_json_add_string(&b, k, strlen(k));
      } else {
        chr_json_add_string(&b, f[i].key, strlen(f[i].key));
      }
      chr_buf_addc(&b, ':');
      if (f[i].raw) chr_buf_adds(&b, f[i].value);
      else chr_json_add_string(&b, f[i].value, strlen(f[i].value));
    }
    chr_buf_adds(&b, "}\n");
  } else {
    chr_buf_printf(&b, "%s %-5s ", ts, chr_log_level_names[level]);
    add_escaped(&b, msg, 0);
    for (size_t i = 0; i < n; i++) {
      if (f[i].key == NULL || f[i].value == NULL) continue;
      chr_buf_addc(&b, ' ');
      add_escaped(&b, f[i].key, 0);
      chr_buf_addc(&b, '=');
      if (f[i].raw) add_escaped(&b, f[i].value, 0);
      else add_text_value(&b, f[i].value);
    }
    chr_buf_addc(&b, '\n');
  }
  fwrite(b.p, 1, b.len, stderr);
  fflush(stderr);
  chr_buf_free(&b);
}

void chr_log_write(int level, const char *job_id, const char *msg) {
  chr_log_field_t f = {"job_id", job_id, 0};
  chr_log_fields(level, msg, &f, job_id ? 1 : 0);
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
