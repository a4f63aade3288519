// Shared by the Node peer scripts: the monotonic clock (process.hrtime,
// CLOCK_MONOTONIC like the other sides), this process's CPU time and the
// one result line the harness reads ("BENCH {json}").
'use strict';
const fs = require('fs');
const path = require('path');

function mono() {
  return Number(process.hrtime.bigint()) / 1e9;
}

function cpu() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

function emit(obj) {
  process.stdout.write('BENCH ' + JSON.stringify(obj) + '\n');
}

function pct(sorted, p) {
  const n = sorted.length;
  if (n === 0) return null;
  const k = Math.max(1, Math.min(n, Math.ceil((p / 100) * n)));
  return sorted[k - 1];
}

function version(pkg) {
  const file = path.join(__dirname, 'node_modules', pkg, 'package.json');
  return JSON.parse(fs.readFileSync(file, 'utf8')).version;
}

module.exports = { mono, cpu, emit, pct, version };
