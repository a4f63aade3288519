-- The JSON API under /api/ (lua/chronis/http_api.lua), called as the
-- router calls it: handle(ctx, req) with a context of real schedulers, on
-- the memory and SQLite stores. Failed jobs and run history come from a
-- handler that really fails; every change is checked in the store.
local chronis = require "chronis"
local api = require "chronis.http_api"
local H = require "support.engine_helper"
local U = require "support.util"

local json, S = chronis.json, 1000000
local dir = U.tmpdir("chronis-http-api")

-- A request as the router (chronis.http_server) builds it: the raw path
-- split on "/" (empty segments dropped), each segment percent-decoded;
-- query values are strings, or lists for a parameter given more than once.
local function request(method, path, query, body)
  local segments = {}
  for seg in path:gmatch("[^/]+") do
    segments[#segments + 1] = seg:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)
  end
  local q, all = {}, {}
  for k, v in pairs(query or {}) do
    all[k] = type(v) == "table" and v or { v }
    q[k] = all[k][#all[k]]
  end
  return { method = method, path = path, segments = segments, query = q, query_all = all,
    headers = { ["content-type"] = "application/json" }, body = body or "", remote = "127.0.0.1" }
end

local function enc(id)
  return (id:gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

local function now_us() return chronis.time.now() end

describe("http_api", function()
  local function suite(name, open_store)
    describe("on " .. name, function()
      local store, s, ctx

      -- status, headers, decoded body
      local function call(method, path, query, body)
        local status, headers, text = api.handle(ctx, request(method, path, query, body))
        assert.are.equal("application/json; charset=utf-8", headers["content-type"])
        assert.are.equal("no-store", headers["cache-control"])
        return status, json.decode(text), headers, text
      end

      local function ok(method, path, query, body)
        local status, doc = call(method, path, query, body)
        assert(status == 200 or status == 201, ("%s %s: %d %s"):format(method, path, status,
          doc.error and doc.error.message or ""))
        return doc, status
      end

      -- The error answer: its status, and the message containing `needle`.
      local function err(status, code, needle, method, path, query, body)
        local got, doc, headers = call(method, path, query, body)
        assert.are.equal(status, got, doc.error and doc.error.message)
        assert.are.equal(code, doc.error.code)
        assert.is_string(doc.error.message)
        if needle then
          assert(doc.error.message:find(needle, 1, true), ("%q lacks %q"):format(doc.error.message, needle))
        end
        return doc.error.message, headers
      end

      local function ids(jobs)
        local out = {}
        for i, j in ipairs(jobs) do out[i] = j.job_id end
        table.sort(out)
        return out
      end

      local function add(fields)
        return ok("POST", "/api/jobs", nil, json.encode(fields)).job
      end

      before_each(function()
        store = open_store()
        s = H.scheduler { storage = store, polling_interval = 0.1 }
        ctx = { schedulers = { s }, can_write = true, read_only = false, started_at = now_us() }
      end)

      after_each(function()
        H.cleanup()
        store:close()
      end)

      -- Jobs: a (every 10m, tenant acme), b (cron, tenant globex), and f1,
      -- f2 (one-shot, tenant acme and globex) whose handler fails: failed,
      -- with one error run each; ok1 ran ok and is gone (one-shot).
      local function seed()
        add { handler = "send_email", every = "10m", id = "a", metadata = { tenant = "acme" } }
        add { handler = "report", cron = "0 9 * * *", timezone = "Europe/Paris", id = "b", name = "Nightly",
          metadata = { tenant = "globex" } }
        s:handler("boom", function() error("feed answered 503") end)
        s:handler("fine", function() end)
        local past = chronis.time.format(now_us() - S)
        for id, tenant in pairs({ f1 = "acme", f2 = "globex" }) do
          s:create_date_job { job_id = id, func_name = "boom", run_date = past, metadata = { tenant = tenant } }
        end
        s:create_date_job { job_id = "ok1", func_name = "fine", run_date = past, metadata = { tenant = "acme" } }
        s:start()
        H.wait(function()
          return store:count_jobs { status = "failed" } == 2 and store:get_job("ok1") == nil
        end, 10, "the runs did not end")
        s:stop()
      end

      it("GET /api/schedulers lists every scheduler with its state, stats and queue", function()
        local other = H.scheduler { storage = chronis.storage.memory(), node_id = "second" }
        ctx.schedulers[2] = other
        local doc = ok("GET", "/api/schedulers")
        assert.are.equal(2, #doc.schedulers)
        local one, two = doc.schedulers[1], doc.schedulers[2]
        assert.are.equal(1, one.index)
        assert.are.equal(s:node_id(), one.node_id)
        assert.are.equal("stopped", one.state)
        assert.are.equal(0, one.queued)
        assert.are.equal(0, one.running)
        assert.are.equal(0, one.stats.succeeded)
        assert.are.same({ 2, "second" }, { two.index, two.node_id })
        seed()
        doc = ok("GET", "/api/schedulers")
        assert.are.equal(1, doc.schedulers[1].stats.succeeded)
        assert.are.equal(2, doc.schedulers[1].stats.failed)
        err(400, "invalid", "unknown query parameter 'x'", "GET", "/api/schedulers", { x = "1" })
      end)

      it("GET /api/stats counts jobs by status and the last hour's runs, as chronis stats --json", function()
        seed()
        local doc = ok("GET", "/api/stats")
        assert.are.same({ scheduled = 2, pending = 0, running = 0, paused = 0, failed = 2, completed = 0 },
          doc.jobs.by_status)
        assert.are.equal(4, doc.jobs.total)
        assert.are.equal(3, doc.last_hour.runs)
        assert.are.equal(2, doc.last_hour.failures)
        assert.are.same({ ok = 1, error = 2 }, doc.last_hour.by_outcome)
        assert.are.equal(0, doc.due.count)
        assert.is_nil(doc.due.oldest) -- null
      end)

      it("GET /api/stats counts at most the newest 10,000 runs, and a change through the API refreshes it", function()
        local now = chronis.time.now()
        local batch = {}
        for i = 1, 10500 do
          local at = chronis.time.format(now - (i % 3000) * 1000000)
          batch[#batch + 1] = { run_id = "bulk/" .. i, job_id = "bulk" .. i, func_name = "fine", started_at = at,
            scheduled_at = at, ended_at = at, duration = 0, outcome = i % 10 == 0 and "error" or "ok",
            attempt = 1, node = "n1" }
          if #batch == 500 then
            store:record_runs(batch)
            batch = {}
          end
        end
        local doc = ok("GET", "/api/stats")
        assert.is_true(doc.last_hour.capped)
        assert.are.equal(10000, doc.last_hour.runs)
        assert.are.equal(doc.last_hour.runs, doc.last_hour.by_outcome.ok + doc.last_hour.by_outcome.error)
        -- A job created elsewhere shows once a change through the API drops
        -- the cached stats (the pause here).
        s:every { seconds = 60 }:config { job_id = "x1" }:run("fine")
        s:every { seconds = 60 }:config { job_id = "x2" }:run("fine")
        ok("POST", "/api/jobs/x1/pause")
        doc = ok("GET", "/api/stats")
        assert.are.equal(1, doc.jobs.by_status.paused)
        assert.are.equal(1, doc.jobs.by_status.scheduled)
      end)

      it("GET /api/jobs lists jobs with their trigger text, filtered and paged", function()
        seed()
        local doc = ok("GET", "/api/jobs")
        assert.are.same({ "a", "b", "f1", "f2" }, ids(doc.jobs))
        assert.are.same({ 4, 50, 0 }, { doc.total, doc.limit, doc.offset })
        local by_id = {}
        for _, j in ipairs(doc.jobs) do by_id[j.job_id] = j end
        assert.are.equal("every 10m", by_id.a.trigger_text)
        assert.are.equal("cron 0 9 * * * Europe/Paris", by_id.b.trigger_text)
        assert.are.equal("once", by_id.f1.trigger_text)
        assert.are.same({ tenant = "acme" }, by_id.a.metadata)

        assert.are.same({ "f1", "f2" }, ids(ok("GET", "/api/jobs", { status = "failed" }).jobs))
        store:update_job("a", { status = "paused" })
        assert.are.same({ "a", "f1", "f2" }, ids(ok("GET", "/api/jobs", { status = "failed,paused" }).jobs))
        assert.are.same({ "a", "f1", "f2" }, ids(ok("GET", "/api/jobs", { status = { "failed", "paused" } }).jobs))
        assert.are.same({ "a", "f1" }, ids(ok("GET", "/api/jobs", { ["meta.tenant"] = "acme" }).jobs))
        assert.are.same({ "f1" }, ids(ok("GET", "/api/jobs", { ["meta.tenant"] = "acme", status = "failed" }).jobs))
        assert.are.same({ "b" }, ids(ok("GET", "/api/jobs", { name = "Nightly" }).jobs))
        assert.are.same({ "f1", "f2" }, ids(ok("GET", "/api/jobs", { handler = "boom" }).jobs))
        assert.are.same({ "a" }, ids(ok("GET", "/api/jobs", { due_before = "20m" }).jobs))
        assert.are.same({ "b" }, ids(ok("GET", "/api/jobs", { due_after = "20m" }).jobs))
        -- an empty value is no filter (a form's unset field)
        assert.are.equal(4, ok("GET", "/api/jobs", { status = "", name = "" }).total)

        -- pages, next run first, jobs without one last (then by id)
        local p1 = ok("GET", "/api/jobs", { limit = "2" })
        local p2 = ok("GET", "/api/jobs", { limit = "2", offset = "2" })
        assert.are.same({ 4, 2, 0 }, { p1.total, p1.limit, p1.offset })
        assert.are.same({ 4, 2, 2 }, { p2.total, p2.limit, p2.offset })
        assert.are.same({ "a", "b" }, { p1.jobs[1].job_id, p1.jobs[2].job_id })
        assert.are.same({ "f1", "f2" }, { p2.jobs[1].job_id, p2.jobs[2].job_id })
        local past = ok("GET", "/api/jobs", { offset = "10" })
        assert.are.same({}, past.jobs)
        assert.are.equal(4, past.total)
        assert.are.equal(1000, ok("GET", "/api/jobs", { limit = "1000" }).limit)
      end)

      it("GET /api/jobs refuses bad parameters, naming them", function()
        local cases = {
          { { limit = "x" }, "invalid query parameter 'limit': expected an integer 1..1000, got 'x'" },
          { { limit = "0" }, "invalid query parameter 'limit': expected an integer 1..1000, got '0'" },
          { { limit = "1001" }, "invalid query parameter 'limit': expected an integer 1..1000, got '1001'" },
          { { offset = "-1" }, "invalid query parameter 'offset': expected an integer 0..1000000000, got '-1'" },
          { { stauts = "failed" }, "unknown query parameter 'stauts'; did you mean 'status'?" },
          { { zzz = "1", limt = "2" }, "unknown query parameters 'limt' (did you mean 'limit'?) and 'zzz'" },
          { { status = "faild" }, "invalid query parameter 'status': unknown value 'faild'; did you mean 'failed'?" },
          { { due_before = "soon" }, "invalid query parameter 'due_before': bad time \"soon\"" },
          { { due_after = "2025-13-01" }, "invalid query parameter 'due_after': bad time \"2025-13-01\"" },
          { { ["meta."] = "x" }, "invalid query parameter 'meta.': the metadata key is empty" },
          { { scheduler = "2" }, "invalid query parameter 'scheduler': no scheduler '2' (expected an index 1..1" },
        }
        for _, c in ipairs(cases) do err(400, "invalid", c[2], "GET", "/api/jobs", c[1]) end
      end)

      it("GET /api/jobs/{id} shows the job, its recent runs and its next run times", function()
        seed()
        local doc = ok("GET", "/api/jobs/f1")
        assert.are.equal("failed", doc.job.status)
        assert.are.equal("once", doc.job.trigger_text)
        assert.are.equal(1, #doc.runs)
        assert.are.equal("error", doc.runs[1].outcome)
        assert.truthy(doc.runs[1].error_message:find("feed answered 503", 1, true))
        assert.truthy(doc.job.last_error.message:find("feed answered 503", 1, true))
        assert.are.same({}, doc.next_runs)

        doc = ok("GET", "/api/jobs/a")
        assert.are.same({}, doc.runs)
        assert.are.equal(5, #doc.next_runs)
        local first = chronis.time.parse(doc.next_runs[1])
        assert.are.equal(chronis.time.parse(doc.job.next_run_time) // 1000, first // 1000)
        for i = 2, 5 do
          assert.truthy(doc.next_runs[i]:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$"), doc.next_runs[i])
          assert.are.equal(600 * S, chronis.time.parse(doc.next_runs[i]) - chronis.time.parse(doc.next_runs[i - 1]))
        end
        doc = ok("GET", "/api/jobs/b")
        assert.are.equal("2", doc.next_runs[2]:sub(1, 1))
        assert.truthy(doc.next_runs[1]:match("T08:00:00%.000Z$") or doc.next_runs[1]:match("T07:00:00%.000Z$"))
        -- a paused job runs at no time until it is resumed
        store:update_job("a", { status = "paused" })
        assert.are.same({}, ok("GET", "/api/jobs/a").next_runs)

        err(404, "not_found", "job 'nope' not found", "GET", "/api/jobs/nope")
        err(400, "invalid", "unknown query parameter 'runs'", "GET", "/api/jobs/a", { runs = "3" })
      end)

      it("job ids with slashes, spaces, unicode and markup work in paths", function()
        for _, id in ipairs({ "a/b c", "<script>alert(1)</script>", "été ✓", "retry", "x%2Fy" }) do
          local job = add { handler = "h", every = "1h", id = id }
          assert.are.equal(id, job.job_id)
          local status, _, headers = call("POST", "/api/jobs", nil,
            json.encode { handler = "h", every = "1h", id = id .. "-2" })
          assert.are.equal(201, status)
          assert.are.equal("/api/jobs/" .. enc(id .. "-2"), headers.location)
          local path = "/api/jobs/" .. enc(id)
          assert.are.equal(id, ok("GET", path).job.job_id)
          assert.are.equal("paused", ok("POST", path .. "/pause").job.status)
          assert.are.equal("paused", store:get_job(id).status)
          assert.are.same({ deleted = id }, ok("DELETE", path))
          assert.is_nil(store:get_job(id))
        end
      end)

      it("POST /api/jobs creates jobs from chronis jobs add's options or a full trigger", function()
        local before = now_us()
        local doc, status = ok("POST", "/api/jobs", nil, json.encode {
          handler = "send_email", ["in"] = "10m", id = "once-1", kwargs = { to = "a@b.c" }, args = { 1, "x" },
          metadata = { tenant = "acme", shard = 3 }, priority = 8, max_retries = 2, retry_delay = "30s",
          timeout = 300 })
        assert.are.equal(201, status)
        assert.are.equal("once-1", doc.job.job_id)
        assert.are.equal("once", doc.job.trigger_text)
        local j = store:get_job("once-1")
        assert.are.equal("send_email", j.func_name)
        assert.are.equal("date", j.trigger_type)
        local nrt = chronis.time.parse(j.next_run_time)
        assert.is_true(nrt >= before + 600 * S and nrt <= now_us() + 600 * S)
        assert.are.same({ to = "a@b.c" }, j.kwargs)
        assert.are.same({ 1, "x" }, j.args)
        assert.are.same({ tenant = "acme", shard = 3 }, j.metadata)
        assert.are.same({ 8, 2, 30, 300 }, { j.priority, j.max_retries, j.retry_delay_seconds, j.timeout_seconds })

        j = add { handler = "report", cron = "30 9 * * mon-fri", timezone = "Europe/Paris", id = "c1" }
        assert.are.equal("cron 30 9 * * mon-fri Europe/Paris", j.trigger_text)
        assert.are.same({ cron = "30 9 * * mon-fri" }, store:get_job("c1").trigger_args)
        j = add { handler = "tick", every = "1h30m", id = "i1" }
        assert.are.same({ hours = 1, minutes = 30 }, store:get_job("i1").trigger_args)
        j = add { handler = "tick", at = "2031-05-01 10:00", timezone = "Europe/Paris", id = "d1" }
        assert.are.equal("2031-05-01T08:00:00Z", store:get_job("d1").next_run_time)
        j = add { handler = "tick", trigger = { type = "interval", seconds = 60 }, id = "t1" }
        assert.are.equal("every 1m", j.trigger_text)
        assert.are.same({ seconds = 60 }, store:get_job("t1").trigger_args)
        j = add { handler = "tick", trigger = { type = "cron", minute = "*/5" }, id = "t2" }
        assert.are.equal("cron", store:get_job("t2").trigger_type)
        j = add { handler = "tick", trigger = { type = "date", run_date = "2031-01-01T00:00:00Z" }, id = "t3" }
        assert.are.equal("2031-01-01T00:00:00Z", store:get_job("t3").next_run_time)
        j = add { handler = "tick", every = "5m" }
        assert.truthy(j.job_id:match("^tick_"), j.job_id)
        assert.are.equal(8, store:count_jobs())
      end)

      it("POST /api/jobs refuses a bad body, naming the field, and creates nothing", function()
        add { handler = "h", every = "5m", id = "taken" }
        local function bad(body, needle, code, status)
          err(status or 400, code or "invalid", needle, "POST", "/api/jobs", nil,
            type(body) == "string" and body or json.encode(body))
        end
        bad("", "invalid request body: expected a JSON object, got nothing")
        bad("{\"handler\":", "invalid request body: json decode: invalid JSON")
        bad("[1,2]", "invalid request body: expected a JSON object, got an array")
        bad("\"x\"", "invalid request body: expected a JSON object, got a string")
        bad({ every = "5m" }, "invalid field 'handler': expected the handler's name, a non-empty string, got nothing")
        bad({ handler = 3, every = "5m" }, "invalid field 'handler': expected the handler's name")
        bad({ handler = "h" }, "a trigger is needed: 'trigger', 'at', 'in', 'every' or 'cron'")
        bad({ handler = "h", every = "5m", cron = "* * * * *" }, "one trigger at most, got 'every' and 'cron'")
        bad({ handler = "h", every = "5m", prority = 1 },
          "invalid request body: unknown field 'prority'; did you mean 'priority'?")
        bad({ handler = "h", every = "5m", priority = 11 },
          "invalid field 'priority': expected an integer from 0 to 10, got 11")
        bad({ handler = "h", every = "5m", priority = 1.5 }, "invalid field 'priority': expected an integer")
        bad({ handler = "h", every = "5m", max_retries = -1 }, "invalid field 'max_retries': expected an integer")
        bad({ handler = "h", every = "5x" }, "invalid field 'every': bad duration \"5x\"")
        bad({ handler = "h", every = "0s" }, "invalid field 'every': the interval must be longer than 0s")
        bad({ handler = "h", every = 5 }, "invalid field 'every': expected a string, got a number")
        bad({ handler = "h", ["in"] = "5m", timeout = "0s" }, "invalid field 'timeout': must be longer than 0s")
        bad({ handler = "h", ["in"] = "5m", retry_delay = -3 }, "invalid field 'retry_delay': expected a duration")
        bad({ handler = "h", at = "tomorrow" }, "invalid field 'at': bad time \"tomorrow\"")
        bad({ handler = "h", every = "5m", timezone = "Mars/Olympus" }, "invalid field 'timezone': unknown zone 'Mars/Olympus'")
        bad({ handler = "h", every = "5m", args = { a = 1 } }, "invalid field 'args': expected an array, got an object")
        bad({ handler = "h", every = "5m", kwargs = { 1, 2 } }, "invalid field 'kwargs': expected an object, got an array")
        bad({ handler = "h", every = "5m", metadata = "x" }, "invalid field 'metadata': expected an object, got a string")
        bad({ handler = "h", trigger = { seconds = 5 } }, "invalid field 'trigger.type': expected interval, cron or date, got nothing")
        bad({ handler = "h", trigger = { type = "interva" } },
          "invalid field 'trigger.type': unknown value 'interva'; did you mean 'interval'?")
        bad({ handler = "h", cron = "nope" }, "cron")
        bad({ handler = "h", every = "5m", id = "taken" }, "job 'taken' already exists", "duplicate", 409)
        assert.are.equal(1, store:count_jobs())
      end)

      it("POST /api/jobs takes queue, on_exhausted, max_instances, overlap and unique, and the view shows them", function()
        local doc, status = ok("POST", "/api/jobs", nil, json.encode {
          handler = "tick", every = "5m", id = "q1", queue = "mail", on_exhausted = "pause", max_instances = 3,
          overlap = "skip" })
        assert.are.equal(201, status)
        assert.are.same({ "mail", "pause", 3, "skip" },
          { doc.job.queue, doc.job.on_exhausted, doc.job.max_instances, doc.job.overlap })
        local j = store:get_job("q1")
        assert.are.same({ "mail", "pause", 3, "skip" }, { j.queue, j.on_exhausted, j.max_instances, j.overlap })
        local shown = ok("GET", "/api/jobs/q1").job
        assert.are.same({ "mail", "pause", 3, "skip" },
          { shown.queue, shown.on_exhausted, shown.max_instances, shown.overlap })

        -- unique twice: one job, the second answer 200 with existed.
        local body = json.encode { handler = "tick", every = "5m", kwargs = { order = 42 }, unique = true }
        local first, st1 = ok("POST", "/api/jobs", nil, body)
        assert.are.equal(201, st1)
        assert.is_false(first.existed)
        local second, st2 = ok("POST", "/api/jobs", nil, body)
        assert.are.equal(200, st2)
        assert.is_true(second.existed)
        assert.are.equal(first.job.job_id, second.job.job_id)
        assert.are.equal(2, store:count_jobs())

        -- a key and a period of its own.
        local keyed = json.encode { handler = "tick", ["in"] = "1h", unique = { key = "receipt-7", period = "2h" } }
        local k1, sk1 = ok("POST", "/api/jobs", nil, keyed)
        assert.are.equal(201, sk1)
        assert.are.equal("receipt-7", store:get_job(k1.job.job_id).unique_key)
        local until_us = chronis.time.parse(store:get_job(k1.job.job_id).unique_until)
        local created_us = chronis.time.parse(store:get_job(k1.job.job_id).created_at)
        assert.are.equal(7200 * S, until_us - created_us)
        local k2, sk2 = ok("POST", "/api/jobs", nil, keyed)
        assert.are.same({ 200, true, k1.job.job_id }, { sk2, k2.existed, k2.job.job_id })
        assert.are.equal(3, store:count_jobs())
        -- a create without unique answers without the flag.
        assert.is_nil(ok("POST", "/api/jobs", nil, json.encode { handler = "tick", every = "5m" }).existed)
      end)

      it("POST /api/jobs refuses bad queue, on_exhausted, max_instances, overlap and unique, naming the field", function()
        local function bad(body, needle)
          err(400, "invalid", needle, "POST", "/api/jobs", nil, json.encode(body))
        end
        bad({ handler = "h", every = "5m", queue = "a/b" }, "invalid field 'queue': expected a queue name")
        bad({ handler = "h", every = "5m", queue = 3 }, "invalid field 'queue': expected a queue name")
        bad({ handler = "h", every = "5m", on_exhausted = "stop" },
          "invalid field 'on_exhausted': unknown value 'stop' (expected next, fail, pause)")
        bad({ handler = "h", every = "5m", on_exhausted = 1 }, "invalid field 'on_exhausted': expected one of")
        bad({ handler = "h", every = "5m", max_instances = 0 },
          "invalid field 'max_instances': expected an integer from 1 to 1000, got 0")
        bad({ handler = "h", every = "5m", max_instances = 1001 }, "invalid field 'max_instances'")
        bad({ handler = "h", every = "5m", overlap = "drop" }, "invalid field 'overlap': unknown value 'drop'")
        bad({ handler = "h", ["in"] = "5m", overlap = "skip" }, "invalid field 'overlap': applies to recurring jobs")
        bad({ handler = "h", every = "5m", unique = "yes" }, "invalid field 'unique': expected true or an object")
        bad({ handler = "h", every = "5m", unique = { ky = "x" } }, "invalid field 'unique': unknown key 'ky'")
        bad({ handler = "h", every = "5m", unique = { key = "" } }, "invalid field 'unique.key': expected a string")
        bad({ handler = "h", every = "5m", unique = { period = "0s" } }, "invalid field 'unique.period': expected from 1s")
        bad({ handler = "h", every = "5m", unique = true, id = "x" }, "invalid field 'id': a unique job's id")
        assert.are.equal(0, store:count_jobs())
      end)

      it("POST /api/jobs/{id}/pause, resume, run and retry change the job through the Scheduler", function()
        seed()
        local j = ok("POST", "/api/jobs/a/pause").job
        assert.are.equal("paused", j.status)
        assert.are.equal("every 10m", j.trigger_text)
        assert.are.equal("paused", store:get_job("a").status)
        err(409, "invalid_state", "cannot pause job 'a': its status is paused", "POST", "/api/jobs/a/pause")
        assert.are.equal("scheduled", ok("POST", "/api/jobs/a/resume").job.status)
        assert.are.equal("scheduled", store:get_job("a").status)
        err(409, "invalid_state", "cannot resume job 'a': its status is scheduled", "POST", "/api/jobs/a/resume")

        local before = now_us()
        j = ok("POST", "/api/jobs/b/run").job
        assert.are.equal("scheduled", j.status)
        local nrt = chronis.time.parse(store:get_job("b").next_run_time)
        assert.is_true(nrt >= before - S and nrt <= now_us(), "due now")

        j = ok("POST", "/api/jobs/f1/retry").job
        assert.are.equal("scheduled", j.status)
        assert.are.equal(0, store:get_job("f1").retry_count)
        assert.are.equal("scheduled", store:get_job("f1").status)
        err(409, "invalid_state", "cannot retry job 'a': its status is scheduled", "POST", "/api/jobs/a/retry")
        for _, action in ipairs({ "pause", "resume", "run", "retry" }) do
          err(404, "not_found", "job 'nope' not found", "POST", "/api/jobs/nope/" .. action)
        end
        err(400, "invalid", "unknown query parameter 'force'", "POST", "/api/jobs/a/pause", { force = "1" })
      end)

      it("DELETE /api/jobs/{id} deletes the job", function()
        seed()
        assert.are.same({ deleted = "f2" }, ok("DELETE", "/api/jobs/f2"))
        assert.is_nil(store:get_job("f2"))
        err(404, "not_found", "job 'f2' not found", "DELETE", "/api/jobs/f2")
        assert.are.equal(3, store:count_jobs())
      end)

      it("POST /api/jobs/retry retries the failed jobs matching the filters", function()
        seed()
        local doc = ok("POST", "/api/jobs/retry", { ["meta.tenant"] = "acme" })
        assert.are.same({ retried = 1, job_ids = { "f1" } }, doc)
        assert.are.equal("scheduled", store:get_job("f1").status)
        assert.are.equal("failed", store:get_job("f2").status)
        assert.are.same({ retried = 0, job_ids = {} }, ok("POST", "/api/jobs/retry", { handler = "send_email" }))
        err(400, "invalid", "unknown query parameter 'status'", "POST", "/api/jobs/retry", { status = "failed" })
        assert.are.same({ retried = 1, job_ids = { "f2" } }, ok("POST", "/api/jobs/retry"))
        assert.are.equal(0, store:count_jobs { status = "failed" })
        -- GET and DELETE of /api/jobs/retry are a job's like any other
        err(404, "not_found", "job 'retry' not found", "GET", "/api/jobs/retry")
      end)

      it("GET /api/runs lists runs newest first, filtered and paged", function()
        seed()
        local function run_jobs(doc)
          local out = {}
          for i, r in ipairs(doc.runs) do out[i] = r.job_id end
          table.sort(out)
          return out
        end
        local doc = ok("GET", "/api/runs")
        assert.are.same({ "f1", "f2", "ok1" }, run_jobs(doc))
        assert.are.same({ 50, 0, false }, { doc.limit, doc.offset, doc.more })
        assert.are.same({ "f1" }, run_jobs(ok("GET", "/api/runs", { job_id = "f1" })))
        assert.are.same({ "f1", "f2" }, run_jobs(ok("GET", "/api/runs", { outcome = "error" })))
        assert.are.same({ "f1", "f2", "ok1" }, run_jobs(ok("GET", "/api/runs", { outcome = "ok,error" })))
        assert.are.same({ "ok1" }, run_jobs(ok("GET", "/api/runs", { handler = "fine" })))
        assert.are.same({ "f1", "ok1" }, run_jobs(ok("GET", "/api/runs", { ["meta.tenant"] = "acme" })))
        assert.are.same({ "f1", "f2", "ok1" }, run_jobs(ok("GET", "/api/runs", { since = "1h" })))
        assert.are.same({}, run_jobs(ok("GET", "/api/runs", { ["until"] = "-1h" })))
        local p1 = ok("GET", "/api/runs", { limit = "2" })
        local p2 = ok("GET", "/api/runs", { limit = "2", offset = "2" })
        assert.are.same({ 2, true }, { #p1.runs, p1.more })
        assert.are.same({ 1, false }, { #p2.runs, p2.more })
        assert.is_true(p1.runs[1].started_at >= p1.runs[2].started_at)
        err(400, "invalid", "invalid query parameter 'outcome': unknown value 'eror'; did you mean 'error'?",
          "GET", "/api/runs", { outcome = "eror" })
        err(400, "invalid", "invalid query parameter 'since': bad time", "GET", "/api/runs", { since = "x" })
        err(400, "invalid", "invalid query parameter 'limit': expected an integer 1..1000", "GET", "/api/runs",
          { limit = "5000" })
        err(400, "invalid", "unknown query parameter 'jobid'; did you mean 'job_id'?", "GET", "/api/runs",
          { jobid = "f1" })
      end)

      it("answers a change without the write token 403 read_only and changes nothing", function()
        seed()
        ctx.can_write = false
        err(403, "read_only", "read-only", "POST", "/api/jobs", nil, json.encode { handler = "h", every = "5m" })
        err(403, "read_only", nil, "POST", "/api/jobs/a/pause")
        err(403, "read_only", nil, "POST", "/api/jobs/retry")
        err(403, "read_only", nil, "DELETE", "/api/jobs/a")
        assert.are.equal(4, store:count_jobs())
        assert.are.equal("scheduled", store:get_job("a").status)
        assert.are.equal(2, store:count_jobs { status = "failed" })
        assert.are.equal(4, ok("GET", "/api/jobs").total)
      end)

      it("GET /api/access says whether the caller may change jobs", function()
        ctx.can_write, ctx.read_only = true, false
        assert.are.same({ can_write = true, read_only = false }, ok("GET", "/api/access"))
        ctx.can_write, ctx.read_only = false, true
        assert.are.same({ can_write = false, read_only = true }, ok("GET", "/api/access"))
        ctx.can_write, ctx.read_only = false, false
        assert.are.same({ can_write = false, read_only = false }, ok("GET", "/api/access", { scheduler = "1" }))
        err(400, "invalid", "unknown query parameter 'x'", "GET", "/api/access", { x = "1" })
      end)

      it("answers unknown routes 404 and wrong methods 405 with an Allow header", function()
        for _, p in ipairs({ "/api", "/api/", "/api/nope", "/api/jobs/a/b", "/api/jobs/a/pause/x",
          "/api/runs/x", "/apix/jobs" }) do
          err(404, "not_found", "no API route " .. p, "GET", p)
        end
        local cases = {
          { "PUT", "/api/jobs", "GET, HEAD, POST" }, { "DELETE", "/api/jobs", "GET, HEAD, POST" },
          { "POST", "/api/jobs/a", "GET, HEAD, DELETE" }, { "PATCH", "/api/jobs/retry", "GET, HEAD, POST, DELETE" },
          { "GET", "/api/jobs/a/pause", "POST" }, { "HEAD", "/api/jobs/a/pause", "POST" },
          { "POST", "/api/schedulers", "GET, HEAD" }, { "DELETE", "/api/stats", "GET, HEAD" },
          { "POST", "/api/runs", "GET, HEAD" },
        }
        for _, c in ipairs(cases) do
          local _, headers = err(405, "method_not_allowed", ("method %s is not allowed on %s (allowed: %s)"):format(
            c[1], c[2], c[3]), c[1], c[2])
          assert.are.equal(c[3], headers.allow)
        end
        -- HEAD is answered as GET (the server sends no body); a trailing
        -- slash is the same route
        add { handler = "h", every = "5m", id = "a" }
        assert.are.equal(1, ok("HEAD", "/api/jobs").total)
        assert.are.equal(1, ok("GET", "/api/jobs/").total)
        assert.are.equal("a", ok("HEAD", "/api/jobs/a").job.job_id)
      end)

      it("?scheduler= picks a scheduler by index or node id", function()
        local other_store = chronis.storage.memory()
        local other = H.scheduler { storage = other_store, node_id = "second" }
        ctx.schedulers[2] = other
        add { handler = "h", every = "5m", id = "first-job" }
        ok("POST", "/api/jobs", { scheduler = "2" }, json.encode { handler = "h", every = "5m", id = "second-job" })
        assert.is_nil(store:get_job("second-job"))
        assert.are.equal("second-job", other_store:get_job("second-job").job_id)
        assert.are.same({ "second-job" }, ids(ok("GET", "/api/jobs", { scheduler = "second" }).jobs))
        assert.are.same({ "first-job" }, ids(ok("GET", "/api/jobs", { scheduler = "1" }).jobs))
        assert.are.same({ "first-job" }, ids(ok("GET", "/api/jobs").jobs))
        assert.are.equal(1, ok("GET", "/api/stats", { scheduler = "second" }).jobs.total)
        ok("POST", "/api/jobs/second-job/pause", { scheduler = "second" })
        assert.are.equal("paused", other_store:get_job("second-job").status)
        err(404, "not_found", "job 'second-job' not found", "POST", "/api/jobs/second-job/pause")
        err(400, "invalid", "invalid query parameter 'scheduler': no scheduler 'third' (expected an index 1..2 "
          .. "or a node id: '" .. s:node_id() .. "', 'second')", "GET", "/api/jobs", { scheduler = "third" })
        err(400, "invalid", "no scheduler '0'", "GET", "/api/jobs", { scheduler = "0" })
        other_store:close()
      end)
    end)
  end

  suite("memory", function() return chronis.storage.memory() end)

  local n = 0
  suite("sqlite", function()
    n = n + 1
    return chronis.storage.open(("sqlite:%s/store-%d.db"):format(dir, n))
  end)

  describe("store failures and bugs", function()
    after_each(H.cleanup)

    it("answers 503 unavailable when the store is closed", function()
      local store = chronis.storage.memory()
      local s = H.scheduler { storage = store }
      store:close()
      local status, _, text = api.handle({ schedulers = { s }, can_write = true }, request("GET", "/api/jobs"))
      assert.are.equal(503, status)
      assert.are.equal("unavailable", json.decode(text).error.code)
    end)

    -- (the process log shows the failure's traceback)
    it("answers 500 internal with the error's text when a part of the server fails", function()
      local broken = setmetatable({}, { __index = function(_, k) error("no method " .. k, 0) end })
      local status, _, text = api.handle({ schedulers = { broken } }, request("GET", "/api/stats"))
      assert.are.equal(500, status)
      assert.are.same({ error = { code = "internal", message = "internal error: no method now" } }, json.decode(text))
    end)
  end)

  describe("on a store without run history", function()
    after_each(H.cleanup)

    it("shows jobs without runs and answers /api/runs 501 unsupported", function()
      local store = U.minimal_store()
      local s = H.scheduler { storage = store }
      local ctx = { schedulers = { s }, can_write = true }
      s:create_interval_job { job_id = "a", func_name = "h", minutes = 5 }
      local status, _, text = api.handle(ctx, request("GET", "/api/jobs/a"))
      local doc = json.decode(text)
      assert.are.equal(200, status)
      assert.is_nil(doc.runs) -- null
      assert.truthy(text:find('"runs":null', 1, true))
      assert.are.equal("this store keeps no run history", doc.no_history)
      status, _, text = api.handle(ctx, request("GET", "/api/runs"))
      assert.are.equal(501, status)
      assert.are.same({ error = { code = "unsupported", message = "no run history: this store keeps no run history" } },
        json.decode(text))
      store:close()
    end)
  end)
end)
