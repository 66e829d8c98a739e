import { randomUUID } from 'node:crypto';
import type { Context, Next } from 'koa';
import type { Logger } from '../log.js';
import type { CacheResult, Metrics } from '../metrics/metrics.js';
import type { MirrorEvent, PullOutcome } from '../notify/events.js';

/** Fields the handlers fill in for the access log line and the metrics. */
export interface RequestLogFields {
  /** Route label for metrics: manifests, blobs, tags, referrers, ping, api, … */
  route?: string;
  repo?: string;
  reference?: string;
  digest?: string;
  /** The whole manifest or blob (a range answer is part of it). */
  size?: number;
  mediaType?: string;
  upstream?: string;
  cache?: string;
  error?: unknown;
  /** The authenticated user, when client auth is on. */
  user?: string;
  /** A front server sent the body (offload). */
  offloaded?: boolean;
  /** The client was sent to a presigned URL of the store. */
  redirected?: boolean;
}

/** Route labels come from a fixed set: a label per unknown path would let anyone grow /metrics. */
function fixedRoute(path: string): string {
  if (path.startsWith('/v2')) return 'v2';
  if (path.startsWith('/api/')) return 'api';
  if (path === '/' || path.startsWith('/ui')) return 'ui';
  if (path === '/metrics' || path === '/healthz' || path === '/readyz') return path.slice(1);
  return 'other';
}

/**
 * The level of a request's line: probes, scrapes and the dashboard's polls and
 * assets are debug (they come every few seconds and say nothing), a 5xx answered
 * to a client is a warning, and the rest is info.
 */
export function requestLevel(method: string, path: string, status: number): 'debug' | 'info' | 'warn' {
  if (path === '/healthz' || path === '/readyz' || path === '/metrics') return 'debug';
  const read = method === 'GET' || method === 'HEAD';
  if (read && (path === '/' || path === '/ui' || path.startsWith('/ui/') || path.startsWith('/api/'))) return status >= 500 ? 'warn' : 'debug';
  return status >= 500 ? 'warn' : 'info';
}

/** Where pull events go (the notifier). */
export interface PullRecorder {
  readonly enabled: boolean;
  wantsPull(outcome: string): boolean;
  record(event: MirrorEvent): void;
}

/** Answers that hand the content over: whole, a range of it, or a redirect to the store. */
const PULLED = new Set([200, 206, 307]);
const OUTCOMES = new Set<string>(['hit', 'miss', 'coalesced', 'stale']);

/** Client-chosen text kept in the outbox: bounded, so that a header limit's worth per event cannot fill the disk. */
const clip = (text: string): string => (text.length > 256 ? `${text.slice(0, 256)}…` : text);

/** distribution's pull event, with the cache's outcome beside it. */
function pullEvent(ctx: Context, fields: RequestLogFields, kind: 'manifest' | 'blob', reqId: string, finished: boolean): MirrorEvent {
  const digest = fields.digest!;
  const socket = ctx.req.socket;
  // Behind a trusted proxy ctx.ip is the client's address, and the socket's port is the proxy's.
  const addr = ctx.ip === socket.remoteAddress && socket.remotePort !== undefined ? `${ctx.ip}:${socket.remotePort}` : ctx.ip;
  const tag = kind === 'manifest' && fields.reference && !fields.reference.includes(':') ? fields.reference : undefined;
  return {
    action: 'pull',
    target: {
      mediaType: kind === 'manifest' ? fields.mediaType : 'application/octet-stream',
      digest,
      size: fields.size,
      repository: fields.repo,
      url: `${ctx.protocol}://${ctx.host}/v2/${fields.repo}/${kind}s/${digest}`,
      tag,
    },
    request: { id: reqId, addr, host: clip(ctx.host), method: ctx.method, useragent: clip(ctx.get('user-agent')) },
    actor: fields.user,
    detail: { outcome: OUTCOMES.has(fields.cache ?? '') ? (fields.cache as PullOutcome) : 'miss', upstream: fields.upstream, complete: finished },
  };
}

const SERVED_ROUTES: Record<string, 'manifest' | 'blob'> = { manifests: 'manifest', blobs: 'blob' };

/**
 * One structured line per request, written when the response is finished or
 * aborted, plus the request's metrics and, when enabled, an audit line per pull.
 */
export function requestLog(log: Logger, metrics: Metrics, audit: Logger | undefined, notifications?: PullRecorder) {
  return async (ctx: Context, next: Next): Promise<void> => {
    const started = performance.now();
    const reqId = randomUUID();
    const socket = ctx.req.socket;
    const bytesBefore = socket.bytesWritten;
    ctx.state.reqId = reqId;
    ctx.set('X-Request-Id', reqId);
    ctx.res.once('close', () => {
      const fields = ctx.state as RequestLogFields;
      const ms = performance.now() - started;
      const finished = ctx.res.writableFinished;
      const route = fields.route ?? fixedRoute(ctx.path);
      metrics.recordRequest(route, ctx.method, ctx.status, ms / 1000);
      const kind = fields.route ? SERVED_ROUTES[fields.route] : undefined;
      const body = finished && ctx.method === 'GET' ? Number(ctx.response.get('Content-Length')) || 0 : 0;
      if (kind && fields.cache && fields.upstream) metrics.recordServed(fields.upstream, kind, fields.cache as CacheResult, body);
      if (notifications?.enabled && kind && ctx.method === 'GET' && PULLED.has(ctx.status) && fields.digest && notifications.wantsPull(fields.cache ?? 'miss')) {
        notifications.record(pullEvent(ctx, fields, kind, reqId, finished));
      }
      if (audit && kind && ctx.method === 'GET' && ctx.status < 300) {
        audit.info({ client: ctx.ip, user: fields.user, upstream: fields.upstream, repo: fields.repo, reference: fields.reference, digest: fields.digest, status: ctx.status, complete: finished }, 'pull');
      }
      log[requestLevel(ctx.method, ctx.path, ctx.status)](
        {
          reqId,
          method: ctx.method,
          path: ctx.path.length > 300 ? `${ctx.path.slice(0, 300)}…` : ctx.path,
          repo: fields.repo,
          reference: fields.reference,
          digest: fields.digest,
          upstream: fields.upstream,
          cache: fields.cache,
          status: ctx.status,
          bytes: socket.bytesWritten - bytesBefore,
          ms: Math.round(ms),
          client: ctx.ip,
          user: fields.user,
          offloaded: fields.offloaded,
          redirected: fields.redirected,
          aborted: !finished || undefined,
          error: fields.error,
        },
        'request',
      );
    });
    await next();
  };
}
