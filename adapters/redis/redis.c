/* redis.c - the Redis store ("redis://[[user]:password@]host:port/db?
 * prefix=chronis"): jobs as hashes, indexes as sorted sets, every state
 * change one server-side script (redis_scripts.h), connections and
 * reconnection in redis_conn.c. docs/redis.md describes the key layout.
 *
 * A job is the hash {P}:job:<id> (P the prefix): each typed field under
 * its name in a storage text (times and integers as decimal µs / numbers,
 * enums by name, strings and trigger_args as they are), each member of
 * `extra` as x:<key> holding its canonical JSON text, and i:<path> for the
 * metadata values the job is indexed under. Nothing is ever re-encoded:
 * the scripts compare and merge texts the C side wrote, and the record is
 * put together again here (extra members in key order, as chr_json
 * writes them). Compare-and-swap compares the same storage texts, so times
 * compare as instants and extra members by canonical text, like
 * chr_job_matches.
 *
 * Run history (the history capability) lives beside the jobs: a hash of
 * job indexes, a hash of run texts and sets of runs by 10 ms of start
 * (redis_scripts.h, docs/redis.md); completions write their runs in the
 * same script call. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "redis_conn.h"
#include "redis_scripts.h"
#include "core/store.h"
#include "core/time.h"

/* claim_due_jobs, or a query page, without a limit: more jobs than any
 * store holds, and a number Redis's scripts print exactly. */
#define NO_LIMIT (1LL << 40)
/* Jobs per slice when a metadata index is built over existing jobs. */
#define REINDEX_SLICE 500
/* Entries a scoped claim, recovery or next due time looks at in one
 * script call at most (without per-value sets, the jobs of other scopes
 * are walked): no call holds Redis for long, the next goes on from where
 * the last stopped. */
#define SCOPE_WALK 1000
/* Jobs whose runs are pruned by age in one script call at most: pruning
 * stays a bounded cost of the write that does it. */
#define AGE_PRUNE_MAX 1000
/* Records per create_jobs script call: a batch as the scheduler sends
 * them (1,000) is one call; a longer list goes as several, pipelined, so
 * that no call holds Redis for long. */
#define CREATE_SLICE 1000

typedef struct rstore {
  chr_store_t base;
  chr_rconn_t *rc;
  char *tag; /* "{prefix}" */
  char *channel;
  char **reindex; /* index paths named in the options (NULL-terminated) */
  size_t nreindexed; /* of which built */
  int subscribed;
  chr_history_opts_t hist;
  int64_t age_pruned; /* wall µs of the last completion that pruned by age */
  /* The per-queue due sets (CHR_RS_QBUILD): known to be built, or being
   * built by this process. */
  int qbuilt, qbuilding;
} rstore_t;

/* ---- records: C -> hash fields */

#define FIELD_PTR(j, d) ((const char *)(j) + (d)->offset)

static int field_null(const chr_job_t *j, int f) {
  const chr_field_desc_t *d = &chr_job_fields[f];
  if (j->nullmask & CHR_BIT(f)) return 1;
  if (d->type == CHR_FT_STR || d->type == CHR_FT_JSON)
    return *(char *const *)FIELD_PTR(j, d) == NULL;
  if (d->type == CHR_FT_TIME) return *(const int64_t *)FIELD_PTR(j, d) == CHR_TIME_NONE;
  return 0;
}

/* The storage text of typed field f (num: scratch for numbers). */
static const char *field_text(const chr_job_t *j, int f, char num[32], size_t *n) {
  const chr_field_desc_t *d = &chr_job_fields[f];
  const char *s;
  switch (d->type) {
  case CHR_FT_STR:
  case CHR_FT_JSON: s = *(char *const *)FIELD_PTR(j, d); break;
  case CHR_FT_TIME:
    snprintf(num, 32, "%lld", (long long)*(const int64_t *)FIELD_PTR(j, d));
    s = num;
    break;
  case CHR_FT_INT:
    snprintf(num, 32, "%d", (int)*(const int32_t *)FIELD_PTR(j, d));
    s = num;
    break;
  default: s = d->enum_names[*(const uint8_t *)FIELD_PTR(j, d)]; break;
  }
  *n = strlen(s);
  return s;
}

static int span_null(chr_json_span_t v) {
  return v.n == 4 && memcmp(v.p, "null", 4) == 0;
}

static void arg_xkey(chr_rcmd_t *c, chr_json_span_t k) {
  char small[256];
  if (k.n + 2 <= sizeof small) {
    small[0] = 'x';
    small[1] = ':';
    memcpy(small + 2, k.p, k.n);
    chr_rcmd_arg(c, small, k.n + 2);
  } else {
    char *big = chr_malloc(k.n + 2);
    big[0] = 'x';
    big[1] = ':';
    memcpy(big + 2, k.p, k.n);
    chr_rcmd_arg(c, big, k.n + 2);
    free(big);
  }
}

/* Appends "nset, field, value..." then, with dels, "ndel, field...": the
 * fields a (partial) record sets and those it clears. updated_at is left
 * out (the store sets it) unless `stamp` (a CAS may expect it). */
static void add_fields(chr_rcmd_t *c, const chr_job_t *j, int dels, int stamp) {
  int nset = 0, ndel = 0;
  chr_json_span_t k, v;
  const char *it, *end = j->extra ? j->extra + strlen(j->extra) : NULL;
  for (int pass = 0; pass < (dels ? 3 : 2); pass++) {
    if (pass == 1) chr_rcmd_argi(c, nset);
    if (pass == 2) chr_rcmd_argi(c, ndel);
    for (int f = 0; f < CHR_F__COUNT; f++) {
      if ((f == CHR_F_UPDATED_AT && !stamp) || !((j->mask | j->nullmask) & CHR_BIT(f))) continue;
      int null = field_null(j, f);
      if (null && !dels) continue;
      if (pass == 0) {
        if (null) ndel++;
        else nset++;
      } else if (pass == 1 && !null) {
        char num[32];
        size_t n;
        const char *s = field_text(j, f, num, &n);
        chr_rcmd_args(c, chr_job_fields[f].name);
        chr_rcmd_arg(c, s, n);
      } else if (pass == 2 && null) {
        chr_rcmd_args(c, chr_job_fields[f].name);
      }
    }
    for (it = j->extra; it && chr_json_next_member(&it, end, &k, &v) == 1;) {
      int null = span_null(v);
      if (null && !dels) continue;
      if (pass == 0) {
        if (null) ndel++;
        else nset++;
      } else if (pass == 1 && !null) {
        arg_xkey(c, k);
        chr_rcmd_arg(c, v.p, v.n);
      } else if (pass == 2 && null) {
        arg_xkey(c, k);
      }
    }
  }
}

/* ---- records: hash fields -> C */

typedef struct member {
  chr_json_span_t k, v; /* the key first: chr_json_key_cmp */
} member_t;

/* Typed field by name: chr_job_field_index without a strlen per name. */
static int field_index(const char *s, size_t n) {
  static size_t lens[CHR_F__COUNT];
  if (lens[0] == 0)
    for (int f = 0; f < CHR_F__COUNT; f++) lens[f] = strlen(chr_job_fields[f].name);
  for (int f = 0; f < CHR_F__COUNT; f++)
    if (lens[f] == n && memcmp(chr_job_fields[f].name, s, n) == 0) return f;
  return -1;
}

/* A record from HGETALL's field/value array; NULL when empty. `id`, when
 * the caller knows which job it asked for, stands in for a missing job_id
 * (the record is then marked unreadable); without it such a hash is no
 * job (NULL). */
