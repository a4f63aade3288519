-- Registered as "slow.sleepy" (subfolders give dotted names). Its job has
-- a 1 s timeout, so the sleep below never finishes.
return function(job)
  print("[app] slow job starts; its timeout is 1s")
  chronis.sleep(5)
  print("[app] never printed: the timeout stops the handler first")
end
