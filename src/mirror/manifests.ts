import { CacheMissError, isDiskFull, tagKey, type Cache } from '../cache/cache.js';
import type { TagRecord } from '../cache/cache-index.js';
import type { Cluster } from '../cluster/cluster.js';
import { digestOf, parseDigest, type Digest } from '../oci/digest.js';
import { LRUCache } from 'lru-cache';
import { badGateway, isRegistryError, manifestUnknown, withOutcome, type RegistryError } from '../oci/errors.js';
import { manifestMediaType, referencedDigests } from '../oci/manifest.js';
import { isAccepted, MANIFEST_MEDIA_TYPES } from '../oci/media-types.js';
import type { Logger } from '../log.js';
import type { FillEvents } from './blob-fills.js';
import type { CacheOutcome } from './outcome.js';
import type { RepositoryGate } from './repository-gate.js';
import type { Target } from './resolve.js';
import { SingleFlight } from './single-flight.js';
import { mayServeStale } from './stale.js';

export interface ManifestPolicy {
  /** Default; an upstream's own tagTtl wins. */
  tagTtlMs: number;
  /** How long an upstream 404 for a tag or digest is remembered. */
  notFoundTtlMs: number;
  maxStaleMs: number;
  /** How long past tagTtl a tag is still served when the upstream now answers 401 or 403. */
  maxStaleDeniedMs: number;
  maxManifestBytes: number;
  revalidateTimeoutMs: number;
}

export interface ManifestAnswer {
  digest: string;
  mediaType: string;
  size: number;
  /** The manifest bytes; absent for HEAD. */
  bytes?: Buffer;
  cache: CacheOutcome;
}

interface Stored {
  digest: string;
  mediaType: string;
  size: number;
  /** The bytes, when the cache disk was too full to keep them: served once, not cached. */
  uncached?: Buffer;
}

/**
 * Manifests: digests are immutable and never go upstream once cached; tags are
 * served from the cache within tagTtl, then revalidated with a HEAD (free on
 * Docker Hub), and fetched with a GET only when the digest changed.
 */
export class ManifestService {
  private readonly fetches = new SingleFlight<Stored>();
  private readonly revalidations = new SingleFlight<string | undefined>();
  /** Upstream 404s, so repeated pulls of a missing image don't hammer the upstream. */
  private readonly notFound: LRUCache<string, RegistryError>;

  private readonly cache: Cache;
  private readonly policy: ManifestPolicy;
  private readonly log: Logger;
  private readonly events: FillEvents;
  private readonly gate: RepositoryGate;
  /** Makes room for `bytes` on a full cache disk (an eviction sweep); never throws. */
  private readonly makeRoom: (bytes: number) => Promise<void>;
  private readonly clock: { now(): number };
  /** Tags, their revalidations and 404s, shared with the other replicas. */
  private readonly cluster: Cluster;

  constructor(parts: {
    cache: Cache;
    policy: ManifestPolicy;
    log: Logger;
    events: FillEvents;
    gate: RepositoryGate;
    makeRoom: (bytes: number) => Promise<void>;
    clock: { now(): number };
    cluster: Cluster;
  }) {
    ({ cache: this.cache, policy: this.policy, log: this.log, events: this.events, gate: this.gate, makeRoom: this.makeRoom, clock: this.clock, cluster: this.cluster } = parts);
    this.notFound = new LRUCache({ max: 10_000, ttl: Math.max(1, this.policy.notFoundTtlMs), perf: this.clock, ttlResolution: 0 });
  }

  async get(target: Target, reference: string, accept: readonly string[], head: boolean): Promise<ManifestAnswer> {
    const key = tagKey(target.registry, target.repo, reference, accept.join(','));
    const known = this.policy.notFoundTtlMs > 0 ? this.notFound.get(key) : undefined;
    if (known) throw withOutcome(known, 'notfound_cached');
    try {
      return await (reference.includes(':')
        ? this.byDigest(target, parseDigest(reference), accept, head)
        : this.byTag(target, reference, accept, head));
    } catch (err) {
      if (isRegistryError(err) && err.code === 'MANIFEST_UNKNOWN' && err.outcome === undefined) {
        if (this.policy.notFoundTtlMs > 0) {
          this.notFound.set(key, err);
          await this.cluster.putNotFound(sharedTagKey(target, reference, accept), this.policy.notFoundTtlMs);
        }
        // The upstream was asked and said 404: a miss, as the repeats are notfound_cached.
        throw withOutcome(err, 'miss');
      }
      throw err;
    }
  }

