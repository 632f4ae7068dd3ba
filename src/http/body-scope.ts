// Fastify 5.6's body parser binds its completion callback with `AsyncResource#bind`, which on Node 20
// wraps an `asyncResource` getter and setter in `deprecate()` (DEP0172) for every request body; each
// wrapper gets its prototype set to a fresh function. Measured (autocannon, 10 connections, server CPU
// from /proc): a bare node:http JSON POST costs 27 µs per request, with `new AsyncResource` alone
// 30 µs, with `resource.bind(done)` 80 µs; Fastify's own POST cost 77 µs against 23 µs for a GET. The
// same scope is kept here by calling `runInAsyncScope` directly, as fastify#7012 (merged upstream after
// 5.6.2) does: the parse result reaches the handler in the request's async context (AsyncLocalStorage,
// OpenTelemetry) exactly as before. Remove when fastify is upgraded past it.
import { AsyncResource } from 'node:async_hooks';
import { createRequire } from 'node:module';
import type { FastifyReply, FastifyRequest } from 'fastify';

interface Parser {
  asString: boolean;
  asBuffer: boolean;
}
type Handler = (request: FastifyRequest, reply: FastifyReply) => void;
type Done = (error: unknown, body: unknown) => void;
interface ContentTypeParserClass {
  prototype: {
    run(this: ContentTypeParserLike, contentType: string, handler: Handler, request: FastifyRequest, reply: FastifyReply): void;
  };
}
interface ContentTypeParserLike {
  getParser(contentType: string): Parser | undefined;
}
type Internal = Record<symbol, unknown>;

/** The fastify release this was measured on and checked against; any other keeps fastify's own code. */
const PATCHED_VERSION = '5.6.2';

let installed: boolean | undefined;

/** Installs the cheaper scope binding once per process; false where the fastify release differs. */
export function installBodyScope(): boolean {
  if (installed !== undefined) return installed;
  installed = false;
  const require = createRequire(import.meta.url);
  const { version } = require('fastify/package.json') as { version: string };
  if (version !== PATCHED_VERSION) return false;
  const ContentTypeParser = require('fastify/lib/content-type-parser.js') as ContentTypeParserClass & Internal;
  const symbols = require('fastify/lib/symbols.js') as Record<string, symbol>;
  const { kTestInternals, kRouteContext, kReplyIsError } = symbols;
  const rawBody = (ContentTypeParser[kTestInternals!] as { rawBody?: unknown } | undefined)?.rawBody as
    | ((request: FastifyRequest, reply: FastifyReply, options: unknown, parser: Parser, done: Done) => void)
    | undefined;
  if (!rawBody || !kRouteContext || !kReplyIsError) return false;
  const original = ContentTypeParser.prototype.run;
  ContentTypeParser.prototype.run = function run(contentType, handler, request, reply) {
    const parser = this.getParser(contentType);
    // Streamed parsers and unknown types (415, or the 404 route) take fastify's own path.
    if (parser === undefined || !(parser.asString || parser.asBuffer)) return original.call(this, contentType, handler, request, reply);
    const resource = new AsyncResource('content-type-parser:run');
    const onDone = (error: unknown, body: unknown) => {
      resource.emitDestroy();
      if (error != null) {
        // As fastify: the client may still be sending.
        reply.header('connection', 'close');
        (reply as unknown as Internal)[kReplyIsError] = true;
        reply.send(error);
        return;
      }
      request.body = body;
      handler(request, reply);
    };
    const options = ((reply as unknown as Internal)[kRouteContext] as { _parserOptions: unknown })._parserOptions;
    rawBody(request, reply, options, parser, (error, body) => resource.runInAsyncScope(onDone, null, error, body));
  };
  installed = true;
  return true;
}
