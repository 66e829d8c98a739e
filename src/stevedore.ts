import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { join } from 'node:path';
import { Cache } from './cache/cache.js';
import type { Config } from './config/schema.js';
import { createApp } from './http/app.js';
import { boundPort, listen, parseListen } from './http/server.js';
import { startHealthProbes } from './jobs/health-probes.js';
import type { Logger } from './log.js';
import { Mirror } from './mirror/mirror.js';
import { UpstreamResolver, type UpstreamEntry } from './mirror/resolve.js';
import { EndpointClient } from './upstream/endpoint-client.js';
import { TokenCache } from './upstream/token-cache.js';
import { UpstreamRegistry } from './upstream/upstream-registry.js';

const FILL_DRAIN_MS = 20_000;

export interface Stevedore {
  server: Server;
  mirror: Mirror;
  /** Base URL, for example http://127.0.0.1:5000 */
  url: string;
  instanceId: string;
  tokens: TokenCache;
  probes: { runOnce(): Promise<void> };
  close(): Promise<void>;
}

function buildUpstreams(config: Config, tokens: TokenCache, log: Logger): UpstreamEntry[] {
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

/** Builds the whole mirror from a validated config and starts listening. */
export async function startStevedore(config: Config, log: Logger): Promise<Stevedore> {
  const cache = await Cache.open({ dir: config.cache.dir, accessFlushIntervalMs: config.cache.accessFlushInterval });
  if (cache.sweptTempFiles > 0) log.warn({ files: cache.sweptTempFiles }, 'removed temp files left by an earlier crash');
  const instanceId = instanceIdFor(config);
  const tokens = new TokenCache();
  const upstreams = buildUpstreams(config, tokens, log);
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
  );
  const probes = startHealthProbes(resolver.registries(), { intervalMs: config.health.probeInterval, timeoutMs: config.health.probeTimeout }, log);
  const app = createApp({ mirror, log, instanceId });
  const server = await listen(app, parseListen(config.listen));
  const host = parseListen(config.listen).host;
  const url = `http://${host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host}:${boundPort(server)}`;
  log.info({ url, instanceId, cacheDir: config.cache.dir, upstreams: config.upstreams.map((u) => u.registry) }, 'stevedore listening');

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      probes.stop();
      const closed = new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      });
      // Fills run independently of clients: let them land before the index closes.
      await mirror.fills.drain(FILL_DRAIN_MS);
      await closed;
      await Promise.all(upstreams.flatMap((u) => u.registry.endpoints.map((e) => e.close())));
      cache.close();
    })());
  return { server, mirror, url, instanceId, tokens, probes, close };
}
