// Money as integer micro-units (1 unit = 1_000_000 micro): sums of many tiny per-token charges stay exact.
import type { Price } from './config.ts';

export interface MicroPrice {
  inputPerMillion: number;
  outputPerMillion: number;
  perImage: number;
  perSearch: number;
}

export const toMicro = (amount: number): number => Math.round(amount * 1_000_000);

export const microPrice = (price: Price): MicroPrice => ({
  inputPerMillion: toMicro(price.inputPerMillion),
  outputPerMillion: toMicro(price.outputPerMillion),
  perImage: toMicro(price.perImage),
  perSearch: toMicro(price.perSearch),
});

export const isPriced = (price: MicroPrice | undefined): price is MicroPrice =>
  price !== undefined && (price.inputPerMillion > 0 || price.outputPerMillion > 0 || price.perImage > 0 || price.perSearch > 0);

/** Documents per rerank search unit (Cohere's definition; SiliconFlow bills rerank per search). */
export const documentsPerSearch = 100;

export function costMicro(
  price: MicroPrice | undefined,
  usage: { promptTokens: number; completionTokens: number; images: number; documents: number },
  endpoint: string,
): number {
  if (!isPriced(price)) return 0;
  // completionTokens already includes reasoning tokens (OpenAI's usage semantics), so they are not added again.
  const tokens = Math.round(
    (usage.promptTokens * price.inputPerMillion + usage.completionTokens * price.outputPerMillion) / 1_000_000,
  );
  const searches = endpoint === 'rerank' ? Math.max(1, Math.ceil(usage.documents / documentsPerSearch)) : 0;
  return tokens + usage.images * price.perImage + searches * price.perSearch;
}

/** "12.5" → "12.50"; micro-units as a decimal string with 2–6 decimals (what /user/info sends). */
export function formatMicro(micro: number): string {
  const negative = micro < 0;
  const abs = Math.abs(Math.trunc(micro));
  const whole = Math.floor(abs / 1_000_000);
  let fraction = String(abs % 1_000_000).padStart(6, '0').replace(/0+$/, '');
  if (fraction.length < 2) fraction = fraction.padEnd(2, '0');
  return `${negative ? '-' : ''}${whole}.${fraction}`;
}

/** Parses a decimal amount ("10", "0.25") into micro-units without float drift. */
export function parseAmount(text: string): number {
  const match = /^(-)?(\d+)(?:\.(\d{1,6}))?$/.exec(text.trim());
  if (!match) throw new Error(`"${text}" is not an amount (up to 6 decimals, e.g. 10 or 0.25)`);
  const micro = Number(match[2]) * 1_000_000 + Number((match[3] ?? '').padEnd(6, '0'));
  return match[1] ? -micro : micro;
}
