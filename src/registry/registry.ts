// Public model id → a loaded engine model. Loads lazily on first use (or at startup: lifecycle.preload,
// `eager`) through the engine the entry names in the engine table, hands out leases so a model is never
// disposed while a request uses it, and on shutdown disposes the models and the engine state this server
// created. The lifecycle (Ollama's scheduler, in short): an idle model unloads after its keep-alive, and
// a load that would pass lifecycle.maxLoaded or lifecycle.memoryBudget first unloads idle models, least
// recently used first, or is refused with a 503 when the rest are busy. Concurrent requests for a model
// that is not loaded share one load.
import { statSync } from 'node:fs';
import type { Logger } from 'pino';
import { DEFAULT_KEEP_ALIVE_MS, formatBytes, type LifecycleConfig } from '../config/lifecycle.ts';
import type { ModelConfig, ModelTypeName } from '../config/schema.ts';
import type { EngineDescriptor, EngineTable } from '../engines/descriptor.ts';
import { EngineResources } from '../engines/resources.ts';
import { loadInEngineProcess } from '../engines/runner/host.ts';
import { InferaError, modelNotFound } from '../errors/index.ts';
import type { AnyModel, LoadedModel, ChatModel, EmbeddingModel, RerankModel, ImageModel, ImageLimits } from '../spec/index.ts';
import { routingSchema, type RoutingOptions } from '../routing/config.ts';
import { SharedProbes } from '../routing/health.ts';
import { Router, type RouterSnapshot, type RoutingMetrics } from '../routing/router.ts';

export type ModelState = 'unloaded' | 'loading' | 'ready' | 'failed';

export interface ModelEntry {
  readonly config: ModelConfig;
  state: ModelState;
  /** 0..1 while loading. */
  progress: number;
  error?: string;
  loadedAt?: number;
  /** Failed: when a request may try loading again (epoch ms), unless the model's file changes first. */
  retryAt?: number;
  /**
   * What the model can honour (image models: negativePrompt, guidanceScale, imageToImage): what its
   * files declare before the first load (engine hook `capabilities`), then the loaded model's own
   * answer, kept after an unload since the files still say the same; absent while nothing tells.
   */
  capabilities?: Readonly<Record<string, boolean>>;
  /** The engine process serving it while loaded (isolation: process). */
  pid?: number;
  /** Times its engine process stopped without being asked to (crash, abort, OOM kill, hang). */
  crashes?: number;
  /** Loaded at startup: `eager: true`, or named in lifecycle.preload. */
  readonly preload: boolean;
  /** Requests using it now; a model with any is never unloaded. */
  readonly leases: number;
  /** When its last request ended (epoch ms). */
  lastUsed?: number;
  /** When it unloads unless a request comes first (epoch ms); absent while in use, unloaded or kept forever. */
  expiresAt?: number;
  /** The keep-alive in force (ms; Infinity: never): the last request's keep_alive, else the model's keepAlive. */
  keepAliveMs: number;
  /** Bytes it takes loaded, as the memory budget counts them (the entry's `memory`, else the engine's estimate); absent before the first load and for remote models. */
  memory?: number;
  /** Its engine process is being stopped (an unload in progress). */
  unloading?: boolean;
}

/** First wait after a failed load; it doubles with each failure in a row, up to LOAD_RETRY_MAX_MS. */
export const LOAD_RETRY_MIN_MS = 5_000;
export const LOAD_RETRY_MAX_MS = 10 * 60_000;
/**
 * First wait before an engine process that died is restarted; it doubles with each crash that comes
 * within CRASH_RESET_MS of the last restart (a crash loop slows down), and starts over after a quiet run.
 */
export const RESTART_MIN_MS = 1_000;
export const CRASH_RESET_MS = 10 * 60_000;

interface Slot extends ModelEntry {
  /** Consecutive failed loads, and the model file's size and mtime when the last one failed. */
  failures?: number;
  failedStamp?: string;
  loading?: Promise<LoadedModel>;
  loaded?: LoadedModel;
  leases: number;
  /** The pending restart after a crash. */
  restartTimer?: NodeJS.Timeout;
  /** Its keep-alive when a request names none. */
  defaultKeepAliveMs: number;
  /** Counted against the budget and the cap: admitted for loading, loaded, or still being unloaded. */
  resident: boolean;
  /** The pending unload after its keep-alive. */
  expiryTimer?: NodeJS.Timeout;
  /** The unload in progress: a load of the same model (or one that evicted it) waits for it. */
  unloaded?: Promise<void>;
}

