-- The JSON file store (adapters/file.lua): the shared storage contract, with
-- chronis.fs and with the pure-Lua fallback, then what is the file store's
-- own: the file it writes, reopening, refusing bad files, crashes mid-write.
local chronis = require "chronis"
local U = require "support.util"
local J = require "support.jobs"

local function require_adapter(path)
  return assert(loadfile(path, "t"))()
end

local new_store = require_adapter("adapters/file.lua")

local sh_quote, read_bytes, write_bytes, exists = U.sh_quote, U.read, U.write, U.exists

local tmpdir, new_path = U.scratch("chronis-file")
-- A path in a folder of its own that does not exist yet.
local function fresh_path(name) return new_path("d") .. "/" .. (name or "jobs.json") end

-- Opens a store as a bare Lua host would, without chronis.fs.
local function open_without_fs(opts)
  local saved = chronis.fs
  chronis.fs = nil
  local ok, store = pcall(new_store, opts)
  chronis.fs = saved
  if not ok then error(store, 0) end
  return store
end

local function open_error(opts)
  return U.error_of(new_store, opts)
end

local T0 = "2025-01-15T10:00:00Z"

describe("file store", function()
  teardown(function() U.remove_tree(tmpdir) end)

  local function remove_store_file(store)
    os.remove(store.path)
  end

  require("support.storage_contract")("file", function()
    return new_store({ path = fresh_path() })
  end, { teardown = remove_store_file })

  require("support.storage_contract")("file (without chronis.fs)", function()
    return open_without_fs({ path = fresh_path() })
  end, { teardown = remove_store_file })

  do
    local path
    require("support.engine_contract")("file", function()
      path = fresh_path()
      return chronis.storage.lua(new_store({ path = path }), { name = "file" })
    end, { teardown = function() os.remove(path) end })
  end

  describe("opening", function()
    it("creates the file and its folders, holding an empty object", function()
      local path = fresh_path("a/b/jobs.json")
      local s = new_store({ path = path })
      assert.are.equal("{}\n", read_bytes(path))
      assert.are.same({}, s:query_jobs())
      s:close()
    end)

    -- chronis.storage.open: a path with & = % # ? spaces and unicode
    -- reaches the store as given, from options as is, from a URL %-encoded.
    it("opens a path with & = % # ? spaces and unicode from options and a %-encoded URL", function()
      local path = fresh_path("a&b=c%d #e?f é.json")
      local enc = U.url_encode(path, "/._-")
      local s = chronis.storage.open({ scheme = "file", path = path, auto_create = true })
      s:create_job({ job_id = "a", status = "scheduled", next_run_time = T0 })
      s:close()
      assert.are.equal("a", chronis.json.decode(read_bytes(path)).a.job_id)
      s = chronis.storage.open("file:" .. enc .. "?auto_create=false")
      assert.are.equal("a", s:get_job("a").job_id)
      s:close()
      local err = U.error_of(chronis.storage.open, "file:" .. path)
      assert.are.equal("invalid", err.code, err.message)
      assert.truthy(err.message:find("'%d ' in the path", 1, true), err.message)
    end)

    it("creates the file and its folders without chronis.fs too", function()
      local path = fresh_path("a b/it's/jobs.json")
      local s = open_without_fs({ path = path })
      s:create_job({ job_id = "a", status = "scheduled", next_run_time = T0 })
      s:close()
      assert.are.equal("a", chronis.json.decode(read_bytes(path)).a.job_id)
    end)

    it("with auto_create = false refuses a missing file, naming it, and creates nothing", function()
      for _, flag in ipairs({ false, "false" }) do
        local path = fresh_path("sub/jobs.json")
        local err = open_error({ path = path, auto_create = flag })
        assert.are.equal("not_found", err.code)
        assert.truthy(err.message:find(path, 1, true), err.message)
        assert.is_false(exists(path))
        assert.is_nil(chronis.fs.stat(path:match("^(.*)/")), "the folder was created")
      end
    end)

    it("with auto_create = false opens an existing file", function()
      local path = fresh_path()
      new_store({ path = path }):close()
      local s = new_store({ path = path, auto_create = "false" })
      s:create_job({ job_id = "a", status = "scheduled" })
      s:close()
    end)

    it("refuses a missing path, unknown options and a bad auto_create, naming them", function()
      assert.are.equal("invalid", open_error({}).code)
      local err = open_error({ path = fresh_path(), bogus = 1 })
      assert.are.equal("invalid", err.code)
      assert.truthy(err.message:find("bogus", 1, true), err.message)
      new_store({ path = fresh_path(), adapter_timeout = "5" }):close() -- the bridge's, passed along
      err = open_error({ path = fresh_path(), auto_create = "maybe" })
      assert.are.equal("invalid", err.code)
      assert.truthy(err.message:find("auto_create", 1, true), err.message)
    end)

    it("refuses a path that is a folder with 'unavailable'", function()
      local path = fresh_path("dir")
      chronis.fs.mkdir_p(path)
      local err = open_error({ path = path })
      assert.are.equal("unavailable", err.code)
      assert.truthy(err.message:find(path, 1, true), err.message)
    end)

    describe("refuses a file that is not a JSON object of jobs, leaving it untouched:", function()
      local cases = {
        { "an empty file", "" },
        { "white space", "  \n" },
        { "truncated JSON", '{\n"a":{"job_id":"a","status":"sched' },
        { "a JSON array", "[]" },
        { "an array of jobs", '[{"job_id":"a","status":"scheduled"}]' },
        { "null", "null" },
        { "a string", '"jobs"' },
        { "trailing text", '{}\n{}' },
        { "a job that is not an object", '{"a": 1}' },
        { "a job without status", '{"a": {"job_id": "a"}}' },
        { "a job with an unknown status", '{"a": {"job_id": "a", "status": "done"}}' },
        { "a job under another id", '{"a": {"job_id": "b", "status": "scheduled"}}' },
        { "a job with a bad time", '{"a": {"job_id": "a", "status": "scheduled", "next_run_time": "soon"}}' },
      }
      for _, case in ipairs(cases) do
        it(case[1], function()
          local path = fresh_path()
          chronis.fs.mkdir_p(path:match("^(.*)/"))
          write_bytes(path, case[2])
          local err = open_error({ path = path })
          assert.are.equal("invalid", err.code, err.message)
          assert.truthy(err.message:find("invalid store file '" .. path .. "'", 1, true), err.message)
          assert.are.equal(case[2], read_bytes(path))
        end)
      end
    end)

    it("reads a hand-written file: any ISO form, job_id left to the key", function()
      local path = fresh_path()
      chronis.fs.mkdir_p(path:match("^(.*)/"))
      local text = '{"a": {"status": "scheduled", "next_run_time": "2025-01-15T11:00:00+01:00"},\n'
        .. ' "b": {"job_id": "b", "status": "paused", "metadata": {"n": 1}}}'
      write_bytes(path, text)
      local s = new_store({ path = path })
      assert.are.same({ job_id = "a", status = "scheduled", next_run_time = T0 }, s:get_job("a"))
      assert.are.same({ "a", "b" }, (function()
        local ids = {}
        for i, j in ipairs(s:query_jobs()) do ids[i] = j.job_id end
        return ids
      end)())
      assert.are.equal(1, s:count_jobs({ ["metadata.n"] = 1 }))
      assert.are.equal(text, read_bytes(path), "the file changed before any write")
      s:close()
    end)

    it("removes the temp files of writes cut short by a crash, and only those", function()
      local path = fresh_path()
      new_store({ path = path }):close()
      local dir = path:match("^(.*)/")
      local stale = { "jobs.json.tmp", "jobs.json.tmp.4242" }
      local kept = { "jobs.json.tmpx", "jobs.json.tmp.12a", "other.json.tmp.1", "jobs.json.bak" }
      for _, name in ipairs(stale) do write_bytes(dir .. "/" .. name, "{") end
      for _, name in ipairs(kept) do write_bytes(dir .. "/" .. name, "{") end
      new_store({ path = path }):close()
      for _, name in ipairs(stale) do assert.is_false(exists(dir .. "/" .. name), name) end
      for _, name in ipairs(kept) do assert.is_true(exists(dir .. "/" .. name), name) end
    end)
  end)

  describe("the file", function()
    local full = J.full({ empty = {},
      note = 'quote " backslash \\ tab \t newline \n ünïcode 日本 \1 control' })

    it("survives a reopen with every field, unknown ones included, and their number types", function()
      local path = fresh_path()
      local s = new_store({ path = path })
      s:create_job(full)
      s:create_job({ job_id = "later", status = "scheduled", next_run_time = "2025-01-16T00:00:00Z" })
      s:create_job({ job_id = "never", status = "pending" })
      s:update_job("later", { metadata = { tenant_id = "globex" } })
      s:delete_job("never")
      local before = s:query_jobs()
      s:close()

      local r = new_store({ path = path })
      local after = r:query_jobs()
      assert.are.same(before, after)
      local got = r:get_job(full.job_id)
      for k, v in pairs(full) do assert.are.same(v, got[k], k) end
      for _, f in ipairs({ "max_retries", "priority", "attempt", "big" }) do
        assert.are.equal("integer", math.type(got[f]), f)
      end
      assert.are.equal("float", math.type(got.ratio))
      assert.are.equal("float", math.type(got.args[3]))
      assert.are.equal(1, r:count_jobs({ ["metadata.tenant_id"] = "globex" }))
      assert.is_nil(r:get_job("never"))
      r:close()
    end)

    it("is a JSON object of the jobs by job_id, one job per line, ordered by id", function()
      local path = fresh_path()
      local s = new_store({ path = path })
      for _, id in ipairs({ "b", "c", "a" }) do
        s:create_job({ job_id = id, status = "scheduled", next_run_time = T0 })
      end
      local text = read_bytes(path)
      local data = chronis.json.decode(text)
      for _, j in ipairs(s:query_jobs()) do assert.are.same(j, data[j.job_id]) end
      local ids = {}
      for id in text:gmatch('\n"(%w)":{') do ids[#ids + 1] = id end
      assert.are.same({ "a", "b", "c" }, ids)
      assert.are.equal(5, select(2, text:gsub("\n", "\n")))
      s:close()
    end)

    it("keeps updated_at increasing after a reopen, even when the clock is behind the file", function()
      local path = fresh_path()
      chronis.fs.mkdir_p(path:match("^(.*)/"))
      write_bytes(path, '{"a": {"job_id": "a", "status": "paused", "updated_at": "2999-01-01T00:00:00Z"}}')
      local s = new_store({ path = path })
      local u = s:update_job("a", { status = "scheduled" })
      assert.is_true(chronis.time.parse(u.updated_at) > chronis.time.parse("2999-01-01T00:00:00Z"))
      s:close()
    end)

    it("is never overwritten when someone else changed it; the store says why", function()
      local path = fresh_path()
      local a = new_store({ path = path })
      a:create_job({ job_id = "a1", status = "scheduled", next_run_time = T0 })
      local b = new_store({ path = path })
      b:create_job({ job_id = "b1", status = "scheduled", next_run_time = T0 })
      local theirs = read_bytes(path)
      local ok, err = pcall(a.create_job, a, { job_id = "a2", status = "scheduled" })
      assert.is_false(ok)
      assert.are.equal("unavailable", err.code)
      assert.truthy(err.message:find("single-process", 1, true), err.message)
      assert.are.equal(theirs, read_bytes(path))
      assert.is_nil(a:get_job("a2"))
      a:close()
      b:close()
    end)

    it("and memory stay the same when a write fails", function()
      local path = fresh_path()
      local real, failing = chronis.fs, false
      local fake = setmetatable({
        write_atomic = function(p, data)
          if failing then error(chronis.error("invalid", "cannot write: disk full")) end
          return real.write_atomic(p, data)
        end,
      }, { __index = real })
      chronis.fs = fake
      local ok, s = pcall(new_store, { path = path })
      chronis.fs = real
      assert(ok, s)
      s:create_job({ job_id = "a", status = "scheduled", next_run_time = "2025-01-15T09:00:00Z" })
      local a = s:get_job("a")
      local text = read_bytes(path)
      failing = true
      local attempts = {
        function() s:create_job({ job_id = "b", status = "scheduled" }) end,
        function() s:update_job("a", { name = "x" }) end,
        function() s:compare_and_swap_job("a", { status = "scheduled" }, { status = "paused" }) end,
        function() s:delete_job("a") end,
        function() s:claim_due_jobs({ now = T0, limit = 5, owner = "n", lease_seconds = 30 }) end,
      }
      for i, attempt in ipairs(attempts) do
        local aok, err = pcall(attempt)
        assert.is_false(aok, "attempt " .. i)
        assert.are.equal("unavailable", err.code)
        assert.truthy(err.message:find("disk full", 1, true), err.message)
        assert.are.same(a, s:get_job("a"), "attempt " .. i)
        assert.is_nil(s:get_job("b"))
        assert.are.same({ "a" }, { s:query_jobs()[1].job_id })
        assert.are.equal(text, read_bytes(path))
      end
      failing = false
      s:create_job({ job_id = "c", status = "pending" })
      s:close()
      local r = new_store({ path = path })
      assert.are.same(a, r:get_job("a"))
      assert.are.equal(2, r:count_jobs())
      r:close()
    end)
  end)

  describe("run history", function()
    local now = chronis.time.now()
    local function ago(seconds) return chronis.time.format(now - seconds * 1000000) end
    local function run(id, job_id, started, fields)
      local r = { run_id = id, job_id = job_id, outcome = "ok", started_at = started or ago(60) }
      for k, v in pairs(fields or {}) do r[k] = v end
      return r
    end
    local function run_ids(store, filters)
      local out = {}
      for i, r in ipairs(store:query_runs(filters)) do out[i] = r.run_id end
      return out
    end

    -- A store whose file writes can be made to fail; writes counts them.
    local function failing_store(opts)
      local real = chronis.fs
      local ctl = { failing = false, writes = 0 }
      chronis.fs = setmetatable({
        write_atomic = function(p, data)
          if ctl.failing then error(chronis.error("invalid", "cannot write: disk full")) end
          ctl.writes = ctl.writes + 1
          return real.write_atomic(p, data)
        end,
      }, { __index = real })
      local ok, s = pcall(new_store, opts)
      chronis.fs = real
      assert(ok, s)
      return s, ctl
    end

    it("keeps runs in the store file under \"\", by job and newest first, across a reopen", function()
      local path = fresh_path()
      local s = new_store({ path = path })
      s:create_job({ job_id = "a", status = "scheduled", next_run_time = T0 })
      s:record_runs({ run("b1", "b", ago(50)), run("a1", "a", ago(40)), run("a2", "a", ago(30),
        { outcome = "error", error_code = "handler", error_message = "boom", metadata = { t = "x" } }) })
      local before = s:query_runs()
      s:close()
      local text = read_bytes(path)
      local data = chronis.json.decode(text)
      assert.are.equal("a", data.a.job_id)
      local in_file = {}
      for i, r in ipairs(data[""]) do in_file[i] = r.run_id end
      assert.are.same({ "a2", "a1", "b1" }, in_file)
      assert.truthy(text:find('\n"":%[\n{[^\n]*"a2"[^\n]*},\n{[^\n]*"a1"'), text)
      local r = new_store({ path = path })
      assert.are.same(before, r:query_runs())
      assert.are.same({ "a2", "a1", "b1" }, run_ids(r))
      assert.are.equal(1, r:count_jobs())
      r:close()
    end)

    it("writes a completion and its run in one write; when it fails, neither is kept", function()
      local path = fresh_path()
      local s, ctl = failing_store({ path = path })
      s:create_job({ job_id = "c", status = "running", claimed_by = "me", lease_until = T0 })
      local text = read_bytes(path)
      local item = { job_id = "c", owner = "me", run = run("r1", "c"),
        updates = { status = "scheduled", claimed_by = chronis.json.null, last_outcome = "ok" } }
      ctl.failing = true
      local ok, err = pcall(s.complete_jobs, s, { item })
      assert.is_false(ok)
      assert.are.equal("unavailable", err.code)
      assert.are.equal("running", s:get_job("c").status)
      assert.are.same({}, s:query_runs())
      assert.are.equal(text, read_bytes(path))
      ctl.failing, ctl.writes = false, 0
      assert.is_true(s:complete_jobs({ item })[1].ok)
      assert.are.equal(1, ctl.writes)
      local data = chronis.json.decode(read_bytes(path))
      assert.are.equal("ok", data.c.last_outcome)
      assert.are.equal("r1", data[""][1].run_id)
      s:close()
    end)

    it("keeps memory as the file when a write of runs fails", function()
      local s, ctl = failing_store({ path = fresh_path() })
      s:record_runs({ run("r1", "a") })
      ctl.failing = true
      local ok, err = pcall(s.record_runs, s, { run("r2", "a"), run("r3", "b") })
      assert.is_false(ok)
      assert.are.equal("unavailable", err.code)
      assert.are.same({ "r1" }, run_ids(s))
      s:close()
    end)

    it("takes history and history_days from its options, URL strings too", function()
      local s = new_store({ path = fresh_path(), history = 2, history_days = "1" })
      s:record_runs({ run("r1", "a", ago(30)), run("r2", "a", ago(20)), run("r3", "a", ago(10)),
        run("old", "b", ago(2 * 86400)), run("fresh", "b", ago(3600)) })
      assert.are.same({ "r3", "r2" }, run_ids(s, "a"))
      assert.are.same({ "fresh" }, run_ids(s, "b"))
      s:close()
      local path = fresh_path()
      s = chronis.storage.open("file:" .. path .. "?history=1")
      s:record_runs({ run("u1", "a", ago(20)), run("u2", "a", ago(10)) })
      assert.are.same({ "u2" }, run_ids(s, "a"))
      s:close()
      s = new_store({ path = fresh_path(), history = "0" })
      assert.are.equal(1, s:record_runs({ run("k1", "a", nil, { keep = 1 }), run("n1", "b") }))
      assert.are.same({ "k1" }, run_ids(s))
      s:close()
    end)

    it("refuses bad history options and names them among its options", function()
      for _, bad in ipairs({ { "history", "-1" }, { "history", "lots" }, { "history_days", 0 },
        { "history_days", "1.5" } }) do
        local err = open_error({ path = fresh_path(), [bad[1]] = bad[2] })
        assert.are.equal("invalid", err.code)
        assert.truthy(err.message:find("option '" .. bad[1] .. "'", 1, true), err.message)
      end
      local err = open_error({ path = fresh_path(), histroy = 5 })
      assert.truthy(err.message:find("unknown option 'histroy'; did you mean 'history'?", 1, true), err.message)
    end)

    it("drops runs past history_days at open, and from the file at the next write", function()
      local path = fresh_path()
      chronis.fs.mkdir_p(path:match("^(.*)/"))
      local text = chronis.json.encode({ [""] = { run("old", "a", ago(30 * 86400)), run("new", "b") } })
      write_bytes(path, text)
      local s = new_store({ path = path })
      assert.are.same({ "new" }, run_ids(s))
      assert.are.equal(text, read_bytes(path), "the file changed before any write")
      s:create_job({ job_id = "x", status = "pending" })
      local runs = chronis.json.decode(read_bytes(path))[""]
      assert.are.equal(1, #runs)
      assert.are.equal("new", runs[1].run_id)
      s:close()
    end)

    describe("refuses a file whose runs are not an array of runs, naming them:", function()
      for _, case in ipairs({
        { "an object", '{"": {"a": 1}}', "must be an array" },
        { "a run without job_id", '{"": [{"run_id": "r", "outcome": "ok", "started_at": "2025-01-15T10:00:00Z"}]}',
          "run 1: run 'r': field 'job_id'" },
        { "a run with an unknown outcome", '{"": [{"run_id": "r", "job_id": "a", "outcome": "fine", '
          .. '"started_at": "2025-01-15T10:00:00Z"}]}', "run 1: run 'r': invalid field 'outcome'" },
      }) do
        it(case[1], function()
          local path = fresh_path()
          chronis.fs.mkdir_p(path:match("^(.*)/"))
          write_bytes(path, case[2])
          local err = open_error({ path = path })
          assert.are.equal("invalid", err.code, err.message)
          assert.truthy(err.message:find("invalid store file '" .. path .. "'", 1, true), err.message)
          assert.truthy(err.message:find(case[3], 1, true), err.message)
          assert.are.equal(case[2], read_bytes(path))
        end)
      end
    end)

    it("gets a run from the engine for each run: a job that fails, then succeeds", function()
      local H = require "support.engine_helper"
      local path = fresh_path()
      local store = chronis.storage.lua(new_store({ path = path }), { name = "file" })
      -- The store prunes runs by the wall clock: the fake one starts there.
      local clock = H.fake_clock(chronis.time.now())
      local s = H.scheduler({ storage = store, clock = clock.fn })
      local calls = 0
      s:handler("flaky", function()
        calls = calls + 1
        if calls == 1 then error("transient trouble") end
      end)
      s:every { hours = 1 }:config { job_id = "f", retry = 3, retry_delay = 60, metadata = { team = "ops" } }
        :run("flaky")
      s:start()
      clock:advance(3600)
      s:tick()
      H.wait(function() return #store:query_runs("f") == 1 end, 10, "the failed run was not recorded")
      clock.now = chronis.time.parse(store:get_job("f").next_run_time) + 5 * H.S
      s:tick()
      H.wait(function() return #store:query_runs("f") == 2 end, 10, "the successful run was not recorded")
      H.stop_all()
      local runs = store:query_runs("f")
      assert.are.same({ "ok", "error" }, { runs[1].outcome, runs[2].outcome })
      assert.truthy(runs[2].error_message:find("transient trouble", 1, true), runs[2].error_message)
      assert.are.equal("flaky", runs[1].func_name)
      assert.are.same({ team = "ops" }, runs[1].metadata)
      assert.are.same({ "f" }, { runs[1].job_id })
      local j = store:get_job("f")
      assert.are.equal("ok", j.last_outcome)
      assert.are.equal(1, j.failure_count)
      assert.are.equal(0, j.consecutive_failures)
      assert.truthy(j.last_error.message:find("transient trouble", 1, true))
      assert.are.equal(runs[1].run_id, store:query_runs({ job_id = "f", outcome = "ok" })[1].run_id)
      store:close()
      -- The runs are in the file with the job.
      local r = new_store({ path = path })
      assert.are.same({ runs[1].run_id, runs[2].run_id }, run_ids(r, "f"))
      assert.are.equal(1, r:get_job("f").failure_count)
      r:close()
      H.assert_quiet()
    end)
  end)

  describe("killed with SIGKILL while writing", function()
    -- A child process creates jobs j000001, j000002, ... in a loop (each
    -- create rewrites the whole file) until it is killed after a random
    -- delay. The file must then hold exactly the jobs j000001..j00000k,
    -- each complete, for some k no smaller than the last round's.
    local CHILD = [[
      package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
      package.cpath = "build/lua/?.so;" .. package.cpath
      local chronis = require "chronis"
      if arg[2] == "fallback" then chronis.fs = nil end
      local store = assert(loadfile("adapters/file.lua", "t"))()({ path = arg[1] })
      local n = store:count_jobs()
      io.open(arg[3], "w"):close() -- ready: the kill may come now
      local pad = string.rep("x", 300)
      while true do
        n = n + 1
        store:create_job({ job_id = ("j%06d"):format(n), status = "scheduled",
          next_run_time = n * 1000000, kwargs = { n = n, pad = pad } })
      end
    ]]

    local ROUNDS = 10

    local function check_file(path, min)
      local text = read_bytes(path)
      assert(text and text:match("^{"), "the store file is missing or not an object")
      local ok, data = pcall(chronis.json.decode, text)
      assert(ok, "the store file is not valid JSON after the kill: " .. tostring(data))
      local k = 0
      for _ in pairs(data) do k = k + 1 end
      for i = 1, k do
        local j = data[("j%06d"):format(i)]
        assert(j, ("the file holds %d jobs but not j%06d: not a prefix"):format(k, i))
        assert(j.kwargs and j.kwargs.n == i and #j.kwargs.pad == 300, "job " .. i .. " is incomplete")
      end
      assert(k >= min, ("jobs were lost: %d after %d"):format(k, min))
      return k
    end

    it("leaves the old file or the new one, never a part of one", function()
      local path = fresh_path()
      local dir = path:match("^(.*)/")
      chronis.fs.mkdir_p(dir)
      local child, errlog = dir .. "/child.lua", dir .. "/child.err"
      write_bytes(child, CHILD)
      local k, grew = 0, 0
      -- Rounds alternate chronis.fs.write_atomic and the fallback. About a
      -- quarter of the kills land between the temp file's creation and the
      -- rename; the others between writes.
      for round = 1, ROUNDS do
        local mode = round % 2 == 0 and "fallback" or "fs"
        -- The delay counts from when the child opened the store, however
        -- long its start took on a busy machine.
        local delay = 0.05 + math.random() * 0.3
        local ready = dir .. "/child.ready"
        os.remove(ready)
        -- The group's stderr hides the shell's "Killed" notice.
        local cmd = ("{ lua5.4 %s %s %s %s 2>%s & pid=$!; "
          .. "while [ ! -e %s ] && kill -0 $pid 2>/dev/null; do sleep 0.01; done; "
          .. "sleep %.3f; kill -9 $pid; wait $pid; echo $?; } 2>/dev/null")
          :format(sh_quote(child), sh_quote(path), mode, sh_quote(ready), sh_quote(errlog),
                  sh_quote(ready), delay)
        local p = assert(io.popen(cmd))
        local status = tonumber(p:read("a"))
        p:close()
        assert(status == 137, ("round %d: the child ended with status %s before the kill: %s"):format(
          round, tostring(status), read_bytes(errlog) or ""))
        local now = check_file(path, k)
        if now > k then grew = grew + 1 end
        k = now
      end
      assert(grew >= ROUNDS // 2,
        ("the child wrote in only %d of %d rounds: the test proves little"):format(grew, ROUNDS))
      local s = new_store({ path = path })
      assert.are.equal(k, s:count_jobs())
      s:close()
      for _, e in ipairs(chronis.fs.list(dir)) do
        assert.is_nil(e.name:match("^jobs%.json%.tmp"), "stale temp file left after reopen: " .. e.name)
      end
    end)
  end)
end)
