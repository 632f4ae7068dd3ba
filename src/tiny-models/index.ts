// Infera's generated test models. Everything here is computed from code and fixed seeds: no network,
// and the same bytes on every run, so files are only rewritten when the generator changes.
import { mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ensureGeneratedFiles, writeAtomically } from './generated-files.ts';
import { encodeBert, randomBertWeights, type BertConfig } from './bert.ts';
import { GgmlType } from './gguf-writer.ts';
import { encodeRandomChatModel } from './random-chat.ts';
import { encodeTinyChatModel } from './tiny-chat.ts';
import { encodeTinyReranker } from './tiny-rerank.ts';

export { FIM_TOKENS, TINY_CHAT_SCRIPT, TINY_CHAT_TRIGGERS, TINY_CHAT_MODES, type TinyChatMode } from './tiny-chat.ts';

export interface TinyModelPaths {
  /** Scripted qwen3 chat model (Qwen3 template → QwenChatWrapper); see TINY_CHAT_SCRIPT. */
  chat: string;
  /** The same model plus Qwen2.5-Coder's FIM tokens: fills in the middle with TINY_CHAT_SCRIPT.fimMiddle. */
  coder: string;
  /** BERT embedding model, mean pooling, 128 dimensions. */
  embedding: string;
  /** BERT reranker (cls head). */
  reranker: string;
}

export const TINY_MODEL_FILES = {
  chat: 'tiny-qwen3-chat.gguf',
  coder: 'tiny-qwen3-coder.gguf',
  embedding: 'tiny-bert-embed.gguf',
  reranker: 'tiny-bert-rerank.gguf',
} as const;

export const TINY_EMBEDDING_DIMENSIONS = 128;

const tinyBert: BertConfig = {
  name: 'infera-tiny-bert-embed',
  hidden: TINY_EMBEDDING_DIMENSIONS,
  layers: 2,
  heads: 4,
  feedForward: 256,
  contextLength: 512,
  reranker: false,
};

/** Fresh, uncached bytes of the tiny GGUF models. */
export function encodeTinyModels(): Record<keyof TinyModelPaths, Buffer> {
  return {
    chat: encodeTinyChatModel(),
    coder: encodeTinyChatModel({ fim: true }),
    embedding: encodeBert({ config: tinyBert, weights: randomBertWeights(101), matrixType: GgmlType.F32 }),
    reranker: encodeTinyReranker(),
  };
}

let tinyBytes: Record<keyof TinyModelPaths, Buffer> | undefined;

function tinyModelBytes(): Record<keyof TinyModelPaths, Buffer> {
  tinyBytes ??= encodeTinyModels();
  return tinyBytes;
}

/** Writes the tiny models into dir (created if needed) unless this generator already wrote them there. */
export async function ensureTinyModels(dir: string): Promise<TinyModelPaths> {
  await ensureGeneratedFiles(dir, 'tiny-models', () => {
    const bytes = tinyModelBytes();
    return (Object.keys(TINY_MODEL_FILES) as (keyof TinyModelPaths)[]).map((key) => [TINY_MODEL_FILES[key], bytes[key]]);
  });
  const paths = {} as TinyModelPaths;
  for (const key of Object.keys(TINY_MODEL_FILES) as (keyof TinyModelPaths)[]) paths[key] = join(dir, TINY_MODEL_FILES[key]);
  return paths;
}

export type BenchModelKind = 'chat-512x8' | 'chat-1024x16' | 'chat-512x8-vocab152k' | 'bert-384x12-embed' | 'bert-384x12-rerank';

/** Bumped whenever a generator's output changes, so stale files are never reused. */
const BENCH_VERSION = 1;
/** The chat models' own version: v2 writes only printable ASCII (`asciiOnly`). */
const CHAT_BENCH_VERSION = 2;

/** Qwen2/Qwen3's vocabulary size (padded), for the real-size-vocabulary bench model. */
export const QWEN_VOCAB_SIZE = 151_936;

