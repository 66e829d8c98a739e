// The cache managing itself: LRU under a quota, pins, shared blobs, eviction
// while a client reads, damaged files, warm-up runs and their cron schedule.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { closeSync, existsSync, mkdtempSync, openSync, readSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { MediaTypes, pushBlob, pushImage, pushIndex, putManifest, sha256Digest, type PushedImage, type PushedIndex } from '../support/seed.js';
import { runCli, startMirror, type TestMirror } from '../support/stevedore.js';
import { get, streamDigest } from '../support/http.js';
import { waitFor } from '../support/wait.js';
import { sweep } from '../../src/cache/eviction.js';
import { parseDigest } from '../../src/oci/digest.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const ALL = [MediaTypes.ociIndex, MediaTypes.ociManifest, MediaTypes.dockerList, MediaTypes.dockerManifest].join(', ');
let registry: RegistryHandle;
let hub: HubDouble;
const scratch = mkdtempSync(join(tmpdir(), 'stevedore-lifecycle-'));
const mirrors: TestMirror[] = [];

async function mirrorWith(options: Parameters<typeof startMirror>[0]): Promise<TestMirror> {
  const m = await startMirror(options);
  mirrors.push(m);
  return m;
}

const blobFile = (m: TestMirror, digest: string): string => join(m.dir, 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7));
const cached = (m: TestMirror, digest: string): boolean => m.stevedore.cache.lookupBlob(parseDigest(digest)) !== undefined;

/** Pulls an image like a client does: manifest by tag, then every blob. */
async function pullImage(m: TestMirror, image: PushedImage): Promise<void> {
  const manifest = await get(`${m.url}/v2/${image.repo}/manifests/${image.tag}`, { accept: ALL });
  assert.equal(manifest.status, 200, `${image.repo}:${image.tag}`);
  for (const digest of [image.configDigest, ...image.layers.map((l) => l.digest)]) {
    assert.equal((await streamDigest(`${m.url}/v2/${image.repo}/blobs/${digest}`)).digest, digest);
  }
  // Clients finish once bytes verify; the fill lands in the index just after.
  await m.stevedore.mirror.fills.drain(10_000);
}

before(async () => {
  registry = await startRegistry();
  hub = await startHubDouble({ upstream: registry.url });
});

