-- The soak driver: one store, one process, a B2-style steady load for a
-- chosen time while the handler script is reloaded, the store connection is
-- cut and the scheduler is restarted every few minutes. It samples RSS and
-- Lua memory, checks that every slot ran exactly once, and writes one
-- result file (JSON) that soak/report.lua reads. soak/run.sh starts one
-- driver per store; run it alone from the repository root with
--
--   lua5.4 soak/driver.lua STORE RESULT.json     (STORE: memory, sqlite, redis, postgres)
--
-- Settings (environment; soak/run.sh passes them on):
--   SOAK_MINUTES  length of the load (default 10)
--   SOAK_RATE     interval jobs, each every second: runs per second (200)
--   SOAK_EVERY    seconds between two rounds of disturbances (120); a round
--                 is a handler reload, then a store reconnect a third of
--                 the period later, then a scheduler restart a third later
--   SOAK_WARMUP   seconds before memory is judged (default: a sixth of the
--                 run, at least 30)
--   SOAK_SAMPLE   seconds between memory samples (5)
--   SOAK_LEAK     bytes the handler keeps per run (0): a deliberate leak,
--                 to check that the memory bound fails
--   SOAK_FAULT    skip, twice or block: a handler that skips a run, runs
--                 twice, or blocks the loop now and then (see FAULTS)
--   SOAK_REDIS_FSYNC  appendfsync of the Redis server (everysec; always
--                 makes every write wait for the disk)
--   SOAK_P99_MS   the lateness bound (50)
--   SOAK_GROWTH   allowed memory growth, percent (10), plus a slack of
--   SOAK_RSS_SLACK_MB (4) for RSS and SOAK_LUA_SLACK_MB (1) for Lua memory
--
-- The rules (docs/reliability.md, "Soak"):
--   slots: job i of J has its slots at T0 + i/J s + k s; every slot before
--     the end must run exactly once. A slot near a disturbance (scheduled
--     from 1 s before one began until 2 s after it ended) may be late, but
--     is counted in missed and doubled like any other. A reload ends at
--     once, a restart or SQLite reopen when start() returns, a cut
--     connection or server restart when the server is back and the
--     scheduler has no store request failing any more;
--   lateness: start of the handler - slot; p99 of the slots away from
--     disturbances must be at most SOAK_P99_MS;
--   memory: after the warm-up, the median of the last quarter of the
--     samples may exceed the median of the first quarter by at most
--     SOAK_GROWTH percent plus the slack, for RSS and for Lua memory (taken
--     after a full collection).
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
package.cpath = (os.getenv("CHRONIS_BUILD") or "build") .. "/lua/?.so;" .. package.cpath
local chronis = require "chronis"
local U = require "support.util"

local STORE, OUT = arg[1], arg[2]
if not STORE or not OUT then
  io.stderr:write("usage: lua5.4 soak/driver.lua memory|sqlite|redis|postgres RESULT.json\n")
  os.exit(2)
end