  private async byDigest(target: Target, digest: Digest, accept: readonly string[], head: boolean): Promise<ManifestAnswer> {
    const cached = this.cachedManifest(digest.value) ?? (await this.adoptManifest(digest));
    if (cached) {
      // Cached through another repository, perhaps: it must be this repository's too.
      await this.gate.admit(target, digest, 'manifest');
      return this.answer(cached, accept, head, 'hit', target);
    }
    const { promise, shared } = this.fetches.run(`${target.registry}/${target.repo}@${digest.value}`, () =>
      this.fetchAndStore(target, digest.value, MANIFEST_MEDIA_TYPES, digest),
    );
    return this.answer(await promise, accept, head, shared ? 'coalesced' : 'miss', target);
  }

  private async byTag(target: Target, tag: string, accept: readonly string[], head: boolean): Promise<ManifestAnswer> {
    const acceptKey = accept.join(',');
    const now = this.clock.now();
    let row = this.cache.getTag(target.registry, target.repo, tag, acceptKey);
    if (!row || now - row.fetchedAt >= this.tagTtl(target)) row = (await this.sharedTag(target, tag, acceptKey, now)) ?? row;
    if (row) {
      const cached = this.cachedManifest(row.digest);
      if (now - row.fetchedAt < this.tagTtl(target)) {
        if (cached) return this.answer(cached, accept, head, 'hit', target);
        return this.byDigest(target, parseDigest(row.digest), accept, head);
      }
      if (cached && target.upstream.budgetLow()) {
        // Spend the little budget left on content that is missing, not on tags we have.
        this.log.info({ upstream: target.registry, repo: target.repo, reference: tag, cache: 'stale' }, 'pull budget low; serving the cached tag without revalidation');
        return this.answer(cached, accept, head, 'stale', target);
      }
      if (cached) return this.revalidate(target, tag, accept, head, row, cached);
    } else if (this.cache.store.shared) {
      if (this.policy.notFoundTtlMs > 0 && (await this.cluster.isNotFound(sharedTagKey(target, tag, accept)))) throw sharedNotFound(target, tag);
      const found = await this.resolveToStored(target, tag, accept);
      if (found) return this.answer(found, accept, head, 'hit', target);
    }
    return this.fetchTag(target, tag, accept, head);
  }

  /**
   * What another replica checked upstream within tagTtl, adopted as this
   * index's row with the same remaining freshness; undefined without one.
   */
  private async sharedTag(target: Target, tag: string, acceptKey: string, now: number): Promise<TagRecord | undefined> {
    const shared = await this.cluster.getTag(sharedTagKey(target, tag, acceptKey.split(',')));
    if (!shared || !isAccepted(shared.mediaType, acceptKey.split(','))) return undefined;
    const ttl = this.tagTtl(target);
    const record = { upstream: target.registry, repo: target.repo, tag, acceptKey, digest: shared.digest, mediaType: shared.mediaType, fetchedAt: now - Math.max(0, ttl - shared.freshForMs) };
    try {
      this.cache.putTag(record);
    } catch (err) {
      if (!isDiskFull(err)) throw err;
    }
    return record;
  }

  /** Tells the other replicas what the upstream just said the tag is, fresh for a whole tagTtl. */
  private shareTag(target: Target, tag: string, accept: readonly string[], stored: { digest: string; mediaType: string }): Promise<void> {
    return this.cluster.putTag(sharedTagKey(target, tag, accept), { digest: stored.digest, mediaType: stored.mediaType }, this.tagTtl(target));
  }

  /**
   * A tag this index does not know, over a store other instances write: a
   * HEAD (free on Docker Hub) gives its digest, and the manifest may be in the
   * store already, which then saves the GET. Undefined when it is not.
   */
  private async resolveToStored(target: Target, tag: string, accept: readonly string[]): Promise<Stored | undefined> {
    let head;
    try {
      head = await target.upstream.headManifest(target.repo, tag, accept, target.via, AbortSignal.timeout(this.policy.revalidateTimeoutMs));
    } catch {
      return undefined; // the GET that follows says what is wrong
    }
    if (!head.digest) return undefined;
    let digest: Digest;
    try {
      digest = parseDigest(head.digest);
    } catch {
      return undefined;
    }
    const stored = this.cachedManifest(digest.value) ?? (await this.adoptManifest(digest));
    if (!stored || !isAccepted(stored.mediaType, accept)) return undefined;
    // The repository's own upstream named this digest for the tag: it belongs here.
    this.gate.record(target, digest);
    this.cache.putTag({ upstream: target.registry, repo: target.repo, tag, acceptKey: accept.join(','), digest: stored.digest, mediaType: stored.mediaType, fetchedAt: this.clock.now() });
    await this.shareTag(target, tag, accept, stored);
    return stored;
  }

