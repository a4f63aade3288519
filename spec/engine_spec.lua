-- The scheduler engine (docs/engine.md) seen from Lua, on the memory
-- store: what the engine does in the process whatever the store —
-- priorities among claimed jobs, backpressure and the queue status,
-- misfire defaults, what timeouts and stops leave behind, callbacks, the
-- handler's view of a job, chronis.sleep and chronis.run_until. What it
-- does with a store (claims, retries, misfires, leases, wake-ups, pause
-- and resume, graceful stop) is spec/support/engine_contract.lua, run by
-- every store's spec. Schedules run on a fake clock (`clock` option,
-- sched:tick()).
local chronis = require "chronis"
local H = require "support.engine_helper"
local U = require "support.util"

local S, T0 = H.S, H.T0
local fmt, due_job = chronis.time.format, H.due_job

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
      local g = H.hold_runs(s, 10, 2)
      chronis.run_until(0.05) -- room for a wrong engine to start or claim more
      local st = s:get_queue_status()
      U.assert_fields({ in_flight = 2, pending = 3, max_queue_size = 5, available_slots = 0,
        utilization = 1 }, st)
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
      local g = H.hold_runs(s, 3, 2)
      chronis.run_until(0.02)
      local st = s:get_queue_status()
      U.assert_fields({ in_flight = 2, pending = 1, available_slots = 2 }, st)
      assert.is_true(math.abs(st.utilization - 0.6) < 1e-9, tostring(st.utilization))
      assert.are.equal(2, #st.in_flight_job_ids)
      g.open = true
      H.wait(function() return s:count_jobs() == 0 end)
      U.assert_fields({ in_flight = 0, pending = 0, available_slots = 5, utilization = 0,
        in_flight_job_ids = {} }, s:get_queue_status())
    end)

    it("defaults to 20 workers and a queue of max_workers x 5", function()
      local clock = H.fake_clock()
      local s = H.scheduler { clock = clock.fn }
      assert.are.equal(100, s:get_queue_status().max_queue_size)
      assert.are.equal(15, H.scheduler({ max_workers = 3 }):get_queue_status().max_queue_size)
      local g = H.hold_runs(s, 25, 20)
      chronis.run_until(0.05)
      U.assert_fields({ in_flight = 20, pending = 5, available_slots = 75 }, s:get_queue_status())
      g.open = true
      H.wait(function() return s:count_jobs() == 0 end)
      assert.are.equal(20, g.max_inside)
    end)
  end)

  describe("misfires", function()
    it("defaults: cron skip, interval and date run_once, threshold 60 s", function()
      local s = H.scheduler { clock = H.fake_clock().fn }
      local c = s:on { minute = 0 }:run("h")
      local i = s:every { seconds = 30 }:run("h")
      local d = s:once(T0 + S):run("h")
      assert.are.equal("skip", c.if_missed)
      assert.are.equal("run_once", i.if_missed)
      assert.are.equal("run_once", d.if_missed)
      assert.are.equal(60, c.misfire_threshold_seconds)
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
    -- A task sets flag.set after 0.02 s of chronis.sleep.
    local function flag_soon()
      local flag = { set = false }
      chronis.spawn(function()
        chronis.sleep(0.02)
        flag.set = true
      end)
      return flag
    end

    it("returns true once the predicate holds", function()
      local flag = flag_soon()
      assert.is_true(chronis.run_until(function() return flag.set end, 5))
      assert.is_true(flag.set)
    end)

    it("returns false when the predicate never holds within the limit", function()
      assert.is_false(chronis.run_until(function() return false end, 0.05))
    end)

    it("drives the loop for a number of seconds", function()
      local flag = flag_soon()
      assert.is_true(chronis.run_until(0.1))
      assert.is_true(flag.set)
    end)
  end)

  describe("graceful stop", function()
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
  end)
end)

