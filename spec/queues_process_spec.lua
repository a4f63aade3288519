-- Named queues across processes (docs/queues.md): two worker processes
-- (spec/support/worker.lua), each a scheduler with its own `queues`, share
-- one store (a SQLite file, a Redis server, a PostgreSQL database). From
-- what the workers record (each run's job, queue, claim, start and end on
-- the wall clock, a file per process):
--   1. a process runs only the queues it lists; a queue both list is
--      shared, and one that neither lists waits;
--   2. a queue with global_concurrency = 2 that both serve, each with a
--      concurrency of 2, never has more than 2 runs at once in the two
--      processes together, and both run some of it;
--   3. a queue with rate = {limit = 5, period = 1} that both serve never
--      has more than 5 claims in a window [k, k + 1) s (the store's rule:
--      windows aligned to floor(now / period)), and runs all its jobs;
--   4. every job runs exactly once.
-- The engine-contract specs (spec/support/semantics/queues.lua) check the
-- same limits with two store handles in one process.
local chronis = require "chronis"
local P = require "support.process"
local U = require "support.util"

local describe, it, _, _, assert = U.busted()

local sh_quote, ROOT = U.sh_quote, U.ROOT
local WORKER = ROOT .. "/spec/support/worker.lua"
local S = 1000000

local GLOBAL = { concurrency = 2, global_concurrency = 2 }
local RATED = { concurrency = 2, rate = { limit = 5, period = 1 } }
local WORKERS = {
  { name = "A", queues = { only_a = 2, shared = 2, global = GLOBAL, rated = RATED } },
  { name = "B", queues = { only_b = 2, shared = 2, global = GLOBAL, rated = RATED } },
}

-- The jobs of each queue: how many, how long each run waits, and when they
-- are due, in seconds after the first. `idle` is served by neither worker.
-- The global queue's first jobs come one at a time, so that both workers
-- take some of them (a worker holding both places claims again as soon as
-- a run ends, before the other polls); then a burst that two workers with
-- a concurrency of 2 each would run 4 at a time without the global limit.
-- The rated queue's jobs, 4 places in all and short, would take far more
-- than 5 a second without the rate.
local QUEUES = {
  { queue = "only_a", n = 6, seconds = 0.2 },
  { queue = "only_b", n = 6, seconds = 0.2 },
  { queue = "shared", n = 12, seconds = 0.2 },
  { queue = "global", n = 12, seconds = 0.2, every = 0.15 },
  { queue = "global", n = 8, seconds = 0.2, first = 2, burst = true },
  { queue = "rated", n = 16, seconds = 0.05 },
  { queue = "idle", n = 3, seconds = 0.05 },
}

