import { parseDigest } from '../oci/digest.js';
import type { Cache } from './cache.js';
import { BoundedWork } from './bounded-work.js';
import type { BlobRecord } from './cache-index.js';
import { hashObject } from './recovery.js';

export interface VerifyReport {
  checked: number;
  bytes: number;
  damaged: { digest: string; reason: string }[];
  repaired: number;
}

/** Objects hashed at once: the reads overlap, and small ones are read whole. */
const AT_ONCE = 8;

/** Re-hashes every cached object; with `repair`, damaged or missing ones are removed so they get refetched. */
export async function verifyCache(cache: Cache, options: { repair: boolean; onProgress?: (done: number, total: number) => void }): Promise<VerifyReport> {
  // Page by page: memory stays the same whatever the index holds, and a removal does not disturb the walk.
  const total = cache.index.totals().blobs;
  const report: VerifyReport = { checked: 0, bytes: 0, damaged: [], repaired: 0 };
  const work = new BoundedWork(AT_ONCE);
  const check = async (record: BlobRecord): Promise<void> => {
    const digest = parseDigest(record.digest);
    let reason: string | undefined;
    try {
      const actual = await hashObject(cache.store, digest);
      if (actual.size !== record.size) reason = `size ${actual.size}, index says ${record.size}`;
      else if (actual.digest !== digest.value) reason = `content hashes to ${actual.digest}`;
      report.bytes += actual.size;
    } catch (err) {
      reason = `unreadable (${(err as NodeJS.ErrnoException).code ?? (err as Error).name})`;
    }
    report.checked += 1;
    if (reason) {
      report.damaged.push({ digest: digest.value, reason });
      if (options.repair && (await cache.remove(digest))) report.repaired += 1;
    }
    options.onProgress?.(report.checked, Math.max(total, report.checked));
  };
  for (const record of cache.index.allBlobs()) await work.add(() => check(record));
  await work.settle();
  // In digest order, whichever check ended first.
  report.damaged.sort((a, b) => (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0));
  return report;
}
