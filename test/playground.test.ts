// The playground at / in headless Chromium (Debian's `chromium`, driven by playwright-core), against
// the real server on the tiny models with an API key: the key typed once and kept in the browser, the
// model pickers, a chat with reasoning and a tool call answered from the page, images in the gallery
// (text-to-image and img2img), the embeddings heat-map and the rerank bars in the server's order, each
// request shown as curl without the key. Screenshots go to test-artifacts/playground/.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import sharp from 'sharp';
import { TINY_CHAT_SCRIPT } from '../src/tiny-models/tiny-chat.ts';
import { http, startTestServer, type TestServer } from './helpers/server.ts';

const KEY = 'sk-playground-test-key';
const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((path) => existsSync(path));
const ARTIFACTS = join(import.meta.dirname, '..', 'test-artifacts', 'playground');
/**
 * Browser-side conditions, passed as functions (the page's CSP forbids evaluating strings). This file
 * is compiled without the DOM types, so each reaches `document` through a narrow cast.
 */
type Images = { querySelectorAll(selector: string): ArrayLike<{ complete: boolean; naturalWidth: number }> };
const galleryLoaded = (count: number) => {
  const images = Array.from((globalThis as unknown as { document: Images }).document.querySelectorAll('#gallery img'));
  return images.length === count && images.every((img) => img.complete && img.naturalWidth === 64);
};
const WEATHER_TOOL = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }];

