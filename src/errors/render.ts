import { z } from 'zod';
import { type ErrorFields, InferaError } from './index.ts';

export const wireErrorSchema = z.object({
  message: z.string(),
  type: z.string(),
  param: z.string().nullable().describe('The request field at fault, as the client wrote it (`messages[2].content`).'),
  code: z.string().nullable(),
});

/**
 * The single error body: OpenAI's `error` object (what the openai SDK reads) plus SiliconFlow's
 * `{code, message, data}` (what SiliconFlow-native apps read), in one JSON document.
 */
export const wireErrorBodySchema = z.object({
  code: z.number().int().describe("SiliconFlow's numeric code."),
  message: z.string(),
  data: z.null(),
  error: wireErrorSchema,
});
export type WireErrorBody = z.infer<typeof wireErrorBodySchema>;

/**
 * An error nobody anticipated: the client learns only that it happened (internal messages can carry
 * paths, SQL or library state); the original stays as `cause` for the server log, which the request id
 * in the response headers finds.
 */
export function toInferaError(error: unknown): InferaError {
  if (error instanceof InferaError) return error;
  return new InferaError({
    status: 500,
    message: 'Internal server error. The server log has the details under this response\'s x-request-id.',
    code: 'internal_error',
    cause: error,
  });
}

export function errorBody(error: ErrorFields): WireErrorBody {
  return {
    code: error.siliconflowCode,
    message: error.message,
    data: null,
    error: { message: error.message, type: error.type, param: error.param, code: error.code },
  };
}

/**
 * JSON.stringify(errorBody(error)), byte for byte (render.test.ts checks), without building the object
 * or escaping the message twice: every error answer is sent as this text. Remembered per message
 * (the other fields compared): the same refusal repeats (a wrong key, an unknown model), and its text
 * is then a map lookup. Bounded: a client varying its messages (random model ids) costs a clear per
 * ERROR_TEXTS_MAX of them.
 */
export function errorJson(error: ErrorFields): string {
  const known = errorTexts.get(error.message);
  if (
    known !== undefined &&
    known.siliconflowCode === error.siliconflowCode &&
    known.type === error.type &&
    known.param === error.param &&
    known.code === error.code
  )
    return known.json;
  const message = JSON.stringify(error.message);
  const json = `{"code":${JSON.stringify(error.siliconflowCode)},"message":${message},"data":null,"error":{"message":${message},"type":${JSON.stringify(error.type)},"param":${JSON.stringify(error.param)},"code":${JSON.stringify(error.code)}}}`;
  if (errorTexts.size >= ERROR_TEXTS_MAX) errorTexts.clear();
  errorTexts.set(error.message, { siliconflowCode: error.siliconflowCode, type: error.type, param: error.param, code: error.code, json });
  return json;
}

const ERROR_TEXTS_MAX = 512;
const errorTexts = new Map<string, Omit<ErrorFields, 'status' | 'message'> & { json: string }>();

export function errorHeaders(error: InferaError): Record<string, string> {
  const headers: Record<string, string> = { ...error.headers };
  if (error.retryAfter !== undefined) {
    headers['retry-after'] = String(Math.max(1, Math.ceil(error.retryAfter)));
    headers['retry-after-ms'] = String(Math.round(error.retryAfter * 1000));
  }
  return headers;
}

/** A mid-stream error frame: no `choices` key, so clients don't mistake it for a chunk. */
export function sseErrorFrame(error: InferaError): string {
  return `data: ${JSON.stringify({ error: errorBody(error).error })}\n\n`;
}
