// A seeded generator of bad requests across every route, and a runner that checks the answers: no
// crash (every request gets an HTTP answer), no hang (each within a deadline), no answer >= 500, and
// every 4xx in OpenAI's error shape ({error: {message, type, param, code}}). Used in reduced form by
// test/fuzz.test.ts and in full form by scripts/fuzz.ts (the figures in docs/RELIABILITY.md).
import { mulberry32 } from '../../src/tiny-models/random.ts';

export interface FuzzRequest {
  /** What the generator meant to break (for the report). */
  kind: string;
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: string;
}

export interface FuzzOptions {
  /** Include /admin routes called with the admin key (the server must be configured with it). */
  adminKey?: string;
}

const CHAT = 'Qwen/QwQ-32B';
const valid: Record<string, Record<string, unknown>> = {
  '/v1/chat/completions': { model: CHAT, messages: [{ role: 'user', content: 'hello' }], max_tokens: 8 },
  '/v1/completions': { model: CHAT, prompt: 'hello', max_tokens: 8 },
  '/v1/embeddings': { model: 'BAAI/bge-large-zh-v1.5', input: ['apple pie', 'banana'] },
  '/v1/rerank': { model: 'BAAI/bge-reranker-v2-m3', query: 'Apple', documents: ['apple', 'banana'] },
  '/v1/images/generations': { model: 'Kwai-Kolors/Kolors', prompt: 'a lighthouse', image_size: '64x64', num_inference_steps: 1 },
};
const postPaths = [...Object.keys(valid), '/chat/completions', '/completions', '/embeddings', '/rerank', '/v2/rerank', '/v1/image/generations'];
const getPaths = ['/v1/models', '/models', '/v1/user/info', '/health', '/v1/models/Qwen/QwQ-32B', '/v1/images/files/nope.png'];

const hugeNumbers = [1e308, -1e308, 2 ** 53 + 2, -(2 ** 63), 1e-320, 5e-324, Number.MAX_SAFE_INTEGER, 4294967296, -1, 0, 0.5];
const junkValues: unknown[] = [null, true, false, '', 'x', '🙂'.repeat(3), [], [null], {}, { a: { b: [] } }, '9'.repeat(400), '\u0000', '../../etc/passwd', ...hugeNumbers];
const contentTypes = ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/xml', 'application/json; charset=utf-16', 'image/png', ''];

function nest(depth: number, leaf: string, open: string, close: string): string {
  return open.repeat(depth) + leaf + close.repeat(depth);
}

/** A deeply nested JSON Schema (objects in properties), as text: building it as a value would be deep too. */
function deepSchema(depth: number): string {
  let schema = '{"type":"string"}';
  for (let i = 0; i < depth; i++) schema = `{"type":"object","properties":{"a":${schema}}}`;
  return schema;
}

