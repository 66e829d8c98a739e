import { createHash } from 'node:crypto';
import { setImmediate as yieldToServing } from 'node:timers/promises';
import { digestOf, parseDigest, type Digest } from '../oci/digest.js';
import { manifestMediaType, referencedDigests } from '../oci/manifest.js';
import { MANIFEST_MEDIA_TYPES } from '../oci/media-types.js';
import { ObjectTooLargeError, type BlobStore } from '../storage/blob-store.js';
import { BoundedWork } from './bounded-work.js';
import type { BlobRecord, CacheIndex } from './cache-index.js';

/** What start-up cleans before serving: only what a crash left, so it does not grow with the cache. */
export interface RecoveryReport {
  sweptTempFiles: number;
  /** Spool files of fills a crash cut short (a bucket's local copies). */
  sweptSpoolFiles?: number;
}

/** What the background pass found. */
export interface ReconcileReport {
  /** Index entries whose object was missing. */
  droppedEntries: number;
  /** Objects with no index entry whose digest checked out. */
  adoptedFiles: number;
  /** Objects with no index entry that failed the check, or stray names. */
  removedFiles: number;
  durationMs: number;
}

/** How the pass changes the cache: through it, so that its rows in memory and its totals follow. */
export interface ReconcileTarget {
  readonly index: CacheIndex;
  readonly store: BlobStore;
  /** Drops the entry of an object found missing, unless a fill replaced that entry meanwhile. */
  dropMissing(record: BlobRecord): void;
  /** Indexes an object whose bytes hash to its name (a manifest with what it refers to). */
  adopt(digest: Digest, size: number, manifest: { mediaType: string; children: string[] } | undefined): void;
}

/** Checks in flight at once: few enough that the libuv threads stay free for reads being served. */
export const CHECKS_AT_ONCE = 8;
/** Entries between two yields to the event loop, when nothing else in the pass awaits. */
const YIELD_EVERY = 4096;
const MAX_SNIFF = 4 * 1024 * 1024;

/** Hashes a stored object as a stream: objects can be gigabytes. */
export async function hashStored(store: BlobStore, digest: Digest): Promise<{ digest: string; size: number }> {
  const hash = createHash(digest.algorithm);
  let size = 0;
  const { body } = await store.open(digest);
  for await (const chunk of body) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { digest: `${digest.algorithm}:${hash.digest('hex')}`, size };
}

/** Hashes a stored object: read whole up to 4 MiB (its bytes come back then, so a manifest can be recognised), streamed beyond. */
export async function hashObject(store: BlobStore, digest: Digest): Promise<{ digest: string; size: number; bytes?: Buffer }> {
  try {
    const bytes = await store.read(digest, MAX_SNIFF);
    return { digest: digestOf(bytes, digest.algorithm), size: bytes.length, bytes };
  } catch (err) {
    if (!(err instanceof ObjectTooLargeError)) throw err;
    return hashStored(store, digest);
  }
}

/**
 * Makes the index match a local store after a crash, a lost index or a
 * manual change, while the mirror serves: entries without an object are
 * dropped; objects without an entry are adopted if their digest checks out,
 * removed otherwise. The store lists in key order and the index pages in
 * digest order, so one merge of the two finds both kinds with one page of
 * rows in memory and no stat for an object that is where its entry says.
 * A shared store (a bucket) is not walked: other instances write it, and an
 * index miss looks there anyway.
 */
export async function reconcile(target: ReconcileTarget, signal: AbortSignal): Promise<ReconcileReport> {
  const started = performance.now();
  const report: ReconcileReport = { droppedEntries: 0, adoptedFiles: 0, removedFiles: 0, durationMs: 0 };
  const { index, store } = target;
  if (store.shared) return report;
  const checks = new BoundedWork(CHECKS_AT_ONCE);
  const rows = index.allBlobs();
  let row = rows.next();
  let seen = 0;

  const confirmMissing = async (record: BlobRecord): Promise<void> => {
    // Listed before a fill published it, or listed out of order: look again before dropping.
    const found = await store.stat(parseDigest(record.digest)).catch(() => 'unknown' as const);
    if (found !== undefined) return;
    target.dropMissing(record);
    report.droppedEntries += 1;
  };
  const checkUnindexed = async (digest: Digest): Promise<void> => {
    if (index.getBlob(digest.value)) return;
    let actual: Awaited<ReturnType<typeof hashObject>>;
    try {
      actual = await hashObject(store, digest);
    } catch {
      return; // gone meanwhile, or unreadable: the next pass sees it again
    }
    // A fill may have stored and indexed a good copy while this one was read.
    if (index.getBlob(digest.value)) return;
    if (actual.digest !== digest.value) {
      await store.delete(digest);
      report.removedFiles += 1;
      return;
    }
    target.adopt(digest, actual.size, actual.bytes && manifestIn(actual.bytes));
    report.adoptedFiles += 1;
  };

  for await (const entry of store.list()) {
    if (signal.aborted) break;
    if (++seen % YIELD_EVERY === 0) await yieldToServing();
    if (!entry.digest) {
      await checks.add(async () => {
        await store.removeStray?.(entry.key);
        report.removedFiles += 1;
      });
      continue;
    }
    const name = entry.digest.value;
    while (!row.done && row.value.digest < name) {
      const record = row.value;
      await checks.add(() => confirmMissing(record));
      row = rows.next();
    }
    if (!row.done && row.value.digest === name) {
      row = rows.next();
      continue;
    }
    const digest = entry.digest;
    await checks.add(() => checkUnindexed(digest));
  }
  for (; !row.done && !signal.aborted; row = rows.next()) {
    const record = row.value;
    await checks.add(() => confirmMissing(record));
  }
  await checks.settle();
  report.durationMs = Math.round(performance.now() - started);
  return report;
}

/** The media type and references of a document that is a manifest; undefined for any other blob. */
export function manifestIn(bytes: Buffer): { mediaType: string; children: string[] } | undefined {
  try {
    const parsed = JSON.parse(bytes.toString('utf8')) as { schemaVersion?: unknown };
    if (typeof parsed !== 'object' || parsed === null || typeof parsed.schemaVersion !== 'number') return undefined;
    const mediaType = manifestMediaType(bytes, undefined);
    return MANIFEST_MEDIA_TYPES.includes(mediaType) ? { mediaType, children: referencedDigests(bytes) } : undefined;
  } catch {
    return undefined;
  }
}
