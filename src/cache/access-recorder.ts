import type { AccessUpdate, CacheIndex } from './cache-index.js';

/**
 * Collects last-access times and hit counts in memory and writes them in one
 * transaction per interval, so a cache hit costs no synchronous SQLite write.
 */
export class AccessRecorder {
  private pending = new Map<string, AccessUpdate>();
  private readonly timer: NodeJS.Timeout;

  /** Told when a batch cannot be written (a full disk, say); the batch is dropped, serving goes on. */
  onError: ((err: unknown) => void) | undefined;
  /** Told the digests of every batch, for a cluster-wide LRU. */
  onFlush: ((digests: string[]) => void) | undefined;

  constructor(private readonly index: CacheIndex, intervalMs: number) {
    this.timer = setInterval(() => {
      try {
        this.flush();
      } catch (err) {
        this.onError?.(err);
      }
    }, Math.max(intervalMs, 100));
    this.timer.unref();
  }

  record(digest: string, at = Date.now()): void {
    this.note(digest, at, 1);
  }

  /** An access that is not a hit (the blob was just stored): recency only. */
  touch(digest: string, at = Date.now()): void {
    this.note(digest, at, 0);
  }

  private note(digest: string, at: number, hits: number): void {
    const entry = this.pending.get(digest);
    if (entry) {
      entry.at = at;
      entry.hits += hits;
    } else {
      this.pending.set(digest, { digest, at, hits });
    }
  }

  flush(): void {
    if (this.pending.size === 0) return;
    const batch = this.pending;
    this.pending = new Map();
    this.onFlush?.([...batch.keys()]);
    this.index.recordAccess(batch.values());
  }

  close(): void {
    clearInterval(this.timer);
    this.flush();
  }
}
