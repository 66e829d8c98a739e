import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { DigestMismatchError, NotCachedError, SizeMismatchError, type BlobFill, type FillHandle } from '../cache/blob-fill.js';
import { isDiskFull, isStoreFull, isStoreUnavailable, type Cache } from '../cache/cache.js';
import type { Digest } from '../oci/digest.js';
import { tooManyRequests } from '../oci/errors.js';
import type { Logger } from '../log.js';
import type { EndpointClient } from '../upstream/endpoint-client.js';
import { QueueFullError } from '../upstream/semaphore.js';
import { describe, discard, type BlobStream } from '../upstream/upstream-registry.js';
import type { Target } from './resolve.js';

/** Who asks for content: the client's address for per-client limits, and a signal that aborts when it goes away. */
export interface Requester {
  readonly client: string;
  readonly signal: AbortSignal;
}

export interface FillSnapshot {
  digest: string;
  registry: string;
  repo: string;
  state: 'queued' | BlobFill['state'];
  bytes: number;
  size: number | undefined;
  /** Requests that joined it and have not gone away. */
  joined: number;
}

/** What fills report as they go (for metrics). */
export interface FillEvents {
  upstreamBytes(registry: string, bytes: number): void;
  /** A blob went to its clients uncached: the store was full or out of reach. */
  uncached(registry: string, reason: 'store full' | 'store unavailable'): void;
}

export interface FillLimits {
  /** New fills one client address may have queued or running at once; 0: no limit. */
  maxFillsPerClient: number;
}

/** Every client waiting for a queued fill left before it got a slot. */
export class FillAbandonedError extends Error {
  constructor(readonly digest: string) {
    super(`nobody waits for the fill of ${digest} any more`);
    this.name = 'FillAbandonedError';
  }
}

/** Seconds a client refused for a full fill queue is asked to wait. */
const QUEUE_FULL_RETRY_S = 5;

/**
 * The requests waiting on a fill. When the last one goes away before the fill
 * got an upstream slot, the fill leaves the queue. Work without a requester
 * (warm-up) holds it for good.
 */
class FillInterest {
  /** Requests that joined the fill and have not gone away (warm-up not counted). */
  waiting = 0;
  private held = false;
  private readonly controller = new AbortController();

  constructor(private readonly digest: string) {}

  /** Aborts once nobody waits any more. */
  get abandoned(): AbortSignal {
    return this.controller.signal;
  }

  add(signal: AbortSignal | undefined): void {
    if (!signal) {
      this.held = true;
      return;
    }
    if (!signal.aborted) {
      this.waiting += 1;
      signal.addEventListener('abort', () => this.leave(), { once: true });
      return;
    }
    this.settleIfEmpty();
  }

  private leave(): void {
    this.waiting -= 1;
    this.settleIfEmpty();
  }

  private settleIfEmpty(): void {
    if (this.waiting <= 0 && !this.held && !this.controller.signal.aborted) this.controller.abort(new FillAbandonedError(this.digest));
  }
}

interface ActiveFill {
  fill: Promise<BlobFill>;
  /** The fill, once it got an upstream slot and began. */
  started?: BlobFill;
  registry: string;
  repo: string;
  interest: FillInterest;
  /** The address that started it, for the per-client count. */
  client: string | undefined;
}

/**
 * At most one upstream fetch per digest, process-wide. The fill runs at
 * upstream speed into the cache; every client, the first one included, reads
 * the growing file, so no client can slow or cancel it. When an endpoint dies
 * mid-blob, the fill resumes with a Range request from the next endpoint.
 */
export class BlobFills {
  private readonly active = new Map<string, ActiveFill>();
  /** Fills queued or running per client address that started them. */
  private readonly byClient = new Map<string, number>();
  constructor(
    private readonly cache: Cache,
    private readonly log: Logger,
    private readonly events: FillEvents,
    private readonly limits: FillLimits,
    /** Makes room for `bytes` on a full cache disk (an eviction sweep); never throws. */
    private readonly makeRoom: (bytes: number) => Promise<void>,
  ) {}

