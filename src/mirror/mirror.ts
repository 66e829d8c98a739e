import type { Readable } from 'node:stream';
import type { Cache } from '../cache/cache.js';
import { FillUnavailableError } from '../cache/blob-fill.js';
import type { Cluster } from '../cluster/cluster.js';
import type { PeerClient } from '../cluster/peer-client.js';
import { SingleReplica } from '../cluster/single-replica.js';
import type { ByteRange } from '../oci/byte-range.js';
import { parseDigest } from '../oci/digest.js';
import { manifestUnknown, nameUnknown, tooManyRequests, unavailable } from '../oci/errors.js';
import type { Logger } from '../log.js';
import { header, type UpstreamRegistry } from '../upstream/upstream-registry.js';
import { BlobFills, type FillEvents, type FillLimits, type Requester } from './blob-fills.js';
import { BlobService, type BlobAnswer } from './blobs.js';
import { FillRelay } from './fill-relay.js';
import { ManifestService, type ManifestAnswer, type ManifestPolicy } from './manifests.js';
import { RepositoryGate } from './repository-gate.js';
import type { Target, UpstreamResolver } from './resolve.js';

export type { BlobAnswer, FillLimits, ManifestAnswer, Requester, Target };

/** What the mirror reports as it works (for metrics). */
export interface MirrorEvents extends FillEvents {}

/** A clock in milliseconds since the epoch; tests pass their own to step through TTLs. */
export interface Clock {
  now(): number;
}

export interface MirrorParts {
  cache: Cache;
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

export interface Passthrough {
  contentType: string | undefined;
  body: Readable;
  /** The query string of the next page, from the upstream's Link header. */
  nextQuery?: string;
  headers: Record<string, string>;
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

  /** Tag listing, passed through from the upstream (pagination included). */
  async tags(target: Target, n?: string, last?: string): Promise<Passthrough> {
    const query = new URLSearchParams();
    if (n !== undefined) query.set('n', n);
    if (last !== undefined) query.set('last', last);
    const qs = query.size > 0 ? `?${query}` : '';
    const res = await target.upstream.send({ method: 'GET', path: `/v2/${target.repo}/tags/list${qs}`, repo: target.repo, headers: { accept: 'application/json' }, via: target.via });
    if (res.status !== 200) throw await target.upstream.failure(res, () => nameUnknown(target.repo, `${target.repo} not found upstream in ${target.registry}`));
    return { contentType: header(res.headers, 'content-type'), body: res.body, nextQuery: nextPageQuery(header(res.headers, 'link')), headers: {} };
  }

  /** The referrers API, passed through; 404 when the upstream lacks it, so clients fall back to tags. */
  async referrers(target: Target, digest: string, artifactType?: string): Promise<Passthrough> {
    const parsed = parseDigest(digest);
    const qs = artifactType !== undefined ? `?${new URLSearchParams({ artifactType })}` : '';
    const res = await target.upstream.send({ method: 'GET', path: `/v2/${target.repo}/referrers/${parsed.value}${qs}`, repo: target.repo, headers: { accept: 'application/vnd.oci.image.index.v1+json' }, via: target.via });
    if (res.status !== 200) throw await target.upstream.failure(res, () => manifestUnknown(parsed.value, `upstream ${target.registry} has no referrers for ${parsed.value}`));
    const filters = header(res.headers, 'oci-filters-applied');
    return { contentType: header(res.headers, 'content-type'), body: res.body, headers: filters ? { 'oci-filters-applied': filters } : {} };
  }
}

function nextPageQuery(link: string | undefined): string | undefined {
  const match = link && /<([^>]*)>\s*;\s*rel="?next"?/i.exec(link);
  if (!match) return undefined;
  try {
    return new URL(match[1]!, 'http://upstream.invalid').search.replace(/^\?/, '');
  } catch {
    return undefined;
  }
}
