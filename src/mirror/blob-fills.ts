import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { NotCachedError, type BlobFill } from '../cache/blob-fill.js';
import type { Cache } from '../cache/cache.js';
import type { Digest } from '../oci/digest.js';
import type { Logger } from '../log.js';
import type { EndpointClient } from '../upstream/endpoint-client.js';
import { describe, discard, type BlobStream } from '../upstream/upstream-registry.js';
import type { Target } from './resolve.js';

/**
 * At most one upstream fetch per digest, process-wide. The fill runs at
 * upstream speed into the cache; every client, the first one included, reads
 * the growing file, so no client can slow or cancel it. When an endpoint dies
 * mid-blob, the fill resumes with a Range request from the next endpoint.
 */
export class BlobFills {
  private readonly active = new Map<string, Promise<BlobFill>>();
  /** Which registry and repository each running fill came from. */
  private readonly sources = new Map<string, { registry: string; repo: string }>();
  /** Called when a fill hits a full disk, to make room (an eviction sweep). */
  onDiskFull: (() => Promise<unknown>) | undefined;

  constructor(
    private readonly cache: Cache,
    private readonly log: Logger,
    private readonly events: { upstreamBytes(registry: string, bytes: number): void },
  ) {}

  current(digest: Digest): Promise<BlobFill> | undefined {
    return this.active.get(digest.value);
  }

  get inProgress(): number {
    return this.active.size;
  }

