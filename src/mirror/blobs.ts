import type { Readable } from 'node:stream';
import { FillUnavailableError, type BlobFill } from '../cache/blob-fill.js';
import type { ByteRange } from '../cache/blob-store.js';
import { CacheMissError, type Cache } from '../cache/cache.js';
import { parseDigest, type Digest } from '../oci/digest.js';
import { unavailable } from '../oci/errors.js';
import type { BlobFills, Requester } from './blob-fills.js';
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
    const record = this.cache.lookupBlob(digest);
    if (record) {
      await this.gate.admit(target, digest, 'blob');
      if (head) this.cache.recordAccess(digest);
      return {
        digest: digest.value,
        size: record.size,
        cache: 'hit',
        open: (range) => this.openCached(target, digest, record.size, range, requester),
        verifiedFile: () => this.cache.verifiedFile(digest, record.size),
      };
    }
    const running = this.fills.current(digest);
    if (head && !running) {
      // A HEAD does not start a fill: the client may never GET the blob.
      const size = await target.upstream.headBlob(target.repo, digest.value, target.via);
      this.gate.record(target, digest);
      if (size !== undefined) return { digest: digest.value, size, cache: 'pass', open: () => Promise.reject(new Error('HEAD has no body')) };
    }
    const { fill, shared } = await this.joinFill(target, digest, requester);
    if (fill.state === 'failed') throw unavailable(`fetching ${digest.value} from upstream failed: ${fill.error?.message ?? 'unknown error'}`);
    return { digest: digest.value, size: fill.size ?? fill.written, cache: shared ? 'coalesced' : 'miss', open: async (range) => this.readFill(target, fill, digest, range, requester) };
  }

  /** Makes sure a blob is cached, without reading it (warm-up); tells whether it had to be fetched. */
  async prefetch(target: Target, reference: string): Promise<{ fetched: boolean; size: number }> {
    const digest = parseDigest(reference);
    const record = this.cache.lookupBlob(digest);
    if (record) {
      await this.gate.admit(target, digest, 'blob');
      return { fetched: false, size: record.size };
    }
    const { fill } = await this.joinFill(target, digest);
    await fill.settled();
    return { fetched: true, size: fill.written };
  }

  /** The cached file, or, if it turned out missing or damaged, a fresh fill from upstream. */
  private async openCached(target: Target, digest: Digest, size: number, range?: ByteRange, requester?: Requester): Promise<Readable | Buffer> {
    try {
      return await this.cache.openBlob(digest, size, range);
    } catch (err) {
      if (!(err instanceof CacheMissError)) throw err;
      const { fill } = await this.joinFill(target, digest, requester);
      if (fill.size !== size) throw unavailable(`${digest.value} changed size upstream (${fill.size ?? 'unknown'} ≠ ${size})`);
      return this.readFill(target, fill, digest, range, requester);
    }
  }

  private async joinFill(target: Target, digest: Digest, requester?: Requester, attempt = 0): Promise<{ fill: BlobFill; shared: boolean }> {
    const { fill: pending, shared, sameSource } = this.fills.join(digest, target, requester);
    if (shared && !sameSource) {
      // Another repository's fill: no byte of it is ours until the upstream confirms the blob is in our repository too.
      pending.catch(() => undefined); // its own failure is handled below, once we are admitted
      await this.gate.admit(target, digest, 'blob');
    }
    let fill: BlobFill;
    try {
      fill = await pending;
    } catch (err) {
      // A fill started through another repository or registry failed before any byte
      // (a 404 or 403 there says nothing about ours): fetch through our own target.
      if (!shared || sameSource || attempt > 0) throw err;
      return this.joinFill(target, digest, requester, attempt + 1);
    }
    // Without a Content-Length upstream, the size is known only at the end.
    if (fill.size === undefined) await fill.settled();
    return { fill, shared };
  }

  private readFill(target: Target, fill: BlobFill, digest: Digest, range?: ByteRange, requester?: Requester): Readable | Promise<Readable | Buffer> {
    if (fill.state === 'committed') return this.openCached(target, digest, fill.written, range, requester);
    if (fill.state === 'failed') throw unavailable(`fetching ${digest.value} from upstream failed: ${fill.error?.message ?? 'unknown error'}`);
    try {
      return fill.createReader(range?.start, range?.end);
    } catch (err) {
      if (err instanceof FillUnavailableError) throw unavailable(err.message);
      throw err;
    }
  }
}
