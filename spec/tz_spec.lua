-- chronis.tz: IANA zones from the system's TZif files. Expected values are
-- the published rules of each zone (cross-checked against `date` when this
-- spec was written; the spec itself never calls out to the system).
local chronis = require "chronis"
local time = chronis.time
local tz = chronis.tz
local error_of = require("support.util").error_of

local S = 1000000 -- µs per second
local Z = time.parse -- a UTC string to µs, for readability

-- info(zone, at) must be {offset = offset, abbr = abbr, dst = dst}.
local function assert_info(zone, at, offset, abbr, dst)
  local info = tz.info(zone, Z(at))
  assert.same({ offset = offset, abbr = abbr, dst = dst }, info,
    ("tz.info(%q, %q)"):format(zone, at))
end

describe("chronis.tz", function()
  it("is a plain table of functions", function()
    for _, name in ipairs { "info", "to_utc", "format_local", "resolve", "next_transition" } do
      assert.is_function(tz[name], name)
    end
  end)

  describe("America/New_York", function()
    local NY = "America/New_York"

    it("knows EST and EDT around the 2025-03-09 spring-forward", function()
      assert_info(NY, "2025-01-15T12:00:00Z", -18000, "EST", false)
      assert_info(NY, "2025-03-09T06:59:59Z", -18000, "EST", false)
      assert_info(NY, "2025-03-09T07:00:00Z", -14400, "EDT", true)
      assert_info(NY, "2025-07-01T12:00:00Z", -14400, "EDT", true)
    end)

    it("knows EDT and EST around the 2025-11-02 fall-back", function()
      assert_info(NY, "2025-11-02T05:59:59Z", -14400, "EDT", true)
      assert_info(NY, "2025-11-02T06:00:00Z", -18000, "EST", false)
    end)

    it("accepts integer instants", function()
      local info = tz.info(NY, 1741503600 * S) -- 2025-03-09T07:00:00Z
      assert.equal(-14400, info.offset)
      info = tz.info(NY, 1741503600 * S - 1)
      assert.equal(-18000, info.offset)
    end)

    it("moves a wall time in the gap forward by the gap (02:30 -> 03:30 EDT)", function()
      local us = tz.to_utc("2025-03-09T02:30:00", NY)
      assert.equal(Z("2025-03-09T07:30:00Z"), us)
      assert.equal(1741505400 * S, us)
      assert.equal("2025-03-09T03:30:00-04:00", tz.format_local(us, NY))
      assert.equal(Z("2025-03-09T07:00:00Z"), tz.to_utc("2025-03-09T02:00:00", NY))
      assert.equal(Z("2025-03-09T07:59:59Z"), tz.to_utc("2025-03-09T02:59:59", NY))
    end)

    it("leaves the wall times either side of the gap alone", function()
      assert.equal(Z("2025-03-09T06:59:59Z"), tz.to_utc("2025-03-09T01:59:59", NY))
      assert.equal(Z("2025-03-09T07:00:00Z"), tz.to_utc("2025-03-09T03:00:00", NY))
    end)

    it("reads a wall time in the fold as the first pass (01:30 EDT)", function()
      local us = tz.to_utc("2025-11-02T01:30:00", NY)
      assert.equal(Z("2025-11-02T05:30:00Z"), us)
      assert.equal("2025-11-02T01:30:00-04:00", tz.format_local(us, NY))
      assert.equal("2025-11-02T01:30:00-05:00", tz.format_local(Z("2025-11-02T06:30:00Z"), NY))
    end)

    it("resolves to both passes in the fold, and flags the gap", function()
      local r = tz.resolve("2025-11-02T01:30:00", NY)
      assert.same({ Z("2025-11-02T05:30:00Z"), Z("2025-11-02T06:30:00Z") }, r)
      assert.is_nil(r.gap)

      r = tz.resolve("2025-03-09T02:30:00", NY)
      assert.equal(1, #r)
      assert.equal(Z("2025-03-09T07:30:00Z"), r[1])
      assert.is_true(r.gap)

      r = tz.resolve("2025-07-01 12:00:00.5", NY)
      assert.same({ Z("2025-07-01T16:00:00.5Z") }, r)
    end)

    it("finds the next transitions", function()
      assert.equal(Z("2025-03-09T07:00:00Z"), tz.next_transition(NY, Z("2025-01-01T00:00:00Z")))
      -- strictly after: from the transition itself, the next one
      assert.equal(Z("2025-11-02T06:00:00Z"), tz.next_transition(NY, Z("2025-03-09T07:00:00Z")))
      assert.equal(Z("2025-03-09T07:00:00Z"), tz.next_transition(NY, Z("2025-03-09T06:59:59.999999Z")))
    end)

    it("follows the footer rule in 2100 (EDT in July, EST in January)", function()
      assert_info(NY, "2100-07-01T00:00:00Z", -14400, "EDT", true)
      assert_info(NY, "2100-01-01T00:00:00Z", -18000, "EST", false)
      -- second Sunday of March and first Sunday of November 2100
      assert.equal(Z("2100-03-14T07:00:00Z"), tz.next_transition(NY, Z("2100-01-01T00:00:00Z")))
      assert.equal(4108690800 * S, tz.next_transition(NY, Z("2100-01-01T00:00:00Z")))
      assert.equal(Z("2100-11-07T06:00:00Z"), tz.next_transition(NY, Z("2100-03-14T07:00:00Z")))
      assert_info(NY, "2100-03-14T06:59:59Z", -18000, "EST", false)
      assert_info(NY, "2100-11-07T05:59:59Z", -14400, "EDT", true)
      assert.equal(Z("2100-03-14T07:30:00Z"), tz.to_utc("2100-03-14T02:30:00", NY))
      assert.equal(Z("2100-11-07T05:30:00Z"), tz.to_utc("2100-11-07T01:30:00", NY))
    end)

    it("formats local times with the offset, and µs only when non-zero", function()
      assert.equal("2025-01-15T05:00:00-05:00", tz.format_local(Z("2025-01-15T10:00:00Z"), NY))
      assert.equal("2025-03-09T03:30:00.250000-04:00",
        tz.format_local(Z("2025-03-09T07:30:00.25Z"), NY))
    end)
  end)

  describe("Europe/London", function()
    local L = "Europe/London"

    it("switches GMT -> BST on 2025-03-30 and back on 2025-10-26", function()
      assert_info(L, "2025-01-15T12:00:00Z", 0, "GMT", false)
      assert_info(L, "2025-03-30T00:59:59Z", 0, "GMT", false)
      assert_info(L, "2025-03-30T01:00:00Z", 3600, "BST", true)
      assert_info(L, "2025-10-26T00:59:59Z", 3600, "BST", true)
      assert_info(L, "2025-10-26T01:00:00Z", 0, "GMT", false)
    end)

    it("applies the gap and fold rules", function()
      local us = tz.to_utc("2025-03-30T01:30:00", L)
      assert.equal(Z("2025-03-30T01:30:00Z"), us)
      assert.equal("2025-03-30T02:30:00+01:00", tz.format_local(us, L))
      assert.equal(Z("2025-10-26T00:30:00Z"), tz.to_utc("2025-10-26T01:30:00", L))
      assert.same({ Z("2025-10-26T00:30:00Z"), Z("2025-10-26T01:30:00Z") },
        tz.resolve("2025-10-26T01:30:00", L))
    end)
  end)

  describe("Australia/Lord_Howe (30-minute DST)", function()
    local LH = "Australia/Lord_Howe"

    it("moves between +10:30 and +11:00", function()
      assert_info(LH, "2025-07-01T00:00:00Z", 37800, "+1030", false)
      assert_info(LH, "2025-10-04T15:29:59Z", 37800, "+1030", false)
      assert_info(LH, "2025-10-04T15:30:00Z", 39600, "+11", true)
      assert_info(LH, "2025-04-05T14:59:59Z", 39600, "+11", true)
      assert_info(LH, "2025-04-05T15:00:00Z", 37800, "+1030", false)
    end)

    it("has a 30-minute gap and a 30-minute fold", function()
      local us = tz.to_utc("2025-10-05T02:15:00", LH)
      assert.equal(Z("2025-10-04T15:45:00Z"), us)
      assert.equal("2025-10-05T02:45:00+11:00", tz.format_local(us, LH))
      assert.is_true(tz.resolve("2025-10-05T02:15:00", LH).gap)
      assert.same({ Z("2025-04-05T14:45:00Z"), Z("2025-04-05T15:15:00Z") },
        tz.resolve("2025-04-06T01:45:00", LH))
      assert.equal(Z("2025-10-04T15:30:00Z"), tz.next_transition(LH, Z("2025-07-01T00:00:00Z")))
    end)

    it("follows its footer rule in 2100", function()
      assert_info(LH, "2100-01-15T00:00:00Z", 39600, "+11", true)
      assert_info(LH, "2100-07-15T00:00:00Z", 37800, "+1030", false)
    end)
  end)

  describe("Asia/Kolkata (+05:30, no DST)", function()
    local K = "Asia/Kolkata"

    it("is IST all year, with no transition ahead", function()
      assert_info(K, "2025-01-15T10:00:00Z", 19800, "IST", false)
      assert_info(K, "2025-07-15T10:00:00Z", 19800, "IST", false)
      assert_info(K, "2100-07-15T10:00:00Z", 19800, "IST", false)
      assert.is_nil(tz.next_transition(K, Z("2025-01-01T00:00:00Z")))
    end)

    it("converts both ways", function()
      assert.equal("2025-01-15T15:30:00+05:30", tz.format_local(Z("2025-01-15T10:00:00Z"), K))
      assert.equal(Z("2025-01-15T10:00:00Z"), tz.to_utc("2025-01-15T15:30:00", K))
      assert.same({ Z("2025-01-15T10:00:00Z") }, tz.resolve("2025-01-15 15:30:00", K))
    end)
  end)

  describe("Asia/Tokyo (no DST)", function()
    it("is JST +09:00 in winter, summer and 2100", function()
      assert_info("Asia/Tokyo", "2025-01-15T00:00:00Z", 32400, "JST", false)
      assert_info("Asia/Tokyo", "2025-07-15T00:00:00Z", 32400, "JST", false)
      assert_info("Asia/Tokyo", "2100-07-01T00:00:00Z", 32400, "JST", false)
      assert.is_nil(tz.next_transition("Asia/Tokyo", Z("2025-01-01T00:00:00Z")))
      assert.equal("2025-01-01T09:00:00+09:00",
        tz.format_local(Z("2025-01-01T00:00:00Z"), "Asia/Tokyo"))
    end)
  end)

  describe("America/Sao_Paulo (no DST since 2019)", function()
    local SP = "America/Sao_Paulo"

    it("had DST in the 2017/2018 summer, ending 2019-02-17", function()
      assert_info(SP, "2018-01-15T12:00:00Z", -7200, "-02", true)
      assert_info(SP, "2019-02-17T01:59:59Z", -7200, "-02", true)
      assert_info(SP, "2019-02-17T02:00:00Z", -10800, "-03", false)
      assert.equal(1550368800 * S, tz.next_transition(SP, Z("2019-01-01T00:00:00Z")))
    end)

    it("stays at -03 with no transition ahead", function()
      assert_info(SP, "2025-01-15T12:00:00Z", -10800, "-03", false)
      assert_info(SP, "2100-01-15T12:00:00Z", -10800, "-03", false)
      assert.is_nil(tz.next_transition(SP, Z("2019-02-17T02:00:00Z")))
      assert.equal("2025-01-15T09:00:00-03:00", tz.format_local(Z("2025-01-15T12:00:00Z"), SP))
    end)
  end)

  describe("UTC", function()
    it("works as UTC, Etc/UTC and GMT", function()
      assert_info("UTC", "2025-07-01T00:00:00Z", 0, "UTC", false)
      assert_info("Etc/UTC", "2025-07-01T00:00:00Z", 0, "UTC", false)
      assert_info("GMT", "2025-07-01T00:00:00Z", 0, "GMT", false)
      assert.is_nil(tz.next_transition("UTC", 0))
      assert.equal("2025-07-01T00:00:00+00:00", tz.format_local(Z("2025-07-01T00:00:00Z"), "UTC"))
      assert.equal(Z("2025-07-01T00:00:00Z"), tz.to_utc("2025-07-01T00:00:00", "UTC"))
    end)
  end)

  describe("invalid zones", function()
    local bad = {
      "", " ", "123", "UTC/Invalid", "../../etc/passwd", "Foo/Bar",
      "Etc/../UTC", "America/../../../etc/passwd", "/etc/passwd",
      "/usr/share/zoneinfo/UTC", "America/New York", "America/New_York/",
      "America//New_York", "zone.tab", "tzdata.zi", "America", "utc;rm",
      "right/UTC",
    }

    for _, name in ipairs(bad) do
      it(("refuses %q"):format(name), function()
        local message = ("invalid timezone '%s'"):format(name)
        for _, call in ipairs {
          function() return tz.info(name, 0) end,
          function() return tz.to_utc("2025-01-01T00:00:00", name) end,
          function() return tz.format_local(0, name) end,
          function() return tz.resolve("2025-01-01T00:00:00", name) end,
          function() return tz.next_transition(name, 0) end,
          function() return time.parse("2025-01-01T00:00:00", name) end,
        } do
          local err = error_of(call)
          assert.equal("invalid", err.code)
          assert.equal(message, err.message)
          assert.equal("invalid: " .. message, tostring(err))
        end
      end)
    end

    it("refuses a name with an embedded NUL", function()
      local err = error_of(tz.info, "UTC\0../../etc/passwd", 0)
      assert.equal("invalid", err.code)
      assert.matches("^invalid timezone '", err.message)
    end)
  end)

  describe("argument checks", function()
    it("to_utc and resolve want a naive local time", function()
      local err = error_of(tz.to_utc, "2025-01-01T00:00:00Z", "America/New_York")
      assert.equal("invalid", err.code)
      assert.equal("invalid time '2025-01-01T00:00:00Z': expected a local time without offset",
        err.message)
      err = error_of(tz.resolve, "2025-02-30T00:00:00", "America/New_York")
      assert.equal("invalid time '2025-02-30T00:00:00': day 30 is out of range for 2025-02",
        err.message)
    end)

    it("info and format_local read naive strings in the zone", function()
      assert.equal("2025-03-09T03:30:00-04:00",
        tz.format_local("2025-03-09T02:30:00", "America/New_York"))
      assert.equal(-14400, tz.info("America/New_York", "2025-07-01T12:00:00").offset)
    end)
  end)
end)
