/* filter.c - the meaning of a filter (filter.h): metadata paths and
 * operators, and matching a job or a metadata object. */
#include "filter.h"

#include <stdlib.h>
#include <string.h>

#include "json.h"

const char *const chr_meta_op_names[] = {"$eq", "$ne", "$in", "$exists", "$exists"};

void chr_filter_init(chr_filter_t *f) {
  memset(f, 0, sizeof *f);
  f->nrt_lte = f->nrt_gte = f->upd_lte = f->upd_gte = CHR_TIME_NONE;
}

static void free_list(char **v, size_t n) {
  for (size_t i = 0; i < n; i++) free(v[i]);
  free(v);
}

static char **copy_list(char *const *v, size_t n) {
  char **out = chr_malloc((n ? n : 1) * sizeof *out);
  for (size_t i = 0; i < n; i++) out[i] = chr_strdup(v[i]);
  return out;
}

void chr_meta_filter_free(chr_meta_filter_t *m) {
  free(m->path);
  free_list(m->keys, m->nkeys);
  free_list(m->values, m->nvalues);
  memset(m, 0, sizeof *m);
}

void chr_filter_free(chr_filter_t *f) {
  for (size_t i = 0; i < f->nmeta; i++) chr_meta_filter_free(&f->meta[i]);
  free(f->meta);
  free_list(f->ids, f->nids);
  for (size_t i = 0; i < f->nown; i++) {
    free(f->own[i].key);
    free(f->own[i].value);
  }
  free(f->own);
  chr_filter_init(f);
}

static void copy_meta(chr_meta_filter_t *out, const chr_meta_filter_t *m) {
  out->path = chr_strdup(m->path);
  out->keys = copy_list(m->keys, m->nkeys);
  out->nkeys = m->nkeys;
  out->op = m->op;
  out->values = copy_list(m->values, m->nvalues);
  out->nvalues = m->nvalues;
  out->value = out->nvalues ? out->values[0] : NULL;
}

void chr_filter_add_scope(chr_filter_t *out, const chr_filter_t *scope) {
  if (scope == NULL) return;
  if (scope->nmeta) {
    out->meta = chr_realloc(out->meta, (out->nmeta + scope->nmeta) * sizeof *out->meta);
    for (size_t i = 0; i < scope->nmeta; i++) copy_meta(&out->meta[out->nmeta++], &scope->meta[i]);
  }
  if (scope->nown) {
    out->own = chr_realloc(out->own, (out->nown + scope->nown) * sizeof *out->own);
    for (size_t i = 0; i < scope->nown; i++, out->nown++) {
      out->own[out->nown].key = chr_strdup(scope->own[i].key);
      out->own[out->nown].value = chr_strdup(scope->own[i].value);
    }
  }
}

void chr_filter_copy(chr_filter_t *out, const chr_filter_t *f) {
  chr_filter_init(out);
  if (f == NULL) return;
  out->status_mask = f->status_mask;
  out->trigger_type = f->trigger_type;
  out->nrt_lte = f->nrt_lte;
  out->nrt_gte = f->nrt_gte;
  out->upd_lte = f->upd_lte;
  out->upd_gte = f->upd_gte;
  out->has_ids = f->has_ids;
  if (f->has_ids) {
    out->ids = copy_list(f->ids, f->nids);
    out->nids = f->nids;
  }
  chr_filter_add_scope(out, f);
}

int chr_filter_is_empty(const chr_filter_t *f) {
  return f == NULL || (f->status_mask == 0 && f->trigger_type == 0 &&
                       f->nrt_lte == CHR_TIME_NONE && f->nrt_gte == CHR_TIME_NONE &&
                       f->upd_lte == CHR_TIME_NONE && f->upd_gte == CHR_TIME_NONE &&
                       f->nmeta == 0 && !f->has_ids && f->nown == 0);
}

int chr_filter_is_scope(const chr_filter_t *f) {
  return f == NULL || (f->status_mask == 0 && f->trigger_type == 0 &&
                       f->nrt_lte == CHR_TIME_NONE && f->nrt_gte == CHR_TIME_NONE &&
                       f->upd_lte == CHR_TIME_NONE && f->upd_gte == CHR_TIME_NONE &&
                       !f->has_ids);
}

static int in_range(int64_t v, int64_t lte, int64_t gte) {
  if (lte == CHR_TIME_NONE && gte == CHR_TIME_NONE) return 1;
  if (v == CHR_TIME_NONE) return 0; /* nil never satisfies a bound */
  return (lte == CHR_TIME_NONE || v <= lte) && (gte == CHR_TIME_NONE || v >= gte);
}

int chr_meta_filter_match(const chr_meta_filter_t *m, const char *meta, size_t len) {
  chr_json_span_t v;
  int found = meta != NULL && chr_json_lookup_keys(meta, len, m->keys, m->nkeys, &v) &&
              !chr_json_is_null(v);
  switch (m->op) {
  case CHR_MF_ABSENT: return !found;
  case CHR_MF_PRESENT: return found;
  default: break;
  }
  int eq = 0;
  /* Canonical text on both sides: equal text is equal value. */
  for (size_t i = 0; found && !eq && i < m->nvalues; i++)
    eq = strlen(m->values[i]) == v.n && memcmp(m->values[i], v.p, v.n) == 0;
  return m->op == CHR_MF_NE ? !eq : eq;
}

