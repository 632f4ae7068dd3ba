// GET /v1/models: what the config serves, with SiliconFlow's type / sub_type filters.
import type { ModelTypeName } from '../config/schema.ts';
import { modelNotFound } from '../errors/index.ts';
import { parseBody } from '../protocol/common/validation.ts';
import { modelsQuerySchema, type WireModel, type WireModelList } from '../protocol/models.ts';
import type { ModelEntry } from '../registry/registry.ts';
import type { Services } from './context.ts';

const WIRE_TYPE: Record<ModelTypeName, { type: WireModel['type']; subType: WireModel['sub_type'] }> = {
  chat: { type: 'text', subType: 'chat' },
  embedding: { type: 'text', subType: 'embedding' },
  reranker: { type: 'text', subType: 'reranker' },
  'text-to-image': { type: 'image', subType: 'text-to-image' },
};

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
function describe(entry: ModelEntry, id: string = entry.config.id): WireModel {
  const { config } = entry;
  const wire = WIRE_TYPE[config.type];
  const canonical = id.toLowerCase() === config.id.toLowerCase();
  return {
    id,
    object: 'model',
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

export function listModels(services: Services, query: unknown): WireModelList {
  // Most lists are asked for without filters: no schema parse for an empty query (~1.3 µs of CPU each).
  const filters = query && Object.keys(query).length > 0 ? parseBody(modelsQuerySchema, { ...(query as object) }) : {};
  const type = filters.type || undefined;
  const subType = filters.sub_type || undefined;
  const data = services.registry
    .entries()
    .flatMap((entry) => [entry.config.id, ...entry.config.aliases].map((id) => describe(entry, id)))
    .filter((model) => (type === undefined || model.type === type) && (subType === undefined || model.sub_type === subType));
  return { object: 'list', data };
}

interface ListSnapshot {
  /** Per entry: what describe() reads that can change while serving (the config is fixed per entry). */
  seen: unknown[];
  json: string;
}
const listSnapshots = new WeakMap<Services['registry'], ListSnapshot>();
const SEEN_PER_ENTRY = 5;

/**
 * The unfiltered list as JSON, built again only when an entry's state, error, retry time or
 * capabilities changed (compared by value, no allocation). Most requests of a model picker are this
 * one: building the list and serialising it cost ~4 % of the server's CPU per request.
 */
export function listModelsJson(services: Services): string {
  const entries = services.registry.entries();
  const snapshot = listSnapshots.get(services.registry);
  if (snapshot && snapshot.seen.length === entries.length * SEEN_PER_ENTRY && entries.every((entry, i) => sameAsSeen(entry, snapshot.seen, i * SEEN_PER_ENTRY)))
    return snapshot.json;
  const seen: unknown[] = [];
  for (const entry of entries) seen.push(entry.config, entry.state, entry.error, entry.retryAt, entry.capabilities);
  const json = JSON.stringify(listModels(services, undefined));
  listSnapshots.set(services.registry, { seen, json });
  return json;
}

function sameAsSeen(entry: ModelEntry, seen: unknown[], at: number): boolean {
  return (
    seen[at] === entry.config &&
    seen[at + 1] === entry.state &&
    seen[at + 2] === entry.error &&
    seen[at + 3] === entry.retryAt &&
    seen[at + 4] === entry.capabilities
  );
}

/** `id` arrives decoded once by the router (decoding it again made `%25FF` a 500). Answers with the id asked for. */
export function retrieveModel(services: Services, id: string): WireModel {
  const entry = services.registry.find(id);
  if (!entry) throw modelNotFound(id, 404);
  return describe(entry, id);
}
