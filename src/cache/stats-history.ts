import type Database from 'better-sqlite3';

export interface MinuteCounts {
  minute: number;
  hits: number;
  misses: number;
  coalesced: number;
  stale: number;
  notFoundCached: number;
  bytesFromCache: number;
  bytesFromUpstream: number;
}

type Counts = Omit<MinuteCounts, 'minute'>;

const COLUMNS = `minute, hits, misses, coalesced, stale, notfound_cached AS notFoundCached,
  bytes_from_cache AS bytesFromCache, bytes_from_upstream AS bytesFromUpstream`;

/** Per-minute request counts, kept in SQLite so the dashboard's history survives restarts. */
export class StatsHistory {
  private readonly stmts;

  constructor(db: Database.Database) {
    this.stmts = {
      add: db.prepare(
        `INSERT INTO stats_minutes (minute, hits, misses, coalesced, stale, notfound_cached, bytes_from_cache, bytes_from_upstream)
         VALUES (@minute, @hits, @misses, @coalesced, @stale, @notFoundCached, @bytesFromCache, @bytesFromUpstream)
         ON CONFLICT (minute) DO UPDATE SET hits = hits + excluded.hits, misses = misses + excluded.misses,
           coalesced = coalesced + excluded.coalesced, stale = stale + excluded.stale,
           notfound_cached = notfound_cached + excluded.notfound_cached,
           bytes_from_cache = bytes_from_cache + excluded.bytes_from_cache,
           bytes_from_upstream = bytes_from_upstream + excluded.bytes_from_upstream`,
      ),
      since: db.prepare<[number], MinuteCounts>(`SELECT ${COLUMNS} FROM stats_minutes WHERE minute >= ? ORDER BY minute`),
      totals: db.prepare<[], Counts>(
        `SELECT COALESCE(SUM(hits), 0) AS hits, COALESCE(SUM(misses), 0) AS misses, COALESCE(SUM(coalesced), 0) AS coalesced,
           COALESCE(SUM(stale), 0) AS stale, COALESCE(SUM(notfound_cached), 0) AS notFoundCached,
           COALESCE(SUM(bytes_from_cache), 0) AS bytesFromCache, COALESCE(SUM(bytes_from_upstream), 0) AS bytesFromUpstream
         FROM stats_minutes`,
      ),
      prune: db.prepare<[number]>('DELETE FROM stats_minutes WHERE minute < ?'),
    };
  }

  add(minute: number, counts: Counts): void {
    if (Object.values(counts).every((v) => v === 0)) return;
    this.stmts.add.run({ minute, ...counts });
  }

  since(minute: number): MinuteCounts[] {
    return this.stmts.since.all(minute);
  }

  totals(): Counts {
    return this.stmts.totals.get()!;
  }

  /** Keeps the series bounded (the totals live on in the rows that remain). */
  prune(before: number): void {
    this.stmts.prune.run(before);
  }
}
