// Wire-body validation shared by every endpoint's protocol file: a zod schema in, either the parsed
// value or a 400 whose `param` names the offending field the way the client wrote it
// (`messages[2].content`, `temperature`) and whose message a person can act on.

import { z } from 'zod';
import { badRequest, type InferaError } from '../../errors/index.ts';

type PathKey = PropertyKey;

/** ['messages', 2, 'content'] → 'messages[2].content' (the form OpenAI puts in `error.param`). */
export function wirePath(path: readonly PathKey[]): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else out += out === '' ? String(key) : `.${String(key)}`;
  }
  return out;
}

const describe = (input: unknown): string => {
  if (input === null) return 'null';
  if (Array.isArray(input)) return 'an array';
  if (typeof input === 'object') return 'an object';
  if (typeof input === 'string') return 'a string';
  if (typeof input === 'number') return Number.isNaN(input) ? 'NaN' : 'a number';
  if (typeof input === 'boolean') return 'a boolean';
  return typeof input;
};

const expectedName = (expected: string): string => {
  const names: Record<string, string> = {
    string: 'a string',
    number: 'a number',
    int: 'an integer',
    boolean: 'a boolean',
    object: 'an object',
    array: 'an array',
    null: 'null',
    record: 'an object',
  };
  return names[expected] ?? expected;
};

const bound = (value: unknown): string => (value instanceof Date ? value.toISOString() : String(value));

/**
 * Per-parse error map: zod's defaults ("Too big: expected number to be <=2") read like compiler
 * output. Schema-level messages (e.g. from `numberBetween`) take precedence over this map.
 */
