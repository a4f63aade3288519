-- The benchmark harness (bench/run.sh starts it from the repository root).
-- Runs every scenario of docs/benchmarks.md against chronis and its peers,
-- each run a child process measured by build/bench/measure (monotonic wall
-- time, CPU seconds and peak RSS from wait4), with a fresh server per
-- scenario, and writes the table.
--
--   lua5.4 bench/harness.lua [--smoke] [--only B1,B4] [--runs N]
--                            [--no-profile] [--out FILE]
--                            [--stores redis,sqlite] [--history-off]
--
-- --smoke: every scenario at about 1 % of its size, one run, no profiles,
-- the report in build/bench/smoke.md; the last line printed is the one-line
-- verdict. Exits non-zero when a run failed: a chronis store that exists in
-- runtime/core/open.c's scheme table, or an installed peer.
-- Charts of the results (SVG) go beside the report: docs/bench/ for a
-- full run, build/bench/svg/ for --smoke.
-- --stores: only the chronis rows of these stores (no peers).
-- --history-off: B1 also runs each chronis store with history=0 in its URL,
-- alternating with the default, and gives the ratio (history on / off).
-- spec/?.lua: bench/lib shares spec/support's server launchers and shell
-- and file helpers (see bench/lib/servers.lua).
package.path = "bench/lib/?.lua;spec/?.lua;" .. package.path
package.cpath = "build/bench/?.so;" .. package.cpath
local U = require "util"
local S = require "servers"
local cronmix = require "cronmix"
local report = require "report"

local opts = { smoke = false, runs = nil, profile = true, only = nil, out = nil, stores = nil,
               history_off = false }
do
  local i = 1
  while i <= #arg do
    local a = arg[i]
    if a == "--smoke" then opts.smoke = true
    elseif a == "--no-profile" then opts.profile = false
    elseif a == "--runs" then i = i + 1; opts.runs = tonumber(arg[i])
    elseif a == "--only" then
      i = i + 1
      opts.only = {}
      for s in arg[i]:gmatch("[^,]+") do opts.only[s:upper()] = true end
    elseif a == "--out" then i = i + 1; opts.out = arg[i]
    elseif a == "--stores" then
      i = i + 1
      opts.stores = {}
      for s in arg[i]:gmatch("[^,]+") do opts.stores[s:lower()] = true end
    elseif a == "--history-off" then opts.history_off = true
    else io.stderr:write("harness: unknown option ", a, "\n"); os.exit(2) end
    i = i + 1
  end
end
if opts.smoke then opts.profile = false end

local SIZE = opts.smoke and {
  runs = 1, b1 = 1000, b1_file = 100, b2_jobs = 300, b2_secs = 2, b2_lead = 0.5,
  b3 = 10000, b3_polls = 20, b3_rounds = 3, b4_secs = 0.05, b5 = 200, b5_lead = 3,
  b7_tenants = 10, b7_jobs = 100, b7_polls = 20,
  b2x_jobs = 300, b2x_secs = 2, b2x_lead = 1, b2x_lead_pg = 2, b6 = 1000, b6_c1 = 100, b6_c2 = 1000,
} or {
  runs = 3, b1 = 100000, b1_file = 2000, b2_jobs = 2000, b2_secs = 30, b2_lead = 3,
  b3 = 1000000, b3_polls = 200, b3_rounds = 20, b4_secs = 2, b5 = 20000, b5_lead = 10,
  b7_tenants = 100, b7_jobs = 1000, b7_polls = 100,
  b2x_jobs = 20000, b2x_secs = 60, b2x_lead = 10, b2x_lead_pg = 15, b6 = 100000, b6_c1 = 1000, b6_c2 = 10000,
}
SIZE.runs = opts.runs or SIZE.runs
-- BENCH_B1=5000 and the like override one size (quick checks of the harness).
for k, v in pairs(SIZE) do
  local e = tonumber(os.getenv("BENCH_" .. k:upper()))
  if e then SIZE[k] = e end
end

local LUA = os.getenv("LUA") or "lua5.4"
local PY = "/usr/bin/python3"
local NODE = "node"
local MEASURE = "build/bench/measure"
local BUILD = "build/bench"
local LOGS = BUILD .. "/logs"
U.sh("mkdir -p " .. LOGS)
U.sh("rm -f " .. LOGS .. "/*.log")

local base_tmp = os.getenv("BENCH_TMP") or (U.sh("test -w /dev/shm") and "/dev/shm" or "/tmp")
local TMP = assert(U.capture("mktemp -d " .. U.q(base_tmp .. "/chronis-bench.XXXXXX")), "mktemp failed")
U.sh("chmod 755 " .. U.q(TMP))
-- bench/run.sh stops the servers in here and removes it if this process
-- is interrupted (Lua cannot catch the signal itself).
U.write(BUILD .. "/tmpdir", TMP .. "\n")

local function log(fmt, ...)
  io.stdout:write(os.date("!%H:%M:%S "), fmt:format(...), "\n")
  io.stdout:flush()
end

-- ---- what is available ----

