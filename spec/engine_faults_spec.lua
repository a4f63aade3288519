-- Faults the engine must survive: hostile handlers (error values that
-- cannot be printed, loops that never wait, handlers that stop their own
-- scheduler or call os.exit), stores that read but cannot write, leases
-- granted by requests that waited, and processes that keep dying on a job.
-- Several cases run worker processes (spec/support/worker.lua) or the host
-- executable against real stores.
local chronis = require "chronis"
local H = require "support.engine_helper"
local U = require "support.util"

local sh_quote, write, ROOT, BIN = U.sh_quote, U.write, U.ROOT, U.BIN
local function read(path) return U.read(path, "") end
local WORKER = ROOT .. "/spec/support/worker.lua"

local function tmpdir() return U.tmpdir("chronis-faults") end

-- The runs a worker recorded: { [job_id] = count }, and the total.
local function runs_in(path)
  local per, total = {}, 0
  for id in read(path):gmatch("run (%S+) %d+\n") do
    per[id] = (per[id] or 0) + 1
    total = total + 1
  end
  return per, total
end

-- Starts worker processes in the background; returns their output files.
local function start_workers(n, url, dir, opts)
  local outs = {}
  for i = 1, n do
    outs[i] = ("%s/worker%d.out"):format(dir, i)
    os.execute(("cd %s && lua5.4 %s %s %s %s 2>>%s.err &"):format(sh_quote(ROOT), sh_quote(WORKER),
      sh_quote(url), sh_quote(outs[i]), opts or "", sh_quote(outs[i])))
  end
  return outs
end

local function workers_done(outs)
  for _, o in ipairs(outs) do
    if not read(o):find("done\n", 1, true) then return false end
  end
  return true
end

local function stop_workers(outs, seconds)
  for _, o in ipairs(outs) do write(o .. ".stop", "") end
  assert(chronis.run_until(function() return workers_done(outs) end, seconds or 20),
    "the workers did not stop")
end

