import { pipeline } from 'node:stream/promises';
import { Transform, type Readable } from 'node:stream';
import { DigestMismatchError, NotCachedError, SizeMismatchError, type BlobFill, type FillHandle } from '../cache/blob-fill.js';
import { isDiskFull, isStoreFull, isStoreUnavailable, type Cache } from '../cache/cache.js';
import { SOLE_LEASE, type Cluster, type FillLease, type Peer } from '../cluster/cluster.js';
import { parseDigest, type Digest } from '../oci/digest.js';
import { isRegistryError, tooManyRequests } from '../oci/errors.js';
import type { Logger } from '../log.js';
import type { EndpointClient } from '../upstream/endpoint-client.js';
import { QueueFullError } from '../upstream/semaphore.js';
import { describe, discard, type BlobStream } from '../upstream/upstream-registry.js';
import type { Feed, FillRelay } from './fill-relay.js';
import type { RepositoryGate } from './repository-gate.js';
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

/** What a fill was of, where from (`endpoint`: the upstream's; `replicas`: the peers it was relayed from), and how far it got. */
export interface FillSubject {
  kind: 'blob' | 'manifest';
  digest: string;
  repo: string;
  upstream: string;
  endpoint?: string;
  bytes: number;
}

/** What fills report as they go (for metrics and notifications); a listener never throws. */
export interface FillEvents {
  upstreamBytes(registry: string, bytes: number): void;
  /** A blob went to its clients uncached: the store was full or out of reach. */
  uncached(registry: string, reason: 'store full' | 'store unavailable'): void;
  /** A fill relayed from another replica began streaming from it. */
  peerStream?(): void;
  /** This replica took over the fill of a replica that went away. */
  takeover?(): void;
  /** Content fetched and committed to the cache. */
  filled?(e: FillSubject & { replicas?: string[]; ms: number; mediaType?: string; tag?: string }): void;
  /** A fill that cached nothing; `cached: false` when its clients got the content all the same (the store could not take it). */
  fillFailed?(e: FillSubject & { reason: string; cached?: boolean }): void;
  /** The upstream or a replica sent bytes that do not match the digest (or size) asked for; reported besides fillFailed. */
  digestMismatch?(e: FillSubject & { replicas?: string[] }): void;
}

/** How replicas share fills: who fills a digest, and how the others follow. */
export interface FillSharing {
  cluster: Cluster;
  /** Absent for a replica alone. */
  relay: FillRelay | undefined;
  gate: RepositoryGate;
}

export interface FillLimits {
  /** New fills one client address may have queued or running at once; 0: no limit. */
  maxFillsPerClient: number;
}

/** Another replica stored the blob just now: read the store instead. */
export class StoredElsewhereError extends Error {
  constructor(readonly digest: string) {
    super(`${digest} was stored by another replica meanwhile`);
    this.name = 'StoredElsewhereError';
  }
}

/** How long a replica's request for a fill still queued here waits before it is told so. */
const PEER_QUEUED_ANSWER_MS = 5_000;

