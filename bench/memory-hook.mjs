// Preloaded by bench/engine-startup.ts --breakdown (NODE_OPTIONS=--import): on SIGUSR2 a Node process
// (the server, its engine process) writes what V8 says about its own memory to
// <INFERA_BENCH_MEMORY_DIR>/<role>-<pid>.json, so the bench can split the process's anonymous memory
// into V8's heap and the rest (malloc, thread stacks) next to /proc/PID/smaps.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { getHeapSpaceStatistics, getHeapStatistics } from 'node:v8';

const dir = process.env.INFERA_BENCH_MEMORY_DIR;
if (dir) {
  process.on('SIGUSR2', () => {
    const report = {
      role: process.send ? 'engine' : 'server',
      execArgv: process.execArgv,
      // CommonJS modules loaded so far (fastify and most packages are CommonJS).
      cjs: Object.keys(createRequire(import.meta.url).cache),
      memoryUsage: process.memoryUsage(),
      heap: getHeapStatistics(),
      spaces: getHeapSpaceStatistics().map(({ space_name, space_size, space_used_size, physical_space_size }) => ({
        space_name,
        space_size,
        space_used_size,
        physical_space_size,
      })),
    };
    writeFileSync(join(dir, `${report.role}-${process.pid}.json`), JSON.stringify(report));
  });
}
