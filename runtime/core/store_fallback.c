/* store_fallback.c - the optional operations of the contract emulated over
 * the required ones, for adapters that lack them (typically Lua-written
 * ones): claim as query + lock + CAS per job, completion and lease work as
 * CAS per job, batch get and count over get and query. Each emulation is a
 * chain of sub-requests run one after another; the original request is
 * answered once, at the end. Slower than the adapter doing it in one round
 * trip, but just as safe: every state change is a CAS. Requests reach
 * here checked and normalised (chr_store_submit). */
#include <stdlib.h>
#include <string.h>

#include "store.h"

typedef struct emu emu_t;
typedef void (*emu_step)(emu_t *e);

struct emu {
  chr_store_t *s;
  chr_store_req_t *req; /* the caller's */
  chr_store_req_t sub;  /* the one sub-request in flight */
  emu_step next;        /* called when sub is answered */
  chr_job_t **cands;    /* candidates (claim, recover) */
  size_t ncands, i;
  chr_job_t *expected, *updates;
  chr_filter_t filter;
  chr_lock_req_t lreq;
  char *lock_key; /* "chronis:claim:<id>" while its lock is asked or held
                     (not lreq.priv, which the lock adapter owns) */
  int locked;
  chr_runrec_t **runs; /* complete: the runs of applied items (borrowed) */
  /* claim with queues: the jobs taken of each (req->queues), and the
   * queue of the candidate being claimed. */
  int64_t *qtaken;
  size_t qi;
  /* create_jobs: a sub-request is being sent / was answered meanwhile */
  int sending, answered;
};

static void emu_finish(emu_t *e) {
  chr_store_req_t *req = e->req;
  /* Every candidate: the ones examined were kept for their job_id, which
   * the sub-request borrowed (recover moves its own out and leaves NULL). */
  for (size_t i = 0; i < e->ncands; i++) chr_job_free(e->cands[i]);
  free(e->cands);
  free(e->lock_key);
  chr_job_free(e->expected);
  chr_job_free(e->updates);
  chr_filter_free(&e->filter);
  free(e->runs);
  free(e->qtaken);
  chr_store_req_reset(&e->sub);
  free(e);
  req->cb(req);
}

static void sub_cb(chr_store_req_t *sub) {
  emu_t *e = sub->data;
  e->next(e);
}

/* Sends e->sub (already filled) and continues at `next`. */
static void emu_send(emu_t *e, emu_step next) {
  e->next = next;
  e->sub.cb = sub_cb;
  e->sub.data = e;
  e->sub.store = e->s;
  int rc = e->s->vt->submit(e->s, &e->sub);
  if (rc != 0) {
    chr_store_req_fail(&e->sub, rc, "%s refused", chr_store_ops[e->sub.op].name);
    next(e);
  }
}

static void emu_sub(emu_t *e, chr_store_op_t op) {
  chr_store_req_reset(&e->sub);
  chr_store_req_init(&e->sub, op);
}

/* Moves a failed sub-request's error to the caller's request. */
static int emu_failed(emu_t *e) {
  if (e->sub.status == 0) return 0;
  chr_store_req_fail(e->req, e->sub.status, "%s", e->sub.errmsg ? e->sub.errmsg : "failed");
  return 1;
}

static chr_job_t *partial(void) {
  return chr_job_new();
}

/* Takes the jobs of the answered query as the candidates (claim, recover).
 * 0, or -1 when the query failed and the request is finished. */
static int take_candidates(emu_t *e) {
  if (emu_failed(e)) {
    emu_finish(e);
    return -1;
  }
  e->cands = e->sub.jobs;
  e->ncands = e->sub.njobs;
  e->sub.jobs = NULL;
  e->sub.njobs = 0;
  return 0;
}

/* ---- get_jobs_batch: one get per id ---- */

