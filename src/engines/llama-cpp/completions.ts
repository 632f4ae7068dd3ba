// Text completion (/v1/completions) on a GGUF model: the prompt as raw text, no chat template. The
// input (beginning-of-sequence token, FIM markup, prompt) is built and counted here, so the 400s and
// the token count come before any queueing; node-llama-cpp's LlamaCompletion then generates on a
// sequence that LlamaCppChatModel lends (same slots, cancellation and unloading as chat).
import type { LlamaCompletion as LlamaCompletionClass, LlamaContextSequence, LlamaModel, Token } from 'node-llama-cpp';
import { ClientGoneError, InferaError, badRequest } from '../../errors/index.ts';
import type { CompletionCallOptions, CompletionResult, CompletionStreamPart, SamplingOptions, TokenLogprob } from '../../spec/chat.ts';
import {
  DEFAULT_TEMPERATURE,
  internalChanged,
  penaltyOptions,
  prefill,
  recordingProbabilities,
  tokenLogprob,
  unloading,
  type SampledToken,
} from './generation.ts';

/** Same reserve as chat: the end of the context is never reached, so nothing is shifted out silently. */
const CONTEXT_MARGIN = 16;

export interface CompletionPlan {
  /** Everything evaluated before the first generated token, beginning-of-sequence token included. */
  input: Token[];
  /** `input` without the beginning-of-sequence token, which LlamaCompletion adds itself. */
  body: Token[];
  maxTokens: number;
  stop: string[];
  sampling: SamplingOptions;
  topLogprobs?: number;
  echo?: string;
  warnings: string[];
}

/**
 * What planning a completion reads of a vocabulary: node-llama-cpp's LlamaModel or the FFI runner's
 * FfiVocab (which knows its size; a LlamaModel's comes from its GGUF metadata). Types only from
 * node-llama-cpp here: the FFI engine process does not load the package's root.
 */
export type CompletionVocab = Pick<LlamaModel, 'tokenize' | 'detokenize'> & {
  readonly vocabularyType: string;
  readonly tokens: {
    readonly bos: Token | null;
    readonly eos: Token | null;
    readonly shouldPrependBosToken: boolean;
    readonly infill: { readonly prefix: Token | null; readonly suffix: Token | null; readonly middle: Token | null };
  };
} & ({ readonly vocabularySize: number } | { readonly fileInfo: LlamaModel['fileInfo'] });

/** The FIM tokens of a model, when it names the two that infill needs (the middle one is optional). */
export function infillTokens(model: CompletionVocab): { prefix: Token; suffix: Token; middle: Token | null } | undefined {
  const { prefix, suffix, middle } = model.tokens.infill;
  return prefix == null || suffix == null ? undefined : { prefix, suffix, middle };
}

/**
 * The token llama.cpp puts before any input of this vocabulary, the rule LlamaCompletion follows (its
 * own helper is not exported): the count here must match what it evaluates.
 */
function beginningToken(model: CompletionVocab): Token | null {
  // LlamaVocabularyType's values.
  const type = model.vocabularyType;
  if (type === 'rwkv' || type === 'ugm') return null;
  if (type === 'wpm') return model.tokens.bos;
  return model.tokens.shouldPrependBosToken ? model.tokens.bos : null;
}

