// Validates a GGUF file's header before llama.cpp sees it. llama.cpp trusts the header: a file that
// declares a huge tensor count made it allocate 3.4 GB and pause the event loop for seconds before it
// refused, and a tensor with a type the model code cannot use aborts the whole process natively,
// where nothing can catch it. This reads only the header (metadata and tensor infos, through a small
// window, never the tensor data), checks every count and length against the file's size before
// believing it, and throws a GgufCheckError naming the first problem. Layout: ggml/include/gguf.h.
import { open, stat, type FileHandle } from 'node:fs/promises';

export class GgufCheckError extends Error {
  constructor(path: string, problem: string) {
    super(`${path} is not a GGUF file llama.cpp can load safely: ${problem}`);
    this.name = 'GgufCheckError';
  }
}

/** What a checked header says, for logs and tests. */
export interface GgufSummary {
  version: number;
  tensorCount: number;
  metadataCount: number;
  /** Bytes of header (metadata + tensor infos + padding) before the tensor data. */
  headerBytes: number;
  alignment: number;
  /**
   * The integer metadata values, general.architecture (the memory estimate reads the model's shape from
   * them) and the strings of KEPT_STRINGS (the embedding and reranker loads).
   */
  metadata: Record<string, number | string>;
  /** The shapes of the tensors in KEPT_TENSORS the file has (a classification head, the vocabulary's rows). */
  tensorShapes: Record<string, number[]>;
}

/**
 * What the llama-cpp embedding and reranker loads read from the header besides integers (embedding.ts
 * ggufInfo): a reranker's prompt template, and whether a classification head is there and how many
 * rows the token embedding has. Reading them here, in the check the load already ran, spares the engine
 * process node-llama-cpp's GGUF reader (its module graph and the whole parsed header: ~13 MiB of RSS).
 */
const KEPT_STRINGS = new Set(['general.architecture', 'tokenizer.chat_template.rerank']);
const KEPT_TENSORS = new Set(['token_embd.weight', 'cls.weight', 'cls.output.weight']);

/** Headers larger than this are refused (a 150k-token vocabulary with merges is ~10 MiB). */
export const MAX_HEADER_BYTES = 256 * 1024 * 1024;
/**
 * The memory budget: what the check keeps per tensor (its name, size and offset) and per integer
 * metadata value grows with these counts, which the header cap alone bounds only at millions (a 32 MiB
 * header of empty entries held 180–350 MiB). Real files have tens of metadata entries and at most a few
 * thousand tensors (per-expert MoE layouts: ~15,000).
 */
export const MAX_TENSORS = 65_536;
export const MAX_METADATA = 65_536;
/** The time budget for one file: the check runs in the server process, so it also yields every YIELD_MS. */
export const CHECK_BUDGET_MS = 10_000;
const YIELD_MS = 10;
/** Metadata values kept for the memory estimate: keys longer than this are skipped (real keys are < 100 bytes). */
const MAX_KEPT_KEY = 256;
/** gguf.h GGML_MAX_DIMS and GGML_MAX_NAME. */
const MAX_DIMS = 4;
const MAX_NAME = 64;
/** Most nested array levels llama.cpp's own reader accepts (arrays of arrays are not used by models). */
const MAX_ARRAY_NESTING = 2;

/**
 * ggml types a model's weights may have, with [elements per block, bytes per block] (ggml.c type
 * traits). Types ggml numbers but that are not weight formats (Q8_1 and Q8_K are matmul scratch types,
 * I8–I64 and F64 are not read by llama.cpp's model code), removed ones (4, 5, 31–33, 36–38) and newer
 * ones this table does not know are refused: a weight of such a type is where llama.cpp aborts.
 */
