// B6's HTTP target: answers every request with 200 "ok" after DELAY_MS,
// keep-alive, on a free loopback port. The harness starts one per B6 run
// of the scenario and points chronis, BullMQ and APScheduler at it, so
// every system waits on the same server. It writes its port to PORT_FILE
// once listening, and exits when PARENT_PID (the harness) is gone, so an
// interrupted run leaves no server behind.
// usage: node http_target.js DELAY_MS PORT_FILE [PARENT_PID]
'use strict';
const fs = require('fs');
const http = require('http');

const delay = Number(process.argv[2] || 50);
const portFile = process.argv[3];
const parent = Number(process.argv[4] || 0);

let served = 0;
const server = http.createServer((req, res) => {
  req.resume();
  setTimeout(() => {
    served++;
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': '2' });
    res.end('ok');
  }, delay);
});
// 10,000 clients connect at once: a listen backlog that holds them
// (the kernel caps it at net.core.somaxconn), and no limit on requests
// per connection or idle time shorter than a run.
server.keepAliveTimeout = 60000;
server.headersTimeout = 61000;
server.requestTimeout = 0;
server.maxRequestsPerSocket = 0;
server.listen({ host: '127.0.0.1', port: 0, backlog: 65535 }, () => {
  const tmp = portFile + '.tmp';
  fs.writeFileSync(tmp, String(server.address().port) + '\n');
  fs.renameSync(tmp, portFile);
});
if (parent) {
  setInterval(() => {
    try { process.kill(parent, 0); } catch (e) { process.exit(0); }
  }, 1000).unref();
}
process.on('SIGTERM', () => {
  process.stdout.write(`http_target: served ${served}\n`);
  process.exit(0);
});
