-- The PostgreSQL store against a real server started for this file
-- (spec/support/postgres.lua): the shared contract suite (also under two
-- session time zones), URL options, injection attempts, migrations, wake-up
-- hints, failures (refused, restarted, unresponsive server) and several
-- scheduler processes sharing one table.
local chronis = require "chronis"
local PG = require "support.postgres"
local U = require "support.util"

local server, start_err
do
  local ok, s = pcall(PG.start)
  if ok then server = s else start_err = s end
end

local function need()
  if not server then error("no PostgreSQL test server: " .. tostring(start_err), 2) end
  return server
end

local counter = 0
local function fresh_table()
  counter = counter + 1
  return ("t%d_%d"):format(os.time() % 100000, counter)
end

-- A URL on a table of its own.
local function url(params, tbl)
  local p = "table=" .. (tbl or fresh_table())
  if params and params ~= "" then p = p .. "&" .. params end
  return need():url(p)
end

local function psql(sql) return need():psql(sql) end

local function tmpname(tag)
  return need().dir .. "/" .. tag .. "_" .. counter .. "_" .. math.random(1, 1e9)
end

local assert_error_code = U.assert_error

-- A closing connection may need a turn of the loop or two.
local function assert_loop_clean() U.assert_loop_clean(1) end

-- `chronis migrate --storage URL [--status]`, the host's command.
local function migrate(u, status)
  local out = os.tmpname()
  local ok = U.sh(("%s migrate --storage %s %s >%s 2>&1"):format(U.sh_quote(U.BIN), U.sh_quote(u),
    status and "--status" or "", out))
  local text = U.read(out)
  os.remove(out)
  return ok, text
end

