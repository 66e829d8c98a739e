// Pushes generated images, indexes and raw blobs into a registry with the plain
// distribution HTTP API (monolithic uploads), so tests need no docker daemon.
import { Readable } from 'node:stream';
import { request } from 'undici';
import { bigBlob, buildLayer, sha256Digest, type BlobSource } from './content.js';

export { bigBlob, deterministicBytes, deterministicChunks, sha256Digest } from './content.js';
export type { BlobSource } from './content.js';

export const MediaTypes = {
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar+gzip',
} as const;

/** Every manifest type; distribution 2.8 hides OCI/schema2 manifests from clients that don't ask. */
export const ALL_MANIFEST_ACCEPT = [
  MediaTypes.ociIndex,
  MediaTypes.ociManifest,
  MediaTypes.dockerList,
  MediaTypes.dockerManifest,
].join(', ');

export type ImageFormat = 'oci' | 'docker';

export interface Platform {
  os: string;
  arch: string;
  variant?: string;
}

export interface PushImageOptions {
  /** Approximate uncompressed bytes of each layer. */
  layers: number[];
  format: ImageFormat;
  arch?: string;
  os?: string;
  variant?: string;
  /** Content seed; defaults to repo:tag/os/arch so distinct images get distinct layers. */
  seed?: string;
  /** Push the manifest by digest only (index children). */
  byDigestOnly?: boolean;
}

export interface PushedBlob {
  digest: string;
  size: number;
}

export interface PushedImage {
  repo: string;
  /** Tag pushed under; for index children (pushed by digest) the index's tag. */
  tag: string;
  manifestDigest: string;
  manifestMediaType: string;
  manifestBytes: Buffer;
  configDigest: string;
  configBytes: Buffer;
  layers: PushedBlob[];
  platform: Platform;
}

export interface PushIndexOptions {
  platforms: Platform[];
  format: ImageFormat;
  layers: number[];
  seed?: string;
}

export interface PushedIndex {
  repo: string;
  tag: string;
  indexDigest: string;
  indexMediaType: string;
  indexBytes: Buffer;
  /** Keyed `os/arch` or `os/arch/variant`. */
  children: Record<string, PushedImage>;
}

export const platformKey = (p: Platform): string => [p.os, p.arch, p.variant].filter(Boolean).join('/');

const base = (url: string): string => url.replace(/\/+$/, '');

async function fail(what: string, status: number, body: { text(): Promise<string> }): Promise<never> {
  const text = await body.text().catch(() => '');
  throw new Error(`${what}: HTTP ${status} ${text.slice(0, 500)}`);
}

export async function blobExists(registryUrl: string, repo: string, digest: string): Promise<boolean> {
  const res = await request(`${base(registryUrl)}/v2/${repo}/blobs/${digest}`, { method: 'HEAD' });
  await res.body.dump();
  return res.statusCode === 200;
}

type UploadBody = Buffer | BlobSource;

/** POST an upload session, then a single PUT with the whole body (monolithic push). */
async function uploadBlob(registryUrl: string, repo: string, digest: string, body: UploadBody): Promise<void> {
  const root = base(registryUrl);
  if (await blobExists(root, repo, digest)) return;
  const start = await request(`${root}/v2/${repo}/blobs/uploads/`, { method: 'POST', headers: { 'content-length': '0' } });
  if (start.statusCode !== 202) await fail(`start upload ${repo}`, start.statusCode, start.body);
  await start.body.dump();
  const loc = start.headers['location'];
  if (typeof loc !== 'string') throw new Error(`upload for ${repo}: no Location header`);
  // 2.8 answers an absolute URL built from Host; resolve relative ones too.
  const target = new URL(loc, root + '/');
  target.searchParams.set('digest', digest);
  const size = Buffer.isBuffer(body) ? body.length : body.size;
  const res = await request(target, {
    method: 'PUT',
    headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
    body: Buffer.isBuffer(body) ? body : body.stream(),
    headersTimeout: 0,
    bodyTimeout: 0,
  });
  if (res.statusCode !== 201) await fail(`upload ${digest} to ${repo}`, res.statusCode, res.body);
  await res.body.dump();
  const got = res.headers['docker-content-digest'];
  if (got !== undefined && got !== digest) throw new Error(`registry stored ${String(got)}, expected ${digest}`);
}

/**
 * Push a raw blob (no manifest). `{size, seed}` streams from the deterministic
 * generator after a separate hashing pass, so 1 GiB never sits in memory.
 */
export async function pushBlob(
  registryUrl: string,
  repo: string,
  content: Buffer | { size: number; seed: string },
): Promise<PushedBlob> {
  if (Buffer.isBuffer(content)) {
    const digest = sha256Digest(content);
    await uploadBlob(registryUrl, repo, digest, content);
    return { digest, size: content.length };
  }
  const src = bigBlob(content.size, content.seed);
  const digest = await src.digest();
  await uploadBlob(registryUrl, repo, digest, src);
  return { digest, size: content.size };
}

