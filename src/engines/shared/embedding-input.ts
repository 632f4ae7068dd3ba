// The checks every embedding engine applies to its inputs before it runs, so that a direct engine call
// (batch, bench, test) refuses the same inputs with the same 400s as the serving path does — and so that
// an engine that counts tokens itself (`takesText`: serving sends text, not tokens, and saves a round
// trip to the engine process) answers exactly what serving's own tokenize-and-check would have.
import { badRequest } from '../../errors/index.ts';
import type { EmbedCallOptions, EmbeddingInput } from '../../spec/index.ts';

export interface EmbeddingInputLimits {
  name: string;
  /** Token ids of token-array inputs must be below it; undefined when the engine cannot tell. */
  vocabularySize?: number;
  maxInputTokens: number;
}

/** How a 400 names input `index`: `input` for a request's single (non-array) input, else `input[3]`. */
export const inputParam = (index: number, single = false): string => (single ? 'input' : `input[${index}]`);

export const inputTooLong = (param: string, tokens: number, limits: Pick<EmbeddingInputLimits, 'name' | 'maxInputTokens'>) =>
  badRequest(
    `${param}: ${tokens} tokens is more than model '${limits.name}' takes (${limits.maxInputTokens} per input). Shorten or split it.`,
    param,
    'context_length_exceeded',
  );

export const overTokenCap = (tokens: string, cap: number) =>
  badRequest(`input: ${tokens} tokens in one request is more than this server takes (at most ${cap} summed over all inputs); split the request.`, 'input', 'too_many_tokens');

/** The input's token ids (text tokenized with `tokenize`): not empty, inside the vocabulary, within the limit. */
export function checkedInputTokens(
  input: EmbeddingInput,
  index: number,
  tokenize: (text: string) => number[],
  limits: EmbeddingInputLimits,
  single = false,
): number[] {
  const param = inputParam(index, single);
  const tokens = 'text' in input ? tokenize(input.text) : input.tokens;
  if (tokens.length === 0) throw badRequest('Input must not be empty.', param);
  const vocabularySize = limits.vocabularySize;
  if (!('text' in input) && vocabularySize !== undefined)
    for (const token of tokens)
      if (!Number.isInteger(token) || token < 0 || token >= vocabularySize)
        throw badRequest(`${param}: token id ${token} is outside this model's vocabulary (0..${vocabularySize - 1}).`, param);
  if (tokens.length > limits.maxInputTokens) throw inputTooLong(param, tokens.length, limits);
  return tokens;
}

/**
 * Every input of one call checked as above, in order, and — when serving passed the request's cap
 * (`call.request`) — the running total of text tokens against it, as serving's tokenizeInputs counts it.
 */
export function checkedCallTokens(
  call: Pick<EmbedCallOptions, 'inputs' | 'request'>,
  tokenize: (text: string) => number[],
  limits: EmbeddingInputLimits,
): number[][] {
  let total = 0;
  return call.inputs.map((input, index) => {
    const tokens = checkedInputTokens(input, index, tokenize, limits, call.request?.single);
    total += tokens.length;
    if (call.request && total > call.request.maxTokens) throw overTokenCap(String(total), call.request.maxTokens);
    return tokens;
  });
}
