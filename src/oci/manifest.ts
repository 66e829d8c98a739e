import { badGateway } from './errors.js';
import { MANIFEST_MEDIA_TYPES, MediaType } from './media-types.js';

interface Descriptor {
  mediaType?: string;
  digest: string;
  size: number;
  platform?: Platform;
}

interface ManifestShape {
  mediaType?: string;
  schemaVersion?: number;
  config?: Descriptor;
  layers?: Descriptor[];
  manifests?: Descriptor[];
}

/**
 * The media type of manifest bytes: the document's own `mediaType` when it
 * has one (the digest covers it; a header does not), else the upstream's
 * Content-Type when specific, else what the document's shape says. A
 * Content-Type naming another manifest type than the document is a lie, and
 * refused, so a client never gets bytes it would parse as something else.
 */
export function manifestMediaType(bytes: Uint8Array, contentType: string | undefined): string {
  const header = contentType?.split(';', 1)[0]?.trim().toLowerCase();
  const declared = header && header !== 'application/json' && header !== MediaType.octetStream && header !== 'text/plain' ? header : undefined;
  const parsed = tryParse(bytes);
  const own = typeof parsed?.mediaType === 'string' ? parsed.mediaType : undefined;
  if (own) {
    if (declared && declared !== own && MANIFEST_MEDIA_TYPES.includes(declared)) {
      throw badGateway(`the upstream sent a ${own} document as ${declared.slice(0, 100)}`);
    }
    return own;
  }
  if (declared) return declared;
  if (parsed?.manifests) return MediaType.ociIndex;
  if (parsed?.schemaVersion === 1) return MediaType.dockerSchema1Signed;
  return MediaType.ociManifest;
}

/** Digests a manifest refers to: config and layers, or the children of an index. */
export function referencedDigests(bytes: Uint8Array): string[] {
  const parsed = tryParse(bytes);
  if (!parsed) return [];
  const refs: Descriptor[] = [...(parsed.manifests ?? []), ...(parsed.layers ?? [])];
  if (parsed.config) refs.push(parsed.config);
  return refs.map((d) => d.digest).filter((d): d is string => typeof d === 'string');
}

function tryParse(bytes: Uint8Array): ManifestShape | undefined {
  try {
    const value: unknown = JSON.parse(Buffer.from(bytes).toString('utf8'));
    return typeof value === 'object' && value !== null ? (value as ManifestShape) : undefined;
  } catch {
    return undefined;
  }
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface IndexEntry {
  digest: string;
  mediaType: string | undefined;
  platform: Platform | undefined;
}

/** The children of an image index or manifest list; undefined for a single image. */
export function indexChildren(bytes: Uint8Array): IndexEntry[] | undefined {
  const parsed = tryParse(bytes);
  if (!parsed?.manifests) return undefined;
  return parsed.manifests
    .filter((m) => typeof m.digest === 'string')
    .map((m) => ({ digest: m.digest, mediaType: m.mediaType, platform: m.platform }));
}

/** Whether an index entry's platform is one of `wanted` (`os/arch` or `os/arch/variant`). */
export function platformMatches(platform: Platform | undefined, wanted: readonly string[]): boolean {
  if (!platform) return false;
  return wanted.some((w) => {
    const [os, arch, variant] = w.split('/');
    return platform.os === os && platform.architecture === arch && (variant === undefined || platform.variant === variant);
  });
}

/** Config and layers of a single-image manifest. */
export function imageBlobs(bytes: Uint8Array): { digest: string; size: number }[] {
  const parsed = tryParse(bytes);
  if (!parsed) return [];
  const blobs = [...(parsed.config ? [parsed.config] : []), ...(parsed.layers ?? [])];
  return blobs.filter((d) => typeof d.digest === 'string').map((d) => ({ digest: d.digest, size: Number(d.size) || 0 }));
}

/** Splits `[registry/]repo[:tag][@digest]` into a name and a reference (default tag: latest). */
export function parseImageReference(ref: string): { name: string; reference: string } {
  const at = ref.indexOf('@');
  if (at >= 0) return { name: ref.slice(0, at), reference: ref.slice(at + 1) };
  const slash = ref.lastIndexOf('/');
  const colon = ref.lastIndexOf(':');
  if (colon > slash) return { name: ref.slice(0, colon), reference: ref.slice(colon + 1) };
  return { name: ref, reference: 'latest' };
}
