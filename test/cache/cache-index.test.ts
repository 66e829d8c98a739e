import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { CacheDatabase } from '../../src/cache/database.js';
import { migrate, SCHEMA_VERSION } from '../../src/cache/migrations.js';

const digest = (c: string): string => `sha256:${c.repeat(64)}`;

test('index: migrations are versioned, and blobs, tags and refs round-trip', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-index-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'index.db');
  const database = new CacheDatabase(path);
  const index = database.index;
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
  database.close();

  const raw = new Database(path);
  assert.equal(raw.pragma('user_version', { simple: true }), SCHEMA_VERSION);
  assert.equal(raw.pragma('journal_mode', { simple: true }), 'wal');
  const refs = raw.prepare('SELECT child_digest AS c FROM manifest_refs WHERE manifest_digest = ? ORDER BY c').all(digest('b'));
  assert.deepEqual(refs, [{ c: digest('a') }, { c: digest('c') }]);
  const schema = raw.prepare("SELECT type, name, sql FROM sqlite_master ORDER BY name").all();
  // Reopening runs no migration twice: nothing to run, nothing changed.
  assert.equal(migrate(raw), 0);
  assert.deepEqual(raw.prepare("SELECT type, name, sql FROM sqlite_master ORDER BY name").all(), schema);
  raw.close();
  new CacheDatabase(path).close();
});

test('an index from an older Stevedore is migrated in place, keeping its rows; one from a newer Stevedore is refused', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-index-old-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'index.db');
  // Version 1: blobs, tags, refs and repository links, before pins, job runs and statistics existed.
  const old = new Database(path);
  assert.equal(migrate(old, 1), 1);
  old.prepare('INSERT INTO blobs (digest, size, media_type, created_at, last_access, hits) VALUES (?, 10, NULL, 1, 2, 3)').run(digest('e'));
  old.prepare('INSERT INTO repo_blobs (upstream, repo, digest) VALUES (?, ?, ?)').run('docker.io', 'library/old', digest('e'));
  assert.throws(() => old.prepare('SELECT * FROM pins').all(), /no such table/);
  old.close();

  const reopened = new CacheDatabase(path);
  const index = reopened.index;
  assert.deepEqual(index.getBlob(digest('e')), { digest: digest('e'), size: 10, mediaType: null, createdAt: 1, lastAccess: 2, hits: 3 });
  assert.ok(index.isLinked('docker.io', 'library/old', digest('e')));
  assert.equal(index.isPinned(digest('e')), false, 'the pins table exists now');
  reopened.close();
  const raw = new Database(path);
  assert.equal(raw.pragma('user_version', { simple: true }), SCHEMA_VERSION);
  raw.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
  raw.close();
  assert.throws(() => new CacheDatabase(path), new RegExp(`schema version ${SCHEMA_VERSION + 1} is newer than this Stevedore \\(${SCHEMA_VERSION}\\); upgrade Stevedore`));
});
