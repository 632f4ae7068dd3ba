// Translates client JSON Schemas (response_format.json_schema, tool parameters) into the subset that
// node-llama-cpp turns into a GBNF grammar. Its converter silently ignores keywords it does not know
// (a `pattern` or `minimum` would simply not be enforced) and reads some shapes differently from JSON
// Schema (`{}` becomes `null`, `{type:"object"}` without properties becomes `{}` only), so every
// schema passes through here first: supported keywords are kept, equivalent spellings rewritten, and
// anything that cannot be enforced is reported by its path.
import type { GbnfJsonSchema } from 'node-llama-cpp';
import type { JsonSchema } from '../../spec/chat.ts';
import { resolveJsonPointer } from '../../spec/json-pointer.ts';

export interface GbnfSchemaConversion {
  schema: GbnfJsonSchema;
  /** JSON pointers (`#/properties/age/minimum`) of keywords the grammar cannot enforce. */
  unsupported: string[];
  /**
   * Where a `$ref` closes a reference cycle (a recursive schema), if one does. node-llama-cpp expands
   * references inline, so a grammar for a recursive schema cannot be built at all: unlike an
   * unsupported keyword this is never a warning.
   */
  recursiveAt?: string;
}

/** Keywords that only describe; dropping them changes nothing about which outputs are valid. */
const annotations = new Set([
  '$schema',
  '$id',
  '$comment',
  'title',
  'examples',
  'default',
  'deprecated',
  'readOnly',
  'writeOnly',
  'strict',
]);

const basicTypes = new Set(['string', 'number', 'integer', 'boolean', 'null']);
const stringFormats = new Set(['date-time', 'date', 'time']);

/** Any JSON value, spelled in the subset (node-llama-cpp has no "any" schema: `{}` means null there). */
const anyJson = (): Record<string, unknown> => ({
  oneOf: [
    { type: ['string', 'number', 'boolean', 'null'] },
    { type: 'object', additionalProperties: true },
    { type: 'array' },
  ],
});

export function toGbnfJsonSchema(schema: unknown): GbnfSchemaConversion {
  const unsupported: string[] = [];
  const converted = convert(schema, '#', unsupported, true);
  const recursiveAt = findRefCycle(schema);
  return recursiveAt === undefined ? { schema: converted as GbnfJsonSchema, unsupported } : { schema: converted as GbnfJsonSchema, unsupported, recursiveAt };
}

/**
 * The pointer of a `$ref` that leads back to a schema it is (transitively) inside of, or undefined.
 * References are followed through any local JSON pointer; unresolvable ones are the wire check's
 * business (src/protocol/chat/json-schema-check.ts) and are skipped here. Iterative, so that a deep
 * schema cannot overflow the stack.
 */
export function findRefCycle(root: unknown): string | undefined {
  const refsInside = new Map<object, { target: object; ref: string; at: string }[]>();
  const refsOf = (node: object, base: string) => {
    let found = refsInside.get(node);
    if (found) return found;
    found = [];
    const stack: { value: unknown; at: string }[] = [{ value: node, at: base }];
    while (stack.length > 0) {
      const { value, at } = stack.pop()!;
      if (value === null || typeof value !== 'object') continue;
      for (const [key, item] of Object.entries(value)) {
        if (key === '$ref' && typeof item === 'string' && !Array.isArray(value)) {
          const target = resolveLocalRef(root, item);
          if (target) found.push({ target, ref: item, at: `${at}/$ref` });
        } else stack.push({ value: item, at: `${at}/${key}` });
      }
    }
    refsInside.set(node, found);
    return found;
  };
  if (root === null || typeof root !== 'object') return undefined;
  // Depth-first over "schema → the schemas its references reach"; a reference to a schema still on
  // the path is a cycle.
  const onPath = new Set<object>([root]);
  const done = new Set<object>();
  const path: { node: object; refs: { target: object; ref: string; at: string }[]; next: number }[] = [{ node: root, refs: refsOf(root, '#'), next: 0 }];
  while (path.length > 0) {
    const frame = path.at(-1)!;
    if (frame.next >= frame.refs.length) {
      path.pop();
      onPath.delete(frame.node);
      done.add(frame.node);
      continue;
    }
    const { target, ref, at } = frame.refs[frame.next++]!;
    if (onPath.has(target)) return at;
    if (done.has(target)) continue;
    onPath.add(target);
    // Pointers inside the target are spelled from the target's own pointer (the reference itself).
    path.push({ node: target, refs: refsOf(target, ref), next: 0 });
  }
  return undefined;
}

