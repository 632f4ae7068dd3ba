// Optional OpenTelemetry traces (config `tracing`, off by default): @fastify/otel makes a span per
// request (and child spans per hook and handler), exported over OTLP/HTTP to a collector. Each server
// has its own tracer provider, closed (flushed) with it; the OpenTelemetry SDK modules are loaded only when
// a server turns tracing on. docs/OBSERVABILITY.md, "Traces".
import type { Span } from '@opentelemetry/api';
import type { FastifyPluginCallback, FastifyReply, FastifyRequest } from 'fastify';
import type { InferaConfig } from '../config/schema.ts';
import type { Logger } from './logger.ts';

export interface Tracing {
  /** Register before any route: it instruments the routes as they are added. */
  plugin: FastifyPluginCallback;
  /** Infera's own attributes on the request span (request id, key id, model), once they are known. */
  annotate(request: FastifyRequest, attributes: Record<string, string>): void;
  /**
   * Ends the request span of an answer Fastify did not send itself (an SSE stream writes the socket
   * directly, so @fastify/otel's onSend never runs for it), with the status the client got.
   */
  finish(request: FastifyRequest, reply: FastifyReply, status: number): void;
  /** Export what is still buffered and stop. */
  close(): Promise<void>;
}

type WithOtel = FastifyRequest & { opentelemetry?: () => { span?: Span | null } };
const spanOf = (request: FastifyRequest): Span | undefined => (request as WithOtel).opentelemetry?.().span ?? undefined;

/** Context propagation and W3C trace headers are process-wide in OpenTelemetry's API: set once. */
let globalsSet = false;

export async function startTracing(settings: InferaConfig['tracing'], logger: Logger): Promise<Tracing | undefined> {
  if (!settings.enabled) return undefined;
  const [api, { AsyncLocalStorageContextManager }, { W3CTraceContextPropagator }, { resourceFromAttributes }, { NodeTracerProvider, BatchSpanProcessor }, { OTLPTraceExporter }, otel] =
    await Promise.all([
      import('@opentelemetry/api'),
      import('@opentelemetry/context-async-hooks'),
      import('@opentelemetry/core'),
      import('@opentelemetry/resources'),
      import('@opentelemetry/sdk-trace-node'),
      import('@opentelemetry/exporter-trace-otlp-http'),
      import('@fastify/otel'),
    ]);
  if (!globalsSet) {
    globalsSet = true;
    api.context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
    api.propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  }
  const exporter = new OTLPTraceExporter({ url: settings.endpoint, headers: settings.headers });
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ 'service.name': settings.serviceName }),
    spanProcessors: [new BatchSpanProcessor(exporter, { scheduledDelayMillis: 1000 })],
  });
  const { FastifyOtelInstrumentation } = otel;
  const instrumentation = new FastifyOtelInstrumentation({
    // Probes and scrapes every few seconds would drown the traces that matter.
    ignorePaths: (route: { url: string }) => route.url === '/health' || route.url === '/ready' || route.url === '/metrics',
  });
  instrumentation.setTracerProvider(provider);
  logger.info({ endpoint: settings.endpoint, serviceName: settings.serviceName }, 'OpenTelemetry traces on');
  return {
    plugin: instrumentation.plugin() as unknown as FastifyPluginCallback,
    annotate(request, attributes) {
      spanOf(request)?.setAttributes(attributes);
    },
    finish(request, _reply, status) {
      const span = spanOf(request);
      if (!span) return;
      span.setAttribute('http.response.status_code', status);
      if (status >= 500) span.setStatus({ code: api.SpanStatusCode.ERROR });
      span.end();
    },
    close: async () => {
      await provider.shutdown().catch((error: unknown) => logger.warn({ err: error }, 'could not flush the last traces'));
    },
  };
}
