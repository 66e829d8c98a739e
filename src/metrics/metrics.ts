import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

/** What the cache did for one request; the labels of stevedore_cache_results_total. */
export type CacheResult = 'hit' | 'miss' | 'coalesced' | 'stale' | 'notfound_cached' | 'pass';

/** Counts over a period, for /api/stats and its time series. */
export interface StatsCounts {
  hits: number;
  misses: number;
  coalesced: number;
  stale: number;
  notFoundCached: number;
  bytesFromCache: number;
  bytesFromUpstream: number;
}

export const emptyCounts = (): StatsCounts => ({ hits: 0, misses: 0, coalesced: 0, stale: 0, notFoundCached: 0, bytesFromCache: 0, bytesFromUpstream: 0 });

/**
 * Prometheus metrics (prom-client) and the per-minute counts behind the
 * dashboard. Gauges that mirror live state are filled by collect hooks at scrape time.
 */
export class Metrics {
  readonly registry = new Registry();
  /** Counts of the current minute; `onMinute` receives them when the minute ends. */
  private minute = { start: minuteOf(Date.now()), counts: emptyCounts() };
  onMinute: ((minuteStart: number, counts: StatsCounts) => void) | undefined;
  private readonly collectors: (() => void)[] = [];

  readonly httpRequests = new Counter({ name: 'stevedore_http_requests_total', help: 'HTTP requests by route, method and status', labelNames: ['route', 'method', 'status'], registers: [this.registry] });
  readonly httpDuration = new Histogram({ name: 'stevedore_http_request_duration_seconds', help: 'HTTP request latency until the response ended', labelNames: ['route'], buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120], registers: [this.registry] });
  readonly cacheResults = new Counter({ name: 'stevedore_cache_results_total', help: 'How manifests and blobs were served', labelNames: ['upstream', 'kind', 'result'], registers: [this.registry] });
  readonly bytesFromCache = new Counter({ name: 'stevedore_bytes_served_from_cache_total', help: 'Body bytes served without an upstream fetch (hits, coalesced, stale)', labelNames: ['upstream'], registers: [this.registry] });
  readonly bytesFromUpstream = new Counter({ name: 'stevedore_bytes_fetched_from_upstream_total', help: 'Bytes fetched from upstreams (blob fills and manifests)', labelNames: ['upstream'], registers: [this.registry] });
  readonly uncachedBlobs = new Counter({ name: 'stevedore_blobs_uncached_total', help: 'Blobs streamed to their clients without being cached: the store was full or out of reach', labelNames: ['upstream', 'reason'], registers: [this.registry] });
  readonly clusterPeerStreams = new Counter({ name: 'stevedore_cluster_peer_streams_total', help: 'Blob fills streamed from the replica filling them instead of the upstream', registers: [this.registry] });
  readonly clusterTakeovers = new Counter({ name: 'stevedore_cluster_lease_takeovers_total', help: 'Fills taken over from a replica that went away mid-fill', registers: [this.registry] });
  readonly clusterRedisErrors = new Counter({ name: 'stevedore_cluster_redis_errors_total', help: 'Redis calls that failed (the replica went on alone for them)', labelNames: ['operation'], registers: [this.registry] });
  readonly clusterConnected = new Gauge({ name: 'stevedore_cluster_redis_connected', help: '1 while Redis answers (or no cluster is configured), 0 while this replica is on its own', registers: [this.registry] });
  readonly clusterLeader = new Gauge({ name: 'stevedore_cluster_leader', help: '1 while this replica runs the housekeeping (eviction, GC, sweeps, scheduled warm-ups)', registers: [this.registry] });
  readonly upstreamRequests = new Counter({ name: 'stevedore_upstream_requests_total', help: 'Requests sent to upstream endpoints', labelNames: ['endpoint', 'method', 'status'], registers: [this.registry] });
  readonly upstreamDuration = new Histogram({ name: 'stevedore_upstream_request_duration_seconds', help: 'Upstream latency until response headers', labelNames: ['endpoint'], buckets: [0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers: [this.registry] });
  readonly circuitState = new Gauge({ name: 'stevedore_upstream_circuit_state', help: 'Circuit of each endpoint: 0 closed, 1 half-open, 2 open', labelNames: ['upstream', 'endpoint'], registers: [this.registry] });
  readonly rateLimitRemaining = new Gauge({ name: 'stevedore_ratelimit_remaining', help: 'Last ratelimit-remaining an upstream reported (credential: configured or anonymous)', labelNames: ['upstream', 'endpoint', 'credential'], registers: [this.registry] });
  readonly rateLimitLimit = new Gauge({ name: 'stevedore_ratelimit_limit', help: 'Last ratelimit-limit an upstream reported', labelNames: ['upstream', 'endpoint', 'credential'], registers: [this.registry] });
  readonly manifestGets = new Gauge({ name: 'stevedore_upstream_manifest_gets', help: 'Manifest GETs sent to an endpoint since start (what counts against pull quotas)', labelNames: ['upstream', 'endpoint'], registers: [this.registry] });
  readonly cacheBytes = new Gauge({ name: 'stevedore_cache_size_bytes', help: 'Bytes of cached blobs', registers: [this.registry] });
  readonly cacheBlobs = new Gauge({ name: 'stevedore_cache_blobs', help: 'Cached blobs and manifests', registers: [this.registry] });
  readonly cacheQuota = new Gauge({ name: 'stevedore_cache_quota_bytes', help: 'cache.maxSize (0: no quota)', registers: [this.registry] });
  readonly evictions = new Gauge({ name: 'stevedore_cache_evicted_blobs', help: 'Blobs removed by eviction and GC since start', registers: [this.registry] });
  readonly evictedBytes = new Gauge({ name: 'stevedore_cache_evicted_bytes', help: 'Bytes removed by eviction and GC since start', registers: [this.registry] });
  readonly warmupLastRun = new Gauge({ name: 'stevedore_warmup_last_run_timestamp_seconds', help: 'When each warm-up job last finished', labelNames: ['job'], registers: [this.registry] });
  readonly warmupDuration = new Gauge({ name: 'stevedore_warmup_last_duration_seconds', help: 'How long the last run of each warm-up job took', labelNames: ['job'], registers: [this.registry] });
  readonly warmupSuccess = new Gauge({ name: 'stevedore_warmup_last_success', help: '1 if the last run of the job succeeded', labelNames: ['job'], registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }

  /** Runs before every scrape, to copy live state into gauges. */
  onCollect(collect: () => void): void {
    this.collectors.push(collect);
  }

  async scrape(): Promise<string> {
    for (const collect of this.collectors) collect();
    return this.registry.metrics();
  }

  recordRequest(route: string, method: string, status: number, seconds: number): void {
    this.httpRequests.inc({ route, method, status: String(status) });
    this.httpDuration.observe({ route }, seconds);
  }

  /** One manifest or blob answered; `bytes` is the body sent. */
  recordServed(upstream: string, kind: 'manifest' | 'blob', result: CacheResult, bytes: number): void {
    this.cacheResults.inc({ upstream, kind, result });
    const counts = this.current();
    if (result === 'hit') counts.hits += 1;
    else if (result === 'miss') counts.misses += 1;
    else if (result === 'coalesced') counts.coalesced += 1;
    else if (result === 'stale') counts.stale += 1;
    else if (result === 'notfound_cached') counts.notFoundCached += 1;
    if (bytes > 0 && (result === 'hit' || result === 'coalesced' || result === 'stale')) {
      this.bytesFromCache.inc({ upstream }, bytes);
      counts.bytesFromCache += bytes;
    }
  }

  recordUpstreamBytes(upstream: string, bytes: number): void {
    if (bytes <= 0) return;
    this.bytesFromUpstream.inc({ upstream }, bytes);
    this.current().bytesFromUpstream += bytes;
  }

  recordUpstreamRequest(endpoint: string, method: string, status: number, seconds: number): void {
    this.upstreamRequests.inc({ endpoint, method, status: String(status) });
    this.upstreamDuration.observe({ endpoint }, seconds);
  }

  /** The counts of the minute under way, for totals that include it. */
  currentMinute(): { start: number; counts: StatsCounts } {
    this.current();
    return { start: this.minute.start, counts: { ...this.minute.counts } };
  }

  /** Hands the running minute to `onMinute` (at shutdown, say). */
  flushMinute(): void {
    this.onMinute?.(this.minute.start, this.minute.counts);
    this.minute = { start: minuteOf(Date.now()), counts: emptyCounts() };
  }

  private current(): StatsCounts {
    const now = minuteOf(Date.now());
    if (now !== this.minute.start) this.flushMinute();
    return this.minute.counts;
  }
}

export function minuteOf(ms: number): number {
  return Math.floor(ms / 60_000) * 60_000;
}
