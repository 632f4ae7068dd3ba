// The admin console at /console in headless Chromium (Debian's `chromium` via playwright-core), against
// the real server on the tiny models plus one whose file is missing: create a key in the console and
// use it in the playground, see the usage it made as charts and the models' states (ready, and failed
// with the reason), revoke the key, create and top up an account. Screenshots go to
// test-artifacts/console/.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { type FakeUpstream, startFakeUpstream } from '../src/engines/openai-compatible/testing/fake-upstream.ts';
import { tinyModelConfigs } from '../src/registry/default-models.ts';
import { TINY_CHAT_SCRIPT } from '../src/tiny-models/tiny-chat.ts';
import { http, SHARED_DATA_DIR, startTestServer, type TestServer } from './helpers/server.ts';

const ADMIN = 'admin-console-test-key';
const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((path) => existsSync(path));
const ARTIFACTS = join(import.meta.dirname, '..', 'test-artifacts', 'console');
const BROKEN = 'org/broken-chat';
/** A model on two upstream deployments: one answers its health checks, the other is a port nothing listens on. */
const ROUTED = 'org/routed-chat';

describe('admin console in a real browser', { skip: CHROMIUM ? false : 'no chromium: apt-get install chromium (.ci/run does)' }, () => {
  let server: TestServer;
  let browser: Browser;
  let page: Page;
  let secret = '';
  let keyId = '';
  let upstream: FakeUpstream;
  const id = (name: string) => server.server.services.registry.find(name)!.config.id;
  const shot = async (name: string) => {
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
  };
  const openConsole = async () => {
    await page.goto(`${server.url}/console`);
    await page.waitForSelector('body[data-loaded="true"]');
  };

  before(async () => {
    upstream = await startFakeUpstream();
    upstream.route('GET', '/v1/models', (_request, response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end('{"object":"list","data":[]}');
    });
    const deployment = (name: string, baseUrl: string) => ({ id: ROUTED, type: 'chat', engine: 'openai-compatible', upstream: { baseUrl, contextSize: 4096 }, deployment: { name } });
    const models = [
      ...(await tinyModelConfigs(SHARED_DATA_DIR)),
      { id: BROKEN, type: 'chat', engine: 'llama-cpp', path: '/nonexistent/broken.gguf' },
      deployment('gpu-up', `${upstream.url}/v1`),
      deployment('gpu-down', 'http://127.0.0.1:9/v1'),
    ];
    server = await startTestServer({ config: { server: { adminKey: ADMIN }, models, routing: { healthCheckIntervalSeconds: 0.2 } } });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    page = await browser.newPage({ viewport: { width: 1400, height: 1200 } });
    await page.goto(`${server.url}/console`);
    await page.fill('#admin-key', ADMIN);
    await page.press('#admin-key', 'Tab');
    await page.waitForSelector('body[data-loaded="true"]');
  });
  after(async () => {
    await browser?.close();
    await server?.close();
    await upstream?.close();
  });

  test('the models table lists every configured model with its state', async () => {
    const states = await page.$$eval('#models tbody tr', (rows) => rows.map((tr) => [tr.getAttribute('data-model'), tr.getAttribute('data-state')]));
    assert.deepEqual(
      states.map(([model]) => model),
      server.server.services.registry.entries().map((entry) => entry.config.id),
    );
    assert.ok(states.every(([, state]) => state === 'unloaded'));
  });

  test('a key created in the console works in the playground, and its usage shows in the charts', async () => {
    await page.fill('#key-name', 'made-in-console');
    await page.fill('#key-rpm', '100');
    await page.fill('#key-tpd', '50000');
    await page.fill('#key-ipm', '7');
    await page.click('#key-form button[type="submit"]');
    await page.waitForSelector('#new-key:not([hidden])');
    secret = (await page.textContent('#new-key-secret')) ?? '';
    assert.match(secret, /^sk-/);
    const row = page.locator('#keys tbody tr', { hasText: 'made-in-console' });
    keyId = (await row.getAttribute('data-key')) ?? '';
    assert.match((await row.textContent()) ?? '', /rpm 100/);
    assert.match((await row.textContent()) ?? '', /tpd 50000/);
    assert.match((await row.textContent()) ?? '', /ipm 7/);
    assert.ok(!((await row.textContent()) ?? '').includes(secret), 'the list shows a prefix, never the secret');
    await shot('key-created');

    await page.click('#use-key');
    await page.waitForURL(`${server.url}/`);
    assert.equal(await page.inputValue('#key'), secret, 'the playground has the key');
    await page.waitForSelector('body[data-models]:not([data-models="0"])');
    await page.fill('#chat-input', 'hello there');
    await page.click('#chat-send');
    const reply = page.locator('.message.assistant').last();
    await reply.and(page.locator('[data-done]')).waitFor();
    assert.equal(await reply.locator('.answer').textContent(), TINY_CHAT_SCRIPT.answer);
    // And the broken model, so that the console has a failure to show.
    const broken = await http(server.baseURL, '/chat/completions', { body: { model: BROKEN, messages: [{ role: 'user', content: 'x' }] }, headers: { authorization: `Bearer ${secret}` } });
    assert.equal(broken.status, 503);

    await openConsole();
    const chat = id('Qwen/Qwen3-8B');
    await page.waitForSelector(`#models tr[data-model="${chat}"][data-state="ready"]`);
    // Its lifecycle: the memory the budget counts, and when it unloads (the 5 min keep-alive).
    const loaded = page.locator(`#models tr[data-model="${chat}"]`);
    assert.ok(Number(await loaded.getAttribute('data-memory')) > 0);
    assert.match((await loaded.textContent()) ?? '', /\d+(\.\d+)? (KiB|MiB)\d{1,2}:\d\d:\d\d/);
    const failed = page.locator(`#models tr[data-model="${BROKEN}"][data-state="failed"]`);
    assert.match((await failed.textContent()) ?? '', /broken\.gguf|failed|no such file|ENOENT/i);
    const usage = await page.$$eval('#usage-by-model li', (items) => items.map((li) => [li.getAttribute('data-group'), Number(li.getAttribute('data-value'))]));
    assert.deepEqual(
      usage.find(([group]) => group === chat),
      [chat, 1],
    );
    const days = await page.$$eval('#usage-by-day li', (items) => items.map((li) => Number(li.getAttribute('data-value'))));
    assert.equal(days.length, 1);
    assert.ok(days[0]! > 0, 'tokens today');
    await shot('usage-and-models');
  });

  test('the deployments section shows the health of each deployment of a routed model', async () => {
    await page.waitForSelector(`#deployments tr[data-model="${ROUTED}"][data-deployment="gpu-up"][data-healthy="true"]`);
    const down = page.locator(`#deployments tr[data-model="${ROUTED}"][data-deployment="gpu-down"][data-healthy="false"]`);
    await down.waitFor();
    assert.match((await down.textContent()) ?? '', /unhealthy.*health check GET http:\/\/127\.0\.0\.1:9\/v1\/models failed/);
    await shot('deployments');
  });

  test('revoking the key in the console stops it at once', async () => {
    await page.click(`#keys tr[data-key="${keyId}"] button.revoke`);
    await page.waitForSelector(`#keys tr[data-key="${keyId}"][data-disabled="true"]`);
    const refused = await http(server.baseURL, '/models', { headers: { authorization: `Bearer ${secret}` } });
    assert.equal(refused.status, 401);
  });

  test('accounts: create one and top it up', async () => {
    await page.fill('#account-id', 'shop');
    await page.click('#account-form button');
    await page.waitForSelector('#accounts tr[data-account="shop"]');
    await page.fill('#topup-account', 'shop');
    await page.fill('#topup-amount', '12.5');
    await page.click('#topup-form button');
    await page.waitForSelector('#accounts tr[data-account="shop"][data-balance="12.50"]');
    await shot('accounts');
  });

  test('a wrong admin key shows the server\'s refusal, not data', async () => {
    const other = await browser.newPage();
    try {
      await other.goto(`${server.url}/console`);
      await other.fill('#admin-key', 'not-the-admin-key');
      await other.press('#admin-key', 'Tab');
      await other.waitForSelector('#console-status.error');
      assert.match((await other.textContent('#console-status')) ?? '', /admin/i);
      assert.equal(await other.locator('#keys tbody tr').count(), 0);
    } finally {
      await other.close();
    }
  });
});
