-- Processes a spec drives as a user would: the host (build/chronis) or a
-- Lua script run with plain lua5.4, started in the background in a folder
-- of their own, with their standard output and error in files, so that a
-- spec can wait for a log line, send a signal and read the exit status.
--
--   local P = require "support.process"
--   local p = P.lua([[ local chronis = require "chronis" ... ]])
--   local p = P.host("run app.lua", { ["app.lua"] = source })
--   p:wait_for("run started")          -- true once stderr has it
--   p:signal("INT")
--   local rc = p:wait()                -- the exit status (128 + n: signal n)
--   p.stdout(), p.stderr()
--   p:close()                          -- kills it if still running, removes the folder
--
-- The waits are bounded (30 s by default) so that a hung process fails
-- its spec instead of holding the run; they assert nothing about time.
local U = require "support.util"

local M = {}

local sh_quote = U.sh_quote

local Proc = {}
Proc.__index = Proc

function Proc:stdout() return U.read(self.dir .. "/stdout.txt", "") end
function Proc:stderr() return U.read(self.dir .. "/stderr.txt", "") end

-- The exit status once the process has ended, else nil.
function Proc:status()
  local rc = U.read(self.dir .. "/rc", nil)
  return rc and tonumber(rc:match("%d+"))
end

local function until_true(pred, seconds)
  local deadline = os.time() + (seconds or 30)
  repeat
    if pred() then return true end
    U.sleep(0.05)
  until os.time() > deadline
  return pred()
end

-- Waits until stderr contains `text` (a plain string) `count` times (1);
-- false when it does not (or the process ends without it).
function Proc:wait_for(text, seconds, count)
  count = count or 1
  local function found()
    local n, at = 0, 1
    local err = self:stderr()
    while n < count do
      local i = err:find(text, at, true)
      if not i then break end
      n, at = n + 1, i + 1
    end
    return n >= count
  end
  until_true(function() return found() or self:status() ~= nil end, seconds)
  return found()
end

-- Sends SIG<name> ("INT", "TERM") to the process.
function Proc:signal(name)
  os.execute(("kill -%s %d 2>/dev/null"):format(name, self.pid))
end

-- Waits for the process to end; its exit status, or nil if it did not.
function Proc:wait(seconds)
  until_true(function() return self:status() ~= nil end, seconds)
  return self:status()
end

function Proc:close()
  if self:status() == nil then
    os.execute(("kill -KILL %d 2>/dev/null"):format(self.pid))
    self:wait(5)
  end
  U.remove_tree(self.dir)
end

-- Runs the shell command `cmd` in the background in a new folder holding
-- `files` ({name = text}). Its status goes to rc once it ends.
function M.spawn(cmd, files)
  local dir = U.tmpdir("chronis-proc")
  for name, text in pairs(files or {}) do U.write(dir .. "/" .. name, text) end
  -- A background command of a non-interactive shell starts with SIGINT
  -- ignored; the processes under test install their own handlers, as
  -- they do when started from a terminal.
  -- pid, as rc, is written whole (a rename): a reader never sees the
  -- empty file the shell's redirection creates first.
  local script = ("cd %s && { %s >stdout.txt 2>stderr.txt </dev/null & echo $! >pid.tmp; mv pid.tmp pid; wait $!; "
    .. "echo $? >rc.tmp; mv rc.tmp rc; }"):format(sh_quote(dir), cmd)
  os.execute("sh -c " .. sh_quote(script) .. " >/dev/null 2>&1 &")
  local p = setmetatable({ dir = dir }, Proc)
  local function pid()
    local text = U.read(dir .. "/pid", nil)
    return text and math.tointeger(tonumber(text:match("%d+")))
  end
  assert(until_true(function() return pid() ~= nil end, 10), "no pid for " .. cmd)
  p.pid = pid()
  return p
end

-- build/chronis with `args`, in a folder holding `files`.
function M.host(args, files)
  return M.spawn(sh_quote(U.BIN) .. " " .. args, files)
end

-- A Lua script run with plain lua5.4 (or $LUA), chronis on its paths.
function M.lua(source)
  -- One line, so that the script's own lines keep their numbers.
  local preamble = ("package.path = %q .. package.path; package.cpath = %q .. package.cpath; "):format(
    U.ROOT .. "/lua/?.lua;" .. U.ROOT .. "/lua/?/init.lua;", U.BUILD .. "/lua/?.so;")
  return M.spawn(sh_quote(os.getenv("LUA") or "lua5.4") .. " script.lua",
    { ["script.lua"] = preamble .. source })
end

-- Runs a Lua script to its end: exit status, stdout, stderr.
function M.run_lua(source, seconds)
  local p = M.lua(source)
  local rc = p:wait(seconds)
  local out, err = p:stdout(), p:stderr()
  p:close()
  return rc, out, err
end

return M
