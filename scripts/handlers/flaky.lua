-- Fails its first three attempts, then succeeds: the retries of the job's
-- first slot are all spent, and its on_exhausted = "next" brings the next
-- slot (scripts/app.lua).
local tries = 0

return function(job)
  tries = tries + 1
  print(("[app] flaky attempt %d (retry_count %d)"):format(tries, job.retry_count))
  if tries <= 3 then error("transient failure") end
  print("[app] flaky succeeded")
end
