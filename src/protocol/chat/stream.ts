// Engine stream parts → SSE frames, exactly as API-CONTRACT.md "SSE, strictly" says:
//   role chunk (delta {role:"assistant", content:""}) per choice, then content / reasoning / tool-call
//   deltas (delta.content always a string), a finish chunk carrying cumulative usage, then — only with
//   include_usage — a `choices: []` usage chunk, then `data: [DONE]`.
// Each frame is the whole string `data: {json}\n\n`, so the HTTP layer writes them as they come.
//
// Pull-based on purpose: nothing is generated ahead of the consumer, and return() (client gone) is
// forwarded to every engine source so generation stops and slots are released. A source that throws
// makes next() throw (after the other sources were returned); render that with chatStreamErrorFrames.

import { InferaError } from '../../errors/index.ts';
import { z } from 'zod';
import { sseErrorFrame, toInferaError, wireErrorSchema } from '../../errors/render.ts';
import type { ChatStreamPart, ChatUsage } from '../../spec/chat.ts';
import {
  combineChoiceUsage,
  DEFAULT_SYSTEM_FINGERPRINT,
  toWireUsage,
  wireFinishReason,
  type ChatCompletionMeta,
  wireFinishReasonSchema,
  wireUsageSchema,
} from './response.ts';

export const SSE_DONE_FRAME = 'data: [DONE]\n\n';

export const wireChunkDeltaSchema = z.object({
  role: z.literal('assistant').optional(),
  /** Always a string ("" while reasoning or tool calls stream): LlamaIndex breaks on null. */
  content: z.string(),
  reasoning_content: z.string().optional(),
  tool_calls: z
    .array(
      z.object({
        index: z.number().int().min(0),
        id: z.string().optional(),
        type: z.literal('function').optional(),
        function: z.object({ name: z.string().optional(), arguments: z.string() }),
      }),
    )
    .optional(),
  function_call: z.object({ name: z.string().optional(), arguments: z.string() }).optional(),
});
export type WireChunkDelta = z.infer<typeof wireChunkDeltaSchema>;

export const chatChunkSchema = z.object({
  id: z.string(),
  object: z.literal('chat.completion.chunk'),
  created: z.number().int(),
  model: z.string(),
  system_fingerprint: z.string(),
  choices: z.array(
    z.object({ index: z.number().int().min(0), delta: wireChunkDeltaSchema, logprobs: z.null(), finish_reason: wireFinishReasonSchema.nullable() }),
  ),
  usage: wireUsageSchema.optional(),
});
export type WireChatChunk = z.infer<typeof chatChunkSchema>;

/** One `data:` event of a stream: a chunk, or the error frame a stream that fails after its first token ends with (then `[DONE]`). */
export const chatStreamEventSchema = z.union([chatChunkSchema, z.object({ error: wireErrorSchema })]);

export interface ChatStreamOptions {
  /** stream_options.include_usage: add the `{"choices":[],"usage":…}` chunk before [DONE]. */
  includeUsage: boolean;
}

export const sseFrame = (payload: unknown): string => `data: ${JSON.stringify(payload)}\n\n`;

/** The frames to write when the stream fails after it began: an error frame (no `choices`), then [DONE]. */
export function chatStreamErrorFrames(error: unknown): string[] {
  return [sseErrorFrame(toInferaError(error)), SSE_DONE_FRAME];
}

interface ChoiceState {
  index: number;
  iterator: AsyncIterator<ChatStreamPart>;
  started: boolean;
  finished: boolean;
  /** Engine tool-call index → wire index (0, 1, … in order of appearance), stable for the choice. */
  toolIndex: Map<number, number>;
  usage?: ChatUsage;
}

type Pulled = { choice: ChoiceState; result: IteratorResult<ChatStreamPart> };

/**
 * Merge the streams of n choices (sources[i] is choice i) into SSE frames. The returned iterator is
 * also an AsyncIterable; call return() on it when the client disconnects.
 */
export function chatCompletionFrames(
  meta: ChatCompletionMeta,
  sources: readonly AsyncIterable<ChatStreamPart>[],
  options: ChatStreamOptions,
): ChatCompletionFrames {
  return new ChatCompletionFrames(meta, sources, options);
}

export class ChatCompletionFrames implements AsyncIterableIterator<string, void> {
  private readonly choices: ChoiceState[];
  private readonly queue: string[] = [];
  private readonly pending = new Map<ChoiceState, Promise<Pulled>>();
  private closed = false;
  private trailerQueued = false;

