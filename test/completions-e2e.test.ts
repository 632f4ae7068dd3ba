// /v1/completions end to end: the real server, llama.cpp on the scripted tiny models (the plain Qwen3
// one, which has no FIM tokens, and its coder variant, which has Qwen2.5-Coder's), driven by the
// openai SDK (client.completions.create, JSON and stream) and raw HTTP. Every answer is checked
// against OpenAI's published CreateCompletionResponse; expected texts come from the model's script.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import OpenAI from 'openai';
import { sqlitePath } from '../src/platform/index.ts';
import { buildTinyChatVocab } from '../src/tiny-models/tiny-chat.ts';
import { TINY_CHAT_SCRIPT } from '../src/tiny-models/index.ts';
import { http, sseEvents, startTestServer, type TestServer } from './helpers/server.ts';
import { validateAgainstOpenApi } from './helpers/openapi.ts';
import { parseExposition, total } from './helpers/prometheus.ts';

const CHAT = 'Qwen/QwQ-32B'; // the plain tiny model: no FIM tokens
const CODER = 'Qwen/Qwen2.5-Coder-32B-Instruct'; // its coder variant
const HELLO = `${TINY_CHAT_SCRIPT.thinkingPrefix()}${TINY_CHAT_SCRIPT.answer}`;
const countText = (words: number) => `${TINY_CHAT_SCRIPT.thinkingPrefix('count')}${TINY_CHAT_SCRIPT.countWords.slice(0, words).join('')}`;
/** Tokens the count script spends before its first word: <think>, four thought pieces, </think>, "\n\n". */
const COUNT_PREAMBLE = 7;

