-- The fault-injection driver: one chaos run on one store. For a seed, a
-- store (sqlite, postgres, redis, file) and a duration it
--
-- 1. starts what the store needs: a PostgreSQL or Redis server (support.
--    postgres, support.redis) with a TCP proxy in front of it
--    (chaos_proxy.js), or a small tmpfs for the SQLite or JSON file;
-- 2. seeds a workload: one-shot jobs due over the whole run and interval
--    jobs (half with if_missed = run_all, half run_once with a short
--    misfire threshold), each run waiting a few hundred ms;
-- 3. starts worker processes (chaos_worker.lua: 3, or 1 for the file store,
--    which is one process per file) with a short lease;
-- 4. injects faults drawn from the seed on two tracks at once: the workers
--    (SIGKILL and a replacement, SIGSTOP/SIGCONT shorter and longer than
--    the lease) and the store (server restart, SIGKILL + restart,
--    SIGSTOP/SIGCONT; proxy delay, cut, refused connections, blackhole;
--    for files: read-only, removed, full file system);
-- 5. stops injecting, heals everything, lets the system settle (leases
--    expire, every one-shot completes), asks every worker to stop, reads
--    the store's final state, and hands all of it to support.chaos_check.
--
-- Everything a run leaves is in its folder: w<N>.log (runs, see
-- chaos_worker.lua), w<N>.err, faults.log (one line per fault: kind,
-- target, begin and end in µs, detail), skipped.log, report.txt.
--
--   local chaos = require "support.chaos"
--   local report = chaos.run{ store = "redis", seed = 42, seconds = 30 }
--   report.ok, report.findings, report.stats, report.dir, report.summary
--
-- From a shell (what `make chaos` runs): CHAOS_STORES, CHAOS_SEED and
-- CHAOS_SECONDS choose the runs; exits 1 when any run has findings.
--   lua5.4 spec/support/chaos.lua
if arg and arg[0] and arg[0]:match("support/chaos%.lua$") then
  -- Run from a shell: the specs' modules, chronis's Lua files, the build.
  local root = arg[0]:match("^(.*)spec/support/chaos%.lua$")
  root = root == "" and "./" or root
  package.path = root .. "spec/?.lua;" .. root .. "lua/?.lua;" .. root .. "lua/?/init.lua;" .. package.path
  package.cpath = (os.getenv("CHRONIS_BUILD") or (root .. "build")) .. "/lua/?.so;" .. package.cpath
end
local U = require "support.util"
local chronis = require "chronis"
local check = require "support.chaos_check"

local M = {}

local q = U.sh_quote
local now = chronis.time.now
local ROOT = U.ROOT
local WORKER = ROOT .. "/spec/support/chaos_worker.lua"
local PROXY = ROOT .. "/spec/support/chaos_proxy.js"
local AS_ROOT = U.capture("id -u"):match("^0%s*$") ~= nil
local LEASE = 3

local function sleep(s) chronis.run_until(s) end

local function sh(cmd) return os.execute(cmd) == true end

-- ---- workers

local Run = {}
Run.__index = Run

