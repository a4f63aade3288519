-- A child process for the multi-process PostgreSQL specs (and the 4-process
-- burst measurement):
--
--   lua5.4 spec/support/postgres_worker.lua open URL OUT
--     opens the store (which checks or migrates the schema) and reads a job;
--     writes "ok" or "error <code>: <message>" to OUT.
--
--   lua5.4 spec/support/postgres_worker.lua run URL OUT [workers] [queue]
--     runs a scheduler whose handler "record" appends each job id to OUT,
--     until the store holds no job; then writes "done <runs> <first µs>
--     <last µs>" as the last line.
local root = arg[0]:match("^(.*)spec/support/postgres_worker%.lua$") or "./"
if root == "" then root = "./" end
package.path = root .. "lua/?.lua;" .. root .. "lua/?/init.lua;" .. package.path
package.cpath = root .. "build/lua/?.so;" .. package.cpath
local chronis = require "chronis"

local mode, url, out = arg[1], arg[2], arg[3]
local f = assert(io.open(out, "w"))
f:setvbuf("line")

if mode == "open" then
  local ok, err = pcall(function()
    local s = chronis.storage.open(url)
    s:get_job("nothing")
    s:close()
  end)
  f:write(ok and "ok\n" or ("error %s\n"):format(tostring(err)))
  f:close()
  os.exit(ok and 0 or 1)
end

assert(mode == "run", "usage: postgres_worker.lua open|run URL OUT [workers] [queue]")
local workers = tonumber(arg[4]) or 50
local queue = tonumber(arg[5]) or 500
local store = chronis.storage.open(url)
local runs, first, last = 0, nil, nil
local sched = chronis.scheduler{
  storage = store, max_workers = workers, max_queue_size = queue, polling_interval = 0.2,
  lease_seconds = 30,
  logger = function(level, msg)
    if level == "error" or level == "warn" then io.stderr:write(level, ": ", msg, "\n") end
  end,
}
sched:handler("record", function(job)
  runs = runs + 1
  local now = chronis.time.now()
  first = first or now
  last = now
  f:write(job.job_id, "\n")
end)
sched:start()
local empty_since
local ok = chronis.run_until(function()
  -- Done when the table stays empty: every job ran and was deleted (the
  -- jobs are created before the workers start).
  if store:count_jobs() == 0 then
    empty_since = empty_since or chronis.time.now()
    if chronis.time.now() - empty_since > 500000 then return true end
  else
    empty_since = nil
  end
  chronis.sleep(0.05)
  return false
end, 300)
sched:stop()
f:write(("done %d %d %d\n"):format(runs, first or 0, last or 0))
f:close()
store:close()
os.exit(ok and 0 or 1)
