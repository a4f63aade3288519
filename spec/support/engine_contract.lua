-- The engine contract (docs/engine.md) as one busted suite: what the
-- scheduler does with a store — claims, retries, misfires, leases,
-- timeouts, wake-ups, pause and resume, graceful stop — checked on every
-- store the way storage_contract.lua checks the stores themselves:
--
--   require("support.engine_contract")("sqlite", function()
--     return chronis.storage.sqlite(tmpfile())
--   end, { teardown = function(store) os.remove(tmpfile()) end })
--
-- factory() returns a fresh, empty store. opts (optional):
--   teardown(store)  runs after each test, once the store is closed.
--   reopen(store)    another handle on the same jobs (its own connections,
--                    as another process has); the claim and lease tests then
--                    also run with one scheduler on each handle. The
--                    handles it returns are closed after each test.
--   hints_across_handles  true when a job written through one handle wakes
--                    the schedulers of another (PostgreSQL NOTIFY, Redis
--                    pub/sub); needs reopen.
--   next_due_time    false declares that the store cannot say when its next
--                    job is due (a Lua adapter without next_due_time): then
--                    a job created before its scheduler started waits for
--                    the poll, by design, and that test is left out.
--   scheduler        options added to every scheduler (e.g. a lock).
--   history          false declares a store that keeps no run history (a Lua
--                    adapter without record_runs and query_runs): its runs
--                    still set the job's last-run fields, and asking for
--                    history is `unsupported`.
--
-- Schedules run on a fake clock (the `clock` option): every claim, recovery
-- and heartbeat gives the store the engine's `now`, so misfires, retries
-- and expired leases need no waiting, also on servers that keep their own
-- time for updated_at. What only real time shows (wake-ups, the heartbeat of
-- a live process, handler timeouts) runs on the real clock with short
-- intervals and waits bounded far below the polling interval: a test fails
-- when the behaviour is missing, never because a machine is slow. Store
-- calls may answer later than the tick that made them (networked stores),
-- so every check of what a tick did waits for its effect.
local chronis = require "chronis"
local H = require "support.engine_helper"
local U = require "support.util"

local describe, it, before_each, after_each, assert = U.busted()

local S, T0 = H.S, H.T0
local fmt, due_job = chronis.time.format, H.due_job

local KNOWN = { teardown = true, reopen = true, hints_across_handles = true, next_due_time = true,
  scheduler = true, history = true }

