// The prompt cache as a client sees it: the real server, the tiny chat model on the FFI runner, the
// official openai SDK. A conversation's second turn reports the reused history as
// usage.prompt_tokens_details.cached_tokens (JSON and the streamed usage chunk), answers exactly what
// the same model with the cache off answers, and `cache_prompt: false` / `promptCache: false` turn it off.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import OpenAI from 'openai';
import { TINY_CHAT_SCRIPT, ensureTinyModels } from '../src/tiny-models/index.ts';
import { SHARED_DATA_DIR, http, startTestServer, type TestServer } from './helpers/server.ts';
import { parseExposition, total } from './helpers/prometheus.ts';

const CACHED = 'cache/on';
const UNCACHED = 'cache/off';

describe('prompt cache through the openai SDK', () => {
  let server: TestServer;
  let client: OpenAI;
  before(async () => {
    const { chat } = await ensureTinyModels(join(SHARED_DATA_DIR, 'tiny-models'));
    const model = (id: string, promptCache: boolean) => ({
      id,
      type: 'chat',
      engine: 'llama-cpp',
      path: chat,
      llamaCpp: { contextSize: 1024, sequences: 2, threads: 1, promptCache },
    });
    server = await startTestServer({ config: { models: [model(CACHED, true), model(UNCACHED, false)] } });
    client = new OpenAI({ baseURL: server.baseURL, apiKey: 'unused-on-loopback', maxRetries: 0 });
  });
  after(() => server?.close());

  const firstTurn: OpenAI.Chat.Completions.ChatCompletionMessageParam[] = [
    { role: 'system', content: 'You are a terse assistant. Answer in one short sentence, always.' },
    { role: 'user', content: 'Hello there' },
  ];
  const secondTurn = (answer: string): OpenAI.Chat.Completions.ChatCompletionMessageParam[] => [
    ...firstTurn,
    { role: 'assistant', content: answer },
    { role: 'user', content: 'And again?' },
  ];

  const cachedMetric = async () => total(parseExposition((await http(server.url, '/metrics')).text), 'infera_cached_prompt_tokens_total', { model: CACHED });

  test('JSON: the second turn reuses the first from the KV, and answers as the uncached model does', async () => {
    const metricBefore = await cachedMetric();
    const first = await client.chat.completions.create({ model: CACHED, messages: firstTurn, temperature: 0 });
    assert.equal(first.choices[0]!.message.content, TINY_CHAT_SCRIPT.answer);
    assert.equal(first.usage!.prompt_tokens_details!.cached_tokens, 0, 'nothing was cached before');
    const second = await client.chat.completions.create({ model: CACHED, messages: secondTurn(first.choices[0]!.message.content!), temperature: 0 });
    const reference = await client.chat.completions.create({ model: UNCACHED, messages: secondTurn(first.choices[0]!.message.content!), temperature: 0 });
    assert.equal(second.choices[0]!.message.content, reference.choices[0]!.message.content);
    assert.equal(second.usage!.prompt_tokens, reference.usage!.prompt_tokens);
    const cached = second.usage!.prompt_tokens_details!.cached_tokens!;
    // Everything up to the first answer (Qwen3's template drops the earlier turn's empty think block).
    assert.ok(cached >= first.usage!.prompt_tokens - 4 && cached < second.usage!.prompt_tokens, JSON.stringify({ first: first.usage, second: second.usage }));
    assert.equal(reference.usage!.prompt_tokens_details!.cached_tokens, 0, 'promptCache: false reuses nothing');
    // Billing rule (docs/PLATFORM.md): cached tokens are prompt tokens.
    assert.equal(second.usage!.total_tokens, second.usage!.prompt_tokens + second.usage!.completion_tokens);
    assert.equal((await cachedMetric()) - metricBefore, cached, 'infera_cached_prompt_tokens_total counts them');
  });

  test('stream with include_usage: cached_tokens in the usage chunk', async () => {
    const messages = [{ role: 'user' as const, content: 'Please count slowly, one number a line, for a long while.' }];
    const collect = async (body: Record<string, unknown>) => {
      const stream = await client.chat.completions.create({
        model: CACHED,
        messages,
        temperature: 0,
        max_tokens: 8,
        stream: true,
        stream_options: { include_usage: true },
        ...body,
      });
      let text = '';
      let usage: OpenAI.CompletionUsage | undefined;
      for await (const chunk of stream) {
        if (chunk.usage) usage = chunk.usage;
        text += chunk.choices[0]?.delta.content ?? '';
      }
      return { text, usage: usage! };
    };
    const first = await collect({});
    const again = await collect({});
    assert.equal(again.text, first.text);
    assert.equal(again.usage.prompt_tokens, first.usage.prompt_tokens);
    // The whole prompt but its last token, which is evaluated again for the first token's logits.
    assert.equal(again.usage.prompt_tokens_details!.cached_tokens, again.usage.prompt_tokens - 1);
    // llama-server's per-request switch, as an extra body field.
    const off = await collect({ cache_prompt: false } as Record<string, unknown>);
    assert.equal(off.text, first.text);
    assert.equal(off.usage.prompt_tokens_details!.cached_tokens, 0);
  });

  test('n = 2: both choices answer the same; the prompt one choice evaluated for the other is not reported as cached', async () => {
    const messages = [{ role: 'user' as const, content: 'Please count, a fresh conversation with its own words.' }];
    const completion = await client.chat.completions.create({ model: CACHED, messages, temperature: 0, max_tokens: 6, n: 2 });
    assert.equal(completion.choices.length, 2);
    assert.equal(completion.choices[0]!.message.content, completion.choices[1]!.message.content);
    const usage = completion.usage!;
    // One choice evaluated the prompt and the other copied it from that sequence (llama_memory_seq_cp,
    // the runner's tests count it); only what came from before the request counts as cached.
    // (The template's opening is shared with the earlier tests' prompts.)
    assert.ok(usage.prompt_tokens_details!.cached_tokens! < usage.prompt_tokens / 2, JSON.stringify(usage));
    // Asked again, all of it (but the last token) was there before.
    const again = await client.chat.completions.create({ model: CACHED, messages, temperature: 0, max_tokens: 6, n: 2 });
    assert.deepEqual(
      again.choices.map((choice) => choice.message.content),
      completion.choices.map((choice) => choice.message.content),
    );
    assert.equal(again.usage!.prompt_tokens_details!.cached_tokens, again.usage!.prompt_tokens - 1);
  });

  test('/v1/completions reports cached_tokens too (JSON and the streamed usage), in the ledger metric', async () => {
    const prompt = 'Once upon a time, in a small town beside a river, there lived a clockmaker who';
    const metricBefore = await cachedMetric();
    const first = await client.completions.create({ model: CACHED, prompt, max_tokens: 4, temperature: 0 });
    const again = await client.completions.create({ model: CACHED, prompt, max_tokens: 4, temperature: 0 });
    assert.equal(again.choices[0]!.text, first.choices[0]!.text);
    const usage = again.usage as OpenAI.CompletionUsage;
    assert.equal(usage.prompt_tokens, first.usage!.prompt_tokens);
    assert.equal(usage.prompt_tokens_details!.cached_tokens, usage.prompt_tokens - 1, JSON.stringify({ first: first.usage, again: usage }));
    assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens, 'cached tokens are billed as prompt tokens');
    const stream = await client.completions.create({ model: CACHED, prompt, max_tokens: 4, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let streamed: OpenAI.CompletionUsage | undefined;
    let text = '';
    for await (const chunk of stream) {
      if (chunk.usage) streamed = chunk.usage;
      text += chunk.choices[0]?.text ?? '';
    }
    assert.equal(text, first.choices[0]!.text);
    assert.equal(streamed!.prompt_tokens_details!.cached_tokens, streamed!.prompt_tokens - 1);
    const uncached = await client.completions.create({ model: UNCACHED, prompt, max_tokens: 4, temperature: 0 });
    assert.equal((uncached.usage as OpenAI.CompletionUsage).prompt_tokens_details!.cached_tokens, 0);
    const counted = (first.usage as OpenAI.CompletionUsage).prompt_tokens_details!.cached_tokens! + usage.prompt_tokens_details!.cached_tokens! + streamed!.prompt_tokens_details!.cached_tokens!;
    assert.equal((await cachedMetric()) - metricBefore, counted, 'infera_cached_prompt_tokens_total counts them');
  });
});
