/* store.c - the Lua face of storage adapters (see store.h), and the
 * contract's table, rules, filters and orders for stores written in Lua
 * (chronis.adapter_kit). */
#include "store.h"

#include <lauxlib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "util.h"
#include "task.h"
#include "core/time.h"
#include "job.h"
#include "json.h"

static void filter_set_time(lua_State *L, const char *k, int64_t us) {
  char buf[CHR_TIME_BUFSZ];
  if (us == CHR_TIME_NONE) return;
  chr_time_format(us, buf);
  lua_pushstring(L, buf);
  lua_setfield(L, -2, k);
}

/* stack: +1 the JSON text as a Lua value (nil when it does not decode,
 * which canonical text always does). */
static void push_json(lua_State *L, const char *text) {
  char err[64];
  if (chr_json_decode(L, text, strlen(text), err, sizeof err) != 0) lua_pushnil(L);
}

void chr_lua_push_meta_cond(lua_State *L, const chr_meta_filter_t *m) {
  lua_pushfstring(L, "metadata.%s", m->path);
  switch (m->op) {
  case CHR_MF_ABSENT: lua_pushlightuserdata(L, NULL); return;
  case CHR_MF_PRESENT:
    lua_createtable(L, 0, 1);
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "$exists");
    return;
  case CHR_MF_EQ:
    /* An object goes in $eq: its keys could read as operators. */
    if (m->value[0] != '{') {
      push_json(L, m->value);
      return;
    }
    /* fall through */
  case CHR_MF_NE:
    lua_createtable(L, 0, 1);
    push_json(L, m->value);
    lua_setfield(L, -2, chr_meta_op_names[m->op]);
    return;
  default: /* CHR_MF_IN */
    lua_createtable(L, 0, 1);
    lua_createtable(L, (int)m->nvalues, 0);
    for (size_t i = 0; i < m->nvalues; i++) {
      push_json(L, m->values[i]);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "$in");
  }
}

static int is_json_null(lua_State *L, int idx) {
  return lua_type(L, idx) == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) == NULL;
}

/* Encodes the value at idx into a new string (*out), refusing null. */
static int encode_value(lua_State *L, int idx, char **out, char *err, size_t errlen) {
  chr_buf_t b;
  if (is_json_null(L, idx))
    return chr_errf(err, errlen, "null cannot be one of $in's values (use $exists)");
  chr_buf_init(&b);
  if (chr_json_encode(L, idx, &b, err, errlen) != 0) {
    chr_buf_free(&b);
    return CHR_EINVAL;
  }
  *out = chr_buf_steal(&b);
  return 0;
}

int chr_lua_meta_cond(lua_State *L, int v, const char *path, chr_meta_filter_t *m, char *err,
                      size_t errlen) {
  int op = CHR_MF_EQ, nops = 0, nother = 0, rc = 0;
  char **values = NULL;
  size_t nvalues = 0;
  v = lua_absindex(L, v);
  int top = lua_gettop(L);
  if (lua_istable(L, v)) {
    lua_pushnil(L);
    while (lua_next(L, v)) {
      lua_pop(L, 1);
      if (lua_type(L, -1) == LUA_TSTRING && lua_tostring(L, -1)[0] == '$') nops++;
      else nother++;
    }
  }
  if (nops > 0) {
    if (nops > 1 || nother > 0) {
      return chr_errf(err, errlen, "expected a value or one operator ($eq, $ne, $in or "
                      "$exists), not a table with %s", nother ? "both" : "several operators");
    }
    lua_pushnil(L);
    lua_next(L, v); /* key at -2, its value at -1 */
    const char *o = lua_tostring(L, -2);
    if (strcmp(o, "$eq") == 0) {
      op = CHR_MF_EQ;
    } else if (strcmp(o, "$ne") == 0) {
      op = CHR_MF_NE;
    } else if (strcmp(o, "$in") == 0) {
      op = CHR_MF_IN;
    } else if (strcmp(o, "$exists") == 0) {
      if (!lua_isboolean(L, -1)) {
        lua_settop(L, top);
        return chr_errf(err, errlen, "$exists expects true or false");
      }
      op = lua_toboolean(L, -1) ? CHR_MF_PRESENT : CHR_MF_ABSENT;
    } else {
      char bad[64];
      snprintf(bad, sizeof bad, "%s", o);
      lua_settop(L, top);
      return chr_errf(err, errlen, "unknown operator '%s' (expected $eq, $ne, $in or $exists)",
                      bad);
    }
    v = lua_gettop(L);
  }
  if ((op == CHR_MF_EQ || op == CHR_MF_NE) && is_json_null(L, v))
    op = op == CHR_MF_EQ ? CHR_MF_ABSENT : CHR_MF_PRESENT;
  if (op == CHR_MF_IN) {
    lua_Integer n = lua_istable(L, v) ? (lua_Integer)lua_rawlen(L, v) : -1;
    /* A table with other keys than 1..n is no list: its values would be
     * dropped without a word. */
    if (n >= 0) {
      lua_Integer nkeys = 0;
      lua_pushnil(L);
      while (lua_next(L, v)) {
        lua_pop(L, 1);
        nkeys++;
      }
      if (nkeys != n) n = -1;
    }
    if (n < 0) {
      lua_settop(L, top);
      return chr_errf(err, errlen, "$in expects a list of values");
    }
    values = chr_calloc((size_t)n + 1, sizeof *values);
    for (lua_Integer i = 1; rc == 0 && i <= n; i++) {
      lua_rawgeti(L, v, i);
      rc = encode_value(L, -1, &values[nvalues], err, errlen);
      if (rc == 0) nvalues++;
      lua_pop(L, 1);
    }
  } else if (op == CHR_MF_EQ || op == CHR_MF_NE) {
    values = chr_calloc(1, sizeof *values);
    rc = encode_value(L, v, &values[0], err, errlen);
    if (rc == 0) nvalues = 1;
  }
  if (rc == 0) rc = chr_meta_filter_set(m, path, op, values, nvalues, err, errlen);
  for (size_t i = 0; i < nvalues; i++) free(values[i]);
  free(values);
  lua_settop(L, top);
  return rc;
}

void chr_filter_push(lua_State *L, const chr_filter_t *f) {
  char err[64];
  if (f == NULL) {
    lua_pushnil(L);
    return;
  }
  lua_createtable(L, 0, 4);
  if (f->status_mask) {
    int n = 0, last = 0;
    for (int st = 1; st < CHR_ST__COUNT; st++)
      if (f->status_mask & (1u << st)) n++, last = st;
    if (n == 1) {
      lua_pushstring(L, chr_status_names[last]);
    } else {
      lua_createtable(L, n, 0);
      for (int st = 1, i = 0; st < CHR_ST__COUNT; st++) {
        if (!(f->status_mask & (1u << st))) continue;
        lua_pushstring(L, chr_status_names[st]);
        lua_rawseti(L, -2, ++i);
      }
    }
    lua_setfield(L, -2, "status");
  }
  if (f->trigger_type) {
    lua_pushstring(L, chr_trigger_type_names[f->trigger_type]);
    lua_setfield(L, -2, "trigger_type");
  }
  filter_set_time(L, "next_run_time_lte", f->nrt_lte);
  filter_set_time(L, "next_run_time_gte", f->nrt_gte);
  filter_set_time(L, "updated_at_lte", f->upd_lte);
  filter_set_time(L, "updated_at_gte", f->upd_gte);
  for (size_t i = 0; i < f->nmeta; i++) {
    chr_lua_push_meta_cond(L, &f->meta[i]);
    lua_rawset(L, -3);
  }
  for (size_t i = 0; i < f->nown; i++) {
    lua_pushstring(L, f->own[i].key);
    if (chr_json_decode(L, f->own[i].value, strlen(f->own[i].value), err, sizeof err) != 0)
      lua_pushnil(L);
    lua_rawset(L, -3);
  }
  if (f->has_ids) {
    lua_createtable(L, (int)f->nids, 0);
    for (size_t i = 0; i < f->nids; i++) {
      lua_pushstring(L, f->ids[i]);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "job_id_in");
  }
}

#define STORE_MT "chronis.store"

typedef struct lstore {
  chr_store_t *store;
} lstore_t;

/* One pending store call: the request and every input it borrows. */
typedef struct store_op {
  chr_waiter_t w;
  chr_store_req_t req;
  chr_job_t *job, *expected;
  chr_filter_t filter;
  char *id, *owner;
  char **ids;
  size_t nids;
  chr_completion_t *items;
  size_t nitems;
  chr_create_item_t *creates;
  size_t ncreates;
  /* create_jobs for sched:create_jobs: answers (ids, failed) rather than
   * a table per record (push_create_results) */
  int lean;
  chr_runrec_t **runs;
  size_t nruns;
  chr_run_filter_t run_filter;
  chr_claim_queue_t *queues; /* claim: names malloc'ed */
  size_t nqueues;
  char what[96]; /* "get_job on the redis store", for an interrupted wait */
} store_op_t;

