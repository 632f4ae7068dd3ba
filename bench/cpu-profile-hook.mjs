// Preloaded by bench/engine-startup.ts --profile (NODE_OPTIONS=--import, which rejects --cpu-prof):
// profiles the whole life of every Node process it is loaded into (the server and its engine process)
// and writes <dir>/<role>-<pid>.cpuprofile at exit. Open them in Chrome DevTools or speedscope.
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { join } from 'node:path';

const dir = process.env.INFERA_BENCH_PROFILE_DIR;
if (dir) {
  const session = new Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', { interval: 200 });
  // INFERA_BENCH_PROFILE_DELAY_MS: start late, e.g. past start-up and a bench's warm-up, so the profile
  // holds only the steady state.
  const delay = Number(process.env.INFERA_BENCH_PROFILE_DELAY_MS ?? 0);
  if (delay > 0) setTimeout(() => session.post('Profiler.start'), delay).unref();
  else session.post('Profiler.start');
  process.on('exit', () => {
    // An in-thread session answers synchronously, so this completes inside the exit handler.
    session.post('Profiler.stop', (error, result) => {
      if (!error) writeFileSync(join(dir, `${process.send ? 'engine' : 'server'}-${process.pid}.cpuprofile`), JSON.stringify(result.profile));
    });
  });
}
