-- B6 I/O-bound handlers: N one-shot jobs due now whose handler waits
-- 50 ms, either in chronis.sleep(0.05) ("sleep") or on one GET to a local
-- server that answers after 50 ms ("http"), with C handlers allowed at
-- once (max_workers = C). jobs/s is timed from the first handler start to
-- the moment every completion has reached the store (stop() returns after
-- flushing them), on the monotonic clock.
-- kib_per_handler: VmRSS while the most handlers were waiting at once
-- (sampled as that count climbs, last at C) minus VmRSS before start(),
-- divided by the handlers waiting at that sample, in KiB.
-- usage: lua5.4 bench/chronis/b6_io.lua N STORAGE_URL sleep|http C [TARGET_URL]
package.path = (arg[0]:match("^(.*/)") or "./") .. "?.lua;" .. package.path
local B = require "common"
local chronis = B.chronis

local N = tonumber(arg[1]) or 100000
local url = arg[2] or "memory:"
local variant = arg[3] or "sleep"
local C = tonumber(arg[4]) or 1000
local target = arg[5]
assert(variant == "sleep" or (variant == "http" and target), "usage: b6_io.lua N URL sleep|http C [TARGET_URL]")
local WAIT = 0.05

-- Room for C running and C claimed ahead, so the workers never wait on a claim.
local queue = 2 * C
local store = chronis.storage.open(url)
local sched = chronis.scheduler{ storage = store, max_workers = C, max_queue_size = queue,
                                 polling_interval = 1 }
local mono = B.util.mono
local done, errors, first_err, first = 0, 0, nil, nil
local waiting, peak = 0, 0
-- RSS samples as the number of waiting handlers climbs: 20 steps up to C.
local mark_step = math.max(1, C // 20)
local next_mark, rss_at, waiting_at = mark_step, nil, nil

local function wait()
  if variant == "sleep" then
    chronis.sleep(WAIT)
  else
    local ok, r = pcall(chronis.http.request, { url = target, timeout = 30 })
    if not ok or r.status ~= 200 then
      errors = errors + 1
      first_err = first_err or (ok and ("status " .. r.status) or tostring(r.message or r))
      error(first_err)
    end
  end
end

sched:handler("io", function()
  if not first then first = mono() end
  waiting = waiting + 1
  if waiting > peak then
    peak = waiting
    if peak >= next_mark then
      rss_at, waiting_at = B.rss(), peak
      next_mark = math.min(next_mark + mark_step, C)
      if peak >= C then next_mark = math.huge end
    end
  end
  wait()
  waiting = waiting - 1
  done = done + 1
end)

local now = chronis.time.format(chronis.time.now())
local w0 = mono()
for i = 1, N do
  sched:create_date_job{ job_id = "io" .. i, func_name = "io", run_date = now }
end
local create_s = (mono() - w0) / 1e9

collectgarbage()
local rss0 = B.rss()
local c1 = B.cpu()
sched:start()
local ok = chronis.run_until(function() return done + errors >= N end, 3600)
sched:stop()
local t_end = mono()
local run_cpu = B.cpu() - c1
local left = sched:count_jobs()
local run_s = first and (t_end - first) / 1e9
B.emit{
  impl = "chronis", store = url:match("^(%w+)"), variant = variant, concurrency = C,
  n = N, done = done, errors = errors, first_error = first_err, left = left, ok = ok,
  create_s = create_s, run_s = run_s, jobs_per_s = run_s and done / run_s, run_cpu_s = run_cpu,
  peak_waiting = peak, waiting_at = waiting_at, rss0_kib = rss0, rss_at_kib = rss_at,
  kib_per_handler = rss_at and (rss_at - rss0) / waiting_at,
  settings = { max_workers = C, max_queue_size = queue, polling_interval = 1,
               handler = variant == "sleep" and "chronis.sleep(0.05)" or "chronis.http.request GET (server answers after 50 ms)" },
  versions = { chronis = chronis._VERSION, lua = _VERSION },
}
