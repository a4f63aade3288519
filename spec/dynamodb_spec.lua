-- The DynamoDB store (adapters/dynamodb.lua) and chronis.aws under it:
-- the SigV4 signer against AWS's published test-suite examples, the shared
-- storage contract against dynalite, two schedulers sharing a table,
-- results larger than one 1 MB page, moves between tenant partitions,
-- crash leftovers, and the mapping of DynamoDB's errors (against a fake
-- server that answers with them).
local chronis = require "chronis"
local core = require "chronis.core"
local aws = require "chronis.aws"
local U = require "support.util"

local ddb = assert(loadfile("adapters/dynamodb.lua", "t"))()

local dynalite -- started by the first test that needs it
local function server()
  if not dynalite then dynalite = require("support.dynalite").start() end
  return dynalite
end

local fake -- spec/support/http_server.js, for errors dynalite never gives
local function fake_server()
  if not fake then fake = require("support.http_server").start() end
  return fake
end

teardown(function()
  if dynalite then dynalite:stop() end
  if fake then fake:stop() end
end)

local CREDS = "access_key_id=AKIDFAKE&secret_access_key=fake"
local ntables = 0
local function table_name(prefix)
  ntables = ntables + 1
  return ("%s_%d_%d"):format(prefix or "jobs", ntables, math.random(1e6))
end

local function opts_for(name, extra)
  local o = { table = name, endpoint = server().endpoint, create_table = true, region = "us-east-1",
    access_key_id = "AKIDFAKE", secret_access_key = "fake" }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

-- A store over a fresh table; inst is the adapter instance behind it.
local function open(name, extra)
  local inst = ddb.new(opts_for(name or table_name(), extra))
  return chronis.storage.lua(inst, { name = "dynamodb" }), inst
end

local function client_for(name)
  return ddb.client(opts_for(name))
end

local function drop(name)
  pcall(function() client_for(name):call("DeleteTable", { TableName = name }) end)
end