static void op_free(store_op_t *op) {
  chr_store_req_reset(&op->req);
  chr_job_free(op->job);
  chr_job_free(op->expected);
  chr_filter_free(&op->filter);
  free(op->id);
  free(op->owner);
  for (size_t i = 0; i < op->nids; i++) free(op->ids[i]);
  free(op->ids);
  for (size_t i = 0; i < op->nitems; i++) {
    free(op->items[i].job_id);
    free(op->items[i].owner);
    chr_job_free(op->items[i].updates);
    chr_runrec_free(op->items[i].run);
  }
  free(op->items);
  for (size_t i = 0; i < op->ncreates; i++) chr_job_free(op->creates[i].job);
  free(op->creates);
  for (size_t i = 0; i < op->nruns; i++) chr_runrec_free(op->runs[i]);
  free(op->runs);
  chr_run_filter_free(&op->run_filter);
  for (size_t i = 0; i < op->nqueues; i++) free((char *)op->queues[i].name);
  free(op->queues);
  free(op);
}

static void op_release(chr_waiter_t *w) {
  op_free((store_op_t *)w);
}

static void op_cb(chr_store_req_t *req) {
  chr_waiter_done(&((store_op_t *)req->data)->w);
}

static int op_finish(lua_State *L, chr_waiter_t *w);

static store_op_t *op_new(chr_store_op_t kind) {
  store_op_t *op = chr_calloc(1, sizeof *op);
  chr_store_req_init(&op->req, kind);
  chr_filter_init(&op->filter);
  chr_run_filter_init(&op->run_filter);
  op->req.cb = op_cb;
  op->req.data = op;
  op->w.finish = op_finish;
  op->w.release = op_release;
  return op;
}

static lstore_t *check_lstore(lua_State *L, int idx) {
  lstore_t *s = chr_lua_checkudata(L, idx, STORE_MT);
  if (s->store == NULL) chr_lua_error(L, CHR_EUNAVAIL, "the store is closed");
  return s;
}

chr_store_t *chr_lua_checkstore(lua_State *L, int idx) {
  return check_lstore(L, idx)->store;
}

chr_store_t *chr_lua_takestore(lua_State *L, int idx) {
  lstore_t *s = check_lstore(L, idx);
  chr_store_t *st = s->store;
  s->store = NULL;
  return st;
}

static int op_run(lua_State *L, chr_store_t *s, store_op_t *op) {
  int rc = chr_store_submit(s, &op->req);
  if (rc != 0) {
    const char *name = chr_store_ops[op->req.op].name; /* static: outlives op */
    op_free(op);
    return chr_lua_error(L, rc, "%s refused by the %s store", name, s->vt->kind);
  }
  snprintf(op->what, sizeof op->what, "%s on the %s store", chr_store_ops[op->req.op].name,
           s->vt->kind);
  op->w.what = op->what;
  return chr_wait(L, &op->w);
}

