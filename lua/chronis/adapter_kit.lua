-- chronis.adapter_kit: the mechanical parts of a storage adapter written in
-- Lua (docs/adapters.md), so that each adapter holds only what is its own:
-- where records live and how every operation reads and writes them.
--
-- The kit works on records: plain job tables as a store keeps them, with
-- times in canonical form. Its functions raise the structured errors of
-- docs/adapters.md, never yield, and keep no state of their own (stamp keeps
-- its clock in the store table), so an adapter that is hot-reloaded loses
-- nothing.
local core = require "chronis.core"

-- The C stores' own checks, for the same rule and errors on every store.
local store_checks = core.storage

local null = core.json.null
local parse_time, format_time = core.time.parse, core.time.format

local M = {}

--- fail(code, fmt, ...): raises chronis.error(code, message), a table with
--- `code` and `message` whose tostring is "code: message".
local function fail(code, fmt, ...)
  error(core.error(code, fmt:format(...)), 2)
end
M.fail = fail

--- message_of(err): the message of a structured error, or the error as a
--- string.
local function message_of(err)
  return type(err) == "table" and err.message or tostring(err)
end
M.message_of = message_of

M.STATUSES = { pending = true, scheduled = true, running = true, paused = true, failed = true }
local STATUSES = M.STATUSES
local STATUS_LIST = "pending, scheduled, running, paused or failed"
local TRIGGER_TYPES = { interval = true, cron = true, date = true }

--- The fields that hold instants. Other fields are data, never rewritten,
--- even when they look like times (next_run_time_local).
M.TIME_FIELDS = { "next_run_time", "created_at", "updated_at", "last_run_time",
  "last_scheduled_time", "lease_until" }
local TIME_FIELDS = M.TIME_FIELDS

--- to_us(value, what): µs since the epoch for any ISO-8601 form or integer
--- µs; otherwise an `invalid` error naming `what`. A naive time is UTC: at
--- the store level a job's timezone is just data.
local function to_us(value, what)
  if math.type(value) == "integer" then return value end
  if type(value) == "string" then
    local ok, us = pcall(parse_time, value)
    if ok then return us end
    fail("invalid", "%s: %s", what, message_of(us))
  end
  fail("invalid", "%s: expected an ISO-8601 time or integer microseconds, got %s", what, type(value))
end
M.to_us = to_us

--- time_of(rec, field): a stored (canonical) time as µs, or nil. Compare
--- and order times as numbers: canonical strings do not sort in time order
--- ("10:00:00.5Z" sorts before "10:00:00Z").
local function time_of(rec, field)
  local v = rec[field]
  return v ~= nil and parse_time(v) or nil
end
M.time_of = time_of

