// One model id served by several deployments. The Router owns their state (src/routing/deployment.ts),
// picks one per attempt (./balancer.ts), checks upstreams (./health.ts), and retries a failed attempt
// on another deployment only while nothing of the answer has gone to the client: a JSON answer is sent
// whole once it exists, so a failed call can always be retried; a stream is retried only until its
// first part (serving peeks that part before it sends the HTTP status), never after.
//
// To the serving layer a routed model looks like any other model (./models.ts wraps each kind), so
// routes, limits, the ledger and the batchers need no change.
import type { Logger } from 'pino';
import type { ModelConfig, ModelTypeName } from '../config/schema.ts';
import { InferaError, isAbortError } from '../errors/index.ts';
import type { AnyModel } from '../spec/index.ts';
import { Balancer } from './balancer.ts';
import type { RoutingOptions } from './config.ts';
import { Deployment, type DeploymentSnapshot, type Outcome } from './deployment.ts';
import { HealthChecker, type HealthTarget, type SharedProbes } from './health.ts';
import { routedModel } from './models.ts';
import type { StopSignal } from '../spec/chat.ts';

/** What the registry gives the router for each entry of the model id. */
export interface DeploymentSource {
  config: ModelConfig;
  /** Lease the deployment's model, loading it first if needed; release() when the attempt is over. */
  acquire(): Promise<{ model: AnyModel; release(): void }>;
  /** The same lease at once when the model is loaded already (no promise); undefined when acquire() must wait for a load. */
  acquireNow?(): { model: AnyModel; release(): void } | undefined;
  /** In-process deployments: false while their model cannot serve (failed load, engine restarting). */
  localHealth?: () => boolean;
  /** Upstreams: where the active health check goes, and the default name (host:port). */
  remote?: { name: string; baseUrl: string; healthUrl: string };
}

/** Per-deployment counters (src/observability/metrics.ts implements it). */
export interface RoutingMetrics {
  deploymentRequest(model: string, deployment: string): void;
  deploymentFailure(model: string, deployment: string): void;
  deploymentEjection(model: string, deployment: string): void;
}

export interface RouterSnapshot {
  id: string;
  type: ModelTypeName;
  /** Some deployment takes requests now (or will, once a full one frees a slot). */
  healthy: boolean;
  deployments: DeploymentSnapshot[];
}

/** Thrown when no deployment can take a request: 503 + Retry-After. */
export function unavailable(id: string, deployments: readonly Deployment[], options: RoutingOptions): InferaError {
  const now = Date.now();
  const usable = deployments.filter((deployment) => deployment.healthy && deployment.breaker(now) !== 'open');
  const full = usable.length > 0 && usable.every((deployment) => deployment.full());
  const ejectionEnds = deployments
    .filter((deployment) => deployment.healthy && deployment.breaker(now) === 'open')
    .map((deployment) => (deployment.ejectedUntil ?? now) - now);
  const waitMs = full ? 1000 : ejectionEnds.length ? Math.min(...ejectionEnds) : options.healthCheckIntervalSeconds * 1000 || options.cooldownSeconds * 1000;
  const states = deployments
    .map((deployment) => {
      const state = !deployment.healthy ? 'unhealthy' : deployment.breaker(now) === 'open' ? 'ejected' : deployment.full() ? 'full' : 'probing';
      return `${deployment.name}: ${state}`;
    })
    .join(', ');
  return new InferaError({
    status: 503,
    code: 'deployments_unavailable',
    message: `Model '${id}': no deployment can take the request now (${states}). Retry later.`,
    retryAfter: Math.max(1, Math.ceil(waitMs / 1000)),
  });
}

/** Whether an attempt's error may go to another deployment, and what it says about this one. */
export function judge(error: unknown, signal: StopSignal | undefined): { outcome: Outcome; retry: boolean } {
  // The client left (or the route's deadline passed): nobody waits for a retry, and the deployment did nothing wrong.
  if (signal?.aborted || isAbortError(error)) return { outcome: 'neutral', retry: false };
  if (error instanceof InferaError) {
    if (error.status >= 500) return { outcome: 'failure', retry: true };
    // Busy, not broken: another deployment may have room, but no ejection for shedding load.
    if (error.status === 429 || error.status === 408 || error.status === 409) return { outcome: 'neutral', retry: true };
    // A 4xx is about the request: every deployment would say the same, and this one works.
    return { outcome: 'success', retry: false };
  }
  return { outcome: 'failure', retry: true };
}

export class Router {
  readonly deployments: Deployment[];
  private readonly sources = new Map<Deployment, DeploymentSource>();
  private readonly balancer: Balancer;
  private readonly checker: HealthChecker;
  /** The model the routed wrapper reads its properties from (context size, tokenizer…): the last one leased. */
  home?: AnyModel;
  private wrapper?: AnyModel;