/** Codes of a load refused for room (not a failure: no backoff). */
const ROOM_CODES = new Set(['model_exceeds_memory_budget', 'memory_budget_full', 'max_loaded_models']);
/** setTimeout's longest delay; a longer keep-alive re-arms its timer. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Retry-After of a load refused because every resident model is busy. */
const BUSY_RETRY_SECONDS = 5;

export interface ModelLease<M extends AnyModel> {
  model: M;
  config: ModelConfig;
  release(): void;
}

function capabilitiesOf(model: AnyModel): Record<string, boolean> | undefined {
  if (model.kind === 'chat') {
    // /v1/completions, and its `suffix` (fill in the middle), depend on the engine and the model file.
    const completions = typeof model.doComplete === 'function';
    return { completions, suffix: completions && model.infill === true };
  }
  if (model.kind !== 'text-to-image') return undefined;
  return { negativePrompt: true, guidanceScale: true, ...model.capabilities, imageToImage: model.imageToImage === true };
}

type KindOf = { chat: ChatModel; embedding: EmbeddingModel; reranker: RerankModel; 'text-to-image': ImageModel };

const ENDPOINT_FOR: Record<ModelTypeName, string> = {
  chat: '/v1/chat/completions',
  embedding: '/v1/embeddings',
  reranker: '/v1/rerank',
  'text-to-image': '/v1/images/generations',
};

export interface RegistryEvents {
  onStateChange?(entry: ModelEntry): void;
  onProgress?(entry: ModelEntry): void;
}

export interface RegistryOptions {
  /** The engines entries are loaded with (the same table the config was validated against). */
  engines: EngineTable;
  /** Keep-alive default, resident cap, memory budget, preload list; default: 5 min keep-alive, no cap, no budget. */
  lifecycle?: Partial<LifecycleConfig>;
  /** Each model's load gets a child of it (`model` = its id). */
  logger: Logger;
  events?: RegistryEvents;
  /** How the deployments of a model id that several entries share are routed (config `routing`). */
  routing?: RoutingOptions;
  /** Per-deployment counters. */
  routingMetrics?: RoutingMetrics;
}

export class ModelRegistry {
  /** Every entry of the config: one per deployment. */
  private readonly slots: Slot[];
  /** The first entry of each model id: what entries(), find() and resolve() answer with. */
  private readonly primaries: Slot[] = [];
  /** Model ids with several entries (deployments), by their first entry. */
  private readonly routers = new Map<Slot, Router>();
  /** Health checks by URL for every router here: the models of one upstream share one check. */
  private probes?: SharedProbes;

  private sharedProbes(routing: RoutingOptions): SharedProbes {
    this.probes ??= new SharedProbes(routing);
    return this.probes;
  }
  private readonly byName = new Map<string, Slot>();
  private readonly engines: EngineTable;
  private readonly logger: Logger;
  private readonly events: RegistryEvents;
  private readonly shutdown = new AbortController();
  private readonly maxLoaded: number;
  private readonly memoryBudget: number | undefined;
  /** Engine state shared by this server's models (a llama.cpp runtime…); never shared with another server. */
  readonly resources: EngineResources;
  private closed = false;