static chr_job_t *job_from_hash(const redisReply *r, const char *id) {
  member_t stack[32], *m = stack;
  size_t nm = 0, cap = 32;
  if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 2) return NULL;
  chr_job_t *j = chr_job_new();
  for (size_t i = 0; i + 1 < r->elements; i += 2) {
    const redisReply *fr = r->element[i], *vr = r->element[i + 1];
    if (fr->type != REDIS_REPLY_STRING || vr->type != REDIS_REPLY_STRING) continue;
    const char *f = fr->str, *v = vr->str;
    if (fr->len > 2 && f[1] == ':' && (f[0] == 'x' || f[0] == 'i')) {
      if (f[0] == 'i') continue;
      /* Text that is no JSON value (written by hand) would make the whole
       * free-form part unreadable: that member is left out, named. */
      if (chr_json_skip(v, v + vr->len) != v + vr->len) {
        chr_job_set_unreadable(j, "invalid field '%.*s': not JSON (%s)", (int)(fr->len - 2), f + 2,
                               vr->len ? "malformed, or nested too deep" : "empty");
        continue;
      }
      if (nm == cap) {
        member_t *bigger = chr_malloc(cap * 2 * sizeof *bigger);
        memcpy(bigger, m, nm * sizeof *m);
        if (m != stack) free(m);
        m = bigger;
        cap *= 2;
      }
      m[nm++] = (member_t){{f + 2, fr->len - 2}, {v, vr->len}};
      continue;
    }
    int fi = field_index(f, fr->len);
    if (fi < 0) continue;
    /* Fields chronis did not write (a hand edit) are left out, named in
     * j->unreadable, instead of being read as 0 or dropped silently. */
    const char *name = chr_job_fields[fi].name;
    char *end;
    switch (chr_job_fields[fi].type) {
    case CHR_FT_STR: chr_job_set_str(j, fi, v); break;
    case CHR_FT_JSON:
      if (v[0] == '{' && chr_json_skip(v, v + vr->len) == v + vr->len) chr_job_set_str(j, fi, v);
      else chr_job_set_unreadable(j, "invalid field '%s': not a JSON object", name);
      break;
    case CHR_FT_TIME: {
      errno = 0;
      long long t = strtoll(v, &end, 10);
      if (vr->len > 0 && *end == '\0' && errno == 0 && t >= CHR_TIME_MIN && t <= CHR_TIME_MAX)
        chr_job_set_time(j, fi, t);
      else chr_job_set_unreadable(j, "invalid field '%s': not a time in microseconds", name);
      break;
    }
    case CHR_FT_INT: {
      errno = 0;
      long n = strtol(v, &end, 10);
      if (vr->len > 0 && *end == '\0' && errno == 0 && n >= INT32_MIN && n <= INT32_MAX)
        chr_job_set_int(j, fi, (int32_t)n);
      else chr_job_set_unreadable(j, "invalid field '%s': not a 32-bit integer", name);
      break;
    }
    case CHR_FT_ENUM: {
      int e = chr_enum_parse(chr_job_fields[fi].enum_names, chr_job_fields[fi].enum_count, v);
      if (e) chr_job_set_int(j, fi, e);
      else chr_job_set_unreadable(j, "invalid field '%s': unknown value", name);
      break;
    }
    }
  }
  if (nm > 0) {
    chr_buf_t b;
    size_t total = 2;
    for (size_t i = 0; i < nm; i++) total += m[i].k.n + m[i].v.n + 4;
    qsort(m, nm, sizeof *m, chr_json_key_cmp);
    chr_buf_init(&b);
    chr_buf_reserve(&b, total);
    chr_buf_addc(&b, '{');
    for (size_t i = 0; i < nm; i++) {
      if (i) chr_buf_addc(&b, ',');
      chr_buf_addc(&b, '"');
      chr_buf_add(&b, m[i].k.p, m[i].k.n);
      chr_buf_add(&b, "\":", 2);
      chr_buf_add(&b, m[i].v.p, m[i].v.n);
    }
    chr_buf_addc(&b, '}');
    j->extra = chr_buf_steal(&b);
  }
  if (m != stack) free(m);
  if (!chr_job_has(j, CHR_F_JOB_ID)) {
    if (id == NULL) {
      chr_job_free(j);
      return NULL;
    }
    chr_job_set_str(j, CHR_F_JOB_ID, id);
    chr_job_set_unreadable(j, "invalid field 'job_id': missing");
  }
  if (!chr_job_has(j, CHR_F_STATUS)) chr_job_set_unreadable(j, "invalid field 'status': missing");
  return j;
}

static void push_records(chr_store_req_t *req, const redisReply *r, size_t from) {
  for (size_t i = from; r && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
    chr_job_t *j = job_from_hash(r->element[i], NULL);
    if (j) chr_store_req_push_job(req, j);
  }
}

static int64_t reply_int(const redisReply *r) {
  if (r == NULL) return 0;
  if (r->type == REDIS_REPLY_INTEGER) return r->integer;
  if (r->type == REDIS_REPLY_STRING) return strtoll(r->str, NULL, 10);
  return 0;
}

static const redisReply *elem(const redisReply *r, size_t i) {
  return r && r->type == REDIS_REPLY_ARRAY && i < r->elements ? r->element[i] : NULL;
}

/* A time from a reply string ('' or "inf": none). */
static int64_t reply_time(const redisReply *r) {
  if (r == NULL || r->type != REDIS_REPLY_STRING || r->len == 0 || r->str[0] == 'i')
    return CHR_TIME_NONE;
  return (int64_t)llround(strtod(r->str, NULL));
}

/* ---- requests */

static void answer(chr_store_req_t *req) {
  if (req->cb) req->cb(req);
}

/* Fails req for an error reply or a lost connection. */
static int failed(chr_store_req_t *req, redisReply *r, int status, const char *msg) {
  if (status != 0) {
    chr_store_req_fail(req, status, "%s: %s", chr_store_op_names[req->op], msg);
    return 1;
  }
  if (r != NULL && r->type == REDIS_REPLY_ERROR) {
    /* A job key of another type than a hash was not written by chronis:
     * that job's record is unreadable, which is no outage of the store. */
    if (req->id != NULL && strstr(r->str, "WRONGTYPE") != NULL)
      chr_store_req_fail(req, CHR_EINVAL, "%s: job '%s': its key holds no job hash (it was not "
                         "written by chronis; delete_job removes it): redis: %.*s",
                         chr_store_op_names[req->op], req->id, (int)r->len, r->str);
    else
      chr_store_req_fail(req, CHR_EUNAVAIL, "%s: redis: %.*s", chr_store_op_names[req->op],
                         (int)r->len, r->str);
    return 1;
  }
  return 0;
}

static void wake(rstore_t *rs, int64_t when) {
  if (!rs->base.closed && when != CHR_TIME_NONE) chr_store_wake(&rs->base, when);
}

static void wake_msg(void *data, const char *payload, size_t len) {
  rstore_t *rs = data;
  char tmp[32];
  if (payload == NULL) { /* (re)subscribed: hints may have been missed */
    wake(rs, chr_time_now());
    return;
  }
  if (len == 0 || len >= sizeof tmp) return;
  memcpy(tmp, payload, len);
  tmp[len] = '\0';
  wake(rs, strtoll(tmp, NULL, 10));
}

/* The engine's operations come from a scheduler: listen for wake-ups. */
static void want_wakeups(rstore_t *rs) {
  if (rs->subscribed) return;
  rs->subscribed = 1;
  chr_rconn_subscribe(rs->rc, rs->channel, wake_msg, rs);
}

/* Claimed jobs are read after the claim script, by HGETALL pipelined on
 * the same connection: reading them inside the script would cost Redis
 * twice as much (a Lua table per record, turned into a reply again). */
typedef struct claimed {
  rstore_t *rs;
  chr_store_req_t *req;
  chr_job_t **jobs;
  char **ids; /* the claimed ids, for records that lost theirs */
  size_t n, pending;
  int64_t hint;
} claimed_t;

static void claimed_cb(chr_rcmd_t *c, redisReply *r, int status, const char *msg) {
  claimed_t *cl = c->data;
  size_t i = (size_t)(uintptr_t)c->ctx_data;
  (void)msg;
  /* A job whose record cannot be read stays claimed by us until its lease
   * ends, then lease recovery hands it out again. */
  if (status == 0 && r->type == REDIS_REPLY_ARRAY) cl->jobs[i] = job_from_hash(r, cl->ids[i]);
  if (--cl->pending > 0) return;
  chr_store_req_t *req = cl->req;
  for (i = 0; i < cl->n; i++) {
    if (cl->jobs[i]) chr_store_req_push_job(req, cl->jobs[i]);
    free(cl->ids[i]);
  }
  rstore_t *rs = cl->rs;
  int64_t hint = cl->hint;
  free(cl->ids);
  free(cl->jobs);
  free(cl);
  answer(req);
  wake(rs, hint);
}

