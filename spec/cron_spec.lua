-- chronis.cron: parsing of field tables and crontab strings, the next fire
-- time (strictly after `after`), DST rules, and the error messages.
local chronis = require "chronis"
local cron = chronis.cron
local error_of = require("support.util").error_of

local function nxt(spec, after, zone)
  return cron.next(spec, after, zone)
end

-- The fire times following `after`, n of them, each strictly after the last.
local function series(spec, after, n, zone)
  local out, t = {}, after
  for i = 1, n do
    t = cron.next(spec, t, zone)
    out[i] = t
    if t == nil then break end
  end
  return out
end

local function assert_invalid(spec, message)
  local err = error_of(cron.parse, spec)
  assert.are.equal("invalid", err.code)
  assert.are.equal(message, err.message)
  assert.are.equal("invalid: " .. message, tostring(err))
  -- next() reports the same problem.
  assert.are.equal(message, error_of(cron.next, spec, "2025-01-01T00:00:00Z").message)
end

describe("chronis.cron field expressions", function()
  it("'*' in the least significant field fires every unit", function()
    assert.are.same({"2025-01-15T10:00:01Z", "2025-01-15T10:00:02Z"},
      series({second = "*"}, "2025-01-15T10:00:00Z", 2))
  end)

  it("'*/n' steps from the field minimum", function()
    assert.are.equal("2025-01-15T10:15:00Z", nxt({minute = "*/15"}, "2025-01-15T10:07:00Z"))
    assert.are.equal("2025-01-15T11:00:00Z", nxt({minute = "*/15"}, "2025-01-15T10:45:00Z"))
    assert.are.same({"2025-01-15T12:00:00Z", "2025-01-15T15:00:00Z"},
      series({hour = "*/3"}, "2025-01-15T10:00:00Z", 2))
  end)

  it("a single value, as an integer or a string", function()
    assert.are.equal("2025-01-16T09:00:00Z", nxt({hour = 9}, "2025-01-15T10:00:00Z"))
    assert.are.equal("2025-01-16T09:00:00Z", nxt({hour = "9"}, "2025-01-15T10:00:00Z"))
    assert.are.equal("2025-01-15T09:00:00Z", nxt({hour = 9.0}, "2025-01-15T08:00:00Z"))
  end)

  it("a-b ranges, inclusive", function()
    assert.are.same({"2025-01-15T17:00:00Z", "2025-01-16T09:00:00Z"},
      series({hour = "9-17"}, "2025-01-15T16:00:00Z", 2))
  end)

  it("a-b/n ranges with a step", function()
    assert.are.same({"2025-01-15T10:10:00Z", "2025-01-15T10:25:00Z",
                     "2025-01-15T10:40:00Z", "2025-01-15T11:10:00Z"},
      series({minute = "10-40/15"}, "2025-01-15T10:00:00Z", 4))
  end)

  it("a/n runs from a to the field maximum", function()
    assert.are.same({"2025-01-15T10:50:00Z", "2025-01-15T10:55:00Z", "2025-01-15T11:50:00Z"},
      series({minute = "50/5"}, "2025-01-15T10:49:00Z", 3))
  end)

  it("comma lists mix every form, blanks allowed", function()
    assert.are.same({"2025-01-15T01:00:00Z", "2025-01-15T05:00:00Z", "2025-01-15T20:00:00Z",
                     "2025-01-15T22:00:00Z", "2025-01-16T01:00:00Z"},
      series({hour = "1, 5,20-23/2"}, "2025-01-15T00:00:00Z", 5))
  end)

  it("month names, alone, in ranges and lists, any case", function()
    assert.are.equal("2025-03-01T00:00:00Z", nxt({month = "mar"}, "2025-01-15T00:00:00Z"))
    assert.are.equal("2025-03-01T00:00:00Z", nxt({month = "MAR"}, "2025-01-15T00:00:00Z"))
    assert.are.same({"2025-10-01T00:00:00Z", "2025-11-01T00:00:00Z", "2026-01-01T00:00:00Z"},
      series({month = "jan,oct-nov"}, "2025-02-01T00:00:00Z", 3))
    assert.are.same({"2025-07-01T00:00:00Z", "2026-01-01T00:00:00Z"},
      series({month = "jan-dec/6"}, "2025-02-01T00:00:00Z", 2))
  end)

  it("day_of_week numbers count 0 = Monday .. 6 = Sunday", function()
    -- 2025-01-15 is a Wednesday.
    assert.are.equal("2025-01-20T00:00:00Z", nxt({day_of_week = 0}, "2025-01-15T00:00:00Z"))
    assert.are.equal("2025-01-19T00:00:00Z", nxt({day_of_week = 6}, "2025-01-15T00:00:00Z"))
    assert.are.equal("2025-01-19T00:00:00Z", nxt({day_of_week = "sun"}, "2025-01-15T00:00:00Z"))
  end)

  it("weekday names and name ranges", function()
    -- From Friday 10:00 the next weekday 09:00 is Monday.
    assert.are.same({"2025-01-20T09:00:00Z", "2025-01-21T09:00:00Z"},
      series({day_of_week = "mon-fri", hour = 9}, "2025-01-17T10:00:00Z", 2))
    assert.are.same({"2025-01-18T00:00:00Z", "2025-01-19T00:00:00Z", "2025-01-25T00:00:00Z"},
      series({day_of_week = "sat,sun"}, "2025-01-17T10:00:00Z", 3))
    assert.are.same({"2025-01-20T00:00:00Z", "2025-01-22T00:00:00Z", "2025-01-24T00:00:00Z"},
      series({day_of_week = "mon-fri/2"}, "2025-01-17T10:00:00Z", 3))
  end)

  it("day 'last' is the last day of each month, leap years included", function()
    assert.are.same({"2024-01-31T00:00:00Z", "2024-02-29T00:00:00Z", "2024-03-31T00:00:00Z",
                     "2024-04-30T00:00:00Z"},
      series({day = "last"}, "2024-01-15T00:00:00Z", 4))
    assert.are.equal("2025-02-28T00:00:00Z", nxt({day = "last"}, "2025-02-10T00:00:00Z"))
  end)

  it("'1st'..'5th <weekday>' is the nth such weekday of the month", function()
    assert.are.same({"2025-01-10T00:00:00Z", "2025-02-14T00:00:00Z", "2025-03-14T00:00:00Z"},
      series({day = "2nd fri"}, "2025-01-01T00:00:00Z", 3))
    assert.are.equal("2025-01-06T00:00:00Z", nxt({day = "1st mon"}, "2025-01-01T00:00:00Z"))
    -- Only months with five Wednesdays: Jan 2025 (29th), then April (30th).
    assert.are.same({"2025-01-29T00:00:00Z", "2025-04-30T00:00:00Z"},
      series({day = "5th wed"}, "2025-01-01T00:00:00Z", 2))
  end)

  it("'last <weekday>' is the last such weekday of the month", function()
    assert.are.same({"2025-03-30T00:00:00Z", "2026-03-29T00:00:00Z"},
      series({month = 3, day = "last sun"}, "2025-01-01T00:00:00Z", 2))
    assert.are.equal("2025-01-31T00:00:00Z", nxt({day = "last fri"}, "2025-01-01T00:00:00Z"))
  end)

  it("day terms combine in comma lists", function()
    assert.are.same({"2025-02-01T00:00:00Z", "2025-02-11T00:00:00Z", "2025-02-15T00:00:00Z",
                     "2025-02-28T00:00:00Z", "2025-03-01T00:00:00Z"},
      series({day = "1,15,last, 2nd tue"}, "2025-01-31T00:00:00Z", 5))
  end)

  it("day and day_of_week combine with AND in the field form", function()
    -- The first Monday of each month, written as days 1-7 that are Mondays.
    assert.are.same({"2025-02-03T00:00:00Z", "2025-03-03T00:00:00Z", "2025-04-07T00:00:00Z"},
      series({day = "1-7", day_of_week = "mon"}, "2025-01-15T00:00:00Z", 3))
    -- Friday the 13th.
    assert.are.same({"2025-06-13T00:00:00Z", "2026-02-13T00:00:00Z"},
      series({day = 13, day_of_week = "fri"}, "2025-01-01T00:00:00Z", 2))
  end)

  it("the ISO week field", function()
    -- Week 1 of 2026 starts on Monday 2025-12-29.
    assert.are.equal("2025-12-29T00:00:00Z", nxt({week = 1}, "2025-06-01T00:00:00Z"))
    assert.are.equal("2026-01-04T00:00:00Z", nxt({week = 1, day_of_week = "sun"}, "2025-06-01T00:00:00Z"))
    -- 2026 has 53 weeks (it starts on a Thursday); 2025 has 52.
    assert.are.equal("2026-12-28T00:00:00Z", nxt({week = 53}, "2025-01-15T00:00:00Z"))
    -- January 1st-3rd 2027 still belong to week 53 of 2026.
    assert.are.same({"2027-01-01T00:00:00Z", "2027-01-02T00:00:00Z", "2027-01-03T00:00:00Z",
                     "2033-01-01T00:00:00Z"},
      series({week = 53, month = 1}, "2025-01-15T00:00:00Z", 4))
    assert.are.same({"2025-03-03T00:00:00Z", "2025-03-17T00:00:00Z"},
      series({week = "10-12/2", day_of_week = 0}, "2025-01-15T00:00:00Z", 2))
  end)

  it("year values and ranges", function()
    assert.are.equal("2030-01-01T00:00:00Z", nxt({year = 2030}, "2025-01-15T00:00:00Z"))
    assert.are.same({"2026-06-01T00:00:00Z", "2028-06-01T00:00:00Z", "2030-06-01T00:00:00Z"},
      series({year = "2026-2030/2", month = 6}, "2025-01-15T00:00:00Z", 4))
  end)
end)

