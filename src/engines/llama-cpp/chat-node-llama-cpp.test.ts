// The chat suite (chat-suite.ts) on node-llama-cpp's LlamaChat, where the FFI runner cannot serve a model.
import { defineChatSuite } from './chat-suite.ts';

defineChatSuite('node-llama-cpp');
