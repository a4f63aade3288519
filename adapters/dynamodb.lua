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
--   job      PK = the job's partition: the value of its metadata path
--            index_metadata (default tenant_id; JOBS when it has none),
--            SK = JOB#<id>
--            doc  = the whole record as canonical JSON (the source of truth)
--            st, due, upd, pri, claimed, lease, tt = copies of fields that
--            keys, conditions and server-side filters need
--   pointer  PK = ID#<id>, SK = ID, tenant = the job's partition, created = µs
--   meta     PK = META, SK = TABLE, partition_path = the metadata path of the
--            jobs' partitions, fixed by the first store that used the table
--   GSI by_status: partition st, sort due (µs; a job without a next run
--            time sorts last with NO_DUE), projection ALL.
--
--   run      PK = RUN#<job_id>, SK = <started_at, ISO with 6 fraction
--            digits>#<run_id>, so a job's runs sort newest first, and in
--            run order, by SK descending
--            doc = the run as canonical JSON; st = RUN and due = started_at
--            (µs) put every run in by_status too, in time order; oc, fn =
--            outcome and func_name, for server-side filters; expire_at =
--            when the run passes history_days (epoch seconds: the TTL
--            attribute)
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
-- changes the partition moves the job: (1) freeze the old item with moved/mdoc
-- (conditional on upd: the moment the write happens), (2) put the new
-- item, (3) point the pointer at it, (4) delete the old item. Anyone who
-- meets a frozen item finishes steps 2-4 (they are idempotent) and retries.
--
-- query_jobs and count_jobs read one partition when the filters name its
-- value, else by_status once per status, else the whole table (a Scan).
-- Only by_status reads in query order, so only there do limit and offset
-- end the reads early; a count whose filters DynamoDB tests exactly is
-- DynamoDB's (Select = COUNT). Store:plan and Store:select say more.
--
-- The runs of the completions of one complete_jobs call that applied are
-- written right after them, in batches: not in one transaction with them,
-- so a crash in between loses those runs (never a completion). A job keeps its newest `keep` runs: the
-- store counts each job's runs it has seen (run_counts) and reads a job's
-- run keys to prune only when the job may hold more than its keep (on the
-- completion path, from the second run it writes for the job on); runs
-- older than history_days expire by TTL where it is enabled, are deleted
-- as the store writes (a query of by_status, at most once a minute on
-- the completion path), and are never returned.
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
local LAST_TIME = parse_time("9999-12-31T23:59:59.999999Z")
local RUN_ST = "RUN"                    -- the by_status partition of runs
local TTL_ATTRIBUTE = "expire_at"
local SWEEP_EVERY_US = 60 * 1000000     -- age pruning on the completion path
local MAX_CACHED = 100000               -- entries of where and run_counts
local DEFAULT_PATH = "tenant_id"        -- index_metadata: the partition path
local MAX_PK_BYTES = 2048               -- DynamoDB's limit on a partition key

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

-- The partition of a value at the partition path: a non-empty string is
-- its own, an integer its decimal text; anything else, and no value, JOBS.
local function partition_of(v)
  if type(v) == "string" and v ~= "" then return v end
  if math.type(v) == "integer" then return tostring(v) end
  return "JOBS"
end

-- Whether the partition of value v holds jobs with that value only: not
-- so for JOBS (jobs without a value share it) nor for the text of an
-- integer (tenants 1 and "1" share a partition). A count of such a
-- partition needs no look at the records.
local function partition_is_exact(v)
  return type(v) == "string" and v ~= "" and v ~= "JOBS" and not v:match("^%-?%d+$")
end

-- The value at a dotted path (an array of keys) below job.metadata, or nil.
local function metadata_value(job, keys)
  local v = job.metadata
  for _, k in ipairs(keys) do
    if type(v) ~= "table" then return nil end
    v = v[k]
  end
  return v
end

local function job_key(pk, id) return { PK = S(pk), SK = S("JOB#" .. id) } end
local function pointer_key(id) return { PK = S("ID#" .. id), SK = S("ID") } end
local function meta_key() return { PK = S("META"), SK = S("TABLE") } end

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

-- The partition of a record: its value at the store's partition path.
function Store:pk_of(job)
  return partition_of(metadata_value(job, self.path_keys))
