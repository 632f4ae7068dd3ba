// What a process gives back to the system once it has started (Linux, glibc). Measured with
// bench/engine-startup.ts --breakdown (docs/BENCHMARKS.md "Idle memory, mapping by mapping" and the
// rss4 section):
// - the loader leaves ~8 MiB of freed malloc memory in glibc's arenas (malloc_trim returns it);
// - llama.cpp's CPU backend copies the weights it repacks (AMX / AVX-512 layouts) out of the
//   memory-mapped GGUF, whose pages then stay resident although nothing reads most of them again;
// - start-up touches ~41 MiB of the Node binary (its dynamic symbol table, V8's snapshot and parser,
//   node's bundled JavaScript and their code caches, ICU data) in *each* Node process, of which an
//   idle or serving process reads ~15–18 MiB again;
// - the server's V8 young generation grows to 16–22 MiB while it imports and builds itself and V8
//   keeps it at that size while idle (see shrinkYoungGeneration).
// Dropping a read-only, file-backed page is safe: nothing was written to it, so a page that is read
// again (code on the request path, token embedding rows) faults back in from the page cache, a minor
// fault. llama-server keeps all of these resident too, so this is where Infera's processes can be
// leaner than their start-up left them without touching how anything decodes.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

const MADV_DONTNEED = 4;

interface Released {
  /** How much of the model files' mappings was dropped from this process's resident set (MiB of address range). */
  mappedMiB: number;
  /** Whether glibc's malloc_trim ran. */
  trimmed: boolean;
  /** Whether a full garbage collection ran first (only where `gc` is exposed: engine processes). */
  collected: boolean;
}

type Native = { madvise(address: number, length: number, advice: number): number; mallocTrim(pad: number): number };
let native: Native | null | undefined;

function bind(): Native | null {
  if (process.platform !== 'linux') return null;
  try {
    const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
    const libc = koffi.load('libc.so.6');
    return {
      madvise: libc.func('int madvise(uintptr_t addr, size_t length, int advice)') as Native['madvise'],
      // glibc only (musl has no malloc_trim): its absence only means nothing is trimmed.
      mallocTrim: libc.func('int malloc_trim(size_t pad)') as Native['mallocTrim'],
    };
  } catch {
    return null;
  }
}

const isModelFile = (path: string) => /\.(gguf|onnx)$/.test(path);

/**
 * Drops from this process the resident pages of every mapping that is read-only, maps a regular file
 * and holds no anonymous (written, copy-on-write) page: the model files' (`models`), or every other
 * file's (`code`: the Node binary, shared libraries, native addons).
 * A read-only mapping can still hold written pages (a library's relocated RELRO data, a debugger's
 * breakpoint): those say `Anonymous:` > 0 in smaps and are left alone, since dropping them would
 * bring back the file's unrelocated bytes.
 */
function dropFilePages(madvise: Native['madvise'], which: 'models' | 'code'): { mappedMiB: number; codeMiB: number } {
  let mapped = 0;
  let codeKiB = 0;
  let current: { start: number; length: number; path: string; rssKiB: number } | undefined;
  const drop = () => {
    if (!current) return;
    const { start, length, path, rssKiB } = current;
    current = undefined;
    if (isModelFile(path) !== (which === 'models')) return;
    if (madvise(start, length, MADV_DONTNEED) !== 0) return;
    if (isModelFile(path)) mapped += length;
    else codeKiB += rssKiB;
  };
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    // start-end perms offset dev inode path
    const head = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (head) {
      current = undefined;
      const [, from, to, perms, path] = head as unknown as [string, string, string, string, string];
      // Not writable; a file (not [heap], [stack], [vdso], anonymous); not a device (/dev/: a GPU
      // driver's mappings), not a memfd, not a deleted file.
      if (perms[1] === '-' && path.startsWith('/') && !path.startsWith('/dev/') && !path.startsWith('/memfd:') && !path.endsWith('(deleted)')) {
        const start = Number.parseInt(from, 16);
        current = { start, length: Number.parseInt(to, 16) - start, path, rssKiB: 0 };
      }
      continue;
    }
    if (!current) continue;
    if (line.startsWith('Rss:')) {
      current.rssKiB = Number(/(\d+)/.exec(line)?.[1]);
      if (current.rssKiB === 0) current = undefined;
    } else if (line.startsWith('Anonymous:')) {
      if (Number(/(\d+)/.exec(line)?.[1]) === 0) drop();
      else current = undefined;
    }
  }
  // V8 keeps the last regular-expression match's subject (RegExp.lastMatch) for the life of the
  // context: a line of the split above, a slice that holds the whole smaps text (~200 KiB, the rss5
  // heap snapshot of an idle server). A match on a short string of its own lets it go.
  /^/.exec(' ');
  return { mappedMiB: mapped / 1048576, codeMiB: codeKiB / 1024 };
}

