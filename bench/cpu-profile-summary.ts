// Summarises a V8 .cpuprofile (node --cpu-prof, or bench/cpu-profile-hook.mjs) as text: self time by
// function and by where the code lives (an Infera source file, or a package under node_modules, or
// node's internals), and inclusive time for the functions whose name matches --focus. For quick reads on
// a box with no DevTools.
// and, with --callers, the call paths (up to 6 frames) that lead to the frames matching it.
// --until MS keeps only the first MS of the profile (e.g. up to the first answer: bench/engine-startup.ts
// --timeline says when it came, counted from the hook's load). --sources names a frame of the bundle
// (dist/chunks/*.js) by the source file it came from (through the chunk's source map): the bundle's
// chunks mix dozens of packages.
// Usage: node --import tsx bench/cpu-profile-summary.ts FILE.cpuprofile [--top 40] [--focus regex] [--callers regex] [--until MS] [--sources]
import { existsSync, readFileSync } from 'node:fs';
import { SourceMap } from 'node:module';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { add, type CallFrame, label, where } from './profile-frames.ts';

interface Node {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    top: { type: 'string', default: '40' },
    focus: { type: 'string' },
    callers: { type: 'string' },
    until: { type: 'string' },
    sources: { type: 'boolean', default: false },
  },
});
const profile = JSON.parse(readFileSync(positionals[0]!, 'utf8')) as Profile;
const top = Number(values.top);

if (values.sources) {
  const maps = new Map<string, SourceMap | undefined>();
  const mapOf = (url: string) => {
    if (!maps.has(url)) {
      const file = `${fileURLToPath(url)}.map`;
      maps.set(url, existsSync(file) ? new SourceMap(JSON.parse(readFileSync(file, 'utf8'))) : undefined);
    }
    return maps.get(url);
  };
  for (const node of profile.nodes) {
    const frame = node.callFrame as CallFrame & { columnNumber: number };
    if (!frame.url.startsWith('file:') || !frame.url.includes('/dist/')) continue;
    const entry = mapOf(frame.url)?.findEntry(frame.lineNumber, frame.columnNumber) as { originalSource?: string; originalLine?: number } | undefined;
    if (!entry?.originalSource) continue;
    frame.url = new URL(entry.originalSource, frame.url).href;
    frame.lineNumber = entry.originalLine ?? frame.lineNumber;
  }
}
const byId = new Map(profile.nodes.map((node) => [node.id, node]));
const parent = new Map<number, number>();
for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);

// Self time per node: each sample's delta goes to the node it was taken in.
const self = new Map<number, number>();
const until = values.until === undefined ? Number.POSITIVE_INFINITY : Number(values.until) * 1000;
let at = 0;
for (let i = 0; i < profile.samples.length; i++) {
  at += profile.timeDeltas[i] ?? 0;
  if (at > until) break;
  self.set(profile.samples[i]!, (self.get(profile.samples[i]!) ?? 0) + (profile.timeDeltas[i] ?? 0));
}
// Idle time (the event loop waiting) is left out: percentages are of the time the process was busy.
for (const [id] of self) if (byId.get(id)!.callFrame.functionName === '(idle)') self.delete(id);
const total = [...self.values()].reduce((a, b) => a + b, 0);


const byFunction = new Map<string, number>();
const byPlace = new Map<string, number>();
for (const [id, time] of self) {
  const node = byId.get(id)!;
  add(byFunction, label(node), time);
  add(byPlace, where(node.callFrame.url) || node.callFrame.functionName, time);
}

const pct = (time: number) => `${((100 * time) / total).toFixed(1).padStart(5)} %`;
const print = (title: string, map: Map<string, number>) => {
  console.log(`\n${title}`);
  for (const [key, time] of [...map].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${pct(time)}  ${key}`);
};
console.log(`${positionals[0]}: ${(total / 1000).toFixed(0)} ms busy`);
print('self time by place', byPlace);
print('self time by function', byFunction);

if (values.focus) {
  // Inclusive time of matching frames, each sample counted once per matching frame label (no double
  // count for recursion).
  const focus = new RegExp(values.focus);
  const inclusive = new Map<string, number>();
  for (const [id, time] of self) {
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const key = label(byId.get(at)!);
      if (!seen.has(key) && focus.test(key)) {
        seen.add(key);
        add(inclusive, key, time);
      }
    }
  }
  print(`inclusive time of /${values.focus}/`, inclusive);
}

if (values.callers) {
  const focus = new RegExp(values.callers);
  const paths = new Map<string, number>();
  for (const [id, time] of self) {
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      if (!focus.test(label(byId.get(at)!))) continue;
      const chain: string[] = [];
      for (let up: number | undefined = at; up !== undefined && chain.length < 6; up = parent.get(up)) chain.push(label(byId.get(up)!));
      add(paths, chain.join(' < '), time);
      break;
    }
  }
  print(`call paths to /${values.callers}/`, paths);
}
