import type { Readable } from 'node:stream';
import type { ByteRange } from '../oci/byte-range.js';
import { digestOf, parseDigest, type Digest } from '../oci/digest.js';
import { manifestMediaType, referencedDigests } from '../oci/manifest.js';
import { MANIFEST_MEDIA_TYPES } from '../oci/media-types.js';
import { NotStoredError, ObjectTooLargeError, StoreFullError, StoreUnavailableError, type BlobStore } from '../storage/blob-store.js';
import { AccessRecorder } from './access-recorder.js';
import { BlobFill } from './blob-fill.js';
import type { BlobRecord, CacheIndex, TagRecord } from './cache-index.js';
import type { CacheDatabase } from './database.js';
import { HotRows, tagKey } from './hot-rows.js';
import { Leases } from './leases.js';
import { DEFAULT_MEMORY_BUDGET_BYTES, splitMemoryBudget, type CacheMemory } from './memory-budget.js';
import { reconcile, type ReconcileReport, type ReconcileTarget, type RecoveryReport } from './recovery.js';
import { fencedWrite, RelayWrite, spooledWrite, type RelayEnding } from './relay-write.js';
import { SMALL_BLOB, VerifiedContent } from './verified-content.js';
import { CorruptBlobError, VerifyingStream } from './verifying-stream.js';

export { CorruptBlobError, tagKey };
export type { RelayEnding };

/**
 * The largest manifest read back from the store: cache.maxManifestSize is
 * smaller. A bound on one read, not memory kept (the read is the object's
 * size), so it is not part of cache.memoryBudget.
 */
const MAX_SMALL_READ = 64 * 1024 * 1024;

export interface CacheOptions {
  database: CacheDatabase;
  store: BlobStore;
  accessFlushIntervalMs: number;
  /** cache.memoryBudget: what the small-content and index-row caches may hold together (split in memory-budget.ts). */
  memoryBudgetBytes?: number;
  /**
   * The serving process owns the cache: it cleans up after a crash and
   * reconciles the index with the store (in the background: it serves
   * meanwhile). Command-line tools beside a running server do not.
   */
  owner: boolean;
  /**
   * A local directory store that every fill of a replica in a cluster is
   * spooled to, so readers (and other replicas' streams) that join late
   * read it back: the blobs it fills for the bucket, and those relayed from
   * the replica filling them.
   */
  spool?: BlobStore;
}

export interface Provenance {
  upstream: string;
  repo: string;
}

/** The cached copy is missing, damaged or out of reach for now; fetch the content again. */
export class CacheMissError extends Error {
  constructor(readonly digest: string, detail: string) {
    super(`cached copy of ${digest} unusable: ${detail}`);
    this.name = 'CacheMissError';
  }
}

/** The store refused the write for lack of room (the fill failed over from the disk's own ENOSPC). */
export function isStoreFull(err: unknown): boolean {
  return err instanceof StoreFullError;
}

/** The store cannot be reached for now; what the cache holds is not lost. */
export function isStoreUnavailable(err: unknown): boolean {
  return err instanceof StoreUnavailableError;
}

/** The cache disk (or its index) is full: making room may help. */
export function isDiskFull(err: unknown): boolean {
  if (err instanceof StoreFullError) return true;
  const code = (err as { code?: unknown }).code;
  return code === 'ENOSPC' || code === 'EDQUOT' || code === 'SQLITE_FULL';
}

/** What a fill starts with. */
export interface FillStart {
  expectedSize: number | undefined;
  makeRoom: (bytes: number) => Promise<void>;
  onUncached: (err: Error) => void;
}

/** Bytes and number of indexed blobs, kept current without a SUM or COUNT per request. */
class Usage {
  constructor(
    public bytes: number,
    public blobs: number,
  ) {}
}

/**
 * The cache as the mirror sees it: bytes in the store, metadata in the index,
 * and the rule that the index only names content whose bytes are in place
 * and verified. Open readers hold a lease, so eviction passes over what is
 * being served.
 */
