// releaseLoadLeftovers drops the model file's resident pages from the process, releaseCodePages the Node
// binary's and the libraries': the model must go on generating exactly what it generated before (every
// page it reads again faults back in from the file), and the mappings' resident size must actually fall.
// releaseServerStartup (the server's) drops the code pages but keeps a model's, and shrinks V8's young
// generation. releaseWhenQuiet releases once per burst of work, when the process goes quiet, and says when
// work starts again; growYoungGeneration('atOnce') makes the young generation regrow in one step.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GgmlType } from '../../tiny-models/gguf-writer.ts';
import { encodeRandomChatModel } from '../../tiny-models/random-chat.ts';
import { openLlamaLibrary } from '../llama-cpp/ffi/library.ts';
import { LlamaRunner } from '../llama-cpp/ffi/runner.ts';
import { getHeapSpaceStatistics } from 'node:v8';
import { constants, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { collectGarbage, releaseCodePages, releaseIdlePages, releaseLoadLeftovers, releaseServerStartup, releaseWhenQuiet, shrinkYoungGeneration } from './release.ts';

let dir: string;
let path: string;
let runner: LlamaRunner;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'infera-release-'));
  path = join(dir, 'random.gguf');
  writeFileSync(
    path,
    encodeRandomChatModel({ hidden: 64, layers: 2, heads: 4, headsKv: 2, feedForward: 128, seed: 23, matrixType: GgmlType.F32, endBias: 100, asciiOnly: true }),
  );
  runner = LlamaRunner.load(await openLlamaLibrary(), path, { contextSize: 256, sequences: 1, threads: 1, promptCache: false });
});

after(async () => {
  await runner?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

/** Resident KiB of this process's mappings of the file at `file` (default: the model), or of every file whose path matches it. */
function residentKiB(file: string | RegExp = path): number {
  let kib = 0;
  let inModel = false;
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) inModel = typeof file === 'string' ? line.endsWith(file) : file.test(line);
    else if (inModel && line.startsWith('Rss:')) kib += Number(/(\d+)/.exec(line)![1]);
  }
  return kib;
}

// llama.cpp's shared libraries: only the runner runs their code, and it is idle while the release runs and
// is measured, so what the drop took stays out (the Node binary is running the test itself: how much of it
// faults back in between the drop and a reading depends on the kernel's fault-around, up to all of it).
const llamaLibraries = /\/lib(llama|ggml)[^/]*\.so[.\d]*$/;

async function greedy(): Promise<number[]> {
  const tokens: number[] = [];
  await runner.generate({
    prompt: runner.tokenize('<|im_start|>user\nalpha beta gamma delta<|im_end|>\n<|im_start|>assistant\n'),
    sampling: { temperature: 0 },
    maxTokens: 12,
    onToken: (event) => {
      tokens.push(event.token);
      return undefined;
    },
  }).done;
  return tokens;
}

test('after the release the model file is no longer resident, and the model generates exactly as before', { skip: process.platform !== 'linux' && 'Linux only' }, async () => {
  const before = await greedy();
  assert.equal(before.length, 12);
  const residentBefore = residentKiB();
  assert.ok(residentBefore > 0, 'the runner maps its GGUF');
  const librariesBefore = residentKiB(llamaLibraries);
  assert.ok(librariesBefore > 0, 'the runner maps llama.cpp\'s libraries');
  const released = releaseLoadLeftovers();
  assert.ok(released.trimmed, 'glibc malloc_trim ran');
  assert.ok(released.mappedMiB > 0, JSON.stringify(released));
  assert.ok(residentKiB() < residentBefore, `model file still resident: ${residentKiB()} of ${residentBefore} KiB`);
  assert.ok(residentKiB(llamaLibraries) >= librariesBefore / 2, 'releaseLoadLeftovers leaves code pages to releaseCodePages');
  const code = releaseCodePages();
  const librariesAfter = residentKiB(llamaLibraries);
  assert.ok(code.codeMiB > 0, JSON.stringify(code));
  assert.ok(librariesAfter < librariesBefore / 2, `llama.cpp libraries: ${librariesAfter} of ${librariesBefore} KiB still resident`);
  assert.deepEqual(await greedy(), before);
});

test("the server's release keeps the model file's pages and drops the libraries' code pages", { skip: process.platform !== 'linux' && 'Linux only' }, async () => {
  const tokens = await greedy();
  const modelBefore = residentKiB();
  const librariesBefore = residentKiB(llamaLibraries);
  assert.ok(modelBefore > 0 && librariesBefore > 0, `model ${modelBefore} KiB, llama.cpp libraries ${librariesBefore} KiB resident`);
  const released = await releaseServerStartup();
  assert.ok(released.trimmed && released.codeMiB > 0, JSON.stringify(released));
  const librariesAfter = residentKiB(llamaLibraries);
  assert.ok(residentKiB() >= modelBefore, `model pages dropped: ${residentKiB()} of ${modelBefore} KiB left`);
  assert.ok(librariesAfter < librariesBefore / 2, `llama.cpp libraries: ${librariesAfter} of ${librariesBefore} KiB still resident`);
  assert.deepEqual(await greedy(), tokens);
});