  constructor(
    readonly id: string,
    readonly type: ModelTypeName,
    sources: readonly DeploymentSource[],
    readonly options: RoutingOptions,
    private readonly logger: Logger,
    private readonly metrics?: RoutingMetrics,
    /** The server's health checks by URL, shared among its routers (./health.ts). */
    probes?: SharedProbes,
  ) {
    const taken = new Set(sources.map((source) => source.config.deployment.name).filter((name) => name !== undefined));
    const targets: HealthTarget[] = [];
    this.deployments = sources.map((source) => {
      const name = source.config.deployment.name ?? uniqueName(source.remote?.name ?? 'local', taken);
      const deployment = new Deployment({ ...source.config.deployment, name }, source.config.engine, options, source.localHealth, source.remote?.baseUrl, {
        onEject: (ejected) => {
          this.logger.warn(
            { model: id, deployment: ejected.name, until: new Date(ejected.ejectedUntil ?? 0).toISOString(), lastError: ejected.lastError },
            'deployment ejected (circuit breaker open)',
          );
          this.metrics?.deploymentEjection(id, ejected.name);
        },
      });
      this.sources.set(deployment, source);
      if (source.remote) targets.push({ deployment, url: source.remote.healthUrl });
      return deployment;
    });
    this.balancer = new Balancer(this.deployments);
    this.checker = new HealthChecker(targets, options, logger.child({ model: id }), undefined, probes);
  }

  start(): void {
    this.checker.start();
  }

  stop(): Promise<void> {
    return this.checker.stop();
  }

  snapshot(): RouterSnapshot {
    const now = Date.now();
    return {
      id: this.id,
      type: this.type,
      healthy: this.deployments.some((deployment) => deployment.healthy && deployment.breaker(now) !== 'open'),
      deployments: this.deployments.map((deployment) => deployment.snapshot(now)),
    };
  }

  /**
   * The routed model, for the registry's lease: one deployment is leased for the model's properties and
   * checks (context size, prompt counting); each call then picks its own deployment. 503 + Retry-After
   * when none can take a request.
   */
  /** acquire()'s lease without a promise when its first pick is ready now; undefined otherwise (acquire() then tries). */
  acquireNow(): { model: AnyModel; release(): void } | undefined {
    const deployment = this.balancer.pick(undefined);
    const lease = deployment && this.sources.get(deployment)!.acquireNow?.();
    if (!lease) return undefined;
    this.home = lease.model;
    this.wrapper ??= routedModel(this);
    return { model: this.wrapper, release: lease.release };
  }

  async acquire(): Promise<{ model: AnyModel; release(): void }> {
    // The deployments tried so far: a set only once one has failed (nearly every request takes its first pick).
    let tried: Set<Deployment> | undefined;
    let last: unknown;
    for (;;) {
      const deployment = this.balancer.pick(tried);
      if (!deployment) throw last ?? unavailable(this.id, this.deployments, this.options);
      try {
        const source = this.sources.get(deployment)!;
        const lease = source.acquireNow?.() ?? (await source.acquire());
        this.home = lease.model;
        this.wrapper ??= routedModel(this);
        return { model: this.wrapper, release: lease.release };
      } catch (error) {
        // A load that fails is the registry's to report (the entry's state); try another deployment.
        tried = tried ? tried.add(deployment) : new Set([deployment]);
        last = error;
      }
    }
  }

  /** A call whose answer goes to the client whole (JSON): retried on another deployment when it fails retryably. */
  async call<T>(signal: StopSignal | undefined, run: (model: AnyModel) => Promise<T>): Promise<T> {
    const { value, release, end } = await this.attempt(signal, run);
    end('success');
    release();
    return value;
  }

  /**
   * A streamed call: retried on another deployment while the attempt has produced nothing; once its
   * first part is out, a failure ends the stream (serving turns it into an error frame and [DONE]).
   * Ending the iteration early (the client left) returns the deployment's stream, which stops its work.
   */
  stream<P>(signal: StopSignal | undefined, open: (model: AnyModel) => AsyncIterable<P>): AsyncIterable<P> {
    return { [Symbol.asyncIterator]: () => new RoutedStream(this, signal, open) };
  }

  /**
   * One attempt after another until one yields its first part (or ends), for RoutedStream: that
   * attempt's iterator, first result, lease and end; a retryable failure before its first part goes on
   * to the next deployment.
   */
  async firstPart<P>(
    signal: StopSignal | undefined,
    open: (model: AnyModel) => AsyncIterable<P>,
  ): Promise<{ iterator: AsyncIterator<P>; first: IteratorResult<P>; release(): void; end: (outcome: Outcome, error?: unknown) => void }> {
    const { value, release, end } = await this.attempt(signal, async (model) => {
      const iterator = open(model)[Symbol.asyncIterator]();
      try {
        return { iterator, first: await iterator.next() };
      } catch (error) {
        await iterator.return?.()?.catch(() => undefined);
        throw error;
      }
    });
    return { ...value, release, end };
  }

