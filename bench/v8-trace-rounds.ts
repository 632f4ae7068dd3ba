// Splits a server's V8 optimisation trace by bench round and counts, per function, what TurboFan did:
// optimisations (and their reason), compile time, deoptimisations (and their reason), code dropped for
// dependencies, and, for each function compiled in a round, whether it is new there or optimised again
// (after which deopt or drop). It answers "after the warm-up, is V8 re-optimising the same functions
// (deopt loops) or tiering up new ones?" (issue 14: the one-connection p99 follows V8's compiler threads).
// Input: the merged output of
//   BENCH_DEBUG=1 LD_PRELOAD=/usr/libexec/coreutils/libstdbuf.so _STDBUF_O=0 \
//     node --import tsx bench/gateway-one.ts ... "--node=--trace-opt --trace-deopt --trace-gc" NAME=DIR > FILE 2>&1
// or of bench/gateway-overhead.ts with "--node-infera=--trace-opt --trace-deopt --trace-gc". BENCH_DEBUG
// copies the servers' output and prints "=== NAME rN start/end" marks; libstdbuf unbuffers V8's printf to
// the pipe, so the trace lines land between the right marks (a few lines come out cut by the server's own
// log lines and are skipped). One traced server per run. Functions are told apart by their
// SharedFunctionInfo's address (moved only by a compacting GC, rarely for these).
// Usage: node --import tsx bench/v8-trace-rounds.ts FILE [--top 25]
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string', default: '25' } } });
const top = Number(values.top);

type Section = {
  name: string;
  marked: Map<string, number>;
  markReasons: Map<string, number>;
  osr: number;
  compileMs: number;
  compiles: number;
  /** Of the functions compiled here: "new", or "again after <what ended the last code>". */
  origin: Map<string, number>;
  deopts: Map<string, number>;
  dependent: Map<string, number>;
  aborted: Map<string, number>;
  gcs: string[];
};
const section = (name: string): Section => ({
  name,
  marked: new Map(),
  markReasons: new Map(),
  osr: 0,
  compileMs: 0,
  compiles: 0,
  origin: new Map(),
  deopts: new Map(),
  dependent: new Map(),
  aborted: new Map(),
  gcs: [],
});
const bump = (map: Map<string, number>, key: string, by = 1) => map.set(key, (map.get(key) ?? 0) + by);

const sections: Section[] = [section('start-up + warm-up')];
let current = sections[0]!;
// Per SharedFunctionInfo: times optimised, and what ended its last optimised code (undefined: nothing traced).
const optimised = new Map<bigint, number>();
const ended = new Map<bigint, string | undefined>();
const names = new Map<bigint, string>();
const fn = (text: string): { name: string; sfi: bigint } | undefined => {
  const m = /<JSFunction (.*?) \(sfi = (0x[0-9a-f]+)\)>/.exec(text);
  if (!m) return undefined;
  const sfi = BigInt(m[2]!);
  const name = m[1] || `(anonymous ${m[2]})`;
  names.set(sfi, name);
  return { name, sfi };
};

const handlers: [RegExp, (m: RegExpExecArray) => void][] = [
  // --trace-gc, main isolate and workers alike: the full collections, with their reason
  // (first, and anywhere in a line: one may come out in the middle of a cut trace line).
  [
    /\[\d+:(0x[0-9a-f]+)\]\s+(\d+) ms: (Mark-Compact(?: \(reduce\))?) .*current mu = [\d.]+\) ([^;]*);/,
    (m) => current.gcs.push(`${m[3]} at ${m[2]} ms (${m[4]}, isolate ${m[1]})`),
  ],
  [
    /^\[marking (0x\S+ <JSFunction .*?>) for optimization to \w+, .*reason: (.*)\]$/,
    (m) => {
      bump(current.marked, fn(m[1]!)?.name ?? '?');
      bump(current.markReasons, m[2]!);
    },
  ],
  [/^\[compiling method (.*?) \(target \w+\) OSR/, () => current.osr++],
  [
    /^\[completed compiling (.*?) - took ([\d.]+), ([\d.]+), ([\d.]+) ms\]/,
    (m) => {
      current.compiles++;
      current.compileMs += Number(m[2]) + Number(m[3]) + Number(m[4]);
      const f = fn(m[1]!);
      if (!f) return;
      const times = optimised.get(f.sfi) ?? 0;
      bump(current.origin, times === 0 ? 'new' : `again after ${ended.get(f.sfi) ?? 'nothing traced'}`);
      optimised.set(f.sfi, times + 1);
      ended.set(f.sfi, undefined);
    },
  ],
  [
    /^\[bailout \(kind: ([\w-]+), reason: (.*?)\): begin\. deoptimizing (.*?), (0x\S+ <Code|$)/,
    (m) => {
      const f = fn(m[3]!);
      bump(current.deopts, `${f?.name ?? '?'} [${m[1]}: ${m[2]}]`);
      if (f) ended.set(f.sfi, `deopt: ${m[2]}`);
    },
  ],
  [
    /^\[marking dependent code .*?\((0x[0-9a-f]+) <SharedFunctionInfo ?(.*?)>\) .*reason: (.*)\]$/,
    (m) => {
      bump(current.dependent, `${m[2] || '(anonymous)'} [${m[3]}]`);
      ended.set(BigInt(m[1]!), `dropped: ${m[3]}`);
    },
  ],
  [/^\[aborted optimizing (.*?) because: (.*)\]$/, (m) => bump(current.aborted, `${fn(m[1]!)?.name ?? '?'} [${m[2]}]`)],
];

for (const line of readFileSync(positionals[0]!, 'utf8').split('\n')) {
  const mark = /^=== (.*) (start|end)$/.exec(line);
  if (mark) {
    current = section(mark[2] === 'start' ? mark[1]! : `after ${mark[1]!}`);
    sections.push(current);
    continue;
  }
  for (const [pattern, handle] of handlers) {
    const m = pattern.exec(line);
    if (m) {
      handle(m);
      break;
    }
  }
}

const list = (map: Map<string, number>) =>
  [...map]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([k, v]) => `${v} ${k}`)
    .join('; ');
const sum = (map: Map<string, number>) => [...map.values()].reduce((a, b) => a + b, 0);
for (const s of sections) {
  console.log(
    `\n## ${s.name}: ${sum(s.marked)} marked for optimisation (${s.osr} OSR), ${s.compiles} compiled in ${s.compileMs.toFixed(1)} ms, ${sum(s.deopts)} deopts, ${sum(s.dependent)} dropped for dependencies, ${sum(s.aborted)} aborted`,
  );
  if (s.origin.size) console.log(`  compiled: ${list(s.origin)}`);
  if (s.marked.size) console.log(`  marked: ${list(s.marked)}`);
  if (s.markReasons.size) console.log(`  reasons: ${list(s.markReasons)}`);
  if (s.deopts.size) console.log(`  deopts: ${list(s.deopts)}`);
  if (s.dependent.size) console.log(`  dependencies: ${list(s.dependent)}`);
  if (s.aborted.size) console.log(`  aborted: ${list(s.aborted)}`);
  if (s.gcs.length) console.log(`  full GCs: ${s.gcs.join('; ')}`);
}
const again = [...optimised].filter(([, v]) => v > 1).sort((a, b) => b[1] - a[1]);
console.log(`\n## optimised more than once over the run: ${again.length} of ${optimised.size} functions`);
console.log(`  ${again.slice(0, top * 2).map(([k, v]) => `${v}× ${names.get(k)}`).join('; ')}`);
