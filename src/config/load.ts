// The only module that reads the environment and config files. Everything else receives an
// InferaConfig. Precedence: defaults < config file < environment < CLI flags.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { engines as defaultEngines, type EngineTable } from '../engines/index.ts';
import { configSchema, configSchemaFor, type InferaConfig, type ModelConfig } from './schema.ts';
import { PARSE_ONCE } from './parse-once.ts';

export interface ConfigOverrides {
  configPath?: string;
  host?: string;
  /** A number, or the --port flag's text (parsed strictly here). */
  port?: number | string;
  apiKey?: string;
  dataDir?: string;
  modelsDir?: string;
  logLevel?: string;
  /** --upstream URLs (the quick form), with the key variable and dialect that the flags give them all. */
  upstreams?: string[];
  upstreamKeyEnv?: string;
  upstreamDialect?: string;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** "8000" → 8000; "80x", "8e3", " 80", "0x50" and 70000 are errors (Number() and parseInt() accept some of them). */
export function parsePort(value: number | string, name: string): number {
  const port = typeof value === 'number' ? value : /^\d{1,5}$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new ConfigError(`${name} must be an integer from 0 to 65535, got ${JSON.stringify(String(value))}`);
  return port;
}

const DEFAULT_FILES = ['infera.yaml', 'infera.yml', 'infera.json'];

/** Where the config came from, for the startup banner. */
export interface LoadedConfig {
  config: InferaConfig;
  source: string;
}

export function loadConfig(
  overrides: ConfigOverrides = {},
  env: NodeJS.ProcessEnv = process.env,
  cwd = process.cwd(),
  /** The engines model entries may name (tests add their own). */
  engines: EngineTable = defaultEngines,
): LoadedConfig {
  const explicit = overrides.configPath ?? env.INFERA_CONFIG;
  let path: string | undefined;
  if (explicit) {
    path = resolve(cwd, explicit);
    if (!existsSync(path)) throw new ConfigError(`Config file not found: ${path}`);
  } else {
    path = DEFAULT_FILES.map((name) => resolve(cwd, name)).find((candidate) => existsSync(candidate));
  }

  let raw: Record<string, unknown> = {};
  if (path) {
    const text = readFileSync(path, 'utf8');
    try {
      const parsed = path.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
      raw = (parsed ?? {}) as Record<string, unknown>;
    } catch (error) {
      throw new ConfigError(`Cannot parse ${path}: ${(error as Error).message}`);
    }
    if (typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError(`${path}: the top level must be a mapping`);
  }

  const server = { ...((raw.server as object) ?? {}) } as Record<string, unknown>;
  const storage = { ...((raw.storage as object) ?? {}) } as Record<string, unknown>;
  const host = overrides.host ?? env.HOST;
  if (host) server.host = host;
  if (overrides.port !== undefined) server.port = parsePort(overrides.port, '--port');
  else if (env.PORT !== undefined && env.PORT !== '') server.port = parsePort(env.PORT, 'PORT');
  const apiKey = overrides.apiKey ?? env.INFERA_API_KEY;
  // Checked here, not by the schema, so the message names what the operator set rather than server.apiKeys[N].
  if (apiKey && apiKey.length < 8)
    throw new ConfigError(`${overrides.apiKey ? '--api-key' : 'INFERA_API_KEY'} must be at least 8 characters (got ${apiKey.length}); use a long random key, e.g. \`infera keys create --name NAME\`.`);
  if (apiKey) server.apiKeys = [...((server.apiKeys as string[]) ?? []), apiKey];
  if (env.INFERA_ADMIN_KEY) server.adminKey = env.INFERA_ADMIN_KEY;
  const logLevel = overrides.logLevel ?? env.LOG_LEVEL;
  if (logLevel) server.logLevel = logLevel;
  const dataDir = overrides.dataDir ?? env.INFERA_DATA_DIR;
  if (dataDir) storage.dataDir = dataDir;
  const modelsDir = overrides.modelsDir ?? env.INFERA_MODELS_DIR;
  if (modelsDir) storage.modelsDir = modelsDir;
  const presets = { ...((raw.presets as object) ?? {}) } as Record<string, unknown>;
  if (env.INFERA_PRESETS) presets.file = env.INFERA_PRESETS;
  if (env.INFERA_PULL_HUB) presets.hub = env.INFERA_PULL_HUB;
  if (env.INFERA_AUTO_PULL !== undefined && env.INFERA_AUTO_PULL !== '') presets.autoPull = /^(1|true|yes|on)$/i.test(env.INFERA_AUTO_PULL);
  // INFERA_-prefixed so that a DATABASE_URL meant for something else never redirects the ledger.
  if (env.INFERA_DATABASE_URL) storage.databaseUrl = env.INFERA_DATABASE_URL;
  if (env.INFERA_REDIS_URL) storage.redisUrl = env.INFERA_REDIS_URL;

  // --upstream adds to the file's upstreams; the flags' key variable and dialect apply to those it adds.
  if (overrides.upstreams?.length) {
    const extra = overrides.upstreams.map((baseUrl) => ({
      baseUrl,
      ...(overrides.upstreamKeyEnv ? { apiKeyEnv: overrides.upstreamKeyEnv } : {}),
      ...(overrides.upstreamDialect ? { dialect: overrides.upstreamDialect } : {}),
    }));
    raw.upstreams = [...(Array.isArray(raw.upstreams) ? raw.upstreams : []), ...extra];
  }

  const schema = engines === defaultEngines ? configSchema : configSchemaFor(engines);
  const result = schema.safeParse({ ...raw, server, storage, presets }, PARSE_ONCE);
  if (!result.success) {
    const lines = result.error.issues.map((issue) => {
      const where = issue.path.length ? issue.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('').replace(/^\./, '') : '(top level)';
      return `  - ${where}: ${issue.message}`;
    });
    const where = `Invalid configuration${path ? ` in ${path}` : ''}`;
    throw new ConfigError(lines.length === 1 ? `${where}: ${lines[0]!.slice(4)}` : `${where}:\n${lines.join('\n')}`);
  }

  // Paths in the file are relative to the file, so a config can be moved with its models.
  const base = path ? dirname(path) : cwd;
  const config = result.data;
  const absolute = (p: string) => (isAbsolute(p) ? p : resolve(base, p));
  config.storage.dataDir = absolute(config.storage.dataDir);
  config.storage.modelsDir = config.storage.modelsDir ? absolute(config.storage.modelsDir) : join(config.storage.dataDir, 'models');
  if (config.presets.file) config.presets.file = absolute(config.presets.file);
  if (config.images.dir) config.images.dir = absolute(config.images.dir);
  for (const model of config.models) {
    if (model.path) model.path = absolute(model.path);
    engines.find((engine) => engine.name === model.engine)?.resolvePaths?.(model, absolute);
  }
  checkDeployments(config.models);
  return { config, source: path ?? '(no config file: defaults)' };
}

/**
 * Ids and aliases name one model each. Entries that share an id are deployments of that model
 * (src/routing/): they must agree on its type, their names must differ, and their aliases belong to the
 * model (an alias may repeat among them, never name another model).
 */
export function checkDeployments(models: readonly ModelConfig[]): void {
  const owners = new Map<string, string>();
  const groups = new Map<string, ModelConfig[]>();
  for (const model of models) {
    const key = model.id.toLowerCase();
    const group = groups.get(key);
    if (group) group.push(model);
    else groups.set(key, [model]);
  }
  for (const [key, group] of groups) {
    const first = group[0]!;
    const other = group.find((model) => model.type !== first.type);
    if (other) throw new ConfigError(`Model "${first.id}" has deployments of different types (${first.type} and ${other.type}); entries that share an id are deployments of one model.`);
    const names = new Set<string>();
    for (const model of group) {
      const name = model.deployment.name;
      if (name === undefined) continue;
      if (names.has(name)) throw new ConfigError(`Model "${first.id}" has two deployments named "${name}" (deployment.name must differ).`);
      names.add(name);
    }
    for (const name of [key, ...group.flatMap((model) => model.aliases.map((alias) => alias.toLowerCase()))]) {
      const owner = owners.get(name);
      if (owner !== undefined && owner !== key) throw new ConfigError(`Model id or alias "${name}" is used twice (by ${groups.get(owner)![0]!.id} and ${first.id}).`);
      owners.set(name, key);
    }
  }
}
