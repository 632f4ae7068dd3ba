// A gateway Infera in front of another real Infera server, through engine openai-compatible's quick form
// (`upstreams: [{baseUrl}]`, the dialect detected from the worker's /v1/models), driven by the official
// openai SDK: the gateway serves the worker's models under their ids and aliases and no tiny defaults;
// chat JSON and stream with reasoning and tool calls, embeddings and rerank give what the worker gives;
// a client that leaves mid-stream cancels the worker's generation (its ledger shows it).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import OpenAI from 'openai';
import { sqlitePath } from '../src/platform/index.ts';
import { TINY_IDS } from '../src/registry/default-models.ts';
import { TINY_CHAT_SCRIPT } from '../src/tiny-models/index.ts';
import { http, startTestServer, type TestServer } from './helpers/server.ts';
import { readChatStream } from './helpers/chat-stream.ts';

const CHAT = 'Qwen/QwQ-32B'; // an alias of the worker's tiny chat model
const weatherTool = {
  type: 'function' as const,
  function: { name: 'get_weather', description: 'Current weather in a city', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } },
};

function ledger(server: TestServer) {
  const db = new Database(sqlitePath(server.config), { readonly: true });
  try {
    return db.prepare('SELECT endpoint, model, prompt_tokens, completion_tokens, status, outcome, note FROM ledger ORDER BY id').all() as {
      endpoint: string;
      model: string;
      prompt_tokens: number;
      completion_tokens: number;
      status: number;
      outcome: string;
      note: string | null;
    }[];
  } finally {
    db.close();
  }
}