  constructor(models: ModelConfig[], options: RegistryOptions) {
    this.engines = options.engines;
    this.logger = options.logger;
    this.events = options.events ?? {};
    this.resources = new EngineResources(options.logger);
    const lifecycle = options.lifecycle ?? {};
    this.maxLoaded = lifecycle.maxLoaded ?? 0;
    this.memoryBudget = lifecycle.memoryBudget;
    this.slots = models.map((config) => {
      // A remote model holds sockets, not memory: it stays unless its entry sets a keep-alive.
      const local = this.engineOf(config)?.estimateMemory !== undefined;
      const defaultKeepAliveMs = config.keepAlive ?? (local ? (lifecycle.keepAlive ?? DEFAULT_KEEP_ALIVE_MS) : Number.POSITIVE_INFINITY);
      return {
        config,
        state: 'unloaded',
        progress: 0,
        leases: 0,
        preload: config.eager,
        defaultKeepAliveMs,
        keepAliveMs: defaultKeepAliveMs,
        resident: false,
        capabilities: this.declaredCapabilities(config),
      };
    });
    const groups = new Map<string, Slot[]>();
    for (const slot of this.slots) {
      const key = slot.config.id.toLowerCase();
      const group = groups.get(key);
      if (group) group.push(slot);
      else groups.set(key, [slot]);
    }
    const routing = options.routing ?? routingSchema.parse({});
    for (const group of groups.values()) {
      const primary = group[0]!;
      this.primaries.push(primary);
      for (const slot of group) for (const name of [slot.config.id, ...slot.config.aliases]) this.byName.set(name.toLowerCase(), primary);
      // An upstream served alone is routed too: one deployment gets what several get (active health
      // checks, the circuit breaker, its concurrency cap, 503 + Retry-After while it is down or full)
      // instead of every request waiting for its connect timeout. In-process models alone need none of it.
      if (group.length > 1 || this.engineOf(primary.config)?.remote?.(primary.config)) {
        const router = new Router(
          primary.config.id,
          primary.config.type,
          group.map((slot) => this.deploymentSource(slot)),
          routing,
          options.logger,
          options.routingMetrics,
          this.sharedProbes(routing),
        );
        this.routers.set(primary, router);
        router.start();
      }
    }
    for (const name of lifecycle.preload ?? []) {
      const slot = this.find(name) as Slot | undefined;
      if (!slot)
        throw new Error(`lifecycle.preload: no configured model is named ${JSON.stringify(name)} (models: ${this.slots.map((s) => s.config.id).join(', ') || 'none'})`);
      (slot as { preload: boolean }).preload = true;
    }
  }

  /** What the entry's files say before any load (the engine's capabilities hook); a file it cannot read says nothing. */
  private declaredCapabilities(config: ModelConfig): Readonly<Record<string, boolean>> | undefined {
    try {
      return this.engineOf(config)?.capabilities?.(config);
    } catch (error) {
      this.logger.warn({ model: config.id, err: error }, 'could not read what the model files declare; capabilities are known once it loads');
      return undefined;
    }
  }

  /** One entry per model id (a routed model's first deployment stands for it; routing() has them all). */
  entries(): readonly ModelEntry[] {
    return this.primaries;
  }

  /** The state of every routed model id: several deployments, or one upstream served alone. */
  routing(): RouterSnapshot[] {
    return [...this.routers.values()].map((router) => router.snapshot());
  }

  private deploymentSource(slot: Slot) {
    const remote = this.engineOf(slot.config)?.remote?.(slot.config);
    return {
      config: slot.config,
      acquire: () => this.lease(slot),
      acquireNow: () => this.leaseNow(slot),
      remote,
      // A model that failed to load or whose engine process waits for its restart serves nothing until its retry time.
      localHealth: remote ? undefined : () => !(slot.state === 'failed' && slot.retryAt !== undefined && Date.now() < slot.retryAt),
    };
  }

  /** Case-insensitive; "Pro/x" falls back to "x" (SiliconFlow's paid-tier prefix names the same model). */
  find(id: string): ModelEntry | undefined {
    const key = id.toLowerCase();
    return this.byName.get(key) ?? (key.startsWith('pro/') ? this.byName.get(key.slice(4)) : undefined);
  }

  resolve<T extends ModelTypeName>(id: string, type: T): ModelEntry {
    const found = this.lookup(id, type);
    if (found instanceof InferaError) throw found;
    return found;
  }

  /** resolve() with its refusal returned, not thrown (the HTTP layer answers it without a throw's cost). */
  lookup<T extends ModelTypeName>(id: string, type: T): ModelEntry | InferaError {
    const slot = this.find(id);
    if (!slot) return unknownModel(id);
    if (slot.config.type !== type)
      return new InferaError({
        status: 400,
        param: 'model',
        code: 'model_type_mismatch',
        message: `Model '${id}' is a ${slot.config.type} model; send it to ${ENDPOINT_FOR[slot.config.type]} instead.`,
      });
    return slot;
  }

  /**
   * Resolve, load if needed, and lease. The caller must release() when the request is over; the model
   * then stays loaded for `keepAliveMs` (the request's keep_alive; default the model's keepAlive).
   */
  async acquire<T extends ModelTypeName>(id: string, type: T, options: { keepAliveMs?: number } = {}): Promise<ModelLease<KindOf[T]>> {
    return this.acquireNow(id, type, options) ?? this.acquireLater(id, type, options);
  }