const WEIGHT_TYPES: ReadonlyMap<number, { name: string; block: number; bytes: number }> = new Map(
  (
    [
      [0, 'F32', 1, 4],
      [1, 'F16', 1, 2],
      [2, 'Q4_0', 32, 18],
      [3, 'Q4_1', 32, 20],
      [6, 'Q5_0', 32, 22],
      [7, 'Q5_1', 32, 24],
      [8, 'Q8_0', 32, 34],
      [10, 'Q2_K', 256, 84],
      [11, 'Q3_K', 256, 110],
      [12, 'Q4_K', 256, 144],
      [13, 'Q5_K', 256, 176],
      [14, 'Q6_K', 256, 210],
      [16, 'IQ2_XXS', 256, 66],
      [17, 'IQ2_XS', 256, 74],
      [18, 'IQ3_XXS', 256, 98],
      [19, 'IQ1_S', 256, 50],
      [20, 'IQ4_NL', 32, 18],
      [21, 'IQ3_S', 256, 110],
      [22, 'IQ2_S', 256, 82],
      [23, 'IQ4_XS', 256, 136],
      [29, 'IQ1_M', 256, 56],
      [30, 'BF16', 1, 2],
      [34, 'TQ1_0', 256, 54],
      [35, 'TQ2_0', 256, 66],
      [39, 'MXFP4', 32, 17],
    ] as const
  ).map(([id, name, block, bytes]) => [id, { name, block, bytes }]),
);

const NOT_WEIGHT_TYPES: Record<number, string> = {
  4: 'Q4_2 (removed from ggml)',
  5: 'Q4_3 (removed from ggml)',
  9: 'Q8_1 (a scratch type, not a weight format)',
  15: 'Q8_K (a scratch type, not a weight format)',
  24: 'I8',
  25: 'I16',
  26: 'I32',
  27: 'I64',
  28: 'F64',
  31: 'Q4_0_4_4 (removed from ggml)',
  32: 'Q4_0_4_8 (removed from ggml)',
  33: 'Q4_0_8_8 (removed from ggml)',
  36: 'IQ4_NL_4_4 (removed from ggml)',
  37: 'IQ4_NL_4_8 (removed from ggml)',
  38: 'IQ4_NL_8_8 (removed from ggml)',
};

/** GGUF metadata value types: fixed sizes, or STRING (8) and ARRAY (9). */
const SCALAR_BYTES: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
const STRING = 8;
const UINT32 = 4;
const INT32 = 5;
const ARRAY = 9;

/** A forward-only reader over a window of the file; reads only what is asked, in 1 MiB steps. */
class HeaderReader {
  private buffer = Buffer.alloc(0);
  /** File offset of buffer[0]. */
  private start = 0;
  pos = 0;
  private calls = 0;
  private yielded = performance.now();
  private readonly deadline: number;

  constructor(
    private readonly file: FileHandle,
    readonly size: number,
    private readonly fail: (problem: string) => never,
    private readonly budgetMs: number,
  ) {
    this.deadline = performance.now() + budgetMs;
  }

  /** Every 1,024 reads (`items` counts a batch): refuses a check past its time budget, and lets the server's event loop run. */
  private async tick(items = 1): Promise<void> {
    this.calls += items;
    if (this.calls < 1024) return;
    this.calls = 0;
    const now = performance.now();
    if (now > this.deadline) this.fail(`checking its header took longer than ${this.budgetMs / 1000} s (at byte ${this.pos})`);
    if (now - this.yielded < YIELD_MS) return;
    await new Promise((resolve) => setImmediate(resolve));
    this.yielded = performance.now();
  }

  get remaining(): number {
    return this.size - this.pos;
  }

  /** Makes `n` bytes from `pos` readable, or fails naming `what` when the file (or the header budget) ends first. */
  async need(n: number, what: string): Promise<void> {
    await this.tick();
    if (n > this.remaining) this.fail(`${what} at byte ${this.pos} needs ${n} bytes, but the file ends ${this.remaining} bytes later`);
    if (this.pos + n > MAX_HEADER_BYTES) this.fail(`the header is larger than ${MAX_HEADER_BYTES} bytes (at ${what})`);
    if (this.pos + n <= this.start + this.buffer.length) return;
    const length = Math.min(Math.max(n, 1 << 20), this.size - this.pos);
    const chunk = Buffer.alloc(length);
    const { bytesRead } = await this.file.read(chunk, 0, length, this.pos);
    if (bytesRead < n) this.fail(`${what}: the file was shorter than its size while reading`);
    this.buffer = chunk.subarray(0, bytesRead);
    this.start = this.pos;
  }

