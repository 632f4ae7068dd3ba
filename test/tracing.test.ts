// OpenTelemetry traces (config `tracing`) into a real OTLP/HTTP receiver on a real socket: a request
// span per request with its route, status and Infera's attributes (request id, key id, model), the
// caller's traceparent honoured, streamed answers ended when the stream ends, probes left out, and
// nothing sent when tracing is off (the default).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { http, startTestServer } from './helpers/server.ts';

interface OtlpSpan {
  traceId: string;
  parentSpanId?: string;
  name: string;
  attributes: { key: string; value: { stringValue?: string; intValue?: number | string } }[];
}
interface OtlpExport {
  resourceSpans: { resource: { attributes: OtlpSpan['attributes'] }; scopeSpans: { spans: OtlpSpan[] }[] }[];
}

const attribute = (span: { attributes: OtlpSpan['attributes'] }, key: string) => {
  const value = span.attributes.find((entry) => entry.key === key)?.value;
  return value?.stringValue ?? (value?.intValue === undefined ? undefined : Number(value.intValue));
};

describe('tracing', () => {
  let receiver: Server;
  let endpoint: string;
  const exports: OtlpExport[] = [];
  before(async () => {
    receiver = createServer((request, response) => {
      let body = '';
      request.setEncoding('utf8');
      request.on('data', (chunk: string) => (body += chunk));
      request.on('end', () => {
        assert.equal(request.url, '/v1/traces');
        assert.match(request.headers['content-type'] ?? '', /application\/json/);
        exports.push(JSON.parse(body));
        response.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    endpoint = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/v1/traces`;
  });
  after(() => new Promise<void>((resolve) => receiver.close(() => resolve())));

  test('a request span per request, with the route, status, request id, key id and model; the caller\'s trace continued', async () => {
    const server = await startTestServer({ config: { tracing: { enabled: true, endpoint, serviceName: 'infera-under-test' } } });
    const chat = server.server.services.registry.find('Qwen/Qwen3-8B')!.config.id;
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    let streamedId = '';
    try {
      const answered = await http(server.baseURL, '/chat/completions', {
        body: { model: 'Qwen/Qwen3-8B', messages: [{ role: 'user', content: 'hello' }] },
        headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01`, 'x-request-id': 'traced-json-1' },
      });
      assert.equal(answered.status, 200);
      const streamed = await http(server.baseURL, '/chat/completions', { body: { model: 'Qwen/Qwen3-8B', messages: [{ role: 'user', content: 'hello' }], stream: true } });
      assert.equal(streamed.status, 200);
      streamedId = streamed.headers.get('x-request-id')!;
      assert.equal((await http(server.baseURL, '/embeddings', { body: { model: 'nobody/serves-this', input: 'x' } })).status, 400);
      assert.equal((await http(server.url, '/health')).status, 200);
    } finally {
      await server.close();
    }
    const resource = exports.flatMap((batch) => batch.resourceSpans);
    assert.ok(resource.length > 0, 'spans were exported by the time the server closed');
    assert.ok(resource.every((entry) => attribute(entry.resource, 'service.name') === 'infera-under-test'));
    const spans = resource.flatMap((entry) => entry.scopeSpans.flatMap((scope) => scope.spans));
    const requests = spans.filter((span) => span.name === 'request');
    const byId = (id: string) => requests.find((span) => attribute(span, 'infera.request_id') === id);

    const json = byId('traced-json-1');
    assert.ok(json, 'the JSON request has its span');
    assert.equal(json.traceId.toLowerCase(), traceId, 'the incoming traceparent is the parent');
    assert.equal(json.parentSpanId?.toLowerCase(), '00f067aa0ba902b7');
    assert.equal(attribute(json, 'http.route'), '/v1/chat/completions');
    assert.equal(attribute(json, 'http.response.status_code'), 200);
    assert.equal(attribute(json, 'infera.model'), chat);
    assert.equal(attribute(json, 'infera.key_id'), 'anonymous');
    assert.ok(spans.some((span) => span.traceId === json.traceId && span.name !== 'request'), 'hook and handler spans join the trace');

    const stream = byId(streamedId);
    assert.ok(stream, 'a streamed answer\'s span is ended (and exported) when the stream ends');
    assert.equal(attribute(stream, 'http.response.status_code'), 200);
    assert.ok(requests.some((span) => attribute(span, 'http.route') === '/v1/embeddings' && attribute(span, 'http.response.status_code') === 400));
    assert.ok(!requests.some((span) => attribute(span, 'http.route') === '/health'), 'probes are not traced');
  });

  test('off by default: nothing is sent', async () => {
    const before = exports.length;
    const server = await startTestServer({ config: { models: [{ id: 'org/x', type: 'chat', engine: 'llama-cpp', path: '/nonexistent/x.gguf' }] } });
    try {
      await http(server.baseURL, '/models');
    } finally {
      await server.close();
    }
    await new Promise((resolve) => setTimeout(resolve, 1200));
    assert.equal(exports.length, before);
  });
});