export function* fuzzRequests(seed: number, count: number, options: FuzzOptions = {}): Generator<FuzzRequest> {
  const random = mulberry32(seed);
  const int = (n: number) => Math.floor(random() * n);
  const pick = <T>(items: readonly T[]): T => items[int(items.length)]!;
  const json = { 'content-type': 'application/json' };
  const post = (kind: string, path: string, body: string, headers: Record<string, string> = json): FuzzRequest => ({ kind, method: 'POST', path, headers, body });
  const mutate = (value: unknown, depth: number): unknown => {
    if (depth > 0 && random() < 0.3) return pick(junkValues);
    if (Array.isArray(value)) return value.map((item) => mutate(item, depth + 1));
    if (value && typeof value === 'object')
      return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, key === 'model' && random() < 0.8 ? item : mutate(item, depth + 1)]));
    return value;
  };
  const chatWith = (fields: string) => `{"model":"${CHAT}","messages":[{"role":"user","content":"hi"}],"max_tokens":4,${fields}}`;
  const schemaBomb = (): string => {
    switch (int(9)) {
      case 0:
        return JSON.stringify({ enum: Array.from({ length: 1000 + int(100_000) }, (_, i) => `v${i}`) });
      case 1:
        return deepSchema(40 + int(5000));
      case 2:
        return JSON.stringify({ type: 'object', properties: { a: { $ref: '#/$defs/A' } }, $defs: { A: { $ref: '#/$defs/B' }, B: { $ref: pick(['#/$defs/A', '#', '#/properties/a']) } } });
      case 3:
        return JSON.stringify({ type: 'object', properties: { a: { $ref: pick(['#/$defs/Nope', 'http://example.com/x', '#/%FF', '#/properties/a/~2', 'x']) } } });
      case 4:
        return JSON.stringify({ type: 'object', properties: Object.fromEntries(Array.from({ length: 100 + int(20_000) }, (_, i) => [`p${i}`, { type: 'string' }])) });
      case 5:
        return JSON.stringify({ anyOf: Array.from({ length: 10 + int(10_000) }, (_, i) => ({ const: i })) });
      case 6:
        return nest(100 + int(20_000), '{}', '{"items":', '}');
      case 7:
        return JSON.stringify({ type: 'string', description: 'x'.repeat(int(300_000)) });
      default:
        return JSON.stringify(mutate({ type: 'object', properties: { a: { type: 'integer', minimum: 1 }, b: { type: 'array', items: { type: 'string' } } }, required: ['a'] }, 0));
    }
  };

  const makers: (() => FuzzRequest)[] = [
    // Junk bodies and junk JSON.
    () => post('junk body', pick(postPaths), pick(['', '{', '[', 'null', '[]', '"x"', '123', 'true', '{"a":', '\u0000\u0001', '{}{}', '{"model":}', 'NaN', '{"__proto__":{"x":1}}', '{"constructor":{"prototype":{}}}'])),
    () => post('random bytes', pick(postPaths), Array.from({ length: 1 + int(2000) }, () => String.fromCharCode(int(256))).join('')),
    // Wrong content types, with valid and junk bodies.
    () => {
      const path = pick(Object.keys(valid));
      const type = pick(contentTypes);
      return post('content type', path, random() < 0.5 ? JSON.stringify(valid[path]) : 'a=b&c=d', type ? { 'content-type': type } : {});
    },
    // Wrong types and junk values in every field, at any depth.
    () => {
      const path = pick(Object.keys(valid));
      return post('wrong types', path, JSON.stringify(mutate(valid[path], 0)));
    },
    () => {
      const path = pick(Object.keys(valid));
      const body = valid[path]!;
      return post('field junk', path, JSON.stringify({ ...body, [pick(Object.keys(body))]: pick(junkValues) }));
    },
    // Huge numbers in numeric fields, written as JSON text (1e999 is Infinity once parsed).
    () => {
      const field = pick(['max_tokens', 'n', 'temperature', 'top_p', 'top_k', 'seed', 'thinking_budget', 'top_logprobs', 'frequency_penalty', 'max_completion_tokens']);
      return post('huge number', '/v1/chat/completions', chatWith(`"${field}":${pick(['1e999', '-1e999', '1e308', '123456789012345678901234567890', '-0', '1.0000000000000002', '4294967297'])}`));
    },
    () => {
      const [path, field] = pick([
        ['/v1/completions', 'max_tokens'],
        ['/v1/completions', 'logprobs'],
        ['/v1/completions', 'best_of'],
        ['/v1/rerank', 'top_n'],
        ['/v1/rerank', 'max_chunks_per_doc'],
        ['/v1/rerank', 'overlap_tokens'],
        ['/v1/rerank', 'max_tokens_per_doc'],
        ['/v1/embeddings', 'dimensions'],
        ['/v1/images/generations', 'num_inference_steps'],
        ['/v1/images/generations', 'batch_size'],
        ['/v1/images/generations', 'seed'],
        ['/v1/images/generations', 'guidance_scale'],
      ] as const);
      const body = JSON.stringify(valid[path]).slice(0, -1);
      return post('huge number', path, `${body},"${field}":${pick(['1e999', '1e308', '-1e308', '99999999999999999999', '1e-320', '"1e999"'])}}`);
    },
    // Deep nesting in every kind of field.
    () => {
      const depth = 500 + int(30_000);
      const [path, field] = pick([
        ['/v1/chat/completions', 'messages'],
        ['/v1/chat/completions', 'tools'],
        ['/v1/chat/completions', 'stop'],
        ['/v1/chat/completions', 'user'],
        ['/v1/completions', 'prompt'],
        ['/v1/embeddings', 'input'],
        ['/v1/rerank', 'documents'],
        ['/v1/images/generations', 'prompt'],
      ] as const);
      const body = JSON.stringify(valid[path]).slice(0, -1);
      return post('deep nesting', path, `${body},"${field}":${random() < 0.5 ? nest(depth, '1', '[', ']') : nest(depth, '1', '{"a":', '}')}}`);
    },
    () => post('deep nesting', '/v1/chat/completions', chatWith(`"messages2":0,"tool_choice":${nest(1000 + int(20_000), '"auto"', '{"function":', '}')}`)),
    // Schema bombs in response_format and in tool parameters.
    () => post('schema bomb', '/v1/chat/completions', chatWith(`"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":${schemaBomb()}}}`)),
    () => post('schema bomb', '/v1/chat/completions', chatWith(`"tools":[{"type":"function","function":{"name":"f","strict":${random() < 0.5},"parameters":${schemaBomb()}}}]`)),
    () => post('many tools', '/v1/chat/completions', chatWith(`"tools":${JSON.stringify(Array.from({ length: 100 + int(2000) }, (_, i) => ({ type: 'function', function: { name: `f${i}` } })))}`)),
    // Long texts and many items.
    () => {
      const text = pick(['a', 'word ', '🙂', '(', '\n', 'ab,']).repeat(10_000 + int(600_000));
      const [path, body] = pick([
        ['/v1/chat/completions', { model: CHAT, messages: [{ role: 'user', content: text }] }],
        ['/v1/completions', { model: CHAT, prompt: text, suffix: random() < 0.5 ? text : undefined }],
        ['/v1/embeddings', { model: valid['/v1/embeddings']!.model, input: text }],
        ['/v1/embeddings', { model: valid['/v1/embeddings']!.model, input: Array(1 + int(4000)).fill(text.slice(0, 200)) }],
        ['/v1/rerank', { model: valid['/v1/rerank']!.model, query: text.slice(0, 3000), documents: Array(1 + int(1500)).fill(text.slice(0, 400)) }],
        ['/v1/images/generations', { ...valid['/v1/images/generations'], prompt: text }],
        ['/v1/images/generations', { ...valid['/v1/images/generations'], negative_prompt: text }],
      ] as const);
      return post('long input', path, JSON.stringify(body));
    },
    () => post('token ids', '/v1/completions', JSON.stringify({ model: CHAT, max_tokens: 1, prompt: Array.from({ length: 1 + int(5000) }, () => pick([-1, 0, 2 ** 31, 1e15, 1.5, 250_000, 7])) })),
    () => post('token ids', '/v1/embeddings', JSON.stringify({ model: valid['/v1/embeddings']!.model, input: Array.from({ length: 1 + int(3000) }, () => pick([-1, 0, 2 ** 31, 1e15, 1.5, 250_000])) })),
    () => post('image work', '/v1/images/generations', JSON.stringify({ ...valid['/v1/images/generations'], image_size: pick(['1024x1024', '99999x99999', '0x0', '64x64', '1x1', '8x8192']), batch_size: 1 + int(6), num_inference_steps: pick([1, 50, 100, 101, 1e6]) })),
    () => post('image input', '/v1/images/generations', JSON.stringify({ ...valid['/v1/images/generations'], image: pick(['data:image/png;base64,AAAA', 'data:,', 'http://127.0.0.1:1/x.png', 'file:///etc/passwd', 'x'.repeat(5000), `data:image/png;base64,${'A'.repeat(20_000)}`]) })),
    // GET routes, junk ids and query strings, wrong methods, unknown paths.
    () => ({ kind: 'get', method: 'GET', path: `${pick(getPaths)}${random() < 0.5 ? `?${pick(['type=x', 'sub_type=%00', 'type=chat&sub_type=chat', 'a[b]=c', 'x='.padEnd(2000, 'y')])}` : ''}`, headers: {} }),
    () => ({ kind: 'model id', method: 'GET', path: `/v1/models/${pick(['..%2F..%2Fetc', '%00', 'Pro%2F', 'x'.repeat(5000), '%F0%9F%99%82', 'a/b/c/d', '%20', '.'])}`, headers: {} }),
    () => ({ kind: 'wrong method', method: pick(['GET', 'PUT', 'DELETE', 'PATCH']), path: pick(postPaths), headers: {} }),
    () => ({ kind: 'wrong method', method: pick(['POST', 'PUT', 'DELETE']), path: pick(getPaths), headers: json, body: '{}' }),
    () => post('unknown path', pick(['/v1/edits', '/v1/audio/speech', '/v1/../etc/passwd', '/v1/chat/completions/x', '/v3/rerank', '/']), JSON.stringify(valid['/v1/chat/completions'])),
    // Auth headers of every shape (keyless: ignored; keyed: 401).
    () => {
      const path = pick(Object.keys(valid));
      return post('auth header', path, JSON.stringify(valid[path]), { ...json, authorization: pick(['Bearer', 'Bearer ', 'Basic abc', 'Bearer x', `Bearer ${'k'.repeat(10_000)}`, 'bearer sk-wrong-key-123']) });
    },
    // Admin routes without the key, or with it and junk bodies.
    () => {
      const [method, path] = pick([['GET', '/admin/keys'], ['POST', '/admin/keys'], ['DELETE', '/admin/keys/nope'], ['POST', '/admin/keys/nope/revoke'], ['GET', '/admin/accounts'], ['POST', '/admin/accounts'], ['POST', '/admin/accounts/x/topup'], ['GET', '/admin/usage?since=x&limit=-1']] as const);
      return { kind: 'admin unauthenticated', method, path, headers: { ...json, authorization: 'Bearer wrong-admin-key' }, body: method === 'POST' ? '{}' : undefined };
    },
  ];
  if (options.adminKey) {
    const auth = { ...json, authorization: `Bearer ${options.adminKey}` };
    makers.push(() => {
      const [path, body] = pick([
        ['/admin/keys', { name: pick(junkValues), account: pick(junkValues), expires_at: pick([...hugeNumbers, 'x', null]), models: pick([[], [1], 'x', null]) }],
        ['/admin/accounts', { id: pick(junkValues), balance: pick(hugeNumbers) }],
        ['/admin/accounts/nope/topup', { amount: pick([...hugeNumbers, 'x', null]) }],
      ] as const);
      return { kind: 'admin junk', method: 'POST', path, headers: auth, body: JSON.stringify(body) };
    });
  }
  for (let i = 0; i < count; i++) yield makers[int(makers.length)]!();
}

