// The root command. Each command module registers its options here and imports what it runs only
// inside its action, so `infera --help` and `infera keys …` never load fastify, llama.cpp, ONNX
// Runtime or sharp (bench/cli-startup.ts measures it).
import { Command, Option } from 'commander';
import type { ConfigOverrides } from '../config/load.ts';

export const program = new Command('infera')
  .description('Self-hosted inference server speaking the SiliconFlow / OpenAI API')
  .addOption(new Option('-c, --config <file>', 'config file (YAML or JSON)').env('INFERA_CONFIG'))
  .showHelpAfterError();

/** Config as the global options and environment say; exits with a readable message when invalid. */
export async function configFromCli(extra: ConfigOverrides = {}) {
  const { ConfigError, loadConfig } = await import('../config/load.ts');
  try {
    return loadConfig({ configPath: program.opts().config, ...extra });
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(error.message);
      process.exit(2);
    }
    throw error;
  }
}
