import { pipeline } from 'node:stream/promises';
import type { BlobFill } from '../cache/blob-fill.js';
import type { Cache } from '../cache/cache.js';
import type { Digest } from '../oci/digest.js';
import type { Logger } from '../log.js';
import type { Target } from './resolve.js';
import { discard } from '../upstream/upstream-registry.js';

/**
 * At most one upstream fetch per digest, process-wide. The fill runs at
 * upstream speed into the cache; every client, the first one included, reads
 * the growing file, so no client can slow or cancel it.
 */
export class BlobFills {
  private readonly active = new Map<string, Promise<BlobFill>>();

  constructor(
    private readonly cache: Cache,
    private readonly log: Logger,
  ) {}

  current(digest: Digest): Promise<BlobFill> | undefined {
    return this.active.get(digest.value);
  }

  get inProgress(): number {
    return this.active.size;
  }

  /** Waits for running fills to finish (or fail), up to `timeoutMs`; for shutdown. */
  async drain(timeoutMs: number): Promise<void> {
    const running = [...this.active.values()].map((p) => p.then((fill) => fill.settled()));
    if (running.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    });
    await Promise.race([Promise.allSettled(running), deadline]);
    clearTimeout(timer);
  }

  /** Joins the fill of `digest`, starting it from `source` if none runs. */
  join(digest: Digest, source: Target): { fill: Promise<BlobFill>; shared: boolean } {
    const existing = this.active.get(digest.value);
    if (existing) return { fill: existing, shared: true };
    const done = (): void => this.forget(digest, fill);
    const fill = this.start(digest, source, done);
    this.active.set(digest.value, fill);
    fill.catch(done);
    return { fill, shared: false };
  }

  private async start(digest: Digest, source: Target, done: () => void): Promise<BlobFill> {
    const upstream = await source.upstream.openBlob(source.repo, digest.value);
    let fill: BlobFill;
    try {
      fill = await this.cache.beginFill(digest, upstream.size);
    } catch (err) {
      discard(upstream.body);
      throw err;
    }
    const started = Date.now();
    pipeline(upstream.body, fill.writable())
      .then(() => this.cache.commitFill(fill, { upstream: source.registry, repo: source.repo }))
      .then(
        () => this.log.info({ digest: digest.value, upstream: source.registry, repo: source.repo, bytes: fill.written, ms: Date.now() - started, endpoint: upstream.endpoint }, 'blob cached'),
        async (err: Error) => {
          await fill.fail(err);
          this.log.warn({ digest: digest.value, upstream: source.registry, repo: source.repo, bytes: fill.written, err: err.message, endpoint: upstream.endpoint }, 'blob fill failed; nothing cached');
        },
      )
      .finally(done);
    return fill;
  }

  private forget(digest: Digest, fill: Promise<BlobFill>): void {
    if (this.active.get(digest.value) === fill) this.active.delete(digest.value);
  }
}
