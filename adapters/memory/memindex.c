/* memindex.c - the memory store's metadata index (memindex.h).
 *
 * A path's groups are a red-black tree by value text; a group mirrors the
 * store's own trees for its jobs: one query-ordered tree per status, the
 * due jobs in claim order and the leased jobs in lease order. Per-status
 * trees rather than one tree ordered by status first give the same order
 * and let a tenant's count by status read counts instead of walking.
 * A group is freed with its last job, so values that come and go (one per
 * job, say) leave nothing behind. */
#include "memindex.h"

#include <stdlib.h>

#include "core/json.h"

struct chr_memidx_group {
  chr_rb_node_t node;
  char *text;
  size_t len;
  size_t count; /* jobs linked in */
  chr_rb_tree_t by_status[CHR_ST__COUNT];
  chr_rb_tree_t due, lease;
};

#define LINK_OF(node, member) CHR_CONTAINER_OF(node, chr_memidx_link_t, member)
#define GROUP_OF(n) CHR_CONTAINER_OF(n, chr_memidx_group_t, node)

/* ---- orders */

static int status_cmp(const chr_rb_node_t *a, const chr_rb_node_t *b) {
  return chr_memidx_cmp_query(LINK_OF(a, by_status)->job, LINK_OF(b, by_status)->job);
}

static int due_cmp(const chr_rb_node_t *a, const chr_rb_node_t *b) {
  return chr_memidx_cmp_due(LINK_OF(a, aux)->job, LINK_OF(b, aux)->job);
}

static int lease_cmp(const chr_rb_node_t *a, const chr_rb_node_t *b) {
  return chr_memidx_cmp_lease(LINK_OF(a, aux)->job, LINK_OF(b, aux)->job);
}

/* A next_run_time to seek to within a status tree (id NULL: before every
 * id), or a priority to seek past in a due tree. */
typedef struct seek {
  int64_t prio, t;
} seek_t;

static int status_keycmp(const void *key, const chr_rb_node_t *n) {
  const seek_t *k = key;
  int c = chr_memidx_cmp_nrt(k->t, chr_memidx_nrt(LINK_OF(n, by_status)->job));
  return c ? c : -1;
}

/* Sorts before the first job of priority k->prio (t is INT64_MIN). */
static int due_keycmp(const void *key, const chr_rb_node_t *n) {
  const seek_t *k = key;
  const chr_job_t *j = LINK_OF(n, aux)->job;
  int c = chr_memidx_cmp_i64(chr_job_priority(j), k->prio);
  if (c) return c;
  c = chr_memidx_cmp_i64(k->t, j->next_run_time);
  return c ? c : -1;
}

/* Value texts: bytes, then length. */
typedef struct vkey {
  const char *p;
  size_t n;
} vkey_t;

static int text_cmp(const char *a, size_t an, const char *b, size_t bn) {
  int c = memcmp(a, b, an < bn ? an : bn);
  return c ? c : (an > bn) - (an < bn);
}

static int group_cmp(const chr_rb_node_t *a, const chr_rb_node_t *b) {
  const chr_memidx_group_t *x = GROUP_OF(a), *y = GROUP_OF(b);
  return text_cmp(x->text, x->len, y->text, y->len);
}

static int group_keycmp(const void *key, const chr_rb_node_t *n) {
  const vkey_t *k = key;
  const chr_memidx_group_t *g = GROUP_OF(n);
  return text_cmp(k->p, k->n, g->text, g->len);
}

/* ---- the index */

void chr_memindex_init(chr_memindex_t *ix, char **paths) {
  size_t n = 0;
  memset(ix, 0, sizeof *ix);
  while (paths && paths[n]) n++;
  if (n > 0) ix->paths = chr_calloc(n, sizeof *ix->paths);
  for (size_t i = 0; i < n; i++) {
    chr_memidx_path_t *p = &ix->paths[i];
    char err[256];
    /* Plain paths (chr_meta_index_parse checked them) always split. */
    if (chr_meta_path_parse(paths[i], &p->keys, &p->nkeys, err, sizeof err) != 0) abort();
    p->path = paths[i];
    chr_rb_init(&p->groups, group_cmp);
  }
  ix->npaths = n;
  free(paths);
}

static void group_free(chr_memidx_group_t *g) {
  free(g->text);
  free(g);
}

