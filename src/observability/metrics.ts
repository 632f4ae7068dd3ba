// Prometheus metrics for one server. Every server owns its own prom-client Registry (never the
// module-global default one): tests and benches run several servers in one process, and each
// /metrics must count only its own traffic. The HTTP layer, the serving functions, the micro-batchers,
// the model registry's events and the ledger writer report here; docs/OBSERVABILITY.md lists every
// metric and what moves it.
//
// Label values are bounded by the config, never by what a client sends: `model` is a configured
// model's canonical id (or ""), `route` is a route pattern (or "unmatched"), `code` is one of the
// server's own error codes. Key ids are deliberately not labels (unbounded, and per-tenant traffic
// is the ledger's job: /admin/usage).
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { ModelEntry, ModelState, RegistryEvents } from '../registry/registry.ts';
import type { RouterSnapshot, RoutingMetrics } from '../routing/router.ts';

/** Request latencies: 5 ms (a cached /v1/models) up to 10 min (a long generation, a big image). */
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];
/** Time to first token: prefill of a short prompt (ms) to a long queue (tens of seconds). */
const TTFT_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60];
const RATE_BUCKETS = [1, 2, 5, 10, 20, 35, 50, 75, 100, 150, 250, 500, 1000, 2500];
const QUEUE_WAIT_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const BATCH_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256];
const LOAD_BUCKETS = [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];
const LEDGER_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
const STATES: readonly ModelState[] = ['unloaded', 'loading', 'ready', 'failed'];

/**
 * prom-client's process metrics (CPU, memory, event-loop lag, GC) describe the process, not a server,
 * and each collection starts monitors that are never stopped: one registry for the process, created on
 * first use and appended to every server's exposition.
 */
let processRegistry: Registry | undefined;
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

/** What the HTTP layer knows once a response is over (or its client left). */
export interface HttpObservation {
  route: string;
  method: string;
  status: number;
  model: string;
  seconds: number;
  /** The error code the answer carried (`error.code`), when it was an error. */
  code?: string;
}

/** One label set of the HTTP counters (route, method, status, model, code): requests, and its duration row. */
export interface HttpTally {
  requests: number;
  requestLabels: Record<'route' | 'method' | 'status' | 'model', string>;
  errorLabels?: Record<'route' | 'status' | 'code' | 'model', string>;
  duration: DurationTally;
}

/** One label set of the HTTP duration histogram. */
type DurationTally = HistogramTally<'route' | 'model' | 'status_class'>;

export type LedgerWriteOutcome = 'ok' | 'retry' | 'failed';

/** A histogram's values for one label set, counted per observation and handed to prom-client at scrape time (tallyCollect). */
interface HistogramTally<L extends string = string> {
  labels: Record<L, string>;
  /** Observations per bucket (not cumulative), as prom-client keeps them; above the last bound only `count` moves. */
  buckets: Float64Array;
  sum: number;
  count: number;
}

/** prom-client's observe() on a tally: the same refusal of a value that is not finite, the same bucket (the first bound at or above it). */
function tallyObserve(row: HistogramTally, bounds: readonly number[], value: number): void {
  if (!Number.isFinite(value)) throw new TypeError(`Value is not a valid number: ${value}`);
  let bucket = 0;
  while (bucket < bounds.length && value > bounds[bucket]!) bucket++;
  if (bucket < bounds.length) row.buckets[bucket]!++;
  row.sum += value;
  row.count++;
}

/**
 * A histogram's collect(): the tallies become prom-client's own per-label-set values (its `hashMap`: the
 * labels, the count in each bucket, sum and count, exactly what its observe() keeps), in the order the
 * label sets first came, as observe() would have inserted them.
 */
