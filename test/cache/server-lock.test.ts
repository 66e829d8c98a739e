import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { announceServer, CacheDirInUseError, claimCacheDir, owner, runningServer } from '../../src/cache/server-lock.js';

const tempDir = (t: { after(fn: () => void): void }): string => {
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-lock-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
};

test('one owner per cache directory: a second claim is refused until the first is released', (t) => {
  const dir = tempDir(t);
  assert.equal(owner(dir), undefined, 'a directory never claimed has no owner');
  const release = claimCacheDir(dir, { pid: process.pid, url: '' });
  assert.equal(owner(dir)?.pid, process.pid);
  assert.equal(runningServer(dir), undefined, 'a CLI owner has no API to offer');
  assert.throws(
    () => claimCacheDir(dir, { pid: process.pid, url: '' }),
    (err: unknown) => err instanceof CacheDirInUseError && err.dir === dir && err.message.includes(`cache directory ${dir} is in use by process ${process.pid}`),
  );
  announceServer(dir, { pid: process.pid, url: 'http://127.0.0.1:1' });
  assert.equal(runningServer(dir)?.url, 'http://127.0.0.1:1', 'the refused claim left the owner and its lock as they were');
  release();
  release(); // idempotent
  assert.equal(owner(dir), undefined);
  claimCacheDir(dir, { pid: process.pid, url: '' })();
});

test('ownership is the lock, not a PID: a server.json naming a live process (even ours) without its lock is no owner', (t) => {
  const dir = tempDir(t);
  for (const pid of [1, process.pid]) {
    writeFileSync(join(dir, 'server.json'), JSON.stringify({ pid, url: 'http://127.0.0.1:1' }));
    assert.equal(owner(dir), undefined);
    assert.equal(runningServer(dir), undefined, 'no API is offered by a process that holds no lock');
    const release = claimCacheDir(dir, { pid: process.pid, url: '' });
    assert.equal(owner(dir)?.pid, process.pid);
    release();
  }
});

test("another process's claim refuses ours while it lives, and dies with it (SIGKILL)", { timeout: 30_000 }, async (t) => {
  const dir = tempDir(t);
  const module = new URL('../../src/cache/server-lock.ts', import.meta.url).href;
  const script = `import { claimCacheDir } from ${JSON.stringify(module)};
claimCacheDir(${JSON.stringify(dir)}, { pid: process.pid, url: 'http://127.0.0.1:9' });
process.stdout.write('held\\n');
setInterval(() => undefined, 60_000);`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = once(child, 'exit');
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const [first] = (await once(child.stdout!, 'data')) as [Buffer];
  assert.equal(first.toString().trim(), 'held');
  assert.throws(() => claimCacheDir(dir, { pid: process.pid, url: '' }), (err: unknown) => err instanceof CacheDirInUseError && err.holder?.pid === child.pid);
  assert.equal(runningServer(dir)?.url, 'http://127.0.0.1:9');
  child.kill('SIGKILL');
  await exited;
  assert.equal(owner(dir), undefined, 'the kernel released the dead process\'s lock');
  const release = claimCacheDir(dir, { pid: process.pid, url: '' });
  assert.equal(owner(dir)?.pid, process.pid);
  release();
});
