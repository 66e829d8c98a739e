import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statfsSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import type { Server } from 'node:http';
import { join } from 'node:path';
import { Cache } from './cache/cache.js';
import type { Cluster } from './cluster/cluster.js';
import { PeerClient } from './cluster/peer-client.js';
import { SingleReplica } from './cluster/single-replica.js';
import { FsStore } from './storage/fs-store.js';
import { announceServer, claimCacheDir } from './cache/server-lock.js';
import { chmod, mkdir } from 'node:fs/promises';
import type { Catalog } from './cache/catalog.js';
import { CacheDatabase } from './cache/database.js';
import type { JobHistory } from './cache/job-history.js';
import type { StatsHistory } from './cache/stats-history.js';
import type { BlobStore } from './storage/blob-store.js';
import { cacheModes, type CacheModes } from './storage/fs-store.js';
import { openStore, type StoreOptions } from './storage/open-store.js';
import { ConfigError } from './config/errors.js';
import type { Config } from './config/schema.js';
import { createApp } from './http/app.js';
import { HtpasswdVerifier } from './http/htpasswd.js';
import { ConnectionGuard } from './http/connection-guard.js';
import { boundPort, createServer, listen, localUrl, parseListen, reloadTls } from './http/server.js';
import { CacheSweeper } from './jobs/cache-sweeper.js';
import { startHealthProbes } from './jobs/health-probes.js';
import { scheduleWarmups, type ScheduledJob } from './jobs/scheduler.js';
import { WarmupRunner } from './jobs/warmup.js';
import { Readiness } from './jobs/readiness.js';
import { createReopenableLogger, type Logger } from './log.js';
import { Metrics } from './metrics/metrics.js';
import { Mirror, type Clock } from './mirror/mirror.js';
import { UpstreamResolver, type UpstreamEntry } from './mirror/resolve.js';
import { EndpointClient } from './upstream/endpoint-client.js';
import type { SharedBudget } from './upstream/endpoint-state.js';
import { TokenCache } from './upstream/token-cache.js';
import { UpstreamRegistry, type RequestFailureKind } from './upstream/upstream-registry.js';
import { VERSION } from './version.js';
import * as mirrorEvents from './notify/mirror-events.js';
import { EndpointSettingsError, Notifier } from './notify/notifier.js';

const FILL_DRAIN_MS = 20_000;
/** Per-minute statistics older than this are pruned. */
const STATS_KEEP_MS = 30 * 24 * 3_600_000;

/** Everything but HTTP: what `serve` listens in front of, and what `warm` runs without a server. */
export interface Core {
  cache: Cache;
  /** The warm-up history, the per-minute statistics and the catalog of cached images, beside the index. */
  jobs: JobHistory;
  stats: StatsHistory;
  catalog: Catalog;
  metrics: Metrics;
  mirror: Mirror;
  instanceId: string;
  tokens: TokenCache;
  warmups: WarmupRunner;
  sweeper: CacheSweeper;
  probes: { runOnce(): Promise<void> };
  /** What GET /readyz answers: whether this instance can serve pulls now. */
  readiness: Readiness;
  scheduled: ScheduledJob[];
  /** The replicas sharing the bucket; this one alone without Redis. */
  cluster: Cluster;
  /** Events for the configured webhooks: recorded here, delivered from the outbox. */
  notifications: Notifier;
  /** Stops background work, lets fills land (up to `fillGraceMs`, then discards them) and closes the index. */
  close(options?: { fillGraceMs?: number }): Promise<void>;
}

export interface Stevedore extends Core {
  /** The main server (HTTPS when TLS is configured). */
  server: Server;
  servers: Server[];
  /** Base URL, for example http://127.0.0.1:5000 */
  url: string;
  /** The plain-HTTP listener's URL, when TLS is on and one is configured. */
  plainUrl: string | undefined;
  /** The admin listener's URL (/metrics, /healthz, /api/, the dashboard), when admin.listen is set. */
  adminUrl: string | undefined;
  /** Open client connections, in total and per address, across the listeners. */
  connections: ConnectionGuard;
  /** Reopens the audit log (logrotate), re-reads the htpasswd file and the TLS certificate (SIGHUP); failures keep the old ones. */
  reload(): void;
}

