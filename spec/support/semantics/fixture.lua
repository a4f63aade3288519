-- The fixture every semantics file shares: before each test a fresh store
-- from the engine contract's factory and a fake clock; after it, every
-- scheduler stopped, the other handles and the store closed and the loop
-- checked for leaks. Store calls may answer later than the tick that made
-- them (networked stores), so checks wait for the effect of a tick.
--
--   local F = require("support.semantics.fixture")(factory, opts, file)
--   -- inside a describe: F.install(); then in tests F.sched{...}, F.store,
--   -- F.clock, ...
--
-- file (optional) is what one file's tests share: file.scheduler, the
-- options its schedulers start from (e.g. a polling_interval, or leases
-- that outlast the fake clock's jumps), which the store's opts.scheduler
-- and each call's options override; file.noop, names of handlers that do
-- nothing, registered on each scheduler.
local chronis = require "chronis"
local H = require "support.engine_helper"
local U = require "support.util"

local _, _, before_each, after_each = U.busted()

return function(factory, opts, file)
  opts = opts or {}
  file = file or {}
  local F = {}

  function F.install()
    before_each(function()
      F.store = factory()
      assert(F.store, "factory() returned no store")
      F.clock = H.fake_clock()
      F.handles = {}
      H.logs = {}
    end)
    after_each(function()
      H.stop_all()
      for _, h in ipairs(F.handles) do h:close() end
      local s = F.store
      F.store = nil
      s:close()
      if opts.teardown then opts.teardown(s) end
      H.assert_quiet()
    end)
  end

  -- A scheduler on the store and the fake clock (the real one with
  -- o.clock == false); o adds or overrides options. It runs the probe jobs
  -- of settle() and the file's noop handlers.
  function F.sched(o)
    local all = { storage = F.store, clock = F.clock.fn }
    for k, v in pairs(file.scheduler or {}) do all[k] = v end
    for k, v in pairs(opts.scheduler or {}) do all[k] = v end
    for k, v in pairs(o or {}) do all[k] = v end
    if all.clock == false then all.clock = nil end -- the real clock
    local s = H.scheduler(all)
    s:handler("probe", function() end)
    for _, h in ipairs(file.noop or {}) do s:handler(h, function() end) end
    return s
  end

  -- Another handle on the same jobs when the store has one (as another
  -- process has), else the store itself.
  function F.other_handle()
    if not opts.reopen then return F.store end
    local h = opts.reopen(F.store)
    F.handles[#F.handles + 1] = h
    return h
  end

  function F.wait(pred, msg, seconds)
    H.wait(pred, seconds or 10, msg)
  end

  -- The job's field, or nil when the job is gone.
  function F.field(id, key)
    local j = F.store:get_job(id)
    return j and j[key]
  end

  -- Waits until one poll has finished: a probe job due now at the lowest
  -- priority starts after every job that is due; once it is gone, a job
  -- that was wrongly due has started too.
  local probes = 0
  function F.settle(s)
    probes = probes + 1
    local id = "probe" .. probes
    H.due_job(s, id, s:now(), "probe", { priority = 0 })
    s:tick()
    F.wait(function() return F.store:get_job(id) == nil end, "the probe job " .. id .. " did not run")
  end

  -- Moves the fake clock to `at` (µs or ISO) and ticks s.
  function F.at(s, at)
    F.clock.now = type(at) == "string" and H.t(at) or at
    s:tick()
  end

  -- The log lines of level `level` about job id (H.scheduler's logger).
  function F.logged(level, id)
    local out = {}
    for _, l in ipairs(H.logs) do
      if l.level == level and l.job_id == id then out[#out + 1] = l.msg end
    end
    return out
  end

  F.fmt = chronis.time.format
  return F
end
