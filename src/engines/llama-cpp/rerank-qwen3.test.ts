// The Qwen3-Reranker suite (rerank-qwen3-suite.ts) on Infera's own llama.cpp encoder (ffi/encoder.ts), the engine's default.
import { defineQwen3RerankSuite } from './rerank-qwen3-suite.ts';

defineQwen3RerankSuite('ffi');