function tallyCollect(tally: Map<string, HistogramTally>, bounds: readonly number[]) {
  return function collect(this: Histogram<string>) {
    const values: Record<string, unknown> = {};
    for (const [key, row] of tally) {
      const bucketValues: Record<number, number> = {};
      for (let i = 0; i < bounds.length; i++) bucketValues[bounds[i]!] = row.buckets[i]!;
      values[key] = { labels: row.labels, bucketValues, sum: row.sum, count: row.count };
    }
    (this as unknown as { hashMap: Record<string, unknown> }).hashMap = values;
  };
}

/** One endpoint and model's inference requests: admitted not yet settled, and the input tokens of those settled. */
interface InferenceTally {
  labels: Record<'endpoint' | 'model', string>;
  inFlight: number;
  promptTokens: number;
  cachedPromptTokens: number;
}

/** One model's output over every endpoint. */
interface ModelTally {
  labels: Record<'model', string>;
  generatedTokens: number;
  reasoningTokens: number;
  images: number;
  documents: number;
}

/** A count as settled() takes it: only a positive one counts (zero, negative or NaN leave the counter as it is). */
const counted = (value: number | undefined): number => (value !== undefined && value > 0 ? value : 0);

/** A counter's collect(): hands tallied values to it at scrape time; a label set never counted (0) has no series, as with inc(). */
function countedFrom<R extends { labels: Record<string, string> }>(rows: () => Iterable<R>, value: (row: R) => number) {
  return function collect(this: Counter<string>) {
    this.reset();
    for (const row of rows()) {
      const n = value(row);
      if (n > 0) this.inc(row.labels, n);
    }
  };
}

/** One settled inference request (the same report the ledger gets). */
export interface InferenceObservation {
  model: string;
  endpoint: string;
  outcome: 'ok' | 'error' | 'cancelled';
  promptTokens: number;
  completionTokens: number;
  reasoningTokens: number;
  /** The part of promptTokens served from a prompt cache (llama-cpp chat); absent: none. */
  cachedPromptTokens?: number;
  images: number;
  documents: number;
}

/** A micro-batch as it starts: its size and how long each entry waited in the queue. */
export interface BatchObservation {
  entries: number;
  tokens: number;
  waitsMs: number[];
}

/** A gauge's view of one queue, read at scrape time. */
export interface QueueView {
  model: string;
  queued(): number;
}

export class InferaMetrics implements RoutingMetrics {
  readonly registry = new Registry();
  private readonly edgeCuts: Counter<'reason'>;
  private readonly ttft: Histogram<'model'>;
  /**
   * Tokens per second and ledger writes (one each per chat request), tallied as the HTTP durations are:
   * prom-client's observe() validated and hashed its label object and looked its values up on every call.
   */
  private readonly rateTally = new Map<string, HistogramTally>();
  private readonly ledgerTally = new Map<string, HistogramTally & { rows: number }>();
  private readonly queueWait: Histogram<'model'>;
  private readonly batchSize: Histogram<'model'>;
  private readonly batchTokens: Histogram<'model'>;
  private readonly loadDuration: Histogram<'model' | 'outcome'>;
  /** Live batcher queues, by model; weak so a reloaded model's old batcher can go. */
  private readonly queues = new Set<WeakRef<QueueView>>();
  private readonly loadStarted = new Map<string, number>();
  private models: () => readonly ModelEntry[] = () => [];
  private routing: () => readonly RouterSnapshot[] = () => [];
  /**
   * Attempts per deployment (model and deployment name), counted per attempt and handed to prom-client
   * at scrape time as httpTally is: its inc() validates and hashes the label object on every call
   * (~0.7 % of a proxied request's CPU). Bounded by the configured deployments.
   */
  private readonly deploymentTally = new Map<string, { count: number; labels: { model: string; deployment: string } }>();
  private readonly deploymentFailures: Counter<'model' | 'deployment'>;
  private readonly deploymentEjections: Counter<'model' | 'deployment'>;

