-- A throwaway PostgreSQL server for the specs (and the benchmarks): initdb
-- in a temporary folder owned by the postgres OS user when this process is
-- root (as the specs run), trust auth on 127.0.0.1, a free port, a
-- database created for the tests; stopped and removed by stop(), and by a
-- watchdog process if this process dies first.
--
--   local server = require("support.postgres").start()
--   -- or start{ dir = ..., db = ..., settings = { synchronous_commit = "off" } }
--   server:url("table=jobs")   -- postgres://postgres@127.0.0.1:PORT/chronis_test?table=jobs
--   server:psql("SELECT 1")    -- output, rows as lines, columns split by |
--   server:restart("fast")     -- or "immediate" (a crash)
--   server:stop()
--
-- Usable from a shell too: `lua5.4 spec/support/postgres.lua` starts a
-- server, prints its URL and keeps it until Enter is pressed.
local U = require "support.util"

local M = {}

local INSTALL = "install the server with `apt-get install postgresql` (or `make deps`)"
-- Server tools run without a sanitizer runtime preloaded for this process.
local ENV = "env -u LD_PRELOAD "

local q = U.sh_quote -- a shell word

local function sh(cmd)
  local ok, how, code = os.execute(ENV .. "sh -c " .. q(cmd))
  return ok == true, code, how
end

local function read(cmd)
  local p = assert(io.popen(ENV .. "sh -c " .. q(cmd)))
  local out = p:read("a")
  local ok = p:close()
  return out, ok
end

-- Root runs the server tools as the postgres OS user (initdb refuses root).
local AS_ROOT = U.capture("id -u"):match("^0%s*$") ~= nil

--- The newest installed server's bin folder, or nil.
function M.bindir()
  local out = read("ls -1d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V")
  local best
  for line in out:gmatch("[^\n]+") do
    if sh("test -x " .. q(line .. "/initdb") .. " && test -x " .. q(line .. "/pg_ctl")) then
      best = line
    end
  end
  return best
end