describe("chronis.cron defaults of unspecified fields", function()
  -- The fields given, what they do, from when, and the next two times.
  for _, case in ipairs({
    { {hour = 9}, "fires at 09:00:00 every day", "2025-01-15T09:00:00Z",
      {"2025-01-16T09:00:00Z", "2025-01-17T09:00:00Z"} },
    { {minute = 30}, "fires every hour at :30:00", "2025-01-15T10:00:00Z",
      {"2025-01-15T10:30:00Z", "2025-01-15T11:30:00Z"} },
    { {day = 1}, "fires at midnight of day 1 of every month", "2025-01-15T10:00:00Z",
      {"2025-02-01T00:00:00Z", "2025-03-01T00:00:00Z"} },
    { {second = 30}, "fires every minute at :30", "2025-01-15T10:00:00Z",
      {"2025-01-15T10:00:30Z", "2025-01-15T10:01:30Z"} },
    { {month = 6}, "fires at midnight of June 1", "2025-01-15T10:00:00Z",
      {"2025-06-01T00:00:00Z", "2026-06-01T00:00:00Z"} },
  }) do
    local fields, what, from, expected = case[1], case[2], case[3], case[4]
    local k, v = next(fields)
    it(("{%s = %s} %s"):format(k, v, what), function()
      assert.are.same(expected, series(fields, from, 2))
    end)
  end

  it("day_of_week and week default to '*' but count as given (APScheduler)", function()
    -- Mondays at midnight: hour, minute, second take their minimum.
    assert.are.same({"2025-01-20T00:00:00Z", "2025-01-27T00:00:00Z"},
      series({day_of_week = "mon"}, "2025-01-15T10:00:00Z", 2))
    -- Every day of week 3, at midnight.
    assert.are.same({"2026-01-12T00:00:00Z", "2026-01-13T00:00:00Z"},
      series({week = 3}, "2025-01-20T10:00:00Z", 2))
  end)

  it("an empty table is refused rather than read as every second", function()
    local err = error_of(cron.parse, {})
    assert.are.equal("invalid", err.code)
    assert.are.equal("invalid cron spec: no fields given", err.message)
  end)
end)

describe("chronis.cron calendar edges", function()
  it("February 29 fires in leap years only", function()
    assert.are.equal("2028-02-29T00:00:00Z", nxt({month = 2, day = 29}, "2025-03-01T00:00:00Z"))
    -- 2100 is not a leap year.
    assert.are.equal("2104-02-29T00:00:00Z", nxt({month = 2, day = 29}, "2096-03-01T00:00:00Z"))
    -- The 5th Monday of February needs a leap year starting on a Monday.
    assert.are.equal("2044-02-29T00:00:00Z", nxt({month = 2, day = "5th mon"}, "2025-01-01T00:00:00Z"))
  end)

  it("returns nil past the year 9999", function()
    local spec = {year = 9999, month = 12, day = 31}
    assert.are.equal("9999-12-31T00:00:00Z", nxt(spec, "9999-01-01T00:00:00Z"))
    assert.is_nil(nxt(spec, "9999-12-31T00:00:00Z"))
    assert.is_nil(nxt({second = "*"}, "9999-12-31T23:59:59Z"))
    assert.is_nil(nxt({year = 2020, month = 1, day = 1}, "2021-01-01T00:00:00Z"))
  end)

  it("impossible specs are refused when parsed, naming their date fields", function()
    local impossible = {
      {{day = 31, month = "feb"}, "invalid cron spec: day '31' and month 'feb' never match a date"},
      {{day = 30, month = 2}, "invalid cron spec: day '30' and month '2' never match a date"},
      {{day = 31, month = "apr,jun,sep,nov"},
        "invalid cron spec: day '31' and month 'apr,jun,sep,nov' never match a date"},
      {{week = 1, month = 6}, "invalid cron spec: week '1' and month '6' never match a date"},
      {{week = 53, month = "mar-nov"},
        "invalid cron spec: week '53' and month 'mar-nov' never match a date"},
      {{day = "1st mon", day_of_week = "tue"},
        "invalid cron spec: day '1st mon' and day_of_week 'tue' never match a date"},
      {{day = "5th fri", month = 2, day_of_week = "mon"},
        "invalid cron spec: day '5th fri', day_of_week 'mon' and month '2' never match a date"},
      -- No Sunday February 29th in those years (2032 and 2060 have one).
      {{year = "2033-2040", month = 2, day = 29, day_of_week = "sun"},
        "invalid cron spec: day '29', day_of_week 'sun', month '2' and year '2033-2040' never " ..
        "match a date"},
      {"0 0 30 2 *", "invalid cron expression '0 0 30 2 *': day '30' and month '2' never match a date"},
      {"0 0 31 4,6,9,11 *",
        "invalid cron expression '0 0 31 4,6,9,11 *': day '31' and month '4,6,9,11' never match a date"},
      {"0 0 30-31 feb *",
        "invalid cron expression '0 0 30-31 feb *': day '30-31' and month 'feb' never match a date"},
      {"0 0 0 31 apr *",
        "invalid cron expression '0 0 0 31 apr *': day '31' and month 'apr' never match a date"},
    }
    for _, case in ipairs(impossible) do
      assert_invalid(case[1], case[2])
    end
    -- Possible, if rarely: a leap day, either of day and weekday (crontab),
    -- a year of the range that has a Sunday February 29th.
    for _, spec in ipairs({"0 0 29 2 *", "0 0 30 2 mon", {month = 2, day = 29, day_of_week = "sun",
        year = "2033-2040,2060"}}) do
      assert.is_true(cron.parse(spec))
      assert.is_string(nxt(spec, "2025-01-01T00:00:00Z"))
    end
  end)

  it("an impossible crontab string creates no job", function()
    local sched = chronis.scheduler({storage = chronis.storage.memory()})
    for _, args in ipairs({{cron = "0 0 30 2 *"}, {day = 30, month = 2}}) do
      local err = error_of(sched.create_cron_job, sched, {job_id = "never", func_name = "f",
        trigger_args = args})
      assert.are.equal("invalid", err.code)
      assert.truthy(err.message:find("day '30' and month '2' never match a date", 1, true),
        err.message)
      local e2 = error_of(function() sched:on(args.cron or args):config{job_id = "never"}:run("f") end)
      assert.are.equal("invalid", e2.code)
    end
    assert.are.equal(0, sched:store():count_jobs())
    sched:close()
  end)

  it("sparse but possible weekday combinations are found, not given up on", function()
    -- Sunday February 29th: 2032, then 2060.
    assert.are.same({"2032-02-29T00:00:00Z", "2060-02-29T00:00:00Z"},
      series({month = 2, day = 29, day_of_week = "sun"}, "2025-01-01T00:00:00Z", 2))
  end)
end)

describe("chronis.cron DST in America/New_York", function()
  local NY = "America/New_York"

  it("fall-back, fixed hour: 01:30 fires once, in the first pass", function()
    assert.are.same({"2025-11-02T05:30:00Z", "2025-11-03T06:30:00Z"},
      series({hour = 1, minute = 30}, "2025-11-01T12:00:00Z", 2, NY))
    -- Asked from inside the second pass, the next one is the next day's.
    assert.are.equal("2025-11-03T06:30:00Z", nxt({hour = 1, minute = 30}, "2025-11-02T06:10:00Z", NY))
  end)

  it("fall-back, hour range or list: still the first pass only", function()
    assert.are.same({"2025-11-02T05:30:00Z", "2025-11-02T07:30:00Z"},
      series({hour = "0-23", minute = 30}, "2025-11-02T05:00:00Z", 2, NY))
    assert.are.same({"2025-11-02T05:30:00Z", "2025-11-02T07:30:00Z"},
      series({hour = "1,2", minute = 30}, "2025-11-02T05:00:00Z", 2, NY))
  end)

  it("fall-back, hour starting with '*': both passes", function()
    local both = {"2025-11-02T05:30:00Z", "2025-11-02T06:30:00Z", "2025-11-02T07:30:00Z"}
    assert.are.same(both, series({minute = 30}, "2025-11-02T05:00:00Z", 3, NY))
    assert.are.same(both, series({hour = "*", minute = 30}, "2025-11-02T05:00:00Z", 3, NY))
    assert.are.same(both, series({hour = "*/1", minute = 30}, "2025-11-02T05:00:00Z", 3, NY))
    assert.are.same(both, series("30 * * * *", "2025-11-02T05:00:00Z", 3, NY))
    -- From inside the second pass, the rest of it still fires.
    assert.are.equal("2025-11-02T06:30:00Z", nxt({minute = 30}, "2025-11-02T06:10:00Z", NY))
  end)

  it("spring-forward: a wall time in the gap fires shifted by the gap", function()
    -- 02:30 does not exist on 2025-03-09; it fires at 03:30 EDT.
    assert.are.same({"2025-03-09T07:30:00Z", "2025-03-10T06:30:00Z"},
      series({hour = 2, minute = 30}, "2025-03-08T12:00:00Z", 2, NY))
  end)

  it("spring-forward: asked from inside the shifted hour, the gap time still fires", function()
    -- 03:10 EDT: 02:30, shifted to 03:30 EDT, is still ahead.
    assert.are.equal("2025-03-09T07:30:00Z", nxt({hour = 2, minute = 30}, "2025-03-09T07:10:00Z", NY))
    assert.are.equal("2025-03-10T06:30:00Z", nxt({hour = 2, minute = 30}, "2025-03-09T07:30:00Z", NY))
  end)

  it("spring-forward, hourly: the shifted slot and the real one fire once", function()
    assert.are.same({"2025-03-09T06:30:00Z", "2025-03-09T07:30:00Z", "2025-03-09T08:30:00Z"},
      series({minute = 30}, "2025-03-09T06:00:00Z", 3, NY))
    assert.are.same({"2025-03-09T06:00:00Z", "2025-03-09T07:00:00Z", "2025-03-09T08:00:00Z"},
      series("@hourly", "2025-03-09T05:30:00Z", 3, NY))
  end)

  it("spring-forward: a shifted gap time never passes a real earlier one", function()
    -- 02:45 (gap) fires at 03:45 EDT, after the real 03:00 EDT.
    assert.are.same({"2025-03-09T07:00:00Z", "2025-03-09T07:45:00Z", "2025-03-10T06:00:00Z"},
      series({hour = "2-3", minute = "0,45"}, "2025-03-09T06:50:00Z", 3, NY))
  end)

  it("reads naive `after` strings in the zone", function()
    assert.are.equal("2025-01-16T14:00:00Z", nxt({hour = 9}, "2025-01-15T10:00:00", NY))
    assert.are.equal("2025-01-15T14:00:00Z", nxt({hour = 9}, "2025-01-15T08:00:00", NY))
  end)
end)

