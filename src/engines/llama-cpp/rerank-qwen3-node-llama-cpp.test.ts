// The Qwen3-Reranker suite (rerank-qwen3-suite.ts) on node-llama-cpp's ranking contexts (llamaCpp.runner: node-llama-cpp).
import { defineQwen3RerankSuite } from './rerank-qwen3-suite.ts';

defineQwen3RerankSuite('node-llama-cpp');
