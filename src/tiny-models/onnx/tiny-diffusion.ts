// Generates a tiny random-weight Stable Diffusion pipeline in Hugging Face optimum's ONNX folder layout,
// so the real pipeline code (tokenizer → text encoder → UNet loop → VAE) runs in tests with no download.
// The graphs are trivially small, but every file, input/output name, dtype and rank matches what
// optimum exports, in both export generations (see ENGINE-NOTES.md):
//   legacy  (optimum ≤ 1.23): input_ids int32, timestep int64 [1], vae_encoder → latent_sample
//   current (optimum ≥ 1.24): input_ids int64, timestep float32 scalar, vae_encoder → latent_parameters
// Weights come from a seeded PRNG, so regeneration is byte-identical.
import { ensureGeneratedFiles } from '../generated-files.ts';
import { mulberry32 as prng } from '../random.ts';
import { writeOnnxModel, type GraphSpec, type Initializer } from './onnx-writer.ts';

export type TinySchedulerKind = 'euler' | 'euler-ancestral' | 'ddim' | 'lcm' | 'pndm';

export interface TinyDiffusionVariant {
  export?: 'legacy' | 'current';
  scheduler?: TinySchedulerKind;
  /** LCM-distilled UNet with a `timestep_cond` [B, 256] input. Default: true for the lcm scheduler. */
  timestepCond?: boolean;
  /** Include vae_encoder/ (needed for img2img). Default true. */
  vaeEncoder?: boolean;
  /**
   * Benchmarks only: a heavier UNet body (hidden channels × 3×3 conv layers) so that ORT does
   * realistic work per step and the pipeline's own overhead can be measured against it.
   */
  unetBody?: { channels: number; layers: number };
  /** float16 inputs and outputs on every model (as `optimum-cli export onnx --dtype fp16` writes). */
  fp16?: boolean;
  /** Benchmarks only: text encoder width (cross-attention dim), e.g. 1024 to pair with a full-size SD 2.x UNet. */
  textHidden?: number;
  /**
   * The classic layout (diffusers' older conversion script, some optimum exports): a float32 timestep
   * of one value, declared `[1]` ('fixed') or with a symbolic dim ('dynamic'), reshaped to [1, 1] inside
   * the graph as a trace with one timestep bakes it, so feeding one value per batch row fails. With
   * `export: 'legacy'` the timestep is int64, as optimum ≤ 1.23 writes it.
   */
  classicTimestep?: 'fixed' | 'dynamic';
  /** A UNet traced at batch 1 with static shapes: `sample` and `encoder_hidden_states` take one row. */
  staticBatch?: boolean;
}

/** Re-types a graph's float32 inputs/outputs as float16, with Casts at the edges (weights stay fp32). */
function withHalfPrecisionIo(graph: GraphSpec): GraphSpec {
  const rename = new Map<string, string>();
  const head: GraphSpec['nodes'] = [];
  const tail: GraphSpec['nodes'] = [];
  for (const input of graph.inputs)
    if (input.type === 'float32') {
      input.type = 'float16';
      rename.set(input.name, `${input.name}_f32`);
      head.push({ op: 'Cast', inputs: [input.name], outputs: [`${input.name}_f32`], attributes: { to: 1 } });
    }
  const outputs = new Map<string, string>();
  for (const output of graph.outputs)
    if (output.type === 'float32') {
      output.type = 'float16';
      outputs.set(output.name, `${output.name}_f32`);
      tail.push({ op: 'Cast', inputs: [`${output.name}_f32`], outputs: [output.name], attributes: { to: 10 } });
    }
  const nodes = graph.nodes.map((node) => ({
    ...node,
    inputs: node.inputs.map((name) => rename.get(name) ?? outputs.get(name) ?? name),
    outputs: node.outputs.map((name) => outputs.get(name) ?? name),
  }));
  return { ...graph, nodes: [...head, ...nodes, ...tail] };
}

