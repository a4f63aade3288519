/* filter.h - what query_jobs, count_jobs and a scheduler's scope select
 * (docs/api.md, Filters): the filter of jobs (chr_filter_t), its metadata
 * conditions (chr_meta_filter_t, shared with the filter of runs in
 * history.h) and the one definition of what each matches. Every store
 * either translates a filter into its own query language or matches it
 * here; both must agree with chr_filter_match. */
#ifndef CHR_FILTER_H
#define CHR_FILTER_H

#include <stddef.h>
#include <stdint.h>

#include "job.h"

/* A metadata condition's operator. A value that is absent and one that is
 * JSON null are the same: absent. */
typedef enum {
  CHR_MF_EQ = 0, /* the value equals `value` */
  CHR_MF_NE,     /* it is absent or differs from `value` */
  CHR_MF_IN,     /* it equals one of `values` (none: matches nothing) */
  CHR_MF_ABSENT, /* it is absent */
  CHR_MF_PRESENT /* it is present */
} chr_meta_op_t;

extern const char *const chr_meta_op_names[]; /* "$eq", "$ne", "$in", ... */

typedef struct chr_meta_filter {
  /* The path as written after "metadata.": keys separated by dots, "\."
   * a dot inside a key and "\\" a backslash. */
  char *path;
  char **keys; /* the path's keys, unescaped */
  size_t nkeys;
  int op;      /* chr_meta_op_t */
  /* EQ, NE: the canonical JSON text of the value; IN: values[0] or NULL. */
  char *value;
  char **values; /* IN: canonical JSON texts (EQ, NE: the one value) */
  size_t nvalues;
} chr_meta_filter_t;

/* A filter key a store written in Lua declares as its own (the store's
 * `filter_keys`): passed to it as given, matched by it alone. */
typedef struct chr_own_filter {
  char *key;
  char *value; /* canonical JSON text */
} chr_own_filter_t;

typedef struct chr_filter {
  uint32_t status_mask; /* 1 << chr_status_t; 0 = any */
  int trigger_type;     /* 0 = any */
  int64_t nrt_lte, nrt_gte, upd_lte, upd_gte; /* CHR_TIME_NONE = unset */
  chr_meta_filter_t *meta;
  size_t nmeta;
  char **ids; /* job_id_in; has_ids with nids 0 matches nothing */
  size_t nids;
  int has_ids;
  chr_own_filter_t *own; /* the store's own keys */
  size_t nown;
} chr_filter_t;

void chr_filter_init(chr_filter_t *f);
void chr_filter_free(chr_filter_t *f);
/* A deep copy of f into out (initialised by it). */
void chr_filter_copy(chr_filter_t *out, const chr_filter_t *f);
/* Whether f matches j. The store's own keys are not judged here (the store
 * applied them): a filter of only those matches every job. */
int chr_filter_match(const chr_filter_t *f, const chr_job_t *j);
/* Whether f selects anything at all (NULL or no condition: 0). */
int chr_filter_is_empty(const chr_filter_t *f);
/* Whether f holds only metadata conditions and store-own keys, the
 * conditions a scope (a tenant-scoped scheduler) may have. */
int chr_filter_is_scope(const chr_filter_t *f);
/* The first filter key of f that a scope may not hold ("status",
 * "next_run_time_lte", ...), for the message that refuses it; NULL when
 * f is a scope. */
const char *chr_filter_scope_offender(const chr_filter_t *f);
/* Adds to out every condition of scope (metadata and own keys), copied. */
void chr_filter_add_scope(chr_filter_t *out, const chr_filter_t *scope);

/* Splits a metadata path into its keys (see chr_meta_filter_t.path).
 * Returns 0, or CHR_EINVAL with err saying what is wrong (an empty key). */
int chr_meta_path_parse(const char *path, char ***keys, size_t *nkeys, char *err, size_t errlen);
/* Whether a path is only keys of letters, digits, '_' and '-' separated
 * by dots: what a store can name in its own path syntax without quoting. */
int chr_meta_path_is_plain(const char *path);
/* An equality on a plain path: what a store's query language names
 * without quoting (other conditions it may leave to chr_filter_match). */
static inline int chr_meta_filter_is_plain_eq(const chr_meta_filter_t *m) {
  return m->op == CHR_MF_EQ && chr_meta_path_is_plain(m->path);
}
/* Fills m for path with operator op and the values (copied); returns 0 or
 * CHR_EINVAL (a bad path) with err. */
int chr_meta_filter_set(chr_meta_filter_t *m, const char *path, int op, char *const *values,
                        size_t nvalues, char *err, size_t errlen);
void chr_meta_filter_free(chr_meta_filter_t *m);

/* The store option index_metadata ("tenant_id,region"): the metadata
 * paths a store indexes, each plain (chr_meta_path_is_plain), once. Sets
 * *paths (NULL-terminated, chr_meta_index_free) and returns 0, or returns
 * CHR_EINVAL with err naming the path. */
int chr_meta_index_parse(const char *val, char ***paths, char *err, size_t errlen);
void chr_meta_index_free(char **paths);
/* Whether m matches a metadata object's JSON text (NULL: no metadata). */
int chr_meta_filter_match(const chr_meta_filter_t *m, const char *meta, size_t len);

#endif
