-- The benchmark report (bench/lib/report.lua) and its SVG charts
-- (bench/lib/svg.lua), from a results table made here in the shape the
-- harness writes to build/bench/results.json: the charts hold the bars and
-- labels of the figures, the goals read the right figures and ratios.
package.path = "bench/lib/?.lua;" .. package.path
local svg = require "svg"
local report = require "report"
local U = require "util"

local function st(median, min, max, n)
  return { median = median, min = min or median, max = max or median, n = n or 3 }
end

local function row(key, system, store, figures, extra)
  local r = { key = key, system = system, store = store, status = "ok", figures = figures }
  for k, v in pairs(extra or {}) do r[k] = v end
  return r
end

local function results()
  local hist = { edges_ms = { 0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000 },
                 counts = { 500, 300, 150, 40, 10, 0, 0, 0, 0, 0, 0 }, runs = 3 }
  local hist_x = { edges_ms = hist.edges_ms, counts = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }, runs = 3 }
  hist_x.counts[11] = 4; hist_x.counts[1] = 1
  local function b6(key, system, store, variant, conc, jobs_s, kib)
    return row(key, system, store, { jobs_s = st(jobs_s), kib_per_handler = kib and st(kib) or nil },
      { params = { variant = variant, concurrency = conc } })
  end
  return {
    meta = { date = "2026-12-07 10:00 UTC", runs = 3, versions = {}, schemes = { "memory" } },
    skipped = {}, errors = {},
    scenarios = {
      { id = "B1", title = "B1 burst", what = "burst", figures = { { key = "jobs_s", label = "jobs/s" },
        { key = "create_s", label = "create/s" } },
        rows = {
          row("chronis-memory", "chronis", "memory", { jobs_s = st(600000, 550000, 650000), create_s = st(1200000) }),
          row("aps-memory", "APScheduler", "memory", { jobs_s = st(16000), create_s = st(13000) }),
          row("chronis-sqlite", "chronis", "sqlite", { jobs_s = st(45000), create_s = st(90000) }),
          row("chronis-redis", "chronis", "redis", { jobs_s = st(45918, 40000, 50000), create_s = st(30000) }),
          row("bullmq", "BullMQ", "redis", { jobs_s = st(3459, 3000, 4000), create_s = st(15000) }),
          row("chronis-postgres", "chronis", "postgres", { jobs_s = st(20000), create_s = st(16000) }),
          { key = "graphile", system = "graphile-worker", store = "postgres", status = "error: exit 1 <boom>",
            figures = {} },
        },
        ratios = {
          { a = "chronis-redis", b = "bullmq", fig = "jobs_s", label = "Redis", stats = st(13.3, 2.5, 14) },
          { a = "chronis-redis", b = "bullmq", fig = "create_s", label = "Redis create", stats = st(2, 1.6, 2.2) },
          { a = "chronis-postgres", b = "graphile", fig = "jobs_s", label = "PostgreSQL", stats = nil },
        } },
      { id = "B2", title = "B2 steady", what = "steady", figures = { { key = "p99", label = "p99 ms" } },
        rows = {
          row("chronis-memory", "chronis", "memory", { p50 = st(1.5), p99 = st(3.2, 3, 4), max = st(5.4),
            missed = st(0), doubled = st(0) }, { hist = hist }),
          row("bullmq", "BullMQ", "redis", { p50 = st(43), p99 = st(98), max = st(102) }),
        }, ratios = {} },
      { id = "B2X", title = "B2X steady", what = "20,000 jobs", figures = { { key = "p99", label = "p99 ms" } },
        rows = {
          row("chronis-redis", "chronis", "redis", { p50 = st(2), p99 = st(25), max = st(1200),
            missed = st(0), doubled = st(1) }, { hist = hist_x }),
        }, ratios = {} },
      { id = "B3", title = "B3 scale", what = "scale", figures = { { key = "empty", label = "µs" } },
        rows = {
          row("chronis-memory", "chronis", "memory", { bpj = st(344), empty = st(3), tick = st(150) }),
          row("chronis-redis", "chronis", "redis", { empty = st(80) }),
        }, ratios = {} },
      { id = "B5", title = "B5 many processes", what = "4 processes", figures = { { key = "dup", label = "duplicates" } },
        rows = { row("chronis-redis", "chronis", "redis", { dup = st(0, 0, 2), lost = st(0) }) }, ratios = {} },
      { id = "B6", title = "B6 concurrency", what = "concurrency", figures = { { key = "jobs_s", label = "jobs/s" } },
        rows = {
          b6("chronis-memory-sleep-1000", "chronis", "memory", "sleep", 1000, 150000, 2.0),
          b6("chronis-memory-sleep-10000", "chronis", "memory", "sleep", 10000, 120000, 2.5),
          b6("chronis-redis-sleep-10000", "chronis", "redis", "sleep", 10000, 30000),
          b6("bullmq-sleep-10000", "BullMQ", "redis", "sleep", 10000, 10000),
          b6("chronis-memory-http-1000", "chronis", "memory", "http", 1000, 90000, 4.0),
          b6("chronis-memory-http-10000", "chronis", "memory", "http", 10000, 80000, 8.0),
          { key = "bullmq-http-10000", system = "BullMQ", store = "redis", status = "error: timed out",
            figures = {}, params = { variant = "http", concurrency = 10000 } },
        }, ratios = {} },
    },
  }
