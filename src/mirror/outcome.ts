/** How a request was served, for logs and metrics. */
export type CacheOutcome = 'hit' | 'miss' | 'coalesced' | 'stale' | 'pass' | 'notfound_cached';
