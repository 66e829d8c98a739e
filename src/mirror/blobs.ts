import type { Readable } from 'node:stream';
import type { BlobFill } from '../cache/blob-fill.js';
import type { ByteRange } from '../cache/blob-store.js';
import type { Cache } from '../cache/cache.js';
import { parseDigest, type Digest } from '../oci/digest.js';
import { unavailable } from '../oci/errors.js';
import type { BlobFills } from './blob-fills.js';
import type { CacheOutcome } from './outcome.js';
import type { Target } from './resolve.js';

export interface BlobAnswer {
  digest: string;
  size: number;
  cache: CacheOutcome;
  /** Streams the blob or a range of it; call at most once, for GET only. */
  open(range?: ByteRange): Readable;
}

/** Blobs: served from the cache, or from the one fill in progress for the digest. */
export class BlobService {
  constructor(
    private readonly cache: Cache,
    private readonly fills: BlobFills,
  ) {}

  async get(target: Target, reference: string, head: boolean): Promise<BlobAnswer> {
    const digest = parseDigest(reference);
    const record = this.cache.lookupBlob(digest);
    if (record) {
      if (head) this.cache.recordAccess(digest);
      return { digest: digest.value, size: record.size, cache: 'hit', open: (range) => this.cache.openBlob(digest, range) };
    }
    const running = this.fills.current(digest);
    if (head && !running) {
      // A HEAD does not start a fill: the client may never GET the blob.
      const size = await target.upstream.headBlob(target.repo, digest.value, target.via);
      if (size !== undefined) return { digest: digest.value, size, cache: 'pass', open: () => { throw new Error('HEAD has no body'); } };
    }
    const { fill: pending, shared } = this.fills.join(digest, target);
    const fill = await pending;
    // Without a Content-Length upstream, the size is known only at the end.
    if (fill.size === undefined) await fill.settled();
    const size = fill.size ?? fill.written;
    return { digest: digest.value, size, cache: shared ? 'coalesced' : 'miss', open: (range) => this.readFill(fill, digest, range) };
  }

  private readFill(fill: BlobFill, digest: Digest, range?: ByteRange): Readable {
    if (fill.state === 'committed') return this.cache.openBlob(digest, range);
    if (fill.state === 'failed') throw unavailable(`fetching ${digest.value} from upstream failed: ${fill.error?.message ?? 'unknown error'}`);
    return fill.createReader(range?.start, range?.end);
  }
}