-- The scheme table of runtime/core/open.c, read from the error that an
-- unknown scheme raises ("... (expected memory:, sqlite:, ...)").
local function chronis_schemes()
  local out = U.capture(LUA .. [[ -e 'package.path="lua/?.lua;lua/?/init.lua;"..package.path
    package.cpath="build/lua/?.so;"..package.cpath
    local c = require "chronis"
    local ok, e = pcall(c.storage.open, "no-such-scheme:")
    print(tostring(e))']]) or ""
  local list = out:match("expected ([^)]*)")
  local set, names = {}, {}
  for s in (list or ""):gmatch("([%w_]+):") do set[s] = true; names[#names + 1] = s end
  return set, names, out
end

local schemes, scheme_names, scheme_raw = chronis_schemes()
if #scheme_names == 0 then
  io.stderr:write("harness: cannot load chronis (build/lua/chronis/core.so): ", scheme_raw, "\n",
                  "run 'make all' first\n")
  os.exit(1)
end

local peers = {
  apscheduler = U.sh(PY .. " -c 'import apscheduler, sqlalchemy, pytz' 2>/dev/null"),
  node = U.sh("command -v node >/dev/null") and
         U.exists("bench/peers/node/node_modules/bullmq/package.json") and
         U.exists("bench/peers/node/node_modules/graphile-worker/package.json") and
         U.exists("bench/peers/node/node_modules/croner/package.json"),
}
local peer_why = {
  apscheduler = "python3-apscheduler / python3-sqlalchemy not installed (bench/peers/install.sh installs them)",
  node = "npm peers not installed in bench/peers/node (bench/peers/install.sh runs npm ci)",
}
do
  local f = U.read(BUILD .. "/peers.status")
  if f then
    for k, why in f:gmatch("(%w+)=([^\n]+)") do
      if not peers[k] and why ~= "ok" then peer_why[k] = why end
    end
  end
end

-- Store URLs by scheme; `ctx` holds the scenario's servers and temp dir.
local STORES = {
  memory = { scheme = "memory", url = function() return "memory:" end },
  sqlite = { scheme = "sqlite", url = function(ctx, name) return "sqlite:" .. ctx.dir .. "/" .. name .. ".db" end },
  redis = { scheme = "redis", server = "redis", url = function(ctx) return ctx.redis.fresh() end },
  postgres = { scheme = "postgres", server = "postgres", url = function(ctx, name) return ctx.pg.fresh(name) end },
  file = { scheme = "file", url = function(ctx, name) return "file:" .. ctx.dir .. "/" .. name .. ".json" end },
  lua = { scheme = "lua", url = function(ctx, name)
    return "lua:adapters/file.lua?path=" .. ctx.dir .. "/" .. name .. ".json" end },
}

local function store_available(store)
  local s = STORES[store]
  if not schemes[s.scheme] then
    return false, ("no '%s' scheme in runtime/core/open.c yet (schemes: %s)"):format(
      s.scheme, table.concat(scheme_names, ", "))
  end
  return true
end

-- ---- running one measured process ----

local seq = 0
-- Runs argv under measure; returns a run record {m = OS figures, r = the
-- script's BENCH result, log = path} and an error message or nil.
local function measured(argv, name, timeout, servers)
  seq = seq + 1
  local res = ("%s/m%d.json"):format(TMP, seq)
  local logf = ("%s/%s.log"):format(LOGS, name)
  local cpu0 = {}
  for _, s in ipairs(servers or {}) do cpu0[s] = S.tree_cpu(s.pid) end
  local cmd = ("%s --timeout %d --out %s --log %s -- %s"):format(
    MEASURE, math.ceil(timeout), U.q(res), U.q(logf), U.join(argv))
  U.sh(cmd)
  local srv
  if servers and #servers > 0 then
    U.sleep(0.2) -- backends of the finished client exit and are reaped
    srv = 0
    for _, s in ipairs(servers) do
      local a, b = cpu0[s], S.tree_cpu(s.pid)
      if a and b then srv = srv + (b - a) end
    end
  end
  local m = U.read(res)
  m = m and U.json.decode(m)
  local text = U.read(logf) or ""
  local r = U.bench_line(text)
  local rec = { m = m, r = r, log = logf, srv = srv, cmd = U.join(argv) }
  if not m then return rec, "measure failed: " .. cmd end
  if m.timeout then return rec, ("timed out after %d s (log %s)"):format(math.ceil(timeout), logf) end
  if m.exit ~= 0 then
    return rec, ("exit %s%s (log %s): %s"):format(m.exit, m.signal ~= 0 and (" signal " .. m.signal) or "",
      logf, U.tail(text, 6):gsub("\n", " | "))
  end
  if not r then return rec, "no BENCH line in " .. logf end
  return rec, nil
end

-- ---- scenarios ----

local scenarios = {}
local function scenario(t) scenarios[#scenarios + 1] = t; return t end

local function chronis_row(key, store, t)
  t.key, t.system, t.store, t.kind = key, "chronis", store, "chronis"
  t.needs_store = store
  t.server = STORES[store] and STORES[store].server
  return t
end
local function peer_row(key, system, store, peer, t)
  t.key, t.system, t.store, t.kind, t.peer = key, system, store, "peer", peer
  return t
end

local function need(cond, msg) if not cond then return msg end end

-- B1 burst
local B1 = scenario{
  id = "B1", title = "B1 burst",
  what = ("%s one-shot jobs due now, no-op handler, one process; jobs/s from the first run to the last completion (creation timed apart)"):format(U.num(SIZE.b1)),
  figures = {
    { key = "jobs_s", label = "jobs/s", get = function(x) return x.r.jobs_per_s end },
    { key = "create_s", label = "create/s", get = function(x) return x.r.create_per_s end },
    { key = "cpu", label = "CPU s (process)", get = function(x) return x.m.cpu_s end },
    { key = "srv", label = "CPU s (server)", get = function(x) return x.srv end },
    { key = "rss", label = "peak RSS MiB", get = function(x) return x.m.maxrss_kb / 1024 end },
    { key = "wall", label = "wall s", get = function(x) return x.m.wall_s end },
  },
  rows = {},
  ratios = {
    { "chronis-memory", "aps-memory", "jobs_s", "chronis memory / APScheduler memory" },
    { "chronis-sqlite", "aps-sqlite", "jobs_s", "chronis SQLite / APScheduler SQLite" },
    { "chronis-redis", "bullmq", "jobs_s", "chronis Redis / BullMQ" },
    { "chronis-postgres", "graphile", "jobs_s", "chronis PostgreSQL / graphile-worker" },
    { "chronis-memory", "chronis-memory-nohist", "jobs_s", "chronis memory, history on / off" },
    { "chronis-redis", "chronis-redis-nohist", "jobs_s", "chronis Redis, history on / off" },
    { "chronis-memory-http", "chronis-memory", "jobs_s", "chronis memory, HTTP server polled every 100 ms / off" },
    { "chronis-sqlite-http", "chronis-sqlite", "jobs_s", "chronis SQLite, HTTP server polled every 100 ms / off" },
    { "chronis-redis", "bullmq", "create_s", "creation, chronis Redis / BullMQ addBulk" },
    { "chronis-postgres", "graphile", "create_s", "creation, chronis PostgreSQL / graphile-worker addJobs" },
  },
}
local function b1_validate(n)
  return function(r)
    if r.done ~= n then return ("ran %s of %d jobs"):format(tostring(r.done), n) end
    if (r.left or 0) ~= 0 then return ("%d jobs left in the store"):format(r.left) end
  end
end
for _, st in ipairs{ "memory", "sqlite", "redis", "postgres", "file", "lua" } do
  local n = (st == "file" or st == "lua") and SIZE.b1_file or SIZE.b1
  B1.rows[#B1.rows + 1] = chronis_row("chronis-" .. st, st, {
    n = n, extra = (st == "file" or st == "lua") and ("Lua file store at " .. U.num(n) .. " jobs") or nil,
    timeout = 900,
    argv = function(ctx, run)
      return { LUA, "bench/chronis/b1_burst.lua", n, STORES[st].url(ctx, "b1_" .. st .. "_" .. run), 100, 1000 }
    end,
    validate = b1_validate(n),
  })
end
-- Run history off (`history=0`): what keeping a record of every run costs,
-- measured beside the default rows above.
for _, st in ipairs{ "memory", "redis" } do
  B1.rows[#B1.rows + 1] = chronis_row("chronis-" .. st .. "-nohist", st, {
    n = SIZE.b1, extra = "run history off (history=0)", timeout = 900,
    argv = function(ctx, run)
      local url = STORES[st].url(ctx, "b1_" .. st .. "_nohist_" .. run)
      return { LUA, "bench/chronis/b1_burst.lua", SIZE.b1, url .. (url:find("?", 1, true) and "&" or "?") .. "history=0", 100, 1000 }
    end,
    validate = b1_validate(SIZE.b1),
  })
end
-- The HTTP server on, with a client polling the API every 100 ms (an open
-- dashboard): what serving costs the run, beside the default rows.
for _, st in ipairs{ "memory", "sqlite" } do
  B1.rows[#B1.rows + 1] = chronis_row("chronis-" .. st .. "-http", st, {
    n = SIZE.b1, extra = "HTTP server on, polled every 100 ms", timeout = 900,
    argv = function(ctx, run)
      return { LUA, "bench/chronis/b1_burst.lua", SIZE.b1, STORES[st].url(ctx, "b1_" .. st .. "_http_" .. run), 100, 1000, "http" }
    end,
    validate = function(r)
      local bad = b1_validate(SIZE.b1)(r)
      if bad then return bad end
      if not r.http_polls or r.http_polls < 1 then return "the HTTP poller got no answer" end
    end,
  })
end
-- --history-off: the other chronis rows with history=0 too, row after row
-- with the default, so that both see the same load.
if opts.history_off then
  local rows = B1.rows
  B1.rows = {}
  for _, row in ipairs(rows) do
    B1.rows[#B1.rows + 1] = row
    local st = row.store
    if not row.key:find("-nohist", 1, true) and st ~= "memory" and st ~= "redis" then
      B1.rows[#B1.rows + 1] = chronis_row(row.key .. "-nohist", st, {
        n = row.n, extra = (row.extra and row.extra .. ", " or "") .. "history=0", timeout = row.timeout,
        argv = function(ctx, run)
          local url = STORES[st].url(ctx, "b1_" .. st .. "_nohist_" .. run)
          url = url .. (url:find("?", 1, true) and "&" or "?") .. "history=0"
          return { LUA, "bench/chronis/b1_burst.lua", row.n, url, 100, 1000 }
        end,
        validate = row.validate,
      })
      if not opts.stores or opts.stores[st] then
        B1.ratios[#B1.ratios + 1] = { row.key, row.key .. "-nohist", "jobs_s",
          ("chronis %s: history on / off (history=0)"):format(st) }
      end
    end
  end
end
B1.rows[#B1.rows + 1] = peer_row("aps-memory", "APScheduler", "memory", "apscheduler", {
  n = SIZE.b1, timeout = 900,
  argv = function() return { PY, "bench/peers/apscheduler/b1_burst.py", SIZE.b1, "memory", 10 } end,
  validate = b1_validate(SIZE.b1),
})
B1.rows[#B1.rows + 1] = peer_row("aps-sqlite", "APScheduler", "sqlite", "apscheduler", {
  n = SIZE.b1, timeout = 1800,
  argv = function(ctx, run)
    return { PY, "bench/peers/apscheduler/b1_burst.py", SIZE.b1, "sqlite:///" .. ctx.dir .. "/aps_b1_" .. run .. ".db", 10 }
  end,
  validate = b1_validate(SIZE.b1),
})
B1.rows[#B1.rows + 1] = peer_row("bullmq", "BullMQ", "redis", "node", {
  n = SIZE.b1, timeout = 900, server = "redis",
  argv = function(ctx) ctx.redis.fresh(); return { NODE, "bench/peers/node/b1_bullmq.js", SIZE.b1, ctx.redis.port, 100 } end,
  validate = b1_validate(SIZE.b1),
})
B1.rows[#B1.rows + 1] = peer_row("graphile", "graphile-worker", "postgres", "node", {
  n = SIZE.b1, timeout = 900, server = "postgres",
  argv = function(ctx) return { NODE, "bench/peers/node/b1_graphile.js", SIZE.b1, ctx.pg.fresh("graphile"), 10 } end,
  validate = b1_validate(SIZE.b1),
})

