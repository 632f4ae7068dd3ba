// What the chat and the completion paths of the llama.cpp engine share: sampling defaults, the chunked
// prefill, per-token probabilities for logprobs, and the errors of a request cut short.
import type { LLamaContextualRepeatPenalty, LlamaContextSequence, LlamaModel, Token } from 'node-llama-cpp';
import { InferaError } from '../../errors/index.ts';
import type { SamplingOptions, TokenLogprob } from '../../spec/chat.ts';

/**
 * Used when the request gives no temperature. node-llama-cpp's own default is 0 (greedy), OpenAI's is
 * 1; 0.7 is SiliconFlow's documented default, which is the API Infera speaks.
 */
export const DEFAULT_TEMPERATURE = 0.7;
/** OpenAI's penalties look at every generated token; llama.cpp needs a window. */
const PENALTY_WINDOW = 256;

/** Prompt tokens per prefill step: an abort waits for at most one step (128: ~20% slower prefill on CPU than 512). */
const PREFILL_CHUNK = 128;

/** OpenAI's penalties default to off; node-llama-cpp's default (1.1 over 64 tokens) is not what clients asked for. */
export function penaltyOptions(sampling: SamplingOptions): false | LLamaContextualRepeatPenalty {
  const { frequencyPenalty, presencePenalty, repetitionPenalty } = sampling;
  if (!frequencyPenalty && !presencePenalty && (repetitionPenalty === undefined || repetitionPenalty === 1)) return false;
  return {
    lastTokens: PENALTY_WINDOW,
    penalty: repetitionPenalty ?? 1,
    frequencyPenalty: frequencyPenalty ?? 0,
    presencePenalty: presencePenalty ?? 0,
  };
}

/**
 * node-llama-cpp evaluates the whole prompt before it looks at the abort signal again (it checks
 * between generated tokens), so a client that leaves during a long prefill would hold its sequence
 * for seconds. Evaluating the prompt here in chunks bounds that to one chunk; LlamaChat (or LlamaCompletion)
 * then finds the prompt already in the sequence (it keeps the common prefix) and evaluates only what differs.
 */
export async function prefill(sequence: LlamaContextSequence, tokens: Token[], signal: AbortSignal): Promise<void> {
  // The last token stays for the generator: it needs one evaluation that yields logits.
  for (let at = 0; at < tokens.length - 1; at += PREFILL_CHUNK) {
    signal.throwIfAborted();
    await sequence.evaluateWithoutGeneratingNewTokens(tokens.slice(at, Math.min(at + PREFILL_CHUNK, tokens.length - 1)));
  }
  signal.throwIfAborted();
}

export interface SampledToken {
  token: Token;
  probability: number;
  /** The most likely candidates, highest first (at most 20, OpenAI's top_logprobs ceiling). */
  top: [Token, number][];
}
const MAX_TOP_LOGPROBS = 20;

/** OpenAI clamps impossible tokens to a large negative logprob rather than -Infinity (not JSON). */
const toLogprob = (probability: number): number => (probability > 0 ? Math.log(probability) : -9999);

/** A sampled token and its `top` most likely alternatives, as the spec's TokenLogprob. */
export function tokenLogprob(model: LlamaModel, sampled: SampledToken, top: number): TokenLogprob {
  const describe = (token: Token, probability: number) => {
    const text = model.detokenize([token], true);
    return { token: text, logprob: toLogprob(probability), bytes: [...Buffer.from(text, 'utf8')] };
  };
  const chosen = describe(sampled.token, sampled.probability);
  const topLogprobs = sampled.top.slice(0, top).map(([token, probability]) => describe(token, probability));
  return { ...chosen, topLogprobs };
}

/**
 * LlamaChat and LlamaCompletion sample through `sequence.evaluate()`, which in node-llama-cpp 3.21.1 is a thin loop over
 * `evaluateWithMetadata(tokens, {})`. For logprobs the sequence is seen through a proxy whose
 * `evaluate` asks for the probability map (after the request's sampling options, as llama.cpp reports
 * it) and records it; every other member is the real sequence's. The engines refuse an answer whose
 * tokens never passed through here, and internals.test.ts checks both assumptions.
 */
export function recordingProbabilities(sequence: LlamaContextSequence, sampled: SampledToken[]): LlamaContextSequence {
  const evaluate = async function* (tokens: Token[], options?: Parameters<LlamaContextSequence['evaluate']>[1]) {
    const iterator = sequence.evaluateWithMetadata(tokens, { probabilities: true }, options);
    let input: Token | Token[] | undefined;
    try {
      for (;;) {
        const { value, done } = await iterator.next(input);
        if (done) return;
        // Keep only what logprobs can show: with top_k 0 the map holds the whole vocabulary.
        const top: [Token, number][] = [];
        for (const entry of value.probabilities) {
          if (top.length >= MAX_TOP_LOGPROBS) break;
          top.push(entry);
        }
        sampled.push({ token: value.token, probability: value.probabilities.get(value.token) ?? 0, top });
        input = yield value.token;
      }
    } finally {
      await iterator.return();
    }
  };
  return new Proxy(sequence, {
    get(target, property) {
      if (property === 'evaluate') return evaluate;
      const value = Reflect.get(target, property, target) as unknown;
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

/**
 * The sequence seen through a proxy whose `evaluate` (what LlamaChat samples through, see
 * recordingProbabilities) calls `onSampled` for every token sampled, before the generator uses it:
 * thought, answer, tool-call and grammar-forced tokens alike.
 */
export function countingSamples(sequence: LlamaContextSequence, onSampled: () => void): LlamaContextSequence {
  const evaluate = async function* (tokens: Token[], options?: Parameters<LlamaContextSequence['evaluate']>[1]) {
    const iterator = sequence.evaluate(tokens, options);
    let input: Token | Token[] | undefined;
    try {
      for (;;) {
        const { value, done } = await iterator.next(input as Token);
        if (done) return;
        onSampled();
        input = yield value;
      }
    } finally {
      await iterator.return();
    }
  };
  return new Proxy(sequence, {
    get(target, property) {
      if (property === 'evaluate') return evaluate;
      const value = Reflect.get(target, property, target) as unknown;
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

/** A node-llama-cpp internal this engine reaches into no longer does what the engine expects. */
export const internalChanged = (internal: string, effect: string) =>
  new InferaError({
    status: 500,
    code: 'internal_error',
    message: `node-llama-cpp internal ${internal} changed: ${effect}. This node-llama-cpp version is not supported by this build (see src/engines/llama-cpp/internals.test.ts).`,
  });

export const unloading = () =>
  new InferaError({ status: 503, code: 'model_unloading', message: 'The model is being unloaded; retry the request.', retryAfter: 1 });
