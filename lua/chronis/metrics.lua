--- chronis.metrics: the Prometheus text exposition (format 0.0.4) that
--- /metrics serves (docs/http.md#metrics). The counters and histograms
--- live in C (runtime/core/metrics.c), which also writes the text; this
--- module adds what needs a store: the jobs per status, counted with
--- count_jobs and reused for jobs_max_age seconds, so that a scrape never
--- scans a store.
local core = require "chronis.core"

local M = {}

--- Seconds a count of jobs per status is reused before the store is asked
--- again: how stale chronis_jobs may be.
M.jobs_max_age = 5

local statuses = { "pending", "scheduled", "running", "paused", "failed", "completed" }

-- The last counts, by store (schedulers without a scope share them) or by
-- scheduler (a scope counts its own jobs): { at = µs, jobs = {...} or nil }.
-- Weak keys: a store or scheduler that goes away takes its counts along.
local counts = setmetatable({}, { __mode = "k" })

local function jobs_of(s)
  local scope = s._filters
  local key = scope and s or s:store()
  local c = counts[key]
  local now = core.time.now()
  if c and now - c.at < M.jobs_max_age * 1e6 then return c.jobs end
  -- Counted (or failed) now: a store that is down is asked again only
  -- once the age has passed, and meanwhile the last counts stand.
  local entry = { at = now, jobs = c and c.jobs }
  counts[key] = entry
  local jobs = {}
  for _, st in ipairs(statuses) do
    local f = { status = st }
    if scope then
      for k, v in pairs(scope) do f[k] = v end
    end
    local ok, n = pcall(s.count_jobs, s, f)
    if not ok or math.type(n) ~= "integer" then return entry.jobs end
    jobs[st] = n
  end
  entry.jobs = jobs
  return jobs
end

--- render(ctx) -> text: the schedulers of ctx.schedulers (closed ones left
--- out), every store kind the process used, and the process.
function M.render(ctx)
  local items, seen = {}, {}
  for i, s in ipairs(ctx.schedulers or {}) do
    local ok, label = pcall(s.node_id, s)
    if ok then
      -- Two schedulers given the same node_id would make two series with
      -- the same labels, which the format forbids.
      if seen[label] then label = label .. "#" .. i end
      seen[label] = true
      items[#items + 1] = { engine = s._e, scheduler = label, jobs = jobs_of(s) }
    end
  end
  return core.metrics.render(items, (core.memory_used()))
end

return M
