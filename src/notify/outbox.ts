import { chmodSync, closeSync, openSync } from 'node:fs';
import Database from 'better-sqlite3';

/** Events of one endpoint as they went in together, serialized, in recording order. */
export interface Chunk {
  endpoint: string;
  events: readonly string[];
  /** When the first of them was recorded (ms since the epoch). */
  recordedAt: number;
}

/** The oldest events of an endpoint, from the rows `firstSeq` to `lastSeq`. */
export interface Taken {
  firstSeq: number;
  lastSeq: number;
  events: string[];
  recordedAt: number;
  /** No further event fits in this batch: it goes now, whatever its age. */
  full: boolean;
}

/** Serialized events never hold a raw newline (JSON escapes it), so it separates them in a row. */
const SEPARATOR = '\n';

interface Row {
  seq: number;
  count: number;
  body: string;
  recordedAt: number;
}

/**
 * The durable outbox (`notifications.db` in cache.dir): the events each
 * endpoint has not acknowledged with a 2xx yet. A row holds the events of one
 * endpoint one flush wrote (at most a batch of them), so a busy mirror costs
 * a row per endpoint and flush, not per event. Rows of an endpoint go out in
 * `seq` order, the order they were recorded in. Its own file, so that the CLI
 * (stevedore verify) can add events while the server runs, and the index's
 * writers never wait on it.
 */
export class Outbox {
  private readonly db: Database.Database;
  private readonly insert: Database.Statement<[string, number, string, number]>;
  private readonly oldest: Database.Statement<[string, number], Row>;
  private readonly oldestAfter: Database.Statement<[string, number], Row>;
  private readonly removeRange: Database.Statement<[string, number, number], { count: number }>;
  private readonly removeOne: Database.Statement<[number]>;
  private readonly shrink: Database.Statement<[number, string, number]>;
  private readonly countOf: Database.Statement<[string], { n: number | null }>;
  private readonly appendAll: (chunks: readonly Chunk[], maxPending: number) => Appended;
  /** Events per endpoint, kept as rows come and go; recounted from the file when other processes may have added some. */
  private readonly counts = new Map<string, number>();
  /** Per endpoint, the last row of the batch in flight: drops leave it alone, so what is acknowledged is what was sent. */
  private readonly inFlight = new Map<string, number>();
  private closed = false;