-- Every raw item of a table (jobs, pointers, frozen items).
local function raw_items(name)
  local c, items, req = client_for(name), {}, { TableName = name, ConsistentRead = true }
  repeat
    local res = c:call("Scan", req)
    for _, it in ipairs(res.Items) do items[#items + 1] = it end
    req.ExclusiveStartKey = res.LastEvaluatedKey
  until req.ExclusiveStartKey == nil
  return items
end

-- The keys of every raw item, "PK SK", sorted.
local function raw_keys(name)
  local keys = {}
  for _, it in ipairs(raw_items(name)) do keys[#keys + 1] = it.PK.S .. " " .. it.SK.S end
  table.sort(keys)
  return keys
end

local assert_error = U.assert_error

-- Runs body(name, store, inst) on a store over a fresh table named after
-- prefix, then closes the store and drops the table.
local function with_table(prefix, body)
  local name = table_name(prefix)
  local store, inst = open(name)
  body(name, store, inst)
  store:close()
  drop(name)
end

local EXAMPLE = { region = "us-east-1", service = "service", access_key_id = "AKIDEXAMPLE",
  secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", time = "20150830T123600Z" }

local function example(fields)
  local r = {}
  for k, v in pairs(EXAMPLE) do r[k] = v end
  for k, v in pairs(fields) do r[k] = v end
  return aws.sigv4.sign(r)
end

describe("SigV4 (AWS's signature version 4 test suite)", function()
  it("signs get-vanilla exactly as published", function()
    local s = example{ method = "GET", url = "https://example.amazonaws.com/" }
    assert.are.equal(table.concat({
      "GET", "/", "", "host:example.amazonaws.com", "x-amz-date:20150830T123600Z", "",
      "host;x-amz-date", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" }, "\n"),
      s.canonical_request)
    assert.are.equal(table.concat({ "AWS4-HMAC-SHA256", "20150830T123600Z",
      "20150830/us-east-1/service/aws4_request",
      "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63" }, "\n"), s.string_to_sign)
    assert.are.equal("5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31", s.signature)
    assert.are.equal("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
      .. "SignedHeaders=host;x-amz-date, "
      .. "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31", s.authorization)
    assert.are.equal(s.authorization, s.headers.authorization)
    assert.are.equal("20150830T123600Z", s.headers["x-amz-date"])
    assert.are.equal("example.amazonaws.com", s.headers.host)
  end)

  it("signs post-vanilla exactly as published", function()
    local s = example{ method = "POST", url = "https://example.amazonaws.com/" }
    assert.are.equal("POST\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
      .. "host;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", s.canonical_request)
    assert.are.equal("AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n"
      .. "553f88c9e4d10fc9e109e2aeb65f030801b70c2f6468faca261d401ae622fc87", s.string_to_sign)
    assert.are.equal("5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b", s.signature)
  end)

  it("signs post-x-www-form-urlencoded (a signed body and content type)", function()
    local s = example{ method = "POST", url = "https://example.amazonaws.com/", body = "Param1=value1",
      headers = { ["Content-Type"] = "application/x-www-form-urlencoded" } }
    assert.are.equal("content-type;host;x-amz-date", s.signed_headers)
    assert.truthy(s.canonical_request:find(
      "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e", 1, true))
    assert.are.equal("ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a", s.signature)
  end)

  it("sorts and encodes the query (get-vanilla-query-order-key-case, post-vanilla-query)", function()
    local s = example{ method = "GET", url = "https://example.amazonaws.com/?Param2=value2&Param1=value1" }
    assert.truthy(s.canonical_request:find("^GET\n/\nParam1=value1&Param2=value2\n"))
    assert.are.equal("b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500", s.signature)
    s = example{ method = "POST", url = "https://example.amazonaws.com/?Param1=value1" }
    assert.are.equal("28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11", s.signature)
  end)

  it("encodes the path (get-utf8)", function()
    local s = example{ method = "GET", url = "https://example.amazonaws.com/ሴ" }
    assert.are.equal("8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85", s.signature)
  end)

  it("signs a session token and keeps non-default ports in host", function()
    local s = example{ method = "POST", url = "http://127.0.0.1:8000/", session_token = "TOKEN" }
    assert.are.equal("TOKEN", s.headers["x-amz-security-token"])
    assert.are.equal("host;x-amz-date;x-amz-security-token", s.signed_headers)
    assert.are.equal("127.0.0.1:8000", s.headers.host)
    assert.are_not.equal(example{ method = "POST", url = "http://127.0.0.1:8000/" }.signature, s.signature)
    assert.are.equal("example.amazonaws.com", example{ method = "GET", url = "https://example.amazonaws.com:443/" }.headers.host)
  end)
end)

local table_of = setmetatable({}, { __mode = "k" })
require("support.storage_contract")("dynamodb", function()
  local name = table_name("contract")
  local store = open(name)
  table_of[store] = name
  return store
end, { teardown = function(store) drop(table_of[store]) end })

require("support.engine_contract")("dynamodb", function()
  local name = table_name("engine")
  local store = open(name)
  table_of[store] = name
  return store
end, {
  reopen = function(store) return (open(table_of[store])) end,
  next_due_time = false,
  teardown = function(store) drop(table_of[store]) end,
})

describe("dynamodb store", function()
  after_each(function()
    collectgarbage()
    assert.are.equal(0, chronis.http.inflight(), "requests left in flight")
    U.assert_loop_clean()
  end)

  it("opens from a lua: storage URL and creates its table once", function()
    local name = table_name("url")
    local url = ("lua:adapters/dynamodb.lua?table=%s&endpoint=%s&create_table=true&%s"):format(
      name, server().endpoint, CREDS)
    local store = chronis.storage.open(url)
    store:create_job({ job_id = "a", status = "scheduled", next_run_time = "2025-01-01T00:00:00Z" })
    assert.are.equal("a", store:get_job("a").job_id)
    local again = chronis.storage.open(url)
    assert.are.equal("a", again:get_job("a").job_id)
    store:close()
    again:close()
    local d = client_for(name):call("DescribeTable", { TableName = name }).Table
    assert.are.equal("ACTIVE", d.TableStatus)
    assert.are.equal("by_status", d.GlobalSecondaryIndexes[1].IndexName)
    drop(name)
  end)

  it("fails with 'unavailable' naming create_table when the table is missing", function()
    local store = open(table_name("missing"), { create_table = false })
    local err = assert_error("unavailable", function() store:get_job("x") end)
    assert.matches("create_table=true", err.message)
    store:close()
  end)

  it("fails with 'unavailable' naming the endpoint when nothing listens there", function()
    local store = chronis.storage.lua(ddb.new{ table = "t_down", endpoint = "http://127.0.0.1:1",
      access_key_id = "a", secret_access_key = "b", max_retries = 1 })
    local err = assert_error("unavailable", function() store:get_job("x") end)
    assert.truthy(err.message:find("http://127.0.0.1:1", 1, true), err.message)
    store:close()
  end)

  it("stores one job per id across tenants, and moves a job whose tenant changes", function()
    with_table("tenants", function(name, store)
      store:create_job({ job_id = "j", status = "scheduled", metadata = { tenant_id = "acme" } })
      assert_error("duplicate", function()
        store:create_job({ job_id = "j", status = "scheduled", metadata = { tenant_id = "globex" } })
      end)
      store:update_job("j", { metadata = { tenant_id = "globex", n = 1 } })
      assert.are.same({}, store:query_jobs({ ["metadata.tenant_id"] = "acme" }))
      assert.are.equal(1, #store:query_jobs({ ["metadata.tenant_id"] = "globex" }))
      assert.are.same({ tenant_id = "globex", n = 1 }, store:get_job("j").metadata)
      local ok = store:compare_and_swap_job("j", { metadata = { tenant_id = "globex", n = 1 } },
        { metadata = {} })
      assert.is_true(ok)
      assert.are.equal(1, #store:query_jobs({ status = "scheduled" }))
      -- One job item (back in the JOBS partition) and its pointer, nothing
      -- else but the table's meta item.
      assert.are.same({ "ID#j ID", "JOBS JOB#j", "META TABLE" }, raw_keys(name))
      assert.is_true(store:delete_job("j"))
      assert.are.same({ "META TABLE" }, raw_keys(name))
    end)
  end)

  it("writes with create_jobs the items create_job writes, and takes ids as it does", function()
    with_table("bulk", function(name, store)
      local function rec(id, tenant)
        return { job_id = id, status = "scheduled", next_run_time = "2025-01-15T10:00:00Z", priority = 7,
          trigger_type = "date", trigger_args = { run_date = "2025-01-15T10:00:00Z" },
          metadata = { tenant_id = tenant } }
      end
      store:create_job(rec("one", "acme"))
      local c = client_for(name)
      -- A create that died after its pointer (old: taken over) and one
      -- that may be in progress (young: a duplicate).
      for id, created in pairs({ stale = chronis.time.now() - 3600 * 1000000, young = chronis.time.now() }) do
        c:call("PutItem", { TableName = name, Item = { PK = { S = "ID#" .. id }, SK = { S = "ID" },
          tenant = { S = "JOBS" }, created = { N = ("%d"):format(created) } } })
      end
      local res = store:create_jobs({ rec("bulk", "acme"), rec("one", "globex"), rec("stale", "globex"),
        rec("young", "acme"), rec("bulk", "globex") })
      local oks = {}
      for i, r in ipairs(res) do oks[i] = r.ok and "ok" or r.code end
      assert.are.same({ "ok", "duplicate", "ok", "duplicate", "duplicate" }, oks)
      assert.are.same({ "ID#bulk ID", "ID#one ID", "ID#stale ID", "ID#young ID", "META TABLE", "acme JOB#bulk",
        "acme JOB#one", "globex JOB#stale" }, raw_keys(name))
      local items = {}
      for _, it in ipairs(raw_items(name)) do items[it.PK.S .. " " .. it.SK.S] = it end
      -- Every attribute of the job items but the id's and the stamp.
      local function shape(it)
        local out = {}
        for k, v in pairs(it) do
          if k == "doc" then
            local doc = chronis.json.decode(v.S)
            doc.job_id, doc.updated_at = nil, nil
            out.doc = doc
          elseif k ~= "SK" and k ~= "job_id" and k ~= "upd" then
            out[k] = v
          end
        end
        return out
      end
      assert.are.same(shape(items["acme JOB#one"]), shape(items["acme JOB#bulk"]))
      local pointer_attrs = {}
      for k in pairs(items["ID#bulk ID"]) do pointer_attrs[#pointer_attrs + 1] = k end
      table.sort(pointer_attrs)
      assert.are.same({ "PK", "SK", "created", "tenant" }, pointer_attrs)
      assert.are.equal("acme", items["ID#bulk ID"].tenant.S)
      assert.are.equal("globex", items["ID#stale ID"].tenant.S)
      assert.are.equal("globex", store:get_job("stale").metadata.tenant_id)
    end)
  end)

  it("repairs what a crash leaves: a stale pointer, a half-done move", function()
    with_table("crash", function(name, store, inst)
      store:create_job({ job_id = "warm", status = "pending" }) -- creates the table
      local c = client_for(name)
      local old = chronis.time.now() - 3600 * 1000000
      -- A create that died after its pointer: the id is free again once old.
      c:call("PutItem", { TableName = name, Item = { PK = { S = "ID#stale" }, SK = { S = "ID" },
        tenant = { S = "JOBS" }, created = { N = tostring(old) } } })
      assert.is_nil(store:get_job("stale"))
      store:create_job({ job_id = "stale", status = "pending" })
      assert.are.equal("pending", store:get_job("stale").status)
      -- A pointer that young may be a create in progress: the id is taken.
      c:call("PutItem", { TableName = name, Item = { PK = { S = "ID#young" }, SK = { S = "ID" },
        tenant = { S = "JOBS" }, created = { N = tostring(chronis.time.now()) } } })
      assert_error("duplicate", function() store:create_job({ job_id = "young", status = "pending" }) end)
      -- A move frozen after its first step is finished by the next reader.
      store:create_job({ job_id = "m", status = "scheduled", metadata = { tenant_id = "a" } })
      local item = c:call("GetItem", { TableName = name, ConsistentRead = true,
        Key = { PK = { S = "a" }, SK = { S = "JOB#m" } } }).Item
      local job = chronis.json.decode(item.doc.S)
      job.metadata.tenant_id = "b"
      job.name = "moved"
      local upd = tonumber(item.upd.N) + 1
      job.updated_at = chronis.time.format(upd)
      c:call("UpdateItem", { TableName = name, Key = { PK = { S = "a" }, SK = { S = "JOB#m" } },
        UpdateExpression = "SET moved = :to, mdoc = :doc, upd = :u REMOVE st, due",
        ExpressionAttributeValues = { [":to"] = { S = "b" }, [":doc"] = { S = chronis.json.encode(job) },
          [":u"] = { N = ("%d"):format(upd) } } })
      inst.where = {} -- as another process would, knowing nothing
      assert.are.equal("moved", store:get_job("m").name)
      assert.are.equal("m", store:query_jobs({ ["metadata.tenant_id"] = "b" })[1].job_id)
      assert.is_nil(c:call("GetItem", { TableName = name, ConsistentRead = true,
        Key = { PK = { S = "a" }, SK = { S = "JOB#m" } } }).Item)
    end)
  end)

  -- Records the requests the store sends: op, index, key condition,
  -- Select, the partition asked for, and the items that came back.
  local function record_requests(inst)
    local log, attempt = {}, inst.client.attempt
    inst.client.attempt = function(self, op, payload)
      local ok, res = attempt(self, op, payload)
      local values = payload.ExpressionAttributeValues or {}
      log[#log + 1] = { op = op, index = payload.IndexName, key = payload.KeyConditionExpression,
        select = payload.Select, pk = values[":pk"] and values[":pk"].S,
        items = ok and res.Items and #res.Items or 0 }
      return ok, res
    end
    return log, function() inst.client.attempt = attempt end
  end

  local function ops_of(log)
    local out = {}
    for i, r in ipairs(log) do out[i] = r.op .. (r.index and " " .. r.index or "") end
    return out
  end

  local function items_read(log)
    local n = 0
    for _, r in ipairs(log) do n = n + r.items end
    return n
  end

  local function sorted(list)
    table.sort(list)
    return list
  end

  local function ids_of(jobs)
    local out = {}
    for i, j in ipairs(jobs) do out[i] = j.job_id end
    return out
  end

  describe("partitions (index_metadata)", function()
    it("puts a job in the partition of its index_metadata value and queries that partition", function()
      local name = table_name("pkey")
      local store, inst = open(name, { index_metadata = "partition_key" })
      local web, api = "tenant:acme:project:web", "tenant:acme:project:api"
      store:create_job({ job_id = "w1", status = "scheduled", metadata = { partition_key = web, tenant_id = "acme" } })
      store:create_job({ job_id = "w2", status = "paused", metadata = { partition_key = web } })
      store:create_job({ job_id = "a1", status = "scheduled", metadata = { partition_key = api, tenant_id = "acme" } })
      store:create_job({ job_id = "n1", status = "scheduled", metadata = { tenant_id = "acme" } })
      assert.are.same(sorted({ "ID#a1 ID", "ID#n1 ID", "ID#w1 ID", "ID#w2 ID", "JOBS JOB#n1", "META TABLE",
        web .. " JOB#w1", web .. " JOB#w2", api .. " JOB#a1" }), raw_keys(name))
      local log, restore = record_requests(inst)
      assert.are.same({ "w1", "w2" }, ids_of(store:query_jobs({ ["metadata.partition_key"] = web })))
      assert.are.same({ "Query" }, ops_of(log))
      assert.are.equal(web, log[1].pk)
      assert.are.equal(1, store:count_jobs({ ["metadata.partition_key"] = web, status = "paused" }))
      assert.are.same({ "Query", "Query" }, ops_of(log))
      -- tenant_id is an ordinary metadata filter on this table.
      assert.are.same({ "a1", "n1", "w1" }, ids_of(store:query_jobs({ ["metadata.tenant_id"] = "acme" })))
      assert.are.equal("Scan", log[3].op)
      restore()
      -- A change of the value moves the job to its new partition.
      store:update_job("w1", { metadata = { partition_key = api } })
      assert.are.same({ "a1", "w1" }, ids_of(store:query_jobs({ ["metadata.partition_key"] = api })))
      assert.are.same(sorted({ "ID#a1 ID", "ID#n1 ID", "ID#w1 ID", "ID#w2 ID", "JOBS JOB#n1", "META TABLE",
        web .. " JOB#w2", api .. " JOB#a1", api .. " JOB#w1" }), raw_keys(name))
      store:close()
      drop(name)
    end)

    it("takes a dotted path: a key inside an object of metadata", function()
      local name = table_name("dotted")
      local store, inst = open(name, { index_metadata = "org.id" })
      store:create_job({ job_id = "a", status = "scheduled", metadata = { org = { id = "o1" } } })
      store:create_job({ job_id = "b", status = "scheduled", metadata = { org = { id = 7 } } })
      store:create_job({ job_id = "c", status = "scheduled", metadata = { org = "o1" } })
      store:create_job({ job_id = "d", status = "scheduled", metadata = { ["org.id"] = "o1" } })
      local pk = {}
      for _, it in ipairs(raw_items(name)) do
        if it.SK.S:match("^JOB#") then pk[it.SK.S:sub(5)] = it.PK.S end
      end
      assert.are.same({ a = "o1", b = "7", c = "JOBS", d = "JOBS" }, pk)
      local log, restore = record_requests(inst)
      assert.are.same({ "a" }, ids_of(store:query_jobs({ ["metadata.org.id"] = "o1" })))
      assert.are.same({ "b" }, ids_of(store:query_jobs({ ["metadata.org.id"] = 7 })))
      assert.are.same({}, ids_of(store:query_jobs({ ["metadata.org.id"] = "7" })))
      assert.are.same({ "Query", "Query", "Query" }, ops_of(log))
      assert.are.same({ "o1", "7", "7" }, { log[1].pk, log[2].pk, log[3].pk })
      restore()
      store:close()
      drop(name)
    end)

    it("refuses more than one path, or an empty key, naming the option", function()
      local function options(v)
        return function() ddb.options({ table = "t_opts", index_metadata = v, access_key_id = "a", secret_access_key = "b" }) end
      end
      local err = assert_error("invalid", options("tenant_id,region"))
      assert.truthy(err.message:find("option 'index_metadata' names the one metadata path", 1, true), err.message)
      for _, bad in ipairs({ "", "org..id", ".id", "org." }) do
        err = assert_error("invalid", options(bad))
        assert.truthy(err.message:find("option 'index_metadata'", 1, true), err.message)
      end
      err = assert_error("invalid", options({ "tenant_id" }))
      assert.truthy(err.message:find("option 'index_metadata'", 1, true), err.message)
      assert.are.equal("tenant_id", ddb.options({ table = "t_opts", access_key_id = "a",
        secret_access_key = "b" }).index_metadata)
    end)

    it("refuses to open a table with a partition path other than the table's", function()
      local name = table_name("path")
      local store = open(name)
      store:create_job({ job_id = "j", status = "scheduled", metadata = { tenant_id = "acme" } })
      local other = open(name, { index_metadata = "partition_key" })
      local err = assert_error("invalid", function() other:get_job("j") end)
      assert.truthy(err.message:find("option 'index_metadata' is 'partition_key'", 1, true), err.message)
      assert.truthy(err.message:find("partitioned by metadata path 'tenant_id'", 1, true), err.message)
      -- Every call of that store keeps failing; the table is untouched.
      assert_error("invalid", function() other:query_jobs() end)
      other:close()
      assert.are.equal("acme", store:get_job("j").metadata.tenant_id)
      -- A table used before the option existed has no meta item: its jobs
      -- are in tenant_id partitions.
      client_for(name):call("DeleteItem", { TableName = name, Key = { PK = { S = "META" }, SK = { S = "TABLE" } } })
      other = open(name, { index_metadata = "partition_key" })
      err = assert_error("invalid", function() other:get_job("j") end)
      assert.truthy(err.message:find("partitioned by metadata path 'tenant_id'", 1, true), err.message)
      other:close()
      store:close()
      store = open(name)
      assert.are.equal(1, #store:query_jobs({ ["metadata.tenant_id"] = "acme" }))
      store:close()
      drop(name)
      -- A new table takes the path of the first store that uses it.
      name = table_name("path")
      store = open(name, { index_metadata = "partition_key" })
      assert.are.same({}, store:query_jobs())
      other = open(name)
      err = assert_error("invalid", function() other:count_jobs() end)
      assert.truthy(err.message:find("option 'index_metadata' is 'tenant_id'", 1, true), err.message)
      assert.truthy(err.message:find("index_metadata=partition_key", 1, true), err.message)
      other:close()
      store:close()
      drop(name)
    end)
  end)

  describe("query_jobs and count_jobs", function()
    -- 300 jobs: 200 scheduled, 100 paused; next_run_time in 27 groups of
    -- ten jobs with one time (ids shuffled), and 30 jobs without one.
    local function fill(store)
      local base = chronis.time.parse("2025-01-01T00:00:00Z")
      local tasks = {}
      for w = 1, 10 do
        tasks[w] = chronis.spawn(function()
          for i = w, 300, 10 do
            local id = ("j%03d"):format((i * 7919) % 300)
            store:create_job({ job_id = id, status = i % 3 == 0 and "paused" or "scheduled",
              next_run_time = i <= 270 and chronis.time.format(base + (i % 27) * 1000000) or nil,
              metadata = { tenant_id = i % 2 == 0 and "even" or "odd", n = i % 4 } })
          end
        end)
      end
      for _, t in ipairs(tasks) do t:join() end
    end

    local function slice(list, limit, offset)
      local out = {}
      for i = offset + 1, math.min(#list, offset + limit) do out[#out + 1] = list[i] end
      return out
    end

    it("stops reading the status index once offset + limit jobs are found", function()
      with_table("early", function(_, store, inst)
        fill(store)
        local all = ids_of(store:query_jobs({ status = "scheduled" }))
        assert.are.equal(200, #all)
        local both = ids_of(store:query_jobs({ status = { "scheduled", "paused" } }))
        assert.are.equal(300, #both)
        local log, restore = record_requests(inst)
        for _, case in ipairs({ { 5, 0 }, { 3, 9 }, { 10, 45 }, { 7, 190 } }) do
          local limit, offset = case[1], case[2]
          local n = #log
          assert.are.same(slice(all, limit, offset), ids_of(store:query_jobs({ status = "scheduled" }, limit, offset)))
          assert.are.same(slice(both, limit, offset),
            ids_of(store:query_jobs({ status = { "paused", "scheduled" } }, limit, offset)))
          for i = n + 1, #log do assert.are.equal("Query by_status", ops_of(log)[i]) end
        end
        -- The first cases read one page each, of fewer jobs than all.
        assert.are.same({ "Query by_status", "Query by_status", "Query by_status" }, slice(ops_of(log), 3, 0))
        assert.is_true(log[1].items < 200, "the whole status was read: " .. log[1].items)
        assert.is_true(log[2].items + log[3].items < 300, "both statuses were read whole")
        -- A filter matched on the records reads on until the page is full.
        local twos = ids_of(store:query_jobs({ status = "scheduled", ["metadata.n"] = 2 }))
        local n = #log
        assert.are.same(slice(twos, 4, 2),
          ids_of(store:query_jobs({ status = "scheduled", ["metadata.n"] = 2 }, 4, 2)))
        assert.is_true(items_read(log) - items_read(slice(log, n, 0)) < 200, "the whole status was read")
        restore()
      end)
    end)

    it("counts with Select = COUNT when DynamoDB can test every filter", function()
      with_table("count", function(_, store, inst)
        fill(store)
        store:create_job({ job_id = "t7", status = "scheduled", metadata = { tenant_id = 7 } })
        store:create_job({ job_id = "s7", status = "scheduled", metadata = { tenant_id = "7" } })
        local log, restore = record_requests(inst)
        local exact = {
          { {}, 302 }, { { status = "paused" }, 100 }, { { status = { "paused", "scheduled" } }, 302 },
          { { ["metadata.tenant_id"] = "even" }, 150 },
          { { ["metadata.tenant_id"] = "even", status = "paused", next_run_time_gte = "2025-01-01T00:00:10Z" }, 25 },
          { { trigger_type = "cron" }, 0 }, { { next_run_time_lte = "2025-01-01T00:00:05Z" }, 60 },
        }
        for i, case in ipairs(exact) do
          local n = #log
          assert.are.equal(case[2], store:count_jobs(case[1]), "case " .. i)
          assert.is_true(#log > n)
          for j = n + 1, #log do
            assert.are.equal("COUNT", log[j].select, "case " .. i)
            assert.are.equal(0, log[j].items, "case " .. i)
          end
        end
        -- Filters matched on the records are read: an integer tenant shares
        -- its partition with its text, other metadata is inside the record.
        for i, case in ipairs({ { { ["metadata.tenant_id"] = 7 }, 1 }, { { ["metadata.tenant_id"] = "7" }, 1 },
            { { ["metadata.n"] = 1, status = "paused" }, 25 }, { { job_id_in = { "j001", "t7", "zz" } }, 2 } }) do
          local n = #log
          assert.are.equal(case[2], store:count_jobs(case[1]), "read case " .. i)
          for j = n + 1, #log do assert.is_nil(log[j].select, "read case " .. i) end
        end
        restore()
        -- Every count agrees with the query.
        for i, case in ipairs(exact) do
          assert.are.equal(#store:query_jobs(case[1]), store:count_jobs(case[1]), "case " .. i)
        end
      end)
    end)
  end)

  describe("run history", function()
    local now = chronis.time.now() // 1000000 * 1000000 -- whole seconds
    local function ago(seconds) return chronis.time.format(now - math.floor(seconds * 1000000)) end
    local function run(id, job_id, seconds_ago, fields)
      local r = { run_id = id, job_id = job_id, outcome = "ok", started_at = ago(seconds_ago or 60) }
      for k, v in pairs(fields or {}) do r[k] = v end
      return r
    end
    local function run_ids(store, filters, limit, offset)
      local out = {}
      for i, r in ipairs(store:query_runs(filters, limit, offset)) do out[i] = r.run_id end
      return out
    end
    local function run_items(name)
      local out = {}
      for _, it in ipairs(raw_items(name)) do
        if it.PK.S:match("^RUN#") then out[#out + 1] = it end
      end
      table.sort(out, function(a, b) return a.PK.S .. a.SK.S < b.PK.S .. b.SK.S end)
      return out
    end
    -- A running job of owner "me", as a claim leaves it.
    local function running(store, id)
      store:create_job({ job_id = id, status = "running", claimed_by = "me", lease_until = ago(-600),
        trigger_type = "interval", next_run_time = ago(60) })
    end
    local function complete(store, id, r)
      return store:complete_jobs({ { job_id = id, owner = "me", run = r,
        updates = { status = "running", claimed_by = "me" } } })[1]
    end

    it("keeps a job's runs in its partition, in run order by SK, with TTL and index attributes", function()
      with_table("runs", function(name, store)
        store:record_runs({ run("r1", "j", 30), run("r2", "j", 20.5, { func_name = "mail" }),
          run("r3", "k", 10) })
        local items = run_items(name)
        assert.are.equal(3, #items)
        local r1, r2 = items[1], items[2]
        assert.are.equal("RUN#j", r1.PK.S)
        assert.are.equal(ago(30):gsub("Z$", ".000000Z") .. "#r1", r1.SK.S)
        assert.are.equal(ago(20.5) .. "#r2", r2.SK.S)
        assert.are.same({ "RUN", "RUN" }, { r1.st.S, r2.st.S })
        assert.are.equal(chronis.time.parse(ago(30)), tonumber(r1.due.N))
        assert.are.equal(chronis.time.parse(ago(30)) // 1000000 + 7 * 86400, tonumber(r1.expire_at.N))
        assert.are.equal("mail", r2.fn.S)
        assert.are.equal("ok", r2.oc.S)
        assert.are.same({ "r2", "r1" }, run_ids(store, "j"))
        assert.are.same({ "r3", "r2", "r1" }, run_ids(store))
        -- Runs are never jobs.
        assert.are.same({}, store:query_jobs())
        assert.are.equal(0, store:count_jobs())
      end)
    end)

    it("takes history and history_days from its options and refuses bad ones by name", function()
      with_table("runopts", function(name, store)
        store:close()
        store = open(name, { history = "2", history_days = "1" })
        store:record_runs({ run("a1", "a", 30), run("a2", "a", 20), run("a3", "a", 10),
          run("old", "b", 2 * 86400), run("new", "b") })
        assert.are.same({ "a3", "a2" }, run_ids(store, "a"))
        assert.are.same({ "new" }, run_ids(store, "b"))
        assert.are.equal(3, #run_items(name))
        store:close()
      end)
      for _, bad in ipairs({ { "history", "many" }, { "history_days", "0" } }) do
        local err = assert_error("invalid", function() ddb.options({ table = "t_opts", [bad[1]] = bad[2],
          access_key_id = "a", secret_access_key = "b" }) end)
        assert.truthy(err.message:find("option '" .. bad[1] .. "'", 1, true), err.message)
      end
      local err = assert_error("invalid", function() ddb.options({ table = "t_opts", histroy = 1,
        access_key_id = "a", secret_access_key = "b" }) end)
      assert.truthy(err.message:find("unknown option 'histroy'; did you mean 'history'?", 1, true), err.message)
    end)

    it("never returns a run past history_days that TTL has not deleted yet, and deletes it", function()
      with_table("expired", function(name, store)
        store:record_runs({ run("fresh", "a") })
        local old = chronis.time.now() - 8 * 86400 * 1000000
        local doc = chronis.json.encode(run("stale", "b", 8 * 86400))
        client_for(name):call("PutItem", { TableName = name, Item = { PK = { S = "RUN#b" },
          SK = { S = chronis.time.format(old) .. "#stale" }, job_id = { S = "b" }, doc = { S = doc },
          st = { S = "RUN" }, due = { N = ("%d"):format(old) }, oc = { S = "ok" } } })
        assert.are.same({ "fresh" }, run_ids(store))
        assert.are.same({}, run_ids(store, "b"))
        assert.are.same({}, run_ids(store, { started_at_lte = ago(86400) }))
        store:record_runs({ run("next", "a") })
        local left = {}
        for i, it in ipairs(run_items(name)) do left[i] = it.SK.S:match("#(.*)$") end
        assert.are.same({ "fresh", "next" }, left)
      end)
    end)

    it("keeps a job's newest runs as completions write them, one more at most until its next run", function()
      with_table("keep", function(name, store)
        store:close()
        store = open(name, { history = "2" })
        running(store, "c")
        for i = 1, 4 do
          assert.is_true(complete(store, "c", run("c" .. i, "c", 100 - i)).ok)
        end
        assert.are.same({ "c4", "c3" }, run_ids(store, "c"))
        -- Another process knows nothing of c's runs: its first run of c is
        -- written without a read, its second prunes.
        local other = open(name, { history = "2" })
        assert.is_true(complete(other, "c", run("c5", "c", 50)).ok)
        assert.are.same({ "c5", "c4", "c3" }, run_ids(other, "c"))
        assert.is_true(complete(other, "c", run("c6", "c", 40)).ok)
        assert.are.same({ "c6", "c5" }, run_ids(other, "c"))
        other:close()
        store:close()
      end)
    end)

    it("pages by started_at across jobs and filters on the server and in Lua", function()
      with_table("runq", function(name, store)
        local runs = {}
        for i = 1, 30 do
          runs[i] = run(("r%02d"):format(i), "j" .. (i % 3), 1000 - i * 10, {
            outcome = i % 5 == 0 and "error" or "ok", func_name = i % 2 == 0 and "even" or "odd",
            metadata = { n = i % 4 } })
        end
        store:record_runs(runs)
        assert.are.same({ "r30", "r29", "r28" }, run_ids(store, nil, 3))
        assert.are.same({ "r27", "r26" }, run_ids(store, {}, 2, 3))
        assert.are.same({ "r30", "r20", "r10" }, run_ids(store, { outcome = "error", func_name = "even" }))
        -- j0 and j2 with n = 0: r08, r12, r20, r24; of those, r12 to r24 by time.
        assert.are.same({ "r24", "r20" }, run_ids(store, { job_id_in = { "j0", "j2" }, ["metadata.n"] = 0,
          started_at_gte = ago(1000 - 12 * 10), started_at_lte = ago(1000 - 24 * 10) }, 2))
        assert.are.same({ "r20", "r12" }, run_ids(store, { job_id_in = { "j0", "j2" }, ["metadata.n"] = 0,
          started_at_gte = ago(1000 - 12 * 10), started_at_lte = ago(1000 - 24 * 10) }, 2, 1))
        assert.are.same({ "r29", "r26" }, run_ids(store, "j2", 2))
        assert.are.same({ "r29", "r26" }, run_ids(store, { job_id = "j2",
          started_at_lte = "9999-12-31T23:59:59.999999Z" }, 2))
      end)
    end)

    it("does not fail a completion whose run cannot be written", function()
      with_table("runfail", function(name, store)
        running(store, "c")
        local huge = run("big", "c", 10, { outcome = "error", error_code = "handler",
          error_message = ("x"):rep(500 * 1024) })
        chronis.set_log({ level = "error" }) -- the store logs the lost run as a warning
        local ok, res = pcall(complete, store, "c", huge)
        chronis.set_log({ level = "info" })
        assert(ok, res)
        assert.is_true(res.ok)
        assert.are.equal("running", store:get_job("c").status)
        assert.are.same({}, run_ids(store, "c"))
      end)
    end)
  end)

  it("returns complete results beyond 1 MB pages (1,500 jobs of 1 KB kwargs)", function()
    with_table("pages", function(name, store, inst)
      local pad = ("x"):rep(1024)
      local tasks = {}
      for w = 1, 10 do
        tasks[w] = chronis.spawn(function()
          for i = w, 1500, 10 do
            store:create_job({ job_id = ("p%04d"):format(i), status = i % 3 == 0 and "paused" or "scheduled",
              next_run_time = chronis.time.format(chronis.time.parse("2025-01-01T00:00:00Z") + i * 1000000),
              kwargs = { pad = pad, i = i }, metadata = { tenant_id = i % 2 == 0 and "even" or "odd" } })
          end
        end)
      end
      for _, t in ipairs(tasks) do t:join() end
      local calls = {}
      local attempt = inst.client.attempt
      inst.client.attempt = function(self, op, payload)
        calls[op] = (calls[op] or 0) + 1
        return attempt(self, op, payload)
      end
      local all = store:query_jobs()
      assert.are.equal(1500, #all)
      for i, j in ipairs(all) do
        assert.are.equal(("p%04d"):format(i), j.job_id)
        assert.are.equal(i, j.kwargs.i)
      end
      assert.is_true(calls.Scan >= 2, "the scan was not paged: " .. tostring(calls.Scan))
      assert.are.equal(1500, store:count_jobs())
      assert.are.equal(1000, store:count_jobs({ status = "scheduled" }))
      assert.is_true(calls.Query >= 2, "the index query was not paged")
      assert.are.equal(750, #store:query_jobs({ ["metadata.tenant_id"] = "even" }))
      assert.are.equal(250, store:count_jobs({ ["metadata.tenant_id"] = "even", status = "paused" }))
      local tail = store:query_jobs({}, 10, 1495)
      assert.are.equal(5, #tail)
      assert.are.equal("p1496", tail[1].job_id)
      local ids = {}
      for i = 1, 250 do ids[i] = ("p%04d"):format(i * 6) end
      assert.are.equal(250, #store:query_jobs({ job_id_in = ids }))
      local claimed = store:claim_due_jobs({ now = "2025-01-02T00:00:00Z", limit = 1200, owner = "n", lease_seconds = 60 })
      assert.are.equal(1000, #claimed)
    end)
  end)

  it("runs each of 2,000 one-shot jobs exactly once with two schedulers on one table", function()
    local name = table_name("two")
    local store1 = open(name)
    local store2 = open(name)
    local runs, by = {}, {}
    local function scheduler(store, tag)
      local s = chronis.scheduler{ storage = store, polling_interval = 0.2, max_workers = 50,
        logger = function(level, msg) if level == "error" then print(tag, msg) end end }
      s:handler("count", function(job)
        runs[job.job_id] = (runs[job.job_id] or 0) + 1
        by[tag] = (by[tag] or 0) + 1
      end)
      return s
    end
    local s1, s2 = scheduler(store1, "s1"), scheduler(store2, "s2")
    local now = chronis.time.format(chronis.time.now())
    local tasks = {}
    for w = 1, 20 do
      tasks[w] = chronis.spawn(function()
        for i = w, 2000, 20 do
          s1:create_date_job{ job_id = ("one%04d"):format(i), func_name = "count", run_date = now }
        end
      end)
    end
    for _, t in ipairs(tasks) do t:join() end
    s1:start()
    s2:start()
    local done = chronis.run_until(function()
      local n = 0
      for _ in pairs(runs) do n = n + 1 end
      return n == 2000
    end, 240)
    assert.is_true(chronis.run_until(function() return store1:count_jobs() == 0 end, 30),
      "completed one-shot jobs were not deleted")
    s1:stop(5)
    s2:stop(5)
    assert.is_true(done, "not every job ran")
    for i = 1, 2000 do
      local id = ("one%04d"):format(i)
      assert(runs[id] == 1, ("job %s ran %s times"):format(id, tostring(runs[id])))
    end
    assert.is_true((by.s1 or 0) > 0 and (by.s2 or 0) > 0, "one scheduler did all the work")
    -- What is left is history: one run per job, which outlives its job
    -- (and the table's meta item).
    local left = {}
    for _, item in ipairs(raw_items(name)) do
      local kind = item.PK.S:match("^RUN#") and "run" or item.PK.S == "META" and "meta" or "other"
      left[kind] = (left[kind] or 0) + 1
    end
    assert.are.same({ run = 2000, meta = 1 }, left, "items left behind")
    local recorded = store1:query_runs({ outcome = "ok" })
    assert.are.equal(2000, #recorded)
    store1:close()
    store2:close()
    drop(name)
  end)
end)

describe("dynamodb errors", function()
  after_each(function()
    assert.are.equal(0, chronis.http.inflight())
  end)

  local function fake_client(path, extra)
    local o = { table = "t_fake", endpoint = fake_server().url(path), access_key_id = "a", secret_access_key = "b" }
    for k, v in pairs(extra or {}) do o[k] = v end
    return ddb.client(ddb.options(o))
  end

  it("retries throttled requests with backoff, then succeeds", function()
    local c = fake_client("/throttle/a/3")
    local slept = {}
    local sleep = c.sleep
    c.sleep = function(s) slept[#slept + 1] = s; sleep(s) end
    local res = c:call("PutItem", { TableName = "t_fake", Item = {} })
    assert.are.equal(4, res.seen)
    assert.are.equal(3, c.retries)
    assert.are.equal(3, #slept)
    assert.is_true(slept[3] > slept[1], "no backoff")
  end)

  it("gives up after max_retries throttles with 'unavailable'", function()
    local c = fake_client("/throttle/b/100", { max_retries = 2 })
    local err = assert_error("unavailable", function() c:call("GetItem", { TableName = "t_fake" }) end)
    assert.matches("ThrottlingException after 3 attempts", err.message)
  end)

  it("maps DynamoDB's errors to contract errors", function()
    local cases = {
      { "ValidationException", "invalid" },
      { "ResourceNotFoundException", "unavailable" },
      { "UnrecognizedClientException", "unavailable" },
      { "ConditionalCheckFailedException", "conflict" },
      { "InternalServerError", "unavailable" },
    }
    for _, case in ipairs(cases) do
      local c = fake_client("/dynamo-error/" .. case[1], { max_retries = 0 })
      local err = assert_error(case[2], function() c:call("PutItem", { TableName = "t_fake" }) end)
      assert.truthy(err.message:find(case[1], 1, true) or err.message:find("fake", 1, true), err.message)
    end
    local c = fake_client("/dynamo-error/ConditionalCheckFailedException")
    assert.is_nil(c:call("PutItem", { TableName = "t_fake" }, true))
  end)

  it("turns a ValidationException from the store into 'invalid'", function()
    local store = open(table_name("valid"))
    local err = assert_error("invalid", function()
      store:create_job({ job_id = ("k"):rep(2000), status = "pending" })
    end)
    assert.matches("dynamodb PutItem", err.message)
    store:close()
  end)

  it("takes credentials and region from the AWS environment variables", function()
    local saved = os.getenv
    local env = { AWS_ACCESS_KEY_ID = "AKIDENV", AWS_SECRET_ACCESS_KEY = "secret", AWS_SESSION_TOKEN = "tok",
      AWS_REGION = "eu-west-1" }
    os.getenv = function(k) return env[k] end
    local ok, o = pcall(ddb.options, { table = "t_env" })
    os.getenv = saved
    assert(ok, tostring(o))
    assert.are.equal("AKIDENV", o.access_key_id)
    assert.are.equal("secret", o.secret_access_key)
    assert.are.equal("tok", o.session_token)
    assert.are.equal("eu-west-1", o.region)
    assert.are.equal("https://dynamodb.eu-west-1.amazonaws.com", o.endpoint)
    os.getenv = function() return nil end
    local ok2, err = pcall(ddb.options, { table = "t_env" })
    os.getenv = saved
    assert.is_false(ok2)
    assert.are.equal("invalid", err.code)
    assert.matches("AWS_ACCESS_KEY_ID", err.message)
  end)

  it("refuses unknown options and a bad table name", function()
    assert_error("invalid", function() ddb.new{ table = "ok_name", bogus = 1, access_key_id = "a", secret_access_key = "b" } end)
    assert_error("invalid", function() ddb.new{ table = "no spaces", access_key_id = "a", secret_access_key = "b" } end)
  end)
end)

-- f's result, with os.getenv answering from env meanwhile.
local function with_env(env, f)
  local saved = os.getenv
  os.getenv = function(k) return env[k] end
  local ok, res = pcall(f)
  os.getenv = saved
  if not ok then error(res, 0) end
  return res
end

describe("chronis.aws", function()
  after_each(function() assert.are.equal(0, chronis.http.inflight(), "a request is still in flight") end)

  it("reads region and credentials from options, then the environment", function()
    local env = { AWS_ACCESS_KEY_ID = "AKIDENV", AWS_SECRET_ACCESS_KEY = "secret", AWS_SESSION_TOKEN = "tok",
      AWS_DEFAULT_REGION = "ap-south-1" }
    with_env(env, function()
      assert.are.equal("ap-south-1", aws.region())
      assert.are.equal("eu-west-1", aws.region{ region = "eu-west-1" })
      assert.are.same({ access_key_id = "AKIDENV", secret_access_key = "secret", session_token = "tok" },
        aws.credentials())
      -- A key given in options never picks up the environment's token.
      assert.are.same({ access_key_id = "A", secret_access_key = "B" },
        aws.credentials{ access_key_id = "A", secret_access_key = "B" })
    end)
    with_env({}, function()
      assert.are.equal("us-east-1", aws.region())
      local err = assert_error("invalid", function() aws.credentials() end)
      assert.matches("^aws: no AWS credentials", err.message)
      err = assert_error("invalid", function() aws.credentials({}, "my handler") end)
      assert.matches("^my handler: no AWS credentials", err.message)
    end)
  end)

  it("signs a request to any service that chronis.http then sends", function()
    local url = fake_server().url("/echo") .. "?b=2&a=1"
    local s = aws.sigv4.sign{ method = "POST", url = url, body = "{}", region = "eu-west-1", service = "execute-api",
      access_key_id = "AKID", secret_access_key = "secret", headers = { ["Content-Type"] = "application/json" } }
    assert.matches("Credential=AKID/%d+/eu%-west%-1/execute%-api/aws4_request", s.authorization)
    assert.are.equal("content-type;host;x-amz-date", s.signed_headers)
    local res = chronis.http.request{ method = "POST", url = url, body = "{}", headers = s.headers }
    local seen = chronis.json.decode(res.body)
    assert.are.equal(s.authorization, seen.headers.authorization)
    assert.are.equal(s.headers["x-amz-date"], seen.headers["x-amz-date"])
    assert.are.equal(s.headers.host, seen.headers.host)
    assert.has_error(function() aws.sigv4.sign{ method = "GET", url = "not a url" } end)
  end)

  it("writes attribute values as DynamoDB wants them", function()
    assert.are.same({ S = "x" }, aws.dynamodb.S("x"))
    assert.are.same({ N = "9000000000000000000" }, aws.dynamodb.N(9000000000000000000))
    assert.are.same({ N = "-3" }, aws.dynamodb.N(-3))
    assert.are.same({ N = "2" }, aws.dynamodb.N(2.0))
    assert.are.same({ N = "1.5" }, aws.dynamodb.N(1.5))
  end)

  it("opens a DynamoDB client with defaults and names the table or endpoint in errors", function()
    local c = with_env({ AWS_ACCESS_KEY_ID = "a", AWS_SECRET_ACCESS_KEY = "b", AWS_REGION = "eu-north-1" },
      function() return aws.dynamodb.client() end)
    assert.are.equal("https://dynamodb.eu-north-1.amazonaws.com", c.endpoint)
    assert.are.equal(10, c.timeout)
    assert.are.equal(8, c.max_retries)
    with_env({}, function()
      assert_error("invalid", function() aws.dynamodb.client{ endpoint = "http://127.0.0.1:1" } end)
    end)
    local endpoint = fake_server().url("/dynamo-error/ValidationException")
    c = aws.dynamodb.client{ endpoint = endpoint, access_key_id = "a", secret_access_key = "b", max_retries = 0 }
    local err = assert_error("invalid", function() c:call("PutItem", { TableName = "t_named" }) end)
    assert.truthy(err.message:find("dynamodb PutItem (table 't_named' at " .. endpoint .. ")", 1, true), err.message)
    err = assert_error("invalid", function() c:call("ListTables", {}) end)
    assert.truthy(err.message:find("dynamodb ListTables (at " .. endpoint .. ")", 1, true), err.message)
  end)

  it("is the client the store uses", function()
    assert.are.equal(aws.dynamodb.client, ddb.client)
    local store, inst = open(table_name("client"))
    assert.are.equal(aws.dynamodb.Client, getmetatable(inst.client))
    store:close()
  end)
end)
