import type { Database } from 'better-sqlite3';

/**
 * Ordered schema migrations; PRAGMA user_version records how many ran.
 * Append new entries, never edit old ones.
 */
const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE blobs (
    digest      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL,
    media_type  TEXT,
    created_at  INTEGER NOT NULL,
    last_access INTEGER NOT NULL,
    hits        INTEGER NOT NULL DEFAULT 0
  ) WITHOUT ROWID;
  CREATE INDEX blobs_by_last_access ON blobs (last_access);

  -- One row per (tag, client Accept set): registries answer a tag differently
  -- depending on which manifest types the client accepts.
  CREATE TABLE tags (
    upstream    TEXT NOT NULL,
    repo        TEXT NOT NULL,
    tag         TEXT NOT NULL,
    accept_key  TEXT NOT NULL,
    digest      TEXT NOT NULL,
    media_type  TEXT NOT NULL,
    fetched_at  INTEGER NOT NULL,
    PRIMARY KEY (upstream, repo, tag, accept_key)
  ) WITHOUT ROWID;
  CREATE INDEX tags_by_digest ON tags (digest);

  -- Which blobs and child manifests each cached manifest refers to (for GC).
  CREATE TABLE manifest_refs (
    manifest_digest TEXT NOT NULL,
    child_digest    TEXT NOT NULL,
    PRIMARY KEY (manifest_digest, child_digest)
  ) WITHOUT ROWID;
  CREATE INDEX manifest_refs_by_child ON manifest_refs (child_digest);

  -- Which repositories a blob or manifest was pulled through.
  CREATE TABLE repo_blobs (
    upstream TEXT NOT NULL,
    repo     TEXT NOT NULL,
    digest   TEXT NOT NULL,
    PRIMARY KEY (upstream, repo, digest)
  ) WITHOUT ROWID;
  CREATE INDEX repo_blobs_by_digest ON repo_blobs (digest);
  `,
  `
  -- Digests a warm-up job pinned: never evicted or collected.
  CREATE TABLE pins (
    job    TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (job, digest)
  ) WITHOUT ROWID;
  CREATE INDEX pins_by_digest ON pins (digest);

  CREATE TABLE job_runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    job           TEXT NOT NULL,
    trigger       TEXT NOT NULL,
    started_at    INTEGER NOT NULL,
    finished_at   INTEGER,
    status        TEXT NOT NULL,
    images        INTEGER NOT NULL DEFAULT 0,
    manifests     INTEGER NOT NULL DEFAULT 0,
    blobs_fetched INTEGER NOT NULL DEFAULT 0,
    blobs_skipped INTEGER NOT NULL DEFAULT 0,
    bytes         INTEGER NOT NULL DEFAULT 0,
    errors        TEXT NOT NULL DEFAULT '[]',
    message       TEXT
  );
  CREATE INDEX job_runs_by_job ON job_runs (job, started_at);
  `,
  `
  CREATE TABLE stats_minutes (
    minute              INTEGER PRIMARY KEY,
    hits                INTEGER NOT NULL DEFAULT 0,
    misses              INTEGER NOT NULL DEFAULT 0,
    coalesced           INTEGER NOT NULL DEFAULT 0,
    stale               INTEGER NOT NULL DEFAULT 0,
    notfound_cached     INTEGER NOT NULL DEFAULT 0,
    bytes_from_cache    INTEGER NOT NULL DEFAULT 0,
    bytes_from_upstream INTEGER NOT NULL DEFAULT 0
  );
  `,
  `
  -- Listings the upstream gives, served, paged and filtered here, and stale when it is down.
  CREATE TABLE tag_lists (
    upstream   TEXT NOT NULL,
    repo       TEXT NOT NULL,
    tags       TEXT NOT NULL, -- JSON array, in lexical order
    fetched_at INTEGER NOT NULL,
    PRIMARY KEY (upstream, repo)
  ) WITHOUT ROWID;

  CREATE TABLE referrers (
    upstream   TEXT NOT NULL,
    repo       TEXT NOT NULL,
    subject    TEXT NOT NULL,
    manifests  TEXT NOT NULL, -- JSON array of descriptors, unfiltered
    source     TEXT NOT NULL, -- 'api' or 'tag-schema'
    fetched_at INTEGER NOT NULL,
    PRIMARY KEY (upstream, repo, subject)
  ) WITHOUT ROWID;
  `,
];

/** The schema version this Stevedore writes. */
export const SCHEMA_VERSION = MIGRATIONS.length;

/** Brings the index to `target` (the current version; tests build older ones); returns how many migrations ran. */
export function migrate(db: Database, target = SCHEMA_VERSION): number {
  const current = db.pragma('user_version', { simple: true }) as number;
  if (current > MIGRATIONS.length) {
    throw new Error(`cache index schema version ${current} is newer than this Stevedore (${MIGRATIONS.length}); upgrade Stevedore`);
  }
  let ran = 0;
  for (let version = current; version < target; version++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[version]!);
      db.pragma(`user_version = ${version + 1}`);
    })();
    ran += 1;
  }
  return ran;
}
