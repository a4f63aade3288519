-- chronis.http_server{...}: the HTTP server of a process (docs/http.md).
-- The C server (core.httpd) reads requests on the loop and runs handle()
-- for each as a task; this file routes them: health, readiness, metrics,
-- the JSON API (chronis.http_api) and the dashboard's files
-- (lua/chronis/web/). It also decides who may do what: a token, sent in a
-- header and never in a cookie, is needed for every change, and for
-- everything but health when the server listens beyond loopback.

local core = require "chronis.core"

local M = {}

local JSON = "application/json; charset=utf-8"
local OPTIONS = {
  listen = true, schedulers = true, token = true, max_body = true, max_conns = true,
  rate_limit = true, rate_burst = true, timeout = true, request_timeout = true,
}
local MUTATING = { POST = true, PUT = true, PATCH = true, DELETE = true }
-- Sent with every answer: the page loads nothing from elsewhere and runs
-- no inline script, it cannot be framed, and answers are not sniffed.
local SECURITY = {
  ["Content-Security-Policy"] = "default-src 'self'; img-src 'self' data:; "
    .. "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  ["X-Content-Type-Options"] = "nosniff",
  ["X-Frame-Options"] = "DENY",
  ["Referrer-Policy"] = "no-referrer",
}
local TYPES = {
  html = "text/html; charset=utf-8", js = "text/javascript; charset=utf-8",
  css = "text/css; charset=utf-8", png = "image/png", svg = "image/svg+xml",
  ico = "image/x-icon", json = JSON,
}

local servers = setmetatable({}, { __mode = "k" })

local function fail(fmt, ...)
  error(core.error("invalid", string.format(fmt, ...)), 3)
end

local function json_error(status, code, message, extra)
  local h = { ["Content-Type"] = JSON, ["Cache-Control"] = "no-store" }
  for k, v in pairs(extra or {}) do h[k] = v end
  return status, h, core.json.encode({ error = { code = code, message = message } })
end

local function json_ok(status, doc)
  return status, { ["Content-Type"] = JSON, ["Cache-Control"] = "no-store" }, core.json.encode(doc)
end

-- "127.0.0.1:8080", "[::1]:8080", "localhost:8080", ":8080" (loopback).
local function parse_listen(s)
  if type(s) ~= "string" then fail("invalid option 'listen': expected 'HOST:PORT', got %s", type(s)) end
  local host, port = s:match("^%[([%x:%.]+)%]:(%d+)$")
  if not host then host, port = s:match("^([^:]*):(%d+)$") end
  if not host then
    fail("invalid option 'listen': expected 'HOST:PORT' (127.0.0.1:8080, [::1]:8080), got '%s'", s)
  end
  port = tonumber(port)
  if port > 65535 then fail("invalid option 'listen': port %d is past 65535", port) end
  if host == "" or host == "localhost" then host = "127.0.0.1" end
  if not host:match("^[%x:%.]+$") then
    fail("invalid option 'listen': '%s' is not a numeric address (use 127.0.0.1, 0.0.0.0, ::1 or ::)", host)
  end
  return host, port
end

local function is_loopback(host)
  return host:match("^127%.") ~= nil or host == "::1"
end

-- Equal strings compare in time that depends on their length only.
local function same(a, b)
  if type(a) ~= "string" or type(b) ~= "string" or #a ~= #b then return false end
  local diff = 0
  for i = 1, #a do
    if a:byte(i) ~= b:byte(i) then diff = diff + 1 end
  end
  return diff == 0
end

local function presented_token(headers)
  local auth = headers["authorization"]
  if auth then
    local t = auth:match("^[Bb]earer%s+(%S+)%s*$")
    if t then return t end
  end
  return headers["x-chronis-token"]
end

