// Qwen3-architecture GGUF assembly: hyper-parameter keys and tensor names/shapes as llama.cpp's
// src/models/qwen3.cpp loads them. The weights come from a caller-supplied function, so the same code
// writes the crafted scripted model and random benchmark models.
import { encodeGguf, GgmlType, gguf, type GgufMetadataValue, type GgufTensor } from './gguf-writer.ts';
import { mulberry32, randomUniform, seedFromName } from './random.ts';

export interface Qwen3Config {
  name: string;
  vocabSize: number;
  hidden: number;
  layers: number;
  heads: number;
  headsKv: number;
  headDim: number;
  feedForward: number;
  contextLength: number;
  ropeFreqBase: number;
  rmsEps: number;
}

export interface TensorSpec {
  name: string;
  dims: number[];
  /** Norm vectors must stay F32; matrices may be quantized. */
  isNorm: boolean;
}

export function qwen3TensorSpecs(c: Qwen3Config): TensorSpec[] {
  const specs: TensorSpec[] = [
    { name: 'token_embd.weight', dims: [c.hidden, c.vocabSize], isNorm: false },
    { name: 'output_norm.weight', dims: [c.hidden], isNorm: true },
    { name: 'output.weight', dims: [c.hidden, c.vocabSize], isNorm: false },
  ];
  for (let i = 0; i < c.layers; i++) {
    const p = `blk.${i}.`;
    specs.push(
      { name: `${p}attn_norm.weight`, dims: [c.hidden], isNorm: true },
      { name: `${p}attn_q.weight`, dims: [c.hidden, c.heads * c.headDim], isNorm: false },
      { name: `${p}attn_k.weight`, dims: [c.hidden, c.headsKv * c.headDim], isNorm: false },
      { name: `${p}attn_v.weight`, dims: [c.hidden, c.headsKv * c.headDim], isNorm: false },
      { name: `${p}attn_output.weight`, dims: [c.heads * c.headDim, c.hidden], isNorm: false },
      { name: `${p}attn_q_norm.weight`, dims: [c.headDim], isNorm: true },
      { name: `${p}attn_k_norm.weight`, dims: [c.headDim], isNorm: true },
      { name: `${p}ffn_norm.weight`, dims: [c.hidden], isNorm: true },
      { name: `${p}ffn_gate.weight`, dims: [c.hidden, c.feedForward], isNorm: false },
      { name: `${p}ffn_up.weight`, dims: [c.hidden, c.feedForward], isNorm: false },
      { name: `${p}ffn_down.weight`, dims: [c.feedForward, c.hidden], isNorm: false },
    );
  }
  return specs;
}

export function qwen3Metadata(c: Qwen3Config): Record<string, GgufMetadataValue> {
  return {
    'general.architecture': 'qwen3',
    'general.name': c.name,
    'general.license': 'MIT',
    'qwen3.context_length': gguf.u32(c.contextLength),
    'qwen3.embedding_length': gguf.u32(c.hidden),
    'qwen3.block_count': gguf.u32(c.layers),
    'qwen3.feed_forward_length': gguf.u32(c.feedForward),
    'qwen3.attention.head_count': gguf.u32(c.heads),
    'qwen3.attention.head_count_kv': gguf.u32(c.headsKv),
    'qwen3.attention.key_length': gguf.u32(c.headDim),
    'qwen3.attention.value_length': gguf.u32(c.headDim),
    'qwen3.rope.freq_base': gguf.f32(c.ropeFreqBase),
    'qwen3.attention.layer_norm_rms_epsilon': gguf.f32(c.rmsEps),
  };
}

export interface Qwen3Build {
  config: Qwen3Config;
  tokenizer: Record<string, GgufMetadataValue>;
  chatTemplate?: string;
  /** Values for one tensor, row-major with dims[0] fastest. */
  weights: (spec: TensorSpec) => Float32Array;
  matrixType: GgmlType;
}

export function encodeQwen3(build: Qwen3Build): Buffer {
  const metadata: Record<string, GgufMetadataValue> = {
    ...qwen3Metadata(build.config),
    ...build.tokenizer,
  };
  if (build.chatTemplate !== undefined) metadata['tokenizer.chat_template'] = build.chatTemplate;
  const tensors: GgufTensor[] = qwen3TensorSpecs(build.config).map((spec) => ({
    name: spec.name,
    dims: spec.dims,
    type: spec.isNorm ? GgmlType.F32 : build.matrixType,
    data: build.weights(spec),
  }));
  return encodeGguf({ metadata, tensors });
}

/**
 * Random weights scaled like a trained model's init (uniform ±1/sqrt(fan-in)); norms are 1. Seeded
 * per tensor name, so one tensor's values do not depend on the order or size of the others.
 */
export function randomQwen3Weights(seed: number): (spec: TensorSpec) => Float32Array {
  return (spec) => {
    const length = spec.dims.reduce((a, b) => a * b, 1);
    if (spec.isNorm) return new Float32Array(length).fill(1);
    const fanIn = spec.name === 'token_embd.weight' ? 1 : spec.dims[0]!;
    return randomUniform(mulberry32(seedFromName(spec.name, seed)), length, 1 / Math.sqrt(fanIn));
  };
}
