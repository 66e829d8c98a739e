// The OCI 1.1 graph of an image through a Stevedore process, online and not:
// referrers from an upstream referrers API (the Docker Hub double adds one in
// front of docker-registry 2.8, which has none) and from the referrers tag
// schema (the registry as it is), and cosign's tag-based signature, attestation
// and SBOM pulled with skopeo and verified against the signing key.
import { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';
import { restartable, type RestartableRegistry } from '../support/registry-restart.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { MediaTypes, pushImage, putManifest, type PushedImage } from '../support/seed.js';
import { startMirrorProcess, type MirrorProcess } from '../support/stevedore.js';
import { readDirCopy, skopeo } from '../support/skopeo.js';
import { get, type Fetched } from '../support/http.js';
import { generateSigningKey, pushCosignArtifacts, pushReferrer, verifyAttestation, verifyCosignSignature, type PushedCosign, type PushedReferrer, type SigningKey } from '../support/cosign.js';
import { onPath, requirement } from '../support/requirements.js';

const tools = requirement('skopeo', (await onPath(['skopeo'])) ? undefined : 'not installed (Debian package skopeo)');

const SBOM_TYPE = 'application/vnd.example.sbom.v1+json';
const SCAN_TYPE = 'application/vnd.example.scan.v1+json';
const INDEX = 'application/vnd.oci.image.index.v1+json';
let registry: RegistryHandle;
let origin: RestartableRegistry;
let hub: HubDouble;
let mirror: MirrorProcess;
let image: PushedImage;
let key: SigningKey;
let cosign: PushedCosign;
let referrers: PushedReferrer[];
let host: string;
const work = mkdtempSync(join(tmpdir(), 'stevedore-referrers-'));

before(async () => {
  if (tools.missing) return;
  registry = await startRegistry();
  origin = restartable(registry);
  image = await pushImage(registry.url, 'acme/app', 'v1', { layers: [3000], format: 'oci' });
  const subject = { digest: image.manifestDigest, size: image.manifestBytes.length, mediaType: MediaTypes.ociManifest };
  referrers = [
    await pushReferrer(registry.url, 'acme/app', subject, SBOM_TYPE, { annotations: { 'org.example.kind': 'sbom' } }),
    await pushReferrer(registry.url, 'acme/app', subject, SCAN_TYPE, { annotations: { 'org.example.kind': 'scan' } }),
  ];
  // The referrers tag schema, as a client of a registry without the API maintains it.
  const tagIndex = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: INDEX, manifests: referrers.map(descriptorOf) }));
  await putManifest(registry.url, 'acme/app', `sha256-${image.manifestDigest.slice(7)}`, INDEX, tagIndex);
  key = generateSigningKey();
  hub = await startHubDouble({ upstream: registry.url, referrersApi: true });
  mirror = await startMirrorProcess({
    port: await freePort(),
    upstreams: [
      { registry: 'docker.io', url: hub.url },
      // The registry as it is: no referrers API, so the tag schema stands in.
      { registry: 'registry.example.com', url: registry.url },
    ],
    cache: { tagTtl: '1s', maxStale: '1h', revalidateTimeout: '2s' },
  });
  host = mirror.url.replace('http://', '');
  cosign = await pushCosignArtifacts(registry.url, 'acme/app', { digest: image.manifestDigest }, key, { dockerReference: `${host}/acme/app` });
});

after(async () => {
  await mirror?.stop();
  await hub?.stop();
  await origin?.stop();
  rmSync(work, { recursive: true, force: true });
});

function descriptorOf(r: PushedReferrer): Record<string, unknown> {
  return { mediaType: r.mediaType, digest: r.digest, size: r.size, artifactType: r.artifactType, annotations: r.annotations };
}

const indexOf = (res: Fetched): { schemaVersion: number; mediaType: string; manifests: { digest: string; artifactType?: string }[] } => JSON.parse(res.body.toString());
const digests = (res: Fetched): string[] => indexOf(res).manifests.map((m) => m.digest).sort();
const upstreamReferrers = (): number => hub.stats().referrers;
/** Waits until the mirror's tag TTL (1 s) has passed for what it fetched at `since` (a bounded wait on the clock). */
async function ttlPassed(since: number): Promise<void> {
  for (let round = 0; Date.now() - since < 1100 && round < 50; round++) await new Promise((r) => setTimeout(r, 50));
}

