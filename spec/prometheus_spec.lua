-- A real Prometheus (Debian's prometheus package) scrapes the /metrics of
-- a chronis HTTP server on this spec's loop every second; the spec runs
-- jobs, waits for the scrapes, and asks Prometheus's query API what it
-- stored: the counts must be what ran.
local chronis = require "chronis"
local core = require "chronis.core"
local prometheus = require "support.prometheus"

local decode = core.json.decode

-- Percent-encodes a query for a URL.
local function encode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

-- The value of an instant query that answers one number, or nil when it
-- answers nothing (not scraped yet).
local function query(prom, q)
  local r = chronis.http.request { url = prom.url .. "/api/v1/query?query=" .. encode(q), timeout = 5 }
  assert(r.status == 200, "prometheus answered " .. r.status .. ": " .. r.body)
  local doc = decode(r.body)
  assert(doc.status == "success", r.body)
  local result = doc.data.result
  if #result == 0 then return nil end
  assert(#result == 1, "more than one series: " .. r.body)
  return tonumber(result[1].value[2])
end

-- Polls f every 0.2 s while the loop runs (so that the server is scraped
-- meanwhile) until it returns a true value, for at most `seconds`.
local function eventually(f, seconds)
  local deadline = core.time.now() + seconds * 1e6
  while core.time.now() < deadline do
    local ok, v = pcall(f)
    if ok and v then return v end
    chronis.run_until(0.2)
  end
  return f()
end

describe("Prometheus scraping chronis", function()
  local sched, srv, prom

  after_each(function()
    if prom then prom:stop() end
    prom = nil
    if srv then srv.close() end
    srv = nil
    if sched then
      sched:stop(0)
      sched:close()
    end
    sched = nil
    collectgarbage()
  end)

  it("stores the runs that happened, as the exposition counts them", function()
    sched = chronis.scheduler { storage = chronis.storage.memory(), polling_interval = 0.1,
      logger = function() end }
    sched:handler("ok", function() end)
    sched:handler("bad", function() error("boom") end)
    srv = chronis.http_server { listen = "127.0.0.1:0", schedulers = { sched } }
    prom = prometheus.start { targets = { "127.0.0.1:" .. srv.port } }

    -- Prometheus answers, and has scraped the server once with success.
    assert.is_true(eventually(function() return query(prom, 'up{job="chronis"}') == 1 end, 30),
      "prometheus never scraped the server; its log:\n" .. prom:log())

    local N, FAILED = 25, 3
    local now = chronis.time.format(chronis.time.now())
    for i = 1, N do sched:create_date_job { job_id = "ok" .. i, func_name = "ok", run_date = now } end
    for i = 1, FAILED do
      sched:create_date_job { job_id = "bad" .. i, func_name = "bad", run_date = now, max_retries = 0 }
    end
    sched:start()
    assert.is_true(chronis.run_until(function()
      local st = sched:stats()
      return st.succeeded == N and st.failed == FAILED
    end, 10))

    local ok = eventually(function()
      return query(prom, 'sum(chronis_runs_total{outcome="ok"})') == N
    end, 30)
    assert.is_true(ok, "prometheus has sum(chronis_runs_total{outcome=\"ok\"}) = "
      .. tostring(query(prom, 'sum(chronis_runs_total{outcome="ok"})')) .. ", " .. N .. " ran")
    assert.are.equal(FAILED, query(prom, 'sum(chronis_runs_total{outcome="error"})'))
    assert.are.equal(FAILED, query(prom, 'sum(chronis_run_failures_total)'))
    assert.are.equal(N + FAILED, query(prom, 'sum(chronis_run_duration_seconds_count)'))
    assert.are.equal(N + FAILED, query(prom, 'sum(chronis_claim_batch_size_sum)'))
    -- The jobs gauge is counted at most every jobs_max_age (5) seconds.
    assert.is_true(eventually(function()
      return query(prom, 'sum(chronis_jobs{status="failed"})') == FAILED
    end, 30))
    -- The scrape itself went well: no sample was dropped or refused.
    assert.are.equal(1, query(prom, 'up{job="chronis"}'))
    local r = decode(chronis.http.request { url = prom.url .. "/api/v1/targets", timeout = 5 }.body)
    local target = r.data.activeTargets[1]
    assert.are.equal("up", target.health)
    assert.are.equal("", target.lastError)
  end)
end)
