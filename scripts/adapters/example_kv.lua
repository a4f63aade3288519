-- example_kv.lua - the worked example of docs/adapters.md: a complete
-- chronis storage adapter written in Lua, over a plain table that lives in
-- this process (job_id -> record). It passes the shared contract suite
-- (spec/example_kv_spec.lua runs it).
--
-- Clarity comes before speed here: every query looks at every job. To write
-- an adapter for a real backend, copy this file and replace the reads and
-- writes of `self.jobs` with calls to the backend; keep the checks, the
-- copies and the error codes as they are.
--
-- The file returns a constructor: opts -> store. Open it with
--   chronis.storage.lua("scripts/adapters/example_kv.lua")
-- or the URL "lua:scripts/adapters/example_kv.lua".
local chronis = require "chronis"

local null = chronis.json.null
local parse_time, format_time = chronis.time.parse, chronis.time.format

-- Store failures are structured errors (DESIGN.md §4): a table with `code`
-- and `message` whose tostring is "code: message". Callers test err.code.
local function fail(code, fmt, ...)
  error(chronis.error(code, fmt:format(...)), 2)
end

local STATUSES = { pending = true, scheduled = true, running = true, paused = true, failed = true }
local STATUS_LIST = "pending, scheduled, running, paused or failed"
local TRIGGER_TYPES = { interval = true, cron = true, date = true }

-- The fields that hold instants. Callers may give any ISO-8601 form or
-- integer microseconds; the store keeps and returns the canonical form
-- ("2025-01-15T10:00:00Z"). Other fields are data and are never rewritten.
local TIME_FIELDS = { "next_run_time", "created_at", "updated_at", "last_run_time",
  "last_scheduled_time", "lease_until" }

-- µs since the epoch for a time value, or an 'invalid' error naming `what`.
-- A naive time (no offset) is read as UTC: at the store level a job's
-- timezone is just data.
local function to_us(value, what)
  if math.type(value) == "integer" then return value end
  if type(value) == "string" then
    local ok, us = pcall(parse_time, value)
    if ok then return us end
    fail("invalid", "%s: %s", what, type(us) == "table" and us.message or tostring(us))
  end
  fail("invalid", "%s: expected an ISO-8601 time or integer microseconds, got %s", what, type(value))
end

-- Comparisons and ordering use numbers: canonical strings do not sort in
-- time order ("10:00:00.5Z" sorts before "10:00:00Z").
local function time_of(rec, field)
  local v = rec[field]
  return v ~= nil and parse_time(v) or nil
end

