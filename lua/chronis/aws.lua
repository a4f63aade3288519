-- chronis.aws: what a script needs to call AWS over chronis.http. AWS
-- Signature Version 4 (sigv4.sign), credentials and region from options or
-- the standard AWS environment variables, and a small client for the
-- DynamoDB JSON API (dynamodb.client) that retries with backoff and raises
-- the structured errors of docs/adapters.md. docs/dynamodb.md documents it.
--
-- The module keeps no state: a client is a table of its own, and the
-- environment is read when asked, so specs can stub os.getenv.
local core = require "chronis.core"

local json, http, crypto = core.json, core.http, core.crypto

local M = { sigv4 = {}, dynamodb = {} }

local function fail(code, fmt, ...)
  error(core.error(code, fmt:format(...)), 2)
end

local function env(name)
  local v = os.getenv(name)
  if v == "" then return nil end
  return v
end

local function uri_encode(s, keep_slash)
  return (s:gsub("[^%w%-%._~" .. (keep_slash and "/" or "") .. "]", function(c)
    return ("%%%02X"):format(c:byte())
  end))
end

local function uri_decode(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

--- split_url(url) -> scheme, host, path, query; nil when url has no
--- scheme://authority. The host keeps a port that is not the scheme's
--- default, as the Host header and the signature must.
function M.split_url(url)
  local scheme, authority, rest = url:match("^(%a[%w+.-]*)://([^/?#]+)(.*)$")
  if not scheme then return nil end
  scheme = scheme:lower()
  local host, port = authority:match("^(.-):(%d+)$")
  if not host then host = authority end
  host = host:lower()
  if port and not ((scheme == "http" and port == "80") or (scheme == "https" and port == "443")) then
    host = host .. ":" .. port
  end
  local path, query = rest:match("^([^?#]*)%??([^#]*)")
  if path == "" then path = "/" end
  return scheme, host, path, query
end
local split_url = M.split_url

local function canonical_query(q)
  if q == nil or q == "" then return "" end
  local pairs_ = {}
  for part in q:gmatch("[^&]+") do
    local k, v = part:match("^([^=]*)=?(.*)$")
    pairs_[#pairs_ + 1] = { uri_encode(uri_decode(k)), uri_encode(uri_decode(v)) }
  end
  table.sort(pairs_, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  for i, p in ipairs(pairs_) do pairs_[i] = p[1] .. "=" .. p[2] end
  return table.concat(pairs_, "&")
end

local function hmac(key, s) return crypto.hmac_sha256(key, s) end

--- sigv4.sign{method, url, headers, body, region, service, access_key_id,
--- secret_access_key, session_token, time = "YYYYMMDDTHHMMSSZ"} -> a table:
--- headers (the given ones plus host, x-amz-date, x-amz-security-token and
--- authorization), authorization, canonical_request, string_to_sign,
--- signature, signed_headers. Every header given is signed; time defaults
--- to the clock.
function M.sigv4.sign(r)
  local _, host, path, query = split_url(r.url)
  if not host then fail("invalid", "sign: invalid url '%s'", tostring(r.url)) end
  local amz_date = r.time or os.date("!%Y%m%dT%H%M%SZ")
  local date = amz_date:sub(1, 8)
  local headers = {}
  for k, v in pairs(r.headers or {}) do headers[k:lower()] = tostring(v) end
  headers.host = headers.host or host
  headers["x-amz-date"] = amz_date
  if r.session_token then headers["x-amz-security-token"] = r.session_token end
  local names = {}
  for k in pairs(headers) do names[#names + 1] = k end
  table.sort(names)
  local lines = {}
  for i, k in ipairs(names) do
    local v = headers[k]:gsub("^%s+", ""):gsub("%s+$", ""):gsub("%s+", " ")
    lines[i] = k .. ":" .. v .. "\n"
  end
  local signed = table.concat(names, ";")
  local segments = {}
  for seg in (path .. "/"):gmatch("([^/]*)/") do segments[#segments + 1] = uri_encode(uri_decode(seg)) end
  local canonical_uri = table.concat(segments, "/")
  if canonical_uri == "" then canonical_uri = "/" end
  local canonical = table.concat({
    r.method:upper(), canonical_uri, canonical_query(query), table.concat(lines), signed,
    crypto.sha256_hex(r.body or ""),
  }, "\n")
  local scope = ("%s/%s/%s/aws4_request"):format(date, r.region, r.service)
  local to_sign = table.concat({ "AWS4-HMAC-SHA256", amz_date, scope, crypto.sha256_hex(canonical) }, "\n")
  local key = hmac(hmac(hmac(hmac("AWS4" .. r.secret_access_key, date), r.region), r.service), "aws4_request")
  local signature = crypto.hmac_sha256_hex(key, to_sign)
  local authorization = ("AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s"):format(
    r.access_key_id, scope, signed, signature)
  headers.authorization = authorization
  return { headers = headers, authorization = authorization, canonical_request = canonical,
           string_to_sign = to_sign, signature = signature, signed_headers = signed }
end

--- region(opts) -> opts.region, else AWS_REGION, else AWS_DEFAULT_REGION,
--- else "us-east-1".
function M.region(opts)
  return (opts or {}).region or env("AWS_REGION") or env("AWS_DEFAULT_REGION") or "us-east-1"
end

--- credentials(opts [, what]) -> { access_key_id, secret_access_key,
--- session_token }, from opts, else from AWS_ACCESS_KEY_ID,
--- AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN. The token is taken from the
--- environment only when the key is too: a key given in opts never picks up
--- someone else's token. Missing credentials are `invalid`, the message
--- opening with `what` (default "aws").
function M.credentials(opts, what)
  opts = opts or {}
  local c = {
    access_key_id = opts.access_key_id or env("AWS_ACCESS_KEY_ID"),
    secret_access_key = opts.secret_access_key or env("AWS_SECRET_ACCESS_KEY"),
    session_token = opts.session_token or (opts.access_key_id == nil and env("AWS_SESSION_TOKEN")) or nil,
  }
  if not c.access_key_id or not c.secret_access_key then
    fail("invalid", "%s: no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
      .. "(and AWS_SESSION_TOKEN for temporary ones) or give access_key_id and secret_access_key",
      what or "aws")
  end
  return c
end

--- dynamodb.S(s), dynamodb.N(n): attribute values of a string and of a
--- number (integers written exactly, as DynamoDB wants them: text).
function M.dynamodb.S(s) return { S = s } end
function M.dynamodb.N(n)
  if math.type(n) == "float" and not math.tointeger(n) then return { N = ("%.17g"):format(n) } end
  return { N = ("%d"):format(n) }
end

local READ_ONLY = { GetItem = true, BatchGetItem = true, Query = true, Scan = true, DescribeTable = true }
local THROTTLED = { ProvisionedThroughputExceededException = true, ThrottlingException = true,
  RequestLimitExceeded = true, LimitExceededException = true }
local AUTH = { UnrecognizedClientException = true, InvalidSignatureException = true,
  AccessDeniedException = true, MissingAuthenticationTokenException = true,
  IncompleteSignatureException = true, ExpiredTokenException = true }

local Client = {}
Client.__index = Client
M.dynamodb.Client = Client

--- dynamodb.client{region, endpoint, access_key_id, secret_access_key,
--- session_token, timeout = 10, max_retries = 8, table}: a signed DynamoDB
--- JSON API client. Region and credentials default as region() and
--- credentials() say; endpoint to https://dynamodb.<region>.amazonaws.com.
--- `table` only names the table in error messages.
function M.dynamodb.client(opts)
  opts = opts or {}
  local region = M.region(opts)
  local creds = M.credentials(opts, "dynamodb client")
  return setmetatable({
    endpoint = opts.endpoint or ("https://dynamodb.%s.amazonaws.com"):format(region), region = region,
    access_key_id = creds.access_key_id, secret_access_key = creds.secret_access_key,
    session_token = creds.session_token,
    timeout = opts.timeout or 10, max_retries = opts.max_retries or 8, table = opts.table,
    retries = 0, -- throttling and transport retries so far (statistics)
    sleep = core.sleep, random = math.random, -- replaceable, for tests
  }, Client)
end

--- client:attempt(action, payload): one request, no retry. Returns true and
--- the decoded answer, or false and {type, message, status} (type is
--- DynamoDB's error name, or "HTTP<status>") or {transport = "unavailable"
--- | "timeout", message} when no answer came.
function Client:attempt(op, payload)
  local body = json.encode(payload)
  local s = M.sigv4.sign{
    method = "POST", url = self.endpoint, body = body, region = self.region, service = "dynamodb",
    access_key_id = self.access_key_id, secret_access_key = self.secret_access_key,
    session_token = self.session_token,
    headers = { ["content-type"] = "application/x-amz-json-1.0", ["x-amz-target"] = "DynamoDB_20120810." .. op },
  }
  local ok, res = pcall(http.request, { method = "POST", url = self.endpoint, headers = s.headers, body = body,
    timeout = self.timeout })
  if not ok then
    if type(res) == "table" and (res.code == "unavailable" or res.code == "timeout") then
      return false, { transport = res.code, message = res.message }
    end
    error(res, 0)
  end
  if res.status == 200 then
    local dok, data = pcall(json.decode, res.body)
    if dok and type(data) == "table" then return true, data end
    return false, { type = "BadResponse", message = "unreadable answer: " .. res.body:sub(1, 200), status = 200 }
  end
  local dok, data = pcall(json.decode, res.body)
  local info = { status = res.status, type = "HTTP" .. res.status, message = res.body:sub(1, 300) }
  if dok and type(data) == "table" then
    info.type = tostring(data.__type or info.type):match("([^#]*)$")
    info.message = data.message or data.Message or info.message
  end
  return false, info
end

-- Whether an error is worth another attempt: throttling always (nothing was
-- done), server errors and lost connections only for reads (a write may
-- have happened).
local function retryable(op, info)
  if THROTTLED[info.type] then return true end
  if READ_ONLY[op] and (info.transport or (info.status and info.status >= 500)) then return true end
  return false
end

-- Raises the structured error for a failed request.
local function raise(self, op, payload, res, attempts)
  local name = self.table or payload.TableName
  local where = name and ("dynamodb %s (table '%s' at %s)"):format(op, tostring(name), self.endpoint)
    or ("dynamodb %s (at %s)"):format(op, self.endpoint)
  if res.transport then fail(res.transport, "%s: %s", where, res.message) end
  if THROTTLED[res.type] or (res.status or 0) >= 500 then
    fail("unavailable", "%s: %s after %d attempts: %s", where, res.type, attempts, res.message)
  end
  if res.type == "ResourceNotFoundException" then
    fail("unavailable", "%s: %s (create the table, or open the store with create_table=true)",
      where, res.message)
  end
  if res.type == "ValidationException" then fail("invalid", "%s: %s", where, res.message) end
  if res.type == "ConditionalCheckFailedException" then fail("conflict", "%s: %s", where, res.message) end
  if AUTH[res.type] then
    fail("unavailable", "%s: credentials refused (%s): %s", where, res.type, res.message)
  end
  fail("unavailable", "%s: %s: %s", where, res.type, res.message)
end

--- client:call(action, payload [, ccf_ok]) -> the decoded answer; with
--- ccf_ok, nil and the error info when a write's condition failed.
--- Throttling is retried (and, for reads, 5xx and lost connections) up to
--- max_retries times, backing off from 25 ms to at most 2 s; then, or for
--- any other failure, raises: `invalid` (ValidationException), `conflict`
--- (a failed condition), `timeout`, or `unavailable`.
function Client:call(op, payload, ccf_ok)
  local attempt = 0
  while true do
    attempt = attempt + 1
    local ok, res = self:attempt(op, payload)
    if ok then return res end
    if res.type == "ConditionalCheckFailedException" and ccf_ok then return nil, res end
    if not retryable(op, res) or attempt > self.max_retries then raise(self, op, payload, res, attempt) end
    self.retries = self.retries + 1
    -- Exponential backoff, 25 ms, 50 ms, ... capped at 2 s, each wait a
    -- random half to whole of that, so that throttled clients spread out.
    local cap = math.min(2, 0.025 * 2 ^ (attempt - 1))
    self.sleep(cap * (0.5 + self.random() / 2))
  end
end

return M
