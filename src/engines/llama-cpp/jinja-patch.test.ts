// @huggingface/jinja 0.5.11 (node-llama-cpp's Jinja engine) is patched (patches/@huggingface+jinja+0.5.11.patch,
// applied by `npm ci`'s postinstall through patch-package): its AST node and runtime value classes set
// their fields (`type`, `value`, `_builtins`) in their constructors instead of declaring class fields.
// Every subclass redefining the base class's `type` field made V8 11 (Node 20) define it through a
// megamorphic DefineNamedOwn IC, a runtime call per object (~1.6-2 µs against ~0.2 µs for an assignment;
// docs/BENCHMARKS.md, "Cold start: @huggingface/jinja"): ~30 % of the CPU of resolveChatWrapper's Jinja renders, which
// a first start runs before its first answer. The properties, their order and their values are the same
// (no setter or frozen object is involved), so the AST and every render are unchanged; these tests check
// that the patch is in place and that the parsed AST is the one the unpatched 0.5.11 produced.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

interface Jinja {
  tokenize(source: string): unknown;
  parse(tokens: unknown): unknown;
  Template: new (source: string) => { render(context: Record<string, unknown>): string };
}
// A dependency of node-llama-cpp, not of Infera: resolved from node-llama-cpp's folder.
const JINJA_URL = import.meta.resolve('@huggingface/jinja', import.meta.resolve('node-llama-cpp'));
const jinja = () => import(JINJA_URL) as Promise<Jinja>;
const notApplied = 'patches/@huggingface+jinja+0.5.11.patch is not applied to node_modules/@huggingface/jinja: run `npm ci` (its postinstall runs patch-package)';

test('the @huggingface/jinja patch is applied: no class declares a `type` field', () => {
  const source = readFileSync(fileURLToPath(JINJA_URL), 'utf8');
  const packageJson = JSON.parse(readFileSync(fileURLToPath(new URL('../package.json', JINJA_URL)), 'utf8')) as { version: string };
  assert.equal(packageJson.version, '0.5.11', 'the patch is written for @huggingface/jinja 0.5.11');
  assert.deepEqual(source.match(/^ {2}type = "\w+";$/gm), null, notApplied);
  assert.match(source, /^ {4}this\.type = "StringValue";$/m, notApplied);
});

// One template with every AST node type (For with a filter, Set, Macro, Call, Filter, Comment, Break,
// Ternary, Select, Test, Slice, spreads, keyword arguments, literals of each kind).
const TEMPLATE =
  "{%- set ns = namespace(a=1) %}{% for m in messages if m.role != 'x' %}{{ m.content | upper ~ '!' if loop.first else m['content'][1:3] }}" +
  "{% if m is defined and not false %}{{ -1 + 2.5 }}{% elif (1, 2) %}{{ [1] + [2] }}{% else %}{{ {'k': v} }}{% endif %}{% break %}{% endfor %}" +
  "{% macro f(x, y=2) %}{{ x(*y, **z) }}{% endmacro %}{# c #}{% filter upper %}t{% endfilter %}{% call f(1) %}b{% endcall %}{{ a.b(c=1) | e | select('odd') }}";

test('the parsed AST has the unpatched 0.5.11 properties, in the same order', async () => {
  const { parse, tokenize } = await jinja();
  const ast = JSON.stringify(parse(tokenize(TEMPLATE)));
  // sha256 of this JSON from the unpatched @huggingface/jinja 0.5.11 (property order included).
  assert.equal(createHash('sha256').update(ast).digest('hex'), '6826fb4e778309aa7abd123f5eb55df5898775823a144fd6c5c164a356239cb7');
  assert.ok(ast.startsWith('{"type":"Program","body":[{"type":"Set","assignee":{"type":"Identifier","value":"ns"}'), ast.slice(0, 120));
});

test('runtime values: renders of strings, arrays, objects, namespaces and loops', async () => {
  const { Template } = await jinja();
  const render = (source: string, context: Record<string, unknown> = {}) => new Template(source).render(context);
  assert.equal(render("{{ 'ab' | upper }}{{ 'ab' | length }}{{ 'x'.strip() }}"), 'AB2x');
  assert.equal(render('{{ items | length }}{{ items[1:] | tojson }}{{ (items | first) is number }}', { items: [1, 2, 3] }), '3[2, 3]true');
  assert.equal(render('{{ o | tojson }}{{ o.items() | list | length }}{{ o.get("b", 7) }}', { o: { a: 1 } }), '{"a": 1}17');
  assert.equal(render('{% set ns = namespace(n=0) %}{% for i in range(3) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}{{ none is none }}{{ undefined_name is defined }}'), '3truefalse');
});