after(async () => {
  for (const m of mirrors) await m.stop();
  await hub?.stop();
  await registry?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

test('LRU under a quota: least recently used blobs go, recent ones stay, the size stays under the quota', async () => {
  const images: PushedImage[] = [];
  for (const name of ['a', 'b', 'c', 'd']) images.push(await pushImage(registry.url, `lru/${name}`, 'v1', { layers: [700 * KiB], format: 'docker', seed: `lru-${name}` }));
  const [a, b, c, d] = images as [PushedImage, PushedImage, PushedImage, PushedImage];
  const maxSize = 2.5 * MiB;
  const m = await mirrorWith({ upstreams: [{ registry: 'docker.io', url: hub.url }], cache: { maxSize: '2.5MiB', lowWater: 0.9 } });
  for (const image of [a, b, c]) await pullImage(m, image);
  await pullImage(m, a); // a is recent again; b is now the least recently used
  await pullImage(m, d);
  await m.stevedore.sweeper.run();
  assert.ok(m.stevedore.cache.bytes <= maxSize, `cache holds ${m.stevedore.cache.bytes} bytes, quota ${maxSize}`);
  const indexTotals = m.stevedore.cache.index.totals();
  assert.deepEqual({ bytes: m.stevedore.cache.bytes, blobs: m.stevedore.cache.blobs }, indexTotals, 'the running totals match the index');
  assert.ok(!cached(m, b.layers[0]!.digest), 'b, least recently used, was evicted');
  assert.ok(!existsSync(blobFile(m, b.layers[0]!.digest)), 'and its file is gone');
  for (const keep of [a, d]) assert.ok(cached(m, keep.layers[0]!.digest), `${keep.repo} stays`);
  // An evicted image is simply fetched again.
  await pullImage(m, b);
});

test('pinned images survive eviction, idle expiry and GC', async () => {
  const pinnedImage = await pushImage(registry.url, 'pin/base', 'v1', { layers: [600 * KiB], format: 'docker', seed: 'pin-base' });
  const other = await pushImage(registry.url, 'pin/other', 'v1', { layers: [600 * KiB], format: 'docker', seed: 'pin-other' });
  const m = await mirrorWith({ upstreams: [{ registry: 'docker.io', url: hub.url }], cache: { maxSize: '1MiB', blobIdleTtl: '1s', gcGrace: '0s' } });
  const run = await m.stevedore.warmups.start({ name: 'base', images: ['pin/base:v1'], platforms: 'all', pin: true, concurrency: 2, trigger: 'api' }).done;
  assert.equal(run.status, 'succeeded');
  await pullImage(m, other);
  await pullImage(m, other); // the pinned image is now the least recently used
  // A sweep a minute from now, when everything is past blobIdleTtl.
  const report = await sweep(m.stevedore.cache, { ...m.stevedore.sweeper.policy }, { now: Date.now() + 60_000 });
  assert.ok(report.removed.some((r) => r.reason === 'idle'), 'the sweep removed idle blobs');
  for (const digest of [pinnedImage.manifestDigest, pinnedImage.configDigest, pinnedImage.layers[0]!.digest]) {
    assert.ok(cached(m, digest), `pinned ${digest} kept`);
  }
  assert.ok(!cached(m, other.layers[0]!.digest), 'the unpinned image went');
});

test('a blob shared by two images is stored once and survives while either image is cached', async () => {
  const shared = await pushBlob(registry.url, 'share/one', { size: 300 * KiB, seed: 'shared-layer' });
  await pushBlob(registry.url, 'share/two', { size: 300 * KiB, seed: 'shared-layer' });
  const make = async (repo: string, unique: string): Promise<{ manifest: string; unique: string }> => {
    const own = await pushBlob(registry.url, repo, { size: 100 * KiB, seed: unique });
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, note: unique }));
    const configBlob = await pushBlob(registry.url, repo, config);
    const manifest = Buffer.from(JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaTypes.dockerManifest,
      config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: configBlob.digest, size: config.length },
      layers: [shared, own].map((l) => ({ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', digest: l.digest, size: l.size })),
    }));
    await putManifest(registry.url, repo, 'v1', MediaTypes.dockerManifest, manifest);
    for (const digest of [configBlob.digest, shared.digest, own.digest]) {
      assert.equal((await streamDigest(`${m.url}/v2/${repo}/blobs/${digest}`)).digest, digest);
    }
    assert.equal((await get(`${m.url}/v2/${repo}/manifests/v1`, { accept: ALL })).status, 200);
    return { manifest: sha256Digest(manifest), unique: own.digest };
  };
  const m = await mirrorWith({ upstreams: [{ registry: 'docker.io', url: hub.url }], cache: { gcGrace: '0s' } });
  const one = await make('share/one', 'unique-one');
  const two = await make('share/two', 'unique-two');
  const db = new Database(join(m.dir, 'index.db'), { readonly: true });
  const rows = db.prepare('SELECT COUNT(*) AS n FROM blobs WHERE digest = ?').get(shared.digest) as { n: number };
  db.close();
  assert.equal(rows.n, 1, 'stored once, counted by digest');
  await m.stevedore.cache.remove(parseDigest(one.manifest)); // image one leaves the cache
  await m.stevedore.sweeper.run();
  assert.ok(!cached(m, one.unique), "image one's own layer is collected");
  assert.ok(cached(m, shared.digest), 'the shared layer stays while image two is cached');
  await m.stevedore.cache.remove(parseDigest(two.manifest));
  await m.stevedore.sweeper.run();
  assert.ok(!cached(m, shared.digest), 'and goes with the last image that used it');
});

