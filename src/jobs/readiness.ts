import { randomBytes } from 'node:crypto';
import { unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Cache } from '../cache/cache.js';
import { freeSpaceFloor, type MinFreeSpace } from '../cache/eviction.js';
import { SingleFlight } from '../mirror/single-flight.js';

export type ReadinessCheckName = 'index' | 'cacheDir' | 'store' | 'freeSpace' | 'upstreams';

export interface CheckResult {
  ok: boolean;
  /** What failed, or what is worth knowing about a pass (an upstream down, a check not applicable). */
  detail?: string;
}

export interface ReadinessReport {
  status: 'ready' | 'not ready';
  /** The checks that failed, by name; empty when ready. */
  failing: ReadinessCheckName[];
  checks: Partial<Record<ReadinessCheckName, CheckResult>>;
}

export interface ReadinessOptions {
  /** A trivial query on the index; throws when the index cannot answer. */
  queryIndex(): void;
  /** Where a probe file is created and removed: where fills write their temp files. */
  probeDir: string;
  cache: Pick<Cache, 'blobs' | 'diskSpace'>;
  /** The free-space floor eviction keeps on the cache's disk (cache.minFreeSpace). */
  minFree: MinFreeSpace;
  /** A cheap check of a remote store (a HEAD of the bucket); none for a local disk. */
  checkStore?: () => Promise<void>;
  /** The upstreams' endpoints and their circuits (Mirror.upstreams()). */
  mirror: { upstreams(): { registry: string; endpoints: { url: string; circuit: 'closed' | 'open' | 'half-open' }[] }[] };
  /** How long a probe's answer (cacheDir, store) is reused, so frequent probes stay cheap. */
  probeCacheMs?: number;
  /** A probe that takes longer fails. */
  probeTimeoutMs?: number;
  now?: () => number;
}

const PROBE_CACHE_MS = 5_000;
// Under the 3 s a Kubernetes probe of docs/deploy waits: a slow disk or bucket is told as such, not as a probe timeout.
const PROBE_TIMEOUT_MS = 2_000;

/**
 * Readiness, as a load balancer or Kubernetes asks for it (GET /readyz):
 * whether this instance can serve pulls now, not merely answer (that is
 * liveness, /healthz). The index answers a query, a file can be created where
 * fills write, the store answers (a bucket), its disk has the free space
 * eviction keeps, and not every upstream endpoint is down while the cache holds
 * nothing to serve.
 */
export class Readiness {
  private readonly probes = new SingleFlight<CheckResult>();
  private readonly remembered = new Map<string, { result: CheckResult; until: number }>();
  private readonly now: () => number;

  constructor(private readonly options: ReadinessOptions) {
    this.now = options.now ?? Date.now;
  }

  async check(): Promise<ReadinessReport> {
    const { checkStore } = this.options;
    // Started together; the slow ones (a probe file, the bucket) are remembered for a few seconds.
    const running = new Map<ReadinessCheckName, Promise<CheckResult>>([
      ['index', this.index()],
      ['cacheDir', this.cached('cacheDir', () => this.probeDir())],
    ]);
    if (checkStore) running.set('store', this.cached('store', () => this.probeStore(checkStore)));
    running.set('freeSpace', this.freeSpace());
    running.set('upstreams', Promise.resolve(this.upstreams()));
    const checks: Partial<Record<ReadinessCheckName, CheckResult>> = {};
    const failing: ReadinessCheckName[] = [];
    for (const [name, result] of running) {
      const checked = (checks[name] = await result);
      if (!checked.ok) failing.push(name);
    }
    return { status: failing.length === 0 ? 'ready' : 'not ready', failing, checks };
  }

  private async index(): Promise<CheckResult> {
    try {
      this.options.queryIndex();
      return { ok: true };
    } catch (err) {
      return { ok: false, detail: `the index does not answer: ${message(err)}` };
    }
  }

  /** A probe's answer, reused for a few seconds; concurrent asks share one probe. */
  private cached(name: string, probe: () => Promise<CheckResult>): Promise<CheckResult> {
    const hit = this.remembered.get(name);
    if (hit && this.now() < hit.until) return Promise.resolve(hit.result);
    return this.probes.run(name, async () => {
      const result = await withTimeout(probe(), this.options.probeTimeoutMs ?? PROBE_TIMEOUT_MS).catch((err: unknown): CheckResult => ({ ok: false, detail: message(err) }));
      this.remembered.set(name, { result, until: this.now() + (this.options.probeCacheMs ?? PROBE_CACHE_MS) });
      return result;
    }).promise;
  }

  private async probeDir(): Promise<CheckResult> {
    const path = join(this.options.probeDir, `.readyz-${randomBytes(6).toString('hex')}`);
    try {
      await writeFile(path, 'ok', { flag: 'wx', mode: 0o600 });
      await unlink(path);
      return { ok: true };
    } catch (err) {
      return { ok: false, detail: `cannot create and remove a file in ${this.options.probeDir}: ${message(err)}` };
    }
  }

  private async probeStore(checkStore: () => Promise<void>): Promise<CheckResult> {
    try {
      await checkStore();
      return { ok: true };
    } catch (err) {
      return { ok: false, detail: message(err) };
    }
  }

  private async freeSpace(): Promise<CheckResult> {
    const space = await this.options.cache.diskSpace();
    if (!space) return { ok: true, detail: 'not checked: the store has no local disk to measure' };
    const floor = freeSpaceFloor(this.options.minFree, space.total);
    if (space.free >= floor) return { ok: true };
    return { ok: false, detail: `${space.free} bytes free on the cache's disk, under the cache.minFreeSpace floor of ${floor} bytes` };
  }

  private upstreams(): CheckResult {
    const endpoints = this.options.mirror.upstreams().flatMap((u) => u.endpoints.map((e) => ({ registry: u.registry, url: e.url, down: e.circuit !== 'closed' })));
    const down = endpoints.filter((e) => e.down);
    if (down.length === 0) return { ok: true };
    const list = down.map((e) => `${e.registry} ${e.url}`).join(', ');
    if (down.length < endpoints.length) return { ok: true, detail: `circuit open: ${list}` };
    const blobs = this.options.cache.blobs;
    if (blobs > 0) return { ok: true, detail: `every upstream endpoint's circuit is open (${list}): serving the ${blobs} cached blobs` };
    return { ok: false, detail: `every upstream endpoint's circuit is open (${list}) and the cache holds nothing to serve` };
  }
}

const message = (err: unknown): string => (err instanceof Error ? err.message : String(err));

function withTimeout<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}
