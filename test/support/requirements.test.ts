// The requirement switch itself, run as a separate test process: a suite
// whose tool is missing skips on a developer's machine, and fails with CI set.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { requirement } from './requirements.js';

const helper = fileURLToPath(new URL('./requirements.ts', import.meta.url));

function runSuite(env: Record<string, string | undefined>): { code: number | null; out: string } {
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-requirement-'));
  try {
    const file = join(dir, 'needs-a-missing-tool.test.ts');
    writeFileSync(file, `import { requirement } from ${JSON.stringify(helper)};\nconst tool = requirement('frobnicator', 'not installed');\ntool.test('uses the frobnicator', () => undefined);\n`);
    const childEnv = { ...process.env, ...env };
    for (const [k, v] of Object.entries(env)) if (v === undefined) delete childEnv[k];
    delete childEnv.NODE_TEST_CONTEXT; // a test run of its own, not a subtest of this one
    const result = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=tap', file], { env: childEnv, encoding: 'utf8', timeout: 60_000 });
    return { code: result.status, out: `${result.stdout}${result.stderr}` };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('without CI, a suite missing its tool is skipped, and says what did not run', () => {
  const { code, out } = runSuite({ CI: undefined });
  assert.equal(code, 0, out);
  assert.match(out, /# SKIP NOT RUN: frobnicator: not installed/);
});

test('with CI=true, the same suite fails and names what is missing', () => {
  for (const ci of ['true', '1']) {
    const { code, out } = runSuite({ CI: ci });
    assert.equal(code, 1, out);
    assert.match(out, /not ok 1 - uses the frobnicator/);
    assert.match(out, /frobnicator is required and missing: not installed/);
    assert.doesNotMatch(out, /# SKIP/);
  }
});

const asRoot = requirement('root, to run a suite as an unprivileged user', process.getuid?.() === 0 ? undefined : 'not root');

asRoot.test('the real-client and disk suites, run one by one as an unprivileged user with CI=true, fail instead of skipping', () => {
  const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
  for (const suite of ['test/e2e/dockerd.test.ts', 'test/e2e/containerd.test.ts', 'test/e2e/podman.test.ts', 'test/integration/disk-full.test.ts']) {
    const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: tmpdir(), CI: 'true' };
    const result = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '--import', 'tsx', '--test', '--test-reporter=tap', suite], { cwd: repoRoot, env, encoding: 'utf8', timeout: 120_000 });
    const out = `${result.stdout}${result.stderr}`;
    assert.equal(result.status, 1, `${suite}:\n${out.slice(-2000)}`);
    assert.match(out, /is required and missing: .*root/, suite);
    assert.match(out, /# skipped 0/, suite);
  }
});
