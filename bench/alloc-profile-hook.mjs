// Preloaded (--import) by bench/gateway-overhead.ts --alloc: V8's sampling heap profiler, keeping the
// samples of objects the GC has since collected, so the profile is what was allocated, not what is still
// alive. SIGUSR2 starts a profile; the next SIGUSR2 stops it and writes <dir>/alloc-<pid>-<n>.heapprofile
// (DevTools' Memory tab opens it; bench/heap-profile-summary.ts reads it as text).
// INFERA_BENCH_ALLOC_SURVIVORS=1 leaves out what scavenges collected: the profile is then what survived
// the young generation (promoted, and mostly dead by a later full GC) — the allocation sites behind the
// old-space growth whose full GCs make a p99.
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { join } from 'node:path';

const dir = process.env.INFERA_BENCH_ALLOC_DIR;
if (dir) {
  const session = new Session();
  session.connect();
  session.post('HeapProfiler.enable');
  let running = false;
  let n = 0;
  process.on('SIGUSR2', () => {
    if (!running) {
      running = true;
      // One sample per ~1 KiB allocated on average: per-request figures of a few KB come out within a few %.
      session.post('HeapProfiler.startSampling', { samplingInterval: 1024, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: process.env.INFERA_BENCH_ALLOC_SURVIVORS !== '1' });
      return;
    }
    running = false;
    // An in-thread session answers synchronously.
    session.post('HeapProfiler.stopSampling', (error, result) => {
      if (!error) writeFileSync(join(dir, `alloc-${process.pid}-${n++}.heapprofile`), JSON.stringify(result.profile));
    });
  });
}
