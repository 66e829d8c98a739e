/**
 * What Stevedore tells receivers, in distribution's notification envelope so
 * that existing receivers work unchanged.
 *
 * Naming: distribution's own action (`pull`) keeps its name; every event only a
 * mirror has is `<subject>.<what happened>`, the subject being the part of the
 * mirror it concerns (fill, digest, upstream, cache, warmup, verify).
 */
export const ACTIONS = [
  'pull',
  'fill.completed',
  'fill.failed',
  'digest.mismatch',
  'upstream.circuit.open',
  'upstream.circuit.close',
  'upstream.ratelimit.low',
  'cache.evicted',
  'cache.gc',
  'warmup.completed',
  'warmup.failed',
  'verify.damaged',
] as const;

export type Action = (typeof ACTIONS)[number];

/** The envelope's media types: v2 is distribution's current one, v1 what older receivers expect. */
export const EVENTS_MEDIA_TYPES = {
  v2: 'application/vnd.docker.distribution.events.v2+json',
  v1: 'application/vnd.docker.distribution.events.v1+json',
} as const;

export type EnvelopeFormat = keyof typeof EVENTS_MEDIA_TYPES;

/** What the event is about, with distribution's field names (`length` repeats `size`, as distribution does). */
export interface EventTarget {
  mediaType?: string;
  digest?: string;
  size?: number;
  repository?: string;
  url?: string;
  tag?: string;
}

/** The client request behind an event, when there is one. */
export interface EventRequest {
  id: string;
  addr: string;
  host: string;
  method: string;
  useragent: string;
}

/** The cache outcome of a pull. */
export type PullOutcome = 'hit' | 'miss' | 'coalesced' | 'stale';

/**
 * An event as a part of the mirror records it. `detail` carries what only a
 * mirror knows (the outcome of a pull, the bytes and duration of a fill, the
 * reason of a failure); it is sent as the event's `stevedore` member, which
 * distribution's receivers ignore.
 */
export interface MirrorEvent {
  action: Action;
  target?: EventTarget;
  request?: EventRequest;
  /** The authenticated client user, when client auth is on. */
  actor?: string;
  detail?: Record<string, string | number | boolean | string[] | undefined>;
}
