import type { Context } from 'koa';
import Router from '@koa/router';
import { LRUCache } from 'lru-cache';
import { digestInvalid, invalidParameter, loopDetected, mirrorChainTooLong, nameInvalid, routeUnknown, unsupported } from '../oci/errors.js';
import { VIA_HEADER } from '../oci/headers.js';
import { manifestAccept, parseAccept } from '../oci/media-types.js';
import { validateTag } from '../oci/reference.js';
import type { Mirror, Requester, Target } from '../mirror/mirror.js';
import { requestedRange } from './range.js';
import type { RequestLogFields } from './request-log.js';
import { isRecycling, sendRecycling } from './blob-body.js';

/** More hops than any sane mirror tree; longer chains are refused. */
const MAX_VIA = 16;
const API_VERSION = {
  'Docker-Distribution-API-Version': 'registry/2.0',
  // Registry content is never a page: no sniffing, no scripts, even if an upstream lies about a type.
  'X-Content-Type-Options': 'nosniff',
  'Content-Security-Policy': "default-src 'none'; sandbox",
};
/** `/v2/<name>/<kind>/<reference>`; the name is greedy, so it may contain `/manifests/`. */
const ROUTE = /^\/v2\/(.+)\/(manifests|blobs|tags|referrers)\/([^/]+)$/;

/** Blob hits a front server sends instead of Node: the header to answer with, and where its files live. */
export interface Offload {
  header: string;
  prefix: string;
  minSize: number;
}

/** Decides whether the request's user may pull the target; throws DENIED if not. */
export type Authorize = (user: string | undefined, target: Target) => void;

/** Clients send the same few Accept headers over and over: parse each once. */
const acceptCache = new LRUCache<string, string[]>({ max: 512 });

function acceptedManifests(header: string | string[] | undefined): string[] {
  const raw = Array.isArray(header) ? header.join(',') : (header ?? '');
  if (raw.length > 2048) return manifestAccept(parseAccept(raw));
  let types = acceptCache.get(raw);
  if (!types) {
    types = manifestAccept(parseAccept(raw));
    acceptCache.set(raw, types);
  }
  return types;
}

/** Translates the /v2 pull API between HTTP and the mirror; policy comes in through `authorize`. */
export function v2Routes(mirror: Mirror, instanceId: string, authorize?: Authorize, offload?: Offload, redirect?: boolean): Router {
  const router = new Router();

  router.use('/v2', async (ctx, next) => {
    ctx.set(API_VERSION);
    await next();
  });

  router.get('/v2/', (ctx) => {
    (ctx.state as RequestLogFields).route = 'ping';
    ctx.type = 'application/json';
    ctx.body = '{}';
  });

  router.all('/v2/{*rest}', async (ctx) => {
    if (ctx.method !== 'GET' && ctx.method !== 'HEAD') {
      ctx.set('Allow', 'GET, HEAD');
      throw unsupported(`${ctx.method} is not supported: this is a read-only pull-through mirror`);
    }
    const match = ROUTE.exec(ctx.path);
    if (!match) throw routeUnknown(ctx.path);
    const [, rawName, kind, rawReference] = match as unknown as [string, string, string, string];
    (ctx.state as RequestLogFields).route = kind;
    if (rawName.includes('%')) throw nameInvalid('percent-encoded characters are not allowed in repository names');
    const reference = rawReference.replace(/%3a/gi, ':');
    if (reference.includes('%')) {
      throw kind === 'manifests' ? validateTagError(reference) : digestInvalid('percent-encoded characters are not allowed in digests');
    }
    const head = ctx.method === 'HEAD';
    const target = mirror.resolve(rawName, singleQuery(ctx, 'ns'), viaChain(ctx, instanceId));
    const log = ctx.state as RequestLogFields;
    log.repo = target.repo;
    log.upstream = target.registry;
    authorize?.(log.user, target);
    if (singleQuery(ctx, 'ns') !== undefined) ctx.set('OCI-Namespace', target.registry);

    switch (kind) {
      case 'manifests':
        return serveManifest(ctx, mirror, target, reference, head);
      case 'blobs':
        return serveBlob(ctx, mirror, target, reference, head, offload, redirect);
      case 'tags':
        if (reference !== 'list') throw routeUnknown(ctx.path);
        return serveTags(ctx, mirror, target, rawName, head);
      case 'referrers':
        return serveReferrers(ctx, mirror, target, reference, head);
    }
  });

  return router;
}

async function serveManifest(ctx: Context, mirror: Mirror, target: Target, reference: string, head: boolean): Promise<void> {
  const log = ctx.state as RequestLogFields;
  log.reference = reference;
  if (!reference.includes(':')) validateTag(reference);
  const answer = await mirror.manifest(target, reference, acceptedManifests(ctx.headers.accept), head);
  log.cache = answer.cache;
  log.digest = answer.digest;
  log.mediaType = answer.mediaType;
  log.size = answer.size;
  ctx.status = 200;
  if (!head) ctx.body = answer.bytes;
  ctx.set({
    'Content-Type': answer.mediaType,
    'Content-Length': String(answer.size),
    'Docker-Content-Digest': answer.digest,
    ETag: `"${answer.digest}"`,
  });
}

