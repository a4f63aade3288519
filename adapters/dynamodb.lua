-- dynamodb.lua - the Amazon DynamoDB store, written in Lua on chronis.http,
-- with chronis.aws for the AWS side (SigV4 signing, credentials, the
-- DynamoDB client with its retries and error mapping) and
-- chronis.adapter_kit for the checks, comparisons, filters and orders that
-- every Lua adapter shares:
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

local aws = require "chronis.aws"
local kit = require "chronis.adapter_kit"

local json = chronis.json
local null = json.null
local parse_time, format_time = chronis.time.parse, chronis.time.format
local fail, message_of, copy = kit.fail, kit.message_of, kit.copy
local S, N = aws.dynamodb.S, aws.dynamodb.N

local M = {}

--- client(opts): the DynamoDB client the store uses (chronis.aws's), for
--- tools and specs that talk to the store's table directly.
M.client = aws.dynamodb.client

local NO_DUE = 9000000000000000000 -- sorts after every real time
local STALE_POINTER_US = 60 * 1000000
local MAX_RETRIES = 50

-- Stricter than the kit's check_id: this store has always refused an empty
-- id as well.
local function check_id(id, what)
  if type(id) ~= "string" or id == "" then
    fail("invalid", "%s: job id must be a non-empty string, got %s", what, type(id))
  end
  kit.check_id(id, what)
end

-- The kit's lease_options, but the owner must not be empty: a claim is
-- recognised by its `claimed` attribute, which an empty owner never sets.
local function lease_options(opts, what)
  if type(opts) == "table" and (type(opts.owner) ~= "string" or opts.owner == "") then
    fail("invalid", "%s: 'owner' must be a non-empty string", what)
  end
  return kit.lease_options(opts, what)
end

-- The record of an entry, for the kit's sorts.
local function job_of(e) return e.job end

-- The partition of a tenant value (metadata.tenant_id); JOBS for none.
local function partition_of(tenant)
  if type(tenant) == "string" and tenant ~= "" then return tenant end
  if math.type(tenant) == "integer" then return tostring(tenant) end
  return "JOBS"
end

local function tenant_pk(job)
  return partition_of(type(job.metadata) == "table" and job.metadata.tenant_id or nil)
end

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
  return e
end

local function encode_record(rec)
  local ok, text = pcall(json.encode, rec)
  if not ok then fail("invalid", "job '%s': cannot be stored: %s", tostring(rec.job_id), message_of(text)) end
  return text
end

local Store = {}
Store.__index = Store

function Store:call(op, payload, ccf_ok)
  kit.check_open(self)
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

-- The record e's job becomes with checked updates u (null removes a field).
function Store:merged(e, u)
  local rec = kit.apply(copy(e.job), u)
  rec.updated_at = format_time(self:stamp(e.upd))
  return rec
end

-- The operations (docs/adapters.md).

function Store:create_job(job)
  local rec = kit.check_record(job, "create_job")
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
  local u = kit.check_updates(id, updates)
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
  local want = kit.check_expected(id, expected)
  local u = kit.check_updates(id, updates)
  for _ = 1, MAX_RETRIES do
    local e = self:locate(id)
    if e == nil then fail("not_found", "job '%s' not found", id) end
    if not kit.matches(e.job, want) then return false, nil end
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

-- The plan of a query for filters: the kit's match(rec) (which checks
-- every key first) and the ids of job_id_in, plus what DynamoDB can narrow
-- by: the tenant's partition, a single status (the index), the bounds on
-- next_run_time (nrt.lte/gte; the index's sort key, `due`), and
-- FilterExpression parts (where for any source, due_where for the table
-- only) with their values.
local function plan(filters)
  local f = { where = {}, due_where = {}, values = {}, n = 0 }
  f.match, f.ids = kit.compile_filters(filters)
  local function value(v)
    f.n = f.n + 1
    local name = ":f" .. f.n
    f.values[name] = v
    return name
  end
  for key, want in pairs(filters or {}) do
    local field, op = nil, nil
    if type(key) == "string" then field, op = key:match("^(.+)_([lg]te)$") end
    local cmp = op == "lte" and "<=" or ">="
    if key == "status" then
      local list = type(want) == "table" and want or { want }
      if #list == 1 then f.status = list[1] end
    elseif key == "trigger_type" then
      f.where[#f.where + 1] = "tt = " .. value(S(want))
    elseif field == "next_run_time" then
      local bound = kit.to_us(want, key)
      f.nrt = f.nrt or {}
      f.nrt[op] = f.nrt[op] and (op == "lte" and math.min(f.nrt[op], bound) or math.max(f.nrt[op], bound)) or bound
      f.due_where[#f.due_where + 1] = ("due %s %s"):format(cmp, value(N(bound)))
      if op == "gte" then f.due_where[#f.due_where + 1] = "due < " .. value(N(NO_DUE)) end
    elseif field == "updated_at" then
      f.where[#f.where + 1] = ("upd %s %s"):format(cmp, value(N(kit.to_us(want, key))))
    elseif key == "metadata.tenant_id" then
      f.tenant = partition_of(want)
    end
  end
  return f
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
    if not e.moved and f.match(e.job) then found[#found + 1] = e end
  end
  if f.ids then
    for _, e in pairs(self:locate_many(f.ids)) do
      if f.match(e.job) then found[#found + 1] = e end
    end
    return found
  end
  local where = { "attribute_not_exists(moved)" }
  for _, w in ipairs(f.where) do where[#where + 1] = w end
  local values = copy(f.values)
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

function Store:query_jobs(filters, limit, offset)
  kit.check_count(limit, "limit")
  kit.check_count(offset, "offset")
  local found = kit.sort_query(self:select(plan(filters)), job_of)
  local out = kit.page(found, limit, offset)
  for i, e in ipairs(out) do out[i] = e.job end
  return out
end

function Store:count_jobs(filters)
  return #self:select(plan(filters))
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
  local now, owner, lease_until, limit = lease_options(opts, "claim_due_jobs")
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
      if not e.moved and kit.is_due(e.job, now) then ready[#ready + 1] = e end
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
  kit.sort_claim(won, job_of)
  local claimed = {}
  for i, e in ipairs(won) do claimed[i] = e.claimed end
  return claimed
end

-- The result of one checked completion item (kit.completion_result's).
function Store:complete_one(item)
  local id = item.job_id
  -- A deletion by the owner needs no read when the partition is known.
  local pk = self.where[id]
  if item.delete and pk and self:remove({ pk = pk }, id,
      "claimed = :o AND st = :running AND attribute_not_exists(moved)",
      { [":o"] = S(item.owner), [":running"] = S("running") }) then
    return { job_id = id, ok = true }
  end
  for _ = 1, MAX_RETRIES do
    local e = self:locate(id)
    local result = kit.completion_result(item, e and e.job)
    if not result.ok then return result end
    local done
    if item.delete then
      done = self:remove(e, id, "upd = :u AND attribute_not_exists(moved)", { [":u"] = N(e.upd) })
    else
      done = self:write(e, self:merged(e, item.updates))
    end
    if done then return result end
  end
  return { job_id = id, ok = false, code = "conflict" }
end

function Store:complete_jobs(list)
  local items = kit.check_completions(list)
  local results = {}
  each_parallel(items, function(item, i) results[i] = self:complete_one(item) end)
  return results
end

function Store:recover_expired_leases(now)
  now = now == nil and chronis.time.now() or kit.to_us(now, "recover_expired_leases: invalid 'now'")
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
    if kit.lease_expired(e.job, now) then
      local ok = self:write(e, self:merged(e, kit.recovered(e.job)))
      if ok then n = n + 1 end
    end
  end
  return n
end

function Store:extend_leases(opts)
  local _, owner, lease_until = lease_options(opts, "extend_leases")
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

-- Options.

-- and the bridge's adapter_timeout
local OPTIONS = { "table", "region", "endpoint", "create_table", "access_key_id",
  "secret_access_key", "session_token", "timeout", "max_retries" }

local function bool_opt(v, name)
  if v == nil then return false end
  if type(v) == "boolean" then return v end
  if v == "true" or v == "1" or v == "yes" then return true end
  if v == "false" or v == "0" or v == "no" then return false end
  fail("invalid", "dynamodb store: option '%s' must be true or false, got %s", name, tostring(v))
end

-- The store's options, with credentials and region from the AWS
-- environment variables when not given.
function M.options(opts)
  opts = opts or {}
  if type(opts) ~= "table" then fail("invalid", "dynamodb store: options must be a table") end
  kit.check_options(opts, OPTIONS, "dynamodb store")
  local o = {}
  o.table = opts.table
  if type(o.table) ~= "string" or not o.table:match("^[%w_.%-]+$") or #o.table < 3 or #o.table > 255 then
    fail("invalid", "dynamodb store: option 'table' is required (3-255 characters of a-z A-Z 0-9 _ - .)")
  end
  o.region = aws.region(opts)
  o.endpoint = opts.endpoint or ("https://dynamodb.%s.amazonaws.com"):format(o.region)
  if type(o.endpoint) ~= "string" or not aws.split_url(o.endpoint) then
    fail("invalid", "dynamodb store: option 'endpoint' must be an http(s) URL, got %s", tostring(o.endpoint))
  end
  local creds = aws.credentials(opts, "dynamodb store")
  o.access_key_id, o.secret_access_key = creds.access_key_id, creds.secret_access_key
  o.session_token = creds.session_token
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
