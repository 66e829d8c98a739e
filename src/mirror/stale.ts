import { isDiskFull } from '../cache/cache.js';
import type { Logger } from '../log.js';
import { isRegistryError } from '../oci/errors.js';

export interface StalePolicy {
  maxStaleMs: number;
  /** How long past the TTL an answer is still served when the upstream now answers 401 or 403. */
  maxStaleDeniedMs: number;
}

/**
 * Whether an answer cached `ageMs` ago, fresh for `ttlMs`, may be served
 * after asking the upstream again failed with `err`: an outage, a rate limit
 * or a refusal of access, and not longer past the TTL than the policy allows.
 * A plain answer of the upstream (a 404, say) is passed on instead.
 */
export function mayServeStale(err: unknown, ageMs: number, ttlMs: number, policy: StalePolicy): boolean {
  if (isRegistryError(err) && err.status < 500 && err.status !== 429 && err.status !== 403) return false;
  // An upstream that now denies the repository (a takedown, revoked access) ends serving sooner.
  const denied = isRegistryError(err) && err.status === 403;
  return ageMs <= ttlMs + (denied ? policy.maxStaleDeniedMs : policy.maxStaleMs);
}

/** Stores a listing; on a full cache disk it is served uncached instead. */
export function keepListing(log: Logger, store: () => void): void {
  try {
    store();
  } catch (err) {
    if (!isDiskFull(err)) throw err;
    log.error({ err: (err as Error).message }, 'listing not cached: the cache disk is full');
  }
}
