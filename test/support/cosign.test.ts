// Proves the supply-chain helpers: cosign's tag-based artifacts and OCI 1.1
// referrers pushed to a real docker-registry, read back byte for byte, and the
// Hub double's referrers API (on, with filter, and off: the registry's 404).
// Run: node --import tsx --test test/support/cosign.test.ts
import assert from 'node:assert/strict';
import { after } from 'node:test';
import { get } from './http.js';
import {
  cosignTag, generateSigningKey, payloadSignsDigest, pushCosignArtifacts, pushReferrer, verifyAttestation, verifyCosignSignature,
  CosignMediaTypes, SIGNATURE_ANNOTATION, type PushedCosign, type PushedReferrer, type SigningKey,
} from './cosign.js';
import { startHubDouble, type HubDouble } from './hub-double.js';
import { onPath, requirement } from './requirements.js';
import { startRegistry, type RegistryHandle } from './registry.js';
import { ALL_MANIFEST_ACCEPT, MediaTypes, pushImage, sha256Digest, type PushedImage } from './seed.js';

const registryBin = process.env['STEVEDORE_REGISTRY_BIN'] ?? (await onPath(['docker-registry']));
const registry = requirement('docker-registry', registryBin ? undefined : 'not installed (Debian package docker-registry)');

const REPO = 'acme/signed';
const SBOM_TYPE = 'application/spdx+json';
const BUNDLE_TYPE = 'application/vnd.dev.sigstore.bundle.v0.3+json';


interface Fixture {
  reg: RegistryHandle;
  hub: HubDouble;
  plain: HubDouble;
  image: PushedImage;
  other: PushedImage;
  key: SigningKey;
  cosign: PushedCosign;
  sbomRef: PushedReferrer;
  bundleRef: PushedReferrer;
  otherRef: PushedReferrer;
}

let started: Promise<Fixture> | undefined;
const handles: { stop(): Promise<void> }[] = [];

/** Started by the first test that runs, so a skipped suite starts nothing. */
function fixture(): Promise<Fixture> {
  started ??= (async () => {
    const reg = await startRegistry();
    handles.push(reg);
    const image = await pushImage(reg.url, REPO, 'v1', { layers: [2048], format: 'oci' });
    const other = await pushImage(reg.url, REPO, 'v2', { layers: [1024], format: 'oci' });
    const key = generateSigningKey();
    const cosign = await pushCosignArtifacts(reg.url, REPO, { digest: image.manifestDigest }, key);
    const subject = (img: PushedImage): { digest: string; size: number; mediaType: string } => ({
      digest: img.manifestDigest, size: img.manifestBytes.length, mediaType: img.manifestMediaType,
    });
    const sbomRef = await pushReferrer(reg.url, REPO, subject(image), SBOM_TYPE, {
      layer: Buffer.from('{"spdxVersion":"SPDX-2.3"}'), layerMediaType: SBOM_TYPE, annotations: { 'org.example.kind': 'sbom' },
    });
    const bundleRef = await pushReferrer(reg.url, REPO, subject(image), BUNDLE_TYPE);
    const otherRef = await pushReferrer(reg.url, REPO, subject(other), SBOM_TYPE);
    const hub = await startHubDouble({ upstream: reg.url, referrersApi: true });
    handles.push(hub);
    const plain = await startHubDouble({ upstream: reg.url });
    handles.push(plain);
    return { reg, hub, plain, image, other, key, cosign, sbomRef, bundleRef, otherRef };
  })();
  return started;
}

after(async () => {
  for (const h of handles.reverse()) await h.stop();
});

async function bearer(hub: HubDouble): Promise<Record<string, string>> {
  const res = await get(`${hub.url}/token?service=registry.test&scope=repository:${REPO}:pull`);
  assert.equal(res.status, 200);
  return { authorization: `Bearer ${(JSON.parse(res.body.toString()) as { token: string }).token}` };
}

interface IndexBody {
  schemaVersion: number;
  mediaType: string;
  manifests: { mediaType: string; digest: string; size: number; artifactType?: string; annotations?: Record<string, string> }[];
}

const descriptorOf = (r: PushedReferrer): IndexBody['manifests'][number] => ({
  mediaType: r.mediaType, digest: r.digest, size: r.size, artifactType: r.artifactType, annotations: r.annotations,
});
const byDigest = (a: { digest: string }, b: { digest: string }): number => a.digest.localeCompare(b.digest);