test('evicting a blob that a slow client is reading: the client finishes with the right bytes', async () => {
  const blob = await pushBlob(registry.url, 'slow/read', { size: 6 * MiB, seed: 'slow-read' });
  const m = await mirrorWith({ upstreams: [{ registry: 'docker.io', url: hub.url }] });
  assert.equal((await streamDigest(`${m.url}/v2/slow/read/blobs/${blob.digest}`)).digest, blob.digest);
  await m.stevedore.mirror.fills.drain(10_000);
  const res = await request(`${m.url}/v2/slow/read/blobs/${blob.digest}`, { highWaterMark: 16 * KiB });
  const reader = res.body[Symbol.asyncIterator]();
  const first = await reader.next();
  assert.ok(!first.done);
  const evictAll = { maxSize: 1, lowWater: 0.5, blobIdleTtlMs: 0, gcGraceMs: 0, minFree: { bytes: 0 } };
  const during = await sweep(m.stevedore.cache, evictAll);
  assert.ok(during.skippedInUse >= 1, 'the blob being read was passed over');
  assert.ok(cached(m, blob.digest));
  const hash = createHash('sha256').update(first.value as Buffer);
  let bytes = (first.value as Buffer).length;
  for (let next = await reader.next(); !next.done; next = await reader.next()) {
    hash.update(next.value as Buffer);
    bytes += (next.value as Buffer).length;
    await new Promise((r) => setImmediate(r));
  }
  assert.equal(bytes, blob.size);
  assert.equal(`sha256:${hash.digest('hex')}`, blob.digest);
  await waitFor('the lease to end', () => !m.stevedore.cache.isLeased(blob.digest));
  const afterwards = await sweep(m.stevedore.cache, evictAll);
  assert.ok(afterwards.removed.some((r) => r.digest === blob.digest), 'evicted once nobody reads it');
  assert.ok(!existsSync(blobFile(m, blob.digest)));
});

test('a damaged file is never served as valid: size is re-checked, the first re-hash removes it, verify finds it', async () => {
  const blobs = await Promise.all(['dmg-1', 'dmg-2', 'dmg-3'].map((seed) => pushBlob(registry.url, 'dmg/blob', { size: 512 * KiB, seed })));
  const [truncated, flipped, forVerify] = blobs as [typeof blobs[0], typeof blobs[0], typeof blobs[0]];
  const dir = join(scratch, 'damaged');
  const upstreams = [{ registry: 'docker.io', url: hub.url }];
  let m = await startMirror({ upstreams, dir });
  for (const b of blobs) assert.equal((await streamDigest(`${m.url}/v2/dmg/blob/blobs/${b.digest}`)).digest, b.digest);
  await m.stop(); // stopping drains the fills, so all three are on disk
  const flip = (digest: string): void => {
    const fd = openSync(blobFile(m, digest), 'r+');
    const byte = Buffer.alloc(1);
    readSync(fd, byte, 0, 1, 1000);
    byte[0] = byte[0]! ^ 0xff;
    writeSync(fd, byte, 0, 1, 1000);
    closeSync(fd);
  };
  truncateSync(blobFile(m, truncated.digest), 1000);
  flip(flipped.digest);
  flip(forVerify.digest);

  m = await startMirror({ upstreams, dir });
  try {
    hub.resetStats();
    // Wrong size: caught before sending, and transparently fetched again.
    const wrongSize = await streamDigest(`${m.url}/v2/dmg/blob/blobs/${truncated.digest}`);
    assert.equal(wrongSize.digest, truncated.digest);
    assert.equal(hub.stats().blobGet, 1);
    // Same size, bad content: the first read in this process re-hashes and aborts.
    let got = 0;
    // Aborted before the headers (the blob fits in one held-back read) or mid-body: never complete.
    await assert.rejects(async () => {
      const res = await request(`${m.url}/v2/dmg/blob/blobs/${flipped.digest}`);
      for await (const chunk of res.body) got += (chunk as Buffer).length;
    });
    assert.ok(got < flipped.size, 'never a complete response');
    await waitFor('the damaged file to be removed', () => !existsSync(blobFile(m, flipped.digest)));
    assert.ok(!cached(m, flipped.digest));
    assert.equal((await streamDigest(`${m.url}/v2/dmg/blob/blobs/${flipped.digest}`)).digest, flipped.digest, 'the next pull is good');
    assert.ok(m.logs().some((l) => l.msg === 'damaged blob removed from the cache; it will be fetched again'));
  } finally {
    await m.stop();
  }
  // verify finds the damage it was not shown yet, and --repair removes it.
  const configFile = join(scratch, 'verify.yml');
  writeFileSync(configFile, `cache:\n  dir: ${JSON.stringify(dir)}\nupstreams:\n  - registry: docker.io\n    endpoints: [{ url: "${hub.url}" }]\n`);
  const found = await runCli(['verify', '--config', configFile]);
  assert.equal(found.code, 1, found.stderr);
  assert.match(found.stdout, new RegExp(`damaged ${forVerify.digest}`));
  assert.match(found.stdout, /1 damaged/);
  const repaired = await runCli(['verify', '--repair', '--config', configFile]);
  assert.equal(repaired.code, 0, repaired.stderr);
  assert.match(repaired.stdout, /1 removed/);
  assert.ok(!existsSync(join(dir, 'blobs', 'sha256', forVerify.digest.slice(7, 9), forVerify.digest.slice(7))));
  const clean = await runCli(['verify', '--config', configFile]);
  assert.equal(clean.code, 0);
  assert.match(clean.stdout, /0 damaged/);
});