/** Weight type of a benchmark model's matrices (chat models; BERT ones are always F16). */
export type BenchWeights = 'q8_0' | 'f16' | 'f32';
const benchWeightTypes: Record<BenchWeights, GgmlType> = { q8_0: GgmlType.Q8_0, f16: GgmlType.F16, f32: GgmlType.F32 };

/** chat-512x8's shape; its 152k-vocabulary twin differs only in the vocabulary. */
const chat512x8 = (weights: BenchWeights) => ({
  hidden: 512,
  layers: 8,
  heads: 8,
  headsKv: 8,
  feedForward: 2048,
  seed: 512,
  matrixType: benchWeightTypes[weights],
  endBias: 100,
  asciiOnly: true,
});

const benchModels: Record<BenchModelKind, { file: (weights: BenchWeights) => string; encode: (weights: BenchWeights) => Buffer }> = {
  'chat-512x8': {
    file: (weights) => `bench-qwen3-512x8-${weights}-v${CHAT_BENCH_VERSION}.gguf`,
    encode: (weights) => encodeRandomChatModel(chat512x8(weights)),
  },
  // chat-512x8 with Qwen's vocabulary size (generated filler words): the output layer and every sampler
  // then work over 152k logits per token, as on a real model, instead of the chat vocabulary's ~300.
  'chat-512x8-vocab152k': {
    file: (weights) => `bench-qwen3-512x8-vocab152k-${weights}-v${CHAT_BENCH_VERSION}.gguf`,
    encode: (weights) => encodeRandomChatModel({ ...chat512x8(weights), vocabSize: QWEN_VOCAB_SIZE }),
  },
  // Big enough (≈ 270 MB of Q8_0 weights) that decoding one stream is bound by memory bandwidth, the
  // regime in which llama.cpp's batching of sequences pays off.
  'chat-1024x16': {
    file: (weights) => `bench-qwen3-1024x16-${weights}-v${CHAT_BENCH_VERSION}.gguf`,
    encode: (weights) =>
      encodeRandomChatModel({
        hidden: 1024,
        layers: 16,
        heads: 16,
        headsKv: 8,
        feedForward: 4096,
        seed: 1024,
        matrixType: benchWeightTypes[weights],
        endBias: 100,
        asciiOnly: true,
      }),
  },
  'bert-384x12-embed': {
    file: () => `bench-bert-384x12-embed-f16-v${BENCH_VERSION}.gguf`,
    encode: () => encodeBert({ config: benchBert(false), weights: randomBertWeights(384), matrixType: GgmlType.F16 }),
  },
  'bert-384x12-rerank': {
    file: () => `bench-bert-384x12-rerank-f16-v${BENCH_VERSION}.gguf`,
    encode: () => encodeBert({ config: benchBert(true), weights: randomBertWeights(385), matrixType: GgmlType.F16 }),
  },
};

function benchBert(reranker: boolean): BertConfig {
  return {
    name: `infera-bench-bert-384x12-${reranker ? 'rerank' : 'embed'}`,
    hidden: 384,
    layers: 12,
    heads: 12,
    feedForward: 1536,
    contextLength: 512,
    reranker,
  };
}

/**
 * Writes a benchmark-size model (random seeded weights, same tokenizer/template as the tiny ones) into
 * dir unless it is already there, and returns its path. Generation takes a few seconds; files are
 * tens of MB, so they are written on demand and never committed.
 */
export async function ensureBenchModel(kind: BenchModelKind, dir: string, weights: BenchWeights = 'q8_0'): Promise<string> {
  const model = benchModels[kind];
  if (!model) throw new TypeError(`unknown bench model kind: ${String(kind)}`);
  if (!(weights in benchWeightTypes)) throw new TypeError(`unknown bench weight type: ${String(weights)}`);
  await mkdir(dir, { recursive: true });
  const path = join(dir, model.file(weights));
  // Files only appear through an atomic rename, so an existing one is complete.
  if (await stat(path).then((s) => s.isFile(), () => false)) return path;
  await writeAtomically(path, model.encode(weights));
  return path;
}
