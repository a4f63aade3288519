-- Hostile input at the boundaries that the storage contract does not
-- cover (spec/support/storage_contract.lua has what every store must
-- refuse or keep in job fields, filters and claim options): store URLs and
-- option tables, scheduler and builder options, and records that chronis
-- did not write, put straight into SQLite, the JSON file, Redis and
-- PostgreSQL. Each case asserts what a user sees: the input is refused with
-- `invalid` naming what was wrong, or a corrupted job fails on its own
-- while the scheduler keeps running the others.
local chronis = require "chronis"
local U = require "support.util"

local assert_error_naming = U.assert_error_naming
local tmpdir, new_path = U.scratch("chronis-hostile")

local NAN, INF = 0 / 0, math.huge

teardown(function() U.remove_tree(tmpdir) end)

describe("store URLs", function()
  -- C reads a string up to its first NUL: "sqlite:/tmp/a\0b" opened /tmp/a.
  it("refuse a raw NUL byte anywhere, as they refuse %00, without quoting the URL", function()
    for _, url in ipairs({
      "sqlite:" .. new_path("a") .. "\0b.db",
      "file:" .. new_path("f") .. "\0.json",
      "postgres://app\0:secret@127.0.0.1/db",
      "redis://127.0.0.1:6379/0?prefix=a\0b",
    }) do
      local err = assert_error_naming("invalid", "a NUL byte", chronis.storage.open, url)
      assert.is_nil(err.message:find("secret", 1, true), err.message)
    end
    assert_error_naming("invalid", "a NUL byte", chronis.lock.open, "redis://127.0.0.1/0\0x")
    assert.is_false(U.exists(tmpdir .. "/1-a"), "no file may be opened at the cut path")
  end)

  it("refuse NaN, infinite and out-of-range numbers and wrong types, naming the option", function()
    local cases = {
      { "redis://127.0.0.1/0?timeout=nan", "timeout" },
      { "redis://127.0.0.1/0?timeout=inf", "timeout" },
      { "redis://127.0.0.1/0?timeout=1e999", "timeout" },
      { "redis://127.0.0.1:99999/0", "port" },
      { "redis://127.0.0.1:1/99999999999999999999", "database" },
      { "postgres://u@127.0.0.1/db?connect_timeout=nan", "connect_timeout" },
      { "postgres://u@127.0.0.1/db?table=a%22b", "table" },
      { "postgres://u@127.0.0.1/db?table=a'b;drop", "table" },
      { "sqlite:" .. new_path("x.db") .. "?busy_timeout=nan", "busy_timeout" },
      { "sqlite:" .. new_path("x.db") .. "?busy_timeout=99999999999999999999", "busy_timeout" },
      { "sqlite:" .. new_path("x.db") .. "?synchronous=%27%22%5C", "synchronous" },
      { { scheme = "redis", host = "127.0.0.1", timeout = NAN }, "timeout" },
      { { scheme = "redis", host = "127.0.0.1", timeout = INF }, "timeout" },
      { { scheme = "redis", host = "127.0.0.1", port = 1e20 }, "port" },
      { { scheme = "redis", host = "127.0.0.1", port = {} }, "port" },
      { { scheme = "redis", host = "127.0.0.1\0x" }, "host" },
      { { scheme = "sqlite", path = new_path("y") .. "\0b" }, "path" },
      { { scheme = "sqlite", path = new_path("z.db"), deep = { { { {} } } } }, "deep" },
    }
    for _, c in ipairs(cases) do
      assert_error_naming("invalid", c[2], chronis.storage.open, c[1])
    end
    assert_error_naming("invalid", "string or table expected", chronis.storage.open, 5)
    assert_error_naming("invalid", "string or table expected", chronis.storage.open, nil)
    assert_error_naming("invalid", "unknown scheme", chronis.storage.open, string.rep("a", 1 << 20))
    -- A path of 1 MB is the file system's to refuse, by name.
    assert_error_naming("invalid", "cannot open", chronis.storage.open, "sqlite:/tmp/" .. string.rep("a", 1 << 20))
  end)

  it("are shown whole up to 203 bytes, then cut with '...' (each length around the cut)", function()
    -- A URL is shown cut after 200 bytes with "..." added: one of 201 to
    -- 203 bytes once had the "..." written past its end (found by the url
    -- fuzzer; the sanitizer pass of the suite sees the overflow).
    for n = 195, 210 do
      local url = "nosuch:" .. string.rep("a", n - 7)
      local ok, err = pcall(chronis.storage.open, url)
      assert.is_false(ok)
      assert.are.equal("invalid", err.code)
      if n <= 203 then
        assert.truthy(err.message:find(url, 1, true), n .. " bytes: " .. err.message)
      else
        assert.truthy(err.message:find(url:sub(1, 200) .. "...", 1, true), n .. " bytes: " .. err.message)
        assert.falsy(err.message:find(url, 1, true), n .. " bytes shown whole: " .. err.message)
      end
    end
  end)
end)

