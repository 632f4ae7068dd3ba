// What an engine process gives back to the system once its model has loaded (Linux, glibc). Measured
// on chat-512x8 (bench/engine-startup.ts --breakdown, docs/BENCHMARKS.md "Idle memory, mapping by
// mapping"): the loader leaves ~8 MiB of freed malloc memory in glibc's arenas, and llama.cpp's CPU
// backend copies the weights it repacks (AMX / AVX-512 layouts: 38 of 31 MiB on a Sapphire Rapids
// machine) out of the memory-mapped GGUF, whose pages then stay resident in the process although
// nothing reads most of them again. Dropping those pages is safe: the mapping is read-only and
// file-backed, so a page the model does read again (token embedding rows, norms: weights left in the
// mapped buffer) faults back in from the page cache. llama-server keeps both, so this is where an
// engine process can be leaner than it without touching how llama.cpp decodes.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

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

/**
 * After a model has loaded: collects the load's JavaScript garbage, returns the malloc arenas' free memory to the system and drops the resident
 * pages of every memory-mapped model file (`.gguf`) from this process. Does nothing where koffi or glibc
 * is missing. Only for a process that holds one model (the engine process): a server process may be
 * mapping another model that is decoding.
 */
export function releaseLoadLeftovers(): Released {
  // The load's JavaScript garbage first (host.ts starts engine processes with `gc` exposed): what V8
  // frees goes back to malloc or the system before the trim below.
  const collected = typeof globalThis.gc === 'function';
  if (collected) globalThis.gc!();
  native ??= bind();
  if (!native) return { mappedMiB: 0, trimmed: false, collected };
  let bytes = 0;
  for (const line of readFileSync('/proc/self/maps', 'utf8').split('\n')) {
    // start-end perms offset dev inode path; only read-only mappings (never a written page to lose).
    const match = /^([0-9a-f]+)-([0-9a-f]+) r--[ps] \S+ \S+ \d+\s+(.+\.gguf)$/.exec(line);
    if (!match) continue;
    const start = Number.parseInt(match[1]!, 16);
    const length = Number.parseInt(match[2]!, 16) - start;
    if (native.madvise(start, length, MADV_DONTNEED) === 0) bytes += length;
  }
  native.mallocTrim(0);
  return { mappedMiB: bytes / 1048576, trimmed: true, collected };
}