local function unescape(s)
  s = s:gsub("+", " ")
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- The request's target as path, segments and query (req.* in docs/http.md).
local function parse_target(req)
  local path, qs = req.target:match("^([^?#]*)%??([^#]*)")
  req.path = path ~= "" and path or "/"
  local segments = {}
  for seg in req.path:gmatch("[^/]+") do
    segments[#segments + 1] = (seg:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
  end
  req.segments = segments
  local query, all = {}, {}
  for pair in (qs or ""):gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    k, v = unescape(k), unescape(v)
    if k ~= "" then
      query[k] = v
      all[k] = all[k] or {}
      table.insert(all[k], v)
    end
  end
  req.query, req.query_all = query, all
end

-- ---- the dashboard's files ----

local web_dir
local function find_web_dir()
  if web_dir then return web_dir end
  local init = package.searchpath("chronis", package.path)
  if init then web_dir = init:gsub("init%.lua$", "") .. "web/" end
  return web_dir
end

local file_cache = {}
local function static_file(name)
  if not name:match("^[%w_%-]+%.%w+$") then return nil end
  local ext = name:match("%.(%w+)$")
  if not TYPES[ext] then return nil end
  local cached = file_cache[name]
  if cached then return cached, TYPES[ext] end
  local dir = find_web_dir()
  if not dir then return nil end
  local f = io.open(dir .. name, "rb")
  if not f then return nil end
  local body = f:read("a")
  f:close()
  file_cache[name] = body
  return body, TYPES[ext]
end

-- ---- health ----

local function schedulers_of(srv)
  if srv.schedulers then return srv.schedulers end
  return require("chronis").schedulers()
end

local function readiness(srv)
  local scheds = schedulers_of(srv)
  local problems = {}
  if #scheds == 0 then problems[#problems + 1] = "no scheduler" end
  for i, s in ipairs(scheds) do
    local name = string.format("scheduler %d (%s)", i, s:node_id())
    local state = s:state()
    if state ~= "running" and (state == "stopping" or s._was_started) then
      problems[#problems + 1] = name .. " is " .. state
    end
    local failing = s:stats().failing
    if #failing > 0 then
      problems[#problems + 1] = name .. ": store requests failing: " .. table.concat(failing, ", ")
    end
    -- The store answers: a lookup by id, the cheapest call every store has.
    local ok, err = pcall(s:store().get_job, s:store(), "chronis-readyz-probe")
    if not ok then
      problems[#problems + 1] = name .. ": the store does not answer: "
        .. (type(err) == "table" and tostring(err.message) or tostring(err))
    end
  end
  return problems, #scheds
end

-- ---- routing ----

local function with_security(status, headers, body)
  headers = headers or {}
  for k, v in pairs(SECURITY) do
    if headers[k] == nil then headers[k] = v end
  end
  return status, headers, body
end

local function route(srv, req)
  parse_target(req)
  local method, seg = req.method, req.segments
  local first = seg[1]
  local read = method == "GET" or method == "HEAD"

  if first == "healthz" and #seg == 1 then
    if not read then return json_error(405, "method_not_allowed", "use GET", { Allow = "GET, HEAD" }) end
    return json_ok(200, { status = "ok", uptime_seconds = (core.time.now() - srv.started_at) / 1e6 })
  end
  if first == "readyz" and #seg == 1 then
    if not read then return json_error(405, "method_not_allowed", "use GET", { Allow = "GET, HEAD" }) end
    local problems, n = readiness(srv)
    if #problems > 0 then
      return json_ok(503, { status = "not_ready", reason = table.concat(problems, "; "),
        problems = problems, schedulers = n })
    end
    return json_ok(200, { status = "ready", schedulers = n })
  end

  local is_api = first == "api"
  if is_api or first == "metrics" then
    local token = presented_token(req.headers)
    local good = srv.token ~= nil and same(token, srv.token)
    if token ~= nil and not good then
      return json_error(401, "unauthorized", "the token is wrong", { ["WWW-Authenticate"] = "Bearer" })
    end
    if srv.token_for_reads and not good then
      return json_error(401, "unauthorized",
        "this server listens beyond loopback: send its token (Authorization: Bearer TOKEN)",
        { ["WWW-Authenticate"] = "Bearer" })
    end
    if MUTATING[method] and not good then
      if srv.token == nil then
        return json_error(403, "read_only",
          "this server is read-only: start it with a token (--http-token or CHRONIS_HTTP_TOKEN) to change jobs")
      end
      return json_error(401, "unauthorized", "changing jobs needs the token (Authorization: Bearer TOKEN)",
        { ["WWW-Authenticate"] = "Bearer" })
    end
    if first == "metrics" then
      if #seg ~= 1 then return json_error(404, "not_found", "no such page: " .. req.path) end
      if not read then return json_error(405, "method_not_allowed", "use GET", { Allow = "GET, HEAD" }) end
      local text = require("chronis.metrics").render({ schedulers = schedulers_of(srv), server = srv })
      return 200, { ["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8",
        ["Cache-Control"] = "no-store" }, text
    end
    local ctx = { schedulers = schedulers_of(srv), can_write = good, read_only = srv.token == nil,
      started_at = srv.started_at, server = srv }
    return require("chronis.http_api").handle(ctx, req)
  end

  -- The dashboard.
  if not read then return json_error(405, "method_not_allowed", "use GET", { Allow = "GET, HEAD" }) end
  local name = (#seg == 0) and "index.html" or (#seg == 1 and seg[1] or nil)
  local body, ctype = nil, nil
  if name then body, ctype = static_file(name) end
  if not body then return json_error(404, "not_found", "no such page: " .. req.path) end
  return 200, { ["Content-Type"] = ctype, ["Cache-Control"] = "no-cache" }, body
end

local function handle(srv, req)
  local ok, status, headers, body = pcall(route, srv, req)
  if not ok then
    local err = status
    local code = type(err) == "table" and err.code or nil
    if code == "invalid" then
      return with_security(json_error(400, "invalid", tostring(err.message)))
    end
    core.engine.log("error", "http: " .. req.method .. " " .. req.target .. ": "
      .. (type(err) == "table" and tostring(err.message) or tostring(err)))
    if code == "unavailable" or code == "timeout" then
      return with_security(json_error(503, code, tostring(err.message)))
    end
    return with_security(json_error(500, "error", "the request failed; the server log has the details"))
  end
  return with_security(status, headers, body)
end

--- Starts a server; see docs/http.md for the options.
function M.start(opts)
  if type(opts) ~= "table" then fail("http_server: expected an option table, got %s", type(opts)) end
  local unknown = {}
  for k in pairs(opts) do
    if not OPTIONS[k] then unknown[#unknown + 1] = tostring(k) end
  end
  if #unknown > 0 then
    table.sort(unknown)
    fail("http_server: unknown option%s %s (known: listen, schedulers, token, max_body, max_conns, "
      .. "rate_limit, rate_burst, timeout, request_timeout)", #unknown > 1 and "s" or "",
      "'" .. table.concat(unknown, "', '") .. "'")
  end
  local host, port = parse_listen(opts.listen or "127.0.0.1:8080")
  local token = opts.token
  if token == nil then token = os.getenv("CHRONIS_HTTP_TOKEN") end
  if token == "" then token = nil end
  if token ~= nil and (type(token) ~= "string" or not token:match("^[%w%-%._~+/=]+$")) then
    fail("invalid option 'token': expected letters, digits and -._~+/= (a header value), got %s",
      type(token) == "string" and "other characters" or type(token))
  end
  local loopback = is_loopback(host)
  if not loopback then
    if token == nil then
      fail("invalid option 'listen': listening on %s (beyond loopback) needs a token "
        .. "(--http-token, CHRONIS_HTTP_TOKEN or the token option)", host)
    end
    if #token < 16 then
      fail("invalid option 'token': listening beyond loopback needs a token of 16 characters or more")
    end
  end
  if opts.schedulers ~= nil and type(opts.schedulers) ~= "table" then
    fail("invalid option 'schedulers': expected a list of schedulers, got %s", type(opts.schedulers))
  end
  local srv = {
    token = token, token_for_reads = not loopback, schedulers = opts.schedulers,
    host = host, started_at = core.time.now(),
  }
  srv.handle = core.httpd.listen({
    host = host, port = port, max_body = opts.max_body, max_conns = opts.max_conns,
    rate = opts.rate_limit, burst = opts.rate_burst, timeout = opts.timeout,
    request_timeout = opts.request_timeout,
  }, function(req) return handle(srv, req) end)
  srv.port = srv.handle:port()
  srv.url = string.format(host:find(":") and "http://[%s]:%d" or "http://%s:%d", host, srv.port)
  function srv.close() if srv.handle then srv.handle:close() end srv.handle = nil; servers[srv] = nil end
  servers[srv] = true
  core.engine.log("info", string.format("http: serving %s%s", srv.url,
    token and "" or " read-only (no token: --http-token or CHRONIS_HTTP_TOKEN to allow changes)"))
  return srv
end

--- Closes every server (the host's exit path).
function M.close_all()
  for srv in pairs(servers) do srv.close() end
end

-- For specs.
M._parse_target = parse_target
M._parse_listen = parse_listen

return M