describe("chronis.cron DST in Europe/Berlin", function()
  local BER = "Europe/Berlin"

  it("spring-forward: 02:30 fires at 03:30 CEST", function()
    assert.are.same({"2025-03-30T01:30:00Z", "2025-03-31T00:30:00Z"},
      series({hour = 2, minute = 30}, "2025-03-29T12:00:00Z", 2, BER))
  end)

  it("fall-back: fixed hour once, '*' hour twice", function()
    assert.are.same({"2025-10-26T00:30:00Z", "2025-10-27T01:30:00Z"},
      series({hour = 2, minute = 30}, "2025-10-25T12:00:00Z", 2, BER))
    assert.are.same({"2025-10-26T00:30:00Z", "2025-10-26T01:30:00Z", "2025-10-26T02:30:00Z"},
      series({minute = 30}, "2025-10-26T00:00:00Z", 3, BER))
  end)

  it("daily jobs keep their wall time across both changes", function()
    assert.are.same({"2025-03-29T08:00:00Z", "2025-03-30T07:00:00Z"},
      series({hour = 9}, "2025-03-29T00:00:00Z", 2, BER))
    assert.are.same({"2025-10-25T07:00:00Z", "2025-10-26T08:00:00Z"},
      series({hour = 9}, "2025-10-25T00:00:00Z", 2, BER))
  end)
end)

describe("chronis.cron crontab strings", function()
  it("5 fields: minute hour day month day_of_week", function()
    assert.are.equal("2025-01-15T10:05:00Z", nxt("*/5 * * * *", "2025-01-15T10:01:00Z"))
    assert.are.equal("2025-07-01T09:30:00Z", nxt("30 9 1 jan,jul *", "2025-01-15T10:01:00Z"))
    assert.are.equal("2025-01-15T10:05:00Z", nxt({cron = "*/5 * * * *"}, "2025-01-15T10:01:00Z"))
  end)

  it("6 fields lead with seconds", function()
    assert.are.same({"2025-01-15T10:00:10Z", "2025-01-15T10:00:20Z"},
      series("*/10 * * * * *", "2025-01-15T10:00:05Z", 2))
    assert.are.equal("2025-01-15T10:01:15Z", nxt("15 1 10 * * *", "2025-01-15T10:00:05Z"))
  end)

  it("day_of_week counts 0 = Sunday, 1 = Monday, 7 = Sunday", function()
    -- 2025-06-02 is a Monday.
    for _, dow in ipairs({"0", "7", "sun", "SUN"}) do
      assert.are.equal("2025-06-08T00:00:00Z", nxt("0 0 * * " .. dow, "2025-06-02T00:00:00Z"))
    end
    assert.are.equal("2025-06-09T00:00:00Z", nxt("0 0 * * 1", "2025-06-02T00:00:00Z"))
    -- The field form counts from Monday: 1 is Tuesday there.
    assert.are.equal("2025-06-03T00:00:00Z", nxt({day_of_week = 1}, "2025-06-02T00:00:00Z"))
    assert.are.same({"2025-06-06T00:00:00Z", "2025-06-07T00:00:00Z", "2025-06-08T00:00:00Z",
                     "2025-06-13T00:00:00Z"},
      series("0 0 * * 5-7", "2025-06-02T00:00:00Z", 4))
    assert.are.same({"2025-06-06T00:00:00Z", "2025-06-07T00:00:00Z", "2025-06-08T00:00:00Z"},
      series("0 0 * * fri-sun", "2025-06-02T00:00:00Z", 3))
    assert.are.same({"2025-06-08T00:00:00Z", "2025-06-15T00:00:00Z"},
      series("0 0 * * sun-sun", "2025-06-02T00:00:00Z", 2))
    assert.are.same({"2025-06-03T00:00:00Z", "2025-06-05T00:00:00Z", "2025-06-07T00:00:00Z",
                     "2025-06-08T00:00:00Z"},
      series("0 0 * * */2", "2025-06-02T00:00:00Z", 4))
  end)

  it("weekday names and ranges", function()
    -- From Friday 10:00 the next weekday 09:00 is Monday.
    assert.are.equal("2025-06-09T09:00:00Z", nxt("0 9 * * mon-fri", "2025-06-06T10:00:00Z"))
    assert.are.equal("2025-06-09T09:00:00Z", nxt("0 9 * * 1-5", "2025-06-06T10:00:00Z"))
  end)

  it("day and day_of_week both restricted: either matches (OR)", function()
    -- The 10th, or any Friday: Fri 6th, Tue 10th, Fri 13th.
    assert.are.same({"2025-06-06T00:00:00Z", "2025-06-10T00:00:00Z", "2025-06-13T00:00:00Z"},
      series("0 0 10 * 5", "2025-06-01T00:00:00Z", 3))
  end)

  it("one of them '*': only the other restricts (AND)", function()
    assert.are.same({"2025-06-10T00:00:00Z", "2025-07-10T00:00:00Z"},
      series("0 0 10 * *", "2025-06-01T00:00:00Z", 2))
    assert.are.same({"2025-06-06T00:00:00Z", "2025-06-13T00:00:00Z"},
      series("0 0 * * 5", "2025-06-01T00:00:00Z", 2))
  end)

  it("macros", function()
    local after = "2025-06-04T10:20:00Z" -- a Wednesday
    assert.are.equal("2026-01-01T00:00:00Z", nxt("@yearly", after))
    assert.are.equal("2026-01-01T00:00:00Z", nxt("@annually", after))
    assert.are.equal("2025-07-01T00:00:00Z", nxt("@monthly", after))
    assert.are.equal("2025-06-08T00:00:00Z", nxt("@weekly", after))
    assert.are.equal("2025-06-05T00:00:00Z", nxt("@daily", after))
    assert.are.equal("2025-06-05T00:00:00Z", nxt("@midnight", after))
    assert.are.equal("2025-06-04T11:00:00Z", nxt("@hourly", after))
    assert.are.equal("2025-06-04T11:00:00Z", nxt({cron = "@hourly"}, after))
  end)
end)

describe("chronis.cron `after`", function()
  it("takes integer microseconds", function()
    -- 1736935200000000 µs = 2025-01-15T10:00:00Z
    assert.are.equal("2025-01-15T10:30:00Z", nxt({minute = 30}, 1736935200000000))
  end)

  it("takes ISO strings with an offset", function()
    assert.are.equal("2025-01-15T10:30:00Z", nxt({minute = 30}, "2025-01-15T11:00:00+01:00"))
    assert.are.equal("2025-01-15T10:30:00Z", nxt({minute = 30}, "2025-01-15T05:10:00-05:00"))
  end)

  it("is strictly before the result", function()
    assert.are.equal("2025-01-15T11:30:00Z", nxt({minute = 30}, "2025-01-15T10:30:00Z"))
    assert.are.equal("2025-01-15T10:30:00Z", nxt({minute = 30}, "2025-01-15T10:29:59.999999Z"))
    assert.are.equal("2025-01-15T11:30:00Z", nxt({minute = 30}, "2025-01-15T10:30:00.000001Z"))
    assert.are.equal("2025-01-15T11:30:00Z", nxt({minute = 30}, 1736937000000000))
  end)

  it("defaults zone to UTC and rejects unknown zones", function()
    assert.are.equal("2025-01-15T09:00:00Z", nxt({hour = 9}, "2025-01-15T08:00:00"))
    local err = error_of(cron.next, {hour = 9}, "2025-01-15T08:00:00Z", "Mars/Olympus")
    assert.are.equal("invalid", err.code)
    assert.are.equal("invalid timezone 'Mars/Olympus'", err.message)
  end)

  it("rejects a malformed time", function()
    assert.are.equal("invalid", error_of(cron.next, {hour = 9}, "yesterday").code)
  end)
end)