  private at(n: number): number {
    const offset = this.pos - this.start;
    this.pos += n;
    return offset;
  }

  u32 = async (what: string) => {
    await this.need(4, what);
    return this.buffer.readUInt32LE(this.at(4));
  };

  /** A u64 as a number; values past 2^53 are reported as such (no count or offset in a real file gets near). */
  u64 = async (what: string) => {
    await this.need(8, what);
    const value = this.buffer.readBigUInt64LE(this.at(8));
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`${what} is ${value}, beyond any file`);
    return Number(value);
  };

  async string(what: string, maxBytes = Number.POSITIVE_INFINITY): Promise<string> {
    const length = await this.u64(`${what} length`);
    if (length > maxBytes) this.fail(`${what} is ${length} bytes long (at most ${maxBytes})`);
    await this.need(length, what);
    return this.buffer.toString('utf8', this.at(length), this.pos - this.start);
  }

  async skip(n: number, what: string): Promise<void> {
    await this.tick();
    if (n > this.remaining) this.fail(`${what} at byte ${this.pos} needs ${n} bytes, but the file ends ${this.remaining} bytes later`);
    if (this.pos + n > MAX_HEADER_BYTES) this.fail(`the header is larger than ${MAX_HEADER_BYTES} bytes (at ${what})`);
    if (this.pos + n <= this.start + this.buffer.length) this.pos += n;
    else {
      this.pos += n;
      this.buffer = Buffer.alloc(0);
      this.start = this.pos;
    }
  }

  /**
   * Skips `count` strings (a vocabulary, its merges): walks the window without an await per item,
   * which cost ~10 µs a string (a 24 MiB array of empty strings: 50 s on a busy box).
   */
  async skipStrings(count: number, what: string): Promise<void> {
    let i = 0;
    while (i < count) {
      const end = Math.min(this.start + this.buffer.length, MAX_HEADER_BYTES);
      // Up to 1,024 items per turn in the window at hand; anything else goes the slow, checked way.
      for (const stop = Math.min(count, i + 1024); i < stop; i++) {
        const at = this.pos - this.start;
        if (this.pos + 8 > end) break;
        const high = this.buffer.readUInt32LE(at + 4);
        const length = high * 2 ** 32 + this.buffer.readUInt32LE(at);
        if (high >= 2 ** 21 || this.pos + 8 + length > end) break;
        this.pos += 8 + length;
      }
      if (i >= count) return;
      await this.tick(1024);
      if (this.pos + 8 > end || this.pos + 8 + this.peekLength() > end) {
        // Past the window: read the next item through the checked reader, which refills it.
        const length = await this.u64(`${what}[${i}] length`);
        await this.skip(length, `${what}[${i}]`);
        i++;
      }
    }
  }

  /** The u64 at `pos` (only called with 8 bytes in the window), capped so that comparisons stay exact. */
  private peekLength(): number {
    const at = this.pos - this.start;
    const high = this.buffer.readUInt32LE(at + 4);
    return high >= 2 ** 21 ? Number.MAX_SAFE_INTEGER : high * 2 ** 32 + this.buffer.readUInt32LE(at);
  }
}