  /**
   * acquire()'s lease when it needs no wait (a loaded model, a routed one whose deployment is ready),
   * without a promise; undefined otherwise (and for anything acquire() would refuse: it says why).
   * Serving leases every request: acquire() and the router's own were two async calls per request.
   */
  acquireNow<T extends ModelTypeName>(id: string, type: T, options: { keepAliveMs?: number } = {}): ModelLease<KindOf[T]> | undefined {
    const slot = this.lookup(id, type);
    if (slot instanceof InferaError || this.closed) return undefined;
    const router = this.routers.get(slot as Slot);
    if (router) {
      const lease = router.acquireNow();
      return lease && { model: lease.model as KindOf[T], config: slot.config, release: lease.release };
    }
    return this.leaseNow(slot as Slot, options.keepAliveMs) as ModelLease<KindOf[T]> | undefined;
  }

  private async acquireLater<T extends ModelTypeName>(id: string, type: T, options: { keepAliveMs?: number }): Promise<ModelLease<KindOf[T]>> {
    const slot = this.resolve(id, type) as Slot;
    const router = this.routers.get(slot);
    if (router) {
      if (this.closed) throw new InferaError({ status: 503, message: 'Server is shutting down.', retryAfter: 5 });
      const lease = await router.acquire();
      return { model: lease.model as KindOf[T], config: slot.config, release: lease.release };
    }
    return this.lease(slot, options.keepAliveMs) as Promise<ModelLease<KindOf[T]>>;
  }

  /** Load one entry if needed and lease it; it then stays loaded for keepAliveMs (default: the entry's keepAlive). */
  private async lease(slot: Slot, keepAliveMs?: number): Promise<ModelLease<AnyModel>> {
    const now = this.leaseNow(slot, keepAliveMs);
    if (now) return now;
    slot.leases++;
    slot.keepAliveMs = keepAliveMs ?? slot.defaultKeepAliveMs;
    this.cancelExpiry(slot);
    try {
      return this.leaseOf(slot, await this.load(slot));
    } catch (error) {
      slot.leases--;
      this.idle(slot);
      throw error;
    }
  }

  /**
   * The lease of a model that is loaded already, without a promise: a routed request leases its
   * deployment twice (the model's properties, then the call), and each async lease cost the request
   * two promises and their turns through the microtask queue. Undefined when it must wait for a load.
   */
  private leaseNow(slot: Slot, keepAliveMs?: number): ModelLease<AnyModel> | undefined {
    const loaded = slot.loaded;
    if (!loaded || this.closed) return undefined;
    slot.leases++;
    slot.keepAliveMs = keepAliveMs ?? slot.defaultKeepAliveMs;
    if (slot.expiryTimer !== undefined || slot.expiresAt !== undefined) this.cancelExpiry(slot);
    return this.leaseOf(slot, loaded);
  }

  private leaseOf(slot: Slot, loaded: LoadedModel): ModelLease<AnyModel> {
    let released = false;
    return {
      model: loaded.model,
      config: slot.config,
      release: () => {
        if (!released) {
          released = true;
          slot.leases--;
          slot.lastUsed = Date.now();
          this.idle(slot);
        }
      },
    };
  }

  /** No request holds it: unload now (keep-alive 0), later (its keep-alive), or never. */
  private idle(slot: Slot): void {
    if (this.closed || !slot.loaded || slot.leases > 0) return;
    if (slot.keepAliveMs === Number.POSITIVE_INFINITY) {
      this.cancelExpiry(slot);
      return;
    }
    if (slot.keepAliveMs <= 0) {
      void this.unload(slot, 'keep-alive 0');
      return;
    }
    slot.expiresAt = Date.now() + slot.keepAliveMs;
    this.armExpiry(slot);
  }

  private armExpiry(slot: Slot): void {
    clearTimeout(slot.expiryTimer);
    if (slot.expiresAt === undefined) return;
    slot.expiryTimer = setTimeout(() => {
      slot.expiryTimer = undefined;
      if (slot.expiresAt === undefined) return;
      if (Date.now() < slot.expiresAt) {
        this.armExpiry(slot);
        return;
      }
      void this.unload(slot, `idle for its keep-alive (${Math.round(slot.keepAliveMs / 1000)} s)`);
    }, Math.max(0, Math.min(MAX_TIMER_MS, slot.expiresAt - Date.now())));
    slot.expiryTimer.unref();
  }