static void push_jobs_array(lua_State *L, chr_store_req_t *req) {
  lua_createtable(L, (int)req->njobs, 0);
  for (size_t i = 0; i < req->njobs; i++) {
    chr_job_push(L, req->jobs[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
}

/* The results of create_jobs. The store method's: an array aligned with
 * the records, {job_id =, ok = true} or {job_id =, ok = false, code =}, as
 * complete_jobs answers. The scheduler's (lean): the array of ids, then
 * nil when every record was created, else {[i] = error} for the others. */
static int push_create_results(lua_State *L, store_op_t *op) {
  if (op->lean) {
    lua_createtable(L, (int)op->ncreates, 0);
    for (size_t i = 0; i < op->ncreates; i++) {
      lua_pushstring(L, op->creates[i].job->job_id);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_pushnil(L);
    for (size_t i = 0; i < op->ncreates; i++) {
      const chr_create_item_t *c = &op->creates[i];
      if (c->result == 0) continue;
      if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
      }
      lua_pushfstring(L, "create_jobs: item %d: job '%s' already exists", (int)i + 1, c->job->job_id);
      chr_lua_pusherror(L, c->result, lua_tostring(L, -1));
      lua_remove(L, -2);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 2;
  }
  lua_createtable(L, (int)op->ncreates, 0);
  for (size_t i = 0; i < op->ncreates; i++) {
    const chr_create_item_t *c = &op->creates[i];
    lua_createtable(L, 0, 3);
    lua_pushstring(L, c->job->job_id);
    lua_setfield(L, -2, "job_id");
    lua_pushboolean(L, c->result == 0);
    lua_setfield(L, -2, "ok");
    if (c->result != 0) {
      lua_pushstring(L, chr_strerror(c->result));
      lua_setfield(L, -2, "code");
    }
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

/* Converts the finished request into Lua results, or raises its error. */
static int op_finish(lua_State *L, chr_waiter_t *w) {
  store_op_t *op = (store_op_t *)w;
  chr_store_req_t *req = &op->req;
  int nres = 1;
  if (req->status != 0) {
    lua_pushstring(L, req->errmsg ? req->errmsg : chr_strerror(req->status));
    int code = req->status;
    op_free(op);
    chr_lua_pusherror(L, code, lua_tostring(L, -1));
    return lua_error(L);
  }
  /* A job read by id whose stored record could not be read in full: the
   * caller asked for that job, so it hears why rather than getting a job
   * without the fields (query results carry `unreadable` instead). */
  if (req->op == CHR_OP_GET || req->op == CHR_OP_GET_BATCH)
    for (size_t i = 0; i < req->njobs; i++)
      if (req->jobs[i]->unreadable != NULL) {
        lua_pushfstring(L, "%s: job '%s': %s", chr_store_op_names[req->op],
                        req->jobs[i]->job_id, req->jobs[i]->unreadable);
        op_free(op);
        chr_lua_pusherror(L, CHR_EINVAL, lua_tostring(L, -1));
        return lua_error(L);
      }
  switch (req->op) {
  case CHR_OP_CREATE:
  case CHR_OP_UPDATE:
  case CHR_OP_GET:
    if (req->njobs) chr_job_push(L, req->jobs[0]);
    else lua_pushnil(L);
    break;
  case CHR_OP_CAS:
    lua_pushboolean(L, req->ok);
    if (req->ok && req->njobs) chr_job_push(L, req->jobs[0]);
    else lua_pushnil(L);
    nres = 2;
    break;
  case CHR_OP_DELETE: lua_pushboolean(L, req->ok); break;
  case CHR_OP_GET_BATCH:
    lua_createtable(L, 0, (int)req->njobs);
    for (size_t i = 0; i < req->njobs; i++) {
      chr_job_push(L, req->jobs[i]);
      lua_setfield(L, -2, req->jobs[i]->job_id);
    }
    break;
  case CHR_OP_QUERY:
  case CHR_OP_CLAIM: push_jobs_array(L, req); break;
  case CHR_OP_COUNT:
  case CHR_OP_RECOVER:
  case CHR_OP_RECORD_RUNS:
  case CHR_OP_EXTEND: lua_pushinteger(L, req->count); break;
  case CHR_OP_NEXT_DUE: chr_lua_pushtime(L, req->count); break;
  case CHR_OP_QUERY_RUNS:
    lua_createtable(L, (int)req->nhistory, 0);
    for (size_t i = 0; i < req->nhistory; i++) {
      chr_runrec_push(L, req->history[i]);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    break;
  case CHR_OP_CREATE_MANY:
    nres = push_create_results(L, op);
    break;
  case CHR_OP_COMPLETE:
    lua_createtable(L, (int)op->nitems, 0);
    for (size_t i = 0; i < op->nitems; i++) {
      lua_createtable(L, 0, 3);
      lua_pushstring(L, op->items[i].job_id);
      lua_setfield(L, -2, "job_id");
      lua_pushboolean(L, op->items[i].result == 0);
      lua_setfield(L, -2, "ok");
      if (op->items[i].result != 0) {
        lua_pushstring(L, chr_strerror(op->items[i].result));
        lua_setfield(L, -2, "code");
      }
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    break;
  default: lua_pushnil(L); break;
  }
  op_free(op);
  return nres;
}

static chr_job_t *check_job(lua_State *L, int idx, int partial, const char *what) {
  char err[300];
  chr_lua_checktype(L, idx, LUA_TTABLE);
  chr_job_t *j = chr_job_new();
  if (chr_job_from_lua(L, idx, j, partial, err, sizeof err) != 0) {
    chr_job_free(j);
    chr_lua_error(L, CHR_EINVAL, "%s: %s", what, err);
  }
  return j;
}

/* Raises `invalid` when the string at idx breaks the rule for the strings
 * a job holds (chr_job_string_problem): "<what>: invalid field '<field>':
 * <what is wrong>". An id with a NUL byte would otherwise name another job. */
static void check_string(lua_State *L, int idx, const char *what, const char *field) {
  size_t n;
  char msg[80];
  const char *s = lua_tolstring(L, idx, &n);
  const char *bad = chr_job_string_problem(s, n, msg, sizeof msg);
  if (bad) chr_lua_error(L, CHR_EINVAL, "%s: invalid field '%s': %s", what, field, bad);
}

static char *check_id(lua_State *L, int idx, const char *what) {
  size_t n;
  const char *s = chr_lua_checklstring(L, idx, &n);
  check_string(L, idx, what, "job_id");
  return chr_strndup(s, n);
}

int chr_lua_store_create(lua_State *L, chr_store_t *s, chr_job_t *job) {
  store_op_t *op = op_new(CHR_OP_CREATE);
  op->req.job = op->job = job;
  return op_run(L, s, op);
}

static int l_create_job(lua_State *L) {
  chr_store_t *s = chr_lua_checkstore(L, 1);
  chr_job_t *job = check_job(L, 2, 0, "create_job"); /* may raise: before op_new */
  return chr_lua_store_create(L, s, job);
}

/* Reads the records of the array at idx into a new create_jobs request;
 * `prepare`: each is a job as the scheduler creates it (chr_job_prepare,
 * at `now`), else a whole stored record. Raises `invalid` naming the
 * record, having freed what it read. */
static store_op_t *read_creates(lua_State *L, int idx, int prepare, int64_t now) {
  chr_lua_checktype(L, idx, LUA_TTABLE);
  size_t n = lua_rawlen(L, idx);
  store_op_t *op = op_new(CHR_OP_CREATE_MANY);
  op->creates = chr_calloc(n ? n : 1, sizeof *op->creates);
  for (size_t i = 0; i < n; i++) {
    char err[400];
    lua_rawgeti(L, idx, (lua_Integer)i + 1);
    if (!lua_istable(L, -1)) {
      op_free(op);
      chr_lua_error(L, CHR_EINVAL, "create_jobs: item %zu is not a table", i + 1);
    }
    chr_job_t *j = chr_job_new();
    op->creates[op->ncreates++].job = j;
    if (chr_job_from_lua(L, lua_gettop(L), j, prepare, err, sizeof err) != 0 ||
        (prepare && chr_job_prepare(j, now, err, sizeof err) != 0)) {
      op_free(op);
      chr_lua_error(L, CHR_EINVAL, "create_jobs: item %zu: %s", i + 1, err);
    }
    lua_pop(L, 1);
  }
  op->req.creates = op->creates;
  op->req.ncreates = op->ncreates;
  return op;
}

static int l_create_jobs(lua_State *L) {
  chr_store_t *s = chr_lua_checkstore(L, 1);
  return op_run(L, s, read_creates(L, 2, 0, 0));
}

int chr_lua_store_create_many(lua_State *L, chr_store_t *s, int idx, int64_t now) {
  store_op_t *op = read_creates(L, idx, 1, now);
  op->lean = 1;
  return op_run(L, s, op);
}

static int l_get_job(lua_State *L) {
  chr_store_t *s = chr_lua_checkstore(L, 1);
  char *id = check_id(L, 2, "get_job");
  store_op_t *op = op_new(CHR_OP_GET);
  op->req.id = op->id = id;
  return op_run(L, s, op);
}

/* An array of job ids; `field` names them in errors. */
static char **check_strings(lua_State *L, int idx, size_t *n, const char *what,
                            const char *field) {
  if (!lua_istable(L, idx)) chr_lua_error(L, CHR_EINVAL, "%s: expected an array of job ids", what);
  size_t len = lua_rawlen(L, idx);
  /* Checked before anything is copied: the errors raise. */
  for (size_t i = 0; i < len; i++) {
    lua_rawgeti(L, idx, (lua_Integer)i + 1);
    if (lua_type(L, -1) != LUA_TSTRING)
      chr_lua_error(L, CHR_EINVAL, "%s: ids must be strings (item %zu is a %s)", what, i + 1,
                    luaL_typename(L, -1));
    char name[64];
    snprintf(name, sizeof name, "%s[%zu]", field, i + 1);
    check_string(L, -1, what, name);
    lua_pop(L, 1);
  }
  char **ids = chr_calloc(len ? len : 1, sizeof *ids);
  for (size_t i = 0; i < len; i++) {
    lua_rawgeti(L, idx, (lua_Integer)i + 1);
    ids[i] = chr_strdup(lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  *n = len;
  return ids;
}

static int l_get_jobs_batch(lua_State *L) {
  chr_store_t *s = chr_lua_checkstore(L, 1);
  size_t n;
  char **ids = check_strings(L, 2, &n, "get_jobs_batch", "job_id");
  store_op_t *op = op_new(CHR_OP_GET_BATCH);
  op->ids = op->req.ids = ids;
  op->nids = op->req.nids = n;
  return op_run(L, s, op);
}

static int l_update_job(lua_State *L) {
  chr_store_t *s = chr_lua_checkstore(L, 1);
  free(check_id(L, 2, "update_job")); /* checked before anything is held */
  chr_job_t *u = check_job(L, 3, 1, "update_job");
  store_op_t *op = op_new(CHR_OP_UPDATE);
  op->req.id = op->id = check_id(L, 2, "update_job");
  op->req.job = op->job = u;
  return op_run(L, s, op);
}

static int l_cas(lua_State *L) {
  chr_store_t *s = chr_lua_checkstore(L, 1);
  free(check_id(L, 2, "compare_and_swap_job"));
  chr_lua_checktype(L, 3, LUA_TTABLE);
  chr_lua_checktype(L, 4, LUA_TTABLE);
  chr_job_t *e = check_job(L, 3, 1, "compare_and_swap_job expected");
  char err[300];
  chr_job_t *u = chr_job_new();
  if (chr_job_from_lua(L, 4, u, 1, err, sizeof err) != 0) {
    chr_job_free(e);
    chr_job_free(u);
    return chr_lua_error(L, CHR_EINVAL, "compare_and_swap_job updates: %s", err);
  }
  store_op_t *op = op_new(CHR_OP_CAS);
  op->req.expected = op->expected = e;
  op->req.job = op->job = u;
  op->req.id = op->id = check_id(L, 2, "compare_and_swap_job");
  return op_run(L, s, op);
}

static int l_delete_job(lua_State *L) {
  chr_store_t *s = chr_lua_checkstore(L, 1);
  char *id = check_id(L, 2, "delete_job");
  store_op_t *op = op_new(CHR_OP_DELETE);
  op->req.id = op->id = id;
  return op_run(L, s, op);
}

/* A bound within the years an ISO string carries: stores written in Lua
 * get it as one (chr_filter_push), and the smallest integer would read as
 * no bound at all (CHR_TIME_NONE). */
static int64_t filter_time(lua_State *L, int idx, const char *key) {
  char what[64];
  snprintf(what, sizeof what, "invalid filter '%s'", key);
  int64_t t = chr_lua_checktime(L, idx, NULL, what);
  if (t < CHR_TIME_MIN || t > CHR_TIME_MAX)
    chr_lua_error(L, CHR_EINVAL, "%s: %lld is out of range (times are " CHR_TIME_RANGE ")", what,
                  (long long)t);
  return t;
}

/* Filter keys and values follow the rule of the values they are compared
 * with (chr_job_check_value): a key or value with a NUL byte would
 * otherwise match a shorter one. Raises `invalid` naming the filter. */
static void check_filter_values(lua_State *L, int idx) {
  chr_buf_t path;
  char msg[80];
  chr_buf_init(&path);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int rc = 0;
    chr_buf_adds(&path, "");
    if (lua_type(L, -2) == LUA_TSTRING) {
      size_t n;
      const char *k = lua_tolstring(L, -2, &n);
      chr_job_add_shown(&path, k, n);
      const char *bad = chr_job_string_problem(k, n, msg, sizeof msg);
      if (bad == NULL) rc = chr_job_check_value(L, -1, &path, msg, sizeof msg);
      else rc = CHR_EINVAL;
    }
    if (rc != 0) {
      lua_pushstring(L, path.p);
      chr_buf_free(&path);
      chr_lua_error(L, CHR_EINVAL, "invalid filter '%s': %s", lua_tostring(L, -1), msg);
    }
    lua_pop(L, 1);
    path.len = 0;
  }
  chr_buf_free(&path);
}

#define FILTER_KEYS                                                                      \
  "status, trigger_type, next_run_time_lte/gte, updated_at_lte/gte, metadata.<key>, "   \
  "job_id_in"

static const char *const filter_keys[] = {
    "status",         "trigger_type",   "next_run_time_lte", "next_run_time_gte",
    "updated_at_lte", "updated_at_gte", "job_id_in",         NULL};

static int is_metadata_filter(const char *k) {
  return strncmp(k, "metadata.", 9) == 0 && k[9] != '\0';
}

/* Reads the filter table (argument 2) into f (argument 1, a light
 * userdata); raises on a bad key, leaving in f what it had converted.
 * Every unknown key is named at once, before any value is read. */
static int parse_filter(lua_State *L) {
  chr_filter_t *f = lua_touserdata(L, 1);
  char *const *own = lua_touserdata(L, 3);
  int idx = 2;
  if (own == NULL || own[0] == NULL) {
    chr_lua_checkkeys(L, idx, "filter", filter_keys, is_metadata_filter, FILTER_KEYS);
  } else { /* the store's own keys are known too */
    size_t n = 0, k = 0;
    while (own[n]) n++;
    const char **known = lua_newuserdatauv(L, (sizeof filter_keys / sizeof *filter_keys + n) *
                                                  sizeof *known, 0);
    for (; filter_keys[k]; k++) known[k] = filter_keys[k];
    for (size_t i = 0; i < n; i++) known[k++] = own[i];
    known[k] = NULL;
    chr_lua_checkkeys(L, idx, "filter", known, is_metadata_filter, FILTER_KEYS);
    lua_pop(L, 1);
  }
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    const char *k = lua_tostring(L, -2);
    int v = lua_gettop(L);
    if (strcmp(k, "status") == 0) {
      int bad = 0;
      if (lua_type(L, v) == LUA_TSTRING) {
        int st = chr_enum_parse(chr_status_names, CHR_ST__COUNT, lua_tostring(L, v));
        if (st) f->status_mask |= 1u << st;
        else bad = 1;
      } else if (lua_istable(L, v)) {
        for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, v); i++) {
          lua_rawgeti(L, v, i);
          int st = lua_type(L, -1) == LUA_TSTRING
                       ? chr_enum_parse(chr_status_names, CHR_ST__COUNT, lua_tostring(L, -1))
                       : 0;
          lua_pop(L, 1);
          if (st) f->status_mask |= 1u << st;
          else bad = 1;
        }
      } else {
        bad = 1;
      }
      if (bad)
        chr_lua_error(L, CHR_EINVAL, "invalid filter 'status': expected " CHR_STATUS_LIST);
    } else if (strcmp(k, "trigger_type") == 0) {
      const char *s = lua_type(L, v) == LUA_TSTRING ? lua_tostring(L, v) : "";
      f->trigger_type = chr_enum_parse(chr_trigger_type_names, CHR_TT__COUNT, s);
      if (!f->trigger_type)
        chr_lua_error(L, CHR_EINVAL, "invalid filter 'trigger_type': expected interval, cron "
                                     "or date");
    } else if (strcmp(k, "next_run_time_lte") == 0) {
      f->nrt_lte = filter_time(L, v, k);
    } else if (strcmp(k, "next_run_time_gte") == 0) {
      f->nrt_gte = filter_time(L, v, k);
    } else if (strcmp(k, "updated_at_lte") == 0) {
      f->upd_lte = filter_time(L, v, k);
    } else if (strcmp(k, "updated_at_gte") == 0) {
      f->upd_gte = filter_time(L, v, k);
    } else if (strcmp(k, "job_id_in") == 0) {
      f->ids = check_strings(L, v, &f->nids, "invalid filter 'job_id_in'", "job_id");
      f->has_ids = 1;
    } else if (is_metadata_filter(k)) {
      char err[200];
      f->meta = chr_realloc(f->meta, (f->nmeta + 1) * sizeof *f->meta);
      if (chr_lua_meta_cond(L, v, k + 9, &f->meta[f->nmeta], err, sizeof err) != 0)
        chr_lua_error(L, CHR_EINVAL, "invalid filter '%s': %s", k, err);
      f->nmeta++;
    } else { /* one of the store's own keys (checked above) */
      chr_buf_t b;
      char err[200];
      chr_buf_init(&b);
      if (chr_json_encode(L, v, &b, err, sizeof err) != 0) {
        chr_buf_free(&b);
        chr_lua_error(L, CHR_EINVAL, "invalid filter '%s': %s", k, err);
      }
      f->own = chr_realloc(f->own, (f->nown + 1) * sizeof *f->own);
      f->own[f->nown].key = chr_strdup(k);
      f->own[f->nown].value = chr_buf_steal(&b);
      f->nown++;
    }
    lua_settop(L, v - 1);
  }
  return 0;
}

/* stack: unchanged; raises on a bad filter, with f freed. The keys are
 * read in a protected call: whichever key raises, the ones read before it
 * may hold allocations. */
void chr_lua_checkfilter(lua_State *L, int idx, chr_filter_t *f) {
  chr_lua_checkfilter_own(L, idx, f, NULL);
}

void chr_lua_checkfilter_own(lua_State *L, int idx, chr_filter_t *f, char *const *own) {
  chr_filter_init(f);
  if (lua_isnoneornil(L, idx)) return;
  idx = lua_absindex(L, idx);
  if (!lua_istable(L, idx)) chr_lua_error(L, CHR_EINVAL, "filters must be a table, got %s",
                                          luaL_typename(L, idx));
  check_filter_values(L, idx);
  lua_pushcfunction(L, parse_filter);
  lua_pushlightuserdata(L, f);
  lua_pushvalue(L, idx);
  lua_pushlightuserdata(L, (void *)own);
  if (lua_pcall(L, 3, 0, 0) != LUA_OK) {
    chr_filter_free(f);
    lua_error(L);
  }
}

static int64_t opt_int(lua_State *L, int idx, int64_t def, const char *what) {
  if (lua_isnoneornil(L, idx)) return def;
  if (!lua_isinteger(L, idx) || lua_tointeger(L, idx) < 0)
    return chr_lua_error(L, CHR_EINVAL, "%s must be a non-negative integer", what);
  return lua_tointeger(L, idx);
}

static int l_query_jobs(lua_State *L) {
  chr_store_t *s = chr_lua_checkstore(L, 1);
  int64_t limit = opt_int(L, 3, -1, "limit"), offset = opt_int(L, 4, 0, "offset");
  chr_filter_t f;
  chr_lua_checkfilter_own(L, 2, &f, s->filter_keys);
  store_op_t *op = op_new(CHR_OP_QUERY);
  op->filter = f;
  op->req.filter = &op->filter;
  op->req.limit = limit;
  op->req.offset = offset;
  return op_run(L, s, op);
}

static int l_count_jobs(lua_State *L) {
  chr_store_t *s = chr_lua_checkstore(L, 1);
  chr_filter_t f;
  chr_lua_checkfilter_own(L, 2, &f, s->filter_keys);
  store_op_t *op = op_new(CHR_OP_COUNT);
  op->filter = f;
  op->req.filter = &op->filter;
  return op_run(L, s, op);
}

static int64_t field_time(lua_State *L, int t, const char *k, int64_t def) {
  lua_getfield(L, t, k);
  int64_t v = lua_isnil(L, -1) ? def : chr_lua_checktime(L, -1, NULL, k);
  lua_pop(L, 1);
  return v;
}

/* The longest lease a store call takes, in seconds (a year): past it,
 * now + lease would soon leave the range of times. */
#define MAX_LEASE_S 31536000.0

/* The lease_seconds option: a finite number of seconds, 0..MAX_LEASE_S (NaN
 * and infinities have no µs value: converting them is undefined). */
static int64_t field_lease(lua_State *L, int t, const char *what) {
  lua_getfield(L, t, "lease_seconds");
  double v = 30;
  if (!lua_isnil(L, -1)) {
    v = lua_tonumber(L, -1);
    if (lua_type(L, -1) != LUA_TNUMBER || !(v >= 0 && v <= MAX_LEASE_S))
      chr_lua_error(L, CHR_EINVAL, "%s: 'lease_seconds' must be a number of seconds from 0 to %.0f",
                    what, MAX_LEASE_S);
  }
  lua_pop(L, 1);
  return (int64_t)(v * 1e6);
}

/* The limit option: a non-negative integer, as query_jobs takes it. */
static int64_t field_limit(lua_State *L, int t, const char *what, int64_t def) {
  lua_getfield(L, t, "limit");
  int64_t v = def;
  if (!lua_isnil(L, -1)) {
    if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0)
      chr_lua_error(L, CHR_EINVAL, "%s: 'limit' must be a non-negative integer", what);
    v = lua_tointeger(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

static char *field_string(lua_State *L, int t, const char *k, int required, const char *what) {
  lua_getfield(L, t, k);
  if (lua_isnil(L, -1) && !required) {
    lua_pop(L, 1);
    return NULL;
  }
  if (lua_type(L, -1) != LUA_TSTRING) chr_lua_error(L, CHR_EINVAL, "'%s' must be a string", k);
  check_string(L, -1, what, k);
  char *s = chr_strdup(lua_tostring(L, -1));
  lua_pop(L, 1);
  return s;
}

/* A scope (the `filters` of claim_due_jobs, recover_expired_leases and
 * next_due_time) at idx into op's filter: metadata conditions and the
 * store's own keys only. Raises `invalid` before op is made. */
static void check_scope(lua_State *L, chr_store_t *s, int idx, const char *what, chr_filter_t *f) {
  chr_lua_checkfilter_own(L, idx, f, s->filter_keys);
  const char *bad = chr_filter_scope_offender(f);
  if (bad != NULL) {
    chr_filter_free(f);
    chr_lua_error(L, CHR_EINVAL, "%s: 'filters' may hold metadata.<key> conditions (and the "
                  "store's own filter keys) only, not '%s'", what, bad);
  }
}

/* (store, filters, light userdata filter, what): check_scope in a
 * protected call, for a caller that holds allocations. */
static int l_check_scope(lua_State *L) {
  check_scope(L, chr_lua_checkstore(L, 1), 2, lua_tostring(L, 4), lua_touserdata(L, 3));
  return 0;
}

static const char *const claim_keys[] = {"now",     "limit",  "lease_seconds", "owner",
                                         "filters", "queues", NULL};

/* An integer member k of the table at idx, 0 when absent. */
static int64_t queue_field(lua_State *L, int idx, const char *k, size_t i) {
  int isint = 1;
  lua_getfield(L, idx, k);
  int64_t v = lua_isnil(L, -1) ? 0 : (int64_t)lua_tointegerx(L, -1, &isint);
  if (!isint)
    chr_lua_error(L, CHR_EINVAL, "claim_due_jobs: queues[%d].%s must be an integer, got %s",
                  (int)i + 1, k, luaL_typename(L, -1));
  lua_pop(L, 1);
  return v;
}

/* queues = { {name =, limit =, global_limit =, rate_limit =, rate_period =
 * seconds}, ... } (core/store.h, chr_claim_queue_t) as an array in a
 * userdata (pushed), the names borrowed from the tables; NULL (and nil
 * pushed) without it. The store checks the values. stack: +1 */
static chr_claim_queue_t *check_claim_queues(lua_State *L, int opts, size_t *n) {
  static const char *const keys[] = {"name", "limit", "global_limit", "rate_limit", "rate_period",
                                     NULL};
  *n = 0;
  if (lua_getfield(L, opts, "queues") == LUA_TNIL) return NULL;
  int t = lua_gettop(L);
  chr_lua_checktype(L, t, LUA_TTABLE);
  size_t len = lua_rawlen(L, t);
  chr_claim_queue_t *q = lua_newuserdatauv(L, (len ? len : 1) * sizeof *q, 0);
  for (size_t i = 0; i < len; i++) {
    if (lua_rawgeti(L, t, (lua_Integer)i + 1) != LUA_TTABLE)
      chr_lua_error(L, CHR_EINVAL, "claim_due_jobs: queues[%d] must be a table, got %s",
                    (int)i + 1, luaL_typename(L, -1));
    int e = lua_gettop(L);
    chr_lua_checkkeys(L, e, "claim_due_jobs queue key", keys, NULL, NULL);
    lua_getfield(L, e, "name");
    if (lua_type(L, -1) != LUA_TSTRING)
      chr_lua_error(L, CHR_EINVAL, "claim_due_jobs: queues[%d].name must be a string, got %s",
                    (int)i + 1, luaL_typename(L, -1));
    q[i].name = lua_tostring(L, -1); /* held by the queue's table */
    lua_pop(L, 1);
    q[i].limit = queue_field(L, e, "limit", i);
    q[i].global_limit = queue_field(L, e, "global_limit", i);
    q[i].rate_limit = queue_field(L, e, "rate_limit", i);
    lua_getfield(L, e, "rate_period");
    double period = lua_isnil(L, -1) ? 0 : lua_tonumber(L, -1);
    if (!lua_isnil(L, -1) && !(lua_type(L, -1) == LUA_TNUMBER && period > 0 && period < 1e9))
      chr_lua_error(L, CHR_EINVAL, "claim_due_jobs: queues[%d].rate_period must be a number of "
                    "seconds > 0", (int)i + 1);
    q[i].rate_period_us = (int64_t)(period * 1e6);
    lua_pop(L, 2);
  }
  lua_remove(L, t); /* the options hold the tables, and the names */
  *n = len;
  return q;
}
static const char *const extend_keys[] = {"now", "lease_seconds", "owner", "ids", NULL};

static int l_claim_due_jobs(lua_State *L) {
  chr_store_t *s = chr_lua_checkstore(L, 1);
  chr_lua_checktype(L, 2, LUA_TTABLE);
  chr_lua_checkkeys(L, 2, "claim_due_jobs option", claim_keys, NULL, NULL);
  int64_t now = field_time(L, 2, "now", chr_time_now());
  int64_t limit = field_limit(L, 2, "claim_due_jobs", 100);
  int64_t lease_us = field_lease(L, 2, "claim_due_jobs");
  size_t nq;
  /* Its array stays on the stack until copied below. */
  const chr_claim_queue_t *queues = check_claim_queues(L, 2, &nq);
  char *owner = field_string(L, 2, "owner", 1, "claim_due_jobs");
  chr_filter_t f;
  lua_getfield(L, 2, "filters");
  lua_pushcfunction(L, l_check_scope);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, -3);
  lua_pushlightuserdata(L, &f);
  lua_pushliteral(L, "claim_due_jobs");
  if (lua_pcall(L, 4, 0, 0) != LUA_OK) {
    free(owner);
    return lua_error(L);
  }
  lua_pop(L, 1);
  store_op_t *op = op_new(CHR_OP_CLAIM);
  op->filter = f;
  if (!chr_filter_is_empty(&f)) op->req.filter = &op->filter;
  op->req.owner = op->owner = owner;
  op->req.now = now;
  op->req.limit = limit;
  if (nq) {
    op->queues = chr_malloc(nq * sizeof *op->queues);
    for (size_t i = 0; i < nq; i++) {
      op->queues[i] = queues[i];
      op->queues[i].name = chr_strdup(queues[i].name);
    }
    op->nqueues = nq;
    op->req.queues = op->queues;
    op->req.nqueues = nq;
  }
  op->req.lease_us = lease_us;
  return op_run(L, s, op);
}

/* (run table, item number) -> light userdata: the run. */
static int l_check_item_run(lua_State *L) {
  char what[64];
  snprintf(what, sizeof what, "complete_jobs: item %d", (int)lua_tointeger(L, 2));
  lua_pushlightuserdata(L, chr_lua_checkrun(L, 1, what));
  return 1;
}

/* (item, item number): raises `invalid` naming a key a completion item
 * does not have. */
static int l_check_item_keys(lua_State *L) {
  static const char *const keys[] = {"job_id", "owner", "delete", "updates", "run", NULL};
  char what[48];
  snprintf(what, sizeof what, "complete_jobs item %d key", (int)lua_tointeger(L, 2));
  chr_lua_checkkeys(L, 1, what, keys, NULL, NULL);
  return 0;
}

static int l_complete_jobs(lua_State *L) {
  chr_store_t *s = chr_lua_checkstore(L, 1);
  chr_lua_checktype(L, 2, LUA_TTABLE);
  size_t n = lua_rawlen(L, 2);
  store_op_t *op = op_new(CHR_OP_COMPLETE);
  op->items = chr_calloc(n ? n : 1, sizeof *op->items);
  for (size_t i = 0; i < n; i++, op->nitems++) {
    chr_completion_t *c = &op->items[i];
    lua_rawgeti(L, 2, (lua_Integer)i + 1);
    int t = lua_gettop(L);
    if (!lua_istable(L, t)) {
      op_free(op);
      chr_lua_error(L, CHR_EINVAL, "complete_jobs: item %zu is not a table", i + 1);
    }
    lua_pushcfunction(L, l_check_item_keys);
    lua_pushvalue(L, t);
    lua_pushinteger(L, (lua_Integer)i + 1);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
      op_free(op);
      lua_error(L);
    }
    lua_getfield(L, t, "job_id");
    lua_getfield(L, t, "owner");
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING) {
      op_free(op);
      chr_lua_error(L, CHR_EINVAL, "complete_jobs: item %zu needs job_id and owner", i + 1);
    }
    for (int k = -2; k <= -1; k++) {
      size_t len;
      char msg[80];
      const char *v = lua_tolstring(L, k, &len);
      const char *bad = chr_job_string_problem(v, len, msg, sizeof msg);
      if (bad) {
        op_free(op);
        chr_lua_error(L, CHR_EINVAL, "complete_jobs: item %zu: invalid field '%s': %s", i + 1,
                      k == -2 ? "job_id" : "owner", bad);
      }
    }
    c->job_id = chr_strdup(lua_tostring(L, -2));
    c->owner = chr_strdup(lua_tostring(L, -1));
    if (lua_getfield(L, t, "run") != LUA_TNIL) {
      /* Raises through a protected call so the items read so far are
       * freed. */
      lua_pushcfunction(L, l_check_item_run);
      lua_pushvalue(L, -2);
      lua_pushinteger(L, (lua_Integer)i + 1);
      if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
        op->nitems++;
        op_free(op);
        lua_error(L);
      }
      c->run = lua_touserdata(L, -1);
    }
    lua_getfield(L, t, "delete");
    c->remove = lua_toboolean(L, -1);
    lua_getfield(L, t, "updates");
    if (!c->remove) {
      char err[300];
      c->updates = chr_job_new();
      if (lua_istable(L, -1) &&
          chr_job_from_lua(L, lua_gettop(L), c->updates, 1, err, sizeof err) != 0) {
        op->nitems++;
        op_free(op);
        chr_lua_error(L, CHR_EINVAL, "complete_jobs: item %zu: %s", i + 1, err);
      }
    }
    lua_settop(L, t - 1);
  }
  op->req.items = op->items;
  op->req.nitems = op->nitems;
  return op_run(L, s, op);
}

/* Reads runs[i] into op (argument 1, a light userdata) one by one, so a
 * raise leaves op with what it read, for the caller to free. */
static int read_runs(lua_State *L) {
  store_op_t *op = lua_touserdata(L, 1);
  size_t n = lua_rawlen(L, 2);
  op->runs = chr_calloc(n ? n : 1, sizeof *op->runs);
  for (size_t i = 0; i < n; i++) {
    char what[48];
    snprintf(what, sizeof what, "record_runs: run %zu", i + 1);
    lua_rawgeti(L, 2, (lua_Integer)i + 1);
    op->runs[op->nruns] = chr_lua_checkrun(L, -1, what);
    op->nruns++;
    lua_pop(L, 1);
  }
  return 0;
}

static int l_record_runs(lua_State *L) {
  chr_store_t *s = chr_lua_checkstore(L, 1);
  chr_lua_checktype(L, 2, LUA_TTABLE);
  store_op_t *op = op_new(CHR_OP_RECORD_RUNS);
  lua_pushcfunction(L, read_runs);
  lua_pushlightuserdata(L, op);
  lua_pushvalue(L, 2);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    op_free(op);
    lua_error(L);
  }
  op->req.runs = op->runs;
  op->req.nruns = op->nruns;
  return op_run(L, s, op);
}

static int l_query_runs(lua_State *L) {
  chr_store_t *s = chr_lua_checkstore(L, 1);
  int64_t limit = opt_int(L, 3, -1, "limit"), offset = opt_int(L, 4, 0, "offset");
  chr_run_filter_t f;
  chr_lua_check_run_filter(L, 2, &f);
  store_op_t *op = op_new(CHR_OP_QUERY_RUNS);
  op->run_filter = f;
  op->req.run_filter = &op->run_filter;
  op->req.limit = limit;
  op->req.offset = offset;
  return op_run(L, s, op);
}

static int l_recover(lua_State *L) {
  chr_store_t *s = chr_lua_checkstore(L, 1);
  int64_t now = lua_isnoneornil(L, 2) ? chr_time_now() : chr_lua_checktime(L, 2, NULL, "now");
  chr_filter_t f;
  check_scope(L, s, 3, "recover_expired_leases", &f);
  store_op_t *op = op_new(CHR_OP_RECOVER);
  op->filter = f;
  if (!chr_filter_is_empty(&f)) op->req.filter = &op->filter;
  op->req.now = now;
  return op_run(L, s, op);
}

static int l_extend(lua_State *L) {
  chr_store_t *s = chr_lua_checkstore(L, 1);
  chr_lua_checktype(L, 2, LUA_TTABLE);
  chr_lua_checkkeys(L, 2, "extend_leases option", extend_keys, NULL, NULL);
  int64_t now = field_time(L, 2, "now", chr_time_now());
  int64_t lease_us = field_lease(L, 2, "extend_leases");
  lua_getfield(L, 2, "owner"); /* checked first: the checks of ids raise */
  if (lua_type(L, -1) != LUA_TSTRING) return chr_lua_error(L, CHR_EINVAL, "'owner' must be a string");
  check_string(L, -1, "extend_leases", "owner");
  lua_getfield(L, 2, "ids");
  size_t nids;
  char **ids = check_strings(L, -1, &nids, "extend_leases", "ids");
  lua_pop(L, 1);
  char *owner = chr_strdup(lua_tostring(L, -1));
  store_op_t *op = op_new(CHR_OP_EXTEND);
  op->req.owner = op->owner = owner;
  op->ids = op->req.ids = ids;
  op->req.nids = op->nids = nids;
  op->req.now = now;
  op->req.lease_us = lease_us;
  return op_run(L, s, op);
}

static int l_next_due(lua_State *L) {
  chr_store_t *s = chr_lua_checkstore(L, 1);
  chr_filter_t f;
  check_scope(L, s, 2, "next_due_time", &f);
  store_op_t *op = op_new(CHR_OP_NEXT_DUE);
  op->filter = f;
  if (!chr_filter_is_empty(&f)) op->req.filter = &op->filter;
  return op_run(L, s, op);
}

static int l_close(lua_State *L) {
  lstore_t *s = chr_lua_checkudata(L, 1, STORE_MT);
  if (s->store) {
    chr_store_close(s->store);
    s->store = NULL;
  }
  return 0;
}

static int l_tostring(lua_State *L) {
  lstore_t *s = chr_lua_checkudata(L, 1, STORE_MT);
  if (s->store) lua_pushfstring(L, "chronis.store(%s)", s->store->vt->kind);
  else lua_pushliteral(L, "chronis.store(closed)");
  return 1;
}

static int l_kind(lua_State *L) {
  lua_pushstring(L, chr_lua_checkstore(L, 1)->vt->kind);
  return 1;
}

/* The contract's methods, by chr_store_ops (names there). */
static const lua_CFunction op_methods[CHR_OP__COUNT + 1] = {
    [CHR_OP_CREATE] = l_create_job,       [CHR_OP_GET] = l_get_job,
    [CHR_OP_CREATE_MANY] = l_create_jobs,
    [CHR_OP_GET_BATCH] = l_get_jobs_batch, [CHR_OP_UPDATE] = l_update_job,
    [CHR_OP_CAS] = l_cas,                 [CHR_OP_DELETE] = l_delete_job,
    [CHR_OP_QUERY] = l_query_jobs,        [CHR_OP_COUNT] = l_count_jobs,
    [CHR_OP_CLAIM] = l_claim_due_jobs,    [CHR_OP_COMPLETE] = l_complete_jobs,
    [CHR_OP_RECOVER] = l_recover,         [CHR_OP_EXTEND] = l_extend,
    [CHR_OP_NEXT_DUE] = l_next_due,       [CHR_OP_RECORD_RUNS] = l_record_runs,
    [CHR_OP_QUERY_RUNS] = l_query_runs,   [CHR_STORE_CLOSE] = l_close,
};

static const luaL_Reg store_meta[] = {
    {"__gc", l_close}, {"__close", l_close}, {"__tostring", l_tostring}, {NULL, NULL}};

void chr_lua_pushstore(lua_State *L, chr_store_t *st) {
  lstore_t *s = lua_newuserdatauv(L, sizeof *s, 0);
  s->store = st;
  if (luaL_newmetatable(L, STORE_MT)) {
    luaL_setfuncs(L, store_meta, 0);
    lua_createtable(L, 0, CHR_OP__COUNT + 2);
    for (int i = 0; i <= CHR_STORE_CLOSE; i++) {
      lua_pushcfunction(L, op_methods[i]);
      lua_setfield(L, -2, chr_store_ops[i].name);
    }
    lua_pushcfunction(L, l_kind);
    lua_setfield(L, -2, "kind");
    lua_setfield(L, -2, "__index");
  }
  lua_setmetatable(L, -2);
}

static int open_store(lua_State *L, const char *const *schemes);

/* memory([options]): history and history_days are its options. */
static int l_memory(lua_State *L) {
  static const char *const names[] = {"memory", NULL};
  if (lua_isnoneornil(L, 1)) {
    chr_lua_pushstore(L, chr_memory_store_new());
    return 1;
  }
  return open_store(L, names);
}

/* ---- opening: a URL, an option table, or both ---- */

/* Adds the entries of the table at idx to o, except `scheme`. Returns 0,
 * or CHR_EINVAL with a message naming the entry. */
static int add_table_opts(lua_State *L, int idx, chr_opts_t *o, char *err, size_t errlen) {
  int rc = 0;
  lua_pushnil(L);
  while (rc == 0 && lua_next(L, idx)) {
    char num[64];
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL, *v = NULL;
    size_t vn = 0;
    int t = lua_type(L, -1);
    if (t == LUA_TSTRING) {
      v = lua_tolstring(L, -1, &vn);
    } else if (t == LUA_TBOOLEAN) {
      v = lua_toboolean(L, -1) ? "true" : "false";
      vn = strlen(v);
    } else if (t == LUA_TNUMBER) {
      lua_Number d = lua_tonumber(L, -1);
      /* 5.0 reads as 5: options that take integers would refuse "5.0".
       * The range first: NaN, infinities and huge values must not reach
       * the cast (undefined behaviour), they are written as they are. */
      if (lua_isinteger(L, -1)) snprintf(num, sizeof num, LUA_INTEGER_FMT, lua_tointeger(L, -1));
      else if (d > -1e15 && d < 1e15 && d == (lua_Number)(long long)d)
        snprintf(num, sizeof num, "%lld", (long long)d);
      else snprintf(num, sizeof num, "%.17g", (double)d);
      v = num;
      vn = strlen(v);
    }
    if (k == NULL)
      rc = chr_opts_fail(o, err, errlen, "option names must be strings, got a %s",
                         luaL_typename(L, -2));
    else if (v == NULL)
      rc = chr_opts_fail(o, err, errlen, "option '%s' must be a string, number or boolean, got "
                         "a %s", k, luaL_typename(L, -1));
    else if (strlen(v) != vn || strlen(k) != lua_rawlen(L, -2))
      rc = chr_opts_fail(o, err, errlen, "option '%s' holds a NUL byte", k);
    else if (strcmp(k, "scheme") != 0)
      rc = chr_opts_add(o, k, v, err, errlen);
    lua_pop(L, 1);
  }
  if (rc != 0) lua_pop(L, 1); /* the key lua_next left */
  return rc;
}

static int is_one_of(const char *name, const char *const *names) {
  for (; *names; names++)
    if (strcmp(name, *names) == 0) return 1;
  return 0;
}

/* Whether url starts with one of the schemes and a ':'. */
static int has_scheme(const char *url, const char *const *schemes) {
  for (; *schemes; schemes++) {
    size_t n = strlen(*schemes);
    if (strncmp(url, *schemes, n) == 0 && url[n] == ':') return 1;
  }
  return 0;
}

void chr_lua_checkopts(lua_State *L, const char *const *schemes, int lock, chr_opts_t *o) {
  const char *what = lock ? "lock" : "storage";
  char err[400];
  int rc = 0;
  int t1 = lua_type(L, 1);
  if (t1 != LUA_TSTRING && t1 != LUA_TTABLE && (t1 > LUA_TNIL || schemes == NULL))
    chr_lua_typeerror(L, 1, schemes ? "string, table or nil" : "string or table");
  chr_opts_init(o);
  lua_settop(L, 2); /* what is pushed below stays above the arguments */
  if (lua_type(L, 1) == LUA_TSTRING) {
    /* A URL; kind(arg) also takes it without its scheme: "sqlite:" + arg. */
    size_t len;
    const char *url = lua_tolstring(L, 1, &len);
    /* C reads the URL up to its first NUL: "sqlite:/tmp/a\0b" would open
     * /tmp/a. Refused as %00 is, without quoting the URL (a password may
     * follow). */
    if (strlen(url) != len)
      chr_lua_error(L, CHR_EINVAL, "invalid %s URL: a NUL byte (byte %d) is not allowed", what,
                    (int)strlen(url) + 1);
    if (schemes != NULL && !has_scheme(url, schemes))
      url = lua_pushfstring(L, "%s:%s", schemes[0], url);
    rc = lock ? chr_lock_url_opts(url, o, err, sizeof err)
              : chr_store_url_opts(url, o, err, sizeof err);
  } else if (lua_istable(L, 1)) {
    int t = lua_getfield(L, 1, "scheme");
    const char *scheme = t == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    if (t != LUA_TNIL && t != LUA_TSTRING)
      chr_lua_error(L, CHR_EINVAL, "invalid %s options: 'scheme' must be a string", what);
    if (scheme == NULL && schemes == NULL)
      chr_lua_error(L, CHR_EINVAL, "invalid %s options: 'scheme' is required (%s)", what,
                    lock ? "memory, redis" : "memory, sqlite, postgres, redis, file, lua");
    if (scheme != NULL && schemes != NULL && !is_one_of(scheme, schemes))
      chr_lua_error(L, CHR_EINVAL, "invalid %s options: scheme '%s' is not %s", what, scheme,
                    schemes[0]);
    o->scheme = chr_strdup(scheme ? scheme : schemes[0]);
    o->desc = chr_sprintf("%s %s options", o->scheme, what);
    lua_pop(L, 1);
    rc = add_table_opts(L, 1, o, err, sizeof err);
  } else { /* nil, for kind(): its defaults */
    o->scheme = chr_strdup(schemes[0]);
    o->desc = chr_sprintf("%s %s options", o->scheme, what);
  }
  /* Anything else at 2 is ignored, as it always was: open(url:gsub(...))
   * passes gsub's count along. */
  if (rc == 0 && lua_istable(L, 2)) rc = add_table_opts(L, 2, o, err, sizeof err);
  if (rc != 0) {
    chr_opts_free(o);
    chr_lua_error(L, rc, "%s", err);
  }
}

/* open(url_or_options [, options]), kind(url_or_options [, options]) */
static int open_store(lua_State *L, const char *const *schemes) {
  chr_opts_t o;
  char err[400];
  chr_store_t *s;
  chr_lua_checkopts(L, schemes, 0, &o);
  int rc = chr_store_open_opts(&o, &s, err, sizeof err);
  chr_opts_free(&o);
  if (rc != 0) return chr_lua_error(L, rc, "%s", err);
  chr_lua_pushstore(L, s);
  return 1;
}

static int l_open(lua_State *L) {
  return open_store(L, NULL);
}

static int l_sqlite(lua_State *L) {
  static const char *const names[] = {"sqlite", NULL};
  return open_store(L, names);
}

static int l_postgres(lua_State *L) {
  static const char *const names[] = {"postgres", "postgresql", NULL};
  return open_store(L, names);
}

static int l_redis(lua_State *L) {
  static const char *const names[] = {"redis", NULL};
  return open_store(L, names);
}

/* The checks of the C stores' Lua face, for stores written in Lua
 * (chronis.adapter_kit): the same rule and the same errors on every store.
 * check_job(job, where): raises "<where>: invalid field '...': ..." for a
 * value no store may keep (chr_job_check_fields). */
static int l_check_job(lua_State *L) {
  const char *where = chr_lua_checkstring(L, 2);
  char err[300];
  if (chr_job_check_fields(L, 1, err, sizeof err) != 0)
    return chr_lua_error(L, CHR_EINVAL, "%s: %s", where, err);
  return 0;
}

/* check_id(id, where [, field]): raises for an id (or the string the
 * field names) with a NUL byte or invalid UTF-8. */
static int l_check_id(lua_State *L) {
  const char *where = chr_lua_checkstring(L, 2);
  const char *field = chr_lua_optstring(L, 3, "job_id");
  chr_lua_checktype(L, 1, LUA_TSTRING);
  check_string(L, 1, where, field);
  return 0;
}

/* check_filters(filters): raises as query_jobs does for a filter key or
 * value that breaks the rule (the keys and their meaning are the
 * adapter's to check). */
static int l_check_filters(lua_State *L) {
  if (lua_istable(L, 1)) check_filter_values(L, 1);
  return 0;
}

/* ---- the contract for stores written in Lua ----
 *
 * chronis.adapter_kit gives stores written in Lua the rules, filters and
 * orders of the C stores by calling these: the same code decides in every
 * store. They read records (plain job tables as a store keeps them). */

#define FILTER_MT "chronis.filter"

/* A compiled filter: filters checked once, then :match(record). */
typedef struct lfilter {
  chr_filter_t f;
  uint32_t fields; /* the typed fields the filter reads (CHR_BIT) */
} lfilter_t;

static void job_init(chr_job_t *j) {
  memset(j, 0, sizeof *j);
  chr_job_clear(j);
}

/* Reads what the fields mask (and member) name of the record at idx into
 * j, a job_init'ed record; raises `invalid`, with j cleared, when one has
 * the wrong type. */
static void read_record(lua_State *L, int idx, chr_job_t *j, uint32_t fields, const char *member,
                        const char *where) {
  char err[300];
  if (chr_job_from_lua_fields(L, idx, j, fields, member, err, sizeof err) == 0) return;
  chr_job_clear(j);
  chr_lua_error(L, CHR_EINVAL, "%s: %s", where, err);
}

/* filter(filters) -> a compiled filter; raises as query_jobs does. */
static int l_filter(lua_State *L) {
  lua_settop(L, 1);
  lfilter_t *u = lua_newuserdatauv(L, sizeof *u, 0);
  chr_filter_init(&u->f);
  u->fields = 0;
  luaL_setmetatable(L, FILTER_MT); /* collected, and freed, if a check raises */
  chr_lua_checkfilter(L, 1, &u->f);
  const chr_filter_t *f = &u->f;
  if (f->status_mask) u->fields |= CHR_BIT(CHR_F_STATUS);
  if (f->trigger_type) u->fields |= CHR_BIT(CHR_F_TRIGGER_TYPE);
  if (f->nrt_lte != CHR_TIME_NONE || f->nrt_gte != CHR_TIME_NONE)
    u->fields |= CHR_BIT(CHR_F_NEXT_RUN_TIME);
  if (f->upd_lte != CHR_TIME_NONE || f->upd_gte != CHR_TIME_NONE)
    u->fields |= CHR_BIT(CHR_F_UPDATED_AT);
  if (f->has_ids) u->fields |= CHR_BIT(CHR_F_JOB_ID);
  return 1;
}

/* filter:match(record) -> whether the record passes every filter
 * (chr_filter_match). */
static int l_filter_match(lua_State *L) {
  lfilter_t *u = luaL_checkudata(L, 1, FILTER_MT);
  chr_job_t j;
  job_init(&j);
  read_record(L, 2, &j, u->fields, u->f.nmeta ? "metadata" : NULL, "filter");
  int ok = (!u->f.has_ids || chr_job_has(&j, CHR_F_JOB_ID)) && chr_filter_match(&u->f, &j);
  chr_job_clear(&j);
  lua_pushboolean(L, ok);
  return 1;
}

void chr_lua_push_unique_ids(lua_State *L, char *const *ids, size_t n) {
  lua_createtable(L, (int)n, 0);
  lua_createtable(L, 0, (int)n); /* seen */
  lua_Integer k = 0;
  for (size_t i = 0; i < n; i++) {
    if (lua_getfield(L, -1, ids[i]) != LUA_TNIL) {
      lua_pop(L, 1);
      continue;
    }
    lua_pop(L, 1);
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, ids[i]);
    lua_pushstring(L, ids[i]);
    lua_rawseti(L, -3, ++k);
  }
  lua_pop(L, 1);
}

/* filter:ids() -> the ids of job_id_in, first occurrences in order, or nil
 * without job_id_in: a store can look them up rather than scan. */
static int l_filter_ids(lua_State *L) {
  lfilter_t *u = luaL_checkudata(L, 1, FILTER_MT);
  if (!u->f.has_ids) return 0;
  chr_lua_push_unique_ids(L, u->f.ids, u->f.nids);
  return 1;
}

static int l_filter_gc(lua_State *L) {
  chr_filter_free(&((lfilter_t *)luaL_checkudata(L, 1, FILTER_MT))->f);
  return 0;
}

/* A sort key: the fields the orders read, and where the element was. */
typedef struct skey {
  chr_job_t job; /* first: a pointer to a key is one to its job */
  lua_Integer pos;
} skey_t;

static void free_keys(skey_t *keys, lua_Integer n, skey_t **order) {
  for (lua_Integer i = 0; i < n; i++) chr_job_clear(&keys[i].job);
  free(keys);
  free(order);
}

/* sort(list, "query" | "claim" [, rec_of]) -> list, sorted in place by
 * chr_job_cmp_query or chr_job_cmp_claim; rec_of(element) gives the record
 * of an element when the list holds something else. */
static int l_sort(lua_State *L) {
  static const char *const orders[] = {"query", "claim", NULL};
  luaL_checktype(L, 1, LUA_TTABLE);
  int claim = luaL_checkoption(L, 2, NULL, orders);
  int rec_of = !lua_isnoneornil(L, 3);
  lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
  lua_settop(L, 3);
  /* Elements and their records first: rec_of may raise, and nothing is
   * held in C yet. */
  lua_createtable(L, (int)n, 0); /* 4: elements */
  lua_createtable(L, (int)n, 0); /* 5: records */
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, i);
    lua_pushvalue(L, -1);
    lua_rawseti(L, 4, i);
    if (rec_of) {
      lua_pushvalue(L, 3);
      lua_insert(L, -2);
      lua_call(L, 1, 1);
    }
    lua_rawseti(L, 5, i);
  }
  skey_t *keys = chr_calloc(n ? (size_t)n : 1, sizeof *keys);
  skey_t **order = chr_malloc((n ? (size_t)n : 1) * sizeof *order);
  for (lua_Integer i = 0; i < n; i++) job_init(&keys[i].job);
  for (lua_Integer i = 0; i < n; i++) {
    char err[300];
    int rc;
    keys[i].pos = i + 1;
    order[i] = &keys[i];
    lua_rawgeti(L, 5, i + 1);
    rc = chr_job_from_lua_fields(L, -1, &keys[i].job,
                                 CHR_BIT(CHR_F_JOB_ID) | CHR_BIT(CHR_F_NEXT_RUN_TIME) |
                                     CHR_BIT(CHR_F_PRIORITY),
                                 NULL, err, sizeof err);
    lua_pop(L, 1);
    if (rc == 0 && !chr_job_has(&keys[i].job, CHR_F_JOB_ID))
      rc = chr_errf(err, sizeof err, "a record without job_id");
    if (rc != 0) {
      free_keys(keys, n, order);
      return chr_lua_error(L, CHR_EINVAL, "sort: item %lld: %s", (long long)i + 1, err);
    }
  }
  qsort(order, (size_t)n, sizeof *order, claim ? chr_job_cmp_claim : chr_job_cmp_query);
  for (lua_Integer i = 0; i < n; i++) {
    lua_rawgeti(L, 4, order[i]->pos);
    lua_rawseti(L, 1, i + 1);
  }
  free_keys(keys, n, order);
  lua_settop(L, 1);
  return 1;
}