export class Cache {
  readonly access: AccessRecorder;
  /** Told about every damaged object found while serving. */
  onCorrupt: ((digest: string, reason: string) => void) | undefined;
  /** Told when content is recorded as a repository's (fetched through it, or confirmed upstream), so other replicas learn it too. */
  onLinked: ((upstream: string, repo: string, digest: string) => void) | undefined;
  /** Called after content was added, so a quota or a free-space floor can be enforced promptly. */
  onGrow: (() => void) | undefined;
  /** Told when a fill's local spool failed: the fill goes on into the store without it. */
  onSpoolLost: ((digest: string, err: Error) => void) | undefined;
  private readonly hot: HotRows;
  private readonly content: VerifiedContent;
  private readonly leases = new Leases();
  private readonly usage: Usage;
  private readonly stopReconciling = new AbortController();
  /** Settles when the background pass over a local store ended; undefined when none runs. */
  readonly reconciled: Promise<ReconcileReport> | undefined;
  /** Until the pass is over, an index miss may be an object the store holds unindexed: look there first. */
  private storeMayHoldUnindexed: boolean;

  private constructor(
    readonly index: CacheIndex,
    readonly store: BlobStore,
    accessFlushIntervalMs: number,
    readonly recovery: RecoveryReport | undefined,
    private readonly spool: BlobStore | undefined,
    memory: CacheMemory,
  ) {
    this.hot = new HotRows(index, memory);
    this.content = new VerifiedContent(memory.smallContentBytes, memory.verifiedDigests);
    this.access = new AccessRecorder(index, accessFlushIntervalMs);
    const totals = index.totals();
    this.usage = new Usage(totals.bytes, totals.blobs);
    this.storeMayHoldUnindexed = store.shared;
    if (recovery && !store.shared) {
      this.storeMayHoldUnindexed = true;
      this.reconciled = reconcile(this.reconcileTarget(), this.stopReconciling.signal);
      // Once over, misses go upstream at once; if it failed, they keep looking in the store first.
      this.reconciled.then(() => (this.storeMayHoldUnindexed = this.stopReconciling.signal.aborted), () => undefined);
    }
  }

  static async open(options: CacheOptions): Promise<Cache> {
    const { index } = options.database;
    let recovery: RecoveryReport | undefined;
    if (options.owner) {
      const sweptTempFiles = await options.store.sweepIncomplete();
      recovery = { sweptTempFiles };
      options.database.jobs.abandonRunning();
      if (options.spool) recovery.sweptSpoolFiles = await options.spool.sweepIncomplete();
    }
    const memory = splitMemoryBudget(options.memoryBudgetBytes ?? DEFAULT_MEMORY_BUDGET_BYTES);
    return new Cache(index, options.store, options.accessFlushIntervalMs, recovery, options.spool, memory);
  }

  /** What the memory-budgeted caches hold now: bytes of small content, rows of each kind. */
  get memoryHeld(): CacheMemory {
    return { smallContentBytes: this.content.heldBytes, ...this.hot.held, verifiedDigests: this.content.verifiedCount };
  }

  get bytes(): number {
    return this.usage.bytes;
  }

  get blobs(): number {
    return this.usage.blobs;
  }

  lookupBlob(digest: Digest): BlobRecord | undefined {
    return this.hot.blob(digest.value);
  }

  /**
   * On an index miss in a store other instances write too, or in a local one
   * not reconciled yet since the start: the object may be there already.
   * Adopts a blob the store holds (its bytes are verified on first read, like
   * every object's); undefined when it is not there.
   */
  async adoptBlob(digest: Digest): Promise<BlobRecord | undefined> {
    if (!this.storeMayHoldUnindexed) return undefined;
    const found = await this.store.stat(digest).catch(() => undefined);
    if (!found) return undefined;
    if (!this.index.getBlob(digest.value)) {
      this.index.putBlob({ digest: digest.value, size: found.size, now: Date.now() });
      this.hot.blobChanged(digest.value);
      this.grew(found.size);
    }
    return this.hot.blob(digest.value);
  }

