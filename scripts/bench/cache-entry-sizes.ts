// Measures what one entry of each count-bounded cache costs in memory, for the
// per-entry estimates in src/cache/memory-budget.ts: V8 heap (and external)
// bytes before and after filling 100,000 entries shaped like real ones (digest
// keys, tag keys with an accept list, rows as SQLite returns them).
// Usage: node --expose-gc --import tsx scripts/bench/cache-entry-sizes.ts
import { randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { BlobRecord, CacheIndex, TagRecord } from '../../src/cache/cache-index.js';
import { HotRows } from '../../src/cache/hot-rows.js';
import { MANIFEST_MEDIA_TYPES } from '../../src/oci/media-types.js';

const N = 100_000;
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with node --expose-gc');
const used = (): number => {
  gc();
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.external + m.arrayBuffers;
};
const digest = (): string => `sha256:${randomBytes(32).toString('hex')}`;
/** A string of its own, as each row SQLite returns brings. */
const fresh = (text: string): string => Buffer.from(text).toString();
const acceptKey = MANIFEST_MEDIA_TYPES.slice(0, 4).join(',');
const blobRow = (d: string): BlobRecord => ({ digest: fresh(d), size: 12_345_678, mediaType: null, createdAt: Date.now(), lastAccess: Date.now(), hits: 3 });
const tagRow = (i: number): TagRecord => ({
  upstream: fresh('docker.io'),
  repo: fresh(`library/image-${i % 5000}`),
  tag: fresh(`v1.${i}`),
  acceptKey: fresh(acceptKey),
  digest: digest(),
  mediaType: fresh(MANIFEST_MEDIA_TYPES[0]!),
  fetchedAt: Date.now(),
});

/** Heap bytes per entry of a cache bounded to N entries, and of `fill` (N entries, keys and rows made as they go), beyond what the same structures cost empty. */
function perEntry(label: string, make: () => { fill(i: number): void }): void {
  const before = used();
  const target = make();
  const empty = used();
  for (let i = 0; i < N; i++) target.fill(i);
  const after = used();
  const per = (bytes: number): string => (bytes / N).toFixed(0).padStart(5);
  console.log(`${label.padEnd(38)} ${per(after - before)} B per entry: ${per(empty - before)} B for its slot, allocated empty, ${per(after - empty)} B once filled`);
  (globalThis as { keep?: unknown }).keep = target;
}

// The three caches of HotRows, through HotRows itself, over an index that makes up rows.
const index = {
  getBlob: (d: string) => blobRow(d),
  getTag: (_u: string, _r: string, _t: string, _a: string) => undefined,
  putTag: () => undefined,
  isLinked: () => true,
  linkRepo: () => undefined,
} as unknown as CacheIndex;
perEntry('hot rows: blob records', () => {
  const hot = new HotRows(index, { blobRecords: N, tags: 1, linkSets: 1 });
  return { fill: (i) => void hot.blob(digest()) };
});
perEntry('hot rows: tags (with tagKeysByDigest)', () => {
  const hot = new HotRows(index, { blobRecords: 1, tags: N, linkSets: 1 });
  return { fill: (i) => hot.putTag(tagRow(i)) };
});
perEntry('hot rows: link sets (one owner)', () => {
  const hot = new HotRows(index, { blobRecords: 1, tags: 1, linkSets: N });
  return { fill: (i) => void hot.belongsTo(fresh('docker.io'), fresh(`library/image-${i % 5000}`), digest()) };
});
perEntry('LRUCache of max 100,000, no entries', () => {
  const lru = new LRUCache<string, string>({ max: N });
  return { fill: () => void lru };
});
