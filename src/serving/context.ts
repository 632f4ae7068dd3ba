import type { StopSignal } from '../spec/chat.ts';
// What every serving function receives. Built once in main.ts (services) and per request (context).
import type { Logger } from 'pino';
import type { InferaConfig } from '../config/schema.ts';
import type { Gate, Principal } from '../platform/gate.ts';
import type { ModelRegistry } from '../registry/registry.ts';
import type { ServingResources } from './resources.ts';

export interface Services extends ServingResources {
  config: InferaConfig;
  registry: ModelRegistry;
  gate: Gate;
  logger: Logger;
}

export interface RequestContext {
  requestId: string;
  principal: Principal;
  /** Aborted when the client disconnects. */
  signal: StopSignal;
  startedAt: number;
  logger: Logger;
}

/** What a serving function hands back to the HTTP layer. */
export type ServeResult =
  | { type: 'json'; status?: number; body: unknown; headers?: Record<string, string> }
  | {
      type: 'sse';
      headers?: Record<string, string>;
      /**
       * SSE frames ("data: ...\n\n"). The HTTP layer writes each as it comes and calls return() when the
       * client leaves; the iterator settles usage in both cases before it finishes.
       */
      frames: AsyncIterator<string, void>;
    };
