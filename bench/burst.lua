-- B1 burst: N one-shot jobs due now, no-op handler, one process.
-- usage: lua5.4 bench/burst.lua [N] [storage-url] [max_workers] [max_queue_size]
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/lua/?.so;" .. package.cpath
local chronis = require "chronis"

local N = tonumber(arg[1]) or 100000
local url = arg[2] or "memory:"
local workers = tonumber(arg[3]) or 100
local queue = tonumber(arg[4]) or 1000
local store = chronis.storage.open(url)
local sched = chronis.scheduler{ storage = store, max_workers = workers, max_queue_size = queue,
                                 polling_interval = 1 }
local done, first, last = 0, nil, nil
sched:handler("noop", function()
  done = done + 1
  if not first then first = chronis.time.now() end
  last = chronis.time.now()
end)

local now = chronis.time.format(chronis.time.now())
local t0 = os.clock()
local w0 = chronis.time.now()
for i = 1, N do
  sched:create_date_job{ job_id = "job" .. i, func_name = "noop", run_date = now }
end
local create_s = (chronis.time.now() - w0) / 1e6
sched:start()
chronis.run_until(function() return done >= N end, 600)
local run_s = (last - first) / 1e6
local f = io.open("/proc/self/status")
local rss = f:read("a"):match("VmHWM:%s*(%d+)")
f:close()
print(("burst %s: %d jobs, create %.2fs (%.0f/s), run %.3fs = %.0f jobs/s, cpu %.2fs, peak RSS %d MiB, left %d"):format(
  url, done, create_s, N / create_s, run_s, done / run_s, os.clock() - t0, tonumber(rss) // 1024,
  sched:count_jobs()))
sched:stop()