-- B2 steady
local B2 = scenario{
  id = "B2", title = "B2 steady",
  what = ("%s interval jobs every 1 s, phases spread over the second, for %d s (%s expected runs)"):format(
    U.num(SIZE.b2_jobs), SIZE.b2_secs, U.num(SIZE.b2_jobs * SIZE.b2_secs)),
  figures = {
    { key = "p50", label = "lateness p50 ms", get = function(x) return x.r.p50_ms end },
    { key = "p99", label = "p99 ms", get = function(x) return x.r.p99_ms end },
    { key = "max", label = "max ms", get = function(x) return x.r.max_ms end },
    { key = "cpu1k", label = "CPU s / 1,000 runs", get = function(x) return x.r.cpu_per_1000 end },
    { key = "srv1k", label = "server CPU s / 1,000 runs", get = function(x)
      return x.srv and x.srv / (x.r.expected / 1000) end },
    { key = "missed", label = "missed", get = function(x) return x.r.missed end },
    { key = "doubled", label = "doubled", get = function(x) return x.r.doubled end },
    { key = "off", label = "off-grid", get = function(x) return x.r.off_grid end },
  },
  rows = {},
  ratios = {
    { "chronis-memory", "aps-memory", "p99", "p99 lateness, chronis memory / APScheduler memory (lower is better)" },
    { "chronis-redis", "bullmq", "p99", "p99 lateness, chronis Redis / BullMQ (lower is better)" },
    { "chronis-memory", "aps-memory", "cpu1k", "CPU per run, chronis memory / APScheduler memory (lower is better)" },
  },
}
local function b2_validate(r)
  if (r.runs or 0) == 0 then return "no run at all" end
end
local b2_timeout = SIZE.b2_lead + SIZE.b2_secs + 120
for _, st in ipairs{ "memory", "sqlite", "redis", "postgres" } do
  B2.rows[#B2.rows + 1] = chronis_row("chronis-" .. st, st, {
    timeout = b2_timeout,
    argv = function(ctx, run)
      return { LUA, "bench/chronis/b2_steady.lua", SIZE.b2_jobs, SIZE.b2_secs,
               STORES[st].url(ctx, "b2_" .. st .. "_" .. run), SIZE.b2_lead, 100, 1000 }
    end,
    validate = b2_validate,
  })
end
B2.rows[#B2.rows + 1] = peer_row("aps-memory", "APScheduler", "memory", "apscheduler", {
  timeout = b2_timeout,
  argv = function() return { PY, "bench/peers/apscheduler/b2_steady.py", SIZE.b2_jobs, SIZE.b2_secs, "memory", SIZE.b2_lead, 10 } end,
  validate = b2_validate,
})
B2.rows[#B2.rows + 1] = peer_row("aps-sqlite", "APScheduler", "sqlite", "apscheduler", {
  timeout = b2_timeout,
  argv = function(ctx, run)
    -- Its 2,000 inserts, one commit each, can take longer than the lead
    -- of the others on a loaded machine: it gets more time to start.
    return { PY, "bench/peers/apscheduler/b2_steady.py", SIZE.b2_jobs, SIZE.b2_secs,
             "sqlite:///" .. ctx.dir .. "/aps_b2_" .. run .. ".db", SIZE.b2_lead * 4, 10 }
  end,
  validate = b2_validate,
})
B2.rows[#B2.rows + 1] = peer_row("bullmq", "BullMQ", "redis", "node", {
  timeout = b2_timeout, server = "redis",
  argv = function(ctx)
    ctx.redis.fresh()
    return { NODE, "bench/peers/node/b2_bullmq.js", SIZE.b2_jobs, SIZE.b2_secs, ctx.redis.port, SIZE.b2_lead, 100 }
  end,
  validate = b2_validate,
})

-- B2X steady at ten times B2's load: B2's script and figures, chronis only.
-- Creation (one create per job) happens before T0, inside the lead time:
-- PostgreSQL, a round trip per job, gets a longer one.
local B2X = scenario{
  id = "B2X", title = "B2X steady ×10",
  what = ("%s interval jobs every 1 s, phases spread over the second, for %d s (%s expected runs), chronis only"):format(
    U.num(SIZE.b2x_jobs), SIZE.b2x_secs, U.num(SIZE.b2x_jobs * SIZE.b2x_secs)),
  figures = B2.figures,
  rows = {},
}
for _, st in ipairs{ "memory", "sqlite", "redis", "postgres" } do
  local lead = st == "postgres" and SIZE.b2x_lead_pg or SIZE.b2x_lead
  B2X.rows[#B2X.rows + 1] = chronis_row("chronis-" .. st, st, {
    -- room for stop() after a saturated window and the tally of every slot
    timeout = lead + SIZE.b2x_secs * 3 + 180,
    argv = function(ctx, run)
      return { LUA, "bench/chronis/b2_steady.lua", SIZE.b2x_jobs, SIZE.b2x_secs,
               STORES[st].url(ctx, "b2x_" .. st .. "_" .. run), lead, 100, 10000 }
    end,
    validate = function(r)
      if (r.runs or 0) == 0 then return "no run at all" end
      if r.late_create then return ("creating %d jobs took longer than the %g s lead"):format(SIZE.b2x_jobs, lead) end
    end,
  })
end

