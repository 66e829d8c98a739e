// The background reconcile over a real directory store: what it drops, adopts
// and removes, and what the cache answers while it has not got there yet (its
// listing is held back until the test lets it go).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Cache } from '../../src/cache/cache.js';
import { CacheDatabase } from '../../src/cache/database.js';
import { digestOf, parseDigest } from '../../src/oci/digest.js';
import type { StoredEntry } from '../../src/storage/blob-store.js';
import { cacheModes, FsStore } from '../../src/storage/fs-store.js';
import { manifestOf, OCI_MANIFEST } from '../mirror/memory-mirror.js';

/** A directory store whose listing starts only when `release` is called. */
class HeldListing extends FsStore {
  release!: () => void;
  private readonly held = new Promise<void>((resolve) => (this.release = resolve));
  listed = 0;

  override async *list(): AsyncIterable<StoredEntry> {
    await this.held;
    for await (const entry of super.list()) {
      this.listed += 1;
      yield entry;
    }
  }
}

const blob = (name: string, size = 1024): Buffer => Buffer.alloc(size, name);

async function cacheDir(t: { after(fn: () => void): void }): Promise<{ dir: string; store: FsStore }> {
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-reconcile-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const store = new FsStore(join(dir, 'blobs'), cacheModes(false));
  await store.init();
  return { dir, store };
}

test('while the pass has not reached them, unindexed objects are adopted on first use; the pass then drops, adopts and removes the rest', async (t) => {
  const { dir, store } = await cacheDir(t);
  const indexed = blob('indexed');
  const gone = blob('gone');
  const usedEarly = blob('used early');
  const layer = blob('layer');
  const manifest = manifestOf(layer, 'config');
  const large = blob('large', 5 * 1024 * 1024);
  for (const bytes of [indexed, usedEarly, layer, manifest, large]) await store.put(parseDigest(digestOf(bytes)), bytes);
  const damaged = parseDigest(digestOf(Buffer.from('what the name says')));
  await store.put(damaged, Buffer.from('something else'));
  mkdirSync(join(dir, 'blobs', 'blobs', 'sha256', 'zz'), { recursive: true });
  writeFileSync(join(dir, 'blobs', 'blobs', 'sha256', 'zz', 'notes.txt'), 'left by hand');

  const database = new CacheDatabase(join(dir, 'index.db'));
  database.index.putBlob({ digest: digestOf(indexed), size: indexed.length, now: 1 });
  database.index.putBlob({ digest: digestOf(gone), size: gone.length, now: 1 });
  const held = new HeldListing(join(dir, 'blobs'), cacheModes(false));
  await held.init();
  const cache = await Cache.open({ database, store: held, accessFlushIntervalMs: 60_000, owner: true });
  t.after(() => database.close());
  try {
    assert.ok(cache.reconciled, 'the owner reconciles a local store');
    assert.equal(cache.blobs, 2, 'before the pass, the totals are the index as found');
    assert.equal(cache.lookupBlob(parseDigest(digestOf(usedEarly))), undefined, 'not indexed');
    const early = await cache.adoptBlob(parseDigest(digestOf(usedEarly)));
    assert.equal(early?.size, usedEarly.length, 'adopted from the store on first use');
    const adoptedManifest = await cache.adoptManifest(parseDigest(digestOf(manifest)), 1 << 20);
    assert.equal(adoptedManifest?.mediaType, OCI_MANIFEST, 'a manifest is adopted with the type its document gives');
    assert.equal(await cache.adoptBlob(parseDigest(digestOf(blob('never stored')))), undefined, 'what the store lacks is a miss');
    assert.equal(await cache.adoptManifest(damaged, 1 << 20), undefined, 'bytes that do not hash to the name are not adopted');
    assert.equal(held.listed, 0, 'all of that before the pass listed anything');

    held.release();
    const report = await cache.reconciled;
    assert.equal(report.droppedEntries, 1, 'the entry without a file');
    assert.equal(report.adoptedFiles, 2, 'the layer and the large blob; the two used early were adopted already');
    assert.equal(report.removedFiles, 2, 'the damaged file and the stray name');
    assert.equal(database.index.getBlob(digestOf(gone)), undefined);
    assert.equal(cache.lookupBlob(parseDigest(digestOf(large)))?.size, large.length, 'streamed and hashed');
    assert.equal(cache.lookupBlob(parseDigest(digestOf(layer)))?.size, layer.length);
    assert.equal(cache.lookupBlob(parseDigest(digestOf(indexed)))?.size, indexed.length, 'an indexed file stays');
    assert.ok(!existsSync(join(dir, 'blobs', 'blobs', 'sha256', damaged.hex.slice(0, 2), damaged.hex)), 'the damaged file is deleted');
    assert.ok(!existsSync(join(dir, 'blobs', 'blobs', 'sha256', 'zz', 'notes.txt')), 'the stray name is removed');
    const totals = database.index.totals();
    assert.deepEqual({ blobs: cache.blobs, bytes: cache.bytes }, totals, 'the running totals followed every change');
    assert.equal(totals.blobs, 5);

    // Once reconciled, a miss is a miss: an object put there by hand is not looked for.
    const late = blob('late');
    await store.put(parseDigest(digestOf(late)), late);
    assert.equal(await cache.adoptBlob(parseDigest(digestOf(late))), undefined);
  } finally {
    await cache.close();
  }
});

test('closing stops the pass where it is; the index keeps what it had', async (t) => {
  const { dir, store } = await cacheDir(t);
  for (let i = 0; i < 20; i++) await store.put(parseDigest(digestOf(blob(`unindexed ${i}`))), blob(`unindexed ${i}`));
  const database = new CacheDatabase(join(dir, 'index.db'));
  t.after(() => database.close());
  const held = new HeldListing(join(dir, 'blobs'), cacheModes(false));
  await held.init();
  const cache = await Cache.open({ database, store: held, accessFlushIntervalMs: 60_000, owner: true });
  const closed = cache.close();
  held.release();
  await closed;
  const report = await cache.reconciled!;
  assert.equal(report.adoptedFiles, 0, 'nothing adopted after the close');
  assert.equal(database.index.totals().blobs, 0);
  assert.ok(held.listed <= 1, `the pass stopped at its first entry (listed ${held.listed})`);
});

test('a process that does not own the cache does not reconcile it, and a miss is a miss', async (t) => {
  const { dir, store } = await cacheDir(t);
  const bytes = blob('unindexed');
  await store.put(parseDigest(digestOf(bytes)), bytes);
  const database = new CacheDatabase(join(dir, 'index.db'));
  t.after(() => database.close());
  const cache = await Cache.open({ database, store, accessFlushIntervalMs: 60_000, owner: false });
  assert.equal(cache.reconciled, undefined);
  assert.equal(await cache.adoptBlob(parseDigest(digestOf(bytes))), undefined);
  await cache.close();
});
