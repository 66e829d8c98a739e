// Drives many concurrent pull clients against a mirror for a bounded time and
// keeps the books: pulls, bytes, latencies, and every failure with its kind.
// Failed pulls can then be retried, a bounded number of times each.
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent } from 'undici';
import type { SeededImage } from './load-seed.js';
import { prng } from './load-seed.js';
import { CLEAN_FAILURES, pullImage, PullFailure, type ClientForm, type FailureKind } from './pull-client.js';

export interface PickContext {
  rng: () => number;
  /** Pulls of large images running now, across all clients. */
  largeInFlight: number;
}

export interface MixOptions {
  small: SeededImage[];
  large?: SeededImage[];
  /** Large pulls kept in flight at least / at most, and the chance of starting one more. */
  minLarge?: number;
  maxLarge?: number;
  pLarge?: number;
  /** Images half the small picks go to, while `coldOn` says so (default: always). */
  cold?: SeededImage[];
  coldOn?: () => boolean;
}

/** Picks images from a mix: large ones in turn (they are few) within bounds, else cold or small ones at random. */
export function mixPicker(o: MixOptions): (ctx: PickContext) => SeededImage {
  const any = (list: SeededImage[], rng: () => number): SeededImage => list[Math.floor(rng() * list.length)]!;
  let turn = 0;
  return ({ rng, largeInFlight }) => {
    const large = o.large ?? [];
    if (large.length > 0 && (largeInFlight < (o.minLarge ?? 0) || (largeInFlight < (o.maxLarge ?? 0) && rng() < (o.pLarge ?? 0)))) return large[turn++ % large.length]!;
    if (o.cold?.length && (o.coldOn?.() ?? true) && rng() < 0.5) return any(o.cold, rng);
    return any(o.small, rng);
  };
}

export interface LoadOptions {
  mirrorUrl: string;
  clients: number;
  durationMs: number;
  pick: (ctx: PickContext) => SeededImage;
  /** Pause after a failed pull, like a client backing off; refused connections wait longer. */
  backoffMs?: number;
  /** Per-request deadlines of every client (headers, and silence in a body); generous, to catch hangs, not slowness. */
  timeoutMs?: number;
  seed?: number;
}

export interface PullRecord {
  image: SeededImage;
  form: ClientForm;
  at: number;
  ms: number;
  failure?: { kind: FailureKind; message: string; status?: number; code?: string };
}

export interface LoadReport {
  pulls: number;
  succeeded: number;
  failed: PullRecord[];
  bytes: number;
  manifestsVerified: number;
  blobsVerified: number;
  largePulls: number;
  /** Images with at least one successful pull. */
  pulledImages: Set<string>;
  durationMs: number;
  p50Ms: number;
  p99Ms: number;
  /** The slowest successful pulls, slowest first: image name and milliseconds. */
  slowest: { image: string; ms: number }[];
}

export const failuresByKind = (records: PullRecord[]): Partial<Record<FailureKind, number>> => {
  const out: Partial<Record<FailureKind, number>> = {};
  for (const r of records) if (r.failure) out[r.failure.kind] = (out[r.failure.kind] ?? 0) + 1;
  return out;
};

/** Failures that are not clean: neither error JSON nor a broken connection. */
export const uncleanFailures = (records: PullRecord[]): PullRecord[] => records.filter((r) => r.failure && !CLEAN_FAILURES.includes(r.failure.kind));

/**
 * One client machine: its own connection pool, from its own loopback address
 * (Linux routes all of 127/8 to lo), so the mirror's per-client limits see
 * separate machines, as in a real fleet, and not one address with 200 users.
 */
function clientAgent(timeoutMs: number, connections: number, client: number): Agent {
  const localAddress = `127.1.${Math.floor(client / 250)}.${(client % 250) + 1}`;
  return new Agent({ connections, localAddress, headersTimeout: timeoutMs, bodyTimeout: timeoutMs, connect: { timeout: 10_000 }, keepAliveTimeout: 10_000 });
}

const quantile = (sorted: number[], q: number): number => Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0);

/**
 * `clients` loops, each with its own connection pool (3 connections, like a
 * client pulling layers in parallel), pulling images chosen by `pick` until
 * `durationMs` passes. The last pull of each loop finishes; pools are closed
 * before this returns.
 */