/**
 * After a model has loaded: collects the load's JavaScript garbage, returns the malloc arenas' free
 * memory to the system and drops the resident pages of every memory-mapped model file (`.gguf`) from this
 * process. Does nothing where koffi or glibc is missing. Only for a process that holds one model (the
 * engine process): a server process may be mapping another model that is decoding.
 */
export function releaseLoadLeftovers({ collect = true }: { collect?: boolean } = {}): Released {
  // The load's JavaScript garbage first (host.ts starts engine processes with `gc` exposed): what V8
  // frees goes back to malloc or the system before the trim below. `collect: false` leaves it to a
  // later collectGarbage (see there).
  const collected = collect && collectGarbage();
  native ??= bind();
  if (!native) return { mappedMiB: 0, trimmed: false, collected };
  const { mappedMiB } = dropFilePages(native.madvise, 'models');
  native.mallocTrim(0);
  return { mappedMiB, trimmed: true, collected };
}

/**
 * A full garbage collection, where `gc` is exposed (engine processes: host.ts); whether one ran. Not on
 * the way to a first answer: V8 drops the bytecode of functions a forced full collection finds idle, so
 * the code a load compiled once (node-llama-cpp's chat-wrapper resolution, the Jinja engine) is compiled
 * again at its next use. Resolving the no-thinking chat wrapper right after one or two cost 132-138 ms of
 * CPU instead of 64-65 (bench/chat-wrapper-resolve.ts --collect), and ~145 instead of ~70 in the engine
 * process between its load and a first answer without thinking (docs/BENCHMARKS.md, branch start8).
 */
export function collectGarbage(): boolean {
  if (typeof globalThis.gc !== 'function') return false;
  globalThis.gc();
  return true;
}

/**
 * An engine process a second after its load: drops the Node binary's and the libraries' start-up pages
 * (~28 MiB; the first requests fault back the ~15 MiB they use). Not in releaseLoadLeftovers, which runs
 * before the process reports itself loaded: there the first answer would pay for faulting back what it
 * runs (engine CPU at the first answer +30–80 ms in one sitting).
 */
export function releaseCodePages(): { codeMiB: number } {
  native ??= bind();
  if (!native) return { codeMiB: 0 };
  return { codeMiB: dropFilePages(native.madvise, 'code').codeMiB };
}

/** This process's CPU time so far, every thread (getrusage), in ms. */
function processCpuMs(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
}

/** What releaseIdlePages gave back. */
interface IdleReleased {
  codeMiB: number;
  trimmed: boolean;
}

/**
 * The code pages a served request faulted back (releaseCodePages) and malloc's free memory (malloc_trim),
 * as a quiet process's release (releaseWhenQuiet). The model files' pages stay: llama-server keeps them
 * resident too, and the next decode would fault all of them back.
 */
export function releaseIdlePages(): IdleReleased {
  native ??= bind();
  if (!native) return { codeMiB: 0, trimmed: false };
  const { codeMiB } = dropFilePages(native.madvise, 'code');
  native.mallocTrim(0);
  return { codeMiB, trimmed: true };
}

/**
 * Runs `release` every time this process goes quiet after having worked: once `releaseAfterQuietTicks`
 * (2) ticks in a row (every `tickMs`, 250 ms: 0.5 s) each saw the process use under `quietCpuMs` (2 ms)
 * of CPU (all its threads) — starting counts as work, so the process releases 0.5 s after the call too.
 * Requests less than half a second apart never pay the faults below; one after a quiet half second does.
 * Serving a request faults back ~10–14 MiB of the Node binary's code in an engine process (the
 * interpreter, V8's compilers, libuv, llama.cpp's libraries; rss7 in docs/BENCHMARKS.md) which an idle
 * process does not read again until the next request: it stays out of the resident set while idle and
 * comes back from the page cache (100–250 minor faults with fault-around, ~1 ms) at the next request
 * after a quiet tick. CPU time, not requests in flight, says "quiet": it also waits out deferred work
 * (the chat engine's no-thinking chat wrapper, ~400 ms of CPU after the first answer) and needs no hook
 * on the request path. The release's own CPU is not counted as work (no release loop).
 * `onWork` runs at the first tick that sees work after a release (at most a tick into a burst).
 * With `sleepAfterQuietTicks`, the ticks stop after that many quiet ones in a row once it has released
 * (an idle engine process woke 4 times a second, ~0.27 ms of CPU each there) until `wake()` says work
 * came. The timer never keeps the process alive.
 * Cost measured on a loaded box (load 11–15, rss7): a 16-token chat request after a quiet period took
 * 180–870 minor faults (server and engine) against 3–130 right after another request; its CPU (~95 ms
 * there) moved by less than that box's noise (0 and +10 ms in two sittings).
 */
