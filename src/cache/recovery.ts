import { createReadStream } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { parseDigest, type Digest } from '../oci/digest.js';
import { manifestMediaType, referencedDigests } from '../oci/manifest.js';
import { MANIFEST_MEDIA_TYPES } from '../oci/media-types.js';
import type { CacheIndex } from './cache-index.js';
import type { FsBlobStore } from './fs-blob-store.js';

export interface RecoveryReport {
  sweptTempFiles: number;
  /** Index entries whose file was missing. */
  droppedEntries: number;
  /** Files with no index entry whose digest checked out. */
  adoptedFiles: number;
  /** Files with no index entry that failed the check, or stray names. */
  removedFiles: number;
}

const BATCH = 64;
const MAX_SNIFF = 4 * 1024 * 1024;

/** Hashes a file as a stream: files can be gigabytes. */
export async function hashFile(path: string, algorithm: Digest['algorithm']): Promise<{ digest: string; size: number }> {
  const hash = createHash(algorithm);
  let size = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { digest: `${algorithm}:${hash.digest('hex')}`, size };
}

/**
 * Makes the index match the disk after a crash or a manual change: entries
 * without a file are dropped; files without an entry are adopted if their
 * digest checks out, removed otherwise.
 */
export async function reconcile(index: CacheIndex, store: FsBlobStore): Promise<Omit<RecoveryReport, 'sweptTempFiles'>> {
  let droppedEntries = 0;
  let adoptedFiles = 0;
  let removedFiles = 0;
  const indexed = new Set<string>();
  const missing: string[] = [];
  let batch: Promise<void>[] = [];
  for (const record of index.allBlobs()) {
    indexed.add(record.digest);
    batch.push(
      stat(store.pathOf(parseDigest(record.digest))).then(
        () => undefined,
        () => void missing.push(record.digest),
      ),
    );
    if (batch.length >= BATCH) {
      await Promise.all(batch);
      batch = [];
    }
  }
  await Promise.all(batch);
  for (const digest of missing) {
    index.removeBlob(digest);
    droppedEntries += 1;
  }

  for (const file of await listBlobFiles(store)) {
    if (indexed.has(file.digest)) continue;
    let digest: Digest;
    try {
      digest = parseDigest(file.digest);
    } catch {
      await store.removePath(file.path);
      removedFiles += 1;
      continue;
    }
    const actual = await hashFile(file.path, digest.algorithm);
    if (actual.digest !== digest.value) {
      await store.remove(digest);
      removedFiles += 1;
      continue;
    }
    await adopt(index, digest, file.path, actual.size);
    adoptedFiles += 1;
  }
  return { droppedEntries, adoptedFiles, removedFiles };
}

async function adopt(index: CacheIndex, digest: Digest, path: string, size: number): Promise<void> {
  const now = Date.now();
  if (size <= MAX_SNIFF) {
    const bytes = await readFile(path);
    const mediaType = looksLikeManifest(bytes) ? manifestMediaType(bytes, undefined) : undefined;
    if (mediaType && MANIFEST_MEDIA_TYPES.includes(mediaType)) {
      index.putManifest({ digest: digest.value, size, mediaType, children: referencedDigests(bytes), now });
      return;
    }
  }
  index.putBlob({ digest: digest.value, size, now });
}

function looksLikeManifest(bytes: Buffer): boolean {
  try {
    const parsed = JSON.parse(bytes.toString('utf8')) as { schemaVersion?: unknown };
    return typeof parsed === 'object' && parsed !== null && typeof parsed.schemaVersion === 'number';
  } catch {
    return false;
  }
}

async function listBlobFiles(store: FsBlobStore): Promise<{ digest: string; path: string }[]> {
  const files: { digest: string; path: string }[] = [];
  const root = store.blobRootPath;
  for (const algorithm of await readdir(root).catch(() => [] as string[])) {
    for (const shard of await readdir(join(root, algorithm)).catch(() => [] as string[])) {
      for (const name of await readdir(join(root, algorithm, shard)).catch(() => [] as string[])) {
        files.push({ digest: `${algorithm}:${name}`, path: join(root, algorithm, shard, name) });
      }
    }
  }
  return files;
}
