// Where the wall time of a decode loop goes, from outside the process and for any program that calls
// libllama's llama_decode (Infera's engine process, llama-server, llama-batched-bench): uprobes on
// llama_decode's entry and return (perf probe) give each decode's start and end on the thread that
// decodes; sched_switch events say who ran on each CPU meanwhile. Per step: the decode, the gap until
// the next decode (the caller's own work: sampling, JavaScript, IPC, the event loop), the process's
// own CPU inside the gaps, and the CPU time every task got during decodes and during gaps
// (another process running during a decode stalls the pool; during a gap it only displaces a spinning
// worker). Gaps in which the process wrote to a file descriptor (Infera's engine → server IPC
// message) are split from the others. Needs root and perf with uprobe support. Not a test: prints figures.
//
// Usage: node --import tsx bench/step-gaps.ts --pid PID [--lib path/to/libllama.so] [--seconds 1.5] [--name PID=LABEL ...]
//   PID: the process that decodes (Infera: the engine process, a child of `infera serve`; llama-server).
//   --lib: the libllama the process has mapped (default: read from /proc/PID/maps; else its executable).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: { pid: { type: 'string' }, lib: { type: 'string' }, seconds: { type: 'string', default: '1.5' }, name: { type: 'string', multiple: true, default: [] } },
});
/** --name PID=LABEL: the threads of process PID are counted as LABEL (the server, the client). */
const names = new Map(values.name!.map((entry) => [Number(entry.split('=')[0]), entry.split('=').slice(1).join('=')] as const));
const pid = Number(values.pid);
if (!pid) throw new Error('--pid is required');
const lib =
  values.lib ??
  readFileSync(`/proc/${pid}/maps`, 'utf8')
    .split('\n')
    .map((line) => line.split(/\s+/)[5] ?? '')
    .find((path) => /\/libllama[^/]*\.so/.test(path)) ??
  // llama-server and llama-batched-bench built statically: llama_decode is in the executable.
  readlinkSync(`/proc/${pid}/exe`);
const tids = new Set(readdirSync(`/proc/${pid}/task`).map(Number));

const group = `dec${process.pid}`;
const perf = (args: string[]) => execFileSync('perf', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 30 });
perf(['probe', '-q', '-x', lib, '--add', `${group}:in=llama_decode`]);
perf(['probe', '-q', '-x', lib, '--add', `${group}:out=llama_decode%return`]);
const dir = mkdtempSync(join(tmpdir(), 'step-gaps-'));
let script: string;
try {
  const data = join(dir, 'perf.data');
  perf(['record', '-q', '-a', '-o', data, '-e', 'sched:sched_switch', '-e', `${group}:in`, '-e', `${group}:out__return`, '-e', 'syscalls:sys_enter_write', '--', 'sleep', values.seconds!]);
  script = perf(['script', '-i', data, '-F', 'comm,tid,cpu,time,event,trace']);
} finally {
  perf(['probe', '-q', '--del', `${group}:*`]);
  rmSync(dir, { recursive: true, force: true });
}

interface Event {
  time: number;
  cpu: number;
  tid: number;
  name: string;
  rest: string;
}
const events: Event[] = [];
for (const line of script.split('\n')) {
  const match = /^\s*(.*?)\s+(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)$/.exec(line);
  if (match) events.push({ time: Number(match[4]), cpu: Number(match[3]), tid: Number(match[2]), name: match[5]!, rest: match[6]! });
}
events.sort((a, b) => a.time - b.time);

// Every decode of the process, whichever thread runs it (Infera's in-process runner decodes on a
// libuv worker; decodes never overlap: one context).
const decodes: [number, number][] = [];
const open = new Map<number, number>();
for (const event of events) {
  if (!tids.has(event.tid)) continue;
  if (event.name.endsWith(':in')) open.set(event.tid, event.time);
  else if (event.name.endsWith(':out__return') && open.has(event.tid)) {
    decodes.push([open.get(event.tid)!, event.time]);
    open.delete(event.tid);
  }
}
decodes.sort((a, b) => a[0] - b[0]);
if (decodes.length < 3) throw new Error(`only ${decodes.length} decodes in ${values.seconds} s: is ${pid} decoding?`);
/** The loop's thread: the process's main thread (llama-server's and Infera's loops run there). */
const decoder = pid;