registry.test('cosign artifacts come back from the registry byte for byte, and the signature verifies', async () => {
  const f = await fixture();
  const hex = f.image.manifestDigest.slice('sha256:'.length);
  assert.equal(f.cosign.signature.tag, `sha256-${hex}.sig`);
  assert.equal(cosignTag(f.image.manifestDigest, 'att'), `sha256-${hex}.att`);
  for (const a of [f.cosign.signature, f.cosign.attestation, f.cosign.sbom]) {
    const m = await get(`${f.reg.url}/v2/${REPO}/manifests/${a.tag}`, { accept: ALL_MANIFEST_ACCEPT });
    assert.equal(m.status, 200, a.tag);
    assert.equal(m.headers['content-type'], MediaTypes.ociManifest);
    assert.equal(m.headers['docker-content-digest'], a.digest);
    assert.deepEqual(m.body, a.manifestBytes);
    const layer = await get(`${f.reg.url}/v2/${REPO}/blobs/${a.layerDigest}`);
    assert.equal(layer.status, 200);
    assert.deepEqual(layer.body, a.layerBytes);
    const config = await get(`${f.reg.url}/v2/${REPO}/blobs/${a.configDigest}`);
    assert.deepEqual(config.body, a.configBytes);
    const parsed = JSON.parse(m.body.toString()) as { config: { mediaType: string }; layers: { mediaType: string; annotations?: Record<string, string> }[] };
    assert.equal(parsed.config.mediaType, MediaTypes.ociConfig);
    assert.equal(parsed.layers[0]?.mediaType, a.layerMediaType);
  }
  assert.equal(f.cosign.signature.layerMediaType, CosignMediaTypes.simpleSigning);
  assert.equal(f.cosign.attestation.layerMediaType, CosignMediaTypes.dsseEnvelope);
  assert.equal(f.cosign.sbom.layerMediaType, CosignMediaTypes.spdxJson);
  assert.equal(
    f.cosign.signature.layerBytes.toString(),
    `{"critical":{"identity":{"docker-reference":"127.0.0.1:${f.reg.port}/${REPO}"},"image":{"docker-manifest-digest":"${f.image.manifestDigest}"},"type":"cosign container image signature"},"optional":null}`,
  );
  assert.ok(f.cosign.signature.layerAnnotations[SIGNATURE_ANNOTATION]);
  assert.equal(f.cosign.attestation.layerAnnotations['predicateType'], 'https://slsa.dev/provenance/v0.2');

  // Verify what the registry served, not what was pushed.
  const sig = await get(`${f.reg.url}/v2/${REPO}/manifests/${f.cosign.signature.tag}`, { accept: ALL_MANIFEST_ACCEPT });
  const payload = await get(`${f.reg.url}/v2/${REPO}/blobs/${f.cosign.signature.layerDigest}`);
  assert.equal(verifyCosignSignature(sig.body, payload.body, f.key.publicKey, f.image.manifestDigest), true);
  assert.equal(verifyCosignSignature(sig.body, payload.body, f.key.publicKeyPem), true, 'PEM keys work too');
  assert.equal(payloadSignsDigest(payload.body, f.image.manifestDigest), true);
  assert.equal(payloadSignsDigest(payload.body, f.other.manifestDigest), false);
  assert.equal(verifyCosignSignature(sig.body, payload.body, f.key.publicKey, f.other.manifestDigest), false, 'signs another image');
  assert.equal(verifyCosignSignature(sig.body, payload.body, generateSigningKey().publicKey), false, 'wrong key');
  const tampered = Buffer.from(payload.body);
  tampered[tampered.length - 3] = 0x20;
  assert.equal(verifyCosignSignature(sig.body, tampered, f.key.publicKey), false, 'payload no longer matches the layer digest');

  const att = await get(`${f.reg.url}/v2/${REPO}/manifests/${f.cosign.attestation.tag}`, { accept: ALL_MANIFEST_ACCEPT });
  const envelope = await get(`${f.reg.url}/v2/${REPO}/blobs/${f.cosign.attestation.layerDigest}`);
  assert.equal(verifyAttestation(att.body, envelope.body, f.key.publicKey, f.image.manifestDigest), true);
  assert.equal(verifyAttestation(att.body, envelope.body, generateSigningKey().publicKey), false);
  assert.equal(verifyAttestation(att.body, envelope.body, f.key.publicKey, f.other.manifestDigest), false);
  const spdx = JSON.parse(f.cosign.sbom.layerBytes.toString()) as { spdxVersion: string };
  assert.equal(spdx.spdxVersion, 'SPDX-2.3');
});

registry.test('distribution 2.8 stores OCI 1.1 artifacts with subject and artifactType verbatim, and has no referrers API', async () => {
  const f = await fixture();
  for (const r of [f.sbomRef, f.bundleRef, f.otherRef]) {
    for (const ref of [r.tag, r.digest]) {
      const m = await get(`${f.reg.url}/v2/${REPO}/manifests/${ref}`, { accept: ALL_MANIFEST_ACCEPT });
      assert.equal(m.status, 200, ref);
      assert.equal(m.headers['docker-content-digest'], r.digest);
      assert.deepEqual(m.body, r.bytes);
    }
    const parsed = JSON.parse(r.bytes.toString()) as { artifactType: string; subject: { digest: string }; config: { mediaType: string; size: number } };
    assert.equal(parsed.artifactType, r.artifactType);
    assert.equal(parsed.subject.digest, r.subject.digest);
    assert.deepEqual(parsed.config, { mediaType: CosignMediaTypes.ociEmpty, digest: sha256Digest('{}'), size: 2 });
    const layer = await get(`${f.reg.url}/v2/${REPO}/blobs/${r.layer.digest}`);
    assert.deepEqual(layer.body, r.layer.bytes);
  }
  const own = await get(`${f.reg.url}/v2/${REPO}/referrers/${f.image.manifestDigest}`);
  assert.equal(own.status, 404);
});

