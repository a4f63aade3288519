/* suggest.c - "did you mean" and the message for unknown keys (see
 * suggest.h). */
#include "suggest.h"

#include <stdlib.h>
#include <string.h>

/* Names longer than this get no suggestion: no option is that long, and
 * the distance table stays on the stack. */
#define NAME_MAX_LEN 64

static int lower(int c) {
  return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

static int min3(int a, int b, int c) {
  int m = a < b ? a : b;
  return m < c ? m : c;
}

/* Edit distance between a and b (optimal string alignment: insertions,
 * deletions, substitutions and swaps of neighbours count one each), case
 * ignored. Both are at most NAME_MAX_LEN bytes. */
static int distance(const char *a, size_t na, const char *b, size_t nb) {
  int d[NAME_MAX_LEN + 1][NAME_MAX_LEN + 1];
  for (size_t i = 0; i <= na; i++) d[i][0] = (int)i;
  for (size_t j = 0; j <= nb; j++) d[0][j] = (int)j;
  for (size_t i = 1; i <= na; i++) {
    for (size_t j = 1; j <= nb; j++) {
      int cost = lower((unsigned char)a[i - 1]) != lower((unsigned char)b[j - 1]);
      d[i][j] = min3(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && lower((unsigned char)a[i - 1]) == lower((unsigned char)b[j - 2]) &&
          lower((unsigned char)a[i - 2]) == lower((unsigned char)b[j - 1]) &&
          d[i - 2][j - 2] + 1 < d[i][j])
        d[i][j] = d[i - 2][j - 2] + 1;
    }
  }
  return d[na][nb];
}

const char *chr_suggest(const char *word, const char *const *candidates) {
  size_t nw = strlen(word);
  if (nw == 0 || nw > NAME_MAX_LEN || candidates == NULL) return NULL;
  /* The longer the word, the more typos it may carry and still be told
   * apart from the other names. */
  int limit = nw <= 4 ? 1 : nw <= 8 ? 2 : 3;
  const char *best = NULL;
  int best_d = limit + 1;
  for (const char *const *c = candidates; *c; c++) {
    size_t nc = strlen(*c);
    if (nc > NAME_MAX_LEN) continue;
    int d = distance(word, nw, *c, nc);
    /* A candidate the word could become by rewriting most of it is no
     * typo of it ("db" is not a typo of "x"). */
    if (d < best_d && (size_t)d < nc) {
      best = *c;
      best_d = d;
    }
  }
  return best;
}

void chr_unknown_init(chr_unknown_t *u) {
  memset(u, 0, sizeof *u);
}

void chr_unknown_add(chr_unknown_t *u, const char *key, size_t len) {
  if (u->n == u->cap) {
    u->cap = u->cap ? u->cap * 2 : 4;
    u->keys = chr_realloc(u->keys, u->cap * sizeof *u->keys);
  }
  u->keys[u->n++] = chr_strndup(key, len);
}

void chr_unknown_free(chr_unknown_t *u) {
  for (size_t i = 0; i < u->n; i++) free(u->keys[i]);
  free(u->keys);
  memset(u, 0, sizeof *u);
}

static int cmp_keys(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void add_expected(chr_buf_t *out, const char *const *candidates, const char *expected) {
  if (expected != NULL) {
    chr_buf_adds(out, expected);
    return;
  }
  for (const char *const *c = candidates; c && *c; c++)
    chr_buf_printf(out, "%s%s", c == candidates ? "" : ", ", *c);
}

static int has_expected(const char *const *candidates, const char *expected) {
  return expected ? *expected != '\0' : candidates != NULL && *candidates != NULL;
}

size_t chr_unknown_format(const chr_unknown_t *u, const char *what,
                          const char *const *candidates, const char *expected, chr_buf_t *out) {
  if (u->n == 0) return 0;
  /* Sorted, so the message does not depend on a table's iteration order. */
  char **keys = chr_malloc(u->n * sizeof *keys);
  memcpy(keys, u->keys, u->n * sizeof *keys);
  qsort(keys, u->n, sizeof *keys, cmp_keys);
  if (u->n == 1) {
    const char *s = chr_suggest(keys[0], candidates);
    chr_buf_printf(out, "unknown %s '%s'", what, keys[0]);
    if (s) {
      chr_buf_printf(out, "; did you mean '%s'?", s);
    } else if (has_expected(candidates, expected)) {
      chr_buf_adds(out, " (expected ");
      add_expected(out, candidates, expected);
      chr_buf_addc(out, ')');
    }
    free(keys);
    return 1;
  }
  int unsuggested = 0;
  chr_buf_printf(out, "unknown %ss ", what);
  for (size_t i = 0; i < u->n; i++) {
    const char *s = chr_suggest(keys[i], candidates);
    chr_buf_printf(out, "%s'%s'", i == 0 ? "" : i + 1 == u->n ? " and " : ", ", keys[i]);
    if (s) chr_buf_printf(out, " (did you mean '%s'?)", s);
    else unsuggested = 1;
  }
  if (unsuggested && has_expected(candidates, expected)) {
    chr_buf_adds(out, "; expected ");
    add_expected(out, candidates, expected);
  }
  free(keys);
  return u->n;
}
