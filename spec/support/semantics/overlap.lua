-- Engine semantics: overlap (docs/engine.md, "Overlap"), run on every
-- store by engine_contract.lua as (name, factory, opts): max_instances and
-- overlap = "queue" | "skip" for recurring jobs, in one process and across
-- two handles on the store (another process's connections).
local chronis = require "chronis"
local H = require "support.engine_helper"
local U = require "support.util"

local describe, it, _, _, assert = U.busted()

local S, T0 = H.S, H.T0
local fmt = chronis.time.format

return function(name, factory, opts)
  opts = opts or {}
  -- Leases outlast the fake clock's jumps: a held run is never recovered.
  local F = require("support.semantics.fixture")(factory, opts,
    { scheduler = { polling_interval = 0.1, lease_seconds = 3600 } })
  local sched, wait, field, settle = F.sched, F.wait, F.field, F.settle

  describe(name .. " overlap", function()
    F.install()

    -- A gate handler "slow" on each scheduler: runs wait in it until opened.
    local function slow(...)
      local g = H.gate()
      for _, s in ipairs({ ... }) do s:handler("slow", function(job) g:pass(job) end) end
      return g
    end

    describe("max_instances = 1", function()
      -- An interval job every 10 s whose run from 10:00:10 is held until
      -- 10:00:45: the slots 10:00:20, :30 and :40 fall due meanwhile.
      local function slow_run(overlap, if_missed)
        local s = sched()
        local g = slow(s)
        local j = s:every { seconds = 10 }:config { job_id = "x", overlap = overlap, if_missed = if_missed }
          :run("slow")
        assert.are.equal(T0 + 10 * S, H.t(j.next_run_time))
        F.clock.now = T0 + 10 * S
        s:start()
        wait(function() return #g.entered == 1 end, "the run did not start")
        F.clock.now = T0 + 45 * S
        settle(s)
        assert.are.equal(1, #g.entered) -- running: no other run of it
        assert.are.equal("running", field("x", "status"))
        g.open = true
        wait(function() return field("x", "status") == "scheduled" end, "the run did not end")
        return s, g
      end

      it("a slow run does not overlap its next slot; queue runs once right after (default)", function()
        local s, g = slow_run(nil)
        assert.is_nil(field("x", "overlap"))
        -- The slots that fell due make one run, for the latest of them, at
        -- once; then the schedule goes on.
        wait(function() return field("x", "last_scheduled_time") == fmt(T0 + 40 * S) end,
          "the queued run did not run")
        wait(function() return field("x", "status") == "scheduled" end, "the queued run did not end")
        settle(s)
        assert.are.same({ "x", "x" }, g.entered)
        assert.are.equal(fmt(T0 + 50 * S), field("x", "next_run_time"))
      end)

      it("with if_missed = run_all, queue runs each slot that fell due, oldest first", function()
        local s, g = slow_run(nil, "run_all")
        wait(function() return field("x", "last_scheduled_time") == fmt(T0 + 40 * S) end,
          "the slots that fell due did not all run")
        wait(function() return field("x", "status") == "scheduled" end, "the last of them did not end")
        settle(s)
        assert.are.same({ "x", "x", "x", "x" }, g.entered)
        assert.are.equal(fmt(T0 + 50 * S), field("x", "next_run_time"))
      end)

      it("overlap = skip skips the slots that fell due during the run", function()
        local s, g = slow_run("skip")
        assert.are.equal("skip", field("x", "overlap"))
        assert.are.equal(fmt(T0 + 10 * S), field("x", "last_scheduled_time"))
        assert.are.equal(fmt(T0 + 50 * S), field("x", "next_run_time"))
        settle(s)
        assert.are.equal(1, #g.entered)
      end)

      it("runs never overlap with two schedulers on two handles", function()
        local s1 = sched()
        local s2 = sched { storage = F.other_handle() }
        local g = slow(s1, s2)
        s1:every { seconds = 10 }:config { job_id = "x" }:run("slow")
        F.clock.now = T0 + 10 * S
        s1:start()
        s2:start()
        wait(function() return #g.entered == 1 end, "the run did not start")
        for t = 20, 60, 10 do
          F.clock.now = T0 + t * S
          settle(s1)
          settle(s2)
        end
        assert.are.equal(1, g.max_inside)
        assert.are.equal(1, #g.entered)
        g.open = true
        wait(function() return #g.entered == 2 end, "the queued run did not follow")
        wait(function() return field("x", "status") == "scheduled" end, "the queued run did not end")
        assert.are.equal(1, g.max_inside)
        assert.are.equal(fmt(T0 + 70 * S), field("x", "next_run_time"))
      end)
    end)

    describe("max_instances > 1", function()
      it("refuses values out of 1..1000 and on one-shot jobs, naming the field", function()
        local s = sched()
        for _, bad in ipairs({ 0, 1001, 2.5, "2" }) do
          local ok, err = pcall(function()
            s:every { seconds = 10 }:config { max_instances = bad }:run("slow")
          end)
          assert.is_false(ok)
          assert.are.equal("invalid", err.code)
          assert.truthy(err.message:find("'max_instances'", 1, true), err.message)
        end
        local ok, err = pcall(s.create_interval_job, s, { func_name = "slow", seconds = 10, overlap = "later" })
        assert.is_false(ok)
        assert.truthy(err.message:find("invalid field 'overlap': expected queue or skip", 1, true), err.message)
        ok, err = pcall(function() s:once(T0):config { max_instances = 2 }:run("slow") end)
        assert.is_false(ok)
        assert.truthy(err.message:find("'max_instances': applies to interval and cron jobs", 1, true), err.message)
        s:every { seconds = 10 }:config { job_id = "ok" }:run("slow")
        ok, err = pcall(s.update_job, s, "ok", { max_instances = 5000 })
        assert.is_false(ok)
        assert.truthy(err.message:find("'max_instances'", 1, true), err.message)
        assert.are.equal(3, s:update_job("ok", { max_instances = 3 }).max_instances)
      end)

      -- Slots 10:00:10, :20 and :30 of a job every 10 s with max_instances =
      -- 2 on schedulers s1 (and s2), their runs held in gate g.
      local function three_slots(s1, s2, g, overlap)
        -- Metadata keys on both sides of instance_of, which the instance adds.
        s1:every { seconds = 10 }:config { job_id = "x", max_instances = 2, overlap = overlap,
          metadata = { app = "billing", zone = { eu = true } } }:run("slow", { n = 1 })
        s1:start()
        if s2 then s2:start() end
        for t = 10, 20, 10 do
          F.clock.now = T0 + t * S
          s1:tick()
          wait(function() return #g.entered == t // 10 end, "the instance of slot " .. t .. " did not run")
        end
        F.clock.now = T0 + 30 * S
        settle(s1)
        if s2 then settle(s2) end
        chronis.run_until(0.3)
        assert.are.equal(2, #g.entered)
        assert.are.equal(2, g.max_inside)
      end

      it("runs two at once and never three; queue runs the waiting slot when one ends", function()
        local s = sched()
        local g = slow(s)
        local seen = {}
        s:handler("slow", function(job)
          seen[#seen + 1] = job
          g:pass(job)
        end)
        three_slots(s, nil, g)
        -- Each run is an instance job of its own, with the job's arguments.
        assert.are.same({ "x@" .. fmt(T0 + 10 * S), "x@" .. fmt(T0 + 20 * S) }, g.entered)
        assert.are.same({ app = "billing", instance_of = "x", zone = { eu = true } }, seen[1].metadata)
        assert.are.same({ app = "billing", instance_of = "x", zone = { eu = true } },
          F.store:get_job("x@" .. fmt(T0 + 10 * S)).metadata)
        assert.are.same({ n = 1 }, seen[1].kwargs)
        assert.are.equal("running", field("x@" .. fmt(T0 + 10 * S), "status"))
        -- The job waits for a free instance with its slot.
        assert.are.equal(fmt(T0 + 30 * S), field("x", "queued_slot"))
        g.open = true
        wait(function() return F.store:get_job("x@" .. fmt(T0 + 10 * S)) == nil end, "the instance did not end")
        F.clock.now = T0 + 31 * S
        s:tick()
        wait(function() return #g.entered == 3 end, "the waiting slot did not run")
        assert.are.equal("x@" .. fmt(T0 + 30 * S), g.entered[3])
        wait(function() return field("x", "next_run_time") == fmt(T0 + 40 * S) end, "the job did not move on")
        assert.is_nil(field("x", "queued_slot"))
        assert.are.equal(2, g.max_inside)
      end)

      it("overlap = skip skips a slot while max_instances runs go on", function()
        local s = sched()
        local g = slow(s)
        three_slots(s, nil, g, "skip")
        wait(function() return field("x", "next_run_time") == fmt(T0 + 40 * S) end, "the slot was not skipped")
        assert.is_nil(F.store:get_job("x@" .. fmt(T0 + 30 * S)))
        g.open = true
        wait(function() return #F.store:query_jobs({ ["metadata.instance_of"] = "x" }) == 0 end,
          "the instances did not end")
        F.clock.now = T0 + 40 * S
        s:tick()
        wait(function() return #g.entered == 3 end, "the next slot did not run")
        assert.are.equal("x@" .. fmt(T0 + 40 * S), g.entered[3])
      end)

      it("holds across two schedulers on two handles", function()
        local s1 = sched()
        local s2 = sched { storage = F.other_handle() }
        local g = slow(s1, s2)
        three_slots(s1, s2, g)
        for t = 40, 60, 10 do
          F.clock.now = T0 + t * S
          settle(s1)
          settle(s2)
        end
        assert.are.equal(2, #g.entered)
        assert.are.equal(2, g.max_inside)
        g.open = true
        wait(function() return #F.store:query_jobs({ ["metadata.instance_of"] = "x" }) == 0 end,
          "the instances did not end")
        F.clock.now = T0 + 61 * S
        s1:tick()
        s2:tick()
        wait(function() return #g.entered >= 3 end, "no waiting slot ran once instances ended")
        assert.are.equal("x@" .. fmt(T0 + 30 * S), g.entered[3])
        wait(function() return field("x", "queued_slot") == nil end, "the job did not move on")
        assert.are.equal(2, g.max_inside)
      end)
    end)
  end)
end
