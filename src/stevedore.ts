import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { join } from 'node:path';
import { Cache } from './cache/cache.js';
import { announceServer, claimCacheDir } from './cache/server-lock.js';
import { mkdir } from 'node:fs/promises';
import type { Config } from './config/schema.js';
import { createApp } from './http/app.js';
import { boundPort, listen, parseListen } from './http/server.js';
import { CacheSweeper } from './jobs/cache-sweeper.js';
import { startHealthProbes } from './jobs/health-probes.js';
import { scheduleWarmups, type ScheduledJob } from './jobs/scheduler.js';
import { WarmupRunner } from './jobs/warmup.js';
import { createLogger, type Logger } from './log.js';
import { Metrics } from './metrics/metrics.js';
import { Mirror } from './mirror/mirror.js';
import { UpstreamResolver, type UpstreamEntry } from './mirror/resolve.js';
import { EndpointClient } from './upstream/endpoint-client.js';
import { TokenCache } from './upstream/token-cache.js';
import { UpstreamRegistry } from './upstream/upstream-registry.js';

const FILL_DRAIN_MS = 20_000;
/** Per-minute statistics older than this are pruned. */
const STATS_KEEP_MS = 30 * 24 * 3_600_000;

/** Everything but HTTP: what `serve` listens in front of, and what `warm` runs without a server. */
export interface Core {
  cache: Cache;
  metrics: Metrics;
  mirror: Mirror;
  instanceId: string;
  tokens: TokenCache;
  warmups: WarmupRunner;
  sweeper: CacheSweeper;
  probes: { runOnce(): Promise<void> };
  scheduled: ScheduledJob[];
  close(): Promise<void>;
}

export interface Stevedore extends Core {
  server: Server;
  /** Base URL, for example http://127.0.0.1:5000 */
  url: string;
}

function buildUpstreams(config: Config, tokens: TokenCache, log: Logger, metrics: Metrics): UpstreamEntry[] {
  const observe = (r: { endpoint: string; method: string; status: number; ms: number }): void => metrics.recordUpstreamRequest(r.endpoint, r.method, r.status, r.ms / 1000);
  const breaker = { failureThreshold: config.health.failureThreshold, openMinMs: config.health.openMin, openMaxMs: config.health.openMax };
  return config.upstreams.map((u) => ({
    aliases: u.aliases,
    allow: u.allow,
    deny: u.deny,
    registry: new UpstreamRegistry(
      u.registry,
      u.endpoints.map(
        (e) =>
          new EndpointClient({
            url: e.url,
            credentials: e.username ? { username: e.username, password: e.password } : undefined,
            timeouts: u.timeouts,
            tokens,
            mirror: e.mirror,
            breaker,
            rateLimit: u.rateLimit,
            log,
            observe,
          }),
      ),
      { tagTtlMs: u.tagTtl, maxConcurrentFetches: u.maxConcurrentFetches },
    ),
  }));
}

/** This mirror's name in the loop-detection chain: configured, or random and kept with the cache. */
function instanceIdFor(config: Config): string {
  if (config.instanceId) return config.instanceId;
  const file = join(config.cache.dir, 'instance-id');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  const id = `stevedore-${randomBytes(6).toString('hex')}`;
  writeFileSync(file, `${id}\n`);
  return id;
}

/**
 * Builds the mirror from a validated config. `owner` means this process serves
 * the cache directory: it recovers it after a crash and runs the background jobs.
 */
