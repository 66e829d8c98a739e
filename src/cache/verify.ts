import { parseDigest } from '../oci/digest.js';
import type { Cache } from './cache.js';
import { hashStored } from './recovery.js';

export interface VerifyReport {
  checked: number;
  bytes: number;
  damaged: { digest: string; reason: string }[];
  repaired: number;
}

/** Re-hashes every cached object; with `repair`, damaged or missing ones are removed so they get refetched. */
export async function verifyCache(cache: Cache, options: { repair: boolean; onProgress?: (done: number, total: number) => void }): Promise<VerifyReport> {
  // Page by page: memory stays the same whatever the index holds, and a removal does not disturb the walk.
  const total = cache.index.totals().blobs;
  const report: VerifyReport = { checked: 0, bytes: 0, damaged: [], repaired: 0 };
  for (const record of cache.index.allBlobs()) {
    const digest = parseDigest(record.digest);
    let reason: string | undefined;
    try {
      const actual = await hashStored(cache.store, digest);
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
  }
  return report;
}
