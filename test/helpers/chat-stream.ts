// A chat completion stream as the openai SDK yields it, read to the end: what a client assembles from
// the deltas (reasoning, content, one tool call's name and arguments), the last finish_reason
// and usage, and the chunks themselves for per-chunk checks.
import type OpenAI from 'openai';

export interface ReadChatStream {
  reasoning: string;
  content: string;
  /** Tool-call name and argument pieces, each concatenated (a name sent twice shows as doubled). */
  toolName: string;
  toolArgs: string;
  finish: string | null;
  usage: OpenAI.CompletionUsage | undefined;
  chunks: OpenAI.ChatCompletionChunk[];
}

export async function readChatStream(stream: AsyncIterable<OpenAI.ChatCompletionChunk>): Promise<ReadChatStream> {
  const read: ReadChatStream = { reasoning: '', content: '', toolName: '', toolArgs: '', finish: null, usage: undefined, chunks: [] };
  for await (const chunk of stream) {
    read.chunks.push(chunk);
    const choice = chunk.choices[0];
    const delta = choice?.delta as (OpenAI.ChatCompletionChunk.Choice.Delta & { reasoning_content?: string }) | undefined;
    read.reasoning += delta?.reasoning_content ?? '';
    read.content += delta?.content ?? '';
    for (const call of delta?.tool_calls ?? []) {
      read.toolName += call.function?.name ?? '';
      read.toolArgs += call.function?.arguments ?? '';
    }
    read.finish = choice?.finish_reason ?? read.finish;
    read.usage = chunk.usage ?? read.usage;
  }
  return read;
}
