-- Job records the specs share: a minimal one, and the full one that holds
-- every field of the job record (docs/design.md), runtime fields and
-- unknown fields of every JSON type, for round trips through a store.
--
--   local J = require "support.jobs"
--   store:create_job(J.job("a", { priority = 9 }))     -- due at J.T0
--   store:create_job(J.full({ status = "scheduled" }))
local J = {}

-- Jobs live at fixed instants, so that only updated_at depends on the clock.
J.T0 = "2025-01-15T10:00:00Z"

-- As a field's value: leave this field out.
J.NONE = setmetatable({}, { __name = "NONE" })

-- A deep copy.
function J.copy(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = J.copy(x) end
  return t
end

-- The job_id of each job of a list, in order.
function J.ids_of(list)
  local out = {}
  for i, j in ipairs(list) do out[i] = j.job_id end
  return out
end

-- A copy of base with fields set (copied) or, for J.NONE, removed.
local function with(base, fields)
  local j = J.copy(base)
  for k, v in pairs(fields or {}) do
    if v == J.NONE then j[k] = nil else j[k] = J.copy(v) end
  end
  return j
end

-- A minimal scheduled job due at T0.
function J.job(id, fields)
  return with({ job_id = id, status = "scheduled", next_run_time = J.T0 }, fields)
end

local FULL = {
  job_id = "daily_report_20250115_093000_0a1b2c3d",
  name = "Daily Report",
  trigger_type = "cron",
  trigger_args = { hour = 9, minute = 30, day_of_week = "mon-fri" },
  timezone = "Asia/Seoul",
  func_name = "daily_report",
  args = { 1, "two", 3.5, true, { nested = "t" } },
  kwargs = { to = "a@b.c", count = 3, opts = { dry = false } },
  status = "running",
  next_run_time = "2025-01-15T00:30:00Z",
  next_run_time_local = "2025-01-15T09:30:00+09:00",
  metadata = { tenant_id = "acme", tags = { "x", "y" }, level = { deep = { n = 1 } } },
  created_at = "2025-01-01T00:00:00Z",
  max_retries = 3,
  retry_delay_seconds = 60,
  retry_count = 1,
  timeout_seconds = 300,
  priority = 7,
  if_missed = "run_all",
  misfire_threshold_seconds = 120,
  last_run_time = "2025-01-14T00:30:00.123456Z",
  last_scheduled_time = "2025-01-14T00:30:00Z",
  claimed_by = "node-1",
  lease_until = "2025-01-15T00:31:00Z",
  attempt = 2,
  custom = { deep = { 1, 2, "x" } },
  enabled = false,
  ratio = 0.25,
  big = 1 << 40,
  note = 'quote " backslash \\ tab \t newline \n ünïcode 日本',
}

-- The full job (a new copy each time), fields changed as in J.job.
function J.full(fields)
  return with(FULL, fields)
end

return J
