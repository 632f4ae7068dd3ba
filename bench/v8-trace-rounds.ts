// Splits a server's V8 optimisation trace by bench round and counts, per function, what TurboFan did:
// optimisations (and their reason), compile time, deoptimisations (and their reason), code dropped for
// dependencies. It answers "after the warm-up, is V8 re-optimising the same functions (deopt loops) or
// tiering up new ones?" (issue 14: the one-connection p99 follows V8's compiler threads).
// Input: the merged output of
//   BENCH_DEBUG=1 LD_PRELOAD=/usr/libexec/coreutils/libstdbuf.so _STDBUF_O=0 \
//     node --import tsx bench/gateway-one.ts ... "--node=--trace-opt --trace-deopt" NAME=DIR > FILE 2>&1
// (BENCH_DEBUG copies the servers' output and prints "=== NAME rN start/end" marks; libstdbuf unbuffers
// V8's printf to the pipe, so the trace lines land between the right marks). One server per run.
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
  deopts: Map<string, number>;
  dependent: Map<string, number>;
  aborted: Map<string, number>;
};
const section = (name: string): Section => ({ name, marked: new Map(), markReasons: new Map(), osr: 0, compileMs: 0, compiles: 0, deopts: new Map(), dependent: new Map(), aborted: new Map() });
const bump = (map: Map<string, number>, key: string, by = 1) => map.set(key, (map.get(key) ?? 0) + by);

const sections: Section[] = [section('start-up + warm-up')];
let current = sections[0]!;
// Every optimisation over the whole run, per function: how often it was optimised (a function optimised
// again and again is a deopt loop).
const optimisedTimes = new Map<string, number>();
const fn = (text: string) => {
  const m = /<JSFunction (.*?) \(sfi = (0x[0-9a-f]+)\)>/.exec(text);
  return m ? (m[1] === '' ? `(anonymous ${m[2]})` : m[1]!) : '?';
};
for (const line of readFileSync(positionals[0]!, 'utf8').split('\n')) {
  const mark = /^=== (.*) (start|end)$/.exec(line);
  if (mark) {
    current = section(mark[2] === 'start' ? mark[1]! : `after ${mark[1]!}`);
    sections.push(current);
    continue;
  }
  let m: RegExpExecArray | null;
  if ((m = /^\[marking (0x\S+ <JSFunction .*?>) for optimization to \w+, .*reason: (.*)\]$/.exec(line))) {
    bump(current.marked, fn(m[1]!));
    bump(current.markReasons, m[2]!);
  } else if ((m = /^\[compiling method (.*?) \(target \w+\) OSR/.exec(line))) {
    current.osr++;
  } else if ((m = /^\[completed compiling (.*?) - took ([\d.]+), ([\d.]+), ([\d.]+) ms\]/.exec(line))) {
    current.compiles++;
    current.compileMs += Number(m[2]) + Number(m[3]) + Number(m[4]);
    bump(optimisedTimes, fn(m[1]!));
  } else if ((m = /^\[bailout \(kind: ([\w-]+), reason: (.*?)\): begin\. deoptimizing (.*?), (0x\S+ <Code|$)/.exec(line))) {
    bump(current.deopts, `${fn(m[3]!)} [${m[1]}: ${m[2]}]`);
  } else if ((m = /^\[marking dependent code .*?<SharedFunctionInfo ?(.*?)>\) .*reason: (.*)\]$/.exec(line))) {
    bump(current.dependent, `${m[1] || '(anonymous)'} [${m[2]}]`);
  } else if ((m = /^\[aborted optimizing (.*?) because: (.*)\]$/.exec(line))) {
    bump(current.aborted, `${fn(m[1]!)} [${m[2]}]`);
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
  console.log(`\n## ${s.name}: ${sum(s.marked)} marked for optimisation (${s.osr} OSR), ${s.compiles} compiled in ${s.compileMs.toFixed(1)} ms, ${sum(s.deopts)} deopts, ${sum(s.dependent)} dropped for dependencies, ${sum(s.aborted)} aborted`);
  if (s.marked.size) console.log(`  marked: ${list(s.marked)}`);
  if (s.markReasons.size) console.log(`  reasons: ${list(s.markReasons)}`);
  if (s.deopts.size) console.log(`  deopts: ${list(s.deopts)}`);
  if (s.dependent.size) console.log(`  dependencies: ${list(s.dependent)}`);
  if (s.aborted.size) console.log(`  aborted: ${list(s.aborted)}`);
}
const again = [...optimisedTimes].filter(([, v]) => v > 1).sort((a, b) => b[1] - a[1]);
console.log(`\n## optimised more than once over the run: ${again.length} of ${optimisedTimes.size} functions`);
console.log(`  ${again.slice(0, top * 2).map(([k, v]) => `${v}× ${k}`).join('; ')}`);
