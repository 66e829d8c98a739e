// A small OCI pull client on undici, for load tests: tag → manifest (an index
// resolves to its linux/amd64 child) → config and layers, every blob streamed
// through sha256 and checked against its descriptor. Failures are classified,
// so a test can tell a clean failure (error JSON, a reset connection) from
// wrong bytes accepted, which must never happen.
import { createHash } from 'node:crypto';
import { request, type Dispatcher } from 'undici';
import { ALL_MANIFEST_ACCEPT, MediaTypes } from './seed.js';

/** dockerd (`registry-mirrors`) asks for `/v2/library/<name>/…`; containerd adds `?ns=docker.io`. */
export type ClientForm = 'dockerd' | 'containerd';

/**
 * - `http`: an error status with the distribution spec's error JSON (clean).
 * - `connection`: refused, not accepted in time, reset or cut short before the end (clean: never complete).
 * - `timeout`: no headers or body bytes within the client's deadline.
 * - `bad-error`: an error status without a valid OCI error body.
 * - `protocol`: a 200 that breaks the protocol (headers, JSON) without wrong bytes.
 * - `wrong-bytes`: a complete 200 response whose bytes fail their digest or size.
 */
export type FailureKind = 'http' | 'connection' | 'timeout' | 'bad-error' | 'protocol' | 'wrong-bytes';

export const CLEAN_FAILURES: readonly FailureKind[] = ['http', 'connection'];

export class PullFailure extends Error {
  constructor(
    readonly kind: FailureKind,
    message: string,
    readonly status?: number,
    readonly code?: string,
  ) {
    super(message);
    this.name = 'PullFailure';
  }
}

export interface PullRequest {
  /** Repository under docker.io, e.g. `library/load-007`. */
  repo: string;
  tag: string;
  /** The digest the tag must resolve to (index or manifest). */
  expectDigest?: string;
}

export interface PullOptions {
  mirrorUrl: string;
  dispatcher: Dispatcher;
  form: ClientForm;
  /** Blobs fetched at once, as real clients download layers in parallel. */
  blobConcurrency?: number;
}

export interface PullResult {
  /** Manifest and blob bytes received and verified. */
  bytes: number;
  manifests: number;
  blobs: number;
}

interface Descriptor {
  mediaType?: string;
  digest: string;
  size: number;
  platform?: { os?: string; architecture?: string };
}

const INDEX_TYPES = new Set<string>([MediaTypes.ociIndex, MediaTypes.dockerList]);
const MAX_MANIFEST = 4 * 1024 * 1024;
/** No connection, or one cut short: nothing complete was received. A connect timeout sent nothing at all. */
const CONNECTION_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ECONNABORTED', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_RES_CONTENT_LENGTH_MISMATCH', 'UND_ERR_ABORTED', 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH',
]);
/** A request sent and then left hanging (no headers, or a body gone silent). */
const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'ETIMEDOUT']);

/** Maps anything thrown by undici or by our checks onto a PullFailure. */
export function classify(err: unknown): PullFailure {
  if (err instanceof PullFailure) return err;
  const e = err as { code?: string; message?: string; cause?: { code?: string } };
  const code = e.code ?? e.cause?.code ?? '';
  const message = `${code ? `${code} ` : ''}${e.message ?? String(err)}`;
  if (TIMEOUT_CODES.has(code)) return new PullFailure('timeout', message);
  if (CONNECTION_CODES.has(code) || /other side closed|socket hang up|terminated/i.test(message)) return new PullFailure('connection', message);
  return new PullFailure('protocol', message);
}

function url(options: PullOptions, repo: string, kind: 'manifests' | 'blobs', reference: string): string {
  const base = `${options.mirrorUrl}/v2/${repo}/${kind}/${reference}`;
  return options.form === 'containerd' ? `${base}?ns=docker.io` : base;
}

const sha256 = (data: Buffer): string => `sha256:${createHash('sha256').update(data).digest('hex')}`;

/** Reads an error answer: clean when it is `{"errors":[{"code":…}]}` (HEAD-less GETs always carry one). */
async function errorAnswer(what: string, res: Dispatcher.ResponseData): Promise<PullFailure> {
  let text = '';
  try {
    text = await res.body.text();
  } catch (err) {
    return classify(err);
  }
  try {
    const parsed = JSON.parse(text) as { errors?: { code?: unknown; message?: unknown }[] };
    const first = parsed.errors?.[0];
    if (typeof first?.code === 'string' && first.code.length > 0) {
      return new PullFailure('http', `${what}: ${res.statusCode} ${first.code} ${String(first.message ?? '')}`, res.statusCode, first.code);
    }
  } catch {
    // falls through to bad-error
  }
  return new PullFailure('bad-error', `${what}: ${res.statusCode} without OCI error JSON: ${text.slice(0, 200)}`, res.statusCode);
}

