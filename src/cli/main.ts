// The `infera` command. Thin: every command calls the same services the server uses.
import { program } from './program.ts';
import { registerServeCommand } from './serve.ts';
import { registerModelsCommand } from './models.ts';

registerServeCommand(program);
registerModelsCommand(program);

await program.parseAsync(process.argv);
