export const MediaType = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
  dockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  octetStream: 'application/octet-stream',
} as const;

/** The manifest types a pull-through mirror stores and serves. */
export const MANIFEST_MEDIA_TYPES: readonly string[] = [
  MediaType.ociManifest,
  MediaType.ociIndex,
  MediaType.dockerManifest,
  MediaType.dockerManifestList,
  MediaType.dockerSchema1Signed,
  MediaType.dockerSchema1,
];

/** Media types listed in an Accept header, lowercased, parameters dropped. */
export function parseAccept(header: string | string[] | undefined): string[] {
  if (header === undefined) return [];
  const joined = Array.isArray(header) ? header.join(',') : header;
  const types = new Set<string>();
  for (const part of joined.split(',')) {
    const type = part.split(';', 1)[0]!.trim().toLowerCase();
    if (type) types.add(type);
  }
  return [...types].sort();
}

/** What a client that names no manifest type gets: today's formats, never schema 1. */
const MODERN_MANIFEST_TYPES: readonly string[] = [MediaType.ociIndex, MediaType.ociManifest, MediaType.dockerManifestList, MediaType.dockerManifest];

/**
 * The manifest types a client accepts, as asked of the upstream and used to key
 * the tag cache (so clients cannot mint keys). A client that names none (no
 * Accept, `*` + `/*`, `application/json`) gets the modern formats: asking an
 * upstream without them would get a converted schema 1 manifest.
 */
export function manifestAccept(accepted: readonly string[]): string[] {
  const known = accepted.filter((type) => MANIFEST_MEDIA_TYPES.includes(type));
  return known.length > 0 ? known : [...MODERN_MANIFEST_TYPES].sort();
}

/** Whether a response of `mediaType` is acceptable to a client that sent `accepted`. */
export function isAccepted(mediaType: string, accepted: readonly string[]): boolean {
  if (accepted.length === 0) return true;
  if (accepted.includes('*/*') || accepted.includes(mediaType.toLowerCase())) return true;
  // A client that names no manifest type at all (for example `application/json`)
  // is not negotiating manifests; don't hold it to its list.
  return !accepted.some((type) => MANIFEST_MEDIA_TYPES.includes(type));
}
