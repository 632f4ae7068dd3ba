// A small GGUF v3 writer (the file format llama.cpp loads), enough to build test models in code.
// Layout (ggml/include/gguf.h): header, metadata key/values, tensor infos, padding to the alignment,
// then tensor data with every tensor starting on an aligned offset. Everything is little-endian.
// llama.cpp checks metadata types strictly (a uint32 key written as int32 fails to load), so numbers
// are always written through an explicit type tag; only strings, booleans and string arrays are inferred.

export const GGUF_ALIGNMENT = 32;

export enum GgufValueType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}

type ScalarType = Exclude<GgufValueType, GgufValueType.ARRAY>;
type ScalarValue = number | bigint | boolean | string;

export interface GgufScalar {
  readonly kind: 'scalar';
  readonly type: ScalarType;
  readonly value: ScalarValue;
}

export interface GgufArray {
  readonly kind: 'array';
  readonly itemType: ScalarType;
  readonly values: ArrayLike<ScalarValue>;
}

export type GgufMetadataValue = GgufScalar | GgufArray | string | boolean | readonly string[];

/** Typed constructors: numbers carry their GGUF type because llama.cpp rejects a mismatch. */
export const gguf = {
  u8: (value: number): GgufScalar => ({ kind: 'scalar', type: GgufValueType.UINT8, value }),
  i8: (value: number): GgufScalar => ({ kind: 'scalar', type: GgufValueType.INT8, value }),
  u16: (value: number): GgufScalar => ({ kind: 'scalar', type: GgufValueType.UINT16, value }),
  i16: (value: number): GgufScalar => ({ kind: 'scalar', type: GgufValueType.INT16, value }),
  u32: (value: number): GgufScalar => ({ kind: 'scalar', type: GgufValueType.UINT32, value }),
  i32: (value: number): GgufScalar => ({ kind: 'scalar', type: GgufValueType.INT32, value }),
  f32: (value: number): GgufScalar => ({ kind: 'scalar', type: GgufValueType.FLOAT32, value }),
  f64: (value: number): GgufScalar => ({ kind: 'scalar', type: GgufValueType.FLOAT64, value }),
  u64: (value: number | bigint): GgufScalar => ({ kind: 'scalar', type: GgufValueType.UINT64, value }),
  i64: (value: number | bigint): GgufScalar => ({ kind: 'scalar', type: GgufValueType.INT64, value }),
  bool: (value: boolean): GgufScalar => ({ kind: 'scalar', type: GgufValueType.BOOL, value }),
  str: (value: string): GgufScalar => ({ kind: 'scalar', type: GgufValueType.STRING, value }),
  array: (itemType: ScalarType, values: ArrayLike<ScalarValue>): GgufArray => ({ kind: 'array', itemType, values }),
};

/** ggml tensor types this writer can encode (ggml.h numbering). */
export enum GgmlType {
  F32 = 0,
  F16 = 1,
  Q8_0 = 8,
}

export interface GgufTensor {
  name: string;
  /** ggml order: dims[0] is the row length (innermost), e.g. a [n_embd, n_vocab] embedding matrix. */
  dims: readonly number[];
  type: GgmlType;
  /** Row-major values, dims[0] fastest; length must be the product of dims. */
  data: Float32Array;
}

export interface GgufFile {
  metadata: Record<string, GgufMetadataValue>;
  tensors: readonly GgufTensor[];
}

const Q8_0_BLOCK = 32;

/** Bytes a tensor occupies in the file (before alignment padding). */
export function tensorByteSize(type: GgmlType, elements: number): number {
  switch (type) {
    case GgmlType.F32:
      return elements * 4;
    case GgmlType.F16:
      return elements * 2;
    case GgmlType.Q8_0:
      return (elements / Q8_0_BLOCK) * 34;
  }
}

