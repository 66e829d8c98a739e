import type { AccessUpdate, CacheIndex } from './cache-index.js';

/**
 * Collects last-access times and hit counts in memory and writes them in one
 * transaction per interval, so a cache hit costs no synchronous SQLite write.
 */
export class AccessRecorder {
  private pending = new Map<string, AccessUpdate>();
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly index: CacheIndex, intervalMs: number) {
    this.timer = setInterval(() => this.flush(), Math.max(intervalMs, 100));
    this.timer.unref();
  }

  record(digest: string, at = Date.now()): void {
    const entry = this.pending.get(digest);
    if (entry) {
      entry.at = at;
      entry.hits += 1;
    } else {
      this.pending.set(digest, { digest, at, hits: 1 });
    }
  }

  flush(): void {
    if (this.pending.size === 0) return;
    const batch = this.pending;
    this.pending = new Map();
    this.index.recordAccess(batch.values());
  }

  close(): void {
    clearInterval(this.timer);
    this.flush();
  }
}