describe("progress", function()
  after_each(H.cleanup)

  it("is visible on the job while the run works, refused outside a handler, and lost with the lease", function()
    local s = H.scheduler { polling_interval = 0.1 }
    local seen, after_loss
    s:handler("long", function(job)
      assert.is_true(chronis.progress(40, "imported 4 of 10"))
      seen = s:get_job(job.job_id).progress
      assert.is_true(chronis.progress("copying"))
      -- Another node took the job (its lease expired): this run may not write.
      s:store():compare_and_swap_job(job.job_id, { claimed_by = s:node_id() },
        { claimed_by = "someone-else" })
      after_loss = chronis.progress(90, "late")
    end)
    local err = U.assert_error("invalid_state", chronis.progress, 1)
    assert.truthy(err.message:find("outside a running handler", 1, true))
    U.assert_error("invalid", chronis.progress, { 1 })
    U.assert_error("invalid", chronis.progress, 1, 2)
    due_job(s, "p", s:now(), "long", { max_retries = 0 })
    s:start()
    H.wait(function() return after_loss ~= nil end, 10, "the handler did not finish")
    assert.are.equal(40, seen.value)
    assert.are.equal("imported 4 of 10", seen.message)
    assert.truthy(seen.at:match("^%d%d%d%d%-%d%d%-%d%dT"))
    assert.is_false(after_loss)
    local j = s:get_job("p")
    assert.are.equal("copying", j and j.progress and j.progress.value)
  end)

  it("a run that times out records 'timeout' with its message, and the job's last_error", function()
    local s = H.scheduler { polling_interval = 0.1 }
    s:handler("slow", function() chronis.sleep(5) end)
    s:every { hours = 1 }:config { job_id = "t", timeout = 1 }:run("slow")
    s:update_job("t", { next_run_time = s:now() })
    s:start()
    H.wait(function() return #s:history("t") == 1 end, 10, "the run was not recorded")
    local r = s:history("t")[1]
    assert.are.equal("timeout", r.outcome)
    assert.are.equal("timeout", r.error_code)
    assert.truthy(r.error_message:find("timed out", 1, true))
    H.wait(function() return s:get_job("t").last_outcome == "timeout" end, 10)
    local j = s:get_job("t")
    assert.are.equal("timeout", j.last_error.code)
    assert.are.equal(1, j.failure_count)
  end)
end)

describe("a scheduler's filters", function()
  it("warns when a job it creates is outside them, since it never claims that job", function()
    local logs = {}
    local s = chronis.scheduler { filters = { ["metadata.tenant_id"] = "acme" },
      logger = function(level, msg) logs[#logs + 1] = level .. ": " .. msg end }
    s:handler("f", function() end)
    s:once(3600):config { job_id = "theirs", metadata = { tenant_id = "beta" } }:run("f")
    s:once(3600):config { job_id = "ours", metadata = { tenant_id = "acme" } }:run("f")
    local warned = {}
    for _, l in ipairs(logs) do
      local id = l:match("^warn: job '(%w+)' does not match this scheduler's filters")
      if id then warned[#warned + 1] = id end
    end
    assert.are.same({ "theirs" }, warned)
    s:close()
  end)

  it("are refused when they name more than metadata", function()
    local ok, err = pcall(chronis.scheduler, { filters = { status = "scheduled" } })
    assert.is_false(ok)
    assert.are.equal("invalid", err.code)
    assert.truthy(err.message:find("filters", 1, true))
    for _, key in ipairs({ "trigger_type", "next_run_time_lte", "updated_at_gte", "job_id_in" }) do
      ok, err = pcall(chronis.scheduler, { filters = { [key] = key == "job_id_in" and { "a" }
        or key == "trigger_type" and "cron" or "2025-01-15T10:00:00Z", ["metadata.t"] = "x" } })
      assert.is_false(ok)
      assert.are.equal("invalid", err.code)
      assert.truthy(err.message:find("'" .. key .. "'", 1, true), err.message)
    end
  end)
end)