/* Reads the records of the n (> 0) claimed ids (taken over, malloc'ed),
 * then answers req and wakes for hint. */
static void fetch_claimed(rstore_t *rs, chr_store_req_t *req, char **ids, size_t n, int64_t hint) {
  claimed_t *cl = chr_calloc(1, sizeof *cl);
  chr_buf_t key;
  cl->rs = rs;
  cl->req = req;
  cl->n = cl->pending = n;
  cl->jobs = chr_calloc(cl->n, sizeof *cl->jobs);
  cl->ids = ids;
  cl->hint = hint;
  chr_buf_init(&key);
  chr_buf_printf(&key, "%s:job:", rs->tag);
  size_t base = key.len;
  for (size_t i = 0; i < cl->n; i++) {
    chr_rcmd_t *c = chr_rcmd_new(rs->rc, -1, claimed_cb, cl, CHR_RCMD_IDEMPOTENT);
    c->ctx_data = (void *)(uintptr_t)i;
    key.len = base;
    chr_buf_adds(&key, ids[i]);
    chr_rcmd_args(c, "HGETALL");
    chr_rcmd_arg(c, key.p, key.len);
    chr_rconn_send(c);
  }
  chr_buf_free(&key);
}

static char *reply_str(const redisReply *r) {
  if (r == NULL || r->type != REDIS_REPLY_STRING) return chr_strdup("");
  char *s = chr_malloc(r->len + 1);
  memcpy(s, r->str, r->len);
  s[r->len] = '\0';
  return s;
}

static void done_cb(chr_rcmd_t *c, redisReply *r, int status, const char *msg) {
  chr_store_req_t *req = c->data;
  rstore_t *rs = (rstore_t *)req->store;
  if (failed(req, r, status, msg)) {
    answer(req);
    return;
  }
  int64_t hint = CHR_TIME_NONE;
  switch (req->op) {
  case CHR_OP_CREATE:
    if (reply_int(elem(r, 0)) == 0) {
      chr_store_req_fail(req, CHR_EDUP, "job '%s' already exists", req->job->job_id);
    } else {
      chr_job_t *j = chr_job_dup(req->job);
      j->mask &= ~j->nullmask;
      j->nullmask = 0;
      chr_job_set_time(j, CHR_F_UPDATED_AT, reply_time(elem(r, 1)));
      chr_store_req_push_job(req, j);
    }
    break;
  case CHR_OP_GET: {
    chr_job_t *j = job_from_hash(r, req->id);
    if (j) chr_store_req_push_job(req, j);
    break;
  }
  case CHR_OP_GET_BATCH: push_records(req, r, 0); break;
  case CHR_OP_UPDATE:
  case CHR_OP_CAS: {
    int64_t rc = reply_int(elem(r, 0));
    if (rc == -1) {
      chr_store_req_fail(req, CHR_ENOTFOUND, "job '%s' not found", req->id);
    } else if (rc == 1) {
      chr_job_t *j = job_from_hash(elem(r, 1), req->id);
      req->ok = 1;
      if (j) chr_store_req_push_job(req, j);
    }
    break;
  }
  case CHR_OP_DELETE: req->ok = reply_int(r) == 1; break;
  case CHR_OP_CLAIM:
    if (r->type == REDIS_REPLY_ARRAY && r->elements > 2) {
      size_t n = r->elements - 2;
      char **ids = chr_calloc(n, sizeof *ids);
      for (size_t i = 0; i < n; i++) ids[i] = reply_str(r->element[i + 2]);
      fetch_claimed(rs, req, ids, n, reply_time(elem(r, 1)));
      return;
    }
    hint = reply_time(elem(r, 1));
    break;
  case CHR_OP_COMPLETE: {
    for (size_t i = 0; i < req->nitems; i++) {
      const redisReply *e = elem(r, i);
      const char *s = e && e->type == REDIS_REPLY_STRING ? e->str : "";
      req->items[i].result = strcmp(s, "ok") == 0          ? 0
                             : strcmp(s, "not_found") == 0 ? CHR_ENOTFOUND
                                                           : CHR_ECONFLICT;
    }
    /* The completions stand; their runs could not be written. */
    const redisReply *why = elem(r, req->nitems);
    if (why && why->type == REDIS_REPLY_STRING)
      chr_log(CHR_LOG_WARN, NULL, "redis: complete_jobs: %.*s", (int)why->len, why->str);
    break;
  }
  case CHR_OP_RECOVER:
    req->count = reply_int(elem(r, 0));
    hint = reply_time(elem(r, 1));
    break;
  case CHR_OP_EXTEND: req->count = reply_int(r); break;
  case CHR_OP_NEXT_DUE: req->count = reply_time(r); break;
  case CHR_OP_RECORD_RUNS: req->count = reply_int(r); break;
  default: break;
  }
  answer(req);
  /* After the answer: the engine re-arms its poll timer in its callback,
   * and this hint may only bring it forward. */
  wake(rs, hint);
}

static int jobs_by_order(chr_store_req_t *req) {
  /* No jobs is no array: qsort and memmove take none. */
  if (req->njobs > 1) qsort(req->jobs, req->njobs, sizeof *req->jobs, chr_job_cmp_query);
  return 0;
}

static int filter_paged(const chr_store_req_t *req) {
  const chr_filter_t *f = req->filter;
  if (f == NULL) return 1;
  return f->nmeta == 0 && !f->has_ids;
}

/* The most values of an $in that a query reads from the per-value sets. */
#define ONE_IN_MAX 16

/* Whether the only metadata condition is an equality, or an $in of at
 * most ONE_IN_MAX values, on a plain path (a tenant's): the script checks
 * it exactly when it reads the values' indexes, and may then page and
 * count there; it hands C every candidate when it cannot. A `null` value
 * also matches jobs without the key, which no index holds. */
static int filter_one(const chr_filter_t *f) {
  if (f == NULL || f->nmeta != 1 || f->has_ids || f->nown != 0) return 0;
  const chr_meta_filter_t *m = &f->meta[0];
  if (m->op != CHR_MF_EQ && m->op != CHR_MF_IN) return 0;
  if (!chr_meta_path_is_plain(m->path) || m->nvalues == 0 || m->nvalues > ONE_IN_MAX) return 0;
  for (size_t i = 0; i < m->nvalues; i++)
    if (strcmp(m->values[i], "null") == 0) return 0;
  return 1;
}

/* Query and count: the script narrows (and pages when it can), C applies
 * every filter exactly (chr_filter_match) and orders. */
static void query_cb(chr_rcmd_t *c, redisReply *r, int status, const char *msg) {
  chr_store_req_t *req = c->data;
  const chr_filter_t *f = req->filter;
  if (failed(req, r, status, msg)) {
    answer(req);
    return;
  }
  if (r->type == REDIS_REPLY_INTEGER) {
    req->count = r->integer;
    answer(req);
    return;
  }
  int paged = reply_int(elem(r, 0)) == 1;
  push_records(req, r, 1);
  size_t k = 0;
  for (size_t i = 0; i < req->njobs; i++) {
    if (f == NULL || chr_filter_match(f, req->jobs[i])) req->jobs[k++] = req->jobs[i];
    else chr_job_free(req->jobs[i]);
  }
  req->njobs = k;
  if (req->op == CHR_OP_COUNT) {
    req->count = (int64_t)req->njobs;
    for (size_t i = 0; i < req->njobs; i++) chr_job_free(req->jobs[i]);
    req->njobs = 0;
  } else if (!paged) {
    int64_t off = req->offset, lim = req->limit;
    jobs_by_order(req);
    size_t from = (size_t)(off < (int64_t)req->njobs ? off : (int64_t)req->njobs), to = req->njobs;
    if (lim >= 0 && from + (size_t)lim < to) to = from + (size_t)lim;
    for (size_t i = 0; i < from; i++) chr_job_free(req->jobs[i]);
    for (size_t i = to; i < req->njobs; i++) chr_job_free(req->jobs[i]);
    if (to > from) memmove(req->jobs, req->jobs + from, (to - from) * sizeof *req->jobs);
    req->njobs = to - from;
  }
  answer(req);
}

