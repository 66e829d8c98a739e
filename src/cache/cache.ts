import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import { AccessRecorder } from './access-recorder.js';
import type { BlobFill } from './blob-fill.js';
import type { ByteRange } from './blob-store.js';
import { CacheIndex, type BlobRecord, type TagRecord } from './cache-index.js';
import { FsBlobStore } from './fs-blob-store.js';

export interface CacheOptions {
  dir: string;
  accessFlushIntervalMs: number;
}

export interface Provenance {
  upstream: string;
  repo: string;
}

/**
 * The cache as the mirror sees it: blob bytes in the store, metadata in the
 * index, and the rule that the index only names blobs whose bytes are in place.
 */
export class Cache {
  private constructor(
    readonly store: FsBlobStore,
    readonly index: CacheIndex,
    private readonly access: AccessRecorder,
    readonly sweptTempFiles: number,
  ) {}

  static async open(options: CacheOptions): Promise<Cache> {
    await mkdir(options.dir, { recursive: true });
    const store = new FsBlobStore(options.dir);
    await store.init();
    const swept = await store.sweepTemp();
    const index = new CacheIndex(join(options.dir, 'index.db'));
    return new Cache(store, index, new AccessRecorder(index, options.accessFlushIntervalMs), swept);
  }

  lookupBlob(digest: Digest): BlobRecord | undefined {
    return this.index.getBlob(digest.value);
  }

  /** Streams a cached blob and counts the access (batched, not per request). */
  openBlob(digest: Digest, range?: ByteRange): Readable {
    this.access.record(digest.value);
    return this.store.openRead(digest, range);
  }

  recordAccess(digest: Digest): void {
    this.access.record(digest.value);
  }

  async readManifest(digest: Digest): Promise<Buffer> {
    this.access.record(digest.value);
    return this.store.readSmall(digest);
  }

  async storeManifest(entry: { digest: Digest; bytes: Buffer; mediaType: string; children: string[] } & Provenance): Promise<void> {
    await this.store.writeSmall(entry.digest, entry.bytes);
    this.index.putManifest({
      digest: entry.digest.value,
      size: entry.bytes.length,
      mediaType: entry.mediaType,
      children: entry.children,
      now: Date.now(),
    });
    this.index.linkRepo(entry.upstream, entry.repo, entry.digest.value);
  }

  beginFill(digest: Digest, expectedSize?: number): Promise<BlobFill> {
    return this.store.beginFill(digest, expectedSize);
  }

  /** Verifies and publishes a fill, then indexes it: bytes first, index second. */
  async commitFill(fill: BlobFill, from: Provenance): Promise<void> {
    await fill.commit(() => {
      this.index.putBlob({ digest: fill.digest.value, size: fill.written, now: Date.now() });
      this.index.linkRepo(from.upstream, from.repo, fill.digest.value);
    });
  }

  linkRepo(from: Provenance, digest: Digest): void {
    this.index.linkRepo(from.upstream, from.repo, digest.value);
  }

  getTag(upstream: string, repo: string, tag: string, acceptKey: string): TagRecord | undefined {
    return this.index.getTag(upstream, repo, tag, acceptKey);
  }

  putTag(record: TagRecord): void {
    this.index.putTag(record);
  }

  close(): void {
    this.access.close();
    this.index.close();
  }
}
