-- chronis: the public Lua API. The C module (chronis.core) does the work;
-- this file adds the scheduler's fluent builder and the job management
-- functions, which are a few store calls each.
local core = require "chronis.core"

local M = {
  _VERSION = "chronis 0.1.0",
  time = core.time,
  tz = core.tz,
  cron = core.cron,
  json = core.json,
  http = core.http,
  crypto = core.crypto,
  storage = core.storage,
  lock = core.lock,
  fs = core.fs,
  spawn = core.spawn,
  sleep = core.sleep,
  run_until = core.run_until,
}

local engine = core.engine
local unique = require "chronis.unique"

--- chronis.storage.lua(table_or_path, opts): a store implemented in Lua
--- (see docs/adapters.md). A path is loaded as a script and hot-reloaded.
function M.storage.lua(adapter, opts)
  opts = opts or {}
  if type(adapter) == "string" then
    return require("chronis.scripts").open_adapter(adapter, opts)
  end
  return (core.lua_store.from_table(adapter, {
    name = opts.name or "lua", timeout = opts.adapter_timeout or 30,
  }))
end

--- chronis.lock.lua(table, opts): a lock implemented in Lua, with
--- acquire(key, ttl, {owner, blocking, timeout}), release(key, owner),
--- extend(key, ttl, owner) and reset(key), each returning a boolean.
function M.lock.lua(adapter, opts)
  opts = opts or {}
  return core.lua_lock.from_table(adapter, { name = opts.name or "lua", timeout = opts.adapter_timeout or 30 })
end

--- chronis.load_handlers(dir [, watch]): registers dir/**/*.lua as
--- process-wide handlers and reloads them when they change.
function M.load_handlers(dir, watch)
  return require("chronis.scripts").load_handlers(dir, watch)
end

--- Lua memory cap in bytes (default 1 GiB): an allocation past it fails
--- with a "memory" error in the code that asked for it.
M.set_memory_limit = core.set_memory_limit
M.memory_used = core.memory_used

-- Process-wide handlers (handler scripts register here); a handler given
-- with sched:handler() takes precedence for that scheduler.
M.handlers = engine.global_handlers()

function M.log(level, msg, fields)
  engine.log(level, msg, fields)
end

function M.set_log(opts)
  engine.set_log(opts)
end

-- Structured errors: tables with code and message, tostring "code: message".
local function fail(code, fmt, ...)
  error(core.error(code, fmt:format(...)), 2)
end
M.error = core.error

--- chronis.progress(value [, message]): from a handler, records where its
--- run is (a number or a string, and a short message) in the job's
--- `progress` field, for `chronis jobs show` and anyone reading the job.
--- One store write per call. Returns false when the job is no longer this
--- run's (its lease was lost); raises outside a handler.
function M.progress(value, message)
  local vt = type(value)
  if vt ~= "number" and vt ~= "string" then
    fail("invalid", "progress: value must be a number or a string, got %s", vt)
  end
  if message ~= nil and type(message) ~= "string" then
    fail("invalid", "progress: message must be a string, got %s", type(message))
  end
  local run = engine.current_run()
  if not run then
    fail("invalid_state", "progress: called outside a running handler (a task it spawned "
      .. "cannot report for it)")
  end
  local ok = run.store:compare_and_swap_job(run.job_id, { claimed_by = run.node }, {
    progress = { value = value, message = message, at = core.time.format(core.time.now()) },
  })
  return ok
end

--- chronis.snooze(seconds | time), chronis.cancel([reason]) and
--- chronis.fail(message [, {retry = false}]): from a handler, end its run
--- at once as asked (docs/handlers.md, "Ending a run early"). They do not
--- return, and a pcall around them cannot catch them.
M.snooze, M.cancel, M.fail = engine.snooze, engine.cancel, engine.fail

-- Stops every running scheduler and then the loop (SIGINT/SIGTERM path).
function M.stop()
  engine.stop_all()
  core.stop_loop()
end

local Scheduler = {}
Scheduler.__index = Scheduler

-- Set by the host executable: { storage = url, app = path }.
local host = package.loaded["chronis.host"]
-- Every scheduler not yet closed, by weak keys: a stopped scheduler that
-- nothing else references is freed, with its engine and, unless shared,
-- its store (a process that restarts schedulers must not keep the old
-- ones). A started one is also held in `started` until it is seen stopped:
-- an app's main chunk may drop its own once it has started the scheduler,
-- and the host must still stop it gracefully on SIGTERM.
local live = setmetatable({}, { __mode = "k" })
local started = {}
local seq = 0 -- creation order, for chronis.schedulers()

-- Lets go of the started schedulers that have stopped since (by a signal,
-- chronis.stop(), or a stop() from one of their handlers).
local function release_stopped()
  for s in pairs(started) do
    if s._e:state() == "stopped" then started[s] = nil end
  end
end

