// Active health checks of upstream deployments: a GET every interval (the upstream's model list by
// default); a 2xx marks the deployment healthy, anything else (refused, timeout, non-2xx) unhealthy
// until a check passes. Its own small connection pool, so a check never waits behind traffic.
import type { Logger } from 'pino';
import type { Agent } from 'undici';
import type { RoutingOptions } from './config.ts';
import type { Deployment } from './deployment.ts';

export const HEALTH_CHECK_AGENT = 'infera-health-check';

export interface HealthTarget {
  deployment: Deployment;
  url: string;
}

/**
 * Checks shared by every router of one server, by URL: the models that `--upstream` lists are each
 * served alone by the same upstream, and each is routed, so without this every one of them would send
 * its own GET to the same URL each interval (and hold its own socket). A check younger than half the
 * interval is reused; one still out is joined.
 */
export class SharedProbes {
  private readonly probes = new Map<string, { at: number; result: Promise<Probe> }>();
  private agent?: Agent;

  constructor(private readonly options: RoutingOptions) {}

  probe(url: string, fresh: boolean): Promise<Probe> {
    const now = Date.now();
    const last = this.probes.get(url);
    // A check still out is always joined; a finished one is reused while recent, unless `fresh` asks for a new one.
    if (last && (last.at === -1 || (!fresh && now - last.at < (this.options.healthCheckIntervalSeconds * 1000) / 2))) return last.result;
    const entry = { at: -1, result: this.get(url) };
    this.probes.set(url, entry);
    void entry.result.then(() => {
      entry.at = Date.now();
    });
    return entry.result;
  }

  private async get(url: string): Promise<Probe> {
    try {
      const { Agent, request } = await import('undici');
      this.agent ??= new Agent({ connections: 1, keepAliveTimeout: 10_000, connect: { timeout: this.options.healthCheckTimeoutSeconds * 1000 } });
      const response = await request(url, {
        dispatcher: this.agent,
        // Says what it is in the upstream's access log (and lets a test's fake upstream tell checks from traffic).
        headers: { 'user-agent': HEALTH_CHECK_AGENT },
        signal: AbortSignal.timeout(this.options.healthCheckTimeoutSeconds * 1000),
        headersTimeout: this.options.healthCheckTimeoutSeconds * 1000,
      });
      await response.body.dump();
      const healthy = response.statusCode >= 200 && response.statusCode < 300;
      return { healthy, reason: healthy ? '' : `answered ${response.statusCode}` };
    } catch (error) {
      return { healthy: false, reason: (error as Error).message || String(error) };
    }
  }

  async close(): Promise<void> {
    await this.agent?.close().catch(() => this.agent?.destroy());
  }
}

interface Probe {
  healthy: boolean;
  reason: string;
}

export class HealthChecker {
  private timer?: NodeJS.Timeout;
  private running = new Set<Deployment>();
  private stopped = false;
  /** Its own probes unless the server shares one set among its routers (then the server closes it). */
  private readonly probes: SharedProbes;
  private readonly ownsProbes: boolean;

  constructor(
    private readonly targets: readonly HealthTarget[],
    private readonly options: RoutingOptions,
    private readonly logger: Logger,
    private readonly onChange?: (deployment: Deployment) => void,
    probes?: SharedProbes,
  ) {
    this.probes = probes ?? new SharedProbes(options);
    this.ownsProbes = probes === undefined;
  }

  start(): void {
    if (!this.targets.length || this.options.healthCheckIntervalSeconds === 0) return;
    const tick = () => {
      for (const target of this.targets) void this.check(target);
    };
    tick();
    this.timer = setInterval(tick, this.options.healthCheckIntervalSeconds * 1000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    if (this.ownsProbes) await this.probes.close();
  }

  /** A request just failed on it: check it now rather than at the next tick (a dead server leaves the rotation at once). */
  checkNow(deployment: Deployment): void {
    if (this.options.healthCheckIntervalSeconds === 0) return;
    const target = this.targets.find((candidate) => candidate.deployment === deployment);
    if (target) void this.check(target, true);
  }

  /** One check of one deployment (skipped while its previous check is still out); `fresh`: not a recent shared result. */
  async check({ deployment, url }: HealthTarget, fresh = false): Promise<boolean> {
    if (this.running.has(deployment) || this.stopped) return deployment.checkedHealthy;
    this.running.add(deployment);
    let probe: Probe;
    try {
      probe = await this.probes.probe(url, fresh);
    } finally {
      this.running.delete(deployment);
    }
    const { healthy, reason } = probe;
    deployment.lastCheckAt = Date.now();
    if (healthy !== deployment.checkedHealthy) {
      deployment.checkedHealthy = healthy;
      deployment.healthChangedAt = deployment.lastCheckAt;
      if (healthy) this.logger.info({ deployment: deployment.name }, 'deployment passed its health check: healthy again');
      else {
        deployment.lastError = `health check GET ${url} failed: ${reason}`;
        this.logger.warn({ deployment: deployment.name, url, reason }, 'deployment failed its health check: unhealthy');
      }
      this.onChange?.(deployment);
    }
    return healthy;
  }
}
