import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { ModelRegistry } from '../registry/registry.ts';
import { byteSize, formatBytes, keepAliveMs } from './lifecycle.ts';
import { configSchema } from './schema.ts';

test('keep-alive values: Ollama durations, seconds as numbers or strings, 0, and any negative for never', () => {
  assert.equal(keepAliveMs('5m'), 300_000);
  assert.equal(keepAliveMs('30s'), 30_000);
  assert.equal(keepAliveMs('1h30m'), 5_400_000);
  assert.equal(keepAliveMs('500ms'), 500);
  assert.equal(keepAliveMs('1.5h'), 5_400_000);
  assert.equal(keepAliveMs(' 10 '), 10_000);
  assert.equal(keepAliveMs(90), 90_000);
  assert.equal(keepAliveMs(0.5), 500);
  assert.equal(keepAliveMs(0), 0);
  assert.equal(keepAliveMs('0'), 0);
  for (const never of [-1, '-1', '-5m', -0.1]) assert.equal(keepAliveMs(never), Number.POSITIVE_INFINITY, String(never));
  for (const bad of ['soon', '5 minutes', '5d', '', 'm', '--1', true, null, {}, Number.NaN, Number.POSITIVE_INFINITY])
    assert.equal(keepAliveMs(bad), undefined, JSON.stringify(bad));
});

test('byte sizes: binary and decimal units, bare numbers; formatted back in binary units', () => {
  assert.equal(byteSize('8GiB'), 8 * 1024 ** 3);
  assert.equal(byteSize('8G'), 8 * 1024 ** 3);
  assert.equal(byteSize('8GB'), 8e9);
  assert.equal(byteSize('512 MiB'), 512 * 1024 ** 2);
  assert.equal(byteSize('1.5kib'), 1536);
  assert.equal(byteSize(1000), 1000);
  assert.equal(byteSize('1000'), 1000);
  for (const bad of ['8 gigs', '-1G', 'G', -5, '']) assert.equal(byteSize(bad), undefined, JSON.stringify(bad));
  assert.equal(formatBytes(1536), '1.50 KiB');
  assert.equal(formatBytes(8 * 1024 ** 3), '8.00 GiB');
  assert.equal(formatBytes(800), '800 B');
});

test('config: lifecycle defaults (5 min keep-alive, no cap, no budget), per-model keepAlive and memory, errors naming the key', () => {
  const config = configSchema.parse({
    lifecycle: { memoryBudget: '8GiB', maxLoaded: 2, preload: ['a'] },
    models: [{ id: 'a', type: 'chat', engine: 'llama-cpp', path: '/x.gguf', keepAlive: '-1', memory: '2GiB' }],
  });
  assert.deepEqual(config.lifecycle, { keepAlive: 300_000, maxLoaded: 2, memoryBudget: 8 * 1024 ** 3, preload: ['a'] });
  assert.equal(config.models[0]!.keepAlive, Number.POSITIVE_INFINITY);
  assert.equal(config.models[0]!.memory, 2 * 1024 ** 3);
  assert.deepEqual(configSchema.parse({}).lifecycle, { keepAlive: 300_000, maxLoaded: 0, preload: [] });

  const bad = configSchema.safeParse({
    lifecycle: { keepAlive: 'soon', memoryBudget: 'lots' },
    models: [{ id: 'a', type: 'chat', engine: 'llama-cpp', path: '/x.gguf', keepAlive: '5 min' }],
  });
  assert.ok(!bad.success);
  const issues = bad.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`);
  assert.ok(issues.some((line) => /^lifecycle\.keepAlive: must be a duration like "5m"/.test(line)), issues.join('\n'));
  assert.ok(issues.some((line) => /^lifecycle\.memoryBudget: must be a size like "8GiB"/.test(line)), issues.join('\n'));
  assert.ok(issues.some((line) => /^models\.0\.keepAlive: must be a duration/.test(line)), issues.join('\n'));
});

test('lifecycle.preload names configured models (ids or aliases); an unknown name stops startup naming the key', () => {
  const models = configSchema.parse({ models: [{ id: 'a', aliases: ['alias-b'], type: 'chat', engine: 'llama-cpp', path: '/x.gguf' }, { id: 'c', type: 'chat', engine: 'llama-cpp', path: '/y.gguf', eager: true }] }).models;
  const logger = pino({ level: 'silent' });
  const registry = new ModelRegistry(models, { engines: [], logger, lifecycle: { preload: ['ALIAS-B'] } });
  assert.deepEqual(registry.entries().map((entry) => entry.preload), [true, true]);
  assert.throws(() => new ModelRegistry(models, { engines: [], logger, lifecycle: { preload: ['nope'] } }), /^Error: lifecycle\.preload: no configured model is named "nope" \(models: a, c\)$/);
});
