-- The Prometheus exposition of /metrics (docs/http.md#metrics): real jobs
-- run on a memory and a SQLite scheduler (ok, failing with and without
-- retries, timing out), then the text is read strictly
-- (spec/support/prom_text.lua) and, when promtool is installed, checked by
-- it too; counters are asserted to their exact values.
local chronis = require "chronis"
local core = require "chronis.core"
local metrics = require "chronis.metrics"
local scripts = require "chronis.scripts"
local H = require "support.engine_helper"
local P = require "support.prom_text"
local U = require "support.util"

local QUOTED = 'say "hi"\nline two \\ end'

-- promtool (Debian package prometheus) checks the text as Prometheus
-- reads it; the specs that call it fail when it is missing.
local function promtool_check(text)
  assert(U.has_command("promtool"),
    "promtool not found: the metrics specs check the text with it (apt-get install prometheus)")
  local dir = U.tmpdir("chronis-metrics")
  U.write(dir .. "/metrics.txt", text)
  local out = U.capture("promtool check metrics < " .. U.sh_quote(dir .. "/metrics.txt")
    .. " 2>&1; echo \"rc=$?\"")
  U.remove_tree(dir)
  assert(out:match("rc=0%s*$"), "promtool check metrics: " .. out)
end

local function render(...)
  return metrics.render({ schedulers = { ... } })
end

-- Jobs due now, each with func and the extra fields.
local function due(s, id, func, fields)
  local f = { job_id = id, func_name = func, run_date = chronis.time.format(chronis.time.now()) }
  for k, v in pairs(fields or {}) do f[k] = v end
  return s:create_date_job(f)
end

describe("metrics", function()
  after_each(H.cleanup)

  for _, kind in ipairs({ "memory", "sqlite" }) do
    describe("on a " .. kind .. " scheduler", function()
      local dir, s, text, m, node
      setup(function()
        local storage
        if kind == "sqlite" then
          dir = U.tmpdir("chronis-metrics")
          storage = chronis.storage.open("sqlite://" .. dir .. "/jobs.db")
        else
          storage = chronis.storage.memory()
        end
        s = H.scheduler { storage = storage, polling_interval = 0.1, default_timeout = 0.2 }
        s:handler("ok", function() end)
        s:handler("bad", function() error("boom") end)
        s:handler("slow", function() chronis.sleep(5) end)
        s:handler(QUOTED, function() end)
        for i = 1, 3 do due(s, "ok" .. i, "ok") end
        due(s, "bad-retried", "bad", { max_retries = 1, retry_delay_seconds = 0 })
        due(s, "bad-once", "bad", { max_retries = 0 })
        due(s, "slow", "slow", { max_retries = 0 })
        due(s, "quoted", QUOTED)
        s:start()
        H.wait(function()
          local st = s:stats()
          return st.succeeded == 4 and st.failed == 3
        end, 10, "the runs did not all end")
        node = s:node_id()
        text = render(s)
        m = P.parse(text)
      end)
      teardown(function()
        H.drain()
        if dir then U.remove_tree(dir) end
      end)

      local function labels(extra)
        local l = { scheduler = node, store = kind }
        for k, v in pairs(extra) do l[k] = v end
        return l
      end

      it("passes the format checks, its own reader's and promtool's", function()
        assert.is_true(#m.samples > 0)
        promtool_check(text)
      end)

      it("counts runs by handler and outcome exactly", function()
        assert.are.equal(3, m.value("chronis_runs_total", labels { handler = "ok", outcome = "ok" }))
        assert.are.equal(3, m.value("chronis_runs_total", labels { handler = "bad", outcome = "error" }))
        assert.are.equal(1, m.value("chronis_runs_total", labels { handler = "slow", outcome = "timeout" }))
        assert.are.equal(1, m.value("chronis_runs_total", labels { handler = QUOTED, outcome = "ok" }))
        -- Nothing else ended: no other outcome of any handler.
        assert.are.equal(4, #m.select("chronis_runs_total", { scheduler = node }))
      end)

      it("counts retries and final failures per handler", function()
        assert.are.equal(1, m.value("chronis_run_retries_total", labels { handler = "bad" }))
        assert.are.equal(0, m.value("chronis_run_retries_total", labels { handler = "slow" }))
        assert.are.equal(0, m.value("chronis_run_retries_total", labels { handler = "ok" }))
        assert.are.equal(2, m.value("chronis_run_failures_total", labels { handler = "bad" }))
        assert.are.equal(1, m.value("chronis_run_failures_total", labels { handler = "slow" }))
        assert.are.equal(0, m.value("chronis_run_failures_total", labels { handler = "ok" }))
      end)

      it("has a duration histogram per handler and a lateness histogram per scheduler", function()
        local function count(h)
          return m.value("chronis_run_duration_seconds_count", { scheduler = node, handler = h })
        end
        assert.are.equal(3, count("ok"))
        assert.are.equal(3, count("bad"))
        assert.are.equal(1, count("slow"))
        assert.are.equal(1, count(QUOTED))
        -- The slow run lasted until its timeout of 0.2 s.
        assert.are.equal(0, m.value("chronis_run_duration_seconds_bucket",
          { scheduler = node, handler = "slow", le = "0.1" }))
        assert.is_true(m.value("chronis_run_duration_seconds_sum",
          { scheduler = node, handler = "slow" }) > 0.1)
        -- Every run that started a handler has its lateness.
        assert.are.equal(8, m.value("chronis_run_lateness_seconds_count", { scheduler = node }))
        -- The reader checked bucket order, monotonic counts and +Inf = _count
        -- for every series; the sums are made of what was observed.
        local sum = 0
        for _, h in ipairs({ "ok", "bad", "slow", QUOTED }) do
          sum = sum + m.value("chronis_run_duration_seconds_sum", { scheduler = node, handler = h })
        end
        assert.is_true(sum > 0.1)
      end)

      it("counts claims, and the claim batches add up to the runs", function()
        local claims = m.value("chronis_claims_total", labels {})
        assert.is_true(claims >= 1)
        assert.are.equal(claims, m.value("chronis_claim_batch_size_count", labels {}))
        -- 7 jobs and one retry: 8 jobs claimed, one run each.
        assert.are.equal(8, m.value("chronis_claim_batch_size_sum", labels {}))
        assert.are.equal(8, m.sum("chronis_runs_total", { scheduler = node }))
      end)

      it("times the store's requests per operation, with no failure", function()
        local claims = m.value("chronis_claims_total", labels {})
        for _, op in ipairs({ "create_job", "claim_due_jobs", "complete_jobs" }) do
          local n = m.value("chronis_store_operation_duration_seconds_count", { store = kind, op = op })
          assert.is_true(n ~= nil and n >= 1, op)
          assert.are.equal(0, m.value("chronis_store_errors_total", { store = kind, op = op }))
        end
        assert.is_true(m.value("chronis_store_operation_duration_seconds_count",
          { store = kind, op = "claim_due_jobs" }) >= claims)
        assert.are.equal(0, m.value("chronis_store_reconnects_total", { store = kind }))
      end)

      it("says how many jobs each status holds, and what runs now", function()
        assert.are.equal(3, m.value("chronis_jobs", labels { status = "failed" }))
        assert.are.equal(0, m.value("chronis_jobs", labels { status = "scheduled" }))
        assert.are.equal(0, m.value("chronis_jobs", labels { status = "running" }))
        assert.are.equal(0, m.value("chronis_handlers_running", { scheduler = node }))
        assert.are.equal(0, m.value("chronis_jobs_queued", { scheduler = node }))
      end)

      it("escapes a handler name with quotes, a backslash and a newline", function()
        assert.truthy(text:find('handler="say \\"hi\\"\\nline two \\\\ end"', 1, true))
        local found = m.select("chronis_runs_total", { scheduler = node, handler = QUOTED })
        assert.are.equal(1, #found)
      end)
    end)
  end

  it("has the process's memory, start time and uptime", function()
    local m = P.parse(render())
    assert.is_true(m.value("chronis_lua_memory_bytes") > 0)
    local start = m.value("chronis_process_start_time_seconds")
    assert.is_true(start > 0 and start <= chronis.time.now() / 1e6)
    assert.is_true(m.value("chronis_uptime_seconds") >= 0)
  end)

  it("counts jobs per status from a count kept for jobs_max_age seconds", function()
    local s = H.scheduler {}
    local later = chronis.time.format(chronis.time.now() + 3600 * H.S)
    s:create_date_job { job_id = "a", func_name = "h", run_date = later }
    s:create_date_job { job_id = "b", func_name = "h", run_date = later }
    local m = P.parse(render(s))
    local l = { scheduler = s:node_id(), store = "memory", status = "scheduled" }
    assert.are.equal(2, m.value("chronis_jobs", l))
    s:create_date_job { job_id = "c", func_name = "h", run_date = later }
    s:pause_job("a")
    -- Within the age the store is not asked again.
    m = P.parse(render(s))
    assert.are.equal(2, m.value("chronis_jobs", l))
    local age = metrics.jobs_max_age
    metrics.jobs_max_age = 0
    local ok, err = pcall(function()
      m = P.parse(render(s))
      assert.are.equal(2, m.value("chronis_jobs", l))
      l.status = "paused"
      assert.are.equal(1, m.value("chronis_jobs", l))
    end)
    metrics.jobs_max_age = age
    assert(ok, err)
  end)

  it("counts only its own jobs for a scheduler with a scope", function()
    local store = chronis.storage.memory()
    local a = H.scheduler { storage = store, filters = { ["metadata.tenant"] = "a" } }
    local later = chronis.time.format(chronis.time.now() + 3600 * H.S)
    a:create_date_job { job_id = "a1", func_name = "h", run_date = later, metadata = { tenant = "a" } }
    a:create_date_job { job_id = "b1", func_name = "h", run_date = later, metadata = { tenant = "b" } }
    a:create_date_job { job_id = "b2", func_name = "h", run_date = later, metadata = { tenant = "b" } }
    local everyone = H.scheduler { storage = store }
    local m = P.parse(render(a, everyone))
    assert.are.equal(1, m.value("chronis_jobs",
      { scheduler = a:node_id(), store = "memory", status = "scheduled" }))
    assert.are.equal(3, m.value("chronis_jobs",
      { scheduler = everyone:node_id(), store = "memory", status = "scheduled" }))
  end)

  it("counts the runs of handlers past the first 1000 names as handler=\"other\"", function()
    local s = H.scheduler { polling_interval = 0.1, max_workers = 50, max_queue_size = 200 }
    local n = 1003
    for i = 1, n do
      s:handler("h" .. i, function() end)
      due(s, "j" .. i, "h" .. i)
    end
    s:start()
    H.wait(function() return s:stats().succeeded == n end, 20, "the runs did not all end")
    local text = render(s)
    local m = P.parse(text)
    local runs = m.select("chronis_runs_total", { scheduler = s:node_id(), outcome = "ok" })
    assert.are.equal(1001, #runs)
    assert.are.equal(n - 1000, m.value("chronis_runs_total",
      { scheduler = s:node_id(), store = "memory", handler = "other", outcome = "ok" }))
    assert.are.equal(n, m.sum("chronis_runs_total", { scheduler = s:node_id() }))
    promtool_check(text)
  end)

  it("escapes a node id with quotes and a backslash in the scheduler label", function()
    local s = H.scheduler { polling_interval = 0.1, node_id = 'node "7" \\ east' }
    s:handler("h", function() end)
    due(s, "j", "h")
    s:start()
    H.wait(function() return s:stats().succeeded == 1 end)
    local text = render(s)
    assert.truthy(text:find('scheduler="node \\"7\\" \\\\ east"', 1, true))
    local m = P.parse(text)
    assert.are.equal(1, m.value("chronis_runs_total",
      { scheduler = 'node "7" \\ east', store = "memory", handler = "h", outcome = "ok" }))
    promtool_check(text)
  end)

  it("counts the failures of a store per kind and operation", function()
    local inner = chronis.storage.memory()
    local fail = false
    local adapter = { is_local = true }
    for _, name in ipairs({ "create_job", "get_job", "update_job", "compare_and_swap_job",
                            "delete_job", "query_jobs" }) do
      adapter[name] = function(_, ...)
        if fail then error(chronis.error("unavailable", "the backend is down")) end
        return inner[name](inner, ...)
      end
    end
    local store = chronis.storage.lua(adapter)
    local function errors(m) return m.value("chronis_store_errors_total", { store = "lua", op = "get_job" }) end
    store:get_job("x")
    local before = errors(P.parse(render()))
    assert.are.equal(0, before)
    fail = true
    U.assert_error("unavailable", store.get_job, store, "x")
    U.assert_error("unavailable", store.get_job, store, "y")
    -- Not a failure of the store: an answer about the request.
    fail = false
    U.assert_error("not_found", store.update_job, store, "missing", { priority = 1 })
    local m = P.parse(render())
    assert.are.equal(2, errors(m))
    assert.are.equal(0, m.value("chronis_store_errors_total", { store = "lua", op = "update_job" }))
    assert.are.equal(3, m.value("chronis_store_operation_duration_seconds_count",
      { store = "lua", op = "get_job" }))
    store:close()
  end)

  it("counts script reloads and the reloads that fail", function()
    local dir = U.tmpdir("chronis-metrics")
    local logs = {}
    scripts.logger = function(level, msg) logs[#logs + 1] = level .. " " .. msg end
    local debounce = scripts.debounce
    scripts.debounce = 0.05
    local function value(name) return P.parse(render()).value(name) end
    local ok, err = pcall(function()
      local reloads, failures = value("chronis_script_reloads_total"),
        value("chronis_script_reload_failures_total")
      local function write(text)
        U.write(dir .. "/h.lua.swp", text)
        assert(os.rename(dir .. "/h.lua.swp", dir .. "/h.lua"))
      end
      write("return function() return 1 end")
      chronis.load_handlers(dir)
      write("return function() return 2 end -- v2")
      assert.is_true(chronis.run_until(function() return #logs >= 1 end, 5))
      assert.are.equal(reloads + 1, value("chronis_script_reloads_total"))
      write("return function(job)\n  oops oops\nend")
      assert.is_true(chronis.run_until(function() return #logs >= 2 end, 5))
      assert.are.equal(failures + 1, value("chronis_script_reload_failures_total"))
      assert.are.equal(reloads + 1, value("chronis_script_reloads_total"))
    end)
    scripts.unwatch_all()
    for k in pairs(chronis.handlers) do chronis.handlers[k] = nil end
    scripts.logger, scripts.debounce = nil, debounce
    U.remove_tree(dir)
    assert(ok, err)
  end)

  it("counts a PostgreSQL store's reconnects", function()
    local server = require("support.postgres").start()
    local store
    local ok, err = pcall(function()
      store = chronis.storage.open(server:url("table=metrics_jobs"))
      local function reconnects()
        return P.parse(render()).value("chronis_store_reconnects_total", { store = "postgres" }) or 0
      end
      local before = reconnects()
      store:create_job { job_id = "a", func_name = "h", status = "scheduled" }
      assert.are.equal(before, reconnects())
      server:psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
        .. "'chronis' AND pid <> pg_backend_pid()")
      -- The next requests find the connection gone and make it again.
      assert.is_true(chronis.run_until(function()
        local ok2 = pcall(store.get_job, store, "a")
        return ok2 and reconnects() > before
      end, 10))
    end)
    if store then store:close() end
    server:stop()
    assert(ok, err)
  end)

  it("counts a Redis store's reconnects", function()
    local redis = require "support.redis"
    local srv = redis.start()
    local store
    local ok, err = pcall(function()
      store = chronis.storage.open(srv.url)
      local function reconnects()
        return P.parse(render()).value("chronis_store_reconnects_total", { store = "redis" }) or 0
      end
      local before = reconnects()
      store:create_job { job_id = "a", func_name = "h", status = "scheduled" }
      assert.are.equal(before, reconnects())
      srv:cli("CLIENT", "KILL", "TYPE", "normal")
      srv:cli("CLIENT", "KILL", "TYPE", "pubsub")
      -- The next request finds the connection gone and makes it again.
      assert.is_true(chronis.run_until(function()
        local ok2 = pcall(store.get_job, store, "a")
        return ok2 and reconnects() > before
      end, 10))
    end)
    if store then store:close() end
    srv:stop()
    assert(ok, err)
  end)
end)
