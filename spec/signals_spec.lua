-- SIGINT and SIGTERM as a user sends them, to every form an app takes: an
-- app under the host that calls chronis.run() itself, one that does not,
-- and a script run with plain lua5.4 that calls chronis.run(). The stop
-- waits for the running handlers up to each scheduler's shutdown_grace,
-- says which runs it waits for and which it stopped, writes their
-- completions, and a second signal ends the grace period at once.
local chronis = require "chronis"
local P = require "support.process"

-- A scheduler on sqlite:jobs.db in the process's folder, whose handler
-- `long` writes START to stderr and then waits `sleep` seconds, with one
-- job "long1" due now.
local function app(grace, sleep, calls_run)
  return ([[
local chronis = require "chronis"
local sched = chronis.scheduler { storage = "sqlite:jobs.db", polling_interval = 0.1,
  shutdown_grace = %s }
sched:handler("long", function(job)
  io.stderr:write("START " .. job.job_id .. "\n")
  chronis.sleep(%s)
  io.stderr:write("END " .. job.job_id .. "\n")
end)
sched:every { hours = 1, start_date = chronis.time.now() }:config { job_id = "long1" }:run("long")
sched:start()
%s
]]):format(grace, sleep, calls_run and [[
chronis.run()
io.stderr:write("AFTER RUN " .. sched:get_job("long1").status .. "\n")]] or "")
end

-- The job's record in the process's store, read once the process ended.
local function job_of(p)
  local store = chronis.storage.open("sqlite:" .. p.dir .. "/jobs.db")
  local job = store:get_job("long1")
  store:close()
  return job
end

describe("a stop signal", function()
  local p
  after_each(function()
    if p then p:close() end
    p = nil
  end)

  local function started(proc)
    p = proc
    assert.is_true(p:wait_for("START long1"), "the handler did not start:\n" .. p:stderr())
    return p
  end

  for _, signal in ipairs({ "INT", "TERM" }) do
    it(("(SIG%s) stops an app that calls chronis.run() under the host, after its grace period")
      :format(signal), function()
      started(P.host("run app.lua", { ["app.lua"] = app(1, 300, true) }))
      p:signal(signal)
      local rc = p:wait()
      local err = p:stderr()
      assert.are.equal(0, rc, err)
      assert.truthy(err:find("received SIG" .. signal .. ": stopping", 1, true), err)
      assert.truthy(err:find("stopping: waiting up to 1s for 1 running handler(s): long1 (long)", 1, true), err)
      assert.truthy(err:find("shutdown grace period over: stopping 1 running handler(s): long1 (long)", 1, true), err)
      assert.is_nil(err:find("END long1", 1, true), err)
      assert.truthy(err:find("AFTER RUN scheduled", 1, true), err)
      local job = job_of(p)
      assert.are.equal("scheduled", job.status)
      assert.is_nil(job.claimed_by)
    end)
  end

  it("stops an app that does not call chronis.run(), saying which runs it waits for", function()
    started(P.host("run app.lua", { ["app.lua"] = app(1, 300, false) }))
    p:signal("TERM")
    local rc = p:wait()
    local err = p:stderr()
    assert.are.equal(0, rc, err)
    assert.truthy(err:find("stopping: waiting up to 1s for 1 running handler(s): long1 (long)", 1, true), err)
    assert.truthy(err:find("stopping 1 running handler(s): long1 (long)", 1, true), err)
    assert.are.equal("scheduled", job_of(p).status)
  end)

  it("stops a lua5.4 script that calls chronis.run(); the script goes on after run()", function()
    started(P.lua(app(1, 300, true)))
    p:signal("INT")
    local rc = p:wait()
    local err = p:stderr()
    assert.are.equal(0, rc, err)
    assert.truthy(err:find("stopping 1 running handler(s): long1 (long)", 1, true), err)
    assert.truthy(err:find("AFTER RUN scheduled", 1, true), err)
    assert.are.equal("scheduled", job_of(p).status)
  end)

  it("lets a run that ends within the grace period finish and complete", function()
    started(P.host("run app.lua", { ["app.lua"] = app(60, 1, true) }))
    p:signal("INT")
    local rc = p:wait()
    local err = p:stderr()
    assert.are.equal(0, rc, err)
    assert.truthy(err:find("stopping: waiting up to 60s for 1 running handler(s): long1 (long)", 1, true), err)
    assert.truthy(err:find("END long1", 1, true), err)
    assert.is_nil(err:find("grace period over", 1, true), err)
    local job = job_of(p)
    assert.are.equal("scheduled", job.status)
    assert.is_string(job.last_run_time)
  end)

  for _, form in ipairs({ "host", "lua5.4" }) do
    it(("a second time ends the grace period at once and writes the completions (%s)"):format(form),
      function()
        started(form == "host" and P.host("run app.lua", { ["app.lua"] = app(600, 300, true) })
          or P.lua(app(600, 300, true)))
        p:signal("INT")
        assert.is_true(p:wait_for("waiting up to 600s"), p:stderr())
        p:signal("TERM")
        local rc = p:wait()
        local err = p:stderr()
        assert.are.equal(0, rc, err)
        assert.truthy(err:find("a second stop signal", 1, true), err)
        assert.truthy(err:find("stopping 1 running handler(s): long1 (long)", 1, true), err)
        local job = job_of(p)
        assert.are.equal("scheduled", job.status)
        assert.is_nil(job.claimed_by)
      end)
  end

  it("exits 1 when a completion could not be written before the stop ended", function()
    -- The store cannot write completions: the killed run's is given up.
    local source = [[
local chronis = require "chronis"
local inner = chronis.storage.memory()
local a = {}
for _, m in ipairs({ "create_job", "get_job", "update_job", "compare_and_swap_job", "delete_job",
  "query_jobs" }) do
  a[m] = function(_, ...) return inner[m](inner, ...) end
end
function a.complete_jobs() error(chronis.error("unavailable", "the store is down")) end
local sched = chronis.scheduler { storage = chronis.storage.lua(a), polling_interval = 0.1,
  shutdown_grace = 0.5 }
sched:handler("long", function(job)
  io.stderr:write("START " .. job.job_id .. "\n")
  chronis.sleep(300)
end)
sched:once(chronis.time.now()):config { job_id = "long1" }:run("long")
sched:start()
chronis.run()
]]
    started(P.host("run app.lua", { ["app.lua"] = source }))
    p:signal("INT")
    local rc = p:wait()
    local err = p:stderr()
    assert.are.equal(1, rc, err)
    assert.truthy(err:find("could not be written", 1, true), err)
  end)
end)