export async function putManifest(
  registryUrl: string,
  repo: string,
  reference: string,
  mediaType: string,
  bytes: Buffer,
): Promise<string> {
  const res = await request(`${base(registryUrl)}/v2/${repo}/manifests/${reference}`, {
    method: 'PUT',
    headers: { 'content-type': mediaType, 'content-length': String(bytes.length) },
    body: bytes,
  });
  if (res.statusCode !== 201) await fail(`put manifest ${repo}:${reference}`, res.statusCode, res.body);
  await res.body.dump();
  const digest = sha256Digest(bytes);
  const got = res.headers['docker-content-digest'];
  if (got !== undefined && got !== digest) throw new Error(`manifest digest ${String(got)}, expected ${digest}`);
  return digest;
}

/** HEAD the manifest by tag (accepting every type) and check the digest the registry reports. */
export async function verifyManifest(registryUrl: string, repo: string, ref: string, digest: string): Promise<void> {
  const res = await request(`${base(registryUrl)}/v2/${repo}/manifests/${ref}`, {
    method: 'HEAD',
    headers: { accept: ALL_MANIFEST_ACCEPT },
  });
  await res.body.dump();
  const got = res.headers['docker-content-digest'];
  if (res.statusCode !== 200 || got !== digest) {
    throw new Error(`verify ${repo}:${ref}: HTTP ${res.statusCode} digest ${String(got)}, expected ${digest}`);
  }
}

const CREATED = '2024-01-01T00:00:00Z';

export async function pushImage(
  registryUrl: string,
  repo: string,
  tag: string,
  opts: PushImageOptions,
): Promise<PushedImage> {
  const platform: Platform = { os: opts.os ?? 'linux', arch: opts.arch ?? 'amd64' };
  if (opts.variant) platform.variant = opts.variant;
  const seed = opts.seed ?? `${repo}:${tag}/${platformKey(platform)}`;
  const docker = opts.format === 'docker';

  const layers = opts.layers.map((n, i) => buildLayer(n, seed, `layer${i}`));
  // Sequential on purpose: keeps memory and registry load predictable.
  for (const l of layers) await uploadBlob(registryUrl, repo, l.digest, l.blob);

  const config = {
    created: CREATED,
    architecture: platform.arch,
    os: platform.os,
    ...(platform.variant ? { variant: platform.variant } : {}),
    config: {
      Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', `STEVEDORE_SEED=${seed}`],
      Cmd: ['/bin/sh'],
      WorkingDir: '/',
    },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history: layers.map((l, i) => ({ created: CREATED, created_by: `stevedore-seed layer${i} (${l.tarSize} bytes)` })),
  };
  const configBytes = Buffer.from(JSON.stringify(config));
  const configDigest = sha256Digest(configBytes);
  await uploadBlob(registryUrl, repo, configDigest, configBytes);

  const manifestMediaType = docker ? MediaTypes.dockerManifest : MediaTypes.ociManifest;
  const manifest = {
    schemaVersion: 2,
    mediaType: manifestMediaType,
    config: { mediaType: docker ? MediaTypes.dockerConfig : MediaTypes.ociConfig, size: configBytes.length, digest: configDigest },
    layers: layers.map((l) => ({
      mediaType: docker ? MediaTypes.dockerLayer : MediaTypes.ociLayer,
      size: l.size,
      digest: l.digest,
    })),
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifest, null, 3));
  const manifestDigest = sha256Digest(manifestBytes);
  const ref = opts.byDigestOnly ? manifestDigest : tag;
  await putManifest(registryUrl, repo, ref, manifestMediaType, manifestBytes);
  await verifyManifest(registryUrl, repo, ref, manifestDigest);
  return {
    repo,
    tag,
    manifestDigest,
    manifestMediaType,
    manifestBytes,
    configDigest,
    configBytes,
    layers: layers.map((l) => ({ digest: l.digest, size: l.size })),
    platform,
  };
}

/** One image per platform (pushed by digest), then an OCI index or docker manifest list on `tag`. */
export async function pushIndex(
  registryUrl: string,
  repo: string,
  tag: string,
  opts: PushIndexOptions,
): Promise<PushedIndex> {
  const docker = opts.format === 'docker';
  const children: Record<string, PushedImage> = {};
  const entries: object[] = [];
  for (const p of opts.platforms) {
    const key = platformKey(p);
    const img = await pushImage(registryUrl, repo, tag, {
      layers: opts.layers,
      format: opts.format,
      os: p.os,
      arch: p.arch,
      ...(p.variant ? { variant: p.variant } : {}),
      seed: `${opts.seed ?? `${repo}:${tag}`}/${key}`,
      byDigestOnly: true,
    });
    children[key] = img;
    entries.push({
      mediaType: img.manifestMediaType,
      size: img.manifestBytes.length,
      digest: img.manifestDigest,
      platform: { architecture: p.arch, os: p.os, ...(p.variant ? { variant: p.variant } : {}) },
    });
  }
  const indexMediaType = docker ? MediaTypes.dockerList : MediaTypes.ociIndex;
  const indexBytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: indexMediaType, manifests: entries }, null, 3));
  const indexDigest = await putManifest(registryUrl, repo, tag, indexMediaType, indexBytes);
  await verifyManifest(registryUrl, repo, tag, indexDigest);
  return { repo, tag, indexDigest, indexMediaType, indexBytes, children };
}

/** Read a whole stream; small helper for tests that compare bytes. */
export async function readAll(stream: Readable | AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(Buffer.from(c as Uint8Array));
  return Buffer.concat(parts);
}
