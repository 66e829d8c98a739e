import type Database from 'better-sqlite3';

export interface CachedImage {
  upstream: string;
  repo: string;
  tag: string;
  digest: string;
  mediaType: string;
  /** The manifest plus everything it refers to (two levels: index → manifests → blobs). */
  bytes: number;
  lastPull: number;
  hits: number;
  fetchedAt: number;
}

/** What the dashboard lists: cached tags with their size, last pull and hit count. */
export class Catalog {
  private readonly images;

  constructor(db: Database.Database) {
    this.images = db.prepare<[number], CachedImage>(`
      WITH latest AS (
        SELECT upstream, repo, tag, digest, media_type AS mediaType, MAX(fetched_at) AS fetchedAt
        FROM tags GROUP BY upstream, repo, tag
      ),
      reach AS (
        SELECT l.digest AS root, l.digest AS digest FROM latest l
        UNION SELECT l.digest, r.child_digest FROM latest l JOIN manifest_refs r ON r.manifest_digest = l.digest
        UNION SELECT l.digest, r2.child_digest FROM latest l
          JOIN manifest_refs r1 ON r1.manifest_digest = l.digest
          JOIN manifest_refs r2 ON r2.manifest_digest = r1.child_digest
      ),
      sizes AS (
        SELECT reach.root, COALESCE(SUM(b.size), 0) AS bytes FROM reach JOIN blobs b ON b.digest = reach.digest GROUP BY reach.root
      )
      SELECT l.upstream, l.repo, l.tag, l.digest, l.mediaType, COALESCE(s.bytes, 0) AS bytes,
             COALESCE(m.last_access, l.fetchedAt) AS lastPull, COALESCE(m.hits, 0) AS hits, l.fetchedAt
      FROM latest l
      LEFT JOIN sizes s ON s.root = l.digest
      LEFT JOIN blobs m ON m.digest = l.digest
      ORDER BY hits DESC, lastPull DESC
      LIMIT ?`);
  }

  list(limit = 100): CachedImage[] {
    return this.images.all(limit);
  }
}
