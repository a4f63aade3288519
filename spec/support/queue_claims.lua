-- claim_due_jobs with queues (runtime/core/store.h, docs/queues.md) on a
-- store that applies them itself (CHR_STORE_CAP_QUEUES), called directly:
-- which jobs a claim takes, and the global concurrency and rate limits
-- held across handles (each handle has its own connections, as another
-- process has), also when many claims race.
--
--   require("support.queue_claims")("redis", function()
--     local p = fresh_prefix()
--     return function() return chronis.storage.redis(url, { prefix = p }) end
--   end)
--
-- fresh() makes an empty namespace and returns open(), which opens another
-- handle on it; every handle opened is closed after each test.
local chronis = require "chronis"
local U = require "support.util"
local ids = require("support.jobs").ids_of

local describe, it, before_each, after_each, assert = U.busted()

local S = 1000000
-- A fake clock on a whole hour: claims give their `now`, rate windows are
-- cut from it.
local T = 1893456000 * S
local function iso(us) return chronis.time.format(us) end

return function(name, fresh)
  describe(name .. " claims with queues", function()
    local open, handles, store
    before_each(function()
      local o = fresh()
      handles = {}
      open = function()
        local h = o()
        handles[#handles + 1] = h
        return h
      end
      store = open()
    end)
    after_each(function()
      for _, h in ipairs(handles) do h:close() end
    end)

    -- A one-shot job due `ago` seconds before T, in queue q (nil: none).
    local function job(id, q, fields)
      local j = { job_id = id, status = "scheduled", next_run_time = iso(T - 100 * S), func_name = "f",
        trigger_type = "date", trigger_args = { run_date = iso(T - 100 * S) }, queue = q }
      for k, v in pairs(fields or {}) do j[k] = v end
      return store:create_job(j)
    end

    -- A claim at T by default; a queue without a limit may take 100.
    local function claim(h, queues, opts)
      for _, q in ipairs(queues) do q.limit = q.limit or 100 end
      local o = { now = iso(T), owner = "o", lease_seconds = 600, limit = 100, queues = queues }
      for k, v in pairs(opts or {}) do o[k] = v end
      return h:claim_due_jobs(o)
    end

    local function sorted(list)
      local l = ids(list)
      table.sort(l)
      return l
    end

    it("takes the due jobs of the queues named, and 'default' is a job without one", function()
      job("a1", "a")
      job("a2", "a")
      job("a_later", "a", { next_run_time = iso(T + 100 * S) })
      job("b1", "b")
      job("d1")
      job("d2", "default")
      assert.are.same({ "a1", "a2" }, sorted(claim(store, { { name = "a" } })))
      assert.are.same({ "d1", "d2" }, sorted(claim(store, { { name = "default" } })))
      assert.are.same({}, ids(claim(store, { { name = "nothing" } })))
      local got = claim(store, { { name = "b" }, { name = "a" } }, { now = iso(T + 200 * S) })
      assert.are.same({ "a_later", "b1" }, sorted(got))
      for _, j in ipairs(got) do
        assert.are.equal("running", j.status)
        assert.are.equal("o", j.claimed_by)
      end
      assert.are.equal(0, store:count_jobs({ status = "scheduled" }))
    end)

    it("takes at most each queue's limit and the claim's limit in all", function()
      for i = 1, 5 do
        job("a" .. i, "a", { next_run_time = iso(T - (100 - i) * S) })
        job("b" .. i, "b", { next_run_time = iso(T - (100 - i) * S) })
      end
      local got = claim(store, { { name = "a", limit = 2 }, { name = "b", limit = 3 } })
      assert.are.same({ "a1", "a2", "b1", "b2", "b3" }, sorted(got))
      got = claim(store, { { name = "a", limit = 3 }, { name = "b", limit = 3 } }, { limit = 2 })
      assert.are.equal(2, #got)
      -- In claim order across the queues: the earliest of either.
      assert.are.same({ "a3", "a4" }, ids(got))
    end)

    it("takes a queue's jobs in claim order: priority first, then time, then id", function()
      job("low_early", "a", { priority = 1, next_run_time = iso(T - 500 * S) })
      job("high_late", "a", { priority = 9, next_run_time = iso(T - 10 * S) })
      job("mid_z", "a", { priority = 5, next_run_time = iso(T - 50 * S) })
      job("mid_y", "a", { priority = 5, next_run_time = iso(T - 50 * S) })
      job("b_top", "b", { priority = 10 })
      assert.are.same({ "high_late" }, ids(claim(store, { { name = "a", limit = 1 } })))
      assert.are.same({ "mid_y", "mid_z", "low_early" }, ids(claim(store, { { name = "a" } })))
    end)

    it("takes a job again once its lease is recovered, and not one whose queue changed", function()
      job("x", "a")
      job("y", "a")
      -- A claim without queues leaves its jobs in the queue's sets behind it.
      assert.are.same({ "x", "y" }, ids(store:claim_due_jobs({ now = iso(T), owner = "p", lease_seconds = 1 })))
      assert.are.equal(2, store:recover_expired_leases(iso(T + 2 * S)))
      assert.is_true((store:compare_and_swap_job("y", { status = "scheduled" }, { queue = "b" })))
      assert.are.same({ "x" }, ids(claim(store, { { name = "a" } }, { now = iso(T + 3 * S) })))
      assert.are.same({ "y" }, ids(claim(store, { { name = "b" } }, { now = iso(T + 3 * S) })))
    end)

    it("holds a global limit across handles, counting every running job of the queue", function()
      for i = 1, 8 do job(("g%d"):format(i), "g", { next_run_time = iso(T - (100 - i) * S) }) end
      job("other", "h")
      local other = open()
      local q = { { name = "g", global_limit = 3 } }
      assert.are.same({ "g1", "g2", "g3" }, ids(claim(store, q, { owner = "one" })))
      assert.are.same({}, ids(claim(other, q, { owner = "two" })))
      -- Another queue is not held back.
      assert.are.same({ "other" }, ids(claim(other, { { name = "h", global_limit = 3 } })))
      store:complete_jobs({ { job_id = "g2", owner = "one", delete = true } })
      assert.are.same({ "g4" }, ids(claim(other, q, { owner = "two" })))
      -- A job back to scheduled is no longer running.
      store:complete_jobs({ { job_id = "g1", owner = "one",
        updates = { status = "scheduled", claimed_by = chronis.json.null, lease_until = chronis.json.null,
          next_run_time = iso(T + 3600 * S) } } })
      assert.are.same({ "g5" }, ids(claim(other, { { name = "g", global_limit = 3, limit = 5 } }, { owner = "two" })))
      -- Jobs claimed without queues count too.
      store:complete_jobs({ { job_id = "g3", owner = "one", delete = true } })
      assert.are.same({ "g6" }, ids(store:claim_due_jobs({ now = iso(T), owner = "plain", limit = 1 })))
      assert.are.same({}, ids(claim(other, q)))
      local running = {}
      for _, j in ipairs(store:query_jobs({ status = "running" })) do
        if j.queue == "g" then running[#running + 1] = j.job_id end
      end
      assert.are.same({ "g4", "g5", "g6" }, running)
    end)

    it("holds a rate limit across handles per window, and a new window starts afresh", function()
      for i = 1, 12 do job(("r%02d"):format(i), "r", { next_run_time = iso(T - (100 - i) * S) }) end
      local other = open()
      local q = { { name = "r", rate_limit = 3, rate_period = 60 } }
      assert.are.same({ "r01", "r02" }, ids(claim(store, q, { limit = 2, now = iso(T + 1 * S) })))
      assert.are.same({ "r03" }, ids(claim(other, q, { now = iso(T + 30 * S) })))
      assert.are.same({}, ids(claim(store, q, { now = iso(T + 59 * S) })))
      -- Completions do not give claims back within the window.
      store:complete_jobs({ { job_id = "r01", owner = "o", delete = true } })
      assert.are.same({}, ids(claim(other, q, { now = iso(T + 59999999) })))
      -- The next window, [T + 60 s, T + 120 s).
      assert.are.same({ "r04", "r05", "r06" }, ids(claim(other, q, { now = iso(T + 60 * S) })))
      assert.are.same({}, ids(claim(store, q, { now = iso(T + 119 * S) })))
      -- A per-claim limit below the rate's room takes that many.
      assert.are.same({ "r07" }, ids(claim(store, { { name = "r", limit = 1, rate_limit = 3, rate_period = 60 } },
        { now = iso(T + 120 * S) })))
      -- Global and rate limits together: the tighter one holds.
      assert.are.same({ "r08" }, ids(claim(other, { { name = "r", global_limit = 7, rate_limit = 3, rate_period = 60 } },
        { now = iso(T + 121 * S) })))
    end)

    it("never passes a global or rate limit however many claims race from two handles", function()
      for i = 1, 40 do
        job(("c%02d"):format(i), "c")
        job(("w%02d"):format(i), "w")
        job(("n%02d"):format(i), "n")
      end
      local hs = { store, open() }
      local tasks = {}
      for i = 1, 24 do
        tasks[i] = chronis.spawn(function(n)
          local h = hs[n % 2 + 1]
          return claim(h, { { name = "c", global_limit = 5, limit = 2 },
            { name = "w", rate_limit = 7, rate_period = 3600, limit = 2 },
            { name = "n", limit = 1 } }, { owner = "t" .. n })
        end, i)
      end
      local seen, per = {}, { c = 0, w = 0, n = 0 }
      for _, t in ipairs(tasks) do
        for _, j in ipairs(t:join()) do
          assert.is_nil(seen[j.job_id], j.job_id .. " claimed twice")
          seen[j.job_id] = true
          per[j.queue] = per[j.queue] + 1
        end
      end
      assert.are.same({ c = 5, w = 7, n = 24 }, per)
      -- Later claims find no room either, whichever handle asks.
      for _, h in ipairs(hs) do
        assert.are.same({}, ids(claim(h, { { name = "c", global_limit = 5 },
          { name = "w", rate_limit = 7, rate_period = 3600 } }, { now = iso(T + 10 * S) })))
      end
    end)

    it("applies a scope together with queues", function()
      job("t1a", "a", { metadata = { tenant_id = "t1" } })
      job("t2a", "a", { metadata = { tenant_id = "t2" } })
      job("t1b", "b", { metadata = { tenant_id = "t1" } })
      assert.are.same({ "t1a" }, ids(claim(store, { { name = "a" } }, { filters = { ["metadata.tenant_id"] = "t1" } })))
      assert.are.same({ "t2a" }, ids(claim(store, { { name = "a" }, { name = "c" } })))
    end)
  end)
end
