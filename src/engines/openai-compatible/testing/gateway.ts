// A real Infera server (in-process, loopback) whose models are served by engine openai-compatible from a
// fake upstream, for the dialect and fault tests: requests go through the whole server (protocol,
// serving, ledger) and the engine's real sockets.
import Database from 'better-sqlite3';
import { sqlitePath } from '../../../platform/index.ts';
import { startTestServer, type TestServer } from '../../../../test/helpers/server.ts';
import { type FakeUpstream, startFakeUpstream } from './fake-upstream.ts';

export interface LedgerEntry {
  endpoint: string;
  model: string;
  prompt_tokens: number;
  completion_tokens: number;
  reasoning_tokens: number;
  status: number;
  outcome: string;
  note: string | null;
}

export interface Gateway {
  upstream: FakeUpstream;
  server: TestServer;
  ledger(): LedgerEntry[];
  /** Waits until the ledger has `count` rows (rows of streams settle as the stream ends). */
  ledgerRows(count: number): Promise<LedgerEntry[]>;
  close(): Promise<void>;
}

/** A model entry on the fake upstream; `upstream` keys are merged over {baseUrl, dialect}. */
export function remoteModel(id: string, type: string, dialect: string, upstream: Record<string, unknown> = {}, rest: Record<string, unknown> = {}) {
  return { id, type, engine: 'openai-compatible', upstream: { dialect, ...upstream }, ...rest };
}

/** Starts a fake upstream, then a server whose models (built by `models` from the upstream's URL) point at it. */
export async function startGateway(models: (url: string) => Record<string, unknown>[], config: Record<string, unknown> = {}): Promise<Gateway> {
  const upstream = await startFakeUpstream();
  const entries = models(upstream.url).map((model) => {
    const options = model.upstream as Record<string, unknown>;
    return { ...model, upstream: { baseUrl: `${upstream.url}/v1`, ...options } };
  });
  const server = await startTestServer({ config: { ...config, models: entries } });
  const ledger = () => {
    const db = new Database(sqlitePath(server.config), { readonly: true });
    try {
      return db
        .prepare('SELECT endpoint, model, prompt_tokens, completion_tokens, reasoning_tokens, status, outcome, note FROM ledger ORDER BY id')
        .all() as LedgerEntry[];
    } finally {
      db.close();
    }
  };
  return {
    upstream,
    server,
    ledger,
    async ledgerRows(count) {
      const deadline = Date.now() + 5000;
      let rows = ledger();
      while (rows.length < count && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 20));
        rows = ledger();
      }
      return rows;
    },
    async close() {
      await server.close();
      await upstream.close();
    },
  };
}
