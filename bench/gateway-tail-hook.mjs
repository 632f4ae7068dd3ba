// Preloaded into a gateway server (node --import) while requests come one at a time on one connection
// (bench/gateway-one.ts), to see what the slow requests of the tail overlapped. Per request, from
// 'http.server.request.start' to 'http.server.response.finish': the server's wall time; V8's GC pauses of the
// main thread inside it (PerformanceObserver 'gc'); timer callbacks of the server that ran inside it (a wrapped
// global setTimeout/setInterval); the process's CPU time (getrusage: every thread); the wall and CPU time from
// the upstream's answer read ('undici:request:trailers') to the end (the ledger commit is in there); stdout
// writes inside it (the access log's flushes); the event loop's own CPU from its schedstat (coarse: brought up
// to date at switches and ticks only). At SIGTERM it writes $GATEWAY_TAIL_FILE, one line per request:
// "start_us wall_us gc_us timers cpu_us tail_wall_us tail_cpu_us stdout_writes main_cpu_us seq" (start in µs of
// performance.now(); seq: the request's x-bench-seq header, -1 without one, so a client's own timing of the
// same request can be joined, bench/gateway-overhead.ts --tail), and $GATEWAY_TAIL_FILE.gc: "start_us
// duration_us kind young_kib" per GC pause (young_kib: new space's size, both semi-spaces, soon after it).
// Usage: GATEWAY_TAIL_FILE=/tmp/tail.txt node --import tsx bench/gateway-one.ts --warm 8000 --requests 10000
//   --rounds 1 "--node=--import $PWD/bench/gateway-tail-hook.mjs" this=.
import { openSync, readSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import diagnostics from 'node:diagnostics_channel';
import { PerformanceObserver, performance } from 'node:perf_hooks';
import { getHeapSpaceStatistics } from 'node:v8';

const file = process.env.GATEWAY_TAIL_FILE;
const max = Number(process.env.GATEWAY_TAIL_MAX ?? 200_000);
const start = new Float64Array(max);
const duration = new Float64Array(max);
const gcIn = new Float64Array(max);
const timersIn = new Uint16Array(max);
const cpu = new Float64Array(max);
const tail = new Float64Array(max);
const tailCpu = new Float64Array(max);
const writesIn = new Uint16Array(max);
// The process's CPU time (ns, from getrusage's µs: exact for running threads, unlike /proc's schedstat, which
// moves at ticks): the event loop's, plus V8's GC helpers' and SQLite's checkpoint thread's.
const threadNs = () => {
  const { user, system } = process.cpuUsage();
  return (user + system) * 1000;
};
// The event loop's own CPU (µs) from its schedstat: brought up to date at each switch and scheduler tick
// only, so a few hundred µs off for one request, but it tells a request whose event loop worked ms longer
// from one where another thread of the process (V8's compiler or GC helpers, the checkpointer) did.
const statFd = openSync(`/proc/self/task/${process.pid}/schedstat`, 'r');
const statBuf = Buffer.alloc(128);
const mainUs = () => Number(statBuf.toString('latin1', 0, readSync(statFd, statBuf, 0, 128, 0)).split(' ')[0]) / 1000;
const mainCpu = new Float64Array(max);
const seqs = new Float64Array(max);
let seq = -1;
let main0 = 0;
let cpu0 = 0;
let done = -1;
let doneCpu = 0;
let writes = 0;
diagnostics.subscribe('undici:request:trailers', () => {
  done = performance.now() * 1000;
  doneCpu = threadNs();
});
// Writes to stdout (the access log's flushes) inside a request.
const fs = createRequire(import.meta.url)('node:fs');
const writeSync = fs.writeSync;
fs.writeSync = function (fd, ...rest) {
  if (fd === 1) writes++;
  return writeSync.call(this, fd, ...rest);
};
let n = 0;
let t0 = -1;
let timersNow = 0;

const wrap = (original) =>
  function (callback, ...rest) {
    if (typeof callback !== 'function') return original.call(this, callback, ...rest);
    return original.call(
      this,
      function (...args) {
        timersNow++;
        return callback.apply(this, args);
      },
      ...rest,
    );
  };
globalThis.setInterval = wrap(globalThis.setInterval);
globalThis.setTimeout = wrap(globalThis.setTimeout);

const gcs = [];
new PerformanceObserver((list) => {
  // The young generation's size when the entries arrive (right after the pause, or a few later): how many
  // requests' allocations fit between scavenges.
  const young = getHeapSpaceStatistics().find((space) => space.space_name === 'new_space')?.space_size ?? 0;
  for (const entry of list.getEntries()) gcs.push([entry.startTime * 1000, entry.duration * 1000, entry.detail?.kind ?? 0, young / 1024]);
}).observe({ entryTypes: ['gc'] });

diagnostics.subscribe('http.server.request.start', ({ request }) => {
  t0 = performance.now() * 1000;
  const header = request.headers['x-bench-seq'];
  seq = header === undefined ? -1 : Number(header);
  cpu0 = threadNs();
  main0 = mainUs();
  timersNow = 0;
  writes = 0;
  done = -1;
});
diagnostics.subscribe('http.server.response.finish', () => {
  if (t0 < 0 || n >= max) return;
  const t1 = performance.now() * 1000;
  start[n] = t0;
  duration[n] = t1 - t0;
  timersIn[n] = timersNow;
  const c = threadNs();
  cpu[n] = (c - cpu0) / 1000;
  tail[n] = done < 0 ? -1 : t1 - done;
  tailCpu[n] = done < 0 ? -1 : (c - doneCpu) / 1000;
  writesIn[n] = writes;
  mainCpu[n] = mainUs() - main0;
  seqs[n] = seq;
  n++;
  t0 = -1;
});

const dump = () => {
  if (!file) return;
  // GC time inside each request's interval (the entries arrive after the pause, so matched at exit).
  let g = 0;
  for (let i = 0; i < n; i++) {
    const a = start[i];
    const b = a + duration[i];
    while (g < gcs.length && gcs[g][0] + gcs[g][1] < a) g++;
    let sum = 0;
    for (let j = g; j < gcs.length && gcs[j][0] < b; j++) sum += Math.min(b, gcs[j][0] + gcs[j][1]) - Math.max(a, gcs[j][0]);
    gcIn[i] = sum;
  }
  const lines = [];
  for (let i = 0; i < n; i++) lines.push(`${start[i].toFixed(0)} ${duration[i].toFixed(1)} ${gcIn[i].toFixed(1)} ${timersIn[i]} ${cpu[i].toFixed(1)} ${tail[i].toFixed(1)} ${tailCpu[i].toFixed(1)} ${writesIn[i]} ${mainCpu[i].toFixed(0)} ${seqs[i]}`);
  writeFileSync(file, `${lines.join('\n')}\n`);
  writeFileSync(`${file}.gc`, `${gcs.map((x) => x.map((v) => v.toFixed(0)).join(' ')).join('\n')}\n`);
};
process.once('SIGTERM', () => {
  dump();
  process.exit(0);
});