void chr_memindex_free(chr_memindex_t *ix) {
  for (size_t i = 0; i < ix->npaths; i++) {
    chr_memidx_path_t *p = &ix->paths[i];
    chr_rb_node_t *n;
    /* The jobs went first (the store frees its records before this). */
    while ((n = chr_rb_first(&p->groups)) != NULL) {
      chr_rb_remove(&p->groups, n);
      group_free(GROUP_OF(n));
    }
    free(p->path);
    for (size_t k = 0; k < p->nkeys; k++) free(p->keys[k]);
    free(p->keys);
  }
  free(ix->paths);
  memset(ix, 0, sizeof *ix);
}

void chr_memindex_links_init(const chr_memindex_t *ix, chr_memidx_link_t *links, chr_job_t *job) {
  for (size_t i = 0; i < ix->npaths; i++) links[i].job = job;
}

/* The job's value at p, as chr_filter_match reads it: present and not
 * null. */
static int job_value(const chr_memidx_path_t *p, const chr_job_t *j, vkey_t *v) {
  chr_json_span_t meta, val;
  if (j->extra == NULL || !chr_json_lookup(j->extra, strlen(j->extra), "metadata", &meta))
    return 0;
  if (!chr_json_lookup_keys(meta.p, meta.n, p->keys, p->nkeys, &val) || chr_json_is_null(val))
    return 0;
  v->p = val.p;
  v->n = val.n;
  return 1;
}

static chr_memidx_group_t *group_find(const chr_memidx_path_t *p, const char *text, size_t len) {
  vkey_t k = {text, len};
  chr_rb_node_t *n = chr_rb_find(&p->groups, &k, group_keycmp);
  return n ? GROUP_OF(n) : NULL;
}

static chr_memidx_group_t *group_get(chr_memidx_path_t *p, const vkey_t *v) {
  chr_memidx_group_t *g = group_find(p, v->p, v->n);
  if (g != NULL) return g;
  g = chr_calloc(1, sizeof *g);
  g->text = chr_strndup(v->p, v->n);
  g->len = v->n;
  for (int s = 0; s < CHR_ST__COUNT; s++) chr_rb_init(&g->by_status[s], status_cmp);
  chr_rb_init(&g->due, due_cmp);
  chr_rb_init(&g->lease, lease_cmp);
  chr_rb_insert(&p->groups, &g->node);
  return g;
}

void chr_memindex_add(chr_memindex_t *ix, chr_memidx_link_t *links) {
  for (size_t i = 0; i < ix->npaths; i++) {
    chr_memidx_link_t *l = &links[i];
    vkey_t v;
    if (!job_value(&ix->paths[i], l->job, &v)) continue;
    chr_memidx_group_t *g = group_get(&ix->paths[i], &v);
    l->group = g;
    g->count++;
    chr_rb_insert(&g->by_status[l->job->status], &l->by_status);
    l->aux_in = (uint8_t)chr_memidx_aux_of(l->job);
    if (l->aux_in == CHR_MEMIDX_AUX_DUE) chr_rb_insert(&g->due, &l->aux);
    else if (l->aux_in == CHR_MEMIDX_AUX_LEASE) chr_rb_insert(&g->lease, &l->aux);
  }
}

void chr_memindex_remove(chr_memindex_t *ix, chr_memidx_link_t *links) {
  for (size_t i = 0; i < ix->npaths; i++) {
    chr_memidx_link_t *l = &links[i];
    chr_memidx_group_t *g = l->group;
    if (g == NULL) continue;
    chr_rb_remove(&g->by_status[l->job->status], &l->by_status);
    if (l->aux_in == CHR_MEMIDX_AUX_DUE) chr_rb_remove(&g->due, &l->aux);
    else if (l->aux_in == CHR_MEMIDX_AUX_LEASE) chr_rb_remove(&g->lease, &l->aux);
    l->aux_in = CHR_MEMIDX_AUX_NONE;
    l->group = NULL;
    if (--g->count == 0) {
      chr_rb_remove(&ix->paths[i].groups, &g->node);
      group_free(g);
    }
  }
}

/* ---- selecting groups */

static int same_keys(const chr_memidx_path_t *p, const chr_meta_filter_t *m) {
  if (p->nkeys != m->nkeys) return 0;
  for (size_t k = 0; k < p->nkeys; k++)
    if (strcmp(p->keys[k], m->keys[k]) != 0) return 0;
  return 1;
}

