// The standard upstream content most integration tests expect; also used by
// scripts/seed-upstream.ts.
import { platformKey, pushImage, pushIndex, type PushedImage, type PushedIndex } from './seed.js';

export interface StandardSeed {
  alpine: PushedImage;
  busybox: PushedIndex;
  app: PushedImage;
}

/** The standard upstream content most integration tests expect. */
export async function seedStandard(registryUrl: string): Promise<StandardSeed> {
  const alpine = await pushImage(registryUrl, 'library/alpine', '3.19', {
    format: 'docker',
    layers: [100 * 1024, 300 * 1024, 1024 * 1024],
    os: 'linux',
    arch: 'amd64',
  });
  const busybox = await pushIndex(registryUrl, 'library/busybox', 'multi', {
    format: 'oci',
    platforms: [
      { os: 'linux', arch: 'amd64' },
      { os: 'linux', arch: 'arm64' },
    ],
    layers: [200 * 1024],
  });
  const app = await pushImage(registryUrl, 'acme/app', 'v1', { format: 'oci', layers: [150 * 1024, 50 * 1024] });
  return { alpine, busybox, app };
}

/** JSON-friendly view (no Buffers) for printing. */
export function summarize(seed: StandardSeed): Record<string, unknown> {
  const img = (i: PushedImage): Record<string, unknown> => ({
    ref: `${i.repo}${i.tag ? `:${i.tag}` : ''}`,
    manifestDigest: i.manifestDigest,
    manifestMediaType: i.manifestMediaType,
    manifestSize: i.manifestBytes.length,
    configDigest: i.configDigest,
    platform: platformKey(i.platform),
    layers: i.layers,
  });
  return {
    alpine: img(seed.alpine),
    busybox: {
      ref: `${seed.busybox.repo}:${seed.busybox.tag}`,
      indexDigest: seed.busybox.indexDigest,
      indexMediaType: seed.busybox.indexMediaType,
      indexSize: seed.busybox.indexBytes.length,
      children: Object.fromEntries(Object.entries(seed.busybox.children).map(([k, v]) => [k, img(v)])),
    },
    app: img(seed.app),
  };
}
