// Seeded Gaussian noise. A fixed, fully specified generator (xoshiro128** seeded through splitmix32)
// keeps "same seed → same image" true across processes and Node versions; Math.random cannot.
// Each image of a batch gets its own stream (seed, index), so image 0 of a batch equals the single
// image generated with the same seed, and images never share noise.

function splitmix32(state: { s: number }): number {
  state.s = (state.s + 0x9e3779b9) | 0;
  let z = state.s;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

export class GaussianRandom {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  private spare: number | undefined;

  /** `seed` may exceed 2³² (SiliconFlow allows up to 9999999999): both halves feed the state. */
  constructor(seed: number, stream = 0) {
    const low = seed % 0x100000000;
    const high = Math.floor(seed / 0x100000000);
    const state = { s: (low ^ Math.imul(high + 1, 0x27d4eb2d) ^ Math.imul(stream + 1, 0x165667b1)) | 0 };
    this.a = splitmix32(state);
    this.b = splitmix32(state);
    this.c = splitmix32(state);
    this.d = splitmix32(state) | 1;
  }

  /** Uniform in (0, 1): never 0, so log() below is finite. */
  uniform(): number {
    const result = Math.imul(((Math.imul(this.b, 5) << 7) | (Math.imul(this.b, 5) >>> 25)), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = (this.d << 11) | (this.d >>> 21);
    return (result + 0.5) / 4294967296;
  }

  /** Standard normal via Box–Muller (both outputs used). */
  normal(): number {
    if (this.spare !== undefined) {
      const value = this.spare;
      this.spare = undefined;
      return value;
    }
    const radius = Math.sqrt(-2 * Math.log(this.uniform()));
    const angle = 2 * Math.PI * this.uniform();
    this.spare = radius * Math.sin(angle);
    return radius * Math.cos(angle);
  }

  fill(out: Float32Array, offset = 0, count = out.length - offset): Float32Array {
    for (let i = 0; i < count; i++) out[offset + i] = this.normal();
    return out;
  }
}

/** Noise for a whole batch: image i's slice comes from its own stream. */
export function batchNoise(generators: GaussianRandom[], perImage: number): Float32Array {
  const out = new Float32Array(generators.length * perImage);
  for (const [i, generator] of generators.entries()) generator.fill(out, i * perImage, perImage);
  return out;
}