  private cancelExpiry(slot: Slot): void {
    clearTimeout(slot.expiryTimer);
    slot.expiryTimer = undefined;
    slot.expiresAt = undefined;
  }

  /**
   * Dispose an idle loaded model and end its engine process; a model in use (or not loaded) is left as
   * it is. Resolves once its process is gone.
   */
  private unload(slot: Slot, reason: string): Promise<void> {
    if (!slot.loaded || slot.leases > 0) return slot.unloaded ?? Promise.resolve();
    const loaded = slot.loaded;
    this.cancelExpiry(slot);
    slot.loaded = undefined;
    slot.loading = undefined;
    slot.state = 'unloaded';
    slot.progress = 0;
    slot.unloading = true;
    const pid = slot.pid;
    this.logger.info({ model: slot.config.id, pid, reason }, 'unloading model');
    this.events.onStateChange?.(slot);
    // Assigned before its body can finish (the first await comes before any use of it below).
    let unloaded: Promise<void> | undefined;
    unloaded = (async () => {
      await Promise.resolve();
      try {
        await loaded.dispose();
      } catch (error) {
        this.logger.error({ err: error, model: slot.config.id }, 'disposing the model failed');
      } finally {
        if (slot.unloaded === unloaded) {
          slot.unloaded = undefined;
          slot.unloading = undefined;
          slot.pid = undefined;
          if (!slot.loading) slot.resident = false;
        }
        this.events.onStateChange?.(slot);
      }
    })();
    slot.unloaded = unloaded;
    return unloaded;
  }

  /** An operator's "unload now" (POST /admin/models/unload). A model in use is refused with a 409. */
  async unloadModel(id: string): Promise<ModelEntry> {
    const slot = this.find(id) as Slot | undefined;
    if (!slot) throw modelNotFound(id, 404);
    if (slot.leases > 0)
      throw new InferaError({
        status: 409,
        param: 'model',
        code: 'model_in_use',
        message: `Model '${slot.config.id}' has ${slot.leases} request(s) in flight; it unloads when they are over if its keep-alive says so.`,
      });
    if (slot.loading && !slot.loaded) await slot.loading.catch(() => undefined);
    await this.unload(slot, 'asked by an operator');
    return slot;
  }

  private load(slot: Slot): Promise<LoadedModel> {
    if (this.closed) return Promise.reject(new InferaError({ status: 503, message: 'Server is shutting down.', retryAfter: 5 }));
    if (slot.loaded) return Promise.resolve(slot.loaded);
    // A model that failed stays failed until its file changes or its backoff ends: a broken file is
    // not read again (and its error not paid again) on every request.
    if (!slot.loading && slot.state === 'failed' && slot.retryAt !== undefined && Date.now() < slot.retryAt && fileStamp(slot.config.path) === slot.failedStamp)
      return Promise.reject(
        slot.restartTimer
          ? restarting(slot)
          : loadFailed(slot, `not retried until its file changes or ${new Date(slot.retryAt).toISOString()}`),
      );
    // Every caller while it loads shares this one load (one engine process).
    if (!slot.loading) {
      const loading = this.startLoad(slot);
      slot.loading = loading;
      loading.catch(() => {
        if (slot.loading === loading) slot.loading = undefined;
      });
    }
    return slot.loading;
  }

  private async startLoad(slot: Slot): Promise<LoadedModel> {
    const { config } = slot;
    const before = slot.state;
    slot.state = 'loading';
    slot.progress = 0;
    slot.error = undefined;
    this.events.onStateChange?.(slot);
    const engine = this.engineOf(config);
    const logger = this.logger.child({ model: config.id, engine: config.engine });
    let making: Promise<void>[];
    try {
      if (!engine) throw new Error(`engine ${config.engine} is not in this server's engine table`);
      await engine.check?.(config);
      slot.memory = await this.estimate(engine, config);
      making = this.admit(slot);
    } catch (error) {
      if (error instanceof InferaError && error.code !== null && ROOM_CODES.has(error.code)) {
        // Refused for room, not broken: no backoff, the next request may find room.
        slot.state = before === 'loading' ? 'unloaded' : before;
        this.events.onStateChange?.(slot);
        logger.warn({ memory: slot.memory }, error.message);
        throw error;
      }
      throw this.loadFailure(slot, logger, error);
    }
    try {
      // The models making room (and an unload of this one still in progress) end their processes first.
      await Promise.all(making);
      const context = {
        config,
        onProgress: (fraction: number) => {
          slot.progress = fraction;
          this.events.onProgress?.(slot);
        },
        signal: this.shutdown.signal,
        logger,
      };
      const loaded: LoadedModel = await (config.isolation === 'process'
        ? loadInEngineProcess({ ...context, hangTimeoutSeconds: config.hangTimeoutSeconds, onExit: (reason) => this.crashed(slot, reason) })
        : engine.load({ ...context, resources: this.resources }));
      slot.loaded = loaded;
      slot.pid = (loaded as { pid?: number }).pid;
      slot.capabilities = capabilitiesOf(loaded.model);
      slot.failures = undefined;
      slot.failedStamp = undefined;
      slot.retryAt = undefined;
      slot.state = 'ready';
      slot.progress = 1;
      slot.loadedAt = Date.now();
      this.events.onStateChange?.(slot);
      // Loaded with no request waiting (preload, an operator's reload): its keep-alive starts now.
      queueMicrotask(() => this.idle(slot));
      return loaded;
    } catch (error) {
      slot.resident = false;
      throw this.loadFailure(slot, logger, error);
    }
  }

