/* intern.c - refcounted string interning (see intern.h): an open-addressing
 * hash set with linear probing and backward-shift deletion. */
#include "intern.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

typedef struct chr_istr {
  uint32_t refs, hash;
  char s[];
} chr_istr_t;

#define ISTR_OF(p) ((chr_istr_t *)((char *)(p) - offsetof(chr_istr_t, s)))

static uint32_t hash_str(const char *s) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
  return h;
}

void chr_intern_init(chr_intern_t *t) {
  t->slots = NULL;
  t->cap = t->count = 0;
}

void chr_intern_free(chr_intern_t *t) {
  for (size_t i = 0; i < t->cap; i++) free(t->slots[i]);
  free(t->slots);
  chr_intern_init(t);
}

static void grow(chr_intern_t *t) {
  size_t cap = t->cap ? t->cap * 2 : 64;
  chr_istr_t **slots = chr_calloc(cap, sizeof *slots);
  for (size_t i = 0; i < t->cap; i++) {
    chr_istr_t *e = t->slots[i];
    if (e == NULL) continue;
    size_t j = e->hash & (cap - 1);
    while (slots[j]) j = (j + 1) & (cap - 1);
    slots[j] = e;
  }
  free(t->slots);
  t->slots = slots;
  t->cap = cap;
}

const char *chr_intern_get(chr_intern_t *t, const char *s) {
  if ((t->count + 1) * 4 > t->cap * 3) grow(t);
  uint32_t h = hash_str(s);
  size_t mask = t->cap - 1, i = h & mask;
  for (; t->slots[i]; i = (i + 1) & mask) {
    chr_istr_t *e = t->slots[i];
    if (e->hash == h && strcmp(e->s, s) == 0) {
      e->refs++;
      return e->s;
    }
  }
  size_t n = strlen(s);
  chr_istr_t *e = chr_malloc(sizeof *e + n + 1);
  e->refs = 1;
  e->hash = h;
  memcpy(e->s, s, n + 1);
  t->slots[i] = e;
  t->count++;
  return e->s;
}

void chr_intern_put(chr_intern_t *t, const char *s) {
  chr_istr_t *e = ISTR_OF(s);
  if (--e->refs > 0) return;
  size_t mask = t->cap - 1, i = e->hash & mask;
  while (t->slots[i] != e) i = (i + 1) & mask;
  free(e);
  t->slots[i] = NULL;
  t->count--;
  /* Backward-shift: move later entries of the run into the hole. */
  for (size_t j = (i + 1) & mask; t->slots[j]; j = (j + 1) & mask) {
    size_t home = t->slots[j]->hash & mask;
    if (i <= j ? (i < home && home <= j) : (i < home || home <= j)) continue;
    t->slots[i] = t->slots[j];
    t->slots[j] = NULL;
    i = j;
  }
}