  /** The same for a manifest: read, verified and indexed with the type its document gives. */
  async adoptManifest(digest: Digest, maxBytes: number): Promise<BlobRecord | undefined> {
    if (!this.storeMayHoldUnindexed) return undefined;
    let bytes: Buffer;
    try {
      bytes = await this.store.read(digest, maxBytes);
    } catch {
      return undefined;
    }
    if (digestOf(bytes, digest.algorithm) !== digest.value) return undefined;
    let mediaType: string;
    try {
      mediaType = manifestMediaType(bytes, undefined);
    } catch {
      return undefined;
    }
    if (!MANIFEST_MEDIA_TYPES.includes(mediaType)) return undefined;
    if (this.index.getBlob(digest.value)) return this.hot.blob(digest.value);
    this.index.putManifest({ digest: digest.value, size: bytes.length, mediaType, children: referencedDigests(bytes), now: Date.now() });
    this.hot.blobChanged(digest.value);
    this.content.keep(digest.value, bytes);
    this.grew(bytes.length);
    return this.hot.blob(digest.value);
  }

  /**
   * A cached blob: small ones as verified bytes from memory or read whole,
   * others as a stream whose size is checked before anything is sent; the
   * first full read in this process re-hashes it too.
   */
  async openBlob(digest: Digest, expectedSize: number, range?: ByteRange): Promise<Readable | Buffer> {
    if (expectedSize <= SMALL_BLOB) {
      const bytes = await this.readVerified(digest, expectedSize);
      return range ? bytes.subarray(range.start, range.end + 1) : bytes;
    }
    const createdAt = this.hot.blob(digest.value)?.createdAt;
    const { body, size } = await this.openStored(digest, range);
    if (size !== expectedSize) {
      body.destroy();
      await this.quarantine(digest, `stored object is ${size} bytes, index says ${expectedSize}`);
      throw new CacheMissError(digest.value, `size ${size} differs from ${expectedSize}`);
    }
    this.access.record(digest.value);
    if (range || this.content.has(digest.value)) return body;
    const verifier = new VerifyingStream(digest, expectedSize, (ok) => {
      if (ok) this.content.mark(digest.value);
      // Only if the index still holds the copy that was read: a fresh good one may have replaced it.
      else if (this.hot.blob(digest.value)?.createdAt === createdAt) this.quarantine(digest, 'content does not match its digest').catch(() => undefined);
    });
    body.on('error', (err) => verifier.destroy(err));
    verifier.once('close', () => body.destroy());
    return body.pipe(verifier);
  }

  /** Bytes of a stored object the index may not know yet (another replica's), unverified: for a fill that goes on verifying them. */
  async openStoredRange(digest: Digest, range: ByteRange): Promise<Readable> {
    return (await this.openStored(digest, range)).body;
  }

  /** Opens a stored object under a lease; a missing or unreachable one is a CacheMissError. */
  private async openStored(digest: Digest, range?: ByteRange): Promise<{ body: Readable; size: number }> {
    let opened: { body: Readable; size: number };
    try {
      opened = await this.store.open(digest, range);
    } catch (err) {
      throw this.unusable(digest, err);
    }
    this.leases.take(digest.value);
    opened.body.once('close', () => this.leases.release(digest.value));
    return opened;
  }

  /**
   * The blob's path below the cache directory, for a front server to send, if
   * this process has verified its bytes and the file is still there at its
   * indexed size (else the record is dropped and the caller serves it itself).
   */
  async verifiedFile(digest: Digest, expectedSize: number): Promise<string | undefined> {
    if (!this.content.has(digest.value) || !this.store.localFile) return undefined;
    const path = await this.store.localFile(digest, expectedSize);
    if (path === undefined) {
      const found = await this.store.stat(digest).catch(() => undefined);
      if (found === undefined) this.forget(digest);
      else await this.quarantine(digest, `stored object is ${found.size} bytes, index says ${expectedSize}`);
      return undefined;
    }
    this.access.record(digest.value);
    return path;
  }

  /** A URL the client may fetch a verified object from directly, when the store can make one. */
  async presignedUrl(digest: Digest): Promise<string | undefined> {
    if (!this.content.has(digest.value) || !this.store.presignedUrl) return undefined;
    this.access.record(digest.value);
    return this.store.presignedUrl(digest);
  }

  recordAccess(digest: Digest): void {
    this.access.record(digest.value);
  }

  /** Free and total bytes of the cache's disk; undefined for stores without one. */
  diskSpace(): Promise<{ free: number; total: number } | undefined> {
    return this.store.space().catch(() => undefined);
  }

  /** Reads a cached manifest and checks its digest (manifests are small). */
  readManifest(digest: Digest): Promise<Buffer> {
    return this.readVerified(digest);
  }

