-- chronis.adapter_kit: the mechanical parts of a storage adapter written in
-- Lua (docs/adapters.md), so that each adapter holds only what is its own:
-- where records live and how every operation reads and writes them.
--
-- The rules of the contract (what create_job stores, which updates may be
-- applied), the filters, the query and claim orders, the compare-and-swap
-- test and the completion results are the C stores' own, called through
-- chronis.core.storage: one definition of each for every store. So are the
-- checks of run records, the run filters and the run order of the run
-- history. The kit adds what is Lua's: copies, canonical times, paging,
-- options, pruning a job's runs.
--
-- The kit works on records: plain job tables as a store keeps them, with
-- times in canonical form. Its functions raise the structured errors of
-- docs/adapters.md, never yield, and keep no state of their own (stamp keeps
-- its clock in the store table), so an adapter that is hot-reloaded loses
-- nothing.
local core = require "chronis.core"

-- The contract as the C stores apply it (runtime/lua/store.c).
local contract = core.storage

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

--- check_options(opts, known, who): raises `invalid` naming every key of
--- opts that the array `known` lacks, all at once, each with the closest
--- known name when one is close: "file store: unknown option 'pth'; did
--- you mean 'path'?". The bridge's own option adapter_timeout is always
--- accepted.
function M.check_options(opts, known, who)
  local set, unknown = { adapter_timeout = true }, {}
  for _, k in ipairs(known) do set[k] = true end
  for k in pairs(opts) do
    if not set[k] then unknown[#unknown + 1] = tostring(k) end
  end
  if #unknown > 0 then
    error(core.error("invalid", who .. ": " .. core.unknown_keys("option", unknown, known)), 2)
  end
end

M.STATUSES = { pending = true, scheduled = true, running = true, paused = true, failed = true,
  completed = true }
local STATUSES = M.STATUSES
local STATUS_LIST = "pending, scheduled, running, paused, failed or completed"

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
--- canonically: times parse, status is one of the six, priority is an
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
  contract.check_job(t, where)
end
M.check_values = check_values

--- check_record(job, where): the record to store for a whole job (create_job,
--- or a job read back from a backend): a copy, with null fields dropped
--- (null in a whole record means absent) and times canonical. The job
--- passes create_job's checks on every store: the rule of check_values,
--- fields of their types, job_id (a non-empty string) and status required.
--- `where` opens the errors about the job as a whole ("create_job").
function M.check_record(job, where)
  if type(job) ~= "table" then fail("invalid", "%s: a job must be a table, got %s", where, type(job)) end
  contract.check_record(job, where)
  local rec = {}
  for k, v in pairs(job) do
    if v ~= null then rec[k] = copy(v) end
  end
  check_fields(rec, ("job '%s'"):format(rec.job_id), false)
  return rec
end

-- A table argument of a call on job `id`, or `invalid`.
local function table_arg(id, t, what)
  if type(t) ~= "table" then fail("invalid", "job '%s': %s must be a table, got %s", id, what, type(t)) end
  return t
end

-- The checked copy of updates, by the rules of `op` (nil: every update;
-- "update_job": update_job's own as well).
local function checked_updates(id, updates, op)
  -- Checked before the copy: a table nested too deep, or a cycle, is
  -- refused by name there, not copied until the Lua stack overflows.
  contract.check_updates(id, table_arg(id, updates, "updates"), op)
  local u = copy(updates)
  check_fields(u, ("job '%s'"):format(id), true)
  return u
end

--- check_updates(id, updates): a checked copy of the updates for job `id`
--- (CAS, completions), times canonical: they pass the checks of every
--- update on every store (job_id cannot change, status cannot be removed,
--- fields of their types, the rule of check_values).
function M.check_updates(id, updates)
  return checked_updates(id, updates)
end

--- check_update_job(id, updates): check_updates for update_job itself,
--- which on every store also refuses what only claims, completions and
--- recovery write (compare_and_swap_job may): a change of claimed_by,
--- lease_until or attempt, status running, and status scheduled with
--- next_run_time null.
function M.check_update_job(id, updates)
  return checked_updates(id, updates, "update_job")
end

--- check_expected(id, expected): a checked copy of a CAS expectation, times
--- canonical.
function M.check_expected(id, expected)
  check_values(table_arg(id, expected, "expected"), ("job '%s': expected"):format(id))
  local want = copy(expected)
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

--- matches(rec, expected): the CAS test, the C stores' own
--- (chr_job_matches): every expected field equals the record's, times as
--- instants, other values by content (1 and "1" differ); an expected null
--- means "absent"; an absent field never equals an expected value.
function M.matches(rec, expected)
  return contract.matches(rec, expected)
end

--- compile_filters(filters): checks every key, as query_jobs does on every
--- store, then returns match(rec), true when rec passes all filters (AND),
--- and the ids of job_id_in, without repeats (nil when absent), for a store
--- that can look ids up rather than scan. An unknown key is `invalid`,
--- never ignored: a typo would otherwise widen the query silently. The
--- matching is the C stores' own (chr_filter_match).
function M.compile_filters(filters)
  if filters == nil then return function() return true end end
  local f = contract.filter(filters)
  return function(rec) return f:match(rec) end, f:ids()
end

--- sort_query(list [, rec_of]): sorts in place in query order:
--- next_run_time ascending as an instant, jobs without one last, then
--- job_id. rec_of(x) gives the record of an element when the list holds
--- something else (a store's index entries). Returns list.
function M.sort_query(list, rec_of)
  return contract.sort(list, "query", rec_of)
end

--- sort_claim(list [, rec_of]): sorts in place in claim order: highest
--- priority first (missing = 5), then query order. Returns list.
function M.sort_claim(list, rec_of)
  return contract.sort(list, "claim", rec_of)
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
  contract.check_id(id, what, field)
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
  -- The C stores' bound (a year); NaN fails every comparison.
  if type(lease) ~= "number" or not (lease >= 0 and lease <= 31536000) then
    fail("invalid", "%s: 'lease_seconds' must be a number of seconds from 0 to 31536000", what)
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

--- due_jobs(t, now, limit [, rec_of]): what claim_due_jobs takes of the
--- values of table t (records, or elements whose record rec_of gives): the
--- due ones (is_due), in claim order (sort_claim), at most limit. A new
--- array.
function M.due_jobs(t, now, limit, rec_of)
  local due = {}
  for _, x in pairs(t) do
    if M.is_due(rec_of and rec_of(x) or x, now) then due[#due + 1] = x end
  end
  return M.page(M.sort_claim(due, rec_of), limit)
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
--- checked updates, or nil for a deletion, run = the run the completion
--- ends as check_run returns it, or nil, keep = the run's keep or nil }.
--- A store that keeps history writes `run` with the item when the item
--- applies (add_run), in the same write as the completion if it can.
function M.check_completions(list)
  if type(list) ~= "table" then fail("invalid", "complete_jobs: expected an array of completions") end
  local items = {}
  for i, item in ipairs(list) do
    if type(item) ~= "table" or type(item.job_id) ~= "string" or type(item.owner) ~= "string" then
      fail("invalid", "complete_jobs: item %d needs job_id and owner (strings)", i)
    end
    local where = ("complete_jobs: item %d"):format(i)
    check_id(item.job_id, where)
    check_id(item.owner, where, "owner")
    local run, keep
    if item.run ~= nil then run, keep = contract.check_run(item.run, where) end
    items[i] = { job_id = item.job_id, owner = item.owner, delete = item.delete and true or false,
      updates = not item.delete and M.check_updates(item.job_id, item.updates or {}) or nil,
      run = run, keep = keep }
  end
  return items
end

--- completion_result(item, rec): the result of one completion item given
--- the stored record (nil when absent), as every store decides it: not_found,
--- conflict when the job is not claimed by the item's owner (its lease was
--- recovered and it may have another owner now), else ok, and the caller
--- applies the item.
function M.completion_result(item, rec)
  return contract.completion_result(item, rec)
end

-- ---- run history (docs/adapters.md, "Run history") ----
--
-- A run is a table (run_id, job_id, started_at, outcome, ... as
-- docs/adapters.md lists them). A store keeps, per job, its newest runs up
-- to the run's keep count (the job's history_limit, else the store's
-- option `history`), and drops runs that started more than `history_days`
-- ago as it writes.

--- HISTORY_OPTIONS: the names of the history options, for the message
--- that lists a store's options ("history, history_days").
M.HISTORY_OPTIONS = contract.history_option_names

--- history_options(opts, what): the store options `history` (runs kept
--- per job, default 20, 0 keeps none) and `history_days` (default 7) in
--- the options table, integers or strings (from a URL), as every store
--- reads them. Returns keep, days; an `invalid` error naming the option
--- otherwise ("invalid <what>: option 'history' must be ...").
function M.history_options(opts, what)
  return contract.history_options(opts, what)
end

--- check_run(run, where): the run as a store keeps it, and its keep (nil
--- for the store's default): a new table with the fields of a run only
--- (not keep), times canonical, duration derived; run_id, job_id,
--- started_at and a known outcome required. Raises `invalid` naming the
--- field, after `where`.
function M.check_run(run, where)
  return contract.check_run(run, where)
end

--- check_runs(list): the runs of record_runs, all checked before anything
--- is written (check_run): an array of { run =, keep = }.
function M.check_runs(list)
  if type(list) ~= "table" then fail("invalid", "record_runs: expected an array of runs") end
  local out = {}
  for i, r in ipairs(list) do
    local run, keep = contract.check_run(r, ("record_runs: run %d"):format(i))
    out[i] = { run = run, keep = keep }
  end
  return out
end

--- run_keep(keep, store_keep): how many runs of its job a run keeps: its
--- own keep, else the store's. 0 means the run is not written.
function M.run_keep(keep, store_keep)
  if keep ~= nil then return keep end
  return store_keep
end

--- compile_run_filters(filters): checks the filters of query_runs (a
--- table, or a job id), as every store does, then returns match(run), the
--- job ids of job_id / job_id_in without repeats (nil when absent; an
--- empty array matches nothing), and what a backend may narrow its reads
--- by: { started_at_gte =, started_at_lte = (µs), outcomes = {...},
--- func_name = }. The matching is the C stores' own
--- (chr_run_filter_match); match stays the reference after narrowing.
function M.compile_run_filters(filters)
  if filters == nil then return function() return true end, nil, {} end
  local f = contract.run_filter(filters)
  return function(run) return f:match(run) end, f:ids(), f:narrow()
end

--- sort_runs(list [, rec_of]): sorts in place in the order of query_runs:
--- newest first (started_at descending, as an instant), then run_id
--- descending. rec_of(x) gives the run of an element when the list holds
--- something else. Returns list.
function M.sort_runs(list, rec_of)
  return contract.sort_runs(list, rec_of)
end

--- history_cutoff(days [, now]): the instant (µs) before which runs are
--- pruned: now (default the clock) less `days` days.
function M.history_cutoff(days, now)
  return (now or core.time.now()) - days * 86400 * 1000000
end

local function started_us(x, rec_of)
  return parse_time((rec_of and rec_of(x) or x).started_at)
end

--- add_run(list, x, keep, cutoff [, rec_of]): a job's runs with one more:
--- a new array of the runs of `list` (newest first, as add_run leaves
--- them; nil for none) and x, which replaces a run with its run_id, in the
--- order of sort_runs, at most `keep` of them, without those that started
--- before `cutoff` (µs). `list` is left as it was, so that a store can
--- keep it until its write has succeeded. keep >= 1 (a run whose keep is
--- 0 is not written).
function M.add_run(list, x, keep, cutoff, rec_of)
  local id = (rec_of and rec_of(x) or x).run_id
  local out = {}
  for _, y in ipairs(list or {}) do
    if (rec_of and rec_of(y) or y).run_id ~= id then out[#out + 1] = y end
  end
  out[#out + 1] = x
  contract.sort_runs(out, rec_of)
  local n = math.min(#out, keep)
  while n > 0 and started_us(out[n], rec_of) < cutoff do n = n - 1 end
  for i = #out, n + 1, -1 do out[i] = nil end
  return out
end

--- prune_runs(list, cutoff [, rec_of]): a job's runs (newest first)
--- without those that started before `cutoff` (µs): `list` itself when
--- none did (a look at its last run), else a new, shorter array.
function M.prune_runs(list, cutoff, rec_of)
  local n = #list
  while n > 0 and started_us(list[n], rec_of) < cutoff do n = n - 1 end
  if n == #list then return list end
  return table.move(list, 1, n, 1, {})
end

--- select_runs(by_job, match, ids [, rec_of]): the elements of the lists
--- of by_job (job_id -> a job's runs) that match, from the lists of `ids`
--- only when ids is given (compile_run_filters), in no particular order: a
--- new array, for sort_runs and page.
function M.select_runs(by_job, match, ids, rec_of)
  local found = {}
  local function scan(list)
    for _, x in ipairs(list) do
      if match(rec_of and rec_of(x) or x) then found[#found + 1] = x end
    end
  end
  if ids then
    for _, id in ipairs(ids) do scan(by_job[id] or {}) end
  else
    for _, list in pairs(by_job) do scan(list) end
  end
  return found
end

--- check_open(store): a closed store (store.closed) raises `unavailable`,
--- as a C store does, at the caller of the method that called check_open.
function M.check_open(store)
  if store.closed then error(core.error("unavailable", "the store is closed"), 3) end
end

-- The checks of each method's arguments (check_call), by method name.
local CALLS = {
  create_job = function(job) return M.check_record(job, "create_job") end,
  create_jobs = function(list)
    if type(list) ~= "table" then fail("invalid", "create_jobs: expected an array of jobs") end
    local records = {}
    for i, job in ipairs(list) do records[i] = M.check_record(job, ("create_jobs: item %d"):format(i)) end
    return records
  end,
  get_job = function(id)
    check_id(id, "get_job")
    return id
  end,
  get_jobs_batch = function(ids)
    if type(ids) ~= "table" then fail("invalid", "get_jobs_batch: expected an array of ids") end
    for _, id in ipairs(ids) do check_id(id, "get_jobs_batch") end
    return ids
  end,
  update_job = function(id, updates)
    check_id(id, "update_job")
    return id, M.check_update_job(id, updates)
  end,
  compare_and_swap_job = function(id, expected, updates)
    check_id(id, "compare_and_swap_job")
    return id, M.check_expected(id, expected), M.check_updates(id, updates)
  end,
  delete_job = function(id)
    check_id(id, "delete_job")
    return id
  end,
  query_jobs = function(filters, limit, offset)
    check_count(limit, "limit")
    check_count(offset, "offset")
    local match, ids = M.compile_filters(filters)
    return match, ids, limit, offset
  end,
  count_jobs = function(filters) return M.compile_filters(filters) end,
  claim_due_jobs = function(opts) return M.lease_options(opts, "claim_due_jobs") end,
  complete_jobs = function(list) return M.check_completions(list) end,
  recover_expired_leases = function(now)
    if now == nil then return core.time.now() end
    return to_us(now, "recover_expired_leases: invalid 'now'")
  end,
  extend_leases = function(opts)
    local now, owner, lease_until = M.lease_options(opts, "extend_leases")
    if type(opts.ids) ~= "table" then fail("invalid", "extend_leases: 'ids' must be an array of ids") end
    return now, owner, lease_until, opts.ids
  end,
  next_due_time = function() end,
  record_runs = function(list) return M.check_runs(list) end,
  query_runs = function(filters, limit, offset)
    check_count(limit, "limit")
    check_count(offset, "offset")
    local match, ids, narrow = M.compile_run_filters(filters)
    return match, ids, limit, offset, narrow
  end,
}

--- check_call(store, method, ...): what opens every method of a store: a
--- closed store raises (as check_open), then the arguments of `method` are
--- checked, all before anything changes, and returned ready to use:
---   create_job(job)                  -> the record (check_record)
---   create_jobs(list)                -> the records (check_record each)
---   get_job(id), delete_job(id)      -> id
---   get_jobs_batch(ids)              -> ids
---   update_job(id, updates)          -> id, updates (check_update_job)
---   compare_and_swap_job(id, e, u)   -> id, expected, updates
---   query_jobs(filters, limit, off)  -> match, ids (compile_filters), limit, offset
---   count_jobs(filters)              -> match, ids
---   claim_due_jobs(opts)             -> now, owner, lease_until, limit (lease_options)
---   complete_jobs(list)              -> items (check_completions)
---   recover_expired_leases(now)      -> now (µs, default the clock)
---   extend_leases(opts)              -> now, owner, lease_until, ids
---   next_due_time()                  -> nothing
---   record_runs(runs)                -> runs (check_runs)
---   query_runs(filters, limit, off)  -> match, ids, limit, offset, narrow (compile_run_filters)
function M.check_call(store, method, ...)
  if store.closed then error(core.error("unavailable", "the store is closed"), 3) end
  local check = CALLS[method]
  if check == nil then error(("check_call: no operation '%s'"):format(tostring(method)), 2) end
  return check(...)
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