--- Stops every scheduler of the process gracefully, waiting for those
--- already stopping (the host calls this after SIGINT/SIGTERM). Returns
--- their summaries.
function M.shutdown()
  local summaries = {}
  for s in pairs(live) do
    if s:state() ~= "stopped" then summaries[#summaries + 1] = s:stop() end
  end
  return summaries
end

--- chronis.run(): drives the loop until chronis.stop(), SIGINT or SIGTERM,
--- or until nothing is left to do. After a signal it returns once every
--- scheduler has stopped gracefully (a second signal ends their grace
--- periods at once). When a handler called os.exit(code), the schedulers
--- are stopped gracefully and, outside the host, the process exits with
--- code.
function M.run()
  core.catch_signals(true)
  local ok, err = pcall(core.run)
  if ok and core.interrupted() then ok, err = pcall(M.shutdown) end
  core.catch_signals(false)
  if not ok then error(err, 0) end
  local code = core.exit_code()
  if code and not host then
    M.shutdown()
    M.close_all()
    core.real_exit(code, true)
  end
end

--- Closes every scheduler of the process and the host's default store, so
--- stores flush and close (SQLite checkpoints its WAL) before exit.
function M.close_all()
  local http = package.loaded["chronis.http_server"]
  if http then http.close_all() end
  for s in pairs(live) do s:close() end
  if host and host.store then host.store:close() end
end

local function copy(t)
  local c = {}
  for k, v in pairs(t or {}) do c[k] = v end
  return c
end

-- Runs the callbacks of a run's final outcome: the job's own first, then
-- the scheduler's. A failing callback is logged with the job id and stops
-- nothing. Called by the engine in a task of its own (callbacks may wait).
-- It holds the callbacks, not the scheduler: the engine keeps it in the
-- Lua registry, and a reference to the scheduler from there would keep
-- the scheduler from ever being freed.
local function finisher(callbacks, on_success, on_failure, log)
  return function(ok, job_id, err, job)
    local own = callbacks[job_id]
    local key = ok and "on_success" or "on_failure"
    local mine
    if ok then mine = on_success else mine = on_failure end
    local cbs = { own and own[key] or false, mine or false }
    for i = 1, 2 do
      local cb = cbs[i]
      if cb then
        local pass, e
        if ok then pass, e = pcall(cb, job_id, job) else pass, e = pcall(cb, job_id, err, job) end
        if not pass then
          local shown, text = pcall(tostring, e)
          log("error", "callback failed: " .. (shown and type(text) == "string" and text
            or "(an error value that cannot be shown)"), { job_id = job_id })
        end
      end
    end
  end
end

-- Per-job callbacks live in the process that created the job.
local function set_callbacks(self, job_id, on_success, on_failure)
  if on_success or on_failure then
    self._callbacks[job_id] = { on_success = on_success, on_failure = on_failure }
  else
    self._callbacks[job_id] = nil
  end
  self._e:want_finish(self._on_success ~= nil or self._on_failure ~= nil
    or next(self._callbacks) ~= nil)
end

--- chronis.scheduler{storage, lock, polling_interval, max_workers,
--- max_queue_size, lease_seconds, clock, on_success, on_failure, logger,
--- shutdown_grace, node_id, default_timeout, strict_handlers,
--- keep_completed, filters, undeclared, app, max_catch_up, misfire_threshold,
--- queues}
function M.scheduler(opts)
  local o = copy(opts)
  for _, k in ipairs({ "on_success", "on_failure" }) do
    if o[k] ~= nil and type(o[k]) ~= "function" then
      fail("invalid", "invalid option '%s': expected a function, got %s", k, type(o[k]))
    end
  end
  if o.strict_handlers ~= nil and type(o.strict_handlers) ~= "boolean" then
    fail("invalid", "invalid option 'strict_handlers': expected a boolean, got %s", type(o.strict_handlers))
  end
  local undeclared = o.undeclared
  if undeclared ~= nil and undeclared ~= "keep" and undeclared ~= "report" and undeclared ~= "remove" then
    fail("invalid", "invalid option 'undeclared': expected keep, report or remove, got %s",
      type(undeclared) == "string" and "'" .. undeclared .. "'" or type(undeclared))
  end
  if o.app ~= nil and (type(o.app) ~= "string" or #o.app == 0 or #o.app > 64) then
    fail("invalid", "invalid option 'app': expected a name of 1 to 64 bytes, got %s",
      type(o.app) == "string" and #o.app .. " bytes" or type(o.app))
  end
  local on_success, on_failure, strict, app = o.on_success, o.on_failure, o.strict_handlers, o.app
  o.on_success, o.on_failure, o.strict_handlers, o.undeclared, o.app = nil, nil, nil, nil, nil
  if o.storage == nil and host and host.storage then
    -- Under the host every scheduler without a store shares one default.
    if not host.store then
      local ok, store = pcall(M.storage.open, host.storage)
      if not ok then
        -- Said to come from the command line, not from the app's line.
        error(core.error(type(store) == "table" and store.code or "invalid",
          "the default storage (--storage or CHRONIS_STORAGE): "
          .. (type(store) == "table" and tostring(store.message) or tostring(store))), 2)
      end
      host.store = store
    end
    o.storage = host.store
  elseif o.storage == nil then
    o.storage = M.storage.memory()
  elseif type(o.storage) == "string" or type(o.storage) == "table" then
    -- A URL, or options with their scheme: { scheme = "sqlite", path = ... }
    o.storage = M.storage.open(o.storage)
  end
  if type(o.lock) == "string" or type(o.lock) == "table" then
    o.lock = M.lock.open(o.lock)
  end
  local s = setmetatable({ _store = o.storage, _callbacks = {}, _on_success = on_success,
    _on_failure = on_failure, _strict = strict, _log = o.logger or M.log,
    -- Declared schedules: what start() does with the jobs this app no
    -- longer declares, and the mark its declarations carry (`declared`).
    _undeclared = undeclared or "report", _app = app, _mark = app or true,
    _misfire_threshold = o.misfire_threshold }, Scheduler)
  o.on_finish = finisher(s._callbacks, on_success, on_failure, o.logger or M.log)
  s._e = engine.new(o)
  if type(o.filters) == "table" and next(o.filters) ~= nil then
    s._filters = o.filters -- its scope, for counts of its own jobs (chronis.metrics)
    -- The scope as a matcher, to warn of a job this scheduler never runs
    -- (a store's own filter keys cannot be judged here: no warning then).
    local ok, scope = pcall(core.storage.filter, o.filters)
    if ok then s._scope = scope end
  end
  s._e:want_finish(on_success ~= nil or on_failure ~= nil)
  release_stopped()
  seq = seq + 1
  s._seq = seq
  live[s] = true
  return s
end

--- chronis.schedulers() -> the schedulers of the process not yet closed,
--- in the order they were created.
function M.schedulers()
  local list = {}
  for s in pairs(live) do list[#list + 1] = s end
  table.sort(list, function(a, b) return a._seq < b._seq end)
  return list
end

--- chronis.http_server{listen = "127.0.0.1:8080", ...}: the HTTP API,
--- metrics, health checks and dashboard on this process's loop
--- (docs/http.md).
function M.http_server(opts)
  return require("chronis.http_server").start(opts)
end

function Scheduler:handler(name, fn)
  if type(name) ~= "string" or name == "" then
    fail("invalid", "handler: the name must be a non-empty string, got %s", type(name) == "string" and "''" or type(name))
  end
  if type(fn) ~= "function" and type(fn) ~= "table" then
    fail("invalid", "handler '%s': the handler must be a function or a table with run, got %s", name, type(fn))
  end
  self._e:handler(name, fn)
  return self
end

-- Defined with the declared schedules, below.
local check_undeclared

function Scheduler:start()
  if self._e:state() == "stopped" then check_undeclared(self) end
  self._e:start()
  release_stopped()
  started[self] = true
  self._was_started = true -- a stopped one is then not ready (/readyz)
  return self
end
function Scheduler:stop(grace)
  local r = self._e:stop(grace)
  if self._e:state() == "stopped" then started[self] = nil end
  return r
end
function Scheduler:tick() self._e:tick() end
function Scheduler:get_queue_status() return self._e:get_queue_status() end
function Scheduler:node_id() return self._e:node_id() end
function Scheduler:state() return self._e:state() end
function Scheduler:stats() return self._e:stats() end
function Scheduler:store() return self._store end
function Scheduler:now() return self._e:now() end
function Scheduler:close()
  live[self] = nil
  started[self] = nil
  self._e:close()
end

-- ---- creating jobs ----

local trigger_keys = {
  interval = { seconds = true, minutes = true, hours = true, days = true, weeks = true,
               start_date = true },
  cron = { year = true, month = true, day = true, week = true, day_of_week = true,
           hour = true, minute = true, second = true, cron = true, dialect = true },
  date = { run_date = true },
}

local function has_handler(self, name)
  return self._e:handlers()[name] ~= nil or M.handlers[name] ~= nil
end

-- The names a job table may use besides the typed fields (core.job_fields).
local free_fields = { "args", "kwargs", "metadata", "next_run_time_local", "max_instances", "overlap",
  "on_exhausted", "queue" }

-- Refuses the keys of `fields` that look like misspellings of a name in
-- `names` (arrays of strings), all in one `invalid` error. Other unknown
-- keys are a job's own data, stored as they are (docs/design.md).
local function refuse_typos(fields, what, names, level)
  local known, candidates = {}, {}
  for _, list in ipairs(names) do
    for _, n in ipairs(list) do
      if not known[n] then known[n], candidates[#candidates + 1] = true, n end
    end
  end
  local typos = {}
  for k in pairs(fields) do
    if type(k) == "string" and not known[k] and core.suggest(k, candidates) then
      typos[#typos + 1] = k
    end
  end
  if #typos > 0 then
    error(core.error("invalid", core.unknown_keys(what, typos, candidates, "")
      .. " (fields of your own belong in metadata, kwargs or args)"), level + 1)
  end
end

local function keys_of(set)
  local out = {}
  for k in pairs(set) do out[#out + 1] = k end
  table.sort(out)
  return out
end

local create_options = { "on_success", "on_failure", "if_exists", "unique" }

-- The handler names a job of this scheduler can use now, sorted, as text.
local function known_handlers(self)
  local names, own = {}, self._e:handlers()
  for k in pairs(own) do names[#names + 1] = k end
  for k in pairs(M.handlers) do
    if own[k] == nil then names[#names + 1] = k end
  end
  table.sort(names)
  return #names > 0 and table.concat(names, ", ") or "none"
end

-- A job whose handler nobody has registered: with strict_handlers an
-- `invalid` error before anything is stored; otherwise the job is created
-- and a warning names the handlers known, since one may still come (a
-- sched:handler() call after the job, a handler script added later).
local function unknown_handler(self, name)
  -- _remote: a scheduler that only manages jobs for other processes (the
  -- jobs command line) has no handlers to know.
  if self._remote or type(name) ~= "string" or has_handler(self, name) then return nil end
  if self._strict then
    error(core.error("invalid", ("invalid field 'func_name': no handler named '%s' (known handlers: "
      .. "%s); register it before creating the job (strict_handlers is on)"):format(name,
      known_handlers(self))), 3)
  end
  return name
end

-- A job created through a scoped scheduler that its scope does not match:
-- this scheduler never claims it, another one must.
local function warn_out_of_scope(self, job)
  if self._scope and type(job) == "table" and not self._scope:match(job) then
    self._log("warn", ("job '%s' does not match this scheduler's filters: it runs only on a "
      .. "scheduler whose filters it matches"):format(job.job_id), { job_id = job.job_id })
  end
end

local function warn_unknown_handler(self, name, job_id)
  self._log("warn", ("job '%s': no handler named '%s' yet (known handlers: %s); its runs fail with "
    .. "handler_not_found unless one is registered before they start"):format(job_id, name,
    known_handlers(self)), { job_id = job_id, handler = name })
end

-- Handler scripts may carry defaults for their jobs ({run=fn, timeout=..}).
local handler_defaults = {
  timeout = "timeout_seconds", retry = "max_retries", retry_delay = "retry_delay_seconds",
  priority = "priority", if_missed = "if_missed", misfire_threshold = "misfire_threshold_seconds",
}

-- The defaults a job f takes where it gives none: those of its handler h
-- (a handler script's table; anything else has none), then the
-- scheduler's misfire_threshold option. create_job and create_jobs alike.
local function apply_defaults(self, f, h)
  if type(h) == "table" then
    for k, field in pairs(handler_defaults) do
      if h[k] ~= nil and f[field] == nil then f[field] = h[k] end
    end
  end
  if f.misfire_threshold_seconds == nil then f.misfire_threshold_seconds = self._misfire_threshold end
end

-- Defined with the declared schedules, below.
local declare, reconcile, warn_no_id

--- create_job(fields): fields by their storage names (docs/design.md), plus
--- on_success / on_failure callbacks, if_exists = "error" | "skip" |
--- "replace" | "update" and unique = true | {key =, period =}
--- (chronis.unique). A unique create returns the job and whether it
--- existed already.
function Scheduler:create_job(fields)
  local f = copy(fields)
  local uniq = unique.take(f)
  local on_success, on_failure, if_exists = f.on_success, f.on_failure, f.if_exists or "error"
  f.on_success, f.on_failure, f.if_exists = nil, nil, nil
  if if_exists ~= "error" and if_exists ~= "skip" and if_exists ~= "replace" and if_exists ~= "update" then
    fail("invalid", "invalid option 'if_exists': expected error, skip, replace or update, got %s",
      tostring(if_exists))
  end
  -- Trigger keys given at the top level move into trigger_args.
  local keys = trigger_keys[f.trigger_type]
  local all_trigger_keys = {}
  for _, set in pairs(trigger_keys) do
    for k in pairs(set) do all_trigger_keys[#all_trigger_keys + 1] = k end
  end
  table.sort(all_trigger_keys)
  refuse_typos(f, "job field", { core.job_fields, free_fields, create_options,
    keys and keys_of(keys) or all_trigger_keys }, 2)
  if keys then
    local args = copy(f.trigger_args)
    for k in pairs(keys) do
      if f[k] ~= nil then args[k], f[k] = f[k], nil end
    end
    f.trigger_args = args
    -- JSON has no NaN or infinity: name the key, not the whole table.
    for k, v in pairs(args) do
      if type(v) == "number" and (v ~= v or v == math.huge or v == -math.huge) then
        fail("invalid", "invalid trigger_args '%s': %s is not %s", tostring(k), tostring(v),
          (k == "run_date" or k == "start_date")
            and "a time (expected an ISO-8601 time or integer microseconds)" or "a finite number")
      end
    end
  end
  local missing = unknown_handler(self, f.func_name)
  apply_defaults(self, f,
    type(f.func_name) == "string" and (self._e:handlers()[f.func_name] or M.handlers[f.func_name]))
  if uniq then
    local job, existed = unique.create(self._store, f, uniq, self._e:now())
    -- The callbacks of a create that found its job are not attached: the
    -- job keeps those of the create that made it.
    if not existed and (on_success or on_failure) then
      set_callbacks(self, job.job_id, on_success, on_failure)
    end
    if missing then warn_unknown_handler(self, missing, job.job_id) end
    warn_out_of_scope(self, job)
    return job, existed
  end
  if if_exists == "error" then
    -- Prepared and stored in one step: the job crosses from Lua to C once,
    -- and the stored record comes back once.
    local ok, stored = pcall(engine.create, self._store, f, self._e:now())
    if not ok then error(stored, 2) end
    if on_success or on_failure then set_callbacks(self, stored.job_id, on_success, on_failure) end
    if missing then warn_unknown_handler(self, missing, stored.job_id) end
    warn_no_id(self, f, stored.job_id)
    warn_out_of_scope(self, stored)
    return stored
  end
  -- A recurring job from a declaration carries the mark that start() looks
  -- for once the app stops declaring it (undeclared).
  if f.trigger_type == "interval" or f.trigger_type == "cron" then f.declared = self._mark end
  local job = engine.prepare_job(f, self._e:now()) -- validated before the lookup
  declare(self, job.job_id)
  local existing, created = self._store:get_job(job.job_id), false
  if not existing then
    local ok, stored = pcall(self._store.create_job, self._store, job)
    if ok then
      existing, created = stored, true
    elseif type(stored) == "table" and stored.code == "duplicate" then
      existing = self._store:get_job(job.job_id)
    else
      error(stored, 2)
    end
  end
  if not created and if_exists ~= "skip" then existing = reconcile(self, job, f, if_exists, 2) end
  if on_success or on_failure then set_callbacks(self, job.job_id, on_success, on_failure) end
  if missing then warn_unknown_handler(self, missing, job.job_id) end
  warn_no_id(self, f, job.job_id)
  warn_out_of_scope(self, existing)
  return existing
end

function Scheduler:create_interval_job(fields)
  local f = copy(fields)
  f.trigger_type = "interval"
  return self:create_job(f)
end

function Scheduler:create_cron_job(fields)
  local f = copy(fields)
  f.trigger_type = "cron"
  return self:create_job(f)
end

function Scheduler:create_date_job(fields)
  local f = copy(fields)
  f.trigger_type = "date"
  return self:create_job(f)
end

-- ---- bulk creation ----

-- Records per store request: large enough that a networked store spends
-- its time writing, small enough that one request stays a few MiB.
local CREATE_BATCH = 1000

-- The names a create_jobs item may use, as a set; the options of
-- create_job that a batch cannot take, with the reason.
local item_names
local batch_refused = {
  on_success = "callbacks are per create_job",
  on_failure = "callbacks are per create_job",
  unique = "unique jobs are created one by one (create_job)",
  if_exists = "create_jobs reports existing jobs in its second result (use create_job for skip, update or replace)",
}

-- One item of create_jobs as create_job would store it: trigger keys given
-- at the top level moved into trigger_args, the handler's defaults and the
-- scheduler's misfire_threshold applied. A copy: the caller's table is
-- left as it is. Raises `invalid` naming the item.
local function batch_item(self, item, i, handlers)
  if type(item) ~= "table" then
    fail("invalid", "create_jobs: item %d is not a table (got %s)", i, type(item))
  end
  if item_names == nil then
    item_names = {}
    for _, list in ipairs{ core.job_fields, free_fields } do
      for _, n in ipairs(list) do item_names[n] = true end
    end
  end
  local tt = item.trigger_type
  local keys = trigger_keys[tt]
  if keys == nil then
    fail("invalid", "create_jobs: item %d: invalid field 'trigger_type': expected date, interval or cron, got %s",
      i, tostring(tt))
  end
  local f, args = {}, nil
  for k, v in pairs(item) do
    if item_names[k] then
      f[k] = v
    elseif keys[k] then
      args = args or copy(item.trigger_args)
      args[k] = v
    elseif batch_refused[k] then
      fail("invalid", "create_jobs: item %d: option '%s' is not taken here: %s", i, k, batch_refused[k])
    else
      f[k] = v -- the job's own data, unless it looks like a typo
      local ok, err = pcall(refuse_typos, { [k] = true }, "job field", { core.job_fields, free_fields,
        keys_of(keys) }, 1)
      if not ok then
        err.message = ("create_jobs: item %d: %s"):format(i, err.message)
        error(err, 3)
      end
    end
  end
  if args then f.trigger_args = args end
  local name = f.func_name
  if name ~= nil and handlers[name] == nil then
    handlers[name] = type(name) == "string" and (self._e:handlers()[name] or M.handlers[name]) or false
    if not handlers[name] and unknown_handler(self, name) then handlers[#handlers + 1] = name end
  end
  apply_defaults(self, f, handlers[name])
  return f
end

--- create_jobs(list) -> ids, failed: creates the jobs of `list` (each what
--- create_job takes, with its trigger_type, without callbacks, unique or
--- if_exists) in one store request per 1,000 jobs. ids[i] is the id of
--- list[i]; failed is nil when every job was created, else {[i] = error}
--- for those that were not (code "duplicate": the id exists, or an earlier
--- item of the list has it). Every item is checked before any is stored:
--- an invalid one raises, naming it, and nothing of its batch is created.
function Scheduler:create_jobs(list)
  if type(list) ~= "table" then
    fail("invalid", "create_jobs: expected an array of jobs, got %s", type(list))
  end
  local n, ids, failed = #list, {}, nil
  local handlers = {} -- name -> handler (false: none), then the unknown names
  local batch = {}
  for lo = 1, n, CREATE_BATCH do
    local hi = math.min(n, lo + CREATE_BATCH - 1)
    for i = lo, hi do batch[i - lo + 1] = batch_item(self, list[i], i, handlers) end
    for i = hi - lo + 2, #batch do batch[i] = nil end
    local ok, got, bad = pcall(engine.create_many, self._store, batch, self._e:now())
    if not ok then
      -- `create_jobs: item 3: ...` counts within the batch: name the item of the list.
      if type(got) == "table" and type(got.message) == "string" then
        got.message = got.message:gsub("^create_jobs: item (%d+)", function(k)
          return "create_jobs: item " .. (tonumber(k) + lo - 1) end)
      end
      error(got, 2)
    end
    for i = 1, #got do
      local f = batch[i]
      ids[lo + i - 1] = got[i]
      if bad and bad[i] then
        failed = failed or {}
        bad[i].message = bad[i].message:gsub("^create_jobs: item (%d+)", "create_jobs: item " .. (lo + i - 1))
        failed[lo + i - 1] = bad[i]
      else
        warn_no_id(self, f, got[i])
        if self._scope then
          f.job_id = got[i]
          warn_out_of_scope(self, f)
        end
      end
    end
  end
  for _, name in ipairs(handlers) do
    self._log("warn", ("create_jobs: no handler named '%s' yet (known handlers: %s); runs of its jobs fail "
      .. "with handler_not_found unless one is registered before they start"):format(name,
      known_handlers(self)), { handler = name })
  end
  return ids, failed
end

-- ---- the fluent builder ----

local Builder = {}
Builder.__index = Builder

local config_keys = {
  job_id = "job_id", name = "name", timezone = "timezone", retry = "max_retries",
  retry_delay = "retry_delay_seconds", timeout = "timeout_seconds", priority = "priority",
  metadata = "metadata", if_missed = "if_missed", misfire_threshold = "misfire_threshold_seconds",
  on_success = "on_success", on_failure = "on_failure", if_exists = "if_exists",
  history_limit = "history_limit", unique = "unique", on_exhausted = "on_exhausted",
  max_instances = "max_instances", overlap = "overlap", queue = "queue",
}

local function builder(sched)
  return setmetatable({ _s = sched, _f = { metadata = {} } }, Builder)
end

local function set_trigger(b, ttype, args)
  if b._f.trigger_type then
    error(core.error("invalid", ("a trigger is already configured (%s)"):format(b._f.trigger_type)), 3)
  end
  b._f.trigger_type, b._f.trigger_args = ttype, args
  return b
end

function Builder:every(spec)
  if type(spec) ~= "table" then
    fail("invalid", "every: the interval must be a table such as {minutes = 5}, got %s", type(spec))
  end
  return set_trigger(self, "interval", copy(spec))
end

function Builder:on(spec)
  if type(spec) == "string" then spec = { cron = spec } end
  if type(spec) ~= "table" then
    fail("invalid", "on: the schedule must be a table of cron fields or a crontab string, got %s", type(spec))
  end
  local args = copy(spec)
  if args.timezone then self._f.timezone, args.timezone = args.timezone, nil end
  return set_trigger(self, "cron", args)
end

function Builder:once(when)
  if type(when) ~= "string" and math.type(when) ~= "integer" then
    fail("invalid", "once: the time must be an ISO-8601 string or integer microseconds, got %s",
      math.type(when) or type(when))
  end
  if math.type(when) == "integer" then when = M.time.format(when) end
  return set_trigger(self, "date", { run_date = when })
end

local config_names = keys_of(config_keys)

function Builder:config(opts)
  local unknown = {}
  for k in pairs(opts or {}) do
    if not config_keys[k] then unknown[#unknown + 1] = tostring(k) end
  end
  if #unknown > 0 then
    error(core.error("invalid", core.unknown_keys("config option", unknown, config_names)), 2)
  end
  for k, v in pairs(opts or {}) do
    local field = config_keys[k]
    if k == "metadata" then
      if type(v) ~= "table" then fail("invalid", "config 'metadata' must be a table") end
      for mk, mv in pairs(v) do self._f.metadata[mk] = mv end
    else
      self._f[field] = v
    end
  end
  return self
end

--- run(func_name, kwargs, args) -> the created job (with unique: the job
--- and whether it existed already)
function Builder:run(func_name, kwargs, args)
  if not self._f.trigger_type then
    fail("invalid", "no trigger configured: call every(), on() or once() before run()")
  end
  if type(func_name) ~= "string" or func_name == "" then
    fail("invalid", "run() needs a handler name")
  end
  local f = copy(self._f)
  if next(f.metadata) == nil then f.metadata = nil end
  f.func_name, f.kwargs, f.args = func_name, kwargs, args
  return self._s:create_job(f)
end

function Scheduler:every(spec) return builder(self):every(spec) end
function Scheduler:on(spec) return builder(self):on(spec) end
function Scheduler:once(when) return builder(self):once(when) end
function Scheduler:config(opts) return builder(self):config(opts) end

-- ---- management ----

function Scheduler:get_job(id) return self._store:get_job(id) end

-- Filters the scheduler matches itself, on what the store returns: the
-- storage contract has no filter on these fields. Equal values only.
local own_filters = { func_name = true, name = true }

-- Splits filters into the store's and the scheduler's own (nil when there
-- are none of the latter). Raises `invalid` at `level` on a bad own value.
local function split_filters(filters, level)
  if type(filters) ~= "table" then return filters, nil end
  local store_f, own = {}, nil
  for k, v in pairs(filters) do
    if own_filters[k] then
      if type(v) ~= "string" then
        error(core.error("invalid", ("invalid filter '%s': expected a string, got %s"):format(
          k, type(v))), level + 1)
      end
      own = own or {}
      own[k] = v
    else
      store_f[k] = v
    end
  end
  return store_f, own
end

local function own_match(own, job)
  for k, v in pairs(own) do
    if job[k] ~= v then return false end
  end
  return true
end

local SCAN_PAGE = 500

-- Calls each(job) for every job matching store_f and own, in query order,
-- reading the store a page at a time, until each returns false.
local function scan(self, store_f, own, each)
  local offset = 0
  while true do
    local page = self._store:query_jobs(store_f, SCAN_PAGE, offset)
    for _, job in ipairs(page) do
      if (not own or own_match(own, job)) and each(job) == false then return end
    end
    if #page < SCAN_PAGE then return end
    offset = offset + #page
  end
end

local function check_count(v, what, level)
  if v ~= nil and (math.type(v) ~= "integer" or v < 0) then
    error(core.error("invalid", ("%s must be a non-negative integer"):format(what)), level + 1)
  end
end

--- query_jobs(filters, limit, offset): the store's filters, plus func_name
--- and name (equal to the string given), which the scheduler matches
--- itself by reading the store's matches page by page.
function Scheduler:query_jobs(filters, limit, offset)
  local store_f, own = split_filters(filters, 2)
  if not own then return self._store:query_jobs(filters, limit, offset) end
  check_count(limit, "limit", 2)
  check_count(offset, "offset", 2)
  local out, skip = {}, offset or 0
  if limit == 0 then return out end
  scan(self, store_f, own, function(job)
    if skip > 0 then
      skip = skip - 1
    else
      out[#out + 1] = job
      if limit and #out >= limit then return false end
    end
  end)
  return out
end

function Scheduler:count_jobs(filters)
  local store_f, own = split_filters(filters, 2)
  if not own then return self._store:count_jobs(filters) end
  local n = 0
  scan(self, store_f, own, function() n = n + 1 end)
  return n
end

--- history(job_id_or_filters [, limit [, offset]]): the runs of the store,
--- newest first (docs/history.md); a string is a job id.
function Scheduler:history(filters, limit, offset)
  return self._store:query_runs(filters, limit, offset)
end

local function must_get(self, id, level)
  if type(id) ~= "string" then
    error(core.error("invalid", ("job_id must be a string, got %s"):format(type(id))), level + 1)
  end
  local job = self._store:get_job(id)
  if not job then error(core.error("not_found", ("job '%s' not found"):format(id)), level + 1) end
  return job
end

local trigger_fields = { trigger_type = true, trigger_args = true, timezone = true }

-- The fields chronis writes itself, which update_job refuses, with who
-- writes them. Claims, completions and lease recovery write the lease, the
-- attempts and the record of the last run with compare-and-swaps of their
-- own: a value set by hand would make a running job no process holds (one
-- that never runs again), or a record of runs that did not happen.
local owned_fields = {
  claimed_by = "the engine", lease_until = "the engine", attempt = "the engine",
  retry_count = "the engine", last_run_time = "the engine", last_scheduled_time = "the engine",
  last_run_at = "the engine", last_outcome = "the engine", last_error = "the engine",
  failure_count = "the engine", consecutive_failures = "the engine", progress = "the engine",
  queued_slot = "the engine", retry_slot = "the engine",
  created_at = "the scheduler when the job is created", updated_at = "the store on every write",
  unique_key = "the scheduler when a unique job is created",
  unique_until = "the scheduler when a unique job is created",
}
local owned_names = keys_of(owned_fields)

-- What may not change while the job runs: the end of its run writes them
-- (its status and next time, from the trigger it was claimed with).
local run_fields = { "next_run_time", "status", "timezone", "trigger_args", "trigger_type" }

local update_option_names = { "metadata" }

-- The metadata mode of update_job's options: "merge" (the default) or
-- "replace". Raises `invalid` at `level` naming a bad option.
local function metadata_mode(opts, level)
  if opts == nil then return "merge" end
  if type(opts) ~= "table" then
    error(core.error("invalid", ("update_job: options must be a table, got %s"):format(type(opts))),
      level + 1)
  end
  local unknown = {}
  for k in pairs(opts) do
    if k ~= "metadata" then unknown[#unknown + 1] = tostring(k) end
  end
  if #unknown > 0 then
    table.sort(unknown)
    error(core.error("invalid", "update_job: " .. core.unknown_keys("option", unknown,
      update_option_names)), level + 1)
  end
  local m = opts.metadata
  if m == nil then return "merge" end
  if m ~= "merge" and m ~= "replace" then
    error(core.error("invalid", ("update_job: invalid option 'metadata': expected merge or replace, "
      .. "got %s"):format(type(m) == "string" and "'" .. m .. "'" or type(m))), level + 1)
  end
  return m
end

-- An object as JSON sees it: a table that is not an array.
local function is_object(v)
  return type(v) == "table" and v[1] == nil
end

-- The stored metadata with the given top-level keys set, and removed where
-- they are chronis.json.null; a nested table replaces the stored value.
-- Only objects merge: anything else given replaces what is stored.
local function merge_metadata(stored, given)
  if not is_object(given) or (stored ~= nil and not is_object(stored)) then return given end
  local out = copy(stored)
  for k, v in pairs(given) do
    if v == M.json.null then out[k] = nil else out[k] = v end
  end
  return out
end

--- update_job(id, fields [, opts]): changing the trigger recomputes
--- next_run_time. metadata is merged into the stored one, top-level key by
--- key (null removes a key), unless opts.metadata is "replace". The fields
--- chronis writes (owned_fields, status running) are refused, and so is a
--- scheduled job without a next run time; a running job keeps its status,
--- next run time and trigger until its run ends (docs/api.md). A
--- compare-and-swap on the job's updated_at, read again and retried when
--- the job changed meanwhile (a claim, a completion), so a concurrent
--- change is never overwritten.
function Scheduler:update_job(id, fields, opts)
  if type(fields) ~= "table" then fail("invalid", "update_job: fields must be a table") end
  local meta_mode = metadata_mode(opts, 2)
  -- Before the typo check: last_run_at is no misspelling of last_run_time.
  for _, k in ipairs(owned_names) do
    if fields[k] ~= nil then
      fail("invalid", "update_job: field '%s' is set by %s and cannot be updated", k, owned_fields[k])
    end
  end
  if fields.status == "running" then
    fail("invalid", "update_job: field 'status' cannot be set to running: the engine sets it when it "
      .. "claims the job (run_job_now runs a job at once)")
  end
  refuse_typos(fields, "job field", { core.job_fields, free_fields }, 2)
  if fields.job_id ~= nil and fields.job_id ~= id then fail("invalid", "update_job: job_id cannot change") end
  local null = M.json.null
  for _ = 1, 5 do
    local cur = must_get(self, id, 2)
    if cur.status == "running" then
      for _, k in ipairs(run_fields) do
        if fields[k] ~= nil then
          fail("invalid_state", "update_job: field '%s' of job '%s' cannot change while it runs (its "
            .. "status is running): the end of the run sets it", k, id)
        end
      end
    end
    local updates = copy(fields)
    if meta_mode == "merge" and fields.metadata ~= nil then
      updates.metadata = merge_metadata(cur.metadata, fields.metadata)
    end
    local merged, retrigger = copy(cur), false
    for k, v in pairs(updates) do
      merged[k] = v
      if trigger_fields[k] then retrigger = true end
    end
    if retrigger then
      merged.next_run_time = nil
      local prepared = engine.prepare_job(merged, self._e:now())
      updates.next_run_time = prepared.next_run_time or null
      if cur.status == "scheduled" or cur.status == "pending" then
        updates.status = prepared.next_run_time and "scheduled" or "pending"
      end
    else
      engine.prepare_job(merged, self._e:now()) -- validates the result
    end
    -- A scheduled job always has a next run time: one removed by hand is
    -- refused; one missing is the trigger's next, as resume_job does.
    if (updates.status or cur.status) == "scheduled" then
      local nrt = updates.next_run_time
      if nrt == nil then nrt = cur.next_run_time end
      if nrt == nil or nrt == null then
        if fields.next_run_time == null and not retrigger then
          fail("invalid", "update_job: field 'next_run_time' cannot be removed from a scheduled job "
            .. "(give it a time, or another status such as paused)")
        end
        local m = copy(merged)
        m.next_run_time, m.status = nil, nil
        nrt = engine.prepare_job(m, self._e:now()).next_run_time
        if nrt == nil then
          fail("invalid", "update_job: job '%s' cannot be scheduled: field 'next_run_time' is not set "
            .. "and its trigger has no next time", id)
        end
        updates.next_run_time = nrt
      end
    end
    local ok, job = self._store:compare_and_swap_job(id, { updated_at = cur.updated_at }, updates)
    if ok then return job end
  end
  error(core.error("conflict", ("cannot update job '%s': it keeps changing"):format(id)), 2)
end

-- ---- declared schedules ----

-- Records a job declared through this scheduler (if_exists other than
-- error): what start() compares the stored declared jobs with.
function declare(self, id)
  self._declared = self._declared or {}
  self._declared[id] = true
end

-- The fields a declaration never sets: what chronis writes (owned_fields),
-- the job's state and what is derived from it. Its status and next run
-- time follow their own rules (next_state).
local state_fields = { job_id = true, status = true, next_run_time = true,
  next_run_time_local = true, unreadable = true }
for k in pairs(owned_fields) do state_fields[k] = true end

-- Equal as stored values: numbers by value (1 and 1.0 alike), tables by
-- content, null as absent.
local function same(a, b)
  if a == M.json.null then a = nil end
  if b == M.json.null then b = nil end
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  for k, v in pairs(a) do
    if not same(v, b[k]) then return false end
  end
  for k, v in pairs(b) do
    if a[k] == nil and not same(nil, v) then return false end
  end
  return true
end

-- The updates that make the stored job `cur` what the declaration says:
-- with replace, every field but the state fields is the prepared job's
-- (one it does not have is removed); with update, only the fields the
-- declaration `f` gives, metadata merged key by key. Returns the updates
-- and the names of the changed fields, sorted (the mark left out).
local function declared_updates(cur, job, f, mode)
  local updates, changed = {}, {}
  local function set(k, v)
    if state_fields[k] or same(cur[k], v) then return end
    if v == nil then updates[k] = M.json.null else updates[k] = v end
    if k ~= "declared" then changed[#changed + 1] = k end
  end
  if mode == "replace" then
    for k, v in pairs(job) do set(k, v) end
    for k in pairs(cur) do
      if job[k] == nil then set(k, nil) end
    end
  else
    for k in pairs(f) do
      if k == "metadata" then set(k, merge_metadata(cur.metadata, job.metadata)) else set(k, job[k]) end
    end
  end
  table.sort(changed)
  return updates, changed
end

-- The status and next run time a reconciled job takes (nil, nil: those it
-- has). A running job keeps them: its run's end writes them. A changed
-- trigger gives the first time of the new trigger after now, to a job
-- waiting for one (scheduled, pending or paused; a paused job stays
-- paused). replace also schedules a failed job again, and a completed one
-- whose trigger changed, with its retries at 0, unless the trigger has no
-- time left.
local function next_state(self, cur, merged, retrigger, mode)
  local st = cur.status
  if st == "running" then return nil end
  local revive = mode == "replace" and (st == "failed" or (st == "completed" and retrigger))
  local waiting = st == "scheduled" or st == "pending" or st == "paused"
  if not revive and not (retrigger and waiting) then return nil end
  local m = copy(merged)
  m.next_run_time, m.status = nil, nil
  local prepared = engine.prepare_job(m, self._e:now())
  local nrt = prepared.next_run_time
  if revive and nrt == nil then return nil end
  if st == "paused" then return "paused", nrt or M.json.null end
  return prepared.status, nrt or M.json.null
end

local function shown(v)
  if v == nil or v == M.json.null then return "none" end
  return M.json.encode(v)
end

-- if_exists = "replace" | "update" on a job that exists: a compare-and-swap
-- on the job's updated_at and status, read again and retried when a claim
-- or completion changed it meanwhile. A running job keeps its claim fields
-- (status, lease, next run time): its run goes on with the job it was
-- claimed with, and its end sets the next run time from that one's
-- trigger; the runs after it follow the new record. Logs the changed
-- fields at info; nothing when the job already is as declared.
function reconcile(self, job, f, mode, level)
  local id = job.job_id
  for _ = 1, 5 do
    local cur = self._store:get_job(id)
    if not cur then
      -- Deleted since it was found: the declaration creates it again.
      local ok, stored = pcall(self._store.create_job, self._store, job)
      if ok then return stored end
      if type(stored) ~= "table" or stored.code ~= "duplicate" then error(stored, level + 1) end
    else
      local updates, changed = declared_updates(cur, job, f, mode)
      local merged, retrigger = copy(cur), false
      for k, v in pairs(updates) do
        if v == M.json.null then merged[k] = nil else merged[k] = v end
        if trigger_fields[k] then retrigger = true end
      end
      local status, nrt = next_state(self, cur, merged, retrigger, mode)
      if status ~= nil and status ~= cur.status then
        updates.status = status
        if cur.status == "failed" or cur.status == "completed" then updates.retry_count = 0 end
      end
      if nrt ~= nil and not same(nrt, cur.next_run_time) then updates.next_run_time = nrt end
      if next(updates) == nil then return cur end
      -- A job deleted since the read is not_found: the next round creates it.
      local done, ok, stored = pcall(self._store.compare_and_swap_job, self._store, id,
        { updated_at = cur.updated_at, status = cur.status }, updates)
      if not done and (type(ok) ~= "table" or ok.code ~= "not_found") then error(ok, level + 1) end
      if done and ok then
        local parts = {}
        for _, k in ipairs(changed) do
          parts[#parts + 1] = ("%s %s -> %s"):format(k, shown(cur[k]), shown(merged[k]))
        end
        local line = table.concat(parts, ", ")
        if updates.status then
          line = line .. ("%sstatus %s -> %s"):format(line == "" and "" or "; ", cur.status, updates.status)
        end
        if updates.next_run_time and stored.next_run_time then
          line = line .. ("; next run at %s"):format(stored.next_run_time)
        elseif retrigger and cur.status == "running" then
          line = line .. "; it is running: the end of this run sets its next time from the trigger "
            .. "it was claimed with"
        end
        if line ~= "" then
          self._log("info", ("job '%s' updated from its declaration: %s"):format(id, line),
            { job_id = id })
        end
        return stored
      end
    end
  end
  error(core.error("conflict", ("cannot %s job '%s' from its declaration: it keeps changing"):format(
    mode, id)), level + 1)
end

-- A recurring job without an explicit id, created by a script's main
-- chunk (the app) on a store that outlives the process: the app creates
-- another one at each start. Jobs created in a task (a handler, an HTTP
-- request) are made at run time, and the command line (_remote) creates
-- jobs once, on purpose.
function warn_no_id(self, f, job_id)
  if f.job_id ~= nil or (f.trigger_type ~= "interval" and f.trigger_type ~= "cron") or self._remote
    or core.in_task() or self._store:kind() == "memory" then
    return
  end
  self._log("warn", ("job '%s' has no job_id: each start of the app creates another; give it one "
    .. "(config{job_id=})"):format(job_id), { job_id = job_id })
end

-- At start(): the recurring jobs in this scheduler's scope that carry its
-- mark (declared = its app, or true) and that it did not declare before,
-- reported at warn or deleted (undeclared = "report" | "remove"). A
-- scheduler that declared nothing and names no app (a worker that only
-- runs jobs) looks at nothing. A store that fails here is logged; the
-- scheduler starts all the same.
function check_undeclared(self)
  local ids = self._declared
  if self._undeclared == "keep" or (ids == nil and self._app == nil) then return end
  ids = ids or {}
  local stale = {}
  local ok, err = pcall(function()
    for _, tt in ipairs({ "interval", "cron" }) do
      local filters = copy(self._filters)
      filters.trigger_type = tt
      scan(self, filters, nil, function(job)
        if job.declared == self._mark and not ids[job.job_id] then stale[#stale + 1] = job.job_id end
      end)
    end
  end)
  if not ok then
    self._log("error", "cannot look for jobs this app no longer declares: " .. tostring(err))
    return
  end
  table.sort(stale)
  for _, id in ipairs(stale) do
    if self._undeclared == "remove" then
      set_callbacks(self, id, nil, nil)
      local gone, e = pcall(self._store.delete_job, self._store, id)
      if gone then
        self._log("info", ("job '%s' deleted: this app no longer declares it (undeclared = "
          .. "\"remove\")"):format(id), { job_id = id })
      else
        self._log("error", ("cannot delete job '%s', which this app no longer declares: %s"):format(
          id, tostring(e)), { job_id = id })
      end
    else
      self._log("warn", ("job '%s' was declared by this app and no longer is: it stays in the store "
        .. "and keeps running; delete it (sched:delete_job(\"%s\"), chronis jobs delete %s) or start "
        .. "the scheduler with undeclared = \"remove\""):format(id, id, id), { job_id = id })
    end
  end
end

--- delete_job(id) -> true; a job that does not exist is a not_found error.
function Scheduler:delete_job(id)
  if type(id) ~= "string" then error("job id must be a string", 2) end
  set_callbacks(self, id, nil, nil)
  if not self._store:delete_job(id) then
    error(core.error("not_found", ("job '%s' not found"):format(id)), 2)
  end
  return true
end

-- Moves a job between statuses with a CAS on its current status, so a
-- concurrent claim is never overwritten. A completed job is matched on its
-- updated_at too: the engine's retention marks one (claimed_by) before it
-- deletes it, and a job marked is being deleted.
local function transition(self, id, allowed, verb, updates_of)
  for _ = 1, 5 do
    local cur = must_get(self, id, 3)
    if not allowed[cur.status] then
      error(core.error("invalid_state", ("cannot %s job '%s': its status is %s"):format(
        verb, id, cur.status)), 3)
    end
    local expected = { status = cur.status }
    if cur.status == "completed" then
      if cur.claimed_by ~= nil then
        error(core.error("invalid_state", ("cannot %s job '%s': it completed longer than "
          .. "keep_completed ago and is being deleted"):format(verb, id)), 3)
      end
      expected.updated_at = cur.updated_at
    end
    local ok, job = self._store:compare_and_swap_job(id, expected, updates_of(cur))
    if ok then return job end
  end
  error(core.error("conflict", ("cannot %s job '%s': it keeps changing"):format(verb, id)), 3)
end

function Scheduler:pause_job(id)
  return transition(self, id, { scheduled = true, pending = true }, "pause", function()
    return { status = "paused" }
  end)
end

function Scheduler:resume_job(id)
  return transition(self, id, { paused = true }, "resume", function(cur)
    local nrt = cur.next_run_time
    if nrt == nil then
      nrt = engine.prepare_job((function()
        local m = copy(cur); m.next_run_time, m.status = nil, nil; return m
      end)(), self._e:now()).next_run_time
    end
    return { status = nrt and "scheduled" or "pending", next_run_time = nrt or M.json.null }
  end)
end

--- run_job_now(id): due now, with its retry_count at 0; a completed
--- one-shot job runs again (and is completed again once it succeeds).
function Scheduler:run_job_now(id)
  local job = transition(self, id, { scheduled = true, pending = true, paused = true, failed = true,
    completed = true }, "run", function()
      return { status = "scheduled", next_run_time = self._e:now(), retry_count = 0 }
    end)
  self._e:tick()
  return job
end

--- retry_job(id): a failed job back to scheduled, due now, with its
--- retry_count at 0.
function Scheduler:retry_job(id)
  local job = transition(self, id, { failed = true }, "retry", function()
    return { status = "scheduled", next_run_time = self._e:now(), retry_count = 0 }
  end)
  self._e:tick()
  return job
end

-- The ids of the jobs matching filters (any of query_jobs's), read before
-- any is changed: changing them while paging would move the pages.
local function matching_ids(self, filters, level)
  local store_f, own = split_filters(filters, level + 1)
  local ids = {}
  scan(self, store_f, own, function(job) ids[#ids + 1] = job.job_id end)
  return ids
end

-- Runs a store write that may find the job gone (deleted meanwhile):
-- false then, the error of any other failure is raised.
local function unless_gone(fn, ...)
  local ok, a, b = pcall(fn, ...)
  if ok then return a, b end
  if type(a) == "table" and a.code == "not_found" then return false end
  error(a, 0)
end

local function lists_failed(status)
  if status == nil or status == "failed" then return true end
  if type(status) ~= "table" then return false end
  for _, v in ipairs(status) do
    if v == "failed" then return true end
  end
  return false
end

--- retry_jobs(filters) -> count, ids: retry_job for every failed job that
--- matches (filters as in query_jobs; a status filter without failed
--- matches nothing). A job that stopped being failed meanwhile is left
--- alone.
function Scheduler:retry_jobs(filters)
  if filters ~= nil and type(filters) ~= "table" then
    fail("invalid", "retry_jobs: filters must be a table, got %s", type(filters))
  end
  local f = copy(filters)
  if not lists_failed(f.status) then
    self._store:query_jobs({ status = f.status }, 0) -- a bad status is still an error
    return 0, {}
  end
  f.status = "failed"
  local done = {}
  for _, id in ipairs(matching_ids(self, f, 2)) do
    local ok = unless_gone(self._store.compare_and_swap_job, self._store, id, { status = "failed" },
      { status = "scheduled", next_run_time = self._e:now(), retry_count = 0 })
    if ok then done[#done + 1] = id end
  end
  if #done > 0 then self._e:tick() end
  return #done, done
end

--- delete_jobs(filters) -> count, ids: deletes every job that matches
--- (filters as in query_jobs; {} is every job), whatever its status, as
--- delete_job does. Jobs created after the matching jobs were read are
--- left alone.
function Scheduler:delete_jobs(filters)
  if type(filters) ~= "table" then
    fail("invalid", "delete_jobs: filters must be a table ({} for every job), got %s", type(filters))
  end
  local done = {}
  for _, id in ipairs(matching_ids(self, filters, 2)) do
    set_callbacks(self, id, nil, nil)
    if self._store:delete_job(id) then done[#done + 1] = id end
  end
  return #done, done
end

return M
