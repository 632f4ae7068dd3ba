// POST /admin/models/pull: `infera pull` over HTTP, its progress as server-sent events (`resolved`,
// `progress`, `done` per model, then `end`; a failure is an `error` event with the same code and
// message the CLI prints). Registered inside the /admin scope, so the admin key guards it.
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { InferaError } from '../../errors/index.ts';
import type { Services } from '../../serving/context.ts';

export const pullBody = z
  .object({
    /** hf:owner/repo[:QUANT | /file.gguf | /folder] or ms:owner/repo… */
    ref: z.string().min(1).optional(),
    /** A preset set (starter) or a SiliconFlow id from the catalogue. */
    preset: z.string().min(1).optional(),
    /** For presets: Hugging Face or the ModelScope mirror. */
    hub: z.enum(['hf', 'ms']).optional(),
  })
  .strict()
  .refine((body) => (body.ref === undefined) !== (body.preset === undefined), { message: 'give exactly one of ref and preset', path: ['ref'] });

/** Progress events at most this often per model (the downloader reports every few KB). */
const PROGRESS_EVERY_MS = 250;

export function registerPullRoute(scope: FastifyInstance, services: Services, parse: <T>(schema: z.ZodType<T>, value: unknown) => T, schema: object): void {
  let running: string | undefined;
  scope.post('/models/pull', { schema }, async (request, reply) => {
    const body = parse(pullBody, request.body);
    if (running)
      throw new InferaError({ status: 409, code: 'pull_in_progress', message: `A pull (${running}) is running on this server; wait for it to finish.`, retryAfter: 30 });
    running = body.ref ?? `preset ${body.preset}`;
    const { pullAll } = await import('../../models/cli-pull.ts');
    const { PullError } = await import('../../models/errors.ts');
    const { config } = services;
    reply.hijack();
    const raw = reply.raw;
    raw.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' });
    const send = (event: string, data: unknown) => {
      if (!raw.destroyed) raw.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    };
    let lastProgress = 0;
    try {
      await pullAll(
        { ref: body.ref, preset: body.preset, hub: body.hub ?? config.presets.hub, modelsDir: config.storage.modelsDir!, presetsFile: config.presets.file },
        (event) => {
          if (event.type === 'progress') {
            const now = Date.now();
            if (now - lastProgress < PROGRESS_EVERY_MS && event.downloaded < event.total) return;
            lastProgress = now;
          }
          send(event.type, event);
        },
      );
      send('end', { ok: true, note: 'Models pulled; a server with no models configured serves new presets after a restart.' });
    } catch (error) {
      const known = error instanceof PullError;
      if (!known) services.logger.error({ err: error }, 'pull failed');
      send('error', {
        code: known ? error.code : 'internal_error',
        exit_code: known ? error.exitCode : 1,
        message: known ? error.message : `pull failed: ${(error as Error)?.message ?? String(error)}`,
      });
    } finally {
      running = undefined;
      raw.end();
    }
  });
}
