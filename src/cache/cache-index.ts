import type Database from 'better-sqlite3';

export interface BlobRecord {
  digest: string;
  size: number;
  mediaType: string | null;
  createdAt: number;
  lastAccess: number;
  hits: number;
}

export interface TagRecord {
  upstream: string;
  repo: string;
  tag: string;
  acceptKey: string;
  digest: string;
  mediaType: string;
  fetchedAt: number;
}

export interface EvictionCandidate {
  digest: string;
  size: number;
  mediaType: string | null;
  lastAccess: number;
}

export interface AccessUpdate {
  digest: string;
  at: number;
  hits: number;
}

/** The cache index: metadata only; the bytes live in the store. */
export class CacheIndex {
  private readonly stmts;

  constructor(private readonly db: Database.Database) {
    this.stmts = {
      getBlob: db.prepare<[string], BlobRecord>(
        `SELECT digest, size, media_type AS mediaType, created_at AS createdAt, last_access AS lastAccess, hits
         FROM blobs WHERE digest = ?`,
      ),
      // A stored media type is never overwritten: the first verified answer for a digest decides it.
      putBlob: db.prepare(
        `INSERT INTO blobs (digest, size, media_type, created_at, last_access, hits)
         VALUES (@digest, @size, @mediaType, @now, @now, 0)
         ON CONFLICT (digest) DO UPDATE SET media_type = COALESCE(blobs.media_type, excluded.media_type)`,
      ),
      deleteBlob: db.prepare('DELETE FROM blobs WHERE digest = ?'),
      touch: db.prepare('UPDATE blobs SET last_access = MAX(last_access, @at), hits = hits + @hits WHERE digest = @digest'),
      getTag: db.prepare<[string, string, string, string], TagRecord>(
        `SELECT upstream, repo, tag, accept_key AS acceptKey, digest, media_type AS mediaType, fetched_at AS fetchedAt
         FROM tags WHERE upstream = ? AND repo = ? AND tag = ? AND accept_key = ?`,
      ),
      putTag: db.prepare(
        `INSERT INTO tags (upstream, repo, tag, accept_key, digest, media_type, fetched_at)
         VALUES (@upstream, @repo, @tag, @acceptKey, @digest, @mediaType, @fetchedAt)
         ON CONFLICT (upstream, repo, tag, accept_key) DO UPDATE SET
           digest = excluded.digest, media_type = excluded.media_type, fetched_at = excluded.fetched_at`,
      ),
      putRef: db.prepare('INSERT OR IGNORE INTO manifest_refs (manifest_digest, child_digest) VALUES (?, ?)'),
      putRepoBlob: db.prepare('INSERT OR IGNORE INTO repo_blobs (upstream, repo, digest) VALUES (?, ?, ?)'),
      hasRepoBlob: db.prepare<[string, string, string], { n: number }>('SELECT 1 AS n FROM repo_blobs WHERE upstream = ? AND repo = ? AND digest = ?'),
      totals: db.prepare<[], { blobs: number; bytes: number }>(
        'SELECT COUNT(*) AS blobs, COALESCE(SUM(size), 0) AS bytes FROM blobs',
      ),
      lru: db.prepare<[number], EvictionCandidate>(
        `SELECT digest, size, media_type AS mediaType, last_access AS lastAccess FROM blobs
         WHERE digest NOT IN (SELECT digest FROM pins) ORDER BY last_access ASC LIMIT ?`,
      ),
      idle: db.prepare<[number], EvictionCandidate>(
        `SELECT digest, size, media_type AS mediaType, last_access AS lastAccess FROM blobs
         WHERE last_access < ? AND digest NOT IN (SELECT digest FROM pins)`,
      ),
      // Layers and configs that no cached manifest refers to.
      unreferenced: db.prepare<[number], EvictionCandidate>(
        `SELECT b.digest, b.size, b.media_type AS mediaType, b.last_access AS lastAccess FROM blobs b
         WHERE b.media_type IS NULL AND b.created_at < ?
           AND NOT EXISTS (SELECT 1 FROM manifest_refs r JOIN blobs m ON m.digest = r.manifest_digest WHERE r.child_digest = b.digest)
           AND NOT EXISTS (SELECT 1 FROM pins p WHERE p.digest = b.digest)`,
      ),
      pageAfter: db.prepare<[string, number], BlobRecord>(
        `SELECT digest, size, media_type AS mediaType, created_at AS createdAt, last_access AS lastAccess, hits
         FROM blobs WHERE digest > ? ORDER BY digest LIMIT ?`,
      ),
      removeRefs: db.prepare('DELETE FROM manifest_refs WHERE manifest_digest = ?'),
      removeRepoLinks: db.prepare('DELETE FROM repo_blobs WHERE digest = ?'),
      removeTags: db.prepare('DELETE FROM tags WHERE digest = ?'),
      isPinned: db.prepare<[string], { n: number }>('SELECT COUNT(*) AS n FROM pins WHERE digest = ?'),
    };
  }