-- Creates the jobs, due from `at` (µs); returns { [job_id] = queue } of
-- the jobs that must run, and the ids of the idle ones.
local function create_jobs(store, at)
  local served, idle = {}, {}
  for _, q in ipairs(QUEUES) do
    for i = 1, q.n do
      local id = ("%s-%s%02d"):format(q.queue, q.burst and "burst-" or "", i)
      local due = at + math.floor(((q.first or 0) + (q.every or 0) * (i - 1)) * S)
      store:create_job { job_id = id, status = "scheduled", func_name = "span", queue = q.queue,
        trigger_type = "date", trigger_args = { run_date = chronis.time.format(due) },
        next_run_time = due, kwargs = { seconds = q.seconds } }
      if q.queue == "idle" then idle[#idle + 1] = id else served[id] = q.queue end
    end
  end
  return served, idle
end

local function start_workers(url)
  local procs = {}
  for i, w in ipairs(WORKERS) do
    procs[i] = P.spawn(("%s %s %s runs.txt poll=0.1 lease=30 for=300 queues=%s"):format(
      sh_quote(os.getenv("LUA") or "lua5.4"), sh_quote(WORKER), sh_quote(url),
      sh_quote(chronis.json.encode(w.queues))))
  end
  for i, p in ipairs(procs) do
    assert(chronis.run_until(function()
      return U.read(p.dir .. "/runs.txt", ""):find("started\n", 1, true) ~= nil or p:status() ~= nil
    end, 20), ("worker %s did not start within 20 s"):format(WORKERS[i].name))
    assert(p:status() == nil, ("worker %s ended at its start (status %s): %s"):format(WORKERS[i].name,
      tostring(p:status()), p:stderr()))
  end
  return procs
end

-- Every run the workers recorded: { job, queue, worker (its name),
-- claimed, start, stop (µs) }.
local function runs_of(procs)
  local runs = {}
  for i, p in ipairs(procs) do
    for job, queue, claimed, start, stop in
        U.read(p.dir .. "/runs.txt", ""):gmatch("span (%S+) (%S+) (%d+) (%d+) (%d+)\n") do
      runs[#runs + 1] = { job = job, queue = queue, worker = WORKERS[i].name,
        claimed = math.tointeger(tonumber(claimed)), start = math.tointeger(tonumber(start)),
        stop = math.tointeger(tonumber(stop)) }
    end
  end
  return runs
end

local function stop_workers(procs)
  for _, p in ipairs(procs) do U.write(p.dir .. "/runs.txt.stop", "") end
  for i, p in ipairs(procs) do
    local rc = p:wait(30)
    assert(rc == 0, ("worker %s ended with %s: %s"):format(WORKERS[i].name, tostring(rc), p:stderr()))
  end
end

-- The most runs at once among `runs` (a run holds [start, stop); one that
-- ends when another starts does not overlap it), and when.
local function max_overlap(runs)
  local events = {}
  for _, r in ipairs(runs) do
    events[#events + 1] = { r.start, 1 }
    events[#events + 1] = { r.stop, -1 }
  end
  table.sort(events, function(x, y)
    if x[1] ~= y[1] then return x[1] < y[1] end
    return x[2] < y[2]
  end)
  local now, most, at = 0, 0, nil
  for _, e in ipairs(events) do
    now = now + e[2]
    if now > most then most, at = now, e[1] end
  end
  return most, at
end

local function of_queue(runs, queue, worker)
  local out = {}
  for _, r in ipairs(runs) do
    if r.queue == queue and (worker == nil or r.worker == worker) then out[#out + 1] = r end
  end
  return out
end

local function show(runs)
  local lines = {}
  for _, r in ipairs(runs) do
    lines[#lines + 1] = ("  %s in %s: claimed %s, ran %s to %s"):format(r.job, r.worker,
      chronis.time.format(r.claimed), chronis.time.format(r.start), chronis.time.format(r.stop))
  end
  table.sort(lines)
  return table.concat(lines, "\n")
end

local function check(runs, served)
  -- 4. Every job ran once, and only the jobs created.
  local count = {}
  for _, r in ipairs(runs) do
    assert(served[r.job], ("%s ran in worker %s, but is not a job of a served queue"):format(r.job, r.worker))
    assert.are.equal(served[r.job], r.queue, ("the queue %s ran in"):format(r.job))
    count[r.job] = (count[r.job] or 0) + 1
    assert(r.claimed <= r.start and r.start <= r.stop, ("%s: claimed %d, started %d, ended %d: out of order")
      :format(r.job, r.claimed, r.start, r.stop))
  end
  for id in pairs(served) do
    assert((count[id] or 0) == 1, ("job %s ran %d times"):format(id, count[id] or 0))
  end

  -- 1. Each worker runs only its own queues; the shared one runs in both.
  for _, r in ipairs(runs) do
    local w = r.worker == "A" and WORKERS[1] or WORKERS[2]
    assert(w.queues[r.queue], ("%s of queue %s ran in worker %s, which does not serve it"):format(r.job,
      r.queue, r.worker))
  end
  for _, queue in ipairs({ "shared", "global", "rated" }) do
    for _, w in ipairs(WORKERS) do
      assert(#of_queue(runs, queue, w.name) > 0, ("worker %s ran none of the %d jobs of queue %s, which it "
        .. "serves as the other worker does:\n%s"):format(w.name, #of_queue(runs, queue), queue,
        show(of_queue(runs, queue))))
    end
  end

  -- Each worker holds each queue's concurrency.
  for _, w in ipairs(WORKERS) do
    for queue, limits in pairs(w.queues) do
      local limit = type(limits) == "table" and limits.concurrency or limits
      local most, at = max_overlap(of_queue(runs, queue, w.name))
      assert(most <= limit, ("worker %s ran %d jobs of queue %s at once at %s; its concurrency is %d:\n%s")
        :format(w.name, most, queue, at and chronis.time.format(at) or "-", limit,
          show(of_queue(runs, queue, w.name))))
    end
  end

  -- 2. The global queue: at most 2 runs at once, both workers counted.
  local most, at = max_overlap(of_queue(runs, "global"))
  assert(most <= GLOBAL.global_concurrency, ("queue global had %d runs at once at %s across the two "
    .. "workers; its global_concurrency is %d:\n%s"):format(most, at and chronis.time.format(at) or "-",
    GLOBAL.global_concurrency, show(of_queue(runs, "global"))))

  -- 3. The rated queue: at most 5 claims in each window of a second, by
  -- the store's rule (claims count, windows from floor(claim / period)).
  local per_window = {}
  local period = RATED.rate.period * S
  for _, r in ipairs(of_queue(runs, "rated")) do
    local w = r.claimed // period
    per_window[w] = (per_window[w] or 0) + 1
  end
  local windows = {}
  for w in pairs(per_window) do windows[#windows + 1] = w end
  table.sort(windows)
  for i, w in ipairs(windows) do windows[i] = per_window[w] end
  for w, n in pairs(per_window) do
    assert(n <= RATED.rate.limit, ("queue rated had %d claims in the window from %s (%d s); its rate is %d "
      .. "per %d s:\n%s"):format(n, chronis.time.format(w * period), RATED.rate.period, RATED.rate.limit,
      RATED.rate.period, show(of_queue(runs, "rated"))))
  end
  local split = {}
  for _, queue in ipairs({ "shared", "global", "rated" }) do
    split[#split + 1] = ("%s A %d B %d"):format(queue, #of_queue(runs, queue, "A"), #of_queue(runs, queue, "B"))
  end
  return ("%s; global at most %d at once; rated claims per second: %s"):format(table.concat(split, ", "),
    most, table.concat(windows, " "))
end

local function shared_store(name, url_fn)
  describe(name, function()
    local procs = {}

    after_each(function()
      for _, p in ipairs(procs) do p:close() end
      procs = {}
    end)

    it("each worker runs its own queues, within their concurrency, global and rate limits", function()
      local url = url_fn()
      local store = chronis.storage.open(url)
      procs = start_workers(url)
      local served, idle = create_jobs(store, chronis.time.now() + S // 2)
      local expected = 0
      for _ in pairs(served) do expected = expected + 1 end
      if not chronis.run_until(function() return #runs_of(procs) >= expected end, 25) then
        error(("%d of the %d jobs ran within 25 s:\n%s\nworker stderr: %s %s"):format(#runs_of(procs),
          expected, show(runs_of(procs)), procs[1]:stderr(), procs[2]:stderr()))
      end
      chronis.run_until(0.5) -- room for a second run of any job
      stop_workers(procs)
      io.stdout:write("\n", name, ": ", check(runs_of(procs), served), "\n")
      -- The idle queue's jobs wait, and nothing else is left.
      for _, id in ipairs(idle) do
        local job = store:get_job(id)
        assert(job and job.status == "scheduled", ("job %s of the queue no worker serves is %s"):format(id,
          job and job.status or "gone"))
      end
      assert.are.equal(#idle, store:count_jobs())
      for i, p in ipairs(procs) do
        assert.are.equal("", p:stderr(), ("worker %s wrote errors"):format(WORKERS[i].name))
      end
      store:close()
    end)
  end)
end

describe("named queues in two worker processes", function()
  local dir = U.tmpdir("chronis-queues")
  shared_store("on one SQLite file", function() return "sqlite:" .. dir .. "/jobs.db" end)

  local redis
  shared_store("on one Redis server", function()
    redis = redis or require("support.redis").start()
    return redis.url
  end)

  local postgres
  shared_store("on one PostgreSQL database", function()
    postgres = postgres or require("support.postgres").start()
    -- A loaded machine may take longer than the default 10 s to connect.
    return postgres:url("connect_timeout=30")
  end)

  teardown(function()
    if redis then redis:stop() end
    if postgres then postgres:stop() end
    U.remove_tree(dir)
  end)
end)