end

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
    self:check_partition_path()
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
    if cok then M.enable_ttl(client, name) end
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

-- Whether the table holds a job: one item of any job status in by_status.
function Store:holds_jobs()
  for status in pairs(kit.STATUSES) do
    local res = self.client:call("Query", { TableName = self.table, IndexName = "by_status",
      KeyConditionExpression = "st = :st", ExpressionAttributeValues = { [":st"] = S(status) },
      ProjectionExpression = "PK", Limit = 1 })
    if res.Items and #res.Items > 0 then return true end
  end
  return false
end

-- The table keeps the metadata path of its partitions (index_metadata) in
-- its meta item, written by the first store that uses it. A store opened
-- with another path would look for jobs where they are not: it is refused,
-- as a job's partition is decided when it is written and jobs are never
-- moved to the partitions of a new path. A table without the item that
-- already holds jobs was used before the option existed, partitioned by
-- tenant_id: it gets the item for tenant_id.
function Store:check_partition_path()
  local c = self.client
  for _ = 1, 3 do
    local item = c:call("GetItem", { TableName = self.table, Key = meta_key(), ConsistentRead = true }).Item
    if item then
      local have = item.partition_path and item.partition_path.S
      if have == self.path then return end
      fail("invalid", "dynamodb store: option 'index_metadata' is '%s', but the jobs of table '%s' are "
        .. "partitioned by metadata path '%s' (fixed when the table was first used): open the store "
        .. "with index_metadata=%s, or use another table", self.path, self.table, tostring(have), tostring(have))
    end
    local path = self.path
    if path ~= DEFAULT_PATH and self:holds_jobs() then path = DEFAULT_PATH end
    local put = meta_key()
    put.partition_path, put.created = S(path), N(chronis.time.now())
    -- Another store may write it first: read it again then.
    if c:call("PutItem", { TableName = self.table, Item = put, ConditionExpression = "attribute_not_exists(PK)" }, true)
        and path == self.path then
      return
    end
  end
  fail("conflict", "dynamodb store: the meta item of table '%s' keeps changing", self.table)
end

--- enable_ttl(client, name): asks DynamoDB to delete runs once their
--- expire_at has passed. A server without TTL (dynalite) or a refusal
--- changes nothing: the store prunes old runs as it writes anyway.
function M.enable_ttl(client, name)
  pcall(client.attempt, client, "UpdateTimeToLive", { TableName = name,
    TimeToLiveSpecification = { Enabled = true, AttributeName = TTL_ATTRIBUTE } })
end

function Store:stamp(prev_us)
  local now = chronis.time.now()
  if prev_us and now <= prev_us then now = prev_us + 1 end
  return now
end

function Store:remember(id, pk)
  if self.ncached >= MAX_CACHED then self.where, self.ncached = {}, 0 end
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
  fail("conflict", "job '%s' keeps moving between partitions", id)
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

