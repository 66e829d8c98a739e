import { chmod, mkdir, open, stat } from 'node:fs/promises';
import { LRUCache } from 'lru-cache';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { digestOf, type Digest } from '../oci/digest.js';
import { AccessRecorder } from './access-recorder.js';
import type { BlobFill } from './blob-fill.js';
import type { ByteRange } from './blob-store.js';
import { CacheIndex, type BlobRecord, type TagRecord } from './cache-index.js';
import { cacheModes, FsBlobStore } from './fs-blob-store.js';
import { Catalog } from './catalog.js';
import { JobHistory } from './job-history.js';
import { StatsHistory } from './stats-history.js';
import { reconcile, type RecoveryReport } from './recovery.js';
import { CorruptBlobError, VerifyingStream } from './verifying-stream.js';

export { CorruptBlobError };

const READ_CHUNK = 1024 * 1024;
/** Blobs up to this size (image configs, small layers) are read whole and then served from memory. */
const SMALL_BLOB = 256 * 1024;
/** A base layer can be shared by thousands of repositories: remember a bounded few per digest. */
const MAX_REMEMBERED_OWNERS = 256;

export interface CacheOptions {
  dir: string;
  accessFlushIntervalMs: number;
  /**
   * The serving process owns the directory: it sweeps temp files and reconciles
   * the index with the disk. Command-line tools beside a running server do not.
   */
  owner: boolean;
  /** Let the mirror's group read the cache (a front server sending blobs); otherwise it is the mirror user's alone. */
  groupReadable?: boolean;
}

export interface Provenance {
  upstream: string;
  repo: string;
}

/** The cached copy is missing or damaged; it has been dropped, fetch it again. */
export class CacheMissError extends Error {
  constructor(readonly digest: string, detail: string) {
    super(`cached copy of ${digest} unusable: ${detail}`);
    this.name = 'CacheMissError';
  }
}

/**
 * The cache as the mirror sees it: blob bytes in the store, metadata in the
 * index, and the rule that the index only names blobs whose bytes are in place.
 * Open readers hold a lease, so eviction passes over what is being served.
 */
export class Cache {
  readonly jobs: JobHistory;
  readonly stats: StatsHistory;
  readonly catalog: Catalog;
  /** Bytes and number of indexed blobs, kept current without a SUM or COUNT per request. */
  bytes: number;
  blobs: number;
  private readonly leases = new Map<string, number>();
  /** Blobs hashed since this process started: first reads re-hash, later ones trust the file. */
  private readonly verified = new Set<string>();
  /** Verified small content (manifests, configs, small layers): a hot digest costs no file read and no hash. */
  private readonly small = new LRUCache<string, Buffer>({ maxSize: 64 * 1024 * 1024, sizeCalculation: (b) => Math.max(1, b.length) });
  /**
   * Index rows the hot path reads on every hit, kept in memory so that a cache
   * hit runs no SQLite query. Every write to a row here drops its copy.
   */
  private readonly records = new LRUCache<string, BlobRecord>({ max: 100_000 });
  private readonly tags = new LRUCache<string, TagRecord>({
    max: 100_000,
    dispose: (record, key) => {
      const keys = this.tagKeysByDigest.get(record.digest);
      keys?.delete(key);
      if (keys?.size === 0) this.tagKeysByDigest.delete(record.digest);
    },
  });
  /** Repositories each digest is known to belong to (positive answers only; SQLite has the rest). */
  private readonly links = new LRUCache<string, Set<string>>({ max: 50_000 });
  /** Which remembered tags point at a manifest, so removing it forgets just those. */
  private readonly tagKeysByDigest = new Map<string, Set<string>>();
  /** Called after a commit, so a quota can be enforced promptly. */
  onGrow: (() => void) | undefined;

  private constructor(
    readonly dir: string,
    readonly store: FsBlobStore,
    readonly index: CacheIndex,
    readonly access: AccessRecorder,
    readonly recovery: RecoveryReport | undefined,
  ) {
    this.jobs = new JobHistory(index.database);
    this.stats = new StatsHistory(index.database);
    this.catalog = new Catalog(index.database);
    ({ bytes: this.bytes, blobs: this.blobs } = index.totals());
  }

