// The rerank suite (rerank-suite.ts) on Infera's own llama.cpp encoder (ffi/encoder.ts), the engine's default.
import { defineRerankSuite } from './rerank-suite.ts';

defineRerankSuite('ffi');