const TINY_HIDDEN = 32; // text encoder width (768 in SD 1.x, 1024 in SD 2.x)
const MAX_LENGTH = 77;
const LATENT_CHANNELS = 4;
const TIME_COND_DIM = 256;

// A small corpus with the words tests and the seed's curl example use, so the tiny vocab holds whole-word
// tokens for them (like CLIP's) while other words fall back to sub-word and byte pieces.
const CORPUS =
  'a photo of an astronaut riding a horse on the moon . an island near sea , with seagulls , moon shining ' +
  'over the sea , light house , boats in the background , fish flying over the sea . a cat and a dog ' +
  'sitting in the garden . portrait painting of a red fox , high quality , detailed , blurry , low quality ' +
  'watercolor landscape with mountains and rivers at sunset';

/** GPT-2/CLIP's reversible byte → printable unicode map (bytes that are printable map to themselves). */
export function bytesToUnicode(): string[] {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const map: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    if (printable.includes(b)) map[b] = String.fromCharCode(b);
    else map[b] = String.fromCharCode(256 + extra++);
  }
  return map;
}

/** Byte order CLIP's vocab uses for its first 256 ids: the printable bytes first, then the rest. */
function clipByteOrder(): number[] {
  const order: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) order.push(b);
  for (let b = 0xa1; b <= 0xac; b++) order.push(b);
  for (let b = 0xae; b <= 0xff; b++) order.push(b);
  for (let b = 0; b < 256; b++) if (!order.includes(b)) order.push(b);
  return order;
}

/** Learns BPE merges on the corpus the way CLIP's were learned (most frequent pair first; ties by text). */
function learnMerges(corpus: string, maxMerges: number): [string, string][] {
  const byteMap = bytesToUnicode();
  const counts = new Map<string, number>();
  for (const word of corpus.toLowerCase().split(/\s+/).filter(Boolean)) counts.set(word, (counts.get(word) ?? 0) + 1);
  const words = [...counts.entries()].map(([word, count]) => {
    const chars = [...new TextEncoder().encode(word)].map((b) => byteMap[b]!);
    chars[chars.length - 1] += '</w>';
    return { symbols: chars, count };
  });
  const merges: [string, string][] = [];
  while (merges.length < maxMerges) {
    const pairs = new Map<string, number>();
    for (const { symbols, count } of words)
      for (let i = 0; i < symbols.length - 1; i++) {
        const key = `${symbols[i]} ${symbols[i + 1]}`;
        pairs.set(key, (pairs.get(key) ?? 0) + count);
      }
    if (pairs.size === 0) break;
    let best = '';
    let bestCount = 0;
    for (const [key, count] of pairs)
      if (count > bestCount || (count === bestCount && key < best)) [best, bestCount] = [key, count];
    const [left, right] = best.split(' ') as [string, string];
    merges.push([left, right]);
    for (const word of words) {
      const next: string[] = [];
      for (let i = 0; i < word.symbols.length; i++) {
        if (i < word.symbols.length - 1 && word.symbols[i] === left && word.symbols[i + 1] === right) {
          next.push(left + right);
          i++;
        } else next.push(word.symbols[i]!);
      }
      word.symbols = next;
    }
  }
  return merges;
}

function tokenizerFiles(padToken: string): Record<string, string> {
  const byteMap = bytesToUnicode();
  const vocab: Record<string, number> = {};
  const order = clipByteOrder();
  for (const b of order) vocab[byteMap[b]!] = Object.keys(vocab).length;
  for (const b of order) vocab[`${byteMap[b]}</w>`] = Object.keys(vocab).length;
  const merges = learnMerges(CORPUS, 400);
  for (const [left, right] of merges) vocab[left + right] ??= Object.keys(vocab).length;
  vocab['<|startoftext|>'] = Object.keys(vocab).length;
  vocab['<|endoftext|>'] = Object.keys(vocab).length;
  const special = {
    bos_token: '<|startoftext|>',
    eos_token: '<|endoftext|>',
    pad_token: padToken,
    unk_token: '<|endoftext|>',
  };
  return {
    'tokenizer/vocab.json': JSON.stringify(vocab),
    'tokenizer/merges.txt': `${['#version: 0.2', ...merges.map(([l, r]) => `${l} ${r}`)].join('\n')}\n`,
    'tokenizer/special_tokens_map.json': JSON.stringify(special, null, 2),
    'tokenizer/tokenizer_config.json': JSON.stringify(
      { ...special, model_max_length: MAX_LENGTH, do_lower_case: true, tokenizer_class: 'CLIPTokenizer' },
      null,
      2,
    ),
  };
}

