-- B1 burst: N one-shot jobs due now, a no-op handler, one process.
-- Creation is timed apart; the run is timed from the first handler start
-- to the moment every completion has reached the store (stop() returns
-- after flushing them), on the monotonic clock.
-- usage: lua5.4 bench/chronis/b1_burst.lua N STORAGE_URL [MAX_WORKERS] [MAX_QUEUE]
package.path = (arg[0]:match("^(.*/)") or "./") .. "?.lua;" .. package.path
local B = require "common"
local chronis = B.chronis

local N = tonumber(arg[1]) or 100000
local url = arg[2] or "memory:"
local workers = tonumber(arg[3]) or 100
local queue = tonumber(arg[4]) or 1000

local store = chronis.storage.open(url)
local sched = chronis.scheduler{ storage = store, max_workers = workers, max_queue_size = queue,
                                 polling_interval = 1 }
local done, first, last_run = 0, nil, nil
local mono = B.util.mono
sched:handler("noop", function()
  if not first then first = mono() end
  done = done + 1
  if done == N then last_run = mono() end
end)

local now = chronis.time.format(chronis.time.now())
local c0, w0 = B.cpu(), mono()
for i = 1, N do
  sched:create_date_job{ job_id = "job" .. i, func_name = "noop", run_date = now }
end
local create_s, create_cpu = (mono() - w0) / 1e9, B.cpu() - c0

-- Under the harness's profiler (perf record -D -1 --control fifo:...),
-- only the run phase is recorded.
local function perf_ctl(cmd)
  local ctl, ack = os.getenv("BENCH_PERF_CTL"), os.getenv("BENCH_PERF_ACK")
  if not ctl then return end
  local f = assert(io.open(ctl, "w"))
  f:write(cmd, "\n")
  f:close()
  if ack then
    local a = assert(io.open(ack, "r"))
    a:read("l")
    a:close()
  end
end

perf_ctl("enable")
local c1 = B.cpu()
sched:start()
local ok = chronis.run_until(function() return done >= N end, 3600)
sched:stop()
local t_end = mono()
local run_cpu = B.cpu() - c1
perf_ctl("disable")
local left = sched:count_jobs()
local run_s = first and (t_end - first) / 1e9
B.emit{
  impl = "chronis", store = url:match("^(%w+)"), n = N, done = done, left = left, ok = ok,
  create_s = create_s, create_per_s = N / create_s, create_cpu_s = create_cpu,
  run_s = run_s, jobs_per_s = run_s and done / run_s, run_cpu_s = run_cpu,
  last_run_s = last_run and (last_run - first) / 1e9,
  settings = { max_workers = workers, max_queue_size = queue, polling_interval = 1 },
  versions = { chronis = chronis._VERSION, lua = _VERSION },
}
