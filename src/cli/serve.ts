import { join } from 'node:path';
import type { Command } from 'commander';
import type { ModelEntry } from '../registry/registry.ts';
import type { InferaConfig } from '../config/schema.ts';
import { configFromCli } from './program.ts';

const collect = (value: string, previous: string[]) => [...previous, value];

export function registerServeCommand(program: Command): void {
  program
    .command('serve', { isDefault: true })
    .description('start the API server')
    .option('--host <host>', 'listen address (env HOST)')
    // Parsed strictly by the config loader (parseInt would read "80x" as 80).
    .option('--port <port>', 'listen port (env PORT)')
    .option('--api-key <key>', 'accept this bearer key (env INFERA_API_KEY)')
    .option('--data-dir <dir>', 'data directory (env INFERA_DATA_DIR)')
    .option('--upstream <url>', 'serve every model this OpenAI-compatible server lists, e.g. http://gpu1:8000/v1 (repeatable)', collect, [])
    .option('--upstream-key-env <name>', "environment variable holding the upstreams' API key")
    .option('--upstream-dialect <dialect>', 'what the upstreams are: openai, vllm, sglang, ollama, llama-server, tei, infinity, siliconflow or infera (default: detected from their answers)')
    .action(async (flags: { host?: string; port?: string; apiKey?: string; dataDir?: string; upstream: string[]; upstreamKeyEnv?: string; upstreamDialect?: string }) => {
      const { upstream, ...rest } = flags;
      // An engine process starts now, before the config is read, for the eager model it will fit (host.ts).
      const { startSpareEngineProcess, stopSpareEngineProcess } = await import('../engines/runner/host.ts');
      startSpareEngineProcess();
      const { config, source } = await configFromCli({ ...rest, upstreams: upstream });
      // Engines keep what they can reuse across starts here (the llama.cpp FFI chat engine: its chat
      // wrapper per GGUF, ~1 s of CPU each start); engine processes get it in their load message.
      process.env.INFERA_CACHE_DIR ||= join(config.storage.dataDir, 'cache');
      await startEagerEnginesEarly(config);
      stopSpareEngineProcess();
      const { createServer, listen } = await import('../main.ts');
      const out = (line = '') => process.stderr.write(`${line}\n`);
      const modelsDir = config.storage.modelsDir!;
      // First run with INFERA_AUTO_PULL=1: nothing configured and nothing pulled → the starter set first.
      if (config.presets.autoPull && config.models.length === 0 && config.upstreams.length === 0) {
        const { loadCatalogue, pulledPresetConfigs } = await import('../models/presets.ts');
        if (!pulledPresetConfigs(modelsDir, loadCatalogue(config.presets.file)).length) {
          out(`INFERA_AUTO_PULL: no models configured or pulled; pulling the starter set into ${modelsDir} first.`);
          const { runPulls } = await import('../models/cli-pull.ts');
          const code = await runPulls({ preset: 'starter', hub: config.presets.hub, modelsDir, presetsFile: config.presets.file });
          if (code !== 0) process.exit(code);
        }
      }
      const progressBars = new Map<string, number>();
      let server: Awaited<ReturnType<typeof createServer>>;
      let url: string;
      try {
        server = await createServer(config, {
          registryEvents: {
            onStateChange: (entry: ModelEntry) => {
              out(`  model ${entry.config.id}: ${entry.state}${entry.error ? ` (${entry.error})` : ''}`);
            },
            onProgress: (entry: ModelEntry) => {
              // Loading a real model takes a while: show progress in 10 % steps.
              const step = Math.floor(entry.progress * 10);
              if (step > (progressBars.get(entry.config.id) ?? -1)) {
                progressBars.set(entry.config.id, step);
                out(`  model ${entry.config.id}: loading ${step * 10}%`);
              }
            },
          },
        });
        url = await listen(server);
      } catch (error) {
        // One line naming the setting to change, not a stack trace (LOG_LEVEL=debug prints it).
        out(`infera: ${startupFailure(error, config)}`);
        if (config.server.logLevel === 'debug' || config.server.logLevel === 'trace') out((error as Error).stack);
        process.exit(1);
      }
      out('');
      out(`Infera is serving the SiliconFlow / OpenAI API at ${url}/v1   (config: ${source})`);
      out(`Try it in a browser: ${url}/   API reference: ${url}/docs`);
      out('');
      out('Models (loaded on first use unless preloaded; idle ones unload after their keep-alive):');
      for (const entry of server.services.registry.entries()) {
        const { config: model } = entry;
        const aliases = model.aliases.length ? `  aliases: ${model.aliases.join(', ')}` : '';
        out(`  ${model.id.padEnd(32)} ${model.type.padEnd(13)} ${entry.state.padEnd(9)}${aliases}`);
      }
      if (server.usingTinyModels) {
        out('');
        out('  !! No models are configured, so these are TINY TEST MODELS generated by Infera: real');
        out('  !! llama.cpp / ONNX inference on crafted weights, useless for real work. Configure real models');
        out('  !! in infera.yaml (docs/CONFIGURATION.md), or pull the starter set (Qwen3-1.7B, bge-m3,');
        out(`  !! bge-reranker-v2-m3, sd-turbo; about 3.5 GB) into ${modelsDir}:`);
        out('  !!     npx infera pull --preset starter      (then restart; INFERA_AUTO_PULL=1 pulls it at startup)');
        out('  !! They are then served under their SiliconFlow ids. Mirrors: HF_ENDPOINT (docs/MODELS.md).');
      }
      if (server.usingPulledPresets) {
        out('');
        out(`  No models configured: serving the presets pulled into ${modelsDir} (\`npx infera models\` lists them).`);
      }
      out('');
      out('  Keys: `npx infera keys create --name NAME` prints a new key (shown once); INFERA_API_KEY=sk-... also works.');
      out('        While no key exists at all, only loopback clients are served.');
      // With a key anywhere (config, INFERA_API_KEY or the key store), the example must carry one.
      const keyNeeded = config.server.apiKeys.length > 0 || (await anyStoredKey(server.services.gate));
      const auth = keyNeeded ? `-H "Authorization: Bearer $INFERA_API_KEY" ` : '';
      out(`  Try: curl ${url}/v1/chat/completions ${auth}-H 'Content-Type: application/json' \\`);
      const chat = server.services.registry.entries().find((entry) => entry.config.type === 'chat') ?? server.services.registry.entries()[0];
      out(`         -d '{"model":"${chat?.config.id ?? 'MODEL'}","messages":[{"role":"user","content":"hello"}]}'`);
      out('');
      // Once started (eager models loaded too), what start-up alone needed goes back to the system:
      // ~40 MiB of RSS of an idle server (release.ts; docs/BENCHMARKS.md, rss4).
      void server.services.registry
        .preload()
        .then(() => import('../engines/runner/release.ts'))
        .then(async ({ releaseServerStartup, releaseIdlePages, releaseWhenQuiet, growYoungGeneration }) => {
          server.services.logger.debug(await releaseServerStartup(), 'server: released start-up leftovers');
          // Then, each time it goes quiet, the code pages its requests faulted back (release.ts, rss7). While
          // it works, the young generation regrows in one step: a burst of requests after a quiet moment no
          // longer starts with ~60 extra scavenges, which made the one-connection p99 (release.ts).
          releaseWhenQuiet(
            () => {
              growYoungGeneration('stepwise');
              server.services.logger.debug(releaseIdlePages(), 'server: quiet, dropped code pages');
            },
            { onWork: () => growYoungGeneration('atOnce') },
          );
        })
        .catch((error: unknown) => server.services.logger.warn({ err: error }, 'server: releasing start-up leftovers failed'));

      // First signal: drain (server.drainTimeoutSeconds), then exit 0. A second one: exit at once.
      let stopping = false;
      const stop = async (signal: NodeJS.Signals) => {
        if (stopping) {
          out(`${signal} again: exiting without waiting for requests in flight.`);
          process.exit(130);
        }
        stopping = true;
        out(`\n${signal}: no new connections; finishing requests in flight (up to ${config.server.drainTimeoutSeconds}s, ${signal} again to exit now)…`);
        await server.close();
        out('Stopped.');
        process.exit(0);
      };
      process.on('SIGINT', (signal) => void stop(signal));
      process.on('SIGTERM', (signal) => void stop(signal));
    });
}

