import { header, type ResponseHeaders } from './endpoint-client.js';

/** Docker Hub's pull budget, as its `ratelimit-*` headers last reported it. */
export interface RateLimit {
  limit: number | undefined;
  remaining: number | undefined;
  windowSeconds: number | undefined;
  /** `docker-ratelimit-source`: the IP or account the budget belongs to. */
  source: string | undefined;
  observedAt: number;
}

/** Parses `100;w=21600`: a count and an optional window in seconds. */
function parseQuota(value: string | undefined): { count: number; window: number | undefined } | undefined {
  const match = value && /^\s*(\d+)\s*(?:;\s*w\s*=\s*(\d+))?/.exec(value);
  if (!match) return undefined;
  return { count: Number(match[1]), window: match[2] !== undefined ? Number(match[2]) : undefined };
}

export function parseRateLimit(headers: ResponseHeaders, now = Date.now()): RateLimit | undefined {
  const limit = parseQuota(header(headers, 'ratelimit-limit'));
  const remaining = parseQuota(header(headers, 'ratelimit-remaining'));
  if (!limit && !remaining) return undefined;
  return {
    limit: limit?.count,
    remaining: remaining?.count,
    windowSeconds: limit?.window ?? remaining?.window,
    source: header(headers, 'docker-ratelimit-source'),
    observedAt: now,
  };
}

/** When no Retry-After came with a 429: the time one pull takes to come back in the window. */
export function retryAfterFromWindow(rate: RateLimit | undefined): number | undefined {
  if (!rate?.windowSeconds || !rate.limit) return undefined;
  return Math.max(1, Math.ceil(rate.windowSeconds / rate.limit));
}
