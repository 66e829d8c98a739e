import type { Readable } from 'node:stream';
import {
  blobUnknown,
  denied,
  isRegistryError,
  loopDetected,
  manifestUnknown,
  RegistryError,
  badGateway,
  tooManyRequests,
  unavailable,
} from '../oci/errors.js';
import { UpstreamAuthError } from './auth.js';
import { withLogDetail } from '../oci/errors.js';
import { header, type EndpointClient, type ResponseHeaders, type UpstreamRequest, type UpstreamResponse } from './endpoint-client.js';

export { header };
import type { EndpointSnapshot } from './endpoint-state.js';
import { retryAfterFromWindow } from './rate-limit.js';
import { Semaphore } from './semaphore.js';

export interface RegistrySettings {
  /** Overrides the global tag TTL for this registry. */
  tagTtlMs: number | undefined;
  maxConcurrentFetches: number;
  /** Fills that may wait for a slot; beyond this, clients get 429. */
  maxQueuedFetches: number;
}

export interface FetchedManifest {
  bytes: Buffer;
  contentType: string | undefined;
  /** The upstream's Docker-Content-Digest, to cross-check. */
  digest: string | undefined;
  /** The endpoint that answered, without credentials. */
  endpoint: string;
}

export interface ManifestHead {
  digest: string | undefined;
  contentType: string | undefined;
  size: number | undefined;
}

export interface BlobStream {
  /** Size of the whole blob, when the upstream said. */
  size: number | undefined;
  body: Readable;
  endpoint: EndpointClient;
  /** Leading bytes to drop: the upstream ignored our Range and sent the blob from the start. */
  skip: number;
}

/** Why a request to an endpoint got no response at all. */
export type RequestFailureKind = 'refused' | 'reset' | 'timeout' | 'dns' | 'tls' | 'deadline' | 'error';

export interface RegistryEvents {
  /** A request to an endpoint that ended without a response (responses are observed by the endpoint client). */
  requestFailed?(failure: { endpoint: string; method: string; kind: RequestFailureKind }): void;
}

export interface SendOptions {
  /** Endpoints to try last, such as one that just failed mid-blob. */
  avoid?: ReadonlySet<EndpointClient>;
}

function contentLength(headers: ResponseHeaders): number | undefined {
  const value = header(headers, 'content-length');
  return value !== undefined && /^\d+$/.test(value) ? Number(value) : undefined;
}

/** Seconds from a Retry-After header (delta-seconds or an HTTP date). */
export function retryAfterSeconds(value: string | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - now) / 1000));
}

/**
 * A configured registry (docker.io, ghcr.io, …) reached through its endpoints in
 * order. An endpoint whose circuit is open is skipped; a connection failure or a
 * server error moves on to the next one.
 */
export class UpstreamRegistry {
  /** Blob fills running at once against this registry. */
  readonly fetchSlots: Semaphore;

  constructor(
    readonly name: string,
    readonly endpoints: readonly EndpointClient[],
    readonly settings: RegistrySettings,
    private readonly events: RegistryEvents = {},
  ) {
    this.fetchSlots = new Semaphore(settings.maxConcurrentFetches, settings.maxQueuedFetches);
  }

