-- The dashboard (lua/chronis/web/) in a real browser: build/chronis runs
-- an app on a SQLite store with --http and a token, spec/support/dashboard.js
-- drives headless Chromium through the page (clicks, types, reads what it
-- shows) and reports what it saw, and this file checks that report and the
-- store itself, through the Lua API on the same URL.
--
-- Needs Debian's chromium (/usr/bin/chromium, or $CHROMIUM) and
-- puppeteer-core from spec/package.json; either missing is a failure that
-- says how to install it. With SCREENSHOT_DIR set, the script also saves
-- the pictures of docs/http.md there.
local chronis = require "chronis"
local U = require "support.util"
local P = require "support.process"

local json = chronis.json
local sh_quote = U.sh_quote

local TOKEN = "dashboard-spec-token"
local CHROMIUM = os.getenv("CHROMIUM") or "/usr/bin/chromium"
local SCRIPT = U.ROOT .. "/spec/support/dashboard.js"
local PUPPETEER = U.ROOT .. "/spec/node_modules/puppeteer-core/package.json"
local XSS_NAME = "<script>alert(1)</script>"
local XSS_META = '<img src=x onerror="alert(2)">'

-- The app the host runs. A job of the flaky handler fails its first run
-- in this process and succeeds after: its failure is there when the page
-- opens, and a retry from the page leaves it scheduled (an interval job)
-- for the store to show. slow reports progress and stays running.
local APP = [[
local chronis = require "chronis"
local sched = chronis.scheduler{ polling_interval = 0.2, shutdown_grace = 1 }
sched:handler("ok", function() end)
sched:handler("slow", function()
  chronis.progress(40, "page 4 of 10")
  chronis.sleep(600)
end)
local failed = {}
sched:handler("flaky", function(job)
  if not failed[job.job_id] then
    failed[job.job_id] = true
    error("flaky: the first run fails, <b>as planned</b>")
  end
end)
sched:start()
]]

-- The host with --http on a free loopback port (another pick if the port
-- was taken between the pick and the listen).
local function start_host(url)
  local last
  for _ = 1, 3 do
    local port = U.free_port()
    local p = P.host(("run app.lua --storage %s --http 127.0.0.1:%d --http-token %s"):format(
      sh_quote(url), port, sh_quote(TOKEN)), { ["app.lua"] = APP })
    if p:wait_for("http: serving", 30) then return p, port end
    last = p:stderr()
    p:close()
  end
  error("chronis run --http did not start: " .. tostring(last), 2)
end

local function until_true(pred, seconds)
  local deadline = os.time() + seconds
  repeat
    if pred() then return true end
    U.sleep(0.1)
  until os.time() > deadline
  return pred()
end

local function contains(list, v)
  for _, x in ipairs(list) do
    if x == v then return true end
  end
  return false
end