registry.test('hub double with referrersApi answers the referrers route as distribution-spec 1.1 says', async () => {
  const f = await fixture();
  f.hub.resetStats();
  const url = `${f.hub.url}/v2/${REPO}/referrers/${f.image.manifestDigest}`;
  const anon = await get(url);
  assert.equal(anon.status, 401);
  assert.match(String(anon.headers['www-authenticate'] ?? ''), new RegExp(`scope="repository:${REPO}:pull"`));
  const auth = await bearer(f.hub);

  const all = await get(url, auth);
  assert.equal(all.status, 200, all.body.toString());
  assert.equal(all.headers['content-type'], MediaTypes.ociIndex);
  assert.equal(all.headers['oci-filters-applied'], undefined);
  const index = JSON.parse(all.body.toString()) as IndexBody;
  assert.equal(index.schemaVersion, 2);
  assert.equal(index.mediaType, MediaTypes.ociIndex);
  // Cosign's tag-based artifacts have no subject, and the other image's referrer is not this one's.
  assert.deepEqual([...index.manifests].sort(byDigest), [descriptorOf(f.sbomRef), descriptorOf(f.bundleRef)].sort(byDigest));

  const filtered = await get(`${url}?artifactType=${encodeURIComponent(BUNDLE_TYPE)}`, auth);
  assert.equal(filtered.status, 200);
  assert.equal(filtered.headers['oci-filters-applied'], 'artifactType');
  assert.deepEqual((JSON.parse(filtered.body.toString()) as IndexBody).manifests, [descriptorOf(f.bundleRef)]);

  const ofOther = await get(`${f.hub.url}/v2/${REPO}/referrers/${f.other.manifestDigest}`, auth);
  assert.deepEqual((JSON.parse(ofOther.body.toString()) as IndexBody).manifests, [descriptorOf(f.otherRef)]);

  const none = await get(`${f.hub.url}/v2/${REPO}/referrers/sha256:${'0'.repeat(64)}`, auth);
  assert.equal(none.status, 200);
  assert.deepEqual(JSON.parse(none.body.toString()), { schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [] });
  const noneFiltered = await get(`${f.hub.url}/v2/${REPO}/referrers/sha256:${'0'.repeat(64)}?artifactType=x%2Fy`, auth);
  assert.equal(noneFiltered.headers['oci-filters-applied'], 'artifactType');
  assert.deepEqual((JSON.parse(noneFiltered.body.toString()) as IndexBody).manifests, []);

  const bad = await get(`${f.hub.url}/v2/${REPO}/referrers/sha256:xyz`, auth);
  assert.equal(bad.status, 400);
  assert.equal((JSON.parse(bad.body.toString()) as { errors: { code: string }[] }).errors[0]?.code, 'DIGEST_INVALID');

  const head = await get(url, auth, 'HEAD');
  assert.equal(head.status, 200);
  assert.equal(head.body.length, 0);
  assert.equal(head.headers['content-length'], String(all.body.length));

  const s = f.hub.stats();
  assert.equal(s.referrers, 8, 'every referrers request, the 401 one included');
  assert.equal(s.manifestGet + s.manifestHead + s.other, 0, 'the double reads the registry directly, not through itself');
  assert.equal(s.unauthorized, 1);
  assert.deepEqual(s.requests.filter((r) => r.kind === 'referrers').map((r) => r.status), [401, 200, 200, 200, 200, 200, 400, 200]);

  f.hub.failNext(1, 503, {}, 'referrers');
  assert.equal((await get(url, auth)).status, 503, 'fault filters see the new kind');
});

registry.test('hub double without referrersApi passes the route to the registry: 404', async () => {
  const f = await fixture();
  f.plain.resetStats();
  const auth = await bearer(f.plain);
  const res = await get(`${f.plain.url}/v2/${REPO}/referrers/${f.image.manifestDigest}`, auth);
  assert.equal(res.status, 404);
  const filtered = await get(`${f.plain.url}/v2/${REPO}/referrers/${f.image.manifestDigest}?artifactType=${encodeURIComponent(SBOM_TYPE)}`, auth);
  assert.equal(filtered.status, 404);
  assert.equal(filtered.headers['oci-filters-applied'], undefined);
  const s = f.plain.stats();
  assert.equal(s.referrers, 2);
  assert.equal(s.other, 0);
});