test('shrinkYoungGeneration gives back a young generation grown by a burst of surviving allocations', async () => {
  const youngMiB = () => getHeapSpaceStatistics().find((space) => space.space_name === 'new_space')!.physical_space_size / 1048576;
  // Objects that survive a scavenge or two make V8 grow the semi-spaces, as the server's start-up does.
  let keep: unknown[] = [];
  for (let i = 0; i < 3_000_000; i++) {
    keep.push({ i, list: [i] });
    if (keep.length > 200_000) keep = [];
  }
  keep = [];
  const grown = youngMiB();
  assert.ok(grown > 8, `the burst did not grow the young generation (${grown.toFixed(1)} MiB): the test proves nothing`);
  const { beforeMiB, afterMiB, attempts } = await shrinkYoungGeneration();
  assert.ok(afterMiB <= 4 && youngMiB() <= 4, `young generation ${beforeMiB.toFixed(1)} -> ${afterMiB.toFixed(1)} MiB after ${attempts} attempts (V8 ${process.versions.v8})`);
  console.log(`young generation ${beforeMiB.toFixed(1)} -> ${afterMiB.toFixed(1)} MiB, ${attempts} attempt(s)`);
  assert.equal(typeof (globalThis as { gc?: unknown }).gc, 'undefined', 'gc stays unexposed');
});

test('shrinkYoungGeneration makes no full collection in a process that works meanwhile (it would drop the optimised request path)', async () => {
  const youngMiB = () => getHeapSpaceStatistics().find((space) => space.space_name === 'new_space')!.physical_space_size / 1048576;
  let keep: unknown[] = [];
  for (let i = 0; i < 3_000_000; i++) {
    keep.push({ i, list: [i] });
    if (keep.length > 200_000) keep = [];
  }
  keep = [];
  assert.ok(youngMiB() > 8, `the burst did not grow the young generation (${youngMiB().toFixed(1)} MiB): the test proves nothing`);
  // Forced full collections (gc()) from here on, as the gc entries Node reports; V8's own full
  // collections (a busy test run's heap growth) may come meanwhile and are not this function's.
  let major = 0;
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const detail = (entry as PerformanceEntry & { detail?: { kind?: number; flags?: number } }).detail;
      if (detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR && ((detail.flags ?? 0) & constants.NODE_PERFORMANCE_GC_FLAGS_FORCED) !== 0) major++;
    }
  });
  observer.observe({ entryTypes: ['gc'] });
  // Requests being served: the main thread busy ~15 ms of every 20.
  const work = setInterval(() => burn(15), 20);
  try {
    const result = await shrinkYoungGeneration();
    await sleep(100);
    assert.deepEqual({ attempts: result.attempts, busy: result.busy, major }, { attempts: 0, busy: true, major: 0 }, JSON.stringify(result));
  } finally {
    clearInterval(work);
    observer.disconnect();
  }
});

/** Keeps this thread on the CPU for `ms`. */
function burn(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until);
}
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test('releaseWhenQuiet releases once after each burst of work, not while working, and not for its own work', async () => {
  const tickMs = 50;
  let releases = 0;
  // A release as dear as reading smaps: counted as work, it would release again at every quiet tick.
  const { stop } = releaseWhenQuiet(
    () => {
      releases++;
      burn(10);
    },
    { tickMs, quietCpuMs: 2, releaseAfterQuietTicks: 2 },
  );
  try {
    // Starting counts as work: the second quiet tick releases (not the first), and the quiet ticks after it do not.
    await sleep(tickMs * 1.5);
    assert.equal(releases, 0, 'released after one quiet tick of two');
    await sleep(tickMs * 6);
    assert.equal(releases, 1, 'one release after the start, none for the quiet ticks after it');
    // Working through several ticks (timers still run between the slices): no release meanwhile.
    const until = performance.now() + tickMs * 5;
    while (performance.now() < until) {
      burn(10);
      await new Promise((resolve) => setImmediate(resolve));
    }
    assert.equal(releases, 1, 'no release while the process works');
    await sleep(tickMs * 6);
    assert.equal(releases, 2, 'one release once the burst is over');
  } finally {
    stop();
  }
});

