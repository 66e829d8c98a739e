import type { JobHistory, JobRun } from '../cache/job-history.js';
import type { Logger } from '../log.js';
import type { Mirror, Target } from '../mirror/mirror.js';
import { imageBlobs, indexChildren, parseImageReference, platformMatches } from '../oci/manifest.js';
import { MANIFEST_MEDIA_TYPES } from '../oci/media-types.js';
import { describe } from '../upstream/upstream-registry.js';
import { Semaphore } from '../upstream/semaphore.js';

/** Every manifest type, sorted as parsed Accept headers are, so the tag cache key is stable. */
const ACCEPT_ALL = [...MANIFEST_MEDIA_TYPES].sort();

export interface WarmupRequest {
  /** A configured job's name, or an ad-hoc name for on-demand runs. */
  name: string;
  images: readonly string[];
  platforms: 'all' | readonly string[];
  pin: boolean;
  concurrency: number;
  trigger: 'schedule' | 'api' | 'cli';
}

/** A run as it goes: the stored record plus totals known once manifests are resolved. */
export interface WarmupProgress extends JobRun {
  blobsTotal: number;
  bytesTotal: number;
  bytesDone: number;
}

/** A finished run, as its listener is told. */
export interface WarmupSummary {
  job: string;
  trigger: string;
  /** stopped: the pull budget ran low before every image was warmed. */
  status: 'succeeded' | 'failed' | 'stopped';
  images: number;
  blobsFetched: number;
  blobsSkipped: number;
  bytes: number;
  ms: number;
  errors: number;
  firstError?: string;
}

/**
 * Warm-up: resolve each image (a tag costs at most a HEAD when unchanged),
 * then cache the manifests and blobs of the chosen platforms through the same
 * single-flight fill path as client pulls. Stops when the pull budget runs low.
 */
export class WarmupRunner {
  private readonly live = new Map<number, WarmupProgress>();
  private readonly byJob = new Map<string, Promise<WarmupProgress>>();
  /** Told once per finished run; a listener never throws. */
  onFinished: ((summary: WarmupSummary) => void) | undefined;

  constructor(
    private readonly mirror: Mirror,
    private readonly jobs: JobHistory,
    private readonly instanceId: string,
    private readonly log: Logger,
  ) {}

  /** Starts a run; a job already running is joined instead of started twice. */
  start(request: WarmupRequest): { id: number; done: Promise<WarmupProgress> } {
    const running = [...this.live.values()].find((p) => p.job === request.name && p.status === 'running');
    if (running) return { id: running.id, done: this.byJob.get(request.name)! };
    const id = this.jobs.start(request.name, request.trigger);
    const progress: WarmupProgress = {
      ...this.jobs.get(id)!,
      blobsTotal: 0,
      bytesTotal: 0,
      bytesDone: 0,
    };
    this.live.set(id, progress);
    const done = this.run(request, progress).finally(() => {
      this.byJob.delete(request.name);
      setTimeout(() => this.live.delete(id), 60_000).unref();
    });
    this.byJob.set(request.name, done);
    return { id, done };
  }

  /** A run's live progress, or its stored record once it is over. */
  progress(id: number): WarmupProgress | JobRun | undefined {
    return this.live.get(id) ?? this.jobs.get(id);
  }

  async idle(): Promise<void> {
    await Promise.allSettled([...this.byJob.values()]);
  }

  private async run(request: WarmupRequest, progress: WarmupProgress): Promise<WarmupProgress> {
    const pinned = new Set<string>();
    const slots = new Semaphore(request.concurrency);
    this.log.info({ job: request.name, trigger: request.trigger, images: request.images.length }, 'warm-up started');
    try {
      for (const image of request.images) {
        const target = this.mirror.resolve(parseImageReference(image).name, undefined, [this.instanceId]);
        if (target.upstream.budgetLow()) {
          progress.status = 'stopped';
          progress.message = `stopped before ${image}: the pull budget of ${target.registry} is low`;
          this.log.warn({ job: request.name, upstream: target.registry }, progress.message);
          break;
        }
        try {
          await this.warmImage(image, target, request, progress, slots, pinned);
          progress.images += 1;
        } catch (err) {
          progress.errors.push(`${image}: ${describe(err)}`);
        }
        this.jobs.update(progress);
      }
      if (progress.status === 'running') progress.status = progress.errors.length > 0 ? 'failed' : 'succeeded';
      if (request.pin && progress.status === 'succeeded') this.jobs.replacePins(request.name, pinned);
    } catch (err) {
      progress.status = 'failed';
      progress.errors.push(describe(err));
    }
    progress.finishedAt = Date.now();
    this.jobs.update(progress);
    const summary = { job: request.name, status: progress.status, images: progress.images, blobsFetched: progress.blobsFetched, blobsSkipped: progress.blobsSkipped, bytes: progress.bytes, ms: progress.finishedAt - progress.startedAt, errors: progress.errors.length };
    // A failed run is a warning, with why (the first few errors; all of them are in the job history).
    if (progress.status === 'failed') this.log.warn({ ...summary, firstErrors: progress.errors.slice(0, 5) }, 'warm-up failed');
    else this.log.info(summary, 'warm-up finished');
    this.onFinished?.({ ...summary, status: progress.status, trigger: request.trigger, ...(progress.errors.length > 0 ? { firstError: progress.errors[0] } : {}) });
    return progress;
  }

  private async warmImage(image: string, target: Target, request: WarmupRequest, progress: WarmupProgress, slots: Semaphore, pinned: Set<string>): Promise<void> {
    const { reference } = parseImageReference(image);
    const top = await this.mirror.manifest(target, reference, ACCEPT_ALL, false);
    progress.manifests += 1;
    pinned.add(top.digest);
    const children = indexChildren(top.bytes!);
    const images: Buffer[] = [];
    if (children) {
      const wanted = children.filter((c) => request.platforms === 'all' || platformMatches(c.platform, request.platforms));
      if (wanted.length === 0) throw new Error(`no manifest for ${String(request.platforms)} in ${image}`);
      for (const child of wanted) {
        const manifest = await this.mirror.manifest(target, child.digest, ACCEPT_ALL, false);
        progress.manifests += 1;
        pinned.add(manifest.digest);
        images.push(manifest.bytes!);
      }
    } else {
      images.push(top.bytes!);
    }
    const blobs = new Map<string, number>();
    for (const bytes of images) for (const blob of imageBlobs(bytes)) blobs.set(blob.digest, blob.size);
    progress.blobsTotal += blobs.size;
    for (const size of blobs.values()) progress.bytesTotal += size;
    await Promise.all(
      [...blobs].map(async ([digest, size]) => {
        const release = await slots.acquire();
        try {
          const result = await this.mirror.prefetchBlob(target, digest);
          pinned.add(digest);
          if (result.fetched) {
            progress.blobsFetched += 1;
            progress.bytes += result.size;
          } else {
            progress.blobsSkipped += 1;
          }
          progress.bytesDone += size;
        } catch (err) {
          progress.errors.push(`${image} ${digest}: ${describe(err)}`);
        } finally {
          release();
        }
      }),
    );
  }
}