local function env_num(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  local n = tonumber(v)
  if not n or n < 0 then
    io.stderr:write(("soak: %s=%q is not a non-negative number\n"):format(name, v))
    os.exit(2)
  end
  return n
end

local MINUTES = env_num("SOAK_MINUTES", 10)
local J = math.floor(env_num("SOAK_RATE", 200))
local EVERY = env_num("SOAK_EVERY", 120)
local D = math.floor(MINUTES * 60)
local WARMUP = env_num("SOAK_WARMUP", math.max(30, D / 6))
local SAMPLE = env_num("SOAK_SAMPLE", 5)
local LEAK = math.floor(env_num("SOAK_LEAK", 0))
local FSYNC = os.getenv("SOAK_REDIS_FSYNC") or "everysec"
local FAULT = os.getenv("SOAK_FAULT") or ""
local FAULT_EVERY = 997
local P99_MS = env_num("SOAK_P99_MS", 50)
local GROWTH = env_num("SOAK_GROWTH", 10) / 100
local RSS_SLACK = env_num("SOAK_RSS_SLACK_MB", 4) * 1024
local LUA_SLACK = env_num("SOAK_LUA_SLACK_MB", 1) * 1024
if J < 1 or D < 10 then
  io.stderr:write("soak: SOAK_RATE must be at least 1 and SOAK_MINUTES at least 10 s\n")
  os.exit(2)
end

local now, parse, fmt = chronis.time.now, chronis.time.parse, chronis.time.format
local SEC = 1000000

local function log(f, ...)
  io.stdout:write(os.date("!%H:%M:%S "), STORE, ": ", f:format(...), "\n")
  io.stdout:flush()
end

-- ---- the store ----

local dir = U.tmpdir("chronis-soak")
local server, url
local opened = {} -- every store object opened, to close at the end
if STORE == "memory" then
  url = "memory:"
elseif STORE == "sqlite" then
  url = "sqlite:" .. dir .. "/soak.db"
elseif STORE == "redis" then
  -- append-only, so that the server restarts keep the jobs
  server = require("support.redis").start{ args = { "--appendonly", "yes", "--appendfsync", FSYNC } }
  url = server.url
elseif STORE == "postgres" then
  server = require("support.postgres").start()
  url = server:url()
else
  io.stderr:write("soak: unknown store '" .. STORE .. "' (memory, sqlite, redis, postgres)\n")
  os.exit(2)
end

-- ---- bookkeeping: fixed size, so that it does not grow with the run ----

-- Lateness histograms in 0.1 ms buckets up to 10 s (the last bucket holds
-- the rest; the maximum is kept exactly).
local NB = 100000
local function histogram()
  local h = { n = 0, max = 0 }
  for b = 0, NB do h[b] = 0 end
  return h
end
local calm, near = histogram(), histogram() -- away from / near a disturbance
local function add(h, us)
  local b = us // 100
  if b > NB then b = NB end
  h[b] = h[b] + 1
  h.n = h.n + 1
  if us > h.max then h.max = us end
end
local function pct(h, p)
  if h.n == 0 then return nil end
  local want, seen = math.max(1, math.ceil(p / 100 * h.n)), 0
  for b = 0, NB do
    seen = seen + h[b]
    if seen >= want then return math.min((b + 1) * 100, h.max) end
  end
  return h.max
end
local function merged(a, b)
  local h = { n = a.n + b.n, max = math.max(a.max, b.max) }
  for i = 0, NB do h[i] = a[i] + b[i] end
  return h
end

local step = SEC // J
local T0 -- set when the jobs are created
local T_end
local last = {}  -- job index -> last slot number seen (-1: none yet)
local index = {} -- job id -> job index
for i = 0, J - 1 do
  last[i] = -1
  index["soak" .. i] = i
end
-- The last slot of each job before the end, and how many jobs ran theirs.
local final, finished = {}, 0
local tally = { runs = 0, missed = 0, doubled = 0, off_grid = 0, early = 0 }
local windows = {} -- disturbances: { t0 = µs, t1 = µs or nil while under way }
local versions = { seen = 0 }

local function near_disturbance(s)
  for w = #windows, 1, -1 do
    local d = windows[w]
    if s >= d.t0 - SEC and (d.t1 == nil or s <= d.t1 + 2 * SEC) then return true end
  end
  return false
end

-- What the handler script calls on every run.
local SOAK = { keep = {} }
function SOAK.run(job, version)
  local t = now()
  local s = parse(job.scheduled_time)
  tally.runs = tally.runs + 1
  if version > versions.seen then versions.seen = version end
  local i = index[job.job_id]
  local k = i and (s - T0 - i * step) / SEC
  if not (k and s >= T0 and k == math.floor(k)) then
    tally.off_grid = tally.off_grid + 1
    return
  end
  if s >= T_end then return end -- past the window: not judged
  k = math.floor(k)
  local prev = last[i]
  if k <= prev then
    tally.doubled = tally.doubled + 1
    log("slot ran again: %s at %s (last slot seen %d, this %d)", job.job_id, job.scheduled_time, prev, k)
    return
  end
  if k > prev + 1 then
    tally.missed = tally.missed + (k - prev - 1)
    log("slots missed: %s, %d slot(s) before %s", job.job_id, k - prev - 1, job.scheduled_time)
  end
  last[i] = k
  if k == final[i] then finished = finished + 1 end
  local late = t - s
  if late < 0 then
    tally.early = tally.early + 1
    late = 0
  end
  add(near_disturbance(s) and near or calm, late)
end
_G.SOAK = SOAK -- handler scripts read the globals

-- ---- the handler script, rewritten for each reload ----

local hdir = dir .. "/handlers"
os.execute("mkdir -p " .. U.sh_quote(hdir))
local version = 0
-- The deliberate faults that check the checks (SOAK_FAULT): a run in every
-- FAULT_EVERY that is not reported (missed) or reported twice (doubled),
-- or a handler that blocks the loop for 200 ms every 1,000 runs (late).
local FAULTS = {
  skip = "  if n %% %d == 0 then return end\n",
  twice = "  if n %% %d == 0 then SOAK.run(job, %d) end\n",
  block = "  if n %% 1000 == 0 then os.execute('sleep 0.2') end\n",
}
if FAULT ~= "" and not FAULTS[FAULT] then
  io.stderr:write("soak: SOAK_FAULT must be skip, twice or block\n")
  os.exit(2)
end
local function write_handler()
  version = version + 1
  local leak = LEAK > 0 and ("  SOAK.keep[#SOAK.keep + 1] = string.rep('x', %d)\n"):format(LEAK) or ""
  local fault = FAULT ~= "" and FAULTS[FAULT]:format(FAULT_EVERY, version) or ""
  local text = ("-- soak handler, version %d\nlocal n = 0\nreturn function(job)\n  n = n + 1\n%s"
    .. "  SOAK.run(job, %d)\n%send\n"):format(version, fault, version, leak)
  local tmp = hdir .. "/.soak.lua.tmp"
  local f = assert(io.open(tmp, "w"))
  f:write(text)
  f:close()
  assert(os.rename(tmp, hdir .. "/soak.lua"))
end
write_handler()
local names = chronis.load_handlers(hdir)
assert(names[1] == "soak", "the handler script did not load")

-- ---- scheduler ----

local SCHED_OPTS = { max_workers = 100, max_queue_size = 1000, polling_interval = 1, shutdown_grace = 10,
                     lease_seconds = 30 }
local function open_store()
  local st = chronis.storage.open(url)
  opened[#opened + 1] = st
  return st
end
local store = open_store()
local function new_scheduler()
  local o = { storage = store }
  for k, v in pairs(SCHED_OPTS) do o[k] = v end
  return chronis.scheduler(o)
end
local sched = new_scheduler()
local store_errors = 0

local lead = 3
T0 = (now() // 1000 + lead * 1000) * 1000
T_end = T0 + D * SEC
for i = 0, J - 1 do final[i] = (T_end - T0 - i * step + SEC - 1) // SEC - 1 end
for i = 0, J - 1 do
  -- run_all: a slot that a disturbance delays past the next one still
  -- runs (run_once would run once for both).
  sched:create_interval_job{ job_id = "soak" .. i, func_name = "soak", seconds = 1,
                             start_date = fmt(T0 + i * step), if_missed = "run_all" }
end
if now() > T0 then log("creating %d jobs took longer than the %d s lead", J, lead) end
sched:start()

-- ---- memory samples ----

local function rss_kb()
  local f = io.open("/proc/self/status")
  if not f then return 0 end
  local v = f:read("a"):match("VmRSS:%s*(%d+)")
  f:close()
  return tonumber(v) or 0
end
local samples = { t = {}, rss = {}, lua = {} }
local function sample()
  collectgarbage("collect")
  local n = #samples.t + 1
  samples.t[n] = now()
  samples.rss[n] = rss_kb()
  samples.lua[n] = collectgarbage("count")
end
local sampling = true
local sampler = chronis.spawn(function()
  while sampling do
    sample()
    chronis.sleep(SAMPLE)
  end
end)

-- ---- disturbances ----

local counts = { reloads = 0, reconnects = 0, restarts = 0 }
local kill_files = {}

local function begin_window(kind)
  local w = { t0 = now(), kind = kind }
  windows[#windows + 1] = w
  return w
end

local function reload()
  write_handler()
  counts.reloads = counts.reloads + 1
  log("reload: handler version %d written", version)
end

-- The store's server loses the clients in the background (the loop must
-- keep running meanwhile), in turn in one of two ways: every connection of
-- the store is ended (CLIENT KILL, pg_terminate_backend), or the server is
-- shut down and started again a second later (Redis: SHUTDOWN, which
-- writes its append-only file; PostgreSQL: pg_ctl stop -m fast). What the
-- commands print lands in a file that says at the end whether they did it.
local outputs = {} -- { file =, kind = "cut" | "server restart" }
local function disconnect()
  local kind = #outputs % 2 == 0 and "cut" or "server restart"
  local file = ("%s/disconnect%d.out"):format(dir, #outputs + 1)
  outputs[#outputs + 1] = { file = file, kind = kind }
  local cmd
  if STORE == "redis" and kind == "cut" then
    local cli = ("redis-cli -h 127.0.0.1 -p %d --raw CLIENT KILL TYPE "):format(server.port)
    cmd = cli .. "normal SKIPME yes; " .. cli .. "pubsub SKIPME yes"
  elseif STORE == "redis" then
    -- the arguments of support.redis's launch, with the append-only file
    local q, d = U.sh_quote, server.dir
    cmd = ("redis-cli -h 127.0.0.1 -p %d SHUTDOWN; sleep 1; redis-server --port %d --bind 127.0.0.1 "
      .. "--dir %s --daemonize yes --pidfile %s --logfile %s --save '' --protected-mode no "
      .. "--appendonly yes --appendfsync " .. FSYNC .. "; for i in $(seq 50); do "
      .. "redis-cli -h 127.0.0.1 -p %d PING | grep -q PONG && echo restarted && break; sleep 0.1; done")
      :format(server.port, server.port, q(d), q(d .. "/redis.pid"), q(d .. "/redis.log"), server.port)
  elseif kind == "cut" then
    cmd = ("psql -X -h 127.0.0.1 -p %d -U postgres -d %s -qAtc %s"):format(server.port, server.db,
      U.sh_quote("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity " ..
        "WHERE application_name = 'chronis' AND pid <> pg_backend_pid()"))
  else
    cmd = server:restart_command(0, "fast", 1) .. " && echo restarted"
  end
  os.execute(("(%s; echo finished) >%s 2>&1 </dev/null &"):format(cmd, U.sh_quote(file)))
  return kind, file
end

-- A disconnection ends when the command is done and, a second later or
-- more, the scheduler has no store request failing any more (it may still
-- be waiting out its backoff until then): the window then closes.
local function close_when_back(w, file)
  chronis.spawn(function()
    while not U.read(file, ""):find("finished", 1, true) do chronis.sleep(0.05) end
    chronis.sleep(1)
    while #(sched:stats().failing or {}) > 0 do chronis.sleep(0.05) end
    w.t1 = now()
    log("back after %.1f s", (w.t1 - w.t0) / SEC)
  end)
end

-- Stops the scheduler and starts one again: every other time the same
-- object (start() after stop()), else a new scheduler on the store.
local function restart(new_store)
  local r = sched:stop()
  if r.killed and r.killed > 0 then log("restart: %d run(s) cut short by the stop", r.killed) end
  local old = store
  if new_store then store = open_store() end
  if new_store or counts.restarts % 2 == 1 then
    store_errors = store_errors + (sched:stats().store_errors or 0)
    sched = new_scheduler()
  end
  sched:start()
  if new_store then old:close() end
end

local function reconnect()
  if STORE == "memory" then return end -- no connection to cut
  local w = begin_window("reconnect")
  local kind
  if STORE == "sqlite" then
    -- The file is closed and opened again: a new store object, and so a
    -- new scheduler on it.
    restart(true)
    kind = "reopen"
    w.t1 = now()
  else
    local file
    kind, file = disconnect()
    close_when_back(w, file)
  end
  counts.reconnects = counts.reconnects + 1
  log("reconnect %d (%s)", counts.reconnects, kind)
end

local function restart_scheduler()
  local w = begin_window("restart")
  restart(false)
  w.t1 = now()
  counts.restarts = counts.restarts + 1
  log("restart %d (%s)", counts.restarts, counts.restarts % 2 == 1 and "same scheduler" or "new scheduler")
end

local plan = {}
for t = EVERY, D - 5, EVERY do
  plan[#plan + 1] = { at = T0 + math.floor(t * SEC), run = reload }
  plan[#plan + 1] = { at = T0 + math.floor((t + EVERY / 3) * SEC), run = reconnect }
  plan[#plan + 1] = { at = T0 + math.floor((t + 2 * EVERY / 3) * SEC), run = restart_scheduler }
end

log("%d jobs every second for %d s on %s; disturbances every %g s", J, D, url, EVERY)
for _, p in ipairs(plan) do
  if p.at < T_end - 3 * SEC then
    chronis.run_until(function() return now() >= p.at end, D + 60)
    p.run()
  end
end
-- Past the end, until every job ran its last slot: jobs of a claim whose
-- reply was lost stay leased to this process until their lease ends
-- (docs/redis.md), so this waits up to a lease and a margin.
local LEASE = SCHED_OPTS.lease_seconds
chronis.run_until(function()
  return (finished == J and now() >= T_end + 2 * SEC) or now() >= T_end + (LEASE + 15) * SEC
end, D + LEASE + 120)
sampling = false
sched:stop()
store_errors = store_errors + (sched:stats().store_errors or 0)
sample()
sampler:join()

-- ---- the verdict ----

local expected = 0
for i = 0, J - 1 do
  if last[i] < final[i] then tally.missed = tally.missed + (final[i] - last[i]) end
  expected = expected + final[i] + 1
end

local confirmed_reconnects, cuts, server_restarts = 0, 0, 0
for _, o in ipairs(outputs) do
  local text = U.read(o.file, "")
  local done
  if o.kind == "cut" then
    local n = 0
    for d in text:gmatch("%d+") do n = n + tonumber(d) end
    done = n > 0
    if done then cuts = cuts + 1 end
  else
    done = text:find("restarted", 1, true) ~= nil
    if done then server_restarts = server_restarts + 1 end
  end
  if done then confirmed_reconnects = confirmed_reconnects + 1
  else log("%s did nothing: %s", o.kind, text) end
end
if STORE == "sqlite" then confirmed_reconnects = counts.reconnects end

local function median(list, a, b)
  local t = {}
  for i = a, b do t[#t + 1] = list[i] end
  table.sort(t)
  return t[(#t + 1) // 2]
end
-- The samples judged: from the end of the warm-up to the end of the load.
local first, n, upto = nil, #samples.t, 0
for i = 1, n do
  if not first and samples.t[i] >= T0 + WARMUP * SEC then first = i end
  if samples.t[i] <= T_end then upto = i end
end
local mem = {}
local failures = {}
if not first or upto - first + 1 < 4 then
  failures[#failures + 1] = ("too few memory samples after the warm-up (%d s)"):format(WARMUP)
else
  local m = upto - first + 1
  local q = math.max(1, m // 4)
  for _, key in ipairs({ "rss", "lua" }) do
    local a = median(samples[key], first, first + q - 1)
    local b = median(samples[key], upto - q + 1, upto)
    local slack = key == "rss" and RSS_SLACK or LUA_SLACK
    local bound = a * (1 + GROWTH) + slack
    mem[key] = { start = samples[key][1], finish = samples[key][n], first_q = a, last_q = b, bound = bound }
    if b > bound then
      failures[#failures + 1] = ("%s grew from %.0f KiB (first quarter after warm-up) to %.0f KiB "
        .. "(last quarter), over the bound of %.0f KiB"):format(key == "rss" and "RSS" or "Lua memory",
        a, b, bound)
    end
  end
end

-- The longest disturbance of each kind, in seconds.
local longest = { reconnect = 0, restart = 0 }
for _, w in ipairs(windows) do
  if not w.t1 then
    failures[#failures + 1] = ("the %s at %s never ended: the store did not come back"):format(w.kind, fmt(w.t0))
  elseif (w.t1 - w.t0) / SEC > longest[w.kind] then
    longest[w.kind] = (w.t1 - w.t0) / SEC
  end
end

local all = merged(calm, near)
local p99_calm = pct(calm, 99)
if tally.missed > 0 then failures[#failures + 1] = tally.missed .. " slot(s) missed" end
if tally.doubled > 0 then failures[#failures + 1] = tally.doubled .. " slot(s) ran more than once" end
if tally.off_grid > 0 then failures[#failures + 1] = tally.off_grid .. " run(s) at no slot" end
if p99_calm and p99_calm > P99_MS * 1000 then
  failures[#failures + 1] = ("p99 lateness %.1f ms over the bound of %g ms"):format(p99_calm / 1000, P99_MS)
end
if versions.seen ~= version then
  failures[#failures + 1] = ("the last handler version that ran is %d, the last written %d"):format(versions.seen, version)
end
if confirmed_reconnects < counts.reconnects then
  failures[#failures + 1] = ("%d of %d disconnections did not happen (see the log)"):format(
    counts.reconnects - confirmed_reconnects, counts.reconnects)
end

local function ms(us) return us and us / 1000 end
local result = {
  store = STORE, seconds = D, jobs = J, expected = expected, runs = all.n, missed = tally.missed,
  doubled = tally.doubled, off_grid = tally.off_grid, early = tally.early,
  p50_ms = ms(pct(all, 50)), p99_ms = ms(pct(all, 99)), max_ms = ms(all.max),
  calm_runs = calm.n, calm_p99_ms = ms(p99_calm), calm_max_ms = ms(calm.max),
  near_runs = near.n, near_p99_ms = ms(pct(near, 99)), near_max_ms = ms(near.max),
  rss_start_kb = samples.rss[1], rss_end_kb = samples.rss[n],
  lua_start_kb = samples.lua[1], lua_end_kb = samples.lua[n], memory = mem, samples = n,
  reloads = counts.reloads, reloads_seen = versions.seen - 1, reconnects = counts.reconnects,
  reconnects_confirmed = confirmed_reconnects, cuts = cuts, server_restarts = server_restarts, restarts = counts.restarts, store_errors = store_errors,
  longest_reconnect_s = longest.reconnect, longest_restart_s = longest.restart,
  leak_bytes = LEAK, fault = FAULT, every_s = EVERY, warmup_s = WARMUP, p99_bound_ms = P99_MS,
  failures = failures, ok = #failures == 0,
}
U.write(OUT, chronis.json.encode(result) .. "\n")
log("%s: %d runs, %d missed, %d doubled, p99 %.2f ms (away from disturbances), RSS %d -> %d KiB, Lua %.0f -> %.0f KiB",
  #failures == 0 and "ok" or "FAILED", all.n, tally.missed, tally.doubled, ms(p99_calm) or -1,
  samples.rss[1], samples.rss[n], samples.lua[1], samples.lua[n])
for _, f in ipairs(failures) do log("failure: %s", f) end

for _, st in ipairs(opened) do pcall(st.close, st) end
require("chronis.scripts").unwatch_all()
if server then server:stop() end
U.remove_tree(dir)
os.exit(#failures == 0 and 0 or 1)