  /** A failed load: the entry says why, and the model is not tried again before its backoff ends. */
  private loadFailure(slot: Slot, logger: Logger, error: unknown): InferaError {
    slot.state = 'failed';
    slot.error = error instanceof Error ? error.message : String(error);
    if (!this.closed) {
      slot.failures = (slot.failures ?? 0) + 1;
      slot.failedStamp = fileStamp(slot.config.path);
      const wait = Math.min(LOAD_RETRY_MAX_MS, LOAD_RETRY_MIN_MS * 2 ** (slot.failures - 1));
      slot.retryAt = Date.now() + wait;
      logger.error({ err: error, failures: slot.failures, retryInSeconds: wait / 1000 }, 'model failed to load; not retried until its file changes or the wait ends');
    }
    this.events.onStateChange?.(slot);
    if (error instanceof InferaError) return error;
    return loadFailed(slot, undefined, error);
  }

  /** The entry's `memory`, else the engine's estimate; undefined for an engine that holds no local memory. */
  private async estimate(engine: EngineDescriptor, config: ModelConfig): Promise<number | undefined> {
    if (config.memory !== undefined) return config.memory;
    return engine.estimateMemory?.(config);
  }

  /**
   * Room for `slot` under lifecycle.maxLoaded and lifecycle.memoryBudget, decided at once (no await):
   * idle resident models are picked least recently used first until it fits, and unloaded only when it
   * then fits. Throws a 503 (Retry-After) when it cannot fit now. Returns the unloads to wait for.
   */
  private admit(slot: Slot): Promise<void>[] {
    // A remote model waits only for its own unload; a local one for every unload in progress, since the
    // memory of those models is already left out of the sum below.
    if (slot.memory === undefined) return slot.unloaded ? [slot.unloaded] : [];
    const pending = this.slots.flatMap((other) => (other.unloaded ? [other.unloaded] : []));
    const memory = slot.memory;
    const budget = this.memoryBudget;
    const cap = this.maxLoaded;
    // Models being unloaded are on their way out (the load waits for them), so they are not counted.
    const resident = this.slots.filter((other) => other !== slot && other.resident && !other.unloading && other.memory !== undefined);
    let used = resident.reduce((sum, other) => sum + (other.memory ?? 0), 0);
    let count = resident.length;
    const fits = () => (budget === undefined || used + memory <= budget) && (cap === 0 || count + 1 <= cap);
    if (budget !== undefined && memory > budget)
      throw new InferaError({
        status: 503,
        code: 'model_exceeds_memory_budget',
        message:
          `Model '${slot.config.id}' needs about ${formatBytes(memory)}, more than the whole memory budget ` +
          `(lifecycle.memoryBudget = ${formatBytes(budget)}). Raise the budget, or set the model's \`memory\` if the estimate is wrong.`,
        retryAfter: 60,
      });
    const idle = resident
      .filter((other) => other.loaded !== undefined && other.leases === 0)
      .sort((a, b) => (a.lastUsed ?? a.loadedAt ?? 0) - (b.lastUsed ?? b.loadedAt ?? 0));
    const victims: Slot[] = [];
    while (!fits() && idle.length > 0) {
      const victim = idle.shift()!;
      victims.push(victim);
      used -= victim.memory ?? 0;
      count--;
    }
    if (!fits()) {
      const busy = resident
        .filter((other) => !victims.includes(other))
        .map((other) => `${other.config.id} ${formatBytes(other.memory ?? 0)}${other.leases ? `, ${other.leases} request(s) in flight` : ', loading'}`)
        .join('; ');
      const overBudget = budget !== undefined && used + memory > budget;
      throw new InferaError({
        status: 503,
        code: overBudget ? 'memory_budget_full' : 'max_loaded_models',
        message: overBudget
          ? `Model '${slot.config.id}' needs about ${formatBytes(memory)}, but the memory budget (lifecycle.memoryBudget = ${formatBytes(budget)}) ` +
            `has ${formatBytes(Math.max(0, budget - used))} free and the resident models are busy (${busy}). Retry after ${BUSY_RETRY_SECONDS}s.`
          : `Model '${slot.config.id}' cannot load: ${count} model(s) are resident, the cap (lifecycle.maxLoaded = ${cap}), and all are busy (${busy}). Retry after ${BUSY_RETRY_SECONDS}s.`,
        retryAfter: BUSY_RETRY_SECONDS,
      });
    }
    slot.resident = true;
    for (const victim of victims) pending.push(this.unload(victim, `to make room for ${slot.config.id}`));
    return pending;
  }

