// Greedy's choice over a logits row, in WebAssembly SIMD. Over a 152k-token vocabulary llama.cpp's
// llama_sampler_sample fills a llama_token_data for every token (1.8 MB) before its greedy pass: 140-440 µs
// of CPU per token on this VM, and a plain JavaScript loop 370 µs (V8 does not vectorise it). Copying the
// row into this module's memory and scanning it four lanes at a time costs ~66 µs (bench: docs/BENCHMARKS.md,
// "greedy argmax"). No compiler is needed at install: the module is assembled here, a few hundred bytes,
// from the instructions below (the WebAssembly binary format, with its 128-bit SIMD opcodes).
//
// The answer is llama.cpp's greedy one: the first index of the highest value (each lane keeps its first
// strictly-greater element; lanes are merged by value, then by lowest index), and 0 when nothing beats
// -Infinity. NaN never wins, as in llama_sampler_greedy's `>` (bar a NaN at index 0, which llama.cpp keeps).

/** LEB128 encodings of the binary format. */
function unsigned(value: number): number[] {
  const out: number[] = [];
  do {
    let byte = value & 0x7f;
    value >>>= 7;
    if (value) byte |= 0x80;
    out.push(byte);
  } while (value);
  return out;
}

function signed(value: number): number[] {
  const out: number[] = [];
  for (;;) {
    const byte = value & 0x7f;
    value >>= 7;
    if ((value === 0 && !(byte & 0x40)) || (value === -1 && byte & 0x40)) {
      out.push(byte);
      return out;
    }
    out.push(byte | 0x80);
  }
}

const I32 = 0x7f;
const V128 = 0x7b;
// Opcodes (https://webassembly.github.io/spec/core/binary/instructions.html).
const LOCAL_GET = 0x20;
const LOCAL_SET = 0x21;
const LOCAL_TEE = 0x22;
const I32_CONST = 0x41;
const F32_CONST = 0x43;
const I32_GE_U = 0x4f;
const I32_ADD = 0x6a;
const I32_MUL = 0x6c;
const I32_AND = 0x71;
const BLOCK = 0x02;
const LOOP = 0x03;
const BR = 0x0c;
const BR_IF = 0x0d;
const END = 0x0b;
const EMPTY = 0x40;
const simd = (op: number) => [0xfd, ...unsigned(op)];
const V128_LOAD = simd(0x00);
const V128_STORE = simd(0x0b);
const V128_CONST = simd(0x0c);
const F32X4_SPLAT = simd(0x13);
const F32X4_GT = simd(0x44);
const V128_BITSELECT = simd(0x52);
const I32X4_ADD = simd(0xae);

/**
 * `scan(n)`: the row is n floats at offset 0; two accumulators of four lanes each take eight floats a
 * step (two independent dependency chains). Stores lane maxima and their indices (4 × f32 + 4 × i32,
 * twice) at byte offset `end` = (n rounded down to 8) × 4, and returns `end`; the caller merges the
 * lanes and the last n mod 8 floats.
 */