test('releaseWhenQuiet calls onWork at the first tick that sees work after a release, once per burst', async () => {
  const tickMs = 50;
  const events: string[] = [];
  const { stop } = releaseWhenQuiet(() => events.push('release'), { tickMs, quietCpuMs: 2, releaseAfterQuietTicks: 2, onWork: () => events.push('work') });
  // Timers run late on a loaded machine: wait for what must come, up to 3 s.
  const waitFor = async (count: number) => {
    for (const until = performance.now() + 3000; events.length < count && performance.now() < until; ) await sleep(tickMs);
  };
  try {
    // Starting counts as work, but not as work that follows a release.
    await waitFor(1);
    await sleep(tickMs * 4);
    assert.deepEqual(events, ['release']);
    // A burst over several ticks: one onWork, while it lasts, none after.
    const until = performance.now() + tickMs * 6;
    let seenBeforeEnd = false;
    while (performance.now() < until) {
      burn(10);
      await new Promise((resolve) => setImmediate(resolve));
      seenBeforeEnd ||= events.includes('work');
    }
    assert.ok(seenBeforeEnd, `onWork did not come while the burst lasted: ${events.join(', ')}`);
    await waitFor(3);
    assert.deepEqual(events, ['release', 'work', 'release'], 'one onWork per burst, then one release');
    burn(tickMs * 3);
    await waitFor(5);
    assert.deepEqual(events, ['release', 'work', 'release', 'work', 'release']);
  } finally {
    stop();
  }
});

test("growYoungGeneration('atOnce') makes the young generation grow back to its full size in one step, 'stepwise' as V8 does", async () => {
  // A process each: the factor is a process-wide V8 flag.
  const fixture = new URL('./fixtures/young-growth.ts', import.meta.url).pathname;
  const sizes = async (how: string) =>
    JSON.parse((await promisify(execFile)(process.execPath, ['--import', 'tsx', fixture, how], { encoding: 'utf8' })).stdout) as number[];
  const [atOnce, stepwise, untouched] = await Promise.all([sizes('atOnce'), sizes('stepwise'), sizes('none')]);
  const grown = Math.max(...untouched);
  assert.ok(untouched.length >= 3 && untouched[0]! <= grown / 4, `V8 did not grow it in steps here (${untouched.join(' -> ')} MiB): the test proves nothing`);
  assert.deepEqual(stepwise, untouched, 'stepwise is V8 default');
  assert.deepEqual(atOnce, [untouched[0], grown], `atOnce went ${atOnce.join(' -> ')} MiB`);
});

test('releaseWhenQuiet with sleepAfterQuietTicks stops ticking when idle and releases again after wake()', async () => {
  const tickMs = 50;
  let releases = 0;
  const quiet = releaseWhenQuiet(() => releases++, { tickMs, quietCpuMs: 2, releaseAfterQuietTicks: 1, sleepAfterQuietTicks: 2 });
  try {
    await sleep(tickMs * 8);
    assert.equal(releases, 1);
    // Asleep now: work without wake() goes unnoticed.
    burn(tickMs * 2);
    await sleep(tickMs * 6);
    assert.equal(releases, 1, 'ticks kept running after quiet ticks');
    quiet.wake();
    burn(tickMs * 2);
    await sleep(tickMs * 6);
    assert.equal(releases, 2, 'no release after wake() and work');
  } finally {
    quiet.stop();
  }
});

test("releaseIdlePages drops the libraries' code pages a run faulted back and keeps the model's", { skip: process.platform !== 'linux' && 'Linux only' }, async () => {
  const tokens = await greedy();
  const modelBefore = residentKiB();
  const librariesBefore = residentKiB(llamaLibraries);
  assert.ok(modelBefore > 0 && librariesBefore > 0, `model ${modelBefore} KiB, llama.cpp libraries ${librariesBefore} KiB resident`);
  const released = releaseIdlePages();
  assert.ok(released.trimmed && released.codeMiB > 0, JSON.stringify(released));
  assert.ok(residentKiB() >= modelBefore, `model pages dropped: ${residentKiB()} of ${modelBefore} KiB left`);
  assert.ok(residentKiB(llamaLibraries) < librariesBefore / 2, `llama.cpp libraries: ${residentKiB(llamaLibraries)} of ${librariesBefore} KiB still resident`);
  assert.deepEqual(await greedy(), tokens);
});

test('releaseLoadLeftovers collects garbage only when asked; collectGarbage runs gc where it is exposed', { skip: process.platform !== 'linux' && 'Linux only' }, () => {
  // The engine process (child.ts) releases its load's leftovers before it reports itself loaded but leaves
  // the full collection to its first quiet moment: one before the first request made V8 drop the
  // chat-wrapper code the load had compiled (collectGarbage's comment).
  const global = globalThis as { gc?: () => void };
  assert.equal(global.gc, undefined, 'this test process has no gc of its own');
  assert.equal(collectGarbage(), false, 'no gc exposed: nothing ran');
  let collections = 0;
  global.gc = () => collections++;
  try {
    const later = releaseLoadLeftovers({ collect: false });
    assert.equal(collections, 0, 'collect: false ran a collection');
    assert.equal(later.collected, false);
    assert.ok(later.trimmed, 'the trim and the model pages do not wait for the collection');
    assert.equal(releaseLoadLeftovers().collected, true);
    assert.equal(collections, 1);
    assert.equal(collectGarbage(), true);
    assert.equal(collections, 2);
  } finally {
    delete global.gc;
  }
});
