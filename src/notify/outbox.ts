import { chmodSync, closeSync, openSync } from 'node:fs';
import Database from 'better-sqlite3';

/** One event waiting for one endpoint: its JSON as it will be sent. */
export interface OutboxRow {
  seq: number;
  body: string;
  recordedAt: number;
}

export interface NewRow {
  endpoint: string;
  body: string;
  recordedAt: number;
}

/**
 * The durable outbox (`notifications.db` in cache.dir): a row per event and
 * endpoint, kept until that endpoint answered 2xx for it. Rows of an endpoint
 * go out in `seq` order, the order they were recorded in. Its own file, so
 * that the CLI (stevedore verify) can add events while the server runs and the
 * index's writers never wait on it.
 */
export class Outbox {
  private readonly db: Database.Database;
  private readonly insert: Database.Statement<[string, string, number]>;
  private readonly oldest: Database.Statement<[string, number], OutboxRow>;
  private readonly removeRange: Database.Statement<[string, number, number]>;
  private readonly countOf: Database.Statement<[string], { n: number }>;
  private readonly dropOldest: Database.Statement<[string, string, number]>;
  private readonly appendAll: (rows: readonly NewRow[]) => void;
  /** Rows per endpoint, kept as rows come and go; recounted from the file when other processes may have added some. */
  private readonly counts = new Map<string, number>();

  /** `fileMode` creates the file with it, as the index is. */
  constructor(path: string, fileMode?: number) {
    if (fileMode !== undefined) {
      closeSync(openSync(path, 'a', fileMode));
      chmodSync(path, fileMode);
    }
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    // A commit is safe from a crash of the process (kill -9); only a power loss may take the last ones.
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        endpoint TEXT NOT NULL,
        body TEXT NOT NULL,
        recorded_at INTEGER NOT NULL
      );
      CREATE INDEX IF NOT EXISTS outbox_by_endpoint ON outbox (endpoint, seq);
    `);
    this.insert = this.db.prepare('INSERT INTO outbox (endpoint, body, recorded_at) VALUES (?, ?, ?)');
    this.oldest = this.db.prepare('SELECT seq, body, recorded_at AS recordedAt FROM outbox WHERE endpoint = ? ORDER BY seq LIMIT ?');
    this.removeRange = this.db.prepare('DELETE FROM outbox WHERE endpoint = ? AND seq BETWEEN ? AND ?');
    this.countOf = this.db.prepare('SELECT count(*) AS n FROM outbox WHERE endpoint = ?');
    this.dropOldest = this.db.prepare('DELETE FROM outbox WHERE endpoint = ? AND seq IN (SELECT seq FROM outbox WHERE endpoint = ? ORDER BY seq LIMIT ?)');
    this.appendAll = this.db.transaction((rows: readonly NewRow[]) => {
      for (const row of rows) this.insert.run(row.endpoint, row.body, row.recordedAt);
    });
  }

  /** Adds rows in one transaction; then, per endpoint over `maxPending`, drops the oldest. Returns the drops per endpoint. */
  append(rows: readonly NewRow[], maxPending: number): Map<string, number> {
    const dropped = new Map<string, number>();
    if (rows.length === 0) return dropped;
    const added = new Map<string, number>();
    for (const row of rows) added.set(row.endpoint, (added.get(row.endpoint) ?? this.pending(row.endpoint)) + 1);
    this.appendAll(rows);
    for (const [endpoint, count] of added) this.counts.set(endpoint, count);
    for (const [endpoint, count] of this.counts) {
      if (count <= maxPending) continue;
      const excess = count - maxPending;
      const removed = this.dropOldest.run(endpoint, endpoint, excess).changes;
      this.counts.set(endpoint, count - removed);
      dropped.set(endpoint, removed);
    }
    return dropped;
  }

  /** The endpoint's oldest rows, at most `limit`. */
  take(endpoint: string, limit: number): OutboxRow[] {
    return this.oldest.all(endpoint, limit);
  }

  /** Removes the rows a receiver acknowledged: seq `first` to `last` of that endpoint. */
  acknowledge(endpoint: string, first: number, last: number): void {
    const removed = this.removeRange.run(endpoint, first, last).changes;
    this.counts.set(endpoint, Math.max(0, this.pending(endpoint) - removed));
  }

  /** Rows waiting for the endpoint. */
  pending(endpoint: string): number {
    let count = this.counts.get(endpoint);
    if (count === undefined) {
      count = this.countOf.get(endpoint)!.n;
      this.counts.set(endpoint, count);
    }
    return count;
  }

  /** Re-reads the counts from the file (another process may have added rows). */
  recount(endpoint: string): number {
    this.counts.delete(endpoint);
    return this.pending(endpoint);
  }

  /** Deletes the rows of endpoints no longer configured; returns how many went. */
  forgetOthers(endpoints: readonly string[]): number {
    const placeholders = endpoints.map(() => '?').join(', ');
    const removed = this.db.prepare(`DELETE FROM outbox WHERE endpoint NOT IN (${placeholders || "''"})`).run(...endpoints).changes;
    this.counts.clear();
    return removed;
  }

  close(): void {
    this.db.close();
  }
}
