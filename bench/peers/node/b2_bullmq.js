// B2 steady on BullMQ job schedulers: J schedulers `every: 1000` ms whose
// startDate spreads their phases over the second (T0 + i/J s, BullMQ keeps
// millisecond resolution), for D seconds; one Worker at concurrency C.
// Lateness = Date.now() at the processor's start - the slot the job was
// scheduled for (job.timestamp + job.opts.delay: the scheduler creates each
// iteration as a delayed job aimed at its slot; checked to lie on the
// expected grid, the slot is also the job id's suffix).
// usage: node b2_bullmq.js J D REDIS_PORT [LEAD_S] [CONCURRENCY]
'use strict';
const { Queue, Worker } = require('bullmq');
const { mono, cpu, emit, pct, version } = require('./common');

const J = Number(process.argv[2]);
const D = Number(process.argv[3]);
const port = Number(process.argv[4]);
const lead = Number(process.argv[5] || 3);
const concurrency = Number(process.argv[6] || 100);
const connection = { host: '127.0.0.1', port, maxRetriesPerRequest: null };

const sleep = (ms) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

async function main() {
  const queue = new Queue('b2', { connection });
  await queue.waitUntilReady();
  const T0 = Date.now() + Math.floor(lead * 1000);
  const Tend = T0 + D * 1000;
  const slot = (i) => T0 + Math.floor((i * 1000) / J);
  const index = new Map();
  const seen = new Map();
  const lat = [];
  let offGrid = 0, runs = 0, errors = 0;
  const worker = new Worker('b2', async (job) => {
    const t = Date.now();
    runs++;
    const s = job.timestamp + (job.opts.delay || 0);
    const i = index.get(job.repeatJobKey);
    const k = (s - slot(i)) / 1000;
    if (i !== undefined && s >= T0 && s < Tend && Number.isInteger(k)) {
      const key = job.repeatJobKey + '@' + s;
      const n = (seen.get(key) || 0) + 1;
      seen.set(key, n);
      if (n === 1) lat.push(t - s);
    } else if (s < Tend) {
      offGrid++;
    }
  }, { connection, concurrency });
  worker.on('failed', () => { errors++; });
  const w0 = mono();
  for (let i = 0; i < J; i++) {
    const id = 'tick' + i;
    index.set(id, i);
    await queue.upsertJobScheduler(id, { every: 1000, startDate: new Date(slot(i)) },
      { name: 'tick', data: {}, opts: { removeOnComplete: true, removeOnFail: true } });
  }
  const createS = mono() - w0;
  const lateCreate = Date.now() > T0;
  await sleep(T0 - Date.now());
  const c0 = cpu(), r0 = runs;
  await sleep(Tend + 1500 - Date.now());
  const cpuS = cpu() - c0, windowRuns = runs - r0;
  await worker.close();
  await queue.obliterate({ force: true }).catch(() => {});
  await queue.close();
  let missed = 0, doubled = 0;
  for (let i = 0; i < J; i++) {
    for (let k = 0; k < D; k++) {
      const n = seen.get('tick' + i + '@' + (slot(i) + k * 1000));
      if (!n) missed++; else if (n > 1) doubled += n - 1;
    }
  }
  lat.sort((a, b) => a - b);
  emit({ impl: 'bullmq', store: 'redis', jobs: J, seconds: D, expected: J * D, runs: lat.length,
         missed, doubled, off_grid: offGrid, errors,
         p50_ms: pct(lat, 50), p99_ms: pct(lat, 99), max_ms: lat.length ? lat[lat.length - 1] : null,
         min_ms: lat.length ? lat[0] : null, cpu_s: cpuS,
         cpu_per_1000: windowRuns ? (cpuS / windowRuns) * 1000 : null,
         create_s: createS, late_create: lateCreate,
         settings: { worker_concurrency: concurrency, scheduler: 'upsertJobScheduler every: 1000, startDate spread over 1 s',
                     removeOnComplete: true, resolution: '1 ms' },
         versions: { bullmq: version('bullmq'), ioredis: version('ioredis'), node: process.versions.node } });
}
main().catch((e) => { console.error(e); process.exit(1); });
