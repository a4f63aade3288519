-- The first contact with a network store, as the user of the host sees
-- it: when it takes more than a second the log says where chronis is
-- connecting to and then, every few seconds, how it goes; SIGINT or
-- SIGTERM during the wait ends it with a clear message; an error of the
-- store names the app's line, without a traceback into chronis.
local P = require "support.process"
local U = require "support.util"
local silent_server = require "support.silent_server"

-- An app whose first store call (line 4) waits for the store at `url`.
local function app(url)
  return ([[
local chronis = require "chronis"
local sched = chronis.scheduler { storage = %q, polling_interval = 0.5 }
sched:handler("hello", function() end)
sched:every { minutes = 1 }:config { job_id = "x", if_exists = "skip" }:run("hello")
io.stderr:write("APP READY\n")
sched:start()
]]):format(url)
end

describe("connecting to a store", function()
  local p, silent
  after_each(function()
    if p then p:close() end
    if silent then silent:stop() end
    p, silent = nil, nil
  end)

  -- Starts the host on the app, waits for the first two progress lines.
  local function waiting(url, shown)
    p = P.host("run app.lua", { ["app.lua"] = app(url) })
    assert.is_true(p:wait_for("connecting to " .. shown .. " ..."), p:stderr())
    assert.is_true(p:wait_for("still connecting to " .. shown .. " after"), p:stderr())
    return p:stderr()
  end

  local function assert_interrupted(signal, what)
    p:signal(signal)
    local rc = p:wait()
    local err = p:stderr()
    assert.are.equal(1, rc, err)
    assert.truthy(err:find(("chronis: app.lua did not finish loading: app.lua:4: interrupted: SIG%s "
      .. "received while waiting for %s"):format(signal, what), 1, true), err)
    assert.is_nil(err:find("traceback", 1, true), err)
    assert.is_nil(err:find("APP READY", 1, true), err)
  end

  describe("Redis", function()
    it("on a port nobody listens on: says so after a second, then where it is; SIGINT ends the wait", function()
      local port = U.free_port()
      local shown = "redis://127.0.0.1:" .. port
      local err = waiting(shown .. "?queue_timeout=600", shown)
      local line = err:match("still connecting to [^\n]*")
      assert.truthy(line:find("attempt %d+"), line)
      assert.truthy(line:find("last error: Connection refused", 1, true), line)
      assert_interrupted("INT", "get_job on the redis store")
    end)

    it("on a server that accepts and never answers: SIGTERM ends the wait", function()
      silent = silent_server.start()
      local shown = "redis://127.0.0.1:" .. silent.port
      local err = waiting(shown .. "?queue_timeout=600&connect_timeout=600", shown)
      local line = err:match("still connecting to [^\n]*")
      assert.truthy(line:find("attempt 1, connected, waiting for the server to answer", 1, true), line)
      assert_interrupted("TERM", "get_job on the redis store")
    end)

    it("says when it is connected, and the app goes on", function()
      local port = U.free_port()
      local shown = "redis://127.0.0.1:" .. port
      p = P.host("run app.lua", { ["app.lua"] = app(shown .. "?queue_timeout=600") })
      assert.is_true(p:wait_for("connecting to " .. shown .. " ..."), p:stderr())
      local server = require("support.redis").start { port = port }
      finally(function() server:stop() end)
      assert.is_true(p:wait_for("APP READY"), p:stderr())
      assert.truthy(p:stderr():find("connected to " .. shown .. " after", 1, true), p:stderr())
      p:signal("TERM")
      assert.are.equal(0, p:wait(), p:stderr())
    end)

    it("that fails names the app's line, without a traceback into chronis", function()
      local port = U.free_port()
      p = P.host("run app.lua", { ["app.lua"] = app(("redis://127.0.0.1:%d?queue_timeout=1.5"):format(port)) })
      local rc = p:wait()
      local err = p:stderr()
      assert.are.equal(1, rc, err)
      assert.truthy(err:find("chronis: app.lua:4: unavailable: get_job: redis 127.0.0.1:" .. port
        .. " unavailable", 1, true), err)
      assert.truthy(err:find("connecting to redis://127.0.0.1:" .. port .. " ...", 1, true), err)
      assert.is_nil(err:find("traceback", 1, true), err)
    end)

    it("logs its progress under plain lua5.4 too", function()
      local port = U.free_port()
      local rc, _, err = P.run_lua(([[
local chronis = require "chronis"
local store = chronis.storage.open("redis://127.0.0.1:%d?queue_timeout=1.5")
local ok, e = pcall(store.get_job, store, "x")
io.stderr:write("CODE ", e.code, "\n")
]]):format(port))
      assert.are.equal(0, rc, err)
      assert.truthy(err:find("connecting to redis://127.0.0.1:" .. port .. " ...", 1, true), err)
      assert.truthy(err:find("CODE unavailable", 1, true), err)
    end)
  end)

  describe("PostgreSQL", function()
    it("on a server that accepts and never answers: says where it is; SIGINT ends the wait", function()
      silent = silent_server.start()
      local shown = ("postgres://app@127.0.0.1:%d/jobs"):format(silent.port)
      local err = waiting(shown .. "?connect_timeout=600", shown)
      local line = err:match("still connecting to [^\n]*")
      assert.truthy(line:find("attempt 1, connecting", 1, true), line)
      assert_interrupted("INT", "get_job on the postgres store")
    end)

    it("on a port nobody listens on fails at once, naming the app's line, without a traceback", function()
      local port = U.free_port()
      p = P.host("run app.lua", { ["app.lua"] = app(("postgres://app@127.0.0.1:%d/jobs"):format(port)) })
      local rc = p:wait()
      local err = p:stderr()
      assert.are.equal(1, rc, err)
      assert.truthy(err:find("chronis: app.lua:4: unavailable: postgres unavailable", 1, true), err)
      assert.is_nil(err:find("traceback", 1, true), err)
    end)
  end)

  it("a SIGINT while the app waits in chronis.sleep ends it the same way", function()
    p = P.host("run app.lua", { ["app.lua"] = 'local chronis = require "chronis"\nio.stderr:write("SLEEPING\\n")\n'
      .. '\nchronis.sleep(600)\n' })
    assert.is_true(p:wait_for("SLEEPING"), p:stderr())
    p:signal("INT")
    local rc = p:wait()
    local err = p:stderr()
    assert.are.equal(1, rc, err)
    assert.truthy(err:find("app.lua:4: interrupted: SIGINT received while waiting for chronis.sleep", 1, true), err)
    assert.is_nil(err:find("traceback", 1, true), err)
  end)
end)
