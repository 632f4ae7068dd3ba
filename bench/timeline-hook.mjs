// Preloaded by bench/engine-startup.ts --timeline (NODE_OPTIONS=--import, inherited by the engine
// process): appends to $INFERA_BENCH_TIMELINE_FILE, with the process's CPU time so far, when each start-up step happens, in ms since the process started
// (performance.now() counts from it) and as wall-clock ms, so the server's and the engine process's
// steps line up: the hook itself loaded (Node's own bootstrap done), the engine process forked, the
// server listening, the first request in, the engine's 'loaded' message out, the first answer out.
import { appendFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import childProcess from 'node:child_process';
import http from 'node:http';
import { syncBuiltinESMExports } from 'node:module';

const role = process.send ? 'engine' : 'server';
// Appended to a file: the engine process's stderr reaches the bench only as the server's log lines.
const file = process.env.INFERA_BENCH_TIMELINE_FILE;
const cpuMs = () => {
  const { user, system } = process.cpuUsage();
  return ((user + system) / 1000).toFixed(0);
};
const mark = (what) => file && appendFileSync(file, `${role} ${Date.now()} ${performance.now().toFixed(1)} ${cpuMs()} ${what}\n`);
mark('hook loaded (Node bootstrap done)');

const { fork } = childProcess;
childProcess.fork = function (...args) {
  mark('fork engine process');
  return fork.apply(this, args);
};
// `import { fork } from 'node:child_process'` reads the named export, which follows the patch only after this.
syncBuiltinESMExports();
const { listen } = http.Server.prototype;
http.Server.prototype.listen = function (...args) {
  this.once('listening', () => mark('listening'));
  let first = true;
  this.prependListener('request', (_request, response) => {
    if (!first) return;
    first = false;
    mark('first request in');
    response.once('finish', () => mark('first answer out'));
  });
  return listen.apply(this, args);
};
if (process.send) {
  const send = process.send.bind(process);
  let seen = false;
  process.send = (message, ...rest) => {
    if (message?.t === 'loaded') mark('model loaded');
    if (message?.t === 'out' && !seen && message.items?.some((item) => item.t === 'part' || item.t === 'result')) {
      seen = true;
      mark('first output sent');
    }
    return send(message, ...rest);
  };
  // Not a 'message' listener: one added before the engine's own would take its first message.
  const { emit } = process;
  let firstIn = true;
  process.emit = function (name, ...args) {
    if (name === 'message' && firstIn) {
      firstIn = false;
      mark(`first message in (${args[0]?.t})`);
    }
    return emit.call(this, name, ...args);
  };
}
