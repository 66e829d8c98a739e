import type { Readable } from 'node:stream';
import {
  blobUnknown,
  denied,
  manifestUnknown,
  RegistryError,
  tooLarge,
  tooManyRequests,
  unavailable,
} from '../oci/errors.js';
import type { EndpointClient, ResponseHeaders, UpstreamRequest, UpstreamResponse } from './endpoint-client.js';

export interface FetchedManifest {
  bytes: Buffer;
  contentType: string | undefined;
  /** The upstream's Docker-Content-Digest, to cross-check. */
  digest: string | undefined;
}

export interface ManifestHead {
  digest: string | undefined;
  contentType: string | undefined;
  size: number | undefined;
}

export interface BlobStream {
  size: number | undefined;
  body: Readable;
  endpoint: string;
}

export function header(headers: ResponseHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
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
 * order: a connection failure or server error moves on to the next endpoint.
 */
export class UpstreamRegistry {
  constructor(
    readonly name: string,
    readonly endpoints: readonly EndpointClient[],
  ) {}

  async send(req: UpstreamRequest): Promise<UpstreamResponse> {
    const failures: string[] = [];
    for (const endpoint of this.endpoints) {
      try {
        const res = await endpoint.request(req);
        if (res.status < 500) return res;
        await res.body.dump();
        failures.push(`${endpoint.displayUrl} answered ${res.status}`);
      } catch (err) {
        if (req.signal?.aborted) throw unavailable(`${this.name}: request aborted (${describe(err)})`);
        failures.push(`${endpoint.displayUrl}: ${describe(err)}`);
      }
    }
    throw unavailable(`upstream ${this.name} unavailable: ${failures.join('; ')}`);
  }

  async fetchManifest(repo: string, reference: string, accept: readonly string[], maxBytes: number, signal?: AbortSignal): Promise<FetchedManifest> {
    const res = await this.send({ method: 'GET', path: manifestPath(repo, reference), repo, headers: acceptHeader(accept), signal });
    if (res.status !== 200) throw await this.failure(res, () => manifestUnknown(reference, `${repo}:${reference} not found upstream in ${this.name}`));
    const declared = contentLength(res.headers);
    if (declared !== undefined && declared > maxBytes) {
      discard(res.body);
      throw tooLarge(`manifest ${repo}:${reference} is ${declared} bytes, over the ${maxBytes}-byte limit`);
    }
    const bytes = await readLimited(res.body, maxBytes, `manifest ${repo}:${reference}`);
    return { bytes, contentType: header(res.headers, 'content-type'), digest: header(res.headers, 'docker-content-digest') };
  }

  async headManifest(repo: string, reference: string, accept: readonly string[], signal?: AbortSignal): Promise<ManifestHead> {
    const res = await this.send({ method: 'HEAD', path: manifestPath(repo, reference), repo, headers: acceptHeader(accept), signal });
    await res.body.dump();
    if (res.status !== 200) throw await this.failure(res, () => manifestUnknown(reference, `${repo}:${reference} not found upstream in ${this.name}`));
    return {
      digest: header(res.headers, 'docker-content-digest'),
      contentType: header(res.headers, 'content-type'),
      size: contentLength(res.headers),
    };
  }

  async openBlob(repo: string, digest: string, signal?: AbortSignal): Promise<BlobStream> {
    const res = await this.send({ method: 'GET', path: `/v2/${repo}/blobs/${digest}`, repo, signal });
    if (res.status !== 200) throw await this.failure(res, () => blobUnknown(digest));
    return { size: contentLength(res.headers), body: res.body, endpoint: res.endpoint };
  }

  async headBlob(repo: string, digest: string, signal?: AbortSignal): Promise<number | undefined> {
    const res = await this.send({ method: 'HEAD', path: `/v2/${repo}/blobs/${digest}`, repo, signal });
    await res.body.dump();
    if (res.status !== 200) throw await this.failure(res, () => blobUnknown(digest));
    return contentLength(res.headers);
  }

  /** Maps a non-success upstream answer onto the error our client should see. */
  async failure(res: UpstreamResponse, notFound: () => RegistryError): Promise<RegistryError> {
    if (!res.body.destroyed) await res.body.dump().catch(() => undefined);
    if (res.status === 404) return notFound();
    if (res.status === 429) {
      return tooManyRequests(retryAfterSeconds(header(res.headers, 'retry-after')), `upstream ${this.name} is rate limiting`);
    }
    if (res.status === 401 || res.status === 403) return denied(`upstream ${this.name} refused access (${res.status})`);
    return unavailable(`upstream ${this.name} answered ${res.status} (${res.endpoint})`);
  }
}

function manifestPath(repo: string, reference: string): string {
  return `/v2/${repo}/manifests/${reference}`;
}

function acceptHeader(accept: readonly string[]): Record<string, string> {
  return accept.length > 0 ? { accept: accept.join(', ') } : {};
}

async function readLimited(body: Readable, maxBytes: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body) {
    total += (chunk as Buffer).length;
    if (total > maxBytes) {
      discard(body);
      throw tooLarge(`${what} is over the ${maxBytes}-byte limit`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks, total);
}

/** Drops a response body we will not read; its abort error is expected, not a crash. */
export function discard(body: Readable): void {
  body.on('error', () => undefined);
  body.destroy();
}

function describe(err: unknown): string {
  if (err instanceof RegistryError) return err.detail ? String(err.detail) : err.message;
  const e = err as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException };
  return [e.code ?? e.cause?.code, e.message].filter(Boolean).join(' ');
}
