import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadConfig } from './load.ts';

const dir = () => mkdtempSync(join(tmpdir(), 'infera-config-'));

test('defaults without a file: loopback, port 8000, no models (tiny models get served)', () => {
  const { config, source } = loadConfig({}, {}, dir());
  assert.equal(config.server.host, '127.0.0.1');
  assert.equal(config.server.port, 8000);
  assert.deepEqual(config.models, []);
  assert.match(source, /no config file/);
});

test('precedence: file < environment < flags; paths are relative to the file', () => {
  const root = dir();
  writeFileSync(
    join(root, 'infera.yaml'),
    'server:\n  port: 9000\n  host: 0.0.0.0\nmodels:\n  - id: a/b\n    type: chat\n    engine: llama-cpp\n    path: models/x.gguf\n',
  );
  const fromFile = loadConfig({}, {}, root).config;
  assert.equal(fromFile.server.port, 9000);
  assert.equal(fromFile.models[0].path, join(root, 'models/x.gguf'));
  const fromEnv = loadConfig({}, { PORT: '9100', HOST: '127.0.0.2', INFERA_API_KEY: 'sk-from-env-123' }, root).config;
  assert.equal(fromEnv.server.port, 9100);
  assert.equal(fromEnv.server.host, '127.0.0.2');
  assert.deepEqual(fromEnv.server.apiKeys, ['sk-from-env-123']);
  const fromFlags = loadConfig({ port: 9200, host: '127.0.0.3' }, { PORT: '9100' }, root).config;
  assert.equal(fromFlags.server.port, 9200);
  assert.equal(fromFlags.server.host, '127.0.0.3');
});

test('invalid files name every bad key', () => {
  const root = dir();
  const path = join(root, 'bad.yaml');
  writeFileSync(path, 'server:\n  port: 70000\n  surprise: 1\nmodels:\n  - id: x\n    type: banana\n    engine: llama-cpp\n');
  assert.throws(
    () => loadConfig({ configPath: path }, {}, root),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.match(error.message, /server\.port/);
      assert.match(error.message, /surprise/);
      assert.match(error.message, /models\[0\]\.type/);
      assert.match(error.message, /models\[0\]\.path/);
      return true;
    },
  );
});

test('an id or alias used twice is refused (ids are case-insensitive)', () => {
  const root = dir();
  const path = join(root, 'dup.json');
  writeFileSync(
    path,
    JSON.stringify({
      models: [
        { id: 'Org/One', type: 'chat', engine: 'llama-cpp', path: 'a.gguf' },
        { id: 'org/two', aliases: ['ORG/ONE'], type: 'embedding', engine: 'llama-cpp', path: 'b.gguf' },
      ],
    }),
  );
  assert.throws(() => loadConfig({ configPath: path }, {}, root), /used twice/);
});

test('a missing explicit config file and a non-integer PORT are clear errors', () => {
  assert.throws(() => loadConfig({ configPath: '/nonexistent/infera.yaml' }), /not found/);
  assert.throws(() => loadConfig({}, { PORT: 'eighty' }, dir()), /PORT must be an integer/);
  for (const port of ['80x', '8e3', ' 80', '0x50', '70000', '-1'])
    assert.throws(() => loadConfig({ port }, {}, dir()), /--port must be an integer from 0 to 65535/);
  assert.equal(loadConfig({ port: '8080' }, {}, dir()).config.server.port, 8080);
});

test('a short INFERA_API_KEY or --api-key is refused naming what the operator set', () => {
  const cwd = mkdtempSync(join(tmpdir(), 'infera-config-'));
  assert.throws(() => loadConfig({}, { INFERA_API_KEY: 'short' }, cwd), (error: unknown) => {
    assert.ok(error instanceof ConfigError);
    assert.match(error.message, /^INFERA_API_KEY must be at least 8 characters/);
    assert.doesNotMatch(error.message, /apiKeys/);
    return true;
  });
  assert.throws(() => loadConfig({ apiKey: 'tiny' }, {}, cwd), /^ConfigError: --api-key must be at least 8 characters|--api-key must be at least 8/);
  assert.deepEqual(loadConfig({}, { INFERA_API_KEY: 'long-enough-key' }, cwd).config.server.apiKeys, ['long-enough-key']);
});

test("the config parses to the same result with and without zod's compiled parsers (PARSE_ONCE)", async () => {
  const { parse: parseYaml } = await import('yaml');
  const { readFileSync } = await import('node:fs');
  const { configSchema } = await import('./schema.ts');
  const { PARSE_ONCE } = await import('./parse-once.ts');
  const example = parseYaml(readFileSync(new URL('../../infera.example.yaml', import.meta.url), 'utf8')) as Record<string, unknown>;
  const invalid = {
    server: { port: 'x', logLevel: 'loud', cors: { origins: ['ftp://a'] }, bodyLimits: { chat: 0, other: 1 } },
    storage: { redisFailure: 'maybe' },
    models: [{ id: 'a/b', type: 'chat', engine: 'llama-cpp', path: 'x.gguf', onnx: {} }, { id: 'c', type: 'chat', engine: 'nope' }, { type: 'image', engine: 'onnx' }],
    upstreams: [{ baseUrl: 'not a url' }],
    extra: true,
  };
  const issues = (result: { success: boolean; error?: { issues: { path: PropertyKey[]; code: string; message: string }[] } }) =>
    result.error?.issues.map(({ path, code, message }) => ({ path, code, message }));
  for (const input of [{}, example, invalid]) {
    const compiled = configSchema.safeParse(structuredClone(input));
    const interpreted = configSchema.safeParse(structuredClone(input), PARSE_ONCE);
    assert.equal(interpreted.success, compiled.success);
    // Key order too (JSON text): the compiled parser builds each object itself.
    assert.equal(JSON.stringify(interpreted.data), JSON.stringify(compiled.data));
    assert.deepEqual(issues(interpreted), issues(compiled));
  }
  assert.ok(configSchema.safeParse(example).success, 'infera.example.yaml is a valid config');
  assert.ok((issues(configSchema.safeParse(invalid, PARSE_ONCE)) ?? []).length >= 8);
});

test('llamaCpp.decodeOn: "loop" by default, "worker" taken, anything else refused naming the key', () => {
  const root = dir();
  const write = (decodeOn?: string) => {
    const path = join(root, `decode-${decodeOn ?? 'default'}.json`);
    const llamaCpp = decodeOn === undefined ? {} : { decodeOn };
    writeFileSync(path, JSON.stringify({ models: [{ id: 'a/b', type: 'chat', engine: 'llama-cpp', path: 'x.gguf', llamaCpp }] }));
    return path;
  };
  const decodeOnOf = (path: string) => (loadConfig({ configPath: path }, {}, root).config.models[0] as unknown as { llamaCpp: { decodeOn: string } }).llamaCpp.decodeOn;
  assert.equal(decodeOnOf(write()), 'loop');
  assert.equal(decodeOnOf(write('worker')), 'worker');
  assert.throws(
    () => loadConfig({ configPath: write('gpu') }, {}, root),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.match(error.message, /models\[0\]\.llamaCpp\.decodeOn/);
      return true;
    },
  );
});