/** Checks the GGUF header of `path`; throws GgufCheckError naming the first problem. */
export async function checkGgufFile(path: string, options: { budgetMs?: number } = {}): Promise<GgufSummary> {
  const fail = (problem: string): never => {
    throw new GgufCheckError(path, problem);
  };
  const file = await open(path, 'r');
  try {
    const { size } = await file.stat();
    const r = new HeaderReader(file, size, fail, options.budgetMs ?? CHECK_BUDGET_MS);
    await r.need(4, 'the magic');
    const magic = Buffer.alloc(4);
    await file.read(magic, 0, 4, 0);
    if (magic.toString('latin1') !== 'GGUF') fail(`the file does not start with "GGUF" (found ${JSON.stringify(magic.toString('latin1'))})`);
    r.pos = 4;
    const version = await r.u32('the version');
    if (version !== 2 && version !== 3) fail(`GGUF version ${version} is not supported (2 or 3)`);
    const tensorCount = await r.u64('the tensor count');
    const metadataCount = await r.u64('the metadata count');
    // Each tensor info takes at least 8 (name length) + 1 + 4 (dims) + 8 + 4 (type) + 8 (offset) bytes,
    // each key/value at least 8 + 1 + 4 + 1: counts the file cannot hold are refused before anything
    // is allocated for them.
    if (tensorCount * 33 > r.remaining) fail(`it declares ${tensorCount} tensors, more than its ${size} bytes can describe`);
    if (metadataCount * 14 > r.remaining) fail(`it declares ${metadataCount} metadata entries, more than its ${size} bytes can hold`);
    if (tensorCount > MAX_TENSORS) fail(`it declares ${tensorCount} tensors (at most ${MAX_TENSORS})`);
    if (metadataCount > MAX_METADATA) fail(`it declares ${metadataCount} metadata entries (at most ${MAX_METADATA})`);

    let alignment = 32;
    const metadata: Record<string, number | string> = {};
    for (let i = 0; i < metadataCount; i++) {
      const key = await r.string(`metadata key #${i}`, 65_535);
      const type = await r.u32(`the type of metadata ${key}`);
      if (type === UINT32 || type === INT32) {
        const value = await r.u32(`metadata ${key}`);
        if (key.length <= MAX_KEPT_KEY) metadata[key] = type === INT32 ? value | 0 : value;
        if (key === 'general.alignment') {
          if (type !== UINT32) fail(`general.alignment has value type ${type}, not uint32`);
          alignment = value;
          if (alignment === 0 || (alignment & (alignment - 1)) !== 0) fail(`general.alignment ${alignment} is not a power of two`);
        }
        continue;
      }
      if (type === STRING && KEPT_STRINGS.has(key)) {
        metadata[key] = await r.string(key, key === 'general.architecture' ? 256 : 1 << 20);
        continue;
      }
      if (key === 'general.alignment') {
        if (type !== 4) fail(`general.alignment has value type ${type}, not uint32`);
        alignment = await r.u32('general.alignment');
        if (alignment === 0 || (alignment & (alignment - 1)) !== 0) fail(`general.alignment ${alignment} is not a power of two`);
        continue;
      }
      await skipValue(r, type, `metadata ${key}`, 0, fail);
    }

    const names = new Set<string>();
    const tensorShapes: Record<string, number[]> = {};
    const tensors: { name: string; bytes: number; offset: number }[] = [];
    for (let i = 0; i < tensorCount; i++) {
      const name = await r.string(`the name of tensor #${i}`, MAX_NAME - 1);
      if (names.has(name)) fail(`tensor ${name} is declared twice`);
      names.add(name);
      const dimCount = await r.u32(`the dimension count of tensor ${name}`);
      if (dimCount === 0 || dimCount > MAX_DIMS) fail(`tensor ${name} has ${dimCount} dimensions (1–${MAX_DIMS})`);
      const dims: number[] = [];
      for (let d = 0; d < dimCount; d++) dims.push(await r.u64(`dimension ${d} of tensor ${name}`));
      const typeId = await r.u32(`the type of tensor ${name}`);
      const type = WEIGHT_TYPES.get(typeId);
      if (!type)
        fail(
          `tensor ${name} has ggml type ${typeId}${NOT_WEIGHT_TYPES[typeId] ? ` (${NOT_WEIGHT_TYPES[typeId]})` : ''}, which is not a weight type this server accepts`,
        );
      const offset = await r.u64(`the data offset of tensor ${name}`);
      if (dims[0]! % type!.block !== 0) fail(`tensor ${name}: its row of ${dims[0]} elements is not a multiple of ${type!.name}'s block of ${type!.block}`);
      // BigInt: the element count of a hostile tensor may pass 2^53 long before the file ends.
      const bytes = (dims.reduce((product, dim) => product * BigInt(dim), 1n) / BigInt(type!.block)) * BigInt(type!.bytes);
      if (bytes > BigInt(size)) fail(`tensor ${name} [${dims.join(', ')}] of type ${type!.name} would take ${bytes} bytes, more than the whole file (${size})`);
      tensors.push({ name, bytes: Number(bytes), offset });
      if (KEPT_TENSORS.has(name)) tensorShapes[name] = dims;
    }

    const headerBytes = Math.ceil(r.pos / alignment) * alignment;
    const dataBytes = size - headerBytes;
    if (tensorCount > 0 && dataBytes < 0) fail(`the file ends inside its header padding`);
    let end = 0;
    for (const tensor of tensors) {
      if (tensor.offset % alignment !== 0) fail(`tensor ${tensor.name} starts at data offset ${tensor.offset}, not a multiple of the alignment ${alignment}`);
      if (tensor.offset < end) fail(`tensor ${tensor.name} at data offset ${tensor.offset} overlaps the tensor before it (which ends at ${end})`);
      if (tensor.offset + tensor.bytes > dataBytes)
        fail(`tensor ${tensor.name} needs bytes ${tensor.offset}–${tensor.offset + tensor.bytes} of the data section, but the file holds only ${dataBytes} (truncated?)`);
      end = tensor.offset + tensor.bytes;
    }
    return { version, tensorCount, metadataCount, headerBytes, alignment, metadata, tensorShapes };
  } finally {
    await file.close();
  }
}

