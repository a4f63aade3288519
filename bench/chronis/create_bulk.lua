-- Bulk creation alone: N one-shot jobs due in the far future, created by
-- sched:create_jobs 1,000 a call, the lists built inside the timed part
-- (as B1's creation). For profiling creation apart from any run
-- (bench/profile.sh); B1 reports the same create/s beside its run.
-- usage: lua5.4 bench/chronis/create_bulk.lua N STORAGE_URL
package.path = (arg[0]:match("^(.*/)") or "./") .. "?.lua;" .. package.path
local B = require "common"
local chronis = B.chronis

local N = tonumber(arg[1]) or 100000
local url = arg[2] or "memory:"
local sched = chronis.scheduler{ storage = chronis.storage.open(url) }
sched:handler("noop", function() end)
local at = chronis.time.format(chronis.time.parse("2100-01-01T00:00:00Z"))
local w0, c0 = B.mono(), B.cpu()
B.create_bulk(sched, 1, N, function(i)
  return { job_id = "job" .. i, trigger_type = "date", func_name = "noop", run_date = at }
end)
local s = B.mono() - w0
B.emit{ impl = "chronis", store = url:match("^(%w+)"), n = N, create_s = s, create_per_s = N / s,
        create_cpu_s = B.cpu() - c0 }