  private readonly withProcess: boolean;
  /**
   * HTTP requests by label set (route, method, status, model, code), counted per request and read by
   * the two HTTP counters at scrape time. Bounded as the labels are (see the header).
   */
  private readonly httpTally = new Map<string, HttpTally>();
  /**
   * infera_http_request_duration_seconds, tallied per label set (route, model, status class) and handed
   * to prom-client at scrape time like the counters: its observe() validates and hashes the label object
   * and searches the bucket on every call (~1 µs per request, the most of what the HTTP metrics cost).
   * Rows are shared by the httpTally rows of one label set; bounded as they are.
   */
  private readonly durationTally = new Map<string, DurationTally>();
  /**
   * Admitted and settled inference requests and their tokens, tallied per request and handed to the
   * counters and the in-flight gauge at scrape time as httpTally is: six prom-client inc()/dec() calls
   * per request each validated and hashed a label object. Keyed by endpoint and model (outcomes by
   * endpoint, model and outcome, in the order they first came, as inc() would have inserted them);
   * bounded by the configured models.
   */
  private readonly inferenceTally = new Map<string, InferenceTally>();
  private readonly outcomeTally = new Map<string, { count: number; labels: Record<'endpoint' | 'model' | 'outcome', string> }>();
  private readonly modelTally = new Map<string, ModelTally>();