function buildUpstreams(config: Config, tokens: TokenCache, log: Logger, metrics: Metrics, cluster: Cluster, notifier: Notifier): UpstreamEntry[] {
  const observe = (r: { endpoint: string; method: string; status: number; ms: number }): void => metrics.recordUpstreamRequest(r.endpoint, r.method, r.status, r.ms / 1000);
  const events = { requestFailed: (f: { endpoint: string; method: string; kind: RequestFailureKind }): void => metrics.recordUpstreamFailure(f.endpoint, f.method, f.kind) };
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
            allowLinkLocal: u.allowLinkLocal,
            redirectAllow: u.redirectAllow,
            proxy: u.proxy,
            caFile: u.ca,
            log,
            observe,
            sharedBudget: cluster.mode === 'single' ? undefined : (endpoint, credential) => sharedBudget(cluster, `${endpoint}|${credential}`),
            events: {
              circuitOpened: (event) => notifier.record(mirrorEvents.circuitOpened(u.registry, event)),
              circuitClosed: (event) => notifier.record(mirrorEvents.circuitClosed(u.registry, event)),
              budgetLow: (event) => notifier.record(mirrorEvents.budgetLow(u.registry, event)),
            },
          }),
      ),
      { tagTtlMs: u.tagTtl, maxConcurrentFetches: u.maxConcurrentFetches, maxQueuedFetches: u.maxQueuedFetches },
      events,
    ),
  }));
}

/** One endpoint's pull budget as the cluster shares it. */
function sharedBudget(cluster: Cluster, key: string): SharedBudget {
  return {
    publish: (rate, windowMs) => cluster.publishRateLimit(key, rate, windowMs),
    read: () => cluster.rateLimit(key),
  };
}

/** Joins the replicas on Redis when configured (never failing: without Redis it serves alone until Redis answers). */
async function joinCluster(config: Config, instanceId: string, log: Logger, metrics: Metrics, serving: boolean): Promise<{ cluster: Cluster; peers?: PeerClient }> {
  const { redis, advertise, secret, leaseTtl, redisPassword } = config.cluster;
  if (!redis || !serving) return { cluster: new SingleReplica({ id: instanceId, url: advertise }) };
  const s3 = config.storage.s3;
  // Loaded only for a cluster, as the AWS SDK is only for a bucket: a replica alone never pays for the Redis client.
  const { RedisCluster } = await import('./cluster/redis-cluster.js');
  const cluster = new RedisCluster({
    url: redis,
    password: redisPassword,
    // A fresh id per start: leases a crashed run left are never mistaken for this run's.
    self: { id: `${instanceId}-${randomBytes(3).toString('hex')}`, url: advertise },
    secret,
    leaseTtlMs: leaseTtl,
    namespace: `${s3.endpoint}/${s3.bucket}/${s3.prefix}`,
    commandTimeoutMs: Math.min(2_000, Math.max(250, Math.floor(leaseTtl / 4))),
    log,
    events: { redisError: (operation) => metrics.clusterRedisErrors.inc({ operation }), takeover: () => metrics.clusterTakeovers.inc() },
  });
  await cluster.start();
  // Headers may wait for the owner's queued fill to start; a stream silent that long is broken.
  const peers = new PeerClient(secret, { connectMs: 2_000, headersMs: 60_000, bodyIdleMs: 30_000 });
  log.info({ replica: cluster.self.id, advertise, redisConnected: cluster.connected, leaseTtlMs: leaseTtl }, 'joined the cluster');
  return { cluster, peers };
}

/**
 * The notifier the config describes; `deliver` starts sending (the serving
 * process does; the CLI only adds events to the outbox, which the server sends).
 */