function randomWeights(random: () => number, name: string, dims: number[], scale: number): Initializer {
  const count = dims.reduce((a, b) => a * b, 1);
  // Round to float32-exact values through Math.fround so the writer's output never depends on rounding.
  const values = Array.from({ length: count }, () => Math.fround((random() * 2 - 1) * scale));
  return { name, type: 'float32', dims, values };
}

function textEncoderGraph(random: () => number, vocabSize: number, idType: 'int32' | 'int64', HIDDEN: number): GraphSpec {
  return {
    name: 'text_encoder',
    inputs: [{ name: 'input_ids', type: idType, shape: ['batch_size', 'sequence_length'] }],
    outputs: [
      { name: 'last_hidden_state', type: 'float32', shape: ['batch_size', 'sequence_length', HIDDEN] },
      { name: 'pooler_output', type: 'float32', shape: ['batch_size', HIDDEN] },
    ],
    initializers: [
      randomWeights(random, 'token_embedding', [vocabSize, HIDDEN], 1),
      randomWeights(random, 'position_embedding', [MAX_LENGTH, HIDDEN], 0.2),
      randomWeights(random, 'projection', [HIDDEN, HIDDEN], 0.4),
    ],
    nodes: [
      { op: 'Gather', inputs: ['token_embedding', 'input_ids'], outputs: ['tokens'], attributes: { axis: 0 } },
      { op: 'Add', inputs: ['tokens', 'position_embedding'], outputs: ['embedded'] },
      { op: 'MatMul', inputs: ['embedded', 'projection'], outputs: ['projected'] },
      { op: 'Tanh', inputs: ['projected'], outputs: ['last_hidden_state'] },
      {
        op: 'ReduceMean',
        inputs: ['last_hidden_state'],
        outputs: ['pooler_output'],
        attributes: { axes: [1], keepdims: 0 },
      },
    ],
  };
}

