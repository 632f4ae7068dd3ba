// The one place that creates onnxruntime-node sessions, plus the tensor conversions that let one
// pipeline drive fp32 and fp16 exports alike.
//
// onnxruntime-node runs a session on the thread that calls run(): a UNet step or an encoder batch would
// freeze the server's event loop (every stream, health check and upload) for its whole duration. So
// sessions live in a worker thread (OnnxWorker) and the main thread only ships tensors back and forth —
// except in an engine process of the model's own (InThreadHost), whose event loop has nothing else to
// keep alive: there the hop to a worker and back is pure cost on every forward pass.
import { Worker } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';

export type ExecutionProvider = 'cpu' | 'cuda';

export interface SessionLogger {
  warn(message: string): void;
}

export interface SessionSettings {
  /** Pinned intra-op threads: more threads change float summation order and break seed determinism. */
  threads: number;
  executionProviders: ExecutionProvider[];
  /**
   * Pool threads spin between the parallel sections of a pass instead of sleeping, and stop the moment
   * the pass returns (ONNX Runtime's force_spinning_stop): see `spin` in the onnx options block.
   */
  spin?: boolean;
}

export const sessionOptions = (settings: SessionSettings, providers: ExecutionProvider[]): ort.InferenceSession.SessionOptions => ({
  executionProviders: providers,
  intraOpNumThreads: settings.threads,
  interOpNumThreads: 1,
  executionMode: 'sequential',
  graphOptimizationLevel: 'all',
  logSeverityLevel: 3,
  // By default pool threads sleep between parallel sections instead of spinning. A spinning thread holds a
  // core that the server's HTTP thread and the engine process's own thread need next, and on a shared box
  // it is preempted mid-spin. Measured behind `infera serve` (bench-embed, 2 threads, load 10–12, two runs
  // each, spinning as ONNX Runtime does it by default: on for ~30 ms after every pass): the engine
  // process's CPU per embedding 47–60 ms → 21–23 at 1 client, 24–28 → 12–13 at 32 clients.
  // `spin` keeps the spinning inside a pass only: force_spinning_stop puts the threads to sleep when the
  // pass returns, so an idle model burns nothing between requests.
  extra: { session: settings.spin ? { intra_op: { allow_spinning: '1' }, force_spinning_stop: '1' } : { intra_op: { allow_spinning: '0' } } },
});

export type TensorMetadata = { name: string; type: string; shape: readonly (number | string)[] };

/** A tensor as it crosses the thread boundary (structured-clonable). */
export interface WireTensor {
  type: string;
  data: Float32Array | BigInt64Array | Int32Array | Uint16Array | Uint8Array;
  dims: number[];
}

export type WorkerRequest =
  | { kind: 'create'; id: number; session: number; path: string; options: ort.InferenceSession.SessionOptions }
  | { kind: 'run'; id: number; session: number; feeds: Record<string, WireTensor>; fetches?: string[] }
  | { kind: 'release'; id: number; session: number };

type WorkerSuccess = { id: number; ok: true; inputs?: TensorMetadata[]; outputs?: TensorMetadata[]; tensors?: Record<string, WireTensor> };
export type WorkerReply = WorkerSuccess | { id: number; ok: false; error: string };

/** The surface of ort.InferenceSession that Infera's engines use, served from a worker thread. */
export interface OnnxSession {
  readonly inputMetadata: readonly TensorMetadata[];
  readonly outputMetadata: readonly TensorMetadata[];
  run(feeds: Record<string, ort.Tensor>, fetches?: string[]): Promise<Record<string, ort.Tensor>>;
  release(): Promise<void>;
}

/** Where sessions run: a worker thread (OnnxWorker) or the calling thread (InThreadHost). */
export interface SessionHost {
  createSession(path: string, options: ort.InferenceSession.SessionOptions): Promise<OnnxSession>;
  terminate(): Promise<void>;
}

/**
 * Sessions on the calling thread, for an engine process that holds nothing but this model (the engine
 * contract's `ownProcess`). Each run blocks this thread for the pass, which is all the thread is for; the
 * server's event loop lives in another process. Saves two thread hand-offs and a message each way per
 * pass: on a busy 2-core box every wake-up of another thread waits for a core.
 */