/**
 * Eager models that run in engine processes start loading before the server imports and builds itself
 * (most of its start-up): on two cores or more the two overlap, and the first answer comes that much
 * sooner. The registry adopts each process when it loads the entry (src/engines/runner/host.ts). The
 * file check (a GGUF header walk: ~45 ms on a busy box) runs while the process starts, not before: a
 * model whose check fails has its early process stopped, and is left to the registry, which reports it
 * as usual. The process is the one place a bad file may do harm in meanwhile (isolation: process).
 */
async function startEagerEnginesEarly(config: InferaConfig): Promise<void> {
  const eager = config.models.filter((model) => model.eager && model.isolation === 'process');
  if (eager.length === 0) return;
  const [{ startEngineProcessEarly, stopEarlyEngineProcess }, { engines }] = await Promise.all([import('../engines/runner/host.ts'), import('../engines/index.ts')]);
  for (const model of eager) {
    const engine = engines.find((candidate) => candidate.name === model.engine);
    if (!engine) continue;
    startEngineProcessEarly(model, config.server.logLevel);
    void Promise.resolve()
      .then(() => engine.check?.(model))
      .catch(() => stopEarlyEngineProcess(model.id));
  }
}

/** Whether the platform key store holds any key (then every request needs one). */
async function anyStoredKey(gate: unknown): Promise<boolean> {
  const admin = (gate as { admin?: { listKeys(): Promise<unknown[]> } }).admin;
  try {
    return admin ? (await admin.listKeys()).length > 0 : false;
  } catch {
    return false;
  }
}

/** What went wrong at startup, as one line naming the setting to change. */
export function startupFailure(error: unknown, config: InferaConfig): string {
  const { code, syscall, path } = error as NodeJS.ErrnoException;
  const { host, port } = config.server;
  if (syscall === 'listen' || code === 'EADDRINUSE') {
    if (code === 'EADDRINUSE') return `port ${port} is in use: set --port or PORT`;
    if (code === 'EACCES') return `port ${port} needs privileges on this system: set --port or PORT (1024 or above)`;
    if (code === 'EADDRNOTAVAIL') return `address ${host} is not one of this machine's: set --host or HOST`;
  }
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return `host ${host} cannot be resolved: set --host or HOST`;
  if (path && code)
    return `cannot use ${path} (${code}): ${(path.startsWith(config.storage.dataDir) || config.storage.dataDir.startsWith(path)) ? 'set --data-dir or INFERA_DATA_DIR (storage.dataDir) to a writable directory' : 'check the path in the config'}`;
  return `startup failed: ${(error as Error)?.message ?? String(error)}`;
}