static void arg_time(chr_rcmd_t *c, int64_t t) {
  if (t == CHR_TIME_NONE) chr_rcmd_arg(c, "", 0);
  else chr_rcmd_argi(c, t);
}

static chr_rcmd_t *script(rstore_t *rs, int which, chr_store_req_t *req, int flags) {
  chr_rcmd_t *c = chr_rcmd_new(rs->rc, which, done_cb, req, flags);
  chr_rcmd_args(c, "1");
  chr_rcmd_args(c, rs->tag);
  return c;
}

/* "n, path, value..." of the equalities on plain paths, which the scripts
 * narrow by (an index, a member test); C applies every condition after. */
static void add_meta_eqs(chr_rcmd_t *c, const chr_meta_filter_t *meta, size_t nmeta) {
  long long n = 0;
  for (size_t i = 0; i < nmeta; i++) n += chr_meta_filter_is_plain_eq(&meta[i]);
  chr_rcmd_argi(c, n);
  for (size_t i = 0; i < nmeta; i++) {
    if (!chr_meta_filter_is_plain_eq(&meta[i])) continue;
    chr_rcmd_args(c, meta[i].path);
    chr_rcmd_args(c, meta[i].value);
  }
}

static void submit_query(rstore_t *rs, chr_store_req_t *req) {
  const chr_filter_t *f = req->filter;
  int count = req->op == CHR_OP_COUNT;
  int one = filter_one(f);
  int incount = count && (f == NULL || f->nmeta == 0 || one);
  chr_rcmd_t *c = script(rs, CHR_RS_QUERY, req, CHR_RCMD_IDEMPOTENT);
  chr_buf_t sts;
  c->cb = query_cb;
  chr_rcmd_args(c, incount ? "c" : "q");
  /* The script's numbers are doubles, printed back to Redis with 14
   * digits: a page past NO_LIMIT is as good as no limit (or as empty). */
  int64_t off = req->offset, lim = req->limit;
  chr_rcmd_argi(c, !count ? (off < NO_LIMIT ? off : NO_LIMIT) : 0);
  chr_rcmd_argi(c, !count && lim >= 0 && lim < NO_LIMIT ? lim : -1);
  chr_rcmd_args(c, !count && (filter_paged(req) || one) ? "1" : "0");
  chr_rcmd_args(c, one ? "1" : "0");
  chr_buf_init(&sts);
  for (int st = 1; f && st < CHR_ST__COUNT; st++)
    if (f->status_mask & (1u << st)) chr_buf_printf(&sts, "%s%s", sts.len ? " " : "", chr_status_names[st]);
  chr_rcmd_arg(c, sts.p ? sts.p : "", sts.len);
  chr_buf_free(&sts);
  chr_rcmd_args(c, f && f->trigger_type ? chr_trigger_type_names[f->trigger_type] : "");
  arg_time(c, f ? f->nrt_gte : CHR_TIME_NONE);
  arg_time(c, f ? f->nrt_lte : CHR_TIME_NONE);
  arg_time(c, f ? f->upd_gte : CHR_TIME_NONE);
  arg_time(c, f ? f->upd_lte : CHR_TIME_NONE);
  chr_rcmd_argi(c, f && f->has_ids ? (long long)f->nids : 0);
  for (size_t i = 0; f && f->has_ids && i < f->nids; i++) chr_rcmd_args(c, f->ids[i]);
  if (one) {
    /* The values of the one condition, each with its path. */
    const chr_meta_filter_t *m = &f->meta[0];
    chr_rcmd_argi(c, (long long)m->nvalues);
    for (size_t i = 0; i < m->nvalues; i++) {
      chr_rcmd_args(c, m->path);
      chr_rcmd_args(c, m->values[i]);
    }
  } else {
    add_meta_eqs(c, f ? f->meta : NULL, f ? f->nmeta : 0);
  }
  chr_rconn_send(c);
}

/* A partial record: "n, field, text..." of the fields it gives, then "n,
 * field..." of those it gives as null (updates clear them, a CAS expects
 * them absent); "0", "0" for none. updated_at goes in only with `stamp`
 * (a CAS may expect it; the store sets it on writes). */
static void add_partial(chr_rcmd_t *c, const chr_job_t *j, int stamp) {
  if (j != NULL) {
    add_fields(c, j, 1, stamp);
    return;
  }
  chr_rcmd_args(c, "0");
  chr_rcmd_args(c, "0");
}

/* The lease a claim or an extension grants: until now + lease_us, and when
 * the request was issued (a request that waited gets its wait added). */
static void add_lease(chr_rcmd_t *c, const chr_store_req_t *req) {
  chr_rcmd_argi(c, req->now + req->lease_us);
  chr_rcmd_argi(c, req->issued);
}

/* ---- run history */

/* Run keys (redis_scripts.h) begin with the start of the run as 18
 * digits: seconds + 10^11, then microseconds, so that they sort as times
 * do. key_secs splits a time so (clamped to what 12 digits hold; a run
 * without a start sorts first); key_time is the time digits stand for. */
#define KEY_SECS_BIAS 100000000000LL
static void key_secs(int64_t t, long long *secs, long long *us) {
  *secs = 0, *us = 0;
  if (t == CHR_TIME_NONE) return;
  *secs = t / CHR_USEC, *us = t % CHR_USEC;
  if (*us < 0) --*secs, *us += CHR_USEC;
  *secs += KEY_SECS_BIAS;
  if (*secs < 0) *secs = 0, *us = 0;
  if (*secs > 999999999999LL) *secs = 999999999999LL, *us = 999999;
}

static int64_t key_time(long long secs, long long us) {
  return (secs - KEY_SECS_BIAS) * CHR_USEC + us;
}

/* Writes v in decimal, zero-padded to width digits. */
static void add_digits(chr_buf_t *b, unsigned long long v, int width) {
  char d[24];
  int n = 0;
  do d[n++] = (char)('0' + v % 10); while ((v /= 10) != 0);
  while (n < width) d[n++] = '0';
  chr_buf_reserve(b, (size_t)n);
  while (n) b->p[b->len++] = d[--n];
  b->p[b->len] = '\0';
}

static void add_int(chr_buf_t *b, long long v) {
  if (v < 0) chr_buf_addc(b, '-');
  add_digits(b, v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v, 1);
}

static void add_time_key(chr_buf_t *b, int64_t t) {
  long long secs, us;
  key_secs(t, &secs, &us);
  add_digits(b, (unsigned long long)secs, 12);
  add_digits(b, (unsigned long long)us, 6);
}

static void arg_time_key(chr_rcmd_t *c, int64_t t) {
  chr_buf_t b;
  if (t == CHR_TIME_NONE) {
    chr_rcmd_arg(c, "", 0);
    return;
  }
  chr_buf_init(&b);
  add_time_key(&b, t);
  chr_rcmd_arg(c, b.p, b.len);
  chr_buf_free(&b);
}

/* The stored text of a run: a JSON object with the members of its JSON
 * form (chr_runrec_to_json) but those its key and its job's index hold
 * (run_id, started_at, job_id, and duration with them), and ended_at and
 * scheduled_at as microseconds after the time of its key. Every byte that
 * enters a script costs Redis a dozen instructions, and runs are on the
 * hot path; the scripts read outcome, func_name and metadata from it. */