const readableIssue = (issue: z.core.$ZodRawIssue): string | undefined => {
  const i = issue as z.core.$ZodRawIssue & Record<string, unknown>;
  switch (issue.code) {
    case 'invalid_type':
      if (i.input === undefined) return 'is required';
      if (i.expected === 'int' && typeof i.input === 'number') return 'must be an integer';
      return `must be ${expectedName(String(i.expected))}, not ${describe(i.input)}`;
    case 'too_small': {
      const min = bound(i.minimum);
      if (i.origin === 'string') return min === '1' ? 'must not be empty' : `must be at least ${min} characters`;
      if (i.origin === 'array' || i.origin === 'set') return min === '1' ? 'must not be empty' : `must have at least ${min} items`;
      return i.inclusive ? `must be >= ${min}` : `must be > ${min}`;
    }
    case 'too_big': {
      const max = bound(i.maximum);
      if (i.origin === 'string') return `must be at most ${max} characters`;
      if (i.origin === 'array' || i.origin === 'set') return `must have at most ${max} items`;
      return i.inclusive ? `must be <= ${max}` : `must be < ${max}`;
    }
    case 'invalid_value':
      return `must be one of ${(i.values as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
    case 'invalid_format':
      return `must be a valid ${String(i.format)}`;
    case 'not_multiple_of':
      return `must be a multiple of ${String(i.divisor)}`;
    case 'unrecognized_keys':
      return `has unknown field(s) ${(i.keys as string[]).join(', ')}`;
    case 'invalid_union':
      return i.note === 'No matching discriminator' ? 'has an unsupported value' : UNION_DEFAULT;
    default:
      return undefined;
  }
};

const UNION_DEFAULT = 'has an unsupported shape';

interface Located {
  path: PathKey[];
  message: string;
}

/**
 * A failed union reports every branch's complaint. The branch that got furthest into the value
 * (deepest path) is the one the client meant, e.g. content parts rather than "expected string".
 */
function locate(issue: z.core.$ZodIssue, prefix: PathKey[]): Located {
  const path = [...prefix, ...issue.path];
  if (issue.code === 'invalid_union' && issue.errors.length > 0) {
    const candidates = issue.errors.filter((branch) => branch.length > 0).map((branch) => locate(branch[0]!, path));
    if (candidates.length > 0) {
      const deepest = Math.max(...candidates.map((c) => c.path.length));
      const best = candidates.filter((c) => c.path.length === deepest);
      if (deepest > path.length || best.length === 1) return best[0]!;
      // One branch took the value's type and failed a check of its own (an array of 5 stop strings
      // against "at most 4"): that is the one the client meant. zod 4.1 reported that branch alone;
      // 4.6 reports every branch, the others as type mismatches.
      const typed = issue.errors.filter((branch) => branch[0] !== undefined && branch[0].code !== 'invalid_type');
      if (typed.length === 1) return locate(typed[0]![0]!, path);
      // Every branch failed at the union itself (wrong type altogether): the schema's own message
      // if it has one, else the acceptable types.
      if (issue.errors.every((branch) => branch[0]?.code === 'invalid_type' && branch[0].message === 'is required')) {
        return { path, message: 'is required' };
      }
      if (issue.message !== UNION_DEFAULT) return { path, message: issue.message };
      const expected = issue.errors
        .map((branch) => branch[0])
        .filter((first): first is z.core.$ZodIssueInvalidType => first?.code === 'invalid_type')
        .map((first) => expectedName(first.expected));
      if (expected.length === issue.errors.length) {
        return { path, message: `must be ${[...new Set(expected)].join(' or ')}` };
      }
    }
  }
  return { path, message: issue.message };
}

/** Turn a zod failure into the 400 the client sees: first problem only, with its wire path. */
export function zodErrorToBadRequest(error: { issues: readonly z.core.$ZodIssue[] }): InferaError {
  const first = error.issues[0];
  if (!first) return badRequest('Invalid request body.');
  const { path, message } = locate(first, []);
  const param = wirePath(path);
  return badRequest(param === '' ? message : `${param}: ${message}`, param === '' ? null : param);
}

/** True for a plain JSON object (not null, not an array). */
export const isJsonObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/**
 * Validate a request body. Throws InferaError 400 (param = wire path of the first bad field) when
 * the body is not a JSON object or does not match the schema.
 */
export function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  if (!isJsonObject(body)) {
    throw badRequest(`The request body must be a JSON object, not ${describe(body)}.`);
  }
  const result = leanSafeParse(schema, body, { error: readableIssue });
  if (!result.success) throw zodErrorToBadRequest(result.error);
  return result.data as T;
}

/**
 * What a failed parse hands back here: the issues alone. zod's own ZodError is an Error (a stack
 * trace) whose constructor also serialises every issue into its message with JSON.stringify and binds
 * its methods one by one. A refused chat body cost 35 µs of CPU (`messages: []`; a bad content part 60)
 * against 10 µs for a whole valid one; with the issues alone 13 (18). Only the issues are read here.
 */
class Issues {
  constructor(readonly issues: z.core.$ZodIssue[]) {}
}
const leanSafeParse = z.core._safeParse(Issues as unknown as z.core.$ZodErrorClass);

/**
 * Fields Infera reads for its own models that an upstream may read too, so a forwarding engine passes
 * them on as the client sent them: `keep_alive` is Ollama's own (and another Infera's).
 */
export const FORWARDED_FIELDS: ReadonlySet<string> = new Set(['keep_alive']);

/**
 * The body's top-level fields that `shape` does not name (or that `forwarded` names) (vendor extensions), or undefined when there
 * are none. They are not validated here: an engine that forwards requests passes them on, and the
 * server behind it judges them; engines that run the model themselves ignore them.
 */
export function unknownFields(
  body: unknown,
  shape: Readonly<Record<string, unknown>>,
  forwarded: ReadonlySet<string> = new Set(),
): Record<string, unknown> | undefined {
  if (!isJsonObject(body)) return undefined;
  let extra: Record<string, unknown> | undefined;
  for (const [key, value] of Object.entries(body)) {
    if (Object.hasOwn(shape, key) && !forwarded.has(key)) continue;
    extra ??= {};
    extra[key] = value;
  }
  return extra;
}

/** A number within [min, max] whose error says so in one sentence ("must be between 0 and 2"). */
export function numberBetween(min: number, max: number, options: { int?: boolean } = {}) {
  const message = `must be ${options.int ? 'an integer ' : ''}between ${min} and ${max}`;
  const base = options.int ? z.number().int() : z.number();
  return base.min(min, { error: message }).max(max, { error: message });
}
