-- Small helpers of the harness: shell commands, files, JSON and statistics.
-- Files and plain shell commands are spec/support/util.lua's.
local cjson = require "cjson"
local SU = require "support.util"

local M = {}

M.json = cjson
cjson.encode_sparse_array(true)

function M.q(s)
  s = tostring(s)
  if s:match("^[%w%./:_=@%-,+]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

function M.join(argv)
  local t = {}
  for i, a in ipairs(argv) do t[i] = M.q(a) end
  return table.concat(t, " ")
end

-- sh(cmd): true when it exited 0; read(path), write(path, s), exists(path).
M.sh, M.read, M.write, M.exists, M.sleep = SU.sh, SU.read, SU.write, SU.exists, SU.sleep

-- Output of a command, trailing whitespace removed (nil when it failed).
function M.capture(cmd)
  local out, ok = SU.capture(cmd .. " 2>/dev/null")
  if not ok then return nil end
  return (out:gsub("%s+$", ""))
end

-- Monotonic seconds, from the bench helper module.
local util_ok, bu = pcall(require, "benchutil")
function M.mono()
  if util_ok then return bu.mono() / 1e9 end
  return os.time()
end

-- The "BENCH {json}" line a scenario script printed, decoded.
function M.bench_line(text)
  local last
  for line in (text or ""):gmatch("[^\n]+") do
    local j = line:match("^BENCH (.*)$")
    if j then last = j end
  end
  if not last then return nil end
  local ok, v = pcall(cjson.decode, last)
  return ok and v or nil
end

function M.tail(text, n)
  local lines = {}
  for line in (text or ""):gmatch("[^\n]*\n?") do
    if line ~= "" then lines[#lines + 1] = line end
  end
  local from = math.max(1, #lines - n + 1)
  return table.concat(lines, "", from)
end

-- Statistics over an array of numbers (nils ignored).
function M.stats(values)
  local t = {}
  for _, v in pairs(values) do
    if type(v) == "number" and v == v then t[#t + 1] = v end
  end
  if #t == 0 then return nil end
  table.sort(t)
  local n = #t
  local med = n % 2 == 1 and t[(n + 1) // 2] or (t[n // 2] + t[n // 2 + 1]) / 2
  return { median = med, min = t[1], max = t[n], n = n }
end

-- A number for a table: 3 significant figures, thousands grouped.
function M.num(v)
  if v == nil then return "–" end
  if type(v) ~= "number" then return tostring(v) end
  if v ~= v then return "nan" end
  local a = math.abs(v)
  local s
  if a == 0 then s = "0"
  elseif a >= 1000 then s = ("%.0f"):format(v)
  elseif a >= 100 then s = ("%.0f"):format(v)
  elseif a >= 10 then s = ("%.1f"):format(v)
  elseif a >= 1 then s = ("%.2f"):format(v)
  elseif a >= 0.01 then s = ("%.3f"):format(v)
  else s = ("%.2g"):format(v) end
  local int, rest = s:match("^(-?%d+)(.*)$")
  if int and #int > 4 then
    int = int:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^(-?),", "%1")
    s = int .. rest
  end
  return s
end

-- "median (min–max)" of a stats table, or the value alone for one run.
function M.cell(st)
  if not st then return "–" end
  if st.n == 1 or st.min == st.max then return M.num(st.median) end
  return ("%s (%s–%s)"):format(M.num(st.median), M.num(st.min), M.num(st.max))
end

return M
