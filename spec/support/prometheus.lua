-- A test Prometheus server (Debian's /usr/bin/prometheus) on a free
-- loopback port, in a temporary folder, scraping the targets it is given
-- every second; stopped by the specs whatever happens: by stop() in a
-- teardown, by a __gc sentinel when the Lua state closes, and by a
-- watchdog shell that kills it once the Lua process is gone.
--
--   local prometheus = require "support.prometheus"
--   local prom = prometheus.start{ targets = { "127.0.0.1:PORT" } }
--   prom.url                             -- "http://127.0.0.1:PORT"
--   prom:stop()
--
-- Its HTTP API is asked through chronis.http (on the spec's loop), so that
-- a chronis server on the same loop is scraped meanwhile. A missing binary
-- is an error that says how to install it, so the spec fails instead of
-- being skipped.
local U = require "support.util"

local M = {}
local sh_quote = U.sh_quote

M.BIN = "/usr/bin/prometheus"

local Server = {}
Server.__index = Server

function Server:pid()
  local f = io.open(self.dir .. "/prometheus.pid")
  if not f then return nil end
  local pid = tonumber(f:read("a"):match("%d+"))
  f:close()
  return pid
end

function Server:log()
  return U.read(self.dir .. "/prometheus.log", "(no log)")
end

local alive = U.alive

-- Starts prometheus on self.port; returns whether it stays up (a port
-- taken meanwhile makes it exit at once).
function Server:launch()
  local args = {
    M.BIN, "--config.file=" .. self.dir .. "/prometheus.yml",
    "--storage.tsdb.path=" .. self.dir .. "/data",
    "--web.listen-address=127.0.0.1:" .. self.port,
    "--log.level=warn",
  }
  local q = {}
  for i, a in ipairs(args) do q[i] = sh_quote(a) end
  os.remove(self.dir .. "/prometheus.pid")
  os.execute(("(%s > %s 2>&1 & echo $! > %s)"):format(table.concat(q, " "),
    sh_quote(self.dir .. "/prometheus.log"), sh_quote(self.dir .. "/prometheus.pid")))
  -- The watchdog: while the Lua process lives and the server is meant to
  -- run, wait; if the Lua process went away first, kill the server.
  os.execute(("(while kill -0 %d 2>/dev/null && [ -e %s ]; do sleep 0.5; done; "
    .. "[ -e %s ] && kill -9 $(cat %s) 2>/dev/null; [ -e %s ] && rm -rf %s) >/dev/null 2>&1 &")
    :format(U.PID, sh_quote(self.dir .. "/running"), sh_quote(self.dir .. "/running"),
      sh_quote(self.dir .. "/prometheus.pid"), sh_quote(self.dir .. "/running"), sh_quote(self.dir)))
  U.sleep(0.2)
  return alive(self:pid())
end

-- Starts a server scraping opts.targets (host:port list) at /metrics
-- every second.
function M.start(opts)
  local f = io.open(M.BIN)
  if not f then
    error(M.BIN .. " not found: the Prometheus spec scrapes chronis with a real Prometheus. "
      .. "Install it with `apt-get install prometheus`.", 2)
  end
  f:close()
  local self = setmetatable({ dir = U.tmpdir("chronis-prometheus") }, Server)
  local targets = {}
  for i, t in ipairs(opts.targets) do targets[i] = "'" .. t .. "'" end
  U.write(self.dir .. "/prometheus.yml", table.concat({
    "global:",
    "  scrape_interval: 1s",
    "  scrape_timeout: 1s",
    "  evaluation_interval: 1s",
    "scrape_configs:",
    "  - job_name: chronis",
    "    metrics_path: /metrics",
    "    static_configs:",
    "      - targets: [" .. table.concat(targets, ", ") .. "]",
    "",
  }, "\n"))
  U.write(self.dir .. "/running", "")
  for _ = 1, 10 do
    self.port = U.free_port()
    if self:launch() then
      self.url = ("http://127.0.0.1:%d"):format(self.port)
      self.sentinel = setmetatable({}, { __gc = function() self:stop() end })
      return self
    end
  end
  local log = self:log()
  self:stop()
  error("could not start prometheus on a free port; its log:\n" .. log, 2)
end

function Server:stop()
  if self.stopped then return end
  self.stopped = true
  local pid = self:pid()
  if alive(pid) then
    os.execute("kill -TERM " .. pid)
    for _ = 1, 100 do
      if not alive(pid) then break end
      U.sleep(0.05)
    end
    if alive(pid) then os.execute("kill -KILL " .. pid) end
  end
  os.remove(self.dir .. "/running")
  U.remove_tree(self.dir)
end

return M
