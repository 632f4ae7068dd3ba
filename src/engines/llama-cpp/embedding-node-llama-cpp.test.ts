// The embedding suite (embedding-suite.ts) on node-llama-cpp's embedding contexts (llamaCpp.runner: node-llama-cpp).
import { defineEmbeddingSuite } from './embedding-suite.ts';

defineEmbeddingSuite('node-llama-cpp');
