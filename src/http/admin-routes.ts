import { createHash, timingSafeEqual } from 'node:crypto';
import type { Context, Next } from 'koa';
import Router from '@koa/router';
import { denied, RegistryError, unauthorized } from '../oci/errors.js';
import type { CacheSweeper } from '../jobs/cache-sweeper.js';
import type { ScheduledJob } from '../jobs/scheduler.js';
import type { WarmupRunner } from '../jobs/warmup.js';
import type { Metrics, StatsCounts } from '../metrics/metrics.js';
import type { Cluster } from '../cluster/cluster.js';
import type { Mirror } from '../mirror/mirror.js';
import type { NotificationsStatus } from '../notify/status.js';
import type { AdminHosts } from './admin-hosts.js';

/** What the admin API works with. */
export interface AdminDeps {
  /** The cache's size (structural: http does not depend on cache/). */
  cache: { bytes: number; blobs: number };
  /** Warm-up runs, per-minute statistics and cached images, kept beside the index. */
  jobs: { list(limit: number): unknown[] };
  stats: { totals(): StatsCounts; since(minute: number): (StatsCounts & { minute: number })[] };
  catalog: { list(limit: number): unknown[] };
  mirror: Pick<Mirror, 'upstreams'>;
  metrics: Metrics;
  warmups: WarmupRunner;
  sweeper: CacheSweeper;
  scheduled: ScheduledJob[];
  cluster: Pick<Cluster, 'mode' | 'self' | 'connected' | 'replicas'>;
  /** Each notification endpoint's state, for /api/notifications and the dashboard. */
  notifications: { status(): NotificationsStatus };
}

const DAY_MS = 24 * 60 * 60 * 1000;


const MAX_BODY = 64 * 1024;

const badRequest = (detail: string): RegistryError => new RegistryError(400, 'UNSUPPORTED', 'invalid request', detail);

/**
 * The admin API under /api/: warm-up runs, job history, GC. It needs the
 * configured token, or, when none is configured, a loopback client.
 */
export function adminRoutes(core: AdminDeps, token: string, hosts: AdminHosts): Router {
  const router = new Router({ prefix: '/api' });
  router.use(hosts.guard());
  router.use(guard(token));

  router.get('/stats', (ctx) => {
    const stored = core.stats.totals();
    const current = core.metrics.currentMinute();
    const totals = { ...stored };
    for (const key of Object.keys(totals) as (keyof typeof totals)[]) totals[key] += current.counts[key];
    const series = core.stats.since(Date.now() - DAY_MS);
    const last = series.at(-1);
    if (last?.minute === current.start) {
      for (const key of Object.keys(current.counts) as (keyof typeof current.counts)[]) last[key] += current.counts[key];
    } else if (Object.values(current.counts).some((v) => v > 0)) {
      series.push({ minute: current.start, ...current.counts });
    }
    const served = totals.hits + totals.coalesced + totals.stale;
    const hitRatio = served + totals.misses > 0 ? served / (served + totals.misses) : null;
    const errors = core.metrics.clientErrors(Date.now() - DAY_MS);
    const disk = core.metrics.diskUsage?.();
    ctx.body = {
      totals: { ...totals, hitRatio, cacheBytes: core.cache.bytes, blobs: core.cache.blobs, quotaBytes: core.sweeper.policy.maxSize, errors: errors.total },
      bucketSeconds: 60,
      series,
      // 5xx answered to registry clients per minute, since this process started (not stored).
      errorSeries: errors.series,
      instance: {
        id: core.metrics.instanceId,
        version: core.metrics.version,
        startedAt: core.metrics.startedAt,
        uptimeSeconds: Math.round((Date.now() - core.metrics.startedAt) / 1000),
        diskFreeBytes: disk?.freeBytes ?? null,
        diskSizeBytes: disk?.sizeBytes ?? null,
      },
    };
  });

  router.get('/upstreams', (ctx) => {
    ctx.body = {
      upstreams: core.mirror.upstreams().map((u) => ({
        registry: u.registry,
        fills: u.fills,
        endpoints: u.endpoints.map((e) => ({
          url: e.url,
          state: e.state,
          circuit: e.circuit,
          openUntil: e.openUntil ?? null,
          consecutiveFailures: e.consecutiveFailures,
          latencyMs: e.latencyMs ?? null,
          lastError: e.lastError ?? null,
          credential: e.credential,
          manifestGets: e.manifestGets,
          rateLimit: e.rateLimit
            ? { limit: e.rateLimit.limit ?? null, remaining: e.rateLimit.remaining ?? null, windowSeconds: e.rateLimit.windowSeconds ?? null, source: e.rateLimit.source ?? null, observedAt: e.rateLimit.observedAt }
            : null,
        })),
      })),
    };
  });

  router.get('/cluster', async (ctx) => {
    const { cluster } = core;
    ctx.body = { mode: cluster.mode, self: cluster.self, redisConnected: cluster.connected, replicas: await cluster.replicas() };
  });

  router.get('/notifications', (ctx) => {
    ctx.body = core.notifications.status();
  });

  router.get('/images', (ctx) => {
    const limit = Math.min(1000, Math.max(1, Number(ctx.query.limit) || 100));
    ctx.body = { images: core.catalog.list(limit) };
  });

  router.post('/warm', async (ctx) => {
    const body = await readJson(ctx, hosts);
    const configured = typeof body.job === 'string' ? core.scheduled.find((j) => j.config.name === body.job)?.config : undefined;
    if (typeof body.job === 'string' && !configured) throw badRequest(`no warm-up job named "${body.job}"`);
    const images = configured?.images ?? body.images;
    if (!Array.isArray(images) || images.length === 0 || !images.every((i): i is string => typeof i === 'string' && i.length > 0 && i.length < 512)) {
      throw badRequest('"images" must be a non-empty list of image references, or "job" a configured job name');
    }
    const platforms = configured?.platforms ?? body.platforms ?? 'all';
    if (platforms !== 'all' && !(Array.isArray(platforms) && platforms.every((p) => typeof p === 'string' && /^[a-z0-9]+\/[a-z0-9_]+(\/[a-z0-9]+)?$/.test(p)))) {
      throw badRequest('"platforms" must be "all" or a list such as ["linux/arm64"]');
    }
    const { id, done } = core.warmups.start({
      name: configured?.name ?? (typeof body.name === 'string' && /^[A-Za-z0-9._-]{1,64}$/.test(body.name) ? body.name : 'on-demand'),
      images,
      platforms: platforms as 'all' | string[],
      pin: configured?.pin ?? body.pin === true,
      concurrency: configured?.concurrency ?? 4,
      trigger: 'api',
    });
    done.catch(() => undefined); // the run records its own failure
    ctx.status = 202;
    ctx.body = { id, status: `/api/jobs/${id}` };
  });

  router.get('/jobs', (ctx) => {
    ctx.body = {
      configured: core.scheduled.map((j) => ({ ...j.config, nextRun: j.nextRun()?.toISOString() ?? null })),
      runs: core.jobs.list(100),
    };
  });

  router.get('/jobs/:id', (ctx) => {
    const id = Number(ctx.params.id);
    const run = Number.isInteger(id) ? core.warmups.progress(id) : undefined;
    if (!run) throw new RegistryError(404, 'NAME_UNKNOWN', 'no such job run', ctx.params.id);
    ctx.body = run;
  });

  router.post('/gc', async (ctx) => {
    const body = await readJson(ctx, hosts);
    ctx.body = await core.sweeper.run({ dryRun: body.dryRun === true });
  });

  return router;
}

