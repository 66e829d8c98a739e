import type Database from 'better-sqlite3';

/** A repository's tag list as the upstream last gave it, sorted. */
export interface TagListRecord {
  tags: string[];
  fetchedAt: number;
}

/** The referrers of a subject as the upstream last gave them, unfiltered. */
export interface ReferrersRecord {
  /** The image index's descriptors, as JSON. */
  manifests: string;
  /** Where they came from: the referrers API, or the referrers tag schema. */
  source: 'api' | 'tag-schema';
  fetchedAt: number;
}

/**
 * Listings the upstream gives (tag lists, referrers), kept in the cache's
 * SQLite database, so they can be served, paged and filtered here and, when
 * the upstream is down, served stale like tags.
 */
export class Listings {
  private readonly stmts;

  constructor(db: Database.Database) {
    this.stmts = {
      getTags: db.prepare<[string, string], { tags: string; fetchedAt: number }>('SELECT tags, fetched_at AS fetchedAt FROM tag_lists WHERE upstream = ? AND repo = ?'),
      putTags: db.prepare<[string, string, string, number]>(
        `INSERT INTO tag_lists (upstream, repo, tags, fetched_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (upstream, repo) DO UPDATE SET tags = excluded.tags, fetched_at = excluded.fetched_at`,
      ),
      getReferrers: db.prepare<[string, string, string], ReferrersRecord>(
        'SELECT manifests, source, fetched_at AS fetchedAt FROM referrers WHERE upstream = ? AND repo = ? AND subject = ?',
      ),
      putReferrers: db.prepare<[string, string, string, string, string, number]>(
        `INSERT INTO referrers (upstream, repo, subject, manifests, source, fetched_at) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (upstream, repo, subject) DO UPDATE SET manifests = excluded.manifests, source = excluded.source, fetched_at = excluded.fetched_at`,
      ),
    };
  }

  tagList(upstream: string, repo: string): TagListRecord | undefined {
    const row = this.stmts.getTags.get(upstream, repo);
    return row ? { tags: JSON.parse(row.tags) as string[], fetchedAt: row.fetchedAt } : undefined;
  }

  putTagList(upstream: string, repo: string, record: TagListRecord): void {
    this.stmts.putTags.run(upstream, repo, JSON.stringify(record.tags), record.fetchedAt);
  }

  referrers(upstream: string, repo: string, subject: string): ReferrersRecord | undefined {
    return this.stmts.getReferrers.get(upstream, repo, subject);
  }

  putReferrers(upstream: string, repo: string, subject: string, record: ReferrersRecord): void {
    this.stmts.putReferrers.run(upstream, repo, subject, record.manifests, record.source, record.fetchedAt);
  }
}
