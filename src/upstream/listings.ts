import { badGateway, manifestUnknown, nameUnknown } from '../oci/errors.js';
import { MediaType } from '../oci/media-types.js';
import { header } from './endpoint-client.js';
import { readLimited, type UpstreamRegistry } from './upstream-registry.js';

/** Pages followed for one listing; a registry that pages further is cut off there (and the list is logged as such). */
const MAX_PAGES = 100;
/** Bytes of one page of a listing. */
const MAX_PAGE_BYTES = 4 * 1024 * 1024;

export interface ListingRequest {
  repo: string;
  via: readonly string[];
  /** Bounds each page's request, every phase included. */
  timeoutMs?: number;
}

/** A descriptor in a referrers index, as the upstream gave it. */
export type ReferrerDescriptor = Record<string, unknown> & { digest: string; mediaType: string; size: number; artifactType?: string };

/** Every tag of a repository, following the upstream's Link pages. */
export async function fetchTagList(upstream: UpstreamRegistry, request: ListingRequest): Promise<{ tags: string[]; complete: boolean }> {
  const tags = new Set<string>();
  let path: string | undefined = `/v2/${request.repo}/tags/list`;
  for (let page = 0; path && page < MAX_PAGES; page++) {
    const res = await upstream.send({ method: 'GET', path, repo: request.repo, headers: { accept: 'application/json' }, via: request.via, ...deadline(request) });
    if (res.status !== 200) throw await upstream.failure(res, () => nameUnknown(request.repo, `${request.repo} not found upstream in ${upstream.name}`));
    const body = parseJson(await readLimited(res.body, MAX_PAGE_BYTES, `tag list of ${request.repo}`), `tag list of ${request.repo}`) as { tags?: unknown };
    if (body.tags !== null && body.tags !== undefined && !Array.isArray(body.tags)) throw badGateway(`upstream ${upstream.name} sent a tag list of ${request.repo} without a tags array`);
    for (const tag of (body.tags as unknown[] | null | undefined) ?? []) if (typeof tag === 'string') tags.add(tag);
    path = nextPage(header(res.headers, 'link'), `/v2/${request.repo}/tags/list`);
  }
  return { tags: [...tags], complete: path === undefined };
}

/**
 * The referrers of `subject` from the upstream's referrers API, unfiltered, all
 * pages merged; undefined when the upstream has no such API (it answers 404).
 */
export async function fetchReferrers(upstream: UpstreamRegistry, request: ListingRequest, subject: string): Promise<ReferrerDescriptor[] | undefined> {
  const manifests = new Map<string, ReferrerDescriptor>();
  const base = `/v2/${request.repo}/referrers/${subject}`;
  let path: string | undefined = base;
  for (let page = 0; path && page < MAX_PAGES; page++) {
    const res = await upstream.send({ method: 'GET', path, repo: request.repo, headers: { accept: MediaType.ociIndex }, via: request.via, ...deadline(request) });
    if (res.status === 404 && page === 0) {
      await res.body.dump();
      return undefined;
    }
    if (res.status !== 200) throw await upstream.failure(res, () => manifestUnknown(subject, `upstream ${upstream.name} has no referrers for ${subject}`));
    const index = parseJson(await readLimited(res.body, MAX_PAGE_BYTES, `referrers of ${subject}`), `referrers of ${subject}`);
    for (const descriptor of referrersOf(index, `upstream ${upstream.name}'s referrers of ${subject}`)) manifests.set(descriptor.digest, descriptor);
    path = nextPage(header(res.headers, 'link'), base);
  }
  return [...manifests.values()];
}

/** The descriptors of an image index listing referrers; throws on anything else. */
export function referrersOf(index: unknown, what: string): ReferrerDescriptor[] {
  const manifests = (index as { manifests?: unknown } | null)?.manifests;
  if (!Array.isArray(manifests)) throw badGateway(`${what} is not an image index`);
  return manifests.filter((d): d is ReferrerDescriptor => {
    const descriptor = d as Partial<ReferrerDescriptor> | null;
    return typeof descriptor?.digest === 'string' && typeof descriptor.mediaType === 'string' && typeof descriptor.size === 'number';
  });
}

function deadline(request: ListingRequest): { signal?: AbortSignal } {
  return request.timeoutMs !== undefined ? { signal: AbortSignal.timeout(request.timeoutMs) } : {};
}

function parseJson(bytes: Buffer, what: string): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch {
    throw badGateway(`the upstream's ${what} is not JSON`);
  }
}

/** The next page's path from a Link header, only below `base` (a listing never leads elsewhere). */
function nextPage(link: string | undefined, base: string): string | undefined {
  const match = link && /<([^>]*)>\s*;\s*rel="?next"?/i.exec(link);
  if (!match) return undefined;
  try {
    const next = new URL(match[1]!, 'http://upstream.invalid');
    return next.pathname.endsWith(base) && next.search ? `${base}${next.search}` : undefined;
  } catch {
    return undefined;
  }
}
