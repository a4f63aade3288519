-- Tenant-scoped schedulers in separate processes (docs/tenancy.md): worker
-- processes (spec/support/worker.lua), each with its own filters, share
-- one store (a SQLite file, a Redis server, a PostgreSQL database) and
-- run jobs of four tenants. Every job runs exactly once, in a process
-- whose filters match it. Where the store sends wake-ups across
-- processes (Redis pub/sub, PostgreSQL NOTIFY), jobs created while the
-- workers sleep run long before their poll: a scoped scheduler in
-- another process is woken for its tenant's jobs.
local chronis = require "chronis"
local P = require "support.process"
local U = require "support.util"

local describe, it, _, _, assert = U.busted()

local sh_quote, ROOT = U.sh_quote, U.ROOT
local WORKER = ROOT .. "/spec/support/worker.lua"

local TENANTS = { "acme", "beta", "gamma", "delta" }

-- The workers: acme's jobs have two processes that may run them (one with
-- an $in), the others one each.
local WORKERS = {
  { scope = { ["metadata.tenant_id"] = "acme" }, runs = { acme = true } },
  { scope = { ["metadata.tenant_id"] = { ["$in"] = { "acme", "beta" } } }, runs = { acme = true, beta = true } },
  { scope = { ["metadata.tenant_id"] = "gamma" }, runs = { gamma = true } },
  { scope = { ["metadata.tenant_id"] = "delta" }, runs = { delta = true } },
}

local PER_TENANT = 60 -- a first batch, created before the workers start
local LATER = 15      -- per tenant, created once the workers have run the first

local function job_id(tenant, batch, i)
  return ("%s-%s-%03d"):format(tenant, batch, i)
end

-- Creates n due jobs per tenant, due `delay` seconds from now.
local function create_jobs(store, batch, n, delay)
  local at = chronis.time.now() + math.floor(delay * 1e6)
  for _, t in ipairs(TENANTS) do
    for i = 1, n do
      store:create_job { job_id = job_id(t, batch, i), status = "scheduled", func_name = "record",
        trigger_type = "date", trigger_args = { run_date = chronis.time.format(at) },
        next_run_time = at, metadata = { tenant_id = t } }
    end
  end
  return #TENANTS * n
end

local function start_workers(url, poll)
  local procs = {}
  for i, w in ipairs(WORKERS) do
    procs[i] = P.spawn(("%s %s %s runs.txt poll=%s for=300 scope=%s"):format(
      sh_quote(os.getenv("LUA") or "lua5.4"), sh_quote(WORKER), sh_quote(url), poll,
      sh_quote(chronis.json.encode(w.scope))))
  end
  return procs
end

-- { [job_id] = { worker index, ... } } from every worker's record.
local function runs_of(procs)
  local runs, total = {}, 0
  for i, p in ipairs(procs) do
    for id in U.read(p.dir .. "/runs.txt", ""):gmatch("run (%S+) %d+\n") do
      runs[id] = runs[id] or {}
      table.insert(runs[id], i)
      total = total + 1
    end
  end
  return runs, total
end

local function count_runs(procs)
  local _, total = runs_of(procs)
  return total
end

local function stop_workers(procs)
  for _, p in ipairs(procs) do U.write(p.dir .. "/runs.txt.stop", "") end
  for i, p in ipairs(procs) do
    local rc = p:wait(30)
    assert(rc == 0, ("worker %d ended with %s: %s"):format(i, tostring(rc), p:stderr()))
  end
end

-- Every job of every batch ran once, in a worker whose filters match it;
-- the workers warned of nothing.
local function check(procs, batches)
  local runs, total = runs_of(procs)
  local expected = 0
  for batch, n in pairs(batches) do
    for _, t in ipairs(TENANTS) do
      for i = 1, n do
        local id = job_id(t, batch, i)
        local r = runs[id] or {}
        assert(#r == 1, ("job %s ran %d times"):format(id, #r))
        assert(WORKERS[r[1]].runs[t], ("job %s ran in worker %d, whose filters it does not match")
          :format(id, r[1]))
        expected = expected + 1
      end
    end
  end
  assert.are.equal(expected, total)
  for i, p in ipairs(procs) do
    assert.are.equal("", p:stderr(), ("worker %d wrote errors"):format(i))
  end
end

-- One store shared by the workers. `poll`: their polling interval;
-- `hints`: whether the store wakes schedulers of other processes, so that
-- the later batch must run long before that poll.
local function shared_store(name, url_fn, poll, hints)
  describe(name, function()
    local procs = {}

    after_each(function()
      for _, p in ipairs(procs) do p:close() end
      procs = {}
    end)

    it("runs each tenant's jobs exactly once, in a process whose filters match them", function()
      local url = url_fn()
      local store = chronis.storage.open(url)
      local n = create_jobs(store, "first", PER_TENANT, 0)
      procs = start_workers(url, poll)
      assert(chronis.run_until(function() return count_runs(procs) >= n end, 60),
        ("the first %d jobs did not all run"):format(n))
      -- Now the workers sleep until their poll (or, on a store without
      -- hints across processes, poll often). Jobs created now are due in
      -- 0.3 s: they must run before that poll.
      local later = create_jobs(store, "later", LATER, 0.3)
      local bound = hints and poll / 2 or 60
      assert(chronis.run_until(function() return count_runs(procs) >= n + later end, bound),
        ("the %d jobs created while the workers slept did not run within %d s (poll: %s s)")
          :format(later, bound, tostring(poll)))
      chronis.run_until(0.5) -- room for a second run of any job
      stop_workers(procs)
      check(procs, { first = PER_TENANT, later = LATER })
      assert.are.equal(0, store:count_jobs())
      store:close()
    end)
  end)
end

describe("tenant-scoped schedulers in separate processes", function()
  local dir = U.tmpdir("chronis-tenancy")
  shared_store("on one SQLite file", function() return "sqlite:" .. dir .. "/jobs.db" end, 0.2, false)

  local redis
  shared_store("on one Redis server", function()
    redis = redis or require("support.redis").start()
    return redis.url .. "?prefix=tenancy"
  end, 60, true)

  local pg
  shared_store("on one PostgreSQL database", function()
    pg = pg or require("support.postgres").start()
    -- A loaded machine may take longer than the default 10 s to connect.
    return pg:url("table=tenancy_jobs&connect_timeout=30")
  end, 60, true)

  teardown(function()
    if redis then redis:stop() end
    if pg then pg:stop() end
    U.remove_tree(dir)
  end)
end)