static void batch_step(emu_t *e) {
  if (e->i > 0) { /* the answer to ids[i - 1] */
    if (emu_failed(e)) {
      emu_finish(e);
      return;
    }
    if (e->sub.njobs) {
      chr_store_req_push_job(e->req, e->sub.jobs[0]);
      e->sub.njobs = 0;
    }
  }
  if (e->i >= e->req->nids) {
    emu_finish(e);
    return;
  }
  emu_sub(e, CHR_OP_GET);
  e->sub.id = e->req->ids[e->i++];
  emu_send(e, batch_step);
}

/* ---- create_jobs: one create_job per record ---- */

static void create_step(emu_t *e);

/* A store may answer inside submit: then the loop of create_step goes on,
 * so that a long batch does not nest one call per record. */
static void create_answered(emu_t *e) {
  if (e->sending) e->answered = 1;
  else create_step(e);
}

static void create_step(emu_t *e) {
  for (;;) {
    if (e->i > 0) { /* the answer to creates[i - 1] */
      if (e->sub.status == CHR_EDUP) {
        e->req->creates[e->i - 1].result = CHR_EDUP;
      } else if (emu_failed(e)) {
        emu_finish(e);
        return;
      } else {
        e->req->count++;
      }
    }
    if (e->i >= e->req->ncreates) {
      emu_finish(e);
      return;
    }
    emu_sub(e, CHR_OP_CREATE);
    e->sub.job = e->req->creates[e->i++].job;
    e->sending = 1;
    e->answered = 0;
    emu_send(e, create_answered);
    e->sending = 0;
    if (!e->answered) return; /* create_answered goes on later */
  }
}

/* ---- count, next_due: one query ---- */

static void count_done(emu_t *e) {
  if (!emu_failed(e)) e->req->count = (int64_t)e->sub.njobs;
  emu_finish(e);
}

static void next_due_done(emu_t *e) {
  if (!emu_failed(e)) {
    chr_job_t *j = e->sub.njobs ? e->sub.jobs[0] : NULL;
    e->req->count = j && chr_job_has(j, CHR_F_NEXT_RUN_TIME) ? j->next_run_time : CHR_TIME_NONE;
  }
  emu_finish(e);
}

/* ---- claim: query due jobs, then lock + CAS each ---- */

static void claim_next(emu_t *e);

static void drop_lock_key(emu_t *e) {
  free(e->lock_key);
  e->lock_key = NULL;
}

static void claim_unlocked(chr_lock_req_t *l) {
  emu_t *e = l->data;
  chr_lock_req_reset(l);
  drop_lock_key(e);
  claim_next(e);
}

/* Sends op on the per-job lock e->lock_key for the claim's owner; cb gets
 * the answer. Returns chr_lock_submit's result (non-zero: cb not called). */
static int claim_lock_submit(emu_t *e, chr_lock_op_t op, int64_t ttl_us, chr_lock_cb cb) {
  chr_lock_req_init(&e->lreq, op);
  e->lreq.key = e->lock_key;
  e->lreq.owner = e->req->owner;
  e->lreq.ttl_us = ttl_us;
  e->lreq.cb = cb;
  e->lreq.data = e;
  return chr_lock_submit(e->req->lock, &e->lreq);
}

/* Releases the per-job lock when one was taken, then goes on. */
static void claim_release(emu_t *e) {
  if (!e->locked) {
    claim_next(e);
    return;
  }
  e->locked = 0;
  /* The key is kept from the acquire. */
  if (claim_lock_submit(e, CHR_LOCK_RELEASE, 0, claim_unlocked) != 0) {
    drop_lock_key(e);
    claim_next(e);
  }
}

static void claim_cas_done(emu_t *e) {
  if (e->sub.status == 0 && e->sub.ok && e->sub.njobs) {
    chr_store_req_push_job(e->req, e->sub.jobs[0]);
    e->sub.njobs = 0;
    if (e->qtaken) e->qtaken[e->qi]++;
  }
  claim_release(e);
}

