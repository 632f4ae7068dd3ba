// The scripted chat model: a one-layer qwen3 whose weights are written by hand so that greedy decoding
// (and sampling at any usual temperature) follows fixed scripts chosen by trigger words in the prompt.
// How the weights work is described in README.md next to this file; the numbers here are that recipe.
import { buildChatVocab, chatTokenizerMetadata, type ChatVocab } from './chat-vocab.ts';
import { TokenType } from './byte-bpe.ts';
import { GgmlType, gguf } from './gguf-writer.ts';
import { encodeQwen3, type Qwen3Config, type TensorSpec } from './qwen3.ts';
import { QWEN3_CHAT_TEMPLATE } from './random-chat.ts';

/** Modes, highest priority first: the highest-priority trigger present anywhere in the context wins. */
export const TINY_CHAT_MODES = ['toolResult', 'weather', 'json', 'count', 'default'] as const;
export type TinyChatMode = (typeof TINY_CHAT_MODES)[number];

/** Prompt words (whole BPE tokens, with or without a leading space) that select each mode. */
export const TINY_CHAT_TRIGGERS: Record<Exclude<TinyChatMode, 'default'>, readonly string[]> = {
  toolResult: ['<tool_response>'],
  weather: ['weather', 'Weather'],
  json: ['json', 'JSON', 'Json'],
  count: ['count', 'Count'],
};

const COUNT_WORDS = [' one', ' two', ' three', ' four', ' five', ' six', ' seven', ' eight', ' nine', ' ten'];

/**
 * Token-by-token scripts. Each string is one vocabulary token. Reasoning pieces carry the newlines that
 * QwenChatWrapper's thought prefix "<think>\n" and suffix "\n</think>" expect.
 */
const SCRIPT_TOKENS = {
  reasoning: {
    default: ['\nThe user wrote', ' to me.', ' I will answer', ' briefly.\n'],
    weather: ['\nThe user asks', ' about the weather.', ' I will call', ' get_weather.\n'],
    toolResult: ['\nThe tool returned', ' the weather.', ' I will report it.\n'],
    json: ['\nJSON was', ' requested.', ' I will write', ' an object.\n'],
    count: ['\nThe user wants', ' me to count.', ' I will count', ' forever.\n'],
  },
  answer: {
    default: ['Hello!', ' I am', ' a tiny', ' test model.'],
    toolResult: ['It is', ' sunny', ' in Paris.'],
    json: ['{"city": ', '"Paris"', ', "temperature": ', '21}'],
  },
  toolCall: ['<tool_call>', '\n{"name": "', 'get_weather', '", "arguments": ', '{"city": "Paris"}', '}\n', '</tool_call>'],
  count: COUNT_WORDS,
} as const;

/**
 * The fill-in-the-middle tokens of Qwen2.5-Coder (control tokens there too), carried only by the coder
 * variant: the plain chat model stays a model that cannot fill in the middle.
 */
export const FIM_TOKENS = { prefix: '<|fim_prefix|>', suffix: '<|fim_suffix|>', middle: '<|fim_middle|>' } as const;
/** What the coder variant writes after <|fim_middle|>, whatever the prefix and suffix, then the end token. */
const FIM_MIDDLE_TOKENS = ['    return', ' a + b'] as const;

/** The exact strings the scripted model produces; tests import these instead of repeating them. */
export const TINY_CHAT_SCRIPT = {
  /** Thought text of the default script, without the <think>/</think> tags and their newlines. */
  reasoning: SCRIPT_TOKENS.reasoning.default.join('').trim(),
  /** Thought text per mode (same convention). */
  reasoningByMode: Object.fromEntries(
    Object.entries(SCRIPT_TOKENS.reasoning).map(([mode, tokens]) => [mode, tokens.join('').trim()]),
  ) as Record<TinyChatMode, string>,
  /** Default answer (no trigger word), with or without thinking. */
  answer: SCRIPT_TOKENS.answer.default.join(''),
  /** The function the `weather` trigger calls, and its arguments. */
  toolName: 'get_weather',
  toolArguments: { city: 'Paris' } as const,
  /** Raw tool call text, as generated when no grammar constrains it (Qwen3's own format). */
  toolCall: SCRIPT_TOKENS.toolCall.join(''),
  /** Answer once a <tool_response> is in the prompt (wins over `weather`). */
  toolAnswer: SCRIPT_TOKENS.answer.toolResult.join(''),
  /** The `count` trigger cycles through these forever and never stops by itself. */
  countWords: COUNT_WORDS,
  /** Answer for the `json` trigger; under a JSON-schema grammar it matches the schema
   * {city: string, temperature: number} (in that order). */
  json: SCRIPT_TOKENS.answer.json.join(''),
  /** What follows "</think>" before the answer (Qwen3 style); with thinking disabled the prompt holds it. */
  afterThought: '\n\n',
  /** Raw text of the thinking part: "<think>" + "\n" + reasoning + "\n" + "</think>" + "\n\n". */
  thinkingPrefix: (mode: TinyChatMode = 'default') =>
    `<think>${SCRIPT_TOKENS.reasoning[mode].join('')}</think>\n\n`,
  /** The coder variant's middle (after <|fim_middle|>), followed by the end token. */
  fimMiddle: FIM_MIDDLE_TOKENS.join(''),
} as const;

