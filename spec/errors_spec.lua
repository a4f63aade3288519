-- The error convention at the Lua boundary (docs/api.md, "Errors"): every
-- error a chronis function raises is a {code, message} table, one code per
-- cause whatever the store, and the message names the argument, option or
-- field that was wrong. One row per public function and kind of bad input.
local chronis = require "chronis"
local core = require "chronis.core"

local NOW = "2025-01-15T10:00:00Z"
local function job(id) return { job_id = id, status = "scheduled", next_run_time = NOW } end

local function closed_store()
  local s = chronis.storage.memory()
  s:close()
  return s
end

local function closed_lock()
  local l = chronis.lock.memory()
  l:close()
  return l
end

-- A Lua adapter with the required methods only, over a memory store.
local function lua_store()
  local inner = chronis.storage.memory()
  local a = {}
  for _, m in ipairs({ "create_job", "get_job", "update_job", "compare_and_swap_job", "delete_job",
    "query_jobs" }) do
    a[m] = function(_, ...) return inner[m](inner, ...) end
  end
  function a.close() inner:close() end
  return chronis.storage.lua(a, { name = "rows" })
end

local function sched()
  return chronis.scheduler({ storage = chronis.storage.memory(), logger = function() end })
end

-- { what, function returning (fn, args...), code, text the message holds }
local CASES = {
  -- stores: the C face, the same for every store
  { "get_job without an id", function(s) return s.get_job, s end, "invalid", "#1 to 'get_job' (string expected, got no value)" },
  { "get_job with an id holding NUL", function(s) return s.get_job, s, "a\0b" end, "invalid", "'job_id'" },
  { "create_job without a job", function(s) return s.create_job, s, nil end, "invalid", "#1 to 'create_job' (table expected, got nil)" },
  { "create_job without job_id", function(s) return s.create_job, s, { status = "pending" } end, "invalid", "job_id" },
  { "create_job with a bad status", function(s) return s.create_job, s, { job_id = "a", status = "nope" } end, "invalid", "status" },
  { "create_job with a NaN", function(s) return s.create_job, s, { job_id = "a", status = "pending", kwargs = { x = 0 / 0 } } end, "invalid", "kwargs.x" },
  { "create_job twice", function(s) s:create_job(job("a")) return s.create_job, s, job("a") end, "duplicate", "'a'" },
  { "update_job of a missing id", function(s) return s.update_job, s, "nobody", { priority = 1 } end, "not_found", "'nobody'" },
  { "update_job with updates not a table", function(s) return s.update_job, s, "a", "x" end, "invalid", "#2 to 'update_job' (table expected, got string)" },
  { "update_job renaming the job", function(s) s:create_job(job("a")) return s.update_job, s, "a", { job_id = "b" } end, "invalid", "job_id" },
  { "compare_and_swap_job with expected not a table", function(s) return s.compare_and_swap_job, s, "a", 1, {} end, "invalid", "#2 to 'compare_and_swap_job' (table expected, got number)" },
  { "delete_job with an id not a string", function(s) return s.delete_job, s, {} end, "invalid", "#1 to 'delete_job' (string expected, got table)" },
  { "get_jobs_batch with ids not an array", function(s) return s.get_jobs_batch, s, "a" end, "invalid", "get_jobs_batch" },
  { "get_jobs_batch with an id not a string", function(s) return s.get_jobs_batch, s, { "a", 2 } end, "invalid", "item 2" },
  { "query_jobs with an unknown filter", function(s) return s.query_jobs, s, { statuss = "running" } end, "invalid", "'statuss'" },
  { "query_jobs with a bad time filter", function(s) return s.query_jobs, s, { next_run_time_lte = "soon" } end, "invalid", "next_run_time_lte" },
  { "query_jobs with a time filter past year 9999", function(s) return s.query_jobs, s, { updated_at_gte = 1736931600600000000 } end, "invalid", "'updated_at_gte': 1736931600600000000 is out of range" },
  { "count_jobs with the smallest integer as a time filter", function(s) return s.count_jobs, s, { next_run_time_lte = math.mininteger } end, "invalid", "'next_run_time_lte'" },
  { "query_jobs with a negative limit", function(s) return s.query_jobs, s, {}, -1 end, "invalid", "limit" },
  { "query_jobs with a negative offset", function(s) return s.query_jobs, s, {}, 10, -1 end, "invalid", "offset" },
  { "claim_due_jobs with 'now' past year 9999", function(s)
    s:create_job(job("a"))
    return s.claim_due_jobs, s, { now = math.maxinteger - 10, owner = "o" }
  end, "invalid", "'now' 9223372036854775797 is out of range" },
  { "claim_due_jobs with a lease ending past year 9999", function(s)
    s:create_job(job("a"))
    -- A lease in range (a year at most) from a 'now' an hour before the end.
    return s.claim_due_jobs, s, { now = "9999-12-31T23:00:00Z", owner = "o", lease_seconds = 7200 }
  end, "invalid", "a lease of 7200000000 µs from 'now' ends past 9999-12-31" },
  { "extend_leases with 'now' before year 1", function(s) return s.extend_leases, s, { owner = "o", ids = { "a" }, now = math.mininteger + 1 } end, "invalid", "'now'" },
  { "count_jobs with a bad status", function(s) return s.count_jobs, s, { status = "nope" } end, "invalid", "'status'" },
  { "claim_due_jobs without an owner", function(s) return s.claim_due_jobs, s, { limit = 1 } end, "invalid", "owner" },
  { "claim_due_jobs with a negative limit", function(s) return s.claim_due_jobs, s, { owner = "o", limit = -1 } end, "invalid", "limit" },
  { "complete_jobs with an item not a table", function(s) return s.complete_jobs, s, { 1 } end, "invalid", "item 1" },
  { "complete_jobs without an owner", function(s) return s.complete_jobs, s, { { job_id = "a" } } end, "invalid", "owner" },
  { "complete_jobs with an item key it does not have", function(s)
    return s.complete_jobs, s, { { job_id = "a", owner = "o", updtes = {} } } end, "invalid", "updtes" },
  { "claim_due_jobs with an option it does not have", function(s)
    return s.claim_due_jobs, s, { owner = "o", filter = {} } end, "invalid", "'filter'" },
  { "extend_leases with an option it does not have", function(s)
    return s.extend_leases, s, { owner = "o", ids = { "a" }, lease = 5 } end, "invalid", "'lease'" },
  { "claim_due_jobs with a scope naming status", function(s)
    return s.claim_due_jobs, s, { owner = "o", filters = { status = "scheduled" } } end, "invalid", "filters" },
  { "query_jobs with an unknown metadata operator", function(s)
    return s.query_jobs, s, { ["metadata.t"] = { ["$gt"] = 1 } } end, "invalid", "$gt" },
  { "recover_expired_leases with a bad time", function(s) return s.recover_expired_leases, s, "later" end, "invalid", "now" },
  { "extend_leases without ids", function(s) return s.extend_leases, s, { owner = "o" } end, "invalid", "ids" },
  { "extend_leases without an owner", function(s) return s.extend_leases, s, { ids = {} } end, "invalid", "owner" },
  { "a method of a closed store", function() local c = closed_store() return c.get_job, c, "a" end, "unavailable", "closed" },
  -- opening stores
  { "storage.open with an unknown scheme", function() return chronis.storage.open, "nosuch:x" end, "invalid", "nosuch" },
  { "storage.open without a URL", function() return chronis.storage.open end, "invalid", "#1 to 'chronis.storage.open' (string or table expected, got no value)" },
  { "storage.sqlite with an option not a string", function() return chronis.storage.sqlite, ":memory:", { mode = {} } end, "invalid", "option 'mode' must be a string, number or boolean, got a table" },
  { "storage.lua with no methods", function() return chronis.storage.lua, {} end, "invalid", "create_job" },
  { "storage.lua with a number", function() return chronis.storage.lua, 42 end, "invalid", "expected a table of methods, got number" },
  -- locks
  { "lock acquire without a key", function(l) return l.acquire, l end, "invalid", "#1 to 'acquire' (string expected, got no value)" },
  { "lock acquire with a ttl of 0", function(l) return l.acquire, l, "k", 0, { owner = "o" } end, "invalid", "ttl" },
  { "lock acquire without an owner", function(l) return l.acquire, l, "k", 10 end, "invalid", "owner" },
  { "lock acquire with a timeout not a number", function(l) return l.acquire, l, "k", 10, { owner = "o", timeout = "soon" } end, "invalid", "'timeout'" },
  { "lock release without an owner", function(l) return l.release, l, "k" end, "invalid", "#2 to 'release' (string expected, got no value)" },
  { "lock extend with a ttl not a number", function(l) return l.extend, l, "k", "long", "o" end, "invalid", "#2 to 'extend' (number expected, got string)" },
  { "a method of a closed lock", function() local c = closed_lock() return c.reset, c, "k" end, "unavailable", "closed" },
  { "lock.lua with a table lacking methods", function() return chronis.lock.lua, {} end, "invalid", "acquire" },
  { "lock.lua with a string", function() return chronis.lock.lua, "x" end, "invalid", "#1 to 'from_table' (table expected, got string)" },
  { "lock.open with an unknown scheme", function() return chronis.lock.open, "nosuch:" end, "invalid", "nosuch" },
  { "lock.open with options without a scheme", function() return chronis.lock.open, { host = "h" } end, "invalid", "'scheme' is required (memory, redis)" },
  -- time, zones, cron
  { "time.parse of a bad time", function() return chronis.time.parse, "yesterday" end, "invalid", "yesterday" },
  { "time.parse without a string", function() return chronis.time.parse, {} end, "invalid", "#1 to 'chronis.time.parse' (string expected, got table)" },
  { "time.format of a float", function() return chronis.time.format, 1.5 end, "invalid", "#1 to 'chronis.time.format' (number has no integer representation)" },
  { "tz.info of an unknown zone", function() return chronis.tz.info, "Mars/Olympus", 0 end, "invalid", "Mars/Olympus" },
  { "cron.parse of a bad spec", function() return chronis.cron.parse, "61 * * * *" end, "invalid", "61" },
  { "cron.parse of a number", function() return chronis.cron.parse, 5 end, "invalid", "table or string expected, got number" },
  { "cron.parse of an unknown field", function() return chronis.cron.parse, { minutes = 5 } end, "invalid", "'minutes'" },
  { "cron.next in an unknown zone", function() return chronis.cron.next, "* * * * *", NOW, "Mars/Olympus" end, "invalid", "Mars/Olympus" },
  -- json
  { "json.encode of a function", function() return chronis.json.encode, { f = print } end, "invalid", "function" },
  { "json.decode of bad text", function() return chronis.json.decode, "{" end, "invalid", "json decode" },
  { "json.decode of a raw NUL byte in a string", function() return chronis.json.decode, '{"a":"x\0y"}' end, "invalid", "bad string" },
  { "json.decode of a number beyond a double", function() return chronis.json.decode, "[1, -1.5e400]" end, "invalid", "beyond the range of a double" },
  -- http: options are checked before anything is sent
  { "http.request with an unknown option", function() return chronis.http.request, { url = "http://127.0.0.1:9/", retries = 3 } end, "invalid", "option 'retries'" },
  { "http.request without a url", function() return chronis.http.request, {} end, "invalid", "option 'url'" },
  { "http.request with a timeout not a number", function() return chronis.http.request, { url = "http://127.0.0.1:9/", timeout = "soon" } end, "invalid", "option 'timeout'" },
  { "http.request with a negative timeout", function() return chronis.http.request, { url = "http://127.0.0.1:9/", timeout = -1 } end, "invalid", "option 'timeout'" },
  { "http.request with verify not a boolean", function() return chronis.http.request, { url = "http://127.0.0.1:9/", verify = "yes" } end, "invalid", "option 'verify'" },
  { "http.request with a bad method", function() return chronis.http.request, { url = "http://127.0.0.1:9/", method = "GE T" } end, "invalid", "option 'method'" },
  { "http.request with a header holding CR", function() return chronis.http.request, { url = "http://127.0.0.1:9/", headers = { x = "a\rb" } } end, "invalid", "header 'x'" },
  { "http.request with headers not a table", function() return chronis.http.request, { url = "http://127.0.0.1:9/", headers = "x: y" } end, "invalid", "option 'headers'" },
  { "http.request with a url holding LF", function() return chronis.http.request, "http://127.0.0.1:9/\n" end, "invalid", "option 'url'" },
  { "http.request with a number", function() return chronis.http.request, 5 end, "invalid", "#1 to 'chronis.http.request' (table expected, got number)" },
  -- crypto
  { "crypto.sha256 without a string", function() return chronis.crypto.sha256, nil end, "invalid", "#1 to 'chronis.crypto.sha256' (string expected, got nil)" },
  { "crypto.hmac_sha256 without a message", function() return chronis.crypto.hmac_sha256, "key" end, "invalid", "#2 to 'chronis.crypto.hmac_sha256' (string expected, got no value)" },
  { "crypto.random_bytes of too many", function() return chronis.crypto.random_bytes, 1 << 20 end, "invalid", "#1 to 'chronis.crypto.random_bytes' (expected 0..65536 bytes)" },
  -- schedulers: the Lua API
  { "scheduler with an unknown option", function() return chronis.scheduler, { polling = 1 } end, "invalid", "'polling'" },
  { "handler with a name not a string", function(_, sc) return sc.handler, sc, 1, function() end end, "invalid", "name" },
  { "handler with a value not a function", function(_, sc) return sc.handler, sc, "h", 1 end, "invalid", "handler 'h'" },
  { "every with a number", function(_, sc) return sc.every, sc, 5 end, "invalid", "every" },
  { "on with a number", function(_, sc) return sc.on, sc, 5 end, "invalid", "on" },
  { "once with a table", function(_, sc) return sc.once, sc, {} end, "invalid", "once" },
  { "a second trigger", function(_, sc) local b = sc:every({ minutes = 1 }) return b.once, b, NOW end, "invalid", "already configured" },
  { "config with a bad priority", function(_, sc) return sc.create_interval_job, sc, { func_name = "h", minutes = 1, priority = 11 } end, "invalid", "'priority'" },
  { "pause_job with an id not a string", function(_, sc) return sc.pause_job, sc, 5 end, "invalid", "job_id" },
  { "pause_job of a missing job", function(_, sc) return sc.pause_job, sc, "nobody" end, "not_found", "'nobody'" },
  { "resume_job of a job not paused", function(_, sc)
    sc:create_date_job({ job_id = "d", func_name = "h", run_date = NOW })
    return sc.resume_job, sc, "d"
  end, "invalid_state", "'d'" },
  { "update_job with a bad field", function(_, sc)
    sc:create_date_job({ job_id = "d", func_name = "h", run_date = NOW })
    return sc.update_job, sc, "d", { priority = "high" }
  end, "invalid", "priority" },
}

