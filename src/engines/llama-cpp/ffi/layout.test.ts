// The hand-declared llama.cpp structs against the header of the llama.cpp the installed node-llama-cpp
// ships (its git bundle): gcc compiles a program that prints sizeof and offsetof of every declared
// field, and each must equal what koffi computed from the declaration. Also: the start-up check reads
// the library's defaults back through the same declarations.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { DECLARED_FOR, declaredStructs, layoutMismatches, openLlamaLibrary } from './library.ts';

const HEADERS = [
  'include/llama.h',
  'ggml/include/ggml.h',
  'ggml/include/ggml-cpu.h',
  'ggml/include/ggml-backend.h',
  'ggml/include/ggml-alloc.h',
  'ggml/include/ggml-opt.h',
  'ggml/include/gguf.h',
];

const has = (command: string) => spawnSync(command, ['--version'], { stdio: 'ignore' }).status === 0;

test('every declared struct size and field offset matches the bundled llama.h', { skip: !has('gcc') || !has('git') ? 'needs gcc and git' : false }, async () => {
  const lib = await openLlamaLibrary();
  // node-llama-cpp's exports hide package.json: go up from its entry point (dist/index.js).
  const bundle = join(dirname(createRequire(import.meta.url).resolve('node-llama-cpp')), '..', 'llama', 'gitRelease.bundle');
  const dir = mkdtempSync(join(tmpdir(), 'infera-llama-layout-'));
  try {
    const repo = join(dir, 'repo');
    execFileSync('git', ['clone', '--quiet', '--no-checkout', bundle, repo]);
    const commit = execFileSync('git', ['-C', repo, 'rev-parse', 'HEAD'], { encoding: 'utf8' }).trim();
    assert.ok(commit.startsWith(DECLARED_FOR.llamaCppCommit), `bundle commit ${commit}, declarations for ${DECLARED_FOR.llamaCppCommit}`);
    const include = join(dir, 'include');
    mkdirSync(include);
    for (const header of HEADERS)
      writeFileSync(join(include, header.split('/').at(-1)!), execFileSync('git', ['-C', repo, 'show', `HEAD:${header}`]));

    const structs = declaredStructs(lib.types);
    const lines: string[] = [];
    const expected: string[] = [];
    for (const { name, type } of structs) {
      const info = lib.koffi.introspect(type) as { size: number; members: Record<string, { offset: number }> };
      // Typedef'd structs (llama_batch, llama_logit_bias, llama_sampler_chain_params) need no "struct".
      lines.push(`printf("${name} size %zu\\n", sizeof(struct ${name}));`);
      expected.push(`${name} size ${info.size}`);
      for (const [field, member] of Object.entries(info.members)) {
        lines.push(`printf("${name}.${field} %zu\\n", offsetof(struct ${name}, ${field}));`);
        expected.push(`${name}.${field} ${member.offset}`);
      }
    }
    const source = join(dir, 'layout.c');
    writeFileSync(source, `#include <stdio.h>\n#include <stddef.h>\n#include "llama.h"\nint main(void) {\n${lines.join('\n')}\nreturn 0;\n}\n`);
    const binary = join(dir, 'layout');
    execFileSync('gcc', ['-std=c11', '-I', include, source, '-o', binary]);
    const actual = execFileSync(binary, { encoding: 'utf8' }).trim().split('\n');
    assert.deepEqual(actual, expected);
    console.log(`${structs.length} structs, ${expected.length} sizes and offsets match llama.cpp ${commit.slice(0, 7)}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the start-up check reads the library defaults back through the declarations', async () => {
  const lib = await openLlamaLibrary();
  assert.deepEqual(layoutMismatches(lib.api), []);
});
