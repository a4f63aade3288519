-- Engine semantics: unique jobs (docs/engine.md, "Unique jobs"), run on
-- every store by engine_contract.lua as (name, factory, opts): a create
-- with `unique` returns the job of its key made less than a period ago,
-- also from another handle on the store, and across a window boundary.
local chronis = require "chronis"
local H = require "support.engine_helper"
local U = require "support.util"

local describe, it, _, _, assert = U.busted()

local S, T0 = H.S, H.T0
local fmt = chronis.time.format
local RUN_AT = "2025-01-16T00:00:00Z" -- far enough ahead that no test's job comes due

return function(name, factory, opts)
  opts = opts or {}
  local F = require("support.semantics.fixture")(factory, opts, { noop = { "send" } })
  local sched = F.sched

  describe(name .. " unique jobs", function()
    F.install()

    -- A one-shot unique job of handler send through the builder.
    local function send(s, kwargs, unique)
      return s:once(RUN_AT):config { unique = unique or true }:run("send", kwargs)
    end

    it("returns the existing job for a duplicate within the period, with existed = true", function()
      local s = sched()
      local first, existed = send(s, { to = "a@x" })
      assert.is_false(existed)
      assert.are.equal('["send",{},{"to":"a@x"}]', first.unique_key)
      assert.are.equal(fmt(T0 + 60 * S), first.unique_until) -- the default period is 60 s
      assert.are.same(first, F.store:get_job(first.job_id))
      F.clock:advance(59)
      local again, existed2 = send(s, { to = "a@x" })
      assert.is_true(existed2)
      assert.are.same(first, again)
      assert.are.equal(1, F.store:count_jobs())
    end)

    it("creates a new job once the period has passed", function()
      local s = sched()
      local first = send(s, { to = "a@x" }, { period = 10 })
      F.clock:advance(10)
      local second, existed = send(s, { to = "a@x" }, { period = 10 })
      assert.is_false(existed)
      assert.are_not.equal(first.job_id, second.job_id)
      assert.are.equal(fmt(T0 + 20 * S), second.unique_until)
      assert.are.equal(2, F.store:count_jobs())
      -- The period now counts from the second job.
      F.clock:advance(9)
      assert.are.equal(second.job_id, send(s, { to = "a@x" }, { period = 10 }).job_id)
      assert.are.equal(2, F.store:count_jobs())
    end)

    it("deduplicates across a window boundary, counting the period from the job's creation", function()
      -- T0 starts a window of 60 s: the first job is made 10 s before the
      -- next window, the duplicate 15 s into it.
      local s = sched()
      F.clock.now = T0 + 50 * S
      local first = send(s, { to = "a@x" })
      F.clock.now = T0 + 75 * S
      local again, existed = send(s, { to = "a@x" })
      assert.is_true(existed)
      assert.are.equal(first.job_id, again.job_id)
      -- 60 s after the first job, still in the window of the second create.
      F.clock.now = T0 + 110 * S
      local later, existed2 = send(s, { to = "a@x" })
      assert.is_false(existed2)
      assert.are_not.equal(first.job_id, later.job_id)
      F.clock.now = T0 + 125 * S -- the next window: the job of the one before is 15 s old
      assert.are.equal(later.job_id, send(s, { to = "a@x" }).job_id)
      assert.are.equal(2, F.store:count_jobs())
    end)

    it("keys on the handler and its arguments by default, whatever the order of their keys", function()
      local s = sched()
      s:handler("other", function() end)
      local a = s:create_date_job { func_name = "send", run_date = RUN_AT, args = { 1, 2 },
        kwargs = { to = "a@x", cc = "b@x" }, unique = true }
      local b, existed = s:create_date_job { func_name = "send", run_date = RUN_AT, args = { 1, 2 },
        kwargs = { cc = "b@x", to = "a@x" }, unique = true }
      assert.is_true(existed)
      assert.are.equal(a.job_id, b.job_id)
      local ids = { [a.job_id] = true }
      for _, f in ipairs {
        { func_name = "send", args = { 2, 1 }, kwargs = { to = "a@x", cc = "b@x" } },
        { func_name = "send", args = { 1, 2 }, kwargs = { to = "a@x" } },
        { func_name = "other", args = { 1, 2 }, kwargs = { to = "a@x", cc = "b@x" } },
      } do
        f.run_date, f.unique = RUN_AT, true
        local j, e = s:create_date_job(f)
        assert.is_false(e)
        assert.is_nil(ids[j.job_id])
        ids[j.job_id] = true
      end
      assert.are.equal(4, F.store:count_jobs())
    end)

    it("keys on an explicit key alone, for any trigger", function()
      local s = sched()
      local first = send(s, { to = "a@x" }, { key = "welcome:42", period = 3600 })
      assert.are.equal("welcome:42", first.unique_key)
      F.clock:advance(1800)
      local again, existed = s:every { minutes = 5 }:config { unique = { key = "welcome:42", period = 3600 } }
        :run("send", { to = "b@x" })
      assert.is_true(existed)
      assert.are.equal(first.job_id, again.job_id)
      assert.are.equal("date", again.trigger_type)
      -- Another period is another identity: its windows are not these.
      local other = send(s, { to = "a@x" }, { key = "welcome:42", period = 600 })
      assert.are_not.equal(first.job_id, other.job_id)
      assert.are.equal(2, F.store:count_jobs())
    end)

    it("gives two schedulers creating one key at once the same job", function()
      local s1 = sched()
      local s2 = sched { storage = F.other_handle() }
      local tasks = {}
      for i = 1, 10 do
        for _, s in ipairs { s1, s2 } do
          tasks[#tasks + 1] = chronis.spawn(function()
            local j, existed = send(s, { n = i })
            return j.job_id, existed
          end)
        end
      end
      for i = 1, 10 do
        local id1, e1 = tasks[2 * i - 1]:join()
        local id2, e2 = tasks[2 * i]:join()
        assert.are.equal(id1, id2)
        assert.are_not.equal(e1, e2, "exactly one of the two creates made job " .. id1)
      end
      assert.are.equal(10, F.store:count_jobs())
    end)

    it("makes a new job once the first has run and been deleted, and returns a kept one", function()
      local s = sched()
      local first = s:once(T0):config { unique = true }:run("send")
      s:start()
      H.wait(function() return F.store:get_job(first.job_id) == nil end, 10, "the job did not run")
      s:stop()
      F.clock:advance(5)
      local again, existed = s:once(T0 + 5 * S):config { unique = true }:run("send")
      assert.is_false(existed)
      assert.are.equal(fmt(T0 + 65 * S), again.unique_until)
      F.store:delete_job(again.job_id)
      -- With keep_completed the completed job is found, and not run again.
      local k = sched { keep_completed = 3600 }
      F.clock:advance(60)
      local kept = k:once(k:now()):config { unique = true }:run("send")
      k:start()
      H.wait(function()
        local j = F.store:get_job(kept.job_id)
        return j and j.status == "completed"
      end, 10, "the job did not complete")
      k:stop()
      F.clock:advance(30)
      local found, existed2 = k:once(k:now()):config { unique = true }:run("send")
      assert.is_true(existed2)
      assert.are.equal(kept.job_id, found.job_id)
      assert.are.equal("completed", found.status)
    end)

    it("refuses to return a job stored under its id that is not the key's", function()
      local s = sched()
      local id = send(s, { to = "a@x" }).job_id
      F.store:delete_job(id)
      s:create_date_job { job_id = id, func_name = "send", run_date = RUN_AT }
      local ok, err = pcall(send, s, { to = "a@x" })
      assert.is_false(ok)
      assert.are.equal("duplicate", err.code)
      assert.are.equal(("job '%s' exists and is not the unique job of this key (its unique_key differs)")
        :format(id), err.message)
      assert.is_nil(F.store:get_job(id).unique_key)
    end)

    it("refuses bad values and the fields a unique job derives, naming the field", function()
      local s = sched()
      for _, case in ipairs {
        { { unique = "yes" }, "invalid field 'unique': expected true or a table {key =, period =}, got 'yes'" },
        { { unique = { perod = 5 } }, "invalid field 'unique': unknown key 'perod'; did you mean 'period'?" },
        { { unique = { period = 0 } }, "invalid field 'unique.period': expected a number of seconds above 0 and at most 315576000, got 0" },
        { { unique = { period = "60" } }, "invalid field 'unique.period': expected a number of seconds above 0 and at most 315576000, got '60'" },
        { { unique = { key = 7 } }, "invalid field 'unique.key': expected a string of 1-1024 bytes, got number" },
        { { unique = true, job_id = "mine" }, "invalid field 'unique': cannot be combined with job_id" },
        { { unique = true, if_exists = "skip" }, "invalid field 'unique': cannot be combined with if_exists" },
        { { unique = true, unique_key = "k" }, "invalid field 'unique_key': set by chronis on a unique job" },
        { { unique = true, priority = 11 }, "invalid field 'priority': 11 is out of range 0-10" },
        { { uniqe = true }, "unknown job field 'uniqe'; did you mean 'unique'?" },
      } do
        local f = { func_name = "send", run_date = RUN_AT }
        for k, v in pairs(case[1]) do f[k] = v end
        local ok, err = pcall(s.create_date_job, s, f)
        assert.is_false(ok)
        assert.are.equal("invalid", err.code)
        assert.are.equal(1, err.message:find(case[2], 1, true), err.message)
      end
      local ok, err = pcall(function() s:once(RUN_AT):config { unique = { period = -1 } }:run("send") end)
      assert.is_false(ok)
      assert.matches("invalid field 'unique.period'", err.message, 1, true)
      local j = send(s, {})
      ok, err = pcall(s.update_job, s, j.job_id, { unique_until = fmt(T0) })
      assert.is_false(ok)
      assert.matches("field 'unique_until' is set by the scheduler", err.message, 1, true)
      assert.are.equal(1, F.store:count_jobs())
    end)
  end)
end
