-- Engine semantics: the failure policy (docs/engine.md, "Failure policy"),
-- run on every store by engine_contract.lua as (name, factory, opts).
-- A recurring job whose run failed with no retry left follows its
-- on_exhausted: next (default) goes on with the next slot of its grid,
-- pause pauses it there, fail ends it; one-shot jobs fail as before.
local chronis = require "chronis"
local H = require "support.engine_helper"
local U = require "support.util"

local describe, it, _, _, assert = U.busted()

local S, T0 = H.S, H.T0

return function(name, factory, opts)
  opts = opts or {}
  local F = require("support.semantics.fixture")(factory, opts)
  local fmt, field, wait = F.fmt, F.field, F.wait

  describe(name .. " failure policy", function()
    F.install()

    -- A scheduler whose handler "boom" fails unless ok[job_id], counting
    -- runs per job; failures lists the on_failure calls.
    local function failing_sched(o)
      local failures, runs, ok = {}, {}, {}
      local all = { on_failure = function(id, err) failures[#failures + 1] = { id = id, err = err } end }
      for k, v in pairs(o or {}) do all[k] = v end
      local s = F.sched(all)
      s:handler("boom", function(job)
        runs[job.job_id] = (runs[job.job_id] or 0) + 1
        if not ok[job.job_id] then error("boom in " .. job.job_id) end
      end)
      s:start()
      return s, failures, runs, ok
    end

    describe("on_exhausted = next (the default)", function()
      it("an interval job whose retries are spent records the failure and goes on with its grid", function()
        local s, failures, runs, ok = failing_sched()
        local j = s:every { minutes = 10 }:config { job_id = "i", retry = 1, retry_delay = 30 }:run("boom")
        assert.is_nil(j.on_exhausted)
        F.at(s, T0 + 600 * S) -- the first slot, 10:10
        wait(function() return field("i", "retry_count") == 1 end, "the retry was not written")
        j = F.store:get_job("i")
        assert.are.equal(T0 + 630 * S, H.t(j.next_run_time))
        assert.are.equal(fmt(T0 + 600 * S), j.retry_slot, "the slot being retried")
        F.at(s, T0 + 630 * S) -- the retry fails too: retries are spent
        wait(function() return field("i", "consecutive_failures") == 2 end, "the failure was not written")
        j = F.store:get_job("i")
        U.assert_fields({ status = "scheduled", retry_count = 0, failure_count = 2,
          last_outcome = "error", attempt = 2 }, j)
        -- The first slot after now on the grid of 10:00 + 10 min, not 10:20:30.
        assert.are.equal("2025-01-15T10:20:00Z", j.next_run_time)
        assert.is_nil(j.retry_slot)
        assert.is_nil(j.claimed_by)
        assert.are.equal("error", j.last_error.code)
        assert.truthy(j.last_error.message:find("boom in i", 1, true))
        assert.are.equal(2, j.last_error.attempt)
        assert.are.equal(1, #failures, "on_failure runs once, when the retries are spent")
        assert.are.equal("i", failures[1].id)
        local lines = F.logged("error", "i")
        assert.are.equal(1, #lines)
        assert.truthy(lines[1]:find("; retries exhausted; next run at 2025-01-15T10:20:00Z", 1, true),
          lines[1])
        -- The next slot runs; a success ends the streak.
        ok.i = true
        F.at(s, "2025-01-15T10:20:00Z")
        wait(function() return field("i", "last_outcome") == "ok" end, "the next slot did not run")
        j = F.store:get_job("i")
        U.assert_fields({ status = "scheduled", consecutive_failures = 0, failure_count = 2,
          next_run_time = "2025-01-15T10:30:00Z" }, j)
        assert.are.equal(3, runs.i)
      end)

      -- On the real clock: stores prune runs older than their age limit,
      -- measured on the wall clock.
      it("records each failed run in the history and the job's counters", function()
        local s = F.sched { clock = false, polling_interval = 0.1 }
        local runs = 0
        s:handler("boom", function() runs = runs + 1; error("boom " .. runs) end)
        s:every { seconds = 30 }:config { job_id = "h", retry = 1, retry_delay = 0 }:run("boom")
        s:update_job("h", { next_run_time = s:now() })
        s:start()
        wait(function() return field("h", "failure_count") == 2 end, "the failures were not written")
        local j = F.store:get_job("h")
        U.assert_fields({ status = "scheduled", retry_count = 0, consecutive_failures = 2,
          last_outcome = "error" }, j)
        assert.truthy(j.last_error.message:find("boom 2", 1, true))
        assert.is_true(H.t(j.next_run_time) > s:now())
        if opts.history ~= false then
          local outcomes, attempts = {}, {}
          for i, r in ipairs(s:history("h")) do outcomes[i], attempts[i] = r.outcome, r.attempt end
          assert.are.same({ "error", "error" }, outcomes)
          assert.are.same({ 2, 1 }, attempts)
        end
        assert.are.equal(2, runs)
      end)

      it("a cron job without retries goes on with its next slot, every time it fails", function()
        local s, failures, runs = failing_sched()
        s:on { cron = "*/5 * * * *" }:config { job_id = "c" }:run("boom")
        for n, slot in ipairs({ "10:05", "10:10", "10:15" }) do
          F.at(s, "2025-01-15T" .. slot .. ":00Z")
          wait(function() return field("c", "failure_count") == n end, "failure " .. n .. " not written")
        end
        local j = F.store:get_job("c")
        U.assert_fields({ status = "scheduled", retry_count = 0, consecutive_failures = 3,
          next_run_time = "2025-01-15T10:20:00Z" }, j)
        assert.are.equal(3, runs.c)
        assert.are.equal(3, #failures)
        local lines = F.logged("error", "c")
        assert.are.equal(3, #lines)
        assert.truthy(lines[3]:find("run failed (error: ", 1, true), lines[3])
        assert.truthy(lines[3]:find("; next run at 2025-01-15T10:20:00Z", 1, true), lines[3])
      end)

      it("a job whose trigger has no further slot fails as before", function()
        local s, failures = failing_sched()
        s:on { year = 2025, month = 1, day = 15, hour = 10, minute = 1 }:config { job_id = "last" }:run("boom")
        F.at(s, T0 + 60 * S)
        wait(function() return field("last", "status") == "failed" end, "the job did not fail")
        assert.is_nil(field("last", "next_run_time"))
        assert.are.equal(1, #failures)
      end)
    end)

    describe("on_exhausted = fail", function()
      for _, case in ipairs({
        { "an interval job", function(s) return s:every { minutes = 10 } end, T0 + 600 * S },
        { "a cron job", function(s) return s:on { cron = "*/5 * * * *" } end, T0 + 300 * S },
      }) do
        it(case[1] .. " ends failed, without a next run time, and is never polled again", function()
          local s, failures, runs = failing_sched()
          local j = case[2](s):config { job_id = "f", retry = 1, retry_delay = 10, on_exhausted = "fail" }
            :run("boom")
          assert.are.equal("fail", j.on_exhausted)
          F.at(s, case[3])
          wait(function() return field("f", "retry_count") == 1 end, "the retry was not written")
          F.at(s, case[3] + 10 * S)
          wait(function() return field("f", "status") == "failed" end, "the job did not fail")
          j = F.store:get_job("f")
          assert.is_nil(j.next_run_time)
          assert.are.equal(2, j.failure_count)
          assert.are.equal("error", j.last_outcome)
          assert.is_nil(j.retry_slot)
          assert.are.equal(1, #failures)
          F.clock.now = F.clock.now + 86400 * S
          F.settle(s)
          assert.are.equal(2, runs.f)
        end)
      end
    end)

    describe("on_exhausted = pause", function()
      it("pauses an interval job at its next slot; resumed, it goes on on its grid", function()
        local s, failures, runs, ok = failing_sched()
        s:every { minutes = 10 }:config { job_id = "p", on_exhausted = "pause" }:run("boom")
        F.at(s, T0 + 600 * S)
        wait(function() return field("p", "status") == "paused" end, "the job was not paused")
        local j = F.store:get_job("p")
        U.assert_fields({ retry_count = 0, failure_count = 1, last_outcome = "error",
          next_run_time = "2025-01-15T10:20:00Z" }, j)
        assert.are.equal(1, #failures)
        local lines = F.logged("error", "p")
        assert.truthy(lines[1]:find("job paused (on_exhausted=pause), its next run at "
          .. "2025-01-15T10:20:00Z once resumed", 1, true), lines[1])
        -- Paused: its slots pass without a run.
        F.clock.now = H.t("2025-01-15T10:45:00Z")
        F.settle(s)
        assert.are.equal(1, runs.p)
        ok.p = true
        s:resume_job("p")
        s:tick()
        wait(function() return field("p", "last_outcome") == "ok" end, "the resumed job did not run")
        assert.are.equal(2, runs.p)
        assert.are.equal("2025-01-15T10:50:00Z", field("p", "next_run_time"))
      end)

      it("pauses a cron job at its next slot", function()
        local s = failing_sched()
        s:on { cron = "*/5 * * * *" }:config { job_id = "p", on_exhausted = "pause", retry = 2,
          retry_delay = 1 }:run("boom")
        F.at(s, T0 + 300 * S)
        for n = 1, 2 do
          wait(function() return field("p", "retry_count") == n end, "retry " .. n .. " not written")
          F.at(s, H.t(field("p", "next_run_time")))
        end
        wait(function() return field("p", "status") == "paused" end, "the job was not paused")
        U.assert_fields({ retry_count = 0, failure_count = 3, next_run_time = "2025-01-15T10:10:00Z" },
          F.store:get_job("p"))
      end)
    end)

    it("one-shot jobs fail as before, and do not take on_exhausted", function()
      local s, failures = failing_sched()
      s:once(T0):config { job_id = "d" }:run("boom")
      s:tick()
      wait(function() return field("d", "status") == "failed" end, "the one-shot did not fail")
      assert.is_nil(field("d", "next_run_time"))
      assert.are.equal(1, #failures)
      U.assert_error_naming("invalid", "invalid field 'on_exhausted': applies to interval and cron jobs",
        function() s:once(T0):config { job_id = "d2", on_exhausted = "next" }:run("boom") end)
      U.assert_error_naming("invalid", "invalid field 'on_exhausted': applies to interval and cron jobs",
        s.update_job, s, "d", { on_exhausted = "pause" })
      assert.is_nil(F.store:get_job("d2"))
    end)

    describe("a recurring job whose runs keep being cut short", function()
      -- A job left running by a process that died, its lease expired: the
      -- recovery counts the cut-short run, and with retry_count above 1
      -- (no retries) the claim ends it without running it. Created before
      -- the scheduler starts: its start recovers expired leases.
      local function orphan(extra)
        local job = {
          job_id = "crash", status = "running", claimed_by = "dead-node",
          lease_until = fmt(T0 - 10 * S), next_run_time = fmt(T0 - 5 * S), retry_count = 1,
          trigger_type = "interval", trigger_args = { minutes = 10 }, func_name = "boom",
        }
        for k, v in pairs(extra or {}) do job[k] = v end
        return F.store:create_job(job)
      end

      it("moves on to the next slot of its grid with on_exhausted = next", function()
        orphan()
        local s, failures, runs = failing_sched()
        -- Recovered, it is scheduled again before the claim: the failure
        -- is what the claim writes.
        wait(function() return field("crash", "last_outcome") == "error" end, "the job did not move on")
        wait(function() return #failures == 1 end, "on_failure was not called")
        local j = F.store:get_job("crash")
        -- Its grid: 09:59:55 + 10 min.
        U.assert_fields({ retry_count = 0, next_run_time = "2025-01-15T10:09:55Z",
          last_outcome = "error" }, j)
        assert.are.equal("lease_expired", j.last_error.code)
        assert.are.equal("lease_expired", failures[1].err.code)
        assert.is_nil(runs.crash, "the job ran")
        F.at(s, "2025-01-15T10:09:55Z")
        wait(function() return runs.crash == 1 end, "the next slot did not run")
      end)

      it("fails with on_exhausted = fail", function()
        orphan({ on_exhausted = "fail" })
        local _, failures, runs = failing_sched()
        wait(function() return field("crash", "status") == "failed" end, "the job did not fail")
        assert.is_nil(field("crash", "next_run_time"))
        assert.are.equal("lease_expired", F.store:get_job("crash").last_error.code)
        assert.are.equal(1, #failures)
        assert.is_nil(runs.crash)
      end)
    end)

    describe("on_exhausted values", function()
      it("are taken by the builder, create_*_job and update_job, and wrong ones refused naming the field", function()
        local s = F.sched()
        s:handler("h", function() end)
        assert.are.equal("pause", s:every { minutes = 1 }:config { job_id = "a", on_exhausted = "pause" }
          :run("h").on_exhausted)
        assert.are.equal("fail", s:create_cron_job { job_id = "b", func_name = "h", cron = "* * * * *",
          on_exhausted = "fail" }.on_exhausted)
        assert.are.equal("next", s:create_interval_job { job_id = "c", func_name = "h", seconds = 5,
          on_exhausted = "next" }.on_exhausted)
        assert.are.equal("next", s:update_job("a", { on_exhausted = "next" }).on_exhausted)
        assert.are.equal("next", F.store:get_job("a").on_exhausted)
        assert.is_nil(s:update_job("a", { on_exhausted = chronis.json.null }).on_exhausted)
        U.assert_error_naming("invalid", [[invalid field 'on_exhausted': expected next, fail or pause, got "x"]],
          function() s:every { minutes = 1 }:config { job_id = "x", on_exhausted = "x" }:run("h") end)
        U.assert_error_naming("invalid", [[invalid field 'on_exhausted': expected next, fail or pause, got 5]],
          s.create_interval_job, s, { job_id = "y", func_name = "h", seconds = 5, on_exhausted = 5 })
        U.assert_error_naming("invalid", [[invalid field 'on_exhausted': expected next, fail or pause, got "stop"]],
          s.update_job, s, "b", { on_exhausted = "stop" })
        U.assert_error_naming("invalid", "on_exhausted",
          s.create_interval_job, s, { job_id = "z", func_name = "h", seconds = 5, on_exhaustd = "fail" })
        assert.is_nil(F.store:get_job("x"))
        assert.is_nil(F.store:get_job("y"))
        assert.is_nil(F.store:get_job("z"))
        assert.are.equal("fail", F.store:get_job("b").on_exhausted)
      end)
    end)
  end)
end
