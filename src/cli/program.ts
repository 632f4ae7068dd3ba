import { Command, Option } from 'commander';
import { ConfigError, loadConfig, type ConfigOverrides } from '../config/load.ts';

export const program = new Command('infera')
  .description('Self-hosted inference server speaking the SiliconFlow / OpenAI API')
  .addOption(new Option('-c, --config <file>', 'config file (YAML or JSON)').env('INFERA_CONFIG'))
  .showHelpAfterError();

/** Config as the global options and environment say; exits with a readable message when invalid. */
export function configFromCli(extra: ConfigOverrides = {}) {
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
