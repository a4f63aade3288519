-- The job model: validation with errors naming the field, defaults, id and
-- name generation, round trips of unknown fields, and trigger next times.
local chronis = require "chronis"
local engine = require("chronis.core").engine
local U = require "support.util"
local error_of = U.error_of

local T = chronis.time.parse
local F = chronis.time.format

local NOW = T("2025-01-15T10:00:00Z")

local function prepare(fields)
  return engine.prepare_job(fields, NOW)
end

local function interval(args, extra)
  local f = { func_name = "work", trigger_type = "interval", trigger_args = args }
  for k, v in pairs(extra or {}) do f[k] = v end
  return f
end

local function assert_invalid(fields, pattern)
  local err = error_of(prepare, fields)
  assert.are.equal("invalid", err.code)
  assert.matches(pattern, tostring(err.message), 1, true)
end

describe("job validation", function()
  it("fills the defaults of docs/design.md (the job record)", function()
    U.assert_fields({
      name = "Work", timezone = "UTC", priority = 5, max_retries = 0, retry_delay_seconds = 60,
      retry_count = 0, misfire_threshold_seconds = 60, if_missed = "run_once", status = "scheduled",
      created_at = F(NOW), next_run_time = "2025-01-15T10:05:00Z",
      next_run_time_local = "2025-01-15T10:05:00+00:00",
    }, prepare(interval({ minutes = 5 })))
  end)

  it("defaults if_missed per trigger type", function()
    assert.are.equal("skip", prepare{ func_name = "w", trigger_type = "cron",
                                      trigger_args = { minute = 0 } }.if_missed)
    assert.are.equal("run_once", prepare{ func_name = "w", trigger_type = "date",
                                          trigger_args = { run_date = "2025-02-01T00:00:00Z" } }.if_missed)
  end)

  it("generates ids <func>_<YYYYmmdd_HHMMSS>_<8 hex> and Title Case names", function()
    local j = prepare(interval({ seconds = 1 }, { func_name = "send_email" }))
    assert.matches("^send_email_20250115_100000_%x%x%x%x%x%x%x%x$", j.job_id)
    assert.are.equal("Send Email", j.name)
    local k = prepare(interval({ seconds = 1 }, { func_name = "send_email" }))
    assert.are_not.equal(j.job_id, k.job_id)
  end)

  it("keeps unknown fields and free-form tables unchanged", function()
    local j = prepare(interval({ seconds = 1 }, {
      custom = { deep = { 1, 2, "x" }, flag = false }, kwargs = { to = "a@b" }, args = { 1, "two" },
      metadata = { tenant_id = "acme", n = 3 },
    }))
    assert.are.same({ deep = { 1, 2, "x" }, flag = false }, j.custom)
    assert.are.same({ to = "a@b" }, j.kwargs)
    assert.are.same({ 1, "two" }, j.args)
    assert.are.same({ tenant_id = "acme", n = 3 }, j.metadata)
  end)

  it("names the field of every invalid value", function()
    assert_invalid(interval({ seconds = 1 }, { priority = 11 }), "invalid field 'priority': 11 is out of range 0-10")
    assert_invalid(interval({ seconds = 1 }, { priority = -1 }), "invalid field 'priority'")
    assert_invalid(interval({ seconds = 1 }, { priority = "high" }), "invalid field 'priority': expected an integer")
    assert_invalid(interval({ seconds = 1 }, { if_missed = "sometimes" }), "invalid field 'if_missed': unknown value 'sometimes'")
    assert_invalid(interval({ seconds = 1 }, { misfire_threshold_seconds = -5 }), "invalid field 'misfire_threshold_seconds': -5 must be >= 0")
    assert_invalid(interval({ seconds = 1 }, { max_retries = -1 }), "invalid field 'max_retries'")
    assert_invalid(interval({ seconds = 1 }, { timeout_seconds = -1 }), "invalid field 'timeout_seconds'")
    assert_invalid(interval({ seconds = 1 }, { timezone = "Foo/Bar" }), "invalid field 'timezone': invalid timezone 'Foo/Bar'")
    assert_invalid(interval({ seconds = 1 }, { status = "sleeping" }), "invalid field 'status'")
    assert_invalid(interval({ seconds = 1 }, { max_retries = 2 ^ 40 }), "invalid field 'max_retries'")
  end)

  it("refuses bad intervals", function()
    assert_invalid(interval({ seconds = 0 }), "interval must be greater than 0")
    assert_invalid(interval({}), "interval must be greater than 0")
    assert_invalid(interval({ seconds = -3 }), "must not be negative")
    assert_invalid(interval({ seconds = "abc" }), "is not a number")
    assert_invalid(interval({ secs = 5 }), "unknown interval key 'secs' (expected weeks, days, hours")
    assert_invalid(interval({ secnds = 5, minuts = 1 }), "invalid trigger_args: unknown interval keys "
      .. "'minuts' (did you mean 'minutes'?) and 'secnds' (did you mean 'seconds'?)")
  end)

  it("refuses bad cron specs and run dates", function()
    assert_invalid({ func_name = "w", trigger_type = "cron", trigger_args = { hour = 25 } },
      "invalid cron field 'hour': 25 is out of range 0-23")
    assert_invalid({ func_name = "w", trigger_type = "cron", trigger_args = { cron = "* * *" } },
      "invalid cron")
    assert_invalid({ func_name = "w", trigger_type = "date", trigger_args = { run_date = "2025-02-30T00:00:00Z" } },
      "invalid trigger_args 'run_date'")
    assert_invalid({ func_name = "w", trigger_type = "date", trigger_args = {} }, "needs 'run_date'")
    assert_invalid({ func_name = "w", trigger_type = "weekly", trigger_args = {} }, "invalid field 'trigger_type'")
    assert_invalid({ func_name = "w" }, "invalid field 'trigger_type'")
  end)

  it("refuses trigger times and job times out of range, saying so", function()
    local RANGE = "out of range (times are 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z)"
    local function date(v) return { func_name = "w", trigger_type = "date", trigger_args = { run_date = v } } end
    for _, v in ipairs({ math.maxinteger, math.mininteger, math.mininteger + 1, -1e30, 1e30,
                         2 ^ 63, 253402300800000000, -62135596800000001 }) do
      assert_invalid(date(v), "invalid trigger_args 'run_date': ")
      assert_invalid(date(v), RANGE)
      assert_invalid(interval({ seconds = 5, start_date = v }), "invalid trigger_args 'start_date': ")
      assert_invalid(interval({ seconds = 5, start_date = v }), RANGE)
    end
    assert_invalid(date(math.maxinteger), "invalid trigger_args 'run_date': 9223372036854775807 " ..
      "microseconds is " .. RANGE)
    assert_invalid(date("10000-01-01T00:00:00Z"), "year 10000 is out of range 0001-9999")
    assert_invalid(date(F(math.maxinteger)), "year 294247 is out of range 0001-9999")
    for _, v in ipairs({ math.maxinteger, math.mininteger }) do
      assert_invalid(interval({ seconds = 1 }, { next_run_time = v }), "invalid field 'next_run_time': ")
      assert_invalid(interval({ seconds = 1 }, { next_run_time = v }), RANGE)
    end
    -- The ends of the range, exactly.
    assert.are.equal("9999-12-31T23:59:59.999999Z", prepare(date(253402300799999999)).next_run_time)
    assert.are.equal("0001-01-01T00:00:00Z", prepare(date(-62135596800000000)).next_run_time)
  end)

  it("checks job ids", function()
    assert_invalid(interval({ seconds = 1 }, { job_id = "" }), "invalid field 'job_id': must not be empty")
    assert_invalid(interval({ seconds = 1 }, { job_id = ("x"):rep(256) }), "invalid field 'job_id': 256 bytes is longer than 255")
    assert_invalid(interval({ seconds = 1 }, { job_id = "a\nb" }), "invalid field 'job_id': control character")
    assert.are.equal(("x"):rep(255), prepare(interval({ seconds = 1 }, { job_id = ("x"):rep(255) })).job_id)
  end)

  it("needs a handler name", function()
    assert_invalid({ trigger_type = "interval", trigger_args = { seconds = 1 } }, "invalid field 'func_name'")
  end)
end)

