-- The process log as a user reads it: chronis.log with its fields in text
-- and JSON lines, the debug lines of every run's start and end with their
-- structured fields, handler errors shown by their value rather than an
-- address, and text lines that stay one line. Lines written to stderr are
-- read from a lua5.4 process of their own.
local chronis = require "chronis"
local P = require "support.process"
local H = require "support.engine_helper"

-- The JSON lines of a log, decoded.
local function json_lines(err)
  local out = {}
  for line in err:gmatch("[^\n]+") do
    local ok, rec = pcall(chronis.json.decode, line)
    assert(ok and type(rec) == "table", "not a JSON line: " .. line)
    out[#out + 1] = rec
  end
  return out
end

-- The first record whose msg starts with `prefix` (and whose job_id is
-- `job_id`, when given).
local function find(records, prefix, job_id)
  for _, r in ipairs(records) do
    if r.msg:sub(1, #prefix) == prefix and (job_id == nil or r.job_id == job_id) then return r end
  end
end

local function line_with(err, needle)
  for line in err:gmatch("[^\n]+") do
    if line:find(needle, 1, true) then return line end
  end
end

-- A script that runs the jobs it creates with `handlers` (Lua source of a
-- table of functions) until they are done, logging at debug level.
local function run_jobs(format, handlers, jobs)
  return P.run_lua(([[
local chronis = require "chronis"
chronis.set_log { level = "debug", format = %q }
local s = chronis.scheduler { polling_interval = 0.1 }
for name, fn in pairs(%s) do s:handler(name, fn) end
local n = 0
for _, j in ipairs(%s) do
  s:once(chronis.time.now()):config { job_id = j[1], retry = j[3] }:run(j[2]); n = n + 1
end
s:start()
chronis.run_until(function() local st = s:stats() return st.succeeded + st.failed + st.retried == n end, 20)
s:stop()
]]):format(format, handlers, jobs))
end

describe("the log", function()
  after_each(H.cleanup)

  describe("chronis.log", function()
    local FIELDS = [[{ job_id = "j1", count = 3, ratio = 0.5, ok = true, who = "two words",
      tags = { "a", "b" }, customer = { id = 7 } }]]

    it("keeps every field it is given, as key=value after the message in text lines", function()
      local rc, _, err = P.run_lua(('require("chronis").log("info", "charged", %s)'):format(FIELDS))
      assert.are.equal(0, rc, err)
      local line = line_with(err, "charged")
      assert.truthy(line, err)
      for _, kv in ipairs({ "job_id=j1", "count=3", "ratio=0.5", "ok=true", 'who="two words"',
        'tags=["a","b"]', 'customer={"id":7}' }) do
        assert.truthy(line:find(" " .. kv, 1, true), ("%q lacks %s"):format(line, kv))
      end
    end)

    it("keeps every field it is given as members of JSON lines, numbers as numbers", function()
      local rc, _, err = P.run_lua(('local c = require("chronis"); c.set_log { format = "json" }; '
        .. 'c.log("warn", "charged", %s)'):format(FIELDS))
      assert.are.equal(0, rc, err)
      local rec = find(json_lines(err), "charged")
      assert.are.same({ level = "warn", msg = "charged", job_id = "j1", count = 3, ratio = 0.5,
        ok = true, who = "two words", tags = { "a", "b" }, customer = { id = 7 }, ts = rec.ts }, rec)
    end)

    it("writes a field named like a member of the line itself with an underscore", function()
      local rc, _, err = P.run_lua('local c = require("chronis"); c.set_log { format = "json" }; '
        .. 'c.log("info", "the message", { msg = "a field", level = 2 })')
      assert.are.equal(0, rc, err)
      local rec = find(json_lines(err), "the message")
      assert.are.equal("info", rec.level)
      assert.are.equal("a field", rec._msg)
      assert.are.equal(2, rec._level)
    end)

    it("keeps a text line on one line whatever its message and fields hold", function()
      local rc, _, err = P.run_lua([[require("chronis").log("error", "first\nsecond", { detail = "a\nb" })]])
      assert.are.equal(0, rc, err)
      assert.is_nil(err:find("\nsecond", 1, true), err)
      local line = line_with(err, "first")
      assert.truthy(line:find([[first\nsecond]], 1, true), line)
      assert.truthy(line:find([[detail="a\nb"]], 1, true), line)
    end)
  end)

  describe("runs", function()
    it("log their start and end at debug level, the end with its outcome and duration", function()
      local rc, _, err = run_jobs("json", [[{ fine = function() end,
        bad = function() error("broken") end }]], [[{ { "a", "fine" }, { "b", "bad", 2 } }]])
      assert.are.equal(0, rc, err)
      local records = json_lines(err)
      for _, id in ipairs({ "a", "b" }) do
        local started, ended = find(records, "run started", id), find(records, "run ended", id)
        assert.truthy(started, "no start line for " .. id .. ":\n" .. err)
        assert.truthy(ended, "no end line for " .. id .. ":\n" .. err)
        assert.are.equal("debug", started.level)
        assert.are.equal("debug", ended.level)
        assert.are.equal(id == "a" and "fine" or "bad", started.handler)
        assert.are.equal(1, started.attempt)
        assert.is_string(started.node)
        assert.are.equal(started.node, ended.node)
        assert.is_number(ended.duration)
        assert.is_true(ended.duration >= 0)
      end
      assert.are.equal("ok", find(records, "run ended", "a").outcome)
      local failed = find(records, "run ended", "b")
      assert.are.equal("error", failed.outcome)
      assert.are.equal("error", failed.code)
      local retry = find(records, "run failed", "b")
      assert.are.same({ "warn", "bad", 1, "error" }, { retry.level, retry.handler, retry.attempt, retry.code })
      assert.is_number(retry.duration)
    end)

    it("give a scheduler's logger every field of the line, numbers as numbers", function()
      local lines = {}
      local s = H.scheduler { polling_interval = 0.1,
        logger = function(level, msg, fields) lines[#lines + 1] = { level, msg, fields } end }
      s:handler("h", function() error("no") end)
      s:once(chronis.time.now()):config { job_id = "x" }:run("h")
      s:start()
      H.wait(function() return s:stats().failed == 1 end)
      local got
      for _, l in ipairs(lines) do
        if l[2]:find("^run failed") then got = l end
      end
      assert.truthy(got)
      assert.are.equal("error", got[1])
      local f = got[3]
      assert.are.same({ "x", "h", 1, "error", s:node_id() }, { f.job_id, f.handler, f.attempt, f.code, f.node })
      assert.is_number(f.duration)
    end)
  end)

  describe("a handler's error", function()
    local HANDLERS = [[{
      fields = function() error({ code = 42, reason = "boom" }) end,
      nested = function() error({ code = "E_INPUT", details = { field = "amount", values = { 1, 2 } },
        note = "two words" }) end,
      handle = function() error(io.stdout) end,
      bare = function() error(chronis.spawn(function() end)) end,
      lines = function() error("first line\nsecond line", 0) end,
    }]]
    local JOBS = [[{ { "f", "fields" }, { "n", "nested" }, { "u", "handle" }, { "b", "bare" },
      { "l", "lines" } }]]

    it("is logged by its fields when it is a table, never as an address", function()
      local rc, _, err = run_jobs("text", HANDLERS, JOBS)
      assert.are.equal(0, rc, err)
      assert.is_nil(err:find("table: 0x", 1, true), err)
      local f = line_with(err, "run failed (error: code=42 reason=boom)")
      assert.truthy(f, err)
      assert.truthy(f:find("job_id=f", 1, true), f)
      assert.truthy(line_with(err,
        'run failed (error: code=E_INPUT details={field=amount,values={1,2}} note="two words")'), err)
    end)

    it("is logged by __tostring or by its type when it is a userdata", function()
      local rc, _, err = run_jobs("text", HANDLERS, JOBS)
      assert.are.equal(0, rc, err)
      assert.truthy(line_with(err, "run failed (error: file ("), err)
      assert.truthy(line_with(err, "run failed (error: chronis.task)"), err)
    end)

    it("that spans lines stays on one text line", function()
      local rc, _, err = run_jobs("text", HANDLERS, JOBS)
      assert.are.equal(0, rc, err)
      assert.truthy(line_with(err, [[run failed (error: first line\nsecond line) job_id=l]]), err)
      assert.is_nil(err:find("\nsecond line", 1, true), err)
    end)

    it("reaches on_failure with the same text", function()
      local got = {}
      local s = H.scheduler { polling_interval = 0.1,
        on_failure = function(id, e) got[id] = e end }
      s:handler("h", function() error({ code = 42, reason = "boom" }) end)
      s:handler("m", function() error({ code = "E_INPUT", message = "bad input", field = "amount" }) end)
      s:once(chronis.time.now()):config { job_id = "h" }:run("h")
      s:once(chronis.time.now()):config { job_id = "m" }:run("m")
      s:start()
      H.wait(function() return got.h ~= nil and got.m ~= nil end)
      assert.are.equal("error", got.h.code)
      assert.are.equal("code=42 reason=boom", got.h.message)
      assert.are.equal("bad input (code=E_INPUT field=amount)", got.m.message)
    end)
  end)
end)
