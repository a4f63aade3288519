-- Starts spec/support/http_server.js (a small HTTP and, with a key and a
-- certificate, HTTPS server on free loopback ports) and stops it. The
-- server exits by itself when the busted process goes away.
--
--   local server = require("support.http_server").start{ tls = true }
--   server.url("/hello"), server.https_url("/hello"), server.cert
--   server:stop()
local U = require "support.util"

local M = {}

local sh_quote, have = U.sh_quote, U.has_command

-- A self-signed certificate for 127.0.0.1 in a fresh folder: key, cert.
local function make_cert()
  assert(have("openssl"), "openssl (the command) is missing: run 'make deps'")
  local dir = U.tmpdir("chronis-cert")
  local key, cert = dir .. "/key.pem", dir .. "/cert.pem"
  local ok = os.execute(("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s -out %s -days 2 "
    .. "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1"):format(
    sh_quote(key), sh_quote(cert)))
  assert(ok, "could not make a test certificate with openssl")
  return dir, key, cert
end

function M.start(opts)
  opts = opts or {}
  assert(have("node"), "node is missing: run 'make deps' (Node.js runs the spec servers)")
  local dir, key, cert
  local args = ""
  if opts.tls then
    dir, key, cert = make_cert()
    args = " " .. sh_quote(key) .. " " .. sh_quote(cert)
  end
  local p = assert(io.popen("exec node " .. sh_quote(U.ROOT .. "/spec/support/http_server.js") .. args, "r"))
  local line = p:read("l")
  assert(line, "the test HTTP server did not start")
  local info = require("chronis").json.decode(line)
  local s = { port = info.http, https_port = info.https, pid = info.pid, cert = cert, dir = dir, pipe = p }
  function s.url(path) return ("http://127.0.0.1:%d%s"):format(s.port, path or "/") end
  function s.https_url(path) return ("https://127.0.0.1:%d%s"):format(s.https_port, path or "/") end
  function s.stop(self)
    if self.pipe == nil then return end
    os.execute("kill " .. math.tointeger(self.pid) .. " 2>/dev/null")
    self.pipe:close()
    self.pipe = nil
    if self.dir then U.remove_tree(self.dir) end
  end
  return s
end

return M
