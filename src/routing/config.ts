// Routing's config: the `deployment` block a model entry may carry, and the top-level `routing` block
// (docs/CONFIGURATION.md, "Routing"). zod only: imported by the config schema and the CLI.
import { z } from 'zod';

/**
 * How one `models[]` entry takes part in routing. Several entries with the same `id` are deployments of
 * one model: each request goes to one of them (src/routing/router.ts).
 */
export const deploymentSchema = z
  .object({
    /** How admin, /ready, metrics and errors name it; default: the upstream's host:port, or `local` (then `local-2`…). */
    name: z
      .string()
      .regex(/^[A-Za-z0-9._:@/-]{1,100}$/, { error: 'letters, digits and . _ : @ / - only (at most 100)' })
      .optional(),
    /** Lower is preferred: a deployment of priority 1 gets requests only while none of priority 0 can take one. */
    priority: z.number().int().min(0).max(100).default(0),
    /** Share of the traffic among deployments of the same priority (least outstanding requests, scaled by weight). */
    weight: z.number().positive().max(1000).default(1),
    /** Requests in flight on it at most; 0: no cap. When every deployment is full the client gets 503 + Retry-After. */
    maxConcurrent: z.number().int().min(0).default(0),
    /**
     * Upstreams: the path of the active health check, relative to upstream.baseUrl (`models` → GET
     * <baseUrl>/models) or absolute from the server's root (`/health`). Default: `models`; `/health` for
     * TEI; `/ready` for another Infera (not ready while its eager models load).
     */
    healthPath: z.string().min(1).optional(),
  })
  .strict();

export const routingSchema = z
  .object({
    /** Seconds between active health checks of each upstream deployment; 0 turns them off. */
    healthCheckIntervalSeconds: z.number().min(0).max(3600).default(5),
    /** A health check that takes longer failed. */
    healthCheckTimeoutSeconds: z.number().positive().max(600).default(2),
    /** Consecutive failed requests (connection errors, 5xx, timeouts) that eject a deployment (circuit breaker). */
    failureThreshold: z.number().int().positive().max(1000).default(3),
    /** Seconds an ejected deployment gets no requests; then one probe request (half-open) decides. Doubles per failed probe, up to 8×. */
    cooldownSeconds: z.number().positive().max(3600).default(10),
    /** Deployments one request may try (the first plus retries on others) before its error goes to the client. */
    maxAttempts: z.number().int().min(1).max(10).default(3),
  })
  .strict();

export type DeploymentOptions = z.output<typeof deploymentSchema>;
export type RoutingOptions = z.output<typeof routingSchema>;
