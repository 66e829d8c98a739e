import { timingSafeEqual, createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { Agent, request } from 'undici';
import type { Peer } from './cluster.js';

/** Where a replica serves the fills it runs (and what it has cached) to the other replicas. */
export const PEER_BLOB_PATH = '/_stevedore/peer/blobs/';

/** A blob as a peer streams it, from `offset`. */
export interface PeerStream {
  body: Readable;
  /** The whole blob's size. */
  size: number;
  offset: number;
}

/** The peer answered, but not with the blob. */
export class PeerRefusedError extends Error {
  constructor(
    readonly peer: Peer,
    readonly status: number,
    detail: string,
  ) {
    super(`replica ${peer.id} (${peer.url}) answered ${status}: ${detail}`);
    this.name = 'PeerRefusedError';
  }
}

/** Streams blobs from other replicas over their internal endpoint, with the shared secret. */
export class PeerClient {
  private readonly agent: Agent;

  constructor(
    private readonly secret: string,
    timeouts: { connectMs: number; headersMs: number; bodyIdleMs: number },
  ) {
    this.agent = new Agent({ connect: { timeout: timeouts.connectMs }, headersTimeout: timeouts.headersMs, bodyTimeout: timeouts.bodyIdleMs, keepAliveTimeout: 30_000 });
  }

  /** Opens `digest` at `offset` from `peer`; the bytes come as the peer's fill receives them. */
  async open(peer: Peer, digest: string, offset: number, signal?: AbortSignal): Promise<PeerStream> {
    const res = await request(new URL(`${PEER_BLOB_PATH}${digest}`, peer.url), {
      method: 'GET',
      dispatcher: this.agent,
      headers: { authorization: `Bearer ${this.secret}`, ...(offset > 0 ? { range: `bytes=${offset}-` } : {}) },
      signal,
    });
    const expected = offset > 0 ? 206 : 200;
    if (res.statusCode !== expected) {
      const text = (await res.body.text().catch(() => '')).slice(0, 300);
      throw new PeerRefusedError(peer, res.statusCode, text || 'no body');
    }
    const size = offset > 0 ? Number(/\/(\d+)$/.exec(String(res.headers['content-range'] ?? ''))?.[1]) : Number(res.headers['content-length']);
    if (!Number.isSafeInteger(size) || size < offset) {
      res.body.destroy();
      throw new PeerRefusedError(peer, res.statusCode, 'no usable size in the answer');
    }
    return { body: res.body, size, offset };
  }

  async close(): Promise<void> {
    await this.agent.close();
  }
}

/** Whether a request carries the cluster's secret; constant time, whatever the lengths. */
export function hasPeerSecret(authorization: string | undefined, secret: string): boolean {
  if (!secret || !authorization?.startsWith('Bearer ')) return false;
  const presented = createHash('sha256').update(authorization.slice('Bearer '.length)).digest();
  const expected = createHash('sha256').update(secret).digest();
  return timingSafeEqual(presented, expected);
}
