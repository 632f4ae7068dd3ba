// One deployment of a model as the router sees it: what it may take (health, circuit breaker, cap), what
// it is doing (requests in flight) and what happened to it (totals for the admin API and metrics).
import type { DeploymentOptions, RoutingOptions } from './config.ts';

/** The breaker's state: closed (serving), open (ejected until `ejectedUntil`), half-open (one probe may go). */
export type BreakerState = 'closed' | 'open' | 'half-open';

/** How an attempt ended, for the breaker: a failure counts toward ejection, neutral (the client left) counts nothing. */
export type Outcome = 'success' | 'failure' | 'neutral';

export interface DeploymentSnapshot {
  name: string;
  engine: string;
  /** The upstream's base URL; absent for an in-process deployment. */
  url?: string;
  priority: number;
  weight: number;
  maxConcurrent: number;
  /** Takes requests now: healthy, not ejected (or due for its half-open probe), not full. */
  available: boolean;
  healthy: boolean;
  breaker: BreakerState;
  ejectedUntil?: string;
  inFlight: number;
  consecutiveFailures: number;
  requests: number;
  failures: number;
  ejections: number;
  lastError?: string;
  lastCheckAt?: string;
  /** When the health checks last changed their verdict. */
  healthChangedAt?: string;
  /** When the breaker last ejected it. */
  lastEjectedAt?: string;
}

export interface DeploymentEvents {
  onEject?(deployment: Deployment): void;
}

export class Deployment {
  readonly name: string;
  readonly priority: number;
  readonly weight: number;
  readonly maxConcurrent: number;
  inFlight = 0;
  /** Active health: the last check's verdict (upstreams), or the model's load state (in-process). */
  checkedHealthy = true;
  lastCheckAt?: number;
  healthChangedAt?: number;
  lastEjectedAt?: number;
  consecutiveFailures = 0;
  ejectedUntil?: number;
  /** Ejections in a row without a successful probe between them: the cooldown doubles with each. */
  private strikes = 0;
  /** The half-open probe is out: nothing else goes until it answers. */
  private probing = false;
  requests = 0;
  failures = 0;
  ejections = 0;
  lastError?: string;

  constructor(
    options: DeploymentOptions & { name: string },
    readonly engine: string,
    private readonly routing: RoutingOptions,
    /** In-process deployments: false while their model failed to load or their engine process restarts. */
    private readonly localHealth: (() => boolean) | undefined,
    readonly url: string | undefined,
    private readonly events: DeploymentEvents = {},
  ) {
    this.name = options.name;
    this.priority = options.priority;
    this.weight = options.weight;
    this.maxConcurrent = options.maxConcurrent;
  }

  get healthy(): boolean {
    return this.localHealth ? this.localHealth() : this.checkedHealthy;
  }

  breaker(now = Date.now()): BreakerState {
    if (this.ejectedUntil === undefined) return 'closed';
    return now < this.ejectedUntil ? 'open' : 'half-open';
  }

  full(): boolean {
    return this.maxConcurrent > 0 && this.inFlight >= this.maxConcurrent;
  }

  /** Whether a request may go here now (full deployments excluded). */
  admits(now = Date.now()): boolean {
    if (!this.healthy || this.full()) return false;
    const state = this.breaker(now);
    return state === 'closed' || (state === 'half-open' && !this.probing);
  }

  /** A request starts here; the returned function ends it (exactly once) with its outcome. */
  begin(now = Date.now()): (outcome: Outcome, error?: unknown) => void {
    const probe = this.breaker(now) === 'half-open';
    if (probe) this.probing = true;
    this.inFlight++;
    this.requests++;
    let ended = false;
    return (outcome, error) => {
      if (ended) return;
      ended = true;
      this.inFlight--;
      if (probe) this.probing = false;
      if (outcome === 'success') this.succeeded(probe);
      else if (outcome === 'failure') this.failed(error, probe);
    };
  }

  private succeeded(probe: boolean): void {
    this.consecutiveFailures = 0;
    // Only the probe closes an open breaker: a success while ejected answers a request sent before the
    // ejection, and says little about the deployment now.
    if (probe || this.ejectedUntil === undefined) {
      this.ejectedUntil = undefined;
      this.strikes = 0;
    }
  }

  private failed(error: unknown, probe: boolean): void {
    this.failures++;
    this.consecutiveFailures++;
    this.lastError = error instanceof Error ? error.message : error === undefined ? undefined : String(error);
    const open = this.breaker() === 'open';
    if (!open && (probe || this.consecutiveFailures >= this.routing.failureThreshold)) this.eject();
  }

  private eject(): void {
    const factor = Math.min(8, 2 ** this.strikes);
    this.strikes++;
    this.ejections++;
    this.lastEjectedAt = Date.now();
    this.ejectedUntil = this.lastEjectedAt + this.routing.cooldownSeconds * 1000 * factor;
    this.events.onEject?.(this);
  }

  snapshot(now = Date.now()): DeploymentSnapshot {
    const breaker = this.breaker(now);
    return {
      name: this.name,
      engine: this.engine,
      ...(this.url ? { url: this.url } : {}),
      priority: this.priority,
      weight: this.weight,
      maxConcurrent: this.maxConcurrent,
      available: this.admits(now),
      healthy: this.healthy,
      breaker,
      ...(this.ejectedUntil !== undefined && breaker === 'open' ? { ejectedUntil: new Date(this.ejectedUntil).toISOString() } : {}),
      inFlight: this.inFlight,
      consecutiveFailures: this.consecutiveFailures,
      requests: this.requests,
      failures: this.failures,
      ejections: this.ejections,
      ...(this.lastError ? { lastError: this.lastError } : {}),
      ...(this.lastCheckAt !== undefined ? { lastCheckAt: new Date(this.lastCheckAt).toISOString() } : {}),
      ...(this.healthChangedAt !== undefined ? { healthChangedAt: new Date(this.healthChangedAt).toISOString() } : {}),
      ...(this.lastEjectedAt !== undefined ? { lastEjectedAt: new Date(this.lastEjectedAt).toISOString() } : {}),
    };
  }
}