local function check(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "no error raised")
  assert.are.equal("table", type(err), "a bare " .. type(err) .. " was raised: " .. tostring(err))
  return err
end

describe("errors raised by chronis functions", function()
  local store, lock, sc
  before_each(function()
    store = chronis.storage.memory()
    lock = chronis.lock.memory()
    sc = sched()
  end)
  after_each(function()
    sc:close()
    store:close()
    lock:close()
    collectgarbage()
    assert.are.equal(0, core.live_tasks())
  end)

  for _, case in ipairs(CASES) do
    local what, make, code, text = case[1], case[2], case[3], case[4]
    it(what .. ": " .. code .. ", naming what was wrong", function()
      -- The first argument: a store for store rows, a lock for lock rows.
      local target = what:match("^lock ") and lock or store
      local err = check(make(target, sc))
      assert.are.equal(code, err.code, err.message)
      assert.truthy(err.message:find(text, 1, true), ("%q does not name %q"):format(err.message, text))
      assert.are.equal(code .. ": " .. err.message, tostring(err))
    end)
  end

  it("the same cause raises the same code on a store written in Lua", function()
    local s = lua_store()
    s:create_job(job("a"))
    assert.are.equal("duplicate", check(s.create_job, s, job("a")).code)
    assert.are.equal("not_found", check(s.update_job, s, "nobody", { priority = 1 }).code)
    assert.are.equal("invalid", check(s.query_jobs, s, { statuss = "x" }).code)
    assert.are.equal("invalid", check(s.get_job, s).code)
    s:close()
    local err = check(s.get_job, s, "a")
    assert.are.equal("unavailable", err.code)
    assert.are.equal("the store is closed", err.message)
  end)
end)
