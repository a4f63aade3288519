-- chronis.time: ISO-8601 <-> integer microseconds since the epoch (UTC).
local chronis = require "chronis"
local time = chronis.time
local error_of = require("support.util").error_of

local S = 1000000 -- µs per second

local function assert_invalid(input, problem)
  local err = error_of(time.parse, input)
  local message = ("invalid time '%s': %s"):format(input, problem)
  assert.equal("invalid", err.code)
  assert.equal(message, err.message)
  assert.equal("invalid: " .. message, tostring(err))
end

describe("chronis.time", function()
  it("is a plain table of functions", function()
    assert.is_function(time.parse)
    assert.is_function(time.format)
    assert.is_function(time.now)
  end)

  describe("parse", function()
    it("reads UTC times as integer microseconds", function()
      local us = time.parse("2025-01-15T10:00:00Z")
      assert.equal("integer", math.type(us))
      assert.equal(1736935200 * S, us)
      assert.equal(0, time.parse("1970-01-01T00:00:00Z"))
    end)

    it("reads fractions of 1 to 6 digits", function()
      local base = 1736935200 * S
      assert.equal(base + 500000, time.parse("2025-01-15T10:00:00.5Z"))
      assert.equal(base + 120000, time.parse("2025-01-15T10:00:00.12Z"))
      assert.equal(base + 1, time.parse("2025-01-15T10:00:00.000001Z"))
      assert.equal(base + 123456, time.parse("2025-01-15T10:00:00.123456Z"))
    end)

    it("applies +HH:MM and -HH:MM offsets", function()
      local utc = time.parse("2025-01-15T10:00:00Z")
      assert.equal(utc, time.parse("2025-01-15T15:30:00+05:30"))
      assert.equal(utc, time.parse("2025-01-15T07:00:00-03:00"))
      assert.equal(utc, time.parse("2025-01-15T10:00:00+00:00"))
      assert.equal(utc, time.parse("2025-01-15T10:00:00-00:00"))
      -- an offset can move the instant across a day boundary
      assert.equal(time.parse("2024-12-31T23:00:00Z"),
        time.parse("2025-01-01T08:00:00+09:00"))
    end)

    it("accepts a space instead of T", function()
      assert.equal(time.parse("2025-01-15T10:00:00Z"), time.parse("2025-01-15 10:00:00Z"))
      assert.equal(time.parse("2025-01-15T15:30:00.25+05:30"),
        time.parse("2025-01-15 15:30:00.25+05:30"))
    end)

    it("accepts RFC 3339's lowercase t and z", function()
      assert.equal(time.parse("2025-01-15T10:00:00Z"), time.parse("2025-01-15t10:00:00z"))
    end)

    it("reads naive times as UTC by default", function()
      assert.equal(time.parse("2025-01-15T10:00:00Z"), time.parse("2025-01-15T10:00:00"))
      assert.equal(time.parse("2025-01-15T10:00:00Z"), time.parse("2025-01-15 10:00:00"))
    end)

    it("reads naive times in a given zone, with the gap and fold rules", function()
      assert.equal(time.parse("2025-07-01T16:00:00Z"),
        time.parse("2025-07-01T12:00:00", "America/New_York"))
      assert.equal(time.parse("2025-01-15T17:00:00Z"),
        time.parse("2025-01-15 12:00:00", "America/New_York"))
      -- 02:30 does not exist on 2025-03-09: shifted forward to 03:30 EDT
      assert.equal(time.parse("2025-03-09T07:30:00Z"),
        time.parse("2025-03-09T02:30:00", "America/New_York"))
      -- 01:30 happens twice on 2025-11-02: the first pass (EDT)
      assert.equal(time.parse("2025-11-02T05:30:00Z"),
        time.parse("2025-11-02T01:30:00", "America/New_York"))
    end)

    it("lets an explicit offset win over the zone", function()
      assert.equal(time.parse("2025-07-01T12:00:00Z"),
        time.parse("2025-07-01T12:00:00Z", "America/New_York"))
      assert.equal(time.parse("2025-07-01T06:30:00Z"),
        time.parse("2025-07-01T12:00:00+05:30", "America/New_York"))
    end)

    it("refuses an invalid zone", function()
      local err = error_of(time.parse, "2025-01-01T00:00:00", "Foo/Bar")
      assert.equal("invalid", err.code)
      assert.equal("invalid timezone 'Foo/Bar'", err.message)
    end)

    it("handles instants before 1970", function()
      assert.equal(-1, time.parse("1969-12-31T23:59:59.999999Z"))
      assert.equal(-S, time.parse("1969-12-31T23:59:59Z"))
      assert.equal(-2208988800 * S, time.parse("1900-01-01T00:00:00Z"))
      assert.equal(-62135596800 * S, time.parse("0001-01-01T00:00:00Z"))
      assert.equal(253402300799 * S + 999999, time.parse("9999-12-31T23:59:59.999999Z"))
    end)

    it("accepts February 29 in leap years only", function()
      assert.equal(time.parse("2024-03-01T00:00:00Z") - 86400 * S,
        time.parse("2024-02-29T00:00:00Z"))
      assert.equal(time.parse("2000-03-01T00:00:00Z") - 86400 * S,
        time.parse("2000-02-29T00:00:00Z"))
      assert_invalid("2023-02-29T00:00:00Z", "day 29 is out of range for 2023-02")
      assert_invalid("1900-02-29T00:00:00Z", "day 29 is out of range for 1900-02")
    end)
  end)

  describe("parse errors name the input and the problem", function()
    it("day out of range", function()
      assert_invalid("2025-02-30T00:00:00Z", "day 30 is out of range for 2025-02")
      assert_invalid("2025-04-31T00:00:00Z", "day 31 is out of range for 2025-04")
      assert_invalid("2025-01-00T00:00:00Z", "day 00 is out of range for 2025-01")
    end)

    it("month out of range", function()
      assert_invalid("2025-13-01", "month 13 is out of range 01-12")
      assert_invalid("2025-13-01T00:00:00Z", "month 13 is out of range 01-12")
      assert_invalid("2025-00-10T00:00:00Z", "month 00 is out of range 01-12")
    end)

    it("hour, minute and second out of range", function()
      assert_invalid("2025-01-01T25:00:00Z", "hour 25 is out of range 00-23")
      assert_invalid("2025-01-01T24:00:00Z", "hour 24 is out of range 00-23")
      assert_invalid("2025-01-01T10:60:00Z", "minute 60 is out of range 00-59")
      assert_invalid("2025-01-01T10:00:60Z", "second 60 is out of range 00-59")
    end)

    it("a bare clock time", function()
      assert_invalid("25:00", "expected a date YYYY-MM-DD")
      assert_invalid("10:00:00", "expected a date YYYY-MM-DD")
    end)

    it("an empty string", function()
      assert_invalid("", "empty string")
    end)

    it("trailing junk", function()
      assert_invalid("2025-01-01T00:00:00Zjunk", "unexpected characters 'junk' after the time")
      assert_invalid("2025-01-01T00:00:00 ", "unexpected characters ' ' after the time")
      assert_invalid("2025-01-01T00:00:00+05:30:00",
        "unexpected characters ':00' after the time")
    end)

    it("offset out of range or malformed", function()
      assert_invalid("2025-01-01T00:00:00+24:00",
        "offset +24:00 is out of range -23:59..+23:59")
      assert_invalid("2025-01-01T00:00:00-05:60",
        "offset -05:60 is out of range -23:59..+23:59")
      assert_invalid("2025-01-01T00:00:00+0530", "expected an offset Z or +HH:MM")
      assert_invalid("2025-01-01T00:00:00+5:30", "expected an offset Z or +HH:MM")
    end)

    it("more than 6 fraction digits", function()
      assert_invalid("2025-01-01T00:00:00.1234567Z", "fraction has more than 6 digits")
      assert_invalid("2025-01-01T00:00:00.Z", "expected digits after '.'")
    end)

    it("missing seconds or time", function()
      assert_invalid("2025-01-01T00:00Z", "missing seconds (expected HH:MM:SS)")
      assert_invalid("2025-01-01T00:00", "missing seconds (expected HH:MM:SS)")
      assert_invalid("2025-01-01", "missing time (expected 'THH:MM:SS' after the date)")
      assert_invalid("2025-01-01X00:00:00Z", "expected 'T' or ' ' between date and time")
      assert_invalid("2025-01-01T0:00:00Z", "expected a time HH:MM:SS")
    end)

    it("years outside 0001..9999", function()
      assert_invalid("0000-01-01T00:00:00Z", "year 0000 is out of range 0001-9999")
      assert_invalid("10000-01-01T00:00:00Z", "year 10000 is out of range 0001-9999")
      assert_invalid("-001-01-01T00:00:00Z", "year -001 is out of range 0001-9999")
      -- What format writes for instants past the range reads back as such.
      assert_invalid(time.format(math.maxinteger), "year 294247 is out of range 0001-9999")
      assert_invalid(time.format(math.mininteger), "year -290308 is out of range 0001-9999")
    end)

    it("an offset that carries the time past year 0001 or 9999", function()
      assert_invalid("0001-01-01T00:00:00+01:00", "out of range once in UTC (times are " ..
        "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z)")
      assert_invalid("9999-12-31T23:00:00-01:00", "out of range once in UTC (times are " ..
        "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z)")
      assert.equal(-62135596800 * S, time.parse("0001-01-01T01:00:00+01:00"))
    end)
  end)

  describe("format", function()
    it("writes whole seconds without a fraction", function()
      assert.equal("2025-01-15T10:00:00Z", time.format(1736935200 * S))
      assert.equal("1970-01-01T00:00:00Z", time.format(0))
    end)

    it("writes 6 fraction digits when microseconds are not zero", function()
      assert.equal("2025-01-15T10:00:00.500000Z", time.format(1736935200 * S + 500000))
      assert.equal("1970-01-01T00:00:00.000001Z", time.format(1))
    end)

    it("floors instants before 1970 onto the right second and day", function()
      assert.equal("1969-12-31T23:59:59.999999Z", time.format(-1))
      assert.equal("1969-12-31T23:59:59Z", time.format(-S))
      assert.equal("1969-12-31T23:59:58.500000Z", time.format(-S - 500000))
      assert.equal("1969-12-31T00:00:00Z", time.format(-86400 * S))
      assert.equal("1900-01-01T00:00:00Z", time.format(-2208988800 * S))
      assert.equal("0001-01-01T00:00:00Z", time.format(-62135596800 * S))
    end)

    it("never fails, even at the ends of the integer range", function()
      assert.is_string(time.format(math.maxinteger))
      assert.is_string(time.format(math.mininteger))
    end)
  end)

  describe("round trips", function()
    it("format(parse(s)) == s for canonical strings", function()
      for _, s in ipairs {
        "2025-01-15T10:00:00Z",
        "2025-01-15T10:00:00.000001Z",
        "2025-01-15T10:00:00.999999Z",
        "1969-07-20T20:17:40Z",
        "1969-12-31T23:59:59.999999Z",
        "1900-02-28T12:34:56.789000Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999Z",
        "2024-02-29T23:59:59Z",
      } do
        assert.equal(s, time.format(time.parse(s)))
      end
    end)

    it("parse(format(us)) == us across the whole year range", function()
      local lo, hi = -62135596800 * S, 253402300799 * S
      local seed = 12345
      for _ = 1, 2000 do
        seed = (seed * 1103515245 + 12345) % 2147483648
        local us = lo + (hi - lo) // 2147483648 * seed + seed % 1000000
        assert.equal(us, time.parse(time.format(us)))
      end
    end)

    it("offsets and the space separator come back in canonical UTC form", function()
      assert.equal("2025-01-15T10:00:00Z", time.format(time.parse("2025-01-15T15:30:00+05:30")))
      assert.equal("2025-01-15T13:00:00.250000Z",
        time.format(time.parse("2025-01-15 10:00:00.25-03:00")))
      assert.equal("1969-12-31T20:00:00Z", time.format(time.parse("1970-01-01T01:00:00+05:00")))
    end)
  end)

  describe("now", function()
    it("is the wall clock in integer microseconds", function()
      local before = os.time()
      local now = time.now()
      assert.equal("integer", math.type(now))
      assert.is_true(math.abs(now // S - before) <= 2)
      assert.is_true(time.now() >= now)
    end)
  end)
end)
