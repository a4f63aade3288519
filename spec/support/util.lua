-- Helpers shared by the specs, the server launchers of spec/support and the
-- benchmarks (bench/lib loads this file too): shell commands, files,
-- temporary folders, free ports, where the repository and the build are,
-- and the assertions on chronis's {code=, message=} errors and on a clean
-- event loop. Nothing here needs chronis or busted until an assertion is
-- called, so a plain lua5.4 can load it.
--
--   local U = require "support.util"
--   local out, ok = U.capture("ls " .. U.sh_quote(dir) .. " 2>&1")
--   local err = U.assert_error("invalid", f, arg)   -- err.message ...
local U = {}

-- ---- shell and files ----

-- s as one shell word.
function U.sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Runs a shell command; true when it exited 0.
function U.sh(cmd)
  return os.execute(cmd) == true
end

-- Runs a shell command; its standard output, and whether it exited 0.
function U.capture(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  local ok = p:close()
  return out, ok == true
end

function U.has_command(cmd)
  return U.sh("command -v " .. U.sh_quote(cmd) .. " >/dev/null 2>&1")
end

-- The bytes of a file, or `default` (nil unless given) when it cannot be read.
function U.read(path, default)
  local f = io.open(path, "rb")
  if not f then return default end
  local s = f:read("a")
  f:close()
  return s
end

-- Writes a file whole; mode ("755") makes it executable and the like.
function U.write(path, text, mode)
  local f = assert(io.open(path, "wb"))
  assert(f:write(text))
  assert(f:close())
  if mode then assert(U.sh("chmod " .. mode .. " " .. U.sh_quote(path))) end
end

function U.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

function U.sleep(seconds)
  os.execute("sleep " .. seconds)
end

-- A killed server may linger as a zombie when nothing reaps it (a
-- container whose first process is not an init): kill -0 still succeeds
-- then, so its state is read from /proc when there is one.
function U.alive(pid)
  if not pid then return false end
  local f = io.open("/proc/" .. pid .. "/stat")
  if f then
    local state = f:read("a"):match("^%d+ %b() (%a)")
    f:close()
    return state ~= nil and state ~= "Z" and state ~= "X"
  end
  return os.execute("kill -0 " .. pid .. " 2>/dev/null") == true
end

-- A new empty folder under /tmp whose name starts with `prefix`.
function U.tmpdir(prefix)
  local d = U.capture("mktemp -d /tmp/" .. (prefix or "chronis") .. ".XXXXXX"):gsub("%s+$", "")
  assert(d:match("^/tmp/."), "mktemp -d failed")
  return d
end

-- A new folder under /tmp for one spec file, and a function that gives a
-- new path in it each call, "<dir>/<n>-<name>", that does not exist yet.
function U.scratch(prefix)
  local dir, n = U.tmpdir(prefix), 0
  return dir, function(name)
    n = n + 1
    return ("%s/%d-%s"):format(dir, n, name)
  end
end

-- Removes a folder with all it holds.
function U.remove_tree(path)
  os.execute("rm -rf " .. U.sh_quote(path))
end

-- The absolute path of a folder.
local function absolute(dir)
  return (U.capture("cd " .. U.sh_quote(dir) .. " && pwd"):gsub("%s+$", ""))
end

-- The repository (absolute, no trailing slash), the build folder
-- (CHRONIS_BUILD, as in spec/support/helper.lua) and the host executable.
do
  local here = debug.getinfo(1, "S").source:match("^@(.*)spec/support/util%.lua$") or ""
  U.ROOT = absolute(here == "" and "." or here)
end
U.BUILD = os.getenv("CHRONIS_BUILD") and absolute(os.getenv("CHRONIS_BUILD")) or U.ROOT .. "/build"
U.BIN = U.BUILD .. "/chronis"

-- ---- ports ----

-- This process's id (the shell io.popen starts is its child).
U.PID = tonumber((U.capture("echo $PPID"):match("%d+")))
math.randomseed(os.time() + (U.PID or 0) * 7919 + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0) % 100003)

-- A loopback port nobody listens on now, below the kernel's range for
-- outgoing connections. A server can still lose it to another process
-- before it listens: the launchers try again with another port.
function U.free_port()
  for _ = 1, 50 do
    local port = math.random(20000, 32000)
    local out = U.capture("ss -Htln " .. U.sh_quote("sport = :" .. port) .. " 2>/dev/null")
    if out == "" then return port end
  end
  error("no free loopback port found (is ss, from iproute2, installed?)", 2)
end

-- ---- busted ----

