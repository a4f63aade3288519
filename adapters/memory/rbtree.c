/* rbtree.c - intrusive red-black tree with parent pointers (CLRS, with NULL
 * leaves counted black; deletion tracks the parent of the hole since the
 * hole itself may be NULL). */
#include "rbtree.h"

#include <stddef.h>

#define RB_RED 0u
#define RB_BLACK 1u

static inline chr_rb_node_t *rb_parent(const chr_rb_node_t *n) {
  return (chr_rb_node_t *)(n->parent_color & ~(uintptr_t)1);
}

static inline unsigned rb_color(const chr_rb_node_t *n) {
  return (unsigned)(n->parent_color & 1);
}

static inline int rb_is_black(const chr_rb_node_t *n) {
  return n == NULL || (n->parent_color & 1);
}

static inline int rb_is_red(const chr_rb_node_t *n) {
  return n != NULL && !(n->parent_color & 1);
}

static inline void rb_set_parent(chr_rb_node_t *n, chr_rb_node_t *p) {
  n->parent_color = (uintptr_t)p | (n->parent_color & 1);
}

static inline void rb_set_color(chr_rb_node_t *n, unsigned c) {
  n->parent_color = (n->parent_color & ~(uintptr_t)1) | c;
}

void chr_rb_init(chr_rb_tree_t *t, chr_rb_cmp cmp) {
  t->root = NULL;
  t->cmp = cmp;
  t->count = 0;
}

/* Puts v where u was below u's parent (v may be NULL). */
static void rb_replace_child(chr_rb_tree_t *t, chr_rb_node_t *u, chr_rb_node_t *v) {
  chr_rb_node_t *p = rb_parent(u);
  if (p == NULL)
    t->root = v;
  else if (p->left == u)
    p->left = v;
  else
    p->right = v;
  if (v != NULL) rb_set_parent(v, p);
}

/* Directions, so that each mirror-image case is written once: dir and !dir
 * are the two sides. */
#define RB_LEFT 0
#define RB_RIGHT 1

static inline chr_rb_node_t **rb_link(chr_rb_node_t *n, int dir) {
  return dir == RB_LEFT ? &n->left : &n->right;
}

static inline chr_rb_node_t *rb_child(const chr_rb_node_t *n, int dir) {
  return dir == RB_LEFT ? n->left : n->right;
}

/* Moves x down on side dir; its child on the other side takes its place. */
static void rb_rotate(chr_rb_tree_t *t, chr_rb_node_t *x, int dir) {
  chr_rb_node_t *y = rb_child(x, !dir);
  *rb_link(x, !dir) = rb_child(y, dir);
  if (rb_child(y, dir) != NULL) rb_set_parent(rb_child(y, dir), x);
  rb_replace_child(t, x, y);
  *rb_link(y, dir) = x;
  rb_set_parent(x, y);
}

static void rb_insert_fixup(chr_rb_tree_t *t, chr_rb_node_t *z) {
  chr_rb_node_t *p, *g, *y;
  while ((p = rb_parent(z)) != NULL && rb_is_red(p)) {
    g = rb_parent(p); /* p is red, so not the root */
    int dir = p == g->left ? RB_LEFT : RB_RIGHT; /* p's side of g */
    y = rb_child(g, !dir);
    if (rb_is_red(y)) {
      rb_set_color(p, RB_BLACK);
      rb_set_color(y, RB_BLACK);
      rb_set_color(g, RB_RED);
      z = g;
      continue;
    }
    if (z == rb_child(p, !dir)) {
      rb_rotate(t, p, dir);
      z = p;
      p = rb_parent(z);
    }
    rb_set_color(p, RB_BLACK);
    rb_set_color(g, RB_RED);
    rb_rotate(t, g, !dir);
  }
  rb_set_color(t->root, RB_BLACK);
}

chr_rb_node_t *chr_rb_insert(chr_rb_tree_t *t, chr_rb_node_t *n) {
  chr_rb_node_t **link = &t->root, *parent = NULL;
  while (*link != NULL) {
    int c;
    parent = *link;
    c = t->cmp(n, parent);
    if (c < 0)
      link = &parent->left;
    else if (c > 0)
      link = &parent->right;
    else
      return parent;
  }
  n->left = n->right = NULL;
  n->parent_color = (uintptr_t)parent | RB_RED;
  *link = n;
  rb_insert_fixup(t, n);
  t->count++;
  return NULL;
}

/* x (possibly NULL) below xp carries an extra black. */
static void rb_remove_fixup(chr_rb_tree_t *t, chr_rb_node_t *x, chr_rb_node_t *xp) {
  chr_rb_node_t *w;
  while (x != t->root && rb_is_black(x)) {
    int dir = x == xp->left ? RB_LEFT : RB_RIGHT; /* x's side of xp */
    w = rb_child(xp, !dir); /* non-NULL: its side has black height >= 1 */
    if (rb_is_red(w)) {
      rb_set_color(w, RB_BLACK);
      rb_set_color(xp, RB_RED);
      rb_rotate(t, xp, dir);
      w = rb_child(xp, !dir);
    }
    if (rb_is_black(w->left) && rb_is_black(w->right)) {
      rb_set_color(w, RB_RED);
      x = xp;
      xp = rb_parent(x);
    } else {
      if (rb_is_black(rb_child(w, !dir))) {
        rb_set_color(rb_child(w, dir), RB_BLACK);
        rb_set_color(w, RB_RED);
        rb_rotate(t, w, !dir);
        w = rb_child(xp, !dir);
      }
      rb_set_color(w, rb_color(xp));
      rb_set_color(xp, RB_BLACK);
      rb_set_color(rb_child(w, !dir), RB_BLACK);
      rb_rotate(t, xp, dir);
      x = t->root;
      xp = NULL;
    }
  }
  if (x != NULL) rb_set_color(x, RB_BLACK);
}

