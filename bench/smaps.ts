// A process's resident memory by what it is, from /proc/PID/smaps: the Node binary, each shared library
// (grouped: ggml, llama, koffi, sharp/libvips, onnxruntime, sqlite, libc/libstdc++, ...), the model file,
// glibc's malloc (the brk heap and its 64 MiB-aligned thread arenas), thread stacks, and the other
// anonymous memory (V8's heap pages and large malloc chunks, which malloc mmaps on their own).
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';

export interface Part {
  rss: number;
  pss: number;
}

const ARENA = 64 * 1024 * 1024;

function fileGroup(path: string): string {
  const name = basename(path);
  if (path.endsWith('.gguf') || path.endsWith('.onnx')) return 'model file';
  if (name === 'node' || path.endsWith('/bin/node')) return 'node binary';
  if (/^libggml/.test(name)) return `ggml (${name})`;
  if (/^libllama/.test(name)) return 'libllama';
  if (/koffi/.test(path)) return 'koffi';
  if (/vips|sharp/.test(path)) return 'sharp / libvips';
  if (/onnxruntime/.test(path)) return 'onnxruntime';
  if (/better_sqlite3|better-sqlite3/.test(path)) return 'better-sqlite3';
  if (/node-llama-cpp/.test(path)) return 'node-llama-cpp addon';
  if (/^lib(c|m|stdc\+\+|gcc_s|pthread|dl|rt)[.-]/.test(name) || /^ld-linux/.test(name)) return 'libc / libstdc++ / ld.so';
  if (/\.so(\.|$)/.test(name) || name.endsWith('.node')) return `other library (${name})`;
  return `other file (${name})`;
}

/** RSS and PSS in MiB per group, plus the number of threads. */
export function smapsBreakdown(pid: number): { parts: Map<string, Part>; threads: number } {
  const text = readFileSync(`/proc/${pid}/smaps`, 'utf8');
  interface Mapping {
    start: number;
    end: number;
    perms: string;
    path: string;
    rss: number;
    pss: number;
  }
  const mappings: Mapping[] = [];
  let current: Mapping | undefined;
  for (const line of text.split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      current = { start: Number.parseInt(head[1]!, 16), end: Number.parseInt(head[2]!, 16), perms: head[3]!, path: head[4]!.trim(), rss: 0, pss: 0 };
      mappings.push(current);
      continue;
    }
    const field = /^(Rss|Pss):\s+(\d+) kB/.exec(line);
    if (field && current) current[field[1] === 'Rss' ? 'rss' : 'pss'] = Number(field[2]) / 1024;
  }
  const parts = new Map<string, Part>();
  const add = (group: string, m: Mapping) => {
    const part = parts.get(group) ?? { rss: 0, pss: 0 };
    part.rss += m.rss;
    part.pss += m.pss;
    parts.set(group, part);
  };
  for (const [i, m] of mappings.entries()) {
    if (m.rss === 0 && m.pss === 0) continue;
    if (m.path === '[heap]') add('malloc: main arena (brk heap)', m);
    else if (m.path === '[stack]') add('main thread stack', m);
    else if (m.path.startsWith('[')) add(`kernel ${m.path}`, m);
    else if (m.path && !m.path.startsWith('/dev/') && !m.path.startsWith('/memfd:')) add(fileGroup(m.path), m);
    else {
      const previous = mappings[i - 1];
      const next = mappings[i + 1];
      // glibc thread arenas: a 64 MiB-aligned reservation, read-write from its start, the rest PROT_NONE.
      if (m.start % ARENA === 0 && next && next.perms === '---p' && next.start === m.end && next.end - m.start <= ARENA) add('malloc: thread arenas', m);
      // A thread stack: a read-write mapping right above its PROT_NONE guard page.
      else if (previous && previous.perms === '---p' && previous.end === m.start && previous.end - previous.start <= 64 * 1024 && m.end - m.start >= 256 * 1024)
        add('thread stacks (and other guarded mappings)', m);
      else add('anonymous: V8 heap + large malloc chunks + rest', m);
    }
  }
  const threads = Number(/Threads:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
  return { parts, threads };
}
