// The check every embedding engine applies to one input before it runs, so that a direct engine call
// (batch, bench, test) refuses the same inputs with the same 400s as the serving path does.
import { badRequest } from '../../errors/index.ts';
import type { EmbeddingInput } from '../../spec/index.ts';

export interface EmbeddingInputLimits {
  name: string;
  /** Token ids of token-array inputs must be below it; undefined when the engine cannot tell. */
  vocabularySize: number | undefined;
  maxInputTokens: number;
}

/** The input's token ids (text tokenized with `tokenize`): not empty, inside the vocabulary, within the limit. */
export function checkedInputTokens(
  input: EmbeddingInput,
  index: number,
  tokenize: (text: string) => number[],
  limits: EmbeddingInputLimits,
): number[] {
  const param = `input[${index}]`;
  const tokens = 'text' in input ? tokenize(input.text) : input.tokens;
  if (tokens.length === 0) throw badRequest('Input must not be empty.', param);
  const vocabularySize = limits.vocabularySize;
  if (!('text' in input) && vocabularySize !== undefined)
    for (const token of tokens)
      if (!Number.isInteger(token) || token < 0 || token >= vocabularySize)
        throw badRequest(`Token id ${token} is outside this model's vocabulary (0..${vocabularySize - 1}).`, param);
  if (tokens.length > limits.maxInputTokens)
    throw badRequest(
      `Input ${index} has ${tokens.length} tokens; model '${limits.name}' takes at most ${limits.maxInputTokens}.`,
      param,
      'context_length_exceeded',
    );
  return tokens;
}
