-- Engine semantics: declared schedules (docs/engine.md, "Declared
-- schedules"), run on every store by engine_contract.lua as (name,
-- factory, opts): if_exists = "replace" | "update" reconciling a stored
-- job with the app's declaration, the `undeclared` scheduler option, and
-- the warning for recurring jobs without an id on a persistent store.
local chronis = require "chronis"
local H = require "support.engine_helper"
local U = require "support.util"

local describe, it, _, _, assert = U.busted()

local S, T0 = H.S, H.T0
local null = chronis.json.null

return function(name, factory, opts)
  -- Schedulers log to H.logs; their handler "h" does nothing.
  local F = require("support.semantics.fixture")(factory, opts, { noop = { "h" } })
  local sched, wait, field = F.sched, F.wait, F.field

  describe(name .. " declared schedules", function()
    F.install()

    -- The log lines at `level` that contain `text`.
    local function lines(level, text)
      local out = {}
      for _, l in ipairs(H.logs) do
        if l.level == level and l.msg:find(text, 1, true) then out[#out + 1] = l.msg end
      end
      return out
    end

    local function updated_lines() return lines("info", "updated from its declaration") end

    describe("if_exists = update", function()
      it("recomputes next_run_time from now when the trigger changed, and logs the difference", function()
        local j = sched():every { seconds = 2 }:config { job_id = "x", if_exists = "update" }:run("h")
        assert.are.equal(T0 + 2 * S, H.t(j.next_run_time))
        assert.are.same({}, updated_lines(), "a new job is created, not updated")
        F.clock:advance(30)
        j = sched():every { seconds = 7 }:config { job_id = "x", if_exists = "update" }:run("h")
        assert.are.equal(T0 + 37 * S, H.t(j.next_run_time))
        assert.are.same({ seconds = 7 }, j.trigger_args)
        assert.are.same({ ("job 'x' updated from its declaration: trigger_args {\"seconds\":2} -> "
          .. "{\"seconds\":7}; next run at %s"):format(j.next_run_time) }, updated_lines())
        assert.are.same(j, F.store:get_job("x"))
      end)

      it("takes a cron trigger's first slot after now", function()
        sched():every { minutes = 5 }:config { job_id = "c", if_exists = "update" }:run("h")
        F.clock:advance(60)
        local j = sched():on("0 12 * * *"):config { job_id = "c", if_exists = "update" }:run("h")
        assert.are.equal("cron", j.trigger_type)
        assert.are.equal(H.t("2025-01-15T12:00:00Z"), H.t(j.next_run_time))
        assert.are.equal(1, #updated_lines())
        assert.truthy(updated_lines()[1]:find("trigger_type \"interval\" -> \"cron\"", 1, true),
          updated_lines()[1])
      end)

      it("keeps a paused job paused, with the new trigger's next time for its resume", function()
        local s = sched()
        s:every { seconds = 2 }:config { job_id = "x", if_exists = "update" }:run("h")
        s:pause_job("x")
        F.clock:advance(10)
        local j = sched():every { seconds = 7 }:config { job_id = "x", if_exists = "update" }:run("h")
        assert.are.equal("paused", j.status)
        assert.are.equal(T0 + 17 * S, H.t(j.next_run_time))
        j = s:resume_job("x")
        assert.are.equal("scheduled", j.status)
        assert.are.equal(T0 + 17 * S, H.t(j.next_run_time))
      end)

      it("changes only the fields the declaration gives, and merges its metadata", function()
        local s = sched()
        s:create_interval_job { job_id = "u", func_name = "h", seconds = 60, max_retries = 3,
          priority = 8, metadata = { team = "ops", region = "eu" } }
        local j = sched():every { seconds = 60 }:config { job_id = "u", if_exists = "update",
          metadata = { region = "us" }, timeout = 30 }:run("h")
        assert.are.equal(3, j.max_retries)
        assert.are.equal(8, j.priority)
        assert.are.equal(30, j.timeout_seconds)
        assert.are.same({ team = "ops", region = "us" }, j.metadata)
        assert.are.equal(T0 + 60 * S, H.t(j.next_run_time), "the trigger did not change")
        assert.are.same({ "job 'u' updated from its declaration: metadata {\"region\":\"eu\","
          .. "\"team\":\"ops\"} -> {\"region\":\"us\",\"team\":\"ops\"}, timeout_seconds none -> 30" },
          updated_lines())
      end)

      it("keeps a failed job failed", function()
        local s = sched()
        s:every { seconds = 2 }:config { job_id = "x", if_exists = "update" }:run("h")
        F.store:update_job("x", { status = "failed", next_run_time = null })
        local j = sched():every { seconds = 7 }:config { job_id = "x", if_exists = "update" }:run("h")
        assert.are.equal("failed", j.status)
        assert.is_nil(j.next_run_time)
        assert.are.same({ seconds = 7 }, j.trigger_args)
      end)
    end)

    describe("if_exists = replace", function()
      it("replaces what the declaration sets, keeps history and state, and schedules a failed job again",
        function()
          local s = sched { clock = false, polling_interval = 0.1 }
          s:handler("boom", function() error("boom") end)
          s:every { hours = 1 }:config { job_id = "r", if_exists = "replace", retry = 0,
            on_exhausted = "fail", priority = 9, metadata = { team = "ops" } }:run("boom")
          local created = F.store:get_job("r")
          s:update_job("r", { next_run_time = s:now() })
          s:start()
          wait(function() return field("r", "status") == "failed" end, "the run did not fail")
          s:stop()
          local failed = F.store:get_job("r")
          local runs = opts.history ~= false and #s:history("r") or nil
          local s2 = sched { clock = false }
          local j = s2:every { hours = 2 }:config { job_id = "r", if_exists = "replace" }:run("h")
          assert.are.equal("scheduled", j.status)
          assert.are.equal(0, j.retry_count)
          local nrt = H.t(j.next_run_time)
          assert.is_true(nrt > s2:now() + 7100 * S and nrt <= s2:now() + 7200 * S, j.next_run_time)
          -- The declaration's fields: the ones it leaves out are back to their defaults.
          assert.are.equal("h", j.func_name)
          assert.are.same({ hours = 2 }, j.trigger_args)
          assert.are.equal(5, j.priority)
          assert.is_nil(j.metadata)
          assert.is_nil(j.on_exhausted)
          -- What chronis keeps: id, creation, last run, failure counters, history.
          assert.are.equal(created.created_at, j.created_at)
          assert.are.equal(1, j.attempt)
          assert.are.equal("error", j.last_outcome)
          assert.are.equal(failed.last_run_at, j.last_run_at)
          assert.are.equal(1, j.failure_count)
          assert.are.same(failed.last_error, j.last_error)
          if runs then assert.are.equal(runs, #s2:history("r")) end
          local l = updated_lines()
          assert.are.equal(1, #l)
          for _, part in ipairs({ "job 'r' updated from its declaration: func_name \"boom\" -> \"h\", ",
              "metadata {\"team\":\"ops\"} -> none", "priority 9 -> 5",
              "trigger_args {\"hours\":1} -> {\"hours\":2}",
              "; status failed -> scheduled; next run at " .. j.next_run_time }) do
            assert.truthy(l[1]:find(part, 1, true), l[1])
          end
        end)

      it("keeps a paused job paused", function()
        local s = sched()
        s:every { seconds = 2 }:config { job_id = "x", if_exists = "replace" }:run("h")
        s:pause_job("x")
        local j = sched():every { seconds = 7 }:config { job_id = "x", if_exists = "replace" }:run("h")
        assert.are.equal("paused", j.status)
        assert.are.equal(T0 + 7 * S, H.t(j.next_run_time))
      end)
    end)

    it("writes nothing and logs nothing when the job already is as declared", function()
      local s = sched()
      local first = s:every { seconds = 5 }:config { job_id = "same", if_exists = "update", retry = 2,
        metadata = { a = 1 } }:run("h", { k = "v" }, { 1, 2 })
      F.clock:advance(3)
      for _, mode in ipairs({ "update", "replace" }) do
        local j = sched():every { seconds = 5 }:config { job_id = "same", if_exists = mode, retry = 2,
          metadata = { a = 1 } }:run("h", { k = "v" }, { 1, 2 })
        assert.are.same(first, j, mode)
      end
      assert.are.same(first, F.store:get_job("same"))
      assert.are.same({}, updated_lines())
    end)

    it("changes a running job's record but not its claim; its run's end takes the next time", function()
      local s = sched()
      local g = H.gate()
      s:handler("held", function(job) g:pass(job) end)
      s:every { seconds = 2 }:config { job_id = "x", if_exists = "update" }:run("held")
      s:start()
      F.clock.now = T0 + 2 * S
      s:tick()
      wait(function() return #g.entered == 1 end, "the run did not start")
      local before = F.store:get_job("x")
      assert.are.equal("running", before.status)
      local other = sched { storage = F.other_handle() }
      local j = other:every { seconds = 7 }:config { job_id = "x", if_exists = "update", retry = 2 }
        :run("held")
      for _, k in ipairs({ "status", "claimed_by", "lease_until", "next_run_time", "attempt" }) do
        assert.are.equal(before[k], j[k], k)
      end
      assert.are.same({ seconds = 7 }, j.trigger_args)
      assert.are.equal(2, j.max_retries)
      assert.are.same({ "job 'x' updated from its declaration: max_retries 0 -> 2, trigger_args "
        .. "{\"seconds\":2} -> {\"seconds\":7}; it is running: the end of this run sets its next time "
        .. "from the trigger it was claimed with" }, updated_lines())
      g.open = true
      wait(function() return field("x", "status") == "scheduled" end, "the run did not end")
      j = F.store:get_job("x")
      assert.are.same({ seconds = 7 }, j.trigger_args, "the run's end kept the new record")
      assert.are.equal(2, j.max_retries)
      -- The end of the run took its next time from the trigger it ran with;
      -- the runs after it follow the new one.
      assert.are.equal(T0 + 4 * S, H.t(j.next_run_time))
      F.clock.now = T0 + 4 * S
      s:tick()
      wait(function() return field("x", "attempt") == 2 and field("x", "status") == "scheduled" end,
        "the second run did not end")
      assert.are.equal(T0 + 11 * S, H.t(field("x", "next_run_time")))
    end)

    describe("undeclared", function()
      -- The app's previous start: it declared x and y, and z was created
      -- at run time.
      local function previous_app()
        local s = sched()
        s:every { minutes = 1 }:config { job_id = "x", if_exists = "update" }:run("h")
        s:every { minutes = 1 }:config { job_id = "y", if_exists = "replace" }:run("h")
        s:on("0 * * * *"):config { job_id = "y2", if_exists = "skip" }:run("h")
        s:every { minutes = 1 }:config { job_id = "z" }:run("h")
        s:once(T0 + 3600 * S):config { job_id = "d", if_exists = "replace" }:run("h")
        assert.is_true(F.store:get_job("x").declared)
        assert.is_nil(F.store:get_job("z").declared)
        assert.is_nil(F.store:get_job("d").declared, "only recurring jobs carry the mark")
      end

      local function ids()
        local out = {}
        for _, j in ipairs(F.store:query_jobs()) do out[#out + 1] = j.job_id end
        table.sort(out)
        return out
      end

      it("report (the default): one warning per job this app no longer declares, naming the fix", function()
        previous_app()
        local s = sched()
        s:every { minutes = 1 }:config { job_id = "x", if_exists = "update" }:run("h")
        s:start()
        local warned = lines("warn", "no longer is")
        assert.are.same({
          "job 'y' was declared by this app and no longer is: it stays in the store and keeps running; "
            .. "delete it (sched:delete_job(\"y\"), chronis jobs delete y) or start the scheduler with "
            .. "undeclared = \"remove\"",
          "job 'y2' was declared by this app and no longer is: it stays in the store and keeps running; "
            .. "delete it (sched:delete_job(\"y2\"), chronis jobs delete y2) or start the scheduler with "
            .. "undeclared = \"remove\"" }, warned)
        assert.are.same({ "d", "x", "y", "y2", "z" }, ids())
      end)

      it("remove: deletes them, logged at info; jobs created at run time stay", function()
        previous_app()
        local s = sched { undeclared = "remove" }
        s:every { minutes = 1 }:config { job_id = "x", if_exists = "update" }:run("h")
        s:start()
        assert.are.same({ "job 'y' deleted: this app no longer declares it (undeclared = \"remove\")",
          "job 'y2' deleted: this app no longer declares it (undeclared = \"remove\")" },
          lines("info", "no longer declares"))
        assert.are.same({ "d", "x", "z" }, ids())
      end)

      it("keep: leaves them and says nothing", function()
        previous_app()
        local s = sched { undeclared = "keep" }
        s:every { minutes = 1 }:config { job_id = "x", if_exists = "update" }:run("h")
        s:start()
        assert.are.same({}, lines("warn", "no longer"))
        assert.are.same({ "d", "x", "y", "y2", "z" }, ids())
      end)

      it("a scheduler that declared nothing and names no app checks nothing (a worker)", function()
        previous_app()
        sched { undeclared = "remove" }:start()
        assert.are.same({ "d", "x", "y", "y2", "z" }, ids())
      end)

      it("an app name: only the jobs that app declared, even when it declares nothing now", function()
        local billing = sched { app = "billing" }
        billing:every { minutes = 1 }:config { job_id = "invoice", if_exists = "update" }:run("h")
        assert.are.equal("billing", F.store:get_job("invoice").declared)
        local mail = sched { app = "mail", undeclared = "remove" }
        mail:every { minutes = 1 }:config { job_id = "digest", if_exists = "update" }:run("h")
        mail:start()
        local plain = sched { undeclared = "remove" }
        plain:every { minutes = 1 }:config { job_id = "other", if_exists = "update" }:run("h")
        plain:start()
        assert.are.same({ "digest", "invoice", "other" }, ids())
        sched { app = "billing", undeclared = "remove" }:start()
        assert.are.same({ "digest", "other" }, ids())
      end)

      it("a scoped scheduler looks at its scope only", function()
        local s = sched()
        s:every { minutes = 1 }:config { job_id = "a1", if_exists = "update", metadata = { tenant = "a" } }
          :run("h")
        s:every { minutes = 1 }:config { job_id = "b1", if_exists = "update", metadata = { tenant = "b" } }
          :run("h")
        local scoped = sched { filters = { ["metadata.tenant"] = "a" }, undeclared = "remove" }
        scoped:every { minutes = 1 }:config { job_id = "a2", if_exists = "update",
          metadata = { tenant = "a" } }:run("h")
        scoped:start()
        assert.are.same({ "a2", "b1" }, ids())
      end)
    end)

    describe("a recurring job without a job_id", function()
      local WARNING = "has no job_id: each start of the app creates another; give it one (config{job_id=})"

      it("is a warning on a persistent store, once per create, and none on memory", function()
        local s = sched()
        local j = s:every { minutes = 5 }:run("h")
        s:on("0 * * * *"):config { if_exists = "skip" }:run("h")
        s:every { minutes = 5 }:config { job_id = "named" }:run("h")
        s:once(T0 + 60 * S):run("h")
        local warned = lines("warn", WARNING)
        if F.store:kind() == "memory" then
          assert.are.same({}, warned)
        else
          assert.are.equal(2, #warned)
          assert.are.equal(("job '%s' %s"):format(j.job_id, WARNING), warned[1])
        end
      end)

      it("is no warning when a handler creates it: a job made at run time", function()
        local s = sched()
        local made
        s:handler("maker", function() made = s:every { hours = 1 }:run("h") end)
        H.due_job(s, "m", T0, "maker")
        s:start()
        wait(function() return made ~= nil end, "the handler did not run")
        assert.are.same({}, lines("warn", WARNING))
      end)
    end)
  end)
end
