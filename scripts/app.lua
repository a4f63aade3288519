-- The example app `make run` starts: a few jobs of every kind on the
-- embedded default store (sqlite:chronis.db), printing what happens. The
-- handlers live in scripts/handlers/ and reload when you edit them.
-- Stop it with Ctrl-C.
local chronis = require "chronis"

local sched = chronis.scheduler{
  polling_interval = 1,
  on_failure = function(job_id, err)
    print(("[app] %s failed for good: %s"):format(job_id, tostring(err)))
  end,
}

-- Explicit ids and if_exists = "skip": restarting the app never duplicates
-- its jobs on a persistent store.
local keep = { if_exists = "skip" }
local soon = function(s) return chronis.time.now() + s * 1000000 end

sched:every{seconds = 5}:config{job_id = "heartbeat"}:config(keep):run("heartbeat")
sched:on{second = "*/10", timezone = "Europe/Paris"}:config{job_id = "report"}:config(keep)
  :run("report", {team = "ops"})
sched:once(soon(2)):config{job_id = "greet"}:config(keep):run("greet", {name = "chronis"})
sched:once(soon(1)):config{job_id = "flaky", retry = 3, retry_delay = 1}:config(keep):run("flaky")
sched:once(soon(3)):config{job_id = "slow", timeout = 1}:config(keep):run("slow.sleepy")

sched:start()
print(("[app] scheduler %s started with %d jobs; Ctrl-C to stop"):format(
  sched:node_id(), sched:count_jobs()))
