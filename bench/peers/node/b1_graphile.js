// B1 burst on graphile-worker: N jobs due now, a no-op task, one process.
// Jobs added with workerUtils.addJobs in batches; the runner at
// concurrency C with the batching that graphile-worker's performance guide
// recommends for high throughput (localQueue, completeJobBatchDelay).
// usage: node b1_graphile.js N PG_URL [CONCURRENCY]
'use strict';
const { run, makeWorkerUtils, Logger } = require('graphile-worker');
const { cpu, emit, version, createInBatches, burstTally } = require('./common');

const N = Number(process.argv[2]);
const connectionString = process.argv[3];
const concurrency = Number(process.argv[4] || 10);
const BULK = 1000;
const settings = {
  concurrency, maxPoolSize: concurrency + 2, pollInterval: 2000,
  localQueue: { size: 100 }, completeJobBatchDelay: 0, addJobs: BULK,
};
const quiet = new Logger(() => () => {});

async function main() {
  const utils = await makeWorkerUtils({ connectionString, logger: quiet });
  await utils.migrate();
  const { createS, createCpu } = await createInBatches(N, BULK,
    () => ({ identifier: 'noop', payload: {} }), (specs) => utils.addJobs(specs));

  const tally = burstTally(N);
  const c1 = cpu();
  const runner = await run({
    connectionString, concurrency, noHandleSignals: true, logger: quiet,
    pollInterval: settings.pollInterval, maxPoolSize: settings.maxPoolSize,
    preset: { worker: { localQueue: settings.localQueue,
                        completeJobBatchDelay: settings.completeJobBatchDelay } },
    taskList: { noop: async () => { tally.started(); } },
  });
  runner.events.on('job:success', tally.ok);
  runner.events.on('job:error', tally.fail);
  await tally.finished;
  const runCpu = cpu() - c1;
  await runner.stop();
  const left = await utils.withPgClient(async (c) =>
    Number((await c.query('select count(*) from graphile_worker.jobs')).rows[0].count));
  await utils.release();
  const { done, failed } = tally;
  const runS = tally.last - tally.first;
  emit({ impl: 'graphile-worker', store: 'postgres', n: N, done, errors: failed, left,
         create_s: createS, create_per_s: N / createS, create_cpu_s: createCpu,
         run_s: runS, jobs_per_s: done / runS, run_cpu_s: runCpu, settings,
         versions: { 'graphile-worker': version('graphile-worker'), pg: version('pg'), node: process.versions.node } });
}
main().catch((e) => { console.error(e); process.exit(1); });
