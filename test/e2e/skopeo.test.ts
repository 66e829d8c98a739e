// End to end: skopeo pulls through a Stevedore process from a real
// docker-registry behind the Docker Hub double (token flow, counters).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { seedStandard, type StandardSeed } from '../support/seed-standard.js';
import { startMirrorProcess, type MirrorProcess } from '../support/stevedore.js';
import { readDirCopy, skopeo } from '../support/skopeo.js';
import { get } from '../support/http.js';

let registry: RegistryHandle;
let hub: HubDouble;
let mirror: MirrorProcess;
let seed: StandardSeed;
let host: string;
const work = mkdtempSync(join(tmpdir(), 'stevedore-skopeo-'));

before(async () => {
  registry = await startRegistry();
  seed = await seedStandard(registry.url);
  hub = await startHubDouble({ upstream: registry.url, credentials: { username: 'hubuser', password: 'hub-secret-pw' } });
  mirror = await startMirrorProcess({
    port: await freePort(),
    upstreams: [
      { registry: 'docker.io', url: hub.url, username: 'hubuser', password: 'hub-secret-pw' },
      { registry: 'registry.example.com', url: registry.url },
    ],
  });
  host = mirror.url.replace('http://', '');
});

after(async () => {
  await mirror?.stop();
  await hub?.stop();
  await registry?.stop();
  rmSync(work, { recursive: true, force: true });
});

async function pull(ref: string, name: string, extra: string[] = []): Promise<ReturnType<typeof readDirCopy>> {
  const dest = join(work, name);
  const result = await skopeo(['copy', '--src-tls-verify=false', ...extra, `docker://${host}/${ref}`, `dir:${dest}`]);
  assert.equal(result.code, 0, `skopeo copy ${ref} failed: ${result.stderr}`);
  return readDirCopy(dest);
}

test('skopeo pulls a Docker schema2 image; digests equal the upstream; a re-pull costs nothing upstream', async () => {
  hub.resetStats();
  const first = await pull('library/alpine:3.19', 'alpine-1');
  assert.equal(first.manifestDigest, seed.alpine.manifestDigest);
  const expected = [seed.alpine.configDigest, ...seed.alpine.layers.map((l) => l.digest)].sort();
  assert.deepEqual([...first.blobs].sort(), expected);
  const cold = hub.stats();
  assert.equal(cold.blobGet, expected.length, 'each blob fetched from upstream exactly once');
  assert.equal(cold.manifestGet, 1);
  assert.equal(cold.tokens, 1, 'one token for the repository scope');

  hub.resetStats();
  const second = await pull('library/alpine:3.19', 'alpine-2');
  assert.equal(second.manifestDigest, seed.alpine.manifestDigest);
  const warm = hub.stats();
  assert.equal(warm.blobGet, 0, 'zero upstream blob requests on the second pull');
  assert.equal(warm.manifestGet, 0, 'zero manifest GETs on the second pull');
  assert.equal(warm.manifestHead + warm.blobHead + warm.tokens, 0);
});

test('skopeo pulls one platform of a multi-arch index, then the whole index with --all', async () => {
  const arm = await pull('library/busybox:multi', 'busybox-arm64', ['--override-os', 'linux', '--override-arch', 'arm64']);
  const child = seed.busybox.children['linux/arm64']!;
  assert.equal(arm.manifestDigest, child.manifestDigest);
  assert.deepEqual([...arm.blobs].sort(), [child.configDigest, ...child.layers.map((l) => l.digest)].sort());

  const all = await pull('library/busybox:multi', 'busybox-all', ['--all']);
  assert.equal(all.manifestDigest, seed.busybox.indexDigest, 'the index is preserved byte for byte');
  const dest = join(work, 'busybox-all');
  const childManifests = readdirSync(dest).filter((n) => n.endsWith('.manifest.json'));
  assert.equal(childManifests.length, 2);
  for (const [key, image] of Object.entries(seed.busybox.children)) {
    const file = `${image.manifestDigest.slice(7)}.manifest.json`;
    assert.ok(childManifests.includes(file), `child ${key} copied`);
    assert.ok(readFileSync(join(dest, file)).equals(image.manifestBytes));
  }
});

test('one endpoint serves two registries: a path prefix with skopeo, and ?ns= over plain HTTP', async () => {
  hub.resetStats();
  const viaPrefix = await pull('registry.example.com/acme/app:v1', 'app-prefix');
  assert.equal(viaPrefix.manifestDigest, seed.app.manifestDigest);
  const viaNs = await get(`${mirror.url}/v2/acme/app/manifests/v1?ns=registry.example.com`, { accept: seed.app.manifestMediaType });
  assert.equal(viaNs.status, 200);
  assert.equal(viaNs.headers['docker-content-digest'], seed.app.manifestDigest);
  assert.equal(viaNs.headers['oci-namespace'], 'registry.example.com');
  assert.equal(hub.stats().manifestGet + hub.stats().blobGet, 0, 'the Docker Hub upstream was not involved');
  // The same repository through the Docker Hub upstream is a different image source.
  const viaHub = await pull('acme/app:v1', 'app-hub');
  assert.equal(viaHub.manifestDigest, seed.app.manifestDigest);
  assert.equal(hub.stats().manifestGet, 1);
});

test('credentials reach only the token endpoint, and never appear in the logs', async () => {
  const basic = `Basic ${Buffer.from('hubuser:hub-secret-pw').toString('base64')}`;
  const withCredentials = hub.authSeen().filter((a) => a.authorization === basic);
  assert.ok(withCredentials.length > 0, 'the configured credentials were used');
  assert.ok(withCredentials.every((a) => a.path.startsWith('/token')), 'Basic credentials went to the token realm only');
  const logs = mirror.logs();
  assert.ok(logs.length > 0);
  assert.ok(!logs.includes('hub-secret-pw'), 'no password in the logs');
  assert.ok(!logs.includes(basic.slice(6)), 'no Basic credentials in the logs');
  for (const a of hub.authSeen().filter((x) => x.authorization.startsWith('Bearer '))) {
    assert.ok(!logs.includes(a.authorization.slice(7)), 'no bearer token in the logs');
  }
});
