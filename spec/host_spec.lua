-- The host executable (runtime/main.c): CLI, `run APP.lua` until SIGTERM,
-- errors with file:line, JSON logs. The binary is run by absolute path
-- from a temporary working folder, so it must find its Lua library from
-- its own location.
local chronis = require "chronis"
local U = require "support.util"

local shell_quote, write, BIN = U.sh_quote, U.write, U.BIN
local function read(path) return U.read(path, "") end

describe("host executable", function()
  local dir

  before_each(function()
    dir = U.tmpdir("chronis-host")
  end)

  after_each(function()
    U.remove_tree(dir)
  end)

  -- Runs `chronis args` in the temporary folder; with `term_after`, sends
  -- SIGTERM after that many seconds (and SIGKILL 5 s later if it hangs).
  -- Returns exit code, stdout, stderr.
  local function chronis_run(args, term_after)
    local prefix = ""
    if term_after then
      prefix = ("timeout --preserve-status -s TERM -k 5 %s "):format(term_after)
    end
    local out, err = dir .. "/stdout.txt", dir .. "/stderr.txt"
    local cmd = ("cd %s && %s%s %s >%s 2>%s </dev/null"):format(shell_quote(dir), prefix,
      shell_quote(BIN), args, shell_quote(out), shell_quote(err))
    local _, how, code = os.execute(cmd)
    if how == "signal" then code = 128 + code end
    return code, read(out), read(err)
  end

  local APP = [[
local chronis = require "chronis"
local sched = chronis.scheduler { polling_interval = 0.1 }
sched:handler("hello", function(job)
  print("HELLO from " .. job.job_id .. " " .. job.kwargs.who)
  io.stdout:flush()
end)
sched:once(chronis.time.now()):config { job_id = "greeting" }:run("hello", { who = "world" })
sched:start()
]]

  it("exists (run `make` first)", function()
    local f = io.open(BIN, "rb")
    assert.is_not_nil(f, BIN .. " is missing: run make")
    f:close()
  end)

  it("prints its version with --version", function()
    local code, out = chronis_run("--version")
    assert.are.equal(0, code)
    assert.truthy(out:find(chronis._VERSION, 1, true), out)
  end)

  it("prints its usage with --help", function()
    local code, out = chronis_run("--help")
    assert.are.equal(0, code)
    assert.truthy(out:find("usage: chronis", 1, true), out)
    assert.truthy(out:find("run [APP.lua]", 1, true), out)
    assert.truthy(out:find("--log-format", 1, true), out)
  end)

  it("exits 2 on an unknown option, naming it", function()
    local code, _, err = chronis_run("--frobnicate run app.lua")
    assert.are.equal(2, code)
    assert.truthy(err:find("--frobnicate", 1, true), err)
  end)

  it("exits 2 on a bad option value or an unknown command", function()
    assert.are.equal(2, (chronis_run("--log-format xml run app.lua")))
    assert.are.equal(2, (chronis_run("--log-level loud run app.lua")))
    assert.are.equal(2, (chronis_run("fly app.lua")))
    assert.are.equal(2, (chronis_run("")))
  end)

  it("runs an app's jobs until SIGTERM and exits 0", function()
    write(dir .. "/app.lua", APP)
    local code, out, err = chronis_run("run app.lua", 4)
    assert.are.equal(0, code, err)
    assert.truthy(out:find("HELLO from greeting world", 1, true), "stdout: " .. out .. "\nstderr: " .. err)
    assert.truthy(err:find("SIGTERM", 1, true), err)
  end)

  -- Each app fails on its line 3.
  for _, case in ipairs({
    { "a Lua error", "broken.lua", 'local chronis = require "chronis"\nlocal x = nil\nx.field = 1\n' },
    { "a syntax error", "syntax.lua", 'local chronis = require "chronis"\n\nlocal = 3\n' },
  }) do
    local what, file, source = case[1], case[2], case[3]
    it("exits 1 on " .. what .. " in the app, with file:line on stderr", function()
      write(dir .. "/" .. file, source)
      local code, _, err = chronis_run("run " .. file, 5)
      assert.are.equal(1, code)
      assert.truthy(err:find(file .. ":3:", 1, true), err)
    end)
  end

  it("writes JSON lines to stderr with --log-format json", function()
    write(dir .. "/app.lua", APP)
    local code, out, err = chronis_run("--log-format json run app.lua", 1.5)
    assert.are.equal(0, code, err)
    assert.truthy(out:find("HELLO from greeting", 1, true), out)
    local n = 0
    for line in err:gmatch("[^\n]+") do
      local ok, rec = pcall(chronis.json.decode, line)
      assert.is_true(ok, "not JSON: " .. line)
      assert.is_table(rec, line)
      assert.is_string(rec.level, line)
      assert.is_string(rec.msg, line)
      assert.is_string(rec.ts, line)
      n = n + 1
    end
    assert.is_true(n >= 2, "expected log lines, got: " .. err)
  end)

  local KEEP_APP = [[
local chronis = require "chronis"
local sched = chronis.scheduler { polling_interval = 0.1 }
sched:handler("tick", function() print("TICK") io.stdout:flush() end)
sched:every{ hours = 1 }:config{ job_id = "hourly", if_exists = "skip" }:run("tick")
sched:once("2099-01-01T00:00:00Z"):config{ job_id = "later", if_exists = "skip" }:run("tick")
sched:start()
]]

  it("keeps jobs in sqlite:chronis.db by default, across restarts, without duplicates", function()
    write(dir .. "/app.lua", KEEP_APP)
    for round = 1, 2 do
      local code, _, err = chronis_run("run app.lua", 1)
      assert.are.equal(0, code, err)
      local first = err:match("^[^\n]*")
      assert.truthy(first:find("default storage sqlite:chronis.db", 1, true), first)
      -- A clean shutdown closes the store: SQLite folds its WAL back.
      assert.is_nil(io.open(dir .. "/chronis.db-wal"), "round " .. round .. " left a WAL file")
    end
    local store = chronis.storage.open("sqlite:" .. dir .. "/chronis.db")
    assert.are.equal(2, store:count_jobs())
    assert.are.equal("scheduled", store:get_job("hourly").status)
    store:close()
  end)

  -- The example app (`make run`): every job has an id and reconciles with
  -- its declaration, so a restart duplicates nothing and warns of nothing,
  -- and its slow job, failed by its timeout, is scheduled again.
  it("restarts the example app without duplicates, and schedules its failed one-shot job again", function()
    local app = shell_quote(U.ROOT .. "/scripts/app.lua")
    local code, _, err = chronis_run("run " .. app, 5)
    assert.are.equal(0, code, err)
    local store = chronis.storage.open("sqlite:" .. dir .. "/chronis.db")
    assert.are.equal("failed", store:get_job("slow").status, err)
    store:close()
    code, _, err = chronis_run("run " .. app, 1)
    assert.are.equal(0, code, err)
    assert.truthy(err:find("job 'slow' updated from its declaration: trigger_args", 1, true), err)
    assert.truthy(err:find("status failed -> scheduled; next run at ", 1, true), err)
    assert.is_nil(err:find("has no job_id", 1, true), err)
    assert.is_nil(err:find("no longer is", 1, true), err)
    store = chronis.storage.open("sqlite:" .. dir .. "/chronis.db")
    local ids = {}
    for _, j in ipairs(store:query_jobs()) do ids[#ids + 1] = j.job_id end
    table.sort(ids)
    -- greet ran and was deleted in the first run; the second declared it again.
    assert.are.same({ "flaky", "greet", "heartbeat", "report", "slow" }, ids)
    assert.is_true(store:get_job("heartbeat").declared)
    store:close()
  end)

  it("takes the default store from --storage or CHRONIS_STORAGE", function()
    write(dir .. "/app.lua", KEEP_APP)
    local code, _, err = chronis_run("--storage memory: run app.lua", 0.5)
    assert.are.equal(0, code, err)
    assert.truthy(err:find("default storage memory:", 1, true), err)
    assert.is_nil(io.open(dir .. "/chronis.db"), "--storage memory: still created chronis.db")
    code, _, err = chronis_run("run app.lua", 0.5)
    assert.are.equal(0, code, err)
    local env_dir = dir .. "/other.db"
    local cmd = ("cd %s && CHRONIS_STORAGE=sqlite:%s timeout --preserve-status -s TERM 0.5 %s run app.lua "
      .. ">/dev/null 2>&1"):format(shell_quote(dir), shell_quote(env_dir), shell_quote(BIN))
    os.execute(cmd)
    assert.truthy(io.open(env_dir), "CHRONIS_STORAGE was not used")
  end)
end)
