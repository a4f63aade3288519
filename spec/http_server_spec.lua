-- The HTTP server (runtime/net/httpd.c, lua/chronis/http_server.lua):
-- health and readiness, tokens and read-only mode, the limits, security
-- headers, malformed and pipelined requests, slow clients, and the host's
-- `run --http` and `serve`. Requests through chronis.http reach a server
-- on the spec's own loop; raw bytes (spec/support/raw_http.js) go to a
-- server in a child process, since the spec waits for node synchronously.
local chronis = require "chronis"
local core = require "chronis.core"
local U = require "support.util"
local P = require "support.process"

local http = chronis.http
local decode = core.json.decode
local TOKEN = "s3cret-token-0123456789"

local function req(srv, path, opts)
  opts = opts or {}
  return http.request{ url = srv.url .. path, method = opts.method, headers = opts.headers,
    body = opts.body }
end

local function err_of(r)
  local doc = decode(r.body)
  return doc.error.code, doc.error.message
end

local function raw(port, chunks, opts)
  opts = opts or {}
  local spec = core.json.encode({ chunks = chunks, gap_ms = opts.gap_ms or 0,
    wait_ms = opts.wait_ms or 1500 })
  local dir = U.tmpdir("chronis-raw")
  U.write(dir .. "/in.json", spec)
  local out = U.capture(("env -u LD_PRELOAD node %s %d < %s"):format(U.sh_quote(U.ROOT .. "/spec/support/raw_http.js"),
    port, U.sh_quote(dir .. "/in.json")))
  U.remove_tree(dir)
  return decode(out)
end

