import { chmodSync, closeSync, openSync } from 'node:fs';
import Database from 'better-sqlite3';
import { Catalog } from './catalog.js';
import { CacheIndex } from './cache-index.js';
import { JobHistory } from './job-history.js';
import { Listings } from './listings.js';
import { migrate } from './migrations.js';
import { StatsHistory } from './stats-history.js';

/**
 * The instance's SQLite database (`index.db` in cache.dir): the cache index,
 * and beside it the warm-up history, the per-minute statistics and the
 * catalog the dashboard lists, and the tag lists and referrers upstreams gave.
 * One connection in WAL mode, migrated on open.
 */
export class CacheDatabase {
  readonly index: CacheIndex;
  readonly jobs: JobHistory;
  readonly stats: StatsHistory;
  readonly catalog: Catalog;
  readonly listings: Listings;
  private readonly db: Database.Database;

  /** `fileMode` creates the file with it (its -wal and -shm files take the same); the owner passes it. */
  constructor(path: string, fileMode?: number) {
    if (fileMode !== undefined) {
      closeSync(openSync(path, 'a', fileMode));
      chmodSync(path, fileMode);
    }
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('busy_timeout = 5000');
    migrate(this.db);
    this.index = new CacheIndex(this.db);
    this.jobs = new JobHistory(this.db);
    this.stats = new StatsHistory(this.db);
    this.catalog = new Catalog(this.db);
    this.listings = new Listings(this.db);
  }

  /** The raw connection, for tools and tests that read the tables directly. */
  get connection(): Database.Database {
    return this.db;
  }

  close(): void {
    this.db.close();
  }
}
