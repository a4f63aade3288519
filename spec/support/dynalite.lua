-- Starts dynalite (a DynamoDB-API server from npm, pinned in
-- spec/package.json and installed by `make deps`) in memory on a free
-- loopback port, waits until it answers, and stops it:
--
--   local dynalite = require("support.dynalite").start()
--   dynalite.endpoint   -- "http://127.0.0.1:PORT"
--   dynalite:stop()
--
-- The server runs under a shell that kills it when the pipe from this
-- process closes: on stop(), and also when the busted process dies, so it
-- never outlives the specs. A missing dynalite raises an error that says
-- to run `make deps` (a failing test, never a skip).
local chronis = require "chronis"
local U = require "support.util"

local M = {}

M.CLI = U.ROOT .. "/spec/node_modules/dynalite/cli.js"

local sh_quote, read = U.sh_quote, U.read

local function answers(endpoint)
  local ok = pcall(chronis.http.request, { method = "POST", url = endpoint, body = "{}", timeout = 1,
    headers = { ["x-amz-target"] = "DynamoDB_20120810.ListTables",
                ["content-type"] = "application/x-amz-json-1.0" } })
  return ok
end

local function start_once()
  local port = U.free_port()
  local log = os.tmpname()
  local cmd = ("node %s --port %d --host 127.0.0.1 --createTableMs 0 --deleteTableMs 0 --updateTableMs 0"
    .. " >%s 2>&1 & c=$!; cat >/dev/null; kill $c 2>/dev/null; wait $c 2>/dev/null"):format(
    sh_quote(M.CLI), port, sh_quote(log))
  local pipe = assert(io.popen("sh -c " .. sh_quote(cmd), "w"))
  local d = { port = port, endpoint = ("http://127.0.0.1:%d"):format(port), pipe = pipe, log = log }
  function d.stop(self)
    if self.pipe then
      self.pipe:close()
      self.pipe = nil
      os.remove(self.log)
    end
  end
  local up = false
  for _ = 1, 300 do
    if read(log, ""):find("listening", 1, true) and answers(d.endpoint) then
      up = true
      break
    end
    chronis.sleep(0.05)
  end
  if not up then
    local text = read(log, "")
    d:stop()
    return nil, text
  end
  return d
end

function M.start()
  if not U.exists(M.CLI) then
    error("dynalite is not installed (" .. M.CLI .. " is missing): run 'make deps', which runs "
      .. "'npm ci --prefix spec'", 2)
  end
  local last
  for _ = 1, 3 do -- the free port may be taken between the pick and the listen
    local d, err = start_once()
    if d then return d end
    last = err
  end
  error("dynalite did not start: " .. tostring(last), 2)
end

return M