-- B3 scale
local B3 = scenario{
  id = "B3", title = "B3 scale",
  what = ("%s jobs scheduled in the far future; memory per job, and one store call of the engine's poll timed %d times (median of each run)"):format(
    U.num(SIZE.b3), SIZE.b3_polls),
  figures = {
    { key = "bpj", label = "RSS bytes/job", get = function(x) return x.r.bytes_per_job end },
    { key = "empty", label = "claim, none due µs", get = function(x) return x.r.poll_empty.median_us end },
    { key = "due100", label = "claim, 100 due µs", get = function(x) return x.r.claim_100.median_us end },
    { key = "recover", label = "recover leases µs", get = function(x) return x.r.recover_empty.median_us end },
    { key = "nextdue", label = "next_due_time µs", get = function(x) return x.r.next_due.median_us end },
    { key = "tick", label = "engine poll, none due µs", get = function(x) return x.r.tick_empty and x.r.tick_empty.median_us end },
    { key = "create", label = "create/s", get = function(x) return x.r.create_per_s end },
    { key = "rss", label = "peak RSS MiB", get = function(x) return x.m.maxrss_kb / 1024 end },
  },
  rows = {},
  note = "Persistent stores (SQLite, Redis, PostgreSQL) keep their jobs across the runs of the scenario: the first run creates them, later runs measure the same data. Memory per job is meaningful for the memory store only (the others keep jobs in the server or file).",
}
for _, st in ipairs{ "memory", "sqlite", "redis", "postgres" } do
  B3.rows[#B3.rows + 1] = chronis_row("chronis-" .. st, st, {
    timeout = 3600,
    argv = function(ctx)
      -- One store for all runs (see the note); created by the first.
      ctx.b3 = ctx.b3 or {}
      local url = ctx.b3[st]
      if not url then
        if st == "redis" then url = ctx.redis.fresh()
        elseif st == "postgres" then url = ctx.pg.fresh("b3")
        else url = STORES[st].url(ctx, "b3_" .. st) end
        ctx.b3[st] = url
      end
      return { LUA, "bench/chronis/b3_scale.lua", SIZE.b3, url, SIZE.b3_polls, SIZE.b3_rounds }
    end,
    validate = function(r)
      if r.count < SIZE.b3 then return ("store holds %d jobs, expected %d"):format(r.count, SIZE.b3) end
      if r.short_claims ~= 0 then return ("%d claims of 100 due jobs came back short"):format(r.short_claims) end
      if r.claimed_when_empty ~= 0 then return ("claimed %d far-future jobs"):format(r.claimed_when_empty) end
    end,
  })
end

-- B4 cron
local MIX = "bench/data/cron_mix.txt"
local B4 = scenario{
  id = "B4", title = "B4 cron",
  what = "next-fire computations per second over 20 expressions × 3 zones × 12 starts × 5 chained times (bench/data/cron_mix.txt)",
  figures = {
    { key = "per_s", label = "next-fire/s", get = function(x) return x.r.per_s end },
    { key = "calls", label = "calls timed", get = function(x) return x.r.calls end },
  },
  rows = {
    chronis_row("chronis-lua", "memory", { label = "chronis.cron.next (Lua API, parses per call)", timeout = 120,
      argv = function(ctx, run) return { LUA, "bench/chronis/b4_cron.lua", MIX, ctx.dir .. "/b4_lua_" .. run .. ".txt", SIZE.b4_secs } end }),
    chronis_row("chronis-lua-compiled", "memory", { label = "chronis.cron.compile(...):next (Lua API, compiled once)", timeout = 120,
      argv = function(ctx, run) return { LUA, "bench/chronis/b4_cron.lua", MIX, ctx.dir .. "/b4_luac_" .. run .. ".txt", SIZE.b4_secs, "compiled" } end }),
    chronis_row("chronis-c", "memory", { label = "chr_cron_next (C, compiled once)", timeout = 120,
      argv = function(ctx, run) return { BUILD .. "/cron_tight", MIX, ctx.dir .. "/b4_c_" .. run .. ".txt", SIZE.b4_secs } end }),
    peer_row("aps", "APScheduler", "—", "apscheduler", { label = "CronTrigger.get_next_fire_time", timeout = 300,
      argv = function(ctx, run) return { PY, "bench/peers/apscheduler/b4_cron.py", MIX, ctx.dir .. "/b4_aps_" .. run .. ".txt", SIZE.b4_secs } end }),
    peer_row("croner", "croner", "—", "node", { label = "Cron#nextRun", timeout = 300,
      argv = function(ctx, run) return { NODE, "bench/peers/node/b4_croner.js", MIX, ctx.dir .. "/b4_croner_" .. run .. ".txt", SIZE.b4_secs } end }),
  },
  ratios = {
    { "chronis-lua", "aps", "per_s", "chronis Lua API / APScheduler" },
    { "chronis-lua-compiled", "aps", "per_s", "chronis Lua API, compiled / APScheduler" },
    { "chronis-c", "aps", "per_s", "chronis C / APScheduler" },
    { "chronis-lua", "croner", "per_s", "chronis Lua API / croner" },
    { "chronis-c", "croner", "per_s", "chronis C / croner" },
  },
}
for _, r in ipairs(B4.rows) do r.store = "—" end

-- B5 many processes
local B5 = scenario{
  id = "B5", title = "B5 many processes",
  what = ("4 chronis processes on one store, %s one-shot jobs due at once; jobs/s from the first run (any process) to the last; duplicates and lost runs counted from the record each run writes"):format(U.num(SIZE.b5)),
  figures = {
    { key = "jobs_s", label = "jobs/s (4 processes)", get = function(x) return x.r.jobs_per_s end },
    { key = "dup", label = "duplicates", get = function(x) return x.r.duplicates end },
    { key = "lost", label = "lost", get = function(x) return x.r.lost end },
    { key = "left", label = "left in store", get = function(x) return x.r.left end },
    { key = "cpu", label = "CPU s (4 processes)", get = function(x) return x.r.cpu_s end },
    { key = "srv", label = "CPU s (server)", get = function(x) return x.srv end },
    { key = "spread", label = "runs per process (min/max)", get = function(x) return x.r.spread end, text = true },
  },
  rows = {},
}
for _, st in ipairs{ "redis", "postgres", "sqlite" } do
  B5.rows[#B5.rows + 1] = chronis_row("chronis-" .. st, st, {
    extra = st == "sqlite" and "SQLite: 4 processes on one file" or nil })
end

-- B6 I/O-bound handlers
-- The smoke run scales the concurrencies down too: 1,000 new connections
-- at once to the HTTP target take seconds to be accepted.
local B6_CONC = { SIZE.b6_c1, SIZE.b6_c2 }
local B6_WAIT_MS = 50
local B6 = scenario{
  id = "B6", title = "B6 I/O-bound handlers",
  what = ("%s one-shot jobs due now whose handler waits %d ms (a sleep, or a GET to a local server that answers after %d ms), %s handlers at once; jobs/s from the first handler start to the last completion, and RSS per waiting handler"):format(
    U.num(SIZE.b6), B6_WAIT_MS, B6_WAIT_MS, table.concat((function()
      local t = {}
      for i, c in ipairs(B6_CONC) do t[i] = U.num(c) end
      return t
    end)(), " or ")),
  http_target = B6_WAIT_MS,
  figures = {
    { key = "jobs_s", label = "jobs/s", get = function(x) return x.r.jobs_per_s end },
    { key = "kib_per_handler", label = "KiB / waiting handler", get = function(x) return x.r.kib_per_handler end },
    { key = "peak", label = "most waiting at once", get = function(x) return x.r.peak_waiting end },
    { key = "cpu", label = "CPU s (process)", get = function(x) return x.m.cpu_s end },
    { key = "rss", label = "peak RSS MiB", get = function(x) return x.m.maxrss_kb / 1024 end },
    { key = "wall", label = "wall s", get = function(x) return x.m.wall_s end },
  },
  rows = {},
  ratios = {},
  note = ("KiB / waiting handler: VmRSS sampled as the number of handlers waiting at once climbs (the last sample at the concurrency, when reached) minus VmRSS before the run phase, divided by the handlers waiting at that sample. The HTTP variant's server is bench/peers/node/http_target.js (keep-alive, answers after %d ms), one for the whole scenario, the same for every system. APScheduler runs a ThreadPoolExecutor with as many threads as the concurrency; urllib opens a connection per request."):format(B6_WAIT_MS),
}
local function b6_validate(n)
  return function(r)
    if (r.errors or 0) ~= 0 then return ("%d handlers failed, first: %s"):format(r.errors, tostring(r.first_error)) end
    if r.done ~= n then return ("ran %s of %d jobs"):format(tostring(r.done), n) end
    if (r.left or 0) ~= 0 then return ("%d jobs left in the store"):format(r.left) end
    if not r.kib_per_handler then return "no RSS sample while handlers waited" end
  end