export function planCompletion(model: CompletionVocab, contextSize: number, options: CompletionCallOptions): CompletionPlan {
  const bos = beginningToken(model);
  const vocabulary =
    'vocabularySize' in model ? model.vocabularySize : (model.fileInfo.metadata?.tokenizer?.ggml?.tokens?.length ?? Number.POSITIVE_INFINITY);
  const suffix = options.suffix;
  const fim = suffix !== undefined ? infillTokens(model) : undefined;
  if (suffix !== undefined && !fim)
    throw badRequest(
      'suffix: this model cannot fill in the middle (its GGUF names no FIM prefix and suffix tokens); send the prompt alone, or use a model with FIM tokens such as Qwen2.5-Coder.',
      'suffix',
    );

  let promptTokens: Token[];
  if (typeof options.prompt === 'string') {
    // In FIM the server writes the markup, so the client's text is data; a plain prompt may carry markup.
    promptTokens = model.tokenize(options.prompt, !fim);
  } else {
    for (const [i, id] of options.prompt.entries())
      if (id >= vocabulary)
        throw badRequest(`prompt[${i}]: token ${id} is not in this model's vocabulary (ids 0–${vocabulary - 1}).`, `prompt[${i}]`);
    promptTokens = (bos !== null && options.prompt[0] === bos ? options.prompt.slice(1) : options.prompt) as Token[];
  }

  let body: Token[];
  if (fim) {
    const suffixTokens = model.tokenize(suffix!, false);
    // node-llama-cpp's order (llama.cpp's): prefix, suffix, middle; models without a middle token take suffix first.
    body =
      fim.middle !== null
        ? [fim.prefix, ...promptTokens, fim.suffix, ...suffixTokens, fim.middle]
        : [fim.suffix, ...suffixTokens, fim.prefix, ...promptTokens];
  } else {
    body = promptTokens;
  }
  if (body.length === 0 && bos === null) {
    // OpenAI: without a prompt the model writes "as if from the beginning of a new document".
    const start = model.tokens.bos ?? model.tokens.eos;
    if (start === null) throw badRequest('prompt: must not be empty for this model (it has no beginning-of-text token).', 'prompt');
    body = [start];
  }
  const input = bos === null ? body : [bos, ...body];

  if (input.length + options.maxTokens + CONTEXT_MARGIN > contextSize)
    throw new InferaError({
      status: 400,
      code: 'context_length_exceeded',
      param: 'prompt',
      message:
        `This model's maximum context length is ${contextSize} tokens. However, you requested ` +
        `${input.length + options.maxTokens + CONTEXT_MARGIN} tokens (${input.length} in the prompt${fim ? ' and suffix' : ''}, ` +
        `${options.maxTokens} in the completion, ${CONTEXT_MARGIN} reserved). Please reduce the length of the prompt or max_tokens.`,
    });

  let echo: string | undefined;
  if (options.echo) echo = typeof options.prompt === 'string' ? options.prompt : model.detokenize(options.prompt as Token[], true);
  return {
    input,
    body,
    maxTokens: options.maxTokens,
    stop: (options.stop ?? []).filter((text) => text.length > 0),
    sampling: options.sampling,
    topLogprobs: options.topLogprobs,
    echo,
    warnings: [],
  };
}

type Emit = (part: CompletionStreamPart) => void;

/** What the model lends a completion: its sequence and the signals that stop it. */
export interface CompletionRun {
  model: LlamaModel;
  sequence: LlamaContextSequence;
  /** Aborted when the client leaves or the model unloads. */
  stopper: AbortController;
  /** The client's signal (aborted: the client left). */
  signal: AbortSignal;
  closing: () => boolean;
}

/** A plan that generates nothing (max_tokens 0): no sequence needed. */
export function emptyCompletion(plan: CompletionPlan, emit: Emit): CompletionResult {
  const text = plan.echo ?? '';
  if (text) emit({ type: 'text-delta', text });
  const usage = { promptTokens: plan.input.length, completionTokens: 0 };
  emit({ type: 'finish', finishReason: 'length', usage });
  return { text, finishReason: 'length', usage, logprobs: plan.topLogprobs === undefined ? undefined : [], warnings: plan.warnings };
}

