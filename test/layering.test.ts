import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

// The dependency rule of the architecture: which folder of src/ may import which.
// `log.ts` is a leaf every folder may use; cli.ts, cli/ and stevedore.ts wire everything.
const ALLOWED: Record<string, string[]> = {
  oci: [],
  metrics: [],
  config: ['oci'],
  storage: ['oci'],
  cache: ['oci', 'storage'],
  upstream: ['oci'],
  cluster: [],
  mirror: ['oci', 'cache', 'upstream', 'cluster'],
  jobs: ['oci', 'mirror', 'cache', 'upstream', 'config'],
  notify: ['oci', 'upstream'],
  http: ['oci', 'mirror', 'jobs', 'metrics', 'cluster', 'notify'],
};
const LEAVES = new Set(['log']);

const src = join(import.meta.dirname, '..', 'src');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sourceFiles(path);
    return name.endsWith('.ts') ? [path] : [];
  });
}

test('each folder of src/ imports only the folders below it', () => {
  const violations: string[] = [];
  let checked = 0;
  for (const [folder, allowed] of Object.entries(ALLOWED)) {
    for (const file of sourceFiles(join(src, folder))) {
      checked++;
      const text = readFileSync(file, 'utf8');
      for (const match of text.matchAll(/(?:from|import)\s*\(?\s*'(\.\.\/[^']+)'/g)) {
        const target = match[1]!.replace(/^\.\.\//, '').split('/')[0]!.replace(/\.js$/, '');
        if (target === folder || LEAVES.has(target) || allowed.includes(target)) continue;
        violations.push(`${relative(src, file)} imports ${match[1]} (${folder}/ may import ${allowed.join(', ') || 'nothing of ours'})`);
      }
    }
  }
  assert.ok(checked > 40, `only ${checked} files were checked: the folder layout changed`);
  assert.deepEqual(violations, []);
});
