// Streams keep their upstream connection: a server ends the body right after `data: [DONE]`, but in a
// later write, and closing the request at [DONE] cost a new TCP connection per streamed request. The
// body's last bytes are let in (up to DRAIN_MS); an upstream that never ends it still loses the connection.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { openaiCompatibleModelSchema } from './config.ts';
import { loadRemoteModel } from './load.ts';
import { DRAIN_MS } from './upstream.ts';
import { createLogger } from '../../observability/logger.ts';
import type { EngineResources } from '../resources.ts';
import type { ChatModel } from '../../spec/index.ts';

const frame = (payload: unknown) => `data: ${JSON.stringify(payload)}\n\n`;
const BODY =
  frame({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index: 0, delta: { role: 'assistant', content: 'Hi' }, finish_reason: null }] }) +
  frame({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] }) +
  frame({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [], usage: { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 } }) +
  'data: [DONE]\n\n';

/** An upstream that ends each stream's body `endAfterMs` after its [DONE] (never, for undefined); counts its connections. */
async function upstream(endAfterMs: number | undefined): Promise<{ server: Server; url: string; connections: () => number; ended: () => number }> {
  let connections = 0;
  let ended = 0;
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(BODY);
      // Counted when the response is over either way: ended here, or closed by the client first.
      res.on('close', () => ended++);
      if (endAfterMs !== undefined) setTimeout(() => res.end(), endAfterMs);
    });
  });
  server.on('connection', () => connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as { port: number }).port}/v1`, connections: () => connections, ended: () => ended };
}

async function model(url: string): Promise<{ model: ChatModel; close: () => Promise<void> }> {
  const config = openaiCompatibleModelSchema.parse({ id: 'm', type: 'chat', engine: 'openai-compatible', upstream: { baseUrl: url, dialect: 'openai', contextSize: 4096 } });
  const shared = new Map<string, { close(): Promise<void> }>();
  const resources = {
    get: (key: string, make: () => { close(): Promise<void> }) => {
      if (!shared.has(key)) shared.set(key, make());
      return shared.get(key);
    },
  } as unknown as EngineResources;
  const loaded = await loadRemoteModel(config, { logger: createLogger('silent'), resources, signal: new AbortController().signal });
  return { model: loaded.model as ChatModel, close: async () => void (await Promise.all([...shared.values()].map((pool) => pool.close()))) };
}

const options = () =>
  ({ messages: [{ role: 'user', content: 'hi' }], maxTokens: 8, sampling: {}, thinking: {}, signal: new AbortController().signal }) as unknown as Parameters<ChatModel['doStream']>[0];

async function streamOnce(chat: ChatModel): Promise<string[]> {
  const types: string[] = [];
  for await (const part of chat.doStream(options())) types.push(part.type);
  return types;
}

test('streams whose body ends 5 ms after [DONE] keep their connection: ten in a row use one', async () => {
  const up = await upstream(5);
  const { model: chat, close } = await model(up.url);
  try {
    for (let i = 0; i < 10; i++) {
      assert.deepEqual(await streamOnce(chat), ['text-delta', 'finish']);
      // Past the body's end (late timers on a busy machine included): the connection is back in the pool.
      while (up.ended() < i + 1) await new Promise((resolve) => setTimeout(resolve, 5));
      await new Promise((resolve) => setTimeout(resolve, 30));
    }
    // Closing the request at [DONE] made one connection per stream (10).
    assert.ok(up.connections() <= 2, `${up.connections()} connections for 10 streams`);
  } finally {
    await close();
    up.server.closeAllConnections();
    up.server.close();
  }
});

test('a body that never ends after [DONE]: the stream finishes at once, and the connection is closed after the drain time', async () => {
  const up = await upstream(undefined);
  let closedAt: number | undefined;
  up.server.on('connection', (socket) => socket.on('close', () => (closedAt = performance.now())));
  const { model: chat, close } = await model(up.url);
  try {
    const started = performance.now();
    assert.deepEqual(await streamOnce(chat), ['text-delta', 'finish']);
    const finished = performance.now();
    assert.ok(finished - started < 500, 'the finish part did not wait for the body to end');
    await new Promise((resolve) => setTimeout(resolve, DRAIN_MS + 500));
    assert.ok(closedAt !== undefined, 'the connection was closed');
    assert.ok(closedAt - finished >= DRAIN_MS - 100, `closed ${Math.round(closedAt - finished)} ms after the finish, not at [DONE]`);
  } finally {
    await close();
    up.server.closeAllConnections();
    up.server.close();
  }
});
