import type { Readable } from 'node:stream';
import { FillUnavailableError, type FillHandle } from '../cache/blob-fill.js';
import type { ByteRange } from '../oci/byte-range.js';
import { CacheMissError, type Cache } from '../cache/cache.js';
import { parseDigest, type Digest } from '../oci/digest.js';
import { unavailable } from '../oci/errors.js';
import { StoredElsewhereError, type BlobFills, type Requester } from './blob-fills.js';
import type { CacheOutcome } from './outcome.js';
import type { RepositoryGate } from './repository-gate.js';
import type { Target } from './resolve.js';

export interface BlobAnswer {
  digest: string;
  size: number;
  cache: CacheOutcome;
  /**
   * Streams the blob or a range of it; call at most once, for GET only. Small
   * cached blobs come as the bytes themselves (no stream machinery per request).
   */
  open(range?: ByteRange): Promise<Readable | Buffer>;
  /** For a cache hit this process has verified and whose file is in place: its path below the cache directory, for a front server to send. */
  verifiedFile?: () => Promise<string | undefined>;
  /** For a cache hit this process has verified, in a store that signs URLs: one the client may fetch it from directly. */
  presignedUrl?: () => Promise<string | undefined>;
}

/** Blobs: served from the cache, or from the one fill in progress for the digest. */
export class BlobService {
  constructor(
    private readonly cache: Cache,
    private readonly fills: BlobFills,
    private readonly gate: RepositoryGate,
  ) {}

  async get(target: Target, reference: string, head: boolean, requester?: Requester): Promise<BlobAnswer> {
    const digest = parseDigest(reference);
    // A store other instances write, or a local one not reconciled since the start, may hold what this index does not know yet.
    const record = this.cache.lookupBlob(digest) ?? (this.fills.current(digest) ? undefined : await this.cache.adoptBlob(digest));
    if (record) {
      await this.gate.admit(target, digest, 'blob');
      if (head) this.cache.recordAccess(digest);
      return {
        digest: digest.value,
        size: record.size,
        cache: 'hit',
        open: (range) => this.openCached(target, digest, record.size, range, requester),
        verifiedFile: () => this.cache.verifiedFile(digest, record.size),
        presignedUrl: () => this.cache.presignedUrl(digest),
      };
    }
    const running = this.fills.current(digest);
    if (head && !running) {
      // A HEAD does not start a fill: the client may never GET the blob.
      const size = await target.upstream.headBlob(target.repo, digest.value, target.via);
      this.gate.record(target, digest);
      if (size !== undefined) return { digest: digest.value, size, cache: 'pass', open: () => Promise.reject(new Error('HEAD has no body')) };
    }
    const { fill, shared } = await this.joinOrAdopt(target, digest, requester);
    if (!fill) return this.get(target, reference, head, requester);
    if (fill.failure) throw unavailable(`fetching ${digest.value} from upstream failed: ${fill.failure.message}`);
    return { digest: digest.value, size: fill.size!, cache: shared ? 'coalesced' : 'miss', open: async (range) => this.readFill(fill, range) };
  }

  /** Makes sure a blob is cached, without reading it (warm-up); tells whether it had to be fetched. */
  async prefetch(target: Target, reference: string): Promise<{ fetched: boolean; size: number }> {
    const digest = parseDigest(reference);
    const record = this.cache.lookupBlob(digest) ?? (this.fills.current(digest) ? undefined : await this.cache.adoptBlob(digest));
    if (record) {
      await this.gate.admit(target, digest, 'blob');
      return { fetched: false, size: record.size };
    }
    const { fill } = await this.joinOrAdopt(target, digest);
    if (!fill) return this.prefetch(target, reference);
    await fill.done;
    return { fetched: true, size: fill.size! };
  }

  /** The cached file, or, if it turned out missing or damaged, a fresh fill from upstream. */
  private async openCached(target: Target, digest: Digest, size: number, range?: ByteRange, requester?: Requester): Promise<Readable | Buffer> {
    try {
      return await this.cache.openBlob(digest, size, range);
    } catch (err) {
      if (!(err instanceof CacheMissError)) throw err;
      const { fill } = await this.joinOrAdopt(target, digest, requester);
      if (!fill) return this.cache.openBlob(digest, size, range);
      if (fill.size !== size) throw unavailable(`${digest.value} changed size upstream (${fill.size ?? 'unknown'} ≠ ${size})`);
      return this.readFill(fill, range);
    }
  }

  /**
   * Joins (or starts) the fill; when a claim says another replica has just
   * stored the blob, adopts it instead (no fill: the cache has it now). A
   * stored mark whose object is gone is dropped, and the fill starts.
   */
  private async joinOrAdopt(target: Target, digest: Digest, requester?: Requester): Promise<{ fill?: FillHandle; shared: boolean }> {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        return await this.joinFill(target, digest, requester);
      } catch (err) {
        if (!(err instanceof StoredElsewhereError)) throw err;
        if (await this.cache.adoptBlob(digest)) return { shared: true };
        await this.fills.storedMarkWrong(digest);
      }
    }
    throw unavailable(`${digest.value}: another replica says it stored it, but the store does not have it`);
  }

  private async joinFill(target: Target, digest: Digest, requester?: Requester, attempt = 0): Promise<{ fill: FillHandle; shared: boolean }> {
    const { fill: pending, shared, sameSource } = this.fills.join(digest, target, requester);
    if (shared && !sameSource) {
      // Another repository's fill: no byte of it is ours until the upstream confirms the blob is in our repository too.
      pending.catch(() => undefined); // its own failure is handled below, once we are admitted
      await this.gate.admit(target, digest, 'blob');
    }
    let fill: FillHandle;
    try {
      fill = await pending;
    } catch (err) {
      // A fill started through another repository or registry failed before any byte
      // (a 404 or 403 there says nothing about ours): fetch through our own target.
      if (!shared || sameSource || attempt > 0) throw err;
      return this.joinFill(target, digest, requester, attempt + 1);
    }
    // Without a Content-Length upstream, the size is known only at the end.
    if (fill.size === undefined) await fill.done.catch(() => undefined);
    if (fill.size === undefined) throw unavailable(`fetching ${digest.value} from upstream failed: ${fill.failure?.message ?? 'its size never became known'}`);
    return { fill, shared };
  }

  private readFill(fill: FillHandle, range?: ByteRange): Readable {
    try {
      return fill.reader(range);
    } catch (err) {
      if (err instanceof FillUnavailableError) throw unavailable(err.message);
      throw err;
    }
  }
}
