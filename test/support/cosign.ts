// Pushes supply-chain artifacts the way real tools store them: cosign's
// tag-based signature, attestation and SBOM (`sha256-<hex>.sig|.att|.sbom`)
// and OCI 1.1 referrers (manifests with `subject`), so tests can check that a
// mirror hands them back byte for byte.
import { createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { MediaTypes, putManifest, pushBlob, sha256Digest, verifyManifest, type PushedBlob } from './seed.js';

export const CosignMediaTypes = {
  simpleSigning: 'application/vnd.dev.cosign.simplesigning.v1+json',
  dsseEnvelope: 'application/vnd.dsse.envelope.v1+json',
  inTotoPayload: 'application/vnd.in-toto+json',
  spdxJson: 'text/spdx+json',
  ociEmpty: 'application/vnd.oci.empty.v1+json',
} as const;

/** The layer annotation cosign stores the base64 DER signature in. */
export const SIGNATURE_ANNOTATION = 'dev.cosignproject.cosign/signature';
export const DEFAULT_PREDICATE_TYPE = 'https://slsa.dev/provenance/v0.2';
/** The 2-byte `{}` config of OCI 1.1 artifacts. */
export const EMPTY_CONFIG = Buffer.from('{}');

export interface SigningKey {
  publicKey: KeyObject;
  privateKey: KeyObject;
  /** SPKI PEM, the form `cosign verify --key` reads. */
  publicKeyPem: string;
}

/** An ECDSA P-256 key pair, as `cosign generate-key-pair` makes. */
export function generateSigningKey(): SigningKey {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return { publicKey, privateKey, publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString() };
}

export interface CosignOptions {
  /** The signed identity's `docker-reference`; defaults to `<registry host>/<repo>`. */
  dockerReference?: string;
  /** The attestation's predicate type (also its layer annotation `predicateType`). */
  predicateType?: string;
  predicate?: unknown;
  /** The SPDX document pushed as `.sbom`; a small fixed one by default. */
  sbom?: object;
}

export interface CosignArtifact {
  /** `sha256-<hex>.sig`, `.att` or `.sbom`. */
  tag: string;
  digest: string;
  mediaType: string;
  manifestBytes: Buffer;
  configDigest: string;
  configBytes: Buffer;
  layerDigest: string;
  layerMediaType: string;
  layerBytes: Buffer;
  layerAnnotations: Record<string, string>;
}

export interface PushedCosign {
  /** The signed image's digest. */
  subjectDigest: string;
  dockerReference: string;
  signature: CosignArtifact;
  attestation: CosignArtifact;
  sbom: CosignArtifact;
}

export type CosignSuffix = 'sig' | 'att' | 'sbom';

/** cosign's tag for an artifact of `digest` (`sha256:<hex>` → `sha256-<hex>.sig`). */
export function cosignTag(digest: string, suffix: CosignSuffix): string {
  return `${digest.replace(':', '-')}.${suffix}`;
}

const hexOf = (digest: string): string => {
  const m = /^sha256:([a-f0-9]{64})$/.exec(digest);
  if (!m?.[1]) throw new Error(`not a sha256 digest: ${digest}`);
  return m[1];
};

/** DSSE v1 pre-authentication encoding: what the envelope's signature covers. */
export function dssePae(payloadType: string, body: Buffer): Buffer {
  const head = `DSSEv1 ${Buffer.byteLength(payloadType)} ${payloadType} ${body.length} `;
  return Buffer.concat([Buffer.from(head), body]);
}

/** cosign's simple-signing payload for `digest`, key order exactly as cosign writes it. */
export function simpleSigningPayload(dockerReference: string, digest: string): Buffer {
  return Buffer.from(JSON.stringify({
    critical: {
      identity: { 'docker-reference': dockerReference },
      image: { 'docker-manifest-digest': digest },
      type: 'cosign container image signature',
    },
    optional: null,
  }));
}

/** One-layer image the way go-containerregistry (and so cosign) serializes it: compact JSON. */
async function pushOneLayer(
  registryUrl: string, repo: string, tag: string, layerMediaType: string, layerBytes: Buffer, layerAnnotations: Record<string, string>,
): Promise<CosignArtifact> {
  const layer = await pushBlob(registryUrl, repo, layerBytes);
  const configBytes = Buffer.from(JSON.stringify({
    architecture: '',
    created: '0001-01-01T00:00:00Z',
    history: [{ created: '0001-01-01T00:00:00Z' }],
    os: '',
    rootfs: { type: 'layers', diff_ids: [layer.digest] },
    config: {},
  }));
  const config = await pushBlob(registryUrl, repo, configBytes);
  const layerDescriptor = {
    mediaType: layerMediaType,
    size: layer.size,
    digest: layer.digest,
    ...(Object.keys(layerAnnotations).length > 0 ? { annotations: layerAnnotations } : {}),
  };
  const manifestBytes = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaTypes.ociManifest,
    config: { mediaType: MediaTypes.ociConfig, size: config.size, digest: config.digest },
    layers: [layerDescriptor],
  }));
  const digest = await putManifest(registryUrl, repo, tag, MediaTypes.ociManifest, manifestBytes);
  await verifyManifest(registryUrl, repo, tag, digest);
  return {
    tag, digest, mediaType: MediaTypes.ociManifest, manifestBytes,
    configDigest: config.digest, configBytes,
    layerDigest: layer.digest, layerMediaType, layerBytes, layerAnnotations,
  };
}