export function openNotifier(config: Config, instanceId: string, log: Logger, options: { fileMode?: number; deliver: boolean }): Notifier {
  const port = config.listen.slice(config.listen.lastIndexOf(':') + 1);
  let notifier: Notifier;
  try {
    notifier = new Notifier({
      endpoints: config.notifications.endpoints.map((e) => ({
        name: e.name,
        url: e.url,
        allow: e.allow,
        headers: e.headers,
        timeoutMs: e.timeout,
        threshold: e.threshold,
        backoffMs: e.backoff,
        maxBackoffMs: e.maxBackoff,
        format: e.format,
        secret: e.secret,
        maxEvents: e.batch.maxEvents,
        maxWaitMs: e.batch.maxWait,
        disabled: e.disabled,
        filter: { actions: e.ignore.actions, mediaTypes: [...e.ignoredMediaTypes, ...e.ignore.mediaTypes], hits: e.ignore.hits },
      })),
      maxPending: config.notifications.maxPending,
      outboxPath: join(config.cache.dir, 'notifications.db'),
      fileMode: options.fileMode,
      source: { addr: `${hostname()}:${port}`, instanceID: instanceId },
      log,
    });
  } catch (err) {
    if (err instanceof EndpointSettingsError) throw new ConfigError(`invalid config key "notifications.endpoints.${err.index}.${err.key}": ${err.message}`);
    throw err;
  }
  if (options.deliver) notifier.start();
  return notifier;
}

/** This mirror's name in the loop-detection chain: configured, or random and kept with the cache. */
export function instanceIdFor(config: Config): string {
  if (config.instanceId) return config.instanceId;
  const file = join(config.cache.dir, 'instance-id');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  const id = `stevedore-${randomBytes(6).toString('hex')}`;
  writeFileSync(file, `${id}\n`);
  return id;
}

/** The store the config names, with its units crossed into bytes and milliseconds. */
function storeOptions(config: Config, modes: CacheModes): StoreOptions {
  if (config.storage.driver === 'filesystem') return { driver: 'filesystem', dir: config.cache.dir, modes };
  const s3 = config.storage.s3;
  return {
    driver: 's3',
    bucket: s3.bucket,
    endpoint: s3.endpoint,
    region: s3.region || process.env.AWS_REGION || 'us-east-1',
    forcePathStyle: s3.forcePathStyle,
    accessKeyId: s3.accessKeyId,
    secretAccessKey: s3.secretAccessKey,
    prefix: s3.prefix,
    partSizeBytes: s3.partSize,
    redirectExpirySeconds: Math.round(s3.redirectExpiry / 1000),
    publicEndpoint: s3.publicEndpoint,
    requestTimeoutMs: s3.requestTimeout,
    // Fills, readers and their tail: as many sockets as fills may run, and some to spare.
    maxSockets: Math.max(64, ...config.upstreams.map((u) => u.maxConcurrentFetches * 2)),
    journalDir: config.cache.dir,
  };
}

/**
 * Opens the instance's database (in cache.dir), the store and the cache over
 * them. The owner makes the directory its user's alone and recovers after a crash.
 */
export async function openCache(config: Config, options: { owner: boolean }): Promise<{ database: CacheDatabase; store: BlobStore; cache: Cache }> {
  const modes = cacheModes(config.cache.groupReadable);
  await mkdir(config.cache.dir, { recursive: true, mode: modes.dir });
  // Private images are cached here: the directory is the mirror user's (and, if asked, its group's) alone.
  if (options.owner) await chmod(config.cache.dir, modes.dir);
  const database = new CacheDatabase(join(config.cache.dir, 'index.db'), options.owner ? modes.file : undefined);
  let store: BlobStore | undefined;
  try {
    store = await openStore(storeOptions(config, modes));
    // Fills into a bucket are spooled to the local disk too: readers that fall behind the fill's
    // memory (other replicas' streams among them) read the spool back, instead of the fill holding
    // a window of memory for them; in a cluster, blobs relayed from the filling replica land there.
    const spool = config.storage.driver === 's3' ? new FsStore(join(config.cache.dir, 'spool'), modes) : undefined;
    await spool?.init();
    const cache = await Cache.open({ database, store, accessFlushIntervalMs: config.cache.accessFlushInterval, memoryBudgetBytes: config.cache.memoryBudget, owner: options.owner, spool });
    return { database, store, cache };
  } catch (err) {
    database.close();
    await store?.close();
    throw err;
  }
}

