-- The cost of one /metrics scrape (docs/http.md#metrics): SCHEDULERS
-- memory schedulers, each with HANDLERS handlers that have run once, then
-- chronis.metrics.render timed over many scrapes (CPU time; the jobs
-- counts come from their cache, as between two counts of a real server).
--   lua5.4 bench/metrics_render.lua [SCHEDULERS=10] [HANDLERS=10]
local root = debug.getinfo(1, "S").source:match("^@(.*)bench/metrics_render%.lua$") or "./"
if root == "" then root = "./" end
package.path = root .. "lua/?.lua;" .. root .. "lua/?/init.lua;" .. package.path
package.cpath = (os.getenv("CHRONIS_BUILD") or (root .. "build")) .. "/lua/?.so;" .. package.cpath
local chronis = require "chronis"
local metrics = require "chronis.metrics"

local ns, nh = tonumber(arg[1] or 10), tonumber(arg[2] or 10)
local scheds = {}
for i = 1, ns do
  local s = chronis.scheduler { max_workers = 50, max_queue_size = 500, logger = function() end }
  local now = chronis.time.format(chronis.time.now())
  for h = 1, nh do
    s:handler("handler" .. h, function() end)
    s:create_date_job { job_id = "j" .. h, func_name = "handler" .. h, run_date = now }
  end
  s:start()
  scheds[i] = s
end
assert(chronis.run_until(function()
  for _, s in ipairs(scheds) do
    if s:stats().succeeded < nh then return false end
  end
  return true
end, 60), "the runs did not end")
local ctx = { schedulers = scheds }
local text = metrics.render(ctx) -- counts the jobs once
local n = 2000
local t0 = os.clock()
for _ = 1, n do text = metrics.render(ctx) end
local per = (os.clock() - t0) / n
print(("%d schedulers x %d handlers: %.0f µs per scrape, %d lines, %d bytes"):format(ns, nh,
  per * 1e6, select(2, text:gsub("\n", "")), #text))
for _, s in ipairs(scheds) do s:stop(0) end
