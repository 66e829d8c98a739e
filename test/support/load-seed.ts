// Seeds an upstream registry with a mix for load tests: many small images
// (1–3 layers, a few KiB to a few hundred KiB, base layers shared between
// images, some multi-arch indexes) and a few large single-layer images whose
// content comes from the deterministic generator. Everything under library/,
// as dockerd names Docker Hub's official images.
import { buildLayer, sha256Digest, type BuiltLayer } from './content.js';
import { MediaTypes, pushBlob, putManifest, type ImageFormat, type PushedBlob } from './seed.js';

export interface SeededImage {
  /** Short name; the repository is `library/<name>`. */
  name: string;
  repo: string;
  tag: string;
  /** What the tag resolves to: an image manifest, or an index for multi-arch images. */
  digest: string;
  kind: 'image' | 'index';
  large: boolean;
  /** Config and layers of the linux/amd64 image, the blobs a pull fetches. */
  blobs: PushedBlob[];
  /** Bytes a pull of linux/amd64 transfers: manifests, config and layers. */
  pullBytes: number;
}

export interface SmallMixOptions {
  /** Name prefix; images are `<prefix>-000`, `<prefix>-001`, … */
  prefix: string;
  count: number;
  /** Base layers shared between images of this mix. */
  sharedLayers?: number;
  /** Every n-th image is a linux/amd64 + linux/arm64 index. */
  indexEvery?: number;
  /** Pushes at once. */
  concurrency?: number;
}

const KiB = 1024;
const CREATED = '2024-01-01T00:00:00Z';

/** A small deterministic PRNG (mulberry32), so a mix is the same on every run. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Pushed {
  digest: string;
  mediaType: string;
  bytes: Buffer;
  blobs: PushedBlob[];
}

/** Pushes config and layers (uploading only what the repository lacks), then the manifest. */
async function pushComposed(
  registryUrl: string, repo: string, reference: string, layers: BuiltLayer[], format: ImageFormat, arch: string, note: string,
): Promise<Pushed> {
  const docker = format === 'docker';
  for (const l of layers) await pushBlob(registryUrl, repo, l.blob);
  const config = Buffer.from(JSON.stringify({
    created: CREATED,
    architecture: arch,
    os: 'linux',
    config: { Env: [`STEVEDORE_LOAD=${note}`], Cmd: ['/bin/sh'] },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
  }));
  const configBlob = await pushBlob(registryUrl, repo, config);
  const mediaType = docker ? MediaTypes.dockerManifest : MediaTypes.ociManifest;
  const bytes = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType,
    config: { mediaType: docker ? MediaTypes.dockerConfig : MediaTypes.ociConfig, size: configBlob.size, digest: configBlob.digest },
    layers: layers.map((l) => ({ mediaType: docker ? MediaTypes.dockerLayer : MediaTypes.ociLayer, size: l.size, digest: l.digest })),
  }));
  const digest = await putManifest(registryUrl, repo, reference === '' ? sha256Digest(bytes) : reference, mediaType, bytes);
  return { digest, mediaType, bytes, blobs: [configBlob, ...layers.map((l) => ({ digest: l.digest, size: l.size }))] };
}

async function pushSmall(registryUrl: string, i: number, options: SmallMixOptions, shared: BuiltLayer[]): Promise<SeededImage> {
  const name = `${options.prefix}-${String(i).padStart(3, '0')}`;
  const repo = `library/${name}`;
  const rng = prng(i * 7919 + options.prefix.length);
  const format: ImageFormat = i % 2 === 0 ? 'docker' : 'oci';
  const layersFor = (arch: string): BuiltLayer[] => {
    const count = 1 + (i % 3);
    const layers: BuiltLayer[] = [];
    for (let n = 0; n < count; n++) {
      // Two images in three start from a shared base layer.
      if (n === 0 && i % 3 !== 0 && shared.length > 0) layers.push(shared[(i * 5) % shared.length]!);
      else layers.push(buildLayer(2 * KiB + Math.floor(rng() * 200 * KiB), `${options.prefix}/${name}/${arch}`, `layer${n}`));
    }
    return layers;
  };
  const indexEvery = options.indexEvery ?? 10;
  if (i % indexEvery !== indexEvery - 1) {
    const image = await pushComposed(registryUrl, repo, 'v1', layersFor('amd64'), format, 'amd64', name);
    return { name, repo, tag: 'v1', digest: image.digest, kind: 'image', large: false, blobs: image.blobs, pullBytes: image.bytes.length + sum(image.blobs) };
  }
  const amd64 = await pushComposed(registryUrl, repo, '', layersFor('amd64'), format, 'amd64', `${name}/amd64`);
  const arm64 = await pushComposed(registryUrl, repo, '', layersFor('arm64'), format, 'arm64', `${name}/arm64`);
  const indexType = format === 'docker' ? MediaTypes.dockerList : MediaTypes.ociIndex;
  const entry = (p: Pushed, architecture: string): object => ({ mediaType: p.mediaType, size: p.bytes.length, digest: p.digest, platform: { architecture, os: 'linux' } });
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: indexType, manifests: [entry(amd64, 'amd64'), entry(arm64, 'arm64')] }));
  const digest = await putManifest(registryUrl, repo, 'v1', indexType, index);
  return { name, repo, tag: 'v1', digest, kind: 'index', large: false, blobs: amd64.blobs, pullBytes: index.length + amd64.bytes.length + sum(amd64.blobs) };
}

const sum = (blobs: PushedBlob[]): number => blobs.reduce((n, b) => n + b.size, 0);

/** `count` small images, `concurrency` pushes at a time. */
export async function seedSmallImages(registryUrl: string, options: SmallMixOptions): Promise<SeededImage[]> {
  const sizes = [8, 24, 64, 128, 256];
  const shared = Array.from({ length: options.sharedLayers ?? 12 }, (_, k) => buildLayer(sizes[k % sizes.length]! * KiB, `${options.prefix}/shared`, `base${k}`));
  const images: SeededImage[] = new Array<SeededImage>(options.count);
  let next = 0;
  await Promise.all(
    Array.from({ length: options.concurrency ?? 12 }, async () => {
      while (next < options.count) {
        const i = next++;
        images[i] = await pushSmall(registryUrl, i, options, shared);
      }
    }),
  );
  return images;
}

/** One image with a single large layer of generated bytes (streamed, never held in memory). */
export async function seedLargeImage(registryUrl: string, name: string, size: number): Promise<SeededImage> {
  const repo = `library/${name}`;
  const layer = await pushBlob(registryUrl, repo, { size, seed: `load-large/${name}` });
  const config = Buffer.from(JSON.stringify({ created: CREATED, architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, note: name }));
  const configBlob = await pushBlob(registryUrl, repo, config);
  const bytes = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaTypes.dockerManifest,
    config: { mediaType: MediaTypes.dockerConfig, size: configBlob.size, digest: configBlob.digest },
    layers: [{ mediaType: MediaTypes.dockerLayer, size: layer.size, digest: layer.digest }],
  }));
  const digest = await putManifest(registryUrl, repo, 'v1', MediaTypes.dockerManifest, bytes);
  const blobs = [configBlob, layer];
  return { name, repo, tag: 'v1', digest, kind: 'image', large: true, blobs, pullBytes: bytes.length + sum(blobs) };
}
