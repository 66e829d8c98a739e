import type { Config } from '../config/schema.js';
import { CacheDatabase } from '../cache/database.js';
import type { JobRun } from '../cache/job-history.js';
import type { SweepReport } from '../cache/eviction.js';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { localUrl } from '../http/server.js';
import { claimCacheDir, runningServer } from '../cache/server-lock.js';
import { verifyCache } from '../cache/verify.js';
import type { WarmupProgress } from '../jobs/warmup.js';
import { createLogger } from '../log.js';
import { verifyDamaged } from '../notify/mirror-events.js';
import { cacheModes } from '../storage/fs-store.js';
import { buildCore, instanceIdFor, openCache, openNotifier } from '../stevedore.js';
import { AdminClient } from './admin-client.js';
import { formatBytes, formatTime } from './format.js';
import { createProgress } from './progress.js';

const out = (line: string): void => void process.stdout.write(`${line}\n`);
const POLL_MS = 500;
const MAX_POLLS = 2 * 60 * 60 * 2; // two hours of polling at most

/** The running server's admin API, when one owns this cache directory. */
function serverFor(config: Config): AdminClient | undefined {
  const server = runningServer(config.cache.dir);
  return server ? new AdminClient(server.url, config.admin.token) : undefined;
}

/** Opens the cache as its owner (no server runs), holding the directory's claim meanwhile. */
async function withCore<T>(config: Config, work: (core: Awaited<ReturnType<typeof buildCore>>) => Promise<T>): Promise<T> {
  await mkdir(config.cache.dir, { recursive: true });
  const release = claimCacheDir(config.cache.dir, { pid: process.pid, url: '' });
  try {
    const core = await buildCore(config, createLogger('warn', process.stderr), { owner: true, background: false });
    try {
      return await work(core);
    } finally {
      await core.close();
    }
  } finally {
    release();
  }
}

