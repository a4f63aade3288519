-- The soak test's table: reads build/soak/<store>.json for each store that
-- soak/run.sh ran, prints one Markdown row per store and the failures, and
-- exits non-zero when a store failed (or left no result: the end of its
-- log is printed then).
--   lua5.4 soak/report.lua DIR STORE...
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
package.cpath = (os.getenv("CHRONIS_BUILD") or "build") .. "/lua/?.so;" .. package.cpath
local json = require("chronis").json
local U = require "support.util"

local dir = arg[1]
local function f1(v) return v and ("%.1f"):format(v) or "–" end
local function f2(v) return v and ("%.2f"):format(v) or "–" end
local function mib(kb) return kb and ("%.1f"):format(kb / 1024) or "–" end
local function mib2(kb) return kb and ("%.2f"):format(kb / 1024) or "–" end

local rows, failed = {}, 0
print("| store | slots | ran | missed | doubled | p50 ms | p99 ms | max ms | p99 ms away from disturbances "
  .. "| RSS MiB start → end (quarter medians) | Lua MiB start → end (quarter medians) "
  .. "| reloads | reconnects | restarts | longest reconnect / restart s | result |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---|---:|---|---|")
-- What the reconnects were: cut connections and server restarts, or
-- reopens of the SQLite file.
local function reconnects(store, r)
  if store == "memory" then return "–" end
  if store == "sqlite" then return ("%d reopens"):format(r.reconnects_confirmed) end
  return ("%d (%d cuts, %d server restarts)"):format(r.reconnects_confirmed, r.cuts or 0, r.server_restarts or 0)
end
for i = 2, #arg do
  local store = arg[i]
  local text = U.read(("%s/%s.json"):format(dir, store))
  local ok, r = pcall(json.decode, text or "")
  if not text or not ok then
    failed = failed + 1
    rows[#rows + 1] = { store = store, failures = { "no result: the driver did not finish" } }
    print(("| %s | | | | | | | | | | | | | | | **no result** |"):format(store))
  else
    rows[#rows + 1] = r
    if not r.ok then failed = failed + 1 end
    local m = r.memory or {}
    local rss, lua = m.rss or {}, m.lua or {}
    print(("| %s | %d | %d | %d | %d | %s | %s | %s | %s | %s → %s (%s → %s) | %s → %s (%s → %s) | %d | %s | %d | %s / %s | %s |")
      :format(store, r.expected, r.runs, r.missed, r.doubled, f2(r.p50_ms), f2(r.p99_ms), f1(r.max_ms),
        f2(r.calm_p99_ms), mib(r.rss_start_kb), mib(r.rss_end_kb), mib(rss.first_q), mib(rss.last_q),
        mib2(r.lua_start_kb), mib2(r.lua_end_kb), mib2(lua.first_q), mib2(lua.last_q),
        r.reloads, reconnects(store, r), r.restarts,
        store == "memory" and "–" or f2(r.longest_reconnect_s), f2(r.longest_restart_s),
        r.ok and "ok" or "**FAILED**"))
  end
end
for _, r in ipairs(rows) do
  for _, f in ipairs(r.failures or {}) do print(("soak: %s: %s"):format(r.store, f)) end
  if not r.ok and not r.expected then
    local log = U.read(("%s/%s.log"):format(dir, r.store), "")
    local lines = {}
    for l in log:gmatch("[^\n]+") do lines[#lines + 1] = l end
    print(table.concat(lines, "\n", math.max(1, #lines - 15)))
  end
end
print(("soak: %d store(s), %d failed"):format(#rows, failed))
os.exit(failed == 0 and 0 or 1)
