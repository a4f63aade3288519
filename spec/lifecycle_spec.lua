-- Ownership and lifetimes between the Lua objects and the C core: a
-- scheduler's lock belongs to that scheduler (not to the shared store),
-- runs keep their scheduler alive, and update_job cannot overwrite a
-- change that happened between its read and its write.
local chronis = require "chronis"
local H = require "support.engine_helper"

-- A store written in Lua without claim_due_jobs, so that claims go through
-- the emulated path, which takes the scheduler's lock per job.
local function store_without_claim()
  local inner = chronis.storage.memory()
  local adapter = {}
  for _, m in ipairs({ "create_job", "get_job", "get_jobs_batch", "update_job",
    "compare_and_swap_job", "delete_job", "query_jobs", "count_jobs" }) do
    adapter[m] = function(_, ...) return inner[m](inner, ...) end
  end
  return chronis.storage.lua(adapter, { name = "no_claim" }), inner
end

-- A lock written in Lua that counts its acquires.
local function counting_lock()
  local held, n = {}, { acquires = 0 }
  local lock = chronis.lock.lua({
    acquire = function(_, key, _, opts)
      n.acquires = n.acquires + 1
      if held[key] then return false end
      held[key] = opts.owner
      return true
    end,
    release = function(_, key, owner)
      if held[key] ~= owner then return false end
      held[key] = nil
      return true
    end,
    extend = function(_, key, _, owner) return held[key] == owner end,
    reset = function(_, key) local had = held[key] ~= nil; held[key] = nil; return had end,
  })
  return lock, n
end

local function due(s, id)
  s:create_date_job { job_id = id, func_name = "h", run_date = chronis.time.now() }
end

describe("lifecycles", function()
  after_each(H.cleanup)

  describe("a scheduler's lock", function()
    it("is the one each scheduler was given, even when another scheduler shares the store", function()
      local store = store_without_claim()
      local lock_a, count_a = counting_lock()
      local lock_b, count_b = counting_lock()
      local a = H.scheduler { storage = store, lock = lock_a, polling_interval = 0.1 }
      H.scheduler { storage = store, lock = lock_b, polling_interval = 0.1 } -- never started
      local ran = 0
      a:handler("h", function() ran = ran + 1 end)
      for i = 1, 3 do due(a, "j" .. i) end
      a:start()
      H.wait(function() return ran == 3 end)
      assert.is_true(count_a.acquires >= 3)
      assert.are.equal(0, count_b.acquires)
    end)

    it("lives as long as its scheduler, however the caller drops its own reference", function()
      local store = store_without_claim()
      local s = H.scheduler { storage = store, lock = chronis.lock.memory(), polling_interval = 0.1 }
      collectgarbage()
      collectgarbage()
      local ran = 0
      s:handler("h", function() ran = ran + 1 end)
      for i = 1, 3 do due(s, "j" .. i) end
      s:start()
      H.wait(function() return ran == 3 end)
    end)
  end)

  it("a run keeps its scheduler alive: closing it from its own handler is safe", function()
    local s = H.scheduler { polling_interval = 0.1 }
    local after = false
    s:handler("h", function()
      s:close()
      -- The handler is stopped at its next instruction; nothing of the
      -- scheduler is freed under it.
      after = true
    end)
    due(s, "self")
    s:start()
    local closed = function() return not pcall(s.state, s) end
    assert.is_true(chronis.run_until(closed, 5))
    chronis.run_until(0.2)
    collectgarbage()
    assert.is_false(after)
  end)

  it("update_job is a compare-and-swap: a claim between its read and its write stays", function()
    local inner = chronis.storage.memory()
    local claim_between = false
    local adapter = { is_local = true }
    for _, m in ipairs({ "create_job", "get_jobs_batch", "update_job", "compare_and_swap_job",
      "delete_job", "query_jobs", "count_jobs", "claim_due_jobs", "complete_jobs" }) do
      adapter[m] = function(_, ...) return inner[m](inner, ...) end
    end
    adapter.get_job = function(_, id)
      local job = inner:get_job(id)
      if claim_between then -- another node claims the job right after our read
        claim_between = false
        inner:claim_due_jobs({ now = chronis.time.now() + 10 * H.S, limit = 1, owner = "other",
          lease_seconds = 30 })
      end
      return job
    end
    local s = H.scheduler { storage = chronis.storage.lua(adapter) }
    s:every { seconds = 5 }:config { job_id = "every5" }:run("h")
    claim_between = true
    local job = s:update_job("every5", { priority = 7 })
    assert.are.equal("running", job.status)
    assert.are.equal("other", job.claimed_by)
    assert.are.equal(7, job.priority)
    -- Found running on the second read: its trigger is its run's now.
    s:every { seconds = 5 }:config { job_id = "every6" }:run("h")
    claim_between = true
    local ok, err = pcall(s.update_job, s, "every6", { trigger_args = { seconds = 7 } })
    assert.is_false(ok)
    assert.are.equal("invalid_state", err.code)
    assert.truthy(err.message:find("'trigger_args'", 1, true), err.message)
    job = s:get_job("every6")
    assert.are.equal("other", job.claimed_by)
    assert.are.same({ seconds = 5 }, job.trigger_args)
  end)

  -- A process that stops schedulers and makes new ones (a restart, a store
  -- reopened) must not keep every old one, with its store, for ever.
  it("a stopped scheduler that nothing references is freed, and its store with it", function()
    local gone = setmetatable({}, { __mode = "k" })
    local function run_one()
      local store = chronis.storage.memory()
      local s = chronis.scheduler { storage = store, polling_interval = 0.1,
                                    on_success = function() end }
      local ran = false
      s:handler("h", function() ran = true end)
      due(s, "once")
      s:start()
      assert.is_true(chronis.run_until(function() return ran end, 5))
      s:stop()
      gone[s], gone[store] = "scheduler", "store"
    end
    run_one()
    -- The engine closes its timers on the loop before it lets go of the store.
    collectgarbage()
    chronis.run_until(0.2)
    collectgarbage()
    collectgarbage()
    assert.is_nil(next(gone))
  end)
end)

describe("stores written in Lua", function()
  after_each(H.cleanup)

  it("keep their atomicity: only handlers are preempted, not other tasks", function()
    -- The file store rewrites its whole file in one piece of code between
    -- two waits; preempting it there would let another call see a file it
    -- did not write and refuse it. 3,000 jobs make each write take a while.
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. dir)
    -- The adapter table itself, called from tasks of our own.
    local store = assert(loadfile("adapters/file.lua", "t"))()({ path = dir .. "/jobs.json" })
    local pad = string.rep("x", 200)
    for i = 1, 3000 do
      store:create_job { job_id = "j" .. i, status = "scheduled", next_run_time = "2025-01-01T00:00:00Z",
        kwargs = { pad = pad } }
    end
    local failures, done = {}, 0
    for w = 1, 2 do
      chronis.spawn(function()
        for i = 1, 20 do
          local ok, err = pcall(store.update_job, store, "j" .. (w * 100 + i), { priority = 7 })
          if not ok then failures[#failures + 1] = tostring(err) end
        end
        done = done + 1
      end)
    end
    H.wait(function() return done == 2 end, 60)
    store:close()
    os.execute("rm -rf " .. dir)
    assert.are.same({}, failures)
  end)
end)
