-- chronis.scripts: loading handler and adapter scripts, each in an
-- environment of its own, with a time bound at load, and reloading them
-- when their files change (handlers: runs that start afterwards use the new
-- version; adapters: calls that start afterwards use the new instance).
local core = require "chronis.core"

local M = {
  load_time_limit = 5, -- seconds a script's main chunk may run
  debounce = 0.1,      -- seconds of quiet before a changed file is read
  logger = nil,        -- function(level, msg): replaces the process log
}

-- The folder chronis is installed in (this file is <root>/lua/chronis/).
local ROOT = (debug.getinfo(1, "S").source:match("^@(.*)lua/chronis/scripts%.lua$") or "./")
if ROOT == "" then ROOT = "./" end

local function log(level, msg, fields)
  if M.logger then return M.logger(level, msg, fields) end
  core.engine.log(level, msg, fields)
end

local function chronis()
  return require "chronis"
end

--- A fresh environment: reads fall through to the standard globals and
--- `chronis`; writes stay in the script.
function M.env()
  return setmetatable({}, {
    __index = function(_, k)
      local v = _G[k]
      if v == nil and k == "chronis" then return chronis() end
      return v
    end,
  })
end

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local text = f:read("a")
  f:close()
  return text
end

--- Loads a script as text with chunk name @path in its own environment and
--- runs its main chunk under a time bound. Returns the chunk's value, or
--- nil and a message carrying file:line.
function M.load(path, limit)
  local text, err = read_file(path)
  if not text then return nil, ("cannot read %s"):format(err) end
  local env = M.env()
  local chunk, cerr = load(text, "@" .. path, "t", env)
  if not chunk then return nil, cerr end
  limit = limit or M.load_time_limit
  local co = coroutine.create(chunk)
  local deadline = os.clock() + limit
  debug.sethook(co, function()
    if os.clock() > deadline then
      error(("%s: loading took longer than %gs (a loop at load time?)"):format(path, limit), 2)
    end
  end, "", 10000)
  local ok, value = coroutine.resume(co)
  debug.sethook(co)
  if not ok then return nil, tostring(value) end
  if coroutine.status(co) ~= "dead" then
    return nil, path .. ": the script yielded while loading"
  end
  return value, nil, env
end

local function check_handler_value(path, v)
  if type(v) == "function" then return v end
  if type(v) == "table" and type(v.run) == "function" then return v end
  return nil, ("%s: returned %s, expected a function or a table with run = function"):format(
    path, type(v) == "table" and "a table without run" or type(v))
end

-- ---- handler folders ----

-- path -> { name =, mtime =, size = }
local known = {}
local watchers = {}

