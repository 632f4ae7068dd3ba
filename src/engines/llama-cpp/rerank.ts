// GGUF cross-encoder rerankers through node-llama-cpp: BERT/XLM-R models with a classification head
// (bge-reranker-v2-m3 style; input `[CLS] query [SEP] document`, score = sigmoid(logit)) and Qwen3-Reranker
// style decoders whose GGUF carries a `chat_template.rerank` (llama.cpp already returns a probability).
//
// Long documents are split here, not by node-llama-cpp, so that `max_chunks_per_doc` and
// `overlap_tokens` mean what SiliconFlow documents: chunks of document tokens that fit next to the
// query in one context, consecutive chunks sharing `overlap_tokens` tokens; a document scores its best chunk.
import type { LlamaModel, LlamaRankingContext, Token } from 'node-llama-cpp';
import type { ModelConfig } from '../../config/schema.ts';
import { badRequest, ClientGoneError } from '../../errors/index.ts';
import type { LoadedModel, LoadProgress, RerankCallOptions, RerankModel, RerankResult } from '../../spec/index.ts';
import { DEFAULT_MAX_CHUNKS_PER_DOC, DEFAULT_OVERLAP_TOKENS, queryWithInstruction, splitIntoChunks } from '../shared/rerank-text.ts';
import { ContextPool } from './embedding-context-pool.ts';
import { getLlamaRuntime, type RuntimeLogger } from './runtime.ts';

export interface LlamaCppRerankLoadOptions {
  log?: RuntimeLogger;
}

export interface LlamaCppRerankModel extends RerankModel {
  readonly parallelism: number;
  readonly contextSize: number;
  /** Text tokens (no special tokens) the engine would evaluate for this text. */
  countTokens(text: string): number;
}

// Qwen3-Reranker's GGUF template hard-codes one instruction in this slot; a request's `instruction` replaces it.
const QWEN3_INSTRUCT_SLOT = /<Instruct>: ([^\n]*)\n<Query>: \{query\}/;

export async function loadLlamaCppRerankModel(
  config: ModelConfig,
  onProgress?: LoadProgress,
  options: LlamaCppRerankLoadOptions = {},
): Promise<LoadedModel<LlamaCppRerankModel>> {
  if (!config.path) throw new Error(`model ${config.id}: llama-cpp needs \`path\``);
  const llamaOptions = config.llamaCpp;
  const llama = await getLlamaRuntime(llamaOptions.gpu, options.log);
  const model = await llama.loadModel({ modelPath: config.path, gpuLayers: llamaOptions.gpuLayers, onLoadProgress: onProgress });
  const contexts: LlamaRankingContext[] = [];
  try {
    if (!model.fileInsights.supportsRanking)
      throw new Error(
        `model ${config.id}: ${config.path} is not a reranker (no cls.weight / cls.output.weight classification head); serve it as type embedding or chat`,
      );
    const rerankTemplate = (model.fileInfo.metadata as unknown as { tokenizer?: Record<string, unknown> }).tokenizer?.[
      'chat_template.rerank'
    ];
    const slot = config.acceptsInstruction && typeof rerankTemplate === 'string' ? instructionSlot(rerankTemplate) : undefined;
    const template = slot?.template;
    const contextSize = Math.min(llamaOptions.contextSize, model.trainContextSize || llamaOptions.contextSize);
    for (let i = 0; i < llamaOptions.contexts; i++)
      contexts.push(
        await model.createRankingContext({ contextSize, batchSize: contextSize, threads: llamaOptions.threads, template }),
      );
    const reranker = new LlamaCppRerank(config, model, new ContextPool(contexts), contextSize, slot?.defaultInstruction);
    return {
      model: reranker,
      dispose: async () => {
        await reranker.pool.dispose();
        await model.dispose();
      },
    };
  } catch (error) {
    await Promise.allSettled(contexts.map((context) => context.dispose()));
    await model.dispose();
    throw error;
  }
}

interface Chunk {
  document: number;
  tokens: Token[];
}

