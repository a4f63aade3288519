-- Paths that once leaked memory. Each test also asserts what a user sees,
-- but the leak itself shows only under `make test SANITIZER=address`:
-- LeakSanitizer checks this process at exit, and spec/run.sh fails the
-- file, naming the allocation, when chronis code leaked.
local chronis = require "chronis"
local core = require "chronis.core"

local U = require "support.util"

local NOW = chronis.time.format(chronis.time.now())
-- A Lua adapter with only the required methods: the optional operations
-- (claim, completion, recovery...) are emulated.
local minimal_store = U.minimal_store

local function due(store, n)
  for i = 1, n do
    store:create_job({ job_id = ("j%03d"):format(i), status = "scheduled", next_run_time = NOW,
      func_name = "h", trigger_type = "date", trigger_args = { run_date = NOW } })
  end
end

local function error_of(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "no error raised")
  return err
end

after_each(function()
  collectgarbage()
  assert.are.equal(0, core.live_tasks())
end)

describe("the emulated claim of a Lua adapter without claim_due_jobs", function()
  it("frees every candidate it examined, claimed or not", function()
    local store = minimal_store()
    due(store, 100)
    -- 40 candidates are read for a limit of 10: ten claimed, thirty not.
    local claimed = store:claim_due_jobs({ now = NOW, limit = 10, owner = "n1", lease_seconds = 30 })
    assert.are.equal(10, #claimed)
    -- Then every one of the remaining 90 is examined and claimed.
    claimed = store:claim_due_jobs({ now = NOW, limit = 400, owner = "n1", lease_seconds = 30 })
    assert.are.equal(90, #claimed)
    assert.are.equal(100, store:count_jobs({ status = "running" }))
    store:close()
  end)

  it("releases the per-job lock it took, so another node may claim the job next", function()
    local store = minimal_store()
    local lock = chronis.lock.memory()
    local sched = chronis.scheduler({ storage = store, lock = lock, polling_interval = 0.1,
      node_id = "n1", logger = function() end })
    local ran = 0
    sched:handler("h", function() ran = ran + 1 end)
    due(store, 3)
    sched:start()
    assert.is_true(chronis.run_until(function() return ran == 3 end, 10))
    sched:stop()
    sched:close()
    for i = 1, 3 do
      local key = ("chronis:claim:j%03d"):format(i)
      assert.is_true(lock:acquire(key, 10, { owner = "n2" }), key .. " is still held")
    end
    lock:close()
    store:close()
  end)
end)

describe("a filter with a bad key", function()
  -- Keys are read in table order, which Lua does not fix: with this many
  -- metadata keys, some are converted before the bad one raises.
  local function filter(n, bad)
    local f = {}
    for i = 1, n do f["metadata.k" .. i] = { i, "v" .. i } end
    for k, v in pairs(bad) do f[k] = v end
    return f
  end

  it("raises without keeping what it had converted", function()
    local store = chronis.storage.memory()
    for n = 10, 50, 10 do
      local err = error_of(store.query_jobs, store, filter(n, { next_run_time_lte = "not a time" }))
      assert.are.equal("invalid", err.code)
      assert.truthy(err.message:find("next_run_time_lte", 1, true), err.message)
      err = error_of(store.count_jobs, store, filter(n, { job_id_in = { "a", 2 } }))
      assert.are.equal("invalid", err.code)
      assert.truthy(err.message:find("job_id_in", 1, true), err.message)
    end
    store:close()
  end)
end)
