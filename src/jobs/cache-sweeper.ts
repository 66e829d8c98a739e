import type { Cache } from '../cache/cache.js';
import { sweep, type EvictionPolicy, type SweepReport } from '../cache/eviction.js';
import type { Logger } from '../log.js';

/**
 * Runs eviction and GC every interval, and promptly whenever the cache grows
 * past its quota. One sweep at a time; a request during a sweep runs once after it.
 */
export class CacheSweeper {
  private running: Promise<SweepReport> | undefined;
  private again = false;
  private readonly timer: NodeJS.Timeout;
  totals = { sweeps: 0, removedBlobs: 0, removedBytes: 0 };

  constructor(
    private readonly cache: Cache,
    readonly policy: EvictionPolicy,
    intervalMs: number,
    private readonly log: Logger,
  ) {
    this.timer = setInterval(() => void this.run().catch(() => undefined), Math.max(1000, intervalMs));
    this.timer.unref();
    cache.onGrow = () => {
      if (policy.maxSize > 0 && cache.bytes > policy.maxSize) void this.run().catch(() => undefined);
    };
  }

  /** Sweeps now (or joins the sweep under way); a dry run only reports. */
  run(options: { dryRun?: boolean } = {}): Promise<SweepReport> {
    if (options.dryRun) return sweep(this.cache, this.policy, { dryRun: true });
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      try {
        const report = await sweep(this.cache, this.policy);
        this.totals.sweeps += 1;
        this.totals.removedBlobs += report.removed.length;
        this.totals.removedBytes += report.bytes;
        if (report.removed.length > 0) {
          this.log.info({ removed: report.removed.length, bytes: report.bytes, cacheBytes: report.cacheBytes, skippedInUse: report.skippedInUse }, 'cache sweep removed blobs');
        }
        return report;
      } catch (err) {
        this.log.error({ err }, 'cache sweep failed');
        throw err;
      } finally {
        this.running = undefined;
        if (this.again) {
          this.again = false;
          void this.run().catch(() => undefined);
        }
      }
    })();
    return this.running;
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.cache.onGrow = undefined;
    await this.running?.catch(() => undefined);
  }
}