  /** A manifest in a store other instances write, though not in this index. */
  private async adoptManifest(digest: Digest): Promise<Stored | undefined> {
    const record = await this.cache.adoptManifest(digest, this.policy.maxManifestBytes);
    return record?.mediaType ? { digest: record.digest, mediaType: record.mediaType, size: record.size } : undefined;
  }

  /** HEAD upstream; serve the cached manifest when unchanged, or stale when the upstream fails. */
  private async revalidate(target: Target, tag: string, accept: readonly string[], head: boolean, row: TagRecord, cached: Stored): Promise<ManifestAnswer> {
    const key = tagKey(target.registry, target.repo, tag, row.acceptKey);
    try {
      const { promise } = this.revalidations.run(key, async () => {
        const answer = await target.upstream.headManifest(target.repo, tag, accept, target.via, AbortSignal.timeout(this.policy.revalidateTimeoutMs));
        return answer.digest;
      });
      const upstreamDigest = await promise;
      if (upstreamDigest === row.digest) {
        this.cache.putTag({ ...row, fetchedAt: this.clock.now() });
        await this.shareTag(target, tag, accept, row);
        return this.answer(cached, accept, head, 'hit', target);
      }
      return await this.fetchTag(target, tag, accept, head);
    } catch (err) {
      if (!mayServeStale(err, this.clock.now() - row.fetchedAt, this.tagTtl(target), this.policy)) throw err;
      this.log.warn({ upstream: target.registry, repo: target.repo, reference: tag, cache: 'stale', err: (err as Error).message }, 'tag revalidation failed; serving the cached manifest');
      return this.answer(cached, accept, head, 'stale', target);
    }
  }

  private async fetchTag(target: Target, tag: string, accept: readonly string[], head: boolean): Promise<ManifestAnswer> {
    const key = tagKey(target.registry, target.repo, tag, accept.join(','));
    const { promise, shared } = this.fetches.run(key, async () => {
      const stored = await this.fetchAndStore(target, tag, accept);
      if (stored.uncached) return stored;
      await this.shareTag(target, tag, accept, stored);
      const record = { upstream: target.registry, repo: target.repo, tag, acceptKey: accept.join(','), digest: stored.digest, mediaType: stored.mediaType, fetchedAt: this.clock.now() };
      try {
        this.cache.putTag(record);
      } catch (err) {
        if (!isDiskFull(err)) throw err;
        this.log.error({ upstream: target.registry, repo: target.repo, reference: tag, err: (err as Error).message }, 'tag not cached: the cache disk is full');
      }
      return stored;
    });
    return this.answer(await promise, accept, head, shared ? 'coalesced' : 'miss', target);
  }

  /** GETs a manifest, verifies its digest, and stores it before anyone sees it. */
  private async fetchAndStore(target: Target, reference: string, accept: readonly string[], expected?: Digest): Promise<Stored> {
    if (this.policy.notFoundTtlMs > 0 && (await this.cluster.isNotFound(sharedTagKey(target, reference, accept)))) throw sharedNotFound(target, reference);
    const started = Date.now(); // a duration: the real clock, not the TTL clock tests step
    const fetched = await target.upstream.fetchManifest(target.repo, reference, accept, this.policy.maxManifestBytes, target.via);
    this.events.upstreamBytes(target.registry, fetched.bytes.length);
    const mediaType = manifestMediaType(fetched.bytes, fetched.contentType);
    if (!MANIFEST_MEDIA_TYPES.includes(mediaType)) {
      throw badGateway(`upstream ${target.registry} sent ${target.repo}:${reference} as "${mediaType.slice(0, 100)}", which is not a manifest type`);
    }
    // Some registries answer an Accept they cannot meet with another type
    // (distribution converts to schema 1): never pass that on.
    if (!isAccepted(mediaType, accept)) {
      throw manifestUnknown(reference, `upstream ${target.registry} offers ${target.repo}:${reference} only as ${mediaType}, which the client's Accept header does not list`);
    }
    const algorithm = expected?.algorithm ?? (fetched.digest?.startsWith('sha512:') ? 'sha512' : 'sha256');
    const actual = digestOf(fetched.bytes, algorithm);
    const claimed = expected?.value ?? fetched.digest;
    const subject = { kind: 'manifest' as const, repo: target.repo, upstream: target.registry, endpoint: fetched.endpoint, bytes: fetched.bytes.length };
    if (claimed !== undefined && claimed !== actual) {
      this.events.fillFailed?.({ ...subject, digest: claimed, reason: `digest mismatch: expected ${claimed}, upstream sent ${actual}` });
      this.events.digestMismatch?.({ ...subject, digest: claimed });
      throw badGateway(`upstream ${target.registry} sent manifest ${target.repo}:${reference} with digest ${actual}, expected ${claimed}`);
    }
    const digest = parseDigest(actual);
    const entry = { digest, bytes: fetched.bytes, mediaType, children: referencedDigests(fetched.bytes), upstream: target.registry, repo: target.repo };
    if (!(await this.store(entry))) {
      this.events.fillFailed?.({ ...subject, digest: digest.value, reason: 'the cache disk is full', cached: false });
      return { digest: digest.value, mediaType, size: fetched.bytes.length, uncached: fetched.bytes };
    }
    // The type stored first for this digest stands, whatever this answer said.
    const stored = { digest: digest.value, mediaType: this.cache.lookupBlob(digest)?.mediaType ?? mediaType, size: fetched.bytes.length };
    this.events.filled?.({ ...subject, digest: stored.digest, mediaType: stored.mediaType, ms: Date.now() - started, ...(reference.includes(':') ? {} : { tag: reference }) });
    return stored;
  }

