-- The SQLite store (adapters/sqlite/): the shared storage contract on a
-- real file, then what is SQLite's own: reopening, the versioned schema and
-- its migrations, refusing bad paths and files that are not ours without
-- touching them, the URL forms, and several processes sharing one file.
local chronis = require "chronis"
local U = require "support.util"
local J = require "support.jobs"

local sh_quote, read_bytes, write_bytes, exists = U.sh_quote, U.read, U.write, U.exists
local copy, ids_of = J.copy, J.ids_of

-- Runs a shell command; returns its output and whether it exited 0.
local function sh(cmd) return U.capture(cmd .. " 2>&1") end

-- The repo root with a trailing slash, for child processes started elsewhere.
local ROOT = U.ROOT .. "/"

local tmpdir, new_path = U.scratch("chronis-sqlite")
local function fresh_path(name) return new_path(name or "jobs.db") end

local function remove_db(path)
  for _, suffix in ipairs({ "", "-wal", "-shm", "-journal" }) do os.remove(path .. suffix) end
end

-- The sqlite3 command-line shell, for files written by hand.
local function sqlite3(path, sql)
  assert(U.has_command("sqlite3"),
    "the sqlite3 command-line shell is missing: install it with 'apt-get install sqlite3'")
  local out, ok = sh("sqlite3 " .. sh_quote(path) .. " " .. sh_quote(sql))
  assert(ok, "sqlite3 failed: " .. out)
  return (out:gsub("\n$", ""))
end

local function open_error(url)
  local ok, err = pcall(chronis.storage.open, url)
  if ok then err:close() end
  assert(not ok, "the store opened: " .. url)
  assert(type(err) == "table", "expected a structured error, got " .. tostring(err))
  assert.are.equal("invalid", err.code, err.message)
  return err
end

local function assert_names(msg, ...)
  for _, s in ipairs({ ... }) do
    assert(msg:find(s, 1, true), ("message %q does not mention %q"):format(msg, s))
  end
end

teardown(function()
  U.remove_tree(tmpdir)
end)

do
  local current
  require("support.storage_contract")("sqlite", function()
    current = fresh_path("contract.db")
    return chronis.storage.sqlite(current)
  end, { teardown = function() remove_db(current) end })
  require("support.engine_contract")("sqlite", function()
    current = fresh_path("engine.db")
    return chronis.storage.sqlite(current)
  end, {
    reopen = function() return chronis.storage.sqlite(current) end,
    teardown = function() remove_db(current) end,
  })
  -- The same contracts with the paths they filter and scope on indexed:
  -- queries, claims and next due times then read the expression indexes.
  local INDEXED = { index_metadata = "tenant_id,t,tenant,region.zone" }
  require("support.storage_contract")("sqlite (index_metadata)", function()
    current = fresh_path("contract_idx.db")
    return chronis.storage.sqlite(current, INDEXED)
  end, { teardown = function() remove_db(current) end })
  require("support.engine_contract")("sqlite (index_metadata)", function()
    current = fresh_path("engine_idx.db")
    return chronis.storage.sqlite(current, INDEXED)
  end, {
    reopen = function() return chronis.storage.sqlite(current, INDEXED) end,
    teardown = function() remove_db(current) end,
  })
end

local T0 = "2025-01-15T10:00:00Z"

-- Every DESIGN §3 field, the runtime fields and unknown ones.
local FULL = J.full({ status = "scheduled", huge_priority_like = 1 << 40 })

