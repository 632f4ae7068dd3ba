// `infera pull` and `infera rm`: fetch models from Hugging Face / ModelScope into storage.modelsDir,
// and remove them (src/models/ does the work; docs/MODELS.md).
import { type Command, Option } from 'commander';
import { configFromCli } from './program.ts';

export function registerPullCommands(program: Command): void {
  program
    .command('pull')
    .description('download a model: hf:owner/repo[:QUANT | /file.gguf | /folder], ms:owner/repo… (ModelScope), or --preset starter')
    .argument('[ref]', 'what to pull (omit with --preset)')
    .option('--preset <name>', 'a preset set (starter) or a SiliconFlow id from the preset catalogue')
    .addOption(new Option('--hub <hub>', 'for presets: pull from Hugging Face (hf) or the ModelScope mirror (ms) (env INFERA_PULL_HUB)').choices(['hf', 'ms']))
    .option('--models-dir <dir>', 'where models go (env INFERA_MODELS_DIR; default .infera/models)')
    .action(async (ref: string | undefined, flags: { preset?: string; hub?: 'hf' | 'ms'; modelsDir?: string }) => {
      const { config } = await configFromCli({ modelsDir: flags.modelsDir });
      const { runPulls } = await import('../models/cli-pull.ts');
      process.exit(await runPulls({ ref, preset: flags.preset, hub: flags.hub ?? config.presets.hub, modelsDir: config.storage.modelsDir!, presetsFile: config.presets.file }));
    });

  program
    .command('rm')
    .description('remove a pulled model (its ref as `infera models` lists it, or its preset id)')
    .argument('<ref>')
    .option('--models-dir <dir>', 'where models are (env INFERA_MODELS_DIR)')
    .action(async (ref: string, flags: { modelsDir?: string }) => {
      const { config } = await configFromCli({ modelsDir: flags.modelsDir });
      const { runRemove } = await import('../models/cli-pull.ts');
      process.exit(await runRemove(ref, config.storage.modelsDir!));
    });
}
