// Which deployment takes the next request: among those that admit one (healthy, breaker closed or due
// for its probe, under their cap), the best priority; among those, the fewest requests in flight per
// unit of weight. Ties rotate, so idle deployments of equal weight share a trickle of traffic.
import type { Deployment } from './deployment.ts';

export class Balancer {
  private turn = 0;

  constructor(private readonly deployments: readonly Deployment[]) {}

  /** The deployment for the next attempt, skipping those already tried; undefined when none admits one. */
  pick(exclude?: ReadonlySet<Deployment>, now = Date.now()): Deployment | undefined {
    let best: Deployment[] = [];
    let bestPriority = Number.POSITIVE_INFINITY;
    let bestScore = Number.POSITIVE_INFINITY;
    for (const deployment of this.deployments) {
      if (exclude?.has(deployment) || !deployment.admits(now)) continue;
      const score = (deployment.inFlight + 1) / deployment.weight;
      if (deployment.priority < bestPriority || (deployment.priority === bestPriority && score < bestScore)) {
        bestPriority = deployment.priority;
        bestScore = score;
        best = [deployment];
      } else if (deployment.priority === bestPriority && score === bestScore) best.push(deployment);
    }
    if (best.length <= 1) return best[0];
    this.turn = (this.turn + 1) % 1_000_000;
    return best[this.turn % best.length];
  }
}
