// Preloaded by bench/onnx-path.ts into `infera serve` (NODE_OPTIONS=--import, inherited by the engine
// process): marks where one /v1/embeddings request is, in CLOCK_MONOTONIC ns (process.hrtime, the same
// clock in every process of the box, so the server's, the engine's and the bench client's marks line up).
// No code of the server is touched: Node's diagnostics channels, ChildProcess/process IPC and
// onnxruntime-node's InferenceSession.run are wrapped. Marks are buffered and appended to
// $INFERA_BENCH_PATH_FILE in blocks (a write per mark would itself be on the path).
//   server: in (HTTP request parsed) · call (IPC 'call' handed to the engine channel) · back (the engine's
//           answer message received) · out (the answer's last write handed to the socket)
//   engine: recv (the 'call' message received) · run (InferenceSession.run called) · ran (its promise
//           resolved) · reply (the answer message handed to the channel) · replied (send returned)
import { appendFileSync } from 'node:fs';
import childProcess from 'node:child_process';
import diagnostics from 'node:diagnostics_channel';
import { createRequire, syncBuiltinESMExports } from 'node:module';

const role = process.send ? 'engine' : 'server';
const file = process.env.INFERA_BENCH_PATH_FILE;
let lines = [];
const flush = () => {
  if (file && lines.length) appendFileSync(file, lines.join(''));
  lines = [];
};
const mark = (what) => {
  lines.push(`${role} ${process.pid} ${process.hrtime.bigint()} ${what}\n`);
  if (lines.length >= 400) flush();
};
process.on('exit', flush);

if (role === 'server') {
  diagnostics.subscribe('http.server.request.start', () => mark('in'));
  diagnostics.subscribe('http.server.response.finish', () => mark('out'));
  const { fork } = childProcess;
  childProcess.fork = function (...args) {
    const child = fork.apply(this, args);
    // The IPC channel puts `send` on the instance, not the prototype.
    const send = child.send;
    child.send = function (message, ...rest) {
      if (message?.t === 'call') mark('call');
      return send.call(this, message, ...rest);
    };
    child.prependListener('message', (message) => {
      if (message?.t === 'out') mark('back');
    });
    return child;
  };
  // `import { fork } from 'node:child_process'` reads the named export, which follows the patch only after this.
  syncBuiltinESMExports();
} else {
  // Wrapped rather than listened to: a 'message' listener added here, before the engine's own, would start
  // the channel reading early and the first messages would reach nobody.
  const { emit } = process;
  process.emit = function (event, message, ...rest) {
    if (event === 'message' && message?.t === 'call') mark('recv');
    return emit.call(this, event, message, ...rest);
  };
  const send = process.send.bind(process);
  process.send = (message, ...rest) => {
    const out = message?.t === 'out';
    if (out) mark('reply');
    const result = send(message, ...rest);
    if (out) mark('replied');
    return result;
  };
  // The engine's own copy of onnxruntime-node (CommonJS: `import` and `require` share the instance), found
  // from the engine's entry file so that each checkout's build wraps its own.
  try {
    const ort = createRequire(process.argv[1])('onnxruntime-node');
    const { run } = ort.InferenceSession.prototype;
    ort.InferenceSession.prototype.run = function (...args) {
      mark('run');
      return run.apply(this, args).finally(() => mark('ran'));
    };
  } catch {}
}
