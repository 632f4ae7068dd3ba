// `infera models`' list of pulled models: size, kind, engine, the config entries that use each, and
// whether a running server (this config's address, asked through the admin API) has it loaded.
import { join, relative } from 'node:path';
import type { InferaConfig } from '../config/schema.ts';
import { describeLocal } from './local.ts';
import { loadCatalogue, pulledPresetConfigs } from './presets.ts';
import { formatBytes } from './format.ts';
import { readManifest } from './store.ts';

export async function listLocalModels(config: InferaConfig): Promise<string[]> {
  const modelsDir = config.storage.modelsDir!;
  const pulled = readManifest(modelsDir).models;
  if (!pulled.length) return [`no models pulled into ${modelsDir}: try \`infera pull --preset starter\``];
  const catalogue = loadCatalogue(config.presets.file);
  // With no models configured, the server runs the pulled presets: those are the entries that use them.
  const entries = config.models.length ? config.models : pulledPresetConfigs(modelsDir, catalogue);
  const states = await serverStates(config);
  const rows = [['REF', 'SIZE', 'KIND', 'ENGINE', 'USED BY', 'LOADED']];
  for (const model of pulled) {
    const path = join(modelsDir, model.path);
    const users = entries.filter((entry) => entry.path && (entry.path === path || !relative(path, entry.path).startsWith('..')));
    const info = describeLocal(model, modelsDir, catalogue.presets);
    // The registry calls a loaded model 'ready' ('loaded' in the lifecycle's wording).
    const loaded = states ? (users.some((entry) => ['ready', 'loaded'].includes(states.get(entry.id) ?? '')) ? 'yes' : 'no') : '?';
    rows.push([model.ref, formatBytes(model.size), info.kind, info.engine, users.map((entry) => entry.id).join(', ') || '-', loaded]);
  }
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  const lines = rows.map((row) => row.map((cell, column) => cell.padEnd(widths[column]!)).join('  ').trimEnd());
  lines.unshift(`pulled into ${modelsDir}:`);
  if (!states) lines.push(`(LOADED: ? — no server answered at http://${config.server.host}:${config.server.port}/admin/models${config.server.adminKey ? '' : ' (it needs server.adminKey / INFERA_ADMIN_KEY)'})`);
  return lines;
}

/** Model id → state, from a server running with this config; undefined when none answers. */
async function serverStates(config: InferaConfig): Promise<Map<string, string> | undefined> {
  if (!config.server.adminKey) return undefined;
  const host = config.server.host === '0.0.0.0' || config.server.host === '::' ? '127.0.0.1' : config.server.host;
  try {
    const response = await fetch(`http://${host.includes(':') ? `[${host}]` : host}:${config.server.port}/admin/models`, {
      headers: { authorization: `Bearer ${config.server.adminKey}` },
      signal: AbortSignal.timeout(1500),
    });
    if (!response.ok) return undefined;
    const body = (await response.json()) as { data: { id: string; state: string }[] };
    return new Map(body.data.map((model) => [model.id, model.state]));
  } catch {
    return undefined;
  }
}