  /**
   * Its engine process stopped on its own (host.ts has already failed the requests that were running
   * on it). The model is failed until a restart with backoff; returns the seconds until then.
   */
  private crashed(slot: Slot, reason: string): number {
    const quiet = slot.loadedAt !== undefined && Date.now() - slot.loadedAt > CRASH_RESET_MS;
    slot.crashes = (slot.crashes ?? 0) + 1;
    slot.failures = quiet ? 1 : (slot.failures ?? 0) + 1;
    const wait = Math.min(LOAD_RETRY_MAX_MS, RESTART_MIN_MS * 2 ** (slot.failures - 1));
    slot.loaded = undefined;
    slot.loading = undefined;
    slot.pid = undefined;
    slot.resident = false;
    this.cancelExpiry(slot);
    slot.state = 'failed';
    slot.error = `its engine process ${reason}`;
    slot.failedStamp = fileStamp(slot.config.path);
    slot.retryAt = Date.now() + wait;
    this.events.onStateChange?.(slot);
    if (!this.closed) {
      slot.restartTimer = setTimeout(() => {
        slot.restartTimer = undefined;
        if (this.closed || slot.state !== 'failed') return;
        // The timer says the wait is over. load() would compare Date.now() with retryAt, and the wall
        // clock may disagree with the timer's monotonic one (a timer fires up to 1 ms "early" by
        // Date.now() in ~2 % of cases, more when the clock steps back): the restart was then refused
        // and never tried again until a request came.
        slot.retryAt = undefined;
        // A restart that fails is a failed load: it backs off and stays failed as any other.
        this.load(slot).catch(() => undefined);
      }, wait);
      slot.restartTimer.unref();
    }
    return Math.ceil(wait / 1000);
  }

  /**
   * An operator's "try now": a failed model (a load that failed, an engine process waiting for its
   * restart) forgets its backoff and loads at once; an unloaded one loads. A loaded one is left as it is.
   * Resolves when the attempt is over, whatever its outcome (the entry says which).
   */
  async reload(id: string): Promise<ModelEntry> {
    const primary = this.find(id) as Slot | undefined;
    if (!primary) throw modelNotFound(id, 404);
    const group = this.routers.has(primary) ? this.slots.filter((slot) => slot.config.id.toLowerCase() === primary.config.id.toLowerCase()) : [primary];
    await Promise.all(group.map((slot) => this.reloadSlot(slot)));
    return primary;
  }

  private async reloadSlot(slot: Slot): Promise<void> {
    if (slot.state === 'failed') {
      clearTimeout(slot.restartTimer);
      slot.restartTimer = undefined;
      slot.retryAt = undefined;
      slot.failedStamp = undefined;
    }
    await this.load(slot).catch(() => undefined);
  }

  /** The lifecycle limits and what counts against them now (GET /admin/models, `infera ps`). */
  residency(): { maxLoaded: number; memoryBudget: number | null; resident: number; memoryUsed: number } {
    const resident = this.slots.filter((slot) => slot.resident && slot.memory !== undefined);
    return {
      maxLoaded: this.maxLoaded,
      memoryBudget: this.memoryBudget ?? null,
      resident: resident.length,
      memoryUsed: resident.reduce((sum, slot) => sum + (slot.memory ?? 0), 0),
    };
  }

