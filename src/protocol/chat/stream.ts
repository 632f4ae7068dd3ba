// Engine stream parts → SSE frames, exactly as API-CONTRACT.md "SSE, strictly" says:
//   role chunk (delta {role:"assistant", content:""}) per choice, then content / reasoning / tool-call
//   deltas (delta.content always a string), a finish chunk carrying cumulative usage, then — only with
//   include_usage — a `choices: []` usage chunk, then `data: [DONE]`.
// Each frame is the whole string `data: {json}\n\n`, so the HTTP layer writes them as they come.
// Pulling the choices' sources and cancelling them is ChoiceFrames' (../choice-frames.ts); a source
// that throws makes next() throw: render that with chatStreamErrorFrames.

import { InferaError } from '../../errors/index.ts';
import { type ChoiceSource, ChoiceFrames, SSE_DONE_FRAME, sseFrame } from '../choice-frames.ts';
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

/** The frames to write when the stream fails after it began: an error frame (no `choices`), then [DONE]. */
export function chatStreamErrorFrames(error: unknown): string[] {
  return [sseErrorFrame(toInferaError(error)), SSE_DONE_FRAME];
}

interface ChoiceState extends ChoiceSource<ChatStreamPart> {
  started: boolean;
  /** Engine tool-call index → wire index (0, 1, … in order of appearance), stable for the choice. */
  toolIndex: Map<number, number>;
  usage?: ChatUsage;
}

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

export class ChatCompletionFrames extends ChoiceFrames<ChatStreamPart, ChoiceState> {
  constructor(
    private readonly meta: ChatCompletionMeta,
    sources: readonly AsyncIterable<ChatStreamPart>[],
    private readonly options: ChatStreamOptions,
  ) {
    super(sources, (index, iterator) => ({ index, iterator, started: false, finished: false, toolIndex: new Map() }));
  }

  /** Usage of the choices that finished so far (all of them once the stream completed). */
  get usage(): ChatUsage {
    return combineChoiceUsage(this.choices.flatMap((c) => (c.usage ? [c.usage] : [])));
  }

  protected usageFrame(): string | undefined {
    return this.options.includeUsage ? sseFrame({ ...this.envelope([]), usage: toWireUsage(this.usage) }) : undefined;
  }

  protected async acceptPart(choice: ChoiceState, part: ChatStreamPart): Promise<void> {
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
}

export { SSE_DONE_FRAME, sseFrame };