function assemble(): Uint8Array {
  // Locals: 0 n (the parameter), 1 i, 2 end; v128: 3 max0, 4 idx0, 5 cur0, 6 max1, 7 idx1, 8 cur1, 9 x, 10 mask, 11 step.
  const code: number[] = [];
  const get = (local: number) => code.push(LOCAL_GET, ...unsigned(local));
  const set = (local: number) => code.push(LOCAL_SET, ...unsigned(local));
  const tee = (local: number) => code.push(LOCAL_TEE, ...unsigned(local));
  const i32 = (value: number) => code.push(I32_CONST, ...signed(value));
  const lanes = (a: number, b: number, c: number, d: number) => {
    const bytes = new Uint8Array(16);
    const view = new DataView(bytes.buffer);
    for (const [lane, value] of [a, b, c, d].entries()) view.setInt32(lane * 4, value, true);
    code.push(...V128_CONST, ...bytes);
  };
  const minusInfinity = new Uint8Array(4);
  new DataView(minusInfinity.buffer).setFloat32(0, Number.NEGATIVE_INFINITY, true);
  code.push(F32_CONST, ...minusInfinity, ...F32X4_SPLAT);
  tee(3);
  set(6);
  lanes(0, 0, 0, 0);
  tee(4);
  set(7);
  lanes(0, 1, 2, 3);
  set(5);
  lanes(4, 5, 6, 7);
  set(8);
  lanes(8, 8, 8, 8);
  set(11);
  // end = (n & ~7) * 4
  get(0);
  i32(-8);
  code.push(I32_AND);
  i32(4);
  code.push(I32_MUL);
  set(2);
  i32(0);
  set(1);
  code.push(BLOCK, EMPTY, LOOP, EMPTY);
  get(1);
  get(2);
  code.push(I32_GE_U, BR_IF, 1);
  for (const [max, idx, cur, offset] of [
    [3, 4, 5, 0],
    [6, 7, 8, 16],
  ] as const) {
    get(1);
    code.push(...V128_LOAD, 4, offset); // align 2^4, offset
    set(9);
    get(9);
    get(max);
    code.push(...F32X4_GT);
    set(10);
    get(9);
    get(max);
    get(10);
    code.push(...V128_BITSELECT);
    set(max);
    get(cur);
    get(idx);
    get(10);
    code.push(...V128_BITSELECT);
    set(idx);
    get(cur);
    get(11);
    code.push(...I32X4_ADD);
    set(cur);
  }
  get(1);
  i32(32);
  code.push(I32_ADD);
  set(1);
  code.push(BR, 0, END, END);
  for (const [local, offset] of [
    [3, 0],
    [4, 16],
    [6, 32],
    [7, 48],
  ] as const) {
    get(2);
    get(local);
    code.push(...V128_STORE, 4, offset);
  }
  get(2);
  code.push(END);

  const body = [2, ...unsigned(2), I32, ...unsigned(9), V128, ...code];
  const section = (id: number, bytes: number[]) => [id, ...unsigned(bytes.length), ...bytes];
  const name = (text: string) => [...unsigned(text.length), ...new TextEncoder().encode(text)];
  return Uint8Array.from([
    0x00, 0x61, 0x73, 0x6d, 1, 0, 0, 0,
    ...section(1, [1, 0x60, 1, I32, 1, I32]), // type: (i32) -> i32
    ...section(3, [1, 0]), // function 0 has type 0
    ...section(5, [1, 0, 1]), // one memory, at least one page (grown to fit the row)
    ...section(7, [2, ...name('scan'), 0, 0, ...name('memory'), 2, 0]),
    ...section(10, [1, ...unsigned(body.length), ...body]),
  ]);
}

/** The part of the WebAssembly global used here (the project's TypeScript libs declare no DOM). */
interface Wasm {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { exports: unknown };
}
interface WasmMemory {
  buffer: ArrayBuffer;
  grow(pages: number): number;
}

/** The index llama.cpp's greedy sampler would choose from `row`. */
export type Argmax = (row: Float32Array) => number;

/** Undefined where this Node has no WebAssembly SIMD (the runner then keeps llama_sampler_sample). */
export function createArgmax(): Argmax | undefined {
  let exports: { scan: (n: number) => number; memory: WasmMemory };
  try {
    const wasm = (globalThis as unknown as { WebAssembly: Wasm }).WebAssembly;
    exports = new wasm.Instance(new wasm.Module(assemble())).exports as typeof exports;
  } catch {
    return undefined;
  }
  const { memory, scan } = exports;
  let floats = new Float32Array(memory.buffer);
  let ints = new Int32Array(memory.buffer);
  return (row: Float32Array) => {
    const n = row.length;
    const bytes = n * 4 + 64;
    if (memory.buffer.byteLength < bytes) {
      memory.grow(Math.ceil((bytes - memory.buffer.byteLength) / 65536));
      floats = new Float32Array(memory.buffer);
      ints = new Int32Array(memory.buffer);
    }
    floats.set(row);
    const at = scan(n) >>> 2;
    let best = -1;
    let bestValue = Number.NEGATIVE_INFINITY;
    for (const base of [at, at + 8]) {
      for (let lane = 0; lane < 4; lane++) {
        const value = floats[base + lane]!;
        const index = ints[base + 4 + lane]!;
        if (value > bestValue || (value === bestValue && index < best)) {
          bestValue = value;
          best = index;
        }
      }
    }
    // A lane that never saw a value above -Infinity reports index 0, which is also llama.cpp's answer then.
    for (let i = n & ~7; i < n; i++) {
      if (row[i]! > bestValue) {
        bestValue = row[i]!;
        best = i;
      }
    }
    return Math.max(best, 0);
  };
}
