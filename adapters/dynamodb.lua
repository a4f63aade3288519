-- dynamodb.lua - the Amazon DynamoDB store, written in Lua on chronis.http
-- and chronis.crypto (requests signed with AWS Signature Version 4):
--
--   lua:adapters/dynamodb.lua?table=chronis_jobs&region=us-east-1
--   lua:adapters/dynamodb.lua?table=t&endpoint=http://127.0.0.1:8000&create_table=true
--
-- docs/dynamodb.md is the user's page; what follows is the design.
--
-- Items (one table):
--   job      PK = tenant partition (metadata.tenant_id, or JOBS), SK = JOB#<id>
--            doc  = the whole record as canonical JSON (the source of truth)
--            st, due, upd, pri, claimed, lease, tt = copies of fields that
--            keys, conditions and server-side filters need
--   pointer  PK = ID#<id>, SK = ID, tenant = the job's partition, created = µs
--   GSI by_status: partition st, sort due (µs; a job without a next run
--            time sorts last with NO_DUE), projection ALL.
--
-- The pointer makes an id unique across tenants (a conditional put on it
-- is the duplicate check) and finds a job by id alone. DynamoDB could
-- write pointer and job in one TransactWriteItems; this adapter uses only
-- single-item conditional writes, ordered so that every crash leaves a
-- state the next reader repairs, because dynalite (the test server) has no
-- transactions and because claims and CAS must stay single-item anyway.
--
-- Every job write is a conditional write on `upd` (updated_at in µs, which
-- only grows: max(now, previous + 1)), so read-modify-write is atomic: a
-- writer that lost the race reads again and decides again. A write that
-- changes the tenant moves the job: (1) freeze the old item with moved/mdoc
-- (conditional on upd: the moment the write happens), (2) put the new
-- item, (3) point the pointer at it, (4) delete the old item. Anyone who
-- meets a frozen item finishes steps 2-4 (they are idempotent) and retries.
local chronis = require "chronis"

local json, http, crypto = chronis.json, chronis.http, chronis.crypto
local null = json.null
local parse_time, format_time = chronis.time.parse, chronis.time.format

local M = {}

local function fail(code, fmt, ...)
  error(chronis.error(code, fmt:format(...)), 2)
end

local function message_of(err)
  return type(err) == "table" and tostring(err.message) or tostring(err)
end

-- ---------------------------------------------------------------------------
-- AWS Signature Version 4

local function uri_encode(s, keep_slash)
  return (s:gsub("[^%w%-%._~" .. (keep_slash and "/" or "") .. "]", function(c)
    return ("%%%02X"):format(c:byte())
  end))
end

