-- file.lua - the JSON file store ("lua:adapters/file.lua?path=jobs.json",
-- or "file:jobs.json"): every job in one JSON object, job_id -> record,
-- read once at open and rewritten whole on every change. Reads are served
-- from an index in memory and never touch the file.
--
-- A write replaces the file atomically (chronis.fs.write_atomic: a temp
-- file in the same folder, fsync, rename, fsync of the folder), so a crash
-- at any moment leaves the old file or the new one, never a mix. Without
-- chronis.fs (a bare Lua host) the store falls back to a temp file and
-- os.rename: still atomic against a crash of this process, but without
-- fsync, so a power loss can lose the last writes or leave an empty file.
--
-- One process per file. There is no lock between processes: two schedulers
-- on one file would each trust their own index. A store notices when the
-- file changed behind its back (size or mtime differ from its last write)
-- and refuses to overwrite it; that catches the mistake, it does not make
-- sharing safe. Use SQLite, PostgreSQL or Redis to share jobs.
--
-- Every write costs a rewrite of the whole file: this store suits up to a
-- few thousand jobs.
local chronis = require "chronis"

local json = chronis.json
local null = json.null
local parse_time, format_time = chronis.time.parse, chronis.time.format

local ENOENT = 2

local function fail(code, fmt, ...)
  error(chronis.error(code, fmt:format(...)), 2)
end

local function message_of(err)
  return type(err) == "table" and err.message or tostring(err)
end

local STATUSES = { pending = true, scheduled = true, running = true, paused = true, failed = true }
local STATUS_LIST = "pending, scheduled, running, paused or failed"
local TRIGGER_TYPES = { interval = true, cron = true, date = true }
local TIME_FIELDS = { "next_run_time", "created_at", "updated_at", "last_run_time",
  "last_scheduled_time", "lease_until" }
local FILTER_KEYS = "status, trigger_type, next_run_time_lte/gte, updated_at_lte/gte, "
  .. "metadata.<key>, job_id_in"

