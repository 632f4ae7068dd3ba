// Issue 14's multi-node test: real processes on loopback. Two worker Infera processes (`infera serve`,
// each serving the tiny chat and embedding models in its own engine processes) behind a gateway Infera
// process that routes one chat model and one embedding model to both (src/routing/). Under load, one
// worker is killed with SIGKILL: no non-streamed request fails (retried on the other worker before the
// first byte), streams that were on the dead worker end with an error frame and [DONE], the gateway
// stops sending to it within the health-check interval, and sends to it again once it is restarted on
// the same port. The gateway's ledger holds every answered request exactly once.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer as createNetServer } from 'node:net';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { TINY_IDS, tinyModelConfigs } from '../src/registry/default-models.ts';
import { SHARED_DATA_DIR } from './helpers/server.ts';

const ADMIN = 'admin-key-multi-node';
const HEALTH_INTERVAL_SECONDS = 0.5;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Node {
  child: ChildProcess;
  url: string;
  port: number;
  exited: Promise<number | null>;
  stderr(): string;
}

/** `infera serve --config FILE` on `port` (0: any); resolves with its URL once its banner is out. */
async function startNode(config: string, dataDir: string, port = 0): Promise<Node> {
  const child = spawn(process.execPath, ['bin/infera.js', 'serve', '--config', config, '--port', String(port)], {
    env: { ...process.env, INFERA_DATA_DIR: dataDir, LOG_LEVEL: 'warn', HOST: '127.0.0.1', INFERA_API_KEY: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (chunk) => (stderr += chunk));
  child.stdout!.on('data', () => {});
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no banner in 60 s:\n${stderr}`)), 60_000);
    child.stderr!.on('data', () => {
      const match = /serving the SiliconFlow \/ OpenAI API at (http:\/\/\S+)\/v1/.exec(stderr);
      if (match && /-d '\{"model":.*\n/.test(stderr)) {
        clearTimeout(timer);
        resolve(match[1]!);
      }
    });
    void exited.then((code) => reject(new Error(`exited ${code}:\n${stderr}`)));
  });
  return { child, url, port: Number(new URL(url).port), exited, stderr: () => stderr };
}

/** A port free now (the workers get fixed ports so the gateway's config can name them before they start). */
async function freePort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

interface Outcome {
  id: string;
  kind: 'chat' | 'stream' | 'embed';
  status: number;
  /** Streams: an error frame came before [DONE]. */
  streamError?: boolean;
  /** Streams: the last event was [DONE]. */
  done?: boolean;
  startedAt: number;
  text?: string;
}

const dirs: string[] = [];
const nodes: Node[] = [];
let workerConfig: string;
let gatewayConfig: string;
let gatewayDir: string;

before(async () => {
  const tiny = await tinyModelConfigs(SHARED_DATA_DIR);
  const models = tiny
    .filter((model) => model.id === TINY_IDS.chat || model.id === TINY_IDS.embedding)
    .map((model) => ({ ...model, eager: true, aliases: [] }));
  const root = mkdtempSync(join(tmpdir(), 'infera-multi-node-'));
  dirs.push(root);
  workerConfig = join(root, 'worker.json');
  writeFileSync(workerConfig, JSON.stringify({ models }));
});

after(async () => {
  for (const node of nodes) node.child.kill('SIGKILL');
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

async function deployments(gateway: Node, id: string) {
  const response = await fetch(`${gateway.url}/admin/deployments`, { headers: { authorization: `Bearer ${ADMIN}` } });
  const body = (await response.json()) as { data: { id: string; deployments: { name: string; available: boolean; healthy: boolean; breaker: string; requests: number; inFlight: number }[] }[] };
  const model = body.data.find((entry) => entry.id === id)!;
  return Object.fromEntries(model.deployments.map((deployment) => [deployment.name, deployment]));
}

/** Streams that have sent a token and not yet ended. */
let midStream = 0;

async function request(gateway: Node, kind: Outcome['kind'], id: string): Promise<Outcome> {
  const startedAt = Date.now();
  const body =
    kind === 'embed'
      ? { model: 'embed', input: ['routing under load', 'one more input'] }
      : kind === 'chat'
        ? { model: 'chat', messages: [{ role: 'user', content: 'hello' }], max_tokens: 24 }
        : { model: 'chat', messages: [{ role: 'user', content: 'count' }], max_tokens: 1500, stream: true };
  try {
    const response = await fetch(`${gateway.url}/v1/${kind === 'embed' ? 'embeddings' : 'chat/completions'}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': id },
      body: JSON.stringify(body),
    });
    let text = '';
    let counted = false;
    try {
      // Streams are read as they come, so the test knows how many are mid-answer (a token out, not done).
      for await (const piece of response.body as unknown as AsyncIterable<Uint8Array>) {
        text += Buffer.from(piece).toString('utf8');
        if (kind === 'stream' && !counted && text.includes('"content":"')) {
          counted = true;
          midStream++;
        }
      }
    } finally {
      if (counted) midStream--;
    }
    const outcome: Outcome = { id, kind, status: response.status, startedAt, text: response.status === 200 && kind !== 'stream' ? undefined : text.slice(0, 400) };
    if (kind === 'stream' && response.status === 200) {
      const events = text.split('\n\n').filter(Boolean);
      outcome.done = events.at(-1) === 'data: [DONE]';
      outcome.streamError = events.some((event) => event.startsWith('data: {"error"'));
    }
    return outcome;
  } catch (error) {
    return { id, kind, status: 0, startedAt, text: String(error) };
  }
}

