-- Servers for the harness: a fresh redis-server or PostgreSQL instance on
-- a free loopback port in a temporary folder, one per scenario, stopped
-- when the scenario ends (and on any exit of the harness). They are
-- started by the specs' launchers (spec/support/redis.lua, postgres.lua),
-- which the harness reaches through package.path: one way to pick a port,
-- start, watch and stop a server serves both, and a process that dies
-- takes its servers with it. What is the benchmarks' own is set here, the
-- same for chronis and for its peers: no persistence in Redis; fsync,
-- synchronous_commit and full_page_writes off in PostgreSQL
-- (BENCH_PG_DURABLE=1 keeps PostgreSQL's defaults), so the figures measure
-- the schedulers rather than this machine's shared disk.
local U = require "util"
local redis = require "support.redis"
local postgres = require "support.postgres"

local M = {}
local live = {}

M.PG_BIN = os.getenv("PG_BIN") or postgres.bindir() or ""

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

function M.start_redis(dir)
  local srv = redis.start { dir = dir }
  local s = {
    kind = "redis", port = srv.port, dir = dir, pid = srv:pid(), url = srv.url,
    settings = "redis-server on 127.0.0.1, --save '' --appendonly no (no persistence)",
  }
  function s.fresh()
    assert(srv:cli("FLUSHALL"):match("OK"), "redis flushall failed")
    return s.url
  end
  function s.stop() srv:stop() end
  live[s] = true
  return s
end

function M.start_postgres(dir)
  local durable = os.getenv("BENCH_PG_DURABLE") == "1"
  local settings = { max_connections = 200, shared_buffers = "256MB", synchronous_commit = "off" }
  if durable then settings.fsync, settings.full_page_writes, settings.synchronous_commit = "on", "on", "on" end
  local srv = postgres.start { dir = dir, db = "bench", settings = settings, bin = os.getenv("PG_BIN") }
  local s = {
    kind = "postgres", port = srv.port, dir = dir, pid = srv:pids()[1],
    settings = "PostgreSQL on 127.0.0.1, initdb --no-sync, shared_buffers=256MB" ..
      (durable and "" or ", fsync=off, synchronous_commit=off, full_page_writes=off"),
    n = 0,
  }
  -- A new database for each run: nothing left from the previous one.
  function s.fresh(name)
    s.n = s.n + 1
    name = ((name or "bench") .. "_" .. s.n):gsub("[^%w_]", "_"):lower()
    srv:psql("CREATE DATABASE " .. name, "postgres")
    return srv:url(nil, name)
  end
  function s.stop() srv:stop() end
  live[s] = true
  return s
end

-- B6's HTTP target (bench/peers/node/http_target.js): answers every
-- request after `delay_ms`, on a free loopback port. It exits by itself
-- when the harness is gone.
function M.start_http_target(dir, delay_ms)
  U.sh("mkdir -p " .. U.q(dir))
  local port_file, log = dir .. "/http_target.port", dir .. "/http_target.log"
  local harness = U.capture("echo $PPID")
  local pid = tonumber(U.capture(("node bench/peers/node/http_target.js %d %s %s >%s 2>&1 </dev/null & echo $!"):format(
    delay_ms, U.q(port_file), harness or "", U.q(log))))
  assert(pid, "http_target: could not start node")
  local port
  for _ = 1, 100 do
    port = tonumber(U.read(port_file) or "")
    if port then break end
    U.sleep(0.1)
  end
  if not port then
    U.sh("kill " .. pid .. " 2>/dev/null")
    error("http_target did not listen within 10 s: " .. (U.read(log) or ""))
  end
  local s = { kind = "http", port = port, pid = pid, dir = dir,
              url = ("http://127.0.0.1:%d/"):format(port),
              settings = ("node http_target.js on 127.0.0.1, answers after %d ms, keep-alive"):format(delay_ms) }
  function s.stop()
    if s.pid then U.sh("kill " .. s.pid .. " 2>/dev/null"); s.pid = nil end
    live[s] = nil
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
    postgresql = (U.capture(M.PG_BIN .. "/postgres --version") or ""):match("(%d+[%.%d]*)"),
  }
end

return M
