/* redis_reply.c - fuzzes how the Redis store reads what the server sends:
 * RESP parsed by hiredis's reader into replies, then the adapter's own
 * code (adapters/redis/redis.c, compiled in here for its static
 * functions): job records from HGETALL arrays (job_from_hash), the
 * answers of every script (done_cb), and query and count pages
 * (query_cb), on a store that never connects.
 *
 * Replies are built by the store's own reader functions (redis_conn.c).
 *
 * Input: one byte choosing the operation (and a query's offset and
 * limit), then RESP text, as a server would send it.
 * Invariants: every job handed out has an id; a query page is in query
 * order and within its limit; a record such as chronis writes (times in
 * range, extra members valid JSON) survives chr_job_to_json and
 * chr_job_from_json unchanged. */
#include <hiredis/read.h>

#include "redis/redis.c"
#include "fuzz.h"

static void answered(chr_store_req_t *req) { (void)req; }

/* Every time field within the ISO range, and extra an object text. */
static int writable(const chr_job_t *j) {
  for (int f = 0; f < CHR_F__COUNT; f++) {
    const chr_field_desc_t *d = &chr_job_fields[f];
    if (d->type != CHR_FT_TIME || !chr_job_has(j, f)) continue;
    int64_t t = *(const int64_t *)((const char *)j + d->offset);
    if (t != CHR_TIME_NONE && (t < CHR_TIME_MIN || t > CHR_TIME_MAX)) return 0;
  }
  if (chr_job_has(j, CHR_F_TRIGGER_ARGS) && j->trigger_args) {
    const char *e = j->trigger_args + strlen(j->trigger_args);
    if (j->trigger_args[0] != '{' || chr_json_skip(j->trigger_args, e) != e) return 0;
  }
  if (j->extra) {
    const char *e = j->extra + strlen(j->extra);
    if (chr_json_skip(j->extra, e) != e) return 0;
    /* Null members are removals in a partial record, never stored; a
     * member named as a typed field is one that did not fit it. */
    const char *it = j->extra;
    chr_json_span_t k, v;
    while (chr_json_next_member(&it, e, &k, &v) == 1)
      if (span_null(v) || chr_job_field_index(k.p, k.n) >= 0 || chr_job_is_derived(k.p, k.n))
        return 0;
  }
  return 1;
}

static void check_job(const chr_job_t *j) {
  FUZZ_CHECK(chr_job_has(j, CHR_F_JOB_ID) && j->job_id != NULL, "a job without an id");
  if (writable(j)) fuzz_check_job_roundtrip(j);
}

static void run(uint8_t o, redisReply *r) {
  static const chr_store_op_t ops[] = {CHR_OP_CREATE, CHR_OP_GET,     CHR_OP_GET_BATCH,
                                       CHR_OP_UPDATE, CHR_OP_CAS,     CHR_OP_DELETE,
                                       CHR_OP_CLAIM,  CHR_OP_COMPLETE, CHR_OP_RECOVER,
                                       CHR_OP_EXTEND, CHR_OP_NEXT_DUE, CHR_OP_QUERY,
                                       CHR_OP_COUNT};
  chr_store_op_t op = ops[(o & 15) % (sizeof ops / sizeof *ops)];
  /* Claimed jobs are fetched with more commands: not on this store. */
  if (op == CHR_OP_CLAIM && r->type == REDIS_REPLY_ARRAY && r->elements > 2) return;
  rstore_t rs;
  memset(&rs, 0, sizeof rs);
  rs.base.closed = 1; /* no wake-ups to deliver */
  chr_store_req_t req;
  chr_store_req_init(&req, op);
  req.store = &rs.base;
  req.cb = answered;
  chr_job_t *job = chr_job_new();
  chr_job_set_str(job, CHR_F_JOB_ID, "j1");
  chr_job_set_int(job, CHR_F_STATUS, CHR_ST_SCHEDULED);
  char a[] = "a", b[] = "b", cc[] = "c", owner[] = "o";
  chr_completion_t items[3] = {{a, owner, 0, NULL, 0}, {b, owner, 1, NULL, 0}, {cc, owner, 0, NULL, 0}};
  req.job = job;
  req.id = "j1";
  req.items = items;
  req.nitems = 3;
  req.offset = (o >> 4) & 3;
  req.limit = (o >> 6) == 0 ? -1 : (o >> 6); /* a limit of 0 is answered before the adapter */
  chr_rcmd_t c;
  memset(&c, 0, sizeof c);
  c.data = &req;
  if (op == CHR_OP_QUERY || op == CHR_OP_COUNT) query_cb(&c, r, 0, NULL);
  else done_cb(&c, r, 0, NULL);
  for (size_t i = 0; i < req.njobs; i++) check_job(req.jobs[i]);
  if (op == CHR_OP_QUERY && req.status == 0) {
    /* A page the script cut (first element 1) is the server's. */
    if (reply_int(elem(r, 0)) != 1) {
      if (req.limit >= 0) FUZZ_CHECK(req.njobs <= (size_t)req.limit, "%zu jobs", req.njobs);
      for (size_t i = 1; i < req.njobs; i++)
        FUZZ_CHECK(chr_job_cmp_query(&req.jobs[i - 1], &req.jobs[i]) <= 0, "query order");
    }
  }
  if (op == CHR_OP_COMPLETE && req.status == 0)
    for (int i = 0; i < 3; i++)
      FUZZ_CHECK(items[i].result == 0 || items[i].result == CHR_ENOTFOUND ||
                     items[i].result == CHR_ECONFLICT,
                 "completion result");
  chr_store_req_reset(&req);
  chr_job_free(job);
}

/* hiredis (0.14) allocates an array's elements as soon as it reads the
 * count: an input announcing billions would test the allocator only. */
static int huge_array(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (p[i] != '*') continue;
    unsigned long v = 0;
    for (size_t k = i + 1; k < n && p[k] >= '0' && p[k] <= '9'; k++)
      if ((v = v * 10 + (p[k] - '0')) > 65536) return 1;
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t o = fuzz_byte(&data, &size);
  if (huge_array(data, size)) return 0;
  /* The store's own reply objects (redis_conn.c: arenas). */
  chr_reply_arena_t arena = {NULL};
  redisReader *rd = redisReaderCreateWithFunctions(&chr_reply_fns);
  if (rd == NULL) abort();
  rd->privdata = &arena;
  redisReaderFeed(rd, (const char *)data, size);
  void *reply;
  for (int n = 0; n < 4 && redisReaderGetReply(rd, &reply) == REDIS_OK && reply != NULL; n++) {
    redisReply *r = reply;
    run(o, r);
    /* The record reader on its own, on every element too. */
    chr_job_t *j = job_from_hash(r, NULL);
    if (j) check_job(j), chr_job_free(j);
    /* As get_job reads it: the id asked for stands in for a missing one. */
    j = job_from_hash(r, "asked-for");
    if (j) check_job(j), chr_job_free(j);
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
      reply_time(r->element[i]);
      reply_int(r->element[i]);
    }
    chr_reply_fns.freeObject(r);
  }
  redisReaderFree(rd);
  return 0;
}