export async function runCompletion(plan: CompletionPlan, run: CompletionRun, emit: Emit): Promise<CompletionResult> {
  const { model, sequence, stopper, signal } = run;
  const sampled: SampledToken[] = [];
  // Only node-llama-cpp's engine runs this, and it has loaded the package already.
  const { LlamaCompletion } = (await import('node-llama-cpp')) as { LlamaCompletion: typeof LlamaCompletionClass };
  const completion = new LlamaCompletion({
    contextSequence: plan.topLogprobs === undefined ? sequence : recordingProbabilities(sequence, sampled),
  });
  try {
    let text = plan.echo ?? '';
    if (text) emit({ type: 'text-delta', text });
    const logprobs: TokenLogprob[] | undefined = plan.topLogprobs === undefined ? undefined : [];
    // LlamaCompletion hands over each release of tokens twice, ids then text, one right after the other.
    let released: Token[] = [];
    let generated = 0;
    // Thrown after generation: node-llama-cpp catches and only logs what its callbacks throw.
    let mismatch = false;
    const onToken = (tokens: Token[]) => {
      released = tokens;
    };
    const onTextChunk = (piece: string) => {
      let partLogprobs: TokenLogprob[] | undefined;
      if (logprobs) {
        // Released tokens are the sampled ones in order (a completion injects nothing); the end token
        // and a stop string's tokens are sampled but never released.
        partLogprobs = [];
        if (released.every((token, i) => sampled[generated + i]?.token === token))
          for (const [i] of released.entries()) partLogprobs.push(tokenLogprob(model, sampled[generated + i]!, plan.topLogprobs!));
        else {
          // A stop string that begins inside a token: node-llama-cpp releases the text before it
          // tokenized anew, not the token sampled. That token's entry, cut to the released text.
          const entry = sampled[generated];
          const whole = entry && tokenLogprob(model, entry, plan.topLogprobs!);
          if (whole && piece.length > 0 && whole.token.length > piece.length && whole.token.startsWith(piece)) {
            partLogprobs.push({ ...whole, token: piece, bytes: [...Buffer.from(piece, 'utf8')] });
            released = [entry.token];
          } else mismatch = true;
        }
        logprobs.push(...partLogprobs);
      }
      generated += released.length;
      released = [];
      text += piece;
      if (piece || partLogprobs?.length) emit(partLogprobs ? { type: 'text-delta', text: piece, logprobs: partLogprobs } : { type: 'text-delta', text: piece });
    };
    const meter = sequence.tokenMeter;
    const outputBefore = meter.usedOutputTokens;
    let response: Awaited<ReturnType<LlamaCompletionClass['generateCompletionWithMeta']>>;
    try {
      await prefill(sequence, plan.input, stopper.signal);
      response = await completion.generateCompletionWithMeta(plan.body, {
        signal: stopper.signal,
        stopOnAbortSignal: true,
        maxTokens: plan.maxTokens,
        // The plan checked that input and output fit: nothing may be shifted out of the context.
        disableContextShift: true,
        contextShiftSize: CONTEXT_MARGIN,
        temperature: plan.sampling.temperature ?? DEFAULT_TEMPERATURE,
        topP: plan.sampling.topP,
        topK: plan.sampling.topK,
        minP: plan.sampling.minP,
        seed: plan.sampling.seed,
        repeatPenalty: penaltyOptions(plan.sampling),
        customStopTriggers: plan.stop.length > 0 ? plan.stop : undefined,
        onToken,
        onTextChunk,
      });
    } catch (error) {
      if (signal.aborted) throw new ClientGoneError();
      if (run.closing()) throw unloading();
      throw error;
    }
    const stopReason = response.metadata.stopReason;
    // The stopper is only aborted by a client that left or an unload.
    if (stopReason === 'abort') throw run.closing() && !signal.aborted ? unloading() : new ClientGoneError();
    if (logprobs && (mismatch || (generated > 0 && sampled.length === 0)))
      throw internalChanged('LlamaContextSequence.evaluate (sampled through by LlamaCompletion)', 'the released tokens are not the ones sampled through the logprobs proxy');
    const finishReason = stopReason === 'maxTokens' ? 'length' : 'stop';
    const usage = { promptTokens: plan.input.length, completionTokens: Math.max(meter.usedOutputTokens - outputBefore, generated) };
    emit({ type: 'finish', finishReason, usage });
    return { text, finishReason, usage, logprobs, warnings: plan.warnings };
  } finally {
    completion.dispose({ disposeSequence: false });
  }
}
