/* request.c - fuzzes the store request path: job records read from JSON
 * (chr_job_from_json), the rules chr_store_submit checks before any
 * adapter sees a request (chr_store_record_check, chr_store_updates_check,
 * chr_store_update_only_check, claim, query and lease options),
 * scheduler-level validation (chr_job_validate, chr_job_prepare), and the
 * memory store answering what passed.
 *
 * Input: 33 bytes of parameters (an operation selector, then limit,
 * offset, now and lease as four little-endian int64), then a job record
 * as JSON, used as the record, the updates or the expected values.
 * Invariants: a record that reads writes canonical JSON that reads back
 * to the same text; a request is answered exactly once, `invalid` with a
 * message exactly when the rules refuse it; a created job reads back with
 * its id and status; a claim hands out running jobs with a lease; a job
 * that chr_job_prepare accepts is one create_job takes. */
#include <stdint.h>

#include "core/job.h"
#include "core/store.h"
#include "core/time.h"
#include "fuzz.h"

static int answers;
static void answered(chr_store_req_t *req) {
  (void)req;
  answers++;
}

static int64_t take64(const uint8_t **data, size_t *size) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= (uint64_t)fuzz_byte(data, size) << (8 * i);
  return (int64_t)v;
}

/* Submits req and checks it was answered exactly once; returns its status. */
static int submit(chr_store_t *s, chr_store_req_t *req) {
  answers = 0;
  req->cb = answered;
  int rc = chr_store_submit(s, req);
  FUZZ_CHECK(rc == 0, "%s refused without an answer (%d)", chr_store_op_names[req->op], rc);
  FUZZ_CHECK(answers == 1, "%s answered %d times", chr_store_op_names[req->op], answers);
  if (req->status != 0)
    FUZZ_CHECK(req->errmsg && req->errmsg[0], "%s failed without a message",
               chr_store_op_names[req->op]);
  return req->status;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t o = fuzz_byte(&data, &size);
  int64_t limit = take64(&data, &size), offset = take64(&data, &size);
  int64_t now = take64(&data, &size), lease = take64(&data, &size);
  char *text = fuzz_copy(data, size), err[512];
  chr_job_t *j = chr_job_new();
  if (chr_job_from_json(j, text, size, err, sizeof err) != 0) {
    FUZZ_CHECK(err[0] != '\0', "refused without a message");
    chr_job_free(j);
    free(text);
    return 0;
  }
  fuzz_check_job_roundtrip(j);

  /* Scheduler-level validation: what it accepts, create_job takes. */
  chr_job_t *v = chr_job_dup(j);
  /* prepare's `now` is the clock: within the ISO range. */
  int64_t clock = (o & 1) && now >= CHR_TIME_MIN && now <= CHR_TIME_MAX ? now : 1736935200000000LL;
  int prepared = chr_job_prepare(v, clock, err, sizeof err) == 0;
  if (prepared) {
    FUZZ_CHECK(chr_store_record_check(v, "create_job", err, sizeof err) == 0, "%s", err);
    fuzz_check_job_roundtrip(v);
  } else {
    FUZZ_CHECK(err[0] != '\0', "refused without a message");
  }

  chr_store_t *s = chr_memory_store_new();
  chr_store_req_t req;
  /* A job to work on, then the input as a record of its own. */
  chr_job_t *base = chr_job_new();
  chr_job_set_str(base, CHR_F_JOB_ID, "base");
  chr_job_set_int(base, CHR_F_STATUS, (o >> 1) % 2 ? CHR_ST_RUNNING : CHR_ST_SCHEDULED);
  chr_job_set_time(base, CHR_F_NEXT_RUN_TIME, 1736935200000000LL);
  chr_job_set_str(base, CHR_F_CLAIMED_BY, "owner");
  chr_store_req_init(&req, CHR_OP_CREATE);
  req.job = base;
  FUZZ_CHECK(submit(s, &req) == 0, "create base");
  chr_store_req_reset(&req);

  chr_job_t *rec = prepared ? v : j;
  int valid = chr_store_record_check(rec, "create_job", err, sizeof err) == 0;
  chr_store_req_init(&req, CHR_OP_CREATE);
  req.job = rec;
  int st = submit(s, &req);
  if (!valid) FUZZ_CHECK(st == CHR_EINVAL, "an invalid record was created");
  else FUZZ_CHECK(st == 0 || (st == CHR_EDUP && strcmp(rec->job_id, "base") == 0),
                  "create: %s", req.errmsg);
  chr_store_req_reset(&req);
  if (valid) {
    chr_store_req_init(&req, CHR_OP_GET);
    req.id = rec->job_id;
    FUZZ_CHECK(submit(s, &req) == 0 && req.njobs == 1, "get");
    FUZZ_CHECK(strcmp(req.jobs[0]->job_id, rec->job_id) == 0, "get: id");
    if (strcmp(rec->job_id, "base") != 0)
      FUZZ_CHECK(req.jobs[0]->status == rec->status, "get: status");
    chr_store_req_reset(&req);
  }

  /* The input as the updates of update, CAS and a completion of "base". */
  int uvalid = chr_store_updates_check("base", j, err, sizeof err) == 0;
  chr_store_op_t uop = (o >> 2) % 2 ? CHR_OP_CAS : CHR_OP_UPDATE;
  int opvalid = uvalid && (uop == CHR_OP_CAS ||
                           chr_store_update_only_check("base", j, err, sizeof err) == 0);
  chr_store_req_init(&req, uop);
  req.id = "base";
  req.job = j;
  req.expected = (o >> 3) % 2 ? j : NULL;
  st = submit(s, &req);
  FUZZ_CHECK(opvalid ? st == 0 : st == CHR_EINVAL, "update: %d, rules say %d", st, opvalid);
  chr_store_req_reset(&req);
  char id[] = "base", owner[] = "owner";
  chr_completion_t item = {id, owner, (o >> 4) % 2, j, 0};
  chr_store_req_init(&req, CHR_OP_COMPLETE);
  req.items = &item;
  req.nitems = 1;
  st = submit(s, &req);
  FUZZ_CHECK(uvalid || item.remove ? st == 0 : st == CHR_EINVAL, "complete: %d", st);
  chr_store_req_reset(&req);

  /* Options of any size; a time outside the ISO range, or a lease ending
   * past it, is refused. */
  int64_t n2 = now == CHR_TIME_NONE ? chr_time_now() : now, l2 = lease < 0 ? 0 : lease;
  int bad_now = n2 < CHR_TIME_MIN || n2 > CHR_TIME_MAX;
  int bad_lease = bad_now || l2 > CHR_TIME_MAX - n2;
  chr_store_req_init(&req, CHR_OP_QUERY);
  req.limit = limit;
  req.offset = offset;
  FUZZ_CHECK(submit(s, &req) == 0, "query");
  if (limit >= 0) FUZZ_CHECK(req.njobs <= (uint64_t)limit, "query limit");
  chr_store_req_reset(&req);
  chr_store_req_init(&req, CHR_OP_CLAIM);
  req.limit = limit;
  req.now = now;
  req.lease_us = lease;
  req.owner = "fuzz";
  st = submit(s, &req);
  FUZZ_CHECK(bad_lease ? st == CHR_EINVAL : st == 0, "claim: %s", req.errmsg);
  for (size_t i = 0; i < req.njobs; i++)
    FUZZ_CHECK(req.jobs[i]->status == CHR_ST_RUNNING && chr_job_has(req.jobs[i], CHR_F_LEASE_UNTIL),
               "claimed job not running with a lease");
  chr_store_req_reset(&req);
  chr_store_req_init(&req, CHR_OP_RECOVER);
  req.now = now;
  st = submit(s, &req);
  FUZZ_CHECK(bad_now ? st == CHR_EINVAL : st == 0, "recover: %s", req.errmsg);
  chr_store_req_reset(&req);
  char *ids[] = {id};
  chr_store_req_init(&req, CHR_OP_EXTEND);
  req.now = now;
  req.lease_us = lease;
  req.owner = "fuzz";
  req.ids = ids;
  req.nids = 1;
  st = submit(s, &req);
  FUZZ_CHECK(bad_lease ? st == CHR_EINVAL : st == 0, "extend: %s", req.errmsg);
  chr_store_req_reset(&req);

  chr_store_close(s);
  chr_job_free(base);
  chr_job_free(v);
  chr_job_free(j);
  free(text);
  return 0;
}