const defaultSbom = (name: string): object => ({
  spdxVersion: 'SPDX-2.3',
  dataLicense: 'CC0-1.0',
  SPDXID: 'SPDXRef-DOCUMENT',
  name,
  documentNamespace: `https://stevedore.test/spdx/${encodeURIComponent(name)}`,
  creationInfo: { created: '2024-01-01T00:00:00Z', creators: ['Tool: stevedore-test'] },
  packages: [{ name: 'busybox', SPDXID: 'SPDXRef-Package-busybox', versionInfo: '1.36.1', downloadLocation: 'NOASSERTION' }],
});

/** Signature, attestation and SBOM of `image`, in cosign's tag-based formats, signed with `key`. */
export async function pushCosignArtifacts(
  registryUrl: string, repo: string, image: { digest: string }, key: SigningKey, options: CosignOptions = {},
): Promise<PushedCosign> {
  const hex = hexOf(image.digest);
  const dockerReference = options.dockerReference ?? `${new URL(registryUrl).host}/${repo}`;

  const payload = simpleSigningPayload(dockerReference, image.digest);
  const payloadSig = sign('sha256', payload, key.privateKey).toString('base64');
  const signature = await pushOneLayer(registryUrl, repo, cosignTag(image.digest, 'sig'), CosignMediaTypes.simpleSigning, payload, {
    [SIGNATURE_ANNOTATION]: payloadSig,
  });

  const predicateType = options.predicateType ?? DEFAULT_PREDICATE_TYPE;
  const statement = Buffer.from(JSON.stringify({
    _type: 'https://in-toto.io/Statement/v0.1',
    predicateType,
    subject: [{ name: dockerReference, digest: { sha256: hex } }],
    predicate: options.predicate ?? { builder: { id: 'https://stevedore.test/builder' }, buildType: 'https://stevedore.test/build' },
  }));
  const envelope = Buffer.from(JSON.stringify({
    payloadType: CosignMediaTypes.inTotoPayload,
    payload: statement.toString('base64'),
    signatures: [{ keyid: '', sig: sign('sha256', dssePae(CosignMediaTypes.inTotoPayload, statement), key.privateKey).toString('base64') }],
  }));
  // cosign leaves the signature annotation empty on attestations: the envelope carries it.
  const attestation = await pushOneLayer(registryUrl, repo, cosignTag(image.digest, 'att'), CosignMediaTypes.dsseEnvelope, envelope, {
    [SIGNATURE_ANNOTATION]: '',
    predicateType,
  });

  const sbomBytes = Buffer.from(JSON.stringify(options.sbom ?? defaultSbom(`${dockerReference}@${image.digest}`)));
  const sbom = await pushOneLayer(registryUrl, repo, cosignTag(image.digest, 'sbom'), CosignMediaTypes.spdxJson, sbomBytes, {});

  return { subjectDigest: image.digest, dockerReference, signature, attestation, sbom };
}

interface LayerDescriptor {
  mediaType?: string;
  digest?: string;
  size?: number;
  annotations?: Record<string, string>;
}

function layersOf(manifestBytes: Buffer): LayerDescriptor[] {
  const m = JSON.parse(manifestBytes.toString('utf8')) as { layers?: unknown };
  return Array.isArray(m.layers) ? (m.layers as LayerDescriptor[]) : [];
}

const asKey = (k: KeyObject | string): KeyObject => (typeof k === 'string' ? createPublicKey(k) : k);

/** Whether a simple-signing payload names `expectedDigest` as the signed image. */
export function payloadSignsDigest(payloadBytes: Buffer, expectedDigest: string): boolean {
  try {
    const p = JSON.parse(payloadBytes.toString('utf8')) as { critical?: { image?: { 'docker-manifest-digest'?: unknown }; type?: unknown } };
    return p.critical?.type === 'cosign container image signature' && p.critical.image?.['docker-manifest-digest'] === expectedDigest;
  } catch {
    return false;
  }
}

