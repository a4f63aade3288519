-- Shared helpers of the scheduler specs (engine_spec, scheduler_api_spec):
-- a fake clock, schedulers that are stopped after every test, gates that
-- hold handlers in flight while a test looks at the queue, and the leak
-- check the style guide asks for after each async spec.
local chronis = require "chronis"
local core = require "chronis.core"

local H = {}

H.S = 1000000 -- one second in µs
H.T0 = chronis.time.parse("2025-01-15T10:00:00Z")

function H.t(iso)
  return chronis.time.parse(iso)
end

-- A clock the test moves by hand: clock.now (integer µs), clock.fn for the
-- scheduler option.
function H.fake_clock(t)
  local c = { now = t or H.T0 }
  c.fn = function() return c.now end
  function c:advance(seconds) self.now = self.now + math.floor(seconds * H.S) end
  return c
end

local made = {}
H.logs = {}

-- chronis.scheduler with a quiet logger (entries kept in H.logs) unless the
-- test gives its own; remembered so H.cleanup() stops it.
function H.scheduler(opts)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  if o.logger == nil then
    o.logger = function(level, msg, fields)
      H.logs[#H.logs + 1] = { level = level, msg = msg, job_id = fields and fields.job_id }
    end
  end
  local s = chronis.scheduler(o)
  made[#made + 1] = s
  return s
end

-- Drives the loop until pred() holds; fails the test with msg otherwise.
function H.wait(pred, seconds, msg)
  local ok = chronis.run_until(pred, seconds or 5)
  assert(ok, msg or "condition not reached in time")
end

-- A gate keeps the handlers that pass through it in flight until opened.
function H.gate()
  local g = { open = false, inside = 0, max_inside = 0, entered = {} }
  function g:pass(job)
    self.inside = self.inside + 1
    if self.inside > self.max_inside then self.max_inside = self.inside end
    self.entered[#self.entered + 1] = job and job.job_id
    while not self.open do chronis.sleep(0.005) end
    self.inside = self.inside - 1
  end
  return g
end

-- Gives s a handler "h" that holds every run in a gate, creates n date jobs
-- j01, j02, ... due one second apart before T0, starts s and waits until
-- `started` runs are held. Returns the gate (g.open = true lets them end).
function H.hold_runs(s, n, started)
  local g = H.gate()
  s:handler("h", function(job) g:pass(job) end)
  for i = 1, n do H.due_job(s, ("j%02d"):format(i), H.T0 - i * H.S) end
  s:start()
  H.wait(function() return #g.entered == started end, 10, "the runs did not start")
  return g
end

-- A store written in Lua (chronis.storage.lua) over a memory store, whose
-- methods first wait delays[method] seconds: a store call that really
-- waits, as a networked store's does.
local METHODS = { "create_job", "get_job", "get_jobs_batch", "update_job",
  "compare_and_swap_job", "delete_job", "query_jobs", "count_jobs", "claim_due_jobs",
  "complete_jobs", "recover_expired_leases", "extend_leases", "next_due_time" }

function H.slow_store(delays)
  local inner = chronis.storage.memory()
  local adapter = { is_local = true }
  for _, m in ipairs(METHODS) do
    adapter[m] = function(_, ...)
      if delays[m] then chronis.sleep(delays[m]) end
      return inner[m](inner, ...)
    end
  end
  return chronis.storage.lua(adapter), inner
end

-- A date job of scheduler s due at `at` (µs) running handler `func`
-- ("h" by default); fields are added to the job.
function H.due_job(s, id, at, func, fields)
  local f = { job_id = id, func_name = func or "h", run_date = chronis.time.format(at) }
  for k, v in pairs(fields or {}) do f[k] = v end
  return s:create_date_job(f)
end

function H.ids(jobs)
  local out = {}
  for i, j in ipairs(jobs) do out[i] = j.job_id end
  table.sort(out)
  return out
end

local function leaks()
  return core.live_tasks(), core.active_handles()
end

-- Stops and closes every scheduler made by H.scheduler (not their stores).
function H.stop_all()
  for _, s in ipairs(made) do
    pcall(function()
      if s:state() == "running" then s:stop(0) end
    end)
    pcall(s.close, s)
  end
  made = {}
  -- Spawned tasks go back to the pool when their task object is collected.
  collectgarbage()
  collectgarbage()
end

local function quiet()
  -- Inside run_until its own timer is one active handle.
  return core.live_tasks() == 0 and core.active_handles() <= 1
end

-- Stops the schedulers, then drives the loop until nothing but run_until's
-- own timer is active (up to 12 s): timers a faulty engine left behind
-- fire, so one test's leak is not blamed on the next.
function H.drain()
  H.stop_all()
  chronis.run_until(quiet, 12)
end

-- Stops and closes every scheduler made by H.scheduler, then checks that
-- no task and no active libuv handle is left. A leak fails the test, after
-- the loop has been drained so the next test starts clean.
function H.cleanup()
  H.stop_all()
  H.logs = {}
  H.assert_quiet()
end

-- Fails when a task is alive or a libuv handle is active after 0.2 s of
-- loop; before failing it drains the loop (up to 12 s), so that the next
-- test starts clean.
function H.assert_quiet()
  chronis.run_until(quiet, 0.2)
  local tasks, handles = leaks()
  if tasks ~= 0 or handles ~= 0 then chronis.run_until(quiet, 12) end
  assert(tasks == 0 and handles == 0, ("leak after the test: %d live task(s), %d active "
    .. "handle(s) (stray timer of a killed handler?)"):format(tasks, handles))
end

return H
