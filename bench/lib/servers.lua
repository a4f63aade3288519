-- Servers for the harness: a fresh redis-server or PostgreSQL instance on
-- a free loopback port in a temporary folder, one per scenario, stopped
-- when the scenario ends (and on any exit of the harness). Both are set
-- up for a benchmark, the same for chronis and for its peers: no
-- persistence in Redis; fsync, synchronous_commit and full_page_writes off
-- in PostgreSQL (BENCH_PG_DURABLE=1 keeps PostgreSQL's defaults), so the
-- figures measure the schedulers rather than this machine's shared disk.
local U = require "util"

local M = {}
local live = {}

local PG_BIN = os.getenv("PG_BIN")
if not PG_BIN then
  local best
  for v in (U.capture("ls /usr/lib/postgresql 2>/dev/null") or ""):gmatch("%d+") do
    if not best or tonumber(v) > tonumber(best) then best = v end
  end
  PG_BIN = best and ("/usr/lib/postgresql/" .. best .. "/bin") or ""
end
M.PG_BIN = PG_BIN

local is_root = U.capture("id -u") == "0"

local function freeport(measure)
  return assert(tonumber(U.capture(U.q(measure) .. " --freeport")), "no free port")
end

local function wait_for(what, check, timeout)
  local deadline = U.mono() + (timeout or 20)
  while U.mono() < deadline do
    if check() then return true end
    U.sleep(0.1)
  end
  error(what .. " did not come up within " .. (timeout or 20) .. " s")
end

-- CPU seconds of a server's process tree: the process itself, the
-- children it has reaped, and its live children (PostgreSQL backends).
local CLK = tonumber(U.capture("getconf CLK_TCK")) or 100
function M.tree_cpu(pid)
  if not pid then return nil end
  local total, found = 0, false
  local p = io.popen("cat /proc/[0-9]*/stat 2>/dev/null")
  for line in p:lines() do
    local spid, rest = line:match("^(%d+) %(.*%) (.*)$")
    if spid then
      local f = {}
      for w in rest:gmatch("%S+") do f[#f + 1] = w end
      -- rest starts at field 3 (state): ppid is field 4, utime..cstime 14..17.
      local ppid = tonumber(f[2])
      local ut, st, cut, cst = tonumber(f[12]), tonumber(f[13]), tonumber(f[14]), tonumber(f[15])
      if tonumber(spid) == pid then
        total, found = total + ut + st + cut + cst, true
      elseif ppid == pid then
        total = total + ut + st
      end
    end
  end
  p:close()
  return found and total / CLK or nil
end

function M.start_redis(dir, measure)
  assert(U.sh("command -v redis-server >/dev/null"), "redis-server not found: run 'make deps'")
  U.sh("mkdir -p " .. U.q(dir))
  local port = freeport(measure)
  local cmd = ("redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no --dir %s " ..
               "--daemonize yes --pidfile %s/redis.pid --logfile %s/redis.log"):format(
    port, U.q(dir), U.q(dir), U.q(dir))
  assert(U.sh(cmd), "redis-server failed to start (see " .. dir .. "/redis.log)")
  local cli = "redis-cli -h 127.0.0.1 -p " .. port
  wait_for("redis-server", function() return U.capture(cli .. " ping") == "PONG" end)
  local s = {
    kind = "redis", port = port, dir = dir,
    pid = tonumber(U.read(dir .. "/redis.pid") or ""),
    url = ("redis://127.0.0.1:%d/0"):format(port),
    settings = "redis-server on 127.0.0.1, --save '' --appendonly no (no persistence)",
  }
  function s.fresh() assert(U.sh(cli .. " flushall >/dev/null"), "redis flushall failed") return s.url end
  function s.stop()
    if s.stopped then return end
    s.stopped = true
    U.sh(cli .. " shutdown nosave >/dev/null 2>&1")
    if s.pid then U.sh("kill " .. s.pid .. " 2>/dev/null") end
  end
  live[s] = true
  return s
end

function M.start_postgres(dir, measure)
  local initdb = PG_BIN .. "/initdb"
  assert(U.exists(initdb), "PostgreSQL not found (" .. initdb .. "): run 'make deps'")
  U.sh("mkdir -p " .. U.q(dir))
  local as = ""
  if is_root then
    U.sh("chown postgres " .. U.q(dir))
    as = "runuser -u postgres -- "
  end
  local port = freeport(measure)
  assert(U.sh(("%s%s -D %s/data -A trust -U postgres --no-sync -E UTF8 >%s/initdb.log 2>&1"):format(
    as, initdb, U.q(dir), U.q(dir))), "initdb failed (see " .. dir .. "/initdb.log)")
  local durable = os.getenv("BENCH_PG_DURABLE") == "1"
  local conf = "-c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=256MB"
  if not durable then conf = conf .. " -c fsync=off -c synchronous_commit=off -c full_page_writes=off" end
  local ok = U.sh(("%s%s/pg_ctl -D %s/data -l %s/pg.log -w -t 30 -o %s start >/dev/null"):format(
    as, PG_BIN, U.q(dir), U.q(dir), U.q("-p " .. port .. " -k " .. dir .. " " .. conf)))
  assert(ok, "postgres failed to start (see " .. dir .. "/pg.log)")
  local psql = ("psql -h 127.0.0.1 -p %d -U postgres -d postgres -qAtX"):format(port)
  wait_for("postgres", function() return U.capture(psql .. " -c 'select 1'") == "1" end)
  local pidline = (U.read(dir .. "/data/postmaster.pid") or ""):match("^(%d+)")
  local s = {
    kind = "postgres", port = port, dir = dir, pid = tonumber(pidline),
    settings = "PostgreSQL on 127.0.0.1, initdb --no-sync, shared_buffers=256MB" ..
      (durable and "" or ", fsync=off, synchronous_commit=off, full_page_writes=off"),
    n = 0,
  }
  -- A new database for each run: nothing left from the previous one.
  function s.fresh(name)
    s.n = s.n + 1
    name = (name or "bench") .. "_" .. s.n
    name = name:gsub("[^%w_]", "_"):lower()
    assert(U.sh(psql .. " -c " .. U.q("CREATE DATABASE " .. name) .. " >/dev/null"), "createdb failed")
    return ("postgres://postgres@127.0.0.1:%d/%s"):format(port, name)
  end
  function s.url_of(name)
    return ("postgres://postgres@127.0.0.1:%d/%s"):format(port, name)
  end
  function s.create_db(name)
    return U.sh(psql .. " -c " .. U.q("CREATE DATABASE " .. name) .. " >/dev/null 2>&1")
  end
  function s.stop()
    if s.stopped then return end
    s.stopped = true
    U.sh(("%s%s/pg_ctl -D %s/data -m immediate stop >/dev/null 2>&1"):format(as, PG_BIN, U.q(dir)))
  end
  live[s] = true
  return s
end

function M.stop_all()
  for s in pairs(live) do
    pcall(s.stop)
    live[s] = nil
  end
end

function M.versions()
  return {
    ["redis-server"] = (U.capture("redis-server --version") or ""):match("v=(%S+)"),
    postgresql = (U.capture(PG_BIN .. "/postgres --version") or ""):match("(%d+[%.%d]*)"),
  }
end

return M
