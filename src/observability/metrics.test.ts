// Counters tallied per request in a Map and handed to prom-client at scrape time must expose exactly
// what was counted, per label set, scrape after scrape.
import { test } from 'node:test';
import assert from 'node:assert/strict';
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
