import { LRUCache } from 'lru-cache';

/** Blobs up to this size (image configs, small layers) are read whole and then served from memory. */
export const SMALL_BLOB = 256 * 1024;

/**
 * What this process has checked against its digest: stored objects it has
 * re-hashed since it started (first reads re-hash, later ones trust the
 * store), and small verified content kept in memory, so a hot manifest or
 * config costs no store read and no hash.
 */
export class VerifiedContent {
  private readonly verified = new Set<string>();
  private readonly small = new LRUCache<string, Buffer>({ maxSize: 64 * 1024 * 1024, sizeCalculation: (b) => Math.max(1, b.length) });

  has(digest: string): boolean {
    return this.verified.has(digest);
  }

  mark(digest: string): void {
    this.verified.add(digest);
  }

  /** Small verified bytes in memory, if any. */
  bytes(digest: string): Buffer | undefined {
    return this.small.get(digest);
  }

  keep(digest: string, bytes: Buffer): void {
    this.verified.add(digest);
    this.small.set(digest, bytes);
  }

  forget(digest: string): void {
    this.verified.delete(digest);
    this.small.delete(digest);
  }
}