/** Object schemas only: a boolean target has no refs of its own to follow. */
function resolveLocalRef(root: unknown, ref: string): object | undefined {
  const target = resolveJsonPointer(root, ref);
  return target !== null && typeof target === 'object' ? target : undefined;
}

function convert(node: unknown, path: string, unsupported: string[], isRoot = false): Record<string, unknown> {
  if (node === true) return anyJson();
  if (node === false || node === null || typeof node !== 'object' || Array.isArray(node)) {
    unsupported.push(path);
    return { type: 'null' };
  }
  const source = node as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  let handled = new Set<string>(annotations);

  if (typeof source.description === 'string') out.description = source.description;
  handled.add('description');

  // $defs (and the older `definitions`) may sit on any node; refs are rewritten to #/$defs/.
  const defs = (source.$defs ?? source.definitions) as Record<string, unknown> | undefined;
  if (defs !== undefined) {
    if (typeof defs !== 'object' || defs === null || Array.isArray(defs)) unsupported.push(`${path}/$defs`);
    else {
      out.$defs = Object.fromEntries(
        Object.entries(defs).map(([name, def]) => [name, convert(def, `${path}/$defs/${name}`, unsupported)]),
      );
    }
  }
  handled.add('$defs').add('definitions');

  if (typeof source.$ref === 'string') {
    const ref = source.$ref.replace(/^#\/definitions\//, '#/$defs/');
    if (!ref.startsWith('#/$defs/') || ref.slice('#/$defs/'.length).includes('/')) unsupported.push(`${path}/$ref`);
    out.$ref = ref;
    handled.add('$ref');
    reportRest(source, handled, path, unsupported);
    return out;
  }

  if ('const' in source) {
    out.const = source.const;
    handled.add('const').add('type');
    if (!isLiteral(source.const)) unsupported.push(`${path}/const`);
    reportRest(source, handled, path, unsupported);
    return out;
  }
  if ('enum' in source) {
    handled.add('enum').add('type');
    if (!Array.isArray(source.enum) || !source.enum.every(isLiteral) || source.enum.length === 0)
      unsupported.push(`${path}/enum`);
    else out.enum = source.enum;
    reportRest(source, handled, path, unsupported);
    return out;
  }

  // anyOf is generated like oneOf: any output matching one branch satisfies anyOf. (For oneOf the
  // branches could overlap, but the grammar still only emits values that match at least one.)
  const alternatives = source.oneOf ?? source.anyOf;
  if (alternatives !== undefined) {
    const key = source.oneOf !== undefined ? 'oneOf' : 'anyOf';
    handled.add('oneOf').add('anyOf');
    if (!Array.isArray(alternatives) || alternatives.length === 0) unsupported.push(`${path}/${key}`);
    else {
      // Sibling keywords (e.g. a shared `type`) would be dropped by the converter; fold them into each branch.
      const siblings = Object.fromEntries(
        Object.entries(source).filter(([k]) => !['oneOf', 'anyOf', '$defs', 'definitions', 'description', ...annotations].includes(k)),
      );
      out.oneOf = alternatives.map((alternative, index) =>
        convert(
          Object.keys(siblings).length > 0 && typeof alternative === 'object' && alternative !== null
            ? { ...siblings, ...(alternative as Record<string, unknown>) }
            : alternative,
          `${path}/${key}/${index}`,
          unsupported,
        ),
      );
      handled = new Set([...handled, ...Object.keys(siblings)]);
    }
    reportRest(source, handled, path, unsupported);
    return out;
  }

  const type = source.type;
  handled.add('type');
  if (type === undefined) {
    // No type: JSON Schema means "anything" (constrained only by the other keywords, which we keep
    // when they pin the shape).
    if ('properties' in source || 'required' in source) return convert({ ...source, type: 'object' }, path, unsupported);
    if ('items' in source || 'prefixItems' in source) return convert({ ...source, type: 'array' }, path, unsupported);
    reportRest(source, handled, path, unsupported);
    return { ...anyJson(), ...out };
  }
  if (Array.isArray(type)) {
    if (type.length === 0 || !type.every((t) => typeof t === 'string')) {
      unsupported.push(`${path}/type`);
      return out;
    }
    if (type.every((t) => basicTypes.has(t)) && !type.includes('string')) {
      out.type = type;
      reportRest(source, handled, path, unsupported);
      return out;
    }
    // Mixed structured types ("object" | "null", or string with length limits): one branch per type.
    return {
      ...out,
      oneOf: type.map((t, index) => convert({ ...source, type: t, description: undefined }, `${path}/type/${index}`, unsupported)),
    };
  }
  if (typeof type !== 'string') {
    unsupported.push(`${path}/type`);
    return out;
  }

  if (type === 'object') {
    out.type = 'object';
    handled.add('properties').add('required').add('additionalProperties').add('minProperties').add('maxProperties');
    const properties = source.properties;
    if (properties !== undefined) {
      if (typeof properties !== 'object' || properties === null || Array.isArray(properties))
        unsupported.push(`${path}/properties`);
      else
        out.properties = Object.fromEntries(
          Object.entries(properties).map(([name, value]) => [name, convert(value, `${path}/properties/${name}`, unsupported)]),
        );
    }
    // node-llama-cpp emits every listed property, which satisfies any `required`; it is kept because
    // the tool documentation shown to the model is rendered from this schema.
    if (Array.isArray(source.required) && source.required.every((name) => typeof name === 'string'))
      out.required = source.required;
    const additional = source.additionalProperties;
    if (additional === true || (additional === undefined && properties === undefined)) out.additionalProperties = true;
    else if (additional !== undefined && additional !== false)
      out.additionalProperties = convert(additional, `${path}/additionalProperties`, unsupported);
    if (typeof source.minProperties === 'number') out.minProperties = source.minProperties;
    if (typeof source.maxProperties === 'number') out.maxProperties = source.maxProperties;
  } else if (type === 'array') {
    out.type = 'array';
    handled.add('items').add('prefixItems').add('minItems').add('maxItems');
    if (source.items !== undefined && source.items !== true) {
      if (Array.isArray(source.items)) out.prefixItems = source.items.map((item, i) => convert(item, `${path}/items/${i}`, unsupported));
      else out.items = convert(source.items, `${path}/items`, unsupported);
    }
    if (Array.isArray(source.prefixItems))
      out.prefixItems = source.prefixItems.map((item, i) => convert(item, `${path}/prefixItems/${i}`, unsupported));
    if (typeof source.minItems === 'number') out.minItems = source.minItems;
    if (typeof source.maxItems === 'number') out.maxItems = source.maxItems;
  } else if (type === 'string') {
    out.type = 'string';
    handled.add('minLength').add('maxLength').add('format');
    if (typeof source.format === 'string') {
      if (stringFormats.has(source.format)) out.format = source.format;
      else unsupported.push(`${path}/format`);
    }
    if (out.format === undefined) {
      if (typeof source.minLength === 'number') out.minLength = source.minLength;
      if (typeof source.maxLength === 'number') out.maxLength = source.maxLength;
    } else if (source.minLength !== undefined || source.maxLength !== undefined) unsupported.push(`${path}/maxLength`);
  } else if (basicTypes.has(type)) {
    out.type = type;
  } else {
    unsupported.push(`${path}/type`);
  }
  if (isRoot && out.type === undefined && out.oneOf === undefined) out.type = 'null';
  reportRest(source, handled, path, unsupported);
  return out;
}

function reportRest(source: Record<string, unknown>, handled: Set<string>, path: string, unsupported: string[]): void {
  for (const key of Object.keys(source)) if (!handled.has(key) && source[key] !== undefined) unsupported.push(`${path}/${key}`);
}

const isLiteral = (value: unknown): boolean =>
  value === null || typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean';

export function isJsonSchemaObject(value: unknown): value is JsonSchema {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
