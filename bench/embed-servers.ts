// What bench/embed-path.ts and bench/onnx-path.ts share about the servers they time: llama-server spawned
// as bench/vs-llama-server.ts runs it for its embeddings and onnx parts (8 slots of 512), one single-input
// /v1/embeddings request, and the wait for a server's first answer.
import { spawn, type ChildProcess } from 'node:child_process';
import type { Agent } from 'node:http';
import { join } from 'node:path';
import { postJson } from './http-post.ts';

export interface EmbedServer {
  label: string;
  child: ChildProcess;
  port: number;
  model: string;
}

export function spawnLlamaEmbeddings(dir: string, modelPath: string, threads: number, port: number): EmbedServer {
  const args = ['-m', modelPath, '--host', '127.0.0.1', '--port', String(port), '-t', String(threads), '-tb', String(threads), '--no-webui', '--embeddings', '-c', '4096', '-np', '8'];
  const child = spawn(join(dir, 'llama-server'), args, { stdio: ['ignore', 'ignore', 'ignore'] });
  return { label: 'llama-server', child, port, model: 'bench' };
}

/** One /v1/embeddings request of one input; throws on anything but 200. */
export async function embedOne(agent: Agent, server: EmbedServer, input: string): Promise<void> {
  const { status, text } = await postJson(agent, server.port, '/v1/embeddings', { model: server.model, input });
  if (status !== 200) throw new Error(`${server.label}: HTTP ${status} ${text.slice(0, 300)}`);
}

/** Retries `send` every 200 ms until it succeeds; throws once the server has exited or after 120 s. */
export async function whenAnswering(server: EmbedServer, send: () => Promise<void>): Promise<void> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      await send();
      return;
    } catch (error) {
      if (server.child.exitCode !== null || Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}