/**
 * Builds the mirror from a validated config. `owner` means this process serves
 * the cache directory: it recovers it after a crash and runs the background jobs.
 */
export async function buildCore(config: Config, log: Logger, options: { owner: boolean; background: boolean; clock?: Clock }): Promise<Core> {
  const { database, store, cache } = await openCache(config, { owner: options.owner });
  if (cache.recovery) log.info({ ...cache.recovery }, 'cache recovered');
  // In the background: the mirror serves meanwhile, and a miss looks in the store before going upstream.
  cache.reconciled?.then(
    (report) => log.info({ ...report }, 'cache reconciled'),
    (err: unknown) => log.error({ err }, 'could not reconcile the index with the store; misses keep looking in the store first'),
  );
  cache.onSpoolLost = (digest, err) => log.warn({ digest, err: err.message }, 'local spool of a fill failed; the fill goes on into the bucket alone');
  const instanceId = instanceIdFor(config);
  let notifier: Notifier;
  try {
    notifier = openNotifier(config, instanceId, log, { fileMode: options.owner ? cacheModes(config.cache.groupReadable).file : undefined, deliver: false });
  } catch (err) {
    await cache.close();
    database.close();
    await store.close();
    throw err;
  }
  cache.onCorrupt = (digest, reason) => {
    log.error({ digest, reason }, 'damaged blob removed from the cache; it will be fetched again');
    notifier.record(mirrorEvents.verifyDamaged(digest, reason, { source: 'serve', removed: true }));
  };
  const tokens = new TokenCache();
  const metrics = new Metrics({ version: VERSION, instanceId });
  metrics.onMinute = (minute, counts) => {
    try {
      database.stats.add(minute, counts);
    } catch (err) {
      log.error({ err }, 'could not store the statistics of a minute');
    }
  };
  cache.access.onError = (err) => log.error({ err }, 'could not store access times');
  const { cluster, peers } = await joinCluster(config, instanceId, log, metrics, options.owner && options.background);
  cache.onLinked = cluster.mode === 'single' ? undefined : (upstream, repo, digest) => cluster.link(`${upstream}/${repo}`, digest);
  const upstreams = buildUpstreams(config, tokens, log, metrics, cluster, notifier);
  const resolver = new UpstreamResolver(upstreams, config.defaultRegistry);
  const mirror = new Mirror({
    cache,
    listings: database.listings,
    resolver,
    policy: {
      tagTtlMs: config.cache.tagTtl,
      notFoundTtlMs: config.cache.notFoundTtl,
      maxStaleMs: config.cache.maxStale,
      maxStaleDeniedMs: config.cache.maxStaleDenied,
      maxManifestBytes: config.cache.maxManifestSize,
      revalidateTimeoutMs: config.cache.revalidateTimeout,
    },
    fillLimits: { maxFillsPerClient: config.limits.maxFillsPerClient },
    log,
    events: {
      upstreamBytes: (registry, bytes) => metrics.recordUpstreamBytes(registry, bytes),
      uncached: (registry, reason) => metrics.uncachedBlobs.inc({ upstream: registry, reason }),
      peerStream: () => metrics.clusterPeerStreams.inc(),
      takeover: () => metrics.clusterTakeovers.inc(),
      filled: (fill) => notifier.record(mirrorEvents.fillCompleted(fill)),
      fillFailed: (fill) => notifier.record(mirrorEvents.fillFailed(fill)),
      digestMismatch: (fill) => notifier.record(mirrorEvents.digestMismatch(fill)),
    },
    clock: options.clock,
    ...(peers ? { cluster: { cluster, peers, leaseTtlMs: config.cluster.leaseTtl } } : {}),
  });
  cluster.reportFills(() => mirror.fills.inProgress);
  const sharedLru = cluster.mode === 'single' ? undefined : { order: () => cluster.accessOrder(), forget: (digests: readonly string[]) => cluster.forgetStored(digests) };
  if (sharedLru) cache.access.onFlush = (digests) => cluster.recordAccess(digests);
  const policy = { maxSize: config.cache.maxSize, lowWater: config.cache.lowWater, blobIdleTtlMs: config.cache.blobIdleTtl, gcGraceMs: config.cache.gcGrace, minFree: config.cache.minFreeSpace, sharedLru };
  // Housekeeping runs on one replica at a time: the one holding the leader lock.
  const leader = (): boolean => cluster.isLeader();
  const sweeper = new CacheSweeper(cache, policy, options.background ? config.cache.sweepInterval : 2 ** 31 - 1, log, leader);
  mirror.onDiskFull = (bytes) => sweeper.run({ needFreeBytes: bytes });
  sweeper.onSwept = (report) => mirrorEvents.sweepRemovals(report).forEach((event) => notifier.record(event));
  const warmups = new WarmupRunner(mirror, database.jobs, instanceId, log);
  warmups.onFinished = (run) => notifier.record(mirrorEvents.warmupFinished(run));
  const probes = startHealthProbes(resolver.registries(), { intervalMs: options.background ? config.health.probeInterval : 2 ** 31 - 1, timeoutMs: config.health.probeTimeout }, log);
  const schedule = options.background ? scheduleWarmups(config.warmup, warmups, log, leader) : { jobs: [], stop: () => undefined };
  const indexQuery = database.connection.prepare('SELECT count(*) FROM sqlite_master');
  const readiness = new Readiness({
    queryIndex: () => void indexQuery.get(),
    // Fills write their temp files there; with a bucket, only the index lives in cache.dir.
    probeDir: config.storage.driver === 'filesystem' ? join(config.cache.dir, 'tmp') : config.cache.dir,
    cache,
    minFree: config.cache.minFreeSpace,
    checkStore: store.check ? () => store.check!() : undefined,
    mirror,
  });
  collectLiveState(metrics, { cache, jobs: database.jobs, mirror, sweeper, cacheDir: config.cache.dir });
  metrics.onCollect(() => {
    metrics.clusterConnected.set(cluster.connected ? 1 : 0);
    metrics.clusterLeader.set(cluster.isLeader() ? 1 : 0);
    metrics.observeNotifications(notifier.status());
  });
  const pruneStats = setInterval(() => {
    try {
      database.stats.prune(Date.now() - STATS_KEEP_MS);
    } catch (err) {
      log.error({ err }, 'could not prune statistics');
    }
  }, 3_600_000);
  pruneStats.unref();
  // Delivery starts once the rest is built: a failure above leaves no sender running.
  if (options.owner && options.background) notifier.start();

  let closing: Promise<void> | undefined;
  const close = (closeOptions: { fillGraceMs?: number } = {}): Promise<void> =>
    (closing ??= (async () => {
      schedule.stop();
      probes.stop();
      clearInterval(pruneStats);
      metrics.flushMinute();
      await sweeper.stop();
      // Fills run independently of clients: let them land before the index closes; discard the late ones.
      await mirror.fills.drain(closeOptions.fillGraceMs ?? FILL_DRAIN_MS, { discardLate: true });
      // After the fills: their leases are released as stored or failed, not left to lapse.
      await cluster.close();
      await peers?.close();
      await Promise.all(upstreams.flatMap((u) => u.registry.endpoints.map((e) => e.close())));
      // Last, so that what the fills, sweeps and endpoints reported is in the outbox for the next start.
      await notifier.stop();
      await cache.close();
      database.close();
      await store.close();
    })());
  return { cache, jobs: database.jobs, stats: database.stats, catalog: database.catalog, metrics, mirror, instanceId, tokens, warmups, sweeper, probes, readiness, scheduled: schedule.jobs, cluster, notifications: notifier, close };
}

