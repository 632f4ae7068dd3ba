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

export class HealthChecker {
  private timer?: NodeJS.Timeout;
  private agent?: Agent;
  private running = new Set<Deployment>();
  private stopped = false;

  constructor(
    private readonly targets: readonly HealthTarget[],
    private readonly options: RoutingOptions,
    private readonly logger: Logger,
    private readonly onChange?: (deployment: Deployment) => void,
  ) {}

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
    await this.agent?.close().catch(() => this.agent?.destroy());
  }

  /** A request just failed on it: check it now rather than at the next tick (a dead server leaves the rotation at once). */
  checkNow(deployment: Deployment): void {
    if (this.options.healthCheckIntervalSeconds === 0) return;
    const target = this.targets.find((candidate) => candidate.deployment === deployment);
    if (target) void this.check(target);
  }

  /** One check of one deployment (skipped while its previous check is still out). */
  async check({ deployment, url }: HealthTarget): Promise<boolean> {
    if (this.running.has(deployment) || this.stopped) return deployment.checkedHealthy;
    this.running.add(deployment);
    let healthy = false;
    let reason = '';
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
      healthy = response.statusCode >= 200 && response.statusCode < 300;
      if (!healthy) reason = `answered ${response.statusCode}`;
    } catch (error) {
      reason = (error as Error).message || String(error);
    } finally {
      this.running.delete(deployment);
    }
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
