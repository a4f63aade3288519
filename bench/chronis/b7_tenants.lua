-- B7 tenants: T tenants × J jobs each (metadata.tenant_id), scheduled in
-- the far future, then the store calls a multi-tenant deployment makes,
-- each timed P times on the monotonic clock (median, µs):
--   tenant query   query_jobs{metadata.tenant_id = t, status = scheduled}, limit 100
--   status query   query_jobs{status = scheduled}, limit 100 (the yardstick)
--   scoped poll    claim_due_jobs{filters = tenant t} with nothing of t due
--                  while every other tenant has one job due
--   scoped claim   the same with 10 of t's jobs due (claimed, then deleted)
-- Run once with the store's index_metadata=tenant_id and once without (the
-- harness gives the URL); the ratio of the two is the index's speed-up.
-- usage: lua5.4 bench/chronis/b7_tenants.lua TENANTS PER_TENANT STORAGE_URL [POLLS]
package.path = (arg[0]:match("^(.*/)") or "./") .. "?.lua;" .. package.path
local B = require "common"
local chronis = B.chronis

local T = tonumber(arg[1]) or 100
local J = tonumber(arg[2]) or 1000
local url = arg[3] or "memory:"
local P = tonumber(arg[4]) or 100
local tasks = url:match("^memory") and 1 or 32

local store = chronis.storage.open(url)
local sched = chronis.scheduler{ storage = store }
sched:handler("noop", function() end)
local mono = B.util.mono
local fmt = chronis.time.format
local base = chronis.time.parse("2100-01-01T00:00:00Z")

local function tenant(i) return ("t%03d"):format(i) end

-- Jobs k = 1..T*J: tenant (k - 1) % T + 1, one a minute from 2100 on.
local function create_range(lo, hi)
  for k = lo, hi do
    sched:create_date_job{ job_id = "j" .. k, func_name = "noop", run_date = fmt(base + k * 60000000),
                           metadata = { tenant_id = tenant((k - 1) % T + 1) } }
  end
end
local N = T * J
local w0 = mono()
if tasks <= 1 then
  create_range(1, N)
else
  local list, per = {}, (N + tasks - 1) // tasks
  for t = 0, tasks - 1 do
    local lo, hi = t * per + 1, math.min(N, (t + 1) * per)
    if lo <= hi then list[#list + 1] = chronis.spawn(create_range, lo, hi) end
  end
  for _, t in ipairs(list) do t:join() end
end
local create_s = (mono() - w0) / 1e9

local function timeit(n, f)
  local t = {}
  for i = 1, n do
    local a = mono()
    f(i)
    t[i] = (mono() - a) / 1000
  end
  table.sort(t)
  return { median_us = B.pct(t, 50), p90_us = B.pct(t, 90), min_us = t[1], max_us = t[#t], n = n }
end

local bad = {}
local function check(cond, fmt_, ...) if not cond then bad[#bad + 1] = fmt_:format(...) end end

local tq = timeit(P, function(i)
  local t = tenant((i - 1) % T + 1)
  local got = store:query_jobs({ ["metadata.tenant_id"] = t, status = "scheduled" }, 100)
  check(#got == math.min(100, J), "tenant query %s: %d jobs", t, #got)
  for _, j in ipairs(got) do check(j.metadata.tenant_id == t, "tenant query %s returned %s", t, j.job_id) end
end)
local sq = timeit(P, function()
  local got = store:query_jobs({ status = "scheduled" }, 100)
  check(#got == 100, "status query: %d jobs", #got)
end)

-- Every tenant but the measured one has a job due: the scope must skip them.
local past = fmt(chronis.time.now() - 1000000)
local me = tenant(1)
for i = 2, T do
  sched:create_date_job{ job_id = "other" .. i, func_name = "noop", run_date = past,
                         metadata = { tenant_id = tenant(i) } }
end
local scope = { ["metadata.tenant_id"] = me }
local owner = "bench-b7"
local poll = timeit(P, function()
  local got = store:claim_due_jobs{ now = chronis.time.now(), limit = 100, owner = owner,
                                    lease_seconds = 30, filters = scope }
  check(#got == 0, "scoped poll claimed %d jobs of other tenants", #got)
end)
local R = math.max(5, P // 5)
local times = {}
for r = 1, R do
  for i = 1, 10 do
    sched:create_date_job{ job_id = ("due%d_%d"):format(r, i), func_name = "noop", run_date = past,
                           metadata = { tenant_id = me } }
  end
  local a = mono()
  local got = store:claim_due_jobs{ now = chronis.time.now(), limit = 100, owner = owner,
                                    lease_seconds = 30, filters = scope }
  times[r] = (mono() - a) / 1000
  check(#got == 10, "scoped claim: %d of 10 jobs", #got)
  for _, j in ipairs(got) do
    check(j.metadata.tenant_id == me, "scoped claim took %s of %s", j.job_id, tostring(j.metadata.tenant_id))
    store:delete_job(j.job_id)
  end
end
table.sort(times)
local claim = { median_us = B.pct(times, 50), p90_us = B.pct(times, 90), min_us = times[1],
                max_us = times[#times], n = R }

B.emit{
  impl = "chronis", store = url:match("^(%w+)"), tenants = T, per_tenant = J,
  indexed = url:find("index_metadata", 1, true) ~= nil,
  create_s = create_s, create_per_s = N / create_s,
  tenant_query = tq, status_query = sq, scoped_poll = poll, scoped_claim = claim,
  errors = #bad, first_error = bad[1],
  versions = { chronis = chronis._VERSION, lua = _VERSION },
}