export function releaseWhenQuiet(
  release: () => void,
  options: { tickMs?: number; quietCpuMs?: number; releaseAfterQuietTicks?: number; sleepAfterQuietTicks?: number; onWork?: () => void } = {},
): { wake(): void; stop(): void } {
  const { tickMs = 250, quietCpuMs = 2, releaseAfterQuietTicks = 2, sleepAfterQuietTicks = Number.POSITIVE_INFINITY, onWork } = options;
  let worked = true;
  let quietTicks = 0;
  let last = processCpuMs();
  let timer: NodeJS.Timeout | undefined;
  const tick = () => {
    const now = processCpuMs();
    if (now - last >= quietCpuMs) {
      if (!worked) onWork?.();
      worked = true;
      quietTicks = 0;
    } else if (worked) {
      if (++quietTicks < releaseAfterQuietTicks) {
        last = now;
        return;
      }
      worked = false;
      quietTicks = 0;
      release();
      last = processCpuMs();
      return;
    } else if (++quietTicks >= sleepAfterQuietTicks) {
      clearInterval(timer);
      timer = undefined;
    }
    last = now;
  };
  const wake = () => {
    if (timer) return;
    worked = true;
    quietTicks = 0;
    last = processCpuMs();
    timer = setInterval(tick, tickMs);
    timer.unref();
  };
  wake();
  return {
    wake,
    stop: () => {
      clearInterval(timer);
      timer = undefined;
    },
  };
}

/** Physical MiB of V8's young generation (both semi-spaces). */
const youngGenerationMiB = () => (getHeapSpaceStatistics().find((space) => space.space_name === 'new_space')?.physical_space_size ?? 0) / 1048576;

/**
 * The server's V8 young generation after start-up: V8 (11.3, Node 20) grows the semi-spaces to 8–16 MiB
 * each while the server imports and builds itself, and shrinks them only in a full collection that
 * finds the allocation rate low (under 1,000 bytes/ms over its last ~10 collections' samples) or that
 * its memory reducer starts — which an idle server never got to (RSS the same 60 s after start).
 * `gc()` alone does not: start-up's allocation rate is still in those samples. So: 16 minor collections
 * 20 ms apart, each after a small allocation (a rate of exactly 0 does not count as low), fill V8's
 * samples with the idle rate, and a full collection then shrinks the young generation to its initial
 * size. It grows back as a request load needs it, as after V8's own memory reducer. Where V8 keeps the
 * size anyway, it is tried again 2 s later (at most 3 times).
 * `--max-semi-space-size` would avoid the growth, but the server's Node is started by the user, and
 * capping growth during start-up from inside (`--semi-space-growth-factor=1`) cost 100–200 ms of
 * start-up CPU (docs/BENCHMARKS.md, branch startup); this costs ~100 ms of CPU after it.
 * No full collection once the process has worked besides (`busyMs`, 100 ms of its event loop's active
 * time, since the call or the last attempt; ~30 % of an attempt's ~330 ms, where a quiet server spends
 * ~5 and one connection's requests ~300): a forced full collection in a server that has served requests drops V8's
 * optimised code for the request path — V8 drops optimised code whose embedded objects (maps of
 * per-request objects among them) a collection between two requests finds dead (`weak objects` in
 * `--trace-deopt`) — and the
 * requests after it run unoptimised while V8 compiles the path again. A server that got requests in its
 * first ~7 s had up to 3 of these (one connection, 3,000 requests: ~45 optimised functions dropped by
 * the last, ~170 compiled again in the next 3,000; docs/BENCHMARKS.md, branch `gw11`). A working
 * server's young generation is in use anyway; `busy` says the attempts stopped for that.
 * The `gc` function comes from a context created while `--expose-gc` is set; the flag is turned back
 * off at once, so nothing else in the server sees a `gc` global.
 * Returns the young generation's physical MiB before and after, the full collections made, and whether it stopped busy.
 */