describe("scheduler options", function()
  local function new(opts)
    opts.storage = opts.storage or chronis.storage.memory()
    return chronis.scheduler(opts)
  end

  it("refuse NaN, infinities and huge numbers, naming the option", function()
    for name, v in pairs({ polling_interval = NAN, max_workers = INF, max_queue_size = 2 ^ 53,
      lease_seconds = -INF, shutdown_grace = NAN, default_timeout = INF }) do
      assert_error_naming("invalid", "'" .. name .. "'", new, { [name] = v })
    end
  end)

  -- The node id owns every claim: one that no store can hold made every
  -- claim fail while the scheduler looked alive.
  it("refuse a node_id with a NUL byte or invalid UTF-8, or of 1 MB", function()
    for _, id in ipairs({ "a\0b", "\xff", "n\xc3", string.rep("n", 1 << 20) }) do
      assert_error_naming("invalid", "'node_id'", new, { node_id = id })
    end
    local s = new({ node_id = "node \"1\" \\ é" })
    assert.are.equal("node \"1\" \\ é", s:node_id())
  end)

  it("refuse a storage that is no store, URL or option table, naming it", function()
    for _, v in ipairs({ 5, true, function() end }) do
      assert_error_naming("invalid", "'storage'", chronis.scheduler, { storage = v })
    end
  end)

  it("and the builder refuse non-finite and huge times, intervals and numbers by name", function()
    local s = new({})
    s:handler("rec", function() end)
    local T = "2030-01-01T00:00:00Z"
    local cases = {
      { function() return s:every{ seconds = NAN }:run("rec") end, "seconds" },
      { function() return s:every{ seconds = INF }:run("rec") end, "seconds" },
      { function() return s:every{ seconds = 1e300 }:run("rec") end, "interval is too long" },
      { function() return s:every{ weeks = math.maxinteger }:run("rec") end, "interval is too long" },
      { function() return s:every{ minutes = -1 }:run("rec") end, "minutes" },
      { function() return s:once(NAN):run("rec") end, "once" },
      { function() return s:once(math.maxinteger):run("rec") end, "run_date" },
      { function() return s:on(string.rep("*", 1 << 20)):run("rec") end, "too long" },
      { function() return s:on("* * * * *\0"):run("rec") end, "trigger_args.cron" },
      { function() return s:on{ hour = NAN }:run("rec") end, "hour" },
      { function() return s:once(T):config{ priority = NAN }:run("rec") end, "priority" },
      { function() return s:once(T):config{ retry = INF }:run("rec") end, "max_retries" },
      { function() return s:once(T):config{ retry_delay = 1e300 }:run("rec") end, "retry_delay_seconds" },
      { function() return s:once(T):config{ timeout = -INF }:run("rec") end, "timeout_seconds" },
      { function() return s:once(T):config{ timezone = string.rep("a", 1 << 20) }:run("rec") end, "timezone" },
      { function() return s:once(T):config{ timezone = "../../../etc/passwd" }:run("rec") end, "timezone" },
    }
    for _, c in ipairs(cases) do assert_error_naming("invalid", c[2], c[1]) end
    assert.are.same({}, s:query_jobs())
  end)
end)

