import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Cache } from '../../src/cache/cache.js';
import { CacheDatabase } from '../../src/cache/database.js';
import { BYTES_PER_BLOB_RECORD, BYTES_PER_LINK_SET, BYTES_PER_TAG, BYTES_PER_VERIFIED_DIGEST, DEFAULT_MEMORY_BUDGET_BYTES, splitMemoryBudget } from '../../src/cache/memory-budget.js';
import { digestOf, parseDigest } from '../../src/oci/digest.js';
import { cacheModes, FsStore } from '../../src/storage/fs-store.js';
import { VerifiedContent } from '../../src/cache/verified-content.js';

const MiB = 1024 * 1024;
const MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const hexDigest = (i: number): string => `sha256:${i.toString(16).padStart(64, '0')}`;

async function openCache(t: { after(fn: () => void): void }, memoryBudgetBytes?: number): Promise<{ cache: Cache; database: CacheDatabase }> {
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-budget-'));
  const database = new CacheDatabase(join(dir, 'index.db'));
  const store = new FsStore(join(dir, 'blobs'), cacheModes(false));
  await store.init();
  const cache = await Cache.open({ database, store, accessFlushIntervalMs: 60_000, memoryBudgetBytes, owner: true });
  t.after(async () => {
    await cache.close();
    database.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { cache, database };
}

/** Stores `count` distinct manifests of `bytes` each; returns their digests. */
async function storeManifests(cache: Cache, count: number, bytes: number): Promise<string[]> {
  const digests: string[] = [];
  for (let i = 0; i < count; i++) {
    const body = Buffer.alloc(bytes, ' ');
    body.write(JSON.stringify({ schemaVersion: 2, mediaType: MANIFEST, n: i }));
    const digest = parseDigest(digestOf(body));
    await cache.storeManifest({ digest, bytes: body, mediaType: MANIFEST, children: [], upstream: 'docker.io', repo: 'library/x' });
    digests.push(digest.value);
  }
  return digests;
}

test('the budget is split once, and the shares at their measured sizes add up to it', () => {
  for (const budget of [8 * MiB, DEFAULT_MEMORY_BUDGET_BYTES, 256 * MiB]) {
    const split = splitMemoryBudget(budget);
    const estimated = split.smallContentBytes + split.blobRecords * BYTES_PER_BLOB_RECORD + split.tags * BYTES_PER_TAG + split.linkSets * BYTES_PER_LINK_SET + split.verifiedDigests * BYTES_PER_VERIFIED_DIGEST;
    assert.ok(estimated <= budget && estimated > budget * 0.99, `${estimated} of ${budget}`);
    assert.equal(split.smallContentBytes, (budget * 7) / 16);
  }
});

test('a cache opened with a small budget keeps at most its share of small content, and serves the rest from the store', async (t) => {
  const { cache } = await openCache(t, 8 * MiB);
  const digests = await storeManifests(cache, 32, 256 * 1024); // 8 MiB of manifests against a 3.5 MiB share
  const held = cache.memoryHeld.smallContentBytes;
  assert.ok(held <= 3.5 * MiB && held >= 2.5 * MiB, `held ${held} bytes`);
  // The oldest left memory but not the cache: it is read back and verified.
  const first = await cache.readManifest(parseDigest(digests[0]!));
  assert.equal(first.length, 256 * 1024);
  assert.ok(cache.memoryHeld.smallContentBytes <= 3.5 * MiB);
});

test('without a budget the default applies: the small-content share is 8 MiB, not 64', async (t) => {
  const { cache } = await openCache(t);
  await storeManifests(cache, 40, 256 * 1024); // 10 MiB
  assert.ok(cache.memoryHeld.smallContentBytes <= splitMemoryBudget(DEFAULT_MEMORY_BUDGET_BYTES).smallContentBytes);
});

test('a cache opened with a small budget keeps at most its share of blob records, tags and link sets; SQLite answers for the rest', async (t) => {
  const { cache, database } = await openCache(t, 8 * MiB);
  const limits = splitMemoryBudget(8 * MiB);
  const rows = limits.blobRecords + 500;
  for (let i = 0; i < rows; i++) database.index.putBlob({ digest: hexDigest(i), size: 10, now: 1000 });
  for (let i = 0; i < rows; i++) assert.equal(cache.lookupBlob(parseDigest(hexDigest(i)))?.size, 10);
  for (let i = 0; i < limits.tags + 100; i++) {
    cache.putTag({ upstream: 'docker.io', repo: 'library/x', tag: `t${i}`, acceptKey: MANIFEST, digest: hexDigest(i), mediaType: MANIFEST, fetchedAt: 1000 });
  }
  for (let i = 0; i < limits.linkSets + 100; i++) cache.linkRepo('docker.io', 'library/x', hexDigest(i), { share: false });
  assert.deepEqual(cache.memoryHeld, { smallContentBytes: 0, blobRecords: limits.blobRecords, tags: limits.tags, linkSets: limits.linkSets, verifiedDigests: 0 });
  // What fell out of memory is still in the index.
  assert.equal(cache.lookupBlob(parseDigest(hexDigest(0)))?.size, 10);
  assert.equal(cache.getTag('docker.io', 'library/x', 't0', MANIFEST)?.digest, hexDigest(0));
  assert.equal(cache.belongsTo('docker.io', 'library/x', hexDigest(0)), true);
});

test('the digests known verified are bounded by the budget, not by the number of cached blobs', () => {
  const limits = splitMemoryBudget(8 * MiB);
  const content = new VerifiedContent(limits.smallContentBytes, limits.verifiedDigests);
  for (let i = 0; i < limits.verifiedDigests * 3; i++) content.mark(hexDigest(i));
  assert.equal(content.verifiedCount, limits.verifiedDigests);
  assert.ok(content.has(hexDigest(limits.verifiedDigests * 3 - 1)), 'the newest are kept');
  assert.ok(!content.has(hexDigest(0)), 'the oldest go: their next full read re-hashes them');
});