export async function buildCore(config: Config, log: Logger, options: { owner: boolean; background: boolean }): Promise<Core> {
  const cache = await Cache.open({ dir: config.cache.dir, accessFlushIntervalMs: config.cache.accessFlushInterval, owner: options.owner });
  if (cache.recovery) log.info({ ...cache.recovery }, 'cache recovered');
  cache.onCorrupt = (digest, reason) => log.error({ digest, reason }, 'damaged blob removed from the cache; it will be fetched again');
  const instanceId = instanceIdFor(config);
  const tokens = new TokenCache();
  const metrics = new Metrics();
  metrics.onMinute = (minute, counts) => {
    try {
      cache.stats.add(minute, counts);
    } catch (err) {
      log.error({ err }, 'could not store the statistics of a minute');
    }
  };
  cache.access.onError = (err) => log.error({ err }, 'could not store access times');
  const upstreams = buildUpstreams(config, tokens, log, metrics);
  const resolver = new UpstreamResolver(upstreams, config.defaultRegistry);
  const mirror = new Mirror(
    cache,
    resolver,
    {
      tagTtlMs: config.cache.tagTtl,
      notFoundTtlMs: config.cache.notFoundTtl,
      maxStaleMs: config.cache.maxStale,
      maxManifestBytes: config.cache.maxManifestSize,
      revalidateTimeoutMs: config.cache.revalidateTimeout,
    },
    log,
    { upstreamBytes: (registry, bytes) => metrics.recordUpstreamBytes(registry, bytes) },
  );
  const policy = { maxSize: config.cache.maxSize, lowWater: config.cache.lowWater, blobIdleTtlMs: config.cache.blobIdleTtl, gcGraceMs: config.cache.gcGrace };
  const sweeper = new CacheSweeper(cache, policy, options.background ? config.cache.sweepInterval : 2 ** 31 - 1, log);
  mirror.fills.onDiskFull = () => sweeper.run();
  const warmups = new WarmupRunner(mirror, cache, instanceId, log);
  const probes = startHealthProbes(resolver.registries(), { intervalMs: options.background ? config.health.probeInterval : 2 ** 31 - 1, timeoutMs: config.health.probeTimeout }, log);
  const schedule = options.background ? scheduleWarmups(config.warmup, warmups, log) : { jobs: [], stop: () => undefined };
  collectLiveState(metrics, { cache, mirror, sweeper });
  const pruneStats = setInterval(() => {
    try {
      cache.stats.prune(Date.now() - STATS_KEEP_MS);
    } catch (err) {
      log.error({ err }, 'could not prune statistics');
    }
  }, 3_600_000);
  pruneStats.unref();

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      schedule.stop();
      probes.stop();
      clearInterval(pruneStats);
      metrics.flushMinute();
      await sweeper.stop();
      // Fills run independently of clients: let them land before the index closes.
      await mirror.fills.drain(FILL_DRAIN_MS);
      await Promise.all(upstreams.flatMap((u) => u.registry.endpoints.map((e) => e.close())));
      cache.close();
    })());
  return { cache, metrics, mirror, instanceId, tokens, warmups, sweeper, probes, scheduled: schedule.jobs, close };
}

/** Gauges that mirror live state are set just before each scrape. */
function collectLiveState(metrics: Metrics, parts: { cache: Cache; mirror: Mirror; sweeper: CacheSweeper }): void {
  const { cache, mirror, sweeper } = parts;
  const circuit = { closed: 0, 'half-open': 1, open: 2 } as const;
  metrics.onCollect(() => {
    for (const upstream of mirror.upstreams()) {
      for (const e of upstream.endpoints) {
        const labels = { upstream: upstream.registry, endpoint: e.url };
        metrics.circuitState.set(labels, circuit[e.circuit]);
        metrics.manifestGets.set(labels, e.manifestGets);
        if (e.rateLimit?.remaining !== undefined) metrics.rateLimitRemaining.set({ ...labels, credential: e.credential }, e.rateLimit.remaining);
        if (e.rateLimit?.limit !== undefined) metrics.rateLimitLimit.set({ ...labels, credential: e.credential }, e.rateLimit.limit);
      }
    }
    metrics.cacheBytes.set(cache.bytes);
    metrics.cacheBlobs.set(cache.blobs);
    metrics.cacheQuota.set(sweeper.policy.maxSize);
    metrics.evictions.set(sweeper.totals.removedBlobs);
    metrics.evictedBytes.set(sweeper.totals.removedBytes);
    const seen = new Set<string>();
    for (const run of cache.jobs.list(200)) {
      if (seen.has(run.job) || run.finishedAt === null) continue;
      seen.add(run.job);
      metrics.warmupLastRun.set({ job: run.job }, run.finishedAt / 1000);
      metrics.warmupDuration.set({ job: run.job }, (run.finishedAt - run.startedAt) / 1000);
      metrics.warmupSuccess.set({ job: run.job }, run.status === 'succeeded' ? 1 : 0);
    }
  });
}

/** Builds the whole mirror from a validated config and starts listening. */
export async function startStevedore(config: Config, log: Logger): Promise<Stevedore> {
  await mkdir(config.cache.dir, { recursive: true });
  const release = claimCacheDir(config.cache.dir, { pid: process.pid, url: '' });
  let core: Core;
  try {
    core = await buildCore(config, log, { owner: true, background: true });
  } catch (err) {
    release();
    throw err;
  }
  const audit = config.auditLog ? createLogger('info', config.auditLog) : undefined;
  const app = createApp({ core, log, adminToken: config.admin.token, audit });
  const server = await listen(app, parseListen(config.listen)).catch(async (err: unknown) => {
    await core.close();
    release();
    throw err;
  });
  const host = parseListen(config.listen).host;
  const url = `http://${host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host}:${boundPort(server)}`;
  announceServer(config.cache.dir, { pid: process.pid, url });
  log.info({ url, instanceId: core.instanceId, cacheDir: config.cache.dir, upstreams: config.upstreams.map((u) => u.registry) }, 'stevedore listening');

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      const closed = new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      });
      // Downloads in flight finish (the CLI bounds the wait) before the index closes.
      await closed;
      await core.close();
      release();
    })());
  return { ...core, server, url, close };
}
