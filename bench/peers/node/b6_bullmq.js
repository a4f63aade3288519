// B6 I/O-bound handlers on BullMQ: N jobs due now (addBulk), a Worker at
// concurrency C whose processor waits 50 ms, either on a setTimeout
// ("sleep") or on one GET to the local server that answers after 50 ms
// ("http", a keep-alive agent without a socket limit). jobs/s from the
// first processor start to the N-th `completed` event.
// kib_per_handler: VmRSS while the most processors were waiting at once
// (sampled as that count climbs, last at C) minus VmRSS before the
// worker ran, divided by the processors waiting at that sample, in KiB.
// usage: node b6_bullmq.js N REDIS_PORT sleep|http C [TARGET_URL]
'use strict';
const fs = require('fs');
const http = require('http');
const { Queue, Worker } = require('bullmq');
const { cpu, emit, version, createInBatches, burstTally } = require('./common');

const N = Number(process.argv[2]);
const port = Number(process.argv[3]);
const variant = process.argv[4] || 'sleep';
const C = Number(process.argv[5] || 1000);
const target = process.argv[6];
const connection = { host: '127.0.0.1', port, maxRetriesPerRequest: null };
const BULK = 1000;
const WAIT_MS = 50;

function rssKiB() {
  const m = fs.readFileSync('/proc/self/status', 'utf8').match(/VmRSS:\s+(\d+)/);
  return Number(m[1]);
}

const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
function get() {
  return new Promise((resolve, reject) => {
    const req = http.get(target, { agent }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error('status ' + res.statusCode))));
    });
    req.setTimeout(30000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}
// A full collection before the baseline, as the chronis side does: the
// garbage of adding 100,000 jobs would otherwise be freed during the run
// and hide what the waiting processors hold.
require('v8').setFlagsFromString('--expose-gc');
const gc = require('vm').runInNewContext('gc');

const wait = variant === 'sleep' ? () => new Promise((r) => setTimeout(r, WAIT_MS)) : get;

async function main() {
  const queue = new Queue('b6', { connection });
  await queue.waitUntilReady();
  const opts = { removeOnComplete: true, removeOnFail: true };
  const { createS } = await createInBatches(N, BULK,
    () => ({ name: 'io', data: {}, opts }), (batch) => queue.addBulk(batch));

  const tally = burstTally(N);
  let waiting = 0, peak = 0, firstErr = null;
  const markStep = Math.max(1, Math.floor(C / 20));
  let nextMark = markStep, rssAt = null, waitingAt = null;
  gc();
  const rss0 = rssKiB();
  const c1 = cpu();
  const worker = new Worker('b6', async () => {
    tally.started();
    waiting++;
    if (waiting > peak) {
      peak = waiting;
      if (peak >= nextMark) {
        rssAt = rssKiB(); waitingAt = peak;
        nextMark = peak >= C ? Infinity : Math.min(nextMark + markStep, C);
      }
    }
    try { await wait(); } finally { waiting--; }
  }, { connection, concurrency: C, autorun: false });
  worker.on('completed', tally.ok);
  worker.on('failed', (job, err) => { firstErr = firstErr || String(err && err.message); tally.fail(); });
  worker.run();
  await tally.finished;
  const runCpu = cpu() - c1;
  await worker.close();
  const counts = await queue.getJobCounts('wait', 'active', 'delayed', 'prioritized');
  const left = Object.values(counts).reduce((a, b) => a + b, 0);
  await queue.close();
  agent.destroy();
  const { done, failed } = tally;
  const runS = tally.last - tally.first;
  emit({ impl: 'bullmq', store: 'redis', variant, concurrency: C, n: N, done, errors: failed,
         first_error: firstErr, left, create_s: createS, run_s: runS, jobs_per_s: done / runS,
         run_cpu_s: runCpu, peak_waiting: peak, waiting_at: waitingAt, rss0_kib: rss0, rss_at_kib: rssAt,
         kib_per_handler: rssAt === null ? null : (rssAt - rss0) / waitingAt,
         settings: { worker_concurrency: C, addBulk: BULK, removeOnComplete: true,
                     handler: variant === 'sleep' ? 'await setTimeout 50 ms' : 'await http.get (keep-alive agent, server answers after 50 ms)' },
         versions: { bullmq: version('bullmq'), ioredis: version('ioredis'), node: process.versions.node } });
}
main().catch((e) => { console.error(e); process.exit(1); });
