import type { Command } from 'commander';
import { configFromCli } from './program.ts';

export function registerModelsCommand(program: Command): void {
  program
    .command('models')
    .description('list the models the config serves')
    .action(async () => {
      const { config, source } = await configFromCli();
      console.log(`config: ${source}`);
      if (config.models.length === 0) console.log('no models configured: `infera serve` will serve the tiny test models');
      for (const model of config.models)
        console.log(`${model.id}\t${model.type}\t${model.engine}\t${model.path ?? ""}`);
    });
}
