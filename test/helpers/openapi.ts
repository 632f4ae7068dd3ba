// Validate raw response bodies against OpenAI's published OpenAPI description, so "compatible" is
// checked by the reference contract rather than by our own reading of it.
//
// The document is OpenAPI 3.1 (JSON Schema 2020-12) with some 3.0-isms left in (`nullable: true`,
// sometimes beside a $ref and no `type`, which Ajv refuses; rewritten below into the 3.1 form) and
// vendor keywords (`x-stainless-*`), which strict mode would reject; formats it invents
// (`unixtime`, …) are accepted as unchecked.

import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';

const here = dirname(fileURLToPath(import.meta.url));
/** Vendored with its licence and upstream commit (test/fixtures/openai-openapi/README.md). */
export const OPENAPI_PATH = join(here, '..', 'fixtures', 'openai-openapi', 'openapi.json');

const DOCUMENT_ID = 'https://openai.invalid/openapi.json';

/** OpenAPI 3.0 `nullable: true` → JSON Schema 2020-12 (`type: [T, "null"]`, or anyOf with null). */
export function rewriteNullable(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(rewriteNullable);
  if (typeof node !== 'object' || node === null) return node;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(node)) out[key] = key === 'nullable' && typeof value === 'boolean' ? value : rewriteNullable(value);
  if (typeof out.nullable !== 'boolean') return out;
  const nullable = out.nullable;
  delete out.nullable;
  if (!nullable) return out;
  if (Array.isArray(out.enum) && !out.enum.includes(null)) out.enum = [...out.enum, null];
  if (typeof out.type === 'string') out.type = [out.type, 'null'];
  else if (Array.isArray(out.type)) out.type = out.type.includes('null') ? out.type : [...out.type, 'null'];
  else return { anyOf: [out, { type: 'null' }] };
  return out;
}

let ajv: Ajv2020 | undefined;
const compiled = new Map<string, ValidateFunction>();

function instance(): Ajv2020 {
  if (ajv) return ajv;
  const document = JSON.parse(readFileSync(OPENAPI_PATH, 'utf8')) as { components: { schemas: Record<string, unknown> } };
  ajv = new Ajv2020({ strict: false, allErrors: true, logger: false, validateFormats: true });
  // ajv-formats ships CommonJS; under ESM its function may sit on .default.
  const addFormats = ((addFormatsModule as unknown as { default?: unknown }).default ?? addFormatsModule) as (a: Ajv2020) => void;
  addFormats(ajv);
  for (const format of ['unixtime', 'int32', 'int64', 'float', 'double', 'binary', 'byte', 'password']) {
    if (!ajv.formats[format]) ajv.addFormat(format, true);
  }
  // Refs in the document are "#/components/schemas/X": give the document an id so they resolve.
  ajv.addSchema({ $id: DOCUMENT_ID, components: rewriteNullable(document.components) });
  return ajv;
}

/** Schema names present in components.schemas (for error messages and discovery). */
export function openApiSchemaNames(): string[] {
  instance();
  const document = JSON.parse(readFileSync(OPENAPI_PATH, 'utf8')) as { components: { schemas: Record<string, unknown> } };
  return Object.keys(document.components.schemas);
}

/**
 * Validate `value` against components.schemas[schemaName]. Returns readable error strings
 * (`/choices/0/message/refusal must have required property ...`); an empty array means valid.
 * Throws when the schema name does not exist.
 */
export function validateAgainstOpenApi(schemaName: string, value: unknown): string[] {
  let validate = compiled.get(schemaName);
  if (!validate) {
    const found = instance().getSchema(`${DOCUMENT_ID}#/components/schemas/${schemaName}`);
    if (!found) throw new Error(`No schema "${schemaName}" in ${OPENAPI_PATH}`);
    validate = found;
    compiled.set(schemaName, validate);
  }
  if (validate(value)) return [];
  return (validate.errors ?? []).map((e) => {
    const extra = e.keyword === 'additionalProperties' ? ` (${String(e.params.additionalProperty)})` : '';
    return `${e.instancePath || '/'} ${e.message ?? e.keyword}${extra} [${e.schemaPath}]`;
  });
}
