// Composition root: config → services → HTTP server, and the ordered shutdown. Nothing else in the
// code base builds services or reads the environment.
import { ensurePrivateDir } from './config/data-dir.ts';
import type { InferaConfig } from './config/schema.ts';
import { InferaError } from './errors/index.ts';
import { buildApp, type InferaApp } from './http/app.ts';
import { createLogger, flushLogger, type Logger } from './observability/logger.ts';
import { InferaMetrics } from './observability/metrics.ts';
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
  /** No models configured: serving the presets found in storage.modelsDir. */
  usingPulledPresets: boolean;
  /** Graceful stop (see drainAndClose); the drain deadline defaults to server.drainTimeoutSeconds. */
  close(options?: { drainTimeoutMs?: number }): Promise<void>;
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
  const logger = options.logger ?? createLogger(config.server.logLevel, undefined, config.logging.flushMs);
  // Keys, the ledger and generated images are the operator's alone.
  ensurePrivateDir(config.storage.dataDir);
  // The quick form: what each upstream lists joins the configured models (an unreachable one fails startup, naming it).
  if (config.upstreams.length) {
    const { modelsOfUpstreams } = await import('./engines/openai-compatible/discover.ts');
    const taken = config.models.flatMap((model) => [model.id, ...model.aliases]);
    config.models.push(...(await modelsOfUpstreams(config.upstreams, taken, logger)));
  }
  // A gateway in front of upstreams serves what they serve, never the tiny defaults. With nothing
  // configured: the presets `infera pull` left in the models directory, else the tiny test models.
  let usingTinyModels = config.models.length === 0 && config.upstreams.length === 0;
  let usingPulledPresets = false;
  if (usingTinyModels) {
    const { loadCatalogue, pulledPresetConfigs } = await import('./models/presets.ts');
    const pulled = pulledPresetConfigs(config.storage.modelsDir ?? `${config.storage.dataDir}/models`, loadCatalogue(config.presets.file));
    if (pulled.length) {
      config.models = pulled;
      usingTinyModels = false;
      usingPulledPresets = true;
    } else config.models = await tinyModelConfigs(config.storage.dataDir);
  }

  const gate = options.gate ?? (await createGate(config, logger));
  // Everything below belongs to this server alone (engine runtimes live in the registry's resources),
  // so two servers in one process share nothing and close() disposes only what this one created.
  const metrics = new InferaMetrics();
  gate.observeLedger?.(metrics.ledgerWritten);
  const events = bothEvents(metrics.registryEvents, options.registryEvents);
  const registry = new ModelRegistry(config.models, {
    engines: options.engines ?? defaultEngines,
    logger,
    events,
    routing: config.routing,
    routingMetrics: metrics,
    lifecycle: config.lifecycle,
  });
  metrics.watchModels(() => registry.entries());
  metrics.watchRouting(() => registry.routing());
  const services: Services = { config, registry, gate, logger, ...createServingResources(config, logger, metrics) };
  const app = await buildApp(services);

  let closing: Promise<void> | undefined;
  const server: InferaServer = {
    app,
    services,
    url: '',
    usingTinyModels,
    usingPulledPresets,
    close: (options = {}) =>
      (closing ??= drainAndClose(services, app, options.drainTimeoutMs ?? config.server.drainTimeoutSeconds * 1000)),
  };
  return server;
}

/** The metrics' registry events, then the caller's (tests watch loads too). */
function bothEvents(first: RegistryEvents, second: RegistryEvents = {}): RegistryEvents {
  return {
    onStateChange: (entry) => {
      first.onStateChange?.(entry);
      second.onStateChange?.(entry);
    },
    onProgress: (entry) => {
      first.onProgress?.(entry);
      second.onProgress?.(entry);
    },
  };
}

/** What a request still running at the drain deadline is told (503: the client may retry elsewhere). */
export const shuttingDown = () =>
  new InferaError({
    status: 503,
    code: 'server_shutting_down',
    message: 'The server is shutting down and stopped this request at its drain deadline. Retry in a moment.',
    retryAfter: 5,
  });

/**
 * The graceful stop: refuse new connections at once, let requests and streams in flight finish until
 * the drain deadline, then abort what is left (JSON requests get a 503, streams an error frame and
 * [DONE]). Models are disposed only after every lease is back, and the ledger is flushed last, so each
 * request — finished or cut off — leaves its row.
 */
async function drainAndClose(services: Services, app: InferaApp, drainTimeoutMs: number): Promise<void> {
  const { logger, registry, gate } = services;
  const closed = app.close();
  const inFlight = app.inFlight();
  if (inFlight > 0) logger.info({ requests: inFlight, deadlineMs: drainTimeoutMs }, 'draining requests in flight');
  if (!(await settlesWithin(closed, drainTimeoutMs))) {
    const aborted = app.abortInFlight(shuttingDown());
    logger.warn({ requests: aborted }, 'drain deadline passed: stopping the requests still running');
    // Aborted work unwinds in milliseconds; a socket that still will not close is cut.
    if (!(await settlesWithin(closed, ABORT_GRACE_MS))) app.server.closeAllConnections();
  }
  // A listener that failed to close must not stop the models' disposal and the ledger's flush.
  await closed.catch((error: unknown) => logger.error({ err: error }, 'closing the HTTP server failed'));
  await registry.close();
  await gate.close();
  await closeServingResources(services);
  // The access log is written asynchronously (observability/logger.ts): its last lines go out before the process does.
  flushLogger();
}

const ABORT_GRACE_MS = 5_000;

function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  return Promise.race([promise.then(() => true, () => true), timeout]).finally(() => clearTimeout(timer));
}

export async function listen(server: InferaServer): Promise<string> {
  const { host, port } = server.services.config.server;
  const address = await server.app.listen({ host, port });
  server.url = address.replace('[::1]', 'localhost');
  return server.url;
}
