import { MediaType } from './media-types.js';

interface Descriptor {
  mediaType?: string;
  digest: string;
  size: number;
}

interface ManifestShape {
  mediaType?: string;
  schemaVersion?: number;
  config?: Descriptor;
  layers?: Descriptor[];
  manifests?: Descriptor[];
}

/**
 * The media type of manifest bytes, from the upstream's Content-Type when it
 * is specific, else from the document's own `mediaType` field.
 */
export function manifestMediaType(bytes: Uint8Array, contentType: string | undefined): string {
  const declared = contentType?.split(';', 1)[0]?.trim().toLowerCase();
  if (declared && declared !== 'application/json' && declared !== MediaType.octetStream && declared !== 'text/plain') {
    return declared;
  }
  const parsed = tryParse(bytes);
  if (parsed?.mediaType) return parsed.mediaType;
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