local function statuses(data)
  local list = {}
  for code in data:gmatch("HTTP/1%.1 (%d%d%d)") do list[#list + 1] = tonumber(code) end
  return list
end

describe("chronis.http_server", function()
  local sched, srv

  before_each(function()
    sched = chronis.scheduler{ storage = chronis.storage.memory() }
  end)

  after_each(function()
    if srv then srv.close() end
    srv = nil
    if sched then sched:close() end
    sched = nil
    collectgarbage()
  end)

  it("answers /healthz and /readyz, and says why it is not ready", function()
    srv = chronis.http_server{ listen = "127.0.0.1:0", schedulers = { sched } }
    local r = req(srv, "/healthz")
    assert.are.equal(200, r.status)
    assert.are.equal("ok", decode(r.body).status)
    assert.matches("^application/json", r.headers["content-type"])
    r = req(srv, "/readyz")
    assert.are.equal(200, r.status)
    assert.are.equal("ready", decode(r.body).status)
    sched:start()
    assert.are.equal(200, req(srv, "/readyz").status)
    sched:stop()
    r = req(srv, "/readyz")
    assert.are.equal(503, r.status)
    local doc = decode(r.body)
    assert.are.equal("not_ready", doc.status)
    assert.matches("is stopped", doc.reason)
  end)

  it("is not ready when the store does not answer", function()
    local store = chronis.storage.memory()
    local s = chronis.scheduler{ storage = store }
    srv = chronis.http_server{ listen = "127.0.0.1:0", schedulers = { s } }
    store:close()
    local r = req(srv, "/readyz")
    assert.are.equal(503, r.status)
    assert.matches("the store does not answer", decode(r.body).reason)
    s:close()
  end)

  it("follows the process's schedulers when given none", function()
    srv = chronis.http_server{ listen = "127.0.0.1:0" }
    local n = #chronis.schedulers()
    assert.is_true(n >= 1)
    assert.are.equal(n, decode(req(srv, "/readyz").body).schedulers)
    local extra = chronis.scheduler{ storage = chronis.storage.memory() }
    assert.are.equal(n + 1, decode(req(srv, "/readyz").body).schedulers)
    extra:close()
  end)

  it("sends the security headers with every answer", function()
    srv = chronis.http_server{ listen = "127.0.0.1:0", schedulers = { sched } }
    for _, path in ipairs({ "/healthz", "/nope", "/api/nope" }) do
      local r = req(srv, path)
      assert.matches("default%-src 'self'", r.headers["content-security-policy"], path)
      assert.are.equal("nosniff", r.headers["x-content-type-options"], path)
      assert.are.equal("DENY", r.headers["x-frame-options"], path)
      assert.are.equal("no-referrer", r.headers["referrer-policy"], path)
    end
  end)

  it("refuses other methods on health and pages with 405 and Allow", function()
    srv = chronis.http_server{ listen = "127.0.0.1:0", schedulers = { sched } }
    local r = req(srv, "/healthz", { method = "POST", body = "" })
    assert.are.equal(405, r.status)
    assert.are.equal("GET, HEAD", r.headers["allow"])
    assert.are.equal("method_not_allowed", err_of(r))
    r = req(srv, "/healthz", { method = "HEAD" })
    assert.are.equal(200, r.status)
    assert.are.equal("", r.body)
  end)

  it("answers unknown pages with JSON 404, and serves no file outside its folder", function()
    srv = chronis.http_server{ listen = "127.0.0.1:0", schedulers = { sched } }
    for _, path in ipairs({ "/nope.html", "/../init.lua", "/%2e%2e%2finit.lua", "/init.lua",
                            "/web/index.html", "/a/b" }) do
      local r = req(srv, path)
      assert.are.equal(404, r.status, path)
      assert.are.equal("not_found", err_of(r), path)
    end
  end)

  describe("tokens", function()
    it("without a token: reads are open, changes are refused as read-only", function()
      srv = chronis.http_server{ listen = "127.0.0.1:0", schedulers = { sched }, token = "" }
      local r = req(srv, "/api/jobs/x/pause", { method = "POST", body = "" })
      assert.are.equal(403, r.status)
      local code, msg = err_of(r)
      assert.are.equal("read_only", code)
      assert.matches("%-%-http%-token", msg)
      -- Even a token is refused when the server has none.
      r = req(srv, "/api/jobs/x", { method = "DELETE", headers = { Authorization = "Bearer x" } })
      assert.are.equal(401, r.status)
    end)

    it("with a token: changes need it in a header; a cookie does not count", function()
      srv = chronis.http_server{ listen = "127.0.0.1:0", schedulers = { sched }, token = TOKEN }
      sched:every{ seconds = 60 }:config{ job_id = "j1" }:run("h")
      local r = req(srv, "/api/jobs/j1/pause", { method = "POST", body = "" })
      assert.are.equal(401, r.status)
      assert.are.equal("Bearer", r.headers["www-authenticate"])
      r = req(srv, "/api/jobs/j1/pause", { method = "POST", body = "",
        headers = { Cookie = "token=" .. TOKEN } })
      assert.are.equal(401, r.status)
      r = req(srv, "/api/jobs/j1/pause", { method = "POST", body = "",
        headers = { Authorization = "Bearer wrong-token-000000000" } })
      assert.are.equal(401, r.status)
      assert.are.equal("scheduled", sched:get_job("j1").status)
      r = req(srv, "/api/jobs/j1/pause", { method = "POST", body = "",
        headers = { Authorization = "Bearer " .. TOKEN } })
      assert.are.equal(200, r.status, r.body)
      assert.are.equal("paused", sched:get_job("j1").status)
      r = req(srv, "/api/jobs/j1/resume", { method = "POST", body = "",
        headers = { ["X-Chronis-Token"] = TOKEN } })
      assert.are.equal(200, r.status, r.body)
      assert.are.equal("scheduled", sched:get_job("j1").status)
      -- Reads stay open on loopback.
      assert.are.equal(200, req(srv, "/api/jobs/j1").status)
    end)

    it("takes the token from CHRONIS_HTTP_TOKEN through the host", function()
      local port = U.free_port()
      local p = P.spawn(("CHRONIS_HTTP_TOKEN=%s %s serve --storage memory: --http 127.0.0.1:%d")
        :format(TOKEN, U.sh_quote(U.BIN), port), {})
      assert.is_true(p:wait_for("http: serving"), p:stderr())
      assert.is_nil(p:stderr():find("read%-only"))
      local r = http.request{ url = ("http://127.0.0.1:%d/api/jobs"):format(port), method = "POST",
        body = "{}", headers = { ["Content-Type"] = "application/json" } }
      assert.are.equal(401, r.status)
      p:signal("INT")
      assert.are.equal(0, p:wait())
      p:close()
    end)

    it("refuses to listen beyond loopback without a long enough token", function()
      U.assert_error_naming("invalid", "needs a token", chronis.http_server,
        { listen = "0.0.0.0:0", schedulers = { sched }, token = "" })
      U.assert_error_naming("invalid", "16 characters", chronis.http_server,
        { listen = "0.0.0.0:0", schedulers = { sched }, token = "short" })
    end)

    it("beyond loopback, reads need the token too; health does not", function()
      srv = chronis.http_server{ listen = "0.0.0.0:0", schedulers = { sched }, token = TOKEN }
      local url = "http://127.0.0.1:" .. srv.port
      assert.are.equal(200, http.request{ url = url .. "/healthz" }.status)
      assert.are.equal(401, http.request{ url = url .. "/api/jobs" }.status)
      assert.are.equal(401, http.request{ url = url .. "/metrics" }.status)
      assert.are.equal(200, http.request{ url = url .. "/api/jobs",
        headers = { Authorization = "Bearer " .. TOKEN } }.status)
    end)
  end)

  describe("options", function()
    it("names the option that is wrong", function()
      U.assert_error_naming("invalid", "'listen'", chronis.http_server, { listen = "8080" })
      U.assert_error_naming("invalid", "'listen'", chronis.http_server, { listen = "example.com:80" })
      U.assert_error_naming("invalid", "'listen'", chronis.http_server, { listen = "127.0.0.1:99999" })
      U.assert_error_naming("invalid", "'lisen'", chronis.http_server, { lisen = "127.0.0.1:0" })
      U.assert_error_naming("invalid", "'token'", chronis.http_server,
        { listen = "127.0.0.1:0", token = "a b\r\nX: y" })
      U.assert_error_naming("invalid", "'max_body'", chronis.http_server,
        { listen = "127.0.0.1:0", max_body = -1 })
    end)

    it("says when the address is taken", function()
      srv = chronis.http_server{ listen = "127.0.0.1:0", schedulers = { sched } }
      U.assert_error_naming("unavailable", "address already in use", chronis.http_server,
        { listen = "127.0.0.1:" .. srv.port, schedulers = { sched } })
    end)

    it("listens on IPv6 loopback", function()
      srv = chronis.http_server{ listen = "[::1]:0", schedulers = { sched } }
      assert.matches("^http://%[::1%]:%d+$", srv.url)
      assert.are.equal(200, req(srv, "/healthz").status)
    end)
  end)

  describe("limits", function()
    it("answers 413 to a body over max_body, 429 past the rate", function()
      srv = chronis.http_server{ listen = "127.0.0.1:0", schedulers = { sched }, token = TOKEN,
        max_body = 1000, rate_limit = 1, rate_burst = 3 }
      local r = req(srv, "/api/jobs", { method = "POST", body = string.rep("x", 2000),
        headers = { Authorization = "Bearer " .. TOKEN } })
      assert.are.equal(413, r.status)
      assert.are.equal("too_large", err_of(r))
      local codes = {}
      for i = 1, 6 do codes[i] = req(srv, "/healthz").status end
      assert.are.equal(429, codes[6])
      local r429 = req(srv, "/healthz")
      assert.are.equal(429, r429.status)
      assert.are.equal("rate_limited", err_of(r429))
      assert.are.equal("1", r429.headers["retry-after"])
    end)

    it("a request that fails or runs too long is answered, and the server goes on", function()
      srv = chronis.http_server{ listen = "127.0.0.1:0", schedulers = { sched }, request_timeout = 0.3 }
      -- A handler error is a 500 with no detail for the client.
      package.loaded["chronis.metrics"] = { render = function() error("boom in render") end }
      local r = req(srv, "/metrics")
      assert.are.equal(500, r.status)
      assert.is_nil(r.body:find("boom"))
      package.loaded["chronis.metrics"] = { render = function() chronis.sleep(5) return "" end }
      r = req(srv, "/metrics")
      assert.are.equal(503, r.status)
      assert.are.equal("timeout", err_of(r))
      package.loaded["chronis.metrics"] = nil
      assert.are.equal(200, req(srv, "/healthz").status)
    end)
  end)
end)

describe("the server in another process", function()
  local p, port

  setup(function()
    port = U.free_port()
    p = P.host(("serve --storage memory: --http 127.0.0.1:%d --http-token %s"):format(port, TOKEN), {})
    assert(p:wait_for("http: serving"), p:stderr())
  end)

  teardown(function()
    if p then
      p:signal("TERM")
      p:wait()
      p:close()
    end
  end)

  it("answers pipelined requests in order on one connection", function()
    local out = raw(port, { "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" })
    assert.are.same({ 200, 404, 200 }, statuses(out.data))
    assert.is_true(out.closed)
  end)

  it("reads a request sent a byte at a time", function()
    local chunks = {}
    local text = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    for i = 1, #text do chunks[i] = text:sub(i, i) end
    local out = raw(port, chunks, { gap_ms = 2 })
    assert.are.same({ 200 }, statuses(out.data))
  end)

  it("answers 400 to a malformed request and closes", function()
    local out = raw(port, { "GARBAGE\r\n\r\n" })
    assert.are.same({ 400 }, statuses(out.data))
    assert.matches("malformed HTTP request", out.data)
    assert.is_true(out.closed)
  end)

  it("answers 431 to a head over its limit", function()
    local out = raw(port, { "GET /healthz HTTP/1.1\r\nX-Big: " .. string.rep("a", 20000) .. "\r\n\r\n" })
    assert.are.same({ 431 }, statuses(out.data))
    assert.is_true(out.closed)
  end)

  it("answers 413 before reading a body declared too large", function()
    local out = raw(port, { "POST /api/jobs HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n" })
    assert.are.same({ 413 }, statuses(out.data))
  end)

  it("closes a connection whose request does not arrive in time", function()
    local port2 = U.free_port()
    local q = P.lua(([[
      local chronis = require "chronis"
      chronis.http_server{ listen = "127.0.0.1:%d", timeout = 0.3,
        schedulers = { chronis.scheduler{ storage = chronis.storage.memory() } } }
      chronis.run()
    ]]):format(port2))
    assert(q:wait_for("http: serving"), q:stderr())
    local out = raw(port2, { "GET /healthz HTTP/1.1\r\n" }, { wait_ms = 3000 })
    assert.is_true(out.closed)
    assert.are.same({}, statuses(out.data))
    q:signal("INT")
    q:wait()
    q:close()
  end)

  it("keeps serving after all of that", function()
    local r = http.request{ url = ("http://127.0.0.1:%d/healthz"):format(port) }
    assert.are.equal(200, r.status)
  end)
end)

describe("chronis run --http", function()
  it("serves the app's schedulers while they run, and stops with them", function()
    local port = U.free_port()
    local p = P.host(("run --storage memory: --http 127.0.0.1:%d app.lua"):format(port), {
      ["app.lua"] = [[
        local chronis = require "chronis"
        local s = chronis.scheduler{}
        s:handler("tick", function() end)
        s:every{ seconds = 1 }:config{ job_id = "ticker" }:run("tick")
        s:start()
      ]] })
    assert.is_true(p:wait_for("http: serving"), p:stderr())
    local r = http.request{ url = ("http://127.0.0.1:%d/readyz"):format(port) }
    assert.are.equal(200, r.status, r.body)
    assert.are.equal(1, decode(r.body).schedulers)
    p:signal("INT")
    assert.are.equal(0, p:wait())
    p:close()
  end)

  it("fails to start with a clear message when it cannot listen", function()
    local p = P.host("run --storage memory: --http 0.0.0.0:0 app.lua", { ["app.lua"] = "" })
    assert.are.equal(1, p:wait())
    assert.matches("%-%-http: .*needs a token", p:stderr())
    p:close()
  end)

  it("serve says why it cannot listen, in one line, and exits 1", function()
    local p = P.host("serve --storage memory: --http 0.0.0.0:0", {})
    assert.are.equal(1, p:wait())
    assert.matches("\nchronis: %-%-http: invalid option 'listen': listening on 0%.0%.0%.0 %(beyond loopback%) needs a token",
      "\n" .. p:stderr())
    p:close()
  end)

  it("refuses --http for other commands", function()
    local p = P.host("check --http 127.0.0.1:1 'x'", {})
    assert.are.equal(2, p:wait())
    assert.matches("%-%-http is an option of run/serve, not of check", p:stderr())
    p:close()
  end)
end)
