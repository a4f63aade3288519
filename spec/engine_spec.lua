-- The scheduler engine (docs/engine.md) seen from Lua: priorities,
-- backpressure, wake-ups, leases, misfires, retries, timeouts, callbacks,
-- the handler's view of a job, graceful stop and two schedulers sharing a
-- store. Schedules run on a fake clock (`clock` option, sched:tick()); only
-- the wake-up check measures real time.
local chronis = require "chronis"
local H = require "support.engine_helper"

local S, T0 = H.S, H.T0
local fmt = chronis.time.format

-- A date job of `s` due at `at` (µs) running handler `func`.
local function due_job(s, id, at, func, fields)
  local f = { job_id = id, func_name = func or "h", run_date = fmt(at) }
  for k, v in pairs(fields or {}) do f[k] = v end
  return s:create_date_job(f)
end

local function count_status(s, status)
  return s:count_jobs({ status = status })
end

describe("engine", function()
  after_each(H.cleanup)

  describe("priorities", function()
    it("claims and starts the higher priority first, even when a lower one is earlier", function()
      local clock = H.fake_clock()
      local s = H.scheduler { clock = clock.fn, max_workers = 1, max_queue_size = 2 }
      local g = H.gate()
      s:handler("h", function(job) g:pass(job) end)
      due_job(s, "p1", T0 - 50 * S, "h", { priority = 1 })
      due_job(s, "p3", T0 - 40 * S, "h", { priority = 3 })
      due_job(s, "p10", T0 - 5 * S, "h", { priority = 10 })
      due_job(s, "p7", T0 - 10 * S, "h", { priority = 7 })
      s:start()
      H.wait(function() return #g.entered == 1 end)
      chronis.run_until(0.05) -- room for a wrong engine to start or claim more
      local st = s:get_queue_status()
      assert.are.same({ "p10" }, st.in_flight_job_ids)
      assert.are.equal(1, st.pending)
      -- The two claimed are the two highest priorities.
      assert.are.same({ "p10", "p7" }, H.ids(s:query_jobs({ status = "running" })))
      assert.are.same({ "p1", "p3" }, H.ids(s:query_jobs({ status = "scheduled" })))
      g.open = true
      H.wait(function() return s:count_jobs() == 0 end)
      assert.are.same({ "p10", "p7", "p3", "p1" }, g.entered)
    end)

    for _, qsize in ipairs({ 1, 50 }) do
      it(("starts the earlier next_run_time first within a priority (max_queue_size %d)"):format(qsize), function()
        local clock = H.fake_clock()
        local s = H.scheduler { clock = clock.fn, max_workers = 1, max_queue_size = qsize }
        local order = {}
        s:handler("h", function(job) order[#order + 1] = job.job_id end)
        due_job(s, "b", T0 - 10 * S)
        due_job(s, "d", T0 - 1 * S)
        due_job(s, "a", T0 - 30 * S)
        due_job(s, "c", T0 - 20 * S)
        due_job(s, "later", T0 + 10 * S) -- same priority, not due
        s:start()
        H.wait(function() return #order == 4 end)
        chronis.run_until(0.02)
        assert.are.same({ "a", "c", "b", "d" }, order)
        assert.are.equal("scheduled", s:get_job("later").status)
      end)
    end
  end)

  describe("backpressure", function()
    it("runs at most max_workers handlers and claims no more than max_queue_size", function()
      local clock = H.fake_clock()
      local s = H.scheduler { clock = clock.fn, max_workers = 2, max_queue_size = 5 }
      local g = H.gate()
      s:handler("h", function(job) g:pass(job) end)
      for i = 1, 10 do due_job(s, ("j%02d"):format(i), T0 - i * S) end
      s:start()
      H.wait(function() return #g.entered == 2 end)
      chronis.run_until(0.05)
      local st = s:get_queue_status()
      assert.are.equal(2, st.in_flight)
      assert.are.equal(3, st.pending)
      assert.are.equal(5, st.max_queue_size)
      assert.are.equal(0, st.available_slots)
      assert.are.equal(1, st.utilization)
      local inflight = st.in_flight_job_ids
      table.sort(inflight)
      local entered = { table.unpack(g.entered) }
      table.sort(entered)
      assert.are.same(entered, inflight)
      -- Full: nothing more claimed from the store.
      assert.are.equal(5, count_status(s, "running"))
      assert.are.equal(5, count_status(s, "scheduled"))
      g.open = true
      H.wait(function() return s:count_jobs() == 0 end)
      assert.are.equal(10, #g.entered)
      assert.are.equal(2, g.max_inside)
    end)

    it("reports a partly used queue", function()
      local clock = H.fake_clock()
      local s = H.scheduler { clock = clock.fn, max_workers = 2, max_queue_size = 5 }
      local g = H.gate()
      s:handler("h", function(job) g:pass(job) end)
      for i = 1, 3 do due_job(s, "j" .. i, T0 - i * S) end
      s:start()
      H.wait(function() return #g.entered == 2 end)
      chronis.run_until(0.02)
      local st = s:get_queue_status()
      assert.are.equal(2, st.in_flight)
      assert.are.equal(1, st.pending)
      assert.are.equal(2, st.available_slots)
      assert.is_true(math.abs(st.utilization - 0.6) < 1e-9, tostring(st.utilization))
      assert.are.equal(2, #st.in_flight_job_ids)
      g.open = true
      H.wait(function() return s:count_jobs() == 0 end)
      local idle = s:get_queue_status()
      assert.are.equal(0, idle.in_flight)
      assert.are.equal(0, idle.pending)
      assert.are.equal(5, idle.available_slots)
      assert.are.equal(0, idle.utilization)
      assert.are.same({}, idle.in_flight_job_ids)
    end)

    it("defaults to 20 workers and a queue of max_workers x 5", function()
      local clock = H.fake_clock()
      local s = H.scheduler { clock = clock.fn }
      assert.are.equal(100, s:get_queue_status().max_queue_size)
      assert.are.equal(15, H.scheduler({ max_workers = 3 }):get_queue_status().max_queue_size)
      local g = H.gate()
      s:handler("h", function(job) g:pass(job) end)
      for i = 1, 25 do due_job(s, ("j%02d"):format(i), T0 - i * S) end
      s:start()
      H.wait(function() return #g.entered == 20 end)
      chronis.run_until(0.05)
      local st = s:get_queue_status()
      assert.are.equal(20, st.in_flight)
      assert.are.equal(5, st.pending)
      assert.are.equal(75, st.available_slots)
      g.open = true
      H.wait(function() return s:count_jobs() == 0 end)
      assert.are.equal(20, g.max_inside)
    end)
  end)

  describe("wake-ups", function()
    -- The one real-time check: late by less than 100 ms, never early.
    local function assert_on_time(started, due)
      assert.is_not_nil(started, "the job did not start")
      local late = started - due
      assert.is_true(late >= 0, ("started %d µs early"):format(-late))
      assert.is_true(late < 100000, ("started %.1f ms late"):format(late / 1000))
    end

    it("starts a job due in 200 ms within 100 ms of its time with polling_interval 5", function()
      local s = H.scheduler { polling_interval = 5 }
      local started
      s:handler("h", function() started = chronis.time.now() end)
      local due = chronis.time.now() + 200000
      s:once(due):config { job_id = "soon" }:run("h")
      s:start()
      H.wait(function() return started ~= nil end, 3)
      assert_on_time(started, due)
    end)

    it("re-arms its timer when a job is created that is due sooner", function()
      local s = H.scheduler { polling_interval = 5 }
      local started = {}
      s:handler("h", function(job) started[job.job_id] = chronis.time.now() end)
      s:once(chronis.time.now() + 3 * S):config { job_id = "later" }:run("h")
      s:start()
      chronis.run_until(0.05) -- polled once: the timer now targets "later"
      local due = chronis.time.now() + 200000
      s:once(due):config { job_id = "soon" }:run("h")
      H.wait(function() return started.soon ~= nil end, 3)
      assert_on_time(started.soon, due)
      assert.is_nil(started.later)
    end)

    it("polls at least every polling_interval (default 1 s) when nothing wakes it", function()
      -- The fake clock moves without a store write, so only the poll timer
      -- can notice that the job became due.
      local clock = H.fake_clock()
      local s = H.scheduler { clock = clock.fn }
      local ran = false
      s:handler("h", function() ran = true end)
      due_job(s, "a", T0 + 3600 * S)
      s:start()
      chronis.run_until(0.05)
      assert.is_false(ran)
      clock.now = T0 + 3600 * S
      H.wait(function() return ran end, 3, "not polled within 3 s")
    end)
  end)

  describe("leases", function()
    it("claims a job with claimed_by = node id and lease_until = now + lease_seconds", function()
      local clock = H.fake_clock()
      local s = H.scheduler { clock = clock.fn, lease_seconds = 45 }
      local g = H.gate()
      s:handler("h", function(job) g:pass(job) end)
      due_job(s, "a", T0)
      s:start()
      H.wait(function() return #g.entered == 1 end)
      local j = s:get_job("a")
      assert.are.equal("running", j.status)
      assert.are.equal(s:node_id(), j.claimed_by)
      assert.are.equal(T0 + 45 * S, H.t(j.lease_until))
      g.open = true
      H.wait(function() return s:get_job("a") == nil end)
    end)

    it("extends the leases of running jobs with a heartbeat", function()
      local clock = H.fake_clock()
      local s = H.scheduler { clock = clock.fn, lease_seconds = 0.3 }
      local g = H.gate()
      s:handler("h", function(job) g:pass(job) end)
      due_job(s, "a", T0)
      s:start()
      H.wait(function() return #g.entered == 1 end)
      assert.are.equal(T0 + 300000, H.t(s:get_job("a").lease_until))
      for _, at in ipairs({ 100, 200 }) do
        clock.now = T0 + at * S
        H.wait(function()
          return H.t(s:get_job("a").lease_until) == T0 + at * S + 300000
        end, 2, "lease not extended")
        assert.are.equal("running", s:get_job("a").status)
        assert.are.equal(s:node_id(), s:get_job("a").claimed_by)
        assert.are.equal(1, #g.entered, "the job was recovered and started again")
      end
      g.open = true
      H.wait(function() return s:get_job("a") == nil end)
    end)

    local function orphan(store, id, lease_until, owner)
      return store:create_job {
        job_id = id, status = "running", claimed_by = owner or "dead-node",
        lease_until = fmt(lease_until), next_run_time = fmt(T0 - 5 * S),
        trigger_type = "date", trigger_args = { run_date = fmt(T0 - 5 * S) },
        func_name = "h",
      }
    end

    it("recovers a running job whose lease expired and runs it", function()
      local store = chronis.storage.memory()
      local clock = H.fake_clock()
      local s = H.scheduler { storage = store, clock = clock.fn }
      local ran = {}
      s:handler("h", function(job) ran[#ran + 1] = job.job_id end)
      orphan(store, "orphan", T0 - 10 * S)
      orphan(store, "alive", T0 + 600 * S, "other-node") -- lease still valid
      s:start()
      H.wait(function() return #ran == 1 end)
      chronis.run_until(0.05)
      assert.are.same({ "orphan" }, ran)
      assert.is_nil(store:get_job("orphan"))
      local alive = store:get_job("alive")
      assert.are.equal("running", alive.status)
      assert.are.equal("other-node", alive.claimed_by)
    end)

    it("recovers a lease that expires while it runs", function()
      local store = chronis.storage.memory()
      local clock = H.fake_clock()
      local s = H.scheduler { storage = store, clock = clock.fn }
      local ran = {}
      s:handler("h", function(job) ran[#ran + 1] = job.job_id end)
      s:start()
      chronis.run_until(0.02)
      orphan(store, "orphan", T0 + 20 * S)
      s:tick()
      chronis.run_until(0.02)
      assert.are.same({}, ran)
      assert.are.equal("running", store:get_job("orphan").status)
      clock.now = T0 + 21 * S
      s:tick()
      H.wait(function() return #ran == 1 end)
      assert.are.same({ "orphan" }, ran)
    end)

    it("never runs a job twice while it outlives lease_seconds in a live process", function()
      local store = chronis.storage.memory()
      local runs = {}
      local function h(job)
        runs[job.job_id] = (runs[job.job_id] or 0) + 1
        if job.job_id == "long" then chronis.sleep(1) end
      end
      -- s1 can hold one job only, so the probe below is s2's to run.
      local s1 = H.scheduler { storage = store, lease_seconds = 0.3, polling_interval = 0.1,
                               max_workers = 1, max_queue_size = 1 }
      local s2 = H.scheduler { storage = store, lease_seconds = 0.3, polling_interval = 0.1 }
      s1:handler("h", h)
      s2:handler("h", h)
      s1:once(chronis.time.now()):config { job_id = "long" }:run("h")
      s1:start()
      H.wait(function() return runs.long == 1 end)
      s2:start()
      s2:once(chronis.time.now() + 500000):config { job_id = "probe" }:run("h")
      H.wait(function() return store:get_job("long") == nil end, 4)
      chronis.run_until(0.4) -- a wrongly recovered second run would start here
      assert.are.equal(1, runs.long)
      assert.are.equal(1, runs.probe) -- s2 was polling (and recovering) meanwhile
      assert.are.equal(1, s2:stats().claimed) -- the probe only
    end)
  end)

  describe("misfires", function()
    local clock, s, runs

    before_each(function()
      clock = H.fake_clock()
      s = H.scheduler { clock = clock.fn }
      runs = {}
      s:handler("h", function(job)
        runs[#runs + 1] = { job_id = job.job_id, scheduled = job.scheduled_time, at = s:now() }
      end)
      s:start()
    end)

    local function ticks(n)
      for _ = 1, n or 1 do s:tick() end
    end

    it("counts a run as missed only when next_run_time + threshold < now (strict)", function()
      due_job(s, "at_limit", T0 - 60 * S, "h", { if_missed = "skip" })
      due_job(s, "past_limit", T0 - 60 * S - 1, "h", { if_missed = "skip" })
      due_job(s, "small_threshold", T0 - 31 * S, "h",
        { if_missed = "skip", misfire_threshold_seconds = 30 })
      ticks()
      assert.are.same({ "at_limit" }, H.ids(runs))
      assert.are.equal(0, s:count_jobs()) -- the skipped one-shots are gone too
      assert.are.equal(2, s:stats().skipped)
    end)

    it("skip: completes without running and advances past now (cron default)", function()
      local j = s:on { cron = "*/5 * * * *" }:config { job_id = "c" }:run("h")
      assert.are.equal("skip", j.if_missed)
      assert.are.equal(T0 + 300 * S, H.t(j.next_run_time))
      clock.now = H.t("2025-01-15T10:17:30Z")
      ticks(3)
      assert.are.same({}, runs)
      j = s:get_job("c")
      assert.are.equal("scheduled", j.status)
      assert.are.equal(H.t("2025-01-15T10:20:00Z"), H.t(j.next_run_time))
      assert.is_nil(j.last_run_time)
      assert.is_nil(j.claimed_by)
    end)

    it("skip: deletes a missed one-shot without running it", function()
      due_job(s, "d", T0 - 3600 * S, "h", { if_missed = "skip" })
      ticks(2)
      assert.are.same({}, runs)
      assert.is_nil(s:get_job("d"))
    end)

    it("run_once: runs an interval job once and takes the next time from now (default)", function()
      local j = s:every { minutes = 10 }:config { job_id = "i" }:run("h")
      assert.are.equal("run_once", j.if_missed)
      clock.now = H.t("2025-01-15T11:05:00Z")
      ticks(3)
      assert.are.equal(1, #runs)
      assert.are.equal("2025-01-15T10:10:00Z", runs[1].scheduled)
      j = s:get_job("i")
      local nxt = H.t(j.next_run_time)
      assert.is_true(nxt > clock.now, j.next_run_time)
      assert.is_true(nxt <= clock.now + 600 * S, j.next_run_time)
      assert.are.equal("2025-01-15T10:10:00Z", j.last_scheduled_time)
    end)

    it("run_once: runs a missed one-shot once and deletes it (default)", function()
      local j = s:once(T0 + 60 * S):config { job_id = "o" }:run("h")
      assert.are.equal("run_once", j.if_missed)
      clock.now = T0 + 3 * 3600 * S
      ticks(3)
      assert.are.same({ "o" }, H.ids(runs))
      assert.is_nil(s:get_job("o"))
    end)

    it("run_once: a missed cron job runs once and its next time is the first slot after now", function()
      s:on { cron = "*/5 * * * *" }:config { job_id = "c", if_missed = "run_once" }:run("h")
      clock.now = H.t("2025-01-15T10:17:30Z")
      ticks(3)
      assert.are.equal(1, #runs)
      assert.are.equal(H.t("2025-01-15T10:20:00Z"), H.t(s:get_job("c").next_run_time))
    end)

    it("run_all: cron catches up each missed slot once, then stops", function()
      s:on { minute = "*" }:config { job_id = "c", if_missed = "run_all" }:run("h")
      clock.now = H.t("2025-01-15T10:05:30Z")
      ticks(12)
      local scheduled = {}
      for i, r in ipairs(runs) do scheduled[i] = r.scheduled end
      assert.are.same({ "2025-01-15T10:01:00Z", "2025-01-15T10:02:00Z", "2025-01-15T10:03:00Z",
                        "2025-01-15T10:04:00Z", "2025-01-15T10:05:00Z" }, scheduled)
      local j = s:get_job("c")
      assert.are.equal("2025-01-15T10:06:00Z", j.next_run_time)
      assert.are.equal("scheduled", j.status)
      -- The loop's own ticks must not find anything either.
      chronis.run_until(0.1)
      assert.are.equal(5, #runs)
    end)

    it("run_all: an interval job runs each missed slot once", function()
      s:every { minutes = 10 }:config { job_id = "i", if_missed = "run_all" }:run("h")
      clock.now = H.t("2025-01-15T10:35:00Z")
      ticks(8)
      local scheduled = {}
      for i, r in ipairs(runs) do scheduled[i] = r.scheduled end
      assert.are.same({ "2025-01-15T10:10:00Z", "2025-01-15T10:20:00Z", "2025-01-15T10:30:00Z" },
        scheduled)
      assert.are.equal("2025-01-15T10:40:00Z", s:get_job("i").next_run_time)
    end)

    it("defaults: cron skip, interval and date run_once, threshold 60 s", function()
      local c = s:on { minute = 0 }:run("h")
      local i = s:every { seconds = 30 }:run("h")
      local d = s:once(T0 + S):run("h")
      assert.are.equal("skip", c.if_missed)
      assert.are.equal("run_once", i.if_missed)
      assert.are.equal("run_once", d.if_missed)
      assert.are.equal(60, c.misfire_threshold_seconds)
    end)

    it("ends (deletes) a job whose trigger has no further time, after one run", function()
      s:on { year = 2025, month = 1, day = 15, hour = 10, minute = 1 }:config { job_id = "last" }
        :run("h")
      clock.now = T0 + 60 * S
      ticks(3)
      assert.are.equal(1, #runs)
      assert.is_nil(s:get_job("last"))
      clock.now = T0 + 3600 * S
      ticks(2)
      assert.are.equal(1, #runs)
    end)

    it("ends a job whose only remaining slot was skipped", function()
      s:on { year = 2025, month = 1, day = 15, hour = 10, minute = 1 }:config { job_id = "last" }
        :run("h")
      clock.now = T0 + 3600 * S
      ticks(3)
      assert.are.same({}, runs)
      assert.is_nil(s:get_job("last"))
    end)
  end)

  describe("retries", function()
    it("backs off 60, 120, 240, ... capped at 3600 s, then fails and calls on_failure once", function()
      local clock = H.fake_clock()
      local failures = {}
      local s = H.scheduler { clock = clock.fn,
        on_failure = function(id, err) failures[#failures + 1] = { id = id, err = err } end }
      local seen = {}
      s:handler("boom", function(job)
        seen[#seen + 1] = { attempt = job.attempt, retry_count = job.retry_count }
        error("boom!")
      end)
      due_job(s, "r", T0, "boom", { max_retries = 8, retry_delay_seconds = 60 })
      s:start()
      s:tick()
      for n, delay in ipairs({ 60, 120, 240, 480, 960, 1920, 3600, 3600 }) do
        local j = s:get_job("r")
        assert.are.equal("scheduled", j.status)
        assert.are.equal(n, j.retry_count)
        assert.are.equal(clock.now + delay * S, H.t(j.next_run_time),
          ("retry %d: expected a delay of %d s"):format(n, delay))
        assert.is_nil(j.claimed_by)
        assert.are.same({}, failures)
        clock.now = H.t(j.next_run_time)
        s:tick()
      end
      local j = s:get_job("r")
      assert.are.equal("failed", j.status)
      assert.is_nil(j.next_run_time)
      assert.are.equal(9, #seen)
      for i, x in ipairs(seen) do
        assert.are.same({ attempt = i, retry_count = i - 1 }, x)
      end
      assert.are.equal(1, #failures)
      assert.are.equal("r", failures[1].id)
      assert.truthy(tostring(failures[1].err.message):find("boom!", 1, true))
      -- A failed job is never polled again.
      clock.now = clock.now + 86400 * S
      s:tick()
      assert.are.equal(9, #seen)
    end)

    it("a success resets retry_count and sets last_run_time and last_scheduled_time", function()
      local clock = H.fake_clock()
      local s = H.scheduler { clock = clock.fn }
      local calls = 0
      s:handler("flaky", function()
        calls = calls + 1
        if calls == 1 then error("transient") end
      end)
      s:every { hours = 1 }:config { job_id = "f", retry = 3, retry_delay = 60 }:run("flaky")
      s:start()
      clock.now = T0 + 3600 * S
      s:tick()
      local j = s:get_job("f")
      assert.are.equal(1, j.retry_count)
      assert.is_nil(j.last_run_time)
      local retry_at = H.t(j.next_run_time)
      assert.are.equal(clock.now + 60 * S, retry_at)
      clock.now = retry_at + 5 * S
      s:tick()
      assert.are.equal(2, calls)
      j = s:get_job("f")
      assert.are.equal("scheduled", j.status)
      assert.are.equal(0, j.retry_count)
      assert.are.equal(retry_at + 5 * S, H.t(j.last_run_time))
      assert.are.equal(retry_at, H.t(j.last_scheduled_time))
      assert.is_true(H.t(j.next_run_time) > clock.now)
      assert.are.equal(2, j.attempt)
    end)
  end)

  describe("timeouts", function()
    local function timeout_sched()
      local clock = H.fake_clock()
      local failures = {}
      local s = H.scheduler { clock = clock.fn,
        on_failure = function(id, err) failures[#failures + 1] = { id = id, err = err } end }
      local ok_runs = 0
      s:handler("ok", function() ok_runs = ok_runs + 1 end)
      return s, clock, failures, function() return ok_runs end
    end

    it("cancels a handler waiting in chronis.sleep at its deadline", function()
      finally(H.drain) -- a leaked sleep timer is the next test's subject
      local s, _, failures, ok_runs = timeout_sched()
      local resumed = false
      s:handler("sleepy", function()
        chronis.sleep(10)
        resumed = true
      end)
      due_job(s, "y", T0, "sleepy", { timeout_seconds = 1 })
      s:start()
      H.wait(function() return #failures == 1 end, 4)
      assert.are.equal("y", failures[1].id)
      assert.are.equal("timeout", failures[1].err.code)
      assert.are.equal("failed", s:get_job("y").status)
      assert.is_false(resumed)
      assert.are.same({}, s:get_queue_status().in_flight_job_ids)
      -- The host keeps running jobs.
      due_job(s, "after", T0, "ok")
      H.wait(function() return ok_runs() == 1 end)
    end)

    it("leaves no timer of the cancelled chronis.sleep behind", function()
      finally(H.drain)
      local s, _, failures = timeout_sched()
      s:handler("sleepy", function() chronis.sleep(2.5) end)
      due_job(s, "y", T0, "sleepy", { timeout_seconds = 1 })
      s:start()
      H.wait(function() return #failures == 1 end, 4)
      assert.are.equal("timeout", failures[1].err.code)
      s:stop(0)
      assert.are.equal(0, require("chronis.core").active_handles(),
        "the cancelled chronis.sleep left its timer running")
    end)

    it("stops a CPU-bound handler, and retries apply to the timeout", function()
      local s, clock, failures, ok_runs = timeout_sched()
      local runs = 0
      s:handler("spin", function()
        runs = runs + 1
        while true do end
      end)
      due_job(s, "cpu", T0, "spin", { timeout_seconds = 1, max_retries = 1, retry_delay_seconds = 60 })
      s:start()
      H.wait(function() return runs == 1 and s:get_job("cpu").status == "scheduled" end, 4)
      local j = s:get_job("cpu")
      assert.are.equal(1, j.retry_count)
      assert.are.equal(clock.now + 60 * S, H.t(j.next_run_time))
      assert.are.same({}, failures)
      clock.now = H.t(j.next_run_time)
      s:tick()
      H.wait(function() return #failures == 1 end, 4)
      assert.are.equal(2, runs)
      assert.are.equal("timeout", failures[1].err.code)
      assert.are.equal("failed", s:get_job("cpu").status)
      due_job(s, "after", clock.now, "ok")
      H.wait(function() return ok_runs() == 1 end)
    end)

    it("stops a CPU-bound handler that wraps its loop in pcall", function()
      local s, _, failures, ok_runs = timeout_sched()
      local caught = 0
      s:handler("sly", function()
        while true do
          pcall(function() while true do end end)
          caught = caught + 1
        end
      end)
      due_job(s, "p", T0, "sly", { timeout_seconds = 1 })
      s:start()
      H.wait(function() return #failures == 1 end, 4)
      assert.are.equal("timeout", failures[1].err.code)
      assert.are.equal(0, caught, "the kill was caught by pcall")
      assert.are.equal("failed", s:get_job("p").status)
      due_job(s, "after", T0, "ok")
      H.wait(function() return ok_runs() == 1 end)
    end)

    it("does not count time spent waiting in the queue", function()
      local failures = {}
      local s = H.scheduler { clock = H.fake_clock().fn, max_workers = 1,
        on_failure = function(id, err) failures[#failures + 1] = { id = id, err = err } end }
      local done = {}
      s:handler("nap", function(job)
        chronis.sleep(job.kwargs.secs)
        done[#done + 1] = job.job_id
      end)
      -- "first" holds the only worker for 1.3 s while "second" (timeout 1 s,
      -- 0.3 s of work) waits in the queue.
      s:once(T0):config { job_id = "first", priority = 10 }:run("nap", { secs = 1.3 })
      s:once(T0):config { job_id = "second", priority = 1, timeout = 1 }:run("nap", { secs = 0.3 })
      s:start()
      H.wait(function() return #done == 2 or #failures > 0 end, 5)
      assert.are.same({}, failures)
      assert.are.same({ "first", "second" }, done)
    end)
  end)

  describe("callbacks", function()
    local clock, s, calls

    before_each(function()
      clock = H.fake_clock()
      calls = {}
      s = H.scheduler { clock = clock.fn,
        on_success = function(id, job)
          calls[#calls + 1] = { "global_success", id, job and job.job_id }
        end,
        on_failure = function(id, err, job)
          calls[#calls + 1] = { "global_failure", id, err and err.code, job and job.job_id }
        end }
      s:handler("ok", function() end)
      s:handler("bad", function() error("nope") end)
      s:start()
    end)

    it("calls on_success(job_id, job): the job's own first, then the global one", function()
      s:once(T0):config {
        job_id = "a",
        on_success = function(id, job) calls[#calls + 1] = { "job_success", id, job.job_id } end,
      }:run("ok")
      s:tick()
      assert.are.same({ { "job_success", "a", "a" }, { "global_success", "a", "a" } }, calls)
    end)

    it("calls on_failure(job_id, err, job) only once retries are exhausted, job's first", function()
      local errs = {}
      s:once(T0):config {
        job_id = "b", retry = 1, retry_delay = 10,
        on_failure = function(id, err, job)
          calls[#calls + 1] = { "job_failure", id, err.code, job.job_id }
          errs[#errs + 1] = err
        end,
        on_success = function() calls[#calls + 1] = { "job_success" } end,
      }:run("bad")
      s:tick()
      assert.are.same({}, calls)
      clock.now = T0 + 10 * S
      s:tick()
      assert.are.equal("job_failure", calls[1] and calls[1][1])
      assert.are.equal(2, #calls)
      assert.are.equal("b", calls[1][2])
      assert.are.equal("b", calls[1][4])
      assert.are.equal("global_failure", calls[2][1])
      assert.are.equal("b", calls[2][2])
      assert.are.equal("b", calls[2][4])
      assert.truthy(tostring(errs[1].message):find("nope", 1, true))
      assert.are.equal(calls[1][3], calls[2][3])
    end)

    it("takes per-job callbacks from create_job options too", function()
      local got
      s:create_date_job { job_id = "c", func_name = "ok", run_date = fmt(T0),
        on_success = function(id) got = id end }
      s:tick()
      assert.are.equal("c", got)
    end)

    it("logs an error raised by a callback with the job id and changes nothing else", function()
      local logs = {}
      s = H.scheduler { clock = clock.fn,
        logger = function(level, msg, fields)
          logs[#logs + 1] = { level = level, msg = msg, job_id = fields and fields.job_id }
        end,
        on_success = function(id) calls[#calls + 1] = { "global_success", id } end }
      s:handler("ok", function() end)
      s:start()
      s:every { minutes = 1 }:config {
        job_id = "cb",
        on_success = function() error("callback exploded") end,
      }:run("ok")
      clock.now = T0 + 60 * S
      s:tick()
      assert.are.same({ { "global_success", "cb" } }, calls)
      local found
      for _, l in ipairs(logs) do
        if l.msg:find("callback exploded", 1, true) then found = l end
      end
      assert.is_not_nil(found, "callback error not logged")
      assert.are.equal("error", found.level)
      assert.are.equal("cb", found.job_id)
      local j = s:get_job("cb")
      assert.are.equal("scheduled", j.status)
      assert.are.equal(0, j.retry_count)
      assert.are.equal(T0 + 120 * S, H.t(j.next_run_time))
      assert.are.equal(1, s:stats().succeeded)
      assert.are.equal(0, s:stats().failed)
    end)
  end)

  describe("handlers", function()
    local clock, s

    before_each(function()
      clock = H.fake_clock()
      s = H.scheduler { clock = clock.fn }
      s:start()
    end)

    it("receive the job: job_id, name, args, kwargs, metadata, scheduled_time, attempt, retry_count", function()
      local got
      s:handler("h", function(job) got = job end)
      s:once(T0 - 5 * S):config { job_id = "sig", name = "Signature", metadata = { tenant = "acme" } }
        :run("h", { to = "a@b" }, { 1, "two" })
      s:tick()
      assert.is_table(got)
      assert.are.equal("sig", got.job_id)
      assert.are.equal("Signature", got.name)
      assert.are.same({ 1, "two" }, got.args)
      assert.are.same({ to = "a@b" }, got.kwargs)
      assert.are.same({ tenant = "acme" }, got.metadata)
      assert.are.equal("2025-01-15T09:59:55Z", got.scheduled_time)
      assert.are.equal(1, got.attempt)
      assert.are.equal(0, got.retry_count)
    end)

    it("receive empty args, kwargs and metadata when the job has none", function()
      local got
      s:handler("h", function(job) got = job end)
      s:once(T0):config { job_id = "bare" }:run("h")
      s:tick()
      assert.are.same({}, got.args)
      assert.are.same({}, got.kwargs)
      assert.are.same({}, got.metadata)
      assert.are.equal("H", got.name)
    end)

    for _, case in ipairs({
      { "a string", function() error("plain failure") end, "plain failure" },
      { "a number", function() error(42) end, "42" },
      { "a table with a message", function() error({ code = "E_INPUT", message = "bad input" }) end,
        "bad input" },
      { "a table with __tostring", function()
          error(setmetatable({}, { __tostring = function() return "custom text" end }))
        end, "custom text" },
    }) do
      it("fail the run with the message of " .. case[1] .. " they raise", function()
        local failure
        s = H.scheduler { clock = clock.fn,
          on_failure = function(id, err) failure = err end }
        s:handler("h", case[2])
        s:start()
        s:once(T0):config { job_id = "e" }:run("h")
        s:tick()
        assert.is_not_nil(failure)
        assert.are.equal("failed", s:get_job("e").status)
        assert.are_not.equal("timeout", failure.code)
        assert.truthy(tostring(failure.message):find(case[3], 1, true),
          ("message %q lacks %q"):format(tostring(failure.message), case[3]))
      end)
    end

    it("fail with handler_not_found when no handler has the job's name", function()
      local failure
      s = H.scheduler { clock = clock.fn, on_failure = function(id, err) failure = err end }
      s:start()
      s:once(T0):config { job_id = "nh" }:run("missing_handler")
      s:tick()
      assert.are.equal("handler_not_found", failure and failure.code)
      assert.truthy(failure.message:find("missing_handler", 1, true))
    end)

    it("may sleep with chronis.sleep while other handlers run", function()
      local events = {}
      s:handler("napper", function(job)
        events[#events + 1] = job.job_id .. ":start"
        chronis.sleep(0.05)
        events[#events + 1] = job.job_id .. ":end"
      end)
      s:once(T0):config { job_id = "a", priority = 9 }:run("napper")
      s:once(T0):config { job_id = "b", priority = 1 }:run("napper")
      s:tick()
      H.wait(function() return #events == 4 end)
      assert.are.same({ "a:start", "b:start", "a:end", "b:end" }, events)
    end)

    it("may call the store and schedule a follow-up job", function()
      local seen_status, followed
      s:handler("first", function(job)
        seen_status = s:get_job(job.job_id).status
        chronis.sleep(0.01) -- resumed from the loop, then more store calls
        s:once(clock.now + 10 * S):config { job_id = "follow" }:run("second", { from = job.job_id })
        assert(s:count_jobs({ status = "scheduled" }) >= 1)
      end)
      s:handler("second", function(job) followed = job.kwargs.from end)
      s:once(T0):config { job_id = "lead" }:run("first")
      s:tick()
      H.wait(function() return s:get_job("lead") == nil end)
      assert.are.equal("running", seen_status)
      assert.are.equal("scheduled", s:get_job("follow").status)
      clock.now = T0 + 10 * S
      s:tick()
      assert.are.equal("lead", followed)
      assert.are.equal(0, s:stats().failed)
    end)
  end)

  describe("store calls from handlers", function()
    it("yield while the store works, so other handlers run meanwhile", function()
      local store = H.slow_store({ create_job = 0.1, get_job = 0.05 })
      local s = H.scheduler { storage = store, polling_interval = 0.1 }
      local events = {}
      s:handler("lead", function(job)
        events[#events + 1] = "lead:before"
        s:once(chronis.time.now() + 3600 * S):config { job_id = "follow" }:run("x", { from = job.job_id })
        events[#events + 1] = "lead:created"
        assert(s:get_job("follow"))
        events[#events + 1] = "lead:after"
      end)
      s:handler("quick", function() events[#events + 1] = "quick" end)
      local now = chronis.time.now()
      s:once(now):config { job_id = "lead", priority = 9 }:run("lead")
      s:once(now):config { job_id = "quick", priority = 1 }:run("quick")
      s:start()
      H.wait(function() return #events == 4 end)
      assert.are.same({ "lead:before", "quick", "lead:created", "lead:after" }, events)
      assert.are.same({ from = "lead" }, s:get_job("follow").kwargs)
      assert.are.equal(0, s:stats().failed)
    end)
  end)

  describe("chronis.sleep", function()
    it("waits the time asked even when Lua ran for a while since the loop last did", function()
      chronis.sleep(0) -- the loop runs once and reads its clock
      local busy = chronis.time.now()
      while chronis.time.now() - busy < 200000 do end -- 0.2 s of Lua, no loop
      local t0 = chronis.time.now()
      chronis.sleep(0.3)
      local waited = (chronis.time.now() - t0) / 1e6
      -- The loop's clock counts whole milliseconds: up to 1 ms may be lost.
      assert.is_true(waited >= 0.299, ("chronis.sleep(0.3) returned after %.3f s"):format(waited))
    end)
  end)

  describe("chronis.run_until", function()
    it("returns true once the predicate holds", function()
      local flag = false
      chronis.spawn(function()
        chronis.sleep(0.02)
        flag = true
      end)
      assert.is_true(chronis.run_until(function() return flag end, 5))
      assert.is_true(flag)
    end)

    it("returns false when the predicate never holds within the limit", function()
      assert.is_false(chronis.run_until(function() return false end, 0.05))
    end)

    it("drives the loop for a number of seconds", function()
      local flag = false
      chronis.spawn(function()
        chronis.sleep(0.02)
        flag = true
      end)
      assert.is_true(chronis.run_until(0.1))
      assert.is_true(flag)
    end)
  end)

  describe("graceful stop", function()
    it("finishes running handlers, returns unstarted claims and can start again", function()
      local clock = H.fake_clock()
      local s = H.scheduler { clock = clock.fn, max_workers = 1 }
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
      H.wait(function() return #started == 1 end)
      assert.are.equal(2, s:get_queue_status().pending)
      local summary = s:stop()
      assert.are.same({ returned = 2, killed = 0, finished = 1 }, summary)
      assert.are.equal("stopped", s:state())
      assert.are.same({ "a" }, finished)
      assert.is_nil(s:get_job("a"))
      for _, id in ipairs({ "b", "c" }) do
        local j = s:get_job(id)
        assert.are.equal("scheduled", j.status)
        assert.is_nil(j.claimed_by)
        assert.is_nil(j.lease_until)
      end
      -- Stopped: nothing is claimed any more.
      chronis.run_until(0.1)
      assert.are.same({ "a" }, started)
      s:start()
      H.wait(function() return s:count_jobs() == 0 end)
      assert.are.same({ "a", "b", "c" }, finished)
    end)

    it("stops handlers still running after shutdown_grace and gives their jobs back", function()
      finally(H.drain)
      local clock = H.fake_clock()
      local s = H.scheduler { clock = clock.fn, shutdown_grace = 0.1 }
      local resumed = false
      s:handler("h", function()
        chronis.sleep(1.5)
        resumed = true
      end)
      due_job(s, "k", T0)
      s:start()
      H.wait(function() return #s:get_queue_status().in_flight_job_ids == 1 end)
      local summary = s:stop()
      assert.is_false(resumed)
      local j = s:get_job("k")
      assert.are.equal("scheduled", j.status)
      assert.is_nil(j.claimed_by)
      assert.is_nil(j.lease_until)
      -- killed, returned (never started) and finished do not overlap.
      assert.are.same({ returned = 0, killed = 1, finished = 0 }, summary)
    end)

    it("leaves no timer of a killed handler's chronis.sleep behind", function()
      finally(H.drain)
      local s = H.scheduler { clock = H.fake_clock().fn }
      s:handler("h", function() chronis.sleep(1) end)
      due_job(s, "k", T0)
      s:start()
      H.wait(function() return #s:get_queue_status().in_flight_job_ids == 1 end)
      assert.are.equal(1, s:stop(0.05).killed)
      assert.are.equal(0, require("chronis.core").active_handles(),
        "the killed handler's chronis.sleep left its timer running")
    end)

    it("returns an empty summary when nothing runs, and twice in a row", function()
      local s = H.scheduler { clock = H.fake_clock().fn }
      s:start()
      assert.are.same({ returned = 0, killed = 0, finished = 0 }, s:stop())
      assert.are.same({ returned = 0, killed = 0, finished = 0 }, s:stop())
      assert.are.equal("stopped", s:state())
    end)

    it("runs new jobs after a restart", function()
      local clock = H.fake_clock()
      local s = H.scheduler { clock = clock.fn }
      local ran = {}
      s:handler("h", function(job) ran[#ran + 1] = job.job_id end)
      s:start()
      s:stop()
      due_job(s, "x", T0)
      chronis.run_until(0.05)
      assert.are.same({}, ran)
      s:start()
      H.wait(function() return #ran == 1 end)
      s:stop()
      s:start()
      due_job(s, "y", T0)
      H.wait(function() return #ran == 2 end)
      assert.are.same({ "x", "y" }, ran)
    end)
  end)

  describe("two schedulers on one store", function()
    it("never run one occurrence twice (500 one-shot jobs due now)", function()
      local store = chronis.storage.memory()
      local counts, total = {}, 0
      local function h(job)
        counts[job.job_id] = (counts[job.job_id] or 0) + 1
        total = total + 1
        if total % 3 == 0 then chronis.sleep(0) end
      end
      local s1 = H.scheduler { storage = store, polling_interval = 0.1 }
      local s2 = H.scheduler { storage = store, polling_interval = 0.1 }
      s1:handler("h", h)
      s2:handler("h", h)
      local now = chronis.time.now()
      for i = 1, 500 do
        s1:once(now):config { job_id = ("j%03d"):format(i) }:run("h")
      end
      s1:start()
      s2:start()
      H.wait(function() return store:count_jobs() == 0 end, 10)
      chronis.run_until(0.2)
      assert.are.equal(500, total)
      for i = 1, 500 do
        local id = ("j%03d"):format(i)
        assert.are.equal(1, counts[id], id)
      end
      assert.are.equal(500, s1:stats().claimed + s2:stats().claimed)
    end)
  end)
end)
