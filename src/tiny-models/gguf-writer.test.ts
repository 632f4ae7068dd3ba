import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readGgufFileInfo } from 'node-llama-cpp';
import { encodeGguf, f32ToF16, gguf, GgmlType, GgufValueType, quantizeQ8_0 } from './gguf-writer.ts';

test('f32ToF16 matches IEEE half for normal, subnormal, rounding and overflow cases', () => {
  assert.equal(f32ToF16(1), 0x3c00);
  assert.equal(f32ToF16(-2), 0xc000);
  assert.equal(f32ToF16(65504), 0x7bff);
  assert.equal(f32ToF16(1e6), 0x7c00);
  assert.equal(f32ToF16(2 ** -24), 0x0001);
  assert.equal(f32ToF16(0.1), 0x2e66);
  assert.equal(f32ToF16(1 + 2 ** -11), 0x3c00, 'a tie rounds to even');
  assert.equal(f32ToF16(1 + 3 * 2 ** -11), 0x3c02);
});

test('Q8_0 block: f16 scale amax/127 then int8 values rounded half away from zero', () => {
  const values = new Float32Array(32);
  values[0] = 127;
  values[1] = -63.5;
  values[2] = 1.4;
  const block = quantizeQ8_0(values);
  assert.equal(block.length, 34);
  assert.equal(block.readUInt16LE(0), f32ToF16(1));
  assert.deepEqual([block.readInt8(2), block.readInt8(3), block.readInt8(4), block.readInt8(5)], [127, -64, 1, 0]);
});

test('encodeGguf writes metadata of every type and aligned tensors that node-llama-cpp parses back', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'gguf-writer-'));
  try {
    const bytes = encodeGguf({
      metadata: {
        'general.architecture': 'llama',
        'test.u8': gguf.u8(200),
        'test.i8': gguf.i8(-5),
        'test.u16': gguf.u16(60000),
        'test.i16': gguf.i16(-30000),
        'test.u32': gguf.u32(4_000_000_000),
        'test.i32': gguf.i32(-2_000_000_000),
        'test.f32': gguf.f32(0.5),
        'test.f64': gguf.f64(0.1),
        'test.u64': gguf.u64(2n ** 40n),
        'test.i64': gguf.i64(-(2n ** 40n)),
        'test.bool': true,
        'test.strings': ['a', 'ünïcode', ''],
        'test.ints': gguf.array(GgufValueType.INT32, [1, -2, 3]),
      },
      tensors: [
        { name: 'a', dims: [3], type: GgmlType.F32, data: new Float32Array([1, 2, 3]) },
        { name: 'b', dims: [2, 2], type: GgmlType.F16, data: new Float32Array([1, 2, 3, 4]) },
        { name: 'c', dims: [32, 2], type: GgmlType.Q8_0, data: new Float32Array(64).fill(1) },
      ],
    });
    const path = join(dir, 'm.gguf');
    writeFileSync(path, bytes);
    const info = await readGgufFileInfo(path, { logWarnings: false });
    assert.equal(info.version, 3);
    const m = info.metadata as unknown as Record<string, Record<string, unknown>>;
    assert.equal(m.test!.u8, 200);
    assert.equal(m.test!.i8, -5);
    assert.equal(m.test!.u16, 60000);
    assert.equal(m.test!.i16, -30000);
    assert.equal(m.test!.u32, 4_000_000_000);
    assert.equal(m.test!.i32, -2_000_000_000);
    assert.equal(m.test!.f32, 0.5);
    assert.equal(m.test!.f64, 0.1);
    assert.equal(BigInt(m.test!.u64 as number), 2n ** 40n);
    assert.equal(BigInt(m.test!.i64 as number), -(2n ** 40n));
    assert.equal(m.test!.bool, true);
    assert.deepEqual(m.test!.strings, ['a', 'ünïcode', '']);
    assert.deepEqual(m.test!.ints, [1, -2, 3]);
    const tensors = info.fullTensorInfo ?? info.tensorInfo ?? [];
    assert.deepEqual(tensors.map((t) => [t.name, t.dimensions.map(Number), t.ggmlType, Number(t.offset)]), [
      ['a', [3], 0, 0],
      ['b', [2, 2], 1, 32],
      ['c', [32, 2], 8, 64],
    ]);
    const dataStart = bytes.length - (32 + 32 + 96);
    assert.equal(dataStart % 32, 0);
    assert.equal(bytes.readFloatLE(dataStart + 8), 3);
    assert.equal(bytes.readUInt16LE(dataStart + 32 + 6), f32ToF16(4));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('numbers without a type tag are rejected instead of guessed', () => {
  assert.throws(() =>
    encodeGguf({ metadata: { x: { kind: 'scalar', type: GgufValueType.UINT32, value: 1.5 } }, tensors: [] }),
  );
});
