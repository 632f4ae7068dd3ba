// The rerank suite (rerank-suite.ts) on node-llama-cpp's ranking contexts (llamaCpp.runner: node-llama-cpp).
import { defineRerankSuite } from './rerank-suite.ts';

defineRerankSuite('node-llama-cpp');
