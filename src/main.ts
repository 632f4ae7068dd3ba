// Composition root: config → services → HTTP server, and the ordered shutdown. Nothing else in the
// code base builds services or reads the environment.
import { mkdirSync } from 'node:fs';
import type { InferaConfig } from './config/schema.ts';
import { buildApp, type InferaApp } from './http/app.ts';
import { createLogger, type Logger } from './observability/logger.ts';
import { createGate } from './platform/index.ts';
import type { Gate } from './platform/gate.ts';
import { tinyModelConfigs } from './registry/default-models.ts';
import { engines as defaultEngines, type EngineTable } from './engines/index.ts';
import { ModelRegistry, type RegistryEvents } from './registry/registry.ts';
import type { Services } from './serving/context.ts';
import { closeServingResources, createServingResources } from './serving/resources.ts';

export interface InferaServer {
  app: InferaApp;
  services: Services;
  /** The URL the server listens on (after listen()). */
  url: string;
  usingTinyModels: boolean;
  close(): Promise<void>;
}

export interface CreateServerOptions {
  logger?: Logger;
  /** Override the gate (tests); default picks from config. */
  gate?: Gate;
  registryEvents?: RegistryEvents;
  /** The engines models are loaded with; default: the built-in table. Must match the table the config was validated with. */
  engines?: EngineTable;
}

export async function createServer(config: InferaConfig, options: CreateServerOptions = {}): Promise<InferaServer> {
  const logger = options.logger ?? createLogger(config.server.logLevel);
  mkdirSync(config.storage.dataDir, { recursive: true });
  const usingTinyModels = config.models.length === 0;
  if (usingTinyModels) config.models = await tinyModelConfigs(config.storage.dataDir);

  const gate = options.gate ?? (await createGate(config, logger));
  // Everything below belongs to this server alone (engine runtimes live in the registry's resources),
  // so two servers in one process share nothing and close() disposes only what this one created.
  const registry = new ModelRegistry(config.models, { engines: options.engines ?? defaultEngines, logger, events: options.registryEvents });
  const services: Services = { config, registry, gate, logger, ...createServingResources(config, logger) };
  const app = await buildApp(services);

  let closing: Promise<void> | undefined;
  const server: InferaServer = {
    app,
    services,
    url: '',
    usingTinyModels,
    // Stop accepting, let in-flight requests finish (fastify waits), then free native memory.
    close: () =>
      (closing ??= (async () => {
        await app.close();
        await registry.close();
        await gate.close();
        await closeServingResources(services);
      })()),
  };
  return server;
}

export async function listen(server: InferaServer): Promise<string> {
  const { host, port } = server.services.config.server;
  const address = await server.app.listen({ host, port });
  server.url = address.replace('[::1]', 'localhost');
  return server.url;
}