const GRAMMAR_END = '\n\n\n\n';
const EOS = '<|im_end|>';
const GENERIC = Symbol('generic');
type Cur = string | typeof GENERIC;

// Logit each rule gives its next token while all other logits stay near 0. A primary choice wins
// outright; where a grammar masks it (node-llama-cpp's function-call and JSON-schema grammars) the
// strongest grammar-legal fallback wins instead: mode-specific fallbacks beat mode-independent ones.
const STRENGTH = { primary: 80, modeFallback: 50, fallback: 35 } as const;

interface Rule {
  cur: Cur;
  /** Omitted: the rule holds in every mode (weights read only the current token). */
  mode?: TinyChatMode;
  next: string;
  strength: keyof typeof STRENGTH;
}

function scriptRules(fim: boolean): Rule[] {
  const rules: Rule[] = [];
  const chain = (tokens: readonly string[], then: string) => {
    for (const [i, token] of tokens.entries()) rules.push({ cur: token, next: tokens[i + 1] ?? then, strength: 'primary' });
  };
  const jsonStart = SCRIPT_TOKENS.answer.json[0];
  // Any prompt ends after "<|im_start|>assistant\n", i.e. on an ordinary token: start thinking.
  rules.push({ cur: GENERIC, next: '<think>', strength: 'primary' });
  // node-llama-cpp forces "\n" after the function name and then applies the params grammar; a
  // JSON-schema grammar masks "<think>" right at the prompt end.
  rules.push({ cur: GENERIC, mode: 'weather', next: '{"city": "Paris"}', strength: 'modeFallback' });
  rules.push({ cur: GENERIC, next: jsonStart, strength: 'fallback' });
  for (const mode of TINY_CHAT_MODES) {
    const reasoning = SCRIPT_TOKENS.reasoning[mode];
    rules.push({ cur: '<think>', mode, next: reasoning[0]!, strength: 'primary' });
    chain(reasoning, '</think>');
  }
  rules.push({ cur: '</think>', next: '\n\n', strength: 'primary' });
  rules.push({ cur: '</think>', next: jsonStart, strength: 'fallback' });
  // "\n\n" follows "</think>", generated or (thinking disabled) already in the prompt: start the answer.
  const answerStart: Record<TinyChatMode, string> = {
    default: SCRIPT_TOKENS.answer.default[0],
    toolResult: SCRIPT_TOKENS.answer.toolResult[0],
    json: jsonStart,
    weather: SCRIPT_TOKENS.toolCall[0],
    count: COUNT_WORDS[0]!,
  };
  for (const mode of TINY_CHAT_MODES) rules.push({ cur: '\n\n', mode, next: answerStart[mode], strength: 'primary' });
  rules.push({ cur: '\n\n', next: jsonStart, strength: 'fallback' });
  chain(SCRIPT_TOKENS.answer.default, EOS);
  chain(SCRIPT_TOKENS.answer.toolResult, EOS);
  chain(SCRIPT_TOKENS.answer.json, EOS);
  // Grammars end with "\n\n\n\n" and mask the end token until then.
  rules.push({ cur: SCRIPT_TOKENS.answer.json.at(-1)!, next: GRAMMAR_END, strength: 'fallback' });
  chain(SCRIPT_TOKENS.toolCall, EOS);
  rules.push({ cur: '{"city": "Paris"}', next: GRAMMAR_END, strength: 'fallback' });
  rules.push({ cur: GRAMMAR_END, next: EOS, strength: 'primary' });
  chain(COUNT_WORDS, COUNT_WORDS[0]!);
  if (fim) {
    rules.push({ cur: FIM_TOKENS.middle, next: FIM_MIDDLE_TOKENS[0], strength: 'primary' });
    chain(FIM_MIDDLE_TOKENS, EOS);
  }
  const seen = new Set<string>();
  for (const rule of rules) {
    const key = `${String(rule.cur)}|${rule.mode ?? '*'}|${rule.strength}`;
    if (seen.has(key)) throw new Error(`two scripts continue ${JSON.stringify(rule.cur)} differently`);
    seen.add(key);
  }
  return rules;
}

