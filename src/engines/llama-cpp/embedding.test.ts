// The embedding suite (embedding-suite.ts) on Infera's own llama.cpp encoder (ffi/encoder.ts), the engine's default.
import { defineEmbeddingSuite } from './embedding-suite.ts';

defineEmbeddingSuite('ffi');
