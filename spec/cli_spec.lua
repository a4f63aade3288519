-- `chronis jobs ...` and `chronis stats` (lua/chronis/cli.lua) as a user
-- runs them: build/chronis as a subprocess, its stdout, stderr and exit
-- code, on SQLite, PostgreSQL and Redis (real servers started by
-- spec/support). The store is prepared and checked through the Lua API in
-- this process, on the same URL.
local chronis = require "chronis"
local U = require "support.util"
local PG = require "support.postgres"
local redis = require "support.redis"

local S = 1000000
local json = chronis.json

local dir = U.tmpdir("chronis-cli")

-- Runs `chronis <args>` in `cwd` (default: the spec's folder) with env
-- (a table of variables; TZ is UTC unless given). Returns the exit code,
-- stdout and stderr.
local function cli(args, env, cwd)
  local out, err = dir .. "/stdout.txt", dir .. "/stderr.txt"
  local vars = { TZ = "UTC", CHRONIS_STORAGE = "" }
  for k, v in pairs(env or {}) do vars[k] = v end
  local unset, set = {}, {}
  for k, v in pairs(vars) do
    if v == "" then unset[#unset + 1] = "-u " .. k else set[#set + 1] = k .. "=" .. U.sh_quote(v) end
  end
  -- env reads its options before the first assignment only.
  local prefix = table.move(set, 1, #set, #unset + 1, unset)
  local words = {}
  for i, a in ipairs(args) do words[i] = U.sh_quote(a) end
  local cmd = ("cd %s && env %s %s %s >%s 2>%s </dev/null"):format(U.sh_quote(cwd or dir),
    table.concat(prefix, " "), U.sh_quote(U.BIN), table.concat(words, " "), U.sh_quote(out), U.sh_quote(err))
  local _, how, code = os.execute(cmd)
  if how == "signal" then code = 128 + code end
  return code, U.read(out, ""), U.read(err, "")
end

-- `chronis <args> --json`, which must succeed: the decoded document.
local function cli_json(args, env)
  local a = {}
  for i, v in ipairs(args) do a[i] = v end
  a[#a + 1] = "--json"
  local code, out, err = cli(a, env)
  assert(code == 0, ("chronis %s exited %d: %s"):format(table.concat(a, " "), code, err))
  assert(err == "", "stderr: " .. err)
  return json.decode(out)
end

local function now_us() return chronis.time.now() end
local function us(iso) return chronis.time.parse(iso) end

local function ids_of(jobs)
  local ids = {}
  for i, j in ipairs(jobs) do ids[i] = j.job_id end
  table.sort(ids)
  return ids
end

-- Every line of `text` that contains `needle`.
local function line_with(text, needle)
  for line in text:gmatch("[^\n]+") do
    if line:find(needle, 1, true) then return line end
  end
  return nil
end

local function assert_contains(text, needle)
  assert(text:find(needle, 1, true), ("%q does not contain %q"):format(text, needle))
end

-- The storage suite: url() gives a fresh, empty store's URL.
local function suite(name, url)
  describe("on " .. name, function()
    local u, store

    before_each(function()
      u = url()
      -- The loop has not run while the previous test's subprocesses ran:
      -- one turn brings its clock up to date before a connection's
      -- timers are armed from it.
      chronis.sleep(0.001)
      store = chronis.storage.open(u)
    end)

    after_each(function()
      store:close()
      U.assert_loop_clean(2)
    end)

    local function run(...)
      local args = { ... }
      args[#args + 1] = "--storage"
      args[#args + 1] = u
      return cli(args)
    end

    local function run_json(...)
      local args = { ... }
      args[#args + 1] = "--storage"
      args[#args + 1] = u
      return cli_json(args)
    end

    -- Three jobs: a (every 10m, tenant acme), b (cron, tenant 42), c (once in 2h).
    local function seed()
      assert.are.equal(0, (run("jobs", "add", "send_email", "--every", "10m", "--id", "a", "--meta", "tenant=acme",
        "--kwargs", '{"to":"a@b.c"}')))
      assert.are.equal(0, (run("jobs", "add", "report", "--cron", "0 9 * * *", "--timezone", "Europe/Paris",
        "--id", "b", "--meta", "tenant=42", "--name", "Nightly report", "--max-retries", "3")))
      assert.are.equal(0, (run("jobs", "add", "send_email", "--in", "2h", "--id", "c", "--args", "[1,2]")))
    end

    it("jobs add creates one-shot, interval and cron jobs and prints the id and next run", function()
      local before = now_us()
      local code, out, err = run("jobs", "add", "send_email", "--in", "10m", "--id", "once-1",
        "--kwargs", '{"to":"a@b.c"}', "--args", '[1,"x"]', "--meta", "tenant=acme", "--meta", "shard=3",
        "--priority", "8", "--max-retries", "2", "--retry-delay", "30s", "--timeout", "5m")
      local after = now_us()
      assert.are.equal(0, code, err)
      assert.are.equal("", err)
      assert_contains(out, "created job once-1")
      assert_contains(out, "in 10m")
      local j = store:get_job("once-1")
      assert.are.equal("send_email", j.func_name)
      assert.are.equal("date", j.trigger_type)
      assert.is_true(us(j.next_run_time) >= before + 600 * S and us(j.next_run_time) <= after + 600 * S)
      assert.are.same({ to = "a@b.c" }, j.kwargs)
      assert.are.same({ 1, "x" }, j.args)
      assert.are.same({ tenant = "acme", shard = 3 }, j.metadata)
      assert.are.equal(8, j.priority)
      assert.are.equal(2, j.max_retries)
      assert.are.equal(30, j.retry_delay_seconds)
      assert.are.equal(300, j.timeout_seconds)

      code, out, err = run("jobs", "add", "report", "--cron", "30 9 * * mon-fri", "--timezone", "Europe/Paris",
        "--id", "cron-1")
      assert.are.equal(0, code, err)
      assert_contains(out, "created job cron-1 (cron 30 9 * * mon-fri Europe/Paris)")
      j = store:get_job("cron-1")
      assert.are.same({ cron = "30 9 * * mon-fri" }, j.trigger_args)
      assert.are.equal("Europe/Paris", j.timezone)
      assert.are.equal(chronis.cron.next("30 9 * * mon-fri", now_us(), "Europe/Paris"), j.next_run_time)

      local doc = run_json("jobs", "add", "tick", "--every", "1h30m")
      assert.are.equal("interval", doc.job.trigger_type)
      assert.are.same({ hours = 1, minutes = 30 }, doc.job.trigger_args)
      assert.are.same(doc.job, store:get_job(doc.job.job_id))

      code, out, err = run("jobs", "add", "tick", "--at", "2031-05-01 12:00", "--timezone", "Asia/Tokyo",
        "--id", "at-1")
      assert.are.equal(0, code, err)
      assert.are.equal("2031-05-01T03:00:00Z", store:get_job("at-1").next_run_time)
    end)

    it("jobs add refuses a duplicate id (exit 1) and bad input (exit 2), creating nothing", function()
      seed()
      local code, out, err = run("jobs", "add", "x", "--every", "5m", "--id", "a")
      assert.are.equal(1, code)
      assert.are.equal("", out)
      assert_contains(err, "'a'")
      code, _, err = run("jobs", "add", "x", "--cron", "61 * * * *", "--id", "bad")
      assert.are.equal(2, code)
      assert_contains(err, "61")
      assert.is_nil(store:get_job("bad"))
      assert.are.equal(3, store:count_jobs())
    end)

    it("jobs add takes --queue, --on-exhausted, --max-instances and --overlap, and jobs show shows them", function()
      local code, out, err = run("jobs", "add", "tick", "--every", "5m", "--id", "q1", "--queue", "mail",
        "--on-exhausted", "pause", "--max-instances", "3", "--overlap", "skip")
      assert.are.equal(0, code, err)
      assert_contains(out, "created job q1")
      local j = store:get_job("q1")
      assert.are.same({ "mail", "pause", 3, "skip" }, { j.queue, j.on_exhausted, j.max_instances, j.overlap })
      code, out, err = run("jobs", "show", "q1")
      assert.are.equal(0, code, err)
      assert.truthy(line_with(out, "queue"):match("mail$"), out)
      assert.truthy(line_with(out, "if exhausted"):match("pause$"), out)
      assert_contains(line_with(out, "instances"), "3 at once; a slot due while they run is skipped")

      -- The defaults show no queue, exhaustion or instances line.
      assert.are.equal(0, (run("jobs", "add", "tick", "--every", "5m", "--id", "plain")))
      code, out = run("jobs", "show", "plain")
      assert.are.equal(0, code)
      assert.is_nil(line_with(out, "queue"))
      assert.is_nil(line_with(out, "if exhausted"))
      assert.is_nil(line_with(out, "instances"))

      -- The engine's slots, when a job holds them, as times.
      store:update_job("plain", { retry_slot = "2030-01-02T03:04:05Z", queued_slot = "2030-01-02T03:09:05Z" })
      code, out = run("jobs", "show", "plain")
      assert.are.equal(0, code)
      assert_contains(line_with(out, "retrying slot"), "2030-01-02 03:04:05 UTC")
      assert_contains(line_with(out, "waiting slot"), "2030-01-02 03:09:05 UTC")
    end)

    it("jobs list --queue lists the jobs of one queue, paged, with the other filters", function()
      for _, a in ipairs({ { "q1", "mail", "5m" }, { "q2", "mail", "7m" }, { "q3", "bulk", "6m" } }) do
        assert.are.equal(0, (run("jobs", "add", "tick", "--every", a[3], "--id", a[1], "--queue", a[2])))
      end
      assert.are.equal(0, (run("jobs", "add", "other", "--every", "1m", "--id", "d1")))
      local doc = run_json("jobs", "list", "--queue", "mail")
      assert.are.same({ "q1", "q2" }, ids_of(doc.jobs))
      assert.are.equal(2, doc.total)
      assert.are.same({ "d1" }, ids_of(run_json("jobs", "list", "--queue", "default").jobs))
      doc = run_json("jobs", "list", "--queue", "mail", "--limit", "1", "--offset", "1")
      assert.are.same({ 2, { "q2" } }, { doc.total, ids_of(doc.jobs) })
      assert.are.same({}, run_json("jobs", "list", "--queue", "mail", "--handler", "other").jobs)
      local code, out, err = run("jobs", "list", "--queue", "mail")
      assert.are.equal(0, code, err)
      assert.truthy(line_with(out, "q1") and line_with(out, "q2") and not line_with(out, "q3"), out)
      assert_contains(out, "2 jobs")
      code, out = run("jobs", "list", "--queue", "none")
      assert.are.same({ 0, "no jobs match\n" }, { code, out })
      code, _, err = run("jobs", "list", "--queue", "a b")
      assert.are.equal(2, code)
      assert_contains(err, "--queue: expected a queue name")
    end)

    it("jobs add --unique twice creates one job and says the second found it", function()
      local code, out, err = run("jobs", "add", "send_receipt", "--in", "1h", "--kwargs", '{"order":42}', "--unique")
      assert.are.equal(0, code, err)
      assert_contains(out, "created job unique-")
      local id = out:match("created job (%S+)")
      code, out, err = run("jobs", "add", "send_receipt", "--in", "1h", "--kwargs", '{"order":42}', "--unique")
      assert.are.equal(0, code, err)
      assert_contains(out, "found the existing job " .. id)
      assert.are.equal(1, store:count_jobs())

      local doc = run_json("jobs", "add", "x", "--every", "5m", "--unique-key", "k7", "--unique-period", "2h")
      assert.is_false(doc.existed)
      local j = store:get_job(doc.job.job_id)
      assert.are.equal("k7", j.unique_key)
      assert.are.equal(7200 * S, us(j.unique_until) - us(j.created_at))
      local again = run_json("jobs", "add", "x", "--every", "5m", "--unique-key", "k7", "--unique-period", "2h")
      assert.is_true(again.existed)
      assert.are.equal(doc.job.job_id, again.job.job_id)
      assert.are.equal(2, store:count_jobs())
      assert.is_nil(run_json("jobs", "add", "x", "--every", "5m").existed)
    end)

    it("jobs add refuses bad --queue, --on-exhausted, --max-instances, --overlap and --unique-*, naming the option", function()
      for _, case in ipairs({
        { { "--every", "5m", "--queue", "a/b" }, "--queue: expected a queue name" },
        { { "--every", "5m", "--on-exhausted", "stop" }, "--on-exhausted: unknown value 'stop' (expected next, fail, pause)" },
        { { "--every", "5m", "--on-exhausted", "paus" }, "--on-exhausted: unknown value 'paus'; did you mean 'pause'?" },
        { { "--every", "5m", "--max-instances", "0" }, "--max-instances: expected an integer from 1 to 1000, got \"0\"" },
        { { "--every", "5m", "--max-instances", "x" }, "--max-instances: expected an integer" },
        { { "--every", "5m", "--overlap", "drop" }, "--overlap: unknown value 'drop'" },
        { { "--in", "5m", "--on-exhausted", "fail" }, "--on-exhausted: applies to recurring jobs only" },
        { { "--at", "2031-01-01", "--max-instances", "2" }, "--max-instances: applies to recurring jobs only" },
        { { "--every", "5m", "--unique-period", "0s" }, "--unique-period: expected from 1s" },
        { { "--every", "5m", "--unique-period", "soon" }, "--unique-period" },
        { { "--every", "5m", "--unique-key", "" }, "--unique-key: expected a string of 1 to 1024 bytes" },
        { { "--every", "5m", "--unique", "--id", "x" }, "--id: a unique job's id is derived from its key" },
      }) do
        local args = { "jobs", "add", "h" }
        for _, a in ipairs(case[1]) do args[#args + 1] = a end
        local code, out, err = run(table.unpack(args))
        assert.are.equal(2, code, table.concat(case[1], " "))
        assert.are.equal("", out)
        assert_contains(err, case[2])
      end
      assert.are.equal(0, store:count_jobs())
    end)

    it("jobs list shows jobs next run first in an aligned table, and --json gives the records", function()
      seed()
      local code, out, err = run("jobs", "list")
      assert.are.equal(0, code, err)
      local lines = {}
      for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
      assert.are.equal(5, #lines, out)
      assert.truthy(lines[1]:match("^ID%s+NAME%s+HANDLER%s+STATUS%s+NEXT RUN %(UTC%)%s+TRIGGER$"), lines[1])
      -- Next run first: b's (09:00 Paris) comes before or after c's (in
      -- 2 h) depending on the time of day, so the order is the store's.
      local order = { "a", "b", "c" }
      table.sort(order, function(x, y)
        return us(store:get_job(x).next_run_time) < us(store:get_job(y).next_run_time)
      end)
      local row = {}
      for i = 1, 3 do
        assert.truthy(lines[i + 1]:match("^" .. order[i] .. "%s"), out)
        row[order[i]] = lines[i + 1]
      end
      -- aligned: every row's STATUS starts under the header's
      local col = lines[1]:find("STATUS", 1, true)
      for i = 2, 4 do assert.are.equal("scheduled", lines[i]:sub(col, col + 8), lines[i]) end
      assert_contains(row.a, "every 10m")
      assert_contains(row.b, "cron 0 9 * * * Europe/Paris")
      assert_contains(row.b, "Nightly report")
      assert.are.equal("3 jobs", lines[5])

      local doc = run_json("jobs", "list")
      assert.are.equal(3, doc.total)
      assert.are.same(order, { doc.jobs[1].job_id, doc.jobs[2].job_id, doc.jobs[3].job_id })
      for i = 1, 3 do assert.are.same(store:get_job(order[i]), doc.jobs[i]) end
    end)

    it("jobs list filters by status, name, handler, metadata and due time", function()
      seed()
      store:update_job("c", { status = "paused" })
      store:update_job("a", { status = "failed", next_run_time = json.null })
      local function ids(...) return ids_of(run_json("jobs", "list", ...).jobs) end
      assert.are.same({ "a", "c" }, ids("--status", "failed,paused"))
      assert.are.same({ "a", "c" }, ids("--status", "failed", "--status", "paused"))
      assert.are.same({ "b" }, ids("--status", "scheduled"))
      assert.are.same({ "a", "c" }, ids("--handler", "send_email"))
      assert.are.same({ "b" }, ids("--name", "Nightly report"))
      assert.are.same({}, ids("--name", "Nightly"))
      assert.are.same({ "a" }, ids("--meta", "tenant=acme"))
      assert.are.same({ "b" }, ids("--meta", "tenant=42"))
      assert.are.same({}, ids("--meta", 'tenant="42"'))
      assert.are.same({ "c" }, ids("--due-before", "3h", "--handler", "send_email"))
      -- b runs at 09:00 Paris: whether it is more than an hour away depends
      -- on the time of day, so the expectation is computed from the store
      local after = ids("--due-after", "1h")
      table.sort(after)
      local b_later = us(store:get_job("b").next_run_time) > now_us() + 3600 * S
      assert.are.same(b_later and { "b", "c" } or { "c" }, after)
      assert.are.same({}, ids("--due-before", "-1m"))
      local code, out = run("jobs", "list", "--status", "running")
      assert.are.equal(0, code)
      assert.are.equal("no jobs match\n", out)
      -- a retry under way shows in the status; a failed job's used retries do not
      store:update_job("b", { retry_count = 2 })
      store:update_job("a", { retry_count = 1 })
      code, out = run("jobs", "list")
      assert.are.equal(0, code)
      assert.truthy(line_with(out, "Nightly report"):match("%sscheduled %(retry 2/3%)%s"), out)
      assert.truthy(out:match("\na%s[^\n]-%sfailed%s+%-"), out)
    end)

    it("jobs list pages with --limit and --offset and says how to get the rest", function()
      for i = 1, 7 do
        assert.are.equal(0, (run("jobs", "add", "h", "--every", i .. "m", "--id", ("p%d"):format(i))))
      end
      local code, out = run("jobs", "list", "--limit", "3")
      assert.are.equal(0, code)
      assert_contains(out, "showing 1-3 of 7; --offset 3 for more")
      assert.is_nil(line_with(out, "p4"))
      code, out = run("jobs", "list", "--limit", "3", "--offset", "6")
      assert.are.equal(0, code)
      assert_contains(out, "p7")
      assert_contains(out, "showing 7-7 of 7")
      local doc = run_json("jobs", "list", "--limit", "2", "--offset", "2", "--handler", "h")
      assert.are.same({ "p3", "p4" }, { doc.jobs[1].job_id, doc.jobs[2].job_id })
      assert.are.equal(7, doc.total)
      assert.are.equal(2, doc.offset)
      assert.are.equal(2, doc.limit)
    end)

    it("jobs show prints every field, readable, and --json the record", function()
      seed()
      store:update_job("b", { owner_team = "billing" })
      local code, out, err = run("jobs", "show", "b")
      assert.are.equal(0, code, err)
      assert.truthy(out:match("^job b\n"), out)
      assert.truthy(line_with(out, "handler"):match("report$"))
      assert.truthy(line_with(out, "status"):match("scheduled$"))
      assert_contains(line_with(out, "trigger"), "cron 0 9 * * * Europe/Paris")
      local nrt = store:get_job("b").next_run_time
      local next_line = line_with(out, "next run")
      assert_contains(next_line, (nrt:gsub("T", " "):gsub("Z$", "")) .. " UTC")
      assert_contains(next_line, "Europe/Paris")
      assert_contains(line_with(out, "retries"), "0 of 3")
      assert_contains(line_with(out, "metadata"), '{"tenant":42}')
      assert_contains(line_with(out, "owner_team"), '"billing"')
      local doc = run_json("jobs", "show", "b")
      assert.are.same(store:get_job("b"), doc.job)
    end)

    it("jobs show, pause, resume, run, retry and delete of an unknown id exit 1 naming it", function()
      for _, cmd in ipairs({ "show", "pause", "resume", "run", "retry", "delete" }) do
        local code, out, err = run("jobs", cmd, "nope")
        assert.are.equal(1, code, cmd)
        assert.are.equal("", out, cmd)
        assert.are.equal("chronis: job 'nope' not found\n", err, cmd)
      end
    end)

    it("jobs pause and resume change the status, and refuse a status they do not apply to", function()
      seed()
      local code, out = run("jobs", "pause", "a")
      assert.are.equal(0, code)
      assert.are.equal("paused job a\n", out)
      assert.are.equal("paused", store:get_job("a").status)
      local err
      code, out, err = run("jobs", "pause", "a")
      assert.are.equal(1, code)
      assert.are.equal("chronis: cannot pause job 'a': its status is paused\n", err)
      code, out = run("jobs", "resume", "a")
      assert.are.equal(0, code)
      assert_contains(out, "resumed job a: next run ")
      assert.are.equal("scheduled", store:get_job("a").status)
      code, _, err = run("jobs", "resume", "a")
      assert.are.equal(1, code)
      assert_contains(err, "its status is scheduled")
      assert.are.equal("paused", run_json("jobs", "pause", "b").job.status)
    end)

    it("jobs run makes a job due now, and a running scheduler on the store runs it", function()
      seed()
      local ran = {}
      local sched = chronis.scheduler { storage = store, polling_interval = 0.2, logger = function() end }
      sched:handler("report", function(job) ran[#ran + 1] = job.job_id end)
      sched:start()
      local before = now_us()
      local code, out, err = run("jobs", "run", "b")
      assert.are.equal(0, code, err)
      assert_contains(out, "job b is due now")
      assert.is_true(chronis.run_until(function() return #ran == 1 end, 20), "the job did not run")
      sched:stop()
      sched:close()
      assert.are.same({ "b" }, ran)
      local j = store:get_job("b")
      assert.are.equal("scheduled", j.status)
      assert.is_true(us(j.last_run_time) >= before)
      local doc = run_json("jobs", "history", "b")
      assert.are.equal(1, #doc.runs)
      assert.are.equal("ok", doc.runs[1].outcome)
      assert.truthy(line_with(select(2, run("jobs", "show", "b")), "last outcome"):match("ok$"))
    end)

    it("jobs retry puts a failed job back to scheduled, due now, with retry_count 0", function()
      seed()
      store:update_job("b", { status = "failed", next_run_time = json.null, retry_count = 3 })
      local before = now_us()
      local code, out, err = run("jobs", "retry", "b")
      local after = now_us()
      assert.are.equal(0, code, err)
      assert.are.equal("job b is scheduled again, due now (retry count 0)\n", out)
      local j = store:get_job("b")
      assert.are.equal("scheduled", j.status)
      assert.are.equal(0, j.retry_count)
      assert.is_true(us(j.next_run_time) >= before and us(j.next_run_time) <= after)
      code, _, err = run("jobs", "retry", "b")
      assert.are.equal(1, code)
      assert.are.equal("chronis: cannot retry job 'b': its status is scheduled\n", err)
    end)

    it("jobs retry --all retries the failed jobs matching the filters only", function()
      seed()
      for _, id in ipairs({ "a", "b", "c" }) do
        store:update_job(id, { status = "failed", next_run_time = json.null, retry_count = 1 })
      end
      local doc = run_json("jobs", "retry", "--all", "--handler", "send_email", "--meta", "tenant=acme")
      assert.are.equal(1, doc.retried)
      assert.are.same({ "a" }, doc.job_ids)
      assert.are.equal("scheduled", store:get_job("a").status)
      assert.are.equal("failed", store:get_job("c").status)
      local code, out = run("jobs", "retry", "--all")
      assert.are.equal(0, code)
      assert.are.equal("retried 2 failed jobs: due now\n", out)
      assert.are.equal(0, store:count_jobs { status = "failed" })
      code, out = run("jobs", "retry", "--all")
      assert.are.equal(0, code)
      assert.are.equal("no failed jobs match\n", out)
    end)

    it("jobs delete removes one job; --all refuses without --yes, saying how many it would delete", function()
      seed()
      local code, out = run("jobs", "delete", "c")
      assert.are.equal(0, code)
      assert.are.equal("deleted job c\n", out)
      assert.is_nil(store:get_job("c"))
      local err
      code, out, err = run("jobs", "delete", "--all", "--handler", "send_email")
      assert.are.equal(2, code)
      assert.are.equal("", out)
      assert.are.equal("chronis: --all would delete 1 job; add --yes to delete it\n", err)
      assert.are.equal(2, store:count_jobs())
      code, _, err = run("jobs", "delete", "--all")
      assert.are.equal(2, code)
      assert_contains(err, "would delete 2 jobs (every job of the store)")
      local doc = run_json("jobs", "delete", "--all", "--meta", "tenant=42", "--yes")
      assert.are.same({ deleted = 1, job_ids = { "b" } }, doc)
      assert.are.same({ "a" }, ids_of(store:query_jobs()))
      code, out = run("jobs", "delete", "--all", "--yes")
      assert.are.equal(0, code)
      assert.are.equal("deleted 1 job\n", out)
      assert.are.equal(0, store:count_jobs())
    end)

    -- Runs planted through the store (docs/history.md): b ran ok 2h ago,
    -- failed 30m ago and timed out 10m ago; a ran ok 5m ago.
    local function plant_runs()
      local now = now_us()
      local function run_of(n, job, func, ago, outcome, err)
        local started = now - ago * S
        return { run_id = "n1/" .. n, job_id = job, name = job:upper(), func_name = func,
          metadata = { tenant = job == "a" and "acme" or 42 },
          scheduled_at = chronis.time.format(started), started_at = chronis.time.format(started),
          ended_at = chronis.time.format(started + 2 * S), duration = 2, outcome = outcome,
          error_code = err and outcome or nil, error_message = err, attempt = n, node = "n1" }
      end
      store:record_runs {
        run_of(1, "b", "report", 7200, "ok"),
        run_of(2, "b", "report", 1800, "error", "feed answered 503"),
        run_of(3, "b", "report", 600, "timeout", "took longer than 300s"),
        run_of(4, "a", "send_email", 300, "ok"),
      }
    end

    local function run_ids(doc)
      local ids = {}
      for i, r in ipairs(doc.runs) do ids[i] = r.run_id end
      return ids
    end

    it("jobs history lists runs newest first, filtered by job, outcome, time and handler", function()
      seed()
      plant_runs()
      assert.are.same({ "n1/3", "n1/2", "n1/1" }, run_ids(run_json("jobs", "history", "b")))
      assert.are.same({ "n1/4", "n1/3", "n1/2", "n1/1" }, run_ids(run_json("jobs", "history")))
      assert.are.same({ "n1/3", "n1/2" }, run_ids(run_json("jobs", "history", "--outcome", "error,timeout")))
      assert.are.same({ "n1/4", "n1/3", "n1/2" }, run_ids(run_json("jobs", "history", "--since", "1h")))
      assert.are.same({ "n1/1" }, run_ids(run_json("jobs", "history", "--until", "-1h")))
      assert.are.same({ "n1/4" }, run_ids(run_json("jobs", "history", "--handler", "send_email")))
      assert.are.same({ "n1/4" }, run_ids(run_json("jobs", "history", "--meta", "tenant=acme")))
      local code, out, err = run("jobs", "history", "b")
      assert.are.equal(0, code, err)
      assert.truthy(out:match("^STARTED %(UTC%)%s+OUTCOME%s+DURATION%s+ATTEMPT%s+ERROR\n"), out)
      assert_contains(line_with(out, "timeout"), "took longer than 300s")
      assert_contains(line_with(out, "error"), "feed answered 503")
      assert.truthy(out:match("\n[^\n]-%sok%s+2s%s+1\n"), out)
      assert.truthy(out:match("3 runs\n$"), out)
      code, out = run("jobs", "history", "--limit", "2")
      assert.are.equal(0, code)
      assert_contains(out, "showing runs 1-2; --offset 2 for more")
      assert.truthy(out:match("^STARTED %(UTC%)%s+JOB%s+OUTCOME"), out)
      local doc = run_json("jobs", "history", "--limit", "2", "--offset", "2")
      assert.are.same({ "n1/2", "n1/1" }, run_ids(doc))
      assert.is_false(doc.more)
      code, out, err = run("jobs", "history", "nope")
      assert.are.equal(1, code)
      assert.are.equal("chronis: job 'nope' not found\n", err)
      -- runs outlive their job
      store:delete_job("b")
      assert.are.same({ "n1/3", "n1/2", "n1/1" }, run_ids(run_json("jobs", "history", "b")))
    end)

    it("jobs show gives the last error, the progress and the recent runs", function()
      seed()
      plant_runs()
      local at = chronis.time.format(now_us() - 600 * S)
      store:update_job("b", { last_error = { code = "timeout", message = "took longer than 300s", at = at, attempt = 3 },
        progress = { value = 40, message = "rendering page 4 of 10", at = at },
        failure_count = 2, consecutive_failures = 1, last_outcome = "timeout", last_run_at = at })
      local code, out, err = run("jobs", "show", "b")
      assert.are.equal(0, code, err)
      assert_contains(out, "\nlast error (")
      assert_contains(line_with(out, "last error"), "attempt 3")
      assert_contains(out, "  timeout: took longer than 300s\n")
      assert_contains(out, "  40 - rendering page 4 of 10\n")
      assert_contains(line_with(out, "failures"), "2 in total, 1 in a row")
      assert_contains(line_with(out, "last outcome"), "timeout")
      assert_contains(out, "\nrecent runs\n")
      assert.truthy(out:match("error%s+2s%s+2%s+feed answered 503"), out)
      code, out = run("jobs", "show", "b", "--runs", "1")
      assert.are.equal(0, code)
      assert.is_nil(out:find("feed answered 503", 1, true))
      local doc = run_json("jobs", "show", "b")
      assert.are.same({ "n1/3", "n1/2", "n1/1" }, run_ids(doc))
      assert.are.equal(40, doc.job.progress.value)
    end)

    it("stats counts jobs by status and names the oldest due job", function()
      seed()
      store:update_job("c", { status = "paused" })
      store:update_job("a", { next_run_time = chronis.time.format(now_us() - 300 * S) })
      local doc = run_json("stats")
      assert.are.same({ scheduled = 2, pending = 0, running = 0, paused = 1, failed = 0, completed = 0 },
        doc.jobs.by_status)
      assert.are.equal(3, doc.jobs.total)
      assert.are.equal(1, doc.due.count)
      assert.are.equal("a", doc.due.oldest.job_id)
      assert.is_true(doc.due.oldest.late_seconds >= 300)
      local code, out = run("stats")
      assert.are.equal(0, code)
      assert.truthy(line_with(out, "paused"):match("^%s+paused%s+1$"), out)
      assert_contains(line_with(out, "due now"), "1; oldest a, due ")
      assert.are.equal("last hour    0 runs, 0 failed", line_with(out, "last hour"))
    end)

    it("lists, counts and runs again the one-shot jobs kept completed (keep_completed)", function()
      seed()
      local sched = chronis.scheduler { storage = store, keep_completed = 3600, logger = function() end }
      local ran = 0
      sched:handler("send_email", function() ran = ran + 1 end)
      sched:update_job("c", { trigger_args = { run_date = chronis.time.format(now_us()) } })
      sched:start()
      assert.is_true(chronis.run_until(function()
        local j = store:get_job("c")
        return j ~= nil and j.status == "completed"
      end, 20), "the one-shot job was not kept")
      sched:stop()
      assert.are.same({ "c" }, ids_of(run_json("jobs", "list", "--status", "completed").jobs))
      assert.are.same({ "a", "c" }, ids_of(run_json("jobs", "list", "--status", "completed,scheduled",
        "--handler", "send_email").jobs))
      local code, out = run("jobs", "list", "--status", "completed")
      assert.are.equal(0, code)
      assert.truthy(line_with(out, "send_email"):match("^c%s.-%scompleted%s"), out)
      local doc = run_json("stats")
      assert.are.equal(1, doc.jobs.by_status.completed)
      assert.are.equal(3, doc.jobs.total)
      code, out = run("stats")
      assert.truthy(line_with(out, "completed"):match("^%s+completed%s+1$"), out)
      local err
      code, _, err = run("jobs", "pause", "c")
      assert.are.equal(1, code)
      assert.are.equal("chronis: cannot pause job 'c': its status is completed\n", err)
      code, out, err = run("jobs", "run", "c")
      assert.are.equal(0, code, err)
      assert_contains(out, "job c is due now")
      assert.are.equal("scheduled", store:get_job("c").status)
      assert.are.equal(1, ran)
    end)

    it("stats counts the runs and failures of the last hour", function()
      seed()
      plant_runs()
      local doc = run_json("stats")
      assert.are.equal(3, doc.last_hour.runs)
      assert.are.equal(2, doc.last_hour.failures)
      assert.are.same({ ok = 1, error = 1, timeout = 1 }, doc.last_hour.by_outcome)
      local code, out = run("stats")
      assert.are.equal(0, code)
      assert.are.equal("last hour    3 runs, 2 failed (1 ok, 1 error, 1 timeout)", line_with(out, "last hour"))
    end)
  end)
end

describe("chronis jobs", function()
  teardown(function() U.remove_tree(dir) end)

  describe("usage", function()
    local db

    setup(function()
      db = dir .. "/usage.db"
      local s = chronis.storage.sqlite(db)
      s:create_job { job_id = "j1", status = "scheduled", func_name = "h", trigger_type = "date",
        next_run_time = "2030-01-01T00:00:00Z", trigger_args = { run_date = "2030-01-01T00:00:00Z" } }
      s:close()
    end)

    local function run(...)
      local args = { ... }
      args[#args + 1] = "--storage"
      args[#args + 1] = "sqlite:" .. db
      return cli(args)
    end

    it("is in chronis help, takes the host's options before it, and a misspelt stats is suggested", function()
      local code, out = cli { "help" }
      assert.are.equal(0, code)
      assert_contains(out, "  jobs COMMAND")
      assert_contains(out, "  stats ")
      code, out = cli { "help", "jobs" }
      assert.are.equal(0, code)
      assert_contains(out, "usage: chronis jobs COMMAND")
      local err
      code, out, err = cli { "--storage", "sqlite:" .. db, "jobs", "list" }
      assert.are.equal(0, code, err)
      assert_contains(out, "j1")
      code, out, err = cli { "--storage", "sqlite:" .. db, "stats" }
      assert.are.equal(0, code, err)
      assert_contains(out, "scheduled  1")
      code, out, err = cli { "stat" }
      assert.are.equal(2, code)
      assert_contains(err, "did you mean 'stats'?")
    end)

    it("jobs --help lists the commands and the exit codes; jobs alone is a usage error", function()
      local code, out, err = cli { "jobs", "--help" }
      assert.are.equal(0, code)
      assert.are.equal("", err)
      for _, c in ipairs({ "jobs list", "jobs show ID", "jobs add HANDLER", "jobs pause ID", "jobs resume ID",
        "jobs run ID", "jobs retry ID|--all", "jobs delete ID|--all", "jobs history [ID]", "jobs help COMMAND",
        "stats" }) do
        assert_contains(out, "  " .. c)
      end
      assert_contains(out, "exit codes: 0 done; 1 failed")
      local code2, out2, err2 = cli { "jobs" }
      assert.are.equal(2, code2)
      assert.are.equal("", out2)
      assert.are.equal(out, err2)
    end)

    it("every command has its own --help, the same as jobs help COMMAND", function()
      for _, c in ipairs({ "list", "show", "add", "pause", "resume", "run", "retry", "delete", "history" }) do
        local code, out, err = cli { "jobs", c, "--help" }
        assert.are.equal(0, code, c)
        assert.are.equal("", err, c)
        assert.truthy(out:find("^usage: chronis jobs " .. c), out)
        assert_contains(out, "--storage URL")
        assert_contains(out, "--json")
        local code2, out2 = cli { "jobs", "help", c }
        assert.are.equal(0, code2)
        assert.are.equal(out, out2)
        local _, out3 = cli { "jobs", c, "-h" }
        assert.are.equal(out, out3)
      end
      local code, out = cli { "stats", "--help" }
      assert.are.equal(0, code)
      assert.truthy(out:find("^usage: chronis stats"), out)
      local _, add_help = cli { "jobs", "add", "--help" }
      for _, o in ipairs({ "--at TIME", "--in DURATION", "--every DURATION", "--cron EXPR", "--timezone ZONE",
        "--id ID", "--name NAME", "--args JSON", "--kwargs JSON", "--meta KEY=VALUE", "--priority N",
        "--max-retries N", "--retry-delay DURATION", "--timeout DURATION" }) do
        assert_contains(add_help, o)
      end
    end)

    it("suggests the closest command or option for a typo (exit 2)", function()
      local code, out, err = cli { "jobs", "lst" }
      assert.are.equal(2, code)
      assert.are.equal("", out)
      assert.are.equal("chronis: unknown command 'jobs lst'; did you mean 'jobs list'?\n", err)
      code, _, err = cli { "jobs", "retyr", "x" }
      assert.are.equal(2, code)
      assert_contains(err, "did you mean 'jobs retry'?")
      code, _, err = cli { "jobs", "help", "delet" }
      assert.are.equal(2, code)
      assert_contains(err, "did you mean 'delete'?")
      code, _, err = run("jobs", "list", "--stauts", "failed")
      assert.are.equal(2, code)
      assert.are.equal("chronis: unknown option '--stauts' for 'chronis jobs list'; did you mean '--status'?\n", err)
      code, _, err = run("jobs", "list", "--status", "faild")
      assert.are.equal(2, code)
      assert_contains(err, "--status: unknown value 'faild'; did you mean 'failed'?")
    end)

    it("names a bad duration or time and what was expected (exit 2)", function()
      local code, out, err = run("jobs", "add", "h", "--every", "10x")
      assert.are.equal(2, code)
      assert.are.equal("", out)
      assert.are.equal('chronis: --every: bad duration "10x": expected like 30s, 5m, 2h, 1d\n', err)
      code, _, err = run("jobs", "add", "h", "--in", "5")
      assert.are.equal(2, code)
      assert_contains(err, '--in: bad duration "5"')
      code, _, err = run("jobs", "add", "h", "--at", "tomorrow")
      assert.are.equal(2, code)
      assert_contains(err, '--at: bad time "tomorrow": expected an ISO time')
      code, _, err = run("jobs", "add", "h", "--at", "2025-02-30 10:00")
      assert.are.equal(2, code)
      assert_contains(err, "day 30 is out of range for 2025-02")
      code, _, err = run("jobs", "list", "--due-before", "1y")
      assert.are.equal(2, code)
      assert_contains(err, '--due-before: bad time "1y"')
      code, _, err = run("jobs", "add", "h", "--every", "0s")
      assert.are.equal(2, code)
      assert_contains(err, "--every")
    end)

    it("refuses bad option values and argument mistakes with exit 2, one line on stderr", function()
      local cases = {
        { { "jobs", "add", "h" }, "jobs add needs a trigger: --at, --in, --every or --cron" },
        { { "jobs", "add", "h", "--in", "5m", "--cron", "* * * * *" }, "jobs add takes one trigger, got --in and --cron" },
        { { "jobs", "add", "--every", "5m" }, "jobs add needs a HANDLER name" },
        { { "jobs", "add", "h", "--every", "5m", "--priority", "11" }, "--priority: expected an integer from 0 to 10" },
        { { "jobs", "add", "h", "--every", "5m", "--args", '{"a":1}' }, "--args: expected a JSON array" },
        { { "jobs", "add", "h", "--every", "5m", "--kwargs", "nope" }, "--kwargs: expected a JSON object" },
        { { "jobs", "add", "h", "--every", "5m", "--meta", "novalue" }, "--meta: expected KEY=VALUE" },
        { { "jobs", "add", "h", "--every", "5m", "--timezone", "Mars/Olympus" }, "--timezone: unknown zone 'Mars/Olympus'" },
        { { "jobs", "list", "--limit", "0" }, "--limit: expected an integer of 1 or more" },
        { { "jobs", "list", "--limit" }, "option --limit needs a value (N)" },
        { { "jobs", "list", "extra" }, "unexpected argument 'extra'" },
        { { "jobs", "list", "--json=yes" }, "option --json takes no value" },
        { { "jobs", "show" }, "jobs show needs a job id" },
        { { "jobs", "show", "a", "b" }, "unexpected argument 'b'" },
        { { "jobs", "delete", "j1", "--yes" }, "--yes applies to --all only" },
        { { "jobs", "delete", "j1", "--all" }, "jobs delete takes an ID or --all, not both" },
        { { "jobs", "retry", "--handler", "h" }, "--handler filters jobs for --all only" },
        { { "jobs", "history", "--outcome", "bad" }, "--outcome: unknown value 'bad'" },
        { { "jobs", "list", "--storage", "nosuch:x" }, "--storage: invalid storage URL 'nosuch:x'" },
      }
      for _, c in ipairs(cases) do
        local args = c[1]
        if args[#args - 1] ~= "--storage" then
          args[#args + 1] = "--storage"
          args[#args + 1] = "sqlite:" .. db
        end
        local code, out, err = cli(args)
        assert.are.equal(2, code, table.concat(args, " "))
        assert.are.equal("", out, table.concat(args, " "))
        assert.truthy(err:match("^chronis: [^\n]+\n$"), err)
        assert_contains(err, c[2])
      end
      local s = chronis.storage.sqlite(db)
      assert.are.equal(1, s:count_jobs())
      s:close()
    end)

    it("exits 1 when the store cannot be reached, naming it", function()
      local port = U.free_port()
      local code, out, err = cli { "jobs", "list", "--storage", ("redis://127.0.0.1:%d/0?queue_timeout=0"):format(port) }
      assert.are.equal(1, code)
      assert.are.equal("", out)
      assert.truthy(err:match("^chronis: [^\n]+\n$"), err)
      assert_contains(err, "unavailable")
      code, out, err = cli { "stats", "--storage", ("postgres://postgres@127.0.0.1:%d/x"):format(port) }
      assert.are.equal(1, code)
      assert.are.equal("", out)
      assert_contains(err, "refused")
    end)

    it("reads the store from CHRONIS_STORAGE, and never creates a SQLite file it only reads", function()
      local code, out = cli({ "jobs", "list" }, { CHRONIS_STORAGE = "sqlite:" .. db })
      assert.are.equal(0, code)
      assert_contains(out, "j1")
      local empty = U.tmpdir("chronis-cli-empty")
      local err
      code, out, err = cli({ "jobs", "list" }, nil, empty)
      assert.are.equal(1, code)
      assert.are.equal("", out)
      assert_contains(err, "sqlite:chronis.db does not exist")
      assert.is_false(U.exists(empty .. "/chronis.db"))
      code, out, err = cli({ "jobs", "add", "h", "--every", "1m", "--id", "first" }, nil, empty)
      assert.are.equal(0, code, err)
      assert.is_true(U.exists(empty .. "/chronis.db"))
      code, out = cli({ "jobs", "list" }, nil, empty)
      assert.are.equal(0, code)
      assert_contains(out, "first")
      U.remove_tree(empty)
    end)

    it("shows times in the machine's zone (TZ) beside UTC", function()
      local code, out = cli({ "jobs", "show", "j1", "--storage", "sqlite:" .. db }, { TZ = "America/New_York" })
      assert.are.equal(0, code)
      assert_contains(line_with(out, "next run"), "2030-01-01 00:00:00 UTC (2029-12-31 19:00:00 EST)")
      code, out = cli({ "jobs", "show", "j1", "--storage", "sqlite:" .. db })
      assert.are.equal(0, code)
      assert.truthy(line_with(out, "next run"):match("2030%-01%-01 00:00:00 UTC, in "), out)
    end)

    it("truncates long values in tables with an ellipsis", function()
      local s = chronis.storage.sqlite(db)
      local long = ("x"):rep(80)
      s:create_job { job_id = long, status = "paused", func_name = "h", trigger_type = "date",
        trigger_args = { run_date = "2030-01-01T00:00:00Z" } }
      local code, out = run("jobs", "list", "--status", "paused")
      s:delete_job(long)
      s:close()
      assert.are.equal(0, code)
      assert_contains(out, ("x"):rep(35) .. "…")
      assert.is_nil(out:find(long, 1, true))
    end)

    it("says so when the store keeps no run history: show without runs, history exits 1, stats", function()
      -- A store written in Lua without query_runs, over a SQLite file.
      local script = dir .. "/nohist.lua"
      U.write(script, [[
local chronis = require "chronis"
return function(opts)
  local inner = chronis.storage.sqlite(opts.path)
  local a = {}
  for _, m in ipairs({ "create_job", "get_job", "update_job", "compare_and_swap_job", "delete_job",
    "query_jobs", "count_jobs" }) do
    a[m] = function(_, ...) return inner[m](inner, ...) end
  end
  function a.close() inner:close() end
  return a
end
]])
      local url = ("lua:%s?path=%s/nohist.db"):format(script, dir)
      local function nh(...)
        local args = { ... }
        args[#args + 1] = "--storage"
        args[#args + 1] = url
        return cli(args)
      end
      assert.are.equal(0, (nh("jobs", "add", "h", "--every", "5m", "--id", "x")))
      local code, out, err = nh("jobs", "show", "x")
      assert.are.equal(0, code, err)
      assert_contains(out, "\nrecent runs: none to show (this store keeps no run history)\n")
      code, out = nh("jobs", "show", "x", "--json")
      assert.are.equal(0, code)
      assert_contains(out, '"runs":null')
      local doc = json.decode(out)
      assert.are.equal("x", doc.job.job_id)
      code, out, err = nh("jobs", "history", "x")
      assert.are.equal(1, code)
      assert.are.equal("", out)
      assert.are.equal("chronis: no run history: this store keeps no run history\n", err)
      code, out = nh("stats")
      assert.are.equal(0, code)
      assert.are.equal("last hour    no run history (this store keeps no run history)", line_with(out, "last hour"))
      code, out = nh("stats", "--json")
      assert.are.equal(0, code)
      assert_contains(out, '"last_hour":null')
      doc = json.decode(out)
      assert.are.equal("this store keeps no run history", doc.no_history)
      assert.are.equal(1, doc.jobs.total)
    end)

    it("runs in-process: main(args, io) returns the exit code and writes through io", function()
      local cli_mod = require "chronis.cli"
      local out, err = {}, {}
      local io_ = { out = function(s) out[#out + 1] = s end, err = function(s) err[#err + 1] = s end,
        getenv = function() return nil end }
      assert.are.equal(0, cli_mod.main({ "jobs", "list", "--storage", "sqlite:" .. db, "--json" }, io_))
      assert.are.equal(1, json.decode(table.concat(out)).total)
      assert.are.equal(2, cli_mod.main({ "jobs", "frobnicate" }, io_))
      assert_contains(table.concat(err), "unknown command 'jobs frobnicate'")
      U.assert_loop_clean()
    end)
  end)

  do
    local n = 0
    suite("sqlite", function()
      n = n + 1
      return ("sqlite:%s/store-%d.db"):format(dir, n)
    end)
  end

  do
    local server, err
    local ok, s = pcall(PG.start)
    if ok then server = s else err = s end
    local n = 0
    suite("postgres", function()
      assert(server, "no PostgreSQL test server: " .. tostring(err))
      n = n + 1
      return server:url(("table=cli_%d"):format(n))
    end)
    teardown(function() if server then server:stop() end end)
  end

  do
    local srv
    setup(function() srv = redis.start() end)
    teardown(function() if srv then srv:stop() end end)
    local n = 0
    suite("redis", function()
      n = n + 1
      return srv.url .. ("?prefix=cli%d"):format(n)
    end)
  end
end)
