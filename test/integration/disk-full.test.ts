// A full cache disk in the middle of a fill (a real, small tmpfs): clients still
// get the whole verified blob, nothing partial is kept, and it is said loudly.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { pushBlob } from '../support/seed.js';
import { startMirror, type TestMirror } from '../support/stevedore.js';
import { streamDigest } from '../support/http.js';
import { parseDigest } from '../../src/oci/digest.js';

const MiB = 1024 * 1024;
const mountPoint = mkdtempSync(join(tmpdir(), 'stevedore-small-disk-'));
let mounted = false;
try {
  if (process.getuid?.() === 0) {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=6m', 'stevedore-test', mountPoint]);
    mounted = true;
  }
} catch {
  mounted = false;
}
const skip = mounted ? false : 'needs root to mount a small tmpfs';
let registry: RegistryHandle;
let mirror: TestMirror;

before(async () => {
  if (!mounted) return;
  registry = await startRegistry();
  mirror = await startMirror({ upstreams: [{ registry: 'docker.io', url: registry.url }], dir: join(mountPoint, 'cache') });
});

after(async () => {
  await mirror?.stop();
  await registry?.stop();
  if (mounted) execFileSync('umount', [mountPoint]);
  rmSync(mountPoint, { recursive: true, force: true });
});

test('the disk fills up mid-blob: every client gets the verified blob, nothing is cached, nothing partial is left', { skip }, async () => {
  const blob = await pushBlob(registry.url, 'big/one', { size: 16 * MiB, seed: 'too-big-for-the-disk' });
  const url = `${mirror.url}/v2/big/one/blobs/${blob.digest}`;
  const results = await Promise.all([streamDigest(url), streamDigest(url), streamDigest(url)]);
  for (const r of results) {
    assert.equal(r.status, 200);
    assert.equal(r.bytes, blob.size);
    assert.equal(r.digest, blob.digest);
  }
  await mirror.stevedore.mirror.fills.drain(10_000);
  assert.equal(mirror.stevedore.cache.lookupBlob(parseDigest(blob.digest)), undefined, 'not indexed');
  assert.deepEqual(readdirSync(join(mountPoint, 'cache', 'tmp')), [], 'no partial temp file');
  const messages = mirror.logs().map((l) => l.msg);
  assert.ok(messages.includes('cache disk is full; evicting to make room'));
  assert.ok(messages.includes('cache disk is still full: streaming this blob to its clients without caching it'));
  assert.ok(messages.includes('blob served but not cached: the cache disk is full'));
  const errors = mirror.logs().filter((l) => l.level === 50);
  assert.ok(errors.length >= 2, 'logged as errors');
  // A small blob still fits and is cached as usual.
  const small = await pushBlob(registry.url, 'big/one', { size: 256 * 1024, seed: 'fits' });
  assert.equal((await streamDigest(`${mirror.url}/v2/big/one/blobs/${small.digest}`)).digest, small.digest);
  await mirror.stevedore.mirror.fills.drain(10_000);
  assert.ok(mirror.stevedore.cache.lookupBlob(parseDigest(small.digest)));
});

