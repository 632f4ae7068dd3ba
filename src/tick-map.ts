// Keeps one of process.nextTick's tick objects for the life of the process, so that the hidden class
// (map) every tick object is built with is never collected. Node 20's nextTick builds each tick as an
// object literal with computed keys ({ [async_id_symbol], [trigger_async_id_symbol], callback, args });
// V8 takes that literal's maps from a cache it holds weakly. A full GC at a moment when no tick is
// queued (any idle server, sooner or later) drops them, the next tick gets new maps, nextTick's
// feedback turns megamorphic, and from then on every tick is built in the runtime's slow path
// (Runtime_DefineKeyedOwnPropertyInLiteral, map migrations): ~40k instructions per HTTP request out
// of ~134k on GET /v1/models, a bare node:http server after two idle GCs included (valgrind callgrind,
// docs/BENCHMARKS.md "HTTP path: ... (http7)"). Import this first, before a GC can run.
import { executionAsyncResource } from 'node:async_hooks';

const pinned: { tick?: object } = {};
// Inside a tick's callback the current async resource is the tick object itself.
process.nextTick(() => {
  pinned.tick = executionAsyncResource();
});

/** The tick object kept (tests check that it is one). */
export function pinnedTick(): object | undefined {
  return pinned.tick;
}
