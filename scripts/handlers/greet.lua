return function(job)
  print("[app] one-shot: hello, " .. job.kwargs.name)
end
