// Compares two copies of @huggingface/jinja's dist/index.js (e.g. the unpatched package and the one
// patches/@huggingface+jinja+0.5.11.patch makes) over a folder of chat templates (llama.cpp's
// models/templates, in the llama-server source scripts/build-llama-server.sh unpacks under .infera/):
// the parsed AST of each template as JSON (property order included) and its renders of a few chat
// histories (tools and tool calls, a system message, reasoning, generation prompt on and off), errors
// included. Prints every difference and the counts. Not a test: it needs the unpatched file.
//
//   node --import tsx bench/jinja-render-compare.ts ORIGINAL.js PATCHED.js TEMPLATES_DIR
import { readFileSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

interface Jinja {
  tokenize(source: string, options?: Record<string, boolean>): unknown;
  parse(tokens: unknown): unknown;
  Template: new (source: string) => { render(context: Record<string, unknown>): string };
}
const [originalFile, patchedFile, dir] = process.argv.slice(2);
if (!originalFile || !patchedFile || !dir) throw new Error('usage: jinja-render-compare.ts ORIGINAL.js PATCHED.js TEMPLATES_DIR');
const load = (file: string) => import(pathToFileURL(resolve(file)).href) as Promise<Jinja>;
const [a, b] = await Promise.all([load(originalFile), load(patchedFile)]);

const tools = [{ type: 'function', function: { name: 'get_weather', description: 'Weather', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }];
const histories: Record<string, unknown>[] = [
  { messages: [{ role: 'user', content: 'Hi' }] },
  { messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello!' }, { role: 'user', content: 'Again' }] },
  {
    messages: [
      { role: 'system', content: 'S' },
      { role: 'user', content: 'Weather in Paris?' },
      { role: 'assistant', content: '', tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: { city: 'Paris' } } }] },
      { role: 'tool', tool_call_id: 'call_1', name: 'get_weather', content: '{"t":20}' },
    ],
    tools,
  },
  { messages: [{ role: 'user', content: 'Think' }, { role: 'assistant', content: 'ok', reasoning_content: 'hmm' }, { role: 'user', content: 'more' }], enable_thinking: false },
];
const attempt = (run: () => string) => {
  try {
    return run();
  } catch (error) {
    return `error: ${(error as Error).message}`;
  }
};
let same = 0;
let sameErrors = 0;
let different = 0;
const templates = readdirSync(dir).filter((name) => name.endsWith('.jinja'));
for (const name of templates) {
  const source = readFileSync(join(dir, name), 'utf8');
  const ast = (jinja: Jinja) => attempt(() => JSON.stringify(jinja.parse(jinja.tokenize(source, { lstrip_blocks: true, trim_blocks: true }))));
  if (ast(a) !== ast(b)) {
    different++;
    console.log(`${name}: the AST differs`);
  }
  for (const history of histories)
    for (const add_generation_prompt of [true, false]) {
      const context = { ...history, add_generation_prompt, bos_token: '<s>', eos_token: '</s>' };
      const [left, right] = [a, b].map((jinja) => attempt(() => new jinja.Template(source).render(context)));
      if (left === right) {
        same++;
        if (left!.startsWith('error: ')) sameErrors++;
      } else {
        different++;
        console.log(`${name}: a render differs\n  ${JSON.stringify(left!.slice(0, 200))}\n  ${JSON.stringify(right!.slice(0, 200))}`);
      }
    }
}
console.log(`${templates.length} templates: ${same} renders equal (${sameErrors} of them the same error), ${different} differences`);