export class InThreadHost implements SessionHost {
  async createSession(path: string, options: ort.InferenceSession.SessionOptions): Promise<OnnxSession> {
    const session = await ort.InferenceSession.create(path, options);
    const meta = (values: readonly ort.InferenceSession.ValueMetadata[]): TensorMetadata[] =>
      values.map((v) => (v.isTensor ? { name: v.name, type: v.type as string, shape: [...v.shape] } : { name: v.name, type: 'unknown', shape: [] }));
    return {
      inputMetadata: meta(session.inputMetadata),
      outputMetadata: meta(session.outputMetadata),
      run: (feeds, fetches) => (fetches ? session.run(feeds, fetches) : session.run(feeds)),
      release: () => session.release(),
    };
  }

  async terminate(): Promise<void> {}
}

/**
 * One worker thread hosting any number of sessions; their runs execute one after another, in order.
 * A pipeline whose sessions run in sequence anyway (text encoder → UNet → VAE) shares one worker.
 */
export class OnnxWorker implements SessionHost {
  private readonly worker: Worker;
  private readonly pending = new Map<number, { resolve(reply: WorkerSuccess): void; reject(error: Error): void }>();
  private nextId = 1;
  private nextSession = 1;
  private failure: Error | undefined;

  constructor() {
    // Compiled (dist/, what `npm start` runs): the worker is plain JS. From the sources (tests and
    // benchmarks under tsx): workers do not inherit the tsx loader, so a small boot file registers it.
    this.worker = import.meta.url.endsWith('.ts')
      ? new Worker(new URL('./worker-boot.mjs', import.meta.url), { workerData: { entry: new URL('./session-worker.ts', import.meta.url).href } })
      : new Worker(new URL('./session-worker.js', import.meta.url));
    // Held (ref'd) only while a request is outstanding: an idle worker never keeps the process alive.
    this.worker.unref();
    this.worker.on('message', (reply: WorkerReply) => {
      const waiter = this.pending.get(reply.id);
      if (!waiter) return;
      this.settle(reply.id);
      if (reply.ok) waiter.resolve(reply);
      else waiter.reject(new Error(reply.error));
    });
    const fail = (error: Error) => {
      this.failure ??= error;
      for (const [id, waiter] of this.pending) {
        this.settle(id);
        waiter.reject(this.failure);
      }
    };
    this.worker.on('error', (error) => fail(error instanceof Error ? error : new Error(String(error))));
    this.worker.on('exit', (code) => fail(new Error(`onnx worker thread exited (code ${code})`)));
  }

  private settle(id: number): void {
    this.pending.delete(id);
    if (this.pending.size === 0) this.worker.unref();
  }

  /** Resolves with the worker's success reply; a failure reply rejects with its error. */
  private request(message: WorkerRequest): Promise<WorkerSuccess> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      if (this.pending.size === 0) this.worker.ref();
      this.pending.set(message.id, { resolve, reject });
      this.worker.postMessage(message);
    });
  }

  async createSession(path: string, options: ort.InferenceSession.SessionOptions): Promise<OnnxSession> {
    const session = this.nextSession++;
    const reply = await this.request({ kind: 'create', id: this.nextId++, session, path, options });
    const worker = this;
    return {
      inputMetadata: reply.inputs ?? [],
      outputMetadata: reply.outputs ?? [],
      async run(feeds, fetches) {
        const wire: Record<string, WireTensor> = {};
        for (const [name, tensor] of Object.entries(feeds))
          wire[name] = { type: tensor.type, data: tensor.data as WireTensor['data'], dims: [...tensor.dims] };
        const result = await worker.request({ kind: 'run', id: worker.nextId++, session, feeds: wire, fetches });
        const outputs: Record<string, ort.Tensor> = {};
        for (const [name, t] of Object.entries(result.tensors ?? {}))
          outputs[name] = new ort.Tensor(t.type as 'float32', t.data as Float32Array, t.dims);
        return outputs;
      },
      async release() {
        await worker.request({ kind: 'release', id: worker.nextId++, session }).catch(() => undefined);
      },
    };
  }

  async terminate(): Promise<void> {
    this.failure ??= new Error('onnx worker terminated');
    await this.worker.terminate();
  }
}

