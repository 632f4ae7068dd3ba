// The CLI's side of pulling: progress on stderr, one line per failure with its own exit code.
import { formatBytes } from './format.ts';
import type { PullEvent } from './pull.ts';
import { PullError } from './errors.ts';
import { loadCatalogue, presetSource, resolvePresets } from './presets.ts';
import { progressPrinter } from './progress.ts';
import { formatModelRef, parseModelRef } from './ref.ts';
import { readManifest, removeModel } from './store.ts';

export interface PullRequest {
  ref?: string;
  preset?: string;
  hub: 'hf' | 'ms';
  modelsDir: string;
  presetsFile?: string;
}

/** Pulls and reports; resolves to the exit code. */
export async function runPulls(request: PullRequest, out: NodeJS.WriteStream = process.stderr): Promise<number> {
  try {
    await pullAll(request, progressPrinter(out));
    return 0;
  } catch (error) {
    if (error instanceof PullError) {
      out.write(`infera pull: ${error.message}\n`);
      return error.exitCode;
    }
    out.write(`infera pull: ${(error as Error)?.stack ?? String(error)}\n`);
    return 1;
  }
}

/** The pulls a request means, one after another (a preset set: each of its models). */
export async function pullAll(request: PullRequest, onEvent: (event: PullEvent) => void): Promise<void> {
  // Loaded here so that `infera rm` never loads node-llama-cpp (select.ts reads its quantisation names).
  const { pullModel } = await import('./pull.ts');
  if (!request.ref && !request.preset) throw new PullError('bad_ref', 'name a model (e.g. hf:Qwen/Qwen3-8B-GGUF:Q4_K_M) or a preset (--preset starter)');
  if (request.ref && request.preset) throw new PullError('bad_ref', 'give a ref or --preset, not both');
  if (request.ref) {
    await pullModel(request.ref, { modelsDir: request.modelsDir, onEvent });
    return;
  }
  const catalogue = loadCatalogue(request.presetsFile);
  for (const preset of resolvePresets(catalogue, request.preset!))
    await pullModel(presetSource(preset, request.hub), { modelsDir: request.modelsDir, preset: preset.id, onEvent });
}

export async function runRemove(text: string, modelsDir: string, out: NodeJS.WriteStream = process.stderr): Promise<number> {
  let canonical: string | undefined;
  try {
    canonical = formatModelRef(parseModelRef(text));
  } catch {
    // Not a ref: maybe a preset id.
  }
  const matches = (model: { ref: string; preset?: string }) =>
    model.ref === canonical || model.ref === text || model.preset?.toLowerCase() === text.toLowerCase();
  const before = readManifest(modelsDir).models;
  if (!before.some(matches)) {
    out.write(`infera rm: no pulled model is ${text}. Pulled: ${before.map((model) => model.preset ?? model.ref).join(', ') || 'none'}\n`);
    return 10;
  }
  for (const model of await removeModel(modelsDir, matches)) out.write(`removed ${model.ref}${model.preset ? ` (${model.preset})` : ''}: ${formatBytes(model.size)}\n`);
  return 0;
}