return function(name, factory, opts)
  opts = opts or {}
  for k in pairs(opts) do
    assert(KNOWN[k], ("engine contract: unknown option %q"):format(tostring(k)))
  end
  assert(not opts.hints_across_handles or opts.reopen,
    "engine contract: hints_across_handles needs reopen")

  describe(name .. " engine contract", function()
    local store, clock, handles, drain

    before_each(function()
      store = factory()
      assert(store, "factory() returned no store")
      clock = H.fake_clock()
      handles = {}
      drain = false
    end)

    after_each(function()
      H.stop_all()
      for _, h in ipairs(handles) do h:close() end
      local s = store
      store = nil
      s:close()
      if opts.teardown then opts.teardown(s) end
      if drain then H.drain() end
      H.assert_quiet()
    end)

    -- A scheduler on the store, on the fake clock unless o.clock == false.
    -- Each runs the probe jobs of settle() below, whoever created them.
    local function sched(o)
      local all = { storage = store, clock = clock.fn }
      for k, v in pairs(opts.scheduler or {}) do all[k] = v end
      for k, v in pairs(o or {}) do all[k] = v end
      if all.clock == false then all.clock = nil end
      local s = H.scheduler(all)
      s:handler("probe", function() end)
      return s
    end

    -- A scheduler whose handler "h" lists the ids of the jobs it ran.
    local function recording_sched(o)
      local s, ran = sched(o), {}
      s:handler("h", function(job) ran[#ran + 1] = job.job_id end)
      return s, ran
    end

    local function wait(pred, msg, seconds)
      H.wait(pred, seconds or 10, msg)
    end

    local function second_handle()
      local h = opts.reopen(store)
      handles[#handles + 1] = h
      return h
    end

    -- The job's field, or nil when the job is gone.
    local function field(id, key)
      local j = store:get_job(id)
      return j and j[key]
    end

    -- Waits until one poll has finished: a job due now at the lowest
    -- priority is claimed together with every job that is due, and started
    -- after them; once it has run and is gone, any job that was wrongly
    -- due has started too.
    -- A scheduler with filters claims only probes they match: `metadata`
    -- is then the probe's.
    local probes = 0
    local function settle(s, metadata)
      probes = probes + 1
      local id = "probe" .. probes
      due_job(s, id, s:now(), "probe", { priority = 0, metadata = metadata })
      s:tick()
      wait(function()
        local j = store:get_job(id)
        return j == nil or j.status == "completed"
      end, "the probe job " .. id .. " did not run")
      store:delete_job(id) -- kept by a scheduler with keep_completed
    end

    describe("claims", function()
      local function exactly_once(store1, store2, n)
        local counts, total = {}, 0
        local function h(job)
          counts[job.job_id] = (counts[job.job_id] or 0) + 1
          total = total + 1
          if total % 3 == 0 then chronis.sleep(0) end
        end
        local s1 = sched { storage = store1, polling_interval = 0.1 }
        local s2 = sched { storage = store2, polling_interval = 0.1 }
        s1:handler("h", h)
        s2:handler("h", h)
        for i = 1, n do due_job(s1, ("j%03d"):format(i), T0) end
        s1:start()
        s2:start()
        wait(function() return store:count_jobs() == 0 end, "jobs left in the store", 60)
        chronis.run_until(0.2) -- room for a second run of any job
        assert.are.equal(n, total)
        for i = 1, n do
          local id = ("j%03d"):format(i)
          assert.are.equal(1, counts[id], id)
        end
        assert.are.equal(n, s1:stats().claimed + s2:stats().claimed)
      end

      it("gives each of 200 due jobs to exactly one of two schedulers on the store", function()
        exactly_once(store, store, 200)
      end)

      if opts.reopen then
        it("gives each of 200 due jobs to exactly one of two schedulers on two handles", function()
          exactly_once(store, second_handle(), 200)
        end)
      end

      it("claims a job with claimed_by = node id and lease_until = now + lease_seconds", function()
        local s = sched { lease_seconds = 45 }
        local g = H.hold_runs(s, 1, 1)
        local j = store:get_job("j01")
        assert.are.equal("running", j.status)
        assert.are.equal(s:node_id(), j.claimed_by)
        assert.are.equal(T0 + 45 * S, H.t(j.lease_until))
        g.open = true
        wait(function() return store:get_job("j01") == nil end)
      end)
    end)

    describe("retries", function()
      it("back off 60, 120, 240, ... capped at 3600 s, then fail and call on_failure once", function()
        local failures = {}
        local s = sched { on_failure = function(id, err) failures[#failures + 1] = { id = id, err = err } end }
        local seen = {}
        s:handler("boom", function(job)
          seen[#seen + 1] = { attempt = job.attempt, retry_count = job.retry_count }
          error("boom!")
        end)
        due_job(s, "r", T0, "boom", { max_retries = 8, retry_delay_seconds = 60 })
        s:start()
        for n, delay in ipairs({ 60, 120, 240, 480, 960, 1920, 3600, 3600 }) do
          wait(function() return field("r", "retry_count") == n end, ("retry %d not written"):format(n))
          local j = store:get_job("r")
          assert.are.equal("scheduled", j.status)
          assert.are.equal(clock.now + delay * S, H.t(j.next_run_time),
            ("retry %d: expected a delay of %d s"):format(n, delay))
          assert.is_nil(j.claimed_by)
          assert.are.same({}, failures)
          clock.now = H.t(j.next_run_time)
          s:tick()
        end
        wait(function() return field("r", "status") == "failed" and #failures == 1 end,
          "the job did not fail once retries were spent")
        local j = store:get_job("r")
        assert.is_nil(j.next_run_time)
        assert.are.equal(9, #seen)
        for i, x in ipairs(seen) do
          assert.are.same({ attempt = i, retry_count = i - 1 }, x)
        end
        assert.are.equal("r", failures[1].id)
        assert.truthy(tostring(failures[1].err.message):find("boom!", 1, true))
        -- A failed job is never polled again.
        clock.now = clock.now + 86400 * S
        settle(s)
        assert.are.equal(9, #seen)
        assert.are.equal(1, #failures)
      end)

      it("a success resets retry_count and sets last_run_time and last_scheduled_time", function()
        local s = sched()
        local calls = 0
        s:handler("flaky", function()
          calls = calls + 1
          if calls == 1 then error("transient") end
        end)
        s:every { hours = 1 }:config { job_id = "f", retry = 3, retry_delay = 60 }:run("flaky")
        s:start()
        clock.now = T0 + 3600 * S
        s:tick()
        wait(function() return field("f", "retry_count") == 1 end, "the retry was not written")
        local j = store:get_job("f")
        assert.is_nil(j.last_run_time)
        local retry_at = H.t(j.next_run_time)
        assert.are.equal(clock.now + 60 * S, retry_at)
        clock.now = retry_at + 5 * S
        s:tick()
        wait(function() return field("f", "retry_count") == 0 end, "the success was not written")
        assert.are.equal(2, calls)
        j = store:get_job("f")
        assert.are.equal("scheduled", j.status)
        assert.are.equal(retry_at + 5 * S, H.t(j.last_run_time))
        assert.are.equal(retry_at, H.t(j.last_scheduled_time))
        assert.is_true(H.t(j.next_run_time) > clock.now)
        assert.are.equal(2, j.attempt)
      end)
    end)

    describe("run history", function()
      if opts.history == false then
        it("is 'unsupported' on this store, and a run still sets the job's last-run fields", function()
          local s = sched { clock = false, polling_interval = 0.1 }
          local calls = 0
          s:handler("flaky", function()
            calls = calls + 1
            if calls == 1 then error("boom") end
          end)
          s:every { hours = 1 }:config { job_id = "fl", retry = 3, retry_delay = 0 }:run("flaky")
          s:update_job("fl", { next_run_time = s:now() })
          s:start()
          wait(function() return field("fl", "last_outcome") == "ok" end, "the success was not written")
          local job = store:get_job("fl")
          assert.are.equal(1, job.failure_count)
          assert.are.equal(0, job.consecutive_failures)
          assert.truthy(job.last_error.message:find("boom", 1, true))
          local ok, err = pcall(s.history, s, "fl")
          assert.is_false(ok)
          assert.are.equal("unsupported", err.code)
        end)
        return
      end
      -- On the real clock: stores prune runs older than their age limit,
      -- measured on the wall clock.
      it("records every run, newest first, and the job's last run, error and failures", function()
        local s = sched { clock = false, polling_interval = 0.1 }
        local calls = 0
        s:handler("flaky", function(job)
          calls = calls + 1
          if calls == 1 then error("boom\nsecond line") end
          if calls == 2 then error({ code = 42, reason = "table error" }) end
          chronis.progress(calls, "working")
        end)
        local j = s:every { hours = 1 }:config { job_id = "fl", retry = 3, retry_delay = 0,
          metadata = { tenant = "acme" } }:run("flaky")
        s:update_job("fl", { next_run_time = s:now() })
        s:start()
        wait(function() return #s:history("fl") == 3 end, "three runs were not recorded")
        wait(function() return field("fl", "last_outcome") == "ok" end, "the success was not written")
        local runs = s:history("fl")
        local outcomes, attempts = {}, {}
        for i, r in ipairs(runs) do outcomes[i], attempts[i] = r.outcome, r.attempt end
        assert.are.same({ "ok", "error", "error" }, outcomes)
        assert.are.same({ 3, 2, 1 }, attempts)
        assert.are.equal("error", runs[3].error_code)
        assert.truthy(runs[3].error_message:find("boom\nsecond line", 1, true))
        assert.is_nil(runs[1].error_code)
        for _, r in ipairs(runs) do
          assert.are.equal("fl", r.job_id)
          assert.are.equal("flaky", r.func_name)
          assert.are.equal(j.name, r.name)
          assert.are.equal(s:node_id(), r.node)
          assert.are.same({ tenant = "acme" }, r.metadata)
          assert.is_true(r.duration >= 0)
          assert.is_true(H.t(r.ended_at) >= H.t(r.started_at))
        end
        assert.are.same({ "fl" }, (function()
          local out = {}
          for i, r in ipairs(s:history({ ["metadata.tenant"] = "acme", outcome = "ok" })) do
            out[i] = r.job_id
          end
          return out
        end)())
        local job = store:get_job("fl")
        assert.are.equal("ok", job.last_outcome)
        assert.are.equal(runs[1].started_at, job.last_run_at)
        assert.are.equal(2, job.failure_count)
        assert.are.equal(0, job.consecutive_failures)
        assert.are.equal("error", job.last_error.code)
        assert.are.equal(2, job.last_error.attempt)
        assert.is_nil(job.progress, "progress is cleared when the run ends")
      end)

      it("keeps history_limit runs of a job, and a skipped misfire leaves a 'skipped' run", function()
        local s = sched { clock = false, polling_interval = 0.1 }
        local n = 0
        s:handler("count", function() n = n + 1 end)
        s:every { seconds = 0.2 }:config { job_id = "lim", history_limit = 2 }:run("count")
        due_job(s, "missed", s:now() - 3600 * S, "count", { if_missed = "skip" })
        s:start()
        wait(function() return n >= 4 end, "the interval job did not run 4 times")
        wait(function() return #s:history("missed") == 1 end, "the skipped run was not recorded")
        assert.are.equal("skipped", s:history("missed")[1].outcome)
        s:stop()
        assert.are.equal(2, #s:history("lim"))
      end)
    end)

    describe("misfires", function()
      local s, runs

      before_each(function()
        s = sched()
        runs = {}
        s:handler("h", function(job)
          runs[#runs + 1] = { job_id = job.job_id, scheduled = job.scheduled_time, at = s:now() }
        end)
        s:start()
      end)

      local function scheduled_times()
        local out = {}
        for i, r in ipairs(runs) do out[i] = r.scheduled end
        return out
      end

      it("count a run as missed only when next_run_time + threshold < now (strict)", function()
        due_job(s, "at_limit", T0 - 60 * S, "h", { if_missed = "skip" })
        due_job(s, "past_limit", T0 - 60 * S - 1, "h", { if_missed = "skip" })
        due_job(s, "small_threshold", T0 - 31 * S, "h",
          { if_missed = "skip", misfire_threshold_seconds = 30 })
        s:tick()
        -- The skipped one-shots are gone too.
        wait(function() return store:count_jobs() == 0 end, "jobs left in the store")
        assert.are.same({ "at_limit" }, H.ids(runs))
        assert.are.equal(2, s:stats().skipped)
      end)

      it("skip: completes without running and advances past now (cron default)", function()
        local j = s:on { cron = "*/5 * * * *" }:config { job_id = "c" }:run("h")
        assert.are.equal("skip", j.if_missed)
        assert.are.equal(T0 + 300 * S, H.t(j.next_run_time))
        clock.now = H.t("2025-01-15T10:17:30Z")
        s:tick()
        wait(function() return field("c", "next_run_time") == "2025-01-15T10:20:00Z" end,
          "the job did not move to 10:20")
        settle(s)
        assert.are.same({}, runs)
        j = store:get_job("c")
        assert.are.equal("scheduled", j.status)
        assert.is_nil(j.last_run_time)
        assert.is_nil(j.claimed_by)
      end)

      it("skip: deletes a missed one-shot without running it", function()
        due_job(s, "d", T0 - 3600 * S, "h", { if_missed = "skip" })
        s:tick()
        wait(function() return store:get_job("d") == nil end, "the job was not deleted")
        assert.are.same({}, runs)
      end)

      it("run_once: runs an interval job once and takes the next time from now (default)", function()
        local j = s:every { minutes = 10 }:config { job_id = "i" }:run("h")
        assert.are.equal("run_once", j.if_missed)
        clock.now = H.t("2025-01-15T11:05:00Z")
        s:tick()
        wait(function() return field("i", "last_scheduled_time") ~= nil end, "the run was not written")
        settle(s)
        assert.are.equal(1, #runs)
        assert.are.equal("2025-01-15T10:10:00Z", runs[1].scheduled)
        j = store:get_job("i")
        local nxt = H.t(j.next_run_time)
        assert.is_true(nxt > clock.now, j.next_run_time)
        assert.is_true(nxt <= clock.now + 600 * S, j.next_run_time)
        assert.are.equal("2025-01-15T10:10:00Z", j.last_scheduled_time)
      end)

      it("run_once: runs a missed one-shot once and deletes it (default)", function()
        local j = s:once(T0 + 60 * S):config { job_id = "o" }:run("h")
        assert.are.equal("run_once", j.if_missed)
        clock.now = T0 + 3 * 3600 * S
        s:tick()
        wait(function() return store:get_job("o") == nil end, "the job was not deleted")
        assert.are.same({ "o" }, H.ids(runs))
      end)

      -- Moves the clock to `now` and ticks; waits until job id's next run
      -- time is `next_time` (else fails with `what`), then for the runs.
      local function catch_up(now, id, next_time, what, seconds)
        clock.now = H.t(now)
        s:tick()
        wait(function() return field(id, "next_run_time") == next_time end, what, seconds)
        settle(s)
      end

      it("run_once: a missed cron job runs once and its next time is the first slot after now", function()
        s:on { cron = "*/5 * * * *" }:config { job_id = "c", if_missed = "run_once" }:run("h")
        catch_up("2025-01-15T10:17:30Z", "c", "2025-01-15T10:20:00Z", "the job did not move to 10:20")
        assert.are.equal(1, #runs)
      end)

      it("run_all: cron catches up each missed slot once, then stops", function()
        s:on { minute = "*" }:config { job_id = "c", if_missed = "run_all" }:run("h")
        catch_up("2025-01-15T10:05:30Z", "c", "2025-01-15T10:06:00Z", "the job did not catch up to 10:06", 30)
        assert.are.same({ "2025-01-15T10:01:00Z", "2025-01-15T10:02:00Z", "2025-01-15T10:03:00Z",
                          "2025-01-15T10:04:00Z", "2025-01-15T10:05:00Z" }, scheduled_times())
        assert.are.equal("scheduled", store:get_job("c").status)
      end)

      it("run_all: an interval job runs each missed slot once", function()
        s:every { minutes = 10 }:config { job_id = "i", if_missed = "run_all" }:run("h")
        catch_up("2025-01-15T10:35:00Z", "i", "2025-01-15T10:40:00Z", "the job did not catch up to 10:40", 30)
        assert.are.same({ "2025-01-15T10:10:00Z", "2025-01-15T10:20:00Z", "2025-01-15T10:30:00Z" },
          scheduled_times())
      end)

      -- A job "last" due once, at 10:01, is deleted after a tick at `now`.
      local function ends_at(now)
        s:on { year = 2025, month = 1, day = 15, hour = 10, minute = 1 }:config { job_id = "last" }
          :run("h")
        clock.now = now
        s:tick()
        wait(function() return store:get_job("last") == nil end, "the job was not deleted")
      end

      it("end (delete) a job whose trigger has no further time, after one run", function()
        ends_at(T0 + 60 * S)
        assert.are.equal(1, #runs)
        clock.now = T0 + 3600 * S
        settle(s)
        assert.are.equal(1, #runs)
      end)

      it("end a job whose only remaining slot was skipped", function()
        ends_at(T0 + 3600 * S)
        assert.are.same({}, runs)
      end)
    end)

    describe("leases", function()
      -- A job left running by a node that is gone (or, with a lease still
      -- valid, by one that lives).
      local function orphan(id, lease_until, owner)
        return store:create_job {
          job_id = id, status = "running", claimed_by = owner or "dead-node",
          lease_until = fmt(lease_until), next_run_time = fmt(T0 - 5 * S),
          trigger_type = "date", trigger_args = { run_date = fmt(T0 - 5 * S) },
          func_name = "h",
        }
      end

      it("are extended by the heartbeat while the job runs", function()
        local s = sched { lease_seconds = 0.6 }
        local g = H.hold_runs(s, 1, 1)
        assert.are.equal(T0 + 600000, H.t(field("j01", "lease_until")))
        -- Each step of the clock stays within the lease last granted, as a
        -- live process's would.
        for _, at in ipairs({ 400000, 800000 }) do
          clock.now = T0 + at
          wait(function() return H.t(field("j01", "lease_until")) == T0 + at + 600000 end,
            "lease not extended")
          local j = store:get_job("j01")
          assert.are.equal("running", j.status)
          assert.are.equal(s:node_id(), j.claimed_by)
          assert.are.equal(1, #g.entered, "the job was recovered and started again")
        end
        g.open = true
        wait(function() return store:get_job("j01") == nil end)
      end)

      it("that expired are recovered and their jobs run; valid ones are left alone", function()
        local s, ran = recording_sched()
        orphan("orphan", T0 - 10 * S)
        orphan("alive", T0 + 600 * S, "other-node")
        s:start()
        wait(function() return store:get_job("orphan") == nil end, "the orphan was not run")
        settle(s)
        assert.are.same({ "orphan" }, ran)
        local alive = store:get_job("alive")
        assert.are.equal("running", alive.status)
        assert.are.equal("other-node", alive.claimed_by)
      end)

      it("that expire while the scheduler runs are recovered", function()
        local s, ran = recording_sched()
        s:start()
        orphan("orphan", T0 + 20 * S)
        settle(s)
        assert.are.same({}, ran)
        assert.are.equal("running", store:get_job("orphan").status)
        clock.now = T0 + 21 * S
        s:tick()
        wait(function() return #ran == 1 end, "the expired job was not recovered and run")
        assert.are.same({ "orphan" }, ran)
      end)

      it("of a live process are never recovered, however long its run", function()
        local runs = {}
        local function h(job)
          runs[job.job_id] = (runs[job.job_id] or 0) + 1
          if job.job_id == "long" then chronis.sleep(3) end
        end
        -- s1 can hold one job only, so the probe below is s2's to run; s2
        -- polls (and recovers) all along, on a handle of its own if the
        -- store has more than one.
        local s1 = sched { clock = false, lease_seconds = 1, polling_interval = 0.1,
                           max_workers = 1, max_queue_size = 1 }
        local s2 = sched { clock = false, lease_seconds = 1, polling_interval = 0.1,
                           storage = opts.reopen and second_handle() or store }
        s1:handler("h", h)
        s2:handler("h", h)
        s1:once(chronis.time.now()):config { job_id = "long" }:run("h")
        s1:start()
        wait(function() return runs.long == 1 end)
        s2:start()
        s2:once(chronis.time.now() + 500000):config { job_id = "probe" }:run("h")
        wait(function() return store:get_job("long") == nil end, "the long job did not finish")
        chronis.run_until(1.5) -- a wrongly recovered second run would start here
        assert.are.equal(1, runs.long)
        assert.are.equal(1, runs.probe)
        assert.are.equal(1, s2:stats().claimed) -- the probe only
      end)
    end)

    describe("timeouts", function()
      local function timeout_sched()
        local failures = {}
        local s = sched { on_failure = function(id, err) failures[#failures + 1] = { id = id, err = err } end }
        local ok_runs = 0
        s:handler("ok", function() ok_runs = ok_runs + 1 end)
        return s, failures, function() return ok_runs end
      end

      it("cancel a handler waiting in chronis.sleep at its deadline", function()
        drain = true -- a leaked sleep timer is engine_spec's subject, not this test's
        local s, failures, ok_runs = timeout_sched()
        local resumed = false
        s:handler("sleepy", function()
          chronis.sleep(10)
          resumed = true
        end)
        due_job(s, "y", T0, "sleepy", { timeout_seconds = 1 })
        s:start()
        wait(function() return #failures == 1 and field("y", "status") == "failed" end,
          "the run did not fail")
        assert.are.equal("y", failures[1].id)
        assert.are.equal("timeout", failures[1].err.code)
        assert.is_false(resumed)
        assert.are.same({}, s:get_queue_status().in_flight_job_ids)
        -- The host keeps running jobs.
        due_job(s, "after", T0, "ok")
        wait(function() return ok_runs() == 1 end)
      end)

      it("stop a CPU-bound handler, and retries apply to the timeout", function()
        local s, failures, ok_runs = timeout_sched()
        local runs = 0
        s:handler("spin", function()
          runs = runs + 1
          while true do end
        end)
        due_job(s, "cpu", T0, "spin", { timeout_seconds = 1, max_retries = 1, retry_delay_seconds = 60 })
        s:start()
        wait(function() return field("cpu", "retry_count") == 1 end, "the retry was not written")
        local j = store:get_job("cpu")
        assert.are.equal(1, runs)
        assert.are.equal("scheduled", j.status)
        assert.are.equal(clock.now + 60 * S, H.t(j.next_run_time))
        assert.are.same({}, failures)
        clock.now = H.t(j.next_run_time)
        s:tick()
        wait(function() return #failures == 1 and field("cpu", "status") == "failed" end,
          "the second run did not fail")
        assert.are.equal(2, runs)
        assert.are.equal("timeout", failures[1].err.code)
        due_job(s, "after", clock.now, "ok")
        wait(function() return ok_runs() == 1 end)
      end)
    end)

    describe("wake-ups", function()
      -- On the real clock, with a polling interval far longer than any
      -- wait below: a job that starts within the wait was woken up.
      local POLL = 120

      local function record(s)
        local started = {}
        s:handler("h", function(job)
          started[job.job_id] = started[job.job_id] or {}
          table.insert(started[job.job_id], { at = chronis.time.now(), scheduled = job.scheduled_time })
        end)
        return started
      end

      local function assert_not_early(run)
        local early = H.t(run.scheduled) - run.at
        assert.is_true(early <= 0, ("started %d µs before its time"):format(early))
      end

      -- Job id starts (`when`: before the poll, ...), and not early.
      local function wait_started(started, id, when)
        wait(function() return started[id] ~= nil end, "the job was not started " .. when)
        assert_not_early(started[id][1])
      end

      -- Without next_due_time the store cannot say when its next job is
      -- due: the job starts at the next poll, which is made short.
      local due = opts.next_due_time ~= false
        and { "due in 200 ms, long before the poll", POLL, "before the poll" }
        or { "at the next poll (no due time to ask for)", 1, "by the next poll" }
      it("start a job created before the scheduler, " .. due[1], function()
        local s = sched { clock = false, polling_interval = due[2] }
        local started = record(s)
        s:once(chronis.time.now() + 200000):config { job_id = "soon" }:run("h")
        s:start()
        wait_started(started, "soon", due[3])
      end)

      it("start a job created while the scheduler sleeps, due in 200 ms, long before the poll", function()
        local s = sched { clock = false, polling_interval = POLL }
        local started = record(s)
        s:start()
        settle(s) -- the scheduler has polled, and sleeps until the next poll
        s:once(chronis.time.now() + 200000):config { job_id = "soon" }:run("h")
        wait_started(started, "soon", "before the poll")
      end)

      if opts.hints_across_handles then
        it("start a job created through another handle long before the poll", function()
          local s = sched { clock = false, polling_interval = POLL }
          local started = record(s)
          s:start()
          settle(s)
          local other = sched { clock = false, storage = second_handle() } -- not started: creates only
          other:once(chronis.time.now() + 200000):config { job_id = "elsewhere" }:run("h")
          wait_started(started, "elsewhere", "before the poll")
        end)

        -- Claims answered by every store of the process so far, from the
        -- counts chr_store_submit keeps (chronis.metrics).
        local function claims_made()
          local text, n = require("chronis.metrics").render({ schedulers = {} }), 0
          for v in text:gmatch('chronis_store_operation_duration_seconds_count{[^}]*op="claim_due_jobs"[^}]*} (%d+)') do
            n = n + tonumber(v)
          end
          return n
        end

        it("make no claim at a poll while nothing is due, and still start a job another handle creates", function()
          -- Polls every 100 ms: a claim per poll would be 10 in a second.
          local s = sched { clock = false, polling_interval = 0.1 }
          local started = record(s)
          s:once(chronis.time.now() + 3600 * S):config { job_id = "far" }:run("h")
          s:start()
          settle(s) -- claimed, then read the next due time: an hour away
          chronis.sleep(0.2)
          local before = claims_made()
          chronis.sleep(1)
          local during = claims_made() - before
          assert.is_true(during <= 1, ("%d claims in 1 s of polls with nothing due"):format(during))
          local other = sched { clock = false, storage = second_handle() } -- creates only
          local due_at = chronis.time.now() + 300000
          other:once(due_at):config { job_id = "elsewhere" }:run("h")
          wait_started(started, "elsewhere", "after its hint")
          local late = started.elsewhere[1].at - due_at
          assert.is_true(late < 250000, ("started %d µs late"):format(late))
        end)
      end

      it("run again at the next time a completion wrote, long before the poll", function()
        local s = sched { clock = false, polling_interval = POLL }
        local started = record(s)
        -- Due at once: start() claims it, whatever the store can say.
        s:every { seconds = 1, start_date = fmt(chronis.time.now()) }:config { job_id = "tick" }:run("h")
        s:start()
        wait(function() return started.tick and #started.tick >= 2 end,
          "the second run did not start before the poll")
        assert.are.equal(S, H.t(started.tick[2].scheduled) - H.t(started.tick[1].scheduled),
          "the runs are not one interval apart")
        assert_not_early(started.tick[1])
        assert_not_early(started.tick[2])
      end)

      it("poll every polling_interval (default 1 s) when nothing wakes them", function()
        -- The fake clock moves without a store write: only the poll timer
        -- can notice that the job became due.
        local s = sched()
        local ran = false
        s:handler("h", function() ran = true end)
        due_job(s, "a", T0 + 3600 * S)
        s:start()
        settle(s)
        assert.is_false(ran)
        clock.now = T0 + 3600 * S
        wait(function() return ran end, "not polled within 10 s")
      end)
    end)

    describe("pause and resume", function()
      it("leave a paused job unclaimed, and run it once resumed, at its time", function()
        local s = sched()
        local ran = 0
        s:handler("h", function() ran = ran + 1 end)
        s:every { minutes = 10 }:config { job_id = "p" }:run("h")
        local nrt = store:get_job("p").next_run_time
        assert.are.equal("paused", s:pause_job("p").status)
        s:start()
        clock.now = T0 + 10 * 60 * S
        settle(s)
        assert.are.equal(0, ran)
        assert.are.equal("paused", store:get_job("p").status)
        local j = s:resume_job("p")
        assert.are.equal("scheduled", j.status)
        assert.are.equal(nrt, j.next_run_time)
        s:tick()
        wait(function() return ran == 1 end, "the resumed job did not run")
      end)

      it("keep paused jobs out of the claims of every scheduler", function()
        local s1 = sched { polling_interval = 0.1 }
        local s2 = sched { polling_interval = 0.1, storage = opts.reopen and second_handle() or store }
        local ran = {}
        for _, s in ipairs({ s1, s2 }) do
          s:handler("h", function(job) ran[#ran + 1] = job.job_id end)
        end
        for i = 1, 10 do due_job(s1, "j" .. i, T0 + 60 * S) end
        for i = 1, 10, 2 do s1:pause_job("j" .. i) end
        s1:start()
        s2:start()
        clock.now = T0 + 60 * S
        wait(function() return #ran == 5 end, "the jobs left scheduled did not run")
        settle(s1)
        settle(s2)
        table.sort(ran)
        assert.are.same({ "j10", "j2", "j4", "j6", "j8" }, ran)
        assert.are.equal(5, store:count_jobs({ status = "paused" }))
      end)
    end)

    describe("updates that cannot corrupt a job", function()
      local null = chronis.json.null
      local naming = U.assert_error_naming

      -- Each field the engine (or the store) writes, with a value to try.
      local OWNED = {
        claimed_by = "intruder", lease_until = fmt(T0 + 60 * S), attempt = 3, retry_count = 2,
        last_run_time = fmt(T0), last_scheduled_time = fmt(T0), last_run_at = fmt(T0),
        last_outcome = "ok", last_error = { code = "error", message = "x" }, failure_count = 1,
        consecutive_failures = 1, progress = { value = 1 }, created_at = fmt(T0),
        updated_at = fmt(T0),
      }

      it("refuse each field the engine writes, set or removed, naming it, and change nothing", function()
        local s = sched()
        s:every { minutes = 5 }:config { job_id = "u", metadata = { tenant_id = "acme" } }:run("h")
        local before = store:get_job("u")
        for k, v in pairs(OWNED) do
          naming("invalid", "'" .. k .. "'", s.update_job, s, "u", { [k] = v, name = "changed" })
          naming("invalid", "'" .. k .. "'", s.update_job, s, "u", { [k] = null })
        end
        assert.are.same(before, store:get_job("u"))
      end)

      it("refuse status running, and the job still runs when due", function()
        local s, ran = recording_sched()
        due_job(s, "r", T0)
        local before = store:get_job("r")
        naming("invalid", "'status'", s.update_job, s, "r", { status = "running" })
        naming("invalid", "'status'", s.update_job, s, "r", { status = "running", priority = 9 })
        assert.are.same(before, store:get_job("r"))
        s:start()
        wait(function() return #ran == 1 end, "the job did not run")
        assert.are.same({ "r" }, ran)
      end)

      it("keep a next run time on a scheduled job, the trigger's next when it has none", function()
        local s = sched()
        s:every { minutes = 5 }:config { job_id = "i" }:run("h")
        local before = store:get_job("i")
        naming("invalid", "'next_run_time'", s.update_job, s, "i",
          { status = "scheduled", next_run_time = null })
        naming("invalid", "'next_run_time'", s.update_job, s, "i", { next_run_time = null })
        assert.are.same(before, store:get_job("i"))
        -- Paused, it may lose it; scheduled again, it gets the trigger's next.
        s:pause_job("i")
        assert.is_nil(s:update_job("i", { next_run_time = null }).next_run_time)
        local j = s:update_job("i", { status = "scheduled" })
        assert.are.equal("scheduled", j.status)
        assert.are.equal(T0 + 300 * S, H.t(j.next_run_time))
        -- A trigger without a next time cannot make a job scheduled.
        local p = s:on { year = 2020, month = 1, day = 1 }:config { job_id = "p" }:run("h")
        assert.are.equal("pending", p.status)
        s:pause_job("p")
        before = store:get_job("p")
        naming("invalid", "'next_run_time'", s.update_job, s, "p", { status = "scheduled" })
        assert.are.same(before, store:get_job("p"))
      end)

      it("refuse a running job's status, next run time and trigger with invalid_state; other fields apply", function()
        local s = sched()
        local g = H.hold_runs(s, 1, 1)
        local before = store:get_job("j01")
        assert.are.equal("running", before.status)
        for k, v in pairs({ status = "paused", next_run_time = fmt(T0 + 3600 * S),
            trigger_args = { run_date = fmt(T0 + 3600 * S) }, timezone = "Europe/Paris" }) do
          naming("invalid_state", "'" .. k .. "'", s.update_job, s, "j01", { [k] = v })
        end
        assert.are.same(before, store:get_job("j01"))
        local j = s:update_job("j01", { priority = 7, metadata = { note = "hi" } })
        assert.are.equal(7, j.priority)
        assert.are.same({ note = "hi" }, j.metadata)
        for _, k in ipairs({ "status", "claimed_by", "lease_until", "next_run_time" }) do
          assert.are.equal(before[k], j[k], k)
        end
        g.open = true
        wait(function() return store:get_job("j01") == nil end, "the run did not complete")
        assert.are.equal(1, s:stats().succeeded)
      end)

      it("merge metadata key by key, remove keys set to null, and replace it on request", function()
        local s = sched()
        s:every { minutes = 5 }:config { job_id = "m",
          metadata = { tenant_id = "acme", region = "us", limits = { a = 1, b = 2 } } }:run("h")
        local j = s:update_job("m", { metadata = { region = "eu", limits = { a = 3 } } })
        local want = { tenant_id = "acme", region = "eu", limits = { a = 3 } }
        assert.are.same(want, j.metadata)
        assert.are.same(want, store:get_job("m").metadata)
        assert.are.same({ "m" }, H.ids(s:query_jobs({ ["metadata.tenant_id"] = "acme" })))
        j = s:update_job("m", { metadata = { region = null } })
        assert.are.same({ tenant_id = "acme", limits = { a = 3 } }, j.metadata)
        j = s:update_job("m", { metadata = { only = 1 } }, { metadata = "replace" })
        assert.are.same({ only = 1 }, j.metadata)
        assert.are.same({ only = 1 }, store:get_job("m").metadata)
        j = s:update_job("m", { metadata = { other = 2 } }, { metadata = "merge" })
        assert.are.same({ only = 1, other = 2 }, j.metadata)
      end)

      it("refuse unknown options and metadata modes, naming them", function()
        local s = sched()
        s:every { minutes = 5 }:config { job_id = "o", metadata = { tenant_id = "acme" } }:run("h")
        local before = store:get_job("o")
        naming("invalid", "'metdata'", s.update_job, s, "o", { metadata = { x = 1 } },
          { metdata = "replace" })
        naming("invalid", "'metadata'", s.update_job, s, "o", { metadata = { x = 1 } },
          { metadata = "swap" })
        naming("invalid", "options", s.update_job, s, "o", { name = "x" }, "replace")
        assert.are.same(before, store:get_job("o"))
      end)
    end)

    describe("keep_completed", function()
      local KEEP = 3600

      local function completed_ids(s)
        return H.ids(s:query_jobs({ status = "completed" }))
      end

      it("keeps a one-shot job that succeeds with status completed, and never runs it again", function()
        local s, ran = recording_sched { keep_completed = KEEP }
        due_job(s, "once", T0, "h", { metadata = { tenant_id = "acme" } })
        s:every { hours = 1 }:config { job_id = "every" }:run("h")
        s:start()
        wait(function() return field("once", "status") == "completed" end,
          "the job was not kept as completed")
        local j = store:get_job("once")
        assert.is_nil(j.next_run_time)
        assert.is_nil(j.claimed_by)
        assert.is_nil(j.lease_until)
        assert.are.equal("ok", j.last_outcome)
        assert.are.equal(T0, H.t(j.last_run_at))
        assert.are.equal(T0, H.t(j.last_run_time))
        assert.are.equal(1, j.attempt)
        assert.are.same({ tenant_id = "acme" }, j.metadata)
        assert.are.same({ "once" }, completed_ids(s))
        assert.are.equal(1, s:count_jobs({ status = "completed" }))
        assert.are.equal(1, s:count_jobs({ status = "completed", ["metadata.tenant_id"] = "acme" }))
        assert.are.equal(1, s:stats().succeeded)
        -- A recurring job goes on with its schedule.
        clock.now = T0 + 3600 * S
        s:tick()
        wait(function() return #ran == 2 end, "the interval job did not run")
        settle(s)
        table.sort(ran)
        assert.are.same({ "every", "once" }, ran)
        assert.are.equal("scheduled", field("every", "status"))
        assert.are.same({ "once" }, completed_ids(s))
      end)

      it("is off by default: a one-shot job that succeeds is deleted", function()
        local s, ran = recording_sched()
        due_job(s, "once", T0)
        s:start()
        wait(function() return store:get_job("once") == nil end, "the job was not deleted")
        assert.are.same({ "once" }, ran)
        assert.are.equal(0, s:count_jobs({ status = "completed" }))
      end)

      it("leaves a one-shot job that fails failed", function()
        local s = sched { keep_completed = KEEP }
        s:handler("boom", function() error("boom") end)
        due_job(s, "bad", T0, "boom")
        s:start()
        wait(function() return field("bad", "status") == "failed" end, "the job did not fail")
        assert.are.equal("error", field("bad", "last_outcome"))
        assert.are.same({}, completed_ids(s))
      end)

      it("deletes completed jobs once keep_completed has passed since their last write", function()
        local s, ran = recording_sched { keep_completed = KEEP }
        due_job(s, "old", T0)
        s:start()
        wait(function() return field("old", "status") == "completed" end, "the job was not kept")
        -- updated_at is the store's clock; the scheduler's is moved around it.
        local written = H.t(field("old", "updated_at"))
        clock.now = written + (KEEP - 60) * S
        settle(s)
        assert.are.equal("completed", field("old", "status"), "deleted before keep_completed passed")
        clock.now = written + 2 * KEEP * S
        s:tick()
        wait(function() return store:get_job("old") == nil end, "the completed job was not deleted")
        assert.are.same({ "old" }, ran)
        assert.are.equal(1, s:stats().expired)
      end)

      it("lets run_job_now run a completed job again; pause, resume and retry refuse it", function()
        local s, ran = recording_sched { keep_completed = KEEP }
        due_job(s, "again", T0)
        s:start()
        wait(function() return field("again", "status") == "completed" end, "the job was not kept")
        for _, m in ipairs({ "pause_job", "resume_job", "retry_job" }) do
          local err = U.assert_error("invalid_state", s[m], s, "again")
          assert.truthy(err.message:find("completed", 1, true), err.message)
        end
        local j = s:run_job_now("again")
        assert.are.equal("scheduled", j.status)
        wait(function() return #ran == 2 and field("again", "status") == "completed" end,
          "the job did not run again")
        assert.are.equal(2, field("again", "attempt"))
      end)
    end)

    describe("tenant-scoped schedulers", function()
      local ACME = { ["metadata.tenant_id"] = "acme" }
      local BETA = { ["metadata.tenant_id"] = "beta" }
      local ACME_BETA = { ["metadata.tenant_id"] = { ["$in"] = { "acme", "beta" } } }
      local function tenant(t) return t and { tenant_id = t } or nil end

      -- Creates jobs through an unscoped scheduler that never starts, so
      -- that no scheduler under test is warned about them.
      local function creator(storage)
        return sched { storage = storage or store }
      end

      local function status_of(ids)
        local out = {}
        for _, id in ipairs(ids) do out[id] = field(id, "status") or "gone" end
        return out
      end

      it("run only the jobs their filters match", function()
        local c = creator()
        local s, ran = recording_sched { filters = ACME }
        due_job(c, "a1", T0, "h", { metadata = tenant("acme") })
        due_job(c, "a2", T0 - 10 * S, "h", { metadata = { tenant_id = "acme", region = "eu" } })
        due_job(c, "b1", T0 - 20 * S, "h", { metadata = tenant("beta"), priority = 9 })
        due_job(c, "n1", T0 - 30 * S)
        due_job(c, "x1", T0 - 30 * S, "h", { metadata = { tenant = "acme" } })
        s:start()
        wait(function() return #ran == 2 end, "the acme jobs did not run")
        settle(s, tenant("acme"))
        table.sort(ran)
        assert.are.same({ "a1", "a2" }, ran)
        assert.are.same({ a1 = "gone", a2 = "gone", b1 = "scheduled", n1 = "scheduled",
          x1 = "scheduled" }, status_of({ "a1", "a2", "b1", "n1", "x1" }))
        assert.are.equal(3, s:stats().claimed) -- and the probe
      end)

      -- Each scheduler records the jobs it ran; every job must have run
      -- once, on a scheduler whose filters it matches.
      local function run_everything(specs, jobs)
        local by = {}
        local c = creator()
        for id, t in pairs(jobs) do due_job(c, id, T0 - S, "h", { metadata = tenant(t) }) end
        local runs, total = {}, 0
        for i, sp in ipairs(specs) do
          local s = sched { storage = sp.storage, filters = sp.filters, polling_interval = 0.1 }
          s:handler("h", function(job)
            runs[job.job_id] = runs[job.job_id] or {}
            table.insert(runs[job.job_id], i)
            total = total + 1
            if total % 3 == 0 then chronis.sleep(0) end
          end)
          by[i] = s
        end
        for _, s in ipairs(by) do s:start() end
        wait(function() return store:count_jobs() == 0 end, "jobs left in the store", 60)
        chronis.run_until(0.2) -- room for a second run of any job
        local n, claimed = 0, 0
        for id, t in pairs(jobs) do
          n = n + 1
          local r = runs[id] or {}
          assert.are.equal(1, #r, ("job %s ran %d times"):format(id, #r))
          assert(specs[r[1]].accepts(t), ("job %s (tenant %s) ran on scheduler %d, outside its filters")
            :format(id, tostring(t), r[1]))
        end
        assert.are.equal(n, total)
        for _, s in ipairs(by) do claimed = claimed + s:stats().claimed end
        assert.are.equal(n, claimed)
        return runs, by
      end

      it("on one store, with disjoint filters, each run all of their tenant's jobs once", function()
        local jobs = {}
        for i = 1, 60 do jobs[("a%02d"):format(i)] = "acme" end
        for i = 1, 60 do jobs[("b%02d"):format(i)] = "beta" end
        local runs, by = run_everything({
          { filters = ACME, accepts = function(t) return t == "acme" end },
          { filters = BETA, storage = opts.reopen and second_handle() or store,
            accepts = function(t) return t == "beta" end },
        }, jobs)
        assert.are.equal(60, by[1]:stats().claimed)
        assert.are.equal(60, by[2]:stats().claimed)
        assert.truthy(runs.a01 and runs.b01)
      end)

      it("with overlapping filters ($in, and none) run every job exactly once", function()
        local jobs = {}
        for i = 1, 40 do
          jobs[("a%02d"):format(i)] = "acme"
          jobs[("b%02d"):format(i)] = "beta"
          jobs[("g%02d"):format(i)] = "gamma"
        end
        for i = 1, 10 do jobs[("n%02d"):format(i)] = false end
        local _, by = run_everything({
          { filters = ACME, accepts = function(t) return t == "acme" end },
          { filters = ACME_BETA, storage = opts.reopen and second_handle() or store,
            accepts = function(t) return t == "acme" or t == "beta" end },
          { accepts = function() return true end },
        }, jobs)
        -- Gamma's and the tenantless jobs have one scheduler that may run them.
        assert.is_true(by[3]:stats().claimed >= 50)
      end)

      it("do not spin while another tenant's job is due", function()
        -- Every claim, recovery and next-due request of the engine reads
        -- its clock. With a poll two minutes away and nothing of its own
        -- due, the scheduler waits; one that asked the store again and
        -- again would read it hundreds of times in the half second below.
        local reads = 0
        local function counting() reads = reads + 1; return clock.now end
        local c = creator()
        local s, ran = recording_sched { filters = ACME, clock = counting, polling_interval = 120 }
        due_job(c, "theirs", T0 - 60 * S, "h", { metadata = tenant("beta"), priority = 9 })
        s:start()
        settle(s, tenant("acme"))
        -- Writes of the foreign job wake the scheduler; it ignores them or
        -- makes one claim each.
        for i = 1, 5 do
          c:update_job("theirs", { priority = i })
          chronis.run_until(0.1)
        end
        reads = 0
        chronis.run_until(0.5)
        assert.is_true(reads < 50, ("the clock was read %d times in 0.5 s"):format(reads))
        assert.are.same({}, ran)
        assert.are.equal("scheduled", field("theirs", "status"))
        -- Its own jobs still run.
        due_job(c, "ours", T0 - S, "h", { metadata = tenant("acme") })
        s:tick()
        wait(function() return #ran == 1 end, "its own job did not run")
        assert.are.same({ "ours" }, ran)
      end)

      it("recover only the expired leases of jobs their filters match", function()
        local function orphan(id, t)
          return store:create_job {
            job_id = id, status = "running", claimed_by = "dead-node",
            lease_until = fmt(T0 - 10 * S), next_run_time = fmt(T0 - 15 * S),
            trigger_type = "date", trigger_args = { run_date = fmt(T0 - 15 * S) },
            func_name = "h", metadata = tenant(t),
          }
        end
        orphan("crashed_a", "acme")
        orphan("crashed_n")
        local sb, ran_b = recording_sched { filters = BETA }
        sb:start()
        settle(sb, tenant("beta"))
        -- A poll later, with the clock moved past every lease: still theirs.
        clock.now = T0 + 60 * S
        settle(sb, tenant("beta"))
        assert.are.same({}, ran_b)
        local a = store:get_job("crashed_a")
        assert.are.equal("running", a.status)
        assert.are.equal("dead-node", a.claimed_by)
        local sa, ran_a = recording_sched { filters = ACME }
        sa:start()
        wait(function() return #ran_a == 1 end, "the acme scheduler did not recover its job")
        settle(sa, tenant("acme"))
        assert.are.same({ "crashed_a" }, ran_a)
        assert.are.same({}, ran_b)
        assert.are.equal("running", field("crashed_n", "status"))
        assert.are.equal("dead-node", field("crashed_n", "claimed_by"))
      end)

      it("warn of a job created outside their filters and leave it to another", function()
        local logged = #H.logs -- the entries of earlier tests stay
        local s, ran = recording_sched { filters = ACME }
        s:start()
        due_job(s, "beta_job", T0 - S, "h", { metadata = tenant("beta") })
        due_job(s, "acme_job", T0 - S, "h", { metadata = tenant("acme") })
        wait(function() return #ran == 1 end, "its own job did not run")
        settle(s, tenant("acme"))
        assert.are.same({ "acme_job" }, ran)
        local warned = {}
        for i = logged + 1, #H.logs do
          local l = H.logs[i]
          if l.level == "warn" and l.msg:find("does not match this scheduler's filters", 1, true) then
            warned[#warned + 1] = l.job_id
          end
        end
        assert.are.same({ "beta_job" }, warned)
        assert.are.equal("scheduled", field("beta_job", "status"))
        local other, ran_other = recording_sched { filters = BETA }
        other:start()
        wait(function() return #ran_other == 1 end, "the beta scheduler did not run the job")
        assert.are.same({ "beta_job" }, ran_other)
      end)

      it("refuse filters on status, trigger, times or ids with 'invalid', naming the key", function()
        for key, v in pairs({ status = "scheduled", trigger_type = "date",
            next_run_time_lte = fmt(T0), next_run_time_gte = fmt(T0),
            updated_at_lte = fmt(T0), updated_at_gte = fmt(T0), job_id_in = { "a" } }) do
          U.assert_error_naming("invalid", "'" .. key .. "'", sched,
            { filters = { ["metadata.tenant_id"] = "acme", [key] = v } })
        end
      end)

      it("start their tenant's job created while they sleep, and no other, long before the poll", function()
        local s = sched { clock = false, polling_interval = 120, filters = ACME }
        local started = {}
        s:handler("h", function(job) started[#started + 1] = job.job_id end)
        s:start()
        settle(s, tenant("acme"))
        local c = creator()
        c:once(chronis.time.now() + 100000):config { job_id = "theirs", metadata = tenant("beta") }:run("h")
        c:once(chronis.time.now() + 200000):config { job_id = "ours", metadata = tenant("acme") }:run("h")
        wait(function() return #started == 1 end, "the job was not started before the poll")
        chronis.run_until(0.2)
        assert.are.same({ "ours" }, started)
      end)

      if opts.hints_across_handles then
        it("start their tenant's job created through another handle long before the poll", function()
          local s = sched { clock = false, polling_interval = 120, filters = ACME }
          local started = {}
          s:handler("h", function(job) started[#started + 1] = job.job_id end)
          s:start()
          settle(s, tenant("acme"))
          local c = creator(second_handle())
          c:once(chronis.time.now() + 200000):config { job_id = "elsewhere", metadata = tenant("acme") }
            :run("h")
          wait(function() return #started == 1 end, "the job was not started before the poll")
          assert.are.same({ "elsewhere" }, started)
        end)
      end
    end)

    describe("graceful stop", function()
      it("finishes running handlers, returns unstarted claims and can start again", function()
        local s = sched { max_workers = 1 }
        local started, finished = {}, {}
        s:handler("h", function(job)
          started[#started + 1] = job.job_id
          chronis.sleep(0.2)
          finished[#finished + 1] = job.job_id
        end)
        due_job(s, "a", T0, "h", { priority = 9 })
        due_job(s, "b", T0, "h", { priority = 5 })
        due_job(s, "c", T0, "h", { priority = 1 })
        s:start()
        wait(function() return #started == 1 end)
        assert.are.equal(2, s:get_queue_status().pending)
        local summary = s:stop()
        assert.are.same({ returned = 2, killed = 0, finished = 1 }, summary)
        assert.are.equal("stopped", s:state())
        assert.are.same({ "a" }, finished)
        assert.is_nil(store:get_job("a"))
        for _, id in ipairs({ "b", "c" }) do
          local j = store:get_job(id)
          assert.are.equal("scheduled", j.status)
          assert.is_nil(j.claimed_by)
          assert.is_nil(j.lease_until)
        end
        -- Stopped: nothing is claimed any more.
        chronis.run_until(0.1)
        assert.are.same({ "a" }, started)
        s:start()
        wait(function() return store:count_jobs() == 0 end)
        assert.are.same({ "a", "b", "c" }, finished)
      end)

      it("stops handlers still running after shutdown_grace and gives their jobs back", function()
        drain = true
        local s = sched { shutdown_grace = 0.1 }
        local resumed = false
        s:handler("h", function()
          chronis.sleep(1.5)
          resumed = true
        end)
        due_job(s, "k", T0)
        s:start()
        wait(function() return #s:get_queue_status().in_flight_job_ids == 1 end)
        local summary = s:stop()
        assert.is_false(resumed)
        local j = store:get_job("k")
        assert.are.equal("scheduled", j.status)
        assert.is_nil(j.claimed_by)
        assert.is_nil(j.lease_until)
        -- killed, returned (never started) and finished do not overlap.
        assert.are.same({ returned = 0, killed = 1, finished = 0 }, summary)
      end)

      it("runs new jobs after a restart", function()
        local s, ran = recording_sched()
        s:start()
        s:stop()
        due_job(s, "x", T0)
        chronis.run_until(0.05)
        assert.are.same({}, ran)
        s:start()
        wait(function() return #ran == 1 end)
        s:stop()
        s:start()
        due_job(s, "y", T0)
        wait(function() return #ran == 2 end)
        assert.are.same({ "x", "y" }, ran)
      end)
    end)

    describe("handlers", function()
      it("may call the store and schedule a follow-up job", function()
        local s = sched()
        local seen_status, followed
        s:handler("first", function(job)
          seen_status = s:get_job(job.job_id).status
          chronis.sleep(0.01) -- resumed from the loop, then more store calls
          s:once(clock.now + 10 * S):config { job_id = "follow" }:run("second", { from = job.job_id })
          assert(s:count_jobs({ status = "scheduled" }) >= 1)
        end)
        s:handler("second", function(job) followed = job.kwargs.from end)
        s:once(T0):config { job_id = "lead" }:run("first")
        s:start()
        wait(function() return store:get_job("lead") == nil end, "the lead job did not finish")
        assert.are.equal("running", seen_status)
        assert.are.equal("scheduled", store:get_job("follow").status)
        clock.now = T0 + 10 * S
        s:tick()
        wait(function() return followed ~= nil end, "the follow-up did not run")
        assert.are.equal("lead", followed)
        assert.are.equal(0, s:stats().failed)
      end)
    end)
  end)

  -- The scheduling semantics users expect (docs/engine.md, "Semantics"),
  -- one file per topic, on the same store and options.
  for _, topic in ipairs { "failure", "catchup", "overlap", "control", "reconcile", "unique",
    "queues" } do
    require("support.semantics." .. topic)(name, factory, opts)
  end
end