  /** Least recently used blobs first, pinned ones left out. */
  leastRecentlyUsed(limit: number): EvictionCandidate[] {
    return this.stmts.lru.all(limit);
  }

  idleSince(before: number): EvictionCandidate[] {
    return this.stmts.idle.all(before);
  }

  unreferencedSince(createdBefore: number): EvictionCandidate[] {
    return this.stmts.unreferenced.all(createdBefore);
  }

  /**
   * Every blob in digest order, a page at a time: memory stays one page
   * whatever the index holds, and rows may be changed between pages.
   */
  *allBlobs(pageSize = 1000): Generator<BlobRecord> {
    let after = '';
    for (;;) {
      const page = this.stmts.pageAfter.all(after, pageSize);
      yield* page;
      if (page.length < pageSize) return;
      after = page[page.length - 1]!.digest;
    }
  }

  isPinned(digest: string): boolean {
    return (this.stmts.isPinned.get(digest)?.n ?? 0) > 0;
  }

  /** Forgets a blob and everything that points at it, in one transaction. */
  removeBlob(digest: string): void {
    this.db.transaction(() => {
      this.stmts.deleteBlob.run(digest);
      this.stmts.removeRefs.run(digest);
      this.stmts.removeRepoLinks.run(digest);
      this.stmts.removeTags.run(digest);
    })();
  }

  getBlob(digest: string): BlobRecord | undefined {
    return this.stmts.getBlob.get(digest);
  }

  putBlob(entry: { digest: string; size: number; mediaType?: string; now: number }): void {
    this.stmts.putBlob.run({ ...entry, mediaType: entry.mediaType ?? null });
  }

  /** Indexes a manifest and the digests it refers to, atomically. */
  putManifest(entry: { digest: string; size: number; mediaType: string; now: number; children: string[] }): void {
    this.db.transaction(() => {
      this.putBlob(entry);
      for (const child of entry.children) this.stmts.putRef.run(entry.digest, child);
    })();
  }

  deleteBlob(digest: string): void {
    this.stmts.deleteBlob.run(digest);
  }

  getTag(upstream: string, repo: string, tag: string, acceptKey: string): TagRecord | undefined {
    return this.stmts.getTag.get(upstream, repo, tag, acceptKey);
  }

  putTag(record: TagRecord): void {
    this.stmts.putTag.run(record);
  }

  linkRepo(upstream: string, repo: string, digest: string): void {
    this.stmts.putRepoBlob.run(upstream, repo, digest);
  }

  /** Whether the digest was fetched through, or confirmed for, this repository. */
  isLinked(upstream: string, repo: string, digest: string): boolean {
    return this.stmts.hasRepoBlob.get(upstream, repo, digest) !== undefined;
  }

  /** Applies batched access updates in one transaction. */
  recordAccess(updates: Iterable<AccessUpdate>): void {
    this.db.transaction((rows: Iterable<AccessUpdate>) => {
      for (const row of rows) this.stmts.touch.run(row);
    })(updates);
  }

  totals(): { blobs: number; bytes: number } {
    return this.stmts.totals.get() ?? { blobs: 0, bytes: 0 };
  }

}
