import { parseDigest } from '../oci/digest.js';
import type { Cache } from './cache.js';
import type { EvictionCandidate } from './cache-index.js';

export interface EvictionPolicy {
  /** Bytes; 0 means no quota. */
  maxSize: number;
  /** Evict down to this fraction of maxSize, so a sweep is not needed on every fill. */
  lowWater: number;
  /** Blobs not pulled for this long go. */
  blobIdleTtlMs: number;
  /** Layers no cached manifest refers to go once they are this old. */
  gcGraceMs: number;
}

export type EvictionReason = 'idle' | 'unreferenced' | 'quota';

export interface SweepReport {
  removed: { digest: string; size: number; reason: EvictionReason }[];
  bytes: number;
  /** Blobs that would have gone but were being read; the next sweep takes them. */
  skippedInUse: number;
  cacheBytes: number;
  dryRun: boolean;
}

const LRU_BATCH = 500;

/**
 * One pass of cache hygiene, in order: blobs idle past their TTL, layers no
 * manifest refers to (GC), then least recently used blobs until the cache is
 * back under the low-water mark. Pinned blobs are never candidates.
 */
export async function sweep(cache: Cache, policy: EvictionPolicy, options: { dryRun?: boolean; now?: number } = {}): Promise<SweepReport> {
  const now = options.now ?? Date.now();
  const dryRun = options.dryRun ?? false;
  cache.access.flush(); // LRU order must include the latest hits
  const report: SweepReport = { removed: [], bytes: 0, skippedInUse: 0, cacheBytes: cache.bytes, dryRun };
  const gone = new Set<string>();
  let projected = cache.bytes;

  const take = async (candidate: EvictionCandidate, reason: EvictionReason): Promise<void> => {
    if (gone.has(candidate.digest)) return;
    if (cache.isLeased(candidate.digest)) {
      report.skippedInUse += 1;
      return;
    }
    if (!dryRun && !(await cache.remove(parseDigest(candidate.digest)))) {
      report.skippedInUse += 1;
      return;
    }
    gone.add(candidate.digest);
    projected -= candidate.size;
    report.bytes += candidate.size;
    report.removed.push({ digest: candidate.digest, size: candidate.size, reason });
  };

  for (const candidate of cache.index.idleSince(now - policy.blobIdleTtlMs)) await take(candidate, 'idle');
  for (const candidate of cache.index.unreferencedSince(now - policy.gcGraceMs)) await take(candidate, 'unreferenced');

  if (policy.maxSize > 0 && projected > policy.maxSize) {
    const target = Math.floor(policy.maxSize * policy.lowWater);
    const seen = new Set<string>();
    // Bounded: each round looks at new candidates or stops.
    for (let limit = LRU_BATCH; projected > target; limit += LRU_BATCH) {
      const fresh = cache.index.leastRecentlyUsed(limit).filter((c) => !seen.has(c.digest) && !gone.has(c.digest));
      if (fresh.length === 0) break;
      for (const candidate of fresh) {
        if (projected <= target) break;
        seen.add(candidate.digest);
        await take(candidate, 'quota');
      }
    }
  }
  report.cacheBytes = dryRun ? projected : cache.bytes;
  return report;
}