static void add_stored_text(chr_buf_t *b, const chr_runrec_t *r, int64_t base) {
  int first = 1;
#define STORED_KEY(k) \
  (chr_buf_add(b, first ? "{\"" k "\":" : ",\"" k "\":", sizeof(k) + 3), first = 0)
#define STORED_STR(k, v) \
  if ((v) != NULL) (STORED_KEY(k), chr_json_add_string(b, (v), strlen(v)))
  if (r->attempt > 0) (STORED_KEY("attempt"), add_int(b, r->attempt));
  if (r->ended_at != CHR_TIME_NONE) (STORED_KEY("ended_at"), add_int(b, r->ended_at - base));
  STORED_STR("error_code", r->error_code);
  STORED_STR("error_message", r->error_message);
  STORED_STR("func_name", r->func_name);
  if (r->metadata != NULL) (STORED_KEY("metadata"), chr_buf_adds(b, r->metadata));
  STORED_STR("name", r->name);
  STORED_STR("node", r->node);
  if (r->outcome > 0 && r->outcome < CHR_OUT__COUNT)
    STORED_STR("outcome", chr_outcome_names[r->outcome]);
  if (r->scheduled_at != CHR_TIME_NONE)
    (STORED_KEY("scheduled_at"), add_int(b, r->scheduled_at - base));
#undef STORED_STR
#undef STORED_KEY
  chr_buf_add(b, first ? "{}" : "}", first ? 2 : 1);
}

/* A run as the scripts take it: "<key>\0<stored text>", its key being its
 * start (add_time_key) then its run id. */
static void add_run_arg(chr_rcmd_t *c, const chr_runrec_t *r, chr_buf_t *tmp) {
  long long secs, us;
  key_secs(r->started_at, &secs, &us);
  tmp->len = 0;
  add_digits(tmp, (unsigned long long)secs, 12);
  add_digits(tmp, (unsigned long long)us, 6);
  chr_buf_adds(tmp, r->run_id);
  chr_buf_addc(tmp, '\0');
  add_stored_text(tmp, r, key_time(secs, us));
  chr_rcmd_arg(c, tmp->p, tmp->len);
}

static void add_iso(chr_buf_t *b, int64_t t) {
  char iso[CHR_TIME_BUFSZ];
  if (t < CHR_TIME_MIN) t = CHR_TIME_MIN;
  if (t > CHR_TIME_MAX) t = CHR_TIME_MAX;
  chr_time_format(t, iso);
  chr_buf_addc(b, '"');
  chr_buf_adds(b, iso);
  chr_buf_addc(b, '"');
}

/* A run from what the store keeps (add_run_arg): its job id, its key and
 * its stored text, turned back into its JSON form. NULL when they are
 * not what chronis writes (a hand edit). */
static chr_runrec_t *run_from_stored(const redisReply *job, const redisReply *key,
                                     const redisReply *text) {
  if (job->type != REDIS_REPLY_STRING || key->type != REDIS_REPLY_STRING ||
      text->type != REDIS_REPLY_STRING || key->len <= 18)
    return NULL;
  long long secs = 0, us = 0;
  for (int i = 0; i < 18; i++) {
    if (key->str[i] < '0' || key->str[i] > '9') return NULL;
    if (i < 12) secs = secs * 10 + (key->str[i] - '0');
    else us = us * 10 + (key->str[i] - '0');
  }
  int64_t base = key_time(secs, us);
  const char *it = text->str, *end = text->str + text->len;
  chr_json_span_t k, v;
  char err[256];
  chr_buf_t b;
  chr_runrec_t *run = NULL;
  int m;
  if (text->len < 2 || text->str[0] != '{' || chr_json_skip(it, end) != end) return NULL;
  chr_buf_init(&b);
  chr_buf_adds(&b, "{\"job_id\":");
  chr_json_add_string(&b, job->str, job->len);
  chr_buf_adds(&b, ",\"run_id\":");
  chr_json_add_string(&b, key->str + 18, key->len - 18);
  chr_buf_adds(&b, ",\"started_at\":");
  add_iso(&b, base);
  while ((m = chr_json_next_member(&it, end, &k, &v)) == 1) {
    chr_buf_add(&b, ",\"", 2);
    chr_buf_add(&b, k.p, k.n);
    chr_buf_add(&b, "\":", 2);
    int when = (k.n == 8 && memcmp(k.p, "ended_at", 8) == 0) ||
               (k.n == 12 && memcmp(k.p, "scheduled_at", 12) == 0);
    char num[24];
    if (when && v.n > 0 && v.n < sizeof num) {
      memcpy(num, v.p, v.n);
      num[v.n] = '\0';
      add_iso(&b, base + strtoll(num, NULL, 10));
    } else {
      chr_buf_add(&b, v.p, v.n);
    }
  }
  chr_buf_addc(&b, '}');
  if (m == 0 && chr_runrec_from_json(b.p, b.len, &run, err, sizeof err) != 0) run = NULL;
  chr_buf_free(&b);
  return run;
}

/* The age limit of runs written now, and how many jobs pruning by age
 * may visit in this call (0: none). */
static void add_age_limit(rstore_t *rs, chr_rcmd_t *c, int64_t now, int prune) {
  arg_time_key(c, now - (int64_t)rs->hist.days * 86400 * CHR_USEC);
  chr_rcmd_argi(c, prune ? AGE_PRUNE_MAX : 0);
}

/* complete_jobs: each item with its run, if it has one that the store
 * keeps (history=0 keeps none, unless the run's own keep count says
 * otherwise): mode D or U and the run (add_run_arg) when it is a run of
 * the item's job kept as the store's default says, else E or V and its
 * job id, keep count and run. Without runs the call is what it is
 * without history. Pruning by age rides on at most one completion a
 * second per store. */
static void add_items(rstore_t *rs, chr_rcmd_t *c, chr_store_req_t *req) {
  chr_buf_t tmp;
  int any = 0;
  chr_buf_init(&tmp);
  chr_rcmd_argi(c, (long long)req->nitems);
  for (size_t i = 0; i < req->nitems; i++) {
    const chr_completion_t *it = &req->items[i];
    const chr_runrec_t *r = it->run;
    int32_t keep = r != NULL ? chr_runrec_keep(r, rs->hist.keep) : 0;
    int own = keep > 0 && keep == rs->hist.keep && strcmp(r->job_id, it->job_id) == 0;
    chr_rcmd_args(c, it->job_id);
    chr_rcmd_args(c, it->owner);
    chr_rcmd_args(c, keep <= 0 ? (it->remove ? "d" : "u")
                     : own  ? (it->remove ? "D" : "U")
                            : (it->remove ? "E" : "V"));
    add_partial(c, it->remove ? NULL : it->updates, 0);
    if (keep <= 0) continue;
    any = 1;
    if (!own) {
      chr_rcmd_args(c, r->job_id);
      chr_rcmd_argi(c, keep);
    }
    add_run_arg(c, r, &tmp);
  }
  chr_buf_free(&tmp);
  if (!any) return;
  int prune = req->issued - rs->age_pruned >= CHR_USEC || req->issued < rs->age_pruned;
  if (prune) rs->age_pruned = req->issued;
  chr_rcmd_argi(c, rs->hist.keep);
  add_age_limit(rs, c, req->issued, prune);
}

/* record_runs: every run its keep count allows; pruning by age on every
 * call (it is not the hot path). */
static chr_rcmd_t *record_runs(rstore_t *rs, chr_store_req_t *req) {
  chr_rcmd_t *c = script(rs, CHR_RS_RUNS, req, CHR_RCMD_IDEMPOTENT);
  chr_buf_t tmp;
  size_t n = 0;
  for (size_t i = 0; i < req->nruns; i++)
    if (chr_runrec_keep(req->runs[i], rs->hist.keep) > 0) n++;
  chr_rcmd_argi(c, (long long)n);
  chr_buf_init(&tmp);
  for (size_t i = 0; i < req->nruns; i++) {
    const chr_runrec_t *r = req->runs[i];
    int32_t keep = chr_runrec_keep(r, rs->hist.keep);
    if (keep <= 0) continue;
    chr_rcmd_args(c, r->job_id);
    chr_rcmd_argi(c, keep);
    add_run_arg(c, r, &tmp);
  }
  chr_buf_free(&tmp);
  add_age_limit(rs, c, req->issued, 1);
  return c;
}