function unetGraph(random: () => number, legacy: boolean, timestepCond: boolean, HIDDEN: number, variant: TinyDiffusionVariant): GraphSpec {
  const body = variant.unetBody;
  const batch = variant.staticBatch ? 1 : 'batch_size';
  const classic = variant.classicTimestep;
  const timestep: GraphSpec['inputs'][number] = classic
    ? { name: 'timestep', type: legacy ? 'int64' : 'float32', shape: [classic === 'fixed' ? 1 : 'steps'] }
    : legacy
      ? { name: 'timestep', type: 'int64', shape: [1] }
      : { name: 'timestep', type: 'float32', shape: [] };
  const graph: GraphSpec = {
    name: 'unet',
    inputs: [
      { name: 'sample', type: 'float32', shape: [batch, LATENT_CHANNELS, 'height', 'width'] },
      timestep,
      { name: 'encoder_hidden_states', type: 'float32', shape: [batch, 'sequence_length', HIDDEN] },
    ],
    outputs: [{ name: 'out_sample', type: 'float32', shape: ['batch_size', LATENT_CHANNELS, 'height', 'width'] }],
    initializers: [
      randomWeights(random, 'conv.weight', [LATENT_CHANNELS, LATENT_CHANNELS, 3, 3], 0.5),
      randomWeights(random, 'conv.bias', [LATENT_CHANNELS], 0.1),
      randomWeights(random, 'context.weight', [HIDDEN, LATENT_CHANNELS], 1),
      randomWeights(random, 'time.weight', [1, LATENT_CHANNELS, 1, 1], 1),
      { name: 'time.scale', type: 'float32', dims: [], values: [0.001] },
      { name: 'unsqueeze.axes', type: 'int64', dims: [2], values: [2, 3] },
    ],
    nodes: [
      { op: 'Cast', inputs: ['timestep'], outputs: ['timestep_float'], attributes: { to: 1 } },
      { op: 'Mul', inputs: ['timestep_float', 'time.scale'], outputs: ['time_scaled'] },
      { op: 'Mul', inputs: ['time_scaled', 'time.weight'], outputs: ['time_embedding'] },
      {
        op: 'ReduceMean',
        inputs: ['encoder_hidden_states'],
        outputs: ['context_mean'],
        attributes: { axes: [1], keepdims: 0 },
      },
      { op: 'MatMul', inputs: ['context_mean', 'context.weight'], outputs: ['context_channels'] },
      {
        op: 'Conv',
        inputs: ['sample', 'conv.weight', 'conv.bias'],
        outputs: ['conv_out'],
        attributes: { pads: [1, 1, 1, 1], kernel_shape: [3, 3] },
      },
    ],
  };
  if (classic) {
    graph.initializers.push({ name: 'timestep.shape', type: 'int64', dims: [2], values: [1, 1] });
    graph.nodes.unshift({ op: 'Reshape', inputs: ['timestep', 'timestep.shape'], outputs: ['timestep_1x1'] });
    graph.nodes[1] = { ...graph.nodes[1]!, inputs: ['timestep_1x1'] };
  }
  if (body) {
    // sample → C channels → layers × (3×3 conv, tanh) → 4 channels, replacing the single conv.
    const conv = graph.nodes.pop()!;
    const scale = (fanIn: number) => 1 / Math.sqrt(fanIn);
    const c = body.channels;
    graph.initializers.push(randomWeights(random, 'body.in.weight', [c, LATENT_CHANNELS, 3, 3], scale(LATENT_CHANNELS * 9)));
    graph.nodes.push(
      { op: 'Conv', inputs: ['sample', 'body.in.weight'], outputs: ['body_0_pre'], attributes: { pads: [1, 1, 1, 1], kernel_shape: [3, 3] } },
      { op: 'Tanh', inputs: ['body_0_pre'], outputs: ['body_0'] },
    );
    for (let l = 1; l <= body.layers; l++) {
      graph.initializers.push(randomWeights(random, `body.${l}.weight`, [c, c, 3, 3], scale(c * 9)));
      graph.nodes.push(
        { op: 'Conv', inputs: [`body_${l - 1}`, `body.${l}.weight`], outputs: [`body_${l}_pre`], attributes: { pads: [1, 1, 1, 1], kernel_shape: [3, 3] } },
        { op: 'Tanh', inputs: [`body_${l}_pre`], outputs: [`body_${l}`] },
      );
    }
    graph.initializers.push(randomWeights(random, 'body.out.weight', [LATENT_CHANNELS, c, 3, 3], scale(c * 9)));
    graph.nodes.push({ ...conv, inputs: [`body_${body.layers}`, 'body.out.weight', 'conv.bias'] });
  }
  let context = 'context_channels';
  if (timestepCond) {
    graph.inputs.push({ name: 'timestep_cond', type: 'float32', shape: ['batch_size', TIME_COND_DIM] });
    graph.initializers.push(randomWeights(random, 'cond.weight', [TIME_COND_DIM, LATENT_CHANNELS], 0.1));
    graph.nodes.push(
      { op: 'MatMul', inputs: ['timestep_cond', 'cond.weight'], outputs: ['cond_channels'] },
      { op: 'Add', inputs: ['context_channels', 'cond_channels'], outputs: ['context_with_cond'] },
    );
    context = 'context_with_cond';
  }
  graph.nodes.push(
    { op: 'Unsqueeze', inputs: [context, 'unsqueeze.axes'], outputs: ['context_map'] },
    { op: 'Add', inputs: ['conv_out', 'context_map'], outputs: ['with_context'] },
    { op: 'Add', inputs: ['with_context', 'time_embedding'], outputs: ['with_time'] },
    { op: 'Tanh', inputs: ['with_time'], outputs: ['out_sample'] },
  );
  return graph;
}