  constructor(options: { processMetrics?: boolean } = {}) {
    this.withProcess = options.processMetrics ?? true;
    const registers = [this.registry];
    const httpTally = this.httpTally;
    // Only registered: their collect() hands the tally to prom-client at scrape time.
    new Counter({
      name: 'infera_http_requests_total',
      help: 'HTTP requests answered, by route pattern, method, status and model (499: the client left first).',
      labelNames: ['route', 'method', 'status', 'model'],
      registers,
      // Counted in httpTally per request; handed over here, at scrape time.
      collect() {
        this.reset();
        for (const row of httpTally.values()) this.inc(row.requestLabels, row.requests);
      },
    });
    new Counter({
      name: 'infera_http_errors_total',
      help: 'HTTP answers with an error status (4xx, 5xx), by route, status, error code and model.',
      labelNames: ['route', 'status', 'code', 'model'],
      registers,
      collect() {
        this.reset();
        for (const row of httpTally.values()) if (row.errorLabels) this.inc(row.errorLabels, row.requests);
      },
    });
    const durationTally = this.durationTally;
    new Histogram({
      name: 'infera_http_request_duration_seconds',
      help: 'From the request arriving to the last byte of its answer (streams included).',
      labelNames: ['route', 'model', 'status_class'],
      buckets: LATENCY_BUCKETS,
      registers,
      // metrics.test.ts compares the exposition with a Histogram fed the same observations.
      collect: tallyCollect(durationTally, LATENCY_BUCKETS),
    });
    this.edgeCuts = new Counter({
      name: 'infera_http_connections_cut_total',
      help: 'Connections the HTTP edge cut before a request reached a route (timeouts, connection caps, malformed HTTP).',
      labelNames: ['reason'],
      registers,
    });
    // Counted in inferenceTally, outcomeTally and modelTally per request; handed over at scrape time.
    const inferenceRows = this.inferenceTally.values.bind(this.inferenceTally);
    const modelRows = this.modelTally.values.bind(this.modelTally);
    const outcomeRows = this.outcomeTally;
    new Counter({
      name: 'infera_inference_requests_total',
      help: 'Admitted inference requests, by how they ended (a stream that failed after its first token is an error here, though its HTTP status was 200).',
      labelNames: ['endpoint', 'model', 'outcome'],
      registers,
      collect: countedFrom(() => outcomeRows.values(), (row) => row.count),
    });
    new Gauge({
      name: 'infera_inference_in_flight',
      help: 'Admitted inference requests not yet settled: waiting for the model to load, queued in the engine or running.',
      labelNames: ['endpoint', 'model'],
      registers,
      collect() {
        this.reset();
        for (const row of inferenceRows()) this.set(row.labels, row.inFlight);
      },
    });
    new Counter({
      name: 'infera_prompt_tokens_total',
      help: 'Input tokens of settled requests (chat prompts, embedding inputs, rerank query and documents).',
      labelNames: ['endpoint', 'model'],
      registers,
      collect: countedFrom(inferenceRows, (row) => row.promptTokens),
    });
    new Counter({
      name: 'infera_generated_tokens_total',
      help: 'Completion tokens generated (reasoning tokens included), also of requests cut off by the client.',
      labelNames: ['model'],
      registers,
      collect: countedFrom(modelRows, (row) => row.generatedTokens),
    });
    new Counter({
      name: 'infera_cached_prompt_tokens_total',
      help: 'The part of infera_prompt_tokens_total found in the prompt cache (llama-cpp chat: KV kept from earlier requests, not evaluated again).',
      labelNames: ['endpoint', 'model'],
      registers,
      collect: countedFrom(inferenceRows, (row) => row.cachedPromptTokens),
    });
    new Counter({
      name: 'infera_reasoning_tokens_total',
      help: 'The part of infera_generated_tokens_total spent on chains of thought.',
      labelNames: ['model'],
      registers,
      collect: countedFrom(modelRows, (row) => row.reasoningTokens),
    });
    new Counter({
      name: 'infera_generated_images_total',
      help: 'Images generated.',
      labelNames: ['model'],
      registers,
      collect: countedFrom(modelRows, (row) => row.images),
    });
    new Counter({
      name: 'infera_reranked_documents_total',
      help: 'Documents scored by rerank requests.',
      labelNames: ['model'],
      registers,
      collect: countedFrom(modelRows, (row) => row.documents),
    });
    this.ttft = new Histogram({
      name: 'infera_time_to_first_token_seconds',
      help: 'Streamed chat completions: from the request being handled (body received) to the first generated token (queue, load and prefill included).',
      labelNames: ['model'],
      buckets: TTFT_BUCKETS,
      registers,
    });
    new Histogram({
      name: 'infera_generation_tokens_per_second',
      help: 'Completion tokens per second of each chat request: streams from the first token to the last; non-streamed from the model call to its answer (prefill included).',
      labelNames: ['model', 'stream'],
      buckets: RATE_BUCKETS,
      registers,
      collect: tallyCollect(this.rateTally, RATE_BUCKETS),
    });
    const queues = this.queues;
    new Gauge({
      name: 'infera_queue_depth',
      help: 'Requests waiting in a micro-batcher queue (embeddings, rerank) for their batch.',
      labelNames: ['model'],
      registers,
      collect() {
        this.reset();
        const depth = new Map<string, number>();
        for (const ref of queues) {
          const queue = ref.deref();
          if (!queue) queues.delete(ref);
          else depth.set(queue.model, (depth.get(queue.model) ?? 0) + queue.queued());
        }
        for (const [model, value] of depth) this.set({ model }, value);
      },
    });
    this.queueWait = new Histogram({
      name: 'infera_queue_wait_seconds',
      help: 'Micro-batcher queues (embeddings, rerank): how long each request waited before its batch started.',
      labelNames: ['model'],
      buckets: QUEUE_WAIT_BUCKETS,
      registers,
    });
    this.batchSize = new Histogram({
      name: 'infera_batch_size',
      help: 'Requests per micro-batch (embeddings, rerank).',
      labelNames: ['model'],
      buckets: BATCH_SIZE_BUCKETS,
      registers,
    });
    this.batchTokens = new Histogram({
      name: 'infera_batch_tokens',
      help: 'Tokens per micro-batch (embeddings, rerank).',
      labelNames: ['model'],
      buckets: [16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768],
      registers,
    });
    const models = () => this.models();
    new Gauge({
      name: 'infera_model_state',
      help: 'Each configured model\'s load state: 1 for its current state, 0 for the others.',
      labelNames: ['model', 'state'],
      registers,
      collect() {
        for (const entry of models()) for (const state of STATES) this.set({ model: entry.config.id, state }, entry.state === state ? 1 : 0);
      },
    });
    new Gauge({
      name: 'infera_model_memory_bytes',
      help: 'Bytes each model takes as the memory budget counts them (lifecycle.memoryBudget), while it is loading, loaded or unloading; 0 otherwise.',
      labelNames: ['model'],
      registers,
      collect() {
        for (const entry of models()) {
          const resident = entry.state === 'ready' || entry.state === 'loading' || entry.unloading === true;
          this.set({ model: entry.config.id }, resident ? (entry.memory ?? 0) : 0);
        }
      },
    });
    new Gauge({
      name: 'infera_model_load_progress',
      help: 'Progress of a model load, 0..1 (1 once loaded).',
      labelNames: ['model'],
      registers,
      collect() {
        for (const entry of models()) this.set({ model: entry.config.id }, entry.progress);
      },
    });
    this.loadDuration = new Histogram({
      name: 'infera_model_load_seconds',
      help: 'Model loads, from start to ready or failed.',
      labelNames: ['model', 'outcome'],
      buckets: LOAD_BUCKETS,
      registers,
    });
    new Histogram({
      name: 'infera_ledger_write_seconds',
      help: 'Usage ledger write attempts (group commits: one transaction holds every row settled meanwhile), by outcome: ok, retry (failed, tried again), failed (given up).',
      labelNames: ['outcome'],
      buckets: LEDGER_BUCKETS,
      registers,
      collect: tallyCollect(this.ledgerTally, LEDGER_BUCKETS),
    });
    // Deployments of routed models (src/routing/); `deployment` is a configured deployment name.
    const deploymentTally = this.deploymentTally;
    new Counter({
      name: 'infera_deployment_requests_total',
      help: 'Attempts sent to a deployment of a routed model (a request retried on another deployment counts on each).',
      labelNames: ['model', 'deployment'],
      registers,
      collect() {
        this.reset();
        for (const row of deploymentTally.values()) this.inc(row.labels, row.count);
      },
    });
    this.deploymentFailures = new Counter({
      name: 'infera_deployment_failures_total',
      help: 'Attempts that failed on a deployment: connection errors, timeouts, 5xx (what the circuit breaker counts).',
      labelNames: ['model', 'deployment'],
      registers,
    });
    this.deploymentEjections = new Counter({
      name: 'infera_deployment_ejections_total',
      help: 'Times a deployment was ejected by its circuit breaker.',
      labelNames: ['model', 'deployment'],
      registers,
    });
    const routing = () => this.routing();
    new Gauge({
      name: 'infera_deployment_in_flight',
      help: 'Requests in flight on a deployment of a routed model.',
      labelNames: ['model', 'deployment'],
      registers,
      collect() {
        this.reset();
        for (const model of routing()) for (const deployment of model.deployments) this.set({ model: model.id, deployment: deployment.name }, deployment.inFlight);
      },
    });
    new Gauge({
      name: 'infera_deployment_healthy',
      help: 'A deployment of a routed model takes requests: 1 when healthy and not ejected, else 0.',
      labelNames: ['model', 'deployment'],
      registers,
      collect() {
        this.reset();
        for (const model of routing())
          for (const deployment of model.deployments)
            this.set({ model: model.id, deployment: deployment.name }, deployment.healthy && deployment.breaker !== 'open' ? 1 : 0);
      },
    });
    const ledgerRows = this.ledgerTally.values.bind(this.ledgerTally);
    new Counter({
      name: 'infera_ledger_rows_total',
      help: 'Usage ledger rows written (ok) or given up after retries (failed).',
      labelNames: ['outcome'],
      registers,
      collect: countedFrom(ledgerRows, (row) => row.rows),
    });
  }