/** Whole-string output tokens (never produced by tokenizing a prompt, since no merges lead to them). */
function outputTokens(): string[] {
  const all = [
    ...Object.values(SCRIPT_TOKENS.reasoning).flat(),
    ...Object.values(SCRIPT_TOKENS.answer).flat(),
    ...SCRIPT_TOKENS.toolCall.filter((t) => !t.startsWith('<')),
    ...COUNT_WORDS,
    GRAMMAR_END,
  ];
  return [...new Set(all)];
}

export function buildTinyChatVocab(fim = false): ChatVocab {
  const triggerWords = Object.values(TINY_CHAT_TRIGGERS)
    .flat()
    .filter((w) => !w.startsWith('<'));
  const chatVocab = buildChatVocab(triggerWords, outputTokens());
  // "get_weather" in tool definitions and calls must not trigger: "_weather" becomes its own token.
  chatVocab.vocab.addMerge('_', 'weather');
  // Appended last, so that every other token keeps the id it has in the plain model.
  if (fim) {
    for (const text of Object.values(FIM_TOKENS)) chatVocab.vocab.addToken(text, TokenType.CONTROL);
    for (const text of FIM_MIDDLE_TOKENS) chatVocab.vocab.addToken(text, TokenType.NORMAL);
  }
  return chatVocab;
}

const HEAD_DIM = 32;
/** Layer-1 attention score per trigger mode (only differences matter: 30 apart is e^-30 in softmax). */
const TRIGGER_SCORE: Record<Exclude<TinyChatMode, 'default'>, number> = { toolResult: 150, weather: 120, json: 90, count: 60 };
/** Layer-0 attention scores: any "<|im_end|>" outranks the "system" role token. */
const SYSTEM_SCORE = { imEnd: 80, system: 40 };
/** How hard a token inside the system message pushes its layer-1 key away from every trigger. */
const SYSTEM_SUPPRESSION = 10;
/** First RoPE pair whose rotation stays under 1e-3 rad over the whole context (see README). */
const FIRST_STILL_PAIR = 3;
const ROPE_FREQ_BASE = 1e38;
const CONTEXT_LENGTH = 8192;
/** FFN gate slope: a rule neuron sees +GATE/2 when it fires and at most -GATE/2 otherwise. */
const GATE = 40;

type TriggerMode = Exclude<TinyChatMode, 'default'>;

/**
 * The scripted chat model; `fim: true` writes the coder variant, which also carries Qwen2.5-Coder's FIM
 * tokens (named in the GGUF metadata as llama.cpp's converter does) and answers <|fim_middle|> with
 * TINY_CHAT_SCRIPT.fimMiddle.
 */
