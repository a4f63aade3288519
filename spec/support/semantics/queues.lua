-- Engine semantics: named queues (docs/queues.md), run on every store by
-- engine_contract.lua as (name, factory, opts).
--
-- A job's `queue` (absent: "default"); the scheduler option `queues`
-- (a number: the queue's concurrency in this process; a table:
-- concurrency, global_concurrency, rate = {limit, period}). Per-process
-- limits hold on every store; global concurrency and rate limits hold
-- across processes on the stores that apply them atomically with the claim
-- (memory, sqlite, postgres, redis) and are refused on the others with an
-- error that names the queue and the store.
local chronis = require "chronis"
local H = require "support.engine_helper"
local U = require "support.util"

local describe, it, _, _, assert = U.busted()

local S, T0 = H.S, H.T0

-- The stores that apply global and rate limits atomically with the claim
-- (CHR_STORE_CAP_QUEUES), by store:kind().
local ENFORCES = { memory = true, sqlite = true, postgres = true, redis = true }

return function(name, factory, opts)
  opts = opts or {}
  local F = require("support.semantics.fixture")(factory, opts, { scheduler = { polling_interval = 0.2 } })
  local sched, wait = F.sched, F.wait

  describe(name .. " queues", function()
    F.install()

    -- A date job of queue q (nil: no queue) due `ago` seconds before T0.
    local function job(s, id, q, ago, fields)
      local f = { queue = q, misfire_threshold_seconds = 86400 }
      for k, v in pairs(fields or {}) do f[k] = v end
      return H.due_job(s, id, T0 - (ago or 1) * S, "h", f)
    end

    local function left()
      return F.store:count_jobs()
    end

    -- Gives every scheduler a few more claims: what they did not take by
    -- then they would not take at all.
    local function more_ticks(list)
      for _ = 1, 3 do
        for _, s in ipairs(list) do s:tick() end
        chronis.run_until(0.1)
      end
    end

    describe("selection", function()
      it("stores a job's queue and leaves it absent when not given", function()
        local s = sched()
        assert.are.equal("emails", job(s, "a", "emails").queue)
        assert.are.equal("emails", F.store:get_job("a").queue)
        assert.is_nil(job(s, "b").queue)
        local built = s:once(T0):config { job_id = "c", queue = "reports" }:run("h")
        assert.are.equal("reports", built.queue)
        assert.are.equal("reports", s:update_job("b", { queue = "reports" }).queue)
        assert.are.equal("reports", F.store:get_job("b").queue)
      end)

      it("a scheduler without queues runs the jobs of every queue", function()
        local s = sched()
        local ran = {}
        s:handler("h", function(j) ran[#ran + 1] = j.job_id end)
        job(s, "a1", "a")
        job(s, "b1", "b")
        job(s, "d1")
        s:start()
        wait(function() return left() == 0 end, "jobs left")
        table.sort(ran)
        assert.are.same({ "a1", "b1", "d1" }, ran)
      end)

      it("a scheduler serving queue a runs none of b's or default's jobs", function()
        local s = sched { queues = { a = 5 } }
        local ran = {}
        s:handler("h", function(j) ran[#ran + 1] = j.job_id end)
        job(s, "a1", "a", 3)
        job(s, "b1", "b", 4)
        job(s, "d1", nil, 5)
        job(s, "a2", "a", 2)
        s:start()
        wait(function() return F.store:get_job("a1") == nil and F.store:get_job("a2") == nil end,
          "queue a's jobs did not run")
        more_ticks { s }
        table.sort(ran)
        assert.are.same({ "a1", "a2" }, ran)
        assert.are.equal("scheduled", F.store:get_job("b1").status)
        assert.are.equal("scheduled", F.store:get_job("d1").status)
      end)

      it("serves the default queue by its name", function()
        local s = sched { queues = { default = 2 } }
        local ran = {}
        s:handler("h", function(j) ran[#ran + 1] = j.job_id end)
        job(s, "d1")
        job(s, "d2", "default")
        job(s, "b1", "b")
        s:start()
        wait(function() return #ran == 2 end, "the default queue's jobs did not run")
        more_ticks { s }
        table.sort(ran)
        assert.are.same({ "d1", "d2" }, ran)
        assert.are.equal("scheduled", F.store:get_job("b1").status)
      end)

      it("two schedulers (two handles) with different queues each run only theirs", function()
        local s1 = sched { queues = { a = 3 } }
        local s2 = sched { queues = { b = 3 }, storage = F.other_handle() }
        local by = {}
        s1:handler("h", function(j) by[j.job_id] = "s1" end)
        s2:handler("h", function(j) by[j.job_id] = "s2" end)
        for i = 1, 5 do
          job(s1, "a" .. i, "a", i)
          job(s1, "b" .. i, "b", i)
        end
        s1:start()
        s2:start()
        wait(function() return left() == 0 end, "jobs left", 20)
        for i = 1, 5 do
          assert.are.equal("s1", by["a" .. i], "a" .. i)
          assert.are.equal("s2", by["b" .. i], "b" .. i)
        end
      end)
    end)

    describe("per-process concurrency", function()
      it("holds each queue to its concurrency, and a run's end lets the next start", function()
        local s = sched { queues = { a = 2, b = 1 }, max_workers = 10 }
        local g = H.gate()
        local per, max = { a = 0, b = 0 }, { a = 0, b = 0 }
        s:handler("h", function(j)
          local q = j.queue
          per[q] = per[q] + 1
          if per[q] > max[q] then max[q] = per[q] end
          g:pass(j)
          per[q] = per[q] - 1
        end)
        for i = 1, 4 do job(s, "a" .. i, "a", i) end
        for i = 1, 3 do job(s, "b" .. i, "b", i) end
        s:start()
        wait(function() return g.inside == 3 end, "the first runs did not start")
        more_ticks { s }
        assert.are.equal(3, g.inside)
        assert.are.same({ a = 2, b = 1 }, per)
        local st = s:get_queue_status()
        assert.are.equal(2, st.queues.a.running)
        assert.are.equal(0, st.queues.a.held)
        assert.are.equal(2, st.queues.a.concurrency)
        assert.are.equal(1, st.queues.b.running)
        g.open = true
        wait(function() return left() == 0 end, "jobs left", 20)
        assert.are.equal(7, #g.entered)
        assert.are.same({ a = 2, b = 1 }, max)
      end)

      it("max_workers still caps the total", function()
        local s = sched { queues = { a = 5, b = 5 }, max_workers = 3 }
        local g = H.gate()
        s:handler("h", function(j) g:pass(j) end)
        for i = 1, 4 do
          job(s, "a" .. i, "a", i)
          job(s, "b" .. i, "b", i)
        end
        s:start()
        wait(function() return g.inside == 3 end, "the first runs did not start")
        more_ticks { s }
        assert.are.equal(3, g.inside)
        g.open = true
        wait(function() return left() == 0 end, "jobs left", 20)
        assert.are.equal(3, g.max_inside)
      end)

      it("takes a queue's jobs by priority, within the queue only", function()
        local s = sched { queues = { a = 1 } }
        local order = {}
        s:handler("h", function(j) order[#order + 1] = j.job_id end)
        job(s, "low", "a", 3, { priority = 1 })
        job(s, "high", "a", 1, { priority = 9 })
        job(s, "mid", "a", 2, { priority = 5 })
        job(s, "other", "b", 4, { priority = 10 })
        s:start()
        wait(function() return #order == 3 end, "queue a's jobs did not run")
        more_ticks { s }
        assert.are.same({ "high", "mid", "low" }, order)
        assert.are.equal("scheduled", F.store:get_job("other").status)
      end)
    end)

    describe("limits across processes", function()
      it("global_concurrency holds across two schedulers (two handles), or is refused",
        function()
        local q = { a = { concurrency = 3, global_concurrency = 2 } }
        if not ENFORCES[F.store:kind()] then
          local s = sched { queues = q }
          U.assert_error_naming("unsupported", "queue 'a': global_concurrency needs a store that "
            .. "enforces it atomically (memory, sqlite, postgres or redis); " .. F.store:kind()
            .. " cannot", s.start, s)
          assert.are.equal("stopped", s:state())
          return
        end
        local s1 = sched { queues = q }
        local s2 = sched { queues = q, storage = F.other_handle() }
        local g = H.gate()
        s1:handler("h", function(j) g:pass(j) end)
        s2:handler("h", function(j) g:pass(j) end)
        for i = 1, 6 do job(s1, "a" .. i, "a", i) end
        job(s1, "b1", "b") -- another queue's job never counts, nor runs
        s1:start()
        s2:start()
        wait(function() return g.inside == 2 end, "the first runs did not start")
        more_ticks { s1, s2 }
        assert.are.equal(2, g.inside)
        assert.are.equal(2, F.store:count_jobs { status = "running" })
        g.open = true
        wait(function() return left() == 1 end, "queue a's jobs left", 30)
        assert.are.equal(6, #g.entered)
        assert.are.equal(2, g.max_inside)
      end)

      it("a rate limit holds across two schedulers per window of the clock, or is refused",
        function()
        local q = { a = { concurrency = 10, rate = { limit = 3, period = 60 } } }
        if not ENFORCES[F.store:kind()] then
          local s = sched { queues = q }
          U.assert_error_naming("unsupported", "queue 'a': rate needs a store that enforces it "
            .. "atomically (memory, sqlite, postgres or redis); " .. F.store:kind() .. " cannot",
            s.start, s)
          return
        end
        local s1 = sched { queues = q }
        local s2 = sched { queues = q, storage = F.other_handle() }
        local ran = 0
        s1:handler("h", function() ran = ran + 1 end)
        s2:handler("h", function() ran = ran + 1 end)
        for i = 1, 8 do job(s1, "a" .. i, "a", i) end
        s1:start()
        s2:start()
        -- T0 starts a window of 60 s: 3 claims in it, then none until the next.
        wait(function() return left() == 5 end, "the first window's runs did not end")
        more_ticks { s1, s2 }
        assert.are.equal(5, left())
        assert.are.equal(3, ran)
        F.clock:advance(59)
        more_ticks { s1, s2 }
        assert.are.equal(5, left())
        F.clock:advance(1)
        s1:tick()
        s2:tick()
        wait(function() return left() == 2 end, "the second window's runs did not end")
        more_ticks { s1, s2 }
        assert.are.equal(2, left())
        F.clock:advance(60)
        s1:tick()
        s2:tick()
        wait(function() return left() == 0 end, "the third window's runs did not end")
        assert.are.equal(8, ran)
      end)

      it("per-process concurrency needs no store support", function()
        local s = sched { queues = { a = { concurrency = 1 } } }
        local g = H.gate()
        s:handler("h", function(j) g:pass(j) end)
        job(s, "a1", "a", 2)
        job(s, "a2", "a", 1)
        s:start()
        wait(function() return g.inside == 1 end, "the first run did not start")
        more_ticks { s }
        assert.are.equal(1, g.inside)
        g.open = true
        wait(function() return left() == 0 end, "jobs left")
        assert.are.equal(1, g.max_inside)
      end)
    end)

    describe("the store's claim", function()
      local function put(id, q, ago, prio)
        F.store:create_job { job_id = id, func_name = "h", trigger_type = "date", status = "scheduled",
          next_run_time = T0 - (ago or 1) * S, queue = q, priority = prio }
      end

      local function claim(now, queues, limit)
        return H.ids(F.store:claim_due_jobs { now = now, owner = "n1", queues = queues,
          limit = limit })
      end

      it("takes only the queues named, each up to its limit, by priority within it", function()
        put("a1", "a", 1, 1)
        put("a2", "a", 2, 9)
        put("a3", "a", 3, 5)
        put("b1", "b", 4, 10)
        put("d1", nil, 5)
        assert.are.same({ "a2", "a3", "d1" },
          claim(T0, { { name = "a", limit = 2 }, { name = "default", limit = 3 } }))
        assert.are.same({ "a1" }, claim(T0, { { name = "a", limit = 2 } }))
        assert.are.equal("scheduled", F.store:get_job("b1").status)
        -- The total limit still holds.
        put("a4", "a", 1)
        put("a5", "a", 2)
        assert.are.equal(1, #claim(T0, { { name = "a", limit = 5 } }, 1))
      end)

      it("holds global_limit and rate_limit in the claim, or refuses them", function()
        for i = 1, 6 do put("a" .. i, "a", i) end
        if not ENFORCES[F.store:kind()] then
          U.assert_error_naming("unsupported", "queue 'a': global_concurrency needs a store",
            claim, T0, { { name = "a", limit = 5, global_limit = 2 } })
          U.assert_error_naming("unsupported", "queue 'a': rate needs a store",
            claim, T0, { { name = "a", limit = 5, rate_limit = 2, rate_period = 60 } })
          assert.are.equal(0, F.store:count_jobs { status = "running" })
          return
        end
        assert.are.equal(1, #claim(T0, { { name = "a", limit = 1 } }))
        -- One running: a global limit of 3 leaves 2.
        assert.are.equal(2, #claim(T0, { { name = "a", limit = 5, global_limit = 3 } }))
        assert.are.equal(0, #claim(T0, { { name = "a", limit = 5, global_limit = 3 } }))
        -- 3 left; 2 per minute from T0 (a window start).
        local rate = { { name = "a", limit = 5, rate_limit = 2, rate_period = 60 } }
        assert.are.equal(2, #claim(T0 + 1 * S, rate))
        assert.are.equal(0, #claim(T0 + 59 * S, rate))
        assert.are.equal(1, #claim(T0 + 60 * S, rate))
      end)

      it("refuses queues that are not valid", function()
        U.assert_error_naming("invalid", "queue 'a': its limit must be at least 1", claim, T0,
          { { name = "a", limit = 0 } })
        U.assert_error_naming("invalid", "queue 'a b'", claim, T0, { { name = "a b", limit = 1 } })
        U.assert_error_naming("invalid", "queue 'a' is given twice", claim, T0,
          { { name = "a", limit = 1 }, { name = "a", limit = 1 } })
        U.assert_error_naming("invalid", "queue 'a': a rate limit needs a period", claim, T0,
          { { name = "a", limit = 1, rate_limit = 1 } })
      end)
    end)

    describe("validation", function()
      it("refuses a job's queue that is not a name, naming the field", function()
        local s = sched()
        U.assert_error_naming("invalid", "invalid field 'queue': a queue name holds only letters, "
          .. "digits", job, s, "x", "no spaces")
        U.assert_error_naming("invalid", "invalid field 'queue': a queue name cannot be empty",
          job, s, "x", "")
        U.assert_error_naming("invalid", "invalid field 'queue': a queue name is at most 64 bytes",
          job, s, "x", ("q"):rep(65))
        U.assert_error_naming("invalid", "invalid field 'queue': expected a string", job, s, "x", 5)
        assert.is_nil(F.store:get_job("x"))
        job(s, "y", "ok")
        U.assert_error_naming("invalid", "invalid field 'queue'", s.update_job, s, "y",
          { queue = "not ok" })
        assert.are.equal("ok", F.store:get_job("y").queue)
      end)

      it("refuses bad queues options, naming the queue and the key", function()
        U.assert_error_naming("invalid", "invalid option 'queues': queue 'a': concurrency must be "
          .. "an integer from 1", sched, { queues = { a = 0 } })
        U.assert_error_naming("invalid", "invalid option 'queues': queue 'a': concurrency must be "
          .. "an integer from 1", sched, { queues = { a = 1.5 } })
        U.assert_error_naming("invalid", "invalid option 'queues': queue 'bad name': a queue name "
          .. "holds only", sched, { queues = { ["bad name"] = 1 } })
        U.assert_error_naming("invalid", "invalid option 'queues': queue 'a': unknown key "
          .. "'concurency'; did you mean 'concurrency'?", sched,
          { queues = { a = { concurency = 2 } } })
        U.assert_error_naming("invalid", "invalid option 'queues': queue 'a': global_concurrency "
          .. "must be an integer from 1", sched, { queues = { a = { global_concurrency = 0 } } })
        U.assert_error_naming("invalid", "invalid option 'queues': queue 'a': rate.limit must be "
          .. "an integer from 1", sched, { queues = { a = { rate = { limit = 0, period = 1 } } } })
        U.assert_error_naming("invalid", "invalid option 'queues': queue 'a': rate.period must be "
          .. "a number of seconds > 0", sched,
          { queues = { a = { rate = { limit = 1, period = 0 } } } })
        U.assert_error_naming("invalid", "invalid option 'queues': queue 'a': unknown key "
          .. "'perod'; did you mean 'period'?", sched,
          { queues = { a = { rate = { limit = 1, perod = 1 } } } })
        U.assert_error_naming("invalid", "invalid option 'queues': expected a table of queue "
          .. "names", sched, { queues = 5 })
        U.assert_error_naming("invalid", "invalid option 'queues': no queue given", sched,
          { queues = {} })
      end)
    end)
  end)
end
