// A stand-in upstream for tests: a real node:http server on loopback that answers each route with a
// recorded body from ../fixtures (or a handler of the test's own, for faults), and keeps every request
// it got so tests can check what the engine sent.
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HEALTH_CHECK_AGENT } from '../../../routing/health.ts';

export const FIXTURES = fileURLToPath(new URL('../fixtures/', import.meta.url));

export interface SeenRequest {
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
  // biome-ignore lint/suspicious/noExplicitAny: tests index into whatever JSON the engine sent.
  body: any;
}

export type Handler = (request: SeenRequest, response: ServerResponse) => void | Promise<void>;

export interface FakeUpstream {
  url: string;
  seen: SeenRequest[];
  /** Requests whose connection closed before the answer ended (the client left). */
  closedEarly: string[];
  route(method: string, path: string, handler: Handler): void;
  close(): Promise<void>;
}

/** A recorded body: JSON (`.json`), an SSE stream (`.sse`) or NDJSON lines (`.ndjson`), by file name. */
export function fixture(name: string): { type: string; body: string } {
  const body = readFileSync(join(FIXTURES, name), 'utf8');
  const type = name.endsWith('.sse') ? 'text/event-stream' : name.endsWith('.ndjson') ? 'application/x-ndjson' : 'application/json';
  return { type, body };
}

/** Answers with a fixture; streams are written in pieces, as a server writes them. */
export const serve =
  (name: string, status = 200): Handler =>
  async (request, response) => {
    const { type } = fixture(name);
    const body = fixture(name).body.replaceAll('{{ORIGIN}}', `http://${request.headers.host}`);
    response.writeHead(status, { 'content-type': type });
    if (type === 'application/json') return void response.end(body);
    for (const piece of body.split(/(?<=\n\n)|(?<=\n)(?=\{)/)) {
      response.write(piece);
      await new Promise((resolve) => setImmediate(resolve));
    }
    response.end();
  };

export async function startFakeUpstream(): Promise<FakeUpstream> {
  const routes = new Map<string, Handler>();
  const seen: SeenRequest[] = [];
  const closedEarly: string[] = [];
  const server: Server = createServer(async (request, response) => {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    const path = request.url ?? '/';
    let body: unknown;
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      body = text;
    }
    const record: SeenRequest = { method: request.method ?? 'GET', path, headers: request.headers, body };
    // The gateway's active health checks (src/routing/health.ts) are not what the engine sent: they
    // are answered (by the test's route for the path, else 200) but not recorded.
    if (request.headers['user-agent'] === HEALTH_CHECK_AGENT) {
      const route = routes.get(`${record.method} ${path.split('?')[0]}`);
      if (route) return void (await Promise.resolve(route(record, response)).catch(() => response.destroy()));
      response.writeHead(200, { 'content-type': 'application/json' });
      return void response.end('{"object":"list","data":[]}');
    }
    seen.push(record);
    response.on('close', () => {
      if (!response.writableFinished) closedEarly.push(path);
    });
    const handler = routes.get(`${record.method} ${path.split('?')[0]}`);
    if (!handler) {
      response.writeHead(404, { 'content-type': 'application/json' });
      return void response.end(JSON.stringify({ error: { message: `no route ${record.method} ${path}` } }));
    }
    try {
      await handler(record, response);
    } catch {
      response.destroy();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    closedEarly,
    route: (method, path, handler) => void routes.set(`${method} ${path}`, handler),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
