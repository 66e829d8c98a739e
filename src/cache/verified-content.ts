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
  /** Bounded: a mirror holding a million blobs must not hold a million digests here. */
  private readonly verified: LRUCache<string, true>;
  private readonly small: LRUCache<string, Buffer>;

  /** Keeps at most `maxBytes` of small content (cache.memoryBudget's share); a larger object is not kept. */
  constructor(maxBytes: number, maxVerified: number) {
    this.small = new LRUCache({ maxSize: maxBytes, sizeCalculation: (b) => Math.max(1, b.length) });
    this.verified = new LRUCache({ max: maxVerified });
  }

  /** Bytes of small content held now. */
  /** Digests known verified now. */
  get verifiedCount(): number {
    return this.verified.size;
  }

  get heldBytes(): number {
    return this.small.calculatedSize;
  }

  has(digest: string): boolean {
    // A read keeps the digest among the recently used ones.
    return this.verified.get(digest) === true;
  }

  mark(digest: string): void {
    this.verified.set(digest, true);
  }

  /** Small verified bytes in memory, if any. */
  bytes(digest: string): Buffer | undefined {
    return this.small.get(digest);
  }

  keep(digest: string, bytes: Buffer): void {
    this.verified.set(digest, true);
    this.small.set(digest, bytes);
  }

  forget(digest: string): void {
    this.verified.delete(digest);
    this.small.delete(digest);
  }
}
