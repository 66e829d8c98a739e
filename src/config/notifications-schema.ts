import { z } from 'zod';
import { duration, isHostOrRange } from './fields.js';

/** The actions events are sent for (src/notify/events.ts names them; config may not import it). */
const ACTION_PATTERN = /^(?:\*|[a-z]+(?:\.[a-z]+)*(?:\.\*)?)$/;

/** A header value that cannot split the request: no CR, LF or NUL. */
const headerText = z.string().regex(/^[^\r\n\0]*$/, 'header values may not hold CR, LF or NUL');
const headerValue = z.union([headerText, z.array(headerText)]);
/** Headers the sender sets itself, or that would break the request framing. */
const RESERVED_HEADERS = new Set(['host', 'content-length', 'content-type', 'transfer-encoding', 'connection', 'keep-alive', 'upgrade', 'expect', 'te', 'trailer']);

/** Why a header name cannot be configured, if it cannot (record keys are checked here: zod's own message names no reason). */
function badHeaderName(name: string): string | undefined {
  if (!/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(name)) return 'expected an HTTP header name';
  if (RESERVED_HEADERS.has(name.toLowerCase())) return 'set by Stevedore itself (or it would break the request)';
  return undefined;
}

/** A duration within [min, max] milliseconds (timers take at most 2^31-1 ms). */
const boundedDuration = (fallback: string, minMs: number, maxMs: number, words: string) => duration(fallback).refine((ms) => ms >= minMs && ms <= maxMs, { message: words });

const endpointSchema = z.strictObject({
  /** Names the endpoint in logs, metrics and the dashboard. */
  name: z.string().regex(/^[A-Za-z0-9._-]+$/, 'letters, digits, dot, dash and underscore only'),
  url: z.url({ protocol: /^https?$/, error: 'expected an http:// or https:// URL' }),
  /** Hosts, addresses and CIDR ranges the endpoint may be at although loopback, private or link-local. */
  allow: z.array(z.string().refine(isHostOrRange, { message: 'expected a host name, an IP address or a CIDR range such as 10.20.0.0/16' })).default([]),
  /** Sent with every request, for example Authorization. */
  headers: z.record(z.string(), headerValue).default({}),
  /** Header values read from files (mounted secrets), such as Authorization: /run/secrets/hook-token. */
  headerFiles: z.record(z.string(), z.string().min(1)).default({}),
  /** One delivery attempt, connect to last byte of the answer. */
  timeout: boundedDuration('5s', 100, 600_000, 'between 100ms and 10m'),
  /** Failed attempts retried after `backoff`; past this many the delay doubles up to maxBackoff. */
  threshold: z.number().int().min(1).max(1000).default(3),
  backoff: boundedDuration('1s', 10, 3_600_000, 'between 10ms and 1h'),
  maxBackoff: boundedDuration('5m', 10, 86_400_000, 'between 10ms and 1d'),
  /** The envelope's media type: v2 (distribution's current) or v1 (older receivers). */
  format: z.enum(['v2', 'v1']).default('v2'),
  /** Signs each body with HMAC-SHA256 in Stevedore-Signature-256; empty: unsigned. */
  secret: z.string().default(''),
  /** Read the secret from this file (a mounted secret) when set. */
  secretFile: z.string().default(''),
  /** distribution's knob: events about these media types are not sent (merged with ignore.mediaTypes). */
  ignoredMediaTypes: z.array(z.string().min(1)).default([]),
  ignore: z
    .strictObject({
      /** Action names, or prefixes ending in `.*` ("upstream.*"). */
      actions: z.array(z.string().regex(ACTION_PATTERN, 'expected an action such as pull or fill.completed, or a prefix such as upstream.*')).default([]),
      mediaTypes: z.array(z.string().min(1)).default([]),
      /** Pull events served from the cache (hit, coalesced, stale) are not sent. */
      hits: z.boolean().default(false),
    })
    .prefault({}),
  batch: z
    .strictObject({
      maxEvents: z.number().int().min(1).max(1000).default(100),
      /** A batch goes when it is full or its oldest event is this old. */
      maxWait: boundedDuration('1s', 0, 3_600_000, 'between 0s and 1h'),
    })
    .prefault({}),
  disabled: z.boolean().default(false),
});

export const notificationsSchema = z
  .strictObject({
    /** Events kept for one endpoint while it does not answer; beyond, the oldest are dropped. */
    maxPending: z.number().int().min(1).max(10_000_000).default(100_000),
    endpoints: z.array(endpointSchema).default([]),
  })
  .prefault({})
  .superRefine((notifications, ctx) => {
    const names = new Set<string>();
    notifications.endpoints.forEach((endpoint, index) => {
      if (names.has(endpoint.name)) ctx.addIssue({ code: 'custom', path: ['endpoints', index, 'name'], message: `"${endpoint.name}" names another endpoint already` });
      names.add(endpoint.name);
      if (endpoint.maxBackoff < endpoint.backoff) ctx.addIssue({ code: 'custom', path: ['endpoints', index, 'maxBackoff'], message: 'must be at least backoff' });
      for (const key of ['headers', 'headerFiles'] as const) {
        for (const name of Object.keys(endpoint[key])) {
          const bad = badHeaderName(name);
          if (bad) ctx.addIssue({ code: 'custom', path: ['endpoints', index, key, name], message: bad });
        }
      }
      for (const name of Object.keys(endpoint.headerFiles)) {
        if (Object.keys(endpoint.headers).some((h) => h.toLowerCase() === name.toLowerCase())) ctx.addIssue({ code: 'custom', path: ['endpoints', index, 'headerFiles', name], message: `"${name}" is in headers too: set it in one place` });
      }
      if (endpoint.secret !== '' && endpoint.secretFile !== '') ctx.addIssue({ code: 'custom', path: ['endpoints', index, 'secretFile'], message: 'set secret or secretFile, not both' });
      const url = URL.canParse(endpoint.url) ? new URL(endpoint.url) : undefined;
      if (url && (url.username || url.password)) ctx.addIssue({ code: 'custom', path: ['endpoints', index, 'url'], message: 'put credentials in headers (Authorization), not in the URL: URLs are logged and shown' });
    });
  });

export type NotificationsConfig = z.output<typeof notificationsSchema>;
export type NotificationEndpointConfig = NotificationsConfig['endpoints'][number];