  constructor(
    private readonly meta: ChatCompletionMeta,
    sources: readonly AsyncIterable<ChatStreamPart>[],
    private readonly options: ChatStreamOptions,
  ) {
    if (sources.length === 0) throw new Error('chatCompletionFrames needs at least one source');
    this.choices = sources.map((source, index) => ({
      index,
      iterator: source[Symbol.asyncIterator](),
      started: false,
      finished: false,
      toolIndex: new Map(),
    }));
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /** Usage of the choices that finished so far (all of them once the stream completed). */
  get usage(): ChatUsage {
    return combineChoiceUsage(this.choices.flatMap((c) => (c.usage ? [c.usage] : [])));
  }

  async next(): Promise<IteratorResult<string, void>> {
    while (this.queue.length === 0) {
      if (this.closed) return { done: true, value: undefined };
      if (this.choices.every((c) => c.finished)) {
        if (this.trailerQueued) {
          this.closed = true;
          return { done: true, value: undefined };
        }
        this.trailerQueued = true;
        if (this.options.includeUsage) this.queue.push(sseFrame({ ...this.envelope([]), usage: toWireUsage(this.usage) }));
        this.queue.push(SSE_DONE_FRAME);
        break;
      }
      try {
        const pulled = await this.pull();
        if (this.closed) return { done: true, value: undefined }; // return() ran while we waited
        await this.accept(pulled);
      } catch (error) {
        // After return() the sources may reject with their abort error: nobody is listening.
        if (this.closed) return { done: true, value: undefined };
        await this.closeSources();
        throw error;
      }
    }
    return { done: false, value: this.queue.shift()! };
  }

  async return(): Promise<IteratorResult<string, void>> {
    await this.closeSources();
    return { done: true, value: undefined };
  }

  async throw(error?: unknown): Promise<IteratorResult<string, void>> {
    await this.closeSources();
    throw error;
  }

  private pull(): Promise<Pulled> {
    for (const choice of this.choices) {
      if (choice.finished || this.pending.has(choice)) continue;
      this.pending.set(
        choice,
        choice.iterator.next().then((result) => ({ choice, result })),
      );
    }
    // With one choice this is just that choice's next(); with several, whichever part comes first.
    return Promise.race(this.pending.values()).then((pulled) => {
      this.pending.delete(pulled.choice);
      return pulled;
    });
  }

  private async accept({ choice, result }: Pulled): Promise<void> {
    if (result.done) {
      choice.finished = true;
      throw new InferaError({
        status: 500,
        message: `The engine stream of choice ${choice.index} ended without a finish part.`,
        code: 'engine_error',
      });
    }
    const part = result.value;
    if (!choice.started) {
      choice.started = true;
      this.queue.push(this.chunk(choice.index, { role: 'assistant', content: '' }));
    }
    switch (part.type) {
      case 'text-delta':
        if (part.text !== '') this.queue.push(this.chunk(choice.index, { content: part.text }));
        return;
      case 'reasoning-delta':
        if (part.text !== '') this.queue.push(this.chunk(choice.index, { content: '', reasoning_content: part.text }));
        return;
      case 'tool-call-start': {
        const index = choice.toolIndex.size;
        choice.toolIndex.set(part.index, index);
        const delta: WireChunkDelta = {
          content: '',
          tool_calls: [{ index, id: part.id, type: 'function', function: { name: part.name, arguments: '' } }],
        };
        if (this.meta.legacyFunctions && index === 0) delta.function_call = { name: part.name, arguments: '' };
        this.queue.push(this.chunk(choice.index, delta));
        return;
      }
      case 'tool-call-delta': {
        const index = choice.toolIndex.get(part.index);
        if (index === undefined) {
          throw new InferaError({
            status: 500,
            message: `The engine streamed arguments for tool call ${part.index} before starting it.`,
            code: 'engine_error',
          });
        }
        if (part.argumentsDelta === '') return;
        const delta: WireChunkDelta = { content: '', tool_calls: [{ index, function: { arguments: part.argumentsDelta } }] };
        if (this.meta.legacyFunctions && index === 0) delta.function_call = { arguments: part.argumentsDelta };
        this.queue.push(this.chunk(choice.index, delta));
        return;
      }
      case 'finish': {
        choice.finished = true;
        choice.usage = part.usage;
        const reason = wireFinishReason(part.finishReason, choice.toolIndex.size > 0, this.meta.legacyFunctions);
        this.queue.push(
          sseFrame({
            ...this.envelope([{ index: choice.index, delta: { content: '' }, logprobs: null, finish_reason: reason }]),
            usage: toWireUsage(this.usage),
          }),
        );
        // The finish part is the last one by contract; let the source clean up now.
        await choice.iterator.return?.();
        return;
      }
    }
  }

  private envelope(choices: WireChatChunk['choices']): WireChatChunk {
    return {
      id: this.meta.id,
      object: 'chat.completion.chunk',
      created: this.meta.created,
      model: this.meta.model,
      system_fingerprint: this.meta.systemFingerprint ?? DEFAULT_SYSTEM_FINGERPRINT,
      choices,
    };
  }

  private chunk(index: number, delta: WireChunkDelta): string {
    return sseFrame(this.envelope([{ index, delta, logprobs: null, finish_reason: null }]));
  }

  private async closeSources(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.queue.length = 0;
    const open = this.choices.filter((c) => !c.finished);
    for (const c of open) c.finished = true;
    // A source may already be failing; its cleanup error must not mask the one being reported.
    await Promise.allSettled(open.map((c) => c.iterator.return?.()));
  }
}
