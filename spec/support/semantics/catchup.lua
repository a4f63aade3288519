-- Engine semantics: catch-up after a downtime (docs/engine.md, "Catch-up"),
-- run on every store by engine_contract.lua as (name, factory, opts).
-- run_once runs once for every slot due by its start, late or missed;
-- run_all runs each missed slot, the newest max_catch_up of them; skip
-- drops slots later than the threshold. Interval jobs keep their phase.
local H = require "support.engine_helper"
local U = require "support.util"

local describe, it, _, _, assert = U.busted()

local S, T0 = H.S, H.T0

return function(name, factory, opts)
  opts = opts or {}
  local F = require("support.semantics.fixture")(factory, opts)
  local field, wait = F.field, F.wait

  describe(name .. " catch-up", function()
    F.install()

    -- A started scheduler whose handler "h" records each run's job and
    -- slot (scheduled_time).
    local function recording(o)
      local s, runs = F.sched(o), {}
      s:handler("h", function(job)
        runs[#runs + 1] = { job_id = job.job_id, slot = job.scheduled_time }
      end)
      s:start()
      return s, runs
    end

    local function slots(runs, id)
      local out = {}
      for _, r in ipairs(runs) do
        if r.job_id == id then out[#out + 1] = r.slot end
      end
      return out
    end

    -- Moves the clock to `at`, ticks, waits until job id's next run time
    -- is `next_time`, then for one more poll (a wrong extra run shows).
    local function catch_up(s, at, id, next_time, seconds)
      F.at(s, at)
      wait(function() return field(id, "next_run_time") == next_time end,
        ("job %s did not move to %s"):format(id, next_time), seconds)
      F.settle(s)
    end

    describe("run_once (interval and date default)", function()
      it("runs a 2 s interval job once for the 6 slots it missed in 12 s, then on its grid", function()
        local s, runs = recording()
        s:every { seconds = 2 }:config { job_id = "t" }:run("h")
        -- Slots 10:00:02, :04, ... :14 are due, each less late than the threshold.
        catch_up(s, T0 + 14 * S + 500000, "t", "2025-01-15T10:00:16Z")
        assert.are.same({ "2025-01-15T10:00:02Z" }, slots(runs, "t"))
        assert.are.equal("2025-01-15T10:00:02Z", field("t", "last_scheduled_time"))
        -- Back on time: each slot runs.
        catch_up(s, T0 + 16 * S, "t", "2025-01-15T10:00:18Z")
        assert.are.same({ "2025-01-15T10:00:02Z", "2025-01-15T10:00:16Z" }, slots(runs, "t"))
      end)

      it("runs a job missed by hours once, and its next time is on its grid", function()
        local s, runs = recording()
        s:every { minutes = 10 }:config { job_id = "i" }:run("h")
        s:on { cron = "*/5 * * * *" }:config { job_id = "c", if_missed = "run_once" }:run("h")
        F.at(s, "2025-01-15T13:07:00Z")
        wait(function()
          return field("i", "next_run_time") == "2025-01-15T13:10:00Z"
            and field("c", "next_run_time") == "2025-01-15T13:10:00Z"
        end, "the jobs did not move to 13:10")
        F.settle(s)
        assert.are.same({ "2025-01-15T10:10:00Z" }, slots(runs, "i"))
        assert.are.same({ "2025-01-15T10:05:00Z" }, slots(runs, "c"))
      end)

      it("coalesces an app's restart on a persistent store: one run, next on the grid", function()
        local function app(store)
          local s, runs = recording { storage = store }
          s:every { seconds = 2 }:config { job_id = "tick", if_exists = "skip" }:run("h")
          return s, runs
        end
        local s1, runs1 = app(F.store)
        catch_up(s1, T0 + 2 * S, "tick", "2025-01-15T10:00:04Z")
        assert.are.equal(1, #runs1)
        s1:stop()
        F.clock:advance(12)
        local s2, runs2 = app(F.other_handle())
        s2:tick()
        wait(function() return field("tick", "next_run_time") == "2025-01-15T10:00:16Z" end,
          "the restarted app did not catch up to 10:00:16")
        F.settle(s2)
        assert.are.same({ "2025-01-15T10:00:04Z" }, slots(runs2, "tick"))
        assert.are.equal(1, #runs1)
      end)

      it("keeps the phase after a retry: the run after it is on the grid, not retry + interval", function()
        local s = F.sched()
        local calls = 0
        s:handler("flaky", function()
          calls = calls + 1
          if calls == 1 then error("transient") end
        end)
        s:start()
        s:every { minutes = 10 }:config { job_id = "f", retry = 2, retry_delay = 45 }:run("flaky")
        F.at(s, T0 + 600 * S)
        wait(function() return field("f", "retry_count") == 1 end, "the retry was not written")
        catch_up(s, T0 + 645 * S, "f", "2025-01-15T10:20:00Z")
        assert.are.equal(2, calls)
        assert.are.equal(0, field("f", "retry_count"))
        assert.is_nil(field("f", "retry_slot"))
      end)
    end)

    describe("run_all", function()
      it("runs each missed slot of an interval job once, oldest first", function()
        local s, runs = recording()
        s:every { minutes = 1 }:config { job_id = "a", if_missed = "run_all" }:run("h")
        catch_up(s, "2025-01-15T10:04:30Z", "a", "2025-01-15T10:05:00Z", 30)
        assert.are.same({ "2025-01-15T10:01:00Z", "2025-01-15T10:02:00Z", "2025-01-15T10:03:00Z",
          "2025-01-15T10:04:00Z" }, slots(runs, "a"))
        assert.are.same({}, F.logged("warn", "a"))
      end)

      for _, case in ipairs({
        { "an interval job", function(s) return s:every { minutes = 1 } end },
        { "a cron job", function(s) return s:on { minute = "*" } end },
      }) do
        it("runs the newest max_catch_up missed slots of " .. case[1] .. ", and warns of the others", function()
          local s, runs = recording { max_catch_up = 3 }
          case[2](s):config { job_id = "b", if_missed = "run_all" }:run("h")
          catch_up(s, "2025-01-15T10:10:30Z", "b", "2025-01-15T10:11:00Z", 30)
          assert.are.same({ "2025-01-15T10:08:00Z", "2025-01-15T10:09:00Z", "2025-01-15T10:10:00Z" },
            slots(runs, "b"))
          local warned = F.logged("warn", "b")
          assert.are.equal(1, #warned)
          assert.truthy(warned[1]:find("skipped 7 missed run(s)", 1, true), warned[1])
          assert.truthy(warned[1]:find("max_catch_up=3", 1, true), warned[1])
        end)
      end

      it("bounds a daily job's catch-up too", function()
        local s, runs = recording { max_catch_up = 2 }
        s:every { days = 1 }:config { job_id = "d", if_missed = "run_all" }:run("h")
        catch_up(s, "2025-01-21T12:00:00Z", "d", "2025-01-22T10:00:00Z", 30)
        assert.are.same({ "2025-01-20T10:00:00Z", "2025-01-21T10:00:00Z" }, slots(runs, "d"))
        assert.truthy(F.logged("warn", "d")[1]:find("skipped 4 missed run(s)", 1, true))
      end)

      it("catches up 100 slots at most by default", function()
        local s, runs = recording()
        s:every { seconds = 1 }:config { job_id = "e", if_missed = "run_all" }:run("h")
        F.at(s, T0 + 105 * S) -- slots 10:00:01 .. 10:01:45
        wait(function() return #runs >= 1 end, "the job did not run")
        assert.are.equal("2025-01-15T10:00:06Z", runs[1].slot)
        assert.truthy(F.logged("warn", "e")[1]:find("skipped 5 missed run(s)", 1, true))
      end)
    end)

    describe("skip (cron default)", function()
      it("runs a slot within the threshold, skips one later than it", function()
        local s, runs = recording()
        s:on { minute = "*" }:config { job_id = "c" }:run("h")
        catch_up(s, "2025-01-15T10:01:30Z", "c", "2025-01-15T10:02:00Z")
        assert.are.same({ "2025-01-15T10:01:00Z" }, slots(runs, "c"))
        catch_up(s, "2025-01-15T10:09:30Z", "c", "2025-01-15T10:10:00Z")
        assert.are.same({ "2025-01-15T10:01:00Z" }, slots(runs, "c"))
      end)

      it("runs a late slot once, not every late slot after it", function()
        local s, runs = recording()
        s:on { second = "*" }:config { job_id = "ps" }:run("h")
        -- 29 s late, within the threshold: one run, then the next second.
        catch_up(s, "2025-01-15T10:00:30Z", "ps", "2025-01-15T10:00:31Z")
        assert.are.same({ "2025-01-15T10:00:01Z" }, slots(runs, "ps"))
      end)

      it("skips an interval job's missed slots and keeps its phase", function()
        local s, runs = recording()
        s:every { minutes = 10 }:config { job_id = "i", if_missed = "skip" }:run("h")
        catch_up(s, "2025-01-15T10:47:00Z", "i", "2025-01-15T10:50:00Z")
        assert.are.same({}, slots(runs, "i"))
      end)
    end)

    describe("the threshold", function()
      it("is the scheduler's misfire_threshold for jobs created without one", function()
        local s, runs = recording { misfire_threshold = 5 }
        local j = s:on { minute = "*" }:config { job_id = "c" }:run("h")
        assert.are.equal(5, j.misfire_threshold_seconds)
        local own = s:on { minute = "*" }:config { job_id = "own", misfire_threshold = 30 }:run("h")
        assert.are.equal(30, own.misfire_threshold_seconds)
        -- 10 s late: missed for c (skipped), late for own (runs).
        F.at(s, "2025-01-15T10:01:10Z")
        wait(function()
          return field("c", "next_run_time") == "2025-01-15T10:02:00Z"
            and field("own", "next_run_time") == "2025-01-15T10:02:00Z"
        end, "the jobs did not move to 10:02")
        F.settle(s)
        assert.are.same({}, slots(runs, "c"))
        assert.are.same({ "2025-01-15T10:01:00Z" }, slots(runs, "own"))
      end)

      it("and max_catch_up are checked as scheduler options", function()
        for _, case in ipairs({
          { { misfire_threshold = -1 }, "invalid option 'misfire_threshold'" },
          { { misfire_threshold = "60" }, "invalid option 'misfire_threshold': expected a number" },
          { { max_catch_up = 0 }, "invalid option 'max_catch_up'" },
          { { max_catch_up = 2.5 }, "invalid option 'max_catch_up': expected a whole number" },
        }) do
          U.assert_error_naming("invalid", case[2], F.sched, case[1])
        end
      end)
    end)
  end)
end
