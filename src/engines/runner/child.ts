// The engine process: loads one model through its engine's load() (../loaders.ts: the same one an in-process
// model uses) and serves its contract to the server over IPC. A native abort, an out-of-memory kill or
// a hang here costs this model a restart (host.ts), never the server.
// First: before anything else runs (or a GC can), see tick-map.ts.
import '../../tick-map.ts';
import { Writable } from 'node:stream';
import { EngineResources } from '../resources.ts';
import { collectGarbage, releaseCodePages, releaseIdlePages, releaseLoadLeftovers, releaseWhenQuiet } from './release.ts';
import { engineLoaders, enginePreloads } from '../loaders.ts';
import { createLogger } from '../../observability/logger.ts';
import type { AnyModel, LoadedModel } from '../../spec/index.ts';
import {
  decodeArguments,
  fromWireError,
  methodShape,
  toWireError,
  type CallbackMarker,
  type ChildItem,
  type ChildMessage,
  type HostMessage,
  type SignalMarker,
} from './protocol.ts';

if (!process.send) {
  console.error('infera engine process: start it through the server (it needs an IPC channel).');
  process.exit(2);
}

const send = (message: ChildMessage) => process.send!(message);

// A spare process (host.ts: forked before the server read its config) knows the kind of model it will
// get, not the model: it starts on what every such load does. A failure here is the load's to report.
const spareFor = /^--spare=(.+)$/.exec(process.argv[2] ?? '')?.[1];
if (spareFor && Object.hasOwn(enginePreloads, spareFor)) void enginePreloads[spareFor]!().catch(() => undefined);

// Everything produced in one turn of the event loop goes out as one message (see ChildMessage 'out').
let outbox: ChildItem[] = [];
let flushScheduled = false;
function post(item: ChildItem): void {
  outbox.push(item);
  if (!flushScheduled) {
    flushScheduled = true;
    setImmediate(flush);
  }
}
function flush(): void {
  flushScheduled = false;
  if (outbox.length === 0) return;
  const items = outbox;
  outbox = [];
  send({ t: 'out', items });
}

/** pino writes JSON lines here; the server re-logs each under the model's logger. */
function ipcLogStream(): Writable {
  return new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n')) {
        if (!line) continue;
        try {
          const { level, time: _time, msg, ...fields } = JSON.parse(line) as Record<string, unknown>;
          send({ t: 'log', level: String(level), fields, msg: String(msg ?? '') });
        } catch {
          send({ t: 'log', level: 'info', fields: {}, msg: line });
        }
      }
      done();
    },
  });
}

let loaded: LoadedModel | undefined;
/** Drops the code pages requests faulted back once the process is quiet (release.ts); woken by every call. */
let quiet: { wake(): void } | undefined;
let model: AnyModel | undefined;
const loadAbort = new AbortController();
let startServing!: () => void;
const serving = new Promise<void>((resolve) => (startServing = resolve));
const signals = new Map<number, AbortController>();
const iterators = new Map<number, AsyncIterator<unknown>>();

function isPlainData(value: unknown, depth = 0): boolean {
  if (value === null || ['string', 'number', 'boolean'].includes(typeof value)) return true;
  if (depth > 4 || typeof value !== 'object') return false;
  if (ArrayBuffer.isView(value)) return true;
  if (Array.isArray(value)) return value.every((item) => isPlainData(item, depth + 1));
  const proto = Object.getPrototypeOf(value);
  return (proto === Object.prototype || proto === null) && Object.values(value).every((item) => item === undefined || isPlainData(item, depth + 1));
}

function snapshot(target: AnyModel): { properties: Record<string, unknown>; methods: string[] } {
  const properties: Record<string, unknown> = {};
  const methods = new Set<string>();
  for (let proto: object | null = target; proto && proto !== Object.prototype; proto = Object.getPrototypeOf(proto))
    for (const key of Object.getOwnPropertyNames(proto)) {
      if (key === 'constructor' || key in properties || methods.has(key)) continue;
      const value = (target as unknown as Record<string, unknown>)[key];
      if (typeof value === 'function') methods.add(key);
      // Only plain data describes a model. An object with behaviour (a queue, a native handle) stays
      // here: a copy of it would be a stale picture that looks live.
      else if (isPlainData(value)) properties[key] = value;
    }
  return { properties, methods: [...methods] };
}