-- busted's functions and luassert, for a module required from a spec (it
-- runs outside the spec's environment):
--   local describe, it, before_each, after_each, assert = U.busted()
function U.busted()
  local busted = require "busted"
  return busted.describe, busted.it, busted.before_each, busted.after_each, require "luassert"
end

-- ---- store URLs ----

-- s with every byte %-encoded except letters, digits and the characters
-- of `keep` (a pattern class body, "/._-" for a path): what a URL holds.
function U.url_encode(s, keep)
  return (s:gsub("[^%w" .. (keep or "") .. "]", function(c) return ("%%%02X"):format(c:byte()) end))
end

-- Opens a store with each function of `opens`, which returns the store and
-- optionally what owns it (a scheduler); calls check(store), then closes
-- both.
function U.check_each_open(opens, check)
  for _, open in ipairs(opens) do
    local store, owner = open()
    check(store)
    store:close()
    if owner then owner:close() end
  end
end

-- ---- assertions ----

-- Calls f(...), which must raise a chronis error (a {code=, message=}
-- table); returns it.
local function raised(what, f, ...)
  local ok, err = pcall(f, ...)
  assert(not ok, ("expected %s, the call succeeded"):format(what))
  assert(type(err) == "table", "expected a {code=, message=} error, got " .. type(err) .. ": " .. tostring(err))
  return err
end

function U.error_of(f, ...)
  return raised("an error", f, ...)
end

-- f(...) raises an error with this code (and a message); returns it.
function U.assert_error(code, f, ...)
  local err = raised(("an error %q"):format(code), f, ...)
  require("luassert").are.equal(code, err.code, "wrong error code; message: " .. tostring(err.message))
  assert(type(err.message) == "string", "the error has no message")
  return err
end

-- As assert_error, and the message contains `needle` (when given).
function U.assert_error_naming(code, needle, f, ...)
  local err = U.assert_error(code, f, ...)
  if needle then
    assert(err.message:find(needle, 1, true), ("message %q lacks %q"):format(err.message, needle))
  end
  return err
end

-- Every field of `expected` has that value in `actual` (tables compared
-- deeply); a failure names the field. Fields not in `expected` are not
-- looked at.
function U.assert_fields(expected, actual)
  local keys = {}
  for k in pairs(expected) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    require("luassert").are.same(expected[k], actual[k], "field " .. k)
  end
end

-- A contract suite's fixture: before each test, set(factory()) (what:
-- "store", "lock", for the message when the factory gives nothing); after
-- it, set(nil), then close_and_check on what the factory gave.
function U.fresh_each(what, factory, teardown, set)
  local _, _, before_each, after_each = U.busted()
  local current
  before_each(function()
    current = factory()
    assert(current, "factory() returned no " .. what)
    set(current)
  end)
  after_each(function()
    local x = current
    current = nil
    set(nil)
    U.close_and_check(x, teardown)
  end)
end

-- The end of a contract test: closes what factory() gave (when given), runs
-- the spec's teardown on it, and checks that the loop is clean.
function U.close_and_check(x, teardown)
  if x then
    x:close()
    if teardown then teardown(x) end
  end
  U.assert_loop_clean()
end

-- docs/design.md: after each asynchronous spec no task is alive and no
-- libuv handle active (closed ones may still be closing). `seconds`: how
-- long the loop may run first for handles that end by themselves (0 by
-- default: they must be inactive at once).
function U.assert_loop_clean(seconds)
  local chronis, core = require "chronis", require "chronis.core"
  local assert = require "luassert"
  collectgarbage()
  collectgarbage()
  if seconds and seconds > 0 then
    -- Inside run_until its own timer is one active handle.
    chronis.run_until(function() return core.live_tasks() == 0 and core.active_handles() <= 1 end, seconds)
  end
  assert.are.equal(0, core.live_tasks(), "tasks left alive after the test")
  assert.are.equal(0, core.active_handles(), "libuv handles left active after the test")
end

-- ---- stores ----

-- A store written in Lua with only the required methods, over a memory
-- store: the optional operations (claim, completion, recovery...) are the
-- core's emulation of them.
local REQUIRED = { "create_job", "get_job", "update_job", "compare_and_swap_job", "delete_job",
  "query_jobs" }
function U.minimal_store()
  local chronis = require "chronis"
  local inner = chronis.storage.memory()
  local a = {}
  for _, m in ipairs(REQUIRED) do
    a[m] = function(_, ...) return inner[m](inner, ...) end
  end
  function a.close() inner:close() end
  return chronis.storage.lua(a, { name = "minimal" })
end

return U