/* matches(record, expected) -> the compare-and-swap test (chr_job_matches):
 * every expected field equal, times as instants, null as absent. */
static int l_matches(lua_State *L) {
  chr_job_t *j = chr_job_new(), *e = chr_job_new();
  char err[300];
  int rc = chr_job_from_lua(L, 1, j, 1, err, sizeof err);
  if (rc == 0) rc = chr_job_from_lua(L, 2, e, 1, err, sizeof err);
  int ok = rc == 0 && chr_job_matches(j, e);
  chr_job_free(j);
  chr_job_free(e);
  if (rc != 0) return chr_lua_error(L, CHR_EINVAL, "compare_and_swap_job: %s", err);
  lua_pushboolean(L, ok);
  return 1;
}

/* completion_result(item, record | nil) -> {job_id =, ok =, code =}, by
 * chr_store_completion_result. */
static int l_completion_result(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 2);
  lua_getfield(L, 1, "job_id"); /* 3 */
  lua_getfield(L, 1, "owner");  /* 4 */
  if (lua_type(L, 3) != LUA_TSTRING || lua_type(L, 4) != LUA_TSTRING)
    return chr_lua_error(L, CHR_EINVAL, "complete_jobs: an item needs job_id and owner (strings)");
  chr_completion_t c = {0};
  c.job_id = (char *)lua_tostring(L, 3);
  c.owner = (char *)lua_tostring(L, 4);
  chr_job_t j;
  job_init(&j);
  if (!lua_isnil(L, 2)) read_record(L, 2, &j, CHR_BIT(CHR_F_CLAIMED_BY), NULL, "complete_jobs");
  int result = chr_store_completion_result(&c, lua_isnil(L, 2) ? NULL : &j);
  chr_job_clear(&j);
  lua_createtable(L, 0, 3);
  lua_pushvalue(L, 3);
  lua_setfield(L, -2, "job_id");
  lua_pushboolean(L, result == 0);
  lua_setfield(L, -2, "ok");
  if (result != 0) {
    lua_pushstring(L, chr_strerror(result));
    lua_setfield(L, -2, "code");
  }
  return 1;
}

