-- The example app `make run` starts: a few jobs of every kind on the
-- embedded default store, printing what happens. Stop it with Ctrl-C.
local chronis = require "chronis"

local sched = chronis.scheduler{
  polling_interval = 1,
  on_failure = function(job_id, err)
    print(("[app] %s failed for good: %s"):format(job_id, tostring(err)))
  end,
}

sched:handler("heartbeat", function(job)
  print(("[app] heartbeat #%d at %s"):format(job.attempt, chronis.time.format(chronis.time.now())))
end)

sched:handler("report", function(job)
  print(("[app] report for %s (cron, %s)"):format(job.kwargs.team, job.timezone))
end)

sched:handler("greet", function(job)
  print("[app] one-shot: hello, " .. job.kwargs.name)
end)

local tries = 0
sched:handler("flaky", function(job)
  tries = tries + 1
  print(("[app] flaky attempt %d (retry_count %d)"):format(tries, job.retry_count))
  if tries < 3 then error("transient failure") end
  print("[app] flaky succeeded")
end)

sched:handler("slow", function(job)
  print("[app] slow job starts; its timeout is 1s")
  chronis.sleep(5)
  print("[app] never printed: the timeout stops the handler first")
end)

-- Explicit ids and if_exists = "skip": restarting the app never duplicates
-- jobs on a persistent store.
local keep = { if_exists = "skip" }
sched:every{seconds = 5}:config{job_id = "heartbeat"}:config(keep):run("heartbeat")
sched:on{second = "*/10", timezone = "Europe/Paris"}:config{job_id = "report"}:config(keep)
  :run("report", {team = "ops"})
sched:once(chronis.time.now() + 2000000):config{job_id = "greet"}:config(keep)
  :run("greet", {name = "chronis"})
sched:once(chronis.time.now() + 1000000):config{job_id = "flaky", retry = 3, retry_delay = 1}
  :config(keep):run("flaky")
sched:once(chronis.time.now() + 3000000):config{job_id = "slow", timeout = 1}:config(keep)
  :run("slow")

sched:start()
print(("[app] scheduler %s started with %d jobs; Ctrl-C to stop"):format(
  sched:node_id(), sched:count_jobs()))
