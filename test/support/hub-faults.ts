// Fault state for the Docker Hub double and the body pump that applies it
// (byte flips, throttling, mid-body socket death) with real backpressure.
import type { ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';

export type RequestKind = 'manifestGet' | 'manifestHead' | 'blobGet' | 'blobHead' | 'referrers' | 'token' | 'cdnGet' | 'other';

export interface RequestInfo {
  method: string;
  path: string;
  kind: RequestKind;
}

/** Which requests a failNext rule hits: kind(s), or any predicate. Default: every /v2 request. */
export type FailFilter = RequestKind | RequestKind[] | ((req: RequestInfo) => boolean);

export interface FailRule {
  remaining: number;
  status: number;
  headers: Record<string, string>;
  filter?: FailFilter;
}

export interface DieRule {
  afterBytes: number;
  remaining: number;
}

export interface DelayRule {
  remaining: number;
  ms: number;
  filter?: FailFilter;
}

/** Matching requests wait, unanswered, until the hold is released: an upstream that stalls for as long as a test needs. */
export class Hold {
  private readonly waiters = new Set<() => void>();
  released = false;

  constructor(
    readonly filter: FailFilter | undefined,
    private readonly onRelease: (hold: Hold) => void,
  ) {}

  /** Requests waiting on this hold now. */
  get waiting(): number {
    return this.waiters.size;
  }

  wait(): Promise<void> {
    return this.released ? Promise.resolve() : new Promise((resolve) => this.waiters.add(resolve));
  }

  release(): void {
    this.released = true;
    this.onRelease(this);
    for (const wake of this.waiters) wake();
    this.waiters.clear();
  }
}

export class FaultState {
  holds: Hold[] = [];
  /** Content-Type headers to send instead of the registry's, for requests matching the filter. */
  contentTypes: { filter: FailFilter; type: string }[] = [];
  failRules: FailRule[] = [];
  delayRules: DelayRule[] = [];
  /** digest → absolute byte offset to flip (undefined = middle of the blob). */
  corrupt = new Map<string, number | undefined>();
  dieMid = new Map<string, DieRule>();
  stallMid = new Map<string, DieRule>();
  throttleBps: number | null = null;
  redirectBlobs = false;

  /** Consumes one matching fail rule, if any. */
  takeFailure(req: RequestInfo): FailRule | undefined {
    const rule = this.failRules.find((r) => r.remaining > 0 && matches(r.filter, req));
    if (!rule) return undefined;
    rule.remaining--;
    this.failRules = this.failRules.filter((r) => r.remaining > 0);
    return rule;
  }

  /** Consumes one matching delay rule, returning how long to stall before answering. */
  takeDelay(req: RequestInfo): number {
    const rule = this.delayRules.find((r) => r.remaining > 0 && matches(r.filter, req));
    if (!rule) return 0;
    rule.remaining--;
    this.delayRules = this.delayRules.filter((r) => r.remaining > 0);
    return rule.ms;
  }

  /** Adds a hold: requests matching `filter` stall until `release()`. */
  hold(filter?: FailFilter): Hold {
    const hold = new Hold(filter, (h) => (this.holds = this.holds.filter((other) => other !== h)));
    this.holds.push(hold);
    return hold;
  }

  /** Resolves when every hold matching the request is released (at once when none does). */
  async awaitHolds(req: RequestInfo): Promise<void> {
    for (const hold of this.holds.filter((h) => matches(h.filter, req))) await hold.wait();
  }

  /** Consumes one mid-blob stall for this digest, returning the bytes to send first. */
  takeStall(digest: string | undefined): number | undefined {
    return takeByteRule(this.stallMid, digest);
  }

  /** Consumes one mid-blob death for this digest, returning the byte budget. */
  takeDeath(digest: string | undefined): number | undefined {
    return takeByteRule(this.dieMid, digest);
  }


  /** The Content-Type to send instead of the registry's for this request, if a rule says so. */
  contentTypeFor(req: RequestInfo): string | undefined {
    return this.contentTypes.find((r) => matches(r.filter, req))?.type;
  }

  clear(): void {
    for (const hold of [...this.holds]) hold.release();
    this.contentTypes = [];
    this.failRules = [];
    this.delayRules = [];
    this.corrupt.clear();
    this.dieMid.clear();
    this.stallMid.clear();
    this.throttleBps = null;
    this.redirectBlobs = false;
  }
}

/** Consumes one use of the digest's rule, returning its byte count. */
function takeByteRule(rules: Map<string, DieRule>, digest: string | undefined): number | undefined {
  if (!digest) return undefined;
  const rule = rules.get(digest);
  if (!rule || rule.remaining <= 0) return undefined;
  rule.remaining--;
  if (rule.remaining <= 0) rules.delete(digest);
  return rule.afterBytes;
}

function matches(filter: FailFilter | undefined, req: RequestInfo): boolean {
  if (filter === undefined) return req.path.startsWith('/v2/') || req.path === '/v2';
  if (typeof filter === 'function') return filter(req);
  if (Array.isArray(filter)) return filter.includes(req.kind);
  return filter === req.kind;
}

export interface PumpOptions {
  /** Absolute offset of the first body byte (from Content-Range), for flips. */
  startOffset: number;
  /** Absolute offset to flip, if corrupting. */
  flipAt?: number;
  /** Destroy the socket after this many body bytes. */
  dieAfter?: number;
  /** Send this many body bytes, then nothing more, keeping the connection open until the client gives up. */
  stallAfter?: number;
  /** Read on every slice so a test can loosen or tighten it mid-stream. */
  throttle: () => number | null;
  onBytes: (n: number) => void;
}

/** Resolves once `res` can take more data or is gone. */
function drained(res: ServerResponse): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = (): void => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

function writeThenDie(res: ServerResponse, slice: Buffer, onBytes: (n: number) => void): Promise<void> {
  return new Promise<void>((resolve) => {
    const kill = (): void => {
      // Wait until the bytes reached the kernel, then cut the connection.
      res.socket?.destroy();
      resolve();
    };
    if (slice.length === 0) return kill();
    onBytes(slice.length);
    res.write(slice, kill);
  });
}

const SLICES_PER_SECOND = 20;

/**
 * Copies `body` to `res` applying faults. Bounded by the body length; stops
 * early (destroying the source) when the client goes away.
 */
export async function pumpBody(
  body: AsyncIterable<Buffer> & { destroy?: (err?: Error) => unknown },
  res: ServerResponse,
  opts: PumpOptions,
): Promise<'complete' | 'died' | 'aborted'> {
  let offset = opts.startOffset;
  let sent = 0;
  try {
    for await (const raw of body) {
      let chunk: Buffer = Buffer.isBuffer(raw) ? raw : Buffer.from(raw);
      if (opts.flipAt !== undefined && opts.flipAt >= offset && opts.flipAt < offset + chunk.length) {
        chunk = Buffer.from(chunk); // don't mutate a buffer the source may reuse
        const i = opts.flipAt - offset;
        chunk[i] = (chunk[i] ?? 0) ^ 0xff;
      }
      offset += chunk.length;
      let pos = 0;
      while (pos < chunk.length) {
        if (res.destroyed) return 'aborted';
        const bps = opts.throttle();
        const sliceLen = bps ? Math.max(1, Math.floor(bps / SLICES_PER_SECOND)) : chunk.length - pos;
        let slice = chunk.subarray(pos, pos + sliceLen);
        if (opts.stallAfter !== undefined && sent + slice.length >= opts.stallAfter) {
          slice = slice.subarray(0, opts.stallAfter - sent);
          opts.onBytes(slice.length);
          res.write(slice);
          // Silence: the body neither moves nor ends; only the client's own timeout ends it.
          await new Promise<void>((resolve) => (res.destroyed ? resolve() : res.once('close', () => resolve())));
          return 'aborted';
        }
        if (opts.dieAfter !== undefined && sent + slice.length >= opts.dieAfter) {
          slice = slice.subarray(0, opts.dieAfter - sent);
          await writeThenDie(res, slice, opts.onBytes);
          return 'died';
        }
        pos += slice.length;
        sent += slice.length;
        opts.onBytes(slice.length);
        if (!res.write(slice)) await drained(res);
        if (bps) await sleep(Math.ceil((slice.length / bps) * 1000));
      }
    }
    if (opts.dieAfter !== undefined && sent <= opts.dieAfter) {
      // Budget not reached (short body): still die, as asked.
      await writeThenDie(res, Buffer.alloc(0), opts.onBytes);
      return 'died';
    }
    if (res.destroyed) return 'aborted';
    // 'close' covers a client that vanished before 'finish'.
    await new Promise<void>((resolve) => {
      res.once('close', resolve);
      res.end(resolve);
    });
    return 'complete';
  } catch {
    if (!res.destroyed) res.destroy();
    return 'aborted';
  } finally {
    body.destroy?.();
  }
}