  static async open(options: CacheOptions): Promise<Cache> {
    const modes = cacheModes(options.groupReadable === true);
    await mkdir(options.dir, { recursive: true, mode: modes.dir });
    // Private images are cached here: the directory is the mirror user's (and, if asked, its group's) alone.
    if (options.owner) await chmod(options.dir, modes.dir);
    const store = new FsBlobStore(options.dir, modes);
    await store.init();
    const index = new CacheIndex(join(options.dir, 'index.db'), options.owner ? modes.file : undefined);
    let recovery: RecoveryReport | undefined;
    if (options.owner) {
      const sweptTempFiles = await store.sweepTemp();
      recovery = { sweptTempFiles, ...(await reconcile(index, store)) };
      new JobHistory(index.database).abandonRunning();
    }
    return new Cache(options.dir, store, index, new AccessRecorder(index, options.accessFlushIntervalMs), recovery);
  }

  lookupBlob(digest: Digest): BlobRecord | undefined {
    const remembered = this.records.get(digest.value);
    if (remembered) return remembered;
    const record = this.index.getBlob(digest.value);
    if (record) this.records.set(digest.value, record);
    return record;
  }

  /**
   * Streams a cached blob. The file's size is checked against the index before
   * anything is sent; the first full read in this process re-hashes it too.
   */
  async openBlob(digest: Digest, expectedSize: number, range?: ByteRange): Promise<Readable | Buffer> {
    if (expectedSize <= SMALL_BLOB) {
      const bytes = await this.readVerified(digest, expectedSize);
      return range ? bytes.subarray(range.start, range.end + 1) : bytes;
    }
    let handle;
    try {
      handle = await open(this.store.pathOf(digest), 'r');
    } catch (err) {
      this.forget(digest);
      throw new CacheMissError(digest.value, (err as NodeJS.ErrnoException).code ?? 'cannot open');
    }
    const { size, ino } = await handle.stat().catch(async (err: unknown) => {
      await handle.close();
      throw err;
    });
    if (size !== expectedSize) {
      await handle.close();
      await this.quarantine(digest, `file is ${size} bytes, index says ${expectedSize}`);
      throw new CacheMissError(digest.value, `size ${size} differs from ${expectedSize}`);
    }
    this.access.record(digest.value);
    this.lease(digest.value);
    const length = range ? range.end - range.start + 1 : size;
    const file = handle.createReadStream({ ...range, highWaterMark: Math.min(READ_CHUNK, Math.max(64 * 1024, length)) });
    file.once('close', () => this.unlease(digest.value));
    if (range || this.verified.has(digest.value)) return file;
    const verifier = new VerifyingStream(digest, expectedSize, (ok) => {
      if (ok) this.verified.add(digest.value);
      else this.quarantineIfSame(digest, ino, 'content does not match its digest').catch(() => undefined);
    });
    file.on('error', (err) => verifier.destroy(err));
    verifier.once('close', () => file.destroy());
    return file.pipe(verifier);
  }

  /**
   * The blob's path below the cache directory, for a front server to send, if
   * this process has verified its bytes and the file is still there at its
   * indexed size (else the record is dropped and the caller serves it itself).
   */
  async verifiedFile(digest: Digest, expectedSize: number): Promise<string | undefined> {
    if (!this.verified.has(digest.value)) return undefined;
    const size = await stat(this.store.pathOf(digest)).then((s) => s.size, () => undefined);
    if (size !== expectedSize) {
      if (size === undefined) this.forget(digest);
      else await this.quarantine(digest, `file is ${size} bytes, index says ${expectedSize}`);
      return undefined;
    }
    this.access.record(digest.value);
    return this.store.relativePathOf(digest);
  }

  /** Free and total bytes of the cache's disk; undefined when they cannot be read. */
  diskSpace(): Promise<{ free: number; total: number } | undefined> {
    return this.store.diskSpace().catch(() => undefined);
  }