-- µs for a time given as any ISO-8601 form or integer µs; naive times are
-- UTC at the store level (a job's timezone is data here).
local function to_us(value, what)
  if math.type(value) == "integer" then return value end
  if type(value) == "string" then
    local ok, us = pcall(parse_time, value)
    if ok then return us end
    fail("invalid", "%s: %s", what, message_of(us))
  end
  fail("invalid", "%s: expected an ISO-8601 time or integer microseconds, got %s", what, type(value))
end

-- Equality as in the file: 1 and "1" differ, tables compare by content.
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

local function shallow_copy(t)
  local out = {}
  for k, v in pairs(t) do out[k] = v end
  return out
end

-- Checks what the store relies on and rewrites times canonically, in t
-- (a table of the store's own). `partial`: updates and expectations, where
-- null means "absent".
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

-- A whole record (create_job, or a job read from the file), checked, with
-- nulls dropped and times canonical. Returns a new table.
local function check_record(job, where)
  if type(job.job_id) ~= "string" or job.job_id == "" then
    fail("invalid", "%s: field 'job_id' is required (a non-empty string)", where)
  end
  local rec = {}
  for k, v in pairs(job) do
    if v ~= null then rec[k] = v end
  end
  where = ("job '%s'"):format(rec.job_id)
  if rec.status == nil then fail("invalid", "%s: field 'status' is required", where) end
  check_fields(rec, where, false)
  return rec
end

local function check_updates(id, updates)
  if type(updates) ~= "table" then
    fail("invalid", "job '%s': updates must be a table, got %s", id, type(updates))
  end
  local u = shallow_copy(updates)
  local where = ("job '%s'"):format(id)
  if u.job_id ~= nil and u.job_id ~= id then fail("invalid", "%s: job_id cannot be changed", where) end
  if u.status == null then fail("invalid", "%s: status cannot be removed", where) end
  check_fields(u, where, true)
  return u
end

-- An index entry: the record's JSON text (the file's line for it, and the
-- source of every copy handed out), the decoded record (read by filters,
-- never handed out), and its times as numbers for ordering.
local function make_entry(rec)
  local ok, text = pcall(json.encode, rec)
  if not ok then fail("invalid", "job '%s': cannot be stored: %s", rec.job_id, message_of(text)) end
  local job = json.decode(text)
  return {
    job = job,
    text = text,
    line = json.encode(job.job_id) .. ":" .. text,
    nrt = job.next_run_time and parse_time(job.next_run_time),
    upd = job.updated_at and parse_time(job.updated_at),
    lease = job.lease_until and parse_time(job.lease_until),
  }
end

-- A new entry: entry's record with checked updates merged one level deep
-- (null removes a field) and a new updated_at.
local function updated(entry, u, updated_at)
  local rec = shallow_copy(entry.job)
  for k, v in pairs(u) do
    if v == null then rec[k] = nil else rec[k] = v end
  end
  rec.updated_at = updated_at
  return make_entry(rec)
end

local function matches(job, expected)
  for k, want in pairs(expected) do
    local have = job[k]
    if want == null then
      if have ~= nil then return false end
    elseif have == nil or not same(have, want) then
      return false
    end
  end
  return true
end

local function metadata_at(job, path)
  local v = job.metadata
  for part in path:gmatch("[^.]+") do
    if type(v) ~= "table" then return nil end
    v = v[part]
  end
  return v
end

-- filters -> predicate over entries, and the id list of job_id_in (which
-- is looked up instead of scanning). Unknown keys are errors.
local function compile_filters(filters)
  if filters == nil then return function() return true end end
  if type(filters) ~= "table" then fail("invalid", "filters must be a table, got %s", type(filters)) end
  local tests, ids = {}, nil
  for key, want in pairs(filters) do
    local field, op = nil, nil
    if type(key) == "string" then field, op = key:match("^(.+)_([lg]te)$") end
    if key == "status" then
      local set = {}
      for _, s in ipairs(type(want) == "table" and want or { want }) do
        if not STATUSES[s] then fail("invalid", "invalid filter 'status': expected %s", STATUS_LIST) end
        set[s] = true
      end
      tests[#tests + 1] = function(e) return set[e.job.status] == true end
    elseif key == "trigger_type" then
      if not TRIGGER_TYPES[want] then
        fail("invalid", "invalid filter 'trigger_type': expected interval, cron or date")
      end
      tests[#tests + 1] = function(e) return e.job.trigger_type == want end
    elseif field == "next_run_time" or field == "updated_at" then
      local bound = to_us(want, ("invalid filter '%s'"):format(key))
      local slot = field == "next_run_time" and "nrt" or "upd"
      tests[#tests + 1] = function(e)
        local t = e[slot]
        if t == nil then return false end
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
    elseif type(key) == "string" and key:match("^metadata%.[^.]") then
      local path = key:sub(#"metadata." + 1)
      tests[#tests + 1] = function(e) return same(metadata_at(e.job, path), want) end
    else
      fail("invalid", "invalid filter '%s': unknown key (expected %s)", tostring(key), FILTER_KEYS)
    end
  end
  return function(e)
    for _, test in ipairs(tests) do
      if not test(e) then return false end
    end
    return true
  end, ids
end

local function query_order(a, b)
  if a.nrt ~= b.nrt then
    if a.nrt == nil then return false end
    if b.nrt == nil then return true end
    return a.nrt < b.nrt
  end
  return a.job.job_id < b.job.job_id
end

local function claim_order(a, b)
  local pa, pb = a.job.priority or 5, b.job.priority or 5
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

-- ---- the file

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function dirname(path)
  local dir = path:match("^(.*)/[^/]*$")
  if dir == nil then return "." end
  return dir == "" and "/" or dir
end

local function mkdir_p(fs, dir)
  if dir == "." or dir == "/" then return end
  if fs and fs.mkdir_p then
    local ok, err = pcall(fs.mkdir_p, dir)
    if not ok then fail("unavailable", "file store: %s", message_of(err)) end
  elseif not os.execute("mkdir -p -- " .. shell_quote(dir)) then
    fail("unavailable", "file store: cannot create folder '%s'", dir)
  end
end

-- The file's bytes, or nil when it does not exist.
local function read_file(path)
  local f, err, errno = io.open(path, "rb")
  if f == nil then
    if errno == ENOENT then return nil end
    fail("unavailable", "cannot open store file '%s': %s", path, err)
  end
  local text, rerr = f:read("a")
  f:close()
  if text == nil then fail("unavailable", "cannot read store file '%s': %s", path, rerr) end
  return text
end

local Store = {}
Store.__index = Store

-- What the store last saw of its file (size, mtime), to notice writers
-- other than itself. nil without chronis.fs.stat.
local function file_signature(self)
  local fs = self.fs
  if not (fs and fs.stat) then return nil end
  local st = fs.stat(self.path)
  return st and { size = st.size, mtime = st.mtime } or false
end

local function check_unchanged(self)
  if self.signature == nil then return end
  local now = file_signature(self)
  local was = self.signature
  if not now or not was or now.size ~= was.size or now.mtime ~= was.mtime then
    fail("unavailable", "store file '%s' was changed or removed by someone else since this store "
      .. "last wrote it; the file store is single-process: stop the other writer and reopen the store",
      self.path)
  end
end

-- The file's text: one job per line, ordered by job_id, so that the file is
-- the same for the same jobs and diffs well.
local function render(self)
  local ids = self.sorted_ids
  if ids == nil then
    ids = {}
    for id in pairs(self.entries) do ids[#ids + 1] = id end
    table.sort(ids)
    self.sorted_ids = ids
  end
  if #ids == 0 then return "{}\n" end
  local lines = {}
  for i, id in ipairs(ids) do lines[i] = self.entries[id].line end
  return "{\n" .. table.concat(lines, ",\n") .. "\n}\n"
end

local function write_file(self, data)
  local fs, path = self.fs, self.path
  if fs and fs.write_atomic then
    local ok, err = pcall(fs.write_atomic, path, data)
    if not ok then fail("unavailable", "cannot write store file '%s': %s", path, message_of(err)) end
  else
    -- Atomic against a crash of this process (rename), not durable (no fsync).
    local tmp = path .. ".tmp"
    local f, err = io.open(tmp, "wb")
    if f == nil then fail("unavailable", "cannot write store file '%s': %s", path, err) end
    local wok, werr = f:write(data)
    local cok, cerr = f:close()
    local rok, rerr = nil, nil
    if wok and cok then rok, rerr = os.rename(tmp, path) end
    if not rok then
      os.remove(tmp)
      fail("unavailable", "cannot write store file '%s': %s", path, tostring(werr or cerr or rerr))
    end
  end
  self.signature = file_signature(self)
end

-- Makes `changes` (id -> new entry, or false to delete) the store's state,
-- in memory and in the file, in one write. When the write fails, memory is
-- put back as it was: the index never holds what the file does not.
local function commit(self, changes)
  if next(changes) == nil then return end
  check_unchanged(self)
  local before, reshaped = {}, false
  for id, entry in pairs(changes) do
    local old = self.entries[id]
    before[id] = old or false
    if (old == nil) ~= (entry == false) then reshaped = true end
    self.entries[id] = entry or nil
  end
  if reshaped then self.sorted_ids = nil end
  local ok, err = pcall(function() write_file(self, render(self)) end)
  if not ok then
    for id, old in pairs(before) do self.entries[id] = old or nil end
    if reshaped then self.sorted_ids = nil end
    error(err, 0)
  end
end

-- The entry of id as `changes` leaves it (changes not yet committed).
local function current(self, changes, id)
  local c = changes[id]
  if c ~= nil then return c or nil end
  return self.entries[id]
end

local function load(self, text)
  local function bad(fmt, ...)
    fail("invalid", "invalid store file '%s': " .. fmt, self.path, ...)
  end
  if not text:find("%S") then bad("the file is empty (an empty store is the JSON object {})") end
  if not text:find("^%s*{") then
    bad("expected a JSON object of jobs by job_id, got text starting with %q",
      text:match("^%s*(.?.?.?.?.?.?.?.?)"))
  end
  local ok, data = pcall(json.decode, text)
  if not ok then bad("%s", message_of(data)) end
  for id, job in pairs(data) do
    if type(job) ~= "table" then bad("job '%s' is not a JSON object", tostring(id)) end
    -- A hand-written record may leave job_id to its key.
    if job.job_id == nil then job.job_id = id end
    if job.job_id ~= id then
      bad("the job under key '%s' has job_id '%s'", tostring(id), tostring(job.job_id))
    end
    local rok, rec = pcall(check_record, job, "job '" .. tostring(id) .. "'")
    if not rok then bad("%s", message_of(rec)) end
    local entry = make_entry(rec)
    self.entries[id] = entry
    if entry.upd and entry.upd > self.last_stamp then self.last_stamp = entry.upd end
  end
end

-- Temp files of writes cut short by a crash (chronis.fs.write_atomic names
-- them <file>.tmp.<pid>; the fallback <file>.tmp). At open no write of this
-- file is in flight (one process per file), so every one of them is stale.
local function remove_stale_temps(self)
  local fs = self.fs
  if not (fs and fs.list) then return end
  local dir = dirname(self.path)
  local base = self.path:match("[^/]*$")
  local ok, list = pcall(fs.list, dir)
  if not ok then return end
  local prefix = base .. ".tmp"
  for _, e in ipairs(list) do
    local rest = e.name:sub(#prefix + 1)
    if e.type == "file" and e.name:sub(1, #prefix) == prefix and (rest == "" or rest:match("^%.%d+$")) then
      os.remove(dir .. "/" .. e.name)
    end
  end
end

local function check_open(self)
  if self.closed then error("attempt to use a closed store", 3) end
end

local function stamp(self)
  local now = chronis.time.now()
  if now <= self.last_stamp then now = self.last_stamp + 1 end
  self.last_stamp = now
  return format_time(now)
end

-- ---- operations (DESIGN.md §4). None yields, so calls never interleave
-- in this process: CAS and claim are atomic.

function Store:create_job(job)
  check_open(self)
  if type(job) ~= "table" then fail("invalid", "create_job: a job must be a table, got %s", type(job)) end
  local rec = check_record(job, "create_job")
  if self.entries[rec.job_id] ~= nil then fail("duplicate", "job '%s' already exists", rec.job_id) end
  rec.updated_at = stamp(self)
  local entry = make_entry(rec)
  commit(self, { [rec.job_id] = entry })
  return json.decode(entry.text)
end

function Store:get_job(id)
  check_open(self)
  check_id(id, "get_job")
  local e = self.entries[id]
  return e and json.decode(e.text)
end

function Store:get_jobs_batch(ids)
  check_open(self)
  if type(ids) ~= "table" then fail("invalid", "get_jobs_batch: expected an array of ids") end
  local out = {}
  for _, id in ipairs(ids) do
    check_id(id, "get_jobs_batch")
    local e = self.entries[id]
    if e then out[id] = json.decode(e.text) end
  end
  return out
end

function Store:update_job(id, updates)
  check_open(self)
  check_id(id, "update_job")
  local u = check_updates(id, updates)
  local e = self.entries[id]
  if e == nil then fail("not_found", "job '%s' not found", id) end
  local entry = updated(e, u, stamp(self))
  commit(self, { [id] = entry })
  return json.decode(entry.text)
end

function Store:compare_and_swap_job(id, expected, updates)
  check_open(self)
  check_id(id, "compare_and_swap_job")
  if type(expected) ~= "table" then
    fail("invalid", "job '%s': expected must be a table, got %s", id, type(expected))
  end
  local want = shallow_copy(expected)
  check_fields(want, ("job '%s': expected"):format(id), true)
  local u = check_updates(id, updates)
  local e = self.entries[id]
  if e == nil then fail("not_found", "job '%s' not found", id) end
  if not matches(e.job, want) then return false, nil end
  local entry = updated(e, u, stamp(self))
  commit(self, { [id] = entry })
  return true, json.decode(entry.text)
end

function Store:delete_job(id)
  check_open(self)
  check_id(id, "delete_job")
  if self.entries[id] == nil then return false end
  commit(self, { [id] = false })
  return true
end

-- The entries that match filters, in query order.
local function select_entries(self, filters)
  local match, ids = compile_filters(filters)
  local found = {}
  if ids then
    for _, id in ipairs(ids) do
      local e = self.entries[id]
      if e and match(e) then found[#found + 1] = e end
    end
  else
    for _, e in pairs(self.entries) do
      if match(e) then found[#found + 1] = e end
    end
  end
  return found
end

function Store:query_jobs(filters, limit, offset)
  check_open(self)
  check_count(limit, "limit")
  check_count(offset, "offset")
  local found = select_entries(self, filters)
  table.sort(found, query_order)
  local out = {}
  local first = (offset or 0) + 1
  local last = limit and math.min(#found, first + limit - 1) or #found
  for i = first, last do out[#out + 1] = json.decode(found[i].text) end
  return out
end

function Store:count_jobs(filters)
  check_open(self)
  return #select_entries(self, filters)
end

function Store:claim_due_jobs(opts)
  check_open(self)
  local now, owner, lease_until, limit = lease_opts(opts, "claim_due_jobs")
  local due = {}
  for _, e in pairs(self.entries) do
    if e.job.status == "scheduled" and e.nrt ~= nil and e.nrt <= now then due[#due + 1] = e end
  end
  table.sort(due, claim_order)
  local changes, claimed = {}, {}
  local updated_at = #due > 0 and limit > 0 and stamp(self)
  for i = 1, math.min(limit, #due) do
    local entry = updated(due[i], { status = "running", claimed_by = owner, lease_until = lease_until },
      updated_at)
    changes[entry.job.job_id] = entry
    claimed[i] = entry
  end
  commit(self, changes)
  for i, entry in ipairs(claimed) do claimed[i] = json.decode(entry.text) end
  return claimed
end

function Store:complete_jobs(list)
  check_open(self)
  if type(list) ~= "table" then fail("invalid", "complete_jobs: expected an array of completions") end
  local items = {}
  for i, item in ipairs(list) do
    if type(item) ~= "table" or type(item.job_id) ~= "string" or type(item.owner) ~= "string" then
      fail("invalid", "complete_jobs: item %d needs job_id and owner (strings)", i)
    end
    items[i] = { job_id = item.job_id, owner = item.owner, delete = item.delete and true or false,
      updates = not item.delete and check_updates(item.job_id, item.updates or {}) or nil }
  end
  local changes, results = {}, {}
  local updated_at = #items > 0 and stamp(self)
  for i, item in ipairs(items) do
    local id = item.job_id
    local e = current(self, changes, id)
    if e == nil then
      results[i] = { job_id = id, ok = false, code = "not_found" }
    elseif e.job.claimed_by ~= item.owner then
      results[i] = { job_id = id, ok = false, code = "conflict" }
    else
      changes[id] = not item.delete and updated(e, item.updates, updated_at)
      results[i] = { job_id = id, ok = true }
    end
  end
  commit(self, changes)
  return results
end

function Store:recover_expired_leases(now)
  check_open(self)
  now = now == nil and chronis.time.now() or to_us(now, "recover_expired_leases: invalid 'now'")
  local changes, n, updated_at = {}, 0, nil
  for id, e in pairs(self.entries) do
    if e.job.status == "running" and e.lease ~= nil and e.lease < now then
      updated_at = updated_at or stamp(self)
      changes[id] = updated(e, { status = "scheduled", claimed_by = null, lease_until = null }, updated_at)
      n = n + 1
    end
  end
  commit(self, changes)
  return n
end

function Store:extend_leases(opts)
  check_open(self)
  local _, owner, lease_until = lease_opts(opts, "extend_leases")
  if type(opts.ids) ~= "table" then fail("invalid", "extend_leases: 'ids' must be an array of ids") end
  local changes, n, updated_at = {}, 0, nil
  for _, id in ipairs(opts.ids) do
    local e = current(self, changes, id)
    if e ~= nil and e.job.status == "running" and e.job.claimed_by == owner and not changes[id] then
      updated_at = updated_at or stamp(self)
      changes[id] = updated(e, { lease_until = lease_until }, updated_at)
      n = n + 1
    end
  end
  commit(self, changes)
  return n
end

function Store:next_due_time()
  check_open(self)
  local best
  for _, e in pairs(self.entries) do
    if e.job.status == "scheduled" and e.nrt ~= nil and (best == nil or e.nrt < best) then best = e.nrt end
  end
  return best and format_time(best)
end

function Store:close()
  self.closed = true
  self.entries, self.sorted_ids = {}, nil
end

-- adapter_timeout belongs to the bridge (chronis.storage.lua), which may
-- pass it along with the adapter's own options.
local OPTIONS = { path = true, auto_create = true, adapter_timeout = true }

local function bool_opt(v, default, name)
  if v == nil then return default end
  if type(v) == "boolean" then return v end
  if v == "true" or v == "1" or v == "yes" or v == "on" then return true end
  if v == "false" or v == "0" or v == "no" or v == "off" then return false end
  fail("invalid", "file store: option '%s' must be true or false, got %s", name, tostring(v))
end

-- opts: path (required; relative to the working folder), auto_create
-- (default true: create the file and its folders when absent). Option
-- values may be strings, as they come from a URL query.
return function(opts)
  opts = opts or {}
  if type(opts) ~= "table" then fail("invalid", "file store: options must be a table") end
  for k in pairs(opts) do
    if not OPTIONS[k] then
      fail("invalid", "file store: unknown option '%s' (expected path, auto_create)", tostring(k))
    end
  end
  local path = opts.path
  if type(path) ~= "string" or path == "" then fail("invalid", "file store: option 'path' is required") end
  local auto_create = bool_opt(opts.auto_create, true, "auto_create")
  local self = setmetatable({
    path = path,
    fs = chronis.fs, -- taken once: a store writes one way for its whole life
    entries = {},     -- job_id -> entry (make_entry)
    sorted_ids = nil, -- cache for render(), dropped when ids come or go
    last_stamp = 0,
    signature = nil,
    closed = false,
  }, Store)
  local text = read_file(path)
  if text == nil then
    if not auto_create then
      fail("not_found", "store file '%s' does not exist (auto_create is off)", path)
    end
    mkdir_p(self.fs, dirname(path))
    write_file(self, render(self))
  else
    load(self, text)
    self.signature = file_signature(self)
  end
  remove_stale_temps(self)
  return self
end
