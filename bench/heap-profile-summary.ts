// Summarises a V8 sampling heap profile (.heapprofile: bench/alloc-profile-hook.mjs, DevTools) as text:
// bytes allocated by function (self), by where the code lives, and the call paths (up to 6 frames) into
// the biggest allocators. With --per N, figures are divided by N (the requests sent while it ran).
// Usage: node --import tsx bench/heap-profile-summary.ts FILE.heapprofile [--per N] [--top 30] [--depth 6]
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { add, type CallFrame, label, where } from './profile-frames.ts';

interface Node {
  callFrame: CallFrame;
  selfSize: number;
  children: Node[];
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { per: { type: 'string', default: '1' }, top: { type: 'string', default: '30' }, depth: { type: 'string', default: '6' } },
});
const profile = JSON.parse(readFileSync(positionals[0]!, 'utf8')) as { head: Node };
const per = Number(values.per);
const top = Number(values.top);
const depth = Number(values.depth);


const byFunction = new Map<string, number>();
const byPlace = new Map<string, number>();
const paths = new Map<string, number>();
let total = 0;
const walk = (node: Node, stack: string[]) => {
  const here = [label(node), ...stack];
  if (node.selfSize) {
    total += node.selfSize;
    add(byFunction, here[0]!, node.selfSize);
    add(byPlace, where(node.callFrame.url), node.selfSize);
    add(paths, here.slice(0, depth).join(' < '), node.selfSize);
  }
  for (const child of node.children) walk(child, here);
};
walk(profile.head, []);

const fmt = (bytes: number) => `${Math.round(bytes / per)
  .toString()
  .padStart(8)} B ${((100 * bytes) / total).toFixed(1).padStart(5)} %`;
const print = (title: string, map: Map<string, number>) => {
  console.log(`\n${title}`);
  for (const [key, bytes] of [...map].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${fmt(bytes)}  ${key}`);
};
console.log(`${positionals[0]}: ${Math.round(total / per)} bytes${per !== 1 ? ' per request' : ''}`);
print('allocated by place', byPlace);
print('allocated by function', byFunction);
print('allocated by call path', paths);