  /** Stores a verified manifest; on a full disk, makes room and tries once more. False: it could not be cached. */
  private async store(entry: Parameters<Cache['storeManifest']>[0]): Promise<boolean> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.cache.storeManifest(entry);
        return true;
      } catch (err) {
        if (!isDiskFull(err)) throw err;
        if (attempt === 0) {
          this.log.error({ digest: entry.digest.value, upstream: entry.upstream, repo: entry.repo }, 'cache disk is full; evicting to make room for a manifest');
          await this.makeRoom(entry.bytes.length);
          continue;
        }
        this.log.error({ digest: entry.digest.value, upstream: entry.upstream, repo: entry.repo, bytes: entry.bytes.length }, 'manifest served but not cached: the cache disk is full');
        return false;
      }
    }
  }

  private tagTtl(target: Target): number {
    return target.upstream.settings.tagTtlMs ?? this.policy.tagTtlMs;
  }

  private cachedManifest(digest: string): Stored | undefined {
    const record = this.cache.lookupBlob(parseDigest(digest));
    if (!record?.mediaType) return undefined;
    return { digest: record.digest, mediaType: record.mediaType, size: record.size };
  }

  private async answer(stored: Stored, accept: readonly string[], head: boolean, cache: CacheOutcome, target: Target): Promise<ManifestAnswer> {
    if (!isAccepted(stored.mediaType, accept)) {
      throw manifestUnknown(stored.digest, `manifest is ${stored.mediaType}, which the client's Accept header does not list`);
    }
    const digest = parseDigest(stored.digest);
    if (stored.uncached) return { digest: stored.digest, mediaType: stored.mediaType, size: stored.size, cache, ...(head ? {} : { bytes: stored.uncached }) };
    if (head) {
      this.cache.recordAccess(digest);
      return { ...stored, cache };
    }
    try {
      return { ...stored, bytes: await this.cache.readManifest(digest), cache };
    } catch (err) {
      if (!(err instanceof CacheMissError)) throw err;
      // The cached copy was missing or damaged and is gone now: fetch it again by digest.
      const { uncached, ...fresh } = await this.fetchAndStore(target, digest.value, MANIFEST_MEDIA_TYPES, digest);
      return { ...fresh, bytes: uncached ?? (await this.cache.readManifest(digest)), cache: 'miss' };
    }
  }
}

/**
 * A tag's (or a 404's) key across replicas: by the manifest types the client accepts, as
 * a set, since the upstream's answer depends on them (an index, or one
 * platform's manifest for a client without index support), not on their order.
 */
function sharedTagKey(target: Target, tag: string, accept: readonly string[]): string {
  const types = [...new Set(accept.map((t) => t.trim().toLowerCase()).filter((t) => MANIFEST_MEDIA_TYPES.includes(t)))].sort();
  return `${target.registry}/${target.repo}:${tag}|${types.join(',')}`;
}


/** What another replica heard from the upstream within notFoundTtl. */
function sharedNotFound(target: Target, reference: string): RegistryError {
  return withOutcome(manifestUnknown(reference, `upstream ${target.registry} has no ${target.repo}:${reference} (another replica asked within cache.notFoundTtl)`), 'notfound_cached');
}
