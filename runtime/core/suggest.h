/* suggest.h - "did you mean": the known name closest to a misspelt one,
 * and the one message that reports every unknown key of a call at once.
 * Every place that takes a table of options or fields (scheduler options,
 * job fields, builder config, filters, trigger arguments, store URL
 * options) and the host's command line word their refusals through here,
 * so a typo is answered the same way everywhere. */
#ifndef CHR_SUGGEST_H
#define CHR_SUGGEST_H

#include <stddef.h>

#include "common.h"

/* The candidate (NULL-terminated list) closest to word, when it is close
 * enough to be a likely typo of it: an edit distance, case ignored and a
 * swap of two neighbours counting one, of at most 1 for words of up to 4
 * bytes, 2 up to 8, 3 beyond. NULL when none is that close. */
const char *chr_suggest(const char *word, const char *const *candidates);

/* Unknown keys collected over one call, reported together. */
typedef struct chr_unknown {
  char **keys;
  size_t n, cap;
} chr_unknown_t;

void chr_unknown_init(chr_unknown_t *u);
void chr_unknown_add(chr_unknown_t *u, const char *key, size_t len);
void chr_unknown_free(chr_unknown_t *u);

/* Appends the message for the keys collected (nothing when there are
 * none) to out, the keys in byte order:
 *   unknown scheduler option 'max_worker'; did you mean 'max_workers'?
 *   unknown scheduler option 'x' (expected storage, lock, ...)
 *   unknown scheduler options 'max_worker' (did you mean 'max_workers'?)
 *     and 'x'; expected storage, lock, ...
 * `what` names one key ("scheduler option"; an "s" makes the plural).
 * `expected` is the list shown when a key has no suggestion: NULL shows
 * the candidates, "" nothing. Returns how many keys there were. */
size_t chr_unknown_format(const chr_unknown_t *u, const char *what,
                          const char *const *candidates, const char *expected, chr_buf_t *out);

#endif