/** Gauges that mirror live state are set just before each scrape. */
function collectLiveState(metrics: Metrics, parts: { cache: Cache; jobs: JobHistory; mirror: Mirror; sweeper: CacheSweeper; cacheDir: string }): void {
  const { cache, jobs, mirror, sweeper, cacheDir } = parts;
  metrics.diskUsage = () => {
    try {
      const fs = statfsSync(cacheDir);
      return { freeBytes: fs.bavail * fs.bsize, sizeBytes: fs.blocks * fs.bsize };
    } catch {
      return undefined; // out of reach for a moment: the gauges keep their last values
    }
  };
  const circuit = { closed: 0, 'half-open': 1, open: 2 } as const;
  metrics.onCollect(() => {
    for (const upstream of mirror.upstreams()) {
      for (const e of upstream.endpoints) {
        const labels = { upstream: upstream.registry, endpoint: e.url };
        metrics.circuitState.set(labels, circuit[e.circuit]);
        metrics.advance(metrics.manifestGets, labels, e.manifestGets);
        // Whose budget, without naming the account: user names do not belong in scraped labels.
        const credential = e.credential === 'anonymous' ? 'anonymous' : 'configured';
        if (e.rateLimit?.remaining !== undefined) metrics.rateLimitRemaining.set({ ...labels, credential }, e.rateLimit.remaining);
        if (e.rateLimit?.limit !== undefined) metrics.rateLimitLimit.set({ ...labels, credential }, e.rateLimit.limit);
      }
    }
    metrics.cacheBytes.set(cache.bytes);
    metrics.cacheBlobs.set(cache.blobs);
    metrics.cacheQuota.set(sweeper.policy.maxSize);
    metrics.advance(metrics.evictions, {}, sweeper.totals.removedBlobs);
    metrics.advance(metrics.evictedBytes, {}, sweeper.totals.removedBytes);
    const disk = metrics.diskUsage?.();
    if (disk) {
      metrics.diskFree.set(disk.freeBytes);
      metrics.diskSize.set(disk.sizeBytes);
    }
    const seen = new Set<string>();
    for (const run of jobs.list(200)) {
      if (seen.has(run.job) || run.finishedAt === null) continue;
      seen.add(run.job);
      metrics.warmupLastRun.set({ job: run.job }, run.finishedAt / 1000);
      metrics.warmupDuration.set({ job: run.job }, (run.finishedAt - run.startedAt) / 1000);
      metrics.warmupSuccess.set({ job: run.job }, run.status === 'succeeded' ? 1 : 0);
    }
  });
}

