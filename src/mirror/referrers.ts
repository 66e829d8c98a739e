import type { Listings } from '../cache/listings.js';
import type { Logger } from '../log.js';
import type { Digest } from '../oci/digest.js';
import { isRegistryError } from '../oci/errors.js';
import { MediaType } from '../oci/media-types.js';
import { fetchReferrers, referrersOf, type ReferrerDescriptor } from '../upstream/listings.js';
import type { CacheOutcome } from './outcome.js';
import type { Target } from './resolve.js';
import { SingleFlight } from './single-flight.js';
import { keepListing, mayServeStale } from './stale.js';
import type { TagListPolicy } from './tag-lists.js';

export interface ReferrersAnswer {
  /** The image index to send. */
  bytes: Buffer;
  /** Whether an artifactType filter was applied (the OCI-Filters-Applied header). */
  filtered: boolean;
  source: 'api' | 'tag-schema';
  cache: CacheOutcome;
}

/** Reads a manifest by tag through the mirror's manifest cache; undefined when the upstream has none. */
export type TagReader = (target: Target, tag: string, accept: readonly string[]) => Promise<Buffer | undefined>;

interface Lookup {
  manifests: ReferrerDescriptor[];
  source: 'api' | 'tag-schema';
  cache: CacheOutcome;
}

/**
 * The referrers of a manifest (OCI 1.1): from the upstream's referrers API,
 * or, when it has none (404), from the referrers tag schema (`sha256-<hex>`,
 * read through the manifest cache). Kept unfiltered per repository and
 * subject with the tag TTL, served stale like tags, and filtered here.
 */
export class Referrers {
  private readonly fetches = new SingleFlight<Omit<Lookup, 'cache'>>();

  constructor(
    private readonly listings: Listings,
    private readonly policy: TagListPolicy,
    private readonly clock: { now(): number },
    private readonly log: Logger,
    private readonly readTag: TagReader,
  ) {}

  async get(target: Target, subject: Digest, artifactType: string | undefined): Promise<ReferrersAnswer> {
    const { manifests, source, cache } = await this.lookup(target, subject);
    const listed = artifactType === undefined ? manifests : manifests.filter((d) => d.artifactType === artifactType);
    const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: listed }));
    return { bytes, filtered: artifactType !== undefined, source, cache };
  }

  private async lookup(target: Target, subject: Digest): Promise<Lookup> {
    const cached = this.listings.referrers(target.registry, target.repo, subject.value);
    const ttl = target.upstream.settings.tagTtlMs ?? this.policy.tagTtlMs;
    const fromCache = (): Omit<Lookup, 'cache'> => ({ manifests: JSON.parse(cached!.manifests) as ReferrerDescriptor[], source: cached!.source });
    if (cached && this.clock.now() - cached.fetchedAt < ttl) return { ...fromCache(), cache: 'hit' };
    const { promise, shared } = this.fetches.run(`${target.registry}/${target.repo}@${subject.value}`, async () => {
      const found = await this.fetch(target, subject, cached !== undefined);
      keepListing(this.log, () =>
        this.listings.putReferrers(target.registry, target.repo, subject.value, { manifests: JSON.stringify(found.manifests), source: found.source, fetchedAt: this.clock.now() }),
      );
      return found;
    });
    try {
      return { ...(await promise), cache: shared ? 'coalesced' : 'miss' };
    } catch (err) {
      if (!cached || !mayServeStale(err, this.clock.now() - cached.fetchedAt, ttl, this.policy)) throw err;
      this.log.warn({ upstream: target.registry, repo: target.repo, subject: subject.value, cache: 'stale', err: (err as Error).message }, 'referrers fetch failed; serving the cached list');
      return { ...fromCache(), cache: 'stale' };
    }
  }

  private async fetch(target: Target, subject: Digest, haveCopy: boolean): Promise<Omit<Lookup, 'cache'>> {
    const request = { repo: target.repo, via: target.via, ...(haveCopy ? { timeoutMs: this.policy.revalidateTimeoutMs } : {}) };
    const fromApi = await fetchReferrers(target.upstream, request, subject.value);
    if (fromApi) return { manifests: fromApi, source: 'api' };
    // No referrers API upstream: the spec's fallback, an index under the tag `<alg>-<ref>`,
    // the algorithm cut to 32 characters and the encoded digest to 64, so it is a valid tag.
    const tag = `${subject.algorithm.slice(0, 32)}-${subject.hex.slice(0, 64)}`;
    let index: Buffer | undefined;
    try {
      index = await this.readTag(target, tag, [MediaType.ociIndex]);
    } catch (err) {
      if (!(isRegistryError(err) && err.status === 404)) throw err;
    }
    const manifests = index ? referrersOf(parseIndex(index), `the referrers tag ${tag} of ${target.repo}`) : [];
    return { manifests, source: 'tag-schema' };
  }
}

function parseIndex(bytes: Buffer): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch {
    return undefined;
  }
}
