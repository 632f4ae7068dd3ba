#!/usr/bin/env node
// The `infera` command. Sources are TypeScript run through tsx, so `npm start` and the CLI
// always run the code in the tree: there is no build step to forget.
import { register } from 'tsx/esm/api';
register();
await import('../src/cli/main.ts');
