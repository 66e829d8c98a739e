// An in-process Docker Hub look-alike in front of a real registry: bearer-token
// auth, rate-limit headers, CDN redirects and runtime fault injection.
import { createServer, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request } from 'undici';
import { startCdn } from './hub-cdn.js';
import { FaultState, pumpBody, type FailFilter, type Hold, type RequestKind } from './hub-faults.js';
import { closeServer, firstRangeStart, listen, readSmallBody, sendJson, trackSockets } from './hub-http.js';
import { REFERRERS_RE, serveReferrers } from './hub-referrers.js';
import { classify, recordAuth, type AuthRecord, type HubStats, StatsBook } from './hub-stats.js';
import {
  HUB_SERVICE, TokenStore, bearerChallenge, credentialsMatch, errorBody, errorCodeFor, parseBasic, tokenBody,
} from './hub-tokens.js';

export type { FailFilter, Hold, RequestInfo, RequestKind } from './hub-faults.js';
export type { AuthRecord, HubRequestLog, HubStats } from './hub-stats.js';
export { HUB_SERVICE } from './hub-tokens.js';

export interface HubDoubleOptions {
  /** Base URL of the real registry behind the double, e.g. http://127.0.0.1:5000. */
  upstream: string;
  /** When set, /token demands this Basic auth; anonymous tokens are refused. */
  credentials?: { username: string; password: string };
  tokenTtlSeconds?: number;
  /** Value of ratelimit-limit; manifest GETs beyond it get 429. */
  rateLimit?: number;
  /**
   * Answer GET /v2/<repo>/referrers/<digest> itself (OCI distribution-spec 1.1)
   * from the registry's tagged manifests. Default false: the registry's 404.
   */
  referrersApi?: boolean;
}

export interface HubDouble {
  url: string;
  port: number;
  cdnUrl: string;
  cdnPort: number;
  upstream: string;
  faults: FaultState;
  stats(): HubStats;
  resetStats(): void;
  /** Every Authorization header seen, on the hub and on the CDN. */
  authSeen(): AuthRecord[];
  readonly cdnAuthHeadersSeen: number;
  failNext(n: number, status: number, headers?: Record<string, string>, filter?: FailFilter): void;
  /** Answer matching requests with this Content-Type instead of the registry's. */
  lieAboutContentType(filter: FailFilter, type: string): void;
  /** Stall every matching request until the returned hold is released. */
  hold(filter?: FailFilter): Hold;
  /** Stall the next n matching requests by `ms` before answering (latency beyond a deadline). */
  delayNext(n: number, ms: number, filter?: FailFilter): void;
  /** Serve this blob with one byte flipped (default: the middle byte), same length. */
  corruptBlob(digest: string, offset?: number): void;
  /** Cut the connection after `afterBytes` body bytes of this blob, `times` times. */
  dieMidBlob(digest: string, afterBytes: number, times?: number): void;
  /** Send `afterBytes` of this blob, then go silent without closing, `times` times. */
  stallMidBlob(digest: string, afterBytes: number, times?: number): void;
  /** Limit blob GET bodies (hub and CDN) to this rate; null lifts it, even mid-stream. */
  throttle(bytesPerSecond: number | null): void;
  redirectBlobs: boolean;
  tokenTtlSeconds: number;
  expireTokensNow(): void;
  setRateLimitRemaining(n: number): void;
  clearFaults(): void;
  /** 'reset': accept then RST every connection; 'refuse': stop listening. */
  down(mode?: 'reset' | 'refuse'): Promise<void>;
  up(): Promise<void>;
  stop(): Promise<void>;
}

const COPY_HEADERS = [
  'content-type', 'content-length', 'docker-content-digest', 'content-range', 'accept-ranges', 'link',
  'location', 'retry-after', 'etag', 'docker-distribution-api-version', 'cache-control', 'last-modified',
];
const API_VERSION = { 'docker-distribution-api-version': 'registry/2.0' };
const REPO_RE = /^\/v2\/(.+)\/(?:manifests\/[^/]+|blobs\/[^/]+|blobs\/uploads\/.*|tags\/list|referrers\/[^/]+)$/;
const BLOB_RE = /\/blobs\/(sha256:[a-f0-9]{64})$/;

