// The `infera` command. Thin: every command calls the same services the server uses, and imports
// them only when it runs (program.ts says why).
// First: before anything else runs (or a GC can), see tick-map.ts.
import '../tick-map.ts';
import { program } from './program.ts';
import { registerServeCommand } from './serve.ts';
import { registerModelsCommand } from './models.ts';
import { registerPullCommands } from './pull.ts';
import { registerKeysCommands } from './keys.ts';
import { registerUsageCommands } from './usage.ts';
import { registerPsCommand } from './ps.ts';

registerServeCommand(program);
registerModelsCommand(program);
registerPullCommands(program);
registerKeysCommands(program);
registerUsageCommands(program);
registerPsCommand(program);

await program.parseAsync(process.argv);
