-- chronis.cli: the job management commands of the host, `chronis jobs ...`
-- and `chronis stats`, on any store URL (docs/cli.md). It opens a
-- scheduler on the store without starting it, and every read and change
-- goes through the Scheduler's methods. main(args) returns the exit code,
-- so the commands run in-process as well as from runtime/main.c:
--   0 done; 1 failed (the store cannot be reached, no such job, a status
--   the command does not apply to); 2 usage error (bad option or value).
local chronis = require "chronis"

local M = {}

local json, ctime, tz = chronis.json, chronis.time, chronis.tz
local unique = require "chronis.unique"
local S = 1000000 -- µs in a second

local DEFAULT_STORAGE = "sqlite:chronis.db" -- the host's default
local STATUSES = { "scheduled", "pending", "running", "paused", "failed", "completed" }
local OUTCOMES = { "ok", "error", "timeout", "skipped", "interrupted", "snoozed", "cancelled" }

-- ---- errors ----

-- A usage error (exit 2) or a failure (exit 1), raised as tables that
-- main() tells from chronis errors and from bugs. Their `code` is the
-- chronis error code of the same fault, for the HTTP API, which shares
-- the checks below (lib at the end of this file).
local function usage_error(msg, hint)
  error({ cli_exit = 2, code = "invalid", message = msg, hint = hint }, 0)
end

local function failure(msg, code)
  error({ cli_exit = 1, code = code or "unavailable", message = msg }, 0)
end

-- ---- typo suggestions ----

-- "; did you mean '--status'?" when a name is close to a known one
-- (core.suggest, the rule every misspelt name of chronis follows), else "".
local function did_you_mean(word, candidates, prefix)
  local c = require("chronis.core").suggest(word, candidates)
  return c and ("; did you mean '%s%s'?"):format(prefix or "", c) or ""
end

-- ---- durations and times ----

local UNITS = { s = 1, m = 60, h = 3600, d = 86400, w = 604800 }
local MAX_SECONDS = 10000 * 366 * 86400 -- beyond, no time is in range
local UNIT_KEYS = { s = "seconds", m = "minutes", h = "hours", d = "days", w = "weeks" }

-- "30s", "5m", "1h30m", "2d" -> seconds, and the parts by unit; nil when
-- it is not a duration.
local function duration_of(s)
  if type(s) ~= "string" or s == "" then return nil end
  local total, parts, pos = 0, {}, 1
  while pos <= #s do
    local n, u, nxt = s:match("^(%d+)([smhdw])()", pos)
    if not n or parts[u] or #n > 12 then return nil end
    parts[u] = tonumber(n)
    total = total + parts[u] * UNITS[u]
    pos = nxt
  end
  if total > MAX_SECONDS then return nil end
  return total, parts
end

local DURATION_HINT = "expected like 30s, 5m, 2h, 1d"

local function parse_duration(s, opt)
  local secs, parts = duration_of(s)
  if not secs then usage_error(("%s: bad duration %q: %s"):format(opt, s, DURATION_HINT)) end
  return secs, parts
end

-- The machine's zone, for showing times: TZ, else /etc/timezone; nil when
-- it is UTC or cannot be read.
local UTC_NAMES = {}
for _, z in ipairs({ "UTC", "UCT", "GMT", "GMT0", "Universal", "Zulu", "Greenwich" }) do
  UTC_NAMES[z], UTC_NAMES["Etc/" .. z] = true, true
end

local function is_utc(zone)
  return zone == nil or UTC_NAMES[zone] == true
end

local function machine_zone(getenv)
  local zone = getenv("TZ")
  if zone == nil or zone == "" then
    local f = io.open("/etc/timezone")
    zone = f and f:read("l")
    if f then f:close() end
  end
  if zone then zone = zone:gsub("^:", ""):gsub("%s+$", "") end
  if not zone or zone == "" or is_utc(zone) or not pcall(tz.info, zone, 0) then return nil end
  return zone
end

local TIME_HINT = "expected an ISO time (2025-01-15T10:00:00Z, 2025-01-15 10:00), "
  .. "'now' or a duration from now (10m, -2h)"

-- An option's TIME: ISO-8601 (a time without an offset is a wall time in
-- `zone`; seconds and the time of day may be left out), "now", or a
-- duration from now: in the future, or the past with a leading '-'
-- (`past` makes an unsigned duration count back, for --since).
local function parse_time(s, opt, now, zone, past)
  if s == "now" then return now end
  local sign, rest = s:match("^([+-]?)(.*)$")
  local secs = duration_of(rest)
  if secs then
    if sign == "-" or (past and sign == "") then return now - secs * S end
    return now + secs * S
  end
  local iso = s
  if iso:match("^%d%d%d%d%-%d%d%-%d%d$") then
    iso = iso .. "T00:00:00"
  else
    -- Seconds left out: 2025-01-15 10:00, 2025-01-15T10:00Z.
    local head, tail = iso:match("^(%d%d%d%d%-%d%d%-%d%d[Tt ]%d%d:%d%d)(.*)$")
    if head and tail:sub(1, 1) ~= ":" then iso = head .. ":00" .. tail end
  end
  local ok, t = pcall(ctime.parse, iso, zone or "UTC")
  if ok then return t end
  local why = type(t) == "table" and t.message and t.message:match("^invalid time '.-': (.*)$")
  if why and iso:match("^%d%d%d%d%-") then
    usage_error(("%s: bad time %q: %s"):format(opt, s, why))
  end
  usage_error(("%s: bad time %q: %s"):format(opt, s, TIME_HINT))
end

local function us_of(t)
  if t == nil or t == json.null then return nil end
  if math.type(t) == "integer" then return t end
  local ok, v = pcall(ctime.parse, t)
  return ok and v or nil
end

-- "2025-01-15 10:00:00" (UTC) from µs.
local function short_utc(us)
  return (ctime.format(us):gsub("%.%d+", ""):gsub("T", " "):gsub("Z$", ""))
end

-- "2025-01-15 11:00:00 CET" in zone.
local function short_local(us, zone)
  local text = tz.format_local(us, zone):gsub("%.%d+", ""):gsub("T", " ")
  text = text:gsub("[+-]%d%d:%d%d$", ""):gsub("Z$", "")
  return text .. " " .. tz.info(zone, us).abbr
end

-- Seconds as "1h 30m" (every unit), or the two largest units with
-- `short`; below a minute with fractions, "1.5s" or "120ms".
local function duration_text(secs, short)
  if secs == nil then return "-" end
  if secs < 0.0005 and secs > 0 then return "<1ms" end
  if secs < 1 and secs > 0 then return ("%dms"):format(math.floor(secs * 1000 + 0.5)) end
  if secs < 60 and math.type(secs) == "float" and secs ~= math.floor(secs) then
    return (("%.1f"):format(secs):gsub("%.0$", "")) .. "s"
  end
  secs = math.floor(secs + 0.5)
  if secs == 0 then return "0s" end
  local out = {}
  for _, u in ipairs({ { "d", 86400 }, { "h", 3600 }, { "m", 60 }, { "s", 1 } }) do
    local n = secs // u[2]
    if n > 0 then
      out[#out + 1] = n .. u[1]
      secs = secs - n * u[2]
      if short and #out == 2 then break end
    end
  end
  return table.concat(out, " ")
end

-- "in 4m 10s", "3h 2m ago", "now".
local function relative(us, now)
  local d = (us - now) / S
  if math.abs(d) < 1 then return "now" end
  if d > 0 then return "in " .. duration_text(math.floor(d), true) end
  return duration_text(math.floor(-d), true) .. " ago"
end

-- ---- JSON documents ----

-- Arrays and objects the commands build: an empty one is still [] or {}.
local ARRAY, OBJECT = {}, {}
local function array(t) return setmetatable(t or {}, ARRAY) end
local function object(t) return setmetatable(t or {}, OBJECT) end

local function encode(v)
  local mt = type(v) == "table" and getmetatable(v)
  if mt == ARRAY then
    local parts = {}
    for i = 1, #v do parts[i] = encode(v[i]) end
    return "[" .. table.concat(parts, ",") .. "]"
  elseif mt == OBJECT then
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys)
    local parts = {}
    for i, k in ipairs(keys) do parts[i] = json.encode(k) .. ":" .. encode(v[k]) end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return json.encode(v)
end

