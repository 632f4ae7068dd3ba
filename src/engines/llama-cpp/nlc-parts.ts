// node-llama-cpp's pure-JavaScript parts (LlamaText, the chat wrappers, JSON schema → GBNF, the GGUF
// reader), imported by file path. The package exports only its root index, and importing that loads
// the whole package (bindings, downloader, CLI helpers: ~0.45–0.9 s of CPU and ~30–40 MiB); the FFI
// chat engine needs a few modules of it (LlamaText ~7 ms, one chat wrapper ~45 ms). A file path is not
// a bare specifier, so the package's "exports" do not apply; the module instances are the very ones the
// root index loads (same URL), so `instanceof` holds when both are loaded. The layout is node-llama-cpp
// 3.21.1's (the version is pinned exactly; internals.test.ts checks each path here).
import type * as Nlc from 'node-llama-cpp';

/** node-llama-cpp's dist/ folder. */
export const NLC_DIST = new URL('.', import.meta.resolve('node-llama-cpp'));

/** Imports one module of node-llama-cpp's dist/ by its path there. */
export function nlcModule<T>(path: string): Promise<T> {
  return import(new URL(path, NLC_DIST).href) as Promise<T>;
}

export type LlamaTextModule = Pick<typeof Nlc, 'LlamaText' | 'SpecialTokensText' | 'isLlamaText'>;
export type ResolveChatWrapperModule = Pick<typeof Nlc, 'resolveChatWrapper' | 'chatWrappers'>;
export type GbnfJsonModule = { getGbnfGrammarForGbnfJsonSchema(schema: Nlc.GbnfJsonSchema): string };
export type ReadGgufModule = Pick<typeof Nlc, 'readGgufFileInfo'>;

/** Every path this file and its users import, for internals.test.ts. */
export const NLC_PATHS = {
  llamaText: 'utils/LlamaText.js',
  qwen: 'chatWrappers/QwenChatWrapper.js',
  resolveChatWrapper: 'chatWrappers/utils/resolveChatWrapper.js',
  gbnfJson: 'utils/gbnfJson/getGbnfGrammarForGbnfJsonSchema.js',
  readGguf: 'gguf/readGgufFileInfo.js',
  /** llama.cpp's JSON grammar as node-llama-cpp ships it (LlamaGrammar.getFor('json') reads this file). */
  jsonGrammar: '../llama/grammars/json.gbnf',
} as const;

/** A specialized chat wrapper's module (chatWrappers/<ClassName>.js). */
export function chatWrapperPath(className: string): string {
  if (!/^[A-Za-z0-9_]+ChatWrapper$/.test(className)) throw new Error(`not a chat wrapper class name: ${className}`);
  return `chatWrappers/${className}.js`;
}