// Who ran where: [start, end, tid, comm] per CPU, from sched_switch.
const segments: { start: number; end: number; tid: number; comm: string }[] = [];
const running = new Map<number, { tid: number; comm: string; since: number }>();
for (const event of events) {
  if (event.name !== 'sched:sched_switch') continue;
  const match = /next_comm=(.*?) next_pid=(\d+)/.exec(event.rest);
  if (!match) continue;
  const was = running.get(event.cpu);
  if (was) segments.push({ start: was.since, end: event.time, tid: was.tid, comm: was.comm });
  running.set(event.cpu, { tid: Number(match[2]), comm: match[1]!, since: event.time });
}
const overlap = (a0: number, a1: number, b0: number, b1: number) => Math.max(0, Math.min(a1, b1) - Math.max(a0, b0));
/** Thread → process, for the --name labels (threads alive now). */
const processOf = new Map<number, number>();
for (const [process] of names)
  try {
    for (const tid of readdirSync(`/proc/${process}/task`)) processOf.set(Number(tid), process);
  } catch {
    // gone
  }
const label = (tid: number, comm: string) =>
  tid === decoder ? 'main thread' : tids.has(tid) ? 'its other threads' : tid === 0 ? 'idle' : (names.get(processOf.get(tid) ?? -1) ?? `other ${comm}`);
function occupancy(windows: [number, number][]): Map<string, number> {
  const out = new Map<string, number>();
  for (const segment of segments)
    for (const [a, b] of windows) {
      const o = overlap(a, b, segment.start, segment.end);
      if (o > 0) out.set(label(segment.tid, segment.comm), (out.get(label(segment.tid, segment.comm)) ?? 0) + o);
    }
  return out;
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;
const ms = (seconds: number) => (seconds * 1000).toFixed(3);
const gaps: [number, number][] = decodes.slice(0, -1).map(([, end], i) => [end, decodes[i + 1]![0]]);
const writes = events.filter((event) => tids.has(event.tid) && event.name === 'syscalls:sys_enter_write').map((event) => event.time);
const ownCpu = ([a, b]: [number, number]) => segments.filter((s) => tids.has(s.tid)).reduce((sum, s) => sum + overlap(a, b, s.start, s.end), 0);
const withWrite = gaps.filter(([a, b]) => writes.some((w) => w >= a && w <= b));
const without = gaps.filter(([a, b]) => !writes.some((w) => w >= a && w <= b));

const steps = decodes.length - 1;
console.log(`# step gaps: pid ${pid}, ${decodes.length} decodes in ${values.seconds} s, load ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`);
console.log(`per step: wall ${ms((decodes.at(-1)![0] - decodes[0]![0]) / steps)} ms; decode median ${ms(median(decodes.map(([a, b]) => b - a)))}; gap median ${ms(median(gaps.map(([a, b]) => b - a)))}`);
for (const [name, list] of [['gaps with a write', withWrite], ['gaps without', without]] as const)
  if (list.length > 0)
    console.log(`${name}: ${list.length}, wall median ${ms(median(list.map(([a, b]) => b - a)))} ms, the process's CPU median ${ms(median(list.map(ownCpu)))} ms`);
for (const [name, windows] of [['during decodes', decodes], ['during gaps', gaps]] as const) {
  const top = [...occupancy(windows as [number, number][])].sort((a, b) => b[1] - a[1]).slice(0, 8);
  console.log(`${name}, CPU ms per step by task: ${top.map(([who, seconds]) => `${who} ${ms(seconds / windows.length)}`).join(', ')}`);
}