  /** The registry whose entries the model gauges read at scrape time. */
  watchModels(entries: () => readonly ModelEntry[]): void {
    this.models = entries;
  }

  /** The routers whose deployments the deployment gauges read at scrape time. */
  watchRouting(snapshots: () => readonly RouterSnapshot[]): void {
    this.routing = snapshots;
  }

  deploymentRequest(model: string, deployment: string): void {
    const key = `${model}\n${deployment}`;
    let row = this.deploymentTally.get(key);
    if (!row) {
      row = { count: 0, labels: { model, deployment } };
      this.deploymentTally.set(key, row);
    }
    row.count++;
  }

  deploymentFailure(model: string, deployment: string): void {
    this.deploymentFailures.inc({ model, deployment });
  }

  deploymentEjection(model: string, deployment: string): void {
    this.deploymentEjections.inc({ model, deployment });
  }

  /** Registry events: load durations (the states themselves are read at scrape time). */
  readonly registryEvents: RegistryEvents = {
    onStateChange: (entry) => {
      const id = entry.config.id;
      if (entry.state === 'loading') {
        this.loadStarted.set(id, performance.now());
        return;
      }
      const started = this.loadStarted.get(id);
      if (started === undefined || (entry.state !== 'ready' && entry.state !== 'failed')) return;
      this.loadStarted.delete(id);
      this.loadDuration.observe({ model: id, outcome: entry.state === 'ready' ? 'ok' : 'failed' }, (performance.now() - started) / 1000);
    },
  };

