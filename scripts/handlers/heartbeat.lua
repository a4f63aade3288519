-- A handler script: the file returns the handler. It reloads when edited.
return function(job)
  print(("[app] heartbeat #%d at %s"):format(job.attempt, chronis.time.format(chronis.time.now())))
end