static int64_t group_count(const chr_memidx_group_t *g, uint32_t status_mask) {
  if (status_mask == 0) return (int64_t)g->count;
  int64_t n = 0;
  for (int s = 0; s < CHR_ST__COUNT; s++)
    if (status_mask & (1u << s)) n += (int64_t)g->by_status[s].count;
  return n;
}

int64_t chr_memidx_sel_count(const chr_memidx_sel_t *sel, uint32_t status_mask) {
  int64_t n = 0;
  for (size_t i = 0; i < sel->n; i++) n += group_count(sel->groups[i], status_mask);
  return n;
}

/* The distinct groups of m's values under p. */
static void sel_fill(chr_memidx_sel_t *sel, const chr_memidx_path_t *p, const chr_meta_filter_t *m) {
  sel->groups = chr_malloc((m->nvalues ? m->nvalues : 1) * sizeof *sel->groups);
  sel->n = 0;
  sel->cond = m;
  for (size_t v = 0; v < m->nvalues; v++) {
    chr_memidx_group_t *g = group_find(p, m->values[v], strlen(m->values[v]));
    size_t k = 0;
    while (g != NULL && k < sel->n && sel->groups[k] != g) k++;
    if (g != NULL && k == sel->n) sel->groups[sel->n++] = g;
  }
}

int chr_memindex_select(const chr_memindex_t *ix, const chr_filter_t *f, uint32_t status_mask,
                        chr_memidx_sel_t *sel) {
  int found = 0;
  int64_t best = 0;
  memset(sel, 0, sizeof *sel);
  if (f == NULL || ix->npaths == 0) return 0;
  for (size_t i = 0; i < f->nmeta; i++) {
    const chr_meta_filter_t *m = &f->meta[i];
    if (m->op != CHR_MF_EQ && m->op != CHR_MF_IN) continue;
    for (size_t p = 0; p < ix->npaths; p++) {
      if (!same_keys(&ix->paths[p], m)) continue;
      chr_memidx_sel_t cand;
      sel_fill(&cand, &ix->paths[p], m);
      int64_t n = chr_memidx_sel_count(&cand, status_mask);
      if (!found || n < best) {
        chr_memidx_sel_free(sel);
        *sel = cand;
        best = n;
        found = 1;
      } else {
        chr_memidx_sel_free(&cand);
      }
      break;
    }
  }
  return found;
}

void chr_memidx_sel_free(chr_memidx_sel_t *sel) {
  free(sel->groups);
  memset(sel, 0, sizeof *sel);
}

/* ---- query order */

static chr_rb_node_t *qcur_bound(const chr_memidx_qcur_t *c, chr_rb_node_t *n) {
  /* Nil sorts last and never satisfies a bound, so a bounded walk ends at
   * the first nil, as the store's own walk does. */
  if (n != NULL && c->bounded) {
    int64_t t = chr_memidx_nrt(LINK_OF(n, by_status)->job);
    if (t == CHR_TIME_NONE || (c->lte != CHR_TIME_NONE && t > c->lte)) return NULL;
  }
  return n;
}

void chr_memidx_qcur_init(chr_memidx_qcur_t *c, const chr_memidx_sel_t *sel,
                          const chr_filter_t *f) {
  uint32_t statuses = f ? f->status_mask : 0;
  seek_t key = {0, f ? f->nrt_gte : CHR_TIME_NONE};
  c->lte = f ? f->nrt_lte : CHR_TIME_NONE;
  c->bounded = c->lte != CHR_TIME_NONE || key.t != CHR_TIME_NONE;
  c->at = chr_malloc((sel->n * CHR_ST__COUNT + 1) * sizeof *c->at);
  c->n = 0;
  for (size_t i = 0; i < sel->n; i++)
    for (int s = 0; s < CHR_ST__COUNT; s++) {
      const chr_rb_tree_t *t = &sel->groups[i]->by_status[s];
      if (s == CHR_ST_NONE || (statuses != 0 && !(statuses & (1u << s))) || t->count == 0)
        continue;
      chr_rb_node_t *n = key.t != CHR_TIME_NONE ? chr_rb_lower_bound(t, &key, status_keycmp)
                                                : chr_rb_first(t);
      if ((n = qcur_bound(c, n)) != NULL) c->at[c->n++] = n;
    }
}