  http(observation: HttpObservation): void {
    this.countHttp(this.httpRow(observation.route, observation.method, observation.status, observation.model, observation.code ?? ''), observation.seconds);
  }

  /**
   * The tally row of one label set. One Map lookup per request instead of two prom-client inc() calls,
   * each of which validates and hashes its label object (prom-client 15's .labels() children too, on
   * every inc()). In isolation the three HTTP metrics cost 1.6 µs of CPU per request (2.2 for an error
   * answer), now 1.3 (1.4): the histogram's observe() is most of what is left (its exposition is
   * prom-client's to keep). A caller answering the same few label sets over and over (quick.ts) keeps
   * their rows and counts through countHttp, without building and hashing the key each time.
   */
  httpRow(route: string, method: string, status: number, model: string, code: string): HttpTally {
    const key = `${route}\n${method}\n${status}\n${model}\n${code}`;
    let row = this.httpTally.get(key);
    if (!row) {
      row = {
        requests: 0,
        requestLabels: { route, method, status: String(status), model },
        errorLabels: status >= 400 ? { route, status: String(status), code, model } : undefined,
        duration: this.durationRow(route, model, `${Math.floor(status / 100)}xx`),
      };
      this.httpTally.set(key, row);
    }
    return row;
  }

  /** One request of a label set (httpRow) that took `seconds`. */
  countHttp(row: HttpTally, seconds: number): void {
    // What prom-client's observe() refuses, refused the same way.
    if (!Number.isFinite(seconds)) throw new TypeError(`Value is not a valid number: ${seconds}`);
    row.requests++;
    tallyObserve(row.duration, LATENCY_BUCKETS, seconds);
  }

  private durationRow(route: string, model: string, statusClass: string): DurationTally {
    const key = `${route}\n${model}\n${statusClass}`;
    let row = this.durationTally.get(key);
    if (!row) {
      row = { labels: { route, model, status_class: statusClass }, buckets: new Float64Array(LATENCY_BUCKETS.length), sum: 0, count: 0 };
      this.durationTally.set(key, row);
    }
    return row;
  }

  edgeCut(reason: string): void {
    this.edgeCuts.inc({ reason });
  }

  private inference(endpoint: string, model: string): InferenceTally {
    const key = `${endpoint}\n${model}`;
    let row = this.inferenceTally.get(key);
    if (!row) {
      row = { labels: { endpoint, model }, inFlight: 0, promptTokens: 0, cachedPromptTokens: 0 };
      this.inferenceTally.set(key, row);
    }
    return row;
  }

  admitted(endpoint: string, model: string): void {
    this.inference(endpoint, model).inFlight++;
  }