end
for _, variant in ipairs{ "sleep", "http" } do
  for _, conc in ipairs(B6_CONC) do
    local suffix = "-" .. variant .. "-" .. conc
    local params = { variant = variant, concurrency = conc }
    local label = ("%s, %s at once"):format(variant, U.num(conc))
    local function target(ctx) return variant == "http" and ctx.http.url or nil end
    for _, st in ipairs{ "memory", "redis" } do
      B6.rows[#B6.rows + 1] = chronis_row("chronis-" .. st .. suffix, st, {
        label = label, params = params, timeout = 1800, http = variant == "http",
        argv = function(ctx, run)
          return { LUA, "bench/chronis/b6_io.lua", SIZE.b6, STORES[st].url(ctx, "b6_" .. st .. "_" .. run),
                   variant, conc, target(ctx) }
        end,
        validate = b6_validate(SIZE.b6),
      })
    end
    B6.rows[#B6.rows + 1] = peer_row("bullmq" .. suffix, "BullMQ", "redis", "node", {
      label = label, params = params, timeout = 1800, server = "redis", http = variant == "http",
      argv = function(ctx)
        ctx.redis.fresh()
        return { NODE, "bench/peers/node/b6_bullmq.js", SIZE.b6, ctx.redis.port, variant, conc, target(ctx) }
      end,
      validate = b6_validate(SIZE.b6),
    })
    B6.rows[#B6.rows + 1] = peer_row("aps-memory" .. suffix, "APScheduler", "memory", "apscheduler", {
      label = label, params = params, timeout = 1800, http = variant == "http",
      argv = function(ctx)
        return { PY, "bench/peers/apscheduler/b6_io.py", SIZE.b6, variant, conc, target(ctx) }
      end,
      validate = b6_validate(SIZE.b6),
    })
    B6.ratios[#B6.ratios + 1] = { "chronis-redis" .. suffix, "bullmq" .. suffix, "jobs_s",
      ("chronis Redis / BullMQ, %s"):format(label) }
    B6.ratios[#B6.ratios + 1] = { "chronis-memory" .. suffix, "aps-memory" .. suffix, "jobs_s",
      ("chronis memory / APScheduler, %s"):format(label) }
  end
end

-- B7 tenants
local B7 = scenario{
  id = "B7", title = "B7 tenants",
  what = ("%d tenants × %s jobs (metadata.tenant_id) in the far future; the store calls of a multi-tenant deployment, each timed %d times (median of each run), without and with the store's index_metadata=tenant_id"):format(
    SIZE.b7_tenants, U.num(SIZE.b7_jobs), SIZE.b7_polls),
  figures = {
    { key = "tq", label = "tenant query µs", get = function(x) return x.r.tenant_query.median_us end },
    { key = "sq", label = "status query µs", get = function(x) return x.r.status_query.median_us end },
    { key = "poll", label = "scoped claim, none due µs", get = function(x) return x.r.scoped_poll.median_us end },
    { key = "claim", label = "scoped claim, 10 due µs", get = function(x) return x.r.scoped_claim.median_us end },
    { key = "create", label = "create/s", get = function(x) return x.r.create_per_s end },
  },
  rows = {},
  ratios = {},
  note = "Tenant query: query_jobs{metadata.tenant_id = t, status = scheduled}, limit 100; status query: query_jobs{status = scheduled}, limit 100, the yardstick a tenant query should match. Scoped claims: claim_due_jobs with filters = {metadata.tenant_id = t}, as a tenant-scoped scheduler makes them, while every other tenant has a job due. Ratios: the time without the index over the time with it (the index's speed-up). The JSON file store has no index: it is the unindexed baseline of a store written in Lua, run at the smoke size only (it rewrites its file on every create).",
}
local function with_opt(url, opt)
  return url .. (url:find("?", 1, true) and "&" or "?") .. opt
