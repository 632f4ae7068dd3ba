// Bench helper: a Fastify server with the same trivial route twice, bare and behind the platform gate
// (authenticate + admit + settle, i.e. key lookup, rate limits, one ledger row). Started by platform.ts.
// Usage: node --import tsx bench/platform-server.ts <port> '<raw config json>'
import Fastify from 'fastify';
import { configSchema } from '../src/config/schema.ts';
import { toInferaError, errorBody, errorHeaders } from '../src/errors/render.ts';
import { createGate } from '../src/platform/index.ts';

const port = Number(process.argv[2]);
const config = configSchema.parse(JSON.parse(process.argv[3]!));
const gate = await createGate(config, { info() {}, warn() {}, error() {} });
const { secret } = await gate.admin.createKey({ name: 'bench', accountId: 'bench' });

const app = Fastify();
app.setErrorHandler((error, _request, reply) => {
  const rendered = toInferaError(error);
  return reply.status(rendered.status).headers(errorHeaders(rendered)).send(errorBody(rendered));
});
const body = { object: 'list', data: [{ id: 'bench/model', object: 'model', created: 1, owned_by: 'infera' }] };
let counter = 0;
app.get('/plain', async () => body);
app.get('/gated', async (request, reply) => {
  const started = performance.now();
  const header = request.headers.authorization ?? '';
  const principal = await gate.authenticate(header.slice(7), request.socket.remoteAddress ?? '');
  const admission = await gate.admit({
    principal, model: 'bench/model', endpoint: 'chat', requestId: `b${process.pid}-${++counter}`, estimatedTokens: 20, images: 0,
  });
  reply.headers(admission.headers);
  await admission.settle({
    promptTokens: 8, completionTokens: 12, reasoningTokens: 0, images: 0, documents: 0, status: 200, outcome: 'ok',
    latencyMs: performance.now() - started,
  });
  return body;
});
await app.listen({ port, host: '127.0.0.1' });
process.stdout.write(`ready ${secret}\n`);
process.on('SIGTERM', async () => {
  await app.close();
  await gate.close();
  process.exit(0);
});