async function fetchManifest(options: PullOptions, repo: string, reference: string): Promise<{ bytes: Buffer; mediaType: string; digest: string }> {
  const res = await request(url(options, repo, 'manifests', reference), { dispatcher: options.dispatcher, headers: { accept: ALL_MANIFEST_ACCEPT } });
  if (res.statusCode !== 200) throw await errorAnswer(`manifest ${repo}:${reference}`, res);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res.body) {
    size += (chunk as Buffer).length;
    if (size > MAX_MANIFEST) {
      res.body.destroy();
      throw new PullFailure('protocol', `manifest ${repo}:${reference} over ${MAX_MANIFEST} bytes`);
    }
    chunks.push(chunk as Buffer);
  }
  const bytes = Buffer.concat(chunks);
  const digest = sha256(bytes);
  const header = res.headers['docker-content-digest'];
  if (header !== digest) throw new PullFailure('wrong-bytes', `manifest ${repo}:${reference} hashes to ${digest}, Docker-Content-Digest says ${String(header)}`);
  let mediaType = String(res.headers['content-type'] ?? '');
  if (!mediaType) mediaType = String((JSON.parse(bytes.toString('utf8')) as { mediaType?: string }).mediaType ?? '');
  return { bytes, mediaType, digest };
}

/** GETs a blob and hashes it as it streams; a complete body must match the descriptor. */
async function fetchBlob(options: PullOptions, repo: string, d: Descriptor): Promise<number> {
  const res = await request(url(options, repo, 'blobs', d.digest), { dispatcher: options.dispatcher });
  if (res.statusCode !== 200) throw await errorAnswer(`blob ${d.digest.slice(0, 19)}`, res);
  const length = res.headers['content-length'];
  if (length !== undefined && Number(length) !== d.size) {
    res.body.destroy();
    throw new PullFailure('protocol', `blob ${d.digest} Content-Length ${String(length)}, descriptor says ${d.size}`);
  }
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of res.body) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  const got = `sha256:${hash.digest('hex')}`;
  if (bytes !== d.size || got !== d.digest) {
    throw new PullFailure('wrong-bytes', `blob ${d.digest}: complete 200 response of ${bytes} bytes hashing to ${got} (want ${d.size} bytes)`);
  }
  return bytes;
}

function parseJson<T>(bytes: Buffer, what: string): T {
  try {
    return JSON.parse(bytes.toString('utf8')) as T;
  } catch {
    throw new PullFailure('protocol', `${what} is not JSON`);
  }
}

/** Runs `work` over `items`, `limit` at a time; every item runs, and the worst failure is thrown. */
async function allBounded<T>(items: T[], limit: number, work: (item: T) => Promise<number>): Promise<number> {
  let next = 0;
  let total = 0;
  const failures: PullFailure[] = [];
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const item = items[next++]!;
        try {
          total += await work(item);
        } catch (err) {
          failures.push(classify(err));
        }
      }
    }),
  );
  const worst = failures.find((f) => f.kind === 'wrong-bytes') ?? failures.find((f) => !CLEAN_FAILURES.includes(f.kind)) ?? failures[0];
  if (worst) throw worst;
  return total;
}

/** Pulls one image through the mirror; throws a PullFailure saying how it failed. */
export async function pullImage(options: PullOptions, image: PullRequest): Promise<PullResult> {
  try {
    let manifest = await fetchManifest(options, image.repo, image.tag);
    if (image.expectDigest !== undefined && manifest.digest !== image.expectDigest) {
      throw new PullFailure('wrong-bytes', `${image.repo}:${image.tag} resolved to ${manifest.digest}, expected ${image.expectDigest}`);
    }
    let bytes = manifest.bytes.length;
    let manifests = 1;
    if (INDEX_TYPES.has(manifest.mediaType)) {
      const index = parseJson<{ manifests?: Descriptor[] }>(manifest.bytes, 'index');
      const child = index.manifests?.find((m) => m.platform?.os === 'linux' && m.platform.architecture === 'amd64');
      if (!child) throw new PullFailure('protocol', `${image.repo}:${image.tag}: no linux/amd64 entry in the index`);
      manifest = await fetchManifest(options, image.repo, child.digest);
      if (manifest.digest !== child.digest || manifest.bytes.length !== child.size) {
        throw new PullFailure('wrong-bytes', `child ${child.digest} came back as ${manifest.digest} (${manifest.bytes.length} bytes)`);
      }
      bytes += manifest.bytes.length;
      manifests += 1;
    }
    const parsed = parseJson<{ config?: Descriptor; layers?: Descriptor[] }>(manifest.bytes, 'manifest');
    if (!parsed.config || !Array.isArray(parsed.layers)) throw new PullFailure('protocol', `${image.repo}:${image.tag}: manifest without config or layers`);
    const blobs = [parsed.config, ...parsed.layers];
    bytes += await allBounded(blobs, options.blobConcurrency ?? 3, (d) => fetchBlob(options, image.repo, d));
    return { bytes, manifests, blobs: blobs.length };
  } catch (err) {
    throw classify(err);
  }
}
