-- The example app `make run` starts: a few jobs of every kind on the
-- embedded default store (sqlite:chronis.db), printing what happens. The
-- handlers live in scripts/handlers/ and reload when you edit them.
-- Stop it with Ctrl-C.
local chronis = require "chronis"

local sched = chronis.scheduler{
  polling_interval = 1,
  -- At start, a job this app declared on an earlier start and no longer
  -- declares is reported with how to delete it ("report", the default);
  -- "remove" deletes it, "keep" says nothing.
  undeclared = "report",
  on_failure = function(job_id, err)
    print(("[app] %s failed after its retries: %s"):format(job_id, tostring(err)))
  end,
}

-- Declared schedules: every job has an explicit id, so a restart finds the
-- stored job instead of creating another, and reconciles it with what
-- this file says (docs/engine.md, "Declared schedules"). Edit an interval
-- below and restart: the log says what changed, old -> new.
--   update:  the stored job takes the fields given here that differ; its
--            state stays (a job paused with `chronis jobs pause` stays
--            paused), and so does its history.
--   replace: the stored job becomes what is declared here (fields left
--            out go back to their defaults); a failed one is scheduled
--            again.
local update = { if_exists = "update" }
local replace = { if_exists = "replace" }
local soon = function(s) return chronis.time.now() + s * 1000000 end

sched:every{seconds = 5}:config{job_id = "heartbeat"}:config(update):run("heartbeat")
sched:on{second = "*/10", timezone = "Europe/Paris"}:config{job_id = "report"}:config(update)
  :run("report", {team = "ops"})

-- Failure recovery: flaky's first slot fails all three attempts (two
-- retries, with backoff); on_exhausted = "next" records the failure and
-- keeps the job on its schedule, so its next slot runs (and succeeds)
-- instead of the job failing for good.
sched:every{seconds = 10}
  :config{job_id = "flaky", retry = 2, retry_delay = 1, on_exhausted = "next"}:config(replace)
  :run("flaky")

-- One-shot jobs a few seconds after each start: replace gives them the new
-- time. slow always times out and fails; replace schedules it again at
-- the next start rather than leaving it failed in the store.
sched:once(soon(2)):config{job_id = "greet"}:config(replace):run("greet", {name = "chronis"})
sched:once(soon(3)):config{job_id = "slow", timeout = 1}:config(replace):run("slow.sleepy")

sched:start()
print(("[app] scheduler %s started with %d jobs; Ctrl-C to stop"):format(
  sched:node_id(), sched:count_jobs()))
