-- The checker of the fault-injection suite: reads what a chaos run left
-- (spec/support/chaos.lua gathers it: the workload, every worker's run log,
-- the driver's fault log, the store's final jobs) and lists what the
-- guarantees of docs/reliability.md forbid:
--
-- - a lost run: a one-shot job without a completed run; a slot of an
--   interval job that never completed (with if_missed = run_all every slot
--   up to the end counts; with run_once a gap is allowed only after a run
--   that started at or after the missing slots, as that run stood for
--   every slot due by its start: the engine then moves to the first slot
--   after the run's start, docs/engine.md "Catch-up"; or after a run that
--   was still going on when they fell due: one run after it stands for
--   them, docs/engine.md "Overlap");
-- - a repeat the lease rules do not explain (docs/engine.md, "Leases"): a
--   second run of one occurrence (job id and scheduled time) is explained
--   only by an earlier run of it that logged no end, or whose worker was
--   killed, stopped for longer than the lease's safe margin, or lost its
--   store (a server, proxy or file fault, or a store error the worker
--   logged) between its start and its end plus one lease;
-- - a stuck job in the final state: a one-shot still stored, an interval
--   job not `scheduled` or without a next run time, a job missing;
-- - a crash (a worker that exited non-zero without being SIGKILLed by the
--   driver), a hang (a worker that did not stop when asked);
-- - memory growth: the RSS of a long-lived worker growing past a bound.
--
--   local report = require("support.chaos_check").check(data)
--   report.findings (strings), report.stats
local chronis = require "chronis"

local M = {}

M.RSS_BOUND_KB = 24 * 1024

local function parse_time(s)
  if s == "-" then return nil end
  return chronis.time.parse(s)
end

