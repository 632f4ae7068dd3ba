import type { Command } from 'commander';
import { configFromCli } from './program.ts';

export function registerModelsCommand(program: Command): void {
  program
    .command('models')
    .description('list the models the config serves and the models pulled into the models directory')
    .option('--models-dir <dir>', 'where pulled models are (env INFERA_MODELS_DIR)')
    .action(async (flags: { modelsDir?: string }) => {
      const { config, source } = await configFromCli({ modelsDir: flags.modelsDir });
      const { listLocalModels } = await import('../models/cli-models.ts');
      console.log(`config: ${source}`);
      if (config.models.length === 0) console.log('no models configured: `infera serve` serves the pulled presets below, else the tiny test models');
      for (const model of config.models)
        console.log(`${model.id}\t${model.type}\t${model.engine}\t${model.path ?? ""}`);
      console.log('');
      for (const line of await listLocalModels(config)) console.log(line);
    });
}
