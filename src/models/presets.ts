// The preset catalogue (presets.yaml next to this file, or the file INFERA_PRESETS / presets.file
// names): SiliconFlow ids → where to pull them from and the engine settings they run with.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { modelSchema, type ModelConfig } from '../config/schema.ts';
import { PullError } from './errors.ts';
import { formatModelRef, parseModelRef } from './ref.ts';
import { readManifest } from './store.ts';
import { PARSE_ONCE } from '../config/parse-once.ts';

const presetSchema = z
  .object({
    type: z.enum(['chat', 'embedding', 'reranker', 'text-to-image']),
    source: z.string().min(1),
    modelscope: z.string().min(1).optional(),
    size: z.string().optional(),
    aliases: z.array(z.string()).default([]),
    entry: z.record(z.string(), z.unknown()).and(z.object({ engine: z.string() })),
  })
  .strict();

const catalogueSchema = z
  .object({
    sets: z.record(z.string(), z.array(z.string())).default({}),
    models: z.record(z.string(), presetSchema),
  })
  .strict();

export type Preset = z.infer<typeof presetSchema> & { id: string };
export interface Catalogue {
  file: string;
  sets: Record<string, string[]>;
  presets: Preset[];
}

export const DEFAULT_PRESETS_FILE = new URL('./presets.yaml', import.meta.url);

export function loadCatalogue(file?: string): Catalogue {
  const path = file ?? DEFAULT_PRESETS_FILE;
  const shown = typeof path === 'string' ? path : path.pathname;
  let raw: unknown;
  try {
    raw = parseYaml(readFileSync(path, 'utf8'));
  } catch (error) {
    throw new PullError('bad_ref', `cannot read the preset catalogue ${shown}: ${(error as Error).message}`);
  }
  const parsed = catalogueSchema.safeParse(raw, PARSE_ONCE);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new PullError('bad_ref', `preset catalogue ${shown}: ${issue.path.join('.')}: ${issue.message}`);
  }
  const presets = Object.entries(parsed.data.models).map(([id, preset]) => ({ ...preset, id }));
  for (const preset of presets) parseModelRef(preset.source);
  for (const [set, ids] of Object.entries(parsed.data.sets))
    for (const id of ids) if (!parsed.data.models[id]) throw new PullError('bad_ref', `preset catalogue ${shown}: set ${set} names ${id}, which has no entry`);
  return { file: shown, sets: parsed.data.sets, presets };
}

/** A set name or one preset id (case-insensitive) → the presets it means. */
export function resolvePresets(catalogue: Catalogue, name: string): Preset[] {
  const set = Object.entries(catalogue.sets).find(([key]) => key.toLowerCase() === name.toLowerCase());
  if (set) return set[1].map((id) => catalogue.presets.find((preset) => preset.id === id)!);
  const one = catalogue.presets.find((preset) => preset.id.toLowerCase() === name.toLowerCase());
  if (one) return [one];
  throw new PullError(
    'bad_ref',
    `no preset or set named "${name}". Sets: ${Object.keys(catalogue.sets).join(', ') || 'none'}. Presets: ${catalogue.presets.map((preset) => preset.id).join(', ')}`,
  );
}

/** The ref a preset is pulled from on the hub asked for (ModelScope where the preset names a mirror there). */
export function presetSource(preset: Preset, hub: 'hf' | 'ms' = 'hf'): string {
  return formatModelRef(parseModelRef(hub === 'ms' && preset.modelscope ? preset.modelscope : preset.source));
}

/**
 * Model entries for the presets found in the models directory, under their SiliconFlow ids: what
 * `infera serve` runs when no model is configured.
 */
export function pulledPresetConfigs(modelsDir: string, catalogue: Catalogue): ModelConfig[] {
  const pulled = readManifest(modelsDir).models;
  const configs: ModelConfig[] = [];
  for (const preset of catalogue.presets) {
    const sources = [preset.source, preset.modelscope].filter((ref): ref is string => !!ref).map((ref) => formatModelRef(parseModelRef(ref)));
    const model = pulled.find((candidate) => candidate.preset === preset.id) ?? pulled.find((candidate) => sources.includes(candidate.ref));
    if (!model) continue;
    configs.push(
      modelSchema.parse({
        ...preset.entry,
        id: preset.id,
        aliases: preset.aliases,
        type: preset.type,
        path: join(modelsDir, model.path),
        description: `${preset.id} from ${model.ref} (${model.endpoint}), pulled ${model.pulledAt.slice(0, 10)}`,
      }),
    );
  }
  return configs;
}
