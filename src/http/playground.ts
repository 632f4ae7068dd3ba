// The browser playground at / and the admin console at /console (playground/ at the package root: plain HTML, CSS and JavaScript, no
// build step, no CDN). Read once at startup and served from memory; the page talks to this server's
// own API, same origin, with the key the user types (kept in the browser).
import { readFileSync } from 'node:fs';
import type { FastifyBaseLogger } from 'fastify';
import type { RootApp } from './openapi.ts';

/** src/http and dist/http both sit two folders below the package root. */
const ROOT = new URL('../../playground/', import.meta.url);

const FILES: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'console.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'console.js': 'text/javascript; charset=utf-8',
  'style.css': 'text/css; charset=utf-8',
};

/**
 * Scripts and styles from this server only; connections to this server only (the key never leaves
 * for another host); images also from data: and blob: (img2img previews, b64_json answers).
 */
const CSP = "default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

export function registerPlayground<L extends FastifyBaseLogger>(app: RootApp<L>): void {
  const files = new Map(Object.entries(FILES).map(([name, type]) => [name, { type, body: readFileSync(new URL(name, ROOT)) }]));
  const send = (name: string) => {
    const file = files.get(name)!;
    return { type: file.type, body: file.body };
  };
  const options = { schema: { hide: true } };
  // The console page is harmless without the admin key: every figure it shows comes from /admin/*.
  for (const [path, name] of [
    ['/', 'index.html'],
    ['/console', 'console.html'],
  ] as const)
    app.get(path, options, async (_request, reply) => {
      const { type, body } = send(name);
      return reply.type(type).header('content-security-policy', CSP).header('cache-control', 'no-cache').send(body);
    });
  app.get('/playground/:name', options, async (request, reply) => {
    const { name } = request.params as { name: string };
    if (!files.has(name)) return reply.callNotFound();
    const { type, body } = send(name);
    return reply.type(type).header('x-content-type-options', 'nosniff').header('cache-control', 'no-cache').send(body);
  });
}
