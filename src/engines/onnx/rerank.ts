// Cross-encoder rerankers exported to ONNX (bge-reranker, ms-marco MiniLM, jina-reranker … as
// *ForSequenceClassification with a `logits` output), batched across requests: the query-document pairs
// of every request in a micro-batch share forward passes. Chunking and instructions follow the same
// rules as the llama.cpp reranker (../shared/rerank-text.ts). Score = sigmoid of the one logit, or the
// positive-class probability for two-label heads.
import type { OnnxModelConfig } from './config.ts';
import { badRequest, ClientGoneError } from '../../errors/index.ts';
import type { LoadedModel, LoadProgress, RerankCallOptions, RerankModel, RerankResult } from '../../spec/index.ts';
import { chunkLimits, documentRoom, queryWithInstruction, RerankWorkMeter, splitIntoChunks } from '../shared/rerank-text.ts';
import { loadEncoder, ONNX_BATCHING, type EncoderLoadOptions } from './embedding.ts';
import type { EncoderRow, OnnxEncoder, OutputView } from './encoder.ts';

export async function loadOnnxRerankModel(
  config: OnnxModelConfig,
  onProgress?: LoadProgress,
  options: EncoderLoadOptions = {},
): Promise<LoadedModel<RerankModel>> {
  const encoder = await loadEncoder(config, options);
  try {
    const logits = encoder.outputs.find((o) => o.name === 'logits');
    if (!logits)
      throw new Error(
        `model ${config.id}: ${encoder.dir} has no 'logits' output (outputs: ${encoder.outputs.map((o) => o.name).join(', ')}); ` +
          'export the reranker as a sequence-classification model (optimum task text-classification)',
      );
    const model = new OnnxRerank(config, encoder);
    onProgress?.(1);
    return { model, dispose: () => encoder.dispose() };
  } catch (error) {
    await encoder.dispose();
    throw error;
  }
}

interface Plan {
  rows: EncoderRow[];
  documents: number[];
  documentCount: number;
}

class OnnxRerank implements RerankModel {
  readonly kind = 'reranker' as const;
  readonly name: string;
  readonly maxInputTokens: number;
  readonly acceptsInstruction: boolean;
  readonly preferredBatching = ONNX_BATCHING;
  /** Special tokens the tokenizer puts around a pair. */
  private readonly pairFrame: number;

  constructor(
    config: OnnxModelConfig,
    private readonly encoder: OnnxEncoder,
  ) {
    this.name = config.id;
    this.acceptsInstruction = config.acceptsInstruction;
    this.maxInputTokens = encoder.maxLength;
    this.pairFrame = encoder.row([], []).ids.length;
  }

  doRerank(call: RerankCallOptions): Promise<RerankResult> {
    return this.doRerankBatch([call])[0]!;
  }

  doRerankBatch(calls: RerankCallOptions[]): Promise<RerankResult>[] {
    const plans = calls.map((call) => {
      try {
        return this.plan(call);
      } catch (error) {
        return { error };
      }
    });
    const rows: EncoderRow[] = [];
    const owner: number[] = [];
    plans.forEach((plan, callIndex) => {
      if ('error' in plan) return;
      for (const row of plan.rows) {
        rows.push(row);
        owner.push(callIndex);
      }
    });
    const scores = this.encoder.forward(rows, 'logits', score, (index) => calls[owner[index]!]!.signal.aborted);
    let first = 0;
    return plans.map(async (plan, callIndex) => {
      if ('error' in plan) throw plan.error;
      const start = first;
      first += plan.rows.length;
      const all = await scores;
      if (calls[callIndex]!.signal.aborted) throw new ClientGoneError();
      const best = new Array<number>(plan.documentCount).fill(0);
      for (let i = 0; i < plan.rows.length; i++) {
        best[plan.documents[i]!] = Math.max(best[plan.documents[i]!]!, all[start + i]!);
      }
      return { scores: best, inputTokens: plan.rows.reduce((sum, row) => sum + row.ids.length, 0), chunks: plan.rows.length };
    });
  }

  /** The rows one request needs: every document, split into chunks that fit next to the query. */
  private plan(call: RerankCallOptions): Plan {
    if (call.instruction !== undefined && !this.acceptsInstruction)
      throw badRequest(`Model '${this.name}' does not take an instruction; omit \`instruction\`.`, 'instruction');
    const queryText = this.acceptsInstruction ? queryWithInstruction(call.query, call.instruction, undefined) : call.query;
    const query = this.encoder.textTokens(queryText);
    const room = documentRoom(this.encoder.maxLength - this.pairFrame - query.length, this.name, this.maxInputTokens);
    const { maxChunks, overlap } = chunkLimits(call);
    const rows: EncoderRow[] = [];
    const documents: number[] = [];
    const meter = new RerankWorkMeter(call.limits);
    call.documents.forEach((text, document) => {
      const tokens = this.encoder.textTokens(text).slice(0, call.maxTokensPerDoc);
      for (const chunk of splitIntoChunks(tokens, room, overlap, maxChunks)) {
        meter.add(this.pairFrame + query.length + chunk.length);
        rows.push(this.encoder.row(query, chunk));
        documents.push(document);
      }
    });
    return { rows, documents, documentCount: call.documents.length };
  }
}

function score({ data, dims, row }: OutputView): number {
  const labels = dims[1] ?? 1;
  if (labels === 1) return 1 / (1 + Math.exp(-data[row]!));
  if (labels === 2) {
    // Two-label heads (not relevant / relevant): probability of the second.
    const [a, b] = [data[row * 2]!, data[row * 2 + 1]!];
    return 1 / (1 + Math.exp(a - b));
  }
  throw new Error(`reranker output has ${labels} labels per pair; expected 1 or 2`);
}

