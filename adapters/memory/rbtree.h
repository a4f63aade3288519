/* rbtree.h - an intrusive red-black tree: callers embed chr_rb_node_t in
 * their own records and give the tree a comparator, so an ordered index
 * costs three words per record and no allocation. Used by the memory store
 * for its status, due and lease orders. */
#ifndef CHR_RBTREE_H
#define CHR_RBTREE_H

#include <stddef.h>
#include <stdint.h>

/* The parent pointer and the colour share a word (bit 0: 1 = black); nodes
 * are pointer-aligned, so the bit is free. */
typedef struct chr_rb_node {
  uintptr_t parent_color;
  struct chr_rb_node *left, *right;
} chr_rb_node_t;

/* Orders two nodes of the tree: < 0, 0, > 0. */
typedef int (*chr_rb_cmp)(const chr_rb_node_t *a, const chr_rb_node_t *b);
/* Orders a search key against a node: < 0 when key sorts before node. */
typedef int (*chr_rb_keycmp)(const void *key, const chr_rb_node_t *n);

typedef struct chr_rb_tree {
  chr_rb_node_t *root;
  chr_rb_cmp cmp;
  size_t count;
} chr_rb_tree_t;

#define CHR_CONTAINER_OF(ptr, type, member) \
  ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

void chr_rb_init(chr_rb_tree_t *t, chr_rb_cmp cmp);
/* Links n in; returns NULL, or the node that compares equal to n (and then
 * n is left unlinked). */
chr_rb_node_t *chr_rb_insert(chr_rb_tree_t *t, chr_rb_node_t *n);
/* n must be linked in t. */
void chr_rb_remove(chr_rb_tree_t *t, chr_rb_node_t *n);

chr_rb_node_t *chr_rb_first(const chr_rb_tree_t *t);
chr_rb_node_t *chr_rb_last(const chr_rb_tree_t *t);
chr_rb_node_t *chr_rb_next(const chr_rb_node_t *n);
chr_rb_node_t *chr_rb_prev(const chr_rb_node_t *n);

/* First node not before key (keycmp(key, n) <= 0), or NULL. */
chr_rb_node_t *chr_rb_lower_bound(const chr_rb_tree_t *t, const void *key,
                                  chr_rb_keycmp keycmp);
/* First node after key (keycmp(key, n) < 0), or NULL. */
chr_rb_node_t *chr_rb_upper_bound(const chr_rb_tree_t *t, const void *key,
                                  chr_rb_keycmp keycmp);
/* A node equal to key, or NULL. */
chr_rb_node_t *chr_rb_find(const chr_rb_tree_t *t, const void *key,
                           chr_rb_keycmp keycmp);

/* Checks the red-black invariants and the order (tests, debug builds):
 * returns the black height, or -1 when broken. */
int chr_rb_check(const chr_rb_tree_t *t);

#endif
