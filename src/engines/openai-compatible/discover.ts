// What an upstream serves, from its own answers: the model list (context sizes for loading), and for
// the quick form (`infera serve --upstream URL`, config `upstreams:`) which kind of server it is and a
// model entry for every model it lists, under the upstream's own ids.
import type { Logger } from 'pino';
import type { ModelConfig, ModelTypeName } from '../../config/model.ts';
import { modelSchema } from '../../config/schema.ts';
import { type DialectName, DIALECT_KINDS, type UpstreamOptions, upstreamSchema } from './config.ts';
import { num, obj } from './dialects/types.ts';
import { type Json, Upstream } from './upstream.ts';

export interface ListedModel {
  id: string;
  type?: ModelTypeName;
  contextSize?: number;
  aliases?: string[];
}

/** GET {base}/models: ids with the context sizes vLLM, SGLang and llama-server put there. */
export async function listModels(upstream: Upstream, signal: AbortSignal, query = ''): Promise<ListedModel[]> {
  const answer = await upstream.json(`${upstream.path('models')}${query}`, undefined, signal, 'GET');
  const data = Array.isArray(answer.data) ? answer.data : [];
  return data.flatMap((item): ListedModel[] => {
    const entry = obj(item);
    if (typeof entry?.id !== 'string') return [];
    const meta = obj(entry.meta);
    const contextSize = num(entry.max_model_len) ?? num(entry.context_length) ?? num(meta?.n_ctx) ?? num(meta?.n_ctx_train);
    return [{ id: entry.id, ...(contextSize ? { contextSize } : {}) }];
  });
}

/** One `upstreams:` entry (or --upstream flag). */
export interface QuickUpstream {
  baseUrl: string;
  dialect: DialectName | 'auto';
  apiKeyEnv?: string;
  headers: Record<string, string>;
}

const SUB_TYPES: Record<string, ModelTypeName> = { chat: 'chat', embedding: 'embedding', reranker: 'reranker', 'text-to-image': 'text-to-image' };

/** How long the quick form waits for each of an upstream's answers at startup. */
const DISCOVERY_TIMEOUT_SECONDS = 10;

/**
 * Model entries for every model the quick-form upstreams list. An id an earlier upstream also listed
 * (same type) becomes another deployment of that model (src/routing/: replicas behind one gateway);
 * an id the config's own models take is skipped with a warning. An upstream that cannot be listed fails
 * startup with a message naming it.
 */
export async function modelsOfUpstreams(upstreams: readonly QuickUpstream[], taken: Iterable<string>, logger: Logger): Promise<ModelConfig[]> {
  const { Pool } = await import('undici');
  const used = new Set([...taken].map((id) => id.toLowerCase()));
  const models: ModelConfig[] = [];
  /** Models the upstreams listed so far: their type by id, and the id each of their names belongs to. */
  const listed = new Map<string, ModelTypeName>();
  const owner = new Map<string, string>();
  for (const quick of upstreams) {
    const origin = new URL(quick.baseUrl).origin;
    const pool = new Pool(origin, { connections: 2, connect: { timeout: DISCOVERY_TIMEOUT_SECONDS * 1000 } });
    try {
      const signal = AbortSignal.timeout(DISCOVERY_TIMEOUT_SECONDS * 1000 * 3);
      const make = (dialect: DialectName) =>
        new Upstream(
          upstreamSchema.parse({
            baseUrl: quick.baseUrl,
            dialect,
            ...(quick.apiKeyEnv ? { apiKeyEnv: quick.apiKeyEnv } : {}),
            headers: quick.headers,
            timeouts: { firstByteSeconds: DISCOVERY_TIMEOUT_SECONDS, totalSeconds: DISCOVERY_TIMEOUT_SECONDS },
          }),
          pool,
          '(discovery)',
          logger,
        );
      const dialect = quick.dialect === 'auto' ? await detectDialect(make('openai'), signal) : quick.dialect;
      const found = await modelsOf(make(dialect), dialect, signal);
      logger.info({ upstream: quick.baseUrl, dialect, models: found.length }, 'upstream listed its models');
      for (const model of found) {
        const names = [model.id, ...(model.aliases ?? [])];
        const type = model.type ?? 'chat';
        if (!DIALECT_KINDS[dialect].includes(type)) continue;
        const clash = names.find((name) => used.has(name.toLowerCase()));
        // The same model on another upstream: one more deployment of it.
        const id = model.id.toLowerCase();
        const replica = listed.get(id) === type && names.every((name) => !used.has(name.toLowerCase()) || owner.get(name.toLowerCase()) === id);
        if (clash && !replica) {
          logger.warn({ upstream: quick.baseUrl, model: model.id }, `model id ${clash} is already served; the upstream's model is skipped`);
          continue;
        }
        listed.set(id, type);
        for (const name of names) {
          used.add(name.toLowerCase());
          owner.set(name.toLowerCase(), id);
        }
        const upstream: Partial<UpstreamOptions> = { baseUrl: quick.baseUrl, dialect, model: model.id, headers: quick.headers };
        if (quick.apiKeyEnv) upstream.apiKeyEnv = quick.apiKeyEnv;
        if (model.contextSize) upstream.contextSize = model.contextSize;
        models.push(
          modelSchema.parse({
            id: model.id,
            aliases: model.aliases ?? [],
            type,
            engine: 'openai-compatible',
            ownedBy: new URL(quick.baseUrl).host,
            description: `served by ${quick.baseUrl} (${dialect})`,
            upstream,
          }),
        );
      }
    } catch (error) {
      throw new Error(`upstream ${quick.baseUrl}: cannot list its models: ${(error as Error).message}`, { cause: error });
    } finally {
      await pool.close().catch(() => pool.destroy());
    }
  }
  return models;
}