describe("chronis.cron errors name the field", function()
  it("accepts valid specs with true", function()
    assert.is_true(cron.parse({hour = 9, minute = "*/15", day_of_week = "mon-fri"}))
    assert.is_true(cron.parse("*/5 * * * *"))
    assert.is_true(cron.parse({cron = "@daily"}))
  end)

  it("values out of range, for every field", function()
    local cases = {
      {{year = 1969}, "invalid cron field 'year': 1969 is out of range 1970-9999"},
      {{year = 10000}, "invalid cron field 'year': 10000 is out of range 1970-9999"},
      {{month = 13}, "invalid cron field 'month': 13 is out of range 1-12"},
      {{month = 0}, "invalid cron field 'month': 0 is out of range 1-12"},
      {{day = 32}, "invalid cron field 'day': 32 is out of range 1-31"},
      {{day = 0}, "invalid cron field 'day': 0 is out of range 1-31"},
      {{week = 54}, "invalid cron field 'week': 54 is out of range 1-53"},
      {{day_of_week = 7}, "invalid cron field 'day_of_week': 7 is out of range 0-6"},
      {{hour = 25}, "invalid cron field 'hour': 25 is out of range 0-23"},
      {{hour = -1}, "invalid cron field 'hour': -1 is out of range 0-23"},
      {{minute = 60}, "invalid cron field 'minute': 60 is out of range 0-59"},
      {{second = "0-60"}, "invalid cron field 'second': 60 is out of range 0-59"},
    }
    for _, c in ipairs(cases) do assert_invalid(c[1], c[2]) end
  end)

  it("bad steps, reversed ranges and unknown values", function()
    assert_invalid({minute = "*/0"}, "invalid cron field 'minute': step must be a positive integer in '*/0'")
    assert_invalid({minute = "5/x"}, "invalid cron field 'minute': step must be a positive integer in '5/x'")
    -- Ranges wrap around (see "wrap-around ranges"), except years.
    assert_invalid({year = "2030-2025"}, "invalid cron field 'year': range 2030-2025 is reversed")
    assert_invalid({day = "lastx"}, "invalid cron field 'day': unknown value 'lastx'")
    assert_invalid({month = "foo"}, "invalid cron field 'month': unknown value 'foo'")
    assert_invalid({hour = "mon"}, "invalid cron field 'hour': unknown value 'mon'")
    assert_invalid({hour = "1,,2"}, "invalid cron field 'hour': empty item in '1,,2'")
  end)

  it("nth weekday terms", function()
    assert_invalid({day = "2nd 1"},
      "invalid cron field 'day': '2nd 1': expected a weekday name (mon..sun) after '2nd'")
    assert_invalid({day = "6th fri"},
      "invalid cron field 'day': '6th fri': only 1st..5th or last may come before a weekday")
    assert_invalid({day = "last foo"},
      "invalid cron field 'day': 'last foo': expected a weekday name (mon..sun) after 'last'")
    assert_invalid({day = "1st"}, "invalid cron field 'day': '1st' needs a weekday after it, as in '1st fri'")
  end)

  it("empty expressions", function()
    assert_invalid({hour = ""}, "invalid cron field 'hour': empty expression")
    assert_invalid({day = "  "}, "invalid cron field 'day': empty expression")
  end)

  it("unknown fields and bad values", function()
    assert_invalid({hours = 1}, "unknown cron field 'hours'; did you mean 'hour'?")
    assert_invalid({hour = 1, timezone = "UTC"}, "unknown cron field 'timezone' (expected year, month, "
      .. "day, week, day_of_week, hour, minute, second, cron, dialect, job_id)")
    assert_invalid({hours = 1, minutes = 5, hour = 2},
      "unknown cron fields 'hours' (did you mean 'hour'?) and 'minutes' (did you mean 'minute'?)")
    assert_invalid({hour = true}, "invalid cron field 'hour': expected an integer or a string, got boolean")
    assert_invalid({hour = 1.5}, "invalid cron field 'hour': 1.5 is not an integer")
    assert_invalid({cron = "* * * * *", hour = 1},
      "invalid cron spec: give either 'cron' or cron fields, not both")
  end)

  it("crontab strings", function()
    assert_invalid("* * * *", "invalid cron expression '* * * *': expected 5, 6 or 7 fields, got 4")
    assert_invalid("* * * * * * * *",
      "invalid cron expression '* * * * * * * *': expected 5, 6 or 7 fields, got 8")
    assert_invalid("", "invalid cron expression '': expected 5, 6 or 7 fields, got 0")
    assert_invalid("@fortnightly", "invalid cron expression '@fortnightly': unknown macro")
    assert_invalid("* 24 * * *", "invalid cron field 'hour': 24 is out of range 0-23")
    assert_invalid("* * * * 8", "invalid cron field 'day_of_week': 8 is out of range 0-7")
    assert_invalid("* * * 13 *", "invalid cron field 'month': 13 is out of range 1-12")
    assert_invalid("61 * * * * *", "invalid cron field 'second': 61 is out of range 0-59")
    assert_invalid({cron = "* * *"}, "invalid cron expression '* * *': expected 5, 6 or 7 fields, got 3")
  end)

  it("rejects specs of the wrong type", function()
    assert.has_error(function() cron.parse(42) end)
    assert.has_error(function() cron.parse(nil) end)
  end)
end)

-- The forms other cron dialects accept. Cases follow the peers' documented
-- behaviour (Quartz, croner, robfig/cron, Jenkins, Vixie cron).
describe("chronis.cron day letters L, L-n, LW and nW (Quartz)", function()
  it("L is the last day of the month, leap years included", function()
    -- Quartz: "0 15 10 L * ?" fires at 10:15 on the last day of every month.
    assert.are.same({"2024-01-31T10:15:00Z", "2024-02-29T10:15:00Z", "2024-03-31T10:15:00Z"},
      series("0 15 10 L * ?", "2024-01-15T00:00:00Z", 3))
    assert.are.same({"2024-01-31T00:00:00Z", "2024-02-29T00:00:00Z"},
      series({day = "L"}, "2024-01-15T00:00:00Z", 2))
  end)

  it("L-n is n days before the last day", function()
    assert.are.same({"2024-01-29T10:15:00Z", "2024-02-27T10:15:00Z", "2024-03-29T10:15:00Z"},
      series("0 15 10 L-2 * ?", "2024-01-15T00:00:00Z", 3))
    assert.are.equal("2025-06-27T00:00:00Z", nxt({day = "L-3"}, "2025-06-01T00:00:00Z"))
  end)

  it("LW is the last weekday of the month", function()
    -- May 31 2025 is a Saturday, August 31 a Sunday: Friday before.
    assert.are.same({"2025-05-30T12:00:00Z", "2025-06-30T12:00:00Z", "2025-07-31T12:00:00Z",
                     "2025-08-29T12:00:00Z"},
      series("0 0 12 LW * ?", "2025-05-01T00:00:00Z", 4))
  end)

  it("nW is the weekday nearest day n, never leaving the month", function()
    -- June 15 2025 is a Sunday (Monday 16th), November 15 a Saturday (Friday 14th).
    assert.are.same({"2025-06-16T12:00:00Z", "2025-07-15T12:00:00Z"},
      series("0 0 12 15W * ?", "2025-06-01T00:00:00Z", 2))
    assert.are.equal("2025-11-14T12:00:00Z", nxt("0 12 15W * *", "2025-11-01T00:00:00Z"))
    -- 1W on Saturday November 1st is Monday the 3rd, not October 31st.
    assert.are.same({"2025-11-03T00:00:00Z", "2025-12-01T00:00:00Z", "2026-01-01T00:00:00Z",
                     "2026-02-02T00:00:00Z"},
      series("0 0 1W * *", "2025-10-15T00:00:00Z", 4))
    -- 31W: Sunday August 31st is Friday the 29th; months without a 31st never fire.
    assert.are.same({"2025-08-29T00:00:00Z", "2025-10-31T00:00:00Z", "2025-12-31T00:00:00Z"},
      series({day = "31W"}, "2025-08-01T00:00:00Z", 3))
  end)

  it("combines with lists and Vixie's day rule", function()
    assert.are.same({"2025-06-15T00:00:00Z", "2025-06-30T00:00:00Z", "2025-07-15T00:00:00Z"},
      series("0 0 15,L * *", "2025-06-01T00:00:00Z", 3))
  end)

  it("refuses malformed letters, naming the field", function()
    assert_invalid({day = "L-31"}, "invalid cron field 'day': 'L-31': expected L-0 .. L-30 (days before the last)")
    assert_invalid({day = "32W"}, "invalid cron field 'day': 32 is out of range 1-31")
    assert_invalid({day = "LX"}, "invalid cron field 'day': unknown value 'LX'")
    assert_invalid("0 0 30W 2 *", "invalid cron expression '0 0 30W 2 *': day '30W' and month '2' never match a date")
  end)
end)

