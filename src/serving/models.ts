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

function describe(entry: ModelEntry) {
  const { config } = entry;
  const wire = WIRE_TYPE[config.type];
  return {
    id: config.id,
    object: 'model' as const,
    created: STARTED,
    owned_by: config.ownedBy,
    type: wire.type,
    sub_type: wire.subType,
    // Infera's own metadata: load state and operator notes (tiny test models say so here).
    infera: {
      engine: config.engine,
      state: entry.state,
      aliases: config.aliases,
      ...(config.description ? { description: config.description } : {}),
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
    .map(describe)
    .filter((model) => (type === undefined || model.type === type) && (subType === undefined || model.sub_type === subType));
  return { object: 'list' as const, data };
}

export function retrieveModel(services: Services, id: string) {
  const entry = services.registry.find(decodeURIComponent(id));
  if (!entry) throw modelNotFound(id);
  return describe(entry);
}