/** Tries a GET; undefined instead of an error (detection asks questions some servers cannot answer). */
async function tryJson(upstream: Upstream, path: string, signal: AbortSignal): Promise<Json | undefined> {
  try {
    return await upstream.json(path, undefined, signal, 'GET');
  } catch {
    return undefined;
  }
}

/** Which server this is, from what it answers. */
export async function detectDialect(upstream: Upstream, signal: AbortSignal): Promise<DialectName> {
  const host = new URL(upstream.options.baseUrl).hostname;
  if (/(^|\.)siliconflow\.(cn|com)$/.test(host)) return 'siliconflow';
  const listing = await tryJson(upstream, upstream.path('models'), signal);
  const data = Array.isArray(listing?.data) ? (listing.data as unknown[]).map((item) => obj(item) ?? {}) : undefined;
  if (data) {
    if (data.some((entry) => obj(entry.infera))) return 'infera';
    const owners = new Set(data.map((entry) => entry.owned_by));
    if (owners.has('vllm')) return 'vllm';
    if (owners.has('sglang')) return 'sglang';
    if (owners.has('llamacpp')) return 'llama-server';
    if (owners.has('infinity') || data.some((entry) => Array.isArray(entry.capabilities))) return 'infinity';
    const version = await tryJson(upstream, upstream.rootPath('/api/version'), signal);
    if (typeof version?.version === 'string') return 'ollama';
    return 'openai';
  }
  const info = await tryJson(upstream, upstream.rootPath('/info'), signal);
  if (typeof info?.model_id === 'string' && obj(info.model_type)) return 'tei';
  // Infinity without /v1: its list is at the root.
  const rootList = await tryJson(upstream, upstream.rootPath('/models'), signal);
  if (Array.isArray(rootList?.data)) return 'infinity';
  throw new Error('it answered neither GET /models nor a known server\'s own routes; name its kind with --upstream-dialect (or upstreams[].dialect)');
}

/** Every model the upstream lists, with its type where the server says it. */
async function modelsOf(upstream: Upstream, dialect: DialectName, signal: AbortSignal): Promise<ListedModel[]> {
  switch (dialect) {
    case 'tei': {
      const info = await upstream.json(upstream.rootPath('/info'), undefined, signal, 'GET');
      const kind = obj(info.model_type) ?? {};
      return [{ id: String(info.model_id), type: 'reranker' in kind ? 'reranker' : 'embedding' }];
    }
    case 'infera': {
      const answer = await upstream.json(upstream.path('models'), undefined, signal, 'GET');
      const entries = (Array.isArray(answer.data) ? answer.data : []).map((item) => obj(item) ?? {});
      const aliases = new Map<string, string[]>();
      for (const entry of entries) {
        const of = obj(entry.infera)?.alias_of;
        if (typeof of === 'string') aliases.set(of, [...(aliases.get(of) ?? []), String(entry.id)]);
      }
      return entries
        .filter((entry) => typeof entry.id === 'string' && obj(entry.infera)?.alias_of === undefined)
        .map((entry) => ({ id: entry.id as string, type: SUB_TYPES[String(entry.sub_type)], aliases: aliases.get(entry.id as string) ?? [] }));
    }
    case 'siliconflow': {
      const typed: ListedModel[] = [];
      for (const subType of Object.keys(SUB_TYPES))
        for (const model of await listModels(upstream, signal, `?sub_type=${subType}`)) typed.push({ ...model, type: SUB_TYPES[subType] });
      return typed;
    }
    case 'infinity': {
      const answer = (await tryJson(upstream, upstream.path('models'), signal)) ?? (await upstream.json(upstream.rootPath('/models'), undefined, signal, 'GET'));
      return (Array.isArray(answer.data) ? answer.data : []).map((item) => {
        const entry = obj(item) ?? {};
        const capabilities = Array.isArray(entry.capabilities) ? entry.capabilities : [];
        return { id: String(entry.id), type: capabilities.includes('embed') ? 'embedding' : 'reranker' };
      });
    }
    case 'ollama': {
      const listed = await listModels(upstream, signal);
      for (const model of listed) {
        const details = await upstream.json(upstream.rootPath('/api/show'), { model: model.id }, signal).catch(() => undefined);
        const capabilities = Array.isArray(details?.capabilities) ? details.capabilities : [];
        model.type = capabilities.includes('embedding') && !capabilities.includes('completion') ? 'embedding' : 'chat';
      }
      return listed;
    }
    default:
      return listModels(upstream, signal);
  }
}