function vaeDecoderGraph(random: () => number): GraphSpec {
  return {
    name: 'vae_decoder',
    inputs: [{ name: 'latent_sample', type: 'float32', shape: ['batch_size', LATENT_CHANNELS, 'latent_height', 'latent_width'] }],
    outputs: [{ name: 'sample', type: 'float32', shape: ['batch_size', 3, 'height', 'width'] }],
    initializers: [
      randomWeights(random, 'up.weight', [LATENT_CHANNELS, 3, 8, 8], 0.3),
      randomWeights(random, 'up.bias', [3], 0.1),
    ],
    nodes: [
      {
        op: 'ConvTranspose',
        inputs: ['latent_sample', 'up.weight', 'up.bias'],
        outputs: ['upsampled'],
        attributes: { strides: [8, 8], kernel_shape: [8, 8] },
      },
      { op: 'Tanh', inputs: ['upsampled'], outputs: ['sample'] },
    ],
  };
}

function vaeEncoderGraph(random: () => number, legacy: boolean): GraphSpec {
  // Current exports return the diagonal Gaussian's parameters (mean ‖ logvar, 8 channels); the legacy
  // name carried 4 channels. The engine takes the first 4 channels (the mean) either way.
  const channels = legacy ? LATENT_CHANNELS : LATENT_CHANNELS * 2;
  const output = legacy ? 'latent_sample' : 'latent_parameters';
  return {
    name: 'vae_encoder',
    inputs: [{ name: 'sample', type: 'float32', shape: ['batch_size', 3, 'height', 'width'] }],
    outputs: [{ name: output, type: 'float32', shape: ['batch_size', channels, 'latent_height', 'latent_width'] }],
    initializers: [
      randomWeights(random, 'down.weight', [channels, 3, 8, 8], 0.05),
      randomWeights(random, 'down.bias', [channels], 0.1),
    ],
    nodes: [
      {
        op: 'Conv',
        inputs: ['sample', 'down.weight', 'down.bias'],
        outputs: [output],
        attributes: { strides: [8, 8], kernel_shape: [8, 8] },
      },
    ],
  };
}

function schedulerConfig(kind: TinySchedulerKind): Record<string, unknown> {
  const common = {
    num_train_timesteps: 1000,
    beta_start: 0.00085,
    beta_end: 0.012,
    beta_schedule: 'scaled_linear',
    prediction_type: 'epsilon',
    trained_betas: null,
  };
  switch (kind) {
    case 'euler': // SD-Turbo's
      return { _class_name: 'EulerDiscreteScheduler', ...common, interpolation_type: 'linear', steps_offset: 1, timestep_spacing: 'trailing', use_karras_sigmas: false };
    case 'euler-ancestral':
      return { _class_name: 'EulerAncestralDiscreteScheduler', ...common, steps_offset: 1, timestep_spacing: 'leading' };
    case 'ddim': // SD 2.1's
      return { _class_name: 'DDIMScheduler', ...common, clip_sample: false, set_alpha_to_one: false, steps_offset: 1, timestep_spacing: 'leading' };
    case 'lcm':
      return { _class_name: 'LCMScheduler', ...common, clip_sample: false, set_alpha_to_one: true, steps_offset: 1, original_inference_steps: 50, timestep_scaling: 10, timestep_spacing: 'leading' };
    case 'pndm': // SD 1.5's, which the engine replaces with Euler
      return { _class_name: 'PNDMScheduler', ...common, set_alpha_to_one: false, skip_prk_steps: true, steps_offset: 1 };
  }
}

