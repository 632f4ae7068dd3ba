// Entry of ONNX Runtime worker threads when Infera runs from its TypeScript sources (tests,
// benchmarks under tsx); the compiled build starts session-worker.js directly. Workers do not
// inherit the tsx loader the main thread registered, so this plain-JS file registers it and then
// loads the TypeScript worker named in workerData.
import { workerData } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

register();
await import(workerData.entry);
