// Engine `openai-compatible`: models served by another server (vLLM, SGLang, Ollama, llama-server, TEI,
// Infinity, SiliconFlow, another Infera) behind Infera's API, keys, limits and ledger. Cheap to import:
// undici and the engine code are imported inside load(). The model runs in the server process by default
// (its schema sets isolation: none): it holds sockets, not native memory.
import { imageLimitsOf } from '../../spec/image.ts';
import { defineEngine } from '../descriptor.ts';
import { DEFAULT_REMOTE_CONTEXT, openaiCompatibleModelSchema } from './config.ts';

export const openaiCompatible = defineEngine({
  name: 'openai-compatible',
  kinds: ['chat', 'embedding', 'reranker', 'text-to-image'],
  schema: openaiCompatibleModelSchema,
  // Before the first load; the upstream's model list may then say otherwise.
  contextSize: (config) => config.upstream.contextSize ?? DEFAULT_REMOTE_CONTEXT,
  imageLimits: (config) => imageLimitsOf(config.id, config.upstream, 'upstream.defaultSize'),
  remote(config) {
    const { upstream } = config;
    const base = new URL(upstream.baseUrl.endsWith('/') ? upstream.baseUrl : `${upstream.baseUrl}/`);
    // Another Infera says on /ready whether its models are loaded (a restarted one lists them before).
    const path = config.deployment.healthPath ?? (upstream.dialect === 'tei' ? '/health' : upstream.dialect === 'infera' ? '/ready' : 'models');
    // A path from the root keeps what the base URL has in front of /v1 (a server behind a path prefix).
    const healthUrl = path.startsWith('/') ? new URL(`${base.pathname.replace(/\/v1\/?$/, '/').replace(/\/$/, '')}${path}`, base.origin).href : new URL(path, base).href;
    return { name: upstream.name ?? base.host, baseUrl: upstream.baseUrl, healthUrl };
  },
  async load({ config, signal, logger, resources }) {
    signal.throwIfAborted();
    return (await import('./load.ts')).loadRemoteModel(config, { logger, resources, signal });
  },
});