/** Serialises a model to GGUF v3 bytes. Same input, same bytes: no timestamps, insertion-ordered keys. */
export function encodeGguf(file: GgufFile): Buffer {
  const out = new ByteSink();
  const entries = Object.entries(file.metadata);
  out.raw(Buffer.from('GGUF', 'latin1'));
  out.u32(3);
  out.u64(BigInt(file.tensors.length));
  out.u64(BigInt(entries.length));
  for (const [key, value] of entries) {
    out.string(key);
    writeValue(out, key, value);
  }

  const names = new Set<string>();
  let offset = 0;
  const encoded: Buffer[] = [];
  for (const tensor of file.tensors) {
    if (names.has(tensor.name)) throw new Error(`duplicate tensor ${tensor.name}`);
    names.add(tensor.name);
    const data = encodeTensorData(tensor);
    out.string(tensor.name);
    out.u32(tensor.dims.length);
    for (const dim of tensor.dims) out.u64(BigInt(dim));
    out.u32(tensor.type);
    out.u64(BigInt(offset));
    encoded.push(data);
    offset += align(data.length);
  }
  out.padTo(GGUF_ALIGNMENT);
  for (const data of encoded) {
    out.raw(data);
    out.padTo(GGUF_ALIGNMENT);
  }
  return out.toBuffer();
}

function align(n: number): number {
  return Math.ceil(n / GGUF_ALIGNMENT) * GGUF_ALIGNMENT;
}

function writeValue(out: ByteSink, key: string, value: GgufMetadataValue): void {
  if (typeof value === 'string') {
    out.u32(GgufValueType.STRING);
    out.string(value);
    return;
  }
  if (typeof value === 'boolean') {
    out.u32(GgufValueType.BOOL);
    out.u8(value ? 1 : 0);
    return;
  }
  if (Array.isArray(value)) {
    writeValue(out, key, gguf.array(GgufValueType.STRING, value as string[]));
    return;
  }
  const tagged = value as GgufScalar | GgufArray;
  if (tagged.kind === 'scalar') {
    out.u32(tagged.type);
    writeScalar(out, key, tagged.type, tagged.value);
    return;
  }
  out.u32(GgufValueType.ARRAY);
  out.u32(tagged.itemType);
  out.u64(BigInt(tagged.values.length));
  for (let i = 0; i < tagged.values.length; i++) writeScalar(out, key, tagged.itemType, tagged.values[i]!);
}

function writeScalar(out: ByteSink, key: string, type: ScalarType, value: ScalarValue): void {
  const expect = (what: string, ok: boolean) => {
    if (!ok) throw new TypeError(`GGUF key ${key}: expected ${what}, got ${typeof value}`);
  };
  switch (type) {
    case GgufValueType.STRING:
      expect('string', typeof value === 'string');
      out.string(value as string);
      return;
    case GgufValueType.BOOL:
      expect('boolean', typeof value === 'boolean');
      out.u8(value ? 1 : 0);
      return;
    case GgufValueType.UINT64:
      expect('integer', typeof value === 'bigint' || Number.isInteger(value));
      out.u64(BigInt(value as number));
      return;
    case GgufValueType.INT64:
      expect('integer', typeof value === 'bigint' || Number.isInteger(value));
      out.i64(BigInt(value as number));
      return;
    case GgufValueType.FLOAT32:
      expect('number', typeof value === 'number');
      out.f32(value as number);
      return;
    case GgufValueType.FLOAT64:
      expect('number', typeof value === 'number');
      out.f64(value as number);
      return;
    default:
      expect('integer', typeof value === 'number' && Number.isInteger(value));
      out.int(type, value as number);
  }
}

function encodeTensorData(tensor: GgufTensor): Buffer {
  const elements = tensor.dims.reduce((a, b) => a * b, 1);
  if (tensor.data.length !== elements) {
    throw new Error(`tensor ${tensor.name}: ${tensor.data.length} values for dims [${tensor.dims.join(', ')}]`);
  }
  switch (tensor.type) {
    case GgmlType.F32:
      return Buffer.from(new Float32Array(tensor.data).buffer);
    case GgmlType.F16: {
      const buf = Buffer.alloc(elements * 2);
      for (let i = 0; i < elements; i++) buf.writeUInt16LE(f32ToF16(tensor.data[i]!), i * 2);
      return buf;
    }
    case GgmlType.Q8_0:
      if (tensor.dims[0]! % Q8_0_BLOCK !== 0) throw new Error(`tensor ${tensor.name}: Q8_0 rows must be a multiple of 32`);
      return quantizeQ8_0(tensor.data);
  }
}