/* Reads the partial record at idx, for the rule checks below; raises
 * "<where>: ..." for a value no store may keep or a typed field of the
 * wrong type. */
static chr_job_t *check_partial(lua_State *L, int idx, const char *where) {
  char err[300];
  chr_job_t *j = chr_job_new();
  if (chr_job_from_lua(L, idx, j, 1, err, sizeof err) != 0) {
    chr_job_free(j);
    chr_lua_error(L, CHR_EINVAL, "%s: %s", where, err);
  }
  return j;
}

/* check_record(job, where): raises `invalid` unless job may be created
 * (chr_store_record_check), as create_job does on every store. */
static int l_check_record(lua_State *L) {
  const char *where = luaL_checkstring(L, 2);
  char err[400];
  chr_job_t *j = check_partial(L, 1, where);
  int rc = chr_store_record_check(j, where, err, sizeof err);
  chr_job_free(j);
  if (rc != 0) return chr_lua_error(L, rc, "%s", err);
  return 0;
}

/* check_updates(id, updates [, op]): raises `invalid` unless updates may
 * be applied to job id (chr_store_updates_check), and with op
 * "update_job", by update_job (chr_store_update_only_check too). */
static int l_check_updates(lua_State *L) {
  const char *id = luaL_checkstring(L, 1);
  int update_only = !lua_isnoneornil(L, 3);
  if (update_only && strcmp(luaL_checkstring(L, 3), "update_job") != 0)
    return luaL_argerror(L, 3, "expected \"update_job\" or nothing");
  char err[400];
  lua_settop(L, 2);
  lua_pushfstring(L, "job '%s'", id);
  chr_job_t *u = check_partial(L, 2, lua_tostring(L, -1));
  int rc = chr_store_updates_check(id, u, err, sizeof err);
  if (rc == 0 && update_only) rc = chr_store_update_only_check(id, u, err, sizeof err);
  chr_job_free(u);
  if (rc != 0) return chr_lua_error(L, rc, "%s", err);
  return 0;
}