/** How many times a relayed fill looks for a new source before giving up. */
const MAX_RELAY_ROUNDS = 8;

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
    private readonly sharing: FillSharing,
  ) {}

  /**
   * The fill of `digest` for another replica's request: undefined when none
   * runs here. The request keeps a queued fill alive as a client would.
   */
  async forPeer(digest: Digest, signal: AbortSignal): Promise<FillHandle | 'queued' | undefined> {
    const entry = this.active.get(digest.value);
    if (!entry) return undefined;
    entry.interest.add(signal);
    // A fill still waiting for an upstream slot is said so soon, so the asking replica waits for it, not on a socket.
    let timer: NodeJS.Timeout | undefined;
    const queued = new Promise<'queued'>((resolve) => {
      timer = setTimeout(() => resolve('queued'), PEER_QUEUED_ANSWER_MS);
    });
    try {
      return await Promise.race([entry.fill.catch(() => undefined), queued]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** A claim said another replica stored `digest`, but the store does not have it: the next claim fills it. */
  async storedMarkWrong(digest: Digest): Promise<void> {
    this.log.warn({ digest: digest.value }, 'a replica marked this blob stored, but the store does not have it; filling it again');
    await this.sharing.cluster.forgetStored([digest.value]);
  }

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
    const { cluster, relay, gate } = this.sharing;
    const claim = await cluster.claimFill(digest.value);
    if (claim.role === 'stored') throw new StoredElsewhereError(digest.value);
    if (claim.role === 'owner' || !relay) return this.own(digest, source, claim.role === 'owner' ? claim.lease : SOLE_LEASE, abandoned, done);
    // Another replica's fill may be of another repository: no byte of it is ours until ours is confirmed.
    await gate.admit(source, digest, 'blob');
    const feed = await relay.locate(digest.value, 0, abandoned, claim.owner);
    if (feed.kind === 'stored') throw new StoredElsewhereError(digest.value);
    if (feed.kind === 'own') return this.own(digest, source, feed.lease, abandoned, done);
    return this.follow(digest, source, feed, abandoned, done);
  }

  /** Fetches the blob upstream into the store, under `lease`. */
  private async own(digest: Digest, source: Target, lease: FillLease, abandoned: AbortSignal, done: () => void): Promise<BlobFill> {
    let release: () => void;
    try {
      release = await source.upstream.fetchSlots.acquire(abandoned);
    } catch (err) {
      void lease.release('failed');
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
      // The upstream served it under this repository: other replicas following this fill need not ask again.
      this.sharing.gate.record(source, digest);
      try {
        fill = await this.cache.beginFill(digest, {
          ...this.fillStart(digest, source, upstream.size, () => fill),
          ...(lease === SOLE_LEASE ? {} : { confirm: () => lease.confirm() }),
        });
      } catch (err) {
        discard(upstream.body);
        throw err;
      }
    } catch (err) {
      release();
      void lease.release('failed');
      // A 404 is the client's miss, not a failed fill.
      if (!(isRegistryError(err) && err.status === 404)) this.reportFailure(err, { kind: 'blob', digest: digest.value, repo: source.repo, upstream: source.registry, bytes: 0 });
      throw err;
    }
    this.drive(fill, upstream, source)
      .then((stored) => lease.release(stored ? 'stored' : 'failed'))
      .catch((err: unknown) => this.log.error({ err, digest: digest.value }, 'blob fill bookkeeping failed'))
      .finally(() => {
        release();
        done();
      });
    return fill;
  }

  /** What every fill starts with: its size, and what to do when the store is full or gives up. */
  private fillStart(digest: Digest, source: Target, expectedSize: number | undefined, fill: () => BlobFill) {
    const fields = { digest: digest.value, upstream: source.registry, repo: source.repo, store: this.cache.store.kind };
    return {
      expectedSize,
      makeRoom: async (bytes: number) => {
        this.log.error({ ...fields, bytes }, 'cache disk is full; evicting to make room');
        await this.makeRoom(bytes);
      },
      onUncached: (err: Error) => {
        this.events.uncached(source.registry, isStoreFull(err) ? 'store full' : 'store unavailable');
        if (isStoreFull(err)) this.log.error({ ...fields, bytes: fill().bytesReceived }, 'cache disk is still full: streaming this blob to its clients without caching it');
        else this.log.error({ ...fields, bytes: fill().bytesReceived, err: err.message }, 'the cache store cannot take this blob: streaming it to its clients without caching it');
      },
    };
  }

  /** Relays the fill another replica runs: its stream into a local spool, read by this replica's clients. */
  private async follow(digest: Digest, source: Target, feed: Extract<Feed, { kind: 'peer' }>, abandoned: AbortSignal, done: () => void): Promise<BlobFill> {
    const held: { lease?: FillLease } = {};
    let fill: BlobFill;
    try {
      fill = await this.cache.beginRelay(digest, {
        ...this.fillStart(digest, source, feed.stream.size, () => fill),
        settle: () => this.sharing.relay!.ending(digest.value, held),
      });
    } catch (err) {
      discard(feed.stream.body);
      this.reportFailure(err, { kind: 'blob', digest: digest.value, repo: source.repo, upstream: source.registry, bytes: 0 }, [feed.peer.id]);
      throw err;
    }
    this.events.peerStream?.();
    this.log.info({ digest: digest.value, upstream: source.registry, repo: source.repo, replica: feed.peer.id, bytes: feed.stream.size }, 'streaming the blob from the replica filling it');
    this.relayDrive(fill, feed, source, held, abandoned)
      .catch((err: unknown) => this.log.error({ err, digest: digest.value }, 'relayed blob fill bookkeeping failed'))
      .finally(done);
    return fill;
  }

  /**
   * Drives a relayed fill: from the filling replica while it streams; when it
   * goes away, from whoever has the blob then, or upstream with a Range request
   * once this replica took the lease over. The digest covers every byte either way.
   */
  private async relayDrive(fill: BlobFill, first: Extract<Feed, { kind: 'peer' }>, source: Target, held: { lease?: FillLease }, abandoned: AbortSignal): Promise<void> {
    const started = Date.now();
    const digest = fill.digest;
    const relay = this.sharing.relay!;
    let body: Readable = first.stream.body;
    let skip = 0;
    let peer: Peer | undefined = first.peer;
    let endpoint: EndpointClient | undefined;
    let releaseSlot: (() => void) | undefined;
    const fedBy = new Set<string>([first.peer.id]);
    const broken = new Set<EndpointClient>();
    try {
      for (let round = 0; ; round++) {
        const before = fill.bytesReceived;
        let failure: unknown;
        try {
          await (skip > 0 ? pipeline(body, skipBytes(skip), fill.writable()) : pipeline(body, fill.writable()));
        } catch (err) {
          failure = err;
        }
        await fill.idle();
        if (endpoint) this.events.upstreamBytes(source.registry, fill.bytesReceived - before);
        const short = fill.expectedSize !== undefined && fill.bytesReceived < fill.expectedSize;
        if (failure === undefined && !short) break;
        const receiving = fill.state === 'filling' || fill.state === 'streaming';
        if (!receiving || round >= MAX_RELAY_ROUNDS || (failure !== undefined && !isStreamBreak(failure))) {
          throw failure ?? new Error(`the relayed body ended at ${fill.bytesReceived} of ${fill.expectedSize} bytes`);
        }
        const offset = fill.bytesReceived;
        const reason = failure !== undefined ? describe(failure) : 'body ended early';
        if (endpoint) {
          // Fetching it ourselves already: resume upstream, elsewhere if we can.
          endpoint.state.failure(`blob ${digest} broke at ${offset} bytes: ${reason}`);
          broken.add(endpoint);
          ({ body, skip, endpoint } = await source.upstream.openBlob(source.repo, digest, { offset, via: source.via, avoid: broken }));
          continue;
        }
        this.log.warn({ digest, replica: peer?.id, bytes: offset, err: reason }, 'the stream from the replica filling this blob broke; finding who has it now');
        const feed = await relay.locate(digest, offset, abandoned, undefined, peer?.id);
        if (feed.kind === 'peer') {
          ({ peer } = feed);
          body = feed.stream.body;
          skip = 0;
          fedBy.add(feed.peer.id);
          this.events.peerStream?.();
          continue;
        }
        peer = undefined;
        if (feed.kind === 'stored') {
          body = await this.cache.openStoredRange(parseDigest(digest), { start: offset, end: fill.expectedSize! - 1 });
          skip = 0;
          continue;
        }
        held.lease = feed.lease;
        if (feed.lease !== SOLE_LEASE) {
          // A real takeover: the dead filler's unfinished upload goes, and this replica's copy is the one kept.
          this.events.takeover?.();
          const aborted = await this.cache.abortUploads(parseDigest(digest)).catch(() => 0);
          this.log.warn({ digest, upstream: source.registry, bytes: offset, abortedUploads: aborted }, 'took over the fill of a replica that went away; resuming upstream with a Range request');
        }
        releaseSlot = await source.upstream.fetchSlots.acquire(abandoned);
        ({ body, skip, endpoint } = await source.upstream.openBlob(source.repo, digest, { offset, via: source.via }));
      }
      await this.cache.commitFill(fill, { upstream: source.registry, repo: source.repo });
      await held.lease?.release('stored');
      this.log.info({ digest, upstream: source.registry, repo: source.repo, bytes: fill.bytesReceived, ms: Date.now() - started, relayed: [...fedBy] }, 'blob cached');
      this.events.filled?.({ kind: 'blob', digest, repo: source.repo, upstream: source.registry, endpoint: endpoint?.displayUrl, replicas: [...fedBy], bytes: fill.bytesReceived, ms: Date.now() - started });
    } catch (err) {
      await fill.fail(err as Error);
      await held.lease?.release('failed');
      const fields = { digest, upstream: source.registry, repo: source.repo, bytes: fill.bytesReceived, err: describe(err), replicas: [...fedBy] };
      this.reportFailure(err, { kind: 'blob', digest, repo: source.repo, upstream: source.registry, endpoint: endpoint?.displayUrl, bytes: fill.bytesReceived }, [...fedBy]);
      if ((err instanceof DigestMismatchError || err instanceof SizeMismatchError) && !endpoint) {
        for (const id of fedBy) relay.distrust(id);
        this.log.error(fields, 'a replica sent bytes that do not match the digest: nothing kept, and it is not streamed from for a while');
      } else if (err instanceof NotCachedError) {
        this.log.error(fields, 'relayed blob served but not cached');
      } else {
        this.log.warn(fields, 'relayed blob fill failed; nothing cached');
      }
    } finally {
      releaseSlot?.();
    }
  }

  /** Streams the upstream body into the fill, resuming elsewhere on a broken body, then commits; true once stored. */
  private async drive(fill: BlobFill, first: BlobStream, source: Target): Promise<boolean> {
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
      this.events.filled?.({ kind: 'blob', digest, repo: source.repo, upstream: source.registry, endpoint: stream.endpoint.displayUrl, bytes: fill.bytesReceived, ms: Date.now() - started });
      return true;
    } catch (err) {
      count();
      await fill.fail(err as Error);
      const fields = { digest, upstream: source.registry, repo: source.repo, bytes: fill.bytesReceived, err: describe(err), endpoint: stream.endpoint.displayUrl };
      this.reportFailure(err, { kind: 'blob', digest, repo: source.repo, upstream: source.registry, endpoint: stream.endpoint.displayUrl, bytes: fill.bytesReceived });
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
      return false;
    }
  }

  /** Tells the listeners a fill failed, and whether its bytes did not match the digest. */
  private reportFailure(err: unknown, subject: FillSubject, replicas?: string[]): void {
    this.events.fillFailed?.({ ...subject, reason: describe(err), ...(err instanceof NotCachedError ? { cached: false } : {}) });
    if (err instanceof DigestMismatchError || err instanceof SizeMismatchError) this.events.digestMismatch?.({ ...subject, ...(replicas ? { replicas } : {}) });
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