-- Records written behind chronis' back. `corrupt(store, id)` changes job
-- `id` in the backend (returning the store to use when it had to reopen
-- it); a running scheduler must fail that job alone, with `invalid` naming
-- the job and `field` (what was wrong), without running or deleting it, and
-- run the others; reads still return every job.
local function corrupted_suite(name, what, open, corrupt, field)
  it(name .. ": a job whose " .. what .. " fails alone, named, and stays", function()
    local store = open()
    local now = chronis.time.format(chronis.time.now())
    for _, id in ipairs({ "good1", "bad", "good2" }) do
      store:create_job({ job_id = id, status = "scheduled", next_run_time = now, func_name = "rec",
        trigger_type = "interval", trigger_args = { seconds = 3600 }, kwargs = { id = id } })
    end
    store = corrupt(store, "bad") or store
    -- Reads name the job when asked for it, and lose none of the others.
    local function ids_and_bad()
      local ids, bad = {}, nil
      for _, j in ipairs(store:query_jobs()) do
        ids[#ids + 1] = j.job_id
        if j.job_id == "bad" then bad = j end
      end
      table.sort(ids)
      assert.are.same({ "bad", "good1", "good2" }, ids)
      return bad
    end
    ids_and_bad()
    assert.are.same({ id = "good1" }, store:get_job("good1").kwargs)
    local runs, failures = {}, {}
    local sched = chronis.scheduler{ storage = store, polling_interval = 0.1, logger = function() end,
      on_failure = function(id, err) failures[#failures + 1] = { id = id, err = err } end }
    sched:handler("rec", function(job) runs[#runs + 1] = job.kwargs.id end)
    sched:start()
    assert.is_true(chronis.run_until(function() return #runs >= 2 and #failures >= 1 end, 10))
    assert.are.equal("running", sched:state())
    sched:stop(5)
    table.sort(runs)
    assert.are.same({ "good1", "good2" }, runs)
    assert.are.equal(1, #failures)
    assert.are.equal("bad", failures[1].id)
    local err = failures[1].err
    assert.are.equal("invalid", err.code)
    assert(err.message:find("job 'bad'", 1, true) and err.message:find(field, 1, true), err.message)
    -- Kept, failed, for someone to fix; the others are rescheduled.
    assert.are.equal("failed", ids_and_bad().status)
    local ok, got = pcall(store.get_job, store, "bad")
    if ok then -- read whole again (SQLite rewrote the record from its columns)
      assert.are.equal("failed", got.status)
    else -- still unreadable: named
      assert.are.equal("invalid", got.code)
      assert(got.message:find("job 'bad'", 1, true), got.message)
    end
    for _, id in ipairs({ "good1", "good2" }) do
      local j = store:get_job(id)
      assert.are.equal("scheduled", j.status)
      assert.are.same({ id = id }, j.kwargs)
    end
    store:close()
  end)
end

describe("records chronis did not write", function()
  local function sh_ok(cmd)
    local out = U.capture(cmd .. " 2>&1")
    return out
  end

  do
    local path
    corrupted_suite("sqlite", "stored timezone does not exist", function()
      path = new_path("c.db")
      return chronis.storage.open("sqlite:" .. path)
    end, function(_, id)
      sh_ok(("sqlite3 %s %s"):format(U.sh_quote(path), U.sh_quote(
        ("UPDATE jobs SET record = json_set(record, '$.timezone', 'Mars/Olympus') WHERE job_id = '%s'")
          :format(id))))
    end, "timezone")
    -- A record that is no JSON failed every read and claim of the store.
    for _, c in ipairs({ { "'{not json'", "malformed JSON" }, { "x'00ff'", "unreadable" },
      { "'[1, 2]'", "unreadable" } }) do
      corrupted_suite("sqlite", "record column is " .. c[1], function()
        path = new_path("c.db")
        return chronis.storage.open("sqlite:" .. path)
      end, function(_, id)
        sh_ok(("sqlite3 %s %s"):format(U.sh_quote(path), U.sh_quote(
          ("UPDATE jobs SET record = %s WHERE job_id = '%s'"):format(c[1], id))))
      end, c[2])
    end
  end

  do
    local path
    local new_file_store = assert(loadfile("adapters/file.lua", "t"))()
    corrupted_suite("file", "stored trigger_args are not numbers", function()
      path = new_path("c.json")
      return chronis.storage.lua(new_file_store({ path = path }), { name = "file" })
    end, function(store, id)
      store:close()
      local text = U.read(path)
      text = text:gsub('("' .. id .. '":%b{})', function(rec)
        return (rec:gsub('"trigger_args":%b{}', '"trigger_args":{"seconds":"often"}'))
      end)
      U.write(path, text)
      return chronis.storage.lua(new_file_store({ path = path }), { name = "file" })
    end, "seconds")
  end

  describe("in Redis", function()
    local srv
    setup(function() srv = require("support.redis").start() end)
    teardown(function() if srv then srv:stop() end end)
    local prefix
    corrupted_suite("redis", "stored trigger_args are not JSON", function()
      prefix = ("h%d_%d"):format(os.time() % 100000, math.random(1e6))
      return chronis.storage.redis(srv.url, { prefix = prefix })
    end, function(_, id)
      srv:cli("HSET", "{" .. prefix .. "}:job:" .. id, "trigger_args", "{not json")
    end, "trigger_args")
    -- Fields that do not parse were read as 0 or dropped: the job ran
    -- without its kwargs.
    for _, c in ipairs({ { "x:kwargs", "{not json" }, { "x:kwargs", string.rep("[", 10000) .. string.rep("]", 10000) },
      { "priority", "high" }, { "next_run_time", "yesterday" }, { "max_retries", "1e999" } }) do
      corrupted_suite("redis", ("field %s holds %q"):format(c[1], c[2]:sub(1, 12)), function()
        prefix = ("h%d_%d"):format(os.time() % 100000, math.random(1e6))
        return chronis.storage.redis(srv.url, { prefix = prefix })
      end, function(_, id)
        srv:cli("HSET", "{" .. prefix .. "}:job:" .. id, c[1], c[2])
      end, "invalid field '" .. c[1]:gsub("^x:", "") .. "'")
    end

    -- A claim stopped half way at such a key (Redis does not undo a
    -- script's writes): the jobs before it left the due set but stayed
    -- scheduled, never to run, and every later claim failed.
    it("redis: a job key of another type is passed over by claims and queries, and can be deleted", function()
      prefix = ("h%d_%d"):format(os.time() % 100000, math.random(1e6))
      local store = chronis.storage.redis(srv.url, { prefix = prefix })
      local now = chronis.time.format(chronis.time.now())
      for _, id in ipairs({ "a", "bad", "c" }) do
        store:create_job({ job_id = id, status = "scheduled", next_run_time = now, func_name = "rec",
          trigger_type = "interval", trigger_args = { seconds = 3600 } })
      end
      local key = "{" .. prefix .. "}:job:bad"
      srv:cli("DEL", key)
      srv:cli("SET", key, "not a hash")
      assert_error_naming("invalid", "job 'bad'", store.get_job, store, "bad")
      local function ids()
        local out = {}
        for _, j in ipairs(store:query_jobs()) do out[#out + 1] = j.job_id end
        return out
      end
      assert.are.same({ "a", "c" }, ids())
      local runs = {}
      local sched = chronis.scheduler{ storage = store, polling_interval = 0.1, logger = function() end }
      sched:handler("rec", function(job) runs[#runs + 1] = job.job_id end)
      sched:start()
      assert.is_true(chronis.run_until(function() return #runs >= 2 end, 10))
      sched:stop(5)
      table.sort(runs)
      assert.are.same({ "a", "c" }, runs)
      assert.are.equal(0, sched:stats().store_errors)
      assert.is_true(store:delete_job("bad"))
      assert.are.equal("0", srv:cli("EXISTS", key):match("%d"))
      assert.are.same({ "a", "c" }, ids())
      store:close()
    end)

    -- Claimed, then read back without a job id: the record was dropped and
    -- the job stayed claimed until its lease ended, again and again.
    it("redis: a claimed job hash without job_id fails, named by the id it was claimed under", function()
      prefix = ("h%d_%d"):format(os.time() % 100000, math.random(1e6))
      local store = chronis.storage.redis(srv.url, { prefix = prefix })
      local now = chronis.time.format(chronis.time.now())
      for _, id in ipairs({ "a", "bad" }) do
        store:create_job({ job_id = id, status = "scheduled", next_run_time = now, func_name = "rec",
          trigger_type = "interval", trigger_args = { seconds = 3600 } })
      end
      srv:cli("HDEL", "{" .. prefix .. "}:job:bad", "job_id")
      assert_error_naming("invalid", "invalid field 'job_id'", store.get_job, store, "bad")
      local runs, failures = {}, {}
      local sched = chronis.scheduler{ storage = store, polling_interval = 0.1, logger = function() end,
        on_failure = function(id, err) failures[#failures + 1] = id .. ": " .. err.message end }
      sched:handler("rec", function(job) runs[#runs + 1] = job.job_id end)
      sched:start()
      assert.is_true(chronis.run_until(function() return #runs >= 1 and #failures >= 1 end, 10))
      sched:stop(5)
      assert.are.same({ "a" }, runs)
      assert.are.equal(1, #failures)
      assert(failures[1]:find("^bad: job 'bad' cannot run as stored: invalid field 'job_id'"), failures[1])
      store:close()
    end)
  end)

  describe("in PostgreSQL", function()
    local server
    setup(function() server = require("support.postgres").start() end)
    teardown(function() if server then server:stop() end end)
    local tbl
    corrupted_suite("postgres", "stored cron expression is out of range", function()
      tbl = ("h%d_%d"):format(os.time() % 100000, math.random(1e6))
      return chronis.storage.open(server:url("table=" .. tbl .. "&connect_timeout=60"))
    end, function(_, id)
      server:psql(("UPDATE %s SET trigger_type = 'cron', record = jsonb_set(record, '{trigger_args}', "
        .. "'{\"cron\": \"61 * * * *\"}') WHERE job_id = '%s'"):format(tbl, id))
    end, "cron")
    -- jsonb that is no object was read as an empty record: the job ran
    -- without its func_name, and failed as "no handler named ''".
    for _, v in ipairs({ "[1, 2]", "null", "\"text\"" }) do
      corrupted_suite("postgres", "record column is " .. v, function()
        tbl = ("h%d_%d"):format(os.time() % 100000, math.random(1e6))
        return chronis.storage.open(server:url("table=" .. tbl .. "&connect_timeout=60"))
      end, function(_, id)
        server:psql(("UPDATE %s SET record = '%s' WHERE job_id = '%s'"):format(tbl, v, id))
      end, "not a JSON object")
    end

    -- The server refused it as an index row too large: 'unavailable', and
    -- no word of job_id.
    it("postgres: a job_id over 2048 bytes is refused naming it; 2048 bytes round-trip", function()
      tbl = ("h%d_%d"):format(os.time() % 100000, math.random(1e6))
      local store = chronis.storage.open(server:url("table=" .. tbl .. "&connect_timeout=60"))
      local long = string.rep("é", 1024)
      assert.are.equal(long, store:create_job({ job_id = long, status = "scheduled" }).job_id)
      for _, id in ipairs({ long .. "x", string.rep("q'\"\\", 1 << 18) }) do
        assert_error_naming("invalid", "'job_id'", store.create_job, store, { job_id = id, status = "scheduled" })
      end
      assert.are.equal(long, store:get_job(long).job_id)
      assert.are.equal(1, store:count_jobs())
      store:close()
    end)
  end)
end)

describe("1 MB strings", function()
  local new_file_store = assert(loadfile("adapters/file.lua", "t"))()
  for name, open in pairs({
    memory = function() return chronis.storage.memory() end,
    sqlite = function() return chronis.storage.open("sqlite:" .. new_path("big.db")) end,
    file = function() return chronis.storage.lua(new_file_store({ path = new_path("big.json") }), { name = "file" }) end,
  }) do
    it(name .. ": round-trip in every string field, key and id, and are found by filter", function()
      local store = open()
      local big = string.rep("q'\"\\ é", (1 << 20) // 7)
      store:create_job({ job_id = big, status = "scheduled", name = big, func_name = big,
        kwargs = { [big] = big }, metadata = { t = big }, args = { big } })
      store:create_job({ job_id = "small", status = "scheduled", kwargs = { a = 1 } })
      local got = store:get_job(big)
      assert(got.job_id == big and got.name == big and got.func_name == big and got.kwargs[big] == big
        and got.metadata.t == big and got.args[1] == big, "a 1 MB string did not round-trip")
      assert.are.equal(1, #store:query_jobs({ ["metadata.t"] = big }))
      assert.are.same({ a = 1 }, store:get_job("small").kwargs)
      store:close()
    end)
  end
end)
