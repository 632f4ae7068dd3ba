// The quick form's discovery against recorded answers over real sockets: which server it is (from its
// own answers), and a model entry of the right type for every model it lists.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { modelsOfUpstreams } from './discover.ts';
import { type FakeUpstream, serve, startFakeUpstream } from './testing/fake-upstream.ts';

const logger = pino({ level: 'silent' });

async function discover(setup: (upstream: FakeUpstream) => void, path = '/v1', dialect: 'auto' | 'tei' = 'auto') {
  const upstream = await startFakeUpstream();
  try {
    setup(upstream);
    const models = await modelsOfUpstreams([{ baseUrl: `${upstream.url}${path}`, dialect, headers: {} }], [], logger);
    return models.map((model) => {
      const options = (model as typeof model & { upstream: { dialect: string; contextSize?: number; model: string } }).upstream;
      return { id: model.id, type: model.type, dialect: options.dialect, contextSize: options.contextSize, aliases: model.aliases };
    });
  } finally {
    await upstream.close();
  }
}

test('vLLM: owned_by vllm, chat, the context size from max_model_len', async () => {
  assert.deepEqual(await discover((u) => u.route('GET', '/v1/models', serve('vllm/models.json'))), [
    { id: 'Qwen/Qwen3-8B', type: 'chat', dialect: 'vllm', contextSize: 40960, aliases: [] },
  ]);
});

test('llama-server: owned_by llamacpp, n_ctx_train', async () => {
  const [model] = await discover((u) => u.route('GET', '/v1/models', serve('llama-server/models.json')));
  assert.deepEqual([model!.dialect, model!.contextSize], ['llama-server', 40960]);
});

test('Ollama: /api/version answers; types from /api/show capabilities', async () => {
  const models = await discover((u) => {
    u.route('GET', '/v1/models', serve('ollama/models.json'));
    u.route('GET', '/api/version', serve('ollama/version.json'));
    u.route('POST', '/api/show', async (request, response) =>
      serve(request.body.model.startsWith('nomic') ? 'ollama/show-embed.json' : 'ollama/show-chat.json')(request, response),
    );
  });
  assert.deepEqual(models.map((m) => [m.id, m.type, m.dialect]), [
    ['qwen3:8b', 'chat', 'ollama'],
    ['nomic-embed-text:latest', 'embedding', 'ollama'],
  ]);
});

test('Infinity: capabilities say embed or rerank (its list at the server root)', async () => {
  const models = await discover((u) => u.route('GET', '/models', serve('infinity/models.json')), '');
  assert.deepEqual(models.map((m) => [m.id, m.type, m.dialect]), [
    ['BAAI/bge-small-en-v1.5', 'embedding', 'infinity'],
    ['mixedbread-ai/mxbai-rerank-xsmall-v1', 'reranker', 'infinity'],
  ]);
});

test('TEI: no /models; /info names the model and says reranker', async () => {
  const models = await discover((u) => u.route('GET', '/info', serve('tei/info.json')), '');
  assert.deepEqual(models.map((m) => [m.id, m.type, m.dialect]), [['BAAI/bge-reranker-v2-m3', 'reranker', 'tei']]);
});

test('a server that answers nothing known stops discovery with a message naming it', async () => {
  await assert.rejects(
    discover(() => {}),
    (error: Error) => /^upstream http:\/\/127\.0\.0\.1:\d+\/v1: cannot list its models: .*--upstream-dialect/.test(error.message),
  );
});

test('two upstreams listing the same model: two deployments of it; an id the config serves is skipped', async () => {
  const [first, second] = await Promise.all([startFakeUpstream(), startFakeUpstream()]);
  try {
    for (const upstream of [first, second]) upstream.route('GET', '/v1/models', serve('vllm/models.json'));
    const quick = (upstream: FakeUpstream) => ({ baseUrl: `${upstream.url}/v1`, dialect: 'auto' as const, headers: {} });
    const models = await modelsOfUpstreams([quick(first), quick(second)], [], logger);
    assert.deepEqual(
      models.map((model) => [model.id, (model as typeof model & { upstream: { baseUrl: string } }).upstream.baseUrl]),
      [
        ['Qwen/Qwen3-8B', `${first.url}/v1`],
        ['Qwen/Qwen3-8B', `${second.url}/v1`],
      ],
    );
    assert.deepEqual(await modelsOfUpstreams([quick(first), quick(second)], ['qwen/qwen3-8b'], logger), []);
  } finally {
    await Promise.all([first.close(), second.close()]);
  }
});