/* query_runs: the script narrows and pages when the runs come in order
 * (one job, or all); C checks every filter again and orders and pages
 * the runs of several jobs. */
static void query_runs_cb(chr_rcmd_t *c, redisReply *r, int status, const char *msg) {
  chr_store_req_t *req = c->data;
  if (failed(req, r, status, msg)) {
    answer(req);
    return;
  }
  int paged = reply_int(elem(r, 0)) == 1;
  for (size_t i = 1; r->type == REDIS_REPLY_ARRAY && i + 2 < r->elements; i += 3) {
    /* A run chronis did not write is left out, as a hand-made job key is
     * by job queries. */
    chr_runrec_t *run = run_from_stored(r->element[i], r->element[i + 1], r->element[i + 2]);
    if (run == NULL) continue;
    if (chr_run_filter_match(req->run_filter, run)) chr_store_req_push_run(req, run);
    else chr_runrec_free(run);
  }
  if (!paged) {
    size_t n = req->nhistory;
    if (n > 1) qsort(req->history, n, sizeof *req->history, chr_runrec_cmp);
    size_t from = (uint64_t)req->offset < n ? (size_t)req->offset : n;
    size_t to = req->limit >= 0 && (uint64_t)req->limit < n - from ? from + (size_t)req->limit : n;
    for (size_t i = 0; i < from; i++) chr_runrec_free(req->history[i]);
    for (size_t i = to; i < n; i++) chr_runrec_free(req->history[i]);
    if (to > from) memmove(req->history, req->history + from, (to - from) * sizeof *req->history);
    req->nhistory = to - from;
  }
  answer(req);
}

static void submit_query_runs(rstore_t *rs, chr_store_req_t *req) {
  const chr_run_filter_t *f = req->run_filter;
  chr_rcmd_t *c = script(rs, CHR_RS_QRUNS, req, CHR_RCMD_IDEMPOTENT);
  chr_buf_t b;
  c->cb = query_runs_cb;
  int64_t off = req->offset, lim = req->limit;
  chr_rcmd_argi(c, off < NO_LIMIT ? off : NO_LIMIT);
  chr_rcmd_argi(c, lim >= 0 && lim < NO_LIMIT ? lim : -1);
  arg_time_key(c, f ? f->started_gte : CHR_TIME_NONE);
  arg_time_key(c, f ? f->started_lte : CHR_TIME_NONE);
  chr_rcmd_argi(c, f && f->has_ids ? (long long)f->nids : 0);
  for (size_t i = 0; f && f->has_ids && i < f->nids; i++) chr_rcmd_args(c, f->ids[i]);
  chr_buf_init(&b);
  int nout = 0;
  for (int o = 1; f && o < CHR_OUT__COUNT; o++)
    if (f->outcome_mask & (1u << o)) nout++;
  chr_rcmd_argi(c, nout);
  for (int o = 1; f && o < CHR_OUT__COUNT; o++) {
    if (!(f->outcome_mask & (1u << o))) continue;
    b.len = 0;
    chr_json_add_string(&b, chr_outcome_names[o], strlen(chr_outcome_names[o]));
    chr_rcmd_arg(c, b.p, b.len);
  }
  b.len = 0;
  if (f && f->func_name) chr_json_add_string(&b, f->func_name, strlen(f->func_name));
  chr_rcmd_arg(c, b.p ? b.p : "", b.len);
  chr_buf_free(&b);
  add_meta_eqs(c, f ? f->meta : NULL, f ? f->nmeta : 0);
  chr_rconn_send(c);
}

/* ---- create_jobs: CREATE_SLICE records per script call (CHR_RS_CREATES) */

typedef struct creates {
  chr_store_req_t *req;
  size_t pending; /* script calls not answered yet */
} creates_t;

static void creates_cb(chr_rcmd_t *c, redisReply *r, int status, const char *msg) {
  creates_t *cr = c->data;
  chr_store_req_t *req = cr->req;
  size_t from = (size_t)(uintptr_t)c->ctx_data;
  size_t n = req->ncreates - from < CREATE_SLICE ? req->ncreates - from : CREATE_SLICE;
  /* One call that fails fails the request (its records may or may not
   * have been written, like any failed write); the first failure says
   * why. */
  if (req->status == 0 && !failed(req, r, status, msg)) {
    if (r->type != REDIS_REPLY_STRING || r->len != n) {
      chr_store_req_fail(req, CHR_EUNAVAIL, "create_jobs: redis: unexpected reply");
    } else {
      for (size_t i = 0; i < n; i++) {
        if (r->str[i] == '1') req->count++;
        else req->creates[from + i].result = CHR_EDUP;
      }
    }
  }
  if (--cr->pending > 0) return;
  free(cr);
  answer(req);
}

/* Per record: its id, then its fields as create sends them (add_fields).
 * The scripts run in order, so a duplicate in a later call finds the
 * record of an earlier one. */
static void submit_creates(rstore_t *rs, chr_store_req_t *req) {
  creates_t *cr = chr_calloc(1, sizeof *cr);
  cr->req = req;
  cr->pending = (req->ncreates + CREATE_SLICE - 1) / CREATE_SLICE;
  for (size_t from = 0; from < req->ncreates; from += CREATE_SLICE) {
    size_t n = req->ncreates - from < CREATE_SLICE ? req->ncreates - from : CREATE_SLICE;
    chr_rcmd_t *c = chr_rcmd_new(rs->rc, CHR_RS_CREATES, creates_cb, cr, 0);
    c->ctx_data = (void *)(uintptr_t)from;
    chr_rcmd_args(c, "1");
    chr_rcmd_args(c, rs->tag);
    chr_rcmd_argi(c, (long long)n);
    for (size_t i = from; i < from + n; i++) {
      const chr_job_t *j = req->creates[i].job;
      chr_rcmd_args(c, j->job_id);
      add_fields(c, j, 0, 0);
    }
    chr_rconn_send(c);
  }
}

/* ---- scoped claims, recoveries and next due times (req->filter) */

/* One scoped request, over as many script calls as its walk takes
 * (SCOPE_WALK entries each): the cursor and what is gathered so far. */
typedef struct scoped {
  rstore_t *rs;
  chr_store_req_t *req;
  char *cursor; /* '' at the start */
  char *skips;  /* claim: per source of the cursor's level */
  char *best;   /* next due time: the earliest so far, '' none */
  char **ids;   /* claim: the ids claimed */
  size_t nids;
  int64_t count, early; /* recovery */
} scoped_t;

static void scoped_free(scoped_t *sc) {
  for (size_t i = 0; i < sc->nids; i++) free(sc->ids[i]);
  free(sc->ids);
  free(sc->cursor);
  free(sc->skips);
  free(sc->best);
  free(sc);
}

/* "n, then per condition: operator, path, nkeys, keys..., nvalues,
 * values..." (CHR_REDIS_SCOPE's read_scope). */
static void add_scope(chr_rcmd_t *c, const chr_filter_t *f) {
  static const char *const ops[] = {"eq", "ne", "in", "absent", "present"};
  chr_rcmd_argi(c, (long long)f->nmeta);
  for (size_t i = 0; i < f->nmeta; i++) {
    const chr_meta_filter_t *m = &f->meta[i];
    int valued = m->op == CHR_MF_EQ || m->op == CHR_MF_NE || m->op == CHR_MF_IN;
    chr_rcmd_args(c, ops[m->op]);
    chr_rcmd_args(c, m->path);
    chr_rcmd_argi(c, (long long)m->nkeys);
    for (size_t k = 0; k < m->nkeys; k++) chr_rcmd_args(c, m->keys[k]);
    chr_rcmd_argi(c, valued ? (long long)m->nvalues : 0);
    for (size_t k = 0; valued && k < m->nvalues; k++) chr_rcmd_args(c, m->values[k]);
  }
  chr_rcmd_argi(c, SCOPE_WALK);
}

