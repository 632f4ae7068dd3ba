// Entry of every ONNX Runtime worker thread. onnxruntime-node's session.run executes on the calling
// thread, so sessions live in workers to keep the server's event loop free while a model computes.
// Workers do not inherit the tsx loader the main thread registered, so this plain-JS file registers it
// and then loads the TypeScript worker named in workerData.
import { workerData } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

register();
await import(workerData.entry);
