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

-- The contract's mechanical parts (checking, copying, comparing, filtering
-- and ordering records) are the same in every adapter and live in the kit;
-- what is left in this file is what an adapter decides: where records live
-- and how each operation reads and writes them.
local kit = require "chronis.adapter_kit"

local format_time = chronis.time.format

-- Store failures are structured errors (docs/adapters.md): kit.fail(code, fmt,
-- ...) raises a table with `code` and `message` whose tostring is
-- "code: message". Callers test err.code.
local fail = kit.fail

-- Copies. Callers never share a table with the store: kit.copy (a deep
-- copy) is applied to what goes in and to every job handed back.
local copy = kit.copy

local Store = {}
Store.__index = Store

-- kit.check_call(self, method, ...) opens every method: it raises when
-- self.closed is set, checks all of the method's arguments before anything
-- changes, as every store does (the C stores' own rules), and returns them
-- ready to use. kit.stamp(self) is updated_at for a write: the clock, but
-- strictly increasing in this store (self.last_stamp), so that two writes
-- within one microsecond never carry the same updated_at (a CAS on
-- updated_at would take the second for "unchanged").
local check_call, stamp = kit.check_call, kit.stamp

-- Required operations.
--
-- Each one checks its call, reads, decides, writes with a new updated_at
-- and returns a copy.
--
-- None of these methods yields, so within this process no other call can
-- run between a read and the write that follows it: that is what makes
-- compare_and_swap_job and claim_due_jobs atomic here. An adapter over a
-- network backend yields while it waits and must get the same guarantee
-- from the backend (a transaction, a conditional write, a server script).

-- create_job(job) -> the stored job; 'duplicate' when the id exists.
-- The checked job is the store's own copy (kit.check_record): job_id and
-- status required, null fields dropped, times canonical
-- ("2025-01-15T10:00:00Z"), so that every later comparison of times is a
-- comparison of instants.
function Store:create_job(job)
  local rec = check_call(self, "create_job", job)
  if self.jobs[rec.job_id] ~= nil then
    fail("duplicate", "job '%s' already exists", rec.job_id)
  end
  rec.updated_at = stamp(self) -- the store's, whatever the caller gave
  self.jobs[rec.job_id] = rec
  return copy(rec)
end

-- get_job(id) -> job or nil.
function Store:get_job(id)
  check_call(self, "get_job", id)
  return copy(self.jobs[id])
end

-- update_job(id, updates) -> the updated job; 'not_found' when missing.
-- The checked updates are a copy (kit.check_update_job: job_id cannot
-- change, status cannot be removed, no lease fields nor status running,
-- times canonical); kit.apply merges them one level deep, null removing a
-- field.
function Store:update_job(id, updates)
  local _, u = check_call(self, "update_job", id, updates)
  local rec = self.jobs[id]
  if rec == nil then fail("not_found", "job '%s' not found", id) end
  kit.apply(rec, u)
  rec.updated_at = stamp(self)
  return copy(rec)
end

-- compare_and_swap_job(id, expected, updates) -> true, job | false, nil.
-- Both the expectation and the updates are checked before the job is read,
-- so a bad call is 'invalid' whether or not it would have matched.
-- kit.matches is the CAS comparison: values by content (1 is not "1"),
-- times as instants, an expected null meaning "absent".
function Store:compare_and_swap_job(id, expected, updates)
  local _, want, u = check_call(self, "compare_and_swap_job", id, expected, updates)
  local rec = self.jobs[id]
  if rec == nil then fail("not_found", "job '%s' not found", id) end
  if not kit.matches(rec, want) then return false, nil end
  kit.apply(rec, u)
  rec.updated_at = stamp(self)
  return true, copy(rec)
end

-- delete_job(id) -> true when the job existed.
function Store:delete_job(id)
  check_call(self, "delete_job", id)
  local existed = self.jobs[id] ~= nil
  self.jobs[id] = nil
  return existed
end

-- query_jobs(filters, limit, offset) -> array in query order; limit and
-- offset apply after filtering and ordering. The checked filters are one
-- predicate over records (kit.compile_filters: an unknown key is
-- 'invalid'). kit.sort_query orders by next_run_time as an instant (jobs
-- without one last), then job_id; kit.page skips `offset` and keeps at
-- most `limit`. A backend that can filter and sort itself (an SQL WHERE
-- and ORDER BY) would send the query there instead.
function Store:query_jobs(filters, limit, offset)
  local match = check_call(self, "query_jobs", filters, limit, offset)
  local found = {}
  for _, rec in pairs(self.jobs) do
    if match(rec) then found[#found + 1] = rec end
  end
  local out = kit.page(kit.sort_query(found), limit, offset)
  for i, rec in ipairs(out) do out[i] = copy(rec) end
  return out
end

-- Optional operations. A store without them still works: the engine falls
-- back to the required ones (query + lock + CAS per job for a claim, CAS
-- per job for completions and leases, get per id, query for a count). With
-- them, each is one call, which for a networked backend is one round trip.

-- create_jobs(list) -> one result per record, in order: {job_id=, ok=true},
-- or ok=false with code "duplicate" for an id stored already or taken by an
-- earlier record of the list. kit's check_call checks every record first,
-- so an invalid one fails the whole call before anything is written. A
-- networked backend would send the list in one batch request.
function Store:create_jobs(list)
  local records = check_call(self, "create_jobs", list)
  local results = {}
  for i, rec in ipairs(records) do
    if self.jobs[rec.job_id] ~= nil then
      results[i] = { job_id = rec.job_id, ok = false, code = "duplicate" }
    else
      rec.updated_at = stamp(self)
      self.jobs[rec.job_id] = rec
      results[i] = { job_id = rec.job_id, ok = true }
    end
  end
  return results
end

-- get_jobs_batch(ids) -> { [id] = job } for the ids found.
function Store:get_jobs_batch(ids)
  check_call(self, "get_jobs_batch", ids)
  local out = {}
  for _, id in ipairs(ids) do out[id] = copy(self.jobs[id]) end
  return out
end

-- count_jobs(filters) -> integer, the number query_jobs would return.
function Store:count_jobs(filters)
  local match = check_call(self, "count_jobs", filters)
  local n = 0
  for _, rec in pairs(self.jobs) do
    if match(rec) then n = n + 1 end
  end
  return n
end

-- claim_due_jobs{now, limit, owner, lease_seconds} -> the jobs claimed.
-- Atomically moves up to `limit` due scheduled jobs to running, owned by
-- `owner` until now + lease_seconds. The checked options come with the C
-- stores' defaults (kit.lease_options: now = the clock, limit 100, lease
-- 30 s). kit.due_jobs picks the scheduled jobs whose next_run_time has come
-- (kit.is_due), highest priority first (missing = 5), then the earliest
-- (kit.sort_claim), at most `limit` of them.
function Store:claim_due_jobs(opts)
  local now, owner, lease_until, limit = check_call(self, "claim_due_jobs", opts)
  local updated_at, out = stamp(self), {}
  for i, rec in ipairs(kit.due_jobs(self.jobs, now, limit)) do
    rec.status, rec.claimed_by, rec.lease_until, rec.updated_at = "running", owner, lease_until, updated_at
    out[i] = copy(rec)
  end
  return out
end

-- complete_jobs{ {job_id=, owner=, delete=true} | {job_id=, owner=, updates=} ... }
-- -> one result per item, in order: {job_id=, ok=true} or {job_id=, ok=false,
-- code="not_found"|"conflict"}. Each item is a CAS on claimed_by == owner,
-- so an owner whose lease was recovered cannot overwrite the new owner.
-- Every item is checked before anything changes (kit.check_completions: a
-- malformed item fails the whole call); kit.completion_result decides one
-- item against the stored record, and an ok item is then applied here.
-- An item may carry the run it ends (item.run, checked by the kit): it is
-- written with the item when the item applies, deletion included, as
-- record_runs writes runs (below).
function Store:complete_jobs(list)
  local items = check_call(self, "complete_jobs", list)
  local results, updated_at = {}, stamp(self)
  local cutoff = kit.history_cutoff(self.history_days)
  for i, item in ipairs(items) do
    local rec = self.jobs[item.job_id]
    results[i] = kit.completion_result(item, rec)
    if results[i].ok and item.delete then
      self.jobs[item.job_id] = nil
    elseif results[i].ok then
      kit.apply(rec, item.updates)
      rec.updated_at = updated_at
    end
    if results[i].ok and item.run then self:add_run(item.run, item.keep, cutoff) end
  end
  return results
end

-- recover_expired_leases(now) -> integer: running jobs whose lease_until is
-- before now (kit.lease_expired) go back to scheduled, without owner or
-- lease, with the run that was cut short counted (kit.recovered). The
-- checked `now` is µs, read from any time form (the clock by default).
function Store:recover_expired_leases(now)
  now = check_call(self, "recover_expired_leases", now)
  local n, updated_at = 0, nil
  for _, rec in pairs(self.jobs) do
    if kit.lease_expired(rec, now) then
      updated_at = updated_at or stamp(self)
      for k, v in pairs(kit.recovered(rec)) do
        if v == chronis.json.null then rec[k] = nil else rec[k] = v end
      end
      rec.updated_at = updated_at
      n = n + 1
    end
  end
  return n
end

-- extend_leases{now, lease_seconds, owner, ids} -> integer: the engine's
-- heartbeat; moves lease_until to now + lease_seconds for each listed job
-- that is running and owned by `owner`.
function Store:extend_leases(opts)
  local _, owner, lease_until, ids = check_call(self, "extend_leases", opts)
  local n, updated_at = 0, nil
  for _, id in ipairs(ids) do
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
-- Times are compared as numbers (kit.time_of): canonical strings do not
-- sort in time order ("10:00:00.5Z" sorts before "10:00:00Z").
function Store:next_due_time()
  check_call(self, "next_due_time")
  local best
  for _, rec in pairs(self.jobs) do
    local t = kit.time_of(rec, "next_run_time")
    if rec.status == "scheduled" and t ~= nil and (best == nil or t < best) then best = t end
  end
  return best and format_time(best)
end

-- Run history: the runs of each job, newest first (self.runs, job_id ->
-- array of runs). Optional too, but nothing can stand in for it: a store
-- without record_runs and query_runs keeps no runs (the engine's runs are
-- dropped) and query_runs is 'unsupported'. History outlives its job:
-- delete_job leaves the job's runs.

-- Adds a checked run to its job's runs. kit.add_run keeps the newest
-- `keep` of them (the run's keep, from the job's history_limit, else the
-- store's option `history`) and none that started before cutoff (the
-- option `history_days`). Returns whether the run was written (keep 0: no).
function Store:add_run(run, keep, cutoff)
  keep = kit.run_keep(keep, self.history)
  if keep == 0 then return false end
  local list = kit.add_run(self.runs[run.job_id], run, keep, cutoff)
  self.runs[run.job_id] = #list > 0 and list or nil
  return true
end

-- record_runs(runs) -> integer: how many runs were written. Every run is
-- checked before any is written (kit.check_runs: run_id, job_id,
-- started_at and outcome required, times canonical, fields of their
-- types). The runs of jobs that stopped running age out here too
-- (kit.prune_runs looks at each job's oldest run).
function Store:record_runs(runs)
  local checked = check_call(self, "record_runs", runs)
  local n, cutoff = 0, kit.history_cutoff(self.history_days)
  for _, c in ipairs(checked) do
    if self:add_run(c.run, c.keep, cutoff) then n = n + 1 end
  end
  for id, list in pairs(self.runs) do
    list = kit.prune_runs(list, cutoff)
    self.runs[id] = #list > 0 and list or nil
  end
  return n
end

-- query_runs(filters, limit, offset) -> array of runs, newest first
-- (kit.sort_runs: started_at descending, then run_id descending). The
-- filters are checked and compiled by the kit (job_id, job_id_in,
-- outcome, started_at_gte/lte, func_name, metadata.<path>: an unknown key
-- is 'invalid'); with job ids, only their jobs' runs are looked at.
function Store:query_runs(filters, limit, offset)
  local match, ids = check_call(self, "query_runs", filters, limit, offset)
  local out = kit.page(kit.sort_runs(kit.select_runs(self.runs, match, ids)), limit, offset)
  for i, run in ipairs(out) do out[i] = copy(run) end
  return out
end

-- close(): idempotent; every later call raises.
function Store:close()
  self.closed = true
end

-- The constructor. This adapter's options are those of the run history,
-- `history` (runs kept per job, default 20) and `history_days` (default
-- 7), read by kit.history_options as every store reads them; refusing
-- unknown ones turns a typo into an error instead of a silently different
-- store. adapter_timeout belongs to the bridge (chronis.storage.lua), which
-- may pass it along. All state is in the returned table (the methods are
-- shared through the metatable), so that it survives a hot reload.
local OPTIONS = { history = true, history_days = true, adapter_timeout = true }

return function(opts)
  for k in pairs(opts or {}) do
    if not OPTIONS[k] then
      fail("invalid", "example_kv: unknown option '%s' (expected %s)", tostring(k), kit.HISTORY_OPTIONS)
    end
  end
  local keep, days = kit.history_options(opts, "example_kv options")
  return setmetatable({ jobs = {}, runs = {}, history = keep, history_days = days, last_stamp = 0,
    closed = false }, Store)
end