function Run:log(fmt, ...)
  local line = fmt:format(...)
  self.lines[#self.lines + 1] = line
  if self.verbose then io.stderr:write(("[chaos %s %.1fs] %s\n"):format(self.store, (now() - self.t0) / 1e6, line)) end
end

function Run:start_worker()
  self.nworkers = self.nworkers + 1
  local w = { id = "w" .. self.nworkers, started = now(), rss = {} }
  w.log = ("%s/%s.log"):format(self.dir, w.id)
  local inner = ("echo $$ > %s; exec %s lua5.4 %s %s %s lease=%g parent=%d pid=$$"):format(
    q(w.log .. ".pid"), self.drop_caps or "", q(WORKER), q(self.worker_url), q(w.log), LEASE, U.PID)
  sh(("cd %s && (sh -c %s 2>>%s; echo $? > %s) >/dev/null 2>&1 &"):format(q(ROOT), q(inner),
    q(w.log .. ".err"), q(w.log .. ".rc")))
  for _ = 1, 200 do
    local pid = tonumber((U.read(w.log .. ".pid", ""):match("%d+")))
    if pid then
      w.pid = pid
      break
    end
    sleep(0.01)
  end
  self.workers[#self.workers + 1] = w
  self:log("started worker %s (pid %s)", w.id, tostring(w.pid))
  return w
end

local function alive(pid)
  local s = pid and U.read("/proc/" .. pid .. "/stat")
  local state = s and s:match("^%d+ %b() (%a)")
  return state ~= nil and state ~= "Z" and state ~= "X"
end

function Run:live_workers()
  local out = {}
  for _, w in ipairs(self.workers) do
    if not w.killed and not w.gone and alive(w.pid) then out[#out + 1] = w end
  end
  return out
end

function Run:sample_rss()
  for _, w in ipairs(self:live_workers()) do
    local kb = tonumber((U.read("/proc/" .. w.pid .. "/status", ""):match("VmRSS:%s*(%d+)")))
    if kb then w.rss[#w.rss + 1] = kb end
  end
end

-- ---- the fault log

function Run:fault(kind, target, b, e, detail, explains)
  self.faults[#self.faults + 1] = { kind = kind, target = target, b = b, e = e, explains = explains }
  self.counts[kind] = (self.counts[kind] or 0) + 1
  self.flog:write(("%s %s %d %d %s\n"):format(kind, target, b, e, detail or ""))
  self:log("fault %s on %s for %.1f s %s", kind, target, (e - b) / 1e6, detail or "")
end

function Run:skip(kind, why)
  if self.skipped[kind] then return end
  self.skipped[kind] = why
  U.write(self.dir .. "/skipped.log", (U.read(self.dir .. "/skipped.log", "")) .. kind .. ": " .. why .. "\n")
  io.stderr:write(("chaos %s: SKIPPED fault '%s': %s\n"):format(self.store, kind, why))
end

-- ---- stores

local setups = {}

-- SQLite and the JSON file: a tmpfs of their own when this process may
-- mount one (a full file system can then be made on purpose), else a
-- plain folder and the disk_full fault reported as skipped.
local function file_setup(self, name)
  self.fsdir = self.dir .. "/fs"
  assert(sh("mkdir -p " .. q(self.fsdir)))
  local out, ok = U.capture(("mount -t tmpfs -o size=48m chaos %s 2>&1"):format(q(self.fsdir)))
  if ok then
    self.mounted = true
  else
    self:skip("disk_full", "cannot mount a tmpfs for a full file system (" .. out:gsub("%s+$", "") .. ")")
  end
  if AS_ROOT then
    -- Root ignores file modes: the workers run without the capabilities
    -- that let it, so a read-only file is read-only to them.
    if U.has_command("setpriv") then
      self.drop_caps = "setpriv --bounding-set -dac_override,-dac_read_search,-fowner --"
    else
      self:skip("readonly", "running as root without setpriv: a read-only file would not stop root's writes")
    end
  end
  -- The file sits in a folder of its own, which the removed fault renames
  -- (one atomic step for the database and its -wal and -shm).
  self.dbdir = self.fsdir .. "/db"
  assert(sh("mkdir -p " .. q(self.dbdir)))
  self.path = self.dbdir .. "/" .. name
end

setups.sqlite = function(self)
  file_setup(self, "jobs.db")
  self.url = "sqlite:" .. self.path
  self.worker_url = self.url
  self.nworkers_wanted = 3
  self.store_faults = { "readonly", "removed", "disk_full" }
end

setups.file = function(self)
  file_setup(self, "jobs.json")
  self.url = "file:" .. self.path
  self.worker_url = self.url
  -- One process per file (adapters/file.lua).
  self.nworkers_wanted = 1
  self.store_faults = { "readonly", "disk_full" }
end

function Run:start_proxy(target_port)
  self.proxy_port = U.free_port()
  local out = self.dir .. "/proxy.out"
  self.proxy = assert(io.popen(("exec env -u LD_PRELOAD node %s %d %d >%s 2>&1"):format(q(PROXY), self.proxy_port, target_port,
    q(out)), "w"))
  for _ = 1, 500 do
    local pid = U.read(out, ""):match("listening %d+ pid (%d+)")
    if pid then
      self.proxy_pid = tonumber(pid)
      return
    end
    sleep(0.01)
  end
  error("the chaos proxy did not start: " .. U.read(out, ""))
end

function Run:proxy_cmd(line)
  self.proxy:write(line, "\n")
  self.proxy:flush()
end

local PROXY_FAULTS = { "proxy_delay", "proxy_cut", "proxy_refuse", "proxy_blackhole" }

setups.redis = function(self)
  self.server = require("support.redis").start{ appendonly = true }
  self.url = self.server.url
  self:start_proxy(self.server.port)
  self.worker_url = ("redis://127.0.0.1:%d/0?timeout=5"):format(self.proxy_port)
  self.nworkers_wanted = 3
  self.store_faults = { "server_restart", "server_kill", "server_stop", table.unpack(PROXY_FAULTS) }
end

setups.postgres = function(self)
  self.server = require("support.postgres").start()
  self.url = self.server:url()
  self:start_proxy(self.server.port)
  self.worker_url = ("postgres://postgres@127.0.0.1:%d/%s?timeout=5&connect_timeout=5"):format(self.proxy_port,
    self.server.db)
  self.nworkers_wanted = 3
  self.store_faults = { "server_restart", "server_kill", "server_stop", table.unpack(PROXY_FAULTS) }
end

-- ---- the server and file faults: apply returns the revert (or nil)

local function redis_pid(self) return self.server:pid() end

local apply = {}

apply.server_restart = function(self, rng)
  local down = rng(0, 20) / 10
  if self.store == "redis" then
    self.server:cli("SHUTDOWN")
    sleep(down)
    self.server:restart()
  else
    self.server:ctl("-m fast -w stop")
    sleep(down)
    assert(self.server:start_server(), "PostgreSQL did not restart")
  end
  return nil, ("down %.1f s"):format(down)
end

apply.server_kill = function(self, rng)
  local down = rng(0, 30) / 10
  if self.store == "redis" then
    self.server:kill()
  else
    self.server:signal("KILL")
  end
  return function()
    if self.store == "redis" then
      self.server:restart()
    else
      for _ = 1, 50 do
        if self.server:start_server() then return end
        sleep(0.2)
      end
      error("PostgreSQL did not come back after SIGKILL")
    end
  end, down
end

apply.server_stop = function(self, rng)
  local d = rng(5, 60) / 10
  if self.store == "redis" then sh("kill -STOP " .. redis_pid(self)) else self.server:signal("STOP") end
  return function()
    if self.store == "redis" then sh("kill -CONT " .. redis_pid(self)) else self.server:signal("CONT") end
  end, d
end

apply.proxy_delay = function(self, rng)
  local ms, d = rng(50, 800), rng(20, 80) / 10
  self:proxy_cmd("delay " .. ms)
  return function() self:proxy_cmd("delay 0") end, d, ms .. " ms"
end

apply.proxy_cut = function(self)
  self:proxy_cmd("cut")
  return nil
end

apply.proxy_refuse = function(self, rng)
  self:proxy_cmd("refuse 1")
  self:proxy_cmd("cut")
  return function() self:proxy_cmd("refuse 0") end, rng(10, 50) / 10
end

apply.proxy_blackhole = function(self, rng)
  local d, cut = rng(10, 80) / 10, rng(0, 1) == 1
  self:proxy_cmd("blackhole 1")
  return function()
    if cut then self:proxy_cmd("cut") end
    self:proxy_cmd("blackhole 0")
  end, d, cut and "then cut" or "then delivered"
end

apply.readonly = function(self, rng)
  local dir = self.dbdir
  sh(("chmod a-w %s %s*"):format(q(dir), q(self.path)))
  return function() sh(("chmod u+w %s %s*"):format(q(dir), q(self.path))) end, rng(10, 60) / 10
end

-- The database removed with its -wal and -shm, then restored: their
-- folder is renamed away and back, each an atomic step. Moving the three
-- files one by one would not do: a process reopening the path between two
-- moves would make a new database beside the old -wal file, which SQLite
-- then reads as its own (docs/sqlite.md warns against it). Meanwhile the
-- path cannot be opened and every request fails (docs/sqlite.md, "When
-- the file is removed or replaced").
apply.removed = function(self, rng)
  local away = self.fsdir .. "/away"
  sh(("mv %s %s"):format(q(self.dbdir), q(away)))
  return function() sh(("mv %s %s"):format(q(away), q(self.dbdir))) end, rng(10, 60) / 10
end

apply.disk_full = function(self, rng)
  local filler = self.fsdir .. "/filler"
  sh(("dd if=/dev/zero of=%s bs=64k >/dev/null 2>&1"):format(q(filler)))
  return function() os.remove(filler) end, rng(10, 60) / 10
end

-- ---- the run

local function rng_of(seed)
  -- A generator of our own (xorshift64*), so that a seed draws the same
  -- plan whatever math.random other code calls.
  local x = (seed * 2654435761 + 1) & 0x7fffffffffffffff
  if x == 0 then x = 88172645463325252 end
  return function(lo, hi)
    x = x ~ (x << 13)
    x = x ~ (x >> 7)
    x = x ~ (x << 17)
    local r = (x >> 11) % (hi - lo + 1)
    return lo + r
  end
end

function Run:seed_workload(rng)
  local store = chronis.storage.open(self.url)
  local s = chronis.scheduler{ storage = store }
  local t0 = now() // 1000000 * 1000000 + 2000000
  local span = self.seconds
  local n_once = math.max(20, self.seconds * 3)
  for i = 1, n_once do
    local due = t0 + rng(0, span * 1000) * 1000
    local id = ("once-%04d"):format(i)
    s:create_date_job{ job_id = id, func_name = "run", run_date = due, max_retries = 10,
      kwargs = { ms = rng(0, 1500) } }
    self.workload[id] = { kind = "once", due = due }
  end
  local intervals = { 2, 3, 5, 2, 3, 5 }
  for i, every in ipairs(intervals) do
    local id = ("every-%d-%ds"):format(i, every)
    local run_all = i % 2 == 1
    local start = t0 + rng(0, 2) * 1000000
    s:create_interval_job{ job_id = id, func_name = "run", seconds = every, start_date = start, max_retries = 10,
      if_missed = run_all and "run_all" or "run_once", misfire_threshold_seconds = run_all and 3600 or 4,
      kwargs = { ms = rng(0, 800) } }
    self.workload[id] = { kind = "interval", interval = every, start = start, run_all = run_all,
      threshold = run_all and 3600 or 4 }
  end
  store:close()
  self:log("seeded %d one-shot and %d interval jobs", n_once, #intervals)
end

function Run:read_final()
  local ok, err = pcall(function()
    local store = chronis.storage.open(self.url)
    local jobs = store:query_jobs({}, 100000, 0)
    store:close()
    self.final_jobs = jobs
  end)
  if not ok then self.final_error = tostring(err) end
end

-- Heals every fault under way and restarts workers until the wanted
-- number is alive.
function Run:heal()
  -- Worker starts last: the database file must be back first.
  table.sort(self.reverts, function(a, b) return not a.needs_starts and b.needs_starts end)
  for _, ev in ipairs(self.reverts) do
    ev.fn()
    ev.done(now())
  end
  self.reverts = {}
  for _, w in ipairs(self.workers) do
    if w.stopped_at then sh("kill -CONT " .. w.pid) end
  end
  while #self:live_workers() < self.nworkers_wanted do self:start_worker() end
end

-- Whether the workers caught up after the faults: every one-shot
-- completed, and every interval job completed a slot due after the
-- faults ended (claims that failed back off, up to 30 s: docs/engine.md,
-- "A store that fails").
function Run:caught_up()
  local done, latest = {}, {}
  for _, w in ipairs(self.workers) do
    for id, slot in U.read(w.log, ""):gmatch("\nend (%S+) (%S+) ") do
      done[id] = true
      if slot ~= "-" then
        local us = chronis.time.parse(slot)
        if us > (latest[id] or 0) then latest[id] = us end
      end
    end
  end
  for id, j in pairs(self.workload) do
    if j.kind == "once" and not done[id] then return false end
    if j.kind == "interval" and (latest[id] or 0) < self.healed_us then return false end
  end
  return true
end

function Run:stop_workers()
  for _, w in ipairs(self.workers) do
    if not w.killed then U.write(w.log .. ".stop", "") end
  end
  local deadline = now() + self.stop_wait * 1000000
  while now() < deadline do
    local waiting = false
    for _, w in ipairs(self.workers) do
      if not w.killed and not U.exists(w.log .. ".rc") then waiting = true end
    end
    if not waiting then break end
    sleep(0.1)
  end
  for _, w in ipairs(self.workers) do
    if not w.killed and not U.exists(w.log .. ".rc") then
      w.hang = true
      sh("kill -9 " .. w.pid .. " 2>/dev/null")
    end
    for _ = 1, 50 do
      if U.exists(w.log .. ".rc") then break end
      sleep(0.05)
    end
    for _ = 1, 50 do
      w.rc = tonumber((U.read(w.log .. ".rc", ""):match("%d+")))
      if w.rc then break end
      sleep(0.05)
    end
    w.stderr = U.read(w.log .. ".err", "")
    w.gone = true
  end
end

function Run:teardown()
  if self.proxy then
    -- Other children (workers, the server) inherited the proxy's standard
    -- input: closing our end alone would not end it.
    sh("kill " .. self.proxy_pid .. " 2>/dev/null")
    self.proxy:close()
    self.proxy = nil
  end
  if self.server then self.server:stop() end
  if self.mounted then
    sh("chmod -R u+w " .. q(self.fsdir) .. " 2>/dev/null")
    -- Workers just killed may hold the mount for a moment.
    local done = false
    for _ = 1, 50 do
      done = sh("umount " .. q(self.fsdir) .. " 2>/dev/null")
      if done then break end
      sleep(0.2)
    end
    if not done then sh("umount -l " .. q(self.fsdir)) end
    self.mounted = false
  end
end

local WORKER_FAULTS = { "worker_kill", "worker_kill", "worker_stop_short", "worker_stop_long" }

function M.run(opts)
  local self = setmetatable({
    store = assert(opts.store, "store"), seed = opts.seed or 1, seconds = opts.seconds or 30,
    verbose = opts.verbose, lines = {}, workers = {}, nworkers = 0, faults = {}, counts = {}, skipped = {},
    reverts = {}, workload = {}, stop_wait = 20,
  }, Run)
  assert(setups[self.store], "unknown store " .. self.store .. " (sqlite, postgres, redis, file)")
  self.dir = opts.dir or U.tmpdir("chronis-chaos-" .. self.store)
  self.flog = assert(io.open(self.dir .. "/faults.log", "w"))
  self.flog:setvbuf("line")
  self.t0 = now()
  local rng = rng_of(self.seed)
  local ok, err = xpcall(function()
    setups[self.store](self)
    self:seed_workload(rng)
    for _ = 1, self.nworkers_wanted do self:start_worker() end

    -- Two tracks of faults, each one fault at a time.
    local stop_at = now() + self.seconds * 1000000
    local tracks = {
      { name = "worker", next_at = now() + rng(5, 30) * 100000 },
      { name = "store", next_at = now() + rng(5, 30) * 100000 },
    }
    local next_rss = now()
    while now() < stop_at do
      local t = now()
      if t >= next_rss then
        self:sample_rss()
        next_rss = t + 1000000
      end
      -- Reverts that are due.
      for i = #self.reverts, 1, -1 do
        local ev = self.reverts[i]
        if t >= ev.at and not (ev.needs_starts and self.no_starts) then
          table.remove(self.reverts, i)
          ev.fn()
          ev.done(now())
        end
      end
      for _, track in ipairs(tracks) do
        if not track.busy and t >= track.next_at then
          self:inject(track, rng)
        end
      end
      sleep(0.1)
    end

    self:log("injection over: healing and settling")
    self:heal()
    self.healed_us = now()
    -- Leases of killed workers expire, then the slots they held run.
    local settle_until = now() + (2 * LEASE + 1) * 1000000
    local give_up = now() + 90 * 1000000
    while now() < give_up do
      self:sample_rss()
      if now() >= settle_until and self:caught_up() then break end
      sleep(0.5)
    end
    self.stop_us = now()
    self:stop_workers()
    self:read_final()
  end, debug.traceback)
  if not ok then
    -- A failure of the harness itself: stop what runs, report it.
    for _, w in ipairs(self.workers) do
      if not w.gone then sh("kill -9 " .. tostring(w.pid) .. " 2>/dev/null") end
    end
  end
  self:teardown()
  self.flog:close()
  if not ok then
    return { ok = false, findings = { "harness: " .. tostring(err) }, stats = {}, dir = self.dir,
      summary = "chaos " .. self.store .. " seed " .. self.seed .. ": the harness failed: " .. tostring(err) }
  end
  local report = check.check{
    lease = LEASE, workload = self.workload, workers = self.workers, faults = self.faults,
    final_jobs = self.final_jobs, final_error = self.final_error, healed_us = self.healed_us,
    stop_wait = self.stop_wait,
  }
  report.dir = self.dir
  report.counts = self.counts
  report.skipped = self.skipped
  report.ok = #report.findings == 0
  report.summary = M.summary(self, report)
  U.write(self.dir .. "/report.txt", report.summary .. "\n" .. table.concat(report.findings, "\n") .. "\n")
  if report.ok and not opts.keep then U.remove_tree(self.dir) end
  return report
end

-- Draws the next fault of a track and applies it; its revert runs later
-- from the main loop.
function Run:inject(track, rng)
  local kinds = track.name == "worker" and WORKER_FAULTS or self.store_faults
  local kind = kinds[rng(1, #kinds)]
  local gap = rng(5, 40) / 10
  local b = now()
  local function after(e)
    track.busy = false
    track.next_at = e + gap * 1000000
  end
  track.busy = true
  if track.name == "worker" then
    local live = self:live_workers()
    -- With several workers the first is never killed: it lives the whole
    -- run, and its memory is what the checker bounds.
    if kind == "worker_kill" and self.nworkers_wanted > 1 and live[1] and live[1].id == "w1" then
      table.remove(live, 1)
    end
    if #live == 0 then return after(now()) end
    local w = live[rng(1, #live)]
    if kind == "worker_kill" then
      sh("kill -9 " .. w.pid)
      w.killed = true
      self:fault(kind, w.id, b, b, "pid " .. w.pid)
      -- The replacement starts 0-2 s later.
      self.reverts[#self.reverts + 1] = { at = b + rng(0, 20) * 100000, needs_starts = true,
        fn = function() self:start_worker() end, done = after }
    else
      local d = kind == "worker_stop_short" and rng(2, 9) / 10 or LEASE + rng(5, 30) / 10
      sh("kill -STOP " .. w.pid)
      w.stopped_at = b
      self.reverts[#self.reverts + 1] = { at = b + math.floor(d * 1000000), fn = function()
        sh("kill -CONT " .. w.pid)
        w.stopped_at = nil
      end, done = function(e)
        -- A stop shorter than two thirds of the lease keeps the lease (a
        -- heartbeat comes every third): it must not explain a repeat.
        self:fault(kind, w.id, b, e, "pid " .. w.pid, kind ~= "worker_stop_short")
        after(e)
      end }
    end
    return
  end
  if self.skipped[kind] then return after(now()) end
  local revert, d, detail = apply[kind](self, rng)
  if type(d) == "string" then d, detail = nil, d end
  if not revert then
    local e = now()
    self:fault(kind, "store", b, e, detail)
    return after(e)
  end
  self.reverts[#self.reverts + 1] = { at = b + math.floor((d or 0) * 1000000), fn = revert, done = function(e)
    self:fault(kind, "store", b, e, detail)
    after(e)
  end }
end

function M.summary(self, report)
  local kinds = {}
  for k in pairs(self.counts) do kinds[#kinds + 1] = k end
  table.sort(kinds)
  local parts, total = {}, 0
  for _, k in ipairs(kinds) do
    parts[#parts + 1] = k .. "=" .. self.counts[k]
    total = total + self.counts[k]
  end
  local s = report.stats
  local skipped = {}
  for k, why in pairs(self.skipped) do skipped[#skipped + 1] = k .. " (" .. why .. ")" end
  table.sort(skipped)
  local by = {}
  for _, why in ipairs({ "no end", "worker fault", "store error logged", "store fault" }) do
    if (s.explained_by or {})[why] then by[#by + 1] = why .. " " .. s.explained_by[why] end
  end
  return ("chaos %s seed %d, %d s: %d faults [%s]; workers started %d; runs %d (completed %d); repeats %d "
    .. "(explained %d [%s], unexplained %d); lost %d; stuck %d; crashes %d; hangs %d; max RSS growth %d kB; "
    .. "faults seen by workers %d%s; %s"):format(
    self.store, self.seed, self.seconds, total, table.concat(parts, " "), self.nworkers, s.runs or 0,
    s.completed or 0, s.repeats or 0, s.repeats_explained or 0, table.concat(by, ", "), s.repeats_unexplained or 0, s.lost or 0,
    s.stuck or 0, s.crashes or 0, s.hangs or 0, s.rss_growth_kb or 0, s.store_errors_logged or 0,
    #skipped > 0 and ("; SKIPPED: " .. table.concat(skipped, ", ")) or "",
    #report.findings == 0 and "OK" or (#report.findings .. " finding(s)"))
end

if arg and arg[0] and arg[0]:match("support/chaos%.lua$") then
  local function env(name)
    local v = os.getenv(name)
    return v ~= "" and v or nil
  end
  local stores = env("CHAOS_STORES") or "sqlite postgres redis file"
  local seconds = tonumber(env("CHAOS_SECONDS") or "") or 180
  local seed = tonumber(env("CHAOS_SEED") or "") or (os.time() % 100000)
  print(("chaos: seed %d, %d s per store, stores %s"):format(seed, seconds, stores))
  local failed = 0
  for store in stores:gmatch("[%w]+") do
    local report = M.run{ store = store, seed = seed, seconds = seconds, verbose = os.getenv("CHAOS_VERBOSE") }
    print(report.summary)
    for _, f in ipairs(report.findings) do print("  " .. f) end
    if not report.ok then print("  logs: " .. report.dir) end
    if not report.ok then failed = failed + 1 end
  end
  print(("chaos: %d store(s) with findings (CHAOS_SEED=%d CHAOS_SECONDS=%d CHAOS_STORES='%s')"):format(failed, seed,
    seconds, stores))
  os.exit(failed == 0 and 0 or 1)
end

return M