/** 127.0.0.0/8, ::1, and IPv4-mapped loopback: the addresses only this machine can connect from. */
function isLoopbackAddress(address: string): boolean {
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
  return v4.startsWith('127.') || address === '::1';
}

/** Compares hashes, so the time taken says nothing about how much of the token matched. */
function sameSecret(given: string, expected: string): boolean {
  const digest = (text: string): Buffer => createHash('sha256').update(text).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

function guard(token: string) {
  const check = adminCheck(token);
  return async (ctx: Context, next: Next): Promise<void> => {
    check(ctx);
    await next();
  };
}

/** Throws unless the request carries the admin token, or, with none configured, comes from loopback. */
export function adminCheck(token: string): (ctx: Context) => void {
  return (ctx) => {
    if (token) {
      if (!sameSecret(ctx.get('Authorization'), `Bearer ${token}`)) {
        throw unauthorized('the admin API needs the configured admin token', { 'WWW-Authenticate': 'Bearer realm="stevedore-admin"' });
      }
    } else if (!isLoopbackAddress(ctx.req.socket.remoteAddress ?? '') || !isLoopbackAddress(ctx.ip)) {
      // Both the TCP peer and the client: behind a proxy on this machine every peer is loopback, so
      // with trustProxy the address the proxy forwarded must be loopback too (without it, ctx.ip is the peer).
      throw denied('the admin API is open to loopback clients only until admin.token is configured');
    }
  };
}

async function readJson(ctx: Context, hosts: AdminHosts): Promise<Record<string, unknown>> {
  // A JSON content type cannot be sent cross-site without a CORS preflight, which we never grant.
  if (!ctx.is('application/json')) throw new RegistryError(415, 'UNSUPPORTED', 'the admin API takes application/json', ctx.get('Content-Type') || 'no Content-Type');
  const origin = ctx.get('Origin');
  if (origin && !hosts.allowsOrigin(origin, ctx)) throw denied(`cross-origin request from ${origin.slice(0, 100)} refused`);
  let text = '';
  for await (const chunk of ctx.req) {
    text += String(chunk);
    if (text.length > MAX_BODY) throw new RegistryError(413, 'SIZE_INVALID', 'request body too large', `limit ${MAX_BODY} bytes`);
  }
  if (text.trim() === '') return {};
  try {
    const parsed: unknown = JSON.parse(text);
    if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) return parsed as Record<string, unknown>;
  } catch {
    // fall through
  }
  throw badRequest('the body must be a JSON object');
}