export interface FuzzAnswer {
  request: FuzzRequest;
  status: number;
  ms: number;
  /** Why the answer breaks a rule, if it does. */
  problem?: string;
}

/** Sends one request and checks its answer against the rules. */
export async function sendFuzz(baseUrl: string, request: FuzzRequest, timeoutMs: number): Promise<FuzzAnswer> {
  const started = performance.now();
  let response: Response;
  let text: string;
  try {
    response = await fetch(`${baseUrl}${request.path}`, {
      method: request.method,
      headers: request.headers,
      body: request.body,
      signal: AbortSignal.timeout(timeoutMs),
    });
    text = await response.text();
  } catch (error) {
    const name = (error as Error).name;
    const problem = name === 'TimeoutError' ? `hang: no answer within ${timeoutMs} ms` : `no answer (crash?): ${(error as Error).message} ${(error as { cause?: Error }).cause?.message ?? ''}`;
    return { request, status: 0, ms: performance.now() - started, problem };
  }
  const ms = performance.now() - started;
  const answer: FuzzAnswer = { request, status: response.status, ms };
  if (response.status >= 500) answer.problem = `answered ${response.status}: ${text.slice(0, 300)}`;
  else if (response.status >= 400) {
    let body: { error?: Record<string, unknown> } | undefined;
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
    const error = body?.error;
    if (
      !error ||
      typeof error !== 'object' ||
      typeof error.message !== 'string' ||
      error.message.length === 0 ||
      typeof error.type !== 'string' ||
      !('param' in error) ||
      !('code' in error)
    )
      answer.problem = `${response.status} not in OpenAI's error shape: ${text.slice(0, 300)}`;
  }
  return answer;
}

/** Runs the requests `concurrency` at a time; returns every answer (in completion order). */
export async function runFuzz(baseUrl: string, requests: Iterable<FuzzRequest>, options: { concurrency: number; timeoutMs: number }): Promise<FuzzAnswer[]> {
  const answers: FuzzAnswer[] = [];
  const iterator = requests[Symbol.iterator]();
  const worker = async () => {
    for (let next = iterator.next(); !next.done; next = iterator.next()) answers.push(await sendFuzz(baseUrl, next.value, options.timeoutMs));
  };
  await Promise.all(Array.from({ length: options.concurrency }, worker));
  return answers;
}

/** Answers by status, for reports. */
export function byStatus(answers: readonly FuzzAnswer[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const answer of answers) counts[answer.status] = (counts[answer.status] ?? 0) + 1;
  return counts;
}