int chr_filter_match(const chr_filter_t *f, const chr_job_t *j) {
  if (f == NULL) return 1;
  if (f->status_mask && !(f->status_mask & (1u << j->status))) return 0;
  if (f->trigger_type && (!chr_job_has(j, CHR_F_TRIGGER_TYPE) || j->trigger_type != f->trigger_type))
    return 0;
  int64_t nrt = chr_job_has(j, CHR_F_NEXT_RUN_TIME) ? j->next_run_time : CHR_TIME_NONE;
  int64_t upd = chr_job_has(j, CHR_F_UPDATED_AT) ? j->updated_at : CHR_TIME_NONE;
  if (!in_range(nrt, f->nrt_lte, f->nrt_gte)) return 0;
  if (!in_range(upd, f->upd_lte, f->upd_gte)) return 0;
  if (f->has_ids) {
    size_t i;
    for (i = 0; i < f->nids; i++)
      if (strcmp(f->ids[i], j->job_id) == 0) break;
    if (i == f->nids) return 0;
  }
  if (f->nmeta) {
    chr_json_span_t meta = {NULL, 0};
    if (j->extra == NULL || !chr_json_lookup(j->extra, strlen(j->extra), "metadata", &meta))
      meta.p = NULL;
    for (size_t i = 0; i < f->nmeta; i++)
      if (!chr_meta_filter_match(&f->meta[i], meta.p, meta.n)) return 0;
  }
  return 1;
}

int chr_meta_path_parse(const char *path, char ***keys, size_t *nkeys, char *err, size_t errlen) {
  chr_buf_t key;
  char **out = NULL;
  size_t n = 0;
  chr_buf_init(&key);
  for (const char *p = path;; p++) {
    if (*p == '\\' && (p[1] == '.' || p[1] == '\\')) {
      chr_buf_addc(&key, *++p);
      continue;
    }
    if (*p != '.' && *p != '\0') {
      chr_buf_addc(&key, *p);
      continue;
    }
    if (key.len == 0) {
      chr_buf_free(&key);
      free_list(out, n);
      return chr_errf(err, errlen, "metadata path '%s' has an empty key (write a dot inside "
                      "a key as \\.)", path);
    }
    out = chr_realloc(out, (n + 1) * sizeof *out);
    out[n++] = chr_buf_steal(&key);
    chr_buf_init(&key);
    if (*p == '\0') break;
  }
  chr_buf_free(&key);
  *keys = out;
  *nkeys = n;
  return 0;
}

int chr_meta_path_is_plain(const char *path) {
  int seg = 0;
  for (const char *p = path;; p++) {
    unsigned char c = (unsigned char)*p;
    if (c == '.' || c == '\0') {
      if (seg == 0) return 0;
      if (c == '\0') return 1;
      seg = 0;
    } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '-') {
      seg++;
    } else {
      return 0;
    }
  }
}

int chr_meta_filter_set(chr_meta_filter_t *m, const char *path, int op, char *const *values,
                        size_t nvalues, char *err, size_t errlen) {
  memset(m, 0, sizeof *m);
  if (chr_meta_path_parse(path, &m->keys, &m->nkeys, err, errlen) != 0) return CHR_EINVAL;
  m->path = chr_strdup(path);
  m->op = op;
  m->values = copy_list(values, nvalues);
  m->nvalues = nvalues;
  m->value = nvalues ? m->values[0] : NULL;
  return 0;
}

void chr_meta_index_free(char **paths) {
  for (size_t i = 0; paths && paths[i]; i++) free(paths[i]);
  free(paths);
}

int chr_meta_index_parse(const char *val, char ***paths, char *err, size_t errlen) {
  char **out = chr_calloc(1, sizeof *out);
  size_t n = 0;
  /* Every comma-separated piece is a path: an empty one ("", "a,", "a,,b")
   * is refused, not skipped, so that a typo does not drop an index. */
  for (const char *p = val; p != NULL;) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    char *path = chr_strndup(p, len);
    int dup = 0;
    for (size_t i = 0; i < n; i++) dup |= strcmp(out[i], path) == 0;
    if (!chr_meta_path_is_plain(path) || dup) {
      int rc = len == 0 ? chr_errf(err, errlen, "index_metadata: an empty path (in '%s')", val)
                        : chr_errf(err, errlen, "index_metadata: '%s' %s", path,
                        dup ? "is named twice"
                            : "is not a metadata path of letters, digits, '_' and '-' keys "
                              "separated by dots");
      free(path);
      chr_meta_index_free(out);
      return rc;
    }
    out = chr_realloc(out, (n + 2) * sizeof *out);
    out[n++] = path;
    out[n] = NULL;
    p = comma ? comma + 1 : NULL;
  }
  *paths = out;
  return 0;
}
