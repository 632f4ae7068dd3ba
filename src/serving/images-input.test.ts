import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import sharp from 'sharp';
import type { InferaError } from '../errors/index.ts';
import { decodeInitImage, FetchAgents, fetchImageBytes, isPrivateAddress, loadImageInput } from './images-input.ts';

let server: Server;
let base: string;
let png: Buffer;

before(async () => {
  png = await sharp({ create: { width: 100, height: 60, channels: 4, background: { r: 200, g: 10, b: 10, alpha: 1 } } }).png().toBuffer();
  server = createServer((request, response) => {
    if (request.url === '/image.png') return response.writeHead(200, { 'content-type': 'image/png' }).end(png);
    if (request.url === '/redirect') return response.writeHead(302, { location: '/image.png' }).end();
    if (request.url === '/big') {
      response.writeHead(200, { 'content-type': 'image/png' }); // no content-length: the stream is counted
      response.write(Buffer.alloc(64 * 1024));
      response.write(Buffer.alloc(64 * 1024));
      return response.end();
    }
    if (request.url === '/slow') return void setTimeout(() => response.end(png), 5000).unref();
    response.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(async () => {
  server.closeAllConnections();
  server.close();
  await agents.close();
});

const agents = new FetchAgents();
const open = { agents, allowPrivateUrls: true, maxBytes: 100_000, timeoutMs: 2000 };
const guarded = { ...open, allowPrivateUrls: false };
const status400 = (param = 'image', pattern?: RegExp) => (e: InferaError) =>
  e.status === 400 && e.param === param && (!pattern || pattern.test(e.message));

test('private, loopback and reserved addresses are recognised', () => {
  for (const address of ['127.0.0.1', '10.1.2.3', '172.20.0.1', '192.168.1.1', '169.254.169.254', '100.64.0.1', '0.0.0.0', '::1', '::', 'fe80::1', 'fd00::1', '::ffff:127.0.0.1', '::ffff:10.0.0.1', 'not-an-ip'])
    assert.equal(isPrivateAddress(address), true, address);
  for (const address of ['8.8.8.8', '1.1.1.1', '172.32.0.1', '2606:4700:4700::1111', '::ffff:8.8.8.8'])
    assert.equal(isPrivateAddress(address), false, address);
});

test('URL fetch refuses loopback by IP and by name unless allowed', async () => {
  await assert.rejects(fetchImageBytes(`${base}/image.png`, guarded), status400('image', /private/));
  const port = new URL(base).port;
  await assert.rejects(fetchImageBytes(`http://localhost:${port}/image.png`, guarded), status400('image', /private/));
  await assert.rejects(fetchImageBytes(`http://[::1]:${port}/image.png`, guarded), status400('image', /private/));
  assert.deepEqual(await fetchImageBytes(`${base}/image.png`, open), png);
  assert.deepEqual(await fetchImageBytes(`${base}/redirect`, open), png, 'redirects are followed');
});

test('URL fetch limits: size (declared or streamed), time, status, scheme', async () => {
  await assert.rejects(fetchImageBytes(`${base}/image.png`, { ...open, maxBytes: 10 }), status400('image', /larger/));
  await assert.rejects(fetchImageBytes(`${base}/big`, open), status400('image', /larger/));
  const started = Date.now();
  await assert.rejects(fetchImageBytes(`${base}/slow`, { ...open, timeoutMs: 200 }), status400('image', /longer than 200 ms/));
  assert.ok(Date.now() - started < 2000);
  await assert.rejects(fetchImageBytes(`${base}/missing`, open), status400('image', /HTTP 404/));
  await assert.rejects(fetchImageBytes('file:///etc/passwd', open), status400('image', /scheme/));
  await assert.rejects(fetchImageBytes('not a url', open), status400('image'));
});

test('data URIs decode; bad ones and non-images are 400 naming image', async () => {
  const uri = `data:image/png;base64,${png.toString('base64')}`;
  assert.deepEqual(await loadImageInput(uri, guarded), png);
  await assert.rejects(loadImageInput('data:image/png,rawtext', guarded), status400());
  await assert.rejects(loadImageInput(uri, { ...guarded, maxBytes: 10 }), status400('image', /larger/));
  await assert.rejects(decodeInitImage(Buffer.from('not an image'), undefined, { minSize: 64, maxSize: 1024 }), status400());
});

test('init images are decoded to RGB at the requested size, or their own size rounded to multiples of 8', async () => {
  const exact = await decodeInitImage(png, { width: 64, height: 64 }, { minSize: 64, maxSize: 1024 });
  assert.deepEqual([exact.width, exact.height, exact.channels, exact.data.length], [64, 64, 3, 64 * 64 * 3]);
  assert.deepEqual([...exact.data.slice(0, 3)], [200, 10, 10]);
  const own = await decodeInitImage(png, undefined, { minSize: 32, maxSize: 1024 });
  assert.deepEqual([own.width, own.height], [96, 56]);
  const scaled = await decodeInitImage(png, undefined, { minSize: 64, maxSize: 1024 });
  assert.deepEqual([scaled.width, scaled.height], [104, 64], 'scaled up so the short side reaches minSize');
  const budget = await decodeInitImage(png, undefined, { minSize: 16, maxSize: 1024, maxPixels: 50 * 30 });
  assert.deepEqual([budget.width, budget.height], [48, 24], 'scaled down into the pixel budget (100x60 → 50x30, rounded down to multiples of 8)');
});
