-- A strict reader of the Prometheus text exposition format (0.0.4), for
-- the metrics specs: it fails on anything a scraper could misread, and
-- answers questions about the samples.
--
-- Checked: every line is a HELP, a TYPE or a sample; a family has one HELP
-- and one TYPE, before its samples, and its lines are together; metric
-- and label names are valid, label values escaped (\\, \", \n only);
-- values are numbers; no two samples have the same name and labels;
-- counters end in _total; every histogram series has ascending le bounds,
-- non-decreasing cumulative counts, a +Inf bucket equal to _count, and a
-- _sum. Plus the chronis conventions: the chronis_ prefix and the label
-- names the metrics use.
local P = {}

local LABELS = { store = true, scheduler = true, handler = true, outcome = true, op = true,
  status = true, le = true }

local function fail(n, line, why)
  error(("line %d: %s: %s"):format(n, why, line), 0)
end

local function number(s)
  if s == "+Inf" then return math.huge end
  if s == "-Inf" then return -math.huge end
  if s == "NaN" then return 0 / 0 end
  if not s:match("^[-+]?[%d.]+[eE]?[-+]?%d*$") then return nil end
  return tonumber(s)
end

-- Reads `{k="v",...}` at position i of line; returns the labels table, the
-- canonical key (sorted k=v pairs, le left out when drop_le) and the next
-- position.
local function read_labels(line, i, n)
  local labels = {}
  i = i + 1
  if line:sub(i, i) == "}" then return labels, i + 1 end
  while true do
    local name, after = line:match("^([%a_][%w_]*)=\"()", i)
    if not name then fail(n, line, "bad label name at " .. i) end
    if labels[name] then fail(n, line, "label " .. name .. " twice") end
    i = after
    local buf = {}
    while true do
      local c = line:sub(i, i)
      if c == "" then fail(n, line, "unterminated label value") end
      if c == '"' then break end
      if c == "\\" then
        local e = line:sub(i + 1, i + 1)
        if e == "n" then buf[#buf + 1] = "\n"
        elseif e == "\\" then buf[#buf + 1] = "\\"
        elseif e == '"' then buf[#buf + 1] = '"'
        else fail(n, line, "bad escape \\" .. e) end
        i = i + 2
      else
        buf[#buf + 1] = c
        i = i + 1
      end
    end
    labels[name] = table.concat(buf)
    if not utf8.len(labels[name]) then fail(n, line, "label value is not UTF-8") end
    i = i + 1
    local c = line:sub(i, i)
    if c == "}" then return labels, i + 1 end
    if c ~= "," then fail(n, line, "expected , or } after a label") end
    i = i + 1
  end
end

local function key_of(labels, drop)
  local ks = {}
  for k, v in pairs(labels) do
    if k ~= drop then ks[#ks + 1] = k .. "=" .. v end
  end
  table.sort(ks)
  return table.concat(ks, "\0")
end

local function check_histograms(fam)
  local series = {}
  for _, s in ipairs(fam.samples) do
    local k = key_of(s.labels, "le")
    local h = series[k] or { buckets = {} }
    series[k] = h
    if s.name == fam.name .. "_bucket" then
      local le = s.labels.le and number(s.labels.le)
      if not le then error(fam.name .. ": bucket without a valid le", 0) end
      h.buckets[#h.buckets + 1] = { le = le, v = s.value }
    elseif s.name == fam.name .. "_sum" then
      h.sum = s.value
    else
      h.count = s.value
    end
  end
  for k, h in pairs(series) do
    local where = fam.name .. "{" .. k:gsub("%z", ",") .. "}"
    assert(h.sum and h.count, where .. ": _sum or _count missing")
    local prev
    for _, b in ipairs(h.buckets) do
      if prev then
        assert(b.le > prev.le, where .. ": le bounds not ascending")
        assert(b.v >= prev.v, where .. ": bucket counts decrease")
      end
      prev = b
    end
    assert(prev and prev.le == math.huge, where .. ": no +Inf bucket")
    assert(prev.v == h.count, where .. ": +Inf bucket differs from _count")
    assert(h.sum >= 0, where .. ": negative _sum")
  end
  return series
end

-- Parses text; returns an object with families, samples and the queries
-- below. Raises on any violation.
function P.parse(text)
  assert(text:sub(-1) == "\n", "the text does not end with a newline")
  local fams, order, samples, seen = {}, {}, {}, {}
  local current
  local n = 0
  local function family(name, line)
    local f = fams[name]
    if not f then
      f = { name = name, samples = {} }
      fams[name] = f
      order[#order + 1] = name
    elseif current ~= f then
      fail(n, line, "family " .. name .. " is split")
    end
    current = f
    return f
  end
  for line in text:gmatch("([^\n]*)\n") do
    n = n + 1
    if line:sub(1, 1) == "#" then
      local kind, name, rest = line:match("^# (%u+) ([%a_:][%w_:]*) (.*)$")
      if kind == "HELP" then
        local f = family(name, line)
        if f.help or #f.samples > 0 then fail(n, line, "HELP twice or after samples") end
        f.help = rest
      elseif kind == "TYPE" then
        local f = family(name, line)
        if f.type or #f.samples > 0 then fail(n, line, "TYPE twice or after samples") end
        if not ({ counter = true, gauge = true, histogram = true, summary = true, untyped = true })[rest] then
          fail(n, line, "unknown type")
        end
        f.type = rest
      else
        fail(n, line, "a comment that is neither HELP nor TYPE")
      end
    else
      local name, i = line:match("^([%a_:][%w_:]*)()")
      if not name then fail(n, line, "not a sample") end
      local labels = {}
      if line:sub(i, i) == "{" then labels, i = read_labels(line, i, n) end
      local value = line:match("^ (%S+)$", i) or line:match("^ (%S+) %-?%d+$", i)
      if not value or not number(value) then fail(n, line, "bad value") end
      local base = name
      if current and current.type == "histogram" then
        base = name:match("^(.*)_bucket$") or name:match("^(.*)_sum$") or name:match("^(.*)_count$") or name
      end
      if not current or current.name ~= base then fail(n, line, "sample outside its family") end
      if not current.type or not current.help then fail(n, line, "sample before HELP and TYPE") end
      if current.type == "counter" and not name:match("_total$") then
        fail(n, line, "a counter not ending in _total")
      end
      if not name:match("^chronis_") then fail(n, line, "no chronis_ prefix") end
      for k in pairs(labels) do
        if not LABELS[k] then fail(n, line, "label " .. k .. " is not one of the metrics' labels") end
      end
      local id = name .. "\0" .. key_of(labels)
      if seen[id] then fail(n, line, "the same series twice") end
      seen[id] = true
      local s = { name = name, labels = labels, value = number(value) }
      current.samples[#current.samples + 1] = s
      samples[#samples + 1] = s
    end
  end
  local r = { families = fams, order = order, samples = samples, histograms = {} }
  for _, name in ipairs(order) do
    local f = fams[name]
    assert(f.type and f.help, name .. ": HELP or TYPE missing")
    if f.type == "histogram" then r.histograms[name] = check_histograms(f) end
  end

  local function matches(s, name, want)
    if s.name ~= name then return false end
    for k, v in pairs(want or {}) do
      if s.labels[k] ~= v then return false end
    end
    return true
  end

  --- The value of the one sample of name whose labels are exactly want;
  --- nil when there is none.
  function r.value(name, want)
    local k = key_of(want or {})
    for _, s in ipairs(samples) do
      if s.name == name and key_of(s.labels) == k then return s.value end
    end
    return nil
  end

  --- The sum of the samples of name whose labels include want.
  function r.sum(name, want)
    local t = 0
    for _, s in ipairs(samples) do
      if matches(s, name, want) then t = t + s.value end
    end
    return t
  end

  --- The samples of name whose labels include want.
  function r.select(name, want)
    local out = {}
    for _, s in ipairs(samples) do
      if matches(s, name, want) then out[#out + 1] = s end
    end
    return out
  end

  return r
end

return P