  settled(report: InferenceObservation): void {
    const { endpoint, model, outcome } = report;
    const row = this.inference(endpoint, model);
    row.inFlight--;
    const prompt = counted(report.promptTokens);
    const cached = counted(report.cachedPromptTokens);
    const completion = counted(report.completionTokens);
    const reasoning = counted(report.reasoningTokens);
    const images = counted(report.images);
    const documents = counted(report.documents);
    const outcomeKey = `${endpoint}\n${model}\n${outcome}`;
    const byOutcome = this.outcomeTally.get(outcomeKey);
    if (byOutcome) byOutcome.count++;
    else this.outcomeTally.set(outcomeKey, { count: 1, labels: { endpoint, model, outcome } });
    row.promptTokens += prompt;
    row.cachedPromptTokens += cached;
    if (completion + reasoning + images + documents === 0) return;
    let out = this.modelTally.get(model);
    if (!out) {
      out = { labels: { model }, generatedTokens: 0, reasoningTokens: 0, images: 0, documents: 0 };
      this.modelTally.set(model, out);
    }
    out.generatedTokens += completion;
    out.reasoningTokens += reasoning;
    out.images += images;
    out.documents += documents;
  }

  firstToken(model: string, seconds: number): void {
    this.ttft.observe({ model }, seconds);
  }

  /** A finished chat generation: `tokens` completion tokens over `seconds` of generating. */
  generationRate(model: string, stream: boolean, tokens: number, seconds: number): void {
    if (!(tokens > 0 && seconds > 0)) return;
    const key = `${model}\n${stream}`;
    let row = this.rateTally.get(key);
    if (!row) {
      row = { labels: { model, stream: String(stream) }, buckets: new Float64Array(RATE_BUCKETS.length), sum: 0, count: 0 };
      this.rateTally.set(key, row);
    }
    tallyObserve(row, RATE_BUCKETS, tokens / seconds);
  }

  /** A micro-batcher to show in infera_queue_depth, and the observer its batches report to. */
  batcher(model: string, queue: () => number): { view: QueueView; onBatch(batch: BatchObservation): void } {
    const view: QueueView = { model, queued: queue };
    this.queues.add(new WeakRef(view));
    return {
      view,
      onBatch: (batch) => {
        this.batchSize.observe({ model }, batch.entries);
        this.batchTokens.observe({ model }, batch.tokens);
        for (const waited of batch.waitsMs) this.queueWait.observe({ model }, waited / 1000);
      },
    };
  }

  /** One ledger write attempt: its duration and rows; `retry` failed and will be tried again, `failed` was given up. */
  readonly ledgerWritten = (seconds: number, rows: number, outcome: LedgerWriteOutcome): void => {
    let row = this.ledgerTally.get(outcome);
    if (!row) {
      row = { labels: { outcome }, buckets: new Float64Array(LEDGER_BUCKETS.length), sum: 0, count: 0, rows: 0 };
      this.ledgerTally.set(outcome, row);
    }
    tallyObserve(row, LEDGER_BUCKETS, seconds);
    if (outcome !== 'retry') row.rows += rows;
  };

  /** Per model: admitted requests not yet settled, and requests waiting in its micro-batcher queues (the admin console). */
  async load(): Promise<Map<string, { inFlight: number; queued: number }>> {
    const byModel = new Map<string, { inFlight: number; queued: number }>();
    const of = (model: string) => {
      const entry = byModel.get(model) ?? { inFlight: 0, queued: 0 };
      byModel.set(model, entry);
      return entry;
    };
    for (const row of this.inferenceTally.values()) of(row.labels.model).inFlight += row.inFlight;
    for (const ref of this.queues) {
      const queue = ref.deref();
      if (queue) of(queue.model).queued += queue.queued();
    }
    return byModel;
  }

  /** The Prometheus text exposition. */
  async text(): Promise<{ contentType: string; body: string }> {
    const own = await this.registry.metrics();
    return { contentType: this.registry.contentType, body: this.withProcess ? `${own}\n${await processMetrics().metrics()}` : own };
  }
}
