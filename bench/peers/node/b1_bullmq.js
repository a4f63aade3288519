// B1 burst on BullMQ: N jobs due now, a no-op processor, one process. A
// Queue filled with addBulk (BullMQ's way to add many jobs) and a Worker
// at concurrency C, removeOnComplete so Redis does not keep 100,000
// finished jobs (BullMQ's production guidance).
// usage: node b1_bullmq.js N REDIS_PORT [CONCURRENCY]
'use strict';
const { Queue, Worker } = require('bullmq');
const { mono, cpu, emit, version } = require('./common');

const N = Number(process.argv[2]);
const port = Number(process.argv[3]);
const concurrency = Number(process.argv[4] || 100);
const connection = { host: '127.0.0.1', port, maxRetriesPerRequest: null };
const BULK = 1000;

async function main() {
  const queue = new Queue('b1', { connection });
  await queue.waitUntilReady();
  const opts = { removeOnComplete: true, removeOnFail: true };
  const c0 = cpu(), w0 = mono();
  for (let i = 0; i < N; i += BULK) {
    const batch = [];
    for (let j = i; j < Math.min(N, i + BULK); j++) batch.push({ name: 'noop', data: {}, opts });
    await queue.addBulk(batch);
  }
  const createS = mono() - w0, createCpu = cpu() - c0;

  let done = 0, failed = 0, first = null, last = null;
  let finish;
  const finished = new Promise((r) => { finish = r; });
  const c1 = cpu();
  const worker = new Worker('b1', async () => {
    if (first === null) first = mono();
  }, { connection, concurrency, autorun: false });
  worker.on('completed', () => {
    done++;
    if (done + failed >= N) { last = mono(); finish(); }
  });
  worker.on('failed', () => {
    failed++;
    if (done + failed >= N) { last = mono(); finish(); }
  });
  worker.run();
  await finished;
  const runCpu = cpu() - c1;
  await worker.close();
  const counts = await queue.getJobCounts('wait', 'active', 'delayed', 'prioritized');
  const left = Object.values(counts).reduce((a, b) => a + b, 0);
  await queue.close();
  const runS = last - first;
  emit({ impl: 'bullmq', store: 'redis', n: N, done, errors: failed, left,
         create_s: createS, create_per_s: N / createS, create_cpu_s: createCpu,
         run_s: runS, jobs_per_s: done / runS, run_cpu_s: runCpu,
         settings: { worker_concurrency: concurrency, addBulk: BULK, removeOnComplete: true },
         versions: { bullmq: version('bullmq'), ioredis: version('ioredis'), node: process.versions.node } });
}
main().catch((e) => { console.error(e); process.exit(1); });