  /** Small content, from memory or read whole and hashed; a damaged object is removed (CacheMissError). */
  private async readVerified(digest: Digest, expectedSize?: number): Promise<Buffer> {
    const remembered = this.content.bytes(digest.value);
    if (remembered) {
      this.access.record(digest.value);
      return remembered;
    }
    let bytes: Buffer;
    try {
      bytes = await this.store.read(digest, expectedSize ?? MAX_SMALL_READ);
    } catch (err) {
      if (err instanceof ObjectTooLargeError) {
        await this.quarantine(digest, err.message);
        throw new CacheMissError(digest.value, 'larger than indexed');
      }
      throw this.unusable(digest, err);
    }
    if (expectedSize !== undefined && bytes.length !== expectedSize) {
      await this.quarantine(digest, `stored object is ${bytes.length} bytes, index says ${expectedSize}`);
      throw new CacheMissError(digest.value, `size ${bytes.length} differs from ${expectedSize}`);
    }
    if (digestOf(bytes, digest.algorithm) !== digest.value) {
      await this.quarantine(digest, 'content does not match its digest');
      throw new CacheMissError(digest.value, 'damaged');
    }
    this.content.keep(digest.value, bytes);
    this.access.record(digest.value);
    return bytes;
  }

  /**
   * Why a stored object cannot be read now: gone (its row is dropped) or out
   * of reach (kept: a bucket that is down comes back). Either way the caller
   * fetches the content again.
   */
  private unusable(digest: Digest, err: unknown): Error {
    if (err instanceof NotStoredError) {
      this.forget(digest);
      return new CacheMissError(digest.value, 'no longer in the store');
    }
    if (err instanceof StoreUnavailableError) return new CacheMissError(digest.value, err.message);
    return err instanceof Error ? err : new Error(String(err));
  }

  async storeManifest(entry: { digest: Digest; bytes: Buffer; mediaType: string; children: string[] } & Provenance): Promise<void> {
    await this.store.put(entry.digest, entry.bytes);
    const known = this.index.getBlob(entry.digest.value) !== undefined;
    this.hot.blobChanged(entry.digest.value);
    this.index.putManifest({ digest: entry.digest.value, size: entry.bytes.length, mediaType: entry.mediaType, children: entry.children, now: Date.now() });
    this.link(entry.upstream, entry.repo, entry.digest.value);
    this.content.keep(entry.digest.value, entry.bytes);
    if (!known) this.grew(entry.bytes.length);
  }

  /**
   * Starts a fill: bytes go to the store as they arrive, and readers may
   * follow them. With `confirm`, the store's copy is published only if it
   * still answers true then (the fill's lease is still this replica's).
   */
  async beginFill(digest: Digest, options: FillStart & { confirm?: () => Promise<boolean> }): Promise<BlobFill> {
    let write = await this.store.beginWrite(digest, options.expectedSize);
    if (this.spool) {
      // Without a spool file the fill goes on into the store alone, keeping its memory window for late readers.
      const spool = await this.spool.beginWrite(digest, options.expectedSize).catch((err: unknown) => {
        this.onSpoolLost?.(digest.value, err as Error);
        return undefined;
      });
      if (spool) write = spooledWrite(write, spool, digest.value, (err) => this.onSpoolLost?.(digest.value, err));
    }
    return new BlobFill(digest, options.confirm ? fencedWrite(write, options.confirm, digest.value) : write, {
      ...options,
      openStored: async (range) => (await this.openStored(digest, range)).body,
    });
  }

  /**
   * Starts a fill whose bytes another replica is storing: they go to the local
   * spool, and the shared store only if `settle` says this replica must.
   */
  async beginRelay(digest: Digest, options: FillStart & { settle: () => Promise<RelayEnding> }): Promise<BlobFill> {
    if (!this.spool) throw new Error('no spool store: a replica alone relays nothing');
    const spool = await this.spool.beginWrite(digest, options.expectedSize);
    return new BlobFill(digest, new RelayWrite(spool, this.store, digest, options.settle), {
      ...options,
      openStored: async (range) => (await this.openStored(digest, range)).body,
    });
  }

  /** Drops the unfinished uploads of `digest` a replica that died left behind. */
  async abortUploads(digest: Digest): Promise<number> {
    return (await this.store.abortUploads?.(digest)) ?? 0;
  }

