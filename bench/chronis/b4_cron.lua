-- B4 cron: next-fire computations per second through the Lua API over
-- bench/data/cron_mix.txt: chronis.cron.next(spec, after, zone), which
-- parses the spec on each call, or with "compiled" a chronis.cron.compile
-- object per expression and zone, chained with integer times;
-- bench/tools/cron_tight.c measures the C core alone.
-- usage: lua5.4 bench/chronis/b4_cron.lua MIX_FILE RESULTS_FILE MIN_SECONDS [compiled]
package.path = (arg[0]:match("^(.*/)") or "./") .. "?.lua;" .. package.path
local B = require "common"
local chronis = B.chronis
local mix, results, min_s = arg[1], arg[2], tonumber(arg[3]) or 1
local compiled = arg[4] == "compiled"

local exprs, zones, starts, chain = {}, {}, {}, 5
for line in io.lines(mix) do
  local k, v = line:match("^(%a+) (.*)$")
  if k == "expr" then exprs[#exprs + 1] = v
  elseif k == "zone" then zones[#zones + 1] = v
  elseif k == "start" then starts[#starts + 1] = math.tointeger(tonumber(v:match("^%d+")))
  elseif k == "chain" then chain = tonumber(v) end
end

local next_fire, parse = chronis.cron.next, chronis.time.parse
local out = assert(io.open(results, "w"))
-- Compiled: one object per expression and zone, made before the clock
-- starts (as a program would keep them).
local objs = {}
if compiled then
  for i, e in ipairs(exprs) do
    objs[i] = {}
    for j, z in ipairs(zones) do objs[i][j] = chronis.cron.compile(e, z) end
  end
end
local calls, rounds = 0, 0
local t0 = B.mono()
local el
repeat
  for i, e in ipairs(exprs) do
    for j, z in ipairs(zones) do
      local c = compiled and objs[i][j]
      for _, s in ipairs(starts) do
        local t = s * 1000000
        for _ = 1, chain do
          if c then
            if t then t = c:next(t) end
            calls = calls + 1
            if rounds == 0 then out:write(t and (t // 1000000) or -1, "\n") end
          else
            if t then t = next_fire(e, t, z) end
            calls = calls + 1
            if rounds == 0 then out:write(t and (parse(t) // 1000000) or -1, "\n") end
          end
        end
      end
    end
  end
  rounds = rounds + 1
  el = B.mono() - t0
until el >= min_s
out:close()
B.emit{ impl = compiled and "chronis-lua-compiled" or "chronis-lua", calls = calls, rounds = rounds, seconds = el, per_s = calls / el }
