// B4 cron on croner: Cron#nextRun over the workload of
// bench/data/cron_mix.txt. One Cron object per expression and zone, built
// once (paused: it only computes), each call asking for the first fire
// time strictly after the previous one.
// usage: node b4_croner.js MIX_FILE RESULTS_FILE MIN_SECONDS
'use strict';
const fs = require('fs');
const { Cron } = require('croner');
const { mono, emit, version } = require('./common');

const [mix, results, minS] = [process.argv[2], process.argv[3], Number(process.argv[4] || 1)];
const exprs = [], zones = [], starts = [];
let chain = 5;
for (const line of fs.readFileSync(mix, 'utf8').split('\n')) {
  const m = /^(\w+) (.*)$/.exec(line);
  if (!m) continue;
  if (m[1] === 'expr') exprs.push(m[2]);
  else if (m[1] === 'zone') zones.push(m[2]);
  else if (m[1] === 'start') starts.push(Number(m[2].split(' ')[0]));
  else if (m[1] === 'chain') chain = Number(m[2]);
}
const jobs = exprs.map((e) => zones.map((z) => new Cron(e, { timezone: z, paused: true })));
const lines = [];
let calls = 0, rounds = 0, el;
const t0 = mono();
do {
  for (let ei = 0; ei < exprs.length; ei++) {
    for (let zi = 0; zi < zones.length; zi++) {
      const job = jobs[ei][zi];
      for (const s of starts) {
        let t = new Date(s * 1000);
        for (let k = 0; k < chain; k++) {
          if (t) t = job.nextRun(t);
          calls++;
          if (rounds === 0) lines.push(t ? Math.floor(t.getTime() / 1000) : -1);
        }
      }
    }
  }
  rounds++;
  el = mono() - t0;
} while (el < minS);
fs.writeFileSync(results, lines.join('\n') + '\n');
emit({ impl: 'croner', calls, rounds, seconds: el, per_s: calls / el,
       versions: { croner: version('croner'), node: process.versions.node } });
