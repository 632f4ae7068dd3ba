// The wire rules for a client's JSON Schema (response_format.json_schema.schema, tool parameters),
// checked while parsing, before any model is resolved: size caps (a 100,000-value enum froze the event
// loop for ~30 s in grammar compilation), nesting depth (3,000 levels overflowed the stack in the
// converters, a 500), and references (a `$ref` that points nowhere was silently not enforced). The walk
// is iterative and stops at the first cap it passes, so even a hostile schema costs one bounded pass.
// Whether an engine can enforce a valid schema (recursion, keywords) is the engine's rule.
import type { JsonSchemaLimits } from '../../config/requests.ts';
import { badRequest, InferaError } from '../../errors/index.ts';
import { resolveJsonPointer } from '../../spec/json-pointer.ts';

const capError = (param: string, message: string) =>
  new InferaError({ status: 400, message: `${param}: ${message}`, param, code: 'schema_too_large' });

const shorten = (pointer: string) => (pointer.length > 120 ? `${pointer.slice(0, 120)}…` : pointer);

/** `#/properties/a~1b` style pointer segment. */
const escapePointer = (key: string) => key.replaceAll('~', '~0').replaceAll('/', '~1');

/**
 * Throws a 400 naming `param` (and the JSON pointer inside the schema) when the schema passes a cap in
 * `limits` or holds a `$ref` that does not resolve inside the schema itself.
 */
export function checkJsonSchema(schema: unknown, param: string, limits: JsonSchemaLimits): void {
  const refs: { ref: string; at: string }[] = [];
  let nodes = 0;
  const stack: { value: unknown; depth: number; at: string }[] = [{ value: schema, depth: 0, at: '#' }];
  while (stack.length > 0) {
    const { value, depth, at } = stack.pop()!;
    nodes++;
    if (nodes > limits.maxNodes)
      throw capError(param, `the schema has more than ${limits.maxNodes} values (this server's cap on schema size); simplify it.`);
    if (value === null || typeof value !== 'object') continue;
    if (depth >= limits.maxDepth)
      throw capError(param, `the schema nests deeper than ${limits.maxDepth} levels at ${shorten(at)} (this server's cap on schema depth).`);
    if (Array.isArray(value)) {
      for (let i = value.length - 1; i >= 0; i--) stack.push({ value: value[i], depth: depth + 1, at: `${at}/${i}` });
      continue;
    }
    for (const [key, item] of Object.entries(value)) {
      if (key === 'enum' && Array.isArray(item) && item.length > limits.maxEnumValues)
        throw capError(param, `enum at ${at}/enum has ${item.length} values; this server takes at most ${limits.maxEnumValues} per enum.`);
      if (key === '$ref' && typeof item === 'string') refs.push({ ref: item, at: `${at}/$ref` });
      stack.push({ value: item, depth: depth + 1, at: `${at}/${escapePointer(key)}` });
    }
  }
  // Depth is bounded now, so serialising cannot overflow the stack.
  const bytes = Buffer.byteLength(JSON.stringify(schema));
  if (bytes > limits.maxBytes)
    throw capError(param, `the schema is ${bytes} bytes of JSON; this server takes at most ${limits.maxBytes}.`);
  for (const { ref, at } of refs)
    if (resolveJsonPointer(schema, ref) === undefined)
      throw badRequest(
        `${param}: $ref ${JSON.stringify(ref)} at ${at} does not resolve to a schema inside this schema (only local references such as "#/$defs/Name" are followed).`,
        param,
        'invalid_schema',
      );
}