export function encodeTinyChatModel(options: { fim?: boolean } = {}): Buffer {
  const fim = options.fim ?? false;
  const chatVocab = buildTinyChatVocab(fim);
  const { vocab } = chatVocab;
  const rules = scriptRules(fim);
  const id = (t: string) => vocab.id(t);
  const triggerModes = Object.keys(TRIGGER_SCORE) as TriggerMode[];

  // Residual layout: [const | token features | system flag | modes | next-token slots].
  const triggerMode = new Map<number, TriggerMode>();
  for (const [mode, words] of Object.entries(TINY_CHAT_TRIGGERS) as [TriggerMode, string[]][]) {
    for (const word of words) {
      triggerMode.set(id(word), mode);
      if (!word.startsWith('<')) triggerMode.set(id(` ${word}`), mode);
    }
  }
  const curTokens = [...new Set(rules.map((r) => r.cur).filter((c): c is string => c !== GENERIC))];
  // Prompt-only features: every one of them acts as "generic" for the output rules.
  const promptFeatures = ['generic', 'role:system', 'marker:im_end', ...triggerModes.map((m) => `trigger:${m}`)];
  const features = [...promptFeatures, ...curTokens];
  const featureIndex = new Map(features.map((f, i) => [f, 1 + i]));
  const flagIndex = 1 + features.length;
  const modeIndex = new Map(TINY_CHAT_MODES.map((m, i) => [m, flagIndex + 1 + i]));
  const modeRules = rules.filter((r) => r.mode !== undefined);
  const slotTokens = [...new Set(modeRules.map((r) => r.next))];
  const slotBase = flagIndex + 1 + TINY_CHAT_MODES.length;
  const slotIndex = new Map(slotTokens.map((t, i) => [t, slotBase + i]));
  const hidden = Math.ceil((slotBase + slotTokens.length) / 32) * 32;

  const curFeatureByToken = new Map(curTokens.map((t) => [id(t), featureIndex.get(t)!]));
  const featureOfToken = (tokenId: number): number => {
    const mode = triggerMode.get(tokenId);
    if (mode) return featureIndex.get(`trigger:${mode}`)!;
    if (tokenId === id('system')) return featureIndex.get('role:system')!;
    return curFeatureByToken.get(tokenId) ?? featureIndex.get(tokenId === id(EOS) ? 'marker:im_end' : 'generic')!;
  };
  const genericFeatures = promptFeatures.map((f) => featureIndex.get(f)!);
  const featuresOfCur = (cur: Cur) => (cur === GENERIC ? genericFeatures : [featureIndex.get(cur)!]);
  const triggerOfFeature = (f: number) => {
    const name = features[f - 1]!;
    return name.startsWith('trigger:') ? (name.slice('trigger:'.length) as TriggerMode) : undefined;
  };

  const neurons: { feature: number; mode: number; slot: number; logit: number }[] = [];
  for (const rule of modeRules) {
    for (const feature of featuresOfCur(rule.cur)) {
      neurons.push({
        feature,
        mode: modeIndex.get(rule.mode!)!,
        slot: slotIndex.get(rule.next)!,
        logit: STRENGTH[rule.strength],
      });
    }
  }
  const feedForward = Math.ceil(neurons.length / 32) * 32;

  const config: Qwen3Config = {
    name: fim ? 'infera-tiny-qwen3-coder' : 'infera-tiny-qwen3-chat',
    vocabSize: vocab.size,
    hidden,
    layers: 2,
    heads: 1,
    headsKv: 1,
    headDim: HEAD_DIM,
    feedForward,
    contextLength: CONTEXT_LENGTH,
    ropeFreqBase: ROPE_FREQ_BASE,
    rmsEps: 1e-6,
  };

  // RMS-norm factors: an embedding is e_const + e_feature (2 ones); where predictions are read the
  // system flag is 0, so layer 1 sees the same 2 ones and its FFN and the output see 3 (plus the mode).
  const norm2 = Math.sqrt(hidden / 2);
  const norm3 = Math.sqrt(hidden / 3);
  const silu = (x: number) => x / (1 + Math.exp(-x));

  // Q and K live only in RoPE pairs that a 1e38 base leaves (almost) unrotated: scores ignore position.
  const stillDims: number[] = [];
  for (let pair = FIRST_STILL_PAIR; pair < HEAD_DIM / 2; pair++) stillDims.push(pair, pair + HEAD_DIM / 2);
  // After q_norm, q becomes q·sqrt(D)/|q|·w and k becomes sqrt(D)·k/|k|; scores are q·k/sqrt(D).
  // With w = |q|/sqrt(D) a key along dimension d scores exactly q[d].
  const queryFor = (scores: number[]) => {
    const q = new Float64Array(HEAD_DIM);
    for (const [i, score] of scores.entries()) q[stillDims[i]!] = score;
    return { q, normWeight: Math.hypot(...q) / Math.sqrt(HEAD_DIM) };
  };
  // Layer 0 marks "inside the first system message": attention finds "system" only while no
  // <|im_end|> has been seen yet, and only "system" carries a value.
  const layer0 = queryFor([SYSTEM_SCORE.imEnd, SYSTEM_SCORE.system, 0]);
  const layer0Key = (f: number) =>
    features[f - 1] === 'marker:im_end' ? stillDims[0]! : features[f - 1] === 'role:system' ? stillDims[1]! : stillDims[2]!;
  // Layer 1 finds the highest-priority trigger; its value is the mode.
  const layer1 = queryFor(triggerModes.map((m) => TRIGGER_SCORE[m]));
  const neutralKeyDim = stillDims[triggerModes.length]!;
  const qUnit = layer1.q.map((v) => v / Math.hypot(...layer1.q));

  const weights = (spec: TensorSpec): Float32Array => {
    const [cols, rows = 1] = spec.dims as [number, number?];
    const out = new Float32Array(cols * rows);
    const set = (row: number, col: number, value: number) => {
      out[row * cols + col] = value;
    };
    switch (spec.name) {
      case 'token_embd.weight':
        for (let t = 0; t < vocab.size; t++) {
          set(t, 0, 1);
          set(t, featureOfToken(t), 1);
        }
        break;
      case 'output_norm.weight':
      case 'blk.0.attn_norm.weight':
      case 'blk.0.ffn_norm.weight':
      case 'blk.0.attn_k_norm.weight':
      case 'blk.1.attn_norm.weight':
      case 'blk.1.ffn_norm.weight':
      case 'blk.1.attn_k_norm.weight':
        out.fill(1);
        break;
      case 'blk.0.attn_q_norm.weight':
        out.fill(layer0.normWeight);
        break;
      case 'blk.1.attn_q_norm.weight':
        out.fill(layer1.normWeight);
        break;
      case 'blk.0.attn_q.weight':
        for (let d = 0; d < HEAD_DIM; d++) set(d, 0, layer0.q[d]! / norm2);
        break;
      case 'blk.0.attn_k.weight':
        for (let f = 1; f <= features.length; f++) set(layer0Key(f), f, 1 / norm2);
        break;
      case 'blk.0.attn_v.weight':
        set(0, featureIndex.get('role:system')!, 1 / norm2);
        break;
      case 'blk.0.attn_output.weight':
        set(flagIndex, 0, 1);
        break;
      case 'blk.0.ffn_gate.weight':
      case 'blk.0.ffn_up.weight':
      case 'blk.0.ffn_down.weight':
        break;
      case 'blk.1.attn_q.weight':
        for (let d = 0; d < HEAD_DIM; d++) set(d, 0, layer1.q[d]! / norm2);
        break;
      case 'blk.1.attn_k.weight':
        for (let f = 1; f <= features.length; f++) {
          const trigger = triggerOfFeature(f);
          set(trigger ? stillDims[triggerModes.indexOf(trigger)]! : neutralKeyDim, f, 1 / norm2);
        }
        // Inside the system message the key turns against the query, so tool descriptions and Qwen's
        // tool instructions ("return a json object") never select a mode.
        for (let d = 0; d < HEAD_DIM; d++) set(d, flagIndex, (-SYSTEM_SUPPRESSION * qUnit[d]!) / norm2);
        break;
      case 'blk.1.attn_v.weight':
        // Value dims 0..4 are the mode one-hot; a non-trigger token votes for "default".
        for (let f = 1; f <= features.length; f++) {
          set(TINY_CHAT_MODES.indexOf(triggerOfFeature(f) ?? 'default'), f, 1 / norm2);
        }
        break;
      case 'blk.1.attn_output.weight':
        for (const [i, m] of TINY_CHAT_MODES.entries()) set(modeIndex.get(m)!, i, 1);
        break;
      case 'blk.1.ffn_gate.weight':
        // Fires (≈ GATE/2) only when both the token feature and the mode are on; otherwise ≤ -GATE/2.
        neurons.forEach((n, i) => {
          set(i, n.feature, GATE / norm3);
          set(i, n.mode, GATE / norm3);
          set(i, 0, (-1.5 * GATE) / norm3);
        });
        break;
      case 'blk.1.ffn_up.weight':
        for (let i = 0; i < neurons.length; i++) set(i, 0, 1 / norm3);
        break;
      case 'blk.1.ffn_down.weight':
        for (const [i, n] of neurons.entries()) set(n.slot, i, n.logit / STRENGTH.primary / silu(GATE / 2));
        break;
      case 'output.weight':
        for (const rule of rules) {
          const target = id(rule.next);
          if (rule.mode === undefined) {
            for (const f of featuresOfCur(rule.cur)) set(target, f, STRENGTH[rule.strength] / norm3);
          } else {
            set(target, slotIndex.get(rule.next)!, STRENGTH.primary / norm3);
          }
        }
        break;
      default:
        throw new Error(`unexpected tensor ${spec.name}`);
    }
    return out;
  };

  const tokenizer = chatTokenizerMetadata(chatVocab);
  if (fim) {
    tokenizer['tokenizer.ggml.fim_pre_token_id'] = gguf.u32(id(FIM_TOKENS.prefix));
    tokenizer['tokenizer.ggml.fim_suf_token_id'] = gguf.u32(id(FIM_TOKENS.suffix));
    tokenizer['tokenizer.ggml.fim_mid_token_id'] = gguf.u32(id(FIM_TOKENS.middle));
  }
  return encodeQwen3({
    config,
    tokenizer,
    chatTemplate: QWEN3_CHAT_TEMPLATE,
    weights,
    matrixType: GgmlType.F32,
  });
}