-- A deep copy. Callers never share a table with the store: what they pass
-- in is copied on the way in, what they get back is copied on the way out.
local function copy(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = copy(x) end
  return out
end

-- Equality as JSON sees it: 1 and "1" differ; tables are equal when they
-- have the same keys with equal values.
local function same(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  for k, v in pairs(a) do
    if not same(v, b[k]) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

-- Checks the few fields the store itself relies on, in a table that is
-- already the store's own copy, and rewrites its times canonically. The
-- rest of a job is the scheduler's business and is kept as given.
-- `partial` is for updates and CAS expectations, where chronis.json.null
-- stands for "absent".
local function check_fields(t, where, partial)
  for _, f in ipairs(TIME_FIELDS) do
    if t[f] ~= nil and t[f] ~= null then
      t[f] = format_time(to_us(t[f], ("%s: invalid field '%s'"):format(where, f)))
    end
  end
  if t.status ~= nil and not (partial and t.status == null) and not STATUSES[t.status] then
    fail("invalid", "%s: invalid field 'status': expected %s", where, STATUS_LIST)
  end
  local p = t.priority
  if p ~= nil and p ~= null and not (type(p) == "number" and math.tointeger(p)) then
    fail("invalid", "%s: invalid field 'priority': expected an integer", where)
  end
end

-- The record to store for create_job(job).
local function new_record(job)
  if type(job) ~= "table" then
    fail("invalid", "create_job: a job must be a table, got %s", type(job))
  end
  if type(job.job_id) ~= "string" or job.job_id == "" then
    fail("invalid", "create_job: field 'job_id' is required (a non-empty string)")
  end
  local rec = {}
  for k, v in pairs(job) do
    if v ~= null then rec[k] = copy(v) end -- null in a whole record: absent
  end
  local where = ("job '%s'"):format(rec.job_id)
  if rec.status == nil then fail("invalid", "%s: field 'status' is required", where) end
  check_fields(rec, where, false)
  return rec
end

-- A checked copy of the updates for job `id` (update_job, CAS, complete).
local function check_updates(id, updates)
  if type(updates) ~= "table" then
    fail("invalid", "job '%s': updates must be a table, got %s", id, type(updates))
  end
  local u = copy(updates)
  local where = ("job '%s'"):format(id)
  if u.job_id ~= nil and u.job_id ~= id then fail("invalid", "%s: job_id cannot be changed", where) end
  if u.status == null then fail("invalid", "%s: status cannot be removed", where) end
  check_fields(u, where, true)
  return u
end

-- Merges checked updates into a record: one level deep (a table-valued
-- field is replaced as a whole), null removes the field.
local function apply(rec, u)
  for k, v in pairs(u) do
    if v == null then rec[k] = nil else rec[k] = v end
  end
end

-- CAS: every expected field equal to the record's. Times are compared as
-- instants; an expected null means "absent"; an absent field never
-- equals an expected value.
local function matches(rec, expected)
  for k, want in pairs(expected) do
    local have = rec[k]
    if want == null then
      if have ~= nil then return false end
    elseif have == nil then
      return false
    elseif not same(have, want) then
      return false
    end
  end
  return true
end

-- The value at a dotted path below metadata ("region.zone"), or nil.
local function metadata_at(rec, path)
  local v = rec.metadata
  for part in path:gmatch("[^.]+") do
    if type(v) ~= "table" then return nil end
    v = v[part]
  end
  return v
end

local FILTER_KEYS = "status, trigger_type, next_run_time_lte/gte, updated_at_lte/gte, "
  .. "metadata.<key>, job_id_in"

-- Turns filters into one predicate over records, checking every key first:
-- an unknown key is an error, never ignored (a typo would otherwise widen
-- the query silently). All filters must hold (AND).
local function compile_filters(filters)
  if filters == nil then return function() return true end end
  if type(filters) ~= "table" then fail("invalid", "filters must be a table, got %s", type(filters)) end
  local tests = {}
  for key, want in pairs(filters) do
    local time_field, op = nil, nil
    if type(key) == "string" then time_field, op = key:match("^(.+)_([lg]te)$") end
    if key == "status" then
      local set = {}
      for _, s in ipairs(type(want) == "table" and want or { want }) do
        if not STATUSES[s] then fail("invalid", "invalid filter 'status': expected %s", STATUS_LIST) end
        set[s] = true
      end
      tests[#tests + 1] = function(rec) return set[rec.status] == true end
    elseif key == "trigger_type" then
      if not TRIGGER_TYPES[want] then
        fail("invalid", "invalid filter 'trigger_type': expected interval, cron or date")
      end
      tests[#tests + 1] = function(rec) return rec.trigger_type == want end
    elseif time_field == "next_run_time" or time_field == "updated_at" then
      local bound = to_us(want, ("invalid filter '%s'"):format(key))
      tests[#tests + 1] = function(rec)
        local t = time_of(rec, time_field)
        if t == nil then return false end -- a missing time satisfies no bound
        if op == "lte" then return t <= bound end
        return t >= bound
      end
    elseif key == "job_id_in" then
      if type(want) ~= "table" then
        fail("invalid", "invalid filter 'job_id_in': expected an array of ids")
      end
      local set = {}
      for _, id in ipairs(want) do
        if type(id) ~= "string" then fail("invalid", "invalid filter 'job_id_in': ids must be strings") end
        set[id] = true
      end
      tests[#tests + 1] = function(rec) return set[rec.job_id] == true end
    elseif type(key) == "string" and key:match("^metadata%.[^.]") then
      local path = key:sub(#"metadata." + 1)
      tests[#tests + 1] = function(rec) return same(metadata_at(rec, path), want) end
    else
      fail("invalid", "invalid filter '%s': unknown key (expected %s)", tostring(key), FILTER_KEYS)
    end
  end
  return function(rec)
    for _, test in ipairs(tests) do
      if not test(rec) then return false end
    end
    return true
  end
end

-- Query order: next_run_time ascending, jobs without one last, then job_id.
local function query_order(a, b)
  local ta, tb = time_of(a, "next_run_time"), time_of(b, "next_run_time")
  if ta ~= tb then
    if ta == nil then return false end
    if tb == nil then return true end
    return ta < tb
  end
  return a.job_id < b.job_id
end

-- Claim order: highest priority first (missing = 5), then the earliest,
-- then job_id.
local function claim_order(a, b)
  local pa, pb = a.priority or 5, b.priority or 5
  if pa ~= pb then return pa > pb end
  return query_order(a, b)
end

local function check_count(v, what)
  if v ~= nil and (math.type(v) ~= "integer" or v < 0) then
    fail("invalid", "%s must be a non-negative integer", what)
  end
end

local function check_id(id, what)
  if type(id) ~= "string" then fail("invalid", "%s: job id must be a string, got %s", what, type(id)) end
end

-- The claim options of claim_due_jobs and extend_leases, checked; defaults
-- as the C stores: now = the clock, limit 100, lease 30 s.
local function lease_opts(opts, what)
  if type(opts) ~= "table" then fail("invalid", "%s: options must be a table", what) end
  if type(opts.owner) ~= "string" then fail("invalid", "%s: 'owner' must be a string", what) end
  local now = opts.now == nil and chronis.time.now() or to_us(opts.now, what .. ": invalid 'now'")
  local lease = opts.lease_seconds or 30
  if type(lease) ~= "number" or lease < 0 then
    fail("invalid", "%s: 'lease_seconds' must be a non-negative number", what)
  end
  check_count(opts.limit, what .. ": 'limit'")
  return now, opts.owner, format_time(now + math.floor(lease * 1000000)), opts.limit or 100
end

local Store = {}
Store.__index = Store

local function check_open(self)
  if self.closed then error("attempt to use a closed store", 3) end
end

-- updated_at for a write: the wall clock, but strictly increasing in this
-- store, so that two writes within one microsecond never carry the same
-- updated_at (a CAS on updated_at would take the second for "unchanged").
local function stamp(self)
  local now = chronis.time.now()
  if now <= self.last_stamp then now = self.last_stamp + 1 end
  self.last_stamp = now
  return format_time(now)
end

-- Required operations.
--
-- None of these methods yields, so within this process no other call can
-- run between a read and the write that follows it: that is what makes
-- compare_and_swap_job and claim_due_jobs atomic here. An adapter over a
-- network backend yields while it waits and must get the same guarantee
-- from the backend (a transaction, a conditional write, a server script).

-- create_job(job) -> the stored job; 'duplicate' when the id exists.
function Store:create_job(job)
  check_open(self)
  local rec = new_record(job)
  if self.jobs[rec.job_id] ~= nil then
    fail("duplicate", "job '%s' already exists", rec.job_id)
  end
  rec.updated_at = stamp(self) -- the store's, whatever the caller gave
  self.jobs[rec.job_id] = rec
  return copy(rec)
end

-- get_job(id) -> job or nil.
function Store:get_job(id)
  check_open(self)
  check_id(id, "get_job")
  return copy(self.jobs[id])
end

-- update_job(id, updates) -> the updated job; 'not_found' when missing.
function Store:update_job(id, updates)
  check_open(self)
  check_id(id, "update_job")
  local u = check_updates(id, updates)
  local rec = self.jobs[id]
  if rec == nil then fail("not_found", "job '%s' not found", id) end
  apply(rec, u)
  rec.updated_at = stamp(self)
  return copy(rec)
end

-- compare_and_swap_job(id, expected, updates) -> true, job | false, nil.
function Store:compare_and_swap_job(id, expected, updates)
  check_open(self)
  check_id(id, "compare_and_swap_job")
  if type(expected) ~= "table" then
    fail("invalid", "job '%s': expected must be a table, got %s", id, type(expected))
  end
  local want = copy(expected)
  check_fields(want, ("job '%s': expected"):format(id), true)
  local u = check_updates(id, updates)
  local rec = self.jobs[id]
  if rec == nil then fail("not_found", "job '%s' not found", id) end
  if not matches(rec, want) then return false, nil end
  apply(rec, u)
  rec.updated_at = stamp(self)
  return true, copy(rec)
end

-- delete_job(id) -> true when the job existed.
function Store:delete_job(id)
  check_open(self)
  check_id(id, "delete_job")
  local existed = self.jobs[id] ~= nil
  self.jobs[id] = nil
  return existed
end

-- query_jobs(filters, limit, offset) -> array in query order; limit and
-- offset apply after filtering and ordering.
function Store:query_jobs(filters, limit, offset)
  check_open(self)
  local match = compile_filters(filters)
  check_count(limit, "limit")
  check_count(offset, "offset")
  local found = {}
  for _, rec in pairs(self.jobs) do
    if match(rec) then found[#found + 1] = rec end
  end
  table.sort(found, query_order)
  local out = {}
  local first = (offset or 0) + 1
  local last = limit and math.min(#found, first + limit - 1) or #found
  for i = first, last do out[#out + 1] = copy(found[i]) end
  return out
end

-- Optional operations. A store without them still works: the engine falls
-- back to the required ones (query + lock + CAS per job for a claim, CAS
-- per job for completions and leases, get per id, query for a count). With
-- them, each is one call, which for a networked backend is one round trip.

-- get_jobs_batch(ids) -> { [id] = job } for the ids found.
function Store:get_jobs_batch(ids)
  check_open(self)
  if type(ids) ~= "table" then fail("invalid", "get_jobs_batch: expected an array of ids") end
  local out = {}
  for _, id in ipairs(ids) do
    check_id(id, "get_jobs_batch")
    out[id] = copy(self.jobs[id])
  end
  return out
end

-- count_jobs(filters) -> integer, the number query_jobs would return.
function Store:count_jobs(filters)
  check_open(self)
  local match = compile_filters(filters)
  local n = 0
  for _, rec in pairs(self.jobs) do
    if match(rec) then n = n + 1 end
  end
  return n
end

-- claim_due_jobs{now, limit, owner, lease_seconds} -> the jobs claimed.
-- Atomically moves up to `limit` due scheduled jobs to running, owned by
-- `owner` until now + lease_seconds.
function Store:claim_due_jobs(opts)
  check_open(self)
  local now, owner, lease_until, limit = lease_opts(opts, "claim_due_jobs")
  local due = {}
  for _, rec in pairs(self.jobs) do
    local t = time_of(rec, "next_run_time")
    if rec.status == "scheduled" and t ~= nil and t <= now then due[#due + 1] = rec end
  end
  table.sort(due, claim_order)
  local updated_at, out = stamp(self), {}
  for i = 1, math.min(limit, #due) do
    local rec = due[i]
    rec.status, rec.claimed_by, rec.lease_until, rec.updated_at = "running", owner, lease_until, updated_at
    out[i] = copy(rec)
  end
  return out
end

-- complete_jobs{ {job_id=, owner=, delete=true} | {job_id=, owner=, updates=} ... }
-- -> one result per item, in order: {job_id=, ok=true} or {job_id=, ok=false,
-- code="not_found"|"conflict"}. Each item is a CAS on claimed_by == owner,
-- so an owner whose lease was recovered cannot overwrite the new owner.
function Store:complete_jobs(list)
  check_open(self)
  if type(list) ~= "table" then fail("invalid", "complete_jobs: expected an array of completions") end
  -- Check every item before changing anything.
  local items = {}
  for i, item in ipairs(list) do
    if type(item) ~= "table" or type(item.job_id) ~= "string" or type(item.owner) ~= "string" then
      fail("invalid", "complete_jobs: item %d needs job_id and owner (strings)", i)
    end
    items[i] = { job_id = item.job_id, owner = item.owner, delete = item.delete and true or false,
      updates = not item.delete and check_updates(item.job_id, item.updates or {}) or nil }
  end
  local results, updated_at = {}, stamp(self)
  for i, item in ipairs(items) do
    local rec = self.jobs[item.job_id]
    if rec == nil then
      results[i] = { job_id = item.job_id, ok = false, code = "not_found" }
    elseif rec.claimed_by ~= item.owner then
      results[i] = { job_id = item.job_id, ok = false, code = "conflict" }
    else
      if item.delete then
        self.jobs[item.job_id] = nil
      else
        apply(rec, item.updates)
        rec.updated_at = updated_at
      end
      results[i] = { job_id = item.job_id, ok = true }
    end
  end
  return results
end

-- recover_expired_leases(now) -> integer: running jobs whose lease_until is
-- before now go back to scheduled, without owner or lease.
function Store:recover_expired_leases(now)
  check_open(self)
  now = now == nil and chronis.time.now() or to_us(now, "recover_expired_leases: invalid 'now'")
  local n, updated_at = 0, nil
  for _, rec in pairs(self.jobs) do
    local lease = time_of(rec, "lease_until")
    if rec.status == "running" and lease ~= nil and lease < now then
      updated_at = updated_at or stamp(self)
      rec.status, rec.claimed_by, rec.lease_until, rec.updated_at = "scheduled", nil, nil, updated_at
      n = n + 1
    end
  end
  return n
end

-- extend_leases{now, lease_seconds, owner, ids} -> integer: the engine's
-- heartbeat; moves lease_until to now + lease_seconds for each listed job
-- that is running and owned by `owner`.
function Store:extend_leases(opts)
  check_open(self)
  local _, owner, lease_until = lease_opts(opts, "extend_leases")
  if type(opts.ids) ~= "table" then fail("invalid", "extend_leases: 'ids' must be an array of ids") end
  local n, updated_at = 0, nil
  for _, id in ipairs(opts.ids) do
    local rec = self.jobs[id]
    if rec ~= nil and rec.status == "running" and rec.claimed_by == owner then
      updated_at = updated_at or stamp(self)
      rec.lease_until, rec.updated_at = lease_until, updated_at
      n = n + 1
    end
  end
  return n
end

-- next_due_time() -> the earliest next_run_time of a scheduled job, or
-- nil: lets the engine arm a timer instead of waiting for the next poll.
function Store:next_due_time()
  check_open(self)
  local best
  for _, rec in pairs(self.jobs) do
    local t = time_of(rec, "next_run_time")
    if rec.status == "scheduled" and t ~= nil and (best == nil or t < best) then best = t end
  end
  return best and format_time(best)
end

-- close(): idempotent; every later call raises.
function Store:close()
  self.closed = true
end

-- The constructor. This adapter has no options of its own; refusing
-- unknown ones turns a typo into an error instead of a silently different
-- store. adapter_timeout belongs to the bridge (chronis.storage.lua), which
-- may pass it along.
return function(opts)
  for k in pairs(opts or {}) do
    if k ~= "adapter_timeout" then fail("invalid", "example_kv: unknown option '%s'", tostring(k)) end
  end
  return setmetatable({ jobs = {}, last_stamp = 0, closed = false }, Store)
end
