// The one place that creates onnxruntime-node sessions, plus the tensor conversions that let one
// pipeline drive fp32 and fp16 exports alike.
import * as ort from 'onnxruntime-node';

export type ExecutionProvider = 'cpu' | 'cuda';

export interface SessionLogger {
  warn(message: string): void;
}

export interface SessionSettings {
  /** Pinned intra-op threads: more threads change float summation order and break seed determinism. */
  threads: number;
  executionProviders: ExecutionProvider[];
}

const sessionOptions = (settings: SessionSettings, providers: ExecutionProvider[]): ort.InferenceSession.SessionOptions => ({
  executionProviders: providers,
  intraOpNumThreads: settings.threads,
  interOpNumThreads: 1,
  executionMode: 'sequential',
  graphOptimizationLevel: 'all',
  logSeverityLevel: 3,
});

/**
 * ORT throws when a requested provider (cuda) cannot load instead of falling back, so the fallback to
 * CPU is ours — and it is loud, because a silent CPU fallback turns a 1 s image into a minute.
 */
export async function createSession(
  path: string,
  settings: SessionSettings,
  log?: SessionLogger,
): Promise<{ session: ort.InferenceSession; provider: ExecutionProvider }> {
  const providers: ExecutionProvider[] = settings.executionProviders.length ? settings.executionProviders : ['cpu'];
  try {
    return { session: await ort.InferenceSession.create(path, sessionOptions(settings, providers)), provider: providers[0]! };
  } catch (error) {
    if (!providers.includes('cuda')) throw error;
    const reason = error instanceof Error ? error.message.split('\n')[0] : String(error);
    (log ?? console).warn(
      `onnx: CUDA was requested but could not be used (${reason}); falling back to CPU for ${path}. ` +
        'Install the CUDA build with ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node (needs CUDA 12 + cuDNN).',
    );
    return { session: await ort.InferenceSession.create(path, sessionOptions(settings, ['cpu'])), provider: 'cpu' };
  }
}

export type TensorMetadata = { name: string; type: string; shape: readonly (number | string)[] };

/** Tensor inputs/outputs of a session (non-tensor values are never part of SD exports). */
export function metadataOf(values: readonly ort.InferenceSession.ValueMetadata[]): TensorMetadata[] {
  return values.map((value) =>
    value.isTensor ? { name: value.name, type: value.type, shape: value.shape } : { name: value.name, type: 'unknown', shape: [] },
  );
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