async function load(message: Extract<HostMessage, { t: 'load' }>): Promise<void> {
  if (message.cacheDir !== undefined) process.env.INFERA_CACHE_DIR = message.cacheDir;
  const logger = createLogger(message.logLevel, ipcLogStream());
  const loader = Object.hasOwn(engineLoaders, message.config.engine) ? engineLoaders[message.config.engine] : undefined;
  try {
    if (!loader) throw new Error(`engine ${message.config.engine} is not one of Infera's built-in engines; set isolation: none to run it in the server process`);
    const resources = new EngineResources(logger);
    const result = await (await loader())({
      config: message.config,
      onProgress: (fraction) => send({ t: 'progress', fraction }),
      signal: loadAbort.signal,
      logger,
      resources,
      // This process holds nothing but the model, so an engine may block its main thread (the llama.cpp
      // FFI runner decodes there instead of hopping to a worker each step).
      ownProcess: true,
      serving,
    });
    loaded = {
      model: result.model,
      dispose: async () => {
        await result.dispose();
        await resources.close();
      },
    };
    model = result.model;
    // This process holds one model, so what its load left behind is nobody's (release.ts). Its JavaScript
    // garbage waits for the first quiet moment (collectGarbage says why; a process goes quiet 0.5 s after
    // its load when no request comes, so the idle heap is the same); the model file's pages and malloc's
    // free memory go now, before any request can fault back what it reads.
    const released = releaseLoadLeftovers({ collect: false });
    logger.debug(released, 'engine process: released load leftovers');
    // Start-up's code pages a second after the load, busy or not (not before `loaded`: the first answer
    // would pay the faults back); then what each burst of work faulted back, whenever the process goes
    // quiet. The quiet ticks sleep 2 s after a release (calls wake them): the chat engine's deferred
    // start-up work (FfiChatModel.whenIdle, 1 s after serving starts) still falls in that window.
    setTimeout(() => logger.debug(releaseCodePages(), 'engine process: dropped start-up code pages'), 1000).unref();
    let loadGarbage = true;
    quiet = releaseWhenQuiet(
      () => {
        if (loadGarbage) {
          loadGarbage = false;
          collectGarbage();
        }
        logger.debug(releaseIdlePages(), 'engine process: quiet, dropped code pages');
      },
      { sleepAfterQuietTicks: 8 },
    );
    send({ t: 'loaded', ...snapshot(model) });
  } catch (error) {
    send({ t: 'load-failed', error: toWireError(error) });
  }
}

function call(message: Extract<HostMessage, { t: 'call' }>): void {
  const { id, method } = message;
  quiet?.wake();
  const fail = (error: unknown, index?: number) => post({ t: 'error', id, error: toWireError(error), index });
  const target = model as unknown as Record<string, (...args: unknown[]) => unknown> | undefined;
  if (!target || typeof target[method] !== 'function') {
    fail(new Error(`engine process: no method ${method}`));
    return;
  }
  const used: number[] = [];
  const args = decodeArguments(
    message.args,
    (marker: SignalMarker) => {
      let controller = signals.get(marker.__signal);
      if (!controller) {
        controller = new AbortController();
        signals.set(marker.__signal, controller);
      }
      used.push(marker.__signal);
      return controller.signal;
    },
    (marker: CallbackMarker) =>
      (...callbackArgs: unknown[]) =>
        post({ t: 'callback', callback: marker.__callback, args: callbackArgs }),
  ) as unknown[];
  const forget = () => {
    for (const signal of used) signals.delete(signal);
  };
  let result: unknown;
  try {
    result = target[method]!.apply(model, args);
  } catch (error) {
    forget();
    fail(error);
    return;
  }
  switch (methodShape(method)) {
    case 'promise':
      Promise.resolve(result).then(
        (value) => post({ t: 'result', id, value }),
        (error: unknown) => fail(error),
      ).finally(forget);
      return;
    case 'batch': {
      const promises = result as Promise<unknown>[];
      Promise.allSettled(
        promises.map((promise, index) =>
          promise.then(
            (value) => post({ t: 'result', id, value, index }),
            (error: unknown) => fail(error, index),
          ),
        ),
      ).finally(forget);
      return;
    }
    case 'stream': {
      const iterator = (result as AsyncIterable<unknown>)[Symbol.asyncIterator]();
      iterators.set(id, iterator);
      void (async () => {
        try {
          for (;;) {
            const next = await iterator.next();
            if (next.done) break;
            post({ t: 'part', id, part: next.value });
          }
          post({ t: 'end', id });
        } catch (error) {
          fail(error);
        } finally {
          iterators.delete(id);
          forget();
        }
      })();
      return;
    }
  }
}

let disposing = false;
async function dispose(): Promise<void> {
  if (disposing) return;
  disposing = true;
  loadAbort.abort(new Error('server closing'));
  await loaded?.dispose().catch(() => undefined);
  flush();
  process.exit(0);
}

process.on('message', (message: HostMessage) => {
  switch (message.t) {
    case 'load':
      void load(message);
      return;
    case 'call':
      call(message);
      return;
    case 'abort': {
      const controller = signals.get(message.signal);
      if (controller && !controller.signal.aborted) {
        // The same reason the server's signal carries (a route time limit stays a 504, a client who left an abort).
        controller.abort(fromWireError(message.reason));
      }
      return;
    }
    case 'return':
      void iterators.get(message.id)?.return?.();
      return;
    case 'ping':
      send({ t: 'pong', n: message.n });
      return;
    case 'serving':
      startServing();
      return;
    case 'dispose':
      void dispose();
      return;
  }
});
// Ctrl-C in a terminal (and systemd's stop) signal the whole process group: the server drains its
// requests first and then disposes this process itself, so the signal is not ours to act on.
process.on('SIGINT', () => undefined);
process.on('SIGTERM', () => undefined);
// The server went away (killed, crashed): nothing is left to answer to.
process.on('disconnect', () => process.exit(0));
