-- SVG charts for the benchmark report, written as plain text: no library,
-- no script, every label a <text> element on a white background, so that
-- GitHub shows them as images beside the tables of docs/benchmarks.md.
-- Two kinds: horizontal bars (grouped, with min–max whiskers, on a linear
-- or logarithmic axis) and 100 % stacked bars (one histogram per row).
-- Each bar and segment carries a <title> naming its value.
local U = require "util"

local M = {}

M.WIDTH = 760
local CHAR = 6.6      -- mean advance of a 12 px sans-serif character
local BAR_H, ROW_H, HEAD_H = 12, 17, 19
local FONT = "font-family=\"Helvetica,Arial,sans-serif\" font-size=\"12\""

function M.esc(s)
  return (tostring(s):gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;",
                                          ['"'] = "&quot;", ["'"] = "&#39;" }))
end

-- Coordinates with one decimal at most: small files, stable output.
local function n1(x)
  local s = ("%.1f"):format(x)
  return (s:gsub("%.0$", ""))
end

-- An integer with thousands grouped: 40, 1,000, 60,000.
function M.int(n)
  local s = ("%d"):format(math.floor(n + 0.5))
  return (s:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^(-?),", "%1"))
end

local function textw(s) return (utf8.len(s) or #s) * CHAR end

-- Axis labels: 1, 10, 100, 1k, 10k, 1M, 0.1.
function M.short(v)
  local a = math.abs(v)
  if a >= 1e6 then return (("%g"):format(v / 1e6)) .. "M" end
  if a >= 1e3 then return (("%g"):format(v / 1e3)) .. "k" end
  return ("%g"):format(v)
end

local function canvas()
  local o = {}
  local c = {}
  function c.text(x, y, s, extra)
    o[#o + 1] = ("<text x=\"%s\" y=\"%s\"%s>%s</text>"):format(n1(x), n1(y), extra and (" " .. extra) or "", M.esc(s))
  end
  function c.rect(x, y, w, h, fill, title)
    local r = ("<rect x=\"%s\" y=\"%s\" width=\"%s\" height=\"%s\" fill=\"%s\""):format(n1(x), n1(y), n1(w), n1(h), fill)
    o[#o + 1] = title and (r .. "><title>" .. M.esc(title) .. "</title></rect>") or (r .. "/>")
  end
  function c.line(x1, y1, x2, y2, stroke, width)
    o[#o + 1] = ("<line x1=\"%s\" y1=\"%s\" x2=\"%s\" y2=\"%s\" stroke=\"%s\"%s/>"):format(
      n1(x1), n1(y1), n1(x2), n1(y2), stroke, width and (" stroke-width=\"" .. width .. "\"") or "")
  end
  function c.svg(w, h)
    return table.concat({
      ("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" %s>"):format(
        w, math.ceil(h), w, math.ceil(h), FONT),
      ("<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"#ffffff\"/>"):format(w, math.ceil(h)),
      table.concat(o, "\n"),
      "</svg>", "" }, "\n")
  end
  return c
end

-- Title, subtitle and a legend of colour swatches (wrapped to the width);
-- returns the y below them.
local function header(c, spec, legend)
  local y = 18
  c.text(10, y, spec.title, "font-size=\"14\" font-weight=\"bold\" fill=\"#111111\"")
  if spec.subtitle then
    y = y + 16
    c.text(10, y, spec.subtitle, "font-size=\"11\" fill=\"#555555\"")
  end
  if legend and #legend > 0 then
    y = y + 18
    local x = 10
    for _, l in ipairs(legend) do
      local w = 16 + textw(l.label) + 14
      if x + w > M.WIDTH - 10 and x > 10 then x = 10; y = y + 16 end
      c.rect(x, y - 10, 11, 11, l.color)
      c.text(x + 15, y, l.label, "fill=\"#222222\"")
      x = x + w
    end
  end
  return y + 10
end

-- Maps values to x in [x0, x0 + w]: log10 between the decades around the
-- values, or linear from 0 to a round maximum. Returns pos(v) and the ticks.
local function axis(lo, hi, log, x0, w)
  if log then
    -- The smallest value gets a visible bar: the axis starts a decade
    -- lower when that value is at (or just above) a power of ten.
    local a = math.floor(math.log(lo, 10) - 0.15)
    local b = math.ceil(math.log(hi, 10) - 1e-9)
    if b <= a then b = a + 1 end
    local ticks = {}
    for k = a, b do ticks[#ticks + 1] = 10.0 ^ k end
    return function(v)
      if not v or v <= 0 then return x0 end
      local t = (math.log(v, 10) - a) / (b - a)
      return x0 + w * math.max(0, math.min(1, t))
    end, ticks
  end
  local raw = hi / 5
  local mag = 10.0 ^ math.floor(math.log(raw, 10))
  local step = mag
  for _, m in ipairs{ 1, 2, 5, 10 } do
    if m * mag >= raw then step = m * mag; break end
  end
  local top = math.ceil(hi / step - 1e-9) * step
  local ticks = {}
  for k = 0, math.floor(top / step + 0.5) do ticks[#ticks + 1] = k * step end
  return function(v)
    if not v or v <= 0 then return x0 end
    return x0 + w * math.min(1, v / top)
  end, ticks
end

local function value_text(b, unit)
  local s = U.num(b.value)
  if b.min and b.max and b.min ~= b.max then s = s .. " (" .. U.num(b.min) .. "–" .. U.num(b.max) .. ")" end
  return s .. (unit and (" " .. unit) or "")
end

--[[ Horizontal bars.
spec = { title, subtitle, unit (of the axis and the values), log (bool),
  series = { {key, label, color} ... } (the legend),
  groups = { { label, bars = { { series, label, value, min, max, why } ... } } ... } }
A bar without a value shows "n/a" and its `why`. Returns nil when no bar
has a value (nothing to draw). ]]
function M.bars(spec)
  local lo, hi = math.huge, 0
  local labw = 0
  for _, g in ipairs(spec.groups) do
    if g.label then labw = math.max(labw, textw(g.label) * 1.08) end
    for _, b in ipairs(g.bars) do
      labw = math.max(labw, textw(b.label) + 12)
      for _, v in ipairs{ b.value, b.min, b.max } do
        if type(v) == "number" and v > 0 then lo = math.min(lo, v); hi = math.max(hi, v) end
      end
    end
  end
  if hi == 0 then return nil end
  local colors = {}
  for _, s in ipairs(spec.series or {}) do colors[s.key] = s.color end
  local c = canvas()
  local y = header(c, spec, spec.series)
  local x0 = math.floor(math.min(300, math.max(110, labw + 18)))
  local right = 150 -- room for the value labels after the longest bar
  local pw = M.WIDTH - x0 - right
  local pos, ticks = axis(lo, hi, spec.log, x0, pw)
  local top = y
  local body = {}
  for _, g in ipairs(spec.groups) do
    if g.label then
      y = y + HEAD_H
      c.text(10, y - 5, g.label, "font-weight=\"bold\" fill=\"#111111\"")
    end
    for _, b in ipairs(g.bars) do
      body[#body + 1] = { b = b, y = y }
      y = y + ROW_H
    end
  end
  local bottom = y + 4
  -- grid behind the bars
  for _, t in ipairs(ticks) do
    local x = pos(t)
    c.line(x, top, x, bottom, "#dddddd")
    c.text(x, bottom + 13, M.short(t), "text-anchor=\"middle\" font-size=\"11\" fill=\"#444444\"")
  end
  c.line(x0, top, x0, bottom, "#888888")
  c.text(x0 + pw / 2, bottom + 28, (spec.unit or "") .. (spec.log and " (log scale)" or ""),
    "text-anchor=\"middle\" font-size=\"11\" fill=\"#444444\"")
  for _, r in ipairs(body) do
    local b, by = r.b, r.y
    c.text(22, by + BAR_H - 1, b.label, "fill=\"#222222\"")
    if type(b.value) == "number" then
      local xe = pos(b.value)
      c.rect(x0, by + 2, math.max(0, xe - x0), BAR_H, colors[b.series] or "#4477aa",
        b.label .. (b.group and (", " .. b.group) or "") .. ": " .. value_text(b, spec.unit))
      local xend = xe
      if b.min and b.max and b.min ~= b.max then
        local xa, xb, cy = pos(b.min), pos(b.max), by + 2 + BAR_H / 2
        c.line(xa, cy, xb, cy, "#222222")
        c.line(xa, cy - 4, xa, cy + 4, "#222222")
        c.line(xb, cy - 4, xb, cy + 4, "#222222")
        xend = math.max(xe, xb)
      end
      c.text(xend + 4, by + BAR_H - 1, U.num(b.value), "fill=\"#222222\"")
    else
      c.text(x0 + 4, by + BAR_H - 1, "n/a" .. (b.why and (": " .. b.why) or ""),
        "font-style=\"italic\" fill=\"#777777\"")
    end
  end
  return c.svg(M.WIDTH, bottom + 36)
end

-- Green (early, on time) to dark red (a second late and more).
M.RAMP = { "#1a9850", "#66bd63", "#a6d96a", "#d9ef8b", "#fee08b", "#fdae61",
           "#f46d43", "#d73027", "#a50026", "#7f0020", "#4d0013" }
local DARK = { [1] = true, [7] = true, [8] = true, [9] = true, [10] = true, [11] = true }

--[[ 100 % stacked bars: one row per series of counts.
spec = { title, subtitle, buckets = { label ... }, unit (of the counts, e.g. "runs"),
  rows = { { label, counts = { ... } } ... } }
Segments of 6 % and more print their share. Returns nil without rows. ]]
function M.stacked(spec)
  if #spec.rows == 0 then return nil end
  local legend = {}
  for i, l in ipairs(spec.buckets) do legend[i] = { label = l, color = M.RAMP[math.min(i, #M.RAMP)] } end
  local c = canvas()
  local y = header(c, spec, legend)
  local labw = 0
  for _, r in ipairs(spec.rows) do labw = math.max(labw, textw(r.label)) end
  local x0 = math.floor(math.min(300, math.max(110, labw + 20)))
  local right = 110
  local pw = M.WIDTH - x0 - right
  local top = y + 4
  local bottom = top + 22 * #spec.rows
  -- grid behind the bars
  for k = 0, 4 do
    local x = x0 + pw * k / 4
    c.line(x, top - 2, x, bottom, "#cccccc")
    c.text(x, bottom + 13, (k * 25) .. "%", "text-anchor=\"middle\" font-size=\"11\" fill=\"#444444\"")
  end
  y = top
  local unit = spec.unit or "runs"
  for _, r in ipairs(spec.rows) do
    local total = 0
    for _, n in ipairs(r.counts) do total = total + n end
    c.text(10, y + 14, r.label, "fill=\"#222222\"")
    local x = x0
    for i, n in ipairs(r.counts) do
      if n > 0 then
        local w = pw * n / total
        local share = 100 * n / total
        c.rect(x, y + 2, w, 16, M.RAMP[math.min(i, #M.RAMP)],
          ("%s: %s: %s %s (%.1f %%)"):format(r.label, spec.buckets[i] or "?", M.int(n), unit, share))
        if share >= 6 then
          c.text(x + w / 2, y + 14, ("%.0f%%"):format(share),
            "text-anchor=\"middle\" font-size=\"10\" fill=\"" .. (DARK[i] and "#ffffff" or "#111111") .. "\"")
        end
        x = x + w
      end
    end
    if total == 0 then
      c.text(x0 + 4, y + 14, "no " .. unit, "font-style=\"italic\" fill=\"#777777\"")
    end
    c.text(x0 + pw + 6, y + 14, M.int(total) .. " " .. unit, "fill=\"#444444\" font-size=\"11\"")
    y = y + 22
  end
  c.text(x0 + pw / 2, bottom + 28, "share of " .. unit, "text-anchor=\"middle\" font-size=\"11\" fill=\"#444444\"")
  return c.svg(M.WIDTH, bottom + 36)
end

return M
