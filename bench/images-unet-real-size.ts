// Per-step cost of a UNet with SD-Turbo's real architecture and size (SD 2.1's UNet2DConditionModel:
// blocks 320/640/1280/1280, 2 layers per block, 5/10/20/20 heads of 64, cross-attention over 77×1024,
// linear projections, GEGLU feed-forward; ≈ 865 M parameters), with random weights, exported the way
// optimum does it (inputs sample / timestep (float scalar) / encoder_hidden_states, output
// out_sample, weights in model.onnx_data because 3.5 GB exceeds protobuf's 2 GB limit).
// Slow and memory-hungry (≈ 3.5 GB on disk, several GB RSS): run by hand, never in tests.
//
// Then the whole DiffusionPipeline runs around it (tiny text encoder widened to 1024, tiny VAE) to
// measure the pipeline's own overhead at real UNet cost.
// Usage: node --import tsx bench/images-unet-real-size.ts [--size 512] [--steps 3] [--pipeline-steps 2]
//        [--threads 2] [--keep dir]
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { DiffusionPipeline } from '../src/engines/onnx/diffusion-pipeline.ts';
import { ensureTinyDiffusionModel } from '../src/tiny-models/onnx/index.ts';
import { writeOnnxModel, type AttributeValue, type GraphSpec, type Initializer, type NodeSpec } from '../src/tiny-models/onnx/onnx-writer.ts';

const { values } = parseArgs({
  options: {
    size: { type: 'string', default: '512' },
    steps: { type: 'string', default: '3' },
    threads: { type: 'string', default: '2' },
    keep: { type: 'string' },
    'pipeline-steps': { type: 'string', default: '2' },
  },
});

class GraphBuilder {
  readonly nodes: NodeSpec[] = [];
  readonly initializers: Initializer[] = [];
  parameters = 0;
  private counter = 0;
  private offset = 0;
  private seed = 12345;

  constructor(private readonly dataFd: number, private readonly dataFile: string) {}

  private fresh(prefix: string): string {
    return `${prefix}_${this.counter++}`;
  }

  op(op: string, inputs: string[], attributes?: Record<string, AttributeValue>): string {
    const output = this.fresh(op.toLowerCase());
    this.nodes.push({ op, inputs, outputs: [output], attributes });
    return output;
  }

  ops(op: string, inputs: string[], count: number, attributes?: Record<string, AttributeValue>): string[] {
    const outputs = Array.from({ length: count }, () => this.fresh(op.toLowerCase()));
    this.nodes.push({ op, inputs, outputs, attributes });
    return outputs;
  }

  constant(values: number[], type: 'int64' | 'float32' = 'int64', dims = [values.length]): string {
    const name = this.fresh('const');
    this.initializers.push({ name, type, dims, values });
    return name;
  }