-- BatchWriteItem for many requests ({PutRequest =} / {DeleteRequest =}),
-- in chunks of 25, unprocessed items retried.
function Store:batch_write(requests)
  for first = 1, #requests, 25 do
    local pending, tries = table.move(requests, first, math.min(first + 24, #requests), 1, {}), 0
    while #pending > 0 do
      local res = self:call("BatchWriteItem", { RequestItems = { [self.table] = pending } })
      pending = res.UnprocessedItems and res.UnprocessedItems[self.table] or {}
      if #pending > 0 then
        tries = tries + 1
        if tries > 10 then fail("unavailable", "dynamodb BatchWriteItem: items left unprocessed 10 times") end
        chronis.sleep(math.min(1, 0.02 * 2 ^ tries))
      end
    end
  end
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

-- Writes job (the new record of entry e's job) if e is still current.
-- Returns true, or false when someone else wrote first.
function Store:write(e, job)
  local doc = encode_record(job)
  local pk = self:pk_of(job)
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

-- Takes id for a new job: the conditional put of its pointer (the
-- duplicate check, atomic in DynamoDB). True, or false when the id is
-- taken: by a job, or by a pointer that is not a leftover of a create
-- that died before writing the job (old, and no job where it points).
function Store:take_id(id, pointer, now)
  for attempt = 1, 3 do
    if self:call("PutItem", { Item = pointer, ConditionExpression = "attribute_not_exists(PK)" }, true) then
      return true
    end
    -- The pointer may also have been deleted a moment ago: try again.
    local e, p = self:locate(id)
    if e or attempt == 3 then return false end
    if p then
      local stale = now - math.tointeger(tonumber(p.created.N)) > STALE_POINTER_US
      return stale and self:call("PutItem", {
        Item = pointer,
        ConditionExpression = "created = :c",
        ExpressionAttributeValues = { [":c"] = p.created },
      }, true) ~= nil
    end
  end
  return false
end

-- Undoes take_id for a job that could not be written.
function Store:release_id(id, now)
  pcall(self.call, self, "DeleteItem", {
    Key = pointer_key(id), ConditionExpression = "created = :c",
    ExpressionAttributeValues = { [":c"] = N(now) },
  }, true)
end

-- What creating rec at `now` writes: its pointer, its partition, its job
-- item and the item's doc.
function Store:new_items(rec, now)
  rec.updated_at = format_time(now)
  local doc = encode_record(rec)
  local pk = self:pk_of(rec)
  local pointer = { PK = S("ID#" .. rec.job_id), SK = S("ID"), tenant = S(pk), created = N(now) }
  return pointer, pk, job_item(pk, rec, doc), doc
end

function Store:create_job(job)
  local rec = kit.check_record(job, "create_job")
  local id = rec.job_id
  local now = self:stamp()
  local pointer, pk, item, doc = self:new_items(rec, now)
  if not self:take_id(id, pointer, now) then fail("duplicate", "job '%s' already exists", id) end
  local ok, err = pcall(self.call, self, "PutItem", { Item = item })
  if not ok then
    self:release_id(id, now)
    error(err, 0)
  end
  self:remember(id, pk)
  return json.decode(doc)
end

-- create_jobs: the pointers are taken as create_job takes one (a
-- conditional put each, PARALLEL at a time: DynamoDB has no conditional
-- batch write, and the conditional put is what makes two creators of one
-- id agree on the winner), then the job items of the ids taken are put by
-- BatchWriteItem, 25 a call. A record whose id is taken, or given earlier
-- in the list (the first wins), is a duplicate. A crash between the two
-- steps leaves pointers without jobs, which later creates of those ids
-- take over once stale, as after a create_job that died. A failure
-- releases the pointers of the jobs not sent; those of a batch write that
-- failed stay (its jobs may be written) and go stale if they were not.
function Store:create_jobs(list)
  local records = kit.check_call(self, "create_jobs", list)
  local results, fresh, seen = {}, {}, {}
  local now = self:stamp()
  for i, rec in ipairs(records) do
    local id = rec.job_id
    if seen[id] then
      results[i] = { job_id = id, ok = false, code = "duplicate" }
    else
      seen[id] = true
      local pointer, pk, item = self:new_items(rec, now)
      fresh[#fresh + 1] = { i = i, id = id, pointer = pointer, pk = pk, item = item }
    end
  end
  local ok, err = pcall(each_parallel, fresh, function(c)
    c.taken = self:take_id(c.id, c.pointer, now)
  end)
  local taken = {}
  for _, c in ipairs(fresh) do
    if c.taken then taken[#taken + 1] = c end
  end
  local sent = 0
  while ok and sent < #taken do
    local puts = {}
    for k = sent + 1, math.min(sent + 25, #taken) do puts[#puts + 1] = { PutRequest = { Item = taken[k].item } } end
    ok, err = pcall(self.batch_write, self, puts)
    sent = sent + #puts
  end
  if not ok then
    each_parallel(table.move(taken, sent + 1, #taken, 1, {}), function(c) self:release_id(c.id, now) end)
    error(err, 0)
  end
  for _, c in ipairs(fresh) do
    if c.taken then
      results[c.i] = { job_id = c.id, ok = true }
      self:remember(c.id, c.pk)
    else
      results[c.i] = { job_id = c.id, ok = false, code = "duplicate" }
    end
  end
  return results
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
  local u = kit.check_update_job(id, updates)
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

-- The filters DynamoDB tests exactly on the copies an item keeps (st, tt,
-- due, upd). A count with these only, on an exact partition or none, is
-- DynamoDB's own (Select = COUNT).
local SERVER_FILTERS = { status = true, trigger_type = true, next_run_time_lte = true,
  next_run_time_gte = true, updated_at_lte = true, updated_at_gte = true }

-- The plan of a query for filters: the kit's match(rec) (which checks
-- every key first) and the ids of job_id_in, plus what DynamoDB can narrow
-- by: the partition (a filter on the partition path with a value that is
-- not a table: a table names no one partition), the statuses (by_status),
-- the bounds on next_run_time (nrt.lte/gte; the index's sort key, `due`),
-- and FilterExpression parts (where for any source, due_where for the
-- table only) with their values. exact: DynamoDB's tests are the whole
-- filter, so no record needs to be read to count; none: nothing can match.
function Store:plan(filters)
  local f = { where = {}, due_where = {}, values = {}, n = 0, exact = true }
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
    local t = type(want)
    local scalar = t == "string" or t == "number" or t == "boolean"
    if not (SERVER_FILTERS[key] or (key == self.path_filter and scalar and partition_is_exact(want))) then
      f.exact = false
    end
    if key == "status" then
      local seen = {}
      f.statuses = {}
      for _, st in ipairs(t == "table" and want or { want }) do
        if not seen[st] then
          seen[st] = true
          f.statuses[#f.statuses + 1] = st
        end
      end
      table.sort(f.statuses)
      if #f.statuses == 0 then f.statuses = nil end -- status = {} matches any
    elseif key == "trigger_type" then
      f.where[#f.where + 1] = "tt = " .. value(S(want))
    elseif field == "next_run_time" then
      -- A job without a next run time (due = NO_DUE) matches no bound.
      local bound = kit.to_us(want, key)
      if op == "lte" then bound = math.min(bound, NO_DUE - 1) end
      f.nrt = f.nrt or {}
      f.nrt[op] = f.nrt[op] and (op == "lte" and math.min(f.nrt[op], bound) or math.max(f.nrt[op], bound)) or bound
      f.due_where[#f.due_where + 1] = ("due %s %s"):format(cmp, value(N(bound)))
      if op == "gte" then f.due_where[#f.due_where + 1] = "due < " .. value(N(NO_DUE)) end
    elseif field == "updated_at" then
      f.where[#f.where + 1] = ("upd %s %s"):format(cmp, value(N(kit.to_us(want, key))))
    elseif key == self.path_filter and scalar then
      f.partition = partition_of(want)
      -- No job is stored under a key DynamoDB would refuse.
      if #f.partition > MAX_PK_BYTES then f.none = true end
    end
  end
  if f.nrt and (f.nrt.gte or math.mininteger) > (f.nrt.lte or NO_DUE - 1) then f.none = true end
  return f
end

-- The requests that read the candidates of plan f, each {op, req,
-- ordered}: a Query of f's partition (in job_id order), else a Query of
-- by_status per status (ordered: in due order), else a Scan of the table
-- (in no order). None when nothing can match.
function Store:requests(f)
  if f.none then return {} end
  local where = { "attribute_not_exists(moved)" }
  for _, w in ipairs(f.where) do where[#where + 1] = w end
  local values = copy(f.values)
  if f.partition or not f.statuses then
    for _, w in ipairs(f.due_where) do where[#where + 1] = w end
  end
  if f.partition then
    values[":pk"], values[":job"] = S(f.partition), S("JOB#")
    if f.statuses then
      local names = {}
      for i, st in ipairs(f.statuses) do
        names[i] = ":st" .. i
        values[names[i]] = S(st)
      end
      where[#where + 1] = #names == 1 and "st = :st1" or "st IN (" .. table.concat(names, ", ") .. ")"
    end
    return { { op = "Query", req = {
      KeyConditionExpression = "PK = :pk AND begins_with(SK, :job)",
      FilterExpression = table.concat(where, " AND "),
      ExpressionAttributeValues = values, ConsistentRead = true,
    } } }
  end
  if f.statuses then
    local key = "st = :st"
    local lo, hi = f.nrt and f.nrt.gte, f.nrt and f.nrt.lte
    if lo then
      key = key .. " AND due BETWEEN :lo AND :hi"
      values[":lo"], values[":hi"] = N(lo), N(hi or NO_DUE - 1)
    elseif hi then
      key = key .. " AND due <= :hi"
      values[":hi"] = N(hi)
    end
    local out = {}
    for i, st in ipairs(f.statuses) do
      local v = copy(values)
      v[":st"] = S(st)
      out[i] = { op = "Query", ordered = true, req = {
        IndexName = "by_status", KeyConditionExpression = key,
        FilterExpression = table.concat(where, " AND "), ExpressionAttributeValues = v,
      } }
    end
    return out
  end
  where[#where + 1] = "begins_with(SK, :job)"
  values[":job"] = S("JOB#")
  return { { op = "Scan", req = {
    FilterExpression = table.concat(where, " AND "),
    ExpressionAttributeValues = values, ConsistentRead = true,
  } } }
end

-- Runs a Query or Scan page by page, to its last page or until each(item)
-- returns false; pages hold at most per_page items when it is given.
-- Returns the sum of the pages' Count (the items that passed the
-- FilterExpression: with Select = COUNT, the answer). DynamoDB refuses
-- expression values that no expression uses: they are dropped.
function Store:each_page(op, req, each, per_page)
  local text = (req.KeyConditionExpression or "") .. " " .. (req.FilterExpression or "")
  local values = {}
  for name, v in pairs(req.ExpressionAttributeValues or {}) do
    if text:find(name .. "%f[^%w_]") then values[name] = v end
  end
  req.ExpressionAttributeValues = next(values) and values or nil
  req.Limit = per_page
  local count = 0
  repeat
    local res = self:call(op, req)
    count = count + (res.Count or 0)
    for _, item in ipairs(res.Items or {}) do
      if each and each(item) == false then return count end
    end
    req.ExclusiveStartKey = res.LastEvaluatedKey
  until req.ExclusiveStartKey == nil
  return count
end

-- The entries that match plan f, from the narrowest source (the ids, or
-- the requests of Store:requests). With `need` (query_jobs' offset +
-- limit), a query of by_status, which reads in query order (due, NO_DUE
-- last), stops once it holds `need` matches and has passed the due of
-- the need-th (jobs with one due are put in job_id order after reading);
-- the matches of each status are then the first of their status, and the
-- first `need` of all are among them. A partition is read in job_id order
-- and a scan in none: both are read to the end, then sorted.
function Store:select(f, need)
  local found = {}
  if f.ids then
    for _, e in pairs(self:locate_many(f.ids)) do
      if f.match(e.job) then found[#found + 1] = e end
    end
    return found
  end
  for _, r in ipairs(self:requests(f)) do
    local stop = r.ordered and need or nil
    local n, last_due = 0, nil
    self:each_page(r.op, r.req, function(item)
      local due = stop and tonumber(item.due.N)
      if stop and n >= stop and due ~= last_due then return false end
      local e = entry_of(item)
      if not e.moved and f.match(e.job) then
        found[#found + 1] = e
        n = n + 1
        if n == stop then last_due = due end
      end
    end, stop and stop < 1000 and math.max(stop + 1, 100) or nil)
  end
  return found
end

function Store:query_jobs(filters, limit, offset)
  kit.check_open(self)
  kit.check_count(limit, "limit")
  kit.check_count(offset, "offset")
  local f = self:plan(filters)
  offset = offset or 0
  local need = limit and limit <= math.maxinteger - offset and offset + limit or nil
  if need == 0 then return {} end
  local found = kit.sort_query(self:select(f, need), job_of)
  local out = kit.page(found, limit, offset)
  for i, e in ipairs(out) do out[i] = e.job end
  return out
end

-- A count of filters DynamoDB tests exactly (plan's exact) is DynamoDB's:
-- Select = COUNT, summed over the pages, and no item comes back. Other
-- filters (metadata other than an exact partition, job_id_in) are matched
-- here, on the records read.
function Store:count_jobs(filters)
  kit.check_open(self)
  local f = self:plan(filters)
  if f.ids or not f.exact then return #self:select(f) end
  local n = 0
  for _, r in ipairs(self:requests(f)) do
    r.req.Select = "COUNT"
    n = n + self:each_page(r.op, r.req)
  end
  return n
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
  self:completion_runs(items, results)
  return results
end

-- ---- run history ----

-- A time as text that sorts in time order: canonical ISO with all six
-- fraction digits (years 0001-9999 have four digits).
local function sortable_time(us)
  local t = format_time(us)
  if not t:find(".", 1, true) then t = t:sub(1, -2) .. ".000000Z" end
  return t
end

local function runs_pk(job_id) return "RUN#" .. job_id end

-- The item of a checked run (kit.check_run).
local function run_item(run, started, days)
  local item = {
    PK = S(runs_pk(run.job_id)), SK = S(sortable_time(started) .. "#" .. run.run_id),
    job_id = S(run.job_id), doc = S(json.encode(run)), st = S(RUN_ST), due = N(started),
    oc = S(run.outcome), [TTL_ATTRIBUTE] = N(started // 1000000 + days * 86400),
  }
  if run.func_name then item.fn = S(run.func_name) end
  return item
end

function Store:cutoff()
  return kit.history_cutoff(self.history_days)
end

-- What the store knows of the number of job_id's runs (nil: unknown).
function Store:count_runs(job_id, n)
  if n ~= nil and self.nrun_counts >= MAX_CACHED then self.run_counts, self.nrun_counts = {}, 0 end
  if n ~= nil and self.run_counts[job_id] == nil then self.nrun_counts = self.nrun_counts + 1 end
  if n == nil and self.run_counts[job_id] ~= nil then self.nrun_counts = self.nrun_counts - 1 end
  self.run_counts[job_id] = n
end

-- Deletes items by key (PK, SK), in batches.
function Store:delete_keys(items)
  local requests = {}
  for i, it in ipairs(items) do requests[i] = { DeleteRequest = { Key = { PK = it.PK, SK = it.SK } } } end
  self:batch_write(requests)
end

-- Keeps job_id's newest `keep` runs and none older than cutoff, once
-- `added` runs were written. The job's run keys are read (newest first)
-- only when the job may hold more than keep: its count is known and past
-- keep, or unknown. On the completion path (exact false) the first run
-- this store writes for a job is not followed by a read: most jobs that
-- end with one run (one-shot jobs) never cost one, and a job that runs
-- again is read and pruned at its next run.
function Store:prune_job_runs(job_id, keep, cutoff, added, exact)
  local known = self.run_counts[job_id]
  if known ~= nil and known >= 0 and known + added <= keep then
    self:count_runs(job_id, known + added)
    return
  end
  if known == nil and not exact and added <= keep then
    self:count_runs(job_id, -1) -- seen, count unknown
    return
  end
  local n, extra = 0, {}
  self:each_page("Query", {
    KeyConditionExpression = "PK = :pk", ScanIndexForward = false, ConsistentRead = true,
    ProjectionExpression = "PK, SK, due", ExpressionAttributeValues = { [":pk"] = S(runs_pk(job_id)) },
  }, function(item)
    n = n + 1
    if n > keep or tonumber(item.due.N) < cutoff then extra[#extra + 1] = item end
  end)
  self:delete_keys(extra)
  self:count_runs(job_id, n - #extra)
end

-- Writes checked runs ({run =, keep =}, keep > 0): those that started
-- before cutoff are not written; then prunes each job once, by the keep of
-- its last run (prune_job_runs).
function Store:write_runs(list, cutoff, exact)
  local puts, jobs, seen = {}, {}, {}
  for _, c in ipairs(list) do
    local started = parse_time(c.run.started_at)
    if started >= cutoff then
      local item = run_item(c.run, started, self.history_days)
      local key = item.PK.S .. "\0" .. item.SK.S
      if seen[key] then
        puts[seen[key]].PutRequest.Item = item -- one request per key: the last run wins
      else
        puts[#puts + 1] = { PutRequest = { Item = item } }
        seen[key] = #puts
        local j = jobs[c.run.job_id] or { added = 0 }
        j.added, j.keep = j.added + 1, c.keep
        jobs[c.run.job_id] = j
      end
    end
  end
  if #puts == 1 then
    self:call("PutItem", { Item = puts[1].PutRequest.Item })
  else
    self:batch_write(puts)
  end
  local order = {}
  for id, j in pairs(jobs) do order[#order + 1] = { id = id, job = j } end
  each_parallel(order, function(x) self:prune_job_runs(x.id, x.job.keep, cutoff, x.job.added, exact) end)
end

-- Deletes every run older than cutoff (the runs of jobs that stopped
-- running too), found on by_status.
function Store:sweep_runs(cutoff)
  self.swept_at = chronis.time.now()
  local old = {}
  self:each_page("Query", {
    IndexName = "by_status", KeyConditionExpression = "st = :run AND due < :cut",
    ProjectionExpression = "PK, SK, job_id",
    ExpressionAttributeValues = { [":run"] = S(RUN_ST), [":cut"] = N(cutoff) },
  }, function(item) old[#old + 1] = item end)
  self:delete_keys(old)
  for _, item in ipairs(old) do self:count_runs(item.job_id.S, nil) end
end

-- Writes the runs of the completions that applied, all at once (25 a
-- request), and prunes by age at most once a minute. These writes do not
-- fail the completions, which have happened: runs that cannot be written
-- are lost, and logged.
function Store:completion_runs(items, results)
  local list = {}
  for i, item in ipairs(items) do
    local keep = item.run and results[i].ok and kit.run_keep(item.keep, self.history) or 0
    if keep > 0 then list[#list + 1] = { run = item.run, keep = keep } end
  end
  if #list == 0 then return end
  local cutoff = self:cutoff()
  local ok, err = pcall(self.write_runs, self, list, cutoff, false)
  if ok and chronis.time.now() - self.swept_at >= SWEEP_EVERY_US then
    ok, err = pcall(self.sweep_runs, self, cutoff)
  end
  if not ok then
    chronis.log("warn", ("dynamodb store: the runs of %d completion(s) may not have been written: %s")
      :format(#list, message_of(err)))
  end
end

function Store:record_runs(runs)
  kit.check_open(self)
  local checked = kit.check_runs(runs)
  local list = {}
  for _, c in ipairs(checked) do
    local keep = kit.run_keep(c.keep, self.history)
    if keep > 0 then list[#list + 1] = { run = c.run, keep = keep } end
  end
  local cutoff = self:cutoff()
  self:write_runs(list, cutoff, true)
  self:sweep_runs(cutoff)
  return #list
end

-- Reads runs from a Query (newest first, by SK or by due) into found while
-- they match, until `need` of them are found and the next one started
-- earlier than the need-th (runs that started at the same instant are
-- ordered by run_id afterwards). need nil: every run.
function Store:collect_runs(req, match, need, found)
  if need == 0 then return end
  local n, last_due = 0, nil
  req.ExpressionAttributeValues = req.ExpressionAttributeValues or {}
  if next(req.ExpressionAttributeValues) == nil then req.ExpressionAttributeValues = nil end
  if need then req.Limit = math.max(need + 1, 100) end
  repeat
    local res = self:call("Query", req)
    for _, item in ipairs(res.Items or {}) do
      local due = tonumber(item.due.N)
      if need and n >= need and due < last_due then return end
      local run = json.decode(item.doc.S)
      if match(run) then
        found[#found + 1] = run
        n = n + 1
        if n == need then last_due = due end
      end
    end
    req.ExclusiveStartKey = res.LastEvaluatedKey
  until req.ExclusiveStartKey == nil
end

-- A job's runs come from its partition (strongly consistent), newest
-- first; runs of any job from by_status (st = RUN, due = started_at).
-- Either read starts at the age limit, so expired runs that TTL has not
-- deleted yet are never returned. outcome and func_name are also sent as
-- a FilterExpression; every filter is checked again on the runs (the
-- kit's match).
function Store:query_runs(filters, limit, offset)
  kit.check_open(self)
  kit.check_count(limit, "limit")
  kit.check_count(offset, "offset")
  local match, ids, narrow = kit.compile_run_filters(filters)
  local lo = math.max(narrow.started_at_gte or self:cutoff(), self:cutoff())
  local hi = narrow.started_at_lte
  if hi and hi < lo then return {} end
  offset = offset or 0
  local need = limit and limit <= math.maxinteger - offset and offset + limit or nil
  local where, values = {}, {}
  if narrow.outcomes then
    local names = {}
    for i, o in ipairs(narrow.outcomes) do
      names[i] = ":o" .. i
      values[names[i]] = S(o)
    end
    where[#where + 1] = "oc IN (" .. table.concat(names, ", ") .. ")"
  end
  if narrow.func_name then
    where[#where + 1] = "fn = :fn"
    values[":fn"] = S(narrow.func_name)
  end
  local function request(key, extra)
    local v = copy(values)
    for k, x in pairs(extra) do v[k] = x end
    return { KeyConditionExpression = key, ScanIndexForward = false, ExpressionAttributeValues = v,
      FilterExpression = #where > 0 and table.concat(where, " AND ") or nil }
  end
  local found = {}
  if ids then
    -- Every SK of a run that started at hi sorts before the bare time of
    -- hi + 1 µs (none when that is past the last time there is).
    local upper = hi ~= nil and hi < LAST_TIME
    local range = upper and "SK BETWEEN :lo AND :hi" or "SK >= :lo"
    local bounds = { [":lo"] = S(sortable_time(lo)), [":hi"] = upper and S(sortable_time(hi + 1)) or nil }
    each_parallel(ids, function(id)
      local req = request("PK = :pk AND " .. range, bounds)
      req.ExpressionAttributeValues[":pk"] = S(runs_pk(id))
      req.ConsistentRead = true
      self:collect_runs(req, match, need, found)
    end)
  else
    local range = hi and "due BETWEEN :lo AND :hi" or "due >= :lo"
    local req = request("st = :run AND " .. range, { [":run"] = S(RUN_ST), [":lo"] = N(lo),
      [":hi"] = hi and N(hi) or nil })
    req.IndexName = "by_status"
    self:collect_runs(req, match, need, found)
  end
  return kit.page(kit.sort_runs(found), limit, offset)
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
  "secret_access_key", "session_token", "timeout", "max_retries", "history", "history_days",
  "index_metadata" }

local function bool_opt(v, name)
  if v == nil then return false end
  if type(v) == "boolean" then return v end
  if v == "true" or v == "1" or v == "yes" then return true end
  if v == "false" or v == "0" or v == "no" then return false end
  fail("invalid", "dynamodb store: option '%s' must be true or false, got %s", name, tostring(v))
end

-- The option index_metadata: the one metadata path (keys joined by dots)
-- whose value is a job's partition, and its keys.
local function partition_path(v)
  if v == nil then v = DEFAULT_PATH end
  if type(v) ~= "string" then
    fail("invalid", "dynamodb store: option 'index_metadata' must be a metadata path such as tenant_id "
      .. "or org.id, got %s", type(v))
  end
  if v:find(",", 1, true) then
    fail("invalid", "dynamodb store: option 'index_metadata' names the one metadata path whose value "
      .. "is a job's partition; got several: '%s'", v)
  end
  local keys = {}
  for k in (v .. "."):gmatch("([^.]*)%.") do
    if k == "" then
      fail("invalid", "dynamodb store: option 'index_metadata': '%s' is not a metadata path "
        .. "(keys joined by dots, none empty)", v)
    end
    keys[#keys + 1] = k
  end
  return v, keys
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
  o.history, o.history_days = kit.history_options(opts, "dynamodb store options")
  o.index_metadata, o.path_keys = partition_path(opts.index_metadata)
  return o
end

--- new(opts) -> the store's adapter table. Does no I/O: the table is
--- checked (and created with create_table) by the first call.
function M.new(opts)
  local o = M.options(opts)
  return setmetatable({
    table = o.table, create_table = o.create_table, client = M.client(o),
    -- the metadata path of the partitions, its keys, and its filter's name
    path = o.index_metadata, path_keys = o.path_keys, path_filter = "metadata." .. o.index_metadata,
    where = {}, ncached = 0, -- job id -> partition, a hint checked on use
    history = o.history, history_days = o.history_days,
    run_counts = {}, nrun_counts = 0, -- job id -> its runs in the table, as last seen
    swept_at = 0, -- when runs past history_days were last deleted (µs)
    ready = false, ensuring = false, closed = false,
  }, Store)
end

M.Store = Store
M.NO_DUE = NO_DUE

return M
