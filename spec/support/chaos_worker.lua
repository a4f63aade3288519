-- A worker process of the fault-injection suite (spec/support/chaos.lua):
-- one scheduler on a store URL whose handler logs the start and the end of
-- every run, and which logs every error or warning its scheduler reports.
--
--   lua5.4 spec/support/chaos_worker.lua URL LOG [key=value ...]
--
-- Options: lease (seconds, 3), poll (polling interval, 0.2), workers
-- (max_workers, 8), parent (a pid: the worker stops once it is gone). The
-- worker stops (sched:stop, grace 5 s) once LOG.stop exists, and exits 0.
--
-- LOG, one line per event, times in µs since the epoch:
--   pid PID
--   start JOB_ID SCHEDULED ATTEMPT PID TIME
--   end JOB_ID SCHEDULED ATTEMPT PID TIME
--   fault TIME LEVEL MESSAGE
--   exit TIME
-- The handler "run" waits kwargs.ms milliseconds between its start and
-- its end lines, so that faults find runs in flight.
local root = arg[0]:match("^(.*)spec/support/chaos_worker%.lua$") or "./"
if root == "" then root = "./" end
package.path = root .. "lua/?.lua;" .. root .. "lua/?/init.lua;" .. package.path
package.cpath = (os.getenv("CHRONIS_BUILD") or (root .. "build")) .. "/lua/?.so;" .. package.cpath
local chronis = require "chronis"

local url, out = arg[1], arg[2]
assert(url and out, "usage: chaos_worker.lua URL LOG [key=value ...]")
local opt = { lease = 3, poll = 0.2, workers = 8 }
for i = 3, #arg do
  local k, v = arg[i]:match("^([%w_]+)=(.*)$")
  assert(k, "bad option " .. arg[i])
  opt[k] = tonumber(v) or v
end

local f = assert(io.open(out, "a"))
f:setvbuf("line")
-- Lua's own pid is not exposed: the shell that starts us passes it.
local pid = tostring(opt.pid or "?")
f:write("pid ", pid, "\n")
local now = chronis.time.now

local function run(job)
  local sched_at = job.scheduled_time or "-"
  f:write(("start %s %s %d %s %d\n"):format(job.job_id, sched_at, job.attempt, pid, now()))
  chronis.sleep((job.kwargs.ms or 0) / 1000)
  f:write(("end %s %s %d %s %d\n"):format(job.job_id, sched_at, job.attempt, pid, now()))
end

-- A store that cannot be opened now (a server down, a file read-only) is
-- tried again, as a supervisor would restart the process.
local store
while true do
  local ok, s = pcall(chronis.storage.open, url)
  if ok then
    store = s
    break
  end
  f:write(("fault %d error opening the store failed: %s\n"):format(now(), tostring(s):gsub("\n", " ")))
  if io.open(out .. ".stop") then os.exit(0) end
  chronis.run_until(0.5)
end
local sched = chronis.scheduler{
  storage = store, lease_seconds = opt.lease, polling_interval = opt.poll,
  max_workers = opt.workers, shutdown_grace = 5,
  logger = function(level, msg, fields)
    if level == "error" or level == "warn" then
      local line = (msg .. (fields and fields.job_id and (" job_id=" .. fields.job_id) or "")):gsub("\n", " ")
      f:write(("fault %d %s %s\n"):format(now(), level, line))
    end
  end,
}
sched:handler("run", run)
sched:start()

local function exists(path)
  local h = io.open(path)
  if h then h:close() end
  return h ~= nil
end
local parent = opt.parent and ("/proc/" .. math.tointeger(opt.parent))
local function should_stop()
  return exists(out .. ".stop") or (parent ~= nil and not exists(parent))
end
while not should_stop() do chronis.run_until(should_stop, 3600) end
sched:stop(5)
store:close()
f:write(("exit %d\n"):format(now()))
f:close()
