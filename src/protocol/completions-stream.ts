// Engine completion parts → SSE frames in OpenAI's text_completion shape, under the same strict SSE
// rules as chat (API-CONTRACT.md): each event one `data: {json}` line and a blank line, every chunk
// with a non-empty `choices` (`text` always a string), cumulative `usage` on each chunk that carries a
// `finish_reason`, the `choices: []` usage chunk only with include_usage, then `data: [DONE]`.
// Pulling and cancelling the choices' sources is ChoiceFrames' (./choice-frames.ts), as for chat; a
// source that throws makes next() throw (render it with chatStreamErrorFrames).

import type { CompletionStreamPart, CompletionUsage } from '../spec/chat.ts';
import { type ChoiceSource, ChoiceFrames, sseFrame } from './choice-frames.ts';
import { DEFAULT_SYSTEM_FINGERPRINT } from './chat/response.ts';
import {
  requestCachedTokens,
  toWireCompletionLogprobs,
  toWireCompletionUsage,
  type TextCompletionMeta,
  type WireCompletionChoice,
  type WireTextCompletion,
} from './completions.ts';

export interface CompletionStreamOptions {
  includeUsage: boolean;
  /** The request's `logprobs`; undefined: chunks carry `logprobs: null`. */
  topLogprobs?: number;
  /** Prompt tokens of the whole request (each prompt once), for the usage the chunks carry. */
  promptTokens: number;
  /** The request's n: choice k answers prompt k / n (for the cached-token count). */
  choicesPerPrompt?: number;
}

interface ChoiceState extends ChoiceSource<CompletionStreamPart> {
  /** Characters sent so far: where the next token's text starts (text_offset). */
  offset: number;
  completionTokens: number;
  /** From the finish part; undefined until then. */
  cachedPromptTokens?: number;
}

export class TextCompletionFrames extends ChoiceFrames<CompletionStreamPart, ChoiceState> {
  constructor(
    private readonly meta: TextCompletionMeta,
    sources: readonly AsyncIterable<CompletionStreamPart>[],
    private readonly options: CompletionStreamOptions,
  ) {
    super(sources, (index, iterator) => ({ index, iterator, finished: false, offset: 0, completionTokens: 0 }));
  }

  /** Usage of the choices that finished so far. */
  get usage(): CompletionUsage {
    return {
      promptTokens: this.options.promptTokens,
      completionTokens: this.choices.reduce((sum, c) => sum + c.completionTokens, 0),
      cachedPromptTokens: requestCachedTokens(
        this.choices.map((c) => c.cachedPromptTokens),
        this.options.choicesPerPrompt ?? 1,
      ),
    };
  }

  protected usageFrame(): string | undefined {
    return this.options.includeUsage ? sseFrame({ ...this.envelope([]), usage: toWireCompletionUsage(this.usage) }) : undefined;
  }

  protected async acceptPart(choice: ChoiceState, part: CompletionStreamPart): Promise<void> {
    if (part.type === 'text-delta') {
      const logprobs =
        part.logprobs && this.options.topLogprobs !== undefined
          ? toWireCompletionLogprobs(part.logprobs, choice.offset, this.options.topLogprobs)
          : null;
      choice.offset += part.text.length;
      if (part.text !== '' || logprobs) this.queue.push(sseFrame(this.envelope([{ index: choice.index, text: part.text, logprobs, finish_reason: null }])));
      return;
    }
    choice.finished = true;
    choice.completionTokens = part.usage.completionTokens;
    choice.cachedPromptTokens = part.usage.cachedPromptTokens ?? 0;
    this.queue.push(
      sseFrame({
        ...this.envelope([{ index: choice.index, text: '', logprobs: null, finish_reason: part.finishReason }]),
        usage: toWireCompletionUsage(this.usage),
      }),
    );
    // The finish part is the last one by contract; let the source clean up now.
    await choice.iterator.return?.();
  }

  private envelope(choices: WireCompletionChoice[]): WireTextCompletion {
    return {
      id: this.meta.id,
      object: 'text_completion',
      created: this.meta.created,
      model: this.meta.model,
      system_fingerprint: DEFAULT_SYSTEM_FINGERPRINT,
      choices,
    };
  }
}