describe("chronis.cron nth and last weekdays: 5L, FRIL, 6#3, MON#1, FRI#L", function()
  it("xL is the last weekday x of the month", function()
    -- crontab numbering: 5 = Friday, 6 = Saturday. June 27/28 2025.
    assert.are.same({"2025-06-27T10:15:00Z", "2025-07-25T10:15:00Z"},
      series("15 10 * * 5L", "2025-06-01T00:00:00Z", 2))
    assert.are.equal("2025-06-28T10:15:00Z", nxt("15 10 * * 6L", "2025-06-01T00:00:00Z"))
    assert.are.equal("2025-06-27T10:15:00Z", nxt("15 10 * * FRIL", "2025-06-01T00:00:00Z"))
    -- Quartz numbering: "0 15 10 ? * 6L" is the last Friday.
    assert.are.equal("2025-06-27T10:15:00Z",
      nxt({cron = "0 15 10 ? * 6L", dialect = "quartz"}, "2025-06-01T00:00:00Z"))
    -- Field tables count from Monday = 0: 4L is the last Friday.
    assert.are.equal("2025-06-27T00:00:00Z", nxt({day_of_week = "4L"}, "2025-06-01T00:00:00Z"))
  end)

  it("x#n is the nth weekday x of the month, x#L the last (croner)", function()
    assert.are.same({"2025-06-20T10:15:00Z", "2025-07-18T10:15:00Z"},
      series("15 10 * * 5#3", "2025-06-01T00:00:00Z", 2))
    assert.are.same({"2025-06-20T10:15:00Z", "2025-07-18T10:15:00Z"},
      series({cron = "0 15 10 ? * 6#3", dialect = "quartz"}, "2025-06-01T00:00:00Z", 2))
    assert.are.same({"2025-06-02T00:00:00Z", "2025-07-07T00:00:00Z"},
      series("0 0 * * MON#1", "2025-06-01T00:00:00Z", 2))
    assert.are.equal("2025-06-27T00:00:00Z", nxt("0 0 * * FRI#L", "2025-06-01T00:00:00Z"))
    -- The second Sunday, in one crontab word.
    assert.are.same({"2025-06-08T00:00:00Z", "2025-07-13T00:00:00Z"},
      series("0 0 * * SUN#2", "2025-06-01T00:00:00Z", 2))
    assert.are.equal("2025-06-13T00:00:00Z", nxt({day_of_week = "fri#2"}, "2025-06-01T00:00:00Z"))
    -- A fifth Wednesday exists in some months only.
    assert.are.same({"2025-04-30T00:00:00Z", "2025-07-30T00:00:00Z"},
      series("0 0 * * WED#5", "2025-04-01T00:00:00Z", 2))
  end)

  it("mixes with plain weekdays and, in crontab, ORs with a restricted day", function()
    assert.are.same({"2025-06-07T00:00:00Z", "2025-06-14T00:00:00Z", "2025-06-20T00:00:00Z"},
      series("0 0 * * sat,5#3", "2025-06-01T00:00:00Z", 3))
    -- Vixie: the 1st of the month or the third Friday.
    assert.are.same({"2025-06-20T00:00:00Z", "2025-07-01T00:00:00Z", "2025-07-18T00:00:00Z"},
      series("0 0 1 * 5#3", "2025-06-01T00:00:00Z", 3))
  end)

  it("refuses malformed terms", function()
    assert_invalid("0 0 * * 5#6", "invalid cron field 'day_of_week': '5#6': expected 1..5 or L after '#'")
    assert_invalid("0 0 * * L",
      "invalid cron field 'day_of_week': 'L' needs a weekday before it, as in '5L' or 'FRIL' (the last Friday)")
    assert_invalid("0 0 * * 8L", "invalid cron field 'day_of_week': 8 is out of range 0-7")
    assert_invalid("0 0 * * XYZ#1", "invalid cron field 'day_of_week': unknown value 'XYZ#1'")
    assert_invalid("0 0 * * #1", "invalid cron field 'day_of_week': '#1' needs a weekday before '#'")
  end)
end)

describe("chronis.cron '?' (Quartz, croner)", function()
  it("means any day in day and day_of_week, and does not restrict (Vixie rule)", function()
    assert.are.same({"2025-06-02T12:00:00Z", "2025-06-09T12:00:00Z"},
      series("0 0 12 ? * MON", "2025-06-01T00:00:00Z", 2))
    assert.are.same({"2025-06-15T12:00:00Z", "2025-07-15T12:00:00Z"},
      series("0 0 12 15 * ?", "2025-06-01T00:00:00Z", 2))
    assert.are.equal("2025-06-02T00:00:00Z", nxt({day = "?", day_of_week = "mon"}, "2025-06-01T00:00:00Z"))
  end)

  it("is refused in other fields", function()
    assert_invalid("0 ? * * *", "invalid cron field 'hour': '?' is only allowed in day and day_of_week")
    assert_invalid({day = "?5"}, "invalid cron field 'day': unknown value '?5'")
  end)
end)

describe("chronis.cron wrap-around ranges", function()
  it("months: Nov-Feb runs through the new year", function()
    assert.are.same({"2025-11-01T00:00:00Z", "2025-12-01T00:00:00Z", "2026-01-01T00:00:00Z",
                     "2026-02-01T00:00:00Z", "2026-11-01T00:00:00Z"},
      series("0 0 1 Nov-Feb *", "2025-03-01T00:00:00Z", 5))
    assert.are.equal("2025-11-01T00:00:00Z", nxt({month = "nov-mar"}, "2025-04-01T00:00:00Z"))
  end)

  it("weekdays: Fri-Mon, Thu-Tue/2, 7-mon, tue-0", function()
    -- 2025-06-02 is a Monday.
    assert.are.same({"2025-06-06T00:00:00Z", "2025-06-07T00:00:00Z", "2025-06-08T00:00:00Z",
                     "2025-06-09T00:00:00Z", "2025-06-13T00:00:00Z"},
      series("0 0 * * Fri-Mon", "2025-06-02T00:00:00Z", 5))
    -- The step counts across the turn: Thursday, Saturday, Monday.
    assert.are.same({"2025-06-05T00:00:00Z", "2025-06-07T00:00:00Z", "2025-06-09T00:00:00Z",
                     "2025-06-12T00:00:00Z"},
      series("0 0 * * Thu-Tue/2", "2025-06-02T00:00:00Z", 4))
    assert.are.same({"2025-06-08T00:00:00Z", "2025-06-09T00:00:00Z", "2025-06-15T00:00:00Z"},
      series("0 0 * * 7-mon", "2025-06-02T00:00:00Z", 3))
    assert.are.same({"2025-06-03T00:00:00Z", "2025-06-04T00:00:00Z", "2025-06-05T00:00:00Z",
                     "2025-06-06T00:00:00Z", "2025-06-07T00:00:00Z", "2025-06-08T00:00:00Z",
                     "2025-06-10T00:00:00Z"},
      series("0 0 * * tue-0", "2025-06-02T00:00:00Z", 7))
    -- Field tables count from Monday = 0: sat-mon is 5, 6, 0.
    assert.are.same({"2025-06-07T00:00:00Z", "2025-06-08T00:00:00Z", "2025-06-09T00:00:00Z",
                     "2025-06-14T00:00:00Z"},
      series({day_of_week = "sat-mon"}, "2025-06-02T00:00:00Z", 4))
  end)

  it("hours: 22-2 spans midnight, 22-2/2 steps across it", function()
    assert.are.same({"2025-06-01T22:00:00Z", "2025-06-01T23:00:00Z", "2025-06-02T00:00:00Z",
                     "2025-06-02T01:00:00Z", "2025-06-02T02:00:00Z", "2025-06-02T22:00:00Z"},
      series("0 22-2 * * *", "2025-06-01T03:00:00Z", 6))
    assert.are.same({"2025-06-01T22:00:00Z", "2025-06-02T00:00:00Z", "2025-06-02T02:00:00Z",
                     "2025-06-02T22:00:00Z"},
      series("0 22-2/2 * * *", "2025-06-01T03:00:00Z", 4))
    -- All hours but 4.
    assert.are.same({"2025-06-01T03:00:00Z", "2025-06-01T05:00:00Z"},
      series({hour = "5-3"}, "2025-06-01T02:30:00Z", 2))
  end)

  it("days of the month: 28-3 skips the days a month lacks", function()
    assert.are.same({"2025-02-28T00:00:00Z", "2025-03-01T00:00:00Z", "2025-03-02T00:00:00Z",
                     "2025-03-03T00:00:00Z", "2025-03-28T00:00:00Z"},
      series("0 0 28-3 * *", "2025-02-20T00:00:00Z", 5))
  end)

  it("keep their wall times across DST", function()
    -- New York springs forward at 02:00 on 2025-03-09: 02:30 fires at 03:30 EDT.
    -- From 22:00 EST: 23:30 and 00:30, 01:30 EST, 02:30 as 03:30 EDT, then 23:30 EDT.
    assert.are.same({"2025-03-09T04:30:00Z", "2025-03-09T05:30:00Z", "2025-03-09T06:30:00Z",
                     "2025-03-09T07:30:00Z", "2025-03-10T03:30:00Z"},
      series("30 23-2 * * *", "2025-03-09T03:00:00Z", 5, "America/New_York"))
  end)
end)

describe("chronis.cron '/n' without a start (croner)", function()
  it("reads as '*/n'", function()
    assert.are.same({"2025-06-01T00:20:00Z", "2025-06-01T00:40:00Z", "2025-06-01T01:00:00Z"},
      series("/20 * * * *", "2025-06-01T00:00:00Z", 3))
    assert.are.equal(nxt("*/3 * * * * *", "2025-06-01T00:00:01Z"),
      nxt("/3 * * * * *", "2025-06-01T00:00:01Z"))
  end)
end)