async function skipValue(r: HeaderReader, type: number, what: string, nesting: number, fail: (problem: string) => never): Promise<void> {
  if (type === STRING) {
    const length = await r.u64(`${what} length`);
    await r.skip(length, what);
    return;
  }
  if (type === ARRAY) {
    if (nesting >= MAX_ARRAY_NESTING) fail(`${what} nests arrays deeper than ${MAX_ARRAY_NESTING}`);
    const itemType = await r.u32(`${what} item type`);
    const count = await r.u64(`${what} item count`);
    const fixed = SCALAR_BYTES[itemType];
    if (fixed !== undefined) {
      if (count * fixed > r.remaining) fail(`${what} declares ${count} items, more than the file holds`);
      await r.skip(count * fixed, what);
      return;
    }
    if (itemType !== STRING && itemType !== ARRAY) fail(`${what} has unknown item type ${itemType}`);
    // Every string or array item takes at least 8 bytes (its length or its header).
    if (count * 8 > r.remaining) fail(`${what} declares ${count} items, more than the file holds`);
    if (itemType === STRING) return r.skipStrings(count, what);
    for (let i = 0; i < count; i++) await skipValue(r, itemType, `${what}[${i}]`, nesting + 1, fail);
    return;
  }
  const fixed = SCALAR_BYTES[type];
  if (fixed === undefined) fail(`${what} has unknown value type ${type}`);
  await r.skip(fixed!, what);
}

/** checkGgufFileOnce's results, by path, with the identity of the file version they are for. */
const checked = new Map<string, { version: string; result: Promise<GgufSummary> }>();

/**
 * checkGgufFile once per version of a file in this process. `infera serve` checks an eager model's
 * header three times otherwise (the early engine process's check, the registry's before the load, the
 * memory estimate's), two of them between listening and the first answer (7-17 ms of CPU each on
 * chat-512x8's header, more wall time: the check yields). The version is the file's device, inode,
 * size, modification and change times: any write or replacement changes ctime, so a changed file is
 * checked again. A refusal is kept like a pass (the same bytes give the same answer); an I/O error is not.
 */
export function checkGgufFileOnce(path: string): Promise<GgufSummary> {
  return stat(path).then((s) => {
    const version = `${s.dev}:${s.ino}:${s.size}:${s.mtimeMs}:${s.ctimeMs}`;
    const hit = checked.get(path);
    if (hit?.version === version) return hit.result;
    const result = checkGgufFile(path);
    checked.set(path, { version, result });
    result.catch((error: unknown) => {
      if (!(error instanceof GgufCheckError) && checked.get(path)?.result === result) checked.delete(path);
    });
    // Bounded: a server configures tens of models, not thousands.
    if (checked.size > 256) checked.delete(checked.keys().next().value!);
    return result;
  });
}