local function handler_name(base, path)
  local rel = path:sub(#base + 2):gsub("%.lua$", "")
  return (rel:gsub("/", "."))
end

local function scan(dir, out)
  local ok, entries = pcall(core.fs.list, dir)
  if not ok then return out end
  table.sort(entries, function(a, b) return a.name < b.name end)
  for _, e in ipairs(entries) do
    local p = dir .. "/" .. e.name
    if e.type == "dir" and e.name:sub(1, 1) ~= "." then
      out.dirs[#out.dirs + 1] = p
      scan(p, out)
    elseif e.type == "file" and e.name:match("%.lua$") and e.name:sub(1, 1) ~= "." then
      out.files[#out.files + 1] = p
    end
  end
  return out
end

local function register(name, path, reload)
  local v, err = M.load(path)
  if err == nil then v, err = check_handler_value(path, v) end
  if err then
    if reload then
      core.metrics.script_reload(false)
      log("error", ("failed to reload handler %s: %s; keeping the previous version"):format(name, err))
    else
      log("error", ("failed to load handler %s: %s"):format(name, err))
    end
    return false, err
  end
  chronis().handlers[name] = v
  if reload then
    core.metrics.script_reload(true)
    log("info", ("reloaded handler %s (%s)"):format(name, path))
  end
  return true
end

local function sync_folder(base, first)
  local found = scan(base, { files = {}, dirs = {} })
  local seen = {}
  for _, path in ipairs(found.files) do
    seen[path] = true
    local st = core.fs.stat(path)
    local k = known[path]
    if not k then
      local name = handler_name(base, path)
      known[path] = { name = name, mtime = st and st.mtime, size = st and st.size, base = base }
      register(name, path, false)
      if not first then log("info", ("loaded handler %s (%s)"):format(name, path)) end
    elseif st and (st.mtime ~= k.mtime or st.size ~= k.size) then
      k.mtime, k.size = st.mtime, st.size
      register(k.name, path, true)
    end
  end
  for path, k in pairs(known) do
    if k.base == base and not seen[path] then
      known[path] = nil
      chronis().handlers[k.name] = nil
      log("info", ("unregistered handler %s (%s was removed)"):format(k.name, path))
    end
  end
  return found.dirs
end

local pending = {}

-- Re-reads a folder once events have been quiet for DEBOUNCE seconds
-- (editors that save by writing a temp file and renaming it fire several
-- events for one save).
local function schedule_sync(base)
  local gen = (pending[base] or 0) + 1
  pending[base] = gen
  core.spawn(function()
    core.sleep(M.debounce)
    if pending[base] ~= gen then return end
    pending[base] = nil
    local dirs = sync_folder(base, false)
    for _, d in ipairs(dirs) do
      if not watchers[d] then
        watchers[d] = core.fs.watch(d, function() schedule_sync(base) end)
      end
    end
  end)
end

--- load_handlers(dir [, watch=true]): registers every dir/**/*.lua as a
--- process-wide handler named by its path (billing/invoice.lua ->
--- billing.invoice) and, unless watch is false, reloads them on change.
function M.load_handlers(dir, watch)
  dir = dir:gsub("/+$", "")
  local st = core.fs.stat(dir)
  if not st or st.type ~= "dir" then
    error(core.error("invalid", ("handler folder '%s' does not exist"):format(dir)), 2)
  end
  local dirs = sync_folder(dir, true)
  if watch ~= false then
    for _, d in ipairs({ dir, table.unpack(dirs) }) do
      if not watchers[d] then
        watchers[d] = core.fs.watch(d, function() schedule_sync(dir) end)
      end
    end
  end
  local names = {}
  for _, k in pairs(known) do
    if k.base == dir and chronis().handlers[k.name] then names[#names + 1] = k.name end
  end
  table.sort(names)
  return names
end

--- Stops watching every handler folder.
function M.unwatch_all()
  for d, w in pairs(watchers) do
    w:close()
    watchers[d] = nil
  end
end

-- ---- adapters ----

local function resolve(path)
  if core.fs.stat(path) then return path end
  if path:sub(1, 1) ~= "/" and core.fs.stat(ROOT .. path) then return ROOT .. path end
  return path
end

-- Option values from a URL or a storage option table arrive as strings:
-- "true"/"false" and numbers are given their type, as a constructor
-- called from Lua would get them.
local function typed(v)
  if v == "true" then return true elseif v == "false" then return false end
  if tonumber(v) and v:match("^%-?%d+%.?%d*$") then return tonumber(v) end
  return v
end

local function instantiate(path, opts)
  local v, err = M.load(path)
  if err then error(core.error("invalid", ("lua adapter '%s': %s"):format(path, err)), 0) end
  if type(v) == "function" then
    local ok, inst = pcall(v, opts)
    if not ok then
      error(type(inst) == "table" and inst or
            core.error("invalid", ("lua adapter '%s': constructor failed: %s"):format(path, tostring(inst))), 0)
    end
    v = inst
  elseif type(v) == "table" and type(v.new) == "function" then
    v = v.new(opts)
  end
  if type(v) ~= "table" then
    error(core.error("invalid", ("lua adapter '%s': returned %s, expected a table of methods or a constructor"):format(
      path, type(v))), 0)
  end
  return v
end

--- Opens a script adapter and reloads it when its file changes.
function M.open_adapter(path, opts)
  opts = opts or {}
  local file = resolve(path)
  local inst = instantiate(file, opts)
  local store, handle = core.lua_store.from_table(inst, {
    name = path, timeout = opts.adapter_timeout or 30, reloadable = true,
  })
  local dir, base = file:match("^(.*)/([^/]+)$")
  if not dir then dir, base = ".", file end
  local st = core.fs.stat(file)
  local stamp = st and (st.mtime .. ":" .. st.size)
  local gen = 0
  local ok, w = pcall(core.fs.watch, dir, function(name)
    if name ~= base then return end
    gen = gen + 1
    local mine = gen
    core.spawn(function()
      core.sleep(M.debounce)
      if mine ~= gen then return end
      local now = core.fs.stat(file)
      local s2 = now and (now.mtime .. ":" .. now.size)
      if s2 == nil or s2 == stamp then return end
      stamp = s2
      local ok2, new = pcall(instantiate, file, opts)
      if not ok2 then
        core.metrics.script_reload(false)
        log("error", ("failed to reload adapter %s: %s; keeping the previous version"):format(
          path, tostring(new)))
        return
      end
      local ok3, err = pcall(core.lua_store.swap, handle, new)
      core.metrics.script_reload(ok3)
      if ok3 then log("info", ("reloaded adapter %s (%s)"):format(path, file))
      else log("error", ("failed to reload adapter %s: %s"):format(path, tostring(err))) end
    end)
  end)
  if ok then core.lua_store.set_watcher(handle, w) end -- closed with the store
  return store
end

--- Opens the script adapter at path with the options of a lua: or file:
--- URL (or option table), all strings: see typed().
function M.open_adapter_options(path, opts)
  local o = {}
  for k, v in pairs(opts) do o[k] = typed(v) end
  return M.open_adapter(path, o)
end

-- ---- chronis check ----

-- The contract's methods (chronis.storage.operations: name, required,
-- params), required ones first, each group in the table's order.
local function contract_methods()
  local out = {}
  for _, required in ipairs({ true, false }) do
    for _, op in ipairs(core.storage.operations) do
      if op.required == required then out[#out + 1] = op end
    end
  end
  return out
end

local function nparams(fn)
  local info = debug.getinfo(fn, "u")
  return info.nparams, info.isvararg
end

-- Whether a loaded chunk's main function returns a value, read from its
-- bytecode (luac's view, nothing run): handler and adapter scripts end
-- with `return ...`; an app returns nothing. nil when the bytecode is not
-- Lua 5.4's.
local OP_TAILCALL, OP_RETURN, OP_RETURN1 = 69, 70, 72

function M.returns_value(chunk)
  local d = string.dump(chunk, true)
  if d:sub(1, 5) ~= "\27Lua\x54" then return nil end
  -- Header: signature, version, format, 6 check bytes, the sizes of an
  -- instruction, an integer and a number, then a sample of each.
  local isize, intsize, numsize = d:byte(13), d:byte(14), d:byte(15)
  local pos = 16 + intsize + numsize + 1 -- and the main function's upvalue count
  local function varint()
    local x = 0
    repeat
      local b = d:byte(pos)
      pos = pos + 1
      x = (x << 7) | (b & 0x7f)
    until b & 0x80 ~= 0
    return x
  end
  varint()          -- source (stripped)
  varint(); varint() -- first and last line
  pos = pos + 3     -- parameters, vararg, stack size
  for i = 0, varint() - 1 do
    local ins = string.unpack("<I" .. isize, d, pos + i * isize)
    local op, b = ins & 0x7f, (ins >> 16) & 0xff
    if op == OP_TAILCALL or op == OP_RETURN1 or (op == OP_RETURN and b ~= 1) then return true end
  end
  return false
end

-- Checks an adapter instance against the contract; closes it after.
local function check_adapter(name, inst, say)
  say("%s: storage adapter", name)
  local ok = true
  for _, op in ipairs(contract_methods()) do
    local m, fn = op.name, inst[op.name]
    if type(fn) == "function" then
      local n, va = nparams(fn)
      if not va and n < op.params then
        say("  %-24s present, but takes %d parameter(s) (self included); %d expected", m, n, op.params)
        if op.required then ok = false end
      else
        say("  %-24s present", m)
      end
    elseif op.required then
      say("  %-24s MISSING (required)", m)
      ok = false
    elseif m == "close" then
      say("  %-24s absent (optional: nothing to release when the store ends)", m)
    else
      say("  %-24s absent (optional: the engine falls back to per-job calls)", m)
    end
  end
  if type(inst.close) == "function" then pcall(inst.close, inst) end
  return ok
end

-- Opens the adapter script at path with opts (strings, from a URL) as
-- chronis.storage.open would, and checks it.
local function check_adapter_url(target, scheme, opts, say)
  local path = scheme == "file" and "adapters/file.lua" or opts.script
  opts.script = nil
  if scheme == "file" and opts.path == nil then
    say("error: %s: no file path (file:PATH)", target)
    return false
  end
  if path == nil or path == "" then
    say("error: %s: no script path (lua:SCRIPT?option=value&...)", target)
    return false
  end
  local o = {}
  for k, v in pairs(opts) do o[k] = typed(v) end
  local ok, inst = pcall(instantiate, resolve(path), o)
  if not ok then
    say("error: %s", type(inst) == "table" and inst.message or tostring(inst))
    return false
  end
  return check_adapter(target, inst, say)
end

--- Checks a handler or adapter script, an app's syntax, a lua: or file:
--- store URL, or a crontab string, and reports what it provides and what
--- is missing. Returns ok, report lines. check never runs an app: a
--- script whose main chunk returns nothing (or `as` "app") is only
--- parsed. A script that returns a value is loaded in its own
--- environment, as the host loads handlers: a handler, unless `as` is
--- "adapter", the script sits in an adapters/ folder or returns a table
--- of store methods; then its constructor is called (with no options:
--- give them as a lua: URL). Handlers are never called.
function M.check(path, as)
  local out = {}
  local function say(fmt, ...) out[#out + 1] = fmt:format(...) end
  -- A crontab string instead of a file: its reading and next fire times.
  if not core.fs.stat(path) and (path:find("%s") or path:match("^@")) then
    local ok, d = pcall(core.cron.describe, path)
    if not ok then
      say("error: %s", type(d) == "table" and d.message or tostring(d))
      return false, out
    end
    say("%s: cron, %s", path, d.text)
    for _, t in ipairs(d.next) do say("  next %s (%s)", t, core.tz.format_local(t, d.zone)) end
    return true, out
  end
  -- A store URL: its adapter opened with its options.
  local scheme = not core.fs.stat(path) and path:match("^(%a[%w+.%-]*):")
  if scheme then
    local ok, sch, opts = pcall(core.storage.url_options, path)
    if not ok then
      say("error: %s", type(sch) == "table" and sch.message or tostring(sch))
      return false, out
    end
    if sch ~= "lua" and sch ~= "file" then
      say("error: %s: check opens lua: and file: stores (adapters written in Lua); %s: is a store "
        .. "of chronis itself, opened by chronis run --storage", path, sch)
      return false, out
    end
    return check_adapter_url(path, sch, opts, say), out
  end
  local text, rerr = read_file(path)
  if not text then
    say("error: cannot read %s", rerr)
    return false, out
  end
  local chunk, perr = load(text, "@" .. path, "t", {})
  if not chunk then
    say("error: %s", perr)
    return false, out
  end
  local returns = M.returns_value(chunk)
  if as == "app" or (returns == false and as == nil) then
    say("%s: app: syntax ok; not run (check never runs an app; chronis run %s does)", path, path)
    return true, out
  end
  if returns == false then
    say("error: %s returns nothing: not a %s (a handler script returns a function or a table with "
      .. "run, an adapter script its constructor or methods); an app: chronis check --as app %s",
      path, as, path)
    return false, out
  end
  local v, err = M.load(path)
  if err then
    say("error: %s", err)
    return false, out
  end
  if as == nil then
    as = (path:match("adapters/[^/]+$") or (type(v) == "table" and (v.create_job or v.new)))
         and "adapter" or "handler"
  end
  if as == "handler" and (type(v) == "function" or (type(v) == "table" and type(v.run) == "function")) then
    say("%s: handler%s", path, type(v) == "table" and " (table with run)" or " (function)")
    if type(v) == "table" then
      for _, k in ipairs({ "timeout", "retry", "retry_delay", "priority", "if_missed", "misfire_threshold" }) do
        if v[k] ~= nil then say("  default %s = %s", k, tostring(v[k])) end
      end
    end
    return true, out
  end
  if as == "handler" then
    say("error: %s returned %s: not a handler (a function, or a table with run)", path, type(v))
    return false, out
  end
  local inst = v
  if type(v) == "function" or (type(v) == "table" and type(v.new) == "function") then
    local ok, res = pcall(instantiate, path, {})
    if not ok then
      say("error: %s", type(res) == "table" and res.message or tostring(res))
      say("  (an adapter that needs options: chronis check 'lua:%s?option=value&...')", path)
      return false, out
    end
    inst = res
  end
  if type(inst) ~= "table" then
    say("error: %s returned %s: not a handler (function, or table with run) nor an adapter", path, type(v))
    return false, out
  end
  return check_adapter(path, inst, say), out
end

--- The host's start-up: handler folders for an app (--scripts DIR, else
--- handlers/ beside the app, then scripts/handlers), and a watch on the app
--- file itself, which is not reloaded (see docs/handlers.md).
function M.host_setup(app, scripts_dir)
  local dirs = {}
  if scripts_dir then
    dirs[1] = scripts_dir
  else
    local app_dir = app:match("^(.*)/[^/]+$") or "."
    for _, d in ipairs({ app_dir .. "/handlers", "scripts/handlers" }) do
      local st = core.fs.stat(d)
      if st and st.type == "dir" then dirs[#dirs + 1] = d; break end
    end
  end
  local loaded = {}
  for _, d in ipairs(dirs) do
    for _, name in ipairs(M.load_handlers(d)) do loaded[#loaded + 1] = name end
    log("info", ("handlers from %s: %s"):format(d, #loaded > 0 and table.concat(loaded, ", ") or "none"))
  end
  local dir, base = app:match("^(.*)/([^/]+)$")
  if not dir then dir, base = ".", app end
  local st = core.fs.stat(app)
  local stamp = st and (st.mtime .. ":" .. st.size)
  local ok, w = pcall(core.fs.watch, dir, function(name)
    if name ~= base then return end
    local now = core.fs.stat(app)
    local s2 = now and (now.mtime .. ":" .. now.size)
    if s2 and s2 ~= stamp then
      stamp = s2
      log("warn", ("%s changed: the app file is not reloaded; restart chronis to apply it "
        .. "(handlers and adapters reload by themselves)"):format(app))
    end
  end)
  if ok then M._app_watcher = w end
  return loaded
end

return M
