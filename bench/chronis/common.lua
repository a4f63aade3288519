-- Shared by the chronis side of every scenario: finds the repository's Lua
-- library, the built C module and bench's own helper module (monotonic
-- clock, CPU time, RSS), and prints the one result line the harness reads.
local here = debug.getinfo(1, "S").source:match("^@(.*)bench/chronis/common%.lua$") or "./"
if here == "" then here = "./" end
package.path = here .. "lua/?.lua;" .. here .. "lua/?/init.lua;" .. here .. "bench/chronis/?.lua;" .. package.path
local build = os.getenv("CHRONIS_BUILD") or (here .. "build")
package.cpath = build .. "/lua/?.so;" .. build .. "/bench/?.so;" .. package.cpath

local M = {}
M.chronis = require "chronis"
M.util = require "benchutil"
M.json = M.chronis.json

-- Monotonic seconds (float) and nanoseconds (integer).
function M.mono_ns() return M.util.mono() end
function M.mono() return M.util.mono() / 1e9 end
M.cpu = M.util.cpu
M.rss = M.util.rss

-- Creates the jobs make(i) describes for i = lo..hi with sched:create_jobs,
-- 1,000 a call (the lists built here, inside whatever the caller times);
-- raises if one was not created.
function M.create_bulk(sched, lo, hi, make)
  for b = lo, hi, 1000 do
    local list = {}
    for i = b, math.min(hi, b + 999) do list[#list + 1] = make(i) end
    local _, failed = sched:create_jobs(list)
    assert(failed == nil, "create_jobs: a job was not created")
  end
end

-- The result line: "BENCH " followed by one JSON object.
function M.emit(t)
  io.stdout:write("BENCH ", M.json.encode(t), "\n")
  io.stdout:flush()
end

-- Percentile of a sorted array (nearest rank).
function M.pct(sorted, p)
  local n = #sorted
  if n == 0 then return nil end
  local k = math.max(1, math.min(n, math.ceil(p / 100 * n)))
  return sorted[k]
end

return M