describe('gateway Infera → worker Infera (engine openai-compatible, quick form)', () => {
  let worker: TestServer;
  let gateway: TestServer;
  let openai: OpenAI;
  let direct: OpenAI;
  before(async () => {
    worker = await startTestServer();
    gateway = await startTestServer({ config: { upstreams: [{ baseUrl: worker.baseURL }] } });
    openai = new OpenAI({ baseURL: gateway.baseURL, apiKey: 'unused-on-loopback', maxRetries: 0 });
    direct = new OpenAI({ baseURL: worker.baseURL, apiKey: 'unused-on-loopback', maxRetries: 0 });
  });
  after(async () => {
    await gateway?.close();
    await worker?.close();
  });

  test("the gateway serves the worker's models under their ids and aliases, all remote, no tiny defaults", async () => {
    const entries = gateway.server.services.registry.entries();
    assert.equal(gateway.server.usingTinyModels, false);
    assert.deepEqual(
      entries.map((entry) => entry.config.id).sort(),
      worker.server.services.registry.entries().map((entry) => entry.config.id).sort(),
    );
    for (const entry of entries) {
      assert.equal(entry.config.engine, 'openai-compatible');
      assert.equal((entry.config as { upstream?: { dialect: string } }).upstream?.dialect, 'infera');
    }
    const chat = entries.find((entry) => entry.config.id === TINY_IDS.chat)!;
    assert.ok(chat.config.aliases.includes(CHAT));
    const listed = await http(gateway.baseURL, '/models?sub_type=embedding');
    assert.deepEqual(listed.json.data.map((model: { id: string }) => model.id).sort(), ['BAAI/bge-large-zh-v1.5', 'BAAI/bge-m3', TINY_IDS.embedding].sort());
  });

  test('chat JSON: reasoning_content and the answer, usage from the worker, one ledger row on each side', async () => {
    const gatewayRows = ledger(gateway).length;
    const workerRows = ledger(worker).length;
    const completion = await openai.chat.completions.create({ model: CHAT, messages: [{ role: 'user', content: 'hello there' }] });
    const message = completion.choices[0]!.message as { content: string; reasoning_content?: string };
    assert.equal(message.content, TINY_CHAT_SCRIPT.answer);
    assert.equal(message.reasoning_content, TINY_CHAT_SCRIPT.reasoning);
    assert.equal(completion.model, CHAT);
    const workerRow = ledger(worker).at(-1)!;
    const gatewayRow = ledger(gateway).at(-1)!;
    assert.equal(ledger(worker).length, workerRows + 1);
    assert.equal(ledger(gateway).length, gatewayRows + 1);
    assert.deepEqual(
      [gatewayRow.prompt_tokens, gatewayRow.completion_tokens, gatewayRow.outcome, gatewayRow.note],
      [workerRow.prompt_tokens, workerRow.completion_tokens, 'ok', null],
    );
    assert.equal(completion.usage?.prompt_tokens, workerRow.prompt_tokens);
  });

  test('chat stream with a tool call: reasoning deltas, one call with JSON arguments, finish_reason tool_calls, usage', async () => {
    const stream = await openai.chat.completions.create({
      model: CHAT,
      messages: [{ role: 'user', content: "What's the weather in Paris?" }],
      tools: [weatherTool],
      stream: true,
      stream_options: { include_usage: true },
    });
    const { reasoning, toolName: name, toolArgs: args, finish, usage } = await readChatStream(stream);
    assert.equal(reasoning.trim(), TINY_CHAT_SCRIPT.reasoningByMode.weather);
    assert.deepEqual([name, JSON.parse(args), finish], ['get_weather', TINY_CHAT_SCRIPT.toolArguments, 'tool_calls']);
    assert.ok(usage && usage.prompt_tokens > 0 && usage.completion_tokens > 0);
    assert.equal(ledger(gateway).at(-1)!.completion_tokens, usage.completion_tokens);
  });

  test('embeddings and rerank give what the worker gives', async () => {
    const viaGateway = await openai.embeddings.create({ model: 'BAAI/bge-m3', input: ['the cat sat', 'on the mat'] });
    const viaWorker = await direct.embeddings.create({ model: 'BAAI/bge-m3', input: ['the cat sat', 'on the mat'] });
    assert.deepEqual(viaGateway.data.map((d) => d.embedding), viaWorker.data.map((d) => d.embedding));
    assert.equal(viaGateway.usage.prompt_tokens, viaWorker.usage.prompt_tokens);
    const body = { model: 'BAAI/bge-reranker-v2-m3', query: 'the cat', documents: ['a dog barks', 'the cat sat on the mat', 'rain'], top_n: 2 };
    const [gatewayRerank, workerRerank] = await Promise.all([http(gateway.baseURL, '/rerank', { body }), http(worker.baseURL, '/rerank', { body })]);
    assert.equal(gatewayRerank.status, 200, gatewayRerank.text);
    assert.deepEqual(gatewayRerank.json.results, workerRerank.json.results);
    assert.deepEqual(gatewayRerank.json.tokens, workerRerank.json.tokens);
  });

  test('text completion with fill in the middle, JSON and stream: the worker\'s text and usage', async () => {
    const request = { model: 'Qwen/Qwen2.5-Coder-32B-Instruct', prompt: 'def add(a, b):\n', suffix: '\n\nprint(add(1, 2))\n', max_tokens: 32, temperature: 0 };
    const viaGateway = await openai.completions.create(request);
    const viaWorker = await direct.completions.create(request);
    assert.equal(viaGateway.choices[0]!.text, TINY_CHAT_SCRIPT.fimMiddle);
    assert.deepEqual(
      [viaGateway.usage?.prompt_tokens, viaGateway.usage?.completion_tokens],
      [viaWorker.usage?.prompt_tokens, viaWorker.usage?.completion_tokens],
    );
    const row = ledger(gateway).at(-1)!;
    assert.deepEqual([row.endpoint, row.prompt_tokens, row.completion_tokens], ['completions', viaWorker.usage?.prompt_tokens, viaWorker.usage?.completion_tokens]);
    let text = '';
    for await (const chunk of await openai.completions.create({ ...request, stream: true })) text += chunk.choices[0]?.text ?? '';
    assert.equal(text, TINY_CHAT_SCRIPT.fimMiddle);
  });

  test("a client that leaves mid-stream cancels the worker's generation (its ledger row says cancelled)", async () => {
    const workerRows = ledger(worker).length;
    const controller = new AbortController();
    const stream = await openai.chat.completions.create(
      { model: CHAT, messages: [{ role: 'user', content: 'count for me' }], stream: true, enable_thinking: false } as OpenAI.ChatCompletionCreateParamsStreaming,
      { signal: controller.signal },
    );
    let chunks = 0;
    let left = 0;
    try {
      for await (const _chunk of stream) {
        if (++chunks === 5) {
          left = Date.now();
          controller.abort();
        }
      }
    } catch {
      // the abort
    }
    let row = ledger(worker)[workerRows];
    const deadline = Date.now() + 5000;
    while (!row && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
      row = ledger(worker)[workerRows];
    }
    assert.ok(row, 'the worker settled the request');
    assert.deepEqual([row.outcome, row.status], ['cancelled', 499]);
    assert.ok(Date.now() - left < 5000);
    const gatewayRow = ledger(gateway).at(-1)!;
    assert.deepEqual([gatewayRow.outcome, gatewayRow.status], ['cancelled', 499]);
  });
});