end

-- A light XML check: tags balance, attributes are quoted, text holds no
-- raw '<' or bare '&'; returns the root tag's text or raises.
local function wellformed(doc)
  assert.is_nil(doc:find("<script", 1, true))
  assert.is_nil(doc:find("<!DOCTYPE", 1, true))
  local stack, pos, root = {}, 1, nil
  while true do
    local a, b, tag = doc:find("(%b<>)", pos)
    local text = doc:sub(pos, (a or #doc + 1) - 1)
    assert(not text:find("<", 1, true), "raw < in text: " .. text)
    for amp in text:gmatch("&[^;%s]*;?") do
      assert(amp:match("^&[#%w]+;$"), "bare & in text: " .. text)
    end
    if not a then break end
    local close, name, attrs, selfclose = tag:match("^<(/?)([%w:]+)(.-)(/?)>$")
    assert(name, "bad tag " .. tag)
    -- every attribute is name="value"
    local rest = attrs:gsub('%s+[%w:%-]+="[^"<]*"', "")
    assert(rest:match("^%s*$"), "bad attributes in " .. tag)
    if close == "/" then
      assert.are.equal(name, table.remove(stack))
    elseif selfclose ~= "/" then
      stack[#stack + 1] = name
      root = root or name
    end
    pos = b + 1
  end
  assert.are.same({}, stack)
  assert.are.equal("svg", root)
  assert.truthy(doc:find('^<svg xmlns="http://www.w3.org/2000/svg"'))
end

-- The rects of a chart that carry a title: { {x, w, title} ... }.
local function bars_of(doc)
  local t = {}
  for attrs, title in doc:gmatch("<rect ([^>]*)><title>(.-)</title></rect>") do
    t[#t + 1] = { x = tonumber(attrs:match('x="([%d%.%-]+)"')), w = tonumber(attrs:match('width="([%d%.]+)"')),
                  title = title:gsub("&(%w+);", { lt = "<", gt = ">", amp = "&", quot = '"' }) }
  end
  return t
end

local function bar_titled(doc, prefix)
  for _, b in ipairs(bars_of(doc)) do
    if b.title:sub(1, #prefix) == prefix then return b end
  end
  error("no bar titled " .. prefix .. " in:\n" .. doc)
end

local function has_text(doc, s)
  return doc:find(">" .. svg.esc(s) .. "</text>", 1, true) ~= nil
end

local function chart(list, file)
  for _, c in ipairs(list) do if c.file == file then return c end end
end

describe("bench svg", function()
  it("draws bars to scale on a linear axis, with whiskers and escaped labels", function()
    local doc = svg.bars{ title = "T <&>", unit = "jobs/s", log = false,
      series = { { key = "a", label = "A", color = "#111111" } },
      groups = { { label = "g", bars = {
        { series = "a", label = "big", value = 100, min = 80, max = 120 },
        { series = "a", label = "half", value = 50 },
        { series = "a", label = "none", why = "not run" },
      } } } }
    wellformed(doc)
    assert.truthy(has_text(doc, "T <&>"))
    assert.truthy(doc:find("T &lt;&amp;&gt;", 1, true))
    local big, half = bar_titled(doc, "big:"), bar_titled(doc, "half:")
    assert.are.equal(big.x, half.x)
    assert.is_true(math.abs(big.w / half.w - 2) < 0.01)
    assert.are.equal("big: 100 (80.0–120) jobs/s", big.title)
    assert.truthy(has_text(doc, "n/a: not run"))
    -- the whisker: a line from min to max at the bar's height
    assert.truthy(doc:find("<line[^>]*stroke=\"#222222\"/>"))
  end)

  it("places bars by decades on a log axis", function()
    local doc = svg.bars{ title = "log", unit = "ms", log = true,
      groups = { { bars = { { series = "x", label = "ten", value = 10 }, { series = "x", label = "thousand", value = 1000 } } } } }
    wellformed(doc)
    local ten, thousand = bar_titled(doc, "ten:"), bar_titled(doc, "thousand:")
    -- the axis runs from 1 to 1000 (the smallest bar keeps a length):
    -- ten is a third of thousand
    assert.truthy(has_text(doc, "1") and has_text(doc, "10") and has_text(doc, "100") and has_text(doc, "1k"))
    assert.truthy(has_text(doc, "ms (log scale)"))
    assert.is_true(thousand.w > 400)
    assert.is_true(math.abs(thousand.w / ten.w - 3) < 0.01)
  end)

  it("returns nil when no bar has a value", function()
    assert.is_nil(svg.bars{ title = "t", groups = { { bars = { { label = "x", why = "not run" } } } } })
    assert.is_nil(svg.stacked{ title = "t", buckets = {}, rows = {} })
  end)
end)

describe("bench report charts", function()
  local list
  setup(function() list = report.charts(results()) end)

  it("draws every chart the results allow, well-formed", function()
    local files = {}
    for _, c in ipairs(list) do files[#files + 1] = c.file; wellformed(c.svg) end
    assert.are.same({ "b1-throughput.svg", "b1-create.svg", "b2-lateness.svg", "b2-hist.svg",
                      "b2x-lateness.svg", "b2x-hist.svg", "b6-scaling.svg" }, files)
  end)

  it("B1 puts each store's chronis bar beside its peer, with min-max", function()
    local doc = chart(list, "b1-throughput.svg").svg
    for _, s in ipairs{ "memory", "SQLite", "Redis", "PostgreSQL", "chronis", "BullMQ", "APScheduler",
                        "graphile-worker", "jobs/s (log scale)" } do
      assert.truthy(has_text(doc, s), s)
    end
    local c = bar_titled(doc, "chronis, Redis: ")
    local p = bar_titled(doc, "BullMQ, Redis: ")
    assert.are.equal("chronis, Redis: 45,918 (40,000–50,000) jobs/s", c.title)
    assert.are.equal("BullMQ, Redis: 3459 (3000–4000) jobs/s", p.title)
    -- log axis from 1k to 1M: log10(45918 / 3459) of 3 decades
    assert.is_true(math.abs((c.w - p.w) / (c.w / math.log(45.918, 10)) - math.log(45918 / 3459, 10)) < 0.02)
    assert.truthy(has_text(doc, "45,918"))
    -- the failed peer row says why instead of drawing a bar
    assert.truthy(has_text(doc, "n/a: error: exit 1 <boom>"))
    local cr = chart(list, "b1-create.svg").svg
    assert.are.equal("chronis, memory: 1,200,000 created/s", bar_titled(cr, "chronis, memory: ").title)
  end)

  it("B2 shows p50, p99 and max of every row, and the histogram of the rows that have one", function()
    local doc = chart(list, "b2-lateness.svg").svg
    assert.truthy(has_text(doc, "chronis memory") and has_text(doc, "BullMQ redis"))
    assert.are.equal("p99, chronis memory: 3.20 (3.00–4.00) ms", bar_titled(doc, "p99, chronis memory").title)
    assert.are.equal("max, BullMQ redis: 102 ms", bar_titled(doc, "max, BullMQ redis").title)
    local h = chart(list, "b2-hist.svg").svg
    assert.truthy(has_text(h, "chronis memory"))
    assert.is_false(has_text(h, "BullMQ redis"))
    for _, l in ipairs{ "<1 ms", "1–2 ms", "2–5 ms", "500–1000 ms", "≥1000 ms", "1,000 runs" } do
      assert.truthy(has_text(h, l), l)
    end
    local a = bar_titled(h, "chronis memory: <1 ms: ")
    local b = bar_titled(h, "chronis memory: 1–2 ms: ")
    assert.are.equal("chronis memory: 1–2 ms: 300 runs (30.0 %)", b.title)
    assert.is_true(math.abs(a.w / b.w - 500 / 300) < 0.01)
    assert.is_true(math.abs(b.x - (a.x + a.w)) < 0.2)
    assert.truthy(has_text(h, "50%") and has_text(h, "30%"))
    local x = chart(list, "b2x-hist.svg").svg
    assert.are.equal("chronis redis: ≥1000 ms: 4 runs (80.0 %)", bar_titled(x, "chronis redis: ≥1000 ms").title)
  end)

  it("B6 groups system, store and variant with one bar per concurrency", function()
    local doc = chart(list, "b6-scaling.svg").svg
    for _, s in ipairs{ "chronis memory, sleep", "chronis redis, sleep", "BullMQ redis, sleep",
                        "chronis memory, http", "BullMQ redis, http", "1,000 concurrent", "10,000 concurrent" } do
      assert.truthy(has_text(doc, s), s)
    end
    assert.are.equal("10,000 concurrent, chronis memory, sleep: 120,000 jobs/s",
      bar_titled(doc, "10,000 concurrent, chronis memory, sleep").title)
    local lo = bar_titled(doc, "1,000 concurrent, chronis memory, sleep")
    local hi = bar_titled(doc, "10,000 concurrent, chronis memory, sleep")
    assert.is_true(lo.w > hi.w)
    assert.truthy(has_text(doc, "n/a: error: timed out"))
  end)

  it("writes the files, removes a chart that is no longer drawn, and the page embeds them", function()
    local dir = os.tmpname()
    os.remove(dir)
    finally(function() os.execute("rm -rf '" .. dir .. "'") end)
    os.execute("mkdir -p '" .. dir .. "'")
    U.write(dir .. "/b6-scaling.svg", "stale")
    local r = results()
    table.remove(r.scenarios) -- no B6
    local charts = report.charts(r)
    report.write_charts(dir, charts)
    assert.are.equal(chart(charts, "b1-throughput.svg").svg, U.read(dir .. "/b1-throughput.svg"))
    assert.is_nil(U.read(dir .. "/b6-scaling.svg"))
    local md = report.markdown(r, false, { rel = "bench", list = charts })
    assert.truthy(md:find("![B1 jobs/s per store, chronis against its peer](bench/b1-throughput.svg)", 1, true))
    assert.truthy(md:find("(bench/b2x-hist.svg)", 1, true))
    -- below its own table: the B2 histogram comes after the B2 heading, before B2X's
    local b2, img, b2x = md:find("### B2 steady", 1, true), md:find("(bench/b2-hist.svg)", 1, true),
      md:find("### B2X steady", 1, true)
    assert.is_true(b2 < img and img < b2x)
    assert.is_nil(report.markdown(r, false):find("![", 1, true))
  end)
end)

describe("bench report goals", function()
  local md
  setup(function() md = report.markdown(results(), false) end)
  local function goal(text)
    for line in md:gmatch("[^\n]+") do
      if line:find("| " .. text, 1, true) == 1 then return line end
    end
    error("no goal " .. text .. " in:\n" .. md)
  end

  it("judges the B1 run ratio on the worst run", function()
    assert.are.equal("| B1 run: Redis ≥ 3× BullMQ in every run (smallest ratio of the runs) | min 2.50× (runs 2.50–14.0×) | **no** |",
      goal("B1 run: Redis"))
    assert.truthy(goal("B1 run: PostgreSQL"):find("| n/a: graphile: error: exit 1 <boom> | n/a |", 1, true))
    assert.truthy(goal("B1 run: memory ≥ 500,000 jobs/s"):find("| 600,000 jobs/s | yes |", 1, true))
  end)

  it("judges creation on create/s", function()
    assert.truthy(goal("B1 create: Redis ≥ 1.5× BullMQ"):find("| 2.00 (1.60–2.20)× | yes |", 1, true))
    assert.truthy(goal("B1 create: SQLite ≥ 100,000"):find("| 90,000 jobs/s | **no** |", 1, true))
    assert.truthy(goal("B1 create: memory ≥ 1,000,000"):find("| yes |", 1, true))
  end)

  it("uses B3 tick when measured, else the claim call, and says which", function()
    assert.truthy(goal("B3 memory: engine poll"):find("`tick`: µs per engine poll) | 150 µs | **no** |", 1, true))
    assert.truthy(goal("B3 redis: poll with nothing due"):find("`tick` not measured", 1, true))
    assert.truthy(goal("B3 redis: poll with nothing due"):find("| 80.0 µs | yes |", 1, true))
    assert.truthy(goal("B3 sqlite"):find("| n/a: chronis-sqlite not run | n/a |", 1, true))
  end)

  it("reads B2X and B6 from their rows", function()
    assert.truthy(goal("B2X redis p99"):find("| 25.0 ms | **no** |", 1, true))
    assert.truthy(goal("B2X redis: zero missed"):find("| 0 missed + 1 doubled (worst run) | **no** |", 1, true))
    assert.truthy(goal("B2 memory: no run missed"):find("| 0 missed + 0 doubled (worst run) | yes |", 1, true))
    -- the median run had no duplicate, the worst had 2
    assert.truthy(goal("B5 redis: zero duplicates"):find("| 2 duplicates + 0 lost (worst run) | **no** |", 1, true))
    assert.truthy(goal("B2X memory p99"):find("| n/a: chronis-memory not run | n/a |", 1, true))
    assert.truthy(goal("B6 sleep, 10,000 concurrent: memory"):find("| 120,000 jobs/s | yes |", 1, true))
    assert.truthy(goal("B6 http, 10,000 concurrent: memory"):find("| 80,000 jobs/s | **no** |", 1, true))
    assert.truthy(goal("B6 sleep, 10,000 concurrent: Redis"):find("| 3.00× (of the medians) | yes |", 1, true))
    assert.truthy(goal("B6 http, 10,000 concurrent: Redis"):find("| n/a: chronis-redis-http-10000 not run | n/a |", 1, true))
    assert.truthy(goal("B6 memory sleep: KiB"):find("| 2.00 → 2.50 KiB (1.25×) | yes |", 1, true))
    assert.truthy(goal("B6 memory http: KiB"):find("| 4.00 → 8.00 KiB (2.00×) | **no** |", 1, true))
    assert.truthy(goal("B4 compiled Lua API"):find("| n/a: B4 not run | n/a |", 1, true))
  end)
end)