  /** The fill of `digest` under way, if any, as its readers see it. */
  current(digest: Digest): Promise<FillHandle> | undefined {
    return this.active.get(digest.value)?.fill;
  }

  get inProgress(): number {
    return this.active.size;
  }

  /** The fills under way, for the admin API, logs and tests: queued ones have no bytes yet. */
  snapshot(): FillSnapshot[] {
    return [...this.active].map(([digest, entry]) => ({
      digest,
      registry: entry.registry,
      repo: entry.repo,
      state: entry.started?.state ?? 'queued',
      bytes: entry.started?.bytesReceived ?? 0,
      size: entry.started?.size,
      joined: entry.interest.waiting,
    }));
  }

  /**
   * Waits for running fills to finish (or fail), up to `timeoutMs`; for shutdown.
   * With `discardLate`, fills still running then are failed: their clients get
   * an aborted body and their temp files are removed, so nothing partial stays.
   */
  async drain(timeoutMs: number, options: { discardLate?: boolean } = {}): Promise<void> {
    const running = [...this.active.values()].map((a) => a.fill.then((fill) => fill.done));
    if (running.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    });
    await Promise.race([Promise.allSettled(running), deadline]);
    clearTimeout(timer);
    if (!options.discardLate) return;
    const late = await Promise.allSettled([...this.active.values()].map((a) => a.fill));
    for (const result of late) {
      if (result.status !== 'fulfilled') continue;
      this.log.warn({ digest: result.value.digest, bytes: result.value.bytesReceived }, 'shutting down: discarding an unfinished blob fill');
      await result.value.fail(new Error('the mirror is shutting down'));
    }
  }

  /**
   * Joins the fill of `digest`, starting it from `source` if none runs. A new
   * fill counts against its requester's per-client limit (429 beyond it);
   * joining one costs nothing upstream and is never limited.
   */
  join(digest: Digest, source: Target, requester?: Requester): { fill: Promise<FillHandle>; shared: boolean; sameSource: boolean } {
    const existing = this.active.get(digest.value);
    if (existing) {
      existing.interest.add(requester?.signal);
      return { fill: existing.fill, shared: true, sameSource: existing.registry === source.registry && existing.repo === source.repo };
    }
    const client = requester?.client;
    const started = client !== undefined ? (this.byClient.get(client) ?? 0) : 0;
    if (client !== undefined && this.limits.maxFillsPerClient > 0 && started >= this.limits.maxFillsPerClient) {
      throw tooManyRequests(1, `this client already has ${started} blob fetches under way, the most one client may start at once`);
    }
    const interest = new FillInterest(digest.value);
    interest.add(requester?.signal);
    let entry: ActiveFill | undefined;
    const done = (): void => {
      if (entry) this.forget(digest, entry);
    };
    const active: ActiveFill = { fill: this.start(digest, source, interest.abandoned, done), registry: source.registry, repo: source.repo, interest, client };
    active.fill.then((fill) => (active.started = fill), () => undefined);
    entry = active;
    this.active.set(digest.value, entry);
    if (client !== undefined) this.byClient.set(client, started + 1);
    entry.fill.catch(done);
    return { fill: entry.fill, shared: false, sameSource: true };
  }

  private async start(digest: Digest, source: Target, abandoned: AbortSignal, done: () => void): Promise<BlobFill> {
    let release: () => void;
    try {
      release = await source.upstream.fetchSlots.acquire(abandoned);
    } catch (err) {
      if (err instanceof QueueFullError) {
        throw tooManyRequests(QUEUE_FULL_RETRY_S, `upstream ${source.registry} has ${err.waiting} blob fetches waiting already`);
      }
      if (err instanceof FillAbandonedError) this.log.info({ digest: digest.value, upstream: source.registry, repo: source.repo }, 'queued blob fill dropped: no client waits for it any more');
      throw err;
    }
    let fill: BlobFill;
    let upstream: BlobStream;
    try {
      upstream = await source.upstream.openBlob(source.repo, digest.value, { via: source.via });
      const fields = { digest: digest.value, upstream: source.registry, repo: source.repo, store: this.cache.store.kind };
      try {
        fill = await this.cache.beginFill(digest, {
          expectedSize: upstream.size,
          makeRoom: async (bytes) => {
            this.log.error({ ...fields, bytes }, 'cache disk is full; evicting to make room');
            await this.makeRoom(bytes);
          },
          onUncached: (err) => {
            this.events.uncached(source.registry, isStoreFull(err) ? 'store full' : 'store unavailable');
            if (isStoreFull(err)) this.log.error({ ...fields, bytes: fill.bytesReceived }, 'cache disk is still full: streaming this blob to its clients without caching it');
            else this.log.error({ ...fields, bytes: fill.bytesReceived, err: err.message }, 'the cache store cannot take this blob: streaming it to its clients without caching it');
          },
        });
      } catch (err) {
        discard(upstream.body);
        throw err;
      }
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
    const digest = fill.digest;
    const broken = new Set<EndpointClient>();
    let stream = first;
    const maxResumes = source.upstream.endpoints.length + 1;
    const counted = { bytes: 0 };
    const count = (): void => {
      try {
        this.events.upstreamBytes(source.registry, fill.bytesReceived - counted.bytes);
      } catch {
        // metrics must never fail a fill
      }
      counted.bytes = fill.bytesReceived;
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
        const short = fill.expectedSize !== undefined && fill.bytesReceived < fill.expectedSize;
        if (failure === undefined && !short) break;
        const receiving = fill.state === 'filling' || fill.state === 'streaming';
        if (!receiving || resumes >= maxResumes || (failure !== undefined && !isStreamBreak(failure))) {
          throw failure ?? new Error(`upstream body ended at ${fill.bytesReceived} of ${fill.expectedSize} bytes`);
        }
        const reason = failure !== undefined ? describe(failure) : 'body ended early';
        stream.endpoint.state.failure(`blob ${digest} broke at ${fill.bytesReceived} bytes: ${reason}`);
        broken.add(stream.endpoint);
        this.log.warn({ digest, upstream: source.registry, endpoint: stream.endpoint.displayUrl, bytes: fill.bytesReceived, err: reason }, 'upstream blob stream broke; resuming with a Range request');
        stream = await source.upstream.openBlob(source.repo, digest, { offset: fill.bytesReceived, via: source.via, avoid: broken });
      }
      await this.cache.commitFill(fill, { upstream: source.registry, repo: source.repo });
      this.log.info({ digest, upstream: source.registry, repo: source.repo, bytes: fill.bytesReceived, ms: Date.now() - started, endpoint: stream.endpoint.displayUrl }, 'blob cached');
    } catch (err) {
      count();
      await fill.fail(err as Error);
      const fields = { digest, upstream: source.registry, repo: source.repo, bytes: fill.bytesReceived, err: describe(err), endpoint: stream.endpoint.displayUrl };
      if (err instanceof NotCachedError) {
        this.log.error(fields, err.storeFull ? 'blob served but not cached: the cache disk is full' : 'blob served but not cached: the cache store is unavailable');
      } else if (isDiskFull(err)) {
        this.log.error(fields, 'cache disk is full: blob not cached');
        void this.makeRoom(fill.expectedSize ?? fill.bytesReceived);
      } else if (isStoreUnavailable(err)) {
        this.log.error(fields, 'the cache store is unavailable: blob not cached');
      } else {
        this.log.warn(fields, 'blob fill failed; nothing cached');
      }
    }
  }

  private forget(digest: Digest, entry: ActiveFill): void {
    if (this.active.get(digest.value) !== entry) return;
    this.active.delete(digest.value);
    if (entry.client === undefined) return;
    const left = (this.byClient.get(entry.client) ?? 1) - 1;
    if (left <= 0) this.byClient.delete(entry.client);
    else this.byClient.set(entry.client, left);
  }
}

/** A network failure of the body (reset, premature close, timeout), as opposed to bad content or a failing store. */
function isStreamBreak(err: unknown): boolean {
  if (err instanceof DigestMismatchError || err instanceof SizeMismatchError || isStoreFull(err) || isStoreUnavailable(err)) return false;
  return !['ENOSPC', 'EDQUOT', 'EIO', 'EROFS', 'EBADF'].includes((err as NodeJS.ErrnoException).code ?? '');
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