static void scoped_cb(chr_rcmd_t *c, redisReply *r, int status, const char *msg);

static void scoped_send(scoped_t *sc) {
  chr_store_req_t *req = sc->req;
  rstore_t *rs = sc->rs;
  int which = req->op == CHR_OP_CLAIM     ? CHR_RS_SCLAIM
              : req->op == CHR_OP_RECOVER ? CHR_RS_SRECOVER
                                          : CHR_RS_SNEXT;
  chr_rcmd_t *c = chr_rcmd_new(rs->rc, which, scoped_cb, sc,
                               req->op == CHR_OP_CLAIM ? 0 : CHR_RCMD_IDEMPOTENT);
  chr_rcmd_args(c, "1");
  chr_rcmd_args(c, rs->tag);
  if (req->op == CHR_OP_CLAIM) {
    int64_t lim = req->limit >= 0 && req->limit < NO_LIMIT ? req->limit : NO_LIMIT;
    chr_rcmd_argi(c, req->now);
    chr_rcmd_argi(c, lim - (int64_t)sc->nids);
    chr_rcmd_args(c, req->owner);
    add_lease(c, req);
    chr_rcmd_args(c, sc->cursor);
    chr_rcmd_args(c, sc->skips);
  } else if (req->op == CHR_OP_RECOVER) {
    chr_rcmd_argi(c, req->now);
    chr_rcmd_args(c, sc->cursor);
    chr_rcmd_args(c, sc->skips);
  } else {
    chr_rcmd_args(c, sc->cursor);
    chr_rcmd_args(c, sc->skips);
    chr_rcmd_args(c, sc->best);
  }
  add_scope(c, req->filter);
  chr_rconn_send(c);
}

static void scoped_cb(chr_rcmd_t *c, redisReply *r, int status, const char *msg) {
  scoped_t *sc = c->data;
  chr_store_req_t *req = sc->req;
  rstore_t *rs = sc->rs;
  /* A failure part way leaves the jobs claimed so far to lease recovery,
   * as a record that cannot be read does. */
  if (failed(req, r, status, msg)) {
    scoped_free(sc);
    answer(req);
    return;
  }
  size_t at = req->op == CHR_OP_CLAIM ? 1 : req->op == CHR_OP_RECOVER ? 2 : 0;
  free(sc->cursor);
  free(sc->skips);
  sc->cursor = reply_str(elem(r, at));
  sc->skips = reply_str(elem(r, at + 1));
  if (req->op == CHR_OP_CLAIM) {
    size_t n = r->type == REDIS_REPLY_ARRAY && r->elements > 3 ? r->elements - 3 : 0;
    if (n > 0) {
      sc->ids = chr_realloc(sc->ids, (sc->nids + n) * sizeof *sc->ids);
      for (size_t i = 0; i < n; i++) sc->ids[sc->nids++] = reply_str(r->element[i + 3]);
    }
  } else if (req->op == CHR_OP_RECOVER) {
    sc->count += reply_int(elem(r, 0));
    sc->early = chr_time_earlier(sc->early, reply_time(elem(r, 1)));
  } else {
    free(sc->best);
    sc->best = reply_str(elem(r, 2));
  }
  int64_t lim = req->limit >= 0 && req->limit < NO_LIMIT ? req->limit : NO_LIMIT;
  if (sc->cursor[0] != '\0' && !(req->op == CHR_OP_CLAIM && (int64_t)sc->nids >= lim)) {
    scoped_send(sc);
    return;
  }
  if (req->op == CHR_OP_CLAIM && sc->nids > 0) {
    char **ids = sc->ids;
    size_t n = sc->nids;
    sc->ids = NULL;
    sc->nids = 0;
    scoped_free(sc);
    fetch_claimed(rs, req, ids, n, CHR_TIME_NONE);
    return;
  }
  int64_t early = sc->early;
  if (req->op == CHR_OP_RECOVER) req->count = sc->count;
  if (req->op == CHR_OP_NEXT_DUE) req->count = reply_time(elem(r, 2));
  scoped_free(sc);
  answer(req);
  wake(rs, early);
}

static void submit_scoped(rstore_t *rs, chr_store_req_t *req) {
  scoped_t *sc = chr_calloc(1, sizeof *sc);
  sc->rs = rs;
  sc->req = req;
  sc->cursor = chr_strdup("");
  sc->skips = chr_strdup(req->op == CHR_OP_CLAIM ? "" : "0");
  sc->best = chr_strdup("");
  sc->early = CHR_TIME_NONE;
  want_wakeups(rs);
  scoped_send(sc);
}

/* A claim with queues (CHR_RS_QCLAIM): per queue its limits, and for a
 * rate limit the window of req->now, [floor(now / period) * period,
 * + period), whose counter lives a minute past the window's end: a
 * process whose clock is behind still finds it. */
static void qbuild_next(rstore_t *rs, const char *cursor);

static void submit_queues(rstore_t *rs, chr_store_req_t *req) {
  want_wakeups(rs);
  /* A build that failed (the server was down when the store opened) is
   * tried again: until it ends, claims with queues take nothing. */
  if (!rs->qbuilt && !rs->qbuilding) qbuild_next(rs, "0");
  chr_rcmd_t *c = script(rs, CHR_RS_QCLAIM, req, 0);
  chr_rcmd_argi(c, req->now);
  chr_rcmd_argi(c, req->limit >= 0 && req->limit < NO_LIMIT ? req->limit : NO_LIMIT);
  chr_rcmd_args(c, req->owner);
  add_lease(c, req);
  chr_rcmd_argi(c, (long long)req->nqueues);
  for (size_t i = 0; i < req->nqueues; i++) {
    const chr_claim_queue_t *q = &req->queues[i];
    int64_t period = q->rate_limit > 0 && q->rate_period_us > 0 ? q->rate_period_us : 0;
    int64_t start = period ? req->now - ((req->now % period) + period) % period : 0;
    chr_rcmd_args(c, q->name);
    chr_rcmd_argi(c, q->limit < NO_LIMIT ? q->limit : NO_LIMIT);
    chr_rcmd_argi(c, q->global_limit < NO_LIMIT ? q->global_limit : NO_LIMIT);
    chr_rcmd_argi(c, period ? (q->rate_limit < NO_LIMIT ? q->rate_limit : NO_LIMIT) : 0);
    chr_rcmd_argi(c, start);
    chr_rcmd_argi(c, period ? (start + period - req->now) / 1000 + 60000 : 0);
  }
  if (req->filter != NULL) {
    add_scope(c, req->filter);
  } else {
    chr_rcmd_args(c, "0");
    chr_rcmd_argi(c, SCOPE_WALK);
  }
  chr_rconn_send(c);
}

