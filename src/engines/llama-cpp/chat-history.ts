// OpenAI-shaped messages → node-llama-cpp's ChatHistoryItem[]. node-llama-cpp keeps a whole assistant
// turn (thought, text, tool calls and their results, the text after them) in ONE model item, and the
// chat wrapper renders it with the model's own template; so an assistant message, the tool messages
// answering it and the assistant message that follows are folded into one item. A last assistant
// message with `prefix` stays the open model item, which LlamaChat continues (prefix completion).
import type { ChatHistoryItem, ChatModelFunctionCall, ChatModelResponse } from 'node-llama-cpp';
import { badRequest } from '../../errors/index.ts';
import type { ChatMessage } from '../../spec/chat.ts';

export function toLlamaChatHistory(messages: ChatMessage[]): ChatHistoryItem[] {
  if (messages.length === 0) throw badRequest('messages must contain at least one message', 'messages');
  const history: ChatHistoryItem[] = [];
  /** Tool calls of the current assistant turn still waiting for their tool message, by id. */
  const pending: { call: ChatModelFunctionCall; id: string; at: string }[] = [];
  let turn: ChatModelResponse | undefined;

  const requireAnswered = () => {
    const open = pending[0];
    if (open)
      throw badRequest(
        `The assistant tool call '${open.id}' has no tool message answering it; every tool_call_id needs a tool message before the next turn`,
        open.at,
      );
  };

  messages.forEach((message, index) => {
    const at = `messages[${index}]`;
    switch (message.role) {
      case 'system':
        requireAnswered();
        turn = undefined;
        history.push({ type: 'system', text: message.content });
        return;
      case 'user': {
        requireAnswered();
        turn = undefined;
        history.push({ type: 'user', text: userText(message.content, at) });
        return;
      }
      case 'assistant': {
        // Text after tool results continues the same model turn (that is how the template renders it).
        const continuing = turn !== undefined && pending.length === 0 && turn.response.at(-1) !== undefined &&
          typeof turn.response.at(-1) === 'object' && (turn.response.at(-1) as { type: string }).type === 'functionCall';
        requireAnswered();
        const response: ChatModelResponse['response'] = continuing ? turn!.response : [];
        if (message.reasoning) response.push({ type: 'segment', segmentType: 'thought', text: message.reasoning, ended: true });
        if (message.content) response.push(message.content);
        (message.toolCalls ?? []).forEach((toolCall, callIndex) => {
          const call: ChatModelFunctionCall = {
            type: 'functionCall',
            name: toolCall.name,
            params: parseArguments(toolCall.arguments, `${at}.tool_calls[${callIndex}].function.arguments`),
            result: undefined,
            startsNewChunk: callIndex === 0,
          };
          response.push(call);
          pending.push({ call, id: toolCall.id, at: `${at}.tool_calls[${callIndex}]` });
        });
        if (!continuing) {
          turn = { type: 'model', response };
          history.push(turn);
        }
        return;
      }
      case 'tool': {
        let slot = 0;
        if (message.toolCallId !== undefined) {
          slot = pending.findIndex((entry) => entry.id === message.toolCallId);
          if (slot < 0)
            throw badRequest(
              `No preceding assistant tool call with the id '${message.toolCallId}' is waiting for a result`,
              `${at}.tool_call_id`,
            );
        }
        const entry = pending[slot];
        if (!entry) throw badRequest('A tool message must follow an assistant message with tool_calls', at);
        entry.call.result = message.content;
        pending.splice(slot, 1);
        return;
      }
    }
  });
  requireAnswered();
  // A trailing assistant message is a finished turn unless it is a prefix to continue: node-llama-cpp
  // continues whatever model item ends the history, so a new turn needs its own (empty) item.
  const last = messages.at(-1)!;
  if (last.role === 'assistant' && last.prefix !== true) history.push({ type: 'model', response: [] });
  return history;
}

function userText(content: Extract<ChatMessage, { role: 'user' }>['content'], at: string): string {
  if (typeof content === 'string') return content;
  return content
    .map((part, partIndex) => {
      if (part.type === 'text') return part.text;
      throw badRequest(
        `This model reads text only; content part type '${part.type === 'image' ? 'image_url' : 'video_url'}' is not supported`,
        `${at}.content[${partIndex}]`,
      );
    })
    .join('\n');
}

function parseArguments(text: string, param: string): unknown {
  if (text.trim() === '') return {};
  try {
    return JSON.parse(text);
  } catch {
    throw badRequest('Tool call arguments must be a JSON text', param);
  }
}