void chr_rb_remove(chr_rb_tree_t *t, chr_rb_node_t *z) {
  chr_rb_node_t *x, *xp, *y;
  unsigned removed_color = rb_color(z);
  if (z->left == NULL) {
    x = z->right;
    xp = rb_parent(z);
    rb_replace_child(t, z, x);
  } else if (z->right == NULL) {
    x = z->left;
    xp = rb_parent(z);
    rb_replace_child(t, z, x);
  } else {
    /* Two children: z's successor y takes z's place and colour; the hole
     * moves to where y was. */
    y = z->right;
    while (y->left != NULL) y = y->left;
    removed_color = rb_color(y);
    x = y->right;
    if (rb_parent(y) == z) {
      xp = y;
    } else {
      xp = rb_parent(y);
      rb_replace_child(t, y, x);
      y->right = z->right;
      rb_set_parent(y->right, y);
    }
    rb_replace_child(t, z, y);
    y->left = z->left;
    rb_set_parent(y->left, y);
    rb_set_color(y, rb_color(z));
  }
  if (removed_color == RB_BLACK) rb_remove_fixup(t, x, xp);
  z->parent_color = 0;
  z->left = z->right = NULL;
  t->count--;
}

/* The node furthest on side dir below n (n itself when it has none). */
static chr_rb_node_t *rb_extreme(const chr_rb_node_t *n, int dir) {
  while (rb_child(n, dir) != NULL) n = rb_child(n, dir);
  return (chr_rb_node_t *)n;
}

/* n's neighbour in order on side dir, or NULL. */
static chr_rb_node_t *rb_step(const chr_rb_node_t *n, int dir) {
  chr_rb_node_t *p;
  if (rb_child(n, dir) != NULL) return rb_extreme(rb_child(n, dir), !dir);
  while ((p = rb_parent(n)) != NULL && n == rb_child(p, dir)) n = p;
  return p;
}

chr_rb_node_t *chr_rb_first(const chr_rb_tree_t *t) {
  return t->root == NULL ? NULL : rb_extreme(t->root, RB_LEFT);
}

chr_rb_node_t *chr_rb_last(const chr_rb_tree_t *t) {
  return t->root == NULL ? NULL : rb_extreme(t->root, RB_RIGHT);
}

chr_rb_node_t *chr_rb_next(const chr_rb_node_t *n) { return rb_step(n, RB_RIGHT); }

chr_rb_node_t *chr_rb_prev(const chr_rb_node_t *n) { return rb_step(n, RB_LEFT); }

/* The first node after key (after != 0) or not before it. */
static chr_rb_node_t *rb_bound(const chr_rb_tree_t *t, const void *key, chr_rb_keycmp keycmp,
                               int after) {
  chr_rb_node_t *n = t->root, *res = NULL;
  while (n != NULL) {
    int c = keycmp(key, n);
    if (c < 0 || (c == 0 && !after)) {
      res = n;
      n = n->left;
    } else {
      n = n->right;
    }
  }
  return res;
}

chr_rb_node_t *chr_rb_lower_bound(const chr_rb_tree_t *t, const void *key,
                                  chr_rb_keycmp keycmp) {
  return rb_bound(t, key, keycmp, 0);
}

chr_rb_node_t *chr_rb_upper_bound(const chr_rb_tree_t *t, const void *key,
                                  chr_rb_keycmp keycmp) {
  return rb_bound(t, key, keycmp, 1);
}

chr_rb_node_t *chr_rb_find(const chr_rb_tree_t *t, const void *key,
                           chr_rb_keycmp keycmp) {
  chr_rb_node_t *n = t->root;
  while (n != NULL) {
    int c = keycmp(key, n);
    if (c == 0) return n;
    n = c < 0 ? n->left : n->right;
  }
  return NULL;
}

static int rb_check_node(const chr_rb_tree_t *t, const chr_rb_node_t *n,
                         const chr_rb_node_t *parent, size_t *count) {
  int lh, rh;
  if (n == NULL) return 1;
  if (rb_parent(n) != parent) return -1;
  if (rb_is_red(n) && (rb_is_red(n->left) || rb_is_red(n->right))) return -1;
  if (n->left != NULL && t->cmp(n->left, n) >= 0) return -1;
  if (n->right != NULL && t->cmp(n->right, n) <= 0) return -1;
  lh = rb_check_node(t, n->left, n, count);
  rh = rb_check_node(t, n->right, n, count);
  if (lh < 0 || rh < 0 || lh != rh) return -1;
  (*count)++;
  return lh + (rb_is_black(n) ? 1 : 0);
}

int chr_rb_check(const chr_rb_tree_t *t) {
  size_t count = 0;
  int h;
  const chr_rb_node_t *n, *prev = NULL;
  if (t->root != NULL && (rb_is_red(t->root) || rb_parent(t->root) != NULL)) return -1;
  h = rb_check_node(t, t->root, NULL, &count);
  if (h < 0 || count != t->count) return -1;
  /* The in-order walk must agree with the comparator, end to end. */
  for (n = chr_rb_first(t); n != NULL; n = chr_rb_next(n)) {
    if (prev != NULL && (t->cmp(prev, n) >= 0 || chr_rb_prev(n) != prev)) return -1;
    prev = n;
  }
  if (prev != chr_rb_last(t)) return -1;
  return h;
}