static void claim_cas(emu_t *e) {
  chr_job_t *j = e->cands[e->i - 1];
  chr_job_free(e->expected);
  chr_job_free(e->updates);
  e->expected = partial();
  chr_job_set_int(e->expected, CHR_F_STATUS, CHR_ST_SCHEDULED);
  chr_job_set_time(e->expected, CHR_F_NEXT_RUN_TIME, j->next_run_time);
  e->updates = partial();
  chr_job_set_int(e->updates, CHR_F_STATUS, CHR_ST_RUNNING);
  chr_job_set_str(e->updates, CHR_F_CLAIMED_BY, e->req->owner);
  chr_job_set_time(e->updates, CHR_F_LEASE_UNTIL, e->req->now + e->req->lease_us);
  emu_sub(e, CHR_OP_CAS);
  e->sub.id = j->job_id;
  e->sub.expected = e->expected;
  e->sub.job = e->updates;
  emu_send(e, claim_cas_done);
}

static void claim_locked(chr_lock_req_t *l) {
  emu_t *e = l->data;
  int ok = l->status == 0 && l->ok;
  chr_lock_req_reset(l);
  if (!ok) { /* another node is claiming this one */
    drop_lock_key(e);
    claim_next(e);
    return;
  }
  e->locked = 1;
  claim_cas(e);
}

/* The place of j's queue in req->queues when the claim may still take a
 * job of it, else -1 (not one of its queues, or that queue is full). */
static long queue_place(const emu_t *e, const chr_job_t *j) {
  for (size_t k = 0; k < e->req->nqueues; k++)
    if (chr_job_queue_is(j, e->req->queues[k].name))
      return e->qtaken[k] < e->req->queues[k].limit ? (long)k : -1;
  return -1;
}

static void claim_next(emu_t *e) {
  chr_job_t *j = NULL;
  while (!(e->req->limit >= 0 && (int64_t)e->req->njobs >= e->req->limit) && e->i < e->ncands) {
    chr_job_t *c = e->cands[e->i++];
    long k = e->qtaken ? queue_place(e, c) : 0;
    if (k >= 0) {
      e->qi = (size_t)k;
      j = c;
      break;
    }
  }
  if (j == NULL) {
    emu_finish(e);
    return;
  }
  if (e->req->lock == NULL) {
    claim_cas(e);
    return;
  }
  e->lock_key = chr_sprintf("chronis:claim:%s", j->job_id);
  if (claim_lock_submit(e, CHR_LOCK_ACQUIRE, 30 * CHR_USEC, claim_locked) != 0) {
    drop_lock_key(e);
    claim_cas(e);
  }
}

static void claim_queried(emu_t *e) {
  if (take_candidates(e) != 0) return;
  /* No candidates may mean no array at all, which qsort must not be
   * given. */
  if (e->ncands > 1) qsort(e->cands, e->ncands, sizeof *e->cands, chr_job_cmp_claim);
  claim_next(e);
}

/* ---- complete: CAS on claimed_by per item ---- */

static void complete_next(emu_t *e);

static void complete_deleted(emu_t *e) {
  chr_completion_t *c = &e->req->items[e->i - 1];
  c->result = e->sub.status == 0 && e->sub.ok ? 0 : CHR_ENOTFOUND;
  complete_next(e);
}

static void complete_cas_done(emu_t *e) {
  chr_completion_t *c = &e->req->items[e->i - 1];
  if (e->sub.status == CHR_ENOTFOUND) c->result = CHR_ENOTFOUND;
  else if (e->sub.status != 0 || !e->sub.ok) c->result = CHR_ECONFLICT;
  else c->result = 0;
  if (c->result == 0 && c->remove) {
    emu_sub(e, CHR_OP_DELETE);
    e->sub.id = c->job_id;
    emu_send(e, complete_deleted);
    return;
  }
  complete_next(e);
}

