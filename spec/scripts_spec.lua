-- Handler scripts: registration from folders, their environments, hot
-- reload (edit, syntax error, load error, delete, runs in progress), load
-- time bound, adapter script reload, the memory cap and `chronis check`.
local chronis = require "chronis"
local scripts = require "chronis.scripts"

local U = require "support.util"
local BIN = U.BIN

-- Folders of handler scripts, removed once the file's tests are done.
local dirs = {}
local function tmpdir()
  dirs[#dirs + 1] = U.tmpdir("chronis-scripts")
  return dirs[#dirs]
end
teardown(function()
  for _, d in ipairs(dirs) do U.remove_tree(d) end
end)

local function write(path, text)
  local dir = path:match("^(.*)/[^/]+$")
  if dir then chronis.fs.mkdir_p(dir) end
  -- Write through a temp file and rename, like most editors: the watcher
  -- must catch that too.
  local f = assert(io.open(path .. ".swp", "w"))
  f:write(text)
  f:close()
  assert(os.rename(path .. ".swp", path))
end

local logs
before_each(function()
  logs = {}
  scripts.logger = function(level, msg) logs[#logs + 1] = level .. " " .. msg end
  scripts.debounce = 0.05
end)

after_each(function()
  scripts.unwatch_all()
  for k in pairs(chronis.handlers) do chronis.handlers[k] = nil end
  scripts.logger = nil
end)

local function logged(pattern)
  for _, l in ipairs(logs) do
    if l:match(pattern) then return l end
  end
  return nil
end

-- A scheduler with a job of `func` due now; returns the scheduler.
local function run_once(func, opts)
  local sched = chronis.scheduler(opts or { polling_interval = 0.1 })
  sched:create_date_job{ func_name = func, run_date = chronis.time.format(chronis.time.now()) }
  sched:start()
  return sched
end

describe("handler folders", function()
  it("registers every script under its path, subfolders as dotted names", function()
    local d = tmpdir()
    write(d .. "/send_email.lua", "return function(job) return 1 end")
    write(d .. "/billing/invoice.lua", "return function(job) return 2 end")
    write(d .. "/billing/tax/vat.lua", "return { run = function() end, timeout = 7 }")
    write(d .. "/notes.txt", "not a script")
    local names = chronis.load_handlers(d, false)
    assert.are.same({ "billing.invoice", "billing.tax.vat", "send_email" }, names)
    assert.is_function(chronis.handlers["billing.invoice"])
    assert.are.equal(7, chronis.handlers["billing.tax.vat"].timeout)
  end)

  it("runs each script in its own environment", function()
    local d = tmpdir()
    write(d .. "/a.lua", "leaked = 1; local fmt = string.format; return function() return chronis ~= nil and fmt end")
    write(d .. "/b.lua", "return function() return leaked end")
    chronis.load_handlers(d, false)
    assert.is_nil(rawget(_G, "leaked"))
    assert.is_nil(chronis.handlers.b())
    assert.are.equal(string.format, chronis.handlers.a())
  end)

  it("errors name the file and line, and a bad script does not stop the others", function()
    local d = tmpdir()
    write(d .. "/good.lua", "return function() end")
    write(d .. "/bad.lua", "local x = \nreturn function() end")
    write(d .. "/notfn.lua", "return 42")
    chronis.load_handlers(d, false)
    assert.is_function(chronis.handlers.good)
    assert.is_nil(chronis.handlers.bad)
    assert.truthy(logged("^error failed to load handler bad: .*bad%.lua:2:"))
    assert.truthy(logged("^error failed to load handler notfn: .*notfn%.lua: returned number"))
  end)

  it("applies a script table's defaults to the jobs that use it", function()
    local d = tmpdir()
    write(d .. "/slow.lua", "return { run = function() end, timeout = 9, retry = 2, priority = 8 }")
    chronis.load_handlers(d, false)
    local sched = chronis.scheduler()
    local job = sched:every{ minutes = 1 }:run("slow")
    assert.are.equal(9, job.timeout_seconds)
    assert.are.equal(2, job.max_retries)
    assert.are.equal(8, job.priority)
    local own = sched:every{ minutes = 1 }:config{ timeout = 3 }:run("slow")
    assert.are.equal(3, own.timeout_seconds)
  end)

  it("runs jobs with folder handlers; sched:handler takes precedence", function()
    local d = tmpdir()
    write(d .. "/greet.lua", "return function(job) _G.greeted = (_G.greeted or '') .. 'script;' end")
    chronis.load_handlers(d, false)
    local sched = run_once("greet")
    assert.is_true(chronis.run_until(function() return rawget(_G, "greeted") == "script;" end, 5))
    sched:stop(1)
    local s2 = chronis.scheduler{ polling_interval = 0.1 }
    s2:handler("greet", function() _G.greeted = _G.greeted .. "own;" end)
    s2:create_date_job{ func_name = "greet", run_date = chronis.time.format(chronis.time.now()) }
    s2:start()
    assert.is_true(chronis.run_until(function() return rawget(_G, "greeted") == "script;own;" end, 5))
    s2:stop(1)
    _G.greeted = nil
  end)

  it("a job whose handler does not exist fails with handler_not_found, and retries apply", function()
    local failed
    local sched = chronis.scheduler{ polling_interval = 0.1, on_failure = function(id, err) failed = err end }
    local seen = 0
    local clock = chronis.time.now()
    sched:create_date_job{ func_name = "nowhere", run_date = chronis.time.format(clock),
                           max_retries = 1, retry_delay_seconds = 0 }
    sched:start()
    assert.is_true(chronis.run_until(function() return failed ~= nil end, 5))
    sched:stop(1)
    assert.are.equal("handler_not_found", failed.code)
    assert.matches("nowhere", failed.message)
    assert.are.equal(0, seen)
  end)
end)

describe("hot reload", function()
  local d, sched, out
  before_each(function()
    d = tmpdir()
    out = {}
    _G.reload_out = out
  end)
  after_each(function()
    if sched then sched:stop(1) end
    sched = nil
    _G.reload_out = nil
  end)

  local function version(v, extra)
    return ("return function(job) %s table.insert(_G.reload_out, %q) end"):format(extra or "", v)
  end

  local function trigger_run()
    sched:create_date_job{ func_name = "h", run_date = chronis.time.format(chronis.time.now()) }
  end

  -- h.lua at version v1 (extra: code run first), loaded from d.
  local function load_v1(extra)
    write(d .. "/h.lua", version("v1", extra))
    chronis.load_handlers(d)
  end

  -- Waits until the runs so far have written `expected`, and checks it.
  local function wait_out(expected)
    assert.is_true(chronis.run_until(function() return #out == #expected end, 5))
    assert.are.same(expected, out)
  end

  local function wait_logged(text)
    assert.is_true(chronis.run_until(function() return logged(text) ~= nil end, 3))
  end

  it("uses an edited script for the next run", function()
    load_v1()
    sched = chronis.scheduler{ polling_interval = 0.1 }
    sched:start()
    trigger_run()
    wait_out({ "v1" })
    write(d .. "/h.lua", version("v2"))
    wait_logged("reloaded handler h")
    assert.truthy(logged("^info reloaded handler h %(.*/h%.lua%)$"))
    trigger_run()
    wait_out({ "v1", "v2" })
  end)

  it("keeps the old version on a syntax error and logs file:line", function()
    load_v1()
    write(d .. "/h.lua", "return function(job)\n  oops oops\nend")
    wait_logged("failed to reload handler h")
    assert.truthy(logged("^error failed to reload handler h: .*h%.lua:2: .*keeping the previous version$"))
    sched = run_once("h")
    wait_out({ "v1" })
  end)

  it("keeps the old version when loading raises or loops", function()
    load_v1()
    write(d .. "/h.lua", "error('no config here')")
    wait_logged("no config here")
    scripts.load_time_limit = 0.2
    write(d .. "/h.lua", "while true do end")
    local ok = chronis.run_until(function() return logged("loading took longer") ~= nil end, 5)
    scripts.load_time_limit = 5
    assert.is_true(ok)
    sched = run_once("h")
    wait_out({ "v1" })
  end)

  it("unregisters a deleted script; its next run fails with handler_not_found", function()
    load_v1()
    os.remove(d .. "/h.lua")
    assert.is_true(chronis.run_until(function() return chronis.handlers.h == nil end, 3))
    assert.truthy(logged("unregistered handler h"))
    local err
    sched = chronis.scheduler{ polling_interval = 0.1, on_failure = function(_, e) err = e end }
    trigger_run()
    sched:start()
    assert.is_true(chronis.run_until(function() return err ~= nil end, 5))
    assert.are.equal("handler_not_found", err.code)
  end)

  it("picks up a new script and a new subfolder", function()
    chronis.load_handlers(d)
    write(d .. "/late.lua", version("late"))
    assert.is_true(chronis.run_until(function() return chronis.handlers.late ~= nil end, 3))
  end)

  it("lets a run in progress finish on the old code", function()
    load_v1("chronis.sleep(0.6)")
    sched = run_once("h")
    assert.is_true(chronis.run_until(function() return sched:get_queue_status().in_flight == 1 end, 5))
    write(d .. "/h.lua", version("v2"))
    wait_out({ "v1" })
    trigger_run()
    wait_out({ "v1", "v2" })
  end)
end)

describe("adapter scripts", function()
  local adapter = [[
local chronis = require "chronis"
return function(opts)
  local inner = chronis.storage.memory()
  local a = { tag = %q }
  for _, m in ipairs({ "create_job", "get_job", "update_job", "compare_and_swap_job", "delete_job", "query_jobs" }) do
    a[m] = function(self, ...) return inner[m](inner, ...) end
  end
  function a:get_job(id)
    local j = inner:get_job(id)
    if j then j.served_by = self.tag end
    return j
  end
  return a
end
]]

  it("opens lua:path URLs and reloads the adapter when its file changes", function()
    local d = tmpdir()
    write(d .. "/kv.lua", adapter:format("v1"))
    local s = chronis.storage.open("lua:" .. d .. "/kv.lua?adapter_timeout=5")
    s:create_job{ job_id = "a", status = "scheduled" }
    assert.are.equal("v1", s:get_job("a").served_by)
    write(d .. "/kv.lua", adapter:format("v2"))
    assert.is_true(chronis.run_until(function() return logged("reloaded adapter") ~= nil end, 3))
    -- The new instance starts empty: state lives in the instance.
    s:create_job{ job_id = "b", status = "scheduled" }
    assert.are.equal("v2", s:get_job("b").served_by)
    write(d .. "/kv.lua", "return function( syntax")
    assert.is_true(chronis.run_until(function() return logged("failed to reload adapter") ~= nil end, 3))
    assert.are.equal("v2", s:get_job("b").served_by)
    s:close()
  end)

  it("reports a script that cannot be opened, naming it", function()
    local ok, err = pcall(chronis.storage.open, "lua:/nonexistent/adapter.lua")
    assert.is_false(ok)
    assert.matches("/nonexistent/adapter%.lua", tostring(err))
  end)
end)

describe("the Lua memory cap", function()
  it("fails a handler that allocates without bound with code memory; others go on", function()
    local used, limit = chronis.memory_used()
    chronis.set_memory_limit(used + 64 * 1024 * 1024)
    local err
    local sched = chronis.scheduler{ polling_interval = 0.1, on_failure = function(_, e) err = e end }
    sched:handler("hog", function()
      local t = {}
      while true do t[#t + 1] = ("x"):rep(100000) .. #t end
    end)
    local fine = false
    sched:handler("fine", function() fine = true end)
    sched:create_date_job{ func_name = "hog", run_date = chronis.time.format(chronis.time.now()) }
    sched:start()
    local ok = chronis.run_until(function() return err ~= nil end, 20)
    collectgarbage()
    chronis.set_memory_limit(limit)
    assert.is_true(ok)
    assert.are.equal("memory", err.code)
    sched:create_date_job{ func_name = "fine", run_date = chronis.time.format(chronis.time.now()) }
    assert.is_true(chronis.run_until(function() return fine end, 5))
    sched:stop(1)
  end)
end)

describe("chronis check", function()
  local function check(path)
    local p = io.popen(("%q check %q 2>&1; echo \"rc=$?\""):format(BIN, path))
    local out = p:read("a")
    p:close()
    return tonumber(out:match("rc=(%d+)")), out
  end

  -- Writes source as `name` in a fresh folder and checks that file.
  local function check_source(name, source)
    local path = tmpdir() .. "/" .. name
    write(path, source)
    return check(path)
  end

  it("accepts handlers and reports their defaults", function()
    local rc, out = check_source("h.lua", "return { run = function() end, timeout = 30, retry = 2 }")
    assert.are.equal(0, rc)
    assert.matches("handler %(table with run%)", out)
    assert.matches("default timeout = 30", out)
  end)

  it("lists an adapter's methods and what is missing", function()
    local rc, out = check_source("adapters/good.lua", [[
return function()
  local a = {}
  function a:create_job(job) end
  function a:get_job(id) end
  function a:update_job(id, u) end
  function a:compare_and_swap_job(id, e, u) end
  function a:delete_job(id) end
  function a:query_jobs(f, l, o) end
  function a:claim_due_jobs(opts) end
  return a
end]])
    assert.are.equal(0, rc, out)
    assert.matches("storage adapter", out)
    assert.matches("claim_due_jobs%s+present", out)
    assert.matches("complete_jobs%s+absent %(optional", out)
    rc, out = check_source("adapters/bad.lua",
      "return { create_job = function(self, job) end, get_job = function(self) end }")
    assert.are.equal(1, rc)
    assert.matches("update_job%s+MISSING %(required%)", out)
    assert.matches("get_job%s+present, but takes 1 parameter", out)
  end)

  it("describes a crontab string given instead of a file", function()
    local rc, out = check("TZ=Europe/Paris 0 9 * * mon-fri")
    assert.are.equal(0, rc, out)
    assert.matches("cron, at 09:00 on Monday through Friday %(Europe/Paris%)", out)
    assert.matches("next %d+%-%d+%-%d+T0[78]:00:00Z %(%d+%-%d+%-%d+T09:00:00%+0[12]:00%)", out)
    rc, out = check("0 9 * * MON-FRI 2025")
    assert.are.equal(1, rc)
    assert.matches("with dialect = 'year_last'", out, 1, true)
  end)

  it("fails on a script that does not load, with file:line", function()
    local rc, out = check_source("broken.lua", "return function(\n")
    assert.are.equal(1, rc)
    assert.matches("broken%.lua:%d+:", out)
  end)
end)