describe('playground in a real browser', { skip: CHROMIUM ? false : 'no chromium: apt-get install chromium (.ci/run does)' }, () => {
  let server: TestServer;
  let browser: Browser;
  let page: Page;
  const requested: string[] = [];
  const auth = { authorization: `Bearer ${KEY}` };
  const id = (name: string) => server.server.services.registry.find(name)!.config.id;
  const shot = async (name: string) => {
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
  };
  const tab = (name: string) => page.click(`nav [data-tab="${name}"]`);

  before(async () => {
    server = await startTestServer({ config: { server: { apiKeys: [KEY] } } });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    page.on('request', (request) => requested.push(request.url()));
    await page.goto(`${server.url}/`);
    await page.fill('#key', KEY);
    await page.press('#key', 'Tab');
    await page.waitForSelector('body[data-models]:not([data-models="0"])');
  });
  after(async () => {
    await browser?.close();
    await server?.close();
  });

  test('the key is typed once and kept in this browser; pickers list the served models', async () => {
    assert.equal(await page.evaluate(() => (globalThis as unknown as { localStorage: { getItem(key: string): string | null } }).localStorage.getItem('infera.apiKey')), KEY);
    assert.equal(await page.inputValue('#chat-model'), id('Qwen/Qwen3-8B'));
    assert.equal(await page.inputValue('#embeddings-model'), id('BAAI/bge-m3'));
    assert.equal(await page.inputValue('#rerank-model'), id('BAAI/bge-reranker-v2-m3'));
    assert.equal(await page.inputValue('#images-model'), id('Kwai-Kolors/Kolors'));
    // A reload keeps the key: the page lists models again without asking.
    await page.reload();
    await page.waitForSelector('body[data-models]:not([data-models="0"])');
    assert.equal(await page.inputValue('#key'), KEY);
  });

  test('chat: the answer streams in, the reasoning in its own panel, token counts and t/s after it', async () => {
    await page.fill('#chat-temperature', '0.7');
    await page.fill('#chat-top-k', '40');
    await page.fill('#chat-seed', '7');
    await page.fill('#chat-input', 'hello there');
    await page.click('#chat-send');
    const reply = page.locator('.message.assistant').last();
    await reply.and(page.locator('[data-done]')).waitFor();
    assert.equal(await reply.getAttribute('data-done'), 'true', await reply.textContent() ?? '');
    assert.equal(await reply.locator('.answer').textContent(), TINY_CHAT_SCRIPT.answer);
    assert.equal((await reply.locator('details.reasoning .content').textContent())?.trim(), TINY_CHAT_SCRIPT.reasoning);
    assert.match((await reply.locator('.stats').textContent()) ?? '', /\d+ prompt · \d+ completion tokens \(\d+ reasoning\) · [\d.]+ tokens\/s/);
    const curl = (await page.textContent('#curl')) ?? '';
    assert.match(curl, new RegExp(`curl -X POST ${server.url}/v1/chat/completions`));
    assert.match(curl, /\$INFERA_API_KEY/);
    assert.match(curl, /"temperature": 0\.7,[\s\S]*"top_k": 40,[\s\S]*"seed": 7,[\s\S]*"enable_thinking": true/, 'the sampling fields are sent');
    assert.ok(!curl.includes(KEY), 'the curl never shows the key');
    await shot('chat');
  });

  test('chat: a tool call is shown as a call, answered from the page, and the model answers with it', async () => {
    await page.click('#chat-clear');
    await page.click('#tab-chat details summary');
    await page.fill('#chat-tools', JSON.stringify(WEATHER_TOOL));
    await page.fill('#chat-input', "What's the weather in Paris?");
    await page.click('#chat-send');
    const call = page.locator('.tool-call[data-name="get_weather"]');
    await call.waitFor();
    assert.match((await call.locator('.call').textContent()) ?? '', /get_weather\(.*Paris.*\)/);
    await call.locator('textarea').fill('{"sky":"sunny","celsius":21}');
    await page.click('.send-results');
    const final = page.locator('.message.assistant').nth(1);
    await final.and(page.locator('[data-done]')).waitFor();
    assert.equal(await final.getAttribute('data-done'), 'true', await final.textContent() ?? '');
    assert.equal(await final.locator('.answer').textContent(), TINY_CHAT_SCRIPT.toolAnswer);
    await shot('chat-tool-call');
    await page.fill('#chat-tools', '');
  });

  test('images: a batch lands in the gallery; img2img from an uploaded picture', async () => {
    await tab('images');
    await page.fill('#images-size', '64x64');
    await page.fill('#images-steps', '2');
    await page.fill('#images-batch', '2');
    await page.click('#images-send');
    await page.waitForFunction(galleryLoaded, 2);
    const picture = await sharp({ create: { width: 64, height: 64, channels: 3, background: { r: 0, g: 128, b: 255 } } }).png().toBuffer();
    const file = join(tmpdir(), `infera-playground-${process.pid}.png`);
    writeFileSync(file, picture);
    await page.setInputFiles('#images-init', file);
    await page.fill('#images-batch', '1');
    await page.click('#images-send');
    await page.waitForFunction(galleryLoaded, 3);
    assert.match((await page.textContent('#curl')) ?? '', /"image": "data:image\/png;base64,/);
    await shot('images');
  });

  test('embeddings: the heat-map shows the cosine similarity of every pair, as the API computes', async () => {
    await tab('embeddings');
    const texts = ['The cat sleeps on the mat.', 'A kitten naps on the rug.', 'Stock markets fell sharply today.'];
    await page.fill('#embeddings-input', texts.join('\n'));
    await page.click('#embeddings-send');
    await page.waitForFunction(() => (globalThis as unknown as { document: Images }).document.querySelectorAll('#heatmap td').length === 9);
    const shown = await page.$$eval('#heatmap td', (cells) => cells.map((cell) => ({ row: Number(cell.dataset.row), column: Number(cell.dataset.column), value: Number(cell.dataset.value) })));
    const answer = await http(server.baseURL, '/embeddings', { body: { model: 'BAAI/bge-m3', input: texts }, headers: auth });
    const vectors: number[][] = answer.json.data.map((item: { embedding: number[] }) => item.embedding);
    const cosine = (a: number[], b: number[]) => {
      const dot = a.reduce((sum, x, i) => sum + x * b[i]!, 0);
      return dot / Math.sqrt(a.reduce((sum, x) => sum + x * x, 0) * b.reduce((sum, x) => sum + x * x, 0));
    };
    for (const cell of shown) assert.ok(Math.abs(cell.value - cosine(vectors[cell.row]!, vectors[cell.column]!)) < 1e-6, JSON.stringify(cell));
    for (const cell of shown.filter((c) => c.row === c.column)) assert.ok(Math.abs(cell.value - 1) < 1e-6);
    await shot('embeddings');
  });

  test('rerank: the bars are in the order and proportion of the scores the API gives', async () => {
    await tab('rerank');
    const documents = ['Cats sleep on warm mats and sofas.', 'The stock market closed lower.', 'Kittens nap in the sun.'];
    await page.fill('#rerank-query', 'Where do cats sleep?');
    await page.fill('#rerank-documents', documents.join('\n'));
    await page.click('#rerank-send');
    await page.waitForFunction(() => (globalThis as unknown as { document: Images }).document.querySelectorAll('#rerank-bars li').length === 3);
    const bars = await page.$$eval('#rerank-bars li', (items) => items.map((item) => ({ index: Number(item.dataset.index), score: Number(item.dataset.score), width: item.querySelector('.bar')?.getAttribute('style') })));
    const answer = await http(server.baseURL, '/rerank', { body: { model: 'BAAI/bge-reranker-v2-m3', query: 'Where do cats sleep?', documents }, headers: auth });
    assert.deepEqual(bars.map((bar) => bar.index), answer.json.results.map((result: { index: number }) => result.index));
    for (const [i, bar] of bars.entries()) {
      assert.ok(Math.abs(bar.score - answer.json.results[i].relevance_score) < 1e-9);
      assert.equal(bar.width, `width: ${Math.max(1, Math.round(bar.score * 100))}%;`);
      if (i > 0) assert.ok(bar.score <= bars[i - 1]!.score, 'sorted, best first');
    }
    await shot('rerank');
  });

  test('the page fetched nothing from another host', () => {
    const foreign = requested.filter((url) => !url.startsWith(`${server.url}/`) && !url.startsWith('data:') && !url.startsWith('blob:'));
    assert.deepEqual(foreign, []);
  });
});
