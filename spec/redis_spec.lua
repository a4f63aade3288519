-- The Redis store and lock adapters against a real redis-server (started by
-- spec/support/redis.lua on a free loopback port): the shared contract
-- suites, the key layout, metadata indexes, wake-ups, and failures (refused
-- connection, CLIENT KILL, SCRIPT FLUSH, server restart) with schedulers
-- that must still run every job exactly once, also across 4 processes.
local chronis = require "chronis"
local redis = require "support.redis"
local U = require "support.util"
local ids = require("support.jobs").ids_of

local null = chronis.json.null
local S = 1000000

local function now_us()
  local t = chronis.time.now()
  if type(t) == "string" then t = chronis.time.parse(t) end
  return t
end

local function iso(us) return chronis.time.format(us) end

-- Drives the loop until pred() holds or `seconds` pass; pred's value.
local function wait_for(pred, seconds)
  return chronis.run_until(pred, seconds or 10)
end

-- docs/design.md: after each async spec no task is alive and no handle
-- active (a closed connection may take a turn of the loop or two).
local function assert_loop_clean() U.assert_loop_clean(2) end

local quiet = function() end

-- Creates n one-shot "rec" jobs, job00001..., due now.
local function create_due(store, n)
  local now = iso(now_us())
  for i = 1, n do
    store:create_job({ job_id = ("job%05d"):format(i), status = "scheduled", next_run_time = now,
      func_name = "rec", trigger_type = "date", trigger_args = { run_date = now } })
  end
end

