import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { CacheIndex } from '../../src/cache/cache-index.js';

const digest = (c: string): string => `sha256:${c.repeat(64)}`;

test('index: migrations are versioned, and blobs, tags and refs round-trip', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-index-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'index.db');
  const index = new CacheIndex(path);
  index.putBlob({ digest: digest('a'), size: 10, now: 1000 });
  index.putManifest({ digest: digest('b'), size: 20, mediaType: 'application/vnd.oci.image.manifest.v1+json', now: 2000, children: [digest('a'), digest('c')] });
  index.putTag({ upstream: 'docker.io', repo: 'library/x', tag: 'latest', acceptKey: 'k', digest: digest('b'), mediaType: 'application/vnd.oci.image.manifest.v1+json', fetchedAt: 3000 });
  index.putTag({ upstream: 'docker.io', repo: 'library/x', tag: 'latest', acceptKey: 'k', digest: digest('d'), mediaType: 'm', fetchedAt: 4000 });

  assert.deepEqual(index.getBlob(digest('a')), { digest: digest('a'), size: 10, mediaType: null, createdAt: 1000, lastAccess: 1000, hits: 0 });
  assert.equal(index.getBlob(digest('b'))?.mediaType, 'application/vnd.oci.image.manifest.v1+json');
  assert.equal(index.getBlob(digest('z')), undefined);
  assert.equal(index.getTag('docker.io', 'library/x', 'latest', 'k')?.digest, digest('d'));
  assert.equal(index.getTag('docker.io', 'library/x', 'latest', 'other'), undefined);
  assert.deepEqual(index.totals(), { blobs: 2, bytes: 30 });

  index.recordAccess([{ digest: digest('a'), at: 5000, hits: 3 }, { digest: digest('a'), at: 4000, hits: 1 }]);
  const touched = index.getBlob(digest('a'));
  assert.equal(touched?.lastAccess, 5000, 'last access never moves backwards');
  assert.equal(touched?.hits, 4);

  index.deleteBlob(digest('a'));
  assert.equal(index.getBlob(digest('a')), undefined);
  index.close();

  const raw = new Database(path);
  assert.equal(raw.pragma('user_version', { simple: true }), 3);
  assert.equal(raw.pragma('journal_mode', { simple: true }), 'wal');
  const refs = raw.prepare('SELECT child_digest AS c FROM manifest_refs WHERE manifest_digest = ? ORDER BY c').all(digest('b'));
  assert.deepEqual(refs, [{ c: digest('a') }, { c: digest('c') }]);
  raw.close();
  // Reopening runs no migration twice.
  new CacheIndex(path).close();
});
