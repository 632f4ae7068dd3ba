// The compiled build is a bundle (scripts/build.js): code from many source files and packages shares a
// few output files, so whatever finds a file next to itself must still find it. Each request below
// reaches one such file through the compiled server: the playground (src/http/playground.ts, by its
// import.meta.url), the version in package.json (src/http/app.ts), swagger-ui's own static assets
// (its __dirname), and an image model, whose engine runs ONNX sessions in the worker entry
// dist/engines/onnx/session-worker.js (found by src/engines/onnx/sessions.ts's import.meta.url).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import { join } from 'node:path';

test('the compiled bundle finds the files its modules and bundled packages read next to themselves', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'infera-bundle-'));
  const child = spawn(process.execPath, ['bin/infera.js', 'serve', '--port', '0'], {
    env: { ...process.env, INFERA_DATA_DIR: dataDir, INFERA_CONFIG: '', LOG_LEVEL: 'warn', INFERA_API_KEY: '', HOST: '127.0.0.1' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk) => (stderr += chunk));
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  try {
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no banner in 60 s:\n${stderr}`)), 60_000);
      child.stderr.on('data', () => {
        const match = /serving the SiliconFlow \/ OpenAI API at (http:\/\/\S+)\/v1/.exec(stderr);
        if (match) {
          clearTimeout(timer);
          resolve(match[1]!);
        }
      });
      void exited.then((code) => reject(new Error(`exited ${code}:\n${stderr}`)));
    });
    const playground = await fetch(`${url}/`);
    assert.equal(playground.status, 200);
    assert.equal(await playground.text(), readFileSync('playground/index.html', 'utf8'));

    const { version } = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };
    const openapi = (await (await fetch(`${url}/openapi.json`)).json()) as { info: { version: string } };
    assert.equal(openapi.info.version, version);

    const logo = await fetch(`${url}/docs/static/logo.svg`);
    assert.equal(logo.status, 200);
    assert.deepEqual(Buffer.from(await logo.arrayBuffer()), readFileSync('node_modules/@fastify/swagger-ui/static/logo.svg'));

    const image = await fetch(`${url}/v1/images/generations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'infera/tiny-stable-diffusion', prompt: 'a cat', image_size: '64x64' }),
    });
    assert.equal(image.status, 200, await image.clone().text());
    assert.equal(((await image.json()) as { images: unknown[] }).images.length, 1);
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
  } finally {
    child.kill('SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
  }
});

// scripts/build.js keeps zod's English messages only (its other 63 languages were ~360 KB that every
// `infera serve` parsed): the compiled CLI must still name config mistakes in zod's English, and no
// other language may be left in the bundle.
test("the compiled CLI names config mistakes in zod's English messages; zod's other languages are not bundled", () => {
  const dir = mkdtempSync(join(tmpdir(), 'infera-bundle-zod-'));
  try {
    const config = join(dir, 'infera.yaml');
    writeFileSync(config, 'server:\n  port: "x"\n  logLevel: loud\n');
    const result = spawnSync(process.execPath, ['bin/infera.js', 'models', '--config', config], {
      env: { ...process.env, INFERA_DATA_DIR: dir, INFERA_CONFIG: '' },
      encoding: 'utf8',
    });
    assert.equal(result.status, 2, result.stderr);
    assert.match(result.stderr, /server\.port: Invalid input: expected number, received string/);
    assert.match(result.stderr, /server\.logLevel: Invalid option: expected one of "fatal"\|"error"/);
    const inputs = JSON.parse(readFileSync('dist/bundle-inputs.json', 'utf8')) as Record<string, string[]>;
    const zodFiles = Object.entries(inputs).filter(([, packages]) => packages.includes('zod')).map(([file]) => file);
    assert.ok(zodFiles.length > 0);
    // Indonesian's "invalid input" (zod/v4/locales/id.js), in ASCII, so the build's \u escapes do not hide it.
    assert.ok(readFileSync('node_modules/zod/v4/locales/id.js', 'utf8').includes('Input tidak valid'));
    for (const file of zodFiles) assert.ok(!readFileSync(join('dist', file), 'utf8').includes('Input tidak valid'), `${file} holds zod's Indonesian messages`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// scripts/build.js leaves glob out of the bundle (@fastify/static calls it only with `wildcard: false`):
// the stand-in require()s it from the chunk that holds it at its first call, which must then find it.
test('glob is not bundled, and the bundle that would call it finds it in node_modules', async () => {
  const inputs = JSON.parse(readFileSync('dist/bundle-inputs.json', 'utf8')) as Record<string, string[]>;
  const holders = Object.entries(inputs).filter(([, packages]) => packages.includes('@fastify/static')).map(([file]) => file);
  assert.equal(holders.length, 1);
  assert.ok(Object.values(inputs).every((packages) => !packages.includes('glob')));
  const { glob } = createRequire(join(process.cwd(), 'dist', holders[0]!))('glob') as { glob: (pattern: string, options: { cwd: string }) => Promise<string[]> };
  assert.deepEqual((await glob('package*.json', { cwd: process.cwd() })).sort(), ['package-lock.json', 'package.json']);
  assert.match(readFileSync(join('dist', holders[0]!), 'utf8'), /\(real \?\?= __require\("glob"\)\)\.glob\(\.\.\.args\)/);
});
