-- The storage adapter contract (docs/design.md) as one busted suite. Every
-- adapter's spec runs it against its real backend:
--
--   require("support.storage_contract")("sqlite", function()
--     return chronis.storage.open("sqlite:" .. tmpfile())
--   end, { teardown = function(store) os.remove(tmpfile()) end })
--
-- factory() returns a fresh, empty store. opts (optional):
--   teardown(store)  runs after each test, once store:close() has run (drop
--                    a database, remove a file); the store is closed there.
--   supports         { <optional method> = false, ... }: every optional
--                    method of the contract (chronis.storage.operations:
--                    get_jobs_batch, count_jobs, claim_due_jobs,
--                    complete_jobs, recover_expired_leases, extend_leases,
--                    next_due_time, record_runs, query_runs) is expected
--                    unless declared false here;
--                    the tests of one declared false are replaced by one
--                    that asserts the method is indeed nil, so nothing is
--                    skipped silently. A store object (a C store, or a Lua
--                    adapter wrapped by chronis.storage.lua) has every
--                    method: for one over an adapter without history,
--                    record_runs and query_runs declared false are
--                    checked to answer as a store without history does
--                    (record_runs keeps none, query_runs is
--                    'unsupported').
--
-- Every operation of the contract has its tests here: the suite checks
-- that each one in chronis.storage.operations does.
local chronis = require "chronis"
local J = require "support.jobs"
local U = require "support.util"

local describe, it, before_each, _, assert = U.busted()

local null = chronis.json.null
local parse, format = chronis.time.parse, chronis.time.format

-- The optional methods, from the contract's one table (close is no
-- operation: its test is the last one here).
local OPTIONAL = {}
for _, op in ipairs(chronis.storage.operations) do
  if not op.required and op.name ~= "close" then OPTIONAL[op.name] = true end
end

-- Jobs live at fixed instants so that only updated_at depends on the clock.
-- job(id, fields): a minimal scheduled job due at T0; fields override (NONE
-- removes).
local T0, NONE, copy, job, ids_of = J.T0, J.NONE, J.copy, J.job, J.ids_of
local function at(seconds) return format(parse(T0) + seconds * 1000000) end

local function sorted(t)
  local out = copy(t)
  table.sort(out)
  return out
end