test('warm-up caches one platform of a multi-arch image; a second run fetches nothing and spends no manifest GET', async () => {
  const multi: PushedIndex = await pushIndex(registry.url, 'warm/multi', 'latest', {
    platforms: [{ os: 'linux', arch: 'amd64' }, { os: 'linux', arch: 'arm64' }],
    format: 'oci',
    layers: [200 * KiB, 100 * KiB],
  });
  const m = await mirrorWith({ upstreams: [{ registry: 'docker.io', url: hub.url }], cache: { tagTtl: '0s' } });
  hub.resetStats();
  const first = await m.stevedore.warmups.start({ name: 'multi', images: ['warm/multi:latest'], platforms: ['linux/arm64'], pin: false, concurrency: 3, trigger: 'api' }).done;
  const arm = multi.children['linux/arm64']!;
  const amd = multi.children['linux/amd64']!;
  assert.equal(first.status, 'succeeded', first.errors.join('; '));
  assert.equal(first.blobsFetched, arm.layers.length + 1);
  assert.equal(hub.stats().blobGet, arm.layers.length + 1, 'only the arm64 blobs');
  for (const l of arm.layers) assert.ok(cached(m, l.digest));
  for (const l of amd.layers) assert.ok(!cached(m, l.digest), 'amd64 left alone');
  hub.resetStats();
  const second = await m.stevedore.warmups.start({ name: 'multi', images: ['warm/multi:latest'], platforms: ['linux/arm64'], pin: false, concurrency: 3, trigger: 'api' }).done;
  assert.equal(second.blobsFetched, 0);
  assert.equal(second.blobsSkipped, arm.layers.length + 1);
  assert.equal(hub.stats().manifestGet, 0, 'no manifest GET');
  assert.equal(hub.stats().manifestHead, 1, 'the tag was revalidated with one HEAD');
  assert.equal(hub.stats().blobGet, 0);
  const history = m.stevedore.jobs.list(5).filter((r) => r.job === 'multi');
  assert.equal(history.length, 2);
  assert.ok(history.every((r) => r.status === 'succeeded' && r.finishedAt !== null && r.finishedAt >= r.startedAt));
});

test('the cron schedule fires', async () => {
  await pushImage(registry.url, 'cron/img', 'v1', { layers: [10 * KiB], format: 'docker' });
  const m = await mirrorWith({
    upstreams: [{ registry: 'docker.io', url: hub.url }],
    warmup: [{ name: 'every-second', schedule: '* * * * * *', images: ['cron/img:v1'] }],
  });
  await waitFor('a scheduled run to finish', () => m.stevedore.jobs.list(10).some((r) => r.job === 'every-second' && r.trigger === 'schedule' && r.status === 'succeeded'), 10_000);
  const next = m.stevedore.scheduled[0]?.nextRun();
  assert.ok(next && next.getTime() - Date.now() <= 1100);
});
