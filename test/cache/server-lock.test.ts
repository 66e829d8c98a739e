import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { claimCacheDir, owner, runningServer } from '../../src/cache/server-lock.js';

test("one owner per cache directory: a second claim is refused, a dead owner's claim is taken over", (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-lock-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'server.json'), JSON.stringify({ pid: 1, url: 'http://127.0.0.1:1' })); // pid 1 is alive, and not us
  assert.throws(() => claimCacheDir(dir, { pid: process.pid, url: '' }), /in use by process 1/);
  assert.equal(runningServer(dir)?.url, 'http://127.0.0.1:1');
  writeFileSync(join(dir, 'server.json'), JSON.stringify({ pid: 2 ** 22 + 12345, url: '' })); // no such process
  const release = claimCacheDir(dir, { pid: process.pid, url: '' });
  assert.equal(owner(dir)?.pid, process.pid);
  assert.equal(runningServer(dir), undefined, 'a CLI owner has no API to offer');
  release();
  assert.equal(owner(dir), undefined);
});
