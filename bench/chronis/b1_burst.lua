-- B1 burst: N one-shot jobs due now, a no-op handler, one process.
-- Creation (sched:create_jobs, 1,000 jobs a call) is timed apart; the run
-- is timed from the first handler start to the moment every completion
-- has reached the store (stop() returns after flushing them), on the
-- monotonic clock.
-- With "http" as its fifth argument, the process also serves the HTTP API
-- (chronis.http_server) and another process polls it every 100 ms
-- (http_poller.lua), the load of an open dashboard: what serving costs.
-- usage: lua5.4 bench/chronis/b1_burst.lua N STORAGE_URL [MAX_WORKERS] [MAX_QUEUE] [http]
package.path = (arg[0]:match("^(.*/)") or "./") .. "?.lua;" .. package.path
local B = require "common"
local chronis = B.chronis

local N = tonumber(arg[1]) or 100000
local url = arg[2] or "memory:"
local workers = tonumber(arg[3]) or 100
local queue = tonumber(arg[4]) or 1000
local with_http = arg[5] == "http"

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
-- Bulk creation, 1,000 jobs a call, as the peers do (BullMQ addBulk,
-- graphile-worker addJobs); building the lists is timed too.
B.create_bulk(sched, 1, N, function(i)
  return { job_id = "job" .. i, trigger_type = "date", func_name = "noop", run_date = now }
end)
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

local poller, polls_file
if with_http then
  local srv = chronis.http_server{ listen = "127.0.0.1:0", schedulers = { sched } }
  polls_file = os.tmpname()
  local dir = arg[0]:match("^(.*/)") or "./"
  poller = io.popen(("exec %s %shttp_poller.lua %s 0.1 %s & echo $!"):format(
    os.getenv("LUA") or "lua5.4", dir, srv.url, polls_file))
  poller = tonumber(poller:read("l"))
  -- The poller is answering before the run starts.
  chronis.run_until(function()
    local f = io.open(polls_file)
    local got = f and f:read("l")
    if f then f:close() end
    return got ~= nil
  end, 30)
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
local polls
if poller then
  os.execute("kill " .. poller)
  local f = io.open(polls_file)
  polls = f and tonumber(f:read("l"))
  if f then f:close() end
  os.remove(polls_file)
end
local run_s = first and (t_end - first) / 1e9
B.emit{
  impl = "chronis", store = url:match("^(%w+)"), n = N, done = done, left = left, ok = ok,
  create_s = create_s, create_per_s = N / create_s, create_cpu_s = create_cpu,
  run_s = run_s, jobs_per_s = run_s and done / run_s, run_cpu_s = run_cpu,
  last_run_s = last_run and (last_run - first) / 1e9,
  settings = { max_workers = workers, max_queue_size = queue, polling_interval = 1,
               http = with_http or nil },
  http_polls = polls,
  versions = { chronis = chronis._VERSION, lua = _VERSION },
}