local function uri_decode(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- scheme, host (with a non-default port), path, query of a URL.
local function split_url(url)
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

--- sign{method, url, headers, body, region, service, access_key_id,
--- secret_access_key, session_token, time = "YYYYMMDDTHHMMSSZ"} -> a table:
--- headers (the given ones plus host, x-amz-date, x-amz-security-token and
--- authorization), authorization, canonical_request, string_to_sign,
--- signature, signed_headers. Every header given is signed.
function M.sign(r)
  local _, host, path, query = split_url(r.url)
  if not host then error("sign: invalid url " .. tostring(r.url), 2) end
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

-- ---------------------------------------------------------------------------
-- The DynamoDB JSON API

local READ_ONLY = { GetItem = true, BatchGetItem = true, Query = true, Scan = true, DescribeTable = true }
local THROTTLED = { ProvisionedThroughputExceededException = true, ThrottlingException = true,
  RequestLimitExceeded = true, LimitExceededException = true }
local AUTH = { UnrecognizedClientException = true, InvalidSignatureException = true,
  AccessDeniedException = true, MissingAuthenticationTokenException = true,
  IncompleteSignatureException = true, ExpiredTokenException = true }

local Client = {}
Client.__index = Client

--- client{endpoint, region, access_key_id, secret_access_key,
--- session_token, timeout, max_retries, table}: a signed DynamoDB JSON API
--- client. client:call(op, payload) -> the decoded answer.
function M.client(o)
  local c = setmetatable({
    endpoint = o.endpoint, region = o.region, access_key_id = o.access_key_id,
    secret_access_key = o.secret_access_key, session_token = o.session_token,
    timeout = o.timeout or 10, max_retries = o.max_retries or 8, table = o.table,
    retries = 0, -- throttling and transport retries so far (statistics)
    sleep = chronis.sleep, random = math.random,
  }, Client)
  return c
end

-- One attempt: true, answer | false, {type=, message=, status=, transport=}.
function Client:attempt(op, payload)
  local body = json.encode(payload)
  local s = M.sign{
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

-- call(op, payload [, ccf_ok]) -> answer, or nil when ccf_ok and the
-- write's condition failed. Raises contract errors for the rest.
function Client:call(op, payload, ccf_ok)
  local attempt = 0
  while true do
    attempt = attempt + 1
    local ok, res = self:attempt(op, payload)
    if ok then return res end
    if res.type == "ConditionalCheckFailedException" and ccf_ok then return nil, res end
    if not retryable(op, res) or attempt > self.max_retries then
      local where = ("dynamodb %s (table '%s' at %s)"):format(op, tostring(self.table), self.endpoint)
      if res.transport then fail(res.transport, "%s: %s", where, res.message) end
      if THROTTLED[res.type] or (res.status or 0) >= 500 then
        fail("unavailable", "%s: %s after %d attempts: %s", where, res.type, attempt, res.message)
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
    self.retries = self.retries + 1
    -- Exponential backoff with full jitter: 25 ms, 50 ms, ... capped at 2 s.
    local cap = math.min(2, 0.025 * 2 ^ (attempt - 1))
    self.sleep(cap * (0.5 + self.random() / 2))
  end
end

-- ---------------------------------------------------------------------------
-- Records (the checks of DESIGN.md §4, as adapters/file.lua makes them)

local STATUSES = { pending = true, scheduled = true, running = true, paused = true, failed = true }
local STATUS_LIST = "pending, scheduled, running, paused or failed"
local TRIGGER_TYPES = { interval = true, cron = true, date = true }
local TIME_FIELDS = { "next_run_time", "created_at", "updated_at", "last_run_time",
  "last_scheduled_time", "lease_until" }
local FILTER_KEYS = "status, trigger_type, next_run_time_lte/gte, updated_at_lte/gte, "
  .. "metadata.<key>, job_id_in"
local NO_DUE = 9000000000000000000 -- sorts after every real time
local STALE_POINTER_US = 60 * 1000000
local MAX_RETRIES = 50

local function to_us(value, what)
  if math.type(value) == "integer" then return value end
  if type(value) == "string" then
    local ok, us = pcall(parse_time, value)
    if ok then return us end
    fail("invalid", "%s: %s", what, message_of(us))
  end
  fail("invalid", "%s: expected an ISO-8601 time or integer microseconds, got %s", what, type(value))
end

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

local function check_id(id, what)
  if type(id) ~= "string" or id == "" then
    fail("invalid", "%s: job id must be a non-empty string, got %s", what, type(id))
  end
end

local function check_record(job)
  if type(job) ~= "table" then fail("invalid", "create_job: a job must be a table, got %s", type(job)) end
  if type(job.job_id) ~= "string" or job.job_id == "" then
    fail("invalid", "create_job: field 'job_id' is required (a non-empty string)")
  end
  local rec = {}
  for k, v in pairs(job) do
    if v ~= null then rec[k] = v end
  end
  local where = ("job '%s'"):format(rec.job_id)
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

-- The partition of a tenant value (metadata.tenant_id); JOBS for none.
local function partition_of(tenant)
  if type(tenant) == "string" and tenant ~= "" then return tenant end
  if math.type(tenant) == "integer" then return tostring(tenant) end
  return "JOBS"
end

local function tenant_pk(job)
  return partition_of(type(job.metadata) == "table" and job.metadata.tenant_id or nil)
end

local function N(i) return { N = ("%d"):format(i) } end
local function S(s) return { S = s } end

local function job_key(pk, id) return { PK = S(pk), SK = S("JOB#" .. id) } end
local function pointer_key(id) return { PK = S("ID#" .. id), SK = S("ID") } end

-- The item of a record (doc = its JSON text).
local function job_item(pk, job, doc)
  local item = job_key(pk, job.job_id)
  item.job_id = S(job.job_id)
  item.doc = S(doc)
  item.st = S(job.status)
  item.due = N(job.next_run_time and parse_time(job.next_run_time) or NO_DUE)
  item.upd = N(parse_time(job.updated_at))
  item.pri = N(math.tointeger(job.priority) or 5)
  if type(job.trigger_type) == "string" and job.trigger_type ~= "" then item.tt = S(job.trigger_type) end
  if type(job.claimed_by) == "string" and job.claimed_by ~= "" then item.claimed = S(job.claimed_by) end
  if job.lease_until then item.lease = N(parse_time(job.lease_until)) end
  return item
end

-- A stored item as an entry: { pk, upd, job (a fresh copy), moved, item }.
local function entry_of(item)
  local e = { pk = item.PK.S, item = item, upd = math.tointeger(tonumber(item.upd.N)) }
  if item.moved then
    e.moved = item.moved.S
    return e
  end
  e.job = json.decode(item.doc.S)
  e.nrt = tonumber(item.due.N)
  if e.nrt == NO_DUE then e.nrt = nil end
  return e
end

local function encode_record(rec)
  local ok, text = pcall(json.encode, rec)
  if not ok then fail("invalid", "job '%s': cannot be stored: %s", tostring(rec.job_id), message_of(text)) end
  return text
end

-- ---------------------------------------------------------------------------
-- The store

local Store = {}
Store.__index = Store

function Store:call(op, payload, ccf_ok)
  if self.closed then error("attempt to use a closed store", 3) end
  self:ensure_table()
  payload.TableName = payload.TableName or self.table
  return self.client:call(op, payload, ccf_ok)
end

-- Creates the table and its index when asked to and missing, once, before
-- the first call; concurrent first calls wait for it.
function Store:ensure_table()
  if self.ready then return end
  while self.ensuring do chronis.sleep(0.01) end
  if self.ready then return end
  self.ensuring = true
  local ok, err = pcall(function()
    if self.create_table then M.create_table(self.client, self.table) end
  end)
  self.ensuring = false
  if not ok then error(err, 0) end
  self.ready = true
end

--- create_table(client, name): creates the table and its GSI unless it
--- exists, and waits until both are ACTIVE.
function M.create_table(client, name)
  local ok, res = client:attempt("DescribeTable", { TableName = name })
  if not ok and res.type ~= "ResourceNotFoundException" then
    client:call("DescribeTable", { TableName = name }) -- raises the error
  end
  if not ok then
    local cok, cres = client:attempt("CreateTable", {
      TableName = name,
      AttributeDefinitions = {
        { AttributeName = "PK", AttributeType = "S" }, { AttributeName = "SK", AttributeType = "S" },
        { AttributeName = "st", AttributeType = "S" }, { AttributeName = "due", AttributeType = "N" },
      },
      KeySchema = { { AttributeName = "PK", KeyType = "HASH" }, { AttributeName = "SK", KeyType = "RANGE" } },
      GlobalSecondaryIndexes = { {
        IndexName = "by_status",
        KeySchema = { { AttributeName = "st", KeyType = "HASH" }, { AttributeName = "due", KeyType = "RANGE" } },
        Projection = { ProjectionType = "ALL" },
      } },
      BillingMode = "PAY_PER_REQUEST",
    })
    -- Another process creating it at the same time is fine.
    if not cok and cres.type ~= "ResourceInUseException" then
      client:call("CreateTable", { TableName = name }) -- raises a useful error
    end
  end
  for _ = 1, 600 do
    local d = client:call("DescribeTable", { TableName = name }).Table
    local active = d.TableStatus == "ACTIVE"
    for _, g in ipairs(d.GlobalSecondaryIndexes or {}) do
      if g.IndexStatus ~= "ACTIVE" then active = false end
    end
    if active then return end
    chronis.sleep(0.05)
  end
  fail("unavailable", "dynamodb table '%s' did not become ACTIVE", name)
end

function Store:stamp(prev_us)
  local now = chronis.time.now()
  if prev_us and now <= prev_us then now = prev_us + 1 end
  return now
end

function Store:remember(id, pk)
  if self.ncached >= 100000 then self.where, self.ncached = {}, 0 end
  if self.where[id] == nil then self.ncached = self.ncached + 1 end
  self.where[id] = pk
end

function Store:forget(id)
  if self.where[id] ~= nil then
    self.where[id] = nil
    self.ncached = self.ncached - 1
  end
end

function Store:get_item(key)
  local res = self:call("GetItem", { Key = key, ConsistentRead = true })
  return res.Item
end

-- Steps 2-4 of a move (see the top of this file); idempotent.
function Store:finish_move(id, from, to, mdoc, upd)
  local job = json.decode(mdoc)
  self:call("PutItem", {
    Item = job_item(to, job, mdoc),
    ConditionExpression = "attribute_not_exists(PK) OR upd < :u",
    ExpressionAttributeValues = { [":u"] = N(upd) },
  }, true)
  self:call("UpdateItem", {
    Key = pointer_key(id),
    UpdateExpression = "SET tenant = :to",
    ConditionExpression = "tenant = :from",
    ExpressionAttributeValues = { [":to"] = S(to), [":from"] = S(from) },
  }, true)
  self:call("DeleteItem", {
    Key = job_key(from, id),
    ConditionExpression = "moved = :to AND upd = :u",
    ExpressionAttributeValues = { [":to"] = S(to), [":u"] = N(upd) },
  }, true)
  self:remember(id, to)
end

function Store:help_move(e)
  self:finish_move(e.item.job_id.S, e.pk, e.moved, e.item.mdoc.S, e.upd)
end

-- The live entry of id, or nil. Tries the remembered partition first.
function Store:locate(id)
  for _ = 1, 10 do
    local pk = self.where[id]
    local item
    if pk then item = self:get_item(job_key(pk, id)) end
    if item == nil then
      local p = self:get_item(pointer_key(id))
      if p == nil then
        self:forget(id)
        return nil
      end
      pk = p.tenant.S
      item = self:get_item(job_key(pk, id))
      if item == nil then
        self:forget(id)
        return nil, p
      end
    end
    local e = entry_of(item)
    if not e.moved then
      self:remember(id, e.pk)
      return e
    end
    self:help_move(e)
  end
  fail("conflict", "job '%s' keeps moving between tenants", id)
end

-- BatchGetItem for many keys, all answers, in chunks of 100.
function Store:batch_get(keys)
  local out = {}
  for first = 1, #keys, 100 do
    local chunk = table.move(keys, first, math.min(first + 99, #keys), 1, {})
    local pending, tries = chunk, 0
    while #pending > 0 do
      local res = self:call("BatchGetItem", {
        RequestItems = { [self.table] = { Keys = pending, ConsistentRead = true } },
      })
      for _, item in ipairs((res.Responses or {})[self.table] or {}) do out[#out + 1] = item end
      local un = res.UnprocessedKeys and res.UnprocessedKeys[self.table]
      pending = un and un.Keys or {}
      if #pending > 0 then
        tries = tries + 1
        if tries > 10 then fail("unavailable", "dynamodb BatchGetItem: keys left unprocessed 10 times") end
        chronis.sleep(math.min(1, 0.02 * 2 ^ tries))
      end
    end
  end
  return out
end

-- id -> entry for the ids found (ids deduplicated).
function Store:locate_many(ids)
  local found, seen, ask = {}, {}, {}
  for _, id in ipairs(ids) do
    if not seen[id] then
      seen[id] = true
      ask[#ask + 1] = id
    end
  end
  if #ask == 0 then return found end
  local keys = {}
  for i, id in ipairs(ask) do keys[i] = pointer_key(id) end
  local pointers = {}
  for _, p in ipairs(self:batch_get(keys)) do pointers[p.PK.S:sub(4)] = p.tenant.S end
  keys = {}
  for _, id in ipairs(ask) do
    if pointers[id] then keys[#keys + 1] = job_key(pointers[id], id) end
  end
  for _, item in ipairs(self:batch_get(keys)) do
    local e = entry_of(item)
    local id = item.SK.S:sub(5)
    if e.moved then e = self:locate(id) end
    if e then
      found[id] = e
      self:remember(id, e.pk)
    end
  end
  return found
end

-- Writes job (the new record of entry e's job) if e is still current.
-- Returns true, or false when someone else wrote first.
function Store:write(e, job)
  local doc = encode_record(job)
  local pk = tenant_pk(job)
  local id = job.job_id
  local upd = parse_time(job.updated_at)
  if pk == e.pk then
    local res = self:call("PutItem", {
      Item = job_item(pk, job, doc),
      ConditionExpression = "upd = :u AND attribute_not_exists(moved)",
      ExpressionAttributeValues = { [":u"] = N(e.upd) },
    }, true)
    return res ~= nil, doc
  end
  local res = self:call("UpdateItem", {
    Key = job_key(e.pk, id),
    UpdateExpression = "SET moved = :to, mdoc = :doc, upd = :nu REMOVE st, due",
    ConditionExpression = "upd = :u AND attribute_not_exists(moved)",
    ExpressionAttributeValues = { [":to"] = S(pk), [":doc"] = S(doc), [":nu"] = N(upd), [":u"] = N(e.upd) },
  }, true)
  if res == nil then return false end
  self:finish_move(id, e.pk, pk, doc, upd)
  return true, doc
end

-- The record e's job becomes with updates u (null removes a field).
function Store:merged(e, u)
  local rec = shallow_copy(e.job)
  for k, v in pairs(u) do
    if v == null then rec[k] = nil else rec[k] = v end
  end
  rec.updated_at = format_time(self:stamp(e.upd))
  return rec
end

-- ---- operations (DESIGN.md §4)

function Store:create_job(job)
  local rec = check_record(job)
  local id = rec.job_id
  local now = self:stamp()
  rec.updated_at = format_time(now)
  local doc = encode_record(rec)
  local pk = tenant_pk(rec)
  local item = job_item(pk, rec, doc)
  local pointer = { PK = S("ID#" .. id), SK = S("ID"), tenant = S(pk), created = N(now) }
  for attempt = 1, 3 do
    if self:call("PutItem", { Item = pointer, ConditionExpression = "attribute_not_exists(PK)" }, true) then
      break
    end
    -- The id is taken, unless its pointer is a leftover of a create that
    -- died before writing the job (old, and no job where it points), or
    -- was deleted a moment ago.
    local e, p = self:locate(id)
    if e or attempt == 3 then fail("duplicate", "job '%s' already exists", id) end
    if p then
      local stale = now - math.tointeger(tonumber(p.created.N)) > STALE_POINTER_US
      if not stale or self:call("PutItem", {
        Item = pointer,
        ConditionExpression = "created = :c",
        ExpressionAttributeValues = { [":c"] = p.created },
      }, true) == nil then
        fail("duplicate", "job '%s' already exists", id)
      end
      break
    end
  end
  local ok, err = pcall(self.call, self, "PutItem", { Item = item })
  if not ok then
    pcall(self.call, self, "DeleteItem", {
      Key = pointer_key(id), ConditionExpression = "created = :c",
      ExpressionAttributeValues = { [":c"] = N(now) },
    }, true)
    error(err, 0)
  end
  self:remember(id, pk)
  return json.decode(doc)
end

function Store:get_job(id)
  check_id(id, "get_job")
  local e = self:locate(id)
  return e and e.job
end

function Store:get_jobs_batch(ids)
  if type(ids) ~= "table" then fail("invalid", "get_jobs_batch: expected an array of ids") end
  for _, id in ipairs(ids) do check_id(id, "get_jobs_batch") end
  local out = {}
  for id, e in pairs(self:locate_many(ids)) do out[id] = e.job end
  return out
end

function Store:update_job(id, updates)
  check_id(id, "update_job")
  local u = check_updates(id, updates)
  for _ = 1, MAX_RETRIES do
    local e = self:locate(id)
    if e == nil then fail("not_found", "job '%s' not found", id) end
    local ok, doc = self:write(e, self:merged(e, u))
    if ok then return json.decode(doc) end
  end
  fail("conflict", "update_job: job '%s' kept changing", id)
end

function Store:compare_and_swap_job(id, expected, updates)
  check_id(id, "compare_and_swap_job")
  if type(expected) ~= "table" then
    fail("invalid", "job '%s': expected must be a table, got %s", id, type(expected))
  end
  local want = shallow_copy(expected)
  check_fields(want, ("job '%s': expected"):format(id), true)
  local u = check_updates(id, updates)
  for _ = 1, MAX_RETRIES do
    local e = self:locate(id)
    if e == nil then fail("not_found", "job '%s' not found", id) end
    if not matches(e.job, want) then return false, nil end
    local ok, doc = self:write(e, self:merged(e, u))
    if ok then return true, json.decode(doc) end
  end
  fail("conflict", "compare_and_swap_job: job '%s' kept changing", id)
end

-- Deletes e's item (when cond holds) and then its pointer.
function Store:remove(e, id, cond, values)
  local res = self:call("DeleteItem", {
    Key = job_key(e.pk, id),
    ConditionExpression = cond,
    ExpressionAttributeValues = values,
  }, true)
  if res == nil then return false end
  self:call("DeleteItem", {
    Key = pointer_key(id),
    ConditionExpression = "tenant = :pk",
    ExpressionAttributeValues = { [":pk"] = S(e.pk) },
  }, true)
  self:forget(id)
  return true
end

function Store:delete_job(id)
  check_id(id, "delete_job")
  for _ = 1, MAX_RETRIES do
    local e = self:locate(id)
    if e == nil then return false end
    if self:remove(e, id, "attribute_exists(PK) AND attribute_not_exists(moved)") then return true end
  end
  fail("conflict", "delete_job: job '%s' kept changing", id)
end

-- filters -> { test(entry), ids, tenant, status, where (server-side
-- FilterExpression parts), values, bounds }
local function compile_filters(filters)
  local f = { tests = {}, where = {}, due_where = {}, values = {}, n = 0 }
  if filters == nil then return f end
  if type(filters) ~= "table" then fail("invalid", "filters must be a table, got %s", type(filters)) end
  local function value(v)
    f.n = f.n + 1
    local name = ":f" .. f.n
    f.values[name] = v
    return name
  end
  for key, want in pairs(filters) do
    local field, op = nil, nil
    if type(key) == "string" then field, op = key:match("^(.+)_([lg]te)$") end
    if key == "status" then
      local list = type(want) == "table" and want or { want }
      local set = {}
      for _, s in ipairs(list) do
        if not STATUSES[s] then fail("invalid", "invalid filter 'status': expected %s", STATUS_LIST) end
        set[s] = true
      end
      if #list == 1 then f.status = list[1] end
      f.tests[#f.tests + 1] = function(e) return set[e.job.status] == true end
    elseif key == "trigger_type" then
      if not TRIGGER_TYPES[want] then
        fail("invalid", "invalid filter 'trigger_type': expected interval, cron or date")
      end
      f.where[#f.where + 1] = "tt = " .. value(S(want))
      f.tests[#f.tests + 1] = function(e) return e.job.trigger_type == want end
    elseif field == "next_run_time" or field == "updated_at" then
      local bound = to_us(want, ("invalid filter '%s'"):format(key))
      if field == "next_run_time" then
        f.nrt = f.nrt or {}
        f.nrt[op] = f.nrt[op] and (op == "lte" and math.min(f.nrt[op], bound) or math.max(f.nrt[op], bound)) or bound
        -- due is the index's sort key: these parts serve the table only.
        f.due_where[#f.due_where + 1] = ("due %s %s"):format(op == "lte" and "<=" or ">=", value(N(bound)))
        if op == "gte" then f.due_where[#f.due_where + 1] = "due < " .. value(N(NO_DUE)) end
        f.tests[#f.tests + 1] = function(e)
          if e.nrt == nil then return false end
          if op == "lte" then return e.nrt <= bound end
          return e.nrt >= bound
        end
      else
        f.where[#f.where + 1] = ("upd %s %s"):format(op == "lte" and "<=" or ">=", value(N(bound)))
        f.tests[#f.tests + 1] = function(e)
          if op == "lte" then return e.upd <= bound end
          return e.upd >= bound
        end
      end
    elseif key == "job_id_in" then
      if type(want) ~= "table" then fail("invalid", "invalid filter 'job_id_in': expected an array of ids") end
      f.ids = {}
      for _, id in ipairs(want) do
        if type(id) ~= "string" then fail("invalid", "invalid filter 'job_id_in': ids must be strings") end
        f.ids[#f.ids + 1] = id
      end
    elseif type(key) == "string" and key:match("^metadata%.[^.]") then
      local path = key:sub(#"metadata." + 1)
      if path == "tenant_id" then f.tenant = partition_of(want) end
      f.tests[#f.tests + 1] = function(e) return same(metadata_at(e.job, path), want) end
    else
      fail("invalid", "invalid filter '%s': unknown key (expected %s)", tostring(key), FILTER_KEYS)
    end
  end
  return f
end

local function passes(f, e)
  for _, test in ipairs(f.tests) do
    if not test(e) then return false end
  end
  return true
end

-- Runs a Query or Scan to its last page; calls each(item) for every item.
-- DynamoDB refuses expression values that no expression uses: drop them.
function Store:each_page(op, req, each)
  local text = (req.KeyConditionExpression or "") .. " " .. (req.FilterExpression or "")
  local values = {}
  for name, v in pairs(req.ExpressionAttributeValues or {}) do
    if text:find(name .. "%f[^%w_]") then values[name] = v end
  end
  req.ExpressionAttributeValues = next(values) and values or nil
  repeat
    local res = self:call(op, req)
    for _, item in ipairs(res.Items or {}) do each(item) end
    req.ExclusiveStartKey = res.LastEvaluatedKey
  until req.ExclusiveStartKey == nil
end

-- The entries that match f, from the narrowest source: the ids, the
-- tenant's partition, the status index, or a scan of the table.
function Store:select(f)
  local found = {}
  local function take(item)
    local e = entry_of(item)
    if not e.moved and passes(f, e) then found[#found + 1] = e end
  end
  if f.ids then
    for _, e in pairs(self:locate_many(f.ids)) do
      if passes(f, e) then found[#found + 1] = e end
    end
    return found
  end
  local where = { "attribute_not_exists(moved)" }
  for _, w in ipairs(f.where) do where[#where + 1] = w end
  local values = shallow_copy(f.values)
  if not f.status or f.tenant then
    for _, w in ipairs(f.due_where) do where[#where + 1] = w end
  end
  if f.tenant then
    values[":pk"], values[":job"] = S(f.tenant), S("JOB#")
    if f.status then
      where[#where + 1] = "st = :st"
      values[":st"] = S(f.status)
    end
    self:each_page("Query", {
      KeyConditionExpression = "PK = :pk AND begins_with(SK, :job)",
      FilterExpression = table.concat(where, " AND "),
      ExpressionAttributeValues = values, ConsistentRead = true,
    }, take)
  elseif f.status then
    values[":st"] = S(f.status)
    local key = "st = :st"
    local lo, hi = f.nrt and f.nrt.gte, f.nrt and f.nrt.lte
    if lo and not hi then hi = NO_DUE - 1 end
    if lo and hi then
      if lo > hi then return found end
      key = key .. " AND due BETWEEN :lo AND :hi"
      values[":lo"], values[":hi"] = N(lo), N(hi)
    elseif hi then
      key = key .. " AND due <= :hi"
      values[":hi"] = N(hi)
    end
    self:each_page("Query", {
      IndexName = "by_status", KeyConditionExpression = key,
      FilterExpression = table.concat(where, " AND "), ExpressionAttributeValues = values,
    }, take)
  else
    where[#where + 1] = "begins_with(SK, :job)"
    values[":job"] = S("JOB#")
    self:each_page("Scan", {
      FilterExpression = table.concat(where, " AND "),
      ExpressionAttributeValues = values, ConsistentRead = true,
    }, take)
  end
  return found
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

function Store:query_jobs(filters, limit, offset)
  check_count(limit, "limit")
  check_count(offset, "offset")
  local found = self:select(compile_filters(filters))
  table.sort(found, query_order)
  local out = {}
  local first = (offset or 0) + 1
  local last = limit and math.min(#found, first + limit - 1) or #found
  for i = first, last do out[#out + 1] = found[i].job end
  return out
end

function Store:count_jobs(filters)
  return #self:select(compile_filters(filters))
end

local function lease_opts(opts, what)
  if type(opts) ~= "table" then fail("invalid", "%s: options must be a table", what) end
  if type(opts.owner) ~= "string" or opts.owner == "" then
    fail("invalid", "%s: 'owner' must be a non-empty string", what)
  end
  local now = opts.now == nil and chronis.time.now() or to_us(opts.now, what .. ": invalid 'now'")
  local lease = opts.lease_seconds or 30
  if type(lease) ~= "number" or lease < 0 then
    fail("invalid", "%s: 'lease_seconds' must be a non-negative number", what)
  end
  check_count(opts.limit, what .. ": 'limit'")
  return now, opts.owner, format_time(now + math.floor(lease * 1000000)), opts.limit or 100
end

-- Runs fn(x, i) for every x of list, up to PARALLEL at once (each worker a
-- task of its own, so their requests overlap); raises the first error once
-- every worker has ended.
local PARALLEL = 16
local function each_parallel(list, fn)
  if #list <= 1 then
    for i, x in ipairs(list) do fn(x, i) end
    return
  end
  local last, first_err = 0, nil
  local function worker()
    while first_err == nil and last < #list do
      last = last + 1
      local i = last
      local ok, err = pcall(fn, list[i], i)
      if not ok and first_err == nil then first_err = err end
    end
  end
  local tasks = {}
  for w = 1, math.min(PARALLEL, #list) do tasks[w] = chronis.spawn(worker) end
  for _, t in ipairs(tasks) do t:join() end
  if first_err ~= nil then error(first_err, 0) end
end

-- Due jobs come from the status index (keys and order only); the best
-- `limit` of them are read from the table and each is claimed with a write
-- conditional on its upd and status, so of racing claimers exactly one
-- gets a job and the others go on to the next candidates.
function Store:claim_due_jobs(opts)
  local now, owner, lease_until, limit = lease_opts(opts, "claim_due_jobs")
  local due = {}
  if limit == 0 then return due end
  self:each_page("Query", {
    IndexName = "by_status",
    KeyConditionExpression = "st = :st AND due <= :now",
    FilterExpression = "attribute_not_exists(moved)",
    ProjectionExpression = "PK, SK, pri, due",
    ExpressionAttributeValues = { [":st"] = S("scheduled"), [":now"] = N(now) },
  }, function(item)
    due[#due + 1] = { pk = item.PK.S, id = item.SK.S:sub(5), pri = tonumber(item.pri.N),
      nrt = tonumber(item.due.N) }
  end)
  table.sort(due, function(a, b)
    if a.pri ~= b.pri then return a.pri > b.pri end
    if a.nrt ~= b.nrt then return a.nrt < b.nrt end
    return a.id < b.id
  end)
  local won, pos = {}, 1
  while #won < limit and pos <= #due do
    local keys = {}
    while #keys < limit - #won and pos <= #due do
      keys[#keys + 1] = job_key(due[pos].pk, due[pos].id)
      pos = pos + 1
    end
    local ready = {}
    for _, item in ipairs(self:batch_get(keys)) do
      local e = entry_of(item)
      if not e.moved and e.job.status == "scheduled" and e.nrt and e.nrt <= now then ready[#ready + 1] = e end
    end
    each_parallel(ready, function(e)
      local rec = self:merged(e, { status = "running", claimed_by = owner, lease_until = lease_until })
      local doc = encode_record(rec)
      local res = self:call("PutItem", {
        Item = job_item(e.pk, rec, doc),
        ConditionExpression = "upd = :u AND st = :st AND attribute_not_exists(moved)",
        ExpressionAttributeValues = { [":u"] = N(e.upd), [":st"] = S("scheduled") },
      }, true)
      if res ~= nil then
        self:remember(rec.job_id, e.pk)
        won[#won + 1] = e
        e.claimed = json.decode(doc)
      end
    end)
  end
  table.sort(won, claim_order)
  local claimed = {}
  for i, e in ipairs(won) do claimed[i] = e.claimed end
  return claimed
end

-- One completion: true, or false and "not_found" / "conflict".
function Store:complete_one(item)
  local id, owner = item.job_id, item.owner
  -- A deletion by the owner needs no read when the partition is known.
  local pk = self.where[id]
  if item.delete and pk and self:remove({ pk = pk }, id,
      "claimed = :o AND st = :running AND attribute_not_exists(moved)",
      { [":o"] = S(owner), [":running"] = S("running") }) then
    return true
  end
  for _ = 1, MAX_RETRIES do
    local e = self:locate(id)
    if e == nil then return false, "not_found" end
    if e.job.claimed_by ~= owner then return false, "conflict" end
    local done
    if item.delete then
      done = self:remove(e, id, "upd = :u AND attribute_not_exists(moved)", { [":u"] = N(e.upd) })
    else
      done = self:write(e, self:merged(e, item.updates))
    end
    if done then return true end
  end
  return false, "conflict"
end

function Store:complete_jobs(list)
  if type(list) ~= "table" then fail("invalid", "complete_jobs: expected an array of completions") end
  local items = {}
  for i, item in ipairs(list) do
    if type(item) ~= "table" or type(item.job_id) ~= "string" or type(item.owner) ~= "string" then
      fail("invalid", "complete_jobs: item %d needs job_id and owner (strings)", i)
    end
    items[i] = { job_id = item.job_id, owner = item.owner, delete = item.delete and true or false,
      updates = not item.delete and check_updates(item.job_id, item.updates or {}) or nil }
  end
  local results = {}
  each_parallel(items, function(item, i)
    local ok, code = self:complete_one(item)
    results[i] = { job_id = item.job_id, ok = ok, code = code }
  end)
  return results
end

function Store:recover_expired_leases(now)
  now = now == nil and chronis.time.now() or to_us(now, "recover_expired_leases: invalid 'now'")
  local expired = {}
  self:each_page("Query", {
    IndexName = "by_status",
    KeyConditionExpression = "st = :st",
    FilterExpression = "lease < :now AND attribute_not_exists(moved)",
    ExpressionAttributeValues = { [":st"] = S("running"), [":now"] = N(now) },
  }, function(item)
    local e = entry_of(item)
    if not e.moved then expired[#expired + 1] = e end
  end)
  local n = 0
  for _, e in ipairs(expired) do
    local lease = e.job.lease_until and parse_time(e.job.lease_until)
    if e.job.status == "running" and lease and lease < now then
      local ok = self:write(e, self:merged(e, { status = "scheduled", claimed_by = null, lease_until = null }))
      if ok then n = n + 1 end
    end
  end
  return n
end

function Store:extend_leases(opts)
  local _, owner, lease_until = lease_opts(opts, "extend_leases")
  if type(opts.ids) ~= "table" then fail("invalid", "extend_leases: 'ids' must be an array of ids") end
  local n = 0
  for id, e in pairs(self:locate_many(opts.ids)) do
    for _ = 1, MAX_RETRIES do
      if e == nil or e.job.status ~= "running" or e.job.claimed_by ~= owner then break end
      if self:write(e, self:merged(e, { lease_until = lease_until })) then
        n = n + 1
        break
      end
      e = self:locate(id)
    end
  end
  return n
end

function Store:close()
  self.closed = true
end

-- ---------------------------------------------------------------------------
-- Options

local OPTIONS = { table = true, region = true, endpoint = true, create_table = true,
  access_key_id = true, secret_access_key = true, session_token = true, timeout = true,
  max_retries = true, adapter_timeout = true }

local function bool_opt(v, name)
  if v == nil then return false end
  if type(v) == "boolean" then return v end
  if v == "true" or v == "1" or v == "yes" then return true end
  if v == "false" or v == "0" or v == "no" then return false end
  fail("invalid", "dynamodb store: option '%s' must be true or false, got %s", name, tostring(v))
end

local function env(name)
  local v = os.getenv(name)
  if v == "" then return nil end
  return v
end

-- The store's options, with credentials and region from the AWS
-- environment variables when not given.
function M.options(opts)
  opts = opts or {}
  if type(opts) ~= "table" then fail("invalid", "dynamodb store: options must be a table") end
  for k in pairs(opts) do
    if not OPTIONS[k] then
      fail("invalid", "dynamodb store: unknown option '%s' (expected table, region, endpoint, "
        .. "create_table, access_key_id, secret_access_key, session_token, timeout, max_retries)", tostring(k))
    end
  end
  local o = {}
  o.table = opts.table
  if type(o.table) ~= "string" or not o.table:match("^[%w_.%-]+$") or #o.table < 3 or #o.table > 255 then
    fail("invalid", "dynamodb store: option 'table' is required (3-255 characters of a-z A-Z 0-9 _ - .)")
  end
  o.region = opts.region or env("AWS_REGION") or env("AWS_DEFAULT_REGION") or "us-east-1"
  o.endpoint = opts.endpoint or ("https://dynamodb.%s.amazonaws.com"):format(o.region)
  if type(o.endpoint) ~= "string" or not split_url(o.endpoint) then
    fail("invalid", "dynamodb store: option 'endpoint' must be an http(s) URL, got %s", tostring(o.endpoint))
  end
  o.access_key_id = opts.access_key_id or env("AWS_ACCESS_KEY_ID")
  o.secret_access_key = opts.secret_access_key or env("AWS_SECRET_ACCESS_KEY")
  o.session_token = opts.session_token or (opts.access_key_id == nil and env("AWS_SESSION_TOKEN")) or nil
  if not o.access_key_id or not o.secret_access_key then
    fail("invalid", "dynamodb store: no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
      .. "(and AWS_SESSION_TOKEN for temporary ones) or give access_key_id and secret_access_key")
  end
  o.create_table = bool_opt(opts.create_table, "create_table")
  o.timeout = tonumber(opts.timeout) or 10
  o.max_retries = math.tointeger(tonumber(opts.max_retries)) or 8
  return o
end

--- new(opts) -> the store's adapter table. Does no I/O: the table is
--- checked (and created with create_table) by the first call.
function M.new(opts)
  local o = M.options(opts)
  return setmetatable({
    table = o.table, create_table = o.create_table, client = M.client(o),
    where = {}, ncached = 0, -- job id -> partition, a hint checked on use
    ready = false, ensuring = false, closed = false,
  }, Store)
end

M.Store = Store
M.NO_DUE = NO_DUE

return M