  recordAccess(digest: Digest): void {
    this.access.record(digest.value);
  }

  /** Reads a cached manifest and checks its digest (manifests are small). */
  readManifest(digest: Digest): Promise<Buffer> {
    return this.readVerified(digest);
  }

  /** Small content, from memory or read whole and hashed; a damaged file is removed (CacheMissError). */
  private async readVerified(digest: Digest, expectedSize?: number): Promise<Buffer> {
    const remembered = this.small.get(digest.value);
    if (remembered) {
      this.access.record(digest.value);
      return remembered;
    }
    let bytes: Buffer;
    try {
      bytes = await this.store.readSmall(digest, expectedSize);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EFBIG') await this.quarantine(digest, (err as Error).message);
      else this.forget(digest);
      throw new CacheMissError(digest.value, code ?? 'cannot read');
    }
    if (expectedSize !== undefined && bytes.length !== expectedSize) {
      await this.quarantine(digest, `file is ${bytes.length} bytes, index says ${expectedSize}`);
      throw new CacheMissError(digest.value, `size ${bytes.length} differs from ${expectedSize}`);
    }
    if (digestOf(bytes, digest.algorithm) !== digest.value) {
      await this.quarantine(digest, 'content does not match its digest');
      throw new CacheMissError(digest.value, 'damaged');
    }
    this.verified.add(digest.value);
    this.small.set(digest.value, bytes);
    this.access.record(digest.value);
    return bytes;
  }

  async storeManifest(entry: { digest: Digest; bytes: Buffer; mediaType: string; children: string[] } & Provenance): Promise<void> {
    await this.store.writeSmall(entry.digest, entry.bytes);
    const known = this.index.getBlob(entry.digest.value) !== undefined;
    this.records.delete(entry.digest.value);
    this.index.putManifest({ digest: entry.digest.value, size: entry.bytes.length, mediaType: entry.mediaType, children: entry.children, now: Date.now() });
    this.linkRepo(entry.upstream, entry.repo, entry.digest.value);
    if (!known) this.grew(entry.bytes.length);
  }

  beginFill(digest: Digest, expectedSize?: number): Promise<BlobFill> {
    return this.store.beginFill(digest, expectedSize);
  }

  /** Verifies and publishes a fill, then indexes it: bytes first, index second. */
  async commitFill(fill: BlobFill, from: Provenance): Promise<void> {
    await fill.commit(() => {
      this.records.delete(fill.digest.value);
      this.index.putBlob({ digest: fill.digest.value, size: fill.written, now: Date.now() });
      this.linkRepo(from.upstream, from.repo, fill.digest.value);
    });
    this.verified.add(fill.digest.value);
    this.grew(fill.written);
  }

  /**
   * Whether `digest` is known to belong to the repository: it was fetched
   * through it, or the upstream confirmed it there. Digests are not secrets,
   * so this, not possession of the bytes, decides what a repository may serve.
   */
  belongsTo(upstream: string, repo: string, digest: string): boolean {
    const owner = `${upstream}/${repo}`;
    if (this.links.get(digest)?.has(owner)) return true;
    if (!this.index.isLinked(upstream, repo, digest)) return false;
    this.rememberLink(digest, owner);
    return true;
  }

  /** Records that the upstream holds `digest` in this repository. */
  linkRepo(upstream: string, repo: string, digest: string): void {
    this.index.linkRepo(upstream, repo, digest);
    this.rememberLink(digest, `${upstream}/${repo}`);
  }

  private rememberLink(digest: string, owner: string): void {
    let owners = this.links.get(digest);
    if (!owners || owners.size >= MAX_REMEMBERED_OWNERS) {
      owners = new Set();
      this.links.set(digest, owners);
    }
    owners.add(owner);
  }

  isLeased(digest: string): boolean {
    return (this.leases.get(digest) ?? 0) > 0;
  }