export async function shrinkYoungGeneration({ busyMs = 100 }: { busyMs?: number } = {}): Promise<{ beforeMiB: number; afterMiB: number; attempts: number; busy: boolean }> {
  const beforeMiB = youngGenerationMiB();
  // Already at (about) its initial size: nothing to give back.
  if (beforeMiB <= 4) return { beforeMiB, afterMiB: beforeMiB, attempts: 0, busy: false };
  setFlagsFromString('--expose-gc');
  let gc: (options?: { type: 'minor' }) => void;
  try {
    gc = runInNewContext('gc') as typeof gc;
  } finally {
    setFlagsFromString('--no-expose-gc');
  }
  // Main-thread time spent on anything but this function's own collections, since the last look: the
  // event loop's active time (V8's helper threads, still sweeping or compiling start-up's code, do not count).
  let otherMs = 0;
  let mark = performance.eventLoopUtilization();
  const look = () => {
    const now = performance.eventLoopUtilization();
    otherMs += performance.eventLoopUtilization(now, mark).active;
    mark = now;
  };
  const own = (collect: () => void) => {
    look();
    const start = performance.now();
    collect();
    const spent = performance.now() - start;
    look();
    otherMs -= spent;
  };
  for (let attempt = 0; ; attempt++) {
    let sample: number[] = [];
    for (let i = 0; i < 16; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      sample = new Array<number>(1000).fill(i);
      own(() => gc({ type: 'minor' }));
    }
    sample.length = 0;
    look();
    // Working since the last look (requests): no full collection now or later.
    if (otherMs >= busyMs) return { beforeMiB, afterMiB: youngGenerationMiB(), attempts: attempt, busy: true };
    own(() => gc());
    otherMs = 0;
    const afterMiB = youngGenerationMiB();
    if (afterMiB <= 4 || attempt === 2) return { beforeMiB, afterMiB, attempts: attempt + 1, busy: false };
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

/** How many times over V8 grows the young generation when it grows it: its default, and while a server works. */
export const YOUNG_GENERATION_GROWTH = { stepwise: 2, atOnce: 64 } as const;
let youngGrowth: number = YOUNG_GENERATION_GROWTH.stepwise;

/**
 * While `atOnce`, the young generation grows back to its full size (16 MiB semi-spaces) in one step instead
 * of doubling from 1 MiB. V8 shrinks it to 1 MiB at a collection after a quiet spell, so every burst of
 * requests after an idle moment started with it small: at ~50 KB allocated per gateway request, a
 * scavenge (~0.5–1 ms, whatever the size) every ~20–120 requests for the burst's first ~2 s and ~60 of
 * them before it was grown again, against one every ~400 requests after — 1.2–1.5 % of the requests of a
 * 4 s one-connection burst overlapped one, which made its p99, and those scavenges' promotions brought a
 * mark-compact (8–47 ms) into most bursts (docs/BENCHMARKS.md, branch `gwtail`). V8 still grows it only
 * when a scavenge finds as much surviving as it holds (a sustained load) and reads the factor at each
 * growth, so it is set for bursts only (releaseWhenQuiet's `onWork`) and back to V8's default when the
 * process goes quiet: growth while idle, and an idle server after start-up, stay as they were (at this
 * factor from start-up on, an idle server's young generation grew to its full size: RSS +5 MiB). After
 * a burst of a few hundred requests it is at its full size while idle, as after ~20,000 before (idle RSS
 * +12 MiB after 300 requests, +23 after 3,000, until V8 shrinks it); giving it back 6 s into a quiet
 * spell with shrinkYoungGeneration's forced full collection was tried and dropped: V8 then threw away
 * the compiled request path, and the next burst recompiled it (+300 µs of CPU a request).
 */
export function growYoungGeneration(how: keyof typeof YOUNG_GENERATION_GROWTH): void {
  const factor = YOUNG_GENERATION_GROWTH[how];
  if (factor === youngGrowth) return;
  youngGrowth = factor;
  setFlagsFromString(`--semi-space-growth-factor=${factor}`);
}

/**
 * The server once it has started (listening, eager models loaded) and a second has passed: its young
 * generation back to its initial size, then the Node binary's and the libraries' start-up pages dropped
 * and malloc's free memory returned, as an engine process does after its load. Model files stay: with
 * `isolation: none` a model decoding in this process reads them. Costs ~150 ms of CPU once (koffi's
 * load ~20, the young generation ~100, reading smaps and dropping ~20), in steps 20 ms apart, so
 * requests are served in between.
 */
export async function releaseServerStartup(): Promise<{ youngGeneration: { beforeMiB: number; afterMiB: number; attempts: number; busy: boolean }; codeMiB: number; trimmed: boolean }> {
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const youngGeneration = await shrinkYoungGeneration();
  const { codeMiB } = releaseCodePages();
  if (!native) return { youngGeneration, codeMiB, trimmed: false };
  native.mallocTrim(0);
  return { youngGeneration, codeMiB, trimmed: true };
}
