import { LRUCache } from 'lru-cache';

export interface IssuedToken {
  token: string;
  /** How long the registry says it is valid, in seconds. */
  expiresInSeconds: number;
}

/**
 * Bearer tokens keyed by realm + service + scope, kept until shortly before
 * they expire. Concurrent requests for the same key share one token fetch.
 */
export class TokenCache {
  private readonly tokens: LRUCache<string, string>;
  private readonly inflight = new Map<string, Promise<string>>();
  fetches = 0;

  /** `clock` (milliseconds) decides expiry; tests pass their own. */
  constructor(clock: { now(): number } = performance) {
    this.tokens = new LRUCache({ max: 10_000, perf: clock, ttlResolution: 0 });
  }

  static key(realm: string, service: string, scope: string): string {
    return `${realm}\n${service}\n${scope}`;
  }

  peek(key: string): string | undefined {
    return this.tokens.get(key);
  }

  async get(key: string, fetchToken: () => Promise<IssuedToken>): Promise<string> {
    const cached = this.tokens.get(key);
    if (cached !== undefined) return cached;
    const pending = this.inflight.get(key);
    if (pending) return pending;
    const promise = (async () => {
      this.fetches += 1;
      const issued = await fetchToken();
      this.tokens.set(key, issued.token, { ttl: ttlFor(issued.expiresInSeconds) });
      return issued.token;
    })().finally(() => this.inflight.delete(key));
    this.inflight.set(key, promise);
    return promise;
  }

  /** Drops a token the registry rejected, unless a newer one already replaced it. */
  invalidate(key: string, rejected?: string): void {
    if (rejected === undefined || this.tokens.get(key) === rejected) this.tokens.delete(key);
  }
}

/** Refresh a little before expiry: 10% early, at most 30 s, and keep at least 1 s. */
export function ttlFor(expiresInSeconds: number): number {
  const ms = expiresInSeconds * 1000;
  return Math.max(1000, ms - Math.min(30_000, ms / 10));
}