local function tail(path, n)
  local f = io.open(path)
  if not f then return "(no log)" end
  local lines = {}
  for line in f:lines() do lines[#lines + 1] = line end
  f:close()
  return table.concat(lines, "\n", math.max(1, #lines - (n or 15) + 1))
end

local Server = {}
Server.__index = Server

function Server:pg(tool, args)
  return ("%s%s%s/%s %s"):format(ENV, AS_ROOT and "runuser -u postgres -- " or "", self.bin, tool, args)
end

function Server:ctl(args)
  return sh(self:pg("pg_ctl", "-D " .. q(self.data) .. " " .. args) .. " >>" ..
    q(self.dir .. "/pg_ctl.log") .. " 2>&1 </dev/null")
end

-- fsync=off is safe for the specs (only an OS crash loses data); commits
-- stay synchronous, since the crash spec needs every acknowledged commit to
-- survive a server crash. start{settings = ...} changes or adds to these.
local SETTINGS = { fsync = "off", full_page_writes = "off", max_connections = 300, shared_buffers = "256MB" }

function Server:options()
  local names, opts = {}, { ("-k %s -h 127.0.0.1 -p %d"):format(self.dir, self.port) }
  for k in pairs(self.settings) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do opts[#opts + 1] = ("-c %s=%s"):format(k, self.settings[k]) end
  return table.concat(opts, " ")
end

function Server:start_server()
  local opts = self:options()
  return self:ctl("-l " .. q(self.dir .. "/server.log") .. " -w -t 60 -o " .. q(opts) .. " start")
end

--- The URL of the test database; params ("table=x&pool=2") appended.
function Server:url(params, db)
  local u = ("postgres://postgres@127.0.0.1:%d/%s"):format(self.port, db or self.db)
  if params and params ~= "" then u = u .. "?" .. params end
  return u
end

--- Runs SQL with psql; returns its output (unaligned, tuples only).
function Server:psql(sql, db)
  local file = self.dir .. "/query.sql"
  local f = assert(io.open(file, "w"))
  f:write(sql)
  f:close()
  local out, ok = read(("psql -X -h 127.0.0.1 -p %d -U postgres -d %s -At -v ON_ERROR_STOP=1 -f %s 2>&1")
    :format(self.port, q(db or self.db), q(file)))
  if not ok then error("psql failed: " .. out, 2) end
  return (out:gsub("\n$", ""))
end

--- Process ids of the server: the postmaster, then its children.
function Server:pids()
  local f = io.open(self.data .. "/postmaster.pid")
  if not f then return {} end
  local main = tonumber(f:read("l"))
  f:close()
  local pids = { main }
  for pid in read("ps -o pid= --ppid " .. main):gmatch("%d+") do pids[#pids + 1] = tonumber(pid) end
  return pids
end

--- Sends a signal (STOP, CONT, ...) to every process of the server.
function Server:signal(sig)
  for _, pid in ipairs(self:pids()) do sh(("kill -%s %d 2>/dev/null"):format(sig, pid)) end
end

function Server:restart(mode)
  self:ctl("-m " .. (mode or "fast") .. " -w stop")
  assert(self:start_server(), "PostgreSQL did not come back up:\n" .. tail(self.dir .. "/server.log"))
end

--- Shell commands that restart the server after `delay` seconds, to run in
--- the background (see Server:background) while the caller drives its loop.
function Server:restart_command(delay, mode, down_seconds)
  local ctl = self:pg("pg_ctl", "-D " .. q(self.data))
  return ("sleep %g; %s -m %s -w stop; sleep %g; %s -l %s -w -t 60 -o %s start")
    :format(delay, ctl, mode or "fast", down_seconds or 0, ctl, q(self.dir .. "/server.log"),
      q(self:options()))
end

--- Shell commands that end every connection named application_name=chronis
--- every `every` seconds until the file `stop` exists.
function Server:kill_loop_command(every, stop)
  local sql = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = " ..
    "'chronis' AND pid <> pg_backend_pid()"
  return ("while [ ! -e %s ]; do %spsql -X -h 127.0.0.1 -p %d -U postgres -d %s -qAtc %s; sleep %g; done")
    :format(q(stop), ENV, self.port, q(self.db), q(sql), every)
end

--- Runs shell commands in the background; returns a function that waits
--- (up to `timeout` seconds) until they are done, after creating the file
--- they may watch to stop.
function Server:background(cmds, stop)
  local done = os.tmpname()
  os.remove(done)
  sh(("(%s; touch %s) >>%s 2>&1 </dev/null &"):format(cmds, q(done), q(self.dir .. "/background.log")))
  return function(timeout)
    if stop then io.open(stop, "w"):close() end
    local deadline = os.time() + (timeout or 60)
    while not io.open(done) and os.time() < deadline do sh("sleep 0.1") end
    local finished = io.open(done) ~= nil
    os.remove(done)
    if stop then os.remove(stop) end
    return finished
  end
end

function Server:stop()
  if self.stopped then return end
  self.stopped = true
  self:signal("CONT")
  self:ctl("-m immediate -w stop")
  sh("rm -rf " .. q(self.dir))
end

--- Starts a server or raises an error that says why and how to fix it.
--- opts: db (the database created, "chronis_test"), dir (the server's
--- folder, created; a new one under /tmp by default), settings (server
--- settings, name = value, over the defaults above), bin (the server's bin
--- folder, instead of the newest installed).
function M.start(opts)
  opts = opts or {}
  local bin = opts.bin or M.bindir()
  if not bin then
    error("cannot start PostgreSQL for the tests: no /usr/lib/postgresql/*/bin/initdb; " .. INSTALL, 2)
  end
  if AS_ROOT and not sh("id postgres >/dev/null 2>&1") then
    error("cannot start PostgreSQL for the tests: no 'postgres' OS user; " .. INSTALL, 2)
  end
  local dir = opts.dir
  if dir then assert(sh("mkdir -p " .. q(dir)), "cannot create " .. dir) else dir = U.tmpdir("chronis-pg") end
  local settings = {}
  for k, v in pairs(SETTINGS) do settings[k] = v end
  for k, v in pairs(opts.settings or {}) do settings[k] = v end
  local self = setmetatable({ bin = bin, dir = dir, data = dir .. "/data", db = opts.db or "chronis_test",
    settings = settings }, Server)
  if AS_ROOT then sh("chown postgres " .. q(dir)) end
  sh("chmod 700 " .. q(dir))
  -- Whatever happens to this process, the server goes with it: a watchdog
  -- in a session of its own (a kill of our process group, as `timeout`
  -- sends, must not take it too) stops the server once we are gone.
  local watchdog = ("while kill -0 %d 2>/dev/null; do sleep 1; done; sleep 2; %s -D %s -m immediate stop; rm -rf %s")
    :format(U.PID, self:pg("pg_ctl", ""), q(self.data), q(dir))
  sh("setsid -f sh -c " .. q(watchdog) .. " >/dev/null 2>&1 </dev/null")
  if not sh(self:pg("initdb", ("-D %s -A trust -U postgres --no-sync -E UTF8 --locale=C.UTF-8"):format(q(self.data)))
      .. " >" .. q(dir .. "/initdb.log") .. " 2>&1") then
    local why = tail(dir .. "/initdb.log")
    sh("rm -rf " .. q(dir))
    error("cannot start PostgreSQL for the tests: initdb failed:\n" .. why, 2)
  end
  local started = false
  for _ = 1, 8 do
    self.port = U.free_port()
    if self:start_server() then
      started = true
      break
    end
  end
  if not started then
    local why = tail(dir .. "/server.log")
    self:stop()
    error("cannot start PostgreSQL for the tests (no free port, or the server failed):\n" .. why, 2)
  end
  local ok = sh(("%s/createdb -h 127.0.0.1 -p %d -U postgres %s >>%s 2>&1"):format(bin, self.port,
    q(self.db), q(dir .. "/pg_ctl.log")))
  if not ok then
    local why = tail(dir .. "/pg_ctl.log")
    self:stop()
    error("cannot create the test database:\n" .. why, 2)
  end
  return self
end

if arg and arg[0] and arg[0]:match("support/postgres%.lua$") then
  local s = M.start()
  print(s:url())
  io.read("l")
  s:stop()
end

return M
