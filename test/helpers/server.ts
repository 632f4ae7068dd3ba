// Starts the real Infera server in-process on an ephemeral port, on the tiny generated models,
// for end-to-end tests with real clients (openai, cohere-ai) and raw HTTP.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configSchemaFor, type InferaConfig } from '../../src/config/schema.ts';
import { engines as defaultEngines, type EngineTable } from '../../src/engines/index.ts';
import { createServer, listen, type InferaServer } from '../../src/main.ts';
import { createLogger } from '../../src/observability/logger.ts';
import type { Gate } from '../../src/platform/gate.ts';

export interface TestServer {
  /** Server root, e.g. http://127.0.0.1:41234 */
  url: string;
  /** url + '/v1': what the openai SDK takes as baseURL. */
  baseURL: string;
  server: InferaServer;
  config: InferaConfig;
  close(): Promise<void>;
}

export interface TestServerOptions {
  /** Raw config (validated by the real schema); server.port is forced to 0. */
  config?: Record<string, unknown>;
  gate?: Gate;
  /** The engine table the config is validated and the models loaded with (default: the built-in one). */
  engines?: EngineTable;
}

/** Tiny models are generated once per test run into a shared folder (generation is deterministic). */
export const SHARED_DATA_DIR = join(tmpdir(), `infera-test-data-${process.env.INFERA_TEST_RUN ?? 'shared'}`);

export async function startTestServer(options: TestServerOptions = {}): Promise<TestServer> {
  const raw = structuredClone(options.config ?? {}) as Record<string, Record<string, unknown>>;
  raw.server = { host: '127.0.0.1', ...(raw.server ?? {}), port: 0, logLevel: process.env.INFERA_TEST_LOG ?? 'silent' };
  const ownDir = raw.storage?.dataDir === undefined;
  const dataDir = ownDir ? mkdtempSync(join(tmpdir(), 'infera-test-')) : String(raw.storage.dataDir);
  raw.storage = { ...(raw.storage ?? {}), dataDir };
  const engines = options.engines ?? defaultEngines;
  const config = configSchemaFor(engines).parse(raw);
  // Share the generated tiny models across test files instead of regenerating them per server.
  if (config.models.length === 0 && config.upstreams.length === 0) {
    const { tinyModelConfigs } = await import('../../src/registry/default-models.ts');
    config.models = await tinyModelConfigs(SHARED_DATA_DIR);
  }
  const server = await createServer(config, { logger: createLogger(config.server.logLevel), gate: options.gate, engines });
  const url = await listen(server);
  return {
    url,
    baseURL: `${url}/v1`,
    server,
    config,
    close: async () => {
      await server.close();
      if (ownDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** A response body as the tests read it: assertions walk whatever JSON the server answered. */
// biome-ignore lint/suspicious/noExplicitAny: tests index straight into arbitrary response JSON; `unknown` would need a cast at each of hundreds of assertions.
export type ResponseJson = any;

/** Raw HTTP helper returning status, headers and parsed JSON (or text). */
export async function http(
  base: string,
  path: string,
  init: { method?: string; body?: unknown; headers?: Record<string, string>; rawBody?: string } = {},
): Promise<{ status: number; headers: Headers; json: ResponseJson; text: string }> {
  const response = await fetch(`${base}${path}`, {
    method: init.method ?? (init.body !== undefined || init.rawBody !== undefined ? 'POST' : 'GET'),
    headers: { 'content-type': 'application/json', ...(init.headers ?? {}) },
    body: init.rawBody ?? (init.body !== undefined ? JSON.stringify(init.body) : undefined),
  });
  const text = await response.text();
  let json: ResponseJson;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.status, headers: response.headers, json, text };
}

/** Parse an SSE body into its data payloads (strings), asserting the strict framing apps need. */
export function sseEvents(text: string): string[] {
  const events = text.split('\n\n');
  if (events.at(-1) === '') events.pop();
  return events.map((event) => {
    if (!event.startsWith('data: ') || event.includes('\n')) throw new Error(`not a strict SSE data event: ${JSON.stringify(event)}`);
    return event.slice('data: '.length);
  });
}
