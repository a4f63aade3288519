-- B3 scale: N jobs scheduled in the far future, then the cost of polling.
-- Figures: resident memory per job (VmRSS after creation and a full Lua
-- GC, minus before, over N; meaningful for the memory store, whose jobs
-- live in this process), and the time of one store call as the engine's
-- poll makes it, on the monotonic clock, P times each:
--   claim_due_jobs with nothing due, recover_expired_leases with nothing
--   expired, next_due_time, and claim_due_jobs with 100 jobs due (100 date
--   jobs created due 1 s ago before each timed claim, deleted after it).
-- Then the cost of one engine poll with nothing due (tick_empty, below).
-- usage: lua5.4 bench/chronis/b3_scale.lua N STORAGE_URL [POLLS] [ROUNDS_100] [TASKS]
package.path = (arg[0]:match("^(.*/)") or "./") .. "?.lua;" .. package.path
local B = require "common"
local chronis = B.chronis

local N = tonumber(arg[1]) or 1000000
local url = arg[2] or "memory:"
local P = tonumber(arg[3]) or 200
local R = tonumber(arg[4]) or 20
local tasks = tonumber(arg[5]) or (url:match("^memory") and 1 or 32)

local store = chronis.storage.open(url)
local sched = chronis.scheduler{ storage = store }
local mono = B.util.mono
local base = chronis.time.parse("2100-01-01T00:00:00Z")
local fmt = chronis.time.format

collectgarbage("collect"); collectgarbage("collect")
local rss0 = B.rss()
local lua0 = collectgarbage("count")

local function create_range(lo, hi)
  -- One job a minute from 2100 on: far future, distinct times; created
  -- 1,000 a call (sched:create_jobs).
  for b = lo, hi, 1000 do
    local list = {}
    for i = b, math.min(hi, b + 999) do
      list[#list + 1] = { job_id = "far" .. i, trigger_type = "date", func_name = "noop",
                          run_date = fmt(base + i * 60000000) }
    end
    sched:create_jobs(list)
  end
end
-- A persistent store that already holds the N jobs (a later run of the
-- same scenario) is measured as it is.
local reused = not url:match("^memory") and store:count_jobs() >= N
local w0 = mono()
if reused then
  -- nothing to create
elseif tasks <= 1 then
  create_range(1, N)
else
  local list, per = {}, (N + tasks - 1) // tasks
  for t = 0, tasks - 1 do
    local lo, hi = t * per + 1, math.min(N, (t + 1) * per)
    if lo <= hi then list[#list + 1] = chronis.spawn(create_range, lo, hi) end
  end
  for _, t in ipairs(list) do t:join() end
end
local create_s = not reused and (mono() - w0) / 1e9 or nil
collectgarbage("collect"); collectgarbage("collect")
local rss1, hwm = B.rss()
local lua1 = collectgarbage("count")
local count = store:count_jobs()

local function timeit(n, f)
  local t = {}
  for i = 1, n do
    local a = mono()
    f(i)
    t[i] = (mono() - a) / 1000 -- µs
  end
  table.sort(t)
  return { median_us = B.pct(t, 50), p90_us = B.pct(t, 90), min_us = t[1], max_us = t[#t], n = n }
end

local owner = "bench-b3"
local claimed_empty = 0
local empty = timeit(P, function()
  claimed_empty = claimed_empty + #store:claim_due_jobs{ now = chronis.time.now(), limit = 100,
                                                         owner = owner, lease_seconds = 30 }
end)
local recover = timeit(P, function() store:recover_expired_leases(chronis.time.now()) end)
local next_due = timeit(P, function() store:next_due_time() end)

-- One engine poll with nothing due (tick_empty): the engine's poll
-- (sched:tick(), what its poll timer calls) of a started scheduler over
-- the N far-future jobs, P times, 20 ms apart. Its own timer stays out of
-- the way (polling_interval = 3600 s), and so does lease recovery, which
-- keeps its own cadence (min(polling_interval, lease_seconds / 2), here
-- 15 s) and is timed apart above (recover_empty). A poll's cost: the time
-- of the call, plus the time each store request it made took from
-- submission to answer (the counts chr_store_submit keeps for
-- chronis.metrics, read before and after, once the answers are in). On
-- stores whose hints cover every write (Redis, PostgreSQL) a poll with
-- nothing due makes no request; elsewhere it claims and then reads
-- next_due_time. `requests` gives the requests per poll by operation.
local function op_totals()
  local text, t = require("chronis.metrics").render({ schedulers = {} }), {}
  for op, kind, v in text:gmatch('chronis_store_operation_duration_seconds_(%a+)(%b{}) (%S+)') do
    local name = kind:match('op="([^"]+)"')
    if name and (op == "sum" or op == "count") then
      t[name] = t[name] or { sum = 0, count = 0 }
      t[name][op] = t[name][op] + tonumber(v)
    end
  end
  return t
end
local poller = chronis.scheduler{ storage = store, polling_interval = 3600, lease_seconds = 30 }
poller:start()
chronis.sleep(0.5) -- its first claim and next_due_time are not part of it
local ticks, requests = {}, {}
for i = 1, P do
  local before = op_totals()
  local a = mono()
  poller:tick()
  local call_us = (mono() - a) / 1000
  chronis.sleep(0.02) -- the answers of what it sent come in
  local after, store_us = op_totals(), 0
  for name, x in pairs(after) do
    local y = before[name] or { sum = 0, count = 0 }
    store_us = store_us + (x.sum - y.sum) * 1e6
    if x.count > y.count then requests[name] = (requests[name] or 0) + (x.count - y.count) / P end
  end
  ticks[i] = call_us + store_us
end
poller:stop()
table.sort(ticks)
local tick_empty = { median_us = B.pct(ticks, 50), p90_us = B.pct(ticks, 90), min_us = ticks[1],
                     max_us = ticks[#ticks], n = P, requests = requests }

local short = 0
local past = fmt(chronis.time.now() - 1000000)
local times = {}
for r = 1, R do
  for i = 1, 100 do
    sched:create_date_job{ job_id = ("due%d_%d"):format(r, i), func_name = "noop", run_date = past }
  end
  local a = mono()
  local got = store:claim_due_jobs{ now = chronis.time.now(), limit = 100, owner = owner, lease_seconds = 30 }
  times[r] = (mono() - a) / 1000
  if #got ~= 100 then short = short + 1 end
  for _, j in ipairs(got) do store:delete_job(j.job_id) end
end
table.sort(times)
local due = { median_us = B.pct(times, 50), p90_us = B.pct(times, 90), min_us = times[1], max_us = times[#times], n = R }

B.emit{
  impl = "chronis", store = url:match("^(%w+)"), n = N, count = count,
  create_s = create_s, create_per_s = create_s and N / create_s, create_tasks = tasks, reused = reused,
  rss_before_kb = rss0, rss_after_kb = rss1, peak_kb = hwm,
  bytes_per_job = not reused and (rss1 - rss0) * 1024 / N or nil,
  lua_heap_before_kb = lua0, lua_heap_after_kb = lua1,
  poll_empty = empty, recover_empty = recover, next_due = next_due, claim_100 = due,
  tick_empty = tick_empty,
  claimed_when_empty = claimed_empty, short_claims = short,
  versions = { chronis = chronis._VERSION, lua = _VERSION },
}