  /** The image sizes a model's engine declares from its config, before any load (undefined: known only once loaded). */
  imageLimits(entry: ModelEntry): ImageLimits | undefined {
    return this.engineOf(entry.config)?.imageLimits?.(entry.config);
  }

  /** The context window a chat model's engine declares from its config, before any load (undefined: not declared). */
  contextSize(entry: ModelEntry): number | undefined {
    return this.engineOf(entry.config)?.contextSize?.(entry.config);
  }

  private engineOf(config: ModelConfig) {
    return this.engines.find((candidate) => candidate.name === config.engine);
  }

  /** Load the models of lifecycle.preload and those marked eager (startup). Failures are recorded in the entry, not thrown. */
  async preload(): Promise<void> {
    await Promise.all(this.slots.filter((slot) => slot.preload).map((slot) => this.load(slot).catch(() => undefined)));
  }

  /** Stop loading and dispose every model once its leases are back (bounded: a stuck request cannot hold shutdown forever). */
  async close(leaseWaitMs = 10_000): Promise<void> {
    this.closed = true;
    for (const slot of this.slots) {
      clearTimeout(slot.restartTimer);
      this.cancelExpiry(slot);
    }
    await Promise.all([...this.routers.values()].map((router) => router.stop()));
    await this.probes?.close();
    this.shutdown.abort(new InferaError({ status: 503, message: 'Server is shutting down.', retryAfter: 5 }));
    // Disposing a model under a running request frees native memory the request is still using.
    const deadline = Date.now() + leaseWaitMs;
    while (this.slots.some((slot) => slot.leases > 0) && Date.now() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 10));
    await Promise.allSettled(
      this.slots.map(async (slot) => {
        await slot.unloaded;
        const loaded = slot.loaded ?? (slot.loading ? await slot.loading.catch(() => undefined) : undefined);
        slot.loaded = undefined;
        slot.loading = undefined;
        slot.state = 'unloaded';
        slot.pid = undefined;
        if (loaded) await loaded.dispose();
      }),
    );
    await this.resources.close();
  }
}

/**
 * The model cannot answer now: its load failed, or its engine process died and waits for its restart.
 * A 503 with the time of the next attempt as Retry-After (the operator fixes the file or the model comes
 * back by itself); the reason stays in the message, since a client cannot act on a bare "unavailable".
 */
function loadFailed(slot: ModelEntry, note?: string, cause?: unknown): InferaError {
  const retryAfter = slot.retryAt === undefined ? undefined : Math.max(1, Math.ceil((slot.retryAt - Date.now()) / 1000));
  return new InferaError({
    status: 503,
    code: 'model_load_failed',
    message: `Model '${slot.config.id}' failed to load: ${slot.error}${note ? ` (${note})` : ''}`,
    retryAfter,
    cause,
  });
}

function restarting(slot: ModelEntry): InferaError {
  const retryAfter = Math.max(1, Math.ceil(((slot.retryAt ?? Date.now()) - Date.now()) / 1000));
  return new InferaError({
    status: 503,
    code: 'engine_restarting',
    message: `Model '${slot.config.id}' is restarting: ${slot.error}. Retry after ${retryAfter}s.`,
    retryAfter,
  });
}

/** Size and mtime of a model's file or folder ('' when it has none or it is missing): a change means "try again". */
function fileStamp(path: string | undefined): string {
  if (path === undefined) return '';
  try {
    const stats = statSync(path);
    return `${stats.size}:${stats.mtimeMs}`;
  } catch {
    return 'missing';
  }
}

/**
 * The refusal for an id nothing serves, made once per id: a client repeating a wrong or retired id
 * (the usual case) then costs a map lookup, not an Error. Bounded: ids varying without end (random
 * names) cost a clear per UNKNOWN_MODELS_MAX of them.
 */
const UNKNOWN_MODELS_MAX = 256;
const unknownModels = new Map<string, InferaError>();
function unknownModel(id: string): InferaError {
  let refusal = unknownModels.get(id);
  if (!refusal) {
    if (unknownModels.size >= UNKNOWN_MODELS_MAX) unknownModels.clear();
    refusal = modelNotFound(id);
    unknownModels.set(id, refusal);
  }
  return refusal;
}
