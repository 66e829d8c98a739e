import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

/** What the cache did for one request; the labels of stevedore_cache_results_total. */
export type CacheResult = 'hit' | 'miss' | 'coalesced' | 'stale' | 'notfound_cached' | 'pass';

/** Why an upstream request got no response; the `outcome` label of stevedore_upstream_requests_total beside answered and server_error. */
export type UpstreamFailureOutcome = 'refused' | 'reset' | 'timeout' | 'dns' | 'tls' | 'deadline' | 'error';

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

/** What `observeNotifications` reads of the notifier's status (structural: metrics depends on nothing of ours). */
export interface NotificationsSnapshot {
  recorded: number;
  lost: number;
  endpoints: { name: string; pending: number; delivered: number; failedAttempts: number; dropped: number; lastSuccessAt?: number }[];
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
  readonly upstreamRequests = new Counter({
    name: 'stevedore_upstream_requests_total',
    help: 'Requests sent to upstream endpoints, by outcome: answered (status below 500), server_error (5xx), or no answer at all (refused, reset, timeout, dns, tls, deadline, error; status "none")',
    labelNames: ['endpoint', 'method', 'status', 'outcome'],
    registers: [this.registry],
  });
  readonly upstreamDuration = new Histogram({ name: 'stevedore_upstream_request_duration_seconds', help: 'Upstream latency until response headers', labelNames: ['endpoint'], buckets: [0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers: [this.registry] });
  readonly circuitState = new Gauge({ name: 'stevedore_upstream_circuit_state', help: 'Circuit of each endpoint: 0 closed, 1 half-open, 2 open', labelNames: ['upstream', 'endpoint'], registers: [this.registry] });
  readonly rateLimitRemaining = new Gauge({ name: 'stevedore_ratelimit_remaining', help: 'Last ratelimit-remaining an upstream reported (credential: configured or anonymous)', labelNames: ['upstream', 'endpoint', 'credential'], registers: [this.registry] });
  readonly rateLimitLimit = new Gauge({ name: 'stevedore_ratelimit_limit', help: 'Last ratelimit-limit an upstream reported', labelNames: ['upstream', 'endpoint', 'credential'], registers: [this.registry] });
  readonly manifestGets = new Counter({ name: 'stevedore_upstream_manifest_gets_total', help: 'Manifest GETs sent to an endpoint (what counts against pull quotas)', labelNames: ['upstream', 'endpoint'], registers: [this.registry] });
  readonly cacheBytes = new Gauge({ name: 'stevedore_cache_size_bytes', help: 'Bytes of cached blobs', registers: [this.registry] });
  readonly cacheBlobs = new Gauge({ name: 'stevedore_cache_blobs', help: 'Cached blobs and manifests', registers: [this.registry] });
  readonly cacheQuota = new Gauge({ name: 'stevedore_cache_quota_bytes', help: 'cache.maxSize (0: no quota)', registers: [this.registry] });
  readonly evictions = new Counter({ name: 'stevedore_cache_evicted_blobs_total', help: 'Blobs removed by eviction and GC', registers: [this.registry] });
  readonly evictedBytes = new Counter({ name: 'stevedore_cache_evicted_bytes_total', help: 'Bytes removed by eviction and GC', registers: [this.registry] });
  readonly diskFree = new Gauge({ name: 'stevedore_cache_disk_free_bytes', help: 'Bytes free for this process on the file system of cache.dir', registers: [this.registry] });
  readonly diskSize = new Gauge({ name: 'stevedore_cache_disk_size_bytes', help: 'Size of the file system of cache.dir', registers: [this.registry] });
  readonly warmupLastRun = new Gauge({ name: 'stevedore_warmup_last_run_timestamp_seconds', help: 'When each warm-up job last finished', labelNames: ['job'], registers: [this.registry] });
  readonly warmupDuration = new Gauge({ name: 'stevedore_warmup_last_duration_seconds', help: 'How long the last run of each warm-up job took', labelNames: ['job'], registers: [this.registry] });
  readonly warmupSuccess = new Gauge({ name: 'stevedore_warmup_last_success', help: '1 if the last run of the job succeeded', labelNames: ['job'], registers: [this.registry] });
  readonly notificationsRecorded = new Counter({ name: 'stevedore_notifications_recorded_total', help: 'Events recorded for notification endpoints (before each endpoint filters them)', registers: [this.registry] });
  readonly notificationsLost = new Counter({ name: 'stevedore_notifications_lost_total', help: 'Events that never reached the notification outbox (it could not be written for long, or at stop)', registers: [this.registry] });
  readonly notificationsDelivered = new Counter({ name: 'stevedore_notifications_delivered_total', help: 'Events delivered to a notification endpoint (answered 2xx)', labelNames: ['endpoint'], registers: [this.registry] });
  readonly notificationsFailed = new Counter({ name: 'stevedore_notifications_failed_total', help: 'Delivery attempts to a notification endpoint that failed (timeout, refused, non-2xx)', labelNames: ['endpoint'], registers: [this.registry] });
  readonly notificationsDropped = new Counter({ name: 'stevedore_notifications_dropped_total', help: 'Events dropped, oldest first, because the outbox of the endpoint was full (notifications.maxPending)', labelNames: ['endpoint'], registers: [this.registry] });
  readonly notificationsPending = new Gauge({ name: 'stevedore_notifications_pending', help: 'Events in the outbox of a notification endpoint, waiting for a 2xx', labelNames: ['endpoint'], registers: [this.registry] });
  readonly notificationsLastSuccess = new Gauge({ name: 'stevedore_notifications_last_success_timestamp_seconds', help: 'When a notification endpoint last answered a batch with a 2xx (absent until it has)', labelNames: ['endpoint'], registers: [this.registry] });
  readonly buildInfo = new Gauge({ name: 'stevedore_build_info', help: 'Always 1; the version of this Stevedore as a label', labelNames: ['version'], registers: [this.registry] });
  /** Totals last copied into counters that follow a running total (`advance`), by counter and labels. */
  private readonly advanced = new Map<Counter<string>, Map<string, number>>();

  readonly version: string;
  readonly instanceId: string;
  readonly startedAt = Date.now();
  /** Free and total bytes of the cache disk, when the wiring can tell (the dashboard and the disk gauges). */
  diskUsage: (() => { freeBytes: number; sizeBytes: number } | undefined) | undefined;
  /** 5xx answers to registry clients per minute, for the dashboard's last 24 hours (since start: not stored). */
  private readonly errorMinutes = new Map<number, number>();
  private errorsSinceStart = 0;

  constructor(options: { version?: string; instanceId?: string } = {}) {
    collectDefaultMetrics({ register: this.registry });
    this.version = options.version ?? 'unknown';
    this.instanceId = options.instanceId ?? '';
    this.buildInfo.set({ version: this.version }, 1);
  }

  /**
   * Moves a counter that follows a running total kept elsewhere (eviction
   * totals, manifest GETs) up to `total`: counters only ever go up, by the
   * difference since the last scrape.
   */
  advance<L extends string>(counter: Counter<L>, labels: Partial<Record<L, string>>, total: number): void {
    let totals = this.advanced.get(counter);
    if (!totals) this.advanced.set(counter, (totals = new Map()));
    const key = JSON.stringify(labels);
    const last = totals.get(key) ?? 0;
    if (total > last) counter.inc(labels, total - last);
    // A total that went down started over (a new endpoint state): count on from it.
    totals.set(key, total);
  }

  /**
   * Copies the notifier's state into the notification metrics (from a collect
   * hook): gauges are set, counters advanced to the notifier's totals.
   * The endpoint label is the configured endpoint name.
   */
  observeNotifications(status: NotificationsSnapshot): void {
    this.advance(this.notificationsRecorded, {}, status.recorded);
    this.advance(this.notificationsLost, {}, status.lost);
    for (const e of status.endpoints) {
      const labels = { endpoint: e.name };
      // Each series starts at 0, so that increase() sees the first delivery, failure or drop of an endpoint.
      for (const counter of [this.notificationsDelivered, this.notificationsFailed, this.notificationsDropped]) counter.inc(labels, 0);
      this.advance(this.notificationsDelivered, labels, e.delivered);
      this.advance(this.notificationsFailed, labels, e.failedAttempts);
      this.advance(this.notificationsDropped, labels, e.dropped);
      this.notificationsPending.set(labels, e.pending);
      if (e.lastSuccessAt !== undefined) this.notificationsLastSuccess.set(labels, e.lastSuccessAt / 1000);
    }
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
    if (status >= 500 && !NOT_REGISTRY_ROUTES.has(route)) this.recordClientError();
  }

  /** 5xx answered to registry clients: since start, and per minute over the last 24 hours. */
  clientErrors(sinceMs: number): { total: number; series: { minute: number; errors: number }[] } {
    const series = [...this.errorMinutes].filter(([minute]) => minute >= sinceMs).map(([minute, errors]) => ({ minute, errors }));
    return { total: this.errorsSinceStart, series: series.sort((a, b) => a.minute - b.minute) };
  }

  private recordClientError(): void {
    const minute = minuteOf(Date.now());
    this.errorsSinceStart += 1;
    this.errorMinutes.set(minute, (this.errorMinutes.get(minute) ?? 0) + 1);
    if (this.errorMinutes.size > ERROR_MINUTES_KEPT) {
      for (const old of this.errorMinutes.keys()) if (old < minute - ERROR_MINUTES_KEPT * 60_000) this.errorMinutes.delete(old);
    }
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
    this.upstreamRequests.inc({ endpoint, method, status: String(status), outcome: status >= 500 ? 'server_error' : 'answered' });
    this.upstreamDuration.observe({ endpoint }, seconds);
  }

  /** A request to an endpoint that got no response at all (refused, timed out…): the upstream error rate needs it. */
  recordUpstreamFailure(endpoint: string, method: string, outcome: UpstreamFailureOutcome): void {
    this.upstreamRequests.inc({ endpoint, method, status: 'none', outcome });
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

/** Route labels that are not registry traffic: their errors are not the clients' errors. */
const NOT_REGISTRY_ROUTES = new Set(['api', 'ui', 'metrics', 'healthz', 'readyz', 'other']);
/** A day of minutes. */
const ERROR_MINUTES_KEPT = 24 * 60;

export function minuteOf(ms: number): number {
  return Math.floor(ms / 60_000) * 60_000;
}
