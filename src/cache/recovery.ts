import { createHash } from 'node:crypto';
import { parseDigest, type Digest } from '../oci/digest.js';
import { manifestMediaType, referencedDigests } from '../oci/manifest.js';
import { MANIFEST_MEDIA_TYPES } from '../oci/media-types.js';
import type { BlobStore } from '../storage/blob-store.js';
import type { CacheIndex } from './cache-index.js';

export interface RecoveryReport {
  sweptTempFiles: number;
  /** Spool files of fills a crash cut short (a bucket's local copies). */
  sweptSpoolFiles?: number;
  /** Index entries whose object was missing. */
  droppedEntries: number;
  /** Objects with no index entry whose digest checked out. */
  adoptedFiles: number;
  /** Objects with no index entry that failed the check, or stray names. */
  removedFiles: number;
}

const BATCH = 64;
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

/**
 * Makes the index match a local store after a crash or a manual change:
 * entries without an object are dropped; objects without an entry are adopted
 * if their digest checks out, removed otherwise. A shared store (a bucket) is
 * not walked: other instances write it, and an index miss looks there anyway.
 */
export async function reconcile(index: CacheIndex, store: BlobStore): Promise<Omit<RecoveryReport, 'sweptTempFiles' | 'sweptSpoolFiles'>> {
  const report = { droppedEntries: 0, adoptedFiles: 0, removedFiles: 0 };
  if (store.shared) return report;
  const indexed = new Set<string>();
  const missing: string[] = [];
  let batch: Promise<void>[] = [];
  for (const record of index.allBlobs()) {
    indexed.add(record.digest);
    batch.push(store.stat(parseDigest(record.digest)).then((found) => void (found ? undefined : missing.push(record.digest))));
    if (batch.length >= BATCH) {
      await Promise.all(batch);
      batch = [];
    }
  }
  await Promise.all(batch);
  for (const digest of missing) {
    index.removeBlob(digest);
    report.droppedEntries += 1;
  }

  for await (const entry of store.list()) {
    if (entry.digest && indexed.has(entry.digest.value)) continue;
    if (!entry.digest) {
      await store.removeStray?.(entry.key);
      report.removedFiles += 1;
      continue;
    }
    const actual = await hashStored(store, entry.digest);
    if (actual.digest !== entry.digest.value) {
      await store.delete(entry.digest);
      report.removedFiles += 1;
      continue;
    }
    await adopt(index, store, entry.digest, actual.size);
    report.adoptedFiles += 1;
  }
  return report;
}

async function adopt(index: CacheIndex, store: BlobStore, digest: Digest, size: number): Promise<void> {
  const now = Date.now();
  if (size <= MAX_SNIFF) {
    const bytes = await store.read(digest, MAX_SNIFF);
    const mediaType = looksLikeManifest(bytes) ? safeMediaType(bytes) : undefined;
    if (mediaType && MANIFEST_MEDIA_TYPES.includes(mediaType)) {
      index.putManifest({ digest: digest.value, size, mediaType, children: referencedDigests(bytes), now });
      return;
    }
  }
  index.putBlob({ digest: digest.value, size, now });
}

function safeMediaType(bytes: Buffer): string | undefined {
  try {
    return manifestMediaType(bytes, undefined);
  } catch {
    return undefined;
  }
}

function looksLikeManifest(bytes: Buffer): boolean {
  try {
    const parsed = JSON.parse(bytes.toString('utf8')) as { schemaVersion?: unknown };
    return typeof parsed === 'object' && parsed !== null && typeof parsed.schemaVersion === 'number';
  } catch {
    return false;
  }
}