/** All files of the tiny pipeline as bytes, keyed by relative path. */
export function tinyDiffusionFiles(variant: TinyDiffusionVariant = {}): Map<string, Uint8Array> {
  const legacy = variant.export === 'legacy';
  const scheduler = variant.scheduler ?? 'euler';
  const timestepCond = variant.timestepCond ?? scheduler === 'lcm';
  const withEncoder = variant.vaeEncoder ?? true;
  const HIDDEN = variant.textHidden ?? TINY_HIDDEN;
  const files = new Map<string, Uint8Array>();
  const text = (path: string, content: string) => files.set(path, new TextEncoder().encode(content));
  const json = (path: string, value: unknown) => text(path, `${JSON.stringify(value, null, 2)}\n`);

  // SD 1.x pads with <|endoftext|>, SD 2.x with "!": alternate with the export generation to cover both.
  const tokenizer = tokenizerFiles(legacy ? '<|endoftext|>' : '!');
  for (const [path, content] of Object.entries(tokenizer)) text(path, content);
  const vocabSize = Object.keys(JSON.parse(tokenizer['tokenizer/vocab.json']!)).length;

  json('model_index.json', {
    _class_name: timestepCond ? 'LatentConsistencyModelPipeline' : 'StableDiffusionPipeline',
    _diffusers_version: '0.30.0',
    feature_extractor: [null, null],
    requires_safety_checker: false,
    safety_checker: [null, null],
    scheduler: ['diffusers', String(schedulerConfig(scheduler)._class_name)],
    text_encoder: ['transformers', 'CLIPTextModel'],
    tokenizer: ['transformers', 'CLIPTokenizer'],
    unet: ['diffusers', 'UNet2DConditionModel'],
    vae: ['diffusers', 'AutoencoderKL'],
    _infera_tiny: 'random-weight test pipeline generated by infera; produces noise-like images',
  });
  json('scheduler/scheduler_config.json', schedulerConfig(scheduler));
  json('text_encoder/config.json', { architectures: ['CLIPTextModel'], hidden_size: HIDDEN, max_position_embeddings: MAX_LENGTH, vocab_size: vocabSize });
  json('unet/config.json', {
    _class_name: 'UNet2DConditionModel',
    cross_attention_dim: HIDDEN,
    in_channels: LATENT_CHANNELS,
    out_channels: LATENT_CHANNELS,
    sample_size: 8,
    time_cond_proj_dim: timestepCond ? TIME_COND_DIM : null,
  });
  const vaeConfig = { _class_name: 'AutoencoderKL', latent_channels: LATENT_CHANNELS, scaling_factor: 0.18215, sample_size: 64 };
  json('vae_decoder/config.json', vaeConfig);

  // Separate streams per component, so adding one never changes another's weights.
  const write = (graph: GraphSpec) => writeOnnxModel(variant.fp16 ? withHalfPrecisionIo(graph) : graph);
  files.set('text_encoder/model.onnx', write(textEncoderGraph(prng(1), vocabSize, legacy ? 'int32' : 'int64', HIDDEN)));
  files.set('unet/model.onnx', write(unetGraph(prng(2), legacy, timestepCond, HIDDEN, variant)));
  files.set('vae_decoder/model.onnx', write(vaeDecoderGraph(prng(3))));
  if (withEncoder) {
    json('vae_encoder/config.json', vaeConfig);
    files.set('vae_encoder/model.onnx', write(vaeEncoderGraph(prng(4), legacy)));
  }
  return files;
}

/**
 * Writes the tiny pipeline into `dir` (creating it) unless this generator already wrote this variant
 * there, and returns `dir`. Safe to call on every start and in every test.
 */
export async function ensureTinyDiffusionModel(dir: string, variant: TinyDiffusionVariant = {}): Promise<string> {
  await ensureGeneratedFiles(dir, { tinyDiffusion: variant }, () => tinyDiffusionFiles(variant));
  return dir;
}
