// The OCI distribution-spec 1.1 referrers API for the Docker Hub double, which
// distribution 2.8 lacks: every tagged manifest of the repository whose
// `subject.digest` is the asked digest, found by reading the registry behind it.
import type { ServerResponse } from 'node:http';
import { request, type Dispatcher } from 'undici';
import { errorBody } from './hub-tokens.js';
import { ALL_MANIFEST_ACCEPT, MediaTypes, sha256Digest } from './seed.js';

/** `/v2/<repo>/referrers/<digest>`. */
export const REFERRERS_RE = /^\/v2\/(.+)\/referrers\/([^/]+)$/;
/** Tags read per referrers request, at most. */
export const MAX_REFERRER_TAGS = 1000;
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const PARALLEL = 8;
const DIGEST_RE = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

export interface ReferrerDescriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

export interface ReferrersAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

interface ParsedManifest {
  mediaType?: unknown;
  artifactType?: unknown;
  config?: { mediaType?: unknown };
  subject?: { digest?: unknown };
  annotations?: unknown;
}

const validDigest = (d: string): boolean => DIGEST_RE.test(d) && (!d.startsWith('sha256:') || /^sha256:[a-f0-9]{64}$/.test(d));

async function readCapped(body: AsyncIterable<Buffer | Uint8Array>, limit: number): Promise<Buffer | undefined> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of body) {
    n += c.length;
    if (n > limit) return undefined;
    parts.push(Buffer.from(c));
  }
  return Buffer.concat(parts);
}

async function listTags(upstream: string, repo: string, dispatcher: Dispatcher): Promise<string[]> {
  const res = await request(`${upstream}/v2/${repo}/tags/list?n=${MAX_REFERRER_TAGS}`, { dispatcher });
  if (res.statusCode === 404) {
    await res.body.dump();
    return [];
  }
  const bytes = await readCapped(res.body, MAX_MANIFEST_BYTES);
  if (res.statusCode !== 200 || !bytes) throw new Error(`tags/list of ${repo} answered ${res.statusCode}`);
  const tags = (JSON.parse(bytes.toString('utf8')) as { tags?: unknown }).tags;
  return Array.isArray(tags) ? tags.filter((t): t is string => typeof t === 'string').slice(0, MAX_REFERRER_TAGS) : [];
}

/** The referrer descriptor of one tagged manifest, when its subject is `digest`. */
async function referrerAt(upstream: string, repo: string, tag: string, digest: string, dispatcher: Dispatcher): Promise<ReferrerDescriptor | undefined> {
  const res = await request(`${upstream}/v2/${repo}/manifests/${encodeURIComponent(tag)}`, { headers: { accept: ALL_MANIFEST_ACCEPT }, dispatcher });
  if (res.statusCode !== 200) {
    await res.body.dump();
    return undefined; // deleted since the listing, or a type the registry will not serve
  }
  const bytes = await readCapped(res.body, MAX_MANIFEST_BYTES);
  if (!bytes) return undefined;
  let m: ParsedManifest;
  try {
    m = JSON.parse(bytes.toString('utf8')) as ParsedManifest;
  } catch {
    return undefined;
  }
  if (typeof m !== 'object' || m === null || m.subject?.digest !== digest) return undefined;
  const header = res.headers['content-type'];
  const mediaType = typeof m.mediaType === 'string' ? m.mediaType : typeof header === 'string' ? header : MediaTypes.ociManifest;
  const artifactType = typeof m.artifactType === 'string' ? m.artifactType : typeof m.config?.mediaType === 'string' ? m.config.mediaType : undefined;
  const annotations = typeof m.annotations === 'object' && m.annotations !== null ? (m.annotations as Record<string, string>) : undefined;
  return {
    mediaType,
    digest: sha256Digest(bytes),
    size: bytes.length,
    ...(artifactType !== undefined ? { artifactType } : {}),
    ...(annotations !== undefined ? { annotations } : {}),
  };
}

/** Referrers of `digest` in `repo`, as the image index the spec prescribes. */
export async function referrersAnswer(
  upstream: string, repo: string, digest: string, artifactType: string | undefined, dispatcher: Dispatcher,
): Promise<ReferrersAnswer> {
  const headers: Record<string, string> = { 'docker-distribution-api-version': 'registry/2.0' };
  if (!validDigest(digest)) {
    return { status: 400, headers: { ...headers, 'content-type': 'application/json' }, body: errorBody('DIGEST_INVALID', `invalid digest ${digest}`) };
  }
  let found: (ReferrerDescriptor | undefined)[];
  try {
    const tags = await listTags(upstream, repo, dispatcher);
    found = new Array<ReferrerDescriptor | undefined>(tags.length);
    let next = 0;
    const worker = async (): Promise<void> => {
      for (let i = next++; i < tags.length; i = next++) found[i] = await referrerAt(upstream, repo, tags[i]!, digest, dispatcher);
    };
    await Promise.all(Array.from({ length: Math.min(PARALLEL, tags.length) }, worker));
  } catch (err) {
    return { status: 502, headers: { ...headers, 'content-type': 'application/json' }, body: errorBody('UNAVAILABLE', `upstream: ${String(err)}`) };
  }
  const seen = new Set<string>();
  const manifests = found.filter((d): d is ReferrerDescriptor => {
    if (!d || seen.has(d.digest) || (artifactType !== undefined && d.artifactType !== artifactType)) return false;
    seen.add(d.digest);
    return true;
  });
  if (artifactType !== undefined) headers['oci-filters-applied'] = 'artifactType';
  const body = JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests });
  return { status: 200, headers: { ...headers, 'content-type': MediaTypes.ociIndex }, body };
}

export interface ServeReferrersHooks {
  /** Called with the status just before the head is written. */
  setStatus(status: number): void;
  /** Body bytes written (none for HEAD). */
  onBytes(n: number): void;
  /** Headers that override the answer's (an injected Content-Type lie). */
  headers?: Record<string, string>;
}

/** Writes the referrers answer for a GET or HEAD (no body for HEAD). */
export async function serveReferrers(
  res: ServerResponse, method: string, upstream: string, repo: string, digest: string, artifactType: string | undefined,
  dispatcher: Dispatcher, hooks: ServeReferrersHooks,
): Promise<void> {
  const a = await referrersAnswer(upstream, repo, digest, artifactType, dispatcher);
  const length = Buffer.byteLength(a.body);
  hooks.setStatus(a.status);
  res.writeHead(a.status, { ...a.headers, ...hooks.headers, 'content-length': length });
  if (method === 'HEAD') {
    res.end();
    return;
  }
  res.end(a.body);
  hooks.onBytes(length);
}
