// GET /v1/models: what the config serves, with SiliconFlow's type / sub_type filters.
import type { ModelTypeName } from '../config/schema.ts';
import { badRequest, modelNotFound } from '../errors/index.ts';
import type { ModelEntry } from '../registry/registry.ts';
import type { Services } from './context.ts';

const WIRE_TYPE: Record<ModelTypeName, { type: string; subType: string }> = {
  chat: { type: 'text', subType: 'chat' },
  embedding: { type: 'text', subType: 'embedding' },
  reranker: { type: 'text', subType: 'reranker' },
  'text-to-image': { type: 'image', subType: 'text-to-image' },
};
const TYPES = new Set(['text', 'image', 'audio', 'video']);
const SUB_TYPES = new Set(['chat', 'embedding', 'reranker', 'text-to-image', 'image-to-image', 'speech-to-text', 'text-to-speech', 'text-to-video', 'image-to-video']);

/** Stable for the life of the process: Cherry Studio rejects a list with a null `created`. */
const STARTED = Math.floor(Date.now() / 1000);

/** Request field names (negative_prompt, guidance_scale, image_to_image), as clients send them. */
function wireCapabilities(capabilities: Readonly<Record<string, boolean>>): Record<string, boolean> {
  return Object.fromEntries(Object.entries(capabilities).map(([key, value]) => [key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`), value]));
}

/**
 * One entry per accepted id: apps fill their model pickers from this list and then send the id they
 * picked, so an alias (a SiliconFlow id such as Qwen/QwQ-32B served by a local model) is listed as a
 * model of its own, pointing at the model that serves it.
 */
function describe(entry: ModelEntry, id: string = entry.config.id) {
  const { config } = entry;
  const wire = WIRE_TYPE[config.type];
  const canonical = id.toLowerCase() === config.id.toLowerCase();
  return {
    id,
    object: 'model' as const,
    created: STARTED,
    owned_by: config.ownedBy,
    type: wire.type,
    sub_type: wire.subType,
    // Infera's own metadata: load state and operator notes (tiny test models say so here).
    infera: {
      engine: config.engine,
      state: entry.state,
      ...(canonical ? { aliases: config.aliases } : { alias_of: config.id }),
      ...(config.description ? { description: config.description } : {}),
      ...(entry.capabilities ? { capabilities: wireCapabilities(entry.capabilities) } : {}),
      ...(entry.error ? { error: entry.error } : {}),
      ...(entry.state === 'failed' && entry.retryAt !== undefined ? { retry_at: Math.ceil(entry.retryAt / 1000) } : {}),
    },
  };
}

export function listModels(services: Services, query: Record<string, unknown>) {
  const type = typeof query.type === 'string' && query.type !== '' ? query.type : undefined;
  const subType = typeof query.sub_type === 'string' && query.sub_type !== '' ? query.sub_type : undefined;
  if (type !== undefined && !TYPES.has(type)) throw badRequest(`type must be one of ${[...TYPES].join(', ')}`, 'type');
  if (subType !== undefined && !SUB_TYPES.has(subType))
    throw badRequest(`sub_type must be one of ${[...SUB_TYPES].join(', ')}`, 'sub_type');
  const data = services.registry
    .entries()
    .flatMap((entry) => [entry.config.id, ...entry.config.aliases].map((id) => describe(entry, id)))
    .filter((model) => (type === undefined || model.type === type) && (subType === undefined || model.sub_type === subType));
  return { object: 'list' as const, data };
}

/** `id` arrives decoded once by the router (decoding it again made `%25FF` a 500). Answers with the id asked for. */
export function retrieveModel(services: Services, id: string) {
  const entry = services.registry.find(id);
  if (!entry) throw modelNotFound(id, 404);
  return describe(entry, id);
}