--- copy(v): a deep copy. Nothing is shared between a caller and a store.
local function copy(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = copy(x) end
  return out
end
M.copy = copy

--- same(a, b): equality as JSON sees it: 1 and "1" differ; tables are
--- equal when they have the same keys with equal values.
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
M.same = same

--- check_fields(t, where, partial): checks, in t (a table of the store's
--- own), the few fields a store relies on, and rewrites its times
--- canonically: times parse, status is one of the five, priority is an
--- integer. `partial` is for updates and CAS expectations, where
--- chronis.json.null stands for "absent". Errors start with `where`.
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
M.check_fields = check_fields

--- check_values(t, where): the rule for every value a job holds, the same
--- on every store (the C stores check it too): numbers finite, strings and
--- keys valid UTF-8 without NUL bytes. Raises `invalid` naming the field
--- ("<where>: invalid field 'kwargs.amount': ..."). check_record,
--- check_updates and check_expected apply it.
local function check_values(t, where)
  store_checks.check_job(t, where)
end
M.check_values = check_values

--- check_record(job, where): the record to store for a whole job (create_job,
--- or a job read back from a backend): a copy, with null fields dropped
--- (null in a whole record means absent), job_id and status required, the
--- rest checked by check_fields. `where` opens the errors about the job as
--- a whole ("create_job").
function M.check_record(job, where)
  if type(job) ~= "table" then fail("invalid", "%s: a job must be a table, got %s", where, type(job)) end
  check_values(job, where)
  if type(job.job_id) ~= "string" or job.job_id == "" then
    fail("invalid", "%s: field 'job_id' is required (a non-empty string)", where)
  end
  local rec = {}
  for k, v in pairs(job) do
    if v ~= null then rec[k] = copy(v) end
  end
  where = ("job '%s'"):format(rec.job_id)
  if rec.status == nil then fail("invalid", "%s: field 'status' is required", where) end
  check_fields(rec, where, false)
  return rec
end

-- A copy of a table argument of a call on job `id`, or `invalid`.
local function table_arg(id, t, what)
  if type(t) ~= "table" then fail("invalid", "job '%s': %s must be a table, got %s", id, what, type(t)) end
  check_values(t, ("job '%s': %s"):format(id, what))
  return copy(t)
end

--- check_updates(id, updates): a checked copy of the updates for job `id`
--- (update, CAS, completions): job_id cannot change, status cannot be
--- removed.
function M.check_updates(id, updates)
  local u = table_arg(id, updates, "updates")
  local where = ("job '%s'"):format(id)
  if u.job_id ~= nil and u.job_id ~= id then fail("invalid", "%s: job_id cannot be changed", where) end
  if u.status == null then fail("invalid", "%s: status cannot be removed", where) end
  check_fields(u, where, true)
  return u
end

--- check_expected(id, expected): a checked copy of a CAS expectation, times
--- canonical, so that matches() compares instants.
function M.check_expected(id, expected)
  local want = table_arg(id, expected, "expected")
  check_fields(want, ("job '%s': expected"):format(id), true)
  return want
end

--- apply(rec, u): merges checked updates into rec, in place, one level
--- deep (a table-valued field is replaced as a whole); null removes the
--- field. Returns rec.
function M.apply(rec, u)
  for k, v in pairs(u) do
    if v == null then rec[k] = nil else rec[k] = v end
  end
  return rec
end

--- matches(rec, expected): the CAS test: every expected field equals the
--- record's (by same); an expected null means "absent"; an absent field
--- never equals an expected value. Both sides must have canonical times.
function M.matches(rec, expected)
  for k, want in pairs(expected) do
    local have = rec[k]
    if want == null then
      if have ~= nil then return false end
    elseif have == nil or not same(have, want) then
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

--- compile_filters(filters): checks every key, then returns match(rec),
--- true when rec passes all filters (AND), and the ids of job_id_in, without
--- repeats (nil when absent), for a store that can look ids up rather than
--- scan. An unknown key is `invalid`, never ignored: a typo would otherwise
--- widen the query silently.
function M.compile_filters(filters)
  if filters == nil then return function() return true end end
  if type(filters) ~= "table" then fail("invalid", "filters must be a table, got %s", type(filters)) end
  store_checks.check_filters(filters)
  local tests, ids = {}, nil
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
      ids = {}
      for _, id in ipairs(want) do
        if type(id) ~= "string" then fail("invalid", "invalid filter 'job_id_in': ids must be strings") end
        if not set[id] then ids[#ids + 1] = id end
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
  end, ids
end

local function query_before(a, b)
  if a.t ~= b.t then
    if a.t == nil then return false end
    if b.t == nil then return true end
    return a.t < b.t
  end
  return a.id < b.id
end

local function claim_before(a, b)
  if a.p ~= b.p then return a.p > b.p end
  return query_before(a, b)
end

-- Sorts list in place by keys computed once per element (rather than once
-- per comparison). Elements must be distinct tables.
local function sort_by(list, rec_of, before)
  local keys = {}
  for _, x in ipairs(list) do
    local rec = rec_of and rec_of(x) or x
    keys[x] = { t = time_of(rec, "next_run_time"), id = rec.job_id, p = rec.priority or 5 }
  end
  table.sort(list, function(a, b) return before(keys[a], keys[b]) end)
  return list
end

--- sort_query(list [, rec_of]): sorts in place in query order:
--- next_run_time ascending as an instant, jobs without one last, then
--- job_id. rec_of(x) gives the record of an element when the list holds
--- something else (a store's index entries). Returns list.
function M.sort_query(list, rec_of)
  return sort_by(list, rec_of, query_before)
end

--- sort_claim(list [, rec_of]): sorts in place in claim order: highest
--- priority first (missing = 5), then query order. Returns list.
function M.sort_claim(list, rec_of)
  return sort_by(list, rec_of, claim_before)
end

--- page(list, limit, offset): a new array of list's elements after
--- skipping `offset` (default 0), at most `limit` of them (default all).
function M.page(list, limit, offset)
  local out = {}
  offset = offset or 0
  if offset >= #list then return out end
  -- Compared before adding: a limit of math.maxinteger must not wrap.
  local last = (limit == nil or limit >= #list - offset) and #list or offset + limit
  for i = offset + 1, last do out[#out + 1] = list[i] end
  return out
end

--- check_count(v, what): nil or a non-negative integer (limit, offset),
--- else `invalid` naming `what`.
local function check_count(v, what)
  if v ~= nil and (math.type(v) ~= "integer" or v < 0) then
    fail("invalid", "%s must be a non-negative integer", what)
  end
end
M.check_count = check_count

--- check_id(id, what [, field]): a job id (or another string a call
--- names, such as an owner: `field`) must be a string, valid UTF-8 without
--- NUL bytes; `what` names the method.
function M.check_id(id, what, field)
  if type(id) ~= "string" then
    fail("invalid", "%s: %s must be a string, got %s", what, field or "job id", type(id))
  end
  store_checks.check_id(id, what, field)
end
local check_id = M.check_id

--- lease_options(opts, what): the options of claim_due_jobs and
--- extend_leases, checked, with the C stores' defaults. Returns now (µs;
--- default the clock), owner, lease_until (canonical: now + lease_seconds,
--- default 30) and limit (default 100).
function M.lease_options(opts, what)
  if type(opts) ~= "table" then fail("invalid", "%s: options must be a table", what) end
  if type(opts.owner) ~= "string" then fail("invalid", "%s: 'owner' must be a string", what) end
  check_id(opts.owner, what, "owner")
  local now = opts.now == nil and core.time.now() or to_us(opts.now, what .. ": invalid 'now'")
  local lease = opts.lease_seconds or 30
  if type(lease) ~= "number" or lease < 0 then
    fail("invalid", "%s: 'lease_seconds' must be a non-negative number", what)
  end
  check_count(opts.limit, what .. ": 'limit'")
  return now, opts.owner, format_time(now + math.floor(lease * 1000000)), opts.limit or 100
end

--- is_due(rec, now): rec is scheduled with next_run_time <= now (µs): a job
--- claim_due_jobs takes.
function M.is_due(rec, now)
  local t = time_of(rec, "next_run_time")
  return rec.status == "scheduled" and t ~= nil and t <= now
end

--- lease_expired(rec, now): rec is running with lease_until before now
--- (µs): a job recover_expired_leases puts back.
function M.lease_expired(rec, now)
  local lease = time_of(rec, "lease_until")
  return rec.status == "running" and lease ~= nil and lease < now
end

--- recovered(rec): the updates lease recovery applies to an expired job:
--- back to scheduled without owner or lease, and the run that was cut
--- short counted (retry_count and attempt + 1), so that a job whose runs
--- keep killing their process stops being retried (docs/engine.md).
function M.recovered(rec)
  return {
    status = "scheduled", claimed_by = null, lease_until = null,
    retry_count = (math.tointeger(rec.retry_count) or 0) + 1,
    attempt = (math.tointeger(rec.attempt) or 0) + 1,
  }
end

--- check_completions(list): the items of complete_jobs, all checked before
--- anything changes: { job_id =, owner =, delete = boolean, updates = the
--- checked updates, or nil for a deletion }.
function M.check_completions(list)
  if type(list) ~= "table" then fail("invalid", "complete_jobs: expected an array of completions") end
  local items = {}
  for i, item in ipairs(list) do
    if type(item) ~= "table" or type(item.job_id) ~= "string" or type(item.owner) ~= "string" then
      fail("invalid", "complete_jobs: item %d needs job_id and owner (strings)", i)
    end
    check_id(item.job_id, ("complete_jobs: item %d"):format(i))
    check_id(item.owner, ("complete_jobs: item %d"):format(i), "owner")
    items[i] = { job_id = item.job_id, owner = item.owner, delete = item.delete and true or false,
      updates = not item.delete and M.check_updates(item.job_id, item.updates or {}) or nil }
  end
  return items
end

--- completion_result(item, rec): the result of one completion item given
--- the stored record (nil when absent): not_found, conflict when the job is
--- not claimed by the item's owner (its lease was recovered and it may have
--- another owner now), else ok, and the caller applies the item.
function M.completion_result(item, rec)
  if rec == nil then return { job_id = item.job_id, ok = false, code = "not_found" } end
  if rec.claimed_by ~= item.owner then return { job_id = item.job_id, ok = false, code = "conflict" } end
  return { job_id = item.job_id, ok = true }
end

--- check_open(store): a closed store (store.closed) raises `unavailable`,
--- as a C store does, at the caller of the method that called check_open.
function M.check_open(store)
  if store.closed then error(core.error("unavailable", "the store is closed"), 3) end
end

--- stamp(store): the updated_at of a write, canonical: the clock, but
--- strictly increasing in the store (kept in store.last_stamp, µs, which
--- starts at 0), so that two writes in one microsecond never carry the
--- same updated_at: a CAS on updated_at would take the second for
--- "unchanged".
function M.stamp(store)
  local now = core.time.now()
  if now <= store.last_stamp then now = store.last_stamp + 1 end
  store.last_stamp = now
  return format_time(now)
end

return M
