-- chronis.http_api: the JSON API under /api/ of chronis's HTTP server
-- (docs/http.md). The router (chronis.http_server) checks tokens and
-- limits and calls handle(ctx, req) for every path under /api/; the
-- answer is status, headers, body. Reading filters, checking the options
-- of a new job, rendering jobs and stats are the job commands' own
-- (chronis.cli, its `lib`), so the API and `chronis jobs ...` agree; every
-- read and change goes through the Scheduler's methods.
local chronis = require "chronis"
local core = require "chronis.core"
local lib = require("chronis.cli").lib

local M = {}

local json, ctime = chronis.json, chronis.time
local object, array = lib.object, lib.array
local S = 1000000 -- µs in a second

local PAGE_DEFAULT, PAGE_MAX = 50, 1000
local OFFSET_MAX = 1000000000
local SHOW_RUNS, NEXT_RUNS = 20, 5

local JSON_TYPE = "application/json; charset=utf-8"

-- The HTTP status of each error code: the Lua API's codes (chronis.error)
-- and the HTTP-only ones. A job whose status the action does not apply to
-- (invalid_state) and a job id already taken (duplicate) conflict with the
-- store's state; a store without run history cannot answer /api/runs. Any
-- other code is 500.
local STATUS_OF = {
  invalid = 400, unauthorized = 401, read_only = 403, not_found = 404, method_not_allowed = 405,
  conflict = 409, invalid_state = 409, duplicate = 409, too_large = 413, rate_limited = 429,
  unsupported = 501, unavailable = 503, timeout = 503,
}

local MUTATING = { POST = true, PUT = true, PATCH = true, DELETE = true }

-- ---- answers ----

-- Answers are never cached: they are the store's state of the moment.
local function answer(status, doc, headers)
  local h = { ["content-type"] = JSON_TYPE, ["cache-control"] = "no-store" }
  for k, v in pairs(headers or {}) do h[k] = v end
  return status, h, lib.encode(doc)
end

-- Raises an API error: answered as {"error": {"code", "message"}}.
local function fail(code, fmt, ...)
  error({ code = code, message = fmt:format(...) }, 0)
end

local function error_answer(code, message, headers)
  return answer(STATUS_OF[code] or 500, object { error = object { code = code, message = message } },
    headers)
end