describe("chronis.cron TZ= and CRON_TZ= prefixes (robfig/cron, Kubernetes)", function()
  it("give the expression its zone", function()
    assert.are.equal("2025-06-01T07:00:00Z", nxt("TZ=Europe/Paris 0 9 * * *", "2025-06-01T00:00:00Z"))
    -- 06:00 in Tokyo is 21:00 UTC the day before.
    assert.are.equal("2025-06-01T21:00:00Z", nxt("CRON_TZ=Asia/Tokyo 0 6 * * ?", "2025-06-01T00:00:00Z"))
    assert.are.equal("2025-06-02T07:00:00Z", nxt("TZ=Europe/Paris @daily", "2025-06-01T00:00:00Z") and
      nxt("TZ=Europe/Paris 0 9 * * *", "2025-06-01T07:00:00Z"))
    assert.are.equal("2025-06-01T22:00:00Z", nxt("TZ=Europe/Paris @daily", "2025-06-01T00:00:00Z"))
  end)

  it("win over the zone argument, and read naive times in their zone", function()
    assert.are.equal("2025-06-01T21:00:00Z",
      nxt("CRON_TZ=Asia/Tokyo 0 6 * * *", "2025-06-01T00:00:00Z", "America/New_York"))
    -- 08:00 in Paris is 06:00Z; the next 09:00 in Paris is 07:00Z.
    assert.are.equal("2025-06-01T07:00:00Z", nxt("TZ=Europe/Paris 0 9 * * *", "2025-06-01T08:00:00"))
  end)

  it("follow the DST rules of the zone: gap shifted, fold once for a fixed hour", function()
    local gap = "CRON_TZ=America/New_York 30 2 * * *"
    assert.are.same({"2025-03-09T07:30:00Z", "2025-03-10T06:30:00Z"},
      series(gap, "2025-03-08T12:00:00Z", 2))
    assert.are.same({"2025-11-02T05:30:00Z", "2025-11-03T06:30:00Z"},
      series("TZ=America/New_York 30 1 * * *", "2025-11-01T12:00:00Z", 2))
    assert.are.same({"2025-11-02T05:30:00Z", "2025-11-02T06:30:00Z", "2025-11-02T07:30:00Z"},
      series("TZ=America/New_York 30 * 2 11 *", "2025-11-02T05:00:00Z", 3))
    -- The last Sunday of March in Berlin is the spring-forward day: 02:30 -> 03:30 CEST.
    assert.are.same({"2025-03-30T01:30:00Z", "2026-03-29T01:30:00Z"},
      series("TZ=Europe/Berlin 30 2 * 3 SUN#L", "2025-01-01T00:00:00Z", 2))
    -- Its last Sunday of October has the fold; '*' hours fire in both passes.
    assert.are.same({"2025-10-26T00:30:00Z", "2025-10-26T01:30:00Z", "2025-10-26T02:30:00Z"},
      series("TZ=Europe/Berlin 30 * * 10 0L", "2025-10-26T00:00:00Z", 3))
  end)

  it("refuse unknown or missing zones", function()
    assert_invalid("TZ=Mars/Olympus * * * * *",
      "invalid cron expression 'TZ=Mars/Olympus * * * * *': invalid timezone 'Mars/Olympus'")
    assert_invalid("TZ= * * * * *",
      "invalid cron expression 'TZ= * * * * *': expected a zone name after TZ=, as in 'TZ=Europe/Paris 0 9 * * *'")
  end)

  it("set a job's fire times in that zone", function()
    local sched = chronis.scheduler({storage = chronis.storage.memory()})
    local job = sched:create_cron_job({job_id = "paris", func_name = "f",
      trigger_args = {cron = "TZ=Europe/Paris 0 9 * * *"}})
    assert.are.equal(nxt("TZ=Europe/Paris 0 9 * * *", job.created_at), job.next_run_time)
    assert.are_not.equal(nxt("0 9 * * *", job.created_at), job.next_run_time)
    assert.are.equal("09:00:00+0", chronis.tz.format_local(job.next_run_time, "Europe/Paris"):sub(12, 21))
    sched:close()
  end)
end)

describe("chronis.cron dialects: 6 and 7 fields, weekday numbering", function()
  it("standard reads 6 fields seconds first and 7 with the year last", function()
    assert.are.equal("2026-01-01T10:15:00Z", nxt("0 15 10 * * ? 2026", "2025-06-01T00:00:00Z"))
    assert.are.same({"2026-06-01T00:00:00Z", "2028-06-01T00:00:00Z"},
      series("0 0 0 1 6 * 2026-2030/2", "2025-06-01T00:00:00Z", 2))
  end)

  it("a year-last expression misread as seconds-first says how it was read", function()
    assert_invalid("0 9 * * MON-FRI 2025",
      "invalid cron field 'month': unknown value 'MON-FRI' (6 fields read as second minute hour " ..
      "day month day_of_week, dialect 'standard'; with dialect = 'year_last' (minute hour day " ..
      "month day_of_week year) it means: at 09:00 on Monday through Friday in 2025)")
  end)

  it("year_last reads 6 fields as minute hour day month day_of_week year", function()
    local spec = {cron = "0 9 * * MON-FRI 2025", dialect = "year_last"}
    assert.are.same({"2025-06-02T09:00:00Z", "2025-06-03T09:00:00Z"},
      series(spec, "2025-06-01T00:00:00Z", 2))
    assert.is_nil(nxt(spec, "2025-12-31T10:00:00Z"))
    assert.are.equal("2025-06-02T09:00:00Z",
      nxt({cron = "0 9 * * mon", dialect = "year_last"}, "2025-06-01T00:00:00Z"))
  end)

  it("quartz counts weekdays 1-7 from Sunday and ANDs day and weekday", function()
    local function q(cron) return {cron = cron, dialect = "quartz"} end
    assert.are.equal("2025-06-02T12:00:00Z", nxt(q("0 0 12 ? * 2"), "2025-06-01T00:00:00Z"))
    assert.are.equal("2025-06-08T12:00:00Z", nxt(q("0 0 12 ? * 1"), "2025-06-01T12:00:00Z"))
    assert.are.equal("2025-06-07T12:00:00Z", nxt(q("0 0 12 ? * 7"), "2025-06-01T00:00:00Z"))
    assert.are.same({"2025-06-02T12:00:00Z", "2025-06-06T12:00:00Z"},
      series(q("0 0 12 ? * MON-FRI/4"), "2025-06-01T00:00:00Z", 2))
    assert.are.same({"2025-06-13T00:00:00Z", "2026-02-13T00:00:00Z"},
      series(q("0 0 0 13 * 6"), "2025-01-01T00:00:00Z", 2))
    assert.are.equal("2025-06-03T12:00:00Z", nxt("0 0 12 ? * 2", "2025-06-01T00:00:00Z"))
    local err = error_of(cron.parse, q("0 0 12 ? * 0"))
    assert.are.equal("invalid", err.code)
    assert.are.equal("invalid cron field 'day_of_week': 0 is out of range 1-7 (6 fields read as " ..
      "second minute hour day month day_of_week, dialect 'quartz'; with dialect = 'standard' " ..
      "(second minute hour day month day_of_week) it means: at 12:00 on Sunday)", err.message)
  end)

  it("each dialect names the field counts it takes", function()
    assert_invalid({cron = "0 0 12 * * *", dialect = "vixie"},
      "invalid cron expression '0 0 12 * * *': expected 5 fields in dialect 'vixie', got 6")
    assert_invalid({cron = "0 12 * * *", dialect = "quartz"},
      "invalid cron expression '0 12 * * *': expected 6 or 7 fields in dialect 'quartz', got 5")
    assert_invalid({cron = "0 0 12 * * * 2025", dialect = "year_last"},
      "invalid cron expression '0 0 12 * * * 2025': expected 5 or 6 fields in dialect 'year_last', got 7")
    assert.are.equal("2025-06-01T12:00:00Z", nxt({cron = "0 12 * * *", dialect = "vixie"}, "2025-06-01T00:00:00Z"))
  end)

  it("refuses unknown dialects and a dialect without a crontab string", function()
    assert_invalid({cron = "* * * * *", dialect = "spring"},
      "invalid cron spec: unknown dialect 'spring' (expected standard, vixie, quartz or year_last)")
    assert_invalid({hour = 1, dialect = "quartz"}, "invalid cron spec: 'dialect' applies to a 'cron' string")
  end)

  it("is a trigger argument of jobs", function()
    local sched = chronis.scheduler({storage = chronis.storage.memory()})
    local job = sched:on({cron = "0 9 * * MON-FRI 2030", dialect = "year_last"})
      :config{job_id = "ylast"}:run("f")
    assert.are.equal("2030-01-01T09:00:00Z", job.next_run_time)
    local err = error_of(sched.create_cron_job, sched, {job_id = "bad", func_name = "f",
      trigger_args = {cron = "0 9 * * *", dialect = "cronie"}})
    assert.are.equal("invalid trigger_args 'dialect': unknown dialect 'cronie' (expected " ..
      "standard, vixie, quartz or year_last)", err.message)
    sched:close()
  end)
end)

