-- Test Redis servers: redis-server on a free loopback port in a temporary
-- folder, without persistence unless asked, stopped by the specs whatever
-- happens: by stop() in a teardown, by a __gc sentinel when the Lua state
-- closes, and by a watchdog shell that kills the server once the Lua
-- process is gone (a crash, a kill, os.exit without closing the state).
--
--   local redis = require "support.redis"
--   local srv = redis.start()           -- or redis.start{ appendonly = true }
--   srv.url                              -- "redis://127.0.0.1:PORT/0"
--   srv:cli("SCRIPT", "FLUSH")          -- redis-cli against it, raw output
--   srv:kill(); srv:restart(); srv:stop()
--
-- A missing redis-server is an error that says how to install it, so the
-- specs that need it fail instead of being skipped.
local U = require "support.util"

local M = {}

local sh_quote, sleep = U.sh_quote, U.sleep

-- Output (stdout and stderr) of a shell command.
local function run(cmd)
  return (U.capture(cmd .. " 2>&1"))
end

local lua_pid = U.PID

local function require_binaries()
  for _, bin in ipairs({ "redis-server", "redis-cli" }) do
    if not U.has_command(bin) then
      error(("%s not found: the Redis specs need a real server. Install it with `make deps` "
        .. "(Debian package redis-server)."):format(bin), 3)
    end
  end
end

local Server = {}
Server.__index = Server

function Server:cli(...)
  local parts = { "redis-cli", "-h", "127.0.0.1", "-p", tostring(self.port), "--raw" }
  for _, a in ipairs({ ... }) do parts[#parts + 1] = sh_quote(a) end
  return run(table.concat(parts, " "))
end

function Server:pid()
  local f = io.open(self.dir .. "/redis.pid")
  if not f then return nil end
  local pid = tonumber(f:read("a"):match("%d+"))
  f:close()
  return pid
end

local alive = U.alive

-- Starts redis-server on self.port with self.dir; true once it answers.
function Server:launch()
  local args = {
    "redis-server", "--port", self.port, "--bind", "127.0.0.1", "--dir", self.dir,
    "--daemonize", "yes", "--pidfile", self.dir .. "/redis.pid",
    "--logfile", self.dir .. "/redis.log", "--save", "", "--protected-mode", "no",
  }
  if self.opts.appendonly then
    for _, a in ipairs({ "--appendonly", "yes", "--appendfsync", "always" }) do args[#args + 1] = a end
  else
    for _, a in ipairs({ "--appendonly", "no" }) do args[#args + 1] = a end
  end
  for _, a in ipairs(self.opts.args or {}) do args[#args + 1] = a end
  local q = {}
  for i, a in ipairs(args) do q[i] = sh_quote(a) end
  os.remove(self.dir .. "/redis.pid")
  os.remove(self.dir .. "/redis.log")
  run(table.concat(q, " "))
  -- The watchdog: while the Lua process lives and the server is meant to
  -- run, wait; if the Lua process went away first, kill the server.
  os.execute(("(while kill -0 %d 2>/dev/null && [ -e %s ]; do sleep 0.5; done; "
    .. "[ -e %s ] && kill -9 $(cat %s) 2>/dev/null; [ -e %s ] && rm -rf %s) >/dev/null 2>&1 &")
    :format(lua_pid, sh_quote(self.dir .. "/running"), sh_quote(self.dir .. "/running"),
      sh_quote(self.dir .. "/redis.pid"), sh_quote(self.dir .. "/running"), sh_quote(self.dir)))
  for _ = 1, 100 do
    if self:cli("CONFIG", "GET", "dir"):find(self.dir, 1, true) then return true end
    local log = io.open(self.dir .. "/redis.log")
    local text = log and log:read("a") or ""
    if log then log:close() end
    if text:find("Address already in use", 1, true) then return false end
    sleep(0.05)
  end
  return false
end

-- Starts a server. opts: appendonly (true: AOF with fsync always, to
-- survive kill -9), port (instead of a free one), args (more redis-server
-- arguments), dir (the server's folder, created; a new one under /tmp by
-- default). stop() removes the folder.
function M.start(opts)
  require_binaries()
  local self = setmetatable({ opts = opts or {} }, Server)
  if self.opts.dir then
    self.dir = self.opts.dir
    assert(U.sh("mkdir -p " .. sh_quote(self.dir)), "cannot create " .. self.dir)
  else
    self.dir = U.tmpdir("chronis-redis")
  end
  local f = assert(io.open(self.dir .. "/running", "w"))
  f:close()
  for _ = 1, self.opts.port and 1 or 20 do
    self.port = self.opts.port or U.free_port()
    if self:launch() then
      self.url = ("redis://127.0.0.1:%d/0"):format(self.port)
      -- Stops the server when the Lua state closes.
      self.sentinel = setmetatable({}, { __gc = function() self:stop() end })
      return self
    end
    local pid = self:pid()
    if alive(pid) then os.execute("kill -9 " .. pid) end
  end
  local log = io.open(self.dir .. "/redis.log")
  local text = log and log:read("a") or "(no log)"
  if log then log:close() end
  self:stop()
  error("could not start redis-server on a free port; its log:\n" .. text, 2)
end

-- SIGKILL, as a crash: the data survives only with appendonly.
function Server:kill()
  local pid = self:pid()
  if alive(pid) then
    os.execute("kill -9 " .. pid)
    for _ = 1, 100 do
      if not alive(pid) then break end
      sleep(0.02)
    end
  end
end

-- Starts the server again on the same port and folder.
function Server:restart()
  for _ = 1, 50 do
    if self:launch() then return true end
    sleep(0.1)
  end
  error("redis-server did not restart on port " .. self.port)
end

function Server:stop()
  if self.stopped then return end
  self.stopped = true
  self:kill()
  os.remove(self.dir .. "/running")
  U.remove_tree(self.dir)
end

-- Whether anything answers PING on a loopback port.
function M.answers(port)
  return run("redis-cli -h 127.0.0.1 -p " .. tonumber(port) .. " PING"):find("PONG", 1, true) ~= nil
end

-- CRC16 (XMODEM) of Redis Cluster, and the slot of a key: the part between
-- the first '{' and the next '}' when not empty, else the whole key.
local function crc16(s)
  local crc = 0
  for i = 1, #s do
    crc = crc ~ (s:byte(i) << 8)
    for _ = 1, 8 do
      if crc & 0x8000 ~= 0 then crc = ((crc << 1) ~ 0x1021) & 0xffff
      else crc = (crc << 1) & 0xffff end
    end
  end
  return crc
end

function M.keyslot(key)
  local s = key:find("{", 1, true)
  if s then
    local e = key:find("}", s + 1, true)
    if e and e > s + 1 then key = key:sub(s + 1, e - 1) end
  end
  return crc16(key) % 16384
end

return M
