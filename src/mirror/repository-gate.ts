import { LRUCache } from 'lru-cache';
import type { Cache } from '../cache/cache.js';
import type { Cluster } from '../cluster/cluster.js';
import type { Digest } from '../oci/digest.js';
import { isRegistryError, manifestUnknown, type RegistryError } from '../oci/errors.js';
import { MANIFEST_MEDIA_TYPES } from '../oci/media-types.js';
import type { Target } from './resolve.js';
import { SingleFlight } from './single-flight.js';

export type ContentKind = 'blob' | 'manifest';

/**
 * Decides whether cached content may be served for a repository. Digests are
 * not secrets (they are in pod specs, CI logs and SBOMs), so holding the bytes
 * proves nothing: content is served for repository R only if it was fetched
 * through R, or if R's upstream, asked with a HEAD under R's own scope and
 * credentials, confirms that R holds it. A confirmation is recorded, so a
 * public layer shared by many repositories costs each of them one HEAD, never
 * a second download.
 */
export class RepositoryGate {
  private readonly confirmations = new SingleFlight<void>();
  /** Recent refusals, so a client repeating a foreign digest costs the upstream one HEAD, not one per request. */
  private readonly refusals: LRUCache<string, RegistryError> | undefined;

  constructor(
    private readonly cache: Cache,
    /** How long an upstream's "not in this repository" is remembered (cache.notFoundTtl); 0: not at all. */
    refusalTtlMs: number,
    /** What the other replicas confirmed counts as confirmed here. */
    private readonly cluster: Cluster,
  ) {
    this.refusals = refusalTtlMs > 0 ? new LRUCache({ max: 10_000, ttl: refusalTtlMs }) : undefined;
  }

  /** Resolves when `digest` belongs to the target's repository; throws BLOB_UNKNOWN, MANIFEST_UNKNOWN or DENIED otherwise. */
  async admit(target: Target, digest: Digest, kind: ContentKind): Promise<void> {
    if (this.cache.belongsTo(target.registry, target.repo, digest.value)) return;
    const key = `${target.registry}/${target.repo}@${digest.value}`;
    const refused = this.refusals?.get(key);
    if (refused) throw refused;
    const { promise } = this.confirmations.run(key, async () => {
      if (await this.cluster.isLinked(`${target.registry}/${target.repo}`, digest.value)) {
        this.cache.linkRepo(target.registry, target.repo, digest.value, { share: false });
        return;
      }
      try {
        await confirmUpstream(target, digest, kind);
      } catch (err) {
        // A definite no is remembered; an upstream that is down or rate limiting is asked again next time.
        if (isRegistryError(err) && (err.status === 404 || err.status === 403)) this.refusals?.set(key, err);
        throw err;
      }
      this.cache.linkRepo(target.registry, target.repo, digest.value);
    });
    await promise;
  }

  /** Records content the upstream just served (or confirmed) under the target's repository. */
  record(target: Target, digest: Digest): void {
    this.cache.linkRepo(target.registry, target.repo, digest.value);
  }
}

/** Asks the repository's own upstream whether it holds the digest; the upstream's errors (404, 401/403, 5xx) pass on. */
async function confirmUpstream(target: Target, digest: Digest, kind: ContentKind): Promise<void> {
  if (kind === 'blob') {
    await target.upstream.headBlob(target.repo, digest.value, target.via);
    return;
  }
  const head = await target.upstream.headManifest(target.repo, digest.value, MANIFEST_MEDIA_TYPES, target.via);
  if (head.digest !== undefined && head.digest !== digest.value) {
    throw manifestUnknown(digest.value, `upstream ${target.registry} answered ${target.repo}@${digest.value} with ${head.digest}`);
  }
}
