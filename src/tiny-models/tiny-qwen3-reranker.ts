// A tiny Qwen3-Reranker-style GGUF: the layout llama.cpp's converter (conversion/qwen.py, Qwen3Model with
// is_rerank) writes for Qwen/Qwen3-Reranker-*, with random seeded weights. What makes it a reranker:
// - `qwen3.pooling_type` = RANK and `qwen3.classifier.output_labels` = ["yes", "no"] (llama.cpp sizes
//   cls.output from the label count; without them it expects one row and refuses the tensor);
// - `cls.output.weight`: the "yes" and "no" rows of the LM head, in that order, so llama.cpp's softmax
//   over the two outputs (llama-graph.cpp, RANK pooling, qwen3 only) gives P(yes) at the last token;
// - `tokenizer.chat_template.rerank` (listed in `tokenizer.chat_templates`) with the converter's text,
//   which hard-codes one instruction before `{query}`; the model's ordinary chat template stays too.
// Like Qwen3-Reranker-0.6B the embeddings are tied: the converter then writes no output.weight
// (llama.cpp falls back to token_embd) and takes the cls rows from the embedding matrix.
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildChatVocab, chatTokenizerMetadata } from './chat-vocab.ts';
import { encodeGguf, GgmlType, gguf, type GgufMetadataValue, type GgufTensor } from './gguf-writer.ts';
import { qwen3Metadata, qwen3TensorSpecs, randomQwen3Weights, type Qwen3Config } from './qwen3.ts';
import { QWEN3_CHAT_TEMPLATE } from './random-chat.ts';

/** The instruction the converter bakes into the rerank template. */
export const QWEN3_RERANK_DEFAULT_INSTRUCTION = 'Given a web search query, retrieve relevant passages that answer the query';

/** Verbatim the template conversion/qwen.py writes for Qwen3 rerankers. */
export const QWEN3_RERANK_TEMPLATE =
  '<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct provided. ' +
  'Note that the answer can only be "yes" or "no".<|im_end|>\n' +
  `<|im_start|>user\n<Instruct>: ${QWEN3_RERANK_DEFAULT_INSTRUCTION}\n<Query>: {query}\n<Document>: {document}<|im_end|>\n` +
  '<|im_start|>assistant\n<think>\n\n</think>\n\n';

export const TINY_QWEN3_RERANKER_FILE = 'tiny-qwen3-reranker.gguf';

/** llama_pooling_type LLAMA_POOLING_TYPE_RANK. */
const POOLING_RANK = 4;
const SEED = 3_000;
/**
 * Token embeddings (and so the yes/no head) drawn from ±EMBED_SCALE instead of ±1: the head's logits
 * are dot products with an RMS-normed state of norm √hidden, and at ±1 their difference often exceeds
 * 17, where float32 softmax returns exactly 0 or 1 and every input gets the same score.
 */
const EMBED_SCALE = 0.05;

/** Words with merges (and space-prefixed twins), so prompts are not all single bytes; "yes"/"no" must be tokens. */
const WORDS = ['yes', 'no', 'the', 'cat', 'dog', 'fish', 'house', 'find', 'query', 'document', 'web', 'search'];

const config: Qwen3Config = {
  name: 'infera-tiny-qwen3-reranker',
  vocabSize: 0, // set from the vocabulary below
  hidden: 64,
  layers: 2,
  heads: 4,
  headsKv: 2,
  headDim: 16,
  feedForward: 128,
  contextLength: 1024,
  ropeFreqBase: 1_000_000,
  rmsEps: 1e-6,
};

export function encodeTinyQwen3Reranker(): Buffer {
  const chatVocab = buildChatVocab(WORDS);
  const { vocab } = chatVocab;
  const c: Qwen3Config = { ...config, vocabSize: vocab.size };
  const random = randomQwen3Weights(SEED);
  const tensors: GgufTensor[] = [];
  let embedding: Float32Array | undefined;
  for (const spec of qwen3TensorSpecs(c)) {
    if (spec.name === 'output.weight') continue; // tied, as in Qwen3-Reranker-0.6B
    const data = random(spec);
    if (spec.name === 'token_embd.weight') {
      for (let i = 0; i < data.length; i++) data[i] *= EMBED_SCALE;
      embedding = data;
    }
    tensors.push({ name: spec.name, dims: spec.dims, type: GgmlType.F32, data });
  }
  // The converter's _get_cls_out_tensor: stack([lm_head["yes"], lm_head["no"]]).
  const row = (id: number) => embedding!.subarray(id * c.hidden, (id + 1) * c.hidden);
  const head = new Float32Array(2 * c.hidden);
  head.set(row(vocab.id('yes')), 0);
  head.set(row(vocab.id('no')), c.hidden);
  tensors.push({ name: 'cls.output.weight', dims: [c.hidden, 2], type: GgmlType.F32, data: head });

  const metadata: Record<string, GgufMetadataValue> = {
    ...qwen3Metadata(c),
    'qwen3.pooling_type': gguf.u32(POOLING_RANK),
    'qwen3.classifier.output_labels': ['yes', 'no'],
    ...chatTokenizerMetadata(chatVocab),
    'tokenizer.chat_template': QWEN3_CHAT_TEMPLATE,
    'tokenizer.chat_templates': ['rerank'],
    'tokenizer.chat_template.rerank': QWEN3_RERANK_TEMPLATE,
  };
  return encodeGguf({ metadata, tensors });
}

/** Writes the model into dir unless an identical file is there; returns its path. */
export async function ensureTinyQwen3Reranker(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  const path = join(dir, TINY_QWEN3_RERANKER_FILE);
  const bytes = encodeTinyQwen3Reranker();
  const existing = await readFile(path).catch(() => undefined);
  if (!existing?.equals(bytes)) {
    // Test files run in parallel processes: a reader must never see a half-written file.
    const temporary = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
    await writeFile(temporary, bytes);
    await rename(temporary, path);
  }
  return path;
}
