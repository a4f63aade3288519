/* common.c - error names, the byte buffer and aborting allocators. */
#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *chr_strerror(int code) {
  switch (code) {
  case CHR_OK: return "ok";
  case CHR_EINVAL: return "invalid";
  case CHR_EDUP: return "duplicate";
  case CHR_ENOTFOUND: return "not_found";
  case CHR_EUNAVAIL: return "unavailable";
  case CHR_ETIMEOUT: return "timeout";
  case CHR_ECONFLICT: return "conflict";
  case CHR_ENOMEM: return "memory";
  case CHR_ESTATE: return "invalid_state";
  case CHR_ENOHANDLER: return "handler_not_found";
  case CHR_EHANDLER: return "error";
  case CHR_ELEASE: return "lease_expired";
  case CHR_EINTR: return "interrupted";
  case CHR_ENOTSUP: return "unsupported";
  }
  return "error";
}

int chr_errcode(const char *name) {
  for (int code = CHR_EINVAL; code >= CHR_ENOTSUP; code--)
    if (strcmp(chr_strerror(code), name) == 0) return code;
  return 0;
}

static void oom(void) {
  fputs("chronis: out of memory\n", stderr);
  abort();
}

void *chr_malloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (p == NULL) oom();
  return p;
}

void *chr_calloc(size_t n, size_t m) {
  void *p = calloc(n ? n : 1, m ? m : 1);
  if (p == NULL) oom();
  return p;
}

void *chr_realloc(void *p, size_t n) {
  p = realloc(p, n ? n : 1);
  if (p == NULL) oom();
  return p;
}

char *chr_strndup(const char *s, size_t n) {
  char *d = chr_malloc(n + 1);
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

char *chr_strdup(const char *s) {
  return s ? chr_strndup(s, strlen(s)) : NULL;
}

char *chr_sprintf(const char *fmt, ...) {
  chr_buf_t b;
  va_list ap;
  chr_buf_init(&b);
  va_start(ap, fmt);
  chr_buf_vprintf(&b, fmt, ap);
  va_end(ap);
  return chr_buf_steal(&b);
}

void chr_buf_init(chr_buf_t *b) {
  b->p = NULL;
  b->len = b->cap = 0;
}

void chr_buf_free(chr_buf_t *b) {
  free(b->p);
  chr_buf_init(b);
}

void chr_buf_reserve(chr_buf_t *b, size_t extra) {
  size_t need = b->len + extra + 1;
  if (need <= b->cap) return;
  size_t cap = b->cap ? b->cap * 2 : 64;
  while (cap < need) cap *= 2;
  b->p = chr_realloc(b->p, cap);
  b->cap = cap;
  /* Always NUL-terminated, from the first allocation on: a buffer that
   * only reserved room (an empty string unescaped) is an empty string. */
  b->p[b->len] = '\0';
}

void chr_buf_add(chr_buf_t *b, const char *s, size_t n) {
  chr_buf_reserve(b, n);
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

void chr_buf_adds(chr_buf_t *b, const char *s) {
  chr_buf_add(b, s, strlen(s));
}

void chr_buf_addc(chr_buf_t *b, char c) {
  chr_buf_reserve(b, 1);
  b->p[b->len++] = c;
  b->p[b->len] = '\0';
}

void chr_buf_vprintf(chr_buf_t *b, const char *fmt, va_list ap) {
  va_list again;
  va_copy(again, ap);
  chr_buf_reserve(b, 64);
  size_t room = b->cap - b->len;
  int n = vsnprintf(b->p + b->len, room, fmt, ap);
  if (n >= 0 && (size_t)n >= room) { /* did not fit: grow and write again */
    chr_buf_reserve(b, (size_t)n);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, again);
  }
  va_end(again);
  if (n > 0) b->len += (size_t)n;
  b->p[b->len] = '\0';
}

void chr_buf_printf(chr_buf_t *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  chr_buf_vprintf(b, fmt, ap);
  va_end(ap);
}

char *chr_buf_steal(chr_buf_t *b) {
  char *p = b->p;
  if (p == NULL) p = chr_strdup("");
  chr_buf_init(b);
  return p;
}

int chr_errf(char *err, size_t errlen, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return CHR_EINVAL;
}