static int rs_submit(chr_store_t *s, chr_store_req_t *req) {
  rstore_t *rs = (rstore_t *)s;
  chr_rcmd_t *c;
  /* A running scheduler watches the store: subscribe on any request, as a
   * scoped one's claims, recoveries and next due times take the scoped
   * path below, not the operations that subscribe. */
  if (s->watchers) want_wakeups(rs);
  /* Queues (CHR_STORE_CAP_QUEUES), with or without a scope: one script. */
  if (req->op == CHR_OP_CLAIM && req->nqueues > 0) {
    submit_queues(rs, req);
    return 0;
  }
  /* A scope (CHR_STORE_CAP_SCOPE): the scripts apply it themselves. */
  if ((req->op == CHR_OP_CLAIM || req->op == CHR_OP_RECOVER || req->op == CHR_OP_NEXT_DUE) &&
      req->filter != NULL) {
    submit_scoped(rs, req);
    return 0;
  }
  switch (req->op) {
  case CHR_OP_CREATE:
    c = script(rs, CHR_RS_CREATE, req, 0);
    chr_rcmd_args(c, req->job->job_id);
    add_fields(c, req->job, 0, 0);
    break;
  case CHR_OP_CREATE_MANY:
    submit_creates(rs, req);
    return 0;
  case CHR_OP_GET:
    c = chr_rcmd_new(rs->rc, -1, done_cb, req, CHR_RCMD_IDEMPOTENT);
    chr_rcmd_args(c, "HGETALL");
    {
      char *key = chr_sprintf("%s:job:%s", rs->tag, req->id);
      chr_rcmd_args(c, key);
      free(key);
    }
    break;
  case CHR_OP_GET_BATCH:
    c = script(rs, CHR_RS_GETS, req, CHR_RCMD_IDEMPOTENT);
    for (size_t i = 0; i < req->nids; i++) chr_rcmd_args(c, req->ids[i]);
    break;
  case CHR_OP_UPDATE:
  case CHR_OP_CAS:
    c = script(rs, CHR_RS_WRITE, req, 0);
    chr_rcmd_args(c, req->id);
    add_partial(c, req->op == CHR_OP_CAS ? req->expected : NULL, 1);
    add_partial(c, req->job, 0);
    break;
  case CHR_OP_DELETE:
    c = script(rs, CHR_RS_DELETE, req, 0);
    chr_rcmd_args(c, req->id);
    break;
  case CHR_OP_QUERY:
  case CHR_OP_COUNT:
    submit_query(rs, req);
    return 0;
  case CHR_OP_CLAIM:
    want_wakeups(rs);
    c = script(rs, CHR_RS_CLAIM, req, 0);
    chr_rcmd_argi(c, req->now);
    chr_rcmd_argi(c, req->limit >= 0 && req->limit < NO_LIMIT ? req->limit : NO_LIMIT);
    chr_rcmd_args(c, req->owner);
    add_lease(c, req);
    break;
  case CHR_OP_COMPLETE:
    c = script(rs, CHR_RS_COMPLETE, req, CHR_RCMD_IDEMPOTENT);
    add_items(rs, c, req);
    break;
  case CHR_OP_RECOVER:
    want_wakeups(rs);
    c = script(rs, CHR_RS_RECOVER, req, CHR_RCMD_IDEMPOTENT);
    chr_rcmd_argi(c, req->now);
    break;
  case CHR_OP_EXTEND:
    c = script(rs, CHR_RS_EXTEND, req, CHR_RCMD_IDEMPOTENT);
    chr_rcmd_args(c, req->owner);
    add_lease(c, req);
    for (size_t i = 0; i < req->nids; i++) chr_rcmd_args(c, req->ids[i]);
    break;
  case CHR_OP_NEXT_DUE:
    want_wakeups(rs);
    c = script(rs, CHR_RS_NEXT, req, CHR_RCMD_IDEMPOTENT);
    break;
  case CHR_OP_RECORD_RUNS: c = record_runs(rs, req); break;
  case CHR_OP_QUERY_RUNS:
    submit_query_runs(rs, req);
    return 0;
  default: return CHR_EINVAL;
  }
  chr_rconn_send(c);
  return 0;
}

/* ---- metadata indexes named in the options: built over existing jobs */

static void reindex_next(rstore_t *rs, const char *cursor);

static void reindex_cb(chr_rcmd_t *c, redisReply *r, int status, const char *msg) {
  rstore_t *rs = c->data;
  const char *path = rs->reindex[rs->nreindexed];
  if (status != 0 || r == NULL || r->type != REDIS_REPLY_STRING) {
    /* Left "building": queries do not use it; the next open resumes. */
    if (!chr_rconn_closed(rs->rc))
      chr_log(CHR_LOG_ERROR, NULL, "redis: building the metadata index '%s' failed: %s", path,
              status ? msg : r && r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
    return;
  }
  if (strcmp(r->str, "0") != 0) {
    reindex_next(rs, r->str);
  } else if (rs->reindex[++rs->nreindexed] != NULL) {
    reindex_next(rs, "0");
  }
}

static void reindex_next(rstore_t *rs, const char *cursor) {
  chr_rcmd_t *c = chr_rcmd_new(rs->rc, CHR_RS_REINDEX, reindex_cb, rs, CHR_RCMD_IDEMPOTENT);
  chr_rcmd_args(c, "1");
  chr_rcmd_args(c, rs->tag);
  chr_rcmd_args(c, rs->reindex[rs->nreindexed]);
  chr_rcmd_args(c, cursor);
  chr_rcmd_argi(c, REINDEX_SLICE);
  chr_rconn_send(c);
}

/* ---- per-queue due sets: built over the jobs of a store written before
 * them (CHR_RS_QBUILD), once, by the first process that opens it */

static void qbuild_cb(chr_rcmd_t *c, redisReply *r, int status, const char *msg) {
  rstore_t *rs = c->data;
  if (status != 0 || r == NULL || r->type != REDIS_REPLY_STRING) {
    /* qready stays unset: the next claim with queues starts again. A
     * server that cannot be reached is said by the requests that need it
     * (a command that opened the store only to read it must not print an
     * error of its own first); a reply that is wrong is an error. */
    rs->qbuilding = 0;
    if (!chr_rconn_closed(rs->rc))
      chr_log(status ? CHR_LOG_DEBUG : CHR_LOG_ERROR, NULL,
              "redis: building the per-queue due sets failed: %s",
              status ? msg : r && r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
    return;
  }
  if (strcmp(r->str, "0") != 0) {
    qbuild_next(rs, r->str);
    return;
  }
  rs->qbuilding = 0;
  rs->qbuilt = 1;
}

static void qbuild_next(rstore_t *rs, const char *cursor) {
  rs->qbuilding = 1;
  chr_rcmd_t *c = chr_rcmd_new(rs->rc, CHR_RS_QBUILD, qbuild_cb, rs, CHR_RCMD_IDEMPOTENT);
  chr_rcmd_args(c, "1");
  chr_rcmd_args(c, rs->tag);
  chr_rcmd_args(c, cursor);
  chr_rcmd_argi(c, REINDEX_SLICE);
  chr_rconn_send(c);
}

/* ---- lifecycle */

static void rs_free(void *data) {
  rstore_t *rs = data;
  for (size_t i = 0; rs->reindex && rs->reindex[i]; i++) free(rs->reindex[i]);
  free(rs->reindex);
  free(rs->tag);
  free(rs->channel);
  free(rs);
}

static void rs_close(chr_store_t *s) {
  rstore_t *rs = (rstore_t *)s;
  chr_rconn_close(rs->rc); /* answers what is pending; rs_free follows */
}

static const chr_store_vtable_t rs_vtable = {"redis", rs_submit, rs_close};

int chr_redis_store_open(const chr_opts_t *opts, chr_store_t **out, char *err, size_t errlen) {
  chr_redis_url_t u;
  int rc = chr_redis_opts_parse(opts, &u, 0, err, errlen);
  if (rc != 0) return rc;
  rstore_t *rs = chr_calloc(1, sizeof *rs);
  chr_store_init(&rs->base, &rs_vtable,
                 CHR_STORE_CAP_CLAIM | CHR_STORE_CAP_COMPLETE | CHR_STORE_CAP_RECOVER |
                     CHR_STORE_CAP_EXTEND | CHR_STORE_CAP_BATCH | CHR_STORE_CAP_COUNT |
                     CHR_STORE_CAP_NEXT_DUE | CHR_STORE_CAP_HISTORY | CHR_STORE_CAP_SCOPE |
                     CHR_STORE_CAP_QUEUES | CHR_STORE_CAP_CREATE_MANY | CHR_STORE_CAP_HINTS);
  rs->hist = u.hist;
  rs->tag = chr_sprintf("{%s}", u.prefix);
  rs->channel = chr_sprintf("%s:wake", rs->tag);
  rs->reindex = chr_calloc(u.nindex + 1, sizeof *rs->reindex);
  for (size_t i = 0; i < u.nindex; i++) rs->reindex[i] = chr_strdup(u.index_paths[i]);
  chr_rconn_opts_t o = {&u, "chronis-store", chr_redis_scripts, rs_free, rs};
  rs->rc = chr_rconn_new(&o);
  chr_redis_url_free(&u);
  qbuild_next(rs, "0");
  if (rs->reindex[0]) reindex_next(rs, "0");
  *out = &rs->base;
  return 0;
}