  async send(req: UpstreamRequest, options: SendOptions = {}): Promise<UpstreamResponse & { client: EndpointClient }> {
    const avoid = options.avoid;
    const order = avoid ? [...this.endpoints.filter((e) => !avoid.has(e)), ...this.endpoints.filter((e) => avoid.has(e))] : this.endpoints;
    const failures: string[] = [];
    for (const endpoint of order) {
      // The caller's deadline covers every endpoint: once it passed, trying another is no use.
      if (req.signal?.aborted) {
        throw unavailable(`upstream ${this.name} did not answer within the deadline${failures.length ? `: ${failures.join('; ')}` : ''}`);
      }
      const state = endpoint.state;
      if (!state.breaker.tryAcquire()) {
        failures.push(`${endpoint.displayUrl}: circuit open until ${new Date(state.breaker.openUntil).toISOString()}`);
        continue;
      }
      let res: UpstreamResponse;
      try {
        res = await endpoint.request({ ...req, ns: this.name });
      } catch (err) {
        if (err instanceof UpstreamAuthError) {
          state.success();
          // The details (user, token service) go to the log, not to the client.
          state.lastError = { message: err.message, at: Date.now() };
          throw withLogDetail(denied(`upstream ${this.name} refused the mirror's credentials`), err.message);
        }
        this.events.requestFailed?.({ endpoint: endpoint.displayUrl, method: req.method, kind: req.signal?.aborted ? 'deadline' : failureKind(err) });
        if (req.signal?.aborted) {
          state.inconclusive();
          throw unavailable(`upstream ${this.name} did not answer within the deadline (${endpoint.displayUrl})`);
        }
        state.failure(describe(err));
        failures.push(`${endpoint.displayUrl}: ${describe(err)}`);
        continue;
      }
      if (res.status === 508) {
        state.success();
        const detail = await errorDetail(res.body);
        throw loopDetected(`${endpoint.displayUrl} reported a loop between mirrors${detail ? `: ${detail}` : ''}`);
      }
      if (res.status === 500 && isJson(res.headers)) {
        // A registry error about this request (distribution answers some odd
        // requests with 500), not ill health: it must not let clients open circuits.
        const detail = await errorDetail(res.body);
        state.inconclusive();
        failures.push(`${endpoint.displayUrl} answered 500${detail ? ` (${detail})` : ''}`);
        continue;
      }
      if (res.status >= 500) {
        await res.body.dump();
        state.failure(`answered ${res.status}`);
        failures.push(`${endpoint.displayUrl} answered ${res.status}`);
        continue;
      }
      state.success();
      return { ...res, client: endpoint };
    }
    throw unavailable(`upstream ${this.name} unavailable: ${failures.join('; ')}`);
  }

  /** Whether an endpoint reported a pull budget under its minRemaining. */
  budgetLow(): boolean {
    return this.endpoints.some((e) => e.state.budgetLow());
  }

  snapshot(): { registry: string; endpoints: EndpointSnapshot[]; fills: { running: number; waiting: number } } {
    return {
      registry: this.name,
      endpoints: this.endpoints.map((e) => e.state.snapshot()),
      fills: { running: this.fetchSlots.running, waiting: this.fetchSlots.waiting },
    };
  }

  async fetchManifest(repo: string, reference: string, accept: readonly string[], maxBytes: number, via: readonly string[], signal?: AbortSignal): Promise<FetchedManifest> {
    const res = await this.send({ method: 'GET', path: manifestPath(repo, reference), repo, headers: acceptHeader(accept), via, signal });
    if (res.status !== 200) throw await this.failure(res, () => manifestUnknown(reference, `${repo}:${reference} not found upstream in ${this.name}`));
    const declared = contentLength(res.headers);
    if (declared !== undefined && declared > maxBytes) {
      discard(res.body);
      throw badGateway(`upstream manifest ${repo}:${reference} is ${declared} bytes, over the ${maxBytes}-byte limit`);
    }
    const bytes = await readLimited(res.body, maxBytes, `manifest ${repo}:${reference}`);
    return { bytes, contentType: header(res.headers, 'content-type'), digest: header(res.headers, 'docker-content-digest'), endpoint: res.endpoint };
  }

  async headManifest(repo: string, reference: string, accept: readonly string[], via: readonly string[], signal?: AbortSignal): Promise<ManifestHead> {
    const res = await this.send({ method: 'HEAD', path: manifestPath(repo, reference), repo, headers: acceptHeader(accept), via, signal });
    await res.body.dump();
    if (res.status !== 200) throw await this.failure(res, () => manifestUnknown(reference, `${repo}:${reference} not found upstream in ${this.name}`));
    return {
      digest: header(res.headers, 'docker-content-digest'),
      contentType: header(res.headers, 'content-type'),
      size: contentLength(res.headers),
    };
  }

