// The first run with INFERA_AUTO_PULL=1 against imitation hubs (test/helpers/pull-hub.ts): the starter
// presets pulled by the real CLI, `infera serve` with no config serving them under their SiliconFlow ids
// (answered through the openai SDK), `infera models` asking the running server, POST
// /admin/models/pull as server-sent events, and `infera rm`.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import OpenAI from 'openai';
import { TINY_CHAT_SCRIPT } from '../src/tiny-models/index.ts';
import { type PullFixture, startPullFixture } from './helpers/pull-hub.ts';

let fixture: PullFixture;
let hub: PullFixture['hub'];
let work: string;
let cli: PullFixture['cli'];
let run: PullFixture['run'];
before(async () => {
  fixture = await startPullFixture();
  ({ hub, work, cli, run } = fixture);
});
after(() => fixture?.close());

test('first run with INFERA_AUTO_PULL=1 pulls the starter presets, serves them under their SiliconFlow ids; pull/models/rm', async () => {
  const dataDir = join(work, 'starter');
  const env = { INFERA_DATA_DIR: dataDir };
  const key = 'sk-pull-test-key-0123456789';
  const server = cli(['serve', '--port', '0'], { ...env, INFERA_ADMIN_KEY: 'admin-key-for-pull-test', INFERA_AUTO_PULL: '1', INFERA_API_KEY: key });
  try {
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no banner in 60 s:\n${server.output()}`)), 60_000);
      server.child.stderr.on('data', () => {
        const match = /serving the SiliconFlow \/ OpenAI API at (http:\/\/\S+)\/v1/.exec(server.output());
        if (match && /-d '\{"model":.*\n/.test(server.output())) {
          clearTimeout(timer);
          resolve(match[1]!);
        }
      });
      server.exited.then((code) => reject(new Error(`exited ${code}:\n${server.output()}`)));
    });
    const output = server.output();
    assert.match(output, /INFERA_AUTO_PULL: no models configured or pulled; pulling the starter set/);
    assert.match(output, /hf:infera-test\/tiny-chat-GGUF:Q8_0 from http:\/\/127\.0\.0\.1:\d+: 1 file/);
    assert.match(output, /100%/, 'a plain progress line per 5 % when stderr is not a terminal');
    assert.match(output, /ms:infera-test\/tiny-rerank-GGUF:Q8_0: done/);
    assert.doesNotMatch(output, /TINY TEST MODELS/);
    assert.match(output, /serving the presets pulled into/);
    assert.match(output, /curl \S+\/v1\/chat\/completions -H "Authorization: Bearer \$INFERA_API_KEY"/, 'the banner\'s curl carries the key');
    assert.match(output, /"model":"Qwen\/Qwen3-1\.7B"/);
    const manifest = JSON.parse(readFileSync(join(dataDir, 'models', 'manifest.json'), 'utf8'));
    assert.deepEqual(manifest.models.map((model: { preset: string }) => model.preset).sort(), ['BAAI/bge-m3', 'BAAI/bge-reranker-v2-m3', 'Qwen/Qwen3-1.7B', 'stabilityai/sd-turbo']);
    const sd = manifest.models.find((model: { preset: string }) => model.preset === 'stabilityai/sd-turbo');
    assert.ok(existsSync(join(dataDir, 'models', sd.path, 'unet', 'model.onnx')), 'the ONNX pipeline folder is in place');
    assert.ok(!hub.log.some((line) => line.startsWith('GET cdn') && line.endsWith('auth')), 'the token never goes to the CDN');
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: key });
    const ids = (await client.models.list()).data.map((model) => model.id).sort();
    assert.deepEqual(ids, ['BAAI/bge-m3', 'BAAI/bge-reranker-v2-m3', 'Qwen/Qwen3-1.7B', 'stabilityai/sd-turbo']);
    const completion = await client.chat.completions.create({ model: 'Qwen/Qwen3-1.7B', messages: [{ role: 'user', content: 'hello' }] });
    assert.equal(completion.choices[0]!.message.content, TINY_CHAT_SCRIPT.answer);
    // `infera models` asks the running server (this config's port, the admin key) what is loaded.
    const live = await run(['models'], { ...env, PORT: new URL(url).port, INFERA_ADMIN_KEY: 'admin-key-for-pull-test' });
    assert.equal(live.code, 0, live.output);
    assert.match(live.output, /hf:infera-test\/tiny-chat-GGUF:Q8_0 .*chat\s+llama-cpp\s+Qwen\/Qwen3-1\.7B\s+yes/);
    assert.match(live.output, /hf:infera-test\/tiny-sd-onnx .*stabilityai\/sd-turbo\s+no/);
    const embedding = await client.embeddings.create({ model: 'BAAI/bge-m3', input: 'hello', encoding_format: 'float' });
    assert.equal(embedding.data[0]!.embedding.length, 128);
    const image = await client.images.generate({ model: 'stabilityai/sd-turbo', prompt: 'a cat', size: '64x64', response_format: 'b64_json' } as never);
    assert.ok(image.data?.[0]?.b64_json);

    // The same pull over the admin API, as server-sent events.
    const response = await fetch(`${url}/admin/models/pull`, {
      method: 'POST',
      headers: { authorization: 'Bearer admin-key-for-pull-test', 'content-type': 'application/json' },
      body: JSON.stringify({ ref: 'hf:infera-test/tiny-chat-GGUF/README.md' }),
    });
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /text\/event-stream/);
    const events = (await response.text()).split('\n\n').filter(Boolean).map((frame) => /^event: (\S+)/.exec(frame)?.[1]);
    assert.deepEqual(events.filter((event) => event !== 'progress'), ['resolved', 'done', 'end']);
    const failed = await fetch(`${url}/admin/models/pull`, {
      method: 'POST',
      headers: { authorization: 'Bearer admin-key-for-pull-test', 'content-type': 'application/json' },
      body: JSON.stringify({ ref: 'hf:infera-test/nope' }),
    });
    const text = await failed.text();
    assert.match(text, /event: error\ndata: \{"code":"not_found","exit_code":10,"message":"hf:infera-test\/nope was not found/);
  } finally {
    server.child.kill('SIGKILL');
  }

  const again = await run(['pull', '--preset', 'starter'], env);
  assert.equal(again.code, 0, again.output);
  assert.equal(again.output.match(/all here already/g)?.length, 4, again.output);

  const listed = await run(['models'], env);
  assert.equal(listed.code, 0, listed.output);
  assert.match(listed.output, /hf:infera-test\/tiny-sd-onnx\s+\S+ \S+\s+text-to-image\s+onnx-diffusion\s+stabilityai\/sd-turbo/);
  assert.match(listed.output, /ms:infera-test\/tiny-rerank-GGUF:Q8_0 .* reranker\s+llama-cpp\s+BAAI\/bge-reranker-v2-m3/);

  const removed = await run(['rm', 'BAAI/bge-m3'], env);
  assert.equal(removed.code, 0, removed.output);
  assert.match(removed.output, /removed hf:infera-test\/tiny-embed-GGUF/);
  assert.ok(!existsSync(join(dataDir, 'models', 'hf', 'infera-test', 'tiny-embed-GGUF')));
  const missing = await run(['rm', 'BAAI/bge-m3'], env);
  assert.equal(missing.code, 10);
  assert.match(missing.output, /no pulled model is BAAI\/bge-m3/);
});
