-- A TCP server on a free loopback port that accepts every connection and
-- never answers: a server that is up but hung, or a network that drops
-- packets after the handshake, as a client sees it. Runs in node; exits by
-- itself when the busted process goes away.
--
--   local silent = require("support.silent_server").start()
--   silent.port
--   silent:stop()
local U = require "support.util"

local M = {}

local JS = [[
const net = require('net')
const held = []
const server = net.createServer((c) => { held.push(c); c.on('error', () => {}) })
server.listen(0, '127.0.0.1', () => console.log(server.address().port + ' ' + process.pid))
const parent = process.ppid
setInterval(() => { if (process.ppid !== parent) process.exit(0) }, 300)
]]

function M.start()
  assert(U.has_command("node"), "node is missing: run 'make deps' (Node.js runs the spec servers)")
  local p = assert(io.popen("exec node -e " .. U.sh_quote(JS), "r"))
  local line = p:read("l")
  assert(line, "the silent test server did not start")
  local port, pid = line:match("^(%d+) (%d+)$")
  local s = { port = math.tointeger(tonumber(port)), pid = math.tointeger(tonumber(pid)), pipe = p }
  function s.stop(self)
    if self.pipe == nil then return end
    os.execute("kill " .. self.pid .. " 2>/dev/null")
    self.pipe:close()
    self.pipe = nil
  end
  return s
end

return M
