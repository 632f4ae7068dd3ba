// Reading a streamed upstream answer: Server-Sent Events (OpenAI-style `data:` frames ending in
// `[DONE]`) or NDJSON (Ollama's native API), pulled chunk by chunk, so the upstream is read only as fast
// as the client takes the stream (backpressure reaches the upstream's socket).

export type StreamEvent = { type: 'data'; data: string; event?: string } | { type: 'done' };

/** SSE events of a body. `done` when `[DONE]` arrives; the iterator ends when the body does. */
export async function* sseEvents(body: AsyncIterable<Buffer>): AsyncGenerator<StreamEvent> {
  const decoder = new TextDecoder();
  let buffer = '';
  let data: string[] = [];
  let event: string | undefined;
  const dispatch = function* (): Generator<StreamEvent> {
    if (data.length === 0) return;
    const text = data.join('\n');
    data = [];
    const name = event;
    event = undefined;
    yield text.trim() === '[DONE]' ? { type: 'done' } : name ? { type: 'data', data: text, event: name } : { type: 'data', data: text };
  };
  for await (const chunk of body) {
    buffer += decoder.decode(chunk, { stream: true });
    let newline = buffer.indexOf('\n');
    while (newline !== -1) {
      const line = buffer.slice(0, newline).replace(/\r$/, '');
      buffer = buffer.slice(newline + 1);
      newline = buffer.indexOf('\n');
      if (line === '') {
        yield* dispatch();
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon === -1 ? line : line.slice(0, colon);
      const value = colon === -1 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'data') data.push(value);
      else if (field === 'event') event = value;
    }
  }
  buffer += decoder.decode();
  // A last event without its blank line still counts (some servers end the body right after it).
  if (buffer.startsWith('data:')) data.push(buffer.slice(5).replace(/^ /, ''));
  yield* dispatch();
}

/** One JSON text per line (Ollama); blank lines skipped. */
export async function* ndjsonLines(body: AsyncIterable<Buffer>): AsyncGenerator<StreamEvent> {
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of body) {
    buffer += decoder.decode(chunk, { stream: true });
    let newline = buffer.indexOf('\n');
    while (newline !== -1) {
      const line = buffer.slice(0, newline).trim();
      buffer = buffer.slice(newline + 1);
      newline = buffer.indexOf('\n');
      if (line) yield { type: 'data', data: line };
    }
  }
  const rest = (buffer + decoder.decode()).trim();
  if (rest) yield { type: 'data', data: rest };
}
