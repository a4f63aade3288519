/* filters.c - fuzzes query filters: their validation from a Lua table
 * (chr_lua_checkfilter, runtime/lua/store.c), the table given back to
 * stores written in Lua (chr_filter_push), and matching (chr_filter_match)
 * against the memory store's indexed query and count.
 *
 * Input: the filter as JSON text (decoded to a Lua table), optionally
 * followed by a NUL byte and a job record as JSON.
 * Invariants: a filter is accepted, or refused with an error table
 * {code = "invalid", message = ...}; an accepted filter, pushed back to
 * Lua and read again, is the same filter; a job matches it exactly when
 * the memory store's query and count of the filter find the job. */
#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>

#include "core/job.h"
#include "core/store.h"
#include "fuzz.h"
#include "lua/json.h"
#include "lua/store.h"

static lua_State *L;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  L = luaL_newstate();
  return L ? 0 : -1;
}

static int check(lua_State *S) {
  chr_filter_t *f = lua_touserdata(S, 2);
  chr_lua_checkfilter(S, 1, f);
  return 0;
}

/* Reads the value on top into f; 0, or -1 with the error checked. */
static int read_filter(chr_filter_t *f) {
  lua_pushcfunction(L, check);
  lua_insert(L, -2);
  lua_pushlightuserdata(L, f);
  if (lua_pcall(L, 2, 0, 0) == LUA_OK) return 0;
  FUZZ_CHECK(lua_istable(L, -1), "a bare %s was raised", luaL_typename(L, -1));
  lua_getfield(L, -1, "code");
  lua_getfield(L, -2, "message");
  FUZZ_CHECK(lua_type(L, -2) == LUA_TSTRING && strcmp(lua_tostring(L, -2), "invalid") == 0,
             "error code");
  FUZZ_CHECK(lua_type(L, -1) == LUA_TSTRING, "error message");
  lua_pop(L, 3);
  return -1;
}

static int same_str(const char *a, const char *b) {
  return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

static void check_same(const chr_filter_t *a, const chr_filter_t *b) {
  FUZZ_CHECK(a->status_mask == b->status_mask && a->trigger_type == b->trigger_type,
             "status or trigger type");
  FUZZ_CHECK(a->nrt_lte == b->nrt_lte && a->nrt_gte == b->nrt_gte && a->upd_lte == b->upd_lte &&
                 a->upd_gte == b->upd_gte,
             "bounds %lld %lld %lld %lld", (long long)a->nrt_lte, (long long)a->nrt_gte,
             (long long)a->upd_lte, (long long)a->upd_gte);
  FUZZ_CHECK(a->has_ids == b->has_ids && a->nids == b->nids, "job_id_in");
  for (size_t i = 0; i < a->nids; i++) FUZZ_CHECK(same_str(a->ids[i], b->ids[i]), "id %zu", i);
  FUZZ_CHECK(a->nmeta == b->nmeta, "metadata count %zu %zu", a->nmeta, b->nmeta);
  /* Table order may differ: each path once, with its value. */
  for (size_t i = 0; i < a->nmeta; i++) {
    size_t k = 0;
    while (k < b->nmeta && strcmp(a->meta[i].path, b->meta[k].path) != 0) k++;
    FUZZ_CHECK(k < b->nmeta && same_str(a->meta[i].value, b->meta[k].value), "metadata.%s",
               a->meta[i].path);
  }
}

static void answered(chr_store_req_t *req) { (void)req; }

static void check_store(const chr_filter_t *f, chr_job_t *j) {
  char err[256];
  if (chr_store_record_check(j, "fuzz", err, sizeof err) != 0) return;
  chr_store_t *s = chr_memory_store_new();
  chr_store_req_t req;
  chr_store_req_init(&req, CHR_OP_CREATE);
  req.cb = answered;
  req.job = j;
  FUZZ_CHECK(chr_store_submit(s, &req) == 0 && req.status == 0, "create: %s",
             req.errmsg ? req.errmsg : "");
  chr_store_req_reset(&req);
  /* The match of the stored record: the store may normalise it. */
  chr_store_req_init(&req, CHR_OP_GET);
  req.cb = answered;
  req.id = j->job_id;
  FUZZ_CHECK(chr_store_submit(s, &req) == 0 && req.status == 0 && req.njobs == 1, "get");
  int match = chr_filter_match(f, req.jobs[0]);
  chr_store_req_reset(&req);

  chr_store_req_init(&req, CHR_OP_QUERY);
  req.cb = answered;
  req.filter = (chr_filter_t *)f;
  FUZZ_CHECK(chr_store_submit(s, &req) == 0 && req.status == 0, "query: %s",
             req.errmsg ? req.errmsg : "");
  FUZZ_CHECK((int)req.njobs == match, "query finds %zu, match says %d", req.njobs, match);
  chr_store_req_reset(&req);
  chr_store_req_init(&req, CHR_OP_COUNT);
  req.cb = answered;
  req.filter = (chr_filter_t *)f;
  FUZZ_CHECK(chr_store_submit(s, &req) == 0 && req.status == 0, "count");
  FUZZ_CHECK(req.count == match, "count %lld, match says %d", (long long)req.count, match);
  chr_store_req_reset(&req);
  chr_store_close(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const uint8_t *nul = memchr(data, 0, size);
  size_t fn = nul ? (size_t)(nul - data) : size;
  char *text = fuzz_copy(data, fn), err[256];
  int top = lua_gettop(L);
  if (chr_json_decode(L, text, fn, err, sizeof err) != 0) {
    lua_gc(L, LUA_GCCOLLECT);
    free(text);
    return 0;
  }
  chr_filter_t f, g;
  chr_filter_init(&f);
  chr_filter_init(&g);
  if (read_filter(&f) == 0) {
    chr_filter_push(L, &f);
    FUZZ_CHECK(read_filter(&g) == 0, "the pushed filter is refused");
    check_same(&f, &g);
    if (nul) {
      size_t jn = size - fn - 1;
      char *jt = fuzz_copy(nul + 1, jn);
      chr_job_t *j = chr_job_new();
      /* Stores match records, which all have an id. */
      if (chr_job_from_json(j, jt, jn, err, sizeof err) == 0 && chr_job_has(j, CHR_F_JOB_ID) &&
          j->job_id != NULL) {
        FUZZ_CHECK(chr_filter_match(&f, j) == chr_filter_match(&g, j), "matches differ");
        check_store(&f, j);
      }
      chr_job_free(j);
      free(jt);
    }
  }
  chr_filter_free(&f);
  chr_filter_free(&g);
  lua_settop(L, top);
  /* Garbage left for later would look like a leak of this input to
   * libFuzzer, whose leak check would then run after every input. */
  lua_gc(L, LUA_GCCOLLECT);
  free(text);
  return 0;
}
