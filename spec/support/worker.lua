-- A worker process for the multi-process specs: one scheduler on a store
-- URL, with handlers that record every run start in a file.
--
--   lua5.4 spec/support/worker.lua URL OUT [key=value ...]
--
-- Options: lease (seconds, default 30), poll (polling interval, 0.1),
-- workers (max_workers, 10), for (seconds to run, 10), scope (the
-- scheduler's filters as a JSON object, e.g.
-- scope='{"metadata.tenant_id":"acme"}'; none by default), queues (the
-- scheduler's queues option as a JSON object, docs/queues.md; none by
-- default). The worker stops earlier once the file OUT.stop exists.
-- Handlers:
--   record  appends "run <job_id> <attempt>" to OUT
--   cpu     records, then computes for kwargs.seconds without ever waiting
--   sleep   records, then waits kwargs.seconds (chronis.sleep)
--   span    waits kwargs.seconds, then appends "span <job_id> <queue>
--           <claimed> <start> <end>" (µs of the wall clock; claimed: when
--           the claim was made, read back from the stored lease)
-- Errors and warnings of the scheduler go to stderr. OUT's first line is
-- "started" once the scheduler runs, its last "done".
local root = arg[0]:match("^(.*)spec/support/worker%.lua$") or "./"
if root == "" then root = "./" end
package.path = root .. "lua/?.lua;" .. root .. "lua/?/init.lua;" .. package.path
package.cpath = (os.getenv("CHRONIS_BUILD") or (root .. "build")) .. "/lua/?.so;" .. package.cpath
local chronis = require "chronis"

local url, out = arg[1], arg[2]
assert(url and out, "usage: worker.lua URL OUT [key=value ...]")
local opt = { lease = 30, poll = 0.1, workers = 10, ["for"] = 10 }
for i = 3, #arg do
  local k, v = arg[i]:match("^([%w_]+)=(.*)$")
  assert(k, "bad option " .. arg[i])
  opt[k] = tonumber(v) or v
end

local f = assert(io.open(out, "a"))
f:setvbuf("line")
local function record(job)
  f:write(("run %s %d\n"):format(job.job_id, job.attempt))
end

local store = chronis.storage.open(url)
local sched = chronis.scheduler{
  storage = store, lease_seconds = opt.lease, polling_interval = opt.poll,
  max_workers = opt.workers, filters = opt.scope and chronis.json.decode(opt.scope),
  queues = opt.queues and chronis.json.decode(opt.queues),
  logger = function(level, msg, fields)
    if level == "error" or level == "warn" then
      io.stderr:write(level, ": ", msg, fields and fields.job_id and (" job_id=" .. fields.job_id) or "",
        "\n")
    end
  end,
}
sched:handler("record", record)
sched:handler("cpu", function(job)
  record(job)
  local t = os.clock()
  while os.clock() - t < (job.kwargs.seconds or 1) do end
end)
sched:handler("sleep", function(job)
  record(job)
  chronis.sleep(job.kwargs.seconds or 1)
end)
sched:handler("span", function(job)
  local start = chronis.time.now()
  -- The job carries no lease; the store's copy has the one its claim
  -- granted: until the claim's time plus lease_seconds (a rate limit's
  -- window is that time's).
  local stored = assert(store:get_job(job.job_id))
  local claimed = chronis.time.parse(stored.lease_until) - math.floor(opt.lease * 1e6)
  chronis.sleep(job.kwargs.seconds or 1)
  f:write(("span %s %s %d %d %d\n"):format(job.job_id, job.queue or "default", claimed, start,
    chronis.time.now()))
end)
sched:start()
f:write("started\n")
local function stop_file()
  local s = io.open(out .. ".stop")
  if s then s:close() end
  return s ~= nil
end
chronis.run_until(stop_file, opt["for"])
sched:stop(5)
store:close()
f:write("done\n")
f:close()
