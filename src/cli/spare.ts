// Run by bin/infera.js before the CLI itself loads: for `infera serve` (the default command), the
// spare engine process (engines/runner/host.ts) is forked here instead of from serve's action, ~45 ms
// of the server's CPU earlier (the CLI chunk, commander and every command's registration came first).
// On a first start the engine process's chain (fork, then its own start and the model's load) is the
// longer of the two before the first answer (docs/BENCHMARKS.md, "Start-up: the cold first answer
// waits on the engine process"), so it starts as early as the server can tell it will serve.
// First, as in main.ts: see tick-map.ts (host.ts is imported after it, hence dynamically).
import '../tick-map.ts';

/**
 * `infera` or `infera serve …`, not asking for help. Anything else (another command, or serve reached
 * through options first, `infera --port 1`) leaves the fork to serve's action as before: it forks the
 * spare when this did not (startSpareEngineProcess starts one at most).
 */
export function servesFromArgv(args: readonly string[]): boolean {
  if (args.some((arg) => arg === '--help' || arg === '-h' || arg === '--')) return false;
  return args.length === 0 || args[0] === 'serve';
}

if (servesFromArgv(process.argv.slice(2))) (await import('../engines/runner/host.ts')).startSpareEngineProcess();
