/**
 * cache.memoryBudget's default (the schema's, for caches opened without a
 * config). Small, because the caches come on top of Node itself: an idle
 * process is ~90-96 MiB resident with --max-semi-space-size=4 (47 MiB of the
 * binary's pages, the rest the V8 heap and the modules), and 32 cold pulls of
 * a 1 GiB blob add ~30 MiB, mostly buffers in flight
 * (scripts/bench/fan-in-probe.ts).
 */
export const DEFAULT_MEMORY_BUDGET_BYTES = 16 * 1024 * 1024;

/** What the caches sized by cache.memoryBudget may hold. */
export interface CacheMemory {
  /** Bytes of small verified content (manifests, configs, small layers) served from memory. */
  smallContentBytes: number;
  /** Blob index rows kept in front of SQLite. */
  blobRecords: number;
  /** Tag rows kept in front of SQLite. */
  tags: number;
  /** Digests whose repositories are remembered. */
  linkSets: number;
  /** Stored objects this process has re-hashed (a digest out of this set is re-hashed at its next full read). */
  verifiedDigests: number;
}

/**
 * Memory per entry of the count-bounded caches, in V8 heap bytes, measured
 * with scripts/bench/cache-entry-sizes.ts (100,000 entries shaped like real
 * ones, heap before and after, Node 20): a blob record with its digest key
 * 359 B, a tag row with its key (registry, repository, tag, accept list) and
 * its place in the by-digest map 1,041 B, a link set of one repository 445 B;
 * each includes the 40 B per slot lru-cache allocates up front for `max`
 * entries. Rounded up, so the estimates err towards holding less.
 */
export const BYTES_PER_BLOB_RECORD = 384;
export const BYTES_PER_TAG = 1088;
export const BYTES_PER_LINK_SET = 448;
/** A verified digest (sha256:<hex> in an LRU), measured the same way: 168 B. */
export const BYTES_PER_VERIFIED_DIGEST = 176;

/**
 * The one place cache.memoryBudget is split:
 * - 7/16 small verified content: a hit on it costs no store read and no hash,
 *   and the objects it holds (manifests, image configs) are the ones every
 *   pull of an image asks for first;
 * - 1/16 verified digests: which stored objects were re-hashed already, so
 *   that only their first read pays the hash (about 6,000 digests in 1 MiB);
 * - 1/4 blob records: every blob and manifest-by-digest request reads one, so
 *   they are the most looked-up rows (a miss costs one indexed SQLite query);
 * - 1/8 tags: one per tag pulled, fewer than blobs but the first request of
 *   every pull;
 * - 1/8 link sets: one per digest, read on a hit to check the repository.
 * What a fill holds while it runs (recent bytes, read-back blocks) is not in
 * the budget: it lives as long as the fill and scales with the fills running
 * (upstreams[].maxConcurrentFetches), not with a cache's size.
 */
export function splitMemoryBudget(bytes: number): CacheMemory {
  const share = (fraction: number, perEntry: number): number => Math.max(1, Math.floor((bytes * fraction) / perEntry));
  return {
    smallContentBytes: share(7 / 16, 1),
    blobRecords: share(1 / 4, BYTES_PER_BLOB_RECORD),
    tags: share(1 / 8, BYTES_PER_TAG),
    linkSets: share(1 / 8, BYTES_PER_LINK_SET),
    verifiedDigests: share(1 / 16, BYTES_PER_VERIFIED_DIGEST),
  };
}