  /** Random weights streamed to the external data file (mulberry32, uniform in ±scale). */
  weight(dims: number[], scale: number): string {
    const name = this.fresh('w');
    const count = dims.reduce((a, b) => a * b, 1);
    const data = new Float32Array(count);
    let a = this.seed++ >>> 0;
    for (let i = 0; i < count; i++) {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = Math.imul(a ^ (a >>> 15), a | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      data[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale;
    }
    writeSync(this.dataFd, new Uint8Array(data.buffer));
    this.initializers.push({ name, type: 'float32', dims, external: { location: this.dataFile, offset: this.offset, length: data.byteLength } });
    this.offset += data.byteLength;
    this.parameters += count;
    return name;
  }

  conv(x: string, cin: number, cout: number, kernel: number, stride = 1): string {
    const pad = kernel === 3 ? 1 : 0;
    return this.op('Conv', [x, this.weight([cout, cin, kernel, kernel], 1 / Math.sqrt(cin * kernel * kernel)), this.weight([cout], 0.01)], {
      kernel_shape: [kernel, kernel],
      pads: [pad, pad, pad, pad],
      strides: [stride, stride],
    });
  }

  linear(x: string, inFeatures: number, outFeatures: number, bias = true): string {
    const y = this.op('MatMul', [x, this.weight([inFeatures, outFeatures], 1 / Math.sqrt(inFeatures))]);
    return bias ? this.op('Add', [y, this.weight([outFeatures], 0.01)]) : y;
  }

  silu(x: string): string {
    return this.op('Mul', [x, this.op('Sigmoid', [x])]);
  }

  /** GroupNorm(32) as opset-17 exporters write it: reshape → InstanceNormalization → reshape → affine. */
  groupNorm(x: string, channels: number): string {
    const shape = this.op('Shape', [x]);
    const grouped = this.op('Reshape', [x, this.constant([0, 32, -1])]);
    const normed = this.op('InstanceNormalization', [grouped, this.constant(new Array(32).fill(1), 'float32'), this.constant(new Array(32).fill(0), 'float32')], { epsilon: 1e-5 });
    const back = this.op('Reshape', [normed, shape]);
    const scaled = this.op('Mul', [back, this.weight([channels, 1, 1], 1)]);
    return this.op('Add', [scaled, this.weight([channels, 1, 1], 0.01)]);
  }

  layerNorm(x: string, channels: number): string {
    return this.op('LayerNormalization', [x, this.weight([channels], 1), this.weight([channels], 0.01)], { axis: -1, epsilon: 1e-5 });
  }

  attention(x: string, context: string, channels: number, contextChannels: number, heads: number): string {
    const dim = channels / heads;
    const split = (t: string, perm: number[]) => this.op('Transpose', [this.op('Reshape', [t, this.constant([0, -1, heads, dim])])], { perm });
    const q = split(this.linear(x, channels, channels, false), [0, 2, 1, 3]);
    const k = split(this.linear(context, contextChannels, channels, false), [0, 2, 3, 1]);
    const v = split(this.linear(context, contextChannels, channels, false), [0, 2, 1, 3]);
    const scores = this.op('Mul', [this.op('MatMul', [q, k]), this.constant([1 / Math.sqrt(dim)], 'float32', [])]);
    const attended = this.op('MatMul', [this.op('Softmax', [scores], { axis: -1 }), v]);
    const merged = this.op('Reshape', [this.op('Transpose', [attended], { perm: [0, 2, 1, 3] }), this.constant([0, -1, channels])]);
    return this.linear(merged, channels, channels);
  }

  feedForward(x: string, channels: number): string {
    const inner = channels * 4;
    const [value, gate] = this.ops('Split', [this.linear(x, channels, inner * 2), this.constant([inner, inner])], 2, { axis: -1 }) as [string, string];
    const erf = this.op('Erf', [this.op('Mul', [gate, this.constant([Math.SQRT1_2], 'float32', [])])]);
    const gelu = this.op('Mul', [this.op('Mul', [gate, this.constant([0.5], 'float32', [])]), this.op('Add', [erf, this.constant([1], 'float32', [])])]);
    return this.linear(this.op('Mul', [value, gelu]), inner, channels);
  }

  transformer(x: string, channels: number, heads: number, context: string): string {
    const shape = this.op('Shape', [x]);
    let h = this.groupNorm(x, channels);
    h = this.op('Transpose', [this.op('Reshape', [h, this.constant([0, channels, -1])])], { perm: [0, 2, 1] });
    h = this.linear(h, channels, channels);
    const normed = this.layerNorm(h, channels);
    h = this.op('Add', [h, this.attention(normed, normed, channels, channels, heads)]);
    h = this.op('Add', [h, this.attention(this.layerNorm(h, channels), context, channels, 1024, heads)]);
    h = this.op('Add', [h, this.feedForward(this.layerNorm(h, channels), channels)]);
    h = this.linear(h, channels, channels);
    h = this.op('Reshape', [this.op('Transpose', [h], { perm: [0, 2, 1] }), shape]);
    return this.op('Add', [h, x]);
  }

  resnet(x: string, cin: number, cout: number, timeEmbedding: string): string {
    let h = this.conv(this.silu(this.groupNorm(x, cin)), cin, cout, 3);
    const t = this.op('Unsqueeze', [this.linear(this.silu(timeEmbedding), 1280, cout), this.constant([2, 3])]);
    h = this.op('Add', [h, t]);
    h = this.conv(this.silu(this.groupNorm(h, cout)), cout, cout, 3);
    return this.op('Add', [h, cin === cout ? x : this.conv(x, cin, cout, 1)]);
  }
}

function buildUnet(g: GraphBuilder): GraphSpec {
  // Timestep → sinusoidal features (320) → MLP → 1280.
  const freqs = Array.from({ length: 160 }, (_, i) => Math.exp((-Math.log(10000) * i) / 160));
  const angle = g.op('Mul', [g.op('Cast', ['timestep'], { to: 1 }), g.constant(freqs, 'float32')]);
  const features = g.op('Unsqueeze', [g.op('Concat', [g.op('Cos', [angle]), g.op('Sin', [angle])], { axis: 0 }), g.constant([0])]);
  const temb = g.linear(g.silu(g.linear(features, 320, 1280)), 1280, 1280);

  const channels = [320, 640, 1280, 1280];
  const heads = [5, 10, 20, 20];
  let h = g.conv('sample', 4, 320, 3);
  let current = 320;
  const skips: [string, number][] = [[h, current]];
  for (let block = 0; block < 4; block++) {
    const attention = block < 3;
    for (let layer = 0; layer < 2; layer++) {
      h = g.resnet(h, current, channels[block]!, temb);
      current = channels[block]!;
      if (attention) h = g.transformer(h, current, heads[block]!, 'encoder_hidden_states');
      skips.push([h, current]);
    }
    if (block < 3) {
      h = g.conv(h, current, current, 3, 2);
      skips.push([h, current]);
    }
  }
  h = g.resnet(h, 1280, 1280, temb);
  h = g.transformer(h, 1280, 20, 'encoder_hidden_states');
  h = g.resnet(h, 1280, 1280, temb);
  const upChannels = [1280, 1280, 640, 320];
  const upHeads = [0, 20, 10, 5];
  for (let block = 0; block < 4; block++) {
    for (let layer = 0; layer < 3; layer++) {
      const [skip, skipChannels] = skips.pop()!;
      h = g.resnet(g.op('Concat', [h, skip], { axis: 1 }), current + skipChannels, upChannels[block]!, temb);
      current = upChannels[block]!;
      if (upHeads[block]) h = g.transformer(h, current, upHeads[block]!, 'encoder_hidden_states');
    }
    if (block < 3) {
      const scales = g.constant([1, 1, 2, 2], 'float32');
      h = g.conv(g.op('Resize', [h, '', scales], { mode: 'nearest' }), current, current, 3);
    }
  }
  const out = g.conv(g.silu(g.groupNorm(h, 320)), 320, 4, 3);
  g.nodes.push({ op: 'Identity', inputs: [out], outputs: ['out_sample'] });
  return {
    name: 'unet',
    inputs: [
      { name: 'sample', type: 'float32', shape: ['batch_size', 4, 'height', 'width'] },
      { name: 'timestep', type: 'float32', shape: [] },
      { name: 'encoder_hidden_states', type: 'float32', shape: ['batch_size', 'sequence_length', 1024] },
    ],
    outputs: [{ name: 'out_sample', type: 'float32', shape: ['batch_size', 4, 'height', 'width'] }],
    initializers: g.initializers,
    nodes: g.nodes,
  };
}

const root = values.keep ?? mkdtempSync(join(tmpdir(), 'infera-unet-real-'));
try {
  // A pipeline folder around the full-size UNet: tiny text encoder widened to SD 2.x's 1024 (so the
  // cross-attention input is real-size), tiny VAE; then the real UNet replaces the tiny one.
  await ensureTinyDiffusionModel(root, { scheduler: 'euler', textHidden: 1024, vaeEncoder: false });
  const unetDir = join(root, 'unet');
  mkdirSync(unetDir, { recursive: true });
  let started = performance.now();
  const fd = openSync(join(unetDir, 'model.onnx_data'), 'w');
  const builder = new GraphBuilder(fd, 'model.onnx_data');
  const graph = buildUnet(builder);
  closeSync(fd);
  writeFileSync(join(unetDir, 'model.onnx'), writeOnnxModel(graph));
  const generateSeconds = (performance.now() - started) / 1000;
  console.error(`generated ${(builder.parameters / 1e6).toFixed(1)} M parameters, ${graph.nodes.length} nodes in ${generateSeconds.toFixed(1)} s`);

  started = performance.now();
  const pipeline = await DiffusionPipeline.load(root, { threads: Number(values.threads), executionProviders: ['cpu'] });
  const loadSeconds = (performance.now() - started) / 1000;
  console.error(`loaded in ${loadSeconds.toFixed(1)} s`);

  const size = Number(values.size);
  const latent = size / 8;
  const sample = new Float32Array(4 * latent * latent);
  for (let i = 0; i < sample.length; i++) sample[i] = Math.sin(i) * 0.5;
  const context = new Float32Array(77 * 1024);
  for (let i = 0; i < context.length; i++) context[i] = Math.cos(i) * 0.5;
  const session = pipeline.unet.session;
  const stepSeconds: number[] = [];
  for (let step = 0; step < Number(values.steps); step++) {
    const t0 = performance.now();
    const result = await session.run({
      sample: new ort.Tensor('float32', sample, [1, 4, latent, latent]),
      timestep: new ort.Tensor('float32', Float32Array.of(999 - step * 250), []),
      encoder_hidden_states: new ort.Tensor('float32', context, [1, 77, 1024]),
    });
    stepSeconds.push((performance.now() - t0) / 1000);
    const out = result.out_sample!.data as Float32Array;
    if (!Number.isFinite(out[0]!)) console.error('warning: non-finite UNet output (random weights); timing is still valid');
    console.error(`bare step ${step + 1}: ${stepSeconds.at(-1)!.toFixed(2)} s`);
  }

  // The whole pipeline (SD-Turbo style: no CFG), with time inside session.run accounted in the same run.
  let insideOrt = 0;
  for (const component of [pipeline.textEncoder, pipeline.unet, pipeline.vaeDecoder]) {
    const run = component.session.run.bind(component.session);
    (component.session as { run: unknown }).run = async (...args: Parameters<typeof run>) => {
      const t0 = performance.now();
      try {
        return await run(...args);
      } finally {
        insideOrt += (performance.now() - t0) / 1000;
      }
    };
  }
  const pipelineSteps = Number(values['pipeline-steps']);
  const generated = await pipeline.generate({ prompt: 'an island near sea', width: size, height: size, batchSize: 1, steps: pipelineSteps, guidanceScale: 0, seed: 1 });
  const glue = generated.seconds.total - generated.seconds.encode - insideOrt;
  console.error(`pipeline ${pipelineSteps} steps: ${generated.seconds.total.toFixed(2)} s`);

  const rss = process.memoryUsage().rss;
  console.log(JSON.stringify({
    size,
    threads: Number(values.threads),
    parametersMillions: +(builder.parameters / 1e6).toFixed(1),
    generateSeconds: +generateSeconds.toFixed(1),
    loadSeconds: +loadSeconds.toFixed(1),
    bareStepSeconds: stepSeconds.map((s) => +s.toFixed(2)),
    bestBareStepSeconds: +Math.min(...stepSeconds).toFixed(2),
    pipeline: {
      steps: pipelineSteps,
      totalSeconds: +generated.seconds.total.toFixed(2),
      insideOrtSeconds: +insideOrt.toFixed(2),
      pngEncodeSeconds: +generated.seconds.encode.toFixed(3),
      glueSeconds: +glue.toFixed(3),
      overheadPercent: +((glue / insideOrt) * 100).toFixed(2),
    },
    rssGiB: +(rss / 2 ** 30).toFixed(2),
  }, null, 2));
  await pipeline.dispose();
} finally {
  if (!values.keep) rmSync(root, { recursive: true, force: true });
}