export async function startHubDouble(opts: HubDoubleOptions): Promise<HubDouble> {
  const upstream = opts.upstream.replace(/\/+$/, '');
  const upstreamOrigin = new URL(upstream).origin;
  const dispatcher = new Agent({ connections: 64, keepAliveTimeout: 2000 });
  const tokens = new TokenStore(opts.tokenTtlSeconds ?? 300);
  const faults = new FaultState();
  const book = new StatsBook();
  const rateLimit = opts.rateLimit ?? 100;
  let rateRemaining = rateLimit;
  let downMode: 'reset' | 'refuse' | null = null;
  let url = '';

  /** Proxies GET/HEAD to the upstream, applying blob faults to the body. */
  async function proxy(
    req: IncomingMessage, res: ServerResponse, path: string, kind: RequestKind, extra: OutgoingHttpHeaders,
    setStatus: (s: number) => void,
  ): Promise<void> {
    // Only content-negotiation headers travel on; never the client's Authorization.
    const headers: Record<string, string> = {};
    for (const h of ['accept', 'range', 'if-none-match'] as const) {
      const v = req.headers[h];
      if (typeof v === 'string') headers[h] = v;
    }
    const method = req.method === 'HEAD' ? 'HEAD' : 'GET';
    let up: Awaited<ReturnType<typeof request>>;
    try {
      up = await request(`${upstream}${path}`, { method, headers, dispatcher });
    } catch (err) {
      setStatus(502);
      sendJson(res, 502, errorBody('UNAVAILABLE', `upstream: ${String(err)}`));
      return;
    }
    const out: OutgoingHttpHeaders = { ...extra };
    for (const h of COPY_HEADERS) {
      const v = up.headers[h];
      if (v !== undefined) out[h] = v;
    }
    const lie = faults.contentTypeFor({ method, path, kind });
    if (lie) out['content-type'] = lie;
    const loc = out['location'];
    if (typeof loc === 'string' && loc.startsWith(upstreamOrigin)) out['location'] = url + loc.slice(upstreamOrigin.length);
    setStatus(up.statusCode);
    res.writeHead(up.statusCode, out);
    if (method === 'HEAD') {
      await up.body.dump();
      res.end();
      return;
    }
    const isBlobBody = (kind === 'blobGet' || kind === 'cdnGet') && (up.statusCode === 200 || up.statusCode === 206);
    const digest = isBlobBody ? BLOB_RE.exec(path)?.[1] : undefined;
    const { start, total } = firstRangeStart(typeof out['content-range'] === 'string' ? out['content-range'] : undefined);
    const size = total ?? Number(up.headers['content-length'] ?? 0);
    const flipOffset = digest !== undefined && faults.corrupt.has(digest) ? faults.corrupt.get(digest) ?? Math.floor(size / 2) : undefined;
    const dieAfter = faults.takeDeath(digest);
    const stallAfter = faults.takeStall(digest);
    await pumpBody(up.body, res, {
      startOffset: start,
      ...(flipOffset !== undefined ? { flipAt: flipOffset } : {}),
      ...(dieAfter !== undefined ? { dieAfter } : {}),
      ...(stallAfter !== undefined ? { stallAfter } : {}),
      throttle: () => (isBlobBody ? faults.throttleBps : null),
      onBytes: (n) => book.addBytes(n),
    });
  }

  async function handleToken(req: IncomingMessage, res: ServerResponse, u: URL, setStatus: (s: number) => void): Promise<void> {
    let scopes = u.searchParams.getAll('scope');
    let basic = parseBasic(req.headers.authorization);
    if (req.method === 'POST') {
      // OAuth2 password grant, as docker/containerd use for refresh flows.
      const form = new URLSearchParams(await readSmallBody(req));
      scopes = (form.get('scope') ?? '').split(' ').filter(Boolean);
      const username = form.get('username');
      const password = form.get('password');
      if (username !== null && password !== null) basic = { username, password };
    }
    if (opts.credentials && !credentialsMatch(basic, opts.credentials)) {
      setStatus(401);
      sendJson(res, 401, JSON.stringify({ details: 'incorrect username or password' }), {
        'www-authenticate': `Basic realm="${url}/token",service="${HUB_SERVICE}"`,
      });
      return;
    }
    const t = tokens.issue(scopes, basic?.username);
    setStatus(200);
    sendJson(res, 200, tokenBody(t, tokens.ttlSeconds));
  }

  async function handleCdn(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const u = new URL(req.url ?? '/', cdn.url);
    const entry = book.start(req.method ?? 'GET', u.pathname, 'cdnGet', 'cdn');
    const setStatus = (s: number): void => void (entry.status = s);
    recordAuth(book, 'cdn', req, u.pathname);
    const fail = faults.takeFailure({ method: entry.method, path: u.pathname, kind: 'cdnGet' });
    if (fail) {
      setStatus(fail.status);
      return sendJson(res, fail.status, errorBody(errorCodeFor(fail.status), 'injected failure'), fail.headers);
    }
    const blob = cdn.verify(u);
    if (!blob || (req.method !== 'GET' && req.method !== 'HEAD')) {
      setStatus(403);
      return sendJson(res, 403, '{"error":"bad or expired signature"}');
    }
    // The CDN reads the registry directly: the plain upstream needs no token.
    await proxy(req, res, `/v2/${blob.repo}/blobs/${blob.digest}`, 'cdnGet', {}, setStatus);
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (downMode) {
      req.socket.destroy();
      return;
    }
    const u = new URL(req.url ?? '/', url);
    const path = u.pathname;
    const method = req.method ?? 'GET';
    const kind = classify(method, path);
    const entry = book.start(method, path, kind, 'hub');
    const setStatus = (s: number): void => void (entry.status = s);
    recordAuth(book, 'hub', req, path);

    await faults.awaitHolds({ method, path, kind });
    const delay = faults.takeDelay({ method, path, kind });
    if (delay > 0) await sleep(delay);
    const fail = faults.takeFailure({ method, path, kind });
    if (fail) {
      setStatus(fail.status);
      return sendJson(res, fail.status, errorBody(errorCodeFor(fail.status), 'injected failure'), { ...API_VERSION, ...fail.headers });
    }
    if (path === '/token') return handleToken(req, res, u, setStatus);
    if (path !== '/v2' && !path.startsWith('/v2/')) {
      setStatus(404);
      return sendJson(res, 404, errorBody('NOT_FOUND', 'not found'));
    }
    const repo = REPO_RE.exec(path)?.[1];
    const check = tokens.check(req.headers.authorization, repo);
    if (check !== 'ok') {
      book.countUnauthorized();
      setStatus(401);
      const error = check === 'invalid' ? 'invalid_token' : check === 'insufficient_scope' ? 'insufficient_scope' : undefined;
      return sendJson(res, 401, errorBody('UNAUTHORIZED', 'authentication required', repo ? [{ Type: 'repository', Name: repo, Action: 'pull' }] : null), {
        ...API_VERSION,
        'www-authenticate': bearerChallenge(`${url}/token`, repo, error),
      });
    }
    if (method !== 'GET' && method !== 'HEAD') {
      setStatus(405);
      return sendJson(res, 405, errorBody('UNSUPPORTED', 'the hub double is read-only'), API_VERSION);
    }
    const referrer = kind === 'referrers' && opts.referrersApi ? REFERRERS_RE.exec(path) : null;
    if (referrer?.[1] && referrer[2]) {
      const lie = faults.contentTypeFor({ method, path, kind });
      return serveReferrers(res, method, upstream, referrer[1], referrer[2], u.searchParams.get('artifactType') || undefined, dispatcher, {
        setStatus, onBytes: (n) => book.addBytes(n), ...(lie ? { headers: { 'content-type': lie } } : {}),
      });
    }
    const extra: OutgoingHttpHeaders = {};
    if (kind === 'manifestGet' || kind === 'manifestHead') {
      if (kind === 'manifestGet') {
        if (rateRemaining <= 0) {
          setStatus(429);
          return sendJson(res, 429, errorBody('TOOMANYREQUESTS', 'You have reached your pull rate limit.'), {
            ...API_VERSION, 'ratelimit-limit': `${rateLimit};w=21600`, 'ratelimit-remaining': '0;w=21600', 'retry-after': '60',
          });
        }
        rateRemaining--;
      }
      extra['ratelimit-limit'] = `${rateLimit};w=21600`;
      extra['ratelimit-remaining'] = `${rateRemaining};w=21600`;
      extra['docker-ratelimit-source'] = '127.0.0.1';
    }
    const digest = BLOB_RE.exec(path)?.[1];
    if (kind === 'blobGet' && faults.redirectBlobs && repo && digest) {
      setStatus(307);
      const location = cdn.signedUrl(repo, digest);
      res.writeHead(307, { ...API_VERSION, location, 'content-length': 0 });
      res.end();
      return;
    }
    await proxy(req, res, path + u.search, kind, extra, setStatus);
  }

  const onError = (res: ServerResponse) => (err: unknown): void => {
    if (!res.headersSent) sendJson(res, 500, errorBody('UNKNOWN', String(err)));
    else res.destroy();
  };
  const cdn = await startCdn((req, res) => void handleCdn(req, res).catch(onError(res)));
  const server = createServer((req, res) => void handle(req, res).catch(onError(res)));
  const sockets = trackSockets(server);
  server.on('connection', (s: Socket) => {
    if (downMode === 'reset') s.resetAndDestroy();
  });
  const port = await listen(server, 0, '127.0.0.1');
  url = `http://127.0.0.1:${port}`;

  return {
    url, port, upstream, faults,
    cdnUrl: cdn.url,
    cdnPort: cdn.port,
    stats: () => book.snapshot(),
    resetStats: () => book.reset(),
    authSeen: () => [...book.auth],
    get cdnAuthHeadersSeen(): number {
      return book.auth.filter((a) => a.server === 'cdn').length;
    },
    hold: (filter) => faults.hold(filter),
    lieAboutContentType: (filter, type) => void faults.contentTypes.push({ filter, type }),
    delayNext(n, ms, filter): void {
      faults.delayRules.push({ remaining: n, ms, ...(filter !== undefined ? { filter } : {}) });
    },
    failNext(n, status, headers = {}, filter): void {
      faults.failRules.push({ remaining: n, status, headers, ...(filter !== undefined ? { filter } : {}) });
    },
    corruptBlob: (digest, offset) => void faults.corrupt.set(digest, offset),
    dieMidBlob: (digest, afterBytes, times = 1) => void faults.dieMid.set(digest, { afterBytes, remaining: times }),
    stallMidBlob: (digest, afterBytes, times = 1) => void faults.stallMid.set(digest, { afterBytes, remaining: times }),
    throttle: (bps) => void (faults.throttleBps = bps && bps > 0 ? bps : null),
    get redirectBlobs(): boolean {
      return faults.redirectBlobs;
    },
    set redirectBlobs(v: boolean) {
      faults.redirectBlobs = v;
    },
    get tokenTtlSeconds(): number {
      return tokens.ttlSeconds;
    },
    set tokenTtlSeconds(v: number) {
      tokens.ttlSeconds = v;
    },
    expireTokensNow: () => tokens.expireAll(),
    setRateLimitRemaining: (n) => void (rateRemaining = n),
    clearFaults: () => faults.clear(),
    async down(mode = 'reset'): Promise<void> {
      downMode = mode;
      for (const s of sockets) s.resetAndDestroy();
      if (mode === 'refuse') await closeServer(server, sockets);
    },
    async up(): Promise<void> {
      const wasRefusing = downMode === 'refuse';
      downMode = null;
      if (wasRefusing && !server.listening) await listen(server, port, '127.0.0.1');
    },
    async stop(): Promise<void> {
      downMode = null;
      await Promise.all([closeServer(server, sockets), cdn.close()]);
      await dispatcher.close();
    },
  };
}