  /** Verifies and publishes a fill, then indexes it: bytes first, index second. */
  async commitFill(fill: BlobFill, from: Provenance): Promise<void> {
    const digest = fill.digest;
    await fill.commit(() => {
      this.hot.blobChanged(digest);
      this.index.putBlob({ digest, size: fill.bytesReceived, now: Date.now() });
      this.link(from.upstream, from.repo, digest);
    });
    this.access.touch(digest);
    this.content.mark(digest);
    this.grew(fill.bytesReceived);
  }

  isLeased(digest: string): boolean {
    return this.leases.has(digest);
  }

  /**
   * Evicts a blob: out of the index first, then out of the store. A blob being
   * read is left alone (returns false); readers never see it vanish.
   */
  async remove(digest: Digest): Promise<boolean> {
    if (this.leases.has(digest.value)) return false;
    const record = this.index.getBlob(digest.value);
    this.dropRemembered(digest.value);
    try {
      this.index.removeBlob(digest.value);
    } catch (err) {
      if (!isDiskFull(err)) throw err;
      // On a full disk the index cannot even record a removal: free the bytes first, then
      // forget them. Meanwhile a reader finds the object gone and fetches the blob again.
      await this.store.delete(digest);
      this.index.removeBlob(digest.value);
    }
    if (record) this.shrank(record.size);
    await this.store.delete(digest);
    return true;
  }

  /** Whether `digest` was fetched through the repository, or its upstream confirmed it there. */
  belongsTo(upstream: string, repo: string, digest: string): boolean {
    return this.hot.belongsTo(upstream, repo, digest);
  }

  /** Records that the upstream holds `digest` in this repository. */
  linkRepo(upstream: string, repo: string, digest: string, options: { share?: boolean } = {}): void {
    this.link(upstream, repo, digest, options.share ?? true);
  }

  private link(upstream: string, repo: string, digest: string, share = true): void {
    this.hot.link(upstream, repo, digest);
    if (share) this.onLinked?.(upstream, repo, digest);
  }

  getTag(upstream: string, repo: string, tag: string, acceptKey: string): TagRecord | undefined {
    return this.hot.tag(upstream, repo, tag, acceptKey);
  }

  putTag(record: TagRecord): void {
    this.hot.putTag(record);
  }

  /** Stops the background pass (the next start does it again) and flushes access times. */
  async close(): Promise<void> {
    this.stopReconciling.abort();
    await this.reconciled?.catch(() => undefined);
    this.access.close();
  }

  /** The background pass works through the cache, so rows in memory and the totals follow what it changes. */
  private reconcileTarget(): ReconcileTarget {
    return {
      index: this.index,
      store: this.store,
      dropMissing: (record) => {
        if (this.index.getBlob(record.digest)?.createdAt !== record.createdAt) return;
        this.forget(parseDigest(record.digest));
      },
      adopt: (digest, size, manifest) => {
        if (this.index.getBlob(digest.value)) return;
        if (manifest) this.index.putManifest({ digest: digest.value, size, ...manifest, now: Date.now() });
        else this.index.putBlob({ digest: digest.value, size, now: Date.now() });
        this.hot.blobChanged(digest.value);
        this.grew(size);
      },
    };
  }

  private grew(bytes: number): void {
    this.usage.bytes += bytes;
    this.usage.blobs += 1;
    this.onGrow?.();
  }

  private shrank(bytes: number): void {
    this.usage.bytes -= bytes;
    this.usage.blobs -= 1;
  }

  /** Forgets in-memory copies of a removed row; removing a manifest also removed its tags from the index. */
  private dropRemembered(digest: string): void {
    this.hot.forget(digest);
    this.content.forget(digest);
  }

  /** The index lost track of the object (gone from the store): drop the entry. */
  private forget(digest: Digest): void {
    const record = this.index.getBlob(digest.value);
    this.dropRemembered(digest.value);
    if (!record) return;
    this.index.removeBlob(digest.value);
    this.shrank(record.size);
  }

  /** A damaged object: out of the index and out of the store, so the next pull refetches it. */
  private async quarantine(digest: Digest, reason: string): Promise<void> {
    this.forget(digest);
    await this.store.delete(digest).catch(() => undefined);
    this.onCorrupt?.(digest.value, reason);
  }
}
