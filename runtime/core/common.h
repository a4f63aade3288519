/* common.h - error codes, the time type and a growable byte buffer shared by
 * every unit of chronis. Times are int64 microseconds since the Unix epoch,
 * UTC; CHR_TIME_NONE stands for "no time" (a nil next_run_time). */
#ifndef CHR_COMMON_H
#define CHR_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define CHR_VERSION "0.1.0"

#define CHR_TIME_NONE INT64_MIN
#define CHR_USEC 1000000LL

/* Error codes: functions return 0 or one of these. Each has a stable name
 * used as err.code at the Lua boundary (chr_strerror). */
enum {
  CHR_OK = 0,
  CHR_EINVAL = -1,    /* "invalid" */
  CHR_EDUP = -2,      /* "duplicate" */
  CHR_ENOTFOUND = -3, /* "not_found" */
  CHR_EUNAVAIL = -4,  /* "unavailable" */
  CHR_ETIMEOUT = -5,  /* "timeout" */
  CHR_ECONFLICT = -6, /* "conflict" */
  CHR_ENOMEM = -7,    /* "memory" */
  CHR_ESTATE = -8,    /* "invalid_state" */
  CHR_ENOHANDLER = -9, /* "handler_not_found" */
  CHR_EHANDLER = -10,  /* "error": a handler raised */
  CHR_ELEASE = -11,    /* "lease_expired": runs kept being cut short */
  CHR_EINTR = -12,     /* "interrupted": a wait ended by SIGINT/SIGTERM */
  CHR_ENOTSUP = -13    /* "unsupported": the store lacks the operation */
};

const char *chr_strerror(int code);
/* The code of an error name ("duplicate" -> CHR_EDUP); 0 when unknown. */
int chr_errcode(const char *name);

/* A growable, always NUL-terminated byte buffer (sds-like, but a plain
 * struct so it can live on the stack). */
typedef struct chr_buf {
  char *p;
  size_t len, cap;
} chr_buf_t;

void chr_buf_init(chr_buf_t *b);
void chr_buf_free(chr_buf_t *b);
void chr_buf_reserve(chr_buf_t *b, size_t extra);
void chr_buf_add(chr_buf_t *b, const char *s, size_t n);
void chr_buf_adds(chr_buf_t *b, const char *s);
void chr_buf_addc(chr_buf_t *b, char c);
void chr_buf_printf(chr_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void chr_buf_vprintf(chr_buf_t *b, const char *fmt, va_list ap);
/* Hands the buffer's bytes to the caller (malloc'ed) and resets b. */
char *chr_buf_steal(chr_buf_t *b);

/* Allocation that aborts on out-of-memory: the C side never limps on. */
void *chr_malloc(size_t n);
void *chr_calloc(size_t n, size_t m);
void *chr_realloc(void *p, size_t n);
char *chr_strdup(const char *s);
char *chr_strndup(const char *s, size_t n);
/* Writes a message to err (when errlen > 0) and returns CHR_EINVAL: the
 * one-line way to refuse bad input with a message. */
int chr_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* malloc'ed printf. */
char *chr_sprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
