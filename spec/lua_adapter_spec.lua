-- Lua-written adapters: a table of methods becomes a store the engine uses
-- like a C one. With every optional method the adapter's own claim and
-- completion run; without them the generic fallback (query + lock + CAS per
-- job) does, and both pass the same contract suite. Misbehaving adapters
-- are contained.
local chronis = require "chronis"

-- The contract's methods, from its one table (close aside: the adapter's own).
local REQUIRED, OPTIONAL = {}, {}
for _, op in ipairs(chronis.storage.operations) do
  if op.required then REQUIRED[#REQUIRED + 1] = op.name
  elseif op.name ~= "close" then OPTIONAL[#OPTIONAL + 1] = op.name end
end

-- An adapter that keeps its jobs in a memory store, written the way a user
-- would write one over any backend. `calls` counts method calls.
local function delegating(with_optional, calls)
  local inner = chronis.storage.memory()
  local a = { calls = calls or {} }
  local function wrap(m)
    a[m] = function(self, ...)
      self.calls[m] = (self.calls[m] or 0) + 1
      return inner[m](inner, ...)
    end
  end
  for _, m in ipairs(REQUIRED) do wrap(m) end
  if with_optional then
    for _, m in ipairs(OPTIONAL) do wrap(m) end
  end
  function a:close() inner:close() end
  return a
end

require("support.storage_contract")("lua adapter with optional methods", function()
  return chronis.storage.lua(delegating(true), { name = "delegating" })
end)

-- History cannot be emulated: without record_runs and query_runs the
-- store keeps no runs and query_runs is 'unsupported'.
require("support.storage_contract")("lua adapter, required methods only (fallback path)", function()
  return chronis.storage.lua(delegating(false), { name = "minimal" })
end, { supports = { record_runs = false, query_runs = false } })

-- What the engine does with them: with every optional method, and with
-- the required ones only (claims, completions, recovery and heartbeats by
-- the fallback; no due time to wait for, so only hints and polls wake it).
require("support.engine_contract")("lua adapter with optional methods", function()
  return chronis.storage.lua(delegating(true), { name = "delegating" })
end)

require("support.engine_contract")("lua adapter, required methods only (fallback path)", function()
  return chronis.storage.lua(delegating(false), { name = "minimal" })
end, { next_due_time = false, history = false })

-- The shipped Lua adapters through the bridge and their URLs.
require("support.storage_contract")("lua:scripts/adapters/example_kv.lua", function()
  return chronis.storage.open("lua:scripts/adapters/example_kv.lua")
end)

require("support.storage_contract")("file: URL (adapters/file.lua)", function()
  local p = os.tmpname()
  os.remove(p)
  return chronis.storage.open("file:" .. p .. "/jobs.json")
end)

-- A lock written in Lua, delegating to the memory lock.
require("support.lock_contract")("lua lock", function()
  local inner = chronis.lock.memory()
  local a = {}
  for _, m in ipairs({ "acquire", "release", "extend", "reset" }) do
    a[m] = function(self, ...) return inner[m](inner, ...) end
  end
  return chronis.lock.lua(a, { name = "delegating" })
end)

local function delegating_lock()
  local inner = chronis.lock.memory()
  local a = {}
  for _, m in ipairs({ "acquire", "release", "extend", "reset" }) do
    a[m] = function(self, ...) return inner[m](inner, ...) end
  end
  return a, inner
end

-- What closing does to calls in progress. open(hang) returns a store or
-- lock whose adapter method is hang; call(x, i) makes one call on it.
-- Three calls start, x is closed, and each must be answered `unavailable`
-- with `message`, the adapter's method never running on.
local function check_close_answers(open, call, message)
  local started, finished = 0, 0
  local x = open(function()
    started = started + 1
    chronis.sleep(3600)
    finished = finished + 1
  end)
  local callers = {}
  for i = 1, 3 do
    callers[i] = chronis.spawn(function() return { pcall(call, x, i) } end)
  end
  assert.is_true(chronis.run_until(function() return started == 3 end, 5))
  x:close()
  for i = 1, 3 do
    local r = callers[i]:join()
    assert.is_false(r[1])
    assert.are.equal("unavailable", r[2].code)
    assert.are.equal(message, r[2].message)
  end
  assert.are.equal(0, finished, "the calls ran on after close")
end

describe("a Lua lock", function()

  it("keeps the code and words of an error raised as {code, message}, as a store does", function()
    local a = delegating_lock()
    a.acquire = function() error(chronis.error("unavailable", "backend down")) end
    local l = chronis.lock.lua(a, { name = "down" })
    local ok, err = pcall(l.acquire, l, "k", 10, { owner = "o" })
    assert.is_false(ok)
    assert.are.equal("unavailable", err.code)
    assert.are.equal("backend down", err.message)
    l:close()
  end)

  it("attributes any other error to the adapter and the method", function()
    local a = delegating_lock()
    a.release = function() error("backend exploded") end
    local l = chronis.lock.lua(a, { name = "exploding" })
    local ok, err = pcall(l.release, l, "k", "o")
    assert.is_false(ok)
    assert.are.equal("invalid", err.code)
    assert.matches("lua lock 'exploding': release failed: .*backend exploded", err.message)
    l:close()
  end)

  it("answers its pending calls 'unavailable', once, when it is closed", function()
    check_close_answers(function(hang)
      local a = delegating_lock()
      a.acquire = hang
      return chronis.lock.lua(a, { name = "slow", adapter_timeout = 5 })
    end, function(l, i) return l:acquire("k" .. i, 10, { owner = "o" }) end,
    "lua lock 'slow': acquire: the lock was closed")
  end)
end)

local function run_burst(adapter, n)
  local store = chronis.storage.lua(adapter)
  local sched = chronis.scheduler{ storage = store, polling_interval = 0.1, max_workers = 10 }
  local seen = {}
  sched:handler("count", function(job) seen[job.job_id] = (seen[job.job_id] or 0) + 1 end)
  local now = chronis.time.format(chronis.time.now())
  for i = 1, n do sched:create_date_job{ job_id = "j" .. i, func_name = "count", run_date = now } end
  sched:start()
  local ok = chronis.run_until(function()
    local c = 0
    for _ in pairs(seen) do c = c + 1 end
    return c == n and store:count_jobs() == 0
  end, 10)
  sched:stop(1)
  store:close()
  return ok, seen
end

describe("the engine on Lua adapters", function()
  it("runs every job once through the adapter's own claim and completion", function()
    local a = delegating(true)
    local ok, seen = run_burst(a, 50)
    assert.is_true(ok)
    for i = 1, 50 do assert.are.equal(1, seen["j" .. i]) end
    assert.is_true((a.calls.claim_due_jobs or 0) > 0)
    assert.is_true((a.calls.complete_jobs or 0) > 0)
  end)

  it("runs every job once through the fallback path (query + CAS per job)", function()
    local a = delegating(false)
    local ok, seen = run_burst(a, 50)
    assert.is_true(ok)
    for i = 1, 50 do assert.are.equal(1, seen["j" .. i]) end
    assert.is_nil(a.calls.claim_due_jobs)
    assert.is_true(a.calls.query_jobs > 0)
    assert.is_true(a.calls.compare_and_swap_job >= 100) -- a claim and a completion per job
  end)

  it("never gives one job to two schedulers on the fallback path", function()
    local store = chronis.storage.lua(delegating(false))
    local lock = chronis.lock.memory()
    local runs, n = {}, 60
    local s1 = chronis.scheduler{ storage = store, lock = lock, polling_interval = 0.1 }
    local s2 = chronis.scheduler{ storage = store, lock = lock, polling_interval = 0.1 }
    for _, s in ipairs({ s1, s2 }) do
      s:handler("count", function(job)
        runs[job.job_id] = (runs[job.job_id] or 0) + 1
        chronis.sleep(0.01)
      end)
    end
    local now = chronis.time.format(chronis.time.now())
    for i = 1, n do s1:create_date_job{ job_id = "k" .. i, func_name = "count", run_date = now } end
    s1:start()
    s2:start()
    assert.is_true(chronis.run_until(function() return store:count_jobs() == 0 end, 15))
    s1:stop(1)
    s2:stop(1)
    for i = 1, n do assert.are.equal(1, runs["k" .. i]) end
    store:close()
  end)

  it("starts a job created while its next due time is asked, at the job's time", function()
    -- The answer to next_due_time predates the job: it must not push the
    -- wake-up the job's creation armed back to the next poll (30 s).
    local a = delegating(true)
    local asking = false
    a.next_due_time = function()
      asking = true
      chronis.sleep(0.3)
      asking = false
      return nil
    end
    local store = chronis.storage.lua(a)
    local s = chronis.scheduler{ storage = store, polling_interval = 30 }
    local started
    s:handler("h", function() started = chronis.time.now() end)
    s:start()
    assert.is_true(chronis.run_until(function() return asking end, 5), "next_due_time was not asked")
    local due = chronis.time.now() + 700000
    s:once(due):config { job_id = "soon" }:run("h")
    local ok = chronis.run_until(function() return started ~= nil end, 10)
    s:stop(1)
    store:close()
    assert.is_true(ok, "the job waited for the poll")
    assert.is_true(started >= due, "the job started before its time")
  end)
end)

describe("a misbehaving Lua adapter", function()
  local function sample()
    return { job_id = "x", status = "scheduled", next_run_time = "2025-01-01T00:00:00Z" }
  end

  -- A store over a delegating adapter whose `methods` replace its own.
  local function store_with(methods, opts)
    local a = delegating(true)
    for k, f in pairs(methods) do a[k] = f end
    return chronis.storage.lua(a, opts)
  end

  it("refuses a table without the required methods, naming them", function()
    local ok, err = pcall(chronis.storage.lua, { get_job = function() end }, { name = "broken" })
    assert.is_false(ok)
    assert.are.equal("invalid", err.code)
    assert.matches("lua adapter 'broken' lacks required method%(s%): create_job, update_job", err.message)
  end)

  it("attributes a raised error to the adapter and the method", function()
    local s = store_with({ get_job = function() error("backend exploded") end }, { name = "exploding" })
    local ok, err = pcall(s.get_job, s, "x")
    assert.is_false(ok)
    assert.matches("lua adapter 'exploding': get_job failed: .*backend exploded", err.message)
    s:close()
  end)

  it("keeps contract errors raised by the adapter as they are", function()
    local a = delegating(true)
    local s = chronis.storage.lua(a)
    s:create_job(sample())
    local ok, err = pcall(s.create_job, s, sample())
    assert.is_false(ok)
    assert.are.equal("duplicate", err.code)
    s:close()
  end)

  it("reports a wrong return type", function()
    local s = store_with({ get_job = function() return 42 end, count_jobs = function() return "many" end },
      { name = "sloppy" })
    local ok, err = pcall(s.get_job, s, "x")
    assert.is_false(ok)
    assert.matches("lua adapter 'sloppy': get_job returned number, expected a job or nil", err.message)
    ok, err = pcall(s.count_jobs, s, {})
    assert.is_false(ok)
    assert.matches("count_jobs returned string, expected an integer", err.message)
    s:close()
  end)

  it("times out a call that never returns", function()
    local s = store_with({ get_job = function() chronis.sleep(3600) end }, { name = "stuck", adapter_timeout = 0.2 })
    local t0 = chronis.time.now()
    local ok, err = pcall(s.get_job, s, "x")
    assert.is_false(ok)
    assert.are.equal("timeout", err.code)
    assert.matches("lua adapter 'stuck': get_job did not return within 0.2s", err.message)
    assert.is_true(chronis.time.now() - t0 >= 150000)
    s:close()
  end)

  it("answers its pending calls 'unavailable', once, when it is closed", function()
    check_close_answers(function(hang)
      return store_with({ get_job = hang }, { name = "slow", adapter_timeout = 5 })
    end, function(s) return s:get_job("x") end,
    "lua adapter 'slow': get_job: the store was closed")
  end)

  it("counts the timeout from the call, even after a long time without the loop running", function()
    local a = delegating(true)
    a.get_job = function() chronis.sleep(3600) end
    local s = chronis.storage.lua(a, { name = "stuck", adapter_timeout = 0.3 })
    local la = delegating_lock()
    la.acquire = function() chronis.sleep(3600) end
    local l = chronis.lock.lua(la, { name = "stuck", adapter_timeout = 0.3 })
    for _, call in ipairs({ function() return s:get_job("x") end,
                            function() return l:acquire("k", 10, { owner = "o" }) end }) do
      -- Busy for 0.5 s: the loop's idea of the time is that old when the
      -- call starts.
      local busy = chronis.time.now() + 500000
      while chronis.time.now() < busy do end
      local t0 = chronis.time.now()
      local ok, err = pcall(call)
      assert.is_false(ok)
      assert.are.equal("timeout", err.code)
      -- The loop's timers count whole milliseconds on the monotonic clock
      -- and now() reads the wall clock, so allow a little slack; a timeout
      -- counted from the stale loop time would come 0.5 s early, at once.
      local took = chronis.time.now() - t0
      assert.is_true(took >= 250000,
        ("timed out after %d us, before its 0.3 s"):format(took))
    end
    s:close()
    l:close()
  end)

  it("does not stop the scheduler, which retries on the next tick", function()
    local a = delegating(true)
    local failures = 2
    local real = a.claim_due_jobs
    a.claim_due_jobs = function(self, ...)
      if failures > 0 then
        failures = failures - 1
        error("temporarily unavailable")
      end
      return real(self, ...)
    end
    local logs = {}
    local store = chronis.storage.lua(a, { name = "flaky" })
    local sched = chronis.scheduler{ storage = store, polling_interval = 0.1,
                                     logger = function(level, msg) logs[#logs + 1] = level .. " " .. msg end }
    local ran = false
    sched:handler("h", function() ran = true end)
    sched:create_date_job{ job_id = "once", func_name = "h", run_date = chronis.time.format(chronis.time.now()) }
    sched:start()
    assert.is_true(chronis.run_until(function() return ran end, 5))
    sched:stop(1)
    local found, errors, back = false, 0, false
    for _, l in ipairs(logs) do
      if l:match("^error claiming due jobs failed: .*lua adapter 'flaky': claim_due_jobs failed: .*temporarily unavailable") then
        found = true
      end
      if l:match("^error ") then errors = errors + 1 end
      if l:match("^info claiming due jobs works again after 2 failed attempt") then back = true end
    end
    assert.is_true(found, "claim failure was not logged: " .. table.concat(logs, "\n"))
    -- Logged once when it starts failing and once when it works again.
    assert.are.equal(1, errors, table.concat(logs, "\n"))
    assert.is_true(back, "recovery was not logged: " .. table.concat(logs, "\n"))
    store:close()
  end)
end)

describe("lua: and file: URLs", function()
  it("refuse an option given twice, naming it, instead of using the last", function()
    local p = os.tmpname()
    os.remove(p)
    for _, url in ipairs({
      "file:" .. p .. "/jobs.json?auto_create=true&auto_create=false",
      "lua:scripts/adapters/example_kv.lua?name=a&name=b",
    }) do
      local ok, err = pcall(chronis.storage.open, url)
      assert.is_false(ok, url)
      assert.are.equal("invalid", err.code, err.message)
      local name = url:match("%?([%w_]+)=")
      assert.truthy(err.message:find("option '" .. name .. "' is given more than once", 1, true),
        err.message)
      assert.truthy(err.message:find(url, 1, true), err.message)
    end
    assert.is_nil(io.open(p .. "/jobs.json"))
  end)
end)

-- A store written in Lua may interpret filter keys of its own
-- (`filter_keys`): they reach its query_jobs and count_jobs as given, in
-- filters and in scopes, while every C store refuses them.
describe("a Lua adapter's own filter keys", function()
  local T0 = "2025-01-15T10:00:00Z"
  local OWN = { "shard", "deep.key" }

  -- The delegating adapter with `shard` (a prefix of the job id) as its
  -- own key; `seen` holds the filters each query_jobs and count_jobs got.
  local function sharded(seen)
    local a = delegating(true)
    local inner_query = a.query_jobs
    a.filter_keys = OWN
    local function select(self, filters)
      local rest, shard = {}, nil
      for k, v in pairs(filters or {}) do
        if k == "shard" then shard = v elseif k ~= "deep.key" then rest[k] = v end
      end
      local out = {}
      for _, j in ipairs(inner_query(self, rest)) do
        if shard == nil or j.job_id:sub(1, #shard) == shard then out[#out + 1] = j end
      end
      return out
    end
    function a:query_jobs(filters, limit, offset)
      seen[#seen + 1] = { method = "query_jobs", filters = filters }
      local all, out = select(self, filters), {}
      for i = (offset or 0) + 1, #all do
        if limit and limit >= 0 and #out >= limit then break end
        out[#out + 1] = all[i]
      end
      return out
    end
    function a:count_jobs(filters)
      seen[#seen + 1] = { method = "count_jobs", filters = filters }
      return #select(self, filters)
    end
    return a
  end

  local function ids(list)
    local out = {}
    for i, j in ipairs(list) do out[i] = j.job_id end
    return out
  end

  local function fill(store)
    store:create_job({ job_id = "a1", status = "scheduled", next_run_time = "2025-01-15T09:00:00Z",
      metadata = { tenant = "acme" } })
    store:create_job({ job_id = "a2", status = "scheduled", next_run_time = "2025-01-15T09:30:00Z",
      metadata = { tenant = "globex" } })
    store:create_job({ job_id = "b1", status = "scheduled", next_run_time = "2025-01-15T08:00:00Z",
      metadata = { tenant = "acme" } })
  end

  it("reach its query_jobs and count_jobs as given, with the contract's keys", function()
    local seen = {}
    local store = chronis.storage.lua(sharded(seen), { name = "sharded" })
    fill(store)
    assert.are.same({ "a1", "a2" }, ids(store:query_jobs({ shard = "a" })))
    assert.are.same({ method = "query_jobs", filters = { shard = "a" } }, seen[#seen])
    assert.are.same({ "a1" }, ids(store:query_jobs({ shard = "a", ["metadata.tenant"] = "acme" })))
    assert.are.same({ shard = "a", ["metadata.tenant"] = "acme" }, seen[#seen].filters)
    assert.are.same({ "a2" }, ids(store:query_jobs({ shard = "a", status = "scheduled" }, 1, 1)))
    assert.are.same({ shard = "a", status = "scheduled" }, seen[#seen].filters)
    assert.are.equal(1, store:count_jobs({ shard = "b" }))
    assert.are.same({ method = "count_jobs", filters = { shard = "b" } }, seen[#seen])
    local given = { 1, "two", { k = true, n = 2.5 } }
    assert.are.equal(3, store:count_jobs({ ["deep.key"] = given }))
    assert.are.same({ ["deep.key"] = given }, seen[#seen].filters)
    local n = #seen
    local ok, err = pcall(store.query_jobs, store, { shard = "a", shardd = "a" })
    assert.is_false(ok)
    assert.are.equal("invalid", err.code)
    assert.truthy(err.message:find("'shardd'", 1, true), err.message)
    assert.are.equal(n, #seen, "a refused filter reached the adapter")
    store:close()
  end)

  it("may be a scope: scoped calls without scoped_claims pass them to query_jobs", function()
    local seen = {}
    local store = chronis.storage.lua(sharded(seen), { name = "sharded" })
    fill(store)
    assert.are.equal("2025-01-15T09:00:00Z", store:next_due_time({ shard = "a" }))
    assert.are.equal("2025-01-15T08:00:00Z", store:next_due_time({ shard = "b" }))
    assert.is_nil(store:next_due_time({ shard = "c" }))
    local got = store:claim_due_jobs({ now = T0, limit = 10, owner = "o", filters = { shard = "a",
      ["metadata.tenant"] = "acme" } })
    assert.are.same({ "a1" }, ids(got))
    local passed = false
    for _, s in ipairs(seen) do
      passed = passed or (s.method == "query_jobs" and s.filters.shard == "a"
        and s.filters["metadata.tenant"] == "acme")
    end
    assert.is_true(passed, "the scope did not reach query_jobs")
    assert.are.equal("scheduled", store:get_job("a2").status)
    assert.are.equal("scheduled", store:get_job("b1").status)
    assert.are.equal(1, store:recover_expired_leases("2025-01-16T00:00:00Z", { shard = "a" }))
    assert.are.equal("scheduled", store:get_job("a1").status)
    store:close()
  end)

  it("are refused with 'invalid' naming them by every C store", function()
    local path = os.tmpname()
    for _, store in ipairs({ chronis.storage.memory(), chronis.storage.open("sqlite:" .. path) }) do
      fill(store)
      for _, key in ipairs(OWN) do
        local calls = {
          function() return store:query_jobs({ [key] = "a" }) end,
          function() return store:count_jobs({ [key] = "a" }) end,
          function() return store:next_due_time({ [key] = "a" }) end,
          function() return store:recover_expired_leases(T0, { [key] = "a" }) end,
          function() return store:claim_due_jobs({ now = T0, limit = 10, owner = "o", filters = { [key] = "a" } }) end,
        }
        for i, call in ipairs(calls) do
          local ok, err = pcall(call)
          assert.is_false(ok, key .. " call " .. i)
          assert.are.equal("invalid", err.code, err.message)
          assert.truthy(err.message:find("'" .. key .. "'", 1, true), err.message)
        end
      end
      assert.are.equal(0, #store:query_jobs({ status = "running" }))
      store:close()
    end
    os.remove(path)
  end)

  it("must be strings that are not the contract's keys", function()
    for _, keys in ipairs({ "shard", { "status" }, { "metadata.tenant" }, { "" }, { 5 }, { "job_id_in" } }) do
      local a = delegating(false)
      a.filter_keys = keys
      local ok, err = pcall(chronis.storage.lua, a, { name = "bad" })
      assert.is_false(ok)
      assert.are.equal("invalid", err.code, err.message)
      assert.truthy(err.message:find("filter_keys", 1, true), err.message)
    end
  end)
end)
