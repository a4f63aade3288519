-- The host's command line as a user meets it (runtime/main.c): each
-- command's own help, suggestions for a misspelt command, option or store
-- URL, `check` that never runs an app, the store each scheduler logs, one
-- clear line for an error of the app, a copied or installed executable
-- that finds its library, and `chronis env` for plain lua5.4. Every test
-- runs build/chronis (or a copy of it) as a subprocess.
local U = require "support.util"

local sh_quote, write, BIN, ROOT = U.sh_quote, U.write, U.BIN, U.ROOT
local function read(path) return U.read(path, "") end

-- How many times `needle` occurs in s.
local function count(s, needle)
  local n, at = 0, 1
  while true do
    local i = s:find(needle, at, true)
    if not i then return n end
    n, at = n + 1, i + #needle
  end
end

local function has(s, needle) return s:find(needle, 1, true) ~= nil end

describe("host command line", function()
  local dir

  before_each(function() dir = U.tmpdir("chronis-cli") end)
  after_each(function() U.remove_tree(dir) end)

  -- Runs `bin args` in dir (or `cwd`), stdin closed; a guard stops it
  -- after 60 s. Returns exit code, stdout, stderr.
  local function run(args, opts)
    opts = opts or {}
    local out, err = dir .. "/stdout.txt", dir .. "/stderr.txt"
    local cmd = ("cd %s && %s timeout -k 5 60 %s %s >%s 2>%s </dev/null"):format(
      sh_quote(opts.cwd or dir), opts.env or "", sh_quote(opts.bin or BIN), args, sh_quote(out), sh_quote(err))
    local _, how, code = os.execute(cmd)
    if how == "signal" then code = 128 + code end
    return code, read(out), read(err)
  end

  describe("help", function()
    it("says what each command takes and the exit statuses", function()
      local code, general = run("--help")
      assert.are.equal(0, code)
      for _, s in ipairs({ "usage: chronis [options] <command>", "run [APP.lua]", "check TARGET", "migrate",
        "env", "help [COMMAND]", "--log-format", "chronis help COMMAND",
        "exit status: 0 success; 1 failure", "2 usage error" }) do
        assert.truthy(has(general, s), s .. " missing from:\n" .. general)
      end
      local _, via_help = run("help")
      assert.are.equal(general, via_help)
      for cmd, wants in pairs({
        run = { "usage: chronis run [options] [APP.lua]", "--scripts DIR", "--storage URL", "examples:",
          "chronis run --storage memory: app.lua", "exit status: 0 once stopped by a signal",
          "--http ADDR", "--http-token TOKEN" },
        serve = { "usage: chronis serve [--storage URL] [--http ADDR] [--http-token TOKEN]",
          "never started", "CHRONIS_HTTP_TOKEN", "examples:", "exit status:" },
        check = { "usage: chronis check [--as handler|adapter|app] TARGET", "never", "lua:SCRIPT?option=value",
          "--as KIND", "examples:", "chronis check 'lua:adapters/file.lua?path=/tmp/jobs.json'", "exit status:" },
        migrate = { "usage: chronis migrate --storage postgres://", "--status", "examples:", "exit status:" },
        env = { "usage: chronis env", "eval \"$(chronis env)\"" },
      }) do
        local c1, own = run(cmd .. " --help")
        assert.are.equal(0, c1)
        for _, s in ipairs(wants) do assert.truthy(has(own, s), s .. " missing from:\n" .. own) end
        local c2, via = run("help " .. cmd)
        assert.are.equal(0, c2)
        assert.are.equal(own, via)
        local c3, before = run("--help " .. cmd)
        assert.are.equal(0, c3)
        assert.are.equal(own, before)
      end
    end)

    it("suggests the closest command, option or value, with exit status 2", function()
      for args, want in pairs({
        ["chek app.lua"] = "chronis: unknown command 'chek'; did you mean 'check'?",
        ["help chek"] = "chronis: unknown command 'chek'; did you mean 'check'?",
        ["fly"] = "chronis: unknown command 'fly' (expected run, serve, check, migrate, env, jobs, stats, help)",
        ["--storge memory: run app.lua"] = "chronis: unknown option '--storge'; did you mean '--storage'?",
        ["run --scrips dir app.lua"] = "chronis: unknown option '--scrips'; did you mean '--scripts'?",
        ["run --status app.lua"] = "chronis: --status is an option of migrate, not of run",
        ["migrate --http 127.0.0.1:1"] = "chronis: --http is an option of run/serve, not of migrate",
        ["run --storage"] = "chronis: option --storage needs a value (--storage URL)",
        ["check --as app2 x.lua"] = "chronis: invalid --as 'app2' (handler, adapter or app)",
        ["run a.lua b.lua"] = "chronis: unexpected argument 'b.lua' (usage: chronis run [APP.lua])",
        ["check"] = "chronis: check needs a TARGET",
      }) do
        local code, out, err = run(args)
        assert.are.equal(2, code, args .. ": " .. err)
        assert.are.equal("", out, args)
        assert.truthy(has(err, want), args .. ": " .. err)
      end
    end)
  end)

  describe("check", function()
    -- An app that leaves a file when it runs, and a store file when it
    -- gets as far as its scheduler.
    local APP = [[
local chronis = require "chronis"
io.open("RAN", "w"):close()
local s = chronis.scheduler {}
s:every { minutes = 5 }:run("x")
s:start()
]]

    it("only parses an app: it says so and runs nothing of it", function()
      write(dir .. "/app.lua", APP)
      local code, out, err = run("check app.lua")
      assert.are.equal(0, code, err)
      assert.are.equal("app.lua: app: syntax ok; not run (check never runs an app; chronis run app.lua does)\n", out)
      assert.is_false(U.exists(dir .. "/RAN"), "check ran the app")
      assert.is_false(U.exists(dir .. "/chronis.db"), "check opened the app's store")
      -- Asked to treat it as a handler or an adapter, it still does not run it.
      for _, as in ipairs({ "handler", "adapter" }) do
        code, out = run("check --as " .. as .. " app.lua")
        assert.are.equal(1, code)
        assert.truthy(has(out, "error: app.lua returns nothing: not a " .. as), out)
        assert.truthy(has(out, "chronis check --as app app.lua"), out)
        assert.is_false(U.exists(dir .. "/RAN"), "check --as " .. as .. " ran the app")
      end
      -- --as app never loads even a script that returns a value.
      write(dir .. "/h.lua", 'io.open("RAN", "w"):close()\nreturn function() end\n')
      code, out = run("check --as app h.lua")
      assert.are.equal(0, code)
      assert.truthy(has(out, "h.lua: app: syntax ok; not run"), out)
      assert.is_false(U.exists(dir .. "/RAN"), "check --as app loaded the script")
    end)

    it("reports an app's syntax error with file:line, exit status 1", function()
      write(dir .. "/app.lua", 'local chronis = require "chronis"\n\nlocal = 3\n')
      local code, out = run("check app.lua")
      assert.are.equal(1, code)
      assert.truthy(out:match("^error: app%.lua:3: "), out)
    end)

    it("opens an adapter with the options of a lua: or file: URL", function()
      local json = dir .. "/jobs.json"
      local code, out, err = run("check " .. sh_quote("lua:" .. ROOT .. "/adapters/file.lua?path=" .. json))
      assert.are.equal(0, code, out .. err)
      assert.truthy(has(out, "storage adapter"), out)
      assert.truthy(out:find("\n  create_job%s+present"), out)
      assert.truthy(out:find("\n  close%s+present"), out)
      code, out = run("check " .. sh_quote("file:" .. json))
      assert.are.equal(0, code, out)
      assert.truthy(out:find("\n  claim_due_jobs%s+present"), out)
      -- Without its options, the constructor refuses, and check says how
      -- to give them.
      code, out = run("check " .. sh_quote(ROOT .. "/adapters/file.lua"))
      assert.are.equal(1, code)
      assert.truthy(has(out, "error: file store: option 'path' is required"), out)
      assert.truthy(has(out, "chronis check 'lua:" .. ROOT .. "/adapters/file.lua?option=value&...'"), out)
      -- A misspelt option of the URL is named with the right one.
      code, out = run("check " .. sh_quote("lua:" .. ROOT .. "/adapters/file.lua?pth=" .. json))
      assert.are.equal(1, code)
      assert.truthy(has(out, "unknown option 'pth'; did you mean 'path'?"), out)
      code, out = run("check sqlite:x.db")
      assert.are.equal(1, code)
      assert.truthy(has(out, "check opens lua: and file: stores"), out)
    end)

    -- docs/adapters.md, CHR_STORE_OPS and the bridge agree: close is
    -- optional for a store written in Lua.
    it("takes close as optional, as the bridge does", function()
      local methods = {}
      for _, m in ipairs({ "create_job", "get_job", "update_job", "compare_and_swap_job", "delete_job",
        "query_jobs" }) do
        methods[#methods + 1] = ("function S:%s(a, b, c) end"):format(m)
      end
      assert.is_true(U.sh("mkdir " .. sh_quote(dir .. "/adapters")))
      write(dir .. "/adapters/noclose.lua", "local S = {}\n" .. table.concat(methods, "\n")
        .. "\nreturn function() return setmetatable({}, { __index = S }) end\n")
      local code, out = run("check adapters/noclose.lua")
      assert.are.equal(0, code, out)
      assert.truthy(out:find("\n  close%s+absent %(optional: nothing to release"), out)
      -- The bridge opens it, and closing it is no error.
      write(dir .. "/app.lua", [[
local chronis = require "chronis"
local store = chronis.storage.open("lua:adapters/noclose.lua")
store:close()
local ok, err = pcall(store.get_job, store, "x")
print(ok, err.code)
]])
      local out2, err2
      code, out2, err2 = run("--storage memory: run app.lua")
      assert.are.equal(0, code, err2)
      assert.are.equal("false\tunavailable\n", out2)
    end)
  end)

  describe("storage", function()
    it("suggests the scheme a file path needs, before running anything", function()
      write(dir .. "/app.lua", 'io.open("RAN", "w"):close()\n')
      local code, out, err = run("--storage " .. dir .. "/x.db run app.lua")
      assert.are.equal(2, code)
      assert.are.equal("", out)
      assert.truthy(has(err, "chronis: --storage: invalid storage URL '" .. dir .. "/x.db': no scheme; "
        .. "did you mean 'sqlite:" .. dir .. "/x.db'?"), err)
      assert.is_false(U.exists(dir .. "/RAN"))
      code, _, err = run("run app.lua", { env = "CHRONIS_STORAGE=jobs.sqlite3" })
      assert.are.equal(2, code)
      assert.truthy(has(err, "chronis: CHRONIS_STORAGE: invalid storage URL 'jobs.sqlite3': no scheme; "
        .. "did you mean 'sqlite:jobs.sqlite3'?"), err)
      code, _, err = run("--storage sqlit:x.db run app.lua")
      assert.are.equal(2, code)
      assert.truthy(has(err, "unknown scheme 'sqlit'; did you mean 'sqlite:'?"), err)
    end)

    it("names every misspelt store option at once", function()
      write(dir .. "/app.lua", 'local chronis = require "chronis"\nchronis.scheduler {}\n')
      local code, _, err = run("--storage 'sqlite:x.db?busy_timout=5&synchronus=off' run app.lua")
      assert.are.equal(1, code)
      assert.truthy(has(err, "the default storage (--storage or CHRONIS_STORAGE): invalid storage URL "
        .. "'sqlite:x.db?busy_timout=5&synchronus=off': unknown options 'busy_timout' (did you mean "
        .. "'busy_timeout'?) and 'synchronus' (did you mean 'synchronous'?)"), err)
      assert.is_false(U.exists(dir .. "/x.db"))
    end)

    it("logs the store each scheduler runs on, passwords hidden", function()
      local redis = require("support.redis")
      local srv = redis.start()
      srv:cli("CONFIG", "SET", "requirepass", "s3cret")
      local url = ("redis://:s3cret@127.0.0.1:%d/0"):format(srv.port)
      local ok, e = pcall(function()
        write(dir .. "/app.lua", ([[
local chronis = require "chronis"
local a = chronis.scheduler { storage = %q, node_id = "a", max_workers = 4 }
local b = chronis.scheduler { node_id = "b" }
b:handler("quit", function() chronis.stop() end)
a:start()
b:start()
b:once(chronis.time.now()):run("quit")
]]):format(url))
        local code, _, err = run("--storage memory: run app.lua")
        assert.are.equal(0, code, err)
        assert.truthy(has(err, "default storage memory:, for schedulers created without one"), err)
        assert.truthy(has(err, ("scheduler a on redis://:***@127.0.0.1:%d/0 (4 workers)"):format(srv.port)), err)
        assert.truthy(has(err, "scheduler b on memory: (20 workers)"), err)
        assert.is_false(has(err, "s3cret"), err)
        -- The default named on the command line is shown without its password too.
        write(dir .. "/app.lua", [[
local chronis = require "chronis"
local s = chronis.scheduler { storage = "sqlite:jobs.db", node_id = "own" }
s:handler("quit", function() chronis.stop() end)
s:start()
s:once(chronis.time.now()):run("quit")
]])
        code, _, err = run("--storage " .. sh_quote(url) .. " run app.lua")
        assert.are.equal(0, code, err)
        assert.truthy(has(err, ("default storage redis://:***@127.0.0.1:%d/0, for schedulers created"):format(srv.port)), err)
        assert.truthy(has(err, "scheduler own on sqlite:jobs.db (20 workers)"), err)
        assert.is_false(has(err, "s3cret"), err)
      end)
      srv:stop()
      assert(ok, e)
    end)
  end)

  describe("errors of the app", function()
    for _, case in ipairs({
      { "a bad option", 'local chronis = require "chronis"\nchronis.scheduler { max_worker = 3 }\n',
        "chronis: app.lua:2: unknown scheduler option 'max_worker'; did you mean 'max_workers'?\n" },
      { "a bad config key", 'local chronis = require "chronis"\nlocal s = chronis.scheduler {}\n'
        .. 's:every { minutes = 5 }:config { retri = 2 }:run("x")\n',
        "chronis: app.lua:3: unknown config option 'retri'; did you mean 'retry'?\n" },
      { "a runtime error", 'local chronis = require "chronis"\nlocal x\nx.field = 1\n',
        "chronis: app.lua:3: attempt to index a nil value (local 'x')\n" },
      { "a syntax error", 'local chronis = require "chronis"\n\nlocal = 3\n',
        "chronis: app.lua:3: <name> expected near '='\n" },
      { "a bad argument", 'local chronis = require "chronis"\nlocal s = chronis.scheduler {}\n\n'
        .. 's:every(5)\n',
        "chronis: app.lua:4: every: the interval must be a table such as {minutes = 5}, got number\n" },
    }) do
      local what, source, line = case[1], case[2], case[3]
      it(what .. ": one line naming the app's line, no traceback", function()
        write(dir .. "/app.lua", source)
        local code, _, err = run("--storage memory: run app.lua")
        assert.are.equal(1, code)
        assert.truthy(has(err, line), err)
        assert.are.equal(1, count(err, "chronis: "), err)
        assert.is_false(has(err, "traceback"), err)
        assert.is_false(has(err, "chronis/init.lua"), err)
        -- --log-level debug adds the traceback.
        code, _, err = run("--log-level debug --storage memory: run app.lua")
        assert.are.equal(1, code)
        assert.truthy(has(err, line:sub(1, -2)), err)
        if what ~= "a syntax error" then assert.truthy(has(err, "stack traceback:"), err) end
      end)
    end
  end)

  describe("finding the library", function()
    -- A small app on the JSON file store (an adapter found in the library's
    -- share folder) that stops itself.
    local APP = [[
local chronis = require "chronis"
local s = chronis.scheduler { storage = "file:jobs.json", polling_interval = 0.1 }
s:handler("hello", function(job) print("HELLO " .. job.kwargs.who) io.stdout:flush() chronis.stop() end)
s:once(chronis.time.now()):run("hello", { who = "world" })
s:start()
]]
    local PLAIN = [[
local chronis = require "chronis"
local s = chronis.scheduler { polling_interval = 0.1 }
s:handler("hello", function(job) print("PLAIN " .. job.kwargs.who) chronis.stop() end)
s:once(chronis.time.now()):run("hello", { who = "lua" })
s:start()
chronis.run()
]]

    it("chronis env lets plain lua5.4 run an app from anywhere", function()
      write(dir .. "/plain.lua", PLAIN)
      local out = dir .. "/out.txt"
      assert.is_true(U.sh(("cd %s && eval \"$(%s env)\" && env -u LUA_INIT lua5.4 plain.lua >%s 2>&1"):format(
        sh_quote(dir), sh_quote(BIN), sh_quote(out))), read(out))
      assert.truthy(has(read(out), "PLAIN lua"), read(out))
    end)

    it("installed with make install, or copied elsewhere", function()
      local src, prefix, elsewhere = dir .. "/src", dir .. "/prefix", dir .. "/elsewhere"
      assert.is_true(U.sh(("mkdir -p %s/spec %s && cd %s && cp -r Makefile tools scripts runtime adapters lua %s/ "
        .. "&& cp spec/core_test.c %s/spec/"):format(sh_quote(src), sh_quote(elsewhere), sh_quote(ROOT),
        sh_quote(src), sh_quote(src))))
      local log = dir .. "/make.log"
      assert.is_true(U.sh(("cd %s && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u SANITIZER -u LD_PRELOAD "
        .. "make -j2 install PREFIX=%s >%s 2>&1"):format(sh_quote(src), sh_quote(prefix), sh_quote(log))),
        read(log))
      for _, f in ipairs({ "bin/chronis", "share/chronis/lua/chronis/init.lua", "share/chronis/adapters/file.lua",
        "lib/lua/5.4/chronis/core.so", "lib/libchronis.a", "include/chronis/store.h" }) do
        assert.is_true(U.exists(prefix .. "/" .. f), f .. " was not installed")
      end
      write(elsewhere .. "/app.lua", APP)
      write(elsewhere .. "/plain.lua", PLAIN)
      local plain = { cwd = elsewhere, env = "env -u LD_PRELOAD" }
      local function with(bin)
        return { cwd = elsewhere, env = plain.env, bin = bin }
      end
      local code, out, err = run("--version", with(prefix .. "/bin/chronis"))
      assert.are.equal(0, code, err)
      assert.truthy(has(out, "chronis 0.1.0"), out)
      code, out, err = run("run app.lua", with(prefix .. "/bin/chronis"))
      assert.are.equal(0, code, err)
      assert.truthy(has(out, "HELLO world"), out .. err)
      code, out = run("env", with(prefix .. "/bin/chronis"))
      assert.are.equal(0, code)
      assert.truthy(has(out, prefix .. "/share/chronis/lua/?.lua"), out)
      assert.truthy(has(out, prefix .. "/lib/lua/5.4/?.so"), out)
      local res = elsewhere .. "/plain.txt"
      assert.is_true(U.sh(("cd %s && eval \"$(%s env)\" && env -u LD_PRELOAD lua5.4 plain.lua >%s 2>&1"):format(
        sh_quote(elsewhere), sh_quote(prefix .. "/bin/chronis"), sh_quote(res))), read(res))
      assert.truthy(has(read(res), "PLAIN lua"), read(res))
      -- A copy of the built executable: the install prefix it was built
      -- with, then the source tree it was built from.
      local copy = elsewhere .. "/bin/chronis"
      assert.is_true(U.sh(("mkdir -p %s/bin && cp %s/build/chronis %s"):format(sh_quote(elsewhere), sh_quote(src),
        sh_quote(copy))))
      assert.is_true(U.sh(("mv %s %s.away"):format(sh_quote(src), sh_quote(src))))
      os.remove(elsewhere .. "/jobs.json")
      code, out, err = run("run app.lua", with(copy))
      assert.are.equal(0, code, err)
      assert.truthy(has(out, "HELLO world"), out .. err)
      assert.is_true(U.sh(("mv %s.away %s && mv %s %s.away"):format(sh_quote(src), sh_quote(src), sh_quote(prefix),
        sh_quote(prefix))))
      os.remove(elsewhere .. "/jobs.json")
      code, out, err = run("run app.lua", with(copy))
      assert.are.equal(0, code, err)
      assert.truthy(has(out, "HELLO world"), out .. err)
      code, out = run("env", with(copy))
      assert.truthy(has(out, src .. "/lua/?.lua"), out)
      -- Neither: it says where it looked.
      assert.is_true(U.sh(("mv %s %s.away"):format(sh_quote(src), sh_quote(src))))
      code, out, err = run("run app.lua", with(copy))
      assert.are.equal(1, code)
      assert.truthy(has(err, "chronis: cannot find the chronis Lua library (chronis/init.lua); looked in "), err)
      assert.truthy(has(err, prefix .. "/share/chronis/lua"), err)
      assert.truthy(has(err, src .. "/lua"), err)
    end)
  end)
end)
