import type { Readable } from 'node:stream';
import type { ByteRange } from '../oci/byte-range.js';
import { parseDigest, type Digest } from '../oci/digest.js';

/**
 * Where the bytes of blobs and manifests live: a directory (the embedded
 * default) or an S3-compatible bucket. The only way to those bytes; what is
 * known about them (sizes, types, tags, access times) is the index's.
 * Content is addressed by digest, so a store never holds two versions of a key.
 */
export interface BlobStore {
  /** `filesystem` or `s3`, for logs and metrics. */
  readonly kind: string;
  /**
   * Whether other instances may write this store too (a bucket): content the
   * index does not know may be there already, so an index miss looks here first.
   */
  readonly shared: boolean;
  /** The object's size, or undefined when there is none. */
  stat(digest: Digest): Promise<{ size: number } | undefined>;
  /**
   * The object's bytes (or a range of them) as a stream with backpressure, and
   * its whole size. Throws NotStoredError when there is no such object.
   */
  open(digest: Digest, range?: ByteRange): Promise<{ body: Readable; size: number }>;
  /** Small content read whole; throws NotStoredError, or ObjectTooLargeError past `limit`. */
  read(digest: Digest, limit: number): Promise<Buffer>;
  /** Small content (manifests) written whole; visible once durable. */
  put(digest: Digest, bytes: Buffer): Promise<void>;
  /** Starts writing an object that becomes visible under its key only on commit. */
  beginWrite(digest: Digest, expectedSize?: number): Promise<BlobWrite>;
  delete(digest: Digest): Promise<void>;
  /** Every object under the store's blob keys in key order (so in digest order per algorithm), for recovery and audits. */
  list(): AsyncIterable<StoredEntry>;
  /** Removes a listed object whose key names no digest (a stray file). */
  removeStray?(key: string): Promise<void>;
  /** Cleans up what a crash left (temp files, abandoned uploads); returns how many it removed. */
  sweepIncomplete(): Promise<number>;
  /**
   * Aborts every unfinished upload of `digest`, whoever started it: a replica
   * that took over a fill from a dead one drops what that one left. Stores
   * without resumable uploads leave it undefined.
   */
  abortUploads?(digest: Digest): Promise<number>;
  /** Free and total bytes of a local disk; undefined for stores without one. */
  space(): Promise<{ free: number; total: number } | undefined>;
  /** The object's path below the store's root, for a front server to send, when it is a local file of that size. */
  localFile?(digest: Digest, expectedSize: number): Promise<string | undefined>;
  /** A URL clients may GET the object from directly for a while (a presigned URL). */
  presignedUrl?(digest: Digest): Promise<string>;
  /** A remote store: whether it answers now (readiness). */
  check?(): Promise<void>;
  close(): Promise<void>;
}

/** A listed object: its digest when its key is one of ours (undefined for a stray name). */
export interface StoredEntry {
  key: string;
  digest: Digest | undefined;
  /** When the listing gives it for free (a bucket's does; a directory's would cost a stat per file). */
  size: number | undefined;
}

/**
 * An object being written. Nothing is visible under the key until commit();
 * abort() (or a crash) leaves the key as it was.
 */
export interface BlobWrite {
  /**
   * Appends bytes; resolves once the store took them (backpressure). Rejects
   * with StoreFullError when room could help, StoreUnavailableError when the
   * store cannot take bytes now, and other errors when something is broken.
   */
  write(chunks: Buffer[]): Promise<void>;
  /**
   * Reads back bytes written so far, before and after commit (the filesystem's
   * temp file). Stores that cannot (a multipart upload) leave it undefined.
   */
  readBack?(position: number, length: number): Promise<Buffer>;
  /** Makes the written bytes the object under the key, durably. Call only once they verified. */
  commit(): Promise<void>;
  /** Drops what was written; idempotent, never throws. */
  abort(): Promise<void>;
  /** Releases what readBack needs, once no reader is left; never throws. */
  close(): Promise<void>;
}

/** The store has no object under this digest. */
export class NotStoredError extends Error {
  constructor(readonly digest: string, detail = 'not in the store') {
    super(`${digest}: ${detail}`);
    this.name = 'NotStoredError';
  }
}

/** The stored object is larger than the reader allows: damaged, or not what the index says. */
export class ObjectTooLargeError extends Error {
  constructor(readonly digest: string, readonly size: number, readonly limit: number) {
    super(`${digest} is ${size} bytes, more than ${limit}`);
    this.name = 'ObjectTooLargeError';
  }
}

/** The store is out of room; evicting may help. */
export class StoreFullError extends Error {
  constructor(readonly detail: string, options?: { cause?: unknown }) {
    super(`the cache store is full: ${detail}`, options);
    this.name = 'StoreFullError';
  }
}

/** The store cannot be reached or refuses writes now (a bucket down, throttling); the content can still be served uncached. */
export class StoreUnavailableError extends Error {
  constructor(readonly detail: string, options?: { cause?: unknown }) {
    super(`the cache store is unavailable: ${detail}`, options);
    this.name = 'StoreUnavailableError';
  }
}

/** The key of a digest's object: the same relative path in a directory and in a bucket. */
export function blobKey(digest: Digest): string {
  return `blobs/${digest.algorithm}/${digest.hex.slice(0, 2)}/${digest.hex}`;
}

const KEY = /^blobs\/([a-z0-9]+)\/([a-f0-9]{2})\/([a-f0-9]+)$/;

/** The digest a key names, or undefined for a key that is not one of ours. */
export function digestOfKey(key: string): Digest | undefined {
  const match = KEY.exec(key);
  if (!match || !match[3]!.startsWith(match[2]!)) return undefined;
  try {
    return parseDigest(`${match[1]}:${match[3]}`);
  } catch {
    return undefined;
  }
}