-- The runs of one worker's log: { job, slot (µs), attempt, worker, start,
-- end? }, and its store errors (times).
local function read_log(w)
  local runs, open, errors = {}, {}, {}
  local f = io.open(w.log)
  if not f then return runs, errors end
  for line in f:lines() do
    local kind, job, sched, attempt, _, t = line:match("^(%a+) (%S+) (%S+) (%d+) (%S+) (%d+)$")
    if kind == "start" then
      local r = { job = job, sched = sched, slot = parse_time(sched), attempt = tonumber(attempt),
        worker = w.id, start = tonumber(t) }
      runs[#runs + 1] = r
      open[job .. "@" .. sched] = r
    elseif kind == "end" then
      local r = open[job .. "@" .. sched]
      if r then
        r.finish = tonumber(t)
        open[job .. "@" .. sched] = nil
      end
    else
      local ft = line:match("^fault (%d+) ")
      if ft then errors[#errors + 1] = tonumber(ft) end
    end
  end
  f:close()
  return runs, errors
end

local function fmt_time(us)
  return us and chronis.time.format(us // 1000 * 1000) or "?"
end

function M.check(data)
  local findings, stats = {}, {
    runs = 0, completed = 0, repeats = 0, repeats_explained = 0, repeats_unexplained = 0,
    lost = 0, stuck = 0, crashes = 0, hangs = 0, rss_growth_kb = 0, store_errors_logged = 0,
  }
  local function finding(kind, fmt, ...)
    findings[#findings + 1] = kind .. ": " .. fmt:format(...)
  end
  local lease_us = math.floor(data.lease * 1e6)

  -- Every run, by occurrence.
  local all, errors_of = {}, {}
  for _, w in ipairs(data.workers) do
    local runs, errors = read_log(w)
    errors_of[w.id] = errors
    stats.store_errors_logged = stats.store_errors_logged + #errors
    for _, r in ipairs(runs) do all[#all + 1] = r end
  end
  table.sort(all, function(a, b) return a.start < b.start end)
  stats.runs = #all
  local by_occ, by_job = {}, {}
  for _, r in ipairs(all) do
    if r.finish then stats.completed = stats.completed + 1 end
    local key = r.job .. "@" .. r.sched
    by_occ[key] = by_occ[key] or {}
    table.insert(by_occ[key], r)
    by_job[r.job] = by_job[r.job] or {}
    table.insert(by_job[r.job], r)
  end

  -- Repeats and what explains them.
  -- What explains a repeat, most direct first: the worker's own fault,
  -- a store error it logged, a fault of the store.
  local function fault_during(worker, a, b)
    for _, f in ipairs(data.faults) do
      if f.target == worker and f.explains ~= false and f.b <= b and f.e >= a then return "worker fault" end
    end
    for _, t in ipairs(errors_of[worker] or {}) do
      if t >= a and t <= b then return "store error logged" end
    end
    for _, f in ipairs(data.faults) do
      if f.target == "store" and f.b <= b and f.e >= a then return "store fault" end
    end
  end
  stats.explained_by = {}
  local occs = {}
  for key in pairs(by_occ) do occs[#occs + 1] = key end
  table.sort(occs)
  for _, key in ipairs(occs) do
    local runs = by_occ[key]
    for k = 2, #runs do
      stats.repeats = stats.repeats + 1
      local why
      for j = 1, k - 1 do
        local p = runs[j]
        if not p.finish then
          why = "no end"
        else
          why = fault_during(p.worker, p.start, p.finish + lease_us + 1000000)
        end
        if why then break end
      end
      if why then
        stats.repeats_explained = stats.repeats_explained + 1
        stats.explained_by[why] = (stats.explained_by[why] or 0) + 1
      else
        stats.repeats_unexplained = stats.repeats_unexplained + 1
        local first = runs[1]
        finding("duplicate", "%s ran again at %s on %s (attempt %d); its first run on %s started %s, ended %s, "
          .. "and no fault touched it", key, fmt_time(runs[k].start), runs[k].worker, runs[k].attempt,
          first.worker, fmt_time(first.start), fmt_time(first.finish))
      end
    end
  end

  -- Losses.
  -- Every slot due before the faults ended must have run, and a later
  -- one too (the driver waited for that, up to its limit).
  local must_until = data.healed_us
  local ids = {}
  for id in pairs(data.workload) do ids[#ids + 1] = id end
  table.sort(ids)
  for _, id in ipairs(ids) do
    local job = data.workload[id]
    local runs = by_job[id] or {}
    local done = {}
    for _, r in ipairs(runs) do
      if r.finish then done[r.sched] = true end
    end
    if job.kind == "once" then
      if not next(done) then
        stats.lost = stats.lost + 1
        finding("lost", "one-shot %s due %s never completed a run (%d run(s) started)", id, fmt_time(job.due),
          #runs)
      end
    else
      local step = job.interval * 1000000
      -- Slots that ran, in order, with the first start of each.
      local slots, last_start, last_end = {}, {}, {}
      for _, r in ipairs(runs) do
        if r.slot and r.finish then last_end[r.slot] = math.max(last_end[r.slot] or 0, r.finish) end
        if r.slot and not last_start[r.slot] then slots[#slots + 1] = r.slot end
        -- The latest start of a slot: a repeat after a recovery may be the
        -- run that misfired.
        if r.slot then last_start[r.slot] = math.max(last_start[r.slot] or 0, r.start) end
        if r.slot and (r.slot - job.start) % step ~= 0 then
          finding("lost", "%s ran a slot off its schedule: %s", id, r.sched)
        end
      end
      table.sort(slots)
      local done_slot = {}
      for _, r in ipairs(runs) do
        if r.finish and r.slot then done_slot[r.slot] = true end
      end
      for _, s in ipairs(slots) do
        if not done_slot[s] then
          stats.lost = stats.lost + 1
          finding("lost", "%s slot %s started but never completed", id, fmt_time(s))
        end
      end
      if (slots[#slots] or 0) < must_until then
        stats.lost = stats.lost + 1
        finding("lost", "%s ran no slot due after the faults ended (%s); its last: %s", id, fmt_time(must_until),
          fmt_time(slots[#slots]))
      end
      local expect = job.start
      local i = 1
      while expect <= must_until do
        if slots[i] == expect then
          i = i + 1
          expect = expect + step
        else
          -- A gap: allowed only after a run_once run that started at or
          -- after the missing slot (it ran for it as well), or when the
          -- next slot that ran also fell due while that run went on
          -- (overlap = "queue": the run for the latest such slot stands
          -- for the ones before it).
          local prev = slots[i - 1]
          local coalesced = prev and not job.run_all
            and (last_start[prev] >= expect or (slots[i] ~= nil and slots[i] <= (last_end[prev] or 0)))
          if coalesced and slots[i] and slots[i] > expect then
            expect = slots[i]
          elseif coalesced and not slots[i] then
            -- Nothing after the run that stood for later slots: the next
            -- slot after it must still be later than the end of the window.
            stats.lost = stats.lost + 1
            finding("lost", "%s: no run after the slot %s (which ran for later slots too) although slots "
              .. "up to %s were due", id, fmt_time(prev), fmt_time(must_until))
            break
          else
            stats.lost = stats.lost + 1
            finding("lost", "%s slot %s never ran (if_missed=%s)", id, fmt_time(expect),
              job.run_all and "run_all" or "run_once")
            expect = expect + step
            if slots[i] and slots[i] < expect then i = i + 1 end
          end
        end
      end
    end
  end

  -- The store's final state.
  if data.final_error then
    finding("stuck", "the store's final state could not be read: %s", data.final_error)
  else
    local final = {}
    for _, j in ipairs(data.final_jobs) do final[j.job_id] = j end
    for _, id in ipairs(ids) do
      local job, j = data.workload[id], final[id]
      if job.kind == "once" and j then
        stats.stuck = stats.stuck + 1
        finding("stuck", "one-shot %s is still stored: status %s, next_run_time %s, claimed_by %s, error %s", id,
          tostring(j.status), tostring(j.next_run_time), tostring(j.claimed_by), tostring(j.error_message))
      elseif job.kind == "interval" and not j then
        stats.stuck = stats.stuck + 1
        finding("stuck", "interval job %s is missing from the store", id)
      elseif job.kind == "interval" and (j.status ~= "scheduled" or not j.next_run_time) then
        stats.stuck = stats.stuck + 1
        finding("stuck", "interval job %s ended %s with next_run_time %s (error %s)", id, tostring(j.status),
          tostring(j.next_run_time), tostring(j.error_message))
      end
    end
  end

  -- Crashes, hangs, memory.
  for _, w in ipairs(data.workers) do
    if w.hang then
      stats.hangs = stats.hangs + 1
      finding("hang", "worker %s (pid %s) did not stop within %d s of being asked", w.id, tostring(w.pid),
        data.stop_wait or 0)
    elseif not w.killed and w.rc ~= 0 then
      stats.crashes = stats.crashes + 1
      finding("crash", "worker %s (pid %s) exited with status %s; its stderr ends: %s", w.id, tostring(w.pid),
        tostring(w.rc), (w.stderr or ""):sub(-600))
    end
    local s = w.rss or {}
    if #s >= 12 then
      local n = #s
      local base = {}
      for k = n // 4 + 1, n // 2 do base[#base + 1] = s[k] end
      table.sort(base)
      local top = 0
      for k = n - n // 4 + 1, n do top = math.max(top, s[k]) end
      local growth = top - base[(#base + 1) // 2]
      if growth > stats.rss_growth_kb then stats.rss_growth_kb = growth end
      if growth > M.RSS_BOUND_KB then
        finding("memory", "worker %s grew from %d kB to %d kB RSS (bound %d kB)", w.id, base[(#base + 1) // 2],
          top, M.RSS_BOUND_KB)
      end
    end
  end
  return { findings = findings, stats = stats }
end

return M