  /** `fileMode` creates the file with it, as the index is. */
  constructor(path: string, fileMode?: number) {
    if (fileMode !== undefined) {
      closeSync(openSync(path, 'a', fileMode));
      try {
        chmodSync(path, fileMode);
      } catch (err) {
        // Another user's file (the server's, opened by the CLI): its mode is the owner's business.
        if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
      }
    }
    this.db = new Database(path);
    // First: another process (the server, stevedore verify) may be writing while this one opens the file.
    this.db.pragma('busy_timeout = 5000');
    this.db.pragma('journal_mode = WAL');
    // A commit is safe from a crash of the process (kill -9); only a power loss may take the last ones.
    this.db.pragma('synchronous = NORMAL');
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        endpoint TEXT NOT NULL,
        count INTEGER NOT NULL,
        body TEXT NOT NULL,
        recorded_at INTEGER NOT NULL
      );
      CREATE INDEX IF NOT EXISTS outbox_by_endpoint ON outbox (endpoint, seq);
    `);
    this.insert = this.db.prepare('INSERT INTO outbox (endpoint, count, body, recorded_at) VALUES (?, ?, ?, ?)');
    this.oldest = this.db.prepare('SELECT seq, count, body, recorded_at AS recordedAt FROM outbox WHERE endpoint = ? ORDER BY seq LIMIT ?');
    this.oldestAfter = this.db.prepare('SELECT seq, count, body, recorded_at AS recordedAt FROM outbox WHERE endpoint = ? AND seq > ? ORDER BY seq LIMIT 1');
    this.removeRange = this.db.prepare('DELETE FROM outbox WHERE endpoint = ? AND seq BETWEEN ? AND ? RETURNING count');
    this.removeOne = this.db.prepare('DELETE FROM outbox WHERE seq = ?');
    this.shrink = this.db.prepare('UPDATE outbox SET count = ?, body = ? WHERE seq = ?');
    this.countOf = this.db.prepare('SELECT sum(count) AS n FROM outbox WHERE endpoint = ?');
    // Inserts and drops commit together: a failure leaves nothing half done to be written twice.
    this.appendAll = this.db.transaction((chunks: readonly Chunk[], maxPending: number): Appended => {
      const totals = new Map<string, number>();
      // The counts before the inserts (read from the file if not known yet), then what they add.
      for (const chunk of chunks) if (!totals.has(chunk.endpoint)) totals.set(chunk.endpoint, this.pending(chunk.endpoint));
      for (const chunk of chunks) {
        this.insert.run(chunk.endpoint, chunk.events.length, chunk.events.join(SEPARATOR), chunk.recordedAt);
        totals.set(chunk.endpoint, totals.get(chunk.endpoint)! + chunk.events.length);
      }
      const dropped = new Map<string, number>();
      for (const [endpoint, total] of totals) {
        const gone = total > maxPending ? this.dropOldest(endpoint, total - maxPending) : 0;
        totals.set(endpoint, total - gone);
        if (gone > 0) dropped.set(endpoint, gone);
      }
      return { totals, dropped };
    });
  }

  /** Adds chunks; then, per endpoint over `maxPending` events, drops the oldest (not the batch in flight). Returns the drops per endpoint. */
  append(chunks: readonly Chunk[], maxPending: number): Map<string, number> {
    const filled = chunks.filter((c) => c.events.length > 0);
    if (filled.length === 0) return new Map();
    const { totals, dropped } = this.appendAll(filled, maxPending);
    for (const [endpoint, total] of totals) this.counts.set(endpoint, total);
    return dropped;
  }

  /** The endpoint's oldest events, at most `limit` (but always a whole first row); in flight until acknowledged or released. */
  take(endpoint: string, limit: number): Taken | undefined {
    let taken: Taken | undefined;
    // Row by row: the rows after the batch (a busy endpoint's backlog) are never read.
    for (const row of this.oldest.iterate(endpoint, limit)) {
      taken ??= { firstSeq: row.seq, lastSeq: row.seq, events: [], recordedAt: row.recordedAt, full: false };
      if (taken.events.length > 0 && taken.events.length + row.count > limit) {
        taken.full = true;
        break;
      }
      taken.events.push(...row.body.split(SEPARATOR));
      taken.lastSeq = row.seq;
      if (taken.events.length >= limit) {
        taken.full = true;
        break;
      }
    }
    if (taken) this.inFlight.set(endpoint, taken.lastSeq);
    return taken;
  }

  /** Removes what a receiver acknowledged. */
  acknowledge(endpoint: string, taken: Taken): void {
    this.inFlight.delete(endpoint);
    const removed = this.removeRange.all(endpoint, taken.firstSeq, taken.lastSeq).reduce((sum, row) => sum + row.count, 0);
    this.counts.set(endpoint, Math.max(0, this.pending(endpoint) - removed));
  }

  /** The batch was not acknowledged: it stays, first in line, and may be dropped again. */
  release(endpoint: string): void {
    this.inFlight.delete(endpoint);
  }

  /** Events waiting for the endpoint (the last known count once closed). */
  pending(endpoint: string): number {
    let count = this.counts.get(endpoint);
    if (count === undefined) {
      if (this.closed) return 0;
      count = this.countOf.get(endpoint)!.n ?? 0;
      this.counts.set(endpoint, count);
    }
    return count;
  }

  /** Re-reads the count from the file (another process may have added rows). */
  recount(endpoint: string): number {
    if (this.closed) return this.pending(endpoint);
    this.counts.delete(endpoint);
    return this.pending(endpoint);
  }

  /** Deletes the rows of endpoints no longer configured; returns how many events went. */
  forgetOthers(endpoints: readonly string[]): number {
    const placeholders = endpoints.map(() => '?').join(', ');
    const where = `endpoint NOT IN (${placeholders || "''"})`;
    const events = (this.db.prepare(`SELECT sum(count) AS n FROM outbox WHERE ${where}`).get(...endpoints) as { n: number | null }).n ?? 0;
    this.db.prepare(`DELETE FROM outbox WHERE ${where}`).run(...endpoints);
    this.counts.clear();
    return events;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
  }

  /** Drops the endpoint's `excess` oldest events after the batch in flight: whole rows, and the front of the last one. */
  private dropOldest(endpoint: string, excess: number): number {
    let left = excess;
    let after = this.inFlight.get(endpoint) ?? 0;
    while (left > 0) {
      const row = this.oldestAfter.get(endpoint, after);
      if (!row) break;
      if (row.count <= left) {
        this.removeOne.run(row.seq);
        left -= row.count;
      } else {
        const kept = row.body.split(SEPARATOR).slice(left);
        this.shrink.run(kept.length, kept.join(SEPARATOR), row.seq);
        left = 0;
      }
      after = row.seq;
    }
    return excess - left;
  }
}

interface Appended {
  /** Events per endpoint after the append and its drops. */
  totals: Map<string, number>;
  dropped: Map<string, number>;
}