describe("engine under faults", function()
  after_each(H.cleanup)

  describe("a handler's error value", function()
    it("whose __tostring raises fails the run and leaves the loop and the scheduler working", function()
      local s = H.scheduler {}
      s:handler("bad", function()
        error(setmetatable({}, { __tostring = function() error("boom") end }))
      end)
      s:once(chronis.time.now()):config { job_id = "bad" }:run("bad")
      s:start()
      assert.is_true(pcall(chronis.run_until, function() return s:stats().failed == 1 end, 5))
      -- The loop is not left "already running".
      assert.is_true(pcall(chronis.run_until, 0.05))
      local failed = s:get_job("bad")
      assert.are.equal("failed", failed.status)
      local logged
      for _, l in ipairs(H.logs) do
        if l.job_id == "bad" and l.level == "error" then logged = l.msg end
      end
      assert.matches("__tostring failed: .*boom", logged)
      assert.is_table(s:stop(1))
      assert.are.equal("stopped", s:state())
    end)

    it("whose __tostring returns a non-string is shown by its type", function()
      local s = H.scheduler {}
      s:handler("odd", function() error(setmetatable({}, { __tostring = function() return {} end })) end)
      s:once(chronis.time.now()):config { job_id = "odd" }:run("odd")
      s:start()
      H.wait(function() return s:stats().failed == 1 end)
      local msg
      for _, l in ipairs(H.logs) do if l.job_id == "odd" then msg = l.msg end end
      assert.matches("a table error value", msg)
    end)
  end)

  it("refuses chronis.run_until inside a handler with a timeout, without crashing", function()
    local s = H.scheduler {}
    local err
    s:handler("nested", function()
      local ok, e = pcall(chronis.run_until, 0.1)
      err = e
      assert(ok)
    end)
    s:once(chronis.time.now()):config { job_id = "nested", timeout = 5 }:run("nested")
    s:start()
    H.wait(function() return s:stats().failed == 1 end)
    assert.matches("cannot run inside the event loop", tostring(err))
    assert.are.equal("failed", s:get_job("nested").status)
    s:stop(1)
    assert.are.equal("stopped", s:state())
  end)

  describe("handlers that never wait", function()
    it("are preempted: other handlers and timers keep running while one computes", function()
      local s = H.scheduler { max_workers = 4 }
      local ticks, cpu_done = 0, false
      s:handler("cpu", function()
        local t = os.clock()
        while os.clock() - t < 1 do end
        cpu_done = true
      end)
      s:handler("tick", function()
        for _ = 1, 10 do
          chronis.sleep(0.01)
          ticks = ticks + 1
        end
      end)
      s:once(chronis.time.now()):config { job_id = "cpu" }:run("cpu")
      s:once(chronis.time.now()):config { job_id = "tick" }:run("tick")
      s:start()
      H.wait(function() return cpu_done end, 10)
      -- The ten short sleeps ended while the other handler computed.
      assert.are.equal(10, ticks)
    end)

    it("end at their timeout even after debug.sethook() cleared the hooks", function()
      local s = H.scheduler {}
      s:handler("spin", function()
        debug.sethook()
        while true do debug.sethook() end
      end)
      s:once(chronis.time.now()):config { job_id = "spin", timeout = 1 }:run("spin")
      s:start()
      H.wait(function() return s:stats().failed == 1 end, 10)
      local msg
      for _, l in ipairs(H.logs) do if l.job_id == "spin" then msg = l.msg end end
      assert.matches("timed out after 1s", msg)
    end)

    it("end at the scheduler's default_timeout when the job has none", function()
      local s = H.scheduler { default_timeout = 0.5 }
      s:handler("spin", function() while true do end end)
      s:once(chronis.time.now()):config { job_id = "spin" }:run("spin")
      s:start()
      H.wait(function() return s:stats().failed == 1 end, 10)
      assert.are.equal("failed", s:get_job("spin").status)
    end)

    it("keep their lease across processes: a 3 s computation with a 1 s lease runs once", function()
      local dir = tmpdir()
      local url = "sqlite:" .. dir .. "/jobs.db"
      local store = chronis.storage.open(url)
      local s = H.scheduler { storage = store }
      s:create_date_job { job_id = "long", func_name = "cpu", run_date = chronis.time.now(),
        kwargs = { seconds = 3 } }
      local outs = start_workers(2, url, dir, "lease=1 poll=0.1 for=30")
      H.wait(function() return store:count_jobs() == 0 end, 25, "the job did not finish")
      stop_workers(outs)
      local per = {}
      for _, o in ipairs(outs) do
        for id, n in pairs(runs_in(o)) do per[id] = (per[id] or 0) + n end
      end
      store:close()
      U.remove_tree(dir)
      assert.are.same({ long = 1 }, per)
    end)
  end)

  describe("handlers that stop their scheduler", function()
    it("sched:stop() returns to the handler and the scheduler stops once it returns", function()
      local s = H.scheduler {}
      local summary, after = nil, false
      s:handler("stopper", function()
        summary = s:stop()
        chronis.sleep(0.05)
        after = true
      end)
      s:once(chronis.time.now()):config { job_id = "st" }:run("stopper")
      s:start()
      H.wait(function() return s:state() == "stopped" end)
      assert.is_true(summary.stopping)
      assert.is_true(after)
      assert.are.equal(0, s:count_jobs()) -- the run completed and was written
      s:start()
      assert.are.equal("running", s:state())
    end)

    it("chronis.shutdown() from a handler stops every scheduler", function()
      local a, b = H.scheduler {}, H.scheduler {}
      a:handler("sd", function() chronis.shutdown() end)
      a:once(chronis.time.now()):config { job_id = "sd" }:run("sd")
      a:start()
      b:start()
      H.wait(function() return a:state() == "stopped" and b:state() == "stopped" end)
    end)

    it("after chronis.stop(), sched:stop() waits for the stop under way", function()
      local s = H.scheduler {}
      local finished = false
      s:handler("slow", function() chronis.sleep(0.3); finished = true end)
      s:once(chronis.time.now()):config { job_id = "slow" }:run("slow")
      s:start()
      H.wait(function() return s:get_queue_status().in_flight == 1 end)
      chronis.stop()
      assert.are.equal("stopping", s:state())
      local summary = s:stop()
      assert.are.equal("stopped", s:state())
      assert.is_true(finished)
      assert.are.equal(1, summary.finished)
    end)
  end)

  describe("a store that reads but cannot write", function()
    -- A memory store behind a Lua adapter whose writes fail while `down`.
    local function faulty()
      local inner = chronis.storage.memory()
      local f = { down = false, claims = 0, completes = 0 }
      local adapter = { is_local = true }
      for _, m in ipairs({ "create_job", "get_job", "get_jobs_batch", "update_job",
        "compare_and_swap_job", "delete_job", "query_jobs", "count_jobs", "recover_expired_leases",
        "extend_leases", "next_due_time" }) do
        adapter[m] = function(_, ...) return inner[m](inner, ...) end
      end
      adapter.claim_due_jobs = function(_, ...)
        f.claims = f.claims + 1
        if f.down then error(chronis.error("unavailable", "read-only")) end
        return inner:claim_due_jobs(...)
      end
      adapter.complete_jobs = function(_, ...)
        f.completes = f.completes + 1
        if f.down then error(chronis.error("unavailable", "read-only")) end
        return inner:complete_jobs(...)
      end
      f.store = chronis.storage.lua(adapter, { name = "faulty" })
      f.inner = inner
      return f
    end

    it("backs off its claims, logs once per change and shows it in stats", function()
      local f = faulty()
      f.down = true
      local s = H.scheduler { storage = f.store, polling_interval = 0.2 }
      local ran = 0
      s:handler("h", function() ran = ran + 1 end)
      s:once(chronis.time.now()):config { job_id = "due" }:run("h")
      s:start()
      chronis.run_until(2)
      -- Without backoff this is thousands (the job looks due, so the
      -- engine claimed again at once): 0.2, 0.4, 0.8 s... gives a handful.
      assert.is_true(f.claims <= 8, "claims while failing: " .. f.claims)
      local st = s:stats()
      assert.are.same({ "claiming due jobs" }, st.failing)
      assert.is_true(st.store_errors >= 2)
      local errors = 0
      for _, l in ipairs(H.logs) do
        if l.level == "error" then errors = errors + 1 end
      end
      assert.are.equal(1, errors)
      f.down = false
      H.wait(function() return ran == 1 end, 10)
      assert.are.same({}, s:stats().failing)
      local back = false
      for _, l in ipairs(H.logs) do
        if l.level == "info" and l.msg:match("^claiming due jobs works again") then back = true end
      end
      assert.is_true(back)
    end)

    it("retries failed completions until they are written: each job runs once", function()
      local f = faulty()
      local s = H.scheduler { storage = f.store, polling_interval = 0.1 }
      local runs = {}
      s:handler("h", function(job)
        runs[job.job_id] = (runs[job.job_id] or 0) + 1
        f.down = true -- the store turns read-only while the handlers run
      end)
      for i = 1, 5 do
        s:once(chronis.time.now()):config { job_id = "j" .. i }:run("h")
      end
      s:start()
      H.wait(function() return f.completes >= 3 end, 10)
      assert.is_true(s:stats().pending_completions > 0)
      f.down = false
      H.wait(function() return f.inner:count_jobs() == 0 end, 15)
      assert.are.same({ j1 = 1, j2 = 1, j3 = 1, j4 = 1, j5 = 1 }, runs)
      assert.are.equal(0, s:stats().pending_completions)
    end)
  end)

  -- Found by the fault-injection suite (make chaos, the file store): a
  -- completion that cannot be written while the lease expires belongs to a
  -- claim that is gone. When the same node claims the job again, that old
  -- completion must not end the new claim's run: it would pass the owner
  -- check (same node) and the next slot would be claimed with the run still
  -- going, and from then on every slot would run twice.
  it("drops a completion that outlived its lease when the same node claims the job again", function()
    local inner = chronis.storage.memory()
    local down = false
    local adapter = { is_local = true }
    for _, m in ipairs({ "create_job", "get_job", "get_jobs_batch", "update_job", "compare_and_swap_job",
      "delete_job", "query_jobs", "count_jobs", "recover_expired_leases", "claim_due_jobs", "next_due_time" }) do
      adapter[m] = function(_, ...) return inner[m](inner, ...) end
    end
    -- Completions and heartbeats fail while `down`: the lease runs out.
    for _, m in ipairs({ "complete_jobs", "extend_leases" }) do
      adapter[m] = function(_, ...)
        if down then error(chronis.error("unavailable", "read-only")) end
        return inner[m](inner, ...)
      end
    end
    local s = H.scheduler { storage = chronis.storage.lua(adapter, { name = "flaky" }), polling_interval = 0.1,
      lease_seconds = 1 }
    local per_slot, active, max_active, n = {}, 0, 0, 0
    s:handler("tick", function(job)
      n = n + 1
      active = active + 1
      max_active = math.max(max_active, active)
      per_slot[job.scheduled_time] = (per_slot[job.scheduled_time] or 0) + 1
      if n == 1 then down = true end
      if n == 2 then down = false end -- the repeat of the first slot
      chronis.sleep(n == 2 and 1.5 or 0.1)
      active = active - 1
    end)
    s:every { seconds = 1 }:config { job_id = "tick", retry = 10 }:run("tick")
    s:start()
    H.wait(function() return n >= 6 end, 20, "the job did not run six times")
    s:stop(5)
    assert.are.equal(1, max_active, "two runs of one job at once")
    -- The first slot ran twice (its run was cut short by the store); every
    -- other slot once.
    local twice = {}
    for slot, count in pairs(per_slot) do
      if count > 1 then twice[#twice + 1] = slot end
    end
    assert.is_true(#twice <= 1, "slots run twice: " .. table.concat(twice, ", "))
  end)

  -- The same fault on real stores: jobs in flight when the store turns
  -- read-only, a sixth job due that cannot be claimed meanwhile. Claims
  -- back off (without it: a claim per loop turn, the job looking due), and
  -- the completions that failed are written once the store is writable.
  local function read_only_case(open_store, go_read_only, go_writable)
    local store = open_store()
    local s = H.scheduler { storage = store, polling_interval = 0.2, max_workers = 5,
      max_queue_size = 5 }
    local runs, inflight = {}, 0
    s:handler("h", function(job)
      runs[job.job_id] = (runs[job.job_id] or 0) + 1
      inflight = inflight + 1
      chronis.sleep(0.5)
    end)
    for i = 1, 6 do
      s:create_date_job { job_id = "j" .. i, func_name = "h", run_date = chronis.time.now() }
    end
    s:start()
    H.wait(function() return inflight == 5 end, 10)
    go_read_only()
    local logged0 = #H.logs
    chronis.run_until(3)
    -- Each kind of failing request is logged once (claims, completions,
    -- heartbeats, ...), not once per attempt.
    local logged = 0
    for i = logged0 + 1, #H.logs do
      if H.logs[i].level == "error" then logged = logged + 1 end
    end
    assert.is_true(logged <= 6, ("%d errors logged while read-only"):format(logged))
    local errors = s:stats().store_errors
    assert.is_true(errors <= 30, "store errors while read-only: " .. errors)
    assert.is_true(s:stats().pending_completions > 0 or #s:stats().failing > 0)
    go_writable()
    -- The spec's own calls may meet the connection being re-established.
    H.wait(function()
      local ok, n = pcall(store.count_jobs, store)
      return ok and n == 0
    end, 30, "the jobs did not complete")
    assert.are.same({ j1 = 1, j2 = 1, j3 = 1, j4 = 1, j5 = 1, j6 = 1 }, runs)
    s:stop()
    store:close()
  end

  -- A scheduler claims while the server is paused for longer than the
  -- lease; when it resumes, another node recovers expired leases every
  -- 50 ms. A lease computed when the claim was issued is over by the time
  -- the server executes it: the job is recovered under its running
  -- handler and runs a second time.
  local function paused_claim_case(a_store, b_store, pause, resume)
    local runs, recovered = 0, 0
    local a = H.scheduler { storage = a_store, lease_seconds = 3, polling_interval = 0.1 }
    a:handler("h", function() runs = runs + 1; chronis.sleep(2) end)
    a:create_date_job { job_id = "p", func_name = "h", run_date = chronis.time.now() }
    b_store:count_jobs() -- the other node's connection is ready before the pause
    pause()
    a:start()
    chronis.run_until(3.5) -- longer than the lease, as in a failover
    resume()
    H.wait(function()
      recovered = recovered + b_store:recover_expired_leases()
      chronis.sleep(0.05)
      return a_store:count_jobs() == 0
    end, 20)
    a_store:close()
    b_store:close()
    assert.are.equal(0, recovered)
    assert.are.equal(1, runs)
  end

  describe("PostgreSQL turned read-only (as after a failover to a replica)", function()
    local server
    setup(function() server = require("support.postgres").start() end)
    teardown(function() if server then server:stop() end end)

    local function set_read_only(on)
      server:psql(("ALTER DATABASE %s SET default_transaction_read_only = %s;"):format(server.db,
        on and "on" or "off"), "postgres")
      server:psql(("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s' "
        .. "AND pid <> pg_backend_pid();"):format(server.db), "postgres")
    end

    it("backs off and writes every completion once it can", function()
      read_only_case(function() return chronis.storage.open(server:url("table=ro_jobs")) end,
        function() set_read_only(true) end, function() set_read_only(false) end)
    end)

    it("grants leases from when a paused server executes the claim", function()
      -- See the Redis case below.
      local url = server:url("table=pause_jobs")
      paused_claim_case(chronis.storage.open(url), chronis.storage.open(url),
        function() server:signal("STOP") end, function() server:signal("CONT") end)
    end)
  end)

  describe("Redis at maxmemory with noeviction", function()
    local server
    setup(function() server = require("support.redis").start() end)
    teardown(function() if server then server:stop() end end)

    it("backs off and writes every completion once it can", function()
      read_only_case(function() return chronis.storage.open(server.url) end,
        function()
          server:cli("CONFIG", "SET", "maxmemory-policy", "noeviction")
          server:cli("CONFIG", "SET", "maxmemory", "1")
        end,
        function() server:cli("CONFIG", "SET", "maxmemory", "0") end)
    end)

    it("grants leases from when a paused server executes the claim", function()
      server:cli("FLUSHALL")
      paused_claim_case(chronis.storage.open(server.url), chronis.storage.open(server.url),
        function() os.execute("kill -STOP " .. server:pid()) end,
        function() os.execute("kill -CONT " .. server:pid()) end)
    end)
  end)

  describe("SQLite whose write-ahead log turned immutable", function()
    it("backs off and writes every completion once it can", function()
      local dir = tmpdir()
      local wal = dir .. "/jobs.db-wal"
      local function chattr(flag)
        local ok = os.execute("chattr " .. flag .. " " .. sh_quote(wal) .. " 2>/dev/null")
        assert(ok, "chattr " .. flag .. " failed on " .. wal .. ": this spec needs root and a file "
          .. "system with the immutable attribute (ext4, xfs, btrfs; not tmpfs) under /tmp")
      end
      local pass, err = pcall(read_only_case,
        function() return chronis.storage.open("sqlite:" .. dir .. "/jobs.db?busy_timeout=100") end,
        function() chattr("+i") end,
        function() chattr("-i") end)
      os.execute("chattr -i " .. sh_quote(wal) .. " 2>/dev/null; rm -rf " .. sh_quote(dir))
      assert(pass, err)
    end)
  end)

  describe("processes that keep dying on a job", function()
    it("count each cut-short run: the job fails with lease_expired once retries are spent", function()
      local dir = tmpdir()
      local db = dir .. "/jobs.db"
      -- The handler kills its own process (SIGKILL), as a crash would.
      write(dir .. "/app.lua", [[
local chronis = require "chronis"
local s = chronis.scheduler{ lease_seconds = 1, polling_interval = 0.1 }
s:handler("crash", function(job)
  local f = io.open("runs.txt", "a"); f:write(job.attempt, "\n"); f:close()
  local pid = io.open("/proc/self/stat"):read("l"):match("^(%d+)")
  os.execute("kill -9 " .. pid)
  chronis.sleep(10)
end)
s:once("2025-01-01T00:00:00Z"):config{ job_id = "crash", if_exists = "skip" }:run("crash")
s:start()
]])
      local function host_run(seconds)
        os.execute(("cd %s && timeout -s TERM -k 5 %d %s run app.lua --storage sqlite:%s >/dev/null 2>>host.err")
          :format(sh_quote(dir), seconds, sh_quote(BIN), sh_quote(db)))
      end
      for _ = 1, 3 do host_run(4) end
      local store = chronis.storage.open("sqlite:" .. db)
      local job = store:get_job("crash")
      store:close()
      local runs = read(dir .. "/runs.txt")
      U.remove_tree(dir)
      -- Two runs (the one that crashed, and one more), then failed without a
      -- third run, although the host was started three times.
      assert.are.equal("1\n2\n", runs)
      assert.are.equal("failed", job.status)
      assert.are.equal(2, job.retry_count)
    end)
  end)

  describe("os.exit in a handler under the host", function()
    it("fails that run, lets the others finish, and exits with the code", function()
      local dir = tmpdir()
      write(dir .. "/app.lua", [[
local chronis = require "chronis"
local s = chronis.scheduler{ storage = "sqlite:jobs.db" }
s:handler("slow", function() chronis.sleep(1); io.open("slow.txt", "w"):close() end)
s:handler("quit", function() chronis.sleep(0.2); os.exit(7) end)
s:once(chronis.time.now()):config{ job_id = "slow" }:run("slow")
s:once(chronis.time.now()):config{ job_id = "quit" }:run("quit")
s:start()
]])
      local _, how, code = os.execute(("cd %s && timeout -s KILL 20 %s run app.lua --storage memory: >out.txt 2>err.txt")
        :format(sh_quote(dir), sh_quote(BIN)))
      local err = read(dir .. "/err.txt")
      local slow = io.open(dir .. "/slow.txt") ~= nil
      local store = chronis.storage.open("sqlite:" .. dir .. "/jobs.db")
      local quit = store:get_job("quit")
      store:close()
      U.remove_tree(dir)
      assert.are.equal("exit", how)
      assert.are.equal(7, code)
      assert.is_true(slow, "the other handler did not finish: " .. err)
      assert.matches("os.exit%(7%)", err)
      assert.matches("job_id=quit", err)
      assert.are.equal("failed", quit.status)
    end)
  end)
end)
