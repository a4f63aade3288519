/* fuzz.h - what the libFuzzer targets of fuzz/ share: a NUL-terminated
 * copy of the input, the split of an input into parts, the check that
 * stops a run on a broken invariant (libFuzzer then saves the input), and
 * the round trip of a job record through JSON. */
#ifndef CHR_FUZZ_H
#define CHR_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/job.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An invariant: a failure prints what broke, with its place, and aborts,
 * which libFuzzer reports as a crash with the input saved. */
#define FUZZ_CHECK(cond, ...)                                                    \
  do {                                                                           \
    if (!(cond)) {                                                               \
      fprintf(stderr, "%s:%d: invariant broken: %s: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                              \
      fputc('\n', stderr);                                                       \
      abort();                                                                   \
    }                                                                            \
  } while (0)

/* The input as a malloc'ed C string (NUL bytes inside stay: callers that
 * take a length see them, callers that take a string stop there). */
static inline char *fuzz_str(const uint8_t *data, size_t size) {
  char *s = malloc(size + 1);
  if (s == NULL) abort();
  memcpy(s, data, size);
  s[size] = '\0';
  return s;
}

/* The input as an exact-size heap copy, with no NUL after it: a parser
 * that reads past the length it was given is caught by AddressSanitizer. */
static inline char *fuzz_copy(const uint8_t *data, size_t size) {
  char *s = malloc(size ? size : 1);
  if (s == NULL) abort();
  if (size) memcpy(s, data, size);
  return s;
}

/* Takes the next byte of the input (0 when none is left). */
static inline uint8_t fuzz_byte(const uint8_t **data, size_t *size) {
  if (*size == 0) return 0;
  (*size)--;
  return *(*data)++;
}

/* A job record written as JSON reads back, and written again is the same
 * text: what a store keeps, it can give back. */
static inline void fuzz_check_job_roundtrip(const chr_job_t *j) {
  chr_buf_t a, b;
  char err[256];
  chr_buf_init(&a);
  chr_buf_init(&b);
  chr_job_to_json(j, &a);
  chr_job_t *k = chr_job_new();
  FUZZ_CHECK(chr_job_from_json(k, a.p, a.len, err, sizeof err) == 0, "'%s' does not read: %s",
             a.p, err);
  chr_job_to_json(k, &b);
  FUZZ_CHECK(a.len == b.len && memcmp(a.p, b.p, a.len) == 0, "'%s' reads back as '%s'", a.p,
             b.p);
  chr_job_free(k);
  chr_buf_free(&a);
  chr_buf_free(&b);
}

#endif