async function serveBlob(ctx: Context, mirror: Mirror, target: Target, reference: string, head: boolean, offload?: Offload, redirect?: boolean): Promise<void> {
  const log = ctx.state as RequestLogFields;
  log.digest = reference;
  const answer = await mirror.blob(target, reference, head, requesterOf(ctx));
  log.cache = answer.cache;
  log.size = answer.size;
  if (redirect && !head) {
    // A presigned URL is signed for GET: only GETs of verified objects are sent there.
    const location = await answer.presignedUrl?.();
    if (location) {
      log.redirected = true;
      ctx.status = 307;
      ctx.set({ Location: location, 'Docker-Content-Digest': answer.digest, 'Cache-Control': 'no-store' });
      ctx.body = '';
      return;
    }
  }
  const file = offload && !head && answer.size >= offload.minSize ? await answer.verifiedFile?.() : undefined;
  if (offload && file) {
    // The front server sends the file (and any Range of it); only verified bytes are handed over.
    log.offloaded = true;
    ctx.status = 200;
    ctx.set({ [offload.header]: `${offload.prefix}${file}`, 'Docker-Content-Digest': answer.digest, 'Content-Type': 'application/octet-stream' });
    ctx.body = '';
    return;
  }
  const range = requestedRange(ctx.get('Range') || undefined, answer.size);
  const length = range ? range.end - range.start + 1 : answer.size;
  ctx.status = range ? 206 : 200;
  const body = head ? undefined : await answer.open(range);
  ctx.set({
    'Content-Type': 'application/octet-stream',
    'Content-Length': String(length),
    'Docker-Content-Digest': answer.digest,
    'Accept-Ranges': 'bytes',
    ETag: `"${answer.digest}"`,
  });
  if (range) ctx.set('Content-Range', `bytes ${range.start}-${range.end}/${answer.size}`);
  if (body && !Buffer.isBuffer(body) && isRecycling(body)) {
    // Written here rather than by Koa, so that its buffers are reused (see blob-body.ts).
    ctx.respond = false;
    sendRecycling(ctx.res, body);
  } else if (body) {
    ctx.body = body;
  }
}

async function serveTags(ctx: Context, mirror: Mirror, target: Target, clientName: string, head: boolean): Promise<void> {
  const rawN = singleQuery(ctx, 'n');
  if (rawN !== undefined && !/^\d{1,9}$/.test(rawN)) throw invalidParameter(`n must be a count of tags, not "${rawN.slice(0, 40)}"`);
  const n = rawN === undefined ? undefined : Number(rawN);
  const page = await mirror.tags(target, n, singleQuery(ctx, 'last'));
  (ctx.state as RequestLogFields).cache = page.cache;
  if (page.next !== undefined) {
    // The next page, on this mirror, under the name the client used.
    const next = new URLSearchParams({ n: String(n), last: page.next });
    const ns = singleQuery(ctx, 'ns');
    if (ns !== undefined) next.set('ns', ns);
    ctx.set('Link', `</v2/${clientName}/tags/list?${next}>; rel="next"`);
  }
  sendJson(ctx, Buffer.from(JSON.stringify({ name: clientName, tags: page.tags })), 'application/json', head);
}

async function serveReferrers(ctx: Context, mirror: Mirror, target: Target, digest: string, head: boolean): Promise<void> {
  const answer = await mirror.referrers(target, digest, singleQuery(ctx, 'artifactType'));
  (ctx.state as RequestLogFields).cache = answer.cache;
  if (answer.filtered) ctx.set('OCI-Filters-Applied', 'artifactType');
  // Whether the upstream's referrers API answered, or the referrers tag schema stood in for it.
  ctx.set('Stevedore-Referrers-Source', answer.source);
  sendJson(ctx, answer.bytes, 'application/vnd.oci.image.index.v1+json', head);
}

function sendJson(ctx: Context, bytes: Buffer, type: string, head: boolean): void {
  ctx.status = 200;
  ctx.type = type;
  ctx.set('Content-Length', String(bytes.length));
  if (!head) ctx.body = bytes;
}

/** The client behind a request; its signal (made only when a fill needs it) aborts when the client leaves before the response ends. */
function requesterOf(ctx: Context): Requester {
  const res = ctx.res;
  let controller: AbortController | undefined;
  return {
    client: ctx.ip,
    get signal(): AbortSignal {
      if (!controller) {
        const made = (controller = new AbortController());
        if (res.closed) made.abort();
        else res.once('close', () => res.writableFinished || made.abort());
      }
      return controller.signal;
    },
  };
}

/** The mirrors this request already passed through, plus this one; a repeat is a loop. */
function viaChain(ctx: Context, instanceId: string): string[] {
  const header = ctx.get(VIA_HEADER);
  const chain = header ? header.split(',').map((s) => s.trim()).filter(Boolean) : [];
  // Every entry is checked: a chain padded past the limit must not hide this mirror from the check.
  if (chain.length > MAX_VIA) throw mirrorChainTooLong(chain.length, MAX_VIA);
  if (chain.includes(instanceId)) throw loopDetected(`request passed ${[...chain, instanceId].join(' → ')}: check the endpoints of these mirrors`);
  return [...chain, instanceId];
}

function singleQuery(ctx: Context, name: string): string | undefined {
  const value = ctx.query[name];
  if (Array.isArray(value)) throw nameInvalid(`query parameter "${name}" given more than once`);
  return value;
}

function validateTagError(reference: string): Error {
  try {
    validateTag(reference);
  } catch (err) {
    return err as Error;
  }
  return digestInvalid('percent-encoded characters are not allowed');
}
