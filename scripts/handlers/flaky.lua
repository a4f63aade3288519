-- Fails twice, then succeeds: the job's retries (with backoff) carry it.
local tries = 0

return function(job)
  tries = tries + 1
  print(("[app] flaky attempt %d (retry_count %d)"):format(tries, job.retry_count))
  if tries < 3 then error("transient failure") end
  print("[app] flaky succeeded")
end
