// The dialect table: one entry per `upstream.dialect` value.
import type { DialectName } from '../config.ts';
import { infera } from './infera.ts';
import { infinity } from './infinity.ts';
import { llamaServer } from './llama-server.ts';
import { ollama } from './ollama.ts';
import { openai } from './openai.ts';
import { siliconflow } from './siliconflow.ts';
import { tei } from './tei.ts';
import type { Dialect } from './types.ts';
import { sglang, vllm } from './vllm.ts';

export const DIALECT_TABLE: Record<DialectName, Dialect> = {
  openai,
  vllm,
  sglang,
  ollama,
  'llama-server': llamaServer,
  tei,
  infinity,
  siliconflow,
  infera,
};

export type { Dialect } from './types.ts';
