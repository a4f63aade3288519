-- A table form: `run` plus defaults for the jobs that use this handler.
return {
  timeout = 10,
  run = function(job)
    print(("[app] report for %s (cron, %s)"):format(job.kwargs.team, job.timezone))
  end,
}
