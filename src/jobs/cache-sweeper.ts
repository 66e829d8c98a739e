import type { Cache } from '../cache/cache.js';
import { freeSpaceFloor, sweep, type EvictionPolicy, type SweepReport } from '../cache/eviction.js';
import type { Logger } from '../log.js';

/**
 * Runs eviction and GC every interval, and promptly whenever the cache grows
 * past its quota or its disk's free space falls under the floor. One sweep at a time.
 */
export class CacheSweeper {
  private running: Promise<SweepReport> | undefined;
  /** The sweep asked for while one runs. */
  private next: Promise<SweepReport> | undefined;
  /** Room asked for by the callers of the next sweep. */
  private needFreeBytes = 0;
  private readonly timer: NodeJS.Timeout;
  totals = { sweeps: 0, removedBlobs: 0, removedBytes: 0 };
  /** Told after every sweep (not a dry run) that removed blobs; a listener never throws. */
  onSwept: ((report: SweepReport) => void) | undefined;

  constructor(
    private readonly cache: Cache,
    readonly policy: EvictionPolicy,
    intervalMs: number,
    private readonly log: Logger,
    /** Whether this replica runs the housekeeping; the others leave eviction and GC to it. */
    private readonly leading: () => boolean = () => true,
  ) {
    this.timer = setInterval(() => {
      if (this.leading()) void this.run().catch(() => undefined);
    }, Math.max(1000, intervalMs));
    this.timer.unref();
    cache.onGrow = () => {
      if (!this.leading()) return;
      if (policy.maxSize > 0 && cache.bytes > policy.maxSize) void this.run().catch(() => undefined);
      else void this.checkSpace();
    };
  }

  private spaceCheck: Promise<void> | undefined;

  /** After growth: sweep when the disk's free space fell under the floor (one statfs at a time). */
  private checkSpace(): Promise<void> {
    this.spaceCheck ??= (async () => {
      const space = await this.cache.diskSpace();
      if (space && space.free < freeSpaceFloor(this.policy.minFree, space.total)) await this.run().catch(() => undefined);
    })().finally(() => {
      this.spaceCheck = undefined;
    });
    return this.spaceCheck;
  }

  /**
   * Sweeps now; a dry run only reports. Called while a sweep runs, it returns
   * the next sweep, which starts once that one ends, so every caller gets a
   * sweep that saw its need. `needFreeBytes`: make at least this much room on
   * the disk (a write just failed for lack of it), floor or no floor.
   */
  run(options: { dryRun?: boolean; needFreeBytes?: number } = {}): Promise<SweepReport> {
    if (options.dryRun) return sweep(this.cache, this.policy, { dryRun: true });
    this.needFreeBytes = Math.max(this.needFreeBytes, options.needFreeBytes ?? 0);
    if (this.running) {
      this.next ??= this.running
        .catch(() => undefined)
        .then(() => {
          this.next = undefined;
          return this.run();
        });
      return this.next;
    }
    const needFreeBytes = this.needFreeBytes;
    this.needFreeBytes = 0;
    this.running = (async () => {
      try {
        const report = await sweep(this.cache, this.policy, { needFreeBytes });
        this.totals.sweeps += 1;
        this.totals.removedBlobs += report.removed.length;
        this.totals.removedBytes += report.bytes;
        if (report.removed.length > 0) {
          const reasons: Record<string, number> = {};
          for (const r of report.removed) reasons[r.reason] = (reasons[r.reason] ?? 0) + 1;
          this.log.info({ removed: report.removed.length, reasons, bytes: report.bytes, cacheBytes: report.cacheBytes, freeBytes: report.freeBytes, skippedInUse: report.skippedInUse }, 'cache sweep removed blobs');
          this.onSwept?.(report);
        }
        return report;
      } catch (err) {
        this.log.error({ err }, 'cache sweep failed');
        throw err;
      } finally {
        this.running = undefined;
      }
    })();
    return this.running;
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.cache.onGrow = undefined;
    await this.running?.catch(() => undefined);
    await this.next?.catch(() => undefined);
  }
}
