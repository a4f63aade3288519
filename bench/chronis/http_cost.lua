-- What each API answer costs the loop, on a memory store with 100,000 due
-- one-shot jobs and 1,000 interval jobs, before and after the one-shot
-- jobs ran (100,000 runs in the history). The client is in the same
-- process, so each figure is an upper bound of the server's share.
-- usage: lua5.4 bench/chronis/http_cost.lua [N]
package.path = (arg[0]:match("^(.*/)") or "./") .. "?.lua;" .. package.path
local B = require "common"
local chronis = B.chronis

local N = tonumber(arg[1]) or 100000
local s = chronis.scheduler{ storage = chronis.storage.memory(), max_workers = 100 }
s:handler("noop", function() end)
local now = chronis.time.format(chronis.time.now())
for i = 1, N do s:create_date_job{ job_id = "j" .. i, func_name = "noop", run_date = now } end
for i = 1, 1000 do s:every{ seconds = 3600 }:config{ job_id = "r" .. i }:run("noop") end
local srv = chronis.http_server{ listen = "127.0.0.1:0", schedulers = { s }, rate_limit = 0 }

local PATHS = { "/api/stats", "/api/jobs?limit=50", "/api/runs?limit=50", "/metrics", "/healthz" }
local function measure(phase)
  local out = {}
  for _, p in ipairs(PATHS) do
    local times = {}
    for i = 1, 5 do
      chronis.sleep(2.1) -- past the stats' 2 s cache: every answer is computed
      local t0 = B.mono()
      local r = chronis.http.request{ url = srv.url .. p }
      assert(r.status == 200, p .. ": " .. r.status)
      times[i] = (B.mono() - t0) * 1000
    end
    table.sort(times)
    out[p] = times[3]
  end
  return { phase = phase, median_ms = out }
end

local before = measure("before the runs")
s:start()
chronis.run_until(function() return s:count_jobs{ status = "scheduled" } <= 1000 end, 600)
s:stop()
local after = measure("after " .. N .. " runs")
B.emit{ impl = "chronis", n = N, results = { before, after } }
srv.close()