describe("the dashboard in a browser", function()
  local dir, url, sched, host, port, seen

  setup(function()
    assert(U.exists(CHROMIUM), CHROMIUM .. " is missing: apt-get install chromium")
    assert(U.has_command("node"), "node is missing: run 'make deps'")
    assert(U.exists(PUPPETEER), "puppeteer-core is not installed: run 'make deps' (npm ci --prefix spec)")
    dir = U.tmpdir("chronis-dashboard")
    url = "sqlite:" .. dir .. "/jobs.db"
    -- The spec's own scheduler on the store, never started: it makes the
    -- jobs and reads them back.
    sched = chronis.scheduler{ storage = url }
    sched:handler("ok", function() end)
    sched:handler("flaky", function() end)
    sched:every{ hours = 1 }:config{ job_id = "spec-job", name = "Spec job", metadata = { tenant = "acme" } }:run("ok")
    sched:every{ hours = 1 }:config{ job_id = "xss", name = XSS_NAME, metadata = { note = XSS_META, tenant = "evil" } }
      :run("ok")
    sched:every{ hours = 1 }:config{ job_id = "runner", name = "Runner" }:run("ok")
    sched:every{ hours = 1 }:config{ job_id = "paused-job", name = "Paused job" }:run("ok")
    sched:pause_job("paused-job")
    sched:handler("slow", function() end)
    sched:every{ hours = 1, start_date = chronis.time.now() }:config{ job_id = "slow", name = "Slow" }:run("slow")
    for _, id in ipairs({ "flaky", "flaky-2" }) do
      -- on_exhausted = "fail": the failed view needs jobs that stay failed.
      sched:every{ hours = 1, start_date = chronis.time.now() }
        :config{ job_id = id, name = "Flaky", on_exhausted = "fail" }:run("flaky")
    end

    host, port = start_host(url)
    assert(until_true(function()
      return sched:get_job("flaky").status == "failed" and sched:get_job("flaky-2").status == "failed"
        and sched:get_job("slow").progress ~= nil
    end, 30), "flaky and flaky-2 did not fail their first runs, or slow report progress: " .. host:stderr())

    local err = dir .. "/dashboard.err"
    -- Without the sanitizer's preload (SANITIZER=address): node and the
    -- browser it starts are not chronis code, and Chromium does not start
    -- with AddressSanitizer forced into it.
    local cmd = ("cd %s && timeout -k 5 240 env -u LD_PRELOAD DASH_URL=%s DASH_TOKEN=%s CHRONIS_BIN=%s DASH_STORAGE=%s "
      .. "CHROMIUM=%s node %s 2>%s"):format(sh_quote(U.ROOT), sh_quote(("http://127.0.0.1:%d"):format(port)),
      sh_quote(TOKEN), sh_quote(U.BIN), sh_quote(url), sh_quote(CHROMIUM), sh_quote(SCRIPT), sh_quote(err))
    local pipe = assert(io.popen(cmd, "r"))
    local out = pipe:read("a")
    local ok, _, code = pipe:close()
    assert(ok, ("spec/support/dashboard.js failed (exit %s): %s\nserver log:\n%s"):format(
      tostring(code), U.read(err, ""), host:stderr()))
    seen = json.decode(out)
  end)

  teardown(function()
    if host then
      host:signal("TERM")
      host:wait(10)
      host:close()
    end
    if sched then sched:close() end
    if dir then U.remove_tree(dir) end
  end)

  it("lists the jobs of the store, and one added while the page is open", function()
    for _, id in ipairs({ "spec-job", "xss", "runner", "paused-job", "flaky", "flaky-2", "slow" }) do
      assert.is_true(contains(seen.overview.ids, id), id .. " is not in the list: " .. json.encode(seen.overview.ids))
    end
    assert.equal(7, seen.overview.counts.all)
    assert.equal(1, seen.overview.counts.running)
    assert.equal(2, seen.overview.counts.failed)
    assert.equal(1, seen.overview.counts.paused)
    -- live-job came in once Live was ticked again, with the handler filter
    -- typed and kept; not while Live was off.
    assert.is_false(seen.live.shown_while_off)
    assert.equal("ok", seen.live.filter)
    assert.truthy(seen.live.hash:find("handler=ok", 1, true))
  end)

  it("filters the list by metadata, and by status from a count", function()
    assert.same({ "spec-job" }, seen.filters.meta)                 -- tenant=acme
    assert.same({ "paused-job", "spec-job" }, seen.filters.paused) -- spec-job paused through the page
  end)

  it("pauses a job from the list, and the store says paused", function()
    assert.equal("paused", seen.pause.badge)
    assert.equal("paused", sched:get_job("spec-job").status)
  end)

  it("retries failed jobs from the failed view, one and all, and the store has them scheduled after their runs",
    function()
      table.sort(seen.retry.listed)
      assert.same({ "flaky", "flaky-2" }, seen.retry.listed)
      assert.truthy(seen.retry.bar:find("2 failed jobs", 1, true))
      assert.is_true(seen.retry.gone)     -- flaky, by its row's Retry
      assert.is_true(seen.retry.all_done) -- flaky-2, by Retry all
      for _, id in ipairs({ "flaky", "flaky-2" }) do
        assert(until_true(function() return #sched:history(id, 10) == 2 end, 10), id .. " did not run again")
        assert.equal("scheduled", sched:get_job(id).status)
        local runs = sched:history(id, 10)
        assert.equal("ok", runs[1].outcome)
        assert.equal("error", runs[2].outcome)
      end
    end)

  it("shows the new run in the job page's history after Run now", function()
    assert.equal(0, seen.run.before)
    assert.equal(1, seen.run.after)
    assert.equal("ok", seen.run.outcome)
    local runs = sched:history("runner", 10)
    assert.equal(1, #runs)
    assert.equal("ok", runs[1].outcome)
  end)

  it("shows the progress a running handler reports", function()
    assert.equal(40, seen.progress.value)
    assert.equal("40% — page 4 of 10", seen.progress.text)
    assert.equal("running", seen.progress.status)
    assert.same({}, seen.progress.actions) -- Delete alone: no pause nor run now of a running job
  end)

  it("asks before deleting, and deletes once confirmed", function()
    assert.is_true(seen.delete.kept_after_cancel)
    assert.is_true(seen.delete.done)
    assert.is_nil(sched:get_job("live-job"))
  end)

  it("shows HTML in a job's name and metadata as text, running and adding nothing", function()
    assert.equal(XSS_NAME, seen.xss.row_text)
    assert.equal(XSS_NAME, seen.xss.title_text)
    assert.truthy(seen.xss.meta_text:find(XSS_META, 1, true))
    -- Only the page's own script, and no image at all: nothing was parsed as HTML.
    assert.equal(1, seen.xss.scripts)
    assert.equal(1, seen.xss.page_scripts)
    assert.equal(0, seen.xss.images)
    assert.equal(0, seen.xss.page_images)
    assert.same({}, seen.dialogs)
    assert.same({}, seen.page_errors)
    assert.same({}, seen.csp)
  end)

  it("turns the actions off without the token, and says why", function()
    assert.is_true(seen.no_token.buttons > 0)
    assert.equal(0, seen.no_token.enabled)
    assert.equal(0, seen.no_token.job_enabled)
    assert.truthy(seen.no_token.notice:find("token", 1, true))
    assert.equal(seen.no_token.notice, seen.no_token.title)
  end)

  it("sends the token in a header on every API call, never as a cookie", function()
    assert.is_true(seen.api_calls > 0)
    assert.equal(0, seen.api_calls_without_token)
    assert.equal(0, seen.api_calls_with_cookie)
    assert.equal(TOKEN, seen.overview.token_stored)
    assert.equal("", seen.overview.cookie)
  end)

  it("fits a phone: the rows become cards, nothing scrolls sideways, a refresh keeps the scroll", function()
    local o = seen.phone.overview
    assert.is_true(o.scroll <= o.width, ("the list is %d px wide on a %d px screen"):format(o.scroll, o.width))
    assert.equal("none", o.head)
    assert.are_not.equal("table-cell", o.cell)
    assert.equal(400, seen.phone.scroll_y)
    local j = seen.phone.job
    assert.is_true(j.scroll <= j.width, ("a job page is %d px wide on a %d px screen"):format(j.scroll, j.width))
  end)
end)
