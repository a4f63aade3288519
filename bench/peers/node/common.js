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

// B1's creation phase: n jobs added in batches of `size`, each batch of
// make(i) items passed to add(batch). Returns its wall and CPU seconds.
async function createInBatches(n, size, make, add) {
  const c0 = cpu(), w0 = mono();
  for (let i = 0; i < n; i += size) {
    const batch = [];
    for (let j = i; j < Math.min(n, i + size); j++) batch.push(make(j));
    await add(batch);
  }
  return { createS: mono() - w0, createCpu: cpu() - c0 };
}

// B1's run phase, counted: started() at each run's start, ok() or fail()
// at its end. `first` is when the first run started and `last` when the
// n-th ended (monotonic s); `finished` resolves then.
function burstTally(n) {
  const t = { done: 0, failed: 0, first: null, last: null };
  t.finished = new Promise((resolve) => {
    const check = () => {
      if (t.done + t.failed >= n && t.last === null) { t.last = mono(); resolve(); }
    };
    t.started = () => { if (t.first === null) t.first = mono(); };
    t.ok = () => { t.done++; check(); };
    t.fail = () => { t.failed++; check(); };
  });
  return t;
}

function version(pkg) {
  const file = path.join(__dirname, 'node_modules', pkg, 'package.json');
  return JSON.parse(fs.readFileSync(file, 'utf8')).version;
}

module.exports = { mono, cpu, emit, pct, version, createInBatches, burstTally };
