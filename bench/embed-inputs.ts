// The 12-word sentences the embedding benches send, in one place, so that two benches can be run on the
// same inputs. They differ in length on bert-384x12-embed's WordPiece vocabulary: vs-llama-server's
// (drawnSentences: words drawn by an LCG from 46; onnx-path sends them too) are 14–39
// tokens, 22 on average; embed-path's and encoder-lone's (a counter, then words of a sea story) 23–40,
// 33.5 on average — [CLS]/[SEP] included.
export type EmbedInputs = 'path' | 'vs';

/**
 * vs-llama-server's sentences: each call draws `words` words from one LCG seeded 12345, the seed running on
 * across calls whatever their length (vs-llama-server asks 6, 12 and 24 words of one drawer).
 */
export function drawnSentences(): (words: number) => string {
  const WORDS =
    'the a of to and in is it that for on with as by at from cat dog fish bird tree car house sun moon water fire earth wind red blue green apple paris london river mountain ocean city music book code data model query search rank vector hello world'.split(
      ' ',
    );
  let seed = 12345;
  return (words) => {
    const out: string[] = [];
    for (let i = 0; i < words; i++) {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      out.push(WORDS[seed % WORDS.length]!);
    }
    return out.join(' ');
  };
}

/** A generator of sentences of `words` words: 'path' (embed-path's, the default there) or 'vs' (vs-llama-server's, from the same seed). */
export function sentences(kind: EmbedInputs, words: number): () => string {
  if (kind === 'vs') {
    const draw = drawnSentences();
    return () => draw(words);
  }
  const VOCAB = 'the quick brown fox jumps over lazy dog sea light keeper night storm ship rock wave harbour bell'.split(' ');
  let counter = 0;
  return () => `${++counter} ${Array.from({ length: words - 1 }, (_, i) => VOCAB[(counter * 7 + i * 3) % VOCAB.length]).join(' ')}`;
}
