-- B2 steady: J interval jobs every second, their phases spread evenly over
-- the second (start_date = T0 + i/J s), for D seconds. The handler records
-- start lateness = chronis.time.now() - job.scheduled_time (wall clock,
-- like the schedule itself). Missed = expected slots without a run;
-- doubled = slots that ran more than once; off_grid = runs whose scheduled
-- time is not one of the expected slots. CPU is this process's, over the
-- run phase only.
-- usage: lua5.4 bench/chronis/b2_steady.lua J D STORAGE_URL [LEAD_S] [MAX_WORKERS] [MAX_QUEUE]
package.path = (arg[0]:match("^(.*/)") or "./") .. "?.lua;" .. package.path
local B = require "common"
local chronis = B.chronis

local J = tonumber(arg[1]) or 2000
local D = tonumber(arg[2]) or 30
local url = arg[3] or "memory:"
local lead = tonumber(arg[4]) or 3
local workers = tonumber(arg[5]) or 100
local queue = tonumber(arg[6]) or 1000

local store = chronis.storage.open(url)
local sched = chronis.scheduler{ storage = store, max_workers = workers, max_queue_size = queue,
                                 polling_interval = 1 }
local now, parse, fmt = chronis.time.now, chronis.time.parse, chronis.time.format
-- Slots are T0 + i*step + k seconds; step = 1e6 // J µs.
local step = 1000000 // J
local T0 = (now() // 1000 + math.floor(lead * 1000)) * 1000
local T_end = T0 + D * 1000000
local index = {}
-- The bookkeeping is sized before the run: a table that grows while jobs
-- run rehashes all it holds at each doubling (tens of ms at a million
-- entries), which would show as the scheduler's lateness.
-- seen[i * D + k + 1]: the runs of slot k of job i; lat[1..nlat]: lateness.
local seen, lat, nlat, off_grid, runs = {}, {}, 0, 0, 0
for n = 1, J * D do seen[n], lat[n] = 0, 0 end
sched:handler("tick", function(job)
  local t = now()
  local s = parse(job.scheduled_time)
  runs = runs + 1
  local i = index[job.job_id]
  local k = i and (s - T0 - i * step) / 1000000
  if k and s >= T0 and s < T_end and k == math.floor(k) then
    local slot = i * D + math.tointeger(k) + 1
    local n = seen[slot] + 1
    seen[slot] = n
    if n == 1 then
      nlat = nlat + 1
      lat[nlat] = t - s
    end
  elseif s < T_end then
    off_grid = off_grid + 1
  end
end)

local w0 = B.mono()
-- Created 1,000 a call (sched:create_jobs).
B.create_bulk(sched, 0, J - 1, function(i)
  local id = "tick" .. i
  index[id] = i
  return { job_id = id, trigger_type = "interval", func_name = "tick", seconds = 1,
           start_date = fmt(T0 + i * step) }
end)
local create_s = B.mono() - w0
local late_create = now() > T0

-- The window is timed by a task: when more falls due than the process
-- can run (B2X), a step of the loop may not come back to the main chunk
-- until the backlog is gone, while timers, and so the task, still fire.
local c0, r0 = B.cpu(), runs
local cpu, window_runs
sched:start()
chronis.spawn(function()
  chronis.sleep(math.max(0, (T0 - now()) / 1e6))
  c0, r0 = B.cpu(), runs
  -- Run past the window so the last slots (due just before T_end) complete.
  chronis.sleep(math.max(0, (T_end + 1500000 - now()) / 1e6))
  cpu, window_runs = B.cpu() - c0, runs - r0
  sched:stop()
end)
chronis.run_until(function() return cpu ~= nil end, lead + D + 120)
if not cpu then
  sched:stop()
  cpu, window_runs = B.cpu() - c0, runs - r0
end

local expected, missed, doubled = J * D, 0, 0
for n = 1, J * D do
  if seen[n] == 0 then missed = missed + 1 elseif seen[n] > 1 then doubled = doubled + (seen[n] - 1) end
end
for n = #lat, nlat + 1, -1 do lat[n] = nil end
table.sort(lat)
local ms = function(v) return v and v / 1000 end
-- Lateness histogram: counts[i] = runs with lateness in [edges[i],
-- edges[i+1]) ms, the last bucket open-ended; a run that started early
-- (negative lateness) counts in the first.
local edges = { 0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000 }
local counts, b = {}, 1
for i = 1, #edges do counts[i] = 0 end
for _, v in ipairs(lat) do -- sorted: the bucket only moves up
  while b < #edges and v >= edges[b + 1] * 1000 do b = b + 1 end
  counts[b] = counts[b] + 1
end
B.emit{
  impl = "chronis", store = url:match("^(%w+)"), jobs = J, seconds = D, expected = expected,
  runs = #lat, missed = missed, doubled = doubled, off_grid = off_grid,
  p50_ms = ms(B.pct(lat, 50)), p99_ms = ms(B.pct(lat, 99)), max_ms = ms(lat[#lat]),
  min_ms = ms(lat[1]), hist = { edges_ms = edges, counts = counts }, cpu_s = cpu, cpu_per_1000 = window_runs > 0 and cpu / window_runs * 1000 or nil,
  create_s = create_s, late_create = late_create,
  settings = { max_workers = workers, max_queue_size = queue, polling_interval = 1,
               trigger = "interval seconds=1, start_date spread over 1 s" },
  versions = { chronis = chronis._VERSION, lua = _VERSION },
}
