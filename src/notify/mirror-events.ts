import type { MirrorEvent } from './events.js';

// The events only a mirror has, built from what its parts report. The inputs
// are structural: notify/ knows the shape of a report, not the part behind it.

interface Fill {
  kind: 'blob' | 'manifest';
  digest: string;
  repo: string;
  upstream: string;
  endpoint?: string;
  replicas?: string[];
  bytes: number;
}

function fillTarget(fill: Fill & { mediaType?: string; tag?: string }, size?: number) {
  return { digest: fill.digest, repository: fill.repo, ...(size !== undefined ? { size } : {}), ...(fill.mediaType ? { mediaType: fill.mediaType } : {}), ...(fill.tag ? { tag: fill.tag } : {}) };
}

function source(fill: Fill) {
  return { kind: fill.kind, upstream: fill.upstream, endpoint: fill.endpoint, ...(fill.replicas?.length ? { replicas: fill.replicas } : {}) };
}

export function fillCompleted(fill: Fill & { ms: number; mediaType?: string; tag?: string }): MirrorEvent {
  return { action: 'fill.completed', target: fillTarget(fill, fill.bytes), detail: { ...source(fill), bytes: fill.bytes, durationMs: fill.ms } };
}

export function fillFailed(fill: Fill & { reason: string; cached?: boolean }): MirrorEvent {
  return { action: 'fill.failed', target: fillTarget(fill), detail: { ...source(fill), bytes: fill.bytes, reason: fill.reason, servedUncached: fill.cached === false || undefined } };
}

export function digestMismatch(fill: Fill): MirrorEvent {
  return { action: 'digest.mismatch', target: fillTarget(fill), detail: { ...source(fill), bytes: fill.bytes } };
}

export function circuitOpened(upstream: string, e: { endpoint: string; failures: number; reason: string }): MirrorEvent {
  return { action: 'upstream.circuit.open', detail: { upstream, endpoint: e.endpoint, failures: e.failures, reason: e.reason } };
}

export function circuitClosed(upstream: string, e: { endpoint: string; downMs: number }): MirrorEvent {
  return { action: 'upstream.circuit.close', detail: { upstream, endpoint: e.endpoint, downMs: e.downMs } };
}

export function budgetLow(upstream: string, e: { endpoint: string; credential: string; remaining: number; limit?: number; windowSeconds?: number }): MirrorEvent {
  return { action: 'upstream.ratelimit.low', detail: { upstream, endpoint: e.endpoint, credential: e.credential, remaining: e.remaining, limit: e.limit, windowSeconds: e.windowSeconds } };
}

/** A sweep's removals, one event per blob: unreferenced ones are garbage collected, the others evicted. */
export function sweepRemovals(report: { removed: readonly { digest: string; size: number; reason: string }[] }): MirrorEvent[] {
  return report.removed.map((blob) => ({
    action: blob.reason === 'unreferenced' ? 'cache.gc' : 'cache.evicted',
    target: { digest: blob.digest, size: blob.size },
    detail: { reason: blob.reason },
  }));
}

export function warmupFinished(run: { job: string; trigger: string; status: 'succeeded' | 'failed' | 'stopped'; images: number; blobsFetched: number; blobsSkipped: number; bytes: number; ms: number; errors: number; firstError?: string }): MirrorEvent {
  return {
    action: run.status === 'succeeded' ? 'warmup.completed' : 'warmup.failed',
    detail: { job: run.job, trigger: run.trigger, status: run.status, images: run.images, blobsFetched: run.blobsFetched, blobsSkipped: run.blobsSkipped, bytes: run.bytes, durationMs: run.ms, errors: run.errors, firstError: run.firstError },
  };
}

export function verifyDamaged(digest: string, reason: string, how: { source: 'serve' | 'verify'; removed: boolean }): MirrorEvent {
  return { action: 'verify.damaged', target: { digest }, detail: { reason, removed: how.removed, source: how.source } };
}