end
-- the stores whose URL takes index_metadata
local B7_INDEXED = { memory = true, sqlite = true, redis = true, postgres = true }
-- The JSON file store rewrites its file on every create: 100,000 creates
-- take hours, so it runs at the smoke size only.
local B7_STORES = { "memory", "sqlite", "redis", "postgres" }
if opts.smoke then B7_STORES[#B7_STORES + 1] = "file" end
for _, st in ipairs(B7_STORES) do
  for _, idx in ipairs(B7_INDEXED[st] and { false, true } or { false }) do
    local key = "chronis-" .. st .. (idx and "-idx" or "")
    B7.rows[#B7.rows + 1] = chronis_row(key, st, {
      extra = idx and "index_metadata=tenant_id" or "no index", timeout = 1800,
      argv = function(ctx, run)
        local url = STORES[st].url(ctx, "b7_" .. st .. (idx and "_idx_" or "_") .. run)
        if idx then url = with_opt(url, "index_metadata=tenant_id") end
        return { LUA, "bench/chronis/b7_tenants.lua", SIZE.b7_tenants, SIZE.b7_jobs, url, SIZE.b7_polls }
      end,
      validate = function(r)
        if r.errors ~= 0 then return ("%d wrong results, first: %s"):format(r.errors, r.first_error) end
      end,
    })
    if idx then
      B7.ratios[#B7.ratios + 1] = { "chronis-" .. st, key, "tq", st .. ": tenant query, no index / index" }
      B7.ratios[#B7.ratios + 1] = { "chronis-" .. st, key, "poll", st .. ": scoped claim (none due), no index / index" }
    end
  end
end

-- ---- running a scenario ----

local results = { scenarios = {}, errors = {}, skipped = {}, ran = 0 }

local function row_unavailable(row)
  if row.kind == "chronis" then
    local ok, why = store_available(row.needs_store)
    if not ok then return why end
  else
    if not peers[row.peer] then return peer_why[row.peer] end
  end
end

local function start_servers(sc, ctx)
  local need_redis, need_pg = false, false
  for _, row in ipairs(sc.rows) do
    if not row.na then
      if row.server == "redis" then need_redis = true end
      if row.server == "postgres" then need_pg = true end
    end
  end
  if need_redis then ctx.redis = S.start_redis(ctx.dir .. "/redis") end
  if need_pg then ctx.pg = S.start_postgres(ctx.dir .. "/pg") end
  if sc.http_target then
    local ok, e = pcall(S.start_http_target, ctx.dir .. "/http", sc.http_target)
    if ok then ctx.http = e else ctx.http_err = tostring(e) end
  end
  ctx.servers = {}
  if ctx.redis then ctx.servers[#ctx.servers + 1] = ctx.redis end
  if ctx.pg then ctx.servers[#ctx.servers + 1] = ctx.pg end
end

local function stop_servers(ctx)
  if ctx.redis then ctx.redis.stop() end
  if ctx.pg then ctx.pg.stop() end
  if ctx.http then ctx.http.stop() end
end

local function server_of(ctx, row)
  if row.server == "redis" then return { ctx.redis } end
  if row.server == "postgres" then return { ctx.pg } end
  return nil
end

local function record_error(sc, row, msg)
  results.errors[#results.errors + 1] = ("%s %s (%s): %s"):format(sc.id, row.system, row.store, msg)
  log("  !! %s", msg)
end

-- B5's run: a seed process, then 4 workers in parallel, each measured.
local function run_b5(sc, row, ctx, run)
  local url = STORES[row.needs_store].url(ctx, "b5_" .. row.needs_store .. "_" .. run)
  local due = (os.time() + SIZE.b5_lead) * 1000000
  local seed, err = measured({ LUA, "bench/chronis/b5_seed.lua", SIZE.b5, url, due, 32 },
    ("%s-%s-seed-r%d"):format(sc.id, row.key, run), 600, server_of(ctx, row))
  if err then return nil, "seed: " .. err end
  if seed.r.late then return nil, ("seed: creating %d jobs took longer than the %d s lead"):format(SIZE.b5, SIZE.b5_lead) end
  local procs, files, res, logs = 4, {}, {}, {}
  local cpu0 = {}
  for _, s in ipairs(server_of(ctx, row) or {}) do cpu0[s] = S.tree_cpu(s.pid) end
  local cmds = {}
  for p = 1, procs do
    files[p] = ("%s/b5_%s_r%d_p%d.txt"):format(ctx.dir, row.key, run, p)
    res[p] = ("%s/b5_%s_r%d_p%d.json"):format(ctx.dir, row.key, run, p)
    logs[p] = ("%s/%s-%s-r%d-p%d.log"):format(LOGS, sc.id, row.key, run, p)
    cmds[p] = ("%s --timeout 600 --out %s --log %s -- %s &"):format(MEASURE, U.q(res[p]), U.q(logs[p]),
      U.join{ LUA, "bench/chronis/b5_worker.lua", url, files[p], 300, 100, 1000 })
  end
  U.sh("(" .. table.concat(cmds, " ") .. " wait)")
  U.sleep(0.2)
  local srv
  for _, s in ipairs(server_of(ctx, row) or {}) do
    local b = S.tree_cpu(s.pid)
    if cpu0[s] and b then srv = (srv or 0) + b - cpu0[s] end
  end
  local first, last, cpu, counts, seen, total, per = nil, nil, 0, {}, {}, 0, {}
  for p = 1, procs do
    local m = U.read(res[p]); m = m and U.json.decode(m)
    local r = U.bench_line(U.read(logs[p]) or "")
    if not m or m.exit ~= 0 or not r then
      return nil, ("worker %d failed (log %s): %s"):format(p, logs[p], U.tail(U.read(logs[p]) or "", 4):gsub("\n", " | "))
    end
    if r.timed_out then return nil, ("worker %d timed out (log %s)"):format(p, logs[p]) end
    cpu = cpu + m.cpu_s
    if r.first_ns and (not first or r.first_ns < first) then first = r.first_ns end
    if r.last_ns and (not last or r.last_ns > last) then last = r.last_ns end
    per[p] = r.runs
    for id in io.lines(files[p]) do
      total = total + 1
      counts[id] = (counts[id] or 0) + 1
    end
  end
  local unique = 0
  for _ in pairs(counts) do unique = unique + 1 end
  local lost = 0
  for i = 1, SIZE.b5 do if not counts["b5_" .. i] then lost = lost + 1 end end
  -- What the store still holds (a job whose run was lost may be left there).
  local left = tonumber(U.capture(LUA .. " -e " .. U.q(
    'package.path="lua/?.lua;lua/?/init.lua;"..package.path package.cpath="build/lua/?.so;"..package.cpath ' ..
    'print(require("chronis").storage.open(' .. ("%q"):format(url) .. '):count_jobs())')))
  table.sort(per)
  local rr = {
    jobs_per_s = first and last and unique / ((last - first) / 1e9) or nil,
    duplicates = total - unique, lost = lost, left = left, cpu_s = cpu,
    spread = ("%d / %d"):format(per[1], per[#per]), runs = total,
  }
  local rec = { r = rr, srv = srv, m = { cpu_s = cpu } }
  local verr
  if rr.duplicates ~= 0 or rr.lost ~= 0 then
    verr = ("%d duplicate and %d lost runs (records in %s)"):format(rr.duplicates, rr.lost, ctx.dir)
  end
  return rec, verr
end

local function run_scenario(sc)
  log("== %s: %s", sc.id, sc.what)
  local ctx = { dir = TMP .. "/" .. sc.id, sc = sc }
  U.sh("mkdir -p " .. U.q(ctx.dir) .. " && chmod 755 " .. U.q(ctx.dir))
  local figs = {}
  for i, f in ipairs(sc.figures) do figs[i] = { key = f.key, label = f.label, text = f.text } end
  local out = { id = sc.id, title = sc.title, what = sc.what, note = sc.note, figures = figs,
                rows = {}, ratios = {}, date = os.date("!%Y-%m-%d %H:%M UTC") }
  results.scenarios[#results.scenarios + 1] = out
  for _, row in ipairs(sc.rows) do
    row.na = row_unavailable(row)
    row.runs = {}
    if row.na then
      log("  %-18s not available: %s", row.key, row.na)
      results.skipped[#results.skipped + 1] = ("%s %s (%s): %s"):format(sc.id, row.system, row.store, row.na)
    end
  end
  local ok, err = pcall(start_servers, sc, ctx)
  if not ok then
    for _, row in ipairs(sc.rows) do
      if not row.na and row.server then
        row.err = "server: " .. tostring(err)
        record_error(sc, row, row.err)
      end
    end
  end
  for _, row in ipairs(sc.rows) do
    if row.http and not row.na and not row.err and not ctx.http then
      row.err = "HTTP target: " .. (ctx.http_err or "not started")
      record_error(sc, row, row.err)
    end
  end
  for run = 1, SIZE.runs do
    for _, row in ipairs(sc.rows) do
      if not row.na and not row.err then
        local rec, e
        if sc.id == "B5" then
          rec, e = run_b5(sc, row, ctx, run)
        else
          local argv = row.argv(ctx, run)
          rec, e = measured(argv, ("%s-%s-r%d"):format(sc.id, row.key, run), row.timeout, server_of(ctx, row))
          if not e and row.validate then e = row.validate(rec.r) end
        end
        results.ran = results.ran + 1
        if rec and rec.r then row.runs[run] = rec end
        if e then
          row.err = e
          record_error(sc, row, e)
        else
          local f1 = sc.figures[1]
          log("  %-18s run %d: %s %s", row.key, run, U.num(f1.get(rec)), f1.label)
        end
      end
    end
  end
  if sc.after then pcall(sc.after, ctx) end
  if sc.profile and opts.profile then sc.profile(ctx) end
  stop_servers(ctx)
  -- Figures: median (min–max) over the runs.
  local byk = {}
  for _, row in ipairs(sc.rows) do
    local o = { key = row.key, system = row.system, store = row.store, label = row.label, extra = row.extra,
                params = row.params,
                status = row.na and ("not available: " .. row.na) or row.err and ("error: " .. row.err) or "ok",
                figures = {}, settings = nil, versions = nil, cmd = nil }
    for _, f in ipairs(sc.figures) do
      local vals, text = {}, nil
      for r = 1, SIZE.runs do
        local rec = row.runs[r]
        if rec then
          local okv, v = pcall(f.get, rec)
          if okv then if f.text then text = v else vals[#vals + 1] = v end end
        end
      end
      o.figures[f.key] = f.text and { text = text } or U.stats(vals)
    end
    -- A lateness histogram (B2, B2X) is summed over the runs: the
    -- distribution of every run measured, like the table's min–max.
    for r = 1, SIZE.runs do
      local h = row.runs[r] and row.runs[r].r and row.runs[r].r.hist
      if type(h) == "table" and h.counts then
        if not o.hist then
          o.hist = { edges_ms = h.edges_ms, counts = {}, runs = 0 }
          for i = 1, #h.counts do o.hist.counts[i] = 0 end
        end
        for i, c in ipairs(h.counts) do o.hist.counts[i] = (o.hist.counts[i] or 0) + c end
        o.hist.runs = o.hist.runs + 1
      end
    end
    local any = row.runs[1] or row.runs[2] or row.runs[3]
    if any then
      o.settings = any.r and any.r.settings
      o.versions = any.r and any.r.versions
      o.cmd = any.cmd
    end
    out.rows[#out.rows + 1] = o
    byk[row.key] = row
  end
  -- Ratios from runs made side by side (run r of one against run r of the other).
  for _, ra in ipairs(sc.ratios or {}) do
    local a, b, fkey, label = byk[ra[1]], byk[ra[2]], ra[3], ra[4]
    local fig
    for _, f in ipairs(sc.figures) do if f.key == fkey then fig = f end end
    local vals = {}
    if a and b then
      for r = 1, SIZE.runs do
        if a.runs[r] and b.runs[r] then
          local ok1, x = pcall(fig.get, a.runs[r])
          local ok2, y = pcall(fig.get, b.runs[r])
          if ok1 and ok2 and x and y and y ~= 0 then vals[#vals + 1] = x / y end
        end
      end
    end
    out.ratios[#out.ratios + 1] = { label = label, stats = U.stats(vals), a = ra[1], b = ra[2], fig = fkey }
  end
  return out
end

-- B4: the results must agree; chronis Lua and C must be identical.
B4.after = function(ctx)
  local mix = cronmix.read(MIX)
  local files = { lua = ctx.dir .. "/b4_lua_1.txt", c = ctx.dir .. "/b4_c_1.txt",
                  luac = ctx.dir .. "/b4_luac_1.txt",
                  aps = ctx.dir .. "/b4_aps_1.txt", croner = ctx.dir .. "/b4_croner_1.txt" }
  local data = {}
  for k, p in pairs(files) do if U.exists(p) then data[k] = cronmix.load(p) end end
  local agree = {}
  results.b4_agreement = agree
  for _, other in ipairs{ { "lua", "Lua" }, { "luac", "Lua compiled" } } do
    if data[other[1]] and data.c then
      local n, diffs = cronmix.compare(mix, data[other[1]], data.c, 5)
      if n > 0 then
        local msg = ("chronis %s and C disagree on %d chains, e.g. %s %s after %s: %s vs %s"):format(
          other[2], n, diffs[1].expr, diffs[1].zone, diffs[1].prev, diffs[1].a, diffs[1].b)
        results.errors[#results.errors + 1] = "B4 " .. msg
        log("  !! %s", msg)
      end
    end
  end
  local ref = data.c or data.lua
  local total = #mix.exprs * #mix.zones * #mix.starts
  for _, peer in ipairs{ { "aps", "APScheduler" }, { "croner", "croner" } } do
    if ref and data[peer[1]] then
      local n, diffs = cronmix.compare(mix, ref, data[peer[1]], 40)
      agree[#agree + 1] = { peer = peer[2], differ = n, total = total, diffs = diffs }
      log("  chronis vs %s: %d of %d chains differ", peer[2], n, total)
    end
  end
end

-- Profiles of B1 on each store: perf record -g of the chronis process.
local function profile_b1(ctx)
  if not U.sh("command -v perf >/dev/null") then
    results.profile_note = "perf not installed: no profiles"
    return
  end
  U.sh("mkdir -p bench/profiles")
  results.profiles = {}
  for _, st in ipairs{ "memory", "sqlite", "redis", "postgres" } do
    if store_available(st) and not (STORES[st].server == "redis" and not ctx.redis)
       and not (STORES[st].server == "postgres" and not ctx.pg) then
      local url = STORES[st].url(ctx, "prof_" .. st)
      local data = ctx.dir .. "/perf-" .. st .. ".data"
      local ctl, ack = ctx.dir .. "/perf-" .. st .. ".ctl", ctx.dir .. "/perf-" .. st .. ".ack"
      U.sh("rm -f " .. U.q(ctl) .. " " .. U.q(ack) .. " && mkfifo " .. U.q(ctl) .. " " .. U.q(ack))
      local argv = { LUA, "bench/chronis/b1_burst.lua", SIZE.b1, url, 100, 1000 }
      log("  profiling B1 on %s", st)
      -- Recording starts disabled; the script enables it once its jobs
      -- are created, so the profile is of the run phase.
      local rec = measured({ "env", "BENCH_PERF_CTL=" .. ctl, "BENCH_PERF_ACK=" .. ack,
                             "perf", "record", "--call-graph", "dwarf,8192", "-F", st == "memory" and "4999" or "999", "-D", "-1",
                             "--control", "fifo:" .. ctl .. "," .. ack, "-o", data, "--", table.unpack(argv) },
        "B1-profile-" .. st, 900, server_of(ctx, { server = STORES[st].server }))
      if rec.r and U.exists(data) then
        local flat = U.capture(("perf report -i %s --stdio --no-children --sort dso,symbol -g none --percent-limit 0.3 2>/dev/null"):format(data)) or ""
        local tree = U.capture(("perf report -i %s --stdio --children --sort symbol -g none --percent-limit 2 2>/dev/null"):format(data)) or ""
        local bydso = U.capture(("perf report -i %s --stdio --no-children --sort dso -g none 2>/dev/null"):format(data)) or ""
        -- Lines of a report, without unresolved addresses (the stripped
        -- interpreter) and, for the inclusive view, the frames that
        -- enclose everything (main, lua_pcall, uv_run: >= 99 %).
        local function top(text, n, inclusive)
          local t = {}
          for line in text:gmatch("[^\n]+") do
            local pct = tonumber(line:match("^%s*([%d%.]+)%%"))
            if pct and not line:match("%] 0x%x+") and not line:match("%] 0000") and
               not (inclusive and pct >= 99) then
              t[#t + 1] = (line:gsub("%s+%-%s+%-%s*$", ""))
            end
            if #t >= n then break end
          end
          return table.concat(t, "\n")
        end
        local path = "bench/profiles/b1-" .. st .. ".txt"
        U.write(path, table.concat({
          ("B1 burst on %s, %s jobs: perf profile of the chronis process (lua5.4 + core.so)."):format(st, U.num(SIZE.b1)),
          ("Recorded %s UTC with: perf record --call-graph dwarf,8192 -F %s -D -1 --control fifo:CTL,ACK -- %s"):format(os.date("!%Y-%m-%d %H:%M"), st == "memory" and "4999" or "999", U.join(argv)),
          ("Result of the profiled run: %s jobs/s, creation %s jobs/s (perf slows both)."):format(
            U.num(rec.r.jobs_per_s), U.num(rec.r.create_per_s)),
          rec.srv and ("Server CPU during the run: %.2f s (not in this profile)."):format(rec.srv) or "",
          "The profile covers the run phase only (from sched:start() to stop() returning),",
          "not the creation of the jobs: the script enables recording after creating them.",
          "lua5.4 is stripped: its interpreter shows as addresses in lua5.4.",
          "",
          "Top 10 functions by self time (perf report --no-children --sort dso,symbol):",
          top(flat, 10), "",
          "Top 15 by time including callees (perf report --children --sort symbol; frames",
          "enclosing everything, and the stripped interpreter's addresses, left out):",
          top(tree, 15, true), "",
          "Time by object (perf report --sort dso):",
          top(bydso, 8), "",
        }, "\n"))
        results.profiles[#results.profiles + 1] = { store = st, path = path, top = top(flat, 10) }
      else
        results.profiles[#results.profiles + 1] = { store = st, path = nil, err = "profile run failed (" .. rec.log .. ")" }
      end
    end
  end
end
B1.profile = profile_b1

-- ---- main ----

local function collect_meta()
  local meta = {}
  meta.date = os.date("!%Y-%m-%d %H:%M UTC")
  meta.cpu = (U.capture("grep -m1 'model name' /proc/cpuinfo") or ""):match(":%s*(.*)") or "?"
  meta.cores = U.capture("nproc")
  meta.mem = U.capture("free -g | awk '/Mem:/ {print $2 \" GiB\"}'")
  meta.kernel = U.capture("uname -sr")
  meta.os = (U.capture("grep PRETTY_NAME /etc/os-release") or ""):match('"(.*)"')
  meta.load = U.capture("cut -d' ' -f1-3 /proc/loadavg")
  meta.commit = U.capture("git rev-parse --short HEAD")
  meta.dirty = (U.capture("git status --porcelain -- runtime adapters lua") or "") ~= ""
  meta.tmp = TMP:match("^(.*)/[^/]*$")
  local v = S.versions()
  v.lua = U.capture(LUA .. " -v")
  v.chronis = U.capture(LUA .. [[ -e 'package.path="lua/?.lua;lua/?/init.lua;"..package.path package.cpath="build/lua/?.so;"..package.cpath print(require("chronis")._VERSION)']])
  v.libuv = U.capture("pkg-config --modversion libuv")
  v.sqlite = U.capture("pkg-config --modversion sqlite3")
  v.hiredis = U.capture("pkg-config --modversion hiredis")
  v.libpq = U.capture("pkg-config --modversion libpq")
  if peers.apscheduler then
    v.python = U.capture(PY .. " -c 'import sys; print(sys.version.split()[0])'")
    v.apscheduler = U.capture(PY .. " -c 'import apscheduler; print(apscheduler.__version__)'")
    v.sqlalchemy = U.capture(PY .. " -c 'import sqlalchemy; print(sqlalchemy.__version__)'")
    v.pytz = U.capture(PY .. " -c 'import pytz; print(pytz.__version__)'")
  end
  if peers.node then
    v.node = U.capture("node --version")
    for _, p in ipairs{ "bullmq", "ioredis", "graphile-worker", "pg", "croner" } do
      local pj = U.read("bench/peers/node/node_modules/" .. p .. "/package.json")
      v[p] = pj and U.json.decode(pj).version
    end
  end
  meta.versions = v
  meta.schemes = scheme_names
  meta.smoke = opts.smoke
  meta.runs = SIZE.runs
  meta.size = SIZE
  return meta
end

local t_start = U.mono()
local meta = collect_meta()
results.meta = meta
log("chronis benchmarks (%s): %s, %s cores, load %s; stores in runtime/core/open.c: %s; tmp %s",
  opts.smoke and "smoke, ~1 % size, 1 run" or ("full, " .. SIZE.runs .. " runs"),
  meta.cpu, meta.cores, meta.load, table.concat(scheme_names, ", "), TMP)

-- --stores: the chronis rows of those stores only.
if opts.stores then
  for _, sc in ipairs(scenarios) do
    local rows = {}
    for _, row in ipairs(sc.rows) do
      if row.kind == "chronis" and opts.stores[row.store] then rows[#rows + 1] = row end
    end
    sc.rows = rows
  end
end

local ok, err = xpcall(function()
  for _, sc in ipairs(scenarios) do
    if not opts.only or opts.only[sc.id] then run_scenario(sc) end
  end
end, debug.traceback)
S.stop_all()
meta.load_end = U.capture("cut -d' ' -f1-3 /proc/loadavg")
meta.elapsed_s = U.mono() - t_start
if not ok then
  io.stderr:write("harness: ", tostring(err), "\n")
  results.errors[#results.errors + 1] = "harness: " .. tostring(err)
end

-- Known scheme names the harness has no scenario for (a new adapter).
-- postgresql: is the same adapter as postgres (an alias in the table).
local known = { memory = 1, sqlite = 1, redis = 1, postgres = 1, postgresql = 1, file = 1, lua = 1 }
results.unbenched = {}
for _, s in ipairs(scheme_names) do
  if not known[s] then results.unbenched[#results.unbenched + 1] = s end
end

local run_errors = #results.errors
-- A full run of some scenarios (--only) keeps the other scenarios of the
-- previous full run, so the page stays whole; each scenario says when it ran.
if opts.only and not opts.smoke then
  local prev = U.read(BUILD .. "/results.json")
  local okp, old = pcall(function() return prev and U.json.decode(prev) end)
  if okp and old and old.scenarios and not (old.meta and old.meta.smoke) then
    local ran = {}
    for _, sc in ipairs(results.scenarios) do ran[sc.id] = sc end
    local merged = {}
    for _, sc in ipairs(old.scenarios) do
      if not ran[sc.id] then sc.date = sc.date or (old.meta and old.meta.date); merged[#merged + 1] = sc end
    end
    for _, sc in ipairs(results.scenarios) do merged[#merged + 1] = sc end
    table.sort(merged, function(a, b) return a.id < b.id end)
    results.scenarios = merged
    local function keep(list)
      for _, s in ipairs(old[list] or {}) do
        local id = s:match("^(B%d+X?)")
        if id and not ran[id] then table.insert(results[list], s) end
      end
    end
    keep("skipped"); keep("errors")
    if not ran.B1 then results.profiles = old.profiles end
    if not ran.B4 then results.b4_agreement = old.b4_agreement end
    meta.merged_from = old.meta and old.meta.date
  end
end

local out = opts.out or (opts.smoke and (BUILD .. "/smoke.md") or "docs/benchmarks.md")
-- The charts go beside the page: docs/bench/ for docs/benchmarks.md,
-- build/bench/svg/ for the smoke report (so a smoke run leaves docs alone).
local chart_rel = opts.smoke and "svg" or "bench"
local charts = report.charts(results)
report.write_charts((out:match("^(.*)/[^/]*$") or ".") .. "/" .. chart_rel, charts)
local md = report.markdown(results, opts.smoke, { rel = chart_rel, list = charts })
U.write(BUILD .. "/results.json", U.json.encode(results))
report.write(out, md)
if not opts.smoke then io.stdout:write("\n", md, "\n") end
U.sh("rm -rf " .. U.q(TMP))
os.remove(BUILD .. "/tmpdir")

if opts.smoke then
  local skipped = {}
  for _, s in ipairs(results.skipped) do skipped[#skipped + 1] = s end
  if #results.errors > 0 then
    io.stdout:write(("bench-smoke: FAILED, %d error(s):\n  %s\n"):format(#results.errors,
      table.concat(results.errors, "\n  ")))
    os.exit(1)
  end
  local skip_text = ""
  if #skipped > 0 then
    local why = {}
    local seen = {}
    for _, s in ipairs(skipped) do
      local reason = s:match(": (.*)$")
      local what = s:match("^(%S+ %S+ %b())") or s
      if not seen[reason] then seen[reason] = {}; why[#why + 1] = reason end
      table.insert(seen[reason], what)
    end
    local parts = {}
    for _, r in ipairs(why) do parts[#parts + 1] = ("%d row(s): %s"):format(#seen[r], r) end
    skip_text = "; skipped " .. table.concat(parts, "; ")
  end
  if #results.unbenched > 0 then
    skip_text = skip_text .. "; schemes with no scenario yet: " .. table.concat(results.unbenched, ", ")
  end
  -- the scenarios this run covered (all of them, or those of --only)
  local ran_ids = {}
  for _, sc in ipairs(scenarios) do
    if not opts.only or opts.only[sc.id] then ran_ids[#ran_ids + 1] = sc.id end
  end
  io.stdout:write(("bench-smoke: OK, %d runs of %s at ~1%% size in %.0f s (stores: %s)%s\n"):format(
    results.ran, table.concat(ran_ids, ","), meta.elapsed_s, table.concat(scheme_names, ", "), skip_text))
  os.exit(0)
end
if run_errors > 0 then
  io.stdout:write(("bench: %d error(s):\n  %s\n"):format(run_errors, table.concat(results.errors, "\n  ", 1, run_errors)))
  os.exit(1)
end
os.exit(0)
