-- Engine semantics: handler control (docs/engine.md, "Handler control";
-- docs/handlers.md, "Ending a run early"), run on every store by
-- engine_contract.lua as (name, factory, opts): chronis.snooze,
-- chronis.cancel and chronis.fail from inside a handler.
local chronis = require "chronis"
local H = require "support.engine_helper"
local U = require "support.util"

local describe, it, _, _, assert = U.busted()

local S, T0 = H.S, H.T0
local due_job = H.due_job

return function(name, factory, opts)
  opts = opts or {}
  local F = require("support.semantics.fixture")(factory, opts, { scheduler = { polling_interval = 0.1 } })
  local sched, wait, field = F.sched, F.wait, F.field

  describe(name .. " handler control", function()
    F.install()

    describe("snooze", function()
      it("reschedules the job without a failure, retry_count unchanged", function()
        local s = sched()
        local calls = 0
        s:handler("h", function()
          calls = calls + 1
          if calls == 1 then error("first run fails") end
          if calls == 2 then chronis.snooze(30) end
        end)
        due_job(s, "z", T0, "h", { max_retries = 3, retry_delay_seconds = 10 })
        s:start()
        wait(function() return field("z", "retry_count") == 1 end, "the failure was not written")
        F.clock.now = T0 + 10 * S
        s:tick()
        wait(function() return field("z", "last_outcome") == "snoozed" end, "the snooze was not written")
        local j = F.store:get_job("z")
        assert.are.equal(2, calls)
        assert.are.equal("scheduled", j.status)
        assert.are.equal(T0 + 40 * S, H.t(j.next_run_time))
        assert.are.equal(1, j.retry_count) -- the failure before still counts, the snooze adds none
        assert.are.equal(1, j.failure_count)
        assert.are.equal(1, j.consecutive_failures)
        assert.are.equal(2, j.attempt)
        assert.is_nil(j.claimed_by)
        assert.are.equal(1, s:stats().retried) -- the error's
        assert.are.equal(0, s:stats().failed)
        -- At the time asked, it runs again, and its success ends it.
        F.clock.now = T0 + 40 * S
        s:tick()
        wait(function() return F.store:get_job("z") == nil end, "the snoozed job did not run again")
        assert.are.equal(3, calls)
      end)

      it("takes a time, and keeps an interval job's schedule going from it", function()
        local s = sched()
        local calls = 0
        s:handler("h", function()
          calls = calls + 1
          if calls == 1 then chronis.snooze("2025-01-15T12:00:00Z") end
        end)
        s:every { hours = 1 }:config { job_id = "i" }:run("h")
        F.clock.now = T0 + 3600 * S
        s:start()
        wait(function() return field("i", "last_outcome") == "snoozed" end, "the snooze was not written")
        assert.are.equal("2025-01-15T12:00:00Z", field("i", "next_run_time"))
        assert.is_nil(field("i", "last_run_time")) -- no success yet
        F.clock.now = H.t("2025-01-15T12:00:00Z")
        s:tick()
        wait(function() return field("i", "last_outcome") == "ok" end, "the job did not run at 12:00")
        assert.are.equal("2025-01-15T13:00:00Z", field("i", "next_run_time"))
        assert.are.equal(2, calls)
      end)

      it("is not swallowed by a pcall in the handler", function()
        local s = sched()
        local after = false
        s:handler("h", function()
          local ok = pcall(chronis.snooze, 60)
          after = true -- never reached: the run ended at the call
          error("not reached " .. tostring(ok))
        end)
        due_job(s, "p", T0)
        s:start()
        wait(function() return field("p", "last_outcome") == "snoozed" end, "the snooze was not written")
        assert.is_false(after)
        assert.are.equal(T0 + 60 * S, H.t(field("p", "next_run_time")))
        assert.are.equal(0, field("p", "failure_count"))
      end)

      it("ends the run from inside a C call that cannot yield (a table.sort comparator)", function()
        local s = sched()
        local after = false
        s:handler("h", function()
          pcall(table.sort, { 3, 1, 2 }, function(a, b)
            chronis.snooze(60)
            return a < b
          end)
          after = true
          error("not reached")
        end)
        due_job(s, "c", T0)
        s:start()
        wait(function() return field("c", "last_outcome") == "snoozed" end, "the snooze was not written")
        assert.is_false(after)
        assert.are.equal(T0 + 60 * S, H.t(field("c", "next_run_time")))
        assert.are.equal(0, field("c", "failure_count"))
      end)

      it("refuses a bad argument with invalid, inside the handler", function()
        local s = sched()
        local errs = {}
        s:handler("h", function()
          for _, v in ipairs({ -1, "not a time", true }) do
            local ok, err = pcall(chronis.snooze, v)
            errs[#errs + 1] = not ok and err.code
          end
        end)
        due_job(s, "b", T0)
        s:start()
        wait(function() return F.store:get_job("b") == nil end, "the job did not end")
        assert.are.same({ "invalid", "invalid", "invalid" }, errs)
      end)
    end)

    describe("cancel", function()
      it("ends the run and removes the job's future runs, logging the reason", function()
        local s = sched()
        local calls = 0
        s:handler("h", function()
          calls = calls + 1
          local ok = pcall(chronis.cancel, "customer closed the account")
          error("not reached " .. tostring(ok))
        end)
        s:every { minutes = 5 }:config { job_id = "c", retry = 3 }:run("h")
        local logged = #H.logs
        F.clock.now = T0 + 300 * S
        s:start()
        wait(function() return F.store:get_job("c") == nil end, "the cancelled job was not deleted")
        assert.are.equal(1, calls)
        assert.are.equal(0, s:stats().failed)
        assert.are.equal(0, s:stats().retried)
        local seen
        for i = logged + 1, #H.logs do
          local l = H.logs[i]
          if l.level == "info" and l.job_id == "c" and l.msg:find("customer closed the account", 1, true) then
            seen = l.msg
          end
        end
        assert.truthy(seen, "no info line with the reason")
        assert.truthy(seen:find("cancelled", 1, true), seen)
        F.clock.now = T0 + 3600 * S
        s:tick()
        chronis.run_until(0.3)
        assert.are.equal(1, calls)
      end)

      it("keeps the job completed with keep_completed", function()
        local s = sched { keep_completed = 3600 }
        s:handler("h", function() chronis.cancel() end)
        s:every { minutes = 5 }:config { job_id = "k" }:run("h")
        F.clock.now = T0 + 300 * S
        s:start()
        wait(function() return field("k", "status") == "completed" end, "the job was not kept completed")
        local j = F.store:get_job("k")
        assert.is_nil(j.next_run_time)
        assert.is_nil(j.claimed_by)
        assert.are.equal("cancelled", j.last_outcome)
        assert.are.equal(1, j.attempt)
        F.clock.now = T0 + 3600 * S
        s:tick()
        chronis.run_until(0.3)
        assert.are.equal("completed", field("k", "status"))
      end)
    end)

    describe("fail", function()
      it("fails the run; with retry = false no retry is made, and on_failure runs once", function()
        local failures = {}
        local s = sched { on_failure = function(id, err) failures[#failures + 1] = { id = id, err = err } end }
        local calls = 0
        s:handler("h", function()
          calls = calls + 1
          pcall(chronis.fail, "the input file is corrupt", { retry = false })
        end)
        due_job(s, "f", T0, "h", { max_retries = 5, retry_delay_seconds = 1 })
        s:start()
        wait(function() return field("f", "status") == "failed" end, "the job did not fail")
        wait(function() return #failures == 1 end, "on_failure was not called")
        local j = F.store:get_job("f")
        assert.are.equal(1, calls)
        assert.are.equal(0, j.retry_count)
        assert.is_nil(j.next_run_time)
        assert.are.equal("the input file is corrupt", j.last_error.message)
        assert.are.equal("f", failures[1].id)
        assert.truthy(tostring(failures[1].err.message):find("the input file is corrupt", 1, true))
        assert.are.equal(0, s:stats().retried)
      end)

      it("fails the run with retries by default", function()
        local s = sched()
        s:handler("h", function() chronis.fail("try again later") end)
        due_job(s, "r", T0, "h", { max_retries = 2, retry_delay_seconds = 60 })
        s:start()
        wait(function() return field("r", "retry_count") == 1 end, "no retry was scheduled")
        local j = F.store:get_job("r")
        assert.are.equal("scheduled", j.status)
        assert.are.equal(T0 + 60 * S, H.t(j.next_run_time))
        assert.are.equal("try again later", j.last_error.message)
      end)
    end)

    -- On the real clock: runs on the fake one (2025) are older than the
    -- stores' history_days, and a store may prune them as it writes.
    if opts.history ~= false then
      it("records snoozed and cancelled runs in the history", function()
        local s = sched { clock = false, keep_completed = 3600 }
        local calls = 0
        s:handler("h", function()
          calls = calls + 1
          if calls == 1 then chronis.snooze(0.05) end
          chronis.cancel("done")
        end)
        s:every { hours = 1 }:config { job_id = "hist" }:run("h")
        s:update_job("hist", { next_run_time = s:now() })
        s:start()
        wait(function() return field("hist", "status") == "completed" end, "the job was not cancelled")
        wait(function() return #s:history("hist") == 2 end, "the two runs were not recorded")
        local runs = s:history("hist")
        assert.are.same({ "cancelled", "snoozed" }, { runs[1].outcome, runs[2].outcome })
        assert.are.same({ 2, 1 }, { runs[1].attempt, runs[2].attempt })
        assert.is_nil(runs[2].error_code)
        assert.are.equal(1, #s:history({ job_id = "hist", outcome = "snoozed" }))
        assert.are.equal("cancelled", field("hist", "last_outcome"))
      end)
    end

    describe("outside a handler", function()
      it("raises invalid_state, also from a task a handler spawned", function()
        for _, call in ipairs({ function() chronis.snooze(1) end, function() chronis.cancel("x") end,
          function() chronis.fail("x") end }) do
          local ok, err = pcall(call)
          assert.is_false(ok)
          assert.are.equal("invalid_state", err.code)
        end
        local s = sched()
        local spawned_err, done
        s:handler("h", function()
          local t = chronis.spawn(function()
            local ok, err = pcall(chronis.snooze, 5)
            spawned_err = not ok and err.code
            done = true
          end)
          while not done do chronis.sleep(0.005) end
          return t
        end)
        due_job(s, "o", T0)
        s:start()
        wait(function() return F.store:get_job("o") == nil end, "the handler did not end")
        assert.are.equal("invalid_state", spawned_err)
      end)
    end)
  end)
end
