// What the serving layer keeps per server: micro-batchers, the image store, the img2img fetch
// connection pools. Created in main.ts for each server and closed by that server's shutdown only.
import type { Logger } from 'pino';
import type { InferaConfig } from '../config/schema.ts';
import { InferaMetrics } from '../observability/metrics.ts';
import { ModelBatchers } from './batchers.ts';
import { FetchAgents } from './images-input.ts';
import { LazyImageStore } from './images.ts';

export interface ServingResources {
  /** This server's Prometheus metrics (its own registry: never shared with another server). */
  metrics: InferaMetrics;
  batchers: ModelBatchers;
  imageStore: LazyImageStore;
  fetchAgents: FetchAgents;
}

export function createServingResources(config: InferaConfig, logger: Logger, metrics = new InferaMetrics()): ServingResources {
  return { metrics, batchers: new ModelBatchers(metrics), imageStore: new LazyImageStore(config, logger), fetchAgents: new FetchAgents() };
}

export async function closeServingResources(resources: ServingResources): Promise<void> {
  await Promise.allSettled([resources.imageStore.close(), resources.fetchAgents.close()]);
}
