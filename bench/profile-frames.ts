// Naming V8 profile frames for the text summaries (cpu-profile-summary.ts, heap-profile-summary.ts): where
// a frame's code lives (an Infera source file, a package under node_modules, node's internals) and a
// one-line label per frame.

export interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

export function where(url: string): string {
  if (!url) return '(native / vm)';
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + 'node_modules/'.length).split('/');
    return rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]!;
  }
  if (url.startsWith('node:')) return url;
  const source = url.match(/\/(?:dist|src)\/(.*)$/);
  return source ? `infera/${source[1]}` : url;
}

export const label = (node: { callFrame: CallFrame }) =>
  `${node.callFrame.functionName || '(anonymous)'} ${where(node.callFrame.url)}:${node.callFrame.lineNumber + 1}`;

export const add = (map: Map<string, number>, key: string, value: number) => map.set(key, (map.get(key) ?? 0) + value);
