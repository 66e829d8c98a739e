import type { Readable } from 'node:stream';
import type { Cache } from '../cache/cache.js';
import type { Listings } from '../cache/listings.js';
import { FillUnavailableError } from '../cache/blob-fill.js';
import type { Cluster } from '../cluster/cluster.js';
import type { PeerClient } from '../cluster/peer-client.js';
import { SingleReplica } from '../cluster/single-replica.js';
import type { ByteRange } from '../oci/byte-range.js';
import { parseDigest } from '../oci/digest.js';
import { tooManyRequests, unavailable } from '../oci/errors.js';
import type { Logger } from '../log.js';
import type { UpstreamRegistry } from '../upstream/upstream-registry.js';
import { BlobFills, type FillEvents, type FillLimits, type Requester } from './blob-fills.js';
import { BlobService, type BlobAnswer } from './blobs.js';
import { FillRelay } from './fill-relay.js';
import { ManifestService, type ManifestAnswer, type ManifestPolicy } from './manifests.js';
import { Referrers, type ReferrersAnswer } from './referrers.js';
import { RepositoryGate } from './repository-gate.js';
import type { Target, UpstreamResolver } from './resolve.js';
import { TagLists, type TagPage } from './tag-lists.js';

export type { BlobAnswer, FillLimits, ManifestAnswer, ReferrersAnswer, Requester, TagPage, Target };

/** What the mirror reports as it works (for metrics). */
export interface MirrorEvents extends FillEvents {}

/** A clock in milliseconds since the epoch; tests pass their own to step through TTLs. */
export interface Clock {
  now(): number;
}

export interface MirrorParts {
  cache: Cache;
  /** Tag lists and referrers the upstreams gave, in the index database. */
  listings: Listings;
  resolver: UpstreamResolver;
  policy: ManifestPolicy;
  fillLimits: FillLimits;
  log: Logger;
  events?: MirrorEvents;
  /** For tag TTLs and stale windows; Date by default. */
  clock?: Clock;
  /** Replicas sharing one bucket; a replica alone by default. */
  cluster?: { cluster: Cluster; peers: PeerClient; leaseTtlMs: number };
}

/** A blob as this replica gives it to another one. */
export interface PeerBlob {
  size: number;
  open(range?: ByteRange): Promise<Readable | Buffer>;
}

/**
 * The pull-through policy, with no HTTP in it: which upstream a name means,
 * and whether to serve from the cache, join a fill, or go upstream.
 */
export class Mirror {
  readonly fills: BlobFills;
  /** Called when the cache disk is full, to make room for `bytes` more (an eviction sweep). */
  onDiskFull: ((bytes: number) => Promise<unknown>) | undefined;
  private readonly manifests: ManifestService;
  private readonly blobs: BlobService;
  private readonly tagLists: TagLists;
  private readonly referrerLists: Referrers;

  readonly cache: Cache;
  private readonly resolver: UpstreamResolver;

  constructor(parts: MirrorParts) {
    const { cache, resolver, policy, fillLimits, log } = parts;
    const events = parts.events ?? { upstreamBytes: () => undefined, uncached: () => undefined };
    const clock = parts.clock ?? Date;
    this.cache = cache;
    this.resolver = resolver;
    const cluster = parts.cluster?.cluster ?? new SingleReplica({ id: 'local', url: '' });
    const gate = new RepositoryGate(cache, policy.notFoundTtlMs, cluster);
    const makeRoom = async (bytes: number): Promise<void> => {
      await this.onDiskFull?.(bytes).catch(() => undefined);
    };
    const relay = parts.cluster && cluster.mode !== 'single' ? new FillRelay(cluster, parts.cluster.peers, parts.cluster.leaseTtlMs, log) : undefined;
    this.fills = new BlobFills(cache, log, events, fillLimits, makeRoom, { cluster, relay, gate });
    this.manifests = new ManifestService({ cache, policy, log, events, gate, makeRoom, clock, cluster });
    this.blobs = new BlobService(cache, this.fills, gate);
    this.tagLists = new TagLists(parts.listings, policy, clock, log);
    this.referrerLists = new Referrers(parts.listings, policy, clock, log, async (target, tag, accept) => (await this.manifests.get(target, tag, accept, false)).bytes);
  }

  resolve(name: string, ns: string | undefined, via: readonly string[]): Target {
    return this.resolver.resolve(name, ns, via);
  }

  /** Health, rate-limit budget and quota spent, per registry and endpoint. */
  upstreams(): ReturnType<UpstreamRegistry['snapshot']>[] {
    return this.resolver.registries().map((r) => r.snapshot());
  }

  manifest(target: Target, reference: string, accept: readonly string[], head: boolean): Promise<ManifestAnswer> {
    return this.manifests.get(target, reference, accept, head);
  }

  /** A blob; `requester` is the client asking, whose new fills are limited and dropped from the queue when it leaves. */
  blob(target: Target, digest: string, head: boolean, requester?: Requester): Promise<BlobAnswer> {
    return this.blobs.get(target, digest, head, requester);
  }

  /** Caches a blob without streaming it anywhere (warm-up). */
  prefetchBlob(target: Target, digest: string): Promise<{ fetched: boolean; size: number }> {
    return this.blobs.prefetch(target, digest);
  }

  /**
   * A blob for another replica of the cluster: the fill running here (bytes
   * as they arrive) or the cached copy; undefined when this one has neither.
   */
  async peerBlob(reference: string, signal: AbortSignal): Promise<PeerBlob | undefined> {
    const digest = parseDigest(reference);
    const fill = await this.fills.forPeer(digest, signal);
    if (fill === 'queued') throw tooManyRequests(1, `the fill of ${digest.value} waits for an upstream slot here`);
    if (fill && !fill.failure && fill.size !== undefined) {
      const size = fill.size;
      return {
        size,
        open: async (range) => {
          try {
            return fill.reader(range);
          } catch (err) {
            if (err instanceof FillUnavailableError) throw unavailable(err.message);
            throw err;
          }
        },
      };
    }
    const record = this.cache.lookupBlob(digest);
    if (!record) return undefined;
    return { size: record.size, open: (range) => this.cache.openBlob(digest, record.size, range) };
  }

  /** A page of a repository's tags, in lexical order: at most `n`, after `last`. */
  tags(target: Target, n: number | undefined, last: string | undefined): Promise<TagPage> {
    return this.tagLists.page(target, n, last);
  }

  /** The referrers of a manifest, filtered by `artifactType` when given. */
  referrers(target: Target, digest: string, artifactType: string | undefined): Promise<ReferrersAnswer> {
    return this.referrerLists.get(target, parseDigest(digest), artifactType);
  }
}