/* The completions are written; their runs were kept or not. A failure to
 * keep them does not undo the completions, which stand. */
static void complete_runs_done(emu_t *e) {
  emu_finish(e);
}

/* A store with history but no complete_jobs: the runs of the items that
 * applied, in one record_runs after the CASes. */
static void complete_record_runs(emu_t *e) {
  size_t n = 0;
  if (e->s->caps & CHR_STORE_CAP_HISTORY) {
    for (size_t i = 0; i < e->req->nitems; i++) {
      chr_completion_t *c = &e->req->items[i];
      if (c->result != 0 || c->run == NULL) continue;
      if (e->runs == NULL) e->runs = chr_malloc(e->req->nitems * sizeof *e->runs);
      e->runs[n++] = c->run;
    }
  }
  if (n == 0) {
    emu_finish(e);
    return;
  }
  emu_sub(e, CHR_OP_RECORD_RUNS);
  e->sub.runs = e->runs;
  e->sub.nruns = n;
  emu_send(e, complete_runs_done);
}

static void complete_next(emu_t *e) {
  if (e->i >= e->req->nitems) {
    complete_record_runs(e);
    return;
  }
  chr_completion_t *c = &e->req->items[e->i++];
  chr_job_free(e->expected);
  e->expected = partial();
  chr_job_set_str(e->expected, CHR_F_CLAIMED_BY, c->owner);
  emu_sub(e, CHR_OP_CAS);
  e->sub.id = c->job_id;
  e->sub.expected = e->expected;
  chr_job_free(e->updates);
  e->updates = c->remove || !c->updates ? partial() : NULL;
  e->sub.job = e->updates ? e->updates : c->updates;
  emu_send(e, complete_cas_done);
}

/* ---- recover and extend: CAS per job ---- */

static void recover_next(emu_t *e);

static void recover_cas_done(emu_t *e) {
  if (e->sub.status == 0 && e->sub.ok) e->req->count++;
  recover_next(e);
}

static void recover_next(emu_t *e) {
  while (e->i < e->ncands) {
    chr_job_t *j = e->cands[e->i];
    e->cands[e->i++] = NULL;
    int expired = chr_job_has(j, CHR_F_LEASE_UNTIL) && j->lease_until != CHR_TIME_NONE &&
                  j->lease_until < e->req->now;
    if (!expired) {
      chr_job_free(j);
      continue;
    }
    chr_job_free(e->expected);
    e->expected = partial();
    chr_job_set_int(e->expected, CHR_F_STATUS, CHR_ST_RUNNING);
    chr_job_set_time(e->expected, CHR_F_LEASE_UNTIL, j->lease_until);
    if (j->claimed_by) chr_job_set_str(e->expected, CHR_F_CLAIMED_BY, j->claimed_by);
    chr_job_free(e->updates);
    e->updates = partial();
    chr_job_set_int(e->updates, CHR_F_STATUS, CHR_ST_SCHEDULED);
    e->updates->nullmask |= CHR_BIT(CHR_F_CLAIMED_BY) | CHR_BIT(CHR_F_LEASE_UNTIL);
    /* The run that was cut short counts (see engine.c, lease_exhausted). */
    chr_job_set_int(e->updates, CHR_F_RETRY_COUNT, chr_job_int(j, CHR_F_RETRY_COUNT, 0) + 1);
    chr_job_set_int(e->updates, CHR_F_ATTEMPT, chr_job_int(j, CHR_F_ATTEMPT, 0) + 1);
    emu_sub(e, CHR_OP_CAS);
    /* The id must outlive the sub-request: expected owns a copy (its mask
     * bit stays off, so it is not compared). */
    e->sub.id = e->expected->job_id = chr_strdup(j->job_id);
    e->sub.expected = e->expected;
    e->sub.job = e->updates;
    chr_job_free(j);
    emu_send(e, recover_cas_done);
    return;
  }
  emu_finish(e);
}

