-- The public scheduler API of lua/chronis/init.lua: options, the fluent
-- builder, the direct create_*_job functions and job management. Runs on a
-- fake clock; nothing here waits for real time.
local chronis = require "chronis"
local H = require "support.engine_helper"
local U = require "support.util"

local S, T0 = H.S, H.T0
local fmt = chronis.time.format

-- assert_error(code, needle, fn, ...): fn(...) raises `code`, with needle
-- (when given) in its message.
local assert_error, error_of = U.assert_error_naming, U.error_of

describe("scheduler API", function()
  local clock, s

  before_each(function()
    clock = H.fake_clock()
    s = H.scheduler { clock = clock.fn }
  end)

  after_each(H.cleanup)

  describe("options", function()
    it("accepts polling_interval from 0.1 to 3600", function()
      for _, v in ipairs({ 0.1, 1, 3600 }) do
        assert.has_no.errors(function() H.scheduler { polling_interval = v } end)
      end
    end)

    it("refuses polling_interval outside 0.1..3600 with error 'invalid'", function()
      for _, v in ipairs({ 0.09, 0, -1, 3600.5, 1e9 }) do
        assert_error("invalid", "polling_interval", H.scheduler, { polling_interval = v })
      end
      assert_error("invalid", "polling_interval", H.scheduler, { polling_interval = "fast" })
    end)

    it("refuses an unknown option, naming it", function()
      assert_error("invalid", "max_wrokers", H.scheduler, { max_wrokers = 3 })
      assert_error("invalid", "did you mean 'undeclared'?", H.scheduler, { undeclred = "keep" })
    end)

    it("takes undeclared = keep, report or remove and an app name of 1 to 64 bytes", function()
      for _, v in ipairs({ "keep", "report", "remove" }) do
        assert.has_no.errors(function() H.scheduler { undeclared = v, app = "billing" } end)
      end
      assert_error("invalid", "invalid option 'undeclared': expected keep, report or remove, got 'delete'",
        H.scheduler, { undeclared = "delete" })
      assert_error("invalid", "invalid option 'undeclared': expected keep, report or remove, got boolean",
        H.scheduler, { undeclared = true })
      assert_error("invalid", "invalid option 'app': expected a name of 1 to 64 bytes, got 0 bytes",
        H.scheduler, { app = "" })
      assert_error("invalid", "invalid option 'app': expected a name of 1 to 64 bytes, got 65 bytes",
        H.scheduler, { app = ("a"):rep(65) })
      assert_error("invalid", "invalid option 'app': expected a name of 1 to 64 bytes, got number",
        H.scheduler, { app = 1 })
    end)

    it("reports the default limits: 20 workers, a queue of 100", function()
      local st = s:get_queue_status()
      assert.are.equal(20, st.max_workers)
      assert.are.equal(100, st.max_queue_size)
      assert.are.equal(100, st.available_slots)
    end)
  end)

  describe("builder", function()
    it("every{} creates an interval job and returns it as stored", function()
      local j = s:every { minutes = 5 }:run("send_email", { to = "a@b" }, { 1, 2 })
      assert.are.equal("interval", j.trigger_type)
      assert.are.same({ minutes = 5 }, j.trigger_args)
      assert.are.equal("send_email", j.func_name)
      assert.are.equal("Send Email", j.name)
      assert.are.same({ to = "a@b" }, j.kwargs)
      assert.are.same({ 1, 2 }, j.args)
      assert.are.equal("scheduled", j.status)
      assert.are.equal(T0 + 300 * S, H.t(j.next_run_time))
      assert.truthy(j.job_id:match("^send_email_20250115_100000_%x%x%x%x%x%x%x%x$"), j.job_id)
      assert.are.same(s:get_job(j.job_id), j)
    end)

    it("on{} creates a cron job in its timezone", function()
      local j = s:on { hour = 9, minute = 30, timezone = "Asia/Seoul" }:run("report")
      assert.are.equal("cron", j.trigger_type)
      assert.are.equal("Asia/Seoul", j.timezone)
      assert.are.same({ hour = 9, minute = 30 }, j.trigger_args)
      assert.are.equal("2025-01-16T00:30:00Z", j.next_run_time) -- 09:30 KST
      local c = s:on("*/15 * * * *"):run("report")
      assert.are.equal("2025-01-15T10:15:00Z", c.next_run_time)
    end)

    it("once() creates a date job from an ISO time or integer microseconds", function()
      local a = s:once("2026-12-25T09:00:00Z"):run("notify", { msg = "hi" })
      assert.are.equal("date", a.trigger_type)
      assert.are.equal("2026-12-25T09:00:00Z", a.next_run_time)
      local b = s:once(T0 + 90 * S):run("notify")
      assert.are.equal(T0 + 90 * S, H.t(b.next_run_time))
    end)

    it("maps every config key to its storage field", function()
      local ok_cb, fail_cb = function() end, function() end
      local j = s:every { seconds = 30 }:config {
        job_id = "cfg", name = "Configured", timezone = "Europe/Paris", retry = 3,
        retry_delay = 15, timeout = 120, priority = 8, metadata = { tenant = "acme" },
        if_missed = "run_all", misfire_threshold = 5, on_success = ok_cb, on_failure = fail_cb,
      }:run("h")
      U.assert_fields({
        job_id = "cfg", name = "Configured", timezone = "Europe/Paris", max_retries = 3,
        retry_delay_seconds = 15, timeout_seconds = 120, priority = 8,
        metadata = { tenant = "acme" }, if_missed = "run_all", misfire_threshold_seconds = 5,
      }, j)
      -- Callbacks are not stored in the record.
      assert.is_nil(j.on_success)
      assert.is_nil(j.on_failure)
    end)

    it("takes config before or after the trigger, merging metadata", function()
      local j = s:config { priority = 9, metadata = { a = 1, b = 1 } }
        :every { hours = 1 }
        :config { retry = 2, metadata = { b = 2 } }
        :config { metadata = { c = 3 } }
        :run("h")
      assert.are.equal(9, j.priority)
      assert.are.equal(2, j.max_retries)
      assert.are.same({ a = 1, b = 2, c = 3 }, j.metadata)
    end)

    it("runs the per-job callbacks given with config", function()
      local seen = {}
      s:handler("ok", function() end)
      s:handler("bad", function() error("no") end)
      s:once(T0):config { job_id = "good", on_success = function(id) seen[#seen + 1] = "ok:" .. id end }
        :run("ok")
      s:once(T0):config { job_id = "poor", on_failure = function(id) seen[#seen + 1] = "fail:" .. id end }
        :run("bad")
      s:start()
      s:tick()
      table.sort(seen)
      assert.are.same({ "fail:poor", "ok:good" }, seen)
    end)

    it("refuses run() without a trigger", function()
      local err = error_of(function() s:config { priority = 1 }:run("h") end)
      assert.are.equal("no trigger configured: call every(), on() or once() before run()",
        err.message)
      assert.are.equal(0, s:count_jobs())
    end)

    it("refuses an unknown config key, naming it", function()
      assert_error("invalid", "retries", function() s:every { minutes = 1 }:config { retries = 3 } end)
    end)

    it("refuses invalid values, naming the field", function()
      assert_error("invalid", "priority", function() s:every { minutes = 1 }:config { priority = 11 }:run("h") end)
      assert_error("invalid", "timezone", function()
        s:every { minutes = 1 }:config { timezone = "Mars/Olympus" }:run("h")
      end)
      assert_error("invalid", "hour", function() s:on { hour = 25 }:run("h") end)
      assert.are.equal(0, s:count_jobs())
    end)
  end)

  describe("direct creation", function()
    it("refuses an if_exists other than error, skip, replace or update, naming them", function()
      assert_error("invalid", "invalid option 'if_exists': expected error, skip, replace or update, got merge",
        s.create_interval_job, s, { job_id = "iv", func_name = "h", minutes = 2, if_exists = "merge" })
      assert.are.equal(0, s:count_jobs())
    end)

    it("create_interval_job takes options by storage name", function()
      local j = s:create_interval_job { job_id = "iv", func_name = "h", minutes = 2,
        max_retries = 4, retry_delay_seconds = 7, timeout_seconds = 9, priority = 2,
        metadata = { k = "v" }, if_missed = "skip", misfire_threshold_seconds = 11 }
      assert.are.equal(T0 + 120 * S, H.t(j.next_run_time))
      U.assert_fields({
        trigger_type = "interval", trigger_args = { minutes = 2 }, max_retries = 4,
        retry_delay_seconds = 7, timeout_seconds = 9, priority = 2, metadata = { k = "v" },
        if_missed = "skip", misfire_threshold_seconds = 11,
      }, j)
    end)

    it("create_cron_job and create_date_job set their triggers", function()
      local c = s:create_cron_job { job_id = "cr", func_name = "h", hour = 12, minute = 0 }
      assert.are.equal("cron", c.trigger_type)
      assert.are.equal("2025-01-15T12:00:00Z", c.next_run_time)
      local d = s:create_date_job { job_id = "dt", func_name = "h", run_date = "2025-02-01T08:00:00Z" }
      assert.are.equal("date", d.trigger_type)
      assert.are.equal("2025-02-01T08:00:00Z", d.next_run_time)
      assert.are.equal("run_once", d.if_missed)
    end)

    it("refuses run dates out of range or not a number, naming run_date", function()
      for _, v in ipairs({ math.maxinteger, math.mininteger, -1e30 }) do
        assert_error("invalid", "invalid trigger_args 'run_date': ", s.create_date_job, s,
          { job_id = "far", func_name = "h", run_date = v })
        assert_error("invalid", "microseconds is out of range", s.create_date_job, s,
          { job_id = "far", func_name = "h", run_date = v })
      end
      for _, v in ipairs({ 0 / 0, math.huge, -math.huge }) do
        assert_error("invalid", "invalid trigger_args 'run_date': ", s.create_date_job, s,
          { job_id = "nan", func_name = "h", run_date = v })
        assert_error("invalid", "is not a time", s.create_date_job, s,
          { job_id = "nan", func_name = "h", run_date = v })
        assert_error("invalid", "invalid trigger_args 'start_date': ", s.create_interval_job, s,
          { job_id = "nan", func_name = "h", seconds = 5, start_date = v })
        assert_error("invalid", "invalid trigger_args 'seconds': ", s.create_interval_job, s,
          { job_id = "nan", func_name = "h", seconds = v })
      end
      assert_error("invalid", "year 294247 is out of range 0001-9999", function()
        s:once(math.maxinteger):run("h")
      end)
      assert.are.equal(0, s:count_jobs())
    end)

    it("refuses a duplicate job id with error 'duplicate'", function()
      s:create_date_job { job_id = "dup", func_name = "h", run_date = fmt(T0) }
      assert_error("duplicate", "dup", s.create_date_job, s,
        { job_id = "dup", func_name = "h", run_date = fmt(T0) })
    end)
  end)

  describe("create_jobs", function()
    local function date(id, fields)
      local f = { job_id = id, trigger_type = "date", func_name = "h", run_date = fmt(T0 + 60 * S) }
      for k, v in pairs(fields or {}) do f[k] = v end
      return f
    end

    it("creates each job as create_job would and returns their ids in order", function()
      local ids, failed = s:create_jobs({
        date("d1", { max_retries = 3, metadata = { k = "v" } }),
        { job_id = "iv", trigger_type = "interval", func_name = "h", minutes = 2 },
        { trigger_type = "cron", func_name = "h", hour = 12, minute = 0 },
      })
      assert.is_nil(failed)
      assert.are.equal(3, #ids)
      assert.are.same({ "d1", "iv" }, { ids[1], ids[2] })
      assert.is_string(ids[3])
      local d = s:get_job("d1")
      U.assert_fields({ trigger_type = "date", status = "scheduled", max_retries = 3,
        metadata = { k = "v" }, if_missed = "run_once" }, d)
      assert.are.equal(T0 + 60 * S, H.t(d.next_run_time))
      local iv = s:get_job("iv")
      assert.are.same({ minutes = 2 }, iv.trigger_args)
      assert.are.equal(T0 + 120 * S, H.t(iv.next_run_time))
      assert.are.equal("2025-01-15T12:00:00Z", s:get_job(ids[3]).next_run_time)
      assert.are.equal(3, s:count_jobs())
    end)

    it("reports duplicates by their index in the list and creates the others", function()
      s:create_date_job { job_id = "old", func_name = "h", run_date = fmt(T0), name = "first" }
      local list = {}
      for i = 1, 2500 do list[i] = date("n" .. i) end
      list[1700] = date("old", { name = "second" })
      list[2400] = date("n5")
      local ids, failed = s:create_jobs(list)
      assert.are.equal(2500, #ids)
      local bad = {}
      for i in pairs(failed) do bad[#bad + 1] = i end
      table.sort(bad)
      assert.are.same({ 1700, 2400 }, bad)
      assert.are.equal("duplicate", failed[1700].code)
      assert.truthy(failed[1700].message:find("item 1700: job 'old' already exists", 1, true),
        failed[1700].message)
      assert.are.equal("duplicate", failed[2400].code)
      assert.are.equal("first", s:get_job("old").name)
      assert.are.equal(2500 - 2 + 1, s:count_jobs())
    end)

    it("refuses an invalid item, naming it, and creates nothing of its batch", function()
      assert_error("invalid", "create_jobs: item 2: invalid trigger_args 'run_date'", s.create_jobs, s,
        { date("a"), date("b", { run_date = "soon" }), date("c") })
      assert_error("invalid", "create_jobs: item 1: invalid field 'trigger_type'", s.create_jobs, s,
        { { job_id = "x", func_name = "h", run_date = fmt(T0) } })
      assert_error("invalid", "create_jobs: item 2 is not a table", s.create_jobs, s, { date("a"), 7 })
      assert_error("invalid", "did you mean 'run_date'", s.create_jobs, s,
        { { job_id = "t", trigger_type = "date", func_name = "h", rundate = fmt(T0) } })
      assert.are.equal(0, s:count_jobs())
    end)

    it("refuses the options that are per create_job", function()
      for _, opt in ipairs({ "unique", "if_exists", "on_success", "on_failure" }) do
        assert_error("invalid", "create_jobs: item 1: option '" .. opt .. "'", s.create_jobs, s,
          { date("a", { [opt] = opt == "if_exists" and "skip" or true }) })
      end
      assert.are.equal(0, s:count_jobs())
    end)

    it("applies the handler's defaults and leaves the caller's tables as they were", function()
      s:handler("h2", { run = function() end, retry = 4, timeout = 9 })
      local item = { job_id = "hd", trigger_type = "date", func_name = "h2", run_date = fmt(T0) }
      s:create_jobs({ item })
      U.assert_fields({ max_retries = 4, timeout_seconds = 9 }, s:get_job("hd"))
      assert.are.same({ job_id = "hd", trigger_type = "date", func_name = "h2", run_date = fmt(T0) }, item)
    end)

    it("runs the jobs it created", function()
      local ran = {}
      s:handler("h", function(job) ran[#ran + 1] = job.args[1] end)
      local list = {}
      for i = 1, 50 do list[i] = date("r" .. i, { run_date = fmt(T0), args = { i } }) end
      s:create_jobs(list)
      s:start()
      s:tick()
      H.wait(function() return #ran == 50 end)
      table.sort(ran)
      assert.are.equal(1, ran[1])
      assert.are.equal(50, ran[50])
    end)
  end)

  describe("a handler name no handler answers to", function()
    local warnings, sched
    before_each(function()
      warnings = {}
      sched = H.scheduler { clock = clock.fn, logger = function(level, msg, fields)
        if level == "warn" then warnings[#warnings + 1] = { msg = msg, fields = fields } end
      end }
      sched:handler("send_email", function() end)
      chronis.handlers.report = function() end
    end)
    after_each(function() chronis.handlers.report = nil end)

    it("is a warning naming the known handlers, once per create", function()
      sched:once(T0):config { job_id = "typo" }:run("sendmail")
      sched:create_date_job { job_id = "typo2", func_name = "sendmail", run_date = T0 }
      assert.are.equal(2, #warnings)
      assert.truthy(warnings[1].msg:find("no handler named 'sendmail'", 1, true), warnings[1].msg)
      assert.truthy(warnings[1].msg:find("known handlers: report, send_email", 1, true), warnings[1].msg)
      assert.are.same({ job_id = "typo", handler = "sendmail" }, warnings[1].fields)
      assert.are.equal("typo2", warnings[2].fields.job_id)
      assert.are.equal("scheduled", sched:get_job("typo").status)
    end)

    it("is one warning per unknown name for create_jobs", function()
      sched:create_jobs({
        { job_id = "t1", trigger_type = "date", func_name = "sendmail", run_date = T0 },
        { job_id = "t2", trigger_type = "date", func_name = "sendmail", run_date = T0 },
        { job_id = "t3", trigger_type = "date", func_name = "send_email", run_date = T0 },
      })
      assert.are.equal(1, #warnings)
      assert.truthy(warnings[1].msg:find("no handler named 'sendmail'", 1, true), warnings[1].msg)
      assert.are.same({ handler = "sendmail" }, warnings[1].fields)
      assert.are.equal(3, sched:count_jobs())
    end)

    it("is no warning for the scheduler's own handlers or the process-wide ones", function()
      sched:once(T0):config { job_id = "a" }:run("send_email")
      sched:once(T0):config { job_id = "b" }:run("report")
      assert.are.same({}, warnings)
    end)

    it("still runs when its handler is registered after the job", function()
      local ran = false
      sched:once(T0):config { job_id = "later" }:run("late")
      sched:handler("late", function() ran = true end)
      sched:start()
      sched:tick()
      H.wait(function() return ran end)
    end)

    it("is an invalid error with strict_handlers = true, and the job is not created", function()
      local strict = H.scheduler { clock = clock.fn, strict_handlers = true }
      strict:handler("send_email", function() end)
      local err = assert_error("invalid", "no handler named 'sendmail'", function()
        strict:once(T0):config { job_id = "typo" }:run("sendmail")
      end)
      assert.truthy(err.message:find("known handlers: report, send_email", 1, true), err.message)
      assert.is_nil(strict:get_job("typo"))
      assert.are.equal("send_email", strict:once(T0):config { job_id = "ok" }:run("send_email").func_name)
    end)

    it("refuses a strict_handlers option that is not a boolean", function()
      assert_error("invalid", "strict_handlers", H.scheduler, { strict_handlers = "yes" })
    end)
  end)

  describe("management", function()
    local function seed()
      s:every { minutes = 10 }:config { job_id = "a", metadata = { tenant = "acme" } }:run("h")
      s:every { minutes = 5 }:config { job_id = "b", metadata = { tenant = "globex" } }:run("h")
      s:every { minutes = 20 }:config { job_id = "c", metadata = { tenant = "acme" } }:run("h")
    end

    it("get_job returns the job or nil", function()
      seed()
      assert.are.equal("a", s:get_job("a").job_id)
      assert.is_nil(s:get_job("nope"))
    end)

    it("query_jobs and count_jobs filter by status and metadata", function()
      seed()
      s:pause_job("c")
      local all = s:query_jobs()
      assert.are.same({ "b", "a", "c" }, { all[1].job_id, all[2].job_id, all[3].job_id })
      assert.are.same({ "a", "c" }, H.ids(s:query_jobs { ["metadata.tenant"] = "acme" }))
      assert.are.same({ "a" }, H.ids(s:query_jobs { ["metadata.tenant"] = "acme", status = "scheduled" }))
      assert.are.equal(3, s:count_jobs())
      assert.are.equal(1, s:count_jobs { status = "paused" })
      assert.are.equal(2, s:count_jobs { ["metadata.tenant"] = "acme" })
      assert.are.equal(1, #s:query_jobs({}, 1, 1))
      assert_error("invalid", "colour", s.query_jobs, s, { colour = "red" })
    end)

    it("update_job changes fields and keeps next_run_time when the trigger is unchanged", function()
      seed()
      local before = s:get_job("a").next_run_time
      local j = s:update_job("a", { priority = 9, metadata = { tenant = "initech" } })
      assert.are.equal(9, j.priority)
      assert.are.same({ tenant = "initech" }, j.metadata)
      assert.are.equal(before, j.next_run_time)
      assert.are.equal(9, s:get_job("a").priority)
    end)

    it("update_job recomputes next_run_time when the trigger changes", function()
      seed()
      local j = s:update_job("a", { trigger_args = { minutes = 1 } })
      assert.are.equal(T0 + 60 * S, H.t(j.next_run_time))
      j = s:update_job("a", { trigger_type = "cron", trigger_args = { hour = 23, minute = 15 } })
      assert.are.equal("2025-01-15T23:15:00Z", j.next_run_time)
      j = s:update_job("a", { timezone = "Asia/Tokyo" })
      assert.are.equal("2025-01-15T14:15:00Z", j.next_run_time) -- 23:15 JST, same day
      assert.are.equal("2025-01-15T23:15:00Z", s:update_job("a", { timezone = "UTC" }).next_run_time)
    end)

    it("update_job refuses an invalid result and changes nothing", function()
      seed()
      assert_error("invalid", "priority", s.update_job, s, "a", { priority = 42 })
      assert_error("invalid", nil, s.update_job, s, "a", { job_id = "z" })
      assert.are.equal(5, s:get_job("a").priority)
    end)

    it("delete_job removes the job", function()
      seed()
      assert.is_true(s:delete_job("b"))
      assert.is_nil(s:get_job("b"))
      assert.are.equal(2, s:count_jobs())
    end)

    it("pause_job accepts a pending job", function()
      -- A cron trigger whose only time is past leaves the job pending.
      local j = s:on { year = 2020, month = 1, day = 1 }:config { job_id = "pend" }:run("h")
      assert.are.equal("pending", j.status)
      assert.are.equal("paused", s:pause_job("pend").status)
      assert.are.equal("pending", s:resume_job("pend").status)
    end)

    it("pause_job refuses running, paused and failed jobs with 'invalid_state' naming the status", function()
      seed()
      local store = s:store()
      store:compare_and_swap_job("b", { status = "scheduled" },
        { status = "running", claimed_by = "n1", lease_until = fmt(T0 + 60 * S) })
      store:update_job("c", { status = "failed" })
      s:pause_job("a")
      for id, status in pairs({ a = "paused", b = "running", c = "failed" }) do
        local err = assert_error("invalid_state", status, s.pause_job, s, id)
        assert.truthy(err.message:find(id, 1, true), err.message)
        assert.are.equal(status, s:get_job(id).status)
      end
    end)

    it("resume_job accepts paused jobs only", function()
      seed()
      assert_error("invalid_state", "scheduled", s.resume_job, s, "a")
      s:store():update_job("c", { status = "failed" })
      assert_error("invalid_state", "failed", s.resume_job, s, "c")
    end)

    it("run_job_now runs a job at once and keeps its schedule going", function()
      local runs = {}
      s:handler("h", function(job) runs[#runs + 1] = job.scheduled_time end)
      s:every { hours = 6 }:config { job_id = "now" }:run("h")
      s:start()
      clock.now = T0 + 60 * S
      s:run_job_now("now")
      H.wait(function() return #runs == 1 end, 2)
      assert.are.same({ fmt(T0 + 60 * S) }, runs)
      local j = s:get_job("now")
      assert.are.equal("scheduled", j.status)
      assert.is_true(H.t(j.next_run_time) > clock.now)
    end)

    it("run_job_now runs a failed job again", function()
      local runs = 0
      s:handler("h", function() runs = runs + 1 end)
      s:every { hours = 6 }:config { job_id = "f" }:run("h")
      s:store():update_job("f", { status = "failed", next_run_time = chronis.json.null, retry_count = 3 })
      s:start()
      s:run_job_now("f")
      H.wait(function() return runs == 1 end, 2)
      assert.are.equal(0, s:get_job("f").retry_count)
    end)

    it("reports an unknown id with 'not_found' naming it", function()
      s:handler("h", function() end)
      s:start()
      assert_error("not_found", "ghost", s.update_job, s, "ghost", { priority = 1 })
      assert_error("not_found", "ghost", s.delete_job, s, "ghost")
      assert_error("not_found", "ghost", s.pause_job, s, "ghost")
      assert_error("not_found", "ghost", s.resume_job, s, "ghost")
      assert_error("not_found", "ghost", s.run_job_now, s, "ghost")
      assert_error("not_found", "ghost", s.retry_job, s, "ghost")
    end)

    it("query_jobs and count_jobs filter by func_name and name, past a page of the store", function()
      for i = 1, 1203 do
        s:every { minutes = i }:config { job_id = ("j%04d"):format(i), name = i % 2 == 0 and "Even" or "Odd" }
          :run(i % 3 == 0 and "three" or "other")
      end
      assert.are.equal(401, s:count_jobs { func_name = "three" })
      assert.are.equal(201, s:count_jobs { func_name = "three", name = "Odd" })
      assert.are.equal(602, s:count_jobs { name = "Odd" })
      local page = s:query_jobs({ func_name = "three" }, 3, 398)
      assert.are.same({ "j1197", "j1200", "j1203" }, H.ids(page))
      assert.are.same({ "j0003", "j0009" }, H.ids(s:query_jobs({ func_name = "three", name = "Odd" }, 2)))
      assert.are.equal(0, #s:query_jobs({ func_name = "three" }, 0))
      s:pause_job("j0006")
      assert.are.same({ "j0006" }, H.ids(s:query_jobs { func_name = "three", status = "paused" }))
      assert.are.equal(0, s:count_jobs { func_name = "nobody" })
      assert_error("invalid", "func_name", s.query_jobs, s, { func_name = 3 })
      assert_error("invalid", "name", s.count_jobs, s, { name = { "Odd" } })
      assert_error("invalid", "limit", s.query_jobs, s, { name = "Odd" }, -1)
      assert_error("invalid", "colour", s.query_jobs, s, { name = "Odd", colour = "red" })
    end)

    it("retry_job puts a failed job back to scheduled, due now, with retry_count 0", function()
      seed()
      s:store():update_job("a", { status = "failed", next_run_time = chronis.json.null, retry_count = 2 })
      clock.now = T0 + 90 * S
      local j = s:retry_job("a")
      assert.are.equal("scheduled", j.status)
      assert.are.equal(0, j.retry_count)
      assert.are.equal(fmt(T0 + 90 * S), j.next_run_time)
      assert.are.same(j, s:get_job("a"))
      local err = assert_error("invalid_state", "scheduled", s.retry_job, s, "a")
      assert.truthy(err.message:find("'a'", 1, true), err.message)
      s:pause_job("b")
      assert_error("invalid_state", "paused", s.retry_job, s, "b")
    end)

    it("retry_jobs retries the failed jobs that match, and only those", function()
      seed()
      for _, id in ipairs({ "a", "b", "c" }) do
        s:store():update_job(id, { status = "failed", next_run_time = chronis.json.null, retry_count = 1 })
      end
      s:every { minutes = 1 }:config { job_id = "d", metadata = { tenant = "acme" } }:run("h")
      local n, ids = s:retry_jobs { ["metadata.tenant"] = "acme" }
      assert.are.equal(2, n)
      table.sort(ids)
      assert.are.same({ "a", "c" }, ids)
      assert.are.same({ "scheduled", "failed", "scheduled", "scheduled" },
        { s:get_job("a").status, s:get_job("b").status, s:get_job("c").status, s:get_job("d").status })
      assert.are.equal(fmt(T0), s:get_job("a").next_run_time)
      assert.are.equal(0, s:get_job("a").retry_count)
      assert.are.same({ 0, {} }, { s:retry_jobs { status = "paused" } })
      assert_error("invalid", "status", s.retry_jobs, s, { status = "faild" })
      assert_error("invalid", "filters", s.retry_jobs, s, "b")
      n = s:retry_jobs { func_name = "h", status = { "failed", "paused" } }
      assert.are.equal(1, n)
      assert.are.equal(0, (s:retry_jobs()))
    end)

    it("delete_jobs deletes the jobs that match, whatever their status", function()
      seed()
      s:pause_job("c")
      local n, ids = s:delete_jobs { ["metadata.tenant"] = "acme" }
      assert.are.equal(2, n)
      table.sort(ids)
      assert.are.same({ "a", "c" }, ids)
      assert.are.same({ "b" }, H.ids(s:query_jobs()))
      assert.are.same({ 0, {} }, { s:delete_jobs { func_name = "nobody" } })
      assert_error("invalid", "filters", s.delete_jobs, s)
      assert_error("invalid", "statuss", s.delete_jobs, s, { statuss = "x" })
      assert.are.equal(1, (s:delete_jobs {}))
      assert.are.equal(0, s:count_jobs())
    end)
  end)
end)
