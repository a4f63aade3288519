-- B5 seed: creates N one-shot jobs due at DUE_US (µs since the epoch, set by
-- the harness a few seconds ahead so every worker process is polling by
-- then), with TASKS creations in flight at once.
-- usage: lua5.4 bench/chronis/b5_seed.lua N STORAGE_URL DUE_US [TASKS]
package.path = (arg[0]:match("^(.*/)") or "./") .. "?.lua;" .. package.path
local B = require "common"
local chronis = B.chronis

local N = tonumber(arg[1])
local url = arg[2]
local due = math.tointeger(tonumber(arg[3]))
local tasks = tonumber(arg[4]) or 32
local store = chronis.storage.open(url)
local sched = chronis.scheduler{ storage = store }
local run_date = chronis.time.format(due)

local w0 = B.mono()
local list, per = {}, (N + tasks - 1) // tasks
for t = 0, tasks - 1 do
  local lo, hi = t * per + 1, math.min(N, (t + 1) * per)
  if lo <= hi then
    list[#list + 1] = chronis.spawn(function()
      for i = lo, hi do sched:create_date_job{ job_id = "b5_" .. i, func_name = "record", run_date = run_date } end
    end)
  end
end
for _, t in ipairs(list) do t:join() end
B.emit{ impl = "chronis", store = url:match("^(%w+)"), n = N, create_s = B.mono() - w0,
        count = store:count_jobs(), late = chronis.time.now() >= due }
