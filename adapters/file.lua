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
--
-- Run history lives in the same file, under the key "" (no job can have an
-- empty id): an array of runs, grouped by job, newest first. A completion
-- and the run it ends are written by one rewrite, so a crash leaves both
-- or neither. Each job keeps its newest `history` runs (the option, or its
-- history_limit), and runs older than `history_days` are dropped at every
-- write that records runs.
local chronis = require "chronis"

local kit = require "chronis.adapter_kit"

local json = chronis.json
local null = json.null
local fail, message_of = kit.fail, kit.message_of

local ENOENT = 2

local function shallow_copy(t)
  local out = {}
  for k, v in pairs(t) do out[k] = v end
  return out
end

-- An index entry: the record's JSON text (the file's line for it, and the
-- source of every copy handed out) and the decoded record (read by filters
-- and orderings, never handed out).
local function make_entry(rec)
  local ok, text = pcall(json.encode, rec)
  if not ok then fail("invalid", "job '%s': cannot be stored: %s", rec.job_id, message_of(text)) end
  local job = json.decode(text)
  return { job = job, text = text, line = json.encode(job.job_id) .. ":" .. text }
end

-- A new entry: entry's record with checked updates merged (kit.apply: one
-- level deep, null removes a field) and a new updated_at. The old entry is
-- left as it is, so that a failed write can put it back.
local function updated(entry, u, updated_at)
  local rec = kit.apply(shallow_copy(entry.job), u)
  rec.updated_at = updated_at
  return make_entry(rec)
end

local function entry_job(e) return e.job end

-- A run's entry: the run as the kit checked it (read by filters and
-- orders, never handed out) and its JSON text (the file's line for it, and
-- the source of every copy handed out).
local function make_run_entry(run)
  return { run = run, text = json.encode(run) }
end

local function entry_run(e) return e.run end

local NO_CHANGES = {}

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

local function sorted_keys(t)
  local ids = {}
  for id in pairs(t) do ids[#ids + 1] = id end
  table.sort(ids)
  return ids
end

-- The lines of a job's runs, joined; kept per list (a list is never
-- changed, add_run makes a new one), so a write renders only the runs
-- that changed.
local function runs_text(self, list)
  local text = self.runs_texts[list]
  if text == nil then
    local lines = {}
    for i, e in ipairs(list) do lines[i] = e.text end
    text = table.concat(lines, ",\n")
    self.runs_texts[list] = text
  end
  return text
end

