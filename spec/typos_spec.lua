-- Misspelt names, wherever a user passes a table of options or fields:
-- each unknown key is named with the closest valid name when one is close
-- ("did you mean"), and every unknown key of one call is reported at once.
-- The host's command line has its own in spec/host_cli_spec.lua.
local chronis = require "chronis"
local U = require "support.util"

local assert_error = U.assert_error_naming

describe("misspelt names", function()
  local dir

  before_each(function() dir = U.tmpdir("chronis-typos") end)
  after_each(function() U.remove_tree(dir) end)

  describe("chronis.suggest and chronis.unknown_keys", function()
    local core = require "chronis.core"

    it("suggest the closest name only when it is close", function()
      assert.are.equal("max_workers", core.suggest("max_worker", { "max_workers", "max_queue_size" }))
      assert.are.equal("check", core.suggest("chek", { "run", "check", "migrate" }))
      assert.are.equal("storage", core.suggest("Storge", { "storage", "scripts" }))
      assert.are.equal("timeout", core.suggest("timoeut", { "timeout" })) -- a swap counts one
      assert.is_nil(core.suggest("frobnicate", { "run", "check", "migrate" }))
      assert.is_nil(core.suggest("x", { "db" }))
    end)

    it("word one key or several, sorted, in one message", function()
      assert.are.equal("unknown scheduler option 'max_worker'; did you mean 'max_workers'?",
        core.unknown_keys("scheduler option", { "max_worker" }, { "max_workers", "storage" }))
      assert.are.equal("unknown scheduler option 'zzz' (expected max_workers, storage)",
        core.unknown_keys("scheduler option", { "zzz" }, { "max_workers", "storage" }))
      assert.are.equal("unknown options 'a' (did you mean 'ab'?), 'storge' (did you mean 'storage'?) "
        .. "and 'zzz'; expected ab, storage",
        core.unknown_keys("option", { "zzz", "storge", "a" }, { "ab", "storage" }))
      assert.is_nil(core.unknown_keys("option", {}, { "ab" }))
    end)
  end)

  it("scheduler options", function()
    local err = assert_error("invalid", nil, chronis.scheduler, { max_worker = 3 })
    assert.are.equal("unknown scheduler option 'max_worker'; did you mean 'max_workers'?", err.message)
    err = assert_error("invalid", nil, chronis.scheduler, { max_worker = 3, polling_interva = 1, on_sucess = print })
    assert.are.equal("unknown scheduler options 'max_worker' (did you mean 'max_workers'?), "
      .. "'on_sucess' (did you mean 'on_success'?) and 'polling_interva' (did you mean 'polling_interval'?)",
      err.message)
    err = assert_error("invalid", nil, chronis.scheduler, { zzz = 1 })
    assert.truthy(err.message:find("unknown scheduler option 'zzz' (expected storage, lock, polling_interval",
      1, true), err.message)
  end)

  describe("jobs", function()
    local s
    before_each(function()
      s = chronis.scheduler {}
      s:handler("f", function() end)
    end)
    after_each(function() s:close() end)

    it("builder config: every unknown key at once", function()
      local err = assert_error("invalid", nil, function() s:every { minutes = 5 }:config { retri = 3, timout = 1 } end)
      assert.are.equal("unknown config options 'retri' (did you mean 'retry'?) and 'timout' (did you mean "
        .. "'timeout'?)", err.message)
      assert.are.equal(0, s:count_jobs())
    end)

    it("trigger keys of the builder", function()
      local err = assert_error("invalid", nil, function() s:every { minuts = 5 }:run("f") end)
      assert.truthy(err.message:find("unknown interval key 'minuts'; did you mean 'minutes'?", 1, true), err.message)
      err = assert_error("invalid", nil, function() s:on { hours = 9, minut = 0 }:run("f") end)
      assert.truthy(err.message:find("unknown cron fields 'hours' (did you mean 'hour'?) and 'minut' (did you "
        .. "mean 'minute'?)", 1, true), err.message)
    end)

    it("job fields on create: near misses are refused, fields of one's own kept", function()
      local err = assert_error("invalid", nil, s.create_interval_job, s,
        { func_name = "f", seconds = 5, max_retry = 3, timout_seconds = 2 })
      assert.are.equal("unknown job fields 'max_retry' (did you mean 'max_retries'?) and 'timout_seconds' "
        .. "(did you mean 'timeout_seconds'?) (fields of your own belong in metadata, kwargs or args)",
        err.message)
      err = assert_error("invalid", nil, s.create_cron_job, s, { func_name = "f", hour = 1, minutes = 5 })
      assert.truthy(err.message:find("unknown job field 'minutes'; did you mean 'minute'?", 1, true), err.message)
      assert.are.equal(0, s:count_jobs())
      local job = s:create_interval_job { func_name = "f", seconds = 5, customer_reference = "c-1" }
      assert.are.equal("c-1", job.customer_reference)
    end)

    it("job fields on update", function()
      s:create_interval_job { job_id = "a", func_name = "f", seconds = 5 }
      local err = assert_error("invalid", nil, s.update_job, s, "a", { priorty = 3, metdata = {} })
      assert.are.equal("unknown job fields 'metdata' (did you mean 'metadata'?) and 'priorty' (did you mean "
        .. "'priority'?) (fields of your own belong in metadata, kwargs or args)", err.message)
      assert.are.equal(5, s:get_job("a").priority)
    end)

    it("filters", function()
      local err = assert_error("invalid", nil, s.query_jobs, s, { statuss = "scheduled", trigger_typ = "cron" })
      assert.are.equal("unknown filters 'statuss' (did you mean 'status'?) and 'trigger_typ' (did you mean "
        .. "'trigger_type'?)", err.message)
      err = assert_error("invalid", nil, s.count_jobs, s, { zzz = 1 })
      assert.truthy(err.message:find("unknown filter 'zzz' (expected status, trigger_type", 1, true), err.message)
    end)
  end)

  describe("store options", function()
    it("of a URL, every one at once", function()
      local err = assert_error("invalid", nil, chronis.storage.open,
        "sqlite:" .. dir .. "/x.db?busy_timout=5&synchronus=off")
      assert.truthy(err.message:find("unknown options 'busy_timout' (did you mean 'busy_timeout'?) and "
        .. "'synchronus' (did you mean 'synchronous'?)", 1, true), err.message)
      err = assert_error("invalid", nil, chronis.storage.open, "sqlite:" .. dir .. "/x.db?busy_timout=5")
      assert.truthy(err.message:find("unknown option 'busy_timout'; did you mean 'busy_timeout'?", 1, true),
        err.message)
      assert.is_nil(io.open(dir .. "/x.db"), "a refused URL still opened the file")
      err = assert_error("invalid", nil, chronis.storage.open, "redis://127.0.0.1:1/0?prefx=a&timout=1")
      assert.truthy(err.message:find("unknown options 'prefx' (did you mean 'prefix'?) and 'timout' (did you "
        .. "mean 'timeout'?)", 1, true), err.message)
      err = assert_error("invalid", nil, chronis.storage.open,
        "postgres://u:secret@127.0.0.1:1/db?sslmod=require&tabel=x")
      assert.truthy(err.message:find("unknown options 'sslmod' (did you mean 'sslmode'?) and 'tabel' (did you "
        .. "mean 'table'?)", 1, true), err.message)
      assert.is_nil(err.message:find("secret", 1, true), err.message)
    end)

    it("of an option table and of the stores written in Lua", function()
      local err = assert_error("invalid", nil, chronis.storage.open, { scheme = "sqlite", path = dir .. "/y.db",
        cache_siz = 1 })
      assert.truthy(err.message:find("unknown option 'cache_siz'; did you mean 'cache_size'?", 1, true), err.message)
      err = assert_error("invalid", nil, chronis.storage.open, "file:" .. dir .. "/j.json?auto_creat=false&pth=x")
      assert.truthy(err.message:find("file store: unknown options 'auto_creat' (did you mean 'auto_create'?) and "
        .. "'pth' (did you mean 'path'?)", 1, true), err.message)
      err = assert_error("invalid", nil, chronis.storage.open, "memory:?a=1&b=2")
      assert.truthy(err.message:find("unknown options 'a' and 'b' (memory: has none)", 1, true), err.message)
    end)

    it("suggests the scheme a file path needs", function()
      local err = assert_error("invalid", nil, chronis.storage.open, dir .. "/jobs.db")
      assert.truthy(err.message:find("did you mean 'sqlite:" .. dir .. "/jobs.db'?", 1, true), err.message)
      err = assert_error("invalid", nil, chronis.storage.open, "jobs.json")
      assert.truthy(err.message:find("did you mean 'file:jobs.json'?", 1, true), err.message)
      U.write(dir .. "/existing", "")
      err = assert_error("invalid", nil, chronis.storage.open, dir .. "/existing")
      assert.truthy(err.message:find("did you mean 'sqlite:" .. dir .. "/existing'?", 1, true), err.message)
      err = assert_error("invalid", nil, chronis.storage.open, "sqlit:x.db")
      assert.truthy(err.message:find("unknown scheme 'sqlit'; did you mean 'sqlite:'?", 1, true), err.message)
    end)
  end)

  it("log options", function()
    local err = assert_error("invalid", nil, chronis.set_log, { levl = "debug" })
    assert.are.equal("unknown log option 'levl'; did you mean 'level'?", err.message)
  end)

  it("http.request options", function()
    local err = assert_error("invalid", nil, chronis.http.request, { url = "http://127.0.0.1:9/", timout = 1,
      folow_redirects = true })
    assert.truthy(err.message:find("unknown options 'folow_redirects' (did you mean 'follow_redirects'?) and "
      .. "'timout' (did you mean 'timeout'?)", 1, true), err.message)
  end)
end)