/**
 * ORT throws when a requested provider (cuda) cannot load instead of falling back, so the fallback to
 * CPU is ours — and it is loud, because a silent CPU fallback turns a 1 s image into a minute.
 * Without `worker` the session gets a worker of its own, ended when the session is released.
 */
export async function createSession(
  path: string,
  settings: SessionSettings,
  log?: SessionLogger,
  worker?: SessionHost,
): Promise<{ session: OnnxSession; provider: ExecutionProvider }> {
  const host = worker ?? new OnnxWorker();
  const owned = (session: OnnxSession): OnnxSession =>
    worker ? session : { ...session, release: async () => { await session.release(); await host.terminate(); } };
  const providers: ExecutionProvider[] = settings.executionProviders.length ? settings.executionProviders : ['cpu'];
  try {
    try {
      return { session: owned(await host.createSession(path, sessionOptions(settings, providers))), provider: providers[0]! };
    } catch (error) {
      if (!providers.includes('cuda')) throw error;
      const reason = error instanceof Error ? error.message.split('\n')[0] : String(error);
      log?.warn(
        `onnx: CUDA was requested but could not be used (${reason}); falling back to CPU for ${path}. ` +
          'Install the CUDA build with ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node (needs CUDA 12 + cuDNN).',
      );
      return { session: owned(await host.createSession(path, sessionOptions(settings, ['cpu']))), provider: 'cpu' };
    }
  } catch (error) {
    if (!worker) await host.terminate();
    throw error;
  }
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 → IEEE half (round to nearest even), for fp16 exports. */
export function toHalf(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exponent = (x >>> 23) & 0xff;
  let mantissa = x & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 : 0);
  const e = exponent - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mantissa |= 0x800000;
    const shift = 14 - e;
    let half = mantissa >>> shift;
    const rest = mantissa & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rest > halfway || (rest === halfway && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mantissa >>> 13);
  const rest = mantissa & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && half & 1)) half++;
  return sign | half;
}

export function fromHalf(half: number): number {
  const sign = half & 0x8000 ? -1 : 1;
  const exponent = (half >>> 10) & 0x1f;
  const mantissa = half & 0x3ff;
  if (exponent === 0) return sign * 2 ** -14 * (mantissa / 1024);
  if (exponent === 0x1f) return mantissa ? NaN : sign * Infinity;
  return sign * 2 ** (exponent - 15) * (1 + mantissa / 1024);
}

/** A float tensor in the element type the model input declares (float32 or float16). */
export function floatTensor(type: string, data: Float32Array, dims: readonly number[]): ort.Tensor {
  if (type === 'float16') {
    const halves = new Uint16Array(data.length);
    for (let i = 0; i < data.length; i++) halves[i] = toHalf(data[i]!);
    return new ort.Tensor('float16', halves, dims);
  }
  if (type === 'float32') return new ort.Tensor('float32', data, dims);
  throw new Error(`onnx: expected a float input, the model declares ${type}`);
}

/** An integer tensor in the element type the model input declares (int32 or int64). */
export function intTensor(type: string, values: readonly number[], dims: readonly number[]): ort.Tensor {
  if (type === 'int64') return new ort.Tensor('int64', BigInt64Array.from(values, (v) => BigInt(v)), dims);
  if (type === 'int32') return new ort.Tensor('int32', Int32Array.from(values), dims);
  throw new Error(`onnx: expected an integer input, the model declares ${type}`);
}

/** Float32 copy of a float tensor's data (fp16 outputs converted). */
export function floatData(tensor: ort.Tensor): Float32Array {
  if (tensor.type === 'float32') return tensor.data as Float32Array;
  if (tensor.type === 'float16') {
    const data = tensor.data as ArrayLike<number>;
    const out = new Float32Array(data.length);
    // Float16Array (when the runtime has it) already yields numbers; a Uint16Array holds raw halves.
    if (data instanceof Uint16Array) for (let i = 0; i < data.length; i++) out[i] = fromHalf(data[i]!);
    else for (let i = 0; i < data.length; i++) out[i] = data[i]!;
    return out;
  }
  throw new Error(`onnx: expected a float output, got ${tensor.type}`);
}

export type { ort };