-- The file's text: one job per line, ordered by job_id, so that the file is
-- the same for the same jobs and diffs well; then, under "", the runs, one
-- per line, by job_id and newest first.
local function render(self)
  local ids = self.sorted_ids
  if ids == nil then
    ids = sorted_keys(self.entries)
    self.sorted_ids = ids
  end
  local run_ids = self.sorted_run_ids
  if run_ids == nil then
    run_ids = sorted_keys(self.runs)
    self.sorted_run_ids = run_ids
  end
  if #ids == 0 and #run_ids == 0 then return "{}\n" end
  local lines = {}
  for i, id in ipairs(ids) do lines[i] = self.entries[id].line end
  if #run_ids > 0 then
    local chunks = {}
    for i, id in ipairs(run_ids) do chunks[i] = runs_text(self, self.runs[id]) end
    lines[#lines + 1] = '"":[\n' .. table.concat(chunks, ",\n") .. "\n]"
  end
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

-- Sets t[id] = v (false: removes it); returns the old value (false for
-- none) and whether an id came or went.
local function swap(t, id, v)
  local old = t[id]
  t[id] = v or nil
  return old or false, (old == nil) ~= (v == false)
end

-- Makes `changes` (id -> new entry, or false to delete) and `run_changes`
-- (job id -> the job's new list of runs, or false for none) the store's
-- state, in memory and in the file, in one write. When the write fails,
-- memory is put back as it was: the index never holds what the file does
-- not.
local function commit(self, changes, run_changes)
  run_changes = run_changes or NO_CHANGES
  if next(changes) == nil and next(run_changes) == nil then return end
  check_unchanged(self)
  local before, runs_before, reshaped, runs_reshaped = {}, {}, false, false
  for id, entry in pairs(changes) do
    local old, moved = swap(self.entries, id, entry)
    before[id] = old
    reshaped = reshaped or moved
  end
  for id, list in pairs(run_changes) do
    local old, moved = swap(self.runs, id, list)
    runs_before[id] = old
    runs_reshaped = runs_reshaped or moved
  end
  if reshaped then self.sorted_ids = nil end
  if runs_reshaped then self.sorted_run_ids = nil end
  local ok, err = pcall(function() write_file(self, render(self)) end)
  if not ok then
    for id, old in pairs(before) do self.entries[id] = old or nil end
    for id, old in pairs(runs_before) do self.runs[id] = old or nil end
    if reshaped then self.sorted_ids = nil end
    if runs_reshaped then self.sorted_run_ids = nil end
    error(err, 0)
  end
end

-- The entry of id as `changes` leaves it (changes not yet committed).
local function current(self, changes, id)
  local c = changes[id]
  if c ~= nil then return c or nil end
  return self.entries[id]
end

-- A job's runs as `run_changes` leaves them, or nil.
local function current_runs(self, run_changes, id)
  local c = run_changes[id]
  if c ~= nil then return c or nil end
  return self.runs[id]
end

-- Adds a checked run to run_changes (kit.add_run: the job's newest `keep`
-- runs, none older than cutoff). Returns whether it was written: a keep
-- of 0 (the run's, else the store's) writes none.
local function add_run(self, run_changes, run, keep, cutoff)
  keep = kit.run_keep(keep, self.history)
  if keep == 0 then return false end
  local id = run.job_id
  local list = kit.add_run(current_runs(self, run_changes, id), make_run_entry(run), keep, cutoff,
    entry_run)
  run_changes[id] = #list > 0 and list
  return true
end

-- Drops, into run_changes, the runs of every job that started before
-- cutoff (a look at each job's oldest run): the runs of jobs that stopped
-- running age out too.
local function prune_runs(self, run_changes, cutoff)
  for id in pairs(self.runs) do
    local list = current_runs(self, run_changes, id)
    local kept = list and kit.prune_runs(list, cutoff, entry_run)
    if kept ~= list then run_changes[id] = #kept > 0 and kept end
  end
end

-- The runs under "" (an array of runs), checked as record_runs checks
-- them, grouped by job, newest first, without those past the age limit.
-- Counts per job are left as they are: a job's history_limit is not known
-- here.
local function load_runs(self, runs, bad)
  if type(runs) ~= "table" or (next(runs) ~= nil and runs[1] == nil) then
    bad('the runs under the key "" must be an array')
  end
  local cutoff = kit.history_cutoff(self.history_days)
  for i, r in ipairs(runs) do
    local rok, run = pcall(kit.check_run, r, ("run %d"):format(i))
    if not rok then bad("%s", message_of(run)) end
    local list = self.runs[run.job_id] or {}
    list[#list + 1] = make_run_entry(run)
    self.runs[run.job_id] = list
  end
  for id, list in pairs(self.runs) do
    list = kit.prune_runs(kit.sort_runs(list, entry_run), cutoff, entry_run)
    self.runs[id] = #list > 0 and list or nil
  end
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
  local runs = data[""]
  data[""] = nil
  if runs ~= nil then load_runs(self, runs, bad) end
  for id, job in pairs(data) do
    if type(job) ~= "table" then bad("job '%s' is not a JSON object", tostring(id)) end
    -- A hand-written record may leave job_id to its key.
    if job.job_id == nil then job.job_id = id end
    if job.job_id ~= id then
      bad("the job under key '%s' has job_id '%s'", tostring(id), tostring(job.job_id))
    end
    local rok, rec = pcall(kit.check_record, job, "job '" .. tostring(id) .. "'")
    if not rok then bad("%s", message_of(rec)) end
    self.entries[id] = make_entry(rec)
    local upd = kit.time_of(rec, "updated_at")
    if upd and upd > self.last_stamp then self.last_stamp = upd end
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

local check_call, stamp = kit.check_call, kit.stamp

-- ---- operations (docs/adapters.md). None yields, so calls never interleave
-- in this process: CAS and claim are atomic. Checks, comparisons, filters
-- and orderings are the kit's (chronis.adapter_kit); an operation builds
-- new entries and commits them in one write.

function Store:create_job(job)
  local rec = check_call(self, "create_job", job)
  if self.entries[rec.job_id] ~= nil then fail("duplicate", "job '%s' already exists", rec.job_id) end
  rec.updated_at = stamp(self)
  local entry = make_entry(rec)
  commit(self, { [rec.job_id] = entry })
  return json.decode(entry.text)
end

-- One write of the file for the whole list.
function Store:create_jobs(list)
  local records = check_call(self, "create_jobs", list)
  local changes, results = {}, {}
  local updated_at = #records > 0 and stamp(self)
  for i, rec in ipairs(records) do
    if self.entries[rec.job_id] ~= nil or changes[rec.job_id] ~= nil then
      results[i] = { job_id = rec.job_id, ok = false, code = "duplicate" }
    else
      rec.updated_at = updated_at
      changes[rec.job_id] = make_entry(rec)
      results[i] = { job_id = rec.job_id, ok = true }
    end
  end
  if next(changes) then commit(self, changes) end
  return results
end

function Store:get_job(id)
  check_call(self, "get_job", id)
  local e = self.entries[id]
  return e and json.decode(e.text)
end

function Store:get_jobs_batch(ids)
  check_call(self, "get_jobs_batch", ids)
  local out = {}
  for _, id in ipairs(ids) do
    local e = self.entries[id]
    if e then out[id] = json.decode(e.text) end
  end
  return out
end

function Store:update_job(id, updates)
  local _, u = check_call(self, "update_job", id, updates)
  local e = self.entries[id]
  if e == nil then fail("not_found", "job '%s' not found", id) end
  local entry = updated(e, u, stamp(self))
  commit(self, { [id] = entry })
  return json.decode(entry.text)
end

function Store:compare_and_swap_job(id, expected, updates)
  local _, want, u = check_call(self, "compare_and_swap_job", id, expected, updates)
  local e = self.entries[id]
  if e == nil then fail("not_found", "job '%s' not found", id) end
  if not kit.matches(e.job, want) then return false, nil end
  local entry = updated(e, u, stamp(self))
  commit(self, { [id] = entry })
  return true, json.decode(entry.text)
end

function Store:delete_job(id)
  check_call(self, "delete_job", id)
  if self.entries[id] == nil then return false end
  commit(self, { [id] = false })
  return true
end

-- The entries that match compiled filters (match, and the ids of
-- job_id_in). job_id_in is looked up in the index instead of scanning it.
local function select_entries(self, match, ids)
  local found = {}
  if ids then
    for _, id in ipairs(ids) do
      local e = self.entries[id]
      if e and match(e.job) then found[#found + 1] = e end
    end
  else
    for _, e in pairs(self.entries) do
      if match(e.job) then found[#found + 1] = e end
    end
  end
  return found
end

function Store:query_jobs(filters, limit, offset)
  local match, ids = check_call(self, "query_jobs", filters, limit, offset)
  local found = kit.sort_query(select_entries(self, match, ids), entry_job)
  local out = kit.page(found, limit, offset)
  for i, e in ipairs(out) do out[i] = json.decode(e.text) end
  return out
end

function Store:count_jobs(filters)
  return #select_entries(self, check_call(self, "count_jobs", filters))
end

-- Gives every entry of `list` the same updates and one updated_at, in one
-- write. Returns the new entries.
local function update_all(self, list, u)
  local changes, out = {}, {}
  local updated_at = #list > 0 and stamp(self)
  for i, e in ipairs(list) do
    out[i] = updated(e, u, updated_at)
    changes[e.job.job_id] = out[i]
  end
  commit(self, changes)
  return out
end

function Store:claim_due_jobs(opts)
  local now, owner, lease_until, limit = check_call(self, "claim_due_jobs", opts)
  local claimed = update_all(self, kit.due_jobs(self.entries, now, limit, entry_job),
    { status = "running", claimed_by = owner, lease_until = lease_until })
  for i, entry in ipairs(claimed) do claimed[i] = json.decode(entry.text) end
  return claimed
end

-- Items are decided against the changes of the items before them, so that
-- a job completed twice in one call is found deleted the second time. The
-- run of an item that applies is written in the same rewrite of the file.
function Store:complete_jobs(list)
  local items = check_call(self, "complete_jobs", list)
  local changes, run_changes, results = {}, {}, {}
  local updated_at = #items > 0 and stamp(self)
  local cutoff, runs = kit.history_cutoff(self.history_days), false
  for i, item in ipairs(items) do
    local e = current(self, changes, item.job_id)
    results[i] = kit.completion_result(item, e and e.job)
    if results[i].ok then
      changes[item.job_id] = not item.delete and updated(e, item.updates, updated_at)
      if item.run and add_run(self, run_changes, item.run, item.keep, cutoff) then runs = true end
    end
  end
  if runs then prune_runs(self, run_changes, cutoff) end
  commit(self, changes, run_changes)
  return results
end

function Store:recover_expired_leases(now)
  now = check_call(self, "recover_expired_leases", now)
  local changes, n, updated_at = {}, 0, nil
  for id, e in pairs(self.entries) do
    if kit.lease_expired(e.job, now) then
      updated_at = updated_at or stamp(self)
      changes[id] = updated(e, kit.recovered(e.job), updated_at)
      n = n + 1
    end
  end
  if n > 0 then commit(self, changes) end
  return n
end

function Store:extend_leases(opts)
  local _, owner, lease_until, ids = check_call(self, "extend_leases", opts)
  local owned, seen = {}, {}
  for _, id in ipairs(ids) do
    local e = self.entries[id]
    if e ~= nil and not seen[e] and e.job.status == "running" and e.job.claimed_by == owner then
      seen[e] = true
      owned[#owned + 1] = e
    end
  end
  return #update_all(self, owned, { lease_until = lease_until })
end

function Store:next_due_time()
  check_call(self, "next_due_time")
  local best
  for _, e in pairs(self.entries) do
    local t = kit.time_of(e.job, "next_run_time")
    if e.job.status == "scheduled" and t ~= nil and (best == nil or t < best) then best = t end
  end
  return best and chronis.time.format(best)
end

-- Every run is checked before any is written (kit.check_runs); all are
-- written in one rewrite of the file.
function Store:record_runs(runs)
  local checked = check_call(self, "record_runs", runs)
  local run_changes, n = {}, 0
  local cutoff = kit.history_cutoff(self.history_days)
  for _, c in ipairs(checked) do
    if add_run(self, run_changes, c.run, c.keep, cutoff) then n = n + 1 end
  end
  prune_runs(self, run_changes, cutoff)
  commit(self, NO_CHANGES, run_changes)
  return n
end

-- With job ids, only their jobs' runs are looked at.
function Store:query_runs(filters, limit, offset)
  local match, ids = check_call(self, "query_runs", filters, limit, offset)
  local found = kit.sort_runs(kit.select_runs(self.runs, match, ids, entry_run), entry_run)
  local out = kit.page(found, limit, offset)
  for i, e in ipairs(out) do out[i] = json.decode(e.text) end
  return out
end

function Store:close()
  self.closed = true
  self.entries, self.sorted_ids = {}, nil
  self.runs, self.sorted_run_ids = {}, nil
end

-- adapter_timeout belongs to the bridge (chronis.storage.lua), which may
-- pass it along with the adapter's own options.
local OPTIONS = { "path", "auto_create", "history", "history_days" } -- and the bridge's adapter_timeout

local function bool_opt(v, default, name)
  if v == nil then return default end
  if type(v) == "boolean" then return v end
  if v == "true" or v == "1" or v == "yes" or v == "on" then return true end
  if v == "false" or v == "0" or v == "no" or v == "off" then return false end
  fail("invalid", "file store: option '%s' must be true or false, got %s", name, tostring(v))
end

-- opts: path (required; relative to the working folder), auto_create
-- (default true: create the file and its folders when absent), history
-- (runs kept per job, default 20, 0 = none) and history_days (default 7).
-- Option values may be strings, as they come from a URL query.
return function(opts)
  opts = opts or {}
  if type(opts) ~= "table" then fail("invalid", "file store: options must be a table") end
  kit.check_options(opts, OPTIONS, "file store")
  local path = opts.path
  if type(path) ~= "string" or path == "" then fail("invalid", "file store: option 'path' is required") end
  local auto_create = bool_opt(opts.auto_create, true, "auto_create")
  local keep, days = kit.history_options(opts, "file store options")
  local self = setmetatable({
    path = path,
    fs = chronis.fs, -- taken once: a store writes one way for its whole life
    entries = {},     -- job_id -> entry (make_entry)
    sorted_ids = nil, -- cache for render(), dropped when ids come or go
    runs = {},            -- job_id -> the job's runs, newest first (make_run_entry)
    sorted_run_ids = nil, -- cache for render(), dropped when jobs' runs come or go
    runs_texts = setmetatable({}, { __mode = "k" }), -- a list of runs -> its lines
    history = keep, history_days = days,
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