/** Builds the whole mirror from a validated config and starts listening. */
export async function startStevedore(config: Config, log: Logger, options: { clock?: Clock } = {}): Promise<Stevedore> {
  await mkdir(config.cache.dir, { recursive: true });
  const release = claimCacheDir(config.cache.dir, { pid: process.pid, url: '' });
  let core: Core;
  try {
    core = await buildCore(config, log, { owner: true, background: true, clock: options.clock });
  } catch (err) {
    release();
    throw err;
  }
  const servers: Server[] = [];
  const stopEarly = async (err: unknown): Promise<never> => {
    for (const server of servers) server.close();
    await core.close();
    release();
    throw err;
  };
  const tls = config.tls.cert ? { cert: config.tls.cert, key: config.tls.key } : undefined;
  const connectionLimits = { maxConnections: config.limits.maxConnections, maxConnectionsPerClient: config.limits.maxConnectionsPerClient, sendTimeoutMs: config.limits.sendTimeout };
  const onStalled = (client: string, queuedBytes: number): void => log.warn({ client, queuedBytes, sendTimeoutMs: config.limits.sendTimeout }, 'client read nothing for sendTimeout: connection closed');
  const guard = new ConnectionGuard(connectionLimits, onStalled);
  let verifier: HtpasswdVerifier | undefined;
  // Reopened on SIGHUP (reload), so that logrotate can move the file away.
  const auditLog = config.auditLog ? createReopenableLogger('info', config.auditLog) : undefined;
  let plain: Server | undefined;
  let admin: Server | undefined;
  try {
    verifier = config.auth.htpasswd ? new HtpasswdVerifier(config.auth.htpasswd, { maxFailures: config.auth.maxFailedLogins, failureWindowMs: config.auth.failedLoginWindow }) : undefined;
    const audit = auditLog?.log;
    const auth = verifier ? { verifier, realm: config.auth.realm, access: config.auth.access } : undefined;
    const offload = config.offload.header ? config.offload : undefined;
    const appDeps = { core, log, adminToken: config.admin.token, adminHosts: config.admin.hosts, audit, auth, offload, redirect: config.storage.driver === 's3' && config.storage.s3.redirect, metricsAuth: config.metrics.auth, trustProxy: config.trustProxy };
    const app = createApp({ ...appDeps, serves: config.admin.listen ? 'public' : 'all' });
    servers.push(createServer(app, config.limits, guard, tls));
    if (tls && config.tls.plainListen) servers.push((plain = createServer(app, config.limits, guard)));
    await listen(servers[0]!, parseListen(config.listen));
    if (plain) await listen(plain, parseListen(config.tls.plainListen));
    if (config.admin.listen) {
      // Plain HTTP, with connection limits of its own: a public port at its limit leaves health checks and scrapes their way in.
      servers.push((admin = createServer(createApp({ ...appDeps, serves: 'admin' }), config.limits, new ConnectionGuard(connectionLimits, onStalled))));
      await listen(admin, parseListen(config.admin.listen));
    }
  } catch (err) {
    return stopEarly(err);
  }
  const server = servers[0]!;
  const url = localUrl(config.listen, tls ? 'https' : 'http', boundPort(server));
  const plainUrl = plain ? localUrl(config.tls.plainListen, 'http', boundPort(plain)) : undefined;
  const adminUrl = admin ? localUrl(config.admin.listen, 'http', boundPort(admin)) : undefined;
  core.notifications.setSource({ addr: `${hostname()}:${boundPort(server)}`, instanceID: core.instanceId });
  // The CLI talks to the admin API over plain HTTP when it can: a certificate rarely names 127.0.0.1.
  announceServer(config.cache.dir, { pid: process.pid, url: adminUrl ?? plainUrl ?? url });
  log.info(
    { url, plainUrl, adminUrl, trustProxy: config.trustProxy, tls: tls !== undefined, clientAuth: verifier ? { users: verifier.size } : false, instanceId: core.instanceId, cacheDir: config.cache.dir, upstreams: config.upstreams.map((u) => u.registry) },
    'stevedore listening',
  );

  const reload = (): void => {
    if (auditLog) {
      auditLog.reopen();
      log.info({ auditLog: config.auditLog }, 'audit log reopened');
    }
    if (verifier) {
      try {
        verifier.reload();
        log.info({ users: verifier.size }, 'htpasswd file reloaded');
      } catch (err) {
        log.error({ err: (err as Error).message }, 'htpasswd file not reloaded; the previous users stay in force');
      }
    }
    if (tls) {
      try {
        reloadTls(server, tls);
        log.info({ cert: tls.cert }, 'TLS certificate reloaded');
      } catch (err) {
        log.error({ err: (err as Error).message }, 'TLS certificate not reloaded; the previous one stays in force');
      }
    }
  };

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      const started = Date.now();
      // Stop accepting; idle keep-alive connections close now, busy ones after their response.
      const closed = Promise.all(
        servers.map(
          (s) =>
            new Promise<void>((resolve) => {
              s.close(() => resolve());
              s.closeIdleConnections();
            }),
        ),
      );
      // Connections that finish their response later go idle: close them as they do.
      const sweepIdle = setInterval(() => servers.forEach((s) => s.closeIdleConnections()), 250);
      const grace = setTimeout(() => {
        log.warn({ graceMs: config.limits.shutdownGrace }, 'shutdown grace period over: closing the remaining client connections');
        for (const s of servers) s.closeAllConnections();
      }, config.limits.shutdownGrace);
      await closed;
      clearTimeout(grace);
      clearInterval(sweepIdle);
      await core.close({ fillGraceMs: Math.max(1_000, config.limits.shutdownGrace - (Date.now() - started)) });
      await verifier?.close();
      release();
    })());
  return { ...core, server, servers, url, plainUrl, adminUrl, connections: guard, reload, close };
}
