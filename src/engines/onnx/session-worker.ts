// The worker side of OnnxWorker (sessions.ts): owns ONNX Runtime sessions and runs them on this thread.
// Messages carry plain {type, data, dims} tensors; result buffers are transferred, not copied.
import { parentPort } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import type { WorkerReply, WorkerRequest, WireTensor } from './sessions.ts';

const sessions = new Map<number, ort.InferenceSession>();
const port = parentPort!;

const toTensor = (wire: WireTensor) => new ort.Tensor(wire.type as 'float32', wire.data as Float32Array, wire.dims);

async function handle(request: WorkerRequest): Promise<{ reply: WorkerReply; transfer: ArrayBuffer[] }> {
  switch (request.kind) {
    case 'create': {
      const session = await ort.InferenceSession.create(request.path, request.options);
      sessions.set(request.session, session);
      const meta = (values: readonly ort.InferenceSession.ValueMetadata[]) =>
        values.map((v) => (v.isTensor ? { name: v.name, type: v.type as string, shape: [...v.shape] } : { name: v.name, type: 'unknown', shape: [] }));
      return { reply: { id: request.id, ok: true, inputs: meta(session.inputMetadata), outputs: meta(session.outputMetadata) }, transfer: [] };
    }
    case 'run': {
      const session = sessions.get(request.session);
      if (!session) throw new Error('onnx worker: session was released');
      const feeds = Object.fromEntries(Object.entries(request.feeds).map(([name, wire]) => [name, toTensor(wire)]));
      const results = request.fetches ? await session.run(feeds, request.fetches) : await session.run(feeds);
      const tensors: Record<string, WireTensor> = {};
      const transfer: ArrayBuffer[] = [];
      for (const [name, tensor] of Object.entries(results)) {
        const data = tensor.data as WireTensor['data'];
        // A tensor may view a larger native buffer: copy so the transfer moves exactly its bytes.
        const own = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength ? data : data.slice();
        tensors[name] = { type: tensor.type, data: own, dims: [...tensor.dims] };
        transfer.push(own.buffer as ArrayBuffer);
      }
      return { reply: { id: request.id, ok: true, tensors }, transfer };
    }
    case 'release': {
      await sessions.get(request.session)?.release();
      sessions.delete(request.session);
      return { reply: { id: request.id, ok: true }, transfer: [] };
    }
  }
}

port.on('message', (request: WorkerRequest) => {
  handle(request).then(
    ({ reply, transfer }) => port.postMessage(reply, transfer),
    (error: unknown) => port.postMessage({ id: request.id, ok: false, error: error instanceof Error ? error.message : String(error) }),
  );
});