describe("chronis.cron @every <duration> (robfig/cron)", function()
  it("adds elapsed time to the previous fire, in whole seconds", function()
    assert.are.same({"2025-06-01T01:30:00Z", "2025-06-01T03:00:00Z"},
      series("@every 1h30m", "2025-06-01T00:00:00Z", 2))
    assert.are.equal("2025-06-01T01:30:00Z", nxt("@every 1.5h", "2025-06-01T00:00:00Z"))
    assert.are.equal("2025-06-01T00:01:30Z", nxt("@every 90s", "2025-06-01T00:00:00Z"))
    assert.are.equal("2025-06-01T00:00:10Z", nxt("@every 10s", "2025-06-01T00:00:00.5Z"))
    -- Elapsed time, not wall time: an hour across New York's spring-forward.
    assert.are.equal("2025-03-09T07:30:00Z", nxt("@every 1h", "2025-03-09T06:30:00Z", "America/New_York"))
  end)

  it("refuses durations that are not whole seconds of at least 1s", function()
    local msg = "@every takes a duration of whole seconds, at least 1s, as in '@every 1h30m' or " ..
      "'@every 90s' (units h, m, s)"
    for _, e in ipairs({"@every", "@every 500ms", "@every 0s", "@every 1d", "@every 1.5s", "@every h"}) do
      assert_invalid(e, ("invalid cron expression '%s': %s"):format(e, msg))
    end
  end)
end)

describe("chronis.cron hashed H (Jenkins)", function()
  local function minutes_of(spec, n)
    local out = {}
    for i, t in ipairs(series(spec, "2025-05-31T23:59:30Z", n)) do out[i] = tonumber(t:sub(15, 16)) end
    return out
  end

  it("needs a job id, and says so", function()
    assert_invalid("H * * * *", "invalid cron field 'minute': 'H' needs a job id to hash (create " ..
      "the job with a job_id, or give job_id to chronis.cron)")
    assert_invalid({cron = "H * * * *", job_id = 7}, "invalid cron spec: 'job_id' must be a string, got number")
  end)

  it("picks one stable value per job id and field", function()
    -- Fixed by the job id alone (docs/time.md): the same in every process.
    assert.are.equal("2025-06-01T03:10:00Z", nxt({cron = "H H(0-5) * * *", job_id = "abc"}, "2025-06-01T00:00:00Z"))
    assert.are.equal(nxt({cron = "H * * * *", job_id = "nightly"}, "2025-06-01T00:00:00Z"),
      nxt({minute = "H", job_id = "nightly"}, "2025-06-01T00:00:00Z"))
  end)

  it("spreads a thousand jobs over the hour", function()
    local per = {}
    for i = 1, 1000 do
      local m = tonumber(nxt({cron = "H * * * *", job_id = "job-" .. i}, "2025-06-01T00:00:00Z"):sub(15, 16))
      per[m] = (per[m] or 0) + 1
    end
    local used, most = 0, 0
    for _, k in pairs(per) do used, most = used + 1, math.max(most, k) end
    assert.are.equal(60, used)
    assert.is_true(most < 40, "most jobs in one minute: " .. most)
  end)

  it("H/n steps from a hashed start below n; H(a-b)/n stays in a-b", function()
    for _, id in ipairs({"a", "b", "c", "report-42"}) do
      local m = minutes_of({cron = "H/15 * * * *", job_id = id}, 4)
      assert.is_true(m[1] < 15)
      assert.are.same({m[1], m[1] + 15, m[1] + 30, m[1] + 45}, m)
      local h = minutes_of({cron = "H(0-29)/10 * * * *", job_id = id}, 4)
      assert.is_true(h[1] < 10)
      assert.are.same({h[1], h[1] + 10, h[1] + 20, h[1]}, h)
      local d = tonumber(nxt({cron = "0 0 H * *", job_id = id}, "2025-01-31T00:00:00Z"):sub(9, 10))
      assert.is_true(d >= 1 and d <= 28)
    end
  end)

  it("refuses H in the year field and malformed H terms", function()
    assert_invalid({cron = "0 0 0 1 1 * H", job_id = "x"}, "invalid cron field 'year': 'H' is not allowed in this field")
    assert_invalid({cron = "H(5) * * * *", job_id = "x"}, "invalid cron field 'minute': expected H(a-b) in 'H(5)'")
    assert_invalid({cron = "H(30-10) * * * *", job_id = "x"},
      "invalid cron field 'minute': range in 'H(30-10)' is reversed")
  end)

  it("hashes the job's id when a job is created", function()
    local sched = chronis.scheduler({storage = chronis.storage.memory()})
    local job = sched:on("H H * * *"):config{job_id = "nightly-report"}:run("f")
    assert.are.equal(nxt({cron = "H H * * *", job_id = "nightly-report"}, job.created_at), job.next_run_time)
    -- A generated id is hashed the same way.
    local auto = sched:create_cron_job({func_name = "f", trigger_args = {cron = "H * * * *"}})
    assert.are.equal(nxt({cron = "H * * * *", job_id = auto.job_id}, auto.created_at), auto.next_run_time)
    sched:close()
  end)
end)

describe("chronis.cron @reboot (Vixie cron)", function()
  local H = require "support.engine_helper"
  after_each(H.cleanup)

  it("has no fire time of its own", function()
    assert.is_true(cron.parse("@reboot"))
    assert.is_nil(nxt("@reboot", "2025-06-01T00:00:00Z"))
  end)

  it("runs once each time a scheduler starts, and stays for the next start", function()
    local runs = 0
    local s = H.scheduler({storage = chronis.storage.memory()})
    s:handler("warm", function() runs = runs + 1 end)
    local job = s:on("@reboot"):config{job_id = "warm-cache"}:run("warm")
    -- Created before any start: waiting, with no next run.
    assert.are.equal("pending", job.status)
    assert.is_nil(job.next_run_time)
    s:start()
    H.wait(function() return runs == 1 end, 5, "@reboot did not run at start")
    H.wait(function() return s:get_job("warm-cache").status == "pending" end, 5)
    assert.is_nil(s:get_job("warm-cache").next_run_time)
    chronis.run_until(function() return false end, 0.3)
    assert.are.equal(1, runs)
    s:stop()
    H.wait(function() return s:state() == "stopped" end, 5)
    s:start()
    H.wait(function() return runs == 2 end, 5, "@reboot did not run at the second start")
    H.wait(function() return s:get_job("warm-cache").status == "pending" end, 5)
    assert.are.equal(2, runs)
  end)

  it("leaves other pending cron jobs alone", function()
    local runs = 0
    local s = H.scheduler({storage = chronis.storage.memory()})
    s:handler("h", function() runs = runs + 1 end)
    s:on({year = 2020}):config{job_id = "past"}:run("h")
    assert.are.equal("pending", s:get_job("past").status)
    s:start()
    chronis.run_until(function() return false end, 0.3)
    assert.are.equal(0, runs)
    assert.are.equal("pending", s:get_job("past").status)
  end)
end)