export async function warmCommand(config: Config, images: string[], options: { platform?: string[]; pin?: boolean; name?: string }): Promise<number> {
  const platforms: 'all' | string[] = options.platform?.length ? options.platform : 'all';
  const request = { images, platforms, pin: options.pin === true, name: options.name ?? 'on-demand' };
  const progress = createProgress('warm-up');
  const server = serverFor(config);
  let run: WarmupProgress | JobRun | undefined;
  if (server) {
    const { id } = await server.call<{ id: number }>('POST', '/api/warm', request);
    for (let i = 0; i < MAX_POLLS; i++) {
      run = await server.call<WarmupProgress>('GET', `/api/jobs/${id}`);
      if ('blobsTotal' in run) progress.update(run);
      if (run.status !== 'running') break;
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  } else {
    run = await withCore(config, async (core) => {
      const started = core.warmups.start({ ...request, concurrency: 4, trigger: 'cli' });
      const timer = setInterval(() => {
        const live = core.warmups.progress(started.id);
        if (live && 'blobsTotal' in live) progress.update(live);
      }, POLL_MS);
      try {
        const done = await started.done;
        progress.update(done);
        return done;
      } finally {
        clearInterval(timer);
      }
    });
  }
  progress.stop();
  if (!run) return 1;
  out(`${run.status}: ${run.images} images, ${run.manifests} manifests, ${run.blobsFetched} blobs fetched (${formatBytes(run.bytes)}), ${run.blobsSkipped} already cached`);
  for (const error of run.errors) out(`  error: ${error}`);
  if (run.message) out(`  ${run.message}`);
  return run.status === 'succeeded' ? 0 : 1;
}

export async function gcCommand(config: Config, options: { dryRun?: boolean }): Promise<number> {
  const dryRun = options.dryRun === true;
  const server = serverFor(config);
  const report = server
    ? await server.call<SweepReport>('POST', '/api/gc', { dryRun })
    : await withCore(config, (core) => core.sweeper.run({ dryRun }));
  for (const item of report.removed) out(`${dryRun ? 'would remove' : 'removed'} ${item.digest} ${formatBytes(item.size)} (${item.reason})`);
  out(`${dryRun ? 'would free' : 'freed'} ${formatBytes(report.bytes)} in ${report.removed.length} blobs; cache ${formatBytes(report.cacheBytes)}${report.skippedInUse ? `; ${report.skippedInUse} in use, kept` : ''}`);
  return 0;
}

export async function verifyCommand(config: Config, options: { repair?: boolean }): Promise<number> {
  const { database, store, cache } = await openCache(config, { owner: false });
  try {
    const report = await verifyCache(cache, { repair: options.repair === true });
    for (const item of report.damaged) out(`damaged ${item.digest}: ${item.reason}${options.repair ? ' (removed)' : ''}`);
    if (report.damaged.length > 0) {
      // Into the outbox: the server (or the next one to start) delivers them.
      const notifier = openNotifier(config, instanceIdFor(config), createLogger('warn', process.stderr), { deliver: false, fileMode: cacheModes(config.cache.groupReadable).file });
      for (const item of report.damaged) notifier.record(verifyDamaged(item.digest, item.reason, { source: 'verify', removed: options.repair === true }));
      await notifier.stop();
    }
    out(`checked ${report.checked} blobs (${formatBytes(report.bytes)}): ${report.damaged.length} damaged${options.repair ? `, ${report.repaired} removed` : ''}`);
    return report.damaged.length > 0 && !options.repair ? 1 : 0;
  } finally {
    await cache.close();
    database.close();
    await store.close();
  }
}

export async function jobsCommand(config: Config, options: { limit?: string; json?: boolean }): Promise<number> {
  await mkdir(config.cache.dir, { recursive: true });
  const database = new CacheDatabase(join(config.cache.dir, 'index.db'));
  try {
    const runs = database.jobs.list(Number(options.limit ?? 20));
    if (options.json) {
      for (const r of runs) out(JSON.stringify(r));
      return 0;
    }
    out(['ID', 'JOB', 'TRIGGER', 'STARTED', 'STATUS', 'IMAGES', 'FETCHED', 'CACHED', 'BYTES', 'ERRORS'].join('\t'));
    for (const r of runs) {
      out([r.id, r.job, r.trigger, formatTime(r.startedAt), r.status, r.images, r.blobsFetched, r.blobsSkipped, formatBytes(r.bytes), r.errors.length].join('\t'));
    }
    return 0;
  } finally {
    database.close();
  }
}

/**
 * Asks the server this config describes for /healthz, as a container
 * HEALTHCHECK does: on admin.listen when set (the only listener serving it
 * then), else over plainListen when TLS has one, else on `listen` (a
 * wildcard address is reached on loopback). 0 when it answers 200.
 */
export async function healthCommand(config: Config, options: { timeoutMs?: number } = {}): Promise<number> {
  const base = config.admin.listen
    ? localUrl(config.admin.listen, 'http')
    : config.tls.cert
      ? config.tls.plainListen
        ? localUrl(config.tls.plainListen, 'http')
        : localUrl(config.listen, 'https')
      : localUrl(config.listen, 'http');
  // The check is of this machine's own server, whose certificate rarely names its loopback address.
  const dispatcher = new Agent({ connect: { rejectUnauthorized: false } });
  try {
    const res = await request(`${base}/healthz`, { dispatcher, signal: AbortSignal.timeout(options.timeoutMs ?? 5_000) });
    const text = await res.body.text();
    if (res.statusCode === 200) {
      out(`ok: ${base}/healthz`);
      return 0;
    }
    process.stderr.write(`stevedore: ${base}/healthz answered ${res.statusCode}: ${text.slice(0, 300)}\n`);
    return 1;
  } catch (err) {
    process.stderr.write(`stevedore: ${base}/healthz: ${(err as Error).message}\n`);
    return 1;
  } finally {
    await dispatcher.close();
  }
}