/**
 * Whether a `.sig` manifest has a simple-signing layer that is `payloadBytes`
 * (digest and size) and whose annotation signature verifies against `publicKey`;
 * with `expectedDigest`, also that the payload signs that image.
 */
export function verifyCosignSignature(
  manifestBytes: Buffer, payloadBytes: Buffer, publicKey: KeyObject | string, expectedDigest?: string,
): boolean {
  try {
    const digest = sha256Digest(payloadBytes);
    const layer = layersOf(manifestBytes).find((l) => l.mediaType === CosignMediaTypes.simpleSigning && l.digest === digest);
    const sig = layer?.annotations?.[SIGNATURE_ANNOTATION];
    if (!layer || layer.size !== payloadBytes.length || !sig) return false;
    if (!verify('sha256', payloadBytes, asKey(publicKey), Buffer.from(sig, 'base64'))) return false;
    return expectedDigest === undefined || payloadSignsDigest(payloadBytes, expectedDigest);
  } catch {
    return false;
  }
}

/**
 * Whether an `.att` manifest's DSSE layer is `envelopeBytes`, its signature
 * verifies over the PAE, and (with `expectedDigest`) the statement's subject is that image.
 */
export function verifyAttestation(
  manifestBytes: Buffer, envelopeBytes: Buffer, publicKey: KeyObject | string, expectedDigest?: string,
): boolean {
  try {
    const digest = sha256Digest(envelopeBytes);
    if (!layersOf(manifestBytes).some((l) => l.mediaType === CosignMediaTypes.dsseEnvelope && l.digest === digest)) return false;
    const env = JSON.parse(envelopeBytes.toString('utf8')) as { payloadType?: string; payload?: string; signatures?: { sig?: string }[] };
    if (env.payloadType !== CosignMediaTypes.inTotoPayload || typeof env.payload !== 'string') return false;
    const body = Buffer.from(env.payload, 'base64');
    const pae = dssePae(env.payloadType, body);
    if (!(env.signatures ?? []).some((s) => typeof s.sig === 'string' && verify('sha256', pae, asKey(publicKey), Buffer.from(s.sig, 'base64')))) return false;
    if (expectedDigest === undefined) return true;
    const statement = JSON.parse(body.toString('utf8')) as { subject?: { digest?: { sha256?: string } }[] };
    return (statement.subject ?? []).some((s) => `sha256:${s.digest?.sha256 ?? ''}` === expectedDigest);
  } catch {
    return false;
  }
}

export interface ReferrerSubject {
  digest: string;
  size: number;
  mediaType: string;
}

export interface PushReferrerOptions {
  /** Tag to push under; defaults to `referrer-<first 16 hex of the manifest digest>`. */
  tag?: string;
  layer?: Buffer;
  layerMediaType?: string;
  /** Manifest annotations; a fixed `org.opencontainers.image.created` by default. */
  annotations?: Record<string, string>;
}

export interface PushedReferrer {
  tag: string;
  digest: string;
  size: number;
  mediaType: string;
  bytes: Buffer;
  artifactType: string;
  annotations: Record<string, string>;
  subject: ReferrerSubject;
  layer: PushedBlob & { mediaType: string; bytes: Buffer };
}

/** An OCI 1.1 artifact: image manifest with `artifactType`, `subject`, the empty config and one layer. */
export async function pushReferrer(
  registryUrl: string, repo: string, subject: ReferrerSubject, artifactType: string, options: PushReferrerOptions = {},
): Promise<PushedReferrer> {
  const layerBytes = options.layer ?? Buffer.from(JSON.stringify({ artifactType, subject: subject.digest }));
  const layerMediaType = options.layerMediaType ?? 'application/json';
  const annotations = options.annotations ?? { 'org.opencontainers.image.created': '2024-01-01T00:00:00Z' };
  const config = await pushBlob(registryUrl, repo, EMPTY_CONFIG);
  const layer = await pushBlob(registryUrl, repo, layerBytes);
  const bytes = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaTypes.ociManifest,
    artifactType,
    config: { mediaType: CosignMediaTypes.ociEmpty, digest: config.digest, size: config.size },
    layers: [{ mediaType: layerMediaType, digest: layer.digest, size: layer.size }],
    subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
    annotations,
  }));
  const digest = sha256Digest(bytes);
  const tag = options.tag ?? `referrer-${hexOf(digest).slice(0, 16)}`;
  await putManifest(registryUrl, repo, tag, MediaTypes.ociManifest, bytes);
  await verifyManifest(registryUrl, repo, tag, digest);
  return {
    tag, digest, size: bytes.length, mediaType: MediaTypes.ociManifest, bytes, artifactType, annotations,
    subject: { ...subject },
    layer: { ...layer, mediaType: layerMediaType, bytes: layerBytes },
  };
}
