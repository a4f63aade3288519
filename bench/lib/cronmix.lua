-- Reads bench/data/cron_mix.txt and compares the fire times that the B4
-- implementations wrote (one epoch second a line, in workload order).
local M = {}

function M.read(path)
  local mix = { exprs = {}, zones = {}, starts = {}, chain = 5 }
  for line in io.lines(path) do
    local k, v = line:match("^(%a+) (.*)$")
    if k == "expr" then mix.exprs[#mix.exprs + 1] = v
    elseif k == "zone" then mix.zones[#mix.zones + 1] = v
    elseif k == "start" then
      local s, iso = v:match("^(%d+)%s*(%S*)")
      mix.starts[#mix.starts + 1] = { epoch = tonumber(s), iso = iso }
    elseif k == "chain" then mix.chain = tonumber(v) end
  end
  return mix
end

function M.load(path)
  local t = {}
  for line in io.lines(path) do t[#t + 1] = tonumber(line) end
  return t
end

local function iso(s)
  if s == nil then return "missing" end
  if s < 0 then return "none" end
  return os.date("!%Y-%m-%dT%H:%M:%SZ", s)
end
M.iso = iso

-- Compares two result lists; returns the number of (expression, zone,
-- start) chains that differ and a description of the first difference of
-- each, at most `max` of them.
function M.compare(mix, a, b, max)
  local diffs, seen, i, n = {}, {}, 0, 0
  for _, e in ipairs(mix.exprs) do
    for _, z in ipairs(mix.zones) do
      for _, s in ipairs(mix.starts) do
        local first
        for k = 1, mix.chain do
          i = i + 1
          if not first and a[i] ~= b[i] then first = k end
        end
        if first then
          n = n + 1
          -- Chains from different starts often meet the same difference:
          -- list each distinct one once, with how many chains show it.
          local j = i - mix.chain + first
          local d = { expr = e, zone = z, prev = first > 1 and iso(a[j - 1]) or s.iso,
                      a = iso(a[j]), b = iso(b[j]), chains = 1 }
          local key = d.expr .. "|" .. d.zone .. "|" .. d.prev .. "|" .. d.a .. "|" .. d.b
          if seen[key] then
            seen[key].chains = seen[key].chains + 1
          elseif #diffs < (max or 20) then
            seen[key] = d
            diffs[#diffs + 1] = d
          end
        end
      end
    end
  end
  return n, diffs, (#a == i and #b == i)
end

return M
