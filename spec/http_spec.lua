-- chronis.http against a local server (spec/support/http_server.js): what a
-- response looks like, request bodies and methods, errors (timeout,
-- connection refused, bad URLs, TLS), connection reuse, waiting inside
-- tasks, and a handler killed while its request is in flight.
local chronis = require "chronis"
local http = chronis.http
local U = require "support.util"

local server

local function elapsed(t0)
  return (chronis.time.now() - t0) / 1e6
end

local assert_error = U.assert_error

-- docs/design.md: no stray handles or tasks after an async spec. Requests end
-- before their callers resume; idle cached connections are not watched.
local function assert_loop_clean()
  collectgarbage()
  assert.are.equal(0, http.inflight(), "requests left in flight")
  U.assert_loop_clean()
end

setup(function()
  server = require("support.http_server").start({ tls = true })
end)

teardown(function()
  if server then server:stop() end
end)

describe("chronis.http.request", function()
  after_each(assert_loop_clean)

  it("returns status, lower-cased headers and body", function()
    local r = http.request{ url = server.url("/hello") }
    assert.are.equal(200, r.status)
    assert.are.equal("integer", math.type(r.status))
    assert.are.equal("hello", r.body)
    assert.are.equal("yes", r.headers["x-test"])
    assert.are.equal("text/plain", r.headers["content-type"])
    assert.are.equal("5", r.headers["content-length"])
    assert.is_nil(r.headers["X-Test"])
  end)

  it("joins a repeated header field with ', '", function()
    local r = http.request{ url = server.url("/hello") }
    assert.are.equal("a, b", r.headers["x-multi"])
  end)

  it("keeps empty header values and unfolds folded ones", function()
    local r = http.request{ url = server.url("/headers-only") }
    assert.are.equal(204, r.status)
    assert.are.equal("", r.body)
    assert.are.equal("", r.headers["x-empty"])
    assert.are.equal("one two", r.headers["x-folded"])
  end)

  it("accepts a URL string for a plain GET", function()
    local r = http.request(server.url("/hello"))
    assert.are.equal("hello", r.body)
  end)

  it("sends a POST body as given, with the caller's headers and no form type", function()
    local body = '{"a":1,"text":"ünï \\u0000 x"}' .. ("z"):rep(5000)
    local r = http.request{ method = "POST", url = server.url("/echo"), body = body,
      headers = { ["Content-Type"] = "application/json", ["X-Num"] = 42, ["X-Empty"] = "" } }
    assert.are.equal(201, r.status)
    local echo = chronis.json.decode(r.body)
    assert.are.equal("POST", echo.method)
    assert.are.equal(body, echo.body)
    assert.are.equal("application/json", echo.headers["content-type"])
    assert.are.equal("42", echo.headers["x-num"])
    assert.are.equal("", echo.headers["x-empty"])
    assert.are.equal(tostring(#body), echo.headers["content-length"])
    assert.is_nil(echo.headers["expect"], "no Expect: 100-continue round trip")
    assert.matches("^chronis/", echo.headers["user-agent"])
  end)

  it("sends no content type the caller did not give", function()
    local r = http.request{ method = "POST", url = server.url("/echo"), body = "a=1" }
    local echo = chronis.json.decode(r.body)
    assert.are.equal("a=1", echo.body)
    assert.is_nil(echo.headers["content-type"])
  end)

  it("supports PUT, PATCH, DELETE with bodies, an empty POST and HEAD", function()
    for _, m in ipairs({ "PUT", "PATCH", "DELETE", "post" }) do
      local r = http.request{ method = m, url = server.url("/echo?x=1"), body = "b-" .. m }
      local echo = chronis.json.decode(r.body)
      assert.are.equal(m:upper(), echo.method)
      assert.are.equal("b-" .. m, echo.body)
      assert.are.equal("/echo?x=1", echo.url)
    end
    local r = http.request{ method = "POST", url = server.url("/echo") }
    assert.are.equal("0", chronis.json.decode(r.body).headers["content-length"])
    r = http.request{ method = "HEAD", url = server.url("/hello") }
    assert.are.equal(200, r.status)
    assert.are.equal("", r.body)
    assert.are.equal("yes", r.headers["x-test"])
  end)

  it("returns error statuses as results, not errors", function()
    for _, st in ipairs({ 400, 404, 500, 503 }) do
      local r = http.request{ url = server.url("/status/" .. st) }
      assert.are.equal(st, r.status)
      assert.are.equal("status " .. st, r.body)
    end
  end)

  it("does not follow redirects unless asked", function()
    local r = http.request{ url = server.url("/redirect") }
    assert.are.equal(302, r.status)
    assert.are.equal("/hello", r.headers["location"])
    r = http.request{ url = server.url("/redirect"), follow_redirects = true }
    assert.are.equal(200, r.status)
    assert.are.equal("hello", r.body)
    assert.is_nil(r.headers["location"], "headers are the last response's")
  end)

  it("fails with 'timeout', naming the URL, when no answer comes in time", function()
    local t0 = chronis.time.now()
    local url = server.url("/slow?ms=3000")
    local err = assert_error("timeout", function() http.request{ url = url, timeout = 0.3 } end)
    assert.truthy(err.message:find(url, 1, true), err.message)
    assert.truthy(err.message:find("GET", 1, true), err.message)
    local dt = elapsed(t0)
    assert.is_true(dt >= 0.25 and dt < 2, "took " .. dt .. "s")
  end)

  it("fails with 'unavailable', naming the URL, when the connection is refused", function()
    local url = "http://127.0.0.1:1/x"
    local err = assert_error("unavailable", function() http.request{ url = url, timeout = 5 } end)
    assert.truthy(err.message:find(url, 1, true), err.message)
    assert.are.equal("unavailable: " .. err.message, tostring(err))
  end)

  it("fails with 'unavailable' for a host that does not resolve", function()
    local err = assert_error("unavailable", function()
      http.request{ url = "http://no-such-host.invalid/", timeout = 10 }
    end)
    assert.truthy(err.message:find("no-such-host.invalid", 1, true), err.message)
  end)

  it("refuses other protocols and malformed URLs with 'invalid'", function()
    assert_error("invalid", function() http.request{ url = "ftp://127.0.0.1/x" } end)
    assert_error("invalid", function() http.request{ url = "file:///etc/passwd" } end)
    assert_error("invalid", function() http.request{ url = "http://[::1" } end)
  end)

  it("caps the response body at max_body", function()
    local r = http.request{ url = server.url("/big?n=1000"), max_body = 1000 }
    assert.are.equal(1000, #r.body)
    local err = assert_error("invalid", function()
      http.request{ url = server.url("/big?n=1001"), max_body = 1000 }
    end)
    assert.matches("larger than max_body", err.message)
  end)

  it("raises on bad options before sending anything", function()
    local function bad(opts, pattern)
      local ok, err = pcall(http.request, opts)
      assert.is_false(ok)
      assert.matches(pattern, tostring(err))
    end
    bad({}, "'url' is required")
    bad({ url = server.url("/"), bogus = 1 }, "unknown option 'bogus'")
    bad({ url = server.url("/"), headers = { ["X-A"] = "a\r\nX-Injected: 1" } }, "CR, LF")
    bad({ url = server.url("/"), headers = { ["Bad Name"] = "x" } }, "token")
    bad({ url = server.url("/"), method = "GE T" }, "invalid method")
    bad({ url = server.url("/"), body = {} }, "'body' must be a string")
    bad({ url = server.url("/"), timeout = -1 }, "'timeout'")
    bad({ url = server.url("/\n") }, "CR, LF")
    assert.are.equal(0, http.inflight())
  end)

  it("reuses connections between requests", function()
    local before = tonumber(http.request{ url = server.url("/connections") }.body)
    for _ = 1, 10 do assert.are.equal(200, http.request{ url = server.url("/hello") }.status) end
    local after = tonumber(http.request{ url = server.url("/connections") }.body)
    assert.are.equal(before, after, "a new connection was opened")
  end)

  it("runs requests of several tasks at once", function()
    local t0 = chronis.time.now()
    local tasks = {}
    for i = 1, 10 do
      tasks[i] = chronis.spawn(function(n)
        local r = http.request{ url = server.url("/slow?ms=300"), headers = { ["X-N"] = n } }
        return r.status, r.body
      end, i)
    end
    for _, t in ipairs(tasks) do
      local status, body = t:join()
      assert.are.equal(200, status)
      assert.are.equal("slow", body)
    end
    local dt = elapsed(t0)
    assert.is_true(dt < 1.5, "10 requests of 0.3 s took " .. dt .. "s: not concurrent")
  end)

  it("answers every one of 200 concurrent requests exactly once", function()
    local answers, tasks = {}, {}
    for i = 1, 200 do
      tasks[i] = chronis.spawn(function()
        local r = http.request{ method = "POST", url = server.url("/echo"), body = tostring(i) }
        answers[i] = (answers[i] or 0) + 1
        return chronis.json.decode(r.body).body
      end)
    end
    for i, t in ipairs(tasks) do assert.are.equal(tostring(i), t:join()) end
    for i = 1, 200 do assert.are.equal(1, answers[i]) end
  end)

  describe("over https", function()
    it("verifies the server with ca_file", function()
      local r = http.request{ url = server.https_url("/hello"), ca_file = server.cert }
      assert.are.equal(200, r.status)
      assert.are.equal("hello", r.body)
    end)

    it("refuses an untrusted certificate with 'unavailable'", function()
      local url = server.https_url("/hello")
      local err = assert_error("unavailable", function() http.request{ url = url } end)
      assert.truthy(err.message:find(url, 1, true), err.message)
    end)

    it("skips verification with verify = false", function()
      local r = http.request{ url = server.https_url("/echo"), method = "POST", body = "tls", verify = false }
      assert.are.equal("tls", chronis.json.decode(r.body).body)
    end)
  end)

  describe("in a handler", function()
    it("lets a webhook handler post and read the answer", function()
      local sched = chronis.scheduler{ storage = chronis.storage.memory(), polling_interval = 0.1 }
      local got
      sched:handler("webhook", function(job)
        local r = http.request{ method = "POST", url = job.kwargs.url, body = chronis.json.encode(job.kwargs.payload),
          headers = { ["content-type"] = "application/json" }, timeout = 5 }
        if r.status >= 300 then error("webhook answered " .. r.status) end
        got = chronis.json.decode(r.body)
      end)
      sched:once(chronis.time.now()):run("webhook", { url = server.url("/echo"), payload = { n = 1 } })
      sched:start()
      assert.is_true(chronis.run_until(function() return got ~= nil end, 5))
      sched:stop(1)
      assert.are.same({ n = 1 }, chronis.json.decode(got.body))
    end)

    it("survives a handler killed by its timeout while waiting, and frees the request", function()
      local failures = {}
      local sched = chronis.scheduler{ storage = chronis.storage.memory(), polling_interval = 0.1,
        on_failure = function(job_id, err) failures[job_id] = err end,
        logger = function() end }
      local after_request = false
      sched:handler("hang", function()
        http.request{ url = server.url("/slow?ms=5000"), timeout = 30 }
        after_request = true
      end)
      sched:once(chronis.time.now()):config{ timeout = 1, job_id = "hang1" }:run("hang")
      sched:start()
      assert.is_true(chronis.run_until(function() return http.inflight() > 0 end, 5), "request never started")
      local t0 = chronis.time.now()
      assert.is_true(chronis.run_until(function() return failures.hang1 ~= nil end, 5), "handler not killed")
      assert.are.equal(0, http.inflight(), "the killed handler's request was not cancelled")
      assert.is_true(elapsed(t0) < 2.5)
      sched:stop(1)
      assert.is_false(after_request)
      -- The client still works afterwards.
      assert.are.equal("hello", http.request{ url = server.url("/hello") }.body)
    end)
  end)

  it("reaps a request whose wait was refused inside the running loop", function()
    local err
    local t = chronis.spawn(function()
      chronis.sleep(0.01) -- resumed from the loop from here on
      local ok, e = pcall(coroutine.wrap(function()
        return http.request{ url = server.url("/slow?ms=5000") }
      end))
      err = not ok and tostring(e)
    end)
    t:join()
    assert.matches("cannot wait here", err)
    assert.is_true(chronis.run_until(function() return http.inflight() == 0 end, 1),
      "the orphaned request was not reaped")
  end)
end)