-- ---- text output ----

local function text_width(s)
  return utf8.len(s) or #s
end

-- One line, control characters as spaces, cut to `max` characters with an
-- ellipsis.
local function cell(v, max)
  local s = v == nil and "-" or tostring(v)
  s = s:gsub("[%c]", " ")
  if not utf8.len(s) then s = s:gsub("[\128-\255]", "?") end
  if max and text_width(s) > max then
    s = s:sub(1, utf8.offset(s, max) - 1) .. "…"
  end
  return s
end

local function pad(s, w, right)
  local fill = (" "):rep(w - text_width(s))
  return right and fill .. s or s .. fill
end

-- Lines of an aligned table: cols = { {title, max = n, right = bool}, ... },
-- rows = { {cell, ...}, ... }.
local function render_table(cols, rows)
  local widths = {}
  for i, c in ipairs(cols) do widths[i] = text_width(c[1]) end
  local cells = {}
  for r, row in ipairs(rows) do
    cells[r] = {}
    for i, c in ipairs(cols) do
      local s = cell(row[i], c.max)
      cells[r][i] = s
      if text_width(s) > widths[i] then widths[i] = text_width(s) end
    end
  end
  local lines = {}
  local function line(vals)
    local parts = {}
    for i, c in ipairs(cols) do parts[i] = pad(vals[i], widths[i], c.right) end
    lines[#lines + 1] = (table.concat(parts, "  "):gsub("%s+$", ""))
  end
  local head = {}
  for i, c in ipairs(cols) do head[i] = c[1] end
  line(head)
  for _, row in ipairs(cells) do line(row) end
  return lines
end

-- "key   value" lines, keys padded to one width.
local function render_fields(fields, indent)
  local w = 0
  for _, f in ipairs(fields) do w = math.max(w, text_width(f[1])) end
  local lines = {}
  for _, f in ipairs(fields) do
    lines[#lines + 1] = (indent or "") .. pad(f[1], w) .. "  " .. cell(f[2])
  end
  return lines
end

local INTERVAL_ORDER = { "weeks", "days", "hours", "minutes", "seconds" }
local INTERVAL_SECS = { weeks = 604800, days = 86400, hours = 3600, minutes = 60, seconds = 1 }
local CRON_ORDER = { "year", "month", "day", "week", "day_of_week", "hour", "minute", "second" }

-- "every 5m", "cron */5 * * * * Europe/Paris", "once".
local function trigger_text(job)
  local args = type(job.trigger_args) == "table" and job.trigger_args or {}
  local zone = type(job.timezone) == "string" and not is_utc(job.timezone) and " " .. job.timezone or ""
  if job.trigger_type == "interval" then
    local secs = 0
    for _, k in ipairs(INTERVAL_ORDER) do
      if type(args[k]) == "number" then secs = secs + args[k] * INTERVAL_SECS[k] end
    end
    return "every " .. duration_text(secs)
  elseif job.trigger_type == "cron" then
    if type(args.cron) == "string" then return "cron " .. args.cron .. zone end
    local parts = {}
    for _, k in ipairs(CRON_ORDER) do
      if args[k] ~= nil then parts[#parts + 1] = k .. "=" .. tostring(args[k]) end
    end
    return "cron " .. table.concat(parts, " ") .. zone
  elseif job.trigger_type == "date" then
    return "once"
  end
  return "-"
end

-- "scheduled", or "scheduled (retry 2/3)" while a retry is under way (a
-- failed job keeps the count of the retries it used).
local function status_text(job)
  local s = tostring(job.status or "?")
  local n = math.tointeger(job.retry_count)
  if n and n > 0 and (s == "scheduled" or s == "running") then
    s = ("%s (retry %d/%s)"):format(s, n, tostring(job.max_retries or "?"))
  end
  return s
end

-- ---- options ----

-- Option specs: { name, ARG (nil for a flag), help, many = repeatable }.
local COMMON = {
  { "storage", "URL", "the store (default: CHRONIS_STORAGE, else sqlite:chronis.db)" },
  { "json", nil, "print one JSON document on stdout instead of text" },
  { "help", nil, "show this help" },
}

local F_STATUS = { "status", "S", "pending, scheduled, running, paused, failed or completed; repeat "
  .. "it or give a comma list", many = true }
local F_NAME = { "name", "NAME", "jobs named NAME (exactly)" }
local F_HANDLER = { "handler", "NAME", "jobs of the handler NAME (func_name, exactly)" }
local F_META = { "meta", "KEY=VALUE", "metadata.KEY equal to VALUE (read as JSON when it is JSON, "
  .. "else a string; repeatable)", many = true }
local F_DUE_BEFORE = { "due-before", "TIME", "next run at or before TIME" }
local F_DUE_AFTER = { "due-after", "TIME", "next run at or after TIME" }

local LIST_FILTERS = { F_STATUS, F_NAME, F_HANDLER, F_META, F_DUE_BEFORE, F_DUE_AFTER }

local TIME_NOTE = "TIME is ISO-8601 (2025-01-15T10:00:00Z; without an offset, in the machine's "
  .. "zone), 'now', or a duration from now: 10m, 2h, -30m (past). Durations: 30s, 5m, 2h, 1d, 1w, "
  .. "or sums like 1h30m."

local commands = {}
local order = {}

local function command(name, spec)
  spec.name = name
  commands[name] = spec
  order[#order + 1] = name
end

-- The option table of a command: its own, then the common ones.
local function options_of(spec)
  local opts = {}
  for _, o in ipairs(spec.options or {}) do opts[#opts + 1] = o end
  for _, o in ipairs(COMMON) do opts[#opts + 1] = o end
  return opts
end

local function full_name(spec)
  return spec.top and spec.name or "jobs " .. spec.name
end

local function help_text(spec)
  local out = { "usage: chronis " .. full_name(spec) .. (spec.args and " " .. spec.args or "")
    .. " [options]", "", spec.help, "", "options:" }
  local rows = {}
  for _, o in ipairs(options_of(spec)) do
    rows[#rows + 1] = { "--" .. o[1] .. (o[2] and " " .. o[2] or ""), o[3] }
  end
  local w = 0
  for _, r in ipairs(rows) do w = math.max(w, #r[1]) end
  for _, r in ipairs(rows) do out[#out + 1] = "  " .. pad(r[1], w) .. "  " .. r[2] end
  if spec.note then
    out[#out + 1] = ""
    out[#out + 1] = spec.note
  end
  if spec.examples then
    out[#out + 1] = ""
    out[#out + 1] = "examples:"
    for _, e in ipairs(spec.examples) do out[#out + 1] = "  " .. e end
  end
  return table.concat(out, "\n") .. "\n"
end

local function see_help(spec)
  return ("see 'chronis %s --help'"):format(full_name(spec))
end

-- Parses args[first..] for a command: the option values by name (a list
-- for repeatable ones, true for flags) and the positional arguments.
local function parse_args(spec, args, first)
  local known, names = {}, {}
  for _, o in ipairs(options_of(spec)) do
    known[o[1]] = o
    names[#names + 1] = o[1]
  end
  local opts, pos = {}, {}
  local i, only_pos = first, false
  while i <= #args do
    local a = args[i]
    if only_pos or a == "-" or a:sub(1, 1) ~= "-" then
      pos[#pos + 1] = a
    elseif a == "--" then
      only_pos = true
    elseif a == "-h" then
      opts.help = true
    else
      local name, value = a:match("^%-%-([^=]+)=(.*)$")
      name = name or a:match("^%-%-(.+)$")
      local o = name and known[name]
      if not o then
        usage_error(("unknown option '%s' for 'chronis %s'%s"):format(a, full_name(spec),
          did_you_mean(name or a, names, "--")), see_help(spec))
      end
      if o[2] == nil then
        if value then usage_error(("option --%s takes no value"):format(name), see_help(spec)) end
        opts[name] = true
      else
        if not value then
          i = i + 1
          value = args[i]
          -- An option where the value belongs: the value is missing.
          if value == nil or known[value:match("^%-%-([^=]+)") or ""] then
            usage_error(("option --%s needs a value (%s)"):format(name, o[2]), see_help(spec))
          end
        end
        if o.many then
          opts[name] = opts[name] or {}
          opts[name][#opts[name] + 1] = value
        elseif opts[name] ~= nil then
          usage_error(("option --%s is given twice"):format(name), see_help(spec))
        else
          opts[name] = value
        end
      end
    end
    i = i + 1
  end
  return opts, pos
end

local function count_opt(opts, name, default, min)
  local v = opts[name]
  if v == nil then return default end
  local n = v:match("^%d+$") and math.tointeger(tonumber(v))
  if not n or n < min then
    usage_error(("--%s: expected an integer of %d or more, got %q"):format(name, min, v))
  end
  return n
end

-- A --meta KEY=VALUE: the key, and the value as JSON when it reads as
-- JSON, else the text.
local function meta_pair(s)
  local k, v = s:match("^([^=]+)=(.*)$")
  if not k or k:match("^%s*$") then
    usage_error(("--meta: expected KEY=VALUE, got %q"):format(s))
  end
  local ok, decoded = pcall(json.decode, v)
  if ok and v:match("%S") then return k, decoded end
  return k, v
end

local function list_opt(values)
  local out = {}
  for _, v in ipairs(values or {}) do
    for part in v:gmatch("[^,]+") do
      part = part:match("^%s*(.-)%s*$")
      if part ~= "" then out[#out + 1] = part end
    end
  end
  return out
end

-- `opt` names the option as the error says it: "--status".
local function check_choice(opt, v, choices)
  for _, c in ipairs(choices) do
    if v == c then return v end
  end
  local mean = did_you_mean(v, choices)
  usage_error(("%s: unknown value '%s'%s"):format(opt, v,
    mean ~= "" and mean or " (expected " .. table.concat(choices, ", ") .. ")"))
end

local function option_name(name)
  return "--" .. name
end

-- The Scheduler filters of the filter options given; name_of(option)
-- words an option in errors (default "--status").
local function job_filters(ctx, opts, name_of)
  name_of = name_of or option_name
  local f = {}
  local st = list_opt(opts.status)
  for _, s in ipairs(st) do check_choice(name_of("status"), s, STATUSES) end
  if #st == 1 then f.status = st[1] elseif #st > 1 then f.status = st end
  if opts.name then f.name = opts.name end
  if opts.handler then f.func_name = opts.handler end
  for _, m in ipairs(opts.meta or {}) do
    local k, v = meta_pair(m)
    f["metadata." .. k] = v
  end
  for opt, key in pairs({ ["due-before"] = "next_run_time_lte", ["due-after"] = "next_run_time_gte" }) do
    if opts[opt] then f[key] = ctime.format(parse_time(opts[opt], name_of(opt), ctx.now, ctx.zone)) end
  end
  return f
end

local function has_filters(f)
  return next(f) ~= nil
end

-- ---- the store ----

local function storage_url(ctx, opts)
  return opts.storage or ctx.getenv("CHRONIS_STORAGE") or DEFAULT_STORAGE
end

-- A SQLite store read by a command that only reads or changes jobs is
-- never created by it: a mistyped path or the wrong working folder
-- would give an empty store instead of an error.
local function check_sqlite_exists(url)
  local path = url:match("^sqlite:([^?]*)")
  if not path or path == ":memory:" or path == "" or path:find("%", 1, true) then return end
  path = path:gsub("^//", "")
  local f = io.open(path, "rb")
  if f then
    f:close()
    return
  end
  failure(("the store %s does not exist (no file %s); give the store with --storage URL or "
    .. "CHRONIS_STORAGE"):format(url, path))
end

-- Opens a scheduler on the command's store, not started.
local function open(ctx, opts, creates)
  local url = storage_url(ctx, opts)
  if not creates then check_sqlite_exists(url) end
  local ok, sched = pcall(chronis.scheduler, { storage = url })
  if not ok then
    if type(sched) == "table" and sched.code == "invalid" then
      usage_error(("--storage: %s"):format(sched.message))
    end
    error(sched, 0)
  end
  -- Jobs added here run in the processes that have their handlers: no
  -- warning that this one has none.
  sched._remote = true
  ctx.sched = sched
  ctx.url = url
  return sched
end

local function get_job(ctx, id)
  local ok, job = pcall(ctx.sched.get_job, ctx.sched, id)
  if ok then
    if not job then failure(("job '%s' not found"):format(id), "not_found") end
    return job
  end
  -- A record that cannot be read in full: what can be read, and why.
  if type(job) == "table" and job.code == "invalid" then
    local got = ctx.sched:query_jobs({ job_id_in = { id } }, 1)
    if got[1] then return got[1] end
  end
  error(job, 0)
end

-- The run history, or nil and why there is none: a store written in Lua
-- without query_runs keeps no runs (docs/history.md).
local function history(ctx, filters, limit, offset)
  local ok, runs = pcall(ctx.sched.history, ctx.sched, filters, limit, offset)
  if ok then return runs end
  if type(runs) == "table" and runs.code == "unsupported" then
    return nil, "this store keeps no run history"
  end
  error(runs, 0)
end

local function out(ctx, s)
  ctx.out(s)
end

local function emit_json(ctx, doc)
  out(ctx, encode(doc) .. "\n")
end

local function emit_lines(ctx, lines)
  if #lines > 0 then out(ctx, table.concat(lines, "\n") .. "\n") end
end

-- ---- showing times ----

-- A time in UTC, in the machine's zone and (for a job's next run) its own,
-- and from now: "2025-01-15 10:00:00 UTC (11:00:00 CET), in 4m".
local function time_line(ctx, t, job_zone)
  local us = us_of(t)
  if not us then return t == nil and "-" or tostring(t) end
  local parts = { short_utc(us) .. " UTC" }
  local zones = {}
  if ctx.zone then zones[#zones + 1] = ctx.zone end
  if job_zone and not is_utc(job_zone) and job_zone ~= ctx.zone then zones[#zones + 1] = job_zone end
  local locals = {}
  for _, z in ipairs(zones) do
    local ok, text = pcall(short_local, us, z)
    if ok then locals[#locals + 1] = text .. (z == job_zone and z ~= ctx.zone and " " .. z or "") end
  end
  if #locals > 0 then parts[1] = parts[1] .. " (" .. table.concat(locals, "; ") .. ")" end
  return parts[1] .. ", " .. relative(us, ctx.now)
end

local function next_run_cell(ctx, job)
  local us = us_of(job.next_run_time)
  if not us then return "-", "" end
  return short_utc(us), relative(us, ctx.now)
end

-- ---- commands ----

local function job_rows(ctx, jobs)
  local rows = {}
  for _, j in ipairs(jobs) do
    local nrt, rel = next_run_cell(ctx, j)
    rows[#rows + 1] = { j.job_id, j.name, j.func_name, status_text(j), nrt, rel, trigger_text(j) }
  end
  return rows
end

local JOB_COLS = {
  { "ID", max = 36 }, { "NAME", max = 24 }, { "HANDLER", max = 24 }, { "STATUS", max = 24 },
  { "NEXT RUN (UTC)" }, { "" }, { "TRIGGER", max = 40 },
}

local function unreadable_notes(jobs)
  local lines = {}
  for _, j in ipairs(jobs) do
    if j.unreadable then
      lines[#lines + 1] = ("! job '%s' cannot be read in full: %s"):format(cell(j.job_id), cell(j.unreadable))
    end
  end
  return lines
end

local function json_text(v)
  local ok, s = pcall(json.encode, v)
  return ok and s or tostring(v)
end

-- A queue name as the core takes it (docs/queues.md, the core's own rule);
-- `what` words the option in errors.
local function check_queue(q, what)
  if type(q) ~= "string" or require("chronis.core").queue_name_problem(q) then
    usage_error(("%s: expected a queue name (1 to 64 letters, digits, '_', '.', ':' or '-'), got %s")
      :format(what, type(q) == "string" and ("%q"):format(q) or json_text(q)))
  end
  return q
end

local QUEUE_PAGE = 500

-- The jobs of `filters` in the queue q, their count, and the page of them
-- from offset. A job's queue is no filter the stores know (docs/api.md),
-- so this reads every job the other filters match, a page at a time.
local function queue_jobs(sched, filters, q, limit, offset)
  local matched, from = {}, 0
  while true do
    local page = sched:query_jobs(filters, QUEUE_PAGE, from)
    for _, j in ipairs(page) do
      if (j.queue or "default") == q then matched[#matched + 1] = j end
    end
    if #page < QUEUE_PAGE then break end
    from = from + #page
  end
  return table.move(matched, offset + 1, math.min(#matched, offset + limit), 1, {}), #matched
end

command("list", {
  args = nil,
  summary = "list jobs, next run first, a page at a time",
  help = "Lists the jobs that match every filter given, next run first (jobs without one last),\n"
    .. "--limit at a time. --queue is matched here rather than by the store: it reads every job\n"
    .. "the other filters match.",
  options = { F_STATUS, F_NAME, F_HANDLER, F_META, F_DUE_BEFORE, F_DUE_AFTER,
    { "queue", "NAME", "jobs of the queue NAME ('default': jobs without a queue)" },
    { "limit", "N", "jobs shown (default 50)" },
    { "offset", "N", "jobs skipped first, to page (default 0)" } },
  note = TIME_NOTE,
  examples = { "chronis jobs list --status failed,paused", "chronis jobs list --meta tenant=acme --due-before 1h",
    "chronis jobs list --handler send_email --limit 20 --offset 20 --json" },
  run = function(ctx, opts, pos)
    if pos[1] then usage_error(("unexpected argument '%s'"):format(pos[1]), "see 'chronis jobs list --help'") end
    local filters = job_filters(ctx, opts)
    local limit = count_opt(opts, "limit", 50, 1)
    local offset = count_opt(opts, "offset", 0, 0)
    local queue = opts.queue and check_queue(opts.queue, "--queue")
    local sched = open(ctx, opts)
    local total, jobs
    if queue then
      jobs, total = queue_jobs(sched, filters, queue, limit, offset)
    else
      total = sched:count_jobs(filters)
      jobs = offset < total and sched:query_jobs(filters, limit, offset) or {}
    end
    if ctx.json then
      emit_json(ctx, object { jobs = array(jobs), total = total, offset = offset, limit = limit })
      return 0
    end
    if total == 0 then
      out(ctx, (queue or has_filters(filters)) and "no jobs match\n" or "no jobs\n")
      return 0
    end
    local lines = {}
    if #jobs > 0 then lines = render_table(JOB_COLS, job_rows(ctx, jobs)) end
    for _, l in ipairs(unreadable_notes(jobs)) do lines[#lines + 1] = l end
    local last = offset + #jobs
    if #jobs == 0 then
      lines[#lines + 1] = ("showing none of %d (--offset %d is past the end)"):format(total, offset)
    elseif last < total then
      lines[#lines + 1] = ("showing %d-%d of %d; --offset %d for more"):format(offset + 1, last, total, last)
    elseif offset == 0 then
      lines[#lines + 1] = ("%d job%s"):format(total, total == 1 and "" or "s")
    else
      lines[#lines + 1] = ("showing %d-%d of %d"):format(offset + 1, last, total)
    end
    emit_lines(ctx, lines)
    return 0
  end,
})

-- The fields `show` lays out itself; the others follow as JSON.
local SHOWN = {}
for _, k in ipairs({ "job_id", "name", "func_name", "status", "trigger_type", "trigger_args", "timezone",
  "next_run_time", "next_run_time_local", "priority", "max_retries", "retry_count", "retry_delay_seconds",
  "timeout_seconds", "if_missed", "misfire_threshold_seconds", "attempt", "created_at", "updated_at",
  "queue", "on_exhausted", "max_instances", "overlap", "retry_slot", "queued_slot", "last_run_time",
  "last_scheduled_time", "last_run_at", "last_outcome", "last_error", "failure_count",
  "consecutive_failures", "progress", "claimed_by", "lease_until", "args", "kwargs", "metadata",
  "unreadable" }) do
  SHOWN[k] = true
end

local RUN_COLS_JOB = {
  { "STARTED (UTC)" }, { "" }, { "OUTCOME" }, { "DURATION", right = true }, { "ATTEMPT", right = true },
  { "ERROR", max = 60 },
}

-- "message", with the code first when the outcome does not say it
-- ("lease_expired: ..." for an error).
local function error_text(code, message, outcome)
  if message == nil and code == nil then return "" end
  local prefix = code ~= nil and code ~= outcome and code ~= "error" and tostring(code) .. ": " or ""
  return prefix .. tostring(message or "")
end

local function run_error(r)
  return error_text(r.error_code, r.error_message, r.outcome)
end

local function run_rows(ctx, runs, with_job)
  local rows = {}
  for _, r in ipairs(runs) do
    local us = us_of(r.started_at)
    local row = { us and short_utc(us) or "-", us and relative(us, ctx.now) or "" }
    if with_job then row[#row + 1] = r.job_id end
    row[#row + 1] = r.outcome
    row[#row + 1] = type(r.duration) == "number" and duration_text(r.duration) or "-"
    row[#row + 1] = r.attempt
    row[#row + 1] = run_error(r)
    rows[#rows + 1] = row
  end
  return rows
end

local RUN_COLS_ALL = {
  { "STARTED (UTC)" }, { "" }, { "JOB", max = 36 }, { "OUTCOME" }, { "DURATION", right = true },
  { "ATTEMPT", right = true }, { "ERROR", max = 60 },
}

command("show", {
  args = "ID",
  summary = "one job in full, with its last error, progress and recent runs",
  help = "Shows one job: every field of its record, its last error and progress, and its most\n"
    .. "recent runs. Times are shown in UTC, in the machine's zone (TZ) when it is not UTC,\n"
    .. "and from now.",
  options = { { "runs", "N", "recent runs shown (default 10; 0: none)" } },
  examples = { "chronis jobs show nightly-report", "chronis jobs show nightly-report --json" },
  run = function(ctx, opts, pos)
    local id = pos[1]
    if not id then usage_error("jobs show needs a job id", "see 'chronis jobs show --help'") end
    if pos[2] then usage_error(("unexpected argument '%s'"):format(pos[2]), "see 'chronis jobs show --help'") end
    local nruns = count_opt(opts, "runs", 10, 0)
    open(ctx, opts)
    local job = get_job(ctx, id)
    local runs, no_runs
    if nruns > 0 then runs, no_runs = history(ctx, id, nruns, 0) end
    if ctx.json then
      emit_json(ctx, object { job = job, runs = runs and array(runs) or json.null })
      return 0
    end
    local function t(v, zone) return v ~= nil and time_line(ctx, v, zone) or nil end
    local fields = {}
    local function add(k, v) if v ~= nil and v ~= "" then fields[#fields + 1] = { k, v } end end
    add("name", job.name)
    add("handler", job.func_name)
    add("status", job.status)
    add("trigger", trigger_text(job))
    add("timezone", job.timezone)
    add("next run", job.next_run_time and t(job.next_run_time, job.timezone) or "-")
    add("priority", job.priority)
    if job.max_retries == 0 then
      add("retries", "none")
    elseif job.max_retries then
      add("retries", ("%s of %s used; the first after %s, then doubling"):format(
        tostring(job.retry_count or 0), tostring(job.max_retries), duration_text(job.retry_delay_seconds or 60)))
    end
    add("timeout", job.timeout_seconds and duration_text(job.timeout_seconds) or "none")
    if job.if_missed then
      add("if missed", ("%s (missed when %s late)"):format(job.if_missed,
        duration_text(job.misfire_threshold_seconds or 60)))
    end
    if job.queue ~= "default" then add("queue", job.queue) end
    add("if exhausted", job.on_exhausted)
    if job.max_instances or job.overlap then
      add("instances", ("%s at once; a slot due while they run %s"):format(tostring(job.max_instances or 1),
        (job.overlap or "queue") == "skip" and "is skipped" or "waits"))
    end
    add("retrying slot", t(job.retry_slot, job.timezone))
    add("waiting slot", t(job.queued_slot, job.timezone))
    add("runs so far", job.attempt)
    add("last run", t(job.last_run_at))
    add("last outcome", job.last_outcome)
    add("last success", t(job.last_run_time))
    add("failures", job.failure_count and ("%s in total, %s in a row"):format(tostring(job.failure_count),
      tostring(job.consecutive_failures or 0)) or nil)
    add("claimed by", job.claimed_by)
    add("lease until", t(job.lease_until))
    add("created", t(job.created_at))
    add("updated", t(job.updated_at))
    add("args", job.args ~= nil and json_text(job.args) or nil)
    add("kwargs", job.kwargs ~= nil and json_text(job.kwargs) or nil)
    add("metadata", job.metadata ~= nil and json_text(job.metadata) or nil)
    local extra = {}
    for k in pairs(job) do
      if not SHOWN[k] then extra[#extra + 1] = k end
    end
    table.sort(extra)
    for _, k in ipairs(extra) do add(k, json_text(job[k])) end
    local lines = { "job " .. cell(job.job_id) }
    for _, l in ipairs(render_fields(fields, "  ")) do lines[#lines + 1] = l end
    if job.unreadable then
      lines[#lines + 1] = "! the record cannot be read in full: " .. cell(job.unreadable)
    end
    local le = job.last_error
    if type(le) == "table" then
      lines[#lines + 1] = ""
      local when = {}
      if le.at then when[#when + 1] = time_line(ctx, le.at) end
      if le.attempt then when[#when + 1] = "attempt " .. tostring(le.attempt) end
      lines[#lines + 1] = "last error" .. (#when > 0 and " (" .. table.concat(when, ", ") .. ")" or "")
      lines[#lines + 1] = "  " .. cell(error_text(le.code, le.message))
    end
    local pg = job.progress
    if type(pg) == "table" then
      lines[#lines + 1] = ""
      lines[#lines + 1] = "progress" .. (pg.at and " (" .. time_line(ctx, pg.at) .. ")" or "")
      lines[#lines + 1] = "  " .. tostring(pg.value) .. (pg.message and " - " .. tostring(pg.message) or "")
    end
    if nruns > 0 then
      lines[#lines + 1] = ""
      if not runs then
        lines[#lines + 1] = "recent runs: none to show (" .. cell(no_runs) .. ")"
      elseif #runs == 0 then
        lines[#lines + 1] = "recent runs: none recorded"
      else
        lines[#lines + 1] = "recent runs"
        for _, l in ipairs(render_table(RUN_COLS_JOB, run_rows(ctx, runs, false))) do
          lines[#lines + 1] = "  " .. l
        end
      end
    end
    emit_lines(ctx, lines)
    return 0
  end,
})

-- ---- add ----

local function json_arg(opt, text, want)
  local ok, v = pcall(json.decode, text)
  local first = text:match("^%s*(.)")
  if not ok or type(v) ~= "table" or first ~= (want == "array" and "[" or "{") then
    usage_error(("--%s: expected a JSON %s, got %q"):format(opt, want, text))
  end
  return v
end

-- An integer option from min to max: v is its text, or a number (JSON).
local function int_arg(v, opt, min, max)
  if v == nil then return nil end
  local n
  if type(v) == "string" then
    n = v:match("^%-?%d+$") and math.tointeger(tonumber(v))
  else
    n = math.tointeger(v)
  end
  if not n or n < min or n > max then
    usage_error(("%s: expected an integer from %d to %d, got %s"):format(opt, min, max,
      type(v) == "string" and ("%q"):format(v) or json_text(v)))
  end
  return n
end

-- A duration option: its text, or a number of seconds (JSON).
local function duration_arg(v, opt)
  if type(v) == "string" then return parse_duration(v, opt) end
  if math.type(v) ~= "integer" or v < 0 or v > MAX_SECONDS then
    usage_error(("%s: expected a duration (like 30s, 5m, 2h, 1d) or whole seconds, got %s"):format(opt,
      json_text(v)))
  end
  return v
end

-- The fields of the job `jobs add` creates, and the Scheduler method that
-- creates it, from options by their --names: one of at, in, every or cron
-- (the caller checks there is one at most), timezone, id, name, args and
-- kwargs (tables), metadata (a table), priority, max-retries, retry-delay,
-- timeout, queue, on-exhausted, max-instances, overlap, and unique (true),
-- unique-key and unique-period (either of which makes the create unique).
-- Values are the texts of the command line or JSON values; name_of(option)
-- words an option in errors (default "--at").
local ON_EXHAUSTED = { "next", "fail", "pause" }
local OVERLAPS = { "queue", "skip" }

local function add_fields(ctx, handler, o, name_of)
  name_of = name_of or option_name
  local f = { func_name = handler, job_id = o.id, name = o.name, timezone = o.timezone,
    args = o.args, kwargs = o.kwargs, metadata = o.metadata }
  if o.timezone and not pcall(tz.info, o.timezone, 0) then
    usage_error(("%s: unknown zone '%s'"):format(name_of("timezone"), o.timezone))
  end
  f.priority = int_arg(o.priority, name_of("priority"), 0, 10)
  f.max_retries = int_arg(o["max-retries"], name_of("max-retries"), 0, 1000000)
  if o["retry-delay"] then f.retry_delay_seconds = duration_arg(o["retry-delay"], name_of("retry-delay")) end
  if o.timeout then
    f.timeout_seconds = duration_arg(o.timeout, name_of("timeout"))
    if f.timeout_seconds == 0 then usage_error(name_of("timeout") .. ": must be longer than 0s") end
  end
  -- The core checks these too; checked here, errors name the option.
  if o.queue ~= nil then f.queue = check_queue(o.queue, name_of("queue")) end
  for opt, choices in pairs({ ["on-exhausted"] = ON_EXHAUSTED, overlap = OVERLAPS }) do
    local v = o[opt]
    if v ~= nil then
      if type(v) ~= "string" then
        usage_error(("%s: expected one of %s, got %s"):format(name_of(opt), table.concat(choices, ", "),
          json_text(v)))
      end
      f[(opt:gsub("%-", "_"))] = check_choice(name_of(opt), v, choices)
    end
  end
  f.max_instances = int_arg(o["max-instances"], name_of("max-instances"), 1, 1000)
  if o.at or o["in"] then
    for _, opt in ipairs({ "on-exhausted", "max-instances", "overlap" }) do
      if o[opt] ~= nil then
        usage_error(("%s: applies to recurring jobs only (--every, --cron)"):format(name_of(opt)))
      end
    end
  end
  if o.unique ~= nil and o.unique ~= true and o.unique ~= false then
    usage_error(("%s: expected true, got %s"):format(name_of("unique"), json_text(o.unique)))
  end
  if o.unique or o["unique-key"] ~= nil or o["unique-period"] ~= nil then
    local u = {}
    local key = o["unique-key"]
    if key ~= nil then
      if type(key) ~= "string" or key == "" or #key > unique.MAX_KEY then
        usage_error(("%s: expected a string of 1 to %d bytes, got %s"):format(name_of("unique-key"),
          unique.MAX_KEY, type(key) ~= "string" and json_text(key) or #key .. " bytes"))
      end
      u.key = key
    end
    if o["unique-period"] ~= nil then
      u.period = duration_arg(o["unique-period"], name_of("unique-period"))
      if u.period == 0 or u.period > unique.MAX_PERIOD then
        usage_error(("%s: expected from 1s to %s, got %s"):format(name_of("unique-period"),
          duration_text(unique.MAX_PERIOD), duration_text(u.period)))
      end
    end
    if o.id ~= nil then
      usage_error(("%s: a unique job's id is derived from its key; drop one of them"):format(name_of("id")))
    end
    f.unique = next(u) and u or true
  end
  if o.at or o["in"] then
    local when
    if o.at then
      when = parse_time(o.at, name_of("at"), ctx.now, o.timezone or ctx.zone)
    else
      when = ctx.now + parse_duration(o["in"], name_of("in")) * S
    end
    f.trigger_args = { run_date = ctime.format(when) }
    return f, "create_date_job"
  elseif o.every then
    local secs, parts = parse_duration(o.every, name_of("every"))
    if secs == 0 then usage_error(name_of("every") .. ": the interval must be longer than 0s") end
    f.trigger_args = {}
    for u, n in pairs(parts) do f.trigger_args[UNIT_KEYS[u]] = n end
    return f, "create_interval_job"
  elseif o.cron then
    f.trigger_args = { cron = o.cron }
    return f, "create_cron_job"
  end
  return f, "create_job"
end

command("add", {
  args = "HANDLER",
  summary = "create a one-shot, interval or cron job",
  help = "Creates a job that runs the handler HANDLER: once (--at TIME or --in DURATION),\n"
    .. "at an interval (--every DURATION) or on a cron schedule (--cron EXPR). Prints the new\n"
    .. "job's id and next run. The handler need not exist here: a scheduler running it\n"
    .. "elsewhere does.",
  options = {
    { "at", "TIME", "run once at TIME" },
    { "in", "DURATION", "run once, DURATION from now" },
    { "every", "DURATION", "run every DURATION (the first run one DURATION from now)" },
    { "cron", "EXPR", "run on a crontab schedule, '*/5 * * * *'" },
    { "timezone", "ZONE", "the job's zone: of --cron, and of a --at time without an offset (default UTC)" },
    { "id", "ID", "the job id (default: HANDLER_<time>_<random>)" },
    { "name", "NAME", "a name to show (default: HANDLER in Title Case)" },
    { "args", "JSON", "positional arguments, a JSON array" },
    { "kwargs", "JSON", "keyword arguments, a JSON object" },
    { "meta", "KEY=VALUE", "metadata (VALUE read as JSON when it is JSON, else a string; repeatable)",
      many = true },
    { "priority", "N", "0 to 10, higher first (default 5)" },
    { "max-retries", "N", "retries after a failed run (default 0)" },
    { "retry-delay", "DURATION", "wait before the first retry, doubled at each (default 60s)" },
    { "timeout", "DURATION", "longest a run may take (default: none)" },
    { "queue", "NAME", "the queue the job runs in (default: default)" },
    { "on-exhausted", "WHAT", "after a failed run with no retry left: next, fail or pause (default next)" },
    { "max-instances", "N", "runs of the job going on at once, 1 to 1000 (default 1)" },
    { "overlap", "WHAT", "a slot due while max-instances runs go on: queue (waits) or skip (default queue)" },
    { "unique", nil, "reuse the job an identical create made less than a period ago, if any" },
    { "unique-key", "KEY", "--unique, by KEY instead of the job's handler and arguments" },
    { "unique-period", "DURATION", "--unique, for DURATION from the job's creation (default 60s)" },
  },
  note = TIME_NOTE,
  examples = { "chronis jobs add send_report --cron '0 9 * * mon-fri' --timezone Europe/Paris",
    "chronis jobs add cleanup --every 30m --meta tenant=acme", "chronis jobs add ping --in 10m --kwargs '{\"host\":\"db1\"}'" },
  run = function(ctx, opts, pos)
    local handler = pos[1]
    if not handler then usage_error("jobs add needs a HANDLER name", "see 'chronis jobs add --help'") end
    if pos[2] then usage_error(("unexpected argument '%s'"):format(pos[2]), "see 'chronis jobs add --help'") end
    local triggers = {}
    for _, k in ipairs({ "at", "in", "every", "cron" }) do
      if opts[k] then triggers[#triggers + 1] = "--" .. k end
    end
    if #triggers ~= 1 then
      usage_error(#triggers == 0 and "jobs add needs a trigger: --at, --in, --every or --cron"
        or ("jobs add takes one trigger, got %s"):format(table.concat(triggers, " and ")),
        "see 'chronis jobs add --help'")
    end
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    if opts.args then o.args = json_arg("args", opts.args, "array") end
    if opts.kwargs then o.kwargs = json_arg("kwargs", opts.kwargs, "object") end
    for _, m in ipairs(opts.meta or {}) do
      local k, v = meta_pair(m)
      o.metadata = o.metadata or {}
      o.metadata[k] = v
    end
    local f, create = add_fields(ctx, handler, o)
    local sched = open(ctx, opts, true)
    local ok, job, existed = pcall(sched[create], sched, f)
    if not ok then
      if type(job) == "table" and job.code == "invalid" then usage_error(job.message, "see 'chronis jobs add --help'") end
      error(job, 0)
    end
    if ctx.json then
      local doc = object { job = job }
      if f.unique then doc.existed = existed == true end
      emit_json(ctx, doc)
      return 0
    end
    local nrt = us_of(job.next_run_time)
    out(ctx, ("%s job %s (%s), next run %s\n"):format(
      existed and "unique: found the existing" or "created", job.job_id, trigger_text(job),
      nrt and time_line(ctx, nrt, job.timezone) or "none (" .. tostring(job.status) .. ")"))
    return 0
  end,
})

-- ---- status changes ----

local function one_id(name, pos)
  if not pos[1] then usage_error(("jobs %s needs a job id"):format(name), ("see 'chronis jobs %s --help'"):format(name)) end
  if pos[2] then
    usage_error(("unexpected argument '%s'"):format(pos[2]), ("see 'chronis jobs %s --help'"):format(name))
  end
  return pos[1]
end

local function change(name, spec, method, say)
  spec.args = spec.args or "ID"
  spec.run = spec.run or function(ctx, opts, pos)
    local id = one_id(name, pos)
    local sched = open(ctx, opts)
    local job = sched[method](sched, id)
    if ctx.json then
      emit_json(ctx, object { job = job })
    else
      out(ctx, say(ctx, job) .. "\n")
    end
    return 0
  end
  command(name, spec)
end

local function next_run_words(ctx, job)
  local us = us_of(job.next_run_time)
  return us and ("next run " .. time_line(ctx, us, job.timezone)) or "no next run"
end

change("pause", {
  summary = "pause a scheduled or pending job",
  help = "Pauses a job: it keeps its record and next run time but no scheduler claims it until\n"
    .. "it is resumed. Applies to scheduled and pending jobs (exit 1 otherwise).",
  examples = { "chronis jobs pause nightly-report" },
}, "pause_job", function(_, job) return ("paused job %s"):format(job.job_id) end)

change("resume", {
  summary = "resume a paused job",
  help = "Resumes a paused job: it is scheduled again at its next run time (a time already\n"
    .. "past makes it due at once, as its if_missed policy says). Paused jobs only.",
  examples = { "chronis jobs resume nightly-report" },
}, "resume_job", function(ctx, job) return ("resumed job %s: %s"):format(job.job_id, next_run_words(ctx, job)) end)

change("run", {
  summary = "make a job due now",
  help = "Makes a job due now (next run time = now, status scheduled, retry count 0): a\n"
    .. "scheduler running on this store picks it up at its next poll. From scheduled,\n"
    .. "pending, paused, failed or completed (a completed one-shot job runs again); a\n"
    .. "recurring job then goes on with its schedule.",
  examples = { "chronis jobs run nightly-report" },
}, "run_job_now", function(_, job)
  return ("job %s is due now: a scheduler running on this store starts it"):format(job.job_id)
end)

command("retry", {
  args = "ID|--all",
  summary = "put failed jobs back to scheduled, due now",
  help = "Puts a failed job back to scheduled, due now, with its retry count at 0; with --all,\n"
    .. "every failed job that matches the filters. A job that is not failed is an error\n"
    .. "(exit 1) with an ID, and left alone with --all.",
  options = { { "all", nil, "every failed job matching the filters" }, F_NAME, F_HANDLER, F_META },
  examples = { "chronis jobs retry report-42", "chronis jobs retry --all --handler send_email" },
  run = function(ctx, opts, pos)
    if opts.all then
      if pos[1] then usage_error("jobs retry takes an ID or --all, not both", "see 'chronis jobs retry --help'") end
      local filters = job_filters(ctx, opts)
      local sched = open(ctx, opts)
      local n, ids = sched:retry_jobs(filters)
      if ctx.json then
        emit_json(ctx, object { retried = n, job_ids = array(ids) })
      else
        out(ctx, n == 0 and "no failed jobs match\n"
          or ("retried %d failed job%s: due now\n"):format(n, n == 1 and "" or "s"))
      end
      return 0
    end
    for _, k in ipairs({ "name", "handler", "meta" }) do
      if opts[k] then usage_error(("--%s filters jobs for --all only"):format(k), "see 'chronis jobs retry --help'") end
    end
    local id = one_id("retry", pos)
    local sched = open(ctx, opts)
    local job = sched:retry_job(id)
    if ctx.json then
      emit_json(ctx, object { job = job })
    else
      out(ctx, ("job %s is scheduled again, due now (retry count 0)\n"):format(job.job_id))
    end
    return 0
  end,
})

command("delete", {
  args = "ID|--all",
  summary = "delete a job, or every job matching the filters",
  help = "Deletes a job, whatever its status (a run under way finishes, but its result is not\n"
    .. "written back). With --all, deletes every job that matches the filters (no filter: every\n"
    .. "job of the store): without --yes it deletes nothing, says how many jobs it would\n"
    .. "delete and exits 2.",
  options = { { "all", nil, "every job matching the filters" },
    { "yes", nil, "confirm --all" }, F_STATUS, F_NAME, F_HANDLER, F_META, F_DUE_BEFORE, F_DUE_AFTER },
  note = TIME_NOTE,
  examples = { "chronis jobs delete report-42", "chronis jobs delete --all --status failed --meta tenant=acme --yes" },
  run = function(ctx, opts, pos)
    if not opts.all then
      for _, k in ipairs({ "yes", "status", "name", "handler", "meta", "due-before", "due-after" }) do
        if opts[k] then
          usage_error(("--%s applies to --all only"):format(k), "see 'chronis jobs delete --help'")
        end
      end
      local id = one_id("delete", pos)
      local sched = open(ctx, opts)
      sched:delete_job(id)
      if ctx.json then
        emit_json(ctx, object { deleted = 1, job_ids = array { id } })
      else
        out(ctx, ("deleted job %s\n"):format(id))
      end
      return 0
    end
    if pos[1] then usage_error("jobs delete takes an ID or --all, not both", "see 'chronis jobs delete --help'") end
    local filters = job_filters(ctx, opts)
    local sched = open(ctx, opts)
    if not opts.yes then
      local n = sched:count_jobs(filters)
      if ctx.json then emit_json(ctx, object { deleted = 0, would_delete = n }) end
      usage_error(("--all would delete %d job%s%s; add --yes to delete %s"):format(n, n == 1 and "" or "s",
        has_filters(filters) and "" or " (every job of the store)", n == 1 and "it" or "them"))
    end
    local n, ids = sched:delete_jobs(filters)
    if ctx.json then
      emit_json(ctx, object { deleted = n, job_ids = array(ids) })
    else
      out(ctx, ("deleted %d job%s\n"):format(n, n == 1 and "" or "s"))
    end
    return 0
  end,
})

-- ---- history ----

command("history", {
  args = "[ID]",
  summary = "recent runs of a job, or of the jobs matching filters",
  help = "Lists recorded runs, newest first: of the job ID, or of every job matching the filters.",
  options = {
    { "outcome", "O", "ok, error, timeout, skipped, interrupted, snoozed or cancelled; repeat it or give a comma list",
      many = true },
    { "since", "TIME", "runs started at or after TIME (a duration counts back: 1h = an hour ago)" },
    { "until", "TIME", "runs started at or before TIME" },
    F_HANDLER, F_META,
    { "limit", "N", "runs shown (default 20)" },
    { "offset", "N", "runs skipped first, to page (default 0)" },
  },
  note = TIME_NOTE,
  examples = { "chronis jobs history nightly-report", "chronis jobs history --outcome error,timeout --since 2h" },
  run = function(ctx, opts, pos)
    if pos[2] then usage_error(("unexpected argument '%s'"):format(pos[2]), "see 'chronis jobs history --help'") end
    local f = {}
    if pos[1] then f.job_id = pos[1] end
    local oc = list_opt(opts.outcome)
    for _, o in ipairs(oc) do check_choice("--outcome", o, OUTCOMES) end
    if #oc == 1 then f.outcome = oc[1] elseif #oc > 1 then f.outcome = oc end
    if opts.since then f.started_at_gte = ctime.format(parse_time(opts.since, "--since", ctx.now, ctx.zone, true)) end
    if opts["until"] then f.started_at_lte = ctime.format(parse_time(opts["until"], "--until", ctx.now, ctx.zone)) end
    if opts.handler then f.func_name = opts.handler end
    for _, m in ipairs(opts.meta or {}) do
      local k, v = meta_pair(m)
      f["metadata." .. k] = v
    end
    local limit = count_opt(opts, "limit", 20, 1)
    local offset = count_opt(opts, "offset", 0, 0)
    local sched = open(ctx, opts)
    if pos[1] then
      -- Runs outlive their job: only an id with neither is unknown. A
      -- record that cannot be read in full (invalid) exists.
      local found, job = pcall(sched.get_job, sched, pos[1])
      if not found and not (type(job) == "table" and job.code == "invalid") then error(job, 0) end
      if found and not job then
        local runs = history(ctx, { job_id = pos[1] }, 1, 0)
        if not runs or #runs == 0 then failure(("job '%s' not found"):format(pos[1]), "not_found") end
      end
    end
    local runs, why = history(ctx, f, limit + 1, offset)
    if not runs then failure("no run history: " .. why, "unsupported") end
    local more = #runs > limit
    if more then runs[#runs] = nil end
    if ctx.json then
      emit_json(ctx, object { runs = array(runs), offset = offset, limit = limit, more = more })
      return 0
    end
    if #runs == 0 then
      out(ctx, offset > 0 and "no more runs\n" or "no runs recorded\n")
      return 0
    end
    local lines = render_table(pos[1] and RUN_COLS_JOB or RUN_COLS_ALL, run_rows(ctx, runs, not pos[1]))
    local last = offset + #runs
    if offset == 0 and not more then
      lines[#lines + 1] = ("%d run%s"):format(#runs, #runs == 1 and "" or "s")
    else
      lines[#lines + 1] = ("showing runs %d-%d%s"):format(offset + 1, last,
        more and ("; --offset %d for more"):format(last) or "")
    end
    emit_lines(ctx, lines)
    return 0
  end,
})

-- ---- stats ----

local FAILED_OUTCOMES = { error = true, timeout = true }
-- The last hour's runs are counted from the history in one read of the
-- newest HISTORY_CAP: past that the count stops (a busy store runs far more
-- in an hour, and the dashboard asks every few seconds), and `capped` says
-- the figures are a floor. One read, not pages: each page would make the
-- store find the newest runs again.
local HISTORY_CAP = 10000
local HISTORY_PAGE = HISTORY_CAP

-- What `stats` reports of ctx.sched's store: the counts by status, the
-- due jobs and the oldest of them, the last hour's runs (nil and why when
-- the store keeps no history).
local function gather_stats(ctx)
  local sched = ctx.sched
  local st = { by_status = {}, total = 0, since = ctx.now - 3600 * S }
  for _, status in ipairs(STATUSES) do
    st.by_status[status] = sched:count_jobs { status = status }
    st.total = st.total + st.by_status[status]
  end
  local due_f = { status = "scheduled", next_run_time_lte = ctime.format(ctx.now) }
  st.due_n = sched:count_jobs(due_f)
  st.oldest = st.due_n > 0 and sched:query_jobs(due_f, 1)[1] or nil
  st.oldest_us = st.oldest and us_of(st.oldest.next_run_time)
  local hour = { runs = 0, failures = 0, by_outcome = object() }
  local offset = 0
  while true do
    local runs, why = history(ctx, { started_at_gte = ctime.format(st.since) }, HISTORY_PAGE, offset)
    if not runs then
      st.no_history = why
      return st
    end
    for _, r in ipairs(runs) do
      hour.runs = hour.runs + 1
      local o = tostring(r.outcome)
      hour.by_outcome[o] = (hour.by_outcome[o] or 0) + 1
      if FAILED_OUTCOMES[r.outcome] then hour.failures = hour.failures + 1 end
    end
    if #runs < HISTORY_PAGE then break end
    offset = offset + #runs
    if offset >= HISTORY_CAP then
      hour.capped = true
      break
    end
  end
  st.hour = hour
  return st
end

-- The document of `stats --json`.
local function stats_json(ctx, st)
  local last_hour = json.null
  if st.hour then
    last_hour = object { since = ctime.format(st.since), runs = st.hour.runs, failures = st.hour.failures,
      by_outcome = st.hour.by_outcome, capped = st.hour.capped }
  end
  local oldest = st.oldest
  return object {
    jobs = object { total = st.total, by_status = object(st.by_status) },
    due = object { count = st.due_n, oldest = oldest and object {
      job_id = oldest.job_id, next_run_time = oldest.next_run_time,
      late_seconds = st.oldest_us and (ctx.now - st.oldest_us) // S or json.null } or json.null },
    last_hour = last_hour,
    no_history = st.no_history,
  }
end

command("stats", {
  top = true,
  summary = "jobs by status, the last hour's runs, the oldest due job",
  help = "Counts the store's jobs by status, the runs and failures (outcome error or timeout) of\n"
    .. "the last hour from the run history, and finds the oldest due job: scheduled, next run\n"
    .. "time past, and how late it is (a late job means no scheduler is running, or they are\n"
    .. "all busy).",
  examples = { "chronis stats", "chronis stats --storage postgres://app@db/jobs --json" },
  run = function(ctx, opts, pos)
    if pos[1] then usage_error(("unexpected argument '%s'"):format(pos[1]), "see 'chronis stats --help'") end
    open(ctx, opts)
    local st = gather_stats(ctx)
    if ctx.json then
      emit_json(ctx, stats_json(ctx, st))
      return 0
    end
    local by_status, total, due_n, oldest, oldest_us, hour = st.by_status, st.total, st.due_n, st.oldest,
      st.oldest_us, st.hour
    local fields = { { "jobs", tostring(total) } }
    for _, st in ipairs(STATUSES) do fields[#fields + 1] = { "  " .. st, tostring(by_status[st]) } end
    local w = 0
    for _, f in ipairs(fields) do w = math.max(w, #f[2]) end
    for _, f in ipairs(fields) do f[2] = pad(f[2], w, true) end
    if due_n == 0 then
      fields[#fields + 1] = { "due now", "none" }
    else
      fields[#fields + 1] = { "due now", ("%d; oldest %s, due %s UTC, %s late"):format(due_n, oldest.job_id,
        oldest_us and short_utc(oldest_us) or "?", oldest_us and duration_text((ctx.now - oldest_us) // S, true) or "?") }
    end
    if hour then
      local parts = {}
      for _, o in ipairs(OUTCOMES) do
        if hour.by_outcome[o] then parts[#parts + 1] = hour.by_outcome[o] .. " " .. o end
      end
      fields[#fields + 1] = { "last hour", ("%s%d run%s, %d failed%s"):format(hour.capped and "at least " or "",
        hour.runs, hour.runs == 1 and "" or "s", hour.failures,
        (#parts > 0 and " (" .. table.concat(parts, ", ") .. ")" or "")
          .. (hour.capped and "; counted over the newest " .. hour.runs .. " runs" or "")) }
    else
      fields[#fields + 1] = { "last hour", "no run history (" .. tostring(st.no_history) .. ")" }
    end
    emit_lines(ctx, render_fields(fields))
    return 0
  end,
})

-- ---- help ----

local function jobs_help()
  local lines = { "usage: chronis jobs <command> [ID] [options]", "       chronis stats [options]", "",
    "Lists, shows, creates and changes the jobs of a store, without running them.", "", "commands:" }
  local rows = {}
  for _, name in ipairs(order) do
    local spec = commands[name]
    rows[#rows + 1] = { full_name(spec) .. (spec.args and " " .. spec.args or ""), spec.summary }
  end
  table.insert(rows, #rows, { "jobs help COMMAND", "the options of a command (also COMMAND --help)" })
  local w = 0
  for _, r in ipairs(rows) do w = math.max(w, #r[1]) end
  for _, r in ipairs(rows) do lines[#lines + 1] = "  " .. pad(r[1], w) .. "  " .. r[2] end
  for _, l in ipairs({ "",
    "Every command takes --storage URL (default: CHRONIS_STORAGE, else sqlite:chronis.db) and",
    "--json (one JSON document on stdout).",
    "",
    "exit codes: 0 done; 1 failed (store unreachable, job not found, a status the command does",
    "not apply to); 2 usage error (unknown command or option, bad value, delete --all without",
    "--yes)." }) do
    lines[#lines + 1] = l
  end
  return table.concat(lines, "\n") .. "\n"
end

local function job_commands()
  local names = {}
  for _, n in ipairs(order) do
    if not commands[n].top then names[#names + 1] = n end
  end
  names[#names + 1] = "help"
  return names
end

command("help", {
  args = "[COMMAND]",
  summary = nil,
  help = "Shows the options of a command.",
  run = function(ctx, _, pos)
    local name = pos[1]
    if not name then
      out(ctx, jobs_help())
      return 0
    end
    local spec = commands[name]
    if not spec then
      usage_error(("unknown command '%s'%s"):format(name, did_you_mean(name, job_commands(), "")),
        "see 'chronis jobs --help'")
    end
    out(ctx, help_text(spec))
    return 0
  end,
})
order[#order] = nil -- help is listed by jobs_help itself

-- ---- main ----

local function writer(f)
  return function(s) f:write(s) end
end

-- Closes the command's scheduler and store and lets their handles close.
local function close(ctx)
  local sched = ctx.sched
  if not sched then return end
  ctx.sched = nil
  local store = sched:store()
  pcall(sched.close, sched)
  pcall(store.close, store)
  collectgarbage()
  -- Until the handles open before the command are all that is left (the
  -- one more is run_until's own timer).
  local core = require "chronis.core"
  pcall(chronis.run_until, function() return core.active_handles() <= ctx.handles + 1 end, 2)
end

local function dispatch(ctx, args)
  local top = args[1]
  if top == "stats" then
    local spec = commands.stats
    local opts, pos = parse_args(spec, args, 2)
    if opts.help then
      out(ctx, help_text(spec))
      return 0
    end
    ctx.json = opts.json
    return spec.run(ctx, opts, pos)
  end
  if top ~= "jobs" then
    usage_error(("unknown command '%s'%s"):format(tostring(top), did_you_mean(tostring(top), { "jobs", "stats" }, "")))
  end
  local name = args[2]
  if name == nil then
    ctx.err(jobs_help())
    return 2
  end
  if name == "--help" or name == "-h" then
    out(ctx, jobs_help())
    return 0
  end
  local spec = commands[name]
  if not spec then
    local names = job_commands()
    if name:sub(1, 1) == "-" then
      usage_error(("jobs needs a command before options, got '%s'"):format(name), "see 'chronis jobs --help'")
    end
    usage_error(("unknown command 'jobs %s'%s"):format(name, did_you_mean(name, names, "jobs ")),
      "see 'chronis jobs --help'")
  end
  local opts, pos = parse_args(spec, args, 3)
  if opts.help then
    out(ctx, help_text(spec))
    return 0
  end
  ctx.json = opts.json
  return spec.run(ctx, opts, pos)
end

--- main(args [, io]) -> exit code. args: {"jobs", "list", "--status", ...}
--- or {"stats", ...}. io (for running in-process): out and err, functions
--- that write a string (default: stdout and stderr), getenv (os.getenv).
function M.main(args, io_)
  io_ = io_ or {}
  local ctx = {
    out = io_.out or writer(io.stdout),
    err = io_.err or writer(io.stderr),
    getenv = io_.getenv or os.getenv,
    now = ctime.now(),
    handles = require("chronis.core").active_handles(),
  }
  ctx.zone = machine_zone(ctx.getenv)
  local ok, code = xpcall(dispatch, function(e)
    if type(e) == "table" then return e end
    return { bug = debug.traceback(tostring(e), 2) }
  end, ctx, args or {})
  close(ctx)
  if ok then return code end
  local e = code
  if e.cli_exit then
    local hint = e.hint and not e.message:find("did you mean", 1, true) and " (" .. e.hint .. ")" or ""
    ctx.err(("chronis: %s%s\n"):format(e.message, hint))
    return e.cli_exit
  end
  if e.bug then
    ctx.err("chronis: internal error: " .. e.bug .. "\n")
    return 1
  end
  -- A chronis error: {code, message}.
  ctx.err(("chronis: %s\n"):format(tostring(e.message or e)))
  return 1
end

-- For the specs: the parsers.
M._parse_duration, M._parse_time = parse_duration, parse_time

-- What the HTTP API (chronis.http_api) shares with the commands, so both
-- read filters, check options, render jobs and run actions alike. The
-- functions taking ctx read ctx.sched (a Scheduler), ctx.now (µs) and
-- ctx.zone (the zone of times without an offset; nil: UTC). Their usage
-- errors are tables { code = "invalid", message }, failures { code,
-- message }.
M.lib = {
  STATUSES = STATUSES, OUTCOMES = OUTCOMES,
  did_you_mean = did_you_mean, parse_time = parse_time, list_opt = list_opt,
  check_choice = check_choice, job_filters = job_filters, has_filters = has_filters,
  get_job = get_job, history = history, trigger_text = trigger_text,
  add_fields = add_fields, gather_stats = gather_stats, stats_json = stats_json,
  encode = encode, array = array, object = object, us_of = us_of,
}

return M