/* stack: +1 the contract's table (chr_store_ops) as an array of {name =,
 * required =, params =}: what stores written in Lua implement, what
 * `chronis check` and the specs read. */
static void push_operations(lua_State *L) {
  lua_createtable(L, CHR_STORE_CLOSE + 1, 0);
  for (int i = 0; i <= CHR_STORE_CLOSE; i++) {
    lua_createtable(L, 0, 3);
    lua_pushstring(L, chr_store_ops[i].name);
    lua_setfield(L, -2, "name");
    lua_pushboolean(L, chr_store_ops[i].required);
    lua_setfield(L, -2, "required");
    lua_pushinteger(L, chr_store_ops[i].nparams);
    lua_setfield(L, -2, "params");
    lua_rawseti(L, -2, i + 1);
  }
}

/* url_options(url) -> scheme, { option = value, ... }: what a store URL
 * stands for (the one parser of chronis.storage.open; every value a
 * string), without opening anything. Raises as open() does on a URL that
 * cannot be read. */
static int l_url_options(lua_State *L) {
  const char *url = chr_lua_checkstring(L, 1);
  chr_opts_t o;
  char err[400];
  if (chr_store_url_opts(url, &o, err, sizeof err) != 0) return chr_lua_error(L, CHR_EINVAL, "%s", err);
  lua_pushstring(L, o.scheme);
  lua_createtable(L, 0, (int)o.n);
  for (size_t i = 0; i < o.n; i++) {
    lua_pushstring(L, o.v[i].val);
    lua_setfield(L, -2, o.v[i].key);
  }
  chr_opts_free(&o);
  return 2;
}

int luaopen_chronis_storage(lua_State *L) {
  static const luaL_Reg fns[] = {{"memory", l_memory},
                                 {"open", l_open},
                                 {"sqlite", l_sqlite},
                                 {"postgres", l_postgres},
                                 {"redis", l_redis},
                                 {"check_job", l_check_job},
                                 {"check_id", l_check_id},
                                 {"check_filters", l_check_filters},
                                 {"check_record", l_check_record},
                                 {"check_updates", l_check_updates},
                                 {"filter", l_filter},
                                 {"sort", l_sort},
                                 {"matches", l_matches},
                                 {"completion_result", l_completion_result},
                                 {"url_options", l_url_options},
                                 {NULL, NULL}};
  static const luaL_Reg filter_methods[] = {
      {"match", l_filter_match}, {"ids", l_filter_ids}, {NULL, NULL}};
  if (luaL_newmetatable(L, FILTER_MT)) {
    lua_pushcfunction(L, l_filter_gc);
    lua_setfield(L, -2, "__gc");
    luaL_newlib(L, filter_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_newlib(L, fns);
  chr_lua_run_kit(L);
  push_operations(L);
  lua_setfield(L, -2, "operations");
  return 1;
}
