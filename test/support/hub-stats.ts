// Request counters and logs for the Docker Hub double.
import type { IncomingMessage } from 'node:http';
import type { RequestKind } from './hub-faults.js';

export interface HubRequestLog {
  method: string;
  path: string;
  /** 0 until the response head is sent. */
  status: number;
  kind: RequestKind;
  server: 'hub' | 'cdn';
  at: number;
}

export interface AuthRecord {
  server: 'hub' | 'cdn';
  method: string;
  path: string;
  authorization: string;
}

export interface HubStats {
  manifestGet: number;
  manifestHead: number;
  blobGet: number;
  blobHead: number;
  /** GET and HEAD of /v2/<repo>/referrers/<digest>, answered by the double or the registry. */
  referrers: number;
  tokens: number;
  cdnGet: number;
  other: number;
  /** Requests answered 401 by the token check. */
  unauthorized: number;
  /** Body bytes written to clients by the hub and the CDN. */
  bytesServed: number;
  requests: HubRequestLog[];
}

const MANIFEST_RE = /^\/v2\/.+\/manifests\/[^/]+$/;
const BLOB_RE = /^\/v2\/.+\/blobs\/sha256:[a-f0-9]{64}$/;
const REFERRERS_RE = /^\/v2\/.+\/referrers\/[^/]+$/;

export function classify(method: string, path: string): RequestKind {
  if (path === '/token') return 'token';
  const read = method === 'GET' ? 'Get' : method === 'HEAD' ? 'Head' : undefined;
  if (read && MANIFEST_RE.test(path)) return read === 'Get' ? 'manifestGet' : 'manifestHead';
  if (read && BLOB_RE.test(path)) return read === 'Get' ? 'blobGet' : 'blobHead';
  if (read && REFERRERS_RE.test(path)) return 'referrers';
  return 'other';
}

// Keeps memory bounded in long soak tests; counters stay exact.
const MAX_LOG = 50_000;

export class StatsBook {
  private counts = StatsBook.zero();
  requests: HubRequestLog[] = [];
  auth: AuthRecord[] = [];

  private static zero(): Omit<HubStats, 'requests'> {
    return { manifestGet: 0, manifestHead: 0, blobGet: 0, blobHead: 0, referrers: 0, tokens: 0, cdnGet: 0, other: 0, unauthorized: 0, bytesServed: 0 };
  }

  start(method: string, path: string, kind: RequestKind, server: 'hub' | 'cdn'): HubRequestLog {
    const entry: HubRequestLog = { method, path, status: 0, kind, server, at: Date.now() };
    if (this.requests.length < MAX_LOG) this.requests.push(entry);
    const key = kind === 'token' ? 'tokens' : kind;
    this.counts[key]++;
    return entry;
  }

  countUnauthorized(): void {
    this.counts.unauthorized++;
  }

  addBytes(n: number): void {
    this.counts.bytesServed += n;
  }

  snapshot(): HubStats {
    return { ...this.counts, requests: this.requests.map((r) => ({ ...r })) };
  }

  reset(): void {
    this.counts = StatsBook.zero();
    this.requests = [];
    this.auth = [];
  }
}

export function recordAuth(book: StatsBook, server: 'hub' | 'cdn', req: IncomingMessage, path: string): void {
  const a = req.headers.authorization;
  if (a !== undefined && book.auth.length < MAX_LOG) book.auth.push({ server, method: req.method ?? 'GET', path, authorization: a });
}