chr_job_t *chr_memidx_qcur_next(chr_memidx_qcur_t *c) {
  size_t best = 0;
  chr_job_t *r = NULL;
  for (size_t i = 0; i < c->n; i++) {
    chr_job_t *x = LINK_OF(c->at[i], by_status)->job;
    if (r == NULL || chr_memidx_cmp_query(x, r) < 0) {
      r = x;
      best = i;
    }
  }
  if (r == NULL) return NULL;
  chr_rb_node_t *n = qcur_bound(c, chr_rb_next(c->at[best]));
  if (n != NULL) c->at[best] = n;
  else c->at[best] = c->at[--c->n]; /* an exhausted cursor leaves */
  return r;
}

void chr_memidx_qcur_free(chr_memidx_qcur_t *c) {
  free(c->at);
  c->at = NULL;
  c->n = 0;
}

/* ---- scoped claims, recovery, next due time */

/* The first due job at or after n in claim order, seeking past each
 * priority whose earliest job is not due yet (as the store's claim does). */
static chr_rb_node_t *due_skip(const chr_rb_tree_t *t, chr_rb_node_t *n, int64_t now) {
  while (n != NULL && LINK_OF(n, aux)->job->next_run_time > now) {
    seek_t key = {(int64_t)chr_job_priority(LINK_OF(n, aux)->job) - 1, INT64_MIN};
    n = chr_rb_lower_bound(t, &key, due_keycmp);
  }
  return n;
}

static void push(chr_job_t ***out, size_t *n, size_t *cap, chr_job_t *j) {
  if (*n == *cap) {
    *cap = *cap ? *cap * 2 : 16;
    *out = chr_realloc(*out, *cap * sizeof **out);
  }
  (*out)[(*n)++] = j;
}

chr_job_t **chr_memidx_due(const chr_memidx_sel_t *sel, const chr_filter_t *scope, int64_t now,
                           int64_t limit, size_t *n) {
  chr_job_t **out = NULL;
  size_t k = 0, cap = 0, ncur = 0;
  chr_rb_node_t **at = chr_malloc((sel->n + 1) * sizeof *at);
  const chr_rb_tree_t **tree = chr_malloc((sel->n + 1) * sizeof *tree);
  for (size_t i = 0; i < sel->n; i++) {
    chr_rb_node_t *first = due_skip(&sel->groups[i]->due, chr_rb_first(&sel->groups[i]->due), now);
    if (first == NULL) continue;
    at[ncur] = first;
    tree[ncur++] = &sel->groups[i]->due;
  }
  while (ncur > 0 && (limit < 0 || (int64_t)k < limit)) {
    size_t best = 0;
    for (size_t i = 1; i < ncur; i++)
      if (chr_memidx_cmp_due(LINK_OF(at[i], aux)->job, LINK_OF(at[best], aux)->job) < 0) best = i;
    chr_job_t *j = LINK_OF(at[best], aux)->job;
    if (chr_filter_match(scope, j)) push(&out, &k, &cap, j);
    chr_rb_node_t *next = due_skip(tree[best], chr_rb_next(at[best]), now);
    if (next != NULL) {
      at[best] = next;
    } else {
      at[best] = at[--ncur];
      tree[best] = tree[ncur];
    }
  }
  free(at);
  free(tree);
  *n = k;
  return out;
}

chr_job_t **chr_memidx_expired(const chr_memidx_sel_t *sel, const chr_filter_t *scope,
                               int64_t now, size_t *n) {
  chr_job_t **out = NULL;
  size_t k = 0, cap = 0;
  for (size_t i = 0; i < sel->n; i++)
    for (chr_rb_node_t *l = chr_rb_first(&sel->groups[i]->lease); l != NULL; l = chr_rb_next(l)) {
      chr_job_t *j = LINK_OF(l, aux)->job;
      if (j->lease_until >= now) break;
      if (chr_filter_match(scope, j)) push(&out, &k, &cap, j);
    }
  *n = k;
  return out;
}

int64_t chr_memidx_next_due(const chr_memidx_sel_t *sel, const chr_filter_t *scope) {
  int64_t best = CHR_TIME_NONE;
  for (size_t i = 0; i < sel->n; i++) {
    const chr_rb_tree_t *t = &sel->groups[i]->by_status[CHR_ST_SCHEDULED];
    for (chr_rb_node_t *s = chr_rb_first(t); s != NULL; s = chr_rb_next(s)) {
      const chr_job_t *j = LINK_OF(s, by_status)->job;
      if (chr_memidx_cmp_nrt(chr_memidx_nrt(j), best) >= 0) break; /* no earlier one here */
      if (!chr_filter_match(scope, j)) continue;
      best = chr_memidx_nrt(j);
      break;
    }
  }
  return best;
}
