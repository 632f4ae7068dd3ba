// The generated BERT export must be spelled the way torch.onnx writes transformers' BertModel, because
// that spelling is what ONNX Runtime's transformer optimizer (onnxruntime.transformers.optimizer, which
// optimum's ORTOptimizer runs) matches to fuse each layer into one com.microsoft Attention node
// (fusion_attention.py: the qk path Softmax ← Add ← Div ← MatMul, the mask path Mul ← Sub ← Cast ←
// Unsqueeze ← Unsqueeze). With the graph's own spelling (mask cast and scaled before one Unsqueeze, scores
// multiplied by 1/sqrt(d)) it fused none: docs/BENCHMARKS.md, branch onnx5.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bertOnnxGraph, onnxBertBuild } from './bert-onnx.ts';
import type { GraphSpec, NodeSpec } from './onnx-writer.ts';

function producers(graph: GraphSpec): Map<string, NodeSpec> {
  const byOutput = new Map<string, NodeSpec>();
  for (const node of graph.nodes) for (const output of node.outputs) byOutput.set(output, node);
  return byOutput;
}

const initializerValue = (graph: GraphSpec, name: string): number[] | undefined => {
  const found = graph.initializers.find((i) => i.name === name);
  return found ? Array.from(found.values as ArrayLike<number>) : undefined;
};

for (const kind of ['tiny-embed', 'tiny-rerank', 'bench-embed'] as const)
  test(`${kind}: every layer's attention is spelled as transformers' BertModel exports it`, () => {
    const build = onnxBertBuild(kind);
    const graph = bertOnnxGraph(build);
    const byOutput = producers(graph);
    const parent = (node: NodeSpec, input: number) => byOutput.get(node.inputs[input]!);
    const headSize = build.config.hidden / build.config.heads;
    const softmaxes = graph.nodes.filter((n) => n.op === 'Softmax');
    assert.equal(softmaxes.length, build.config.layers);
    for (const softmax of softmaxes) {
      // scores = MatMul(q, k) / sqrt(head size) + mask bias
      const add = parent(softmax, 0)!;
      assert.equal(add.op, 'Add');
      const div = parent(add, 0)!;
      assert.equal(div.op, 'Div', 'scores divided by sqrt(head size), as BertSelfAttention does');
      assert.equal(parent(div, 0)?.op, 'MatMul');
      assert.deepEqual(initializerValue(graph, div.inputs[1]!), [Math.sqrt(headSize)]);
      // mask bias = (1 - float(mask[:, None, None, :])) * min
      const mul = parent(add, 1)!;
      assert.equal(mul.op, 'Mul');
      assert.ok(initializerValue(graph, mul.inputs[1]!)![0]! < 0, 'the masked positions get a large negative score');
      const sub = parent(mul, 0)!;
      assert.equal(sub.op, 'Sub');
      assert.deepEqual(initializerValue(graph, sub.inputs[0]!), [1]);
      const cast = parent(sub, 1)!;
      assert.equal(cast.op, 'Cast');
      const unsqueeze2 = parent(cast, 0)!;
      const unsqueeze1 = parent(unsqueeze2, 0)!;
      assert.deepEqual([unsqueeze1.op, unsqueeze2.op], ['Unsqueeze', 'Unsqueeze']);
      assert.deepEqual(initializerValue(graph, unsqueeze1.inputs[1]!), [1]);
      assert.deepEqual(initializerValue(graph, unsqueeze2.inputs[1]!), [2]);
      assert.equal(unsqueeze1.inputs[0], 'attention_mask');
    }
  });