describe("postgres store", function()
  teardown(function()
    if server then server:stop() end
  end)

  it("has a PostgreSQL server to run against", function()
    assert(server, "the PostgreSQL test server did not start: " .. tostring(start_err))
  end)

  require("support.storage_contract")("postgres", function()
    return chronis.storage.open(url())
  end)

  do
    local urls = setmetatable({}, { __mode = "k" })
    require("support.engine_contract")("postgres", function()
      local u = url()
      local store = chronis.storage.open(u)
      urls[store] = u
      return store
    end, {
      reopen = function(store) return chronis.storage.open(urls[store]) end,
      hints_across_handles = true,
    })
  end

  -- Times are TIMESTAMPTZ, written as UTC text and read as binary: the
  -- session's TimeZone must change nothing.
  require("support.storage_contract")("postgres with TimeZone America/New_York (options)", function()
    return chronis.storage.open(url("options=-c%20timezone%3DAmerica/New_York"))
  end)
  require("support.storage_contract")("postgres with timezone=Asia/Seoul", function()
    return chronis.storage.postgres(url(), { timezone = "Asia/Seoul" })
  end)
  -- Filters on indexed paths are translated otherwise (indexed_cond).
  require("support.storage_contract")("postgres with index_metadata", function()
    return chronis.storage.open(url("index_metadata=t,n,tenant,region.zone,flag,k"))
  end)

  -- Queues: the due index by queue, the room function's advisory locks
  -- and fresh counts, the rate table (pg_sql.c, migration 7). Two
  -- connections per handle, so one handle's claims race too.
  require("support.queue_claims")("postgres", function()
    local t = fresh_table()
    return function() return chronis.storage.open(url("pool=2", t)) end
  end)
  require("support.queue_claims")("postgres with index_metadata", function()
    local t = fresh_table()
    return function() return chronis.storage.open(url("pool=2&index_metadata=tenant_id", t)) end
  end)

  describe("queue rate windows", function()
    after_each(assert_loop_clean)

    it("are counted per queue and window, and forgotten a minute after they end", function()
      local t = fresh_table()
      local s = chronis.storage.open(url(nil, t))
      local T = 1893456000 * 1000000
      for i = 1, 10 do
        s:create_job({ job_id = "r" .. i, status = "scheduled", queue = "r",
          next_run_time = chronis.time.format(T - 1000000) })
      end
      local function claim(at)
        return #s:claim_due_jobs({ owner = "o", now = chronis.time.format(T + at * 1000000),
          queues = { { name = "r", limit = 5, rate_limit = 2, rate_period = 60 } } })
      end
      local function windows()
        return psql(("SELECT string_agg(extract(epoch FROM window_start)::bigint - 1893456000 || ':' || used, ','"
          .. " ORDER BY window_start) FROM %s_queue_rates WHERE queue = 'r'"):format(t))
      end
      assert.are.equal(2, claim(1))
      assert.are.equal(0, claim(59))
      assert.are.equal("0:2", windows())
      assert.are.equal(2, claim(61))
      assert.are.equal(2, claim(130))
      assert.are.equal("0:2,60:2,120:2", windows())
      -- The window of T ended at T + 60 s, a minute or more before the
      -- window of T + 180 s began: gone.
      assert.are.equal(2, claim(181))
      assert.are.equal("60:2,120:2,180:2", windows())
      s:close()
    end)
  end)

  describe("URL", function()
    after_each(assert_loop_clean)

    it("opens through chronis.storage.postgres, postgres:// and postgresql://", function()
      local t = fresh_table()
      local a = chronis.storage.postgres(need():url(), { table = t, pool = 2 })
      assert.are.equal("postgres", a:kind())
      a:create_job({ job_id = "x", status = "scheduled", next_run_time = "2025-01-15T10:00:00Z" })
      local b = chronis.storage.open(need():url("table=" .. t):gsub("^postgres:", "postgresql:"))
      assert.are.equal("x", b:get_job("x").job_id)
      local c = chronis.storage.postgres(need():url("table=" .. t):gsub("^postgres:", "postgresql:"))
      assert.are.equal("x", c:get_job("x").job_id)
      local d = chronis.storage.postgres(nil, { host = "127.0.0.1", port = need().port, user = "postgres",
        dbname = need().db, table = t })
      assert.are.equal("x", d:get_job("x").job_id)
      for _, s in ipairs({ a, b, c, d }) do s:close() end
    end)

    it("looks host names up on the loop and reports one that does not resolve", function()
      local s = chronis.storage.open(("postgres://postgres@localhost:%d/%s?table=%s"):format(need().port,
        need().db, fresh_table()))
      assert.are.equal(0, s:count_jobs())
      s:close()
      local bad = chronis.storage.open("postgres://postgres@no-such-host.invalid:5432/x")
      local err = assert_error_code("unavailable", bad.get_job, bad, "x")
      assert.truthy(err.message:find("no-such-host.invalid", 1, true), err.message)
      bad:close()
    end)

    it("refuses bad options at open with 'invalid', naming the option", function()
      local cases = {
        { "pool=0", "pool" }, { "pool=two", "pool" }, { "auto_migrate=maybe", "auto_migrate" },
        { "tabel=x", "tabel" }, { "timeout=-1", "timeout" }, { "notify=sometimes", "notify" },
        { "history=-1", "option 'history' must be an integer 0..100000" },
        { "history=many", "'history'" }, { "history_days=0", "option 'history_days'" },
      }
      for _, c in ipairs(cases) do
        local err = assert_error_code("invalid", chronis.storage.open, need():url(c[1]))
        assert.truthy(err.message:find(c[2], 1, true), err.message)
      end
      local err = assert_error_code("invalid", chronis.storage.open, need():url("histroy=3"))
      assert.truthy(err.message:find("did you mean 'history'?", 1, true), err.message)
      err = assert_error_code("invalid", chronis.storage.open, "postgres:nonsense")
      assert.truthy(err.message:find("postgres://", 1, true), err.message)
    end)

    it("refuses an option given twice, naming it, instead of using the last", function()
      for _, c in ipairs({
        { "postgres://u:s3cret@127.0.0.1:1/db?table=t1&table=t2", "table" },
        { "postgres://u@127.0.0.1:1/db?table=t1&schema=a&pool=2&schema=b", "schema" },
        { "postgres://u@127.0.0.1:1/db?sslmode=disable&sslmode=require", "sslmode" },
        { "postgres://u@127.0.0.1:1/db?timeout=1&timeout=1", "timeout" },
        { "postgres:?host=127.0.0.1&port=1&host=127.0.0.2", "host" },
      }) do
        local err = assert_error_code("invalid", chronis.storage.open, c[1])
        assert.truthy(err.message:find("option '" .. c[2] .. "' is given more than once", 1, true),
          err.message)
        assert.is_nil(err.message:find("s3cret", 1, true), err.message)
      end
      -- chronis.storage.postgres(url, opts) puts opts in the URL: the same clash.
      local err = assert_error_code("invalid", chronis.storage.postgres,
        "postgres://u@127.0.0.1:1/db?table=t1", { table = "t2" })
      assert.truthy(err.message:find("option 'table' is given more than once", 1, true), err.message)
    end)

    -- A value with &, =, %, #, ?, spaces or unicode reaches the server as it
    -- was given: from an option table as is, from a URL %-encoded. The role
    -- below must give its password (the others stay trusted), so a password
    -- that arrived cut or changed is refused.
    it("connects with a password holding & = % # ? @ : / spaces and unicode, from options and a %-encoded URL", function()
      local role, pw = "chronis_pw", "p&w=d%25 #?é&x=1@h:2/"
      psql(("DROP ROLE IF EXISTS %s; CREATE ROLE %s LOGIN SUPERUSER PASSWORD '%s'"):format(role, role, pw))
      local hba = need().data .. "/pg_hba.conf"
      local rules = U.read(hba)
      if not rules:find(role, 1, true) then
        U.write(hba, ("host all %s 127.0.0.1/32 scram-sha-256\n"):format(role) .. rules)
        psql("SELECT pg_reload_conf()")
      end
      local t = fresh_table()
      local function opts(password)
        return { host = "127.0.0.1", port = need().port, user = role, password = password,
          dbname = need().db, table = t }
      end
      local a = chronis.storage.postgres(opts(pw))
      a:create_job({ job_id = "x", status = "pending" })
      a:close()
      local enc = U.url_encode(pw)
      U.check_each_open({
        function() return chronis.storage.open(("postgres://%s:%s@127.0.0.1:%d/%s?table=%s")
          :format(role, enc, need().port, need().db, t)) end,
        function() return chronis.storage.postgres(("postgresql://%s:%s@127.0.0.1:%d/%s")
          :format(role, enc, need().port, need().db), { table = t }) end,
        function()
          local o = opts(pw)
          o.scheme = "postgres"
          return chronis.storage.open(o)
        end,
        function()
          local o = opts(pw)
          o.scheme = "postgresql"
          local sched = chronis.scheduler({ storage = o })
          return sched:store(), sched
        end,
      }, function(s) assert.are.equal("pending", s:get_job("x").status) end)
      -- The server checks it: a password cut at '&' is refused, and not shown.
      local cut = chronis.storage.postgres(opts("p"))
      local err = assert_error_code("unavailable", cut.get_job, cut, "x")
      assert.truthy(err.message:find("password authentication failed", 1, true), err.message)
      assert.is_nil(err.message:find("p&w", 1, true), err.message)
      cut:close()
    end)

    it("refuses a table name with & or = whole, naming it, and malformed %-escapes naming the part", function()
      local err = assert_error_code("invalid", chronis.storage.postgres, need():url(),
        { table = "jobs&pool=2" })
      assert.truthy(err.message:find("table 'jobs&pool=2' is not a valid identifier", 1, true), err.message)
      err = assert_error_code("invalid", chronis.storage.open, need():url("table=jobs%26pool%3D2"))
      assert.truthy(err.message:find("table 'jobs&pool=2' is not a valid identifier", 1, true), err.message)
      for _, c in ipairs({
        { "postgres://u:se%zzcret@127.0.0.1:1/db", "in the password" },
        { "postgres://u@127.0.0.1:1/d%4", "'%4' in the path" },
        { "postgres://u@127.0.0.1:1/db?application_name=a%zz", "'%zz' in option 'application_name'" },
        { "postgres://u@127.0.0.1:1/db?table=a%00", "%00 (a NUL byte) is not allowed in option 'table'" },
      }) do
        err = assert_error_code("invalid", chronis.storage.open, c[1])
        assert.truthy(err.message:find(c[2], 1, true), err.message)
        assert.is_nil(err.message:find("cret", 1, true), err.message)
      end
    end)

    it("never shows the password in errors", function()
      local err = assert_error_code("invalid", chronis.storage.open,
        "postgres://u:s3cret@127.0.0.1:1/db?pool=0")
      assert.is_nil(err.message:find("s3cret", 1, true), err.message)
      local s = chronis.storage.open("postgres://u:s3cret@127.0.0.1:1/db?connect_timeout=2")
      err = assert_error_code("unavailable", s.get_job, s, "x")
      assert.is_nil(err.message:find("s3cret", 1, true), err.message)
      s:close()
    end)
  end)

  describe("injection", function()
    after_each(assert_loop_clean)

    it("rejects table and schema names that are not plain identifiers", function()
      local bad = { "jobs; DROP TABLE x", 'a"b', "1abc", "a-b", "", ("x"):rep(64), "jobs%00x",
        "tab le", "é" }
      for _, name in ipairs(bad) do
        for _, key in ipairs({ "table", "schema" }) do
          local enc = U.url_encode(name, "_%%")
          local err = assert_error_code("invalid", chronis.storage.open, need():url(key .. "=" .. enc))
          assert.truthy(err.message:find(key, 1, true), err.message)
          if not name:find("%", 1, true) then
            assert.truthy(err.message:find("identifier", 1, true), err.message)
          end
        end
      end
      local err = assert_error_code("invalid", chronis.storage.postgres, need():url(),
        { table = "jobs; DROP TABLE x" })
      assert.truthy(err.message:find("jobs; DROP TABLE x", 1, true), err.message)
      -- Allowed: the longest name, mixed case, another schema.
      local long = ("L"):rep(63)
      local s = chronis.storage.open(need():url("table=" .. long .. "&schema=Other_Schema"))
      s:create_job({ job_id = "a", status = "scheduled" })
      assert.are.equal("a", s:get_job("a").job_id)
      -- Its runs table's name would pass 63 characters: shortened, with a hash.
      local now = chronis.time.format(chronis.time.now())
      assert.are.equal(1, s:record_runs({ { run_id = "r1", job_id = "a", outcome = "ok", started_at = now } }))
      assert.are.equal("r1", s:query_runs({ job_id = "a" })[1].run_id)
      s:close()
      assert.are.equal("1", psql(('SELECT count(*) FROM "Other_Schema"."%s"'):format(long)))
      local runs = psql("SELECT tablename FROM pg_tables WHERE schemaname = 'Other_Schema' AND tablename LIKE '%_runs'")
      assert.are.equal(63, #runs, runs)
      assert.truthy(runs:match("^L+_%x%x%x%x%x%x%x%x_runs$"), runs)
    end)

    it("treats quotes, backslashes and SQL in ids, keys and values as data", function()
      local t = fresh_table()
      local s = chronis.storage.open(url(nil, t))
      local evil = { "'); DROP TABLE " .. t .. "; --", "a'b", 'a"b', "a\\b", "$1", "%s", "\\x00",
        "{a,b}", "a,b", "' OR '1'='1" }
      for i, v in ipairs(evil) do
        s:create_job({ job_id = v, status = "scheduled", next_run_time = "2025-01-15T10:00:00Z",
          metadata = { [v] = v, tenant = v, nested = { [v] = i } } })
      end
      assert.are.equal(#evil, s:count_jobs())
      for i, v in ipairs(evil) do
        assert.are.equal(v, s:get_job(v).job_id)
        local got = s:query_jobs({ ["metadata." .. v] = v })
        assert.are.equal(1, #got, v)
        assert.are.equal(v, got[1].job_id)
        assert.are.equal(1, s:count_jobs({ ["metadata.tenant"] = v }))
        assert.are.equal(1, s:count_jobs({ ["metadata.nested." .. v] = i }))
        assert.are.equal(1, #s:query_jobs({ job_id_in = { v, "nothing" } }))
        assert.is_true((s:compare_and_swap_job(v, { metadata = { [v] = v, tenant = v, nested = { [v] = i } },
          [v] = chronis.json.null }, { [v] = v })))
        assert.are.equal(v, s:get_job(v)[v])
        local batch = s:get_jobs_batch({ v })
        assert.is_table(batch[v], v)
      end
      assert.are.equal(0, s:count_jobs({ ["metadata.tenant"] = "' OR '1'='1' --" }))
      assert.is_true(s:delete_job(evil[1]))
      assert.are.equal(#evil - 1, s:count_jobs())
      s:close()
      assert.are.equal(tostring(#evil - 1), psql("SELECT count(*) FROM " .. t))
    end)
  end)

  describe("time zones", function()
    after_each(assert_loop_clean)

    it("hands the timezone option to the server (a bad zone is refused)", function()
      local s = chronis.storage.postgres(url(), { timezone = "No/Such_Zone" })
      local err = assert_error_code("unavailable", s.get_job, s, "x")
      assert.truthy(err.message:find("No/Such_Zone", 1, true) or err.message:find("time zone", 1, true),
        err.message)
      s:close()
    end)

    it("stores instants exactly, to the microsecond, whatever the session zone", function()
      local t = fresh_table()
      local times = { "1970-01-01T00:00:00Z", "1969-12-31T23:59:59.999999Z", "2025-03-09T07:00:00.000001Z",
        "2025-11-02T05:59:59.999999Z", "2038-01-19T03:14:08.123456Z", "2999-12-31T23:59:59.999999Z",
        "1900-01-01T00:00:00.500000Z" }
      local stores = {
        chronis.storage.open(url(nil, t)),
        chronis.storage.postgres(url(nil, t), { timezone = "America/New_York" }),
        chronis.storage.postgres(url(nil, t), { timezone = "Asia/Seoul" }),
        chronis.storage.postgres(url(nil, t), { timezone = "Pacific/Chatham" }),
      }
      for i, v in ipairs(times) do
        local w = stores[(i % #stores) + 1]
        w:create_job({ job_id = "j" .. i, status = "scheduled", next_run_time = v, created_at = v,
          lease_until = v })
      end
      for _, s in ipairs(stores) do
        for i, v in ipairs(times) do
          local j = s:get_job("j" .. i)
          assert.are.equal(v, j.next_run_time)
          assert.are.equal(v, j.lease_until)
          assert.are.equal(v, j.created_at)
          assert.are.same({ "j" .. i }, (function()
            local out = {}
            for k, x in ipairs(s:query_jobs({ next_run_time_gte = v, next_run_time_lte = v })) do out[k] = x.job_id end
            return out
          end)())
        end
      end
      -- The server agrees on the instant (not just on a round trip).
      assert.are.equal("2025-03-09 07:00:00.000001",
        psql("SET TimeZone = 'Asia/Seoul'; SELECT next_run_time AT TIME ZONE 'UTC' FROM " .. t ..
          " WHERE job_id = 'j3'"):match("[%d%-]+ [%d:%.]+$"))
      for _, s in ipairs(stores) do s:close() end
    end)
  end)

  -- jsonb keeps numbers as numeric and prints them in plain decimal: 1e100
  -- as 1 and 100 zeros, 2^63 in full. They must read back with their value.
  describe("numbers", function()
    after_each(assert_loop_clean)

    it("hands a handler large numbers in kwargs and metadata as they were created", function()
      local store = chronis.storage.open(url())
      local sched = chronis.scheduler{ storage = store, polling_interval = 0.1 }
      local got
      sched:handler("pay", function(job) got = job end)
      local kwargs = { amount = 1e100, more = 1e200, most = 1e308, edge = 2.0 ^ 63, tiny = 5e-324 }
      sched:create_date_job{ job_id = "pay", func_name = "pay", kwargs = kwargs,
        metadata = { amount = -1e308 }, run_date = chronis.time.format(chronis.time.now()) }
      sched:start()
      chronis.run_until(function() return got ~= nil end, 10)
      sched:stop()
      sched:close()
      store:close()
      assert.is_table(got, "the job did not run")
      assert.are.same(kwargs, got.kwargs)
      assert.are.equal("float", math.type(got.kwargs.edge))
      assert.are.same({ amount = -1e308 }, got.metadata)
    end)

    it("reads numbers written into a record by hand, in any form and of any length", function()
      local t = fresh_table()
      local s = chronis.storage.open(url(nil, t))
      s:create_job({ job_id = "a", status = "scheduled", kwargs = { x = 0 } })
      psql(("UPDATE %s SET record = jsonb_set(record, '{kwargs}', " ..
        "'{\"big\": 123456789012345678901234567890, \"e\": 1.5E+300, \"frac\": 0.000000000000000000000000000001, " ..
        "\"i\": 9223372036854775807, \"j\": -18446744073709551617, \"k\": 1.0}') WHERE job_id = 'a'"):format(t))
      local kw = s:get_job("a").kwargs
      assert.are.equal(1.2345678901234568e29, kw.big)
      assert.are.equal(1.5e300, kw.e)
      assert.are.equal(1e-30, kw.frac)
      assert.are.equal(math.maxinteger, kw.i)
      assert.are.equal("integer", math.type(kw.i))
      assert.are.equal(-(2.0 ^ 64), kw.j)
      assert.are.equal("float", math.type(kw.j))
      assert.are.equal(1, kw.k)
      s:close()
    end)

    it("reads fields and trigger_args written by hand as the canonical form would give them", function()
      local t = fresh_table()
      local s = chronis.storage.open(url(nil, t))
      s:create_job({ job_id = "a", status = "scheduled", trigger_type = "interval", func_name = "f",
        trigger_args = { seconds = 5 } })
      s:create_job({ job_id = "b", status = "scheduled", trigger_type = "interval", func_name = "f",
        trigger_args = { seconds = 5 } })
      -- An integer field written as 3.0 is 3 in the canonical form, the
      -- field's value, not a member the decoder keeps aside.
      psql(("UPDATE %s SET record = record || '{\"max_retries\": 3.0, \"trigger_args\": " ..
        "{\"zz\": [1.50, {\"y\": 2.0, \"x\": 1}], \"seconds\": 10.0, \"a\": \"\\u00e9\"}}' " ..
        "WHERE job_id = 'a'"):format(t))
      psql(("UPDATE %s SET record = record || '{\"name\": \"tab\\there\", \"retry_count\": 2}' " ..
        "WHERE job_id = 'b'"):format(t))
      local a, b = s:get_job("a"), s:get_job("b")
      assert.are.equal(3, a.max_retries)
      assert.are.equal("integer", math.type(a.max_retries))
      assert.are.same({ zz = { 1.5, { y = 2, x = 1 } }, seconds = 10, a = "é" }, a.trigger_args)
      assert.are.equal("integer", math.type(a.trigger_args.seconds))
      assert.are.equal("tab\there", b.name)
      assert.are.equal(2, b.retry_count)
      assert.are.same({ seconds = 5 }, b.trigger_args)
      s:close()
    end)
  end)

  describe("next due time", function()
    after_each(assert_loop_clean)

    it("is the earliest next_run_time of a scheduled job, whatever its priority", function()
      local s = chronis.storage.open(url())
      local T = chronis.time.parse("2025-01-15T10:00:00Z")
      local function at(sec) return chronis.time.format(T + sec * 1000000) end
      assert.is_nil(s:next_due_time())
      s:create_job({ job_id = "p5", status = "scheduled", next_run_time = at(10) })
      s:create_job({ job_id = "p9", status = "scheduled", next_run_time = at(20), priority = 9 })
      s:create_job({ job_id = "p1", status = "scheduled", next_run_time = at(5), priority = 1 })
      s:create_job({ job_id = "none", status = "scheduled", priority = 0 })
      s:create_job({ job_id = "paused", status = "paused", next_run_time = at(1) })
      s:create_job({ job_id = "running", status = "running", next_run_time = at(0) })
      assert.are.equal(at(5), s:next_due_time())
      s:delete_job("p1")
      assert.are.equal(at(10), s:next_due_time())
      s:update_job("p9", { next_run_time = at(-3) })
      assert.are.equal(at(-3), s:next_due_time())
      s:close()
    end)
  end)

  describe("migrations", function()
    after_each(assert_loop_clean)

    local function history(t)
      return psql(("SELECT version, description, length(checksum) FROM %s_migrations ORDER BY version"):format(t))
    end

    it("creates the schema on a fresh table, then finds nothing to do", function()
      local t = fresh_table()
      local s = chronis.storage.open(url(nil, t))
      assert.is_nil(s:get_job("x"))
      s:close()
      local h = history(t)
      assert.are.equal("1|create the jobs table|16\n2|indexes for claims, lease recovery and metadata filters|16\n"
        .. "3|the run history table|16\n4|status completed, and an index of completed jobs|16\n"
        .. "5|an index of jobs by status in query order|16\n6|run outcomes snoozed and cancelled|16\n"
        .. "7|named queues: due jobs by queue, rate windows, the room of a claim|16", h)
      local before = psql(("SELECT string_agg(applied_at::text, ',') FROM %s_migrations"):format(t))
      local s2 = chronis.storage.open(url(nil, t))
      assert.is_nil(s2:get_job("x"))
      s2:close()
      local ok, out = migrate(url(nil, t))
      assert(ok, out)
      assert.truthy(out:find("up to date", 1, true), out)
      assert.are.equal(h, history(t))
      assert.are.equal(before, psql(("SELECT string_agg(applied_at::text, ',') FROM %s_migrations"):format(t)))
      local idx = psql(("SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE tablename = '%s'")
        :format(t))
      assert.are.equal(("%s_completed,%s_due,%s_lease,%s_metadata,%s_pkey,%s_queue_due,%s_status")
        :format(t, t, t, t, t, t, t), idx)
      assert.are.equal(t .. "_queue_rates_pkey",
        psql(("SELECT indexname FROM pg_indexes WHERE tablename = '%s_queue_rates'"):format(t)))
      assert.are.equal(t .. "_queue_room", psql(("SELECT proname FROM pg_proc WHERE proname = '%s_queue_room'"):format(t)))
      idx = psql(("SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE tablename = '%s_runs'")
        :format(t))
      assert.are.equal(("%s_runs_pkey,%s_runs_started"):format(t, t), idx)
    end)

    it("runs from `chronis migrate` and reports with --status", function()
      local t = fresh_table()
      local ok, out = migrate(url(nil, t), true)
      assert(ok, out)
      assert.truthy(out:find("0 of 7", 1, true), out)
      assert.truthy(out:find("pending", 1, true), out)
      ok, out = migrate(url(nil, t))
      assert(ok, out)
      assert.truthy(out:find("applied migration 1", 1, true), out)
      assert.truthy(out:find("applied migration 2", 1, true), out)
      assert.truthy(out:find("applied migration 3", 1, true), out)
      assert.truthy(out:find("applied migration 4", 1, true), out)
      assert.truthy(out:find("applied migration 5", 1, true), out)
      assert.truthy(out:find("applied migration 6", 1, true), out)
      assert.truthy(out:find("applied migration 7", 1, true), out)
      ok, out = migrate(url(nil, t), true)
      assert(ok, out)
      assert.truthy(out:find("7 of 7 migration(s) applied, up to date", 1, true), out)
      assert.is_nil(out:find("pending", 1, true), out)
      ok, out = migrate(need():url("table=bad;name"))
      assert.is_false(ok)
      assert.truthy(out:find("identifier", 1, true), out)
      ok, out = migrate("postgres://postgres@127.0.0.1:1/x")
      assert.is_false(ok)
      assert.truthy(out:find("cannot connect", 1, true), out)
    end)

    it("leaves the schema alone with auto_migrate=false and says what to run", function()
      local t = fresh_table()
      local s = chronis.storage.open(url("auto_migrate=false", t))
      local err = assert_error_code("invalid", s.get_job, s, "x")
      assert.truthy(err.message:find("chronis migrate", 1, true), err.message)
      s:close()
      assert.are.equal("", psql(("SELECT to_regclass('%s')"):format(t)))
      assert(migrate(url(nil, t)))
      s = chronis.storage.open(url("auto_migrate=false", t))
      assert.is_nil(s:get_job("x"))
      s:close()
    end)

    it("migrates once when 4 processes start at the same moment", function()
      local t = fresh_table()
      local outs, cmds = {}, {}
      for i = 1, 4 do
        outs[i] = tmpname("open" .. i)
        cmds[i] = ("lua5.4 %s/spec/support/postgres_worker.lua open '%s' '%s' &"):format(U.ROOT, url(nil, t), outs[i])
      end
      assert(U.sh(table.concat(cmds, " ") .. " wait"))
      for i = 1, 4 do assert.are.equal("ok\n", U.read(outs[i]), "process " .. i) end
      assert.are.equal("1|1\n2|1\n3|1\n4|1\n5|1\n6|1\n7|1", psql(("SELECT version, count(*) FROM %s_migrations GROUP BY version ORDER BY version")
        :format(t)))
    end)

    -- A table as an earlier version left it: migrations 1 and 2 (their
    -- text is unchanged), no runs table, the status check of migration 1,
    -- with jobs in it.
    local function version2_table(t)
      local s = chronis.storage.open(url(nil, t))
      s:create_job({ job_id = "kept", status = "scheduled", next_run_time = "2025-01-15T10:00:00Z",
        name = "Kept", metadata = { tenant = "acme" } })
      s:create_job({ job_id = "busy", status = "running", claimed_by = "n1",
        lease_until = "2025-01-15T10:05:00Z", next_run_time = "2025-01-15T10:00:00Z" })
      s:close()
      psql(("DROP INDEX %s_queue_due; DROP TABLE %s_queue_rates; DROP FUNCTION %s_queue_room; "):format(t, t, t))
      psql(("DROP TABLE %s_runs; DROP INDEX %s_completed; DROP INDEX %s_status; "
        .. "ALTER TABLE %s DROP CONSTRAINT %s_status_check; "
        .. "ALTER TABLE %s ADD CHECK (status IN ('pending', 'scheduled', 'running', 'paused', 'failed')); "
        .. "DELETE FROM %s_migrations WHERE version >= 3"):format(t, t, t, t, t, t, t))
      assert.are.equal("1\n2", psql(("SELECT version FROM %s_migrations ORDER BY version"):format(t)))
      local ok, err = pcall(psql, ("INSERT INTO %s (job_id, status, updated_at) "
        .. "VALUES ('x', 'completed', now())"):format(t))
      assert.is_false(ok)
      assert.truthy(tostring(err):find("check constraint", 1, true), tostring(err))
    end

    -- The table after migrations 3 and 4: its jobs as they were, history
    -- works, and a job may be completed.
    local function assert_migrated(t)
      assert.are.equal("1\n2\n3\n4\n5\n6\n7", psql(("SELECT version FROM %s_migrations ORDER BY version"):format(t)))
      local s = chronis.storage.open(url("auto_migrate=false", t))
      local kept = s:get_job("kept")
      assert.are.equal("Kept", kept.name)
      assert.are.same({ tenant = "acme" }, kept.metadata)
      assert.are.equal("2025-01-15T10:00:00Z", kept.next_run_time)
      assert.are.equal("n1", s:get_job("busy").claimed_by)
      assert.are.equal(2, s:count_jobs())
      local now = chronis.time.format(chronis.time.now())
      local res = s:complete_jobs({ { job_id = "busy", owner = "n1", delete = true,
        run = { run_id = "n1/1", job_id = "busy", outcome = "ok", started_at = now, ended_at = now } } })
      assert.is_true(res[1].ok)
      local runs = s:query_runs({ job_id = "busy" })
      assert.are.equal(1, #runs)
      assert.are.equal("n1/1", runs[1].run_id)
      s:update_job("kept", { status = "completed", next_run_time = chronis.json.null })
      assert.are.same({ "kept" }, (function()
        local out = {}
        for i, j in ipairs(s:query_jobs({ status = "completed" })) do out[i] = j.job_id end
        return out
      end)())
      -- Claims with queues and their limits work on the migrated table.
      s:create_job({ job_id = "queued", status = "scheduled", next_run_time = now, queue = "a" })
      local got = s:claim_due_jobs({ owner = "n2", queues = { { name = "a", limit = 5, global_limit = 1,
        rate_limit = 1, rate_period = 60 } } })
      assert.are.equal(1, #got)
      assert.are.equal("queued", got[1].job_id)
      s:close()
    end

    it("migrates a table of the previous version with `chronis migrate`, keeping its jobs", function()
      local t = fresh_table()
      version2_table(t)
      -- Until then a store that may not migrate names what is missing.
      local s = chronis.storage.open(url("auto_migrate=false", t))
      local err = assert_error_code("invalid", s.get_job, s, "kept")
      assert.truthy(err.message:find("needs migration 3 (the run history table)", 1, true), err.message)
      s:close()
      local ok, out = migrate(url(nil, t), true)
      assert(ok, out)
      assert.truthy(out:find("2 of 7 migration(s) applied", 1, true), out)
      assert.truthy(out:find("3%s+pending%s+%x+%s+the run history table"), out)
      ok, out = migrate(url(nil, t))
      assert(ok, out)
      assert.truthy(out:find("applied migration 3 to public." .. t .. ": the run history table", 1, true), out)
      assert.truthy(out:find("applied migration 4 to public." .. t .. ": status completed", 1, true), out)
      assert.truthy(out:find("applied migration 5 to public." .. t .. ": an index of jobs by status", 1, true), out)
      assert.truthy(out:find("applied migration 6 to public." .. t .. ": run outcomes snoozed", 1, true), out)
      assert.truthy(out:find("applied migration 7 to public." .. t .. ": named queues", 1, true), out)
      assert.is_nil(out:find("applied migration 1", 1, true), out)
      assert_migrated(t)
    end)

    it("migrates a table of the previous version when a store opens it, keeping its jobs", function()
      local t = fresh_table()
      version2_table(t)
      local s = chronis.storage.open(url(nil, t))
      assert.are.equal("Kept", s:get_job("kept").name)
      s:close()
      assert_migrated(t)
    end)

    it("refuses a table whose applied migration has another checksum", function()
      local t = fresh_table()
      local s = chronis.storage.open(url(nil, t))
      s:get_job("x")
      s:close()
      psql(("UPDATE %s_migrations SET checksum = 'deadbeefdeadbeef' WHERE version = 1"):format(t))
      s = chronis.storage.open(url(nil, t))
      local err = assert_error_code("invalid", s.get_job, s, "x")
      assert.truthy(err.message:find("checksum", 1, true), err.message)
      assert.truthy(err.message:find("deadbeefdeadbeef", 1, true), err.message)
      -- Every request is refused while it stays so, and the store lives on.
      assert_error_code("invalid", s.count_jobs, s)
      s:close()
      local ok, out = migrate(url(nil, t))
      assert.is_false(ok)
      assert.truthy(out:find("checksum", 1, true), out)
    end)
  end)

  -- index_metadata: one expression index per path, named literally by the
  -- queries, scoped claims and lease recovery; the status index of
  -- migration 5. The planner's choices are read from auto_explain, loaded
  -- into the store's own sessions, so the plans are those of the SQL the
  -- store sends.
  describe("index_metadata", function()
    after_each(assert_loop_clean)

    local null = chronis.json.null
    local EXPLAIN = "options=-c%20session_preload_libraries%3Dauto_explain"
      .. "%20-c%20auto_explain.log_min_duration%3D0"
    local S = 1000000

    local function idx_names(t)
      return psql(("SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes "
        .. "WHERE tablename = '%s' AND position('_meta_' in indexname) > 0"):format(t))
    end

    -- n tenants x per jobs written straight into table t (a store opened
    -- it before): the first `ndue` of each tenant due (6 unless given),
    -- the others in the future, as in a store shared by many tenants;
    -- every 10th failed, every 15th completed, the 3rd at priority 8;
    -- then ANALYZE unless `stale` (autovacuum is then off for the table:
    -- the planner keeps the statistics of before the load).
    -- Tenant k's jobs are t<k>_<i>.
    -- The same base time for every table filled in one test.
    local base = chronis.time.format(chronis.time.now())
    local function fill(t, tenants, per, ndue, stale)
      psql(([[
INSERT INTO %s (job_id, status, next_run_time, priority, updated_at, record)
SELECT 't' || k || '_' || i,
  CASE WHEN i %% 10 = 0 THEN 'failed' WHEN i %% 15 = 0 THEN 'completed' ELSE 'scheduled' END,
  CASE WHEN i %% 15 = 0 THEN NULL WHEN i <= %d THEN '%s'::timestamptz - (k * 1000 + i) * interval '1 second'
    ELSE '%s'::timestamptz + (k * 1000 + i) * interval '1 minute' END,
  CASE WHEN i = 3 THEN 8 END, now(),
  jsonb_build_object('func_name', 'f', 'metadata',
    jsonb_build_object('tenant_id', 't' || k, 'region', jsonb_build_object('zone', CASE WHEN k %% 2 = 0 THEN 'eu' ELSE 'us' END),
      'n', i %% 3))
FROM generate_series(1, %d) k, generate_series(1, %d) i;
%s %s]]):format(t, ndue or 6, base, base, tenants, per,
        stale and "ALTER TABLE" or "ANALYZE", t .. (stale and " SET (autovacuum_enabled = false)" or "")))
    end

    -- The plans auto_explain logged for statements on table t whose text
    -- holds every string of `marks`.
    local function plans(t, marks)
      local log = U.read(need().dir .. "/server.log")
      local out, cur = {}, nil
      for line in log:gmatch("[^\n]*") do
        if line:find("LOG:  duration:", 1, true) then
          if cur then out[#out + 1] = table.concat(cur, "\n") end
          cur = {}
        elseif cur and line:sub(1, 1) == "\t" then
          cur[#cur + 1] = line
        elseif cur then
          out[#out + 1] = table.concat(cur, "\n")
          cur = nil
        end
      end
      if cur then out[#out + 1] = table.concat(cur, "\n") end
      local found = {}
      for _, p in ipairs(out) do
        local text = p:match("Query Text: ([^\n]*)") or ""
        local all = text:find('"' .. t .. '"', 1, true) ~= nil
        for _, m in ipairs(marks) do all = all and text:find(m, 1, true) ~= nil end
        if all then found[#found + 1] = p end
      end
      return found
    end

    local function assert_uses(t, marks, index)
      local found = plans(t, marks)
      assert.is_true(#found > 0, "no plan logged for " .. table.concat(marks, " + "))
      local p = found[#found]
      assert.truthy(p:find("Index Scan using " .. index .. " ", 1, true) or
        p:find("Index Only Scan using " .. index .. " ", 1, true) or
        p:find("Bitmap Index Scan on " .. index .. "\n", 1, true) or
        p:find("Bitmap Index Scan on " .. index .. " ", 1, true), p)
      return p
    end

    local function ids(jobs)
      local out = {}
      for i, j in ipairs(jobs) do out[i] = j.job_id end
      return out
    end

    it("refuses a malformed path with 'invalid', naming the option and the path", function()
      for _, c in ipairs({ { "a..b", "'a..b'" }, { "tenant%20id", "'tenant id'" }, { "x,x", "'x' is named twice" },
          { "a.", "'a.'" }, { "t%27x", "'t'x'" } }) do
        local err = assert_error_code("invalid", chronis.storage.open, need():url("index_metadata=" .. c[1]))
        assert.truthy(err.message:find("index_metadata", 1, true), err.message)
        assert.truthy(err.message:find(c[2], 1, true), err.message)
      end
      local err = assert_error_code("invalid", chronis.storage.postgres, need():url(), { index_metadata = "a,,b" })
      assert.truthy(err.message:find("index_metadata", 1, true), err.message)
      err = assert_error_code("invalid", chronis.storage.open, need():url("index_metdata=tenant_id"))
      assert.truthy(err.message:find("did you mean 'index_metadata'?", 1, true), err.message)
    end)

    it("creates one index per path on open, named after the path, and ANALYZEs", function()
      local t = fresh_table()
      local s = chronis.storage.postgres(url(nil, t), { index_metadata = "tenant_id,region.zone,x-y.Z_9" })
      assert.are.equal(0, s:count_jobs())
      s:close()
      assert.are.equal(("%s_meta_region.zone,%s_meta_tenant_id,%s_meta_x-y.Z_9"):format(t, t, t), idx_names(t))
      local def = psql(("SELECT indexdef FROM pg_indexes WHERE indexname = '%s_meta_tenant_id'"):format(t))
      assert.truthy(def:find("((record -> 'metadata'::text) -> 'tenant_id'::text)), status, next_run_time, job_id)",
        1, true), def)
      assert.are_not.equal("", psql(("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = '%s'"):format(t)))
      -- A long path gets a name that fits, with a hash; opening again adds nothing.
      local long = ("k"):rep(40) .. ".v"
      s = chronis.storage.open(url("index_metadata=" .. long .. ",tenant_id", t))
      assert.are.equal(0, s:count_jobs())
      s:close()
      local names = idx_names(t)
      assert.are.equal(4, select(2, names:gsub("[^,]+", "")), names)
      assert.truthy(names:find(t .. "_meta_" .. ("k"):rep(23) .. "_%x%x%x%x%x%x%x%x"), names)
    end)

    it("are listed and created by `chronis migrate`; auto_migrate=false creates none", function()
      local t = fresh_table()
      local ok, out = migrate(url(nil, t))
      assert(ok, out)
      local s = chronis.storage.open(url("auto_migrate=false&index_metadata=tenant_id", t))
      assert.are.equal(0, s:count_jobs())
      s:close()
      assert.are.equal("", idx_names(t))
      ok, out = migrate(url("index_metadata=tenant_id", t), true)
      assert(ok, out)
      assert.truthy(out:find("index " .. t .. "_meta_tenant_id on metadata.tenant_id: missing", 1, true), out)
      ok, out = migrate(url("index_metadata=tenant_id", t))
      assert(ok, out)
      assert.truthy(out:find("created index " .. t .. "_meta_tenant_id on metadata.tenant_id of public." .. t, 1, true), out)
      ok, out = migrate(url("index_metadata=tenant_id", t), true)
      assert(ok, out)
      assert.truthy(out:find("index " .. t .. "_meta_tenant_id on metadata.tenant_id: present", 1, true), out)
      assert.are.equal(t .. "_meta_tenant_id", idx_names(t))
    end)

    it("are used by a tenant query, a tenant-scoped claim and recovery; status queries use the status index", function()
      local t = fresh_table()
      local s = chronis.storage.open(url("index_metadata=tenant_id&" .. EXPLAIN, t))
      assert.are.equal(0, s:count_jobs())
      fill(t, 100, 30)
      local jobs = s:query_jobs({ ["metadata.tenant_id"] = "t7" })
      assert.are.equal(30, #jobs)
      assert_uses(t, { "SELECT t.job_id", "-> 'tenant_id') = $" }, t .. "_meta_tenant_id")
      assert.are.equal(6, #s:query_jobs({ ["metadata.tenant_id"] = { ["$in"] = { "t8", "t9" } }, status = "failed" }))
      local page = s:query_jobs({ ["metadata.tenant_id"] = "t9", status = "scheduled" }, 10)
      assert.are.same({ "t9_6", "t9_5", "t9_4", "t9_3", "t9_2", "t9_1", "t9_7", "t9_8", "t9_9", "t9_11" }, ids(page))
      local p = assert_uses(t, { "SELECT t.job_id", "'tenant_id'), t.status) >= ROW($1::jsonb, $2::text)" },
        t .. "_meta_tenant_id")
      assert.is_nil(p:find("Sort Key", 1, true), p) -- read in query order, stopped at the limit
      assert_uses(t, { "SELECT t.job_id", "-> 'tenant_id') = ANY($" }, t .. "_meta_tenant_id")
      local failed = s:query_jobs({ status = "failed" }, 10)
      assert.are.equal(10, #failed)
      for _, j in ipairs(failed) do assert.are.equal("failed", j.status) end
      p = assert_uses(t, { "SELECT t.job_id", "t.status = $1 ORDER BY" }, t .. "_status")
      assert.is_nil(p:find("Sort Key", 1, true), p) -- read in query order, stopped at the limit
      assert.are.equal(10, #s:query_jobs({ status = "completed" }, 10))
      local claimed = s:claim_due_jobs({ owner = "n1", limit = 5, lease_seconds = 30,
        filters = { ["metadata.tenant_id"] = "t42" } })
      assert.are.equal(5, #claimed)
      for _, j in ipairs(claimed) do
        assert.are.equal("t42", j.metadata.tenant_id)
        assert.are.equal("running", j.status)
      end
      -- Priority 8 first (i = 3), then the earliest due (i = 1..6 are due).
      assert.are.same({ "t42_3", "t42_6", "t42_5", "t42_4", "t42_2" }, ids(claimed))
      assert_uses(t, { "FOR UPDATE SKIP LOCKED", "-> 'tenant_id') = $6" }, t .. "_meta_tenant_id")
      assert.are.equal(5, s:recover_expired_leases(chronis.time.format(chronis.time.now() + 3600 * S),
        { ["metadata.tenant_id"] = "t42" }))
      assert.truthy(s:next_due_time({ ["metadata.tenant_id"] = "t42" }))
      s:close()
    end)

    -- Jobs written after the last ANALYZE (the one at open, on an empty
    -- table): without statistics, a tenant's page of scheduled jobs is still read
    -- from the index in query order, and a scoped claim with nothing due
    -- is a probe of the index.
    it("serve a tenant page and a scoped claim in order on a table loaded after its last ANALYZE", function()
      local t = fresh_table()
      local s = chronis.storage.open(url("index_metadata=tenant_id&" .. EXPLAIN, t))
      assert.are.equal(0, s:count_jobs())
      fill(t, 200, 200, 0, true)
      assert.are.equal("0", psql(("SELECT count(*) FROM pg_stats WHERE tablename = '%s'"):format(t)))
      local page = s:query_jobs({ ["metadata.tenant_id"] = "t9", status = "scheduled" }, 10)
      assert.are.same({ "t9_1", "t9_2", "t9_3", "t9_4", "t9_5", "t9_6", "t9_7", "t9_8", "t9_9", "t9_11" }, ids(page))
      local p = assert_uses(t, { "SELECT t.job_id", "'tenant_id'), t.status) >= ROW($1::jsonb, $2::text)" },
        t .. "_meta_tenant_id")
      assert.is_nil(p:find("Sort Key", 1, true), p)
      assert.is_nil(p:find("Bitmap", 1, true), p)
      local failed = s:query_jobs({ ["metadata.tenant_id"] = "t9", status = "failed" }, 5)
      assert.are.same({ "t9_10", "t9_20", "t9_40", "t9_50", "t9_70" }, ids(failed))
      assert.are.same({}, s:claim_due_jobs({ owner = "n1", limit = 5, lease_seconds = 30,
        filters = { ["metadata.tenant_id"] = "t42" } }))
      p = assert_uses(t, { "FOR UPDATE SKIP LOCKED", "-> 'tenant_id') = $6" }, t .. "_meta_tenant_id")
      assert.is_nil(p:find("Bitmap", 1, true), p)
      assert.is_nil(p:find("Seq Scan", 1, true), p)
      s:close()
    end)

    it("give the same answers with and without the index", function()
      local a, b = fresh_table(), fresh_table()
      local indexed = chronis.storage.open(url("index_metadata=tenant_id,region.zone,n", a))
      local plain_a = chronis.storage.open(url(nil, a))
      local plain_b = chronis.storage.open(url(nil, b))
      assert.are.equal(0, indexed:count_jobs() + plain_a:count_jobs() + plain_b:count_jobs())
      fill(a, 20, 30)
      fill(b, 20, 30)
      indexed:update_job("t3_1", { metadata = { tenant_id = null } })
      plain_b:update_job("t3_1", { metadata = { tenant_id = null } })
      indexed:update_job("t3_2", { metadata = { tenant_id = { "t3" } } })
      plain_b:update_job("t3_2", { metadata = { tenant_id = { "t3" } } })
      indexed:update_job("t3_3", { metadata = { tenant_id = 3 } })
      plain_b:update_job("t3_3", { metadata = { tenant_id = 3 } })
      local cases = {
        { ["metadata.tenant_id"] = "t3" },
        { ["metadata.tenant_id"] = 3 },
        { ["metadata.tenant_id"] = { "t3" } },
        { ["metadata.tenant_id"] = { ["$in"] = { "t3", "t5", 3 } } },
        { ["metadata.tenant_id"] = { ["$in"] = { "t4", { "t3" } } } },
        { ["metadata.tenant_id"] = { ["$in"] = {} } },
        { ["metadata.tenant_id"] = null },
        { ["metadata.tenant_id"] = { ["$ne"] = "t3" }, status = "failed" },
        { ["metadata.tenant_id"] = "t1", status = "scheduled" },
        -- pages of scheduled jobs bounded by row comparisons (ordered_cond)
        { ["metadata.tenant_id"] = 3, status = "scheduled" },
        { ["metadata.tenant_id"] = { "t3" }, status = "scheduled" },
        { ["metadata.tenant_id"] = null, status = "scheduled" },
        { ["metadata.region.zone"] = "eu", ["metadata.tenant_id"] = "t4", status = "scheduled" },
        { ["metadata.tenant_id"] = "t2", status = "scheduled", ["metadata.n"] = { ["$in"] = { 0, 2 } } },
        { ["metadata.tenant_id"] = "t3", status = { "scheduled", "failed" } },
        { ["metadata.region.zone"] = "eu", ["metadata.n"] = 2 },
        { ["metadata.n"] = { ["$in"] = { 0, 1 } }, ["metadata.tenant_id"] = "t2" },
        { ["metadata.tenant_id"] = "nobody" },
      }
      for i, f in ipairs(cases) do
        local want = ids(plain_a:query_jobs(f))
        assert.are.same(want, ids(indexed:query_jobs(f)), "case " .. i)
        assert.are.same(want, ids(plain_b:query_jobs(f)), "case " .. i .. " (table b)")
        assert.are.same(ids(plain_a:query_jobs(f, 3, 2)), ids(indexed:query_jobs(f, 3, 2)), "page " .. i)
        assert.are.equal(#want, indexed:count_jobs(f), "count " .. i)
      end
      -- Scoped claims, next due times and recovery on twin tables.
      local scopes = {
        { ["metadata.tenant_id"] = "t3" },
        { ["metadata.tenant_id"] = { ["$in"] = { "t4", "t5" } }, ["metadata.region.zone"] = "eu" },
        { ["metadata.tenant_id"] = { ["$ne"] = "t6" }, ["metadata.n"] = 1 },
      }
      local later = chronis.time.format(chronis.time.now() + 3600 * S)
      for i, sc in ipairs(scopes) do
        assert.are.equal(plain_b:next_due_time(sc), indexed:next_due_time(sc), "next due " .. i)
        local x = indexed:claim_due_jobs({ owner = "n", limit = 7, lease_seconds = 30, filters = sc })
        local y = plain_b:claim_due_jobs({ owner = "n", limit = 7, lease_seconds = 30, filters = sc })
        assert.is_true(#x > 0, "claim " .. i)
        assert.are.same(ids(y), ids(x), "claim " .. i)
        assert.are.equal(plain_b:recover_expired_leases(later, sc), indexed:recover_expired_leases(later, sc),
          "recover " .. i)
      end
      for _, s in ipairs({ indexed, plain_a, plain_b }) do s:close() end
    end)

    it("claims each job exactly once across overlapping scoped and unscoped claimers", function()
      local t = fresh_table()
      local stores = {}
      for i = 1, 3 do stores[i] = chronis.storage.open(url("index_metadata=tenant_id&pool=3", t)) end
      assert.are.equal(0, stores[1]:count_jobs())
      fill(t, 4, 50, 50)
      local due = stores[1]:count_jobs({ status = "scheduled" })
      local scopes = { { ["metadata.tenant_id"] = "t1" }, { ["metadata.tenant_id"] = { ["$in"] = { "t1", "t2" } } }, nil }
      local seen, total = {}, 0
      -- Interleaved: each round every claimer asks, so their claims race on
      -- the same rows through the pool's connections.
      for _ = 1, 40 do
        for i, s in ipairs(stores) do
          for _, j in ipairs(s:claim_due_jobs({ owner = "o" .. i, limit = 3, lease_seconds = 60, filters = scopes[i] })) do
            assert.is_nil(seen[j.job_id], j.job_id .. " claimed twice")
            seen[j.job_id] = i
            total = total + 1
            if scopes[i] then assert.truthy(j.metadata.tenant_id == "t1" or (i == 2 and j.metadata.tenant_id == "t2")) end
          end
        end
      end
      assert.are.equal(due, total)
      assert.are.equal(0, stores[1]:count_jobs({ status = "scheduled" }))
      for _, s in ipairs(stores) do s:close() end
    end)
  end)

  describe("run history", function()
    after_each(assert_loop_clean)

    local function iso_ago(seconds)
      return chronis.time.format(chronis.time.now() - math.floor(seconds * 1000000))
    end
    local function run(id, job_id, started_ago, fields)
      local r = { run_id = id, job_id = job_id, outcome = "ok", started_at = iso_ago(started_ago),
        ended_at = iso_ago(started_ago - 1) }
      for k, v in pairs(fields or {}) do r[k] = v end
      return r
    end
    local function run_ids(s, filters)
      local out = {}
      for i, r in ipairs(s:query_runs(filters)) do out[i] = r.run_id end
      return out
    end

    it("keeps `history` runs per job in <table>_runs, and none with history=0", function()
      local t = fresh_table()
      local s = chronis.storage.open(url("history=2", t))
      assert.are.equal(4, s:record_runs({ run("a1", "a", 40), run("a2", "a", 30), run("a3", "a", 20),
        run("b1", "b", 10) }))
      s:record_runs({ run("a4", "a", 5) })
      assert.are.same({ "a4", "a3" }, run_ids(s, { job_id = "a" }))
      assert.are.same({ "a4", "b1", "a3" }, run_ids(s))
      -- A run's own keep (a job's history_limit) overrides the option.
      s:record_runs({ run("c1", "c", 30, { keep = 3 }), run("c2", "c", 20, { keep = 3 }),
        run("c3", "c", 10, { keep = 3 }) })
      assert.are.same({ "c3", "c2", "c1" }, run_ids(s, { job_id = "c" }))
      s:close()
      assert.are.equal("a|2\nb|1\nc|3", psql(("SELECT job_id, count(*) FROM %s_runs GROUP BY job_id ORDER BY job_id")
        :format(t)))

      local off = chronis.storage.open(url("history=0", t))
      assert.are.equal(0, off:record_runs({ run("z1", "z", 10) }))
      local now = iso_ago(0)
      off:create_job({ job_id = "y", status = "running", claimed_by = "me", lease_until = now })
      local res = off:complete_jobs({ { job_id = "y", owner = "me", delete = true,
        run = run("y1", "y", 1) } })
      assert.is_true(res[1].ok)
      assert.are.same({}, run_ids(off, { job_id_in = { "y", "z" } }))
      off:close()
    end)

    it("prunes runs older than `history_days` as it writes", function()
      local t = fresh_table()
      local s = chronis.storage.open(url("history_days=1", t))
      s:record_runs({ run("old", "o", 2 * 86400), run("day", "o", 86400 - 60) })
      s:record_runs({ run("new", "o", 1) })
      assert.are.same({ "new", "day" }, run_ids(s, { job_id = "o" }))
      s:close()
    end)

    it("writes a completion's run in the completion's transaction: a run that cannot be written fails it", function()
      local t = fresh_table()
      local s = chronis.storage.open(url(nil, t))
      s:create_job({ job_id = "j", status = "running", claimed_by = "me", lease_until = iso_ago(-30),
        next_run_time = iso_ago(5) })
      psql(([[CREATE FUNCTION %s_refuse() RETURNS trigger LANGUAGE plpgsql AS
        $$BEGIN RAISE EXCEPTION 'no runs today'; END$$;
        CREATE TRIGGER refuse BEFORE INSERT ON %s_runs FOR EACH ROW EXECUTE FUNCTION %s_refuse()]])
        :format(t, t, t))
      local items = { { job_id = "j", owner = "me", updates = { status = "scheduled", claimed_by = chronis.json.null,
        lease_until = chronis.null, next_run_time = iso_ago(-3600), last_outcome = "ok" }, run = run("j1", "j", 2) } }
      local err = assert_error_code("unavailable", s.complete_jobs, s, items)
      assert.truthy(err.message:find("no runs today", 1, true), err.message)
      local j = s:get_job("j")
      assert.are.equal("running", j.status)
      assert.are.equal("me", j.claimed_by)
      assert.is_nil(j.last_outcome)
      psql(("DROP TRIGGER refuse ON %s_runs"):format(t))
      assert.is_true(s:complete_jobs(items)[1].ok)
      assert.are.equal("scheduled", s:get_job("j").status)
      assert.are.same({ "j1" }, run_ids(s, "j"))
      s:close()
    end)

    it("filters runs in SQL as the contract defines them, metadata paths through objects only", function()
      local s = chronis.storage.open(url())
      s:record_runs({
        run("m1", "m", 30, { metadata = { a = { b = "x" } } }),
        run("m2", "m", 20, { metadata = { a = { "x" } } }),
        run("m3", "m", 10, { metadata = { a = { b = "x", c = 1 } } }),
        run("m4", "m", 5, { metadata = { ["it's"] = { ['"q"'] = "v" } }, func_name = "O'Brien" }),
      })
      assert.are.same({ "m3", "m1" }, run_ids(s, { ["metadata.a.b"] = "x" }))
      -- "a.1" is no member of an array (jsonb's #> would take it as a position).
      assert.are.same({}, run_ids(s, { ["metadata.a.1"] = "x" }))
      -- A whole object matches equal objects only, not those holding more.
      assert.are.same({ "m1" }, run_ids(s, { ["metadata.a"] = { b = "x" } }))
      assert.are.same({}, run_ids(s, { ["metadata.a"] = { b = "x" }, started_at_gte = iso_ago(25) }))
      assert.are.same({ "m4" }, run_ids(s, { ["metadata.it's.\"q\""] = "v", func_name = "O'Brien" }))
      assert.are.same({}, run_ids(s, { func_name = "x' OR '1'='1" }))
      s:close()
    end)

    -- The engine on PostgreSQL, end to end: the run of each completion is
    -- in the history, the job carries the outcome of its last run.
    it("records a run that fails and its retry that succeeds, and the job's last outcome", function()
      local H = require "support.engine_helper"
      local store = chronis.storage.open(url())
      local clock = H.fake_clock(chronis.time.now() - 7200 * H.S)
      local s = H.scheduler { storage = store, clock = clock.fn }
      local calls = 0
      s:handler("flaky", function()
        calls = calls + 1
        if calls == 1 then error("transient trouble") end
      end)
      s:every { hours = 1 }:config { job_id = "f", retry = 3, retry_delay = 60, metadata = { team = "ops" } }
        :run("flaky")
      s:start()
      clock:advance(3600)
      local first = clock.now
      s:tick()
      H.wait(function() return (store:get_job("f").retry_count or 0) == 1 end, 10, "the failure was not written")
      clock.now = H.t(store:get_job("f").next_run_time) + 5 * H.S
      local second = clock.now
      s:tick()
      H.wait(function() return store:get_job("f").retry_count == 0 end, 10, "the success was not written")
      H.stop_all()

      local runs = store:query_runs({ job_id = "f" })
      assert.are.equal(2, #runs)
      local ok, failed = runs[1], runs[2]
      assert.are.equal("ok", ok.outcome)
      assert.are.equal(chronis.time.format(second), ok.started_at)
      assert.is_nil(ok.error_message)
      assert.are.equal("error", failed.outcome)
      assert.are.equal(chronis.time.format(first), failed.started_at)
      assert.truthy(failed.error_message:find("transient trouble", 1, true), failed.error_message)
      assert.are.equal("flaky", failed.func_name)
      assert.are.same({ team = "ops" }, failed.metadata)
      assert.are.same({ 1, 2 }, { failed.attempt, ok.attempt })
      assert.are.same({ "ok" }, (function()
        local out = {}
        for i, r in ipairs(store:query_runs({ job_id = "f", outcome = "ok" })) do out[i] = r.outcome end
        return out
      end)())

      local j = store:get_job("f")
      assert.are.equal("ok", j.last_outcome)
      assert.are.equal(1, j.failure_count)
      assert.are.equal(0, j.consecutive_failures)
      assert.truthy(j.last_error.message:find("transient trouble", 1, true))
      assert.are.equal(chronis.time.format(second), j.last_run_at)
      store:close()
    end)
  end)

  describe("wake-up hints", function()
    after_each(assert_loop_clean)

    -- A scheduler that would poll only every 30 s, so a quick run can only
    -- come from a hint.
    local function slow_scheduler(u, ran)
      local sched = chronis.scheduler{ storage = chronis.storage.open(u), polling_interval = 30,
        logger = function() end }
      sched:handler("hello", function(job) ran[#ran + 1] = { job.job_id, chronis.time.now() } end)
      return sched
    end

    it("wakes a scheduler in another store when a job is created due now or soon", function()
      local t = fresh_table()
      local ran = {}
      local sched = slow_scheduler(url(nil, t), ran)
      sched:start()
      chronis.sleep(0.5) -- the first tick has claimed nothing and LISTEN is up
      local writer = chronis.scheduler{ storage = chronis.storage.open(url(nil, t)) }
      local t0 = chronis.time.now()
      writer:create_date_job{ job_id = "now", func_name = "hello", run_date = chronis.time.format(t0) }
      assert(chronis.run_until(function() return #ran == 1 end, 3), "not woken by the NOTIFY")
      local at = t0 + 1500000
      writer:create_date_job{ job_id = "soon", func_name = "hello", run_date = chronis.time.format(at) }
      assert(chronis.run_until(function() return #ran == 2 end, 5), "the hint did not arm the timer")
      assert.are.equal("soon", ran[2][1])
      assert.is_true(ran[2][2] >= at, "ran before it was due")
      assert.is_true(ran[2][2] < at + 1000000, "ran late: " .. (ran[2][2] - at) .. " µs")
      sched:stop()
      sched:close()
      writer:close()
      sched:store():close()
      writer:store():close()
    end)

    it("starts a job written by raw SQL (no NOTIFY) within ten polls, while its polls make no claim", function()
      local t = fresh_table()
      local ran = {}
      local store = chronis.storage.open(url(nil, t))
      local sched = chronis.scheduler{ storage = store, polling_interval = 0.1, logger = function() end }
      sched:handler("hello", function(job) ran[#ran + 1] = { job.job_id, chronis.time.now() } end)
      sched:start()
      chronis.sleep(0.5) -- claimed nothing, read the next due time (none), LISTEN is up
      local at = chronis.time.now() + 200000
      psql(("INSERT INTO %s (job_id, status, trigger_type, next_run_time, updated_at, record) "
        .. "VALUES ('raw', 'scheduled', 'date', '%s', now(), '{\"func_name\": \"hello\"}')"):format(
          t, chronis.time.format(at)))
      -- Nobody announced it: the next read of next_due_time (every 10
      -- polls, 1 s) finds it.
      assert(chronis.run_until(function() return #ran == 1 end, 3), "the raw job did not run")
      assert.are.equal("raw", ran[1][1])
      assert.is_true(ran[1][2] >= at, "ran before it was due")
      assert.is_true(ran[1][2] < at + 1000000 + 300000, "ran late: " .. (ran[1][2] - at) .. " µs")
      sched:stop()
      sched:close()
      store:close()
    end)

    it("wakes a scheduler in another store when create_jobs writes a batch, at its earliest job", function()
      local t = fresh_table()
      local ran = {}
      local sched = slow_scheduler(url(nil, t), ran)
      sched:start()
      chronis.sleep(0.5) -- the first tick has claimed nothing and LISTEN is up
      local writer = chronis.storage.open(url(nil, t))
      local at = chronis.time.now() + 1500000
      local function rec(id, when, status)
        return { job_id = id, status = status or "scheduled", trigger_type = "date",
          trigger_args = { run_date = chronis.time.format(when) }, func_name = "hello",
          next_run_time = chronis.time.format(when) }
      end
      -- One hint for the batch, at its earliest scheduled time.
      local res = writer:create_jobs({ rec("later", at + 60000000), rec("soon", at),
        rec("paused", at - 1000000, "paused") })
      for i, id in ipairs{ "later", "soon", "paused" } do
        assert.are.same({ job_id = id, ok = true }, res[i])
      end
      assert(chronis.run_until(function() return #ran == 1 end, 5), "the hint did not arm the timer")
      assert.are.equal("soon", ran[1][1])
      assert.is_true(ran[1][2] >= at, "ran before it was due")
      assert.is_true(ran[1][2] < at + 1000000, "ran late: " .. (ran[1][2] - at) .. " µs")
      sched:stop()
      sched:close()
      sched:store():close()
      writer:close()
    end)

    it("leaves polling as the fallback with notify=false", function()
      local t = fresh_table()
      local ran = {}
      local sched = slow_scheduler(url("notify=false", t), ran)
      sched:start()
      chronis.sleep(0.3)
      local writer = chronis.scheduler{ storage = chronis.storage.open(url("notify=false", t)) }
      writer:create_date_job{ job_id = "now", func_name = "hello",
        run_date = chronis.time.format(chronis.time.now()) }
      chronis.sleep(1.5)
      assert.are.equal(0, #ran)
      sched:tick()
      assert(chronis.run_until(function() return #ran == 1 end, 3))
      sched:stop()
      sched:close()
      writer:close()
      sched:store():close()
      writer:store():close()
    end)
  end)

  describe("create_jobs", function()
    after_each(assert_loop_clean)

    it("refuses a batch with a job_id too long for the primary key, naming the item, creating none", function()
      local store = chronis.storage.open(url())
      local function rec(id)
        return { job_id = id, status = "scheduled", trigger_type = "date", func_name = "f",
          next_run_time = "2030-01-01T00:00:00Z" }
      end
      local err = assert_error_code("invalid", function()
        store:create_jobs({ rec("ok"), rec(string.rep("x", 2049)) })
      end)
      assert.truthy(err.message:find("item 2: invalid field 'job_id': 2049 bytes", 1, true), err.message)
      assert.are.same({}, store:query_jobs())
      local res = store:create_jobs({ rec(string.rep("x", 2048)) })
      assert.is_true(res[1].ok)
      store:close()
    end)

    it("answers duplicate for the ids another store created and creates the others once", function()
      local t = fresh_table()
      local a, b = chronis.storage.open(url(nil, t)), chronis.storage.open(url(nil, t))
      local function batch(lo, hi)
        local list = {}
        for i = lo, hi do
          list[#list + 1] = { job_id = ("j%04d"):format(i), status = "scheduled", trigger_type = "date",
            func_name = "f", next_run_time = "2030-01-01T00:00:00Z", name = ("n%d-%d"):format(lo, i) }
        end
        return list
      end
      local ra = a:create_jobs(batch(1, 600))
      local rb = b:create_jobs(batch(401, 1000))
      for i = 1, 600 do assert.is_true(ra[i].ok) end
      for i = 1, 600 do
        assert.are.equal(i <= 200 and "duplicate" or nil, rb[i].code, rb[i].job_id)
      end
      assert.are.equal(1000, a:count_jobs())
      assert.are.equal("n1-500", b:get_job("j0500").name)
      assert.are.equal("n401-700", a:get_job("j0700").name)
      a:close()
      b:close()
    end)
  end)

  describe("complete_jobs", function()
    after_each(assert_loop_clean)

    it("answers every item of a batch sent in parts, and writes the runs of those that applied", function()
      local store = chronis.storage.open(url())
      local N = 600
      local list = {}
      for i = 1, N do
        list[i] = { job_id = ("c%03d"):format(i), status = "scheduled", trigger_type = "date",
          func_name = "f", next_run_time = "2020-01-01T00:00:00Z" }
      end
      store:create_jobs(list)
      assert.are.equal(N, #store:claim_due_jobs({ now = chronis.time.now(), limit = N, owner = "me",
        lease_seconds = 60 }))
      local started = chronis.time.format(chronis.time.now() - 1000000)
      local items, want = {}, {}
      for i = 1, N + 50 do
        local id = ("c%03d"):format(i)
        local owner = i % 7 == 0 and "other" or "me"
        local item = { job_id = id, owner = owner, run = { run_id = "r" .. i, job_id = id, outcome = "ok",
          started_at = started, ended_at = started, attempt = 1 } }
        if i % 2 == 0 then
          item.delete = true
        else
          item.updates = { status = "scheduled", next_run_time = "2030-01-01T00:00:00Z", claimed_by = chronis.json.null,
            lease_until = chronis.json.null }
        end
        items[i] = item
        want[i] = i > N and "not_found" or owner == "other" and "conflict" or "ok"
      end
      local res = store:complete_jobs(items)
      assert.are.equal(#items, #res)
      local applied = 0
      for i = 1, #items do
        assert.are.equal(items[i].job_id, res[i].job_id)
        assert.are.equal(want[i], res[i].ok and "ok" or res[i].code, items[i].job_id)
        if res[i].ok then applied = applied + 1 end
      end
      assert.are.equal(applied, #store:query_runs({}))
      assert.are.equal(#store:query_runs({ job_id = "c001" }), 1)
      assert.are.equal(#store:query_runs({ job_id = "c007" }), 0)
      assert.are.equal("running", store:get_job("c014").status)
      assert.is_nil(store:get_job("c002"))
      assert.are.equal("scheduled", store:get_job("c003").status)
      store:close()
    end)
  end)

  describe("failures", function()
    after_each(assert_loop_clean)

    it("fails calls with 'unavailable' when the server refuses connections", function()
      local port = U.free_port()
      local s = chronis.storage.open(("postgres://postgres@127.0.0.1:%d/x"):format(port))
      local t0 = chronis.time.now()
      local err = assert_error_code("unavailable", s.get_job, s, "x")
      assert.truthy(err.message:find(tostring(port), 1, true), err.message)
      assert_error_code("unavailable", s.create_job, s, { job_id = "a", status = "scheduled" })
      assert_error_code("unavailable", s.query_jobs, s)
      assert.is_true(chronis.time.now() - t0 < 2000000, "took too long to fail")
      s:close()
      -- Many requests waiting for the first attempt all learn that it failed.
      s = chronis.storage.open(("postgres://postgres@127.0.0.1:%d/x"):format(port))
      local tasks = {}
      for i = 1, 6 do
        tasks[i] = chronis.spawn(function()
          local ok, e = pcall(s.get_job, s, "x" .. i)
          return ok, type(e) == "table" and e.code
        end)
      end
      for i = 1, 6 do
        local ok, code = tasks[i]:join()
        assert.is_false(ok, "request " .. i)
        assert.are.equal("unavailable", code, "request " .. i)
      end
      s:close()
    end)

    it("fails a call in flight with 'unavailable' when the server stops answering, then recovers",
      function()
        local s = chronis.storage.open(url("timeout=1"))
        s:create_job({ job_id = "a", status = "scheduled" })
        need():signal("STOP")
        local ok, err = pcall(s.get_job, s, "a")
        need():signal("CONT")
        assert.is_false(ok)
        assert.are.equal("unavailable", err.code, tostring(err.message))
        assert.truthy(err.message:find("no answer", 1, true), err.message)
        assert.are.equal("a", s:get_job("a").job_id)
        s:close()
      end)

    it("reports statement and lock timeouts as 'timeout', also while checking the schema",
      function()
        local t = fresh_table()
        local s = chronis.storage.open(url(nil, t))
        s:create_job({ job_id = "a", status = "pending" })
        s:close()
        -- Another session takes an exclusive lock on a table and keeps it
        -- until it is ended.
        local function hold(relation)
          local wait = need():background(("env -u LD_PRELOAD PGAPPNAME=chronis_holder psql -X " ..
            "-h 127.0.0.1 -p %d -U postgres -d %s -qAtc 'BEGIN; LOCK TABLE %s IN ACCESS EXCLUSIVE " ..
            "MODE; SELECT pg_sleep(120); COMMIT'"):format(need().port, need().db, relation))
          local held = chronis.run_until(function()
            return psql(("SELECT count(*) FROM pg_locks WHERE relation = to_regclass('%s') " ..
              "AND mode = 'AccessExclusiveLock' AND granted"):format(relation)):match("%d+") == "1"
          end, 30)
          assert(held, "the lock on " .. relation .. " was not taken")
          return function()
            psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = " ..
              "'chronis_holder'")
            assert(wait(30), "the lock holder did not end")
          end
        end
        local release = hold(t)
        -- SQLSTATE 57014 (statement_timeout) and 55P03 (lock_timeout).
        for _, opt in ipairs({ "statement_timeout", "lock_timeout" }) do
          s = chronis.storage.open(url(("options=-c%%20%s%%3D200"):format(opt), t))
          local err = assert_error_code("timeout", s.get_job, s, "a")
          assert.truthy(err.message:find(opt == "lock_timeout" and "55P03" or "57014", 1, true),
            err.message)
          s:close()
        end
        release()
        -- The same while the store reads its migration history at open.
        release = hold(t .. "_migrations")
        for _, opt in ipairs({ "statement_timeout", "lock_timeout" }) do
          s = chronis.storage.open(url(("options=-c%%20%s%%3D200"):format(opt), t))
          assert_error_code("timeout", s.get_job, s, "a")
          s:close()
        end
        release()
        s = chronis.storage.open(url("options=-c%20lock_timeout%3D200", t))
        assert.are.equal("a", s:get_job("a").job_id)
        s:close()
      end)

    -- 600 jobs due now, 10 at a time, while `disrupt(stop_file)` (shell
    -- commands run in the background, which end when stop_file exists)
    -- breaks the store's connections.
    local function run_through(disrupt, quiet)
      local t = fresh_table()
      local N = 600
      local store = chronis.storage.open(url("timeout=5", t))
      local logs, runs, nruns = {}, {}, 0
      local sched = chronis.scheduler{ storage = store, max_workers = 10, max_queue_size = 20,
        polling_interval = 0.2, lease_seconds = 5,
        logger = function(level, msg) logs[#logs + 1] = level .. ": " .. msg end }
      sched:handler("work", function(job)
        runs[job.job_id] = (runs[job.job_id] or 0) + 1
        nruns = nruns + 1
        chronis.sleep(0.01)
      end)
      local now = chronis.time.format(chronis.time.now())
      for i = 1, N do sched:create_date_job{ job_id = ("r%04d"):format(i), func_name = "work", run_date = now } end
      local stop = tmpname("stop")
      -- The disruption starts once a sixth of the jobs ran, so that it
      -- falls in the middle of the run however slow the machine is.
      local wait_disruption
      sched:start()
      local done = chronis.run_until(function()
        if not wait_disruption and nruns >= N // 6 then
          wait_disruption = need():background(disrupt(stop), stop)
        end
        if nruns < N then return false end
        local ok, n = pcall(store.count_jobs, store)
        return ok and n == 0
      end, 90)
      sched:stop()
      sched:close()
      store:close()
      assert(wait_disruption, "the run never reached the disruption")
      assert(wait_disruption(90), "the disruption did not end")
      assert(done, ("not done: %d runs of %d jobs; log:\n%s"):format(nruns, N, table.concat(logs, "\n", math.max(1, #logs - 20))))
      local twice = {}
      for id, n in pairs(runs) do
        if n ~= 1 then twice[#twice + 1] = id .. "=" .. n end
      end
      assert.are.same({}, twice)
      assert.are.equal(N, nruns)
      -- Connections killed while idle are replaced without a word.
      local saw = quiet
      for _, l in ipairs(logs) do saw = saw or l:find("unavailable", 1, true) ~= nil end
      assert(saw, "the outage was never noticed:\n" .. table.concat(logs, "\n"))
    end

    it("recovers from a server restart in the middle of a run: every job runs exactly once", function()
      run_through(function() return need():restart_command(0.4, "fast", 0.5) end)
    end)

    it("recovers from a server crash in the middle of a run: every job runs exactly once", function()
      run_through(function() return need():restart_command(0.4, "immediate", 0.5) end)
    end)

    it("survives its connections being killed again and again: every job runs exactly once", function()
      run_through(function(stop) return "sleep 0.2; " .. need():kill_loop_command(0.1, stop) end, true)
    end)
  end)

  describe("with 4 scheduler processes", function()
    after_each(assert_loop_clean)

    it("runs each of 10,000 jobs due now exactly once", function()
      local t = fresh_table()
      local N = 10000
      local store = chronis.storage.open(url(nil, t))
      local sched = chronis.scheduler{ storage = store }
      -- The workers run "record"; named here so that 10,000 creates do not
      -- each warn of an unknown handler.
      sched:handler("record", function() end)
      local now = chronis.time.format(chronis.time.now())
      local tasks = {}
      for w = 0, 3 do
        tasks[#tasks + 1] = chronis.spawn(function()
          for i = w * N // 4 + 1, (w + 1) * N // 4 do
            sched:create_date_job{ job_id = ("m%05d"):format(i), func_name = "record", run_date = now }
          end
        end)
      end
      for _, task in ipairs(tasks) do task:join() end
      assert.are.equal(N, store:count_jobs())
      local outs, cmds = {}, {}
      for i = 1, 4 do
        outs[i] = tmpname("run" .. i)
        cmds[i] = ("lua5.4 %s/spec/support/postgres_worker.lua run '%s' '%s' 20 200 2>>%s.err &")
          :format(U.ROOT, url(nil, t), outs[i], outs[i])
      end
      assert(U.sh(table.concat(cmds, " ") .. " wait"), "a worker failed")
      local seen, total, per = {}, 0, {}
      for i = 1, 4 do
        local text = U.read(outs[i]) or ""
        local runs = tonumber(text:match("done (%d+)"))
        assert(runs, "worker " .. i .. " did not finish: " .. tostring(U.read(outs[i] .. ".err")))
        per[i] = runs
        for id in text:gmatch("(m%d+)\n") do
          assert(not seen[id], id .. " ran twice")
          seen[id] = true
          total = total + 1
        end
        assert.are.equal(runs, select(2, text:gsub("m%d+\n", "")))
      end
      assert.are.equal(N, total)
      for i = 1, N do assert(seen[("m%05d"):format(i)], ("m%05d never ran"):format(i)) end
      assert.are.equal(0, store:count_jobs())
      sched:close()
      store:close()
    end)
  end)
end)
