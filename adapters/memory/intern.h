/* intern.h - refcounted string interning: one copy of each distinct
 * string, shared by every holder. The memory store keeps the fields most
 * jobs share (handler name, job name, time zone) this way, which saves
 * about a third of a small job's footprint. */
#ifndef CHR_INTERN_H
#define CHR_INTERN_H

#include <stddef.h>
#include <stdint.h>

typedef struct chr_intern {
  struct chr_istr **slots;
  size_t cap, count; /* cap: a power of two, or 0 */
} chr_intern_t;

void chr_intern_init(chr_intern_t *t);
/* Frees the table; strings still referenced are freed too. */
void chr_intern_free(chr_intern_t *t);
/* The shared copy of s (a new reference). */
const char *chr_intern_get(chr_intern_t *t, const char *s);
/* Drops a reference taken by chr_intern_get. */
void chr_intern_put(chr_intern_t *t, const char *s);

#endif
