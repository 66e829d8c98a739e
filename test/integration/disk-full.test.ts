// A full cache disk in the middle of a fill (a real, small tmpfs): clients still
// get the whole verified blob, nothing partial is kept, and it is said loudly.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { pushBlob } from '../support/seed.js';
import { startMirror, type TestMirror } from '../support/stevedore.js';
import { get, streamDigest } from '../support/http.js';
import { pushImage } from '../support/seed.js';
import { waitFor } from '../support/wait.js';
import { parseDigest } from '../../src/oci/digest.js';
import { requirement } from '../support/requirements.js';

const MiB = 1024 * 1024;
const mounts: string[] = [];

/** A fresh tmpfs of `size` (such as 6m), unmounted after the tests; undefined without root. */
function smallDisk(size: string): string | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-small-disk-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'stevedore-test', dir]);
  } catch {
    rmSync(dir, { recursive: true, force: true });
    return undefined;
  }
  mounts.push(dir);
  return dir;
}

/** Fills what is left of a disk with a file the cache cannot evict. */
function fillUp(disk: string, name: string): void {
  try {
    execFileSync('dd', ['if=/dev/zero', `of=${join(disk, name)}`, 'bs=64k'], { stdio: 'ignore' });
  } catch {
    // dd stops with "No space left on device": that is the point
  }
}

const freeBytes = (dir: string): number => {
  const s = statfsSync(dir);
  return s.bavail * s.bsize;
};

const mountPoint = smallDisk('6m');
const mounted = mountPoint !== undefined;
const rootMount = requirement('root, to mount a small tmpfs', mounted ? undefined : 'not root, or mount -t tmpfs failed');
let registry: RegistryHandle;
let mirror: TestMirror;

before(async () => {
  if (!mounted) return;
  registry = await startRegistry();
  mirror = await startMirror({ upstreams: [{ registry: 'docker.io', url: registry.url }], dir: join(mountPoint!, 'cache') });
});

after(async () => {
  await mirror?.stop();
  await registry?.stop();
  for (const dir of mounts) {
    execFileSync('umount', [dir]);
    rmSync(dir, { recursive: true, force: true });
  }
});

rootMount.test('the disk fills up mid-blob: every client gets the verified blob, nothing is cached, nothing partial is left', async () => {
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
  assert.deepEqual(readdirSync(join(mountPoint!, 'cache', 'tmp')), [], 'no partial temp file');
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


rootMount.test('by default the cache keeps 5% of its disk free: least recently used blobs make way as the disk fills', async () => {
  const disk = smallDisk('40m')!;
  const m = await startMirror({ upstreams: [{ registry: 'docker.io', url: registry.url }], dir: join(disk, 'cache') });
  try {
    const floor = Math.ceil(statfsSync(disk).blocks * statfsSync(disk).bsize * 0.05);
    const digests: string[] = [];
    for (let i = 0; i < 13; i++) {
      const blob = await pushBlob(registry.url, 'fill/disk', { size: 3 * MiB, seed: `floor-${i}` });
      const got = await streamDigest(`${m.url}/v2/fill/disk/blobs/${blob.digest}`);
      assert.equal(got.digest, blob.digest);
      digests.push(blob.digest);
      await m.stevedore.mirror.fills.drain(10_000);
    }
    await waitFor('a sweep for free space', () => m.logs().some((l) => l.msg === 'cache sweep removed blobs' && (l.reasons as Record<string, number> | undefined)?.space !== undefined));
    await waitFor('the sweep to finish', () => freeBytes(disk) >= floor);
    assert.equal(m.stevedore.cache.lookupBlob(parseDigest(digests[0]!)), undefined, 'the least recently used blob made way');
    assert.ok(m.stevedore.cache.lookupBlob(parseDigest(digests.at(-1)!)), 'the newest stays');
    assert.ok(freeBytes(disk) >= floor, `${freeBytes(disk)} bytes free, floor ${floor}`);
  } finally {
    await m.stop();
  }
});

rootMount.test('a manifest that meets a full disk makes room and is cached; with nothing left to evict it is served uncached, never a 500', async () => {
  const disk = smallDisk('8m')!;
  const first = await pushImage(registry.url, 'full/one', 'v1', { format: 'oci', layers: [1024] });
  const second = await pushImage(registry.url, 'full/two', 'v1', { format: 'oci', layers: [1024] });
  const filler = await pushBlob(registry.url, 'full/one', { size: 2 * MiB, seed: 'evictable' });
  mkdirSync(join(disk, 'cache'));
  // No floor: only the failed write itself asks for room.
  const m = await startMirror({ upstreams: [{ registry: 'docker.io', url: registry.url }], dir: join(disk, 'cache'), cache: { minFreeSpace: '0' } });
  try {
    // Something the cache may evict, then a disk full to the last page.
    assert.equal((await streamDigest(`${m.url}/v2/full/one/blobs/${filler.digest}`)).digest, filler.digest);
    await m.stevedore.mirror.fills.drain(10_000);
    fillUp(disk, 'junk-1');
    const made = await get(`${m.url}/v2/full/one/manifests/v1`, { accept: first.manifestMediaType });
    assert.equal(made.status, 200);
    assert.equal(made.headers['docker-content-digest'], first.manifestDigest);
    assert.ok(m.stevedore.cache.lookupBlob(parseDigest(first.manifestDigest)), 'cached after making room');
    assert.equal(m.stevedore.cache.lookupBlob(parseDigest(filler.digest)), undefined, 'the blob made way');

    // Full again, and nothing big enough to evict.
    fillUp(disk, 'junk-2');
    const uncached = await get(`${m.url}/v2/full/two/manifests/v1`, { accept: second.manifestMediaType });
    assert.equal(uncached.status, 200);
    assert.equal(uncached.headers['docker-content-digest'], second.manifestDigest);
    assert.ok(uncached.body.equals(second.manifestBytes), 'the verified bytes, byte for byte');
    assert.equal(m.stevedore.cache.lookupBlob(parseDigest(second.manifestDigest)), undefined, 'not cached');
    assert.ok(m.logs().some((l) => l.msg === 'manifest served but not cached: the cache disk is full' && l.level === 50));
    assert.deepEqual(readdirSync(join(disk, 'cache', 'tmp')), [], 'no temp file left');
  } finally {
    await m.stop();
  }
});