  /**
   * The retry loop of call() and firstPart(): `start` on one deployment after another (each at most
   * once, up to maxAttempts) until it resolves, with that attempt's lease release and end, which the
   * caller then owns. A failure is judged and ends its attempt; a retryable one goes on to the next
   * deployment, any other is thrown.
   */
  private async attempt<T>(
    signal: StopSignal | undefined,
    start: (model: AnyModel) => Promise<T>,
  ): Promise<{ value: T; release(): void; end: (outcome: Outcome, error?: unknown) => void }> {
    let tried: Set<Deployment> | undefined;
    let last: unknown;
    for (let attempt = 0; attempt < this.options.maxAttempts; attempt++) {
      signal?.throwIfAborted();
      const deployment = this.balancer.pick(tried);
      if (!deployment) break;
      const end = this.begin(deployment);
      let lease: { model: AnyModel; release(): void } | undefined;
      try {
        const source = this.sources.get(deployment)!;
        lease = source.acquireNow?.() ?? (await source.acquire());
        return { value: await start(lease.model), release: lease.release, end };
      } catch (error) {
        const verdict = judge(error, signal);
        end(verdict.outcome, error);
        lease?.release();
        if (!verdict.retry) throw error;
        tried = tried ? tried.add(deployment) : new Set([deployment]);
        last = error;
        this.retrying(deployment, error);
      }
    }
    throw last ?? unavailable(this.id, this.deployments, this.options);
  }

  private begin(deployment: Deployment): (outcome: Outcome, error?: unknown) => void {
    const end = deployment.begin();
    this.metrics?.deploymentRequest(this.id, deployment.name);
    return (outcome, error) => {
      end(outcome, error);
      if (outcome === 'failure') {
        this.metrics?.deploymentFailure(this.id, deployment.name);
        this.checker.checkNow(deployment);
      }
    };
  }

  private retrying(deployment: Deployment, error: unknown): void {
    this.logger.warn({ model: this.id, deployment: deployment.name, err: error }, 'deployment failed before answering; trying another');
  }
}

/**
 * A routed stream: the first next() runs Router.firstPart (retries before the first part); from then on
 * each next() is the committed attempt's own, passed through. As an async generator every part cost
 * one more await, its promise and result object, and a return() while a read was pending waited for
 * that read (so the client leaving reached the deployment only at its next part); here return() goes
 * to the attempt at once.
 */
class RoutedStream<P> implements AsyncIterator<P> {
  private opening?: Promise<IteratorResult<P>>;
  private attempt?: { iterator: AsyncIterator<P>; release(): void; end: (outcome: Outcome, error?: unknown) => void };
  private closed = false;

  constructor(
    private readonly router: Router,
    private readonly signal: StopSignal | undefined,
    private readonly open: (model: AnyModel) => AsyncIterable<P>,
  ) {}

  next(): Promise<IteratorResult<P>> {
    if (this.closed) return Promise.resolve({ done: true, value: undefined });
    const attempt = this.attempt;
    if (attempt) return attempt.iterator.next().then(this.passed, this.failed);
    if (this.opening) return this.opening.then(() => this.next());
    this.opening = this.router.firstPart(this.signal, this.open).then(
      ({ iterator, first, release, end }) => {
        this.opening = undefined;
        this.attempt = { iterator, release, end };
        return this.passed(first);
      },
      (error: unknown) => {
        this.opening = undefined;
        this.closed = true;
        throw error;
      },
    );
    return this.opening;
  }

  private readonly passed = (result: IteratorResult<P>): IteratorResult<P> => {
    if (result.done) this.finish('success');
    return result;
  };

  private readonly failed = async (error: unknown): Promise<never> => {
    const outcome = judge(error, this.signal).outcome;
    // Left early (the client went away): stop the deployment's work now.
    if (outcome === 'neutral') await this.attempt?.iterator.return?.()?.catch(() => undefined);
    this.finish(outcome, error);
    throw error;
  };

  /** Ends the committed attempt once: its outcome to the deployment, its lease back. */
  private finish(outcome: Outcome, error?: unknown): void {
    this.closed = true;
    const attempt = this.attempt;
    if (!attempt) return;
    this.attempt = undefined;
    attempt.end(outcome, error);
    attempt.release();
  }

  async return(): Promise<IteratorResult<P>> {
    if (this.opening) await this.opening.catch(() => undefined);
    const attempt = this.attempt;
    this.closed = true;
    if (attempt) {
      // Left early (the client went away): stop the deployment's work now.
      await attempt.iterator.return?.()?.catch(() => undefined);
      this.finish('neutral');
    }
    return { done: true, value: undefined };
  }
}

function uniqueName(base: string, taken: Set<string>): string {
  let name = base;
  for (let i = 2; taken.has(name); i++) name = `${base}-${i}`;
  taken.add(name);
  return name;
}
