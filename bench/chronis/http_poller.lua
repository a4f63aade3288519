-- A dashboard's load on a chronis HTTP server: every INTERVAL seconds one
-- request, in turn /api/stats, /api/jobs?limit=50 and /metrics, until
-- killed or until the server stops answering. Prints nothing; the count
-- of answers goes to COUNT_FILE after each one.
-- usage: lua5.4 bench/chronis/http_poller.lua BASE_URL INTERVAL COUNT_FILE
package.path = (arg[0]:match("^(.*/)") or "./") .. "?.lua;" .. package.path
local B = require "common"
local chronis = B.chronis

local base, interval, count_file = arg[1], tonumber(arg[2]) or 0.1, arg[3]
local paths = { "/api/stats", "/api/jobs?limit=50", "/metrics" }
local n, failures = 0, 0
while failures < 20 do
  local ok, r = pcall(chronis.http.request, { url = base .. paths[n % #paths + 1], timeout = 5 })
  if ok and r.status == 200 then
    n = n + 1
    failures = 0
    -- Written whole (a rename): the reader never sees an empty file.
    local f = io.open(count_file .. ".tmp", "w")
    if f then
      f:write(n, "\n")
      f:close()
      os.rename(count_file .. ".tmp", count_file)
    end
  else
    failures = failures + 1
  end
  chronis.sleep(interval)
end
