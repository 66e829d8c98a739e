import { parseDigest } from '../oci/digest.js';
import { isDiskFull, type Cache } from './cache.js';
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
  /** Free space to keep on the cache's disk: a fraction of it, or bytes. Zero: no floor. */
  minFree: MinFreeSpace;
  /**
   * Replicas sharing a bucket: the quota counts every object in the store (a
   * listing), and recency is the cluster's, fed by every replica's accesses.
   */
  sharedLru?: SharedLru;
}

/** The cluster-wide LRU, as the replica doing the housekeeping reads it. */
export interface SharedLru {
  /** Digests accessed anywhere in the cluster, least recently used first. */
  order(): Promise<string[] | undefined>;
  /** Drops digests that are gone from the store. */
  forget(digests: readonly string[]): Promise<void>;
}

export type MinFreeSpace = { fraction: number } | { bytes: number };

export type EvictionReason = 'idle' | 'unreferenced' | 'quota' | 'space';

/** The free bytes the policy asks for on a disk of `total` bytes. */
export function freeSpaceFloor(minFree: MinFreeSpace, total: number): number {
  return 'fraction' in minFree ? Math.ceil(total * minFree.fraction) : minFree.bytes;
}

export interface SweepReport {
  removed: { digest: string; size: number; reason: EvictionReason }[];
  bytes: number;
  /** Blobs that would have gone but were being read; the next sweep takes them. */
  skippedInUse: number;
  cacheBytes: number;
  /** Free bytes on the cache's disk after the sweep, when the store is a local disk. */
  freeBytes?: number;
  dryRun: boolean;
}

const LRU_BATCH = 500;

/**
 * One pass of cache hygiene, in order: blobs idle past their TTL, layers no
 * manifest refers to (GC), least recently used blobs until the cache is back
 * under the low-water mark, then more of them while the disk has less free
 * space than the floor. Pinned blobs are never candidates.
 */
export async function sweep(cache: Cache, policy: EvictionPolicy, options: { dryRun?: boolean; now?: number; needFreeBytes?: number } = {}): Promise<SweepReport> {
  const now = options.now ?? Date.now();
  const dryRun = options.dryRun ?? false;
  try {
    cache.access.flush(); // LRU order must include the latest hits
  } catch (err) {
    // A full disk cannot take them: sweep by the order the index has, which is what frees it.
    if (!isDiskFull(err)) throw err;
  }
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

  // Idleness and references are what this index saw: in a cluster, other replicas served and
  // referenced what this one never did, so only the quota over the shared LRU applies there.
  if (!policy.sharedLru) {
    for (const candidate of cache.index.idleSince(now - policy.blobIdleTtlMs)) await take(candidate, 'idle');
    for (const candidate of cache.index.unreferencedSince(now - policy.gcGraceMs)) await take(candidate, 'unreferenced');
  }

  const seen = new Set<string>();
  /** Takes least recently used blobs for `reason` until `enough()` holds or none are left. */
  const evictLru = async (reason: EvictionReason, enough: () => boolean): Promise<void> => {
    // Bounded: each round looks at new candidates or stops.
    for (let limit = LRU_BATCH; !enough(); limit += LRU_BATCH) {
      const fresh = cache.index.leastRecentlyUsed(limit).filter((c) => !seen.has(c.digest) && !gone.has(c.digest));
      if (fresh.length === 0) break;
      for (const candidate of fresh) {
        if (enough()) break;
        seen.add(candidate.digest);
        await take(candidate, reason);
      }
    }
  };

  if (policy.sharedLru && cache.store.shared && policy.maxSize > 0) {
    await evictClusterLru(cache, policy, policy.sharedLru, take, report);
  } else if (policy.maxSize > 0 && projected > policy.maxSize) {
    const target = Math.floor(policy.maxSize * policy.lowWater);
    await evictLru('quota', () => projected <= target);
  }

  const space = await cache.diskSpace();
  if (space) {
    // What the disk had free, plus what this sweep frees (a dry run frees nothing, so count all it would have).
    const base = space.free - (dryRun ? 0 : report.bytes);
    const free = (): number => base + report.bytes;
    const floor = freeSpaceFloor(policy.minFree, space.total);
    // Under the floor, make room to a little above it (by lowWater), so the next fill does not sweep again.
    const wanted = Math.max(floor > 0 ? Math.ceil(floor / policy.lowWater) : 0, space.free + (options.needFreeBytes ?? 0));
    if (free() < floor || (options.needFreeBytes ?? 0) > 0) await evictLru('space', () => free() >= Math.min(space.total, wanted));
    report.freeBytes = free();
  }
  report.cacheBytes = dryRun ? projected : cache.bytes;
  return report;
}

/**
 * The quota over a bucket several replicas write: the listing says what is
 * stored (whichever replica stored it), the cluster's LRU in which order it
 * goes. Objects no replica accessed since the LRU began go first, the least
 * recently used next; pinned and leased ones stay.
 */
async function evictClusterLru(
  cache: Cache,
  policy: EvictionPolicy,
  lru: SharedLru,
  take: (candidate: EvictionCandidate, reason: EvictionReason) => Promise<void>,
  report: SweepReport,
): Promise<void> {
  const sizes = new Map<string, number>();
  let stored = 0;
  for await (const entry of cache.store.list()) {
    if (!entry.digest) continue;
    const size = entry.size ?? (await cache.store.stat(entry.digest))?.size ?? 0;
    sizes.set(entry.digest.value, size);
    stored += size;
  }
  const order = (await lru.order()) ?? [];
  await lru.forget(order.filter((digest) => !sizes.has(digest)));
  if (stored <= policy.maxSize) return;
  const target = Math.floor(policy.maxSize * policy.lowWater);
  const accessed = new Set(order);
  const candidates = [...[...sizes.keys()].filter((digest) => !accessed.has(digest)), ...order.filter((digest) => sizes.has(digest))];
  const before = report.bytes;
  for (const digest of candidates) {
    if (stored - (report.bytes - before) <= target) break;
    if (cache.index.isPinned(digest)) continue;
    await take({ digest, size: sizes.get(digest)!, mediaType: null, lastAccess: 0 }, 'quota');
  }
  await lru.forget(report.removed.map((r) => r.digest));
}
