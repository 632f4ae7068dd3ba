// The chat suite (chat-suite.ts) on Infera's own llama.cpp runner (ffi/), the engine's default.
import { defineChatSuite } from './chat-suite.ts';

defineChatSuite('ffi');