describe('text completions end to end (openai SDK + raw HTTP)', () => {
  let server: TestServer;
  let client: OpenAI;
  before(async () => {
    server = await startTestServer();
    client = new OpenAI({ baseURL: server.baseURL, apiKey: 'unused-on-loopback', maxRetries: 0 });
  });
  after(() => server.close());

  const valid = (body: unknown) => assert.deepEqual(validateAgainstOpenApi('CreateCompletionResponse', body), []);
  /**
   * A stream chunk is the same object, except that a choice still running has `finish_reason: null`,
   * which the schema does not allow but the document's own streaming example (and OpenAI) sends.
   */
  const validChunk = (chunk: { choices: { finish_reason: string | null }[] }) => {
    const running = new Set(chunk.choices.flatMap((choice, i) => (choice.finish_reason === null ? [`/choices/${i}/finish_reason `] : [])));
    const errors = validateAgainstOpenApi('CreateCompletionResponse', chunk).filter((error) => ![...running].some((path) => error.startsWith(path)));
    assert.deepEqual(errors, []);
  };
  const ledger = () => {
    const db = new Database(sqlitePath(server.config), { readonly: true });
    try {
      return db.prepare('SELECT endpoint, model, requested_model, prompt_tokens, completion_tokens, status, outcome FROM ledger ORDER BY id').all() as {
        endpoint: string;
        model: string;
        requested_model: string;
        prompt_tokens: number;
        completion_tokens: number;
        status: number;
        outcome: string;
      }[];
    } finally {
      db.close();
    }
  };

  test('metrics: a stream counts its time to first token and generation rate, a JSON answer its generation rate', async () => {
    const scrape = async () => parseExposition((await http(server.url, '/metrics')).text);
    const before = await scrape();
    await client.completions.create({ model: CHAT, prompt: 'Hello there', max_tokens: 4, temperature: 0 });
    const stream = await client.completions.create({ model: CHAT, prompt: 'Hello there', max_tokens: 4, temperature: 0, stream: true });
    for await (const _ of stream);
    const after = await scrape();
    const delta = (name: string, labels: Record<string, string>) => total(after, name, labels) - total(before, name, labels);
    const model = server.server.services.registry.find(CHAT)!.config.id; // the canonical id labels the model
    assert.equal(delta('infera_time_to_first_token_seconds_count', { model }), 1, 'the stream only');
    assert.equal(delta('infera_generation_tokens_per_second_count', { model, stream: 'true' }), 1);
    assert.equal(delta('infera_generation_tokens_per_second_count', { model, stream: 'false' }), 1);
  });

  test('JSON: the prompt is continued as raw text (no chat template), usage counted, ledger row written, OpenAPI-valid', async () => {
    const completion = await client.completions.create({ model: CHAT, prompt: 'Hello there', max_tokens: 40, temperature: 0 });
    assert.equal(completion.object, 'text_completion');
    assert.match(completion.id, /^cmpl-/);
    assert.equal(completion.model, CHAT);
    assert.equal(completion.choices.length, 1);
    const choice = completion.choices[0]!;
    // The script's raw output: the think tags are plain text here, nothing is split off.
    assert.equal(choice.text, HELLO);
    assert.equal(choice.finish_reason, 'stop');
    assert.equal(choice.logprobs, null);
    const usage = completion.usage!;
    assert.ok(usage.prompt_tokens > 0);
    assert.ok(usage.completion_tokens >= 9, `completion tokens ${usage.completion_tokens}`);
    assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
    valid(completion);
    const row = ledger().at(-1)!;
    assert.deepEqual(
      [row.endpoint, row.model, row.requested_model, row.prompt_tokens, row.completion_tokens, row.status, row.outcome],
      ['completions', 'infera/tiny-qwen3-chat', CHAT, usage.prompt_tokens, usage.completion_tokens, 200, 'ok'],
    );
  });

  test('max_tokens defaults to 16 (OpenAI) and bounds the answer: finish_reason length; stop strings end it early', async () => {
    const bounded = await client.completions.create({ model: CHAT, prompt: 'Please count' });
    assert.equal(bounded.choices[0]!.finish_reason, 'length');
    assert.equal(bounded.usage!.completion_tokens, 16);
    assert.equal(bounded.choices[0]!.text, countText(16 - COUNT_PREAMBLE));
    const stopped = await client.completions.create({ model: CHAT, prompt: 'Please count', max_tokens: 100, stop: [' four', 'never'] });
    assert.equal(stopped.choices[0]!.finish_reason, 'stop');
    assert.equal(stopped.choices[0]!.text, countText(3));
    valid(stopped);
    // max_tokens 0 generates nothing: the prompt is counted, and echo returns it.
    const none = await client.completions.create({ model: CHAT, prompt: 'Please count', max_tokens: 0, echo: true });
    assert.equal(none.choices[0]!.text, 'Please count');
    assert.equal(none.choices[0]!.finish_reason, 'length');
    assert.equal(none.usage!.completion_tokens, 0);
    assert.equal(none.usage!.prompt_tokens, bounded.usage!.prompt_tokens);
  });

  test('echo puts the prompt in front; several prompts × n: choices in order, each prompt counted once', async () => {
    const echoed = await client.completions.create({ model: CHAT, prompt: 'Hello there', max_tokens: 40, echo: true });
    assert.equal(echoed.choices[0]!.text, `Hello there${HELLO}`);

    const single = await client.completions.create({ model: CHAT, prompt: 'Please count', max_tokens: 9 });
    const hello = await client.completions.create({ model: CHAT, prompt: 'Hello there', max_tokens: 9 });
    const many = await client.completions.create({ model: CHAT, prompt: ['Hello there', 'Please count'], n: 2, max_tokens: 9, seed: 7 });
    assert.deepEqual(
      many.choices.map((c) => [c.index, c.text]),
      [
        [0, hello.choices[0]!.text],
        [1, hello.choices[0]!.text],
        [2, countText(2)],
        [3, countText(2)],
      ],
    );
    assert.equal(many.usage!.prompt_tokens, single.usage!.prompt_tokens + hello.usage!.prompt_tokens);
    assert.equal(many.usage!.completion_tokens, 4 * 9);
    valid(many);
  });

  test('a prompt of token ids (one array, or an array of arrays) is evaluated as given; echo detokenizes it', async () => {
    const { vocab } = buildTinyChatVocab();
    const ids = [vocab.id('count')];
    const flat = await client.completions.create({ model: CHAT, prompt: ids, max_tokens: 8, echo: true });
    assert.equal(flat.choices[0]!.text, `count${countText(1)}`);
    const nested = await client.completions.create({ model: CHAT, prompt: [ids, ids], max_tokens: 8 });
    assert.deepEqual(nested.choices.map((c) => c.text), [countText(1), countText(1)]);
    assert.equal(nested.usage!.prompt_tokens, 2 * flat.usage!.prompt_tokens);
    const outside = await http(server.baseURL, '/completions', { body: { model: CHAT, prompt: [ids, [ids[0], 10_000_000]] } });
    assert.equal(outside.status, 400);
    assert.equal(outside.json.error.param, 'prompt[1][1]');
    assert.match(outside.json.error.message, /^prompt\[1\]\[1\]: token 10000000 is not in this model's vocabulary/);
  });

  test('logprobs (legacy integer form): tokens, token_logprobs, top_logprobs maps and text_offset, in JSON and in stream chunks', async () => {
    const completion = await client.completions.create({ model: CHAT, prompt: 'Please count', max_tokens: 10, logprobs: 2, temperature: 0 });
    const choice = completion.choices[0]!;
    const logprobs = choice.logprobs!;
    assert.equal(logprobs.tokens!.join(''), choice.text);
    assert.equal(logprobs.tokens!.length, 10);
    assert.equal(logprobs.token_logprobs!.length, 10);
    for (const value of logprobs.token_logprobs!) assert.ok(value <= 0 && value > -1, `the script's choices are near certain: ${value}`);
    let offset = 0;
    for (const [i, token] of logprobs.tokens!.entries()) {
      assert.equal(logprobs.text_offset![i], offset);
      offset += token.length;
      const top = logprobs.top_logprobs![i]!;
      assert.ok(Object.keys(top).length >= 1 && Object.keys(top).length <= 3, JSON.stringify(top));
      assert.equal(top[token], logprobs.token_logprobs![i], 'the chosen token is among the alternatives');
    }
    valid(completion);

    const chunks: OpenAI.Completions.Completion[] = [];
    for await (const chunk of await client.completions.create({ model: CHAT, prompt: 'Please count', max_tokens: 10, logprobs: 2, temperature: 0, stream: true }))
      chunks.push(chunk);
    const streamed = chunks.flatMap((chunk) => (chunk.choices[0]?.logprobs ? [chunk.choices[0].logprobs] : []));
    assert.deepEqual(streamed.flatMap((l) => l.tokens), logprobs.tokens);
    assert.deepEqual(streamed.flatMap((l) => l.text_offset), logprobs.text_offset);
    for (const chunk of chunks) validChunk(chunk);
  });

  test('stream: text_completion chunks (SDK and strict raw SSE), finish chunk with usage, include_usage chunk, [DONE]', async () => {
    const json = await client.completions.create({ model: CHAT, prompt: 'Hello there', max_tokens: 40 });
    const chunks: OpenAI.Completions.Completion[] = [];
    const stream = await client.completions.create({ model: CHAT, prompt: 'Hello there', max_tokens: 40, stream: true, stream_options: { include_usage: true } });
    for await (const chunk of stream) chunks.push(chunk);
    for (const chunk of chunks) {
      validChunk(chunk);
      assert.equal(chunk.object, 'text_completion');
      assert.equal(chunk.id, chunks[0]!.id);
    }
    assert.equal(chunks.map((chunk) => chunk.choices[0]?.text ?? '').join(''), HELLO);
    const finish = chunks.filter((chunk) => chunk.choices[0]?.finish_reason);
    assert.equal(finish.length, 1);
    assert.equal(finish[0]!.choices[0]!.finish_reason, 'stop');
    const last = chunks.at(-1)!;
    assert.deepEqual(last.choices, []);
    // The same counts as the JSON answer; the stream found that answer's prompt in the prompt cache.
    const counts = (usage: OpenAI.CompletionUsage | undefined) => ({ ...usage, prompt_tokens_details: undefined });
    assert.deepEqual(counts(last.usage), counts(json.usage));
    assert.equal(last.usage!.prompt_tokens_details!.cached_tokens, last.usage!.prompt_tokens - 1);
    assert.deepEqual(finish[0]!.usage, last.usage, 'the finish chunk carries the usage too');

    const raw = await http(server.baseURL, '/completions', { body: { model: CHAT, prompt: 'Hello there', max_tokens: 40, stream: true } });
    assert.equal(raw.status, 200);
    assert.match(raw.headers.get('content-type')!, /^text\/event-stream/);
    const events = sseEvents(raw.text);
    assert.equal(events.at(-1), '[DONE]');
    const payloads = events.slice(0, -1).map((event) => JSON.parse(event));
    for (const payload of payloads) assert.ok(payload.choices.length > 0, 'without include_usage every chunk has a choice');
  });

  test('FIM: suffix fills in the middle on a model whose GGUF has FIM tokens, JSON and stream', async () => {
    const request = { model: CODER, prompt: 'def add(a, b):\n', suffix: '\n\nprint(add(1, 2))\n', max_tokens: 32, temperature: 0 };
    const completion = await client.completions.create(request);
    assert.equal(completion.choices[0]!.text, TINY_CHAT_SCRIPT.fimMiddle);
    assert.equal(completion.choices[0]!.finish_reason, 'stop');
    valid(completion);
    const plain = await client.completions.create({ ...request, suffix: undefined });
    assert.ok(plain.usage!.prompt_tokens < completion.usage!.prompt_tokens, 'the suffix and the FIM tokens are prompt tokens');
    assert.notEqual(plain.choices[0]!.text, TINY_CHAT_SCRIPT.fimMiddle, 'without a suffix it is a plain continuation');
    let streamed = '';
    for await (const chunk of await client.completions.create({ ...request, stream: true })) streamed += chunk.choices[0]?.text ?? '';
    assert.equal(streamed, TINY_CHAT_SCRIPT.fimMiddle);
  });

  test('/v1/models says, once a chat model has loaded, whether it takes /v1/completions and suffix', async () => {
    for (const model of [CHAT, CODER]) (await server.server.services.registry.acquire(model, 'chat')).release();
    const list = await http(server.baseURL, '/models?sub_type=chat');
    const capabilities = Object.fromEntries(list.json.data.map((m: { id: string; infera: { capabilities?: unknown } }) => [m.id, m.infera.capabilities]));
    assert.deepEqual(capabilities[CHAT], { completions: true, suffix: false });
    assert.deepEqual(capabilities[CODER], { completions: true, suffix: true });
    assert.deepEqual(capabilities['infera/tiny-qwen3-coder'], capabilities[CODER]);
  });

  test('suffix on a model without FIM tokens is a 400 naming suffix (an empty suffix is no suffix)', async () => {
    await assert.rejects(client.completions.create({ model: CHAT, prompt: 'def add(a, b):\n', suffix: '\nprint(1)' }), (error: unknown) => {
      assert.ok(error instanceof OpenAI.BadRequestError, String(error));
      assert.equal(error.param, 'suffix');
      assert.match(error.message, /cannot fill in the middle/);
      return true;
    });
    const empty = await client.completions.create({ model: CHAT, prompt: 'Hello there', suffix: '', max_tokens: 40 });
    assert.equal(empty.choices[0]!.text, HELLO);
  });

  test('what cannot be honoured is a 400 naming the field', async () => {
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [{ logprobs: 6 }, 'logprobs', /between 0 and 5/],
      [{ echo: true, logprobs: 1 }, 'echo', /logprobs/],
      [{ echo: true, suffix: 'x' }, 'echo', /suffix/],
      [{ best_of: 3 }, 'best_of', /not supported/],
      [{ logit_bias: { '1': 5 } }, 'logit_bias', /not supported/],
      [{ n: 9 }, 'n', /between 1 and 8/],
      [{ prompt: ['a', 'b', 'c'], n: 3 }, 'n', /9 generations/],
      [{ prompt: [] }, 'prompt', /empty/],
      [{ prompt: ['a', 1] }, 'prompt[1]', /./],
      [{ max_tokens: -1 }, 'max_tokens', />= 0/],
      [{ max_tokens: 5000 }, 'prompt', /maximum context length is 2048/],
      [{ stop: ['a', 'b', 'c', 'd', 'e'] }, 'stop', /at most 4/],
    ];
    for (const [extra, param, message] of cases) {
      const answer = await http(server.baseURL, '/completions', { body: { model: CHAT, prompt: 'Hello', ...extra } });
      assert.equal(answer.status, 400, `${JSON.stringify(extra)}: ${answer.text}`);
      assert.equal(answer.json.error.param, param, JSON.stringify(extra));
      assert.match(answer.json.error.message, message, JSON.stringify(extra));
    }
    const context = await http(server.baseURL, '/completions', { body: { model: CHAT, prompt: 'Hello', max_tokens: 5000 } });
    assert.equal(context.json.error.code, 'context_length_exceeded');
    const unknown = await http(server.baseURL, '/completions', { body: { model: 'nobody/nothing', prompt: 'Hello' } });
    assert.equal(unknown.status, 400);
    assert.equal(unknown.json.code, 20012);
    const embedding = await http(server.baseURL, '/completions', { body: { model: 'BAAI/bge-m3', prompt: 'Hello' } });
    assert.equal(embedding.status, 400, embedding.text);
    assert.equal(embedding.json.error.param, 'model');
  });

  test('a client that disconnects mid-stream frees its sequence, and the ledger row is settled as cancelled', async () => {
    const lease = await server.server.services.registry.acquire(CHAT, 'chat');
    lease.release();
    // The model runs in its engine process: its queue is read across the boundary.
    const active = async () => (await lease.model.stats!()).active;
    const controller = new AbortController();
    const stream = await client.completions.create(
      { model: CHAT, prompt: 'Please count', max_tokens: 1500, stream: true },
      { signal: controller.signal },
    );
    let seen = 0;
    for await (const _chunk of stream) {
      if (++seen === 5) {
        assert.equal(await active(), 1, 'the stream holds a sequence');
        controller.abort();
        break;
      }
    }
    const abortedAt = performance.now();
    while ((await active()) > 0 && performance.now() - abortedAt < 2000) await new Promise((r) => setTimeout(r, 2));
    assert.equal(await active(), 0);
    let row = ledger().at(-1)!;
    while (row.outcome !== 'cancelled' && performance.now() - abortedAt < 2000) {
      await new Promise((r) => setTimeout(r, 5));
      row = ledger().at(-1)!;
    }
    assert.equal(row.endpoint, 'completions');
    assert.equal(row.outcome, 'cancelled');
    assert.equal(row.status, 499);
    assert.ok(row.completion_tokens >= 4 && row.completion_tokens < 1500, `tokens so far are billed: ${row.completion_tokens}`);
  });
});
