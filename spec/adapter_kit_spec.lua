-- chronis.adapter_kit: the shared parts of Lua storage adapters, function
-- by function. The adapters built on it (adapters/file.lua,
-- scripts/adapters/example_kv.lua) run the whole storage contract in their
-- own specs; these tests pin each piece down on its own.
local chronis = require "chronis"
local kit = require "chronis.adapter_kit"
local U = require "support.util"

local null = chronis.json.null
local parse, format = chronis.time.parse, chronis.time.format

local T0 = "2025-01-15T10:00:00Z"
local T0_US = parse(T0)
local S = 1000000

local error_of = U.error_of

-- Asserts that f(...) raises `invalid` with `text` in its message.
local function assert_invalid(text, f, ...)
  U.assert_error_naming("invalid", text, f, ...)
end

local function ids_of(list, rec_of)
  local out = {}
  for i, x in ipairs(list) do out[i] = (rec_of and rec_of(x) or x).job_id end
  return out
end

describe("chronis.adapter_kit", function()
  describe("fail", function()
    it("raises a structured error with code and formatted message", function()
      local err = error_of(kit.fail, "duplicate", "job '%s' already exists", "a")
      assert.are.equal("duplicate", err.code)
      assert.are.equal("job 'a' already exists", err.message)
      assert.are.equal("duplicate: job 'a' already exists", tostring(err))
    end)
  end)

  describe("message_of", function()
    it("takes the message of a structured error and the text of any other", function()
      assert.are.equal("boom", kit.message_of(chronis.error("invalid", "boom")))
      assert.are.equal("plain", kit.message_of("plain"))
      assert.are.equal("42", kit.message_of(42))
    end)
  end)

  describe("to_us", function()
    it("reads integer µs and any ISO-8601 form, naive times as UTC", function()
      assert.are.equal(123, kit.to_us(123, "t"))
      assert.are.equal(T0_US, kit.to_us("2025-01-15T11:00:00+01:00", "t"))
      assert.are.equal(T0_US + S // 2, kit.to_us("2025-01-15 10:00:00.5", "t"))
    end)

    it("refuses other values with an invalid error naming the field", function()
      assert_invalid("field 'x':", kit.to_us, "not a time", "field 'x'")
      assert_invalid("field 'x': expected an ISO-8601 time or integer microseconds, got number",
        kit.to_us, 1.5, "field 'x'")
      assert_invalid("got table", kit.to_us, {}, "field 'x'")
    end)
  end)

  describe("time_of", function()
    it("reads a stored time as µs and a missing one as nil", function()
      assert.are.equal(T0_US + 1, kit.time_of({ next_run_time = "2025-01-15T10:00:00.000001Z" }, "next_run_time"))
      assert.is_nil(kit.time_of({}, "next_run_time"))
    end)
  end)

  describe("copy", function()
    it("copies tables deeply and passes other values through", function()
      local src = { a = { b = { 1, 2 } }, s = "x" }
      local c = kit.copy(src)
      assert.are.same(src, c)
      assert.are_not.equal(src.a, c.a)
      assert.are_not.equal(src.a.b, c.a.b)
      c.a.b[1] = 99
      assert.are.equal(1, src.a.b[1])
      assert.are.equal("s", kit.copy("s"))
      assert.is_nil(kit.copy(nil))
    end)
  end)

  describe("same", function()
    it("compares by content, 1 and '1' differing", function()
      assert.is_true(kit.same({ a = { 1, "x" } }, { a = { 1, "x" } }))
      assert.is_false(kit.same(1, "1"))
      assert.is_false(kit.same({ a = 1 }, { a = 1, b = 2 }))
      assert.is_false(kit.same({ a = 1, b = 2 }, { a = 1 }))
      assert.is_false(kit.same({ a = { 1 } }, { a = { "1" } }))
      assert.is_false(kit.same({}, "x"))
    end)
  end)

  describe("check_fields", function()
    it("rewrites time fields canonically and leaves other fields alone", function()
      local t = { next_run_time = "2025-01-15T11:00:00+01:00", lease_until = T0_US + S // 2,
        next_run_time_local = "2025-01-15T11:00:00+01:00" }
      kit.check_fields(t, "job 'a'", false)
      assert.are.equal(T0, t.next_run_time)
      assert.are.equal("2025-01-15T10:00:00.500000Z", t.lease_until)
      assert.are.equal("2025-01-15T11:00:00+01:00", t.next_run_time_local)
    end)

    it("refuses a bad time, status or priority, naming the field", function()
      assert_invalid("job 'a': invalid field 'created_at'", kit.check_fields, { created_at = "soon" }, "job 'a'")
      assert_invalid("job 'a': invalid field 'status': expected pending, scheduled, running, paused, failed or completed",
        kit.check_fields, { status = "done" }, "job 'a'")
      assert_invalid("invalid field 'priority': expected an integer", kit.check_fields, { priority = 1.5 }, "j")
      assert_invalid("invalid field 'priority'", kit.check_fields, { priority = "1" }, "j")
    end)

    it("accepts null for status only when partial, and null times always", function()
      kit.check_fields({ status = null, lease_until = null, priority = null }, "j", true)
      kit.check_fields({ priority = 3.0 }, "j", false)
      assert_invalid("invalid field 'status'", kit.check_fields, { status = null }, "j", false)
    end)
  end)

  describe("check_record", function()
    it("returns a canonical copy without null fields", function()
      local job = { job_id = "a", status = "scheduled", next_run_time = "2025-01-15T11:00:00+01:00",
        metadata = { k = { 1 } }, gone = null }
      local rec = kit.check_record(job, "create_job")
      assert.are.same({ job_id = "a", status = "scheduled", next_run_time = T0, metadata = { k = { 1 } } }, rec)
      job.metadata.k[1] = 2
      assert.are.equal(1, rec.metadata.k[1])
      assert.are.equal("2025-01-15T11:00:00+01:00", job.next_run_time)
    end)

    it("requires a table with job_id and status", function()
      assert_invalid("create_job: a job must be a table, got string", kit.check_record, "a", "create_job")
      assert_invalid("create_job: field 'job_id' is required (a non-empty string)",
        kit.check_record, { status = "pending" }, "create_job")
      assert_invalid("field 'job_id' is required", kit.check_record, { job_id = "", status = "pending" }, "x")
      assert_invalid("job 'a': field 'status' is required", kit.check_record, { job_id = "a" }, "create_job")
      assert_invalid("job 'a': field 'status' is required",
        kit.check_record, { job_id = "a", status = null }, "create_job")
    end)
  end)

  describe("check_updates", function()
    it("returns a checked copy that keeps nulls", function()
      local updates = { next_run_time = T0_US, claimed_by = null, job_id = "a", metadata = { x = 1 } }
      local u = kit.check_updates("a", updates)
      assert.are.equal(T0, u.next_run_time)
      assert.are.equal(null, u.claimed_by)
      assert.are_not.equal(updates.metadata, u.metadata)
      assert.are.equal(T0_US, updates.next_run_time)
    end)

    it("refuses a change of job_id, removing status, and a non-table", function()
      assert_invalid("job 'a': job_id cannot be changed", kit.check_updates, "a", { job_id = "b" })
      assert_invalid("job 'a': status cannot be removed", kit.check_updates, "a", { status = null })
      assert_invalid("job 'a': updates must be a table, got nil", kit.check_updates, "a", nil)
      assert_invalid("job 'a': invalid field 'status'", kit.check_updates, "a", { status = "x" })
    end)
  end)

  describe("check_expected", function()
    it("returns a canonical copy and allows null", function()
      local want = kit.check_expected("a", { updated_at = "2025-01-15T11:00:00+01:00", claimed_by = null })
      assert.are.equal(T0, want.updated_at)
      assert.are.equal(null, want.claimed_by)
    end)

    it("refuses a non-table and bad times, saying it is the expectation", function()
      assert_invalid("job 'a': expected must be a table, got string", kit.check_expected, "a", "x")
      assert_invalid("job 'a': expected: invalid field 'lease_until'", kit.check_expected, "a",
        { lease_until = "later" })
    end)
  end)

  describe("apply", function()
    it("merges one level deep, null removing a field, and returns the record", function()
      local rec = { job_id = "a", status = "running", claimed_by = "n1", metadata = { a = 1, b = 2 } }
      local out = kit.apply(rec, { status = "scheduled", claimed_by = null, metadata = { b = 3 } })
      assert.are.equal(rec, out)
      assert.are.same({ job_id = "a", status = "scheduled", metadata = { b = 3 } }, rec)
    end)
  end)

  describe("matches", function()
    local rec = { job_id = "a", status = "running", updated_at = T0, metadata = { n = 1 } }

    it("needs every expected field equal, times as instants", function()
      assert.is_true(kit.matches(rec, kit.check_expected("a",
        { status = "running", updated_at = "2025-01-15T11:00:00+01:00", metadata = { n = 1 } })))
      assert.is_false(kit.matches(rec, { status = "running", metadata = { n = "1" } }))
      assert.is_false(kit.matches(rec, { status = "scheduled" }))
      assert.is_true(kit.matches(rec, {}))
    end)

    it("reads null as absent, and an absent field never matches a value", function()
      assert.is_true(kit.matches(rec, { claimed_by = null }))
      assert.is_false(kit.matches(rec, { status = null }))
      assert.is_false(kit.matches(rec, { claimed_by = "n1" }))
    end)
  end)

  describe("the C stores' own rules", function()
    it("refuse a known field of the wrong type in records and updates", function()
      assert_invalid("create_job: invalid field 'name': expected a string", kit.check_record,
        { job_id = "a", status = "pending", name = 5 }, "create_job")
      assert_invalid("job 'a': invalid field 'trigger_args': expected a table", kit.check_updates,
        "a", { trigger_args = "x" })
    end)

    it("compare times as instants in a CAS, whatever the record's form", function()
      local rec = { job_id = "a", status = "running", lease_until = "2025-01-15T11:00:00+01:00" }
      assert.is_true(kit.matches(rec, { lease_until = T0 }))
      assert.is_true(kit.matches(rec, { lease_until = T0_US }))
    end)
  end)

  describe("compile_filters", function()
    local jobs = {
      { job_id = "a", status = "scheduled", trigger_type = "cron", next_run_time = T0,
        updated_at = "2025-01-15T09:00:00Z", metadata = { region = { zone = "eu" }, n = 1, tags = { "x" } } },
      { job_id = "b", status = "paused", trigger_type = "date", next_run_time = "2025-01-15T10:00:00.5Z",
        metadata = { region = "eu", n = "1" } },
      { job_id = "c", status = "running", trigger_type = "interval" },
    }

    local function select(filters)
      local match = kit.compile_filters(filters)
      local out = {}
      for _, j in ipairs(jobs) do
        if match(j) then out[#out + 1] = j.job_id end
      end
      return out
    end

    it("matches everything without filters", function()
      assert.are.same({ "a", "b", "c" }, select(nil))
      assert.are.same({ "a", "b", "c" }, select({}))
    end)

    it("filters on a status or any of several", function()
      assert.are.same({ "b" }, select({ status = "paused" }))
      assert.are.same({ "a", "c" }, select({ status = { "scheduled", "running" } }))
      assert_invalid("invalid filter 'status'", kit.compile_filters, { status = "done" })
    end)

    it("filters on trigger_type", function()
      assert.are.same({ "c" }, select({ trigger_type = "interval" }))
      assert_invalid("invalid filter 'trigger_type'", kit.compile_filters, { trigger_type = "weekly" })
    end)

    it("takes time bounds as inclusive instants; a missing time meets none", function()
      assert.are.same({ "a" }, select({ next_run_time_lte = "2025-01-15T11:00:00+01:00" }))
      assert.are.same({ "a", "b" }, select({ next_run_time_gte = T0_US }))
      assert.are.same({ "b" }, select({ next_run_time_gte = T0_US + 1 }))
      assert.are.same({ "a" }, select({ updated_at_lte = T0 }))
      assert.are.same({}, select({ updated_at_gte = T0 }))
      assert_invalid("invalid filter 'next_run_time_lte'", kit.compile_filters, { next_run_time_lte = "x" })
    end)

    it("matches metadata at a dotted path by content, numbers and strings differing", function()
      assert.are.same({ "a" }, select({ ["metadata.region.zone"] = "eu" }))
      assert.are.same({ "b" }, select({ ["metadata.region"] = "eu" }))
      assert.are.same({ "a" }, select({ ["metadata.n"] = 1 }))
      assert.are.same({ "b" }, select({ ["metadata.n"] = "1" }))
      assert.are.same({ "a" }, select({ ["metadata.tags"] = { "x" } }))
      assert.are.same({}, select({ ["metadata.region.zone.deeper"] = "eu" }))
    end)

    it("filters on job_id_in and returns its ids without repeats", function()
      local match, ids = kit.compile_filters({ job_id_in = { "c", "a", "c", "zz" } })
      assert.are.same({ "c", "a", "zz" }, ids)
      assert.is_true(match(jobs[1]))
      assert.is_false(match(jobs[2]))
      assert.are.same({}, select({ job_id_in = {} }))
      local _, none = kit.compile_filters({ status = "paused" })
      assert.is_nil(none)
      assert_invalid("invalid filter 'job_id_in': expected an array", kit.compile_filters, { job_id_in = "a" })
      assert_invalid("invalid filter 'job_id_in': ids must be strings", kit.compile_filters, { job_id_in = { 1 } })
    end)

    it("needs every filter to hold", function()
      assert.are.same({ "a" }, select({ status = { "scheduled", "paused" }, ["metadata.n"] = 1 }))
      assert.are.same({}, select({ status = "paused", trigger_type = "cron" }))
    end)

    it("refuses an unknown key, naming it and the closest known one", function()
      assert_invalid("unknown filter 'statuss'; did you mean 'status'?", kit.compile_filters, { statuss = "paused" })
      assert_invalid("unknown filter 'metadata.' (expected status, trigger_type", kit.compile_filters, { ["metadata."] = 1 })
      assert_invalid("unknown filter '1' (expected", kit.compile_filters, { "paused" })
      assert_invalid("unknown filters 'next_run_time_le' (did you mean 'next_run_time_lte'?) and 'statuss' "
        .. "(did you mean 'status'?)", kit.compile_filters, { statuss = "paused", next_run_time_le = 1 })
      assert_invalid("filters must be a table, got string", kit.compile_filters, "status=paused")
    end)
  end)

  describe("sort_query", function()
    it("orders by next_run_time as an instant, jobs without one last, then job_id", function()
      local list = {
        { job_id = "none2" },
        { job_id = "half", next_run_time = "2025-01-15T10:00:00.5Z" },
        { job_id = "b", next_run_time = T0 },
        { job_id = "none1" },
        { job_id = "a", next_run_time = T0 },
      }
      assert.are.equal(list, kit.sort_query(list))
      assert.are.same({ "a", "b", "half", "none1", "none2" }, ids_of(list))
    end)

    it("sorts other elements through rec_of", function()
      local list = { { job = { job_id = "y", next_run_time = T0 } }, { job = { job_id = "x" } },
        { job = { job_id = "w", next_run_time = "2025-01-15T09:00:00Z" } } }
      local function rec_of(e) return e.job end
      kit.sort_query(list, rec_of)
      assert.are.same({ "w", "y", "x" }, ids_of(list, rec_of))
    end)
  end)

  describe("sort_claim", function()
    it("puts the highest priority first (missing = 5), then query order", function()
      local list = {
        { job_id = "p5late", next_run_time = "2025-01-15T11:00:00Z" },
        { job_id = "p1", priority = 1, next_run_time = "2025-01-15T09:00:00Z" },
        { job_id = "p9", priority = 9, next_run_time = "2025-01-15T12:00:00Z" },
        { job_id = "p5early", priority = 5, next_run_time = T0 },
        { job_id = "p6", priority = 6, next_run_time = "2025-01-15T12:00:00Z" },
      }
      kit.sort_claim(list)
      assert.are.same({ "p9", "p6", "p5early", "p5late", "p1" }, ids_of(list))
    end)
  end)

  describe("page", function()
    local list = { 1, 2, 3, 4, 5 }

    it("skips offset and keeps at most limit, in a new array", function()
      assert.are.same({ 1, 2, 3, 4, 5 }, kit.page(list))
      assert.are_not.equal(list, kit.page(list))
      assert.are.same({ 3, 4 }, kit.page(list, 2, 2))
      assert.are.same({ 4, 5 }, kit.page(list, nil, 3))
      assert.are.same({ 5 }, kit.page(list, 10, 4))
      assert.are.same({}, kit.page(list, 0))
      assert.are.same({}, kit.page(list, 3, 9))
    end)
  end)

  describe("check_count and check_id", function()
    it("take nil or a non-negative integer as a count", function()
      kit.check_count(nil, "limit")
      kit.check_count(0, "limit")
      assert_invalid("limit must be a non-negative integer", kit.check_count, -1, "limit")
      assert_invalid("offset must be a non-negative integer", kit.check_count, 1.0, "offset")
      assert_invalid("limit must be a non-negative integer", kit.check_count, "2", "limit")
    end)

    it("take a string as a job id, naming the method otherwise", function()
      kit.check_id("a", "get_job")
      assert_invalid("get_job: job id must be a string, got number", kit.check_id, 1, "get_job")
    end)
  end)

  describe("lease_options", function()
    it("applies the defaults: the clock, a 30 s lease, a limit of 100", function()
      local before = chronis.time.now()
      local now, owner, lease_until, limit = kit.lease_options({ owner = "n1" }, "claim_due_jobs")
      assert.is_true(now >= before and now <= chronis.time.now())
      assert.are.equal("n1", owner)
      assert.are.equal(format(now + 30 * S), lease_until)
      assert.are.equal(100, limit)
    end)

    it("reads now in any time form and fractional lease seconds", function()
      local now, _, lease_until, limit = kit.lease_options(
        { owner = "n1", now = "2025-01-15T11:00:00+01:00", lease_seconds = 1.5, limit = 3 }, "x")
      assert.are.equal(T0_US, now)
      assert.are.equal("2025-01-15T10:00:01.500000Z", lease_until)
      assert.are.equal(3, limit)
    end)

    it("refuses bad options, naming the method", function()
      assert_invalid("claim_due_jobs: options must be a table", kit.lease_options, nil, "claim_due_jobs")
      assert_invalid("extend_leases: 'owner' must be a string", kit.lease_options, {}, "extend_leases")
      assert_invalid("x: invalid 'now'", kit.lease_options, { owner = "o", now = "soon" }, "x")
      for _, lease in ipairs({ -1, 0 / 0, math.huge, 1e300 }) do
        assert_invalid("x: 'lease_seconds' must be a number of seconds from 0 to 31536000",
          kit.lease_options, { owner = "o", lease_seconds = lease }, "x")
      end
      assert_invalid("x: 'limit' must be a non-negative integer", kit.lease_options,
        { owner = "o", limit = -1 }, "x")
    end)
  end)

  describe("is_due and lease_expired", function()
    it("is_due: scheduled with next_run_time at or before now", function()
      assert.is_true(kit.is_due({ status = "scheduled", next_run_time = T0 }, T0_US))
      assert.is_false(kit.is_due({ status = "scheduled", next_run_time = T0 }, T0_US - 1))
      assert.is_false(kit.is_due({ status = "paused", next_run_time = T0 }, T0_US))
      assert.is_false(kit.is_due({ status = "scheduled" }, T0_US))
    end)

    it("due_jobs: the due ones of a table, in claim order, at most limit", function()
      local t = {
        x = { job_id = "late", status = "scheduled", next_run_time = T0 },
        y = { job_id = "early", status = "scheduled", next_run_time = "2025-01-15T09:00:00Z" },
        z = { job_id = "urgent", status = "scheduled", priority = 9, next_run_time = T0 },
        w = { job_id = "future", status = "scheduled", next_run_time = "2025-01-15T11:00:00Z" },
        v = { job_id = "paused", status = "paused", next_run_time = T0 },
      }
      assert.are.same({ "urgent", "early", "late" }, ids_of(kit.due_jobs(t, T0_US, 10)))
      assert.are.same({ "urgent", "early" }, ids_of(kit.due_jobs(t, T0_US, 2)))
      local wrapped = {}
      for k, rec in pairs(t) do wrapped[k] = { job = rec } end
      local function rec_of(e) return e.job end
      assert.are.same({ "urgent" }, ids_of(kit.due_jobs(wrapped, T0_US, 1, rec_of), rec_of))
    end)

    it("lease_expired: running with lease_until strictly before now", function()
      assert.is_true(kit.lease_expired({ status = "running", lease_until = T0 }, T0_US + 1))
      assert.is_false(kit.lease_expired({ status = "running", lease_until = T0 }, T0_US))
      assert.is_false(kit.lease_expired({ status = "scheduled", lease_until = T0 }, T0_US + 1))
      assert.is_false(kit.lease_expired({ status = "running" }, T0_US + 1))
    end)
  end)

  describe("check_completions", function()
    it("checks every item and its updates", function()
      local items = kit.check_completions({
        { job_id = "a", owner = "n1", delete = true, updates = { status = "bogus" } },
        { job_id = "b", owner = "n1", updates = { next_run_time = T0_US } },
        { job_id = "c", owner = "n1" },
      })
      assert.are.same({ job_id = "a", owner = "n1", delete = true }, items[1])
      assert.are.same({ job_id = "b", owner = "n1", delete = false, updates = { next_run_time = T0 } }, items[2])
      assert.are.same({}, items[3].updates)
    end)

    it("refuses a malformed item or bad updates", function()
      assert_invalid("complete_jobs: expected an array of completions", kit.check_completions, "a")
      assert_invalid("complete_jobs: item 2 needs job_id and owner (strings)", kit.check_completions,
        { { job_id = "a", owner = "n1" }, { job_id = "b" } })
      assert_invalid("job 'a': job_id cannot be changed", kit.check_completions,
        { { job_id = "a", owner = "n1", updates = { job_id = "b" } } })
    end)
  end)

  describe("check_completions and runs", function()
    it("checks the run an item carries, as record_runs does, and keeps its keep apart", function()
      local items = kit.check_completions({
        { job_id = "a", owner = "n1", delete = true,
          run = { run_id = "r1", job_id = "a", outcome = "ok", started_at = T0_US, keep = 3, extra = 1 } },
        { job_id = "b", owner = "n1" },
      })
      assert.are.same({ run_id = "r1", job_id = "a", outcome = "ok", started_at = T0 }, items[1].run)
      assert.are.equal(3, items[1].keep)
      assert.is_nil(items[2].run)
      assert_invalid("complete_jobs: item 2: run 'r2': invalid field 'outcome'", kit.check_completions, {
        { job_id = "a", owner = "n1" },
        { job_id = "b", owner = "n1", run = { run_id = "r2", job_id = "b", outcome = "fine", started_at = T0 } },
      })
    end)
  end)

  describe("run history", function()
    local function run(id, job_id, started_us, fields)
      local r = { run_id = id, job_id = job_id or "j", outcome = "ok", started_at = format(started_us or T0_US) }
      for k, v in pairs(fields or {}) do r[k] = v end
      return r
    end
    local function run_ids(list, rec_of)
      local out = {}
      for i, x in ipairs(list) do out[i] = (rec_of and rec_of(x) or x).run_id end
      return out
    end

    it("check_run: the run as stored, times canonical, its keep apart; invalid naming the field", function()
      local r, keep = kit.check_run({ run_id = "r", job_id = "j", outcome = "error", error_code = "handler",
        started_at = "2025-01-15T11:00:00+01:00", ended_at = T0_US + 2 * S, attempt = 2,
        metadata = { t = { 1, 2 } }, duration = 99, bogus = true }, "here")
      assert.are.same({ run_id = "r", job_id = "j", outcome = "error", error_code = "handler", started_at = T0,
        ended_at = format(T0_US + 2 * S), attempt = 2, duration = 2, metadata = { t = { 1, 2 } } }, r)
      assert.is_nil(keep)
      assert.are.equal(0, select(2, kit.check_run(run("r", "j", nil, { keep = 0 }), "here")))
      assert_invalid("here: run 'r': field 'started_at' is required", kit.check_run,
        { run_id = "r", job_id = "j", outcome = "ok" }, "here")
      assert_invalid("here: run 'r': invalid field 'attempt'", kit.check_run, run("r", "j", nil, { attempt = 1.5 }), "here")
      assert_invalid("here: run 'r': invalid field 'keep'", kit.check_run, run("r", "j", nil, { keep = -1 }), "here")
      assert_invalid("here: invalid field 'node'", kit.check_run, run("r", "j", nil, { node = "a\0b" }), "here")
    end)

    it("check_runs: every run checked before any is used, named by its place", function()
      local list = kit.check_runs({ run("a"), run("b", "j", nil, { keep = 1 }) })
      assert.are.same({ "a", "b" }, { list[1].run.run_id, list[2].run.run_id })
      assert.are.same({ nil, 1 }, { list[1].keep, list[2].keep })
      assert_invalid("record_runs: run 2: field 'run_id' is required", kit.check_runs,
        { run("a"), { job_id = "j", outcome = "ok", started_at = T0 } })
      assert_invalid("record_runs: expected an array of runs", kit.check_runs, "runs")
    end)

    it("compile_run_filters: the C stores' matching, the ids, and what narrows a read", function()
      local r = kit.check_run(run("r", "j", T0_US, { outcome = "timeout", func_name = "mail",
        metadata = { region = { zone = "eu" } } }), "t")
      local match, ids, narrow = kit.compile_run_filters({ job_id_in = { "j", "k", "j" },
        outcome = { "error", "timeout" }, started_at_gte = T0, started_at_lte = T0_US + S,
        func_name = "mail", ["metadata.region.zone"] = "eu" })
      assert.is_true(match(r))
      assert.are.same({ "j", "k" }, ids)
      assert.are.same({ started_at_gte = T0_US, started_at_lte = T0_US + S, outcomes = { "error", "timeout" },
        func_name = "mail" }, narrow)
      assert.is_false((kit.compile_run_filters({ ["metadata.region.zone"] = "us" })(r)))
      assert.is_false((kit.compile_run_filters({ started_at_gte = T0_US + 1 })(r)))
      assert.is_false((kit.compile_run_filters({ job_id_in = {} })(r)))
      match, ids = kit.compile_run_filters("j")
      assert.is_true(match(r))
      assert.are.same({ "j" }, ids)
      match, ids, narrow = kit.compile_run_filters(nil)
      assert.is_true(match(r))
      assert.is_nil(ids)
      assert.are.same({}, narrow)
      assert_invalid("outcom", kit.compile_run_filters, { outcom = "ok" })
      assert_invalid("invalid filter 'outcome'", kit.compile_run_filters, { outcome = "fine" })
    end)

    it("sort_runs: newest first as instants, then run_id descending", function()
      local list = { run("a", "j", T0_US), run("c", "j", T0_US + S // 2), run("b", "j", T0_US),
        run("z", "j", T0_US - 1) }
      list[2].started_at = "2025-01-15T10:00:00.5Z" -- sorts before "...10:00:00Z" as text
      assert.are.same({ "c", "b", "a", "z" }, run_ids(kit.sort_runs(list)))
      local wrapped = { { r = run("x", "j", T0_US) }, { r = run("y", "j", T0_US + 1) } }
      local function r_of(e) return e.r end
      assert.are.same({ "y", "x" }, run_ids(kit.sort_runs(wrapped, r_of), r_of))
      assert_invalid("sort_runs: item 1: a run without run_id", kit.sort_runs, { { started_at = T0 } })
    end)

    it("add_run: a new list, newest first, at most keep, none before the cutoff, one per run_id", function()
      local list = kit.add_run(nil, run("a", "j", T0_US), 3, T0_US - 10 * S)
      list = kit.add_run(list, run("c", "j", T0_US + 2 * S), 3, T0_US - 10 * S)
      local before = kit.add_run(list, run("b", "j", T0_US + S), 3, T0_US - 10 * S)
      assert.are.same({ "c", "b", "a" }, run_ids(before))
      local after = kit.add_run(before, run("d", "j", T0_US + 3 * S), 3, T0_US - 10 * S)
      assert.are.same({ "d", "c", "b" }, run_ids(after))
      assert.are.same({ "c", "b", "a" }, run_ids(before), "the list given was changed")
      local again = kit.add_run(after, run("c", "j", T0_US + 4 * S, { outcome = "error" }), 3, 0)
      assert.are.same({ "c", "d", "b" }, run_ids(again))
      assert.are.equal("error", again[1].outcome)
      assert.are.same({ "d" }, run_ids(kit.add_run(after, run("old", "j", T0_US - 20 * S), 5, T0_US + 3 * S)))
    end)

    it("prune_runs: the list itself when nothing is old, else a new one without the old", function()
      local list = { run("c", "j", T0_US + 2 * S), run("b", "j", T0_US + S), run("a", "j", T0_US) }
      assert.are.equal(list, kit.prune_runs(list, T0_US))
      local pruned = kit.prune_runs(list, T0_US + S)
      assert.are.same({ "c", "b" }, run_ids(pruned))
      assert.are.equal(3, #list)
      assert.are.same({}, kit.prune_runs(list, T0_US + 3 * S))
    end)

    it("select_runs: the matching runs, of the listed jobs only when ids are given", function()
      local by_job = { a = { run("a2", "a"), run("a1", "a", nil, { outcome = "error" }) }, b = { run("b1", "b") } }
      local match, ids = kit.compile_run_filters({ outcome = "ok" })
      local got = run_ids(kit.select_runs(by_job, match, ids))
      table.sort(got)
      assert.are.same({ "a2", "b1" }, got)
      match, ids = kit.compile_run_filters({ job_id_in = { "b", "nope" } })
      assert.are.same({ "b1" }, run_ids(kit.select_runs(by_job, match, ids)))
    end)

    it("history_options and history_cutoff: the store options, as every store reads them", function()
      assert.are.same({ 20, 7 }, { kit.history_options(nil, "x options") })
      assert.are.same({ 0, 30 }, { kit.history_options({ history = "0", history_days = 30, other = 1 }, "x") })
      assert_invalid("invalid x options: option 'history' must be an integer 0..100000, got '-1'",
        kit.history_options, { history = -1 }, "x options")
      assert_invalid("option 'history_days'", kit.history_options, { history_days = "week" }, "x")
      assert.are.equal("history, history_days", kit.HISTORY_OPTIONS)
      assert.are.equal(T0_US - 2 * 86400 * S, kit.history_cutoff(2, T0_US))
      assert.are.equal(3, kit.run_keep(3, 20))
      assert.are.equal(20, kit.run_keep(nil, 20))
    end)
  end)

  describe("completion_result", function()
    it("is not_found, conflict for another owner, else ok", function()
      local item = { job_id = "a", owner = "n1" }
      assert.are.same({ job_id = "a", ok = false, code = "not_found" }, kit.completion_result(item, nil))
      assert.are.same({ job_id = "a", ok = false, code = "conflict" },
        kit.completion_result(item, { job_id = "a", claimed_by = "n2" }))
      assert.are.same({ job_id = "a", ok = false, code = "conflict" }, kit.completion_result(item, { job_id = "a" }))
      assert.are.same({ job_id = "a", ok = true }, kit.completion_result(item, { job_id = "a", claimed_by = "n1" }))
    end)
  end)

  describe("check_call", function()
    it("checks the arguments of every operation of the contract", function()
      local store = { closed = false }
      for _, op in ipairs(chronis.storage.operations) do
        if op.name ~= "close" and op.name ~= "next_due_time" then
          -- 42 is no job, id, list, filter or options; "soon" is no time.
          local bad = op.name == "recover_expired_leases" and "soon" or 42
          local err = error_of(kit.check_call, store, op.name, bad, bad, bad)
          assert.are.equal("invalid", err.code, op.name)
        end
      end
      kit.check_call(store, "next_due_time")
    end)

    it("returns the checked arguments, ready to use", function()
      local store = { closed = false }
      local id, want, u = kit.check_call(store, "compare_and_swap_job", "a",
        { lease_until = "2025-01-15T11:00:00+01:00" }, { next_run_time = T0_US })
      assert.are.equal("a", id)
      assert.are.same({ lease_until = T0 }, want)
      assert.are.same({ next_run_time = T0 }, u)
      local match, ids, limit, offset = kit.check_call(store, "query_jobs", { job_id_in = { "b", "b" } }, 2)
      assert.is_true(match({ job_id = "b" }))
      assert.are.same({ "b" }, ids)
      assert.are.equal(2, limit)
      assert.is_nil(offset)
      assert.are.equal(T0_US, kit.check_call(store, "recover_expired_leases", T0))
    end)

    it("raises 'unavailable' for a closed store, before any check", function()
      local ok, err = pcall(kit.check_call, { closed = true }, "get_job", 42)
      assert.is_false(ok)
      assert.are.equal("unavailable", err.code)
      assert.are.equal("the store is closed", err.message)
    end)
  end)

  describe("check_open", function()
    it("raises 'unavailable' for a closed store only, as a C store does", function()
      kit.check_open({ closed = false })
      local err = U.assert_error("unavailable", kit.check_open, { closed = true })
      assert.are.equal("the store is closed", err.message)
    end)
  end)

  describe("stamp", function()
    it("follows the clock and strictly increases, even within one microsecond", function()
      local store = { last_stamp = 0 }
      local before = chronis.time.now()
      local first = parse(kit.stamp(store))
      assert.is_true(first >= before)
      assert.are.equal(first, store.last_stamp)
      -- Thousands of stamps in a row: many fall in one microsecond of the clock.
      local prev = first
      for _ = 1, 5000 do
        local t = parse(kit.stamp(store))
        assert(t > prev, ("stamp did not increase: %d after %d"):format(t, prev))
        prev = t
      end
    end)

    it("moves past a last stamp that is ahead of the clock", function()
      local ahead = chronis.time.now() + 3600 * S
      local store = { last_stamp = ahead }
      assert.are.equal(format(ahead + 1), kit.stamp(store))
      assert.are.equal(ahead + 1, store.last_stamp)
    end)
  end)
end)