export async function runLoad(options: LoadOptions): Promise<LoadReport> {
  const started = Date.now();
  const until = started + options.durationMs;
  const timeoutMs = options.timeoutMs ?? 60_000;
  const backoffMs = options.backoffMs ?? 200;
  const latencies: number[] = [];
  const report: LoadReport = {
    pulls: 0, succeeded: 0, failed: [], bytes: 0, manifestsVerified: 0, blobsVerified: 0, largePulls: 0,
    pulledImages: new Set(), durationMs: 0, p50Ms: 0, p99Ms: 0, slowest: [],
  };
  let largeInFlight = 0;
  const agents: Agent[] = [];
  try {
    await Promise.all(
      Array.from({ length: options.clients }, async (_, c) => {
        const rng = prng((options.seed ?? 1) * 100_003 + c);
        const dispatcher = clientAgent(timeoutMs, 3, c);
        agents.push(dispatcher);
        const form: ClientForm = c % 2 === 0 ? 'dockerd' : 'containerd';
        // Clients arrive over the first half second, not in one burst.
        await sleep(Math.floor(rng() * 500));
        // Bounded by the deadline; each pull is bounded by the client's timeouts.
        while (Date.now() < until) {
          const image = options.pick({ rng, largeInFlight });
          if (image.large) largeInFlight += 1;
          const at = Date.now();
          try {
            const result = await pullImage({ mirrorUrl: options.mirrorUrl, dispatcher, form }, { repo: image.repo, tag: image.tag, expectDigest: image.digest });
            report.succeeded += 1;
            report.bytes += result.bytes;
            report.manifestsVerified += result.manifests;
            report.blobsVerified += result.blobs;
            report.pulledImages.add(image.name);
            const ms = Date.now() - at;
            latencies.push(ms);
            if (report.slowest.length < 5 || ms > report.slowest.at(-1)!.ms) {
              report.slowest = [...report.slowest, { image: image.name, ms }].sort((a, b) => b.ms - a.ms).slice(0, 5);
            }
          } catch (err) {
            const f = err as PullFailure;
            report.failed.push({ image, form, at, ms: Date.now() - at, failure: { kind: f.kind, message: f.message, ...(f.status !== undefined ? { status: f.status } : {}), ...(f.code !== undefined ? { code: f.code } : {}) } });
            const refused = f.kind === 'connection' && /ECONNREFUSED/.test(f.message);
            await sleep(Math.floor((refused ? 2.5 : 1) * backoffMs * (0.5 + rng())));
          } finally {
            report.pulls += 1;
            if (image.large) {
              largeInFlight -= 1;
              report.largePulls += 1;
            }
          }
        }
      }),
    );
  } finally {
    await Promise.all(agents.map((a) => a.close().catch(() => undefined)));
  }
  latencies.sort((a, b) => a - b);
  report.durationMs = Date.now() - started;
  report.p50Ms = quantile(latencies, 0.5);
  report.p99Ms = quantile(latencies, 0.99);
  return report;
}

export interface RetryReport {
  /** Failed pulls retried (each once in this count, however many attempts it took). */
  retried: number;
  recovered: number;
  attempts: number;
  /** Pulls that never succeeded within the attempts: lost. */
  lost: PullRecord[];
  /** Retries that failed in a way that is not clean (wrong bytes above all). */
  unclean: PullRecord[];
}

/** Retries every failed pull after a fault, up to `attempts` times each with a growing pause. */
export async function retryFailed(mirrorUrl: string, failed: PullRecord[], options: { attempts?: number; concurrency?: number; timeoutMs?: number } = {}): Promise<RetryReport> {
  const attempts = options.attempts ?? 6;
  const report: RetryReport = { retried: failed.length, recovered: 0, attempts: 0, lost: [], unclean: [] };
  const agents: Agent[] = [];
  let next = 0;
  try {
    await Promise.all(
      Array.from({ length: Math.min(options.concurrency ?? 32, failed.length) }, async (_, worker) => {
        const dispatcher = clientAgent(options.timeoutMs ?? 60_000, 3, 1000 + worker);
        agents.push(dispatcher);
        while (next < failed.length) {
          const record = failed[next++]!;
          let last: PullFailure | undefined;
          for (let attempt = 0; attempt < attempts; attempt++) {
            report.attempts += 1;
            try {
              await pullImage({ mirrorUrl, dispatcher, form: record.form }, { repo: record.image.repo, tag: record.image.tag, expectDigest: record.image.digest });
              last = undefined;
              break;
            } catch (err) {
              last = err as PullFailure;
              if (!CLEAN_FAILURES.includes(last.kind)) report.unclean.push({ ...record, failure: { kind: last.kind, message: last.message } });
              await sleep(Math.min(4_000, 250 * 2 ** attempt));
            }
          }
          if (last) report.lost.push({ ...record, failure: { kind: last.kind, message: last.message } });
          else report.recovered += 1;
        }
      }),
    );
  } finally {
    await Promise.all(agents.map((a) => a.close().catch(() => undefined)));
  }
  return report;
}
