// Local JSON Schema references (`#`, `#/$defs/x`, any JSON pointer), resolved the same way by the
// protocol's schema checks and the engines' schema compilers, so "this $ref points nowhere" means the
// same thing in both.

/** The value a local reference points at (an object or a boolean schema), or undefined. */
export function resolveJsonPointer(root: unknown, ref: string): unknown {
  if (!ref.startsWith('#')) return undefined;
  let pointer: string;
  try {
    pointer = decodeURIComponent(ref.slice(1));
  } catch {
    return undefined;
  }
  if (pointer === '') return root;
  if (!pointer.startsWith('/')) return undefined;
  let node: unknown = root;
  for (const raw of pointer.slice(1).split('/')) {
    const key = raw.replaceAll('~1', '/').replaceAll('~0', '~');
    if (node === null || typeof node !== 'object' || !Object.hasOwn(node, key)) return undefined;
    node = (node as Record<string, unknown>)[key];
  }
  return node !== null && (typeof node === 'object' || typeof node === 'boolean') ? node : undefined;
}