describe("sqlite store", function()
  describe("opening", function()
    it("opens a new file from sqlite:PATH, sqlite:///PATH and chronis.storage.sqlite", function()
      for _, form in ipairs({ "sqlite:%s", "sqlite://%s" }) do
        local path = fresh_path()
        local s = chronis.storage.open(form:format(path))
        assert.are.equal("sqlite", s:kind())
        s:create_job({ job_id = "a", status = "scheduled", next_run_time = T0 })
        s:close()
        assert.is_true(exists(path), form)
      end
      local path = fresh_path()
      local s = chronis.storage.sqlite(path, { busy_timeout = 1000, synchronous = "full" })
      s:create_job({ job_id = "a", status = "scheduled", next_run_time = T0 })
      s:close()
      assert.are.equal("a", chronis.storage.sqlite("sqlite:" .. path):get_job("a").job_id)
    end)

    it("opens sqlite:chronis.db in the working folder", function()
      local dir = fresh_path("cwd")
      chronis.fs.mkdir_p(dir)
      local script = ([[
        package.path = %q .. "lua/?.lua;" .. %q .. "lua/?/init.lua;" .. package.path
        package.cpath = %q .. "build/lua/?.so;" .. package.cpath
        local chronis = require "chronis"
        local s = chronis.storage.open("sqlite:chronis.db")
        s:create_job({ job_id = "rel", status = "pending" })
        s:close()
        print(chronis.storage.open("sqlite:chronis.db"):get_job("rel").status)
      ]]):format(ROOT, ROOT, ROOT)
      write_bytes(dir .. "/child.lua", script)
      local out, ok = sh("cd " .. sh_quote(dir) .. " && lua5.4 child.lua")
      assert(ok, out)
      assert.are.equal("pending\n", out)
      assert.is_true(exists(dir .. "/chronis.db"))
    end)

    it("opens sqlite::memory: as a private, empty database", function()
      local a, b = chronis.storage.open("sqlite::memory:"), chronis.storage.sqlite(":memory:")
      a:create_job({ job_id = "x", status = "scheduled", next_run_time = T0 })
      assert.are.equal(1, a:count_jobs())
      assert.are.equal(0, b:count_jobs())
      a:close()
      b:close()
    end)

    it("refuses an empty path and unknown or bad options, naming them", function()
      assert_names(open_error("sqlite:").message, "path is required")
      local path = fresh_path()
      assert_names(open_error("sqlite:" .. path .. "?bogus=1").message, "bogus")
      assert_names(open_error("sqlite:" .. path .. "?busy_timeout=soon").message, "busy_timeout")
      assert_names(open_error("sqlite:" .. path .. "?synchronous=maybe").message, "synchronous")
      assert_names(open_error("sqlite:" .. path .. "?history=-1").message, "option 'history'",
        "0..100000", "'-1'")
      assert_names(open_error("sqlite:" .. path .. "?history=lots").message, "option 'history'")
      assert_names(open_error("sqlite:" .. path .. "?history_days=0").message,
        "option 'history_days'", "1..36500")
      assert_names(open_error("sqlite:" .. path .. "?histroy=5").message, "unknown option 'histroy'",
        "did you mean 'history'?")
      assert.is_false(exists(path))
    end)

    it("refuses an option given twice, naming it, instead of using the last", function()
      local path = fresh_path()
      for _, name in ipairs({ "busy_timeout", "cache_size", "wal_autocheckpoint" }) do
        assert_names(open_error(("sqlite:%s?%s=100&%s=200"):format(path, name, name)).message,
          path, "option '" .. name .. "' is given more than once")
      end
      assert_names(open_error("sqlite:" .. path .. "?synchronous=full&check=none&synchronous=off")
        .message, "option 'synchronous' is given more than once")
      local ok, err = pcall(chronis.storage.sqlite, path .. "?synchronous=full", { synchronous = "off" })
      assert.is_false(ok)
      assert_names(err.message, "option 'synchronous' is given more than once")
      assert.is_false(exists(path))
    end)

    -- A value with &, =, %, #, ?, spaces or unicode reaches the store as it
    -- was given: from an option table as is, from a URL %-encoded.
    it("opens a path with & = % # ? spaces and unicode from options and from a %-encoded URL", function()
      local name = "a&b=c%d #e?f é.db"
      local path = fresh_path(name)
      local s = chronis.storage.sqlite({ path = path, synchronous = "full" })
      s:create_job({ job_id = "a", status = "pending" })
      s:close()
      assert.is_true(exists(path), path)
      local enc = U.url_encode(path, "/._-")
      assert.is_nil(enc:find("[&=#? ]"))
      U.check_each_open({
        function() return chronis.storage.open("sqlite:" .. enc .. "?busy_timeout=100") end,
        function() return chronis.storage.sqlite(enc, { busy_timeout = 100 }) end,
        function() return chronis.storage.open({ scheme = "sqlite", path = path }) end,
        function()
          local sched = chronis.scheduler({ storage = { scheme = "sqlite", path = path } })
          return sched:store(), sched
        end,
      }, function(again) assert.are.equal("pending", again:get_job("a").status) end)
      -- Nothing was created under a name cut at '&', '?' or '#', nor left encoded.
      local listing = sh("ls " .. sh_quote(tmpdir))
      for _, bad in ipairs({ "a&b=c%d #e\n", "%26", "-a\n" }) do
        assert.is_nil(listing:find(bad, 1, true), listing)
      end
    end)

    it("refuses a malformed %-escape in a URL, naming the part, and creates nothing", function()
      local path = fresh_path("esc.db")
      assert_names(open_error("sqlite:" .. path .. "%zz").message, "'%zz' in the path")
      assert_names(open_error("sqlite:" .. path .. "%4").message, "'%4' in the path")
      assert_names(open_error("sqlite:" .. path .. "%00").message, "%00", "in the path")
      assert_names(open_error("sqlite:" .. path .. "?synchronous=f%ull").message,
        "'%ul' in option 'synchronous'")
      assert_names(open_error("sqlite:" .. path .. "?sync%G0=full").message, "in an option name")
      assert.is_false(exists(path))
      assert.is_false(exists(path .. "%zz"))
      assert.is_false(exists(path .. "%4"))
    end)

    it("refuses bad option tables, naming the option", function()
      local path = fresh_path()
      local function table_error(...)
        local ok, err = pcall(chronis.storage.sqlite, ...)
        assert.is_false(ok)
        assert.are.equal("invalid", err.code, err.message)
        return err.message
      end
      assert_names(table_error({ path = path, busy_timeout = "soon" }), "busy_timeout", "soon")
      assert_names(table_error({ path = path, bogus = 1 }), "unknown option 'bogus'")
      assert_names(table_error({ path = path, synchronous = {} }), "option 'synchronous' must be")
      assert_names(table_error({ path = path }, { path = path }), "option 'path' is given more than once")
      assert_names(table_error({ scheme = "redis", path = path }), "scheme 'redis' is not sqlite")
      assert_names(table_error({}), "path is required")
      local ok, err = pcall(chronis.storage.open, { path = path })
      assert.is_false(ok)
      assert_names(err.message, "'scheme' is required")
      assert.is_false(exists(path))
    end)

    it("puts the file in WAL mode with the current schema version", function()
      local path = fresh_path()
      chronis.storage.sqlite(path):close()
      assert.are.equal("wal", sqlite3(path, "PRAGMA journal_mode"))
      assert.are.equal("4", sqlite3(path, "PRAGMA user_version"))
      local indexes = sqlite3(path, "SELECT group_concat(name, ' ') FROM (SELECT name FROM " ..
        "sqlite_schema WHERE type = 'index' AND (name LIKE 'jobs_%' OR name LIKE 'runs_%') " ..
        "ORDER BY name)")
      assert.are.equal("jobs_due jobs_lease jobs_next jobs_queue runs_job runs_started", indexes)
    end)
  end)

  describe("bad input at open", function()
    it("names a missing folder and creates nothing", function()
      local dir = fresh_path("missing")
      local err = open_error("sqlite:" .. dir .. "/sub/jobs.db")
      assert_names(err.message, dir .. "/sub/jobs.db", "does not exist")
      assert.is_false(exists(dir))
    end)

    it("names a path where no file can be created", function()
      local err = open_error("sqlite:/proc/chronis.db")
      assert_names(err.message, "/proc/chronis.db")
      assert.is_false(exists("/proc/chronis.db"))
    end)

    it("names a path that is a folder", function()
      local dir = fresh_path("folder.db")
      chronis.fs.mkdir_p(dir)
      assert_names(open_error("sqlite:" .. dir).message, dir, "folder")
    end)

    it("refuses a file that is not a database and leaves it unchanged", function()
      local path = fresh_path("notes.txt")
      local text = ("these are my notes, not a database\n"):rep(200)
      write_bytes(path, text)
      local err = open_error("sqlite:" .. path)
      assert_names(err.message, path, "file is not a database")
      assert.are.equal(text, read_bytes(path))
      assert.is_false(exists(path .. "-wal"))
      assert.is_false(exists(path .. "-shm"))
    end)

    it("refuses a corrupt database naming it, and leaves it unchanged", function()
      for _, page in ipairs({ 1, 2 }) do
        local path = fresh_path("corrupt.db")
        local s = chronis.storage.sqlite(path)
        for i = 1, 50 do
          s:create_job({ job_id = ("j%03d"):format(i), status = "scheduled", next_run_time = T0,
            metadata = { pad = ("x"):rep(200) } })
        end
        s:close()
        local bytes = read_bytes(path)
        -- Garbage over a b-tree page: the schema (page 1, past the header)
        -- or the jobs table's root (page 2).
        local from = (page - 1) * 4096 + (page == 1 and 100 or 0)
        local bad = bytes:sub(1, from) .. ("\255\1"):rep(1000) .. bytes:sub(from + 2001)
        write_bytes(path, bad)
        local err = open_error("sqlite:" .. path)
        assert_names(err.message, path, "corrupt")
        assert.are.equal(bad, read_bytes(path), "page " .. page)
      end
    end)

    it("finds damage anywhere in the file with check=quick", function()
      local path = fresh_path("deep.db")
      local s = chronis.storage.sqlite(path, { wal_autocheckpoint = 100, cache_size = 1024 })
      for i = 1, 400 do
        s:create_job({ job_id = ("j%03d"):format(i), status = "scheduled", next_run_time = T0,
          metadata = { pad = ("x"):rep(300) } })
      end
      s:close()
      local bytes = read_bytes(path)
      local page = #bytes // 4096 // 2 -- a page in the middle of the table
      local bad = bytes:sub(1, page * 4096) .. ("\255\1"):rep(2048) .. bytes:sub((page + 1) * 4096 + 1)
      write_bytes(path, bad)
      local err = open_error("sqlite:" .. path .. "?check=quick")
      assert_names(err.message, path, "corrupt")
      assert.are.equal(bad, read_bytes(path))
      assert_names(open_error("sqlite:" .. path .. "?check=full").message, "check")
    end)

    it("refuses a database from a newer chronis, naming the path and versions", function()
      local path = fresh_path()
      chronis.storage.sqlite(path):close()
      sqlite3(path, "PRAGMA user_version = 999")
      local before = read_bytes(path)
      local err = open_error("sqlite:" .. path)
      assert_names(err.message, path, "999", "version 4", "newer")
      assert.are.equal(before, read_bytes(path))
      assert.are.equal("999", sqlite3(path, "PRAGMA user_version"))
    end)

    it("refuses another program's database (tables, no schema version)", function()
      local path = fresh_path()
      sqlite3(path, "CREATE TABLE jobs (id INTEGER PRIMARY KEY, what TEXT); " ..
        "INSERT INTO jobs (what) VALUES ('theirs')")
      local before = read_bytes(path)
      assert_names(open_error("sqlite:" .. path).message, path, "not a chronis database")
      assert.are.equal(before, read_bytes(path))
    end)

    it("accepts an existing empty file as a new database", function()
      local path = fresh_path()
      write_bytes(path, "")
      local s = chronis.storage.sqlite(path)
      s:create_job({ job_id = "a", status = "pending" })
      s:close()
      assert.are.equal("4", sqlite3(path, "PRAGMA user_version"))
    end)
  end)

  describe("persistence", function()
    it("keeps every field of a job across close and reopen", function()
      local path = fresh_path()
      local s = chronis.storage.sqlite(path)
      local created = s:create_job(copy(FULL))
      local other = s:create_job({ job_id = "min", status = "pending" })
      s:close()
      s = chronis.storage.sqlite(path)
      assert.are.same(created, s:get_job(FULL.job_id))
      assert.are.same(other, s:get_job("min"))
      assert.are.same({ "daily_report_20250115_093000_0a1b2c3d", "min" }, ids_of(s:query_jobs()))
      assert.are.equal("integer", math.type(s:get_job(FULL.job_id).kwargs.count))
      s:close()
    end)

    it("writes with create_jobs the rows create_job writes, indexes included, in one transaction", function()
      local path = fresh_path()
      local s = chronis.storage.sqlite(path, { index_metadata = "tenant_id" })
      local function rec(id, queue)
        local r = copy(FULL)
        r.job_id, r.queue, r.claimed_by, r.lease_until = id, queue, "w1", "2025-01-15T10:05:00Z"
        return r
      end
      s:create_job(rec("one", "mail"))
      local res = s:create_jobs({ rec("bulk", "mail"), rec("one", "other"), rec("bulk2", "mail"),
        rec("bulk", "other") })
      assert.are.same({ true, false, true, false }, { res[1].ok, res[2].ok, res[3].ok, res[4].ok })
      s:close()
      -- Every column, and the record but for its id and stamp.
      local cols = "status, next_run_time, priority, claimed_by, lease_until, trigger_type, " ..
        "json_remove(record, '$.updated_at', '$.job_id')"
      local one = sqlite3(path, "SELECT " .. cols .. " FROM jobs WHERE job_id = 'one'")
      assert.are.equal(one, sqlite3(path, "SELECT " .. cols .. " FROM jobs WHERE job_id = 'bulk'"))
      assert.truthy(one:find('"queue":"mail"', 1, true), one)
      -- The queue index and the metadata index hold the batch's rows.
      assert.are.equal("bulk|bulk2|one", sqlite3(path, "SELECT group_concat(job_id, '|') FROM " ..
        "(SELECT job_id FROM jobs INDEXED BY jobs_queue WHERE status = 'scheduled' AND " ..
        "coalesce(CASE WHEN json_valid(record) THEN json_extract(record, '$.queue') END, 'default') " ..
        "= 'mail' ORDER BY job_id)"))
      assert.are.equal("3", sqlite3(path, "SELECT count(*) FROM jobs INDEXED BY jobs_meta_tenant_id " ..
        "WHERE record -> '$.metadata.\"tenant_id\"' = '\"acme\"'"))
      -- One stamp for the batch: its rows were written by one statement
      -- repeated in one transaction.
      assert.are.equal("1", sqlite3(path, "SELECT count(DISTINCT updated_at) FROM jobs WHERE job_id LIKE 'bulk%'"))
    end)

    it("reads empty strings back as empty strings", function()
      -- Each record is decoded from its JSON text; an empty string was
      -- once read back as whatever bytes were left in the heap.
      local s = chronis.storage.sqlite(fresh_path())
      local bad = {}
      for i = 1, 100 do
        local id = "e" .. i
        s:create_job({ job_id = id, status = "scheduled", name = "", claimed_by = "",
                       kwargs = { note = "", [("k"):rep(i)] = ("v"):rep(i) } })
        local j = s:get_job(id)
        if j.name ~= "" or j.claimed_by ~= "" or j.kwargs.note ~= "" then
          bad[#bad + 1] = ("%s: name %q, claimed_by %q, kwargs.note %q"):format(id, j.name,
            tostring(j.claimed_by), tostring(j.kwargs.note))
        end
      end
      s:close()
      assert.are.same({}, bad)
    end)

    it("refuses a stored record whose time is not a time, naming the field", function()
      -- Records edited by hand: a time as true, as a fraction, or past year
      -- 9999 was read as the epoch, a truncated number or an instant no
      -- ISO string carries.
      for _, bad in ipairs { "true", "1.5", "[1]", "999999999999999999", "-99999999999999999999" } do
        local path = fresh_path()
        local s = chronis.storage.sqlite(path)
        s:create_job({ job_id = "x", status = "scheduled", next_run_time = T0 })
        s:close()
        sqlite3(path, ([[UPDATE jobs SET record = '{"job_id":"x","status":"scheduled","next_run_time":%s}']])
          :format(bad))
        s = chronis.storage.sqlite(path)
        local ok, err = pcall(s.get_job, s, "x")
        s:close()
        assert.is_false(ok, bad .. " was read as " .. tostring(ok and err and err.next_run_time))
        assert.are.equal("invalid", err.code)
        assert.matches("invalid field 'next_run_time': " .. bad:gsub("[%[%]%-%.]", "%%%0") .. " is not a time",
          err.message)
      end
    end)

    it("keeps claims, leases and completions across reopen", function()
      local path = fresh_path()
      local s = chronis.storage.sqlite(path)
      s:create_job({ job_id = "a", status = "scheduled", next_run_time = T0 })
      s:create_job({ job_id = "b", status = "scheduled", next_run_time = T0, priority = 9 })
      local got = s:claim_due_jobs({ now = T0, limit = 1, owner = "n1", lease_seconds = 30 })
      assert.are.same({ "b" }, ids_of(got))
      s:close()
      s = chronis.storage.sqlite(path)
      local b = s:get_job("b")
      assert.are.equal("running", b.status)
      assert.are.equal("n1", b.claimed_by)
      assert.are.equal("2025-01-15T10:00:30Z", b.lease_until)
      assert.are.same(got[1], b)
      assert.are.same({ "a" }, ids_of(s:claim_due_jobs({ now = T0, limit = 5, owner = "n2" })))
      assert.is_true(s:complete_jobs({ { job_id = "b", owner = "n1", delete = true } })[1].ok)
      s:close()
      s = chronis.storage.sqlite(path)
      assert.is_nil(s:get_job("b"))
      assert.are.equal("n2", s:get_job("a").claimed_by)
      s:close()
    end)

    -- Records written by other tools (or by hand) in JSON chronis would not
    -- write itself: what decodes is read with its value, what does not is
    -- an error naming the job, never a job without its kwargs.
    local function set_record(path, id, kwargs_text)
      sqlite3(path, ("UPDATE jobs SET record = '{\"job_id\":\"%s\",\"kwargs\":%s," ..
        "\"metadata\":{\"tenant\":\"acme\"},\"status\":\"scheduled\"}' WHERE job_id = '%s'"):format(
        id, kwargs_text, id))
    end

    it("reads numbers of any length and form in a record written by hand", function()
      local path = fresh_path()
      local s = chronis.storage.sqlite(path)
      s:create_job({ job_id = "a", status = "scheduled" })
      set_record(path, "a", '{"big":1' .. ("0"):rep(100) .. ',"tiny":0.' .. ("0"):rep(299) .. '1,' ..
        '"edge":9223372036854775808,"max":9223372036854775807,"e":1E+2}')
      local kw = s:get_job("a").kwargs
      assert.are.equal(1e100, kw.big)
      assert.are.equal(1e-300, kw.tiny)
      assert.are.equal(2.0 ^ 63, kw.edge)
      assert.are.equal("float", math.type(kw.edge))
      assert.are.equal(math.maxinteger, kw.max)
      assert.are.equal("integer", math.type(kw.max))
      assert.are.equal(100.0, kw.e)
      s:close()
    end)

    it("refuses a record it cannot decode with an error naming the job, never drops its kwargs", function()
      local path = fresh_path()
      local s = chronis.storage.sqlite(path)
      s:create_job({ job_id = "bad", status = "scheduled" })
      s:create_job({ job_id = "good", status = "scheduled", kwargs = { x = 1 } })
      for _, text in ipairs({ '{"a":tru}', '{"a":01}', '{"a":1.}', '{"a":"\\q"}', '{"a":-}', '{"a":nan}' }) do
        set_record(path, "bad", text)
        local ok, err = pcall(s.get_job, s, "bad")
        assert(not ok, text .. ": the record was read as " .. require("chronis").json.encode(err or {}))
        assert.is_table(err, text)
        assert_names(err.message, "bad")
        assert.are.same({ x = 1 }, s:get_job("good").kwargs)
      end
      s:close()
    end)

    it("claims a queue's jobs past a record that is not JSON", function()
      local path = fresh_path()
      local s = chronis.storage.sqlite(path)
      s:create_job({ job_id = "bad", status = "scheduled", next_run_time = T0, queue = "a" })
      s:create_job({ job_id = "good", status = "scheduled", next_run_time = T0, queue = "a" })
      set_record(path, "bad", "{")
      local claimed = s:claim_due_jobs({ now = T0, owner = "n1", queues = { { name = "a", limit = 5,
        global_limit = 5 } } })
      assert.are.same({ "good" }, ids_of(claimed))
      s:close()
    end)

    it("keeps the typed columns in step with the record", function()
      local path = fresh_path()
      local s = chronis.storage.sqlite(path)
      s:create_job({ job_id = "a", status = "scheduled", next_run_time = T0, trigger_type = "cron" })
      s:claim_due_jobs({ now = T0, owner = "n1", lease_seconds = 60 })
      s:close()
      local row = sqlite3(path, "SELECT status, next_run_time, priority, claimed_by, lease_until, " ..
        "trigger_type, record ->> '$.status', record ->> '$.claimed_by', " ..
        "record ->> '$.lease_until', updated_at, record ->> '$.updated_at' FROM jobs")
      local us = chronis.time.parse(T0)
      local head, upd, upd_iso = row:match("^(.*)|(%d+)|([^|]+)$")
      assert.are.equal(("running|%d|5|n1|%d|cron|running|n1|2025-01-15T10:01:00Z"):format(
        us, us + 60000000), head)
      assert.are.equal(chronis.time.parse(upd_iso), math.tointeger(tonumber(upd)))
    end)
  end)

  describe("the engine's bulk writes", function()
    local path, s
    before_each(function()
      path = fresh_path()
      s = chronis.storage.sqlite(path)
    end)
    after_each(function() s:close() end)

    local function record(id)
      return sqlite3(path, "SELECT record FROM jobs WHERE job_id = '" .. id .. "'")
    end

    -- The record as writing the whole job again gives it (update_job with
    -- no changes), updated_at aside.
    local function assert_canonical_record(id)
      local patched = record(id)
      s:update_job(id, {})
      local rewritten = record(id)
      local strip = function(t) return (t:gsub('"updated_at":"[^"]*"', '"updated_at":X')) end
      assert.are.equal(strip(rewritten), strip(patched))
    end

    it("leave records as writing the job would, after claim, extension and recovery", function()
      s:create_job({ job_id = "a", status = "scheduled", next_run_time = T0, name = "A",
        trigger_type = "date", metadata = { tenant_id = "acme" }, kwargs = { x = { 1, 2 } },
        custom = "kept", zzz = true })
      s:claim_due_jobs({ now = T0, owner = 'odd "owner" \\ ü', lease_seconds = 30 })
      assert.are.equal('odd "owner" \\ ü', s:get_job("a").claimed_by)
      assert_canonical_record("a")
      assert.are.equal(1, s:extend_leases({ now = T0, lease_seconds = 90,
        owner = 'odd "owner" \\ ü', ids = { "a" } }))
      assert.are.equal("2025-01-15T10:01:30Z", s:get_job("a").lease_until)
      assert_canonical_record("a")
      assert.are.equal(1, s:recover_expired_leases("2025-01-15T10:05:00Z"))
      assert_canonical_record("a")
      local a = s:get_job("a")
      assert.are.equal("scheduled", a.status)
      assert.is_nil(a.claimed_by)
      assert.is_nil(a.lease_until)
      assert.are.equal("kept", a.custom)
    end)

    it("extend only the owner's running jobs, as the memory store does", function()
      local m = chronis.storage.memory()
      for _, st in ipairs({ s, m }) do
        st:create_job({ job_id = "a", status = "running", claimed_by = "n1", lease_until = T0 })
        st:create_job({ job_id = "b", status = "running", claimed_by = "n2", lease_until = T0 })
        st:create_job({ job_id = "c", status = "scheduled", claimed_by = "n1", next_run_time = T0 })
        st:create_job({ job_id = "d", status = "running", claimed_by = "n1", lease_until = T0 })
      end
      local opts = { now = T0, lease_seconds = 60, owner = "n1", ids = { "a", "b", "c", "nope" } }
      assert.are.equal(m:extend_leases(copy(opts)), s:extend_leases(copy(opts)))
      for _, id in ipairs({ "a", "b", "c", "d" }) do
        local x, y = s:get_job(id), m:get_job(id)
        x.updated_at, y.updated_at = nil, nil
        assert.are.same(y, x, id)
      end
      assert.are.equal("2025-01-15T10:01:00Z", s:get_job("a").lease_until)
      assert.are.same({}, s:get_jobs_batch({}))
      assert.are.equal(0, s:extend_leases({ now = T0, owner = "n1", ids = {} }))
      m:close()
    end)

    it("report the earliest scheduled next_run_time, nil when none", function()
      assert.is_nil(s:next_due_time())
      s:create_job({ job_id = "p", status = "paused", next_run_time = "2025-01-15T09:00:00Z" })
      s:create_job({ job_id = "n", status = "scheduled" })
      assert.is_nil(s:next_due_time())
      s:create_job({ job_id = "a", status = "scheduled", next_run_time = "2025-01-15T10:00:05Z",
        priority = 1 })
      s:create_job({ job_id = "b", status = "scheduled", next_run_time = T0, priority = 9 })
      assert.are.equal(T0, s:next_due_time())
    end)
  end)

  describe("schema versions", function()
    -- The layout version 1 wrote, as a file from that release would hold it.
    local V1 = [[
      CREATE TABLE jobs (job_id TEXT PRIMARY KEY NOT NULL, status TEXT NOT NULL,
        next_run_time INTEGER, priority INTEGER NOT NULL, updated_at INTEGER NOT NULL,
        claimed_by TEXT, lease_until INTEGER, trigger_type TEXT, record TEXT NOT NULL);
      CREATE INDEX jobs_due ON jobs(status, priority, next_run_time, job_id)
        WHERE status = 'scheduled';
      CREATE INDEX jobs_lease ON jobs(status, lease_until) WHERE status = 'running';
      INSERT INTO jobs VALUES ('old', 'scheduled', 1736935200000000, 5, 1736935200000000, NULL,
        NULL, 'date', '{"job_id":"old","trigger_type":"date","status":"scheduled",' ||
        '"next_run_time":"2025-01-15T10:00:00Z","updated_at":"2025-01-15T10:00:00Z",' ||
        '"metadata":{"tenant_id":"acme"}}');
      PRAGMA user_version = 1;
    ]]

    it("migrates a version 1 file forward at open, keeping its jobs", function()
      local path = fresh_path()
      sqlite3(path, V1)
      assert.are.equal("1", sqlite3(path, "PRAGMA user_version"))
      local s = chronis.storage.sqlite(path)
      local old = s:get_job("old")
      assert.are.equal("acme", old.metadata.tenant_id)
      assert.are.equal(T0, old.next_run_time)
      assert.are.equal(T0, s:next_due_time())
      assert.are.same({ "old" }, ids_of(s:query_jobs({ status = "scheduled", ["metadata.tenant_id"] = "acme" })))
      assert.are.same({ "old" }, ids_of(s:claim_due_jobs({ now = T0, owner = "n" })))
      s:close()
      assert.are.equal("4", sqlite3(path, "PRAGMA user_version"))
      assert.are.equal("jobs_next", sqlite3(path,
        "SELECT name FROM sqlite_schema WHERE name = 'jobs_next'"))
      -- Reopening a migrated file changes nothing more.
      chronis.storage.sqlite(path):close()
      assert.are.equal("4", sqlite3(path, "PRAGMA user_version"))
    end)

    -- A file version 2 wrote, before run history: `sqlite3 jobs.db .dump`
    -- of one with a job due, a paused one and one claimed by a node that is
    -- still running it (and the statistics PRAGMA optimize left at close).
    -- A dump leaves out user_version.
    local V2 = [[
      CREATE TABLE jobs ( job_id TEXT PRIMARY KEY NOT NULL, status TEXT NOT NULL, next_run_time INTEGER, priority INTEGER NOT NULL, updated_at INTEGER NOT NULL, claimed_by TEXT, lease_until INTEGER, trigger_type TEXT, record TEXT NOT NULL);
      INSERT INTO jobs VALUES('old','scheduled',1736935200000000,5,1796525660539490,NULL,NULL,'date','{"job_id":"old","trigger_type":"date","func_name":"work","status":"scheduled","next_run_time":"2025-01-15T10:00:00Z","updated_at":"2026-12-06T02:54:20.539490Z","metadata":{"tenant_id":"acme"}}');
      INSERT INTO jobs VALUES('paused','paused',NULL,5,1796525660539601,NULL,NULL,NULL,'{"job_id":"paused","func_name":"work","status":"paused","updated_at":"2026-12-06T02:54:20.539601Z"}');
      INSERT INTO jobs VALUES('held','running',1736931600000000,9,1796525660540159,'node-1',1768469400000000,'interval','{"job_id":"held","trigger_type":"interval","trigger_args":{"seconds":60},"func_name":"work","status":"running","next_run_time":"2025-01-15T09:00:00Z","updated_at":"2026-12-06T02:54:20.540159Z","priority":9,"claimed_by":"node-1","lease_until":"2026-01-15T09:30:00Z"}');
      ANALYZE sqlite_schema;
      INSERT INTO sqlite_stat1 VALUES('jobs','jobs_next','3 1 1 1');
      INSERT INTO sqlite_stat1 VALUES('jobs','jobs_lease','1 1 1');
      INSERT INTO sqlite_stat1 VALUES('jobs','jobs_due','1 1 1 1 1');
      INSERT INTO sqlite_stat1 VALUES('jobs','sqlite_autoindex_jobs_1','3 1');
      CREATE INDEX jobs_due ON jobs(status, priority, next_run_time, job_id) WHERE status = 'scheduled';
      CREATE INDEX jobs_lease ON jobs(status, lease_until) WHERE status = 'running';
      CREATE INDEX jobs_next ON jobs(status, next_run_time, job_id);
      PRAGMA user_version = 2;
    ]]

    it("migrates a version 2 file in place at open: its jobs stay, runs are kept from then on", function()
      local path = fresh_path()
      sqlite3(path, V2)
      local before = sqlite3(path, "SELECT group_concat(job_id || ' ' || record, char(10)) FROM " ..
        "(SELECT * FROM jobs ORDER BY job_id)")
      local s = chronis.storage.sqlite(path)
      assert.are.equal("4", sqlite3(path, "PRAGMA user_version"))
      assert.are.equal(before, sqlite3(path, "SELECT group_concat(job_id || ' ' || record, " ..
        "char(10)) FROM (SELECT * FROM jobs ORDER BY job_id)"))
      assert.are.same({ "held", "old", "paused" }, ids_of(s:query_jobs()))
      assert.are.equal("acme", s:get_job("old").metadata.tenant_id)
      assert.are.same({ "old" }, ids_of(s:query_jobs({ ["metadata.tenant_id"] = "acme" })))
      assert.are.same({}, s:query_runs())
      -- The job that was running completes, its run written with it.
      local now = chronis.time.now()
      local res = s:complete_jobs({ { job_id = "held", owner = "node-1",
        updates = { status = "scheduled", claimed_by = chronis.json.null,
          lease_until = chronis.json.null, next_run_time = "2100-01-01T00:00:00Z" },
        run = { run_id = "node-1/1", job_id = "held", outcome = "ok", started_at = now,
          ended_at = now, func_name = "work" } } })
      assert.is_true(res[1].ok)
      assert.are.same({ "old" }, ids_of(s:claim_due_jobs({ now = T0, owner = "n" })))
      s:close()
      local again = chronis.storage.sqlite(path)
      local runs = again:query_runs({ job_id = "held" })
      assert.are.equal(1, #runs)
      assert.are.equal("node-1/1", runs[1].run_id)
      assert.are.equal("scheduled", again:get_job("held").status)
      assert.are.equal(3, again:count_jobs())
      again:close()
      assert.are.equal("4", sqlite3(path, "PRAGMA user_version"))
    end)

    it("creates version 4 from nothing through every step", function()
      local schema = "SELECT group_concat(sql, ';') FROM (SELECT sql FROM sqlite_schema " ..
        "WHERE name LIKE 'jobs%' OR name LIKE 'runs%' OR name LIKE 'queue%' ORDER BY name)"
      local path = fresh_path()
      chronis.storage.sqlite(path):close()
      local fresh = sqlite3(path, schema)
      assert.truthy(fresh:find("CREATE TABLE runs", 1, true), fresh)
      assert.truthy(fresh:find("CREATE TABLE queue_rates", 1, true), fresh)
      for _, old in ipairs({ V1, V2 }) do
        local other = fresh_path()
        sqlite3(other, old .. "DELETE FROM jobs;")
        chronis.storage.sqlite(other):close()
        assert.are.equal(fresh:gsub("%s+", ""), (sqlite3(other, schema):gsub("%s+", "")))
      end
    end)
  end)

  describe("queries", function()
    local s
    before_each(function() s = chronis.storage.sqlite(fresh_path()) end)
    after_each(function() s:close() end)

    it("matches metadata keys SQL cannot name the same way as the memory store", function()
      local m = chronis.storage.memory()
      local jobs = {
        { job_id = "a", status = "scheduled", next_run_time = T0,
          metadata = { ["tenant id"] = "acme", ["x'y"] = 1, ["a[0]"] = true } },
        { job_id = "b", status = "scheduled", next_run_time = T0,
          metadata = { ["tenant id"] = "globex", ["x'y"] = "1" } },
        { job_id = "c", status = "paused", metadata = { ["tenant id"] = "acme" } },
      }
      for _, j in ipairs(jobs) do
        s:create_job(copy(j))
        m:create_job(copy(j))
      end
      local sets = {
        { ["metadata.tenant id"] = "acme" },
        { ["metadata.tenant id"] = "acme", status = "scheduled" },
        { ["metadata.x'y"] = 1 },
        { ["metadata.x'y"] = "1" },
        { ["metadata.a[0]"] = true },
        { ["metadata.tenant id"] = "nobody" },
        { ["metadata.a') OR 1=1 --"] = "x" },
        { ["metadata.tenant_id') OR ('1'='1"] = "acme" },
      }
      for i, f in ipairs(sets) do
        assert.are.same(ids_of(m:query_jobs(copy(f))), ids_of(s:query_jobs(copy(f))), "set " .. i)
        assert.are.equal(m:count_jobs(copy(f)), s:count_jobs(copy(f)), "set " .. i)
        assert.are.same(ids_of(m:query_jobs(copy(f), 1, 1)), ids_of(s:query_jobs(copy(f), 1, 1)),
          "set " .. i)
      end
      m:close()
    end)

    it("claims by priority levels outside 0..10 and past levels with nothing due", function()
      local us = chronis.time.parse(T0)
      for i = 1, 300 do
        s:create_job({ job_id = ("future%03d"):format(i), status = "scheduled",
          next_run_time = us + i * 1000000, priority = 100 })
      end
      s:create_job({ job_id = "neg", status = "scheduled", next_run_time = T0, priority = -3 })
      s:create_job({ job_id = "mid", status = "scheduled", next_run_time = T0, priority = 50 })
      s:create_job({ job_id = "nil", status = "scheduled", priority = 60 })
      assert.are.equal(T0, s:next_due_time())
      assert.are.same({ "mid", "neg" }, ids_of(s:claim_due_jobs({ now = T0, owner = "n" })))
      assert.are.equal("2025-01-15T10:00:01Z", s:next_due_time())
    end)
  end)

  describe("index_metadata", function()
    -- The expression a path is indexed and queried by (docs/sqlite.md).
    local TENANT = [[record -> '$.metadata."tenant_id"']]
    local S, iso = 1000000, chronis.time.format

    local function meta_indexes(path)
      return sqlite3(path, "SELECT sql FROM sqlite_schema WHERE type = 'index' AND " ..
        "name LIKE 'jobs_meta_%' ORDER BY name")
    end

    -- The store's statements, as sqlite_query.c builds them for a filter
    -- or scope on metadata.tenant_id, for EXPLAIN QUERY PLAN.
    local ROW = "record, job_id, status, claimed_by, lease_until, next_run_time, priority, updated_at"
    local QUERY_STATUS = "SELECT " .. ROW .. " FROM jobs WHERE 1 AND status IN (?1) AND " ..
      TENANT .. " = ?2 ORDER BY next_run_time NULLS LAST, job_id LIMIT ?3 OFFSET ?4"
    local QUERY = "SELECT " .. ROW .. " FROM jobs WHERE 1 AND " .. TENANT ..
      " = ?1 ORDER BY next_run_time NULLS LAST, job_id LIMIT ?2 OFFSET ?3"
    local QUERY_IN = "SELECT " .. ROW .. " FROM jobs WHERE 1 AND " .. TENANT ..
      " IN (?1,?2) ORDER BY next_run_time NULLS LAST, job_id LIMIT ?3 OFFSET ?4"
    local COUNT_STATUS = "SELECT count(*) FROM jobs WHERE 1 AND status IN (?1) AND " .. TENANT .. " = ?2"
    -- chronis_patch, which the store registers on its own connection, is
    -- left out of the claim: the shell lacks it, and it is no part of the plan.
    local CLAIM = "UPDATE jobs SET status = 'running', claimed_by = ?1, lease_until = ?2, " ..
      "updated_at = ?3 WHERE rowid IN (SELECT rowid FROM jobs INDEXED BY " ..
      "\"jobs_meta_tenant_id\" WHERE status = 'scheduled' AND next_run_time <= ?6 AND " .. TENANT ..
      " = ?8 ORDER BY priority DESC, next_run_time, job_id LIMIT ?7) RETURNING " .. ROW
    local NEXT_DUE = "SELECT next_run_time FROM jobs INDEXED BY \"jobs_meta_tenant_id\" WHERE " ..
      "status = 'scheduled' AND next_run_time IS NOT NULL AND " .. TENANT ..
      " = ?1 ORDER BY next_run_time LIMIT 1"

    it("creates an index per path on open, on the expression docs/sqlite.md gives", function()
      local path = fresh_path()
      local s = chronis.storage.sqlite(path)
      s:create_job({ job_id = "old", status = "scheduled", next_run_time = T0,
        metadata = { tenant_id = "acme" } })
      s:close()
      -- Built over the jobs already there; paths may be nested, keys hold '-'.
      s = chronis.storage.open("sqlite:" .. path .. "?index_metadata=tenant_id,region.zone,team-x")
      s:close()
      local want = table.concat({
        [[CREATE INDEX "jobs_meta_region.zone" ON jobs(record -> '$.metadata."region"."zone"', status, next_run_time, job_id)]],
        [[CREATE INDEX "jobs_meta_team-x" ON jobs(record -> '$.metadata."team-x"', status, next_run_time, job_id)]],
        [[CREATE INDEX "jobs_meta_tenant_id" ON jobs(record -> '$.metadata."tenant_id"', status, next_run_time, job_id)]],
      }, "\n")
      assert.are.equal(want, meta_indexes(path))
      assert.are.equal("old", sqlite3(path, "SELECT job_id FROM jobs INDEXED BY \"jobs_meta_tenant_id\" " ..
        "WHERE " .. TENANT .. " = '\"acme\"'"))
      -- Opening again with the option (table form) or without it keeps them.
      chronis.storage.sqlite(path, { index_metadata = "tenant_id" }):close()
      chronis.storage.sqlite(path):close()
      assert.are.equal(want, meta_indexes(path))
      assert.are.equal("ok", sqlite3(path, "PRAGMA integrity_check"))
    end)

    it("refuses a malformed index_metadata, naming the option and the path, and creates nothing", function()
      local path = fresh_path()
      for _, case in ipairs({ { "a..b", "'a..b'" }, { "tenant_id,tenant_id", "named twice" },
                              { "a%27b", "'a'b'" }, { "tenant_id,", "empty path" } }) do
        local err = open_error("sqlite:" .. path .. "?index_metadata=" .. case[1])
        assert_names(err.message, "index_metadata", case[2])
      end
      for _, case in ipairs({ { "tenant id", "'tenant id'", "letters, digits" },
                              { "a.b\\.c", "'a.b\\.c'", "letters, digits" },
                              { "x,,y", "empty path", "'x,,y'" } }) do
        local ok, err = pcall(chronis.storage.sqlite, path, { index_metadata = case[1] })
        assert.is_false(ok, case[1])
        assert.are.equal("invalid", err.code)
        assert_names(err.message, "index_metadata", case[2], case[3])
      end
      assert.is_false(exists(path))
    end)

    it("plans tenant queries, a scoped claim and a scoped next due time on the index", function()
      local path = fresh_path()
      local s = chronis.storage.sqlite(path, { index_metadata = "tenant_id" })
      local t0 = chronis.time.parse(T0)
      s:create_job({ job_id = "seed", status = "scheduled", next_run_time = T0,
        metadata = { tenant_id = "t1" } })
      s:close()
      local function assert_index(sql, sorted)
        for _, analyzed in ipairs({ false, true }) do
          local plan = sqlite3(path, (analyzed and "ANALYZE; " or "") .. "EXPLAIN QUERY PLAN " .. sql)
          assert(plan:find("USING INDEX jobs_meta_tenant_id", 1, true), plan .. "\n" .. sql)
          assert(not plan:find("SCAN jobs", 1, true), plan)
          assert(sorted or not plan:find("TEMP B-TREE", 1, true), plan)
        end
      end
      -- With statistics too (ANALYZE, which PRAGMA optimize runs at close):
      -- 50 tenants of 40 jobs.
      s = chronis.storage.sqlite(path)
      for i = 1, 2000 do
        s:create_job({ job_id = "j" .. i, status = i % 4 == 0 and "paused" or "scheduled",
          next_run_time = iso(t0 + i * S), metadata = { tenant_id = "t" .. i % 50 } })
      end
      s:close()
      assert_index(QUERY_STATUS)
      assert_index(COUNT_STATUS)
      assert_index(QUERY, true)    -- every status of the tenant: one range, then sorted
      assert_index(QUERY_IN, true)
      assert_index(CLAIM, true)    -- the tenant's due jobs, sorted by priority
      assert_index(NEXT_DUE)
    end)

    it("answers from the index the store's own statements name, and from one a user made", function()
      -- An index that disagrees with the table: what comes back shows whether
      -- the store's SQL read it (the index) or the table (a scan).
      local path = fresh_path()
      local s = chronis.storage.sqlite(path)
      local jobs = {
        { job_id = "j1", status = "scheduled", next_run_time = "2025-01-15T10:00:03Z",
          metadata = { tenant_id = "a", other = "b" } },
        { job_id = "j2", status = "scheduled", next_run_time = "2025-01-15T10:00:02Z",
          metadata = { tenant_id = "b", other = "a" } },
        { job_id = "j3", status = "scheduled", next_run_time = "2025-01-15T10:00:01Z",
          metadata = { tenant_id = "b", other = "a" } },
      }
      for _, j in ipairs(jobs) do s:create_job(copy(j)) end
      s:close()
      local function lie(name, cols)
        sqlite3(path, ("CREATE INDEX %s ON jobs(record -> '$.metadata.\"other\"'%s); " ..
          "PRAGMA writable_schema = ON; UPDATE sqlite_schema SET sql = replace(sql, '\"other\"', " ..
          "'\"tenant_id\"') WHERE name = '%s'"):format(name, cols, name:gsub('"', '')))
      end
      local a = { ["metadata.tenant_id"] = "a" }
      lie('"jobs_meta_tenant_id"', ", status, next_run_time, job_id")
      s = chronis.storage.sqlite(path, { index_metadata = "tenant_id" })
      assert.are.same({ "j3", "j2" }, ids_of(s:query_jobs(copy(a))))
      assert.are.same({ "j3", "j2" }, ids_of(s:query_jobs({ ["metadata.tenant_id"] = "a",
        status = "scheduled" })))
      assert.are.same({ "j3", "j2" }, ids_of(s:query_jobs({ ["metadata.tenant_id"] =
        { ["$in"] = { "a", "z" } } })))
      assert.are.equal(2, s:count_jobs(copy(a)))
      assert.are.equal("2025-01-15T10:00:01Z", s:next_due_time(copy(a)))
      s:close()
      -- Rebuilt, it agrees with the table again.
      sqlite3(path, 'REINDEX "jobs_meta_tenant_id"')
      s = chronis.storage.sqlite(path, { index_metadata = "tenant_id" })
      assert.are.same({ "j1" }, ids_of(s:query_jobs(copy(a))))
      assert.are.equal(1, s:count_jobs(copy(a)))
      assert.are.equal("2025-01-15T10:00:03Z", s:next_due_time(copy(a)))
      s:close()
      -- A user's own index on the same expression, without index_metadata.
      sqlite3(path, 'DROP INDEX "jobs_meta_tenant_id"')
      lie("my_tenants", "")
      s = chronis.storage.sqlite(path)
      assert.are.same({ "j3", "j2" }, ids_of(s:query_jobs(copy(a))))
      s:close()
    end)

    it("gives the results of the memory store, with and without the index", function()
      local m = chronis.storage.memory()
      local plain = chronis.storage.sqlite(fresh_path())
      local indexed = chronis.storage.sqlite(fresh_path(), { index_metadata = "tenant_id,region.zone" })
      local stores = { m, plain, indexed }
      local t0 = chronis.time.parse(T0)
      local tenants = { "acme", "beta", 1, "1", true, { x = 1 } }
      for i = 1, 120 do
        local meta
        if i % 9 ~= 0 then
          meta = { tenant_id = tenants[i % #tenants + 1], region = { zone = i % 2 == 0 and "eu" or "us" } }
        end
        local status = ({ "scheduled", "scheduled", "scheduled", "paused", "running" })[i % 5 + 1]
        local j = { job_id = ("j%03d"):format(i), status = status, metadata = meta,
          priority = i % 4, next_run_time = i % 11 ~= 0 and iso(t0 + (i % 13 - 6) * S) or nil }
        if status == "running" then j.claimed_by, j.lease_until = "n", iso(t0 - (i % 4) * S) end
        for _, st in ipairs(stores) do st:create_job(copy(j)) end
      end
      local filters = {
        { ["metadata.tenant_id"] = "acme" },
        { ["metadata.tenant_id"] = "acme", status = "scheduled" },
        { ["metadata.tenant_id"] = "acme", status = { "scheduled", "paused" } },
        { ["metadata.tenant_id"] = 1 },
        { ["metadata.tenant_id"] = "1" },
        { ["metadata.tenant_id"] = true },
        { ["metadata.tenant_id"] = { x = 1 } },
        { ["metadata.tenant_id"] = { ["$in"] = { "acme", 1 } } },
        { ["metadata.tenant_id"] = { ["$in"] = {} } },
        { ["metadata.tenant_id"] = { ["$ne"] = "acme" } },
        { ["metadata.tenant_id"] = { ["$exists"] = false } },
        { ["metadata.tenant_id"] = chronis.json.null },
        { ["metadata.tenant_id"] = "beta", ["metadata.region.zone"] = "eu" },
        { ["metadata.region.zone"] = "us", next_run_time_lte = T0 },
        { ["metadata.tenant_id"] = "acme", job_id_in = { "j001", "j007", "j013" } },
      }
      for i, f in ipairs(filters) do
        local want = ids_of(m:query_jobs(copy(f)))
        for k = 2, 3 do
          local st = stores[k]
          assert.are.same(want, ids_of(st:query_jobs(copy(f))), "set " .. i .. " store " .. k)
          assert.are.same(ids_of(m:query_jobs(copy(f), 3, 2)), ids_of(st:query_jobs(copy(f), 3, 2)),
            "set " .. i .. " store " .. k)
          assert.are.equal(m:count_jobs(copy(f)), st:count_jobs(copy(f)), "set " .. i .. " store " .. k)
        end
        if i ~= 2 and i ~= 3 and i ~= 14 and i ~= 15 then -- scopes: metadata conditions only
          for k = 2, 3 do
            assert.are.equal(m:next_due_time(copy(f)), stores[k]:next_due_time(copy(f)),
              "next due, set " .. i .. " store " .. k)
          end
        end
      end
      -- Scoped recoveries and claims, in turn, take the same jobs in the same order.
      local scopes = { filters[1], filters[4], filters[8], filters[10], filters[13], filters[12] }
      local recovered, claimed = 0, 0
      for i, f in ipairs(scopes) do
        local want = m:recover_expired_leases(iso(t0 - S), copy(f))
        recovered = recovered + want
        for k = 2, 3 do
          assert.are.equal(want, stores[k]:recover_expired_leases(iso(t0 - S), copy(f)),
            "recovery, scope " .. i .. " store " .. k)
        end
      end
      for round = 1, 3 do
        for i, f in ipairs(scopes) do
          local req = { now = T0, owner = "n" .. i, limit = 4, lease_seconds = 30, filters = f }
          local want = ids_of(m:claim_due_jobs(copy(req)))
          claimed = claimed + #want
          for k = 2, 3 do
            assert.are.same(want, ids_of(stores[k]:claim_due_jobs(copy(req))),
              ("claim, round %d, scope %d, store %d"):format(round, i, k))
          end
        end
      end
      assert(recovered > 0 and claimed > 20, ("recovered %d, claimed %d"):format(recovered, claimed))
      for _, st in ipairs(stores) do st:close() end
    end)
  end)

  describe("run history", function()
    local S = 1000000
    local function now_us() return chronis.time.now() end
    local function iso(us) return chronis.time.format(us) end
    local function run(id, job_id, fields)
      local t = now_us()
      local r = { run_id = id, job_id = job_id, outcome = "ok", started_at = iso(t - 60 * S),
        ended_at = iso(t - 59 * S), func_name = "work" }
      for k, v in pairs(fields or {}) do r[k] = v end
      return r
    end
    local function run_ids(store, filters, limit, offset)
      local out = {}
      for i, r in ipairs(store:query_runs(filters, limit, offset)) do out[i] = r.run_id end
      return out
    end

    it("keeps `history` runs per job and prunes runs older than `history_days`", function()
      local path = fresh_path()
      local s = chronis.storage.open("sqlite:" .. path .. "?history=2&history_days=1")
      local t = now_us()
      local runs = {}
      for i = 1, 5 do runs[i] = run("a" .. i, "a", { started_at = iso(t - (100 - i) * S) }) end
      runs[6] = run("b1", "b", { keep = 4 })
      assert.are.equal(6, s:record_runs(runs))
      assert.are.same({ "a5", "a4" }, run_ids(s, "a"))
      assert.are.same({ "b1" }, run_ids(s, "b"))
      -- Runs that started at the same time go in query order: run_id last.
      local same = iso(t - 10 * S)
      s:record_runs({ run("t2", "t", { started_at = same }), run("t3", "t", { started_at = same }),
        run("t1", "t", { started_at = same }) })
      assert.are.same({ "t3", "t2" }, run_ids(s, "t"))
      -- Older than a day: gone at the next write, whichever job it is for.
      s:record_runs({ run("old", "c", { started_at = iso(t - 25 * 3600 * S) }) })
      s:record_runs({ run("b2", "b") })
      assert.are.same({}, run_ids(s, "c"))
      assert.are.same({ "b2", "b1" }, run_ids(s, "b"))
      s:close()
      local none = chronis.storage.sqlite(path, { history = 0 })
      assert.are.equal(0, none:record_runs({ run("z1", "z") }))
      assert.are.equal(1, none:record_runs({ run("z2", "z", { keep = 1 }) }))
      assert.are.same({ "z2" }, run_ids(none, "z"))
      none:close()
      assert.are.equal("7", sqlite3(path, "SELECT count(*) FROM runs"))
    end)

    it("keeps a completed run's history across closing and reopening the file", function()
      local path = fresh_path()
      local s = chronis.storage.sqlite(path)
      s:create_job({ job_id = "once", status = "running", claimed_by = "me", func_name = "work",
        metadata = { tenant = "acme" } })
      local r = run("me/1", "once", { outcome = "error", error_code = "handler",
        error_message = "boom", attempt = 2, node = "me", name = "Once",
        scheduled_at = iso(now_us() - 61 * S), metadata = { tenant = "acme" } })
      local res = s:complete_jobs({ { job_id = "once", owner = "me", delete = true, run = r } })
      assert.is_true(res[1].ok)
      s:close()
      local again = chronis.storage.sqlite(path)
      assert.is_nil(again:get_job("once"))
      local got = again:query_runs({ ["metadata.tenant"] = "acme" })
      assert.are.equal(1, #got)
      for _, k in ipairs({ "run_id", "job_id", "outcome", "error_code", "error_message", "attempt",
        "node", "name", "func_name", "scheduled_at", "started_at", "ended_at" }) do
        assert.are.equal(r[k], got[1][k], k)
      end
      assert.are.same({ tenant = "acme" }, got[1].metadata)
      again:close()
      -- One row, readable with SQL.
      assert.are.equal("me/1|once|error|boom", sqlite3(path,
        "SELECT run_id, job_id, outcome, error_message FROM runs"))
    end)

    it("matches run filters the same way as the memory store", function()
      local s, m = chronis.storage.sqlite(fresh_path()), chronis.storage.memory()
      local t = now_us()
      local metas = {
        { tenant = "acme", n = 1, deep = { zone = "eu", list = { 1, 2 } } },
        { tenant = "globex", n = "1", ["tenant id"] = "acme", ["x'y"] = true },
        { tenant = "ünï 日本 \"q\"", n = 1.5, none = false },
        { ["a.b"] = 1, a = { b = 2 } },
        {},
      }
      local outcomes = { "ok", "error", "timeout", "skipped", "interrupted" }
      local runs = {}
      for i = 1, 40 do
        local meta = metas[i % #metas + 1]
        runs[i] = run(("r%02d"):format(i), "j" .. (i % 4), {
          started_at = iso(t - (1000 - (i // 3)) * S),
          outcome = outcomes[(i // 2) % 5 + 1],
          func_name = i % 3 == 0 and "mail" or "work",
          metadata = next(meta) and meta or nil,
        })
      end
      s:record_runs(copy(runs))
      m:record_runs(copy(runs))
      local sets = {
        {}, "j1", { job_id_in = { "j0", "j2", "nope", "j2" } }, { outcome = "error" },
        { outcome = { "timeout", "skipped" }, job_id = "j3" },
        { started_at_gte = iso(t - 995 * S), started_at_lte = iso(t - 990 * S) },
        { func_name = "mail" }, { func_name = "nope" },
        { ["metadata.tenant"] = "acme" }, { ["metadata.n"] = 1 }, { ["metadata.n"] = "1" },
        { ["metadata.n"] = 1.5 }, { ["metadata.deep.zone"] = "eu" },
        { ["metadata.deep"] = { zone = "eu", list = { 1, 2 } } },
        { ["metadata.deep.list"] = { 1, 2 } }, { ["metadata.tenant"] = "ünï 日本 \"q\"" },
        { ["metadata.none"] = false }, { ["metadata.a.b"] = 2 }, { ["metadata.a.b"] = 1 },
        { ["metadata.tenant id"] = "acme" }, { ["metadata.x'y"] = true },
        { ["metadata.tenant') OR ('1'='1"] = "acme" },
        { ["metadata.tenant id"] = "acme", outcome = { "ok", "error", "timeout" } },
      }
      for i, f in ipairs(sets) do
        local want = run_ids(m, copy(f))
        assert.are.same(want, run_ids(s, copy(f)), "set " .. i)
        assert.are.same(run_ids(m, copy(f), 3, 2), run_ids(s, copy(f), 3, 2), "set " .. i)
        if i > 1 then assert(#want < 40, "set " .. i .. " filters nothing") end
      end
      s:close()
      m:close()
    end)

    it("writes a scheduler's runs: a job that fails, then succeeds", function()
      local H = require "support.engine_helper"
      local path = fresh_path()
      local store = chronis.storage.sqlite(path)
      -- The fake clock starts at the wall clock's time: runs from long ago
      -- would be pruned by age.
      local clock = H.fake_clock(now_us())
      local start = clock.now
      local s = H.scheduler({ storage = store, clock = clock.fn })
      local calls = 0
      s:handler("flaky", function()
        calls = calls + 1
        if calls == 1 then error("transient trouble") end
      end)
      s:every { hours = 1 }:config { job_id = "f", retry = 3, retry_delay = 60 }:run("flaky")
      s:start()
      clock.now = start + 3600 * S
      s:tick()
      H.wait(function() return (store:get_job("f").failure_count or 0) == 1 end, 10,
        "the failed run was not written")
      local retry_at = chronis.time.parse(store:get_job("f").next_run_time)
      assert.are.equal(start + 3660 * S, retry_at)
      clock.now = retry_at + 5 * S
      s:tick()
      H.wait(function() return #store:query_runs("f") == 2 end, 10, "the second run was not written")
      local node = s:node_id()
      H.stop_all()
      local runs = store:query_runs({ job_id = "f" })
      assert.are.same({ "ok", "error" }, { runs[1].outcome, runs[2].outcome })
      assert.are.equal(iso(retry_at + 5 * S), runs[1].started_at)
      assert.are.equal(iso(start + 3600 * S), runs[2].started_at)
      assert.truthy(runs[2].error_message:find("transient trouble", 1, true), runs[2].error_message)
      assert.is_nil(runs[1].error_message)
      for _, r in ipairs(runs) do
        assert.are.equal("f", r.job_id)
        assert.are.equal("flaky", r.func_name)
        assert.are.equal(node, r.node)
      end
      assert.are.same({ 2, 1 }, { runs[1].attempt, runs[2].attempt })
      assert.are.same({ runs[2].run_id }, run_ids(store, { job_id = "f", outcome = "error" }))
      local j = store:get_job("f")
      assert.are.equal("ok", j.last_outcome)
      assert.are.equal(1, j.failure_count)
      assert.are.equal(0, j.consecutive_failures)
      assert.truthy(j.last_error.message:find("transient trouble", 1, true))
      assert.are.equal(iso(retry_at + 5 * S), j.last_run_at)
      store:close()
      H.assert_quiet()
      -- The history is in the file, for the next process.
      local again = chronis.storage.sqlite(path)
      assert.are.same({ runs[1].run_id, runs[2].run_id }, run_ids(again, "f"))
      again:close()
    end)
  end)

  describe("with other connections", function()
    it("reports a database locked past busy_timeout as 'unavailable'", function()
      local path = fresh_path()
      local s = chronis.storage.sqlite(path, { busy_timeout = 100 })
      s:create_job({ job_id = "a", status = "pending" })
      -- Another process takes the write lock, says so, and keeps it a while.
      local mark = path .. ".locked"
      os.execute(("(echo 'BEGIN IMMEDIATE; DELETE FROM jobs;'; echo '.shell touch %s'; sleep 3; " ..
        "echo 'ROLLBACK;') | sqlite3 %s >/dev/null 2>&1 &"):format(sh_quote(mark), sh_quote(path)))
      local waited = 0
      while not exists(mark) and waited < 20 do
        chronis.sleep(0.05)
        waited = waited + 0.05
      end
      assert(exists(mark), "the sqlite3 shell did not take the lock")
      local ok, err = pcall(s.update_job, s, "a", { name = "x" })
      assert.is_false(ok)
      assert.are.equal("unavailable", err.code)
      assert_names(err.message, path, "locked", "100 ms")
      assert.are.equal("pending", s:get_job("a").status)
      assert.is_nil(s:get_job("a").name)
      -- Once the lock is released, writes go through again.
      local done
      for _ = 1, 100 do
        done = pcall(s.update_job, s, "a", { name = "x" })
        if done then break end
        chronis.sleep(0.1)
      end
      assert.is_true(done)
      assert.are.equal("x", s:get_job("a").name)
      s:close()
    end)

    it("wake a tenant-scoped scheduler for its own tenant's jobs only", function()
      -- Each write wakes the engines with its job: a scoped scheduler in
      -- this process ignores other tenants' jobs. Seen through a claim the
      -- scheduler makes while another process holds the write lock: with
      -- busy_timeout 0 it fails at once and counts as a store error.
      local H = require "support.engine_helper"
      local path = fresh_path()
      local store = chronis.storage.sqlite(path, { busy_timeout = 0, index_metadata = "tenant_id" })
      local s = H.scheduler({ storage = store, polling_interval = 120,
        filters = { ["metadata.tenant_id"] = "acme" } })
      s:handler("h", function() end)
      s:start()
      chronis.run_until(function() return false end, 0.3) -- polled; sleeps until the next poll
      local n = 0
      -- Creates a job of tenant due in 0.8 s, then holds the write lock
      -- from another process for 2 s while this one's loop runs 1.5 s.
      local function create_then_lock(id, tenant)
        s:once(chronis.time.now() + 800000):config { job_id = id, metadata = { tenant_id = tenant } }:run("h")
        n = n + 1
        local mark = path .. ".locked" .. n
        os.execute(("(echo 'BEGIN IMMEDIATE; DELETE FROM jobs;'; echo '.shell touch %s'; sleep 2; " ..
          "echo 'ROLLBACK;') | sqlite3 %s >/dev/null 2>&1 &"):format(sh_quote(mark), sh_quote(path)))
        H.wait(function() return exists(mark) end, 10, "the sqlite3 shell did not take the lock")
        chronis.run_until(function() return false end, 1.5)
        -- The lock is released: a write goes through again.
        H.wait(function() return pcall(store.update_job, store, id, {}) end, 10, "still locked")
      end
      create_then_lock("theirs", "beta")
      assert.are.equal(0, s:stats().store_errors, "woken by another tenant's job")
      create_then_lock("ours", "acme")
      assert(s:stats().store_errors > 0, "not woken by its own tenant's job")
      assert.are.equal("scheduled", store:get_job("theirs").status)
      H.stop_all()
      store:close()
    end)

    it("sees jobs written by another store on the same file", function()
      local path = fresh_path()
      local a, b = chronis.storage.sqlite(path), chronis.storage.sqlite(path)
      a:create_job({ job_id = "x", status = "scheduled", next_run_time = T0 })
      assert.are.equal(T0, b:next_due_time())
      assert.are.same({ "x" }, ids_of(b:claim_due_jobs({ now = T0, owner = "b" })))
      assert.are.same({}, a:claim_due_jobs({ now = T0, owner = "a" }))
      assert.are.equal("b", a:get_job("x").claimed_by)
      a:close()
      b:close()
    end)

    it("runs each of 5,000 jobs exactly once with two processes on one file", function()
      local N = 5000
      local dir = fresh_path("two")
      chronis.fs.mkdir_p(dir)
      local db = dir .. "/jobs.db"
      local store = chronis.storage.sqlite(db)
      local sched = chronis.scheduler({ storage = store })
      sched:handler("record", function() end) -- the workers' handler: no warning per create
      local now = chronis.time.format(chronis.time.now())
      for i = 1, N do
        sched:create_date_job({ job_id = ("once%05d"):format(i), func_name = "record", run_date = now })
      end
      assert.are.equal(N, store:count_jobs({ status = "scheduled" }))
      local child = ([[
        package.path = %q .. "lua/?.lua;" .. %q .. "lua/?/init.lua;" .. package.path
        package.cpath = %q .. "build/lua/?.so;" .. package.cpath
        local chronis = require "chronis"
        local db, out_path = arg[1], arg[2]
        local store = chronis.storage.sqlite(db)
        local sched = chronis.scheduler({ storage = store, max_workers = 20, max_queue_size = 100,
          polling_interval = 0.1 })
        local out, ran = assert(io.open(out_path, "w")), 0
        sched:handler("record", function(job)
          chronis.sleep(0.002) -- long enough for both processes to be claiming at once
          out:write(job.job_id, "\n")
          ran = ran + 1
        end)
        sched:start()
        local last = 0
        local ok = chronis.run_until(function()
          local t = chronis.time.now()
          if t - last < 50000 then return false end
          last = t
          return store:count_jobs() == 0
        end, 120)
        sched:stop()
        out:close()
        print(ok and "done" or "timeout", ran)
      ]]):format(ROOT, ROOT, ROOT)
      write_bytes(dir .. "/child.lua", child)
      local q = function(s) return sh_quote(dir .. "/" .. s) end
      local out, ok = sh(("cd %s && (lua5.4 child.lua %s %s > %s 2>&1 & lua5.4 child.lua %s %s > %s 2>&1 & wait)")
        :format(sh_quote(dir), q("jobs.db"), q("a.ids"), q("a.log"), q("jobs.db"), q("b.ids"), q("b.log")))
      assert(ok, out)
      local logs = (read_bytes(dir .. "/a.log") or "") .. (read_bytes(dir .. "/b.log") or "")
      assert.are.equal(2, select(2, logs:gsub("done%s+%d+", "")), logs)
      local seen, total = {}, 0
      for _, name in ipairs({ "a.ids", "b.ids" }) do
        for id in (read_bytes(dir .. "/" .. name) or ""):gmatch("[^\n]+") do
          total = total + 1
          assert(not seen[id], id .. " ran twice")
          seen[id] = true
        end
      end
      local distinct = 0
      for _ in pairs(seen) do distinct = distinct + 1 end
      assert.are.equal(N, total, logs)
      assert.are.equal(N, distinct)
      assert.are.equal(0, store:count_jobs())
      sched:stop()
      store:close()
    end)
    it("runs each job exactly once with three tenant-scoped processes on one file", function()
      -- Scopes overlap: one process takes tenants a and b, one a, one b;
      -- tenant c's jobs are nobody's and stay.
      local N = 3000
      local dir = fresh_path("scoped")
      chronis.fs.mkdir_p(dir)
      local db = dir .. "/jobs.db"
      local store = chronis.storage.sqlite(db, { index_metadata = "tenant_id" })
      local sched = chronis.scheduler({ storage = store })
      sched:handler("record", function() end) -- the workers' handler: no warning per create
      local now = chronis.time.format(chronis.time.now())
      local tenants = { "a", "b", "c" }
      for i = 1, N do
        sched:create_date_job({ job_id = ("once%05d"):format(i), func_name = "record", run_date = now,
          metadata = { tenant_id = tenants[i % 3 + 1] }, priority = i % 4 })
      end
      local child = ([[
        package.path = %q .. "lua/?.lua;" .. %q .. "lua/?/init.lua;" .. package.path
        package.cpath = %q .. "build/lua/?.so;" .. package.cpath
        local chronis = require "chronis"
        local db, out_path, scope = arg[1], arg[2], arg[3]
        local list = {}
        for t in scope:gmatch("[^,]+") do list[#list + 1] = t end
        local store = chronis.storage.sqlite(db, { index_metadata = "tenant_id" })
        local sched = chronis.scheduler({ storage = store, max_workers = 20, max_queue_size = 100,
          polling_interval = 0.1,
          filters = { ["metadata.tenant_id"] = #list == 1 and list[1] or { ["$in"] = list } } })
        local out, ran = assert(io.open(out_path, "w")), 0
        sched:handler("record", function(job)
          chronis.sleep(0.002)
          out:write(job.job_id, " ", job.metadata.tenant_id, "\n")
          ran = ran + 1
        end)
        -- Every process starts claiming once all three are ready: one that
        -- started late on a busy machine would find its jobs taken.
        local dir = out_path:match("^(.*)/")
        assert(io.open(out_path .. ".ready", "w")):close()
        assert(chronis.run_until(function()
          for _, p in ipairs({ "ab", "a", "b" }) do
            local f = io.open(dir .. "/" .. p .. ".ids.ready")
            if not f then return false end
            f:close()
          end
          return true
        end, 60), "the other processes did not get ready")
        sched:start()
        local last = 0
        local ok = chronis.run_until(function()
          local t = chronis.time.now()
          if t - last < 50000 then return false end
          last = t
          return store:count_jobs({ ["metadata.tenant_id"] = { ["$in"] = { "a", "b" } } }) == 0
        end, 120)
        sched:stop()
        out:close()
        print(ok and "done" or "timeout", ran)
      ]]):format(ROOT, ROOT, ROOT)
      write_bytes(dir .. "/child.lua", child)
      local q = function(s) return sh_quote(dir .. "/" .. s) end
      local cmd = "cd " .. sh_quote(dir) .. " && ("
      for _, p in ipairs({ { "ab", "a,b" }, { "a", "a" }, { "b", "b" } }) do
        cmd = cmd .. ("lua5.4 child.lua %s %s %s > %s 2>&1 & "):format(q("jobs.db"), q(p[1] .. ".ids"),
          sh_quote(p[2]), q(p[1] .. ".log"))
      end
      local out, ok = sh(cmd .. "wait)")
      assert(ok, out)
      local logs = ""
      for _, p in ipairs({ "ab", "a", "b" }) do logs = logs .. (read_bytes(dir .. "/" .. p .. ".log") or "") end
      assert.are.equal(3, select(2, logs:gsub("done%s+%d+", "")), logs)
      local seen, total, by = {}, 0, {}
      for _, p in ipairs({ "ab", "a", "b" }) do
        by[p] = 0
        for id, t in (read_bytes(dir .. "/" .. p .. ".ids") or ""):gmatch("(%S+) (%S+)\n") do
          total = total + 1
          assert(not seen[id], id .. " ran twice")
          assert(p:find(t, 1, true), ("%s of tenant %s ran in process %s"):format(id, t, p))
          seen[id] = true
          by[p] = by[p] + 1
        end
      end
      assert.are.equal(2 * N // 3, total, logs)
      assert(by.a > 0 and by.b > 0 and by.ab > 0, logs) -- every process took part
      assert.are.equal(N // 3, store:count_jobs())
      assert.are.equal(N // 3, store:count_jobs({ ["metadata.tenant_id"] = "c", status = "scheduled" }))
      sched:stop()
      store:close()
    end)
  end)

  describe("when the file is removed under a running scheduler", function()
    -- A scheduler in a child process runs 'slow' (which waits for 'after')
    -- on the file; this process removes the file, then creates 'after' at
    -- the same path with a store of its own.
    local CHILD = [[
      package.path = %q .. "lua/?.lua;" .. %q .. "lua/?/init.lua;" .. package.path
      package.cpath = %q .. "build/lua/?.so;" .. package.cpath
      local chronis = require "chronis"
      local db, out_path = arg[1], arg[2]
      local store = chronis.storage.sqlite(db)
      local sched = chronis.scheduler({ storage = store, polling_interval = 0.1 })
      local ran = {}
      local function mark(id)
        ran[id] = true
        local out = assert(io.open(out_path, "a"))
        out:write(id, "\n")
        out:close()
      end
      sched:handler("record", function(job) mark(job.job_id) end)
      sched:handler("slow", function(job)
        mark("slow started")
        for _ = 1, 300 do
          if ran.after then break end
          chronis.sleep(0.05)
        end
        mark(job.job_id)
      end)
      sched:create_date_job({ job_id = "slow", func_name = "slow",
        run_date = chronis.time.format(chronis.time.now()) })
      sched:start()
      local ok = chronis.run_until(function() return ran.after and ran.slow end, 20)
      chronis.sleep(0.5) -- the completions
      sched:stop()
      store:close()
      print(ok and "done" or "timeout")
    ]]

    local function wait_for(pred, what)
      for _ = 1, 600 do
        if pred() then return end
        chronis.sleep(0.05)
      end
      error("timed out waiting for " .. what)
    end

    it("reopens the path, says so once, and runs jobs created there", function()
      local dir = fresh_path("moved")
      chronis.fs.mkdir_p(dir)
      local db = dir .. "/jobs.db"
      write_bytes(dir .. "/child.lua", CHILD:format(ROOT, ROOT, ROOT))
      os.execute(("cd %s && lua5.4 child.lua %s %s > %s 2> %s &"):format(sh_quote(dir),
        sh_quote(db), sh_quote(dir .. "/ran"), sh_quote(dir .. "/out"), sh_quote(dir .. "/log")))
      local function ran() return read_bytes(dir .. "/ran") or "" end
      wait_for(function() return ran():find("slow started", 1, true) end, "'slow' to start")
      remove_db(db)
      local other = chronis.storage.sqlite(db)
      other:create_job({ job_id = "after", func_name = "record", status = "scheduled",
        trigger_type = "date", next_run_time = chronis.time.format(chronis.time.now()) })
      wait_for(function() return (read_bytes(dir .. "/out") or "") ~= "" end, "the child to end")
      local log = read_bytes(dir .. "/log") or ""
      assert.are.equal("done\n", read_bytes(dir .. "/out"), log)
      assert.is_truthy(ran():find("after\n", 1, true), log)
      -- 'after' ran and is gone from the new file; 'slow' was never in it.
      assert.are.equal(0, other:count_jobs())
      other:close()
      local removed = {}
      for line in log:gmatch("[^\n]+") do
        if line:find("file was removed or replaced", 1, true) then removed[#removed + 1] = line end
      end
      assert.are.equal(1, #removed, log)
      assert_names(removed[1], "error", db, "reopen")
      -- The job claimed from the old file is named when its completion
      -- finds nothing in the new one.
      local lost = log:match("[^\n]*'slow'[^\n]*") or ""
      assert_names(lost, "error", "not_found", "removed")
    end)

    it("fails requests as 'unavailable' while the path cannot be reopened, then recovers", function()
      local dir = fresh_path("gone")
      chronis.fs.mkdir_p(dir)
      local db = dir .. "/jobs.db"
      local s = chronis.storage.sqlite(db)
      s:create_job({ job_id = "old", status = "pending" })
      U.remove_tree(dir)
      -- The file is looked at again once a second at most.
      chronis.sleep(1.1)
      local ok, err = pcall(s.get_job, s, "old")
      assert.is_false(ok)
      assert.are.equal("unavailable", err.code, err.message)
      assert_names(err.message, db, "removed or replaced", "does not exist")
      chronis.fs.mkdir_p(dir)
      chronis.sleep(1.1)
      s:create_job({ job_id = "new", status = "pending" })
      assert.are.same({ "new" }, ids_of(s:query_jobs()))
      s:close()
      assert.are.equal("new", sqlite3(db, "SELECT job_id FROM jobs"))
    end)
  end)
end)
