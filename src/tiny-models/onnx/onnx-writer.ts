// A dependency-free writer for the subset of ONNX's protobuf schema (onnx.proto3) that small
// generated graphs need: ModelProto → GraphProto → nodes, initializers (raw_data), typed inputs/outputs.
// Pulling in protobufjs plus the full onnx.proto for ~10 message types would dwarf the models we write;
// field numbers below are the ones in onnx/onnx.proto (IR version 8, default-domain opset 17).

export type ElemType = 'float32' | 'int32' | 'int64' | 'float16';

const elemTypeCode: Record<ElemType, number> = { float32: 1, int32: 6, int64: 7, float16: 10 };

/** A dimension is a fixed size or a symbolic name (dynamic axis), as in exporters' dynamic_axes. */
export type Dim = number | string;

export interface ValueInfo {
  name: string;
  type: ElemType;
  /** Omit for a tensor of unknown rank. [] is a scalar. */
  shape?: Dim[];
}

export interface Initializer {
  name: string;
  type: 'float32' | 'int64' | 'int32';
  dims: number[];
  /** Inline data; omit when `external` says where the bytes are. */
  values?: ArrayLike<number> | bigint[];
  /**
   * Raw little-endian bytes in a side file next to the model (ONNX external data), for models over
   * protobuf's 2 GB limit — as optimum writes `model.onnx_data` for full-size UNets.
   */
  external?: { location: string; offset: number; length: number };
}

export type AttributeValue = number | string | number[] | { floats: number[] } | { ints: number[] };

export interface NodeSpec {
  op: string;
  inputs: string[];
  outputs: string[];
  name?: string;
  attributes?: Record<string, AttributeValue>;
}

export interface GraphSpec {
  name: string;
  inputs: ValueInfo[];
  outputs: ValueInfo[];
  initializers: Initializer[];
  nodes: NodeSpec[];
}

class ProtoWriter {
  private chunks: Uint8Array[] = [];
  private length = 0;

  private push(bytes: Uint8Array): void {
    this.chunks.push(bytes);
    this.length += bytes.length;
  }

  private varint(value: bigint | number): void {
    // Negative int64s are encoded as 10-byte two's complement, as protobuf requires.
    let v = BigInt.asUintN(64, BigInt(value));
    const out: number[] = [];
    while (v >= 0x80n) {
      out.push(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    out.push(Number(v));
    this.push(Uint8Array.from(out));
  }

  private tag(field: number, wireType: number): void {
    this.varint((field << 3) | wireType);
  }

  int(field: number, value: number | bigint): this {
    this.tag(field, 0);
    this.varint(value);
    return this;
  }

  float(field: number, value: number): this {
    this.tag(field, 5);
    const bytes = new Uint8Array(4);
    new DataView(bytes.buffer).setFloat32(0, value, true);
    this.push(bytes);
    return this;
  }

  bytes(field: number, value: Uint8Array): this {
    this.tag(field, 2);
    this.varint(value.length);
    this.push(value);
    return this;
  }

  string(field: number, value: string): this {
    return this.bytes(field, new TextEncoder().encode(value));
  }

  message(field: number, build: (w: ProtoWriter) => void): this {
    const inner = new ProtoWriter();
    build(inner);
    return this.bytes(field, inner.finish());
  }

  finish(): Uint8Array {
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const chunk of this.chunks) {
      out.set(chunk, at);
      at += chunk.length;
    }
    return out;
  }
}

function rawData(init: Initializer): Uint8Array {
  if (!init.values) throw new Error(`onnx writer: initializer ${init.name} has neither values nor external data`);
  const count = init.values.length;
  if (init.type === 'float32') {
    const data = new Float32Array(count);
    for (let i = 0; i < count; i++) data[i] = Number(init.values[i]);
    return new Uint8Array(data.buffer);
  }
  if (init.type === 'int32') {
    const data = new Int32Array(count);
    for (let i = 0; i < count; i++) data[i] = Number(init.values[i]);
    return new Uint8Array(data.buffer);
  }
  const data = new BigInt64Array(count);
  for (let i = 0; i < count; i++) data[i] = BigInt(init.values[i] as number | bigint);
  return new Uint8Array(data.buffer);
}

function writeValueInfo(w: ProtoWriter, info: ValueInfo): void {
  w.string(1, info.name); // ValueInfoProto.name
  w.message(2, (type) =>
    // TypeProto.tensor_type
    type.message(1, (tensor) => {
      tensor.int(1, elemTypeCode[info.type]);
      if (info.shape)
        tensor.message(2, (shape) => {
          for (const dim of info.shape!)
            shape.message(1, (d) => (typeof dim === 'number' ? d.int(1, dim) : d.string(2, dim)));
        });
    }),
  );
}

function writeAttribute(w: ProtoWriter, name: string, value: AttributeValue): void {
  // AttributeProto: name=1 f=2 i=3 s=4 floats=7 ints=8 type=20 (FLOAT=1 INT=2 STRING=3 FLOATS=6 INTS=7)
  w.string(1, name);
  if (typeof value === 'string') w.string(4, value).int(20, 3);
  else if (typeof value === 'number') {
    if (Number.isInteger(value)) w.int(3, value).int(20, 2);
    else w.float(2, value).int(20, 1);
  } else if (Array.isArray(value)) {
    for (const v of value) w.int(8, v);
    w.int(20, 7);
  } else if ('floats' in value) {
    for (const v of value.floats) w.float(7, v);
    w.int(20, 6);
  } else {
    for (const v of value.ints) w.int(8, v);
    w.int(20, 7);
  }
}

/** Serialises a graph as an ONNX model file (bytes are a pure function of the spec). */
export function writeOnnxModel(graph: GraphSpec, producer = 'infera-tiny-models'): Uint8Array {
  const model = new ProtoWriter();
  model.int(1, 8); // ir_version
  model.string(2, producer); // producer_name
  model.message(7, (g) => {
    for (const [index, node] of graph.nodes.entries())
      g.message(1, (n) => {
        for (const input of node.inputs) n.string(1, input);
        for (const output of node.outputs) n.string(2, output);
        n.string(3, node.name ?? `${node.op}_${index}`);
        n.string(4, node.op);
        for (const [name, value] of Object.entries(node.attributes ?? {}))
          n.message(5, (a) => writeAttribute(a, name, value));
      });
    g.string(2, graph.name);
    for (const init of graph.initializers)
      g.message(5, (t) => {
        for (const d of init.dims) t.int(1, d);
        t.int(2, elemTypeCode[init.type]);
        t.string(8, init.name);
        if (init.external) {
          // external_data (13) key/value entries, data_location (14) = EXTERNAL
          for (const [key, value] of Object.entries(init.external))
            t.message(13, (entry) => entry.string(1, key).string(2, String(value)));
          t.int(14, 1);
        } else t.bytes(9, rawData(init));
      });
    for (const input of graph.inputs) g.message(11, (v) => writeValueInfo(v, input));
    for (const output of graph.outputs) g.message(12, (v) => writeValueInfo(v, output));
  });
  model.message(8, (o) => o.string(1, '').int(2, 17)); // opset_import: default domain, opset 17
  return model.finish();
}
