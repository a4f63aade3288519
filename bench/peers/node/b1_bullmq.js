// B1 burst on BullMQ: N jobs due now, a no-op processor, one process. A
// Queue filled with addBulk (BullMQ's way to add many jobs) and a Worker
// at concurrency C, removeOnComplete so Redis does not keep 100,000
// finished jobs (BullMQ's production guidance).
// usage: node b1_bullmq.js N REDIS_PORT [CONCURRENCY]
'use strict';
const { Queue, Worker } = require('bullmq');
const { cpu, emit, version, createInBatches, burstTally } = require('./common');

const N = Number(process.argv[2]);
const port = Number(process.argv[3]);
const concurrency = Number(process.argv[4] || 100);
const connection = { host: '127.0.0.1', port, maxRetriesPerRequest: null };
const BULK = 1000;

async function main() {
  const queue = new Queue('b1', { connection });
  await queue.waitUntilReady();
  const opts = { removeOnComplete: true, removeOnFail: true };
  const { createS, createCpu } = await createInBatches(N, BULK,
    () => ({ name: 'noop', data: {}, opts }), (batch) => queue.addBulk(batch));

  const tally = burstTally(N);
  const c1 = cpu();
  const worker = new Worker('b1', async () => { tally.started(); },
    { connection, concurrency, autorun: false });
  worker.on('completed', tally.ok);
  worker.on('failed', tally.fail);
  worker.run();
  await tally.finished;
  const runCpu = cpu() - c1;
  await worker.close();
  const counts = await queue.getJobCounts('wait', 'active', 'delayed', 'prioritized');
  const left = Object.values(counts).reduce((a, b) => a + b, 0);
  await queue.close();
  const { done, failed } = tally;
  const runS = tally.last - tally.first;
  emit({ impl: 'bullmq', store: 'redis', n: N, done, errors: failed, left,
         create_s: createS, create_per_s: N / createS, create_cpu_s: createCpu,
         run_s: runS, jobs_per_s: done / runS, run_cpu_s: runCpu,
         settings: { worker_concurrency: concurrency, addBulk: BULK, removeOnComplete: true },
         versions: { bullmq: version('bullmq'), ioredis: version('ioredis'), node: process.versions.node } });
}
main().catch((e) => { console.error(e); process.exit(1); });