  /**
   * Waits for running fills to finish (or fail), up to `timeoutMs`; for shutdown.
   * With `discardLate`, fills still running then are failed: their clients get
   * an aborted body and their temp files are removed, so nothing partial stays.
   */
  async drain(timeoutMs: number, options: { discardLate?: boolean } = {}): Promise<void> {
    const running = [...this.active.values()].map((p) => p.then((fill) => fill.settled()));
    if (running.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    });
    await Promise.race([Promise.allSettled(running), deadline]);
    clearTimeout(timer);
    if (!options.discardLate) return;
    const late = await Promise.allSettled([...this.active.values()]);
    for (const result of late) {
      if (result.status !== 'fulfilled') continue;
      this.log.warn({ digest: result.value.digest.value, bytes: result.value.written }, 'shutting down: discarding an unfinished blob fill');
      await result.value.fail(new Error('the mirror is shutting down'));
    }
  }

  /** Joins the fill of `digest`, starting it from `source` if none runs. */
  join(digest: Digest, source: Target): { fill: Promise<BlobFill>; shared: boolean; sameSource: boolean } {
    const existing = this.active.get(digest.value);
    if (existing) {
      const from = this.sources.get(digest.value);
      return { fill: existing, shared: true, sameSource: from?.registry === source.registry && from.repo === source.repo };
    }
    const done = (): void => this.forget(digest, fill);
    const fill = this.start(digest, source, done);
    this.active.set(digest.value, fill);
    this.sources.set(digest.value, { registry: source.registry, repo: source.repo });
    fill.catch(done);
    return { fill, shared: false, sameSource: true };
  }

  private async start(digest: Digest, source: Target, done: () => void): Promise<BlobFill> {
    const release = await source.upstream.fetchSlots.acquire();
    let fill: BlobFill;
    let upstream: BlobStream;
    try {
      upstream = await source.upstream.openBlob(source.repo, digest.value, { via: source.via });
      try {
        fill = await this.cache.beginFill(digest, upstream.size);
      } catch (err) {
        discard(upstream.body);
        throw err;
      }
      const fields = { digest: digest.value, upstream: source.registry, repo: source.repo };
      fill.onDiskFull = async () => {
        this.log.error(fields, 'cache disk is full; evicting to make room');
        await this.onDiskFull?.().catch(() => undefined);
      };
      fill.once('spill', () => this.log.error({ ...fields, bytes: fill.diskBytes }, 'cache disk is still full: streaming this blob to its clients without caching it'));
    } catch (err) {
      release();
      throw err;
    }
    this.drive(fill, upstream, source)
      .catch((err: unknown) => this.log.error({ err, digest: digest.value }, 'blob fill bookkeeping failed'))
      .finally(() => {
        release();
        done();
      });
    return fill;
  }

  /** Streams the upstream body into the fill, resuming elsewhere on a broken body, then commits. */
  private async drive(fill: BlobFill, first: BlobStream, source: Target): Promise<void> {
    const started = Date.now();
    const digest = fill.digest.value;
    const broken = new Set<EndpointClient>();
    let stream = first;
    const maxResumes = source.upstream.endpoints.length + 1;
    const counted = { bytes: 0 };
    const count = (): void => {
      try {
        this.events.upstreamBytes(source.registry, fill.written - counted.bytes);
      } catch {
        // metrics must never fail a fill
      }
      counted.bytes = fill.written;
    };
    try {
      for (let resumes = 0; ; resumes++) {
        let failure: unknown;
        try {
          await (stream.skip > 0 ? pipeline(stream.body, skipBytes(stream.skip), fill.writable()) : pipeline(stream.body, fill.writable()));
        } catch (err) {
          failure = err;
        }
        await fill.idle();
        count();
        const short = fill.expectedSize !== undefined && fill.written < fill.expectedSize;
        if (failure === undefined && !short) break;
        if (fill.state !== 'filling' || resumes >= maxResumes || (failure !== undefined && !isStreamBreak(failure))) {
          throw failure ?? new Error(`upstream body ended at ${fill.written} of ${fill.expectedSize} bytes`);
        }
        const reason = failure !== undefined ? describe(failure) : 'body ended early';
        stream.endpoint.state.failure(`blob ${digest} broke at ${fill.written} bytes: ${reason}`);
        broken.add(stream.endpoint);
        this.log.warn({ digest, upstream: source.registry, endpoint: stream.endpoint.displayUrl, bytes: fill.written, err: reason }, 'upstream blob stream broke; resuming with a Range request');
        stream = await source.upstream.openBlob(source.repo, digest, { offset: fill.written, via: source.via, avoid: broken });
      }
      await this.cache.commitFill(fill, { upstream: source.registry, repo: source.repo });
      this.log.info({ digest, upstream: source.registry, repo: source.repo, bytes: fill.written, ms: Date.now() - started, endpoint: stream.endpoint.displayUrl }, 'blob cached');
    } catch (err) {
      count();
      await fill.fail(err as Error);
      const fields = { digest, upstream: source.registry, repo: source.repo, bytes: fill.written, err: describe(err), endpoint: stream.endpoint.displayUrl };
      if (err instanceof NotCachedError) {
        this.log.error(fields, 'blob served but not cached: the cache disk is full');
      } else if ((err as NodeJS.ErrnoException).code === 'ENOSPC') {
        this.log.error(fields, 'cache disk is full: blob not cached');
        void this.onDiskFull?.().catch(() => undefined);
      } else {
        this.log.warn(fields, 'blob fill failed; nothing cached');
      }
    }
  }

  private forget(digest: Digest, fill: Promise<BlobFill>): void {
    if (this.active.get(digest.value) !== fill) return;
    this.active.delete(digest.value);
    this.sources.delete(digest.value);
  }
}

/** A network failure of the body (reset, premature close, timeout), as opposed to bad content. */
function isStreamBreak(err: unknown): boolean {
  const { name, code } = err as NodeJS.ErrnoException;
  if (name === 'DigestMismatchError' || name === 'SizeMismatchError') return false;
  return !['ENOSPC', 'EDQUOT', 'EIO', 'EROFS', 'EBADF'].includes(code ?? '');
}

/** Drops the first `count` bytes: an upstream that ignored our Range resent them. */
function skipBytes(count: number): Transform {
  let left = count;
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      if (left >= chunk.length) {
        left -= chunk.length;
        callback();
        return;
      }
      const rest = left > 0 ? chunk.subarray(left) : chunk;
      left = 0;
      callback(null, rest);
    },
  });
}