describe("triggers", function()
  local function next_after(fields, after)
    return engine.next_run_time(fields, after)
  end

  it("interval: first at now + interval, then fixed steps from the slot", function()
    local f = interval({ minutes = 1, seconds = 30 })
    assert.are.equal("2025-01-15T10:01:30Z", prepare(f).next_run_time)
    assert.are.equal("2025-01-15T10:03:00Z", next_after(f, "2025-01-15T10:01:30Z"))
  end)

  it("interval: start_date sets the first run", function()
    local j = prepare(interval({ hours = 1, start_date = "2025-01-16T00:00:00Z" }))
    assert.are.equal("2025-01-16T00:00:00Z", j.next_run_time)
  end)

  it("interval: fractional seconds", function()
    assert.are.equal("2025-01-15T10:00:00.250000Z", prepare(interval({ seconds = 0.25 })).next_run_time)
  end)

  it("interval: days keep the wall-clock time across DST, hours are elapsed", function()
    local ny = { timezone = "America/New_York" }
    -- 2025-03-08 09:00 EST is 14:00Z; the next day 09:00 is EDT (13:00Z).
    assert.are.equal("2025-03-09T13:00:00Z", next_after(interval({ days = 1 }, ny), "2025-03-08T14:00:00Z"))
    assert.are.equal("2025-03-09T14:00:00Z", next_after(interval({ hours = 24 }, ny), "2025-03-08T14:00:00Z"))
    assert.are.equal("2025-03-15T13:00:00Z", next_after(interval({ weeks = 1 }, ny), "2025-03-08T14:00:00Z"))
    -- Fall back: 2025-11-01 09:00 EDT (13:00Z) -> 2025-11-02 09:00 EST (14:00Z).
    assert.are.equal("2025-11-02T14:00:00Z", next_after(interval({ days = 1 }, ny), "2025-11-01T13:00:00Z"))
  end)

  it("cron: the first fire time after now, in the job's zone", function()
    local j = prepare{ func_name = "w", trigger_type = "cron", timezone = "Asia/Seoul",
                       trigger_args = { hour = 9, minute = 30 } }
    -- 2025-01-15T10:00Z is 19:00 in Seoul; next 09:30 KST is 2025-01-16T00:30Z.
    assert.are.equal("2025-01-16T00:30:00Z", j.next_run_time)
    assert.are.equal("2025-01-16T09:30:00+09:00", j.next_run_time_local)
    assert.are.equal("2025-01-17T00:30:00Z", next_after(j, j.next_run_time))
  end)

  it("cron: crontab strings", function()
    local j = prepare{ func_name = "w", trigger_type = "cron", trigger_args = { cron = "*/15 * * * *" } }
    assert.are.equal("2025-01-15T10:15:00Z", j.next_run_time)
  end)

  it("date: runs once, then has no next time", function()
    local f = { func_name = "w", trigger_type = "date", trigger_args = { run_date = "2025-02-01T08:00:00" },
                timezone = "Europe/Paris" }
    local j = prepare(f)
    assert.are.equal("2025-02-01T07:00:00Z", j.next_run_time) -- naive run_date in the job's zone
    assert.is_nil(next_after(f, j.next_run_time))
  end)

  it("date in the past is still scheduled (the misfire policy decides)", function()
    local j = prepare{ func_name = "w", trigger_type = "date", trigger_args = { run_date = "2020-01-01T00:00:00Z" } }
    assert.are.equal("2020-01-01T00:00:00Z", j.next_run_time)
    assert.are.equal("scheduled", j.status)
  end)
end)
