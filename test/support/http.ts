// Small HTTP helpers for tests: fetch whole bodies and hash them as they stream.
import { createHash } from 'node:crypto';
import { request, type Dispatcher } from 'undici';
import { assertSpecErrorBody } from './spec-errors.js';

export interface Fetched {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

export async function get(url: string, headers: Record<string, string> = {}, method: 'GET' | 'HEAD' | 'PUT' | 'DELETE' | 'POST' | 'PATCH' | 'OPTIONS' = 'GET'): Promise<Fetched> {
  const res = await request(url, { method, headers });
  const body = Buffer.from(await res.body.arrayBuffer());
  assertSpecErrorBody(url, res.statusCode, res.headers, body);
  return { status: res.statusCode, headers: res.headers, body };
}

export function json(f: Fetched): { errors?: { code: string; message: string; detail?: unknown }[] } {
  return JSON.parse(f.body.toString('utf8')) as { errors?: { code: string; message: string; detail?: unknown }[] };
}

export interface StreamedDigest {
  status: number;
  digest: string;
  bytes: number;
  firstByteAt: number;
  endedAt: number;
}

/** GETs a blob and hashes it while it streams, never holding it in memory. */
export async function streamDigest(url: string, headers: Record<string, string> = {}, dispatcher?: Dispatcher): Promise<StreamedDigest> {
  const res = await request(url, { headers, dispatcher });
  const hash = createHash('sha256');
  let bytes = 0;
  let firstByteAt = 0;
  for await (const chunk of res.body) {
    if (bytes === 0) firstByteAt = Date.now();
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { status: res.statusCode, digest: `sha256:${hash.digest('hex')}`, bytes, firstByteAt, endedAt: Date.now() };
}