describe("redis", function()
  local srv
  local serial = 0
  local function prefix()
    serial = serial + 1
    return ("t%d_%d"):format(os.time() % 100000, serial)
  end

  setup(function() srv = redis.start() end)
  teardown(function() if srv then srv:stop() end end)

  require("support.storage_contract")("redis", function()
    return chronis.storage.redis(srv.url, { prefix = prefix() })
  end)

  do
    local prefixes = setmetatable({}, { __mode = "k" })
    require("support.engine_contract")("redis", function()
      local p = prefix()
      local store = chronis.storage.redis(srv.url, { prefix = p })
      prefixes[store] = p
      return store
    end, {
      reopen = function(store) return chronis.storage.redis(srv.url, { prefix = prefixes[store] }) end,
      hints_across_handles = true,
    })
  end

  -- The same contracts with metadata indexes: scoped calls then read the
  -- per-value sets.
  require("support.storage_contract")("redis with index_metadata", function()
    return chronis.storage.redis(srv.url, { prefix = prefix(), index_metadata = "tenant_id,t,region" })
  end)

  do
    local prefixes = setmetatable({}, { __mode = "k" })
    local function open_indexed(p)
      return chronis.storage.redis(srv.url, { prefix = p, index_metadata = "tenant_id,t,region" })
    end
    require("support.engine_contract")("redis with index_metadata", function()
      local p = prefix()
      local store = open_indexed(p)
      prefixes[store] = p
      return store
    end, {
      reopen = function(store) return open_indexed(prefixes[store]) end,
      hints_across_handles = true,
    })
  end

  -- Queues: per-queue due sets, running jobs counted over the lease set,
  -- rate counters per window (redis_scripts.h).
  require("support.queue_claims")("redis", function()
    local p = prefix()
    return function() return chronis.storage.redis(srv.url, { prefix = p }) end
  end)
  require("support.queue_claims")("redis with index_metadata", function()
    local p = prefix()
    return function() return chronis.storage.redis(srv.url, { prefix = p, index_metadata = "tenant_id" }) end
  end)

  describe("per-queue due sets", function()
    it("count a rate window's claims in a key that expires a minute after the window", function()
      local p = prefix()
      local s = chronis.storage.redis(srv.url, { prefix = p })
      local now = now_us()
      for i = 1, 3 do
        s:create_job({ job_id = "r" .. i, status = "scheduled", next_run_time = iso(now - S), queue = "r" })
      end
      local q = { { name = "r", limit = 5, rate_limit = 2, rate_period = 3600 } }
      assert.are.equal(2, #s:claim_due_jobs({ owner = "o", now = iso(now), queues = q }))
      local start = now - now % (3600 * S)
      local key = "{" .. p .. "}:qrate:r:" .. string.format("%d", start)
      assert.are.equal("2", srv:cli("GET", key):match("%d+"))
      local ttl = tonumber(srv:cli("PTTL", key):match("%-?%d+"))
      local left = (start + 3600 * S - now) // 1000
      assert.is_true(ttl > left and ttl <= left + 60000, tostring(ttl))
      s:close()
    end)

    it("are built over the jobs of a store written before them, when it is opened", function()
      local p = prefix()
      local s = chronis.storage.redis(srv.url, { prefix = p })
      local due = iso(now_us() - S)
      for i = 1, 1200 do
        s:create_job({ job_id = ("j%04d"):format(i), status = "scheduled", next_run_time = due,
          queue = i % 2 == 0 and "even" or nil, priority = i % 3 })
      end
      s:close()
      -- As a version without them left the store.
      for k in srv:cli("KEYS", "{" .. p .. "}:q*"):gmatch("[^\n]+") do srv:cli("DEL", k) end
      s = chronis.storage.redis(srv.url, { prefix = p })
      -- In slices, one after another; claims with queues take nothing
      -- until the last.
      assert.is_true(wait_for(function()
        s:get_job("j0001")
        return srv:cli("GET", "{" .. p .. "}:qready"):match("^1") ~= nil
      end))
      local got = s:claim_due_jobs({ owner = "o", limit = 1000, queues = { { name = "even", limit = 1000 } } })
      assert.are.equal(600, #got)
      for _, j in ipairs(got) do assert.are.equal("even", j.queue) end
      assert.are.equal(600, #s:claim_due_jobs({ owner = "o", limit = 1000, queues = { { name = "default", limit = 1000 } } }))
      s:close()
    end)
  end)

  -- create_jobs: CREATE_SLICE (1,000) records per script call, each written
  -- as the create script writes one.
  describe("create_jobs", function()
    after_each(assert_loop_clean)

    it("fills the due, per-queue and per-tenant sets that claims read", function()
      local p = prefix()
      local s = chronis.storage.redis(srv.url, { prefix = p, index_metadata = "tenant_id" })
      local due = iso(now_us() - S)
      local list = {}
      for i = 1, 1500 do
        list[i] = { job_id = ("b%04d"):format(i), status = "scheduled", next_run_time = due,
          priority = i % 3, queue = i % 2 == 0 and "even" or nil,
          metadata = { tenant_id = i % 5 == 0 and "acme" or "globex" } }
      end
      local res = s:create_jobs(list)
      for i = 1, 1500 do assert.is_true(res[i].ok, res[i].job_id) end
      local function zcard(k) return tonumber(srv:cli("ZCARD", "{" .. p .. "}:" .. k):match("%d+")) end
      assert.are.equal(500, zcard("due:2"))
      assert.are.equal(250, zcard("qdue:even:2"))
      assert.are.equal(250, zcard("qdue:default:2"))
      assert.are.equal(100, zcard('tdue:9:tenant_id:2:"acme"'))
      assert.are.equal(1500, zcard("jobs"))
      -- A claim with queues and a scoped one find them.
      local got = s:claim_due_jobs({ owner = "o", limit = 1000, queues = { { name = "even", limit = 1000 } } })
      assert.are.equal(750, #got)
      for _, j in ipairs(got) do assert.are.equal("even", j.queue) end
      got = s:claim_due_jobs({ owner = "o", limit = 1000, filters = { ["metadata.tenant_id"] = "acme" } })
      assert.are.equal(150, #got) -- the odd multiples of 5
      for _, j in ipairs(got) do assert.are.same({ tenant_id = "acme" }, j.metadata) end
      assert.are.equal(300, #s:query_jobs({ ["metadata.tenant_id"] = "acme", status = "running" }))
      s:close()
    end)

    it("answers 'duplicate' for an id taken by a record of an earlier script call", function()
      local p = prefix()
      local s = chronis.storage.redis(srv.url, { prefix = p })
      local list = {}
      for i = 1, 1001 do list[i] = { job_id = "c" .. i, status = "paused", name = "first" } end
      list[1002] = { job_id = "c7", status = "paused", name = "second" }
      local res = s:create_jobs(list)
      assert.are.equal(1002, #res)
      assert.is_true(res[1001].ok)
      assert.are.same({ job_id = "c7", ok = false, code = "duplicate" }, res[1002])
      assert.are.equal("first", s:get_job("c7").name)
      assert.are.equal(1001, s:count_jobs())
      s:close()
    end)

    it("wakes a running scheduler once it has created the batch", function()
      local p = prefix()
      local store = chronis.storage.redis(srv.url, { prefix = p })
      local other = chronis.storage.redis(srv.url, { prefix = p })
      local ran = 0
      local sched = chronis.scheduler({ storage = store, polling_interval = 30, logger = quiet })
      sched:handler("h", function() ran = ran + 1 end)
      sched:start()
      chronis.sleep(0.3) -- the first claim subscribes
      local due = iso(now_us() + 200000)
      local list = {}
      for i = 1, 3 do
        list[i] = { job_id = "w" .. i, status = "scheduled", next_run_time = due, func_name = "h",
          trigger_type = "date" }
      end
      other:create_jobs(list)
      assert.truthy(wait_for(function() return ran == 3 end, 5), "not run within 5 s (poll: 30 s)")
      sched:stop()
      sched:close()
      store:close()
      other:close()
    end)
  end)

  require("support.lock_contract")("redis", function()
    return chronis.lock.redis(srv.url .. "?prefix=" .. prefix())
  end)

  describe("URL", function()
    local function open_error(url)
      local ok, err = pcall(chronis.storage.open, url)
      assert.is_false(ok, url)
      assert.are.equal("invalid", err.code)
      return err.message
    end

    it("names an unknown option, a bad port and a bad database", function()
      assert.truthy(open_error("redis://127.0.0.1:1/0?bogus=1"):find("bogus", 1, true))
      assert.truthy(open_error("redis://127.0.0.1:99999/0"):find("port", 1, true))
      assert.truthy(open_error("redis://127.0.0.1:1/x"):find("database", 1, true))
      assert.truthy(open_error("redis://127.0.0.1:1/0?timeout=soon"):find("timeout", 1, true))
    end)

    it("refuses index_metadata paths that are empty, repeated or not plain keys, naming them", function()
      local cases = {
        { "tenant_id,", "an empty path" }, { "a,,b", "an empty path" },
        { "a,a", "'a' is named twice" }, { "tenant%20id", "'tenant id' is not a metadata path" },
      }
      for _, c in ipairs(cases) do
        local msg = open_error("redis://127.0.0.1:1/0?index_metadata=" .. c[1])
        local after = msg:sub((msg:find("': ", 1, true) or 0) + 3)
        assert.truthy(after:find("index_metadata: " .. c[2], 1, true), msg)
      end
    end)

    it("refuses an option given twice, naming it, instead of using the last", function()
      for _, name in ipairs({ "prefix", "index_metadata", "timeout", "queue_timeout" }) do
        local msg = open_error(("redis://:s3cret@127.0.0.1:1/0?%s=1&%s=2"):format(name, name))
        assert.truthy(msg:find("option '" .. name .. "' is given more than once", 1, true), msg)
        assert.is_nil(msg:find("s3cret", 1, true), msg)
      end
      local ok, err = pcall(chronis.storage.redis, "redis://127.0.0.1:1/0?prefix=a", { prefix = "b" })
      assert.is_false(ok)
      assert.are.equal("invalid", err.code)
      assert.truthy(err.message:find("option 'prefix' is given more than once", 1, true), err.message)
      ok, err = pcall(chronis.lock.redis, "redis://127.0.0.1:1/0?prefix=a&prefix=b")
      assert.is_false(ok)
      assert.are.equal("invalid", err.code)
      assert.truthy(err.message:find("option 'prefix' is given more than once", 1, true), err.message)
    end)

    -- A value with %, &, =, @, :, /, spaces or unicode reaches the server as
    -- it was given: from an option table as is, from a URL %-encoded. The
    -- user below must give its password, so one that arrived cut or
    -- changed is refused by the server.
    it("authenticates with a password holding % & = @ : / spaces and unicode, from options and a %-encoded URL", function()
      local user, pw = "chronis_pw", "p%w&x=1@h:2/ é"
      srv:cli("ACL", "SETUSER", user, "reset", "on", ">" .. pw, "~*", "&*", "+@all")
      local p = prefix()
      local function opts(password)
        return { host = "127.0.0.1", port = srv.port, db = 0, user = user, password = password,
          prefix = p }
      end
      local a = chronis.storage.redis(opts(pw))
      a:create_job({ job_id = "x", status = "pending" })
      a:close()
      local enc = U.url_encode(pw)
      local url = ("redis://%s:%s@127.0.0.1:%d/0"):format(user, enc, srv.port)
      U.check_each_open({
        function() return chronis.storage.open(url .. "?prefix=" .. p) end,
        function() return chronis.storage.redis(url, { prefix = p }) end,
        function()
          local o = opts(pw)
          o.scheme = "redis"
          return chronis.storage.open(o)
        end,
      }, function(s) assert.are.equal("pending", s:get_job("x").status) end)
      local lock_opts = opts(pw)
      lock_opts.scheme = "redis"
      for _, lock in ipairs({ chronis.lock.redis(url .. "?prefix=" .. p),
        chronis.lock.open(lock_opts) }) do
        assert.is_true(lock:acquire("k", 10, { owner = "o" }))
        assert.is_true(lock:release("k", "o"))
        lock:close()
      end
      -- The server checks it: a password cut at '&' is refused, and not shown.
      local cut_opts = opts("p%w")
      cut_opts.queue_timeout = 1
      local cut = chronis.storage.redis(cut_opts)
      local ok, err = pcall(cut.get_job, cut, "x")
      assert.is_false(ok)
      assert.are.equal("unavailable", err.code, err.message)
      assert.truthy(err.message:find("WRONGPASS", 1, true), err.message)
      assert.is_nil(err.message:find("p%w", 1, true), err.message)
      cut:close()
      -- Not %-encoded, the '%' of the password is a malformed escape: refused
      -- naming the part, without showing it.
      local msg = open_error(("redis://%s:p%%w@127.0.0.1:%d/0"):format(user, srv.port))
      assert.truthy(msg:find("malformed %-escape in the password", 1, true), msg)
      assert.is_nil(msg:find("p%w", 1, true), msg)
      assert_loop_clean()
    end)

    it("builds the URL from chronis.storage.redis(url, opts)", function()
      local p = prefix()
      local s = chronis.storage.redis(srv.url, { prefix = p })
      s:create_job({ job_id = "a", status = "pending" })
      assert.are.equal("1", srv:cli("EXISTS", "{" .. p .. "}:job:a"):match("%d"))
      s:close()
      assert_loop_clean()
    end)
  end)

  describe("key layout", function()
    after_each(assert_loop_clean)

    it("computes cluster slots like Redis (CRC16/XMODEM mod 16384, hash tags)", function()
      -- Values from the Redis Cluster specification and CLUSTER KEYSLOT.
      assert.are.equal(12739, redis.keyslot("123456789"))
      assert.are.equal(11058, redis.keyslot("somekey"))
      assert.are.equal(2515, redis.keyslot("foo{hash_tag}"))
      assert.are.equal(redis.keyslot("hash_tag"), redis.keyslot("bar{hash_tag}x"))
      assert.are.equal(redis.keyslot("{}x"), redis.keyslot("{}x"))
    end)

    it("keeps every key of a store in the slot of its {prefix} hash tag", function()
      local p = prefix()
      local s = chronis.storage.redis(srv.url, { prefix = p, index_metadata = "tenant_id" })
      local t0 = now_us()
      s:create_job({ job_id = "due", status = "scheduled", next_run_time = t0 - S, priority = 7,
        metadata = { tenant_id = "acme" } })
      s:create_job({ job_id = "odd prio", status = "scheduled", next_run_time = t0 + 3600 * S,
        priority = 42 })
      s:create_job({ job_id = "p", status = "paused", metadata = { tenant_id = "globex" } })
      s:create_job({ job_id = "{x}:y", status = "failed" })
      s:create_job({ job_id = "no time", status = "scheduled" })
      s:create_job({ job_id = "no lease", status = "running" })
      assert.are.equal(1, #s:claim_due_jobs({ owner = "n", limit = 10, lease_seconds = 30 }))
      local keys = {}
      for k in srv:cli("KEYS", "{" .. p .. "}:*"):gmatch("[^\n]+") do keys[#keys + 1] = k end
      table.sort(keys)
      local want = {
        "{" .. p .. "}:clock", "{" .. p .. "}:due:42", "{" .. p .. "}:idx:9:tenant_id:\"acme\"",
        "{" .. p .. "}:idx:9:tenant_id:\"globex\"", "{" .. p .. "}:indexes", "{" .. p .. "}:job:due",
        "{" .. p .. "}:job:odd prio", "{" .. p .. "}:job:p", "{" .. p .. "}:job:{x}:y",
        "{" .. p .. "}:job:no time", "{" .. p .. "}:job:no lease",
        "{" .. p .. "}:jobs", "{" .. p .. "}:lease", "{" .. p .. "}:prios",
        "{" .. p .. "}:st:failed", "{" .. p .. "}:st:paused", "{" .. p .. "}:st:running",
        "{" .. p .. "}:st:scheduled", "{" .. p .. "}:scoped", "{" .. p .. "}:tlease:9:tenant_id:\"acme\"",
        -- Per-queue due sets (the claim without queues leaves "due" in
        -- its queue's set, docs/redis.md), and the mark that they are built.
        "{" .. p .. "}:qdue:default:42", "{" .. p .. "}:qdue:default:7", "{" .. p .. "}:qready",
      }
      table.sort(want)
      assert.are.same(want, keys)
      local slot = redis.keyslot("{" .. p .. "}")
      for _, k in ipairs(keys) do
        assert.are.equal(slot, redis.keyslot(k), k)
      end
      -- The documented fields of a job hash.
      local h = {}
      local lines = {}
      for l in srv:cli("HGETALL", "{" .. p .. "}:job:due"):gmatch("[^\n]+") do lines[#lines + 1] = l end
      for i = 1, #lines, 2 do h[lines[i]] = lines[i + 1] end
      assert.are.equal("running", h.status)
      assert.are.equal("n", h.claimed_by)
      assert.are.equal(tostring(t0 - S), h.next_run_time)
      assert.are.equal("7", h.priority)
      assert.are.equal('{"tenant_id":"acme"}', h["x:metadata"])
      assert.are.equal('"acme"', h["i:tenant_id"])
      s:close()
    end)
  end)

  describe("metadata filters", function()
    after_each(assert_loop_clean)

    local function fill(s)
      for i = 1, 30 do
        s:create_job({ job_id = ("j%02d"):format(i), status = i % 3 == 0 and "paused" or "scheduled",
          next_run_time = iso(1700000000 * S + i * S),
          metadata = { tenant_id = "t" .. (i % 4), n = i % 2, region = { zone = i % 5 == 0 and "eu" or "us" } } })
      end
    end

    it("give the same answers with and without index_metadata", function()
      local p = prefix()
      local plain = chronis.storage.redis(srv.url, { prefix = p })
      fill(plain)
      -- Opening with index_metadata builds the indexes over existing jobs.
      local indexed = chronis.storage.redis(srv.url, { prefix = p, index_metadata = "tenant_id,region.zone" })
      assert.truthy(wait_for(function()
        return srv:cli("HGET", "{" .. p .. "}:indexes", "region.zone"):match("ready") ~= nil
      end, 10), "the index was not built")
      -- Writes through either store keep the index current.
      plain:update_job("j01", { metadata = { tenant_id = "t0" } })
      indexed:update_job("j02", { metadata = null })
      plain:delete_job("j04")
      local cases = {
        { ["metadata.tenant_id"] = "t0" },
        { ["metadata.tenant_id"] = "t1", status = "scheduled" },
        { ["metadata.region.zone"] = "eu" },
        { ["metadata.region.zone"] = "eu", ["metadata.tenant_id"] = "t0" },
        { ["metadata.n"] = 1, ["metadata.tenant_id"] = "t3", next_run_time_gte = iso(1700000010 * S) },
        { ["metadata.tenant_id"] = "nobody" },
      }
      for i, f in ipairs(cases) do
        local a, b = plain:query_jobs(f), indexed:query_jobs(f)
        assert.are.same(ids(a), ids(b), "case " .. i)
        assert.are.same(ids(plain:query_jobs(f, 2, 1)), ids(indexed:query_jobs(f, 2, 1)), "page " .. i)
        assert.are.equal(#a, indexed:count_jobs(f), "count " .. i)
        assert.are.equal(#a, plain:count_jobs(f), "count " .. i)
      end
      assert.are.same({ "j01", "j08", "j12", "j16", "j20", "j24", "j28" },
        ids(indexed:query_jobs({ ["metadata.tenant_id"] = "t0" })))
      -- The index answers from its set: the job removed from it is gone.
      assert.are.equal("0", srv:cli("SISMEMBER", "{" .. p .. "}:idx:9:tenant_id:\"t2\"", "j02"):match("%d"))
      plain:close()
      indexed:close()
    end)
  end)

  -- Scoped claims, recoveries and next due times (docs/redis.md, Scopes):
  -- from the per-value sets with index_metadata, else by a walk of at
  -- most 1,000 entries per script call.
  describe("scopes", function()
    after_each(assert_loop_clean)

    local T = 1700000000 * S

    local function keys_like(p, pattern)
      local out = {}
      for k in srv:cli("KEYS", "{" .. p .. "}:" .. pattern):gmatch("[^\n]+") do out[#out + 1] = k end
      table.sort(out)
      return out
    end

    local function evalsha_calls()
      return tonumber(srv:cli("INFO", "commandstats"):match("cmdstat_evalsha:calls=(%d+)") or 0)
    end

    local function open(p, indexed)
      local s = chronis.storage.redis(srv.url, { prefix = p, index_metadata = indexed and "tenant_id,region.zone" or nil })
      if indexed then
        assert.truthy(wait_for(function()
          return srv:cli("HGET", "{" .. p .. "}:scoped", "region.zone"):match("ready") ~= nil
        end, 10), "the per-value sets were not built")
      end
      return s
    end

    -- 120 jobs of 4 tenants (one with none), priorities 0-11, some
    -- with a key holding a dot, some nested.
    local function fill(...)
      for k = 0, 119 do
        local meta = { n = k % 2 }
        if k % 5 ~= 0 then meta.tenant_id = "t" .. (k % 4) end
        if k % 3 == 0 then meta.region = { zone = k % 2 == 0 and "eu" or "us" } end
        if k % 7 == 0 then meta["a.b"] = "dot" end
        if k % 11 == 0 then meta.tenant_id = chronis.json.null end
        local j = { job_id = ("s%03d"):format((k * 37) % 120), status = k % 9 == 0 and "paused" or "scheduled",
          next_run_time = iso(T + (k % 40) * S), priority = k % 12, metadata = meta }
        for _, s in ipairs({ ... }) do s:create_job(j) end
      end
    end

    local scopes = {
      { ["metadata.tenant_id"] = "t1" },
      { ["metadata.tenant_id"] = { ["$in"] = { "t2", "t3", "t2" } } },
      { ["metadata.tenant_id"] = { ["$ne"] = "t1" } },
      { ["metadata.tenant_id"] = null },
      { ["metadata.tenant_id"] = { ["$exists"] = true }, ["metadata.n"] = 1 },
      { ["metadata.region.zone"] = "eu", ["metadata.tenant_id"] = "t0" },
      { ["metadata.a\\.b"] = "dot" },
      { ["metadata.tenant_id"] = "nobody" },
      { ["metadata.tenant_id"] = { ["$in"] = {} } },
    }

    for _, indexed in ipairs({ false, true }) do
      local how = indexed and "with index_metadata" or "without an index"

      it("claim, recover and tell the next due time like the memory store, " .. how, function()
        local mem, red = chronis.storage.memory(), open(prefix(), indexed)
        fill(mem, red)
        -- Writes that move jobs between tenants and states.
        for _, s in ipairs({ mem, red }) do
          s:update_job("s001", { metadata = { tenant_id = "t1", region = { zone = "eu" } } })
          s:update_job("s002", { metadata = null })
          s:compare_and_swap_job("s003", { status = "scheduled" }, { metadata = { tenant_id = "t2" }, priority = 11 })
          s:delete_job("s004")
        end
        for i, f in ipairs(scopes) do
          assert.are.equal(mem:next_due_time(f), red:next_due_time(f), "next due, scope " .. i)
        end
        for round = 1, 4 do
          for i, f in ipairs(scopes) do
            local opts = { now = iso(T + round * 8 * S), limit = 5, owner = "o" .. i, lease_seconds = 10, filters = f }
            assert.are.same(ids(mem:claim_due_jobs(opts)), ids(red:claim_due_jobs(opts)),
              ("claim %d, scope %d"):format(round, i))
            assert.are.equal(mem:next_due_time(f), red:next_due_time(f), ("next due %d, scope %d"):format(round, i))
          end
        end
        local at = iso(T + 45 * S)
        for i, f in ipairs(scopes) do
          assert.are.equal(mem:recover_expired_leases(at, f), red:recover_expired_leases(at, f), "recover, scope " .. i)
        end
        assert.are.same(ids(mem:query_jobs({ status = "running" })), ids(red:query_jobs({ status = "running" })))
        assert.are.same(ids(mem:query_jobs({ status = "scheduled" })), ids(red:query_jobs({ status = "scheduled" })))
        red:close()
        mem:close()
      end)

      it("claim every job exactly once across connections of different scopes, " .. how, function()
        local p = prefix()
        local a, b, c = open(p, indexed), open(p, indexed), open(p, indexed)
        local now = iso(now_us())
        for k = 1, 300 do
          a:create_job({ job_id = ("x%03d"):format(k), status = "scheduled", next_run_time = now,
            priority = k % 3, metadata = { tenant_id = "t" .. (k % 3) } })
        end
        local owners = { { a, { ["metadata.tenant_id"] = "t1" }, "t1" },
          { b, { ["metadata.tenant_id"] = { ["$in"] = { "t1", "t2" } } }, "t2" },
          { c, nil, nil } }
        local seen, n = {}, 0
        while true do
          local got = 0
          for i, o in ipairs(owners) do
            for _, j in ipairs(o[1]:claim_due_jobs({ limit = 7, owner = "o" .. i, filters = o[2] })) do
              assert.is_nil(seen[j.job_id], j.job_id .. " claimed twice")
              seen[j.job_id] = i
              assert.are.equal("o" .. i, j.claimed_by)
              if i == 1 then assert.are.equal("t1", j.metadata.tenant_id) end
              if i == 2 then assert.is_truthy(j.metadata.tenant_id ~= "t0") end
              n, got = n + 1, got + 1
            end
          end
          if got == 0 then break end
        end
        assert.are.equal(300, n)
        assert.is_nil(a:next_due_time({ ["metadata.tenant_id"] = "t1" }))
        assert.are.equal(0, #keys_like(p, "tdue:*"))
        a:close()
        b:close()
        c:close()
      end)
    end

    it("run each job once in the scheduler of its scope, schedulers of two scopes and an unscoped one sharing the prefix", function()
      local p = prefix()
      local stores = { open(p, true), open(p, true), open(p, true) }
      local scopes = { { ["metadata.tenant_id"] = "a" }, { ["metadata.tenant_id"] = { ["$in"] = { "b" } } }, nil }
      local ran, scheds, n = {}, {}, 0
      for i = 1, 3 do
        local s = chronis.scheduler({ storage = stores[i], filters = scopes[i], polling_interval = 0.2, logger = quiet })
        s:handler("h", function(job)
          ran[job.job_id] = ran[job.job_id] or {}
          table.insert(ran[job.job_id], i)
        end)
        scheds[i] = s
      end
      local now = iso(now_us())
      for k = 1, 90 do
        stores[1]:create_job({ job_id = ("r%02d"):format(k), status = "scheduled", next_run_time = now,
          func_name = "h", trigger_type = "date", trigger_args = { run_date = now },
          metadata = { tenant_id = ({ "a", "b", "c" })[k % 3 + 1] } })
      end
      for _, s in ipairs(scheds) do s:start() end
      assert.truthy(wait_for(function()
        n = 0
        for _ in pairs(ran) do n = n + 1 end
        return n == 90
      end, 20), "not every job ran")
      chronis.sleep(0.3)
      for k = 1, 90 do
        local id, tenant = ("r%02d"):format(k), ({ "a", "b", "c" })[k % 3 + 1]
        assert.are.equal(1, #ran[id], id .. " ran " .. #ran[id] .. " times")
        if tenant == "a" then assert.are_not.equal(2, ran[id][1], id) end
        if tenant == "b" then assert.are_not.equal(1, ran[id][1], id) end
        if tenant == "c" then assert.are.equal(3, ran[id][1], id) end
      end
      for _, s in ipairs(scheds) do
        s:stop()
        s:close()
      end
      for _, st in ipairs(stores) do st:close() end
    end)

    it("move a job between per-value sets as its state and metadata change", function()
      local p = prefix()
      local s = open(p, true)
      local due = iso(T)
      local key = function(k) return "{" .. p .. "}:" .. k end
      s:create_job({ job_id = "m", status = "scheduled", next_run_time = due, metadata = { tenant_id = "a" } })
      assert.are.same({ key('tdue:9:tenant_id:5:"a"') }, keys_like(p, "tdue:*"))
      s:update_job("m", { metadata = { tenant_id = "b" }, priority = 7 })
      assert.are.same({ key('tdue:9:tenant_id:7:"b"') }, keys_like(p, "tdue:*"))
      assert.are.same({}, s:claim_due_jobs({ now = iso(T + S), owner = "o", filters = { ["metadata.tenant_id"] = "a" } }))
      local got = s:claim_due_jobs({ now = iso(T + S), owner = "o", filters = { ["metadata.tenant_id"] = "b" } })
      assert.are.same({ "m" }, ids(got))
      assert.are.same({}, keys_like(p, "tdue:*"))
      assert.are.same({ key('tlease:9:tenant_id:"b"') }, keys_like(p, "tlease:*"))
      -- A completion that changes the tenant and reschedules.
      local res = s:complete_jobs({ { job_id = "m", owner = "o", updates = { status = "scheduled",
        next_run_time = iso(T + 60 * S), metadata = { tenant_id = "c" }, claimed_by = null, lease_until = null } } })
      assert.is_true(res[1].ok)
      assert.are.same({}, keys_like(p, "tlease:*"))
      assert.are.same({ key('tdue:9:tenant_id:7:"c"') }, keys_like(p, "tdue:*"))
      assert.are.equal(iso(T + 60 * S), s:next_due_time({ ["metadata.tenant_id"] = "c" }))
      assert.is_nil(s:next_due_time({ ["metadata.tenant_id"] = "b" }))
      -- Claimed unscoped, then recovered by its tenant's scope only.
      assert.are.same({ "m" }, ids(s:claim_due_jobs({ now = iso(T + 60 * S), owner = "u", lease_seconds = 5 })))
      assert.are.same({ key('tlease:9:tenant_id:"c"') }, keys_like(p, "tlease:*"))
      assert.are.equal(0, s:recover_expired_leases(iso(T + 70 * S), { ["metadata.tenant_id"] = "b" }))
      assert.are.equal(0, s:recover_expired_leases(iso(T + 61 * S), { ["metadata.tenant_id"] = "c" }))
      assert.are.equal(1, s:recover_expired_leases(iso(T + 70 * S), { ["metadata.tenant_id"] = "c" }))
      assert.are.equal("scheduled", s:get_job("m").status)
      assert.are.same({ key('tdue:9:tenant_id:7:"c"') }, keys_like(p, "tdue:*"))
      s:delete_job("m")
      assert.are.same({}, keys_like(p, "tdue:*"))
      s:close()
    end)

    it("walk at most 1,000 entries per script call, and go on from there", function()
      local p = prefix()
      local s = open(p, false)
      local due = iso(T)
      for k = 1, 2500 do
        s:create_job({ job_id = ("f%04d"):format(k), status = "scheduled", next_run_time = due,
          metadata = { tenant_id = "other" } })
      end
      s:create_job({ job_id = "mine", status = "scheduled", next_run_time = iso(T + S), metadata = { tenant_id = "me" } })
      local f = { ["metadata.tenant_id"] = "me" }
      local before = evalsha_calls()
      assert.are.equal(iso(T + S), s:next_due_time(f))
      assert.are.equal(3, evalsha_calls() - before, "script calls of the next due time")
      before = evalsha_calls()
      assert.are.same({ "mine" }, ids(s:claim_due_jobs({ now = iso(T + 2 * S), owner = "o", lease_seconds = 1, filters = f })))
      assert.are.equal(3, evalsha_calls() - before, "script calls of the claim")
      assert.are.same({}, ids(s:claim_due_jobs({ now = iso(T + 2 * S), owner = "o", filters = f })))
      -- 2,500 foreign leases before the tenant's.
      assert.are.equal(2500, #s:claim_due_jobs({ now = iso(T + 2 * S), owner = "x", lease_seconds = 0.5, limit = 3000 }))
      before = evalsha_calls()
      assert.are.equal(1, s:recover_expired_leases(iso(T + 10 * S), f))
      assert.are.equal(3, evalsha_calls() - before, "script calls of the recovery")
      assert.are.equal("scheduled", s:get_job("mine").status)
      assert.are.equal("running", s:get_job("f0001").status)
      s:close()
    end)

    it("build the per-value sets of a prefix whose index was made without them", function()
      local p = prefix()
      local s = open(p, true)
      for k = 1, 40 do
        s:create_job({ job_id = ("o%02d"):format(k), status = "scheduled", next_run_time = iso(T + k * S),
          metadata = { tenant_id = "t" .. (k % 2), region = { zone = "eu" } } })
      end
      s:claim_due_jobs({ now = iso(T + 4 * S), owner = "o", limit = 4 })
      s:close()
      -- What an older version leaves: the index, no per-value sets.
      srv:cli("DEL", "{" .. p .. "}:scoped")
      for _, k in ipairs(keys_like(p, "tdue:*")) do srv:cli("DEL", k) end
      for _, k in ipairs(keys_like(p, "tlease:*")) do srv:cli("DEL", k) end
      assert.are.same({}, keys_like(p, "tdue:*"))
      local old = chronis.storage.redis(srv.url, { prefix = p })
      local f = { ["metadata.tenant_id"] = "t1" }
      -- Without them, scoped calls walk.
      assert.are.equal(iso(T + 5 * S), old:next_due_time(f))
      assert.are.same({ "o05", "o07" }, ids(old:claim_due_jobs({ now = iso(T + 8 * S), owner = "o", limit = 2, filters = f })))
      -- Opening with index_metadata builds them.
      local new = open(p, true)
      assert.are.equal("ready", (srv:cli("HGET", "{" .. p .. "}:indexes", "tenant_id"):match("%a+")))
      assert.are.same({ "o01", "o03", "o05", "o07" }, ids(old:query_jobs({ status = "running", ["metadata.tenant_id"] = "t1" })))
      assert.are.equal(20 - 4, tonumber(srv:cli("ZCARD", "{" .. p .. "}:tdue:9:tenant_id:5:\"t1\"")))
      assert.are.equal(4, tonumber(srv:cli("ZCARD", "{" .. p .. "}:tlease:9:tenant_id:\"t1\"")))
      assert.are.same({ "o09" }, ids(new:claim_due_jobs({ now = iso(T + 10 * S), owner = "o", filters = f })))
      assert.are.equal(2, new:recover_expired_leases(iso(T + 100 * S), { ["metadata.tenant_id"] = "t0" }))
      old:close()
      new:close()
    end)
  end)

  describe("with 3,000 jobs", function()
    after_each(assert_loop_clean)

    -- The memory store is the reference: same jobs, same calls, same
    -- answers (ids in order), on a set large enough for the scripts' walks
    -- by rank and their paging. With index_metadata, a tenant's scheduled
    -- jobs are paged from its per-value sets (merged across priorities).
    for _, index in ipairs({ false, true }) do
    it("answers queries, counts and claims like the memory store" .. (index and ", with index_metadata" or ""), function()
      local mem = chronis.storage.memory()
      local red = chronis.storage.redis(srv.url, { prefix = prefix(), index_metadata = index and "tenant_id" or nil })
      local T = 1700000000 * S
      local statuses = { "scheduled", "scheduled", "scheduled", "paused", "pending", "failed", "running" }
      for k = 0, 2999 do
        local st = statuses[k % 7 + 1]
        local j = { job_id = ("q%04d"):format((k * 7919) % 3000), status = st,
          trigger_type = ({ "interval", "cron", "date" })[k % 3 + 1], priority = k % 11,
          metadata = { tenant_id = "t" .. (k % 5) } }
        if k % 13 ~= 0 then j.next_run_time = iso(T + (k % 600) * S) end
        if st == "running" and k % 2 == 0 then
          j.claimed_by, j.lease_until = "n", iso(T + (k % 50) * S)
        end
        mem:create_job(j)
        red:create_job(j)
      end
      local filters = {
        {}, { status = "scheduled" }, { status = "running" }, { status = { "paused", "failed" } },
        { status = { "scheduled", "running", "pending" } }, { trigger_type = "cron" },
        { next_run_time_gte = iso(T + 100 * S), next_run_time_lte = iso(T + 200 * S) },
        { status = "scheduled", next_run_time_lte = iso(T + 50 * S) },
        { status = "running", trigger_type = "date" }, { ["metadata.tenant_id"] = "t3" },
        { ["metadata.tenant_id"] = "t1", status = "scheduled", trigger_type = "interval" },
        { job_id_in = { "q0001", "q2999", "q1500", "nope", "q0001" } },
        { ["metadata.tenant_id"] = "t2", status = "scheduled" },
        { ["metadata.tenant_id"] = "t4", status = "scheduled", next_run_time_gte = iso(T + 100 * S),
          next_run_time_lte = iso(T + 300 * S) },
        { ["metadata.tenant_id"] = "t0", status = "scheduled", trigger_type = "cron" },
        { ["metadata.tenant_id"] = "t1", status = "running" },
        { ["metadata.tenant_id"] = "t3", status = { "paused", "pending", "running" } },
        { ["metadata.tenant_id"] = "t2", next_run_time_lte = iso(T + 60 * S) },
        { ["metadata.tenant_id"] = "t2", status = "scheduled", ["metadata.x"] = { ["$exists"] = false } },
        { ["metadata.tenant_id"] = "t9", status = "scheduled" },
        { ["metadata.tenant_id"] = { ["$in"] = { "t1", "t3", "t1", "t9" } }, status = "scheduled" },
        { ["metadata.tenant_id"] = { ["$in"] = { "t0", "t4" } } },
        { ["metadata.tenant_id"] = { ["$in"] = { "t2", "t3" } }, status = { "running", "failed" } },
      }
      local pages = { { nil, nil }, { 10, 0 }, { 10, 995 }, { 25, 1490 }, { 100, 2950 }, { 0, 0 },
        { 7, 3 }, { 100, 200 }, { 50, 370 }, { 1, 0 } }
      local function same_answers(when)
        for i, f in ipairs(filters) do
          assert.are.equal(mem:count_jobs(f), red:count_jobs(f), when .. "count, filter " .. i)
          for _, pg in ipairs(pages) do
            assert.are.same(ids(mem:query_jobs(f, pg[1], pg[2])), ids(red:query_jobs(f, pg[1], pg[2])),
              ("%sfilter %d, limit %s, offset %s"):format(when, i, tostring(pg[1]), tostring(pg[2])))
          end
        end
      end
      same_answers("")
      for round = 1, 8 do
        local opts = { now = iso(T + round * 60 * S), limit = 97, owner = "o", lease_seconds = 30 }
        assert.are.same(ids(mem:claim_due_jobs(opts)), ids(red:claim_due_jobs(opts)), "claim " .. round)
      end
      assert.are.equal(mem:count_jobs({ status = "running" }), red:count_jobs({ status = "running" }))
      local at = iso(T + 40 * S)
      assert.are.equal(mem:recover_expired_leases(at), red:recover_expired_leases(at))
      assert.are.equal(mem:next_due_time(), red:next_due_time())
      assert.are.same(ids(mem:query_jobs({ status = "running" })), ids(red:query_jobs({ status = "running" })))
      -- Claims and recoveries moved jobs between the per-value sets.
      same_answers("after claims: ")
      mem:close()
      red:close()
    end)
    end
  end)

  describe("run history", function()
    after_each(assert_loop_clean)

    local T = 0
    -- A start n seconds (and us microseconds) after T, T being a few
    -- hours ago: within the age limit.
    local function at(n, us)
      if T == 0 then T = (math.floor(now_us() / S) - 4 * 3600) * S end
      return iso(T + n * S + (us or 0))
    end
    local function run(id, job, start, fields)
      local r = { run_id = id, job_id = job, outcome = "ok", started_at = start, ended_at = start,
        func_name = "work", node = "n1" }
      for k, v in pairs(fields or {}) do r[k] = v end
      return r
    end
    local function run_ids(store, filters, limit, offset)
      local out = {}
      for i, r in ipairs(store:query_runs(filters, limit, offset)) do out[i] = r.run_id end
      return out
    end
    local function keys_of(p)
      local keys = {}
      for k in srv:cli("KEYS", "{" .. p .. "}:*"):gmatch("[^\n]+") do keys[#keys + 1] = k end
      table.sort(keys)
      return keys
    end
    local function count(p, what, key)
      return tonumber(srv:cli(what, "{" .. p .. "}:" .. key):match("%d+"))
    end

    it("keeps a job's only run whole, then its runs by key with their texts apart, all in the prefix's slot", function()
      local p = prefix()
      local store = chronis.storage.redis(srv.url, { prefix = p })
      store:record_runs({ run("r1", "a", at(10)) })
      local ix = srv:cli("HGET", "{" .. p .. "}:rj", "a")
      assert.truthy(ix:find("r1", 1, true) and ix:find('"outcome":"ok"', 1, true), ix)
      assert.are.equal(0, count(p, "HLEN", "run"))
      store:record_runs({ run("r2", "a", at(20), { outcome = "error", error_code = "error",
        error_message = "boom" }) })
      ix = srv:cli("HGET", "{" .. p .. "}:rj", "a")
      assert.is_nil(ix:find("{", 1, true), "an index of keys: " .. ix)
      assert.are.equal(2, count(p, "HLEN", "run"))
      assert.are.equal(2, count(p, "ZCARD", "rtb"))
      local slot = redis.keyslot("{" .. p .. "}")
      for _, k in ipairs(keys_of(p)) do assert.are.equal(slot, redis.keyslot(k), k) end
      local got = store:query_runs({ job_id = "a" })
      assert.are.same({ "r2", "r1" }, { got[1].run_id, got[2].run_id })
      assert.are.equal("boom", got[1].error_message)
      assert.are.equal(at(20), got[1].started_at)
      assert.are.equal(at(10), got[2].ended_at)
      store:close()
    end)

    it("removes the texts and time buckets of the runs it prunes", function()
      local p = prefix()
      local store = chronis.storage.redis(srv.url, { prefix = p, history = 2 })
      for i = 1, 5 do store:record_runs({ run("k" .. i, "k", at(i)) }) end
      store:record_runs({ run("o1", "other", at(3)) })
      assert.are.same({ "k5", "k4" }, run_ids(store, { job_id = "k" }))
      assert.are.same({ "k5", "k4", "o1" }, run_ids(store))
      assert.are.equal(2, count(p, "HLEN", "run"))
      -- The buckets of k4, k5 and o1; none of those pruned.
      assert.are.equal(3, count(p, "ZCARD", "rtb"))
      store:close()
    end)

    it("prunes old runs of every job as it writes, and forgets their buckets", function()
      local p = prefix()
      local store = chronis.storage.redis(srv.url, { prefix = p, history_days = 1 })
      local old = chronis.time.parse(at(0)) - 2 * 86400 * S
      store:record_runs({ run("x1", "x", iso(old)), run("y1", "y", iso(old)), run("y2", "y", iso(old + S)) })
      store:record_runs({ run("z1", "z", at(5)) })
      assert.are.same({ "z1" }, run_ids(store))
      assert.are.same({}, run_ids(store, { job_id_in = { "x", "y" } }))
      assert.are.same({ "{" .. p .. "}:qready", "{" .. p .. "}:rj",
        "{" .. p .. "}:rt:" .. srv:cli("ZRANGE", "{" .. p .. "}:rtb", 0, -1):match("%d+"), "{" .. p .. "}:rtb" }, keys_of(p))
      store:close()
    end)

    it("keeps a job's runs in start order whatever order they come in, each run once", function()
      local p = prefix()
      local store = chronis.storage.redis(srv.url, { prefix = p })
      store:record_runs({ run("c", "j", at(30)) })
      store:record_runs({ run("a", "j", at(10)), run("b", "j", at(20)), run("a", "j", at(10)) })
      store:record_runs({ run("b", "j", at(20)), run("d", "j", at(20)) })
      -- Equal starts: run_id descending.
      assert.are.same({ "c", "d", "b", "a" }, run_ids(store, { job_id = "j" }))
      assert.are.same({ "d", "b" }, run_ids(store, { job_id = "j" }, 2, 1))
      -- An old run that its keep count prunes at once.
      store:record_runs({ run("e", "j", at(5), { keep = 2 }) })
      assert.are.same({ "c", "d" }, run_ids(store, { job_id = "j" }))
      assert.are.equal(2, count(p, "HLEN", "run"))
      store:close()
    end)

    it("writes a completion's run under its own job and keep count", function()
      local p = prefix()
      local store = chronis.storage.redis(srv.url, { prefix = p })
      store:create_job({ job_id = "c", status = "running", claimed_by = "me", lease_until = now_us() + 60 * S })
      store:record_runs({ run("c1", "c", at(1)), run("c2", "c", at(2)) })
      local res = store:complete_jobs({
        { job_id = "c", owner = "me", updates = { status = "paused", claimed_by = null, lease_until = null },
          run = run("c3", "c", at(3), { keep = 1 }) },
        { job_id = "nope", owner = "me", delete = true, run = run("n1", "nope", at(3)) },
      })
      assert.is_true(res[1].ok)
      assert.is_false(res[2].ok)
      assert.are.same({ "c3" }, run_ids(store, { job_id = "c" }))
      assert.are.same({ "c3" }, run_ids(store))
      assert.are.equal(1, count(p, "HLEN", "run"))
      store:close()
    end)

    it("applies completions whose runs it cannot write (a history key edited by hand)", function()
      local p = prefix()
      local store = chronis.storage.redis(srv.url, { prefix = p })
      store:create_job({ job_id = "w", status = "running", claimed_by = "me", lease_until = now_us() + 60 * S })
      srv:cli("SET", "{" .. p .. "}:rj", "not a hash")
      local res = store:complete_jobs({
        { job_id = "w", owner = "me", updates = { status = "paused", claimed_by = null, lease_until = null },
          run = run("w1", "w", at(1)) },
      })
      assert.is_true(res[1].ok)
      assert.are.equal("paused", store:get_job("w").status)
      store:close()
    end)

    it("answers query_runs like the memory store over many jobs, runs and time buckets", function()
      local mem = chronis.storage.memory()
      local red = chronis.storage.redis(srv.url, { prefix = prefix() })
      local seed = 7
      local function rnd(n)
        seed = (seed * 1103515245 + 12345) % 2147483648
        return seed % n
      end
      local last, batch = {}, {}
      for i = 1, 1500 do
        local job = "j" .. rnd(40)
        -- Each job's runs in start order; jobs share starts now and then.
        local t = math.max((last[job] or -1) + 1 + rnd(20), rnd(9000))
        last[job] = t
        local r = run(("r%04d"):format(i), job, at(t, rnd(4) * 2500), {
          outcome = ({ "ok", "ok", "error", "timeout", "skipped" })[rnd(5) + 1],
          func_name = ({ "mail", "bill", "sync" })[rnd(3) + 1],
          metadata = { tenant = "t" .. rnd(3), region = { zone = rnd(2) == 0 and "eu" or "us" } },
          keep = job == "j7" and 3 or nil })
        batch[#batch + 1] = r
        if #batch == 37 or i == 1500 then
          mem:record_runs(batch)
          red:record_runs(batch)
          batch = {}
        end
      end
      local filters = {
        {}, { job_id = "j3" }, { job_id = "j7" }, { job_id_in = { "j1", "j2", "j3", "nope", "j1" } },
        { outcome = "error" }, { outcome = { "timeout", "skipped" } },
        { started_at_gte = at(2000), started_at_lte = at(6000) }, { started_at_lte = at(100, 5000) },
        { func_name = "mail" }, { ["metadata.tenant"] = "t1" }, { ["metadata.region.zone"] = "eu", outcome = "ok" },
        { job_id = "j5", started_at_gte = at(4000), func_name = "sync" },
      }
      local pages = { { nil, nil }, { 10, 0 }, { 7, 13 }, { 50, 300 }, { 25, 1490 } }
      for i, f in ipairs(filters) do
        for _, pg in ipairs(pages) do
          assert.are.same(run_ids(mem, f, pg[1], pg[2]), run_ids(red, f, pg[1], pg[2]),
            ("filter %d, limit %s, offset %s"):format(i, tostring(pg[1]), tostring(pg[2])))
        end
      end
      mem:close()
      red:close()
    end)

    it("records the runs of a job that fails then succeeds, and the job's last outcome", function()
      local store = chronis.storage.redis(srv.url, { prefix = prefix() })
      store:create_job({ job_id = "flaky", status = "scheduled", next_run_time = now_us(), func_name = "flaky",
        trigger_type = "interval", trigger_args = { seconds = 3600 }, max_retries = 1, retry_delay_seconds = 0 })
      local calls = 0
      local sched = chronis.scheduler({ storage = store, polling_interval = 0.2, logger = quiet })
      sched:handler("flaky", function()
        calls = calls + 1
        if calls == 1 then error("first time fails") end
      end)
      sched:start()
      assert.truthy(wait_for(function() return #store:query_runs({ job_id = "flaky" }) == 2 end, 10))
      sched:stop()
      sched:close()
      local runs = store:query_runs({ job_id = "flaky" })
      assert.are.same({ "ok", "error" }, { runs[1].outcome, runs[2].outcome })
      assert.truthy(runs[2].error_message:find("first time fails", 1, true), runs[2].error_message)
      assert.are.same({ 2, 1 }, { runs[1].attempt, runs[2].attempt })
      assert.are.equal("flaky", runs[1].func_name)
      local job = store:get_job("flaky")
      assert.are.equal("ok", job.last_outcome)
      assert.are.equal(1, job.failure_count)
      assert.are.equal(0, job.consecutive_failures)
      assert.are.equal(runs[1].started_at, job.last_run_at)
      store:close()
    end)

    it("keeps no runs with history=0, unless a run's own keep count says so", function()
      local p = prefix()
      local store = chronis.storage.open(srv.url .. "?prefix=" .. p .. "&history=0")
      store:create_job({ job_id = "once", status = "scheduled", next_run_time = now_us(), func_name = "h",
        trigger_type = "interval", trigger_args = { seconds = 3600 } })
      local ran = false
      local sched = chronis.scheduler({ storage = store, polling_interval = 0.2, logger = quiet })
      sched:handler("h", function() ran = true end)
      sched:start()
      assert.truthy(wait_for(function() return ran and store:get_job("once").last_outcome == "ok" end, 10))
      sched:stop()
      sched:close()
      assert.are.same({}, store:query_runs({ job_id = "once" }))
      assert.are.equal(0, store:record_runs({ run("n1", "once", at(1)) }))
      assert.is_nil(srv:cli("EXISTS", "{" .. p .. "}:rj"):match("1"))
      assert.are.equal(1, store:record_runs({ run("n2", "once", at(2), { keep = 1 }) }))
      assert.are.same({ "n2" }, run_ids(store, { job_id = "once" }))
      store:close()
    end)

    it("refuses bad history options naming them; the lock has none", function()
      for _, q in ipairs({ "history=-1", "history=lots", "history_days=0" }) do
        local ok, err = pcall(chronis.storage.open, "redis://127.0.0.1:1/0?" .. q)
        assert.is_false(ok, q)
        assert.are.equal("invalid", err.code)
        assert.truthy(err.message:find(q:match("^[%w_]+"), 1, true), err.message)
      end
      local ok, err = pcall(chronis.storage.open, "redis://127.0.0.1:1/0?histroy=3")
      assert.is_false(ok)
      assert.truthy(err.message:find("did you mean 'history'?", 1, true), err.message)
      ok, err = pcall(chronis.lock.redis, "redis://127.0.0.1:1/0?history=3")
      assert.is_false(ok)
      assert.are.equal("invalid", err.code)
      assert.truthy(err.message:find("history is a storage option", 1, true), err.message)
    end)
  end)

  describe("wake-ups", function()
    local made = {}
    after_each(function()
      for _, x in ipairs(made) do pcall(function() x:close() end) end
      made = {}
      assert_loop_clean()
    end)

    local function keep(x)
      made[#made + 1] = x
      return x
    end

    it("claim a job created elsewhere as soon as it is due, not at the next poll", function()
      local p = prefix()
      local store = keep(chronis.storage.redis(srv.url, { prefix = p }))
      local other = keep(chronis.storage.redis(srv.url, { prefix = p }))
      local ran_at
      local sched = chronis.scheduler({ storage = store, polling_interval = 30, logger = quiet })
      sched:handler("h", function() ran_at = now_us() end)
      sched:start()
      chronis.sleep(0.3) -- the first claim subscribes
      local due = now_us() + 300000
      other:create_job({ job_id = "soon", status = "scheduled", next_run_time = due, func_name = "h",
        trigger_type = "date" })
      assert.truthy(wait_for(function() return ran_at ~= nil end, 5), "not run within 5 s (poll: 30 s)")
      assert.is_true(ran_at >= due - 20000, "ran before it was due")
      assert.is_true(ran_at < due + 1500000, ("ran %.3f s late"):format((ran_at - due) / 1e6))
      sched:stop()
      sched:close()
    end)

    it("start a job written by raw commands (no PUBLISH) within ten polls", function()
      local p = prefix()
      local store = keep(chronis.storage.redis(srv.url, { prefix = p }))
      local ran_at
      local sched = chronis.scheduler({ storage = store, polling_interval = 0.1, logger = quiet })
      sched:handler("h", function() ran_at = now_us() end)
      local far = now_us() + 3600 * 1000000
      store:create_job({ job_id = "raw", status = "scheduled", next_run_time = far, func_name = "h",
        trigger_type = "date" })
      sched:start()
      chronis.sleep(0.3) -- claimed nothing, read the next due time: an hour away
      -- Moved to now + 200 ms behind the store's back, as its scripts would
      -- (the hash, the set of all jobs and the due set of priority 5),
      -- without announcing it.
      local due = now_us() + 200000
      srv:cli("HSET", "{" .. p .. "}:job:raw", "next_run_time", tostring(due))
      srv:cli("ZADD", "{" .. p .. "}:jobs", tostring(due), "raw")
      srv:cli("ZADD", "{" .. p .. "}:due:5", tostring(due), "raw")
      assert.truthy(wait_for(function() return ran_at ~= nil end, 3), "the raw job did not run")
      assert.is_true(ran_at >= due, "ran before it was due")
      -- The next read of next_due_time (every 10 polls, 1 s) finds it.
      assert.is_true(ran_at < due + 1300000, ("ran %.3f s late"):format((ran_at - due) / 1e6))
      sched:stop()
      sched:close()
    end)

    it("wake a scheduler for a job created before it started", function()
      local p = prefix()
      local store = keep(chronis.storage.redis(srv.url, { prefix = p }))
      local due = now_us() + 500000
      store:create_job({ job_id = "later", status = "scheduled", next_run_time = due, func_name = "h",
        trigger_type = "date" })
      local ran_at
      local sched = chronis.scheduler({ storage = store, polling_interval = 30, logger = quiet })
      sched:handler("h", function() ran_at = now_us() end)
      sched:start()
      assert.truthy(wait_for(function() return ran_at ~= nil end, 5), "not run within 5 s (poll: 30 s)")
      assert.is_true(ran_at < due + 1500000, ("ran %.3f s late"):format((ran_at - due) / 1e6))
      sched:stop()
      sched:close()
    end)
  end)

  describe("failures", function()
    after_each(assert_loop_clean)

    it("answers 'unavailable' when the server refuses, and connects once it is up", function()
      local port
      repeat port = math.random(20000, 59999) until not redis.answers(port)
      local url = ("redis://127.0.0.1:%d/0"):format(port)
      local s = chronis.storage.open(url .. "?queue_timeout=0.2&reconnect_max=0.2")
      local t0 = now_us()
      local ok, err = pcall(s.create_job, s, { job_id = "a", status = "pending" })
      assert.is_false(ok)
      assert.are.equal("unavailable", err.code)
      assert.truthy(err.message:find(tostring(port), 1, true), err.message)
      assert.is_true(now_us() - t0 < 3 * S, "a refused connection took long to fail")
      local lock = chronis.lock.redis(url .. "?queue_timeout=0.2")
      local lok, lerr = pcall(lock.acquire, lock, "k", 10, { owner = "o" })
      assert.is_false(lok)
      assert.are.equal("unavailable", lerr.code)
      local late = redis.start({ port = port })
      local created
      for _ = 1, 50 do
        created = pcall(s.create_job, s, { job_id = "a", status = "pending" })
        if created then break end
        chronis.sleep(0.1)
      end
      assert.is_true(created, "no reconnection once the server is up")
      assert.are.equal("pending", s:get_job("a").status)
      local got
      for _ = 1, 50 do
        local fine, r = pcall(lock.acquire, lock, "k", 10, { owner = "o" })
        got = fine and r
        if fine then break end
        chronis.sleep(0.1)
      end
      assert.is_true(got, "the lock did not reconnect")
      s:close()
      lock:close()
      late:stop()
    end)

    -- N one-shot jobs due now on a fresh prefix; returns the store, the
    -- scheduler and the table of runs per job id.
    local function run_burst(url, n, opts)
      opts = opts or {}
      local store = chronis.storage.open(url)
      create_due(store, n)
      local runs, total = {}, 0
      local sched = chronis.scheduler({ storage = store, polling_interval = 0.2, lease_seconds = opts.lease or 3,
        max_workers = 20, max_queue_size = 200, logger = quiet })
      sched:handler("rec", function(job)
        runs[job.job_id] = (runs[job.job_id] or 0) + 1
        total = total + 1
        chronis.sleep(opts.pause or 0.002)
      end)
      sched:start()
      return store, sched, runs, function() return total end
    end

    local function assert_exactly_once(store, sched, runs, n)
      local ok = wait_for(function() return sched:stats().succeeded >= n end, 60)
      assert.truthy(wait_for(function()
        local c = 0
        local fine, got = pcall(function() return store:count_jobs() end)
        if fine then c = got else c = -1 end
        return c == 0
      end, 30), "jobs left in the store")
      sched:stop()
      sched:close()
      local missing, twice = {}, {}
      for i = 1, n do
        local id = ("job%05d"):format(i)
        if not runs[id] then missing[#missing + 1] = id
        elseif runs[id] > 1 then twice[#twice + 1] = id .. " x" .. runs[id] end
      end
      assert.are.same({}, twice, "jobs run more than once")
      assert.are.same({}, missing, "jobs never run")
      assert.truthy(ok)
      -- One run recorded per job: a completion sent again after a lost
      -- connection, or with EVAL after NOSCRIPT, writes no second one.
      local per_job = {}
      for _, r in ipairs(store:query_runs()) do
        per_job[r.job_id] = (per_job[r.job_id] or 0) + 1
      end
      local recorded, again = 0, {}
      for id, c in pairs(per_job) do
        recorded = recorded + 1
        if c > 1 then again[#again + 1] = id .. " x" .. c end
      end
      assert.are.same({}, again, "runs recorded twice")
      assert.are.equal(n, recorded, "jobs without a recorded run")
      store:close()
    end

    it("keeps running every job exactly once across CLIENT KILL", function()
      local url = srv.url .. "?prefix=" .. prefix()
      local store, sched, runs, total = run_burst(url, 1500)
      for _ = 1, 4 do
        local before = total()
        wait_for(function() return total() >= before + 150 end, 20)
        srv:cli("CLIENT", "KILL", "TYPE", "normal")
        srv:cli("CLIENT", "KILL", "TYPE", "pubsub")
      end
      assert_exactly_once(store, sched, runs, 1500)
    end)

    it("reloads its scripts after SCRIPT FLUSH and runs every job exactly once", function()
      local url = srv.url .. "?prefix=" .. prefix()
      local function evals()
        return tonumber(srv:cli("INFO", "commandstats"):match("cmdstat_eval:calls=(%d+)") or "0")
      end
      local before_evals = evals()
      local store, sched, runs, total = run_burst(url, 1500)
      for _ = 1, 3 do
        local before = total()
        wait_for(function() return total() >= before + 200 end, 20)
        assert.truthy(srv:cli("SCRIPT", "FLUSH"):find("OK", 1, true))
      end
      assert_exactly_once(store, sched, runs, 1500)
      assert.is_true(evals() > before_evals, "no script was sent again with EVAL")
    end)

    it("recovers from a server restart (kill -9, AOF) and runs every job exactly once", function()
      local aof = redis.start({ appendonly = true })
      -- A 30 s lease: a restart slower than the lease (a loaded machine)
      -- would let claimed jobs expire and run again, as the lease rules
      -- allow; here each must run once.
      local store, sched, runs, total = run_burst(aof.url, 800, { pause = 0.005, lease = 30 })
      wait_for(function() return total() >= 200 end, 20)
      aof:kill()
      chronis.sleep(0.5) -- the scheduler runs on, its calls wait or fail
      aof:restart()
      assert_exactly_once(store, sched, runs, 800)
      aof:stop()
    end)
  end)

  describe("lock", function()
    local locks = {}
    after_each(function()
      for _, l in ipairs(locks) do l:close() end
      locks = {}
      assert_loop_clean()
    end)

    local function open()
      local l = chronis.lock.redis(srv.url .. "?prefix=locks")
      locks[#locks + 1] = l
      return l
    end

    it("wakes a blocked acquirer on another connection when the TTL ends", function()
      local a, b = open(), open()
      local key = "ttl-" .. prefix()
      assert.is_true(a:acquire(key, 0.5, { owner = "a" }))
      local t0 = now_us()
      assert.is_true(b:acquire(key, 10, { owner = "b", blocking = true, timeout = 5 }))
      local waited = (now_us() - t0) / 1e6
      assert.is_true(waited >= 0.4, ("took it after %.3f s, before the TTL ended"):format(waited))
      assert.is_true(waited < 2, ("waited %.3f s for a 0.5 s TTL"):format(waited))
      assert.are.equal("b", srv:cli("GET", "locks:lock:" .. key):match("%S+"))
    end)

    it("wakes a blocked acquirer at once when another connection releases", function()
      local a, b = open(), open()
      local key = "rel-" .. prefix()
      assert.is_true(a:acquire(key, 30, { owner = "a" }))
      local released_at
      local t = chronis.spawn(function()
        chronis.sleep(0.2)
        released_at = now_us()
        return a:release(key, "a")
      end)
      assert.is_true(b:acquire(key, 30, { owner = "b", blocking = true, timeout = 10 }))
      local lag = (now_us() - released_at) / 1e6
      assert.is_true(t:join())
      assert.is_true(lag < 0.5, ("took the lock %.3f s after the release"):format(lag))
    end)
  end)

  describe("4 scheduler processes", function()
    local worker = [[
local root, url, out = arg[1], arg[2], arg[3]
package.path = root .. "lua/?.lua;" .. root .. "lua/?/init.lua;" .. package.path
package.cpath = root .. "build/lua/?.so;" .. package.cpath
local chronis = require "chronis"
local f = assert(io.open(out, "w"))
local store = chronis.storage.open(url)
local sched = chronis.scheduler({ storage = store, polling_interval = 0.2, max_workers = 50,
  lease_seconds = 30, logger = function() end })
sched:handler("rec", function(job) f:write(job.job_id, "\n") end)
sched:start()
local done = false
chronis.spawn(function()
  while store:count_jobs() > 0 do chronis.sleep(0.2) end
  done = true
end)
chronis.run_until(function() return done end, 300)
sched:stop()
f:close()
store:close()
os.exit(done and 0 or 1)
]]

    it("run each of 10,000 one-shot jobs due now exactly once", function()
      local N = 10000
      local url = srv.url .. "?prefix=" .. prefix()
      local dir = srv.dir
      local script = dir .. "/worker.lua"
      local f = assert(io.open(script, "w"))
      f:write(worker)
      f:close()
      local store = chronis.storage.open(url)
      create_due(store, N)
      local root = debug.getinfo(1, "S").source:match("^@(.*)spec/redis_spec%.lua$") or "./"
      if root == "" then root = "./" end
      local cmds = {}
      for w = 1, 4 do
        cmds[w] = ("lua5.4 %s %s '%s' %s/ran.%d > %s/worker.%d.log 2>&1"):format(script, root, url, dir, w, dir, w)
      end
      local ok = os.execute("(" .. table.concat(cmds, " & ") .. " & wait)")
      assert.is_true(ok == true or ok == 0, "a worker failed")
      local seen, dup, per = {}, {}, {}
      for w = 1, 4 do
        local n = 0
        for id in io.lines(dir .. "/ran." .. w) do
          n = n + 1
          if seen[id] then dup[#dup + 1] = id end
          seen[id] = true
        end
        per[w] = n
      end
      local count = 0
      for _ in pairs(seen) do count = count + 1 end
      assert.are.same({}, dup, "jobs run twice")
      assert.are.equal(N, count, "jobs never run")
      assert.are.equal(0, store:count_jobs())
      for w = 1, 4 do
        assert.is_true(per[w] > 0, ("worker %d ran nothing (%s)"):format(w, table.concat(per, ",")))
      end
      store:close()
      assert_loop_clean()
    end)
  end)
end)
