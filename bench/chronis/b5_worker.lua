-- B5 worker: one of several processes sharing a store. Its handler writes
-- one record per run (the job id) to OUT_FILE; the harness counts
-- duplicates and lost runs across every worker's file. The process leaves
-- once the store has no job left and it holds none, or after TIMEOUT_S.
-- Figures on the monotonic clock: its first run's start and last run's end.
-- usage: lua5.4 bench/chronis/b5_worker.lua STORAGE_URL OUT_FILE [TIMEOUT_S] [MAX_WORKERS] [MAX_QUEUE]
package.path = (arg[0]:match("^(.*/)") or "./") .. "?.lua;" .. package.path
local B = require "common"
local chronis = B.chronis

local url, out_path = arg[1], arg[2]
local timeout = tonumber(arg[3]) or 600
local workers = tonumber(arg[4]) or 100
local queue = tonumber(arg[5]) or 1000
local out = assert(io.open(out_path, "w"))
local store = chronis.storage.open(url)
local sched = chronis.scheduler{ storage = store, max_workers = workers, max_queue_size = queue,
                                 polling_interval = 1 }
local mono = B.util.mono
local runs, first, last = 0, nil, nil
sched:handler("record", function(job)
  local t = mono()
  if not first then first = t end
  runs = runs + 1
  out:write(job.job_id, "\n")
  last = mono()
end)

local c0 = B.cpu()
sched:start()
local t_start = mono()
local deadline = t_start + timeout * 1e9
while mono() < deadline do
  chronis.run_until(0.1)
  local q = sched:get_queue_status()
  if store:count_jobs() == 0 and q.pending == 0 and q.in_flight == 0 then break end
end
sched:stop()
out:close()
B.emit{ impl = "chronis", store = url:match("^(%w+)"), runs = runs, first_ns = first, last_ns = last,
        cpu_s = B.cpu() - c0, node_id = sched:node_id(), timed_out = mono() >= deadline,
        settings = { max_workers = workers, max_queue_size = queue, polling_interval = 1 } }