describe("chronis.cron.describe", function()
  local function text(spec) return cron.describe(spec, "2025-06-01T00:00:00Z", nil, 0).text end

  it("reads every form in English", function()
    local cases = {
      {"0 9 * * mon-fri", "at 09:00 on Monday through Friday"},
      {"*/15 9-17 * * *", "every 15 minutes, during hours 9 through 17"},
      {"30 2 1,15 * *", "at 02:30 on days 1 and 15 of the month"},
      {"0 0 L * *", "at 00:00 on the last day of the month"},
      {"0 0 L-2 * *", "at 00:00 on the last day of the month minus 2 days"},
      {"0 0 15W * *", "at 00:00 on the weekday nearest day 15"},
      {"0 18 LW * *", "at 18:00 on the last weekday of the month"},
      {"0 0 * * FRI#L", "at 00:00 on the last Friday"},
      {"0 0 * * 6#3", "at 00:00 on the 3rd Saturday"},
      {"0 0 1 * 5", "at 00:00 on day 1 of the month or on Friday"},
      {"0 0 1 Nov-Feb *", "at 00:00 on day 1 of the month in January, February, November and December"},
      {"0 22-2 * * *", "at minute 0, during hours 0 through 2, 22 and 23"},
      {"*/10 * * * * *", "every 10 seconds"},
      {"0 15 10 * * ? 2026", "at 10:15 in 2026"},
      {"TZ=Europe/Paris 0 9 * * *", "at 09:00 (Europe/Paris)"},
      {"@every 1h30m", "every 1h30m (elapsed time)"},
      {"@reboot", "once each time a scheduler starts"},
      {{day = 13, day_of_week = "fri"}, "at 00:00 on day 13 of the month when it is Friday"},
      {{cron = "H H(0-5) * * *", job_id = "abc"}, "at 03:10"},
    }
    for _, c in ipairs(cases) do assert.are.equal(c[2], text(c[1])) end
    -- Long lists end with "and more" rather than running on.
    local years = text({year = "2026-9999/2", month = 1})
    assert.are.equal("at 00:00 on day 1 of the month in January in 2026, 2028, ", years:sub(1, 57))
    assert.are.equal(", 2088 and more", years:sub(-15))
  end)

  it("lists the next fire times, in the spec's zone when it has one", function()
    local d = cron.describe("TZ=Europe/Paris 0 9 * * *", "2025-06-01T00:00:00Z", nil, 2)
    assert.are.same({text = "at 09:00 (Europe/Paris)", zone = "Europe/Paris",
      next = {"2025-06-01T07:00:00Z", "2025-06-02T07:00:00Z"}}, d)
    d = cron.describe({hour = 2, minute = 30}, "2025-03-08T12:00:00Z", "America/New_York", 2)
    assert.are.same({"2025-03-09T07:30:00Z", "2025-03-10T06:30:00Z"}, d.next)
    assert.are.equal("America/New_York", d.zone)
    assert.are.equal(5, #cron.describe("@hourly").next)
    assert.are.same({}, cron.describe({year = 2020}, "2025-01-01T00:00:00Z").next)
  end)

  it("raises the parse errors", function()
    local err = error_of(cron.describe, "* * * *")
    assert.are.equal("invalid cron expression '* * * *': expected 5, 6 or 7 fields, got 4", err.message)
    assert.are.equal("after: invalid time 'soon'",
      error_of(cron.describe, "@hourly", "soon").message:sub(1, 26))
  end)
end)

describe("chronis.cron H in a running scheduler", function()
  local H = require "support.engine_helper"
  after_each(H.cleanup)

  it("keeps each job's own hashed minute after its runs", function()
    local clock = H.fake_clock(H.t("2025-06-01T00:00:00Z"))
    local s = H.scheduler({clock = clock.fn})
    local ran = {}
    s:handler("h", function(job) ran[job.job_id] = true end)
    -- Two ids whose H minutes differ: 10 and another.
    local ids = {"abc", "nightly"}
    local minutes = {}
    for _, id in ipairs(ids) do
      s:on("H * * * *"):config{job_id = id, if_missed = "run_once"}:run("h")
      minutes[id] = nxt({cron = "H * * * *", job_id = id}, "2025-06-01T00:00:00Z"):sub(15, 16)
    end
    assert.are_not.equal(minutes.abc, minutes.nightly)
    clock:advance(3600)
    s:start()
    H.wait(function() return ran.abc and ran.nightly end, 5, "the jobs did not run")
    H.wait(function()
      return s:get_job("abc").status == "scheduled" and s:get_job("nightly").status == "scheduled"
    end, 5)
    for _, id in ipairs(ids) do
      assert.are.equal(minutes[id], s:get_job(id).next_run_time:sub(15, 16), id)
    end
  end)
end)

describe("chronis.cron @every in a running scheduler", function()
  local H = require "support.engine_helper"
  after_each(H.cleanup)

  it("skips the missed periods of a long pause in one step", function()
    local clock = H.fake_clock(H.t("2025-06-01T00:00:00Z"))
    local s = H.scheduler({clock = clock.fn})
    local runs = 0
    s:handler("h", function() runs = runs + 1 end)
    s:on("@every 1s"):config{job_id = "tick", if_missed = "run_once"}:run("h")
    -- Three days (259,200 periods) without a scheduler.
    clock:advance(3 * 86400)
    s:start()
    H.wait(function() return runs >= 1 end, 5, "the job did not run")
    H.wait(function() return s:get_job("tick").status == "scheduled" end, 5)
    -- One run for the pause, then the next period after now.
    assert.are.equal(1, runs)
    assert.are.equal(chronis.time.format(clock.now + H.S), s:get_job("tick").next_run_time)
  end)
end)

describe("chronis.cron new day forms across DST", function()
  it("L-n on a spring-forward day fires shifted by the gap", function()
    -- March 30 (L-1) is Berlin's spring-forward day in 2025, not in 2026.
    assert.are.same({"2025-03-30T01:30:00Z", "2026-03-30T00:30:00Z"},
      series("TZ=Europe/Berlin 30 2 L-1 3 *", "2025-01-01T00:00:00Z", 2))
  end)

  it("SUN#1 on a fall-back day: a fixed hour once, a '*' hour in both passes", function()
    local NY = "America/New_York"
    assert.are.same({"2025-11-02T05:30:00Z", "2026-11-01T05:30:00Z"},
      series("30 1 * 11 SUN#1", "2025-10-01T00:00:00Z", 2, NY))
    assert.are.same({"2025-11-02T05:30:00Z", "2025-11-02T06:30:00Z", "2025-11-02T07:30:00Z"},
      series("30 * * 11 SUN#1", "2025-11-02T05:00:00Z", 3, NY))
  end)

  it("a hashed hour is a fixed hour: once in a fold", function()
    local spec = {cron = "30 H(1-1) * * *", job_id = "any"}
    assert.are.same({"2025-11-02T05:30:00Z", "2025-11-03T06:30:00Z"},
      series(spec, "2025-11-01T12:00:00Z", 2, "America/New_York"))
  end)
end)

describe("chronis.cron.compile", function()
  local SPECS = {
    "0 9 * * mon-fri", "*/15 * * * *", "0 0 L * *", "TZ=America/New_York 30 2 * * *",
    { hour = 9, minute = "*/20" }, { cron = "0 0 12 ? * 6#3", dialect = "quartz" },
    { cron = "H * * * *", job_id = "seeded" },
  }
  local AFTERS = { "2026-03-08T06:59:59Z", "2026-03-29T00:30:00Z", "2026-10-25T00:30:00Z",
                   "2027-12-31T23:59:59Z" }

  it("gives the times cron.next gives, in every zone, chained", function()
    for _, spec in ipairs(SPECS) do
      for _, zone in ipairs({ "UTC", "Europe/Berlin", "Australia/Sydney" }) do
        local c = cron.compile(spec, zone)
        for _, after in ipairs(AFTERS) do
          local want, got = after, after
          for _ = 1, 5 do
            want, got = cron.next(spec, want, zone), c:next(got)
            assert.are.equal(want, got, ("%s in %s after %s"):format(tostring(c), zone, after))
          end
        end
      end
    end
  end)

  it("answers an integer with an integer, a string or nil with an ISO string", function()
    local c = cron.compile("*/15 * * * *")
    local after = chronis.time.parse("2026-01-01T00:07:00Z")
    assert.are.equal(after + 8 * 60 * 1000000 - after % 1000000, c:next(after))
    assert.are.equal(math.type(c:next(after)), "integer")
    assert.are.equal("2026-01-01T00:15:00Z", c:next("2026-01-01T00:07:00Z"))
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:00Z$", c:next())
    -- A naive string is read in the zone.
    assert.are.equal("2026-01-01T08:00:00Z", cron.compile("0 9 * * *", "Europe/Paris"):next("2026-01-01T08:30:00"))
  end)

  it("takes its zone from compile, the spec's TZ=, else UTC; a call may give another", function()
    assert.are.equal("2026-01-01T14:00:00Z", cron.compile("0 9 * * *", "America/New_York"):next("2026-01-01T00:00:00Z"))
    assert.are.equal("2026-01-01T14:00:00Z", cron.compile("TZ=America/New_York 0 9 * * *"):next("2026-01-01T00:00:00Z"))
    local c = cron.compile("0 9 * * *")
    assert.are.equal("2026-01-01T09:00:00Z", c:next("2026-01-01T00:00:00Z"))
    assert.are.equal("2026-01-01T08:00:00Z", c:next("2026-01-01T00:00:00Z", "Europe/Paris"))
    assert.are.equal(chronis.time.parse("2026-01-01T08:00:00Z"),
      c:next(chronis.time.parse("2026-01-01T00:00:00Z"), "Europe/Paris"))
    assert.matches("Europe/Paris", tostring(cron.compile("0 9 * * *", "Europe/Paris")))
  end)

  it("answers nil past a spec's last fire time", function()
    local c = cron.compile({ year = 2027, month = 1, day = 1 })
    assert.are.equal("2027-01-01T00:00:00Z", c:next("2026-06-01T00:00:00Z"))
    assert.is_nil(c:next("2027-01-01T00:00:00Z"))
    assert.is_nil(c:next(chronis.time.parse("2027-06-01T00:00:00Z")))
  end)

  it("describes itself as cron.describe does", function()
    local spec, after = "0 9 * * mon-fri", "2026-03-27T12:00:00Z"
    assert.are.same(cron.describe(spec, after, "Europe/Paris", 3),
      cron.compile(spec, "Europe/Paris"):describe(after, nil, 3))
    assert.are.same(cron.describe(spec, after, "UTC", 2), cron.compile(spec, "Europe/Paris"):describe(after, "UTC", 2))
  end)

  it("refuses a bad spec, zone, time or count, naming it", function()
    assert.are.equal("invalid cron field 'minute': 61 is out of range 0-59",
      error_of(cron.compile, { minute = 61 }).message)
    assert.matches("^invalid timezone 'Mars/Base'", error_of(cron.compile, "* * * * *", "Mars/Base").message)
    local c = cron.compile("* * * * *")
    assert.are.equal("invalid", error_of(c.next, c, "yesterday").code)
    assert.matches("after", error_of(c.next, c, "yesterday").message)
    assert.are.equal("invalid", error_of(c.next, c, "2026-01-01T00:00:00Z", "Nowhere/Zone").code)
    assert.matches("out of range 0%-1000", error_of(c.describe, c, nil, nil, 1001).message)
    assert.are.equal("invalid", error_of(c.next, {}, 0).code)
  end)

  it("is freed with its last reference", function()
    for _ = 1, 1000 do cron.compile("*/5 * * * *"):next(0) end
    collectgarbage()
    collectgarbage()
    assert.are.equal(300000000, cron.compile("*/5 * * * *"):next(0))
  end)
end)