class LlamaCppRerank implements LlamaCppRerankModel {
  readonly kind = 'reranker' as const;
  readonly name: string;
  readonly maxInputTokens: number;
  readonly acceptsInstruction: boolean;
  readonly parallelism: number;

  constructor(
    config: ModelConfig,
    private readonly model: LlamaModel,
    readonly pool: ContextPool<LlamaRankingContext>,
    readonly contextSize: number,
    /** The instruction a Qwen3-style template carries by default (used when a request gives none). */
    private readonly defaultInstruction: string | undefined,
  ) {
    this.name = config.id;
    this.acceptsInstruction = config.acceptsInstruction;
    this.parallelism = pool.size;
    // node-llama-cpp refuses a pair whose evaluated length reaches the context size.
    this.maxInputTokens = contextSize - 1;
  }

  countTokens(text: string): number {
    return this.tokenize(text).length;
  }

  async doRerank(options: RerankCallOptions): Promise<RerankResult> {
    const { documents, signal } = options;
    if (options.instruction !== undefined && !this.acceptsInstruction)
      throw badRequest(`Model '${this.name}' does not take an instruction; omit \`instruction\`.`, 'instruction');
    const query = this.tokenize(this.queryText(options.query, options.instruction));
    const context = this.pool.contexts[0];
    // Tokens the template and special tokens add around query + document.
    const probe = this.tokenize('a');
    const frame = context.calculateInputLength(query, probe) - probe.length;
    const room = this.contextSize - 1 - frame;
    if (room < 1)
      throw badRequest(
        `The query takes ${query.length} tokens and leaves no room for a document in model '${this.name}' (${this.maxInputTokens} tokens per query-document pair).`,
        'query',
        'context_length_exceeded',
      );
    const maxChunks = options.maxChunksPerDoc ?? DEFAULT_MAX_CHUNKS_PER_DOC;
    const overlap = options.overlapTokens ?? DEFAULT_OVERLAP_TOKENS;
    const chunks: Chunk[] = documents.flatMap((text, document) =>
      splitIntoChunks(this.tokenize(text).slice(0, options.maxTokensPerDoc), room, overlap, maxChunks).map((tokens) => ({ document, tokens })),
    );
    const chunkScores = await Promise.all(
      chunks.map((chunk) => this.pool.use((ranking) => ranking.rank(query, chunk.tokens), signal)),
    );
    if (signal.aborted) throw new ClientGoneError();
    const scores = documents.map(() => 0);
    chunks.forEach((chunk, index) => {
      scores[chunk.document] = Math.max(scores[chunk.document], chunkScores[index]);
    });
    const inputTokens = chunks.reduce((sum, chunk) => sum + context.calculateInputLength(query, chunk.tokens), 0);
    return { scores, inputTokens, chunks: chunks.length };
  }

  private queryText(query: string, instruction: string | undefined): string {
    return this.acceptsInstruction ? queryWithInstruction(query, instruction, this.defaultInstruction) : query;
  }

  private tokenize(text: string): Token[] {
    // The same tokenization node-llama-cpp's ranking context applies to string inputs.
    return this.model.tokenize(text, false, 'trimLeadingSpace');
  }
}

/**
 * Qwen3-Reranker's `chat_template.rerank` hard-codes one instruction before `{query}`. Folding that
 * slot into the query placeholder lets each request bring its own instruction (see queryWithInstruction).
 * Returns undefined for templates without the slot.
 */
export function instructionSlot(
  rerankTemplate: string,
): { template: `${string}{{query}}${string}{{document}}${string}`; defaultInstruction: string } | undefined {
  const match = QWEN3_INSTRUCT_SLOT.exec(rerankTemplate);
  if (!match || !rerankTemplate.includes('{document}')) return undefined;
  const template = rerankTemplate
    .replace(QWEN3_INSTRUCT_SLOT, '{query}')
    .replaceAll('{query}', '{{query}}')
    .replaceAll('{document}', '{{document}}') as `${string}{{query}}${string}{{document}}${string}`;
  return { template, defaultInstruction: match[1] };
}

export { queryWithInstruction, splitIntoChunks };