/** ggml's reference quantize_row_q8_0: per 32 values one f16 scale amax/127 and 32 int8 (roundf). */
export function quantizeQ8_0(values: Float32Array): Buffer {
  const blocks = values.length / Q8_0_BLOCK;
  const buf = Buffer.alloc(blocks * 34);
  for (let b = 0; b < blocks; b++) {
    let amax = 0;
    for (let j = 0; j < Q8_0_BLOCK; j++) amax = Math.max(amax, Math.abs(values[b * Q8_0_BLOCK + j]!));
    const d = Math.fround(amax / 127);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    buf.writeUInt16LE(f32ToF16(d), b * 34);
    for (let j = 0; j < Q8_0_BLOCK; j++) {
      const x = Math.fround(values[b * Q8_0_BLOCK + j]! * id);
      // roundf rounds halves away from zero; Math.round would round -0.5 up.
      buf.writeInt8(Math.sign(x) * Math.round(Math.abs(x)), b * 34 + 2 + j);
    }
  }
  return buf;
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** IEEE half from float with round-to-nearest-even (what ggml's FP32_TO_FP16 does on x86). */
export function f32ToF16(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && (half & 1))) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1))) half++;
  return sign | half;
}

/** Growable little-endian byte buffer. */
class ByteSink {
  private buf = Buffer.alloc(1 << 16);
  private len = 0;

  private reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = Buffer.alloc(size);
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
  }

  raw(bytes: Uint8Array): void {
    this.reserve(bytes.length);
    this.buf.set(bytes, this.len);
    this.len += bytes.length;
  }

  u8(v: number): void {
    this.reserve(1);
    this.len = this.buf.writeUInt8(v, this.len);
  }

  u32(v: number): void {
    this.reserve(4);
    this.len = this.buf.writeUInt32LE(v, this.len);
  }

  u64(v: bigint): void {
    this.reserve(8);
    this.len = this.buf.writeBigUInt64LE(v, this.len);
  }

  i64(v: bigint): void {
    this.reserve(8);
    this.len = this.buf.writeBigInt64LE(v, this.len);
  }

  f32(v: number): void {
    this.reserve(4);
    this.len = this.buf.writeFloatLE(v, this.len);
  }

  f64(v: number): void {
    this.reserve(8);
    this.len = this.buf.writeDoubleLE(v, this.len);
  }

  int(type: GgufValueType, v: number): void {
    this.reserve(8);
    switch (type) {
      case GgufValueType.UINT8:
        this.len = this.buf.writeUInt8(v, this.len);
        return;
      case GgufValueType.INT8:
        this.len = this.buf.writeInt8(v, this.len);
        return;
      case GgufValueType.UINT16:
        this.len = this.buf.writeUInt16LE(v, this.len);
        return;
      case GgufValueType.INT16:
        this.len = this.buf.writeInt16LE(v, this.len);
        return;
      case GgufValueType.UINT32:
        this.len = this.buf.writeUInt32LE(v, this.len);
        return;
      case GgufValueType.INT32:
        this.len = this.buf.writeInt32LE(v, this.len);
        return;
      default:
        throw new TypeError(`not an integer GGUF type: ${type}`);
    }
  }

  string(s: string): void {
    const bytes = Buffer.from(s, 'utf8');
    this.u64(BigInt(bytes.length));
    this.raw(bytes);
  }

  padTo(alignment: number): void {
    const pad = (alignment - (this.len % alignment)) % alignment;
    this.reserve(pad);
    this.buf.fill(0, this.len, this.len + pad);
    this.len += pad;
  }

  toBuffer(): Buffer {
    return this.buf.subarray(0, this.len);
  }
}