static void recover_queried(emu_t *e) {
  if (take_candidates(e) == 0) recover_next(e);
}

static void extend_next(emu_t *e);

static void extend_cas_done(emu_t *e) {
  if (e->sub.status == 0 && e->sub.ok) e->req->count++;
  extend_next(e);
}

static void extend_next(emu_t *e) {
  if (e->i >= e->req->nids) {
    emu_finish(e);
    return;
  }
  if (e->expected == NULL) {
    e->expected = partial();
    chr_job_set_int(e->expected, CHR_F_STATUS, CHR_ST_RUNNING);
    chr_job_set_str(e->expected, CHR_F_CLAIMED_BY, e->req->owner);
    e->updates = partial();
    chr_job_set_time(e->updates, CHR_F_LEASE_UNTIL, e->req->now + e->req->lease_us);
  }
  emu_sub(e, CHR_OP_CAS);
  e->sub.id = e->req->ids[e->i++];
  e->sub.expected = e->expected;
  e->sub.job = e->updates;
  emu_send(e, extend_cas_done);
}

int chr__store_emulate(chr_store_t *s, chr_store_req_t *req) {
  emu_t *e = chr_calloc(1, sizeof *e);
  e->s = s;
  e->req = req;
  chr_filter_init(&e->filter);
  chr_store_req_init(&e->sub, CHR_OP_GET);
  switch (req->op) {
  case CHR_OP_GET_BATCH: batch_step(e); break;
  case CHR_OP_CREATE_MANY: create_step(e); break;
  case CHR_OP_COUNT:
    emu_sub(e, CHR_OP_QUERY);
    e->sub.filter = req->filter;
    emu_send(e, count_done);
    break;
  case CHR_OP_NEXT_DUE:
    e->filter.status_mask = 1u << CHR_ST_SCHEDULED;
    chr_filter_add_scope(&e->filter, req->filter);
    emu_sub(e, CHR_OP_QUERY);
    e->sub.filter = &e->filter;
    e->sub.limit = 1;
    emu_send(e, next_due_done);
    break;
  case CHR_OP_CLAIM:
    /* Fetch more than needed: candidates are re-ordered by priority, and
     * some will be lost to other nodes. */
    e->filter.status_mask = 1u << CHR_ST_SCHEDULED;
    e->filter.nrt_lte = req->now;
    chr_filter_add_scope(&e->filter, req->filter);
    emu_sub(e, CHR_OP_QUERY);
    e->sub.filter = &e->filter;
    e->sub.limit = req->limit >= 0 && req->limit < INT64_MAX / 4 ? req->limit * 4 : -1;
    /* A queue is no filter key: with queues, every due job is read and
     * those of other queues are passed over (claim_next), so that a
     * backlog of another queue cannot hide this claim's jobs. */
    if (req->nqueues > 0) {
      e->qtaken = chr_calloc(req->nqueues, sizeof *e->qtaken);
      e->sub.limit = -1;
    }
    emu_send(e, claim_queried);
    break;
  case CHR_OP_COMPLETE: complete_next(e); break;
  case CHR_OP_RECOVER:
    e->filter.status_mask = 1u << CHR_ST_RUNNING;
    chr_filter_add_scope(&e->filter, req->filter);
    emu_sub(e, CHR_OP_QUERY);
    e->sub.filter = &e->filter;
    emu_send(e, recover_queried);
    break;
  case CHR_OP_EXTEND: extend_next(e); break;
  case CHR_OP_RECORD_RUNS: /* a store without history keeps none */
    req->count = 0;
    emu_finish(e);
    break;
  case CHR_OP_QUERY_RUNS:
    chr_store_req_fail(req, CHR_ENOTSUP, "store '%s' keeps no run history (it has no query_runs)",
                       s->vt->kind);
    emu_finish(e);
    break;
  default:
    free(e);
    return CHR_EINVAL;
  }
  return 0;
}
