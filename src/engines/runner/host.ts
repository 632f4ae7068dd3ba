// The server's side of an engine process: starts the child (child.ts), waits for its model to load,
// and hands the registry a model object that forwards every call of the engine contract over IPC.
// Supervision: a child that dies (native abort, OOM kill, crash) or stops answering heartbeats fails
// its in-flight calls with a 503 the client may retry, and the registry is told so it can restart the
// model with backoff. The server process itself never loads the engine's native code.
import { fork, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { ModelConfig } from '../../config/model.ts';
import { InferaError } from '../../errors/index.ts';
import type { AnyModel, LoadedModel, LoadProgress } from '../../spec/index.ts';
import {
  encodeArguments,
  fromWireError,
  methodShape,
  reviveBuffers,
  toWireError,
  type ChildItem,
  type ChildMessage,
  type HostMessage,
} from './protocol.ts';

export interface EngineProcessOptions {
  config: ModelConfig;
  /** The model's logger: the child's log lines, stdout and stderr are written here. */
  logger: Logger;
  onProgress: LoadProgress;
  /** Aborted when the server shuts down during the load: the child is killed. */
  signal: AbortSignal;
  /** No heartbeat answer for this long: the child is taken for hung and killed. */
  hangTimeoutSeconds: number;
  /**
   * The child stopped without being asked to, after its model loaded. Returns how many seconds until
   * the model is back (the Retry-After of the requests that were running on it).
   */
  onExit(reason: string): number;
}

export interface EngineProcessModel extends LoadedModel {
  readonly pid: number;
}

type Pending =
  | { kind: 'promise'; resolve(value: unknown): void; reject(error: Error): void; cleanup(): void }
  | { kind: 'batch'; settlers: { resolve(value: unknown): void; reject(error: Error): void }[]; left: number; cleanup(): void }
  | { kind: 'stream'; push(item: ChildItem | { t: 'crash'; error: Error }): void; cleanup(): void };

/** How long a loading engine process may go without answering a heartbeat. */
const LOADING_HANG_MS = 120_000;

/**
 * pino's level numbers (pino.levels.labels), by name here: `infera serve` imports this module before it
 * forks an eager model's engine process, and pino itself (~20-50 ms of CPU to import) is not needed
 * until the server is built, by which time the engine process is loading (host.test.ts compares them).
 */
export const LEVELS: Record<string, string> = { 10: 'trace', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error', 60: 'fatal' };

/** Why a process ended, in words an operator can act on. */
function exitReason(code: number | null, signal: NodeJS.Signals | null): string {
  if (signal === 'SIGABRT') return 'killed by SIGABRT: a native abort inside the engine (a model file or request it could not handle)';
  if (signal === 'SIGKILL') return 'killed by SIGKILL: out of memory, or killed by an operator';
  if (signal === 'SIGSEGV') return 'killed by SIGSEGV: a crash inside the engine';
  if (signal) return `killed by ${signal}`;
  return `exited with code ${code}`;
}

/** What the supervisor hears from a child: events before it listens are kept and replayed in order. */
interface ChildEvents {
  line(stream: 'stdout' | 'stderr', line: string): void;
  message(message: ChildMessage): void;
  exit(code: number | null, signal: NodeJS.Signals | null): void;
  error(error: Error): void;
}

interface SpawnedChild {
  child: ChildProcess;
  listen(events: ChildEvents): void;
}

/**
 * V8 settings of an engine process (bench/engine-startup.ts --breakdown; docs/BENCHMARKS.md "Start-up
 * and memory on the AMD EPYC"):
 * - `gc` exposed, so that child.ts can collect once after the load (at its first quiet moment, then trim
 *   malloc: release.ts): a load's garbage otherwise keeps old-space pages resident until V8's memory
 *   reducer runs, 20-40 s into idleness.
 * - for a llama.cpp chat model, a 1 MiB semi-space: V8 otherwise grows the young generation to 16 MiB
 *   per semi-space during a load that resolves a chat template (node-llama-cpp's Jinja renderer
 *   allocates hundreds of MiB of short-lived values) and keeps it resident. Measured on chat-512x8:
 *   idle RSS -23 MiB after a first start (no cached chat wrapper; -29 with the collection), -2 MiB on a
 *   restart, and no more time in GC while decoding (its objects die young: a scavenge of a 1 MiB space
 *   with almost nothing live costs microseconds). Also for llama.cpp embedding and reranker models (the FFI
 *   encoder: a request's JavaScript is its tokens, one vector and the IPC message): the young generation
 *   had grown to 5 MiB by the first answer of bert-384x12-embed (engine-startup --breakdown).
 *   Not measured for ONNX and images, whose requests allocate more in JavaScript: they keep V8's default.
 */
export function engineV8Flags(config: Pick<ModelConfig, 'engine' | 'type'>): string[] {
  return config.engine === 'llama-cpp' ? ['--max-semi-space-size=1', '--expose-gc'] : ['--expose-gc'];
}

function spawnChild(config: Pick<ModelConfig, 'engine' | 'type'>, spare = false): SpawnedChild {
  // From the sources (tests, `npm run dev`) the child runs TypeScript through tsx as the server does;
  // the compiled build (`npm start`) runs plain JavaScript and passes no loader.
  const fromSources = import.meta.url.endsWith('.ts');
  const entry = fileURLToPath(new URL(fromSources ? './child.ts' : './child.js', import.meta.url));
  const child: ChildProcess = fork(entry, spare ? [`--spare=${config.engine}/${config.type}`] : [], {
    execArgv: [...engineV8Flags(config), ...(fromSources ? ['--import', 'tsx'] : [])],
    serialization: 'advanced',
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  let listener: ChildEvents | undefined;
  const backlog: ((events: ChildEvents) => void)[] = [];
  const emit = (event: (events: ChildEvents) => void) => (listener ? event(listener) : backlog.push(event));
  // Read at once even with no listener yet: a child blocked on a full pipe would stall its load.
  createInterface({ input: child.stdout! }).on('line', (line) => line && emit((events) => events.line('stdout', line)));
  createInterface({ input: child.stderr! }).on('line', (line) => line && emit((events) => events.line('stderr', line)));
  child.on('message', (message: ChildMessage) => emit((events) => events.message(message)));
  child.once('exit', (code, signal) => emit((events) => events.exit(code, signal)));
  child.once('error', (error) => emit((events) => events.error(error)));
  return {
    child,
    listen(events) {
      listener = events;
      for (const event of backlog.splice(0)) event(events);
    },
  };
}

/** Engine processes started before the server could ask for them (startEngineProcessEarly), by model id. */
const early = new Map<string, { spawned: SpawnedChild; key: string; timer: NodeJS.Timeout; spare: boolean }>();
/** An early process nobody adopted within this time is stopped (its model was not loaded after all). */
const EARLY_ADOPT_MS = 120_000;

const earlyKey = (config: ModelConfig, logLevel: string) => JSON.stringify({ config, logLevel });

/**
 * The kind of model a spare process is started for: its V8 flags are fixed at fork (engineV8Flags) and
 * it starts on that kind's load (loaders.ts, enginePreloads), so it serves only a model of that engine
 * and type. A llama.cpp chat model: the default engine's default type, and issue 17's start-up target.
 */
const SPARE_KIND = { engine: 'llama-cpp', type: 'chat' } as const;
/** The spare engine process (startSpareEngineProcess), until an early start takes it or it is stopped. */
let spare: { spawned: SpawnedChild; timer: NodeJS.Timeout } | undefined;

/**
 * Forks an engine process with no model yet, before the config is read: `infera serve` calls this first,
 * and startEngineProcessEarly gives the spare the first eager model it fits. The process's own start
 * (Node's bootstrap, then child.ts's imports: ~150-250 ms of CPU) then runs on the second core while
 * the server parses its config (yaml, zod, the engine table: ~150-200 ms), instead of after it; the
 * model's load begins as soon as the load message comes. When no eager model fits (none configured, or
 * another engine or type), stopSpareEngineProcess ends it: an idle child killed, its CPU spent on a core
 * the server's single thread was not using.
 */
export function startSpareEngineProcess(): void {
  if (spare) return;
  const spawned = spawnChild(SPARE_KIND, true);
  // A server that fails before stopSpareEngineProcess exits (the child then exits on 'disconnect'); this
  // covers one that neither fails nor stops it.
  const timer = setTimeout(stopSpareEngineProcess, EARLY_ADOPT_MS);
  timer.unref();
  spare = { spawned, timer };
}

/** Ends the spare process if no early start took it. */
export function stopSpareEngineProcess(): void {
  const left = spare;
  spare = undefined;
  if (!left) return;
  clearTimeout(left.timer);
  left.spawned.child.kill('SIGKILL');
}

function takeSpare(config: ModelConfig): SpawnedChild | undefined {
  if (!spare || config.engine !== SPARE_KIND.engine || config.type !== SPARE_KIND.type || spare.spawned.child.exitCode !== null || spare.spawned.child.signalCode !== null) return undefined;
  const { spawned, timer } = spare;
  spare = undefined;
  clearTimeout(timer);
  return spawned;
}

/**
 * Starts an eager model's engine process and its load now, before the server has built itself:
 * `infera serve` calls this as soon as the config is read, so the model loads on one core while the
 * server imports and sets up on the other, instead of after it. The spare process, when there is one
 * and the model fits it, is that process. loadInEngineProcess adopts the process (with everything it
 * said meanwhile) when the registry loads the same entry at the same log level; anything else stops it.
 */
export function startEngineProcessEarly(config: ModelConfig, logLevel: string): void {
  if (early.has(config.id)) return;
  const taken = takeSpare(config);
  const spawned = taken ?? spawnChild(config);
  const timer = setTimeout(() => takeEarly(config.id)?.spawned.child.kill('SIGKILL'), EARLY_ADOPT_MS);
  timer.unref();
  early.set(config.id, { spawned, key: earlyKey(config, logLevel), timer, spare: taken !== undefined });
  spawned.child.send({ t: 'load', config, logLevel, cacheDir: process.env.INFERA_CACHE_DIR } satisfies HostMessage);
}

/** Stops the early process of model `id`, if one is waiting to be adopted (its model will not load: a failed file check). */
export function stopEarlyEngineProcess(id: string): void {
  takeEarly(id)?.spawned.child.kill('SIGKILL');
}

function takeEarly(id: string): { spawned: SpawnedChild; spare: boolean } | undefined {
  const found = early.get(id);
  if (!found) return undefined;
  early.delete(id);
  clearTimeout(found.timer);
  return found;
}

export function loadInEngineProcess(options: EngineProcessOptions): Promise<EngineProcessModel> {
  const { config, logger } = options;
  const key = earlyKey(config, logger.level);
  const found = early.get(config.id)?.key === key ? takeEarly(config.id) : undefined;
  // A different entry or log level than the early start assumed: that process is of no use.
  if (!found) takeEarly(config.id)?.spawned.child.kill('SIGKILL');
  const spawned = found?.spawned ?? spawnChild(config);
  const { child } = spawned;

  const pending = new Map<number, Pending>();
  const callbacks = new Map<number, (...args: unknown[]) => unknown>();
  let nextId = 1;
  let state: 'loading' | 'ready' | 'stopping' | 'gone' = 'loading';
  let lastPong = Date.now();
  let hangKill: string | undefined;
  let pings = 0;
  /** The 503 calls get once the process is gone. */
  let gone: Error | undefined;
  let exited: Promise<void>;

  const send = (message: HostMessage) => {
    if (state !== 'gone' && child.connected) child.send(message);
  };

  const hangMs = options.hangTimeoutSeconds * 1000;
  const tickMs = Math.max(250, Math.min(5_000, hangMs / 4));
  let lastTick = Date.now();
  const heartbeat = setInterval(
    () => {
      const now = Date.now();
      // Timers run before the poll phase reads IPC, so after a stall of this (host) event loop the
      // child's pong may be queued unread: a stalled host judges nothing and grants a fresh allowance.
      if (now - lastTick > tickMs * 2) lastPong = now;
      lastTick = now;
      // Starting Node (and, from the sources, compiling TypeScript) on a busy machine takes seconds
      // before the first answer: a load gets a longer allowance than a running model.
      const allowed = state === 'loading' ? Math.max(hangMs, LOADING_HANG_MS) : hangMs;
      if (now - lastPong > allowed) {
        hangKill = `stopped answering for ${Math.round(allowed / 1000)} s (hung) and was killed`;
        child.kill('SIGKILL');
        return;
      }
      send({ t: 'ping', n: ++pings });
    },
    tickMs,
  );
  heartbeat.unref();

  const deliver = (item: ChildItem) => {
    if (item.t === 'callback') {
      callbacks.get(item.callback)?.(...item.args);
      return;
    }
    const call = pending.get(item.id);
    if (!call) return; // A stream whose consumer left; its last parts are of no use.
    if (call.kind === 'stream') return call.push(item);
    if (call.kind === 'promise') {
      pending.delete(item.id);
      call.cleanup();
      if (item.t === 'result') call.resolve(reviveBuffers(item.value));
      else if (item.t === 'error') call.reject(fromWireError(item.error));
      return;
    }
    if (item.t !== 'result' && item.t !== 'error') return;
    const settler = call.settlers[item.index ?? 0];
    if (!settler) return;
    if (item.t === 'result') settler.resolve(reviveBuffers(item.value));
    else settler.reject(fromWireError(item.error));
    if (--call.left === 0) {
      pending.delete(item.id);
      call.cleanup();
    }
  };

  /** Sends a call; AbortSignals and callbacks in its arguments become markers (protocol.ts). */
  const start = (method: string, args: unknown[], entry: (cleanup: () => void) => Pending): number => {
    const id = nextId++;
    const undo: (() => void)[] = [];
    const encoded = encodeArguments(
      args,
      (signal) => {
        const marker = { __signal: nextId++ };
        const onAbort = () => send({ t: 'abort', signal: marker.__signal, reason: toWireError(signal.reason) });
        if (signal.aborted) queueMicrotask(onAbort);
        else {
          signal.addEventListener('abort', onAbort, { once: true });
          undo.push(() => signal.removeEventListener('abort', onAbort));
        }
        return marker;
      },
      (callback) => {
        const marker = { __callback: nextId++ };
        callbacks.set(marker.__callback, callback);
        undo.push(() => callbacks.delete(marker.__callback));
        return marker;
      },
    ) as unknown[];
    pending.set(id, entry(() => {
      for (const step of undo) step();
    }));
    if (state !== 'ready') {
      const call = pending.get(id)!;
      pending.delete(id);
      call.cleanup();
      throw gone ?? new Error('engine process is not ready');
    }
    send({ t: 'call', id, method, args: encoded });
    return id;
  };

  const promiseMethod = (method: string) => (...args: unknown[]) =>
    new Promise((resolve, reject) => {
      try {
        start(method, args, (cleanup) => ({ kind: 'promise', resolve, reject, cleanup }));
      } catch (error) {
        reject(error);
      }
    });

  const batchMethod = (method: string) => (...args: unknown[]) => {
    const calls = args[0] as unknown[];
    const settlers: { resolve(value: unknown): void; reject(error: Error): void }[] = [];
    const promises = calls.map(() => new Promise((resolve, reject) => settlers.push({ resolve, reject })));
    try {
      start(method, args, (cleanup) => ({ kind: 'batch', settlers, left: calls.length, cleanup }));
    } catch (error) {
      for (const settler of settlers) settler.reject(error as Error);
    }
    return promises;
  };

  // Iterating starts the call (as the in-process engines do); return() before the first next() sends nothing.
  const streamMethod = (method: string) => (...args: unknown[]): AsyncIterable<unknown> => ({
    [Symbol.asyncIterator]() {
      const queue: unknown[] = [];
      let id: number | undefined;
      let finished = false;
      let failure: Error | undefined;
      let waiter: { resolve(result: IteratorResult<unknown>): void; reject(error: Error): void } | undefined;
      const wake = () => {
        if (!waiter) return;
        const current = waiter;
        if (queue.length > 0) {
          waiter = undefined;
          current.resolve({ value: queue.shift(), done: false });
        } else if (failure) {
          waiter = undefined;
          const error = failure;
          failure = undefined;
          finished = true;
          current.reject(error);
        } else if (finished) {
          waiter = undefined;
          current.resolve({ value: undefined, done: true });
        }
      };
      const stop = () => {
        if (id !== undefined) {
          const call = pending.get(id);
          pending.delete(id);
          call?.cleanup();
        }
      };
      const iterator: AsyncIterator<unknown> = {
        next() {
          if (id === undefined && !finished) {
            try {
              id = start(method, args, (cleanup) => ({
                kind: 'stream',
                cleanup,
                push(item) {
                  if (item.t === 'part') queue.push(item.part);
                  else if (item.t === 'end') {
                    finished = true;
                    stop();
                  } else if (item.t === 'error' || item.t === 'crash') {
                    failure = item.t === 'error' ? fromWireError(item.error) : item.error;
                    stop();
                  }
                  wake();
                },
              }));
            } catch (error) {
              finished = true;
              return Promise.reject(error);
            }
          }
          if (queue.length > 0) return Promise.resolve({ value: queue.shift(), done: false });
          return new Promise((resolve, reject) => {
            waiter = { resolve, reject };
            wake();
          });
        },
        return() {
          if (id !== undefined && pending.has(id)) {
            send({ t: 'return', id });
            stop();
          }
          finished = true;
          queue.length = 0;
          failure = undefined;
          wake();
          return Promise.resolve({ value: undefined, done: true });
        },
      };
      return iterator;
    },
  });

  return new Promise<EngineProcessModel>((resolveLoad, rejectLoad) => {
    const onShutdown = () => {
      state = 'stopping';
      child.kill('SIGKILL');
      rejectLoad(options.signal.reason);
    };
    if (options.signal.aborted) return onShutdown();
    options.signal.addEventListener('abort', onShutdown, { once: true });

    let resolveExit!: () => void;
    exited = new Promise((resolve) => (resolveExit = resolve));
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => {
      clearInterval(heartbeat);
      options.signal.removeEventListener('abort', onShutdown);
      const before = state;
      state = 'gone';
      const reason = hangKill ?? exitReason(code, signal);
      if (before === 'loading') {
        logger.error({ pid: child.pid, code, signal }, `engine process ${reason} while loading the model`);
        rejectLoad(new Error(`its engine process ${reason} while loading it`));
      } else if (before === 'ready') {
        const retryAfter = options.onExit(reason);
        logger.error({ pid: child.pid, code, signal, inFlight: pending.size }, `engine process ${reason}; restarting the model in ${retryAfter} s`);
        gone = new InferaError({
          status: 503,
          code: 'engine_restarting',
          message: `The engine serving model '${config.id}' stopped (${reason.split(':')[0]}) and is restarting. Retry after ${retryAfter}s.`,
          retryAfter,
        });
        for (const call of pending.values()) {
          call.cleanup();
          if (call.kind === 'promise') call.reject(gone);
          else if (call.kind === 'batch') for (const settler of call.settlers) settler.reject(gone);
          else call.push({ t: 'crash', error: gone });
        }
        pending.clear();
      }
      resolveExit();
    };
    // Said before the adopted process's past events are replayed (its load may be done already).
    if (found)
      logger.debug({ pid: child.pid }, `engine process started early by infera serve${found.spare ? ' (a spare, before the config was read)' : ''}; adopted`);
    spawned.listen({
      // Native code (llama.cpp before its log hook is set, ONNX Runtime) may print straight to the
      // descriptors: those lines are the engine's too, so they go to the model's log, not the terminal.
      line: (stream, line) => (stream === 'stdout' ? logger.info({ stream }, line) : logger.warn({ stream }, line)),
      exit: onExit,
      error: (error) => {
        if (state === 'loading') rejectLoad(new Error(`could not start its engine process: ${error.message}`));
      },
      message: (message) => {
        switch (message.t) {
          case 'out':
            for (const item of message.items) deliver(item);
            return;
          case 'pong':
            lastPong = Date.now();
            return;
          case 'progress':
            options.onProgress(message.fraction);
            return;
          case 'log': {
            const level = LEVELS[message.level] ?? 'info';
            (logger as unknown as Record<string, (fields: object, msg: string) => void>)[level]?.(message.fields, message.msg);
            return;
          }
          case 'load-failed':
            state = 'stopping';
            options.signal.removeEventListener('abort', onShutdown);
            rejectLoad(fromWireError(message.error));
            send({ t: 'dispose' });
            return;
          case 'loaded': {
            state = 'ready';
            options.signal.removeEventListener('abort', onShutdown);
            const model: Record<string, unknown> = { ...message.properties };
            for (const method of message.methods) {
              const shape = methodShape(method);
              model[method] = shape === 'stream' ? streamMethod(method) : shape === 'batch' ? batchMethod(method) : promiseMethod(method);
            }
            resolveLoad({
              pid: child.pid!,
              model: model as unknown as AnyModel,
              dispose: async () => {
                if (state === 'gone') return;
                state = 'stopping';
                child.send({ t: 'dispose' } satisfies HostMessage);
                const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
                await exited;
                clearTimeout(timer);
              },
            });
            return;
          }
        }
      },
    });
    if (!found) send({ t: 'load', config, logLevel: logger.level, cacheDir: process.env.INFERA_CACHE_DIR });
    // The registry is loading the model now: requests follow its load (an adopted one's may be done).
    send({ t: 'serving' });
  });
}