test('gateway → two workers: a worker killed under load costs no non-streamed request, its streams end cleanly, traffic leaves and returns', async () => {
  const [aDir, bDir] = [mkdtempSync(join(tmpdir(), 'infera-worker-a-')), mkdtempSync(join(tmpdir(), 'infera-worker-b-'))];
  gatewayDir = mkdtempSync(join(tmpdir(), 'infera-gateway-'));
  dirs.push(aDir, bDir, gatewayDir);
  const t0 = Date.now();
  const phase = (what: string) => process.env.INFERA_TEST_TIMING && console.error(`multi-node: ${what} at ${Date.now() - t0} ms`);
  const [aPort, bPort] = [await freePort(), await freePort()];
  const upstream = (port: number, model: string, extra: Record<string, unknown> = {}) => ({
    baseUrl: `http://127.0.0.1:${port}/v1`,
    dialect: 'infera',
    model,
    timeouts: { connectSeconds: 1, firstByteSeconds: 30, idleSeconds: 10, totalSeconds: 60 },
    ...extra,
  });
  gatewayConfig = join(gatewayDir, 'gateway.json');
  writeFileSync(
    gatewayConfig,
    JSON.stringify({
      server: { adminKey: ADMIN },
      routing: { healthCheckIntervalSeconds: HEALTH_INTERVAL_SECONDS, healthCheckTimeoutSeconds: 5, failureThreshold: 2, cooldownSeconds: 1 },
      models: [
        { id: 'chat', type: 'chat', engine: 'openai-compatible', upstream: upstream(aPort, TINY_IDS.chat, { contextSize: 2048 }), deployment: { name: 'worker-a' } },
        { id: 'chat', type: 'chat', engine: 'openai-compatible', upstream: upstream(bPort, TINY_IDS.chat, { contextSize: 2048 }), deployment: { name: 'worker-b' } },
        { id: 'embed', type: 'embedding', engine: 'openai-compatible', upstream: upstream(aPort, TINY_IDS.embedding), deployment: { name: 'worker-a' } },
        { id: 'embed', type: 'embedding', engine: 'openai-compatible', upstream: upstream(bPort, TINY_IDS.embedding), deployment: { name: 'worker-b' } },
      ],
    }),
  );
  // All three start at once; the gateway's health checks find the workers as they come up.
  let [a, b, gateway] = await Promise.all([startNode(workerConfig, aDir, aPort), startNode(workerConfig, bDir, bPort), startNode(gatewayConfig, gatewayDir)]);
  nodes.push(a, b, gateway);
  phase('gateway up');
  // Workers load their models after their banner; the gateway's health checks (each worker's /ready) see when.
  const allHealthy = async () => {
    const [chat, embed] = await Promise.all([deployments(gateway, 'chat'), deployments(gateway, 'embed')]);
    return [...Object.values(chat), ...Object.values(embed)].every((deployment) => deployment.healthy);
  };
  for (const deadline = Date.now() + 90_000; !(await allHealthy()); await sleep(50))
    assert.ok(Date.now() < deadline, 'both workers ready within 90 s');
  phase('workers ready');

  // Load: clients that each send one request after another until told to stop.
  const outcomes: Outcome[] = [];
  let stop = false;
  let sequence = 0;
  const client = async (kind: Outcome['kind']) => {
    while (!stop) outcomes.push(await request(gateway, kind, `mn_${kind}_${++sequence}`));
  };
  const clients = [client('chat'), client('chat'), client('embed'), client('embed'), client('stream'), client('stream'), client('stream'), client('stream')];

  let gone = 0;
  let back = 0;
  try {
    // Both workers serve; then wait until worker a is generating streams (its own count of chat requests
    // in flight: the JSON chats are a few tokens, the streams 1500), and kill it. Three or more in flight:
    // only two clients send JSON chats, so at least one of them is a stream (with two, a kill that found
    // two JSON chats there cut no stream: seen once in a fresh-clone run), and with the worker's four
    // sequences none of them is queued.
    const generating = async (worker: Node) => {
      const text = await fetch(`${worker.url}/metrics`).then((response) => response.text(), () => '');
      return Number(/^infera_inference_in_flight\{endpoint="chat"[^}]*\} (\d+)/m.exec(text)?.[1] ?? 0);
    };
    const deadline = Date.now() + 30_000;
    let before = await deployments(gateway, 'chat');
    while (!(midStream >= 2 && (await generating(a)) >= 3 && before['worker-a']!.requests > 2 && before['worker-b']!.requests > 2) && Date.now() < deadline) {
      await sleep(20);
      before = await deployments(gateway, 'chat');
    }
    assert.ok(before['worker-a']!.inFlight > 0, 'requests in flight on worker a before the kill');
    phase('killing worker a');
    const killedAt = Date.now();
    a.child.kill('SIGKILL');
    await a.exited;

    // The gateway stops sending to the dead worker within the health-check interval (plus slack for a
    // busy box): the first of its breaker ejecting it and its health check failing, by the gateway's clock.
    const out = async () => {
      const [chat, embed] = await Promise.all([deployments(gateway, 'chat'), deployments(gateway, 'embed')]);
      const when = (state: { lastEjectedAt?: string; healthChangedAt?: string; healthy: boolean }) =>
        Math.min(state.lastEjectedAt ? Date.parse(state.lastEjectedAt) : Number.POSITIVE_INFINITY, !state.healthy && state.healthChangedAt ? Date.parse(state.healthChangedAt) : Number.POSITIVE_INFINITY);
      return Math.max(when(chat['worker-a']!), when(embed['worker-a']!));
    };
    while (Date.now() - killedAt < 10_000 && !Number.isFinite(await out())) await sleep(5);
    gone = (await out()) - killedAt;
    assert.ok(gone >= 0 && gone <= HEALTH_INTERVAL_SECONDS * 1000 + 1000, `worker a left the rotation ${gone} ms after the kill`);
    // Its health check has failed by now too, so no half-open probe goes to it while it is down.
    const unhealthy = async () => {
      const [chat, embed] = await Promise.all([deployments(gateway, 'chat'), deployments(gateway, 'embed')]);
      return !chat['worker-a']!.healthy && !embed['worker-a']!.healthy;
    };
    while (Date.now() - killedAt < 10_000 && !(await unhealthy())) await sleep(20);
    // And it stays out: nothing more is sent to it while it is down.
    const frozen = (await deployments(gateway, 'chat'))['worker-a']!.requests;
    await sleep(1500);
    const later = await deployments(gateway, 'chat');
    assert.equal(later['worker-a']!.requests, frozen, 'no request went to the dead worker once it was out');
    assert.equal(later['worker-a']!.healthy, false);
    const notReady = await fetch(`${gateway.url}/ready`);
    assert.equal(notReady.status, 200, 'the gateway stays ready: each model still has a healthy deployment');

    // Restart worker a on the same port: traffic comes back.
    phase('restarting worker a');
    a = await startNode(workerConfig, aDir, aPort);
    phase('worker a restarted');
    nodes.push(a);
    const restartedAt = Date.now();
    while (Date.now() - restartedAt < 90_000) {
      const [chat, embed] = await Promise.all([deployments(gateway, 'chat'), deployments(gateway, 'embed')]);
      if (chat['worker-a']!.requests > frozen && chat['worker-a']!.breaker === 'closed' && chat['worker-a']!.healthy && embed['worker-a']!.healthy) {
        back = Date.now() - restartedAt;
        break;
      }
      await sleep(20);
    }
    assert.ok(back > 0, `worker a takes traffic again after its restart; its log:\n${a.stderr().slice(-2000)}`);
    phase('traffic back on worker a');
    await sleep(300);
  } finally {
    stop = true;
    await Promise.all(clients);
  }

  // No non-streamed request failed; every stream ended with [DONE], those cut by the kill after an error frame.
  const failed = outcomes.filter((outcome) => outcome.kind !== 'stream' && outcome.status !== 200);
  assert.deepEqual(failed, [], 'no failed non-streamed request');
  const streams = outcomes.filter((outcome) => outcome.kind === 'stream');
  for (const stream of streams) {
    assert.equal(stream.status, 200, stream.text);
    assert.ok(stream.done, `stream ${stream.id} ended with [DONE]: ${stream.text}`);
  }
  const cut = streams.filter((stream) => stream.streamError);
  assert.ok(cut.length >= 1, 'the stream in flight on the killed worker ended with an error frame');
  assert.ok(outcomes.filter((outcome) => outcome.kind === 'chat').length > 10 && outcomes.filter((outcome) => outcome.kind === 'embed').length > 10, 'load ran');

  // The gateway's ledger: every answered request exactly once (SIGTERM drains and flushes it first).
  gateway.child.kill('SIGTERM');
  assert.equal(await gateway.exited, 0);
  const db = new Database(join(gatewayDir, 'infera.db'), { readonly: true });
  try {
    const rows = db.prepare("SELECT request_id, status, outcome FROM ledger WHERE request_id LIKE 'mn_%'").all() as { request_id: string; status: number; outcome: string }[];
    const byId = new Map<string, number>();
    for (const row of rows) byId.set(row.request_id, (byId.get(row.request_id) ?? 0) + 1);
    for (const outcome of outcomes) assert.equal(byId.get(outcome.id), 1, `ledger rows for ${outcome.id} (${outcome.kind}, ${outcome.status})`);
    assert.equal(rows.length, outcomes.length, 'no row for a request nobody sent');
    const cutRows = rows.filter((row) => cut.some((stream) => stream.id === row.request_id));
    for (const row of cutRows) assert.equal(row.outcome, 'error');
  } finally {
    db.close();
  }
  console.log(
    `multi-node: ${outcomes.length} requests (${streams.length} streams, ${cut.length} cut by the kill); worker a out of rotation ${gone} ms after SIGKILL, back ${back} ms after its restart`,
  );
});
