// Counters tallied per request in a Map and handed to prom-client at scrape time must expose exactly
// what was counted, per label set, scrape after scrape.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Counter, Histogram, Registry } from 'prom-client';
import { InferaMetrics } from './metrics.ts';

test('deployment attempts are counted per model and deployment, exactly, across scrapes', async () => {
  const metrics = new InferaMetrics({ processMetrics: false });
  for (let i = 0; i < 3; i++) metrics.deploymentRequest('m', 'a');
  metrics.deploymentRequest('m', 'b');
  metrics.deploymentRequest('other', 'a');
  const first = (await metrics.text()).body;
  assert.match(first, /^infera_deployment_requests_total\{model="m",deployment="a"\} 3$/m);
  assert.match(first, /^infera_deployment_requests_total\{model="m",deployment="b"\} 1$/m);
  assert.match(first, /^infera_deployment_requests_total\{model="other",deployment="a"\} 1$/m);
  metrics.deploymentRequest('m', 'b');
  const second = (await metrics.text()).body;
  assert.match(second, /^infera_deployment_requests_total\{model="m",deployment="a"\} 3$/m, 'a scrape does not add the tally twice');
  assert.match(second, /^infera_deployment_requests_total\{model="m",deployment="b"\} 2$/m);
});

test('the HTTP duration histogram, tallied per request, exposes what prom-client would have for the same observations', async () => {
  const metrics = new InferaMetrics({ processMetrics: false });
  const reference = new Registry();
  const histogram = new Histogram({
    name: 'infera_http_request_duration_seconds',
    help: 'From the request arriving to the last byte of its answer (streams included).',
    labelNames: ['route', 'model', 'status_class'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
    registers: [reference],
  });
  const durationLines = (text: string) => text.split('\n').filter((line) => line.includes('infera_http_request_duration_seconds')).join('\n');
  // Bounds exactly, between them, past the last one, zero; label sets shared by several (method, status, code) rows.
  const seconds = [0, 0.005, 0.0051, 0.3, 1, 599.9, 600, 600.1, 1e4, 0.1 + 0.2, 7e-4, 42];
  const rows = [
    { route: '/v1/models', method: 'GET', status: 200, model: '' },
    { route: '/v1/chat/completions', method: 'POST', status: 400, model: '', code: 'invalid_request' },
    { route: '/v1/chat/completions', method: 'POST', status: 404, model: '', code: 'model_not_found' },
    { route: '/v1/chat/completions', method: 'POST', status: 200, model: 'tiny/chat' },
    { route: 'unmatched', method: 'GET', status: 404, model: '', code: 'unknown_route' },
  ];
  for (const pass of [1, 2]) {
    for (const [i, value] of seconds.entries())
      for (const [j, row] of rows.entries()) {
        if ((i + j + pass) % 3 === 0) continue;
        metrics.http({ ...row, seconds: value * pass });
        histogram.observe({ route: row.route, model: row.model, status_class: `${Math.floor(row.status / 100)}xx` }, value * pass);
      }
    assert.equal(durationLines((await metrics.text()).body), durationLines(await reference.metrics()), `scrape ${pass}`);
  }
  assert.throws(() => metrics.http({ ...rows[0]!, seconds: Number.NaN }), TypeError);
});

test('tokens per second and ledger writes, tallied per request, expose what prom-client would have for the same observations', async () => {
  const metrics = new InferaMetrics({ processMetrics: false });
  const reference = new Registry();
  const rate = new Histogram({
    name: 'infera_generation_tokens_per_second',
    help: 'Completion tokens per second of each chat request: streams from the first token to the last; non-streamed from the model call to its answer (prefill included).',
    labelNames: ['model', 'stream'],
    buckets: [1, 2, 5, 10, 20, 35, 50, 75, 100, 150, 250, 500, 1000, 2500],
    registers: [reference],
  });
  const write = new Histogram({
    name: 'infera_ledger_write_seconds',
    help: 'Usage ledger write attempts (group commits: one transaction holds every row settled meanwhile), by outcome: ok, retry (failed, tried again), failed (given up).',
    labelNames: ['outcome'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [reference],
  });
  const rows = new Counter({ name: 'infera_ledger_rows_total', help: 'Usage ledger rows written (ok) or given up after retries (failed).', labelNames: ['outcome'], registers: [reference] });
  const ours = (text: string) => text.split('\n').filter((line) => /infera_(generation_tokens_per_second|ledger_write_seconds|ledger_rows_total)/.test(line)).join('\n');
  // Bounds exactly, between them, past the last one; a retry first (no rows series for it), then ok and failed.
  const rates: [string, boolean, number, number][] = [
    ['a', false, 10, 1],
    ['a', true, 5, 0.5],
    ['b', false, 3, 2],
    ['a', false, 2500, 1],
    ['a', false, 9000, 1],
    ['b', true, 7, 0.001],
  ];
  const writes: [number, number, 'ok' | 'retry' | 'failed'][] = [
    [0.0004, 3, 'retry'],
    [0.0005, 3, 'ok'],
    [0.002, 1, 'ok'],
    [3, 2, 'failed'],
    [0.3, 16, 'ok'],
  ];
  for (const pass of [1, 2]) {
    for (const [model, stream, tokens, seconds] of rates) {
      metrics.generationRate(model, stream, tokens * pass, seconds);
      rate.observe({ model, stream: String(stream) }, (tokens * pass) / seconds);
    }
    // Nothing generated, or no time: no observation.
    metrics.generationRate('a', false, 0, 1);
    metrics.generationRate('a', false, 5, 0);
    for (const [seconds, n, outcome] of writes) {
      metrics.ledgerWritten(seconds * pass, n, outcome);
      write.observe({ outcome }, seconds * pass);
      if (outcome !== 'retry') rows.inc({ outcome }, n);
    }
    assert.equal(ours((await metrics.text()).body), ours(await reference.metrics()), `scrape ${pass}`);
  }
  assert.throws(() => metrics.ledgerWritten(Number.NaN, 1, 'ok'), TypeError);
});
