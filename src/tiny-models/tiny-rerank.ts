// The tiny reranker: BERT with the cls / cls.output head that llama.cpp's rank pooling reads.
import { encodeBert, randomBertWeights } from './bert.ts';
import { GgmlType } from './gguf-writer.ts';

export function encodeTinyReranker(): Buffer {
  return encodeBert({
    config: {
      name: 'infera-tiny-bert-rerank',
      hidden: 128,
      layers: 2,
      heads: 4,
      feedForward: 256,
      contextLength: 512,
      reranker: true,
    },
    weights: randomBertWeights(202),
    matrixType: GgmlType.F32,
  });
}