  /** GETs a blob, from `offset` when resuming (Range), preferring endpoints not in `avoid`. */
  async openBlob(repo: string, digest: string, options: { offset?: number; via: readonly string[]; avoid?: ReadonlySet<EndpointClient> }): Promise<BlobStream> {
    const offset = options.offset ?? 0;
    const headers: Record<string, string> = offset > 0 ? { range: `bytes=${offset}-` } : {};
    const res = await this.send({ method: 'GET', path: `/v2/${repo}/blobs/${digest}`, repo, headers, via: options.via }, { avoid: options.avoid });
    if (offset > 0 && res.status === 206) {
      const range = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(header(res.headers, 'content-range') ?? '');
      if (!range || Number(range[1]) !== offset) {
        discard(res.body);
        throw unavailable(`upstream ${this.name} answered a resume of ${digest} at ${offset} with range ${header(res.headers, 'content-range') ?? 'none'}`);
      }
      return { size: range[2] === '*' ? undefined : Number(range[2]), body: res.body, endpoint: res.client, skip: 0 };
    }
    if (res.status !== 200) throw await this.failure(res, () => blobUnknown(digest));
    return { size: contentLength(res.headers), body: res.body, endpoint: res.client, skip: offset };
  }

  async headBlob(repo: string, digest: string, via: readonly string[]): Promise<number | undefined> {
    const res = await this.send({ method: 'HEAD', path: `/v2/${repo}/blobs/${digest}`, repo, via });
    await res.body.dump();
    if (res.status !== 200) throw await this.failure(res, () => blobUnknown(digest));
    return contentLength(res.headers);
  }

  /** Maps a non-success upstream answer onto the error our client should see. */
  async failure(res: UpstreamResponse, notFound: () => RegistryError): Promise<RegistryError> {
    if (!res.body.destroyed) await res.body.dump().catch(() => undefined);
    if (res.status === 404) return notFound();
    if (res.status === 429) {
      const retryAfter = retryAfterSeconds(header(res.headers, 'retry-after')) ?? retryAfterFromWindow(res.rateLimit);
      return tooManyRequests(retryAfter, `upstream ${this.name} is rate limiting (${res.endpoint})`);
    }
    if (res.status === 401 || res.status === 403) return denied(`upstream ${this.name} refused access (${res.status} from ${res.endpoint})`);
    return unavailable(`upstream ${this.name} answered ${res.status} (${res.endpoint})`);
  }
}

function manifestPath(repo: string, reference: string): string {
  return `/v2/${repo}/manifests/${reference}`;
}

function acceptHeader(accept: readonly string[]): Record<string, string> {
  return accept.length > 0 ? { accept: accept.join(', ') } : {};
}

export async function readLimited(body: Readable, maxBytes: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body) {
    total += (chunk as Buffer).length;
    if (total > maxBytes) {
      discard(body);
      throw badGateway(`upstream ${what} is over the ${maxBytes}-byte limit`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks, total);
}

/** The `detail` of a small registry error body, if it has one. */
async function errorDetail(body: Readable): Promise<string | undefined> {
  try {
    const bytes = await readLimited(body, 16 * 1024, 'error body');
    const parsed = JSON.parse(bytes.toString('utf8')) as { errors?: { detail?: unknown }[] };
    const detail = parsed.errors?.[0]?.detail;
    return typeof detail === 'string' ? detail.slice(0, 500) : undefined;
  } catch {
    return undefined;
  }
}

/** Drops a response body we will not read; its abort error is expected, not a crash. */
export function discard(body: Readable): void {
  body.on('error', () => undefined);
  body.destroy();
}

/** Sorts a request that got no response by the error code of Node or undici. */
export function failureKind(err: unknown): RequestFailureKind {
  const e = err as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException };
  const code = String(e.code ?? e.cause?.code ?? '');
  if (e.name === 'TimeoutError') return 'timeout';
  if (code === 'ECONNREFUSED') return 'refused';
  if (code === 'ECONNRESET' || code === 'EPIPE' || code === 'UND_ERR_SOCKET' || code === 'UND_ERR_CLOSED') return 'reset';
  if (code === 'ETIMEDOUT' || code.endsWith('_TIMEOUT')) return 'timeout';
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return 'dns';
  if (/CERT|TLS|SSL|EPROTO|SELF_SIGNED|UNABLE_TO_VERIFY/.test(code)) return 'tls';
  return 'error';
}

export function describe(err: unknown): string {
  if (isRegistryError(err)) return err.detail ? String(err.detail) : err.message;
  const e = err as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException };
  return [e.code ?? e.cause?.code, e.message].filter(Boolean).join(' ');
}

function isJson(headers: ResponseHeaders): boolean {
  return /^application\/(?:[\w.+-]*\+)?json\b/i.test(header(headers, 'content-type') ?? '');
}