local function keys_of(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

local function without(t, ...)
  local out = copy(t)
  for _, k in ipairs({ ... }) do out[k] = nil end
  return out
end

local function wall_us()
  local t = chronis.time.now()
  if type(t) == "string" then t = parse(t) end
  return t
end

-- One per-item result of create_jobs or complete_jobs.
local function assert_result(r, id, ok, code)
  assert.is_table(r, id)
  assert.are.equal(id, r.job_id)
  assert.are.equal(ok, r.ok, id)
  assert.are.equal(code, r.code, id)
end

-- Runs f, which must raise a structured error (docs/adapters.md) with `code`.
local assert_error_code = U.assert_error

local function assert_canonical(s, what)
  what = what or "time"
  assert(type(s) == "string", ("%s should be an ISO string, got %s"):format(what, tostring(s)))
  local frac = s:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d(.-)Z$")
  assert(frac and (frac == "" or (frac:match("^%.%d%d%d%d%d%d$") and frac ~= ".000000")),
    ("%s is not canonical ISO (YYYY-MM-DDTHH:MM:SS[.ffffff]Z): %q"):format(what, s))
end

-- updated_at was set by the store between two wall-clock readings (a
-- second of slack for stores whose server clock rounds).
local function assert_written_between(j, before, after)
  assert_canonical(j.updated_at, "updated_at")
  local u = parse(j.updated_at)
  assert(u >= before - 1000000 and u <= after + 1000000,
    ("updated_at %s is not the time of the write (%s .. %s)"):format(
      j.updated_at, format(before), format(after)))
end

return function(name, factory, opts)
  opts = opts or {}
  local supports = {}
  for key in pairs(OPTIONAL) do supports[key] = true end
  for key, v in pairs(opts.supports or {}) do
    assert(OPTIONAL[key], ("storage contract: unknown opts.supports key %q"):format(tostring(key)))
    supports[key] = v and true or false
  end

  describe(name .. " storage contract", function()
    local store

    -- docs/design.md: after each test the loop has no stray handles and no
    -- task is left alive (closed adapters' handles are closing, not active).
    U.fresh_each("store", factory, opts.teardown, function(s) store = s end)

    local function create(id, fields) return store:create_job(job(id, fields)) end

    local function query_ids(filters, limit, offset)
      return ids_of(store:query_jobs(filters, limit, offset))
    end

    -- A job as claim_due_jobs leaves it (complete_jobs, extend_leases).
    local function running(id, owner, fields)
      local f = { status = "running", claimed_by = owner, lease_until = at(30), next_run_time = at(-1) }
      for k, v in pairs(fields or {}) do f[k] = v end
      return create(id, f)
    end

    -- An optional operation: its tests when the adapter has it, else one
    -- test that it is really absent.
    -- The tests of one operation of the contract.
    local covered = {}
    local function operation(method, body)
      covered[method] = true
      describe(method, body)
    end

    local function optional(method, body)
      assert(OPTIONAL[method], "storage contract: not an optional operation: " .. method)
      covered[method] = true
      if supports[method] then
        describe(method, body)
      else
        describe(method, function()
          it("is absent, as opts.supports." .. method .. " = false declares", function()
            if type(store) == "table" then return assert.is_nil(store[method]) end
            if method == "record_runs" then
              assert.are.equal(0, store:record_runs({ { run_id = "r1", job_id = "j1", outcome = "ok",
                started_at = T0 } }))
            elseif method == "query_runs" then
              assert_error_code("unsupported", function() store:query_runs({ job_id = "j1" }) end)
            else
              error("storage contract: a store object emulates " .. method .. ", which cannot be "
                .. "declared absent")
            end
          end)
        end)
      end
    end

    operation("create_job", function()
      it("returns the stored job", function()
        local r = create("a", { name = "A", metadata = { tenant_id = "acme" } })
        assert.are.equal("a", r.job_id)
        assert.are.equal("scheduled", r.status)
        assert.are.equal(T0, r.next_run_time)
        assert.are.equal("A", r.name)
        assert.are.same({ tenant_id = "acme" }, r.metadata)
        assert_canonical(r.updated_at, "updated_at")
        assert.are.same(r, store:get_job("a"))
      end)

      it("accepts a minimal record and adds nothing but updated_at", function()
        store:create_job({ job_id = "min", status = "scheduled", next_run_time = T0 })
        local got = store:get_job("min")
        assert.are.same({ "job_id", "next_run_time", "status", "updated_at" }, keys_of(got))
        assert.are.same({ job_id = "min", status = "scheduled", next_run_time = T0 },
          without(got, "updated_at"))
      end)

      it("accepts a record without next_run_time", function()
        store:create_job({ job_id = "nil-time", status = "pending" })
        local got = store:get_job("nil-time")
        assert.are.equal("pending", got.status)
        assert.is_nil(got.next_run_time)
      end)

      it("refuses a duplicate id with error 'duplicate' and keeps the first", function()
        create("dup", { name = "first" })
        local err = assert_error_code("duplicate", function() create("dup", { name = "second" }) end)
        assert.are.equal("duplicate: " .. err.message, tostring(err))
        assert.are.equal("first", store:get_job("dup").name)
        assert.are.same({ "dup" }, query_ids())
      end)

      it("refuses a record without job_id with error 'invalid'", function()
        assert_error_code("invalid", function()
          store:create_job({ status = "scheduled", next_run_time = T0 })
        end)
        assert.are.same({}, store:query_jobs())
      end)

      it("refuses a time field that is not a time with error 'invalid'", function()
        assert_error_code("invalid", function() create("bad", { next_run_time = "not a time" }) end)
        assert.is_nil(store:get_job("bad"))
      end)

      it("sets updated_at itself, ignoring one given by the caller", function()
        local before = wall_us()
        local r = create("u", { updated_at = "2000-01-01T00:00:00Z" })
        local after = wall_us()
        assert_written_between(r, before, after)
        assert_written_between(store:get_job("u"), before, after)
      end)

      it("allows an id again once its job is deleted", function()
        create("again", { name = "one" })
        assert.is_true(store:delete_job("again"))
        create("again", { name = "two" })
        assert.are.equal("two", store:get_job("again").name)
        assert.are.same({ "again" }, query_ids())
      end)

      it("treats ids with pattern and separator characters as exact keys", function()
        local odd = { "a*", "a?", "a%", "a_b", "a.b", "a:b", "a b", "[a]", "a'b", 'a"b',
          "a\\b", "ünï/日本" }
        for _, id in ipairs(odd) do create(id, { name = id }) end
        create("aXb")
        create("ab")
        for _, id in ipairs(odd) do
          local got = store:get_job(id)
          assert.is_table(got, id)
          assert.are.equal(id, got.job_id)
          assert.are.equal(id, got.name)
        end
        assert.are.same({ "a_b" }, query_ids({ job_id_in = { "a_b" } }))
        assert.are.same({ "a%" }, query_ids({ job_id_in = { "a%" } }))
        assert.are.same({ "a*" }, query_ids({ job_id_in = { "a*" } }))
        assert.is_nil(store:get_job("a"))
        assert.is_true(store:delete_job("a*"))
        assert.is_nil(store:get_job("a*"))
        assert.are.equal(#odd + 1, #store:query_jobs())
      end)
    end)

    operation("get_job", function()
      it("returns nil for a missing id", function()
        assert.is_nil(store:get_job("missing"))
        create("present")
        assert.is_nil(store:get_job("missing"))
        assert.is_nil(store:get_job("presen"))
      end)

      it("returns the job by id among others", function()
        create("x", { name = "X" })
        create("y", { name = "Y" })
        assert.are.equal("Y", store:get_job("y").name)
        assert.are.equal("X", store:get_job("x").name)
      end)
    end)

    describe("round trip", function()
      local full = J.full()

      it("keeps every DESIGN §3 field, runtime field and unknown field", function()
        local r = store:create_job(copy(full))
        assert.are.same(full, without(r, "updated_at"))
        local got = store:get_job(full.job_id)
        assert_canonical(got.updated_at, "updated_at")
        assert.are.same(full, without(got, "updated_at"))
        assert.are.same(full, without(store:query_jobs()[1], "updated_at"))
      end)

      it("returns integer fields as Lua integers", function()
        store:create_job(copy(full))
        local got = store:get_job(full.job_id)
        for _, f in ipairs({ "max_retries", "retry_delay_seconds", "retry_count", "timeout_seconds",
          "priority", "misfire_threshold_seconds", "attempt" }) do
          assert.are.equal("integer", math.type(got[f]), f)
        end
        assert.are.equal("integer", math.type(got.kwargs.count), "kwargs.count")
        assert.are.equal("integer", math.type(got.metadata.level.deep.n), "metadata.level.deep.n")
        assert.are.equal("float", math.type(got.ratio), "ratio")
      end)

      it("keeps empty tables and variously typed extra fields", function()
        create("e", { args = {}, kwargs = {}, metadata = {}, s = "", zero = 0, neg = -7, f = false })
        local got = store:get_job("e")
        assert.are.same({}, got.args)
        assert.are.same({}, got.kwargs)
        assert.are.same({}, got.metadata)
        assert.are.equal("", got.s)
        assert.are.equal(0, got.zero)
        assert.are.equal(-7, got.neg)
        assert.are.equal(false, got.f)
      end)

      it("returns times given in any ISO form or as integer µs in canonical form", function()
        local r = create("t", {
          next_run_time = "2025-01-15T11:00:00+01:00",
          created_at = "2025-01-15 10:00:00.5Z",
          last_run_time = parse(T0) + 250000,
          last_scheduled_time = "2025-01-15T10:00:00.000000Z",
          lease_until = "2025-01-15T05:00:00-05:00",
          custom_when = "2025-01-15T11:00:00+01:00",
        })
        for _, got in ipairs({ r, store:get_job("t") }) do
          assert.are.equal("2025-01-15T10:00:00Z", got.next_run_time)
          assert.are.equal("2025-01-15T10:00:00.500000Z", got.created_at)
          assert.are.equal("2025-01-15T10:00:00.250000Z", got.last_run_time)
          assert.are.equal("2025-01-15T10:00:00Z", got.last_scheduled_time)
          assert.are.equal("2025-01-15T10:00:00Z", got.lease_until)
          assert_canonical(got.updated_at, "updated_at")
          -- An unknown field is data, not a time: it is not rewritten.
          assert.are.equal("2025-01-15T11:00:00+01:00", got.custom_when)
        end
      end)
    end)

    describe("copies", function()
      it("are taken of the table given to create_job", function()
        local j = job("c", { metadata = { tenant_id = "acme", nested = { v = 1 } }, args = { 1 } })
        store:create_job(j)
        j.status = "paused"
        j.metadata.tenant_id = "evil"
        j.metadata.nested.v = 2
        j.args[2] = 2
        j.extra_field = true
        local got = store:get_job("c")
        assert.are.equal("scheduled", got.status)
        assert.are.same({ tenant_id = "acme", nested = { v = 1 } }, got.metadata)
        assert.are.same({ 1 }, got.args)
        assert.is_nil(got.extra_field)
      end)

      it("are returned by every read and write", function()
        local meta = { tenant_id = "acme", nested = { v = 1 } }
        local returned = {
          store:create_job(job("c", { metadata = meta })),
          store:get_job("c"),
          store:query_jobs()[1],
          store:update_job("c", { name = "n" }),
          select(2, store:compare_and_swap_job("c", { name = "n" }, { name = "m" })),
        }
        if supports.get_jobs_batch then returned[#returned + 1] = store:get_jobs_batch({ "c" }).c end
        for i, r in ipairs(returned) do
          assert.is_table(r, "result " .. i)
          r.status = "failed"
          r.metadata.tenant_id = "evil"
          r.metadata.nested.v = i + 1
        end
        local got = store:get_job("c")
        assert.are.equal("scheduled", got.status)
        assert.are.equal("m", got.name)
        assert.are.same(meta, got.metadata)
      end)

      it("are taken of the updates and expectations given", function()
        create("c")
        local updates = { metadata = { k = "v" } }
        store:update_job("c", updates)
        updates.metadata.k = "changed"
        assert.are.same({ k = "v" }, store:get_job("c").metadata)
        local cas = { metadata = { k = "w" } }
        assert.is_true((store:compare_and_swap_job("c", { metadata = { k = "v" } }, cas)))
        cas.metadata.k = "changed"
        assert.are.same({ k = "w" }, store:get_job("c").metadata)
      end)
    end)

    optional("create_jobs", function()
      it("creates every record and answers per record, in order", function()
        local res = store:create_jobs({ job("b", { name = "B", metadata = { tenant_id = "acme" } }),
          job("a", { priority = 9 }), job("c", { status = "paused", next_run_time = at(60) }) })
        assert.are.equal(3, #res)
        assert_result(res[1], "b", true, nil)
        assert_result(res[2], "a", true, nil)
        assert_result(res[3], "c", true, nil)
        local b = store:get_job("b")
        assert.are.equal("B", b.name)
        assert.are.same({ tenant_id = "acme" }, b.metadata)
        assert.are.equal(T0, b.next_run_time)
        assert.are.equal(9, store:get_job("a").priority)
        assert.are.equal("paused", store:get_job("c").status)
        assert.are.same({ "a", "b", "c" }, sorted(query_ids()))
      end)

      it("stores what create_job stores for the same record", function()
        local full = J.full()
        full.job_id = "bulk"
        store:create_jobs({ full })
        local one = J.full()
        one.job_id = "one"
        store:create_job(one)
        local a, b = store:get_job("bulk"), store:get_job("one")
        assert_canonical(a.updated_at, "updated_at")
        assert.are.same(without(b, "job_id", "updated_at"), without(a, "job_id", "updated_at"))
      end)

      it("answers 'duplicate' for an existing id, keeps that job and creates the others", function()
        create("dup", { name = "first" })
        local res = store:create_jobs({ job("x"), job("dup", { name = "second" }), job("y") })
        assert_result(res[1], "x", true, nil)
        assert_result(res[2], "dup", false, "duplicate")
        assert_result(res[3], "y", true, nil)
        assert.are.equal("first", store:get_job("dup").name)
        assert.are.same({ "dup", "x", "y" }, sorted(query_ids()))
      end)

      it("keeps the first of two records with one id in a batch", function()
        local res = store:create_jobs({ job("twice", { name = "first" }), job("other"),
          job("twice", { name = "second" }) })
        assert_result(res[1], "twice", true, nil)
        assert_result(res[2], "other", true, nil)
        assert_result(res[3], "twice", false, "duplicate")
        assert.are.equal("first", store:get_job("twice").name)
        assert.are.same({ "other", "twice" }, sorted(query_ids()))
      end)

      it("refuses a batch with an invalid record with error 'invalid', creating none of it", function()
        local err = assert_error_code("invalid", function()
          store:create_jobs({ job("ok1"), { status = "scheduled", next_run_time = T0 }, job("ok2") })
        end)
        assert.truthy(err.message:find("item 2", 1, true), err.message)
        assert.are.same({}, store:query_jobs())
      end)

      it("answers an empty list with an empty list", function()
        assert.are.same({}, store:create_jobs({}))
        assert.are.same({}, store:query_jobs())
      end)

      it("sets updated_at itself", function()
        local before = wall_us()
        store:create_jobs({ job("u", { updated_at = "2000-01-01T00:00:00Z" }) })
        assert_written_between(store:get_job("u"), before, wall_us())
      end)

      it("creates a large batch whose jobs are then claimed in order", function()
        local list = {}
        for i = 1, 2500 do
          list[i] = job(("n%04d"):format(i), { next_run_time = at(-10000 + i) })
        end
        local res = store:create_jobs(list)
        assert.are.equal(2500, #res)
        for i = 1, 2500 do assert.is_true(res[i].ok, res[i].job_id) end
        assert.are.equal(2500, #store:query_jobs({ status = "scheduled" }))
        if store.claim_due_jobs then
          local got = store:claim_due_jobs({ now = T0, limit = 3, owner = "o", lease_seconds = 30 })
          assert.are.same({ "n0001", "n0002", "n0003" }, ids_of(got))
        end
      end)
    end)

    optional("get_jobs_batch", function()
      it("returns found jobs keyed by id and leaves out missing ids", function()
        create("a", { name = "A" })
        create("b", { name = "B" })
        create("c", { name = "C" })
        local got = store:get_jobs_batch({ "a", "missing", "c" })
        assert.are.same({ "a", "c" }, keys_of(got))
        assert.are.same(store:get_job("a"), got.a)
        assert.are.same(store:get_job("c"), got.c)
      end)

      it("returns an empty table for no ids or only missing ids", function()
        create("a")
        assert.are.same({}, store:get_jobs_batch({}))
        assert.are.same({}, store:get_jobs_batch({ "x", "y" }))
      end)
    end)

    operation("update_job", function()
      it("merges the given fields and keeps the others", function()
        create("u", { name = "old", priority = 3, metadata = { tenant_id = "acme" }, custom = { 1 } })
        local r = store:update_job("u", { name = "new", retry_count = 2 })
        local expected = job("u", { name = "new", priority = 3, metadata = { tenant_id = "acme" },
          custom = { 1 }, retry_count = 2 })
        assert.are.same(expected, without(r, "updated_at"))
        assert.are.same(r, store:get_job("u"))
      end)

      it("replaces a table-valued field as a whole (merge is one level deep)", function()
        create("u", { metadata = { a = 1, b = 2 } })
        store:update_job("u", { metadata = { b = 3 } })
        assert.are.same({ b = 3 }, store:get_job("u").metadata)
      end)

      it("removes fields set to chronis.json.null", function()
        create("u", { name = "n", last_run_time = at(-30), custom = "x", metadata = { a = 1 } })
        local r = store:update_job("u", { name = null, last_run_time = null, custom = null,
          next_run_time = null })
        for _, got in ipairs({ r, store:get_job("u") }) do
          assert.is_nil(got.name)
          assert.is_nil(got.last_run_time)
          assert.is_nil(got.custom)
          assert.is_nil(got.next_run_time)
          assert.are.same({ a = 1 }, got.metadata)
          assert.are.equal("scheduled", got.status)
        end
      end)

      it("returns times canonically", function()
        create("u")
        local r = store:update_job("u", { next_run_time = "2025-01-15T12:00:00+01:00",
          last_run_time = parse(T0) + 1 })
        assert.are.equal("2025-01-15T11:00:00Z", r.next_run_time)
        assert.are.equal("2025-01-15T10:00:00.000001Z", r.last_run_time)
        assert.are.equal("2025-01-15T11:00:00Z", store:get_job("u").next_run_time)
      end)

      it("refuses what only claims and completions write, naming the field, found or not", function()
        create("u", { metadata = { tenant_id = "acme" } })
        running("r", "n1")
        local before = { u = store:get_job("u"), r = store:get_job("r") }
        local refused = {
          { "claimed_by", { claimed_by = "n2" } }, { "claimed_by", { claimed_by = null } },
          { "lease_until", { lease_until = at(60) } }, { "lease_until", { lease_until = null } },
          { "attempt", { attempt = 2 } }, { "attempt", { attempt = null } },
          { "status", { status = "running" } },
          { "status", { status = "running", claimed_by = "n2", lease_until = at(60) } },
          { "next_run_time", { status = "scheduled", next_run_time = null } },
        }
        for _, id in ipairs({ "u", "r", "missing" }) do
          for _, case in ipairs(refused) do
            local err = assert_error_code("invalid", function()
              store:update_job(id, copy(case[2]))
            end)
            assert.truthy(err.message:find("'" .. case[1] .. "'", 1, true), err.message)
          end
        end
        assert.are.same(before.u, store:get_job("u"))
        assert.are.same(before.r, store:get_job("r"))
        assert.is_nil(store:get_job("missing"))
        -- A compare-and-swap may: claims and completions are made of it.
        assert.is_true((store:compare_and_swap_job("u", { status = "scheduled" },
          { status = "running", claimed_by = "n2", lease_until = at(60), attempt = 1 })))
        assert.is_true((store:compare_and_swap_job("u", { claimed_by = "n2" },
          { status = "scheduled", claimed_by = null, lease_until = null, attempt = null })))
        -- Other statuses, and a scheduled job given a time, are updates.
        assert.are.equal("failed", store:update_job("u", { status = "failed",
          next_run_time = null }).status)
        assert.are.equal(at(5), store:update_job("u", { status = "scheduled",
          next_run_time = at(5) }).next_run_time)
      end)

      it("raises 'not_found' for a missing id and creates nothing", function()
        create("other")
        assert_error_code("not_found", function() store:update_job("missing", { name = "x" }) end)
        assert.is_nil(store:get_job("missing"))
        assert.are.same({ "other" }, query_ids())
      end)

      it("sets a later updated_at on each write", function()
        local c = create("u")
        chronis.sleep(0.02)
        local before = wall_us()
        local u1 = store:update_job("u", { name = "1" })
        local after = wall_us()
        assert_written_between(u1, before, after)
        assert.is_true(parse(u1.updated_at) > parse(c.updated_at))
        chronis.sleep(0.02)
        local u2 = store:update_job("u", { name = "2" })
        assert.is_true(parse(u2.updated_at) > parse(u1.updated_at))
        assert.are.equal(u2.updated_at, store:get_job("u").updated_at)
      end)

      it("keeps queries consistent with changed next_run_time, status and metadata", function()
        create("a", { next_run_time = at(10), metadata = { t = "x" } })
        create("b", { next_run_time = at(20), metadata = { t = "x" } })
        create("c", { next_run_time = at(30), metadata = { t = "y" } })
        store:update_job("c", { next_run_time = at(0) })
        assert.are.same({ "c", "a", "b" }, query_ids())
        assert.are.same({ "c", "a" }, query_ids({ next_run_time_lte = at(10) }))
        store:update_job("a", { next_run_time = null })
        assert.are.same({ "c", "b", "a" }, query_ids())
        assert.are.same({ "c" }, query_ids({ next_run_time_lte = at(10) }))
        store:update_job("b", { status = "paused" })
        assert.are.same({ "c", "a" }, query_ids({ status = "scheduled" }))
        assert.are.same({ "b" }, query_ids({ status = "paused" }))
        store:update_job("c", { metadata = { t = "x" } })
        store:update_job("a", { metadata = { t = "z" } })
        assert.are.same({ "c", "b" }, query_ids({ ["metadata.t"] = "x" }))
        store:update_job("b", { trigger_type = "cron" })
        assert.are.same({ "b" }, query_ids({ trigger_type = "cron" }))
      end)
    end)

    operation("compare_and_swap_job", function()
      it("applies the updates when every expected field matches", function()
        create("c", { priority = 3, name = "n" })
        local ok, r = store:compare_and_swap_job("c", { status = "scheduled", priority = 3 },
          { status = "paused", name = "m" })
        assert.is_true(ok)
        assert.are.same(job("c", { status = "paused", priority = 3, name = "m" }),
          without(r, "updated_at"))
        assert.are.same(r, store:get_job("c"))
      end)

      it("changes nothing when one of several expected fields differs", function()
        create("c", { priority = 3, name = "n" })
        local before = store:get_job("c")
        chronis.sleep(0.02)
        local ok, r = store:compare_and_swap_job("c", { status = "scheduled", priority = 4, name = "n" },
          { status = "paused", name = "m" })
        assert.is_false(ok)
        assert.is_nil(r)
        assert.are.same(before, store:get_job("c"))
      end)

      it("treats an expected field absent from the record as a mismatch", function()
        create("c")
        local ok = store:compare_and_swap_job("c", { custom = "x" }, { status = "paused" })
        assert.is_false(ok)
        assert.are.equal("scheduled", store:get_job("c").status)
      end)

      it("raises 'not_found' for a missing id", function()
        assert_error_code("not_found", function()
          store:compare_and_swap_job("missing", { status = "scheduled" }, { status = "paused" })
        end)
        assert.is_nil(store:get_job("missing"))
      end)

      it("compares times as instants, whatever their form", function()
        create("c", { next_run_time = "2025-01-15T10:00:00Z", lease_until = at(30) })
        assert.is_true((store:compare_and_swap_job("c",
          { next_run_time = "2025-01-15T11:00:00+01:00" }, { name = "1" })))
        assert.is_true((store:compare_and_swap_job("c",
          { next_run_time = parse(T0), lease_until = "2025-01-15 10:00:30.000Z" }, { name = "2" })))
        assert.is_false((store:compare_and_swap_job("c",
          { next_run_time = "2025-01-15T10:00:00.000001Z" }, { name = "3" })))
        assert.are.equal("2", store:get_job("c").name)
      end)

      it("compares metadata and unknown fields by value", function()
        create("c", { metadata = { tenant_id = "acme", n = 1, deep = { a = { 1, 2 } } },
          custom = { deep = { 1, 2, "x" } }, num = 1 })
        assert.is_false((store:compare_and_swap_job("c",
          { metadata = { tenant_id = "acme", n = 1, deep = { a = { 1, 3 } } } }, { name = "no" })))
        assert.is_false((store:compare_and_swap_job("c", { metadata = { tenant_id = "acme" } },
          { name = "no" })))
        assert.is_false((store:compare_and_swap_job("c", { num = "1" }, { name = "no" })))
        assert.is_false((store:compare_and_swap_job("c", { custom = { deep = { 1, 2, "y" } } },
          { name = "no" })))
        assert.is_nil(store:get_job("c").name)
        assert.is_true((store:compare_and_swap_job("c",
          { metadata = { tenant_id = "acme", n = 1, deep = { a = { 1, 2 } } },
            custom = { deep = { 1, 2, "x" } }, num = 1 },
          { name = "yes", metadata = { tenant_id = "globex" } })))
        local got = store:get_job("c")
        assert.are.equal("yes", got.name)
        assert.are.same({ tenant_id = "globex" }, got.metadata)
      end)

      it("supports optimistic concurrency on updated_at", function()
        create("c")
        local seen = store:get_job("c")
        chronis.sleep(0.02)
        local ok, r = store:compare_and_swap_job("c", { updated_at = seen.updated_at }, { name = "first" })
        assert.is_true(ok)
        assert.is_true(parse(r.updated_at) > parse(seen.updated_at))
        ok = store:compare_and_swap_job("c", { updated_at = seen.updated_at }, { name = "second" })
        assert.is_false(ok)
        assert.are.equal("first", store:get_job("c").name)
      end)

      it("removes fields set to chronis.json.null", function()
        create("c", { claimed_by = "n1", custom = "x" })
        local ok, r = store:compare_and_swap_job("c", { claimed_by = "n1" },
          { claimed_by = null, custom = null, status = "paused" })
        assert.is_true(ok)
        assert.is_nil(r.claimed_by)
        assert.is_nil(r.custom)
        assert.are.same(r, store:get_job("c"))
      end)

      it("lets exactly one of 20 concurrent tasks win", function()
        create("race", { attempt = 0 })
        local tasks = {}
        for i = 1, 20 do
          tasks[i] = chronis.spawn(function(n)
            return store:compare_and_swap_job("race", { status = "scheduled", attempt = 0 },
              { status = "running", claimed_by = "w" .. n, attempt = 1 })
          end, i)
        end
        local winners = {}
        for i, t in ipairs(tasks) do
          local ok, r = t:join()
          if ok then
            winners[#winners + 1] = i
            assert.are.equal("w" .. i, r.claimed_by)
          else
            assert.is_nil(r)
          end
        end
        assert.are.equal(1, #winners)
        local got = store:get_job("race")
        assert.are.equal("w" .. winners[1], got.claimed_by)
        assert.are.equal(1, got.attempt)
      end)
    end)

    operation("delete_job", function()
      it("returns true when the job existed, then false", function()
        create("d")
        create("keep")
        assert.is_true(store:delete_job("d"))
        assert.is_false(store:delete_job("d"))
        assert.is_nil(store:get_job("d"))
        assert.are.same({ "keep" }, query_ids())
        assert.are.same({}, query_ids({ job_id_in = { "d" } }))
      end)

      it("returns false on an empty store", function()
        assert.is_false(store:delete_job("nothing"))
      end)
    end)

    operation("query_jobs", function()
      -- Inserted out of order; the times are chosen so that comparing them
      -- as strings (or ignoring offsets and fractions) gives a wrong order.
      local function ordering_fixture()
        create("e", { next_run_time = NONE })
        create("c", { next_run_time = "2025-01-15T10:00:30Z" })
        create("a", { next_run_time = "2025-01-15T10:00:00.5Z" })
        create("f", { next_run_time = NONE })
        create("b2", { next_run_time = "2025-01-15T10:00:00Z" })
        create("d", { next_run_time = "2025-01-15T10:30:00+01:00" })
        create("b", { next_run_time = parse(T0) })
      end
      local ORDER = { "d", "b", "b2", "a", "c", "e", "f" }

      it("returns an empty array on an empty store", function()
        assert.are.same({}, store:query_jobs())
        assert.are.same({}, store:query_jobs({}, 10, 0))
      end)

      it("orders by next_run_time as an instant, nil last, then job_id", function()
        ordering_fixture()
        assert.are.same(ORDER, query_ids())
        assert.are.same(ORDER, query_ids({}))
        assert.are.same(ORDER, query_ids(nil, nil, nil))
      end)

      it("applies limit and offset after ordering", function()
        ordering_fixture()
        assert.are.same({ "d", "b", "b2" }, query_ids(nil, 3))
        assert.are.same({ "a", "c", "e" }, query_ids(nil, 3, 3))
        assert.are.same({ "f" }, query_ids(nil, 3, 6))
        assert.are.same({ "b2", "a", "c", "e", "f" }, query_ids(nil, nil, 2))
        assert.are.same(ORDER, query_ids(nil, 100))
        assert.are.same(ORDER, query_ids(nil, 100, 0))
        assert.are.same({}, query_ids(nil, 3, 7))
        assert.are.same({}, query_ids(nil, nil, 100))
      end)

      it("applies limit and offset after filtering", function()
        for i = 1, 6 do
          create("j" .. i, { next_run_time = at(i), status = i % 2 == 0 and "paused" or "scheduled" })
        end
        assert.are.same({ "j3", "j5" }, query_ids({ status = "scheduled" }, 2, 1))
        assert.are.same({ "j4" }, query_ids({ status = "paused" }, 1, 1))
        assert.are.same({}, query_ids({ status = "paused" }, 5, 3))
      end)

      describe("filters", function()
        local function fixture()
          create("j1", { trigger_type = "interval", next_run_time = at(0),
            metadata = { tenant_id = "acme", n = 1, region = { zone = "eu" } } })
          create("j2", { status = "paused", trigger_type = "cron", next_run_time = at(60),
            metadata = { tenant_id = "acme", n = "1" } })
          create("j3", { trigger_type = "date", next_run_time = at(120),
            metadata = { tenant_id = "globex", flag = true, region = { zone = "us" } } })
          create("j4", { status = "failed", trigger_type = "cron", next_run_time = NONE })
          create("j5", { status = "running", trigger_type = "interval", next_run_time = at(-60),
            metadata = { tenant_id = "acme", region = "eu" } })
          create("j6", { status = "pending", next_run_time = NONE, metadata = {} })
        end

        -- Each filter set with the ids it matches, in query order.
        local CASES = {
          { {}, { "j5", "j1", "j2", "j3", "j4", "j6" } },
          { { status = "scheduled" }, { "j1", "j3" } },
          { { status = "paused" }, { "j2" } },
          { { status = "failed" }, { "j4" } },
          { { status = "running" }, { "j5" } },
          { { status = "pending" }, { "j6" } },
          { { trigger_type = "cron" }, { "j2", "j4" } },
          { { trigger_type = "interval" }, { "j5", "j1" } },
          { { trigger_type = "date" }, { "j3" } },
          { { next_run_time_lte = at(60) }, { "j5", "j1", "j2" } },
          { { next_run_time_lte = "2025-01-15T11:01:00+01:00" }, { "j5", "j1", "j2" } },
          { { next_run_time_lte = parse(at(60)) }, { "j5", "j1", "j2" } },
          { { next_run_time_lte = at(59) }, { "j5", "j1" } },
          { { next_run_time_gte = at(60) }, { "j2", "j3" } },
          { { next_run_time_gte = at(61) }, { "j3" } },
          { { next_run_time_gte = at(0), next_run_time_lte = at(60) }, { "j1", "j2" } },
          { { next_run_time_gte = at(61), next_run_time_lte = at(119) }, {} },
          { { ["metadata.tenant_id"] = "acme" }, { "j5", "j1", "j2" } },
          { { ["metadata.tenant_id"] = "globex" }, { "j3" } },
          { { ["metadata.tenant_id"] = "nobody" }, {} },
          { { ["metadata.n"] = 1 }, { "j1" } },
          { { ["metadata.n"] = "1" }, { "j2" } },
          { { ["metadata.flag"] = true }, { "j3" } },
          { { ["metadata.flag"] = false }, {} },
          { { ["metadata.flag"] = "true" }, {} },
          { { ["metadata.region.zone"] = "eu" }, { "j1" } },
          { { ["metadata.region.zone"] = "us" }, { "j3" } },
          { { ["metadata.region"] = "eu" }, { "j5" } },
          { { ["metadata.missing"] = "x" }, {} },
          { { job_id_in = { "j3", "j1", "nope" } }, { "j1", "j3" } },
          { { job_id_in = { "j6" } }, { "j6" } },
          { { job_id_in = {} }, {} },
          { { status = "scheduled", ["metadata.tenant_id"] = "acme" }, { "j1" } },
          { { status = "scheduled", trigger_type = "date" }, { "j3" } },
          { { ["metadata.tenant_id"] = "acme", trigger_type = "interval", next_run_time_gte = at(0) },
            { "j1" } },
          { { ["metadata.tenant_id"] = "acme", ["metadata.n"] = "1" }, { "j2" } },
          { { job_id_in = { "j1", "j2", "j3" }, status = "scheduled", next_run_time_gte = at(1) },
            { "j3" } },
          { { status = "paused", trigger_type = "date" }, {} },
        }

        local function describe_filters(f)
          local parts = {}
          for k, v in pairs(f) do
            parts[#parts + 1] = k .. "=" .. (type(v) == "table" and "{" .. table.concat(v, ",") .. "}"
              or type(v) == "string" and ("%q"):format(v) or tostring(v))
          end
          table.sort(parts)
          return "{" .. table.concat(parts, ", ") .. "}"
        end

        it("match as specified, alone and combined (AND)", function()
          fixture()
          for _, case in ipairs(CASES) do
            assert.are.same(case[2], query_ids(copy(case[1])), describe_filters(case[1]))
          end
        end)

        it("match on updated_at, inclusively, and follow later writes", function()
          local a = create("a")
          chronis.sleep(0.02)
          local b = create("b")
          assert.is_true(parse(b.updated_at) > parse(a.updated_at))
          assert.are.same({ "a" }, query_ids({ updated_at_lte = a.updated_at }))
          assert.are.same({ "b" }, query_ids({ updated_at_gte = b.updated_at }))
          assert.are.same({ "a", "b" }, query_ids({ updated_at_gte = a.updated_at }))
          assert.are.same({ "a" }, query_ids({ updated_at_gte = a.updated_at, updated_at_lte = a.updated_at }))
          assert.are.same({ "a" }, query_ids({ updated_at_lte = parse(a.updated_at) }))
          chronis.sleep(0.02)
          store:update_job("a", { name = "touched" })
          assert.are.same({ "a", "b" }, query_ids({ updated_at_gte = b.updated_at }))
          assert.are.same({}, query_ids({ updated_at_lte = a.updated_at }))
        end)

        -- A one-shot job kept after its success (the scheduler's
        -- keep_completed): created so, or written so by an update.
        it("store, find and count status completed, alone, in a list and by updated_at", function()
          local kept = create("kept", { status = "completed", next_run_time = NONE, last_outcome = "ok" })
          create("f", { status = "failed", next_run_time = NONE })
          create("s", { next_run_time = at(60) })
          chronis.sleep(0.02)
          local r = store:update_job("s", { status = "completed", next_run_time = null })
          assert.are.equal("completed", r.status)
          assert.are.equal("completed", store:get_job("kept").status)
          assert.are.equal("ok", store:get_job("kept").last_outcome)
          assert.are.same({ "kept", "s" }, query_ids({ status = "completed" }))
          assert.are.same({ "f", "kept", "s" }, query_ids({ status = { "completed", "failed" } }))
          assert.are.same({ "kept" }, query_ids({ status = "completed", updated_at_lte = kept.updated_at }))
          assert.are.same({ "s" }, query_ids({ status = "completed" }, 1, 1))
          assert.are.same({}, query_ids({ status = "scheduled" }))
          if supports.count_jobs then
            assert.are.equal(2, store:count_jobs({ status = "completed" }))
            assert.are.equal(1, store:count_jobs({ status = "completed", updated_at_lte = kept.updated_at }))
          end
          store:delete_job("kept")
          assert.are.same({ "s" }, query_ids({ status = "completed" }))
        end)

        it("raise 'invalid' naming an unknown key", function()
          fixture()
          local err = assert_error_code("invalid", function() store:query_jobs({ bogus_key = 1 }) end)
          assert.truthy(err.message:find("bogus_key", 1, true), err.message)
          err = assert_error_code("invalid", function()
            store:query_jobs({ status = "scheduled", statuss = "scheduled" })
          end)
          assert.truthy(err.message:find("statuss", 1, true), err.message)
          assert_error_code("invalid", function() store:query_jobs({ priority = 5 }) end)
        end)

        it("raise 'invalid' for a time bound that is not a time", function()
          fixture()
          assert_error_code("invalid", function() store:query_jobs({ next_run_time_lte = "yesterday" }) end)
        end)
      end)
    end)

    optional("count_jobs", function()
      it("counts all jobs and each filter's matches, as many as query_jobs returns", function()
        assert.are.equal(0, store:count_jobs())
        create("a", { metadata = { tenant_id = "acme" }, trigger_type = "cron" })
        create("b", { status = "paused", metadata = { tenant_id = "acme" }, next_run_time = at(60) })
        create("c", { metadata = { tenant_id = "globex", n = 1 }, next_run_time = NONE })
        create("d", { status = "failed", metadata = { n = "1" }, next_run_time = at(-60) })
        local n = store:count_jobs()
        assert.are.equal("integer", math.type(n))
        assert.are.equal(4, n)
        assert.are.equal(4, store:count_jobs({}))
        local sets = {
          { status = "scheduled" }, { status = "paused" }, { status = "running" },
          { trigger_type = "cron" },
          { ["metadata.tenant_id"] = "acme" }, { ["metadata.tenant_id"] = "acme", status = "paused" },
          { ["metadata.n"] = 1 }, { ["metadata.n"] = "1" },
          { next_run_time_lte = T0 }, { next_run_time_gte = T0 },
          { job_id_in = { "a", "c", "zz" } }, { job_id_in = {} },
        }
        local expected = { 2, 1, 0, 1, 2, 1, 1, 1, 2, 2, 2, 0 }
        for i, f in ipairs(sets) do
          assert.are.equal(expected[i], store:count_jobs(copy(f)), "filter set " .. i)
          assert.are.equal(#store:query_jobs(copy(f)), store:count_jobs(copy(f)), "filter set " .. i)
        end
        store:delete_job("a")
        assert.are.equal(3, store:count_jobs())
        assert.are.equal(1, store:count_jobs({ ["metadata.tenant_id"] = "acme" }))
      end)

      it("raises 'invalid' naming an unknown filter key", function()
        create("a")
        local err = assert_error_code("invalid", function() store:count_jobs({ nope = true }) end)
        assert.truthy(err.message:find("nope", 1, true), err.message)
      end)
    end)

    optional("claim_due_jobs", function()
      local NOW = T0

      local function claim(owner, limit, now, lease)
        return store:claim_due_jobs({ now = now or NOW, limit = limit or 100, owner = owner or "node-a",
          lease_seconds = lease or 30 })
      end

      -- NaN and infinities have no microsecond value (converting them was
      -- undefined behaviour in C), fractions no count.
      it("refuses a limit or lease_seconds that is no count or no span of seconds, naming it", function()
        create("a", { next_run_time = at(-1) })
        for _, v in ipairs({ 0 / 0, math.huge, -math.huge, -1, 1.5, 2 ^ 53, "5" }) do
          local err = assert_error_code("invalid", function()
            store:claim_due_jobs({ now = T0, owner = "o", limit = v })
          end)
          assert(err.message:find("'limit'", 1, true), err.message)
        end
        for _, v in ipairs({ 0 / 0, math.huge, -math.huge, -1, 1e300, 31536001, "5" }) do
          local err = assert_error_code("invalid", function()
            store:claim_due_jobs({ now = T0, owner = "o", limit = 1, lease_seconds = v })
          end)
          assert(err.message:find("'lease_seconds'", 1, true), err.message)
        end
        assert.are.equal("scheduled", store:get_job("a").status)
        local got = store:claim_due_jobs({ now = T0, owner = "o", limit = math.maxinteger,
          lease_seconds = 31536000 })
        assert.are.same({ "a" }, ids_of(got))
        assert.are.equal(format(parse(T0) + 31536000 * 1000000), got[1].lease_until)
      end)

      it("moves due scheduled jobs to running, owned and leased", function()
        create("past", { next_run_time = at(-10), metadata = { tenant_id = "acme" }, kwargs = { x = 1 } })
        create("now", { next_run_time = NOW })
        create("later", { next_run_time = at(1) })
        local got = claim("node-a", 10, NOW, 30)
        assert.are.same({ "now", "past" }, sorted(ids_of(got)))
        for _, j in ipairs(got) do
          assert.are.equal("running", j.status)
          assert.are.equal("node-a", j.claimed_by)
          assert.are.equal(at(30), j.lease_until)
          assert.are.same(j, store:get_job(j.job_id))
        end
        local past = store:get_job("past")
        assert.are.same({ tenant_id = "acme" }, past.metadata)
        assert.are.same({ x = 1 }, past.kwargs)
        assert.are.equal(at(-10), past.next_run_time)
        local later = store:get_job("later")
        assert.are.equal("scheduled", later.status)
        assert.is_nil(later.claimed_by)
        assert.is_nil(later.lease_until)
      end)

      it("accepts now as integer µs and in any ISO form", function()
        create("a", { next_run_time = at(-1) })
        create("b", { next_run_time = at(-1) })
        local got = claim("n", 1, parse(NOW), 60)
        assert.are.equal(1, #got)
        assert.are.equal(at(60), got[1].lease_until)
        got = claim("n", 1, "2025-01-15T11:00:00+01:00", 60)
        assert.are.equal(1, #got)
        assert.are.equal(at(60), got[1].lease_until)
      end)

      it("never claims a job that is not scheduled", function()
        for _, st in ipairs({ "pending", "paused", "failed", "running" }) do
          create(st, { status = st, next_run_time = at(-10) })
        end
        local before = store:query_jobs()
        assert.are.same({}, claim())
        assert.are.same(before, store:query_jobs())
      end)

      it("never claims a job without next_run_time or not yet due", function()
        create("nil", { next_run_time = NONE })
        create("future", { next_run_time = "2025-01-15T10:00:00.000001Z" })
        assert.are.same({}, claim())
        assert.are.equal("scheduled", store:get_job("nil").status)
        assert.are.equal("scheduled", store:get_job("future").status)
      end)

      it("takes the highest priority first (missing = 5), then the earliest", function()
        create("p0", { priority = 0, next_run_time = at(-50) })
        create("p10", { priority = 10, next_run_time = at(-10) })
        create("pnil", { next_run_time = at(-40) })
        create("p5", { priority = 5, next_run_time = at(-30) })
        create("p10b", { priority = 10, next_run_time = at(-20) })
        create("p7", { priority = 7, next_run_time = at(-5) })
        create("p5late", { priority = 5, next_run_time = at(-1) })
        assert.are.same({ "p10b", "p10", "p7", "pnil", "p5", "p5late", "p0" }, ids_of(claim()))
      end)

      it("caps a batch at limit, by priority, leaving the rest scheduled", function()
        create("p0", { priority = 0, next_run_time = at(-50) })
        create("pnil", { next_run_time = at(-40) })
        create("p10", { priority = 10, next_run_time = at(-10) })
        create("p7", { priority = 7, next_run_time = at(-5) })
        create("p3", { priority = 3, next_run_time = at(-60) })
        assert.are.same({ "p10", "p7" }, ids_of(claim("a", 2)))
        assert.are.equal(3, #store:query_jobs({ status = "scheduled" }))
        assert.are.same({ "pnil", "p3" }, ids_of(claim("b", 2)))
        assert.are.same({ "p0" }, ids_of(claim("c", 2)))
        assert.are.same({}, claim("d", 2))
        assert.are.equal("a", store:get_job("p7").claimed_by)
        assert.are.equal("b", store:get_job("p3").claimed_by)
      end)

      it("never claims a job twice", function()
        create("a", { next_run_time = at(-1) })
        create("b", { next_run_time = at(-1) })
        assert.are.equal(2, #claim("node-a"))
        assert.are.same({}, claim("node-a"))
        assert.are.same({}, claim("node-b", 10, at(3600)))
        assert.are.equal("node-a", store:get_job("a").claimed_by)
        assert.are.equal(at(30), store:get_job("b").lease_until)
      end)

      it("sets updated_at", function()
        local c = create("a", { next_run_time = at(-1) })
        chronis.sleep(0.02)
        local before = wall_us()
        local got = claim()[1]
        local after = wall_us()
        assert_written_between(got, before, after)
        assert.is_true(parse(got.updated_at) > parse(c.updated_at))
      end)

      it("follows updates and deletes of status, next_run_time and priority", function()
        create("a", { next_run_time = at(-30), priority = 1 })
        create("b", { next_run_time = at(-20), priority = 2 })
        create("c", { next_run_time = at(-10), priority = 3 })
        create("d", { next_run_time = at(-5), priority = 4 })
        store:update_job("a", { priority = 9 })
        store:update_job("b", { status = "paused" })
        store:update_job("c", { next_run_time = at(10) })
        store:delete_job("d")
        assert.are.same({ "a" }, ids_of(claim()))
        store:update_job("b", { status = "scheduled" })
        store:update_job("c", { next_run_time = at(-1) })
        assert.are.same({ "c", "b" }, ids_of(claim()))
      end)

      it("returns copies", function()
        create("a", { next_run_time = at(-1), metadata = { t = 1 } })
        local got = claim()[1]
        got.status = "scheduled"
        got.claimed_by = "thief"
        got.metadata.t = 2
        local stored = store:get_job("a")
        assert.are.equal("running", stored.status)
        assert.are.equal("node-a", stored.claimed_by)
        assert.are.same({ t = 1 }, stored.metadata)
      end)

      it("gives each of 50 due jobs to exactly one of two racing owners", function()
        for i = 1, 50 do
          create(("r%02d"):format(i), { next_run_time = at(-i), priority = i % 11 })
        end
        local got = { ["node-a"] = {}, ["node-b"] = {} }
        local function claimer(owner)
          for _ = 1, 100 do
            local batch = store:claim_due_jobs({ now = NOW, limit = 3, owner = owner, lease_seconds = 60 })
            if #batch == 0 then return true end
            assert(#batch <= 3, "claim returned more than limit")
            for _, j in ipairs(batch) do
              assert(j.claimed_by == owner, "claimed job carries another owner")
              table.insert(got[owner], j.job_id)
            end
            chronis.sleep(0.001)
          end
          error("claims never ran dry")
        end
        local tasks = {}
        for _, owner in ipairs({ "node-a", "node-b", "node-a", "node-b" }) do
          tasks[#tasks + 1] = chronis.spawn(claimer, owner)
        end
        for _, t in ipairs(tasks) do assert.is_true(t:join()) end
        local seen = {}
        for owner, list in pairs(got) do
          for _, id in ipairs(list) do
            assert(not seen[id], ("job %s claimed twice (%s and %s)"):format(id, tostring(seen[id]), owner))
            seen[id] = owner
          end
        end
        local n = 0
        for id, owner in pairs(seen) do
          n = n + 1
          local j = store:get_job(id)
          assert.are.equal("running", j.status)
          assert.are.equal(owner, j.claimed_by)
        end
        assert.are.equal(50, n)
      end)
    end)

    optional("complete_jobs", function()
      local function reschedule(id, owner)
        return { job_id = id, owner = owner, updates = { status = "scheduled", next_run_time = at(3600),
          claimed_by = null, lease_until = null, last_run_time = T0 } }
      end

      it("deletes a job on the owner's word", function()
        running("a", "node-a")
        local res = store:complete_jobs({ { job_id = "a", owner = "node-a", delete = true } })
        assert.are.equal(1, #res)
        assert_result(res[1], "a", true, nil)
        assert.is_nil(store:get_job("a"))
      end)

      it("applies updates on the owner's word, removing null fields", function()
        running("a", "node-a", { metadata = { tenant_id = "acme" } })
        local res = store:complete_jobs({ reschedule("a", "node-a") })
        assert_result(res[1], "a", true, nil)
        local got = store:get_job("a")
        assert.are.equal("scheduled", got.status)
        assert.are.equal(at(3600), got.next_run_time)
        assert.are.equal(T0, got.last_run_time)
        assert.is_nil(got.claimed_by)
        assert.is_nil(got.lease_until)
        assert.are.same({ tenant_id = "acme" }, got.metadata)
        assert.are.same({ "a" }, query_ids({ status = "scheduled", next_run_time_gte = at(3600) }))
      end)

      it("moves a run job to status completed, out of the running jobs", function()
        running("a", "node-a")
        local res = store:complete_jobs({ { job_id = "a", owner = "node-a", updates = {
          status = "completed", next_run_time = null, claimed_by = null, lease_until = null,
          last_outcome = "ok" } } })
        assert_result(res[1], "a", true, nil)
        local got = store:get_job("a")
        assert.are.equal("completed", got.status)
        assert.is_nil(got.next_run_time)
        assert.is_nil(got.claimed_by)
        assert.are.same({ "a" }, query_ids({ status = "completed" }))
        assert.are.same({}, query_ids({ status = "running" }))
      end)

      it("refuses another owner with 'conflict' and changes nothing", function()
        running("a", "node-a")
        running("b", "node-a")
        create("unclaimed")
        local before = store:query_jobs()
        chronis.sleep(0.02)
        local res = store:complete_jobs({
          reschedule("a", "node-b"),
          { job_id = "b", owner = "node-b", delete = true },
          { job_id = "unclaimed", owner = "node-b", delete = true },
        })
        assert_result(res[1], "a", false, "conflict")
        assert_result(res[2], "b", false, "conflict")
        assert_result(res[3], "unclaimed", false, "conflict")
        assert.are.same(before, store:query_jobs())
      end)

      it("reports 'not_found' for a missing job", function()
        local res = store:complete_jobs({ { job_id = "missing", owner = "node-a", delete = true },
          reschedule("missing2", "node-a") })
        assert_result(res[1], "missing", false, "not_found")
        assert_result(res[2], "missing2", false, "not_found")
        assert.is_nil(store:get_job("missing2"))
      end)

      it("answers a mixed batch item by item, in order", function()
        running("del", "node-a")
        running("upd", "node-a")
        running("theirs", "node-b")
        running("theirs2", "node-b")
        local res = store:complete_jobs({
          { job_id = "theirs", owner = "node-a", delete = true },
          { job_id = "del", owner = "node-a", delete = true },
          { job_id = "ghost", owner = "node-a", delete = true },
          reschedule("upd", "node-a"),
          reschedule("theirs2", "node-a"),
        })
        assert.are.equal(5, #res)
        assert_result(res[1], "theirs", false, "conflict")
        assert_result(res[2], "del", true, nil)
        assert_result(res[3], "ghost", false, "not_found")
        assert_result(res[4], "upd", true, nil)
        assert_result(res[5], "theirs2", false, "conflict")
        assert.is_nil(store:get_job("del"))
        assert.are.equal("scheduled", store:get_job("upd").status)
        assert.are.equal("node-b", store:get_job("theirs").claimed_by)
        assert.are.equal("running", store:get_job("theirs2").status)
      end)

      it("returns an empty array for an empty list", function()
        assert.are.same({}, store:complete_jobs({}))
      end)

      it("sets updated_at", function()
        local c = running("a", "node-a")
        chronis.sleep(0.02)
        store:complete_jobs({ reschedule("a", "node-a") })
        assert.is_true(parse(store:get_job("a").updated_at) > parse(c.updated_at))
      end)

      if supports.claim_due_jobs then
        it("makes a rescheduled job claimable again at its new time only", function()
          create("a", { next_run_time = at(-1) })
          local claimed = store:claim_due_jobs({ now = T0, limit = 5, owner = "node-a", lease_seconds = 30 })
          assert.are.same({ "a" }, ids_of(claimed))
          store:complete_jobs({ reschedule("a", "node-a") })
          assert.are.same({}, store:claim_due_jobs({ now = at(3599), limit = 5, owner = "node-b",
            lease_seconds = 30 }))
          local again = store:claim_due_jobs({ now = at(3600), limit = 5, owner = "node-b", lease_seconds = 30 })
          assert.are.same({ "a" }, ids_of(again))
          assert.are.equal("node-b", again[1].claimed_by)
        end)
      end
    end)

    optional("recover_expired_leases", function()
      it("returns running jobs whose lease ended before now to scheduled", function()
        create("r1", { status = "running", claimed_by = "a", lease_until = at(10), metadata = { k = 1 } })
        create("r2", { status = "running", claimed_by = "b", lease_until = at(100) })
        create("s", { next_run_time = at(-100) })
        create("p", { status = "paused", claimed_by = "c", lease_until = at(-100) })
        local n = store:recover_expired_leases(at(10))
        assert.are.equal("integer", math.type(n))
        assert.are.equal(0, n)
        assert.are.equal("running", store:get_job("r1").status)
        assert.are.equal(1, store:recover_expired_leases(at(11)))
        local r1 = store:get_job("r1")
        assert.are.equal("scheduled", r1.status)
        assert.is_nil(r1.claimed_by)
        assert.is_nil(r1.lease_until)
        assert.are.same({ k = 1 }, r1.metadata)
        assert.are.equal(T0, r1.next_run_time)
        assert.are.equal("running", store:get_job("r2").status)
        assert.are.equal(1, store:recover_expired_leases(parse(at(101))))
        assert.are.equal("scheduled", store:get_job("r2").status)
        assert.are.equal(0, store:recover_expired_leases(at(1000)))
        local p = store:get_job("p")
        assert.are.equal("paused", p.status)
        assert.are.equal("c", p.claimed_by)
      end)

      it("returns 0 on an empty store", function()
        assert.are.equal(0, store:recover_expired_leases(at(0)))
      end)

      it("counts the run that was cut short: retry_count and attempt go up by one", function()
        create("fresh", { status = "running", claimed_by = "a", lease_until = at(1) })
        create("tried", { status = "running", claimed_by = "a", lease_until = at(1),
          retry_count = 2, attempt = 5, max_retries = 3 })
        assert.are.equal(2, store:recover_expired_leases(at(2)))
        local fresh, tried = store:get_job("fresh"), store:get_job("tried")
        assert.are.equal(1, fresh.retry_count)
        assert.are.equal(1, fresh.attempt)
        assert.are.equal("integer", math.type(fresh.retry_count))
        assert.are.equal(3, tried.retry_count)
        assert.are.equal(6, tried.attempt)
        assert.are.equal(3, tried.max_retries)
        assert.are.equal("scheduled", tried.status)
      end)

      if supports.claim_due_jobs and supports.complete_jobs then
        it("lets a new owner claim the job and shuts out the old one", function()
          create("a", { next_run_time = at(-1) })
          assert.are.equal(1, #store:claim_due_jobs({ now = T0, limit = 1, owner = "old", lease_seconds = 30 }))
          assert.are.equal(1, store:recover_expired_leases(at(31)))
          local got = store:claim_due_jobs({ now = at(31), limit = 1, owner = "new", lease_seconds = 30 })
          assert.are.same({ "a" }, ids_of(got))
          assert.are.equal(at(61), got[1].lease_until)
          local res = store:complete_jobs({ { job_id = "a", owner = "old", delete = true } })
          assert.are.equal("conflict", res[1].code)
          assert.are.equal("new", store:get_job("a").claimed_by)
          res = store:complete_jobs({ { job_id = "a", owner = "new", delete = true } })
          assert.is_true(res[1].ok)
          assert.is_nil(store:get_job("a"))
        end)
      end
    end)

    optional("extend_leases", function()
      local function extend(owner, ids, now, lease)
        return store:extend_leases({ owner = owner, ids = ids, now = now or T0, lease_seconds = lease or 60 })
      end

      it("moves lease_until to now + lease_seconds for the owner's running jobs", function()
        running("a", "node-a", { metadata = { k = 1 } })
        running("b", "node-a")
        local n = extend("node-a", { "a", "b" }, at(20), 45)
        assert.are.equal("integer", math.type(n))
        assert.are.equal(2, n)
        for _, id in ipairs({ "a", "b" }) do
          local got = store:get_job(id)
          assert.are.equal(at(65), got.lease_until)
          assert.are.equal("running", got.status)
          assert.are.equal("node-a", got.claimed_by)
        end
        assert.are.same({ k = 1 }, store:get_job("a").metadata)
      end)

      it("leaves jobs of another owner, jobs not running and missing ids alone", function()
        running("mine", "node-a")
        running("theirs", "node-b")
        create("waiting", { claimed_by = "node-a", lease_until = at(30) })
        local before = store:query_jobs({ job_id_in = { "theirs", "waiting" } })
        assert.are.equal(1, extend("node-a", { "theirs", "waiting", "ghost", "mine" }, at(10), 100))
        assert.are.equal(at(110), store:get_job("mine").lease_until)
        assert.are.same(before, store:query_jobs({ job_id_in = { "theirs", "waiting" } }))
        assert.is_nil(store:get_job("ghost"))
      end)

      it("returns 0 for no ids", function()
        running("a", "node-a")
        assert.are.equal(0, extend("node-a", {}))
        assert.are.equal(at(30), store:get_job("a").lease_until)
      end)

      it("accepts now as integer µs and in any ISO form", function()
        running("a", "node-a")
        assert.are.equal(1, extend("node-a", { "a" }, parse(at(5)), 10))
        assert.are.equal(at(15), store:get_job("a").lease_until)
        assert.are.equal(1, extend("node-a", { "a" }, "2025-01-15T11:00:10+01:00", 10))
        assert.are.equal(at(20), store:get_job("a").lease_until)
      end)

      it("sets updated_at", function()
        local c = running("a", "node-a")
        chronis.sleep(0.02)
        local before = wall_us()
        extend("node-a", { "a" })
        local after = wall_us()
        local got = store:get_job("a")
        assert_written_between(got, before, after)
        assert.is_true(parse(got.updated_at) > parse(c.updated_at))
      end)

      it("refuses a lease_seconds that is no span of seconds, naming it", function()
        running("a", "node-a")
        for _, v in ipairs({ 0 / 0, math.huge, -1, 1e300 }) do
          local err = assert_error_code("invalid", function()
            store:extend_leases({ ids = { "a" }, owner = "node-a", now = T0, lease_seconds = v })
          end)
          assert(err.message:find("'lease_seconds'", 1, true), err.message)
        end
        assert.are.equal(at(30), store:get_job("a").lease_until)
      end)

      it("refuses a call without an owner with 'invalid'", function()
        running("a", "node-a")
        assert_error_code("invalid", function() store:extend_leases({ ids = { "a" }, now = T0 }) end)
        assert.are.equal(at(30), store:get_job("a").lease_until)
      end)

      if supports.recover_expired_leases then
        it("keeps an extended lease from being recovered until it ends", function()
          running("a", "node-a")
          assert.are.equal(1, extend("node-a", { "a" }, at(20), 60))
          assert.are.equal(0, store:recover_expired_leases(at(31)))
          assert.are.equal("running", store:get_job("a").status)
          assert.are.equal(1, store:recover_expired_leases(at(81)))
          assert.are.equal("scheduled", store:get_job("a").status)
        end)
      end
    end)

    optional("next_due_time", function()
      it("is nil on an empty store", function()
        assert.is_nil(store:next_due_time())
      end)

      it("is the earliest next_run_time of a scheduled job, canonical", function()
        create("later", { next_run_time = at(60) })
        create("first", { next_run_time = "2025-01-15T11:00:30.5+01:00" })
        create("half", { next_run_time = at(31) })
        local t = store:next_due_time()
        assert_canonical(t, "next_due_time")
        assert.are.equal("2025-01-15T10:00:30.500000Z", t)
      end)

      it("passes over jobs that are not scheduled or have no next_run_time", function()
        for _, st in ipairs({ "pending", "paused", "failed", "running" }) do
          create(st, { status = st, next_run_time = at(-100) })
        end
        create("undated", { next_run_time = NONE })
        assert.is_nil(store:next_due_time())
        create("due", { next_run_time = at(100) })
        assert.are.equal(at(100), store:next_due_time())
      end)

      it("follows updates and deletes", function()
        create("a", { next_run_time = at(10) })
        create("b", { next_run_time = at(20) })
        assert.are.equal(at(10), store:next_due_time())
        store:update_job("a", { status = "paused" })
        assert.are.equal(at(20), store:next_due_time())
        store:update_job("b", { next_run_time = at(5) })
        assert.are.equal(at(5), store:next_due_time())
        store:delete_job("b")
        assert.is_nil(store:next_due_time())
        store:update_job("a", { status = "scheduled" })
        assert.are.equal(at(10), store:next_due_time())
      end)
    end)

    -- The metadata operators (docs/api.md, Filters), each case's matches
    -- worked out by hand from the fixture below, through query_jobs and
    -- count_jobs alike.
    describe("metadata filters", function()
      local ALL = { "f01", "f02", "f03", "f04", "f05", "f06", "f08", "f07" }

      -- Every job but the ones named, in query order.
      local function all_but(...)
        local drop, out = {}, {}
        for _, id in ipairs({ ... }) do drop[id] = true end
        for _, id in ipairs(ALL) do
          if not drop[id] then out[#out + 1] = id end
        end
        return out
      end

      -- Due at at(1)..at(8) so that query order is id order; f07 has no
      -- next_run_time and comes last.
      local function fixture()
        create("f01", { next_run_time = at(1), metadata = { tenant = "acme", n = 1, flag = true,
          region = { zone = "eu" }, tags = { "x", "y" }, ["a.b"] = "dotted", a = { b = "nested" } } })
        create("f02", { status = "paused", next_run_time = at(2), metadata = { tenant = "acme", n = "1",
          flag = false, region = { zone = "us" }, tags = { "y", "x" }, a = { b = "other" } } })
        create("f03", { next_run_time = at(3), metadata = { tenant = "globex", n = 2, region = "eu",
          a = "flat", obj = { k = 1, j = { 2, 3 } }, ["x-y"] = "dash", ["7"] = "seven" } })
        create("f04", { status = "failed", next_run_time = at(4), metadata = { tenant = "initech",
          n = 1.5, flag = "true", list = { { b = 1 } }, ["a.b"] = { c = 1 }, obj = { j = { 2, 3 }, k = 1 },
          region = { zone = { "eu" } } } })
        create("f05", { next_run_time = at(5), metadata = { tenant = "acme", t = null,
          ['q"uote'] = "dq", ["it's"] = "sq", ["back\\slash"] = "bs", ["tab\tkey"] = "tab",
          ["ünï日本"] = "日本", ["sp ace"] = "sp", ["b\\.s"] = 1 } })
        create("f06", { next_run_time = at(6) })
        create("f07", { status = "pending", next_run_time = NONE, metadata = { tenant = "globex",
          zero = 0, empty = "", t = null } })
        create("f08", { status = "paused", next_run_time = at(8), metadata = { tenant = "ACME", n = 1.0 } })
      end

      local function M(path) return "metadata." .. path end
      local function op(name, v) return { [name] = v } end

      -- { filters, the ids they match in query order }.
      local CASES = {
        -- $eq, $ne, $in, $exists on a string
        { { [M "tenant"] = "acme" }, { "f01", "f02", "f05" } },
        { { [M "tenant"] = op("$eq", "acme") }, { "f01", "f02", "f05" } },
        { { [M "tenant"] = "Acme" }, {} },
        { { [M "tenant"] = op("$ne", "acme") }, { "f03", "f04", "f06", "f08", "f07" } },
        { { [M "tenant"] = op("$in", { "acme" }) }, { "f01", "f02", "f05" } },
        { { [M "tenant"] = op("$in", { "acme", "globex" }) }, { "f01", "f02", "f03", "f05", "f07" } },
        { { [M "tenant"] = op("$in", { "nobody", "ACME" }) }, { "f08" } },
        { { [M "tenant"] = op("$in", {}) }, {} },
        { { [M "tenant"] = op("$exists", true) }, all_but("f06") },
        { { [M "tenant"] = op("$exists", false) }, { "f06" } },
        -- null is absent, as a value and stored
        { { [M "tenant"] = null }, { "f06" } },
        { { [M "tenant"] = op("$eq", null) }, { "f06" } },
        { { [M "tenant"] = op("$ne", null) }, all_but("f06") },
        { { [M "t"] = null }, ALL },
        { { [M "t"] = op("$exists", true) }, {} },
        { { [M "t"] = op("$ne", "x") }, ALL },
        -- numbers and strings differ; 1.0 is 1
        { { [M "n"] = 1 }, { "f01", "f08" } },
        { { [M "n"] = 1.0 }, { "f01", "f08" } },
        { { [M "n"] = "1" }, { "f02" } },
        { { [M "n"] = 1.5 }, { "f04" } },
        { { [M "n"] = op("$ne", 1) }, { "f02", "f03", "f04", "f05", "f06", "f07" } },
        { { [M "n"] = op("$ne", "1") }, all_but("f02") },
        { { [M "n"] = op("$in", { 1, "1" }) }, { "f01", "f02", "f08" } },
        { { [M "n"] = op("$in", { 2, 1.5 }) }, { "f03", "f04" } },
        { { [M "zero"] = 0 }, { "f07" } },
        { { [M "zero"] = false }, {} },
        { { [M "zero"] = "0" }, {} },
        { { [M "empty"] = "" }, { "f07" } },
        { { [M "empty"] = op("$exists", true) }, { "f07" } },
        -- booleans
        { { [M "flag"] = true }, { "f01" } },
        { { [M "flag"] = false }, { "f02" } },
        { { [M "flag"] = "true" }, { "f04" } },
        { { [M "flag"] = op("$in", { true, false }) }, { "f01", "f02" } },
        { { [M "flag"] = op("$ne", true) }, all_but("f01") },
        { { [M "flag"] = op("$exists", false) }, { "f03", "f05", "f06", "f08", "f07" } },
        -- nested objects
        { { [M "region.zone"] = "eu" }, { "f01" } },
        { { [M "region.zone"] = "us" }, { "f02" } },
        { { [M "region"] = "eu" }, { "f03" } },
        { { [M "region.zone"] = op("$exists", true) }, { "f01", "f02", "f04" } },
        { { [M "region.zone"] = op("$exists", false) }, { "f03", "f05", "f06", "f08", "f07" } },
        { { [M "region.zone"] = op("$ne", "eu") }, all_but("f01") },
        { { [M "region.zone"] = op("$in", { "eu", "us" }) }, { "f01", "f02" } },
        -- objects and arrays as values, compared whole
        { { [M "region"] = { zone = "eu" } }, { "f01" } },
        { { [M "region"] = op("$eq", { zone = "us" }) }, { "f02" } },
        { { [M "region"] = op("$ne", { zone = "us" }) }, all_but("f02") },
        { { [M "region"] = op("$in", { { zone = "eu" }, "eu" }) }, { "f01", "f03" } },
        { { [M "region.zone"] = { "eu" } }, { "f04" } },
        { { [M "region.zone"] = op("$in", { { "eu" } }) }, { "f04" } },
        { { [M "tags"] = { "x", "y" } }, { "f01" } },
        { { [M "tags"] = { "y", "x" } }, { "f02" } },
        { { [M "tags"] = { "x" } }, {} },
        { { [M "tags"] = "x" }, {} },
        { { [M "tags"] = op("$in", { "x", "y" }) }, {} },
        { { [M "tags"] = op("$in", { { "x", "y" } }) }, { "f01" } },
        { { [M "tags"] = op("$ne", { "x", "y" }) }, all_but("f01") },
        { { [M "obj"] = op("$eq", { j = { 2, 3 }, k = 1 }) }, { "f03", "f04" } },
        { { [M "obj"] = op("$eq", { k = 1 }) }, {} },
        { { [M "obj.j"] = { 2, 3 } }, { "f03", "f04" } },
        { { [M "obj.j"] = { 3, 2 } }, {} },
        -- keys walk objects only: a number is a key, never a position
        { { [M "tags.1"] = "x" }, {} },
        { { [M "tags.0"] = "x" }, {} },
        { { [M "tags.1"] = op("$exists", true) }, {} },
        { { [M "tags.0"] = op("$exists", true) }, {} },
        { { [M "tags.1"] = op("$exists", false) }, ALL },
        { { [M "tags.1"] = op("$ne", "x") }, ALL },
        { { [M "tags.0"] = op("$in", { "x", "y" }) }, {} },
        { { [M "list.0.b"] = 1 }, {} },
        { { [M "list.1.b"] = 1 }, {} },
        { { [M "list.b"] = 1 }, {} },
        { { [M "list.0.b"] = op("$exists", true) }, {} },
        { { [M "list.0.b"] = op("$ne", 1) }, ALL },
        { { [M "list.0"] = op("$in", { { b = 1 } }) }, {} },
        { { [M "region.zone.0"] = "eu" }, {} },
        { { [M "region.zone.1"] = op("$exists", true) }, {} },
        { { [M "region.zone.1"] = op("$ne", "eu") }, ALL },
        -- a dot inside a key (\.) against a nested path
        { { [M "a\\.b"] = "dotted" }, { "f01" } },
        { { [M "a.b"] = "nested" }, { "f01" } },
        { { [M "a.b"] = "other" }, { "f02" } },
        { { [M "a\\.b"] = "nested" }, {} },
        { { [M "a.b"] = "dotted" }, {} },
        { { [M "a\\.b"] = op("$exists", true) }, { "f01", "f04" } },
        { { [M "a.b"] = op("$exists", true) }, { "f01", "f02" } },
        { { [M "a.b"] = op("$exists", false) }, { "f03", "f04", "f05", "f06", "f08", "f07" } },
        { { [M "a\\.b"] = op("$ne", "dotted") }, all_but("f01") },
        { { [M "a\\.b.c"] = 1 }, { "f04" } },
        { { [M "a"] = "flat" }, { "f03" } },
        -- keys with quotes, backslashes, tabs, spaces and unicode
        { { [M 'q"uote'] = "dq" }, { "f05" } },
        { { [M "it's"] = "sq" }, { "f05" } },
        { { [M "back\\\\slash"] = "bs" }, { "f05" } },
        { { [M "back\\slash"] = "bs" }, { "f05" } },
        { { [M "b\\\\\\.s"] = 1 }, { "f05" } },
        { { [M "b\\.s"] = 1 }, {} },
        { { [M "tab\tkey"] = "tab" }, { "f05" } },
        { { [M "sp ace"] = "sp" }, { "f05" } },
        { { [M "ünï日本"] = "日本" }, { "f05" } },
        { { [M "ünï日本"] = op("$in", { "x", "日本" }) }, { "f05" } },
        { { [M "x-y"] = "dash" }, { "f03" } },
        { { [M "7"] = "seven" }, { "f03" } },
        { { [M "7"] = op("$exists", true) }, { "f03" } },
        { { [M 'q"uote'] = op("$exists", false) }, all_but("f05") },
        { { [M "tab\tkey"] = op("$ne", "tab") }, all_but("f05") },
        -- several conditions, ANDed, with the other filters
        { { status = "scheduled", [M "tenant"] = "acme" }, { "f01", "f05" } },
        { { status = { "scheduled", "paused" }, [M "tenant"] = op("$ne", "acme") }, { "f03", "f06", "f08" } },
        { { [M "tenant"] = op("$in", { "acme", "globex" }), [M "n"] = op("$exists", true) },
          { "f01", "f02", "f03" } },
        { { [M "tenant"] = "acme", [M "flag"] = op("$ne", true), [M "region.zone"] = op("$exists", false) },
          { "f05" } },
        { { [M "tenant"] = "acme", [M "n"] = op("$in", { 1, "1" }), [M "flag"] = op("$exists", true) },
          { "f01", "f02" } },
        { { next_run_time_lte = at(3), [M "tenant"] = op("$ne", "globex") }, { "f01", "f02" } },
        { { job_id_in = { "f01", "f03", "f07" }, [M "tenant"] = "globex" }, { "f03", "f07" } },
        { { [M "tenant"] = "acme", [M "TENANT"] = "acme" }, {} },
      }

      -- A filter set as text, for the failure message.
      local function show(v)
        if v == null then return "null" end
        if type(v) == "string" then return ("%q"):format(v) end
        if type(v) ~= "table" then return tostring(v) end
        local parts = {}
        for k, x in pairs(v) do parts[#parts + 1] = tostring(k) .. "=" .. show(x) end
        table.sort(parts)
        return "{" .. table.concat(parts, ", ") .. "}"
      end

      it("match as specified through query_jobs and count_jobs", function()
        fixture()
        for i, case in ipairs(CASES) do
          local what = ("case %d %s"):format(i, show(case[1]))
          assert.are.same(case[2], query_ids(copy(case[1])), what)
          if supports.count_jobs then
            assert.are.equal(#case[2], store:count_jobs(copy(case[1])), what)
          end
        end
      end)

      it("apply limit and offset after every condition", function()
        fixture()
        local ne = { [M "tenant"] = op("$ne", "acme") } -- f03 f04 f06 f08 f07
        assert.are.same({ "f04", "f06" }, query_ids(copy(ne), 2, 1))
        assert.are.same({ "f07" }, query_ids(copy(ne), 2, 4))
        assert.are.same({}, query_ids(copy(ne), 2, 5))
        assert.are.same({ "f03" }, query_ids(copy(ne), 1))
        local both = { status = "scheduled", [M "tenant"] = op("$ne", "globex") } -- f01 f05 f06
        assert.are.same({ "f05" }, query_ids(copy(both), 1, 1))
        assert.are.same({ "f05", "f06" }, query_ids(copy(both), nil, 1))
        local absent = { [M "tags.0"] = op("$exists", false), [M "n"] = op("$ne", 1) }
        assert.are.same({ "f05", "f06", "f07" }, query_ids(copy(absent), 3, 3))
        if supports.count_jobs then
          assert.are.equal(5, store:count_jobs(copy(ne)))
          assert.are.equal(3, store:count_jobs(copy(both)))
          assert.are.equal(6, store:count_jobs(copy(absent)))
        end
      end)

      it("follow updates of the metadata", function()
        fixture()
        store:update_job("f06", { metadata = { tenant = "acme", tags = { "x", "y" } } })
        store:update_job("f01", { metadata = { tenant = null } }) -- replaces the whole object
        assert.are.same({ "f02", "f05", "f06" }, query_ids({ [M "tenant"] = "acme" }))
        assert.are.same({ "f01" }, query_ids({ [M "tenant"] = op("$exists", false) }))
        assert.are.same({ "f06" }, query_ids({ [M "tags"] = { "x", "y" } }))
        assert.are.same({ "f01", "f03", "f04", "f08", "f07" }, query_ids({ [M "tenant"] = op("$ne", "acme") }))
      end)

      -- Each bad filter with the text the message must hold.
      local BAD = {
        { { [M "a"] = op("$bad", 1) }, "$bad" },
        { { [M "a"] = op("$in", "x") }, "$in" },
        { { [M "a"] = op("$in", 1) }, "$in" },
        { { [M "a"] = op("$in", { k = "x" }) }, "$in" },
        { { [M "a"] = op("$in", { "x", null }) }, "$in" },
        { { [M "a"] = op("$exists", 1) }, "$exists" },
        { { [M "a"] = op("$exists", "true") }, "$exists" },
        { { [M "a"] = op("$exists", null) }, "$exists" },
        { { [M "a"] = { ["$eq"] = 1, ["$ne"] = 2 } }, "operator" },
        { { [M "a"] = { ["$eq"] = 1, b = 2 } }, "operator" },
        { { [M "a..b"] = 1 }, "empty key" },
        { { [M "a."] = 1 }, "empty key" },
        { { [M ".a"] = 1 }, "empty key" },
        { { ["metadata."] = 1 }, nil },
      }

      it("refuse a bad operator or path with 'invalid' naming the filter", function()
        fixture()
        for i, case in ipairs(BAD) do
          local key = next(case[1])
          local what = ("bad filter %d %s"):format(i, show(case[1]))
          local calls = { function() return store:query_jobs(copy(case[1])) end }
          if supports.count_jobs then calls[2] = function() return store:count_jobs(copy(case[1])) end end
          for _, call in ipairs(calls) do
            local err = assert_error_code("invalid", call)
            assert(err.message:find("'" .. key .. "'", 1, true), what .. ": " .. err.message)
            if case[2] then assert(err.message:find(case[2], 1, true), what .. ": " .. err.message) end
          end
        end
        assert.are.equal(8, #store:query_jobs())
      end)
    end)

    -- The scope of claim_due_jobs, next_due_time and recover_expired_leases
    -- (docs/tenancy.md): metadata conditions only.
    describe("scopes", function()
      local M = function(path) return "metadata." .. path end

      -- What answers the scoped calls: the store, or for a store written
      -- in Lua that does not apply scopes itself (no scoped_claims), the
      -- store chronis.storage.lua makes of it, which emulates them over
      -- its query_jobs and CAS. body(s) gets it; a wrapper is closed after.
      local function scoped(body)
        return function()
          local s = store
          if type(store) == "table" and not store.scoped_claims then
            s = chronis.storage.lua(store, { name = name })
          end
          body(s)
          if s ~= store then s:close() end
        end
      end

      -- Due before T0 unless said otherwise; s5 is paused, s4 not yet due.
      local function fixture()
        create("s1", { next_run_time = at(-10), metadata = { tenant = "acme" } })
        create("s2", { next_run_time = at(-20), metadata = { tenant = "globex" } })
        create("s3", { next_run_time = at(-5), priority = 9, metadata = { tenant = "acme", tier = "gold" } })
        create("s4", { next_run_time = at(100), metadata = { tenant = "acme" } })
        create("s5", { status = "paused", next_run_time = at(-30), metadata = { tenant = "acme" } })
        create("s6", { next_run_time = at(-1) })
        create("s7", { next_run_time = at(-3), metadata = { tenant = "acme", region = { zone = "eu" },
          tags = { "eu" } } })
      end

      local function claim(s, filters, limit, owner)
        return s:claim_due_jobs({ now = T0, limit = limit or 100, owner = owner or "node-a",
          lease_seconds = 30, filters = filters })
      end

      local function statuses()
        local out = {}
        for _, j in ipairs(store:query_jobs()) do out[j.job_id] = j.status end
        return out
      end

      if supports.claim_due_jobs then
        it("claim_due_jobs claims only the due jobs its filters match, by priority, up to limit", scoped(function(s)
          fixture()
          assert.are.same({ "s3" }, ids_of(claim(s, { [M "tenant"] = "acme" }, 1, "a")))
          assert.are.same({ "s1", "s7" }, ids_of(claim(s, { [M "tenant"] = "acme" }, 5, "b")))
          assert.are.same({}, claim(s, { [M "tenant"] = "acme" }, 5, "c"))
          assert.are.same({ s1 = "running", s2 = "scheduled", s3 = "running", s4 = "scheduled",
            s5 = "paused", s6 = "scheduled", s7 = "running" }, statuses())
          assert.are.equal("a", store:get_job("s3").claimed_by)
          assert.are.equal("b", store:get_job("s7").claimed_by)
          assert.are.same({ "s2", "s6" }, ids_of(claim(s, { [M "tenant"] = { ["$ne"] = "acme" } })))
        end))

        it("claim_due_jobs applies every operator and ANDs several conditions", scoped(function(s)
          fixture()
          assert.are.same({ "s6" }, ids_of(claim(s, { [M "tenant"] = { ["$exists"] = false } })))
          assert.are.same({ "s7" }, ids_of(claim(s, { [M "region.zone"] = "eu", [M "tenant"] = "acme" })))
          assert.are.same({}, claim(s, { [M "tags.0"] = "eu" }))
          assert.are.same({}, claim(s, { [M "tenant"] = "acme", [M "tier"] = "silver" }))
          assert.are.same({ "s3", "s2" }, ids_of(claim(s, { [M "tenant"] = { ["$in"] = { "globex", "acme" } } }, 2)))
          assert.are.same({ "s1" }, ids_of(claim(s, { [M "tier"] = { ["$ne"] = "gold" } })))
          assert.are.same({}, claim(s, { [M "tenant"] = { ["$in"] = {} } }))
          assert.are.same({ s1 = "running", s2 = "running", s3 = "running", s4 = "scheduled",
            s5 = "paused", s6 = "running", s7 = "running" }, statuses())
        end))
      end

      if supports.next_due_time then
        it("next_due_time is the earliest due time among the jobs its filters match", scoped(function(s)
          fixture()
          assert.are.equal(at(-10), s:next_due_time({ [M "tenant"] = "acme" }))
          assert.are.equal(at(-20), s:next_due_time({ [M "tenant"] = "globex" }))
          assert.are.equal(at(-1), s:next_due_time({ [M "tenant"] = { ["$exists"] = false } }))
          assert.are.equal(at(-3), s:next_due_time({ [M "region.zone"] = "eu" }))
          assert.are.equal(at(-5), s:next_due_time({ [M "tier"] = { ["$in"] = { "gold" } } }))
          assert.are.equal(at(-20), s:next_due_time({ [M "tenant"] = { ["$ne"] = "acme" } }))
          assert.is_nil(s:next_due_time({ [M "tenant"] = "nobody" }))
          assert.is_nil(s:next_due_time({ [M "tags.0"] = { ["$exists"] = true } }))
          assert.are.equal(at(-20), s:next_due_time({}))
          store:update_job("s1", { status = "paused" })
          assert.are.equal(at(-5), s:next_due_time({ [M "tenant"] = "acme" }))
          store:delete_job("s2")
          assert.is_nil(s:next_due_time({ [M "tenant"] = "globex" }))
        end))
      end

      if supports.recover_expired_leases then
        it("recover_expired_leases recovers only the expired leases its filters match", scoped(function(s)
          create("r1", { status = "running", claimed_by = "a", lease_until = at(5), metadata = { tenant = "acme" } })
          create("r2", { status = "running", claimed_by = "a", lease_until = at(5), metadata = { tenant = "globex" } })
          create("r3", { status = "running", claimed_by = "a", lease_until = at(50), metadata = { tenant = "acme" } })
          create("r4", { status = "running", claimed_by = "a", lease_until = at(5) })
          create("r5", { status = "running", claimed_by = "a", lease_until = at(5),
            metadata = { tenant = "acme", tags = { "acme" } } })
          assert.are.equal(0, s:recover_expired_leases(at(10), { [M "tenant"] = "nobody" }))
          assert.are.equal(0, s:recover_expired_leases(at(10), { [M "tags.0"] = "acme" }))
          assert.are.equal(2, s:recover_expired_leases(at(10), { [M "tenant"] = "acme" }))
          assert.are.same({ r1 = "scheduled", r2 = "running", r3 = "running", r4 = "running",
            r5 = "scheduled" }, statuses())
          assert.is_nil(store:get_job("r1").claimed_by)
          assert.are.equal(1, s:recover_expired_leases(at(10), { [M "tenant"] = { ["$exists"] = false } }))
          assert.are.equal("scheduled", store:get_job("r4").status)
          assert.are.equal(1, s:recover_expired_leases(at(100), { [M "tenant"] = { ["$in"] = { "acme" } } }))
          assert.are.same({ r1 = "scheduled", r2 = "running", r3 = "scheduled", r4 = "scheduled",
            r5 = "scheduled" }, statuses())
          assert.are.equal(1, s:recover_expired_leases(at(100), { [M "tenant"] = { ["$ne"] = "acme" } }))
          assert.are.equal("scheduled", store:get_job("r2").status)
        end))
      end

      -- A scope may not hold these: each is refused by name, by every
      -- scoped call, before anything changes.
      local NOT_SCOPE = {
        status = "scheduled", trigger_type = "cron", next_run_time_lte = T0, next_run_time_gte = T0,
        updated_at_lte = T0, updated_at_gte = T0, job_id_in = { "s1" },
      }
      local SCOPED = {}
      if supports.claim_due_jobs then SCOPED.claim_due_jobs = function(s, f) return claim(s, f) end end
      if supports.next_due_time then SCOPED.next_due_time = function(s, f) return s:next_due_time(f) end end
      if supports.recover_expired_leases then
        SCOPED.recover_expired_leases = function(s, f) return s:recover_expired_leases(at(1000), f) end
      end

      if next(SCOPED) then
        it("refuse status, trigger and time keys and job_id_in with 'invalid' naming the key", scoped(function(s)
          fixture()
          create("r", { status = "running", claimed_by = "a", lease_until = at(5) })
          local before = store:query_jobs()
          for call, f in pairs(SCOPED) do
            for key, v in pairs(NOT_SCOPE) do
              local err = assert_error_code("invalid", f, s, { [key] = copy(v), [M "tenant"] = "acme" })
              assert(err.message:find("'" .. key .. "'", 1, true), call .. ": " .. err.message)
            end
            local err = assert_error_code("invalid", f, s, { [M "tenant"] = "acme", bogus = 1 })
            assert(err.message:find("bogus", 1, true), call .. ": " .. err.message)
            err = assert_error_code("invalid", f, s, { [M "tenant"] = { ["$bad"] = 1 } })
            assert(err.message:find("metadata.tenant", 1, true), call .. ": " .. err.message)
            assert_error_code("invalid", f, s, "metadata.tenant")
          end
          assert.are.same(before, store:query_jobs())
        end))
      end

      if supports.claim_due_jobs then
        it("claim_due_jobs refuses an unknown option with 'invalid' naming it", scoped(function(s)
          fixture()
          local err = assert_error_code("invalid", function()
            s:claim_due_jobs({ now = T0, limit = 5, owner = "o", filter = { [M "tenant"] = "acme" } })
          end)
          assert(err.message:find("'filter'", 1, true), err.message)
          err = assert_error_code("invalid", function()
            s:claim_due_jobs({ now = T0, limit = 5, owner = "o", scope = { [M "tenant"] = "acme" } })
          end)
          assert(err.message:find("'scope'", 1, true), err.message)
          assert.are.same({}, store:query_jobs({ status = "running" }))
        end))
      end
    end)

    -- The rules every request follows are one on every store: a request
    -- that breaks one is refused, whatever the store holds.
    describe("rules", function()
      it("refuse an empty job_id at creation", function()
        assert_error_code("invalid", function() store:create_job(job("")) end)
        assert.are.same({}, store:query_jobs())
      end)

      it("refuse a known field of the wrong type, at creation and in updates", function()
        assert_error_code("invalid", function() store:create_job(job("w", { name = 5 })) end)
        assert.is_nil(store:get_job("w"))
        create("u")
        assert_error_code("invalid", function() store:update_job("u", { trigger_args = "x" }) end)
        assert.is_nil(store:get_job("u").trigger_args)
      end)

      it("refuse a change of job_id or the removal of status, found or not", function()
        create("u")
        for _, id in ipairs({ "u", "missing" }) do
          local err = assert_error_code("invalid", function() store:update_job(id, { job_id = "v" }) end)
          assert.truthy(err.message:find("job_id cannot be changed", 1, true), err.message)
          err = assert_error_code("invalid", function() store:update_job(id, { status = null }) end)
          assert.truthy(err.message:find("status cannot be removed", 1, true), err.message)
        end
        assert.are.same({ "u" }, query_ids())
        assert.are.equal("scheduled", store:get_job("u").status)
        assert.is_nil(store:get_job("v"))
      end)

      it("refuse bad updates in a compare-and-swap whether or not it would match", function()
        create("c", { name = "n" })
        for _, expected in ipairs({ { name = "n" }, { name = "other" } }) do
          assert_error_code("invalid", function()
            store:compare_and_swap_job("c", expected, { job_id = "d" })
          end)
        end
        assert_error_code("invalid", function()
          store:compare_and_swap_job("missing", { name = "n" }, { job_id = "d" })
        end)
        assert.are.same({ "c" }, query_ids())
      end)

      if supports.complete_jobs then
        it("refuse a whole completion batch with one bad item, changing nothing", function()
          create("a", { status = "running", claimed_by = "node-a", lease_until = at(30) })
          create("b", { status = "running", claimed_by = "node-a", lease_until = at(30) })
          local before = store:query_jobs()
          local err = assert_error_code("invalid", function()
            store:complete_jobs({
              { job_id = "a", owner = "node-a", delete = true },
              { job_id = "b", owner = "node-a", updates = { job_id = "z" } },
            })
          end)
          assert.truthy(err.message:find("job_id cannot be changed", 1, true), err.message)
          assert.are.same(before, store:query_jobs())
        end)
      end

      if supports.claim_due_jobs then
        it("take a limit of 0 as nothing to claim", function()
          create("a", { next_run_time = at(-1) })
          assert.are.same({}, store:claim_due_jobs({ now = T0, owner = "o", limit = 0 }))
          assert.are.equal("scheduled", store:get_job("a").status)
        end)
      end
    end)

    -- The values a job may hold are the same on every store: numbers come
    -- back with the value they had; what JSON or a store cannot keep as it
    -- was given (NaN, infinities, NUL bytes, invalid UTF-8) is refused with
    -- an `invalid` error naming the field, before anything is stored.
    describe("values a job may hold", function()
      local NAN, INF = 0 / 0, math.huge

      -- Numbers that lose digits, or their type, in a careless JSON round
      -- trip: the int64 edges, floats at and past 2^53 and 2^63 (integral,
      -- so written without a fraction), the double range's edges.
      local NUMBERS = {
        0, 1, -1, 42, math.maxinteger, math.mininteger, (1 << 53) + 1, -(1 << 53) - 1,
        0.5, -0.25, 0.1, 1 / 3, 123.456, 1.5e-7, 1e-300, 2.2250738585072014e-308, 5e-324,
        2.0 ^ 53, 2.0 ^ 60, 2.0 ^ 63, -(2.0 ^ 63), 2.0 ^ 64, 1e15, 1e19, 1e20, 123456789012345680000.0,
        1e100, -1e200, 1e308, 1.7976931348623157e308, -1.7976931348623157e308,
      }

      local function numbers_job(id)
        local kw, meta = {}, {}
        for i, x in ipairs(NUMBERS) do
          kw["n" .. i] = x
          meta["n" .. i] = x
        end
        return job(id, { args = copy(NUMBERS), kwargs = kw, metadata = { nested = meta },
          amount = 1e100 })
      end

      -- got holds every number with its value; integers stay integers, and
      -- floats stay floats unless they are integral and fit an integer.
      local function assert_numbers(got, what)
        assert.is_table(got, what)
        assert.are.equal(1e100, got.amount, what .. ": amount")
        for _, t in ipairs({ { got.args, "args[%d]" }, { got.kwargs, "kwargs.n%d" },
          { got.metadata and got.metadata.nested, "metadata.nested.n%d" } }) do
          assert.is_table(t[1], what .. ": " .. t[2])
          for i, x in ipairs(NUMBERS) do
            local name, v = what .. ": " .. t[2]:format(i), t[1][i] or t[1]["n" .. i]
            assert(v == x, ("%s: %s came back as %s"):format(name, ("%.17g"):format(x), tostring(v)))
            if math.type(x) == "integer" or not math.tointeger(x) then
              assert.are.equal(math.type(x), math.type(v), name .. " type")
            end
          end
        end
      end

      it("keeps any finite number's value through every read and write", function()
        assert_numbers(store:create_job(numbers_job("n")), "create_job")
        assert_numbers(store:get_job("n"), "get_job")
        assert_numbers(store:query_jobs()[1], "query_jobs")
        assert_numbers(store:update_job("n", { name = "x" }), "update_job")
        assert_numbers(select(2, store:compare_and_swap_job("n", { name = "x" }, { name = "y" })),
          "compare_and_swap_job")
        local again = numbers_job("n")
        store:update_job("n", { args = again.args, kwargs = again.kwargs, metadata = again.metadata })
        assert_numbers(store:get_job("n"), "get_job after update_job")
        if supports.get_jobs_batch then assert_numbers(store:get_jobs_batch({ "n" }).n, "get_jobs_batch") end
        if supports.claim_due_jobs then
          assert_numbers(store:claim_due_jobs({ now = T0, owner = "o", limit = 10 })[1], "claim_due_jobs")
        end
      end)

      it("finds a large number by metadata filter and by compare-and-swap", function()
        create("big", { metadata = { amount = 1e100, edge = 2.0 ^ 63 } })
        create("small", { metadata = { amount = 1, edge = 1 } })
        assert.are.same({ "big" }, query_ids({ ["metadata.amount"] = 1e100 }))
        assert.are.same({ "big" }, query_ids({ ["metadata.edge"] = 2.0 ^ 63 }))
        assert.is_true((store:compare_and_swap_job("big",
          { metadata = { amount = 1e100, edge = 2.0 ^ 63 } }, { name = "matched" })))
        assert.are.equal("matched", store:get_job("big").name)
      end)

      local function assert_invalid(field, f)
        local err = assert_error_code("invalid", f)
        assert(err.message:find(field, 1, true),
          ("the error should name %q: %s"):format(field, err.message))
        return err
      end

      it("refuses NaN and infinities at creation, naming the field", function()
        assert_invalid("kwargs.amount", function() create("x", { kwargs = { amount = NAN } }) end)
        assert_invalid("metadata.limits.max", function()
          create("x", { metadata = { limits = { max = INF } } })
        end)
        assert_invalid("args[2]", function() create("x", { args = { 1, -INF } }) end)
        assert_invalid("ratio", function() create("x", { ratio = INF }) end)
        assert_invalid("priority", function() create("x", { priority = NAN }) end)
        assert.is_nil(store:get_job("x"))
        assert.are.same({}, store:query_jobs())
      end)

      it("refuses NaN and infinities in updates and expectations, naming the field", function()
        create("a", { kwargs = { amount = 1 } })
        assert_invalid("kwargs.amount", function() store:update_job("a", { kwargs = { amount = NAN } }) end)
        assert_invalid("kwargs.amount", function()
          store:compare_and_swap_job("a", { status = "scheduled" }, { kwargs = { amount = INF } })
        end)
        assert_invalid("kwargs.amount", function()
          store:compare_and_swap_job("a", { kwargs = { amount = NAN } }, { name = "n" })
        end)
        assert.are.same({ amount = 1 }, store:get_job("a").kwargs)
      end)

      -- A string in every place a job holds one; bad(s) puts s there.
      local PLACES = {
        { "job_id", function(s) return job(s) end },
        { "name", function(s) return job("x", { name = s }) end },
        { "func_name", function(s) return job("x", { func_name = s }) end },
        { "timezone", function(s) return job("x", { timezone = s }) end },
        { "claimed_by", function(s) return job("x", { claimed_by = s }) end },
        { "status", function(s) return job("x", { status = "scheduled" .. s }) end },
        { "trigger_type", function(s) return job("x", { trigger_type = "cron" .. s }) end },
        { "trigger_args.hour", function(s) return job("x", { trigger_args = { hour = s } }) end },
        { "kwargs.to", function(s) return job("x", { kwargs = { to = s } }) end },
        { "args[2]", function(s) return job("x", { args = { "ok", s } }) end },
        { "metadata.tags[1]", function(s) return job("x", { metadata = { tags = { s } } }) end },
        { "custom.deep", function(s) return job("x", { custom = { deep = s } }) end },
      }

      local function assert_refused_everywhere(bad, shown)
        for _, p in ipairs(PLACES) do
          assert_invalid(p[1], function() store:create_job(p[2](bad)) end)
        end
        -- In keys too, named as they were given (escaped).
        assert_invalid("metadata.t" .. shown, function()
          create("x", { metadata = { ["t" .. bad] = "v" } })
        end)
        assert_invalid("kwargs.opts.k" .. shown, function()
          create("x", { kwargs = { opts = { ["k" .. bad] = 1 } } })
        end)
        assert_invalid("k" .. shown, function() create("x", { ["k" .. bad] = 1 }) end)
        assert.are.same({}, store:query_jobs())
      end

      it("refuses NUL bytes in every string and key of a job, naming the field", function()
        assert_refused_everywhere("\0b", "\\0b")
      end)

      it("refuses a job id with a NUL byte rather than cutting it short", function()
        assert_invalid("job_id", function() create("nul\0b") end)
        assert_invalid("job_id", function() create("nul\0c") end)
        assert.is_nil(store:get_job("nul"))
        create("nul")
        assert.are.same({ "nul" }, query_ids())
      end)

      it("refuses invalid UTF-8 in every string and key of a job, naming the field", function()
        assert_refused_everywhere("\xff", "\\xff")
        -- Truncated, overlong, surrogate and past U+10FFFF sequences.
        for _, s in ipairs({ "\xc3", "a\xe2\x82", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\x80" }) do
          assert_invalid("kwargs.s", function() create("x", { kwargs = { s = s } }) end)
        end
        assert.is_nil(store:get_job("x"))
      end)

      -- JSON escapes these in a key: a filter must compare the key itself.
      it("finds jobs by metadata keys holding quotes, backslashes and control characters", function()
        local keys = { 'q"k', "b\\k", "a'b\"c\\d", "nl\nk", "c\u{1}k", "\"", "\\" }
        for i, k in ipairs(keys) do
          create("k" .. i, { metadata = { [k] = "v" .. i, nested = { [k] = i } } })
        end
        for i, k in ipairs(keys) do
          assert.are.same({ "k" .. i }, query_ids({ ["metadata." .. k] = "v" .. i }), k)
          assert.are.same({ "k" .. i }, query_ids({ ["metadata.nested." .. k] = i }), k)
          if supports.count_jobs then
            assert.are.equal(1, store:count_jobs({ ["metadata." .. k] = "v" .. i }), k)
          end
        end
      end)

      -- Nesting is bounded (100 levels): a deeper table, or a cycle, is
      -- refused by name before it reaches the C stack or the store.
      it("refuses 10,000-deep tables in a job, its updates and filters, keeping the others", function()
        local function deep(n)
          local t = {}
          local c = t
          for _ = 1, n do
            c.x = {}
            c = c.x
          end
          return t
        end
        local cycle = {}
        cycle.self = cycle
        create("keep", { kwargs = { a = 1 } })
        for _, bad in ipairs({ deep(10000), cycle }) do
          assert_invalid("kwargs.x", function() store:create_job({ job_id = "d", status = "scheduled",
            kwargs = { x = bad } }) end)
          assert_invalid("metadata.x", function() store:create_job({ job_id = "d", status = "scheduled",
            metadata = { x = bad } }) end)
          assert_invalid("args[1]", function() store:create_job({ job_id = "d", status = "scheduled",
            args = { bad } }) end)
          assert_invalid("kwargs.x", function() store:update_job("keep", { kwargs = { x = bad } }) end)
          assert_invalid("kwargs.x", function()
            store:compare_and_swap_job("keep", { kwargs = { x = bad } }, { name = "n" })
          end)
          assert_invalid("metadata.t", function() store:query_jobs({ ["metadata.t"] = bad }) end)
        end
        assert.is_nil(store:get_job("d"))
        assert.are.same({ a = 1 }, store:get_job("keep").kwargs)
        assert.are.same({ "keep" }, query_ids())
      end)

      it("keeps any valid UTF-8, control characters included", function()
        local s = "tab\t nl\n \u{1}\u{7f} é 日本 \u{10ffff} 😀"
        create("u\u{e9}", { name = s, kwargs = { [s] = s }, metadata = { k = s } })
        local got = store:get_job("u\u{e9}")
        assert.are.equal(s, got.name)
        assert.are.same({ [s] = s }, got.kwargs)
        assert.are.same({ "u\u{e9}" }, query_ids({ ["metadata.k"] = s }))
      end)

      it("refuses NUL bytes and invalid UTF-8 in updates and expectations", function()
        create("a", { metadata = { t = "v" } })
        for _, bad in ipairs({ "\0", "\xff" }) do
          assert_invalid("name", function() store:update_job("a", { name = "n" .. bad }) end)
          assert_invalid("metadata.t", function() store:update_job("a", { metadata = { t = bad } }) end)
          assert_invalid("kwargs.x", function()
            store:compare_and_swap_job("a", { status = "scheduled" }, { kwargs = { x = bad } })
          end)
          assert_invalid("name", function()
            store:compare_and_swap_job("a", { name = "n" .. bad }, { name = "m" })
          end)
        end
        local got = store:get_job("a")
        assert.is_nil(got.name)
        assert.are.same({ t = "v" }, got.metadata)
      end)

      it("refuses NUL bytes and invalid UTF-8 in the ids given to every call", function()
        create("nul")
        for _, id in ipairs({ "nul\0b", "nul\xff" }) do
          assert_invalid("job_id", function() store:get_job(id) end)
          assert_invalid("job_id", function() store:delete_job(id) end)
          assert_invalid("job_id", function() store:update_job(id, { name = "n" }) end)
          assert_invalid("job_id", function()
            store:compare_and_swap_job(id, { status = "scheduled" }, { name = "n" })
          end)
          if supports.get_jobs_batch then
            assert_invalid("job_id", function() store:get_jobs_batch({ "nul", id }) end)
          end
          if supports.complete_jobs then
            assert_invalid("job_id", function()
              store:complete_jobs({ { job_id = id, owner = "o", delete = true } })
            end)
          end
        end
        local got = store:get_job("nul")
        assert.is_table(got)
        assert.is_nil(got.name)
      end)

      it("refuses NUL bytes and invalid UTF-8 in filter keys and values, naming the filter", function()
        create("a", { metadata = { t = "v" } })
        for _, bad in ipairs({ { "\0x", "\\0x" }, { "\xff", "\\xff" } }) do
          local b, shown = bad[1], bad[2]
          local cases = {
            { { ["metadata.t" .. b] = "v" }, "metadata.t" .. shown },
            { { ["metadata.t"] = "v" .. b }, "metadata.t" },
            { { ["metadata.t"] = { "v", b } }, "metadata.t" },
            { { status = "scheduled" .. b }, "status" },
            { { trigger_type = "cron" .. b }, "trigger_type" },
            { { job_id_in = { "a", "a" .. b } }, "job_id_in" },
            { { next_run_time_lte = T0 .. b }, "next_run_time_lte" },
          }
          for _, c in ipairs(cases) do
            assert_invalid(c[2], function() store:query_jobs(c[1]) end)
            if supports.count_jobs then assert_invalid(c[2], function() store:count_jobs(c[1]) end) end
          end
        end
      end)

      -- 40 KB: six of them fit DynamoDB's 400 KB items (1 MB ones are in
      -- spec/hostile_spec.lua, for the stores without such a limit).
      it("keeps large strings and keys, and finds them by filter", function()
        local big = string.rep("q'\"\\ é", 40 * 1024 // 7)
        create("big", { name = big, func_name = big, kwargs = { [big] = big }, metadata = { t = big },
          args = { big } })
        create("small", { kwargs = { a = 1 } })
        local got = store:get_job("big")
        assert(got.name == big and got.func_name == big and got.kwargs[big] == big
          and got.metadata.t == big and got.args[1] == big, "a large string did not round-trip")
        assert.are.same({ "big" }, query_ids({ ["metadata.t"] = big }))
        assert.are.same({ a = 1 }, store:get_job("small").kwargs)
      end)

      it("refuses a limit or offset that is no count, naming it", function()
        create("a")
        for _, v in ipairs({ -1, math.mininteger, 0 / 0, math.huge, 1.5, 2 ^ 53, "5", {} }) do
          assert_invalid("limit", function() store:query_jobs(nil, v) end)
          assert_invalid("offset", function() store:query_jobs(nil, 10, v) end)
        end
        assert.are.same({ "a" }, query_ids())
      end)

      it("accepts math.maxinteger as a limit (no limit) and as an offset (nothing)", function()
        for i = 1, 3 do create("j" .. i, { next_run_time = at(i) }) end
        assert.are.same({ "j1", "j2", "j3" }, query_ids(nil, math.maxinteger))
        assert.are.same({ "j2", "j3" }, query_ids(nil, math.maxinteger, 1))
        assert.are.same({}, query_ids(nil, nil, math.maxinteger))
        assert.are.same({}, query_ids(nil, math.maxinteger, math.maxinteger))
        assert.are.same({}, query_ids({ status = "scheduled" }, 1, math.maxinteger))
        assert.are.same({ "j3" }, query_ids({ status = "scheduled" }, math.maxinteger, 2))
        if supports.claim_due_jobs then
          local got = store:claim_due_jobs({ now = at(10), owner = "o", limit = math.maxinteger })
          assert.are.same({ "j1", "j2", "j3" }, sorted(ids_of(got)))
        end
      end)
    end)

    -- ---- run history (docs/history.md) ----
    -- Runs start a few minutes ago: older ones fall to the age limit.
    local now0
    local function ago(seconds)
      now0 = now0 or wall_us()
      return format(now0 - math.floor(seconds * 1000000))
    end
    local function run(id, job_id, fields)
      local r = { run_id = id, job_id = job_id, outcome = "ok", started_at = ago(300),
        ended_at = ago(299), scheduled_at = ago(301), attempt = 1, node = "n1",
        name = "Job " .. job_id, func_name = "work" }
      for k, v in pairs(fields or {}) do
        if v == NONE then r[k] = nil else r[k] = v end
      end
      return r
    end
    local function run_ids(filters, limit, offset)
      local out = {}
      for i, r in ipairs(store:query_runs(filters, limit, offset)) do out[i] = r.run_id end
      return out
    end

    optional("record_runs", function()
      before_each(function() now0 = nil end)

      it("keeps every field of a run and returns how many it wrote", function()
        local r = run("r1", "j1", { outcome = "error", error_code = "error",
          error_message = "boom: \"quoted\" \\ back\nslash ünï 日本", attempt = 3,
          metadata = { tenant = "acme", deep = { k = { 1, 2 } } } })
        assert.are.equal(1, store:record_runs({ r }))
        local got = store:query_runs({ job_id = "j1" })
        assert.are.equal(1, #got)
        local g = got[1]
        for _, k in ipairs({ "run_id", "job_id", "outcome", "error_code", "error_message", "node",
          "name", "func_name", "started_at", "ended_at", "scheduled_at" }) do
          assert.are.equal(r[k], g[k], k)
        end
        assert.are.equal(3, g.attempt)
        assert.are.same(r.metadata, g.metadata)
        assert.is_true(math.abs(g.duration - 1) < 1e-6, "duration " .. tostring(g.duration))
        assert.is_nil(g.keep)
      end)

      it("keeps a job's last runs and prunes the older ones as it writes", function()
        local runs = {}
        for i = 1, 25 do runs[i] = run(("a%02d"):format(i), "a", { started_at = ago(600 - i) }) end
        for i = 1, 3 do runs[#runs + 1] = run("b" .. i, "b", { started_at = ago(600 - i) }) end
        store:record_runs(runs)
        local a = run_ids({ job_id = "a" })
        assert.are.equal(20, #a, "a store keeps 20 runs per job by default")
        assert.are.equal("a25", a[1])
        assert.are.equal("a06", a[20])
        assert.are.same({ "b3", "b2", "b1" }, run_ids({ job_id = "b" }))
      end)

      it("keeps as many runs of a job as its run says (keep), none for 0", function()
        local runs = {}
        for i = 1, 5 do runs[i] = run("k" .. i, "k", { started_at = ago(100 - i), keep = 2 }) end
        runs[#runs + 1] = run("z1", "z", { keep = 0 })
        store:record_runs(runs)
        assert.are.same({ "k5", "k4" }, run_ids({ job_id = "k" }))
        assert.are.same({}, run_ids({ job_id = "z" }))
      end)

      it("prunes runs older than its age limit as it writes", function()
        store:record_runs({ run("old", "o", { started_at = ago(30 * 86400), ended_at = ago(30 * 86400 - 1) }) })
        store:record_runs({ run("new", "o") })
        assert.are.same({ "new" }, run_ids({ job_id = "o" }))
      end)

      it("keeps the runs of a job that is deleted", function()
        create("gone")
        store:record_runs({ run("g1", "gone") })
        assert.is_true(store:delete_job("gone"))
        assert.are.same({ "g1" }, run_ids({ job_id = "gone" }))
      end)

      it("refuses a run without run_id, job_id, started_at or a known outcome, writing none", function()
        for _, bad in ipairs({ { run_id = NONE }, { job_id = NONE }, { started_at = NONE },
          { outcome = "fine" }, { started_at = "yesterday" }, { attempt = -1 } }) do
          assert_error_code("invalid", function()
            store:record_runs({ run("ok1", "v"), run("bad", "v", bad) })
          end)
        end
        assert.are.same({}, store:query_runs({ job_id = "v" }))
      end)
    end)

    optional("query_runs", function()
      before_each(function() now0 = nil end)

      local function seed()
        store:record_runs({
          run("r1", "j1", { started_at = ago(50), func_name = "mail", metadata = { tenant = "a" } }),
          run("r2", "j1", { started_at = ago(40), outcome = "error", error_code = "error",
            error_message = "x", func_name = "mail", metadata = { tenant = "a" } }),
          run("r3", "j2", { started_at = ago(30), outcome = "timeout", error_code = "timeout",
            error_message = "y", metadata = { tenant = "b", region = { zone = "eu" } } }),
          run("r4", "j3", { started_at = ago(20), outcome = "skipped" }),
          run("r5", "j3", { started_at = ago(20), outcome = "interrupted" }),
        })
      end

      it("returns runs newest first, then by run_id descending, with paging", function()
        seed()
        assert.are.same({ "r5", "r4", "r3", "r2", "r1" }, run_ids())
        assert.are.same({ "r4", "r3" }, run_ids(nil, 2, 1))
        assert.are.same({}, run_ids(nil, 2, 10))
        assert.are.same({ "r5" }, run_ids({}, 1))
      end)

      it("pages through a long history: the pages put together are the whole, in order", function()
        -- Start times with many ties (run_id breaks them), written in an
        -- order unlike the query's.
        local batch = {}
        for i = 1, 240 do
          local id = ("p%03d"):format((i * 97) % 240)
          batch[#batch + 1] = run(id, "job" .. (i % 40), { started_at = ago(((i * 31) % 24) * 10) })
        end
        store:record_runs(batch)
        local all = run_ids({}, 1000)
        assert.are.equal(240, #all)
        for _, size in ipairs({ 1, 7, 50, 239 }) do
          local joined, offset = {}, 0
          while true do
            local page = run_ids({}, size, offset)
            for _, id in ipairs(page) do joined[#joined + 1] = id end
            if #page < size then break end
            offset = offset + size
          end
          assert.are.same(all, joined, "pages of " .. size)
        end
      end)

      it("filters by job, outcome, time range, handler and metadata, ANDed", function()
        seed()
        assert.are.same({ "r2", "r1" }, run_ids("j1"))
        assert.are.same({ "r5", "r4", "r2", "r1" }, run_ids({ job_id_in = { "j1", "j3", "nope" } }))
        assert.are.same({}, run_ids({ job_id_in = {} }))
        assert.are.same({ "r2" }, run_ids({ outcome = "error" }))
        assert.are.same({ "r3", "r2" }, run_ids({ outcome = { "error", "timeout" } }))
        assert.are.same({ "r3", "r2" }, run_ids({ started_at_gte = ago(45), started_at_lte = ago(25) }))
        assert.are.same({ "r2", "r1" }, run_ids({ func_name = "mail" }))
        assert.are.same({ "r2", "r1" }, run_ids({ ["metadata.tenant"] = "a" }))
        assert.are.same({ "r3" }, run_ids({ ["metadata.region.zone"] = "eu" }))
        assert.are.same({ "r2" }, run_ids({ ["metadata.tenant"] = "a", outcome = "error" }))
        assert.are.same({}, run_ids({ ["metadata.tenant"] = "a", outcome = "timeout" }))
      end)

      it("refuses an unknown filter or outcome with 'invalid', naming it", function()
        local err = assert_error_code("invalid", function() store:query_runs({ outcom = "ok" }) end)
        assert.truthy(err.message:find("outcom", 1, true))
        assert_error_code("invalid", function() store:query_runs({ outcome = "fine" }) end)
      end)

      if supports.complete_jobs then
        it("gets the run of each completion that applies, written with it", function()
          running("c1", "me")
          running("c2", "other")
          local res = store:complete_jobs({
            { job_id = "c1", owner = "me", updates = { status = "scheduled", claimed_by = null,
              lease_until = null, last_outcome = "ok" }, run = run("cr1", "c1") },
            { job_id = "c2", owner = "me", delete = true, run = run("cr2", "c2") },
          })
          assert.is_true(res[1].ok)
          assert.is_false(res[2].ok)
          assert.are.same({ "cr1" }, run_ids({ job_id_in = { "c1", "c2" } }))
          assert.are.equal("ok", store:get_job("c1").last_outcome)
        end)

        it("keeps the run of a completion that deletes its job", function()
          running("d1", "me")
          store:complete_jobs({ { job_id = "d1", owner = "me", delete = true, run = run("dr1", "d1") } })
          assert.is_nil(store:get_job("d1"))
          assert.are.same({ "dr1" }, run_ids("d1"))
        end)
      end
    end)

    operation("close", function()
      it("is idempotent, and a closed store refuses calls with 'unavailable'", function()
        create("a")
        store:close()
        store:close()
        local ok, err = pcall(store.get_job, store, "a")
        assert.is_false(ok)
        assert.are.equal("unavailable", err.code)
      end)
    end)

    it("has tests for every operation of the contract", function()
      for _, op in ipairs(chronis.storage.operations) do
        assert(covered[op.name], "storage contract: no tests for " .. op.name)
      end
    end)
  end)
end