-- "2026-12-06T20:31:00.000Z" from µs: UTC, milliseconds always shown.
local function iso_ms(us)
  return ctime.format(us // S * S):sub(1, 19) .. (".%03dZ"):format(us % S // 1000)
end

-- Every byte but the unreserved ones as %XX, for a job id in a path.
local function path_escape(s)
  return (s:gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

-- ---- query parameters ----

local function param_label(name)
  return ("invalid query parameter '%s'"):format((name:gsub("%-", "_")))
end

-- The keys of `t` that are not in the list `known`, sorted; `skip(k)`
-- true passes a key.
local function unknown_keys(t, known, skip)
  local set, out = {}, {}
  for _, n in ipairs(known) do set[n] = true end
  for k in pairs(t) do
    if not set[k] and not (skip and skip(k)) then out[#out + 1] = tostring(k) end
  end
  table.sort(out)
  return out
end

local function is_meta(k)
  return type(k) == "string" and k:match("^meta%.") ~= nil
end

-- Refuses the query parameters the route does not know, all in one
-- message with "did you mean"; `meta.KEY` parameters when meta_ok.
local function check_params(req, known, meta_ok)
  local unknown = unknown_keys(req.query or {}, known, meta_ok and is_meta)
  if #unknown == 0 then return end
  local candidates = { table.unpack(known) }
  if meta_ok then candidates[#candidates + 1] = "meta.KEY" end
  fail("invalid", "%s", core.unknown_keys("query parameter", unknown, candidates, ""))
end

-- A parameter's value, nil when absent or empty (a form's unset field).
local function param(req, name)
  local v = req.query and req.query[name]
  if v == nil or v == "" then return nil end
  return v
end

-- Every value of a parameter given more than once (status=a&status=b).
local function param_all(req, name)
  local all = req.query_all and req.query_all[name]
  if all then return all end
  return { param(req, name) }
end

local function int_param(req, name, default, min, max)
  local v = param(req, name)
  if v == nil then return default end
  local n = v:match("^%d+$") and math.tointeger(tonumber(v))
  if not n or n < min or n > max then
    fail("invalid", "%s: expected an integer %d..%d, got '%s'", param_label(name), min, max, v)
  end
  return n
end

-- The filter options of chronis.cli's job_filters, from the parameters:
-- status (repeated or a comma list), name, handler, due_before, due_after
-- and meta.KEY=VALUE.
local function filter_options(req, names)
  local opts = {}
  for _, n in ipairs(names) do
    if n == "status" then
      opts.status = param_all(req, "status")
    else
      opts[n:gsub("_", "-")] = param(req, n)
    end
  end
  local meta = {}
  for k, v in pairs(req.query or {}) do
    local key = k:match("^meta%.(.*)$")
    if key then
      if key:match("^%s*$") then fail("invalid", "%s: the metadata key is empty", param_label(k)) end
      meta[#meta + 1] = key .. "=" .. v
    end
  end
  table.sort(meta) -- one order whatever the query's
  if #meta > 0 then opts.meta = meta end
  return opts
end

-- The job filters of the request: the parameters `names` and meta.KEY.
local function job_filters(c, req, names)
  return lib.job_filters(c, filter_options(req, names), param_label)
end

-- ---- schedulers and jobs ----

-- The scheduler ?scheduler= picks: a 1-based index or a node id; the
-- first by default.
local function pick_scheduler(ctx, req)
  local list = ctx.schedulers or {}
  if #list == 0 then fail("unavailable", "this server has no scheduler") end
  local v = param(req, "scheduler")
  if v == nil then return list[1] end
  local i = v:match("^%d+$") and math.tointeger(tonumber(v))
  if i and list[i] then return list[i] end
  local ids = {}
  for _, s in ipairs(list) do
    if s:node_id() == v then return s end
    ids[#ids + 1] = "'" .. s:node_id() .. "'"
  end
  fail("invalid", "%s: no scheduler '%s' (expected an index 1..%d or a node id: %s)",
    param_label("scheduler"), v, #list, table.concat(ids, ", "))
end

-- The context chronis.cli's functions read: the scheduler, its clock, and
-- times without an offset read as UTC.
local function cli_context(ctx, req)
  local sched = pick_scheduler(ctx, req)
  return { sched = sched, now = sched:now() }
end

-- A job as `chronis jobs show --json` gives it, plus its trigger as text.
local function render(job)
  job.trigger_text = lib.trigger_text(job)
  return job
end

local function render_all(jobs)
  for _, j in ipairs(jobs) do render(j) end
  return array(jobs)
end

-- The next fire times of a scheduled job: its next run time, then its
-- trigger's following ones.
local function next_runs(job)
  local out = array()
  local t = job.status == "scheduled" and lib.us_of(job.next_run_time)
  while t and #out < NEXT_RUNS do
    out[#out + 1] = iso_ms(t)
    local ok, nxt = pcall(core.engine.next_run_time, job, t)
    t = ok and lib.us_of(nxt) or nil
  end
  return out
end

-- ---- routes ----

local routes = {}

function routes.schedulers(ctx, req)
  check_params(req, {})
  local out = array()
  for i, s in ipairs(ctx.schedulers or {}) do
    local q = s:get_queue_status()
    out[i] = object { index = i, node_id = s:node_id(), state = s:state(), stats = s:stats(),
      queued = q.pending, running = q.in_flight, max_workers = q.max_workers }
  end
  return 200, object { schedulers = out }
end

-- What the caller may do: the page asks before it offers actions. The
-- router has already refused a wrong token (401).
function routes.access(ctx, req)
  check_params(req, { "scheduler" })
  return 200, object { can_write = ctx.can_write == true, read_only = ctx.read_only == true }
end

-- Stats read the run history of the last hour: kept per scheduler for
-- STATS_TTL so that dashboards refreshing every few seconds cost one count
-- between them, and dropped at every change made through the API.
local STATS_TTL = 2 * 1000000
local stats_cache = setmetatable({}, { __mode = "k" })

function routes.stats(ctx, req)
  check_params(req, { "scheduler" })
  local c = cli_context(ctx, req)
  local hit = stats_cache[c.sched]
  local now = chronis.time.now()
  if hit and now - hit.at < STATS_TTL then return 200, hit.doc end
  local doc = lib.stats_json(c, lib.gather_stats(c))
  stats_cache[c.sched] = { at = now, doc = doc }
  return 200, doc
end

local LIST_PARAMS = { "status", "name", "handler", "due_before", "due_after", "limit", "offset", "scheduler" }

function routes.list(ctx, req)
  check_params(req, LIST_PARAMS, true)
  local c = cli_context(ctx, req)
  local filters = job_filters(c, req, { "status", "name", "handler", "due_before", "due_after" })
  local limit = int_param(req, "limit", PAGE_DEFAULT, 1, PAGE_MAX)
  local offset = int_param(req, "offset", 0, 0, OFFSET_MAX)
  local total = c.sched:count_jobs(filters)
  local jobs = offset < total and c.sched:query_jobs(filters, limit, offset) or {}
  return 200, object { jobs = render_all(jobs), total = total, limit = limit, offset = offset }
end

function routes.show(ctx, req, id)
  check_params(req, { "scheduler" })
  local c = cli_context(ctx, req)
  local job = lib.get_job(c, id)
  local runs, no_history = lib.history(c, id, SHOW_RUNS, 0)
  return 200, object { job = render(job), runs = runs and array(runs) or json.null,
    no_history = no_history, next_runs = next_runs(job) }
end

-- The fields of a new job's request body, by their names in the body.
-- at, in, every and cron are `chronis jobs add`'s triggers; trigger is a
-- trigger in full: {"type": "interval", "minutes": 5}.
local ADD_FIELDS = { "handler", "trigger", "at", "in", "every", "cron", "timezone", "id", "name",
  "args", "kwargs", "metadata", "priority", "max_retries", "retry_delay", "timeout", "queue", "on_exhausted",
  "max_instances", "overlap", "unique" }
local TRIGGERS = { "trigger", "at", "in", "every", "cron" }
local TRIGGER_TYPES = { "interval", "cron", "date" }

-- unique's key and period, add_fields' unique-key and unique-period,
-- are the members of the body's unique object.
local function field_label(name)
  return ("invalid field '%s'"):format((name:gsub("^unique%-", "unique."):gsub("%-", "_")))
end

local function is_array(v)
  if type(v) ~= "table" then return false end
  local n = 0
  for _ in pairs(v) do n = n + 1 end
  return n == #v
end

local function is_object(v)
  return type(v) == "table" and (next(v) == nil or not is_array(v))
end

local function json_type(v)
  if v == nil then return "nothing" end
  if type(v) == "table" then return is_array(v) and "an array" or "an object" end
  return type(v) == "string" and "a string" or type(v) == "number" and "a number" or type(v)
end

-- The request body: a JSON object.
local function body_object(req)
  local body = req.body or ""
  if not body:match("%S") then fail("invalid", "invalid request body: expected a JSON object, got nothing") end
  local ok, doc = pcall(json.decode, body)
  if not ok then
    fail("invalid", "invalid request body: %s", type(doc) == "table" and tostring(doc.message) or tostring(doc))
  end
  if not is_object(doc) or not body:match("^%s*{") then
    fail("invalid", "invalid request body: expected a JSON object, got %s", json_type(doc))
  end
  return doc
end

-- The options of chronis.cli's add_fields from the body's fields, their
-- JSON types checked; and the trigger object when one is given.
local function add_options(doc)
  local unknown = unknown_keys(doc, ADD_FIELDS)
  if #unknown > 0 then
    fail("invalid", "invalid request body: %s", core.unknown_keys("field", unknown, ADD_FIELDS, ""))
  end
  if type(doc.handler) ~= "string" or doc.handler == "" then
    fail("invalid", "%s: expected the handler's name, a non-empty string, got %s", field_label("handler"),
      json_type(doc.handler))
  end
  for _, k in ipairs({ "at", "in", "every", "cron", "timezone", "id", "name" }) do
    if doc[k] ~= nil and type(doc[k]) ~= "string" then
      fail("invalid", "%s: expected a string, got %s", field_label(k), json_type(doc[k]))
    end
  end
  if doc.args ~= nil and not is_array(doc.args) then
    fail("invalid", "%s: expected an array, got %s", field_label("args"), json_type(doc.args))
  end
  for _, k in ipairs({ "kwargs", "metadata", "trigger" }) do
    if doc[k] ~= nil and not is_object(doc[k]) then
      fail("invalid", "%s: expected an object, got %s", field_label(k), json_type(doc[k]))
    end
  end
  local given = {}
  for _, k in ipairs(TRIGGERS) do
    if doc[k] ~= nil then given[#given + 1] = "'" .. k .. "'" end
  end
  if #given ~= 1 then
    fail("invalid", #given == 0 and "invalid request body: a trigger is needed: 'trigger', 'at', 'in', "
      .. "'every' or 'cron'" or "invalid request body: one trigger at most, got " .. table.concat(given, " and "))
  end
  local u = doc.unique
  if u ~= nil and u ~= true and u ~= false and not is_object(u) then
    fail("invalid", "%s: expected true or an object {\"key\", \"period\"}, got %s", field_label("unique"),
      json_type(u))
  end
  local o = {}
  for k, v in pairs(doc) do o[k:gsub("_", "-")] = v end
  o.trigger, o.handler = nil, nil
  if type(u) == "table" then
    local unknown = unknown_keys(u, { "key", "period" })
    if #unknown > 0 then
      fail("invalid", "%s: %s", field_label("unique"), core.unknown_keys("key", unknown, { "key", "period" }, ""))
    end
    o.unique, o["unique-key"], o["unique-period"] = true, u.key, u.period
  end
  return o, doc.trigger
end

function routes.add(ctx, req)
  check_params(req, { "scheduler" })
  local c = cli_context(ctx, req)
  local doc = body_object(req)
  local o, trigger = add_options(doc)
  local f, create = lib.add_fields(c, doc.handler, o, field_label)
  if trigger then
    local t = {}
    for k, v in pairs(trigger) do t[k] = v end
    if type(t.type) ~= "string" then
      fail("invalid", "%s: expected interval, cron or date, got %s", field_label("trigger.type"), json_type(t.type))
    end
    lib.check_choice(field_label("trigger.type"), t.type, TRIGGER_TYPES)
    f.trigger_type, t.type = t.type, nil
    f.trigger_args = t
  end
  local job, existed = c.sched[create](c.sched, f)
  local location = { location = "/api/jobs/" .. path_escape(job.job_id) }
  if f.unique then
    -- A unique create that found its job created nothing: 200, not 201.
    return existed and 200 or 201, object { job = render(job), existed = existed == true }, location
  end
  return 201, object { job = render(job) }, location
end

local ACTIONS = { pause = "pause_job", resume = "resume_job", run = "run_job_now", retry = "retry_job" }

function routes.action(ctx, req, id, action)
  check_params(req, { "scheduler" })
  local c = cli_context(ctx, req)
  local job = c.sched[ACTIONS[action]](c.sched, id)
  return 200, object { job = render(job) }
end

function routes.delete(ctx, req, id)
  check_params(req, { "scheduler" })
  local c = cli_context(ctx, req)
  c.sched:delete_job(id)
  return 200, object { deleted = id }
end

function routes.retry_all(ctx, req)
  check_params(req, { "name", "handler", "scheduler" }, true)
  local c = cli_context(ctx, req)
  local n, ids = c.sched:retry_jobs(job_filters(c, req, { "name", "handler" }))
  return 200, object { retried = n, job_ids = array(ids) }
end

local RUNS_PARAMS = { "job_id", "handler", "outcome", "since", "until", "limit", "offset", "scheduler" }

function routes.runs(ctx, req)
  check_params(req, RUNS_PARAMS, true)
  local c = cli_context(ctx, req)
  local f = {}
  f.job_id = param(req, "job_id")
  f.func_name = param(req, "handler")
  local oc = lib.list_opt(param_all(req, "outcome"))
  for _, o in ipairs(oc) do lib.check_choice(param_label("outcome"), o, lib.OUTCOMES) end
  if #oc == 1 then f.outcome = oc[1] elseif #oc > 1 then f.outcome = oc end
  for name, key in pairs({ since = "started_at_gte", ["until"] = "started_at_lte" }) do
    local v = param(req, name)
    if v then f[key] = ctime.format(lib.parse_time(v, param_label(name), c.now, nil, name == "since")) end
  end
  for k, v in pairs(job_filters(c, req, {})) do f[k] = v end -- metadata.KEY
  local limit = int_param(req, "limit", PAGE_DEFAULT, 1, PAGE_MAX)
  local offset = int_param(req, "offset", 0, 0, OFFSET_MAX)
  local runs, why = lib.history(c, f, limit + 1, offset)
  if not runs then fail("unsupported", "no run history: %s", why) end
  local more = #runs > limit
  if more then runs[#runs] = nil end
  return 200, object { runs = array(runs), limit = limit, offset = offset, more = more }
end

-- ---- dispatch ----

-- The route of a path: its handler by method, and the path's arguments.
local function match(seg)
  local n = #seg
  if seg[1] ~= "api" then return nil end
  if n == 2 and seg[2] == "schedulers" then return { GET = routes.schedulers } end
  if n == 2 and seg[2] == "access" then return { GET = routes.access } end
  if n == 2 and seg[2] == "stats" then return { GET = routes.stats } end
  if n == 2 and seg[2] == "runs" then return { GET = routes.runs } end
  if seg[2] ~= "jobs" then return nil end
  if n == 2 then return { GET = routes.list, POST = routes.add } end
  local id = seg[3]
  if id == nil or id == "" then return nil end
  if n == 3 then
    -- POST /api/jobs/retry retries many jobs; GET and DELETE read and
    -- delete a job named retry like any other.
    return { GET = routes.show, DELETE = routes.delete, POST = id == "retry" and routes.retry_all or nil }, id
  end
  if n == 4 and ACTIONS[seg[4]] then return { POST = routes.action }, id, seg[4] end
  return nil
end

local METHOD_ORDER = { "GET", "POST", "PUT", "PATCH", "DELETE" }

-- The Allow header of a route: HEAD with GET (the server answers a HEAD
-- as the GET, without the body).
local function allowed(methods)
  local out = {}
  for _, m in ipairs(METHOD_ORDER) do
    if methods[m] then out[#out + 1] = m end
    if m == "GET" and methods.GET then out[#out + 1] = "HEAD" end
  end
  return table.concat(out, ", ")
end

-- An error value as {code, message}: chronis errors and the job
-- commands' keep theirs; anything else is a bug, logged with its
-- traceback and answered as an internal error.
local function as_api_error(e)
  if type(e) == "table" and type(e.code) == "string" and e.message ~= nil then
    return { code = e.code, message = tostring(e.message) }
  end
  local text = tostring(e)
  chronis.log("error", "http api: " .. debug.traceback(text, 2))
  return { code = "internal", message = "internal error: " .. text }
end

--- handle(ctx, req) -> status, headers, body: every path under /api/
--- (the request and context tables of docs/http.md).
function M.handle(ctx, req)
  local seg = req.segments or {}
  local methods, id, action = match(seg)
  if not methods then
    return error_answer("not_found", ("no API route %s"):format(tostring(req.path)))
  end
  local fn = methods[req.method] or (req.method == "HEAD" and methods.GET) or nil
  if not fn then
    local allow = allowed(methods)
    return error_answer("method_not_allowed", ("method %s is not allowed on %s (allowed: %s)"):format(
      tostring(req.method), tostring(req.path), allow), { allow = allow })
  end
  -- The router lets a change through only with the write token; a
  -- request that reached here without it changes nothing all the same.
  if MUTATING[req.method] and ctx.can_write ~= true then
    return error_answer("read_only", ("%s %s changes jobs: this server is read-only for this request "
      .. "(no write token)"):format(req.method, tostring(req.path)))
  end
  if MUTATING[req.method] then
    for k in pairs(stats_cache) do stats_cache[k] = nil end
  end
  local ok, status, doc, headers = xpcall(fn, as_api_error, ctx, req, id, action)
  if not ok then return error_answer(status.code, status.message) end
  return answer(status, doc, headers)
end

return M