  /**
   * Evicts a blob: out of the index first, then off the disk. A blob being
   * read is left alone (returns false); readers never see it vanish.
   */
  async remove(digest: Digest): Promise<boolean> {
    if (this.isLeased(digest.value)) return false;
    const record = this.index.getBlob(digest.value);
    this.dropRemembered(digest.value);
    try {
      this.index.removeBlob(digest.value);
    } catch (err) {
      if (!isDiskFull(err)) throw err;
      // On a full disk the index cannot even record a removal: free the bytes first, then
      // forget them. Meanwhile a reader finds the file gone and fetches the blob again.
      await this.store.remove(digest);
      this.index.removeBlob(digest.value);
    }
    if (record) this.shrank(record.size);
    await this.store.remove(digest);
    return true;
  }

  getTag(upstream: string, repo: string, tag: string, acceptKey: string): TagRecord | undefined {
    const remembered = this.tags.get(tagKey(upstream, repo, tag, acceptKey));
    if (remembered) return remembered;
    const record = this.index.getTag(upstream, repo, tag, acceptKey);
    if (record) this.rememberTag(record);
    return record;
  }

  putTag(record: TagRecord): void {
    this.index.putTag(record);
    this.rememberTag(record);
  }

  private rememberTag(record: TagRecord): void {
    const key = tagKey(record.upstream, record.repo, record.tag, record.acceptKey);
    this.tags.set(key, record);
    const keys = this.tagKeysByDigest.get(record.digest) ?? new Set<string>();
    keys.add(key);
    this.tagKeysByDigest.set(record.digest, keys);
  }

  /** Forgets in-memory copies of a removed row; removing a manifest also removed its tags from the index. */
  private dropRemembered(digest: string): void {
    this.records.delete(digest);
    this.small.delete(digest);
    this.verified.delete(digest);
    this.links.delete(digest);
    for (const key of this.tagKeysByDigest.get(digest) ?? []) this.tags.delete(key);
    this.tagKeysByDigest.delete(digest);
  }

  close(): void {
    this.access.close();
    this.index.close();
  }

  private grew(bytes: number): void {
    this.bytes += bytes;
    this.blobs += 1;
    this.onGrow?.();
  }

  private shrank(bytes: number): void {
    this.bytes -= bytes;
    this.blobs -= 1;
  }

  private lease(digest: string): void {
    this.leases.set(digest, (this.leases.get(digest) ?? 0) + 1);
  }

  private unlease(digest: string): void {
    const left = (this.leases.get(digest) ?? 1) - 1;
    if (left <= 0) this.leases.delete(digest);
    else this.leases.set(digest, left);
  }

  /** The index lost track of the file (missing on disk): drop the entry. */
  private forget(digest: Digest): void {
    const record = this.index.getBlob(digest.value);
    this.dropRemembered(digest.value);
    if (!record) return;
    this.index.removeBlob(digest.value);
    this.shrank(record.size);
  }

  /** Quarantines only if the file is still the one that was read (a fresh good copy may have replaced it). */
  private async quarantineIfSame(digest: Digest, ino: number, reason: string): Promise<void> {
    const current = await stat(this.store.pathOf(digest)).catch(() => undefined);
    if (current?.ino === ino) await this.quarantine(digest, reason);
  }

  /** A damaged file: out of the index and off the disk, so the next pull refetches it. */
  private async quarantine(digest: Digest, reason: string): Promise<void> {
    this.forget(digest);
    this.verified.delete(digest.value);
    await this.store.remove(digest).catch(() => undefined);
    this.onCorrupt?.(digest.value, reason);
  }

  /** Told about every damaged file found while serving. */
  onCorrupt: ((digest: string, reason: string) => void) | undefined;
}

/** The cache's disk (or its index's) is full: making room may help. */
export function isDiskFull(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return code === 'ENOSPC' || code === 'EDQUOT' || code === 'SQLITE_FULL';
}

/** One key per (registry, repository, reference, accepted manifest types): the tag cache's, and the mirror's for coalescing. */
export const tagKey = (upstream: string, repo: string, reference: string, acceptKey: string): string => `${upstream}/${repo}:${reference}\n${acceptKey}`;
