// Preloaded into a gateway server (node --import): the wall clock and the process's CPU time of one request on
// one keep-alive connection, stage by stage, from Node's and undici's diagnostics channels (no code of the
// server touched). Requests must come one at a time (bench/gateway-one.ts): the stages of "the" request are
// global. Stages: in = the HTTP server has parsed the request ('http.server.request.start'); disp = the
// upstream request handed to undici ('undici:request:create'); sent = undici has
// written the upstream request's headers ('undici:client:sendHeaders'); head = the upstream's answer head read
// ('undici:request:headers'); done = its body read ('undici:request:trailers'); out = the answer's last write
// handed to the socket ('http.server.response.finish'); next = the next request in. Per interval: wall µs
// and CPU µs (getrusage of the whole process, so checkpoint and GC threads count too) — wall minus CPU is time
// the process did not run: waiting for a peer, or runnable and not scheduled. Every $STAGE_CLOCK_EVERY
// requests (default 4000) it appends the medians of that window to $STAGE_CLOCK_FILE.
import { appendFileSync } from 'node:fs';
import diagnostics from 'node:diagnostics_channel';

const file = process.env.STAGE_CLOCK_FILE;
const every = Number(process.env.STAGE_CLOCK_EVERY ?? 4000);
const names = ['in', 'disp', 'sent', 'head', 'done', 'out'];
let marks = null;
const rows = [];
const now = () => {
  const { user, system } = process.cpuUsage();
  return [Number(process.hrtime.bigint()) / 1000, user + system];
};
const mark = (stage) => {
  if (marks && !(stage in marks)) marks[stage] = now();
};
let lastOut = null;
diagnostics.subscribe('http.server.request.start', () => {
  const t = now();
  if (lastOut) rows.at(-1)?.push(t[0] - lastOut[0], t[1] - lastOut[1]);
  marks = { in: t };
});
diagnostics.subscribe('undici:request:create', () => mark('disp'));
diagnostics.subscribe('undici:client:sendHeaders', () => mark('sent'));
diagnostics.subscribe('undici:request:headers', () => mark('head'));
diagnostics.subscribe('undici:request:trailers', () => mark('done'));
diagnostics.subscribe('http.server.response.finish', () => {
  if (!marks) return;
  mark('out');
  lastOut = marks.out;
  const row = [];
  for (let i = 1; i < names.length; i++) {
    const a = marks[names[i - 1]];
    const b = marks[names[i]];
    row.push(a && b ? b[0] - a[0] : Number.NaN, a && b ? b[1] - a[1] : Number.NaN);
  }
  row.push(marks.out[0] - marks.in[0], marks.out[1] - marks.in[1]);
  rows.push(row);
  marks = null;
  if (rows.length > every) flush();
});
const med = (xs) => {
  const s = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : Number.NaN;
};
const mean = (xs) => {
  const s = xs.filter((x) => !Number.isNaN(x));
  return s.length ? s.reduce((a, b) => a + b, 0) / s.length : Number.NaN;
};
function flush() {
  const done = rows.splice(0, rows.length - 1);
  const labels = ['in→disp', 'disp→sent', 'sent→head', 'head→done', 'done→out', 'in→out', 'out→next'];
  const parts = labels.map((l, i) => {
    const wall = done.map((r) => r[2 * i]);
    const cpu = done.map((r) => r[2 * i + 1]);
    return `${l} wall ${med(wall).toFixed(0)} (mean ${mean(wall).toFixed(0)}) cpu mean ${mean(cpu).toFixed(0)}`;
  });
  if (file) appendFileSync(file, `${process.pid} n=${done.length} ${parts.join(' | ')}\n`);
}
