// What a llama-cpp model takes once loaded, estimated before loading it (the registry's memory budget):
// the GGUF file (llama.cpp maps and uses all of its weights) plus the KV cache of its contexts,
// n_layer × n_ctx × (n_embd_k_gqa + n_embd_v_gqa) × 2 bytes (f16, llama.cpp's default cache type).
// Compute buffers and the runtime are left out: the estimate is a floor, and a model whose real use is
// known better sets `memory` in its entry.
import { statSync } from 'node:fs';
import type { LlamaCppModelConfig } from './config.ts';

const F16_BYTES = 2;

export async function estimateLlamaCppMemory(config: LlamaCppModelConfig): Promise<number> {
  const fileBytes = statSync(config.path).size;
  let metadata: Record<string, number | string>;
  try {
    metadata = (await (await import('./gguf-check.ts')).checkGgufFileOnce(config.path)).metadata;
  } catch {
    // A header the check refuses fails the load with its own message; the file's size is estimate enough.
    return fileBytes;
  }
  const arch = metadata['general.architecture'];
  const number = (key: string) => {
    const value = typeof arch === 'string' ? metadata[`${arch}.${key}`] : undefined;
    return typeof value === 'number' && value > 0 ? value : undefined;
  };
  const layers = number('block_count');
  const embedding = number('embedding_length');
  const heads = number('attention.head_count');
  // Models without attention (Mamba, RWKV) or with per-layer arrays the header check does not read: file only.
  if (layers === undefined || embedding === undefined || heads === undefined) return fileBytes;
  const kvHeads = number('attention.head_count_kv') ?? heads;
  const keyLength = number('attention.key_length') ?? Math.floor(embedding / heads);
  const valueLength = number('attention.value_length') ?? Math.floor(embedding / heads);
  const trained = number('context_length') ?? config.llamaCpp.contextSize;
  const perSequence = Math.min(config.llamaCpp.contextSize, trained);
  // Chat: one context holding every sequence; embedding and rerank: a pool of one-sequence contexts.
  const cells = config.type === 'chat' ? perSequence * config.llamaCpp.sequences : perSequence * config.llamaCpp.contexts;
  return fileBytes + layers * cells * kvHeads * (keyLength + valueLength) * F16_BYTES;
}