tools.test('referrers through the upstream API: cached unfiltered, filtered here, and served stale while the upstream is down', async () => {
  const path = `/v2/acme/app/referrers/${image.manifestDigest}`;
  hub.resetStats();
  const fetchedAt = Date.now();
  const all = await get(`${mirror.url}${path}`);
  assert.equal(all.status, 200);
  assert.equal(all.headers['content-type'], INDEX);
  assert.equal(all.headers['stevedore-referrers-source'], 'api');
  assert.equal(all.headers['oci-filters-applied'], undefined, 'no filter asked, none applied');
  assert.equal(indexOf(all).schemaVersion, 2);
  assert.equal(indexOf(all).mediaType, INDEX);
  assert.deepEqual(digests(all), referrers.map((r) => r.digest).sort());
  for (const r of referrers) {
    const listed = indexOf(all).manifests.find((m) => m.digest === r.digest);
    assert.equal(listed?.artifactType, r.artifactType);
  }
  const scans = await get(`${mirror.url}${path}?artifactType=${encodeURIComponent(SCAN_TYPE)}`);
  assert.equal(scans.headers['oci-filters-applied'], 'artifactType');
  assert.deepEqual(digests(scans), [referrers[1]!.digest]);
  const none = await get(`${mirror.url}${path}?artifactType=application/vnd.none`);
  assert.deepEqual(indexOf(none).manifests, []);
  assert.equal(upstreamReferrers(), 1, 'one upstream request, the filters applied to the cached list');

  // An artifact listed there pulls through the manifest cache: a miss once, then a hit.
  const sbom = referrers[0]!;
  const first = await get(`${mirror.url}/v2/acme/app/manifests/${sbom.digest}`, { accept: MediaTypes.ociManifest });
  assert.equal(first.status, 200);
  assert.ok(first.body.equals(sbom.bytes), 'the artifact manifest byte for byte');
  hub.resetStats();
  assert.ok((await get(`${mirror.url}/v2/acme/app/manifests/${sbom.digest}`, { accept: MediaTypes.ociManifest })).body.equals(sbom.bytes));
  assert.equal(hub.stats().manifestGet, 0, 'the artifact is a hit now');

  await hub.down('refuse');
  try {
    await ttlPassed(fetchedAt);
    const stale = await get(`${mirror.url}${path}?artifactType=${encodeURIComponent(SBOM_TYPE)}`);
    assert.equal(stale.status, 200, 'served stale with the upstream down');
    assert.deepEqual(digests(stale), [sbom.digest]);
    assert.ok(mirror.logs().includes('referrers fetch failed; serving the cached list'));
  } finally {
    await hub.up();
  }
});

tools.test('referrers from the tag schema of an upstream without the API, filtered here, and stale when it is down', async () => {
  const path = `/v2/registry.example.com/acme/app/referrers/${image.manifestDigest}`;
  const fetchedAt = Date.now();
  const all = await get(`${mirror.url}${path}`);
  assert.equal(all.status, 200);
  assert.equal(all.headers['stevedore-referrers-source'], 'tag-schema');
  assert.equal(all.headers['oci-filters-applied'], undefined);
  assert.deepEqual(digests(all), referrers.map((r) => r.digest).sort());
  const sboms = await get(`${mirror.url}${path}?artifactType=${encodeURIComponent(SBOM_TYPE)}`);
  assert.equal(sboms.headers['oci-filters-applied'], 'artifactType', 'the registry filtered nothing: the mirror did, and says so');
  assert.deepEqual(digests(sboms), [referrers[0]!.digest]);

  const unknown = `sha256:${'0'.repeat(64)}`;
  const empty = await get(`${mirror.url}/v2/registry.example.com/acme/app/referrers/${unknown}`);
  assert.equal(empty.status, 200);
  assert.deepEqual(indexOf(empty).manifests, [], 'no referrers tag: an empty index, not an error');

  await ttlPassed(fetchedAt);
  await origin.kill();
  try {
    const stale = await get(`${mirror.url}${path}?artifactType=${encodeURIComponent(SCAN_TYPE)}`);
    assert.equal(stale.status, 200, 'served stale with the upstream down');
    assert.deepEqual(digests(stale), [referrers[1]!.digest]);
  } finally {
    await origin.restart();
  }
});

tools.test("cosign's signature, attestation and SBOM pull through byte for byte with skopeo and verify, with the upstream up and down", async () => {
  const pullAndVerify = async (round: string): Promise<void> => {
    for (const artifact of [cosign.signature, cosign.attestation, cosign.sbom]) {
      const dest = join(work, `${round}-${artifact.tag}`);
      const copy = await skopeo(['copy', '--src-tls-verify=false', '--preserve-digests', `docker://${host}/acme/app:${artifact.tag}`, `dir:${dest}`]);
      assert.equal(copy.code, 0, `${round} ${artifact.tag}: ${copy.stderr}`);
      const pulled = readDirCopy(dest);
      assert.ok(pulled.manifest.equals(artifact.manifestBytes), `${round} ${artifact.tag}: the manifest byte for byte`);
      assert.equal(pulled.manifestDigest, artifact.digest);
      assert.ok(pulled.blobs.includes(artifact.layerDigest), `${round} ${artifact.tag}: its layer`);
      const layer = readFileSync(join(dest, artifact.layerDigest.slice(7)));
      assert.ok(layer.equals(artifact.layerBytes));
      if (artifact === cosign.signature) assert.ok(verifyCosignSignature(pulled.manifest, layer, key.publicKey, image.manifestDigest), `${round}: the signature verifies against the key`);
      if (artifact === cosign.attestation) assert.ok(verifyAttestation(pulled.manifest, layer, key.publicKey, image.manifestDigest), `${round}: the attestation verifies`);
    }
  };
  const fetchedAt = Date.now();
  await pullAndVerify('online');
  // A tampered payload does not verify: the check can fail.
  const tampered = Buffer.from(cosign.signature.layerBytes.toString().replace(image.manifestDigest, `sha256:${'1'.repeat(64)}`));
  assert.equal(verifyCosignSignature(cosign.signature.manifestBytes, tampered, key.publicKey), false);

  hub.resetStats();
  await hub.down('refuse');
  try {
    await ttlPassed(fetchedAt);
    await pullAndVerify('offline');
    assert.equal(hub.stats().blobGet, 0);
  } finally {
    await hub.up();
  }
  const staleLines = mirror.logs().split('\n').filter((l) => l.includes('"cache":"stale"') && l.includes('.sig'));
  assert.ok(staleLines.length >= 1, 'the signature tag was served stale while the upstream was down');
});
